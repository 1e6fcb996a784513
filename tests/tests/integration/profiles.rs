//! Every Envoy/Kong difference host-sim models (issue 2, section 4, and the ones found in the
//! hosts' sources since), each shown on the real `abi_probe.wasm` under both profiles.

use crate::probe::{
    metric_name, pairs, probe_options, upstream, Probe, BAD_ARGUMENT, NOT_FOUND, OK, PARSE_FAILURE, PLUGIN, VM_ID,
};
use host_sim::{Action, CalloutFailure, HostError, HttpCallReply, LogLevel, Profile};
use kafka_upstream_tests::{header, logs_containing, PROFILES};
use serde_json::{json, Value};
use std::time::Duration;

// ---- proxy_http_call -------------------------------------------------------------------------

#[test]
fn http_call_upstream_is_an_envoy_cluster_or_a_kong_host_port() {
    let cases: [(Profile, &str, u64); 9] = [
        (Profile::Envoy, "cluster_a", OK),
        (Profile::Envoy, "no_such_cluster", BAD_ARGUMENT),
        (Profile::Envoy, "127.0.0.1:8082", BAD_ARGUMENT),
        (Profile::Kong, "127.0.0.1:8082", OK),
        (Profile::Kong, "kafka-rest:8082", OK),
        (Profile::Kong, "[::1]:8082", OK),
        (Profile::Kong, "kafka-rest", OK),
        (Profile::Kong, "not a host", BAD_ARGUMENT),
        (Profile::Kong, "http://kafka-rest:8082", BAD_ARGUMENT),
    ];
    for (profile, up, status) in cases {
        let mut p = Probe::new(profile);
        p.stream("callout", &[("x-upstream", up)], true);
        assert_eq!(p.report("dispatch")["status"], status, "{profile} {up:?}");
        let pending: Vec<String> = p.vm.http_calls().into_iter().map(|c| c.upstream).collect();
        if status == OK {
            assert_eq!(pending, [up]);
        } else {
            assert!(pending.is_empty(), "{profile} {up:?}");
            assert!(p.vm.failure().is_none(), "a refused call is a status, not a trap");
        }
    }
}

#[test]
fn http_call_required_pseudo_headers() {
    // Envoy: :method, :path and :authority (Host); Kong: :method and :path.
    let cases: [(&str, u64, u64); 4] = [
        ("", OK, OK),
        (":authority", BAD_ARGUMENT, OK),
        (":path", BAD_ARGUMENT, BAD_ARGUMENT),
        (":method", BAD_ARGUMENT, BAD_ARGUMENT),
    ];
    for (omit, envoy, kong) in cases {
        for (profile, expected) in [(Profile::Envoy, envoy), (Profile::Kong, kong)] {
            let mut p = Probe::new(profile);
            p.stream(
                "callout",
                &[("x-upstream", upstream(profile)), ("x-call-omit", omit)],
                true,
            );
            assert_eq!(p.report("dispatch")["status"], expected, "{profile} without {omit:?}");
        }
    }
}

#[test]
fn http_call_failures_envoy_local_replies_vs_kong_dispatch_status() {
    for failure in [
        CalloutFailure::Timeout,
        CalloutFailure::BrokenConnection,
        CalloutFailure::Reset,
    ] {
        for profile in PROFILES {
            let mut p = Probe::new(profile);
            p.stream("callout", &[("x-upstream", upstream(profile))], true);
            let token = p.vm.http_calls()[0].token;
            p.vm.respond_http_call(token, HttpCallReply::Failure(failure)).unwrap();
            let r = p.report("http_call_response");
            match (profile, failure) {
                // Envoy's async client answers a timeout with a local 504 and a connect failure
                // with a local 503, both delivered as responses.
                (Profile::Envoy, CalloutFailure::Timeout) => {
                    assert_eq!(
                        (r["num_headers"].as_u64(), r["status_header"].as_str()),
                        (Some(3), Some("504"))
                    );
                    assert_eq!(r["status_header_status"], OK);
                    assert_eq!(r["body"], "upstream request timeout");
                }
                (Profile::Envoy, CalloutFailure::BrokenConnection) => {
                    assert_eq!(r["status_header"], "503");
                    assert!(r["body"].as_str().unwrap().contains("connection failure"));
                }
                // A reset is onHttpCallFailure: get_status BrokenConnection "reset", and no reply
                // at all: looking a header up is BAD_ARGUMENT, the pairs are empty, no body.
                (Profile::Envoy, CalloutFailure::Reset) => {
                    assert_eq!((r["num_headers"].as_u64(), r["body_size"].as_u64()), (Some(0), Some(0)));
                    assert_eq!((r["code"].as_u64(), r["message"].as_str()), (Some(11), Some("reset")));
                    assert_eq!(r["status_header_status"], BAD_ARGUMENT);
                    assert_eq!((r["headers"].clone(), r["trailers"].clone()), (json!([]), json!([])));
                    assert_eq!(r["body"], "");
                }
                (Profile::Kong, failure) => {
                    let expected = match failure {
                        CalloutFailure::Timeout => "timeout",
                        CalloutFailure::BrokenConnection => "broken connection",
                        CalloutFailure::Reset => "reader failure",
                    };
                    assert_eq!(r["num_headers"], 0, "Kong: a failure has no headers");
                    assert_eq!(r["dispatch_status"], expected, "but a :dispatch_status pseudo-header");
                    assert_eq!(r["status_header"], Value::Null);
                    assert_eq!(r["status_header_status"], NOT_FOUND);
                }
            }
        }
    }
}

