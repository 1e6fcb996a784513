//! The filter configuration: one declarative table of fields (`ROOT`) from which both the
//! validator and the JSON Schema (draft 4) shipped as `kafka_upstream.meta.json` are derived,
//! and the typed [`Config`] the rest of the filter uses.
//!
//! The configuration reaches `proxy_on_configure` as JSON text: a JSON object (Envoy's
//! `StringValue`, Kong >= 3.5 with the `.meta.json`, which cjson-encodes the object), or a JSON
//! string whose content is the object's text (Kong without a `.meta.json` passes the configured
//! string as is, and a string-typed config may itself be JSON-quoted). Unknown keys, wrong types,
//! out-of-range values and impossible combinations are rejected, every one found in one pass,
//! each message starting with the field's path, e.g. `rest_proxy.cluster_id: required when
//! rest_proxy.api is "v3"`; an unknown key close to a field's name suggests it (`forward_bdy:
//! unknown field (did you mean `forward_body`?)`), and `null` is named as such, since it is not
//! a way to ask for the default (the schema rejects it too).

use std::fmt;

use serde_json::{Map, Value};

use crate::message::MessageOptions;
use crate::record_headers::{self, RecordHeaders};
use crate::schema::{custom_schema, text, DefaultValue, Field, Kind, Member, Rule, Schema};
use crate::schema_registry::{self, SchemaRegistryConfig};
use crate::template::{self, Shape, Shaping};
use crate::wire::MapTemplate;

/// Kong's schema error when every `forward_*` flag is false.
pub const FORWARD_FLAGS_MESSAGE: &str =
    "at least one of these attributes must be true: forward_method, forward_uri, forward_headers, forward_body";

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The default topic, used when the request names none (and always allowed).
    pub topic: String,
    /// How to reach the Kafka REST proxy.
    pub rest_proxy: RestProxy,
    /// What goes into the message (the `forward_*` flags).
    pub message: MessageOptions,
    /// Query argument holding a comma-separated list of target topics.
    pub topics_query_arg: Option<String>,
    /// Topics a request may name in `topics_query_arg`, besides `topic`.
    pub allowed_topics: Vec<String>,
    /// Query argument whose value becomes the Kafka record key.
    pub key_query_arg: Option<String>,
    /// Fixed partition for every record.
    pub partition: Option<u32>,
    /// Largest accepted request body in bytes; larger ones get 413.
    pub max_body_size: u64,
    /// Add the REST proxy's error code and message to error answers.
    pub return_error_message: bool,
    /// The asynchronous producer (`producer_async` and its limits).
    pub producer: ProducerConfig,
    /// `metrics.prefix`: the prefix of every metric name (default:
    /// [`crate::metrics::default_prefix`] of the root id).
    pub metrics_prefix: Option<String>,
    /// Message shaping (`message`) and the keys from a header or a body field
    /// (`key_header`, `key_body_field`).
    pub shaping: Shaping,

    /// `headers`: Kafka record headers (v3 only), see [`crate::record_headers`].
    pub record_headers: RecordHeaders,

    /// `schema_registry.confluent`, see [`crate::schema_registry`].
    pub schema_registry: Option<SchemaRegistryConfig>,
}

/// The asynchronous producer's settings (Kong's `producer_async*` and `producer_request_*`
/// names). Times are in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// `producer_async`: answer once the message is in the buffer, send in batches.
    pub enabled: bool,
    /// `producer_async_flush_timeout`: the longest a message waits for its batch to fill.
    pub flush_timeout_ms: u32,
    /// `producer_request_limits_messages_per_request`: records per REST request.
    pub messages_per_request: u32,
    /// `producer_request_limits_bytes_per_request`: body bytes per REST request.
    pub bytes_per_request: u32,
    /// `producer_async_buffering_limits_messages_in_memory`: records buffered or in flight.
    pub messages_in_memory: u32,
    /// `producer_request_retries_max_attempts`: sends per record before it is dropped.
    pub max_attempts: u32,
    /// `producer_request_retries_backoff_timeout`: wait before the first retry (doubling).
    pub backoff_ms: u32,
    /// `producer_async_health_failure_threshold`: consecutive failed flushes that make the
    /// REST proxy unhealthy.
    pub failure_threshold: u32,
    /// `producer_async_health_probe_interval`: time between probes while unhealthy.
    pub probe_interval_ms: u32,
    /// `producer_async_health_recovery_threshold`: successful probes or flushes that make it
    /// healthy again.
    pub recovery_threshold: u32,
}

impl Default for ProducerConfig {
    /// The table's defaults.
    fn default() -> Self {
        ProducerConfig {
            enabled: false,
            flush_timeout_ms: 1000,
            messages_per_request: 200,
            bytes_per_request: 1_048_576,
            messages_in_memory: 50_000,
            max_attempts: 10,
            backoff_ms: 100,
            failure_threshold: 3,
            probe_interval_ms: 5000,
            recovery_threshold: 1,
        }
    }
}

/// Where and how the REST proxy is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestProxy {
    /// Envoy cluster name, or `host:port` for Kong.
    pub upstream: String,
    /// `:authority` (Host) of the calls.
    pub authority: String,
    /// `:scheme` of the calls.
    pub scheme: Scheme,
    /// Path prefix: empty, or starting with `/` and not ending with `/`.
    pub path_prefix: String,
    /// REST API version (v3 carries its cluster id).
    pub api: Api,
    /// Record encoding.
    pub format: Format,
    /// Static headers added to every call; names lowercased.
    pub headers: Vec<(String, String)>,
    /// Call timeout in milliseconds.
    pub timeout_ms: u32,
    /// The produce calls' header map with slots for path, content type and content length,
    /// serialized at the first call and kept with this configuration (`crate::rest`'s
    /// `ProduceCall::header_map`); never part of a comparison.
    pub produce_headers: Derived<MapTemplate>,
}

/// A value computed from the rest of a configuration at its first use and kept with it, so once
/// per configuration. It is derived, so it takes no part in comparisons (any two are equal) and
/// a clone starts empty (it is derived again from the clone's own fields, which a test may
/// change).
#[derive(Default)]
pub struct Derived<T>(std::cell::OnceCell<T>);

impl<T> Derived<T> {
    /// The value, computed by `derive` the first time.
    pub fn get_or_init(&self, derive: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(derive)
    }
}

impl<T> Clone for Derived<T> {
    fn clone(&self) -> Self {
        Derived(std::cell::OnceCell::new())
    }
}

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Derived<T> {}

impl<T> fmt::Debug for Derived<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Derived(kept)"
        } else {
            "Derived(empty)"
        })
    }
}

/// The Kafka REST API flavour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Api {
    /// Confluent REST Proxy v2 (also Redpanda's HTTP proxy and Karapace): `POST /topics/{topic}`.
    V2,
    /// Confluent REST Proxy v3: `POST /v3/clusters/{cluster_id}/topics/{topic}/records`.
    V3 {
        /// The Kafka cluster id.
        cluster_id: String,
    },
}

/// How the message is carried in the REST request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Value = the message bytes exactly, key = the key bytes exactly (base64 in the request).
    Binary,
    /// Value embedded as a JSON value (v2 `application/vnd.kafka.json.v2+json`, v3 `JSON`).
    Json,
}

/// `:scheme` of the REST proxy calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS (Kong's host then uses TLS; Envoy's cluster decides on its own).
    Https,
}

impl Scheme {
    /// The `:scheme` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A rejected configuration: every problem found, each naming its field, shown on one line
/// joined by `; `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    errors: Vec<String>,
    message: String,
}

impl ConfigError {
    fn new(errors: Vec<String>) -> ConfigError {
        let message = errors.join("; ");
        ConfigError { errors, message }
    }

    fn one(error: String) -> ConfigError {
        ConfigError::new(vec![error])
    }

