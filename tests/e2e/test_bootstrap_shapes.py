"""Envoy bootstrap shapes `host-sim serve --envoy` reads (issue 17, item 5), checked against real
Envoy 1.40 on one bootstrap: two listeners, each with the abi-probe wasm filter wrapped in a
TypedStruct (one `udpa.type.v1`, one `xds.type.v3`), the second listener's plugin configuration a
BytesValue; clusters of type STRICT_DNS and LOGICAL_DNS on `localhost`; and a `bootstrap_extensions`
WasmService singleton whose root ticks and calls out with no request at all.

Each gateway gets its own upstream (a small Python HTTP server that records what it receives).
Envoy serves both listeners; host-sim serves the one `--listener second` names, on the address the
file gives it. Compared: the answer to a request through the second listener (proxied to the
STRICT_DNS cluster), what the upstream saw of it, the service's tick callouts at the upstream and
their answers reaching the service's root context (its log line), and the configuration bytes the
filter got.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from conftest import HOST_SIM, PROBE_WASM, STARTUP_TIMEOUT, EnvoyPorts, _require_file, start_envoy
from procs import Proc, free_port, port_open

WAIT = 15.0  # seconds: every wait for ticks or log lines is bounded by this
SECOND_CONFIG = "listener=second"


class Upstream:
    """An HTTP/1.1 server on 127.0.0.1 that answers `200 pong` to /tick and
    `200 backend <path>` to anything else, keeping (method, path, headers) of each request."""

    def __init__(self):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                body = b"pong" if self.path == "/tick" else f"backend {self.path}".encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def requests_to(self, path: str) -> list:
        return [r for r in list(self.seen) if r[1] == path]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _wasm_filter(typed_struct: str, configuration: str, name: str) -> str:
    return f"""
                  - name: probe
                    typed_config:
                      "@type": {typed_struct}
                      type_url: type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      value:
                        config:
                          name: {name}
                          root_id: {name}_root
                          vm_config:
                            vm_id: {name}_vm
                            runtime: envoy.wasm.runtime.v8
                            configuration:
                              "@type": type.googleapis.com/google.protobuf.StringValue
                              value: vm-{name}
                            code: {{ local: {{ filename: {PROBE_WASM} }} }}
                          configuration:
{configuration}"""


def _listener(name: str, port: int, wasm_filter: str, route: str) -> str:
    return f"""
    - name: {name}
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: {name}
                route_config:
                  virtual_hosts:
                    - name: {name}
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
{route}
                http_filters:{wasm_filter}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""


def _cluster(name: str, kind: str, port: int) -> str:
    # V4_ONLY: the upstream listens on 127.0.0.1 only, and localhost may also resolve to ::1.
    return f"""
    - name: {name}
      type: {kind}
      dns_lookup_family: V4_ONLY
      connect_timeout: 1s
      load_assignment:
        cluster_name: {name}
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: localhost, port_value: {port} }}
"""


def render_bootstrap(ports: EnvoyPorts, first_port: int, upstream: int) -> str:
    indent = " " * 28
    first = _listener(
        "first", first_port,
        _wasm_filter("type.googleapis.com/udpa.type.v1.TypedStruct",
                     f'{indent}"@type": type.googleapis.com/google.protobuf.StringValue\n'
                     f"{indent}value: listener=first\n", "probe_first"),
        '                          direct_response: { status: 200, body: { inline_string: "first" } }')
    second_config = base64.b64encode(SECOND_CONFIG.encode()).decode()
    second = _listener(
        "second", ports.listener,
        _wasm_filter("type.googleapis.com/xds.type.v3.TypedStruct",
                     f'{indent}"@type": type.googleapis.com/google.protobuf.BytesValue\n'
                     f"{indent}value: {second_config}\n", "probe_second"),
        "                          route: { cluster: backend }")
    return f"""
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {ports.admin} }} }}
bootstrap_extensions:
  - name: envoy.bootstrap.wasm
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
      singleton: true
      config:
        name: ticker
        root_id: ticker_root
        vm_config:
          vm_id: ticker_vm
          runtime: envoy.wasm.runtime.v8
          # A Struct reaches the VM as its protobuf encoding, scalars as Envoy reads YAML (a
          # fraction and an int64 beyond int32 as text). Numbers are ones whose doubles are
          # UTF-8-safe bytes: the probe logs the bytes as (lossy) text.
          configuration:
            "@type": type.googleapis.com/google.protobuf.Struct
            value:
              zeta: z
              limits: {{ rate: 2.5, names: [a, true, null, 2], big: 3000000000, count: 7 }}
              alpha: "quoted"
              beta: false
          code: {{ local: {{ filename: {PROBE_WASM} }} }}
        configuration:
          "@type": type.googleapis.com/google.protobuf.StringValue
          value: tick=200 dispatch_on_tick=ticks
static_resources:
  listeners:{first}{second}
  clusters:{_cluster("backend", "STRICT_DNS", upstream)}{_cluster("ticks", "LOGICAL_DNS", upstream)}
"""


