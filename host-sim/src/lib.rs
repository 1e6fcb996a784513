//! host-sim: a proxy-wasm ABI 0.2.1 host on wasmtime, with Envoy and Kong behaviour profiles.
//!
//! Layers, bottom up, each using only those before it (`make lint` runs
//! `scripts/check-layers.py`, which fails on any import cycle): [`abi`] (the ABI's types,
//! callbacks and codecs), [`hostfn`] (the host function table), [`limits`] (every bound put on a
//! guest) and [`memory`] (bounds-checked guest memory) → [`profile`] (the host's answer wherever
//! the spec leaves room: the spec's defaults in [`HostBehaviour`], Envoy's and Kong's overrides,
//! each citing its source) → [`state`] (host state and the rules of each host function, asking
//! the profile) → `imports` (the host functions as thin glue: decode → state method → encode) →
//! [`vm`] (the lifecycle driver) → [`scenario`], [`transcript`] and [`serve`] (transports) → the
//! CLI.
//!
//! ```no_run
//! use host_sim::{Engine, EngineConfig, Profile, Vm, VmOptions};
//! let engine = Engine::new(EngineConfig::default())?;
//! let module = engine.load_file("target/wasm32-wasip1/wasm/kafka_upstream.wasm")?;
//! let mut options = VmOptions::new(Profile::Envoy);
//! options.clusters = vec!["kafka_rest".into()];
//! let mut vm = Vm::start(&module, options)?;
//! let root = vm.create_root_context("", br#"{"topic":"t","rest_proxy":{"upstream":"kafka_rest"}}"#)?;
//! assert!(root.configure_ok);
//! let stream = vm.create_http_stream(root.id)?;
//! vm.send_request_headers(stream, &[(":method", "GET"), (":path", "/"), (":authority", "h")], true)?;
//! let call = vm.http_calls().remove(0);
//! vm.respond_http_call(call.token, host_sim::HttpCallReply::Response {
//!     status: 200, headers: vec![], body: br#"{"offsets":[{"partition":0,"offset":0}]}"#.to_vec(), trailers: vec![],
//! })?;
//! assert_eq!(vm.local_response(stream).unwrap().status, 200);
//! # Ok::<(), host_sim::HostError>(())
//! ```
#![deny(missing_docs)]

pub mod abi;
pub mod engine;
pub mod error;
pub mod hostfn;
mod imports;
pub mod limits;
pub mod memory;
pub mod profile;
mod properties;
pub mod reachability;
pub mod scenario;
pub mod serve;
pub mod state;
pub mod transcript;
pub mod vm;
pub mod wasi;

pub use abi::{Action, LogLevel, Status};
pub use engine::{Engine, EngineConfig, Module, ModuleInfo};
pub use error::HostError;
pub use hostfn::HostFunction;
pub use limits::Limits;
pub use profile::{AfterTrap, CalloutFailure, HostBehaviour, MetricOp, Profile};
pub use state::{GrpcCall, HttpCall, LocalResponse, LogEntry, Metric, Shared, StreamInfo};
pub use vm::{
    ActionRecord, GrpcProgress, GrpcReply, HttpCallReply, NewCall, PassedLocalReply, RootContext, Vm, VmOptions,
};
pub use wasi::WasiOptions;
