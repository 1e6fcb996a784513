//! Failure injection for tests: a FIFO queue of [`Fault`]s, each consumed by the next produce
//! requests (optionally of one topic) at the point where the request would reach Kafka, i.e. after
//! it was routed, read and decoded without error.
//!
//! Wire form (`POST /_sim/faults`, one object or an array; `GET` lists, `DELETE` clears):
//!
//! ```json
//! {"kind": "http_error", "status": 503, "error_code": 50301, "message": "...", "count": 2}
//! {"kind": "record_error", "error_code": 50003, "message": "...", "topic": "orders"}
//! {"kind": "record_error", "every": 2}
//! {"kind": "drop_connection", "delay_ms": 100}
//! {"kind": "delay", "delay_ms": 1500}
//! ```
//!
//! `count` (default 1) is how many produce requests the fault applies to, `topic` (default any)
//! restricts it to one topic, `delay_ms` (default 0) waits before acting. `delay` then produces
//! normally; `record_error` with `every` N fails the Nth, 2Nth, ... record of the request and
//! produces the others (a partial failure; default 1: every record fails); the other kinds store
//! nothing.

use std::collections::VecDeque;
use std::sync::Mutex;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{codes, ApiError};

/// Longest delay accepted, in milliseconds (ten minutes).
pub const MAX_DELAY_MS: u64 = 600_000;

/// What a fault does to the produce request it hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer with this status and Confluent envelope; nothing is stored.
    HttpError {
        /// HTTP status (400 to 599).
        status: u16,
        /// `error_code` of the envelope.
        error_code: i32,
        /// `message` of the envelope.
        message: String,
    },
    /// The hit records fail with this `error_code` and `error`, rendered as the flavour renders a
    /// failed record (Confluent v2: HTTP 200 with the error in `offsets`; v3: the error as a
    /// per-record result, see [`crate::flavor::confluent::v3`]). Records not hit are produced.
    RecordError {
        /// Per-record error code (50002, 50003, 40401, ...), shown as is by every flavour.
        error_code: i32,
        /// Per-record message.
        message: String,
        /// Fail the records whose 1-based position in the request is a multiple of this (1: all).
        every: u32,
    },
    /// Close the connection without answering; nothing is stored.
    DropConnection,
    /// Only the delay; the request then proceeds normally.
    Delay,
}

/// One entry of the fault queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What to do.
    pub action: FaultAction,
    /// How many more produce requests this fault applies to (at least 1).
    pub count: u32,
    /// Only produce requests to this topic, or any.
    pub topic: Option<String>,
    /// Wait before acting, in milliseconds.
    pub delay_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    kind: String,
    status: Option<u16>,
    error_code: Option<i32>,
    message: Option<String>,
    count: Option<u32>,
    topic: Option<String>,
    delay_ms: Option<u64>,
    every: Option<u32>,
}

impl Fault {
    /// Parses and checks one fault object.
    pub fn from_json(v: Value) -> Result<Fault, String> {
        let spec: FaultSpec = serde_json::from_value(v).map_err(|e| e.to_string())?;
        let count = spec.count.unwrap_or(1);
        if count == 0 {
            return Err("count must be at least 1".into());
        }
        let delay_ms = spec.delay_ms.unwrap_or(0);
        if delay_ms > MAX_DELAY_MS {
            return Err(format!("delay_ms must be at most {MAX_DELAY_MS}"));
        }
        let only = |allowed: &[&str]| -> Result<(), String> {
            let given = [
                ("status", spec.status.is_some()),
                ("error_code", spec.error_code.is_some()),
                ("message", spec.message.is_some()),
                ("every", spec.every.is_some()),
            ];
            match given.iter().find(|(name, set)| *set && !allowed.contains(name)) {
                Some((name, _)) => Err(format!("`{name}` does not apply to kind `{}`", spec.kind)),
                None => Ok(()),
            }
        };
        let action = match spec.kind.as_str() {
            "http_error" => {
                only(&["status", "error_code", "message"])?;
                let status = spec.status.unwrap_or(500);
                let code = StatusCode::from_u16(status)
                    .ok()
                    .filter(|s| s.is_client_error() || s.is_server_error())
                    .ok_or_else(|| format!("status must be 400 to 599, got {status}"))?;
                FaultAction::HttpError {
                    status,
                    error_code: spec.error_code.unwrap_or(i32::from(status)),
                    message: spec
                        .message
                        .unwrap_or_else(|| format!("HTTP {status} {}", code.canonical_reason().unwrap_or("Error"))),
                }
            }
            "record_error" => {
                only(&["error_code", "message", "every"])?;
                let error_code = spec.error_code.unwrap_or(codes::KAFKA_RETRIABLE);
                let every = spec.every.unwrap_or(1);
                if every == 0 {
                    return Err("every must be at least 1".into());
                }
                FaultAction::RecordError {
                    error_code,
                    message: spec
                        .message
                        .unwrap_or_else(|| format!("Injected Kafka error {error_code}")),
                    every,
                }
            }
            "drop_connection" => {
                only(&[])?;
                FaultAction::DropConnection
            }
            "delay" => {
                only(&[])?;
                FaultAction::Delay
            }
            other => {
                return Err(format!(
                    "unknown kind `{other}`: expected http_error, record_error, drop_connection or delay"
                ))
            }
        };
        Ok(Fault {
            action,
            count,
            topic: spec.topic,
            delay_ms,
        })
    }

