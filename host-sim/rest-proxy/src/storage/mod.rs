//! Where produced records go: one [`Backend`] chosen at start, either in-memory topics
//! ([`memory::MemoryStore`]) or a real broker ([`kafka::KafkaBridge`]).
//!
//! The produce pipeline ([`crate::cluster`]) resolves the topic and picks partitions; the backend only appends records to
//! given partitions and reports, per record, an offset or a domain [`RecordFailure`] (a Kafka
//! error code and its class, or a client-side failure), which each REST-proxy flavour
//! ([`crate::flavor`]) renders its own way. Whole-request failures (the broker cannot be reached
//! for metadata) are a [`StorageError`]. [`Backend::append`] and [`Backend::append_batch`] model
//! the broker's `message.max.bytes` ([`record_batch_size`]).

pub mod failure;
pub mod kafka;
pub mod memory;

use std::time::Duration;

pub use failure::{
    FailureCause, FailureClass, RecordFailure, StorageError, KAFKA_MESSAGE_TOO_LARGE, KAFKA_UNKNOWN_TOPIC_OR_PARTITION,
};

use crate::model::{Appended, ProduceRecord, StoredRecord, TopicSummary};

/// Default retention cap per in-memory partition, in records.
pub const DEFAULT_RETENTION_RECORDS: usize = 100_000;
/// Default retention cap per in-memory partition, in bytes of keys, values and headers.
pub const DEFAULT_RETENTION_BYTES: usize = 64 * 1024 * 1024;
/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// In-memory topics, bounded per partition; the oldest records are evicted (and counted)
    /// when a cap is reached.
    Memory {
        /// Most records kept per partition.
        retention_records: usize,
        /// Most bytes (keys, values, header names and values) kept per partition.
        retention_bytes: usize,
    },
    /// A real broker, reached with the pure-Rust `rskafka` client; offsets come from the broker.
    Kafka {
        /// Bootstrap addresses, `HOST:PORT` each.
        bootstrap: Vec<String>,
        /// Time allowed for one Kafka operation (connect, metadata, produce, fetch).
        timeout: Duration,
    },
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig::Memory {
            retention_records: DEFAULT_RETENTION_RECORDS,
            retention_bytes: DEFAULT_RETENTION_BYTES,
        }
    }
}

/// Kafka's default `message.max.bytes`: the largest record batch a broker accepts
/// (1 MiB plus the 12-byte log overhead; kafka `ServerLogConfigs.MAX_MESSAGE_BYTES_DEFAULT`).
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_048_588;

/// Bytes of a Kafka v2 record batch header (`DefaultRecordBatch.RECORD_BATCH_OVERHEAD`).
const RECORD_BATCH_OVERHEAD: usize = 61;

/// Length of `v` as a zig-zag varint (Kafka's `ByteUtils.sizeOfVarint`).
fn varint_size(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn varlen_size(bytes: Option<usize>) -> usize {
    match bytes {
        None => varint_size(-1),
        Some(n) => varint_size(n as i64) + n,
    }
}

/// Size in bytes of `records` written as one uncompressed Kafka v2 record batch, with offset and
/// timestamp deltas from the first record (`DefaultRecordBatch.sizeInBytes` and
/// `DefaultRecord.sizeInBytes`): what a broker compares with `message.max.bytes`.
pub fn record_batch_size<'a>(records: impl IntoIterator<Item = &'a ProduceRecord>) -> usize {
    let mut total = RECORD_BATCH_OVERHEAD;
    let mut base_ts = None;
    for (delta, r) in records.into_iter().enumerate() {
        let base = *base_ts.get_or_insert(r.timestamp_ms);
        let mut body = 1 // attributes
            + varint_size(r.timestamp_ms.saturating_sub(base))
            + varint_size(delta as i64)
            + varlen_size(r.key.as_ref().map(|k| k.len()))
            + varlen_size(r.value.as_ref().map(|v| v.len()))
            + varint_size(r.headers.len() as i64);
        for h in &r.headers {
            body += varlen_size(Some(h.name.len())) + varlen_size(h.value.as_ref().map(|v| v.len()));
        }
        total += varint_size(body as i64) + body;
    }
    total
}

/// The storage backend, chosen at start from a [`StorageConfig`].
#[derive(Debug)]
pub enum Backend {
    /// In-memory topics.
    Memory(memory::MemoryStore),
    /// A real broker.
    Kafka(kafka::KafkaBridge),
}

