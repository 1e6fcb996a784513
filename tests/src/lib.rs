//! Shared helpers for the integration tests that drive the real `.wasm` files through host-sim
//! (the one test binary `tests/tests/integration/`).
//!
//! - [`wasm_path`] finds a built module (`$WASM_DIR`, else the workspace's
//!   `target/wasm32-wasip1/wasm/`) and fails loudly when it is missing: a test that silently
//!   skips proves nothing.
//! - [`engine`] is one process-wide host-sim engine whose precompiled-module cache lives in
//!   `target/host-sim-cache`, so every test run after the first deserializes instead of
//!   compiling; [`load`] also keeps each loaded module for the rest of the process.
//! - [`options`], [`start`] and friends build VMs per profile; [`headers`] and the log helpers
//!   keep test bodies short.
//!
//! Nothing here knows about a particular filter: tests of the product filter and of host-sim's
//! own test filters use the same helpers.

use host_sim::{Engine, EngineConfig, LogEntry, LogLevel, Module, Profile, Vm, VmOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

pub use host_sim;

/// Both profiles, for tests that must hold on every host.
pub const PROFILES: [Profile; 2] = [Profile::Envoy, Profile::Kong];

/// The workspace root (the parent of this crate).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// Where the built `.wasm` files are: `$WASM_DIR`, else `<workspace>/target/wasm32-wasip1/wasm`.
pub fn wasm_dir() -> PathBuf {
    match std::env::var_os("WASM_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_dir().join("target").join("wasm32-wasip1").join("wasm"),
    }
}

/// The path of module `<name>.wasm`. Panics, saying how to build it, when it does not exist.
pub fn wasm_path(name: &str) -> PathBuf {
    let path = wasm_dir().join(format!("{name}.wasm"));
    if !path.is_file() {
        panic!(
            "{} does not exist: build the wasm modules first with `make wasm` \
             (scripts/build-wasm.sh), or point WASM_DIR at a directory holding {name}.wasm",
            path.display()
        );
    }
    path
}

/// The precompiled-module cache shared by every test process: `<workspace>/target/host-sim-cache`.
pub fn cache_dir() -> PathBuf {
    workspace_dir().join("target").join("host-sim-cache")
}

fn new_engine(fuel: bool) -> Engine {
    Engine::new(EngineConfig {
        cache_dir: Some(cache_dir()),
        fuel,
    })
    .expect("host-sim engine")
}

/// The process-wide engine (no fuel metering), caching under [`cache_dir`].
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| new_engine(false))
}

/// A process-wide engine with fuel metering on, for [`host_sim::Limits::fuel_per_callback`].
pub fn fuel_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| new_engine(true))
}

fn load_with(engine: &'static Engine, fuel: bool, name: &str) -> Module {
    static MODULES: OnceLock<Mutex<HashMap<(String, bool), Module>>> = OnceLock::new();
    let modules = MODULES.get_or_init(Default::default);
    // Held while loading: tests starting together compile (or deserialize) a module once.
    let mut modules = modules.lock().unwrap_or_else(|e| e.into_inner());
    let key = (name.to_string(), fuel);
    if let Some(module) = modules.get(&key) {
        return module.clone();
    }
    let path = wasm_path(name);
    let module = engine
        .load_file(&path)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    modules.insert(key, module.clone());
    module
}

/// Loads `<name>.wasm` on [`engine`] (once per process; the artifact cache makes it cheap
/// across processes too).
pub fn load(name: &str) -> Module {
    load_with(engine(), false, name)
}

/// Loads `<name>.wasm` on [`fuel_engine`].
pub fn load_fueled(name: &str) -> Module {
    load_with(fuel_engine(), true, name)
}

/// Compiles a module from WebAssembly text (or binary) on [`engine`]: for tests that need a guest
/// no Rust SDK would produce. Panics with the reason if it does not load.
pub fn load_wat(source: &str) -> Module {
    engine()
        .load_bytes(source.as_bytes())
        .unwrap_or_else(|e| panic!("loading inline module: {e}"))
}

/// Default VM options for a profile: deterministic WASI, default limits, every log level kept.
pub fn options(profile: Profile) -> VmOptions {
    VmOptions::new(profile)
}

/// Starts a VM of `module` with `options`, panicking with the reason if it cannot start.
pub fn start_with(module: &Module, options: VmOptions) -> Vm {
    Vm::start(module, options).unwrap_or_else(|e| panic!("starting a VM: {e}"))
}

/// Starts a VM of `<name>.wasm` with the profile's default options.
pub fn start(name: &str, profile: Profile) -> Vm {
    start_with(&load(name), options(profile))
}

/// Owned header pairs from string slices (the shape the VM API and assertions use).
pub fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Request headers with the three pseudo-headers both hosts require first, then `extra`.
pub fn request_headers(method: &str, path: &str, authority: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all = headers(&[(":method", method), (":path", path), (":authority", authority)]);
    all.extend(headers(extra));
    all
}

/// The first value of header `name` (case-insensitive) in `pairs`.
pub fn header<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every log message of the VM, in order.
pub fn log_messages(vm: &Vm) -> Vec<String> {
    vm.logs().into_iter().map(|e| e.message).collect()
}

/// The log entries whose message contains `needle`.
pub fn logs_containing(vm: &Vm, needle: &str) -> Vec<LogEntry> {
    vm.logs().into_iter().filter(|e| e.message.contains(needle)).collect()
}

/// The log entries at `level`.
pub fn logs_at(vm: &Vm, level: LogLevel) -> Vec<LogEntry> {
    vm.logs().into_iter().filter(|e| e.level == level).collect()
}

/// Every log line, one per line, for assertion messages.
pub fn dump_logs(vm: &Vm) -> String {
    vm.logs()
        .iter()
        .map(|e| format!("[{}] {}", e.level, e.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Appends a custom section: a different module (new sha256) that behaves the same.
pub fn with_custom_section(wasm: &[u8], tag: &str) -> Vec<u8> {
    let name = b"host-sim-reload";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0);
    let mut size = payload.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        out.push(if size > 0 { byte | 0x80 } else { byte });
        if size == 0 {
            break;
        }
    }
    out.extend_from_slice(&payload);
    out
}
