//! The embedded Schema Registry over real HTTP, and produce requests in its schema formats: the
//! record bytes are Confluent's wire format (magic 0, 4-byte big-endian id, Avro binary / JSON).

mod common;

use base64::Engine;
use common::*;
use serde_json::{json, Value};

const AVRO_V2: &str = "application/vnd.kafka.avro.v2+json";
const JSONSCHEMA_V2: &str = "application/vnd.kafka.jsonschema.v2+json";
const REGISTRY: &str = "application/vnd.schemaregistry.v1+json";
const ORDER: &str =
    r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"item","type":"string"}]}"#;

fn stored_value(record: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(record["value"].as_str().unwrap_or_default())
        .unwrap_or_default()
}

#[tokio::test]
async fn registry_api_register_and_fetch() {
    let s = start(memory_config(&[], true)).await;
    let body = json!({"schema": ORDER}).to_string();
    let r = s.post("/subjects/orders-value/versions", REGISTRY, &body).await;
    assert_eq!((r.status, r.json()), (200, json!({"id": 1})));
    assert_eq!(r.content_type(), REGISTRY);
    // The same schema again: the same id, no new version.
    let r = s.post("/subjects/orders-value/versions", JSON, &body).await;
    assert_eq!(r.json(), json!({"id": 1}));
    assert_eq!(s.get("/subjects/orders-value/versions").await.json(), json!([1]));
    let r = s.get("/subjects/orders-value/versions/latest").await;
    assert_eq!(
        r.json(),
        json!({"subject": "orders-value", "version": 1, "id": 1, "schema": ORDER})
    );
    assert_eq!(s.get("/schemas/ids/1").await.json(), json!({"schema": ORDER}));
    assert_eq!(s.get("/subjects").await.json(), json!(["orders-value"]));
    let r = s.get("/subjects/nope/versions/1").await;
    assert_eq!(r.assert_error(404, 40401), "Subject 'nope' not found.");
    s.get("/schemas/ids/2").await.assert_error(404, 40403);
    s.post("/subjects/x/versions", REGISTRY, r#"{"schema":"{\"type\":\"bogus\"}"}"#)
        .await
        .assert_error(422, 42201);
    // /_sim/reset forgets the registry too: ids start again at 1.
    assert_eq!(s.post("/_sim/reset", JSON, "").await.status, 200);
    assert_eq!(s.get("/subjects").await.json(), json!([]));
    s.get("/schemas/ids/1").await.assert_error(404, 40403);
    s.stop().await;
}

#[tokio::test]
async fn v2_avro_and_jsonschema_produce_in_confluent_wire_format() {
    let s = start(memory_config(&[], true)).await;
    s.post(
        "/subjects/orders-value/versions",
        REGISTRY,
        &json!({"schema": ORDER}).to_string(),
    )
    .await;
    let body = r#"{"value_schema_id":1,"records":[{"value":{"id":7,"item":"pen"}}]}"#;
    let r = s.post("/topics/orders", AVRO_V2, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["value_schema_id"], json!(1));
    assert_eq!(r.json()["key_schema_id"], Value::Null);
    let back = s.read_back("orders", "").await;
    // id 7 as a zigzag long (14), "pen" with its zigzag length (6).
    assert_eq!(stored_value(&back[0]), vec![0, 0, 0, 0, 1, 14, 6, b'p', b'e', b'n']);

    let schema = json!({"schema": r#"{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}"#,
                        "schemaType": "JSON"});
    let r = s
        .post("/subjects/nums-value/versions", REGISTRY, &schema.to_string())
        .await;
    assert_eq!(r.json(), json!({"id": 2}));
    let r = s
        .post(
            "/topics/nums",
            JSONSCHEMA_V2,
            r#"{"value_schema_id":2,"records":[{"value":{"n":3}}]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let back = s.read_back("nums", "").await;
    assert_eq!(stored_value(&back[0]), b"\0\0\0\0\x02{\"n\":3}".to_vec());

    // A value that does not match: 422 / 42203, nothing written (the good record neither).
    let bad = r#"{"value_schema_id":1,"records":[{"value":{"id":8,"item":"ink"}},{"value":{"id":"x","item":"ink"}}]}"#;
    let msg = s.post("/topics/orders", AVRO_V2, bad).await.assert_error(422, 42203);
    assert!(msg.starts_with("Conversion of JSON to Avro failed: "), "{msg}");
    let bad = r#"{"value_schema_id":2,"records":[{"value":{"n":"three"}}]}"#;
    s.post("/topics/nums", JSONSCHEMA_V2, bad)
        .await
        .assert_error(422, 42203);
    assert_eq!(s.read_back("orders", "").await.len(), 1);
    assert_eq!(s.read_back("nums", "").await.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn v3_schema_id_and_subject_version() {
    let s = start(memory_config(&["orders"], false)).await;
    s.post(
        "/subjects/orders-value/versions",
        REGISTRY,
        &json!({"schema": ORDER}).to_string(),
    )
    .await;
    let path = "/v3/clusters/rest-proxy-sim/topics/orders/records";
    let cluster = s.get("/v3/clusters").await.json()["data"][0]["cluster_id"].clone();
    let path = path.replace("rest-proxy-sim", cluster.as_str().unwrap_or_default());
    let r = s
        .post(&path, JSON, r#"{"value":{"schema_id":1,"data":{"id":1,"item":"a"}}}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s
        .post(
            &path,
            JSON,
            r#"{"value":{"subject":"orders-value","schema_version":"latest","data":{"id":2,"item":"b"}}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s
        .post(&path, JSON, r#"{"value":{"schema_id":1,"data":{"id":3}}}"#)
        .await;
    r.assert_error(422, 42203);
    let back = s.read_back("orders", "").await;
    assert_eq!(back.len(), 2);
    assert_eq!(stored_value(&back[0]), vec![0, 0, 0, 0, 1, 2, 2, b'a']);
    assert_eq!(stored_value(&back[1]), vec![0, 0, 0, 0, 1, 4, 2, b'b']);
    s.stop().await;
}
