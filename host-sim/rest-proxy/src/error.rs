//! Errors: Confluent's error envelope ([`ApiError`]) that HTTP clients see, and the typed errors
//! of the Rust API ([`ConfigError`], [`RestProxyError`], [`ConnectionDropped`]).
//!
//! Error codes and messages follow confluentinc/kafka-rest (`Errors.java`) and rest-utils
//! (`KafkaExceptionMapper`, `WebApplicationExceptionMapper`, `JsonParseExceptionMapper`,
//! `ConstraintViolationExceptionMapper`): the envelope is `{"error_code":N,"message":"..."}`,
//! `error_code` is either the HTTP status or the status times 100 plus a sub-code (40401).

use hyper::StatusCode;
use serde::Serialize;

/// Confluent's "Topic not found." (v2, `Errors.TOPIC_NOT_FOUND_MESSAGE`).
pub const TOPIC_NOT_FOUND_MESSAGE: &str = "Topic not found.";
/// Confluent's "Partition not found." (`Errors.PARTITION_NOT_FOUND_MESSAGE`).
pub const PARTITION_NOT_FOUND_MESSAGE: &str = "Partition not found.";

/// Confluent error codes used here (`KafkaExceptionMapper` and `Errors` in kafka-rest).
pub mod codes {
    /// Bad request from Kafka's side (invalid topic name and the like).
    pub const KAFKA_BAD_REQUEST: i32 = 40002;
    /// Kafka authentication failed (v2 answers 401).
    pub const KAFKA_AUTHENTICATION: i32 = 40101;
    /// Kafka authorization failed (v2 answers 403).
    pub const KAFKA_AUTHORIZATION: i32 = 40301;
    /// Topic not found.
    pub const TOPIC_NOT_FOUND: i32 = 40401;
    /// Partition not found.
    pub const PARTITION_NOT_FOUND: i32 = 40402;
    /// Invalid payload (`Errors.INVALID_PAYLOAD_ERROR_CODE`).
    pub const INVALID_PAYLOAD: i32 = 42206;
    /// Serialization failed (`Errors.SERIALIZATION_EXCEPTION_ERROR_CODE`).
    pub const SERIALIZATION: i32 = 42207;
    /// Non-retriable Kafka error (`KAFKA_ERROR_ERROR_CODE`).
    pub const KAFKA_ERROR: i32 = 50002;
    /// Retriable Kafka error (`KAFKA_RETRIABLE_ERROR_ERROR_CODE`).
    pub const KAFKA_RETRIABLE: i32 = 50003;
}

/// A request-level error: an HTTP status and Confluent's `{"error_code","message"}` body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {error_code}: {message}")]
pub struct ApiError {
    /// HTTP status of the response.
    pub status: StatusCode,
    /// `error_code` of the body.
    pub error_code: i32,
    /// `message` of the body.
    pub message: String,
}

/// The JSON body of an [`ApiError`].
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// Confluent error code.
    pub error_code: i32,
    /// Human-readable message.
    pub message: &'a str,
}

impl ApiError {
    /// An error with any status and code.
    pub fn new(status: StatusCode, error_code: i32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error_code,
            message: message.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error_code: self.error_code,
            message: &self.message,
        }
    }

    /// Jersey's 404 for a path no resource matches.
    pub fn no_such_path() -> Self {
        Self::new(StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found")
    }

    /// Jersey's 405 for a known path with another method.
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, 405, "HTTP 405 Method Not Allowed")
    }

    /// Jersey's 415 for a request Content-Type the resource does not consume.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
            "HTTP 415 Unsupported Media Type",
        )
    }

    /// 413 for a body over the configured limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            413,
            format!("Request body is larger than the limit of {limit} bytes."),
        )
    }

    /// 400 with code 400: unparsable JSON (`JsonParseExceptionMapper`), JSON of the wrong shape
    /// (`JsonMappingExceptionMapper`) or data that cannot be decoded (`BadRequestException`).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 400, message)
    }

    /// 422 with code 422: a bean-validation failure (`ConstraintViolationExceptionMapper`), such as
    /// an empty `records` list or an unrecognized field in a v2 request.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, 422, message)
    }

    /// 422 / 42206 `Errors.invalidPayloadException`.
    pub fn invalid_payload(cause: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::INVALID_PAYLOAD,
            format!("Payload error. {cause}"),
        )
    }

    /// 422 / 42207 `Errors.messageSerializationException`.
    pub fn serialization(cause: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::SERIALIZATION,
            format!("Error serializing message. {cause}"),
        )
    }

    /// 404 / 40401 with a message of the caller's choice (v2 uses [`TOPIC_NOT_FOUND_MESSAGE`]).
    pub fn topic_not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, codes::TOPIC_NOT_FOUND, message)
    }

    /// 404 / 40402 "Partition not found."
    pub fn partition_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            codes::PARTITION_NOT_FOUND,
            PARTITION_NOT_FOUND_MESSAGE,
        )
    }

    /// 400 / 40002 for an illegal topic name (`InvalidTopicException`).
    pub fn invalid_topic(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::KAFKA_BAD_REQUEST, message)
    }

    /// v3's 404 for a cluster id other than ours (`"Cluster %s cannot be found."`).
    pub fn cluster_not_found(cluster_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            404,
            format!("Cluster {cluster_id} cannot be found."),
        )
    }

    /// An error for a Confluent `error_code` whose status is the code's first three digits
    /// (50003 → 500, 40101 → 401); codes that are plain statuses (404) map to themselves.
    pub fn from_code(error_code: i32, message: impl Into<String>) -> Self {
        Self::new(status_of_code(error_code), error_code, message)
    }
}