#[test]
fn http_call_timeout_zero_is_none_on_envoy_and_60s_on_kong() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        p.stream(
            "callout",
            &[("x-upstream", upstream(profile)), ("x-timeout-ms", "0")],
            true,
        );
        assert_eq!(p.vm.http_calls()[0].timeout_ms, 0);
        p.vm.advance_time(Duration::from_secs(59)).unwrap();
        assert_eq!(p.vm.http_calls().len(), 1);
        p.vm.advance_time(Duration::from_secs(1)).unwrap();
        match profile {
            Profile::Envoy => {
                p.vm.advance_time(Duration::from_secs(3600)).unwrap();
                assert_eq!(p.vm.http_calls().len(), 1, "Envoy: timeout 0 means none");
            }
            Profile::Kong => {
                assert!(p.vm.http_calls().is_empty(), "Kong: the 60 s socket timeout applies");
                assert_eq!(p.report("http_call_response")["dispatch_status"], "timeout");
            }
        }
    }
}

// ---- Where dispatch is allowed -------------------------------------------------------------------

#[test]
fn kong_traps_on_dispatch_from_a_forbidden_phase() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream("dispatch_in_response", &[("x-upstream", upstream(profile))], true);
        let action = p.vm.send_response_headers(s, &[(":status", "200")], true).unwrap();
        match profile {
            Profile::Envoy => {
                assert_eq!(action, Some(Action::Continue));
                assert_eq!(p.report("dispatch")["status"], OK);
                assert_eq!(p.vm.http_calls().len(), 1);
                assert!(p.vm.failure().is_none());
            }
            Profile::Kong => {
                assert_eq!(action, None, "the callback trapped");
                assert!(p.reports("dispatch").is_empty());
                assert!(
                    p.vm.failure()
                        .unwrap()
                        .contains("dispatch not allowed in on_response_headers"),
                    "{:?}",
                    p.vm.failure()
                );
                // A trap in the response phase fails open on Kong: the response goes on
                // without the filter (profile `response_trap_fails_open`, KONG-OBS).
                assert!(p.vm.local_response(s).is_none());
                assert!(!p.vm.stream_reset(s));
            }
        }
    }
}

#[test]
fn kong_allows_dispatch_from_headers_tick_call_response_and_foreign_function() {
    let up = upstream(Profile::Kong);
    // Request headers, then again from the call response.
    let mut p = Probe::new(Profile::Kong);
    p.stream("callout", &[("x-upstream", up), ("x-after", "dispatch_again")], true);
    p.respond(200, &[], b"", &[]);
    assert_eq!(p.report("dispatch_again")["status"], OK);
    assert_eq!(p.vm.http_calls().len(), 1);
    // On tick.
    let mut p = Probe::configured(Profile::Kong, &format!("tick=10 dispatch_on_tick={up}"));
    p.vm.advance_time(Duration::from_millis(10)).unwrap();
    assert_eq!(p.report("tick")["dispatch_status"], OK);
    // From a foreign function callback.
    let mut p = Probe::configured(Profile::Kong, &format!("dispatch_on_foreign={up}"));
    p.vm.call_foreign_callback(p.root, 1, b"").unwrap();
    assert_eq!(p.report("foreign_dispatch")["status"], OK);
    assert!(p.vm.failure().is_none());
}

#[test]
fn kong_local_response_from_a_call_response_cancels_other_dispatches() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream(
            "callout",
            &[
                ("x-upstream", upstream(profile)),
                ("x-calls", "2"),
                ("x-after", "respond"),
            ],
            true,
        );
        let calls = p.vm.http_calls();
        assert_eq!(calls.len(), 2);
        let reply = HttpCallReply::Response {
            status: 200,
            headers: vec![],
            body: b"first".to_vec(),
            trailers: vec![],
        };
        p.vm.respond_http_call(calls[0].token, reply).unwrap();
        assert_eq!(p.vm.local_response(s).unwrap().body, b"first");
        let left = p.vm.http_calls().len();
        match profile {
            Profile::Envoy => assert_eq!(left, 1, "Envoy keeps the other call until the stream ends"),
            Profile::Kong => assert_eq!(left, 0, "Kong cancels pending dispatches"),
        }
    }
}

// ---- Request headers and bodies ----------------------------------------------------------------

#[test]
fn envoy_pause_in_request_headers_holds_the_body_until_continue() {
    let mut p = Probe::new(Profile::Envoy);
    let s = p.stream_with("POST", "/", "callout", &[], false);
    assert_eq!(p.vm.actions(s)[0].action, Some("Pause"));
    assert_eq!(
        p.vm.send_request_body(s, b"part1-", false).unwrap(),
        None,
        "held, not delivered"
    );
    assert_eq!(p.vm.send_request_body(s, b"part2", true).unwrap(), None);
    assert!(
        p.reports("request_body").is_empty(),
        "on_request_body does not run while paused"
    );
    assert_eq!(p.vm.forwarded_request_body(s), Some(&b""[..]));
    p.respond(200, &[], b"", &[]);
    // The probe resumed: the held chunks arrive, in order, then go upstream.
    let bodies: Vec<(u64, bool)> = p
        .reports("request_body")
        .iter()
        .map(|r| (r["size"].as_u64().unwrap(), r["eos"].as_bool().unwrap()))
        .collect();
    assert_eq!(bodies, [(6, false), (5, true)]);
    assert_eq!(p.vm.forwarded_request_body(s), Some(&b"part1-part2"[..]));
    assert!(p.vm.request_forwarded_complete(s));
}

