//! An in-memory, Confluent-compatible Schema Registry, and the serializers of REST Proxy's schema
//! formats (AVRO, JSONSCHEMA) that use it.
//!
//! The registry is served by the same HTTP listener as the REST proxy ([`api`]): Confluent's
//! registry paths (`/subjects/...`, `/schemas/...`) do not overlap REST Proxy's (`/topics/...`,
//! `/v3/...`), so one `--listen` address is both the REST proxy URL and the registry URL
//! (Confluent deploys them as two services, on 8082 and 8081 by default; point both settings of a
//! client at the one address here). Subset served: register a schema under a subject, get a
//! subject's version (a number or `latest`), list a subject's versions, list subjects, get a
//! schema by id. Schema types AVRO (the default) and JSON; PROTOBUF and schema references are
//! refused with 422 / 42201. No compatibility checks: every new schema becomes a new version.
//!
//! Ids are global and start at 1; registering a schema that the registry already holds returns its
//! id (and, under a subject that has it already, no new version), as Confluent documents for
//! `POST /subjects/{subject}/versions` (docs.confluent.io/platform/current/schema-registry/develop/api.html).
//! Two schemas are the same when they have the same type and the same Avro Parsing Canonical Form
//! (AVRO) or the same parsed JSON (JSON).
//!
//! [`RegisteredSchema::serialize`] writes Confluent's wire format, as its serializers do
//! (docs.confluent.io/platform/current/schema-registry/fundamentals/serdes-develop/index.html,
//! "Wire format"): magic byte 0, the schema id as 4 big-endian bytes, then the Avro binary
//! encoding of the value (AVRO) or the value's JSON text (JSON, after validation against the
//! schema). [`produce`] turns REST Proxy's schema-format produce requests into those bytes.

pub mod api;
pub mod produce;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hyper::StatusCode;
use serde_json::Value;

use crate::error::ApiError;

/// The magic byte that starts Confluent's wire format.
pub const MAGIC_BYTE: u8 = 0;

/// Registry error codes (docs.confluent.io Schema Registry API reference, "Errors").
pub mod codes {
    /// Subject not found.
    pub const SUBJECT_NOT_FOUND: i32 = 40401;
    /// Version not found.
    pub const VERSION_NOT_FOUND: i32 = 40402;
    /// Schema not found.
    pub const SCHEMA_NOT_FOUND: i32 = 40403;
    /// Invalid schema or schema type.
    pub const INVALID_SCHEMA: i32 = 42201;
    /// Invalid version.
    pub const INVALID_VERSION: i32 = 42202;
    /// REST Proxy: a value that does not convert to its schema (kafka-rest `Errors.java`,
    /// `JSON_AVRO_CONVERSION_ERROR_CODE`, answered 422); used for JSON Schema too.
    pub const CONVERSION_FAILED: i32 = 42203;
}

/// The type of a registered schema (`schemaType`; absent means AVRO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaType {
    /// Apache Avro.
    Avro,
    /// JSON Schema.
    Json,
}

impl SchemaType {
    /// The registry's name for it.
    pub fn name(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
        }
    }

    /// Parses `schemaType`; `None` (absent) is AVRO.
    pub fn parse(name: Option<&str>) -> Result<SchemaType, ApiError> {
        match name {
            None | Some("AVRO") => Ok(SchemaType::Avro),
            Some("JSON") => Ok(SchemaType::Json),
            Some(other) => Err(invalid_schema(format!(
                "Invalid schema type {other}: this registry serves AVRO and JSON"
            ))),
        }
    }
}

/// A parsed schema, ready to serialize values.
#[derive(Debug)]
enum Compiled {
    Avro(apache_avro::Schema),
    Json(jsonschema::Validator),
}

/// One registered schema.
#[derive(Debug)]
pub struct RegisteredSchema {
    /// Global id.
    pub id: u32,
    /// Type.
    pub schema_type: SchemaType,
    /// The schema text as first registered.
    pub text: String,
    /// What identifies it: the canonical form (AVRO) or the parsed JSON (JSON).
    identity: Identity,
    compiled: Compiled,
}

