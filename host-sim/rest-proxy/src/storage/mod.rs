//! Where produced records go: one [`Backend`] chosen at start, either in-memory topics
//! ([`memory::MemoryStore`]) or a real broker ([`kafka::KafkaBridge`]).
//!
//! The HTTP layer resolves the topic and picks partitions; the backend only appends records to
//! given partitions and reports, per record, an offset or a Confluent error code. Whole-request
//! failures (the broker cannot be reached for metadata) are a [`StorageError`].

pub mod kafka;
pub mod memory;

use bytes::Bytes;
use serde::Serialize;

use crate::codec::ProduceRecord;
use crate::config::{RestProxyConfig, StorageConfig};
use crate::error::codes;

/// One record header. Kafka allows a null header value; the Kafka bridge sends it as empty bytes
/// (the `rskafka` client has no null header values, and keeps one value per header name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Header name.
    pub name: String,
    /// Header value; `None` is null.
    pub value: Option<Bytes>,
}

/// A record as stored (or as fetched back from the broker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Partition it lives in.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: i64,
    /// `CreateTime`, epoch milliseconds.
    pub timestamp_ms: i64,
    /// Key bytes; `None` is null.
    pub key: Option<Bytes>,
    /// Value bytes; `None` is null.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<RecordHeader>,
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Partition.
    pub partition: u32,
    /// Offset given by the store or the broker.
    pub offset: i64,
    /// Timestamp of the record, epoch milliseconds.
    pub timestamp_ms: i64,
}

/// A record the store did not accept: Confluent's per-record `error_code` and `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFailure {
    /// 40101, 40301, 50002 or 50003, as kafka-rest's `errorCodeFromProducerException`.
    pub error_code: i32,
    /// The producer exception's message.
    pub message: String,
}

impl RecordFailure {
    /// A retriable failure (50003).
    pub fn retriable(message: impl Into<String>) -> Self {
        RecordFailure {
            error_code: codes::KAFKA_RETRIABLE,
            message: message.into(),
        }
    }

    /// A non-retriable failure (50002).
    pub fn fatal(message: impl Into<String>) -> Self {
        RecordFailure {
            error_code: codes::KAFKA_ERROR,
            message: message.into(),
        }
    }
}

/// A storage operation that failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The broker failed or could not be reached; `error_code` is Confluent's (50003 retriable,
    /// 50002 other, 40101/40301 auth).
    #[error("Kafka error {error_code}: {message}")]
    Kafka {
        /// Confluent error code.
        error_code: i32,
        /// What went wrong.
        message: String,
    },
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
        StorageError::Kafka {
            error_code: f.error_code,
            message: f.message,
        }
    }
}

/// Retention state of one partition, for `/_sim/topics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionSummary {
    /// Partition id.
    pub partition: u32,
    /// Oldest offset still readable.
    pub earliest_offset: i64,
    /// Offset the next record will get (Kafka's log end offset / high watermark).
    pub next_offset: i64,
    /// Records held (in-memory store only; `null` for the Kafka bridge).
    pub records: Option<u64>,
    /// Bytes held (in-memory store only).
    pub bytes: Option<u64>,
    /// Records evicted by the retention cap (in-memory store only).
    pub evicted: Option<u64>,
}

/// A topic and its partitions, for `/_sim/topics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicSummary {
    /// Topic name.
    pub name: String,
    /// Its partitions, by id.
    pub partitions: Vec<PartitionSummary>,
}

/// The storage backend, chosen at start from [`StorageConfig`].
#[derive(Debug)]
pub enum Backend {
    /// In-memory topics.
    Memory(memory::MemoryStore),
    /// A real broker.
    Kafka(kafka::KafkaBridge),
}

impl Backend {
    /// Builds the backend of `config` (no I/O: the Kafka bridge connects on first use).
    pub fn new(config: &RestProxyConfig) -> Self {
        let topics: Vec<(String, u32)> = config
            .topics
            .iter()
            .map(|t| (t.name.clone(), t.partitions.unwrap_or(config.default_partitions)))
            .collect();
        match &config.storage {
            StorageConfig::Memory {
                retention_records,
                retention_bytes,
            } => Backend::Memory(memory::MemoryStore::new(*retention_records, *retention_bytes, topics)),
            StorageConfig::Kafka { bootstrap, timeout } => {
                Backend::Kafka(kafka::KafkaBridge::new(bootstrap.clone(), *timeout, topics))
            }
        }
    }

    /// `"memory"` or `"kafka"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            Backend::Kafka(_) => "kafka",
        }
    }

    /// Partition count of `topic`, `None` when it does not exist.
    pub async fn partition_count(&self, topic: &str) -> Result<Option<u32>, StorageError> {
        match self {
            Backend::Memory(m) => Ok(m.partition_count(topic)),
            Backend::Kafka(k) => k.partition_count(topic).await,
        }
    }

    /// Creates `topic` with `partitions` unless it exists; returns its partition count.
    pub async fn create_topic(&self, topic: &str, partitions: u32) -> Result<u32, StorageError> {
        match self {
            Backend::Memory(m) => Ok(m.create_topic(topic, partitions)),
            Backend::Kafka(k) => k.create_topic(topic, partitions).await,
        }
    }

    /// Appends records to the given partitions; one result per record, in order.
    pub async fn append(&self, topic: &str, batch: Vec<(u32, ProduceRecord)>) -> Vec<Result<Appended, RecordFailure>> {
        match self {
            Backend::Memory(m) => m.append(topic, batch),
            Backend::Kafka(k) => k.append(topic, batch).await,
        }
    }

    /// Topic names and partition counts, by name.
    pub async fn list_topics(&self) -> Result<Vec<(String, u32)>, StorageError> {
        match self {
            Backend::Memory(m) => Ok(m.list_topics()),
            Backend::Kafka(k) => k.list_topics().await,
        }
    }

    /// Every topic with its partitions' offsets (and retention counters in memory).
    pub async fn summary(&self) -> Result<Vec<TopicSummary>, StorageError> {
        match self {
            Backend::Memory(m) => Ok(m.summary()),
            Backend::Kafka(k) => k.summary().await,
        }
    }

    /// Up to `limit` records of `topic` from `from_offset` on, of one partition or of all
    /// (partition by partition).
    pub async fn read(
        &self,
        topic: &str,
        partition: Option<u32>,
        from_offset: i64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        match self {
            Backend::Memory(m) => m.read(topic, partition, from_offset, limit),
            Backend::Kafka(k) => k.read(topic, partition, from_offset, limit).await,
        }
    }

    /// Deletes `topic`; `false` when it did not exist.
    pub async fn delete_topic(&self, topic: &str) -> Result<bool, StorageError> {
        match self {
            Backend::Memory(m) => Ok(m.delete_topic(topic)),
            Backend::Kafka(k) => k.delete_topic(topic).await,
        }
    }

    /// Drops every topic and re-creates the configured ones (in-memory store only).
    pub fn reset(&self) -> Result<(), StorageError> {
        match self {
            Backend::Memory(m) => {
                m.reset();
                Ok(())
            }
            Backend::Kafka(_) => Err(StorageError::Unsupported("reset")),
        }
    }

    /// Connects to the broker and creates the configured topics (Kafka bridge); a no-op in memory.
    pub async fn check(&self) -> Result<(), StorageError> {
        match self {
            Backend::Memory(_) => Ok(()),
            Backend::Kafka(k) => k.check().await,
        }
    }
}
