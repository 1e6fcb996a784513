"""The embedded Schema Registry of `host-sim rest-proxy`, bridged to the tansu broker: schemas are
registered over Confluent's Schema Registry API (served on the REST proxy's own listener), records
are produced through REST Proxy's schema formats (v2 `avro` / `jsonschema` content types with
`value_schema_id`, v3 `value.schema_id`), and read back from Kafka with confluent-kafka's own
schema-registry deserializers pointed at the same URL. A value that does not match its schema is
refused with 422 / 42203 and nothing reaches the broker.
"""

from __future__ import annotations

import json

import pytest
import requests
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import RestProxy

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
