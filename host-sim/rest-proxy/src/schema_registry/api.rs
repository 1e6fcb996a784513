//! The Schema Registry's HTTP routes, served beside the REST proxy (see [`super`]):
//!
//! - `POST /subjects/{subject}/versions` `{"schema": "...", "schemaType"?: "AVRO"|"JSON"}` → `{"id": N}`
//! - `GET /subjects` → `["a", ...]`; `GET /subjects/{subject}/versions` → `[1, 2]`
//! - `GET /subjects/{subject}/versions/{version}` → `{"subject","version","id","schemaType"?,"schema"}`
//! - `GET /schemas/ids/{id}` → `{"schemaType"?,"schema"}`
//!
//! `schemaType` is left out of answers for AVRO schemas, as Confluent's registry does. Errors use
//! the registry's envelope `{"error_code","message"}` (docs.confluent.io/platform/current/
//! schema-registry/develop/api.html): 404 / 40401 subject, 40402 version, 40403 schema not found;
//! 422 / 42201 invalid schema, 42202 invalid version; 404 / 404 unknown path, 405 / 405 wrong method.
//! Answers are `application/vnd.schemaregistry.v1+json`. Query parameters are ignored.

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::{schema_not_found, SchemaRegistry, SchemaType, SubjectVersion, VersionSpec};
use crate::error::ApiError;
use crate::reply::Reply;

/// Content type of the registry's answers.
pub const SCHEMA_REGISTRY_JSON: &str = "application/vnd.schemaregistry.v1+json";

/// A registry route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /subjects`.
    Subjects,
    /// `GET /subjects/{subject}/versions`.
    Versions(String),
    /// `POST /subjects/{subject}/versions`.
    Register(String),
    /// `GET /subjects/{subject}/versions/{version}`.
    Version(String, String),
    /// `GET /schemas/ids/{id}`.
    SchemaById(String),
    /// A registry path with another method, or an unknown path under `/subjects` or `/schemas`.
    Refused(ApiError),
}

/// Whether `path` belongs to the registry (`/subjects...` or `/schemas...`), so the REST proxy's
/// router hands it over.
pub fn is_registry_path(path: &str) -> bool {
    ["/subjects", "/schemas"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
}

/// Percent-decodes a path segment (subjects such as `a%2Fb`); `None` when it is not valid UTF-8.
fn decode_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Maps a registry path and method to a route.
pub fn route(method: &Method, path: &str) -> Route {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
    let get = method == Method::GET || method == Method::HEAD;
    let not_allowed = || Route::Refused(ApiError::method_not_allowed());
    let decoded = |s: &str| decode_segment(s).unwrap_or_else(|| s.to_string());
    match segs.as_slice() {
        ["subjects"] if get => Route::Subjects,
        ["subjects", s, "versions"] if get => Route::Versions(decoded(s)),
        ["subjects", s, "versions"] if method == Method::POST => Route::Register(decoded(s)),
        ["subjects", s, "versions", v] if get => Route::Version(decoded(s), v.to_string()),
        ["schemas", "ids", id] if get => Route::SchemaById(id.to_string()),
        ["subjects"] | ["subjects", _, "versions"] | ["subjects", _, "versions", _] | ["schemas", "ids", _] => {
            not_allowed()
        }
        _ => Route::Refused(ApiError::no_such_path()),
    }
}

fn error(e: &ApiError) -> Reply {
    Reply::error(e, SCHEMA_REGISTRY_JSON)
}

fn ok(value: &Value) -> Reply {
    Reply::json(StatusCode::OK, SCHEMA_REGISTRY_JSON, value)
}

fn version_json(v: &SubjectVersion) -> Value {
    let mut m = Map::new();
    m.insert("subject".into(), json!(v.subject));
    m.insert("version".into(), json!(v.version));
    m.insert("id".into(), json!(v.schema.id));
    if v.schema.schema_type != SchemaType::Avro {
        m.insert("schemaType".into(), json!(v.schema.schema_type.name()));
    }
    m.insert("schema".into(), json!(v.schema.text));
    Value::Object(m)
}

/// Parses a registration body: `{"schema": "...", "schemaType"?, "references"?}`.
fn registration(body: &[u8]) -> Result<(SchemaType, String), ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Value::Object(obj) = v else {
        return Err(ApiError::bad_request("The registration body must be a JSON object"));
    };
    let schema_type = match obj.get("schemaType") {
        None | Some(Value::Null) => SchemaType::parse(None)?,
        Some(Value::String(t)) => SchemaType::parse(Some(t))?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "schemaType must be a string, not {other}"
            )))
        }
    };
    if obj
        .get("references")
        .is_some_and(|r| !r.is_null() && r.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            super::codes::INVALID_SCHEMA,
            "Schema references are not supported by this registry",
        ));
    }
    match obj.get("schema") {
        Some(Value::String(s)) => Ok((schema_type, s.clone())),
        _ => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            super::codes::INVALID_SCHEMA,
            "Empty schema: \"schema\" must be a string holding the schema",
        )),
    }
}

