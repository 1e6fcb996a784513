//! Simulator endpoints under `/_sim/` (not part of any Confluent API), for tests and humans:
//!
//! - `GET /_sim/health` → `{"status":"ok","backend":"memory","cluster_id":...,"flavor":"confluent"}`
//! - `GET /_sim/topics` → every topic with per-partition `earliest_offset`, `next_offset`, and
//!   in memory `records`, `bytes`, `evicted` (retention evictions).
//! - `GET /_sim/topics/{topic}/records?partition=P&offset=O&limit=N` → the records (all partitions
//!   in turn when `partition` is absent; `offset` default 0; `limit` default 100, at most 10000),
//!   each with base64 `key`/`value` and, when decodable, `key_utf8`, `value_utf8`, `value_json`.
//! - `DELETE /_sim/topics/{topic}` → deletes the topic.
//! - `POST /_sim/reset` → in memory: drops all topics (re-creating the configured ones) and faults.
//! - `GET|POST|DELETE /_sim/faults` → see [`crate::faults`].

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::cluster::Cluster;
use crate::codec::{encode_base64, APPLICATION_JSON};
use crate::error::{ApiError, TOPIC_NOT_FOUND_MESSAGE};
use crate::faults::parse_faults;
use crate::model::StoredRecord;
use crate::reply::Reply;
use crate::timestamp::format_iso8601;

/// Default `limit` of the records endpoint.
pub const DEFAULT_READ_LIMIT: usize = 100;
/// Largest `limit` of the records endpoint.
pub const MAX_READ_LIMIT: usize = 10_000;

fn ok(v: &Value) -> Reply {
    Reply::json(StatusCode::OK, APPLICATION_JSON, v)
}

fn error(e: &ApiError) -> Reply {
    Reply::error(e, APPLICATION_JSON)
}

/// `GET /_sim/health`.
pub fn health(cluster: &Cluster) -> Reply {
    ok(&json!({
        "status": "ok",
        "backend": cluster.backend().kind(),
        "cluster_id": cluster.config().cluster_id,
        "flavor": cluster.config().flavor.name(),
    }))
}

/// `GET /_sim/topics`.
pub async fn topics(cluster: &Cluster) -> Reply {
    match cluster.backend().summary().await {
        Ok(topics) => ok(&json!({"backend": cluster.backend().kind(), "topics": topics})),
        Err(e) => error(&ApiError::from_storage(e)),
    }
}

/// `DELETE /_sim/topics/{topic}`.
pub async fn delete_topic(cluster: &Cluster, topic: &str) -> Reply {
    match cluster.backend().delete_topic(topic).await {
        Ok(true) => {
            cluster.forget_topic(topic);
            ok(&json!({"deleted": topic}))
        }
        Ok(false) => error(&ApiError::topic_not_found(TOPIC_NOT_FOUND_MESSAGE)),
        Err(e) => error(&ApiError::from_storage(e)),
    }
}

/// `POST /_sim/reset`: topics, faults and the schema registry's subjects and schemas.
pub fn reset(cluster: &Cluster) -> Reply {
    match cluster.backend().reset() {
        Ok(()) => {
            cluster.schema_registry().clear();
            let faults = cluster.faults().clear();
            ok(&json!({"reset": true, "faults_cleared": faults}))
        }
        Err(e) => error(&ApiError::from_storage(e)),
    }
}

fn bytes_view(m: &mut Map<String, Value>, name: &str, bytes: Option<&Bytes>) {
    m.insert(name.into(), json!(bytes.map(|b| encode_base64(b))));
    if let Some(text) = bytes.and_then(|b| std::str::from_utf8(b).ok()) {
        m.insert(format!("{name}_utf8"), json!(text));
    }
}

/// The JSON view of one record.
pub fn record_json(r: &StoredRecord) -> Value {
    let mut m = Map::new();
    m.insert("partition".into(), json!(r.partition));
    m.insert("offset".into(), json!(r.offset));
    m.insert("timestamp".into(), json!(r.timestamp_ms));
    m.insert("timestamp_iso".into(), json!(format_iso8601(r.timestamp_ms)));
    bytes_view(&mut m, "key", r.key.as_ref());
    bytes_view(&mut m, "value", r.value.as_ref());
    if let Some(v) = r.value.as_ref().and_then(|b| serde_json::from_slice::<Value>(b).ok()) {
        m.insert("value_json".into(), v);
    }
    let headers: Vec<Value> = r
        .headers
        .iter()
        .map(|h| {
            let mut hm = Map::new();
            hm.insert("name".into(), json!(h.name));
            bytes_view(&mut hm, "value", h.value.as_ref());
            Value::Object(hm)
        })
        .collect();
    m.insert("headers".into(), Value::Array(headers));
    Value::Object(m)
}