#[test]
fn envoy_request_headers_are_unreadable_from_the_body_phase() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream_with("POST", "/read", "read_headers_in_body", &[], false);
        p.vm.send_request_body(s, b"x", true).unwrap();
        let r = p.report("read_headers_in_body");
        match profile {
            Profile::Envoy => {
                assert_eq!(
                    r["status"], BAD_ARGUMENT,
                    "ENVOY-1.40: BAD_ARGUMENT (the SDK then panics)"
                );
                assert_eq!(r["response_headers_status"], BAD_ARGUMENT);
            }
            Profile::Kong => {
                assert_eq!((r["status"].as_u64(), r["path"].as_str()), (Some(OK), Some("/read")));
                assert_eq!(r["response_headers_status"], NOT_FOUND, "available, not there yet");
            }
        }
    }
}

/// The map availability matrix of one stream: `(callback, map) -> (value, pairs, count, size)`.
fn map_phases(p: &Probe) -> Vec<(String, &'static str, [u64; 4])> {
    let mut out = Vec::new();
    for r in p.reports("map_phase") {
        for map in [
            "request_headers",
            "request_trailers",
            "response_headers",
            "response_trailers",
        ] {
            let m = &r[map];
            let v = |k: &str| m[k].as_u64().unwrap();
            out.push((
                r["callback"].as_str().unwrap().to_string(),
                map,
                [v("value"), v("pairs"), v("count"), v("size")],
            ));
        }
    }
    out
}

fn phase(rows: &[(String, &'static str, [u64; 4])], callback: &str, map: &str) -> [u64; 4] {
    rows.iter()
        .find(|(c, m, _)| c == callback && *m == map)
        .unwrap_or_else(|| panic!("no {callback}/{map} in {rows:?}"))
        .2
}

#[test]
fn envoy_stream_maps_follow_their_callbacks_kong_serves_them_all() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream_with("POST", "/m", "map_phases", &[("x-phase-key", "1")], false);
        p.vm.send_request_body(s, b"body", false).unwrap();
        p.vm.send_request_trailers(s, &[("x-rt", "1")]).unwrap();
        p.vm.send_response_headers(s, &[(":status", "200"), ("x-phase-key", "r")], false)
            .unwrap();
        p.vm.send_response_body(s, b"resp", true).unwrap();
        p.vm.finish_stream(s).unwrap();
        let rows = map_phases(&p);
        // [value status, pairs status, pair count, size status]; request headers have 6 pairs.
        let available = |count: u64| [OK, OK, count, OK];
        if profile == Profile::Kong {
            assert!(
                rows.iter().all(|(_, _, r)| r[1] == OK),
                "{profile}: every map everywhere: {rows:?}"
            );
            assert_eq!(phase(&rows, "response_body", "request_headers"), available(6));
            continue;
        }
        // Envoy: each map in its own callback (and on_log for reads).
        assert_eq!(phase(&rows, "request_headers", "request_headers"), available(6));
        assert_eq!(
            phase(&rows, "request_trailers", "request_trailers")[..3],
            [NOT_FOUND, OK, 1]
        );
        assert_eq!(phase(&rows, "response_headers", "response_headers"), available(2));
        // Out of phase: value lookups and sizes are BAD_ARGUMENT, pairs are an empty OK.
        let unavailable = [BAD_ARGUMENT, OK, 0, BAD_ARGUMENT];
        assert_eq!(phase(&rows, "request_body", "request_headers"), unavailable);
        assert_eq!(phase(&rows, "request_headers", "request_trailers"), unavailable);
        assert_eq!(phase(&rows, "request_body", "response_headers"), unavailable);
        assert_eq!(phase(&rows, "response_body", "response_headers"), unavailable);
        assert_eq!(phase(&rows, "response_headers", "request_headers"), unavailable);
        // on_log reads request headers, response headers and trailers, but measures nothing;
        // request trailers are absent there (NOT_FOUND, as Envoy's access log phase answers).
        assert_eq!(phase(&rows, "log", "request_headers"), [OK, OK, 6, BAD_ARGUMENT]);
        assert_eq!(phase(&rows, "log", "response_headers"), [OK, OK, 2, BAD_ARGUMENT]);
        assert_eq!(
            phase(&rows, "log", "request_trailers"),
            [NOT_FOUND, OK, 0, BAD_ARGUMENT]
        );
    }
}

#[test]
fn envoy_request_headers_stay_available_while_paused_in_them() {
    let mut p = Probe::new(Profile::Envoy);
    let s = p.stream("map_phases", &[("x-pause", "1"), ("x-phase-key", "1")], true);
    assert_eq!(p.vm.request_paused_in(s), Some("on_request_headers"));
    p.vm.send_response_headers(s, &[(":status", "200")], true).unwrap();
    let rows = map_phases(&p);
    assert_eq!(
        phase(&rows, "response_headers", "request_headers"),
        [OK, OK, 7, OK],
        "paused in request headers"
    );
}

#[test]
fn envoy_trailers_can_be_added_from_the_body_at_end_of_stream() {
    let mut p = Probe::new(Profile::Envoy);
    let s = p.stream_with("POST", "/", "map_phases", &[], false);
    p.vm.send_request_body(s, b"a", false).unwrap();
    p.vm.send_request_body(s, b"b", true).unwrap();
    let sizes: Vec<u64> = p
        .reports("map_phase")
        .iter()
        .filter(|r| r["callback"] == "request_body")
        .map(|r| r["request_trailers"]["size"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sizes,
        [BAD_ARGUMENT, OK],
        "only the last chunk (end_of_stream) may add trailers"
    );
}

#[test]
fn kong_request_headers_always_have_end_of_stream_false() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream("none", &[], true);
        let eos = p.report("request_headers")["eos"].as_bool().unwrap();
        assert_eq!(eos, profile == Profile::Envoy, "{profile}");
        // Neither host calls on_request_body for a request without a body.
        assert!(p.reports("request_body").is_empty(), "{profile}");
        assert!(p.vm.request_forwarded_complete(s));
    }
}

