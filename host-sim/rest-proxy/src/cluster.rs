//! The proxy's state below every handler: the validated configuration, the storage backend, the
//! fault queue and the partitioner, and the produce pipeline over them ([`Cluster::produce`]:
//! resolve the topic, place each record on a partition, apply an injected fault, store as the
//! flavour's [`ProducePlan`] says). Handlers get a [`Cluster`]; none of this knows HTTP shapes
//! beyond a fault's [`ApiError`].

use crate::schema_registry::SchemaRegistry;
use std::time::Duration;

use crate::config::{validate_topic_name, ConfigError, RestProxyConfig};
use crate::error::ApiError;
use crate::faults::{Fault, FaultAction, FaultQueue};
use crate::model::{Appended, ProduceRecord, StoredRecord};
use crate::partitioner::{partition_for_key, RoundRobin};
use crate::storage::{Backend, RecordFailure, StorageError};

/// Why a produce request failed as a whole, before any record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProduceError {
    /// The topic name is illegal (Kafka's `InvalidTopicException`).
    InvalidTopic(String),
    /// The topic does not exist and auto-creation is off.
    TopicNotFound,
    /// A record asked for a partition the topic does not have.
    PartitionNotFound,
    /// The backend failed before producing (broker unreachable for metadata); applies to every
    /// record.
    Backend(RecordFailure),
}

/// What the fault queue decided for one produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultOutcome {
    /// No fault (or only a delay): produce normally.
    Proceed,
    /// Answer with this error.
    HttpError(ApiError),
    /// Fail the records this hits, produce the others.
    RecordError(InjectedFailure),
    /// Drop the connection.
    Drop,
}

/// A `record_error` fault applied to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFailure {
    /// The code each record hit shows.
    pub error_code: i32,
    /// The message each record hit shows.
    pub message: String,
    /// Records whose 1-based position is a multiple of this are hit.
    pub every: u32,
}

impl InjectedFailure {
    /// Whether the record at 0-based `index` is hit.
    pub fn hits(&self, index: usize) -> bool {
        (index + 1) % (self.every.max(1) as usize) == 0
    }

    /// The error of a record it hits.
    pub fn error(&self) -> RecordError {
        RecordError::Injected {
            error_code: self.error_code,
            message: self.message.clone(),
        }
    }
}

/// Why one record of a produce request was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// Kafka refused it (the store, or the pipeline for a partition the topic lacks): a domain
    /// failure each flavour renders its own way.
    Kafka(RecordFailure),
    /// A `record_error` fault hit it (see [`crate::faults`]): every flavour shows this code and
    /// message as they are.
    Injected {
        /// The code the fault asked for.
        error_code: i32,
        /// The message the fault asked for.
        message: String,
    },
}

impl RecordError {
    /// What went wrong, for humans.
    pub fn message(&self) -> &str {
        match self {
            RecordError::Kafka(f) => &f.message,
            RecordError::Injected { message, .. } => message,
        }
    }

    /// A failure a `record_error` fault injected.
    pub fn injected(error_code: i32, message: impl Into<String>) -> Self {
        RecordError::Injected {
            error_code,
            message: message.into(),
        }
    }
}

impl From<RecordFailure> for RecordError {
    fn from(f: RecordFailure) -> Self {
        RecordError::Kafka(f)
    }
}

/// How a flavour's producer groups the records of one request into Kafka batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// Every record succeeds or fails alone (a producer that checks each record's size and
    /// splits refused batches): the good records of a request are written.
    PerRecord,
    /// One batch per partition, accepted or refused as a whole: a bad record fails every record
    /// of its partition, and none of them is written.
    PerPartition,
}

/// What happens to a record that asks for a partition the topic does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingPartition {
    /// The whole request is refused ([`ProduceError::PartitionNotFound`]); nothing is written.
    RejectRequest,
    /// The record fails with Kafka's UNKNOWN_TOPIC_OR_PARTITION.
    FailRecord,
}

/// How one flavour produces: see [`crate::flavor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducePlan {
    /// Batching of the records.
    pub batching: Batching,
    /// Records asking for a partition that does not exist.
    pub missing_partition: MissingPartition,
}

/// The records of one request bound for one partition, produced as one batch.
struct PartitionGroup {
    partition: i64,
    /// Their positions in the request.
    slots: Vec<usize>,
    /// The first failure already known for one of them (fails the whole batch).
    failure: Option<RecordError>,
    records: Vec<ProduceRecord>,
}