/// Answers one registry request.
pub fn handle(registry: &SchemaRegistry, route: Route, body: Result<Bytes, ApiError>) -> Reply {
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(&e),
    };
    let result = match route {
        Route::Refused(e) => Err(e),
        Route::Subjects => Ok(json!(registry.subjects())),
        Route::Versions(subject) => registry.versions(&subject).map(|v| json!(v)),
        Route::Register(subject) => registration(&body)
            .and_then(|(t, text)| registry.register(&subject, t, &text))
            .map(|id| json!({ "id": id })),
        Route::Version(subject, version) => VersionSpec::parse(&version)
            .and_then(|v| registry.version(&subject, v))
            .map(|v| version_json(&v)),
        Route::SchemaById(id) => match id.parse::<u32>() {
            Ok(n) => match registry.schema(n) {
                Some(s) => {
                    let mut m = Map::new();
                    if s.schema_type != SchemaType::Avro {
                        m.insert("schemaType".into(), json!(s.schema_type.name()));
                    }
                    m.insert("schema".into(), json!(s.text));
                    Ok(Value::Object(m))
                }
                None => Err(schema_not_found(i64::from(n))),
            },
            // Jersey cannot convert the path parameter to an int: 404.
            Err(_) => Err(ApiError::no_such_path()),
        },
    };
    match result {
        Ok(v) => ok(&v),
        Err(e) => error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(r: &SchemaRegistry, method: Method, path: &str, body: &str) -> (u16, Value) {
        let reply = handle(r, route(&method, path), Ok(Bytes::from(body.to_string())));
        assert_eq!(reply.content_type, SCHEMA_REGISTRY_JSON);
        (
            reply.status.as_u16(),
            serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
        )
    }

    #[test]
    fn register_and_read_back() {
        let r = SchemaRegistry::default();
        let avro = json!({"schema": "{\"type\":\"string\"}"}).to_string();
        assert_eq!(
            call(&r, Method::POST, "/subjects/t-value/versions", &avro),
            (200, json!({"id": 1}))
        );
        assert_eq!(
            call(&r, Method::POST, "/subjects/t-value/versions/", &avro),
            (200, json!({"id": 1}))
        );
        let js = json!({"schema": "{\"type\":\"object\"}", "schemaType": "JSON"}).to_string();
        assert_eq!(
            call(&r, Method::POST, "/subjects/a%2Fb/versions", &js),
            (200, json!({"id": 2}))
        );
        assert_eq!(call(&r, Method::GET, "/subjects", ""), (200, json!(["a/b", "t-value"])));
        assert_eq!(
            call(&r, Method::GET, "/subjects/t-value/versions", ""),
            (200, json!([1]))
        );
        assert_eq!(
            call(&r, Method::GET, "/subjects/t-value/versions/latest", ""),
            (
                200,
                json!({"subject": "t-value", "version": 1, "id": 1, "schema": "{\"type\":\"string\"}"})
            )
        );
        assert_eq!(
            call(&r, Method::GET, "/subjects/a%2Fb/versions/1", ""),
            (
                200,
                json!({"subject": "a/b", "version": 1, "id": 2, "schemaType": "JSON", "schema": "{\"type\":\"object\"}"})
            )
        );
        assert_eq!(
            call(&r, Method::GET, "/schemas/ids/2", ""),
            (200, json!({"schemaType": "JSON", "schema": "{\"type\":\"object\"}"}))
        );
    }

    #[test]
    fn errors_use_the_registry_envelope() {
        let r = SchemaRegistry::default();
        assert_eq!(
            call(&r, Method::GET, "/subjects/x/versions/latest", ""),
            (404, json!({"error_code": 40401, "message": "Subject 'x' not found."}))
        );
        assert_eq!(
            call(&r, Method::GET, "/schemas/ids/7", ""),
            (404, json!({"error_code": 40403, "message": "Schema 7 not found"}))
        );
        let (status, body) = call(
            &r,
            Method::POST,
            "/subjects/x/versions",
            r#"{"schema":"{\"type\":\"nope\"}"}"#,
        );
        assert_eq!((status, body["error_code"].clone()), (422, json!(42201)));
        let (status, body) = call(
            &r,
            Method::POST,
            "/subjects/x/versions",
            r#"{"schema":"\"int\"","schemaType":"PROTOBUF"}"#,
        );
        assert_eq!((status, body["error_code"].clone()), (422, json!(42201)));
        let (status, _) = call(&r, Method::POST, "/subjects/x/versions", "{oops");
        assert_eq!(status, 400);
        call(&r, Method::POST, "/subjects/x/versions", r#"{"schema":"\"int\""}"#);
        let (status, body) = call(&r, Method::GET, "/subjects/x/versions/0", "");
        assert_eq!((status, body["error_code"].clone()), (422, json!(42202)));
        let (status, body) = call(&r, Method::GET, "/subjects/x/versions/5", "");
        assert_eq!((status, body["error_code"].clone()), (404, json!(40402)));
        assert_eq!(call(&r, Method::DELETE, "/subjects/x/versions/1", "").0, 405);
        assert_eq!(call(&r, Method::GET, "/schemas/nope", "").0, 404);
    }

    #[test]
    fn registry_paths() {
        assert!(is_registry_path("/subjects"));
        assert!(is_registry_path("/subjects/x/versions"));
        assert!(is_registry_path("/schemas/ids/1"));
        assert!(!is_registry_path("/subjectsx"));
        assert!(!is_registry_path("/topics/subjects"));
        assert_eq!(decode_segment("a%2Fb%"), Some("a/b%".to_string()));
        assert_eq!(decode_segment("%ff"), None);
    }
}
