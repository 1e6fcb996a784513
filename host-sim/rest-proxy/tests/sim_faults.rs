//! The `/_sim/` endpoints over real HTTP: fault injection, topic summary, retention, delete, reset.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::Method;
use rest_proxy::{RestProxyConfig, StorageConfig};
use serde_json::json;

const V3: &str = "/v3/clusters/host-sim/topics/t/records";
const ONE: &str = r#"{"records":[{"value":1}]}"#;

#[tokio::test]
async fn http_error_fault_applies_count_times_then_clears() {
    let s = start(memory_config(&[], true)).await;
    let r = s
        .post(
            "/_sim/faults",
            JSON,
            r#"{"kind":"http_error","status":503,"error_code":50301,"message":"down for maintenance","count":2}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["faults"][0]["count"], json!(2));
    for _ in 0..2 {
        let r = s.post("/topics/t", JSON_V2, ONE).await;
        assert_eq!(r.assert_error(503, 50301), "down for maintenance");
        assert_eq!(r.content_type(), V2_RESPONSE);
    }
    let r = s.post("/topics/t", JSON_V2, ONE).await;
    assert_eq!(r.status, 200);
    // Only the third request was stored, at offset 0.
    assert_eq!(r.json()["offsets"][0]["offset"], json!(0));
    assert_eq!(s.get("/_sim/faults").await.json(), json!({"faults": []}));
    s.stop().await;
}

#[tokio::test]
async fn record_error_fault_is_200_with_errors_inside_offsets() {
    let s = start(memory_config(&[], true)).await;
    let r = s
        .post(
            "/_sim/faults",
            JSON,
            r#"[{"kind":"record_error","error_code":50002,"message":"broker said no"},
                {"kind":"record_error","error_code":40301,"message":"not authorized"}]"#,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .post("/topics/t", JSON_V2, r#"{"records":[{"value":1},{"value":2}]}"#)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"offsets": [
            {"partition": null, "offset": null, "error_code": 50002, "error": "broker said no"},
            {"partition": null, "offset": null, "error_code": 50002, "error": "broker said no"}],
          "key_schema_id": null, "value_schema_id": null})
    );
    // kafka-rest answers 403 when a record failed authorization.
    let r = s.post("/topics/t", JSON_V2, ONE).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["offsets"][0]["error_code"], json!(40301));
    // The topic was resolved (and auto-created) before the records failed; none was stored.
    assert_eq!(s.proxy.records("t", 0).map(|r| r.len()), Some(0));
    s.stop().await;
}

