//! The records of a Kafka REST Proxy produce request, decoded for `run`'s transcript, so a reader
//! sees the topic, key and message instead of base64 inside JSON.
//!
//! Recognised requests (Confluent REST Proxy API reference,
//! https://docs.confluent.io/platform/current/kafka-rest/api.html):
//! - v2 `POST …/topics/{topic}` with `content-type: application/vnd.kafka.{binary|json}.v2+json`,
//!   body `{"records":[{"key":…,"value":…,"partition":n}]}` (binary: base64 key and value);
//! - v3 `POST …/v3/clusters/{cluster}/topics/{topic}/records`, body one or more (streaming mode)
//!   `{"key":{"type":"BINARY","data":…},"value":{"type":"BINARY"|"JSON","data":…},"partition_id":n}`,
//!   and its record headers `"headers":[{"name":…,"value":<base64>|null}]` (shown as `headers`,
//!   each value as text when UTF-8, else `{"base64": …}`).
//!
//! Anything else, or a body that does not parse as such, is left undecoded (`None`).

use base64::Engine as _;
use serde_json::{json, Map, Value};

/// Most records decoded from one request; the rest are counted, not shown.
const MAX_RECORDS: usize = 1000;

/// The decoded produce request: `{"api","topic","records":[{"key","value","partition"}]}`.
pub fn decode_produce(path: &str, content_type: Option<&str>, body: &[u8]) -> Option<Value> {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    if let [.., "v3", "clusters", cluster, "topics", topic, "records"] = segments.as_slice() {
        let records = decode_v3(body)?;
        return Some(json!({"api": "v3", "cluster_id": cluster, "topic": topic, "records": records}));
    }
    if let [.., "topics", topic] = segments.as_slice() {
        let binary = match content_type?.split(';').next()?.trim() {
            "application/vnd.kafka.binary.v2+json" => true,
            "application/vnd.kafka.json.v2+json" => false,
            _ => return None,
        };
        let records = decode_v2(body, binary)?;
        return Some(json!({"api": "v2", "topic": topic, "records": records}));
    }
    None
}

fn decode_v2(body: &[u8], binary: bool) -> Option<Vec<Value>> {
    let parsed: Value = serde_json::from_slice(body).ok()?;
    let records = parsed.get("records")?.as_array()?;
    records
        .iter()
        .take(MAX_RECORDS)
        .map(|record| {
            let record = record.as_object()?;
            let field = |name: &str| match record.get(name) {
                None | Some(Value::Null) => Some(Value::Null),
                Some(Value::String(text)) if binary => base64_field(text),
                Some(_) if binary => None,
                Some(other) => Some(other.clone()),
            };
            Some(record_json(field("key")?, field("value")?, record.get("partition")))
        })
        .collect()
}

fn decode_v3(body: &[u8]) -> Option<Vec<Value>> {
    let mut records = Vec::new();
    for item in serde_json::Deserializer::from_slice(body).into_iter::<Map<String, Value>>() {
        let record = item.ok()?;
        if records.len() == MAX_RECORDS {
            break;
        }
        let field = |name: &str| match record.get(name) {
            None | Some(Value::Null) => Some(Value::Null),
            Some(Value::Object(data)) => match (data.get("type").and_then(Value::as_str), data.get("data")) {
                (Some("BINARY"), Some(Value::String(text))) => base64_field(text),
                (Some("JSON"), Some(value)) => Some(value.clone()),
                _ => None,
            },
            Some(_) => None,
        };
        let mut decoded = record_json(field("key")?, field("value")?, record.get("partition_id"));
        if let Some(headers) = record.get("headers").filter(|h| !h.is_null()) {
            decoded["headers"] = Value::Array(decode_v3_headers(headers)?);
        }
        records.push(decoded);
    }
    (!records.is_empty()).then_some(records)
}

/// A v3 record's `headers`: `{"name", "value"}` each, the value as text when UTF-8, else
/// `{"base64": …}`, `null` kept.
fn decode_v3_headers(headers: &Value) -> Option<Vec<Value>> {
    headers
        .as_array()?
        .iter()
        .map(|h| {
            let name = h.get("name")?.as_str()?;
            let value = match h.get("value") {
                None | Some(Value::Null) => Value::Null,
                Some(Value::String(text)) => {
                    let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
                    match String::from_utf8(bytes) {
                        Ok(utf8) => Value::String(utf8),
                        Err(_) => json!({ "base64": text }),
                    }
                }
                Some(_) => return None,
            };
            Some(json!({"name": name, "value": value}))
        })
        .collect()
}

