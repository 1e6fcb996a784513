//! kafka-upstream: Kong Enterprise's `kafka-upstream` plugin as a proxy-wasm filter that runs
//! unchanged in Envoy and in Kong 3.x, producing each request as a Kafka record through a Kafka
//! REST proxy (Confluent REST Proxy v2/v3, Redpanda's HTTP proxy, Karapace) and answering the
//! client itself: `200 {"message":"message sent"}` only once the REST proxy acknowledged every
//! record.
//!
//! Layers, each plain Rust except the last, each using only the ones listed before it:
//! - [`small_blocks`]: the `.wasm`'s global allocator, a size-class front over dlmalloc (uses no
//!   other module);
//! - [`wire`]: the proxy-wasm header-map wire format the filter writes, with a template
//!   serialized once per configuration for the REST proxy calls (uses no other module);
//! - [`metrics`]: the metrics' names and types, and what updates them;
//! - [`message`] (with [`args`], [`multipart`]): Kong's message bytes from a request;
//! - [`template`]: message shaping (`message.mode`, compiled templates) and the keys from a
//!   header or a body field;
//! - `schema`: the vocabulary of the configuration table (fields, kinds, rules);
//! - [`record_headers`]: which request headers (and static headers) become Kafka record headers;
//! - [`schema_registry`]: `schema_registry.confluent`, subject and version to schema id;
//! - [`config`]: the configuration table, its validator and its JSON Schema;
//! - [`topics`]: target topics and record key from the query string;
//! - [`rest`]: the REST proxy request, and its reply turned into the client's answer;
//! - [`host`]: everything the filter asks of its host, one interface ([`host::Host`]);
//! - [`producer`]: the asynchronous producer (`producer_async`): bounded buffer, batches,
//!   retries and health gating ([`producer::health`]), driven by the time it is given;
//! - [`exchange`]: one request's flow against that interface;
//! - [`contexts`]: the VM's contexts by id and which context each call's reply goes to (uses no
//!   other module);
//! - `filter` (wasm32 only): the proxy-wasm ABI 0.2.1 glue, the module's own `proxy_on_*`
//!   exports (no SDK): it looks each callback's context up in a [`contexts::ContextTable`] and
//!   implements [`host::Host`] over raw host calls.
#![deny(missing_docs)]

pub mod args;
pub mod config;
pub mod contexts;
pub mod exchange;
pub mod host;
mod json;
pub mod message;
pub mod metrics;
pub mod multipart;
pub mod producer;
pub mod record_headers;
pub mod rest;
mod schema;
pub mod schema_registry;
pub mod small_blocks;
pub mod template;
pub mod topics;
pub mod wire;

#[cfg(target_arch = "wasm32")]
mod filter;

/// Small blocks from per-class free lists, the rest from the standard library's allocator (see
/// [`small_blocks`] for why).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: small_blocks::SmallBlocks<std::alloc::System> = small_blocks::SmallBlocks::new(std::alloc::System);

/// The crate's name and version, `kafka-upstream 0.1.0`.
pub const VERSION_TEXT: &str = concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION"));

/// [`VERSION_TEXT`] as a custom section named `version` of the `.wasm`, which `host-sim info`
/// shows: a `#[link_section]` static on wasm32 becomes a custom section of that name. It
/// survives the `wasm` profile (LTO, `strip = "debuginfo"`) and `scripts/build-wasm.sh`'s
/// `wasm-opt` step (which keeps custom sections it does not know): host-sim's CLI tests read it
/// back from the built module.
#[cfg(target_arch = "wasm32")]
#[link_section = "version"]
#[used]
static VERSION_SECTION: [u8; VERSION_TEXT.len()] = version_bytes();

/// [`VERSION_TEXT`] as an array, since a custom section's static cannot be a reference.
#[cfg(target_arch = "wasm32")]
const fn version_bytes() -> [u8; VERSION_TEXT.len()] {
    let text = VERSION_TEXT.as_bytes();
    let mut out = [0u8; VERSION_TEXT.len()];
    let mut i = 0;
    while i < text.len() {
        out[i] = text[i];
        i += 1;
    }
    out
}

/// The module's `_initialize` export, the WASI reactor's entry point that hosts call before
/// anything else (Envoy: proxy-wasm-cpp-host calls `_initialize`, then `main` if exported;
/// ngx_wasm_module the first of `_start`/`_initialize`): the static constructors, then the
/// glue's start.
#[cfg(target_arch = "wasm32")]
mod entry {
    extern "C" {
        /// The linker's constructor runner of a WASI reactor (what a reactor's `_initialize`
        /// must call first).
        fn __wasm_call_ctors();
    }

    #[no_mangle]
    pub extern "C" fn _initialize() {
        // SAFETY: called once, by the host, before any other export.
        unsafe { __wasm_call_ctors() };
        crate::filter::start();
    }
}