#[tokio::test]
async fn record_error_fault_on_v3() {
    let s = start(memory_config(&["t"], false)).await;
    s.post("/_sim/faults", JSON, r#"{"kind":"record_error","count":2}"#)
        .await;
    let r = s.post(V3, JSON, r#"{"value":{"type":"STRING","data":"x"}}"#).await;
    assert_eq!(r.assert_error(500, 50003), "Injected Kafka error 50003");
    // Streaming: the second record takes the last use of the fault, the third is stored.
    let r = s
        .post(
            V3,
            JSON,
            r#"{"value":{"type":"STRING","data":"a"}}{"value":{"type":"STRING","data":"b"}}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    let parts: Vec<serde_json::Value> = r
        .text()
        .split("\r\n")
        .filter(|p| !p.is_empty())
        .filter_map(|p| serde_json::from_str(p).ok())
        .collect();
    assert_eq!(parts[0]["error_code"], json!(50003));
    assert_eq!(parts[1]["error_code"], json!(200));
    assert_eq!(parts[1]["offset"], json!(0));
    s.stop().await;
}

#[tokio::test]
async fn delay_fault_delays_then_produces() {
    let s = start(memory_config(&[], true)).await;
    s.post("/_sim/faults", JSON, r#"{"kind":"delay","delay_ms":300}"#).await;
    let started = Instant::now();
    let r = s.post("/topics/t", JSON_V2, ONE).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status, 200);
    assert_eq!(s.proxy.records("t", 0).map(|r| r.len()), Some(1));
    // The next one is fast again.
    let started = Instant::now();
    assert_eq!(s.post("/topics/t", JSON_V2, ONE).await.status, 200);
    assert!(started.elapsed() < Duration::from_millis(300));
    s.stop().await;
}

#[tokio::test]
async fn drop_connection_fault_closes_without_answer() {
    let s = start(memory_config(&[], true)).await;
    s.post("/_sim/faults", JSON, r#"{"kind":"drop_connection","delay_ms":50}"#)
        .await;
    let r = send(s.addr, Method::POST, "/topics/t", Some(JSON_V2), ONE).await;
    assert!(r.is_err(), "expected a dropped connection, got {r:?}");
    // Nothing stored; the server keeps serving.
    assert_eq!(s.proxy.records("t", 0), None);
    assert_eq!(s.post("/topics/t", JSON_V2, ONE).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn faults_can_target_one_topic() {
    let s = start(memory_config(&[], true)).await;
    s.post(
        "/_sim/faults",
        JSON,
        r#"{"kind":"http_error","status":500,"topic":"fragile"}"#,
    )
    .await;
    assert_eq!(s.post("/topics/sturdy", JSON_V2, ONE).await.status, 200);
    let r = s.post("/topics/fragile", JSON_V2, ONE).await;
    assert_eq!(r.assert_error(500, 500), "HTTP 500 Internal Server Error");
    assert_eq!(s.post("/topics/fragile", JSON_V2, ONE).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn invalid_requests_do_not_consume_faults() {
    let s = start(memory_config(&[], true)).await;
    s.post("/_sim/faults", JSON, r#"{"kind":"http_error","status":502}"#)
        .await;
    s.post("/topics/t", JSON_V2, "{bad").await.assert_error(400, 400);
    s.post("/topics/t", JSON_V2, ONE).await.assert_error(502, 502);
    s.stop().await;
}

#[tokio::test]
async fn fault_admin_endpoints() {
    let s = start(memory_config(&[], true)).await;
    let r = s.post("/_sim/faults", JSON, r#"{"kind":"explode"}"#).await;
    let msg = r.assert_error(422, 422);
    assert!(msg.contains("unknown kind"), "{msg}");
    let r = s
        .post("/_sim/faults", JSON, r#"{"kind":"delay","delay_ms":1,"count":3}"#)
        .await;
    assert_eq!(
        r.json(),
        json!({"faults": [{"kind": "delay", "count": 3, "topic": null, "delay_ms": 1}]})
    );
    assert_eq!(s.delete("/_sim/faults").await.json(), json!({"cleared": 1}));
    assert_eq!(s.get("/_sim/faults").await.json(), json!({"faults": []}));
    s.stop().await;
}

#[tokio::test]
async fn summary_delete_and_reset() {
    let s = start(memory_config(&["keep:2"], true)).await;
    s.post("/topics/keep", JSON_V2, ONE).await;
    s.post("/topics/temp", JSON_V2, ONE).await;
    let r = s.get("/_sim/topics").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["backend"], json!("memory"));
    assert_eq!(v["topics"][0]["name"], json!("keep"));
    assert_eq!(
        v["topics"][0]["partitions"][0],
        json!({"partition": 0, "earliest_offset": 0, "next_offset": 1, "records": 1, "bytes": 1, "evicted": 0})
    );
    assert_eq!(v["topics"][1]["name"], json!("temp"));

    assert_eq!(s.delete("/_sim/topics/temp").await.json(), json!({"deleted": "temp"}));
    s.delete("/_sim/topics/temp").await.assert_error(404, 40401);
    s.get("/_sim/topics/temp/records").await.assert_error(404, 40401);

    s.post("/_sim/faults", JSON, r#"{"kind":"delay"}"#).await;
    let r = s.post("/_sim/reset", JSON, "").await;
    assert_eq!(r.json(), json!({"reset": true, "faults_cleared": 1}));
    let v = s.get("/_sim/topics").await.json();
    assert_eq!(v["topics"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["topics"][0]["partitions"][0]["next_offset"], json!(0));
    s.get("/_sim/topics/keep/records?partition=7")
        .await
        .assert_error(404, 40402);
    s.get("/_sim/topics/keep/records?limit=zero")
        .await
        .assert_error(400, 400);
    assert_eq!(
        s.get("/_sim/health").await.json(),
        json!({"status": "ok", "backend": "memory", "cluster_id": "host-sim", "flavor": "confluent"})
    );
    s.stop().await;
}

#[tokio::test]
async fn retention_cap_evicts_oldest_visibly() {
    let s = start(RestProxyConfig {
        storage: StorageConfig::Memory {
            retention_records: 3,
            retention_bytes: 1 << 20,
        },
        ..memory_config(&["r"], false)
    })
    .await;
    for i in 0..5 {
        let r = s
            .post("/topics/r", JSON_V2, &format!(r#"{{"records":[{{"value":{i}}}]}}"#))
            .await;
        assert_eq!(r.json()["offsets"][0]["offset"], json!(i));
    }
    let back = s.read_back("r", "").await;
    let offsets: Vec<i64> = back.iter().filter_map(|r| r["offset"].as_i64()).collect();
    assert_eq!(offsets, vec![2, 3, 4]);
    let p = s.get("/_sim/topics").await.json()["topics"][0]["partitions"][0].clone();
    assert_eq!(p["evicted"], json!(2));
    assert_eq!(p["earliest_offset"], json!(2));
    assert_eq!(p["next_offset"], json!(5));
    s.stop().await;
}

#[tokio::test]
async fn reset_is_refused_for_the_kafka_bridge() {
    let s = start(RestProxyConfig {
        storage: StorageConfig::Kafka {
            bootstrap: vec!["127.0.0.1:1".into()],
            timeout: Duration::from_millis(200),
        },
        ..RestProxyConfig::default()
    })
    .await;
    let r = s.post("/_sim/reset", JSON, "").await;
    assert_eq!(
        r.assert_error(400, 400),
        "reset is only supported by the in-memory store"
    );
    s.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let s = start(memory_config(&[], true)).await;
    s.post("/_sim/faults", JSON, r#"{"kind":"delay","delay_ms":400}"#).await;
    let addr = s.addr;
    let in_flight = tokio::spawn(async move { send(addr, Method::POST, "/topics/slow", Some(JSON_V2), ONE).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let proxy = std::sync::Arc::clone(&s.proxy);
    s.stop().await;
    let r = in_flight
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("in-flight request failed: {e}"));
    assert_eq!(r.status, 200);
    assert_eq!(proxy.records("slow", 0).map(|r| r.len()), Some(1));
    // New connections are refused after shutdown.
    assert!(send(addr, Method::GET, "/topics", None, "").await.is_err());
}
