//! The requests sent to the REST proxy: the produce request for one topic (one record from the
//! synchronous flow, or a batch from the asynchronous producer) and the producer's health probe.
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
//!
//! Record headers (v3 only, see [`crate::record_headers`]) arrive already encoded as the JSON
//! array of the record's `headers` member, built once per request and shared by its topics;
//! empty means none, and the member is then left out. v2 records never carry them (the
//! configuration refuses record headers with v2).
//!
//! A batch is the same request with several records: v2 puts them in the `records` array; v3 uses
//! the produce API's streaming mode, the records' JSON objects concatenated in one body (one per
//! line), answered by one result object per record. The asynchronous producer builds a batch's
//! body one record at a time as records arrive ([`BatchBody`]), the same bytes.

use crate::config::{Api, Format, RestProxy};
use crate::json;
use crate::wire::{MapTemplate, Value};

/// Everything `dispatch_http_call` needs besides the upstream and the timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestRequest {
    /// Header pairs, pseudo-headers first (`:method`, `:path`, `:authority`, `:scheme`).
    pub headers: Vec<(String, String)>,
    /// The JSON request body.
    pub body: Vec<u8>,
}

impl RestRequest {
    /// [`RestRequest::headers`] serialized for the host ([`crate::wire`]).
    pub fn header_map(&self) -> Vec<u8> {
        proxy_wasm_pairs::encode(&self.headers)
    }
}

/// Builds the produce request of `message` to `topic`; `headers` is the record's encoded
/// `headers` array (v3), or empty.
pub fn build_request(
    rp: &RestProxy,
    topic: &str,
    key: Option<&[u8]>,
    headers: &[u8],
    partition: Option<u32>,
    message: &[u8],
) -> RestRequest {
    build_produce_call(rp, topic, key, headers, partition, message).into_request(rp)
}

/// A produce request as the filter dispatches it: the same request as [`build_request`], with
/// its headers borrowed from the configuration and from two strings built per request (path
/// and content length) instead of a pair of `String`s each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceCall {
    path: String,
    content_length: String,
    /// The content type when it is not the configured format's: a schema's
    /// (`crate::rest::schema`).
    content_type: Option<&'static str>,
    /// The JSON request body.
    pub body: Vec<u8>,
}

impl ProduceCall {
    fn new(rp: &RestProxy, topic: &str, body: Vec<u8>) -> Self {
        ProduceCall {
            path: path(rp, topic),
            content_length: body.len().to_string(),
            content_type: None,
            body,
        }
    }

    /// The call of `body` to `topic` sent as `content_type` (a schema's,
    /// `crate::rest::schema::build_produce_call`).
    pub(crate) fn with_content_type(rp: &RestProxy, topic: &str, body: Vec<u8>, content_type: &'static str) -> Self {
        ProduceCall {
            content_type: Some(content_type),
            ..ProduceCall::new(rp, topic, body)
        }
    }

    /// The header pairs, pseudo-headers first, then the configured static headers
    /// (the configuration's pairs with this call's path, content type and length).
    pub fn headers<'a>(&'a self, rp: &'a RestProxy) -> Vec<(&'a str, &'a str)> {
        let per_call = self.slot_values(rp);
        produce_pairs(rp)
            .into_iter()
            .map(|(name, value)| match value {
                Value::Fixed(fixed) => (name, fixed),
                Value::Slot(slot) => (name, per_call[slot]),
            })
            .collect()
    }

    /// The same pairs as [`ProduceCall::headers`], serialized for the host: the configuration's
    /// template (serialized at its first call) with this call's values spliced in.
    pub fn header_map(&self, rp: &RestProxy) -> Vec<u8> {
        let template = rp.produce_headers.get_or_init(|| MapTemplate::new(&produce_pairs(rp)));
        template.encode(&self.slot_values(rp).map(str::as_bytes))
    }

    /// The values of [`produce_pairs`]' slots for this call: path, content type, length.
    fn slot_values<'a>(&'a self, rp: &RestProxy) -> [&'a str; 3] {
        let content_type = self.content_type.unwrap_or(content_types(rp).0);
        [self.path.as_str(), content_type, self.content_length.as_str()]
    }

    pub(crate) fn into_request(self, rp: &RestProxy) -> RestRequest {
        let headers = owned(&self.headers(rp));
        RestRequest {
            headers,
            body: self.body,
        }
    }
}

