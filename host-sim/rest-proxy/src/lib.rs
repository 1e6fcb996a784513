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
//! Layers, one-way, bottom to top (each imports only from layers below it):
//!
//! 1. Pure leaves: [`model`] (the record and topic types every layer shares), [`timestamp`],
//!    [`reencode`], [`partitioner`].
//! 2. [`storage`] (memory or Kafka; domain failures, no HTTP shapes) over [`model`].
//! 3. [`config`] (flags, validated settings, [`Flavor`] as a setting with its default limits)
//!    over [`storage`]'s own settings; [`error`] (Confluent's envelopes and codes, and the
//!    mapping of storage failures to them) over [`storage`].
//! 4. [`codec`] (request decoding, Confluent's code for each bad body), [`reply`] (an answer
//!    before it is HTTP), [`faults`] (the fault queue), all over [`error`]; then
//!    [`schema_registry`] (an in-memory Confluent Schema Registry, its API served on the same
//!    listener under `/subjects/...` and `/schemas/...`, and the serializers the Confluent
//!    flavour's v2 `avro` / `jsonschema` content types and v3 schema-format data use, writing
//!    what Confluent's serializers write) over [`codec`] and [`reply`].
//! 5. [`cluster`]: the proxy's state (config, backend, faults, partitioner, schema registry) and
//!    the produce pipeline every handler uses.
//! 6. Handlers: [`flavor`] (one module per proxy: [`flavor::confluent`] with its v2 and v3,
//!    [`flavor::karapace`], [`flavor::redpanda`]) and [`sim`] (`/_sim/`), over [`cluster`].
//! 7. [`server`]: HTTP routing, body limits, [`RestProxy`] and its listener, over the handlers.
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
pub mod schema_registry;
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
