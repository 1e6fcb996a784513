//! REST-proxy flavours: which real Kafka REST proxy the simulator behaves like.
//!
//! Storage reports domain outcomes (an offset, or a [`crate::storage::RecordFailure`] carrying a
//! Kafka error code and its class); a flavour is the layer that decides which API paths exist,
//! how records are batched ([`crate::server::ProducePlan`]), how keys and values become bytes
//! ([`crate::codec::V2Encoding`]) and how outcomes and errors look on the wire.
//!
//! - [`Flavor::Confluent`] (default): Confluent REST Proxy, v2 and v3 ([`crate::v2`], [`crate::v3`],
//!   codes in [`confluent`]).
//! - [`Flavor::Karapace`]: Aiven's Karapace REST proxy, v2 only ([`karapace`]).
//! - [`Flavor::Redpanda`]: Redpanda's HTTP Proxy (pandaproxy), v2 only ([`redpanda`]).

pub mod confluent;
pub mod karapace;
pub mod redpanda;

use std::fmt;

use crate::reply::Reply;

/// The REST proxy being modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Flavor {
    /// Confluent REST Proxy (kafka-rest): v2 and v3.
    #[default]
    Confluent,
    /// Karapace (Aiven-Open/karapace): v2 only.
    Karapace,
    /// Redpanda HTTP Proxy (pandaproxy): v2 only.
    Redpanda,
}

/// The part of the HTTP API a route belongs to, for [`Flavor::serves`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `GET /`.
    Root,
    /// `GET /topics`, `GET /topics/{t}`, `POST /topics/{t}`.
    V2Topics,
    /// `POST /topics/{t}/partitions/{p}`.
    V2PartitionProduce,
    /// Anything under `/v3/`.
    V3,
    /// `/_sim/...`: the simulator's own endpoints, served by every flavour.
    Sim,
}

impl Flavor {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Confluent => "confluent",
            Flavor::Karapace => "karapace",
            Flavor::Redpanda => "redpanda",
        }
    }

    /// Whether this proxy has the route at all; a route it lacks gets [`Flavor::not_found`].
    pub fn serves(self, api: Api) -> bool {
        match self {
            Flavor::Confluent => true,
            // Karapace registers v2 routes only (karapace
            // `src/karapace/kafka_rest_apis/__init__.py` `_add_kafka_rest_routes`): `/topics`,
            // `/topics/<topic>` and `/topics/<topic>/partitions/<partition_id>`, nothing for `/`.
            Flavor::Karapace => !matches!(api, Api::V3 | Api::Root),
            // pandaproxy's API document lists `/topics`, `/topics/{topic_name}` (GET, POST) and
            // `/topics/{topic_name}/partitions/{partition_id}/records` (GET) among its v2 routes,
            // nothing for `/`, partition produce or v3 (redpanda
            // `src/v/pandaproxy/api/api-doc/rest.json`).
            Flavor::Redpanda => matches!(api, Api::V2Topics | Api::Sim),
        }
    }

    /// The answer to a path this proxy has no route for.
    pub fn not_found(self) -> Reply {
        match self {
            Flavor::Confluent => Reply::error(&crate::error::ApiError::no_such_path(), crate::codec::APPLICATION_JSON),
            Flavor::Karapace => karapace::not_found(),
            Flavor::Redpanda => redpanda::not_found(),
        }
    }

    /// Largest request body accepted by default.
    pub fn default_max_request_bytes(self) -> usize {
        match self {
            Flavor::Confluent => crate::config::DEFAULT_MAX_REQUEST_BYTES,
            Flavor::Karapace => karapace::MAX_REQUEST_BYTES,
            Flavor::Redpanda => redpanda::DEFAULT_MEMORY_BUDGET,
        }
    }

    /// The record batch limit of the broker behind this proxy by default.
    pub fn default_message_max_bytes(self) -> usize {
        match self {
            Flavor::Confluent => crate::storage::DEFAULT_MESSAGE_MAX_BYTES,
            Flavor::Karapace => karapace::PRODUCER_MAX_REQUEST_SIZE,
            Flavor::Redpanda => redpanda::KAFKA_BATCH_MAX_BYTES,
        }
    }

    /// Bytes a proxy adds to a request's declared length before comparing it with the request
    /// limit.
    pub fn request_overhead(self) -> usize {
        match self {
            Flavor::Redpanda => redpanda::REQUEST_OVERHEAD,
            _ => 0,
        }
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_surface_per_flavor() {
        assert!(Flavor::Confluent.serves(Api::V3));
        assert!(!Flavor::Karapace.serves(Api::V3));
        assert!(Flavor::Karapace.serves(Api::V2PartitionProduce));
        assert!(!Flavor::Karapace.serves(Api::Root));
        assert!(!Flavor::Redpanda.serves(Api::V3));
        assert!(!Flavor::Redpanda.serves(Api::V2PartitionProduce));
        assert!(!Flavor::Redpanda.serves(Api::Root));
        for f in [Flavor::Confluent, Flavor::Karapace, Flavor::Redpanda] {
            assert!(f.serves(Api::Sim) && f.serves(Api::V2Topics), "{f}");
            assert_eq!(f.not_found().status.as_u16(), 404);
        }
    }
}
