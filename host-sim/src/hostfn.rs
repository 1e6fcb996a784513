//! The table of proxy-wasm ABI v0.2.1 host functions (spec "Functions exposed by the host"), in
//! the spec's order: each import name is written here and nowhere else. The ABI glue
//! (`imports.rs`) registers every function in the wasmtime linker under [`HostFunction::name`]
//! and asks the profile whether its host implements it; `host-sim info` uses the table to report
//! which imports a host lacks. The guest's exports are named once likewise, in
//! [`crate::abi::Callback`].

use serde::Serialize;

macro_rules! host_functions {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// One host function of the proxy-wasm ABI v0.2.1 (`env` module).
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
        pub enum HostFunction { $(#[doc = $name] $variant),+ }

        impl HostFunction {
            /// Every host function, in the spec's order.
            pub const ALL: &'static [HostFunction] = &[$(HostFunction::$variant),+];
            /// The import name in module `env`.
            pub fn name(self) -> &'static str {
                match self { $(HostFunction::$variant => $name),+ }
            }
            /// Looks up an `env` import by name.
            pub fn from_name(name: &str) -> Option<HostFunction> {
                match name { $($name => Some(HostFunction::$variant),)+ _ => None }
            }
        }
    };
}

host_functions! {
    Done => "proxy_done",
    SetEffectiveContext => "proxy_set_effective_context",
    Log => "proxy_log",
    GetLogLevel => "proxy_get_log_level",
    GetCurrentTimeNanoseconds => "proxy_get_current_time_nanoseconds",
    SetTickPeriodMilliseconds => "proxy_set_tick_period_milliseconds",
    SetBufferBytes => "proxy_set_buffer_bytes",
    GetBufferBytes => "proxy_get_buffer_bytes",
    GetBufferStatus => "proxy_get_buffer_status",
    GetHeaderMapSize => "proxy_get_header_map_size",
    GetHeaderMapPairs => "proxy_get_header_map_pairs",
    SetHeaderMapPairs => "proxy_set_header_map_pairs",
    GetHeaderMapValue => "proxy_get_header_map_value",
    AddHeaderMapValue => "proxy_add_header_map_value",
    ReplaceHeaderMapValue => "proxy_replace_header_map_value",
    RemoveHeaderMapValue => "proxy_remove_header_map_value",
    ContinueStream => "proxy_continue_stream",
    CloseStream => "proxy_close_stream",
    GetStatus => "proxy_get_status",
    SendLocalResponse => "proxy_send_local_response",
    HttpCall => "proxy_http_call",
    GrpcCall => "proxy_grpc_call",
    GrpcStream => "proxy_grpc_stream",
    GrpcSend => "proxy_grpc_send",
    GrpcCancel => "proxy_grpc_cancel",
    GrpcClose => "proxy_grpc_close",
    SetSharedData => "proxy_set_shared_data",
    GetSharedData => "proxy_get_shared_data",
    RegisterSharedQueue => "proxy_register_shared_queue",
    ResolveSharedQueue => "proxy_resolve_shared_queue",
    EnqueueSharedQueue => "proxy_enqueue_shared_queue",
    DequeueSharedQueue => "proxy_dequeue_shared_queue",
    DefineMetric => "proxy_define_metric",
    RecordMetric => "proxy_record_metric",
    IncrementMetric => "proxy_increment_metric",
    GetMetric => "proxy_get_metric",
    GetProperty => "proxy_get_property",
    SetProperty => "proxy_set_property",
    CallForeignFunction => "proxy_call_foreign_function",
}
