//! The asynchronous producer (`producer_async`) of the real `kafka_upstream.wasm`, in both
//! profiles, on host-sim's virtual clock: requests are answered as soon as their record is
//! buffered, batches leave from the root context's tick (by count, by bytes, at the flush
//! timeout), failed records are retried with backoff and dropped (counted and logged) after the
//! last attempt, a full buffer or an unhealthy REST proxy gets 503, health probes reopen the gate,
//! and the metrics add up.
//!
//! Time only moves when a test advances it, so "not before" and "by then" are exact statements
//! about the filter's schedule, not wall-clock measurements.

use base64::Engine as _;
use host_sim::{CalloutFailure, HttpCall, HttpCallReply, LogLevel, Profile};
use kafka_upstream_tests::{dump_logs, PROFILES};
use serde_json::{json, Value};

use crate::filter_common::{
    call_values, upstream, v2_ack_of, Gateway, Request, BUFFER_FULL, ENVOY_CLUSTER, SENT, UNHEALTHY,
};

/// The tick period with the default producer settings (`MAX_TICK_MS`).
const TICK_MS: u64 = 20;

/// `POST /kafka` carrying `{"n":n}` (application/json); [`numbers`] reads `n` back from a batch.
fn numbered(n: u32) -> Request {
    Request::post("/kafka", Some("application/json"), format!(r#"{{"n":{n}}}"#).as_bytes())
}

/// The asynchronous producer's side of the gateway: messages numbered `n`, sent and settled.
impl Gateway {
    /// Starts the request for `{"n":n}`: headers only.
    fn start_request(&mut self, n: u32) -> u32 {
        self.send_headers(&numbered(n))
    }

    /// Sends the request for `{"n":n}` (its body only if the headers were not answered already)
    /// and returns the client's answer.
    fn send_numbered(&mut self, n: u32) -> (u32, String) {
        let req = numbered(n);
        let stream = self.send_headers(&req);
        if !self.answered(stream) {
            self.send_body_on(stream, &req);
        }
        let answer = self.answer(stream);
        self.finish(stream);
        answer
    }

    /// Sends `{"n":n}` and expects 200 at once.
    fn accept(&mut self, n: u32) {
        assert_eq!(
            self.send_numbered(n),
            (200, SENT.to_string()),
            "{}: message {n}",
            self.profile
        );
    }

    /// Acknowledges every record of a v2 batch.
    fn ack(&mut self, call: &HttpCall) {
        let n = numbers(call).len();
        self.reply(call.token, 200, &v2_ack_of(n));
    }

    fn fail_500(&mut self, call: &HttpCall) {
        self.reply(call.token, 500, r#"{"error_code":50001,"message":"broker down"}"#);
    }

    /// The value of the filter's metric `name`.
    fn value(&self, name: &str) -> u64 {
        self.metric(name).value
    }
}

/// The `n` of every record in a batch, in order (v2 or v3, binary format).
fn numbers(call: &HttpCall) -> Vec<u64> {
    let vals = call_values(call);
    let records: Vec<Value> = match vals[0].get("records") {
        Some(Value::Array(records)) => records.clone(),
        _ => vals,
    };
    records
        .iter()
        .map(|r| {
            let encoded = match &r["value"] {
                Value::String(s) => s.clone(),
                v => v["data"].as_str().expect("v3 binary data").to_string(),
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .expect("base64 value");
            let message: Value = serde_json::from_slice(&bytes).expect("message is JSON");
            message["body_args"]["n"].as_u64().expect("body_args.n")
        })
        .collect()
}

#[test]
fn requests_are_answered_when_buffered_and_batches_leave_by_count() {
    for profile in PROFILES {
        let mut gw = Gateway::asynchronous(profile, json!({"producer_request_limits_messages_per_request": 3}));
        for n in 0..7 {
            gw.accept(n);
        }
        // Answered, and nothing sent from the requests themselves.
        assert!(gw.calls().is_empty(), "{profile}: a request dispatched");
        assert_eq!(gw.value("buffer_depth"), 7, "{profile}");
        gw.advance(TICK_MS);
        let calls = gw.root_calls(2);
        assert_eq!(numbers(&calls[0]), vec![0, 1, 2], "{profile}");
        assert_eq!(numbers(&calls[1]), vec![3, 4, 5], "{profile}");
        assert_eq!(calls[0].header(":path"), Some("/topics/orders"));
        assert_eq!(
            calls[0].header("content-type"),
            Some("application/vnd.kafka.binary.v2+json")
        );
        for call in &calls {
            gw.ack(call);
        }
        // The seventh waits for the flush timeout.
        gw.advance(900);
        gw.root_calls(0);
        gw.advance(100);
        let last = gw.root_calls(1);
        assert_eq!(numbers(&last[0]), vec![6], "{profile}");
        gw.ack(&last[0]);
        assert_eq!(gw.value("messages_sent"), 7, "{profile}");
        assert_eq!(gw.value("buffer_depth"), 0, "{profile}");
        let sizes = gw.metric("batch_size");
        assert_eq!(sizes.samples, vec![3, 3, 1], "{profile}");
        assert!(
            gw.logs_at(LogLevel::Warn).is_empty(),
            "{profile}: {}",
            dump_logs(&gw.vm)
        );
    }
}

#[test]
fn batches_leave_by_bytes() {
    for profile in PROFILES {
        // One record's size in a request body, measured on a one-record batch.
        let mut probe = Gateway::asynchronous(profile, json!({}));
        probe.accept(1);
        probe.advance(1000);
        let one = probe.root_calls(1).remove(0);
        let envelope = r#"{"records":[]}"#.len();
        let record = one.body.len() - envelope;

        // Room for exactly two records (and their comma).
        let limit = envelope + 2 * record + 1;
        let mut gw = Gateway::asynchronous(profile, json!({"producer_request_limits_bytes_per_request": limit}));
        gw.accept(1);
        gw.advance(TICK_MS);
        gw.root_calls(0);
        for n in 2..=5 {
            gw.accept(n);
        }
        gw.advance(TICK_MS);
        let calls = gw.root_calls(2);
        assert_eq!(numbers(&calls[0]), vec![1, 2], "{profile}");
        assert_eq!(numbers(&calls[1]), vec![3, 4], "{profile}");
        for call in &calls {
            assert_eq!(call.body.len(), limit, "{profile}");
            assert_eq!(call.header("content-length"), Some(limit.to_string().as_str()));
            gw.ack(call);
        }
        // The fifth does not fill a batch: it goes at the flush timeout, 1 s after it came.
        gw.advance(1000 - 2 * TICK_MS);
        gw.root_calls(0);
        gw.advance(TICK_MS);
        let last = gw.root_calls(1);
        assert_eq!(numbers(&last[0]), vec![5], "{profile}");
        assert!(last[0].body.len() < limit);
    }
}

#[test]
fn flush_timeout_sends_a_partial_batch() {
    for profile in PROFILES {
        let mut gw = Gateway::asynchronous(profile, json!({"producer_async_flush_timeout": 300}));
        gw.accept(1);
        gw.advance(100);
        gw.accept(2);
        gw.advance(180);
        gw.root_calls(0);
        // 300 ms after the first record: both go, the younger riding along.
        gw.advance(20);
        let calls = gw.root_calls(1);
        assert_eq!(numbers(&calls[0]), vec![1, 2], "{profile}");
        gw.ack(&calls[0]);
        gw.advance(5000);
        gw.root_calls(0);
    }
}

#[test]
fn a_failed_batch_is_retried_after_the_backoff_then_acknowledged() {
    for profile in PROFILES {
        let mut gw = Gateway::asynchronous(profile, json!({"producer_async_flush_timeout": 100}));
        gw.accept(1);
        gw.advance(100);
        let first = gw.root_calls(1);
        gw.fail_500(&first[0]);
        gw.root_calls(0);
        // producer_request_retries_backoff_timeout: 100 ms.
        gw.advance(80);
        gw.root_calls(0);
        gw.advance(20);
        let second = gw.root_calls(1);
        assert_eq!(second[0].body, first[0].body, "{profile}: the same record again");
        gw.ack(&second[0]);
        assert_eq!(
            [
                gw.value("messages_sent"),
                gw.value("messages_failed"),
                gw.value("messages_retried"),
                gw.value("messages_dropped"),
                gw.value("buffer_depth"),
            ],
            [1, 1, 1, 0, 0],
            "{profile}"
        );
        let warns = gw.logs_at(LogLevel::Warn);
        assert_eq!(warns.len(), 1, "{profile}: {warns:?}");
        assert!(
            warns[0].contains(
                "1 of 1 message(s) to topic orders not acknowledged: error status, status 500, error_code 50001"
            ),
            "{profile}: {warns:?}"
        );
    }
}

#[test]
fn host_timeouts_and_failures_are_retried_too() {
    for profile in PROFILES {
        let mut gw = Gateway::asynchronous(
            profile,
            json!({
                "rest_proxy": {"upstream": upstream(profile), "timeout": 500},
                "producer_async_flush_timeout": 20,
                "producer_async_health_failure_threshold": 10
            }),
        );
        gw.accept(1);
        gw.advance(20);
        gw.root_calls(1);
        // The host gives up on the call (Envoy: 504 from its async client; Kong: no reply,
        // :dispatch_status timeout).
        gw.advance(500);
        gw.root_calls(0);
        gw.advance(100);
        let call = gw.root_calls(1).remove(0);
        gw.vm
            .respond_http_call(call.token, HttpCallReply::Failure(CalloutFailure::BrokenConnection))
            .unwrap();
        gw.assert_not_failed();
        gw.advance(200);
        let call = gw.root_calls(1).remove(0);
        gw.ack(&call);
        assert_eq!(gw.value("messages_sent"), 1, "{profile}");
        assert_eq!(gw.value("messages_retried"), 2, "{profile}");
        let warns = gw.logs_at(LogLevel::Warn).join("\n");
        match profile {
            Profile::Envoy => assert!(warns.contains("timed out, status 504"), "{warns}"),
            Profile::Kong => assert!(warns.contains(r#"timed out, dispatch_status "timeout""#), "{warns}"),
        }
    }
}

#[test]
fn records_are_dropped_counted_and_logged_after_the_last_attempt() {
    for profile in PROFILES {
        let mut gw = Gateway::asynchronous(
            profile,
            json!({
                "producer_async_flush_timeout": 20,
                "producer_request_retries_max_attempts": 3,
                "producer_request_retries_backoff_timeout": 20,
                "producer_async_health_failure_threshold": 100
            }),
        );
        gw.accept(1);
        gw.accept(2);
        let mut attempts = 0;
        for _ in 0..100 {
            gw.advance(TICK_MS);
            for call in gw.calls() {
                assert_eq!(numbers(&call), vec![1, 2], "{profile}");
                attempts += 1;
                gw.fail_500(&call);
            }
        }
        assert_eq!(attempts, 3, "{profile}");
        assert_eq!(gw.value("messages_dropped"), 2, "{profile}");
        assert_eq!(gw.value("messages_failed"), 6, "{profile}");
        assert_eq!(gw.value("messages_retried"), 4, "{profile}");
        assert_eq!(gw.value("messages_sent"), 0, "{profile}");
        assert_eq!(gw.value("buffer_depth"), 0, "{profile}");
        assert_eq!(
            gw.logs_at(LogLevel::Error),
            vec![
                r#"kafka-upstream: dropped 2 message(s) to topic orders after 3 attempt(s); last error: error status, status 500, error_code 50001, message "broker down""#
            ],
            "{profile}"
        );
    }
}

#[test]
fn a_full_buffer_answers_503_at_once() {
    for profile in PROFILES {
        let mut gw = Gateway::asynchronous(
            profile,
            json!({"producer_async_buffering_limits_messages_in_memory": 2}),
        );
        gw.accept(1);
        gw.accept(2);
        // Refused at the request headers, before the body.
        let stream = gw.start_request(3);
        assert_eq!(gw.answer(stream), (503, BUFFER_FULL.to_string()), "{profile}");
        assert_eq!(gw.send_numbered(4), (503, BUFFER_FULL.to_string()), "{profile}");
        assert_eq!(gw.value("messages_rejected"), 2, "{profile}");
        let warns = gw.logs_at(LogLevel::Warn);
        assert_eq!(warns.len(), 1, "{profile}: logged once: {warns:?}");
        assert!(
            warns[0].contains("the message buffer is full (2 messages held, limit 2)"),
            "{warns:?}"
        );
        // In flight still counts; acknowledged records make room.
        gw.advance(1000);
        let call = gw.root_calls(1).remove(0);
        assert_eq!(gw.send_numbered(5).0, 503, "{profile}");
        gw.ack(&call);
        gw.accept(6);
        assert_eq!(gw.value("messages_sent"), 2, "{profile}");
        assert_eq!(gw.value("messages_rejected"), 3, "{profile}");
    }
}

#[test]
fn health_gating_opens_after_failed_flushes_and_closes_after_a_probe() {
    for profile in PROFILES {
        let mut gw = Gateway::asynchronous(
            profile,
            json!({
                "producer_async_flush_timeout": 20,
                "producer_request_retries_backoff_timeout": 20,
                "producer_async_health_failure_threshold": 2,
                "producer_async_health_probe_interval": 1000
            }),
        );
        gw.accept(1);
        gw.advance(20);
        let call = gw.root_calls(1).remove(0);
        gw.fail_500(&call);
        assert_eq!(
            gw.send_numbered(2).0,
            200,
            "{profile}: one failed flush is below the threshold"
        );
        gw.advance(20);
        let call = gw.root_calls(1).remove(0);
        assert_eq!(numbers(&call), vec![1, 2]);
        gw.fail_500(&call);
        // Unhealthy: refused at once, buffered records wait.
        let stream = gw.start_request(3);
        assert_eq!(gw.answer(stream), (503, UNHEALTHY.to_string()), "{profile}");
        let errors = gw.logs_at(LogLevel::Error);
        assert_eq!(errors.len(), 1, "{profile}: {errors:?}");
        assert!(
            errors[0].contains("the Kafka REST proxy is unhealthy after 2 consecutive failed flushes"),
            "{errors:?}"
        );
        gw.advance(980);
        gw.root_calls(0);
        // The probe.
        gw.advance(20);
        let probe = gw.root_calls(1).remove(0);
        assert_eq!(probe.header(":method"), Some("GET"), "{profile}");
        assert_eq!(probe.header(":path"), Some("/topics"), "{profile}");
        gw.reply(probe.token, 503, "");
        assert_eq!(
            gw.send_numbered(4),
            (503, UNHEALTHY.to_string()),
            "{profile}: a failed probe keeps it closed"
        );
        gw.advance(980);
        gw.root_calls(0);
        gw.advance(20);
        let probe = gw.root_calls(1).remove(0);
        gw.reply(probe.token, 200, r#"["orders"]"#);
        // Healthy again: requests are accepted and the held records go at the next tick.
        let infos = gw.logs_at(LogLevel::Info).join("\n");
        assert!(
            infos.contains("the Kafka REST proxy is healthy again after 1 successful probe(s)"),
            "{infos}"
        );
        gw.accept(5);
        gw.advance(TICK_MS);
        let call = gw.root_calls(1).remove(0);
        assert_eq!(numbers(&call), vec![1, 2, 5], "{profile}");
        gw.ack(&call);
        assert_eq!(gw.value("messages_sent"), 3, "{profile}");
        assert_eq!(gw.value("messages_rejected"), 2, "{profile}");
        assert_eq!(gw.value("messages_dropped"), 0, "{profile}");
        assert_eq!(gw.value("buffer_depth"), 0, "{profile}");
    }
}

#[test]
fn v2_per_record_errors_retry_only_those_records_and_metrics_add_up() {
    for profile in PROFILES {
        let mut gw = Gateway::asynchronous(
            profile,
            json!({
                "producer_request_limits_messages_per_request": 3,
                "producer_async_buffering_limits_messages_in_memory": 4
            }),
        );
        for n in 1..=4 {
            gw.accept(n);
        }
        assert_eq!(gw.send_numbered(5).0, 503, "{profile}");
        gw.advance(TICK_MS);
        let call = gw.root_calls(1).remove(0);
        assert_eq!(numbers(&call), vec![1, 2, 3], "{profile}");
        // Confluent answers 200 with a per-record error for the second record.
        gw.reply(
            call.token,
            200,
            r#"{"offsets":[{"partition":0,"offset":7,"error_code":null,"error":null},{"partition":null,"offset":null,"error_code":50002,"error":"Kafka error"},{"partition":0,"offset":8,"error_code":null,"error":null}],"key_schema_id":null,"value_schema_id":null}"#,
        );
        assert_eq!(gw.value("messages_sent"), 2, "{profile}");
        assert_eq!(gw.value("buffer_depth"), 2, "{profile}");
        // After the backoff: the failed record, then the one that waited, in one batch.
        gw.advance(100);
        let call = gw.root_calls(1).remove(0);
        assert_eq!(numbers(&call), vec![2, 4], "{profile}");
        gw.ack(&call);
        let m = |name: &str| gw.value(name);
        assert_eq!(
            [
                m("messages_sent"),
                m("messages_failed"),
                m("messages_retried"),
                m("messages_dropped"),
                m("messages_rejected"),
                m("buffer_depth"),
            ],
            [4, 1, 1, 0, 1, 0],
            "{profile}"
        );
        let sizes = gw.metric("batch_size");
        assert_eq!(
            (sizes.samples.clone(), sizes.count, sizes.sum),
            (vec![3, 2], 2, 5),
            "{profile}"
        );
    }
}

#[test]
fn v3_batches_use_streaming_mode_and_retry_only_failed_records() {
    for profile in PROFILES {
        let mut gw = Gateway::asynchronous(
            profile,
            json!({
                "rest_proxy": {"upstream": upstream(profile), "api": "v3", "cluster_id": "lkc-1", "timeout": 60_000},
                "producer_async_flush_timeout": 20
            }),
        );
        for n in 1..=3 {
            gw.accept(n);
        }
        gw.advance(20);
        let call = gw.root_calls(1).remove(0);
        assert_eq!(
            call.header(":path"),
            Some("/v3/clusters/lkc-1/topics/orders/records"),
            "{profile}"
        );
        assert_eq!(call.header("content-type"), Some("application/json"));
        assert_eq!(call_values(&call).len(), 3, "{profile}: three concatenated records");
        assert_eq!(numbers(&call), vec![1, 2, 3]);
        let ok = |offset: u32| {
            format!(
                r#"{{"error_code":200,"cluster_id":"lkc-1","topic_name":"orders","partition_id":0,"offset":{offset},"timestamp":"2026-01-01T00:00:00.000Z","value":{{"type":"BINARY","size":40}}}}"#
            )
        };
        let streamed = format!(
            "{}\r\n{}\r\n{}\r\n",
            ok(1),
            r#"{"error_code":50003,"message":"retriable"}"#,
            ok(2)
        );
        gw.reply(call.token, 200, &streamed);
        assert_eq!(gw.value("messages_sent"), 2, "{profile}");
        gw.advance(100);
        let retry = gw.root_calls(1).remove(0);
        assert_eq!(numbers(&retry), vec![2], "{profile}");
        gw.reply(retry.token, 200, &ok(3));
        assert_eq!(gw.value("messages_sent"), 3, "{profile}");
        assert_eq!(gw.value("buffer_depth"), 0, "{profile}");
    }
}

#[test]
fn batches_outlive_the_requests_that_filled_them() {
    // Envoy cancels a stream's calls when the stream ends, Kong ties dispatches to their request:
    // the batch is the root context's, so finished client streams do not cancel it.
    for profile in PROFILES {
        let mut gw = Gateway::asynchronous(profile, json!({"producer_async_flush_timeout": 20}));
        gw.accept(1);
        gw.advance(20);
        let call = gw.root_calls(1).remove(0);
        gw.accept(2);
        gw.root_calls(1);
        gw.ack(&call);
        assert_eq!(gw.value("messages_sent"), 1, "{profile}");
        assert_eq!(gw.vm.tick_period_ms(gw.root), Some(20), "{profile}");
    }
}

/// Karapace's answer to a batch of `n` records in which record `failed` could not be written:
/// HTTP 422, one `offsets` entry per record, the others written (Aiven-Open/karapace
/// `kafka_rest_apis/__init__.py`, `publish` and `produce_messages`).
fn karapace_422(n: usize, failed: usize) -> String {
    let offsets: Vec<String> = (0..n)
        .map(|i| {
            if i == failed {
                r#"{"partition":null,"offset":null,"error_code":1,"error":"MessageSizeTooLargeError"}"#.to_string()
            } else {
                format!(r#"{{"partition":0,"offset":{i},"error_code":null,"error":null}}"#)
            }
        })
        .collect();
    format!(
        r#"{{"key_schema_id":null,"value_schema_id":null,"offsets":[{}]}}"#,
        offsets.join(",")
    )
}

#[test]
fn karapace_422_partial_failure_settles_each_record() {
    for profile in PROFILES {
        let mut gw = Gateway::asynchronous(
            profile,
            json!({
                "producer_request_retries_max_attempts": 3,
                "producer_async_health_failure_threshold": 1
            }),
        );
        for n in 0..11 {
            gw.accept(n);
        }
        gw.advance(1000);
        let call = gw.root_calls(1).remove(0);
        assert_eq!(numbers(&call), (0..11).collect::<Vec<u64>>(), "{profile}");
        gw.advance(25);
        gw.reply(call.token, 422, &karapace_422(11, 4));
        // The ten written records count as sent and leave the buffer at once.
        assert_eq!(gw.value("messages_sent"), 10, "{profile}");
        assert_eq!(gw.value("buffer_depth"), 1, "{profile}");
        // Every later call carries the failed record alone, until its attempts are used up;
        // the REST proxy stays healthy although the threshold is one failed flush.
        let mut resent = Vec::new();
        for _ in 0..100 {
            gw.advance(TICK_MS);
            for call in gw.calls() {
                resent.push(numbers(&call));
                gw.reply(call.token, 422, &karapace_422(1, 0));
            }
        }
        assert_eq!(
            resent,
            vec![vec![4]; 2],
            "{profile}: only the failed record is sent again"
        );
        assert_eq!(
            [
                gw.value("messages_sent"),
                gw.value("messages_failed"),
                gw.value("messages_retried"),
                gw.value("messages_dropped"),
                gw.value("rest_calls_4xx"),
                gw.value("rest_calls_2xx"),
            ],
            [10, 3, 2, 1, 3, 0],
            "{profile}"
        );
        let latency = gw.metric("rest_call_latency_ms");
        assert_eq!(latency.count, 3, "{profile}");
        assert_eq!(latency.samples[0], 25, "{profile}");
        let errors = gw.logs_at(LogLevel::Error);
        assert_eq!(
            errors,
            vec![
                r#"kafka-upstream: dropped 1 message(s) to topic orders after 3 attempt(s); last error: per-record error, status 422, error_code 1, message "MessageSizeTooLargeError""#
            ],
            "{profile}"
        );
        // Still healthy: a new request is accepted, not refused with 503.
        assert_eq!(gw.send_numbered(100), (200, SENT.to_string()), "{profile}");
        assert_eq!(gw.value("requests_200"), 12, "{profile}");
        assert_eq!(gw.value("requests_5xx"), 0, "{profile}");
        assert_eq!(gw.value("buffer_depth"), 1, "{profile}");
    }
}

#[test]
fn a_karapace_422_that_does_not_match_fails_the_whole_batch_and_retries_record_by_record() {
    for profile in PROFILES {
        let mut gw = Gateway::asynchronous(profile, json!({"producer_async_flush_timeout": 20}));
        for n in 1..=3 {
            gw.accept(n);
        }
        gw.advance(20);
        let call = gw.root_calls(1).remove(0);
        // Two entries for three records: which one answers which record is unknown.
        gw.reply(call.token, 422, &karapace_422(2, 1));
        assert_eq!(gw.value("messages_sent"), 0, "{profile}");
        assert_eq!(gw.value("messages_retried"), 3, "{profile}");
        // The REST proxy processed the batch and acknowledged none of it: each record is
        // retried in a call of its own, so a bad one cannot sink the others again.
        gw.advance(100);
        let retries = gw.root_calls(3);
        let sent: Vec<Vec<_>> = retries.iter().map(numbers).collect();
        assert_eq!(sent, vec![vec![1], vec![2], vec![3]], "{profile}");
        for retry in &retries {
            gw.ack(retry);
        }
        assert_eq!(gw.value("messages_sent"), 3, "{profile}");
    }
}

#[test]
fn at_shutdown_envoy_gets_the_buffer_sent_before_proxy_done_and_kong_gets_it_dropped() {
    for profile in PROFILES {
        let mut gw = Gateway::asynchronous(profile, json!({"producer_async_flush_timeout": 60_000}));
        for n in 1..=3 {
            gw.accept(n);
        }
        gw.advance(100);
        gw.root_calls(0);
        gw.vm.finish_root(gw.root).expect("root shutdown");
        gw.assert_not_failed();
        match profile {
            Profile::Envoy => {
                // proxy_on_done returned false: the root owes proxy_done and its buffer is
                // on its way, whatever the flush timeout.
                assert!(gw.vm.root_exists(gw.root), "the root was deleted with records held");
                let calls = gw.root_calls(1);
                assert_eq!(numbers(&calls[0]), vec![1, 2, 3]);
                assert!(gw
                    .logs_at(LogLevel::Info)
                    .iter()
                    .any(|l| l.contains("sending the 3 buffered message(s) before the plugin stops")));
                gw.ack(&calls[0]);
                assert!(
                    !gw.vm.root_exists(gw.root),
                    "no proxy_done after the last acknowledgement"
                );
                assert_eq!(gw.value("messages_sent"), 3);
                assert_eq!(gw.value("messages_dropped"), 0);
            }
            Profile::Kong => {
                // ngx_wasm_module ignores on_done's result and has no proxy_done: dropped,
                // counted and logged.
                assert!(!gw.vm.root_exists(gw.root));
                assert!(gw
                    .logs_at(LogLevel::Error)
                    .iter()
                    .any(|l| l.contains("dropped 3 message(s) to topic orders at shutdown")));
            }
        }
    }
}

#[test]
fn an_envoy_drain_retries_a_failed_batch_and_ends_with_proxy_done() {
    let mut gw = Gateway::asynchronous(
        Profile::Envoy,
        json!({"producer_async_flush_timeout": 60_000, "producer_request_retries_backoff_timeout": 50}),
    );
    gw.accept(1);
    gw.vm.finish_root(gw.root).expect("root shutdown");
    let first = gw.root_calls(1);
    gw.fail_500(&first[0]);
    assert!(gw.vm.root_exists(gw.root));
    gw.advance(200);
    let retry = gw.root_calls(1);
    assert_eq!(numbers(&retry[0]), vec![1]);
    gw.ack(&retry[0]);
    assert!(!gw.vm.root_exists(gw.root));
    assert_eq!(gw.value("messages_sent"), 1);
}

/// `schema_registry.confluent` in asynchronous mode, in virtual time: the root context looks the
/// subject up at a tick (a GET with basic authentication, to the registry's Envoy cluster or
/// Kong's `host:port`); a record accepted before the answer waits, then goes out with the id in
/// the schema's content type.
#[test]
fn schema_registry_lookup_from_the_root_then_batches_with_the_id() {
    for profile in PROFILES {
        let mut confluent = json!({
            "url": "http://registry:8081/sr",
            "authentication": {"mode": "basic", "basic": {"username": "user", "password": "password"}},
            "value_schema": {"subject_name": "orders-value"}
        });
        if profile == Profile::Envoy {
            confluent["upstream"] = json!(ENVOY_CLUSTER);
        }
        let mut gw = Gateway::asynchronous(
            profile,
            json!({
                "rest_proxy": {"format": "json"},
                "message": {"mode": "body"},
                "producer_async_flush_timeout": 20,
                "schema_registry": {"confluent": confluent}
            }),
        );
        gw.accept(1);
        gw.advance(TICK_MS);
        let lookup = gw.root_calls(1).remove(0);
        let registry = match profile {
            Profile::Envoy => ENVOY_CLUSTER,
            Profile::Kong => "registry:8081",
        };
        assert_eq!(lookup.upstream, registry, "{profile}");
        assert_eq!(lookup.header(":method"), Some("GET"), "{profile}");
        assert_eq!(
            lookup.header(":path"),
            Some("/sr/subjects/orders-value/versions/latest"),
            "{profile}"
        );
        assert_eq!(lookup.header(":authority"), Some("registry:8081"), "{profile}");
        assert_eq!(
            lookup.header("authorization"),
            Some("Basic dXNlcjpwYXNzd29yZA=="),
            "{profile}"
        );
        // Nothing is produced before the answer, however long it takes.
        gw.advance(200);
        assert!(gw.calls().iter().all(|c| c.token == lookup.token), "{profile}");
        gw.reply(
            lookup.token,
            200,
            r#"{"subject":"orders-value","version":1,"id":4,"schema":"{}"}"#,
        );
        gw.advance(TICK_MS);
        let batch = gw.root_calls(1).remove(0);
        assert_eq!(
            batch.header("content-type"),
            Some("application/vnd.kafka.avro.v2+json"),
            "{profile}"
        );
        assert_eq!(
            String::from_utf8_lossy(&batch.body),
            r#"{"value_schema_id":4,"records":[{"value":{"n":1}}]}"#,
            "{profile}"
        );
        gw.reply(batch.token, 200, &v2_ack_of(1));
        assert_eq!(gw.value("messages_sent"), 1, "{profile}");
    }
}

/// The body the filter's whole-batch builder writes for the records of `call` (binary format,
/// no key), rebuilt from their values: v2 `{"records":[{"value":"…"},…]}`, v3 the records'
/// objects one per line. Bodies built record by record as requests arrive must be exactly these
/// bytes (issue 15).
fn whole_batch_body(call: &HttpCall, v3: bool) -> String {
    let values = call_values(call);
    let records: Vec<Value> = match values[0].get("records") {
        Some(Value::Array(records)) => records.clone(),
        _ => values,
    };
    let encoded: Vec<String> = records
        .iter()
        .map(|r| match &r["value"] {
            Value::String(s) => format!(r#"{{"value":"{s}"}}"#),
            v => format!(
                r#"{{"value":{{"type":"BINARY","data":"{}"}}}}"#,
                v["data"].as_str().expect("v3 binary data")
            ),
        })
        .collect();
    if v3 {
        encoded.join("\n")
    } else {
        format!(r#"{{"records":[{}]}}"#, encoded.join(","))
    }
}

#[test]
fn a_retry_batch_takes_the_fresh_records_that_fit_and_every_body_is_the_whole_batch_bytes() {
    for v3 in [false, true] {
        for profile in PROFILES {
            let rest_proxy = if v3 {
                json!({"upstream": upstream(profile), "api": "v3", "cluster_id": "lkc-1", "timeout": 60_000})
            } else {
                json!({"upstream": upstream(profile), "timeout": 60_000})
            };
            let mut gw = Gateway::asynchronous(
                profile,
                json!({
                    "rest_proxy": rest_proxy,
                    "producer_request_limits_messages_per_request": 3,
                    "producer_async_flush_timeout": 100,
                    "producer_request_retries_backoff_timeout": 50
                }),
            );
            gw.accept(1);
            gw.accept(2);
            gw.advance(100);
            let first = gw.root_calls(1);
            gw.fail_500(&first[0]);
            // Two fresh records wait (no full batch, their flush timeout 100 ms away) when the
            // retry of 1 and 2 is due (50 ms): it takes one of them, and the other goes on its
            // own at its flush timeout.
            for n in 3..=4 {
                gw.accept(n);
            }
            gw.advance(60);
            let retry = gw.root_calls(1);
            assert_eq!(numbers(&retry[0]), vec![1, 2, 3], "{profile} v3={v3}");
            let ack = |n: usize| {
                if v3 {
                    vec![
                        r#"{"error_code":200,"cluster_id":"lkc-1","topic_name":"orders","partition_id":0,"offset":1}"#;
                        n
                    ]
                    .join("\r\n")
                } else {
                    v2_ack_of(n)
                }
            };
            gw.reply(retry[0].token, 200, &ack(3));
            gw.advance(20);
            gw.root_calls(0);
            gw.advance(20);
            let last = gw.root_calls(1);
            assert_eq!(numbers(&last[0]), vec![4], "{profile} v3={v3}");
            gw.reply(last[0].token, 200, &ack(1));
            for call in first.iter().chain(&retry).chain(&last) {
                assert_eq!(
                    String::from_utf8_lossy(&call.body),
                    whole_batch_body(call, v3),
                    "{profile} v3={v3}"
                );
            }
            assert_eq!(
                [
                    gw.value("messages_sent"),
                    gw.value("messages_failed"),
                    gw.value("messages_dropped"),
                    gw.value("buffer_depth")
                ],
                [4, 2, 0, 0],
                "{profile} v3={v3}"
            );
        }
    }
}
