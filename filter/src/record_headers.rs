//! Kafka record headers: Kong kafka-upstream's `headers` configuration (Kong Gateway 3.15+,
//! developer.konghq.com/plugins/kafka-upstream/examples/record-headers-allowlist/ and
//! .../record-headers-blocklist/; field names, defaults and the `repeated_headers_behavior`
//! values from Kong's schema, Kong/developer.konghq.com
//! `app/_schemas/gateway/plugins/3.16/KafkaUpstream.json`, `config.headers`), plus static record
//! headers (`headers.static_headers`, this filter's own), written as the `headers` member of a
//! Confluent REST Proxy v3 produce record: `[{"name": <string>, "value": <base64 bytes>}]`
//! (confluentinc/kafka-rest `kafka-rest/src/main/java/io/confluent/kafkarest/entities/v3/ProduceRequest.java`,
//! `ProduceRequestHeader`: a string name, a nullable `byte[]` value that Jackson reads as
//! base64).
//!
//! Only v3 carries record headers: Confluent's v2 produce records have no header member, nor do
//! Redpanda's pandaproxy (`partition`, `key`, `value` only) or Karapace's v2, which answers a
//! record with any other member 422 "Invalid request format" (Aiven-Open/karapace
//! `src/karapace/kafka_rest_apis/__init__.py`, `validate_publish_request_format`) and has no v3.
//! So a v2 configuration that would send record headers is rejected (`v2_check`).
//!
//! Which request headers become record headers, in the request's order:
//! - `forward_http_headers_as_record_headers` (default `true`, as in Kong) turns forwarding on;
//!   then `forward_all_by_default: false` (Kong's default, allowlist mode) forwards exactly the
//!   headers named in `include_headers`, and `true` (blocklist mode) forwards every header except
//!   those in `exclude_headers`. Names match ASCII case-insensitively. With Kong's defaults the
//!   allowlist is empty, so nothing is forwarded until `include_headers` names something.
//! - Never forwarded, whatever the lists say: pseudo-headers (`:method`, `:path`, …: the
//!   request line, not headers), and hop-by-hop headers, which describe the client's connection
//!   to the gateway and which every intermediary removes before forwarding (RFC 9110 §7.6.1):
//!   `connection`, every header the `connection` header names, and `keep-alive`,
//!   `proxy-connection`, `te`, `transfer-encoding`, `upgrade`.
//! - Withheld in blocklist mode (forwarded only when `include_headers` names them, in allowlist
//!   mode): credentials, which a record would copy to every consumer of the topic:
//!   `authorization`, `proxy-authorization` (RFC 9110 §11.6.2, §11.7.2), and every header name
//!   configured in `rest_proxy.headers` (the REST call's own credentials, e.g. an API key
//!   header: a client's header of that name is a credential too).
//! - `host` comes from `:authority` when the host's header map has none (Envoy), as in the
//!   message's `headers`; at most [`MAX_HEADERS`] header lines are looked at, as there.
//! - The record header's name is the HTTP name lowercased (Envoy gives lowercase names, Kong's
//!   engine the client's case: lowercasing makes both alike), or its `name_mappings` value
//!   (a key matches case-insensitively; the value is used as written). Its value is the header's
//!   bytes exactly.
//! - `repeated_headers_behavior`: `retain_duplicates` (default) gives one record header per
//!   header line; `take_first` keeps the first line of each name; `concatenate_by_comma` gives
//!   one record header, where the name first appears, whose value is the lines' values joined by
//!   `,` (no space, as the name says).
//! - `static_headers` (name to string value, the value's UTF-8 bytes) follow the forwarded ones
//!   on every record, in name order (a JSON object's order is not kept); a forwarded header whose
//!   record name is a static header's is dropped, so a client cannot counterfeit what the gateway
//!   states.

use serde_json::{Map, Value};

use crate::json;
use crate::message::{HeaderLine, RequestView, MAX_HEADERS};
use crate::schema::{text, DefaultValue, Field, Kind, Member, Schema};

