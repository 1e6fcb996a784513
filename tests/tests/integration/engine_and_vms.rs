//! The engine and the driver around the guest: warm start from the precompiled cache, module
//! facts, many VMs in parallel threads of one process, and the plain lifecycle on `noop.wasm`.

use crate::probe::{probe_options, Probe, PLUGIN};
use host_sim::{Action, Engine, EngineConfig, Profile};
use kafka_upstream_tests::{load, start, wasm_path, PROFILES};
use std::sync::Arc;

#[test]
fn the_second_load_of_a_module_comes_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(EngineConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        fuel: false,
    })
    .unwrap();
    let path = wasm_path("noop");
    let cold = engine.load_file(&path).unwrap();
    assert!(!cold.loaded_from_cache(), "a fresh cache directory means a compile");
    let artifacts: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    assert!(artifacts[0].to_string_lossy().starts_with(cold.sha256()));
    let warm = engine.load_file(&path).unwrap();
    assert!(warm.loaded_from_cache(), "warm start must not recompile");
    assert_eq!(warm.sha256(), cold.sha256());
    // Another engine with the same settings (another process, in practice) reuses it too.
    let other = Engine::new(EngineConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        fuel: false,
    })
    .unwrap();
    assert!(other.load_file(&path).unwrap().loaded_from_cache());
    // The cached module runs.
    let mut vm = host_sim::Vm::start(&warm, host_sim::VmOptions::new(Profile::Envoy)).unwrap();
    let root = vm.create_root_context("", b"").unwrap();
    assert!(root.configure_ok);
    // Fuel metering changes the compiled code: a fuel engine does not take the artifact.
    let fuel = Engine::new(EngineConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        fuel: true,
    })
    .unwrap();
    assert!(!fuel.load_file(&path).unwrap().loaded_from_cache());
}

#[test]
fn threads_loading_one_module_into_one_cache_all_get_a_working_module() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(wasm_path("abi_probe")).unwrap();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let dir = dir.path().to_path_buf();
            let bytes = bytes.clone();
            std::thread::spawn(move || {
                let engine = Engine::new(EngineConfig {
                    cache_dir: Some(dir),
                    fuel: false,
                })
                .unwrap();
                for _ in 0..3 {
                    let module = engine.load_bytes(&bytes).unwrap();
                    let mut p = Probe::with_module(&module, Profile::Envoy, "", probe_options(Profile::Envoy));
                    p.stream("headers", &[("x-one", "1")], true);
                    assert_eq!(p.report("headers")["one"], "1");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a loader thread panicked");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "one artifact, no temporary files left: {left:?}");
}

#[test]
fn without_a_cache_directory_nothing_is_cached() {
    let engine = Engine::new(EngineConfig {
        cache_dir: None,
        fuel: false,
    })
    .unwrap();
    let path = wasm_path("noop");
    assert!(!engine.load_file(&path).unwrap().loaded_from_cache());
    assert!(!engine.load_file(&path).unwrap().loaded_from_cache());
}

#[test]
fn a_corrupt_cache_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        fuel: false,
    };
    let engine = Engine::new(config).unwrap();
    let path = wasm_path("noop");
    engine.load_file(&path).unwrap();
    let entry = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
    std::fs::write(&entry, b"not a precompiled module").unwrap();
    let module = engine.load_file(&path).unwrap();
    assert!(!module.loaded_from_cache());
    let mut vm = host_sim::Vm::start(&module, host_sim::VmOptions::new(Profile::Kong)).unwrap();
    assert!(vm.create_root_context("", b"").unwrap().configure_ok);
}

