"""Kafka record headers through real Envoy 1.40: the filter's `headers` configuration (Kong
kafka-upstream 3.15+ fields, plus static_headers) with REST API v3, against host-sim's REST proxy
(Confluent flavour) bridged to the tansu broker. The records are read back with confluent-kafka
and their Kafka record headers compared: forwarded, renamed, joined and static headers arrive with
their exact bytes; credentials and hop-by-hop headers do not.

Two Envoys of this module's own (envoy.yaml rendered with this module's filter configuration, as
test_rest_proxy_flavors.py does), both pointing at one REST proxy: an allowlist configuration in
synchronous mode, a blocklist configuration in asynchronous mode.
"""

from __future__ import annotations

import http.client
import json
import time

import pytest
from confluent_kafka import TopicPartition

from conftest import WASM, EnvoyPorts, RestProxy, envoy_filter_config, envoy_variants, render_envoy_yaml

TOPIC = "kafka-upstream"

ALLOWLIST = {
    "forward_all_by_default": False,
    "include_headers": ["x-correlation-id", "x-tenant-id", "x-tag", "x-note", "authorization"],
    "name_mappings": {"x-correlation-id": "trace-id", "X-Tenant-Id": "tenant"},
    "repeated_headers_behavior": "concatenate_by_comma",
    "static_headers": {"source": "gateway-e2e"},
}

BLOCKLIST = {
    "forward_all_by_default": True,
    "exclude_headers": ["user-agent", "x-tenant-id"],
    "name_mappings": {"x-correlation-id": "trace-id"},
    "repeated_headers_behavior": "take_first",
}


@pytest.fixture(scope="module")
def rest_proxy(kafka, run_dir):
    proxy = RestProxy("rest-proxy-record-headers", kafka, run_dir)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def envoys(run_dir, rest_proxy):
    """Envoy listener port of each configuration: "allowlist" (sync), "blocklist" (async)."""
    base = render_envoy_yaml(EnvoyPorts(listener=0, admin=0, cluster=0), WASM)
    rest = {**envoy_filter_config(base)["rest_proxy"], "api": "v3", "cluster_id": "host-sim",
            "format": "binary", "headers": {"x-api-key": "rest-proxy-secret"}}
    variants = {
        "allowlist": {"headers": ALLOWLIST, "producer_async": False},
        "blocklist": {"headers": BLOCKLIST, "producer_async": True, "producer_async_flush_timeout": 50},
    }
    common = {"rest_proxy": rest, "error_handling": {"return_error_message": True}}
    variants = {name: {**common, **changes} for name, changes in variants.items()}
    with envoy_variants("record-headers", rest_proxy.port, run_dir, variants) as ports:
        yield {name: p.listener for name, p in ports.items()}


def post(port: int, headers: list[tuple[str, bytes]], body: bytes) -> tuple[int, dict]:
    """POST with exactly these header lines (repeats kept, bytes as given)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.putrequest("POST", "/record-headers", skip_accept_encoding=True)
        for name, value in headers + [("content-type", b"application/json"),
                                      ("content-length", str(len(body)).encode())]:
            conn.putheader(name, value)
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def read_headers(kafka, marks: dict, count: int, timeout: float = 15.0) -> list[list[tuple[str, bytes]]]:
    """The record headers of the first `count` records of TOPIC after `marks`, read with
    confluent-kafka (bounded wait; tansu's watermarks are not trusted, see Kafka.read_until)."""
    n = kafka.partitions(TOPIC)
    kafka.consumer.assign([TopicPartition(TOPIC, p, marks[(TOPIC, p)]) for p in range(n)])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = kafka.consumer.poll(0.2)
            if msg is None:
                continue
            assert not msg.error(), f"Kafka consumer error: {msg.error()}"
            got.append(list(msg.headers() or []))
    finally:
        kafka.consumer.unassign()
    assert len(got) == count, f"{len(got)} of {count} records read within {timeout:.0f} s: {got}"
    return got


CLIENT_HEADERS = [
    ("x-correlation-id", b"corr-1"),
    ("X-Tenant-Id", b"acme"),
    ("x-tag", b"a"),
    ("x-tag", b"b"),
    ("x-note", b"caf\xe9"),  # not UTF-8: the record header carries the byte as sent
    ("authorization", b"Bearer client-secret"),
    ("x-api-key", b"client-key"),
    ("user-agent", b"e2e"),
    ("connection", b"x-hop"),
    ("x-hop", b"1"),
]


def test_allowlist_forwards_renames_and_adds_static_headers(envoys, kafka):
    marks = kafka.watermarks()
    status, answer = post(envoys["allowlist"], CLIENT_HEADERS, b'{"n":1}')
    assert (status, answer) == (200, {"message": "message sent"}), answer
    (headers,) = read_headers(kafka, marks, 1)
    # The bridge (rskafka) hands the broker a record's headers in name order.
    assert sorted(headers) == sorted([
        ("trace-id", b"corr-1"),
        ("tenant", b"acme"),
        ("x-tag", b"a,b"),
        ("x-note", b"caf\xe9"),
        ("authorization", b"Bearer client-secret"),  # named by the allowlist: forwarded
        ("source", b"gateway-e2e"),
    ]), headers


def test_blocklist_withholds_credentials_and_hop_by_hop_headers(envoys, kafka):
    marks = kafka.watermarks()
    status, answer = post(envoys["blocklist"], CLIENT_HEADERS, b'{"n":2}')
    assert (status, answer) == (200, {"message": "message sent"}), answer
    (headers,) = read_headers(kafka, marks, 1)
    names = [name for name, _ in headers]
    assert ("trace-id", b"corr-1") in headers, headers
    assert ("x-tag", b"a") in headers and ("x-tag", b"a,b") not in headers, headers  # take_first
    assert ("x-note", b"caf\xe9") in headers, headers
    assert ("host", f"127.0.0.1:{envoys['blocklist']}".encode()) in headers, headers
    for absent in ("authorization", "x-api-key", "connection", "x-hop", "user-agent", "x-tenant-id",
                   "x-correlation-id", ":path", ":authority"):
        assert absent not in names, f"{absent} forwarded: {headers}"
    assert len(names) == len(set(names)), f"one value per name with take_first: {headers}"
