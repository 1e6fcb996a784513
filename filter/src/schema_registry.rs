//! Confluent Schema Registry: Kong kafka-upstream's `schema_registry.confluent` configuration
//! (Kong Gateway 3.11+, developer.konghq.com/plugins/kafka-upstream/ "Schema registry support",
//! example .../examples/schema-registry/; field names `url`, `authentication.mode` / `.basic
//! {username, password}`, `value_schema` / `key_schema {subject_name, schema_version}` and `ttl`
//! ("The TTL in seconds for the schema registry cache", Kong's Konnect Terraform provider
//! 3.4.2, `gateway_plugin_kafka_upstream`, `config.schema_registry.confluent.ttl`)), and the pure
//! state machine that turns a subject and version into a schema id.
//!
//! The filter does not serialize: it asks the registry for the id of the configured subject's
//! version (`GET {url}/subjects/{subject}/versions/{version}`, Confluent's Schema Registry API,
//! docs.confluent.io/platform/current/schema-registry/develop/api.html) and lets the REST proxy
//! serialize with that id (REST Proxy v2 `application/vnd.kafka.avro.v2+json` /
//! `.jsonschema.v2+json` with `value_schema_id`, v3 `"value": {"schema_id": N, "data": ...}`), so a
//! value that does not match its schema is refused by the REST proxy and nothing is written.
//!
//! [`Resolver`] is driven by the time it is given: [`Resolver::calls_due`] names the lookups to
//! send (none while one is in flight; again after `ttl` seconds, the old id staying in use while
//! the refresh is out; again [`RETRY_AFTER_MS`] after a failure), [`Resolver::on_reply`] takes
//! their answers, and [`Resolver::ids`] says what a record may be sent with now: the ids, or why
//! not yet ([`Unresolved::Pending`]) or not at all ([`Unresolved::Failed`], the registry's own
//! status, error code and message). Nothing is ever sent without its id.
//!
//! Differences from Kong: Kong serializes in the gateway (its Kafka client writes the bytes); here
//! the REST proxy does, so the REST proxy needs the registry too (Confluent REST Proxy's
//! `schema.registry.url`; host-sim's embedded REST proxy serves one on its own listener).
//! `url` is `http://` or `https://host[:port][/path]`; `upstream` (this filter's own) names the
//! Envoy cluster that reaches it (Kong's ngx_wasm_module dispatches to `host:port`, the default).
//! Kong's `ssl_verify` and OAuth2 authentication are not offered.

use serde_json::{Map, Value};

use crate::json;
use crate::schema::{text, DefaultValue, Field, Kind, Member, Rule, Schema};

/// How long a failed lookup is kept before it is tried again.
pub const RETRY_AFTER_MS: u64 = 1_000;
/// The registry's media type (what `Accept` asks for).
pub const SCHEMA_REGISTRY_JSON: &str = "application/vnd.schemaregistry.v1+json";
/// The largest registry answer looked at; a subject version is a few kilobytes.
pub const MAX_REPLY_BYTES: usize = 1 << 20;

/// The schema of a key or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// `key_schema`.
    Key,
    /// `value_schema`.
    Value,
}

/// A registered schema's type (`schemaType`, absent for AVRO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaFormat {
    /// Apache Avro: REST Proxy v2 content type `application/vnd.kafka.avro.v2+json`.
    Avro,
    /// JSON Schema: `application/vnd.kafka.jsonschema.v2+json`.
    JsonSchema,
}

impl SchemaFormat {
    /// The registry's name for it.
    pub fn name(self) -> &'static str {
        match self {
            SchemaFormat::Avro => "AVRO",
            SchemaFormat::JsonSchema => "JSON",
        }
    }

    /// The REST Proxy v2 content type of records in this format.
    pub fn v2_content_type(self) -> &'static str {
        match self {
            SchemaFormat::Avro => "application/vnd.kafka.avro.v2+json",
            SchemaFormat::JsonSchema => "application/vnd.kafka.jsonschema.v2+json",
        }
    }
}

/// A resolved schema: its global id and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaRef {
    /// Global schema id.
    pub id: u32,
    /// Type.
    pub format: SchemaFormat,
}

/// A configured `subject_name` and `schema_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRef {
    /// Subject.
    pub subject: String,
    /// `latest` or a version number.
    pub version: String,
}

