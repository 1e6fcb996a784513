"""make bench, parts 1-3 (issues 7 and 15): runs the bench binary (parts 1 and 2: guest cost,
host-sim overhead, warm start) or reads its JSON, then part 3, gateway throughput and latency under
wrk (Debian's), loopback only, every run bounded in time; then prints the combined table of parts
1-3 with their baselines and the issues' targets (reported, never asserted).

 3a. `host-sim serve` with the embedded REST proxy, the filter in synchronous mode against the
     same filter in asynchronous mode (`producer_async: true`): same request, same kind of REST
     proxy (each process its own embedded one), wrk -c16: req/s, p50, p99, p99.9 and the ratio;
     then the same pair with the REST proxy answering every produce request REMOTE_REST_DELAY_MS
     late (its `delay` fault), as a REST proxy on another host would: the in-memory pair is the
     best case for synchronous mode, the delayed pair shows what asynchronous mode is for; then
     the in-memory pair in the Kong profile (`--profile kong`).
 3b. Real Envoy 1.40 (the e2e venv's, --concurrency 1) running the committed envoy.yaml with free
     ports and its REST proxy `host-sim rest-proxy` in memory, five ways: without the wasm filter
     (the buffer filter kept, the route answering 200 with a direct_response); the same with the
     no-op wasm filter (test-filters/noop: what any wasm filter costs); without the wasm filter,
     routing the filter's own REST produce request to the REST proxy (synchronous mode's floor);
     the filter synchronous (the committed configuration) and asynchronous. Plus that produce
     request sent to the REST proxy alone. Latency with wrk -c1 (one request at a time, so
     service time, not queueing): p50, p99, p99.9; req/s with wrk -c16. The filter's
     asynchronous mode is compared with the no-op wasm filter, its synchronous mode with routing.
     Every run also records the CPU time (/proc/<pid>/stat) the gateway and its REST proxy used
     per request, from the run's start until its records were drained, and Envoy's calls to the
     REST proxy (the asynchronous filter's batches: records and bytes per call).

Each target runs `--reps` times, the targets of a part interleaved so drift hits them alike; the
median of the runs is reported. wrk runs on a CPU of its own (the last one), the servers on the
others (--no-pin: anywhere): on a 2-core machine this steadies the figures. The filter
configuration is envoy.yaml's everywhere (every forward_* flag on), and the request is the same
1 KiB JSON POST as in part 1.

Usage (make bench runs it with the e2e venv's Python and --parts12-binary target/release/bench):
  build/venv/bin/python tests/e2e/bench_gateway.py
      [--parts12-binary target/release/bench | --parts12 target/bench/results.json]
      [--out-dir target/bench] [--duration 2] [--reps 5] [--workers 1] [--no-pin]
      [--only 3a|3b] [--envoy-variants noop_wasm,filter_async,...] [--async-config JSON]
Writes OUT_DIR/gateway.json (every run) and OUT_DIR/summary.json (the combined table's rows, and
the CPU time other processes took during the run: the figures of a busy machine are not those of
an idle one).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

from conftest import (HOST_SIM, REPO, WASM, EnvoyPorts, envoy_filter_config, render_envoy_yaml,
                      start_envoy, with_filter_config, _require_file)
from scenarios import local_reply_body
from procs import Proc, StartError, free_port, port_open, stop_all

SENT = b'{"message":"message sent"}'
PATH = "/orders/checkout?source=web&tag=a&tag=b"
NOOP_WASM = WASM.parent / "noop.wasm"  # test-filters/noop: every callback continues
STARTUP_TIMEOUT = 60.0
LATENCY_CONNECTIONS = 1
THROUGHPUT_CONNECTIONS = 16
# Part 3a's second pair: the embedded REST proxy answers every produce request this late, as a
# REST proxy on another host in front of a replicated cluster would. Synchronous requests wait
# for it (their throughput is at most connections / delay); asynchronous ones do not.
REMOTE_REST_DELAY_MS = 10

# Reported beside each figure, never asserted. Issue 7 set the first four; issue 15 the rest
# (its baselines: the no-op wasm filter in the same Envoy, Envoy routing straight to the REST
# proxy, each profile's own synchronous mode).
TARGETS = {
    "mb_per_s_1mib": 300.0,            # 1 MiB binary body, at least
    "warm_start_ms": 5.0,              # load from the precompiled cache, at most
    "async_sync_ratio": 10.0,          # async req/s over sync req/s, REST proxy 10 ms away, at least
    "guest_0b_us": 2.0,                # filter guest cost, bodiless GET, at most
    "guest_1kib_us": 4.0,              # filter guest cost, 1 KiB JSON body, at most
    "module_kb": 200.0,                # kafka_upstream.wasm, at most
    "noop_lifecycle_us": 0.5,          # host-sim's own cost of a request on a no-op filter, at most
    "serve_async_p99_vs_sync": 1.0,    # host-sim serve: async p99 over its sync p99, at most
    "envoy_async_p99_vs_noop": 1.5,    # Envoy -c1: async p99 over the no-op wasm filter's, at most
    "envoy_async_rps_vs_noop": 0.8,    # Envoy -c16: async req/s over the no-op wasm filter's, at least
    "envoy_sync_p50_added_us": 30.0,   # Envoy -c1: sync p50 minus routing to the REST proxy, at most
}


def json_body(size: int) -> bytes:
    """The 1 KiB JSON body of part 1 (bench/src/main.rs json_body), byte for byte."""
    out = '{"items":['
    i = 0
    while len(out) + 64 < size:
        if i > 0:
            out += ","
        out += f'{{"id":{i},"name":"item-{i}","price":{i * 3}.5,"tags":["a","b/c"]}}'
        i += 1
    out += "]}"
    while len(out) < size:
        out = out[:-2] + " " + out[-2:]
    return out.encode()


# ---------------------------------------------------------------------------------------------
# wrk.

_UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 6e7}


def _to_us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"wrk: unreadable time {text!r}")
    return float(m[1]) * _UNIT_US[m[2]]


def parse_wrk(out: str) -> dict:
    """req/s, p50/p90/p99 (µs), counts of wrk --latency's output."""
    done = re.search(r"(\d+) requests in ([\d.]+(?:us|ms|s|m)),", out)
    if not done:
        raise ValueError(f"wrk: no 'N requests in' line in:\n{out}")
    total, seconds = int(done[1]), _to_us(done[2]) / 1e6
    # The scripts' done() prints the percentiles in whole µs from wrk's own histogram (its
    # --latency table rounds to 3 digits and has no 99.9th).
    exact = re.search(r"^bench-latency-us p50 (\d+) p90 (\d+) p99 (\d+) p99\.9 (\d+)$", out, re.M)
    if not exact:
        raise ValueError(f"wrk: no bench-latency-us line (the script's done()) in:\n{out}")
    pct = dict(zip((50, 90, 99, 999), (float(x) for x in exact.groups())))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = int(non2xx[1]) if non2xx else 0
    return {
        "requests": total,
        "seconds": seconds,
        "non_2xx": non2xx,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "req_per_s": total / seconds,
        "ok_req_per_s": (total - non2xx) / seconds,
        "p50_us": pct[50],
        "p90_us": pct[90],
        "p99_us": pct[99],
        "p999_us": pct[999],
    }


