//! Message shaping without a script language: what becomes the Kafka record value (`message`)
//! and where the record key comes from besides `key_query_arg` (`key_header`,
//! `key_body_field`).
//!
//! Kong Enterprise reshapes its message with Lua (`message_by_lua_functions`, 3.10+: each
//! function gets Kong's message and returns any JSON-serializable value;
//! developer.konghq.com/plugins/kafka-upstream/examples/return-fixed-table), and pairs its schema
//! registry with `return function(message) return message.body end`
//! (developer.konghq.com/plugins/kafka-upstream/examples/schema-registry). Lua cannot run in a
//! proxy-wasm filter, so the same uses are declarative here:
//!
//! - `message.mode: "kong"` (default): Kong's message ([`crate::message`]).
//! - `message.mode: "body"`: the record value is the request body: its bytes exactly with the
//!   `binary` format, its JSON (compacted) with the `json` format.
//! - `message.mode: "template"`: `message.template` is a JSON value copied into every message,
//!   with placeholders `${name}` in its strings replaced by parts of the request. A string that
//!   is exactly one placeholder becomes that part with its JSON type (`"${body_json/qty}"` → `3`);
//!   placeholders inside a longer string are interpolated as text (`"order ${query.id}"`).
//!   `$${` writes a literal `${`. Object keys are literal, and an object's members are written in
//!   the byte order of their keys: the configuration is read into a sorted map, and the order
//!   it was written in could not be kept on Kong anyway, which hands the filter its
//!   configuration cjson-encoded from a Lua table (no key order). The same configuration gives
//!   the same bytes on both hosts.
//!
//! A template is parsed and checked when the configuration is read ([`compile`]): an unknown or
//! malformed placeholder rejects the configuration with its path (`message.template.user.id:
//! unknown placeholder ${usr} …`). It is compiled to a [`Plan`], a list of literal byte runs
//! and value slots, so a request costs writing the literal bytes and each slot's value: no
//! template parsing, and the body is parsed at most once (the same validating minifier Kong's
//! `body_args` costs), only when a placeholder or key reads it.

use std::fmt;

use crate::args;
use crate::json;
use crate::message::{self, HeaderLine, MessageOptions, RequestView};

/// The placeholder names, as the error for an unknown one lists them.
pub const PLACEHOLDERS: &str = "method, uri, path, query, query.NAME, headers, header.NAME, body, body_base64, body_json, body_json/POINTER, kong, received_at, received_at_ms, request_id";

/// What the record value is (`message.mode`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Shape {
    /// Kong's message, shaped by the `forward_*` flags.
    #[default]
    Kong,
    /// The request body (its JSON in the `json` format).
    Body,
    /// A compiled `message.template`.
    Template(Plan),
}

/// The shaping settings: `message` and the keys that are not a query argument.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shaping {
    /// `message.mode` (with its template).
    pub shape: Shape,
    /// `key_header`: the request header whose first value is the record key.
    pub key_header: Option<String>,
    /// `key_body_field`: the JSON pointer (unescaped tokens) of the body field that is the key.
    pub key_body_field: Option<Vec<String>>,
}

impl Shaping {
    /// Whether building the record (value or key) reads the request body, given the
    /// `forward_*` flags Kong's message uses.
    pub fn needs_body(&self, kong: &MessageOptions) -> bool {
        let value = match &self.shape {
            Shape::Kong => kong.forward_body,
            Shape::Body => true,
            Shape::Template(plan) => plan.reads_body(kong),
        };
        value || self.key_body_field.is_some()
    }

    /// Whether the body must be parsed as JSON (a `body_json` placeholder or `key_body_field`).
    pub fn needs_body_json(&self) -> bool {
        let template = matches!(&self.shape, Shape::Template(plan) if plan.reads(|s| matches!(s, Source::BodyJson(_))));
        template || self.key_body_field.is_some()
    }

    /// Whether the message uses the time the request was received.
    pub fn needs_received_at(&self) -> bool {
        matches!(&self.shape, Shape::Template(plan) if plan.reads(|s| matches!(s, Source::ReceivedAt | Source::ReceivedAtMs)))
    }

    /// Whether the message uses the request id.
    pub fn needs_request_id(&self) -> bool {
        matches!(&self.shape, Shape::Template(plan) if plan.reads(|s| *s == Source::RequestId))
    }
}