    /// The whole message, e.g. `topic: required; rest_proxy.timeout: expected an integer from 1
    /// to 2147483646`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Each problem on its own, in the order found.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------
// The table.

const NAME_MAX: u64 = 255;
const TOPIC_MAX: u64 = 249; // Kafka's limit on topic names
const MS_MAX: i64 = 3_600_000; // one hour, for the producer's durations

/// The whole configuration.
pub(crate) static ROOT: Schema = Schema {
    description: text("kafka-upstream: turn each request into a Kafka message sent through a Kafka REST proxy (Kong kafka-upstream compatible)."),
    fields: &[
        Field {
            name: "topic",
            kind: Kind::String { min_length: 1, max_length: TOPIC_MAX },
            required: true,
            default: None,
            description: text("The Kafka topic to publish to when the request names no topic through `topics_query_arg`."),
        },
        Field {
            name: "rest_proxy",
            kind: Kind::Object(&REST_PROXY),
            required: true,
            default: None,
            description: text("The Kafka REST proxy that produces the records."),
        },
        Field {
            name: "forward_method",
            kind: Kind::Boolean,
            required: false,
            default: Some(DefaultValue::Bool(false)),
            description: text("Include the request method in the message."),
        },
        Field {
            name: "forward_uri",
            kind: Kind::Boolean,
            required: false,
            default: Some(DefaultValue::Bool(false)),
            description: text("Include the request URI and its query arguments in the message."),
        },
        Field {
            name: "forward_headers",
            kind: Kind::Boolean,
            required: false,
            default: Some(DefaultValue::Bool(false)),
            description: text("Include the request headers in the message."),
        },
        Field {
            name: "forward_body",
            kind: Kind::Boolean,
            required: false,
            default: Some(DefaultValue::Bool(true)),
            description: text("Include the request body (and its parsed arguments) in the message."),
        },
        // Message shaping (see crate::template).
        Field {
            name: "message",
            kind: Kind::Object(&MESSAGE),
            required: false,
            default: None,
            description: text("What the record value is: Kong's message (the default), the request body, or a template."),
        },
        Field {
            name: "topics_query_arg",
            kind: Kind::String { min_length: 1, max_length: NAME_MAX },
            required: false,
            default: None,
            description: text("The query argument holding a comma-separated list of topics to publish to; every listed topic must be `topic` or in `allowed_topics`."),
        },
        Field {
            name: "allowed_topics",
            kind: Kind::StringList { item_min_length: 1, item_max_length: TOPIC_MAX },
            required: false,
            default: None,
            description: text("Topics a request may name in `topics_query_arg`, besides `topic`, which is always allowed."),
        },
        Field {
            name: "key_query_arg",
            kind: Kind::String { min_length: 1, max_length: NAME_MAX },
            required: false,
            default: None,
            description: text("The query argument whose value becomes the Kafka record key."),
        },
        // Keys besides the query argument (see crate::template).
        Field {
            name: "key_header",
            kind: Kind::Token {
                max_length: NAME_MAX,
                pattern: text("^[^:]"),
                valid: header_name_ok,
                expected: "a header name, not a pseudo-header",
            },
            required: false,
            default: None,
            description: text("The request header whose first value becomes the Kafka record key when `key_query_arg` gives none."),
        },
        Field {
            name: "key_body_field",
            kind: Kind::Token {
                max_length: 1024,
                pattern: text(template::FIELD_POINTER_PATTERN),
                valid: template::is_field_pointer,
                expected: "a JSON pointer such as /user/id",
            },
            required: false,
            default: None,
            description: text("The JSON pointer (RFC 6901) of the field of the JSON request body whose value becomes the Kafka record key when neither `key_query_arg` nor `key_header` gives one."),
        },
        Field {
            name: "partition",
            kind: Kind::Integer { minimum: 0, maximum: 2_147_483_647 },
            required: false,
            default: None,
            description: text("Send every record to this partition (default: the REST proxy's partitioner)."),
        },
        Field {
            name: "max_body_size",
            kind: Kind::Integer { minimum: 0, maximum: 67_108_864 },
            required: false,
            default: Some(DefaultValue::Int(1_048_576)),
            description: text("Largest accepted request body in bytes; a larger body gets 413 before anything is sent."),
        },
        Field {
            name: "error_handling",
            kind: Kind::Object(&ERROR_HANDLING),
            required: false,
            default: None,
            description: text("How errors are reported to the client."),
        },
        Field {
            name: "metrics",
            kind: Kind::Object(&METRICS),
            required: false,
            default: None,
            description: text("How the filter's metrics are named."),
        },
        Field {
            name: "producer_async",
            kind: Kind::Boolean,
            required: false,
            default: Some(DefaultValue::Bool(false)),
            description: text("Produce asynchronously: answer 200 as soon as the message is accepted into the VM's bounded buffer (503 when the buffer is full or the REST proxy is unhealthy), and send buffered messages in batches from the root context, retrying failed records."),
        },
        Field {
            name: "producer_async_flush_timeout",
            kind: Kind::Integer { minimum: 1, maximum: MS_MAX },
            required: false,
            default: Some(DefaultValue::Int(1000)),
            description: text("Async mode: the longest a buffered message waits for its batch to fill before it is sent, in milliseconds."),
        },
        Field {
            name: "producer_request_limits_messages_per_request",
            kind: Kind::Integer { minimum: 1, maximum: 10_000 },
            required: false,
            default: Some(DefaultValue::Int(200)),
            description: text("Async mode: the most records one REST proxy request carries; a full batch is sent at the next tick."),
        },
        Field {
            name: "producer_request_limits_bytes_per_request",
            kind: Kind::Integer { minimum: 1, maximum: 67_108_864 },
            required: false,
            default: Some(DefaultValue::Int(1_048_576)),
            description: text("Async mode: the largest REST proxy request body in bytes (a single larger record is sent alone)."),
        },
        Field {
            name: "producer_async_buffering_limits_messages_in_memory",
            kind: Kind::Integer { minimum: 1, maximum: 1_000_000 },
            required: false,
            default: Some(DefaultValue::Int(50_000)),
            description: text("Async mode: the most records a VM holds (waiting, retrying or in flight); when full, new requests get 503."),
        },
        Field {
            name: "producer_request_retries_max_attempts",
            kind: Kind::Integer { minimum: 1, maximum: 1000 },
            required: false,
            default: Some(DefaultValue::Int(10)),
            description: text("Async mode: how many times a record is sent before it is dropped (counted and logged)."),
        },
        Field {
            name: "producer_request_retries_backoff_timeout",
            kind: Kind::Integer { minimum: 0, maximum: MS_MAX },
            required: false,
            default: Some(DefaultValue::Int(100)),
            description: text("Async mode: the wait before a failed record's first retry in milliseconds; it doubles with every further attempt, up to 30 s (or this value when larger)."),
        },
        Field {
            name: "producer_async_health_failure_threshold",
            kind: Kind::Integer { minimum: 1, maximum: 1000 },
            required: false,
            default: Some(DefaultValue::Int(3)),
            description: text("Async mode: consecutive failed flushes after which the REST proxy is unhealthy and new requests get 503."),
        },
        Field {
            name: "producer_async_health_probe_interval",
            kind: Kind::Integer { minimum: 1, maximum: MS_MAX },
            required: false,
            default: Some(DefaultValue::Int(5000)),
            description: text("Async mode: the time between health probes of an unhealthy REST proxy, in milliseconds."),
        },
        Field {
            name: "producer_async_health_recovery_threshold",
            kind: Kind::Integer { minimum: 1, maximum: 1000 },
            required: false,
            default: Some(DefaultValue::Int(1)),
            description: text("Async mode: successful probes (or flushes) after which an unhealthy REST proxy is healthy again."),
        },
        // --- Record headers (crate::record_headers) ---
        Field {
            name: "headers",
            kind: Kind::Object(&record_headers::RECORD_HEADERS),
            required: false,
            default: None,
            description: text("Kafka record headers (REST API v3 only): request headers forwarded as record headers, and static record headers."),
        },
        // --- End of record headers ---
        // --- Schema registry (crate::schema_registry) ---
        Field {
            name: "schema_registry",
            kind: Kind::Object(&schema_registry::SCHEMA_REGISTRY),
            required: false,
            default: None,
            description: text("Schema registries (Kong kafka-upstream 3.11+): records are sent with the id of a registered schema and serialized by the REST proxy."),
        },
        // --- End of schema registry ---
    ],
    rules: &[
        Rule::AtLeastOneTrue {
            fields: &["forward_method", "forward_uri", "forward_headers", "forward_body"],
            message: FORWARD_FLAGS_MESSAGE,
        },
        // Record headers need REST API v3 (crate::record_headers).
        Rule::Custom {
            check: record_headers::v2_check,
            schema: custom_schema(record_headers::v2_rule_schema),
        },
        // A schema registry: a usable url, and the json format (crate::schema_registry).
        Rule::Custom {
            check: schema_registry::url_check,
            schema: custom_schema(schema_registry::url_rule_schema),
        },
        Rule::Custom {
            check: schema_registry::format_check,
            schema: custom_schema(schema_registry::format_rule_schema),
        },
    ],
};

static REST_PROXY: Schema = Schema {
    description: text("The Kafka REST proxy that produces the records."),
    fields: &[
        Field {
            name: "upstream",
            kind: Kind::String { min_length: 1, max_length: 1024 },
            required: true,
            default: None,
            description: text("Where calls go: an Envoy cluster name, or host:port for Kong."),
        },
        Field {
            name: "authority",
            kind: Kind::String { min_length: 1, max_length: 1024 },
            required: false,
            default: None,
            description: text("The :authority (Host) of the calls; defaults to `upstream`."),
        },
        Field {
            name: "scheme",
            kind: Kind::Enum(&["http", "https"]),
            required: false,
            default: Some(DefaultValue::Str("http")),
            description: text("The :scheme of the calls."),
        },
        Field {
            name: "path_prefix",
            kind: Kind::String { min_length: 0, max_length: 1024 },
            required: false,
            default: Some(DefaultValue::Str("")),
            description: text("A path prefix put before the REST API paths, e.g. `/kafka`."),
        },
        Field {
            name: "api",
            kind: Kind::Enum(&["v2", "v3"]),
            required: false,
            default: Some(DefaultValue::Str("v2")),
            description: text("The REST API: `v2` (POST /topics/{topic}) or `v3` (POST /v3/clusters/{cluster_id}/topics/{topic}/records)."),
        },
        Field {
            name: "cluster_id",
            kind: Kind::String { min_length: 1, max_length: NAME_MAX },
            required: false,
            default: None,
            description: text("The Kafka cluster id; required when `api` is `v3`."),
        },
        Field {
            name: "format",
            kind: Kind::Enum(&["binary", "json"]),
            required: false,
            default: Some(DefaultValue::Str("binary")),
            description: text("`binary`: the record value is exactly the message bytes; `json`: the message is embedded as a JSON value."),
        },
        Field {
            name: "headers",
            kind: Kind::HeaderMap,
            required: false,
            default: None,
            description: text("Static headers added to every call, such as authorization."),
        },
        Field {
            name: "timeout",
            kind: Kind::Integer { minimum: 1, maximum: 2_147_483_646 },
            required: false,
            default: Some(DefaultValue::Int(10_000)),
            description: text("Call timeout in milliseconds; a call that times out gets 504."),
        },
    ],
    rules: &[Rule::RequiredWhen {
        field: "cluster_id",
        when: "api",
        equals: "v3",
    }],
};

/// `message`: message shaping (see [`crate::template`]).
static MESSAGE: Schema = Schema {
    description: text("What the record value is."),
    fields: &[
        Field {
            name: "mode",
            kind: Kind::Enum(&["kong", "body", "template"]),
            required: false,
            default: Some(DefaultValue::Str("kong")),
            description: text("`kong`: Kong's message (shaped by the `forward_*` flags); `body`: the request body (its JSON with the `json` format); `template`: `message.template` with its placeholders filled in."),
        },
        Field {
            name: "template",
            kind: Kind::Template,
            required: false,
            default: None,
            description: text("The message as a JSON value whose strings may hold placeholders such as `${method}`, `${header.x-tenant}` or `${body_json/user/id}`; required when `mode` is `template`, and only allowed then."),
        },
    ],
    rules: &[
        Rule::RequiredWhen {
            field: "template",
            when: "mode",
            equals: "template",
        },
        Rule::OnlyWhen {
            field: "template",
            when: "mode",
            equals: "template",
        },
    ],
};

static ERROR_HANDLING: Schema = Schema {
    description: text("How errors are reported to the client."),
    fields: &[Field {
        name: "return_error_message",
        kind: Kind::Boolean,
        required: false,
        default: Some(DefaultValue::Bool(false)),
        description: text("Add the REST proxy's status, error code and message to error answers."),
    }],
    rules: &[],
};

static METRICS: Schema = Schema {
    description: text("How the filter's metrics are named."),
    fields: &[Field {
        name: "prefix",
        kind: Kind::Token {
            max_length: crate::metrics::PREFIX_MAX as u64,
            pattern: text(crate::metrics::PREFIX_PATTERN),
            valid: crate::metrics::is_valid_prefix,
            expected: "dot-separated words of letters, digits, '_' and '-'",
        },
        required: false,
        default: None,
        description: text("The prefix of every metric name (`<prefix>.messages_sent`, ...), to tell instances of the filter apart; default: the plugin's root id when the host gives a non-numeric one (Envoy's `root_id`; characters other than letters, digits, `_` and `-` become `_`), else `kafka_upstream`."),
    }],
    rules: &[],
};

// ---------------------------------------------------------------------------------------------
// Parsing.

/// Parses and validates the bytes given to `proxy_on_configure`.
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::one(
            "configuration: missing (expected a JSON object)".into(),
        ));
    }
    let mut value: Value =
        serde_json::from_slice(bytes).map_err(|e| ConfigError::one(format!("configuration: invalid JSON: {e}")))?;
    if let Value::String(inner) = &value {
        // From bytes, as above (one instantiation of serde_json's parser in the `.wasm`); the
        // same parse and the same error positions as from the `&str`, which is valid UTF-8.
        value = serde_json::from_slice(inner.as_bytes())
            .map_err(|e| ConfigError::one(format!("configuration: invalid JSON inside the string: {e}")))?;
    }
    validate(&value).map_err(ConfigError::new)?;
    Ok(extract(&value))
}

