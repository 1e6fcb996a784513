//! Confluent REST Proxy v3: `POST /v3/clusters/{cluster_id}/topics/{topic}/records`
//! (`application/json`), `GET /v3/clusters`, `GET /v3/clusters/{cluster_id}`; also under
//! Confluent Cloud's `/kafka/v3/...` prefix.
//!
//! A body holding one record is answered like Confluent Cloud's non-streaming mode: 200 with the
//! delivery report, or the error's own status with `{"error_code","message"}` (404 / 40401 for an
//! unknown topic, 404 / 40402 for a bad partition, 422 / 42206 for an empty body, 400 for
//! undecodable data, 500 / 50003 for a retriable broker failure). A body holding several
//! concatenated records is streaming mode: HTTP 200, and one delivery report or error object per
//! record, each followed by `\r\n` (kafka-rest's `ChunkedOutputFactory` separator).
//!
//! A delivery report is
//! `{"error_code":200,"cluster_id","topic_name","partition_id","offset","timestamp","key"?,"value"?}`
//! where `timestamp` is ISO-8601 and `key` / `value` (`{"type","size"}`, size -1 for null data) are
//! present only when the request had them (Jackson's `NON_ABSENT`).

use bytes::Bytes;
use hyper::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};

use super::{record_error_code, PLAN};
use crate::cluster::{Cluster, FaultOutcome, ProduceError, RecordError};
use crate::codec::{is_application_json, parse_v3_record, split_v3_body, V3Data, APPLICATION_JSON};
use crate::error::{producer_error_code, ApiError, ConnectionDropped};
use crate::model::{Appended, ProduceRecord};
use crate::reply::Reply;
use crate::storage::RecordFailure;
use crate::timestamp::{format_iso8601, now_ms};

fn error(e: &ApiError) -> Reply {
    Reply::error(e, APPLICATION_JSON)
}

fn cluster_json(base: &str, id: &str) -> Value {
    let c = format!("{base}/v3/clusters/{id}");
    json!({
        "kind": "KafkaCluster",
        "metadata": {"self": c, "resource_name": format!("crn:///kafka={id}")},
        "cluster_id": id,
        "controller": {"related": format!("{c}/brokers/1")},
        "acls": {"related": format!("{c}/acls")},
        "brokers": {"related": format!("{c}/brokers")},
        "broker_configs": {"related": format!("{c}/broker-configs")},
        "consumer_groups": {"related": format!("{c}/consumer-groups")},
        "topics": {"related": format!("{c}/topics")},
        "partition_reassignments": {"related": format!("{c}/topics/-/partitions/-/reassignment")}
    })
}

/// `GET /v3/clusters`: a `KafkaClusterList` with our one cluster.
pub fn list_clusters(cluster: &Cluster, host: &str) -> Reply {
    let base = format!("http://{host}");
    Reply::json(
        StatusCode::OK,
        APPLICATION_JSON,
        &json!({
            "kind": "KafkaClusterList",
            "metadata": {"self": format!("{base}/v3/clusters"), "next": null},
            "data": [cluster_json(&base, &cluster.config().cluster_id)]
        }),
    )
}

/// `GET /v3/clusters/{cluster_id}`.
pub fn get_cluster(cluster: &Cluster, host: &str, cluster_id: &str) -> Reply {
    if cluster_id != cluster.config().cluster_id {
        return error(&ApiError::cluster_not_found(cluster_id));
    }
    Reply::json(
        StatusCode::OK,
        APPLICATION_JSON,
        &cluster_json(&format!("http://{host}"), cluster_id),
    )
}

/// `key` / `value` of a delivery report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataReport {
    /// `BINARY`, `JSON` or `STRING`.
    #[serde(rename = "type")]
    pub format: &'static str,
    /// Serialized size; -1 for null data.
    pub size: i64,
}

impl DataReport {
    fn of(d: &V3Data) -> Self {
        DataReport {
            format: d.format.name(),
            size: d.size(),
        }
    }
}

/// A v3 delivery report (kafka-rest's `ProduceResponse`), members in Confluent's order; `key` and
/// `value` are left out when the request had none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    /// Always 200.
    pub error_code: u16,
    /// Cluster id.
    pub cluster_id: String,
    /// Topic.
    pub topic_name: String,
    /// Partition.
    pub partition_id: u32,
    /// Offset.
    pub offset: i64,
    /// ISO-8601 timestamp.
    pub timestamp: String,
    /// Key format and size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<DataReport>,
    /// Value format and size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<DataReport>,
}

/// The delivery report of one stored record.
pub fn delivery_report(
    cluster_id: &str,
    topic: &str,
    appended: &Appended,
    key: Option<&V3Data>,
    value: Option<&V3Data>,
) -> DeliveryReport {
    DeliveryReport {
        error_code: 200,
        cluster_id: cluster_id.to_string(),
        topic_name: topic.to_string(),
        partition_id: appended.partition,
        offset: appended.offset,
        timestamp: format_iso8601(appended.timestamp_ms),
        key: key.map(DataReport::of),
        value: value.map(DataReport::of),
    }
}

fn produce_error(topic: &str, e: ProduceError) -> ApiError {
    match e {
        ProduceError::TopicNotFound => ApiError::topic_not_found(format!("Topic {topic} not found.")),
        ProduceError::PartitionNotFound => ApiError::partition_not_found(),
        ProduceError::InvalidTopic(msg) => ApiError::invalid_topic(msg),
        ProduceError::Backend(f) => ApiError::from_code(producer_error_code(&f), f.message),
    }
}

