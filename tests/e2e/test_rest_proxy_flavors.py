"""The filter in synchronous mode through real Envoy 1.40 against each flavour of host-sim's REST
proxy (`host-sim rest-proxy --flavor confluent|karapace|redpanda`, bridged to the tansu broker):
v2 produce in binary and json format, a partial failure (one of two target topics refused), a
record over the broker's message.max.bytes, and a v3 configuration (the v2-only proxies answer
404, so the filter answers 502).

Three Envoys run for the whole module (v2 binary, v2 json, v3), their kafka_rest cluster pointing
at one port; each flavour's REST proxy is started on that port in turn. A fourth runs the filter
in asynchronous mode for the acceptance run of issue 12: batches with a record the broker refuses
(over message.max.bytes) mixed in, which Karapace answers 422 with one `offsets` entry per record;
every other record must be written exactly once, and the filter's metrics in Envoy's /stats must
equal what reached Kafka.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import WASM, EnvoyPorts, RestProxy, envoy_filter_config, envoy_variants, render_envoy_yaml
from procs import free_port

TOPIC = "kafka-upstream"
# The asynchronous Envoy's own topic: tansu's high watermark can lag behind the tail of a
# multi-record batch (conftest's Kafka.read_until), so its batches must not share a topic with
# the tests that read back by watermark.
ASYNC_TOPIC = "flavors-async"
# The broker's record batch limit the proxies are started with: small, so a 5 KB body is too
# large while ordinary requests pass.
MESSAGE_MAX_BYTES = 4096

# Per flavour: (REST status, per-record error_code) of a record over message.max.bytes, the error
# code an injected record failure carries, the REST status of a response with a failed record,
# and the filter's answer to a v3 configuration.
FLAVORS = {
    # kafka-rest: 200 with 50002 (non-retriable) in offsets.
    "confluent": {"too_large": (200, 50002), "fault_code": 50003, "failed_status": 200, "v3": 200},
    # Karapace: 422 with error_code 1 (non-retriable); 2 is its retriable code.
    "karapace": {"too_large": (422, 1), "fault_code": 2, "failed_status": 422, "v3": 502},
    # pandaproxy: 200 with the partition's Kafka error, 10 MESSAGE_TOO_LARGE.
    "redpanda": {"too_large": (200, 10), "fault_code": 6, "failed_status": 200, "v3": 502},
}


class FlavoredRestProxy(RestProxy):
    """conftest's REST proxy with --flavor and a small --message-max-bytes, on a given port."""

    def __init__(self, flavor: str, port: int, kafka, run_dir):
        super().__init__(f"rest-proxy-{flavor}", kafka, run_dir)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.extra_args = ["--flavor", flavor, "--message-max-bytes", str(MESSAGE_MAX_BYTES)]


@pytest.fixture(scope="module")
def rest_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def envoys(run_dir, rest_port):
    """Envoy port of each filter configuration: "v2-binary", "v2-json", "v3"."""
    base = render_envoy_yaml(EnvoyPorts(listener=0, admin=0, cluster=0), WASM)
    rest_proxy = envoy_filter_config(base)["rest_proxy"]
    rest_proxies = {
        "v2-binary": {**rest_proxy, "api": "v2", "format": "binary"},
        "v2-json": {**rest_proxy, "api": "v2", "format": "json"},
        "v3": {**rest_proxy, "api": "v3", "format": "binary", "cluster_id": "host-sim"},
    }
    variants = {name: {"rest_proxy": rp, "producer_async": False, "error_handling": {"return_error_message": True}}
                for name, rp in rest_proxies.items()}
    with envoy_variants("flavors", rest_port, run_dir, variants) as ports:
        yield {name: p.listener for name, p in ports.items()}


# The asynchronous Envoy: small batches flushed quickly, a few quick retries per record.
BATCH = 11
ASYNC_SETTINGS = {
    "producer_async": True,
    "producer_async_flush_timeout": 200,
    "producer_request_limits_messages_per_request": BATCH,
    "producer_request_retries_max_attempts": 3,
    "producer_request_retries_backoff_timeout": 10,
}


@pytest.fixture(scope="module")
def async_envoy(run_dir, rest_port):
    """(listener, admin) ports of an Envoy running the filter in asynchronous mode."""
    with envoy_variants("flavors", rest_port, run_dir, {"async": {"topic": ASYNC_TOPIC, **ASYNC_SETTINGS}}) as ports:
        yield ports["async"].listener, ports["async"].admin


def envoy_counters(admin: int) -> dict[str, int]:
    """The filter's counters in real Envoy's /stats, by the name after `wasmcustom.<prefix>.`."""
    text = requests.get(f"http://127.0.0.1:{admin}/stats", params={"filter": r"^wasmcustom\."},
                        timeout=5).text
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            values[name.rsplit(".", 1)[-1]] = int(value)
    return values


@pytest.fixture(scope="module", params=list(FLAVORS))
def flavor(request, kafka, run_dir, rest_port, envoys):
    proxy = FlavoredRestProxy(request.param, rest_port, kafka, run_dir)
    proxy.start()
    try:
        health = requests.get(f"{proxy.url}/_sim/health", timeout=5).json()
        assert health["flavor"] == request.param, health
        yield request.param, proxy
    finally:
        proxy.stop()


def per_record_codes(flavor: str, code: int) -> tuple:
    """The error_code the filter's 502 may report for a failed record. Karapace answers 422 and
    the filter takes a non-2xx answer's error_code only from a request-level envelope today, so it
    may report none; once it reads a 422's `offsets` it reports the record's code."""
    return (None, code) if flavor == "karapace" else (code,)


