//! The guest is untrusted: bad pointers and malformed maps get statuses, never a host panic;
//! traps, runaway loops, memory growth and fuel exhaustion in any callback are contained, the
//! stream fails closed the way the profile's host fails it, and the VM is marked failed. Driven
//! by `abi_probe.wasm`'s misbehaving modes and by small hand-written modules no SDK would build.

use crate::probe::{probe_options, upstream, Probe, BAD_ARGUMENT, VM_ID};
use host_sim::{GrpcReply, HostError, Limits, LogLevel, Profile, Vm};
use kafka_upstream_tests::{load_fueled, load_wat, logs_at, logs_containing, options, start_with, PROFILES};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INVALID_MEMORY_ACCESS: u64 = 6;
fn fail_closed_status(profile: Profile) -> u32 {
    match profile {
        Profile::Envoy => 503,
        Profile::Kong => 500,
    }
}

// ---- Bad pointers and malformed data ------------------------------------------------------------

#[test]
fn every_out_of_bounds_pointer_is_invalid_memory_access() {
    for profile in PROFILES {
        // `queue_keep`: on_queue_ready leaves the probe's queue alone, so its item is observable.
        let mut p = Probe::configured(profile, "queue_keep");
        let s = p.stream_with("POST", "/", "badptr", &[("x-upstream", upstream(profile))], false);
        let r = p.report("badptr_headers");
        let fields = r.as_object().unwrap();
        let expected = if profile == Profile::Envoy { 43 } else { 37 };
        assert_eq!(fields.len(), expected, "{profile}: every call reported: {r}");
        for (call, status) in fields {
            assert_eq!(status, INVALID_MEMORY_ACCESS, "{profile}: {call}");
        }
        p.vm.send_request_body(s, b"body", true).unwrap();
        let r = p.report("badptr_body");
        for (call, status) in r.as_object().unwrap() {
            assert_eq!(status, INVALID_MEMORY_ACCESS, "{profile}: {call}");
        }
        // Nothing happened on the host side, and the guest carried on.
        assert!(p.vm.failure().is_none(), "{profile}: {:?}", p.vm.failure());
        assert!(p.vm.http_calls().is_empty(), "no call was captured");
        assert!(p.vm.local_response(s).is_none(), "no local response was captured");
        assert!(p.vm.request_forwarded_complete(s));
        assert_eq!(
            p.vm.forwarded_request_body(s),
            Some(&b"body"[..]),
            "the body was not changed"
        );
        // Return slots are validated before any side effect: the item was not dequeued.
        assert_eq!(
            p.vm.shared().queue_items(VM_ID, "probe_badptr"),
            Some(vec![b"item".to_vec()])
        );
    }
}

#[test]
fn malformed_serialized_maps_are_bad_argument_and_change_nothing() {
    for profile in PROFILES {
        let mut p = Probe::new(profile);
        let s = p.stream("badmap", &[("x-upstream", upstream(profile))], true);
        let r = p.report("badmap");
        for case in ["truncated", "huge_count", "no_nul", "short"] {
            for call in ["set", "local", "call"] {
                assert_eq!(r[format!("{case}_{call}")], BAD_ARGUMENT, "{profile}: {case} in {call}");
            }
        }
        let before = kafka_upstream_tests::request_headers(
            "GET",
            "/probe",
            "probe.example",
            &[
                ("x-probe", "badmap"),
                ("x-profile", &profile.to_string()),
                ("x-upstream", upstream(profile)),
            ],
        );
        assert_eq!(p.vm.request_headers(s).unwrap(), before, "{profile}: headers untouched");
        assert!(p.vm.http_calls().is_empty());
        assert!(p.vm.local_response(s).is_none());
        assert!(p.vm.failure().is_none());
    }
}

// ---- Traps --------------------------------------------------------------------------------------

/// Drives a stream through every phase; `trap_in` decides where the probe misbehaves.
fn drive(p: &mut Probe, trap_in: &str, kind: &str) -> u32 {
    let extra = [
        ("x-trap-in", trap_in),
        ("x-trap-kind", kind),
        ("x-upstream", upstream(p.profile)),
    ];
    let scenario = if trap_in == "http_call_response" {
        "callout"
    } else {
        "none"
    };
    let s = p.stream_with("POST", "/", scenario, &extra, false);
    if scenario == "callout" {
        p.respond(200, &[], b"", &[]);
    }
    p.vm.send_request_body(s, b"body", false).unwrap();
    p.vm.send_request_trailers(s, &[("t", "1")]).unwrap();
    p.vm.send_response_headers(s, &[(":status", "200")], false).unwrap();
    p.vm.send_response_body(s, b"resp", false).unwrap();
    p.vm.send_response_trailers(s, &[("t", "2")]).unwrap();
    s
}

