//! The Redpanda flavour (Redpanda's HTTP Proxy, "pandaproxy", v2 only). Sources: redpanda
//! `src/v/pandaproxy/rest/handlers.cc` (`post_topics_name`), `src/v/pandaproxy/json/requests/produce.h`
//! (request parsing and the `offsets` answer), `src/v/kafka/client/client.cc` (`produce_records`:
//! one batch per partition), `src/v/kafka/client/producer.cc` (`make_produce_response`),
//! `src/v/pandaproxy/server.cc` (request size check), `src/v/pandaproxy/api/api-doc/rest.json`
//! (routes), `src/v/config/configuration.cc` (`kafka_batch_max_bytes`), and seastar
//! `src/http/routes.cc` (the 404 of a path without a route).
//!
//! - `POST /topics/{topic}` with `application/vnd.kafka.binary.v2+json` or
//!   `application/vnd.kafka.json.v2+json`; no partition-produce route, no v3.
//! - The records are grouped into one batch per partition; the answer is HTTP 200
//!   `{"offsets":[{"partition":P,"offset":O}]}` with one entry **per partition**, `offset` being
//!   the batch's base offset, and `"error_code":E` (a Kafka error code) before `offset` when the
//!   partition's batch failed. A batch is written or refused as a whole, so a bad record fails
//!   every record of its partition (10 MESSAGE_TOO_LARGE over the broker's 1 MiB
//!   `kafka_batch_max_bytes`; 3 UNKNOWN_TOPIC_OR_PARTITION for a partition or topic that does
//!   not exist, an unknown topic's records going to partition 0). A failure with no Kafka
//!   code is -1 (UNKNOWN_SERVER_ERROR, `make_produce_response`). The offset of a failed batch is
//!   written here as -1.
//! - A null key is written as an empty key (`record.key.value_or(iobuf{})`); `json` values are
//!   re-serialized through rapidjson ([`crate::reencode`], rapidjson style).
//! - 413 (empty body) when 1024 bytes plus the declared Content-Length exceed the proxy's memory
//!   budget (`get_request_size`); Redpanda sizes that budget from the node's memory, so it is a
//!   setting here (`--max-request-bytes`, default 8 MiB).
//! - A path without a route: seastar's 404 `{"message": "Not found", "code": 404}`.
//! - Request errors use pandaproxy's `{"error_code":N,"message":"..."}`: invalid JSON → 422,
//!   unsupported Content-Type → 415.

use bytes::Bytes;
use hyper::StatusCode;
use serde::Serialize;

use crate::cluster::{
    Batching, Cluster, FaultOutcome, MissingPartition, ProduceError, ProducePlan, RecordError, RecordOutcome,
};
use crate::codec::{parse_v2, v2_format, JsonValues, V2Encoding, APPLICATION_JSON, V2_JSON};
use crate::error::{ApiError, ConnectionDropped};
use crate::reencode::NumberStyle;
use crate::reply::Reply;
use crate::storage::{FailureCause, KAFKA_UNKNOWN_TOPIC_OR_PARTITION};
use crate::timestamp::now_ms;

/// What `get_request_size` adds to Content-Length.
pub const REQUEST_OVERHEAD: usize = 1024;
/// Kafka's UNKNOWN_SERVER_ERROR.
const UNKNOWN_SERVER_ERROR: i32 = -1;
/// Kafka's INVALID_TOPIC_EXCEPTION.
const INVALID_TOPIC: i32 = 17;

/// One batch per partition, all or nothing; a partition the topic lacks fails its batch.
pub const PLAN: ProducePlan = ProducePlan {
    batching: Batching::PerPartition,
    missing_partition: MissingPartition::FailRecord,
};

/// Values re-serialized by rapidjson, null keys as empty keys.
pub const ENCODING: V2Encoding = V2Encoding {
    json: JsonValues::Reencoded(NumberStyle::RapidJson),
    python_falsy_as_empty: false,
    null_key_as_empty: true,
};

/// The Kafka error code pandaproxy shows for `failure`; an injected code is shown as is.
pub fn record_error_code(error: &RecordError) -> i32 {
    match error {
        RecordError::Injected { error_code, .. } => *error_code,
        RecordError::Kafka(failure) => match failure.cause {
            FailureCause::Broker { kafka_code, .. } => i32::from(kafka_code),
            FailureCause::Client { .. } => UNKNOWN_SERVER_ERROR,
        },
    }
}

/// One entry of `offsets`: a partition's batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionEntry {
    /// Partition.
    pub partition: i64,
    /// Kafka error code, only when the batch failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i32>,
    /// The batch's base offset (-1 when it failed).
    pub offset: i64,
}

/// The produce answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProduceResponse {
    /// One entry per partition, in the order the partitions first appear in the request.
    pub offsets: Vec<PartitionEntry>,
}

impl ProduceResponse {
    /// Groups per-record outcomes by partition (the records of one partition share a batch, so
    /// they share an outcome).
    pub fn from_outcomes(outcomes: &[RecordOutcome]) -> Self {
        let mut offsets: Vec<PartitionEntry> = Vec::new();
        for o in outcomes {
            if offsets.iter().any(|e| e.partition == o.partition) {
                continue;
            }
            offsets.push(match &o.result {
                Ok(a) => PartitionEntry {
                    partition: o.partition,
                    error_code: None,
                    offset: a.offset,
                },
                Err(f) => PartitionEntry {
                    partition: o.partition,
                    error_code: Some(record_error_code(f)),
                    offset: -1,
                },
            });
        }
        ProduceResponse { offsets }
    }