class Load:
    """What wrk sends: a request path and the Lua script with the method, headers and body."""

    def __init__(self, path: str, script: Path, body: bytes, content_type: str):
        self.path = path
        self.script = script
        self.body = body
        self.content_type = content_type


class Wrk:
    def __init__(self, load: Load, duration: float, cpus: set[int] | None = None):
        self.binary = shutil.which("wrk")
        if self.binary is None:
            raise SystemExit("bench: wrk is not installed (`make bench` installs it: "
                             "apt-get install -y wrk)")
        self.load = load
        self.duration = duration
        self.preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.version = subprocess.run([self.binary, "-v"], capture_output=True, text=True,
                                      timeout=10).stdout.splitlines()[0].strip()

    def run(self, port: int, connections: int, duration: float | None = None,
            load: Load | None = None) -> dict:
        seconds = duration or self.duration
        load = load or self.load
        argv = [self.binary, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                "--timeout", "5s", "-s", str(load.script), f"http://127.0.0.1:{port}{load.path}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                              preexec_fn=self.preexec)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}:\n"
                               f"{done.stdout}{done.stderr}")
        result = parse_wrk(done.stdout)
        result["connections"] = connections
        return result


def write_wrk_script(load: Load) -> None:
    assert b"]==]" not in load.body
    load.script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.headers["Content-Type"] = "{load.content_type}"\n'
        f"wrk.body = [==[{load.body.decode()}]==]\n"
        # wrk's latency histogram is in µs; parse_wrk reads this line.
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("bench-latency-us p50 %d p90 %d p99 %d p99.9 %d\\n",\n'
        "    latency:percentile(50), latency:percentile(90), latency:percentile(99),\n"
        "    latency:percentile(99.9)))\n"
        "end\n")


# ---------------------------------------------------------------------------------------------
# The gateways.

def check_answers(port: int, body: bytes, what: str, host: str = "envoy") -> None:
    """One request as wrk sends it: the gateway must answer 200 {"message":"message sent"} (as
    the client gets it behind `host`)."""
    r = requests.post(f"http://127.0.0.1:{port}{PATH}", data=body,
                      headers={"Content-Type": "application/json"}, timeout=10)
    expected = local_reply_body(SENT, host)
    if (r.status_code, r.content) != (200, expected):
        raise StartError(f"{what}: answered {r.status_code} {r.content[:300]!r}, expected 200 "
                         f"{expected!r}")


def process_cpu_s(pid: int) -> float:
    """CPU time (user + system, every thread) a live process has used so far, from
    /proc/<pid>/stat (proc(5): fields 14 utime and 15 stime, in clock ticks). The fields are
    counted after the command's closing parenthesis, as the command may hold spaces."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Gateway:
    """A gateway under test, how to read its filter's messages_sent counter (None: no filter,
    or not asynchronous) and what wrk sends it (None: the 1 KiB JSON POST). rest_proc: the
    separate REST proxy process it calls (None: none, or embedded in `proc`), whose CPU time is
    measured beside the gateway's; rest_calls: reads the REST calls the gateway has made so far
    (None: not known), see envoy_rest_calls."""

    def __init__(self, name: str, label: str, port: int, proc: Proc, sent=None,
                 admin: int | None = None, load: Load | None = None,
                 rest_proc: Proc | None = None, rest_calls=None):
        self.name = name
        self.load = load
        self.admin = admin
        self.label = label
        self.port = port
        self.proc = proc
        self.sent = sent
        self.rest_proc = rest_proc
        self.rest_calls = rest_calls

    def usage(self) -> dict:
        """The counters a run's figures are differences of: CPU seconds of the gateway and of
        its REST proxy, records sent, REST calls made."""
        return {"server_cpu_s": process_cpu_s(self.proc.pid),
                "rest_proxy_cpu_s": process_cpu_s(self.rest_proc.pid) if self.rest_proc else 0.0,
                "sent": self.sent() if self.sent else 0,
                **(self.rest_calls() if self.rest_calls else {})}

    def drain(self, before: int, acked: int, timeout: float = 15.0) -> bool:
        """Waits until the filter has sent at least the `acked` records answered 200 since its
        counter read `before`, so that no batch of one run is still going out during the next."""
        if self.sent is None:
            return True
        deadline = time.monotonic() + timeout
        while self.sent() - before < acked:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


def hostsim_sent(admin: int):
    def read() -> int:
        stats = requests.get(f"http://127.0.0.1:{admin}/stats", timeout=5).json()
        # Envoy profile: wasmcustom.<name>; Kong profile: pw.<filter>.<name> (filter/src/metrics.rs).
        (value,) = [v["value"] for k, v in stats.items()
                    if k.endswith(".kafka_upstream.messages_sent")]
        return int(value)
    return read


def envoy_sent(admin: int):
    def read() -> int:
        text = requests.get(f"http://127.0.0.1:{admin}/stats",
                            params={"filter": r"^wasmcustom\.kafka_upstream\.messages_sent$"},
                            timeout=5).text
        m = re.search(r"messages_sent: (\d+)", text)
        if not m:
            raise RuntimeError(f"Envoy stats: no messages_sent counter in {text!r}")
        return int(m[1])
    return read


def envoy_rest_calls(admin: int):
    """Reads the calls Envoy made to the kafka_rest cluster (the filter's produce calls, or the
    routed requests) and the bytes it sent and received on those connections: the number and
    size of the filter's batches come from their differences over a run."""
    names = {"upstream_rq_total": "rest_calls", "upstream_cx_tx_bytes_total": "rest_tx_bytes",
             "upstream_cx_rx_bytes_total": "rest_rx_bytes"}

    def read() -> dict[str, int]:
        text = requests.get(f"http://127.0.0.1:{admin}/stats",
                            params={"filter": r"^cluster\.kafka_rest\.upstream_(rq_total|"
                                              r"cx_tx_bytes_total|cx_rx_bytes_total)$"},
                            timeout=5).text
        values = {k.strip(): int(v) for k, v in (line.split(":") for line in text.splitlines())}
        return {ours: values[f"cluster.kafka_rest.{theirs}"] for theirs, ours in names.items()}
    return read


