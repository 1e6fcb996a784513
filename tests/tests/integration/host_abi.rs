//! Every proxy-wasm ABI v0.2.1 host function, called by the real `abi_probe.wasm` through
//! host-sim, with the spec's status codes and effects — on both profiles wherever both hosts
//! implement the function (what differs between them is in `profiles.rs`).

use crate::probe::{
    metric_name, pairs, probe_options, upstream, values, Probe, BAD_ARGUMENT, CAS_MISMATCH, EMPTY, NOT_FOUND, OK,
    PARSE_FAILURE, PLUGIN, ROOT_ID, UNIMPLEMENTED, VM_ID,
};
use host_sim::wasi::VIRTUAL_EPOCH_NS;
use host_sim::{CalloutFailure, GrpcReply, HttpCallReply, LogLevel, NewCall, Profile, Status};
use kafka_upstream_tests::{header, logs_at, PROFILES};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

// ---- Logging, clocks, timers ------------------------------------------------------------------

#[test]
fn proxy_log_levels_and_statuses() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        p.stream("log", &[], true);
        for (level, name) in [
            (LogLevel::Trace, "trace"),
            (LogLevel::Debug, "debug"),
            (LogLevel::Info, "info"),
            (LogLevel::Warn, "warn"),
            (LogLevel::Error, "error"),
            (LogLevel::Critical, "critical"),
        ] {
            let line = format!("probe log {name}");
            let entry = p.vm.logs().into_iter().find(|e| e.message == line);
            assert_eq!(entry.map(|e| e.level), Some(level), "{profile}: {line}\n{}", p.logs());
        }
        let r = p.report("log");
        assert_eq!(r["bad_level"], BAD_ARGUMENT, "{profile}: unknown log level");
        assert_eq!(r["bad_ptr"], 6, "{profile}: INVALID_MEMORY_ACCESS");
    }
}

#[test]
fn proxy_log_respects_the_host_log_level() {
    for profile in PROFILES {
        let mut options = probe_options(profile);
        options.log_level = LogLevel::Warn;
        let mut p = Probe::with(profile, "", options);
        p.stream("log", &[], true);
        let probe_lines: Vec<String> =
            p.vm.logs()
                .into_iter()
                .filter(|e| e.message.starts_with("probe log "))
                .map(|e| e.message)
                .collect();
        assert_eq!(
            probe_lines,
            ["probe log warn", "probe log error", "probe log critical"],
            "{profile}"
        );
    }
}

#[test]
fn proxy_get_log_level_returns_the_host_level() {
    // Kong does not implement proxy_get_log_level (profiles.rs checks that it traps).
    for level in LogLevel::ALL.iter().copied() {
        let mut options = probe_options(Profile::Envoy);
        options.log_level = level;
        let mut p = Probe::with(Profile::Envoy, "", options);
        let s = p.stream("log_level", &[], true);
        let local = p.vm.local_response(s).expect("the probe answers with the level");
        assert_eq!(local.body, (level as u32).to_string().as_bytes(), "{level}");
        // The INFO report is kept only when the host's level lets INFO through.
        assert_eq!(
            p.reports("log_level").len(),
            usize::from(level <= LogLevel::Info),
            "{level}"
        );
    }
}

#[test]
fn current_time_is_the_virtual_clock_for_proxy_and_wasi() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        p.stream("time", &[], true);
        let r = p.report("time");
        assert_eq!(r["proxy_ns"], VIRTUAL_EPOCH_NS, "{profile}");
        assert_eq!(r["wasi_realtime_ns"], VIRTUAL_EPOCH_NS, "{profile}");
        assert_eq!(r["wasi_realtime_errno"], 0);
        assert_eq!(r["std_now_ns"], VIRTUAL_EPOCH_NS);
        assert_eq!(r["wasi_monotonic_ns"], 0);
        p.vm.advance_time(Duration::from_millis(1500)).unwrap();
        p.stream("time", &[], true);
        let r = p.report("time");
        assert_eq!(r["proxy_ns"], VIRTUAL_EPOCH_NS + 1_500_000_000, "{profile}");
        assert_eq!(r["wasi_realtime_ns"], VIRTUAL_EPOCH_NS + 1_500_000_000);
        assert_eq!(r["wasi_monotonic_ns"], 1_500_000_000u64);
        assert_eq!(p.vm.now_ns(), VIRTUAL_EPOCH_NS + 1_500_000_000);
    }
}