/// What became of one record of a produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOutcome {
    /// The partition it was (or would have been) written to; a requested partition is kept even
    /// when the topic does not have it.
    pub partition: i64,
    /// Where it landed, or why not.
    pub result: Result<Appended, RecordError>,
}

/// The proxy's state: configuration, backend, fault queue, partitioner.
#[derive(Debug)]
pub struct Cluster {
    config: RestProxyConfig,
    backend: Backend,
    faults: FaultQueue,
    round_robin: RoundRobin,
    schema_registry: SchemaRegistry,
}

impl Cluster {
    /// Validates `config` and builds the backend it names; pre-configured in-memory topics exist
    /// at once, the Kafka bridge connects on first use.
    pub fn new(config: RestProxyConfig) -> Result<Cluster, ConfigError> {
        config.validate()?;
        let topics = config
            .topics
            .iter()
            .map(|t| (t.name.clone(), t.partitions.unwrap_or(config.default_partitions)))
            .collect();
        let backend = Backend::new(&config.storage, topics);
        Ok(Cluster {
            config,
            backend,
            faults: FaultQueue::default(),
            round_robin: RoundRobin::default(),
            schema_registry: SchemaRegistry::default(),
        })
    }

    /// The embedded Schema Registry (served under `/subjects` and `/schemas`; the produce
    /// handlers serialize schema-format values with its schemas).
    pub fn schema_registry(&self) -> &SchemaRegistry {
        &self.schema_registry
    }

    /// The configuration in force.
    pub fn config(&self) -> &RestProxyConfig {
        &self.config
    }

    /// The storage backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The fault queue (what `/_sim/faults` edits), for tests that prefer Rust to HTTP.
    pub fn faults(&self) -> &FaultQueue {
        &self.faults
    }

    /// The records held by one in-memory partition, oldest first; `None` when the topic or
    /// partition does not exist or the backend is the Kafka bridge (use
    /// [`read_records`](Self::read_records) there).
    pub fn records(&self, topic: &str, partition: u32) -> Option<Vec<StoredRecord>> {
        match &self.backend {
            Backend::Memory(m) => m.records(topic, partition),
            Backend::Kafka(_) => None,
        }
    }

    /// Up to `limit` records of `topic` from `from_offset` on, of one partition or of every
    /// partition in turn; works with both backends.
    pub async fn read_records(
        &self,
        topic: &str,
        partition: Option<u32>,
        from_offset: i64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        self.backend.read(topic, partition, from_offset, limit).await
    }

