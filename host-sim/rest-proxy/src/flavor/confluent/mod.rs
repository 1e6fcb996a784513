//! The Confluent flavour (confluentinc/kafka-rest): its v2 ([`v2`]) and v3 ([`v3`]) handlers, how
//! its producer batches ([`PLAN`]) and its per-record error codes.
//!
//! kafka-rest turns the producer's exception into a code ([`producer_error_code`]):
//! authentication 40101, authorization 40301, a `RetriableException` 50003, anything else 50002.

pub mod v2;
pub mod v3;

use crate::cluster::{Batching, MissingPartition, ProducePlan, RecordError};
use crate::error::producer_error_code;

/// How kafka-rest produces: its Java producer splits a batch the broker refuses as too large and
/// retries, so a record fails alone; a record asking for a partition the topic lacks is answered
/// 404 / 40402 here (see [`v2`]'s notes).
pub const PLAN: ProducePlan = ProducePlan {
    batching: Batching::PerRecord,
    missing_partition: MissingPartition::RejectRequest,
};

/// The per-record `error_code` kafka-rest shows for `error`; an injected code is shown as is.
pub fn record_error_code(error: &RecordError) -> i32 {
    match error {
        RecordError::Kafka(failure) => producer_error_code(failure),
        RecordError::Injected { error_code, .. } => *error_code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{FailureClass, RecordFailure};

    #[test]
    fn classes_become_confluent_codes() {
        assert_eq!(record_error_code(&RecordFailure::retriable("t").into()), 50003);
        assert_eq!(record_error_code(&RecordFailure::fatal("t").into()), 50002);
        assert_eq!(
            record_error_code(&RecordFailure::unknown_topic_or_partition().into()),
            50003
        );
        assert_eq!(record_error_code(&RecordFailure::message_too_large(2, 1).into()), 50002);
        assert_eq!(
            record_error_code(&RecordFailure::broker(58, FailureClass::Authentication, "x").into()),
            40101
        );
        assert_eq!(
            record_error_code(&RecordFailure::broker(29, FailureClass::Authorization, "x").into()),
            40301
        );
        assert_eq!(record_error_code(&RecordError::injected(42, "x")), 42);
    }
}
