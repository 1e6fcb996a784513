//! The records and topics every layer talks about: a record to produce ([`ProduceRecord`], what
//! the codec decodes and storage appends), a stored record ([`StoredRecord`]), where an
//! acknowledged record landed ([`Appended`]) and the topic summaries of `/_sim/topics`. Plain data,
//! no behaviour: the codec above builds these from request bodies, storage below keeps them.

use bytes::Bytes;
use serde::Serialize;

/// One record to produce, decoded and ready for the partitioner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRecord {
    /// Partition asked for by the client, if any (validated against the topic later).
    pub partition: Option<i32>,
    /// Key bytes; `None` is a null key.
    pub key: Option<Bytes>,
    /// Value bytes; `None` is a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Record headers, in order.
    pub headers: Vec<RecordHeader>,
    /// `CreateTime`, epoch milliseconds.
    pub timestamp_ms: i64,
}

/// One record header. Kafka allows a null header value and repeated names; the memory store
/// keeps both, the Kafka bridge refuses a record carrying either (the `rskafka` client has no null
/// header values and keeps one value per header name, see `storage::kafka::headers_refusal`).
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
