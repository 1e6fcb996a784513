//! What the client is told by the real `kafka_upstream.wasm`, in both profiles, with failures
//! injected through host-sim: 200 only when every record was acknowledged; 502 for a failed
//! call (broken connection, reset, 5xx, a 4xx envelope such as 40401, a 200 with a per-record
//! error such as 50002, Karapace's 422 carrying the record's own error, an unreadable reply, no offsets, a v3 error_code other than 200, a call
//! the host refuses); 504 for a timeout on the virtual clock; the REST proxy's details with
//! `return_error_message`; 413 before anything is sent; and the request flow each host sees
//! (actions per callback, when the call is made, the request never forwarded upstream).

use crate::filter_common::{
    actions, base64, config, exported_metric, filter_options, v2_message, Gateway, Request, BAD_GATEWAY, CONTINUE,
    FILTER, GATEWAY_TIMEOUT, PAUSE, SENT, TOO_LARGE, TOPIC, V2_ACK, V3_ACK,
};
use host_sim::{CalloutFailure, LogLevel, Profile};
use kafka_upstream_tests::PROFILES;
use serde_json::{json, Value};

/// The documented order of the `rest_proxy` members (README.md, "Answers").
const DETAIL_ORDER: [&str; 5] = ["topic", "status", "error_code", "message", "dispatch_status"];

/// An error answer with `"rest_proxy": details` added, members in the documented order.
fn detailed(answer: &str, details: &Value) -> String {
    let obj = details.as_object().expect("details are an object");
    assert!(
        obj.keys().all(|k| DETAIL_ORDER.contains(&k.as_str())),
        "unknown member in {details}"
    );
    let members: Vec<String> = DETAIL_ORDER
        .iter()
        .filter_map(|k| obj.get(*k).map(|v| format!("\"{k}\":{v}")))
        .collect();
    format!(
        "{},\"rest_proxy\":{{{}}}}}",
        &answer[..answer.len() - 1],
        members.join(",")
    )
}

/// The filter's log line for a failed call, built from the same facts as the details.
fn failure_line(reason: &str, details: &Value) -> String {
    let mut line = format!(
        "kafka-upstream: could not send message to topic {}: {reason}",
        details["topic"].as_str().unwrap()
    );
    if let Some(s) = details.get("status") {
        line.push_str(&format!(", status {s}"));
    }
    if let Some(c) = details.get("error_code") {
        line.push_str(&format!(", error_code {c}"));
    }
    if let Some(m) = details.get("message") {
        line.push_str(&format!(", message {:?}", m.as_str().unwrap()));
    }
    if let Some(d) = details.get("dispatch_status") {
        line.push_str(&format!(", dispatch_status {:?}", d.as_str().unwrap()));
    }
    line
}