fn record_json(key: Value, value: Value, partition: Option<&Value>) -> Value {
    let mut out = Map::new();
    out.insert("key".into(), key);
    out.insert("value".into(), value);
    if let Some(partition) = partition.filter(|p| !p.is_null()) {
        out.insert("partition".into(), partition.clone());
    }
    Value::Object(out)
}

/// Base64 bytes as the most readable JSON: parsed when they are JSON, text when UTF-8, else
/// `{"base64": …}` unchanged.
fn base64_field(text: &str) -> Option<Value> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
    if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
        return Some(value);
    }
    Some(match String::from_utf8(bytes) {
        Ok(text) => Value::String(text),
        Err(_) => json!({ "base64": text }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn v2_binary_records_are_decoded() {
        let body = format!(
            r#"{{"records":[{{"key":"{}","value":"{}","partition":2}},{{"value":"{}"}}]}}"#,
            b64(b"k1"),
            b64(br#"{"body":{"a":1}}"#),
            b64(&[0xff, 0x00])
        );
        let decoded = decode_produce(
            "/kafka/topics/orders",
            Some("application/vnd.kafka.binary.v2+json"),
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(
            decoded,
            json!({"api": "v2", "topic": "orders", "records": [
                {"key": "k1", "value": {"body": {"a": 1}}, "partition": 2},
                {"key": null, "value": {"base64": "/wA="}},
            ]})
        );
    }

    #[test]
    fn v2_json_records_are_shown_as_they_are() {
        let decoded = decode_produce(
            "/topics/t",
            Some("application/vnd.kafka.json.v2+json"),
            br#"{"records":[{"value":{"m":1}}]}"#,
        )
        .unwrap();
        assert_eq!(decoded["records"], json!([{"key": null, "value": {"m": 1}}]));
    }

    #[test]
    fn v3_streamed_records_are_decoded() {
        let body = format!(
            "{{\"key\":{{\"type\":\"BINARY\",\"data\":\"{}\"}},\"value\":{{\"type\":\"BINARY\",\"data\":\"{}\"}},\"partition_id\":0}}\n{{\"value\":{{\"type\":\"JSON\",\"data\":[1]}}}}",
            b64(b"k"),
            b64(b"plain text")
        );
        let decoded = decode_produce("/v3/clusters/lkc-1/topics/t/records", None, body.as_bytes()).unwrap();
        assert_eq!(
            decoded,
            json!({"api": "v3", "cluster_id": "lkc-1", "topic": "t", "records": [
                {"key": "k", "value": "plain text", "partition": 0},
                {"key": null, "value": [1]},
            ]})
        );
    }

    #[test]
    fn v3_record_headers_are_decoded() {
        let body = format!(
            r#"{{"value":{{"type":"JSON","data":1}},"headers":[{{"name":"trace-id","value":"{}"}},{{"name":"bin","value":"{}"}},{{"name":"n","value":null}}]}}"#,
            b64(b"r-1"),
            b64(&[0xff, 0x00])
        );
        let decoded = decode_produce("/v3/clusters/c/topics/t/records", None, body.as_bytes()).unwrap();
        assert_eq!(
            decoded["records"],
            json!([{"key": null, "value": 1, "headers": [
                {"name": "trace-id", "value": "r-1"},
                {"name": "bin", "value": {"base64": "/wA="}},
                {"name": "n", "value": null},
            ]}])
        );
        // Headers that are not Confluent's shape leave the request undecoded.
        let odd = r#"{"value":{"type":"JSON","data":1},"headers":[{"name":1}]}"#;
        assert_eq!(
            decode_produce("/v3/clusters/c/topics/t/records", None, odd.as_bytes()),
            None
        );
    }

    #[test]
    fn other_requests_are_left_alone() {
        let v2 = Some("application/vnd.kafka.binary.v2+json");
        assert_eq!(decode_produce("/lookup", v2, b"{}"), None);
        assert_eq!(decode_produce("/topics/t", Some("application/json"), b"{}"), None);
        assert_eq!(decode_produce("/topics/t", None, b"{}"), None);
        assert_eq!(decode_produce("/topics/t", v2, b"not json"), None);
        assert_eq!(
            decode_produce("/topics/t", v2, br#"{"records":[{"value":"%%%"}]}"#),
            None
        );
        assert_eq!(decode_produce("/topics/t", v2, br#"{"records":[{"value":7}]}"#), None);
        assert_eq!(decode_produce("/v3/clusters/c/topics/t/records", None, b""), None);
        assert_eq!(
            decode_produce(
                "/v3/clusters/c/topics/t/records",
                None,
                br#"{"value":{"type":"AVRO","data":1}}"#
            ),
            None
        );
    }
}