/// A trap in any stream callback fails that stream closed, except in Kong's response phase,
/// which fails open.
#[test]
fn a_trap_in_any_stream_callback_is_contained_and_fails_the_stream_closed() {
    let callbacks = [
        "request_headers",
        "request_body",
        "request_trailers",
        "response_headers",
        "response_body",
        "response_trailers",
        "http_call_response",
    ];
    for profile in PROFILES {
        for callback in callbacks {
            if profile == Profile::Kong && callback == "request_trailers" {
                // ngx_wasm_module never calls on_request_trailers (NYI): nothing to trap in.
                continue;
            }
            for kind in ["unreachable", "panic"] {
                let mut p = Probe::new(profile);
                let other = p.vm.create_http_stream(p.root).unwrap();
                let s = drive(&mut p, callback, kind);
                let failure =
                    p.vm.failure()
                        .unwrap_or_else(|| panic!("{profile} {callback} {kind}: not failed"))
                        .to_string();
                assert!(failure.starts_with(&format!("on_{callback} trapped")), "{failure}");
                if profile == Profile::Kong && callback.starts_with("response_") {
                    // ngx_wasm_module fails the response phase open: the response goes on
                    // without the filter (profile `response_trap_fails_open`).
                    assert!(!p.vm.stream_reset(s), "{profile} {callback}");
                    assert!(p.vm.local_response(s).is_none(), "{profile} {callback}");
                } else if callback.starts_with("response_") && callback != "response_headers" {
                    // The response headers went out already: too late for a 5xx, so a reset.
                    assert!(p.vm.stream_reset(s), "{profile} {callback}");
                    assert!(p.vm.local_response(s).is_none());
                } else {
                    let local =
                        p.vm.local_response(s)
                            .unwrap_or_else(|| panic!("{profile} {callback}: no reply"));
                    assert_eq!(local.status, fail_closed_status(profile), "{profile} {callback} {kind}");
                }
                // The trapped callback recorded no action, and nothing ran after it.
                let actions = p.vm.actions(s);
                let last = actions.last().unwrap();
                assert_eq!((last.callback, last.action), (format!("on_{callback}").as_str(), None));
                assert!(logs_at(&p.vm, LogLevel::Critical).iter().any(|e| e.message == failure));
                if kind == "panic" {
                    assert!(
                        !logs_containing(&p.vm, "probe panic on purpose").is_empty(),
                        "the SDK's panic hook logs"
                    );
                }
                // Later streams: Envoy fails them closed on the failed VM, Kong runs them on a
                // fresh instance (the after_a_trap_* tests below). A stream that was already open
                // fails closed on both.
                let later = p.vm.create_http_stream(p.root).unwrap();
                p.vm.send_request_headers(later, &get("/later"), true).unwrap();
                if profile == Profile::Envoy {
                    assert_eq!(p.vm.local_response(later).map(|l| l.status), Some(503));
                } else {
                    assert!(p.vm.failure().is_none(), "{profile} {callback}: {}", p.logs());
                }
                p.vm.send_request_headers(other, &get("/"), true).unwrap();
                assert_eq!(
                    p.vm.local_response(other).map(|l| l.status),
                    Some(fail_closed_status(profile))
                );
                // Ending the streams still works and runs no guest code.
                p.vm.finish_stream(s).unwrap();
                assert!(!p.vm.stream_exists(s));
            }
        }
    }
}

#[test]
fn a_trap_in_on_done_or_on_log_is_contained() {
    for profile in PROFILES {
        for callback in ["done", "log"] {
            let mut p = Probe::new(profile);
            let s = p.stream("none", &[("x-trap-in", callback)], true);
            p.vm.send_response_headers(s, &[(":status", "200")], true).unwrap();
            p.vm.finish_stream(s).unwrap();
            assert!(p.vm.failure().unwrap().starts_with(&format!("on_{callback} trapped")));
            assert!(
                !p.vm.stream_exists(s),
                "{profile} {callback}: the context is gone anyway"
            );
            // The host's end sequence stops at the trap: a failed VM runs nothing more.
            let ended: Vec<&str> = (p.vm.actions(s).iter())
                .map(|a| a.callback)
                .filter(|c| matches!(*c, "on_log" | "on_done" | "on_delete"))
                .collect();
            let expected: &[&str] = match (profile, callback) {
                (Profile::Envoy, "log") => &["on_log"],
                (Profile::Envoy, _) => &["on_log", "on_done"],
                (Profile::Kong, "done") => &["on_done"],
                (Profile::Kong, _) => &["on_done", "on_log"],
            };
            assert_eq!(ended, expected, "{profile} {callback}");
        }
    }
}

