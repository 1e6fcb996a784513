//! Request decoding: media types, base64, and the JSON bodies of v2 and v3 produce requests,
//! with Confluent's status and code for each way a body can be wrong.
//!
//! Pure functions over bytes and `serde_json::Value`: no I/O, no storage. The rules mirror
//! kafka-rest: Jackson parse errors are 400/400, bean-validation failures (empty `records`,
//! unknown v2 fields) are 422/422, undecodable base64 is a `BadRequestException` (400/400), and
//! schema formats without a Schema Registry are 42206/42207.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::model::{ProduceRecord, RecordHeader};
use crate::reencode::{NumberStyle, OrderedJson};

/// Content type of v2 responses.
pub const V2_JSON: &str = "application/vnd.kafka.v2+json";
/// Content type of v3 requests and responses, and of `/_sim/` answers.
pub const APPLICATION_JSON: &str = "application/json";

/// Standard base64 that accepts input with or without `=` padding.
pub const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes bytes as standard, padded base64.
pub fn encode_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The media type of a `Content-Type` value: lower-cased, parameters (`; charset=...`) dropped.
pub fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Embedded format of a v2 produce request, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V2Format {
    /// `application/vnd.kafka.binary.v2+json`: base64 keys and values.
    Binary,
    /// `application/vnd.kafka.json.v2+json`: any JSON, stored as its JSON bytes.
    Json,
    /// `application/vnd.kafka.avro.v2+json`, `.jsonschema.`, `.protobuf.`: need a Schema Registry.
    Schema,
}

/// The v2 format a Content-Type asks for; `None` means 415 (the resource does not consume it).
pub fn v2_format(content_type: Option<&str>) -> Option<V2Format> {
    match media_type(content_type?).as_str() {
        "application/vnd.kafka.binary.v2+json" => Some(V2Format::Binary),
        "application/vnd.kafka.json.v2+json" => Some(V2Format::Json),
        "application/vnd.kafka.avro.v2+json"
        | "application/vnd.kafka.jsonschema.v2+json"
        | "application/vnd.kafka.protobuf.v2+json" => Some(V2Format::Schema),
        _ => None,
    }
}

/// Whether a Content-Type is `application/json` (what v3 consumes).
pub fn is_application_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| media_type(ct) == APPLICATION_JSON)
}

fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Removes insignificant whitespace from JSON text, keeping member order and number spelling:
/// Jackson re-serializes a `JsonNode` compactly and in insertion order, which is what this yields
/// for the JSON embedded format.
pub fn minify_json(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in raw.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// The raw JSON text of member `name` of the JSON object `raw` (the last one when repeated).
fn raw_member<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    let map: std::collections::HashMap<String, &'a RawValue> = serde_json::from_str(raw).ok()?;
    map.get(name).map(|r| r.get())
}

/// The raw JSON texts of the elements of the JSON array `raw`.
fn raw_elements(raw: &str) -> Option<Vec<&str>> {
    let items: Vec<&RawValue> = serde_json::from_str(raw).ok()?;
    Some(items.into_iter().map(RawValue::get).collect())
}

/// The bytes of a JSON-format key or value: the client's text, minified, when it is at hand;
/// else the parsed value re-serialized.
fn json_bytes(raw: Option<&str>, parsed: &Value) -> Bytes {
    match raw {
        Some(text) => Bytes::from(minify_json(text)),
        None => Bytes::from(json_text(parsed)),
    }
}

/// A JSON-format key or value parsed and written again in `style`; the client's text is parsed
/// when at hand, so integers beyond 64 bits reach the re-encoder as the parser sees them.
fn reencoded_bytes(raw: Option<&str>, parsed: &Value, style: NumberStyle) -> Result<Bytes, ApiError> {
    let text = match raw {
        Some(text) => text.to_string(),
        None => json_text(parsed),
    };
    OrderedJson::parse(&text)
        .map(|v| Bytes::from(v.encode(style)))
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Python's truth value of a JSON key or value (`if not obj` in Karapace's `serialize`).
fn python_falsy(raw: Option<&str>, parsed: &Value) -> bool {
    match raw.map(OrderedJson::parse) {
        Some(Ok(v)) => v.is_falsy(),
        _ => match parsed {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
        },
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "Boolean",
        Value::Number(_) => "Number",
        Value::String(_) => "String",
        Value::Array(_) => "Array",
        Value::Object(_) => "Object",
    }
}