#[test]
fn tick_period_fires_on_tick_on_the_virtual_clock() {
    for profile in PROFILES {
        let mut p = Probe::configured(profile, "tick=100");
        assert_eq!(p.vm.tick_period_ms(p.root), Some(100));
        assert!(p.reports("tick").is_empty());
        p.vm.advance_time(Duration::from_millis(350)).unwrap();
        let ticks = p.reports("tick");
        let seen: Vec<(u64, u64)> = ticks
            .iter()
            .map(|t| (t["n"].as_u64().unwrap(), t["now"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            seen,
            [1u64, 2, 3].map(|n| (n, VIRTUAL_EPOCH_NS + n * 100_000_000)),
            "{profile}: one tick per period, at its due time"
        );
        assert_eq!(p.vm.now_ns(), VIRTUAL_EPOCH_NS + 350_000_000);
        if profile == Profile::Envoy {
            // proxy_set_tick_period_milliseconds(0) with the root effective stops the timer
            // (Kong refuses a period from a stream context: profiles.rs).
            p.stream("effective", &[], true);
            assert_eq!(p.report("effective")["tick_as_root"], OK);
            assert_eq!(p.vm.tick_period_ms(p.root), Some(0));
            p.vm.advance_time(Duration::from_secs(1)).unwrap();
            assert_eq!(p.reports("tick").len(), 3, "period 0 disables the timer");
        }
    }
}

// ---- Buffers ------------------------------------------------------------------------------------

#[test]
fn vm_and_plugin_configuration_buffers() {
    for profile in PROFILES {
        let mut options = probe_options(profile);
        options.vm_configuration = b"vm-config-bytes".to_vec();
        let p = Probe::with(profile, "hello=world", options);
        let vm_start = p.report("vm_start");
        assert_eq!(vm_start["size"], 15);
        assert_eq!(vm_start["vm_config"], "vm-config-bytes");
        assert_eq!(vm_start["status_status"], OK);
        assert_eq!(vm_start["status_size"], 15, "{profile}: proxy_get_buffer_status size");
        assert_eq!(vm_start["status_flags"], 0);
        let c = p.report("configure");
        assert_eq!(c["size"], 11);
        assert_eq!(c["config"], "hello=world");
        assert_eq!(c["status_size"], 11);
        assert_eq!(c["partial_status"], OK);
        assert_eq!(c["partial"], "ell", "{profile}: start=1 max=3");
        // Envoy reads nothing past the end and answers Ok (proxy-wasm-cpp-host exports.cc
        // get_buffer_bytes; observed through Envoy 1.40 in e2e test_lifecycle_differential.py).
        let past_end = if profile == Profile::Envoy { OK } else { BAD_ARGUMENT };
        assert_eq!(c["past_end_status"], past_end, "{profile}: start past the end");
        assert_eq!(
            c["unavailable_status"], NOT_FOUND,
            "{profile}: HTTP_CALL_RESPONSE_BODY outside its callback"
        );
        assert_eq!(c["unknown_status"], BAD_ARGUMENT, "{profile}: unknown buffer type");
        assert_eq!(c["unknown_buffer_status"], BAD_ARGUMENT);
    }
}

#[test]
fn on_vm_start_and_on_configure_results_are_visible() {
    let p = Probe::configured(Profile::Envoy, "fail_configure");
    assert!(p.report("configure").is_object());
    let mut vm =
        kafka_upstream_tests::start_with(&kafka_upstream_tests::load("abi_probe"), probe_options(Profile::Envoy));
    let root = vm.create_root_context("r", b"fail_configure").unwrap();
    assert!(root.vm_start_ok);
    assert!(!root.configure_ok);
    let root = vm.create_root_context("r2", b"").unwrap();
    assert!(root.configure_ok);

    let mut options = probe_options(Profile::Kong);
    options.vm_configuration = b"fail".to_vec();
    let mut vm = kafka_upstream_tests::start_with(&kafka_upstream_tests::load("abi_probe"), options);
    let root = vm.create_root_context("r", b"").unwrap();
    assert!(!root.vm_start_ok);
}

#[test]
fn request_body_set_buffer_bytes_prepend_append_replace() {
    // op, what the spec (and Envoy, where it writes) makes of "hello", what ngx_wasm_module
    // does: it clears the body from the start offset and appends the value cut to the size
    // (profile/kong.rs `buffer_write`).
    let cases = [
        ("prepend", "pre-hello", "pre-hello"),
        ("append", "hello-post", "hello-post"),
        ("append_max", "hello-max", "hello-max"),
        ("replace", "replaced", "repla"),
        ("inject", "heXXllo", "heXX"),
        ("replace_mid", "hYYlo", "hYY"),
        ("clear", "", ""),
    ];
    for profile in PROFILES {
        for (op, spec, kong) in cases {
            let expected = if profile == Profile::Kong { kong } else { spec };
            let mut p = Probe::new(profile);
            let s = p.stream_with("POST", "/body", "body", &[("x-body-op", op)], false);
            let action = p.vm.send_request_body(s, b"hello", true).unwrap();
            assert_eq!(action, Some(host_sim::Action::Continue));
            let body = p.report("request_body");
            assert_eq!(body["body"], "hello");
            assert_eq!(body["size"], 5);
            assert_eq!(body["status_status"], OK);
            assert_eq!(body["status_size"], 5, "proxy_get_buffer_status");
            assert_eq!(body["partial"], "ell");
            let past_end = if profile == Profile::Envoy { OK } else { BAD_ARGUMENT };
            assert_eq!(body["past_end_status"], past_end, "{profile}");
            let r = p.report("body_op");
            // Envoy writes only at the start or the end (profiles.rs); the spec allows both.
            let expected = match (profile, op) {
                (Profile::Envoy, "inject" | "replace_mid") => {
                    assert_eq!(r["status"], BAD_ARGUMENT, "{op}");
                    "hello"
                }
                _ => {
                    assert_eq!(r["status"], OK, "{profile} {op}");
                    expected
                }
            };
            let after = if expected.is_empty() {
                Value::Null
            } else {
                json!(expected)
            };
            assert_eq!(r["after"], after, "{profile} {op}: buffer seen by the guest");
            assert_eq!(
                p.vm.forwarded_request_body(s),
                Some(expected.as_bytes()),
                "{profile} {op}: forwarded"
            );
        }
    }
}

/// A response chunk rewritten: appending works on both hosts; a replacement longer than the
/// chunk is cut to the chunk's size on Kong (ngx_http_wasm_util.c:371, profile/kong.rs
/// `buffer_write`; KONG-OBS).
#[test]
fn response_body_set_buffer_bytes() {
    for (op, envoy, kong) in [
        ("append", "resp-post", "resp-post"),
        ("replace", "replaced", "repl"),
        ("inject", "resp", "reXX"),
    ] {
        for profile in PROFILES {
            let mut p = Probe::new(profile);
            let s = p.stream("response_body", &[("x-body-op", op)], true);
            p.vm.send_response_headers(s, &[(":status", "200")], false).unwrap();
            p.vm.send_response_body(s, b"resp", true).unwrap();
            let r = p.report("response_body");
            assert_eq!(r["body"], "resp");
            assert_eq!(r["eos"], true);
            let expected = if profile == Profile::Kong { kong } else { envoy };
            assert_eq!(
                p.vm.forwarded_response_body(s),
                Some(expected.as_bytes()),
                "{profile} {op}"
            );
        }
    }
}

#[test]
fn response_body_paused_until_end_of_stream_is_cumulative() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream(
            "response_body",
            &[("x-body-pause", "until_eos"), ("x-body-op", "prepend")],
            true,
        );
        p.vm.send_response_headers(s, &[(":status", "200")], false).unwrap();
        assert_eq!(
            p.vm.send_response_body(s, b"ab", false).unwrap(),
            Some(host_sim::Action::Pause)
        );
        assert_eq!(
            p.vm.send_response_body(s, b"cd", false).unwrap(),
            Some(host_sim::Action::Pause)
        );
        assert_eq!(p.vm.forwarded_response_body(s), Some(&b""[..]));
        assert_eq!(
            p.vm.send_response_body(s, b"ef", true).unwrap(),
            Some(host_sim::Action::Continue)
        );
        let sizes: Vec<u64> = p
            .reports("response_body")
            .iter()
            .map(|r| r["size"].as_u64().unwrap())
            .collect();
        assert_eq!(sizes, [2, 4, 6], "{profile}: body_size grows while paused (spec)");
        assert_eq!(p.report("response_body")["body"], "abcdef");
        assert_eq!(p.vm.forwarded_response_body(s), Some(&b"pre-abcdef"[..]));
    }
}

// ---- HTTP fields --------------------------------------------------------------------------------

#[test]
fn header_map_get_add_replace_remove_and_size() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream(
            "headers",
            &[
                ("x-one", "1"),
                ("x-multi", "first"),
                ("x-multi", "second"),
                ("x-replace", "old"),
                ("x-replace", "older"),
                ("x-remove", "gone"),
            ],
            true,
        );
        let r = p.report("headers");
        assert_eq!(r["size_status"], OK);
        assert_eq!(r["pairs_status"], OK);
        assert_eq!(
            r["size"], r["serialized_len"],
            "{profile}: proxy_get_header_map_size is the serialized size"
        );
        assert_eq!(r["one"], "1");
        assert_eq!(r["one_upper_lookup"], "1", "{profile}: lookups are case-insensitive");
        assert_eq!(r["missing_status"], NOT_FOUND);
        assert_eq!(r["multi_first"], "first");
        assert_eq!(r["unknown_map_status"], BAD_ARGUMENT);
        assert_eq!(r["unknown_map_size_status"], BAD_ARGUMENT);
        assert_eq!(
            r["body_get_status"], NOT_FOUND,
            "{profile}: no body in the headers phase"
        );
        assert_eq!(r["body_set_status"], NOT_FOUND);
        assert_eq!(r["config_set_status"], BAD_ARGUMENT, "read-only buffer");
        assert_eq!(r["unknown_buffer_set_status"], BAD_ARGUMENT);
        let after = p.vm.request_headers(s).unwrap();
        assert_eq!(pairs(&r["after"]), after, "{profile}: the guest and the host agree");
        assert_eq!(values(&after, "x-added"), ["1"]);
        assert_eq!(
            values(&after, "x-multi"),
            ["first", "second", "third"],
            "{profile}: add appends"
        );
        assert_eq!(
            values(&after, "x-replace"),
            ["new"],
            "{profile}: replace leaves one value"
        );
        assert_eq!(
            values(&after, "x-created"),
            ["created"],
            "{profile}: replace adds a missing key"
        );
        assert!(values(&after, "x-remove").is_empty());
        assert_eq!(header(&after, ":path"), Some("/probe"));
        assert!(p.vm.request_headers_forwarded(s));
    }
}

#[test]
fn header_map_size_matches_the_spec_serialization() {
    let mut p = Probe::new(Profile::Envoy);
    let s = p.stream("headers", &[], true);
    let r = p.report("headers");
    // The probe changes the map after measuring it; measure what it saw: the original request.
    let original = kafka_upstream_tests::request_headers(
        "GET",
        "/probe",
        "probe.example",
        &[("x-probe", "headers"), ("x-profile", "envoy")],
    );
    let encoded = host_sim::abi::encode_pairs(&original);
    assert_eq!(r["size"], encoded.len() as u64);
    assert!(p.vm.stream_exists(s));
}