#[test]
fn a_trap_in_a_root_callback_fails_the_vm() {
    // on_configure: the root context cannot be created.
    let mut vm = start_with(&kafka_upstream_tests::load("abi_probe"), probe_options(Profile::Envoy));
    let err = vm.create_root_context("r", b"trap_in=configure").unwrap_err();
    assert!(
        matches!(&err, HostError::VmFailed(m) if m.starts_with("on_configure trapped")),
        "{err}"
    );
    // on_vm_start.
    let mut options = probe_options(Profile::Kong);
    options.vm_configuration = b"trap".to_vec();
    let mut vm = start_with(&kafka_upstream_tests::load("abi_probe"), options);
    assert!(
        matches!(vm.create_root_context("r", b""), Err(HostError::VmFailed(m)) if m.starts_with("on_vm_start trapped"))
    );
    // on_tick: later streams fail closed.
    let mut p = Probe::configured(Profile::Envoy, "tick=10 trap_in=tick");
    p.vm.advance_time(Duration::from_millis(10)).unwrap();
    assert!(p.vm.failure().unwrap().starts_with("on_tick trapped"));
    let later = p.vm.create_http_stream(p.root).unwrap();
    p.vm.send_request_headers(later, &get("/"), true).unwrap();
    assert_eq!(p.vm.local_response(later).map(|l| l.status), Some(503));
    p.vm.advance_time(Duration::from_secs(1)).unwrap();
    // on_foreign_function.
    let mut p = Probe::configured(Profile::Kong, "trap_in=foreign_function");
    assert!(matches!(
        p.vm.call_foreign_callback(p.root, 1, b""),
        Err(HostError::VmFailed(_))
    ));
    // on_queue_ready, reached through another VM's enqueue.
    let mut p = Probe::configured(Profile::Envoy, "queue=q trap_in=queue_ready");
    p.stream("queue", &[("x-vm-id", VM_ID), ("x-queue", "q"), ("x-items", "a")], true);
    assert!(p.vm.failure().unwrap().starts_with("on_queue_ready trapped"));
}

#[test]
fn an_infinite_loop_is_stopped_by_the_callback_deadline() {
    for profile in PROFILES {
        let mut options = probe_options(profile);
        options.limits.callback_deadline = Duration::from_millis(100);
        let mut p = Probe::with(profile, "", options);
        let s = p.stream(
            "none",
            &[("x-trap-in", "request_headers"), ("x-trap-kind", "loop")],
            true,
        );
        let failure = p.vm.failure().unwrap();
        assert!(failure.contains("deadline exceeded"), "{profile}: {failure}");
        assert_eq!(p.vm.local_response(s).unwrap().status, fail_closed_status(profile));
    }
    // In a root callback too.
    let mut options = probe_options(Profile::Envoy);
    options.limits.callback_deadline = Duration::from_millis(50);
    let mut p = Probe::with(Profile::Envoy, "tick=10 trap_in=tick trap_kind=loop", options);
    p.vm.advance_time(Duration::from_millis(10)).unwrap();
    assert!(p.vm.failure().unwrap().contains("on_tick trapped: deadline exceeded"));
}

#[test]
fn the_deadline_is_per_callback_not_per_vm() {
    let mut options = probe_options(Profile::Envoy);
    options.limits.callback_deadline = Duration::from_millis(100);
    let mut p = Probe::with(Profile::Envoy, "", options);
    let started = Instant::now();
    // Many callbacks whose total time exceeds one deadline: none of them is cut short.
    while started.elapsed() < Duration::from_millis(300) {
        let s = p.stream("headers", &[], true);
        assert!(p.vm.request_headers_forwarded(s));
        p.vm.finish_stream(s).unwrap();
    }
    assert!(p.vm.failure().is_none());
}