def envoy_connections(admin: int) -> dict[str, int]:
    """Downstream connections and requests Envoy's listener saw. wrk keeps its connections open,
    so the connections must be few: many would mean Envoy closed them after its answers, and
    the figures would include a TCP connect per request."""
    text = requests.get(f"http://127.0.0.1:{admin}/stats",
                        params={"filter": r"^http\.kafka_upstream\.downstream_(cx|rq)_total$"},
                        timeout=5).text
    values = {k.strip(): int(v) for k, v in (line.split(":") for line in text.splitlines())}
    out = {"connections": values["http.kafka_upstream.downstream_cx_total"],
           "requests": values["http.kafka_upstream.downstream_rq_total"]}
    if out["connections"] * 20 > out["requests"]:
        print(f"bench: WARNING Envoy (admin {admin}) opened {out['connections']} connections for "
              f"{out['requests']} requests: wrk's connections were not kept alive",
              file=sys.stderr)
    return out


def start_hostsim_serve(name: str, config: dict, workers: int, run_dir: Path,
                        rest_delay_ms: int = 0, profile: str = "envoy") -> tuple[Proc, int, int]:
    port, rest, admin = free_port(), free_port(), free_port()
    if profile == "kong":
        # ngx_wasm_module's dispatch_http_call takes host:port, not an Envoy cluster name
        # (kong.yml's rest_proxy.upstream is one too).
        config = {**config, "rest_proxy": {**config["rest_proxy"], "upstream": f"127.0.0.1:{rest}"}}
    config_path = run_dir / f"{name}.json"
    config_path.write_text(json.dumps(config))
    proc = Proc(name, [
        _require_file(HOST_SIM, "run `make host-sim`"), "serve",
        "--filter", _require_file(WASM, "run `make wasm`"), "--config", config_path,
        "--listen", f"127.0.0.1:{port}", "--embedded-rest-proxy", f"127.0.0.1:{rest}",
        "--admin", f"127.0.0.1:{admin}", "--workers", str(workers), "--no-reload",
        "--profile", profile,
    ], run_dir / f"{name}.log")

    def ready() -> bool:
        ok = requests.get(f"http://127.0.0.1:{rest}/_sim/health", timeout=2).status_code == 200
        return ok and port_open(port)

    proc.wait_until("listening, its embedded REST proxy healthy", ready, STARTUP_TIMEOUT, 0.1)
    if rest_delay_ms:
        # The REST proxy's fault API (host-sim/rest-proxy/src/faults.rs): a `delay` fault
        # delays that many produce requests, then lets them produce normally.
        fault = {"kind": "delay", "delay_ms": rest_delay_ms, "count": 2**32 - 1}
        answer = requests.post(f"http://127.0.0.1:{rest}/_sim/faults", json=fault, timeout=5)
        if answer.status_code // 100 != 2:
            raise proc.fail(f"the REST proxy refused the delay fault: {answer.status_code} "
                            f"{answer.text}")
    return proc, port, admin