/// The parsed query of the records endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadQuery {
    /// One partition, or all.
    pub partition: Option<u32>,
    /// First offset wanted.
    pub offset: i64,
    /// Most records returned.
    pub limit: usize,
}

/// Parses `partition=&offset=&limit=`.
pub fn parse_read_query(query: Option<&str>) -> Result<ReadQuery, String> {
    let mut q = ReadQuery {
        partition: None,
        offset: 0,
        limit: DEFAULT_READ_LIMIT,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "partition" => {
                q.partition = Some(
                    v.parse()
                        .map_err(|_| format!("partition must be a non-negative integer, got `{v}`"))?,
                )
            }
            "offset" => {
                q.offset = v
                    .parse::<i64>()
                    .ok()
                    .filter(|o| *o >= 0)
                    .ok_or_else(|| format!("offset must be a non-negative integer, got `{v}`"))?
            }
            "limit" => {
                q.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_READ_LIMIT).contains(l))
                    .ok_or_else(|| format!("limit must be 1 to {MAX_READ_LIMIT}, got `{v}`"))?
            }
            other => return Err(format!("unknown query parameter `{other}`")),
        }
    }
    Ok(q)
}

/// `GET /_sim/topics/{topic}/records`.
pub async fn records(cluster: &Cluster, topic: &str, query: Option<&str>) -> Reply {
    let q = match parse_read_query(query) {
        Ok(q) => q,
        Err(msg) => return error(&ApiError::bad_request(msg)),
    };
    match cluster.read_records(topic, q.partition, q.offset, q.limit).await {
        Ok(recs) => ok(&json!({
            "topic": topic,
            "records": recs.iter().map(record_json).collect::<Vec<_>>(),
        })),
        Err(e) => error(&ApiError::from_storage(e)),
    }
}

/// `GET|POST|DELETE /_sim/faults`.
pub fn faults(cluster: &Cluster, method: &Method, body: Result<Bytes, ApiError>) -> Reply {
    let list = |cluster: &Cluster| {
        ok(&json!({
            "faults": cluster.faults().list().iter().map(|f| f.to_json()).collect::<Vec<_>>()
        }))
    };
    if method == Method::POST {
        let body = match body {
            Ok(b) => b,
            Err(e) => return error(&e),
        };
        match parse_faults(&body) {
            Ok(faults) => {
                cluster.faults().push(faults);
                list(cluster)
            }
            Err(msg) => error(&ApiError::unprocessable(format!("bad fault: {msg}"))),
        }
    } else if method == Method::DELETE {
        ok(&json!({"cleared": cluster.faults().clear()}))
    } else {
        list(cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RecordHeader;

    #[test]
    fn query_parsing() {
        assert_eq!(
            parse_read_query(Some("partition=2&offset=5&limit=3")),
            Ok(ReadQuery {
                partition: Some(2),
                offset: 5,
                limit: 3
            })
        );
        assert_eq!(
            parse_read_query(None),
            Ok(ReadQuery {
                partition: None,
                offset: 0,
                limit: DEFAULT_READ_LIMIT
            })
        );
        for bad in ["partition=-1", "offset=x", "limit=0", "limit=10001", "foo=1"] {
            assert!(parse_read_query(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn record_view_decodes_when_it_can() {
        let r = StoredRecord {
            partition: 0,
            offset: 3,
            timestamp_ms: 1_000,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(br#"{"a":1}"#)),
            headers: vec![RecordHeader {
                name: "h".into(),
                value: Some(Bytes::from_static(&[0xff])),
            }],
        };
        let v = record_json(&r);
        assert_eq!(v["key"], json!("aw=="));
        assert_eq!(v["key_utf8"], json!("k"));
        assert_eq!(v["value_json"], json!({"a": 1}));
        assert_eq!(v["timestamp_iso"], json!("1970-01-01T00:00:01Z"));
        assert_eq!(v["headers"][0]["value"], json!("/w=="));
        assert!(v["headers"][0].get("value_utf8").is_none());
        let null = StoredRecord {
            key: None,
            value: None,
            headers: Vec::new(),
            ..r
        };
        let v = record_json(&null);
        assert_eq!(v["key"], Value::Null);
        assert!(v.get("value_json").is_none());
    }
}