/// What to do with a header that has several lines (Kong's `repeated_headers_behavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeated {
    /// One record header per line (Kong's default).
    RetainDuplicates,
    /// One record header, the values joined by `,`.
    ConcatenateByComma,
    /// The first line only.
    TakeFirst,
}

/// The typed `headers` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeaders {
    /// `forward_http_headers_as_record_headers`.
    pub forward: bool,
    /// `forward_all_by_default`: blocklist mode (`exclude_headers`) instead of allowlist mode
    /// (`include_headers`).
    pub forward_all_by_default: bool,
    /// `include_headers`, lowercased.
    pub include: Vec<String>,
    /// `exclude_headers`, lowercased.
    pub exclude: Vec<String>,
    /// `name_mappings`: (HTTP name lowercased, record header name).
    pub name_mappings: Vec<(String, String)>,
    /// `repeated_headers_behavior`.
    pub repeated: Repeated,
    /// `static_headers`: (record header name, value), in name order.
    pub static_headers: Vec<(String, String)>,
    /// Credential header names (lowercased) withheld in blocklist mode: `authorization`,
    /// `proxy-authorization` and the names of `rest_proxy.headers`.
    pub withheld: Vec<String>,
}

/// Header names RFC 9110 §7.6.1 tells intermediaries to remove before forwarding, besides those
/// the `connection` header names.
pub const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// Credentials withheld in blocklist mode besides the names of `rest_proxy.headers`.
pub const CREDENTIALS: [&str; 2] = ["authorization", "proxy-authorization"];