/// Checks `value` against [`ROOT`]: every problem found in one pass, each naming its field, in
/// the order of the table (unknown keys of an object first).
pub(crate) fn validate(value: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    check_object("", value, &ROOT, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn check_object(path: &str, value: &Value, schema: &Schema, errors: &mut Vec<String>) {
    let Some(obj) = value.as_object() else {
        let at = if path.is_empty() { "configuration" } else { path };
        errors.push(format!("{at}: {}", expected_object(value)));
        return;
    };
    // Sorted, so the order does not depend on how the JSON map keeps its keys. Each key goes in
    // at its place (map keys are distinct): no slice sort instantiated for them in the `.wasm`
    // (~6 KB of code), and the moves are pointers, few next to each key's edit distances below.
    let mut unknown: Vec<&String> = Vec::new();
    for key in obj.keys().filter(|k| field(schema, k).is_none()) {
        let at = unknown.partition_point(|known| *known < key);
        unknown.insert(at, key);
    }
    for key in unknown {
        let message = match nearest_field(key, schema, obj) {
            Some(name) => format!("{}: unknown field (did you mean `{name}`?)", join(path, key)),
            None => format!("{}: unknown field", join(path, key)),
        };
        errors.push(message);
    }
    for field in schema.fields {
        let field_path = join(path, field.name);
        match obj.member(field.name) {
            None if field.required => errors.push(format!("{field_path}: required")),
            None => {}
            Some(Value::Null) => errors.push(null_message(&field_path, field)),
            Some(v) => check_value(&field_path, v, &field.kind, errors),
        }
    }
    for rule in schema.rules {
        if let Some(message) = check_rule(path, obj, schema, rule) {
            errors.push(message);
        }
    }
}

/// `expected an object`, saying so when the value is `null`.
fn expected_object(value: &Value) -> &'static str {
    if value.is_null() {
        "null is not accepted (expected an object)"
    } else {
        "expected an object"
    }
}

/// What to say about a field given as `null`: JSON's null is not "unset" here (the schema
/// rejects it too), so the message says what to do instead.
fn null_message(path: &str, field: &Field) -> String {
    if field.required {
        return format!(
            "{path}: null is not accepted, the field is required ({})",
            expectation(&field.kind)
        );
    }
    match &field.default {
        Some(default) => format!(
            "{path}: null is not accepted, leave the key out for the default ({})",
            default_text(default)
        ),
        None => format!("{path}: null is not accepted, leave the key out to leave it unset"),
    }
}

fn default_text(default: &DefaultValue) -> String {
    match default {
        DefaultValue::Bool(b) => b.to_string(),
        DefaultValue::Int(n) => n.to_string(),
        DefaultValue::Str(s) => format!("\"{s}\""),
    }
}

/// What a value of `kind` must be, as the error messages word it.
fn expectation(kind: &Kind) -> String {
    match kind {
        Kind::String { min_length, max_length } => string_expectation(*min_length, *max_length),
        Kind::Enum(values) => format!("expected one of {}", quoted_list(values)),
        Kind::Boolean => "expected true or false".into(),
        Kind::Integer { minimum, maximum } => format!("expected an integer from {minimum} to {maximum}"),
        Kind::StringList { .. } => "expected an array of strings".into(),
        Kind::HeaderMap => "expected an object of header names to string values".into(),
        Kind::Object(_) => "expected an object".into(),
        Kind::Template => "expected a JSON value".into(),
        Kind::Token {
            max_length, expected, ..
        } => format!("expected a string of 1 to {max_length} characters: {expected}"),
    }
}

fn string_expectation(min: u64, max: u64) -> String {
    if min == 0 {
        format!("expected a string of at most {max} characters")
    } else {
        format!("expected a string of {min} to {max} characters")
    }
}

/// The error for a value that is not what `kind` wants, naming `null` as such.
fn mismatch(path: &str, value: &Value, kind: &Kind) -> String {
    if value.is_null() {
        format!("{path}: null is not accepted ({})", expectation(kind))
    } else {
        format!("{path}: {}", expectation(kind))
    }
}

fn check_value(path: &str, value: &Value, kind: &Kind, errors: &mut Vec<String>) {
    match kind {
        Kind::String { min_length, max_length } => check_string(path, value, *min_length, *max_length, errors),
        Kind::Enum(values) => {
            if !value.as_str().is_some_and(|s| values.contains(&s)) {
                errors.push(mismatch(path, value, kind));
            }
        }
        Kind::Boolean => {
            if !value.is_boolean() {
                errors.push(mismatch(path, value, kind));
            }
        }
        Kind::Integer { minimum, maximum } => {
            if !value.as_i64().is_some_and(|n| (*minimum..=*maximum).contains(&n)) {
                errors.push(mismatch(path, value, kind));
            }
        }
        Kind::StringList {
            item_min_length,
            item_max_length,
        } => match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    check_string(
                        &format!("{path}[{i}]"),
                        item,
                        *item_min_length,
                        *item_max_length,
                        errors,
                    );
                }
            }
            Value::Object(map) if map.is_empty() => {}
            _ => errors.push(mismatch(path, value, kind)),
        },
        Kind::HeaderMap => {
            let Some(map) = value.as_object() else {
                errors.push(mismatch(path, value, kind));
                return;
            };
            for (name, v) in map {
                if !header_name_ok(name) {
                    errors.push(format!(
                        "{path}: header name {name:?} must not be empty or start with ':'"
                    ));
                } else if v.is_null() {
                    errors.push(format!("{path}.{name}: null is not accepted (expected a string)"));
                } else if !v.is_string() {
                    errors.push(format!("{path}.{name}: expected a string"));
                }
            }
        }
        Kind::Object(schema) => check_object(path, value, schema, errors),
        Kind::Template => _ = template::compile(value, path, errors),
        Kind::Token { max_length, valid, .. } => {
            if !value
                .as_str()
                .is_some_and(|s| valid(s) && s.chars().count() as u64 <= *max_length)
            {
                errors.push(mismatch(path, value, kind));
            }
        }
    }
}

