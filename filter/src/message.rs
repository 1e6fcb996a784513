//! The Kafka message: the JSON document Kong's kafka-upstream handler builds from a request
//! (`kong/plugins/kafka-upstream/handler.lua`, `build_kafka_message_from_request`).
//!
//! Members, written in this fixed order and omitted when not forwarded:
//! `method`, `headers`, `uri`, `uri_args`, `body`, `body_args`, `body_base64`.
//! (Kong encodes a Lua table with cjson, whose key order changes from run to run; ours is the
//! order of the handler's source.)
//!
//! - `method` (forward_method): the request method.
//! - `headers` (forward_headers): `kong.request.get_headers()`: names lowercased, a repeated
//!   header as an array of its values, `host` from `:authority` when the host gives no `host`
//!   header, no pseudo-headers, at most [`MAX_HEADERS`] header lines.
//! - `uri`, `uri_args` (forward_uri): the path with its query as received, and
//!   `kong.request.get_query()` (see [`crate::args`]).
//! - `body`, `body_args`, `body_base64` (forward_body): `kong.request.get_body()` decides by the
//!   media type of the first `Content-Type` header (lowercased, cut at `;`, matched as a prefix
//!   in Kong's order: `application/x-www-form-urlencoded`, `application/json`,
//!   `multipart/form-data`):
//!   - form: `body` raw, `body_args` the decoded arguments;
//!   - JSON: `body` raw and `body_args` the document (compacted: whitespace removed, strings and
//!     numbers as sent) when it is an object or an array; any other JSON, or invalid JSON, gives
//!     `body` raw and no `body_args` (Kong: "invalid json body");
//!   - multipart: `body` raw, `body_args` the field map; no `boundary` parameter gives no
//!     `body_args` (Kong: "unable to decode multipart body");
//!   - no or another Content-Type: `body_args` is `{}`, and `body` is raw only when the whole
//!     header is exactly one of [`RAW_CONTENT_TYPES`]; otherwise `body` is base64 and
//!     `body_base64` is `true`.
//!
//!   Where Kong would put a raw body that is not valid UTF-8 into a JSON string (invalid JSON for
//!   every consumer), the body is base64-encoded and `body_base64` is `true` instead.

use crate::args;
use crate::json;
use crate::multipart;

/// How many header lines Kong's `kong.request.get_headers()` returns by default.
pub const MAX_HEADERS: usize = 100;

/// Content-Type header values (compared whole and case-sensitively, as Kong does) whose
/// unparseable bodies are still sent raw rather than base64-encoded.
pub const RAW_CONTENT_TYPES: [&str; 5] = [
    "text/plain",
    "text/html",
    "application/xml",
    "text/xml",
    "application/soap+xml",
];

/// Which parts of the request go into the message (Kong's `forward_*` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageOptions {
    /// Include `method`.
    pub forward_method: bool,
    /// Include `uri` and `uri_args`.
    pub forward_uri: bool,
    /// Include `headers`.
    pub forward_headers: bool,
    /// Include `body`, `body_args` and `body_base64`.
    pub forward_body: bool,
}

impl Default for MessageOptions {
    /// Kong's defaults: only the body is forwarded.
    fn default() -> Self {
        MessageOptions {
            forward_method: false,
            forward_uri: false,
            forward_headers: false,
            forward_body: true,
        }
    }
}

/// One request header line: owned (`(String, Vec<u8>)`) or borrowed (`(&str, &[u8])`, how the
/// filter reads the host's serialized header map in place, without a copy per line).
pub trait HeaderLine {
    /// The header name as the host gave it.
    fn name(&self) -> &str;
    /// The header value.
    fn value(&self) -> &[u8];
}

impl HeaderLine for (String, Vec<u8>) {
    fn name(&self) -> &str {
        &self.0
    }
    fn value(&self) -> &[u8] {
        &self.1
    }
}

impl HeaderLine for (&str, &[u8]) {
    fn name(&self) -> &str {
        self.0
    }
    fn value(&self) -> &[u8] {
        self.1
    }
}

