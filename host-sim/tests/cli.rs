//! The `host-sim` binary, run as a user runs it: `info` and `run` on a small proxy-wasm module
//! written in WebAssembly text, and the one-line errors and exit codes of bad input.

use host_sim::abi::encode_pairs;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// WAT string literal of some bytes.
fn wat_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// A minimal proxy-wasm filter:
/// - `proxy_on_configure` fails for the 4-byte configuration `fail`;
/// - `proxy_on_request_headers` logs, calls upstream `backend` (BAD_ARGUMENT → local 502
///   "no upstream") and pauses;
/// - `proxy_on_http_call_response` answers locally: 200 "done" with `x-sim: 1`;
/// - `proxy_on_request_body` traps (`unreachable`).
///
/// It imports `proxy_get_log_level` (Kong lacks it) without calling it.
fn filter_wat(upstream: &str) -> String {
    let call_headers = encode_pairs(&[(":method", "GET"), (":path", "/lookup"), (":authority", "backend")]);
    let response_headers = encode_pairs(&[("x-sim", "1")]);
    format!(
        r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call"
    (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $send (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_log_level" (func $get_log_level (param i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (data (i32.const 100) "hello from wat")
  (data (i32.const 200) "{upstream}")
  (data (i32.const 300) "{call_headers}")
  (data (i32.const 1000) "done")
  (data (i32.const 1100) "no upstream")
  (data (i32.const 1200) "{response_headers}")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (i32.ne (local.get $size) (i32.const 4)))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (drop (call $log (i32.const 2) (i32.const 100) (i32.const 14)))
    (if (call $http_call (i32.const 200) (i32.const {upstream_len})
          (i32.const 300) (i32.const {call_headers_len})
          (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
          (i32.const 5000) (i32.const 2000))
      (then
        (drop (call $send (i32.const 502) (i32.const 0) (i32.const 0)
          (i32.const 1100) (i32.const 11) (i32.const 0) (i32.const 0) (i32.const -1)))
        (return (i32.const 1))))
    (i32.const 1))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    unreachable)
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (drop (call $send (i32.const 200) (i32.const 0) (i32.const 0)
      (i32.const 1000) (i32.const 4) (i32.const 1200) (i32.const {response_headers_len}) (i32.const -1))))
)"#,
        upstream = upstream,
        upstream_len = upstream.len(),
        call_headers = wat_bytes(&call_headers),
        call_headers_len = call_headers.len(),
        response_headers = wat_bytes(&response_headers),
        response_headers_len = response_headers.len(),
    )
}

/// [`filter_wat`] also importing `proxy_no_such_function`, which no host links (so no host
/// loads it), without calling it.
fn unlinkable_filter_wat() -> String {
    filter_wat("backend").replacen(
        "  (memory (export \"memory\") 1)",
        "  (import \"env\" \"proxy_no_such_function\" (func $nope (param i32)))\n  (memory (export \"memory\") 1)",
        1,
    )
}

/// A scratch directory with the filter and input files.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        f.write("filter.wat", &filter_wat("backend"));
        f.write("unlinkable.wat", &unlinkable_filter_wat());
        f.write("config.json", r#"{"any":"thing"}"#);
        f.write(
            "request.json",
            r#"{"headers":[[":method","GET"],[":path","/p?x=1"],[":authority","h"]],"body":"","body_base64":false,"trailers":[]}"#,
        );
        f.write(
            "response.json",
            r#"{"status":200,"headers":[["content-type","application/json"]],"body":"{}"}"#,
        );
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs host-sim with `args`; `@name` stands for a file of the fixture.
    fn host_sim(&self, args: &[&str]) -> Output {
        self.host_sim_with_cache(args, &self.path("cache"))
    }

    /// [`Fixture::host_sim`] with the precompiled-module cache the workspace's tests share, so
    /// the real filters are compiled once, not once per test.
    fn host_sim_shared_cache(&self, args: &[&str]) -> Output {
        let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/host-sim-cache");
        self.host_sim_with_cache(args, &cache)
    }

    fn host_sim_with_cache(&self, args: &[&str], cache: &Path) -> Output {
        let args: Vec<String> = args
            .iter()
            .map(|a| match a.strip_prefix('@') {
                Some(name) => self.path(name).display().to_string(),
                None => a.to_string(),
            })
            .collect();
        Command::new(env!("CARGO_BIN_EXE_host-sim"))
            .args(&args)
            .env("HOST_SIM_CACHE_DIR", cache)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    fn run_json(&self, extra: &[&str]) -> Value {
        let mut args = vec![
            "run",
            "--profile",
            "envoy",
            "--filter",
            "@filter.wat",
            "--config",
            "@config.json",
            "--request",
            "@request.json",
        ];
        args.extend_from_slice(extra);
        let out = self.host_sim(&args);
        assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("stdout is the JSON transcript")
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts exit code 2 and exactly one `host-sim: ...` line on stderr; returns it.
fn usage_error(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("host-sim: "), "{err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
    assert!(out.stdout.is_empty());
    err.trim_end().to_string()
}

/// Asserts exit code 1 (a runtime failure) and that stderr ends with one `host-sim: ...` line
/// (lines before it are the filter's own); returns that line.
fn runtime_error(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("host-sim: "), "{err}");
    assert_eq!(err.matches("host-sim: ").count(), 1, "one host-sim line: {err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
    assert!(out.stdout.is_empty());
    last.to_string()
}

/// A module built by `make wasm` (`$WASM_DIR`, else `target/wasm32-wasip1/wasm/`); panics,
/// saying how to build it, when it is missing.
fn built_wasm(name: &str) -> PathBuf {
    let dir = match std::env::var_os("WASM_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip1/wasm"),
    };
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} does not exist: build the wasm modules first with `make wasm`",
        path.display()
    );
    path
}

