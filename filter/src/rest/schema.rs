//! Produce requests that carry schema ids (`schema_registry.confluent`, see
//! [`crate::schema_registry`]): the request [`super::request`] builds for the `json` format, with
//! the schema in place of the embedded format, and the size bounds the asynchronous producer
//! sizes its batches with before the ids are known.

use crate::config::{Api, RestProxy};
use crate::json;
use crate::rest::request::{self, ProduceCall, RestRequest};
use crate::schema_registry::{SchemaFormat, SchemaIds, SchemaRef, Unresolved};

/// REST API v2 applies one embedded format to keys and values (its content type), so a key
/// schema and a value schema of different types cannot be sent together there.
pub fn check_api(api: &Api, ids: SchemaIds) -> Result<SchemaIds, Unresolved> {
    match (api, ids.key, ids.value) {
        (Api::V2, Some(key), Some(value)) if key.format != value.format => Err(Unresolved::Failed(format!(
            "schema registry: REST API v2 carries keys and values in one format, and key_schema (id {}) is {} while value_schema (id {}) is {}; use schemas of one type, or REST API v3",
            key.id,
            key.format.name(),
            value.id,
            value.format.name()
        ))),
        _ => Ok(ids),
    }
}

/// Builds the produce request of `records` (each a key, its encoded record headers, and the
/// message as JSON text) to `topic` with schema ids: the request [`crate::rest::request`] builds
/// for the `json` format, with the schema in place of the embedded format.
///
/// - v2: `content-type` is the value schema's format (`application/vnd.kafka.avro.v2+json` or
///   `.jsonschema.v2+json`), the body `{"value_schema_id":N,"key_schema_id":M,"records":[…]}`
///   (REST Proxy v2 reads both ids from the request, kafka-rest `SchemaProduceRequest`), each
///   record's value its JSON and its key a JSON string. v2 applies one format to keys and values,
///   so a key is only sent with a key schema (a REST proxy refuses keys without one: 42201).
/// - v3: each record's value is `{"schema_id":N,"data":<JSON>}` (kafka-rest v3
///   `ProduceRequestData`), its key `{"schema_id":M,"data":"<key>"}` with a key schema or the
///   raw key bytes (`BINARY`) without one; several records go in streaming mode, one per line.
pub fn build_produce_request<'a>(
    rp: &RestProxy,
    ids: &SchemaIds,
    topic: &str,
    partition: Option<u32>,
    records: impl IntoIterator<Item = (Option<&'a [u8]>, &'a [u8], &'a [u8])>,
) -> RestRequest {
    build_produce_call(rp, ids, topic, partition, records).into_request(rp)
}

/// [`build_produce_request`] as a [`ProduceCall`], the headers borrowed when dispatched.
pub fn build_produce_call<'a>(
    rp: &RestProxy,
    ids: &SchemaIds,
    topic: &str,
    partition: Option<u32>,
    records: impl IntoIterator<Item = (Option<&'a [u8]>, &'a [u8], &'a [u8])>,
) -> ProduceCall {
    let mut body = Vec::new();
    let v2 = rp.api == Api::V2;
    if v2 {
        body.push(b'{');
        if let Some(value) = ids.value {
            body.extend_from_slice(format!("\"value_schema_id\":{},", value.id).as_bytes());
        }
        if let Some(key) = ids.key {
            body.extend_from_slice(format!("\"key_schema_id\":{},", key.id).as_bytes());
        }
        body.extend_from_slice(b"\"records\":[");
    }
    for (i, (key, headers, message)) in records.into_iter().enumerate() {
        if i > 0 {
            body.push(if v2 { b',' } else { b'\n' });
        }
        write_record(&mut body, v2, ids, key, headers, partition, message);
    }
    if v2 {
        body.extend_from_slice(b"]}");
    }
    // The configured format's content type (v2 json, v3), or the schema's in v2.
    let content_type = match (&rp.api, ids.value.or(ids.key)) {
        (Api::V2, Some(schema)) => schema.format.v2_content_type(),
        (Api::V2, None) => "application/vnd.kafka.json.v2+json",
        (Api::V3 { .. }, _) => "application/json",
    };
    ProduceCall::with_content_type(rp, topic, body, content_type)
}

/// The largest schema id (the registry's ids are positive 32-bit integers).
const LARGEST_ID: SchemaRef = SchemaRef {
    id: i32::MAX as u32,
    format: SchemaFormat::Avro,
};