/// Builds the produce request of `message` to `topic` for dispatching (see [`ProduceCall`]).
pub fn build_produce_call(
    rp: &RestProxy,
    topic: &str,
    key: Option<&[u8]>,
    headers: &[u8],
    partition: Option<u32>,
    message: &[u8],
) -> ProduceCall {
    ProduceCall::new(rp, topic, build_body(rp, key, headers, partition, message))
}

/// The produce calls' header pairs of `rp`, pseudo-headers first, then the configured static
/// headers; the values that vary per call are slots: 0 the path, 1 the content type (unless a
/// static header replaces it), 2 the content length.
fn produce_pairs(rp: &RestProxy) -> Vec<(&str, Value<'_>)> {
    let mut pairs = Vec::with_capacity(7 + rp.headers.len());
    pairs.extend([
        (":method", Value::Fixed("POST")),
        (":path", Value::Slot(0)),
        (":authority", Value::Fixed(rp.authority.as_str())),
        (":scheme", Value::Fixed(rp.scheme.as_str())),
        ("content-type", Value::Slot(1)),
        ("accept", Value::Fixed(content_types(rp).1)),
        ("content-length", Value::Slot(2)),
    ]);
    add_static_headers(&mut pairs, rp);
    pairs
}

/// The format's content type and the accepted reply type.
fn content_types(rp: &RestProxy) -> (&'static str, &'static str) {
    match (&rp.api, rp.format) {
        (Api::V2, Format::Binary) => ("application/vnd.kafka.binary.v2+json", "application/vnd.kafka.v2+json"),
        (Api::V2, Format::Json) => ("application/vnd.kafka.json.v2+json", "application/vnd.kafka.v2+json"),
        (Api::V3 { .. }, _) => ("application/json", "application/json"),
    }
}

fn owned(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Bytes a batch body adds around its records: v2 `{"records":[` and `]}`; none for v3, whose
/// streaming mode concatenates the records.
pub fn batch_envelope_len(api: &Api) -> usize {
    match api {
        Api::V2 => V2_OPEN.len() + V2_CLOSE.len(),
        Api::V3 { .. } => 0,
    }
}

/// Bytes between two records of a batch body: v2 `,` (array items), v3 `\n` (streamed values).
pub const BATCH_SEPARATOR_LEN: usize = 1;

/// The exact size in bytes of one record in a request body (see [`batch_envelope_len`] and
/// [`BATCH_SEPARATOR_LEN`] for what a batch adds), for a message of `message_len` bytes.
pub fn record_len(
    rp: &RestProxy,
    key: Option<&[u8]>,
    headers: &[u8],
    partition: Option<u32>,
    message_len: usize,
) -> usize {
    // The record with an empty value, plus the value's encoded length: base64 is 4 bytes per 3
    // (the quotes are already there), the json format embeds the message as is.
    let mut scratch = Vec::with_capacity(96 + key.map_or(0, |k| k.len() * 2) + headers.len());
    encode_record(&mut scratch, rp, key, headers, partition, b"");
    let value_len = match rp.format {
        Format::Binary => message_len.div_ceil(3) * 4,
        Format::Json => message_len,
    };
    scratch.len() + value_len
}

/// Builds one produce request carrying several records for `topic`, in order (each a key, its
/// encoded record headers and a message): v2 `{"records":[…,…]}`; v3 streaming mode, the
/// records' JSON objects one per line in one body, which the REST proxy answers with one result
/// object per record. The same bytes as a [`BatchBody`] fed the records one by one.
pub fn build_batch_request<'a>(
    rp: &RestProxy,
    topic: &str,
    partition: Option<u32>,
    records: impl IntoIterator<Item = (Option<&'a [u8]>, &'a [u8], &'a [u8])>,
) -> RestRequest {
    let mut body = BatchBody::new(&rp.api);
    for (key, headers, message) in records {
        body.push(rp, key, headers, partition, message);
    }
    produce_request(rp, topic, body.finish())
}

/// The produce call of an already built batch body (see [`BatchBody`]) to `topic`.
pub fn batch_call(rp: &RestProxy, topic: &str, body: Vec<u8>) -> ProduceCall {
    ProduceCall::new(rp, topic, body)
}

/// A batch request body built one record at a time, so that the asynchronous producer encodes
/// each record when it accepts it and a flush only closes the body ([`BatchBody::finish`], at
/// most two bytes): v2 `{"records":[` then the records separated by `,`; v3 (streaming mode)
/// the records separated by `\n`. Finished, it holds exactly the bytes
/// [`build_batch_request`] sends for the same records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchBody {
    bytes: Vec<u8>,
    records: usize,
    v2: bool,
}

