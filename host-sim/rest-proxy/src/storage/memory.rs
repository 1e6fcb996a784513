//! In-memory topics: per-partition logs with offsets from 0, bounded by a retention cap.
//!
//! Memory stays bounded: past `retention_records` records or `retention_bytes` bytes a partition
//! evicts its oldest records, as Kafka's retention would. Offsets keep growing, the partition's
//! `earliest_offset` moves up, and every eviction is counted (`evicted` in `/_sim/topics`) and the
//! first one per partition is logged, so an acknowledged record never disappears unseen. The
//! newest record of a partition is never evicted.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use super::failure::{RecordFailure, StorageError};
use crate::model::{Appended, PartitionSummary, ProduceRecord, StoredRecord, TopicSummary};

#[derive(Debug, Default)]
struct MemPartition {
    records: VecDeque<StoredRecord>,
    next_offset: i64,
    bytes: usize,
    evicted: u64,
}

fn record_bytes(r: &StoredRecord) -> usize {
    r.key.as_ref().map_or(0, |k| k.len())
        + r.value.as_ref().map_or(0, |v| v.len())
        + r.headers
            .iter()
            .map(|h| h.name.len() + h.value.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>()
}

impl MemPartition {
    fn earliest_offset(&self) -> i64 {
        self.records.front().map_or(self.next_offset, |r| r.offset)
    }
}

#[derive(Debug)]
struct MemTopic {
    partitions: Vec<MemPartition>,
}

impl MemTopic {
    fn new(partitions: u32) -> Self {
        MemTopic {
            partitions: (0..partitions.max(1)).map(|_| MemPartition::default()).collect(),
        }
    }
}

/// In-memory topics behind one mutex (critical sections are short and never await).
#[derive(Debug)]
pub struct MemoryStore {
    topics: Mutex<BTreeMap<String, MemTopic>>,
    retention_records: usize,
    retention_bytes: usize,
    initial: Vec<(String, u32)>,
}

impl MemoryStore {
    /// A store with the given caps per partition and the given topics created.
    pub fn new(retention_records: usize, retention_bytes: usize, topics: Vec<(String, u32)>) -> Self {
        let store = MemoryStore {
            topics: Mutex::new(BTreeMap::new()),
            retention_records: retention_records.max(1),
            retention_bytes: retention_bytes.max(1),
            initial: topics,
        };
        store.reset();
        store
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, MemTopic>> {
        // A panic elsewhere while holding the lock leaves consistent data (each update is
        // completed before the next starts), so a poisoned lock is still usable.
        match self.topics.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Drops every topic and re-creates the configured ones.
    pub fn reset(&self) {
        let mut topics = self.lock();
        topics.clear();
        for (name, partitions) in &self.initial {
            topics.insert(name.clone(), MemTopic::new(*partitions));
        }
    }

    /// Partition count of `topic`.
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.lock().get(topic).map(|t| t.partitions.len() as u32)
    }

    /// Creates `topic` unless it exists; returns its partition count.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> u32 {
        let mut topics = self.lock();
        let t = topics.entry(topic.to_string()).or_insert_with(|| {
            tracing::info!(topic, partitions, "rest-proxy: created in-memory topic");
            MemTopic::new(partitions)
        });
        t.partitions.len() as u32
    }

    /// Deletes `topic`; `false` when it did not exist.
    pub fn delete_topic(&self, topic: &str) -> bool {
        self.lock().remove(topic).is_some()
    }

    /// Topic names and partition counts.
    pub fn list_topics(&self) -> Vec<(String, u32)> {
        self.lock()
            .iter()
            .map(|(name, t)| (name.clone(), t.partitions.len() as u32))
            .collect()
    }

    /// Appends records; one result per record, in order.
    pub fn append(&self, topic: &str, batch: Vec<(u32, ProduceRecord)>) -> Vec<Result<Appended, RecordFailure>> {
        let mut topics = self.lock();
        let Some(t) = topics.get_mut(topic) else {
            // Deleted between topic resolution and append: Kafka's retriable
            // UnknownTopicOrPartitionException.
            return batch
                .iter()
                .map(|_| Err(RecordFailure::unknown_topic_or_partition()))
                .collect();
        };
        let mut out = Vec::with_capacity(batch.len());
        for (partition, record) in batch {
            let Some(p) = t.partitions.get_mut(partition as usize) else {
                out.push(Err(RecordFailure::unknown_topic_or_partition()));
                continue;
            };
            let stored = StoredRecord {
                partition,
                offset: p.next_offset,
                timestamp_ms: record.timestamp_ms,
                key: record.key,
                value: record.value,
                headers: record.headers,
            };
            p.next_offset += 1;
            p.bytes += record_bytes(&stored);
            out.push(Ok(Appended {
                partition,
                offset: stored.offset,
                timestamp_ms: stored.timestamp_ms,
            }));
            p.records.push_back(stored);
            while p.records.len() > 1 && (p.records.len() > self.retention_records || p.bytes > self.retention_bytes) {
                if let Some(old) = p.records.pop_front() {
                    p.bytes = p.bytes.saturating_sub(record_bytes(&old));
                    p.evicted += 1;
                    if p.evicted == 1 {
                        tracing::warn!(
                            topic,
                            partition,
                            retention_records = self.retention_records,
                            retention_bytes = self.retention_bytes,
                            "rest-proxy: retention cap reached, evicting the oldest records \
                             (counted in /_sim/topics as `evicted`)"
                        );
                    }
                }
            }
        }
        out
    }

    /// Every topic and its partitions' counters.
    pub fn summary(&self) -> Vec<TopicSummary> {
        self.lock()
            .iter()
            .map(|(name, t)| TopicSummary {
                name: name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(i, p)| PartitionSummary {
                        partition: i as u32,
                        earliest_offset: p.earliest_offset(),
                        next_offset: p.next_offset,
                        records: Some(p.records.len() as u64),
                        bytes: Some(p.bytes as u64),
                        evicted: Some(p.evicted),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Up to `limit` records from `from_offset` on, of one partition or of all in turn.
    pub fn read(
        &self,
        topic: &str,
        partition: Option<u32>,
        from_offset: i64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        let topics = self.lock();
        let t = topics
            .get(topic)
            .ok_or_else(|| StorageError::TopicNotFound(topic.to_string()))?;
        let selected: Vec<&MemPartition> = match partition {
            Some(p) => vec![t
                .partitions
                .get(p as usize)
                .ok_or_else(|| StorageError::PartitionNotFound {
                    topic: topic.to_string(),
                    partition: p,
                })?],
            None => t.partitions.iter().collect(),
        };
        let mut out = Vec::new();
        for p in selected {
            if out.len() >= limit {
                break;
            }
            // Offsets in a partition are contiguous from `earliest_offset`.
            let skip = usize::try_from(from_offset.saturating_sub(p.earliest_offset())).unwrap_or(0);
            out.extend(p.records.iter().skip(skip).take(limit - out.len()).cloned());
        }
        Ok(out)
    }

    /// A copy of the records of one partition (test accessor).
    pub fn records(&self, topic: &str, partition: u32) -> Option<Vec<StoredRecord>> {
        let topics = self.lock();
        let p = topics.get(topic)?.partitions.get(partition as usize)?;
        Some(p.records.iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(value: &str) -> ProduceRecord {
        ProduceRecord {
            partition: None,
            key: None,
            value: Some(Bytes::from(value.to_string())),
            headers: Vec::new(),
            timestamp_ms: 1,
        }
    }

    #[test]
    fn offsets_grow_per_partition() {
        let store = MemoryStore::new(100, 1 << 20, vec![("t".into(), 2)]);
        let out = store.append("t", vec![(0, rec("a")), (1, rec("b")), (0, rec("c"))]);
        let offsets: Vec<(u32, i64)> = out
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|a| (a.partition, a.offset)))
            .collect();
        assert_eq!(offsets, vec![(0, 0), (1, 0), (0, 1)]);
        assert_eq!(store.records("t", 0).map(|r| r.len()), Some(2));
        let all = store.read("t", None, 0, 10).unwrap_or_default();
        assert_eq!(all.len(), 3);
        let p0 = store.read("t", Some(0), 1, 10).unwrap_or_default();
        assert_eq!(p0.len(), 1);
        assert_eq!(p0[0].value.as_deref(), Some(&b"c"[..]));
        assert!(store.read("t", Some(5), 0, 10).is_err());
        assert!(store.read("nope", None, 0, 10).is_err());
    }

    #[test]
    fn retention_evicts_oldest_and_counts() {
        let store = MemoryStore::new(3, 1 << 20, vec![("t".into(), 1)]);
        for i in 0..5 {
            let _ = store.append("t", vec![(0, rec(&i.to_string()))]);
        }
        let summary = store.summary();
        let p = &summary[0].partitions[0];
        assert_eq!((p.earliest_offset, p.next_offset), (2, 5));
        assert_eq!((p.records, p.evicted), (Some(3), Some(2)));
        let from_zero = store.read("t", Some(0), 0, 10).unwrap_or_default();
        assert_eq!(from_zero.first().map(|r| r.offset), Some(2));
        let from_three = store.read("t", Some(0), 3, 10).unwrap_or_default();
        assert_eq!(from_three.first().map(|r| r.offset), Some(3));
    }

    #[test]
    fn byte_cap_keeps_the_newest_record() {
        let store = MemoryStore::new(100, 4, vec![("t".into(), 1)]);
        let _ = store.append("t", vec![(0, rec("abc"))]);
        let _ = store.append("t", vec![(0, rec("0123456789"))]);
        let recs = store.records("t", 0).unwrap_or_default();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].offset, 1);
    }

    #[test]
    fn unknown_topic_or_partition_fails_per_record() {
        let store = MemoryStore::new(10, 100, vec![("t".into(), 1)]);
        let out = store.append("t", vec![(3, rec("x"))]);
        assert!(matches!(&out[0], Err(f) if *f == RecordFailure::unknown_topic_or_partition()));
        let out = store.append("gone", vec![(0, rec("x"))]);
        assert!(matches!(&out[0], Err(f) if *f == RecordFailure::unknown_topic_or_partition()));
    }

    #[test]
    fn create_delete_reset() {
        let store = MemoryStore::new(10, 100, vec![("keep".into(), 2)]);
        assert_eq!(store.create_topic("new", 3), 3);
        assert_eq!(store.create_topic("new", 5), 3);
        assert_eq!(store.list_topics().len(), 2);
        assert!(store.delete_topic("new"));
        assert!(!store.delete_topic("new"));
        let _ = store.append("keep", vec![(0, rec("x"))]);
        store.reset();
        assert_eq!(store.partition_count("keep"), Some(2));
        assert_eq!(store.records("keep", 0).map(|r| r.len()), Some(0));
    }
}