/// Decodes a base64 JSON string as kafka-rest's `NoSchemaRecordSerializer` does.
pub fn decode_binary(data: &Value) -> Result<Bytes, ApiError> {
    let Value::String(text) = data else {
        return Err(ApiError::bad_request(format!(
            "data={} is not a base64 string.",
            json_text(data)
        )));
    };
    BASE64
        .decode(text.as_bytes())
        .map(Bytes::from)
        .map_err(|_| ApiError::bad_request(format!("data={} is not a valid base64 string.", json_text(data))))
}

fn parse_json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn int32_field(name: &str, v: &Value) -> Result<Option<i32>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_i64().and_then(|i| i32::try_from(i).ok()).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Cannot deserialize value of type `java.lang.Integer` from {n} for field \"{name}\""
            ))
        }),
        other => Err(ApiError::bad_request(format!(
            "Cannot deserialize value of type `java.lang.Integer` from {} value for field \"{name}\"",
            type_name(other)
        ))),
    }
}

const V2_REQUEST_FIELDS: [&str; 5] = [
    "records",
    "key_schema",
    "key_schema_id",
    "value_schema",
    "value_schema_id",
];
const V2_RECORD_FIELDS: [&str; 3] = ["key", "value", "partition"];

fn check_v2_fields(obj: &Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        // rest-utils' JacksonMessageBodyProvider: UnrecognizedPropertyException → 422.
        Some(unknown) => Err(ApiError::unprocessable(format!("Unrecognized field: {unknown}"))),
        None => Ok(()),
    }
}

/// How a proxy turns the keys and values of a v2 request into record bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V2Encoding {
    /// How `json`-format keys and values are written.
    pub json: JsonValues,
    /// Keys and values that are false in Python (`null`, `0`, `""`, `[]`, `{}`, `false`) become
    /// empty bytes instead of null or their JSON text (a value that is absent or null included).
    pub python_falsy_as_empty: bool,
    /// A null key becomes an empty key.
    pub null_key_as_empty: bool,
}

/// How `json`-format keys and values become bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonValues {
    /// The client's text without insignificant whitespace (Jackson keeps number spelling).
    AsSent,
    /// Parsed and written again (see [`crate::reencode`]).
    Reencoded(NumberStyle),
}

impl V2Encoding {
    /// kafka-rest: JSON text as sent, nulls kept.
    pub const CONFLUENT: V2Encoding = V2Encoding {
        json: JsonValues::AsSent,
        python_falsy_as_empty: false,
        null_key_as_empty: false,
    };
}

