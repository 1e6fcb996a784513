"""The embedded Schema Registry of `host-sim rest-proxy`, bridged to the tansu broker: schemas are
registered over Confluent's Schema Registry API (served on the REST proxy's own listener), records
are produced through REST Proxy's schema formats (v2 `avro` / `jsonschema` content types with
`value_schema_id`, v3 `value.schema_id`), and read back from Kafka with confluent-kafka's own
schema-registry deserializers pointed at the same URL. A value that does not match its schema is
refused with 422 / 42203 and nothing reaches the broker.

Then through real Envoy 1.40 and the filter's `schema_registry.confluent` (Kong 3.11+ fields) with
`message.mode: body`: the filter looks the subjects up in the same registry (the REST proxy's
listener, Envoy cluster `kafka_rest`), the request body is sent with the schema id, and the
record read back with the deserializers equals the body; a body that does not match the schema
gets an error and writes nothing.
"""

from __future__ import annotations

import json

import pytest
import requests
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

import http.client
import time

from conftest import WASM, EnvoyPorts, RestProxy, envoy_filter_config, envoy_variants, render_envoy_yaml

TOPIC = "kafka-upstream"
REGISTRY_JSON = "application/vnd.schemaregistry.v1+json"
ORDER_AVRO = {"type": "record", "name": "Order", "namespace": "e2e",
              "fields": [{"name": "id", "type": "long"}, {"name": "item", "type": "string"},
                         {"name": "note", "type": ["null", "string"], "default": None}]}
ORDER_JSON = {"type": "object", "properties": {"id": {"type": "integer"}, "item": {"type": "string"}},
              "required": ["id", "item"]}


@pytest.fixture(scope="module")
def rest_proxy(kafka, run_dir):
    proxy = RestProxy("rest-proxy-schema-registry", kafka, run_dir)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def register(proxy: RestProxy, subject: str, schema: dict, schema_type: str | None = None) -> int:
    body = {"schema": json.dumps(schema)}
    if schema_type:
        body["schemaType"] = schema_type
    r = requests.post(f"{proxy.url}/subjects/{subject}/versions", json=body,
                      headers={"Content-Type": REGISTRY_JSON}, timeout=5)
    assert r.status_code == 200, f"register {subject}: {r.status_code} {r.text}"
    return r.json()["id"]


def values(kafka, marks) -> list[bytes]:
    return [value for (topic, _, _, _, value) in kafka.read_since(marks) if topic == TOPIC]


