//! The produce request sent to the REST proxy for one topic.
//!
//! - v2 (Confluent REST Proxy v2, Redpanda HTTP proxy, Karapace): `POST {prefix}/topics/{topic}`,
//!   `content-type: application/vnd.kafka.binary.v2+json` (or `.json.v2+json`),
//!   `accept: application/vnd.kafka.v2+json`, body `{"records":[{"value":…,"key":…,"partition":n}]}`.
//! - v3 (Confluent REST Proxy v3): `POST {prefix}/v3/clusters/{cluster_id}/topics/{topic}/records`,
//!   `content-type: application/json`, body
//!   `{"value":{"type":"BINARY"|"JSON","data":…},"key":{"type":"BINARY","data":…},"partition_id":n}`.
//!
//! With the `binary` format the record value is exactly the message bytes (base64 in the request)
//! and the key exactly the key bytes, as Kong produces them. With `json` the message is embedded as
//! a JSON value; the v2 key is then a JSON string (v2 applies one embedded format to key and
//! value), while the v3 key stays `BINARY` so its bytes are the raw key.
//!
//! Topic and cluster id are percent-encoded as path segments. `key` and `partition` are omitted
//! when absent.

use crate::config::{Api, Format, RestProxy};
use crate::json;

/// Everything `dispatch_http_call` needs besides the upstream and the timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestRequest {
    /// Header pairs, pseudo-headers first (`:method`, `:path`, `:authority`, `:scheme`).
    pub headers: Vec<(String, String)>,
    /// The JSON request body.
    pub body: Vec<u8>,
}

/// Builds the produce request of `message` to `topic`.
pub fn build_request(
    rp: &RestProxy,
    topic: &str,
    key: Option<&[u8]>,
    partition: Option<u32>,
    message: &[u8],
) -> RestRequest {
    let body = build_body(rp, key, partition, message);
    let (content_type, accept) = match (&rp.api, rp.format) {
        (Api::V2, Format::Binary) => (
            "application/vnd.kafka.binary.v2+json",
            "application/vnd.kafka.v2+json",
        ),
        (Api::V2, Format::Json) => (
            "application/vnd.kafka.json.v2+json",
            "application/vnd.kafka.v2+json",
        ),
        (Api::V3 { .. }, _) => ("application/json", "application/json"),
    };
    let mut headers: Vec<(String, String)> = vec![
        (":method".into(), "POST".into()),
        (":path".into(), path(rp, topic)),
        (":authority".into(), rp.authority.clone()),
        (":scheme".into(), rp.scheme.as_str().into()),
        ("content-type".into(), content_type.into()),
        ("accept".into(), accept.into()),
        ("content-length".into(), body.len().to_string()),
    ];
    for (name, value) in &rp.headers {
        match name.as_str() {
            // Computed by the filter, or carried by :authority.
            "content-length" | "host" | "transfer-encoding" => {}
            _ => match headers.iter_mut().find(|(n, _)| n == name) {
                Some(existing) => existing.1.clone_from(value),
                None => headers.push((name.clone(), value.clone())),
            },
        }
    }
    RestRequest { headers, body }
}

/// The request path for `topic`.
pub fn path(rp: &RestProxy, topic: &str) -> String {
    let mut p = String::with_capacity(rp.path_prefix.len() + topic.len() + 48);
    p.push_str(&rp.path_prefix);
    match &rp.api {
        Api::V2 => {
            p.push_str("/topics/");
            push_segment(&mut p, topic);
        }
        Api::V3 { cluster_id } => {
            p.push_str("/v3/clusters/");
            push_segment(&mut p, cluster_id);
            p.push_str("/topics/");
            push_segment(&mut p, topic);
            p.push_str("/records");
        }
    }
    p
}

/// Appends `segment` percent-encoded: everything but RFC 3986 unreserved characters.
fn push_segment(out: &mut String, segment: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0x0f) as usize] as char);
        }
    }
}