/// An upper bound of the bytes one record takes in a [`build_produce_request`] body, for a
/// message of `message_len` bytes, whatever the ids turn out to be (the asynchronous producer
/// sizes its batches before the ids are known): the record written with the largest ids, the key
/// as the larger of its two shapes (a JSON string with a key schema, base64 without).
pub fn record_len_bound(
    rp: &RestProxy,
    key: Option<&[u8]>,
    headers: &[u8],
    partition: Option<u32>,
    message_len: usize,
) -> usize {
    let v2 = rp.api == Api::V2;
    let mut longest = 0;
    for key_schema in [Some(LARGEST_ID), None] {
        let ids = SchemaIds {
            key: key_schema,
            value: Some(LARGEST_ID),
        };
        let mut scratch = Vec::new();
        write_record(&mut scratch, v2, &ids, key, headers, partition, b"");
        longest = longest.max(scratch.len());
    }
    longest + message_len
}

/// An upper bound of the bytes a [`build_produce_request`] body adds around its records: v2's
/// ids and `records` array; nothing for v3.
pub fn batch_envelope_len_bound(api: &Api) -> usize {
    match api {
        Api::V2 => {
            let ids = SchemaIds {
                key: Some(LARGEST_ID),
                value: Some(LARGEST_ID),
            };
            // The request with no record: exactly the envelope.
            let rp_v2 = RestProxy {
                upstream: String::new(),
                authority: String::new(),
                scheme: crate::config::Scheme::Http,
                path_prefix: String::new(),
                api: Api::V2,
                format: crate::config::Format::Json,
                headers: Vec::new(),
                timeout_ms: 1,
                produce_headers: Default::default(),
            };
            build_produce_request(&rp_v2, &ids, "t", None, std::iter::empty())
                .body
                .len()
        }
        Api::V3 { .. } => 0,
    }
}