/// Decodes a v2 produce body (`{"records":[{"key","value","partition"}], ...}`).
///
/// Records get `now_ms` as timestamp, as kafka-rest stamps v2 records with `Instant.now()`.
pub fn parse_v2(
    body: &[u8],
    format: V2Format,
    now_ms: i64,
    encoding: V2Encoding,
) -> Result<Vec<ProduceRecord>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::unprocessable("Request body is empty. Data is required."));
    }
    let root = parse_json_body(body)?;
    let obj = match &root {
        Value::Object(obj) => obj,
        Value::Null => return Err(ApiError::unprocessable("Request body is empty. Data is required.")),
        other => {
            return Err(ApiError::bad_request(format!(
                "Cannot deserialize value of type `ProduceRequest` from {} value",
                type_name(other)
            )))
        }
    };
    check_v2_fields(obj, &V2_REQUEST_FIELDS)?;
    let records = match obj.get("records") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Cannot deserialize value of type `java.util.List` from {} value for field \"records\"",
                type_name(other)
            )))
        }
    };
    // The raw text of each record, for the JSON format (see `json_bytes`) and Python's truth
    // value of a key or value (`python_falsy`). Base64 keys and values without the latter never
    // read it, and finding it parses the body again, then each record twice more: for a batch of
    // binary records that was most of the REST proxy's work per record (issue 15; the
    // host-sim-rest-proxy example `produce_batch` measures it).
    let raw_needed = format != V2Format::Binary || encoding.python_falsy_as_empty;
    let raw_records: Vec<Option<&str>> = if raw_needed {
        std::str::from_utf8(body)
            .ok()
            .and_then(|text| raw_member(text, "records"))
            .and_then(raw_elements)
            .filter(|raws| raws.len() == records.len())
            .map(|raws| raws.into_iter().map(Some).collect())
            .unwrap_or_else(|| vec![None; records.len()])
    } else {
        vec![None; records.len()]
    };
    let mut out = Vec::with_capacity(records.len());
    for (record, raw) in records.iter().zip(raw_records) {
        let Value::Object(rec) = record else {
            return Err(ApiError::bad_request(format!(
                "Cannot deserialize value of type `ProduceRecord` from {} value",
                type_name(record)
            )));
        };
        check_v2_fields(rec, &V2_RECORD_FIELDS)?;
        let partition = match rec.get("partition") {
            Some(v) => int32_field("partition", v)?,
            None => None,
        };
        let raw_key = raw.and_then(|r| raw_member(r, "key"));
        let raw_value = raw.and_then(|r| raw_member(r, "value"));
        out.push((partition, (rec.get("key"), raw_key), (rec.get("value"), raw_value)));
    }
    if out.is_empty() {
        // @NotEmpty on ProduceRequest.records.
        return Err(ApiError::unprocessable("records must not be empty"));
    }
    if format == V2Format::Schema {
        let has_schema = ["key_schema", "key_schema_id", "value_schema", "value_schema_id"]
            .iter()
            .any(|f| obj.get(*f).is_some_and(|v| !v.is_null()));
        return Err(if has_schema {
            // SchemaManagerThrowing
            ApiError::invalid_payload("Schema Registry must be configured when using schemas.")
        } else {
            // SchemaRecordSerializerThrowing
            ApiError::serialization(
                "Schema Registry not defined, no Schema Registry client available to serialize message.",
            )
        });
    }
    let encode = |(v, raw): (Option<&Value>, Option<&str>)| -> Result<Option<Bytes>, ApiError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(data) => match format {
                V2Format::Binary => decode_binary(data).map(Some),
                _ => match encoding.json {
                    JsonValues::AsSent => Ok(Some(json_bytes(raw, data))),
                    JsonValues::Reencoded(style) => reencoded_bytes(raw, data, style).map(Some),
                },
            },
        }
    };
    let falsy = |(v, raw): (Option<&Value>, Option<&str>)| -> bool {
        encoding.python_falsy_as_empty
            && match v {
                None | Some(Value::Null) => true,
                Some(data) => python_falsy(raw, data),
            }
    };
    out.into_iter()
        .map(|(partition, key, value)| {
            let key = if falsy(key) && key.0.is_some_and(|k| !k.is_null()) {
                Some(Bytes::new())
            } else {
                encode(key)?
            };
            let value = if falsy(value) {
                Some(Bytes::new())
            } else {
                encode(value)?
            };
            Ok(ProduceRecord {
                partition,
                key: match key {
                    None if encoding.null_key_as_empty => Some(Bytes::new()),
                    other => other,
                },
                value,
                headers: Vec::new(),
                timestamp_ms: now_ms,
            })
        })
        .collect()
}

/// Embedded format of a v3 key or value (`"type"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V3Format {
    /// Base64 bytes.
    Binary,
    /// Any JSON, stored as its JSON bytes.
    Json,
    /// A JSON string, stored as UTF-8.
    String,
}

impl V3Format {
    /// The name v3 uses in requests and responses.
    pub fn name(self) -> &'static str {
        match self {
            V3Format::Binary => "BINARY",
            V3Format::Json => "JSON",
            V3Format::String => "STRING",
        }
    }
}

/// A v3 key or value: its format and bytes (`None` for null data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Data {
    /// Declared format.
    pub format: V3Format,
    /// Serialized bytes; `None` when `data` was null or absent.
    pub bytes: Option<Bytes>,
}

impl V3Data {
    /// Serialized size as Kafka's `RecordMetadata` reports it: -1 for null.
    pub fn size(&self) -> i64 {
        self.bytes.as_ref().map_or(-1, |b| b.len() as i64)
    }
}

/// One decoded v3 produce record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Record {
    /// Requested partition.
    pub partition: Option<i32>,
    /// Headers, in order.
    pub headers: Vec<RecordHeader>,
    /// The key, if the request had one.
    pub key: Option<V3Data>,
    /// The value, if the request had one.
    pub value: Option<V3Data>,
    /// Requested `CreateTime`, epoch milliseconds.
    pub timestamp_ms: Option<i64>,
}