#[test]
fn memory_growth_beyond_the_limit_fails_the_grow_not_the_host() {
    for profile in PROFILES {
        let mut options = probe_options(profile);
        options.limits.max_memory_bytes = 32 << 20;
        let mut p = Probe::with(profile, "", options);
        let limit_pages = (32 << 20) / 65536;
        p.stream("grow", &[("x-pages", "16")], true);
        let r = p.report("grow");
        let before = r["before_pages"].as_u64().unwrap();
        assert_eq!(r["grow_result"], before, "{profile}: memory.grow returns the old size");
        assert_eq!(r["after_pages"], before + 16);
        p.stream("grow", &[("x-pages", &limit_pages.to_string())], true);
        let r = p.report("grow");
        assert_eq!(r["grow_result"], -1, "{profile}: past the limit memory.grow fails");
        assert_eq!(r["after_pages"], r["before_pages"]);
        p.stream(
            "grow",
            &[("x-pages", "0"), ("x-alloc-bytes", &(64u64 << 20).to_string())],
            true,
        );
        assert_eq!(
            p.report("grow")["alloc_ok"],
            false,
            "the guest's allocator sees the failure"
        );
        assert!(p.vm.failure().is_none());
        assert!(p.vm.memory_bytes() <= 32 << 20);
    }
}

#[test]
fn memory_exhaustion_in_the_guest_allocator_traps_and_fails_closed() {
    for profile in PROFILES {
        let mut options = probe_options(profile);
        options.limits.max_memory_bytes = 32 << 20;
        let mut p = Probe::with(profile, "", options);
        let s = p.stream(
            "none",
            &[("x-trap-in", "request_headers"), ("x-trap-kind", "alloc")],
            true,
        );
        assert!(p.vm.failure().unwrap().starts_with("on_request_headers trapped"));
        assert!(
            logs_at(&p.vm, LogLevel::Error)
                .iter()
                .any(|e| e.message.starts_with("memory allocation of")),
            "Rust's OOM message reaches the log through stderr"
        );
        assert_eq!(p.vm.local_response(s).unwrap().status, fail_closed_status(profile));
        assert!(p.vm.memory_bytes() <= 32 << 20);
    }
}

#[test]
fn a_value_too_large_for_the_guest_traps_in_its_allocator() {
    let mut options = probe_options(Profile::Envoy);
    options.limits.max_memory_bytes = 16 << 20;
    let mut p = Probe::with(Profile::Envoy, "", options);
    p.vm.register_foreign_function("huge", Arc::new(|_: &[u8]| Ok(vec![7u8; 32 << 20])));
    let s = p.stream("foreign", &[("x-fn", "huge")], true);
    let failure = p.vm.failure().unwrap();
    assert!(failure.contains("guest allocator trapped"), "{failure}");
    assert_eq!(p.vm.local_response(s).unwrap().status, 503);
}

#[test]
fn fuel_exhaustion_is_contained() {
    let module = load_fueled("abi_probe");
    for profile in PROFILES {
        let mut options = probe_options(profile);
        options.limits.fuel_per_callback = Some(20_000_000);
        let mut p = Probe::with_module(&module, profile, "", options);
        // Ordinary callbacks fit in the budget, which is refilled for every callback.
        for _ in 0..3 {
            let s = p.stream("headers", &[], true);
            assert!(p.vm.request_headers_forwarded(s), "{profile}: {}", p.logs());
        }
        let left = p.vm.fuel().unwrap();
        assert!(left > 0 && left < 20_000_000, "{left}");
        let s = p.stream(
            "none",
            &[("x-trap-in", "request_headers"), ("x-trap-kind", "loop")],
            true,
        );
        let failure = p.vm.failure().unwrap();
        assert!(failure.contains("fuel exhausted"), "{profile}: {failure}");
        assert_eq!(p.vm.local_response(s).unwrap().status, fail_closed_status(profile));
        assert_eq!(p.vm.fuel(), Some(0));
    }
}

#[test]
fn a_failed_vm_answers_callouts_without_running_the_guest() {
    let mut p = Probe::new(Profile::Envoy);
    let callout = p.stream("callout", &[], true);
    let grpc_stream = p.stream("grpc_call", &[], true);
    let grpc = p.vm.grpc_calls()[0].token;
    let s = p.stream("none", &[("x-trap-in", "request_headers")], true);
    assert!(p.vm.failure().is_some());
    assert!(p.vm.local_response(s).is_some());
    // The callout answer is accepted; the stream that made it fails closed.
    let token = p.vm.http_calls()[0].token;
    p.vm.respond_http_call(
        token,
        host_sim::HttpCallReply::Response {
            status: 200,
            headers: vec![],
            body: vec![],
            trailers: vec![],
        },
    )
    .unwrap();
    assert_eq!(p.vm.local_response(callout).unwrap().status, 503);
    p.vm.respond_grpc(
        grpc,
        GrpcReply {
            close: Some((0, String::new())),
            ..GrpcReply::default()
        },
    )
    .unwrap();
    assert!(p.reports("grpc_call_response").is_empty());
    assert_eq!(p.vm.local_response(grpc_stream).unwrap().status, 503);
}

