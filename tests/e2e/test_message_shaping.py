"""Message shaping and keys end to end (issue 14, items 3 and 4): real Envoy 1.40 running the
committed envoy.yaml with the filter's configuration changed to one shaping mode each, in front
of the session's REST proxy bridged to the tansu broker; the records are read back from Kafka
with confluent-kafka.

- template: `message.mode: "template"` with header, body-field, method and gateway placeholders
  (x-request-id, the receive time), the key from a body field (`key_body_field`);
- body, json format: the record value is the request body's JSON, the key from a header
  (`key_header`);
- body, binary format: the record value is the request body's bytes exactly.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from conftest import WASM, EnvoyPorts, render_envoy_yaml, start_envoy, with_filter_config
from procs import free_port
from scenarios import HOST, SENT

TOPIC = "audit"  # one of the broker's topics (conftest.TOPICS); each test reads since its marks

TEMPLATE = {
    "type": "order.created",
    "tenant": "${header.x-tenant}",
    "order": "${body_json/order}",
    "qty": "${body_json/order/qty}",
    "source": "${method} ${path}",
    "received_at_ms": "${received_at_ms}",
    "trace": "${request_id}",
}

MODES = {
    "template": {"message": {"mode": "template", "template": TEMPLATE},
                 "key_body_field": "/order/id"},
    "body-json": {"message": {"mode": "body"}, "key_header": "x-user",
                  "rest_proxy": {"upstream": "kafka_rest", "authority": "kafka-rest",
                                 "format": "json", "timeout": 5000}},
    "body-binary": {"message": {"mode": "body"}},
}


@pytest.fixture(scope="module", params=sorted(MODES))
def shaping_envoy(request, envoy_stack, run_dir):
    """Real Envoy of its own with one shaping configuration, calling the Envoy stack's relay
    and REST proxy; yields (mode, listener port)."""
    mode = request.param
    ports = EnvoyPorts(listener=free_port(), admin=free_port(), cluster=envoy_stack.relay.port)
    config = run_dir / f"envoy-shaping-{mode}.yaml"
    config.write_text(with_filter_config(render_envoy_yaml(ports, WASM), topic=TOPIC,
                                         **MODES[mode]))
    proc = start_envoy(f"envoy-shaping-{mode}", config, ports, run_dir)
    try:
        yield mode, ports.listener
    finally:
        proc.stop()
        envoy_stack.relay.wait_idle(15.0)


def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{port}{path}", data=body, timeout=15,
                         headers={"Host": HOST, **headers})


# Spaced JSON with a number written as 2.50: the compact form keeps it byte for byte.
ORDER = b'{\n "order": {"id": "o-17", "qty": 3, "lines": [{"sku": "a", "n": 2.50}]}\n}'
ORDER_COMPACT = b'{"order":{"id":"o-17","qty":3,"lines":[{"sku":"a","n":2.50}]}}'


def test_shaped_record_read_back_from_kafka(shaping_envoy, kafka):
    mode, port = shaping_envoy
    marks = kafka.watermarks()
    before_ms = int(time.time() * 1000)
    r = _post(port, "/kafka/orders", ORDER, {"content-type": "application/json",
                                               "x-tenant": "acme", "x-user": "u-9",
                                               "x-request-id": "rid-e2e-1"})
    after_ms = int(time.time() * 1000)
    assert (r.status_code, r.content) == (200, SENT), f"{mode}: {r.status_code} {r.text}"
    records = [rec for rec in kafka.read_since(marks) if rec[0] == TOPIC]
    assert len(records) == 1, f"{mode}: {records}"
    _topic, _partition, _offset, key, value = records[0]

    if mode == "template":
        message = json.loads(value)
        trace = message.pop("trace")
        received = message.pop("received_at_ms")
        assert message == {"type": "order.created", "tenant": "acme",
                           "order": json.loads(ORDER)["order"], "qty": 3,
                           "source": "POST /kafka/orders"}
        # The client's x-request-id (envoy.yaml sets generate_request_id: false, so Envoy
        # neither adds nor replaces one).
        assert trace == "rid-e2e-1", trace
        # The host clock at the request headers (wall clock; a second of slack either way).
        assert before_ms - 1000 <= received <= after_ms + 1000, (before_ms, received, after_ms)
        assert b'"n":2.50' in value, value
        assert key == b"o-17"
    elif mode == "body-json":
        assert value == ORDER_COMPACT
        # REST Proxy v2 applies the json format to the key too: a JSON string (README,
        # "Keys in the json format").
        assert key == b'"u-9"'
        # A body that is not JSON: 400, and nothing reaches Kafka.
        marks = kafka.watermarks()
        r = _post(port, "/kafka/x", b"not json", {"content-type": "text/plain"})
        assert r.status_code == 400, r.text
        assert r.json() == {"message": "Bad Request",
                            "error": "the request body is not a JSON document"}
        assert [rec for rec in kafka.read_since(marks) if rec[0] == TOPIC] == []
    else:
        assert value == ORDER
        assert key is None