def _wait_for(what: str, done, proc: Proc) -> None:
    deadline = time.monotonic() + WAIT
    while not done():
        assert proc.alive(), f"{proc.name} exited\n{proc.tail(30)}"
        assert time.monotonic() < deadline, f"{proc.name}: no {what} within {WAIT:.0f} s\n{proc.tail(30)}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def gateways(run_dir):
    """Both gateways on the same bootstrap shape, each with its own ports and upstream:
    {"envoy": (proc, upstream, listener port), "host-sim": ...}."""
    _require_file(PROBE_WASM, "run `make wasm`")
    started = {}
    try:
        for gateway in ("envoy", "host-sim"):
            upstream = Upstream()
            ports = EnvoyPorts(listener=free_port(), admin=free_port(), cluster=upstream.port)
            config = run_dir / f"{gateway}-bootstrap-shapes.yaml"
            config.write_text(render_bootstrap(ports, free_port(), upstream.port))
            name = f"{gateway}-bootstrap-shapes"
            if gateway == "envoy":
                proc = start_envoy(name, config, ports, run_dir)
            else:
                # No --listen: the second listener's own address, as the file gives it.
                proc = Proc(name, [_require_file(HOST_SIM, "run `make host-sim`"), "serve",
                                   "--envoy", config, "--listener", "second", "--workers", "1"],
                            run_dir / f"{name}.log")
                proc.wait_until(f"listening on {ports.listener}", lambda p=ports.listener: port_open(p),
                                STARTUP_TIMEOUT)
            started[gateway] = (proc, upstream, ports.listener)
        yield started
    finally:
        for proc, upstream, _ in started.values():
            proc.stop()
            upstream.stop()


@pytest.mark.parametrize("gateway", ["envoy", "host-sim"])
def test_the_wasm_service_ticks_and_calls_out_with_no_request(gateway, gateways):
    proc, upstream, _ = gateways[gateway]
    _wait_for("three tick callouts at the LOGICAL_DNS cluster",
              lambda: len(upstream.requests_to("/tick")) >= 3, proc)
    for method, _path, headers in upstream.requests_to("/tick"):
        assert method == "GET"
        assert headers.get("x-envoy-internal") == "true", headers
    # The answers reach the service's root context: its log line carries the body.
    _wait_for("callout answer in the service's log", lambda: any(
        "probe:root_http_call_response" in line and '"body":"pong"' in line
        for line in proc.log_path.read_text(errors="replace").splitlines()), proc)


def test_the_second_listener_answers_alike_through_the_strict_dns_cluster(gateways):
    answers = {}
    for gateway, (proc, upstream, port) in gateways.items():
        resp = requests.get(f"http://127.0.0.1:{port}/second/x?y=1", timeout=10)
        seen = upstream.requests_to("/second/x?y=1")
        answers[gateway] = (resp.status_code, resp.text, resp.headers.get("content-type"), len(seen))
        assert proc.alive(), proc.tail(30)
    assert answers["envoy"] == (200, "backend /second/x?y=1", "text/plain", 1), answers
    assert answers["host-sim"] == answers["envoy"]


@pytest.mark.parametrize("gateway", ["envoy", "host-sim"])
def test_the_bytes_value_configuration_reaches_the_filter_decoded(gateway, gateways):
    proc, _, _ = gateways[gateway]
    _wait_for("the second filter's configure line", lambda: any(
        "probe:configure" in line and f'"config":"{SECOND_CONFIG}"' in line
        for line in proc.log_path.read_text(errors="replace").splitlines()), proc)
    # And its vm_config.configuration reaches proxy_on_vm_start.
    _wait_for("the second filter's vm_start line", lambda: any(
        "probe:vm_start" in line and '"vm_config":"vm-probe_second"' in line
        for line in proc.log_path.read_text(errors="replace").splitlines()), proc)