#[test]
fn kong_delivers_the_whole_request_body_once_envoy_each_chunk() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream_with("POST", "/", "body", &[], false);
        assert_eq!(p.report("request_headers")["eos"], false);
        let actions: Vec<Option<Action>> = [(&b"ab"[..], false), (b"cd", false), (b"ef", true)]
            .iter()
            .map(|(c, eos)| p.vm.send_request_body(s, c, *eos).unwrap())
            .collect();
        let bodies: Vec<Value> = p
            .reports("request_body")
            .iter()
            .map(|r| json!([r["body"], r["eos"]]))
            .collect();
        match profile {
            Profile::Envoy => {
                assert_eq!(actions, [Some(Action::Continue); 3]);
                assert_eq!(
                    bodies,
                    [json!(["ab", false]), json!(["cd", false]), json!(["ef", true])]
                );
            }
            Profile::Kong => {
                assert_eq!(actions, [None, None, Some(Action::Continue)], "buffered until the end");
                assert_eq!(bodies, [json!(["abcdef", true])]);
            }
        }
        assert_eq!(p.vm.forwarded_request_body(s), Some(&b"abcdef"[..]), "{profile}");
        // Trailers end a body whose chunks all said "more": Kong delivers the whole body first.
        let mut p = Probe::new(profile);
        let s = p.stream_with("POST", "/", "body", &[], false);
        p.vm.send_request_body(s, b"ab", false).unwrap();
        p.vm.send_request_body(s, b"cd", false).unwrap();
        p.vm.send_request_trailers(s, &[("x-t", "1")]).unwrap();
        let bodies: Vec<Value> = p
            .reports("request_body")
            .iter()
            .map(|r| json!([r["body"], r["eos"]]))
            .collect();
        match profile {
            Profile::Envoy => assert_eq!(bodies, [json!(["ab", false]), json!(["cd", false])]),
            Profile::Kong => assert_eq!(bodies, [json!(["abcd", true])]),
        }
        assert_eq!(p.vm.forwarded_request_body(s), Some(&b"abcd"[..]), "{profile}");
        let callbacks: Vec<&str> = p.vm.actions(s).iter().map(|a| a.callback).collect();
        // ngx_wasm_module never calls on_request_trailers (NYI): the body is its last callback.
        let last = match profile {
            Profile::Envoy => "on_request_trailers",
            Profile::Kong => "on_request_body",
        };
        assert_eq!(callbacks.last(), Some(&last), "{profile}");
    }
}

#[test]
fn kong_calls_no_body_callback_for_an_empty_body() {
    for profile in PROFILES {
        // A chunked `0\r\n\r\n` body: headers without end of stream, then an empty end.
        let mut p = Probe::new(profile);
        let s = p.stream_with("POST", "/", "body", &[("transfer-encoding", "chunked")], false);
        p.vm.send_request_body(s, b"", true).unwrap();
        let bodies: Vec<Value> = p
            .reports("request_body")
            .iter()
            .map(|r| json!([r["size"], r["eos"]]))
            .collect();
        match profile {
            Profile::Envoy => assert_eq!(bodies, [json!([0, true])]),
            Profile::Kong => assert!(bodies.is_empty(), "{bodies:?}"),
        }
        assert!(p.vm.request_forwarded_complete(s), "{profile}: the request goes on");
    }
}

#[test]
fn kong_announces_a_body_over_the_client_body_buffer_but_cannot_hand_it_over() {
    for (profile, buffer, readable) in [
        (Profile::Kong, 8 * 1024, false),
        (Profile::Kong, 16 * 1024, true),
        (Profile::Envoy, 8 * 1024, true),
    ] {
        let mut options = probe_options(profile);
        options.client_body_buffer_bytes = buffer;
        let mut p = Probe::with(profile, "", options);
        let s = p.stream_with("POST", "/", "body", &[], false);
        let body = vec![b'z'; 8 * 1024 + 1];
        p.vm.send_request_body(s, &body, true).unwrap();
        let r = p.report("request_body");
        // The size is announced either way (the temp file's size, ngx_http_proxy_wasm.c:112-131).
        assert_eq!(r["size"], body.len(), "{profile} {buffer}");
        let got = r["body"].as_str().map_or(0, str::len);
        let spilled_line = logs_containing(&p.vm, "cannot read request body buffered to file");
        if readable {
            assert_eq!(got, body.len(), "{profile} {buffer}");
            assert!(spilled_line.is_empty(), "{profile} {buffer}");
        } else {
            assert_eq!(got, 0, "{profile} {buffer}: NOT_FOUND");
            // One error line per read, as ngx_wasm_module logs it on each refused read.
            assert!(!spilled_line.is_empty(), "{profile} {buffer}: the host's error line");
            assert!(spilled_line.iter().all(|l| l.level == LogLevel::Error));
        }
        // nginx still proxies the body from its file.
        assert_eq!(
            p.vm.forwarded_request_body(s).map(<[u8]>::len),
            Some(body.len()),
            "{profile}"
        );
    }
}