    /// The wire form.
    pub fn to_json(&self) -> Value {
        let mut v = match &self.action {
            FaultAction::HttpError {
                status,
                error_code,
                message,
            } => {
                json!({"kind": "http_error", "status": status, "error_code": error_code, "message": message})
            }
            FaultAction::RecordError {
                error_code,
                message,
                every,
            } => {
                json!({"kind": "record_error", "error_code": error_code, "message": message, "every": every})
            }
            FaultAction::DropConnection => json!({"kind": "drop_connection"}),
            FaultAction::Delay => json!({"kind": "delay"}),
        };
        if let Value::Object(map) = &mut v {
            map.insert("count".into(), json!(self.count));
            map.insert("topic".into(), json!(self.topic));
            map.insert("delay_ms".into(), json!(self.delay_ms));
        }
        v
    }

    /// The response of an `http_error` fault.
    pub fn api_error(status: u16, error_code: i32, message: &str) -> ApiError {
        ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            error_code,
            message,
        )
    }
}

/// Parses the body of `POST /_sim/faults`: one fault object or an array of them.
pub fn parse_faults(body: &[u8]) -> Result<Vec<Fault>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    match v {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| Fault::from_json(item).map_err(|e| format!("fault {i}: {e}")))
            .collect(),
        obj @ Value::Object(_) => Fault::from_json(obj).map(|f| vec![f]),
        _ => Err("expected a fault object or an array of them".into()),
    }
}

/// The queue of pending faults.
#[derive(Debug, Default)]
pub struct FaultQueue {
    pending: Mutex<VecDeque<Fault>>,
}

impl FaultQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Fault>> {
        match self.pending.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Appends faults to the queue.
    pub fn push(&self, faults: Vec<Fault>) {
        self.lock().extend(faults);
    }

    /// The pending faults, first to apply first.
    pub fn list(&self) -> Vec<Fault> {
        self.lock().iter().cloned().collect()
    }

    /// Removes every pending fault; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut q = self.lock();
        let n = q.len();
        q.clear();
        n
    }

    /// Takes one use of the first fault that applies to a produce request to `topic`.
    pub fn take(&self, topic: &str) -> Option<Fault> {
        let mut q = self.lock();
        let idx = q.iter().position(|f| f.topic.as_deref().is_none_or(|t| t == topic))?;
        let fault = q.get_mut(idx)?;
        let taken = Fault {
            count: 1,
            ..fault.clone()
        };
        fault.count -= 1;
        if fault.count == 0 {
            q.remove(idx);
        }
        Some(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_with_defaults() {
        let f = parse_faults(br#"{"kind":"http_error","status":503}"#).unwrap_or_default();
        assert_eq!(
            f[0].action,
            FaultAction::HttpError {
                status: 503,
                error_code: 503,
                message: "HTTP 503 Service Unavailable".into()
            }
        );
        assert_eq!((f[0].count, f[0].delay_ms, f[0].topic.as_deref()), (1, 0, None));
        let f = parse_faults(
            br#"[{"kind":"record_error","topic":"t","count":2},{"kind":"drop_connection","delay_ms":5},{"kind":"delay","delay_ms":10}]"#,
        )
        .unwrap_or_default();
        assert_eq!(f.len(), 3);
        assert_eq!(
            f[0].action,
            FaultAction::RecordError {
                error_code: 50003,
                message: "Injected Kafka error 50003".into(),
                every: 1,
            }
        );
        assert_eq!(f[1].action, FaultAction::DropConnection);
        assert_eq!(f[2].delay_ms, 10);
    }

    #[test]
    fn rejects_bad_faults() {
        for bad in [
            &br#"{"kind":"nope"}"#[..],
            br#"{"kind":"http_error","status":200}"#,
            br#"{"kind":"http_error","status":1000}"#,
            br#"{"kind":"delay","status":500}"#,
            br#"{"kind":"record_error","count":0}"#,
            br#"{"kind":"record_error","every":0}"#,
            br#"{"kind":"http_error","every":2}"#,
            br#"{"kind":"delay","delay_ms":600001}"#,
            br#"{"kind":"delay","extra":1}"#,
            br#"{"status":500}"#,
            br#"42"#,
            br#"{"#,
        ] {
            assert!(parse_faults(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn queue_consumes_in_order_and_by_topic() {
        let q = FaultQueue::default();
        q.push(
            parse_faults(br#"[{"kind":"delay","topic":"a","count":2},{"kind":"drop_connection"}]"#).unwrap_or_default(),
        );
        assert_eq!(q.take("b").map(|f| f.action), Some(FaultAction::DropConnection));
        assert_eq!(q.take("b"), None);
        assert_eq!(q.take("a").map(|f| f.count), Some(1));
        assert_eq!(q.list().first().map(|f| f.count), Some(1));
        assert!(q.take("a").is_some());
        assert_eq!(q.take("a"), None);
        q.push(parse_faults(br#"{"kind":"delay","count":3}"#).unwrap_or_default());
        assert_eq!(q.clear(), 1);
        assert!(q.list().is_empty());
    }

    #[test]
    fn round_trips_through_json() {
        let f = parse_faults(br#"{"kind":"http_error","status":429,"error_code":42901,"message":"slow down","count":3,"topic":"t","delay_ms":7}"#)
            .unwrap_or_default();
        let again = Fault::from_json(f[0].to_json()).map_err(|e| e.to_string());
        assert_eq!(again.as_ref().ok(), f.first());
        let f = parse_faults(br#"{"kind":"record_error","error_code":1,"every":3}"#).unwrap_or_default();
        let again = Fault::from_json(f[0].to_json()).map_err(|e| e.to_string());
        assert_eq!(again.as_ref().ok(), f.first());
    }
}