    /// Every partition of the request failed with `error_code` (records without a partition go
    /// to partition 0, as `produce_records` assumes when the topic is unknown).
    fn failed(records: &[crate::model::ProduceRecord], error_code: i32) -> Self {
        let mut offsets: Vec<PartitionEntry> = Vec::new();
        for r in records {
            let partition = i64::from(r.partition.unwrap_or(0));
            if !offsets.iter().any(|e| e.partition == partition) {
                offsets.push(PartitionEntry {
                    partition,
                    error_code: Some(error_code),
                    offset: -1,
                });
            }
        }
        ProduceResponse { offsets }
    }
}

fn envelope(status: StatusCode, message: &str) -> Reply {
    Reply::error(&ApiError::new(status, status.as_u16().into(), message), V2_JSON)
}

/// seastar httpd's answer to a path without a route.
pub fn not_found() -> Reply {
    Reply {
        status: StatusCode::NOT_FOUND,
        content_type: APPLICATION_JSON,
        body: Bytes::from_static(br#"{"message": "Not found", "code": 404}"#),
        allow: None,
    }
}

/// `POST /topics/{topic}`.
pub async fn produce(
    cluster: &Cluster,
    topic: &str,
    content_type: Option<&str>,
    body: Result<Bytes, ApiError>,
) -> Result<Reply, ConnectionDropped> {
    let format = match v2_format(content_type) {
        Some(f @ (crate::codec::V2Format::Binary | crate::codec::V2Format::Json)) => f,
        _ => {
            return Ok(envelope(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "HTTP 415 Unsupported Media Type",
            ))
        }
    };
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status == StatusCode::PAYLOAD_TOO_LARGE => {
            return Ok(Reply {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                content_type: V2_JSON,
                body: Bytes::new(),
                allow: None,
            })
        }
        Err(e) => return Ok(envelope(e.status, &e.message)),
    };
    let records = match parse_v2(&body, format, now_ms(), ENCODING) {
        Ok(r) => r,
        // A parse error is pandaproxy's `invalid_json`, answered 422.
        Err(e) => return Ok(envelope(StatusCode::UNPROCESSABLE_ENTITY, &e.message)),
    };
    let injected = match cluster.take_fault(topic).await {
        FaultOutcome::Proceed => None,
        FaultOutcome::HttpError(e) => return Ok(Reply::error(&e, V2_JSON)),
        FaultOutcome::RecordError(injected) => Some(injected),
        FaultOutcome::Drop => return Err(ConnectionDropped),
    };
    let request = records.clone();
    let response = match cluster.produce(topic, records, PLAN, injected.as_ref()).await {
        Ok(outcomes) => ProduceResponse::from_outcomes(&outcomes),
        Err(ProduceError::TopicNotFound | ProduceError::PartitionNotFound) => {
            ProduceResponse::failed(&request, i32::from(KAFKA_UNKNOWN_TOPIC_OR_PARTITION))
        }
        Err(ProduceError::InvalidTopic(_)) => ProduceResponse::failed(&request, INVALID_TOPIC),
        Err(ProduceError::Backend(f)) => ProduceResponse::failed(&request, record_error_code(&f.into())),
    };
    Ok(Reply::json(StatusCode::OK, V2_JSON, &response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Appended;
    use crate::storage::RecordFailure;

    fn ok(partition: u32, offset: i64) -> RecordOutcome {
        RecordOutcome {
            partition: i64::from(partition),
            result: Ok(Appended {
                partition,
                offset,
                timestamp_ms: 0,
            }),
        }
    }

    #[test]
    fn one_entry_per_partition_with_base_offsets() {
        let outcomes = vec![
            ok(1, 7),
            ok(0, 3),
            ok(1, 8),
            RecordOutcome {
                partition: 2,
                result: Err(RecordFailure::message_too_large(20, 10).into()),
            },
            RecordOutcome {
                partition: 9,
                result: Err(RecordFailure::unknown_topic_or_partition().into()),
            },
            RecordOutcome {
                partition: 4,
                result: Err(RecordFailure::retriable("timed out").into()),
            },
        ];
        assert_eq!(
            serde_json::to_string(&ProduceResponse::from_outcomes(&outcomes)).unwrap_or_default(),
            r#"{"offsets":[{"partition":1,"offset":7},{"partition":0,"offset":3},{"partition":2,"error_code":10,"offset":-1},{"partition":9,"error_code":3,"offset":-1},{"partition":4,"error_code":-1,"offset":-1}]}"#
        );
    }

    #[test]
    fn unknown_topic_fails_partition_zero() {
        let record = |partition| crate::model::ProduceRecord {
            partition,
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp_ms: 0,
        };
        let r = ProduceResponse::failed(&[record(None), record(None), record(Some(2))], 3);
        assert_eq!(
            serde_json::to_string(&r).unwrap_or_default(),
            r#"{"offsets":[{"partition":0,"error_code":3,"offset":-1},{"partition":2,"error_code":3,"offset":-1}]}"#
        );
    }
}