#[derive(Debug, PartialEq)]
enum Identity {
    Avro(String),
    Json(Value),
}

/// A subject's version, as `GET /subjects/{subject}/versions/{version}` returns it.
#[derive(Debug, Clone)]
pub struct SubjectVersion {
    /// Subject.
    pub subject: String,
    /// Version, from 1.
    pub version: u32,
    /// The schema.
    pub schema: Arc<RegisteredSchema>,
}

/// A version asked for: a number or `latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    /// The newest version.
    Latest,
    /// A version number, from 1.
    Number(u32),
}

impl VersionSpec {
    /// Parses a version as the registry does: `latest`, `-1` (latest), or 1..=2^31-1; anything else
    /// is 422 / 42202.
    pub fn parse(text: &str) -> Result<VersionSpec, ApiError> {
        if text == "latest" || text == "-1" {
            return Ok(VersionSpec::Latest);
        }
        match text.parse::<i64>() {
            Ok(n) if (1..=i64::from(i32::MAX)).contains(&n) => Ok(VersionSpec::Number(n as u32)),
            _ => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::INVALID_VERSION,
                format!(
                    "The specified version '{text}' is not a valid version id. Allowed values are between \
                     [1, 2^31-1] and the string \"latest\""
                ),
            )),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// By id - 1.
    schemas: Vec<Arc<RegisteredSchema>>,
    /// Subject → schema ids, version n at index n - 1.
    subjects: BTreeMap<String, Vec<u32>>,
}

/// The in-memory Schema Registry.
#[derive(Debug, Default)]
pub struct SchemaRegistry {
    state: Mutex<State>,
}

fn invalid_schema(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, codes::INVALID_SCHEMA, message)
}

/// 404 / 40401 "Subject 'x' not found.".
pub fn subject_not_found(subject: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        codes::SUBJECT_NOT_FOUND,
        format!("Subject '{subject}' not found."),
    )
}

/// 404 / 40403 "Schema N not found".
pub fn schema_not_found(id: i64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        codes::SCHEMA_NOT_FOUND,
        format!("Schema {id} not found"),
    )
}

/// 422 / 42203: a value that does not match its schema.
pub fn conversion_failed(schema_type: SchemaType, reason: impl std::fmt::Display) -> ApiError {
    let message = match schema_type {
        SchemaType::Avro => format!("Conversion of JSON to Avro failed: {reason}"),
        SchemaType::Json => format!("Conversion of JSON to JSON Schema failed: {reason}"),
    };
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, codes::CONVERSION_FAILED, message)
}

/// Parses and checks a schema text of `schema_type`.
fn compile(schema_type: SchemaType, text: &str) -> Result<(Identity, Compiled), ApiError> {
    match schema_type {
        SchemaType::Avro => {
            let schema = apache_avro::Schema::parse_str(text)
                .map_err(|e| invalid_schema(format!("Invalid schema {text}: {e}")))?;
            Ok((Identity::Avro(schema.canonical_form()), Compiled::Avro(schema)))
        }
        SchemaType::Json => {
            let value: Value =
                serde_json::from_str(text).map_err(|e| invalid_schema(format!("Invalid schema {text}: {e}")))?;
            let validator =
                jsonschema::validator_for(&value).map_err(|e| invalid_schema(format!("Invalid schema {text}: {e}")))?;
            Ok((Identity::Json(value), Compiled::Json(validator)))
        }
    }
}

