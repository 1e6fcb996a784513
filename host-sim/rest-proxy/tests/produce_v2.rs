//! v2 produce over real HTTP: binary and JSON embedded formats, offsets, partitioning, read-back,
//! and the metadata endpoints.

mod common;

use common::*;
use rest_proxy::partitioner::partition_for_key;
use serde_json::{json, Value};

#[tokio::test]
async fn binary_produce_returns_offsets_and_stores_bytes() {
    let s = start(memory_config(&[], true)).await;
    let body = json!({"records": [
        {"key": b64("k1"), "value": b64("hello")},
        {"value": b64("world")},
    ]})
    .to_string();
    let r = s.post("/topics/events", BINARY_V2, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type(), V2_RESPONSE);
    assert_eq!(
        r.json(),
        json!({"offsets": [
            {"partition": 0, "offset": 0, "error_code": null, "error": null},
            {"partition": 0, "offset": 1, "error_code": null, "error": null}],
          "key_schema_id": null, "value_schema_id": null})
    );
    // Rust accessor.
    let recs = s.proxy.records("events", 0).unwrap_or_default();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(recs[0].value.as_deref(), Some(&b"hello"[..]));
    assert_eq!(recs[1].key, None);
    // HTTP read-back.
    let back = s.read_back("events", "").await;
    assert_eq!(back.len(), 2);
    assert_eq!(back[0]["value"], json!(b64("hello")));
    assert_eq!(back[0]["value_utf8"], json!("hello"));
    assert_eq!(back[0]["key_utf8"], json!("k1"));
    assert_eq!(back[1]["key"], Value::Null);
    assert!(back[0]["timestamp"].as_i64().unwrap_or(0) > 1_600_000_000_000);
    s.stop().await;
}

