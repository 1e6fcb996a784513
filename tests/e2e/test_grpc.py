"""gRPC callouts, differentially: the same bootstrap run by real Envoy 1.40 and by
`host-sim serve --envoy`, with the repository's abi-probe filter (test-filters/abi-probe) making
a unary `proxy_grpc_call` (and a `proxy_grpc_stream`) to gRPC servers this test starts (Python
grpcio, generic handlers on raw bytes: no protobuf).

Clusters (HTTP/2, as a gRPC cluster must be): `grpc_ok` answers `pong:<request>` with initial and
trailing metadata (and echoes each stream message), `grpc_error` aborts with PERMISSION_DENIED
"denied", `grpc_slow` accepts connections and never answers (the probe's call times out after
1 s; a grpcio server would answer DEADLINE_EXCEEDED itself at the `grpc-timeout` both gateways
send, racing their own timer), and `grpc_refused` points at a port nothing listens on. After the call's answer the probe resumes the request, which
the route answers with a direct 200.

Compared per case: the client's status and body, and the probe's own reports of what its gRPC
callbacks saw (`probe:grpc_call_response` for a unary call: status code, message, status
message; `probe:grpc_initial_metadata`, `probe:grpc_message`, `probe:grpc_trailing_metadata`,
`probe:grpc_close` for a stream), read from each gateway's log.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent import futures

import grpc
import pytest
import requests

from conftest import (HOST_SIM, PROBE_WASM, STARTUP_TIMEOUT, _envoy_binary, _require_file,
                      probe_bootstrap, static_cluster)
from procs import Proc, free_port, port_open

# How long each report is waited for in a gateway's log.
REPORT_WAIT = 15.0


class _Probe(grpc.GenericRpcHandler):
    """probe.Service's Unary and Stream methods, raw bytes in and out, as `mode` says."""

    def __init__(self, mode: str):
        self.mode = mode

    def service(self, handler_call_details):
        if handler_call_details.method == "/probe.Service/Unary":
            return grpc.unary_unary_rpc_method_handler(self.unary)
        if handler_call_details.method == "/probe.Service/Stream":
            return grpc.stream_stream_rpc_method_handler(self.stream)
        return None

    def unary(self, request: bytes, context) -> bytes:
        if self.mode == "error":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied")
        context.send_initial_metadata((("x-initial", "yes"),))
        context.set_trailing_metadata((("x-trailer", "done"),))
        return b"pong:" + request

    def stream(self, requests_iter, context):
        context.send_initial_metadata((("x-initial", "yes"),))
        for message in requests_iter:
            yield b"pong:" + message
        context.set_trailing_metadata((("x-trailer", "done"),))


