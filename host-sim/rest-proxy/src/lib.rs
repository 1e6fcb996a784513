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
#![deny(missing_docs)]

pub mod cluster;
pub mod codec;
pub mod config;
pub mod error;
pub mod faults;
pub mod flavor;
pub mod model;
pub mod partitioner;
pub mod reencode;
pub mod reply;
pub mod server;
pub mod sim;
pub mod storage;
pub mod timestamp;

pub use config::{ConfigError, RestProxyArgs, RestProxyConfig, RestProxyOptions, TopicSpec};
pub use error::{ApiError, ConnectionDropped};
pub use faults::{Fault, FaultAction};
pub use flavor::Flavor;
pub use model::{RecordHeader, StoredRecord};
pub use server::{RestProxy, RestProxyError};
pub use storage::StorageConfig;