#[test]
fn a_trap_in_a_grpc_callback_fails_the_stream_closed() {
    for (callback, scenario) in [
        ("grpc_call_response", "grpc_call"),
        ("grpc_initial_metadata", "grpc_stream"),
        ("grpc_message", "grpc_stream"),
        ("grpc_trailing_metadata", "grpc_stream"),
        ("grpc_close", "grpc_stream"),
    ] {
        let mut p = Probe::new(Profile::Envoy);
        let s = p.stream(scenario, &[("x-trap-in", callback)], true);
        let token = p.vm.grpc_calls()[0].token;
        let reply = GrpcReply {
            initial_metadata: Some(vec![("a".into(), "1".into())]),
            messages: vec![b"m".to_vec()],
            trailing_metadata: Some(vec![("b".into(), "2".into())]),
            close: Some((0, String::new())),
        };
        p.vm.respond_grpc(token, reply).unwrap();
        let failure = p.vm.failure().unwrap_or_else(|| panic!("{callback}: no failure"));
        assert!(failure.contains("trapped"), "{callback}: {failure}");
        assert_eq!(p.vm.local_response(s).map(|l| l.status), Some(503), "{callback}");
        assert!(
            !p.vm.request_headers_forwarded(s),
            "{callback}: the paused request never went upstream"
        );
    }
}

// ---- Hand-written guests --------------------------------------------------------------------------

/// Loads `wat` and starts it on `profile`.
fn wat_vm(wat: &str, profile: Profile) -> Result<Vm, HostError> {
    Vm::start(&load_wat(wat), options(profile))
}

/// A guest whose allocator answers `$alloc`, and whose `on_configure` asks for the plugin
/// configuration with each answer, logging each status as one digit (`'0' + status`).
const EVIL_ALLOCATOR: &str = r#"
(module
  (import "env" "proxy_get_buffer_bytes" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $alloc (mut i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (global.get $alloc))
  (func $report (param i32)
    (i32.store8 (i32.const 512) (i32.add (local.get 0) (i32.const 48)))
    (drop (call $log (i32.const 2) (i32.const 512) (i32.const 1))))
  (func $try (param i32)
    (global.set $alloc (local.get 0))
    (call $report (call $get (i32.const 7) (i32.const 0) (i32.const 100) (i32.const 256) (i32.const 260))))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (call $try (i32.const 0))            ;; allocation failure
    (call $try (i32.const 0xFFFFFFF0))   ;; a pointer outside memory
    (call $try (i32.const 65530))        ;; a block that runs past the end
    (call $try (i32.const 1024))         ;; a good block
    (i32.const 1)))
"#;

#[test]
fn a_lying_allocator_gets_invalid_memory_access() {
    for profile in PROFILES {
        let mut vm = wat_vm(EVIL_ALLOCATOR, profile).unwrap();
        let root = vm.create_root_context("", b"twenty bytes of conf").unwrap();
        assert!(root.configure_ok);
        let statuses: Vec<String> = vm.logs().into_iter().map(|e| e.message).collect();
        assert_eq!(statuses, ["6", "6", "6", "0"], "{profile}");
        assert!(vm.failure().is_none());
    }
}

#[test]
fn a_trapping_allocator_fails_the_callback() {
    let wat = EVIL_ALLOCATOR.replace("(global.get $alloc))", "(unreachable))");
    let mut vm = wat_vm(&wat, Profile::Envoy).unwrap();
    let err = vm.create_root_context("", b"conf").unwrap_err();
    assert!(
        matches!(&err, HostError::VmFailed(m) if m.contains("guest allocator trapped")),
        "{err}"
    );
}

#[test]
fn malloc_is_the_allocator_when_proxy_on_memory_allocate_is_absent() {
    let wat = r#"
(module
  (import "env" "proxy_get_buffer_bytes" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) (i32.const 2048))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $get (i32.const 7) (i32.const 0) (i32.const 100) (i32.const 256) (i32.const 260)))
    ;; Log what the host wrote: the returned pointer must be malloc's, the bytes the config.
    (drop (call $log (i32.const 2) (i32.load (i32.const 256)) (i32.load (i32.const 260))))
    (i32.eq (i32.load (i32.const 256)) (i32.const 2048))))