/// The HTTP status a Confluent error code stands for: `40401` → 404, `503` → 503; anything that
/// is not a valid status maps to 500.
pub fn status_of_code(error_code: i32) -> StatusCode {
    let status = if error_code >= 10_000 {
        error_code / 100
    } else {
        error_code
    };
    u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A bad setting or flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `--topic` value that is not `NAME` or `NAME:PARTITIONS` with a legal Kafka topic name.
    #[error("bad topic `{0}`: expected NAME or NAME:PARTITIONS, NAME of [a-zA-Z0-9._-] (1 to 249 characters)")]
    BadTopicSpec(String),
    /// A partition count of 0 or over [`crate::config::MAX_PARTITIONS`].
    #[error("bad partition count {0}: expected 1 to {max}", max = crate::config::MAX_PARTITIONS)]
    BadPartitions(u32),
    /// A cluster id with characters other than `[a-zA-Z0-9._-]`, or empty.
    #[error("bad cluster id `{0}`: expected 1 or more of [a-zA-Z0-9._-]")]
    BadClusterId(String),
    /// A Kafka bootstrap address that is not `HOST:PORT`.
    #[error("bad Kafka bootstrap address `{0}`: expected HOST:PORT[,HOST:PORT...]")]
    BadBootstrap(String),
    /// A limit set to zero.
    #[error("{0} must be greater than zero")]
    ZeroLimit(&'static str),
}

/// Errors of the Rust API of the REST proxy.
///
/// Each message is complete in itself and names no `source()`: a caller that prints the error
/// chain (anyhow's `{:#}`) would otherwise print the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum RestProxyError {
    /// The configuration was rejected.
    #[error("invalid REST proxy configuration: {0}")]
    Config(ConfigError),
    /// The storage backend failed (Kafka unreachable, broker error).
    #[error("REST proxy storage: {0}")]
    Storage(crate::storage::StorageError),
    /// Accepting connections failed.
    #[error("REST proxy listener: {0}")]
    Io(std::io::Error),
}

impl From<ConfigError> for RestProxyError {
    fn from(e: ConfigError) -> Self {
        RestProxyError::Config(e)
    }
}

impl From<crate::storage::StorageError> for RestProxyError {
    fn from(e: crate::storage::StorageError) -> Self {
        RestProxyError::Storage(e)
    }
}

impl From<std::io::Error> for RestProxyError {
    fn from(e: std::io::Error) -> Self {
        RestProxyError::Io(e)
    }
}

/// Returned by [`crate::RestProxy::handle`] when a fault asked for the connection to be dropped:
/// the embedding server must close the connection without answering (the bundled server returns
/// this to hyper, which does exactly that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection dropped by fault injection")]
pub struct ConnectionDropped;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_statuses() {
        assert_eq!(status_of_code(40401), StatusCode::NOT_FOUND);
        assert_eq!(status_of_code(50003), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_of_code(42206), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status_of_code(503), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of_code(200), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_of_code(-1), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_of_code(99_999), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn envelope_serializes_like_confluent() {
        let e = ApiError::topic_not_found(TOPIC_NOT_FOUND_MESSAGE);
        assert_eq!(
            serde_json::to_string(&e.body()).unwrap_or_default(),
            r#"{"error_code":40401,"message":"Topic not found."}"#
        );
    }
}