#[test]
fn set_header_map_pairs_replaces_the_whole_map() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream("set_headers", &[("x-dropped", "1")], true);
        let r = p.report("set_headers");
        assert_eq!(r["unknown_map_status"], BAD_ARGUMENT);
        let after = p.vm.request_headers(s).unwrap();
        assert_eq!(pairs(&r["after"]), after);
        assert_eq!(header(&after, ":path"), Some("/replaced"));
        assert_eq!(header(&after, ":authority"), Some("replaced.example"));
        assert_eq!(after.len(), 4, "{profile}: {after:?}");
        assert!(header(&after, "x-dropped").is_none());
    }
}

#[test]
fn response_header_operations() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream("response_headers", &[], true);
        let action =
            p.vm.send_response_headers(
                s,
                &[(":status", "201"), ("x-resp-replace", "old"), ("x-resp-remove", "x")],
                true,
            )
            .unwrap();
        assert_eq!(action, Some(host_sim::Action::Continue));
        let r = p.report("response_headers_ops");
        assert_eq!(r["status"], "201");
        let after = p.vm.response_headers(s).unwrap();
        assert_eq!(pairs(&r["after"]), after);
        assert_eq!(values(&after, "x-resp-replace"), ["new"]);
        assert_eq!(values(&after, "x-resp-added"), ["1"]);
        assert!(values(&after, "x-resp-remove").is_empty());
        assert!(p.vm.response_headers_forwarded(s));
        // Envoy counts the whole map; ngx_wasm_module leaves `:status` out, and always passes
        // end_of_stream false on headers.
        let seen = p.report("response_headers");
        let (count, eos) = if profile == Profile::Kong {
            (2, false)
        } else {
            (3, true)
        };
        assert_eq!(seen["num_headers"], count, "{profile:?}");
        assert_eq!(seen["eos"], eos, "{profile:?}");
    }
}

#[test]
fn trailer_operations() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream_with("POST", "/t", "trailers", &[], false);
        p.vm.send_request_body(s, b"x", false).unwrap();
        p.vm.send_request_trailers(s, &[("x-trailer", "orig")]).unwrap();
        if profile == Profile::Kong {
            // ngx_wasm_module never calls on_request_trailers (NYI): they only end the body.
            assert!(p.reports("request_trailers").is_empty(), "{profile}");
            let after = p.vm.request_trailers(s).unwrap();
            assert_eq!(values(&after, "x-trailer"), ["orig"], "{profile}");
        } else {
            let r = p.report("request_trailers");
            assert_eq!(r["num"], 1);
            assert_eq!(r["one"], "orig");
            let after = p.vm.request_trailers(s).unwrap();
            assert_eq!(values(&after, "x-trailer"), ["replaced"], "{profile}");
            assert_eq!(values(&after, "x-trailer-added"), ["1"]);
        }
        p.vm.send_response_headers(s, &[(":status", "200")], false).unwrap();
        p.vm.send_response_body(s, b"y", false).unwrap();
        p.vm.send_response_trailers(s, &[("x-resp-trailer-remove", "1"), ("x-keep", "k")])
            .unwrap();
        let r = p.report("response_trailers");
        assert_eq!(r["num"], 2);
        let after = p.vm.response_trailers(s).unwrap();
        assert_eq!(
            after,
            kafka_upstream_tests::headers(&[("x-keep", "k"), ("x-resp-trailer-added", "1")]),
            "{profile}"
        );
    }
}

#[test]
fn request_headers_are_readable_in_on_log() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream("none", &[], true);
        p.vm.finish_stream(s).unwrap();
        let r = p.report("on_log");
        assert_eq!(r["path_status"], OK, "{profile}: spec: readable in proxy_on_log");
        assert_eq!(r["path"], "/probe");
        assert!(!p.vm.stream_exists(s));
    }
}

// ---- Common stream operations -------------------------------------------------------------------

#[test]
fn continue_stream_and_close_stream_statuses() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        p.stream("streams", &[], true);
        let r = p.report("streams");
        assert_eq!(
            r["continue_unknown"], BAD_ARGUMENT,
            "{profile}: spec, unknown stream type"
        );
        assert_eq!(r["continue_request"], OK, "{profile}");
        match profile {
            Profile::Envoy => {
                // ENVOY-SRC continueStream/closeStream on an HTTP filter: DOWNSTREAM continues
                // as a no-op, closing either TCP side is an OK no-op.
                assert_eq!(r["continue_downstream"], OK);
                assert_eq!(r["close_unknown"], BAD_ARGUMENT);
                assert_eq!(r["close_upstream"], OK);
            }
            Profile::Kong => assert_eq!(r["continue_downstream"], UNIMPLEMENTED),
        }
    }
}

#[test]
fn close_stream_resets_the_request() {
    let mut p = Probe::new(Profile::Envoy);
    let s = p.stream_with("POST", "/", "close", &[], false);
    assert!(p.vm.stream_reset(s));
    assert!(p.vm.local_response(s).is_none());
    assert_eq!(
        p.vm.send_request_body(s, b"ignored", true).unwrap(),
        None,
        "a reset stream gets no more callbacks"
    );
    assert!(p.vm.failure().is_none());
}

#[test]
fn send_local_response_through_the_sdk_and_raw() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream_with("POST", "/", "local", &[], false);
        let local = p.vm.local_response(s).cloned().expect("local response");
        assert_eq!(local.status, 418);
        assert_eq!(local.body, b"teapot");
        assert_eq!(header(&local.headers, "x-probe"), Some("local"));
        assert_eq!(local.grpc_status, None, "the SDK passes grpc_status -1");
        assert_eq!(p.vm.actions(s).last().unwrap().action, Some("Pause"));
        assert_eq!(
            p.vm.send_request_body(s, b"late", true).unwrap(),
            None,
            "{profile}: answered stream"
        );
        assert!(!p.vm.request_headers_forwarded(s));

        let s = p.stream("local_raw", &[], true);
        assert_eq!(p.report("local_raw")["status"], OK);
        let local = p.vm.local_response(s).cloned().expect("local response");
        assert_eq!((local.status, local.details.as_str()), (403, "probe_denied"));
        assert_eq!(local.grpc_status, Some(7));
        assert_eq!(local.body, b"denied");
        assert_eq!(header(&local.headers, "x-probe"), Some("local-raw"));
    }
}

#[test]
fn send_local_response_from_the_body_phase() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream_with("POST", "/", "local_in_body", &[], false);
        p.vm.send_request_body(s, b"0123456789", true).unwrap();
        let local = p.vm.local_response(s).expect("local response");
        assert_eq!(
            (local.status, local.body.as_slice()),
            (413, &b"too large"[..]),
            "{profile}"
        );
        assert_eq!(p.vm.forwarded_request_body(s), Some(&b""[..]));
    }
}

// ---- HTTP calls ---------------------------------------------------------------------------------