// ---- Host functions Kong does not implement --------------------------------------------------------

#[test]
fn kong_traps_on_the_host_functions_it_does_not_implement() {
    // What Envoy answers the probe's calls with, in the probe's VM state (no calls, not pending).
    let nyi: [(&str, u64); 10] = [
        ("proxy_get_log_level", OK),
        ("proxy_done", NOT_FOUND),
        ("proxy_close_stream", OK),
        ("proxy_get_status", OK),
        ("proxy_resolve_shared_queue", NOT_FOUND),
        ("proxy_grpc_call", PARSE_FAILURE),
        ("proxy_grpc_stream", PARSE_FAILURE),
        ("proxy_grpc_send", NOT_FOUND),
        ("proxy_grpc_cancel", NOT_FOUND),
        ("proxy_grpc_close", NOT_FOUND),
    ];
    for (function, envoy_status) in nyi {
        let mut envoy = Probe::new(Profile::Envoy);
        envoy.stream("nyi", &[("x-fn", function)], true);
        assert_eq!(envoy.report("nyi")["status"], envoy_status, "Envoy {function}");
        assert!(envoy.vm.failure().is_none());

        let mut kong = Probe::new(Profile::Kong);
        let s = kong.stream("nyi", &[("x-fn", function)], true);
        assert!(kong.reports("nyi").is_empty(), "Kong {function} must trap");
        let failure = kong
            .vm
            .failure()
            .unwrap_or_else(|| panic!("Kong {function}: no failure"));
        assert!(
            failure.contains(function) && failure.contains("not implemented"),
            "{failure}"
        );
        assert_eq!(
            kong.vm.local_response(s).unwrap().status,
            500,
            "Kong {function}: fail closed"
        );
    }
    // Every other host function the probe imports is served on Kong: the whole abi_probe
    // import list minus the ten above links and runs (host_abi.rs drives them on Kong).
    let module = kafka_upstream_tests::load("abi_probe");
    let kong_missing: Vec<&str> = module
        .info()
        .imports
        .iter()
        .filter_map(|i| i.strip_prefix("env."))
        .filter(|name| host_sim::HostFunction::from_name(name).is_some_and(|f| !Profile::Kong.implements(f)))
        .collect();
    let mut expected: Vec<&str> = nyi.iter().map(|(f, _)| *f).collect();
    expected.sort_unstable();
    let mut got = kong_missing.clone();
    got.sort_unstable();
    assert_eq!(got, expected);
}

#[test]
fn kong_traps_on_a_second_local_response_envoy_keeps_the_first() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream("local_twice", &[], true);
        let local = p.vm.local_response(s).unwrap().clone();
        match profile {
            Profile::Envoy => {
                // Each call is queued after the VM call; the first sendLocalReply ends the stream.
                assert_eq!((local.status, local.body.as_slice()), (401, &b"first"[..]));
                assert!(p.vm.failure().is_none());
            }
            Profile::Kong => {
                assert!(p.vm.failure().unwrap().contains("local response already stashed"));
                assert_eq!(local.status, 500, "the trap fails the request closed");
            }
        }
    }
}

#[test]
fn second_local_response_from_a_call_response() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream(
            "callout",
            &[("x-upstream", upstream(profile)), ("x-after", "respond_twice")],
            true,
        );
        p.respond(200, &[], b"", &[]);
        let status = p.vm.local_response(s).unwrap().status;
        assert_eq!(status, if profile == Profile::Envoy { 201 } else { 500 }, "{profile}");
    }
}

#[test]
fn kong_ignores_set_effective_context() {
    let mut p = Probe::new(Profile::Kong);
    p.stream("effective", &[], true);
    let r = p.report("effective");
    assert_eq!(r["to_root"], OK);
    assert_eq!(
        r["headers_as_root"], OK,
        "Kong did not switch: the stream's headers are still there"
    );
    assert_eq!(r["unknown"], OK, "no context check either");
    assert_eq!(r["back"], OK);
    assert_eq!(r["path"], "/probe");
}

#[test]
fn kong_sets_the_tick_period_once_and_only_from_the_root() {
    // From a stream: Envoy applies it to the root, Kong traps.
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream("tick_from_stream", &[], true);
        match profile {
            Profile::Envoy => {
                assert_eq!(p.report("tick_from_stream")["status"], OK);
                assert_eq!(p.vm.tick_period_ms(p.root), Some(50));
            }
            Profile::Kong => {
                assert!(p
                    .vm
                    .failure()
                    .unwrap()
                    .contains("can only set tick_period in root context"));
                assert_eq!(p.vm.local_response(s).unwrap().status, 500);
            }
        }
    }
    // A second period: Envoy replaces it, Kong traps (here in on_configure: the root fails).
    let p = Probe::configured(Profile::Envoy, "tick=100 tick_again=200");
    assert_eq!(p.report("configure")["tick_again_status"], OK);
    assert_eq!(p.vm.tick_period_ms(p.root), Some(200));
    let mut vm =
        kafka_upstream_tests::start_with(&kafka_upstream_tests::load("abi_probe"), probe_options(Profile::Kong));
    let err = vm.create_root_context("r", b"tick=100 tick_again=200").unwrap_err();
    assert!(
        matches!(&err, HostError::VmFailed(m) if m.contains("tick_period already set")),
        "{err}"
    );
}

// ---- Context ids -----------------------------------------------------------------------------------

