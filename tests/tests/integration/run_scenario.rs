//! `host-sim run`'s driver ([`host_sim::scenario::run_scenario`]) on the real `.wasm` files: the
//! response phase from an upstream response file, gRPC calls answered from files, and the
//! virtual clock moved in `--advance-ms` steps (ticks, call timeouts, what each step did), with
//! `abi_probe.wasm` (test-filters/abi-probe) and the asynchronous producer of
//! `kafka_upstream.wasm`, whose tick flushes the batch.

use host_sim::scenario::{run_scenario, ScenarioInput, ScenarioOptions};
use host_sim::transcript::{
    CallOutcome, CallResponseFile, GrpcResponseFile, RequestFile, ResponseSource, Transcript, UpstreamResponseFile,
};
use host_sim::Profile;
use kafka_upstream_tests::{headers, load, PROFILES};
use serde_json::{json, Value};

/// Runs `abi_probe.wasm` with plugin configuration `config` on `profile`.
fn probe(profile: Profile, config: &str, input: &ScenarioInput) -> Transcript {
    let mut options = ScenarioOptions::new(profile);
    options.configuration = config.as_bytes().to_vec();
    run_scenario(&load("abi_probe"), &options, input).unwrap_or_else(|e| panic!("{profile}: {e}"))
}

/// A GET with `x-probe: scenario` and the other `x-*` headers of `extra`.
fn probe_request(scenario: &str, extra: &[(&str, &str)]) -> RequestFile {
    let mut all = headers(&[
        (":method", "GET"),
        (":path", "/"),
        (":authority", "h"),
        ("x-probe", scenario),
    ]);
    all.extend(headers(extra));
    RequestFile {
        headers: all,
        ..RequestFile::default()
    }
}

fn upstream_response(json: &str) -> UpstreamResponseFile {
    UpstreamResponseFile::from_json(json.as_bytes()).unwrap()
}

fn call_response(json: &str) -> CallResponseFile {
    CallResponseFile::from_json(json.as_bytes()).unwrap()
}

fn grpc_response(json: &str) -> GrpcResponseFile {
    GrpcResponseFile::from_json(json.as_bytes()).unwrap()
}

fn callbacks(t: &Transcript) -> Vec<&str> {
    t.actions.iter().map(|a| a.callback.as_str()).collect()
}

/// The probe's `probe:<event>` reports in the transcript's logs, parsed.
fn reports(t: &Transcript, event: &str) -> Vec<Value> {
    let prefix = format!("probe:{event} ");
    t.logs
        .iter()
        .filter_map(|l| l.message.strip_prefix(&prefix))
        .map(|json| serde_json::from_str(json).unwrap())
        .collect()
}

/// The HTTP date of `run`'s virtual clock when a scenario starts (2024-01-01T00:00:00Z).
const VIRTUAL_DATE: &str = "Mon, 01 Jan 2024 00:00:00 GMT";

/// The profile's end of a stream.
fn stream_end(profile: Profile) -> [&'static str; 3] {
    match profile {
        Profile::Envoy => ["on_log", "on_done", "on_delete"],
        Profile::Kong => ["on_done", "on_log", "on_delete"],
    }
}

