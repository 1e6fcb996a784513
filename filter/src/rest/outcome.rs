//! What the REST proxy's reply means, and what the client is told.
//!
//! A record counts as sent only when the REST proxy acknowledged it:
//! v2 — its `offsets` entry has a null or absent `error_code` (Confluent answers 200 with
//! per-record errors such as 50002/50003); v3 — its result has `error_code` 200.
//!
//! **Per-record results whatever the HTTP status.** A reply is read record by record whenever it
//! carries one result per record sent, because REST proxies disagree on the status of a partly
//! failed produce:
//! - Confluent REST Proxy v2 answers 200 with one `offsets` entry per record, a failed one with
//!   `partition`/`offset` null and `error_code`/`error` set (kafka-rest
//!   `resources/v2/AbstractProduceAction.java`, `produceResultsToResponse`; codes from
//!   `errorCodeFromProducerException`: 50003 for a Kafka `RetriableException`, 50002 for any
//!   other `KafkaException`, the authentication/authorization codes for those);
//! - Confluent v3 in streaming mode writes one result or error object per request line, in order,
//!   after a 200 (kafka-rest `response/StreamingResponse.java`, `handleNext`);
//! - Karapace answers **422** as soon as one record failed, and the body still holds
//!   `key_schema_id`, `value_schema_id` and one `offsets` entry per record: `{partition, offset}`
//!   for the records it wrote, `{error_code, error}` for the others (Aiven-Open/karapace
//!   `src/karapace/kafka_rest_apis/__init__.py`, `UserRestProxy.publish`, which switches the
//!   status to 422 when a result has an `error`, and `produce_messages`, which sets `error_code`
//!   1, or 2 when the broker error is flagged retriable). The good records are in Kafka.
//!
//! So [`classify_batch`] (and [`classify`] for one record) settles each record from its own
//! entry when the reply matches the records one to one: v2, an `offsets` array with exactly one
//! entry per record; v3, one result object per record. Redpanda's pandaproxy answers v2 per
//! partition instead (one entry per partition of the request, each partition's records written or
//! refused together): a 2xx reply whose fewer entries each name a different partition, all
//! written, acknowledges every record ([`classify_batch`]). A reply that does not match keeps the
//! whole-batch rule: no 2xx → every record gets the request-level outcome below; a 2xx whose
//! results do not line up → every record failed (sending acknowledged records again is a
//! duplicate; guessing which ones were acknowledged could lose one). A 1xx or 3xx reply is never
//! read per record (a redirect was not processed there). For a 4xx or 5xx reply the match is
//! strict, since only a real per-record answer may outrank the status: v2, every entry
//! is an object with a non-null `error_code` or an integer `offset` (a written record); v3, the
//! body is exactly one object per record, each with an integer `error_code`, at least one of
//! them 200 (a request-level error envelope `{"error_code":…,"message":…}` has the same shape as
//! one failed result, and only an acknowledgement tells them apart).
//!
//! The per-record `error_code` is the REST proxy's, not a Kafka protocol error code: Karapace's
//! 2 means "retriable broker error", not Kafka's CORRUPT_MESSAGE, and its 1 covers its own
//! timeouts as much as a record that can never be written. No per-record code reliably says that
//! a retry cannot succeed, so a failed record follows the usual rules (retried in asynchronous
//! mode, a 502 in synchronous mode) with its own code and message.
//!
//! How the hosts report calls that got no reply:
//! - Envoy answers a call that hit its timeout with a local `504` reply, and a failed connection
//!   with `on_http_call_response(token, 0, 0, 0)` and no readable headers;
//! - Kong (ngx_wasm_module) calls `on_http_call_response(token, 0, 0, 0)` and exposes the reason
//!   in the `:dispatch_status` pseudo-header (`timeout`, `broken connection`,
//!   `tls handshake failure`, `resolver failure`, `reader failure`).
//!
//! So, for a reply without per-record results, a `504` or `:dispatch_status: timeout` is a
//! timeout (client gets 504); everything else that is not an acknowledgement — no reply, another
//! `:dispatch_status`, another non-2xx status, a request-level error envelope such as
//! `{"error_code":40401,...}` (4xx included: the client's request was fine, the gateway's produce
//! failed), an unreadable body — is a failure (client gets 502).

use std::fmt;

use serde_json::Value;

use crate::config::Api;
use crate::json;

/// The reply to one call, as read from the host.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplyView<'a> {
    /// The `:status` pseudo-header, `None` when the call got no reply.
    pub status: Option<&'a [u8]>,
    /// Kong's `:dispatch_status` pseudo-header (set when the call failed).
    pub dispatch_status: Option<&'a [u8]>,
    /// The reply body.
    pub body: &'a [u8],
}

/// Why a call did not acknowledge the record, for logs and `return_error_message`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failure {
    /// The REST proxy's HTTP status, when it answered.
    pub status: Option<u16>,
    /// The REST proxy's `error_code` (request-level, or the first per-record one).
    pub error_code: Option<i64>,
    /// The REST proxy's `message` (or per-record `error`).
    pub message: Option<String>,
    /// The host's `:dispatch_status`, or a note that the host refused the call.
    pub dispatch_status: Option<String>,
    /// A short reason for the log line.
    pub reason: &'static str,
}

impl Failure {
    /// The host refused to start the call (`proxy_http_call` failed): nothing reached the REST
    /// proxy. `refusal` says why, in the host interface's words (`crate::host::DispatchError`).
    pub fn host_refusal(refusal: &dyn fmt::Display) -> Self {
        Failure {
            dispatch_status: Some(refusal.to_string()),
            reason: "call rejected",
            ..Failure::default()
        }
    }
}

/// A failure for a log line: `error status, status 500, error_code 50001, message "…"`, each
/// part present only when known.
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)?;
        if let Some(s) = self.status {
            write!(f, ", status {s}")?;
        }
        if let Some(c) = self.error_code {
            write!(f, ", error_code {c}")?;
        }
        if let Some(m) = &self.message {
            write!(f, ", message {m:?}")?;
        }
        if let Some(d) = &self.dispatch_status {
            write!(f, ", dispatch_status {d:?}")?;
        }
        Ok(())
    }
}

/// The result of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The REST proxy acknowledged the record.
    Acknowledged,
    /// The call timed out: the record may or may not have been written.
    TimedOut(Failure),
    /// The record was not acknowledged.
    Failed(Failure),
}

/// Longest REST proxy message copied into an answer or a log line, in characters.
const MESSAGE_MAX: usize = 1024;

/// Why the reply to a health probe (`GET /topics`, v3 `GET /v3/clusters/{id}`, see
/// [`crate::rest::build_probe_request`]) is not a success, or `None` for a 2xx: any answer
/// outside 2xx, or no answer at all, says the REST proxy cannot serve produce calls now.
pub fn probe_failure(reply: &ReplyView<'_>) -> Option<String> {
    match reply.status {
        Some(status) => {
            let text = String::from_utf8_lossy(status);
            match text.trim().parse::<u16>() {
                Ok(s) if (200..300).contains(&s) => None,
                _ => Some(format!("status {text}")),
            }
        }
        None => Some(match reply.dispatch_status {
            Some(d) => format!("no reply, dispatch_status {:?}", String::from_utf8_lossy(d)),
            None => "no reply".to_string(),
        }),
    }
}

/// Classifies the reply to one produce call.
pub fn classify(api: &Api, reply: &ReplyView<'_>) -> Outcome {
    let status = match reply_status(reply) {
        Ok(status) => status,
        Err(outcome) => return outcome,
    };
    if !(200..300).contains(&status) {
        // Karapace's 422 for a record it could not write still carries that record's entry.
        return match per_record(api, status, reply.body, 1) {
            Ok(mut outcomes) if outcomes.len() == 1 => outcomes.remove(0),
            _ => error_status(status, reply.body),
        };
    }
    // The usual acknowledgement is recognised by a byte scanner of plain JSON, without building
    // a `Value` tree (a dozen allocations per reply); any other reply is read in full below,
    // which alone decides.
    if plain::acknowledged(api, reply.body) {
        return Outcome::Acknowledged;
    }
    classify_2xx(api, status, reply.body)
}