/// One part of the request a placeholder names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `method`: the request method.
    Method,
    /// `uri`: the path with its query string, as received (Kong's `uri`).
    Uri,
    /// `path`: the path without the query string.
    Path,
    /// `query`: every query argument as an object (Kong's `uri_args`).
    Query,
    /// `query.NAME`: the first value of the argument (percent-decoded), `true` when it has no `=`.
    QueryArg(Vec<u8>),
    /// `headers`: every header as an object (Kong's `headers`).
    Headers,
    /// `header.NAME`: the first value of the header (any case); `host` falls back to `:authority`.
    Header(String),
    /// `body`: the body as text (invalid UTF-8 replaced by U+FFFD).
    Body,
    /// `body_base64`: the body base64-encoded.
    BodyBase64,
    /// `body_json` (`None`) or `body_json/POINTER`: the body's JSON, or the value the pointer
    /// designates in it.
    BodyJson(Option<Vec<String>>),
    /// `kong`: Kong's message as the `forward_*` flags shape it.
    Kong,
    /// `received_at`: when the filter got the request headers, RFC 3339 UTC with milliseconds.
    ReceivedAt,
    /// `received_at_ms`: the same instant in milliseconds since the Unix epoch.
    ReceivedAtMs,
    /// `request_id`: the request's id (the `x-request-id` header, else Kong's `$request_id`).
    RequestId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// Bytes copied as they are.
    Literal(Vec<u8>),
    /// A value with its JSON type.
    Whole(Source),
    /// A value written as string content (between quotes the literals provide).
    InString(Source),
}

/// A compiled template: literal runs and value slots, in output order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    ops: Vec<Op>,
}

impl Plan {
    fn reads(&self, mut pick: impl FnMut(&Source) -> bool) -> bool {
        self.ops.iter().any(|op| match op {
            Op::Whole(s) | Op::InString(s) => pick(s),
            Op::Literal(_) => false,
        })
    }

    fn reads_body(&self, kong: &MessageOptions) -> bool {
        self.reads(|s| match s {
            Source::Body | Source::BodyBase64 | Source::BodyJson(_) => true,
            Source::Kong => kong.forward_body,
            _ => false,
        })
    }

    /// How many slots and literal runs the plan has (literal runs between two slots are merged
    /// at compile time).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the plan writes nothing (never: a template is at least one JSON value).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// What a request brings besides its [`RequestView`].
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// When the filter got the request headers, ms since the Unix epoch (the host clock).
    pub received_at_ms: u64,
    /// The request id, when the request has one.
    pub request_id: Option<&'a [u8]>,
    /// The body's JSON, compacted ([`body_json`]); `None` when it is not JSON or not needed.
    pub body_json: Option<&'a str>,
    /// The `forward_*` flags, for the `kong` placeholder.
    pub kong: &'a MessageOptions,
}

/// The body as compact JSON when it is a JSON document (any Content-Type), else `None`.
pub fn body_json(body: &[u8]) -> Option<String> {
    let text = json::as_utf8(body)?;
    let mut out = Vec::new();
    json::write_compact(&mut out, text)?;
    String::from_utf8(out).ok()
}

/// The value of `key_body_field` in the compacted body: a string's text, any other value's
/// JSON text; `None` for a missing field, `null` or an empty string.
pub fn body_field_key(doc: &str, pointer: &[String]) -> Option<Vec<u8>> {
    let value = json::pointer(doc, pointer)?;
    let bytes = if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        if inner.contains('\\') {
            // Read as a `Value` from bytes: the parser the configuration already links, no typed
            // `String` visitor (see `json::key_is`).
            match serde_json::from_slice(value.as_bytes()).ok()? {
                serde_json::Value::String(s) => s.into_bytes(),
                _ => return None,
            }
        } else {
            inner.as_bytes().to_vec()
        }
    } else if value == "null" {
        return None;
    } else {
        value.as_bytes().to_vec()
    };
    (!bytes.is_empty()).then_some(bytes)
}

/// The first value of header `name` (any case), the record key of `key_header`; `None` when
/// absent or empty.
pub fn header_key<'h>(name: &str, mut headers: impl Iterator<Item = (&'h str, &'h [u8])>) -> Option<Vec<u8>> {
    let (_, value) = headers.find(|(n, _)| n.eq_ignore_ascii_case(name))?;
    (!value.is_empty()).then(|| value.to_vec())
}

