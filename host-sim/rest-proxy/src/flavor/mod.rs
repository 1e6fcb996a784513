//! REST-proxy flavours: the layer that behaves like one real Kafka REST proxy, the one
//! [`Flavor`] (a setting, defined in [`crate::config`]) names.
//!
//! Below it, the [`crate::cluster`] produces and storage reports domain outcomes (an offset, or a
//! [`crate::storage::RecordFailure`] carrying a Kafka error code and its class); a flavour decides
//! which API paths exist ([`Flavor::serves`]), how records are batched
//! ([`crate::cluster::ProducePlan`]), how keys and values become bytes
//! ([`crate::codec::V2Encoding`]) and how outcomes and errors look on the wire. The server above
//! routes a request to its flavour's handler ([`Flavor::produce_v2`], [`confluent::v3`]).
//!
//! - [`Flavor::Confluent`] (default): Confluent REST Proxy, v2 and v3 ([`confluent`]).
//! - [`Flavor::Karapace`]: Aiven's Karapace REST proxy, v2 only ([`karapace`]).
//! - [`Flavor::Redpanda`]: Redpanda's HTTP Proxy (pandaproxy), v2 only ([`redpanda`]).

pub mod confluent;
pub mod karapace;
pub mod redpanda;

use bytes::Bytes;

use crate::cluster::Cluster;
use crate::codec::APPLICATION_JSON;
pub use crate::config::Flavor;
use crate::error::{ApiError, ConnectionDropped};
use crate::reply::Reply;

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
            Flavor::Confluent => Reply::error(&ApiError::no_such_path(), APPLICATION_JSON),
            Flavor::Karapace => karapace::not_found(),
            Flavor::Redpanda => redpanda::not_found(),
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

    /// `POST /topics/{topic}[/partitions/{partition}]` as this proxy answers it (`body` is the
    /// request body, or the error reading it gave).
    pub async fn produce_v2(
        self,
        cluster: &Cluster,
        topic: &str,
        path_partition: Option<&str>,
        content_type: Option<&str>,
        body: Result<Bytes, ApiError>,
    ) -> Result<Reply, ConnectionDropped> {
        match self {
            Flavor::Confluent => confluent::v2::produce(cluster, topic, path_partition, content_type, body).await,
            Flavor::Karapace => karapace::produce(cluster, topic, path_partition, content_type, body).await,
            // No partition-produce route in pandaproxy (see `serves`): only `/topics/{t}` gets here.
            Flavor::Redpanda => redpanda::produce(cluster, topic, content_type, body).await,
        }
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
