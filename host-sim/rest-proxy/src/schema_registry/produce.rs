//! REST Proxy's schema formats, serialized with the embedded registry: each schema-format key or
//! value is serialized into Confluent's wire format (see [`super`]) and the request is handed on as
//! if it had carried those bytes in the binary format, so the produce pipeline stays one.
//!
//! - v2 (`application/vnd.kafka.avro.v2+json`, `application/vnd.kafka.jsonschema.v2+json`):
//!   `value_schema_id` / `key_schema_id` name a registered schema; `value_schema` / `key_schema`
//!   (a schema text) register it under `{topic}-value` / `{topic}-key` first (kafka-rest's
//!   TopicNameStrategy). Records with values but no value schema are 422 / 42202, with keys but no
//!   key schema 422 / 42201 (kafka-rest `Errors.java`, `VALUE_SCHEMA_MISSING_ERROR_CODE`,
//!   `KEY_SCHEMA_MISSING_ERROR_CODE`). Every record is serialized before anything is produced: one
//!   bad record fails the request (422 / 42203) and nothing is written.
//! - v3 (`{"value": {"schema_id": N, "data": ...}}`, or `"subject"` + `"schema_version"`, or
//!   `"type": "AVRO"|"JSONSCHEMA"` with `"schema"`, or no type at all): kafka-rest's
//!   `SchemaManagerImpl` picks the schema by id, by subject and version (the subject defaults to
//!   `{topic}-value` / `{topic}-key`, the version to the latest), or registers the schema text
//!   given. Data without a type and without schema fields uses the subject's latest version when
//!   the subject exists (otherwise the request keeps its 42206 answer, as without a registry).
//!
//! Differences from kafka-rest: values are plain JSON resolved against the Avro schema (see
//! [`super::RegisteredSchema::serialize`]), not Avro's JSON encoding with wrapped unions; the v3
//! delivery report says `"type":"BINARY"` for schema-format data; PROTOBUF is refused (42207).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Map, Value};

use super::{conversion_failed, schema_not_found, RegisteredSchema, SchemaRegistry, SchemaType, VersionSpec};
use crate::codec::{encode_base64, media_type};
use crate::error::ApiError;

/// Whether a schema is for a record's key or its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The key.
    Key,
    /// The value.
    Value,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Key => "key",
            Part::Value => "value",
        }
    }

    /// kafka-rest's TopicNameStrategy subject.
    pub fn subject(self, topic: &str) -> String {
        format!("{topic}-{}", self.name())
    }
}

fn protobuf_refused() -> ApiError {
    ApiError::serialization("PROTOBUF is not supported by the embedded Schema Registry (AVRO and JSONSCHEMA are)")
}

/// The schema type of a v2 schema content type; `None` for the binary and JSON formats.
pub fn v2_schema_type(content_type: Option<&str>) -> Option<Result<SchemaType, ApiError>> {
    match media_type(content_type?).as_str() {
        "application/vnd.kafka.avro.v2+json" => Some(Ok(SchemaType::Avro)),
        "application/vnd.kafka.jsonschema.v2+json" => Some(Ok(SchemaType::Json)),
        "application/vnd.kafka.protobuf.v2+json" => Some(Err(protobuf_refused())),
        _ => None,
    }
}

fn check_type(schema: &RegisteredSchema, wanted: SchemaType) -> Result<(), ApiError> {
    if schema.schema_type == wanted {
        Ok(())
    } else {
        Err(conversion_failed(
            wanted,
            format!(
                "schema {} is a {} schema, the request asks for {}",
                schema.id,
                schema.schema_type.name(),
                wanted.name()
            ),
        ))
    }
}

fn by_id(registry: &SchemaRegistry, id: &Value) -> Result<Arc<RegisteredSchema>, ApiError> {
    let n = id
        .as_i64()
        .ok_or_else(|| ApiError::bad_request(format!("Cannot deserialize a schema id from {id}")))?;
    u32::try_from(n)
        .ok()
        .and_then(|n| registry.schema(n))
        .ok_or_else(|| schema_not_found(n))
}

/// A v2 schema-format body rewritten for the binary format, with the schema ids used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Serialized {
    /// The body, as `application/vnd.kafka.binary.v2+json`.
    pub body: Bytes,
    /// The key schema's id, when keys were serialized.
    pub key_schema_id: Option<u32>,
    /// The value schema's id, when values were serialized.
    pub value_schema_id: Option<u32>,
}