impl Default for RecordHeaders {
    /// Kong's defaults: forwarding on, allowlist mode with an empty list (nothing forwarded).
    fn default() -> Self {
        RecordHeaders {
            forward: true,
            forward_all_by_default: false,
            include: Vec::new(),
            exclude: Vec::new(),
            name_mappings: Vec::new(),
            repeated: Repeated::RetainDuplicates,
            static_headers: Vec::new(),
            withheld: CREDENTIALS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl RecordHeaders {
    /// Whether some request could get a record header.
    pub fn is_active(&self) -> bool {
        !self.static_headers.is_empty() || (self.forward && (self.forward_all_by_default || !self.include.is_empty()))
    }

    /// The `headers` JSON array of a v3 produce record for `req`
    /// (`[{"name":…,"value":<base64>},…]`), or nothing when the record gets no header.
    pub fn encode<H: HeaderLine>(&self, req: &RequestView<'_, H>) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.is_active() {
            return out;
        }
        let mut first = true;
        let mut push = |out: &mut Vec<u8>, name: &str, value: &[u8]| {
            out.push(if first { b'[' } else { b',' });
            first = false;
            out.extend_from_slice(b"{\"name\":");
            json::write_str(out, name);
            out.extend_from_slice(b",\"value\":");
            json::write_base64(out, value);
            out.push(b'}');
        };
        if self.forward {
            let lines = self.forwarded_lines(req);
            for (i, (name, value)) in lines.iter().enumerate() {
                let record_name = self.record_name(name);
                if self.static_headers.iter().any(|(n, _)| n == record_name) {
                    continue;
                }
                let earlier = lines[..i].iter().any(|(n, _)| n == name);
                match self.repeated {
                    Repeated::RetainDuplicates => push(&mut out, record_name, value),
                    Repeated::TakeFirst if !earlier => push(&mut out, record_name, value),
                    Repeated::ConcatenateByComma if !earlier => {
                        let mut joined = Vec::with_capacity(value.len());
                        for (j, (_, v)) in lines[i..].iter().filter(|(n, _)| n == name).enumerate() {
                            if j > 0 {
                                joined.push(b',');
                            }
                            joined.extend_from_slice(v);
                        }
                        push(&mut out, record_name, &joined);
                    }
                    Repeated::TakeFirst | Repeated::ConcatenateByComma => {}
                }
            }
        }
        for (name, value) in &self.static_headers {
            push(&mut out, name, value.as_bytes());
        }
        if !out.is_empty() {
            out.push(b']');
        }
        out
    }

    /// The request's header lines that are forwarded: (lowercased name, value), in order.
    fn forwarded_lines<'a, H: HeaderLine>(&self, req: &RequestView<'a, H>) -> Vec<(String, &'a [u8])> {
        let mut lines: Vec<(String, &'a [u8])> = Vec::new();
        if !req.headers.iter().any(|h| h.name().eq_ignore_ascii_case("host")) {
            if let Some(authority) = req.authority {
                lines.push(("host".to_string(), authority));
            }
        }
        for header in req.headers.iter() {
            if lines.len() >= MAX_HEADERS {
                break;
            }
            if header.name().starts_with(':') {
                continue;
            }
            lines.push((header.name().to_ascii_lowercase(), header.value()));
        }
        // Names the `connection` header lists are hop-by-hop for this request (RFC 9110 §7.6.1).
        let mut connection_named: Vec<String> = Vec::new();
        for (name, value) in &lines {
            if name == "connection" {
                for option in value.split(|&b| b == b',') {
                    let option = String::from_utf8_lossy(option).trim().to_ascii_lowercase();
                    if !option.is_empty() {
                        connection_named.push(option);
                    }
                }
            }
        }
        lines.retain(|(name, _)| {
            !HOP_BY_HOP.contains(&name.as_str()) && !connection_named.contains(name) && self.selected(name)
        });
        lines
    }

    /// Whether the mode and lists forward the header `name` (lowercased).
    fn selected(&self, name: &str) -> bool {
        let listed = |list: &[String]| list.iter().any(|n| n == name);
        if self.forward_all_by_default {
            !listed(&self.exclude) && !listed(&self.withheld)
        } else {
            listed(&self.include)
        }
    }

    /// The record header name of the HTTP header `name` (lowercased).
    fn record_name<'s>(&'s self, name: &'s str) -> &'s str {
        self.name_mappings
            .iter()
            .find(|(from, _)| from == name)
            .map_or(name, |(_, to)| to.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration: the `headers` object of the field table (see `crate::config::ROOT`).

/// The values of `repeated_headers_behavior`, as Kong's schema lists them.
const REPEATED_VALUES: [&str; 3] = ["retain_duplicates", "concatenate_by_comma", "take_first"];

/// The `headers` object: Kong's fields with Kong's defaults, plus `static_headers`.
pub(crate) static RECORD_HEADERS: Schema = Schema {
    description: text("Kafka record headers (REST API v3 only): request headers forwarded as record headers (Kong kafka-upstream 3.15+), and static record headers."),
    fields: &[
        Field {
            name: "forward_http_headers_as_record_headers",
            kind: Kind::Boolean,
            required: false,
            default: Some(DefaultValue::Bool(true)),
            description: text("Forward request headers as Kafka record headers (which ones: `forward_all_by_default`)."),
        },
        Field {
            name: "forward_all_by_default",
            kind: Kind::Boolean,
            required: false,
            default: Some(DefaultValue::Bool(false)),
            description: text("`false`: forward only the headers in `include_headers`; `true`: forward every header except those in `exclude_headers` (and credentials: authorization, proxy-authorization, the names of `rest_proxy.headers`). Pseudo-headers and hop-by-hop headers are never forwarded."),
        },
        Field {
            name: "include_headers",
            kind: Kind::StringList { item_min_length: 1, item_max_length: 255 },
            required: false,
            default: None,
            description: text("Allowlist of request header names (case-insensitive) forwarded when `forward_all_by_default` is false."),
        },
        Field {
            name: "exclude_headers",
            kind: Kind::StringList { item_min_length: 1, item_max_length: 255 },
            required: false,
            default: None,
            description: text("Blocklist of request header names (case-insensitive) not forwarded when `forward_all_by_default` is true."),
        },
        Field {
            name: "name_mappings",
            kind: Kind::HeaderMap,
            required: false,
            default: None,
            description: text("Request header name (case-insensitive) to the record header name it is forwarded as, e.g. x-request-id to trace-id."),
        },
        Field {
            name: "repeated_headers_behavior",
            kind: Kind::Enum(&REPEATED_VALUES),
            required: false,
            default: Some(DefaultValue::Str("retain_duplicates")),
            description: text("A header with several lines: `retain_duplicates` gives one record header per line, `take_first` the first line only, `concatenate_by_comma` one record header with the values joined by `,`."),
        },
        Field {
            name: "static_headers",
            kind: Kind::HeaderMap,
            required: false,
            default: None,
            description: text("Record headers added to every record (name to value); a forwarded header with the same record name is dropped."),
        },
    ],
    rules: &[],
};

/// The typed `headers` configuration of a validated root object; `rest_proxy_headers` are the
/// (lowercased) names of `rest_proxy.headers`, withheld in blocklist mode.
pub(crate) fn extract(root: &Map<String, Value>, rest_proxy_headers: &[(String, String)]) -> RecordHeaders {
    let defaults = RecordHeaders::default();
    let mut withheld = defaults.withheld.clone();
    for (name, _) in rest_proxy_headers {
        if !withheld.contains(name) {
            withheld.push(name.clone());
        }
    }
    let Some(obj) = root.member("headers").and_then(Value::as_object) else {
        return RecordHeaders { withheld, ..defaults };
    };
    let flag = |name: &str, default: bool| obj.member(name).and_then(Value::as_bool).unwrap_or(default);
    let list = |name: &str| -> Vec<String> {
        obj.member(name)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default()
    };
    let pairs = |name: &str, lowercase_keys: bool| -> Vec<(String, String)> {
        obj.member(name)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        let k = if lowercase_keys {
                            k.to_ascii_lowercase()
                        } else {
                            k.clone()
                        };
                        Some((k, v.as_str()?.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let repeated = match obj.member("repeated_headers_behavior").and_then(Value::as_str) {
        Some("concatenate_by_comma") => Repeated::ConcatenateByComma,
        Some("take_first") => Repeated::TakeFirst,
        _ => Repeated::RetainDuplicates,
    };
    RecordHeaders {
        forward: flag("forward_http_headers_as_record_headers", defaults.forward),
        forward_all_by_default: flag("forward_all_by_default", defaults.forward_all_by_default),
        include: list("include_headers"),
        exclude: list("exclude_headers"),
        name_mappings: pairs("name_mappings", true),
        repeated,
        static_headers: pairs("static_headers", false),
        withheld,
    }
}

/// The error line of a configuration that asks for record headers with REST API v2.
pub const V2_MESSAGE: &str = "headers: REST API v2 cannot carry record headers (Confluent v2, Karapace and Redpanda take none); set rest_proxy.api to \"v3\" or leave headers out";

/// The root rule: a configuration whose `headers` would give a record a header needs
/// `rest_proxy.api` `"v3"`. Values of the wrong type are left to the field checks.
pub(crate) fn v2_check(root: &Map<String, Value>) -> Option<String> {
    let headers = root.member("headers")?.as_object()?;
    let asks = headers
        .member("static_headers")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty())
        || (headers
            .member("forward_http_headers_as_record_headers")
            .and_then(Value::as_bool)
            != Some(false)
            && (headers.member("forward_all_by_default").and_then(Value::as_bool) == Some(true)
                || headers
                    .member("include_headers")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty())));
    let v3 = root
        .member("rest_proxy")
        .and_then(|rp| rp.member("api"))
        .and_then(Value::as_str)
        == Some("v3");
    (asks && !v3).then(|| V2_MESSAGE.to_string())
}

/// [`v2_check`] as JSON Schema (draft 4): `headers` asks for nothing, or `rest_proxy.api` is
/// `"v3"`.
pub(crate) fn v2_rule_schema() -> Value {
    let is =
        |name: &str, value: Value| serde_json::json!({"required": [name], "properties": {name: {"enum": [value]}}});
    let forwards = serde_json::json!({"allOf": [
        {"not": is("forward_http_headers_as_record_headers", Value::Bool(false))},
        {"anyOf": [
            is("forward_all_by_default", Value::Bool(true)),
            {"required": ["include_headers"], "properties": {"include_headers": {"type": "array", "minItems": 1}}}
        ]}
    ]});
    let has_static = serde_json::json!({"required": ["static_headers"], "properties": {"static_headers": {"type": "object", "minProperties": 1}}});
    let asks = serde_json::json!({"required": ["headers"], "properties": {"headers": {"type": "object", "anyOf": [has_static, forwards]}}});
    let v3 = serde_json::json!({"required": ["rest_proxy"], "properties": {"rest_proxy": {"required": ["api"], "properties": {"api": {"enum": ["v3"]}}}}});
    serde_json::json!({"anyOf": [{"not": asks}, v3]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn cfg(patch: &str) -> RecordHeaders {
        let text = format!(
            r#"{{"topic":"t","rest_proxy":{{"upstream":"u","api":"v3","cluster_id":"c","headers":{{"X-Api-Key":"k"}}}},"headers":{patch}}}"#
        );
        crate::config::parse(text.as_bytes())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .record_headers
    }

    /// The encoded headers as (name, decoded value) pairs.
    fn run(c: &RecordHeaders, headers: &[(&str, &str)]) -> Vec<(String, String)> {
        let lines: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        let req = RequestView {
            method: "POST",
            path: b"/",
            authority: Some(b"gw.test"),
            headers: &lines,
            body: b"",
        };
        let out = c.encode(&req);
        if out.is_empty() {
            return Vec::new();
        }
        let v: Value = serde_json::from_slice(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| {
                let value = base64::engine::general_purpose::STANDARD
                    .decode(h["value"].as_str().unwrap())
                    .unwrap();
                (
                    h["name"].as_str().unwrap().to_string(),
                    String::from_utf8(value).unwrap(),
                )
            })
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    const REQUEST: &[(&str, &str)] = &[
        (":method", "POST"),
        (":path", "/orders"),
        (":authority", "gw.test"),
        ("X-Request-Id", "r-1"),
        ("x-tenant-id", "acme"),
        ("authorization", "Bearer secret"),
        ("proxy-authorization", "Basic cHJveHk="),
        ("x-api-key", "client-key"),
        ("connection", "keep-alive, X-Hop"),
        ("keep-alive", "timeout=5"),
        ("x-hop", "1"),
        ("te", "trailers"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("proxy-connection", "close"),
        ("x-tag", "a"),
        ("x-tag", "b"),
    ];

    #[test]
    fn kong_defaults_forward_nothing() {
        let c = RecordHeaders::default();
        assert!(!c.is_active());
        assert!(run(&c, REQUEST).is_empty());
        assert!(run(&cfg("{}"), REQUEST).is_empty());
    }

    #[test]
    fn allowlist_forwards_only_the_listed_headers_renamed() {
        let c = cfg(
            r#"{"include_headers":["x-request-id","X-TENANT-ID","x-missing"],"name_mappings":{"X-Request-ID":"trace-id"}}"#,
        );
        assert_eq!(run(&c, REQUEST), pairs(&[("trace-id", "r-1"), ("x-tenant-id", "acme")]));
    }

    #[test]
    fn blocklist_forwards_the_rest_but_never_hop_by_hop_or_credentials() {
        let c = cfg(r#"{"forward_all_by_default":true,"exclude_headers":["X-Tenant-Id"]}"#);
        assert_eq!(
            run(&c, REQUEST),
            pairs(&[
                ("host", "gw.test"),
                ("x-request-id", "r-1"),
                ("x-tag", "a"),
                ("x-tag", "b")
            ])
        );
    }

    #[test]
    fn an_allowlist_may_name_credentials_but_never_hop_by_hop_or_pseudo_headers() {
        let c = cfg(
            r#"{"include_headers":["authorization","x-api-key","connection","te","x-hop","upgrade",":path","keep-alive"]}"#,
        );
        assert_eq!(
            run(&c, REQUEST),
            pairs(&[("authorization", "Bearer secret"), ("x-api-key", "client-key")])
        );
    }

    #[test]
    fn repeated_headers() {
        let base = r#""include_headers":["x-tag","x-request-id"]"#;
        let retain = cfg(&format!("{{{base}}}"));
        assert_eq!(
            run(&retain, REQUEST),
            pairs(&[("x-request-id", "r-1"), ("x-tag", "a"), ("x-tag", "b")])
        );
        let first = cfg(&format!(r#"{{{base},"repeated_headers_behavior":"take_first"}}"#));
        assert_eq!(run(&first, REQUEST), pairs(&[("x-request-id", "r-1"), ("x-tag", "a")]));
        let joined = cfg(&format!(
            r#"{{{base},"repeated_headers_behavior":"concatenate_by_comma"}}"#
        ));
        assert_eq!(
            run(&joined, REQUEST),
            pairs(&[("x-request-id", "r-1"), ("x-tag", "a,b")])
        );
    }

    #[test]
    fn static_headers_follow_and_win_over_forwarded_ones() {
        let c = cfg(
            r#"{"include_headers":["x-request-id","x-source"],"name_mappings":{"x-request-id":"Trace"},"static_headers":{"x-source":"gateway","Trace":"fixed"}}"#,
        );
        let mut request = REQUEST.to_vec();
        request.push(("x-source", "spoofed"));
        assert_eq!(run(&c, &request), pairs(&[("Trace", "fixed"), ("x-source", "gateway")]));
        // Static headers without any forwarding.
        let only_static = cfg(
            r#"{"forward_http_headers_as_record_headers":false,"forward_all_by_default":true,"static_headers":{"env":"prod"}}"#,
        );
        assert_eq!(run(&only_static, REQUEST), pairs(&[("env", "prod")]));
    }

    #[test]
    fn forwarding_off_sends_nothing() {
        let c = cfg(r#"{"forward_http_headers_as_record_headers":false,"forward_all_by_default":true}"#);
        assert!(!c.is_active());
        assert!(run(&c, REQUEST).is_empty());
    }

    #[test]
    fn values_are_the_header_bytes() {
        let c = cfg(r#"{"include_headers":["x-bin"]}"#);
        let lines = vec![("x-bin".to_string(), vec![0xff, 0x00, b'a'])];
        let req = RequestView {
            method: "GET",
            path: b"/",
            authority: None,
            headers: &lines,
            body: b"",
        };
        assert_eq!(c.encode(&req), br#"[{"name":"x-bin","value":"/wBh"}]"#.to_vec());
    }

    #[test]
    fn host_comes_from_the_authority_when_the_map_has_none() {
        let c = cfg(r#"{"include_headers":["host"]}"#);
        assert_eq!(run(&c, &[(":authority", "gw.test")]), pairs(&[("host", "gw.test")]));
        assert_eq!(run(&c, &[("Host", "h.example")]), pairs(&[("host", "h.example")]));
    }

    #[test]
    fn v2_configurations_asking_for_headers_are_rejected() {
        let v2 = |headers: &str| {
            let text = format!(r#"{{"topic":"t","rest_proxy":{{"upstream":"u"}},"headers":{headers}}}"#);
            crate::config::parse(text.as_bytes())
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        for asks in [
            r#"{"include_headers":["x-a"]}"#,
            r#"{"forward_all_by_default":true}"#,
            r#"{"static_headers":{"a":"b"}}"#,
            r#"{"forward_http_headers_as_record_headers":false,"static_headers":{"a":"b"}}"#,
        ] {
            assert_eq!(v2(asks), Err(V2_MESSAGE.to_string()), "{asks}");
        }
        for harmless in [
            "{}",
            r#"{"include_headers":[]}"#,
            r#"{"include_headers":{}}"#,
            r#"{"forward_http_headers_as_record_headers":false,"forward_all_by_default":true}"#,
            r#"{"static_headers":{}}"#,
        ] {
            assert_eq!(v2(harmless), Ok(()), "{harmless}");
        }
    }
}
