//! Every error envelope over real HTTP: status, `error_code`, message, Content-Type.

mod common;

use common::*;
use hyper::Method;
use rest_proxy::{RestProxyConfig, StorageConfig};
use serde_json::json;

const V3: &str = "/v3/clusters/host-sim/topics/t/records";

#[tokio::test]
async fn unknown_topic_without_auto_create_is_40401() {
    let s = start(memory_config(&["known"], false)).await;
    let r = s.post("/topics/missing", JSON_V2, r#"{"records":[{"value":1}]}"#).await;
    assert_eq!(r.assert_error(404, 40401), "Topic not found.");
    assert_eq!(r.content_type(), V2_RESPONSE);
    let r = s
        .post(
            "/v3/clusters/host-sim/topics/missing/records",
            JSON,
            r#"{"value":{"type":"STRING","data":"x"}}"#,
        )
        .await;
    assert_eq!(r.assert_error(404, 40401), "Topic missing not found.");
    assert_eq!(r.content_type(), JSON);
    let r = s.get("/topics/missing").await;
    assert_eq!(r.assert_error(404, 40401), "Topic not found.");
    // Nothing was created.
    assert_eq!(s.get("/topics").await.json(), json!(["known"]));
    s.stop().await;
}

#[tokio::test]
async fn unknown_partition_is_40402() {
    let s = start(memory_config(&["t:2"], false)).await;
    for p in ["2", "-1"] {
        let r = s
            .post(
                "/topics/t",
                JSON_V2,
                &format!(r#"{{"records":[{{"value":1}},{{"value":2,"partition":{p}}}]}}"#),
            )
            .await;
        assert_eq!(r.assert_error(404, 40402), "Partition not found.");
    }
    let r = s
        .post("/topics/t/partitions/9", JSON_V2, r#"{"records":[{"value":1}]}"#)
        .await;
    r.assert_error(404, 40402);
    let r = s
        .post(V3, JSON, r#"{"partition_id":7,"value":{"type":"STRING","data":"x"}}"#)
        .await;
    r.assert_error(404, 40402);
    let r = s
        .post(V3, JSON, r#"{"partition_id":-3,"value":{"type":"STRING","data":"x"}}"#)
        .await;
    r.assert_error(404, 40402);
    // No partial write: the first record of the failed v2 request was not stored.
    assert_eq!(s.proxy.records("t", 0).map(|r| r.len()), Some(0));
    s.stop().await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let s = start(memory_config(&[], true)).await;
    for ct in ["application/json", "text/plain", "application/vnd.kafka.v2+json"] {
        let r = s.post("/topics/t", ct, r#"{"records":[{"value":1}]}"#).await;
        assert_eq!(r.assert_error(415, 415), "HTTP 415 Unsupported Media Type");
    }
    let r = send(s.addr, Method::POST, "/topics/t", None, r#"{"records":[]}"#)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    r.assert_error(415, 415);
    let r = s.post(V3, BINARY_V2, r#"{}"#).await;
    r.assert_error(415, 415);
    assert_eq!(r.content_type(), JSON);
    s.stop().await;
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_405() {
    let s = start(memory_config(&[], true)).await;
    let r = s.get("/nope").await;
    assert_eq!(r.assert_error(404, 404), "HTTP 404 Not Found");
    let r = s.get("/v3/clusters/host-sim/topics/t/records/extra").await;
    r.assert_error(404, 404);
    let r = s.delete("/topics/t").await;
    assert_eq!(r.assert_error(405, 405), "HTTP 405 Method Not Allowed");
    assert_eq!(
        r.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, HEAD, POST, OPTIONS")
    );
    let r = s.get(V3).await;
    r.assert_error(405, 405);
    let r = s.post("/topics", JSON_V2, "{}").await;
    r.assert_error(405, 405);
    s.stop().await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let s = start(RestProxyConfig {
        max_request_bytes: 1024,
        ..memory_config(&[], true)
    })
    .await;
    let big = format!(r#"{{"records":[{{"value":"{}"}}]}}"#, "x".repeat(4096));
    let r = s.post("/topics/t", JSON_V2, &big).await;
    assert_eq!(
        r.assert_error(413, 413),
        "Request body is larger than the limit of 1024 bytes."
    );
    let r = s.post(V3, JSON, &big).await;
    r.assert_error(413, 413);
    // A body just under the limit passes.
    let ok = format!(r#"{{"records":[{{"value":"{}"}}]}}"#, "x".repeat(900));
    assert_eq!(s.post("/topics/t", JSON_V2, &ok).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn v2_payload_errors() {
    let s = start(memory_config(&[], true)).await;
    let cases: &[(&str, &str, u16, i64, Option<&str>)] = &[
        (JSON_V2, "{not json", 400, 400, None),
        (JSON_V2, "", 422, 422, Some("Request body is empty. Data is required.")),
        (
            JSON_V2,
            r#"{"records":[]}"#,
            422,
            422,
            Some("records must not be empty"),
        ),
        (
            JSON_V2,
            r#"{"records":[{"value":1}],"foo":1}"#,
            422,
            422,
            Some("Unrecognized field: foo"),
        ),
        (JSON_V2, r#"{"records":[{"value":1,"partition":"0"}]}"#, 400, 400, None),
        (JSON_V2, r#"{"records":"nope"}"#, 400, 400, None),
        (
            BINARY_V2,
            r#"{"records":[{"value":"not base64!"}]}"#,
            400,
            400,
            Some(r#"data="not base64!" is not a valid base64 string."#),
        ),
        (
            BINARY_V2,
            r#"{"records":[{"key":5,"value":"aGk="}]}"#,
            400,
            400,
            Some("data=5 is not a base64 string."),
        ),
        // Schema formats go to the embedded Schema Registry (kafka-rest `Errors.java`: 42202
        // value schema missing); PROTOBUF is not served by it.
        (
            "application/vnd.kafka.avro.v2+json",
            r#"{"records":[{"value":"x"}]}"#,
            422,
            42202,
            Some("Request includes values but does not include value schema"),
        ),
        (
            "application/vnd.kafka.jsonschema.v2+json",
            r#"{"value_schema_id":1,"records":[{"value":"x"}]}"#,
            404,
            40403,
            Some("Schema 1 not found"),
        ),
        (
            "application/vnd.kafka.protobuf.v2+json",
            r#"{"value_schema_id":1,"records":[{"value":"x"}]}"#,
            422,
            42207,
            None,
        ),
    ];
    for (ct, body, status, code, message) in cases {
        let r = s.post("/topics/t", ct, body).await;
        let got = r.assert_error(*status, *code);
        if let Some(m) = message {
            assert_eq!(&got, m, "{ct} {body}");
        }
        assert_eq!(r.content_type(), V2_RESPONSE);
    }
    // Nothing was stored by any of them.
    assert_eq!(s.get("/topics").await.json(), json!([]));
    s.stop().await;
}

#[tokio::test]
async fn v3_payload_errors() {
    let s = start(memory_config(&["t"], false)).await;
    let cases: &[(&str, u16, i64)] = &[
        ("", 422, 42206),
        ("   ", 422, 42206),
        ("null", 422, 42206),
        ("{oops", 400, 400),
        (r#"{"records":[]}"#, 400, 400),
        (r#"{"value":{"data":"eA=="}}"#, 422, 42206),
        // A schema type without a registered `{topic}-value` subject: the registry's 40401.
        (r#"{"value":{"type":"AVRO","data":"x"}}"#, 404, 40401),
        (r#"{"value":{"type":"binary","data":"eA=="}}"#, 400, 400),
        (r#"{"value":{"type":"BINARY","data":"fooba"}}"#, 400, 400),
        (r#"{"value":{"type":"STRING","data":{}}}"#, 400, 400),
        (r#"{"headers":{"a":"b"}}"#, 400, 400),
        (r#"{"timestamp":"soon"}"#, 400, 400),
        (r#"{"partition_id":"1"}"#, 400, 400),
    ];
    for (body, status, code) in cases {
        let r = s.post(V3, JSON, body).await;
        r.assert_error(*status, *code);
        assert_eq!(r.content_type(), JSON, "{body}");
    }
    let r = s.post(V3, JSON, "").await;
    assert_eq!(
        r.assert_error(422, 42206),
        "Payload error. Request body is empty. Data is required."
    );
    assert_eq!(s.proxy.records("t", 0).map(|r| r.len()), Some(0));
    s.stop().await;
}

#[tokio::test]
async fn v3_unknown_cluster_is_404() {
    let s = start(memory_config(&[], true)).await;
    let r = s
        .post(
            "/v3/clusters/other/topics/t/records",
            JSON,
            r#"{"value":{"type":"STRING","data":"x"}}"#,
        )
        .await;
    assert_eq!(r.assert_error(404, 404), "Cluster other cannot be found.");
    s.stop().await;
}

#[tokio::test]
async fn illegal_topic_name_is_40002() {
    let s = start(memory_config(&[], true)).await;
    let r = s
        .post("/topics/bad%20name", JSON_V2, r#"{"records":[{"value":1}]}"#)
        .await;
    r.assert_error(400, 40002);
    let long = "a".repeat(250);
    let r = s
        .post(
            &format!("/v3/clusters/host-sim/topics/{long}/records"),
            JSON,
            r#"{"value":{"type":"STRING","data":"x"}}"#,
        )
        .await;
    r.assert_error(400, 40002);
    s.stop().await;
}

/// The Kafka bridge with no broker behind it answers like kafka-rest does when the producer
/// cannot reach Kafka: v2 gives 200 with a retriable 50003 inside `offsets`, v3 a 500 / 50003.
#[tokio::test]
async fn unreachable_broker_gives_retriable_errors() {
    // Reserve a port, then free it: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        l.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"))
    };
    let s = start(RestProxyConfig {
        storage: StorageConfig::Kafka {
            bootstrap: vec![format!("127.0.0.1:{port}")],
            timeout: std::time::Duration::from_millis(500),
        },
        ..RestProxyConfig::default()
    })
    .await;
    let r = s
        .post("/topics/t", JSON_V2, r#"{"records":[{"value":1},{"value":2}]}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    for i in 0..2 {
        assert_eq!(v["offsets"][i]["error_code"], json!(50003), "{v}");
        assert_eq!(v["offsets"][i]["partition"], json!(null));
        assert!(v["offsets"][i]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach Kafka")));
    }
    let r = s.post(V3, JSON, r#"{"value":{"type":"STRING","data":"x"}}"#).await;
    r.assert_error(500, 50003);
    let r = s.get("/topics").await;
    r.assert_error(500, 50003);
    let r = s.get("/_sim/health").await;
    assert_eq!(r.json()["backend"], json!("kafka"));
    s.stop().await;
}