/// The code side of the schema's `patternProperties` `^[^:]`.
fn header_name_ok(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c != ':')
}

fn check_string(path: &str, value: &Value, min: u64, max: u64, errors: &mut Vec<String>) {
    let ok = value.as_str().is_some_and(|s| {
        let n = s.chars().count() as u64;
        (min..=max).contains(&n)
    });
    if !ok {
        errors.push(mismatch(
            path,
            value,
            &Kind::String {
                min_length: min,
                max_length: max,
            },
        ));
    }
}

/// The field of `schema` an unknown key was most likely meant to be: the closest name by edit
/// distance (case and `-`/`_` ignored), among the fields `obj` does not already set, when it is
/// close enough to be a typo: one edit per five characters of the key, at least one.
fn nearest_field(key: &str, schema: &Schema, obj: &Map<String, Value>) -> Option<&'static str> {
    let normal = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let key_normal = normal(key);
    let allowed = (key_normal.chars().count() / 5).max(1);
    schema
        .fields
        .iter()
        .filter(|f| obj.member(f.name).is_none())
        .map(|f| (edit_distance(&key_normal, f.name), f.name))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

/// Levenshtein distance in characters (insertions, deletions, substitutions), with one row of
/// memory. Keys are bounded by the configuration's size, fields by the table.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

fn quoted_list(values: &[&str]) -> String {
    values.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", ")
}

fn field<'s>(schema: &'s Schema, name: &str) -> Option<&'s Field> {
    schema.fields.iter().find(|f| f.name == name)
}

/// A boolean field's value, or its default.
fn effective_bool(obj: &Map<String, Value>, schema: &Schema, name: &str) -> bool {
    match obj.member(name).and_then(Value::as_bool) {
        Some(b) => b,
        None => matches!(
            field(schema, name).and_then(|f| f.default.as_ref()),
            Some(DefaultValue::Bool(true))
        ),
    }
}

/// A string field's value, or its default.
fn effective_str<'a>(obj: &'a Map<String, Value>, schema: &Schema, name: &str) -> Option<&'a str> {
    match obj.member(name).and_then(Value::as_str) {
        Some(s) => Some(s),
        None => match field(schema, name).and_then(|f| f.default.as_ref()) {
            Some(DefaultValue::Str(s)) => Some(s),
            _ => None,
        },
    }
}

/// An integer field's value, or its default.
fn effective_int(obj: &Map<String, Value>, schema: &Schema, name: &str) -> Option<i64> {
    match obj.member(name).and_then(Value::as_i64) {
        Some(n) => Some(n),
        None => match field(schema, name).and_then(|f| f.default.as_ref()) {
            Some(DefaultValue::Int(n)) => Some(*n),
            _ => None,
        },
    }
}

/// The rule's error, if `obj` breaks it.
fn check_rule(path: &str, obj: &Map<String, Value>, schema: &Schema, rule: &Rule) -> Option<String> {
    match rule {
        Rule::RequiredWhen { field, when, equals } => {
            (effective_str(obj, schema, when) == Some(equals) && obj.member(field).is_none()).then(|| {
                format!(
                    "{}: required when {} is \"{equals}\"",
                    join(path, field),
                    join(path, when)
                )
            })
        }
        Rule::OnlyWhen { field, when, equals } => {
            (effective_str(obj, schema, when) != Some(equals) && obj.member(field).is_some()).then(|| {
                format!(
                    "{}: only used when {} is \"{equals}\"",
                    join(path, field),
                    join(path, when)
                )
            })
        }
        Rule::AtLeastOneTrue { fields, message } => {
            (!fields.iter().any(|f| effective_bool(obj, schema, f))).then(|| (*message).to_string())
        }
        Rule::Custom { check, .. } => check(obj),
    }
}

/// Builds the typed configuration from a value that passed [`validate`].
fn extract(value: &Value) -> Config {
    let empty = Map::new();
    let root = value.as_object().unwrap_or(&empty);
    let rp = root.member("rest_proxy").and_then(Value::as_object).unwrap_or(&empty);
    let eh = root
        .member("error_handling")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let metrics = root.member("metrics").and_then(Value::as_object).unwrap_or(&empty);
    let string = |obj: &Map<String, Value>, name: &str| obj.member(name).and_then(Value::as_str).map(str::to_string);

    let upstream = string(rp, "upstream").unwrap_or_default();
    let authority = string(rp, "authority").unwrap_or_else(|| upstream.clone());
    let scheme = match effective_str(rp, &REST_PROXY, "scheme") {
        Some("https") => Scheme::Https,
        _ => Scheme::Http,
    };
    let api = match effective_str(rp, &REST_PROXY, "api") {
        Some("v3") => Api::V3 {
            cluster_id: string(rp, "cluster_id").unwrap_or_default(),
        },
        _ => Api::V2,
    };
    let format = match effective_str(rp, &REST_PROXY, "format") {
        Some("json") => Format::Json,
        _ => Format::Binary,
    };
    let headers: Vec<(String, String)> = rp
        .member("headers")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let record_header_config = record_headers::extract(root, &headers);
    let timeout_ms = effective_int(rp, &REST_PROXY, "timeout")
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(10_000);

    Config {
        topic: string(root, "topic").unwrap_or_default(),
        rest_proxy: RestProxy {
            upstream,
            authority,
            scheme,
            path_prefix: normalize_prefix(effective_str(rp, &REST_PROXY, "path_prefix").unwrap_or("")),
            api,
            format,
            headers,
            timeout_ms,
            produce_headers: Derived::default(),
        },
        message: MessageOptions {
            forward_method: effective_bool(root, &ROOT, "forward_method"),
            forward_uri: effective_bool(root, &ROOT, "forward_uri"),
            forward_headers: effective_bool(root, &ROOT, "forward_headers"),
            forward_body: effective_bool(root, &ROOT, "forward_body"),
        },
        topics_query_arg: string(root, "topics_query_arg"),
        allowed_topics: root
            .member("allowed_topics")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default(),
        key_query_arg: string(root, "key_query_arg"),
        partition: root
            .member("partition")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
        max_body_size: effective_int(root, &ROOT, "max_body_size")
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(1_048_576),
        return_error_message: effective_bool(eh, &ERROR_HANDLING, "return_error_message"),
        producer: extract_producer(root),
        metrics_prefix: string(metrics, "prefix"),
        shaping: extract_shaping(root),
        record_headers: record_header_config,
        schema_registry: schema_registry::extract(root),
    }
}

/// `message`, `key_header` and `key_body_field` of a validated root object.
fn extract_shaping(root: &Map<String, Value>) -> Shaping {
    let empty = Map::new();
    let message = root.member("message").and_then(Value::as_object).unwrap_or(&empty);
    let shape = match effective_str(message, &MESSAGE, "mode") {
        Some("body") => Shape::Body,
        Some("template") => message
            .member("template")
            .and_then(|t| template::compile(t, "message.template", &mut Vec::new()))
            .map_or(Shape::Kong, Shape::Template),
        _ => Shape::Kong,
    };
    Shaping {
        shape,
        key_header: root
            .member("key_header")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase),
        key_body_field: root
            .member("key_body_field")
            .and_then(Value::as_str)
            .and_then(|p| template::parse_pointer(p).ok()),
    }
}