#[test]
fn http_call_is_captured_and_answered() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let up = upstream(profile);
        let s = p.stream_with(
            "POST",
            "/",
            "callout",
            &[("x-upstream", up), ("x-timeout-ms", "2500")],
            false,
        );
        let d = p.report("dispatch");
        assert_eq!(d["status"], OK, "{profile}\n{}", p.logs());
        let calls = p.vm.http_calls();
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert_eq!(d["token"], call.token);
        assert_eq!(
            (call.upstream.as_str(), call.context_id, call.timeout_ms),
            (up, s, 2500)
        );
        assert_eq!(call.header(":method"), Some("POST"));
        assert_eq!(call.header(":path"), Some("/call"));
        assert_eq!(call.header(":authority"), Some("upstream.example"));
        assert_eq!(call.header("x-call-header"), Some("1"));
        assert_eq!(call.body, b"call-body");
        assert_eq!(call.trailers, kafka_upstream_tests::headers(&[("x-call-trailer", "t")]));
        assert_eq!(p.vm.request_paused_in(s), Some("on_request_headers"));

        p.vm.send_request_body(s, b"held", true).unwrap();
        p.respond(201, &[("x-reply", "r")], b"reply-body", &[("x-t", "1")]);
        let r = p.report("http_call_response");
        assert_eq!(r["token"], call.token);
        assert_eq!(r["num_headers"], 2, "{profile}: :status and x-reply");
        assert_eq!(r["status_header"], "201");
        assert_eq!(r["body_size"], 10);
        assert_eq!(r["body"], "reply-body");
        assert_eq!(r["num_trailers"], 1);
        assert_eq!(pairs(&r["trailers"]), kafka_upstream_tests::headers(&[("x-t", "1")]));
        let headers = pairs(&r["headers"]);
        assert_eq!(
            headers,
            kafka_upstream_tests::headers(&[(":status", "201"), ("x-reply", "r")])
        );
        match profile {
            // Envoy measures maps through its mutable accessor, which has no callout maps.
            Profile::Envoy => assert_eq!(r["map_size_status"], BAD_ARGUMENT),
            Profile::Kong => {
                assert_eq!(r["map_size_status"], OK);
                assert_eq!(
                    r["map_size"],
                    host_sim::abi::encode_pairs(&headers).len() as u64,
                    "serialized size"
                );
            }
        }
        assert_eq!(r["dispatch_status"], Value::Null);
        if profile == Profile::Envoy {
            assert_eq!(
                (r["get_status"].as_u64(), r["code"].as_u64()),
                (Some(OK), Some(201)),
                "proxy_get_status"
            );
        }
        // The probe resumed the request: headers and the held body went upstream.
        assert!(p.vm.request_headers_forwarded(s), "{profile}");
        assert_eq!(p.vm.forwarded_request_body(s), Some(&b"held"[..]));
        assert!(p.vm.http_calls().is_empty());
        let callbacks: Vec<&str> = p.vm.actions(s).iter().map(|a| a.callback).collect();
        assert_eq!(
            callbacks,
            ["on_request_headers", "on_http_call_response", "on_request_body"],
            "{profile}"
        );
    }
}

#[test]
fn http_call_response_can_answer_locally() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream(
            "callout",
            &[("x-upstream", upstream(profile)), ("x-after", "respond")],
            true,
        );
        p.respond(200, &[], b"from-upstream", &[]);
        let local = p.vm.local_response(s).expect("local response");
        assert_eq!(local.status, 200);
        assert_eq!(local.body, b"from-upstream");
        assert_eq!(header(&local.headers, "x-from"), Some("callout"));
        assert!(!p.vm.request_headers_forwarded(s), "{profile}");
    }
}

#[test]
fn http_call_timeout_fires_on_the_virtual_clock() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream(
            "callout",
            &[("x-upstream", upstream(profile)), ("x-timeout-ms", "1000")],
            true,
        );
        p.vm.advance_time(Duration::from_millis(999)).unwrap();
        assert_eq!(p.vm.http_calls().len(), 1, "{profile}: not due yet");
        p.vm.advance_time(Duration::from_millis(1)).unwrap();
        assert!(p.vm.http_calls().is_empty());
        let r = p.report("http_call_response");
        match profile {
            Profile::Envoy => assert_eq!(r["status_header"], "504"),
            Profile::Kong => assert_eq!(r["dispatch_status"], "timeout"),
        }
        assert!(p.vm.request_headers_forwarded(s));
    }
}

#[test]
fn http_call_from_the_root_on_tick() {
    for profile in PROFILES {
        let config = format!("tick=1000 dispatch_on_tick={}", upstream(profile));
        let mut p = Probe::configured(profile, &config);
        p.vm.advance_time(Duration::from_secs(1)).unwrap();
        assert_eq!(p.report("tick")["dispatch_status"], OK, "{profile}");
        let call = p.vm.http_calls().remove(0);
        assert_eq!(call.context_id, p.root);
        assert_eq!(call.header(":path"), Some("/tick"));
        p.vm.respond_http_call(
            call.token,
            HttpCallReply::Response {
                status: 204,
                headers: vec![],
                body: vec![],
                trailers: vec![],
            },
        )
        .unwrap();
        let r = p.report("root_http_call_response");
        assert_eq!(r["status_header"], "204");
        assert_eq!(r["body"], "");
    }
}

#[test]
fn new_calls_are_handed_out_once_in_order_with_the_deadline_the_profile_set() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let first = p.stream(
            "callout",
            &[("x-upstream", upstream(profile)), ("x-timeout-ms", "2500")],
            true,
        );
        let second = p.stream(
            "callout",
            &[("x-upstream", upstream(profile)), ("x-timeout-ms", "0")],
            true,
        );
        let new = p.vm.take_new_calls();
        let handed: Vec<(u32, Option<Duration>)> = new
            .iter()
            .map(|n| match n {
                NewCall::Http { call, time_left } => (call.context_id, *time_left),
                NewCall::Grpc { call, .. } => panic!("{profile}: unexpected gRPC call {call:?}"),
            })
            .collect();
        // The clock has not moved since the calls were made: what is left is the whole
        // timeout, as the profile reads the guest's (Envoy: 0 is none; Kong: 60 s).
        let zero = match profile {
            Profile::Envoy => None,
            Profile::Kong => Some(Duration::from_secs(60)),
        };
        assert_eq!(
            handed,
            [(first, Some(Duration::from_millis(2500))), (second, zero)],
            "{profile}"
        );
        assert!(
            p.vm.take_new_calls().is_empty(),
            "{profile}: each call is handed out once"
        );
        assert_eq!(p.vm.http_calls().len(), 2, "{profile}: still pending");
        p.vm.advance_time(Duration::from_millis(1000)).unwrap();
        p.stream(
            "callout",
            &[("x-upstream", upstream(profile)), ("x-timeout-ms", "700")],
            true,
        );
        let third = match p.vm.take_new_calls().as_slice() {
            [NewCall::Http { call, time_left }] => {
                assert_eq!(*time_left, Some(Duration::from_millis(700)), "{profile}");
                call.token
            }
            other => panic!("{profile}: {other:?}"),
        };
        let reply = HttpCallReply::Response {
            status: 200,
            headers: vec![],
            body: vec![],
            trailers: vec![],
        };
        p.vm.respond_http_call(third, reply).unwrap();
        assert_eq!(p.vm.http_calls().len(), 2, "{profile}");
        assert!(
            p.vm.take_new_calls().is_empty(),
            "{profile}: an answered call is not new"
        );
    }
    let mut p = Probe::new(Profile::Envoy);
    p.stream("grpc_call", &[], true);
    let token = p.vm.grpc_calls()[0].token;
    match p.vm.take_new_calls().as_slice() {
        [NewCall::Grpc { call, .. }] => assert_eq!((call.token, call.method.as_str()), (token, "Unary")),
        other => panic!("{other:?}"),
    }
    assert!(p.vm.take_new_calls().is_empty());
}

// ---- gRPC (Envoy: Kong does not implement gRPC, see profiles.rs) ----------------------------------

#[test]
fn grpc_call_is_captured_and_answered() {
    let mut p = Probe::new(Profile::Envoy);
    let s = p.stream("grpc_call", &[], true);
    let r = p.report("grpc_call");
    assert_eq!(r["status"], OK, "{}", p.logs());
    assert_eq!(r["send_on_call"], BAD_ARGUMENT, "proxy_grpc_send on a unary call");
    assert_eq!(r["send_unknown"], NOT_FOUND);
    let calls = p.vm.grpc_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(r["token"], call.token);
    assert_eq!(call.kind, host_sim::state::GrpcKind::Call);
    assert_eq!(call.context_id, s);
    assert_eq!(
        (call.upstream.as_str(), call.service.as_str(), call.method.as_str()),
        ("grpc_cluster", "probe.Service", "Unary")
    );
    assert_eq!(
        call.initial_metadata,
        kafka_upstream_tests::headers(&[("x-md", "md-value")])
    );
    assert_eq!(call.timeout_ms, Some(3000));
    assert_eq!(p.vm.grpc_messages(call.token), Some(vec![b"grpc-request".to_vec()]));

    let reply = GrpcReply {
        messages: vec![b"grpc-response".to_vec()],
        close: Some((0, "ok".into())),
        ..GrpcReply::default()
    };
    p.vm.respond_grpc(call.token, reply).unwrap();
    let r = p.report("grpc_call_response");
    assert_eq!(r["token"], call.token);
    assert_eq!(r["status_code"], 0);
    assert_eq!(r["message"], "grpc-response", "GRPC_CALL_MESSAGE buffer");
    assert!(p.vm.grpc_calls().is_empty());
    assert!(p.vm.request_headers_forwarded(s));
}