/// Classifies a 2xx reply by reading its body as a `Value`.
fn classify_2xx(api: &Api, status: u16, body: &[u8]) -> Outcome {
    let body: Option<Value> = serde_json::from_slice(body).ok();
    let mut failure = Failure {
        status: Some(status),
        ..Failure::default()
    };
    let Some(Value::Object(reply_obj)) = body else {
        failure.reason = "unreadable reply";
        return Outcome::Failed(failure);
    };
    match api {
        Api::V2 => {
            let Some(offsets) = reply_obj.get("offsets").and_then(Value::as_array) else {
                failure.reason = "reply without offsets";
                return Outcome::Failed(failure);
            };
            if offsets.is_empty() {
                failure.reason = "reply without offsets";
                return Outcome::Failed(failure);
            }
            for entry in offsets {
                match v2_offset(status, entry) {
                    Outcome::Acknowledged => {}
                    failed => return failed,
                }
            }
            Outcome::Acknowledged
        }
        Api::V3 { .. } => v3_result(status, &Value::Object(reply_obj)),
    }
}

/// Classifies the reply to a produce call that carried `records` records (the asynchronous
/// producer's batch): one outcome per record, in request order.
///
/// Whatever the status, a reply whose per-record results match the records one to one settles
/// each record from its own result (see the module documentation). v2: record `i` is
/// acknowledged when `offsets[i]` has a null or absent `error_code`. v3 (streaming mode): the
/// body holds one result object per record, in order (JSON values separated by whitespace);
/// record `i` is acknowledged when result `i` has `error_code` 200, and a 2xx stream cut short
/// fails the records whose results are missing. Otherwise no reply, a non-2xx reply or a 2xx
/// reply that cannot be matched fails every record alike.
pub fn classify_batch(api: &Api, reply: &ReplyView<'_>, records: usize) -> Vec<Outcome> {
    let status = match reply_status(reply) {
        Ok(status) => status,
        Err(outcome) => return vec![outcome; records],
    };
    // The usual acknowledgement of every record, recognised without a `Value` tree (see
    // `plain`); anything else is read in full.
    if (200..300).contains(&status) && plain::batch_acknowledged(api, reply.body, records) {
        return vec![Outcome::Acknowledged; records];
    }
    match per_record(api, status, reply.body, records) {
        Ok(outcomes) => outcomes,
        Err(_) if !(200..300).contains(&status) => vec![error_status(status, reply.body); records],
        Err(reason) => vec![
            Outcome::Failed(Failure {
                status: Some(status),
                reason,
                ..Failure::default()
            });
            records
        ],
    }
}

/// The reason a reply cannot be read record by record because its results do not line up with
/// the records sent.
pub const MISMATCHED_REPLY: &str = "reply does not match the records sent";

/// One outcome per record from the reply's per-record results, or why the reply cannot be read
/// that way. 2xx replies are read leniently (an entry that is not an object is that record's
/// failure); other replies only when they are unmistakably per-record answers.
fn per_record(api: &Api, status: u16, body: &[u8], records: usize) -> Result<Vec<Outcome>, &'static str> {
    let success = (200..300).contains(&status);
    // A 1xx or 3xx reply is not the REST proxy's verdict on the records (a redirect was not
    // processed there): only 2xx and error statuses are read record by record.
    if status < 400 && !success {
        return Err(MISMATCHED_REPLY);
    }
    match api {
        Api::V2 => {
            let body: Option<Value> = serde_json::from_slice(body).ok();
            let Some(Value::Object(reply_obj)) = body else {
                return Err("unreadable reply");
            };
            let Some(offsets) = reply_obj.get("offsets").and_then(Value::as_array) else {
                return Err("reply without offsets");
            };
            if success && every_partition_batch_written(offsets, records) {
                return Ok(vec![Outcome::Acknowledged; records]);
            }
            if offsets.len() != records || records == 0 {
                return Err(MISMATCHED_REPLY);
            }
            if !success && !offsets.iter().all(is_v2_record_result) {
                return Err(MISMATCHED_REPLY);
            }
            Ok(offsets.iter().map(|entry| v2_offset(status, entry)).collect())
        }
        Api::V3 { .. } if success => {
            let mut results = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
            let mut broken = false;
            let outcomes: Vec<Outcome> = (0..records)
                .map(|_| {
                    let failed = |reason: &'static str| {
                        Outcome::Failed(Failure {
                            status: Some(status),
                            reason,
                            ..Failure::default()
                        })
                    };
                    if broken {
                        return failed("unreadable reply");
                    }
                    match results.next() {
                        Some(Ok(result)) => v3_result(status, &result),
                        Some(Err(_)) => {
                            broken = true;
                            failed("unreadable reply")
                        }
                        None => failed("reply without a result for this record"),
                    }
                })
                .collect();
            // More results than records: the stream does not answer this batch.
            if !broken && results.next().is_some() {
                return Err(MISMATCHED_REPLY);
            }
            Ok(outcomes)
        }
        Api::V3 { .. } => {
            let results: Vec<Value> = serde_json::Deserializer::from_slice(body)
                .into_iter::<Value>()
                .collect::<Result<_, _>>()
                .map_err(|_| MISMATCHED_REPLY)?;
            let codes: Option<Vec<i64>> = results
                .iter()
                .map(|r| r.as_object()?.get("error_code")?.as_i64())
                .collect();
            match codes {
                Some(codes) if codes.len() == records && records > 0 && codes.contains(&200) => {
                    Ok(results.iter().map(|r| v3_result(status, r)).collect())
                }
                _ => Err(MISMATCHED_REPLY),
            }
        }
    }
}

/// Whether a v2 `offsets` entry of a non-2xx reply is a per-record result: an object with a
/// non-null `error_code` (a failed record) or an integer `offset` (a written one).
/// Whether a 2xx v2 reply with fewer `offsets` entries than records is Redpanda's answer that
/// every record was written. pandaproxy does not answer per record: it groups the request's
/// records into one batch per partition, writes or refuses each batch as a whole, and answers one
/// entry per partition of the request, `{"partition":P,"offset":O}` with `"error_code":E` added
/// when that partition's batch failed (redpanda `src/v/kafka/client/client.cc`
/// `produce_records`, `src/v/pandaproxy/json/requests/produce.h`). When every entry names a
/// different partition with a written offset and no error, each partition's batch, and so each
/// record, is in Kafka. Anything else (a failed partition among written ones, a repeated
/// partition) cannot be matched to records and stays a whole-batch failure.
fn every_partition_batch_written(offsets: &[Value], records: usize) -> bool {
    let written_partition = |entry: &Value| {
        let entry = entry.as_object()?;
        let written = entry.get("offset").and_then(Value::as_i64).is_some_and(|o| o >= 0)
            && entry.get("error_code").is_none_or(Value::is_null);
        let partition = entry.get("partition").and_then(Value::as_i64).filter(|p| *p >= 0);
        partition.filter(|_| written)
    };
    !offsets.is_empty()
        && offsets.len() < records
        && offsets.iter().enumerate().all(|(i, entry)| {
            written_partition(entry)
                .is_some_and(|p| offsets[..i].iter().all(|earlier| written_partition(earlier) != Some(p)))
        })
}

fn is_v2_record_result(entry: &Value) -> bool {
    entry.as_object().is_some_and(|e| {
        e.get("error_code").is_some_and(|c| !c.is_null()) || e.get("offset").and_then(Value::as_i64).is_some()
    })
}

/// The reply's HTTP status, or the outcome of a call without a usable one.
fn reply_status(reply: &ReplyView<'_>) -> Result<u16, Outcome> {
    let Some(status) = reply.status else {
        let dispatch_status = reply.dispatch_status.map(|s| String::from_utf8_lossy(s).into_owned());
        let timeout = dispatch_status.as_deref() == Some("timeout");
        let failure = Failure {
            dispatch_status,
            reason: if timeout { "timed out" } else { "no reply" },
            ..Failure::default()
        };
        return Err(if timeout {
            Outcome::TimedOut(failure)
        } else {
            Outcome::Failed(failure)
        });
    };
    std::str::from_utf8(status)
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .ok_or_else(|| {
            Outcome::Failed(Failure {
                reason: "invalid :status",
                ..Failure::default()
            })
        })
}

