//! Driving `abi_probe.wasm` (test-filters/abi-probe): VMs set up the way the probe expects, streams
//! opened with an `x-probe` scenario, and the `probe:<event> <json>` reports it logs, parsed.

use host_sim::{HttpCallReply, Profile, Status, Vm, VmOptions};
use kafka_upstream_tests::{dump_logs, load, options, request_headers, start_with};
use serde_json::Value;

/// Envoy clusters the probe VMs know (`proxy_http_call` and gRPC upstreams).
pub const CLUSTERS: [&str; 2] = ["cluster_a", "grpc_cluster"];
/// The VM id of probe VMs (shared data and queues are scoped by it).
pub const VM_ID: &str = "probe-vm";
/// The plugin name (metric prefix on Kong, `plugin_name` property).
pub const PLUGIN: &str = "probe";

/// The name under which each host exports the probe's metric `name` (written out here rather
/// than taken from host-sim, which is what the tests check).
pub fn metric_name(profile: Profile, name: &str) -> String {
    match profile {
        Profile::Envoy => format!("wasmcustom.{name}"),
        Profile::Kong => format!("pw.{PLUGIN}.{name}"),
    }
}
/// The root id (`plugin_root_id` property).
pub const ROOT_ID: &str = "probe-root";

/// An upstream each profile accepts for `proxy_http_call`.
pub fn upstream(profile: Profile) -> &'static str {
    match profile {
        Profile::Envoy => "cluster_a",
        Profile::Kong => "127.0.0.1:8082",
    }
}

// The statuses host functions return, as the numbers the probe reports.
pub const OK: u64 = Status::Ok as u64;
pub const NOT_FOUND: u64 = Status::NotFound as u64;
pub const BAD_ARGUMENT: u64 = Status::BadArgument as u64;
pub const PARSE_FAILURE: u64 = Status::ParseFailure as u64;
pub const EMPTY: u64 = Status::Empty as u64;
pub const CAS_MISMATCH: u64 = Status::CasMismatch as u64;
pub const UNIMPLEMENTED: u64 = Status::Unimplemented as u64;

/// VM options for the probe on `profile`.
pub fn probe_options(profile: Profile) -> VmOptions {
    let mut o = options(profile);
    o.clusters = CLUSTERS.iter().map(|c| c.to_string()).collect();
    o.vm_id = VM_ID.into();
    o.plugin_name = PLUGIN.into();
    o
}

/// A probe VM with its root context.
pub struct Probe {
    pub vm: Vm,
    pub root: u32,
    pub profile: Profile,
}

impl Probe {
    /// A probe VM with an empty plugin configuration.
    pub fn new(profile: Profile) -> Probe {
        Probe::with(profile, "", probe_options(profile))
    }

    /// A probe VM with plugin configuration `config`.
    pub fn configured(profile: Profile, config: &str) -> Probe {
        Probe::with(profile, config, probe_options(profile))
    }

    /// A probe VM with explicit options.
    pub fn with(profile: Profile, config: &str, options: VmOptions) -> Probe {
        Probe::with_module(&load("abi_probe"), profile, config, options)
    }

    /// A probe VM of an already loaded module.
    pub fn with_module(module: &host_sim::Module, profile: Profile, config: &str, options: VmOptions) -> Probe {
        let mut vm = start_with(module, options);
        let root = vm
            .create_root_context(ROOT_ID, config.as_bytes())
            .unwrap_or_else(|e| panic!("root context: {e}\n{}", dump_logs(&vm)));
        Probe {
            vm,
            root: root.id,
            profile,
        }
    }

    /// Opens a stream and sends `GET /probe` request headers selecting `scenario`, plus `extra`.
    pub fn stream(&mut self, scenario: &str, extra: &[(&str, &str)], end_of_stream: bool) -> u32 {
        self.stream_with("GET", "/probe", scenario, extra, end_of_stream)
    }

    /// Opens a stream and sends request headers with the given method and path.
    pub fn stream_with(&mut self, method: &str, path: &str, scenario: &str, extra: &[(&str, &str)], eos: bool) -> u32 {
        let id = self.vm.create_http_stream(self.root).expect("stream");
        let profile = self.profile.to_string();
        let mut all = vec![("x-probe", scenario), ("x-profile", profile.as_str())];
        all.extend_from_slice(extra);
        let headers = request_headers(method, path, "probe.example", &all);
        self.vm
            .send_request_headers(id, &headers, eos)
            .expect("request headers");
        id
    }

    /// Every report of `event`, oldest first.
    pub fn reports(&self, event: &str) -> Vec<Value> {
        reports(&self.vm, event)
    }

    /// The latest report of `event`; panics with the VM's log when there is none.
    pub fn report(&self, event: &str) -> Value {
        report(&self.vm, event)
    }

    /// Answers the only pending HTTP call with a response.
    pub fn respond(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8], trailers: &[(&str, &str)]) {
        let calls = self.vm.http_calls();
        assert_eq!(calls.len(), 1, "expected one pending call\n{}", dump_logs(&self.vm));
        let reply = HttpCallReply::Response {
            status,
            headers: kafka_upstream_tests::headers(headers),
            body: body.to_vec(),
            trailers: kafka_upstream_tests::headers(trailers),
        };
        self.vm.respond_http_call(calls[0].token, reply).expect("respond");
    }

    /// The VM log, for assertion messages.
    pub fn logs(&self) -> String {
        dump_logs(&self.vm)
    }
}

/// Every report of `event` in `vm`'s log, oldest first.
pub fn reports(vm: &Vm, event: &str) -> Vec<Value> {
    let prefix = format!("probe:{event} ");
    vm.logs()
        .iter()
        .filter_map(|e| e.message.strip_prefix(&prefix))
        .map(|json| serde_json::from_str(json).unwrap_or_else(|e| panic!("bad report {json}: {e}")))
        .collect()
}

/// The latest report of `event`; panics with the VM's log when there is none.
pub fn report(vm: &Vm, event: &str) -> Value {
    reports(vm, event)
        .pop()
        .unwrap_or_else(|| panic!("no probe:{event} report\n{}", dump_logs(vm)))
}

/// A JSON array of `[key, value]` pairs as Rust pairs.
pub fn pairs(value: &Value) -> Vec<(String, String)> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string()))
        .collect()
}

/// The values of `name` in `pairs`, in order.
pub fn values<'a>(pairs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}