/// The typed `schema_registry.confluent` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaRegistryConfig {
    /// Where lookups go: an Envoy cluster name, or `host:port` for Kong.
    pub upstream: String,
    /// `:authority` of lookups (the url's host and port).
    pub authority: String,
    /// `:scheme` of lookups.
    pub scheme: &'static str,
    /// The url's path, without a trailing `/` (empty for none).
    pub path_prefix: String,
    /// The `authorization` header value for basic authentication.
    pub authorization: Option<String>,
    /// `value_schema`.
    pub value: Option<SubjectRef>,
    /// `key_schema`.
    pub key: Option<SubjectRef>,
    /// `ttl` in milliseconds.
    pub ttl_ms: u64,
    /// Lookup timeout in milliseconds.
    pub timeout_ms: u32,
}

/// A registry URL split for a dispatched call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUrl {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `host[:port]` as written.
    pub authority: String,
    /// `host:port`, the port defaulted from the scheme (Kong's dispatch target).
    pub host_port: String,
    /// The path, without a trailing `/`.
    pub path_prefix: String,
}

/// Splits `http(s)://host[:port][/path]`; `None` for anything else (no user info, query or
/// fragment).
pub fn parse_url(url: &str) -> Option<RegistryUrl> {
    let (scheme, rest, default_port) = if let Some(rest) = url.strip_prefix("http://") {
        ("http", rest, 80)
    } else if let Some(rest) = url.strip_prefix("https://") {
        ("https", rest, 443)
    } else {
        return None;
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) || path.contains(['?', '#', ' ']) {
        return None;
    }
    let host_port = match authority.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((host, port)) if !authority.ends_with(']') => {
            if host.is_empty() || port.parse::<u16>().is_err() {
                return None;
            }
            authority.to_string()
        }
        _ => format!("{authority}:{default_port}"),
    };
    Some(RegistryUrl {
        scheme,
        authority: authority.to_string(),
        host_port,
        path_prefix: path.trim_end_matches('/').to_string(),
    })
}

/// The root rule for `schema_registry.confluent.url` (a root rule, so its message carries the
/// field's whole path).
pub(crate) fn url_check(root: &Map<String, Value>) -> Option<String> {
    let url = root
        .member("schema_registry")?
        .member("confluent")?
        .member("url")?
        .as_str()?;
    match parse_url(url) {
        Some(_) => None,
        None => Some(format!(
            "schema_registry.confluent.url: expected http://host[:port][/path] or https://host[:port][/path], got \"{url}\""
        )),
    }
}

/// The root rule: a schema registry needs `rest_proxy.format` `json`, since the REST proxy
/// serializes JSON data (the message as a JSON value) with the schema. With REST API v2, which
/// applies one format to keys and values, a configured key source also needs `key_schema` (REST
/// Proxy refuses keys without a key schema: 42201).
pub(crate) fn format_check(root: &Map<String, Value>) -> Option<String> {
    let confluent = root.member("schema_registry")?.member("confluent")?;
    let rest_proxy = root.member("rest_proxy")?;
    let format = rest_proxy.member("format").and_then(Value::as_str).unwrap_or("binary");
    if format != "json" {
        return Some(
            "schema_registry.confluent: needs rest_proxy.format \"json\" (the REST proxy serializes the message, a JSON value, with the schema)".to_string(),
        );
    }
    let v2 = rest_proxy.member("api").and_then(Value::as_str).unwrap_or("v2") == "v2";
    let key_source = KEY_SOURCES.iter().find(|k| root.member(k).is_some());
    match key_source {
        Some(source) if v2 && confluent.member("key_schema").is_none() => Some(format!(
            "schema_registry.confluent.key_schema: required with REST API v2 when {source} is set (v2 serializes keys with a schema too)"
        )),
        _ => None,
    }
}

const KEY_SOURCES: [&str; 3] = ["key_query_arg", "key_header", "key_body_field"];

/// [`format_check`] as JSON Schema.
pub(crate) fn format_rule_schema() -> Value {
    let no_registry = [
        serde_json::json!({"not": {"required": ["schema_registry"]}}),
        serde_json::json!({"not": {"properties": {"schema_registry": {"required": ["confluent"]}}}}),
    ];
    let mut json_format = no_registry.to_vec();
    json_format.push(serde_json::json!(
        {"properties": {"rest_proxy": {"required": ["format"], "properties": {"format": {"enum": ["json"]}}}}}));
    let mut v2_keys = no_registry.to_vec();
    v2_keys.extend([
        serde_json::json!({"properties": {"rest_proxy": {"required": ["api"], "properties": {"api": {"enum": ["v3"]}}}}}),
        serde_json::json!({"properties": {"schema_registry": {"properties": {"confluent": {"required": ["key_schema"]}}}}}),
        serde_json::json!({"not": {"anyOf": KEY_SOURCES.iter().map(|k| serde_json::json!({"required": [k]})).collect::<Vec<_>>()}}),
    ]);
    serde_json::json!({"allOf": [{"anyOf": json_format}, {"anyOf": v2_keys}]})
}

