//! The Karapace flavour (Aiven-Open/karapace REST proxy, v2 only). Sources: karapace
//! `src/karapace/kafka_rest_apis/__init__.py` (`publish`, `produce_messages`, `serialize`,
//! `get_topic_info`, `get_partition_info`, `validate_publish_request_format`),
//! `src/karapace/rapu.py` (request parsing, the 413 answer), `src/karapace/core/constants.py`
//! and `src/karapace/core/config.py` (limits), `src/karapace/core/kafka/common.py` (how
//! librdkafka errors become exceptions); observed facts in
//! /work/shared/research/third-party-behaviour-2026-12.md.
//!
//! - Produce answers `{"key_schema_id":null,"value_schema_id":null,"offsets":[...]}` with one
//!   entry per record: `{"offset":O,"partition":P}` when written, `{"error_code":E,"error":"..."}`
//!   when not, where E is 2 for a retriable broker error and 1 for anything else (timeouts
//!   included). Any failed record makes the answer **422**; the good records are still written
//!   (each record is its own `producer.send`, and librdkafka checks each message's size).
//! - A record asking for a partition the topic lacks fails alone with code 2 (librdkafka's
//!   unknown-partition error becomes the retriable `UnknownTopicOrPartitionError`).
//! - The topic is looked up first: unknown → 404 `{"error_code":40401,"message":"Topic t not found"}`.
//!   `/topics/t/partitions/p`: `p` not a number → 404 / 404, not a partition of the topic → 404 /
//!   40402 `"Partition p not found"`.
//! - Bodies over 1 MiB (aiohttp `client_max_size`) → 413
//!   `{"error_code":413,"message":"HTTP Request Entity Too Large"}` (`application/json`).
//! - `json` values are parsed and re-encoded ([`crate::reencode`], Python style), and a value (or a
//!   non-null key) that is false in Python (`null`, `0`, `""`, `[]`, `{}`, `false`) is written as
//!   empty bytes (`serialize` returns `b""` for it).
//! - No v3: paths Karapace has no route for get aiohttp's 404 `text/plain` `404: Not Found`.
//! - A broker that cannot be reached → 503 `{"error_code":503,"message":"Service unavailable"}`.

use bytes::Bytes;
use hyper::StatusCode;
use serde::Serialize;

use crate::cluster::{
    Batching, Cluster, FaultOutcome, MissingPartition, ProduceError, ProducePlan, RecordError, RecordOutcome,
};
use crate::codec::{parse_v2, v2_format, JsonValues, V2Encoding, APPLICATION_JSON, V2_JSON};
use crate::error::{codes, ApiError, ConnectionDropped};
use crate::reencode::NumberStyle;
use crate::reply::Reply;
use crate::storage::{FailureCause, FailureClass};
use crate::timestamp::now_ms;

/// Every record is sent on its own; a partition the topic lacks fails the record.
pub const PLAN: ProducePlan = ProducePlan {
    batching: Batching::PerRecord,
    missing_partition: MissingPartition::FailRecord,
};

/// Values parsed and written again, Python's falsy values as empty bytes.
pub const ENCODING: V2Encoding = V2Encoding {
    json: JsonValues::Reencoded(NumberStyle::Python),
    python_falsy_as_empty: true,
    null_key_as_empty: false,
};

/// Karapace's per-record `error_code` (`produce_messages`): 2 for a retriable broker error, 1
/// otherwise; an injected code is shown as is.
pub fn record_error_code(error: &RecordError) -> i32 {
    match error {
        RecordError::Injected { error_code, .. } => *error_code,
        RecordError::Kafka(failure) => match failure.cause {
            FailureCause::Broker {
                class: FailureClass::Retriable,
                ..
            } => 2,
            FailureCause::Broker { .. } | FailureCause::Client { .. } => 1,
        },
    }
}

/// One entry of `offsets`: Karapace writes only the members that apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum OffsetEntry {
    /// A written record.
    Written {
        /// Its offset.
        offset: i64,
        /// Its partition.
        partition: u32,
    },
    /// A failed record.
    Failed {
        /// 1 or 2 (see [`record_error_code`]).
        error_code: i32,
        /// What went wrong.
        error: String,
    },
}