def post(port: int, body: bytes, path: str = "/flavors") -> tuple[int, dict]:
    r = requests.post(f"http://127.0.0.1:{port}{path}", data=body,
                      headers={"content-type": "application/json", "host": "gateway.e2e"}, timeout=20)
    return r.status_code, r.json()


def test_produce_binary_and_json(flavor, envoys, kafka):
    name, _ = flavor
    marks = kafka.watermarks()
    body = b'{"flavor": "%s", "n": 7}' % name.encode()
    for variant in ("v2-binary", "v2-json"):
        status, answer = post(envoys[variant], body)
        assert (status, answer) == (200, {"message": "message sent"}), f"{name} {variant}: {answer}"
    records = [r for r in kafka.read_since(marks) if r[0] == TOPIC]
    assert len(records) == 2, f"{name}: {records}"
    bodies = sorted(json.loads(r[4])["body"] for r in records)
    assert bodies == [body.decode()] * 2, f"{name}: {bodies}"


def test_partial_failure_is_502_and_the_good_record_is_written(flavor, envoys, kafka):
    name, proxy = flavor
    expected = FLAVORS[name]
    proxy.clear_faults()
    proxy.add_fault({"kind": "record_error", "topic": "audit", "error_code": expected["fault_code"],
                     "message": "refused by the test"})
    marks = kafka.watermarks()
    status, answer = post(envoys["v2-binary"], b'{"partial": true}', "/flavors?topics=orders,audit")
    assert status == 502, f"{name}: {answer}"
    detail = answer["rest_proxy"]
    assert (detail["topic"], detail["status"]) == ("audit", expected["failed_status"]), f"{name}: {answer}"
    assert detail.get("error_code") in per_record_codes(name, expected["fault_code"]), f"{name}: {answer}"
    topics = sorted(r[0] for r in kafka.read_since(marks))
    assert topics == ["orders"], f"{name}: {topics}"


def test_record_over_message_max_bytes_is_502(flavor, envoys, kafka):
    name, _ = flavor
    marks = kafka.watermarks()
    status, answer = post(envoys["v2-binary"], json.dumps({"pad": "x" * 5000}).encode())
    assert status == 502, f"{name}: {answer}"
    detail = answer["rest_proxy"]
    status, code = FLAVORS[name]["too_large"]
    assert detail["status"] == status, f"{name}: {answer}"
    assert detail.get("error_code") in per_record_codes(name, code), f"{name}: {answer}"
    assert kafka.read_since(marks) == []


def test_v3_configuration(flavor, envoys, kafka):
    name, _ = flavor
    marks = kafka.watermarks()
    status, answer = post(envoys["v3"], b'{"api": "v3"}')
    assert status == FLAVORS[name]["v3"], f"{name}: {answer}"
    written = [r for r in kafka.read_since(marks) if r[0] == TOPIC]
    if status == 200:
        assert len(written) == 1, f"{name}: {written}"
    else:
        assert answer["rest_proxy"]["status"] == 404, f"{name}: {answer}"
        assert written == [], f"{name}: {written}"


def test_async_partial_failures_write_every_good_record_once(flavor, async_envoy, kafka):
    """Issue 12's acceptance run through real Envoy, for every flavour (Karapace's 422 with
    per-record offsets is the case that used to resend the good records): every record the broker
    accepts is written exactly once, each refused one is dropped after its attempts, and the
    filter's messages_sent / messages_dropped equal what Kafka holds and what was refused."""
    name, proxy = flavor
    proxy.clear_faults()
    port, admin = async_envoy
    token = uuid.uuid4().hex
    requests_sent = 33

    def refused(i: int) -> bool:
        return i % 11 == 5

    def send(i: int) -> tuple[int, dict]:
        doc = {"token": token, "i": i}
        if refused(i):
            doc["pad"] = "x" * (MESSAGE_MAX_BYTES + 1000)
        return post(port, json.dumps(doc).encode())

    before = envoy_counters(admin)
    marks = kafka.watermarks()
    # Concurrent clients, so that batches hold several records and a refused record shares its
    # batch with acknowledged ones (a batch whose every record fails, in a row, is what turns the
    # REST proxy unhealthy: that rule is the producer's, tested natively).
    with ThreadPoolExecutor(max_workers=BATCH) as pool:
        answers = list(pool.map(send, range(requests_sent)))
    for i, (status, answer) in enumerate(answers):
        assert status == 200, f"{name}: request {i}: {answer}"
    expected = sorted(i for i in range(requests_sent) if not refused(i))

    def ours(records) -> list[int]:
        found = []
        for record in records:
            message = json.loads(record[4])
            args = message.get("body_args") if isinstance(message, dict) else None
            if isinstance(args, dict) and args.get("token") == token:
                found.append(args["i"])
        return sorted(found)

    # Asynchronous batches hold several records, whose tail tansu's high watermark can hide, so
    # the read does not trust the watermarks (conftest's Kafka.read_until).
    records = kafka.read_until(marks, ASYNC_TOPIC, lambda recs: len(ours(recs)) >= len(expected), timeout=30)
    assert ours(records) == expected, f"{name}: every accepted record exactly once"
    settled = {}
    for _ in range(200):
        after = envoy_counters(admin)
        settled = {k: after.get(k, 0) - before.get(k, 0) for k in ("messages_sent", "messages_dropped")}
        if settled["messages_sent"] + settled["messages_dropped"] >= requests_sent:
            break
        time.sleep(0.05)
    assert settled == {"messages_sent": len(expected), "messages_dropped": requests_sent - len(expected)}, (
        f"{name}: the filter's counts against Kafka's: {settled}")