/// [`url_check`] as JSON Schema.
pub(crate) fn url_rule_schema() -> Value {
    serde_json::json!({"properties": {"schema_registry": {"properties": {"confluent": {"properties": {
        "url": {"pattern": "^https?://[^/@?# ]+(/[^?# ]*)?$"}}}}}}})
}

/// `schema_registry`.
pub(crate) static SCHEMA_REGISTRY: Schema = Schema {
    description: text("Schema registries (Kong kafka-upstream 3.11+): records are sent with the schema id the registry gives for a subject, and the REST proxy serializes them (Avro or JSON Schema)."),
    fields: &[Field {
        name: "confluent",
        kind: Kind::Object(&CONFLUENT),
        required: false,
        default: None,
        description: text("A Confluent Schema Registry."),
    }],
    rules: &[],
};

static CONFLUENT: Schema = Schema {
    description: text("A Confluent Schema Registry."),
    fields: &[
        Field {
            name: "url",
            kind: Kind::String { min_length: 8, max_length: 1024 },
            required: true,
            default: None,
            description: text("The registry's URL, `http://host[:port][/path]` or `https://...`."),
        },
        Field {
            name: "upstream",
            kind: Kind::String { min_length: 1, max_length: 1024 },
            required: false,
            default: None,
            description: text("Where lookups go: the Envoy cluster of the registry; default: the url's host:port (Kong)."),
        },
        Field {
            name: "authentication",
            kind: Kind::Object(&AUTHENTICATION),
            required: false,
            default: None,
            description: text("How the filter authenticates to the registry."),
        },
        Field {
            name: "value_schema",
            kind: Kind::Object(&SUBJECT),
            required: false,
            default: None,
            description: text("The schema of record values: a subject and version of the registry."),
        },
        Field {
            name: "key_schema",
            kind: Kind::Object(&SUBJECT),
            required: false,
            default: None,
            description: text("The schema of record keys: a subject and version of the registry."),
        },
        Field {
            name: "ttl",
            kind: Kind::Integer { minimum: 1, maximum: 86_400 },
            required: false,
            default: Some(DefaultValue::Int(300)),
            description: text("How long a looked-up schema id is used before it is looked up again, in seconds (the old id stays in use until the new answer arrives)."),
        },
        Field {
            name: "timeout",
            kind: Kind::Integer { minimum: 1, maximum: 60_000 },
            required: false,
            default: Some(DefaultValue::Int(5_000)),
            description: text("Lookup timeout in milliseconds."),
        },
    ],
    rules: &[],
};

static AUTHENTICATION: Schema = Schema {
    description: text("How the filter authenticates to the registry."),
    fields: &[
        Field {
            name: "mode",
            kind: Kind::Enum(&["none", "basic"]),
            required: false,
            default: Some(DefaultValue::Str("none")),
            description: text(
                "`none`, or `basic` (HTTP basic authentication with `basic.username` and `basic.password`).",
            ),
        },
        Field {
            name: "basic",
            kind: Kind::Object(&BASIC),
            required: false,
            default: None,
            description: text("Basic authentication credentials; required when `mode` is `basic`."),
        },
    ],
    rules: &[Rule::RequiredWhen {
        field: "basic",
        when: "mode",
        equals: "basic",
    }],
};

static BASIC: Schema = Schema {
    description: text("Basic authentication credentials."),
    fields: &[
        Field {
            name: "username",
            kind: Kind::String {
                min_length: 1,
                max_length: 1024,
            },
            required: true,
            default: None,
            description: text("User name."),
        },
        Field {
            name: "password",
            kind: Kind::String {
                min_length: 0,
                max_length: 1024,
            },
            required: true,
            default: None,
            description: text("Password."),
        },
    ],
    rules: &[],
};

static SUBJECT: Schema = Schema {
    description: text("A subject and version of the registry."),
    fields: &[
        Field {
            name: "subject_name",
            kind: Kind::String {
                min_length: 1,
                max_length: 1024,
            },
            required: true,
            default: None,
            description: text("The subject, e.g. `orders-value`."),
        },
        Field {
            name: "schema_version",
            kind: Kind::Token {
                // Nine digits at most: every such number is a valid registry version (1 to 2^31-1).
                max_length: 9,
                pattern: text("^(latest|[1-9][0-9]{0,8})$"),
                valid: valid_version,
                expected: "`latest` or a version number from 1",
            },
            required: false,
            default: Some(DefaultValue::Str("latest")),
            description: text("`latest` or a version number."),
        },
    ],
    rules: &[],
};

