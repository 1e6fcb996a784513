//! The Confluent flavour: kafka-rest's per-record error codes. Its v2 and v3 handlers are
//! [`crate::v2`] and [`crate::v3`].
//!
//! kafka-rest turns the producer's exception into a code (`AbstractProduceAction`'s
//! `errorCodeFromProducerException` in confluentinc/kafka-rest): authentication 40101,
//! authorization 40301, a `RetriableException` 50003, anything else 50002.

use crate::error::codes;
use crate::storage::{FailureCause, FailureClass, RecordFailure};

/// The per-record `error_code` kafka-rest shows for `failure`; an injected code is shown as is.
pub fn record_error_code(failure: &RecordFailure) -> i32 {
    if let FailureCause::Injected { error_code } = failure.cause {
        return error_code;
    }
    match failure.class() {
        FailureClass::Authentication => codes::KAFKA_AUTHENTICATION,
        FailureClass::Authorization => codes::KAFKA_AUTHORIZATION,
        FailureClass::Retriable => codes::KAFKA_RETRIABLE,
        FailureClass::NonRetriable => codes::KAFKA_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_become_confluent_codes() {
        assert_eq!(record_error_code(&RecordFailure::retriable("t")), 50003);
        assert_eq!(record_error_code(&RecordFailure::fatal("t")), 50002);
        assert_eq!(record_error_code(&RecordFailure::unknown_topic_or_partition()), 50003);
        assert_eq!(record_error_code(&RecordFailure::message_too_large(2, 1)), 50002);
        assert_eq!(
            record_error_code(&RecordFailure::broker(58, FailureClass::Authentication, "x")),
            40101
        );
        assert_eq!(
            record_error_code(&RecordFailure::broker(29, FailureClass::Authorization, "x")),
            40301
        );
        assert_eq!(record_error_code(&RecordFailure::injected(42, "x")), 42);
    }
}