def test_host_sim_refuses_a_listener_the_file_does_not_have(run_dir):
    ports = EnvoyPorts(listener=free_port(), admin=free_port(), cluster=free_port())
    config = run_dir / "bootstrap-shapes-bad-listener.yaml"
    config.write_text(render_bootstrap(ports, free_port(), ports.cluster))
    done = subprocess.run([str(HOST_SIM), "serve", "--envoy", str(config), "--listener", "third"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert 'static_resources.listeners: no listener named "third" (the file has ["first", "second"])' \
        in done.stderr, done.stderr


def _vm_config(proc: Proc, label: str) -> str:
    """The VM configuration the service's `proxy_on_vm_start` read (the probe's vm_start line)."""
    found = []

    def seen() -> bool:
        for line in proc.log_path.read_text(errors="replace").splitlines():
            if "probe:vm_start" in line and label in line:
                match = re.search(r'"vm_config":("(?:[^"\\]|\\.)*")', line)
                if match:
                    found.append(json.loads(match.group(1)))
                    return True
        return False

    _wait_for("the service's vm_start line", seen, proc)
    return found[0]


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _fields(data: bytes):
    """(field number, wire type, payload) of each field of a protobuf message."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            payload, at = _varint(data, at)
        elif wire == 1:
            payload, at = data[at:at + 8], at + 8
        elif wire == 2:
            size, at = _varint(data, at)
            payload, at = data[at:at + size], at + size
        else:
            raise AssertionError(f"wire type {wire} in a Struct")
        yield number, wire, payload


def decode_struct(data: bytes) -> dict:
    """A google.protobuf.Struct's encoding as a Python dict (field order does not matter)."""
    out = {}
    for number, _, entry in _fields(data):
        assert number == 1, number
        parts = {n: p for n, _, p in _fields(entry)}
        out[parts[1].decode()] = _decode_value(parts.get(2, b""))
    return out


def _decode_value(data: bytes):
    for number, _, payload in _fields(data):
        if number == 1:
            return None
        if number == 2:
            return struct.unpack("<d", payload)[0]
        if number == 3:
            return payload.decode()
        if number == 4:
            return bool(payload)
        if number == 5:
            return decode_struct(payload)
        if number == 6:
            return [_decode_value(p) for _, _, p in _fields(payload)]
    raise AssertionError(f"an empty Value: {data!r}")


def test_a_struct_vm_configuration_reaches_the_service_as_envoy_encodes_it(gateways):
    envoy_proc = gateways["envoy"][0]
    host_sim_proc = gateways["host-sim"][0]
    from_envoy = decode_struct(_vm_config(envoy_proc, "ticker_vm").encode())
    assert from_envoy == {"zeta": "z", "alpha": "quoted", "beta": False,
                          "limits": {"rate": "2.5", "names": ["a", True, None, 2.0],
                                     "big": "3000000000", "count": 7.0}}, from_envoy
    from_host_sim = decode_struct(_vm_config(host_sim_proc, "bootstrap_extensions[0] (ticker)").encode())
    # The same message; the order of its fields may differ (Envoy's follows its map's hashing).
    assert from_host_sim == from_envoy


@pytest.mark.parametrize("gateway", ["envoy", "host-sim"])
def test_a_service_that_is_not_a_singleton_ticks_on_every_thread(gateway, run_dir):
    """`singleton: false`: Envoy gives each thread a VM (one worker with --concurrency 1, and the
    main thread), host-sim one per worker (--workers 1) and one more: two VMs tick either way.
    Each VM counts its own ticks, so the first tick's line (`"n":1`) appears once per VM."""
    upstream = Upstream()
    ports = EnvoyPorts(listener=free_port(), admin=free_port(), cluster=upstream.port)
    config = run_dir / f"{gateway}-per-thread-service.yaml"
    config.write_text(render_bootstrap(ports, free_port(), upstream.port)
                      .replace("singleton: true", "singleton: false"))
    name = f"{gateway}-per-thread-service"
    if gateway == "envoy":
        proc = start_envoy(name, config, ports, run_dir)
    else:
        proc = Proc(name, [_require_file(HOST_SIM, "run `make host-sim`"), "serve", "--envoy", config,
                           "--listener", "second", "--workers", "1"], run_dir / f"{name}.log")
        proc.wait_until(f"listening on {ports.listener}", lambda: port_open(ports.listener),
                        STARTUP_TIMEOUT)
    try:
        def second_ticks() -> int:
            return sum(1 for line in proc.log_path.read_text(errors="replace").splitlines()
                       if "probe:tick" in line and '"n":2,' in line
                       and ("ticker_vm" in line or "(ticker)" in line))
        # Every VM's second tick: by then each VM has ticked at least once.
        _wait_for("two ticking VMs", lambda: second_ticks() >= 2, proc)
        ticking = sum(1 for line in proc.log_path.read_text(errors="replace").splitlines()
                      if "probe:tick" in line and '"n":1,' in line
                      and ("ticker_vm" in line or "(ticker)" in line))
        assert ticking == 2, f"{gateway}: {ticking} VMs ticked\n{proc.tail(20)}"
    finally:
        proc.stop()
        upstream.stop()


def test_host_sim_says_which_of_several_listeners_it_serves(run_dir):
    ports = EnvoyPorts(listener=free_port(), admin=free_port(), cluster=free_port())
    first = free_port()
    config = run_dir / "bootstrap-shapes-default-listener.yaml"
    config.write_text(render_bootstrap(ports, first, ports.cluster))
    proc = Proc("host-sim-default-listener", [HOST_SIM, "serve", "--envoy", config, "--workers", "1"],
                run_dir / "host-sim-default-listener.log")
    try:
        proc.wait_until(f"listening on {first} (the first listener's address)", lambda: port_open(first),
                        STARTUP_TIMEOUT)
        log = proc.log_path.read_text(errors="replace")
        assert ('2 listeners in ' in log and 'serving the first, "first" (others: ["second"]); '
                'pick one with --listener NAME' in log), proc.tail(20)
    finally:
        proc.stop()