impl Backend {
    /// Builds the backend `config` asks for, with `topics` (name and partition count) existing
    /// from the start (no I/O: the Kafka bridge connects on first use and creates them then).
    pub fn new(config: &StorageConfig, topics: Vec<(String, u32)>) -> Self {
        match config {
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

    /// Appends records to the given partitions, each record as a batch of its own (what a
    /// producer that splits a refused batch and retries ends up with: the Java producer's
    /// `Sender` splits on MESSAGE_TOO_LARGE, librdkafka checks `message.max.bytes` per message).
    /// A record whose one-record batch exceeds `message_max_bytes` fails alone with
    /// MESSAGE_TOO_LARGE and is not stored; one result per record, in order.
    pub async fn append(
        &self,
        topic: &str,
        batch: Vec<(u32, ProduceRecord)>,
        message_max_bytes: usize,
    ) -> Vec<Result<Appended, RecordFailure>> {
        let mut results: Vec<Option<Result<Appended, RecordFailure>>> = Vec::with_capacity(batch.len());
        let mut accepted = Vec::with_capacity(batch.len());
        let mut slots = Vec::with_capacity(batch.len());
        for (i, (partition, record)) in batch.into_iter().enumerate() {
            let size = record_batch_size([&record]);
            if size > message_max_bytes {
                results.push(Some(Err(RecordFailure::message_too_large(size, message_max_bytes))));
            } else {
                results.push(None);
                slots.push(i);
                accepted.push((partition, record));
            }
        }
        if !accepted.is_empty() {
            let stored = match self {
                Backend::Memory(m) => m.append(topic, accepted),
                Backend::Kafka(k) => k.append(topic, accepted).await,
            };
            for (slot, result) in slots.into_iter().zip(stored) {
                results[slot] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(RecordFailure::fatal("record was not produced"))))
            .collect()
    }

    /// Appends `records` to one partition as a single batch: all are stored or none is (a broker
    /// accepts or refuses a batch as a whole). A batch larger than `message_max_bytes` fails with
    /// MESSAGE_TOO_LARGE. Returns the offsets, in order.
    pub async fn append_batch(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<ProduceRecord>,
        message_max_bytes: usize,
    ) -> Result<Vec<Appended>, RecordFailure> {
        let size = record_batch_size(&records);
        if size > message_max_bytes {
            return Err(RecordFailure::message_too_large(size, message_max_bytes));
        }
        // All or none: a record the Kafka bridge would refuse fails the whole batch up front.
        if let Backend::Kafka(_) = self {
            if let Some(refusal) = records.iter().find_map(|r| kafka::headers_refusal(&r.headers)) {
                return Err(refusal);
            }
        }
        let batch: Vec<(u32, ProduceRecord)> = records.into_iter().map(|r| (partition, r)).collect();
        // Both stores append one partition's records in one step (the memory store under one
        // lock, the Kafka bridge in one produce request), so they succeed or fail together.
        let stored = match self {
            Backend::Memory(m) => m.append(topic, batch),
            Backend::Kafka(k) => k.append(topic, batch).await,
        };
        stored.into_iter().collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RecordHeader;
    use bytes::Bytes;

    fn rec(key: Option<&str>, value: &str, ts: i64) -> ProduceRecord {
        ProduceRecord {
            partition: None,
            key: key.map(|k| Bytes::from(k.to_string())),
            value: Some(Bytes::from(value.to_string())),
            headers: Vec::new(),
            timestamp_ms: ts,
        }
    }

    #[test]
    fn batch_size_follows_kafka_v2_format() {
        // 61-byte header; record: length 1, attributes 1, timestamp delta 1, offset delta 1,
        // null key 1, value length 1 + 5, header count 1.
        assert_eq!(record_batch_size([&rec(None, "hello", 5)]), 61 + 12);
        // Key "k" adds 1 byte of data (its length varint replaces the null's).
        assert_eq!(record_batch_size([&rec(Some("k"), "hello", 5)]), 61 + 13);
        // Second record: offset delta 1 and a timestamp delta of 1000 (two-byte zig-zag varint).
        assert_eq!(
            record_batch_size([&rec(None, "hello", 5), &rec(None, "hello", 1005)]),
            61 + 12 + 13
        );
        let with_header = ProduceRecord {
            headers: vec![RecordHeader {
                name: "h".into(),
                value: None,
            }],
            ..rec(None, "hello", 5)
        };
        assert_eq!(record_batch_size([&with_header]), 61 + 12 + 3);
        assert_eq!(varint_size(63), 1);
        assert_eq!(varint_size(64), 2);
        assert_eq!(varint_size(-1), 1);
    }

    fn memory_backend() -> Backend {
        Backend::new(&StorageConfig::default(), vec![("t".into(), 2)])
    }

    #[tokio::test]
    async fn a_record_over_the_limit_fails_alone() {
        let backend = memory_backend();
        let big = "x".repeat(100);
        let out = backend
            .append(
                "t",
                vec![(0, rec(None, "a", 0)), (0, rec(None, &big, 0)), (1, rec(None, "c", 0))],
                120,
            )
            .await;
        assert!(out[0].is_ok() && out[2].is_ok(), "{out:?}");
        assert!(matches!(&out[1], Err(f) if f.cause == FailureCause::Broker {
            kafka_code: KAFKA_MESSAGE_TOO_LARGE,
            class: FailureClass::NonRetriable
        }));
        assert_eq!(backend.read("t", None, 0, 10).await.map(|r| r.len()), Ok(2));
    }

    #[tokio::test]
    async fn a_batch_is_stored_whole_or_not_at_all() {
        let backend = memory_backend();
        let records = vec![rec(None, "a", 0), rec(None, &"x".repeat(100), 0)];
        let refused = backend.append_batch("t", 0, records.clone(), 150).await;
        assert!(matches!(refused, Err(f) if f.cause == FailureCause::Broker {
            kafka_code: KAFKA_MESSAGE_TOO_LARGE,
            class: FailureClass::NonRetriable
        }));
        assert_eq!(backend.read("t", Some(0), 0, 10).await.map(|r| r.len()), Ok(0));
        let stored = backend.append_batch("t", 0, records, 1000).await;
        assert_eq!(
            stored.map(|a| a.iter().map(|a| a.offset).collect::<Vec<_>>()),
            Ok(vec![0, 1])
        );
        let missing = backend.append_batch("t", 5, vec![rec(None, "a", 0)], 1000).await;
        assert_eq!(missing.err(), Some(RecordFailure::unknown_topic_or_partition()));
    }
}