impl BatchBody {
    /// An empty batch body for `api`.
    pub fn new(api: &Api) -> Self {
        Self::with_capacity(api, 0)
    }

    /// An empty batch body for `api` with room for `capacity` bytes.
    pub fn with_capacity(api: &Api, capacity: usize) -> Self {
        let v2 = *api == Api::V2;
        let mut bytes = Vec::with_capacity(capacity.max(V2_OPEN.len() + V2_CLOSE.len()));
        if v2 {
            bytes.extend_from_slice(V2_OPEN);
        }
        BatchBody { bytes, records: 0, v2 }
    }

    /// A finished body of `records` records (from [`BatchBody::finish`] with the same `api`)
    /// opened again for more records: the v2 close is taken off (O(1)).
    pub fn reopen(api: &Api, mut body: Vec<u8>, records: usize) -> Self {
        let v2 = *api == Api::V2;
        if v2 && body.ends_with(V2_CLOSE) {
            body.truncate(body.len() - V2_CLOSE.len());
        }
        BatchBody {
            bytes: body,
            records,
            v2,
        }
    }

    /// Appends one record (after a separator unless it is the first) and returns where its
    /// JSON object lies in the body (see [`BatchBody::record_bytes`]).
    pub fn push(
        &mut self,
        rp: &RestProxy,
        key: Option<&[u8]>,
        headers: &[u8],
        partition: Option<u32>,
        message: &[u8],
    ) -> std::ops::Range<usize> {
        self.separate();
        let start = self.bytes.len();
        encode_record(&mut self.bytes, rp, key, headers, partition, message);
        start..self.bytes.len()
    }

    /// Appends one record already encoded (as [`encode_record`] or [`BatchBody::record_bytes`]
    /// give it) and returns where it lies in the body.
    pub fn push_encoded(&mut self, record: &[u8]) -> std::ops::Range<usize> {
        self.separate();
        let start = self.bytes.len();
        self.bytes.extend_from_slice(record);
        start..self.bytes.len()
    }

    fn separate(&mut self) {
        if self.records > 0 {
            self.bytes.push(if self.v2 { b',' } else { b'\n' });
        }
        self.records += 1;
    }

    /// The bytes of the record at `span` (as [`BatchBody::push`] returned it).
    pub fn record_bytes(&self, span: std::ops::Range<usize>) -> &[u8] {
        &self.bytes[span]
    }

    /// Records in the body.
    pub fn records(&self) -> usize {
        self.records
    }

    /// The finished request body (v2: the `records` array and the object closed).
    pub fn finish(mut self) -> Vec<u8> {
        if self.v2 {
            self.bytes.extend_from_slice(V2_CLOSE);
        }
        self.bytes
    }
}

