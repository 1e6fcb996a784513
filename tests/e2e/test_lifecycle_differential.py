"""Lifecycle and failure semantics, differentially: the same bootstrap run by real Envoy 1.40 and
by `host-sim serve --envoy`, with the repository's abi-probe filter (test-filters/abi-probe),
each gateway with its own recording upstream (host-sim's `--upstream backend=...` moves the
cluster), so the callouts each one makes are its own.

What is compared:
- a tick-driven HTTP callout (`tick=`, `dispatch_on_tick=`): the callout requests the upstream
  receives (method, path, the headers the host adds) and the probe's log lines for the first
  ticks (`probe:tick`, then `probe:root_http_call_response` with what the filter saw);
- a filter that traps in a request callback: the status and body of that request and of the
  requests after it (Envoy keeps the VM failed: later requests get 503);
- a filter that traps in `on_tick`: how often the trap happens (once: the ticks stop) and what
  a request gets afterwards;
- a configuration that fails (`fail_configure`: on_configure returns false) or traps at start
  (`trap_in=configure`, the VM configuration `trap` for on_vm_start): real Envoy refuses the
  bootstrap and exits without listening; `host-sim serve --envoy` must refuse to start too.
The probe's log lines are read from each gateway's log as `probe:<event> <json>` (the format
Envoy and host-sim print around them differs; the lines do not).
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import (HOST_SIM, PROBE_WASM, STARTUP_TIMEOUT, _envoy_binary, _require_file,
                      probe_bootstrap, static_cluster)
from procs import Proc, free_port, port_open

UPSTREAM_BODY = b"upstream says hi\n"
TICK_MS = 100
# Bounds of the waits below (nothing here asserts on timing).
WAIT = 15.0
# What a refused bootstrap must do within this time: exit.
EXIT_WAIT = 30.0
# Request headers of a callout that say something about the host (compared by value).
CALLOUT_HEADERS = ("host", "x-envoy-internal", "x-envoy-expected-rq-timeout-ms", "content-length",
                   "transfer-encoding")
# Greedy to the line's last brace: host-sim prints its own fields (no braces) after the JSON.
PROBE_LINE = re.compile(r"probe:(\w+) (\{.*\})")
# Who logged a line: Envoy's `[time][thread id][level]` prefix, host-sim's `worker=N` field
# (`worker=main` for the main thread's root context).
ENVOY_THREAD = re.compile(r"^\[[^\]]+\]\[(\d+)\]")
HOST_SIM_WORKER = re.compile(r"\bworker=(\d+|main)\b")


def _thread(line: str) -> str:
    match = ENVOY_THREAD.search(line) or HOST_SIM_WORKER.search(line)
    return match.group(1) if match else ""


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.server.seen.append({
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
        })
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(UPSTREAM_BODY)))
        self.end_headers()
        self.wfile.write(UPSTREAM_BODY)

    def log_message(self, *_args):
        pass


class Upstream:
    """A loopback HTTP server that answers every GET with UPSTREAM_BODY and records it."""

    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        self.server.seen = []
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def seen(self) -> list[dict]:
        return list(self.server.seen)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Gateway:
    """One gateway (real Envoy or host-sim serve) on the variant's bootstrap, with its own
    upstream."""

    def __init__(self, kind: str, proc: Proc, port: int, upstream: Upstream):
        self.kind, self.proc, self.port, self.upstream = kind, proc, port, upstream

    def probe_lines(self) -> list[tuple[str, str, dict]]:
        """(thread, event, fields) of each probe line: Envoy's thread id, host-sim's worker."""
        lines = []
        for line in self.proc.log_path.read_text(errors="replace").splitlines():
            match = PROBE_LINE.search(line)
            if match:
                lines.append((_thread(line), match.group(1), json.loads(match.group(2))))
        return lines

    def panics_by_thread(self) -> dict[str, int]:
        """How often the probe's panic hook logged, per thread (Envoy) or worker (host-sim)."""
        counts: dict[str, int] = {}
        lines = self.proc.log_path.read_text(errors="replace").splitlines()
        for line, after in zip(lines, lines[1:] + [""]):
            if "panicked at" in line:
                thread = _thread(line) or _thread(after)
                counts[thread] = counts.get(thread, 0) + 1
        return counts

    def get(self, headers: dict[str, str]) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/probe", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=WAIT) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