/// The `producer_*` fields of a validated root object.
fn extract_producer(root: &Map<String, Value>) -> ProducerConfig {
    let defaults = ProducerConfig::default();
    let int = |name: &str, default: u32| {
        effective_int(root, &ROOT, name)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(default)
    };
    ProducerConfig {
        enabled: effective_bool(root, &ROOT, "producer_async"),
        flush_timeout_ms: int("producer_async_flush_timeout", defaults.flush_timeout_ms),
        messages_per_request: int(
            "producer_request_limits_messages_per_request",
            defaults.messages_per_request,
        ),
        bytes_per_request: int("producer_request_limits_bytes_per_request", defaults.bytes_per_request),
        messages_in_memory: int(
            "producer_async_buffering_limits_messages_in_memory",
            defaults.messages_in_memory,
        ),
        max_attempts: int("producer_request_retries_max_attempts", defaults.max_attempts),
        backoff_ms: int("producer_request_retries_backoff_timeout", defaults.backoff_ms),
        failure_threshold: int("producer_async_health_failure_threshold", defaults.failure_threshold),
        probe_interval_ms: int("producer_async_health_probe_interval", defaults.probe_interval_ms),
        recovery_threshold: int("producer_async_health_recovery_threshold", defaults.recovery_threshold),
    }
}

/// `""`, `"/"` → `""`; `"kafka/"` → `"/kafka"`: a leading slash and no trailing one.
fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

// ---------------------------------------------------------------------------------------------
// JSON Schema (draft 4). Native builds only: the `.wasm` never builds it and carries none of
// the texts and rule schemas it needs (see `crate::schema::SchemaOnly`).

/// The JSON Schema (draft 4) of the configuration object, generated from the field table.
#[cfg(not(target_arch = "wasm32"))]
pub fn json_schema() -> Value {
    let mut schema = object_schema(&ROOT);
    if let Value::Object(map) = &mut schema {
        map.insert("$schema".into(), Value::from("http://json-schema.org/draft-04/schema#"));
    }
    schema
}

/// The text of `kafka_upstream.meta.json` (Kong's filter metadata): `{"config_schema": ...}`,
/// pretty-printed with sorted keys and a final newline.
#[cfg(not(target_arch = "wasm32"))]
pub fn meta_json() -> String {
    let mut meta = Map::new();
    meta.insert("config_schema".into(), json_schema());
    let mut out = String::new();
    write_pretty(&mut out, &Value::Object(meta), 0);
    out.push('\n');
    out
}

#[cfg(not(target_arch = "wasm32"))]
fn object_schema(schema: &Schema) -> Value {
    let mut properties = Map::new();
    for f in schema.fields {
        properties.insert(f.name.into(), field_schema(f));
    }
    let required: Vec<Value> = schema
        .fields
        .iter()
        .filter(|f| f.required)
        .map(|f| Value::from(f.name))
        .collect();
    let mut out = Map::new();
    out.insert("type".into(), Value::from("object"));
    out.insert("description".into(), Value::from(schema.description.get()));
    out.insert("properties".into(), Value::Object(properties));
    out.insert("additionalProperties".into(), Value::Bool(false));
    if !required.is_empty() {
        out.insert("required".into(), Value::Array(required));
    }
    if !schema.rules.is_empty() {
        let all: Vec<Value> = schema.rules.iter().map(|r| rule_schema(schema, r)).collect();
        out.insert("allOf".into(), Value::Array(all));
    }
    Value::Object(out)
}

#[cfg(not(target_arch = "wasm32"))]
fn field_schema(f: &Field) -> Value {
    let mut s = kind_schema(&f.kind);
    if let Value::Object(map) = &mut s {
        map.insert("description".into(), Value::from(f.description.get()));
        match &f.default {
            Some(DefaultValue::Bool(b)) => {
                map.insert("default".into(), Value::Bool(*b));
            }
            Some(DefaultValue::Int(n)) => {
                map.insert("default".into(), Value::from(*n));
            }
            Some(DefaultValue::Str(v)) => {
                map.insert("default".into(), Value::from(*v));
            }
            None => {}
        }
    }
    s
}

#[cfg(not(target_arch = "wasm32"))]
fn string_schema(min: u64, max: u64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), Value::from("string"));
    if min > 0 {
        m.insert("minLength".into(), Value::from(min));
    }
    m.insert("maxLength".into(), Value::from(max));
    m
}

#[cfg(not(target_arch = "wasm32"))]
fn kind_schema(kind: &Kind) -> Value {
    match kind {
        Kind::String { min_length, max_length } => Value::Object(string_schema(*min_length, *max_length)),
        Kind::Enum(values) => {
            let mut m = Map::new();
            m.insert("type".into(), Value::from("string"));
            m.insert(
                "enum".into(),
                Value::Array(values.iter().map(|v| Value::from(*v)).collect()),
            );
            Value::Object(m)
        }
        Kind::Boolean => {
            let mut m = Map::new();
            m.insert("type".into(), Value::from("boolean"));
            Value::Object(m)
        }
        Kind::Integer { minimum, maximum } => {
            let mut m = Map::new();
            m.insert("type".into(), Value::from("integer"));
            m.insert("minimum".into(), Value::from(*minimum));
            m.insert("maximum".into(), Value::from(*maximum));
            Value::Object(m)
        }
        Kind::StringList {
            item_min_length,
            item_max_length,
        } => {
            let mut m = Map::new();
            // An array of strings, or `{}`: cjson's encoding of an empty Lua array.
            m.insert(
                "type".into(),
                Value::Array(vec![Value::from("array"), Value::from("object")]),
            );
            m.insert(
                "items".into(),
                Value::Object(string_schema(*item_min_length, *item_max_length)),
            );
            m.insert("maxProperties".into(), Value::from(0));
            Value::Object(m)
        }
        Kind::HeaderMap => {
            let mut m = Map::new();
            m.insert("type".into(), Value::from("object"));
            let mut pattern = Map::new();
            let mut value = Map::new();
            value.insert("type".into(), Value::from("string"));
            pattern.insert("^[^:]".into(), Value::Object(value));
            m.insert("patternProperties".into(), Value::Object(pattern));
            m.insert("additionalProperties".into(), Value::Bool(false));
            Value::Object(m)
        }
        Kind::Object(schema) => object_schema(schema),
        // Any JSON value but null (which the code names as such): placeholders are checked by
        // the filter only.
        Kind::Template => {
            let mut null = Map::new();
            null.insert("type".into(), Value::from("null"));
            not(Value::Object(null))
        }
        Kind::Token {
            max_length, pattern, ..
        } => {
            let mut m = string_schema(1, *max_length);
            m.insert("pattern".into(), Value::from(pattern.get()));
            Value::Object(m)
        }
    }
}

/// `{"properties": {name: {"enum": [values...]}}, "required": [name]}`: `name` is present and one
/// of `values`.
#[cfg(not(target_arch = "wasm32"))]
fn present_and_one_of(name: &str, values: Vec<Value>) -> Value {
    let mut e = Map::new();
    e.insert("enum".into(), Value::Array(values));
    let mut props = Map::new();
    props.insert(name.into(), Value::Object(e));
    let mut m = Map::new();
    m.insert("properties".into(), Value::Object(props));
    m.insert("required".into(), Value::Array(vec![Value::from(name)]));
    Value::Object(m)
}

#[cfg(not(target_arch = "wasm32"))]
fn not(v: Value) -> Value {
    let mut m = Map::new();
    m.insert("not".into(), v);
    Value::Object(m)
}

#[cfg(not(target_arch = "wasm32"))]
fn any_of(branches: Vec<Value>) -> Value {
    let mut m = Map::new();
    m.insert("anyOf".into(), Value::Array(branches));
    Value::Object(m)
}

#[cfg(not(target_arch = "wasm32"))]
fn rule_schema(schema: &Schema, rule: &Rule) -> Value {
    match rule {
        Rule::RequiredWhen { field, when, equals } => {
            // `when` is not `equals` (absent means its default, which differs), or `field` is there.
            let mut req = Map::new();
            req.insert("required".into(), Value::Array(vec![Value::from(*field)]));
            any_of(vec![
                not(present_and_one_of(when, vec![Value::from(*equals)])),
                Value::Object(req),
            ])
        }
        Rule::OnlyWhen { field, when, equals } => {
            // `when` is `equals`, or `field` is absent.
            let mut req = Map::new();
            req.insert("required".into(), Value::Array(vec![Value::from(*field)]));
            any_of(vec![
                present_and_one_of(when, vec![Value::from(*equals)]),
                not(Value::Object(req)),
            ])
        }
        Rule::AtLeastOneTrue { fields, .. } => any_of(
            fields
                .iter()
                .map(|f| {
                    let default_true = effective_bool(&Map::new(), schema, f);
                    if default_true {
                        // absent (default true) or not false
                        not(present_and_one_of(f, vec![Value::Bool(false)]))
                    } else {
                        present_and_one_of(f, vec![Value::Bool(true)])
                    }
                })
                .collect(),
        ),
        Rule::Custom { schema, .. } => schema.get()(),
    }
}