/// ngx_wasm_module's root context id is its filter id, nginx's CRC-32 of the filter's name, its
/// configuration and its entry (host-sim: the root's position), and HTTP contexts count 1, 2, …
/// (ngx_proxy_wasm.c:48, :117-133, :289, :1161-1162; KONG-OBS); Envoy numbers roots and streams
/// from one counter. The filter sees the same ids the host keeps, also on a fresh instance after a
/// trap (the root is created again under its id).
#[test]
fn kong_numbers_the_root_by_crc32_and_http_contexts_from_one() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        // zlib.crc32(b"probe" + b"" + b"0"): the name, the empty configuration, position 0.
        let (root, first, second) = match profile {
            Profile::Kong => (800_540_824, 1, 2),
            Profile::Envoy => (1, 2, 3),
        };
        assert_eq!(p.root, root, "{profile}");
        assert_eq!(p.report("configure")["context"], root, "{profile}: the guest's root id");
        let s1 = p.stream("nothing", &[], true);
        p.vm.finish_stream(s1).unwrap();
        assert_eq!(p.report("on_log")["context"], first, "{profile}");
        let s2 = p.stream("nothing", &[("x-trap-in", "request_headers")], true);
        assert_eq!((s1, s2), (first, second), "{profile}");
        if profile == Profile::Kong {
            // The next stream gets a fresh instance whose root keeps its id.
            let s3 = p.stream("nothing", &[], true);
            assert_eq!(s3, 3);
            let configured = p.reports("configure");
            assert_eq!(configured.len(), 2, "{}", p.logs());
            assert_eq!(configured[1]["context"], root);
        }
    }
}

// ---- Properties -----------------------------------------------------------------------------------

#[test]
fn properties_are_typed_binary_on_envoy_and_strings_on_kong() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream(
            "properties_response",
            &[("x-props", "source.address,source.port,destination.address,destination.port,request.protocol,request.headers,response.code,response.headers.x-resp,connection.mtls,plugin_name,plugin_vm_id,ngx.remote_addr,ngx.request_uri,ngx.http_x_probe,ngx.request_id,request.id,request.query,request.size,request.host,ngx.hostname")],
            true,
        );
        p.vm.send_response_headers(s, &[(":status", "201"), ("x-resp", "r")], true)
            .unwrap();
        let props = p.report("properties")["props"].clone();
        let hex = |k: &str| props[k]["hex"].as_str().unwrap().to_string();
        let text = |k: &str| props[k]["text"].as_str().unwrap().to_string();
        let status = |k: &str| props[k]["status"].as_u64().unwrap();
        assert_eq!(text("request.protocol"), "HTTP/1.1", "{profile}");
        assert_eq!(text("plugin_name"), PLUGIN);
        assert_eq!(text("response.headers.x-resp"), "r");
        match profile {
            Profile::Envoy => {
                assert_eq!(text("source.address"), "127.0.0.1:50000");
                assert_eq!(text("destination.address"), "127.0.0.1:8000");
                assert_eq!(text("plugin_vm_id"), VM_ID);
                assert_eq!(hex("connection.mtls"), "00", "a bool is one byte");
                // int64 little-endian, 8 bytes.
                assert_eq!(hex("source.port"), hex_of(&50000i64.to_le_bytes()));
                assert_eq!(hex("destination.port"), hex_of(&8000i64.to_le_bytes()));
                assert_eq!(hex("response.code"), hex_of(&201i64.to_le_bytes()));
                // A map, serialized like a header map, without pseudo-headers.
                let bytes = from_hex(&hex("request.headers"));
                let decoded = host_sim::abi::decode_pairs(&bytes, 64).expect("serialized map");
                let names: Vec<String> = decoded
                    .iter()
                    .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                    .collect();
                assert_eq!(names, ["x-probe", "x-profile", "x-props"]);
                assert_eq!(status("ngx.remote_addr"), NOT_FOUND, "nginx variables are Kong's");
            }
            Profile::Kong => {
                // $remote_addr and $remote_port; destination.* is $proxy_protocol_addr/_port,
                // unset without the PROXY protocol; plugin_vm_id is NYI.
                assert_eq!(text("source.address"), "127.0.0.1");
                assert_eq!(text("source.port"), "50000");
                assert_eq!(status("destination.address"), NOT_FOUND);
                assert_eq!(status("destination.port"), NOT_FOUND);
                assert_eq!(status("plugin_vm_id"), NOT_FOUND);
                // Plain HTTP leaves $https unset; request.id is the request's own x-request-id,
                // request.query $args (no `?`), request.size $content_length (no such header):
                // all NOT_FOUND on real Kong (profile/kong.rs `host_property`, KONG-OBS).
                for absent in ["connection.mtls", "request.id", "request.query", "request.size"] {
                    assert_eq!(status(absent), NOT_FOUND, "{absent}");
                }
                // request.host is nginx's $hostname, the machine's name.
                assert_eq!(text("request.host"), text("ngx.hostname"));
                assert_ne!(text("request.host"), "probe.example");
                assert_eq!(text("response.code"), "201");
                assert_eq!(status("request.headers"), NOT_FOUND);
                assert_eq!(text("ngx.remote_addr"), "127.0.0.1");
                assert_eq!(text("ngx.request_uri"), "/probe");
                assert_eq!(text("ngx.http_x_probe"), "properties_response");
                // nginx's $request_id: 32 hex digits.
                let id = text("ngx.request_id");
                assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            }
        }
    }
}

