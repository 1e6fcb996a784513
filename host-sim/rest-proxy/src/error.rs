//! Confluent's errors as HTTP clients see them: the envelope ([`ApiError`]), its codes
//! ([`codes`]), and the mapping of storage's domain failures to them: a refused record's
//! per-record code ([`producer_error_code`]) and a failed storage operation's envelope
//! ([`ApiError::from_storage`]). Also [`ConnectionDropped`], a fault's "answer nothing".
//!
//! Error codes and messages follow confluentinc/kafka-rest (`Errors.java`) and rest-utils
//! (`KafkaExceptionMapper`, `WebApplicationExceptionMapper`, `JsonParseExceptionMapper`,
//! `ConstraintViolationExceptionMapper`): the envelope is `{"error_code":N,"message":"..."}`,
//! `error_code` is either the HTTP status or the status times 100 plus a sub-code (40401); the
//! codes are listed in Confluent's API reference
//! (<https://docs.confluent.io/platform/current/kafka-rest/api.html>, "Errors").

use hyper::StatusCode;
use serde::Serialize;

use crate::storage::{FailureClass, RecordFailure, StorageError};

/// Confluent's "Topic not found." (v2, `Errors.TOPIC_NOT_FOUND_MESSAGE`).
pub const TOPIC_NOT_FOUND_MESSAGE: &str = "Topic not found.";
/// Confluent's "Partition not found." (`Errors.PARTITION_NOT_FOUND_MESSAGE`).
pub const PARTITION_NOT_FOUND_MESSAGE: &str = "Partition not found.";

/// Confluent error codes used here. `KafkaExceptionMapper` is rest-utils
/// `core/src/main/java/io/confluent/rest/exceptions/KafkaExceptionMapper.java`; `Errors` is
/// kafka-rest `kafka-rest/src/main/java/io/confluent/kafkarest/Errors.java`.
pub mod codes {
    /// Bad request from Kafka's side (`KafkaExceptionMapper.KAFKA_BAD_REQUEST_ERROR_CODE`, 400:
    /// `InvalidTopicException` and the like).
    pub const KAFKA_BAD_REQUEST: i32 = 40002;
    /// Kafka authentication failed (`KafkaExceptionMapper.KAFKA_AUTHENTICATION_ERROR_CODE`,
    /// `AuthenticationException` → 401).
    pub const KAFKA_AUTHENTICATION: i32 = 40101;
    /// Kafka authorization failed (`KafkaExceptionMapper.KAFKA_AUTHORIZATION_ERROR_CODE`,
    /// `AuthorizationException` → 403).
    pub const KAFKA_AUTHORIZATION: i32 = 40301;
    /// Topic not found (`Errors.TOPIC_NOT_FOUND_ERROR_CODE`, 404).
    pub const TOPIC_NOT_FOUND: i32 = 40401;
    /// Partition not found (`Errors.PARTITION_NOT_FOUND_ERROR_CODE`, 404).
    pub const PARTITION_NOT_FOUND: i32 = 40402;
    /// Invalid payload (`Errors.INVALID_PAYLOAD_ERROR_CODE`, 422).
    pub const INVALID_PAYLOAD: i32 = 42206;
    /// Serialization failed (`Errors.SERIALIZATION_EXCEPTION_ERROR_CODE`, 422).
    pub const SERIALIZATION: i32 = 42207;
    /// Non-retriable Kafka error (`Errors.KAFKA_ERROR_ERROR_CODE`, the catch-all for Kafka
    /// exceptions; `KafkaExceptionMapper` answers 500).
    pub const KAFKA_ERROR: i32 = 50002;
    /// Retriable Kafka error (`Errors.KAFKA_RETRIABLE_ERROR_ERROR_CODE`; `KafkaExceptionMapper`
    /// answers a `RetriableException` with 500).
    pub const KAFKA_RETRIABLE: i32 = 50003;
}

/// The per-record `error_code` kafka-rest shows for a record the store refused, from the class of
/// the producer's exception (`errorCodeFromProducerException` in kafka-rest
/// `kafka-rest/src/main/java/io/confluent/kafkarest/resources/v2/AbstractProduceAction.java`):
/// authentication 40101, authorization 40301, a `RetriableException` 50003, anything else 50002.
pub fn producer_error_code(failure: &RecordFailure) -> i32 {
    match failure.class() {
        FailureClass::Authentication => codes::KAFKA_AUTHENTICATION,
        FailureClass::Authorization => codes::KAFKA_AUTHORIZATION,
        FailureClass::Retriable => codes::KAFKA_RETRIABLE,
        FailureClass::NonRetriable => codes::KAFKA_ERROR,
    }
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

    /// The envelope of a storage operation that failed as a whole (`KafkaExceptionMapper`: a
    /// broker failure keeps its producer code and the status of that code, retriable → 500 /
    /// 50003; a missing topic or partition is `Errors`' 40401 / 40402).
    pub fn from_storage(e: StorageError) -> Self {
        match e {
            StorageError::Kafka(f) => ApiError::from_code(producer_error_code(&f), f.message),
            StorageError::TopicNotFound(_) => ApiError::topic_not_found(TOPIC_NOT_FOUND_MESSAGE),
            StorageError::PartitionNotFound { .. } => ApiError::partition_not_found(),
            StorageError::Unsupported(what) => {
                ApiError::bad_request(format!("{what} is only supported by the in-memory store"))
            }
        }
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
    fn classes_become_confluent_codes() {
        assert_eq!(producer_error_code(&RecordFailure::retriable("t")), 50003);
        assert_eq!(producer_error_code(&RecordFailure::fatal("t")), 50002);
        assert_eq!(producer_error_code(&RecordFailure::unknown_topic_or_partition()), 50003);
        assert_eq!(producer_error_code(&RecordFailure::message_too_large(2, 1)), 50002);
        assert_eq!(
            producer_error_code(&RecordFailure::broker(58, FailureClass::Authentication, "x")),
            40101
        );
        assert_eq!(
            producer_error_code(&RecordFailure::broker(29, FailureClass::Authorization, "x")),
            40301
        );
    }

    #[test]
    fn storage_failures_become_confluent_envelopes() {
        let e = ApiError::from_storage(StorageError::TopicNotFound("t".into()));
        assert_eq!(
            (e.status.as_u16(), e.error_code, e.message.as_str()),
            (404, 40401, "Topic not found.")
        );
        let e = ApiError::from_storage(StorageError::PartitionNotFound {
            topic: "t".into(),
            partition: 3,
        });
        assert_eq!((e.status.as_u16(), e.error_code), (404, 40402));
        let e = ApiError::from_storage(StorageError::Kafka(RecordFailure::retriable("broker down")));
        assert_eq!(
            (e.status.as_u16(), e.error_code, e.message.as_str()),
            (500, 50003, "broker down")
        );
        let e = ApiError::from_storage(StorageError::Unsupported("reset"));
        assert_eq!((e.status.as_u16(), e.error_code), (400, 400));
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