const V3_RECORD_FIELDS: [&str; 5] = ["partition_id", "headers", "key", "value", "timestamp"];
const V3_DATA_FIELDS: [&str; 7] = [
    "type",
    "data",
    "subject",
    "subject_name_strategy",
    "schema_id",
    "schema_version",
    "schema",
];

fn v3_data(field: &str, v: &Value, raw: Option<&str>) -> Result<Option<V3Data>, ApiError> {
    let obj = match v {
        Value::Null => return Ok(None),
        Value::Object(obj) => obj,
        other => {
            return Err(ApiError::bad_request(format!(
                "Cannot deserialize value of type `ProduceRequestData` from {} value for field \"{field}\"",
                type_name(other)
            )))
        }
    };
    if let Some(unknown) = obj.keys().find(|k| !V3_DATA_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "Unrecognized field \"{unknown}\" (class ProduceRequestData), not marked as ignorable"
        )));
    }
    let format = match obj.get("type") {
        Some(Value::String(t)) => match t.as_str() {
            "BINARY" => Some(V3Format::Binary),
            "JSON" => Some(V3Format::Json),
            "STRING" => Some(V3Format::String),
            "AVRO" | "JSONSCHEMA" | "PROTOBUF" => None,
            other => {
                return Err(ApiError::bad_request(format!(
                    "Cannot deserialize value of type `EmbeddedFormat` from String \"{other}\": \
                     not one of the values accepted for Enum class: \
                     [BINARY, JSON, STRING, AVRO, JSONSCHEMA, PROTOBUF]"
                )))
            }
        },
        None | Some(Value::Null) => None,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Cannot deserialize value of type `EmbeddedFormat` from {} value",
                type_name(other)
            )))
        }
    };
    // No type, or a schema type: kafka-rest asks its SchemaManager, which without a Schema
    // Registry throws 42206.
    let Some(format) = format else {
        return Err(ApiError::invalid_payload(
            "Schema Registry must be configured when using schemas.",
        ));
    };
    let data = obj.get("data").unwrap_or(&Value::Null);
    let bytes = match (format, data) {
        (_, Value::Null) => None,
        (V3Format::Binary, d) => Some(decode_binary(d)?),
        (V3Format::Json, d) => Some(json_bytes(raw.and_then(|r| raw_member(r, "data")), d)),
        (V3Format::String, Value::String(s)) => Some(Bytes::from(s.clone())),
        (V3Format::String, d) => return Err(ApiError::bad_request(format!("data={} is not a string.", json_text(d)))),
    };
    Ok(Some(V3Data { format, bytes }))
}

fn v3_headers(v: &Value) -> Result<Vec<RecordHeader>, ApiError> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => {
            return Err(ApiError::bad_request(format!(
                "Cannot deserialize value of type `java.util.List` from {} value for field \"headers\"",
                type_name(other)
            )))
        }
    };
    items
        .iter()
        .map(|item| {
            let Value::Object(h) = item else {
                return Err(ApiError::bad_request(format!(
                    "Cannot deserialize value of type `ProduceRequestHeader` from {} value",
                    type_name(item)
                )));
            };
            if let Some(unknown) = h.keys().find(|k| *k != "name" && *k != "value") {
                return Err(ApiError::bad_request(format!(
                    "Unrecognized field \"{unknown}\" (class ProduceRequestHeader), not marked as ignorable"
                )));
            }
            let name = match h.get("name") {
                Some(Value::String(n)) => n.clone(),
                _ => return Err(ApiError::bad_request("Header name is required and must be a string.")),
            };
            let value = match h.get("value") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(BASE64.decode(s.as_bytes()).map(Bytes::from).map_err(|_| {
                    ApiError::bad_request(format!(
                        "Cannot deserialize value of type `byte[]` from String \"{s}\": \
                             Failed to decode VALUE_STRING as base64"
                    ))
                })?),
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "Cannot deserialize value of type `byte[]` from {} value",
                        type_name(other)
                    )))
                }
            };
            Ok(RecordHeader { name, value })
        })
        .collect()
}

