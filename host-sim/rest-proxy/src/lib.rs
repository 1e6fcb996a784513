//! An embedded, Confluent-compatible Kafka REST proxy for host-sim.
//!
//! It speaks the produce half of the Confluent REST Proxy over HTTP/1.1 so the filter under test
//! has a real upstream to talk to:
//!
//! - v2: `POST /topics/{topic}` (and `/topics/{topic}/partitions/{p}`) with
//!   `application/vnd.kafka.binary.v2+json` or `application/vnd.kafka.json.v2+json`, answering
//!   `application/vnd.kafka.v2+json` with `offsets`; `GET /topics`, `GET /topics/{topic}`.
//! - v3: `POST /v3/clusters/{cluster_id}/topics/{topic}/records` (`application/json`, one record,
//!   or several concatenated records in "streaming" style); `GET /v3/clusters[/{id}]`.
//! - Confluent's error envelopes `{"error_code":..,"message":..}` with the statuses Confluent uses.
//!
//! Records land in a [`storage`] backend chosen at start: in-memory topics (default) or a real
//! broker through the pure-Rust `rskafka` client (`--kafka-bootstrap`). Anything that is not a
//! Confluent API lives under `/_sim/`: reading records back, a topic summary, reset, and a
//! [`faults`] queue that makes the next produce requests fail in the ways real proxies do.
//!
//! [`flavor`] picks which proxy is modelled (`--flavor confluent|karapace|redpanda`): Confluent
//! (default, v2 and v3, as above), Karapace or Redpanda's pandaproxy (v2 only, each with its own
//! answers, limits and JSON handling). The store models the broker's `message.max.bytes`
//! (`--message-max-bytes`): a record batch over it fails with MESSAGE_TOO_LARGE.
//!
//! Layers, one-way: [`config`] (flags and validated settings) → [`server`] (HTTP routing,
//! [`RestProxy`], the produce pipeline) → [`flavor`] → [`v2`]/[`v3`] (Confluent) or the
//! flavour's own handlers, [`sim`] → [`storage`] (memory or Kafka; domain failures, not HTTP
//! shapes) and [`partitioner`]; [`codec`], [`reencode`] and [`timestamp`] are pure functions;
//! [`error`] holds the envelopes.
//!
//! [`schema_registry`] is an in-memory Confluent Schema Registry served on the same listener
//! (`/subjects/...`, `/schemas/...`); with it the Confluent flavour's v2 `avro` / `jsonschema`
//! content types and v3 schema-format data are serialized as Confluent's serializers do.
#![deny(missing_docs)]

pub mod codec;
pub mod config;
pub mod error;
pub mod faults;
pub mod flavor;
pub mod partitioner;
pub mod reencode;
pub mod schema_registry;
pub mod server;
pub mod sim;
pub mod storage;
pub mod timestamp;
pub mod v2;
pub mod v3;

pub use config::{RestProxyArgs, RestProxyConfig, RestProxyOptions, StorageConfig, TopicSpec};
pub use error::{ApiError, ConfigError, ConnectionDropped, RestProxyError};
pub use faults::{Fault, FaultAction};
pub use flavor::Flavor;
pub use server::RestProxy;
pub use storage::{RecordHeader, StoredRecord};
