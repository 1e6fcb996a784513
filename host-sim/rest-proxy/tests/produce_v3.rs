//! v3 produce over real HTTP: delivery reports, headers, timestamps, streaming mode, and the
//! cluster endpoints.

mod common;

use common::*;
use rest_proxy::partitioner::partition_for_key;
use serde_json::{json, Value};

const RECORDS: &str = "/v3/clusters/host-sim/topics/orders/records";

#[tokio::test]
async fn single_record_gets_a_delivery_report() {
    let s = start(memory_config(&["orders:3"], false)).await;
    let body = json!({
        "key": {"type": "BINARY", "data": b64("order-7")},
        "value": {"type": "JSON", "data": {"total": 12.5, "lines": [1, 2]}},
        "headers": [{"name": "trace", "value": b64("abc")}, {"name": "empty", "value": null}],
        "timestamp": "2021-02-05T19:14:42.123Z"
    })
    .to_string();
    let r = s.post(RECORDS, JSON, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type(), JSON);
    let partition = partition_for_key(b"order-7", 3);
    assert_eq!(
        r.json(),
        json!({
            "error_code": 200,
            "cluster_id": "host-sim",
            "topic_name": "orders",
            "partition_id": partition,
            "offset": 0,
            "timestamp": "2021-02-05T19:14:42.123Z",
            "key": {"type": "BINARY", "size": 7},
            "value": {"type": "JSON", "size": 28}
        })
    );
    let back = s.read_back("orders", &format!("partition={partition}")).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0]["timestamp"], json!(1_612_552_482_123i64));
    assert_eq!(back[0]["value_json"], json!({"total": 12.5, "lines": [1, 2]}));
    assert_eq!(
        back[0]["headers"],
        json!([
            {"name": "trace", "value": b64("abc"), "value_utf8": "abc"},
            {"name": "empty", "value": null}])
    );
    s.stop().await;
}

#[tokio::test]
async fn string_value_without_key_and_explicit_partition() {
    let s = start(memory_config(&["orders:3"], false)).await;
    let r = s
        .post(
            RECORDS,
            "application/json; charset=utf-8",
            r#"{"partition_id":1,"value":{"type":"STRING","data":"héllo"}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["partition_id"], json!(1));
    assert_eq!(v["value"], json!({"type": "STRING", "size": 6}));
    assert!(v.get("key").is_none(), "absent key is omitted: {v}");
    assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    let back = s.read_back("orders", "partition=1").await;
    assert_eq!(back[0]["value_utf8"], json!("héllo"));
    assert_eq!(back[0]["key"], Value::Null);
    s.stop().await;
}

#[tokio::test]
async fn null_data_is_a_null_value() {
    let s = start(memory_config(&["orders:1"], false)).await;
    let r = s
        .post(
            RECORDS,
            JSON,
            r#"{"key":{"type":"STRING","data":"k"},"value":{"type":"BINARY","data":null}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["value"], json!({"type": "BINARY", "size": -1}));
    let recs = s.proxy.records("orders", 0).unwrap_or_default();
    assert_eq!(recs[0].value, None);
    assert_eq!(recs[0].key.as_deref(), Some(&b"k"[..]));
    s.stop().await;
}

#[tokio::test]
async fn streaming_mode_answers_each_record_in_order() {
    let s = start(memory_config(&["orders:1"], false)).await;
    let body = concat!(
        r#"{"value":{"type":"STRING","data":"a"}}"#,
        "\n",
        r#"{"value":{"type":"BINARY","data":"!!"}}"#,
        r#"{"partition_id":5,"value":{"type":"STRING","data":"c"}}"#,
        "  ",
        r#"{"value":{"type":"STRING","data":"d"}}"#
    );
    let r = s.post(RECORDS, JSON, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(text.ends_with("\r\n"));
    let parts: Vec<Value> = text
        .split("\r\n")
        .filter(|p| !p.is_empty())
        .map(|p| serde_json::from_str(p).unwrap_or_else(|e| panic!("{e}: {p}")))
        .collect();
    assert_eq!(parts.len(), 4);
    assert_eq!(
        (parts[0]["error_code"].clone(), parts[0]["offset"].clone()),
        (json!(200), json!(0))
    );
    assert_eq!(parts[1]["error_code"], json!(400));
    assert_eq!(parts[1]["message"], json!(r#"data="!!" is not a valid base64 string."#));
    assert_eq!(
        parts[2],
        json!({"error_code": 40402, "message": "Partition not found."})
    );
    assert_eq!(
        (parts[3]["error_code"].clone(), parts[3]["offset"].clone()),
        (json!(200), json!(1))
    );
    s.stop().await;
}

#[tokio::test]
async fn cloud_prefix_and_auto_create() {
    let s = start(memory_config(&[], true)).await;
    let r = s
        .post(
            "/kafka/v3/clusters/host-sim/topics/new-topic/records",
            JSON,
            r#"{"value":{"type":"JSON","data":[1]}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["topic_name"], json!("new-topic"));
    s.stop().await;
}

#[tokio::test]
async fn numeric_timestamp_is_epoch_seconds_like_jackson() {
    let s = start(memory_config(&["orders:1"], false)).await;
    let r = s
        .post(
            RECORDS,
            JSON,
            r#"{"value":{"type":"STRING","data":"x"},"timestamp":1612552482}"#,
        )
        .await;
    assert_eq!(r.json()["timestamp"], json!("2021-02-05T19:14:42Z"));
    s.stop().await;
}

#[tokio::test]
async fn cluster_endpoints() {
    let s = start(memory_config(&[], true)).await;
    let r = s.get("/v3/clusters").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["kind"], json!("KafkaClusterList"));
    assert_eq!(v["data"][0]["cluster_id"], json!("host-sim"));
    assert_eq!(
        v["data"][0]["metadata"]["self"],
        json!(format!("http://{}/v3/clusters/host-sim", s.addr))
    );
    let r = s.get("/v3/clusters/host-sim").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["kind"], json!("KafkaCluster"));
    let r = s.get("/v3/clusters/other").await;
    assert_eq!(r.assert_error(404, 404), "Cluster other cannot be found.");
    s.stop().await;
}
