//! The Kafka bridge: records go to a real broker through `rskafka` (pure Rust, no librdkafka),
//! and the offsets returned are the broker's.
//!
//! The client connects lazily (first request, or [`KafkaBridge::check`]) and reconnects after a
//! failure; every broker operation is bounded by the configured timeout (rskafka's own retry
//! deadline and a `tokio` timeout around it). Broker errors become domain failures: the Kafka
//! protocol code, classified as the Java client classifies the exception (authentication,
//! authorization, retriable, other); each REST-proxy flavour renders them its own way.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use rskafka::BackoffConfig;

use super::failure::{FailureClass, RecordFailure, StorageError};
use crate::model::{Appended, PartitionSummary, ProduceRecord, RecordHeader, StoredRecord, TopicSummary};

/// Most bytes asked for in one fetch when reading records back.
const FETCH_MAX_BYTES: i32 = 4 * 1024 * 1024;
/// Longest wait of a fetch for more data. Not 0: tansu 0.6 answers a fetch with `max_wait_ms` 0
/// with no topic at all.
const FETCH_MAX_WAIT_MS: i32 = 1;

/// A lazily connected rskafka client plus metadata and partition-client caches.
pub struct KafkaBridge {
    bootstrap: Vec<String>,
    timeout: Duration,
    initial_topics: Vec<(String, u32)>,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
    partitions: std::sync::Mutex<HashMap<String, u32>>,
    partition_clients: tokio::sync::Mutex<HashMap<(String, u32), Arc<PartitionClient>>>,
}