fn valid_version(v: &str) -> bool {
    v == "latest" || (v.len() <= 9 && !v.starts_with('0') && v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty())
}

/// The typed configuration of a validated root object; `None` without `schema_registry.confluent`.
pub(crate) fn extract(root: &Map<String, Value>) -> Option<SchemaRegistryConfig> {
    let confluent = root.member("schema_registry")?.member("confluent")?.as_object()?;
    let url = parse_url(confluent.member("url")?.as_str()?)?;
    let subject = |name: &str| {
        let obj = confluent.member(name)?.as_object()?;
        Some(SubjectRef {
            subject: obj.member("subject_name")?.as_str()?.to_string(),
            version: obj
                .member("schema_version")
                .and_then(Value::as_str)
                .unwrap_or("latest")
                .to_string(),
        })
    };
    let auth = confluent.member("authentication").and_then(Value::as_object);
    let authorization = auth
        .filter(|a| a.member("mode").and_then(Value::as_str) == Some("basic"))
        .and_then(|a| a.member("basic"))
        .and_then(|b| {
            let user = b.member("username")?.as_str()?;
            let password = b.member("password")?.as_str()?;
            // json::write_base64 writes a JSON string: the base64 text between quotes.
            let mut quoted = Vec::new();
            json::write_base64(&mut quoted, format!("{user}:{password}").as_bytes());
            let text = std::str::from_utf8(&quoted).ok()?.trim_matches('"');
            Some(format!("Basic {text}"))
        });
    let int = |name: &str, default: u64| confluent.member(name).and_then(Value::as_u64).unwrap_or(default);
    Some(SchemaRegistryConfig {
        upstream: confluent
            .member("upstream")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| url.host_port.clone()),
        authority: url.authority,
        scheme: url.scheme,
        path_prefix: url.path_prefix,
        authorization,
        value: subject("value_schema"),
        key: subject("key_schema"),
        ttl_ms: int("ttl", 300).saturating_mul(1000),
        timeout_ms: u32::try_from(int("timeout", 5_000)).unwrap_or(5_000),
    })
}

/// Percent-encodes a path segment (RFC 3986 unreserved characters stay).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One lookup to dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryCall {
    /// Which schema it resolves.
    pub part: Part,
    /// Where to send it.
    pub upstream: String,
    /// The request headers, pseudo-headers first.
    pub headers: Vec<(String, String)>,
    /// Timeout in milliseconds.
    pub timeout_ms: u32,
}

/// Why records cannot be sent with their schema ids now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// A lookup is on its way (or due): wait for it.
    Pending,
    /// The last lookup failed: what went wrong, naming the subject and the registry's answer.
    Failed(String),
}

/// The schema ids a record is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchemaIds {
    /// The key's schema, when `key_schema` is configured.
    pub key: Option<SchemaRef>,
    /// The value's schema, when `value_schema` is configured.
    pub value: Option<SchemaRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Lookup {
    Never,
    Resolved { schema: SchemaRef, at_ms: u64 },
    Failed { error: String, at_ms: u64 },
}

#[derive(Debug, Clone)]
struct Slot {
    subject: SubjectRef,
    lookup: Lookup,
    in_flight: bool,
}

/// Subject and version to schema id, with a TTL cache (see the module notes).
#[derive(Debug, Clone)]
pub struct Resolver {
    config: SchemaRegistryConfig,
    key: Option<Slot>,
    value: Option<Slot>,
}

/// Parses a registry answer to `GET /subjects/{s}/versions/{v}`.
pub fn parse_reply(subject: &SubjectRef, status: u32, body: &[u8]) -> Result<SchemaRef, String> {
    let what = format!(
        "schema registry: subject '{}' version {}",
        subject.subject, subject.version
    );
    let body = &body[..body.len().min(MAX_REPLY_BYTES)];
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if status != 200 {
        let detail = parsed
            .as_ref()
            .and_then(|v| {
                let code = v.member("error_code")?.as_i64()?;
                let message = v.member("message")?.as_str()?;
                Some(format!(" (error_code {code}: {message})"))
            })
            .unwrap_or_default();
        return Err(format!("{what}: the registry answered HTTP {status}{detail}"));
    }
    let obj = parsed
        .as_ref()
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{what}: the registry's answer is not a JSON object"))?;
    let id = obj
        .member("id")
        .and_then(Value::as_u64)
        .filter(|&id| id >= 1 && id <= i32::MAX as u64)
        .ok_or_else(|| format!("{what}: the registry's answer has no valid \"id\""))?;
    let format = match obj.member("schemaType").and_then(Value::as_str) {
        None | Some("AVRO") => SchemaFormat::Avro,
        Some("JSON") => SchemaFormat::JsonSchema,
        Some(other) => {
            return Err(format!(
                "{what}: schema type {other} is not supported (AVRO and JSON are)"
            ))
        }
    };
    Ok(SchemaRef { id: id as u32, format })
}