// ---------------------------------------------------------------------------------------------
// Compiling.

/// A placeholder or template error, without its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError(String);

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Compiles the template `value` found at `path` (e.g. `message.template`); every bad string is
/// reported as `{path}.{member…}: {problem}`, and `None` is returned when there was one.
pub fn compile(value: &serde_json::Value, path: &str, errors: &mut Vec<String>) -> Option<Plan> {
    let before = errors.len();
    let mut builder = Builder { ops: Vec::new() };
    builder.value(value, path, errors);
    (errors.len() == before).then_some(Plan { ops: builder.ops })
}

/// Parses a JSON pointer (RFC 6901: empty, or `/`-separated tokens with `~1` for `/` and `~0`
/// for `~`) into its unescaped tokens.
pub fn parse_pointer(pointer: &str) -> Result<Vec<String>, SyntaxError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(SyntaxError(format!(
            "JSON pointer {pointer:?} must be empty or start with '/'"
        )));
    };
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                match c {
                    '~' => match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => {
                            return Err(SyntaxError(format!(
                                "JSON pointer {pointer:?}: '~' must be followed by 0 or 1"
                            )))
                        }
                    },
                    c => out.push(c),
                }
            }
            Ok(out)
        })
        .collect()
}

/// Whether `pointer` is a non-empty JSON pointer (what `key_body_field` accepts).
pub fn is_field_pointer(pointer: &str) -> bool {
    !pointer.is_empty() && parse_pointer(pointer).is_ok()
}

/// The JSON Schema pattern equivalent to [`is_field_pointer`].
pub const FIELD_POINTER_PATTERN: &str = "^(/([^~]|~[01])*)+$";

/// One piece of a template string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Slot(Source),
}

/// Splits a template string into text and placeholders.
fn pieces(s: &str) -> Result<Vec<Piece>, SyntaxError> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            text.push_str("${");
            rest = escaped;
        } else if let Some(inner) = after.strip_prefix('{') {
            let Some(close) = inner.find('}') else {
                return Err(SyntaxError(format!(
                    "unterminated placeholder ${{{inner}: a '}}' is missing"
                )));
            };
            if !text.is_empty() {
                out.push(Piece::Text(std::mem::take(&mut text)));
            }
            out.push(Piece::Slot(source(&inner[..close])?));
            rest = &inner[close + 1..];
        } else {
            text.push('$');
            rest = after;
        }
    }
    text.push_str(rest);
    if !text.is_empty() || out.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// The source a placeholder's name designates.
fn source(name: &str) -> Result<Source, SyntaxError> {
    let unknown = || {
        SyntaxError(format!(
            "unknown placeholder ${{{name}}} (expected one of {PLACEHOLDERS}; write $${{ for a literal ${{)"
        ))
    };
    Ok(match name {
        "method" => Source::Method,
        "uri" => Source::Uri,
        "path" => Source::Path,
        "query" => Source::Query,
        "headers" => Source::Headers,
        "body" => Source::Body,
        "body_base64" => Source::BodyBase64,
        "body_json" => Source::BodyJson(None),
        "kong" => Source::Kong,
        "received_at" => Source::ReceivedAt,
        "received_at_ms" => Source::ReceivedAtMs,
        "request_id" => Source::RequestId,
        _ => {
            if let Some(arg) = name.strip_prefix("query.") {
                if arg.is_empty() {
                    return Err(SyntaxError(format!("placeholder ${{{name}}} names no query argument")));
                }
                Source::QueryArg(arg.as_bytes().to_vec())
            } else if let Some(header) = name.strip_prefix("header.") {
                if header.is_empty() || header.starts_with(':') {
                    return Err(SyntaxError(format!(
                        "placeholder ${{{name}}} must name a header (not empty, not a pseudo-header)"
                    )));
                }
                Source::Header(header.to_ascii_lowercase())
            } else if let Some(pointer) = name.strip_prefix("body_json") {
                if !pointer.starts_with('/') {
                    return Err(unknown());
                }
                Source::BodyJson(Some(
                    parse_pointer(pointer).map_err(|e| SyntaxError(format!("placeholder ${{{name}}}: {e}")))?,
                ))
            } else {
                return Err(unknown());
            }
        }
    })
}

struct Builder {
    ops: Vec<Op>,
}