fn write_record(
    out: &mut Vec<u8>,
    v2: bool,
    ids: &SchemaIds,
    key: Option<&[u8]>,
    headers: &[u8],
    partition: Option<u32>,
    message: &[u8],
) {
    let data = |out: &mut Vec<u8>, schema: Option<SchemaRef>, json_text: &[u8]| match schema {
        Some(s) => {
            out.extend_from_slice(format!("{{\"schema_id\":{},\"data\":", s.id).as_bytes());
            out.extend_from_slice(json_text);
            out.push(b'}');
        }
        None => {
            out.extend_from_slice(b"{\"type\":\"JSON\",\"data\":");
            out.extend_from_slice(json_text);
            out.push(b'}');
        }
    };
    out.extend_from_slice(b"{\"value\":");
    if v2 {
        out.extend_from_slice(message);
        // The configuration asks for a key schema whenever v2 may send a key (format_check).
        if let Some(key) = key {
            out.extend_from_slice(b",\"key\":");
            json::write_str_lossy(out, key);
        }
        if let Some(p) = partition {
            out.extend_from_slice(format!(",\"partition\":{p}").as_bytes());
        }
        out.push(b'}');
    } else {
        data(out, ids.value, message);
        if let Some(key) = key {
            out.extend_from_slice(b",\"key\":");
            match ids.key {
                Some(_) => {
                    let mut text = Vec::with_capacity(key.len() + 2);
                    json::write_str_lossy(&mut text, key);
                    data(out, ids.key, &text);
                }
                None => request::write_binary_data(out, key),
            }
        }
        request::write_v3_record_tail(out, headers, partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rest_proxy(api: &str) -> RestProxy {
        let mut rp = json!({"upstream": "rp", "format": "json", "headers": {"x-api-key": "k"}});
        if api == "v3" {
            rp["api"] = json!("v3");
            rp["cluster_id"] = json!("c1");
        }
        let cfg = json!({"topic": "t", "rest_proxy": rp});
        crate::config::parse(cfg.to_string().as_bytes()).unwrap().rest_proxy
    }

    fn header<'h>(req: &'h RestRequest, name: &str) -> &'h str {
        req.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    #[test]
    fn produce_requests_carry_the_schema_ids() {
        let avro = SchemaRef {
            id: 3,
            format: SchemaFormat::Avro,
        };
        let json_key = SchemaRef {
            id: 4,
            format: SchemaFormat::JsonSchema,
        };
        let value_only = SchemaIds {
            key: None,
            value: Some(avro),
        };
        let both = SchemaIds {
            key: Some(json_key),
            value: Some(avro),
        };
        let msg: &[u8] = br#"{"id":1,"item":"pen"}"#;

        let rp = rest_proxy("v2");
        let req = build_produce_request(&rp, &value_only, "orders", None, [(Some(&b"k1"[..]), &b""[..], msg)]);
        assert_eq!(header(&req, ":path"), "/topics/orders");
        assert_eq!(header(&req, "content-type"), "application/vnd.kafka.avro.v2+json");
        assert_eq!(header(&req, "x-api-key"), "k");
        assert_eq!(header(&req, "content-length"), req.body.len().to_string());
        assert_eq!(
            String::from_utf8_lossy(&req.body),
            r#"{"value_schema_id":3,"records":[{"value":{"id":1,"item":"pen"},"key":"k1"}]}"#
        );
        let req = build_produce_request(
            &rp,
            &both,
            "orders",
            Some(1),
            [(Some(&b"k1"[..]), &b""[..], msg), (None, &b""[..], msg)],
        );
        assert_eq!(
            String::from_utf8_lossy(&req.body),
            r#"{"value_schema_id":3,"key_schema_id":4,"records":[{"value":{"id":1,"item":"pen"},"key":"k1","partition":1},{"value":{"id":1,"item":"pen"},"partition":1}]}"#
        );
        let json_value = SchemaIds {
            key: None,
            value: Some(json_key),
        };
        let req = build_produce_request(&rp, &json_value, "orders", None, [(None, &b""[..], msg)]);
        assert_eq!(header(&req, "content-type"), "application/vnd.kafka.jsonschema.v2+json");

        let rp = rest_proxy("v3");
        let req = build_produce_request(
            &rp,
            &value_only,
            "orders",
            None,
            [(Some(&b"k1"[..]), &br#"[{"name":"a","value":"Yg=="}]"#[..], msg)],
        );
        assert_eq!(header(&req, ":path"), "/v3/clusters/c1/topics/orders/records");
        assert_eq!(header(&req, "content-type"), "application/json");
        assert_eq!(
            String::from_utf8_lossy(&req.body),
            r#"{"value":{"schema_id":3,"data":{"id":1,"item":"pen"}},"key":{"type":"BINARY","data":"azE="},"headers":[{"name":"a","value":"Yg=="}]}"#
        );
        let req = build_produce_request(
            &rp,
            &both,
            "orders",
            Some(0),
            [(Some(&b"k1"[..]), &b""[..], msg), (None, &b""[..], msg)],
        );
        assert_eq!(
            String::from_utf8_lossy(&req.body),
            "{\"value\":{\"schema_id\":3,\"data\":{\"id\":1,\"item\":\"pen\"}},\"key\":{\"schema_id\":4,\"data\":\"k1\"},\"partition_id\":0}\n{\"value\":{\"schema_id\":3,\"data\":{\"id\":1,\"item\":\"pen\"}},\"partition_id\":0}"
        );
    }

    /// The JSON Schema (meta.json) accepts exactly the schema_registry configurations the code does.
    #[test]
    fn size_bounds_cover_every_id() {
        let msg: &[u8] = br#"{"id":1,"item":"pen"}"#;
        for api in ["v2", "v3"] {
            let rp = rest_proxy(api);
            for key in [None, Some(&b"k\x01y"[..])] {
                let bound = record_len_bound(&rp, key, b"", Some(3), msg.len());
                let envelope = batch_envelope_len_bound(&rp.api);
                for ids in [
                    SchemaIds {
                        key: None,
                        value: Some(SchemaRef {
                            id: 1,
                            format: SchemaFormat::Avro,
                        }),
                    },
                    SchemaIds {
                        key: Some(LARGEST_ID),
                        value: Some(LARGEST_ID),
                    },
                    SchemaIds {
                        key: Some(SchemaRef {
                            id: 77,
                            format: SchemaFormat::JsonSchema,
                        }),
                        value: Some(SchemaRef {
                            id: 123_456,
                            format: SchemaFormat::JsonSchema,
                        }),
                    },
                ] {
                    let one = build_produce_request(&rp, &ids, "t", Some(3), [(key, &b""[..], msg)])
                        .body
                        .len();
                    assert!(
                        one <= envelope + bound,
                        "{api} {key:?} {ids:?}: {one} > {envelope} + {bound}"
                    );
                }
            }
            // The largest ids: exact.
            let one = build_produce_request(
                &rp,
                &SchemaIds {
                    key: Some(LARGEST_ID),
                    value: Some(LARGEST_ID),
                },
                "t",
                None,
                [(Some(&b"k"[..]), &b""[..], msg)],
            )
            .body
            .len();
            assert_eq!(
                one,
                batch_envelope_len_bound(&rp.api) + record_len_bound(&rp, Some(b"k"), b"", None, msg.len()),
                "{api}"
            );
        }
    }
}