#[tokio::test]
async fn json_produce_stores_json_bytes() {
    let s = start(memory_config(&[], true)).await;
    let body = r#"{"records":[{"key":"user-1","value":{"order":42,"items":["a","b"]}},{"value":17}]}"#;
    let r = s.post("/topics/orders", JSON_V2, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let back = s.read_back("orders", "partition=0").await;
    assert_eq!(back[0]["key_utf8"], json!("\"user-1\""));
    assert_eq!(back[0]["value_utf8"], json!(r#"{"order":42,"items":["a","b"]}"#));
    assert_eq!(back[0]["value_json"], json!({"order": 42, "items": ["a", "b"]}));
    assert_eq!(back[1]["value_json"], json!(17));
    s.stop().await;
}

#[tokio::test]
async fn content_type_parameters_are_accepted() {
    let s = start(memory_config(&[], true)).await;
    let r = s
        .post(
            "/topics/t",
            "application/vnd.kafka.json.v2+json; charset=UTF-8",
            r#"{"records":[{"value":1}]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    s.stop().await;
}

#[tokio::test]
async fn keyed_records_follow_murmur2_and_unkeyed_go_round_robin() {
    let s = start(memory_config(&["p:4"], false)).await;
    let keys = ["alice", "bob", "carol", "dave", "eve", "mallory", "trent"];
    let records: Vec<Value> = keys.iter().map(|k| json!({"key": b64(k), "value": b64("v")})).collect();
    let r = s
        .post("/topics/p", BINARY_V2, &json!({"records": records}).to_string())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let offsets = r.json()["offsets"].clone();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            offsets[i]["partition"],
            json!(partition_for_key(k.as_bytes(), 4)),
            "key {k}"
        );
    }
    // Same key again: same partition.
    let r = s
        .post(
            "/topics/p",
            BINARY_V2,
            &json!({"records": [{"key": b64("alice"), "value": b64("again")}]}).to_string(),
        )
        .await;
    assert_eq!(
        r.json()["offsets"][0]["partition"],
        json!(partition_for_key(b"alice", 4))
    );
    // Unkeyed: 0,1,2,3,0...
    let r = s
        .post(
            "/topics/p",
            JSON_V2,
            r#"{"records":[{"value":1},{"value":2},{"value":3},{"value":4},{"value":5}]}"#,
        )
        .await;
    let parts: Vec<Value> = r.json()["offsets"]
        .as_array()
        .map(|a| a.iter().map(|o| o["partition"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(parts, vec![json!(0), json!(1), json!(2), json!(3), json!(0)]);
    s.stop().await;
}

#[tokio::test]
async fn explicit_partition_is_honoured() {
    let s = start(memory_config(&["x:3"], false)).await;
    let r = s
        .post(
            "/topics/x",
            JSON_V2,
            r#"{"records":[{"key":"k","value":1,"partition":2},{"value":2,"partition":2}]}"#,
        )
        .await;
    assert_eq!(
        r.json()["offsets"],
        json!([
            {"partition": 2, "offset": 0, "error_code": null, "error": null},
            {"partition": 2, "offset": 1, "error_code": null, "error": null}])
    );
    // The deprecated produce-to-partition path; a record's own partition wins.
    let r = s
        .post(
            "/topics/x/partitions/1",
            JSON_V2,
            r#"{"records":[{"value":3},{"value":4,"partition":0}]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["offsets"][0]["partition"], json!(1));
    assert_eq!(r.json()["offsets"][1]["partition"], json!(0));
    assert_eq!(s.read_back("x", "partition=2").await.len(), 2);
    assert_eq!(s.read_back("x", "partition=2&offset=1").await.len(), 1);
    assert_eq!(s.read_back("x", "limit=1").await.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn auto_create_uses_default_partitions() {
    let mut config = memory_config(&[], true);
    config.default_partitions = 3;
    let s = start(config).await;
    let r = s.post("/topics/fresh", JSON_V2, r#"{"records":[{"value":1}]}"#).await;
    assert_eq!(r.status, 200);
    let t = s.get("/topics/fresh").await;
    assert_eq!(t.status, 200);
    assert_eq!(t.content_type(), V2_RESPONSE);
    let v = t.json();
    assert_eq!(v["name"], json!("fresh"));
    assert_eq!(v["configs"], json!({}));
    assert_eq!(v["partitions"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        v["partitions"][0],
        json!({"partition": 0, "leader": 1, "replicas": [{"broker": 1, "leader": true, "in_sync": true}]})
    );
    let list = s.get("/topics").await;
    assert_eq!(list.json(), json!(["fresh"]));
    s.stop().await;
}

#[tokio::test]
async fn keep_alive_connection_serves_many_requests() {
    use http_body_util::{BodyExt, Full};
    use hyper::Request;
    use hyper_util::rt::TokioIo;

    let s = start(memory_config(&[], true)).await;
    let stream = tokio::net::TcpStream::connect(s.addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    for i in 0..20 {
        let req = Request::post("/topics/ka")
            .header("host", s.addr.to_string())
            .header("content-type", JSON_V2)
            .body(Full::new(bytes::Bytes::from(format!(
                r#"{{"records":[{{"value":{i}}}]}}"#
            ))))
            .unwrap_or_else(|e| panic!("{e}"));
        let resp = sender
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(resp.status(), 200);
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["offsets"][0]["offset"], json!(i));
    }
    s.stop().await;
}

#[tokio::test]
async fn handle_can_be_embedded_without_a_socket() {
    use http_body_util::{BodyExt, Full};

    let proxy = rest_proxy::RestProxy::new(memory_config(&[], true)).unwrap_or_else(|e| panic!("{e}"));
    let req = hyper::Request::post("/topics/embedded")
        .header("content-type", JSON_V2)
        .body(Full::new(bytes::Bytes::from_static(br#"{"records":[{"value":"x"}]}"#)))
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = proxy.handle(req).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    assert!(String::from_utf8_lossy(&body).contains("\"offset\":0"));
    let recs = proxy.read_records("embedded", None, 0, 10).await.unwrap_or_default();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].value.as_deref(), Some(&b"\"x\""[..]));
}