/// ngx_wasm_module answers NOT_FOUND to the properties its `pw2ngx` table binds to `nyi` and
/// `not_supported`, and logs each read: `[alert] NYI - "plugin_vm_id" property` (critical, the
/// highest proxy-wasm level), `[error] "route_name" property not supported`
/// (ngx_proxy_wasm_properties.c:70-85, :632, :650). Envoy answers them without a log line.
#[test]
fn kong_logs_each_read_of_a_property_it_does_not_implement() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        p.stream(
            "properties",
            &[("x-props", "plugin_vm_id,route_name,plugin_vm_id,plugin_name")],
            true,
        );
        let props = p.report("properties")["props"].clone();
        let status = |k: &str| props[k]["status"].as_u64().unwrap();
        let logged = |level: LogLevel, line: &str| {
            p.vm.logs()
                .iter()
                .filter(|e| e.level == level && e.message == line)
                .count()
        };
        let nyi = logged(LogLevel::Critical, "NYI - \"plugin_vm_id\" property");
        let not_supported = logged(LogLevel::Error, "\"route_name\" property not supported");
        match profile {
            Profile::Kong => {
                assert_eq!(status("plugin_vm_id"), NOT_FOUND);
                assert_eq!(status("route_name"), NOT_FOUND);
                assert_eq!((nyi, not_supported), (2, 1), "one line per read\n{}", p.logs());
            }
            Profile::Envoy => {
                assert_eq!(status("plugin_vm_id"), OK);
                assert_eq!((nyi, not_supported), (0, 0), "{}", p.logs());
            }
        }
        assert_eq!(status("plugin_name"), OK, "{profile}");
    }
}

/// On Kong, `response.code` is nginx's `$status`: "000" while no response exists
/// (ngx_proxy_wasm_properties.c:508-510; KONG-OBS during request headers); present request
/// attributes come from the request's own headers.
#[test]
fn kong_answers_response_code_000_before_a_response_and_request_attributes_from_the_request() {
    let mut p = Probe::new(Profile::Kong);
    p.stream(
        "properties",
        &[
            ("x-props", "response.code,request.id,request.query,request.size"),
            ("x-request-id", "r-1"),
        ],
        true,
    );
    let props = p.report("properties")["props"].clone();
    let text = |k: &str| props[k]["text"].as_str().unwrap().to_string();
    assert_eq!(text("response.code"), "000");
    assert_eq!(text("request.id"), "r-1");
    let mut p = Probe::new(Profile::Envoy);
    p.stream("properties", &[("x-props", "response.code")], true);
    assert_eq!(p.report("properties")["props"]["response.code"]["status"], NOT_FOUND);
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// ---- Metrics --------------------------------------------------------------------------------------

#[test]
fn metric_names_are_prefixed_per_host() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        p.stream("metrics", &[], true);
        let names: Vec<String> = p.vm.metrics().into_keys().collect();
        let expected: Vec<String> = ["probe_counter", "probe_gauge", "probe_histogram"]
            .iter()
            .map(|n| match profile {
                Profile::Envoy => format!("wasmcustom.{n}"),
                Profile::Kong => format!("pw.{PLUGIN}.{n}"),
            })
            .collect();
        assert_eq!(names, expected, "{profile}");
    }
}

/// ngx_wasm_module traps where Envoy answers a status (ngx_proxy_wasm_host.c): an unknown
/// metric, an increment of a gauge or histogram, a record into a counter, a read of a
/// histogram; it lowers a counter by a negative increment, which Envoy refuses.
#[test]
fn kong_traps_on_metric_calls_envoy_refuses() {
    // (kind, op, value, Envoy's status, Kong's trap)
    let cases: [(&str, &str, &str, u64, Option<&str>); 9] = [
        ("counter", "increment", "-1", BAD_ARGUMENT, None),
        (
            "gauge",
            "increment",
            "3",
            OK,
            Some("could not increment metric id \"{id}\": metric not a counter"),
        ),
        (
            "histogram",
            "increment",
            "1",
            BAD_ARGUMENT,
            Some("could not increment metric id \"{id}\": metric not a counter"),
        ),
        (
            "unknown",
            "increment",
            "1",
            NOT_FOUND,
            Some("could not increment metric id \"424242\": metric not found"),
        ),
        (
            "counter",
            "record",
            "5",
            OK,
            Some("could not record value in metric id \"{id}\": metric is a counter"),
        ),
        (
            "unknown",
            "record",
            "5",
            NOT_FOUND,
            Some("could not record value in metric id \"424242\": metric not found"),
        ),
        (
            "histogram",
            "get",
            "0",
            BAD_ARGUMENT,
            Some("could not retrieve metric id \"{id}\": metric is a histogram"),
        ),
        (
            "unknown",
            "get",
            "0",
            NOT_FOUND,
            Some("could not retrieve metric id \"424242\": metric not found"),
        ),
        ("gauge", "record", "9", OK, None),
    ];
    for (kind, op, value, envoy_status, kong_trap) in cases {
        let args = [("x-metric-kind", kind), ("x-metric-op", op), ("x-metric-value", value)];
        let mut envoy = Probe::new(Profile::Envoy);
        envoy.stream("metric_op", &args, true);
        assert_eq!(envoy.report("metric_op")["status"], envoy_status, "Envoy {op} {kind}");
        assert!(envoy.vm.failure().is_none(), "Envoy {op} {kind}: a status, not a trap");

        let mut kong = Probe::new(Profile::Kong);
        kong.stream("metric_op", &args, true);
        match kong_trap {
            None => {
                assert_eq!(kong.report("metric_op")["status"], OK, "Kong {op} {kind}");
                assert!(kong.vm.failure().is_none(), "Kong {op} {kind}");
            }
            Some(message) => {
                assert!(kong.reports("metric_op").is_empty(), "Kong {op} {kind} must trap");
                let id = kong.report("metric_id")["id"].to_string();
                let message = message.replace("{id}", &id);
                let failure = kong.vm.failure().unwrap_or_default();
                assert!(failure.contains(&message), "Kong {op} {kind}: {failure}");
            }
        }
    }
    // Kong lowers a counter; Envoy keeps it.
    let down = [
        ("x-metric-kind", "counter"),
        ("x-metric-op", "increment"),
        ("x-metric-value", "-1"),
    ];
    for (profile, expected) in [(Profile::Envoy, 2), (Profile::Kong, 0)] {
        let mut p = Probe::new(profile);
        let up = [
            ("x-metric-kind", "counter"),
            ("x-metric-op", "increment"),
            ("x-metric-value", "1"),
        ];
        p.stream("metric_op", &up, true);
        p.stream("metric_op", &up, true);
        p.stream("metric_op", &down, true);
        p.stream("metric_op", &down, true);
        let name = metric_name(profile, "probe_op_counter");
        assert_eq!(p.vm.metrics()[&name].value, expected, "{profile}");
    }
}