/// The health probe of the asynchronous producer: a cheap read every REST proxy serves,
/// `GET {prefix}/topics` (v2: Confluent, Redpanda, Karapace) or
/// `GET {prefix}/v3/clusters/{cluster_id}` (v3). Any 2xx answer means the proxy is back.
pub fn build_probe_request(rp: &RestProxy) -> RestRequest {
    let mut path = rp.path_prefix.clone();
    match &rp.api {
        Api::V2 => path.push_str("/topics"),
        Api::V3 { cluster_id } => {
            path.push_str("/v3/clusters/");
            push_segment(&mut path, cluster_id);
        }
    }
    let accept = match rp.api {
        Api::V2 => "application/vnd.kafka.v2+json",
        Api::V3 { .. } => "application/json",
    };
    let mut headers = vec![
        (":method", "GET"),
        (":path", path.as_str()),
        (":authority", rp.authority.as_str()),
        (":scheme", rp.scheme.as_str()),
        ("accept", accept),
    ];
    add_static_headers(&mut headers, rp);
    RestRequest {
        headers: owned(&headers),
        body: Vec::new(),
    }
}

/// The `POST` of `body` to `topic`'s produce path, with the format's content types.
fn produce_request(rp: &RestProxy, topic: &str, body: Vec<u8>) -> RestRequest {
    ProduceCall::new(rp, topic, body).into_request(rp)
}