/// A request as the filter saw it, borrowed from what the host handed over.
#[derive(Debug)]
pub struct RequestView<'a, H: HeaderLine = (String, Vec<u8>)> {
    /// The method (`:method`).
    pub method: &'a str,
    /// The path with its query string (`:path`).
    pub path: &'a [u8],
    /// The `:authority` pseudo-header, used as `host` when `headers` has no `host`.
    pub authority: Option<&'a [u8]>,
    /// All request header pairs in the order the host gave them, repeats included;
    /// pseudo-headers (names starting with `:`) are ignored.
    pub headers: &'a [H],
    /// The whole request body.
    pub body: &'a [u8],
}

impl<H: HeaderLine> Clone for RequestView<'_, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<H: HeaderLine> Copy for RequestView<'_, H> {}

impl<'a, H: HeaderLine> RequestView<'a, H> {
    /// The value of the first header named `name` (ASCII case-insensitive), as Kong's
    /// `kong.request.get_header` returns it.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))
            .map(|h| h.value())
    }
}

/// How `kong.request.get_body()` treats a body, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `application/json`.
    Json,
    /// `multipart/form-data`.
    Multipart,
    /// Missing or any other Content-Type ("missing content type" / "unsupported content type").
    Unsupported,
}

impl BodyKind {
    /// Classifies a Content-Type header value as Kong does: the part before the first `;`,
    /// lowercased, must start with one of the supported media types (no whitespace trimming).
    pub fn of(content_type: Option<&[u8]>) -> BodyKind {
        let Some(ct) = content_type else {
            return BodyKind::Unsupported;
        };
        let media = ct.split(|&b| b == b';').next().unwrap_or_default();
        let starts = |prefix: &[u8]| media.len() >= prefix.len() && media[..prefix.len()].eq_ignore_ascii_case(prefix);
        if starts(b"application/x-www-form-urlencoded") {
            BodyKind::Form
        } else if starts(b"application/json") {
            BodyKind::Json
        } else if starts(b"multipart/form-data") {
            BodyKind::Multipart
        } else {
            BodyKind::Unsupported
        }
    }
}

/// Builds the message for `req`: the exact bytes that become the Kafka record value.
pub fn build_message<H: HeaderLine>(opts: &MessageOptions, req: &RequestView<'_, H>) -> Vec<u8> {
    let mut out = Vec::with_capacity(estimate(opts, req));
    write_message(&mut out, opts, req);
    out
}

/// Appends the message for `req` to `out` (see [`build_message`]).
pub fn write_message<H: HeaderLine>(out: &mut Vec<u8>, opts: &MessageOptions, req: &RequestView<'_, H>) {
    out.push(b'{');
    let mut first = true;
    if opts.forward_method {
        json::write_key(out, &mut first, "method");
        json::write_str(out, req.method);
    }
    if opts.forward_headers {
        json::write_key(out, &mut first, "headers");
        write_headers(out, req);
    }
    if opts.forward_uri {
        json::write_key(out, &mut first, "uri");
        json::write_str_lossy(out, req.path);
        json::write_key(out, &mut first, "uri_args");
        let query = args::query_of(req.path);
        args::write_object(out, &args::parse(query, args::MAX_ARGS));
    }
    if opts.forward_body {
        write_body(out, &mut first, req);
    }
    out.push(b'}');
}

/// A capacity that avoids regrowing the output for typical requests.
fn estimate<H: HeaderLine>(opts: &MessageOptions, req: &RequestView<'_, H>) -> usize {
    let mut n = 2;
    if opts.forward_method {
        n += 12 + req.method.len();
    }
    if opts.forward_headers {
        n += 16
            + req
                .headers
                .iter()
                .map(|h| h.name().len() + h.value().len() + 8)
                .sum::<usize>();
    }
    if opts.forward_uri {
        n += 24 + 2 * req.path.len();
    }
    if opts.forward_body {
        // Raw JSON twice (body, body_args) with room for escapes, or base64 (4/3).
        n += 48 + req.body.len() * 5 / 2;
    }
    n
}