"#;
    let mut vm = wat_vm(wat, Profile::Kong).unwrap();
    let root = vm.create_root_context("", b"via malloc").unwrap();
    assert!(root.configure_ok);
    assert_eq!(kafka_upstream_tests::log_messages(&vm), ["via malloc"]);
}

#[test]
fn a_guest_without_memory_gets_invalid_memory_access() {
    let wat = r#"
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (i32.eq (call $log (i32.const 2) (i32.const 0) (i32.const 4)) (i32.const 6))))
"#;
    let mut vm = wat_vm(wat, Profile::Envoy).unwrap();
    assert!(vm.create_root_context("", b"").unwrap().configure_ok);
}

/// A real host refuses a module with an import it cannot link, whether or not the import is
/// ever called (proxy-wasm-cpp-host src/v8/v8.cc:387-391; ngx_wasm_module src/wasm/vm/ngx_wavm.c
/// :720-743), and so does a VM of that profile, naming every such import.
#[test]
fn an_import_the_host_cannot_link_makes_it_refuse_the_module() {
    let with_import = |module: &str, name: &str| {
        format!(
            r#"
(module
  (import "{module}" "{name}" (func $imported (param i32)))
  (import "env" "proxy_no_such_function" (func $nope (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1)))
"#
        )
    };
    for profile in Profile::ALL {
        let err = wat_vm(&with_import("env", "proxy_log_nope"), profile).err().unwrap();
        assert!(
            matches!(&err, HostError::Unlinkable { imports, .. }
                if imports == &["env.proxy_log_nope", "env.proxy_no_such_function"]),
            "{profile}: {err}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("the {profile} host cannot link env.proxy_log_nope, ")),
            "{err}"
        );
    }
    let linkable_only = |module: &str, name: &str| {
        with_import(module, name).replace(
            "  (import \"env\" \"proxy_no_such_function\" (func $nope (result i32)))\n",
            "",
        )
    };
    // AssemblyScript's `abort`/`proc_exit` path imports the old WASI name: Envoy links it,
    // ngx_wasm_module's wasmtime WASI does not (ngx_wrt_wasmtime.c links wasi_snapshot_preview1).
    let old_wasi = linkable_only("wasi_unstable", "proc_exit");
    assert!(wat_vm(&old_wasi, Profile::Envoy).is_ok());
    let err = wat_vm(&old_wasi, Profile::Kong).err().unwrap();
    assert!(
        matches!(&err, HostError::Unlinkable { profile: "kong", imports } if imports == &["wasi_unstable.proc_exit"]),
        "{err}"
    );
    // ABI 0.1.0's names that ngx_wasm_module still links and Envoy does not.
    let legacy = linkable_only("env", "proxy_continue_request");
    assert!(wat_vm(&legacy, Profile::Kong).is_ok());
    assert!(matches!(
        wat_vm(&legacy, Profile::Envoy),
        Err(HostError::Unlinkable { .. })
    ));
}

#[test]
fn exports_with_the_wrong_signature_and_missing_abi_versions_are_refused() {
    let wrong = r#"
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param i32) (result i32) (i32.const 0)))
"#;
    assert!(
        matches!(wat_vm(wrong, Profile::Envoy), Err(HostError::BadExport(name)) if name == "proxy_on_request_headers")
    );
    let no_abi = r#"(module (memory (export "memory") 1))"#;
    let err = kafka_upstream_tests::engine()
        .load_bytes(no_abi.as_bytes())
        .err()
        .unwrap();
    assert!(matches!(err, HostError::UnsupportedAbi(_)), "{err}");
    let future = r#"(module (func (export "proxy_abi_version_0_3_0")))"#;
    let err = kafka_upstream_tests::engine()
        .load_bytes(future.as_bytes())
        .err()
        .unwrap();
    assert!(
        matches!(&err, HostError::UnsupportedAbi(v) if v == "proxy_abi_version_0_3_0"),
        "{err}"
    );
}

#[test]
fn start_functions_run_in_each_hosts_order_and_a_trap_there_is_reported() {
    let wat = r#"
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "_initialize")
  (data (i32.const 32) "main")
  (data (i32.const 48) "_start")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "_initialize") (drop (call $log (i32.const 2) (i32.const 16) (i32.const 11))))
  (func (export "main") (param i32 i32) (result i32) (drop (call $log (i32.const 2) (i32.const 32) (i32.const 4))) (i32.const 0))
  (func (export "_start") (drop (call $log (i32.const 2) (i32.const 48) (i32.const 6)))))