#[test]
fn grpc_call_failure_reports_status_through_get_status() {
    let mut p = Probe::new(Profile::Envoy);
    p.stream("grpc_call", &[], true);
    let token = p.vm.grpc_calls()[0].token;
    p.vm.respond_grpc(
        token,
        GrpcReply {
            close: Some((14, "unavailable".into())),
            ..GrpcReply::default()
        },
    )
    .unwrap();
    let r = p.report("grpc_call_response");
    assert_eq!(r["status_code"], 14);
    assert_eq!(r["size"], 0);
    assert_eq!((r["get_status"].as_u64(), r["code"].as_u64()), (Some(OK), Some(14)));
    assert_eq!(r["status_message"], "unavailable");
}

#[test]
fn grpc_call_to_an_unknown_cluster_is_a_parse_failure() {
    let mut p = Probe::new(Profile::Envoy);
    p.stream("grpc_call", &[("x-upstream", "no_such_cluster")], true);
    assert_eq!(p.report("grpc_call")["status"], PARSE_FAILURE);
    assert!(p.vm.grpc_calls().is_empty());
}

#[test]
fn grpc_cancel_and_close() {
    let mut p = Probe::new(Profile::Envoy);
    p.stream("grpc_call", &[("x-cancel", "1")], true);
    let r = p.report("grpc_call");
    assert_eq!(r["cancel"], OK);
    assert_eq!(r["cancel_unknown"], NOT_FOUND);
    assert_eq!(r["close_unknown"], NOT_FOUND);
    let call = p.vm.grpc_calls().remove(0);
    assert!(call.cancelled);
    p.vm.respond_grpc(
        call.token,
        GrpcReply {
            messages: vec![b"late".to_vec()],
            close: Some((0, String::new())),
            ..GrpcReply::default()
        },
    )
    .unwrap();
    assert!(
        p.reports("grpc_call_response").is_empty(),
        "a cancelled call gets no callbacks"
    );

    p.stream("grpc_stream", &[("x-close", "1")], true);
    let r = p.report("grpc_stream");
    assert_eq!(r["close"], OK);
    let stream =
        p.vm.grpc_calls()
            .into_iter()
            .find(|c| c.kind == host_sim::state::GrpcKind::Stream)
            .unwrap();
    // Closing a stream half-closes it; what the server still sends reaches the filter, as
    // Envoy keeps a stream the filter closed until its server closes it.
    assert!(stream.closed && stream.end_stream_sent && !stream.ended_by_guest());
    p.vm.respond_grpc(
        stream.token,
        GrpcReply {
            messages: vec![b"late".to_vec()],
            close: Some((0, String::new())),
            ..GrpcReply::default()
        },
    )
    .unwrap();
    assert_eq!(p.reports("grpc_message").len(), 1, "a closed stream still receives");
    assert_eq!(p.reports("grpc_close").len(), 1, "and its close");
    assert!(p.vm.grpc_calls().is_empty(), "forgotten once the server closed it");
}

#[test]
fn grpc_stream_send_and_every_receive_callback() {
    let mut p = Probe::new(Profile::Envoy);
    let s = p.stream("grpc_stream", &[], true);
    let r = p.report("grpc_stream");
    assert_eq!(r["status"], OK);
    assert_eq!(r["send_end"], OK);
    // Envoy answers OK after the half-close and sends nothing more (e2e: Envoy 1.40).
    assert_eq!(r["send_after_end"], OK, "the guest half-closed the stream");
    let call = p.vm.grpc_calls().remove(0);
    assert_eq!(call.kind, host_sim::state::GrpcKind::Stream);
    assert_eq!(call.method, "Stream");
    assert!(call.end_stream_sent);
    assert_eq!(
        p.vm.grpc_messages(call.token),
        Some(vec![b"m1".to_vec(), b"m2".to_vec()])
    );

    let reply = GrpcReply {
        initial_metadata: Some(kafka_upstream_tests::headers(&[("x-initial", "i")])),
        messages: vec![b"s1".to_vec(), b"s2".to_vec()],
        trailing_metadata: Some(kafka_upstream_tests::headers(&[
            ("x-trailing", "t"),
            ("grpc-status", "0"),
        ])),
        close: Some((0, "done".into())),
    };
    p.vm.respond_grpc(call.token, reply).unwrap();
    let md = p.report("grpc_initial_metadata");
    assert_eq!(md["num"], 1);
    assert_eq!(md["x_initial"], "i");
    let messages: Vec<Value> = p.reports("grpc_message").iter().map(|m| m["message"].clone()).collect();
    assert_eq!(messages, [json!("s1"), json!("s2")]);
    let trailing = p.report("grpc_trailing_metadata");
    assert_eq!(trailing["num"], 2);
    assert_eq!(
        pairs(&trailing["metadata"]),
        kafka_upstream_tests::headers(&[("x-trailing", "t"), ("grpc-status", "0")])
    );
    let close = p.report("grpc_close");
    assert_eq!(close["status_code"], 0);
    assert_eq!(
        (close["get_status"].as_u64(), close["code"].as_u64()),
        (Some(OK), Some(0))
    );
    assert_eq!(close["message"], "done");
    assert!(p.vm.request_headers_forwarded(s));
}

// ---- Shared data and queues ---------------------------------------------------------------------

#[test]
fn shared_data_with_compare_and_swap() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        p.stream("shared", &[("x-key", "k1")], true);
        let r = p.report("shared");
        assert_eq!(r["missing_status"], NOT_FOUND, "{profile}");
        assert_eq!(r["sdk_missing_none"], true);
        assert_eq!(r["set1"], OK);
        assert_eq!(r["get1"], OK);
        assert_eq!(r["value1"], "v1");
        assert_ne!(r["cas1"], 0, "a stored value has a non-zero cas");
        assert_eq!(r["set2"], OK, "matching cas");
        assert_eq!(r["stale"], CAS_MISMATCH, "stale cas");
        assert_eq!(r["sdk_value"], "v2");
        assert_ne!(r["sdk_cas"], r["cas1"]);
        assert_eq!(r["sdk_stale"], CAS_MISMATCH);
        assert_eq!(r["sdk_ok"], OK);
        assert_eq!(
            p.vm.shared().shared_data(VM_ID, b"k1").map(|(v, _)| v),
            Some(b"v5".to_vec())
        );
    }
}

#[test]
fn shared_data_is_shared_between_vms_of_one_host_and_scoped_by_vm_id() {
    let shared = host_sim::Shared::new();
    let mut a = probe_options(Profile::Envoy);
    a.shared = Some(shared.clone());
    let mut b = probe_options(Profile::Envoy);
    b.shared = Some(shared.clone());
    let mut other = probe_options(Profile::Envoy);
    other.shared = Some(shared.clone());
    other.vm_id = "other-vm".into();
    let mut pa = Probe::with(Profile::Envoy, "", a);
    pa.stream("shared", &[("x-key", "common")], true);
    assert_eq!(pa.report("shared")["set1"], OK);
    let mut pb = Probe::with(Profile::Envoy, "", b);
    pb.stream("shared", &[("x-key", "common")], true);
    // The key exists already: the unconditional write still succeeds, reads see the newest value.
    assert_eq!(pb.report("shared")["value1"], "v1");
    assert_eq!(shared.shared_data(VM_ID, b"common").unwrap().0, b"v5");
    let mut po = Probe::with(Profile::Envoy, "", other);
    po.stream("shared", &[("x-key", "common")], true);
    assert_eq!(po.report("shared")["set1"], OK);
    assert_eq!(shared.shared_data("other-vm", b"common").unwrap().0, b"v5");
    assert_ne!(
        shared.shared_data("other-vm", b"common").unwrap().1,
        shared.shared_data(VM_ID, b"common").unwrap().1
    );
}