impl Builder {
    fn literal(&mut self, bytes: &[u8]) {
        if let Some(Op::Literal(last)) = self.ops.last_mut() {
            last.extend_from_slice(bytes);
        } else {
            self.ops.push(Op::Literal(bytes.to_vec()));
        }
    }

    fn value(&mut self, value: &serde_json::Value, path: &str, errors: &mut Vec<String>) {
        use serde_json::Value;
        match value {
            // The text serde_json's compact writer gives (its numbers are finite; `Number`'s
            // `Display` is the same `itoa`/`zmij` formatting), without linking that writer.
            Value::Null => self.literal(b"null"),
            Value::Bool(b) => self.literal(if *b { b"true" } else { b"false" }),
            Value::Number(n) => self.literal(n.to_string().as_bytes()),
            Value::String(s) => match pieces(s) {
                Err(e) => errors.push(format!("{path}: {e}")),
                Ok(pieces) => self.string(pieces),
            },
            Value::Array(items) => {
                self.literal(b"[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.literal(b",");
                    }
                    self.value(item, &format!("{path}[{i}]"), errors);
                }
                self.literal(b"]");
            }
            Value::Object(members) => {
                self.literal(b"{");
                for (i, (key, member)) in members.iter().enumerate() {
                    let mut text = Vec::new();
                    if i > 0 {
                        text.push(b',');
                    }
                    json::write_str(&mut text, key);
                    text.push(b':');
                    self.literal(&text);
                    self.value(member, &format!("{path}.{key}"), errors);
                }
                self.literal(b"}");
            }
        }
    }

    fn string(&mut self, pieces: Vec<Piece>) {
        if let [Piece::Slot(_)] = pieces.as_slice() {
            if let Some(Piece::Slot(source)) = pieces.into_iter().next() {
                self.ops.push(Op::Whole(source));
            }
            return;
        }
        self.literal(b"\"");
        for piece in pieces {
            match piece {
                Piece::Text(text) => {
                    let mut escaped = Vec::new();
                    json::write_escaped(&mut escaped, text.as_bytes());
                    self.literal(&escaped);
                }
                Piece::Slot(source) => self.ops.push(Op::InString(source)),
            }
        }
        self.literal(b"\"");
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering.

/// Writes the message `plan` makes of `req` (always one valid JSON value).
pub fn render<H: HeaderLine>(plan: &Plan, req: &RequestView<'_, H>, facts: &Facts<'_>) -> Vec<u8> {
    let literal: usize = plan
        .ops
        .iter()
        .map(|op| match op {
            Op::Literal(bytes) => bytes.len(),
            _ => 32,
        })
        .sum();
    let mut out = Vec::with_capacity(literal);
    let mut scratch = Vec::new();
    let mut query = Query {
        path: req.path,
        args: None,
    };
    for op in &plan.ops {
        match op {
            Op::Literal(bytes) => out.extend_from_slice(bytes),
            Op::Whole(source) => write_whole(&mut out, source, req, &mut query, facts),
            Op::InString(source) => write_in_string(&mut out, &mut scratch, source, req, &mut query, facts),
        }
    }
    out
}

/// The query arguments, parsed at the first slot that reads them and kept for the others.
struct Query<'p> {
    path: &'p [u8],
    args: Option<Vec<args::Arg<'p>>>,
}

impl<'p> Query<'p> {
    fn args(&mut self) -> &[args::Arg<'p>] {
        let path = self.path;
        self.args
            .get_or_insert_with(|| args::parse(args::query_of(path), args::MAX_ARGS))
    }

    /// The first value of argument `name`: `Some(None)` for an argument without `=`.
    fn first(&mut self, name: &[u8]) -> Option<Option<&[u8]>> {
        self.args().iter().find(|a| *a.key == *name).map(|a| a.value.as_deref())
    }
}

fn header_value<'a, H: HeaderLine>(req: &RequestView<'a, H>, name: &str) -> Option<&'a [u8]> {
    req.headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value())
        .or_else(|| if name == "host" { req.authority } else { None })
}

fn path_only(path: &[u8]) -> &[u8] {
    path.split(|&b| b == b'?').next().unwrap_or_default()
}