#[test]
fn the_upstream_response_goes_through_the_filter_and_the_client_gets_its_edits() {
    for profile in PROFILES {
        let input = ScenarioInput {
            request: probe_request("response_headers", &[]),
            upstream_response: Some(upstream_response(
                r#"{"status":201,"headers":[["x-resp-replace","old"],["x-resp-remove","x"],["content-type","text/plain"]],
                   "body":"hello","chunk_sizes":[2,3],"trailers":[["t","1"]]}"#,
            )),
            ..ScenarioInput::default()
        };
        let t = probe(profile, "", &input);
        let mut expected = vec![
            "on_request_headers",
            "on_response_headers",
            "on_response_body",
            "on_response_body",
            "on_response_trailers",
        ];
        expected.extend(stream_end(profile));
        assert_eq!(callbacks(&t), expected, "{profile}");
        let bodies: Vec<(String, bool)> = reports(&t, "response_body")
            .iter()
            .map(|r| (r["body"].as_str().unwrap().to_string(), r["eos"].as_bool().unwrap()))
            .collect();
        assert_eq!(bodies, vec![("he".into(), false), ("llo".into(), false)], "{profile}");
        let ops = &reports(&t, "response_headers_ops")[0];
        assert_eq!(ops["status"], "201", "{profile}");
        let client = t.client_response.as_ref().expect("a client response");
        assert_eq!(client.source, ResponseSource::Upstream);
        assert_eq!(client.status, Some(201), "{profile}");
        // Kong's filter sees the response in nginx's map (shims first, nginx's own Server and
        // Date, dated by run's virtual clock), as `serve` presents it.
        let expected = match profile {
            Profile::Envoy => headers(&[
                ("x-resp-replace", "new"),
                ("content-type", "text/plain"),
                ("x-resp-added", "1"),
            ]),
            Profile::Kong => headers(&[
                ("content-type", "text/plain"),
                ("connection", "keep-alive"),
                ("x-resp-replace", "new"),
                ("server", "nginx"),
                ("date", VIRTUAL_DATE),
                ("x-resp-added", "1"),
            ]),
        };
        assert_eq!(client.headers, expected, "{profile}");
        assert_eq!(client.body_bytes().unwrap(), b"hello");
        assert_eq!(client.trailers, headers(&[("t", "1")]), "{profile}");
        assert!(
            client.complete && !client.reset && client.paused_in.is_none(),
            "{profile}"
        );
        let used = t.upstream_response.as_ref().unwrap();
        assert!(used.used && used.why_not.is_none(), "{profile}");
        assert!(t.forwarded_upstream, "{profile}");
    }
}

#[test]
fn a_rewritten_response_body_reaches_the_client_with_the_upstreams_headers_as_left() {
    for profile in PROFILES {
        let input = ScenarioInput {
            request: probe_request("response_body", &[("x-body-op", "append")]),
            upstream_response: Some(upstream_response(
                r#"{"status":200,"headers":[["content-length","5"]],"body":"hello"}"#,
            )),
            ..ScenarioInput::default()
        };
        let t = probe(profile, "", &input);
        let client = t.client_response.as_ref().unwrap();
        assert_eq!(client.body_bytes().unwrap(), b"hello-post", "{profile}");
        // The filter did not remove the upstream's length: the transcript shows it stale, for the
        // author to see.
        let expected = match profile {
            Profile::Envoy => headers(&[("content-length", "5")]),
            Profile::Kong => headers(&[
                ("content-length", "5"),
                ("connection", "keep-alive"),
                ("server", "nginx"),
                ("date", VIRTUAL_DATE),
            ]),
        };
        assert_eq!(client.headers, expected, "{profile}");
    }
}