def _hcm(doc: dict) -> dict:
    return doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def answered_by_envoy(text: str, keep_wasm_filter: bool = False) -> str:
    """envoy.yaml with its route answering 200 with the filter's own body (a direct_response):
    the same Envoy doing everything but the filter's work. keep_wasm_filter keeps the wasm filter
    (then load the no-op filter: render_envoy_yaml(ports, NOOP_WASM)), which measures what any
    wasm filter costs. The buffer filter stays: without it the route would answer at the request
    headers, before the body is read, and Envoy would then close the connection after every
    answer (`connection: close`), so the baseline would measure a TCP connect per request."""
    doc = yaml.safe_load(text)
    hcm = _hcm(doc)
    if not keep_wasm_filter:
        kept = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.wasm"]
        assert len(kept) == 2 and len(hcm["http_filters"]) == 3, hcm["http_filters"]
        hcm["http_filters"] = kept
    (route,) = hcm["route_config"]["virtual_hosts"][0]["routes"]
    route["direct_response"] = {"status": 200, "body": {"inline_string": SENT.decode()}}
    route["response_headers_to_add"] = [
        {"header": {"key": "content-type", "value": "application/json"},
         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    return yaml.safe_dump(doc, sort_keys=False)


def routed_to_rest_proxy(text: str) -> str:
    """envoy.yaml without the wasm filter, its route proxying to the REST proxy's cluster: the
    floor of synchronous mode (Envoy plus one REST proxy round trip, no filter). The buffer
    filter stays, as the filter's Envoy has it."""
    doc = yaml.safe_load(text)
    hcm = _hcm(doc)
    kept = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.wasm"]
    assert len(kept) == 2 and len(hcm["http_filters"]) == 3, hcm["http_filters"]
    hcm["http_filters"] = kept
    (route,) = hcm["route_config"]["virtual_hosts"][0]["routes"]
    del route["direct_response"]
    route["route"] = {"cluster": "kafka_rest", "timeout": "5s"}
    return yaml.safe_dump(doc, sort_keys=False)


def produce_load(rest_port: int, topic: str, run_dir: Path) -> Load:
    """The REST produce request the filter sent for the 1 KiB POST: its record (read back from
    the in-memory REST proxy, which the synchronous filter has just written to) in a v2 binary
    produce request, as envoy.yaml's filter configuration sends it."""
    answer = requests.get(f"http://127.0.0.1:{rest_port}/_sim/topics/{topic}/records",
                          params={"limit": 1}, timeout=5)
    records = answer.json().get("records") if answer.status_code == 200 else None
    if not records:
        raise StartError(f"the REST proxy holds no record in {topic!r} after the filter's "
                         f"request: {answer.status_code} {answer.text[:300]}")
    body = json.dumps({"records": [{"value": records[0]["value"]}]}).encode()
    load = Load(f"/topics/{topic}", run_dir / "produce.lua", body,
                "application/vnd.kafka.binary.v2+json")
    write_wrk_script(load)
    return load


def check_produces(port: int, load: Load, what: str) -> None:
    """One produce request as wrk sends it: the REST proxy (through Envoy or not) must answer
    200 with one offset and no error."""
    r = requests.post(f"http://127.0.0.1:{port}{load.path}", data=load.body,
                      headers={"Content-Type": load.content_type}, timeout=10)
    offsets = r.json().get("offsets") if r.status_code == 200 else None
    if not offsets or offsets[0].get("error_code") is not None:
        raise StartError(f"{what}: answered {r.status_code} {r.content[:300]!r}, expected 200 "
                         f"with an offset")


# ---------------------------------------------------------------------------------------------
# Measuring.

def usage_of_run(before: dict, after: dict, requests_done: int) -> dict:
    """What one run cost: CPU µs per request of the gateway process and of its REST proxy, and
    (when known) the REST calls made, their records and bytes."""
    out = {}
    for key in ("server_cpu_s", "rest_proxy_cpu_s"):
        used = after[key] - before[key]
        out[key] = used
        out[key.replace("_cpu_s", "_cpu_us_per_request")] = used * 1e6 / max(requests_done, 1)
    if "rest_calls" in before:
        calls = after["rest_calls"] - before["rest_calls"]
        out["rest_calls"] = calls
        out["rest_tx_bytes"] = after["rest_tx_bytes"] - before["rest_tx_bytes"]
        out["rest_rx_bytes"] = after["rest_rx_bytes"] - before["rest_rx_bytes"]
        out["records_sent"] = after["sent"] - before["sent"]
        if calls:
            out["records_per_rest_call"] = (out["records_sent"] or requests_done) / calls
            out["tx_bytes_per_rest_call"] = out["rest_tx_bytes"] / calls
    return out


# The per-run figures median_of reports the median of (those a run has).
MEDIAN_KEYS = ("req_per_s", "ok_req_per_s", "p50_us", "p90_us", "p99_us", "p999_us",
               "server_cpu_us_per_request", "rest_proxy_cpu_us_per_request", "rest_calls",
               "records_per_rest_call", "tx_bytes_per_rest_call")


def median_of(runs: list[dict]) -> dict:
    out = {k: statistics.median(r[k] for r in runs) for k in MEDIAN_KEYS
           if all(k in r for r in runs)}
    out["non_2xx"] = sum(r["non_2xx"] for r in runs)
    out["socket_errors"] = sum(r["socket_errors"] for r in runs)
    out["runs"] = runs
    return out


def measure(wrk: Wrk, gateways: list[Gateway], connections: int, reps: int) -> dict[str, dict]:
    """`reps` rounds; in each, every gateway gets one wrk run (interleaved)."""
    runs: dict[str, list[dict]] = {g.name: [] for g in gateways}
    for rep in range(reps):
        for g in gateways:
            before = g.usage()
            result = wrk.run(g.port, connections, load=g.load)
            acked = result["requests"] - result["non_2xx"]
            result["drained"] = g.drain(before["sent"], acked)
            # After the drain, so that the batches the run left behind are counted with it.
            result.update(usage_of_run(before, g.usage(), result["requests"]))
            if not result["drained"]:
                print(f"bench: WARNING {g.label}: the filter had not sent the {acked} records "
                      f"answered 200 within 15 s of the run's end", file=sys.stderr)
            if not g.proc.alive():
                raise g.proc.fail("exited during the benchmark")
            runs[g.name].append(result)
            print(f"  {g.label:<44} c{connections:<3} rep {rep + 1}/{reps}: "
                  f"{result['ok_req_per_s']:>9.0f} req/s  p50 {result['p50_us']:>8.1f} µs  "
                  f"p99 {result['p99_us']:>8.1f} µs  p99.9 {result['p999_us']:>8.1f} µs  CPU/req "
                  f"{result['server_cpu_us_per_request']:.1f}"
                  + (f" + REST {result['rest_proxy_cpu_us_per_request']:.1f}" if g.rest_proc
                     else "") + " µs"
                  + (f"  {result['records_per_rest_call']:.1f} rec/call"
                     if "records_per_rest_call" in result else "")
                  + (f"  non-2xx {result['non_2xx']}" if result["non_2xx"] else ""), flush=True)
    return {name: median_of(r) for name, r in runs.items()}


def warm_up(wrk: Wrk, gateways: list[Gateway]) -> None:
    for g in gateways:
        before = g.sent() if g.sent else 0
        result = wrk.run(g.port, THROUGHPUT_CONNECTIONS, duration=1, load=g.load)
        g.drain(before, result["requests"] - result["non_2xx"])


def part_3a(wrk: Wrk, filter_config: dict, body: bytes, args, run_dir: Path) -> dict:
    print(f"3a. host-sim serve (--workers {args.workers}) + embedded REST proxy: sync vs async",
          flush=True)
    gateways = []
    for name, is_async, delay, profile in (
            ("sync", False, 0, "envoy"), ("async", True, 0, "envoy"),
            ("sync_remote", False, REMOTE_REST_DELAY_MS, "envoy"),
            ("async_remote", True, REMOTE_REST_DELAY_MS, "envoy"),
            ("kong_sync", False, 0, "kong"), ("kong_async", True, 0, "kong")):
        proc, port, admin = start_hostsim_serve(f"host-sim-{name}",
                                                {**filter_config, "producer_async": is_async},
                                                args.workers, run_dir, delay, profile)
        label = (f"host-sim serve{' --profile kong' if profile == 'kong' else ''}, filter "
                 f"{'async' if is_async else 'sync'}" + (f", REST +{delay} ms" if delay else ""))
        gateways.append(Gateway(name, label, port, proc,
                                hostsim_sent(admin) if is_async else None))
    try:
        for g in gateways:
            check_answers(g.port, body, g.label, "kong" if g.name.startswith("kong") else "envoy")
        warm_up(wrk, gateways)
        result = measure(wrk, gateways, THROUGHPUT_CONNECTIONS, args.reps)
    finally:
        for g in gateways:
            g.proc.stop()
    result["workers"] = args.workers
    result["connections"] = THROUGHPUT_CONNECTIONS
    result["ratio_async_sync"] = result["async"]["ok_req_per_s"] / result["sync"]["ok_req_per_s"]
    result["remote_rest_delay_ms"] = REMOTE_REST_DELAY_MS
    result["ratio_async_sync_remote"] = (result["async_remote"]["ok_req_per_s"]
                                         / result["sync_remote"]["ok_req_per_s"])
    result["ratio_async_sync_kong"] = (result["kong_async"]["ok_req_per_s"]
                                       / result["kong_sync"]["ok_req_per_s"])
    return result


def part_3b(wrk: Wrk, body: bytes, args, run_dir: Path) -> dict:
    print("3b. real Envoy 1.40 (--concurrency 1): the filter against Envoy without it, with a "
          "no-op wasm filter, and routing straight to the REST proxy", flush=True)
    rest = free_port()
    rest_proxy = Proc("rest-proxy", [_require_file(HOST_SIM, "run `make host-sim`"), "rest-proxy",
                                     "--listen", f"127.0.0.1:{rest}"], run_dir / "rest-proxy.log")
    gateways = []
    try:
        rest_proxy.wait_until(
            "healthy", lambda: requests.get(f"http://127.0.0.1:{rest}/_sim/health",
                                            timeout=2).status_code == 200, STARTUP_TIMEOUT, 0.1)
        noop = _require_file(NOOP_WASM, "run `make wasm`")
        variants = [
            ("baseline", "Envoy, direct_response, no wasm filter", WASM, answered_by_envoy),
            ("noop_wasm", "Envoy + no-op wasm filter, direct_response", noop,
             lambda t: answered_by_envoy(t, keep_wasm_filter=True)),
            ("routed", "Envoy routing to the REST proxy, no wasm", WASM, routed_to_rest_proxy),
            ("filter_sync", "Envoy + filter (sync, envoy.yaml)", WASM, lambda t: t),
            ("filter_async", "Envoy + filter (async)", WASM,
             lambda t: with_filter_config(t, producer_async=True, **args.async_config)),
        ]
        if args.envoy_variants:
            variants = [v for v in variants if v[0] in args.envoy_variants]
        for name, label, module, transform in variants:
            ports = EnvoyPorts(listener=free_port(), admin=free_port(), cluster=rest)
            config = run_dir / f"envoy-{name}.yaml"
            config.write_text(transform(render_envoy_yaml(ports, module)))
            proc = start_envoy(f"envoy-{name}", config, ports, run_dir)
            gateways.append(Gateway(name, label, ports.listener, proc,
                                    envoy_sent(ports.admin) if name == "filter_async" else None,
                                    admin=ports.admin, rest_proc=rest_proxy,
                                    rest_calls=envoy_rest_calls(ports.admin)))
        by_name = {g.name: g for g in gateways}
        for g in gateways:
            if g.name != "routed":
                check_answers(g.port, body, g.label)
        if "routed" in by_name:
            # The synchronous filter has now written the 1 KiB POST's record: the routed Envoy
            # and the REST proxy alone get that record's produce request.
            produce = produce_load(rest, envoy_filter_config(render_envoy_yaml(
                EnvoyPorts(1, 2, 3), WASM))["topic"], run_dir)
            by_name["routed"].load = produce
            gateways.append(Gateway("rest_alone", "the REST proxy alone (no Envoy)", rest,
                                    rest_proxy, load=produce))
            check_produces(by_name["routed"].port, produce, by_name["routed"].label)
            check_produces(rest, produce, "the REST proxy alone")
        warm_up(wrk, gateways)
        latency = measure(wrk, gateways, LATENCY_CONNECTIONS, args.reps)
        throughput = measure(wrk, gateways, THROUGHPUT_CONNECTIONS, args.reps)
        connections = {g.name: envoy_connections(g.admin) for g in gateways if g.admin}
    finally:
        for g in gateways:
            g.proc.stop()
        rest_proxy.stop()
    base = latency.get("baseline")
    added = {name: {"p50_us": latency[name]["p50_us"] - base["p50_us"],
                    "p99_us": latency[name]["p99_us"] - base["p99_us"]}
             for name in ("noop_wasm", "filter_sync", "filter_async") if base and name in latency}
    return {"envoy_concurrency": 1, "latency": latency, "throughput": throughput,
            "downstream_connections_and_requests": connections,
            "latency_connections": LATENCY_CONNECTIONS,
            "throughput_connections": THROUGHPUT_CONNECTIONS, "added": added,
            "async_config_overrides": args.async_config,
            "produce_request": ({"path": by_name["routed"].load.path,
                                 "body_bytes": len(by_name["routed"].load.body)}
                                if "routed" in by_name else None)}


class CpuWatch:
    """CPU time the machine spent outside this process and its reaped children (servers stopped,
    wrk runs, the bench binary) over a phase: user, nice, system and steal time from /proc/stat
    minus our own. Interrupt time is left out (loopback traffic is partly accounted there)."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        user, nice, system, steal = fields[0], fields[1], fields[2], fields[7]
        busy = (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
        return time.monotonic(), busy, ours

    def stop(self) -> dict:
        (t0, busy0, ours0), (t1, busy1, ours1) = self.start, self._sample()
        wall = t1 - t0
        other = max(0.0, (busy1 - busy0) - (ours1 - ours0))
        return {"wall_s": wall, "busy_cpu_s": busy1 - busy0, "ours_cpu_s": ours1 - ours0,
                "other_cpu_s": other, "share": other / (wall * (os.cpu_count() or 1))}


# ---------------------------------------------------------------------------------------------
# The combined table.

def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def verdict(value: float | None, target: float, at_most: bool) -> str:
    if value is None:
        return ""
    ok = value <= target if at_most else value >= target
    return "met" if ok else "MISSED"


def us(value: float) -> str:
    """A time in µs with the digits that matter."""
    if value < 10:
        return f"{value:.2f} µs"
    return f"{value:.1f} µs" if value < 100 else f"{value:,.0f} µs"


def summary_rows(p12: dict | None, gw: dict) -> list[dict]:
    """Every figure, its baseline, the comparison and the target (reported, not asserted)."""
    rows = []

    def row(section, figure, value, unit, baseline="", compare="", target="", status=""):
        rows.append({"section": section, "figure": figure, "value": value, "unit": unit,
                     "baseline": baseline, "compare": compare, "target": target,
                     "status": status})

    def at_most(key, value, unit=""):
        return f"<= {TARGETS[key]:g}{unit}", verdict(value, TARGETS[key], True)

    def at_least(key, value, unit=""):
        return f">= {TARGETS[key]:g}{unit}", verdict(value, TARGETS[key], False)

    if p12:
        s1 = "1. filter guest cost per request (host-sim, envoy profile, every forward_* on)"
        case_targets = {"0 B GET": "guest_0b_us", "1 KiB JSON": "guest_1kib_us"}
        for g in p12["guest"]:
            target, status = "", ""
            if g["case"] in case_targets:
                target, status = at_most(case_targets[g["case"]], g["filter_cost_us"], " µs")
            row(s1, f"{g['case']}: filter - no-op", g["filter_cost_us"], "µs",
                f"no-op {us(g['noop_request_us'])}, native {us(g['native_baseline_us'])}",
                f"wasm/native {g['ratio_wasm_native']:.1f}x", target, status)
            if g["body_bytes"] >= 64 << 10:
                target, status = "", ""
                if g["body_bytes"] >= 1 << 20:
                    target, status = at_least("mb_per_s_1mib", g["mb_per_s"], " MB/s")
                native_mbs = g["body_bytes"] / g["native_baseline_us"] if g[
                    "native_baseline_us"] else 0
                row(s1, f"{g['case']}: throughput", g["mb_per_s"], "MB/s",
                    f"native {native_mbs:.0f} MB/s", "", target, status)
    module_kb = gw["module_bytes"] / 1000
    row("1. filter guest cost per request (host-sim, envoy profile, every forward_* on)",
        "module size (kafka_upstream.wasm)", module_kb, "KB",
        f"no-op filter {gw['noop_module_bytes'] / 1000:.0f} KB", "",
        *at_most("module_kb", module_kb, " KB"))
    if p12:
        s2 = "2. host-sim"
        bodiless = p12.get("host_overhead_noop_bodiless_us")
        if bodiless is not None:
            row(s2, "lifecycle, no-op filter, no body", bodiless, "µs", "", "",
                *at_most("noop_lifecycle_us", bodiless, " µs"))
        row(s2, "lifecycle, no-op filter, 1 KiB body", p12["host_overhead_noop_request_us"], "µs",
            f"no body {us(bodiless)}" if bodiless is not None else "", "", "")
        row(s2, "warm start (precompiled cache)", p12["warm_start_cached_ms"], "ms",
            f"fresh compile {p12['fresh_compile_ms']:.1f} ms",
            f"{p12['ratio_fresh_warm']:.0f}x faster", *at_most("warm_start_ms",
                                                              p12["warm_start_cached_ms"], " ms"))
        row(s2, "VM start + root context + configure", p12["vm_start_and_configure_ms"], "ms")
    if gw["host_sim"]:
        host_sim_rows(row, at_least, at_most, gw["host_sim"])
    if gw["envoy"]:
        envoy_table_rows(row, at_least, at_most, gw["envoy"])
    return rows


def host_sim_rows(row, at_least, at_most, a: dict) -> None:
    s3a = (f"3a. host-sim serve + embedded REST proxy, wrk -c{a['connections']}, "
           f"--workers {a['workers']}; the same 1 KiB JSON POST and filter config\n"
           f"    REST +{a['remote_rest_delay_ms']} ms: the REST proxy answers each produce "
           f"request that late (a remote proxy); kong: --profile kong")
    for suffix, label in (("", "REST in memory"),
                          ("_remote", f"REST +{a['remote_rest_delay_ms']} ms"),
                          ("_kong", "kong, REST in memory")):
        sync_key, async_key = (("kong_sync", "kong_async") if suffix == "_kong"
                               else (f"sync{suffix}", f"async{suffix}"))
        sync, asyn = a[sync_key], a[async_key]
        ratio = asyn["ok_req_per_s"] / sync["ok_req_per_s"]
        target, status = (at_least("async_sync_ratio", ratio, "x") if suffix == "_remote"
                          else ("", ""))
        row(s3a, f"{label}, async: req/s", asyn["ok_req_per_s"], "req/s",
            f"sync {sync['ok_req_per_s']:,.0f} req/s", f"{ratio:.1f}x", target, status)
        for p, name in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
            vs = asyn[f"{p}_us"] / sync[f"{p}_us"]
            target, status = (at_most("serve_async_p99_vs_sync", vs, "x")
                              if p == "p99" and suffix != "_remote" else ("", ""))
            row(s3a, f"{label}, async: {name}", asyn[f"{p}_us"], "µs",
                f"sync {us(sync[f'{p}_us'])}", f"{vs:.2f}x", target, status)


def envoy_table_rows(row, at_least, at_most, e: dict) -> None:
    produce = e["produce_request"]
    s3b = (f"3b. real Envoy 1.40 (--concurrency 1), REST proxy in memory; latency wrk "
           f"-c{e['latency_connections']}, req/s wrk -c{e['throughput_connections']}\n"
           f"    no wasm: buffer filter + 200 direct_response; no-op wasm: the same with "
           f"test-filters/noop; routed: no wasm, the\n    filter's REST produce request "
           f"({produce['body_bytes'] if produce else '?'} B) proxied to the REST proxy; REST "
           f"alone: that request without Envoy\n    CPU Envoy, CPU REST: CPU time (/proc/<pid>/stat) Envoy "
           f"and the REST proxy (REST) used per request in the -c{e['throughput_connections']} "
           f"runs, both on the servers' CPU;\n    records/call: the asynchronous filter's "
           f"batches (Envoy's calls to the REST proxy's cluster)")
    if e.get("async_config_overrides"):
        s3b += f"\n    filter async configuration overrides: {json.dumps(e['async_config_overrides'])}"
    lat, thr = e["latency"], e["throughput"]

    def envoy_rows(name, label, base, base_label, targets=None):
        """p50, p99, p99.9 (-c1) and req/s (-c16) of `name` beside `base`. targets: figure ->
        function(value, baseline) -> (target, status)."""
        targets = targets or {}
        if name not in lat or base not in lat:
            return
        for p, shown in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
            value, reference = lat[name][f"{p}_us"], lat[base][f"{p}_us"]
            compare = (f"{value - reference:+.0f} µs" if p == "p50"
                       else f"{value / reference:.2f}x")
            target, status = targets[shown](value, reference) if shown in targets else ("", "")
            row(s3b, f"{label}: {shown}", value, "µs", f"{base_label} {us(reference)}", compare,
                target, status)
        value, reference = thr[name]["ok_req_per_s"], thr[base]["ok_req_per_s"]
        target, status = targets["req/s"](value, reference) if "req/s" in targets else ("", "")
        row(s3b, f"{label}: req/s", value, "req/s", f"{base_label} {reference:,.0f} req/s",
            f"{value / reference:.2f}x", target, status)
        cpu, cpu_base = thr[name], thr[base]
        for key, who in (("server_cpu_us_per_request", "Envoy"),
                         ("rest_proxy_cpu_us_per_request", "REST")):
            if key not in cpu:
                continue
            value, reference = cpu[key], cpu_base.get(key, 0.0)
            if key == "rest_proxy_cpu_us_per_request" and not cpu.get("rest_calls"):
                continue  # this variant never calls the REST proxy
            if base == "rest_alone" and key == "server_cpu_us_per_request":
                reference_text = f"{base_label} (no Envoy)"
                compare = ""
            else:
                if base == "rest_alone":
                    # The REST proxy alone is the gateway process there.
                    reference = cpu_base["server_cpu_us_per_request"]
                reference_text = f"{base_label} {us(reference)}"
                compare = f"{value - reference:+.1f} µs"
            row(s3b, f"{label}: CPU {who}", value, "µs", reference_text, compare)
        if name == "filter_async" and cpu.get("rest_calls"):
            # The batches: how many records and bytes each REST call carried.
            row(s3b, f"{label}: records/call", cpu["records_per_rest_call"], "records",
                f"{cpu['tx_bytes_per_rest_call'] / 1000:,.1f} KB sent per call",
                f"{cpu['rest_calls'] / thr[name]['runs'][0]['seconds']:,.0f} calls/s")

    envoy_rows("noop_wasm", "no-op wasm filter", "baseline", "no wasm")
    envoy_rows("filter_async", "filter async", "noop_wasm", "no-op wasm", {
        "p99": lambda v, b: at_most("envoy_async_p99_vs_noop", v / b, "x"),
        "req/s": lambda v, b: at_least("envoy_async_rps_vs_noop", v / b, "x")})
    envoy_rows("routed", "routed to REST proxy", "rest_alone", "REST alone")
    envoy_rows("filter_sync", "filter sync", "routed", "routed", {
        "p50": lambda v, b: at_most("envoy_sync_p50_added_us", v - b, " µs added")})


def fmt_value(value: float, unit: str) -> str:
    if unit in ("req/s", "MB/s") or value >= 1000:
        return f"{value:,.0f} {unit}"
    return f"{value:.2f} {unit}" if value < 100 else f"{value:.0f} {unit}"


def print_table(rows: list[dict], header: str) -> None:
    print(f"\n{header}\n")
    line = f"{'figure':<36} {'measured':>13}  {'baseline':<35} {'vs baseline':<16} target"
    print(line)
    print("-" * (len(line) + 18))
    section = None
    for r in rows:
        if r["section"] != section:
            section = r["section"]
            print(section)
        target = f"{r['target']} ({r['status']})" if r["target"] else ""
        print(f"  {r['figure']:<34} {fmt_value(r['value'], r['unit']):>13}  {r['baseline']:<35} "
              f"{r['compare']:<16} {target}".rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts12", type=Path, help="results.json of bench parts 1 and 2")
    parser.add_argument("--parts12-binary", type=Path,
                        help="run this bench binary first (parts 1 and 2): its JSON goes to "
                             "OUT_DIR/results.json, its own table to OUT_DIR/parts12.txt")
    parser.add_argument("--out-dir", type=Path, default=REPO / "target" / "bench")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per wrk run")
    parser.add_argument("--reps", type=int, default=5, help="wrk runs per target")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the servers and wrk to separate CPUs")
    parser.add_argument("--workers", type=int, default=1,
                        help="host-sim serve --workers (1: one VM, as Envoy --concurrency 1)")
    parser.add_argument("--only", choices=("3a", "3b"),
                        help="run only this part of part 3 (with fewer variants and runs while "
                             "iterating; the table then has only its rows)")
    parser.add_argument("--envoy-variants", type=lambda t: set(t.split(",")),
                        help="part 3b: only these Envoy variants, comma-separated, of baseline, "
                             "noop_wasm, routed, filter_sync, filter_async (routed, which adds "
                             "the REST proxy alone, needs filter_sync)")
    parser.add_argument("--async-config", type=json.loads, default={},
                        help="part 3b: fields of the filter configuration to set for the "
                             "asynchronous filter, as JSON (e.g. '{\"producer_request_limits_"
                             "messages_per_request\": 50}'); the default runs envoy.yaml's")
    args = parser.parse_args()
    if args.envoy_variants and "routed" in args.envoy_variants and \
            "filter_sync" not in args.envoy_variants:
        parser.error("--envoy-variants: routed needs filter_sync (its record is the produce "
                     "request routed)")
    if not isinstance(args.async_config, dict):
        parser.error("--async-config: a JSON object of filter configuration fields")

    run_dir = REPO / "build" / "bench" / f"run-{os.getpid()}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    body = json_body(1024)
    post = Load(PATH, run_dir / "post.lua", body, "application/json")
    write_wrk_script(post)
    filter_config = envoy_filter_config(render_envoy_yaml(EnvoyPorts(1, 2, 3), WASM))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    load = {}
    if args.parts12_binary:
        args.parts12 = args.out_dir / "results.json"
        print("1-2. filter guest cost, host-sim overhead, warm start "
              f"({args.parts12_binary}; its table: {args.out_dir / 'parts12.txt'})", flush=True)
        watch = CpuWatch()
        with open(args.out_dir / "parts12.txt", "wb") as table:
            subprocess.run([args.parts12_binary.resolve(), "--out", args.parts12.resolve()],
                           stdout=table, check=True, timeout=600, cwd=REPO)
        load["parts 1-2"] = watch.stop()
    p12 = json.loads(args.parts12.read_text()) if args.parts12 else None
    # On a small machine the figures are steadier with the load generator on a CPU of its own:
    # wrk on the last CPU, this process and every server it starts (they inherit it) on the rest.
    cpus = sorted(os.sched_getaffinity(0))
    pinning = None
    if len(cpus) >= 2 and not args.no_pin:
        pinning = {"servers": cpus[:-1], "wrk": cpus[-1:]}
        os.sched_setaffinity(0, set(pinning["servers"]))
    wrk = Wrk(post, args.duration, set(pinning["wrk"]) if pinning else None)
    started = time.monotonic()
    watch = CpuWatch()
    try:
        host_sim = part_3a(wrk, filter_config, body, args, run_dir) if args.only != "3b" else None
        envoy = part_3b(wrk, body, args, run_dir) if args.only != "3a" else None
    except BaseException:
        stop_all()
        print(f"bench: logs and generated files kept in {run_dir}", file=sys.stderr)
        raise
    load["part 3"] = watch.stop()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    gateway = {
        "machine": machine(), "date": stamp, "wrk": wrk.version,
        "duration_s": args.duration, "reps": args.reps, "seconds": time.monotonic() - started,
        "cpu_pinning": pinning, "other_load": load,
        "request": {"method": "POST", "path": PATH, "content_type": "application/json",
                    "body_bytes": len(body)},
        "filter_config": filter_config, "host_sim": host_sim, "envoy": envoy,
        "module_bytes": WASM.stat().st_size, "noop_module_bytes": NOOP_WASM.stat().st_size,
    }
    rows = summary_rows(p12, gateway)
    (args.out_dir / "gateway.json").write_text(json.dumps(gateway, indent=2))
    (args.out_dir / "summary.json").write_text(json.dumps(
        {"machine": gateway["machine"], "date": stamp, "other_load": load, "targets": TARGETS,
         "rows": rows},
        indent=2))
    pinned = (f"; servers on CPU {','.join(map(str, pinning['servers']))}, wrk on CPU "
              f"{','.join(map(str, pinning['wrk']))}" if pinning else "")
    others = "; ".join(f"{phase} {v['share']:.0%}" for phase, v in load.items())
    print_table(rows, f"make bench — {gateway['machine']} — {stamp}\n(targets reported, not "
                      f"asserted; part 3: medians of {args.reps} wrk runs of {args.duration:g} s "
                      f"per gateway{pinned})\nCPU used by other processes during the run (share "
                      f"of all CPUs): {others}")
    if any(v["share"] > 0.05 for v in load.values()):
        print("bench: WARNING other processes used the CPUs during the run: the figures are "
              "not those of an idle machine", file=sys.stderr)
    print(f"\nJSON: {args.out_dir / 'summary.json'}, {args.out_dir / 'gateway.json'}"
          + (f", {args.parts12}" if args.parts12 else ""))
    shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