"#;
    // Spec and Envoy: _initialize, then main; _start only without _initialize. Kong: the first
    // of _start and _initialize.
    let envoy = wat_vm(wat, Profile::Envoy).unwrap();
    assert_eq!(kafka_upstream_tests::log_messages(&envoy), ["_initialize", "main"]);
    let kong = wat_vm(wat, Profile::Kong).unwrap();
    assert_eq!(kafka_upstream_tests::log_messages(&kong), ["_start"]);
    let only_start = wat
        .replace("(export \"_initialize\")", "")
        .replace("(export \"main\")", "");
    let envoy = wat_vm(&only_start, Profile::Envoy).unwrap();
    assert_eq!(kafka_upstream_tests::log_messages(&envoy), ["_start"]);

    let trapping = r#"
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "_initialize") unreachable))
"#;
    assert!(matches!(wat_vm(trapping, Profile::Envoy), Err(HostError::Start(m)) if m.contains("unreachable")));
}

#[test]
fn limits_default_to_envoys() {
    let limits = Limits::default();
    assert_eq!(limits.max_memory_bytes, 1 << 30, "1 GiB, like Envoy");
    assert_eq!(limits.max_pairs, 1024);
    assert!(limits.fuel_per_callback.is_none());
}

#[test]
fn an_oversized_header_map_from_the_guest_is_refused() {
    let wat = r#"
(module
  (import "env" "proxy_set_header_map_pairs" (func $set (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    ;; 2000 empty pairs: 4 + 2000*8 size bytes + 2000*2 NULs, all zero but the count.
    (i32.store (i32.const 0) (i32.const 2000))
    (if (i32.ne (call $set (i32.const 0) (i32.const 0) (i32.const 20004)) (i32.const 2))
      (then unreachable))
    (i32.const 0)))
"#;
    let mut vm = wat_vm(wat, Profile::Envoy).unwrap();
    let root = vm.create_root_context("", b"").unwrap();
    let s = vm.create_http_stream(root.id).unwrap();
    let action = vm.send_request_headers(s, &[(":path", "/")], true).unwrap();
    assert_eq!(
        action,
        Some(host_sim::Action::Continue),
        "more than Limits::max_pairs is BAD_ARGUMENT"
    );
    assert_eq!(vm.request_headers(s).unwrap().len(), 1);
}

// ---- What the host does after a trap (`host_sim::AfterTrap`) -----------------------------------

fn get(path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".to_string()),
        (":path", path.to_string()),
        (":authority", "a".to_string()),
    ]
}

#[test]
fn after_a_trap_envoy_keeps_the_vm_failed() {
    let mut p = Probe::configured(Profile::Envoy, "tick=10");
    p.vm.advance_time(Duration::from_millis(10)).unwrap();
    assert_eq!(p.reports("tick").len(), 1);
    let s = p.stream("none", &[("x-trap-in", "request_headers")], true);
    assert_eq!(p.vm.local_response(s).unwrap().status, 503);
    // Later streams are created and fail closed at their first callback; no guest code runs.
    let later = p.vm.create_http_stream(p.root).unwrap();
    p.vm.send_request_headers(later, &get("/later"), true).unwrap();
    let local = p.vm.local_response(later).unwrap();
    assert_eq!((local.status, local.details.as_str()), (503, "wasm_fail_stream"));
    assert!(
        local.headers.is_empty(),
        "Envoy keeps the connection: {:?}",
        local.headers
    );
    assert_eq!(p.reports("request_headers").len(), 1, "{}", p.logs());
    // Ticks stop, and nothing is started again.
    assert_eq!(p.vm.next_timer_ns(), None);
    p.vm.advance_time(Duration::from_secs(1)).unwrap();
    assert_eq!(p.reports("tick").len(), 1);
    assert_eq!((p.reports("vm_start").len(), p.reports("configure").len()), (1, 1));
    assert!(p.vm.failure().is_some());
}

#[test]
fn envoy_fail_open_lets_streams_of_a_failed_vm_pass() {
    let mut options = probe_options(Profile::Envoy);
    options.fail_open = true;
    let mut p = Probe::with(Profile::Envoy, "", options);
    let s = p.stream("none", &[("x-trap-in", "request_headers")], true);
    assert!(p.vm.failure().is_some());
    assert!(p.vm.local_response(s).is_none(), "the trapping call counts as Continue");
    assert!(p.vm.request_headers_forwarded(s));
    // A later stream passes both ways without the guest.
    let later = p.stream("local", &[], true);
    assert!(p.vm.local_response(later).is_none(), "the filter's 418 never happens");
    assert!(p.vm.request_forwarded_complete(later));
    assert_eq!(
        p.vm.send_response_headers(later, &[(":status", "200")], true).unwrap(),
        None
    );
    assert!(p.vm.response_headers_forwarded(later));
    assert!(p.vm.actions(later).is_empty(), "the guest saw nothing of it");
    assert_eq!(p.reports("request_headers").len(), 1);
}

#[test]
fn after_a_trap_kong_creates_each_root_again_when_its_filter_next_runs() {
    // Two filters of the module on one instance, each with its own root context.
    let mut p = Probe::configured(Profile::Kong, "");
    let other = p.vm.create_root_context("", b"set_prop").unwrap().id;
    let configured = |p: &Probe| -> Vec<u64> {
        (p.reports("configure").iter())
            .filter_map(|r| r["context"].as_u64())
            .collect()
    };
    let before = configured(&p);
    assert_eq!(before, [u64::from(p.root), u64::from(other)]);
    let s = p.stream("none", &[("x-trap-in", "request_headers")], true);
    assert_eq!(p.vm.local_response(s).unwrap().status, 500);
    // The other filter's next stream starts the fresh instance: only its root is created again.
    let next = p.vm.create_http_stream(other).unwrap();
    p.vm.send_request_headers(next, &get("/other"), true).unwrap();
    assert!(p.vm.failure().is_none(), "{}", p.logs());
    assert_eq!(configured(&p)[before.len()..], [u64::from(other)]);
    // The first filter's root comes back with its own next stream, still without on_vm_start.
    let first = p.stream("local", &[], true);
    assert_eq!(p.vm.local_response(first).unwrap().status, 418, "{}", p.logs());
    assert_eq!(configured(&p)[before.len()..], [u64::from(other), u64::from(p.root)]);
    assert_eq!(p.reports("vm_start").len(), 2, "one per root, before the trap only");
}

#[test]
fn after_a_trap_kong_starts_a_fresh_instance_without_on_vm_start() {
    let mut p = Probe::configured(Profile::Kong, "tick=10");
    let in_flight = p.vm.create_http_stream(p.root).unwrap();
    let s = p.stream("none", &[("x-trap-in", "request_headers")], true);
    let local = p.vm.local_response(s).unwrap().clone();
    assert_eq!(local.status, 500);
    assert!(local.headers.contains(&("connection".to_string(), "close".to_string())));
    // Ticks stop with the trapped instance.
    assert_eq!(p.vm.next_timer_ns(), None);
    // The next stream gets a fresh instance: roots created and configured, no on_vm_start.
    let later = p.stream("local", &[], true);
    assert!(p.vm.failure().is_none(), "{}", p.logs());
    assert_eq!(p.reports("vm_start").len(), 1, "on_vm_start ran once: {}", p.logs());
    assert_eq!(p.reports("configure").len(), 2);
    assert_eq!(p.report("configure")["context"], p.root, "the same root context id");
    assert_eq!(p.vm.local_response(later).unwrap().status, 418, "the filter runs again");
    // The tick set in on_configure runs on the fresh instance, and the timer armed before the
    // trap still fires too: ticks double (profile `tick_timers_outlive_instance`, KONG-OBS).
    let ticks = p.reports("tick").len();
    p.vm.advance_time(Duration::from_millis(10)).unwrap();
    assert_eq!(p.reports("tick").len(), ticks + 2);
    // A stream that was in flight on the trapped instance fails closed and runs no guest code.
    p.vm.send_request_headers(in_flight, &get("/in-flight"), true).unwrap();
    assert_eq!(p.vm.local_response(in_flight).unwrap().status, 500);
    // The trapping stream ends without callbacks; the fresh one with Kong's three.
    p.vm.finish_stream(s).unwrap();
    p.vm.finish_stream(later).unwrap();
    let ended = |id: u32| -> Vec<&str> {
        (p.vm.actions(id).iter())
            .map(|a| a.callback)
            .filter(|c| matches!(*c, "on_log" | "on_done" | "on_delete"))
            .collect()
    };
    assert!(ended(s).is_empty());
    assert_eq!(ended(later), ["on_done", "on_log", "on_delete"]);
    assert_eq!(p.reports("on_log").len(), 1);
    // Another trap and re-creation adds one more.
    let again = p.stream("none", &[("x-trap-in", "request_headers")], true);
    assert_eq!(p.vm.local_response(again).unwrap().status, 500);
    p.stream("local", &[], true);
    let ticks = p.reports("tick").len();
    p.vm.advance_time(Duration::from_millis(10)).unwrap();
    assert_eq!(p.reports("tick").len(), ticks + 3);
}