/// Serializes the keys and values of a v2 schema-format body. A body that is not a JSON object
/// with a `records` array is handed on unchanged, for the binary parser to answer its usual error.
pub fn v2_to_binary(
    registry: &SchemaRegistry,
    topic: &str,
    schema_type: SchemaType,
    body: &Bytes,
) -> Result<V2Serialized, ApiError> {
    let unchanged = || V2Serialized {
        body: body.clone(),
        key_schema_id: None,
        value_schema_id: None,
    };
    let Ok(Value::Object(mut root)) = serde_json::from_slice::<Value>(body) else {
        return Ok(unchanged());
    };
    let Some(Value::Array(records)) = root.get("records") else {
        return Ok(unchanged());
    };
    let has = |r: &Value, field: &str| r.get(field).is_some_and(|v| !v.is_null());
    let any_keys = records.iter().any(|r| has(r, "key"));
    let any_values = records.iter().any(|r| has(r, "value"));
    let mut schema_for = |part: Part| -> Result<Option<Arc<RegisteredSchema>>, ApiError> {
        let id_field = format!("{}_schema_id", part.name());
        let text_field = format!("{}_schema", part.name());
        let schema = match (root.remove(&id_field), root.remove(&text_field)) {
            (Some(id), _) if !id.is_null() => Some(by_id(registry, &id)?),
            (_, Some(Value::String(text))) => {
                let id = registry.register(&part.subject(topic), schema_type, &text)?;
                registry.schema(id)
            }
            (_, Some(other)) if !other.is_null() => {
                return Err(ApiError::bad_request(format!(
                    "{text_field} must be a string holding the schema"
                )))
            }
            _ => None,
        };
        if let Some(s) = &schema {
            check_type(s, schema_type)?;
        }
        Ok(schema)
    };
    let key_schema = schema_for(Part::Key)?;
    let value_schema = schema_for(Part::Value)?;
    if any_keys && key_schema.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            "Request includes keys but does not include key schema",
        ));
    }
    if any_values && value_schema.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
            "Request includes values but does not include value schema",
        ));
    }
    let Some(Value::Array(records)) = root.get_mut("records") else {
        return Ok(unchanged());
    };
    for record in records.iter_mut() {
        let Value::Object(rec) = record else { continue };
        for (field, schema) in [("key", &key_schema), ("value", &value_schema)] {
            if let (Some(data), Some(schema)) = (rec.get_mut(field), schema) {
                if !data.is_null() {
                    *data = Value::String(encode_base64(&schema.serialize(data)?));
                }
            }
        }
    }
    Ok(V2Serialized {
        body: Bytes::from(serde_json::to_vec(&root).unwrap_or_default()),
        key_schema_id: key_schema.map(|s| s.id),
        value_schema_id: value_schema.map(|s| s.id),
    })
}

const SCHEMA_FIELDS: [&str; 4] = ["schema_id", "schema_version", "subject", "schema"];