/// The outcome of a non-2xx reply: a timeout for 504, else a failure with the REST proxy's
/// error envelope (`{"error_code":…,"message":…}`) when the body has one.
fn error_status(status: u16, body: &[u8]) -> Outcome {
    let mut failure = Failure {
        status: Some(status),
        ..Failure::default()
    };
    if let Ok(Value::Object(envelope)) = serde_json::from_slice::<Value>(body) {
        failure.error_code = envelope.get("error_code").and_then(Value::as_i64);
        failure.message = envelope.get("message").and_then(text);
    }
    if status == 504 {
        failure.reason = "timed out";
        return Outcome::TimedOut(failure);
    }
    failure.reason = "error status";
    Outcome::Failed(failure)
}

/// One v2 `offsets` entry of a reply with HTTP status `status`.
fn v2_offset(status: u16, entry: &Value) -> Outcome {
    let mut failure = Failure {
        status: Some(status),
        ..Failure::default()
    };
    let Some(entry) = entry.as_object() else {
        failure.reason = "unreadable reply";
        return Outcome::Failed(failure);
    };
    match entry.get("error_code") {
        None | Some(Value::Null) => Outcome::Acknowledged,
        Some(code) => {
            failure.error_code = code.as_i64();
            failure.message = entry.get("error").and_then(text);
            failure.reason = "per-record error";
            Outcome::Failed(failure)
        }
    }
}

/// One v3 result object of a reply with HTTP status `status`.
fn v3_result(status: u16, result: &Value) -> Outcome {
    let mut failure = Failure {
        status: Some(status),
        ..Failure::default()
    };
    let Some(result) = result.as_object() else {
        failure.reason = "unreadable reply";
        return Outcome::Failed(failure);
    };
    match result.get("error_code") {
        Some(code) if code.as_i64() == Some(200) => Outcome::Acknowledged,
        Some(code) => {
            failure.error_code = code.as_i64();
            failure.message = result.get("message").and_then(text);
            failure.reason = "record error";
            Outcome::Failed(failure)
        }
        None => {
            failure.reason = "reply without error_code";
            Outcome::Failed(failure)
        }
    }
}

/// The plain acknowledgements read byte by byte, with no deserializer: a strict subset of JSON
/// (strings of printable ASCII without escapes, integers of at most 18 digits, `null`, `true`,
/// `false`, objects and arrays at most 16 deep, the four JSON whitespace bytes) in the usual
/// shapes. Anything outside that subset or shape is "not recognised" (false), never a verdict:
/// the `Value` reading then decides as before. So a true here is always what the `Value`
/// reading concludes too (the subset is JSON that `serde_json` reads to the same values), and
/// the common reply costs a scan instead of serde's visitors.
mod plain {
    use crate::config::Api;

    /// Deepest nesting read; deeper replies are left to serde (which allows 128).
    const MAX_DEPTH: u32 = 16;

    /// A single record's 2xx reply that acknowledges it: v2 `{"offsets":[…]}` with a non-empty
    /// `offsets` whose entries are objects with a null or absent `error_code`; v3 one result
    /// object whose `error_code` is the integer 200. Nothing but whitespace may follow.
    pub(super) fn acknowledged(api: &Api, body: &[u8]) -> bool {
        let mut scan = Scan { bytes: body, at: 0 };
        let shape = match api {
            Api::V2 => scan.v2_reply().is_some_and(|entries| entries > 0),
            Api::V3 { .. } => scan.v3_result().is_some(),
        };
        shape && scan.at_end()
    }

    /// A batch's 2xx reply that acknowledges each of its `records` records (more than none),
    /// one per-record result each: v2 exactly `records` acknowledged `offsets` entries; v3
    /// (streaming mode) exactly `records` acknowledged result objects, one after another.
    pub(super) fn batch_acknowledged(api: &Api, body: &[u8], records: usize) -> bool {
        if records == 0 {
            return false;
        }
        let mut scan = Scan { bytes: body, at: 0 };
        let shape = match api {
            Api::V2 => scan.v2_reply() == Some(records),
            Api::V3 { .. } => (0..records).all(|_| scan.v3_result().is_some()),
        };
        shape && scan.at_end()
    }

    /// What a scanned value was, as far as an acknowledgement cares.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Null,
        /// The integer 200.
        Int200,
        Other,
    }

    /// A cursor over the reply; every method is `None` when the bytes leave the subset.
    struct Scan<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl<'a> Scan<'a> {
        // The loops below run on local copies of the cursor: in wasm `self` lives in linear
        // memory, and a loop on `self.at` would load and store it for every byte.

        /// The next byte after whitespace, not taken.
        fn peek(&mut self) -> Option<u8> {
            let bytes = self.bytes;
            let mut at = self.at;
            while let Some(&byte) = bytes.get(at) {
                if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
                    self.at = at;
                    return Some(byte);
                }
                at += 1;
            }
            self.at = at;
            None
        }

        /// Takes `byte` (after whitespace).
        fn eat(&mut self, byte: u8) -> Option<()> {
            (self.peek()? == byte).then(|| self.at += 1)
        }

        /// Whether only whitespace is left.
        fn at_end(&mut self) -> bool {
            self.peek().is_none()
        }

        /// A string of printable ASCII without escapes: its content.
        fn string(&mut self) -> Option<&'a [u8]> {
            self.eat(b'"')?;
            let rest: &'a [u8] = &self.bytes[self.at..];
            let end = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || !(0x20..=0x7e).contains(&b))?;
            if rest[end] != b'"' {
                return None;
            }
            self.at += end + 1;
            Some(&rest[..end])
        }

        /// An integer of at most 18 digits (no fraction, no exponent).
        fn integer(&mut self) -> Option<&'a [u8]> {
            self.peek()?;
            let rest: &'a [u8] = &self.bytes[self.at..];
            let sign = usize::from(rest.first() == Some(&b'-'));
            let digits = rest[sign..].iter().take_while(|b| b.is_ascii_digit()).count();
            let leading_zero = digits > 1 && rest[sign] == b'0';
            if digits == 0 || digits > 18 || leading_zero {
                return None;
            }
            let end = sign + digits;
            if let Some(b'.' | b'e' | b'E') = rest.get(end) {
                return None;
            }
            self.at += end;
            Some(&rest[..end])
        }

        /// The literal `word`.
        fn literal(&mut self, word: &[u8]) -> Option<()> {
            self.peek()?;
            let end = self.at.checked_add(word.len())?;
            (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
        }

        /// One value at nesting `depth`, read and checked.
        fn value(&mut self, depth: u32) -> Option<Kind> {
            match self.peek()? {
                b'{' => self
                    .object(depth, |_, scan| scan.value(depth + 1).map(drop))
                    .map(|_| Kind::Other),
                b'[' => self
                    .array(depth, |scan| scan.value(depth + 1).map(drop))
                    .map(|_| Kind::Other),
                b'"' => self.string().map(|_| Kind::Other),
                b'n' => self.literal(b"null").map(|_| Kind::Null),
                b't' => self.literal(b"true").map(|_| Kind::Other),
                b'f' => self.literal(b"false").map(|_| Kind::Other),
                b'-' | b'0'..=b'9' => self
                    .integer()
                    .map(|n| if n == b"200" { Kind::Int200 } else { Kind::Other }),
                _ => None,
            }
        }

        /// An object at nesting `depth`; `member` reads each member's value (the key given).
        fn object(&mut self, depth: u32, mut member: impl FnMut(&'a [u8], &mut Self) -> Option<()>) -> Option<()> {
            if depth > MAX_DEPTH {
                return None;
            }
            self.eat(b'{')?;
            if self.peek()? == b'}' {
                self.at += 1;
                return Some(());
            }
            loop {
                let key = self.string()?;
                self.eat(b':')?;
                member(key, self)?;
                match self.peek()? {
                    b',' => self.at += 1,
                    b'}' => {
                        self.at += 1;
                        return Some(());
                    }
                    _ => return None,
                }
            }
        }

        /// An array at nesting `depth`; `element` reads each element. Its length.
        fn array(&mut self, depth: u32, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<usize> {
            if depth > MAX_DEPTH {
                return None;
            }
            self.eat(b'[')?;
            if self.peek()? == b']' {
                self.at += 1;
                return Some(0);
            }
            let mut count = 0;
            loop {
                element(self)?;
                count += 1;
                match self.peek()? {
                    b',' => self.at += 1,
                    b']' => {
                        self.at += 1;
                        return Some(count);
                    }
                    _ => return None,
                }
            }
        }

        /// An object whose member `name` appears once and reads as `wanted` (checked by
        /// `accept`), or does not appear when `absent_ok`.
        fn object_with(&mut self, depth: u32, name: &[u8], absent_ok: bool, accept: fn(Kind) -> bool) -> Option<()> {
            let mut seen = false;
            self.object(depth, |key, scan| {
                if key != name {
                    return scan.value(depth + 1).map(drop);
                }
                if seen {
                    return None;
                }
                seen = true;
                accept(scan.value(depth + 1)?).then_some(())
            })?;
            (seen || absent_ok).then_some(())
        }

        /// A v2 reply whose one `offsets` member is an array of acknowledged entries: how many.
        fn v2_reply(&mut self) -> Option<usize> {
            let mut entries = None;
            self.object(1, |key, scan| {
                if key != b"offsets" {
                    return scan.value(2).map(drop);
                }
                if entries.is_some() {
                    return None;
                }
                let entry = |scan: &mut Self| scan.object_with(3, b"error_code", true, |k| k == Kind::Null);
                entries = Some(scan.array(2, entry)?);
                Some(())
            })?;
            entries
        }

        /// A v3 result object whose one `error_code` is the integer 200.
        fn v3_result(&mut self) -> Option<()> {
            self.object_with(1, b"error_code", false, |k| k == Kind::Int200)
        }
    }
}

/// A JSON string value, capped at [`MESSAGE_MAX`] characters.
fn text(v: &Value) -> Option<String> {
    v.as_str().map(|s| s.chars().take(MESSAGE_MAX).collect())
}

/// The local reply the filter sends the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAnswer {
    /// HTTP status.
    pub status: u32,
    /// JSON body (`content-type: application/json`).
    pub body: Vec<u8>,
}