/// The produce answer, members in Karapace's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProduceResponse {
    /// Always null here (no Schema Registry).
    pub key_schema_id: Option<i32>,
    /// Always null here.
    pub value_schema_id: Option<i32>,
    /// One entry per record, in order.
    pub offsets: Vec<OffsetEntry>,
}

impl ProduceResponse {
    /// The answer for these outcomes.
    pub fn from_outcomes(outcomes: &[RecordOutcome]) -> Self {
        ProduceResponse {
            key_schema_id: None,
            value_schema_id: None,
            offsets: outcomes
                .iter()
                .map(|o| match &o.result {
                    Ok(a) => OffsetEntry::Written {
                        offset: a.offset,
                        partition: a.partition,
                    },
                    Err(f) => OffsetEntry::Failed {
                        error_code: record_error_code(f),
                        error: f.message().to_string(),
                    },
                })
                .collect(),
        }
    }

    /// 422 when any record failed (`publish`), else 200.
    pub fn status(&self) -> StatusCode {
        if self.offsets.iter().any(|o| matches!(o, OffsetEntry::Failed { .. })) {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        }
    }
}

fn envelope(status: StatusCode, error_code: i32, message: impl Into<String>) -> Reply {
    Reply::error(&ApiError::new(status, error_code, message), V2_JSON)
}

/// aiohttp's answer to a path without a route.
pub fn not_found() -> Reply {
    Reply {
        status: StatusCode::NOT_FOUND,
        content_type: "text/plain; charset=utf-8",
        body: Bytes::from_static(b"404: Not Found"),
        allow: None,
    }
}

fn topic_not_found(topic: &str) -> Reply {
    envelope(
        StatusCode::NOT_FOUND,
        codes::TOPIC_NOT_FOUND,
        format!("Topic {topic} not found"),
    )
}

/// How a request-level decoding error looks from Karapace: a body that is no JSON object →
/// 400; a bad request shape (no or empty `records`, unknown fields) → 422 / 422
/// `Invalid request format`; other errors keep their status and message.
fn decode_error(e: &ApiError) -> Reply {
    match e.status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => envelope(e.status, 415, "HTTP 415 Unsupported Media Type"),
        StatusCode::PAYLOAD_TOO_LARGE => Reply::error(
            &ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, 413, "HTTP Request Entity Too Large"),
            APPLICATION_JSON,
        ),
        StatusCode::UNPROCESSABLE_ENTITY if e.error_code == 422 => envelope(e.status, 422, "Invalid request format"),
        _ => envelope(e.status, e.status.as_u16().into(), e.message.clone()),
    }
}

