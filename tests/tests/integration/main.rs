//! The integration tests of the real `.wasm` files driven through host-sim, as one test binary:
//! each binary links wasmtime, so one binary is one link instead of one per topic. A module per
//! topic; a test's name starts with its module (`fuzz::filter_inputs`,
//! `filter_async::batches_leave_by_bytes`), so a topic runs on its own with a filter:
//! `cargo test --release -p kafka-upstream-tests --test integration -- fuzz::`.
//!
//! Shared by the topics: [`filter_common`] (a gateway running `kafka_upstream.wasm`, sync and
//! async, with requests and REST proxy replies), [`probe`] (the abi-probe test filter),
//! [`serve_common`] (counterparts for `host-sim serve`); process-wide helpers (the engine, module
//! loading, VM options) are the `kafka_upstream_tests` library (`tests/src/lib.rs`).
//!
//! Every test shares one process: a test that changes something process-wide (the tracing
//! subscriber of [`serve_service`]) must not change what other tests see.

mod filter_common;
mod probe;
mod serve_common;

mod engine_and_vms;
mod filter_async;
mod filter_config;
mod filter_message;
mod filter_outcomes;
mod filter_record_headers;
mod filter_request_shapes;
mod filter_shaping;
mod fuzz;
mod host_abi;
mod host_budget;
mod profiles;
mod run_scenario;
mod serve;
mod serve_edge;
mod serve_grpc;
mod serve_kong_chain;
mod serve_main_thread;
mod serve_response_phase;
mod serve_service;
mod serve_wire_headers;
mod untrusted_guest;