fn build_body(
    rp: &RestProxy,
    key: Option<&[u8]>,
    partition: Option<u32>,
    message: &[u8],
) -> Vec<u8> {
    let encoded = match rp.format {
        Format::Binary => message.len().div_ceil(3) * 4,
        Format::Json => message.len(),
    };
    let mut out = Vec::with_capacity(encoded + key.map_or(0, |k| k.len() * 2) + 96);
    match &rp.api {
        Api::V2 => {
            out.extend_from_slice(b"{\"records\":[{\"value\":");
            match rp.format {
                Format::Binary => json::write_base64(&mut out, message),
                Format::Json => out.extend_from_slice(message),
            }
            if let Some(key) = key {
                out.extend_from_slice(b",\"key\":");
                match rp.format {
                    Format::Binary => json::write_base64(&mut out, key),
                    Format::Json => json::write_str_lossy(&mut out, key),
                }
            }
            if let Some(p) = partition {
                out.extend_from_slice(b",\"partition\":");
                out.extend_from_slice(p.to_string().as_bytes());
            }
            out.extend_from_slice(b"}]}");
        }
        Api::V3 { .. } => {
            match rp.format {
                Format::Binary => {
                    out.extend_from_slice(b"{\"value\":{\"type\":\"BINARY\",\"data\":");
                    json::write_base64(&mut out, message);
                }
                Format::Json => {
                    out.extend_from_slice(b"{\"value\":{\"type\":\"JSON\",\"data\":");
                    out.extend_from_slice(message);
                }
            }
            out.push(b'}');
            if let Some(key) = key {
                out.extend_from_slice(b",\"key\":{\"type\":\"BINARY\",\"data\":");
                json::write_base64(&mut out, key);
                out.push(b'}');
            }
            if let Some(p) = partition {
                out.extend_from_slice(b",\"partition_id\":");
                out.extend_from_slice(p.to_string().as_bytes());
            }
            out.push(b'}');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scheme;

    fn proxy(api: Api, format: Format) -> RestProxy {
        RestProxy {
            upstream: "kafka_rest".into(),
            authority: "rest:8082".into(),
            scheme: Scheme::Http,
            path_prefix: String::new(),
            api,
            format,
            headers: vec![],
            timeout_ms: 10_000,
        }
    }

    fn v3() -> Api {
        Api::V3 {
            cluster_id: "lkc-abc".into(),
        }
    }

    fn body(rp: &RestProxy, key: Option<&[u8]>, partition: Option<u32>) -> String {
        let r = build_request(rp, "t", key, partition, br#"{"body":"hi"}"#);
        let text = String::from_utf8(r.body).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).expect("body is JSON");
        text
    }

    #[test]
    fn bodies_for_each_api_and_format() {
        // base64 of {"body":"hi"} and of "k1"
        let msg = "eyJib2R5IjoiaGkifQ==";
        let cases = [
            (proxy(Api::V2, Format::Binary), None, None, format!(r#"{{"records":[{{"value":"{msg}"}}]}}"#)),
            (proxy(Api::V2, Format::Binary), Some(&b"k1"[..]), Some(2), format!(r#"{{"records":[{{"value":"{msg}","key":"azE=","partition":2}}]}}"#)),
            (proxy(Api::V2, Format::Json), None, None, r#"{"records":[{"value":{"body":"hi"}}]}"#.to_string()),
            (proxy(Api::V2, Format::Json), Some(&b"k1"[..]), Some(0), r#"{"records":[{"value":{"body":"hi"},"key":"k1","partition":0}]}"#.to_string()),
            (proxy(v3(), Format::Binary), None, None, format!(r#"{{"value":{{"type":"BINARY","data":"{msg}"}}}}"#)),
            (proxy(v3(), Format::Binary), Some(&b"k1"[..]), Some(7), format!(r#"{{"value":{{"type":"BINARY","data":"{msg}"}},"key":{{"type":"BINARY","data":"azE="}},"partition_id":7}}"#)),
            (proxy(v3(), Format::Json), Some(&b"k1"[..]), None, r#"{"value":{"type":"JSON","data":{"body":"hi"}},"key":{"type":"BINARY","data":"azE="}}"#.to_string()),
        ];
        for (rp, key, partition, want) in cases {
            assert_eq!(
                body(&rp, key, partition),
                want,
                "{:?} {:?}",
                rp.api,
                rp.format
            );
        }
    }

    #[test]
    fn binary_value_is_the_exact_message() {
        use base64::Engine as _;
        let message = "{\"body\":\"é \\u0000\"}".as_bytes();
        let r = build_request(&proxy(Api::V2, Format::Binary), "t", None, None, message);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let value = v["records"][0]["value"].as_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .unwrap();
        assert_eq!(decoded, message);
    }

    #[test]
    fn headers_v2_binary() {
        let mut rp = proxy(Api::V2, Format::Binary);
        rp.path_prefix = "/kafka".into();
        rp.headers = vec![
            ("authorization".into(), "Bearer x".into()),
            ("accept".into(), "application/json".into()),
            ("content-length".into(), "1".into()),
            ("host".into(), "evil".into()),
        ];
        let r = build_request(&rp, "orders", None, None, b"{}");
        let h: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            h,
            vec![
                (":method", "POST"),
                (":path", "/kafka/topics/orders"),
                (":authority", "rest:8082"),
                (":scheme", "http"),
                ("content-type", "application/vnd.kafka.binary.v2+json"),
                ("accept", "application/json"),
                ("content-length", &r.body.len().to_string()),
                ("authorization", "Bearer x"),
            ]
        );
    }

    #[test]
    fn content_types() {
        let ct = |rp: &RestProxy| {
            let r = build_request(rp, "t", None, None, b"{}");
            let get = |n: &str| {
                r.headers
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
                    .unwrap()
            };
            (get("content-type"), get("accept"))
        };
        assert_eq!(
            ct(&proxy(Api::V2, Format::Json)),
            (
                "application/vnd.kafka.json.v2+json".into(),
                "application/vnd.kafka.v2+json".into()
            )
        );
        assert_eq!(
            ct(&proxy(v3(), Format::Binary)),
            ("application/json".into(), "application/json".into())
        );
    }

    #[test]
    fn paths_are_percent_encoded() {
        let mut rp = proxy(v3(), Format::Binary);
        rp.path_prefix = "/p".into();
        assert_eq!(
            path(&rp, "a.b_c-d"),
            "/p/v3/clusters/lkc-abc/topics/a.b_c-d/records"
        );
        assert_eq!(
            path(&proxy(Api::V2, Format::Binary), "a/b c%é"),
            "/topics/a%2Fb%20c%25%C3%A9"
        );
        let rp = proxy(
            Api::V3 {
                cluster_id: "x/y".into(),
            },
            Format::Json,
        );
        assert_eq!(path(&rp, "t"), "/v3/clusters/x%2Fy/topics/t/records");
    }
}
