//! The three flavours over real HTTP: v2 binary and JSON produce, partial failure (a record over
//! `message.max.bytes`, a partition the topic lacks, an injected every-Nth fault), oversize
//! requests, unknown topics and v3 paths.

mod common;

use common::*;
use rest_proxy::{Flavor, RestProxyConfig};
use serde_json::{json, Value};

fn config(flavor: Flavor, topics: &[&str], auto_create: bool) -> RestProxyConfig {
    RestProxyConfig {
        flavor,
        max_request_bytes: flavor.default_max_request_bytes(),
        message_max_bytes: flavor.default_message_max_bytes(),
        ..memory_config(topics, auto_create)
    }
}

/// A three-record binary body whose middle record is `big` bytes.
fn body_with_big_middle(big: usize) -> String {
    json!({"records": [
        {"value": b64("first")},
        {"value": b64(&"x".repeat(big))},
        {"value": b64("third")},
    ]})
    .to_string()
}

fn values(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["value_utf8"].as_str().unwrap_or("<binary>").to_string())
        .collect()
}

// ---------------------------------------------------------------- confluent (the default)

#[tokio::test]
async fn confluent_partial_failure_is_200_with_per_record_errors() {
    let s = start(RestProxyConfig {
        message_max_bytes: 200,
        ..config(Flavor::Confluent, &["t"], false)
    })
    .await;
    let r = s.post("/topics/t", BINARY_V2, &body_with_big_middle(500)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let offsets = r.json()["offsets"].clone();
    assert_eq!(
        offsets[0],
        json!({"partition": 0, "offset": 0, "error_code": null, "error": null})
    );
    assert_eq!(offsets[1]["error_code"], json!(50002));
    assert_eq!(offsets[1]["partition"], Value::Null);
    assert!(offsets[1]["error"]
        .as_str()
        .unwrap_or("")
        .contains("message.max.bytes of 200"));
    assert_eq!(
        offsets[2],
        json!({"partition": 0, "offset": 1, "error_code": null, "error": null})
    );
    assert_eq!(values(&s.read_back("t", "").await), ["first", "third"]);
    // A partition the topic lacks still refuses the whole request (see v2.rs).
    let r = s
        .post(
            "/topics/t",
            BINARY_V2,
            r#"{"records":[{"value":"YQ==","partition":3}]}"#,
        )
        .await;
    assert_eq!((r.status, r.json()["error_code"].clone()), (404, json!(40402)));
    let v3 = s.get("/v3/clusters").await;
    assert_eq!(v3.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn confluent_every_nth_fault_fails_only_those_records() {
    let s = start(config(Flavor::Confluent, &["t"], false)).await;
    let r = s
        .post(
            "/_sim/faults",
            JSON,
            r#"{"kind":"record_error","error_code":50003,"every":2}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = json!({"records": (0..4).map(|i| json!({"value": b64(&format!("r{i}"))})).collect::<Vec<_>>()});
    let r = s.post("/topics/t", BINARY_V2, &body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let codes: Vec<Value> = r.json()["offsets"]
        .as_array()
        .map(|a| a.iter().map(|o| o["error_code"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(codes, [Value::Null, json!(50003), Value::Null, json!(50003)]);
    assert_eq!(values(&s.read_back("t", "").await), ["r0", "r2"]);
    // One request only: the next one is clean.
    let r = s.post("/topics/t", BINARY_V2, &body.to_string()).await;
    assert!(r.json()["offsets"]
        .as_array()
        .is_some_and(|a| a.iter().all(|o| o["error_code"].is_null())));
    s.stop().await;
}

// ---------------------------------------------------------------- karapace

#[tokio::test]
async fn karapace_produce_binary_and_json() {
    let s = start(config(Flavor::Karapace, &["t"], false)).await;
    let body = json!({"records": [{"key": b64("k"), "value": b64("hello")}, {"value": b64("world")}]}).to_string();
    let r = s.post("/topics/t", BINARY_V2, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type(), V2_RESPONSE);
    assert_eq!(
        r.text(),
        r#"{"key_schema_id":null,"value_schema_id":null,"offsets":[{"offset":0,"partition":0},{"offset":1,"partition":0}]}"#
    );
    // JSON values are parsed and re-encoded the way Karapace does.
    let body = r#"{"records":[{"value":{"big":12345678901234567890123,"e":1E+2,"s":"\u00e9","n":7}},{"key":0,"value":0},{"value":null}]}"#;
    let r = s.post("/topics/t", JSON_V2, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let back = s.read_back("t", "offset=2").await;
    assert_eq!(
        back[0]["value_utf8"],
        json!(r#"{"big":1.2345678901234568e+22,"e":100.0,"s":"é","n":7}"#)
    );
    // Falsy keys and values (and null values) become empty bytes.
    assert_eq!(
        (back[1]["key_utf8"].clone(), back[1]["value_utf8"].clone()),
        (json!(""), json!(""))
    );
    assert_eq!(
        (back[2]["key"].clone(), back[2]["value_utf8"].clone()),
        (Value::Null, json!(""))
    );
    s.stop().await;
}

#[tokio::test]
async fn karapace_partial_failure_is_422_and_good_records_are_written() {
    let s = start(RestProxyConfig {
        message_max_bytes: 200,
        ..config(Flavor::Karapace, &["t:2"], false)
    })
    .await;
    let r = s.post("/topics/t", BINARY_V2, &body_with_big_middle(500)).await;
    assert_eq!(r.status, 422, "{}", r.text());
    let offsets = r.json()["offsets"].clone();
    assert_eq!(offsets[0]["offset"], json!(0));
    assert!(offsets[0].get("error_code").is_none());
    assert_eq!(offsets[1]["error_code"], json!(1));
    assert!(offsets[1]["error"].is_string());
    assert!(offsets[1].get("partition").is_none() && offsets[1].get("offset").is_none());
    assert!(offsets[2]["offset"].is_i64());
    assert_eq!(values(&s.read_back("t", "").await).len(), 2);
    // A fixed partition beyond the topic's: that record fails with code 2, the other is written.
    let r = s
        .post(
            "/topics/t",
            BINARY_V2,
            r#"{"records":[{"value":"b2s=","partition":1},{"value":"bm8=","partition":5}]}"#,
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["offsets"][0], json!({"offset": 0, "partition": 1}));
    assert_eq!(r.json()["offsets"][1]["error_code"], json!(2));
    assert_eq!(values(&s.read_back("t", "partition=1").await), ["ok"]);
    s.stop().await;
}

#[tokio::test]
async fn karapace_errors_limits_and_no_v3() {
    let s = start(config(Flavor::Karapace, &["t:2"], false)).await;
    let r = s
        .post("/topics/nope", BINARY_V2, r#"{"records":[{"value":"YQ=="}]}"#)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), r#"{"error_code":40401,"message":"Topic nope not found"}"#);
    let r = s
        .post("/topics/t/partitions/7", BINARY_V2, r#"{"records":[{"value":"YQ=="}]}"#)
        .await;
    assert_eq!((r.status, r.json()["error_code"].clone()), (404, json!(40402)));
    let r = s
        .post("/topics/t/partitions/1", BINARY_V2, r#"{"records":[{"value":"YQ=="}]}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["offsets"][0]["partition"], json!(1));
    // Default limit 1 MiB.
    let big = body_with_big_middle(800 * 1024);
    assert!(big.len() > 1_048_576);
    let r = s.post("/topics/t", BINARY_V2, &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(
        r.text(),
        r#"{"error_code":413,"message":"HTTP Request Entity Too Large"}"#
    );
    // No v3 at all: v3 produce and the cluster probe get aiohttp's plain 404.
    for path in ["/v3/clusters", "/v3/clusters/host-sim"] {
        let r = s.get(path).await;
        assert_eq!((r.status, r.text().as_str()), (404, "404: Not Found"), "{path}");
        assert!(r.content_type().starts_with("text/plain"), "{path}");
    }
    let r = s
        .post(
            "/v3/clusters/host-sim/topics/t/records",
            JSON,
            r#"{"value":{"type":"JSON","data":1}}"#,
        )
        .await;
    assert_eq!((r.status, r.text().as_str()), (404, "404: Not Found"));
    assert!(s.proxy.records("t", 0).is_some_and(|r| r.is_empty()));
    s.stop().await;
}

// ---------------------------------------------------------------- redpanda

#[tokio::test]
async fn redpanda_produce_binary_and_json() {
    let s = start(config(Flavor::Redpanda, &["t"], false)).await;
    let body = json!({"records": [{"value": b64("hello")}, {"key": b64("k"), "value": b64("world")}]}).to_string();
    let r = s.post("/topics/t", BINARY_V2, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type(), V2_RESPONSE);
    // One entry per partition, with the batch's base offset.
    assert_eq!(r.text(), r#"{"offsets":[{"partition":0,"offset":0}]}"#);
    let back = s.read_back("t", "").await;
    assert_eq!(values(&back), ["hello", "world"]);
    // A null key is written as an empty key.
    assert_eq!(back[0]["key_utf8"], json!(""));
    let body = r#"{"records":[{"value":{"big":12345678901234567890123,"e":1E+2,"s":"\u00e9"}}]}"#;
    let r = s.post("/topics/t", JSON_V2, body).await;
    assert_eq!(r.text(), r#"{"offsets":[{"partition":0,"offset":2}]}"#);
    let back = s.read_back("t", "offset=2").await;
    assert_eq!(
        back[0]["value_utf8"],
        json!(r#"{"big":1.2345678901234568e22,"e":100.0,"s":"é"}"#)
    );
    s.stop().await;
}

#[tokio::test]
async fn redpanda_failure_fails_the_partitions_batch() {
    let s = start(RestProxyConfig {
        message_max_bytes: 300,
        ..config(Flavor::Redpanda, &["t:2"], false)
    })
    .await;
    // Partition 0 gets a record too large for a batch: its whole batch fails; partition 1's is written.
    let body = json!({"records": [
        {"value": b64("a"), "partition": 0},
        {"value": b64("b"), "partition": 1},
        {"value": b64(&"x".repeat(400)), "partition": 0},
    ]})
    .to_string();
    let r = s.post("/topics/t", BINARY_V2, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        r#"{"offsets":[{"partition":0,"error_code":10,"offset":-1},{"partition":1,"offset":0}]}"#
    );
    assert!(s.proxy.records("t", 0).is_some_and(|r| r.is_empty()));
    assert_eq!(s.proxy.records("t", 1).map(|r| r.len()), Some(1));
    // A partition the topic lacks: error 3 for that partition.
    let r = s
        .post(
            "/topics/t",
            BINARY_V2,
            r#"{"records":[{"value":"YQ==","partition":1},{"value":"YQ==","partition":4}]}"#,
        )
        .await;
    assert_eq!(
        r.text(),
        r#"{"offsets":[{"partition":1,"offset":1},{"partition":4,"error_code":3,"offset":-1}]}"#
    );
    // Unknown topic (auto-create off): partition 0 fails with 3, still HTTP 200.
    let r = s
        .post("/topics/nope", BINARY_V2, r#"{"records":[{"value":"YQ=="}]}"#)
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, r#"{"offsets":[{"partition":0,"error_code":3,"offset":-1}]}"#)
    );
    s.stop().await;
}

#[tokio::test]
async fn redpanda_limits_and_no_v3() {
    let s = start(RestProxyConfig {
        max_request_bytes: 4096,
        ..config(Flavor::Redpanda, &["t"], false)
    })
    .await;
    // 1024 bytes of overhead on top of Content-Length: a body of about 3.1 KB is already too large.
    let body = json!({"records": [{"value": b64(&"y".repeat(2300))}]}).to_string();
    assert!(body.len() + 1024 > 4096 && body.len() < 4096, "{}", body.len());
    let r = s.post("/topics/t", BINARY_V2, &body).await;
    assert_eq!((r.status, r.body.len()), (413, 0));
    for path in ["/v3/clusters", "/v3/clusters/host-sim"] {
        let r = s.get(path).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (404, r#"{"message": "Not found", "code": 404}"#),
            "{path}"
        );
    }
    let r = s
        .post("/topics/t/partitions/0", BINARY_V2, r#"{"records":[{"value":"YQ=="}]}"#)
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .post(
            "/topics/t",
            "application/vnd.kafka.avro.v2+json",
            r#"{"records":[{"value":1}]}"#,
        )
        .await;
    assert_eq!(r.status, 415);
    let r = s.post("/topics/t", BINARY_V2, "{not json").await;
    assert_eq!((r.status, r.json()["error_code"].clone()), (422, json!(422)));
    let health = s.get("/_sim/health").await;
    assert_eq!(health.json()["flavor"], json!("redpanda"));
    s.stop().await;
}