fn write_whole<'p, H: HeaderLine>(
    out: &mut Vec<u8>,
    source: &Source,
    req: &RequestView<'p, H>,
    query: &mut Query<'p>,
    facts: &Facts<'_>,
) {
    let null = |out: &mut Vec<u8>| out.extend_from_slice(b"null");
    match source {
        Source::Method => json::write_str(out, req.method),
        Source::Uri => json::write_str_lossy(out, req.path),
        Source::Path => json::write_str_lossy(out, path_only(req.path)),
        Source::Query => args::write_object(out, query.args()),
        Source::QueryArg(name) => match query.first(name) {
            Some(Some(value)) => json::write_str_lossy(out, value),
            Some(None) => out.extend_from_slice(b"true"),
            None => null(out),
        },
        Source::Headers => message::write_headers(out, req),
        Source::Header(name) => match header_value(req, name) {
            Some(value) => json::write_str_lossy(out, value),
            None => null(out),
        },
        Source::Body => json::write_str_lossy(out, req.body),
        Source::BodyBase64 => json::write_base64(out, req.body),
        Source::BodyJson(pointer) => match json_value(facts, pointer.as_deref()) {
            Some(value) => out.extend_from_slice(value.as_bytes()),
            None => null(out),
        },
        Source::Kong => message::write_message(out, facts.kong, req),
        Source::ReceivedAt => {
            out.push(b'"');
            out.extend_from_slice(rfc3339_ms(facts.received_at_ms).as_bytes());
            out.push(b'"');
        }
        Source::ReceivedAtMs => out.extend_from_slice(facts.received_at_ms.to_string().as_bytes()),
        Source::RequestId => match facts.request_id {
            Some(id) => json::write_str_lossy(out, id),
            None => null(out),
        },
    }
}

fn json_value<'a>(facts: &Facts<'a>, pointer: Option<&[String]>) -> Option<&'a str> {
    let doc = facts.body_json?;
    match pointer {
        None => Some(doc),
        Some(tokens) => json::pointer(doc, tokens),
    }
}