impl std::fmt::Debug for KafkaBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBridge")
            .field("bootstrap", &self.bootstrap)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The Kafka protocol code of an rskafka protocol error (<https://kafka.apache.org/protocol#protocol_error_codes>);
/// rskafka keeps its own conversion private, so the codes the bridge can meet are listed here.
pub fn kafka_code(e: &ProtocolError) -> i16 {
    match e {
        ProtocolError::UnknownServerError => -1,
        ProtocolError::OffsetOutOfRange => 1,
        ProtocolError::CorruptMessage => 2,
        ProtocolError::UnknownTopicOrPartition => 3,
        ProtocolError::InvalidFetchSize => 4,
        ProtocolError::LeaderNotAvailable => 5,
        ProtocolError::NotLeaderOrFollower => 6,
        ProtocolError::RequestTimedOut => 7,
        ProtocolError::BrokerNotAvailable => 8,
        ProtocolError::ReplicaNotAvailable => 9,
        ProtocolError::MessageTooLarge => 10,
        ProtocolError::NetworkException => 13,
        ProtocolError::CoordinatorLoadInProgress => 14,
        ProtocolError::CoordinatorNotAvailable => 15,
        ProtocolError::NotCoordinator => 16,
        ProtocolError::InvalidTopicException => 17,
        ProtocolError::RecordListTooLarge => 18,
        ProtocolError::NotEnoughReplicas => 19,
        ProtocolError::NotEnoughReplicasAfterAppend => 20,
        ProtocolError::InvalidRequiredAcks => 21,
        ProtocolError::TopicAuthorizationFailed => 29,
        ProtocolError::GroupAuthorizationFailed => 30,
        ProtocolError::ClusterAuthorizationFailed => 31,
        ProtocolError::UnsupportedSaslMechanism => 33,
        ProtocolError::IllegalSaslState => 34,
        ProtocolError::TopicAlreadyExists => 36,
        ProtocolError::InvalidRecord => 87,
        ProtocolError::ConcurrentTransactions => 51,
        ProtocolError::TransactionalIdAuthorizationFailed => 53,
        ProtocolError::KafkaStorageError => 56,
        ProtocolError::SaslAuthenticationFailed => 58,
        ProtocolError::FencedLeaderEpoch => 74,
        ProtocolError::UnknownLeaderEpoch => 75,
        ProtocolError::OffsetNotAvailable => 78,
        ProtocolError::Unknown(code) => *code,
        _ => -1,
    }
}

/// The domain failure of an rskafka error: the broker's protocol code classified the way the
/// Java client classifies the exception the same broker error raises (authentication,
/// authorization, `RetriableException` subclasses, other), or a client-side failure.
pub fn failure_of(e: &KafkaError) -> RecordFailure {
    let message = e.to_string();
    match e {
        KafkaError::ServerError { protocol_error, .. } => {
            let class = match protocol_error {
                ProtocolError::SaslAuthenticationFailed
                | ProtocolError::IllegalSaslState
                | ProtocolError::UnsupportedSaslMechanism => FailureClass::Authentication,
                ProtocolError::TopicAuthorizationFailed
                | ProtocolError::GroupAuthorizationFailed
                | ProtocolError::ClusterAuthorizationFailed
                | ProtocolError::TransactionalIdAuthorizationFailed => FailureClass::Authorization,
                // Subclasses of RetriableException in the Java client.
                ProtocolError::CorruptMessage
                | ProtocolError::UnknownTopicOrPartition
                | ProtocolError::LeaderNotAvailable
                | ProtocolError::NotLeaderOrFollower
                | ProtocolError::RequestTimedOut
                | ProtocolError::ReplicaNotAvailable
                | ProtocolError::NetworkException
                | ProtocolError::CoordinatorLoadInProgress
                | ProtocolError::CoordinatorNotAvailable
                | ProtocolError::NotCoordinator
                | ProtocolError::NotEnoughReplicas
                | ProtocolError::NotEnoughReplicasAfterAppend
                | ProtocolError::KafkaStorageError
                | ProtocolError::FencedLeaderEpoch
                | ProtocolError::UnknownLeaderEpoch
                | ProtocolError::OffsetNotAvailable
                | ProtocolError::ConcurrentTransactions => FailureClass::Retriable,
                _ => FailureClass::NonRetriable,
            };
            RecordFailure::broker(kafka_code(protocol_error), class, message)
        }
        // Connection trouble and deadlines: the Java producer reports a TimeoutException.
        KafkaError::Connection(_) | KafkaError::Request(_) | KafkaError::RetryFailed(_) | KafkaError::Timeout => {
            RecordFailure::retriable(message)
        }
        _ => RecordFailure::fatal(message),
    }
}

/// The record's headers as rskafka takes them: a map of name to bytes (rskafka 0.6
/// `src/record.rs`, `Record::headers: BTreeMap<String, Vec<u8>>`). Only headers that
/// [`headers_refusal`] passed come here, so nothing is merged or turned into empty bytes.
fn headers_to_kafka(headers: Vec<RecordHeader>) -> BTreeMap<String, Vec<u8>> {
    headers
        .into_iter()
        .map(|h| (h.name, h.value.map(|v| v.to_vec()).unwrap_or_default()))
        .collect()
}

/// Why the bridge cannot produce a record with these headers exactly, if it cannot. Kafka keeps
/// repeated header names and null values (Confluent's v3 API accepts both), but rskafka's
/// `Record::headers` is a map of name to bytes: a repeated name would lose all but one value and
/// a null would become empty bytes. Such a record is refused (non-retriable) rather than written
/// differently from what was acknowledged. Its names also arrive at the broker in name order,
/// not in the request's.
pub(crate) fn headers_refusal(headers: &[RecordHeader]) -> Option<RecordFailure> {
    for (i, h) in headers.iter().enumerate() {
        if h.value.is_none() {
            return Some(RecordFailure::fatal(format!(
                "host-sim's Kafka bridge cannot produce a null record header value (header {:?}): rskafka has none; the record was not produced",
                h.name
            )));
        }
        if headers[..i].iter().any(|earlier| earlier.name == h.name) {
            return Some(RecordFailure::fatal(format!(
                "host-sim's Kafka bridge keeps one value per record header name (rskafka), and header {:?} is repeated; the record was not produced",
                h.name
            )));
        }
    }
    None
}

impl KafkaBridge {
    /// A bridge to `bootstrap`; nothing is contacted until first use.
    pub fn new(bootstrap: Vec<String>, timeout: Duration, initial_topics: Vec<(String, u32)>) -> Self {
        KafkaBridge {
            bootstrap,
            timeout,
            initial_topics,
            client: tokio::sync::Mutex::new(None),
            partitions: std::sync::Mutex::new(HashMap::new()),
            partition_clients: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    fn timeout_ms(&self) -> i32 {
        i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX)
    }

    /// Runs one broker operation under the timeout.
    async fn bounded<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, KafkaError>>,
    ) -> Result<T, RecordFailure> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(failure_of(&e)),
            Err(_) => Err(RecordFailure::retriable(format!(
                "Kafka {what} timed out after {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        match self.partitions.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    async fn client(&self) -> Result<Arc<Client>, RecordFailure> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(Arc::clone(c));
        }
        let backoff = BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(self.timeout),
        };
        let builder = ClientBuilder::new(self.bootstrap.clone())
            .client_id("host-sim-rest-proxy")
            .backoff_config(backoff);
        let client = Arc::new(
            self.bounded("connect", builder.build())
                .await
                .map_err(|f| RecordFailure {
                    cause: f.cause,
                    message: format!("cannot reach Kafka at {}: {}", self.bootstrap.join(","), f.message),
                })?,
        );
        tracing::info!(bootstrap = %self.bootstrap.join(","), "rest-proxy: connected to Kafka");
        for (name, partitions) in &self.initial_topics {
            self.create_with(&client, name, *partitions).await?;
        }
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    async fn forget_client(&self) {
        *self.client.lock().await = None;
        self.partition_clients.lock().await.clear();
    }

    async fn refresh(&self, client: &Client) -> Result<HashMap<String, u32>, RecordFailure> {
        let topics = self.bounded("metadata", client.list_topics()).await?;
        let map: HashMap<String, u32> = topics
            .into_iter()
            .map(|t| (t.name, t.partitions.len() as u32))
            .collect();
        *self.cache() = map.clone();
        Ok(map)
    }

    async fn create_with(&self, client: &Client, topic: &str, partitions: u32) -> Result<u32, RecordFailure> {
        let existing = self.refresh(client).await?;
        if let Some(n) = existing.get(topic) {
            return Ok(*n);
        }
        let controller = client.controller_client().map_err(|e| failure_of(&e))?;
        let n = i32::try_from(partitions).unwrap_or(i32::MAX);
        let created = tokio::time::timeout(self.timeout, controller.create_topic(topic, n, 1, self.timeout_ms())).await;
        match created {
            Ok(Ok(())) => tracing::info!(topic, partitions, "rest-proxy: created Kafka topic"),
            // Created by someone else in the meantime: fine.
            Ok(Err(KafkaError::ServerError {
                protocol_error: ProtocolError::TopicAlreadyExists,
                ..
            })) => {}
            Ok(Err(e)) => return Err(failure_of(&e)),
            Err(_) => {
                return Err(RecordFailure::retriable(format!(
                    "Kafka create topic timed out after {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
        let after = self.refresh(client).await?;
        Ok(after.get(topic).copied().unwrap_or(partitions))
    }

    /// Connects (if needed) and makes sure the configured topics exist.
    pub async fn check(&self) -> Result<(), StorageError> {
        self.client().await.map(|_| ()).map_err(StorageError::from)
    }

    async fn with_client<T, F, Fut>(&self, f: F) -> Result<T, RecordFailure>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, RecordFailure>>,
    {
        let client = self.client().await?;
        let result = f(client).await;
        if let Err(failure) = &result {
            if failure.class() == FailureClass::Retriable {
                // Connection trouble: start afresh next time.
                self.forget_client().await;
            }
        }
        result
    }

    /// Partition count of `topic` (cached; refreshed from the broker on a miss).
    pub async fn partition_count(&self, topic: &str) -> Result<Option<u32>, StorageError> {
        if let Some(n) = self.cache().get(topic) {
            return Ok(Some(*n));
        }
        self.with_client(|c| async move { self.refresh(&c).await })
            .await
            .map(|m| m.get(topic).copied())
            .map_err(StorageError::from)
    }

    /// Creates `topic` unless it exists (replication factor 1); returns its partition count.
    pub async fn create_topic(&self, topic: &str, partitions: u32) -> Result<u32, StorageError> {
        self.with_client(|c| async move { self.create_with(&c, topic, partitions).await })
            .await
            .map_err(StorageError::from)
    }

    async fn partition_client(
        &self,
        client: &Client,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<PartitionClient>, RecordFailure> {
        let key = (topic.to_string(), partition);
        if let Some(pc) = self.partition_clients.lock().await.get(&key) {
            return Ok(Arc::clone(pc));
        }
        let id = i32::try_from(partition).unwrap_or(i32::MAX);
        let pc = Arc::new(
            self.bounded(
                "leader lookup",
                client.partition_client(topic, id, UnknownTopicHandling::Retry),
            )
            .await?,
        );
        self.partition_clients.lock().await.insert(key, Arc::clone(&pc));
        Ok(pc)
    }

    /// Produces records, one batch per partition (order kept within a partition).
    pub async fn append(&self, topic: &str, batch: Vec<(u32, ProduceRecord)>) -> Vec<Result<Appended, RecordFailure>> {
        let total = batch.len();
        let mut results: Vec<Option<Result<Appended, RecordFailure>>> = vec![None; total];
        let mut groups: BTreeMap<u32, Vec<(usize, i64, Record)>> = BTreeMap::new();
        for (i, (partition, r)) in batch.into_iter().enumerate() {
            if let Some(refusal) = headers_refusal(&r.headers) {
                results[i] = Some(Err(refusal));
                continue;
            }
            let record = Record {
                key: r.key.map(|k| k.to_vec()),
                value: r.value.map(|v| v.to_vec()),
                headers: headers_to_kafka(r.headers),
                timestamp: DateTime::<Utc>::from_timestamp_millis(r.timestamp_ms).unwrap_or_default(),
            };
            groups.entry(partition).or_default().push((i, r.timestamp_ms, record));
        }
        for (partition, items) in groups {
            let (meta, records): (Vec<(usize, i64)>, Vec<Record>) =
                items.into_iter().map(|(i, ts, r)| ((i, ts), r)).unzip();
            let outcome = self
                .with_client(|c| async move {
                    let pc = self.partition_client(&c, topic, partition).await?;
                    let produced = self
                        .bounded("produce", pc.produce(records, Compression::NoCompression))
                        .await;
                    if produced.is_err() {
                        self.partition_clients
                            .lock()
                            .await
                            .remove(&(topic.to_string(), partition));
                    }
                    produced
                })
                .await;
            match outcome {
                Ok(offsets) if offsets.len() == meta.len() => {
                    for ((i, ts), offset) in meta.into_iter().zip(offsets) {
                        results[i] = Some(Ok(Appended {
                            partition,
                            offset,
                            timestamp_ms: ts,
                        }));
                    }
                }
                Ok(offsets) => {
                    let f = RecordFailure::fatal(format!(
                        "broker acknowledged {} of {} records",
                        offsets.len(),
                        meta.len()
                    ));
                    for (i, _) in meta {
                        results[i] = Some(Err(f.clone()));
                    }
                }
                Err(f) => {
                    tracing::warn!(topic, partition, error = %f.message, "rest-proxy: Kafka produce failed");
                    for (i, _) in meta {
                        results[i] = Some(Err(f.clone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(RecordFailure::fatal("record was not produced"))))
            .collect()
    }

    /// Topic names and partition counts, from the broker.
    pub async fn list_topics(&self) -> Result<Vec<(String, u32)>, StorageError> {
        let map = self.with_client(|c| async move { self.refresh(&c).await }).await?;
        let mut topics: Vec<(String, u32)> = map.into_iter().collect();
        topics.sort();
        Ok(topics)
    }

    /// Earliest offset and log end offset of a partition. The end is the larger of ListOffsets'
    /// "latest" and the high watermark of a fetch there: tansu 0.6 answers "latest" with the base
    /// offset of the last batch plus one, short of the true end when that batch held several
    /// records.
    async fn offsets(&self, client: &Client, topic: &str, partition: u32) -> Result<(i64, i64), RecordFailure> {
        let pc = self.partition_client(client, topic, partition).await?;
        let earliest = self.bounded("list offsets", pc.get_offset(OffsetAt::Earliest)).await?;
        let latest = self.bounded("list offsets", pc.get_offset(OffsetAt::Latest)).await?;
        let high_watermark = match self
            .bounded("fetch", pc.fetch_records(latest, 1..FETCH_MAX_BYTES, FETCH_MAX_WAIT_MS))
            .await
        {
            Ok((_, hw)) => hw,
            Err(_) => latest,
        };
        Ok((earliest, latest.max(high_watermark)))
    }

    /// Every topic with its partitions' earliest and next offsets.
    pub async fn summary(&self) -> Result<Vec<TopicSummary>, StorageError> {
        let topics = self.list_topics().await?;
        let mut out = Vec::with_capacity(topics.len());
        for (name, count) in topics {
            let mut partitions = Vec::with_capacity(count as usize);
            for p in 0..count {
                let (earliest, next) = self
                    .with_client(|c| {
                        let name = name.clone();
                        async move { self.offsets(&c, &name, p).await }
                    })
                    .await?;
                partitions.push(PartitionSummary {
                    partition: p,
                    earliest_offset: earliest,
                    next_offset: next,
                    records: None,
                    bytes: None,
                    evicted: None,
                });
            }
            out.push(TopicSummary { name, partitions });
        }
        Ok(out)
    }

    async fn read_partition(
        &self,
        client: &Client,
        topic: &str,
        partition: u32,
        from_offset: i64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, RecordFailure> {
        let (earliest, latest) = self.offsets(client, topic, partition).await?;
        let pc = self.partition_client(client, topic, partition).await?;
        let mut next = from_offset.max(earliest);
        let mut out = Vec::new();
        while out.len() < limit && next < latest {
            let (batch, _high_watermark) = self
                .bounded("fetch", pc.fetch_records(next, 1..FETCH_MAX_BYTES, FETCH_MAX_WAIT_MS))
                .await?;
            let before = out.len();
            for r in batch {
                if r.offset < next || out.len() >= limit {
                    continue;
                }
                next = r.offset + 1;
                out.push(StoredRecord {
                    partition,
                    offset: r.offset,
                    timestamp_ms: r.record.timestamp.timestamp_millis(),
                    key: r.record.key.map(Bytes::from),
                    value: r.record.value.map(Bytes::from),
                    headers: r
                        .record
                        .headers
                        .into_iter()
                        .map(|(name, value)| RecordHeader {
                            name,
                            value: Some(Bytes::from(value)),
                        })
                        .collect(),
                });
            }
            if out.len() == before {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `limit` records of `topic` from `from_offset` on, fetched from the broker.
    pub async fn read(
        &self,
        topic: &str,
        partition: Option<u32>,
        from_offset: i64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        let count = self
            .partition_count(topic)
            .await?
            .ok_or_else(|| StorageError::TopicNotFound(topic.to_string()))?;
        let selected: Vec<u32> = match partition {
            Some(p) if p < count => vec![p],
            Some(p) => {
                return Err(StorageError::PartitionNotFound {
                    topic: topic.to_string(),
                    partition: p,
                })
            }
            None => (0..count).collect(),
        };
        let mut out = Vec::new();
        for p in selected {
            if out.len() >= limit {
                break;
            }
            let want = limit - out.len();
            let mut got = self
                .with_client(|c| async move { self.read_partition(&c, topic, p, from_offset, want).await })
                .await?;
            out.append(&mut got);
        }
        Ok(out)
    }

    /// Deletes `topic` on the broker; `false` when it did not exist.
    pub async fn delete_topic(&self, topic: &str) -> Result<bool, StorageError> {
        if self.partition_count(topic).await?.is_none() {
            return Ok(false);
        }
        self.with_client(|c| async move {
            let controller = c.controller_client().map_err(|e| failure_of(&e))?;
            self.bounded("delete topic", controller.delete_topic(topic, self.timeout_ms()))
                .await
        })
        .await?;
        self.cache().remove(topic);
        self.partition_clients.lock().await.retain(|(t, _), _| t != topic);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::failure::FailureCause;

    #[test]
    fn errors_map_to_classified_kafka_codes() {
        let server = |protocol_error| KafkaError::ServerError {
            protocol_error,
            error_message: None,
            request: rskafka::client::error::RequestContext::Topic("t".into()),
            response: None,
            is_virtual: false,
        };
        let cause = |e: &KafkaError| failure_of(e).cause;
        assert_eq!(
            cause(&server(ProtocolError::NotLeaderOrFollower)),
            FailureCause::Broker {
                kafka_code: 6,
                class: FailureClass::Retriable
            }
        );
        assert_eq!(
            cause(&server(ProtocolError::MessageTooLarge)),
            FailureCause::Broker {
                kafka_code: 10,
                class: FailureClass::NonRetriable
            }
        );
        assert_eq!(
            cause(&server(ProtocolError::TopicAuthorizationFailed)),
            FailureCause::Broker {
                kafka_code: 29,
                class: FailureClass::Authorization
            }
        );
        assert_eq!(
            cause(&server(ProtocolError::SaslAuthenticationFailed)),
            FailureCause::Broker {
                kafka_code: 58,
                class: FailureClass::Authentication
            }
        );
        assert_eq!(
            cause(&server(ProtocolError::Unknown(4242))),
            FailureCause::Broker {
                kafka_code: 4242,
                class: FailureClass::NonRetriable
            }
        );
        assert_eq!(
            cause(&KafkaError::Timeout),
            FailureCause::Client {
                class: FailureClass::Retriable
            }
        );
        assert_eq!(
            cause(&KafkaError::InvalidResponse("x".into())),
            FailureCause::Client {
                class: FailureClass::NonRetriable
            }
        );
    }

    fn header(name: &str, value: Option<&'static [u8]>) -> RecordHeader {
        RecordHeader {
            name: name.into(),
            value: value.map(Bytes::from_static),
        }
    }

    #[test]
    fn headers_the_bridge_cannot_keep_are_refused() {
        let fine = vec![header("b", Some(b"x")), header("a", Some(b""))];
        assert_eq!(headers_refusal(&fine), None);
        let h = headers_to_kafka(fine);
        assert_eq!(h.get("a").map(Vec::len), Some(0));
        assert_eq!(h.get("b").map(Vec::as_slice), Some(&b"x"[..]));

        let null = headers_refusal(&[header("a", None)]).expect("null refused");
        assert_eq!(null.class(), FailureClass::NonRetriable);
        assert!(
            null.message.contains("null record header value (header \"a\")"),
            "{}",
            null.message
        );
        let repeated = headers_refusal(&[
            header("t", Some(b"1")),
            header("u", Some(b"2")),
            header("t", Some(b"3")),
        ])
        .expect("repeat refused");
        assert!(
            repeated.message.contains("header \"t\" is repeated"),
            "{}",
            repeated.message
        );
    }

    #[tokio::test]
    async fn a_refused_record_fails_alone_before_the_broker_is_asked() {
        // Nothing listens on port 1: the refused record fails with its own message, the other
        // with the connection error, so the refusal did not need the broker.
        let bridge = KafkaBridge::new(vec!["127.0.0.1:1".into()], Duration::from_millis(300), Vec::new());
        let record = |headers| ProduceRecord {
            partition: None,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers,
            timestamp_ms: 0,
        };
        let results = bridge
            .append(
                "t",
                vec![
                    (0, record(vec![header("t", Some(b"1")), header("t", Some(b"2"))])),
                    (0, record(vec![header("t", Some(b"1"))])),
                ],
            )
            .await;
        let message = |r: &Result<Appended, RecordFailure>| r.clone().expect_err("failed").message;
        assert!(message(&results[0]).contains("is repeated"), "{:?}", results[0]);
        assert!(!message(&results[1]).contains("is repeated"), "{:?}", results[1]);
    }

    #[tokio::test]
    async fn unreachable_broker_is_a_retriable_error() {
        // Port 1 on loopback: nothing listens there, so the connection is refused at once.
        let bridge = KafkaBridge::new(vec!["127.0.0.1:1".into()], Duration::from_millis(300), Vec::new());
        match bridge.partition_count("t").await {
            Err(StorageError::Kafka(f)) => {
                assert_eq!(f.class(), FailureClass::Retriable);
                assert!(f.message.contains("cannot reach Kafka"), "{}", f.message);
            }
            other => panic!("expected a Kafka error, got {other:?}"),
        }
    }
}