#[test]
fn module_info_lists_the_abi_version_exports_and_imports() {
    let module = load("abi_probe");
    let info = module.info();
    assert_eq!(info.abi_version.as_deref(), Some("proxy_abi_version_0_2_1"));
    assert_eq!(
        info.size as u64,
        std::fs::metadata(wasm_path("abi_probe")).unwrap().len()
    );
    assert_eq!(info.sha256.len(), 64);
    for export in [
        "memory",
        "_initialize",
        "proxy_on_memory_allocate",
        "proxy_on_request_headers",
        "proxy_on_http_call_response",
    ] {
        assert!(info.exports.iter().any(|e| e == export), "{export}");
    }
    // The probe imports every host function of the ABI.
    for f in host_sim::HostFunction::ALL {
        let name = format!("env.{}", f.name());
        assert!(info.imports.contains(&name), "abi_probe does not import {name}");
    }
    for wasi in ["fd_write", "random_get", "clock_time_get", "environ_get"] {
        assert!(
            info.imports.contains(&format!("wasi_snapshot_preview1.{wasi}")),
            "{wasi}"
        );
    }
}

#[test]
fn noop_runs_a_whole_request_on_both_profiles() {
    for profile in PROFILES {
        let mut vm = start("noop", profile);
        let root = vm.create_root_context("noop", b"").unwrap();
        assert!(root.vm_start_ok && root.configure_ok);
        let s = vm.create_http_stream(root.id).unwrap();
        let headers = [(":method", "POST"), (":path", "/"), (":authority", "a")];
        assert_eq!(
            vm.send_request_headers(s, &headers, false).unwrap(),
            Some(Action::Continue)
        );
        assert_eq!(vm.send_request_body(s, b"hello", true).unwrap(), Some(Action::Continue));
        assert_eq!(
            vm.send_response_headers(s, &[(":status", "200")], false).unwrap(),
            Some(Action::Continue)
        );
        assert_eq!(
            vm.send_response_body(s, b"world", true).unwrap(),
            Some(Action::Continue)
        );
        assert!(vm.request_forwarded_complete(s));
        assert_eq!(vm.forwarded_request_body(s), Some(&b"hello"[..]));
        assert_eq!(vm.forwarded_response_body(s), Some(&b"world"[..]));
        let callbacks: Vec<(&str, Option<&str>)> = vm.actions(s).iter().map(|a| (a.callback, a.action)).collect();
        assert_eq!(
            callbacks,
            [
                ("on_request_headers", Some("Continue")),
                ("on_request_body", Some("Continue")),
                ("on_response_headers", Some("Continue")),
                ("on_response_body", Some("Continue")),
            ]
        );
        vm.finish_stream(s).unwrap();
        assert!(!vm.stream_exists(s));
        assert!(vm.logs().is_empty(), "{profile}: {:?}", vm.logs());
        assert!(vm.failure().is_none());
        vm.finish_root(root.id).unwrap();
    }
}

#[test]
fn many_vms_run_in_parallel_threads_of_one_process() {
    let module = load("abi_probe");
    let shared = host_sim::Shared::new();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let module = module.clone();
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let profile = PROFILES[i % 2];
                let mut options = probe_options(profile);
                options.shared = Some(shared);
                let mut p = Probe::with_module(&module, profile, "", options);
                for n in 0..40 {
                    let value = format!("t{i}-n{n}");
                    let s = p.stream("headers", &[("x-one", &value)], true);
                    assert_eq!(p.report("headers")["one"], value.as_str());
                    assert_eq!(
                        kafka_upstream_tests::header(&p.vm.request_headers(s).unwrap(), "x-added"),
                        Some("1")
                    );
                    p.stream(
                        "metric_op",
                        &[("x-metric-op", "increment"), ("x-metric-value", "6")],
                        true,
                    );
                    p.vm.finish_stream(s).unwrap();
                }
                assert!(p.vm.failure().is_none());
                // Each VM's state is its own: its log holds only its own values.
                assert!(p
                    .reports("headers")
                    .iter()
                    .all(|r| r["one"].as_str().unwrap().starts_with(&format!("t{i}-"))));
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a VM thread panicked");
    }
    // Metrics are shared through the one `Shared`: 4 VMs per host x 40 streams x 6 per stream.
    let metrics = shared.metrics();
    let envoy = metrics["wasmcustom.probe_op_counter"].value;
    let kong = metrics[&format!("pw.{}.probe_op_counter", PLUGIN)].value;
    assert_eq!((envoy, kong), (4 * 40 * 6, 4 * 40 * 6));
}