def _start(kind: str, variant: str, config: Path, run: Path, upstream: Upstream, listener: int,
           wait_listening: bool) -> tuple[Proc, int]:
    if kind == "envoy":
        proc = Proc(f"lifecycle-{variant}-envoy", [
            _envoy_binary(), "-c", config, "--concurrency", "1", "--use-dynamic-base-id",
            "--base-id-path", run / "envoy.base-id", "--log-level", "warning",
            "--component-log-level", "wasm:info", "--drain-time-s", "1", "--parent-shutdown-time-s", "2",
        ], run / "envoy.log", cwd=run)
        port = listener
    else:
        port = free_port()
        proc = Proc(f"lifecycle-{variant}-host-sim", [
            _require_file(HOST_SIM, "run `make host-sim`"), "serve", "--envoy", config,
            "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{free_port()}", "--workers", "1",
            "--upstream", f"backend=127.0.0.1:{upstream.port}",
        ], run / "host-sim.log")
    if wait_listening:
        proc.wait_until(f"listening on {port}", lambda: port_open(port), STARTUP_TIMEOUT, 0.1)
    return proc, port


class Pair:
    """Real Envoy and host-sim serve on one variant of the bootstrap."""

    def __init__(self, variant: str, run_dir: Path, plugin_config: str, vm_config: str = "",
                 wait_listening: bool = True):
        _require_file(PROBE_WASM, "run `make wasm`")
        self.gateways: dict[str, Gateway] = {}
        self._upstreams: list[Upstream] = []
        listener, admin = free_port(), free_port()
        try:
            for kind in ("envoy", "host-sim"):
                run = run_dir / "lifecycle" / variant / kind
                run.mkdir(parents=True)
                upstream = Upstream()
                self._upstreams.append(upstream)
                config = run / "envoy.yaml"
                config.write_text(probe_bootstrap(listener, admin, "route: { cluster: backend }",
                                                  [static_cluster("backend", upstream.port)],
                                                  plugin_config, vm_config))
                proc, port = _start(kind, variant, config, run, upstream, listener, wait_listening)
                self.gateways[kind] = Gateway(kind, proc, port, upstream)
        except BaseException:
            self.stop()
            raise

    def __getitem__(self, kind: str) -> Gateway:
        return self.gateways[kind]

    def stop(self):
        for gateway in self.gateways.values():
            gateway.proc.stop()
        for upstream in self._upstreams:
            upstream.close()