    /// Takes the next fault for a produce request to `topic` and applies its delay.
    pub async fn take_fault(&self, topic: &str) -> FaultOutcome {
        let Some(fault) = self.faults.take(topic) else {
            return FaultOutcome::Proceed;
        };
        tracing::info!(topic, fault = %fault.to_json(), "rest-proxy: injecting fault");
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        }
        match fault.action {
            FaultAction::HttpError {
                status,
                error_code,
                message,
            } => FaultOutcome::HttpError(Fault::api_error(status, error_code, &message)),
            FaultAction::RecordError {
                error_code,
                message,
                every,
            } => FaultOutcome::RecordError(InjectedFailure {
                error_code,
                message,
                every,
            }),
            FaultAction::DropConnection => FaultOutcome::Drop,
            FaultAction::Delay => FaultOutcome::Proceed,
        }
    }

    /// Resolves `topic` (creating it when allowed), picks each record's partition, and stores
    /// the records as `plan` says, failing the records `injected` hits. One outcome per record, in
    /// order. Nothing is stored when this returns `Err`.
    pub async fn produce(
        &self,
        topic: &str,
        records: Vec<ProduceRecord>,
        plan: ProducePlan,
        injected: Option<&InjectedFailure>,
    ) -> Result<Vec<RecordOutcome>, ProduceError> {
        validate_topic_name(topic).map_err(ProduceError::InvalidTopic)?;
        let count = match self.backend.partition_count(topic).await {
            Ok(Some(n)) => n,
            Ok(None) if self.config.auto_create_topics => self
                .backend
                .create_topic(topic, self.config.default_partitions)
                .await
                .map_err(storage_to_produce)?,
            Ok(None) => return Err(ProduceError::TopicNotFound),
            Err(e) => return Err(storage_to_produce(e)),
        };
        // Each record's partition, and the failure already known for it (a missing partition or
        // an injected fault); records without one go to the backend.
        let mut placed: Vec<(i64, Option<RecordError>, ProduceRecord)> = Vec::with_capacity(records.len());
        for (i, r) in records.into_iter().enumerate() {
            let (partition, mut failure) = match (r.partition, &r.key) {
                (Some(p), _) => match u32::try_from(p) {
                    Ok(p) if p < count => (i64::from(p), None),
                    _ if plan.missing_partition == MissingPartition::RejectRequest => {
                        return Err(ProduceError::PartitionNotFound)
                    }
                    _ => (i64::from(p), Some(RecordFailure::unknown_topic_or_partition().into())),
                },
                (None, Some(key)) => (i64::from(partition_for_key(key, count)), None),
                (None, None) => (i64::from(self.round_robin.next(topic, count)), None),
            };
            if failure.is_none() {
                failure = injected.filter(|f| f.hits(i)).map(InjectedFailure::error);
            }
            placed.push((partition, failure, r));
        }
        let limit = self.config.message_max_bytes;
        let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; placed.len()];
        match plan.batching {
            Batching::PerRecord => {
                let mut slots = Vec::new();
                let mut batch = Vec::new();
                for (i, (partition, failure, record)) in placed.into_iter().enumerate() {
                    match (failure, u32::try_from(partition)) {
                        (None, Ok(p)) => {
                            slots.push((i, partition));
                            batch.push((p, record));
                        }
                        (failure, _) => {
                            let failure = failure.unwrap_or_else(|| RecordFailure::unknown_topic_or_partition().into());
                            outcomes[i] = Some(RecordOutcome {
                                partition,
                                result: Err(failure),
                            })
                        }
                    }
                }
                if !batch.is_empty() {
                    let results = self.backend.append(topic, batch, limit).await;
                    for ((i, partition), result) in slots.into_iter().zip(results) {
                        outcomes[i] = Some(RecordOutcome {
                            partition,
                            result: result.map_err(RecordError::Kafka),
                        });
                    }
                }
            }
            Batching::PerPartition => {
                // Partitions in the order they first appear.
                let mut groups: Vec<PartitionGroup> = Vec::new();
                for (i, (partition, failure, record)) in placed.into_iter().enumerate() {
                    let g = match groups.iter().position(|g| g.partition == partition) {
                        Some(g) => g,
                        None => {
                            groups.push(PartitionGroup {
                                partition,
                                slots: Vec::new(),
                                failure: None,
                                records: Vec::new(),
                            });
                            groups.len() - 1
                        }
                    };
                    let group = &mut groups[g];
                    group.slots.push(i);
                    if group.failure.is_none() {
                        group.failure = failure;
                    }
                    group.records.push(record);
                }
                for group in groups {
                    let PartitionGroup {
                        partition,
                        slots,
                        failure,
                        records,
                    } = group;
                    let results: Vec<Result<Appended, RecordError>> = match (failure, u32::try_from(partition)) {
                        (None, Ok(p)) => match self.backend.append_batch(topic, p, records, limit).await {
                            Ok(appended) => appended.into_iter().map(Ok).collect(),
                            Err(f) => vec![Err(RecordError::Kafka(f)); slots.len()],
                        },
                        (failure, _) => {
                            let f = failure.unwrap_or_else(|| RecordFailure::unknown_topic_or_partition().into());
                            vec![Err(f); slots.len()]
                        }
                    };
                    for (i, result) in slots.into_iter().zip(results) {
                        outcomes[i] = Some(RecordOutcome { partition, result });
                    }
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| RecordOutcome {
                    partition: -1,
                    result: Err(RecordFailure::fatal("record was not produced").into()),
                })
            })
            .collect())
    }

    /// Forgets per-topic partitioner state (after a topic is deleted).
    pub fn forget_topic(&self, topic: &str) {
        self.round_robin.forget(topic);
    }
}

fn storage_to_produce(e: StorageError) -> ProduceError {
    match e {
        StorageError::TopicNotFound(_) => ProduceError::TopicNotFound,
        StorageError::PartitionNotFound { .. } => ProduceError::PartitionNotFound,
        StorageError::Kafka(f) => ProduceError::Backend(f),
        StorageError::Unsupported(what) => {
            ProduceError::Backend(RecordFailure::fatal(format!("{what} is not supported")))
        }
    }
}