impl Resolver {
    /// A resolver for `config`, nothing looked up yet.
    pub fn new(config: SchemaRegistryConfig) -> Resolver {
        let slot = |s: &Option<SubjectRef>| {
            s.clone().map(|subject| Slot {
                subject,
                lookup: Lookup::Never,
                in_flight: false,
            })
        };
        Resolver {
            key: slot(&config.key),
            value: slot(&config.value),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SchemaRegistryConfig {
        &self.config
    }

    fn slot_mut(&mut self, part: Part) -> Option<&mut Slot> {
        match part {
            Part::Key => self.key.as_mut(),
            Part::Value => self.value.as_mut(),
        }
    }

    /// The lookup request for `part`'s subject.
    pub fn call(&self, part: Part, subject: &SubjectRef) -> RegistryCall {
        let c = &self.config;
        let path = format!(
            "{}/subjects/{}/versions/{}",
            c.path_prefix,
            encode_segment(&subject.subject),
            encode_segment(&subject.version)
        );
        let mut headers = vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), path),
            (":authority".to_string(), c.authority.clone()),
            (":scheme".to_string(), c.scheme.to_string()),
            ("accept".to_string(), SCHEMA_REGISTRY_JSON.to_string()),
        ];
        if let Some(auth) = &c.authorization {
            headers.push(("authorization".to_string(), auth.clone()));
        }
        RegistryCall {
            part,
            upstream: c.upstream.clone(),
            headers,
            timeout_ms: c.timeout_ms,
        }
    }

    /// The lookups to send now (each marked in flight until [`on_reply`](Self::on_reply)).
    pub fn calls_due(&mut self, now_ms: u64) -> Vec<RegistryCall> {
        let ttl = self.config.ttl_ms;
        let mut due = Vec::new();
        for part in [Part::Key, Part::Value] {
            let Some(slot) = self.slot_mut(part) else { continue };
            let needed = !slot.in_flight
                && match &slot.lookup {
                    Lookup::Never => true,
                    Lookup::Resolved { at_ms, .. } => now_ms.saturating_sub(*at_ms) >= ttl,
                    Lookup::Failed { at_ms, .. } => now_ms.saturating_sub(*at_ms) >= RETRY_AFTER_MS,
                };
            if needed {
                slot.in_flight = true;
                let subject = slot.subject.clone();
                due.push(self.call(part, &subject));
            }
        }
        due
    }

    /// Takes the answer to `part`'s lookup: `Ok((status, body))`, or `Err` with why the call
    /// failed (unreachable, timed out).
    pub fn on_reply(&mut self, part: Part, reply: Result<(u32, &[u8]), &str>, now_ms: u64) {
        let ttl_ms = self.config.ttl_ms;
        let Some(slot) = self.slot_mut(part) else { return };
        slot.in_flight = false;
        let result = match reply {
            Ok((status, body)) => parse_reply(&slot.subject, status, body),
            Err(why) => Err(format!(
                "schema registry: subject '{}' version {}: the registry could not be reached ({why})",
                slot.subject.subject, slot.subject.version
            )),
        };
        slot.lookup = match (result, &slot.lookup) {
            (Ok(schema), _) => Lookup::Resolved { schema, at_ms: now_ms },
            // A failed refresh keeps the id in use rather than stopping every record: the schema
            // an id names never changes, only `latest` might have moved on.
            (Err(_), Lookup::Resolved { schema, .. }) => Lookup::Resolved {
                schema: *schema,
                at_ms: now_ms.saturating_sub(ttl_ms).saturating_add(RETRY_AFTER_MS),
            },
            (Err(error), _) => Lookup::Failed { error, at_ms: now_ms },
        };
    }

    /// The ids records are sent with now, or why they cannot be sent yet.
    pub fn ids(&self) -> Result<SchemaIds, Unresolved> {
        let one = |slot: &Option<Slot>| -> Result<Option<SchemaRef>, Unresolved> {
            match slot {
                None => Ok(None),
                Some(s) => match &s.lookup {
                    Lookup::Resolved { schema, .. } => Ok(Some(*schema)),
                    Lookup::Failed { error, .. } => Err(Unresolved::Failed(error.clone())),
                    Lookup::Never => Err(Unresolved::Pending),
                },
            }
        };
        // A failure explains more than a pending lookup: report it first.
        match (one(&self.key), one(&self.value)) {
            (Ok(key), Ok(value)) => Ok(SchemaIds { key, value }),
            (Err(Unresolved::Failed(e)), _) | (_, Err(Unresolved::Failed(e))) => Err(Unresolved::Failed(e)),
            _ => Err(Unresolved::Pending),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(extra: Value) -> SchemaRegistryConfig {
        let mut confluent =
            json!({"url": "http://registry.local:8081/sr/", "value_schema": {"subject_name": "orders-value"}});
        if let (Some(c), Value::Object(e)) = (confluent.as_object_mut(), extra) {
            c.extend(e);
        }
        let root = json!({"schema_registry": {"confluent": confluent}});
        extract(root.as_object().unwrap()).unwrap()
    }

    #[test]
    fn urls() {
        let u = parse_url("http://registry:8081").unwrap();
        assert_eq!(
            (
                u.scheme,
                u.authority.as_str(),
                u.host_port.as_str(),
                u.path_prefix.as_str()
            ),
            ("http", "registry:8081", "registry:8081", "")
        );
        let u = parse_url("https://sr.example.com/api/").unwrap();
        assert_eq!(
            (u.host_port.as_str(), u.path_prefix.as_str()),
            ("sr.example.com:443", "/api")
        );
        assert_eq!(parse_url("http://127.0.0.1").unwrap().host_port, "127.0.0.1:80");
        for bad in [
            "ftp://x",
            "http://",
            "http://u:p@h",
            "http://h:port",
            "http://h/p?q=1",
            "registry:8081",
        ] {
            assert!(parse_url(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn extract_reads_kongs_fields() {
        let c = config(json!({
            "authentication": {"mode": "basic", "basic": {"username": "user", "password": "password"}},
            "key_schema": {"subject_name": "orders-key", "schema_version": "2"},
            "ttl": 60
        }));
        assert_eq!(c.upstream, "registry.local:8081");
        assert_eq!(c.path_prefix, "/sr");
        assert_eq!(c.authorization.as_deref(), Some("Basic dXNlcjpwYXNzd29yZA=="));
        assert_eq!(
            c.value,
            Some(SubjectRef {
                subject: "orders-value".into(),
                version: "latest".into()
            })
        );
        assert_eq!(
            c.key,
            Some(SubjectRef {
                subject: "orders-key".into(),
                version: "2".into()
            })
        );
        assert_eq!((c.ttl_ms, c.timeout_ms), (60_000, 5_000));
        let c = config(json!({"upstream": "schema_registry", "authentication": {"mode": "none"}}));
        assert_eq!(
            (c.upstream.as_str(), c.authorization.clone()),
            ("schema_registry", None)
        );
        assert!(valid_version("latest") && valid_version("7") && !valid_version("0") && !valid_version("07"));
    }

    #[test]
    fn lookup_request() {
        let mut r = Resolver::new(config(json!({
            "authentication": {"mode": "basic", "basic": {"username": "u", "password": "p"}},
            "value_schema": {"subject_name": "a b/c", "schema_version": "3"}})));
        let calls = r.calls_due(0);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].part, Part::Value);
        assert_eq!(calls[0].upstream, "registry.local:8081");
        assert_eq!(
            calls[0].headers,
            vec![
                (":method".into(), "GET".into()),
                (":path".into(), "/sr/subjects/a%20b%2Fc/versions/3".into()),
                (":authority".into(), "registry.local:8081".into()),
                (":scheme".into(), "http".into()),
                ("accept".into(), SCHEMA_REGISTRY_JSON.into()),
                ("authorization".into(), "Basic dTpw".into()),
            ]
        );
        // In flight: not sent again.
        assert!(r.calls_due(10).is_empty());
    }

    #[test]
    fn replies() {
        let s = SubjectRef {
            subject: "s".into(),
            version: "latest".into(),
        };
        assert_eq!(
            parse_reply(&s, 200, br#"{"subject":"s","version":1,"id":7,"schema":"\"string\""}"#),
            Ok(SchemaRef {
                id: 7,
                format: SchemaFormat::Avro
            })
        );
        assert_eq!(
            parse_reply(&s, 200, br#"{"id":2,"schemaType":"JSON","schema":"{}"}"#),
            Ok(SchemaRef {
                id: 2,
                format: SchemaFormat::JsonSchema
            })
        );
        assert_eq!(
            parse_reply(&s, 404, br#"{"error_code":40401,"message":"Subject 's' not found."}"#),
            Err("schema registry: subject 's' version latest: the registry answered HTTP 404 (error_code 40401: Subject 's' not found.)".into())
        );
        assert!(parse_reply(&s, 200, br#"{"id":0}"#)
            .unwrap_err()
            .contains("no valid \"id\""));
        assert!(parse_reply(&s, 200, b"<html>")
            .unwrap_err()
            .contains("not a JSON object"));
        assert!(parse_reply(&s, 200, br#"{"id":1,"schemaType":"PROTOBUF"}"#)
            .unwrap_err()
            .contains("PROTOBUF"));
        assert!(parse_reply(&s, 503, b"").unwrap_err().ends_with("HTTP 503"));
    }

    #[test]
    fn pending_resolved_ttl_and_failures() {
        let mut r = Resolver::new(config(json!({"ttl": 10, "key_schema": {"subject_name": "k"}})));
        assert_eq!(r.ids(), Err(Unresolved::Pending));
        let calls = r.calls_due(0);
        assert_eq!(
            calls.iter().map(|c| c.part).collect::<Vec<_>>(),
            vec![Part::Key, Part::Value]
        );
        r.on_reply(Part::Value, Ok((200, br#"{"id":3}"#)), 5);
        // The key is still out: nothing may be sent.
        assert_eq!(r.ids(), Err(Unresolved::Pending));
        r.on_reply(Part::Key, Err("connection refused"), 6);
        let Err(Unresolved::Failed(e)) = r.ids() else {
            panic!("expected a failure")
        };
        assert!(e.contains("subject 'k'") && e.contains("connection refused"), "{e}");
        // Retried after RETRY_AFTER_MS, not before.
        assert!(r.calls_due(6 + RETRY_AFTER_MS - 1).is_empty());
        let again = r.calls_due(6 + RETRY_AFTER_MS);
        assert_eq!(again.len(), 1);
        r.on_reply(Part::Key, Ok((200, br#"{"id":4,"schemaType":"JSON"}"#)), 2_000);
        assert_eq!(
            r.ids(),
            Ok(SchemaIds {
                key: Some(SchemaRef {
                    id: 4,
                    format: SchemaFormat::JsonSchema
                }),
                value: Some(SchemaRef {
                    id: 3,
                    format: SchemaFormat::Avro
                }),
            })
        );
        // TTL (10 s) passed for the value: refreshed while its id stays in use.
        assert!(r.calls_due(9_000).is_empty());
        let refresh = r.calls_due(10_005);
        assert_eq!(refresh.iter().map(|c| c.part).collect::<Vec<_>>(), vec![Part::Value]);
        assert!(r.ids().is_ok());
        // A failed refresh keeps the id and retries after RETRY_AFTER_MS.
        r.on_reply(Part::Value, Ok((500, b"")), 10_010);
        assert_eq!(r.ids().map(|ids| ids.value.map(|v| v.id)), Ok(Some(3)));
        assert!(r.calls_due(10_010 + RETRY_AFTER_MS - 1).is_empty());
        assert_eq!(r.calls_due(10_010 + RETRY_AFTER_MS).len(), 1);
        r.on_reply(Part::Value, Ok((200, br#"{"id":9}"#)), 11_100);
        assert_eq!(r.ids().map(|ids| ids.value.map(|v| v.id)), Ok(Some(9)));
    }

    #[test]
    fn configuration_checks() {
        let with = |rest_format: &str, confluent: Value| {
            let cfg = json!({"topic": "t", "rest_proxy": {"upstream": "rp", "format": rest_format},
                             "schema_registry": {"confluent": confluent}});
            crate::config::parse(cfg.to_string().as_bytes())
        };
        let ok = with(
            "json",
            json!({"url": "http://sr:8081", "value_schema": {"subject_name": "t-value"}}),
        )
        .unwrap();
        assert_eq!(ok.schema_registry.map(|c| c.upstream), Some("sr:8081".to_string()));
        let e = with("binary", json!({"url": "http://sr:8081"})).unwrap_err();
        assert!(
            e.message()
                .contains("schema_registry.confluent: needs rest_proxy.format \"json\""),
            "{e}"
        );
        let e = with("json", json!({"url": "sr:8081"})).unwrap_err();
        assert!(
            e.message()
                .contains("schema_registry.confluent.url: expected http://host[:port][/path]"),
            "{e}"
        );
        let e = with("json", json!({"url": "http://sr", "authentication": {"mode": "basic"}})).unwrap_err();
        assert!(
            e.message()
                .contains("schema_registry.confluent.authentication.basic: required"),
            "{e}"
        );
        let e = with(
            "json",
            json!({"url": "http://sr", "value_schema": {"subject_name": "s", "schema_version": "0"}}),
        )
        .unwrap_err();
        assert!(
            e.message()
                .contains("schema_registry.confluent.value_schema.schema_version"),
            "{e}"
        );
        let v2_key = json!({"topic": "t", "rest_proxy": {"upstream": "rp", "format": "json"}, "key_header": "x-k",
                            "schema_registry": {"confluent": {"url": "http://sr", "value_schema": {"subject_name": "v"}}}});
        let e = crate::config::parse(v2_key.to_string().as_bytes()).unwrap_err();
        assert!(
            e.message()
                .contains("key_schema: required with REST API v2 when key_header is set"),
            "{e}"
        );
        let async_cfg = json!({"topic": "t", "rest_proxy": {"upstream": "rp", "format": "json"}, "producer_async": true,
                               "schema_registry": {"confluent": {"url": "http://sr"}}});
        assert!(crate::config::parse(async_cfg.to_string().as_bytes()).is_ok());
        let e = with("json", json!({"url": "http://sr", "ttl": 0})).unwrap_err();
        assert!(e.message().contains("schema_registry.confluent.ttl"), "{e}");
    }

    #[test]
    fn code_and_schema_agree() {
        let validator = jsonschema::draft4::new(&crate::config::json_schema()).unwrap();
        let json_rp = r#""rest_proxy":{"upstream":"u","format":"json"}"#;
        let v3_rp = r#""rest_proxy":{"upstream":"u","format":"json","api":"v3","cluster_id":"c"}"#;
        let samples: Vec<(String, bool)> = vec![
            (format!(r#"{{"topic":"t",{json_rp},"schema_registry":{{"confluent":{{"url":"http://sr:8081"}}}}}}"#), true),
            (format!(r#"{{"topic":"t",{json_rp},"schema_registry":{{}}}}"#), true),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u"},"schema_registry":{"confluent":{"url":"http://sr:8081"}}}"#.into(), false),
            (format!(r#"{{"topic":"t",{json_rp},"schema_registry":{{"confluent":{{"url":"ftp://sr:8081"}}}}}}"#), false),
            (format!(r#"{{"topic":"t",{json_rp},"schema_registry":{{"confluent":{{"url":"https://sr/api"}}}}}}"#), true),
            (format!(r#"{{"topic":"t",{json_rp},"schema_registry":{{"confluent":{{}}}}}}"#), false),
            (format!(r#"{{"topic":"t",{json_rp},"key_query_arg":"k","schema_registry":{{"confluent":{{"url":"http://sr"}}}}}}"#), false),
            (format!(r#"{{"topic":"t",{json_rp},"key_header":"x","schema_registry":{{"confluent":{{"url":"http://sr","key_schema":{{"subject_name":"k"}}}}}}}}"#), true),
            (format!(r#"{{"topic":"t",{v3_rp},"key_body_field":"/id","schema_registry":{{"confluent":{{"url":"http://sr"}}}}}}"#), true),
            (format!(r#"{{"topic":"t",{json_rp},"producer_async":true,"schema_registry":{{"confluent":{{"url":"http://sr"}}}}}}"#), true),
            (format!(r#"{{"topic":"t",{json_rp},"schema_registry":{{"confluent":{{"url":"http://sr","authentication":{{"mode":"basic"}}}}}}}}"#), false),
            (format!(r#"{{"topic":"t",{json_rp},"schema_registry":{{"confluent":{{"url":"http://sr","authentication":{{"mode":"basic","basic":{{"username":"u","password":""}}}}}}}}}}"#), true),
            (format!(r#"{{"topic":"t",{json_rp},"schema_registry":{{"confluent":{{"url":"http://sr","value_schema":{{"subject_name":"v","schema_version":"012"}}}}}}}}"#), false),
            (format!(r#"{{"topic":"t",{json_rp},"schema_registry":{{"confluent":{{"url":"http://sr","value_schema":{{"subject_name":"v","schema_version":"12"}}}}}}}}"#), true),
            (format!(r#"{{"topic":"t",{json_rp},"schema_registry":{{"confluent":{{"url":"http://sr","ttl":86401}}}}}}"#), false),
            (format!(r#"{{"topic":"t",{json_rp},"schema_registry":{{"confluent":{{"url":"http://sr","key_schema":{{"subject_name":"k","schema_version":"1000000000"}}}}}}}}"#), false),
            (format!(r#"{{"topic":"t",{json_rp},"schema_registry":{{"confluent":{{"url":"http://sr","key_schema":{{"subject_name":"k","schema_version":"999999999"}}}}}}}}"#), true),
        ];
        for (text, accepted) in samples {
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(crate::config::parse(text.as_bytes()).is_ok(), accepted, "code: {text}");
            assert_eq!(validator.is_valid(&value), accepted, "schema: {text}");
        }
    }
}