/// Writes `source` as string content: strings' text escaped, other values their JSON text
/// escaped, nothing for a missing value.
fn write_in_string<'p, H: HeaderLine>(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    source: &Source,
    req: &RequestView<'p, H>,
    query: &mut Query<'p>,
    facts: &Facts<'_>,
) {
    let text = |out: &mut Vec<u8>, bytes: &[u8]| match json::as_utf8(bytes) {
        Some(s) => json::write_escaped(out, s.as_bytes()),
        None => json::write_escaped(out, String::from_utf8_lossy(bytes).as_bytes()),
    };
    match source {
        Source::Method => text(out, req.method.as_bytes()),
        Source::Uri => text(out, req.path),
        Source::Path => text(out, path_only(req.path)),
        Source::QueryArg(name) => match query.first(name) {
            Some(Some(value)) => text(out, value),
            Some(None) => out.extend_from_slice(b"true"),
            None => {}
        },
        Source::Header(name) => {
            if let Some(value) = header_value(req, name) {
                text(out, value);
            }
        }
        Source::Body => text(out, req.body),
        Source::BodyBase64 => {
            // Base64 needs no escaping: the quoted form without its quotes.
            scratch.clear();
            json::write_base64(scratch, req.body);
            out.extend_from_slice(&scratch[1..scratch.len() - 1]);
        }
        Source::BodyJson(pointer) => match json_value(facts, pointer.as_deref()) {
            // A JSON string's text is already escaped: copied between the template's quotes.
            Some(value) if value.starts_with('"') => out.extend_from_slice(&value.as_bytes()[1..value.len() - 1]),
            Some(value) => json::write_escaped(out, value.as_bytes()),
            None => {}
        },
        Source::ReceivedAt => out.extend_from_slice(rfc3339_ms(facts.received_at_ms).as_bytes()),
        Source::ReceivedAtMs => out.extend_from_slice(facts.received_at_ms.to_string().as_bytes()),
        Source::RequestId => {
            if let Some(id) = facts.request_id {
                text(out, id);
            }
        }
        Source::Query | Source::Headers | Source::Kong => {
            scratch.clear();
            write_whole(scratch, source, req, query, facts);
            json::write_escaped(out, &scratch[..]);
        }
    }
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds, `2026-12-06T17:12:48.123Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// The proleptic Gregorian date of day `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, chrono-compatible algorithms, public domain).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn plan(template: Value) -> Plan {
        let mut errors = Vec::new();
        let plan = compile(&template, "message.template", &mut errors);
        assert_eq!(errors, Vec::<String>::new());
        plan.unwrap()
    }

    fn errors(template: Value) -> Vec<String> {
        let mut errors = Vec::new();
        assert!(compile(&template, "message.template", &mut errors).is_none());
        errors
    }

    const HEADERS: &[(&str, &str)] = &[
        (":authority", "gw.example"),
        (":method", "POST"),
        (":path", "/orders/7?id=42&flag&q=a%20b"),
        ("content-type", "application/json"),
        ("X-Tenant", "acme"),
        ("x-request-id", "rid-1"),
    ];
    const BODY: &str = r#"{"user": {"id": "u-1", "tier": 3, "tags": ["a", "b\"c"]}, "ok": true, "a/b": 1, "m~n": 2}"#;

    fn render_with(template: Value, headers: &[(&str, &str)], body: &str, kong: &MessageOptions) -> String {
        let plan = plan(template);
        let hs: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        let path = headers.iter().find(|(k, _)| *k == ":path").map_or("/", |(_, v)| *v);
        let req = RequestView {
            method: "POST",
            path: path.as_bytes(),
            authority: Some(b"gw.example"),
            headers: &hs,
            body: body.as_bytes(),
        };
        let doc = body_json(body.as_bytes());
        let facts = Facts {
            received_at_ms: 1_796_577_168_123,
            request_id: Some(b"rid-1"),
            body_json: doc.as_deref(),
            kong,
        };
        let out = String::from_utf8(render(&plan, &req, &facts)).unwrap();
        serde_json::from_str::<Value>(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
        out
    }

    fn render_one(template: Value) -> String {
        render_with(template, HEADERS, BODY, &MessageOptions::default())
    }

    /// A template's literals are the text serde_json's compact writer gives them (the template
    /// writes `null`, booleans and `Number`'s `Display` itself).
    #[test]
    fn literals_are_serde_json_compact_text() {
        let literals = json!([
            null, true, false, 0, -7, 42, i64::MIN, u64::MAX, 1.5, -0.0, 0.1, 1e300, -2.5e-8, 123456789.125,
            f64::MAX, f64::MIN_POSITIVE, 5e-324, {"a": [1.0, {"b": null}]}
        ]);
        assert_eq!(render_one(literals.clone()), literals.to_string());
        for literal in literals.as_array().unwrap() {
            assert_eq!(render_one(literal.clone()), literal.to_string());
        }
    }

    #[test]
    fn whole_placeholders_keep_their_json_type() {
        let cases: &[(&str, &str)] = &[
            ("${method}", r#""POST""#),
            ("${uri}", r#""/orders/7?id=42&flag&q=a%20b""#),
            ("${path}", r#""/orders/7""#),
            ("${query}", r#"{"id":"42","flag":true,"q":"a b"}"#),
            ("${query.id}", r#""42""#),
            ("${query.flag}", "true"),
            ("${query.q}", r#""a b""#),
            ("${query.nope}", "null"),
            ("${header.x-tenant}", r#""acme""#),
            ("${header.X-TENANT}", r#""acme""#),
            ("${header.host}", r#""gw.example""#),
            ("${header.nope}", "null"),
            ("${body_json/user/tier}", "3"),
            ("${body_json/user/id}", r#""u-1""#),
            ("${body_json/user/tags}", r#"["a","b\"c"]"#),
            ("${body_json/user/tags/1}", r#""b\"c""#),
            ("${body_json/user/tags/2}", "null"),
            ("${body_json/user/tags/01}", "null"),
            ("${body_json/ok}", "true"),
            ("${body_json/a~1b}", "1"),
            ("${body_json/m~0n}", "2"),
            ("${body_json/user/id/x}", "null"),
            ("${body_json/missing}", "null"),
            ("${received_at}", r#""2026-12-06T17:12:48.123Z""#),
            ("${received_at_ms}", "1796577168123"),
            ("${request_id}", r#""rid-1""#),
            ("${body_base64}", &*format!("\"{}\"", base64_of(BODY))),
        ];
        for (placeholder, want) in cases {
            assert_eq!(render_one(json!(placeholder)), *want, "{placeholder}");
        }
        assert_eq!(render_one(json!("${body}")), serde_json::to_string(BODY).unwrap());
        assert_eq!(
            render_one(json!("${body_json}")),
            r#"{"user":{"id":"u-1","tier":3,"tags":["a","b\"c"]},"ok":true,"a/b":1,"m~n":2}"#
        );
    }

    fn base64_of(text: &str) -> String {
        let mut out = Vec::new();
        json::write_base64(&mut out, text.as_bytes());
        String::from_utf8(out[1..out.len() - 1].to_vec()).unwrap()
    }

    #[test]
    fn embedded_placeholders_are_interpolated_as_text() {
        let cases: &[(&str, &str)] = &[
            ("order ${query.id} of ${header.x-tenant}", r#""order 42 of acme""#),
            ("${method} ${path}", r#""POST /orders/7""#),
            ("tier=${body_json/user/tier}", r#""tier=3""#),
            ("tag=${body_json/user/tags/1}", r#""tag=b\"c""#),
            ("tags=${body_json/user/tags}", r#""tags=[\"a\",\"b\\\"c\"]""#),
            ("q=${query}", r#""q={\"id\":\"42\",\"flag\":true,\"q\":\"a b\"}""#),
            ("[${header.nope}]", r#""[]""#),
            ("flag=${query.flag}", r#""flag=true""#),
            (
                "at ${received_at} (${received_at_ms})",
                r#""at 2026-12-06T17:12:48.123Z (1796577168123)""#,
            ),
            ("id:${request_id}", r#""id:rid-1""#),
            ("cost $5, literal $${method}", r#""cost $5, literal ${method}""#),
            ("$${method}", r#""${method}""#),
            ("", r#""""#),
            ("no placeholder \" \n", r#""no placeholder \" \n""#),
        ];
        for (template, want) in cases {
            assert_eq!(render_one(json!(template)), *want, "{template}");
        }
    }

    #[test]
    fn a_whole_template() {
        let got = render_one(json!({
            "event": "order",
            "version": 2,
            "ratio": 0.5,
            "none": null,
            "user": {"id": "${body_json/user/id}", "tier": "${body_json/user/tier}"},
            "list": ["${query.id}", 1, "x-${header.x-tenant}"],
            "meta": {"method": "${method}", "at": "${received_at_ms}"}
        }));
        assert_eq!(
            got,
            // Members in key order (see the module documentation).
            r#"{"event":"order","list":["42",1,"x-acme"],"meta":{"at":1796577168123,"method":"POST"},"none":null,"ratio":0.5,"user":{"id":"u-1","tier":3},"version":2}"#
        );
    }

    #[test]
    fn kong_placeholder_is_kongs_message() {
        let kong = MessageOptions {
            forward_method: true,
            ..MessageOptions::default()
        };
        let got = render_with(
            json!({"kong": "${kong}", "id": "${request_id}"}),
            HEADERS,
            r#"{"a":1}"#,
            &kong,
        );
        assert_eq!(
            got,
            r#"{"id":"rid-1","kong":{"method":"POST","body":"{\"a\":1}","body_args":{"a":1}}}"#
        );
    }

    #[test]
    fn body_that_is_not_json_gives_null_fields() {
        let got = render_with(
            json!({"a": "${body_json/a}", "all": "${body_json}", "text": "x${body_json/a}y"}),
            HEADERS,
            "a=1",
            &MessageOptions::default(),
        );
        assert_eq!(got, r#"{"a":null,"all":null,"text":"xy"}"#);
    }

    #[test]
    fn literals_are_merged_at_compile_time() {
        // A template without placeholders is one literal run.
        assert_eq!(plan(json!({"a": [1, 2, {"b": "c"}], "d": "e"})).len(), 1);
        // `{"a":` slot `,"b":"x` slot `"}`: two slots, three literal runs.
        let p = plan(json!({"a": "${method}", "b": "x${path}"}));
        assert_eq!(p.len(), 5);
    }

    #[test]
    fn bad_templates_name_the_field() {
        assert_eq!(
            errors(json!({"user": {"id": "${usr}"}})),
            vec![format!(
                "message.template.user.id: unknown placeholder ${{usr}} (expected one of {PLACEHOLDERS}; write $${{ for a literal ${{)"
            )]
        );
        let cases: &[(Value, &str)] = &[
            (
                json!(["ok", "${method"]),
                "message.template[1]: unterminated placeholder ${method: a '}' is missing",
            ),
            (
                json!({"a": "${query.}"}),
                "message.template.a: placeholder ${query.} names no query argument",
            ),
            (
                json!({"a": "${header.:path}"}),
                "message.template.a: placeholder ${header.:path} must name a header (not empty, not a pseudo-header)",
            ),
            (
                json!({"a": "x ${body_json/a~2}"}),
                r#"message.template.a: placeholder ${body_json/a~2}: JSON pointer "/a~2": '~' must be followed by 0 or 1"#,
            ),
        ];
        for (template, want) in cases {
            assert_eq!(errors(template.clone()), vec![want.to_string()], "{template}");
        }
        // Every bad string is reported, in order.
        assert_eq!(errors(json!({"a": "${x}", "b": ["${y}"]})).len(), 2);
        assert!(errors(json!("${body_jsonx}"))[0].starts_with("message.template: unknown placeholder ${body_jsonx}"));
    }

    #[test]
    fn pointers() {
        assert_eq!(parse_pointer("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_pointer("/a~1b/~0/0").unwrap(), vec!["a/b", "~", "0"]);
        assert_eq!(parse_pointer("/").unwrap(), vec![""]);
        assert!(parse_pointer("a").is_err());
        assert!(parse_pointer("/~").is_err());
        assert!(is_field_pointer("/user/id"));
        assert!(!is_field_pointer(""));
        // The JSON Schema pattern says the same.
        let re = |s: &str| {
            // ^(/([^~]|~[01])*)+$ by hand: starts with '/', every '~' followed by 0 or 1.
            s.starts_with('/') && parse_pointer(s).is_ok()
        };
        for p in ["/a", "/a/b", "/~0", "/~1x", "/", "//"] {
            assert!(re(p) && is_field_pointer(p), "{p}");
        }
    }

    #[test]
    fn keys_from_headers_and_body_fields() {
        let hs = [("x-user", &b"u-7"[..]), ("X-Empty", &b""[..])];
        assert_eq!(header_key("x-user", hs.iter().copied()), Some(b"u-7".to_vec()));
        assert_eq!(header_key("X-USER", hs.iter().copied()), Some(b"u-7".to_vec()));
        assert_eq!(header_key("x-empty", hs.iter().copied()), None);
        assert_eq!(header_key("x-none", hs.iter().copied()), None);

        let doc = body_json(br#"{"id": "a\u00e9\"b", "n": 12, "o": {"k": [1]}, "z": null, "e": ""}"#).unwrap();
        let key = |p: &str| body_field_key(&doc, &parse_pointer(p).unwrap());
        assert_eq!(key("/id"), Some("aé\"b".as_bytes().to_vec()));
        assert_eq!(key("/n"), Some(b"12".to_vec()));
        assert_eq!(key("/o"), Some(br#"{"k":[1]}"#.to_vec()));
        assert_eq!(key("/z"), None);
        assert_eq!(key("/e"), None);
        assert_eq!(key("/missing"), None);
    }

    #[test]
    fn needs() {
        let cfg = |mode: Shape, key_body: bool| Shaping {
            shape: mode,
            key_header: None,
            key_body_field: key_body.then(|| vec!["id".to_string()]),
        };
        let no_body = MessageOptions {
            forward_body: false,
            forward_method: true,
            ..MessageOptions::default()
        };
        assert!(!cfg(Shape::Kong, false).needs_body(&no_body));
        assert!(cfg(Shape::Kong, true).needs_body(&no_body));
        assert!(cfg(Shape::Body, false).needs_body(&no_body));
        let t = |v: Value| cfg(Shape::Template(plan(v)), false);
        assert!(!t(json!({"m": "${method}"})).needs_body(&MessageOptions::default()));
        assert!(t(json!("${kong}")).needs_body(&MessageOptions::default()));
        assert!(!t(json!("${kong}")).needs_body(&no_body));
        assert!(t(json!("x${body}")).needs_body(&no_body));
        assert!(t(json!("${body_json/a}")).needs_body_json());
        assert!(!t(json!("${body}")).needs_body_json());
        assert!(t(json!("${request_id}")).needs_request_id());
        assert!(t(json!("${received_at}")).needs_received_at());
        assert!(!t(json!("${method}")).needs_received_at());
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_001), "2000-02-29T00:00:00.001Z");
        assert_eq!(rfc3339_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(1_796_577_168_123), "2026-12-06T17:12:48.123Z");
    }
}