#[test]
fn shared_queue_register_resolve_enqueue_dequeue_and_on_queue_ready() {
    let mut p = Probe::configured(Profile::Envoy, "queue=q1");
    let queue_id = p.report("configure")["queue_id"].as_u64().unwrap();
    p.stream(
        "queue",
        &[("x-vm-id", VM_ID), ("x-queue", "q1"), ("x-items", "a,b")],
        true,
    );
    let r = p.report("queue");
    assert_eq!(r["resolve_status"], OK);
    assert_eq!(r["id"], queue_id, "resolve finds the registered queue");
    assert_eq!(r["enqueue_statuses"], json!([0, 0]));
    assert_eq!(r["unknown_enqueue"], NOT_FOUND);
    assert_eq!(r["unknown_dequeue"], NOT_FOUND);
    assert_eq!(r["unknown_resolve"], NOT_FOUND);
    // proxy_on_queue_ready goes to the registering root once per enqueue; the first drains both.
    let ready = p.reports("queue_ready");
    assert_eq!(ready.len(), 2, "{}", p.logs());
    assert!(ready.iter().all(|r| r["context"] == p.root && r["queue"] == queue_id));
    assert_eq!(ready[0]["items"], json!(["a", "b"]));
    assert_eq!(ready[0]["final_status"], EMPTY);
    assert_eq!(ready[1]["items"], json!([]));
    assert_eq!(p.vm.shared().queue_items(VM_ID, "q1"), Some(vec![]));
}

#[test]
fn shared_queue_notifies_the_owner_vm_across_vms() {
    let shared = host_sim::Shared::new();
    let mut owner_options = probe_options(Profile::Envoy);
    owner_options.shared = Some(shared.clone());
    let mut owner = Probe::with(Profile::Envoy, "queue=jobs", owner_options);
    let mut producer_options = probe_options(Profile::Kong);
    producer_options.shared = Some(shared.clone());
    let mut producer = Probe::with(Profile::Kong, "", producer_options);
    // Kong has no proxy_resolve_shared_queue: registering an existing name opens it (spec).
    producer.stream(
        "queue",
        &[("x-register", "1"), ("x-queue", "jobs"), ("x-items", "job1")],
        true,
    );
    assert_eq!(producer.report("queue")["enqueue_statuses"], json!([0]));
    // Registering made the producer's root the queue's owner (proxy-wasm-cpp-host
    // SharedQueue::registerQueue): it is notified and drains the queue, the first VM is not.
    assert_eq!(producer.report("queue_ready")["items"], json!(["job1"]));
    owner.vm.poll_queues();
    assert!(owner.reports("queue_ready").is_empty());
    assert_eq!(shared.queue_items(VM_ID, "jobs"), Some(vec![]));
}

#[test]
fn run_due_work_delivers_queue_notifications_and_says_whether_there_were_any() {
    let shared = host_sim::Shared::new();
    let mut owner_options = probe_options(Profile::Envoy);
    owner_options.shared = Some(shared.clone());
    let mut owner = Probe::with(Profile::Envoy, "queue=work", owner_options);
    let mut producer_options = probe_options(Profile::Envoy);
    producer_options.shared = Some(shared.clone());
    let mut producer = Probe::with(Profile::Envoy, "", producer_options);
    assert!(!owner.vm.run_due_work(), "nothing due yet");
    producer.stream(
        "queue",
        &[("x-vm-id", VM_ID), ("x-queue", "work"), ("x-items", "w1")],
        true,
    );
    assert!(owner.reports("queue_ready").is_empty());
    assert!(owner.vm.run_due_work(), "the owner had a notification");
    assert_eq!(owner.reports("queue_ready")[0]["items"], json!(["w1"]));
    assert!(!owner.vm.run_due_work(), "delivered once");
    assert_eq!(owner.reports("queue_ready").len(), 1);
}

#[test]
fn shared_queue_cross_vm_delivery_with_poll_queues() {
    let shared = host_sim::Shared::new();
    let mut owner_options = probe_options(Profile::Envoy);
    owner_options.shared = Some(shared.clone());
    let mut owner = Probe::with(Profile::Envoy, "queue=work", owner_options);
    let mut producer_options = probe_options(Profile::Envoy);
    producer_options.shared = Some(shared.clone());
    let mut producer = Probe::with(Profile::Envoy, "", producer_options);
    producer.stream(
        "queue",
        &[("x-vm-id", VM_ID), ("x-queue", "work"), ("x-items", "w1,w2")],
        true,
    );
    assert_eq!(producer.report("queue")["resolve_status"], OK);
    assert!(producer.reports("queue_ready").is_empty(), "only the owner is notified");
    assert!(
        owner.reports("queue_ready").is_empty(),
        "delivered when the owner VM runs"
    );
    owner.vm.poll_queues();
    assert_eq!(owner.reports("queue_ready")[0]["items"], json!(["w1", "w2"]));
}

#[test]
fn dequeue_statuses_through_the_sdk_and_raw() {
    for profile in PROFILES {
        // `queue_keep`: on_queue_ready reports without dequeuing, so the items wait.
        let mut p = Probe::configured(profile, "queue_keep");
        p.stream(
            "queue",
            &[("x-register", "1"), ("x-queue", "dq"), ("x-items", "x,y,z")],
            true,
        );
        assert_eq!(
            p.reports("queue_ready").len(),
            3,
            "{profile}: one notification per item"
        );
        let items = vec![b"x".to_vec(), b"y".to_vec(), b"z".to_vec()];
        assert_eq!(p.vm.shared().queue_items(VM_ID, "dq"), Some(items));
        p.stream("dequeue", &[("x-queue", "dq")], true);
        let r = p.report("dequeue");
        assert_eq!(
            r["items"],
            json!(["x", "y", "z"]),
            "{profile}: FIFO, first through the SDK"
        );
        assert_eq!(r["final_status"], EMPTY, "{profile}");
        assert_eq!(p.vm.shared().queue_items(VM_ID, "dq"), Some(vec![]));
    }
}

// ---- Metrics ------------------------------------------------------------------------------------

/// Envoy answers every refused metric call with a status (Kong traps instead:
/// profiles.rs `kong_traps_on_metric_calls_envoy_refuses`).
#[test]
fn metrics_counter_gauge_histogram_semantics() {
    {
        let profile = Profile::Envoy;
        let mut p = Probe::new(profile);
        p.stream("metrics", &[], true);
        let r = p.report("metrics");
        let ids = [&r["counter"], &r["gauge"], &r["histogram"]];
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2], "{r}");
        assert_eq!(
            r["counter_again"], r["counter"],
            "{profile}: redefining returns the same metric"
        );
        assert_eq!((r["inc1"].as_u64(), r["inc5"].as_u64()), (Some(OK), Some(OK)));
        assert_eq!(r["dec"], BAD_ARGUMENT, "{profile}: a counter cannot go down");
        assert_eq!((r["gauge_up"].as_u64(), r["gauge_down"].as_u64()), (Some(OK), Some(OK)));
        assert_eq!(r["gauge_after_inc"], 7);
        assert_eq!(r["gauge_record"], OK);
        assert_eq!((r["hist10"].as_u64(), r["hist20"].as_u64()), (Some(OK), Some(OK)));
        assert_eq!(r["hist_inc"], BAD_ARGUMENT, "a histogram is recorded, not incremented");
        assert_eq!(
            (r["counter_get"].as_u64(), r["counter_value"].as_u64()),
            (Some(OK), Some(6))
        );
        assert_eq!(
            (r["gauge_get2"].as_u64(), r["gauge_value"].as_u64()),
            (Some(OK), Some(42))
        );
        assert_eq!(r["hist_get"], BAD_ARGUMENT);
        assert_eq!(r["unknown_get"], NOT_FOUND);
        assert_eq!(r["unknown_record"], NOT_FOUND);
        assert_eq!(r["unknown_inc"], NOT_FOUND);
        assert_eq!(r["bad_type"], BAD_ARGUMENT);

        let metrics = p.vm.metrics();
        let name = |n: &str| metric_name(profile, n);
        assert_eq!(metrics[&name("probe_counter")].value, 6);
        assert_eq!(metrics[&name("probe_gauge")].value, 42);
        let h = &metrics[&name("probe_histogram")];
        assert_eq!((h.count, h.sum, h.samples.as_slice()), (2, 30, &[10u64, 20][..]));
    }
}