/// The kafka-upstream filter's crate version, from filter/Cargo.toml.
fn filter_crate_version() -> String {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../filter/Cargo.toml")).unwrap();
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("filter/Cargo.toml has a version line")
        .to_string()
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn info_text() {
    let f = Fixture::new();
    let out = f.host_sim(&["info", "@unlinkable.wat"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let sha = sha256_of(&f.path("unlinkable.wat"));
    assert!(text.contains(&format!("sha256:  {sha}")), "{text}");
    assert!(text.contains("abi:     proxy_abi_version_0_2_1"), "{text}");
    assert!(text.contains("  proxy_on_request_headers\n"), "{text}");
    assert!(text.contains("(linked as traps): env.proxy_no_such_function"), "{text}");
    // Each import with the call graph's verdict.
    let verdict = |import: &str| {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("  {import} ")))
            .unwrap_or_else(|| panic!("no line for {import}: {text}"));
        line[import.len() + 2..].trim().to_string()
    };
    assert_eq!(
        verdict("env.proxy_http_call"),
        "reachable from export proxy_on_request_headers"
    );
    assert_eq!(verdict("env.proxy_get_log_level"), "imported only");
    assert_eq!(verdict("env.proxy_no_such_function"), "imported only");
    // Per host: what it cannot link, what it lacks that code calls, what it lacks that nothing calls.
    let host = |name: &str| {
        let start = text.find(&format!("\n  {name}:\n")).unwrap_or_else(|| panic!("{text}"));
        text[start..]
            .lines()
            .skip(2)
            .take(3)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        host("kong"),
        vec![
            "    cannot link (the module does not load):   env.proxy_no_such_function",
            "    reachable (will trap if that path runs):  none",
            "    imported only (never called):             proxy_get_log_level",
        ]
    );
    assert_eq!(
        host("envoy"),
        vec![
            "    cannot link (the module does not load):   env.proxy_no_such_function",
            "    reachable (will trap if that path runs):  none",
            "    imported only (never called):             none",
        ]
    );
}

#[test]
fn info_json() {
    let f = Fixture::new();
    let out = f.host_sim(&["info", "@unlinkable.wat", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    let size = std::fs::metadata(f.path("unlinkable.wat")).unwrap().len();
    assert_eq!(info["size"], size);
    assert_eq!(info["sha256"], sha256_of(&f.path("unlinkable.wat")));
    assert_eq!(info["abi_version"], "proxy_abi_version_0_2_1");
    assert!(info["exports"].as_array().unwrap().contains(&"memory".into()));
    assert!(info["imports"].as_array().unwrap().contains(&"env.proxy_log".into()));
    assert_eq!(info["unimplemented"]["envoy"], serde_json::json!([]));
    assert_eq!(
        info["unimplemented"]["kong"],
        serde_json::json!(["proxy_get_log_level"])
    );
    assert_eq!(
        info["unknown_imports"],
        serde_json::json!(["env.proxy_no_such_function"])
    );
    assert_eq!(
        info["hosts"]["kong"],
        serde_json::json!({
            "cannot_link": ["env.proxy_no_such_function"],
            "reachable_unimplemented": [],
            "imported_only_unimplemented": ["proxy_get_log_level"],
        })
    );
    let imports = info["reachability"]["imports"].as_array().unwrap();
    let http_call = imports.iter().find(|i| i["import"] == "env.proxy_http_call").unwrap();
    assert_eq!(http_call["reachable"], true);
    assert_eq!(http_call["from"], "export proxy_on_request_headers");
    assert_eq!(
        http_call["path"],
        serde_json::json!(["proxy_on_request_headers", "env.proxy_http_call"])
    );
    let log_level = imports
        .iter()
        .find(|i| i["import"] == "env.proxy_get_log_level")
        .unwrap();
    assert_eq!(log_level["reachable"], false);
}

/// `info --json` on a built module, from the shared precompiled cache.
fn info_of_built(f: &Fixture, name: &str) -> Value {
    let path = built_wasm(name).display().to_string();
    let out = f.host_sim_shared_cache(&["info", "--json", &path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn strings(value: &Value) -> Vec<&str> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect()
}

#[test]
fn info_on_the_filter_finds_only_proxy_done_missing_in_kong_and_how_it_is_reached() {
    let f = Fixture::new();
    let info = info_of_built(&f, "kafka_upstream");
    let kong = &info["hosts"]["kong"];
    // The filter's own glue imports only the host functions it calls; of those Kong lacks just
    // proxy_done, which it calls after its last reply on shutdown.
    assert_eq!(
        *kong,
        serde_json::json!({"cannot_link": [], "reachable_unimplemented": ["proxy_done"], "imported_only_unimplemented": []})
    );
    assert_eq!(strings(&info["unimplemented"]["kong"]), ["proxy_done"]);
    assert_eq!(
        info["hosts"]["envoy"],
        serde_json::json!({"cannot_link": [], "reachable_unimplemented": [], "imported_only_unimplemented": []})
    );
    let reach = &info["reachability"];
    assert!(reach["reachable_functions"].as_u64() <= reach["functions"].as_u64());
    let done = reach["imports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["import"] == "env.proxy_done")
        .unwrap();
    let path = strings(&done["path"]);
    assert_eq!(path.last(), Some(&"env.proxy_done"));
    assert!(done["from"].as_str().unwrap().starts_with("export proxy_on_"), "{done}");

    // The text report says the same.
    let path = built_wasm("kafka_upstream").display().to_string();
    let text = stdout(&f.host_sim_shared_cache(&["info", &path]));
    let kong_text = &text[text.find("\n  kong:\n").unwrap()..];
    assert!(kong_text.contains("proxy_done (from export proxy_on_"), "{kong_text}");
}

#[test]
fn info_on_an_sdk_filter_separates_what_kong_would_trap_on_from_what_it_only_imports() {
    let f = Fixture::new();
    // The proxy-wasm Rust SDK imports every gRPC host function, whether the filter calls them
    // or not; the no-op filter never makes a call.
    let info = info_of_built(&f, "noop");
    let kong = &info["hosts"]["kong"];
    assert_eq!(kong["cannot_link"], serde_json::json!([]));
    let reachable = strings(&kong["reachable_unimplemented"]);
    let imported_only = strings(&kong["imported_only_unimplemented"]);
    assert!(reachable.contains(&"proxy_done"), "{kong}");
    assert!(imported_only.contains(&"proxy_grpc_call"), "{kong}");
    assert!(imported_only.contains(&"proxy_grpc_stream"), "{kong}");
    // Together they are exactly what Kong lacks.
    let mut split: Vec<&str> = reachable.iter().chain(&imported_only).copied().collect();
    let mut all = strings(&info["unimplemented"]["kong"]);
    split.sort_unstable();
    all.sort_unstable();
    assert_eq!(split, all);

    let path = built_wasm("noop").display().to_string();
    let text = stdout(&f.host_sim_shared_cache(&["info", &path]));
    let line = text.lines().find(|l| l.starts_with("  env.proxy_grpc_call ")).unwrap();
    assert!(line.ends_with(" imported only"), "{line}");
}

#[test]
fn info_on_the_abi_probe_finds_every_host_function_it_calls_reachable() {
    let f = Fixture::new();
    let info = info_of_built(&f, "abi_probe");
    // The probe exercises every host function of the ABI, so whatever Kong lacks is reachable.
    let kong = &info["hosts"]["kong"];
    assert_eq!(kong["imported_only_unimplemented"], serde_json::json!([]), "{kong}");
    let reachable = strings(&kong["reachable_unimplemented"]);
    for f in [
        "proxy_done",
        "proxy_get_log_level",
        "proxy_grpc_call",
        "proxy_close_stream",
        "proxy_get_status",
    ] {
        assert!(reachable.contains(&f), "{f}: {kong}");
    }
    let imports = info["reachability"]["imports"].as_array().unwrap();
    assert!(imports.iter().all(|i| i["reachable"] == true), "{imports:?}");
}

/// `run` and `serve` refuse a module the selected host cannot link, as that host refuses to
/// load it (proxy-wasm-cpp-host src/v8/v8.cc:387-391; ngx_wasm_module src/wasm/vm/ngx_wavm.c
/// :720-743), naming every such import; `info` still reads it.
#[test]
fn run_and_serve_refuse_a_module_the_host_cannot_link() {
    let f = Fixture::new();
    for profile in ["envoy", "kong"] {
        let out = f.host_sim(&[
            "run",
            "--profile",
            profile,
            "--filter",
            "@unlinkable.wat",
            "--request",
            "@request.json",
        ]);
        let line = runtime_error(&out);
        assert!(
            line.contains(&format!(
                "the {profile} host cannot link env.proxy_no_such_function: it refuses to load the module"
            )),
            "{line}"
        );
        let out = f.host_sim(&[
            "serve",
            "--profile",
            profile,
            "--filter",
            "@unlinkable.wat",
            "--listen",
            "127.0.0.1:0",
            "--no-reload",
        ]);
        let line = runtime_error(&out);
        assert!(line.contains("cannot link env.proxy_no_such_function"), "{line}");
    }
    // An AssemblyScript-style `wasi_unstable` import: Envoy links it, Kong does not.
    let old_wasi = filter_wat("backend").replacen(
        "  (memory (export \"memory\") 1)",
        "  (import \"wasi_unstable\" \"proc_exit\" (func $exit (param i32)))\n  (memory (export \"memory\") 1)",
        1,
    );
    f.write("old_wasi.wat", &old_wasi);
    let run = |profile: &str| {
        f.host_sim(&[
            "run",
            "--profile",
            profile,
            "--filter",
            "@old_wasi.wat",
            "--request",
            "@request.json",
        ])
    };
    let out = run("envoy");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let line = runtime_error(&run("kong"));
    assert!(
        line.contains("the kong host cannot link wasi_unstable.proc_exit"),
        "{line}"
    );
    let out = f.host_sim(&["info", "@unlinkable.wat"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn info_names_imports_a_host_cannot_link() {
    let f = Fixture::new();
    f.write(
        "unstable.wat",
        r#"(module
  (import "wasi_unstable" "proc_exit" (func $exit (param i32)))
  (import "wasi_snapshot_preview1" "path_filestat_get" (func $stat (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0)))"#,
    );
    let out = f.host_sim(&["info", "--json", "@unstable.wat"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    // ngx_wasm_module links only wasi_snapshot_preview1; proxy-wasm-cpp-host a subset of WASI
    // under both module names.
    assert_eq!(
        info["hosts"]["kong"]["cannot_link"],
        serde_json::json!(["wasi_unstable.proc_exit"])
    );
    assert_eq!(
        info["hosts"]["envoy"]["cannot_link"],
        serde_json::json!(["wasi_snapshot_preview1.path_filestat_get"])
    );
    assert!(info["reachability"]["imports"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["reachable"] == false));
}

#[test]
fn run_prints_the_transcript() {
    let f = Fixture::new();
    let t = f.run_json(&["--http-call-response", "@response.json"]);
    for key in [
        "configure_ok",
        "actions",
        "http_calls",
        "local_response",
        "logs",
        "trap",
    ] {
        assert!(t.get(key).is_some(), "missing {key}: {t}");
    }
    assert_eq!(t["module_sha256"], sha256_of(&f.path("filter.wat")));
    assert_eq!(t["profile"], "envoy");
    assert_eq!(t["configure_ok"], true);
    assert_eq!(t["trap"], Value::Null);
    assert_eq!(
        t["actions"][0],
        serde_json::json!({"callback":"on_request_headers","action":"Pause"})
    );
    let call = &t["http_calls"][0];
    assert_eq!(call["upstream"], "backend");
    assert_eq!(call["headers"][1], serde_json::json!([":path", "/lookup"]));
    assert_eq!(call["body"], "");
    assert_eq!(call["body_base64"], false);
    assert_eq!(call["timeout_ms"], 5000);
    assert_eq!(call["outcome"], "answered");
    assert_eq!(call["response"], 0);
    // No --cluster: the name the filter used counts as a configured cluster.
    assert!(t.get("clusters").is_none());
    let local = &t["local_response"];
    assert_eq!(local["status"], 200);
    assert_eq!(local["body"], "done");
    assert_eq!(local["headers"], serde_json::json!([["x-sim", "1"]]));
    assert_eq!(t["forwarded_upstream"], false);
    let logs = t["logs"].as_array().unwrap();
    assert!(
        logs.contains(&serde_json::json!({"level":"info","message":"hello from wat","context_id":2})),
        "{logs:?}"
    );
    assert!(!logs
        .iter()
        .any(|l| l["message"].as_str().unwrap().contains("unknown upstream")));
}

#[test]
fn run_with_a_cluster_list_refuses_other_names() {
    let f = Fixture::new();
    let t = f.run_json(&["--cluster", "other", "--http-call-response", "@response.json"]);
    assert_eq!(t["http_calls"], serde_json::json!([]));
    assert_eq!(t["local_response"]["status"], 502);
    assert_eq!(t["local_response"]["body"], "no upstream");
    assert_eq!(t["unused_http_call_responses"], 1);
    assert_eq!(t["clusters"], serde_json::json!(["other"]));
}

#[test]
fn run_leaves_a_call_without_response_unanswered() {
    let f = Fixture::new();
    let t = f.run_json(&[]);
    assert_eq!(t["http_calls"][0]["outcome"], "unanswered");
    assert_eq!(t["http_calls"][0]["response"], Value::Null);
    assert_eq!(t["local_response"], Value::Null);
    assert_eq!(t["paused_in"], "on_request_headers");
    assert_eq!(t["forwarded_upstream"], false);
}

#[test]
fn run_answers_with_a_failure() {
    let f = Fixture::new();
    f.write("timeout.json", r#"{"failure":"timeout"}"#);
    let t = f.run_json(&["--http-call-response", "@timeout.json"]);
    assert_eq!(t["http_calls"][0]["outcome"], "answered");
    assert_eq!(t["actions"][1]["callback"], "on_http_call_response");
}

#[test]
fn run_reports_a_refused_configuration() {
    let f = Fixture::new();
    f.write("config.json", "fail");
    let t = f.run_json(&["--allow-rejected-config"]);
    assert_eq!(t["configure_ok"], false);
    assert_eq!(t["actions"], serde_json::json!([]));
    assert_eq!(t["http_calls"], serde_json::json!([]));
    assert_eq!(t["local_response"], Value::Null);
}

#[test]
fn run_reports_a_trap() {
    let f = Fixture::new();
    f.write(
        "request.json",
        r#"{"headers":[[":method","POST"],[":path","/"],[":authority","h"]],"body_chunks":["a","b"]}"#,
    );
    // This variant continues after its call, so the body reaches `on_request_body`, which traps.
    let continuing = filter_wat("backend").replace(
        "    (i32.const 1))\n  (func (export \"proxy_on_request_body\")",
        "    (i32.const 0))\n  (func (export \"proxy_on_request_body\")",
    );
    assert_ne!(continuing, filter_wat("backend"));
    f.write("filter.wat", &continuing);

    // Envoy: the first chunk traps; the stream fails closed with 503 and the call is dropped.
    let t = f.run_json(&["--http-call-response", "@response.json"]);
    let trap = t["trap"].as_str().expect("a trap");
    assert!(trap.contains("on_request_body"), "{trap}");
    assert_eq!(t["local_response"]["status"], 503);
    assert_eq!(
        t["actions"],
        serde_json::json!([
            {"callback":"on_request_headers","action":"Continue"},
            {"callback":"on_request_body","action":null}
        ])
    );
    assert_eq!(t["http_calls"][0]["outcome"], "cancelled");
    assert_eq!(t["unused_http_call_responses"], 1);
    assert!(t["logs"].as_array().unwrap().iter().any(|l| l["level"] == "critical"));

    // Kong: the whole body arrives once, the callback traps, Kong answers 500.
    let out = f.host_sim(&[
        "run",
        "--profile",
        "kong",
        "--filter",
        "@filter.wat",
        "--request",
        "@request.json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["profile"], "kong");
    assert!(t.get("clusters").is_none());
    assert!(t["trap"].as_str().expect("a trap").contains("on_request_body"));
    assert_eq!(t["local_response"]["status"], 500);
}

#[test]
fn sha256_mismatch_exits_2() {
    let f = Fixture::new();
    let wrong = "0".repeat(64);
    let out = f.host_sim(&[
        "run",
        "--profile",
        "envoy",
        "--filter",
        "@filter.wat",
        "--config",
        "@config.json",
        "--request",
        "@request.json",
        "--sha256",
        &wrong,
    ]);
    let line = usage_error(&out);
    assert!(line.contains("sha256"), "{line}");
    assert!(line.contains(&sha256_of(&f.path("filter.wat"))), "{line}");
    // The right hash runs.
    let right = sha256_of(&f.path("filter.wat")).to_uppercase();
    let t = f.run_json(&["--sha256", &right]);
    assert_eq!(t["configure_ok"], true);
}

#[test]
fn missing_file_is_one_line() {
    let f = Fixture::new();
    let out = f.host_sim(&[
        "run",
        "--profile",
        "envoy",
        "--filter",
        "@filter.wat",
        "--config",
        "@missing.json",
        "--request",
        "@request.json",
    ]);
    let line = usage_error(&out);
    assert_eq!(
        line,
        format!(
            "host-sim: cannot read {}: No such file or directory",
            f.path("missing.json").display()
        )
    );
    let out = f.host_sim(&["info", "@nope.wasm"]);
    assert!(usage_error(&out).starts_with("host-sim: cannot read"));
}

#[test]
fn bad_json_request_is_one_line() {
    let f = Fixture::new();
    f.write("request.json", r#"{"headers":[[":method"]]}"#);
    let out = f.host_sim(&[
        "run",
        "--profile",
        "envoy",
        "--filter",
        "@filter.wat",
        "--request",
        "@request.json",
    ]);
    let line = usage_error(&out);
    assert!(line.contains("request.json: not a valid request file"), "{line}");
    assert!(line.contains("[name, value] pair") && line.contains("line 1"), "{line}");

    f.write("request.json", "{ not json");
    let out = f.host_sim(&[
        "run",
        "--profile",
        "envoy",
        "--filter",
        "@filter.wat",
        "--request",
        "@request.json",
    ]);
    assert!(usage_error(&out).contains("not a valid request file"));

    f.write("bad-response.json", r#"{"failure":"eof"}"#);
    let out = f.host_sim(&[
        "run",
        "--profile",
        "envoy",
        "--filter",
        "@filter.wat",
        "--request",
        "@config.json",
        "--http-call-response",
        "@bad-response.json",
    ]);
    // config.json is not a request either; the first bad file is reported.
    assert!(usage_error(&out).contains("config.json: not a valid request file"));
}

#[test]
fn bad_module_and_bad_flags_are_one_line() {
    let f = Fixture::new();
    f.write("broken.wat", "(module (func (export \"f\")");
    let line = usage_error(&f.host_sim(&["info", "@broken.wat"]));
    assert!(line.contains("broken.wat: invalid wasm module"), "{line}");

    f.write("plain.wat", "(module (func (export \"f\")))");
    let line = usage_error(&f.host_sim(&["info", "@plain.wat"]));
    assert!(line.contains("unsupported proxy-wasm ABI"), "{line}");

    let line = usage_error(&f.host_sim(&["run", "--profile", "nginx", "--filter", "x", "--request", "y"]));
    assert!(line.contains("invalid value 'nginx'"), "{line}");
    let line = usage_error(&f.host_sim(&["run", "--profile", "envoy"]));
    assert!(line.contains("--filter <FILE>"), "{line}");
    let line = usage_error(&f.host_sim(&["--log-level", "loud", "info", "@filter.wat"]));
    assert!(line.contains("--log-level"), "{line}");
    let line = usage_error(&f.host_sim(&[
        "run",
        "--profile",
        "envoy",
        "--filter",
        "@filter.wat",
        "--request",
        "@request.json",
        "--sha256",
        "abc",
    ]));
    assert!(line.contains("64 hex digits"), "{line}");
}

#[test]
fn help_lists_the_commands() {
    let f = Fixture::new();
    let out = f.host_sim(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("info") && text.contains("run") && text.contains("--log-level"),
        "{text}"
    );
    let out = f.host_sim(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Usage: host-sim"));
    let out = f.host_sim(&["run", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("--http-call-response <FILE>"));
}

#[test]
fn serve_on_a_port_in_use_is_one_line() {
    let f = Fixture::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = f.host_sim(&[
        "serve",
        "--filter",
        "@filter.wat",
        "--config",
        "@config.json",
        "--listen",
        &addr,
    ]);
    let line = runtime_error(&out);
    assert!(
        line.starts_with(&format!("host-sim: cannot listen on {addr}: ")),
        "{line}"
    );
    assert_eq!(line.matches("in use").count(), 1, "the reason is said once: {line}");
}

#[test]
fn serve_without_a_filter_or_with_a_missing_one_is_one_line() {
    let f = Fixture::new();
    let line = usage_error(&f.host_sim(&["serve"]));
    assert!(line.contains("--filter, --envoy or --kong"), "{line}");
    let line = usage_error(&f.host_sim(&["serve", "--filter", "@missing.wasm"]));
    assert!(line.contains("does not exist"), "{line}");
    let line = usage_error(&f.host_sim(&["serve", "--envoy", "@missing.yaml"]));
    assert!(line.contains("cannot read"), "{line}");
    // A kong.yml names its filter by file name; the error says where it was looked for.
    let kong_yml = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kong.yml");
    let line = usage_error(&f.host_sim(&[
        "serve",
        "--kong",
        &kong_yml.display().to_string(),
        "--filters-dir",
        &f.path("no-filters-here").display().to_string(),
    ]));
    assert!(
        line.contains("does not exist") && line.contains("--filters-dir"),
        "{line}"
    );
}

#[test]
fn info_on_a_file_that_is_not_wasm_says_so() {
    let f = Fixture::new();
    f.write("junk.wasm", "this is not wasm");
    f.write("empty.wasm", "");
    f.write("config.json", r#"{"topic":"t"}"#);
    for name in ["junk.wasm", "empty.wasm", "config.json"] {
        let line = usage_error(&f.host_sim(&["info", &format!("@{name}")]));
        assert!(line.contains(&format!("{name}: not a WebAssembly module")), "{line}");
        assert!(!line.contains("expected `(`"), "no text-parser complaint: {line}");
    }
    // `run` and `check` load modules the same way.
    let line = usage_error(&f.host_sim(&["run", "--filter", "@junk.wasm", "--request", "@request.json"]));
    assert!(line.contains("junk.wasm: not a WebAssembly module"), "{line}");
    let line = usage_error(&f.host_sim(&["check", "--filter", "@junk.wasm"]));
    assert!(line.contains("junk.wasm: not a WebAssembly module"), "{line}");
}

#[test]
fn info_shows_the_filters_version() {
    let f = Fixture::new();
    let filter = built_wasm("kafka_upstream");
    let path = filter.display().to_string();
    let out = f.host_sim_shared_cache(&["info", &path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want = format!("kafka-upstream {}", filter_crate_version());
    assert!(
        stdout(&out).contains(&format!("  version: {want}\n")),
        "{}",
        stdout(&out)
    );
    let out = f.host_sim_shared_cache(&["info", "--json", &path]);
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["version"], want.as_str());
    // A module without the section says so.
    let out = f.host_sim(&["info", "@filter.wat"]);
    assert!(stdout(&out).contains("  version: unknown"), "{}", stdout(&out));
}

#[test]
fn run_exits_1_when_the_configuration_is_rejected() {
    let f = Fixture::new();
    f.write("config.json", "fail");
    let out = f.host_sim(&[
        "run",
        "--filter",
        "@filter.wat",
        "--config",
        "@config.json",
        "--request",
        "@request.json",
    ]);
    let line = runtime_error(&out);
    assert!(
        line.contains("filter.wat: configuration rejected: proxy_on_configure returned false"),
        "{line}"
    );
    assert!(line.contains("--allow-rejected-config"), "{line}");
    // The real filter's reason comes first, on its own line.
    let filter = built_wasm("kafka_upstream");
    f.write(
        "bad.json",
        r#"{"topic":"t","rest_proxy":{"upstream":"u","timeout":null}}"#,
    );
    let out = f.host_sim_shared_cache(&[
        "run",
        "--filter",
        &filter.display().to_string(),
        "--config",
        &f.path("bad.json").display().to_string(),
        "--request",
        &f.path("request.json").display().to_string(),
    ]);
    runtime_error(&out);
    let err = stderr(&out);
    assert_eq!(
        err.lines().next(),
        Some(
            "[error] kafka-upstream: invalid configuration: rest_proxy.timeout: null is not accepted, \
             leave the key out for the default (10000)"
        ),
        "{err}"
    );
}

/// `host-sim check` with `args`, the fixture's files as `@name`, paths otherwise.
fn check(f: &Fixture, filter: &Path, config: &str, extra: &[&str]) -> Output {
    f.write("check.json", config);
    let filter = filter.display().to_string();
    let config = f.path("check.json").display().to_string();
    let mut args = vec!["check", "--filter", filter.as_str(), "--config", config.as_str()];
    args.extend_from_slice(extra);
    f.host_sim_shared_cache(&args)
}

#[test]
fn check_accepts_a_valid_configuration() {
    let f = Fixture::new();
    let filter = built_wasm("kafka_upstream");
    for profile in ["envoy", "kong"] {
        let out = check(
            &f,
            &filter,
            r#"{"topic":"orders","rest_proxy":{"upstream":"kafka_rest"}}"#,
            &["--profile", profile],
        );
        assert_eq!(out.status.code(), Some(0), "{profile}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{profile}");
        assert!(stdout(&out).contains(&format!(
            "check.json: accepted by {} ({profile} profile)",
            filter.display()
        )));
    }
}

#[test]
fn check_reports_every_error_in_one_pass() {
    let f = Fixture::new();
    let filter = built_wasm("kafka_upstream");
    let out = check(
        &f,
        &filter,
        r#"{"topic":"","rest_proxy":{"api":"v3","timeout":0},"partition":-1,"forward_body":false}"#,
        &["--profile", "kong"],
    );
    let line = runtime_error(&out);
    assert!(line.contains("check.json: rejected by"), "{line}");
    assert!(
        line.ends_with("(kong profile): proxy_on_configure returned false"),
        "{line}"
    );
    let err = stderr(&out);
    let reasons = [
        "topic: expected a string of 1 to 249 characters",
        "rest_proxy.upstream: required",
        "rest_proxy.timeout: expected an integer from 1 to 2147483646",
        r#"rest_proxy.cluster_id: required when rest_proxy.api is "v3""#,
        "partition: expected an integer from 0 to 2147483647",
        "at least one of these attributes must be true: forward_method, forward_uri, forward_headers, forward_body",
    ];
    assert_eq!(
        err.lines().next().unwrap(),
        format!("[error] kafka-upstream: invalid configuration: {}", reasons.join("; ")),
    );
}

#[test]
fn check_suggests_the_field_an_unknown_key_was_meant_to_be_and_names_null() {
    let f = Fixture::new();
    let filter = built_wasm("kafka_upstream");
    let out = check(
        &f,
        &filter,
        r#"{"topic":"t","rest_proxy":{"upstream":"u"},"forward_bdy":true}"#,
        &[],
    );
    runtime_error(&out);
    assert!(
        stderr(&out).starts_with(
            "[error] kafka-upstream: invalid configuration: forward_bdy: unknown field (did you mean `forward_body`?)\n"
        ),
        "{}",
        stderr(&out)
    );
    let out = check(&f, &filter, r#"{"topic":null,"rest_proxy":{"upstream":"u"}}"#, &[]);
    runtime_error(&out);
    assert!(
        stderr(&out).starts_with(
            "[error] kafka-upstream: invalid configuration: topic: null is not accepted, the field is required \
             (expected a string of 1 to 249 characters)\n"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_works_for_any_filter() {
    let f = Fixture::new();
    // The noop test filter accepts anything, even no configuration.
    let noop = built_wasm("noop");
    let out = check(&f, &noop, "not even json", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = f.host_sim_shared_cache(&["check", "--filter", &noop.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("the empty configuration: accepted by"),
        "{}",
        stdout(&out)
    );
    // The WAT fixture refuses the 4-byte configuration `fail`, without a log line.
    f.write("config.json", "fail");
    let line = runtime_error(&f.host_sim(&["check", "--filter", "@filter.wat", "--config", "@config.json"]));
    assert!(
        line.ends_with("(envoy profile): proxy_on_configure returned false"),
        "{line}"
    );
    f.write("config.json", "any other");
    let out = f.host_sim(&[
        "check",
        "--filter",
        "@filter.wat",
        "--config",
        "@config.json",
        "--profile",
        "kong",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Input errors stay exit code 2.
    let line = usage_error(&f.host_sim(&["check", "--filter", "@filter.wat", "--config", "@missing.json"]));
    assert!(line.contains("cannot read"), "{line}");
}

#[test]
fn completions_for_each_shell_name_the_subcommands() {
    let f = Fixture::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = f.host_sim(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(!script.is_empty(), "{shell}");
        for command in ["info", "run", "check", "serve", "rest-proxy", "completions"] {
            assert!(script.contains(command), "{shell} script names {command}");
        }
        assert!(
            script.contains("allow-rejected-config"),
            "{shell} script has run's flags"
        );
    }
    let line = usage_error(&f.host_sim(&["completions", "powershell"]));
    assert!(line.contains("invalid value 'powershell'"), "{line}");
}

#[test]
fn exit_codes_are_as_help_says() {
    let f = Fixture::new();
    let help = stdout(&f.host_sim(&["--help"]));
    assert!(
        help.contains("1 runtime failure") && help.contains("2 usage or input error"),
        "{help}"
    );
    // 0: success (also when the filter trapped in a request: run_reports_a_trap).
    let t = f.run_json(&[]);
    assert_eq!(t["configure_ok"], true, "{t}");
    // 1: the filter rejected its configuration; an address in use (serve_on_a_port_in_use_is_one_line).
    f.write("config.json", "fail");
    runtime_error(&f.host_sim(&[
        "run",
        "--filter",
        "@filter.wat",
        "--config",
        "@config.json",
        "--request",
        "@request.json",
    ]));
    // 2: usage and input errors.
    usage_error(&f.host_sim(&["run", "--bogus"]));
    usage_error(&f.host_sim(&["info", "@missing.wasm"]));
}

#[test]
fn run_and_serve_share_flag_names_and_defaults() {
    let f = Fixture::new();
    let run = stdout(&f.host_sim(&["run", "--help"]));
    let serve = stdout(&f.host_sim(&["serve", "--help"]));
    for flag in [
        "--profile <PROFILE>",
        "--filter <FILE>",
        "--config <FILE>",
        "--root-id <ID>",
    ] {
        assert!(run.contains(flag) && serve.contains(flag), "{flag}");
    }
    for help in [&run, &serve] {
        assert!(help.contains("[default: envoy]") && help.contains("- kong:"), "{help}");
    }
    // --profile may be left out of `run` (envoy, as for serve and check).
    let out = f.host_sim(&["run", "--filter", "@filter.wat", "--request", "@request.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["profile"], "envoy");
}

#[test]
fn run_decodes_the_rest_proxy_record() {
    let f = Fixture::new();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let arg = |name: &str| examples.join(name).display().to_string();
    let filter = built_wasm("kafka_upstream").display().to_string();
    let out = f.host_sim_shared_cache(&[
        "run",
        "--filter",
        &filter,
        "--config",
        &arg("config.json"),
        "--request",
        &arg("request.json"),
        "--http-call-response",
        &arg("rest-proxy-response.json"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    let produce = &t["http_calls"][0]["rest_proxy_produce"];
    assert_eq!(produce["api"], "v2", "{t}");
    assert_eq!(produce["topic"], "http-requests");
    let record = &produce["records"][0];
    assert_eq!(record["key"], Value::Null);
    // Kong's message, as JSON: the method, the URI's arguments and the parsed body.
    assert_eq!(record["value"]["method"], "POST", "{record}");
    assert_eq!(record["value"]["body_args"]["order"], 42, "{record}");
    // The raw body is still there, as the filter sent it.
    assert!(t["http_calls"][0]["body"].as_str().unwrap().contains("\"records\""));
}

#[test]
fn serve_refuses_a_configuration_the_filter_rejects() {
    let f = Fixture::new();
    let wasm = built_wasm("kafka_upstream");
    let wasm = wasm.display().to_string();
    // No topic: kafka_upstream's on_configure logs why and returns false.
    f.write("invalid.json", r#"{"rest_proxy":{"upstream":"kafka_rest"}}"#);
    for profile in ["envoy", "kong"] {
        let out = f.host_sim(&[
            "serve",
            "--profile",
            profile,
            "--filter",
            &wasm,
            "--config",
            "@invalid.json",
            "--listen",
            "127.0.0.1:0",
            "--no-reload",
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{profile}: {err}");
        assert_eq!(err.lines().count(), 1, "{profile}: one line expected: {err}");
        assert!(err.starts_with("host-sim: route default: "), "{profile}: {err}");
        assert!(err.contains("rejected its configuration"), "{profile}: {err}");
        assert!(
            err.contains("kafka-upstream: invalid configuration"),
            "{profile}: the filter's own reason: {err}"
        );
        assert!(!err.contains("listening"), "{profile}: it never served: {err}");
    }
}

#[test]
fn serve_refuses_a_filter_that_traps_while_it_starts() {
    let f = Fixture::new();
    let probe = built_wasm("abi_probe").display().to_string();
    f.write("trap.conf", "trap_in=configure");
    for profile in ["envoy", "kong"] {
        let out = f.host_sim(&[
            "serve",
            "--profile",
            profile,
            "--filter",
            &probe,
            "--config",
            "@trap.conf",
            "--listen",
            "127.0.0.1:0",
            "--no-reload",
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{profile}: {err}");
        assert_eq!(err.lines().count(), 1, "{profile}: one line expected: {err}");
        assert!(err.contains("on_configure trapped"), "{profile}: {err}");
    }
}

#[test]
fn serve_logs_the_guest_by_default_and_each_request_on_stdout() {
    use std::io::{BufRead, BufReader, Read, Write};
    let f = Fixture::new();
    let probe = built_wasm("abi_probe").display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_host-sim"))
        .args(["serve", "--filter", &probe, "--listen", "127.0.0.1:0", "--no-reload"])
        .env("HOST_SIM_CACHE_DIR", f.path("cache"))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let addr = loop {
        let line = match stderr_lines.next() {
            Some(Ok(line)) => line,
            _ => {
                let _ = child.kill();
                panic!("serve ended before listening: {seen:?}");
            }
        };
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.trim().to_string();
        }
        seen.push(line);
    };
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.write_all(b"GET /probe?x=1 HTTP/1.1\r\nhost: t\r\nx-probe: local\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 418"), "{answer}");
    // The probe's INFO report appears without any --log-level.
    let guest_line = loop {
        match stderr_lines.next() {
            Some(Ok(line)) if line.contains("probe:request_headers") => break line,
            Some(Ok(_)) => continue,
            _ => {
                let _ = child.kill();
                panic!("no guest log line on stderr");
            }
        }
    };
    assert!(
        guest_line.contains("INFO") && guest_line.contains("guest"),
        "{guest_line}"
    );
    let _ = child.kill();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let _ = child.wait();
    let line = out
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no access log line on stdout"));
    assert!(line.starts_with('['), "{line}");
    assert!(line.contains("] \"GET /probe?x=1 HTTP/1.1\" 418 0 6 "), "{line}");
    assert!(line.ends_with(" default"), "{line}");
}

/// Starts host-sim with `args` (a listening command: `serve` or `rest-proxy`) under `sh -c`
/// running `shell_prefix` first (e.g. a `ulimit`), and returns the child, the address it says it
/// listens on and its stderr lines as they come.
fn spawn_listening(
    f: &Fixture,
    shell_prefix: &str,
    args: &[&str],
) -> (
    std::process::Child,
    String,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::{BufRead, BufReader};
    let script = format!("{shell_prefix} exec \"$0\" \"$@\"");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_host-sim"))
        .args(args)
        .env("HOST_SIM_CACHE_DIR", f.path("cache"))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let collected = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = addr_tx.send(rest.trim().to_string());
            }
            collected.lock().unwrap().push(line);
        }
    });
    match addr_rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => (child, addr, lines),
        Err(_) => {
            let _ = child.kill();
            panic!("serve did not start: {:?}", lines.lock().unwrap());
        }
    }
}

/// CPU time (user + system, in clock ticks) the process has used so far (Linux /proc).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[test]
#[cfg(target_os = "linux")]
fn serve_at_the_open_file_limit_pauses_accepting_instead_of_spinning() {
    use std::io::{Read, Write};
    let f = Fixture::new();
    let probe = built_wasm("abi_probe").display().to_string();
    // A cap far above what 64 descriptors allow, so the accept loop meets EMFILE.
    let (mut child, addr, lines) = spawn_listening(
        &f,
        "ulimit -n 64 &&",
        &[
            "serve",
            "--filter",
            &probe,
            "--listen",
            "127.0.0.1:0",
            "--no-reload",
            "--max-connections",
            "1000",
        ],
    );
    let held: Vec<std::net::TcpStream> = (0..120)
        .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
        .collect();
    assert!(held.len() > 64, "only {} connections could be opened", held.len());
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(1));
    let after = cpu_ticks(child.id());
    let spent = after.zip(before).map(|(a, b)| a - b);
    // Read before the clients leave: once they do, serve accepts again, and the connections
    // still queued in the backlog can meet the limit a second time, which is a new run of
    // failures with its own warning.
    let said = lines.lock().unwrap().clone();
    drop(held);
    // A spinning accept loop burns a whole core (~100 ticks a second); pausing costs nearly
    // nothing. Half a core is the line.
    assert!(
        spent.is_some_and(|t| t < 50),
        "serve used {spent:?} ticks of CPU in one second at the fd limit"
    );
    // The limit was met and said so, once.
    let warnings = said.iter().filter(|l| l.contains("cannot accept a connection")).count();
    assert_eq!(warnings, 1, "{said:#?}");
    // Once the clients leave, serve accepts again and answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let attempt = std::net::TcpStream::connect(&addr).and_then(|mut conn| {
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            conn.write_all(b"GET /probe HTTP/1.1\r\nhost: t\r\nx-probe: local\r\nconnection: close\r\n\r\n")?;
            let mut answer = String::new();
            conn.read_to_string(&mut answer)?;
            Ok(answer)
        });
        match attempt {
            Ok(answer) if !answer.is_empty() => break answer,
            _ if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => {
                let _ = child.kill();
                panic!("serve did not recover: {other:?}");
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 418"), "{answer}");
}

/// One HTTP/1.1 exchange on a fresh connection (`connection: close`); the whole answer.
fn http(addr: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
}

/// `host-sim serve` running the real filter in asynchronous mode (batches would wait a minute on
/// their own) on `topic`, its `kafka_rest` cluster at `rest`, plus `extra` flags.
fn spawn_async_serve(
    f: &Fixture,
    topic: &str,
    rest: &str,
    extra: &[&str],
) -> (
    std::process::Child,
    String,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let config = format!(
        r#"{{"topic":"{topic}","rest_proxy":{{"upstream":"kafka_rest","timeout":200}},"producer_async":true,"producer_async_flush_timeout":60000}}"#
    );
    let config = f.write("async.json", &config).display().to_string();
    let filter = built_wasm("kafka_upstream").display().to_string();
    let upstream = format!("kafka_rest={rest}");
    let mut args = vec![
        "serve",
        "--filter",
        &filter,
        "--config",
        &config,
        "--upstream",
        &upstream,
        "--listen",
        "127.0.0.1:0",
        "--no-reload",
    ];
    args.extend_from_slice(extra);
    spawn_listening(f, "", &args)
}

/// Sends `n` one-byte POSTs, each of which must be answered 200 (buffered, in async mode).
fn post_acknowledged(addr: &str, n: usize) {
    for i in 0..n {
        let answer = http(
            addr,
            &format!("POST /orders HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\nconnection: close\r\n\r\n{i}"),
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

/// SIGTERM to `child`, then its exit status (the test fails after 20 s) and everything it said
/// on stderr once the reader has seen `last_words` (or a bounded moment has passed).
fn sigterm(
    child: &mut std::process::Child,
    lines: &std::sync::Mutex<Vec<String>>,
    last_words: &str,
) -> (std::process::ExitStatus, String) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not exit after SIGTERM: {:?}", lines.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The reader thread may still be draining stderr.
    for _ in 0..100 {
        if lines.lock().unwrap().iter().any(|l| l.contains(last_words)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let said = lines.lock().unwrap().join("\n");
    (status, said)
}

#[test]
#[cfg(unix)]
fn serve_on_sigterm_sends_what_async_mode_acknowledged_before_exiting() {
    let f = Fixture::new();
    let (mut rest, rest_addr, _) = spawn_listening(&f, "", &["rest-proxy", "--listen", "127.0.0.1:0"]);
    let (mut serve, addr, lines) = spawn_async_serve(&f, "drained", &rest_addr, &[]);
    post_acknowledged(&addr, 3);
    let records = |rest_addr: &str| -> usize {
        let answer = http(
            rest_addr,
            "GET /_sim/topics/drained/records HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["records"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    assert_eq!(records(&rest_addr), 0, "the batch went before the shutdown");
    let (status, said) = sigterm(&mut serve, &lines, "buffered message(s)");
    let written = records(&rest_addr);
    let _ = rest.kill();
    let _ = rest.wait();
    assert!(status.success(), "{status:?}: {said}");
    assert_eq!(written, 3, "{said}");
    // Each worker's VM drains its own buffer and says so.
    let announced: usize = said
        .lines()
        .filter_map(|l| l.split("shutting down: sending the ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(announced, 3, "{said}");
}

/// `host-sim run` on a built filter with `examples/` files and the fixture's own, through the
/// shared module cache; returns the transcript.
fn run_built(f: &Fixture, filter: &str, args: &[&str]) -> Value {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let filter = built_wasm(filter).display().to_string();
    let args: Vec<String> = args
        .iter()
        .map(|a| match a.strip_prefix("examples/") {
            Some(name) => examples.join(name).display().to_string(),
            None => a.to_string(),
        })
        .collect();
    let mut all = vec!["run", "--filter", filter.as_str()];
    all.extend(args.iter().map(String::as_str));
    let out = f.host_sim_shared_cache(&all);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("stdout is the JSON transcript")
}

#[test]
fn run_sends_the_upstream_response_through_the_filter() {
    let f = Fixture::new();
    let t = run_built(
        &f,
        "abi_probe",
        &[
            "--request",
            "examples/probe-request.json",
            "--upstream-response",
            "examples/upstream-response.json",
        ],
    );
    let callbacks: Vec<&str> = t["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["callback"].as_str().unwrap())
        .collect();
    // 24 bytes in chunks of 8.
    assert_eq!(
        callbacks,
        [
            "on_request_headers",
            "on_response_headers",
            "on_response_body",
            "on_response_body",
            "on_response_body",
            "on_response_trailers",
            "on_log",
            "on_done",
            "on_delete"
        ],
        "{t}"
    );
    assert_eq!(t["upstream_response"], serde_json::json!({"used": true}));
    let client = &t["client_response"];
    assert_eq!(client["source"], "upstream");
    assert_eq!(client["status"], 200);
    assert_eq!(
        client["headers"],
        serde_json::json!([
            ["content-type", "text/plain"],
            ["x-resp-replace", "new"],
            ["x-resp-added", "1"]
        ])
    );
    assert_eq!(client["body"], "hello from the upstream\n");
    assert_eq!(client["trailers"], serde_json::json!([["x-checksum", "abc"]]));
    assert_eq!(client["complete"], true);
    assert!(t.get("time_steps").is_none(), "no --advance-ms, no steps: {t}");
}

#[test]
fn run_says_when_the_upstream_response_was_not_used() {
    let f = Fixture::new();
    let t = f.run_json(&[
        "--http-call-response",
        "@response.json",
        "--upstream-response",
        "@response.json",
    ]);
    assert_eq!(t["upstream_response"]["used"], false);
    assert!(
        t["upstream_response"]["why_not"]
            .as_str()
            .unwrap()
            .contains("answered locally"),
        "{t}"
    );
    assert_eq!(t["client_response"]["source"], "local");
    assert_eq!(t["client_response"]["body"], "done");
}

#[test]
fn run_lists_and_answers_grpc_calls() {
    let f = Fixture::new();
    f.write(
        "grpc-request.json",
        r#"{"headers":[[":method","GET"],[":path","/"],[":authority","h"],["x-probe","grpc_call"]]}"#,
    );
    let request = f.path("grpc-request.json").display().to_string();
    let t = run_built(
        &f,
        "abi_probe",
        &[
            "--request",
            &request,
            "--grpc-call-response",
            "examples/grpc-response.json",
            "--grpc-call-response",
            "examples/grpc-response.json",
        ],
    );
    let call = &t["grpc_calls"][0];
    assert_eq!(call["kind"], "call");
    assert_eq!(call["upstream"], "grpc_cluster");
    assert_eq!(call["service"], "probe.Service");
    assert_eq!(call["method"], "Unary");
    assert_eq!(call["initial_metadata"], serde_json::json!([["x-md", "md-value"]]));
    assert_eq!(call["messages"], serde_json::json!(["grpc-request"]));
    assert_eq!(call["outcome"], "answered");
    assert_eq!(call["response"], 0);
    assert_eq!(t["unused_grpc_call_responses"], 1);
    assert!(
        t["logs"].as_array().unwrap().iter().any(|l| {
            let m = l["message"].as_str().unwrap();
            m.starts_with("probe:grpc_call_response") && m.contains(r#""message":"pong""#)
        }),
        "{t}"
    );
}

#[test]
fn run_advances_the_clock_and_the_async_tick_flushes_the_batch() {
    let f = Fixture::new();
    let t = run_built(
        &f,
        "kafka_upstream",
        &[
            "--config",
            "examples/config-async.json",
            "--request",
            "examples/request.json",
            "--advance-ms",
            "100",
            "--advance-ms",
            "100",
            "--http-call-response",
            "examples/rest-proxy-response.json",
        ],
    );
    assert_eq!(t["client_response"]["body"], r#"{"message":"message sent"}"#);
    let steps = t["time_steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(
        (steps[0]["advance_ms"].as_u64(), steps[0]["at_ms"].as_u64()),
        (Some(100), Some(100))
    );
    assert!(steps[0]["ticks"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(steps[0]["http_calls"], serde_json::json!([]));
    // The 200 ms flush timeout falls in the second step: its tick sends the batch.
    assert_eq!(steps[1]["at_ms"], 200);
    assert_eq!(steps[1]["http_calls"], serde_json::json!([0]));
    assert_eq!(steps[1]["http_calls_answered"], serde_json::json!([0]));
    let call = &t["http_calls"][0];
    assert_eq!(call["rest_proxy_produce"]["topic"], "http-requests", "{t}");
    assert_eq!(call["outcome"], "answered");
}

#[test]
fn run_fires_a_call_timeout_in_a_step() {
    let f = Fixture::new();
    // The fixture's filter calls `backend` with a 5 s timeout and pauses.
    let t = f.run_json(&["--advance-ms", "4999", "--advance-ms", "1"]);
    let steps = t["time_steps"].as_array().unwrap();
    assert_eq!(steps[0]["timeouts"], serde_json::json!([]));
    assert_eq!(steps[1]["timeouts"], serde_json::json!([0]));
    assert_eq!(t["http_calls"][0]["outcome"], "timed_out");
    // The filter answers the timed-out call with its local 200 "done".
    assert_eq!(steps[1]["local_response"], true);
    assert_eq!(steps[1]["actions"][0]["callback"], "on_http_call_response");
    assert_eq!(t["local_response"]["body"], "done");
}

#[test]
fn bad_upstream_and_grpc_response_files_and_steps_are_one_line() {
    let f = Fixture::new();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--filter", "@filter.wat", "--request", "@request.json"];
        args.extend_from_slice(extra);
        usage_error(&f.host_sim(&args))
    };
    f.write("up.json", r#"{"status":200,"body":"abc","chunk_sizes":[1,1]}"#);
    let line = run(&["--upstream-response", "@up.json"]);
    assert!(line.contains("up.json: not a valid upstream response file"), "{line}");
    assert!(
        line.contains("`chunk_sizes` add up to 2 bytes but `body` has 3"),
        "{line}"
    );
    f.write("up.json", r#"{"headers":[]}"#);
    let line = run(&["--upstream-response", "@up.json"]);
    assert!(line.contains("missing field `status`"), "{line}");
    f.write("grpc.json", r#"{"status":99}"#);
    let line = run(&["--grpc-call-response", "@grpc.json"]);
    assert!(
        line.contains("grpc.json: not a valid gRPC call response file"),
        "{line}"
    );
    assert!(line.contains("`status` 99 is not a gRPC status code"), "{line}");
    let line = run(&["--advance-ms", "soon"]);
    assert!(line.contains("--advance-ms"), "{line}");
    let line = run(&["--advance-ms", "86400001"]);
    assert!(line.contains("--advance-ms") && line.contains("86400001"), "{line}");
}

#[test]
#[cfg(unix)]
fn serve_gives_up_at_the_end_of_the_drain_time_and_the_filter_counts_what_it_drops() {
    let f = Fixture::new();
    // A REST proxy address nothing listens on: the drain cannot finish.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (mut serve, addr, lines) = spawn_async_serve(&f, "lost", &closed, &["--workers", "1", "--drain-time", "1s"]);
    post_acknowledged(&addr, 2);
    let (status, said) = sigterm(&mut serve, &lines, "at shutdown");
    assert!(status.success(), "{status:?}: {said}");
    assert!(said.contains("drain time over"), "{said}");
    assert!(
        said.contains("dropped 2 message(s) to topic lost at shutdown"),
        "{said}"
    );
}