/// Kong's error text for a produce that failed.
pub const SEND_FAILED: &str = "could not send message to topic";
/// Kong's error text for a topic outside the allowlist.
pub const TOPIC_NOT_ALLOWED: &str = "one or more target topics are not in the allowed topics list";

impl ClientAnswer {
    /// 200 `{"message":"message sent"}`: every record was acknowledged.
    pub fn sent() -> Self {
        ClientAnswer {
            status: 200,
            body: br#"{"message":"message sent"}"#.to_vec(),
        }
    }

    /// 400: a requested topic is neither `topic` nor in `allowed_topics`.
    pub fn topic_not_allowed() -> Self {
        Self::simple(400, "Bad Request", TOPIC_NOT_ALLOWED)
    }

    /// 413: the request body is larger than `max_body_size`.
    pub fn payload_too_large() -> Self {
        Self::simple(413, "Payload Too Large", "request body is larger than max_body_size")
    }

    /// 400: `message.mode` is `body` with the `json` format and the body is not a JSON document.
    pub fn body_not_json() -> Self {
        Self::simple(400, "Bad Request", "the request body is not a JSON document")
    }

    /// 500: the host did not hand over the request body it announced.
    pub fn body_unreadable() -> Self {
        Self::simple(500, "Internal Server Error", "could not read the request body")
    }

    /// 500: the filter reached a state it should not (logged), and answers rather than hang.
    pub fn internal_error() -> Self {
        Self::simple(500, "Internal Server Error", "unexpected filter state")
    }

    /// 503 `{"message":"Service Unavailable","error":…}`: the asynchronous producer did not
    /// accept the message (its buffer is full, or the REST proxy is unhealthy).
    pub fn service_unavailable(error: &str) -> Self {
        Self::simple(503, "Service Unavailable", error)
    }

    /// 500: the filter has no valid configuration (the host started it anyway).
    pub fn not_configured() -> Self {
        Self::simple(
            500,
            "Internal Server Error",
            "kafka-upstream has no valid configuration",
        )
    }