def _silent_server(stop: threading.Event) -> tuple[socket.socket, int]:
    """A listener that accepts connections, reads and never writes (bounded: 64 connections)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    held = []

    def serve():
        while not stop.is_set() and len(held) < 64:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            held.append(conn)
        for conn in held:
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()[1]


@pytest.fixture(scope="module")
def grpc_servers():
    """{"grpc_ok": port, "grpc_error": port, "grpc_slow": port}: one server per mode."""
    servers, ports = [], {}
    stop = threading.Event()
    silent, ports["grpc_slow"] = _silent_server(stop)
    try:
        for mode in ("ok", "error"):
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
            server.add_generic_rpc_handlers((_Probe(mode),))
            ports[f"grpc_{mode}"] = server.add_insecure_port("127.0.0.1:0")
            server.start()
            servers.append(server)
        yield ports
    finally:
        stop.set()
        silent.close()
        for server in servers:
            server.stop(grace=None)


@pytest.fixture(scope="module")
def gateways(grpc_servers, run_dir):
    """{"envoy": (port, proc), "host-sim": (port, proc)} on the same bootstrap."""
    _require_file(PROBE_WASM, "run `make wasm`")
    run = run_dir / "grpc"
    run.mkdir()
    listener, admin = free_port(), free_port()
    config = run / "envoy.yaml"
    clusters = {**grpc_servers, "grpc_refused": free_port()}
    config.write_text(probe_bootstrap(
        listener, admin, 'direct_response: { status: 200, body: { inline_string: "through" } }',
        [static_cluster(name, port, http2=True) for name, port in clusters.items()]))
    started: dict[str, tuple[int, Proc]] = {}
    try:
        envoy = Proc("grpc-envoy", [
            _envoy_binary(), "-c", config, "--concurrency", "1", "--use-dynamic-base-id",
            "--base-id-path", run / "envoy.base-id", "--log-level", "warning",
            "--component-log-level", "wasm:info", "--drain-time-s", "1", "--parent-shutdown-time-s", "2",
        ], run / "envoy.log", cwd=run)
        started["envoy"] = (listener, envoy)
        envoy.wait_until("listening", lambda: port_open(listener), STARTUP_TIMEOUT, 0.1)
        sim_port = free_port()
        sim = Proc("grpc-host-sim", [
            _require_file(HOST_SIM, "run `make host-sim`"), "serve", "--envoy", config,
            "--listen", f"127.0.0.1:{sim_port}", "--admin", f"127.0.0.1:{free_port()}", "--workers", "1",
        ], run / "host-sim.log")
        started["host-sim"] = (sim_port, sim)
        sim.wait_until(f"listening on {sim_port}", lambda: port_open(sim_port), STARTUP_TIMEOUT)
        yield started
    finally:
        for _, proc in started.values():
            proc.stop()


def reports(proc: Proc, event: str, after: int) -> list[dict]:
    """The probe's `probe:<event>` reports in `proc`'s log past byte `after`, in order."""
    marker = f"probe:{event} "
    found = []
    text = proc.log_path.read_bytes()[after:].decode(errors="replace")
    for line in text.splitlines():
        at = line.find(marker)
        if at < 0:
            continue
        try:
            value, _ = json.JSONDecoder().raw_decode(line[at + len(marker):])
        except ValueError:
            continue
        found.append(value)
    return found


def wait_reports(proc: Proc, event: str, after: int, count: int) -> list[dict]:
    deadline = time.monotonic() + REPORT_WAIT
    while True:
        found = reports(proc, event, after)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def call(gateways, headers: dict[str, str], events: dict[str, int]) -> dict[str, tuple]:
    """Sends the request to each gateway; per gateway: (status, body, {event: reports})."""
    seen = {}
    for gateway, (port, proc) in gateways.items():
        start = proc.log_path.stat().st_size
        resp = requests.get(f"http://127.0.0.1:{port}/probe", headers=headers, timeout=20)
        got = {event: wait_reports(proc, event, start, count) for event, count in events.items()}
        # Tokens are the host's own numbering: not compared.
        for values in got.values():
            for value in values:
                value.pop("token", None)
        seen[gateway] = (resp.status_code, resp.text, got)
        assert proc.alive(), proc.tail(30)
    return seen


@pytest.mark.parametrize("upstream,timeout_ms", [
    ("grpc_ok", "3000"),
    ("grpc_error", "3000"),
    ("grpc_slow", "1000"),
    ("grpc_refused", "3000"),
])
def test_a_unary_grpc_call_ends_alike(gateways, upstream, timeout_ms):
    seen = call(gateways, {"x-probe": "grpc_call", "x-upstream": upstream, "x-timeout-ms": timeout_ms},
                {"grpc_call": 1, "grpc_call_response": 1})
    envoy, sim = seen["envoy"], seen["host-sim"]
    assert envoy[2]["grpc_call_response"], f"Envoy's probe saw no answer: {envoy}"
    assert sim == envoy


def assert_same_stream_view(envoy, sim):
    """Both gateways' filters saw the same gRPC stream. Metadata lists differ in the transport's
    own headers (date, content-type, ...); the filter's view of the server's own entries and the
    gateway's x- headers is compared, the router's service time by name only (a duration)."""
    for view in (envoy, sim):
        for kind in ("grpc_initial_metadata", "grpc_trailing_metadata"):
            for value in view[2][kind]:
                value["metadata"] = sorted(
                    [k, "<ms>" if k == "x-envoy-upstream-service-time" else v]
                    for k, v in value["metadata"] if k.startswith(("x-", "grpc-")))
                value.pop("num", None)
    assert sim == envoy


def test_a_grpc_stream_delivers_alike(gateways):
    seen = call(gateways, {"x-probe": "grpc_stream", "x-upstream": "grpc_ok"}, {
        "grpc_stream": 1, "grpc_initial_metadata": 1, "grpc_message": 2,
        "grpc_trailing_metadata": 1, "grpc_close": 1,
    })
    envoy, sim = seen["envoy"], seen["host-sim"]
    assert envoy[2]["grpc_close"], f"Envoy's probe saw no close: {envoy}"
    assert_same_stream_view(envoy, sim)


def test_a_grpc_stream_the_filter_closed_still_delivers_alike(gateways):
    """`proxy_grpc_close` on a stream half-closes it (Envoy `Context::grpcClose`:
    `closeStream()`, then the stream is kept as `local_closed_` until the server closes it, so
    what the server still sends reaches the filter, its close included)."""
    seen = call(gateways, {"x-probe": "grpc_stream", "x-upstream": "grpc_ok", "x-close": "wait"}, {
        "grpc_stream": 1, "grpc_initial_metadata": 1, "grpc_message": 2,
        "grpc_trailing_metadata": 1, "grpc_close": 1,
    })
    envoy, sim = seen["envoy"], seen["host-sim"]
    assert envoy[2]["grpc_close"], f"Envoy's probe saw no close: {envoy}"
    assert_same_stream_view(envoy, sim)