/// Pretty JSON with two-space indents and keys sorted, whatever order the map keeps.
#[cfg(not(target_arch = "wasm32"))]
fn write_pretty(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push_str("{\n");
            for (i, k) in keys.iter().enumerate() {
                push_indent(out, indent + 1);
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push_str(": ");
                if let Some(v) = map.get(*k) {
                    write_pretty(out, v, indent + 1);
                }
                if i + 1 < keys.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            push_indent(out, indent);
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, v) in items.iter().enumerate() {
                push_indent(out, indent + 1);
                write_pretty(out, v, indent + 1);
                if i + 1 < items.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            push_indent(out, indent);
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn push_indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"topic":"t","rest_proxy":{"upstream":"kafka_rest"}}"#;

    fn err(text: &str) -> String {
        match parse(text.as_bytes()) {
            Ok(c) => panic!("accepted {text}: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_gets_the_defaults() {
        let c = parse(MINIMAL.as_bytes()).unwrap();
        assert_eq!(
            c,
            Config {
                topic: "t".into(),
                rest_proxy: RestProxy {
                    upstream: "kafka_rest".into(),
                    authority: "kafka_rest".into(),
                    scheme: Scheme::Http,
                    path_prefix: String::new(),
                    api: Api::V2,
                    format: Format::Binary,
                    headers: vec![],
                    timeout_ms: 10_000,
                    produce_headers: Derived::default(),
                },
                message: MessageOptions::default(),
                topics_query_arg: None,
                allowed_topics: vec![],
                key_query_arg: None,
                partition: None,
                max_body_size: 1_048_576,
                return_error_message: false,
                producer: ProducerConfig::default(),
                metrics_prefix: None,
                shaping: Shaping::default(),

                record_headers: RecordHeaders::default(),
                schema_registry: None,
            }
        );
    }

    #[test]
    fn producer_fields() {
        let c = parse(
            br#"{"topic":"t","rest_proxy":{"upstream":"u"},
              "producer_async": true,
              "producer_async_flush_timeout": 250,
              "producer_request_limits_messages_per_request": 50,
              "producer_request_limits_bytes_per_request": 65536,
              "producer_async_buffering_limits_messages_in_memory": 1000,
              "producer_request_retries_max_attempts": 3,
              "producer_request_retries_backoff_timeout": 0,
              "producer_async_health_failure_threshold": 5,
              "producer_async_health_probe_interval": 2000,
              "producer_async_health_recovery_threshold": 2}"#,
        )
        .unwrap();
        assert_eq!(
            c.producer,
            ProducerConfig {
                enabled: true,
                flush_timeout_ms: 250,
                messages_per_request: 50,
                bytes_per_request: 65536,
                messages_in_memory: 1000,
                max_attempts: 3,
                backoff_ms: 0,
                failure_threshold: 5,
                probe_interval_ms: 2000,
                recovery_threshold: 2,
            }
        );
        // The defaults in the table are the ones `ProducerConfig::default` documents.
        let defaults = extract_producer(&Map::new());
        assert_eq!(defaults, ProducerConfig::default());
    }

    #[test]
    fn full_config() {
        let c = parse(
            br#"{
              "topic": "orders",
              "rest_proxy": {
                "upstream": "127.0.0.1:8082", "authority": "rest.local", "scheme": "https",
                "path_prefix": "kafka/", "api": "v3", "cluster_id": "lkc-1", "format": "json",
                "headers": {"Authorization": "Basic eDp5"}, "timeout": 2500
              },
              "forward_method": true, "forward_uri": true, "forward_headers": true,
              "forward_body": false,
              "topics_query_arg": "topic-list", "allowed_topics": ["a", "b"],
              "key_query_arg": "key", "partition": 3, "max_body_size": 0,
              "error_handling": {"return_error_message": true},
              "metrics": {"prefix": "orders.eu-1"}
            }"#,
        )
        .unwrap();
        assert_eq!(c.rest_proxy.authority, "rest.local");
        assert_eq!(c.rest_proxy.scheme, Scheme::Https);
        assert_eq!(c.rest_proxy.path_prefix, "/kafka");
        assert_eq!(
            c.rest_proxy.api,
            Api::V3 {
                cluster_id: "lkc-1".into()
            }
        );
        assert_eq!(c.rest_proxy.format, Format::Json);
        assert_eq!(
            c.rest_proxy.headers,
            vec![("authorization".to_string(), "Basic eDp5".to_string())]
        );
        assert_eq!(c.rest_proxy.timeout_ms, 2500);
        assert_eq!(
            c.message,
            MessageOptions {
                forward_method: true,
                forward_uri: true,
                forward_headers: true,
                forward_body: false
            }
        );
        assert_eq!(c.topics_query_arg.as_deref(), Some("topic-list"));
        assert_eq!(c.allowed_topics, vec!["a", "b"]);
        assert_eq!(c.key_query_arg.as_deref(), Some("key"));
        assert_eq!(c.partition, Some(3));
        assert_eq!(c.max_body_size, 0);
        assert!(c.return_error_message);
        assert_eq!(c.metrics_prefix.as_deref(), Some("orders.eu-1"));
    }

    #[test]
    fn string_encoded_config_is_accepted() {
        let quoted = serde_json::to_string(MINIMAL).unwrap();
        assert_eq!(parse(quoted.as_bytes()).unwrap(), parse(MINIMAL.as_bytes()).unwrap());
        assert_eq!(err(r#""\"just a string\"""#), "configuration: expected an object");
    }

    #[test]
    fn empty_allowed_topics_object_is_an_empty_list() {
        let c = parse(br#"{"topic":"t","rest_proxy":{"upstream":"u"},"allowed_topics":{}}"#).unwrap();
        assert!(c.allowed_topics.is_empty());
    }

    #[test]
    fn path_prefix_is_normalized() {
        for (given, want) in [("", ""), ("/", ""), ("/a/", "/a"), ("a", "/a"), ("/a/b", "/a/b")] {
            assert_eq!(normalize_prefix(given), want);
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("", "configuration: missing (expected a JSON object)"),
            ("  \n", "configuration: missing (expected a JSON object)"),
            ("[]", "configuration: expected an object"),
            ("null", "configuration: null is not accepted (expected an object)"),
            (r#"{"rest_proxy":{"upstream":"u"}}"#, "topic: required"),
            (r#"{"topic":"t"}"#, "rest_proxy: required"),
            (
                r#"{"topic":"","rest_proxy":{"upstream":"u"}}"#,
                "topic: expected a string of 1 to 249 characters",
            ),
            (
                r#"{"topic":7,"rest_proxy":{"upstream":"u"}}"#,
                "topic: expected a string of 1 to 249 characters",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"bogus":1}"#,
                "bogus: unknown field",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","bogus":1}}"#,
                "rest_proxy.bogus: unknown field",
            ),
            (r#"{"topic":"t","rest_proxy":"u"}"#, "rest_proxy: expected an object"),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"metrics":{"prefix":"a/b"}}"#,
                "metrics.prefix: expected a string of 1 to 160 characters: dot-separated words of letters, digits, '_' and '-'",
            ),
            (r#"{"topic":"t","rest_proxy":{}}"#, "rest_proxy.upstream: required"),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","api":"v4"}}"#,
                r#"rest_proxy.api: expected one of "v2", "v3""#,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","api":"v3"}}"#,
                r#"rest_proxy.cluster_id: required when rest_proxy.api is "v3""#,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","scheme":"ftp"}}"#,
                r#"rest_proxy.scheme: expected one of "http", "https""#,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","format":"avro"}}"#,
                r#"rest_proxy.format: expected one of "binary", "json""#,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","timeout":0}}"#,
                "rest_proxy.timeout: expected an integer from 1 to 2147483646",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","timeout":1.5}}"#,
                "rest_proxy.timeout: expected an integer from 1 to 2147483646",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","timeout":"10"}}"#,
                "rest_proxy.timeout: expected an integer from 1 to 2147483646",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","headers":[]}}"#,
                "rest_proxy.headers: expected an object of header names to string values",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","headers":{":path":"/x"}}}"#,
                r#"rest_proxy.headers: header name ":path" must not be empty or start with ':'"#,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","headers":{"x-a":1}}}"#,
                "rest_proxy.headers.x-a: expected a string",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"forward_body":"yes"}"#,
                "forward_body: expected true or false",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"forward_body":false}"#,
                FORWARD_FLAGS_MESSAGE,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"forward_body":false,"forward_uri":false}"#,
                FORWARD_FLAGS_MESSAGE,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"allowed_topics":"a,b"}"#,
                "allowed_topics: expected an array of strings",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"allowed_topics":["a",""]}"#,
                "allowed_topics[1]: expected a string of 1 to 249 characters",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"allowed_topics":{"a":1}}"#,
                "allowed_topics: expected an array of strings",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"partition":-1}"#,
                "partition: expected an integer from 0 to 2147483647",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"max_body_size":67108865}"#,
                "max_body_size: expected an integer from 0 to 67108864",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"topics_query_arg":null}"#,
                "topics_query_arg: null is not accepted, leave the key out to leave it unset",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"error_handling":{"return_error_message":1}}"#,
                "error_handling.return_error_message: expected true or false",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"error_handling":{"x":true}}"#,
                "error_handling.x: unknown field",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"producer_async":"true"}"#,
                "producer_async: expected true or false",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"producer_async_flush_timeout":0}"#,
                "producer_async_flush_timeout: expected an integer from 1 to 3600000",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"producer_request_limits_messages_per_request":0}"#,
                "producer_request_limits_messages_per_request: expected an integer from 1 to 10000",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"producer_request_retries_backoff_timeout":-1}"#,
                "producer_request_retries_backoff_timeout: expected an integer from 0 to 3600000",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"producer_async_health_recovery_threshold":0}"#,
                "producer_async_health_recovery_threshold: expected an integer from 1 to 1000",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"producer_async_buffer":1}"#,
                "producer_async_buffer: unknown field",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(err(text), want, "config {text}");
        }
        assert!(err("{").starts_with("configuration: invalid JSON: "));
        assert!(err(r#""{""#).starts_with("configuration: invalid JSON inside the string: "));
    }

    #[test]
    fn every_error_is_reported_in_one_pass() {
        let e = parse(
            br#"{"topc":"t","rest_proxy":{"api":"v3","timeout":0,"headers":{":a":"b","x":1}},
                "forward_body":false,"allowed_topics":["",7],"bogus":1}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.errors(),
            [
                "bogus: unknown field",
                "topc: unknown field (did you mean `topic`?)",
                "topic: required",
                "rest_proxy.upstream: required",
                r#"rest_proxy.headers: header name ":a" must not be empty or start with ':'"#,
                "rest_proxy.headers.x: expected a string",
                "rest_proxy.timeout: expected an integer from 1 to 2147483646",
                r#"rest_proxy.cluster_id: required when rest_proxy.api is "v3""#,
                "allowed_topics[0]: expected a string of 1 to 249 characters",
                "allowed_topics[1]: expected a string of 1 to 249 characters",
                FORWARD_FLAGS_MESSAGE,
            ]
        );
        assert_eq!(e.message(), e.errors().join("; "));
        assert_eq!(e.to_string(), e.message());
        // A single problem is a message of its own, without separator.
        assert_eq!(err(r#"{"rest_proxy":{"upstream":"u"}}"#), "topic: required");
    }

    #[test]
    fn unknown_fields_suggest_the_nearest_when_close() {
        let cases = [
            (r#""forward_bdy":true"#, Some("forward_body")),
            (r#""Forward-Body":true"#, Some("forward_body")),
            (r#""max_body_sise":1"#, Some("max_body_size")),
            (r#""partiton":1"#, Some("partition")),
            (r#""producer_asyn":true"#, Some("producer_async")),
            (r#""error_handlng":{}"#, Some("error_handling")),
            // Too far from every field: no guess.
            (r#""body":true"#, None),
            (r#""colour":"red""#, None),
            (r#""x":1"#, None),
            // `topic` is set already, so `topics` is not taken for it.
            (r#""topics":["a"]"#, None),
        ];
        for (member, want) in cases {
            let text = format!(r#"{{"topic":"t","rest_proxy":{{"upstream":"u"}},{member}}}"#);
            let key = member.split('"').nth(1).unwrap();
            let expected = match want {
                Some(name) => format!("{key}: unknown field (did you mean `{name}`?)"),
                None => format!("{key}: unknown field"),
            };
            assert_eq!(err(&text), expected, "{text}");
        }
        assert_eq!(
            err(r#"{"topic":"t","rest_proxy":{"upstream":"u","timout":5}}"#),
            "rest_proxy.timout: unknown field (did you mean `timeout`?)"
        );
        assert_eq!(
            err(r#"{"topic":"t","rest_proxy":{"upstream":"u"},"error_handling":{"return_error_mesage":true}}"#),
            "error_handling.return_error_mesage: unknown field (did you mean `return_error_message`?)"
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn null_is_named_as_null() {
        let cases = [
            (
                r#"{"topic":null,"rest_proxy":{"upstream":"u"}}"#,
                "topic: null is not accepted, the field is required (expected a string of 1 to 249 characters)",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","timeout":null}}"#,
                "rest_proxy.timeout: null is not accepted, leave the key out for the default (10000)",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","api":null}}"#,
                r#"rest_proxy.api: null is not accepted, leave the key out for the default ("v2")"#,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"forward_body":null}"#,
                "forward_body: null is not accepted, leave the key out for the default (true)",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"key_query_arg":null}"#,
                "key_query_arg: null is not accepted, leave the key out to leave it unset",
            ),
            (
                r#"{"topic":"t","rest_proxy":null}"#,
                "rest_proxy: null is not accepted, the field is required (expected an object)",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"allowed_topics":["a",null]}"#,
                "allowed_topics[1]: null is not accepted (expected a string of 1 to 249 characters)",
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","headers":{"x-a":null}}}"#,
                "rest_proxy.headers.x-a: null is not accepted (expected a string)",
            ),
            ("null", "configuration: null is not accepted (expected an object)"),
        ];
        for (text, want) in cases {
            assert_eq!(err(text), want, "config {text}");
        }
    }

    // ---- message shaping and keys (crate::template) ----

    #[test]
    fn message_modes_and_keys() {
        let c = parse(
            br#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mode":"body"},"key_header":"X-User","key_body_field":"/user/id"}"#,
        )
        .unwrap();
        assert_eq!(c.shaping.shape, Shape::Body);
        assert_eq!(c.shaping.key_header.as_deref(), Some("x-user"));
        assert_eq!(
            c.shaping.key_body_field,
            Some(vec!["user".to_string(), "id".to_string()])
        );
        let c = parse(br#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{}}"#).unwrap();
        assert_eq!(c.shaping.shape, Shape::Kong);
        let c = parse(
            br#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mode":"template","template":{"m":"${method}"}}}"#,
        )
        .unwrap();
        assert!(matches!(c.shaping.shape, Shape::Template(_)));
    }

    #[test]
    fn message_errors_name_the_field() {
        let cases = [
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mode":"template","template":{"user":{"id":"${usr}"}}}}"#,
                format!(
                    "message.template.user.id: unknown placeholder ${{usr}} (expected one of {}; write $${{ for a literal ${{)",
                    template::PLACEHOLDERS
                ),
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mode":"template"}}"#,
                r#"message.template: required when message.mode is "template""#.to_string(),
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"template":{"a":1}}}"#,
                r#"message.template: only used when message.mode is "template""#.to_string(),
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mode":"lua"}}"#,
                r#"message.mode: expected one of "kong", "body", "template""#.to_string(),
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mode":"template","template":null}}"#,
                "message.template: null is not accepted, leave the key out to leave it unset".to_string(),
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"key_body_field":"user.id"}"#,
                "key_body_field: expected a string of 1 to 1024 characters: a JSON pointer such as /user/id".to_string(),
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"key_header":":path"}"#,
                "key_header: expected a string of 1 to 255 characters: a header name, not a pseudo-header".to_string(),
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mod":"body"}}"#,
                "message.mod: unknown field (did you mean `mode`?)".to_string(),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(err(text), want, "config {text}");
        }
    }

    /// Placeholders are the filter's to check: the JSON Schema accepts any template (a draft-4
    /// schema cannot parse strings), so these configurations pass Kong's schema validation and
    /// are rejected by `proxy_on_configure`, with the field's path.
    #[test]
    fn templates_only_the_code_checks() {
        let validator = jsonschema::draft4::new(&json_schema()).unwrap();
        for template in [r#""${nope}""#, r#"{"a":["${method"]}"#, r#""${body_json/~2}""#] {
            let text = format!(
                r#"{{"topic":"t","rest_proxy":{{"upstream":"u"}},"message":{{"mode":"template","template":{template}}}}}"#
            );
            let value: Value = serde_json::from_str(&text).unwrap();
            assert!(validator.is_valid(&value), "schema on {text}");
            let errors = validate(&value).unwrap_err();
            assert!(errors[0].starts_with("message.template"), "{errors:?}");
        }
    }

    #[test]
    fn one_forward_flag_is_enough() {
        for flag in ["forward_method", "forward_uri", "forward_headers"] {
            let text = format!(r#"{{"topic":"t","rest_proxy":{{"upstream":"u"}},"forward_body":false,"{flag}":true}}"#);
            assert!(parse(text.as_bytes()).is_ok(), "{flag}");
        }
    }

    #[test]
    fn rule_defaults_are_consistent() {
        // RequiredWhen assumes the `when` field's default differs from `equals`.
        for schema in [&ROOT, &REST_PROXY, &ERROR_HANDLING, &METRICS, &MESSAGE] {
            for rule in schema.rules {
                if let Rule::RequiredWhen { when, equals, .. } = rule {
                    assert_ne!(effective_str(&Map::new(), schema, when), Some(*equals));
                }
            }
        }
    }

    /// Every leaf field of the table has a row in README.md's configuration table, and the row's default is
    /// the table's.
    #[test]
    fn config_md_documents_every_field() {
        fn leaves(schema: &Schema, prefix: &str, out: &mut Vec<(String, &'static Field)>) {
            for f in schema.fields {
                let path = join(prefix, f.name);
                match &f.kind {
                    Kind::Object(inner) => leaves(inner, &path, out),
                    _ => out.push((path, f)),
                }
            }
        }
        let doc = include_str!("../../README.md");
        let mut fields = Vec::new();
        leaves(&ROOT, "", &mut fields);
        for (path, field) in fields {
            let start = format!("| `{path}` |");
            let row = doc
                .lines()
                .find(|l| l.starts_with(&start))
                .unwrap_or_else(|| panic!("README.md has no row for {path}"));
            let cells: Vec<&str> = row.split(" | ").collect();
            let want = match &field.default {
                Some(DefaultValue::Bool(b)) => format!("`{b}`"),
                Some(DefaultValue::Int(n)) => format!("`{n}`"),
                Some(DefaultValue::Str(v)) => format!("`\"{v}\"`"),
                None if field.required => "**required**".to_string(),
                None => continue,
            };
            assert_eq!(cells.get(2), Some(&want.as_str()), "README.md default of {path}");
        }
    }

    /// The shipped metadata is the generated one. Regenerate with
    /// `KAFKA_UPSTREAM_WRITE_META=1 cargo test -p kafka-upstream shipped_meta_json`.
    #[test]
    fn shipped_meta_json_is_generated() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/kafka_upstream.meta.json");
        let generated = meta_json();
        if std::env::var_os("KAFKA_UPSTREAM_WRITE_META").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let shipped = std::fs::read_to_string(path).unwrap();
        assert_eq!(shipped, generated, "run with KAFKA_UPSTREAM_WRITE_META=1 to regenerate");
        let parsed: Value = serde_json::from_str(&shipped).unwrap();
        assert_eq!(parsed["config_schema"], json_schema());
    }

    #[test]
    fn schema_is_valid_draft4() {
        jsonschema::draft4::meta::validate(&json_schema()).unwrap();
    }

    /// The code and the schema give the same verdict on every sample.
    #[test]
    fn code_and_schema_agree() {
        let validator = jsonschema::draft4::new(&json_schema()).unwrap();
        let samples: &[(&str, bool)] = &[
            (MINIMAL, true),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","api":"v3","cluster_id":"c"}}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","api":"v2","cluster_id":"c"}}"#,
                true,
            ),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u","api":"v3"}}"#, false),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u","api":"v4"}}"#, false),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u","cluster_id":""}}"#, false),
            (r#"{"rest_proxy":{"upstream":"u"}}"#, false),
            (r#"{"topic":"t"}"#, false),
            (r#"{"topic":"","rest_proxy":{"upstream":"u"}}"#, false),
            (r#"{"topic":"é","rest_proxy":{"upstream":"u"}}"#, true),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u"},"x":1}"#, false),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u","x":1}}"#, false),
            (r#"{"topic":"t","rest_proxy":{"upstream":""}}"#, false),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","scheme":"https","path_prefix":"","format":"json"}}"#,
                true,
            ),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u","timeout":1}}"#, true),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u","timeout":0}}"#, false),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","timeout":2147483647}}"#,
                false,
            ),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u","timeout":"1"}}"#, false),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u","headers":{}}}"#, true),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","headers":{"a":"b","c:d":"e"}}}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","headers":{":a":"b"}}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","headers":{"":"b"}}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","headers":{"a":null}}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"forward_body":false}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"forward_body":true}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"forward_body":false,"forward_method":false}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"forward_body":false,"forward_method":true}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"forward_body":false,"forward_uri":true}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"forward_body":false,"forward_headers":true}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"forward_method":1}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"allowed_topics":[]}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"allowed_topics":{}}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"allowed_topics":{"a":"b"}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"allowed_topics":["a",1]}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"allowed_topics":"a"}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"topics_query_arg":"tl","key_query_arg":"k"}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"key_query_arg":""}"#,
                false,
            ),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u"},"partition":0}"#, true),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u"},"partition":-1}"#, false),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u"},"partition":2.5}"#, false),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"max_body_size":67108864}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"max_body_size":67108865}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"error_handling":{}}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"error_handling":{"return_error_message":true}}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"error_handling":{"return_error_message":"true"}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"error_handling":[]}"#,
                false,
            ),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u"},"topic_x":null}"#, false),
            (r#"{"topic":null,"rest_proxy":{"upstream":"u"}}"#, false),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"producer_async":true,"producer_async_flush_timeout":1,"producer_request_retries_backoff_timeout":0}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"producer_async":1}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"producer_async_flush_timeout":3600001}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"producer_request_limits_bytes_per_request":0}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"producer_async_buffering_limits_messages_in_memory":1000000}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"producer_request_retries_max_attempts":1.5}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"metrics":{"prefix":"orders.eu-1"}}"#,
                true,
            ),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u"},"metrics":{}}"#, true),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"metrics":{"prefix":""}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"metrics":{"prefix":"a..b"}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"metrics":{"prefix":"a b"}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"metrics":{"prefix":".a"}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"metrics":{"prefix":"a\n"}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"metrics":{"prefix":7}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"metrics":{"name":"x"}}"#,
                false,
            ),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u"},"metrics":"x"}"#, false),
            ("[]", false),
            ("\"text\"", false),
            // Several errors at once, misspelt keys and nulls: the code lists them, the schema
            // rejects them all the same.
            (
                r#"{"topc":"t","rest_proxy":{"api":"v3","timeout":0},"forward_body":false,"allowed_topics":["",7]}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"forward_bdy":true}"#,
                false,
            ),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u","timout":5}}"#, false),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u","timeout":null}}"#, false),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u","api":null}}"#, false),
            (r#"{"topic":"t","rest_proxy":null}"#, false),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"key_query_arg":null}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"allowed_topics":[null]}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"error_handling":null}"#,
                false,
            ),
            ("null", false),
            // Message shaping and keys.
            (r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{}}"#, true),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mode":"body"}}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mode":"kong"}}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mode":"template","template":{"a":"${method}","b":[1,null,"x ${path}"]}}}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mode":"template","template":"${body_json}"}}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mode":"template","template":7}}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mode":"template"}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mode":"body","template":{}}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"template":{}}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mode":"xml"}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mode":"template","template":null}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":{"mode":"body","extra":1}}"#,
                false,
            ),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u"},"message":"body"}"#, false),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"key_header":"x-user","key_body_field":"/user/id"}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"key_body_field":"/a~1b/~0/0"}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"key_body_field":"/"}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"key_body_field":""}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"key_body_field":"user/id"}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"key_body_field":"/a~2"}"#,
                false,
            ),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u"},"key_header":""}"#, false),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"key_header":":path"}"#,
                false,
            ),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u"},"key_header":5}"#, false),
            // Record headers (crate::record_headers): v3 only when they would send anything.
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","api":"v3","cluster_id":"c"},"headers":{"forward_all_by_default":true,"exclude_headers":["cookie"],"name_mappings":{"x-request-id":"trace-id"},"repeated_headers_behavior":"concatenate_by_comma","static_headers":{"env":"prod"}}}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","api":"v3","cluster_id":"c"},"headers":{"include_headers":["x-a"],"repeated_headers_behavior":"take_first"}}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"headers":{"include_headers":["x-a"]}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","api":"v2"},"headers":{"forward_all_by_default":true}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"headers":{"static_headers":{"a":"b"}}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"headers":{"forward_http_headers_as_record_headers":false,"static_headers":{"a":"b"}}}"#,
                false,
            ),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u"},"headers":{}}"#, true),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"headers":{"include_headers":[]}}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"headers":{"include_headers":{}}}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"headers":{"static_headers":{}}}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u"},"headers":{"forward_http_headers_as_record_headers":false,"forward_all_by_default":true,"include_headers":["x"]}}"#,
                true,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","api":"v3","cluster_id":"c"},"headers":{"repeated_headers_behavior":"merge"}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","api":"v3","cluster_id":"c"},"headers":{"include_headers":[""]}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","api":"v3","cluster_id":"c"},"headers":{"name_mappings":{":path":"p"}}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","api":"v3","cluster_id":"c"},"headers":{"static_headers":{"a":1}}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","api":"v3","cluster_id":"c"},"headers":{"forward_all_by_default":"yes"}}"#,
                false,
            ),
            (
                r#"{"topic":"t","rest_proxy":{"upstream":"u","api":"v3","cluster_id":"c"},"headers":{"bogus":1}}"#,
                false,
            ),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u"},"headers":[]}"#, false),
            (r#"{"topic":"t","rest_proxy":{"upstream":"u"},"headers":null}"#, false),
        ];
        for (text, valid) in samples {
            let value: Value = serde_json::from_str(text).unwrap();
            let by_code = validate(&value);
            let by_schema = validator.is_valid(&value);
            assert_eq!(by_code.is_ok(), *valid, "code on {text}: {by_code:?}");
            assert_eq!(by_schema, *valid, "schema on {text}");
        }
    }
}
