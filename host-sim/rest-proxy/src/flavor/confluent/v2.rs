//! Confluent REST Proxy v2: `POST /topics/{topic}` (and `/topics/{topic}/partitions/{p}`),
//! `GET /topics`, `GET /topics/{topic}`.
//!
//! A produce answer is HTTP 200 `application/vnd.kafka.v2+json`
//! `{"offsets":[...],"key_schema_id":null,"value_schema_id":null}` with one entry per record, in
//! order: `{"partition","offset","error_code":null,"error":null}` when stored, or
//! `{"partition":null,"offset":null,"error_code":50003,"error":"..."}` when the broker refused it
//! (kafka-rest's `AbstractProduceAction`). The status is 401 or 403 when a record failed with
//! 40101 or 40301 (`ProduceResponse.getRequestStatus`), 200 otherwise.
//!
//! Where this simulator answers differently from kafka-rest: an unknown topic with auto-creation
//! off is 404 / 40401 "Topic not found." at once (kafka-rest would wait `max.block.ms` and then
//! put a 50003 in `offsets`), an out-of-range partition is 404 / 40402 "Partition not found.", and
//! an illegal topic name is 400 / 40002 rather than a 50002 in `offsets`.

use hyper::StatusCode;
use serde::Serialize;

use super::{record_error_code, PLAN};
use crate::cluster::{Cluster, FaultOutcome, ProduceError, RecordError};
use crate::codec::{parse_v2, v2_format, V2Encoding, V2Format, V2_JSON};
use crate::error::{codes, ApiError, ConnectionDropped, TOPIC_NOT_FOUND_MESSAGE};
use crate::model::Appended;
use crate::reply::Reply;
use crate::timestamp::now_ms;

/// One entry of `offsets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionOffset {
    /// Partition, or null on error.
    pub partition: Option<u32>,
    /// Offset, or null on error.
    pub offset: Option<i64>,
    /// Per-record error code, or null.
    pub error_code: Option<i32>,
    /// Per-record error message, or null.
    pub error: Option<String>,
}

/// The v2 produce response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProduceResponse {
    /// One entry per record.
    pub offsets: Vec<PartitionOffset>,
    /// The key schema's id when keys were serialized with a schema, else null.
    pub key_schema_id: Option<i32>,
    /// The value schema's id when values were serialized with a schema, else null.
    pub value_schema_id: Option<i32>,
}

impl ProduceResponse {
    /// Builds the response from per-record results.
    pub fn from_results(results: &[Result<Appended, RecordError>]) -> Self {
        ProduceResponse {
            offsets: results
                .iter()
                .map(|r| match r {
                    Ok(a) => PartitionOffset {
                        partition: Some(a.partition),
                        offset: Some(a.offset),
                        error_code: None,
                        error: None,
                    },
                    Err(f) => PartitionOffset {
                        partition: None,
                        offset: None,
                        error_code: Some(record_error_code(f)),
                        error: Some(f.message().to_string()),
                    },
                })
                .collect(),
            key_schema_id: None,
            value_schema_id: None,
        }
    }

    /// kafka-rest's `getRequestStatus`: 401 / 403 for authentication / authorization failures.
    pub fn status(&self) -> StatusCode {
        for o in &self.offsets {
            match o.error_code {
                Some(codes::KAFKA_AUTHENTICATION) => return StatusCode::UNAUTHORIZED,
                Some(codes::KAFKA_AUTHORIZATION) => return StatusCode::FORBIDDEN,
                _ => {}
            }
        }
        StatusCode::OK
    }
}

fn error(e: &ApiError) -> Reply {
    Reply::error(e, V2_JSON)
}

/// `POST /topics/{topic}[/partitions/{partition}]`.
pub async fn produce(
    cluster: &Cluster,
    topic: &str,
    path_partition: Option<&str>,
    content_type: Option<&str>,
    body: Result<bytes::Bytes, ApiError>,
) -> Result<Reply, ConnectionDropped> {
    let Some(format) = v2_format(content_type) else {
        return Ok(error(&ApiError::unsupported_media_type()));
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return Ok(error(&e)),
    };
    let path_partition = match path_partition {
        None => None,
        Some(p) => match p.parse::<i32>() {
            Ok(p) => Some(p),
            // Jersey cannot convert the path parameter: 404.
            Err(_) => return Ok(error(&ApiError::no_such_path())),
        },
    };
    // Schema formats: serialized with the embedded registry, then produced as binary.
    let (body, format, schema_ids) = match crate::schema_registry::produce::v2_schema_type(content_type) {
        None => (body, format, None),
        Some(schema_type) => {
            match schema_type
                .and_then(|t| crate::schema_registry::produce::v2_to_binary(cluster.schema_registry(), topic, t, &body))
            {
                Ok(s) => (s.body, V2Format::Binary, Some((s.key_schema_id, s.value_schema_id))),
                Err(e) => return Ok(error(&e)),
            }
        }
    };
    let mut records = match parse_v2(&body, format, now_ms(), V2Encoding::CONFLUENT) {
        Ok(r) => r,
        Err(e) => return Ok(error(&e)),
    };
    if path_partition.is_some() {
        for r in &mut records {
            r.partition = r.partition.or(path_partition);
        }
    }
    let n = records.len();
    let injected = match cluster.take_fault(topic).await {
        FaultOutcome::Proceed => None,
        FaultOutcome::HttpError(e) => return Ok(error(&e)),
        FaultOutcome::RecordError(injected) => Some(injected),
        FaultOutcome::Drop => return Err(ConnectionDropped),
    };
    let results = match cluster.produce(topic, records, PLAN, injected.as_ref()).await {
        Ok(outcomes) => outcomes.into_iter().map(|o| o.result).collect::<Vec<_>>(),
        Err(ProduceError::TopicNotFound) => return Ok(error(&ApiError::topic_not_found(TOPIC_NOT_FOUND_MESSAGE))),
        Err(ProduceError::PartitionNotFound) => return Ok(error(&ApiError::partition_not_found())),
        Err(ProduceError::InvalidTopic(msg)) => return Ok(error(&ApiError::invalid_topic(msg))),
        Err(ProduceError::Backend(f)) => vec![Err(RecordError::Kafka(f)); n],
    };
    let mut response = ProduceResponse::from_results(&results);
    if let Some((key_schema_id, value_schema_id)) = schema_ids {
        response.key_schema_id = key_schema_id.and_then(|id| i32::try_from(id).ok());
        response.value_schema_id = value_schema_id.and_then(|id| i32::try_from(id).ok());
    }
    Ok(Reply::json(response.status(), V2_JSON, &response))
}