// ---- Properties and foreign functions -----------------------------------------------------------

#[test]
fn properties_get_and_set() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        p.vm.set_property(&["embedder", "value"], b"from-rust");
        p.stream_with(
            "POST",
            "/a/b?x=1",
            "properties",
            &[
                ("x-set-prop", "probe.custom=custom-value"),
                ("x-props", "probe.custom,embedder.value,plugin_name,plugin_root_id,request.path,request.url_path,request.query,request.method,request.host,request.scheme,request.headers.x-probe,no.such.property"),
            ],
            true,
        );
        let r = p.report("properties");
        assert_eq!(r["set_status"], OK);
        let text = |path: &str| {
            let prop = &r["props"][path];
            assert_eq!(prop["status"], OK, "{profile}: {path}: {prop}");
            prop["text"].as_str().unwrap().to_string()
        };
        assert_eq!(
            text("probe.custom"),
            "custom-value",
            "{profile}: set_property reads back"
        );
        assert_eq!(text("embedder.value"), "from-rust", "Vm::set_property");
        assert_eq!(text("plugin_name"), PLUGIN);
        // Kong has no root id setting: ngx_wasm_module answers "0" (profile/kong.rs).
        let root_id = if profile == Profile::Envoy {
            ROOT_ID.to_string()
        } else {
            "0".to_string()
        };
        assert_eq!(text("plugin_root_id"), root_id);
        assert_eq!(text("request.path"), "/a/b?x=1");
        assert_eq!(text("request.url_path"), "/a/b");
        assert_eq!(text("request.query"), "x=1");
        assert_eq!(text("request.method"), "POST");
        // Kong's request.host is nginx's $hostname (the machine), not the Host header
        // (profile/kong.rs `host_property`; profiles.rs checks it).
        if profile == Profile::Envoy {
            assert_eq!(text("request.host"), "probe.example");
        } else {
            assert_ne!(text("request.host"), "probe.example");
        }
        assert_eq!(text("request.scheme"), "http");
        assert_eq!(text("request.headers.x-probe"), "properties");
        assert_eq!(r["props"]["no.such.property"]["status"], NOT_FOUND);
    }
}

#[test]
fn foreign_functions_registered_from_rust() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        p.vm.register_foreign_function(
            "probe_echo",
            Arc::new(|args: &[u8]| Ok(args.iter().rev().copied().collect())),
        );
        p.vm.register_foreign_function("probe_refuse", Arc::new(|_: &[u8]| Err(Status::BadArgument)));
        p.stream("foreign", &[("x-fn", "probe_echo"), ("x-fn-args", "abc")], true);
        let r = p.report("foreign");
        assert_eq!(
            (r["status"].as_u64(), r["result"].as_str()),
            (Some(OK), Some("cba")),
            "{profile}"
        );
        assert_eq!(
            (r["sdk_status"].as_u64(), r["sdk_result"].as_str()),
            (Some(OK), Some("cba"))
        );
        p.stream("foreign", &[("x-fn", "probe_missing")], true);
        let r = p.report("foreign");
        assert_eq!(
            (r["status"].as_u64(), r["sdk_status"].as_u64()),
            (Some(NOT_FOUND), Some(NOT_FOUND))
        );
        p.stream("foreign", &[("x-fn", "probe_refuse")], true);
        assert_eq!(p.report("foreign")["status"], BAD_ARGUMENT);
        // An empty result is OK with a null pointer (the SDK maps it to None).
        p.stream("foreign", &[("x-fn", "probe_echo"), ("x-fn-args", "")], true);
        let r = p.report("foreign");
        assert_eq!((r["status"].as_u64(), &r["result"]), (Some(OK), &Value::Null));

        p.vm.call_foreign_callback(p.root, 7, b"host-args").unwrap();
        let r = p.report("foreign_function");
        assert_eq!(r["function_id"], 7);
        assert_eq!(r["arguments_size"], 9);
        assert_eq!(r["args"], "host-args", "FOREIGN_FUNCTION_ARGUMENTS");
        assert_eq!(
            (r["status_status"].as_u64(), r["status_size"].as_u64()),
            (Some(OK), Some(9))
        );
    }
}

// ---- Context lifecycle --------------------------------------------------------------------------

#[test]
fn set_effective_context_switches_what_host_functions_act_on() {
    // Envoy; Kong ignores the call (profiles.rs).
    let mut p = Probe::new(Profile::Envoy);
    p.stream("effective", &[], true);
    let r = p.report("effective");
    assert_eq!(r["to_root"], OK);
    assert_eq!(
        r["headers_as_root"], BAD_ARGUMENT,
        "a root context has no request headers"
    );
    assert_eq!(r["tick_as_root"], OK);
    assert_eq!(r["unknown"], BAD_ARGUMENT, "spec: unknown context_id");
    assert_eq!(r["back"], OK);
    assert_eq!(r["headers_as_self_status"], OK);
    assert_eq!(r["path"], "/probe");
}

/// The end-of-stream callbacks the host called for stream `s`, in order.
fn end_callbacks(p: &Probe, s: u32) -> Vec<&'static str> {
    p.vm.actions(s)
        .iter()
        .map(|a| a.callback)
        .filter(|c| matches!(*c, "on_log" | "on_done" | "on_delete"))
        .collect()
}

/// The probe's `on_done` / `on_log` reports, in the order the guest emitted them.
fn guest_end_reports(p: &Probe) -> Vec<String> {
    p.vm.logs()
        .iter()
        .filter_map(|e| e.message.strip_prefix("probe:"))
        .filter_map(|m| m.split(' ').next())
        .filter(|event| matches!(*event, "on_done" | "on_log"))
        .map(String::from)
        .collect()
}

#[test]
fn finish_stream_runs_the_hosts_end_sequence() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream("none", &[], true);
        p.vm.send_response_headers(s, &[(":status", "200")], true).unwrap();
        p.vm.finish_stream(s).unwrap();
        // Envoy logs the stream before it destroys the filter; Kong's log phase runs on_done
        // first (`HostBehaviour::stream_end_callbacks` cites both).
        let (expected, guest) = match profile {
            Profile::Envoy => (["on_log", "on_done", "on_delete"], ["on_log", "on_done"]),
            Profile::Kong => (["on_done", "on_log", "on_delete"], ["on_done", "on_log"]),
        };
        assert_eq!(end_callbacks(&p, s), expected, "{profile}");
        assert_eq!(guest_end_reports(&p), guest, "{profile}: the guest saw the same order");
        assert_eq!(p.report("on_done")["defer"], false);
        assert_eq!(p.report("on_log")["context"], s);
        assert!(!p.vm.stream_exists(s));
        assert!(p.vm.failure().is_none(), "{profile}: {}", p.logs());
    }
}