/// Decodes one v3 produce record from its JSON text (one JSON value of the request body).
pub fn parse_v3_record(raw: &str) -> Result<V3Record, ApiError> {
    let v: Value = serde_json::from_str(raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    parse_v3_value(&v, Some(raw))
}

/// Decodes one parsed v3 produce record; `raw` is its JSON text when known (it keeps the member
/// order of JSON-format data).
pub fn parse_v3_value(v: &Value, raw: Option<&str>) -> Result<V3Record, ApiError> {
    let obj = match v {
        Value::Object(obj) => obj,
        Value::Null => return Err(ApiError::invalid_payload("Request body is empty. Data is required.")),
        other => {
            return Err(ApiError::bad_request(format!(
                "Cannot deserialize value of type `ProduceRequest` from {} value",
                type_name(other)
            )))
        }
    };
    if let Some(unknown) = obj.keys().find(|k| !V3_RECORD_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "Unrecognized field \"{unknown}\" (class ProduceRequest), not marked as ignorable \
             (5 known properties: \"value\", \"partition_id\", \"headers\", \"key\", \"timestamp\")"
        )));
    }
    let partition = match obj.get("partition_id") {
        Some(v) => int32_field("partition_id", v)?,
        None => None,
    };
    let headers = match obj.get("headers") {
        Some(h) => v3_headers(h)?,
        None => Vec::new(),
    };
    let key = match obj.get("key") {
        Some(k) => v3_data("key", k, raw.and_then(|r| raw_member(r, "key")))?,
        None => None,
    };
    let value = match obj.get("value") {
        Some(k) => v3_data("value", k, raw.and_then(|r| raw_member(r, "value")))?,
        None => None,
    };
    let timestamp_ms = match obj.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(t) => Some(crate::timestamp::parse_json_instant(t).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Cannot deserialize value of type `java.time.Instant` from {}",
                json_text(t)
            ))
        })?),
    };
    Ok(V3Record {
        partition,
        headers,
        key,
        value,
        timestamp_ms,
    })
}