/// How a call ends.
#[derive(Debug, Clone)]
enum Inject {
    /// The REST proxy answers.
    Http(u16, &'static str),
    /// The host reports a failure.
    Fail(CalloutFailure),
    /// Nobody answers: the virtual clock passes the call's timeout.
    Timeout,
}

/// The reason in the log line and the `rest_proxy` details, on Envoy and on Kong.
type Detail = [(&'static str, Value); 2];

/// What the client must get.
#[derive(Debug, Clone)]
enum Expect {
    Sent,
    /// 502.
    BadGateway(Detail),
    /// 504.
    Timeout(Detail),
}

/// The same reason and details on both hosts.
fn both(reason: &'static str, v: Value) -> Detail {
    [(reason, v.clone()), (reason, v)]
}

fn v2_cases() -> Vec<(&'static str, Inject, Expect)> {
    vec![
        ("acknowledged", Inject::Http(200, V2_ACK), Expect::Sent),
        (
            "acknowledged, no error_code member (Redpanda)",
            Inject::Http(200, r#"{"offsets":[{"partition":2,"offset":17}]}"#),
            Expect::Sent,
        ),
        ("acknowledged with 201", Inject::Http(201, V2_ACK), Expect::Sent),
        (
            "500 with an error envelope",
            Inject::Http(500, r#"{"error_code":50001,"message":"Internal Server Error"}"#),
            Expect::BadGateway(both(
                "error status",
                json!({"topic":"orders","status":500,"error_code":50001,"message":"Internal Server Error"}),
            )),
        ),
        (
            "500 plain text",
            Inject::Http(500, "oops"),
            Expect::BadGateway(both("error status", json!({"topic":"orders","status":500}))),
        ),
        (
            "503",
            Inject::Http(503, ""),
            Expect::BadGateway(both("error status", json!({"topic":"orders","status":503}))),
        ),
        (
            "200 with per-record 50002",
            Inject::Http(
                200,
                r#"{"offsets":[{"partition":null,"offset":null,"error_code":50002,"error":"Kafka error: Not enough in-sync replicas"}],"key_schema_id":null,"value_schema_id":null}"#,
            ),
            Expect::BadGateway(both(
                "per-record error",
                json!({"topic":"orders","status":200,"error_code":50002,"message":"Kafka error: Not enough in-sync replicas"}),
            )),
        ),
        (
            "200 with per-record 50003 after an acknowledged one",
            Inject::Http(
                200,
                r#"{"offsets":[{"partition":0,"offset":1},{"error_code":50003,"error":"retriable"}]}"#,
            ),
            Expect::BadGateway(both(
                "per-record error",
                json!({"topic":"orders","status":200,"error_code":50003,"message":"retriable"}),
            )),
        ),
        (
            "404 with the 40401 envelope",
            Inject::Http(404, r#"{"error_code":40401,"message":"Topic not found."}"#),
            Expect::BadGateway(both(
                "error status",
                json!({"topic":"orders","status":404,"error_code":40401,"message":"Topic not found."}),
            )),
        ),
        (
            "422 with a 42201 envelope",
            Inject::Http(422, r#"{"error_code":42201,"message":"Unprocessable entity"}"#),
            Expect::BadGateway(both(
                "error status",
                json!({"topic":"orders","status":422,"error_code":42201,"message":"Unprocessable entity"}),
            )),
        ),
        (
            // Karapace answers 422 when a record failed, the record's own error in its entry
            // (Aiven-Open/karapace kafka_rest_apis/__init__.py, publish / produce_messages).
            "422 from Karapace with the record's per-record error",
            Inject::Http(
                422,
                r#"{"key_schema_id":null,"value_schema_id":null,"offsets":[{"partition":null,"offset":null,"error_code":2,"error":"This server does not host this topic-partition."}]}"#,
            ),
            Expect::BadGateway(both(
                "per-record error",
                json!({"topic":"orders","status":422,"error_code":2,"message":"This server does not host this topic-partition."}),
            )),
        ),
        (
            "422 whose offsets do not match the one record",
            Inject::Http(
                422,
                r#"{"offsets":[{"partition":0,"offset":3},{"error_code":1,"error":"x"}]}"#,
            ),
            Expect::BadGateway(both("error status", json!({"topic":"orders","status":422}))),
        ),
        (
            "200 with malformed JSON",
            Inject::Http(200, r#"{"offsets":[{"#),
            Expect::BadGateway(both("unreadable reply", json!({"topic":"orders","status":200}))),
        ),
        (
            "200 with an empty body",
            Inject::Http(200, ""),
            Expect::BadGateway(both("unreadable reply", json!({"topic":"orders","status":200}))),
        ),
        (
            "200 with a JSON array",
            Inject::Http(200, "[]"),
            Expect::BadGateway(both("unreadable reply", json!({"topic":"orders","status":200}))),
        ),
        (
            "200 with empty offsets",
            Inject::Http(200, r#"{"offsets":[]}"#),
            Expect::BadGateway(both("reply without offsets", json!({"topic":"orders","status":200}))),
        ),
        (
            "200 without offsets",
            Inject::Http(200, r#"{"key_schema_id":null}"#),
            Expect::BadGateway(both("reply without offsets", json!({"topic":"orders","status":200}))),
        ),
        (
            "504 from the REST proxy",
            Inject::Http(504, ""),
            Expect::Timeout(both("timed out", json!({"topic":"orders","status":504}))),
        ),
        (
            "broken connection",
            Inject::Fail(CalloutFailure::BrokenConnection),
            // Envoy's async client answers with a local 503; Kong sets :dispatch_status.
            Expect::BadGateway([
                ("error status", json!({"topic":"orders","status":503})),
                (
                    "no reply",
                    json!({"topic":"orders","dispatch_status":"broken connection"}),
                ),
            ]),
        ),
        (
            "reset",
            Inject::Fail(CalloutFailure::Reset),
            // Envoy: no headers at all; Kong: :dispatch_status.
            Expect::BadGateway([
                ("no reply", json!({"topic":"orders"})),
                ("no reply", json!({"topic":"orders","dispatch_status":"reader failure"})),
            ]),
        ),
        (
            "timeout",
            Inject::Timeout,
            Expect::Timeout([
                ("timed out", json!({"topic":"orders","status":504})),
                ("timed out", json!({"topic":"orders","dispatch_status":"timeout"})),
            ]),
        ),
    ]
}

fn v3_cases() -> Vec<(&'static str, Inject, Expect)> {
    vec![
        ("acknowledged", Inject::Http(200, V3_ACK), Expect::Sent),
        (
            "200 with error_code 400",
            Inject::Http(200, r#"{"error_code":400,"message":"Bad Request: record too large"}"#),
            Expect::BadGateway(both(
                "record error",
                json!({"topic":"orders","status":200,"error_code":400,"message":"Bad Request: record too large"}),
            )),
        ),
        (
            "200 without error_code",
            Inject::Http(200, r#"{"cluster_id":"lkc-1","offset":1}"#),
            Expect::BadGateway(both("reply without error_code", json!({"topic":"orders","status":200}))),
        ),
        (
            "404 envelope",
            Inject::Http(
                404,
                r#"{"error_code":404,"message":"This server does not host this topic-partition."}"#,
            ),
            Expect::BadGateway(both(
                "error status",
                json!({"topic":"orders","status":404,"error_code":404,"message":"This server does not host this topic-partition."}),
            )),
        ),
        (
            "200 malformed",
            Inject::Http(200, "{"),
            Expect::BadGateway(both("unreadable reply", json!({"topic":"orders","status":200}))),
        ),
        (
            "timeout",
            Inject::Timeout,
            Expect::Timeout([
                ("timed out", json!({"topic":"orders","status":504})),
                ("timed out", json!({"topic":"orders","dispatch_status":"timeout"})),
            ]),
        ),
    ]
}

/// Runs one case on `profile` with `rest_proxy` settings, with and without details.
fn run_case(profile: Profile, rest_proxy: &Value, name: &str, inject: &Inject, expect: &Expect) {
    for detail in [false, true] {
        let cfg = config(
            profile,
            json!({"rest_proxy": rest_proxy, "error_handling": {"return_error_message": detail}}),
        );
        let context = format!("{profile} {name} (return_error_message={detail})");
        let timeout_ms = cfg["rest_proxy"]["timeout"].as_u64().unwrap_or(10_000);
        let mut gw = Gateway::new(profile, &cfg);
        let stream = gw.send(&Request::post("/", Some("application/json"), br#"{"id":1}"#));
        let call = gw.only_call();
        match inject {
            Inject::Http(status, body) => gw.reply(call.token, *status, body),
            Inject::Fail(f) => gw.fail(call.token, *f),
            Inject::Timeout => {
                gw.advance(timeout_ms - 1);
                assert!(!gw.answered(stream), "{context}: answered before the timeout");
                assert_eq!(gw.calls().len(), 1, "{context}: the call is still in flight");
                gw.advance(1);
                assert!(gw.calls().is_empty(), "{context}: the host gave up on the call");
            }
        }
        let errors = gw.logs_at(LogLevel::Error);
        match expect {
            Expect::Sent => {
                assert_eq!(gw.answer(stream), (200, SENT.to_string()), "{context}");
                assert!(errors.is_empty(), "{context}: {errors:?}");
            }
            Expect::BadGateway(per_host) | Expect::Timeout(per_host) => {
                let (status, plain) = match expect {
                    Expect::BadGateway(..) => (502, BAD_GATEWAY),
                    _ => (504, GATEWAY_TIMEOUT),
                };
                let (reason, details) = &per_host[if profile == Profile::Envoy { 0 } else { 1 }];
                let body = if detail {
                    detailed(plain, details)
                } else {
                    plain.to_string()
                };
                assert_eq!(gw.answer(stream), (status, body), "{context}");
                assert_eq!(errors, vec![failure_line(reason, details)], "{context}");
            }
        }
        assert!(gw.calls().is_empty(), "{context}");
    }
}

#[test]
fn v2_replies_and_failures() {
    for profile in PROFILES {
        for (name, inject, expect) in v2_cases() {
            run_case(profile, &json!({"timeout": 2500}), name, &inject, &expect);
        }
    }
}

#[test]
fn v3_replies_and_failures() {
    for profile in PROFILES {
        for (name, inject, expect) in v3_cases() {
            run_case(
                profile,
                &json!({"api": "v3", "cluster_id": "lkc-1"}),
                name,
                &inject,
                &expect,
            );
        }
    }
}

#[test]
fn rest_proxy_messages_are_escaped_and_capped_in_the_answer() {
    let long = "x".repeat(2000);
    let cases = [
        (
            r#"{"error_code":40401,"message":"Topic \"a/b\" not found\n\u00e9"}"#.to_string(),
            "Topic \"a/b\" not found\né".to_string(),
        ),
        (
            format!(r#"{{"error_code":50001,"message":"{long}"}}"#),
            "x".repeat(1024),
        ),
    ];
    for profile in PROFILES {
        for (reply, message) in &cases {
            let cfg = config(profile, json!({"error_handling": {"return_error_message": true}}));
            let mut gw = Gateway::new(profile, &cfg);
            let stream = gw.send(&Request::get("/"));
            let call = gw.only_call();
            gw.reply(call.token, 404, reply);
            let code = serde_json::from_str::<Value>(reply).unwrap()["error_code"].clone();
            let details = json!({"topic": "orders", "status": 404, "error_code": code, "message": message});
            assert_eq!(gw.answer(stream), (502, detailed(BAD_GATEWAY, &details)), "{profile}");
            assert_eq!(
                gw.logs_at(LogLevel::Error),
                vec![failure_line("error status", &details)],
                "{profile}"
            );
        }
    }
}

#[test]
fn the_default_timeout_is_ten_seconds() {
    for profile in PROFILES {
        let mut gw = Gateway::new(profile, &config(profile, json!({})));
        let stream = gw.send(&Request::get("/"));
        gw.advance(9_999);
        assert!(!gw.answered(stream), "{profile}");
        gw.advance(1);
        assert_eq!(gw.answer(stream), (504, GATEWAY_TIMEOUT.to_string()), "{profile}");
    }
}

#[test]
fn a_call_the_host_refuses_is_502_at_once() {
    // Envoy: a cluster it does not know; Kong: an upstream that is not host[:port].
    for (profile, up) in [(Profile::Envoy, "no_such_cluster"), (Profile::Kong, "not a host")] {
        for detail in [false, true] {
            let cfg = config(
                profile,
                json!({"rest_proxy": {"upstream": up}, "error_handling": {"return_error_message": detail}}),
            );
            let mut gw = Gateway::new(profile, &cfg);
            let stream = gw.send(&Request::get("/"));
            let details = json!({"topic":"orders","dispatch_status":"call rejected by the host: BadArgument"});
            let body = if detail {
                detailed(BAD_GATEWAY, &details)
            } else {
                BAD_GATEWAY.to_string()
            };
            assert_eq!(gw.answer(stream), (502, body), "{profile}");
            assert!(gw.calls().is_empty(), "{profile}");
            assert_eq!(
                gw.actions(stream),
                actions(&[("on_request_headers", PAUSE)]),
                "{profile}"
            );
            assert_eq!(
                gw.logs_at(LogLevel::Error),
                vec![
                    format!("proxy_http_call: unknown upstream {up:?}"),
                    failure_line("call rejected", &details)
                ],
                "{profile}"
            );
        }
    }
}

// ---- several topics ----------------------------------------------------------------------------

fn multi(profile: Profile, detail: bool) -> (Gateway, u32, u32, u32) {
    let cfg = config(
        profile,
        json!({
            "topics_query_arg": "tl", "allowed_topics": ["orders-eu", "orders-us"],
            "rest_proxy": {"timeout": 1000}, "error_handling": {"return_error_message": detail}
        }),
    );
    let mut gw = Gateway::new(profile, &cfg);
    let stream = gw.send(&Request::get("/?tl=orders-eu,orders-us"));
    let calls = gw.calls();
    assert_eq!(calls.len(), 2, "{profile}");
    assert_eq!(calls[0].header(":path"), Some("/topics/orders-eu"));
    assert_eq!(calls[1].header(":path"), Some("/topics/orders-us"));
    (gw, stream, calls[0].token, calls[1].token)
}

#[test]
fn several_topics_200_only_when_every_record_is_acknowledged() {
    for profile in PROFILES {
        // Both acknowledged, in either order.
        for reverse in [false, true] {
            let (mut gw, stream, eu, us) = multi(profile, false);
            let (first, second) = if reverse { (us, eu) } else { (eu, us) };
            gw.reply(first, 200, V2_ACK);
            assert!(!gw.answered(stream), "{profile}: answered with a call in flight");
            gw.reply(second, 200, V2_ACK);
            assert_eq!(gw.answer(stream), (200, SENT.to_string()), "{profile}");
        }

        // One per-record error: 502 naming that topic, once the other is back too.
        let (mut gw, stream, eu, us) = multi(profile, true);
        gw.reply(us, 200, r#"{"offsets":[{"error_code":50002,"error":"boom"}]}"#);
        assert!(!gw.answered(stream), "{profile}: answered with a call in flight");
        gw.reply(eu, 200, V2_ACK);
        let details = json!({"topic":"orders-us","status":200,"error_code":50002,"message":"boom"});
        assert_eq!(gw.answer(stream), (502, detailed(BAD_GATEWAY, &details)), "{profile}");
        assert_eq!(
            gw.logs_at(LogLevel::Error),
            vec![failure_line("per-record error", &details)],
            "{profile}"
        );

        // One timed out, the other acknowledged: 504.
        let (mut gw, stream, eu, _) = multi(profile, false);
        gw.reply(eu, 200, V2_ACK);
        gw.advance(1000);
        assert_eq!(gw.answer(stream), (504, GATEWAY_TIMEOUT.to_string()), "{profile}");

        // A failure outranks a timeout.
        let (mut gw, stream, _, us) = multi(profile, true);
        gw.reply(us, 500, r#"{"error_code":50001,"message":"down"}"#);
        gw.advance(1000);
        let details = json!({"topic":"orders-us","status":500,"error_code":50001,"message":"down"});
        assert_eq!(gw.answer(stream), (502, detailed(BAD_GATEWAY, &details)), "{profile}");

        // Both broken.
        let (mut gw, stream, eu, us) = multi(profile, false);
        gw.fail(eu, CalloutFailure::BrokenConnection);
        gw.fail(us, CalloutFailure::Reset);
        assert_eq!(gw.answer(stream), (502, BAD_GATEWAY.to_string()), "{profile}");
        assert_eq!(
            gw.logs_at(LogLevel::Error).len(),
            2,
            "{profile}: one line per failed topic"
        );
    }
}

#[test]
fn concurrent_requests_are_answered_independently() {
    for profile in PROFILES {
        let mut gw = Gateway::new(profile, &config(profile, json!({})));
        let a = gw.send(&Request::post("/a", Some("text/plain"), b"a"));
        let b = gw.send(&Request::post("/b", Some("text/plain"), b"b"));
        let calls = gw.calls();
        assert_eq!(calls.len(), 2, "{profile}");
        assert_eq!(calls[0].context_id, a);
        assert_eq!(calls[1].context_id, b);
        gw.reply(calls[1].token, 200, r#"{"offsets":[{"error_code":50002,"error":"x"}]}"#);
        assert_eq!(gw.answer(b), (502, BAD_GATEWAY.to_string()), "{profile}");
        assert!(!gw.answered(a), "{profile}");
        gw.reply(calls[0].token, 200, V2_ACK);
        assert_eq!(gw.answer(a), (200, SENT.to_string()), "{profile}");
    }
}

// ---- 413 -----------------------------------------------------------------------------------

fn limited(profile: Profile, max: u64) -> Gateway {
    Gateway::new(profile, &config(profile, json!({"max_body_size": max})))
}

#[test]
fn content_length_over_the_limit_is_413_before_any_call() {
    for profile in PROFILES {
        let mut gw = limited(profile, 10);
        let stream = gw.vm.create_http_stream(gw.root).unwrap();
        let req = Request::post("/", Some("text/plain"), b"01234567890");
        let action = gw.vm.send_request_headers(stream, &req.headers, false).unwrap();
        assert_eq!(action, Some(host_sim::Action::Pause), "{profile}");
        assert_eq!(gw.answer(stream), (413, TOO_LARGE.to_string()), "{profile}");
        assert!(gw.calls().is_empty(), "{profile}");
        // The host no longer calls the filter for the body.
        assert_eq!(
            gw.vm.send_request_body(stream, b"01234567890", true).unwrap(),
            None,
            "{profile}"
        );
        assert_eq!(
            gw.actions(stream),
            actions(&[("on_request_headers", PAUSE)]),
            "{profile}"
        );
        assert!(!gw.vm.request_headers_forwarded(stream), "{profile}");
        assert!(gw.logs_at(LogLevel::Error).is_empty(), "{profile}");
    }
}

#[test]
fn the_default_limit_is_one_mebibyte_and_applies_without_forward_body() {
    for profile in PROFILES {
        for patch in [json!({}), json!({"forward_body": false, "forward_method": true})] {
            let mut gw = Gateway::new(profile, &config(profile, patch.clone()));
            let stream = gw.vm.create_http_stream(gw.root).unwrap();
            let headers = Request::new("POST", "/").header("content-length", "1048577").headers;
            gw.vm.send_request_headers(stream, &headers, false).unwrap();
            assert_eq!(gw.answer(stream), (413, TOO_LARGE.to_string()), "{profile} {patch}");
            assert!(gw.calls().is_empty(), "{profile} {patch}");
        }
        // Kong keeps the body readable only with a client body buffer that large.
        let mut gw = Gateway::with_client_body_buffer(profile, &config(profile, json!({})), 1 << 20);
        let body = vec![7u8; 1 << 20];
        let call = gw.produce(&Request::post("/", Some("application/octet-stream"), &body));
        assert_eq!(
            v2_message(&call),
            format!(r#"{{"body":"{}","body_args":{{}},"body_base64":true}}"#, base64(&body)),
            "{profile}: exactly 1 MiB is accepted"
        );
    }
}

#[test]
fn a_body_of_exactly_the_limit_is_sent() {
    for profile in PROFILES {
        let mut gw = limited(profile, 10);
        let call = gw.produce(&Request::post("/", Some("text/plain"), b"0123456789"));
        assert_eq!(
            v2_message(&call),
            r#"{"body":"0123456789","body_args":{}}"#,
            "{profile}"
        );

        // max_body_size 0: bodiless requests only.
        let mut gw = limited(profile, 0);
        gw.produce(&Request::get("/"));
        let stream = gw.send(&Request::post("/", Some("text/plain"), b"x"));
        assert_eq!(gw.answer(stream), (413, TOO_LARGE.to_string()), "{profile}");
    }
}

#[test]
fn a_streamed_body_over_the_limit_is_413_before_any_call() {
    // No content-length: the size is only known while the body arrives.
    let req = Request::new("POST", "/")
        .header("content-type", "text/plain")
        .header("transfer-encoding", "chunked")
        .chunk(b"0123")
        .chunk(b"4567")
        .chunk(b"89ab")
        .chunk(b"cdef");
    for profile in PROFILES {
        let mut gw = limited(profile, 10);
        let stream = gw.send(&req);
        assert_eq!(gw.answer(stream), (413, TOO_LARGE.to_string()), "{profile}");
        assert!(gw.calls().is_empty(), "{profile}");
        let expected = match profile {
            // Envoy: chunk by chunk, cumulative size 4, 8, 12 → 413 at the third; the fourth is
            // not delivered.
            Profile::Envoy => actions(&[
                ("on_request_headers", CONTINUE),
                ("on_request_body", PAUSE),
                ("on_request_body", PAUSE),
                ("on_request_body", PAUSE),
            ]),
            // Kong: the whole body once.
            Profile::Kong => actions(&[("on_request_headers", CONTINUE), ("on_request_body", PAUSE)]),
        };
        assert_eq!(gw.actions(stream), expected, "{profile}");
    }
}

// ---- flow --------------------------------------------------------------------------------------

#[test]
fn a_bodiless_request_is_dispatched_from_the_headers_and_paused() {
    // Envoy passes end_of_stream=true; Kong passes false but the request has neither a positive
    // content-length nor a transfer-encoding.
    for profile in PROFILES {
        for req in [
            Request::get("/"),
            Request::new("DELETE", "/x?y=1"),
            Request::new("POST", "/").header("content-length", "0"),
        ] {
            let mut gw = Gateway::new(profile, &config(profile, json!({"forward_method": true})));
            let stream = gw.vm.create_http_stream(gw.root).unwrap();
            let action = gw.vm.send_request_headers(stream, &req.headers, true).unwrap();
            assert_eq!(action, Some(host_sim::Action::Pause), "{profile}");
            let call = gw.only_call();
            assert_eq!(gw.vm.request_paused_in(stream), Some("on_request_headers"), "{profile}");
            assert!(!gw.vm.request_headers_forwarded(stream), "{profile}");
            gw.reply(call.token, 200, V2_ACK);
            assert_eq!(gw.answer(stream), (200, SENT.to_string()), "{profile}");
            assert_eq!(
                gw.actions(stream),
                actions(&[("on_request_headers", PAUSE), ("on_http_call_response", None)]),
                "{profile}"
            );
        }
    }
}

#[test]
fn kong_passes_end_of_stream_false_yet_a_get_dispatches_at_the_headers() {
    // Explicitly the Kong shape: headers with end_of_stream=false and no body callback ever.
    let mut gw = Gateway::new(Profile::Kong, &config(Profile::Kong, json!({})));
    let stream = gw.vm.create_http_stream(gw.root).unwrap();
    let action = gw
        .vm
        .send_request_headers(stream, &Request::get("/").headers, false)
        .unwrap();
    assert_eq!(action, Some(host_sim::Action::Pause));
    let call = gw.only_call();
    assert_eq!(v2_message(&call), r#"{"body":"","body_args":{},"body_base64":true}"#);
    gw.reply(call.token, 200, V2_ACK);
    assert_eq!(gw.answer(stream), (200, SENT.to_string()));
}

#[test]
fn a_body_continues_from_the_headers_and_pauses_in_the_body() {
    let req = Request::new("POST", "/")
        .header("content-type", "application/json")
        .header("content-length", "8")
        .chunk(br#"{"id":"#)
        .chunk(b"1}");
    for profile in PROFILES {
        let mut gw = Gateway::new(profile, &config(profile, json!({})));
        let stream = gw.vm.create_http_stream(gw.root).unwrap();
        assert_eq!(
            gw.vm.send_request_headers(stream, &req.headers, false).unwrap(),
            Some(host_sim::Action::Continue)
        );
        assert!(gw.calls().is_empty(), "{profile}: nothing sent before the body");
        gw.vm.send_request_body(stream, &req.chunks[0], false).unwrap();
        assert!(
            gw.calls().is_empty(),
            "{profile}: nothing sent before the end of the body"
        );
        gw.vm.send_request_body(stream, &req.chunks[1], true).unwrap();
        let call = gw.only_call();
        assert_eq!(
            v2_message(&call),
            r#"{"body":"{\"id\":1}","body_args":{"id":1}}"#,
            "{profile}"
        );
        assert_eq!(gw.vm.request_paused_in(stream), Some("on_request_body"), "{profile}");
        gw.reply(call.token, 200, V2_ACK);
        assert_eq!(gw.answer(stream), (200, SENT.to_string()), "{profile}");
        let expected = match profile {
            Profile::Envoy => actions(&[
                ("on_request_headers", CONTINUE),
                ("on_request_body", PAUSE),
                ("on_request_body", PAUSE),
                ("on_http_call_response", None),
            ]),
            Profile::Kong => actions(&[
                ("on_request_headers", CONTINUE),
                ("on_request_body", PAUSE),
                ("on_http_call_response", None),
            ]),
        };
        assert_eq!(gw.actions(stream), expected, "{profile}");
    }
}

#[test]
fn transfer_encoding_without_content_length_waits_for_the_body() {
    for profile in PROFILES {
        let req = Request::new("PUT", "/")
            .header("content-type", "text/plain")
            .header("transfer-encoding", "chunked")
            .chunk(b"abc")
            .chunk(b"def");
        let mut gw = Gateway::new(profile, &config(profile, json!({})));
        let call = gw.produce(&req);
        assert_eq!(v2_message(&call), r#"{"body":"abcdef","body_args":{}}"#, "{profile}");
        // A chunked body that turns out empty: filter_request_shapes.rs (Kong delivers none).
    }
}

#[test]
fn request_trailers_end_the_body() {
    let req = Request::new("POST", "/")
        .header("content-type", "text/plain")
        .header("content-length", "6")
        .chunk(b"abc")
        .chunk(b"def")
        .trailers(&[("x-checksum", "1")]);
    for profile in PROFILES {
        let mut gw = Gateway::new(profile, &config(profile, json!({})));
        let stream = gw.send(&req);
        let call = gw.only_call();
        assert_eq!(v2_message(&call), r#"{"body":"abcdef","body_args":{}}"#, "{profile}");
        gw.reply(call.token, 200, V2_ACK);
        assert_eq!(gw.answer(stream), (200, SENT.to_string()), "{profile}");
        if profile == Profile::Envoy {
            // Kong (ngx_wasm_module) has no request trailers support; only Envoy's sequence is
            // asserted.
            assert_eq!(
                gw.actions(stream),
                actions(&[
                    ("on_request_headers", CONTINUE),
                    ("on_request_body", PAUSE),
                    ("on_request_body", PAUSE),
                    ("on_request_trailers", PAUSE),
                    ("on_http_call_response", None),
                ])
            );
        }
    }
}

#[test]
fn a_body_without_length_headers_is_awaited_only_where_end_of_stream_is_real() {
    // Envoy strips Transfer-Encoding from a chunked request (seen in the e2e suite with Envoy
    // 1.40): end_of_stream=false on the headers is the only sign of a body, and it is real.
    let mut gw = Gateway::new(Profile::Envoy, &config(Profile::Envoy, json!({})));
    let stream = gw.vm.create_http_stream(gw.root).unwrap();
    let headers = Request::new("POST", "/").header("content-type", "text/plain").headers;
    assert_eq!(
        gw.vm.send_request_headers(stream, &headers, false).unwrap(),
        Some(host_sim::Action::Continue)
    );
    assert!(gw.calls().is_empty(), "nothing is sent before the body");
    assert_eq!(
        gw.vm.send_request_body(stream, b"chunked", true).unwrap(),
        Some(host_sim::Action::Pause)
    );
    let call = gw.only_call();
    assert_eq!(v2_message(&call), r#"{"body":"chunked","body_args":{}}"#);
    gw.reply(call.token, 200, V2_ACK);
    assert_eq!(gw.answer(stream), (200, SENT.to_string()));

    // Kong passes end_of_stream=false for every request and never calls on_request_body for one
    // without a body: with neither content-length nor transfer-encoding the request is complete.
    let mut gw = Gateway::new(Profile::Kong, &config(Profile::Kong, json!({})));
    let stream = gw.vm.create_http_stream(gw.root).unwrap();
    assert_eq!(
        gw.vm.send_request_headers(stream, &headers, false).unwrap(),
        Some(host_sim::Action::Pause)
    );
    let call = gw.only_call();
    assert_eq!(v2_message(&call), r#"{"body":"","body_args":{}}"#);
    gw.reply(call.token, 200, V2_ACK);
    assert_eq!(gw.answer(stream), (200, SENT.to_string()));
}

#[test]
fn a_client_that_goes_away_leaves_nothing_behind() {
    for profile in PROFILES {
        let mut gw = Gateway::new(profile, &config(profile, json!({})));
        let stream = gw.send(&Request::get("/"));
        assert_eq!(gw.calls().len(), 1);
        gw.finish(stream);
        assert!(gw.calls().is_empty(), "{profile}: the host cancels the call");
        assert!(!gw.vm.stream_exists(stream), "{profile}");
        assert!(gw.vm.failure().is_none(), "{profile}");
        assert_eq!(gw.problems(), Vec::<String>::new(), "{profile}");
        // The VM keeps serving.
        gw.produce(&Request::get("/"));
    }
}

#[test]
fn one_record_per_request_topic_and_payload_unchanged_by_the_outcome_path() {
    // The same request through a failing and then a succeeding call produces the same record.
    for profile in PROFILES {
        let mut gw = Gateway::new(profile, &config(profile, json!({})));
        let req = Request::post("/", Some("application/json"), br#"{"n":1}"#);
        let s1 = gw.send(&req);
        let first = gw.only_call();
        gw.reply(first.token, 500, "");
        assert_eq!(gw.answer(s1).0, 502);
        let second = gw.produce(&req);
        assert_eq!(first.body, second.body, "{profile}");
        assert_eq!(first.headers, second.headers, "{profile}");
        assert_eq!(second.header(":path"), Some(format!("/topics/{TOPIC}").as_str()));
    }
}

// ---- metrics -----------------------------------------------------------------------------------

#[test]
fn synchronous_mode_counts_answers_records_and_calls() {
    for profile in PROFILES {
        let cfg = config(
            profile,
            json!({"rest_proxy": {"timeout": 2500}, "topics_query_arg": "topic-list", "max_body_size": 4}),
        );
        let mut gw = Gateway::new(profile, &cfg);
        // Acknowledged after 30 ms of virtual time.
        let ok = gw.send(&Request::get("/"));
        let call = gw.only_call();
        gw.advance(30);
        gw.reply(call.token, 200, V2_ACK);
        // Karapace's 422 with the record's own error.
        let refused = gw.send(&Request::get("/"));
        let call = gw.only_call();
        gw.reply(
            call.token,
            422,
            r#"{"key_schema_id":null,"value_schema_id":null,"offsets":[{"partition":null,"offset":null,"error_code":1,"error":"MessageSizeTooLargeError"}]}"#,
        );
        // A timeout, a topic outside the allowlist, a body too large.
        let late = gw.send(&Request::get("/"));
        gw.advance(2500);
        let not_allowed = gw.send(&Request::get("/?topic-list=elsewhere"));
        let too_large = gw.send(&Request::post("/", Some("application/json"), br#"{"id":1}"#));
        let statuses: Vec<u32> = [ok, refused, late, not_allowed, too_large]
            .iter()
            .map(|s| gw.answer(*s).0)
            .collect();
        assert_eq!(statuses, vec![200, 502, 504, 400, 413], "{profile}");
        let counters = [
            "requests_200",
            "requests_400",
            "requests_413",
            "requests_5xx",
            "messages_sent",
            "messages_failed",
            "rest_calls_2xx",
            "rest_calls_4xx",
            "rest_calls_5xx",
            "rest_calls_timeout",
            "rest_calls_no_reply",
            "buffer_depth",
        ]
        .map(|name| gw.metric(name).value);
        assert_eq!(counters, [1, 1, 1, 2, 1, 2, 1, 1, 0, 1, 0, 0], "{profile}");
        assert_eq!(
            gw.metric("rest_call_latency_ms").samples,
            vec![30, 0, 2500],
            "{profile}"
        );
    }
}

#[test]
fn a_call_the_host_refuses_counts_as_no_reply() {
    for (profile, up) in [(Profile::Envoy, "no_such_cluster"), (Profile::Kong, "not a host")] {
        let mut gw = Gateway::new(profile, &config(profile, json!({"rest_proxy": {"upstream": up}})));
        let stream = gw.send(&Request::get("/"));
        assert_eq!(gw.answer(stream).0, 502, "{profile}");
        let counts = ["rest_calls_no_reply", "messages_failed", "requests_5xx"].map(|name| gw.metric(name).value);
        assert_eq!(counts, [1, 1, 1], "{profile}");
        assert!(gw.metric("rest_call_latency_ms").samples.is_empty());
    }
}

#[test]
fn metric_names_follow_the_prefix_or_the_root_id() {
    for profile in PROFILES {
        // `metrics.prefix`.
        let mut gw = Gateway::new(profile, &config(profile, json!({"metrics": {"prefix": "orders.eu-1"}})));
        gw.produce(&Request::get("/"));
        assert_eq!(
            gw.metric_with_prefix("orders.eu-1", "messages_sent").value,
            1,
            "{profile}"
        );
        assert!(
            !gw.vm
                .metrics()
                .keys()
                .any(|k| k.contains("kafka_upstream.messages_sent")),
            "{profile}: {:?}",
            gw.vm.metrics().keys()
        );

        // Two instances in one VM: an Envoy root_id names them apart; Kong's numeric root id
        // is not used, so there `metrics.prefix` is the way.
        let mut vm = kafka_upstream_tests::start_with(&kafka_upstream_tests::load(FILTER), filter_options(profile));
        let cfg = config(profile, json!({}));
        let a = vm
            .create_root_context("orders-edge", cfg.to_string().as_bytes())
            .unwrap();
        let b = vm.create_root_context("", cfg.to_string().as_bytes()).unwrap();
        assert!(a.configure_ok && b.configure_ok, "{profile}");
        let names: Vec<String> = vm.metrics().into_keys().collect();
        let expect = |prefix: &str| exported_metric(profile, prefix, "messages_sent");
        assert!(names.contains(&expect("kafka_upstream")), "{profile}: {names:?}");
        match profile {
            Profile::Envoy => assert!(names.contains(&expect("orders-edge")), "{names:?}"),
            Profile::Kong => assert!(
                names.iter().all(|n| n.starts_with("pw.kafka_upstream.kafka_upstream.")),
                "{names:?}"
            ),
        }
    }
}

#[test]
fn an_invalid_metrics_prefix_is_rejected() {
    for profile in PROFILES {
        for prefix in [json!(""), json!("a..b"), json!("a b"), json!(7)] {
            let cfg = config(profile, json!({"metrics": {"prefix": prefix}}));
            let gw = Gateway::with_config_bytes(profile, cfg.to_string().as_bytes());
            assert!(!gw.configure_ok, "{profile}: {cfg}");
            let errors = gw.logs_at(LogLevel::Error);
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with("kafka-upstream: invalid configuration: metrics.prefix: ")),
                "{profile}: {errors:?}"
            );
        }
    }
}