/// Adds the configured static headers; one with the name of a computed header replaces it.
fn add_static_headers<'a, V: From<&'a str>>(headers: &mut Vec<(&'a str, V)>, rp: &'a RestProxy) {
    for (name, value) in &rp.headers {
        match name.as_str() {
            // Computed by the filter, or carried by :authority.
            "content-length" | "host" | "transfer-encoding" => {}
            _ => match headers.iter_mut().find(|(n, _)| *n == name.as_str()) {
                Some(existing) => existing.1 = V::from(value),
                None => headers.push((name, V::from(value))),
            },
        }
    }
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

const V2_OPEN: &[u8] = b"{\"records\":[";
const V2_CLOSE: &[u8] = b"]}";

fn build_body(rp: &RestProxy, key: Option<&[u8]>, headers: &[u8], partition: Option<u32>, message: &[u8]) -> Vec<u8> {
    let encoded = match rp.format {
        Format::Binary => message.len().div_ceil(3) * 4,
        Format::Json => message.len(),
    };
    let mut out = Vec::with_capacity(encoded + key.map_or(0, |k| k.len() * 2) + headers.len() + 96);
    match &rp.api {
        Api::V2 => {
            out.extend_from_slice(V2_OPEN);
            encode_record(&mut out, rp, key, headers, partition, message);
            out.extend_from_slice(V2_CLOSE);
        }
        Api::V3 { .. } => encode_record(&mut out, rp, key, headers, partition, message),
    }
    out
}

/// Appends one record's JSON object as a request or batch body carries it (see
/// [`BatchBody::push_encoded`]): v2 `{"value":…,"key":…,"partition":n}`, v3
/// `{"value":{"type":…,"data":…},"key":{…},"headers":[…],"partition_id":n}`.
pub fn encode_record(
    out: &mut Vec<u8>,
    rp: &RestProxy,
    key: Option<&[u8]>,
    headers: &[u8],
    partition: Option<u32>,
    message: &[u8],
) {
    match &rp.api {
        Api::V2 => {
            out.extend_from_slice(b"{\"value\":");
            match rp.format {
                Format::Binary => json::write_base64(out, message),
                Format::Json => out.extend_from_slice(message),
            }
            if let Some(key) = key {
                out.extend_from_slice(b",\"key\":");
                match rp.format {
                    Format::Binary => json::write_base64(out, key),
                    Format::Json => json::write_str_lossy(out, key),
                }
            }
            if let Some(p) = partition {
                out.extend_from_slice(b",\"partition\":");
                out.extend_from_slice(p.to_string().as_bytes());
            }
            out.push(b'}');
        }
        Api::V3 { .. } => {
            match rp.format {
                Format::Binary => {
                    out.extend_from_slice(b"{\"value\":{\"type\":\"BINARY\",\"data\":");
                    json::write_base64(out, message);
                }
                Format::Json => {
                    out.extend_from_slice(b"{\"value\":{\"type\":\"JSON\",\"data\":");
                    out.extend_from_slice(message);
                }
            }
            out.push(b'}');
            if let Some(key) = key {
                out.extend_from_slice(b",\"key\":");
                write_binary_data(out, key);
            }
            write_v3_record_tail(out, headers, partition);
        }
    }
}

/// A v3 `BINARY` data object: `{"type":"BINARY","data":"<base64>"}`.
pub(super) fn write_binary_data(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(b"{\"type\":\"BINARY\",\"data\":");
    json::write_base64(out, bytes);
    out.push(b'}');
}

/// The end of a v3 record after its value and key: `"headers"` (when any) and `"partition_id"`
/// (when given), then the closing brace.
pub(super) fn write_v3_record_tail(out: &mut Vec<u8>, headers: &[u8], partition: Option<u32>) {
    if !headers.is_empty() {
        out.extend_from_slice(b",\"headers\":");
        out.extend_from_slice(headers);
    }
    if let Some(p) = partition {
        out.extend_from_slice(b",\"partition_id\":");
        out.extend_from_slice(p.to_string().as_bytes());
    }
    out.push(b'}');
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
            produce_headers: Default::default(),
        }
    }

    fn v3() -> Api {
        Api::V3 {
            cluster_id: "lkc-abc".into(),
        }
    }

    fn body(rp: &RestProxy, key: Option<&[u8]>, partition: Option<u32>) -> String {
        let r = build_request(rp, "t", key, b"", partition, br#"{"body":"hi"}"#);
        let text = String::from_utf8(r.body).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).expect("body is JSON");
        text
    }

    #[test]
    fn bodies_for_each_api_and_format() {
        // base64 of {"body":"hi"} and of "k1"
        let msg = "eyJib2R5IjoiaGkifQ==";
        let cases = [
            (
                proxy(Api::V2, Format::Binary),
                None,
                None,
                format!(r#"{{"records":[{{"value":"{msg}"}}]}}"#),
            ),
            (
                proxy(Api::V2, Format::Binary),
                Some(&b"k1"[..]),
                Some(2),
                format!(r#"{{"records":[{{"value":"{msg}","key":"azE=","partition":2}}]}}"#),
            ),
            (
                proxy(Api::V2, Format::Json),
                None,
                None,
                r#"{"records":[{"value":{"body":"hi"}}]}"#.to_string(),
            ),
            (
                proxy(Api::V2, Format::Json),
                Some(&b"k1"[..]),
                Some(0),
                r#"{"records":[{"value":{"body":"hi"},"key":"k1","partition":0}]}"#.to_string(),
            ),
            (
                proxy(v3(), Format::Binary),
                None,
                None,
                format!(r#"{{"value":{{"type":"BINARY","data":"{msg}"}}}}"#),
            ),
            (
                proxy(v3(), Format::Binary),
                Some(&b"k1"[..]),
                Some(7),
                format!(
                    r#"{{"value":{{"type":"BINARY","data":"{msg}"}},"key":{{"type":"BINARY","data":"azE="}},"partition_id":7}}"#
                ),
            ),
            (
                proxy(v3(), Format::Json),
                Some(&b"k1"[..]),
                None,
                r#"{"value":{"type":"JSON","data":{"body":"hi"}},"key":{"type":"BINARY","data":"azE="}}"#.to_string(),
            ),
        ];
        for (rp, key, partition, want) in cases {
            assert_eq!(body(&rp, key, partition), want, "{:?} {:?}", rp.api, rp.format);
        }
    }

    #[test]
    fn v3_records_carry_the_encoded_headers() {
        let headers = br#"[{"name":"trace-id","value":"ci0x"}]"#;
        let rp = proxy(v3(), Format::Binary);
        let r = build_request(&rp, "t", Some(b"k1"), headers, Some(1), b"{}");
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"value":{"type":"BINARY","data":"e30="},"key":{"type":"BINARY","data":"azE="},"headers":[{"name":"trace-id","value":"ci0x"}],"partition_id":1}"#
        );
        // Batches: each record its own headers.
        let r = build_batch_request(
            &rp,
            "t",
            None,
            [(None, &headers[..], &b"{}"[..]), (None, &b""[..], &b"{}"[..])],
        );
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "{\"value\":{\"type\":\"BINARY\",\"data\":\"e30=\"},\"headers\":[{\"name\":\"trace-id\",\"value\":\"ci0x\"}]}\n{\"value\":{\"type\":\"BINARY\",\"data\":\"e30=\"}}"
        );
    }

    #[test]
    fn binary_value_is_the_exact_message() {
        use base64::Engine as _;
        let message = "{\"body\":\"é \\u0000\"}".as_bytes();
        let r = build_request(&proxy(Api::V2, Format::Binary), "t", None, b"", None, message);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let value = v["records"][0]["value"].as_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD.decode(value).unwrap();
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
        let r = build_request(&rp, "orders", None, b"", None, b"{}");
        let h: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
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

    /// The serialized header map (a template filled in per call) is byte for byte the
    /// encoding of the call's header pairs, for every API, format, static header set and
    /// content type; the template is serialized once and kept with the configuration.
    #[test]
    fn header_map_is_the_pairs_serialized() {
        let static_sets: Vec<Vec<(String, String)>> = vec![
            vec![],
            vec![("authorization".into(), "Bearer x".into())],
            vec![
                ("accept".into(), "application/json".into()),
                ("content-length".into(), "1".into()),
                ("host".into(), "evil".into()),
                ("x-b".into(), String::new()),
            ],
            vec![
                ("content-type".into(), "text/plain".into()),
                ("transfer-encoding".into(), "chunked".into()),
            ],
        ];
        for api in [Api::V2, v3()] {
            for format in [Format::Binary, Format::Json] {
                for headers in &static_sets {
                    let mut rp = proxy(api.clone(), format);
                    rp.path_prefix = "/kafka".into();
                    rp.scheme = Scheme::Https;
                    rp.headers = headers.clone();
                    let calls = [
                        build_produce_call(&rp, "orders", Some(b"k"), b"", Some(1), b"{}"),
                        build_produce_call(&rp, "a/b c", None, b"", None, &[7u8; 300]),
                        ProduceCall::with_content_type(&rp, "t", b"{}".to_vec(), "application/vnd.x+json"),
                    ];
                    for call in &calls {
                        assert_eq!(
                            call.header_map(&rp),
                            proxy_wasm_pairs::encode(&call.headers(&rp)),
                            "{api:?} {format:?} {headers:?}"
                        );
                    }
                    assert_eq!(format!("{:?}", rp.produce_headers), "Derived(kept)");
                    // A clone starts empty and derives its own.
                    let clone = rp.clone();
                    assert_eq!(format!("{:?}", clone.produce_headers), "Derived(empty)");
                    assert_eq!(clone, rp);
                }
            }
        }
        let probe = build_probe_request(&proxy(Api::V2, Format::Binary));
        assert_eq!(probe.header_map(), proxy_wasm_pairs::encode(&probe.headers));
    }

    #[test]
    fn content_types() {
        let ct = |rp: &RestProxy| {
            let r = build_request(rp, "t", None, b"", None, b"{}");
            let get = |n: &str| r.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap();
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
    fn record_len_is_exact() {
        let keys: [Option<&[u8]>; 3] = [None, Some(b"k"), Some(b"a \"quoted\" \x01 key")];
        for api in [Api::V2, v3()] {
            for format in [Format::Binary, Format::Json] {
                let rp = proxy(api.clone(), format);
                for key in keys {
                    for partition in [None, Some(0), Some(2_147_483_647)] {
                        for message in [&b"{}"[..], br#"{"body":"hi"}"#, br#"{"body":"12345678"}"#] {
                            for headers in [&b""[..], br#"[{"name":"a","value":"Yg=="}]"#] {
                                let mut one = Vec::new();
                                encode_record(&mut one, &rp, key, headers, partition, message);
                                assert_eq!(
                                    record_len(&rp, key, headers, partition, message.len()),
                                    one.len(),
                                    "{api:?} {format:?} {key:?} {partition:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn batch_bodies() {
        let records = [
            (None, &b""[..], &b"{\"a\":1}"[..]),
            (Some(&b"k"[..]), &b""[..], &b"{\"b\":2}"[..]),
        ];
        let rp = proxy(Api::V2, Format::Json);
        let r = build_batch_request(&rp, "t", Some(1), records);
        assert_eq!(
            String::from_utf8(r.body.clone()).unwrap(),
            r#"{"records":[{"value":{"a":1},"partition":1},{"value":{"b":2},"key":"k","partition":1}]}"#
        );
        let size = batch_envelope_len(&rp.api)
            + BATCH_SEPARATOR_LEN
            + records
                .iter()
                .map(|(k, h, m)| record_len(&rp, *k, h, Some(1), m.len()))
                .sum::<usize>();
        assert_eq!(r.body.len(), size);
        assert!(r.headers.contains(&(":path".into(), "/topics/t".into())));
        assert!(r.headers.contains(&("content-length".into(), size.to_string())));

        // One record: exactly the single-record request.
        let single = build_batch_request(&rp, "t", None, [(Some(&b"k"[..]), &b""[..], &b"{}"[..])]);
        assert_eq!(single, build_request(&rp, "t", Some(b"k"), b"", None, b"{}"));

        // v3 streaming: one record object per line.
        let rp = proxy(v3(), Format::Binary);
        let r = build_batch_request(&rp, "t", None, records);
        let text = String::from_utf8(r.body.clone()).unwrap();
        assert_eq!(
            text,
            "{\"value\":{\"type\":\"BINARY\",\"data\":\"eyJhIjoxfQ==\"}}\n{\"value\":{\"type\":\"BINARY\",\"data\":\"eyJiIjoyfQ==\"},\"key\":{\"type\":\"BINARY\",\"data\":\"aw==\"}}"
        );
        let values: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&r.body)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(values.len(), 2);
        assert_eq!(batch_envelope_len(&rp.api), 0);
        let single = build_batch_request(&rp, "t", Some(3), [(None, &b""[..], &b"{}"[..])]);
        assert_eq!(single, build_request(&rp, "t", None, b"", Some(3), b"{}"));
    }

    /// A record for a batch: its key, encoded headers and message.
    type TestRecord<'a> = (Option<&'a [u8]>, &'a [u8], &'a [u8]);

    /// The whole-batch builder as it was before batch bodies were built record by record
    /// (issue 15), kept as the reference the incremental [`BatchBody`] must match byte for byte.
    fn whole_batch_body(rp: &RestProxy, partition: Option<u32>, records: &[TestRecord]) -> Vec<u8> {
        let mut body = Vec::new();
        if rp.api == Api::V2 {
            body.extend_from_slice(b"{\"records\":[");
        }
        for (i, (key, headers, message)) in records.iter().enumerate() {
            if i > 0 {
                body.push(match rp.api {
                    Api::V2 => b',',
                    Api::V3 { .. } => b'\n',
                });
            }
            encode_record(&mut body, rp, *key, headers, partition, message);
        }
        if rp.api == Api::V2 {
            body.extend_from_slice(b"]}");
        }
        body
    }

    #[test]
    fn batch_bodies_built_record_by_record_are_the_whole_batch_bytes() {
        let headers = br#"[{"name":"trace-id","value":"ci0x"}]"#;
        let pool: [TestRecord; 4] = [
            (None, b"", br#"{"a":1}"#),
            (Some(b"k"), b"", br#"{"body":"x\u00e9"}"#),
            (Some(b"a \"quoted\" \x01 key"), headers, b"[1,2,3]"),
            (None, headers, b"{}"),
        ];
        for api in [Api::V2, v3()] {
            for format in [Format::Binary, Format::Json] {
                let rp = proxy(api.clone(), format);
                for partition in [None, Some(0), Some(7)] {
                    for n in 0..=pool.len() * 2 {
                        let records: Vec<_> = pool.iter().cycle().take(n).copied().collect();
                        let want = whole_batch_body(&rp, partition, &records);
                        // Record by record, as the producer encodes them when it accepts them.
                        let mut body = BatchBody::new(&rp.api);
                        let mut spans = Vec::new();
                        for (key, headers, message) in &records {
                            spans.push(body.push(&rp, *key, headers, partition, message));
                        }
                        // Each record's bytes are exactly what encode_record writes, and its size.
                        for ((key, headers, message), span) in records.iter().zip(&spans) {
                            let mut one = Vec::new();
                            encode_record(&mut one, &rp, *key, headers, partition, message);
                            assert_eq!(body.record_bytes(span.clone()), &one[..]);
                            assert_eq!(record_len(&rp, *key, headers, partition, message.len()), one.len());
                        }
                        // Copied record by record from another body (a retry batch taking fresh
                        // records), with room reserved, and closed, opened and closed again.
                        let mut copied = BatchBody::with_capacity(&rp.api, 4096);
                        for span in &spans {
                            copied.push_encoded(body.record_bytes(span.clone()));
                        }
                        assert_eq!(body.records(), n);
                        let finished = body.finish();
                        assert_eq!(finished, want, "{api:?} {format:?} {partition:?} {n} records");
                        assert_eq!(copied.finish(), want);
                        assert_eq!(BatchBody::reopen(&rp.api, want.clone(), n).finish(), want);
                        assert_eq!(
                            build_batch_request(&rp, "t", partition, records.iter().copied()).body,
                            want
                        );
                        if n > 0 {
                            let envelope_and_separators = batch_envelope_len(&rp.api) + (n - 1) * BATCH_SEPARATOR_LEN;
                            let sizes: usize = records
                                .iter()
                                .map(|(k, h, m)| record_len(&rp, *k, h, partition, m.len()))
                                .sum();
                            assert_eq!(want.len(), envelope_and_separators + sizes);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_reopened_body_takes_more_records() {
        for api in [Api::V2, v3()] {
            let rp = proxy(api.clone(), Format::Binary);
            let mut first = BatchBody::new(&api);
            first.push(&rp, None, b"", None, b"a");
            let mut more = BatchBody::reopen(&api, first.finish(), 1);
            more.push(&rp, Some(b"k"), b"", None, b"b");
            let records: [TestRecord; 2] = [(None, b"", b"a"), (Some(b"k"), b"", b"b")];
            assert_eq!(more.finish(), whole_batch_body(&rp, None, &records), "{api:?}");
        }
    }

    #[test]
    fn probe_requests() {
        let mut rp = proxy(Api::V2, Format::Binary);
        rp.path_prefix = "/kafka".into();
        rp.headers = vec![("authorization".into(), "Bearer x".into())];
        let r = build_probe_request(&rp);
        assert!(r.body.is_empty());
        let h: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            h,
            vec![
                (":method", "GET"),
                (":path", "/kafka/topics"),
                (":authority", "rest:8082"),
                (":scheme", "http"),
                ("accept", "application/vnd.kafka.v2+json"),
                ("authorization", "Bearer x"),
            ]
        );
        let r = build_probe_request(&proxy(v3(), Format::Json));
        assert!(r.headers.contains(&(":path".into(), "/v3/clusters/lkc-abc".into())));
        assert!(r.headers.contains(&("accept".into(), "application/json".into())));
    }

    #[test]
    fn paths_are_percent_encoded() {
        let mut rp = proxy(v3(), Format::Binary);
        rp.path_prefix = "/p".into();
        assert_eq!(path(&rp, "a.b_c-d"), "/p/v3/clusters/lkc-abc/topics/a.b_c-d/records");
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
