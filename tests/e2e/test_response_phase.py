"""The response phase, differentially: the same bootstrap run by real Envoy 1.40 and by
`host-sim serve --envoy`, with the repository's abi-probe filter (test-filters/abi-probe) in front
of a small upstream that answers `hello world\\n` with a Content-Length.

What is compared, per request, is what the client gets on the wire: status, the headers this
behaviour is about (framing, content type, what the filter's response callbacks added), the body
as the framing delimits it, bytes the server wrote past that body, and whether the message ended
short of its declared length. The cases:
- the filter's own local reply passes through its on_http_response_headers/body (Envoy's
  sendLocalReplyViaFilterChain encodes it through every encoder filter);
- a local reply and an upstream response whose body the filter rewrites, keeping the stale
  content-length (a longer body is cut at the old length for the client, a shorter one leaves
  the client waiting), or removing it (the response goes out chunked).
Other edge headers (x-envoy-upstream-service-time, date, ...) are other tests' concern.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import (HOST_SIM, PROBE_WASM, STARTUP_TIMEOUT, _envoy_binary, _require_file,
                      probe_bootstrap, static_cluster)
from procs import Proc, free_port, port_open

UPSTREAM_BODY = b"hello world\n"
# How long a client waits for the rest of a message (and for bytes after it) before it records
# what it has: long enough for a local answer on a loaded machine, short enough for a suite.
READ_WAIT = 2.0
# Headers that carry this behaviour; the others are the gateways' edge, compared elsewhere.
# x-probe-saw-pseudo/-authority: the request's pseudo-headers as the filter saw them.
COMPARED_HEADERS = ("content-length", "transfer-encoding", "content-type", "x-probe", "x-probe-saw-status",
                    "x-probe-saw-pseudo", "x-probe-saw-authority")


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(UPSTREAM_BODY)))
        self.end_headers()
        self.wfile.write(UPSTREAM_BODY)

    def log_message(self, *_args):
        pass


@pytest.fixture(scope="module")
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def gateways(upstream, run_dir):
    """{"envoy": port, "host-sim": port}: real Envoy and host-sim serve on the same bootstrap."""
    _require_file(PROBE_WASM, "run `make wasm`")
    run = run_dir / "response-phase"
    run.mkdir()
    listener, admin = free_port(), free_port()
    config = run / "envoy.yaml"
    config.write_text(probe_bootstrap(listener, admin, "route: { cluster: backend }",
                                      [static_cluster("backend", upstream)]))
    started: list[Proc] = []
    try:
        envoy = Proc("response-phase-envoy", [
            _envoy_binary(), "-c", config, "--concurrency", "1", "--use-dynamic-base-id",
            "--base-id-path", run / "envoy.base-id", "--log-level", "warning",
            "--component-log-level", "wasm:info", "--drain-time-s", "1", "--parent-shutdown-time-s", "2",
        ], run / "envoy.log", cwd=run)
        started.append(envoy)
        envoy.wait_until("listening", lambda: port_open(listener), STARTUP_TIMEOUT, 0.1)
        sim_port = free_port()
        sim = Proc("response-phase-host-sim", [
            _require_file(HOST_SIM, "run `make host-sim`"), "serve", "--envoy", config,
            "--listen", f"127.0.0.1:{sim_port}", "--admin", f"127.0.0.1:{free_port()}", "--workers", "1",
        ], run / "host-sim.log")
        started.append(sim)
        sim.wait_until(f"listening on {sim_port}", lambda: port_open(sim_port), STARTUP_TIMEOUT)
        yield {"envoy": listener, "host-sim": sim_port}
    finally:
        for proc in started:
            proc.stop()


@dataclass
class Wire:
    """One response as the client read it off a kept-alive connection."""
    status: int
    headers: dict[str, str]
    body: bytes
    # Bytes the server wrote after the message its framing delimits.
    extra: bytes
    # The declared length was not reached: "waiting" (the connection stayed open) or "closed".
    short: str | None


def exchange(port: int, headers: dict[str, str]) -> Wire:
    request = "GET /probe HTTP/1.1\r\nhost: probe\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    data = b""
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=READ_WAIT) as conn:
        conn.sendall((request + "\r\n").encode())
        deadline = time.monotonic() + READ_WAIT
        while time.monotonic() < deadline:
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head from port {port}: {data!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    parsed: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding") == "chunked":
        body, extra, incomplete = _dechunk(rest)
        short = ("closed" if closed else "waiting") if incomplete else None
    elif "content-length" in parsed:
        length = int(parsed["content-length"])
        body, extra = rest[:length], rest[length:]
        short = None if len(body) == length else ("closed" if closed else "waiting")
    else:
        body, extra, short = rest, b"", None
    return Wire(status, parsed, body, extra, short)


def _dechunk(data: bytes) -> tuple[bytes, bytes, bool]:
    body = b""
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        if not sep:
            return body, b"", True
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            _, sep, extra = data.partition(b"\r\n")
            return body, extra if sep else b"", not sep
        if len(data) < size + 2:
            return body + data[:size], b"", True
        body, data = body + data[:size], data[size + 2:]


def compared(wire: Wire) -> dict:
    return {
        "status": wire.status,
        "headers": {k: wire.headers.get(k) for k in COMPARED_HEADERS},
        "body": wire.body,
        "extra": wire.extra,
        "short": wire.short,
    }


GROWN = UPSTREAM_BODY + b"-post"
CASES = {
    # The local reply (418 "teapot") goes through the filter's response callbacks, which add a
    # header naming the status they saw.
    "local_reply_through_response_callbacks": (
        {"x-probe": "local", "x-mark-response": "1"},
        {"status": 418, "body": b"teapot", "x-probe-saw-status": "418", "content-length": "6"},
    ),
    # The filter replaces the local reply's body (6 -> 8 bytes) and keeps its content-length.
    "local_reply_rewritten_stale_length": (
        {"x-probe": "local", "x-body-op": "replace"},
        {"status": 418, "body": b"replac", "content-length": "6"},
    ),
    "local_reply_rewritten_length_removed": (
        {"x-probe": "local", "x-body-op": "replace", "x-remove-content-length": "1"},
        {"status": 418, "body": b"replaced", "transfer-encoding": "chunked"},
    ),
    "upstream_untouched": (
        {"x-probe": "response_body"},
        {"status": 200, "body": UPSTREAM_BODY, "content-length": str(len(UPSTREAM_BODY))},
    ),
    # Appended to: the client reads the old length; the rest is garbage on the connection.
    "upstream_grown_stale_length": (
        {"x-probe": "response_body", "x-body-op": "append", "x-body-pause": "until_eos"},
        {"status": 200, "body": UPSTREAM_BODY, "content-length": str(len(UPSTREAM_BODY))},
    ),
    # Shrunk: the client waits for bytes that never come.
    "upstream_shrunk_stale_length": (
        {"x-probe": "response_body", "x-body-op": "replace", "x-body-pause": "until_eos"},
        {"status": 200, "body": b"replaced", "content-length": str(len(UPSTREAM_BODY))},
    ),
    # Appended to in every body callback, without pausing: Envoy passes the upstream's body
    # data, then an empty call that ends the stream, so the filter appends twice.
    "upstream_appended_per_callback": (
        {"x-probe": "response_body", "x-body-op": "append", "x-remove-content-length": "1"},
        {"status": 200, "body": GROWN + b"-post", "transfer-encoding": "chunked"},
    ),
    "upstream_grown_length_removed": (
        {"x-probe": "response_body", "x-body-op": "append", "x-body-pause": "until_eos",
         "x-remove-content-length": "1"},
        {"status": 200, "body": GROWN, "transfer-encoding": "chunked"},
    ),
    # A second local reply from on_http_response_headers, while the first passes through them
    # (and, below, while an upstream response does): Envoy sends the new one without the
    # filters (sendDirectLocalReply).
    "local_reply_replaced_in_response_headers": (
        {"x-probe": "local", "x-local-in-response-headers": "1"},
        {"status": 502, "body": b"replaced reply"},
    ),
    "upstream_replaced_in_response_headers": (
        {"x-probe": "response_body", "x-local-in-response-headers": "1"},
        {"status": 502, "body": b"replaced reply"},
    ),
    # Last: a trap leaves Envoy's VM failed for every later request. The filter traps in the
    # response callbacks its own local reply passes through: Envoy answers 503 instead.
    "local_reply_trap_in_response_callbacks": (
        {"x-probe": "local", "x-trap-in": "response_headers"},
        {"status": 503, "body": b""},
    ),
}

# Differences that remain, each with its reason (strict: one that disappears fails the run).
_EXCESS = ("host-sim cannot write a body past its declared content-length (hyper cuts it there), "
           "so the bytes Envoy 1.40 leaves on the connection after a stale length are missing; "
           "the client reads the same response")
KNOWN: dict[str, str] = {
    "local_reply_rewritten_stale_length": _EXCESS,
    "upstream_grown_stale_length": _EXCESS,
}


@pytest.fixture(scope="module")
def outcomes(gateways):
    """Every case against both gateways, once."""
    return {(gw, name): exchange(port, request)
            for name, (request, _) in CASES.items()
            for gw, port in gateways.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_envoy_does_what_the_case_says(name, outcomes):
    """Pins real Envoy's behaviour, so a change in Envoy shows up here first."""
    _, expected = CASES[name]
    wire = outcomes[("envoy", name)]
    assert wire.status == expected["status"]
    assert wire.body == expected["body"]
    for header in ("content-length", "transfer-encoding", "x-probe-saw-status"):
        if header in expected:
            assert wire.headers.get(header) == expected[header], header


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN[n], strict=True)) if n in KNOWN else n
    for n in CASES
])
def test_host_sim_matches_envoy(name, outcomes):
    assert compared(outcomes[("host-sim", name)]) == compared(outcomes[("envoy", name)])