    /// The answer for a request whose calls ended with `outcomes` (one per topic, in order):
    /// 200 when all were acknowledged; else 502 for the first failure; else 504 for the first
    /// timeout. With `detail`, the REST proxy's status, error code and message are added.
    /// No outcome at all is a 502: nothing was acknowledged.
    pub fn from_outcomes<'t>(outcomes: impl IntoIterator<Item = (&'t str, &'t Outcome)>, detail: bool) -> Self {
        let mut timeout: Option<(&str, &Failure)> = None;
        let mut seen = false;
        for (topic, outcome) in outcomes {
            seen = true;
            match outcome {
                Outcome::Acknowledged => {}
                Outcome::Failed(f) => return Self::failed(topic, f, detail),
                Outcome::TimedOut(f) => {
                    if timeout.is_none() {
                        timeout = Some((topic, f));
                    }
                }
            }
        }
        match timeout {
            Some((topic, f)) => Self::with_detail(
                504,
                "Gateway Timeout",
                "timed out sending message to topic",
                detail.then_some((topic, f)),
            ),
            None if seen => Self::sent(),
            None => Self::simple(502, "Bad Gateway", SEND_FAILED),
        }
    }

    /// 502 for a record that was not acknowledged.
    pub fn failed(topic: &str, failure: &Failure, detail: bool) -> Self {
        Self::with_detail(502, "Bad Gateway", SEND_FAILED, detail.then_some((topic, failure)))
    }

    fn simple(status: u32, message: &str, error: &str) -> Self {
        Self::with_detail(status, message, error, None)
    }

    /// `{"message":…,"error":…}` plus, with `detail`,
    /// `"rest_proxy":{"topic":…,"status":…,"error_code":…,"message":…,"dispatch_status":…}`
    /// (members omitted when unknown).
    fn with_detail(status: u32, message: &str, error: &str, detail: Option<(&str, &Failure)>) -> Self {
        let mut out = Vec::with_capacity(96);
        out.push(b'{');
        let mut first = true;
        json::write_key(&mut out, &mut first, "message");
        json::write_str(&mut out, message);
        json::write_key(&mut out, &mut first, "error");
        json::write_str(&mut out, error);
        if let Some((topic, f)) = detail {
            json::write_key(&mut out, &mut first, "rest_proxy");
            out.push(b'{');
            let mut inner = true;
            json::write_key(&mut out, &mut inner, "topic");
            json::write_str(&mut out, topic);
            if let Some(s) = f.status {
                json::write_key(&mut out, &mut inner, "status");
                out.extend_from_slice(s.to_string().as_bytes());
            }
            if let Some(c) = f.error_code {
                json::write_key(&mut out, &mut inner, "error_code");
                out.extend_from_slice(c.to_string().as_bytes());
            }
            if let Some(m) = &f.message {
                json::write_key(&mut out, &mut inner, "message");
                json::write_str(&mut out, m);
            }
            if let Some(d) = &f.dispatch_status {
                json::write_key(&mut out, &mut inner, "dispatch_status");
                json::write_str(&mut out, d);
            }
            out.push(b'}');
        }
        out.push(b'}');
        ClientAnswer { status, body: out }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3() -> Api {
        Api::V3 { cluster_id: "c".into() }
    }

    fn reply<'a>(status: &'a str, body: &'a str) -> ReplyView<'a> {
        ReplyView {
            status: Some(status.as_bytes()),
            dispatch_status: None,
            body: body.as_bytes(),
        }
    }

    fn failed(status: Option<u16>, code: Option<i64>, msg: Option<&str>, reason: &'static str) -> Outcome {
        Outcome::Failed(Failure {
            status,
            error_code: code,
            message: msg.map(str::to_string),
            dispatch_status: None,
            reason,
        })
    }

    /// One wording of a failure in every log line, and one shape of a call the host refused.
    #[test]
    fn failures_format_themselves() {
        let full = Failure {
            status: Some(500),
            error_code: Some(50001),
            message: Some("broker \"down\"".into()),
            dispatch_status: Some("timeout".into()),
            reason: "error status",
        };
        assert_eq!(
            full.to_string(),
            r#"error status, status 500, error_code 50001, message "broker \"down\"", dispatch_status "timeout""#
        );
        assert_eq!(
            Failure {
                reason: "no outcome for this record",
                ..Failure::default()
            }
            .to_string(),
            "no outcome for this record"
        );
        let refused = Failure::host_refusal(&"call rejected by the host: BadArgument");
        assert_eq!(
            refused,
            Failure {
                dispatch_status: Some("call rejected by the host: BadArgument".into()),
                reason: "call rejected",
                ..Failure::default()
            }
        );
        assert_eq!(
            refused.to_string(),
            r#"call rejected, dispatch_status "call rejected by the host: BadArgument""#
        );
    }

    /// A probe succeeds on any 2xx and fails on anything else, a missing reply included.
    #[test]
    fn probe_replies() {
        for ok in ["200", "204", " 299 "] {
            assert_eq!(probe_failure(&reply(ok, "")), None, "{ok}");
        }
        for (status, why) in [
            ("199", "status 199"),
            ("300", "status 300"),
            ("404", "status 404"),
            ("503", "status 503"),
            ("abc", "status abc"),
        ] {
            assert_eq!(probe_failure(&reply(status, "")).as_deref(), Some(why), "{status}");
        }
        let no_reply = ReplyView::default();
        assert_eq!(probe_failure(&no_reply).as_deref(), Some("no reply"));
        let kong_timeout = ReplyView {
            dispatch_status: Some(b"timeout"),
            ..ReplyView::default()
        };
        assert_eq!(
            probe_failure(&kong_timeout).as_deref(),
            Some(r#"no reply, dispatch_status "timeout""#)
        );
    }

    #[test]
    fn v2_replies() {
        let cases = [
            (
                reply(
                    "200",
                    r#"{"offsets":[{"partition":0,"offset":0,"error_code":null,"error":null}],"key_schema_id":null,"value_schema_id":null}"#,
                ),
                Outcome::Acknowledged,
            ),
            // Redpanda: no error_code member at all.
            (
                reply("200", r#"{"offsets":[{"partition":2,"offset":17}]}"#),
                Outcome::Acknowledged,
            ),
            (
                reply(
                    "200",
                    r#"{"offsets":[{"partition":null,"offset":null,"error_code":50002,"error":"Kafka error: boom"}]}"#,
                ),
                failed(Some(200), Some(50002), Some("Kafka error: boom"), "per-record error"),
            ),
            (
                reply(
                    "200",
                    r#"{"offsets":[{"partition":0,"offset":1},{"error_code":50003,"error":"retriable"}]}"#,
                ),
                failed(Some(200), Some(50003), Some("retriable"), "per-record error"),
            ),
            (
                reply("404", r#"{"error_code":40401,"message":"Topic not found."}"#),
                failed(Some(404), Some(40401), Some("Topic not found."), "error status"),
            ),
            (
                reply("422", r#"{"error_code":42201,"message":"Unprocessable"}"#),
                failed(Some(422), Some(42201), Some("Unprocessable"), "error status"),
            ),
            (reply("500", "oops"), failed(Some(500), None, None, "error status")),
            (reply("503", ""), failed(Some(503), None, None, "error status")),
            (
                reply("200", "not json"),
                failed(Some(200), None, None, "unreadable reply"),
            ),
            (reply("200", "[]"), failed(Some(200), None, None, "unreadable reply")),
            (
                reply("200", "{}"),
                failed(Some(200), None, None, "reply without offsets"),
            ),
            (
                reply("200", r#"{"offsets":[]}"#),
                failed(Some(200), None, None, "reply without offsets"),
            ),
            (
                reply("200", r#"{"offsets":[1]}"#),
                failed(Some(200), None, None, "unreadable reply"),
            ),
            (reply("204", ""), failed(Some(204), None, None, "unreadable reply")),
            (reply("30x", ""), failed(None, None, None, "invalid :status")),
            (
                reply("302", r#"{"offsets":[{"offset":1}]}"#),
                failed(Some(302), None, None, "error status"),
            ),
        ];
        for (r, want) in cases {
            assert_eq!(classify(&Api::V2, &r), want, "{:?}", String::from_utf8_lossy(r.body));
        }
    }

    /// The byte scanner's acknowledgements are the `Value` reading's, and the usual replies,
    /// whitespace and escapes included, are acknowledged.
    #[test]
    fn fast_acknowledgement_agrees_with_the_full_reading() {
        let usual_v2 = [
            r#"{"offsets":[{"partition":0,"offset":1,"error_code":null,"error":null}],"key_schema_id":null,"value_schema_id":null}"#,
            r#"{"offsets":[{"partition":2,"offset":17}]}"#,
            r#" { "offsets" : [ {"partition":0,"offset":1} , {"partition":1,"offset":9,"error_code":null} ] } "#,
            r#"{"off\u0073ets":[{"err\u006fr_code":null,"x":[1,{"y":"\ud83d\ude00"}]}]}"#,
        ];
        let usual_v3 = [
            r#"{"error_code":200,"cluster_id":"c","topic_name":"t","partition_id":0,"offset":3}"#,
            r#"{"cluster_id":"c","error_code":200,"key":{"type":"BINARY","size":1},"value":null}"#,
        ];
        let others = [
            "",
            "null",
            "[]",
            "{}",
            "{",
            r#"{"offsets":[]}"#,
            r#"{"offsets":{}}"#,
            r#"{"offsets":null}"#,
            r#"{"offsets":[1]}"#,
            r#"{"offsets":[[]]}"#,
            r#"{"offsets":[{"error_code":0}]}"#,
            r#"{"offsets":[{"error_code":50002,"error":"boom"}]}"#,
            r#"{"offsets":[{"partition":0}],"offsets":[]}"#,
            r#"{"offsets":[],"offsets":[{"partition":0}]}"#,
            r#"{"offsets":[{"error_code":1,"error_code":null}]}"#,
            r#"{"offsets":[{"error_code":null,"error_code":1}]}"#,
            r#"{"offsets":[{"partition":0}],"x":"\ud800"}"#,
            r#"{"offsets":[{"partition":0}],"x":"a\qb"}"#,
            r#"{"offsets":[{"partition":0}],"x":01}"#,
            r#"{"offsets":[{"partition":0}]} x"#,
            r#"{"offsets":[{"partition":0}]}{}"#,
            r#"{"offsets":[{"partition":0,}]}"#,
            r#"{"error_code":200.0}"#,
            r#"{"error_code":2e2}"#,
            r#"{"error_code":"200"}"#,
            r#"{"error_code":200,"error_code":400}"#,
            r#"{"error_code":400,"error_code":200}"#,
            r#"{"error_code":-200}"#,
            r#"{"error_code":200,"message":"\u00"}"#,
            "{\"error_code\":200,\"m\":\"\u{1}\"}",
        ];
        let deep = format!("{{\"offsets\":[{{\"p\":{}{}}}]}}", "[".repeat(200), "]".repeat(200));
        let bad_utf8 = b"{\"offsets\":[{\"p\":0}],\"x\":\"\xff\"}".to_vec();
        let mut all: Vec<Vec<u8>> = usual_v2
            .iter()
            .chain(&usual_v3)
            .chain(&others)
            .map(|b| b.as_bytes().to_vec())
            .collect();
        all.push(deep.into_bytes());
        all.push(bad_utf8);
        // Whichever reading answers, `classify` concludes what the `Value` reading does.
        for api in [Api::V2, v3()] {
            for body in &all {
                let view = ReplyView {
                    body,
                    ..reply("200", "")
                };
                assert_eq!(
                    classify(&api, &view),
                    classify_2xx(&api, 200, body),
                    "{api:?} {}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        for (api, usual) in [(Api::V2, &usual_v2[..]), (v3(), &usual_v3[..])] {
            for body in usual {
                assert_eq!(classify(&api, &reply("200", body)), Outcome::Acknowledged, "{body}");
            }
        }
    }

    /// The byte scanner recognises the usual acknowledgements (single and batch), and whatever
    /// it recognises the `Value` reading acknowledges too: checked on the usual replies, on
    /// replies outside its subset, and on every one-byte change and deletion of the usual ones.
    #[test]
    fn plain_acknowledgement_agrees_with_the_full_reading() {
        let v2_entries = [
            r#"{"partition":0,"offset":1,"error_code":null,"error":null}"#,
            r#"{"partition":2,"offset":17}"#,
            r#" {"partition":1,"offset":9,"error_code":null,"x":[true,false,-3,{"y":"z"}]} "#,
        ];
        let v3_results = [
            r#"{"error_code":200,"cluster_id":"c","topic_name":"t","partition_id":0,"offset":3}"#,
            r#"{"cluster_id":"c","error_code":200,"timestamp":"2026-01-01T00:00:00.000Z","key":{"type":"BINARY","size":1},"value":null}"#,
        ];
        let v2_body = |n: usize| {
            let entries: Vec<&str> = (0..n).map(|i| v2_entries[i % v2_entries.len()]).collect();
            format!(
                r#"{{"offsets":[{}],"key_schema_id":null,"value_schema_id":null}}"#,
                entries.join(",")
            )
        };
        let v3_body = |n: usize, separator: &str| {
            let results: Vec<&str> = (0..n).map(|i| v3_results[i % v3_results.len()]).collect();
            results.join(separator)
        };
        // Recognised: singles and batches of the usual shapes.
        for n in 1..5 {
            let v2 = v2_body(n);
            assert!(plain::acknowledged(&Api::V2, v2.as_bytes()), "{v2}");
            assert!(plain::batch_acknowledged(&Api::V2, v2.as_bytes(), n), "{v2}");
            assert!(!plain::batch_acknowledged(&Api::V2, v2.as_bytes(), n + 1), "{v2}");
            for separator in ["\n", "", " \r\n\t"] {
                let stream = v3_body(n, separator);
                assert_eq!(plain::acknowledged(&v3(), stream.as_bytes()), n == 1, "{stream}");
                assert!(plain::batch_acknowledged(&v3(), stream.as_bytes(), n), "{stream}");
                assert!(!plain::batch_acknowledged(&v3(), stream.as_bytes(), n + 1), "{stream}");
                assert!(!plain::batch_acknowledged(&v3(), stream.as_bytes(), n - 1), "{stream}");
            }
        }
        assert!(!plain::batch_acknowledged(&Api::V2, br#"{"offsets":[]}"#, 0));
        assert!(!plain::batch_acknowledged(&v3(), b"", 0));
        // Outside the subset or the shape: left to serde, whatever serde concludes.
        for body in [
            r#"{"off\u0073ets":[{"partition":0}]}"#,
            r#"{"offsets":[{"partition":0,"x":"\u00e9"}]}"#,
            "{\"offsets\":[{\"x\":\"\u{e9}\"}]}",
            r#"{"offsets":[{"offset":1.5}]}"#,
            r#"{"offsets":[{"offset":1e3}]}"#,
            r#"{"offsets":[{"offset":1234567890123456789}]}"#,
            r#"{"offsets":[{"error_code":0}]}"#,
            r#"{"offsets":[{"partition":0}],"offsets":[{"partition":0}]}"#,
            r#"{"offsets":[{"error_code":null,"error_code":null}]}"#,
            r#"{"offsets":[]}"#,
            "\u{feff}{\"offsets\":[{\"partition\":0}]}",
            r#"{"offsets":[{"partition":0}]}x"#,
        ] {
            assert!(!plain::acknowledged(&Api::V2, body.as_bytes()), "{body}");
            assert!(!plain::batch_acknowledged(&Api::V2, body.as_bytes(), 1), "{body}");
        }
        let deep = format!("{{\"offsets\":[{{\"p\":{}{}}}]}}", "[".repeat(14), "]".repeat(14));
        assert!(!plain::acknowledged(&Api::V2, deep.as_bytes()));
        let shallow = format!("{{\"offsets\":[{{\"p\":{}{}}}]}}", "[".repeat(13), "]".repeat(13));
        assert!(plain::acknowledged(&Api::V2, shallow.as_bytes()));
        for body in [
            r#"{"error_code":200.0}"#,
            r#"{"error_code":"200"}"#,
            r#"{"error_code":0200}"#,
        ] {
            assert!(!plain::acknowledged(&v3(), body.as_bytes()), "{body}");
        }

        // Whatever it recognises, the full reading acknowledges.
        let check = |api: &Api, body: &[u8]| {
            let text = String::from_utf8_lossy(body);
            if plain::acknowledged(api, body) {
                assert_eq!(classify_2xx(api, 200, body), Outcome::Acknowledged, "{api:?} {text}");
            }
            for n in 0..4 {
                if plain::batch_acknowledged(api, body, n) {
                    assert_eq!(
                        per_record(api, 200, body, n),
                        Ok(vec![Outcome::Acknowledged; n]),
                        "{api:?} {n} {text}"
                    );
                }
            }
        };
        let mut seeds: Vec<Vec<u8>> = (1..4).map(|n| v2_body(n).into_bytes()).collect();
        seeds.extend((1..4).map(|n| v3_body(n, "\n").into_bytes()));
        let replacements = [
            b'"', b'\\', b'0', b'2', b'.', b'e', b'-', b'{', b'}', b'[', b']', b',', b':', b' ', b'n', b'x', 0xff, 0,
        ];
        for api in [Api::V2, v3()] {
            for seed in &seeds {
                check(&api, seed);
                for at in 0..seed.len() {
                    let mut cut = seed.clone();
                    cut.remove(at);
                    check(&api, &cut);
                    for &byte in &replacements {
                        let mut changed = seed.clone();
                        changed[at] = byte;
                        check(&api, &changed);
                    }
                }
            }
        }
    }

    #[test]
    fn v3_replies() {
        let ok = r#"{"error_code":200,"cluster_id":"c","topic_name":"t","partition_id":1,"offset":0,"timestamp":"2026-01-01T00:00:00.000Z","key":null,"value":{"type":"BINARY","size":7}}"#;
        assert_eq!(classify(&v3(), &reply("200", ok)), Outcome::Acknowledged);
        assert_eq!(
            classify(&v3(), &reply("200", r#"{"error_code":400,"message":"Bad record"}"#)),
            failed(Some(200), Some(400), Some("Bad record"), "record error")
        );
        assert_eq!(
            classify(&v3(), &reply("200", r#"{"cluster_id":"c"}"#)),
            failed(Some(200), None, None, "reply without error_code")
        );
        assert_eq!(
            classify(
                &v3(),
                &reply(
                    "404",
                    r#"{"error_code":404,"message":"This server does not host this topic-partition."}"#
                )
            ),
            failed(
                Some(404),
                Some(404),
                Some("This server does not host this topic-partition."),
                "error status"
            )
        );
        // A v2-shaped acknowledgement is not a v3 one.
        assert_eq!(
            classify(&v3(), &reply("200", r#"{"offsets":[{"offset":1}]}"#)),
            failed(Some(200), None, None, "reply without error_code")
        );
    }

    #[test]
    fn host_signals() {
        let no_reply = ReplyView::default();
        assert_eq!(classify(&Api::V2, &no_reply), failed(None, None, None, "no reply"));
        let kong_timeout = ReplyView {
            dispatch_status: Some(b"timeout"),
            ..ReplyView::default()
        };
        assert!(matches!(classify(&Api::V2, &kong_timeout), Outcome::TimedOut(_)));
        let kong_broken = ReplyView {
            dispatch_status: Some(b"broken connection"),
            ..ReplyView::default()
        };
        assert_eq!(
            classify(&v3(), &kong_broken),
            Outcome::Failed(Failure {
                dispatch_status: Some("broken connection".into()),
                reason: "no reply",
                ..Failure::default()
            })
        );
        // Envoy's async client answers a timed-out call with a local 504.
        assert_eq!(
            classify(&Api::V2, &reply("504", "upstream request timeout")),
            Outcome::TimedOut(Failure {
                status: Some(504),
                reason: "timed out",
                ..Failure::default()
            })
        );
    }

    #[test]
    fn v2_batch_replies() {
        let ack = Outcome::Acknowledged;
        // Partial failure: only the second record failed.
        let partial = reply(
            "200",
            r#"{"offsets":[{"partition":0,"offset":1,"error_code":null,"error":null},{"partition":null,"offset":null,"error_code":50003,"error":"retriable"},{"partition":0,"offset":2}]}"#,
        );
        assert_eq!(
            classify_batch(&Api::V2, &partial, 3),
            vec![
                ack.clone(),
                failed(Some(200), Some(50003), Some("retriable"), "per-record error"),
                ack.clone()
            ]
        );
        // Fewer or more offsets than records: which entry answers which record is unknown, so
        // the whole batch failed (a duplicate rather than a guess that could lose a record).
        assert_eq!(
            classify_batch(&Api::V2, &reply("200", r#"{"offsets":[{"offset":1}]}"#), 2),
            vec![failed(Some(200), None, None, MISMATCHED_REPLY); 2]
        );
        assert_eq!(
            classify_batch(&Api::V2, &reply("200", r#"{"offsets":[{"offset":1},{"offset":2}]}"#), 1),
            vec![failed(Some(200), None, None, MISMATCHED_REPLY)]
        );
        // Request-level failures fail every record alike.
        let envelope = failed(Some(404), Some(40401), Some("Topic not found."), "error status");
        assert_eq!(
            classify_batch(
                &Api::V2,
                &reply("404", r#"{"error_code":40401,"message":"Topic not found."}"#),
                2
            ),
            vec![envelope.clone(), envelope]
        );
        assert_eq!(
            classify_batch(&Api::V2, &reply("200", "{"), 2),
            vec![failed(Some(200), None, None, "unreadable reply"); 2]
        );
        assert_eq!(
            classify_batch(&Api::V2, &ReplyView::default(), 1),
            vec![failed(None, None, None, "no reply")]
        );
        assert!(matches!(
            classify_batch(&Api::V2, &reply("504", ""), 1)[..],
            [Outcome::TimedOut(_)]
        ));
    }

    #[test]
    fn v3_streaming_replies() {
        let ok = |offset: u32| {
            format!(
                r#"{{"error_code":200,"cluster_id":"c","topic_name":"t","partition_id":0,"offset":{offset},"timestamp":"2026-01-01T00:00:00.000Z","value":{{"type":"BINARY","size":2}}}}"#
            )
        };
        // kafka-rest's streaming answers: one object per record, separated by \r\n.
        let body = format!(
            "{}\r\n{}\r\n{}\r\n",
            ok(1),
            r#"{"error_code":400,"message":"Bad record"}"#,
            ok(2)
        );
        assert_eq!(
            classify_batch(&v3(), &reply("200", &body), 3),
            vec![
                Outcome::Acknowledged,
                failed(Some(200), Some(400), Some("Bad record"), "record error"),
                Outcome::Acknowledged
            ]
        );
        // Concatenated without separators; one result missing.
        let body = format!("{}{}", ok(1), ok(2));
        assert_eq!(
            classify_batch(&v3(), &reply("200", &body), 3),
            vec![
                Outcome::Acknowledged,
                Outcome::Acknowledged,
                failed(Some(200), None, None, "reply without a result for this record")
            ]
        );
        // A result cut short: it and everything after it failed.
        let body = format!("{}\r\n{{\"error_code\":2", ok(1));
        assert_eq!(
            classify_batch(&v3(), &reply("200", &body), 3),
            vec![
                Outcome::Acknowledged,
                failed(Some(200), None, None, "unreadable reply"),
                failed(Some(200), None, None, "unreadable reply")
            ]
        );
        // A single record answered the non-streaming way.
        assert_eq!(
            classify_batch(&v3(), &reply("200", &ok(7)), 1),
            vec![Outcome::Acknowledged]
        );
        assert_eq!(
            classify_batch(&v3(), &reply("422", r#"{"error_code":422,"message":"bad"}"#), 2),
            vec![failed(Some(422), Some(422), Some("bad"), "error status"); 2]
        );
    }

    /// Karapace's partial failure: 422, one `offsets` entry per record, the good ones written.
    const KARAPACE_422: &str = r#"{"key_schema_id":null,"value_schema_id":null,"offsets":[{"partition":0,"offset":5,"error_code":null,"error":null},{"partition":null,"offset":null,"error_code":1,"error":"MESSAGE_TOO_LARGE"},{"partition":0,"offset":6}]}"#;

    #[test]
    fn a_non_2xx_reply_with_matching_offsets_is_read_per_record() {
        let ack = Outcome::Acknowledged;
        assert_eq!(
            classify_batch(&Api::V2, &reply("422", KARAPACE_422), 3),
            vec![
                ack.clone(),
                failed(Some(422), Some(1), Some("MESSAGE_TOO_LARGE"), "per-record error"),
                ack.clone()
            ]
        );
        // Every record failed (Karapace with the broker down, or a bad partition: error_code 2).
        let all_failed = r#"{"key_schema_id":null,"value_schema_id":null,"offsets":[{"partition":null,"offset":null,"error_code":2,"error":"UnknownTopicOrPartition"}]}"#;
        assert_eq!(
            classify_batch(&Api::V2, &reply("422", all_failed), 1),
            vec![failed(
                Some(422),
                Some(2),
                Some("UnknownTopicOrPartition"),
                "per-record error"
            )]
        );
        // One record (synchronous mode): the record's own error, not the envelope's.
        assert_eq!(
            classify(&Api::V2, &reply("422", all_failed)),
            failed(Some(422), Some(2), Some("UnknownTopicOrPartition"), "per-record error")
        );
        // Any status: a 500 that still reports every record.
        let ok_500 = r#"{"offsets":[{"partition":0,"offset":9}]}"#;
        assert_eq!(classify_batch(&Api::V2, &reply("500", ok_500), 1), vec![ack.clone()]);
    }

    /// Redpanda's answer: one `offsets` entry per partition of the request.
    #[test]
    fn a_2xx_reply_per_partition_acknowledges_the_batch_only_when_every_partition_was_written() {
        let ack = Outcome::Acknowledged;
        // Three records in one partition, written: one entry.
        let one = r#"{"offsets":[{"partition":0,"offset":5}]}"#;
        assert_eq!(classify_batch(&Api::V2, &reply("200", one), 3), vec![ack.clone(); 3]);
        // Five records over two partitions, both written (a null error_code is no error).
        let two = r#"{"offsets":[{"partition":1,"offset":9},{"partition":0,"offset":5,"error_code":null}]}"#;
        assert_eq!(classify_batch(&Api::V2, &reply("200", two), 5), vec![ack.clone(); 5]);
        let whole = |status: u16| failed(Some(status), None, None, MISMATCHED_REPLY);
        // One partition's batch refused: which records were in it is not known.
        let mixed = r#"{"offsets":[{"partition":1,"offset":9},{"partition":0,"error_code":10,"offset":-1}]}"#;
        assert_eq!(classify_batch(&Api::V2, &reply("200", mixed), 5), vec![whole(200); 5]);
        // Not per partition: a repeated partition, no offset, a negative one, no partition.
        for body in [
            r#"{"offsets":[{"partition":0,"offset":5},{"partition":0,"offset":6}]}"#,
            r#"{"offsets":[{"partition":0}]}"#,
            r#"{"offsets":[{"partition":0,"offset":-1}]}"#,
            r#"{"offsets":[{"offset":5}]}"#,
            r#"{"offsets":[]}"#,
        ] {
            assert_eq!(
                classify_batch(&Api::V2, &reply("200", body), 3),
                vec![whole(200); 3],
                "{body}"
            );
        }
        // Only a 2xx reply is read this way.
        let status = |s: u16| failed(Some(s), None, None, "error status");
        assert_eq!(classify_batch(&Api::V2, &reply("422", one), 3), vec![status(422); 3]);
        // More entries than records never matches.
        assert_eq!(classify_batch(&Api::V2, &reply("200", two), 1), vec![whole(200)]);
    }

    #[test]
    fn a_non_2xx_reply_that_does_not_match_fails_the_whole_batch() {
        let whole = |status: u16| failed(Some(status), None, None, "error status");
        // Two entries for three records.
        let short = r#"{"offsets":[{"partition":0,"offset":5},{"error_code":1,"error":"x"}]}"#;
        assert_eq!(classify_batch(&Api::V2, &reply("422", short), 3), vec![whole(422); 3]);
        // An entry that is neither an error nor a written record.
        let vague = r#"{"offsets":[{"partition":0,"offset":5},{"partition":0}]}"#;
        assert_eq!(classify_batch(&Api::V2, &reply("422", vague), 2), vec![whole(422); 2]);
        let vague = r#"{"offsets":[{"partition":0,"offset":5},{"error_code":null}]}"#;
        assert_eq!(classify_batch(&Api::V2, &reply("422", vague), 2), vec![whole(422); 2]);
        let not_objects = r#"{"offsets":[1,2]}"#;
        assert_eq!(
            classify_batch(&Api::V2, &reply("500", not_objects), 2),
            vec![whole(500); 2]
        );
        // A 504 without per-record results stays a timeout; a mismatched single record too.
        assert!(matches!(
            classify(&Api::V2, &reply("504", r#"{"offsets":[]}"#)),
            Outcome::TimedOut(_)
        ));
        assert_eq!(
            classify(&Api::V2, &reply("422", short)),
            whole(422),
            "two entries for one record"
        );
        // A request-level envelope keeps its code and message.
        assert_eq!(
            classify_batch(
                &Api::V2,
                &reply("422", r#"{"error_code":42201,"message":"bad key"}"#),
                2
            ),
            vec![failed(Some(422), Some(42201), Some("bad key"), "error status"); 2]
        );
    }

    #[test]
    fn v3_per_record_results_whatever_the_status() {
        let ok = r#"{"error_code":200,"cluster_id":"c","topic_name":"t","partition_id":0,"offset":4}"#;
        let bad = r#"{"error_code":400,"message":"Bad record"}"#;
        let body = format!("{ok}\r\n{bad}\r\n");
        assert_eq!(
            classify_batch(&v3(), &reply("207", &body), 2),
            vec![
                Outcome::Acknowledged,
                failed(Some(207), Some(400), Some("Bad record"), "record error")
            ]
        );
        assert_eq!(
            classify_batch(&v3(), &reply("422", &body), 2),
            vec![
                Outcome::Acknowledged,
                failed(Some(422), Some(400), Some("Bad record"), "record error")
            ]
        );
        // Without an acknowledgement a non-2xx body is an envelope: the whole batch.
        let body = format!("{bad}\r\n{bad}\r\n");
        assert_eq!(
            classify_batch(&v3(), &reply("422", &body), 2),
            vec![failed(Some(422), None, None, "error status"); 2]
        );
        assert_eq!(
            classify_batch(&v3(), &reply("422", bad), 1),
            vec![failed(Some(422), Some(400), Some("Bad record"), "error status")]
        );
        // Count mismatch, or a result without an integer error_code: the whole batch.
        let body = format!("{ok}\r\n");
        assert_eq!(
            classify_batch(&v3(), &reply("422", &body), 2),
            vec![failed(Some(422), Some(200), None, "error status"); 2]
        );
        let body = format!("{ok}\r\n{{\"message\":\"x\"}}");
        assert_eq!(
            classify_batch(&v3(), &reply("500", &body), 2),
            vec![failed(Some(500), None, None, "error status"); 2]
        );
        // A 2xx stream with more results than records does not answer this batch.
        let body = format!("{ok}\r\n{ok}\r\n");
        assert_eq!(
            classify_batch(&v3(), &reply("200", &body), 1),
            vec![failed(Some(200), None, None, MISMATCHED_REPLY)]
        );
    }

    #[test]
    fn long_messages_are_capped() {
        let long = "x".repeat(5000);
        let body = format!(r#"{{"error_code":50001,"message":"{long}"}}"#);
        let Outcome::Failed(f) = classify(&Api::V2, &reply("500", &body)) else {
            panic!("not a failure")
        };
        assert_eq!(f.message.unwrap().len(), MESSAGE_MAX);
    }

    fn text(a: &ClientAnswer) -> (u32, String) {
        let s = String::from_utf8(a.body.clone()).unwrap();
        serde_json::from_str::<Value>(&s).expect("answer is JSON");
        (a.status, s)
    }

    #[test]
    fn client_answers() {
        let ack = Outcome::Acknowledged;
        let fail = failed(Some(200), Some(50002), Some("boom \"x\""), "per-record error");
        let timeout = Outcome::TimedOut(Failure {
            dispatch_status: Some("timeout".into()),
            reason: "timed out",
            ..Failure::default()
        });
        assert_eq!(
            text(&ClientAnswer::from_outcomes([("a", &ack), ("b", &ack)], true)),
            (200, r#"{"message":"message sent"}"#.into())
        );
        assert_eq!(
            text(&ClientAnswer::from_outcomes([("a", &ack), ("b", &fail)], false)),
            (
                502,
                r#"{"message":"Bad Gateway","error":"could not send message to topic"}"#.into()
            )
        );
        assert_eq!(
            text(&ClientAnswer::from_outcomes([("a", &ack), ("b", &fail)], true)),
            (502, r#"{"message":"Bad Gateway","error":"could not send message to topic","rest_proxy":{"topic":"b","status":200,"error_code":50002,"message":"boom \"x\""}}"#.into())
        );
        // A failure outranks a timeout.
        assert_eq!(
            ClientAnswer::from_outcomes([("a", &timeout), ("b", &fail)], false).status,
            502
        );
        assert_eq!(
            text(&ClientAnswer::from_outcomes([("a", &ack), ("b", &timeout)], false)),
            (
                504,
                r#"{"message":"Gateway Timeout","error":"timed out sending message to topic"}"#.into()
            )
        );
        assert_eq!(
            text(&ClientAnswer::from_outcomes([("a", &timeout)], true)),
            (504, r#"{"message":"Gateway Timeout","error":"timed out sending message to topic","rest_proxy":{"topic":"a","dispatch_status":"timeout"}}"#.into())
        );
        assert_eq!(
            text(&ClientAnswer::topic_not_allowed()),
            (
                400,
                r#"{"message":"Bad Request","error":"one or more target topics are not in the allowed topics list"}"#
                    .into()
            )
        );
        assert_eq!(
            text(&ClientAnswer::payload_too_large()),
            (
                413,
                r#"{"message":"Payload Too Large","error":"request body is larger than max_body_size"}"#.into()
            )
        );
        assert_eq!(text(&ClientAnswer::not_configured()).0, 500);
        assert_eq!(text(&ClientAnswer::body_unreadable()).0, 500);
        assert_eq!(text(&ClientAnswer::internal_error()).0, 500);
        assert_eq!(
            text(&ClientAnswer::service_unavailable("the message buffer is full")),
            (
                503,
                r#"{"message":"Service Unavailable","error":"the message buffer is full"}"#.into()
            )
        );
        assert_eq!(text(&ClientAnswer::from_outcomes(std::iter::empty(), false)).0, 502);
    }
}