impl SchemaRegistry {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated (each update is one
        // push), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `text` under `subject`; answers the schema's id (an existing one when the registry
    /// already holds the same schema).
    pub fn register(&self, subject: &str, schema_type: SchemaType, text: &str) -> Result<u32, ApiError> {
        if subject.is_empty() || subject.chars().any(char::is_control) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                42208,
                format!("Invalid subject {subject}"),
            ));
        }
        let (identity, compiled) = compile(schema_type, text)?;
        let mut state = self.lock();
        let existing = state
            .schemas
            .iter()
            .find(|s| s.schema_type == schema_type && s.identity == identity)
            .map(|s| s.id);
        let id = match existing {
            Some(id) => id,
            None => {
                let id = u32::try_from(state.schemas.len() + 1).unwrap_or(u32::MAX);
                state.schemas.push(Arc::new(RegisteredSchema {
                    id,
                    schema_type,
                    text: text.to_string(),
                    identity,
                    compiled,
                }));
                id
            }
        };
        let versions = state.subjects.entry(subject.to_string()).or_default();
        if !versions.contains(&id) {
            versions.push(id);
        }
        Ok(id)
    }

    /// The schema with global id `id`.
    pub fn schema(&self, id: u32) -> Option<Arc<RegisteredSchema>> {
        let state = self.lock();
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        state.schemas.get(index).cloned()
    }

    /// The subjects, sorted.
    pub fn subjects(&self) -> Vec<String> {
        self.lock().subjects.keys().cloned().collect()
    }

    /// The version numbers of `subject`.
    pub fn versions(&self, subject: &str) -> Result<Vec<u32>, ApiError> {
        let state = self.lock();
        let versions = state.subjects.get(subject).ok_or_else(|| subject_not_found(subject))?;
        Ok((1..=versions.len() as u32).collect())
    }

    /// One version of `subject`: 40401 when the subject does not exist, 40402 when the version
    /// does not.
    pub fn version(&self, subject: &str, version: VersionSpec) -> Result<SubjectVersion, ApiError> {
        let state = self.lock();
        let versions = state.subjects.get(subject).ok_or_else(|| subject_not_found(subject))?;
        let number = match version {
            VersionSpec::Latest => versions.len() as u32,
            VersionSpec::Number(n) => n,
        };
        let id = (number as usize)
            .checked_sub(1)
            .and_then(|i| versions.get(i))
            .copied()
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    codes::VERSION_NOT_FOUND,
                    format!("Version {number} not found."),
                )
            })?;
        let schema = state
            .schemas
            .get(id as usize - 1)
            .cloned()
            .ok_or_else(|| schema_not_found(i64::from(id)))?;
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version: number,
            schema,
        })
    }

    /// Forgets every schema and subject.
    pub fn clear(&self) {
        *self.lock() = State::default();
    }
}