/// Splits a v3 body into the JSON texts of its concatenated values (one in the usual case,
/// several in streaming mode). A value that does not parse ends the list with its error.
pub fn split_v3_body(body: &[u8]) -> Vec<Result<&str, ApiError>> {
    let mut out = Vec::new();
    for item in serde_json::Deserializer::from_slice(body).into_iter::<&RawValue>() {
        match item {
            Ok(v) => out.push(Ok(v.get())),
            Err(e) => {
                out.push(Err(ApiError::bad_request(e.to_string())));
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;
    use serde_json::json;

    fn v2(body: &str, format: V2Format) -> Result<Vec<ProduceRecord>, ApiError> {
        parse_v2(body.as_bytes(), format, 7, V2Encoding::CONFLUENT)
    }

    fn v3(v: Value) -> Result<V3Record, ApiError> {
        parse_v3_value(&v, None)
    }

    fn err_of<T: std::fmt::Debug>(r: Result<T, ApiError>) -> ApiError {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn media_types_ignore_case_and_parameters() {
        assert_eq!(
            v2_format(Some("application/vnd.kafka.binary.v2+json; charset=utf-8")),
            Some(V2Format::Binary)
        );
        assert_eq!(
            v2_format(Some("Application/VND.kafka.json.v2+JSON")),
            Some(V2Format::Json)
        );
        assert_eq!(
            v2_format(Some("application/vnd.kafka.avro.v2+json")),
            Some(V2Format::Schema)
        );
        assert_eq!(v2_format(Some("application/json")), None);
        assert_eq!(v2_format(None), None);
        assert!(is_application_json(Some("application/json;charset=UTF-8")));
        assert!(!is_application_json(Some("text/plain")));
        assert!(!is_application_json(None));
    }

    #[test]
    fn v2_binary_decodes_base64() {
        let recs = v2(
            r#"{"records":[{"key":"a2V5","value":"dmFsdWU=","partition":1},{"value":"dg"}]}"#,
            V2Format::Binary,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].key.as_deref(), Some(&b"key"[..]));
        assert_eq!(recs[0].value.as_deref(), Some(&b"value"[..]));
        assert_eq!(recs[0].partition, Some(1));
        assert_eq!(recs[0].timestamp_ms, 7);
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[1].value.as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn v2_binary_records_decode_alike_with_or_without_their_raw_text() {
        // Confluent's encoding skips the records' raw text for base64 data; an encoding with
        // Python's truth values still reads it. Escaped characters (`\/` is `/`), keys,
        // partitions and nulls must come out the same either way.
        let body =
            r#"{"records":[{"key":"a2V5","value":"P\/8=","partition":1},{"value":"dg"},{"key":null,"value":"YWJj"}]}"#;
        let with_raw = V2Encoding {
            python_falsy_as_empty: true,
            ..V2Encoding::CONFLUENT
        };
        let without =
            parse_v2(body.as_bytes(), V2Format::Binary, 7, V2Encoding::CONFLUENT).unwrap_or_else(|e| panic!("{e}"));
        let read_raw = parse_v2(body.as_bytes(), V2Format::Binary, 7, with_raw).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(without[0].value.as_deref(), Some(&[0x3f, 0xff][..]));
        assert_eq!(without[2].key, None);
        let fields = |r: &[ProduceRecord]| -> Vec<_> {
            r.iter()
                .map(|r| (r.partition, r.key.clone(), r.value.clone(), r.timestamp_ms))
                .collect()
        };
        assert_eq!(fields(&without), fields(&read_raw));
    }

    #[test]
    fn v2_json_keeps_json_bytes() {
        let recs = v2(
            r#"{"records":[{"key":{"id":1},"value":[1,"x",null]},{"value":null}]}"#,
            V2Format::Json,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(recs[0].key.as_deref(), Some(&br#"{"id":1}"#[..]));
        assert_eq!(recs[0].value.as_deref(), Some(&br#"[1,"x",null]"#[..]));
        assert_eq!(recs[1].value, None);
    }

    #[test]
    fn v2_errors_match_confluent() {
        let e = err_of(v2("{", V2Format::Binary));
        assert_eq!((e.status, e.error_code), (StatusCode::BAD_REQUEST, 400));
        let e = err_of(v2(r#"{"records":[]}"#, V2Format::Binary));
        assert_eq!((e.status, e.error_code), (StatusCode::UNPROCESSABLE_ENTITY, 422));
        assert_eq!(e.message, "records must not be empty");
        let e = err_of(v2(r#"{}"#, V2Format::Binary));
        assert_eq!(e.error_code, 422);
        let e = err_of(v2("", V2Format::Binary));
        assert_eq!(e.error_code, 422);
        let e = err_of(v2(r#"{"records":[{"value":"x"}],"extra":1}"#, V2Format::Json));
        assert_eq!((e.error_code, e.message.as_str()), (422, "Unrecognized field: extra"));
        let e = err_of(v2(r#"{"records":[{"valu":"x"}]}"#, V2Format::Json));
        assert_eq!(e.message, "Unrecognized field: valu");
        let e = err_of(v2(r#"{"records":{"value":"x"}}"#, V2Format::Json));
        assert_eq!(e.error_code, 400);
        let e = err_of(v2(r#"{"records":[{"value":"x","partition":"1"}]}"#, V2Format::Json));
        assert_eq!(e.error_code, 400);
        let e = err_of(v2(r#"{"records":[{"value":"x","partition":1.5}]}"#, V2Format::Json));
        assert_eq!(e.error_code, 400);
        let e = err_of(v2(r#"{"records":[{"value":"!!!"}]}"#, V2Format::Binary));
        assert_eq!(
            (e.error_code, e.message.as_str()),
            (400, r#"data="!!!" is not a valid base64 string."#)
        );
        let e = err_of(v2(r#"{"records":[{"value":12}]}"#, V2Format::Binary));
        assert_eq!(e.message, "data=12 is not a base64 string.");
        let e = err_of(v2(r#"[1]"#, V2Format::Binary));
        assert_eq!(e.error_code, 400);
        let e = err_of(v2(r#"{"records":[1]}"#, V2Format::Binary));
        assert_eq!(e.error_code, 400);
    }

    #[test]
    fn v2_schema_formats_need_a_registry() {
        let e = err_of(v2(r#"{"records":[{"value":"x"}]}"#, V2Format::Schema));
        assert_eq!((e.status, e.error_code), (StatusCode::UNPROCESSABLE_ENTITY, 42207));
        let e = err_of(v2(
            r#"{"value_schema":"{\"type\":\"string\"}","records":[{"value":"x"}]}"#,
            V2Format::Schema,
        ));
        assert_eq!(e.error_code, 42206);
        assert_eq!(
            e.message,
            "Payload error. Schema Registry must be configured when using schemas."
        );
    }

    #[test]
    fn v3_record_decodes_every_field() {
        let r = v3(json!({
            "partition_id": 2,
            "headers": [{"name": "h", "value": "aGk="}, {"name": "n", "value": null}],
            "key": {"type": "STRING", "data": "k"},
            "value": {"type": "JSON", "data": {"a": [1, 2]}},
            "timestamp": "2021-02-05T19:14:42Z"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.partition, Some(2));
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.headers[0].value.as_deref(), Some(&b"hi"[..]));
        assert_eq!(r.headers[1].value, None);
        assert_eq!(
            r.key,
            Some(V3Data {
                format: V3Format::String,
                bytes: Some(Bytes::from_static(b"k"))
            })
        );
        assert_eq!(
            r.value.as_ref().and_then(|v| v.bytes.clone()),
            Some(Bytes::from_static(br#"{"a":[1,2]}"#))
        );
        assert_eq!(r.timestamp_ms, Some(1_612_552_482_000));

        let r = v3(json!({"value": {"type": "BINARY", "data": null}})).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.value.as_ref().map(V3Data::size), Some(-1));
        assert_eq!(r.key, None);
    }

    #[test]
    fn v3_errors_match_confluent() {
        let e = err_of(v3(json!({"records": []})));
        assert_eq!(e.error_code, 400);
        assert!(e.message.starts_with("Unrecognized field \"records\""));
        let e = err_of(v3(json!({"value": {"data": "x"}})));
        assert_eq!((e.status, e.error_code), (StatusCode::UNPROCESSABLE_ENTITY, 42206));
        let e = err_of(v3(json!({"value": {"type": "AVRO", "data": "x"}})));
        assert_eq!(e.error_code, 42206);
        let e = err_of(v3(json!({"value": {"type": "binary", "data": "x"}})));
        assert_eq!(e.error_code, 400);
        let e = err_of(v3(json!({"value": {"type": "BINARY", "data": "fooba"}})));
        assert_eq!(e.error_code, 400);
        let e = err_of(v3(json!({"value": {"type": "STRING", "data": 1}})));
        assert_eq!(e.message, "data=1 is not a string.");
        let e = err_of(v3(json!({"headers": [{"name": 1}]})));
        assert_eq!(e.error_code, 400);
        let e = err_of(v3(json!({"headers": [{"name": "h", "value": "%%"}]})));
        assert_eq!(e.error_code, 400);
        let e = err_of(v3(json!({"timestamp": "yesterday"})));
        assert_eq!(e.error_code, 400);
        let e = err_of(v3(json!(null)));
        assert_eq!(e.error_code, 42206);
        let e = err_of(v3(json!([])));
        assert_eq!(e.error_code, 400);
    }

    #[test]
    fn minify_keeps_order_and_strings() {
        assert_eq!(
            minify_json("{ \"b\" : [1, 2.50],\n\t\"a\": \"x y \\\" }\" }"),
            r#"{"b":[1,2.50],"a":"x y \" }"}"#
        );
    }

    #[test]
    fn json_format_keeps_member_order() {
        let recs = v2(
            r#"{"records":[{"value":{"z":1, "a":{"y":2,"b":3}}}, {"key" : [3, 1], "value":"s"}]}"#,
            V2Format::Json,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(recs[0].value.as_deref(), Some(&br#"{"z":1,"a":{"y":2,"b":3}}"#[..]));
        assert_eq!(recs[1].key.as_deref(), Some(&b"[3,1]"[..]));
        let r =
            parse_v3_record(r#"{"value":{"type":"JSON","data":{"z":1,  "a":2}}}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.value.and_then(|v| v.bytes),
            Some(Bytes::from_static(br#"{"z":1,"a":2}"#))
        );
    }

    #[test]
    fn v3_body_splits_concatenated_json() {
        let parts = split_v3_body(br#"{"value":null} {"value":null}{"a":1}"#);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2].as_ref().ok(), Some(&r#"{"a":1}"#));
        assert!(parts.iter().all(Result::is_ok));
        let parts = split_v3_body(br#"{"value":null} {oops"#);
        assert_eq!(parts.len(), 2);
        assert!(parts[1].is_err());
        assert!(split_v3_body(b"  ").is_empty());
    }
}