/// Serializes one v3 key or value object in place; `Ok(false)` when it is not schema-format data.
fn v3_data(registry: &SchemaRegistry, topic: &str, part: Part, obj: &mut Map<String, Value>) -> Result<bool, ApiError> {
    let declared = match obj.get("type") {
        Some(Value::String(t)) => match t.as_str() {
            "AVRO" => Some(SchemaType::Avro),
            "JSONSCHEMA" => Some(SchemaType::Json),
            "PROTOBUF" => return Err(protobuf_refused()),
            // BINARY, JSON, STRING, or a bad name: the codec answers.
            _ => return Ok(false),
        },
        _ => None,
    };
    let has_schema_fields = SCHEMA_FIELDS.iter().any(|f| obj.get(*f).is_some_and(|v| !v.is_null()));
    match obj.get("subject_name_strategy") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "TOPIC_NAME" => {}
        Some(other) => {
            return Err(ApiError::invalid_payload(&format!(
                "subject_name_strategy {other} is not supported by the embedded Schema Registry (TOPIC_NAME is)"
            )))
        }
    }
    let subject = match obj.get("subject") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => part.subject(topic),
        Some(other) => return Err(ApiError::bad_request(format!("subject must be a string, not {other}"))),
    };
    let schema = if let Some(id) = obj.get("schema_id").filter(|v| !v.is_null()) {
        by_id(registry, id)?
    } else if let Some(text) = obj.get("schema").filter(|v| !v.is_null()) {
        let Value::String(text) = text else {
            return Err(ApiError::bad_request("schema must be a string holding the schema"));
        };
        let id = registry.register(&subject, declared.unwrap_or(SchemaType::Avro), text)?;
        registry.schema(id).ok_or_else(|| schema_not_found(i64::from(id)))?
    } else {
        let version = match obj.get("schema_version") {
            None | Some(Value::Null) => VersionSpec::Latest,
            Some(Value::Number(n)) => VersionSpec::parse(&n.to_string())?,
            Some(Value::String(s)) => VersionSpec::parse(s)?,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "schema_version must be a number, not {other}"
                )))
            }
        };
        match registry.version(&subject, version) {
            Ok(v) => v.schema,
            // No type and no schema fields: without such a subject this is not schema data.
            Err(_) if declared.is_none() && !has_schema_fields => return Ok(false),
            Err(e) => return Err(e),
        }
    };
    check_type(&schema, declared.unwrap_or(schema.schema_type))?;
    let data = match obj.get("data") {
        None | Some(Value::Null) => Value::Null,
        Some(d) => Value::String(encode_base64(&schema.serialize(d)?)),
    };
    obj.clear();
    obj.insert("type".into(), json!("BINARY"));
    obj.insert("data".into(), data);
    Ok(true)
}