impl RegisteredSchema {
    /// Serializes a JSON value in Confluent's wire format; a value that does not match the
    /// schema is 422 / 42203.
    pub fn serialize(&self, value: &Value) -> Result<Vec<u8>, ApiError> {
        let mut out = Vec::with_capacity(64);
        out.push(MAGIC_BYTE);
        out.extend_from_slice(&self.id.to_be_bytes());
        match &self.compiled {
            Compiled::Avro(schema) => {
                // Plain JSON resolved against the schema (Avro's schema-resolution rules: a record
                // from an object, defaults for missing fields, a union from the first branch the
                // value matches); not Avro's JSON encoding, where unions are wrapped.
                let resolved = apache_avro::types::Value::from(value.clone())
                    .resolve(schema)
                    .map_err(|e| conversion_failed(SchemaType::Avro, e))?;
                let datum =
                    apache_avro::to_avro_datum(schema, resolved).map_err(|e| conversion_failed(SchemaType::Avro, e))?;
                out.extend_from_slice(&datum);
            }
            Compiled::Json(validator) => {
                if let Err(e) = validator.validate(value) {
                    return Err(conversion_failed(
                        SchemaType::Json,
                        format!("{e} (at '{}')", e.instance_path()),
                    ));
                }
                out.extend_from_slice(serde_json::to_string(value).unwrap_or_default().as_bytes());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const USER: &str = r#"{"type":"record","name":"User","fields":[{"name":"name","type":"string"},{"name":"age","type":"int"},{"name":"email","type":["null","string"],"default":null}]}"#;

    #[test]
    fn same_schema_same_id_and_versions_per_subject() {
        let r = SchemaRegistry::default();
        let id = r.register("users-value", SchemaType::Avro, USER).unwrap();
        assert_eq!(id, 1);
        // Same schema with other whitespace: same canonical form, same id, no new version.
        let spaced = USER.replace(',', ", ");
        assert_eq!(r.register("users-value", SchemaType::Avro, &spaced).unwrap(), 1);
        assert_eq!(r.versions("users-value").unwrap(), vec![1]);
        // Same schema under another subject: same id, version 1 there.
        assert_eq!(r.register("other-value", SchemaType::Avro, USER).unwrap(), 1);
        let json_id = r
            .register("users-value", SchemaType::Json, r#"{"type":"object"}"#)
            .unwrap();
        assert_eq!(json_id, 2);
        let latest = r.version("users-value", VersionSpec::Latest).unwrap();
        assert_eq!((latest.version, latest.schema.id), (2, 2));
        assert_eq!(r.version("users-value", VersionSpec::Number(1)).unwrap().schema.id, 1);
        assert_eq!(r.subjects(), vec!["other-value".to_string(), "users-value".to_string()]);
    }

    #[test]
    fn lookups_fail_with_the_registry_codes() {
        let r = SchemaRegistry::default();
        assert_eq!(r.version("nope", VersionSpec::Latest).unwrap_err().error_code, 40401);
        r.register("s", SchemaType::Avro, r#""string""#).unwrap();
        let e = r.version("s", VersionSpec::Number(2)).unwrap_err();
        assert_eq!((e.status.as_u16(), e.error_code), (404, 40402));
        assert!(r.schema(9).is_none());
        assert!(r.schema(0).is_none());
        assert_eq!(VersionSpec::parse("0").unwrap_err().error_code, 42202);
        assert_eq!(VersionSpec::parse("x").unwrap_err().error_code, 42202);
        assert_eq!(VersionSpec::parse("-1").unwrap(), VersionSpec::Latest);
        assert_eq!(VersionSpec::parse("3").unwrap(), VersionSpec::Number(3));
        let e = r.register("s", SchemaType::Avro, r#"{"type":"recrd"}"#).unwrap_err();
        assert_eq!((e.status.as_u16(), e.error_code), (422, 42201));
        let e = r.register("s", SchemaType::Json, "{not json").unwrap_err();
        assert_eq!(e.error_code, 42201);
        assert_eq!(SchemaType::parse(Some("PROTOBUF")).unwrap_err().error_code, 42201);
    }

    #[test]
    fn avro_wire_format() {
        let r = SchemaRegistry::default();
        let id = r.register("u", SchemaType::Avro, USER).unwrap();
        let schema = r.schema(id).unwrap();
        let bytes = schema.serialize(&json!({"name": "Al", "age": 3})).unwrap();
        // magic, id 1, then: string "Al" (zigzag length 2 = 4), int 3 (zigzag 6), union branch 0 (null).
        assert_eq!(bytes, vec![0, 0, 0, 0, 1, 4, b'A', b'l', 6, 0]);
        let bytes = schema.serialize(&json!({"name": "", "age": -1, "email": "e"})).unwrap();
        assert_eq!(bytes, vec![0, 0, 0, 0, 1, 0, 1, 2, 2, b'e']);
        let e = schema.serialize(&json!({"name": "Al", "age": "three"})).unwrap_err();
        assert_eq!((e.status.as_u16(), e.error_code), (422, 42203));
        assert!(
            e.message.starts_with("Conversion of JSON to Avro failed: "),
            "{}",
            e.message
        );
        assert!(schema.serialize(&json!({"age": 3})).is_err());
    }

    #[test]
    fn json_schema_wire_format() {
        let r = SchemaRegistry::default();
        let id = r
            .register(
                "j",
                SchemaType::Json,
                r#"{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}"#,
            )
            .unwrap();
        let schema = r.schema(id).unwrap();
        assert_eq!(
            schema.serialize(&json!({"n": 5})).unwrap(),
            b"\0\0\0\0\x01{\"n\":5}".to_vec()
        );
        let e = schema.serialize(&json!({"n": "five"})).unwrap_err();
        assert_eq!((e.status.as_u16(), e.error_code), (422, 42203));
        assert!(e.message.contains("/n"), "{}", e.message);
        assert!(schema.serialize(&json!({})).is_err());
    }
}