#[test]
fn vms_without_a_shared_state_do_not_share() {
    let mut a = Probe::new(Profile::Envoy);
    let mut b = Probe::new(Profile::Envoy);
    a.stream("metrics", &[], true);
    a.stream("metrics", &[], true);
    b.stream("metrics", &[], true);
    assert_eq!(a.vm.metrics()["wasmcustom.probe_counter"].value, 12);
    assert_eq!(b.vm.metrics()["wasmcustom.probe_counter"].value, 6);
}

#[test]
fn streams_reusing_a_finished_streams_header_maps_see_exactly_their_own_headers() {
    for profile in PROFILES {
        let mut vm = start("noop", profile);
        let root = vm.create_root_context("noop", b"").unwrap().id;
        // More headers than the first stream, then fewer, then more again: each stream's map
        // is built in what the previous one left.
        let shapes: [&[(&str, &str)]; 3] = [
            &[(":method", "GET"), (":path", "/a"), ("X-One", "1")],
            &[
                (":method", "POST"),
                (":path", "/bb"),
                ("X-Two", "22"),
                ("x-three", "333"),
                ("x-four", ""),
            ],
            &[(":method", "PUT")],
        ];
        for headers in shapes.iter().chain(shapes.iter()) {
            let s = vm.create_http_stream(root).unwrap();
            vm.send_request_headers(s, headers, true).unwrap();
            vm.send_response_headers(s, &[(":status", "204"), ("Server", "up")], true)
                .unwrap();
            let expected: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| {
                    let k = if profile == Profile::Envoy {
                        k.to_ascii_lowercase()
                    } else {
                        k.to_string()
                    };
                    (k, v.to_string())
                })
                .collect();
            assert_eq!(vm.request_headers(s).unwrap(), expected, "{profile}");
            let server = if profile == Profile::Envoy { "server" } else { "Server" };
            assert_eq!(
                vm.response_headers(s).unwrap(),
                [
                    (":status".to_string(), "204".to_string()),
                    (server.to_string(), "up".to_string())
                ],
                "{profile}"
            );
            vm.finish_stream(s).unwrap();
        }
    }
}

#[test]
fn only_streams_an_event_touched_are_listed_and_finished_streams_keep_a_bounded_record() {
    let mut vm = start("noop", Profile::Envoy);
    let root = vm.create_root_context("noop", b"").unwrap().id;
    let a = vm.create_http_stream(root).unwrap();
    let b = vm.create_http_stream(root).unwrap();
    assert_eq!(
        vm.take_touched_streams(),
        [a, b],
        "context creation runs a callback on each"
    );
    assert!(vm.take_touched_streams().is_empty());
    vm.send_request_headers(b, &[(":method", "GET")], false).unwrap();
    vm.send_request_body(b, b"x", false).unwrap();
    assert_eq!(
        vm.take_touched_streams(),
        [b],
        "two events on b, one entry, nothing on a"
    );
    vm.finish_stream(a).unwrap();
    vm.finish_stream(b).unwrap();
    // The actions of finished streams stay readable for the last FINISHED_ACTIONS_KEPT only.
    let first = vm.create_http_stream(root).unwrap();
    vm.send_request_headers(first, &[(":method", "GET")], true).unwrap();
    vm.finish_stream(first).unwrap();
    assert_eq!(vm.actions(first)[0].callback, "on_request_headers");
    let mut last = first;
    for _ in 0..host_sim::vm::FINISHED_ACTIONS_KEPT {
        last = vm.create_http_stream(root).unwrap();
        vm.send_request_headers(last, &[(":method", "GET")], true).unwrap();
        vm.finish_stream(last).unwrap();
    }
    assert!(vm.actions(first).is_empty());
    let callbacks: Vec<&str> = vm.actions(last).iter().map(|a| a.callback).collect();
    assert_eq!(callbacks, ["on_request_headers", "on_log", "on_done", "on_delete"]);
}