/// `POST /topics/{topic}[/partitions/{partition}]`.
pub async fn produce(
    cluster: &Cluster,
    topic: &str,
    path_partition: Option<&str>,
    content_type: Option<&str>,
    body: Result<Bytes, ApiError>,
) -> Result<Reply, ConnectionDropped> {
    let Some(format) = v2_format(content_type) else {
        return Ok(decode_error(&ApiError::unsupported_media_type()));
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return Ok(decode_error(&e)),
    };
    // `get_topic_info` first, then `get_partition_info` for the partition path.
    let partitions = match cluster.backend().partition_count(topic).await {
        Ok(Some(n)) => Some(n),
        Ok(None) if !cluster.config().auto_create_topics => return Ok(topic_not_found(topic)),
        Ok(None) => None,
        Err(_) => return Ok(envelope(StatusCode::SERVICE_UNAVAILABLE, 503, "Service unavailable")),
    };
    let path_partition = match path_partition {
        None => None,
        Some(p) => match p.parse::<i32>() {
            Ok(n) if partitions.is_some_and(|count| u32::try_from(n).is_ok_and(|n| n < count)) => Some(n),
            Ok(_) => {
                return Ok(envelope(
                    StatusCode::NOT_FOUND,
                    codes::PARTITION_NOT_FOUND,
                    format!("Partition {p} not found"),
                ))
            }
            Err(_) => return Ok(envelope(StatusCode::NOT_FOUND, 404, format!("Partition {p} not found"))),
        },
    };
    let mut records = match parse_v2(&body, format, now_ms(), ENCODING) {
        Ok(r) => r,
        Err(e) => return Ok(decode_error(&e)),
    };
    if path_partition.is_some() {
        for r in &mut records {
            r.partition = r.partition.or(path_partition);
        }
    }
    let injected = match cluster.take_fault(topic).await {
        FaultOutcome::Proceed => None,
        FaultOutcome::HttpError(e) => return Ok(Reply::error(&e, V2_JSON)),
        FaultOutcome::RecordError(injected) => Some(injected),
        FaultOutcome::Drop => return Err(ConnectionDropped),
    };
    match cluster.produce(topic, records, PLAN, injected.as_ref()).await {
        Ok(outcomes) => {
            let response = ProduceResponse::from_outcomes(&outcomes);
            Ok(Reply::json(response.status(), V2_JSON, &response))
        }
        Err(ProduceError::TopicNotFound | ProduceError::InvalidTopic(_)) => Ok(topic_not_found(topic)),
        // Unreachable with MissingPartition::FailRecord; answered as get_partition_info would.
        Err(ProduceError::PartitionNotFound) => Ok(envelope(
            StatusCode::NOT_FOUND,
            codes::PARTITION_NOT_FOUND,
            "Partition not found",
        )),
        Err(ProduceError::Backend(_)) => Ok(envelope(StatusCode::SERVICE_UNAVAILABLE, 503, "Service unavailable")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Appended;
    use crate::storage::RecordFailure;
    use serde_json::json;

    #[test]
    fn answer_shape_and_status() {
        let outcomes = vec![
            RecordOutcome {
                partition: 0,
                result: Ok(Appended {
                    partition: 0,
                    offset: 4,
                    timestamp_ms: 0,
                }),
            },
            RecordOutcome {
                partition: 0,
                result: Err(RecordFailure::message_too_large(20, 10).into()),
            },
            RecordOutcome {
                partition: 5,
                result: Err(RecordFailure::unknown_topic_or_partition().into()),
            },
        ];
        let r = ProduceResponse::from_outcomes(&outcomes);
        assert_eq!(
            serde_json::to_string(&r).unwrap_or_default(),
            r#"{"key_schema_id":null,"value_schema_id":null,"offsets":[{"offset":4,"partition":0},{"error_code":1,"error":"The record batch is 20 bytes, larger than the broker's message.max.bytes of 10."},{"error_code":2,"error":"This server does not host this topic-partition."}]}"#
        );
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let ok = ProduceResponse::from_outcomes(&outcomes[..1]);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(
            serde_json::to_value(&ok).unwrap_or_default(),
            json!({"key_schema_id":null,"value_schema_id":null,"offsets":[{"offset":4,"partition":0}]})
        );
    }

    #[test]
    fn codes_follow_produce_messages() {
        assert_eq!(
            record_error_code(&RecordFailure::unknown_topic_or_partition().into()),
            2
        );
        assert_eq!(record_error_code(&RecordFailure::message_too_large(2, 1).into()), 1);
        assert_eq!(record_error_code(&RecordFailure::retriable("timed out").into()), 1);
        assert_eq!(record_error_code(&RecordError::injected(7, "x")), 7);
    }

    #[test]
    fn errors_in_karapace_shapes() {
        let r = decode_error(&ApiError::too_large(10));
        assert_eq!((r.status.as_u16(), r.content_type), (413, APPLICATION_JSON));
        assert_eq!(
            &r.body[..],
            br#"{"error_code":413,"message":"HTTP Request Entity Too Large"}"#
        );
        let r = decode_error(&ApiError::unprocessable("records must not be empty"));
        assert_eq!(&r.body[..], br#"{"error_code":422,"message":"Invalid request format"}"#);
        let r = topic_not_found("t");
        assert_eq!(&r.body[..], br#"{"error_code":40401,"message":"Topic t not found"}"#);
        let r = not_found();
        assert_eq!((r.status.as_u16(), &r.body[..]), (404, &b"404: Not Found"[..]));
    }
}