/// Serializes the schema-format key and value of one v3 record (its JSON text); the text is handed
/// on unchanged when it has none (or does not parse: the codec answers that).
pub fn v3_to_binary<'a>(registry: &SchemaRegistry, topic: &str, raw: &'a str) -> Result<Cow<'a, str>, ApiError> {
    let Ok(Value::Object(mut record)) = serde_json::from_str::<Value>(raw) else {
        return Ok(Cow::Borrowed(raw));
    };
    let mut changed = false;
    for part in [Part::Key, Part::Value] {
        if let Some(Value::Object(obj)) = record.get_mut(part.name()) {
            changed |= v3_data(registry, topic, part, obj)?;
        }
    }
    if changed {
        Ok(Cow::Owned(serde_json::to_string(&record).unwrap_or_default()))
    } else {
        Ok(Cow::Borrowed(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::BASE64;
    use base64::Engine;

    const USER: &str = r#"{"type":"record","name":"User","fields":[{"name":"name","type":"string"}]}"#;

    fn registry() -> SchemaRegistry {
        let r = SchemaRegistry::default();
        assert_eq!(r.register("t-value", SchemaType::Avro, USER).unwrap(), 1);
        assert_eq!(
            r.register("t-key", SchemaType::Json, r#"{"type":"integer"}"#).unwrap(),
            2
        );
        r
    }

    fn b64(v: &Value) -> Vec<u8> {
        BASE64.decode(v.as_str().unwrap_or_default()).unwrap_or_default()
    }

    #[test]
    fn v2_values_by_id_and_by_schema_text() {
        let r = registry();
        let body = Bytes::from(r#"{"value_schema_id":1,"records":[{"value":{"name":"a"}},{"value":null}]}"#);
        let out = v2_to_binary(&r, "t", SchemaType::Avro, &body).unwrap();
        assert_eq!((out.key_schema_id, out.value_schema_id), (None, Some(1)));
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(b64(&v["records"][0]["value"]), vec![0, 0, 0, 0, 1, 2, b'a']);
        assert!(v["records"][1]["value"].is_null());
        assert!(v.get("value_schema_id").is_none());
        // A schema text registers under {topic}-value.
        let body = Bytes::from(r#"{"value_schema":"\"string\"","records":[{"value":"x"}]}"#);
        let out = v2_to_binary(&r, "t", SchemaType::Avro, &body).unwrap();
        assert_eq!(out.value_schema_id, Some(3));
        assert_eq!(r.version("t-value", VersionSpec::Latest).unwrap().schema.id, 3);
    }

    #[test]
    fn v2_refusals() {
        let r = registry();
        let e = v2_to_binary(
            &r,
            "t",
            SchemaType::Avro,
            &Bytes::from(r#"{"records":[{"value":{"name":"a"}}]}"#),
        )
        .unwrap_err();
        assert_eq!((e.status.as_u16(), e.error_code), (422, 42202));
        let e = v2_to_binary(
            &r,
            "t",
            SchemaType::Avro,
            &Bytes::from(r#"{"value_schema_id":1,"records":[{"key":1,"value":{"name":"a"}}]}"#),
        )
        .unwrap_err();
        assert_eq!(e.error_code, 42201);
        // One bad record fails the whole request.
        let e = v2_to_binary(
            &r,
            "t",
            SchemaType::Avro,
            &Bytes::from(r#"{"value_schema_id":1,"records":[{"value":{"name":"a"}},{"value":{"name":5}}]}"#),
        )
        .unwrap_err();
        assert_eq!((e.status.as_u16(), e.error_code), (422, 42203));
        let e = v2_to_binary(
            &r,
            "t",
            SchemaType::Avro,
            &Bytes::from(r#"{"value_schema_id":9,"records":[{"value":1}]}"#),
        )
        .unwrap_err();
        assert_eq!((e.status.as_u16(), e.error_code), (404, 40403));
        // A JSON schema id with the Avro content type.
        let e = v2_to_binary(
            &r,
            "t",
            SchemaType::Avro,
            &Bytes::from(r#"{"value_schema_id":2,"records":[{"value":1}]}"#),
        )
        .unwrap_err();
        assert_eq!(e.error_code, 42203);
        // Not a JSON object: handed on for the codec's own error.
        let body = Bytes::from("[1]");
        assert_eq!(v2_to_binary(&r, "t", SchemaType::Avro, &body).unwrap().body, body);
        assert_eq!(
            v2_schema_type(Some("application/vnd.kafka.protobuf.v2+json")).map(|r| r.is_err()),
            Some(true)
        );
        assert!(v2_schema_type(Some("application/vnd.kafka.binary.v2+json")).is_none());
    }

    #[test]
    fn v3_schema_data() {
        let r = registry();
        let raw = r#"{"key":{"schema_id":2,"data":7},"value":{"schema_id":1,"data":{"name":"a"}}}"#;
        let out: Value = serde_json::from_str(&v3_to_binary(&r, "t", raw).unwrap()).unwrap();
        assert_eq!(out["key"]["type"], json!("BINARY"));
        assert_eq!(b64(&out["key"]["data"]), b"\0\0\0\0\x027".to_vec());
        assert_eq!(b64(&out["value"]["data"]), vec![0, 0, 0, 0, 1, 2, b'a']);
        // Subject and version; subject defaulting to {topic}-value with the latest version; no type.
        for raw in [
            r#"{"value":{"subject":"t-value","schema_version":1,"data":{"name":"a"}}}"#,
            r#"{"value":{"type":"AVRO","data":{"name":"a"}}}"#,
            r#"{"value":{"data":{"name":"a"}}}"#,
        ] {
            let out: Value = serde_json::from_str(&v3_to_binary(&r, "t", raw).unwrap()).unwrap();
            assert_eq!(b64(&out["value"]["data"]), vec![0, 0, 0, 0, 1, 2, b'a'], "{raw}");
        }
        // No schema data: unchanged.
        let raw = r#"{"value":{"type":"JSON","data":{"x":1}}}"#;
        assert!(matches!(v3_to_binary(&r, "t", raw).unwrap(), Cow::Borrowed(_)));
        let raw = r#"{"value":{"data":1}}"#;
        assert!(matches!(v3_to_binary(&r, "other", raw).unwrap(), Cow::Borrowed(_)));
        // Refusals.
        let e = v3_to_binary(&r, "t", r#"{"value":{"schema_id":1,"data":{"name":1}}}"#).unwrap_err();
        assert_eq!((e.status.as_u16(), e.error_code), (422, 42203));
        let e = v3_to_binary(&r, "t", r#"{"value":{"type":"JSONSCHEMA","schema_id":1,"data":{}}}"#).unwrap_err();
        assert_eq!(e.error_code, 42203);
        let e = v3_to_binary(&r, "t", r#"{"value":{"subject":"nope","data":{}}}"#).unwrap_err();
        assert_eq!(e.error_code, 40401);
        let e = v3_to_binary(&r, "t", r#"{"value":{"type":"PROTOBUF","data":{}}}"#).unwrap_err();
        assert_eq!(e.error_code, 42207);
    }
}
