//! Storage's domain failures: a record the store did not accept ([`RecordFailure`]: a Kafka
//! protocol error code and its class, or a client-side failure) and an operation that failed as a
//! whole ([`StorageError`]). No HTTP shapes here: each REST-proxy flavour renders them its own
//! way ([`crate::error`] holds Confluent's mapping).

/// How a failure is classified, the way Kafka's Java client classifies the exception it raises
/// (`AuthenticationException`, `AuthorizationException`, `RetriableException`, anything else).
/// Each REST-proxy flavour turns the class into its own per-record code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// SASL / authentication failures.
    Authentication,
    /// ACL failures.
    Authorization,
    /// Worth retrying: timeouts, unreachable broker, leader changes, unknown partitions.
    Retriable,
    /// Anything else (record too large, corrupt request, ...).
    NonRetriable,
}

/// Where a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCause {
    /// The broker (or the in-memory broker model) answered with a Kafka protocol error code
    /// (`org.apache.kafka.common.protocol.Errors`: 3 UNKNOWN_TOPIC_OR_PARTITION, 10
    /// MESSAGE_TOO_LARGE, ...).
    Broker {
        /// Kafka protocol error code.
        kafka_code: i16,
        /// Its class.
        class: FailureClass,
    },
    /// No broker answer: a timeout, a lost connection, or a client-side error.
    Client {
        /// Its class (timeouts and connection failures are retriable).
        class: FailureClass,
    },
}

/// A record the store did not accept: a domain failure, turned into a flavour's per-record
/// `error_code` and `error` by the flavour layer ([`crate::flavor`]; Confluent's codes in
/// [`crate::error::producer_error_code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFailure {
    /// Where it came from and how it is classified.
    pub cause: FailureCause,
    /// What went wrong, for humans.
    pub message: String,
}

/// Kafka's MESSAGE_TOO_LARGE (`Errors.MESSAGE_TOO_LARGE`).
pub const KAFKA_MESSAGE_TOO_LARGE: i16 = 10;
/// Kafka's UNKNOWN_TOPIC_OR_PARTITION (`Errors.UNKNOWN_TOPIC_OR_PARTITION`).
pub const KAFKA_UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

impl RecordFailure {
    /// A retriable failure without a broker answer (a timeout, a lost connection).
    pub fn retriable(message: impl Into<String>) -> Self {
        RecordFailure {
            cause: FailureCause::Client {
                class: FailureClass::Retriable,
            },
            message: message.into(),
        }
    }

    /// A non-retriable failure without a broker answer.
    pub fn fatal(message: impl Into<String>) -> Self {
        RecordFailure {
            cause: FailureCause::Client {
                class: FailureClass::NonRetriable,
            },
            message: message.into(),
        }
    }

    /// A broker error code with its class.
    pub fn broker(kafka_code: i16, class: FailureClass, message: impl Into<String>) -> Self {
        RecordFailure {
            cause: FailureCause::Broker { kafka_code, class },
            message: message.into(),
        }
    }

    /// Kafka's UNKNOWN_TOPIC_OR_PARTITION (retriable), with the Java client's message.
    pub fn unknown_topic_or_partition() -> Self {
        Self::broker(
            KAFKA_UNKNOWN_TOPIC_OR_PARTITION,
            FailureClass::Retriable,
            "This server does not host this topic-partition.",
        )
    }

    /// Kafka's MESSAGE_TOO_LARGE (not retriable) for a batch of `size` bytes over `limit`.
    pub fn message_too_large(size: usize, limit: usize) -> Self {
        Self::broker(
            KAFKA_MESSAGE_TOO_LARGE,
            FailureClass::NonRetriable,
            format!("The record batch is {size} bytes, larger than the broker's message.max.bytes of {limit}."),
        )
    }

    /// The failure's class.
    pub fn class(&self) -> FailureClass {
        match self.cause {
            FailureCause::Broker { class, .. } | FailureCause::Client { class } => class,
        }
    }
}

/// A storage operation that failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The broker failed or could not be reached.
    #[error("Kafka error: {}", .0.message)]
    Kafka(RecordFailure),
    /// The topic does not exist.
    #[error("topic {0} not found")]
    TopicNotFound(String),
    /// The partition does not exist.
    #[error("partition {partition} of topic {topic} not found")]
    PartitionNotFound {
        /// Topic.
        topic: String,
        /// Partition asked for.
        partition: u32,
    },
    /// The operation exists only for the in-memory store.
    #[error("{0} is only supported by the in-memory store")]
    Unsupported(&'static str),
}

impl From<RecordFailure> for StorageError {
    fn from(f: RecordFailure) -> Self {
        StorageError::Kafka(f)
    }
}