// ---- Header names ---------------------------------------------------------------------------------

#[test]
fn header_names_are_lowercased_by_envoy_and_kept_by_kong() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream("set_headers", &[], true);
        let after = p.vm.request_headers(s).unwrap();
        let name = &after[3].0;
        match profile {
            Profile::Envoy => assert_eq!(name, "x-mixed-case"),
            Profile::Kong => assert_eq!(name, "X-Mixed-Case"),
        }
        assert_eq!(header(&after, "x-mixed-case"), Some("v"), "lookups ignore case on both");
        assert_eq!(pairs(&p.report("set_headers")["after"])[3].0, *name);
    }
}

// ---- Failing closed -------------------------------------------------------------------------------

#[test]
fn a_trap_fails_the_stream_closed_503_on_envoy_500_on_kong() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream_with("POST", "/", "none", &[("x-trap-in", "request_body")], false);
        assert_eq!(p.vm.send_request_body(s, b"x", true).unwrap(), None);
        let local = p.vm.local_response(s).unwrap().clone();
        match profile {
            Profile::Envoy => {
                assert_eq!(
                    (local.status, local.body.as_slice(), local.details.as_str()),
                    (503, &b""[..], "wasm_fail_stream")
                );
            }
            Profile::Kong => {
                assert_eq!(local.status, 500);
                assert_eq!(local.body, br#"{"message":"An unexpected error occurred"}"#);
                assert_eq!(
                    header(&local.headers, "content-type"),
                    Some("application/json; charset=utf-8")
                );
            }
        }
        assert!(p.vm.failure().unwrap().contains("on_request_body trapped"), "{profile}");
        assert!(!p.vm.request_forwarded_complete(s));
    }
}

#[test]
fn a_local_response_after_the_response_headers_resets_on_envoy_and_traps_open_on_kong() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream("local_in_response_body", &[], true);
        p.vm.send_response_headers(s, &[(":status", "200")], false).unwrap();
        assert!(p.vm.response_headers_forwarded(s));
        p.vm.send_response_body(s, b"partial", true).unwrap();
        assert!(
            p.vm.local_response(s).is_none(),
            "{profile}: the client has the response headers"
        );
        match profile {
            Profile::Envoy => {
                assert!(p.vm.stream_reset(s));
                assert!(!p.reports("local_in_response_body").is_empty(), "Envoy answered OK");
                assert!(p.vm.failure().is_none());
            }
            // The trap fails open: the client still gets the upstream's response (KONG-OBS:
            // "from on_response_body it traps ... and the client still gets the upstream
            // response").
            Profile::Kong => {
                assert!(p.vm.failure().unwrap().contains("response already sent"));
                assert!(!p.vm.stream_reset(s));
                assert_eq!(p.vm.forwarded_response_body(s), Some(&b"partial"[..]));
            }
        }
    }
}

#[test]
fn envoy_writes_a_body_only_at_its_start_or_end() {
    for (op, envoy, kong) in [
        ("prepend", OK, OK),
        ("append", OK, OK),
        ("replace", OK, OK),
        ("inject", BAD_ARGUMENT, OK),
        ("replace_mid", BAD_ARGUMENT, OK),
    ] {
        for (profile, expected) in [(Profile::Envoy, envoy), (Profile::Kong, kong)] {
            let mut p = Probe::new(profile);
            let s = p.stream_with("POST", "/", "body", &[("x-body-op", op)], false);
            p.vm.send_request_body(s, b"hello", true).unwrap();
            assert_eq!(p.report("body_op")["status"], expected, "{profile} {op}");
        }
    }
}

#[test]
fn envoy_refuses_set_property_outside_a_stream() {
    for profile in PROFILES {
        let p = Probe::configured(profile, "set_prop");
        let expected = if profile == Profile::Envoy { NOT_FOUND } else { OK };
        assert_eq!(p.report("configure")["set_property_status"], expected, "{profile}");
    }
}

#[test]
fn envoy_refuses_a_negative_http_call_timeout() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        p.stream(
            "callout",
            &[("x-upstream", upstream(profile)), ("x-timeout-ms", "4294967295")],
            true,
        );
        let expected = if profile == Profile::Envoy { BAD_ARGUMENT } else { OK };
        assert_eq!(
            p.report("dispatch")["status"],
            expected,
            "{profile}: u32::MAX is -1 as Envoy's int"
        );
    }
}
