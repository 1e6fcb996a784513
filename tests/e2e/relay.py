"""A recording HTTP/1.1 relay between a gateway and its REST proxy, in the test process.

The gateway's `kafka_rest` upstream points here; each request is recorded exactly as the gateway
sent it (method, path, header lines in order, body, and whether it came chunked) and passed on to
the REST proxy, whose answer goes back unchanged except for the framing (Content-Length) and
`Connection: close` (so a gateway never keeps a pooled connection to a relay that is stopped for
the "REST proxy stopped" scenario). This is how the differential check compares the REST requests
of real Envoy and of host-sim.

A gateway that gives up on a call (its callout timeout: Envoy resets the upstream stream, which
on HTTP/1 closes the connection) is passed on: while the REST proxy has not answered, the relay
watches the gateway's side, and when that closes it closes its own connection to the REST proxy,
as it would have seen with no relay in between. The REST proxy then abandons the request, so a
record whose client got 504 is not written behind the gateway's back.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
              "upgrade", "content-length"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: list[tuple[str, str]]  # as received, names lowercased
    body: bytes
    chunked: bool
    # The REST proxy's answer as relayed back (None: none came, the connection was dropped).
    response_status: int | None = None
    response_body: bytes | None = None
    # The gateway closed its connection before the REST proxy answered (and the relay then
    # closed its own, abandoning the call).
    abandoned: bool = False

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


class Relay:
    def __init__(self, port: int, target_port: int):
        self.port = port
        self.target_port = target_port
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args):  # quiet
                pass

            def _read_body(self) -> tuple[bytes, bool]:
                if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                    body = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return bytes(body), True
                        body += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("content-length") or 0)
                return self.rfile.read(length), False

            def _handle(self):
                with relay._lock:
                    relay._in_flight += 1
                try:
                    self._relay()
                finally:
                    with relay._lock:
                        relay._in_flight -= 1

            def _relay(self):
                body, chunked = self._read_body()
                headers = [(k.lower(), v) for k, v in self.headers.items()]
                recorded = RecordedRequest(self.command, self.path, headers, body, chunked)
                with relay._lock:
                    relay.requests.append(recorded)
                forward = {k: v for k, v in headers if k not in HOP_BY_HOP}
                conn = http.client.HTTPConnection("127.0.0.1", relay.target_port, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=forward)
                    if not self._wait_for_answer(conn.sock):
                        with relay._lock:
                            recorded.abandoned = True
                        self.close_connection = True
                        return
                    resp = conn.getresponse()
                    payload = resp.read()
                    resp_headers = [(k, v) for k, v in resp.getheaders()
                                    if k.lower() not in HOP_BY_HOP]
                except OSError:
                    # The REST proxy is not there: behave like it, drop the connection unanswered.
                    self.close_connection = True
                    return
                finally:
                    conn.close()
                with relay._lock:
                    recorded.response_status, recorded.response_body = resp.status, payload
                self.close_connection = True
                try:
                    self.send_response_only(resp.status, resp.reason)
                    for k, v in resp_headers:
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the gateway gave up on the call (its timeout) and closed the connection

            def _wait_for_answer(self, upstream: socket.socket) -> bool:
                """Waits until the REST proxy's answer starts (True) or the gateway closes its
                connection first (False)."""
                client = self.connection
                watching_client = True
                while True:
                    watched = [upstream, client] if watching_client else [upstream]
                    readable, _, _ = select.select(watched, [], [], 0.05)
                    if upstream in readable:
                        return True
                    if client in readable:
                        try:
                            if client.recv(1, socket.MSG_PEEK) == b"":
                                return False  # orderly close: the gateway gave up
                        except (ConnectionResetError, BrokenPipeError):
                            return False
                        # Bytes from the gateway (a pipelined request): it is still there, and
                        # its data is not ours to read here; stop watching.
                        watching_client = False

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"relay-{self.port}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def wait_idle(self, timeout: float) -> None:
        """Waits until no request is being relayed (a call the gateway gave up on may still be
        on its way to the REST proxy)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._in_flight == 0:
                    return
            if time.monotonic() >= deadline:
                raise AssertionError(f"relay {self.port}: a request still in flight after "
                                     f"{timeout:.0f} s")
            time.sleep(0.02)

    def mark(self) -> int:
        with self._lock:
            return len(self.requests)

    def since(self, mark: int) -> list[RecordedRequest]:
        with self._lock:
            return list(self.requests[mark:])