#[test]
fn a_local_response_means_the_upstream_response_is_not_used() {
    for profile in PROFILES {
        let input = ScenarioInput {
            request: probe_request("local", &[]),
            upstream_response: Some(upstream_response(r#"{"status":200,"body":"never"}"#)),
            ..ScenarioInput::default()
        };
        let t = probe(profile, "", &input);
        let local = t.local_response.as_ref().expect("the probe answers locally");
        let used = t.upstream_response.as_ref().unwrap();
        assert!(!used.used, "{profile}");
        assert!(
            used.why_not.as_deref().unwrap().contains("answered locally"),
            "{used:?}"
        );
        // The filter's own reply, not the upstream's, goes through its response callbacks
        // (both hosts do that; Profile::local_reply_response shapes it).
        assert!(
            callbacks(&t).contains(&"on_response_headers"),
            "{profile}: {:?}",
            callbacks(&t)
        );
        let client = t.client_response.as_ref().unwrap();
        assert_eq!(client.source, ResponseSource::Local);
        assert_eq!(client.status, Some(local.status));
        // Kong's engine appends a line feed to a non-empty local reply body.
        let expected = match profile {
            Profile::Kong if !local.body.is_empty() => format!("{}\n", local.body),
            _ => local.body.clone(),
        };
        assert_eq!(client.body, expected, "{profile}");
        assert!(!client.body.contains("never"), "{profile}");
        assert!(client.complete);
    }
}

#[test]
fn a_request_held_by_the_filter_never_reaches_the_upstream() {
    for profile in PROFILES {
        let input = ScenarioInput {
            request: probe_request("pause", &[]),
            upstream_response: Some(upstream_response(r#"{"status":200}"#)),
            ..ScenarioInput::default()
        };
        let t = probe(profile, "", &input);
        let why = t.upstream_response.as_ref().unwrap().why_not.clone().unwrap();
        assert!(why.contains("held it in on_request_headers"), "{profile}: {why}");
        assert!(t.client_response.is_none(), "{profile}");
        assert_eq!(t.paused_in.as_deref(), Some("on_request_headers"));
    }
}

#[test]
fn a_response_the_filter_holds_never_reaches_the_client() {
    for profile in PROFILES {
        let input = ScenarioInput {
            request: probe_request("pause_response", &[]),
            upstream_response: Some(upstream_response(r#"{"status":200,"body":"held"}"#)),
            ..ScenarioInput::default()
        };
        let t = probe(profile, "", &input);
        let client = t.client_response.as_ref().unwrap();
        assert_eq!(client.status, None, "{profile}");
        assert!(client.headers.is_empty() && client.body.is_empty(), "{profile}");
        assert!(!client.complete, "{profile}");
        assert_eq!(client.paused_in.as_deref(), Some("on_response_headers"), "{profile}");
        // The body waited behind the held headers: the filter never saw it.
        assert!(!callbacks(&t).contains(&"on_response_body"), "{profile}");
    }
}

#[test]
fn a_call_made_in_the_response_phase_takes_the_next_response() {
    let input = ScenarioInput {
        request: probe_request("dispatch_in_response", &[("x-after", "nothing")]),
        upstream_response: Some(upstream_response(r#"{"status":200,"body":"b"}"#)),
        http_call_responses: vec![call_response(r#"{"status":202,"body":"from the call"}"#)],
        ..ScenarioInput::default()
    };
    let t = probe(Profile::Envoy, "", &input);
    assert_eq!(t.http_calls.len(), 1);
    assert_eq!(t.http_calls[0].outcome, CallOutcome::Answered);
    assert_eq!(t.http_calls[0].response, Some(0));
    assert_eq!(reports(&t, "http_call_response")[0]["body"], "from the call");
    let names = callbacks(&t);
    let response_headers = names.iter().position(|c| *c == "on_response_headers").unwrap();
    let answer = names.iter().position(|c| *c == "on_http_call_response").unwrap();
    assert!(response_headers < answer, "{names:?}");
}

#[test]
fn a_unary_grpc_call_is_listed_and_answered_with_its_outcome_only() {
    let ok = ScenarioInput {
        request: probe_request("grpc_call", &[]),
        // Metadata are not delivered for a unary call, and of several messages only the last
        // (Envoy's unary request keeps the last one it received).
        grpc_call_responses: vec![grpc_response(
            r#"{"initial_metadata":[["x-initial","1"]],"messages":["pong","more"],"trailing_metadata":[["t","1"]],"status":0}"#,
        )],
        upstream_response: Some(upstream_response(r#"{"status":200,"body":"ok"}"#)),
        ..ScenarioInput::default()
    };
    let t = probe(Profile::Envoy, "", &ok);
    let call = &t.grpc_calls[0];
    assert_eq!(
        (
            call.kind.as_str(),
            call.upstream.as_str(),
            call.service.as_str(),
            call.method.as_str()
        ),
        ("call", "grpc_cluster", "probe.Service", "Unary")
    );
    assert_eq!(call.initial_metadata, headers(&[("x-md", "md-value")]));
    assert_eq!(call.messages, vec!["grpc-request".to_string()]);
    assert_eq!(call.timeout_ms, Some(3000));
    assert_eq!((call.outcome, call.response), (CallOutcome::Answered, Some(0)));
    let answered = &reports(&t, "grpc_call_response")[0];
    assert_eq!(
        (answered["status_code"].as_u64(), answered["message"].as_str()),
        (Some(0), Some("more"))
    );
    let names = callbacks(&t);
    assert!(names.contains(&"on_grpc_receive"), "{names:?}");
    assert!(
        !names.iter().any(|c| c.contains("metadata") || *c == "on_grpc_close"),
        "{names:?}"
    );
    // The probe resumed the request: the upstream response reached the client.
    assert_eq!(t.client_response.as_ref().unwrap().body, "ok");
    assert!(
        !t.logs.iter().any(|l| l.message.contains("invalid token")),
        "{:?}",
        t.logs
    );

    let failed = ScenarioInput {
        grpc_call_responses: vec![grpc_response(
            r#"{"messages":["ignored"],"status":14,"status_message":"down"}"#,
        )],
        ..ok.clone()
    };
    let t = probe(Profile::Envoy, "", &failed);
    let answered = &reports(&t, "grpc_call_response")[0];
    assert_eq!(answered["status_code"], 14);
    assert_eq!(answered["size"], 0);
    // Envoy appends the response code details to a server's message, in run as in serve.
    assert_eq!(answered["status_message"], "down{via_upstream}");
    assert!(callbacks(&t).contains(&"on_grpc_close"));
}

#[test]
fn a_grpc_stream_gets_every_part_and_lists_what_the_filter_sent() {
    let input = ScenarioInput {
        request: probe_request("grpc_stream", &[]),
        grpc_call_responses: vec![
            grpc_response(
                r#"{"initial_metadata":[["x-initial","i"]],"messages":["r1","r2"],"trailing_metadata":[["x-t","t"]],"status":0}"#,
            ),
            grpc_response("{}"),
        ],
        ..ScenarioInput::default()
    };
    let t = probe(Profile::Envoy, "", &input);
    let call = &t.grpc_calls[0];
    assert_eq!((call.kind.as_str(), call.method.as_str()), ("stream", "Stream"));
    assert_eq!(call.messages, vec!["m1".to_string(), "m2".to_string()]);
    assert_eq!(call.timeout_ms, None);
    assert_eq!(reports(&t, "grpc_initial_metadata")[0]["x_initial"], "i");
    let messages: Vec<_> = reports(&t, "grpc_message")
        .iter()
        .map(|r| r["message"].clone())
        .collect();
    assert_eq!(messages, vec![json!("r1"), json!("r2")]);
    assert_eq!(reports(&t, "grpc_trailing_metadata")[0]["num"], 1);
    assert_eq!(reports(&t, "grpc_close")[0]["status_code"], 0);
    assert_eq!(reports(&t, "grpc_close")[0]["message"], "via_upstream");
    assert_eq!(t.unused_grpc_call_responses, 1);
}

#[test]
fn a_grpc_call_without_a_response_stays_unanswered() {
    let input = ScenarioInput {
        request: probe_request("grpc_call", &[]),
        ..ScenarioInput::default()
    };
    let t = probe(Profile::Envoy, "", &input);
    assert_eq!(t.grpc_calls[0].outcome, CallOutcome::Unanswered);
    assert_eq!(t.paused_in.as_deref(), Some("on_request_headers"));
}

#[test]
fn a_step_past_a_calls_timeout_fires_it_and_the_request_goes_on() {
    for profile in PROFILES {
        let upstream = match profile {
            Profile::Envoy => "cluster_a",
            Profile::Kong => "127.0.0.1:8082",
        };
        let input = ScenarioInput {
            request: probe_request(
                "callout",
                &[
                    ("x-timeout-ms", "100"),
                    ("x-upstream", upstream),
                    // Kong has no proxy_get_status: the probe leaves it out there.
                    ("x-profile", &profile.to_string()),
                ],
            ),
            upstream_response: Some(upstream_response(r#"{"status":200,"body":"late"}"#)),
            advance_ms: vec![99, 1, 50],
            ..ScenarioInput::default()
        };
        let t = probe(profile, "", &input);
        assert_eq!(t.http_calls[0].outcome, CallOutcome::TimedOut, "{profile}");
        let steps = &t.time_steps;
        assert_eq!(steps.iter().map(|s| s.at_ms).collect::<Vec<_>>(), vec![99, 100, 150]);
        // Nothing happens before the deadline.
        assert!(steps[0].timeouts.is_empty() && steps[0].actions.is_empty() && steps[0].logs.is_empty());
        // At 100 ms the call times out; the probe resumes; the upstream answers; the stream ends.
        assert_eq!(steps[1].timeouts, vec![0], "{profile}");
        let step_callbacks: Vec<&str> = steps[1].actions.iter().map(|a| a.callback.as_str()).collect();
        let mut expected = vec!["on_http_call_response", "on_response_headers", "on_response_body"];
        expected.extend(stream_end(profile));
        assert_eq!(step_callbacks, expected, "{profile}");
        assert!(
            steps[1]
                .logs
                .iter()
                .any(|l| l.message.starts_with("probe:http_call_response")),
            "{profile}: {:?}",
            steps[1].logs
        );
        assert!(steps[2].actions.is_empty() && steps[2].timeouts.is_empty(), "{profile}");
        assert_eq!(t.client_response.as_ref().unwrap().body, "late", "{profile}");
    }
}

#[test]
fn a_step_past_a_grpc_calls_timeout_closes_it_with_serves_status() {
    let input = ScenarioInput {
        request: probe_request("grpc_call", &[("x-timeout-ms", "200")]),
        upstream_response: Some(upstream_response(r#"{"status":200,"body":"late"}"#)),
        advance_ms: vec![199, 1, 50],
        ..ScenarioInput::default()
    };
    let t = probe(Profile::Envoy, "", &input);
    assert_eq!(t.grpc_calls[0].outcome, CallOutcome::TimedOut);
    assert_eq!(t.grpc_calls[0].timeout_ms, Some(200));
    let steps = &t.time_steps;
    assert!(steps[0].grpc_timeouts.is_empty() && steps[0].actions.is_empty());
    assert_eq!(steps[1].grpc_timeouts, vec![0]);
    assert!(
        steps[1].timeouts.is_empty(),
        "the HTTP timeouts list stays for HTTP calls"
    );
    // The close Envoy gives a timed-out call (the status serve gives it too), which the SDK hands
    // to on_grpc_call_response; the probe resumes and the upstream answers.
    let closed = reports(&t, "grpc_call_response");
    assert_eq!(closed.len(), 1, "{:?}", t.logs);
    assert_eq!(closed[0]["status_code"], 14);
    assert_eq!(
        closed[0]["status_message"],
        "upstream request timeout{response_timeout}"
    );
    assert_eq!(steps[1].actions[0].callback, "on_grpc_close");
    assert!(steps[2].grpc_timeouts.is_empty());
    assert_eq!(t.client_response.as_ref().unwrap().body, "late");
    // A gRPC stream has no timeout: it stays open however far the clock moves.
    let stream = ScenarioInput {
        request: probe_request("grpc_stream", &[]),
        advance_ms: vec![3_600_000],
        ..ScenarioInput::default()
    };
    let t = probe(Profile::Envoy, "", &stream);
    assert!(t.time_steps[0].grpc_timeouts.is_empty());
    assert_eq!(t.grpc_calls[0].outcome, CallOutcome::Unanswered);
}

#[test]
fn ticks_fire_per_step_and_their_calls_take_the_next_responses() {
    let input = ScenarioInput {
        request: probe_request("none", &[]),
        http_call_responses: vec![
            call_response(r#"{"status":200,"body":"first tick"}"#),
            call_response(r#"{"failure":"broken_connection"}"#),
        ],
        advance_ms: vec![49, 1, 50, 50],
        ..ScenarioInput::default()
    };
    let t = probe(Profile::Envoy, "tick=50 dispatch_on_tick=cluster_a", &input);
    let ticks: Vec<u64> = t.time_steps.iter().map(|s| s.ticks).collect();
    assert_eq!(ticks, vec![0, 1, 1, 1]);
    let made: Vec<Vec<usize>> = t.time_steps.iter().map(|s| s.http_calls.clone()).collect();
    assert_eq!(made, vec![vec![], vec![0], vec![1], vec![2]]);
    let answered: Vec<Vec<usize>> = t.time_steps.iter().map(|s| s.http_calls_answered.clone()).collect();
    assert_eq!(answered, vec![vec![], vec![0], vec![1], vec![]]);
    let outcomes: Vec<CallOutcome> = t.http_calls.iter().map(|c| c.outcome).collect();
    // The third tick's call is still open when the run ends: a root context's call is not
    // cancelled with the stream.
    assert_eq!(
        outcomes,
        vec![CallOutcome::Answered, CallOutcome::Answered, CallOutcome::Unanswered]
    );
    assert_eq!(t.http_calls[0].headers[1], (":path".to_string(), "/tick".to_string()));
    let root_answers = reports(&t, "root_http_call_response");
    assert_eq!(root_answers[0]["body"], "first tick");
    // Forwarded without an upstream response given, the stream waits until the run ends.
    assert!(t.time_steps.iter().all(|s| s.actions.is_empty()));
    assert_eq!(
        callbacks(&t),
        vec!["on_request_headers", "on_log", "on_done", "on_delete"]
    );
    assert!(t.client_response.is_none());
}

#[test]
fn a_trap_during_a_step_is_reported_there() {
    for profile in PROFILES {
        let upstream = match profile {
            Profile::Envoy => "cluster_a",
            Profile::Kong => "127.0.0.1:8082",
        };
        let input = ScenarioInput {
            request: probe_request(
                "callout",
                &[
                    ("x-timeout-ms", "10"),
                    ("x-upstream", upstream),
                    ("x-trap-in", "http_call_response"),
                ],
            ),
            advance_ms: vec![10],
            ..ScenarioInput::default()
        };
        let t = probe(profile, "", &input);
        let step = &t.time_steps[0];
        assert_eq!(step.timeouts, vec![0], "{profile}");
        assert!(
            step.trap.as_deref().unwrap().contains("unreachable"),
            "{profile}: {step:?}"
        );
        // The host's 5xx: the stream fails closed.
        assert!(step.local_response, "{profile}");
        assert!(t.local_response.as_ref().unwrap().status >= 500, "{profile}");
        assert_eq!(t.trap, step.trap);
    }
}

#[test]
fn the_async_producer_answers_at_once_and_its_tick_flushes_the_batch() {
    for profile in PROFILES {
        let upstream = match profile {
            Profile::Envoy => "kafka_rest",
            Profile::Kong => "rest-proxy:8082",
        };
        let config = json!({
            "topic": "orders",
            "rest_proxy": {"upstream": upstream, "timeout": 60_000},
            "producer_async": true,
            "producer_async_flush_timeout": 100,
        });
        let mut options = ScenarioOptions::new(profile);
        options.configuration = config.to_string().into_bytes();
        let request = RequestFile::from_json(
            br#"{"headers":[[":method","POST"],[":path","/kafka"],[":authority","gw"],["content-type","application/json"]],"body":"{\"n\":1}"}"#,
        )
        .unwrap();
        let input = ScenarioInput {
            request,
            http_call_responses: vec![call_response(
                r#"{"status":200,"headers":[["content-type","application/vnd.kafka.v2+json"]],"body":"{\"offsets\":[{\"partition\":0,\"offset\":7}]}"}"#,
            )],
            advance_ms: vec![50, 100],
            ..ScenarioInput::default()
        };
        let t = run_scenario(&load("kafka_upstream"), &options, &input).unwrap();
        // Answered before any time passed: 200 "message sent", the stream over.
        let client = t.client_response.as_ref().unwrap();
        assert_eq!(
            (client.source, client.status),
            (ResponseSource::Local, Some(200)),
            "{profile}"
        );
        let sent = r#"{"message":"message sent"}"#;
        let expected = if profile == Profile::Kong {
            format!("{sent}\n") // ngx_wasm_module's line feed on a local reply
        } else {
            sent.to_string()
        };
        assert_eq!(client.body, expected, "{profile}");
        assert!(t.time_steps.iter().all(|s| s.actions.is_empty()), "{profile}");
        // Not flushed before the flush timeout; the tick after it sends the batch, and the
        // response file answers it.
        assert!(
            t.time_steps[0].ticks > 0 && t.time_steps[0].http_calls.is_empty(),
            "{profile}"
        );
        assert_eq!(t.time_steps[1].http_calls, vec![0], "{profile}");
        assert_eq!(t.time_steps[1].http_calls_answered, vec![0], "{profile}");
        let call = &t.http_calls[0];
        assert_eq!(call.upstream, upstream, "{profile}");
        assert!(call
            .headers
            .contains(&(":path".to_string(), "/topics/orders".to_string())));
        let body: Value = serde_json::from_slice(&call.body_bytes().unwrap()).unwrap();
        assert_eq!(body["records"].as_array().unwrap().len(), 1, "{profile}: {body}");
        assert_eq!(call.outcome, CallOutcome::Answered);
        assert_eq!(t.unused_http_call_responses, 0);
        assert!(t.trap.is_none());
    }
}

/// `run` hands the filter the request file's headers in its order and spelling on Kong (nginx's
/// header list keeps the client's), lower-cased on Envoy (its codec lower-cases); the count
/// passed to `on_http_request_headers` leaves Kong's pseudo-headers out
/// (`ngx_http_wasm_req_headers_count`) and includes Envoy's (`headerSize`, the map's size).
#[test]
fn the_request_files_names_reach_the_filter_as_each_host_stores_them() {
    for profile in PROFILES {
        let request = probe_request(
            "none",
            &[("Host", "h"), ("X-MiXeD-Case", "1"), ("x-dup", "1"), ("X-Dup", "2")],
        );
        let input = ScenarioInput {
            request,
            ..ScenarioInput::default()
        };
        let t = probe(profile, "{}", &input);
        let forwarded = t.upstream_request.as_ref().expect("the request goes upstream");
        let names: Vec<&str> = forwarded.headers.iter().map(|(k, _)| k.as_str()).collect();
        let (expected, count) = match profile {
            Profile::Kong => (
                vec![
                    ":method",
                    ":path",
                    ":authority",
                    "x-probe",
                    "Host",
                    "X-MiXeD-Case",
                    "x-dup",
                    "X-Dup",
                ],
                5,
            ),
            Profile::Envoy => (
                vec![
                    ":method",
                    ":path",
                    ":authority",
                    "x-probe",
                    "host",
                    "x-mixed-case",
                    "x-dup",
                    "x-dup",
                ],
                8,
            ),
        };
        assert_eq!(names, expected, "{profile}");
        assert_eq!(
            reports(&t, "request_headers")[0]["num_headers"],
            json!(count),
            "{profile}"
        );
    }
}