def _wait(what: str, ready, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not {what} after {timeout:.0f} s")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# A tick-driven callout.

TICKS_COMPARED = 3


@pytest.fixture(scope="module")
def tick_callouts(run_dir):
    pair = Pair("tick-callout", run_dir, f"tick={TICK_MS} dispatch_on_tick=backend")
    try:
        for gateway in pair.gateways.values():
            _wait(f"{gateway.kind}: {TICKS_COMPARED} tick callouts answered on every ticking thread",
                  lambda g=gateway: _tick_stories(g) and all(
                      sum(1 for e, _ in story if e == "root_http_call_response") >= TICKS_COMPARED
                      for story in _tick_stories(g).values()))
        yield pair
    finally:
        pair.stop()


def _callout(seen: dict) -> dict:
    return {
        "method": seen["method"],
        "path": seen["path"],
        "headers": {name: seen["headers"].get(name) for name in CALLOUT_HEADERS},
        "header_names": sorted(seen["headers"]),
    }


def _tick_stories(gateway: Gateway) -> dict[str, list[tuple[str, dict]]]:
    """Per thread whose root context ticks: the probe's tick events up to the TICKS_COMPARED-th
    callout answer, without what is timing (the clock, the date) or numbering of the host's
    own (call tokens); the upstream service time keeps its name, not its value."""
    stories: dict[str, list[tuple[str, dict]]] = {}
    for thread, event, fields in gateway.probe_lines():
        story = stories.setdefault(thread, []) if event == "tick" or thread in stories else None
        if story is None or sum(1 for e, _ in story if e == "root_http_call_response") == TICKS_COMPARED:
            continue
        if event == "tick":
            story.append((event, {k: v for k, v in fields.items() if k != "now"}))
        elif event == "root_http_call_response":
            fields = {k: v for k, v in fields.items() if k != "token"}
            fields["headers"] = [[name, "(ms)" if name == "x-envoy-upstream-service-time" else value]
                                 for name, value in fields["headers"] if name != "date"]
            story.append((event, fields))
    return stories


def _start_story(gateway: Gateway) -> list[tuple[str, dict]]:
    """The probe's vm_start and configure lines of the VM that serves (the last of each: Envoy
    also starts a VM on its main thread and a canary), without context ids."""
    last = {}
    for _, event, fields in gateway.probe_lines():
        if event in ("vm_start", "configure"):
            last[event] = {k: v for k, v in fields.items() if k != "context"}
    return sorted(last.items())


def test_envoy_calls_out_on_every_tick(tick_callouts):
    seen = tick_callouts["envoy"].upstream.seen
    assert len(seen) >= TICKS_COMPARED
    assert {(s["method"], s["path"]) for s in seen} == {("GET", "/tick")}
    stories = list(_tick_stories(tick_callouts["envoy"]).values())
    assert stories and all(story[:2] == stories[0][:2] for story in stories)
    assert [event for event, _ in stories[0][:2]] == ["tick", "root_http_call_response"]


def test_host_sim_makes_the_same_tick_callouts(tick_callouts):
    envoy, sim = (tick_callouts[k].upstream.seen[:TICKS_COMPARED] for k in ("envoy", "host-sim"))
    assert [_callout(s) for s in sim] == [_callout(s) for s in envoy]


def test_host_sim_logs_the_same_tick_story_as_each_envoy_thread(tick_callouts):
    sims = list(_tick_stories(tick_callouts["host-sim"]).values())
    envoys = list(_tick_stories(tick_callouts["envoy"]).values())
    assert sims and envoys
    for sim in sims:
        for story in envoys:
            assert sim == story


# Envoy 1.40 with --concurrency 1 runs the HTTP filter's root context on its main thread as well
# as on the worker (the log shows each `probe:configure` and `probe:tick` from two thread ids), and
# both tick and call out; host-sim serve --envoy does the same (its `worker=main` root).
def test_host_sim_ticks_as_many_root_contexts_as_envoy(tick_callouts):
    counts = {kind: len(_tick_stories(gateway)) for kind, gateway in tick_callouts.gateways.items()}
    assert counts["host-sim"] == counts["envoy"]


def test_host_sim_starts_the_filter_as_envoy(tick_callouts):
    assert _start_story(tick_callouts["host-sim"]) == _start_story(tick_callouts["envoy"])


# ---------------------------------------------------------------------------------------------
# A trap in a request callback, then more requests.

TRAP_SEQUENCE = [
    ("before", {}),
    ("trap", {"x-trap-in": "request_headers"}),
    ("after", {}),
    ("after_again", {}),
]


@pytest.fixture(scope="module")
def request_trap(run_dir):
    pair = Pair("request-trap", run_dir, "")
    try:
        outcomes = {kind: [(name, *gateway.get(headers)) for name, headers in TRAP_SEQUENCE]
                    for kind, gateway in pair.gateways.items()}
        yield pair, outcomes
    finally:
        pair.stop()


def test_envoy_keeps_the_vm_failed_after_a_trap_in_a_request(request_trap):
    _, outcomes = request_trap
    statuses = {name: status for name, status, _ in outcomes["envoy"]}
    assert statuses["before"] == 200
    assert statuses["after"] == statuses["after_again"] == 503


def test_host_sim_answers_a_trap_and_the_requests_after_it_as_envoy(request_trap):
    _, outcomes = request_trap
    assert outcomes["host-sim"] == outcomes["envoy"]


def test_host_sim_runs_the_same_request_callbacks_around_a_trap(request_trap):
    pair, _ = request_trap
    def events(kind):
        return [event for _, event, _ in pair[kind].probe_lines() if event not in ("vm_start", "configure")]
    assert events("host-sim") == events("envoy")


# A trap in the response callback of a proxied (upstream) response, then another request.

RESPONSE_TRAP_SEQUENCE = [
    ("before", {"x-probe": "response_body"}),
    ("trap", {"x-probe": "response_body", "x-trap-in": "response_headers"}),
    ("after", {"x-probe": "response_body"}),
]


@pytest.fixture(scope="module")
def response_trap(run_dir):
    pair = Pair("response-trap", run_dir, "")
    try:
        yield {kind: [(name, *gateway.get(headers)) for name, headers in RESPONSE_TRAP_SEQUENCE]
               for kind, gateway in pair.gateways.items()}
    finally:
        pair.stop()


def test_envoy_fails_a_proxied_response_whose_callback_traps(response_trap):
    statuses = [status for _, status, _ in response_trap["envoy"]]
    assert statuses[0] == 200 and statuses[2] == 503, statuses


def test_host_sim_answers_a_trap_in_a_proxied_response_as_envoy(response_trap):
    assert response_trap["host-sim"] == response_trap["envoy"]


# ---------------------------------------------------------------------------------------------
# A trap in on_tick: the VM fails and the ticks stop.

TICKS_WAITED = 8


@pytest.fixture(scope="module")
def tick_trap(run_dir):
    pair = Pair("tick-trap", run_dir, f"tick={TICK_MS} trap_in=tick trap_kind=panic")
    try:
        for gateway in pair.gateways.values():
            _wait(f"{gateway.kind}: the tick panicked", lambda g=gateway: bool(g.panics_by_thread()))
        # Long enough for several more ticks, had they not stopped.
        time.sleep(TICKS_WAITED * TICK_MS / 1000)
        outcomes = {kind: gateway.get({}) for kind, gateway in pair.gateways.items()}
        yield pair, outcomes
    finally:
        pair.stop()


def test_envoy_stops_ticking_after_a_trap_in_on_tick(tick_trap):
    pair, outcomes = tick_trap
    panics = pair["envoy"].panics_by_thread()
    assert panics and set(panics.values()) == {1}, panics
    assert outcomes["envoy"][0] == 503


def test_host_sim_stops_ticking_and_fails_requests_as_envoy(tick_trap):
    """Once per ticking root context: the main thread's root traps too, in both gateways."""
    pair, outcomes = tick_trap
    assert set(pair["host-sim"].panics_by_thread().values()) == set(pair["envoy"].panics_by_thread().values())
    assert outcomes["host-sim"] == outcomes["envoy"]


# ---------------------------------------------------------------------------------------------
# A filter that does not come up: Envoy refuses the bootstrap.

START_FAILURES = {
    "fail_configure": ("fail_configure", ""),
    "trap_in_configure": ("trap_in=configure", ""),
    "trap_in_vm_start": ("", "trap"),
}


@pytest.mark.parametrize("variant", list(START_FAILURES))
def test_both_refuse_to_start_a_filter_that_does_not_come_up(variant, run_dir):
    plugin_config, vm_config = START_FAILURES[variant]
    pair = Pair(variant.replace("_", "-"), run_dir, plugin_config, vm_config, wait_listening=False)
    try:
        exits = {}
        for kind, gateway in pair.gateways.items():
            proc = gateway.proc
            _wait(f"{kind} exited", lambda p=proc: not p.alive(), EXIT_WAIT)
            exits[kind] = proc.popen.returncode
            assert not port_open(gateway.port), f"{kind} listens"
        assert exits["envoy"] != 0, pair["envoy"].proc.tail()
        assert exits["host-sim"] != 0, pair["host-sim"].proc.tail()
    finally:
        pair.stop()