def test_avro_v2_and_v3_read_back_with_confluent_deserializer(kafka, rest_proxy):
    avro_id = register(rest_proxy, f"{TOPIC}-value", ORDER_AVRO)
    assert register(rest_proxy, f"{TOPIC}-value", ORDER_AVRO) == avro_id  # same schema, same id
    marks = kafka.watermarks()
    r = requests.post(f"{rest_proxy.url}/topics/{TOPIC}",
                      data=json.dumps({"value_schema_id": avro_id,
                                       "records": [{"value": {"id": 1, "item": "pen"}},
                                                   {"value": {"id": 2, "item": "ink", "note": "blue"}}]}),
                      headers={"Content-Type": "application/vnd.kafka.avro.v2+json"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["value_schema_id"] == avro_id
    assert all(o["error_code"] is None for o in r.json()["offsets"]), r.text
    cluster = requests.get(f"{rest_proxy.url}/v3/clusters", timeout=5).json()["data"][0]["cluster_id"]
    r = requests.post(f"{rest_proxy.url}/v3/clusters/{cluster}/topics/{TOPIC}/records",
                      json={"value": {"schema_id": avro_id, "data": {"id": 3, "item": "nib"}}}, timeout=10)
    assert r.status_code == 200, r.text

    client = SchemaRegistryClient({"url": rest_proxy.url})
    deserialize = AvroDeserializer(client)
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    got = [deserialize(v, ctx) for v in values(kafka, marks)]
    assert got == [{"id": 1, "item": "pen", "note": None}, {"id": 2, "item": "ink", "note": "blue"},
                   {"id": 3, "item": "nib", "note": None}]


def test_json_schema_read_back_and_bad_values_write_nothing(kafka, rest_proxy):
    json_id = register(rest_proxy, "orders-json-value", ORDER_JSON, "JSON")
    marks = kafka.watermarks()
    r = requests.post(f"{rest_proxy.url}/topics/{TOPIC}",
                      data=json.dumps({"value_schema_id": json_id,
                                       "records": [{"value": {"id": 5, "item": "cap"}}]}),
                      headers={"Content-Type": "application/vnd.kafka.jsonschema.v2+json"}, timeout=10)
    assert r.status_code == 200, r.text
    client = SchemaRegistryClient({"url": rest_proxy.url})
    deserialize = JSONDeserializer(None, schema_registry_client=client)
    got = [deserialize(v, SerializationContext(TOPIC, MessageField.VALUE)) for v in values(kafka, marks)]
    assert got == [{"id": 5, "item": "cap"}]

    # Values that do not match their schema: REST Proxy's 422 / 42203, and no record at all.
    marks = kafka.watermarks()
    for content_type, schema_id, value in [
            ("application/vnd.kafka.jsonschema.v2+json", json_id, {"id": "five", "item": "cap"}),
            ("application/vnd.kafka.avro.v2+json", register(rest_proxy, f"{TOPIC}-value", ORDER_AVRO),
             {"id": 6})]:
        r = requests.post(f"{rest_proxy.url}/topics/{TOPIC}",
                          data=json.dumps({"value_schema_id": schema_id,
                                           "records": [{"value": {"id": 7, "item": "ok"}}, {"value": value}]}),
                          headers={"Content-Type": content_type}, timeout=10)
        assert r.status_code == 422, r.text
        assert r.json()["error_code"] == 42203, r.text
    assert kafka.watermarks() == marks


KEY_AVRO = "string"  # REST API v2 carries key and value in one format: an Avro key with Avro values


@pytest.fixture(scope="module")
def envoys(run_dir, rest_proxy):
    """Envoy listener port of each configuration: "avro-v2" (Avro values and Avro keys from
    `key_query_arg`, REST API v2), "json-v3" (JSON Schema values, REST API v3) and
    "avro-v3-async" (Avro values, asynchronous mode)."""
    register(rest_proxy, "envoy-orders-value", ORDER_AVRO)
    register(rest_proxy, "envoy-orders-key", KEY_AVRO)
    register(rest_proxy, "envoy-orders-json-value", ORDER_JSON, "JSON")
    base = render_envoy_yaml(EnvoyPorts(listener=0, admin=0, cluster=0), WASM)
    rest = {**envoy_filter_config(base)["rest_proxy"], "format": "json"}
    registry = {"url": f"http://127.0.0.1:{rest_proxy.port}", "upstream": "kafka_rest"}
    variants = {
        "avro-v2": {"rest_proxy": rest, "schema_registry": {"confluent": {
            **registry, "value_schema": {"subject_name": "envoy-orders-value", "schema_version": "latest"},
            "key_schema": {"subject_name": "envoy-orders-key"}}}},
        "json-v3": {"rest_proxy": {**rest, "api": "v3", "cluster_id": "host-sim"}, "schema_registry": {
            "confluent": {**registry, "value_schema": {"subject_name": "envoy-orders-json-value",
                                                       "schema_version": "1"}}}},
        "avro-v3-async": {"rest_proxy": {**rest, "api": "v3", "cluster_id": "host-sim"},
                          "producer_async": True, "producer_async_flush_timeout": 50,
                          "schema_registry": {"confluent": {
                              **registry, "value_schema": {"subject_name": "envoy-orders-value"}}}},
    }
    common = {"message": {"mode": "body"}, "error_handling": {"return_error_message": True}}
    variants = {name: {**common, **changes} for name, changes in variants.items()}
    with envoy_variants("schema-registry", rest_proxy.port, run_dir, variants) as ports:
        yield {name: p.listener for name, p in ports.items()}


def post(port: int, path: str, body: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", path, body=body, headers={"content-type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def post_when_resolved(port: int, path: str, body: bytes) -> tuple[int, dict]:
    """POSTs until the filter's first schema id lookup has been answered (503 until then),
    bounded in count; timing is not asserted."""
    for _ in range(100):
        status, answer = post(port, path, body)
        if status != 503:
            return status, answer
        assert "schema registry" in json.dumps(answer), answer
        time.sleep(0.1)
    return status, answer


def test_envoy_avro_v2_with_an_avro_key(envoys, kafka, rest_proxy):
    marks = kafka.watermarks()
    body = {"id": 11, "item": "stamp", "note": "first class"}
    status, answer = post_when_resolved(envoys["avro-v2"], "/orders?key=cust-9", json.dumps(body).encode())
    assert (status, answer) == (200, {"message": "message sent"}), answer
    records = [r for r in kafka.read_since(marks) if r[0] == TOPIC]
    assert len(records) == 1, records
    _, _, _, key, value = records[0]
    client = SchemaRegistryClient({"url": rest_proxy.url})
    assert AvroDeserializer(client)(value, SerializationContext(TOPIC, MessageField.VALUE)) == body
    assert AvroDeserializer(client)(key, SerializationContext(TOPIC, MessageField.KEY)) == "cust-9"


def test_envoy_json_schema_v3_and_a_bad_body_writes_nothing(envoys, kafka, rest_proxy):
    marks = kafka.watermarks()
    body = {"id": 12, "item": "card"}
    status, answer = post_when_resolved(envoys["json-v3"], "/orders", json.dumps(body).encode())
    assert (status, answer) == (200, {"message": "message sent"}), answer
    values_read = values(kafka, marks)
    client = SchemaRegistryClient({"url": rest_proxy.url})
    deserialize = JSONDeserializer(None, schema_registry_client=client)
    assert [deserialize(v, SerializationContext(TOPIC, MessageField.VALUE)) for v in values_read] == [body]

    marks = kafka.watermarks()
    for name in ("json-v3", "avro-v2"):
        status, answer = post(envoys[name], "/orders", json.dumps({"id": "twelve"}).encode())
        assert status >= 400 and status != 503, (name, status, answer)
        assert answer["rest_proxy"]["error_code"] == 42203, (name, answer)
    assert kafka.watermarks() == marks


def test_envoy_async_records_carry_the_schema_id(envoys, kafka, rest_proxy):
    marks = kafka.watermarks()
    bodies = [{"id": 20 + n, "item": f"box-{n}", "note": None} for n in range(3)]
    for body in bodies:
        # Accepted at once, even before the first lookup is answered: the batch waits for the id.
        status, answer = post(envoys["avro-v3-async"], "/orders", json.dumps(body).encode())
        assert (status, answer) == (200, {"message": "message sent"}), answer
    records = kafka.read_until(marks, TOPIC, lambda got: len(got) >= len(bodies), timeout=20)
    client = SchemaRegistryClient({"url": rest_proxy.url})
    deserialize = AvroDeserializer(client)
    got = [deserialize(value, SerializationContext(TOPIC, MessageField.VALUE)) for (*_, value) in records]
    assert sorted(got, key=lambda r: r["id"]) == bodies