#[test]
fn on_done_returning_false_does_not_hold_a_stream() {
    for profile in PROFILES {
        let mut p = Probe::configured(profile, "tick=100");
        let s = p.stream("done", &[], true);
        p.vm.finish_stream(s).unwrap();
        assert_eq!(p.report("on_done")["defer"], true, "{profile}");
        assert_eq!(p.report("on_log")["context"], s, "{profile}: on_log runs anyway");
        assert_eq!(end_callbacks(&p, s).len(), 3, "{profile}");
        assert!(!p.vm.stream_exists(s), "{profile}: and on_delete, at once");
    }
    // Envoy: the probe's later proxy_done for that stream finds nothing pending (the context is
    // gone, so the effective context stays the root, which is not pending either). On Kong
    // proxy_done is not implemented at all.
    let mut p = Probe::configured(Profile::Envoy, "tick=100");
    let s = p.stream("done", &[], true);
    p.vm.finish_stream(s).unwrap();
    p.vm.advance_time(Duration::from_millis(100)).unwrap();
    let done = p.report("done_called");
    assert_eq!(done["context"], s);
    assert_eq!(
        (done["set_effective_status"].as_u64(), done["done_status"].as_u64()),
        (Some(BAD_ARGUMENT), Some(NOT_FOUND))
    );
    assert!(p.vm.failure().is_none(), "{}", p.logs());
}

#[test]
fn a_discarded_stream_ends_without_any_end_callback() {
    for profile in PROFILES {
        let mut p = Probe::configured(profile, "tick=100");
        let s = p.stream("done", &[], true);
        p.vm.discard_stream(s).unwrap();
        assert!(end_callbacks(&p, s).is_empty(), "{profile}");
        assert!(guest_end_reports(&p).is_empty(), "{profile}: {}", p.logs());
        assert!(!p.vm.stream_exists(s), "{profile}");
        // The VM goes on: the next stream ends as usual.
        let next = p.stream("done", &[], true);
        p.vm.finish_stream(next).unwrap();
        assert_eq!(end_callbacks(&p, next).len(), 3, "{profile}");
        assert!(p.vm.failure().is_none(), "{profile}: {}", p.logs());
    }
}

#[test]
fn a_logged_stream_ends_with_the_rest_of_the_sequence() {
    use host_sim::abi::Callback;
    for profile in PROFILES {
        let mut p = Probe::configured(profile, "tick=100");
        let s = p.stream("done", &[], true);
        p.vm.log_stream(s).unwrap();
        let sequence = profile.stream_end_callbacks();
        let before_delete: Vec<&str> = (sequence.iter())
            .take_while(|c| **c != Callback::Delete)
            .map(|c| c.transcript_name())
            .collect();
        assert_eq!(end_callbacks(&p, s), before_delete, "{profile}");
        assert!(p.vm.stream_exists(s), "{profile}: the stream stays until finished");
        // A second call runs nothing again.
        p.vm.log_stream(s).unwrap();
        p.vm.finish_stream(s).unwrap();
        let all: Vec<&str> = sequence.iter().map(|c| c.transcript_name()).collect();
        assert_eq!(
            end_callbacks(&p, s),
            all,
            "{profile}: each once, in the profile's order"
        );
        assert!(!p.vm.stream_exists(s), "{profile}");
    }
}

#[test]
fn proxy_done_finalizes_a_root_later() {
    let mut p = Probe::configured(Profile::Envoy, "tick=50 root_done=defer");
    p.vm.finish_root(p.root).unwrap();
    assert_eq!(p.report("root_on_done")["defer"], true);
    p.vm.advance_time(Duration::from_millis(50)).unwrap();
    assert_eq!(p.report("root_done_called")["done_status"], OK);
    // proxy-wasm-cpp-host deletes a root without on_log (`HostBehaviour::root_shutdown_logs`).
    assert!(p.reports("root_log").is_empty(), "{}", p.logs());
    p.vm.advance_time(Duration::from_secs(1)).unwrap();
    assert_eq!(p.reports("tick").len(), 1, "a deleted root gets no more ticks");
}

#[test]
fn proxy_done_from_a_stream_finalizes_its_pending_root() {
    // proxy-wasm-cpp-host `WasmBase::done` finds the pending root by the caller's plugin.
    let mut p = Probe::configured(Profile::Envoy, "tick=50 root_done=defer");
    p.vm.finish_root(p.root).unwrap();
    p.stream("done_not_pending", &[], true);
    assert_eq!(p.report("done_not_pending")["status"], OK);
    p.vm.advance_time(Duration::from_secs(1)).unwrap();
    assert!(p.reports("tick").is_empty(), "the root was deleted: {}", p.logs());
}

#[test]
fn proxy_done_without_pending_finalization_is_not_found() {
    let mut p = Probe::new(Profile::Envoy);
    p.stream("done_not_pending", &[], true);
    assert_eq!(p.report("done_not_pending")["status"], NOT_FOUND);
}

#[test]
fn a_root_shut_down_on_kong_gets_on_log() {
    let mut p = Probe::new(Profile::Kong);
    p.vm.finish_root(p.root).unwrap();
    assert_eq!(p.report("root_on_done")["defer"], false);
    assert_eq!(p.report("root_log")["context"], p.root);
}

// ---- WASI ---------------------------------------------------------------------------------------

#[test]
fn wasi_stdout_and_stderr_become_log_lines() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        p.stream("wasi", &[], true);
        let level_of = |msg: &str| p.vm.logs().into_iter().find(|e| e.message == msg).map(|e| e.level);
        assert_eq!(
            level_of("probe stdout line"),
            Some(LogLevel::Info),
            "{profile}: stdout is info"
        );
        assert_eq!(
            level_of("probe stderr line"),
            Some(LogLevel::Error),
            "{profile}: stderr is error"
        );
        assert_eq!(
            level_of("probe partial line"),
            Some(LogLevel::Info),
            "a partial line is flushed after the callback"
        );
        assert!(logs_at(&p.vm, LogLevel::Error)
            .iter()
            .all(|e| e.message == "probe stderr line"));
    }
}

#[test]
fn wasi_random_is_deterministic_per_seed_and_environment_is_empty() {
    let random = |seed: u64, real: bool| {
        let mut options = probe_options(Profile::Envoy);
        options.wasi.random_seed = seed;
        options.wasi.real_random = real;
        let mut p = Probe::with(Profile::Envoy, "", options);
        p.stream("wasi", &[], true);
        let r = p.report("wasi");
        assert_eq!(r["random_errno"], 0);
        assert_eq!(r["env"], json!([]), "no environment unless asked");
        r["random"].as_str().unwrap().to_string()
    };
    assert_eq!(random(1, false), random(1, false), "same seed, same bytes");
    assert_ne!(random(1, false), random(2, false));
    assert_ne!(random(1, true), random(1, true), "real randomness on request");
}

#[test]
fn wasi_environment_only_when_asked() {
    let mut options = probe_options(Profile::Kong);
    options.wasi.env = vec![("PROBE_ENV".into(), "yes".into())];
    let mut p = Probe::with(Profile::Kong, "", options);
    p.stream("wasi", &[], true);
    assert_eq!(p.report("wasi")["env"], json!([["PROBE_ENV", "yes"]]));
}

#[test]
fn wasi_real_clock_on_request() {
    let mut options = probe_options(Profile::Envoy);
    options.wasi.real_clock = true;
    let mut p = Probe::with(Profile::Envoy, "", options);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    p.stream("time", &[], true);
    let r = p.report("time");
    assert!(r["proxy_ns"].as_u64().unwrap() >= before);
    assert!(r["wasi_realtime_ns"].as_u64().unwrap() >= before);
    assert!(matches!(
        p.vm.advance_time(Duration::from_secs(1)),
        Err(host_sim::HostError::RealClock)
    ));
}

// ---- Failure replies of callouts on Envoy (Kong's are in profiles.rs) ---------------------------

#[test]
fn envoy_callout_reset_has_no_headers() {
    let mut p = Probe::new(Profile::Envoy);
    p.stream("callout", &[], true);
    let token = p.vm.http_calls()[0].token;
    p.vm.respond_http_call(token, HttpCallReply::Failure(CalloutFailure::Reset))
        .unwrap();
    let r = p.report("http_call_response");
    assert_eq!(r["num_headers"], 0, "spec: num_headers 0 means the call failed");
    assert_eq!(r["headers"], json!([]));
}