/// Writes Kong's `headers` object (see the module documentation).
pub(crate) fn write_headers<H: HeaderLine>(out: &mut Vec<u8>, req: &RequestView<'_, H>) {
    // (lowercased name, value) for every header line Kong would see, in order.
    let mut items: Vec<(std::borrow::Cow<'_, str>, &[u8])> = Vec::with_capacity(req.headers.len().min(MAX_HEADERS) + 1);
    let has_host = req.headers.iter().any(|h| h.name().eq_ignore_ascii_case("host"));
    if !has_host {
        if let Some(authority) = req.authority {
            items.push((std::borrow::Cow::Borrowed("host"), authority));
        }
    }
    for header in req.headers {
        if items.len() >= MAX_HEADERS {
            break;
        }
        let name = header.name();
        if name.starts_with(':') {
            continue;
        }
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(name.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(name)
        };
        items.push((name, header.value()));
    }

    out.push(b'{');
    let mut first = true;
    for (i, (name, value)) in items.iter().enumerate() {
        if items[..i].iter().any(|(n, _)| n == name) {
            continue;
        }
        json::write_key(out, &mut first, name);
        // The line itself, and its repeats after it (a name is not compared with itself).
        let count = 1 + items[i + 1..].iter().filter(|(n, _)| n == name).count();
        if count == 1 {
            json::write_str_lossy(out, value);
        } else {
            out.push(b'[');
            let mut first_value = true;
            for (_, v) in items[i..].iter().filter(|(n, _)| n == name) {
                if !first_value {
                    out.push(b',');
                }
                first_value = false;
                json::write_str_lossy(out, v);
            }
            out.push(b']');
        }
    }
    out.push(b'}');
}

fn write_body<H: HeaderLine>(out: &mut Vec<u8>, first: &mut bool, req: &RequestView<'_, H>) {
    let content_type = req.header("content-type");
    let body = req.body;
    let utf8 = json::as_utf8(body);
    // `body_base64` is set when the body had to be base64-encoded.
    let mut base64 = false;
    match BodyKind::of(content_type) {
        BodyKind::Form => {
            base64 |= write_raw_body(out, first, body, utf8);
            json::write_key(out, first, "body_args");
            args::write_object(out, &args::parse(body, args::MAX_ARGS));
        }
        BodyKind::Json => {
            base64 |= write_raw_body(out, first, body, utf8);
            if let Some(text) = utf8 {
                // Written in place; taken back unless it is an object or an array.
                let mark = out.len();
                json::write_key(out, first, "body_args");
                if !matches!(
                    json::write_compact(out, text),
                    Some(json::Container::Object | json::Container::Array)
                ) {
                    out.truncate(mark);
                }
            }
        }
        BodyKind::Multipart => {
            base64 |= write_raw_body(out, first, body, utf8);
            let fields = content_type
                .and_then(multipart::boundary)
                .and_then(|b| multipart::parse(body, b));
            if let Some(fields) = fields {
                json::write_key(out, first, "body_args");
                multipart::write_object(out, &fields);
            }
        }
        BodyKind::Unsupported => {
            let raw_allowed = content_type.is_some_and(|ct| RAW_CONTENT_TYPES.iter().any(|t| t.as_bytes() == ct));
            if raw_allowed {
                base64 |= write_raw_body(out, first, body, utf8);
            } else {
                json::write_key(out, first, "body");
                json::write_base64(out, body);
                base64 = true;
            }
            json::write_key(out, first, "body_args");
            out.extend_from_slice(b"{}");
        }
    }
    if base64 {
        json::write_key(out, first, "body_base64");
        out.extend_from_slice(b"true");
    }
}

/// Writes `"body":` with the raw body as a string, or as base64 when it is not valid UTF-8;
/// returns whether base64 was used.
fn write_raw_body(out: &mut Vec<u8>, first: &mut bool, body: &[u8], utf8: Option<&str>) -> bool {
    json::write_key(out, first, "body");
    match utf8 {
        Some(text) => {
            json::write_str(out, text);
            false
        }
        None => {
            json::write_base64(out, body);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: MessageOptions = MessageOptions {
        forward_method: true,
        forward_uri: true,
        forward_headers: true,
        forward_body: true,
    };

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn message(opts: &MessageOptions, method: &str, path: &str, hs: &[(&str, &str)], body: &[u8]) -> String {
        let hs = headers(hs);
        let authority = hs.iter().find(|(k, _)| k == ":authority").map(|(_, v)| v.as_slice());
        let req = RequestView {
            method,
            path: path.as_bytes(),
            authority,
            headers: &hs,
            body,
        };
        let out = build_message(opts, &req);
        let text = String::from_utf8(out).expect("message is UTF-8");
        serde_json::from_str::<serde_json::Value>(&text).expect("message is JSON");
        text
    }

    fn body_only(ct: Option<&str>, body: &[u8]) -> String {
        let mut hs = vec![(":method", "POST"), (":path", "/")];
        if let Some(ct) = ct {
            hs.push(("content-type", ct));
        }
        message(&MessageOptions::default(), "POST", "/", &hs, body)
    }

    /// Kong's documented message for `curl localhost:8000/kafka` with every flag on.
    #[test]
    fn kong_doc_get_with_all_flags() {
        let got = message(
            &ALL,
            "GET",
            "/kafka",
            &[
                (":authority", "localhost:8000"),
                (":path", "/kafka"),
                (":method", "GET"),
                (":scheme", "http"),
                ("user-agent", "curl/8.7.1"),
                ("accept", "*/*"),
            ],
            b"",
        );
        assert_eq!(
            got,
            r#"{"method":"GET","headers":{"host":"localhost:8000","user-agent":"curl/8.7.1","accept":"*/*"},"uri":"/kafka","uri_args":{},"body":"","body_args":{},"body_base64":true}"#
        );
        // Same members and values as Kong's example (whose key order is cjson's).
        let kong: serde_json::Value = serde_json::from_str(
            r#"{"body_base64":true,"headers":{"accept":"*/*","host":"localhost:8000","user-agent":"curl/8.7.1"},"uri_args":{},"uri":"/kafka","body_args":{},"body":"","method":"GET"}"#,
        )
        .unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&got).unwrap(), kong);
    }

    /// Kong's documented message with the default flags (body only) for a bodiless request.
    #[test]
    fn kong_doc_default_flags() {
        assert_eq!(body_only(None, b""), r#"{"body":"","body_args":{},"body_base64":true}"#);
    }

    #[test]
    fn every_forward_combination() {
        let hs = [
            (":authority", "h"),
            (":method", "PUT"),
            (":path", "/p?a=1"),
            ("content-type", "application/json"),
        ];
        for bits in 0u8..16 {
            let opts = MessageOptions {
                forward_method: bits & 1 != 0,
                forward_uri: bits & 2 != 0,
                forward_headers: bits & 4 != 0,
                forward_body: bits & 8 != 0,
            };
            let got = message(&opts, "PUT", "/p?a=1", &hs, br#"{"x":1}"#);
            let mut want = Vec::new();
            if opts.forward_method {
                want.push(r#""method":"PUT""#.to_string());
            }
            if opts.forward_headers {
                want.push(r#""headers":{"host":"h","content-type":"application/json"}"#.to_string());
            }
            if opts.forward_uri {
                want.push(r#""uri":"/p?a=1","uri_args":{"a":"1"}"#.to_string());
            }
            if opts.forward_body {
                want.push(r#""body":"{\"x\":1}","body_args":{"x":1}"#.to_string());
            }
            assert_eq!(got, format!("{{{}}}", want.join(",")), "flags {bits:04b}");
        }
    }

    #[test]
    fn headers_like_kong_get_headers() {
        let opts = MessageOptions {
            forward_headers: true,
            forward_body: false,
            ..MessageOptions::default()
        };
        let got = message(
            &opts,
            "GET",
            "/",
            &[
                (":authority", "ignored-when-host-present"),
                ("Host", "example.com"),
                ("X-Multi", "a"),
                ("accept", "*/*"),
                ("x-multi", "b"),
                ("X-MULTI", "c"),
                ("x_under", "u\"q"),
            ],
            b"",
        );
        assert_eq!(
            got,
            r#"{"headers":{"host":"example.com","x-multi":["a","b","c"],"accept":"*/*","x_under":"u\"q"}}"#
        );
    }

    #[test]
    fn headers_capped_at_100_lines() {
        let opts = MessageOptions {
            forward_headers: true,
            forward_body: false,
            ..MessageOptions::default()
        };
        let names: Vec<String> = (0..120).map(|i| format!("x-h{i}")).collect();
        let mut hs: Vec<(&str, &str)> = vec![(":authority", "a")];
        hs.extend(names.iter().map(|n| (n.as_str(), "v")));
        let got = message(&opts, "GET", "/", &hs, b"");
        let v: serde_json::Value = serde_json::from_str(&got).unwrap();
        let map = v["headers"].as_object().unwrap();
        assert_eq!(map.len(), 100);
        assert!(map.contains_key("host"));
        assert!(map.contains_key("x-h98"));
        assert!(!map.contains_key("x-h99"));
    }

    #[test]
    fn invalid_utf8_header_value_is_replaced() {
        let opts = MessageOptions {
            forward_headers: true,
            forward_body: false,
            ..MessageOptions::default()
        };
        let hs = vec![("x-bin".to_string(), b"a\xffb".to_vec())];
        let req = RequestView {
            method: "GET",
            path: b"/",
            authority: None,
            headers: &hs,
            body: b"",
        };
        let out = String::from_utf8(build_message(&opts, &req)).unwrap();
        assert_eq!(out, "{\"headers\":{\"x-bin\":\"a\u{fffd}b\"}}");
    }

    #[test]
    fn uri_and_query_args() {
        let opts = MessageOptions {
            forward_uri: true,
            forward_body: false,
            ..MessageOptions::default()
        };
        let got = message(
            &opts,
            "GET",
            "/test?foo=hello%20world&bar=baz&zzz&blo=&bar=bla&bar",
            &[],
            b"",
        );
        assert_eq!(
            got,
            r#"{"uri":"/test?foo=hello%20world&bar=baz&zzz&blo=&bar=bla&bar","uri_args":{"foo":"hello world","bar":["baz","bla",true],"zzz":true,"blo":""}}"#
        );
    }

    #[test]
    fn content_type_matching() {
        let cases: [(Option<&[u8]>, BodyKind); 12] = [
            (None, BodyKind::Unsupported),
            (Some(b"application/json"), BodyKind::Json),
            (Some(b"Application/JSON; charset=utf-8"), BodyKind::Json),
            (Some(b"application/json-patch+json"), BodyKind::Json),
            (Some(b"application/vnd.api+json"), BodyKind::Unsupported),
            (Some(b" application/json"), BodyKind::Unsupported),
            (Some(b"application/x-www-form-urlencoded"), BodyKind::Form),
            (Some(b"application/x-www-form-urlencoded;charset=UTF-8"), BodyKind::Form),
            (Some(b"multipart/form-data; boundary=x"), BodyKind::Multipart),
            (Some(b"multipart/mixed; boundary=x"), BodyKind::Unsupported),
            (Some(b"text/plain"), BodyKind::Unsupported),
            (Some(b""), BodyKind::Unsupported),
        ];
        for (ct, kind) in cases {
            assert_eq!(BodyKind::of(ct), kind, "{:?}", ct.map(String::from_utf8_lossy));
        }
    }

    #[test]
    fn each_content_type() {
        let cases: [(Option<&str>, &[u8], &str); 17] = [
            (
                Some("application/json"),
                b"{ \"a\": [1, 2.50, \"x\"],\n \"b\": {} }",
                r#"{"body":"{ \"a\": [1, 2.50, \"x\"],\n \"b\": {} }","body_args":{"a":[1,2.50,"x"],"b":{}}}"#,
            ),
            (Some("application/json"), b"[]", r#"{"body":"[]","body_args":[]}"#),
            // Kong: a JSON scalar is "invalid json body": raw body, no body_args.
            (Some("application/json"), b"\"str\"", r#"{"body":"\"str\""}"#),
            (Some("application/json"), b"42", r#"{"body":"42"}"#),
            (Some("application/json"), b"{bad", r#"{"body":"{bad"}"#),
            (Some("application/json"), b"", r#"{"body":""}"#),
            (
                Some("application/x-www-form-urlencoded"),
                b"a=1&b=x+y&a=2&c",
                r#"{"body":"a=1&b=x+y&a=2&c","body_args":{"a":["1","2"],"b":"x y","c":true}}"#,
            ),
            (
                Some("multipart/form-data; boundary=XX"),
                b"--XX\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\nv\r\n--XX--\r\n",
                r#"{"body":"--XX\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\nv\r\n--XX--\r\n","body_args":{"n":"v"}}"#,
            ),
            (Some("multipart/form-data"), b"--XX--", r#"{"body":"--XX--"}"#),
            (Some("text/plain"), b"hello", r#"{"body":"hello","body_args":{}}"#),
            (Some("text/html"), b"<p>", r#"{"body":"<p>","body_args":{}}"#),
            (Some("application/xml"), b"<a/>", r#"{"body":"<a/>","body_args":{}}"#),
            (Some("text/xml"), b"<a/>", r#"{"body":"<a/>","body_args":{}}"#),
            (
                Some("application/soap+xml"),
                b"<s/>",
                r#"{"body":"<s/>","body_args":{}}"#,
            ),
            // Not the whole header exactly: base64, as in Kong.
            (
                Some("text/plain; charset=utf-8"),
                b"hello",
                r#"{"body":"aGVsbG8=","body_args":{},"body_base64":true}"#,
            ),
            (
                Some("application/octet-stream"),
                b"\x00\x01",
                r#"{"body":"AAE=","body_args":{},"body_base64":true}"#,
            ),
            (
                None,
                b"hello",
                r#"{"body":"aGVsbG8=","body_args":{},"body_base64":true}"#,
            ),
        ];
        for (ct, body, want) in cases {
            assert_eq!(body_only(ct, body), want, "content-type {ct:?}");
        }
    }

    #[test]
    fn invalid_utf8_raw_bodies_are_base64() {
        let cases: [(Option<&str>, &str); 4] = [
            (
                Some("text/plain"),
                r#"{"body":"/w==","body_args":{},"body_base64":true}"#,
            ),
            (Some("application/json"), r#"{"body":"/w==","body_base64":true}"#),
            (
                Some("application/x-www-form-urlencoded"),
                "{\"body\":\"/w==\",\"body_args\":{\"\u{fffd}\":true},\"body_base64\":true}",
            ),
            (None, r#"{"body":"/w==","body_args":{},"body_base64":true}"#),
        ];
        for (ct, want) in cases {
            assert_eq!(body_only(ct, b"\xff"), want, "content-type {ct:?}");
        }
    }

    #[test]
    fn content_type_is_the_first_header() {
        let got = message(
            &MessageOptions::default(),
            "POST",
            "/",
            &[("Content-Type", "text/plain"), ("content-type", "application/json")],
            b"{}",
        );
        assert_eq!(got, r#"{"body":"{}","body_args":{}}"#);
    }

    #[test]
    fn large_json_body_round_trips() {
        let doc: String = format!(
            "{{\"items\":[{}]}}",
            (0..200)
                .map(|i| format!("{{\"id\":{i},\"name\":\"n\\u00e9{i}\",\"ok\":true}}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let got = body_only(Some("application/json"), doc.as_bytes());
        let v: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["body"].as_str().unwrap(), doc);
        assert_eq!(v["body_args"], serde_json::from_str::<serde_json::Value>(&doc).unwrap());
    }
}