fn failure_error(e: &RecordError) -> ApiError {
    ApiError::from_code(record_error_code(e), e.message())
}

/// Produces one JSON value of the body: `Ok(report)` or the error to report.
async fn produce_one(
    cluster: &Cluster,
    cluster_id: &str,
    topic: &str,
    item: Result<&str, ApiError>,
) -> Result<Result<DeliveryReport, ApiError>, ConnectionDropped> {
    // Schema-format data: serialized with the embedded registry, then produced as binary.
    let item =
        item.and_then(|raw| crate::schema_registry::produce::v3_to_binary(cluster.schema_registry(), topic, raw));
    let record = match item.and_then(|raw| parse_v3_record(&raw)) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    if record.partition.is_some_and(|p| p < 0) {
        return Ok(Err(ApiError::partition_not_found()));
    }
    let produce = ProduceRecord {
        partition: record.partition,
        key: record.key.as_ref().and_then(|k| k.bytes.clone()),
        value: record.value.as_ref().and_then(|v| v.bytes.clone()),
        headers: record.headers,
        timestamp_ms: record.timestamp_ms.unwrap_or_else(now_ms),
    };
    let injected = match cluster.take_fault(topic).await {
        FaultOutcome::Proceed => None,
        FaultOutcome::HttpError(e) => return Ok(Err(e)),
        FaultOutcome::RecordError(injected) => Some(injected),
        FaultOutcome::Drop => return Err(ConnectionDropped),
    };
    let result = match cluster.produce(topic, vec![produce], PLAN, injected.as_ref()).await {
        Ok(mut outcomes) => outcomes
            .pop()
            .map(|o| o.result)
            .unwrap_or_else(|| Err(RecordFailure::fatal("record was not produced").into())),
        Err(e) => return Ok(Err(produce_error(topic, e))),
    };
    Ok(match result {
        Ok(appended) => Ok(delivery_report(
            cluster_id,
            topic,
            &appended,
            record.key.as_ref(),
            record.value.as_ref(),
        )),
        Err(f) => Err(failure_error(&f)),
    })
}

/// `POST /v3/clusters/{cluster_id}/topics/{topic}/records`.
pub async fn produce(
    cluster: &Cluster,
    cluster_id: &str,
    topic: &str,
    content_type: Option<&str>,
    body: Result<Bytes, ApiError>,
) -> Result<Reply, ConnectionDropped> {
    if !is_application_json(content_type) {
        return Ok(error(&ApiError::unsupported_media_type()));
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return Ok(error(&e)),
    };
    if cluster_id != cluster.config().cluster_id {
        return Ok(error(&ApiError::cluster_not_found(cluster_id)));
    }
    let items = split_v3_body(&body);
    if items.is_empty() {
        return Ok(error(&ApiError::invalid_payload(
            "Request body is empty. Data is required.",
        )));
    }
    if items.len() == 1 {
        let Some(item) = items.into_iter().next() else {
            return Ok(error(&ApiError::invalid_payload(
                "Request body is empty. Data is required.",
            )));
        };
        return Ok(match produce_one(cluster, cluster_id, topic, item).await? {
            Ok(report) => Reply::json(StatusCode::OK, APPLICATION_JSON, &report),
            Err(e) => error(&e),
        });
    }
    // Streaming mode: one result per record, in order, each followed by "\r\n".
    let mut out = Vec::new();
    for item in items {
        let entry = match produce_one(cluster, cluster_id, topic, item).await? {
            Ok(report) => serde_json::to_vec(&report),
            Err(e) => serde_json::to_vec(&e.body()),
        };
        out.extend_from_slice(&entry.unwrap_or_default());
        out.extend_from_slice(b"\r\n");
    }
    Ok(Reply {
        status: StatusCode::OK,
        content_type: APPLICATION_JSON,
        body: Bytes::from(out),
        allow: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::V3Format;

    #[test]
    fn report_omits_absent_key_and_value() {
        let a = Appended {
            partition: 2,
            offset: 5,
            timestamp_ms: 1_612_552_482_000,
        };
        let v = V3Data {
            format: V3Format::Binary,
            bytes: Some(Bytes::from_static(b"1234567")),
        };
        let report = delivery_report("c", "t", &a, None, Some(&v));
        assert_eq!(
            serde_json::to_string(&report).unwrap_or_default(),
            r#"{"error_code":200,"cluster_id":"c","topic_name":"t","partition_id":2,"offset":5,"timestamp":"2021-02-05T19:14:42Z","value":{"type":"BINARY","size":7}}"#
        );
        assert_eq!(
            serde_json::to_value(&report).unwrap_or_default(),
            json!({"error_code":200,"cluster_id":"c","topic_name":"t","partition_id":2,
                   "offset":5,"timestamp":"2021-02-05T19:14:42Z",
                   "value":{"type":"BINARY","size":7}})
        );
    }

    #[test]
    fn errors_carry_their_status() {
        let e = produce_error("t", ProduceError::TopicNotFound);
        assert_eq!((e.status.as_u16(), e.error_code), (404, 40401));
        assert_eq!(e.message, "Topic t not found.");
        let e = produce_error("t", ProduceError::Backend(RecordFailure::retriable("x")));
        assert_eq!((e.status.as_u16(), e.error_code), (500, 50003));
    }
}