/// `GET /topics`: the topic names.
pub async fn list_topics(cluster: &Cluster) -> Reply {
    match cluster.backend().list_topics().await {
        Ok(topics) => {
            let names: Vec<String> = topics.into_iter().map(|(name, _)| name).collect();
            Reply::json(StatusCode::OK, V2_JSON, &names)
        }
        Err(e) => error(&ApiError::from_storage(e)),
    }
}

/// A replica in v2 topic metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replica {
    /// Broker id.
    pub broker: i32,
    /// Whether it leads the partition.
    pub leader: bool,
    /// Whether it is in sync.
    pub in_sync: bool,
}

/// A partition in v2 topic metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionMetadata {
    /// Partition id.
    pub partition: u32,
    /// Leader broker id; null when unknown (Kafka bridge).
    pub leader: Option<i32>,
    /// Replicas.
    pub replicas: Vec<Replica>,
}

/// v2 topic metadata (kafka-rest's `GetTopicResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Topic configs (none here).
    pub configs: serde_json::Map<String, serde_json::Value>,
    /// Partitions.
    pub partitions: Vec<PartitionMetadata>,
}

/// `GET /topics/{topic}`: Confluent's v2 topic metadata.
pub async fn get_topic(cluster: &Cluster, topic: &str) -> Reply {
    match cluster.backend().partition_count(topic).await {
        Ok(Some(n)) => {
            // The in-memory store is one broker (id 1); the Kafka bridge does not learn leaders.
            let memory = matches!(cluster.backend(), crate::storage::Backend::Memory(_));
            let partitions = (0..n)
                .map(|p| PartitionMetadata {
                    partition: p,
                    leader: memory.then_some(1),
                    replicas: if memory {
                        vec![Replica {
                            broker: 1,
                            leader: true,
                            in_sync: true,
                        }]
                    } else {
                        Vec::new()
                    },
                })
                .collect();
            let meta = TopicMetadata {
                name: topic.to_string(),
                configs: serde_json::Map::new(),
                partitions,
            };
            Reply::json(StatusCode::OK, V2_JSON, &meta)
        }
        Ok(None) => error(&ApiError::topic_not_found(TOPIC_NOT_FOUND_MESSAGE)),
        Err(e) => error(&ApiError::from_storage(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::RecordFailure;
    use serde_json::json;

    #[test]
    fn response_shape_and_status() {
        let results = vec![
            Ok(Appended {
                partition: 1,
                offset: 7,
                timestamp_ms: 0,
            }),
            Err(RecordFailure::retriable("timeout").into()),
            Err(RecordFailure::message_too_large(20, 10).into()),
        ];
        let r = ProduceResponse::from_results(&results);
        assert_eq!(
            serde_json::to_value(&r).unwrap_or_default(),
            json!({"offsets":[
                {"partition":1,"offset":7,"error_code":null,"error":null},
                {"partition":null,"offset":null,"error_code":50003,"error":"timeout"},
                {"partition":null,"offset":null,"error_code":50002,
                 "error":"The record batch is 20 bytes, larger than the broker's message.max.bytes of 10."}],
              "key_schema_id":null,"value_schema_id":null})
        );
        assert_eq!(r.status(), StatusCode::OK);
        let auth = ProduceResponse::from_results(&[Err(RecordFailure::broker(
            29,
            crate::storage::FailureClass::Authorization,
            "no",
        )
        .into())]);
        assert_eq!(auth.status(), StatusCode::FORBIDDEN);
        let authn = ProduceResponse::from_results(&[Err(RecordError::injected(40101, "no"))]);
        assert_eq!(authn.status(), StatusCode::UNAUTHORIZED);
    }
}
