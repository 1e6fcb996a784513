//! What a gateway serves: routes (a path prefix, a filter and its configuration, what answers
//! when the filter lets a request through) and upstreams. Built from flags, from an Envoy
//! bootstrap (`envoy.yaml`) or from a Kong declarative config (`kong.yml`), so the project's own
//! deployment files are exercised by the same code path users run. An Envoy bootstrap also gives
//! its `bootstrap_extensions` WasmServices ([`WasmService`]).

use crate::profile::{Profile, DEFAULT_CLIENT_BODY_BUFFER_BYTES};
use serde_norway::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What answers a request the filter lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// Proxy to this upstream (an Envoy cluster name, or `host:port` for Kong services).
    Upstream(String),
    /// Answer with a fixed response (Envoy `direct_response`).
    Direct {
        /// Status.
        status: u16,
        /// Body.
        body: String,
    },
    /// 404 (Kong: no service on the route).
    NotFound,
}

/// One route and its filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// A name for logs and the admin endpoint.
    pub name: String,
    /// Requests whose path starts with this go here (longest prefix wins).
    pub path_prefix: String,
    /// The filter module.
    pub filter: PathBuf,
    /// The filter's name (Envoy `config.name`, Kong filter name).
    pub plugin_name: String,
    /// Envoy `root_id`.
    pub root_id: String,
    /// Envoy `vm_config.vm_id`.
    pub vm_id: String,
    /// The plugin configuration bytes (`proxy_on_configure`).
    pub config: Vec<u8>,
    /// The VM configuration bytes (`proxy_on_vm_start`; Envoy `vm_config.configuration`).
    pub vm_configuration: Vec<u8>,
    /// What answers when the filter continues the request.
    pub fallback: Fallback,
    /// Envoy `fail_open`: once the filter's VM has failed, requests pass without it instead of
    /// getting 503. Kong has no such setting.
    pub fail_open: bool,
    /// Routes with the same `Some(n)` run the same filters: one root context per filter of the
    /// chain and thread, which every request of those routes reaches, on one VM per thread (or,
    /// where the profile shares a module's instance, on the module's: [`instance_plan`]). Envoy builds the
    /// filter factories of an HTTP connection manager's `http_filters` once, when it reads the
    /// HCM (envoy source/extensions/filters/network/http_connection_manager/config.cc), not per
    /// route; the wasm filter's config holds one thread-local plugin, set per thread with
    /// `Common::Wasm::getOrCreateThreadLocalPlugin` (source/extensions/filters/http/wasm/
    /// wasm_filter.cc, `FilterConfig`), whose root context every stream of every route shares.
    /// `None`: the route's own. Kong: one group per Kong route, so the serve routes made from its
    /// `paths` share its one filter chain (each Kong route's chain has its own filters, each
    /// with its own configuration and root context).
    pub shared_filter: Option<usize>,
    /// The filters that run after [`Route::filter`], in order: the rest of a Kong filter chain,
    /// each with its own root context (ngx_wasm_module runs every filter of the chain in turn at
    /// each step, KONG-SRC ngx_proxy_wasm.c:640-760 `ngx_proxy_wasm_resume`). Empty for Envoy
    /// (host-sim serve runs one wasm filter per listener) and `serve --filter`.
    pub chained: Vec<ChainedFilter>,
}

/// One filter of a route's chain: its module, name, root id and configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedFilter {
    /// The filter module.
    pub filter: PathBuf,
    /// The filter's name (Kong: the module's file name without `.wasm`).
    pub plugin_name: String,
    /// Its root id (Kong: none).
    pub root_id: String,
    /// Its configuration bytes (`proxy_on_configure`).
    pub config: Vec<u8>,
}

impl Route {
    /// The filters the route runs, in order: [`Route::filter`], then [`Route::chained`].
    pub fn chain(&self) -> impl Iterator<Item = ChainedFilter> + '_ {
        let first = ChainedFilter {
            filter: self.filter.clone(),
            plugin_name: self.plugin_name.clone(),
            root_id: self.root_id.clone(),
            config: self.config.clone(),
        };
        std::iter::once(first).chain(self.chained.iter().cloned())
    }

    /// The filter at `position` in [`Route::chain`].
    pub fn chain_filter(&self, position: usize) -> Option<ChainedFilter> {
        self.chain().nth(position)
    }
}

/// Where a filter of a route's chain runs on every worker: which VM ([`InstancePlan::vms`]) and
/// which of its root contexts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Link {
    /// Index into [`InstancePlan::vms`].
    pub vm: usize,
    /// Index into that VM's [`VmPlan::roots`].
    pub root: usize,
}

/// One VM per worker thread: its module and the filters (root contexts) it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPlan {
    /// The module.
    pub filter: PathBuf,
    /// The routes with a filter on this VM, in declaration order; the first gives the VM's
    /// settings (VM id and configuration, `fail_open`), which the routes sharing it have in
    /// common.
    pub routes: Vec<usize>,
    /// Its root contexts in creation order, each `(route, position)`: the filter at that
    /// position of that route's [`Route::chain`] gives the root's id, name and configuration.
    pub roots: Vec<(usize, usize)>,
}

/// The deployment's VMs and, for each route, the filters its requests run through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePlan {
    /// The VMs every worker thread runs.
    pub vms: Vec<VmPlan>,
    /// Per route (same index as the routes): its chain's filters, in order.
    pub chains: Vec<Vec<Link>>,
}

/// Lays the routes' filters out on VMs. A filter is one root context: the routes of one
/// [`Route::shared_filter`] group share each of its chain's filters (Envoy: the connection
/// manager's one wasm filter; Kong: one Kong route's chain, whatever its `paths`). Which VM a
/// filter runs on is the profile's ([`crate::profile::HostBehaviour::shares_instance_per_module`]):
/// one VM per module (Kong: every filter of the module, across routes and chains, each with its
/// own root context) or one per filter (Envoy: one per filter group, the routes of a connection
/// manager sharing its wasm filter).
pub fn instance_plan(profile: Profile, routes: &[Route]) -> InstancePlan {
    #[derive(PartialEq, Eq, Hash, Clone)]
    enum Group {
        Shared(usize),
        Own(usize),
    }
    #[derive(PartialEq, Eq, Hash)]
    enum VmKey {
        Module(PathBuf),
        Filter(Group, usize),
    }
    let mut vms: Vec<VmPlan> = Vec::new();
    let mut vm_of: std::collections::HashMap<VmKey, usize> = std::collections::HashMap::new();
    let mut link_of: std::collections::HashMap<(Group, usize), Link> = std::collections::HashMap::new();
    let mut chains = Vec::with_capacity(routes.len());
    for (index, route) in routes.iter().enumerate() {
        let group = route.shared_filter.map_or(Group::Own(index), Group::Shared);
        let mut chain = Vec::new();
        for (position, filter) in route.chain().enumerate() {
            if let Some(link) = link_of.get(&(group.clone(), position)) {
                if !vms[link.vm].routes.contains(&index) {
                    vms[link.vm].routes.push(index);
                }
                chain.push(*link);
                continue;
            }
            let key = if profile.shares_instance_per_module() {
                VmKey::Module(filter.filter.clone())
            } else {
                VmKey::Filter(group.clone(), position)
            };
            let vm = *vm_of.entry(key).or_insert_with(|| {
                vms.push(VmPlan {
                    filter: filter.filter.clone(),
                    routes: Vec::new(),
                    roots: Vec::new(),
                });
                vms.len() - 1
            });
            if !vms[vm].routes.contains(&index) {
                vms[vm].routes.push(index);
            }
            vms[vm].roots.push((index, position));
            let link = Link {
                vm,
                root: vms[vm].roots.len() - 1,
            };
            link_of.insert((group.clone(), position), link);
            chain.push(link);
        }
        chains.push(chain);
    }
    InstancePlan { vms, chains }
}

/// Everything `serve` needs besides the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Which host to behave like.
    pub profile: Profile,
    /// Routes, in declaration order.
    pub routes: Vec<Route>,
    /// Named upstreams (Envoy STATIC clusters, or `--upstream NAME=HOST:PORT`).
    pub upstreams: BTreeMap<String, SocketAddr>,
    /// The listener address the file declares, if any.
    pub listen: Option<SocketAddr>,
    /// nginx's `client_body_buffer_size` (Kong profile): a larger request body reaches the
    /// filter unreadable ([`crate::profile::HostBehaviour::request_body_readable`]). Kong's
    /// `nginx_http_client_body_buffer_size` ([`kong_conf_client_body_buffer`]).
    pub client_body_buffer_bytes: usize,
    /// Envoy `bootstrap_extensions` WasmServices: VMs with a root context and no listener.
    pub services: Vec<WasmService>,
    /// What the file reader chose that the user should be told (which of several listeners).
    pub notes: Vec<String>,
    /// Envoy's connection manager gives a request without an `x-request-id` one (a UUID v4)
    /// before the filters run, unless the connection manager says `generate_request_id: false`
    /// (HttpConnectionManager, default true; observed in ENVOY-1.40). Kong: false (nginx's
    /// `$request_id` is a property, not a header).
    pub generate_request_id: bool,
}

impl Route {
    /// A route for every path (`/`) running `filter` with `config`, named `name`, with the
    /// defaults of `serve --filter`: plugin name from the file name, empty root and VM ids, no VM
    /// configuration, requests the filter lets through answered 404, fail closed. Change fields
    /// with struct update syntax.
    pub fn new(name: &str, filter: PathBuf, config: Vec<u8>) -> Route {
        Route {
            name: name.to_string(),
            path_prefix: "/".to_string(),
            plugin_name: filter
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            filter,
            root_id: String::new(),
            vm_id: String::new(),
            config,
            vm_configuration: Vec::new(),
            fallback: Fallback::NotFound,
            fail_open: false,
            shared_filter: None,
            chained: Vec::new(),
        }
    }
}

impl Deployment {
    /// `routes` under `profile`, with no upstreams, listener, services or notes, and nginx's
    /// default client body buffer.
    pub fn new(profile: Profile, routes: Vec<Route>) -> Deployment {
        Deployment {
            profile,
            routes,
            upstreams: BTreeMap::new(),
            listen: None,
            client_body_buffer_bytes: crate::profile::DEFAULT_CLIENT_BODY_BUFFER_BYTES,
            services: Vec::new(),
            notes: Vec::new(),
            generate_request_id: profile.generates_request_id(),
        }
    }
}

/// A deployment file that cannot be used, with the path inside it that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct DeployError {
    /// The file.
    pub file: String,
    /// What is wrong, naming the YAML path.
    pub message: String,
}

fn err(file: &Path, message: impl Into<String>) -> DeployError {
    DeployError {
        file: file.display().to_string(),
        message: message.into(),
    }
}

fn read_yaml(file: &Path) -> Result<Value, DeployError> {
    let text = std::fs::read_to_string(file).map_err(|e| err(file, format!("cannot read: {e}")))?;
    serde_norway::from_str(&text).map_err(|e| err(file, format!("invalid YAML: {e}")))
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping()?.get(key)
}

fn seq(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_sequence).map_or(&[], Vec::as_slice)
}

/// Where a value sits in the YAML document (`static_resources.clusters[1].name`), for errors.
#[derive(Clone)]
struct At<'f> {
    file: &'f Path,
    path: String,
}

impl<'f> At<'f> {
    fn key(&self, key: &str) -> At<'f> {
        let path = if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        };
        At { file: self.file, path }
    }

    fn index(&self, i: usize) -> At<'f> {
        At {
            file: self.file,
            path: format!("{}[{i}]", self.path),
        }
    }

    fn fail(&self, message: impl std::fmt::Display) -> DeployError {
        err(self.file, format!("{}: {message}", self.path))
    }

    /// `v[key]`, which must be there.
    fn need<'v>(&self, v: &'v Value, key: &str) -> Result<(&'v Value, At<'f>), DeployError> {
        let at = self.key(key);
        match get(v, key) {
            Some(found) if !found.is_null() => Ok((found, at)),
            _ => Err(at.fail("missing")),
        }
    }

    /// `v[key]` as a string, which must be there.
    fn need_str<'v>(&self, v: &'v Value, key: &str) -> Result<&'v str, DeployError> {
        let (found, at) = self.need(v, key)?;
        found.as_str().ok_or_else(|| at.fail("not a string"))
    }

    /// `v[key]` as a string, empty when absent.
    fn opt_str(&self, v: &Value, key: &str) -> Result<String, DeployError> {
        match get(v, key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(self.key(key).fail("not a string")),
        }
    }

    /// `v[key]` as a sequence, empty when absent.
    fn seq<'v>(&self, v: &'v Value, key: &str) -> Result<Vec<(&'v Value, At<'f>)>, DeployError> {
        let at = self.key(key);
        match get(v, key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Sequence(items)) => Ok(items.iter().enumerate().map(|(i, item)| (item, at.index(i))).collect()),
            Some(_) => Err(at.fail("not a list")),
        }
    }
}

/// The two TypedStruct messages Envoy unwraps wherever it takes an `Any` extension config
/// (envoy source/common/config/utility.cc `Utility::translateOpaqueConfig`; docs:
/// https://www.envoyproxy.io/docs/envoy/latest/configuration/overview/extension#extension-configuration).
const TYPED_STRUCT_URLS: [&str; 2] = [
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];
const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const WASM_SERVICE_TYPE: &str = "type.googleapis.com/envoy.extensions.wasm.v3.WasmService";
const HCM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// An extension's `typed_config` (a protobuf `Any` in YAML form): its message type and the
/// message's fields, looking through a TypedStruct (`type_url` + `value`) to what it wraps.
fn typed_config<'v, 'f>(v: &'v Value, at: &At<'f>) -> Result<(String, &'v Value, At<'f>), DeployError> {
    let type_url = at.need_str(v, "@type")?;
    if TYPED_STRUCT_URLS.contains(&type_url) {
        let inner_type = at.need_str(v, "type_url")?;
        let (value, value_at) = match get(v, "value") {
            Some(value) if !value.is_null() => (value, at.key("value")),
            // An empty TypedStruct value is an empty message.
            _ => (&Value::Null, at.key("value")),
        };
        return Ok((inner_type.to_string(), value, value_at));
    }
    Ok((type_url.to_string(), v, at.clone()))
}

/// The bytes a plugin or VM `configuration` (a protobuf `Any`) hands the filter, as Envoy's
/// `anyToBytes` makes them (envoy source/extensions/common/wasm/plugin.cc): a StringValue's or
/// BytesValue's `value` as it is, any other message as its protobuf encoding. Of the other
/// messages host-sim encodes `google.protobuf.Struct` (the YAML/JSON form of a Struct is its
/// fields); anything else is refused rather than guessed.
fn any_to_bytes(v: Option<&Value>, at: &At) -> Result<Vec<u8>, DeployError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let (type_url, message, message_at) = typed_config(v, at)?;
    let field = |name: &str| get(message, name).filter(|v| !v.is_null());
    match type_url.as_str() {
        "type.googleapis.com/google.protobuf.StringValue" => match field("value") {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
            Some(_) => Err(message_at.key("value").fail("a StringValue's value must be a string")),
        },
        "type.googleapis.com/google.protobuf.BytesValue" => match field("value") {
            None => Ok(Vec::new()),
            // Protobuf's JSON mapping writes bytes as base64 (standard or URL-safe alphabet).
            Some(Value::String(s)) => {
                use base64::Engine as _;
                let s = s.trim();
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
                    .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
                    .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
                    .map_err(|e| {
                        message_at
                            .key("value")
                            .fail(format!("a BytesValue's value must be base64: {e}"))
                    })
            }
            Some(_) => Err(message_at
                .key("value")
                .fail("a BytesValue's value must be a base64 string")),
        },
        "type.googleapis.com/google.protobuf.Struct" => {
            // The Struct's JSON form is the object itself, under `value` in an Any.
            let mut out = Vec::new();
            match field("value") {
                None => {}
                Some(Value::Mapping(fields)) => protobuf::struct_fields(fields, &message_at.key("value"), &mut out)?,
                Some(_) => return Err(message_at.key("value").fail("a Struct's value must be a mapping")),
            }
            Ok(out)
        }
        other => Err(at.key("@type").fail(format!(
            "{other}: host-sim passes a google.protobuf.StringValue, BytesValue or Struct configuration; \
             Envoy would hand the filter this message's protobuf encoding"
        ))),
    }
}

/// Protobuf encoding of `google.protobuf.Struct`, as Envoy hands a Struct configuration to the
/// filter (any.value(), the serialized message), with Envoy's reading of YAML scalars (envoy
/// source/common/protobuf/yaml_utility.cc `parseYamlNode`): null is `null_value`, a boolean
/// `bool_value`, an integer within int32 a `number_value`, any other integer its decimal text,
/// and everything else, fractions included, the scalar's text as `string_value` (Envoy 1.40 sends
/// `2.5` as the string "2.5": tests/e2e/test_bootstrap_shapes.py). Fields go in the file's
/// order; Envoy 1.40's follow its protobuf map's hashing (seen in that test), which protobuf
/// leaves open: a protobuf decoder reads both as the same message.
/// serde_norway reads YAML 1.2, so `yes`/`on`, which Envoy's yaml-cpp takes as booleans, stay
/// strings here.
mod protobuf {
    use super::{At, DeployError};
    use serde_norway::{Mapping, Value};

    fn varint(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    fn len_delimited(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
        out.push(tag);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    /// `Struct { map<string, Value> fields = 1; }`.
    pub(super) fn struct_fields(fields: &Mapping, at: &At, out: &mut Vec<u8>) -> Result<(), DeployError> {
        let mut entries: Vec<(String, &Value)> = Vec::new();
        for (key, value) in fields {
            let key = match key {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(at.fail("a Struct's keys must be strings")),
            };
            entries.push((key, value));
        }
        for (key, value) in entries {
            let mut entry = Vec::new();
            len_delimited(0x0a, key.as_bytes(), &mut entry);
            let mut encoded = Vec::new();
            self::value(value, &at.key(&key), &mut encoded)?;
            len_delimited(0x12, &encoded, &mut entry);
            len_delimited(0x0a, &entry, out);
        }
        Ok(())
    }

    /// `Value { oneof kind { NullValue null_value = 1; double number_value = 2; string
    /// string_value = 3; bool bool_value = 4; Struct struct_value = 5; ListValue list_value = 6; } }`.
    fn value(v: &Value, at: &At, out: &mut Vec<u8>) -> Result<(), DeployError> {
        match v {
            Value::Null => {
                out.push(0x08);
                varint(0, out);
            }
            Value::Number(n) => match n.as_i64().and_then(|i| i32::try_from(i).ok()) {
                Some(small) => {
                    out.push(0x11);
                    out.extend_from_slice(&f64::from(small).to_le_bytes());
                }
                None => len_delimited(0x1a, n.to_string().as_bytes(), out),
            },
            Value::String(s) => len_delimited(0x1a, s.as_bytes(), out),
            Value::Bool(b) => {
                out.push(0x20);
                varint(u64::from(*b), out);
            }
            Value::Mapping(fields) => {
                let mut inner = Vec::new();
                struct_fields(fields, at, &mut inner)?;
                len_delimited(0x2a, &inner, out);
            }
            Value::Sequence(items) => {
                // ListValue { repeated Value values = 1; }
                let mut list = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let mut encoded = Vec::new();
                    value(item, &at.index(i), &mut encoded)?;
                    len_delimited(0x0a, &encoded, &mut list);
                }
                len_delimited(0x32, &list, out);
            }
            Value::Tagged(_) => return Err(at.fail("a YAML tag has no Struct form")),
        }
        Ok(())
    }
}

/// What an Envoy wasm `PluginConfig` (`envoy.extensions.wasm.v3.PluginConfig`) says.
struct PluginConfig {
    name: String,
    root_id: String,
    vm_id: String,
    filter: PathBuf,
    configuration: Vec<u8>,
    vm_configuration: Vec<u8>,
    fail_open: bool,
}

fn plugin_config(config: &Value, at: &At, base: &Path) -> Result<PluginConfig, DeployError> {
    if !config.is_mapping() {
        return Err(at.fail("not a mapping"));
    }
    let (vm_config, vm_at) = at.need(config, "vm_config")?;
    let (code, code_at) = vm_at.need(vm_config, "code")?;
    let (local, local_at) = match get(code, "local") {
        Some(local) if !local.is_null() => (local, code_at.key("local")),
        _ if get(code, "remote").is_some() => {
            return Err(code_at
                .key("remote")
                .fail("host-sim loads local files only (vm_config.code.local.filename)"))
        }
        _ => return Err(code_at.key("local").fail("missing")),
    };
    let filename = local_at.need_str(local, "filename")?;
    let fail_open = match get(config, "fail_open") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(at.key("fail_open").fail("not a boolean")),
    };
    Ok(PluginConfig {
        name: at.opt_str(config, "name")?,
        root_id: at.opt_str(config, "root_id")?,
        vm_id: vm_at.opt_str(vm_config, "vm_id")?,
        filter: base.join(filename),
        configuration: any_to_bytes(get(config, "configuration"), &at.key("configuration"))?,
        vm_configuration: any_to_bytes(get(vm_config, "configuration"), &vm_at.key("configuration"))?,
        fail_open,
    })
}

/// Resolves a cluster endpoint's host as Envoy's `dns_lookup_family` picks addresses
/// (cluster.proto `DnsLookupFamily`: AUTO looks up IPv6 and falls back to IPv4, V4_PREFERRED the
/// other way round, ALL takes both; https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/cluster.proto#enum-config-cluster-v3-cluster-dnslookupfamily).
/// host-sim keeps one address per cluster: the first that family gives.
fn resolve(host: &str, port: u16, family: &str, at: &At) -> Result<SocketAddr, DeployError> {
    let addresses: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| at.fail(format!("cannot resolve {host:?}: {e}")))?
        .collect();
    let v4 = addresses.iter().find(|a| a.is_ipv4());
    let v6 = addresses.iter().find(|a| a.is_ipv6());
    let picked = match family {
        "V4_ONLY" => v4,
        "V6_ONLY" => v6,
        "V4_PREFERRED" => v4.or(v6),
        "ALL" => addresses.first(),
        _ => v6.or(v4),
    };
    picked
        .copied()
        .ok_or_else(|| at.fail(format!("{host:?} has no {family} address (resolved: {addresses:?})")))
}

/// `owner.address.socket_address`: its `address` text and `port_value`, with its YAML path.
fn socket_address<'v, 'f>(owner: &'v Value, at: &At<'f>) -> Result<(&'v str, u16, At<'f>), DeployError> {
    let (address, address_at) = at.need(owner, "address")?;
    let (sa, sa_at) = match get(address, "socket_address") {
        Some(sa) if !sa.is_null() => (sa, address_at.key("socket_address")),
        _ if get(address, "pipe").is_some() => {
            return Err(address_at
                .key("pipe")
                .fail("host-sim serve connects to TCP socket addresses only"))
        }
        _ => return Err(address_at.key("socket_address").fail("missing")),
    };
    let host = sa_at.need_str(sa, "address")?;
    let (port, port_at) = match get(sa, "port_value") {
        Some(port) if !port.is_null() => (port, sa_at.key("port_value")),
        _ if get(sa, "named_port").is_some() => {
            return Err(sa_at.key("named_port").fail("host-sim needs a port_value"))
        }
        _ => return Err(sa_at.key("port_value").fail("missing")),
    };
    let port = match port.as_u64() {
        Some(n) => u16::try_from(n).map_err(|_| port_at.fail(format!("{n} is not a port (0 to 65535)")))?,
        None => return Err(port_at.fail(format!("{port:?} is not a port (0 to 65535)"))),
    };
    Ok((host, port, sa_at.key("address")))
}

fn ip_address(host: &str, port: u16) -> Option<SocketAddr> {
    host.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

/// A cluster's address. STATIC takes IP addresses only (Envoy refuses a hostname there);
/// STRICT_DNS and LOGICAL_DNS resolve their hostname now, at start-up, per `dns_lookup_family`.
/// Envoy's LOGICAL_DNS takes exactly one endpoint and connects to the first address the name
/// resolves to (https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/service_discovery#logical-dns);
/// STRICT_DNS balances over every address of every endpoint, of which host-sim keeps the first.
fn cluster_address(cluster: &Value, at: &At) -> Result<(String, SocketAddr), DeployError> {
    let name = at.need_str(cluster, "name")?;
    let kind = match get(cluster, "type") {
        None | Some(Value::Null) => "STATIC",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(at.key("type").fail("not a string")),
    };
    if get(cluster, "cluster_type").is_some() {
        return Err(at
            .key("cluster_type")
            .fail("custom cluster types are not supported by host-sim serve"));
    }
    if !matches!(kind, "STATIC" | "STRICT_DNS" | "LOGICAL_DNS") {
        return Err(at.key("type").fail(format!(
            "{kind}: host-sim serve reads STATIC, STRICT_DNS and LOGICAL_DNS clusters"
        )));
    }
    let family = match get(cluster, "dns_lookup_family") {
        None | Some(Value::Null) => "AUTO",
        Some(Value::String(s)) if matches!(s.as_str(), "AUTO" | "V4_ONLY" | "V6_ONLY" | "V4_PREFERRED" | "ALL") => {
            s.as_str()
        }
        Some(other) => {
            return Err(at
                .key("dns_lookup_family")
                .fail(format!("{other:?} is not AUTO, V4_ONLY, V6_ONLY, V4_PREFERRED or ALL")))
        }
    };
    let (assignment, assignment_at) = at.need(cluster, "load_assignment")?;
    let mut lb_endpoints = Vec::new();
    for (endpoints, endpoints_at) in assignment_at.seq(assignment, "endpoints")? {
        lb_endpoints.extend(endpoints_at.seq(endpoints, "lb_endpoints")?);
    }
    if kind == "LOGICAL_DNS" && lb_endpoints.len() != 1 {
        return Err(assignment_at.fail(format!(
            "a LOGICAL_DNS cluster takes exactly one endpoint (Envoy refuses it otherwise), found {}",
            lb_endpoints.len()
        )));
    }
    let Some((lb, lb_at)) = lb_endpoints.into_iter().next() else {
        return Err(assignment_at
            .key("endpoints")
            .fail("no lb_endpoints: the cluster has no endpoint"));
    };
    let (endpoint, endpoint_at) = lb_at.need(lb, "endpoint")?;
    let (host, port, host_at) = socket_address(endpoint, &endpoint_at)?;
    let address = match (kind, ip_address(host, port)) {
        (_, Some(ip)) => ip,
        ("STATIC", None) => {
            return Err(host_at.fail(format!(
                "{host:?} is not an IP address; a STATIC cluster takes IP addresses only (type: STRICT_DNS or LOGICAL_DNS resolves names)"
            )))
        }
        (_, None) => resolve(host, port, family, &host_at)?,
    };
    Ok((name.to_string(), address))
}

/// A `bootstrap_extensions` entry of type `envoy.extensions.wasm.v3.WasmService`: a VM with a
/// root context and no listener (<https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/wasm/v3/wasm.proto#extensions-wasm-v3-wasmservice>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmService {
    /// `config.name`.
    pub name: String,
    /// The module (`config.vm_config.code.local.filename`, relative to the bootstrap).
    pub filter: PathBuf,
    /// `config.root_id`.
    pub root_id: String,
    /// `config.vm_config.vm_id`.
    pub vm_id: String,
    /// `config.vm_config.configuration` (`proxy_on_vm_start`).
    pub vm_configuration: Vec<u8>,
    /// `config.configuration` (`proxy_on_configure`).
    pub config: Vec<u8>,
    /// `singleton`: one VM for the server (true) or one per thread (false: Envoy's thread-local
    /// slot gives every worker thread and the main thread a VM of its own; envoy
    /// source/extensions/bootstrap/wasm/config.cc `WasmServiceExtension::createWasm`).
    pub singleton: bool,
}

fn wasm_service(extension: &Value, at: &At, base: &Path) -> Result<Option<WasmService>, DeployError> {
    let (typed, typed_at) = at.need(extension, "typed_config")?;
    let (type_url, message, message_at) = typed_config(typed, &typed_at)?;
    if type_url != WASM_SERVICE_TYPE {
        return Ok(None);
    }
    let (config, config_at) = message_at.need(message, "config")?;
    let plugin = plugin_config(config, &config_at, base)?;
    let singleton = match get(message, "singleton") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(message_at.key("singleton").fail("not a boolean")),
    };
    Ok(Some(WasmService {
        name: plugin.name,
        filter: plugin.filter,
        root_id: plugin.root_id,
        vm_id: plugin.vm_id,
        vm_configuration: plugin.vm_configuration,
        config: plugin.configuration,
        singleton,
    }))
}

/// Reads an Envoy bootstrap: one listener (`listener` names it; by default the first) and its HTTP
/// connection manager's `envoy.filters.http.wasm` filter (`config.name`, `root_id`,
/// `vm_config.vm_id`, `vm_config.code.local.filename` relative to the file, `configuration`,
/// `fail_open`; the filter's `typed_config` directly or inside a TypedStruct), the routes of its
/// `route_config`, every cluster's first endpoint (STATIC, STRICT_DNS and LOGICAL_DNS, names
/// resolved now), and the `bootstrap_extensions` WasmServices. Errors name the YAML path.
pub fn from_envoy_file(file: &Path, listener: Option<&str>) -> Result<Deployment, DeployError> {
    let doc = read_yaml(file)?;
    let base = file.parent().unwrap_or(Path::new("."));
    let root = At {
        file,
        path: String::new(),
    };
    let (resources, resources_at) = root.need(&doc, "static_resources")?;
    let mut upstreams = BTreeMap::new();
    for (cluster, cluster_at) in resources_at.seq(resources, "clusters")? {
        let (name, address) = cluster_address(cluster, &cluster_at)?;
        upstreams.insert(name, address);
    }
    let mut services = Vec::new();
    for (extension, extension_at) in root.seq(&doc, "bootstrap_extensions")? {
        if let Some(service) = wasm_service(extension, &extension_at, base)? {
            services.push(service);
        }
    }
    let listeners = resources_at.seq(resources, "listeners")?;
    let names: Vec<String> = listeners
        .iter()
        .map(|(l, at)| at.opt_str(l, "name"))
        .collect::<Result<_, _>>()?;
    let mut notes = Vec::new();
    let picked = match listener {
        Some(wanted) => names.iter().position(|n| n == wanted).ok_or_else(|| {
            resources_at
                .key("listeners")
                .fail(format!("no listener named {wanted:?} (the file has {names:?})"))
        })?,
        None if listeners.is_empty() => {
            // A WasmService needs no listener, but serve always has one: the routes need a filter.
            return Err(resources_at.key("listeners").fail("no listeners"));
        }
        None => {
            if listeners.len() > 1 {
                notes.push(format!(
                    "{} listeners in {}: serving the first, {:?} (others: {:?}); pick one with --listener NAME",
                    listeners.len(),
                    file.display(),
                    names[0],
                    &names[1..]
                ));
            }
            0
        }
    };
    let (listener, listener_at) = &listeners[picked];
    let listen = match get(listener, "address") {
        None | Some(Value::Null) => None,
        Some(_) => {
            let (host, port, host_at) = socket_address(listener, listener_at)?;
            Some(ip_address(host, port).ok_or_else(|| host_at.fail(format!("{host:?} is not an IP address")))?)
        }
    };
    let mut hcm = None;
    'chains: for (chain, chain_at) in listener_at.seq(listener, "filter_chains")? {
        for (filter, filter_at) in chain_at.seq(chain, "filters")? {
            let (typed, typed_at) = filter_at.need(filter, "typed_config")?;
            let (type_url, message, message_at) = typed_config(typed, &typed_at)?;
            if type_url == HCM_TYPE {
                hcm = Some((message, message_at));
                break 'chains;
            }
        }
    }
    let (hcm, hcm_at) = hcm.ok_or_else(|| {
        listener_at
            .key("filter_chains")
            .fail("no envoy.filters.network.http_connection_manager filter")
    })?;
    let mut wasm = None;
    for (filter, filter_at) in hcm_at.seq(hcm, "http_filters")? {
        let Some(typed) = get(filter, "typed_config").filter(|t| !t.is_null()) else {
            continue;
        };
        let (type_url, message, message_at) = typed_config(typed, &filter_at.key("typed_config"))?;
        if type_url == WASM_FILTER_TYPE {
            // host-sim serve runs one wasm filter per listener: a second one would be silently
            // skipped (Envoy runs every http_filters entry in order), so it is refused.
            if wasm.is_some() {
                return Err(filter_at.fail(
                    "a second envoy.filters.http.wasm filter: host-sim serve runs one wasm filter per listener",
                ));
            }
            let (config, config_at) = message_at.need(message, "config")?;
            wasm = Some(plugin_config(config, &config_at, base)?);
        }
    }
    let plugin = wasm.ok_or_else(|| {
        hcm_at
            .key("http_filters")
            .fail("no envoy.filters.http.wasm filter (typed_config of type envoy.extensions.filters.http.wasm.v3.Wasm, directly or in a TypedStruct)")
    })?;
    let template = Route {
        name: String::new(),
        path_prefix: "/".into(),
        filter: plugin.filter,
        plugin_name: plugin.name,
        root_id: plugin.root_id,
        vm_id: plugin.vm_id,
        config: plugin.configuration,
        vm_configuration: plugin.vm_configuration,
        fallback: Fallback::NotFound,
        fail_open: plugin.fail_open,
        // Every route of the connection manager runs on its one wasm filter (Route::shared_filter).
        shared_filter: Some(0),
        chained: Vec::new(),
    };
    let mut routes = Vec::new();
    if let Some(route_config) = get(hcm, "route_config").filter(|r| !r.is_null()) {
        let route_config_at = hcm_at.key("route_config");
        for (vh, vh_at) in route_config_at.seq(route_config, "virtual_hosts")? {
            for (route, route_at) in vh_at.seq(vh, "routes")? {
                let prefix = match get(route, "match") {
                    Some(m) => route_at.key("match").opt_str(m, "prefix")?,
                    None => String::new(),
                };
                let fallback = if let Some(action) = get(route, "route").filter(|r| !r.is_null()) {
                    let cluster = route_at.key("route").need_str(action, "cluster")?;
                    Fallback::Upstream(cluster.to_string())
                } else if let Some(dr) = get(route, "direct_response").filter(|d| !d.is_null()) {
                    let dr_at = route_at.key("direct_response");
                    let status = match get(dr, "status") {
                        None | Some(Value::Null) => 200,
                        Some(s) => s
                            .as_u64()
                            .and_then(|s| u16::try_from(s).ok())
                            .filter(|s| (100..=599).contains(s))
                            .ok_or_else(|| dr_at.key("status").fail(format!("{s:?} is not an HTTP status")))?,
                    };
                    let body = match get(dr, "body") {
                        Some(b) if !b.is_null() => dr_at.key("body").opt_str(b, "inline_string")?,
                        _ => String::new(),
                    };
                    Fallback::Direct { status, body }
                } else {
                    Fallback::NotFound
                };
                routes.push(Route {
                    name: route_at.opt_str(route, "name")?,
                    path_prefix: if prefix.is_empty() { "/".to_string() } else { prefix },
                    fallback,
                    ..template.clone()
                });
            }
        }
    }
    if routes.is_empty() {
        routes.push(template);
    }
    for (i, r) in routes.iter_mut().enumerate() {
        if r.name.is_empty() {
            r.name = format!("route-{i}");
        }
    }
    let generate_request_id = get(hcm, "generate_request_id").and_then(Value::as_bool).unwrap_or(true);
    Ok(Deployment {
        profile: Profile::Envoy,
        routes,
        upstreams,
        listen,
        client_body_buffer_bytes: DEFAULT_CLIENT_BODY_BUFFER_BYTES,
        services,
        notes,
        generate_request_id,
    })
}

/// Reads a Kong 3.x declarative config: each route (top level, or under a service) with
/// `paths` and `filter_chains`. The route runs every enabled filter of its service's enabled
/// chains, then of its own, in order ([`Route::chain`]); each filter names
/// `<filters_dir>/<name>.wasm` (Kong's `wasm_filters_path`: the filter name is the file name);
/// its `config` is passed as a string verbatim, or JSON-encoded when it is an object (Kong with a
/// `.meta.json`). A route under a service falls back to the service's `url` / `host:port`.
pub fn from_kong_file(file: &Path, filters_dir: &Path) -> Result<Deployment, DeployError> {
    let doc = read_yaml(file)?;
    match get(&doc, "_format_version").and_then(Value::as_str) {
        Some("3.0") => {}
        other => return Err(err(file, format!("_format_version must be \"3.0\", found {other:?}"))),
    }
    let mut routes = Vec::new();
    // Each Kong route has one filter chain, whatever number of `paths` it matches: its paths
    // share the filter's VM and root context (`Route::shared_filter`, one group per Kong route).
    let mut kong_routes_read = 0usize;
    let mut add_route = |route: &Value, service: Option<&Value>| -> Result<(), DeployError> {
        let name = get(route, "name")
            .and_then(Value::as_str)
            .unwrap_or("route")
            .to_string();
        // Kong runs the service's chain, then the route's, skipping disabled chains and filters
        // (kong/runloop/wasm.lua `build_filter_list`: service chain first, then route chain).
        let chains: Vec<&Value> = (service.map(|s| seq(get(s, "filter_chains"))).unwrap_or(&[]).iter())
            .chain(seq(get(route, "filter_chains")))
            .collect();
        let enabled = |v: &&Value| get(v, "enabled").and_then(Value::as_bool) != Some(false);
        let enabled_chains: Vec<&Value> = chains.into_iter().filter(enabled).collect();
        if enabled_chains.is_empty() {
            return Ok(());
        }
        let filters: Vec<&Value> = enabled_chains
            .iter()
            .flat_map(|chain| seq(get(chain, "filters")))
            .filter(enabled)
            .collect();
        if filters.is_empty() {
            return Err(err(file, format!("route {name}: filter chain has no enabled filter")));
        }
        let mut chain = Vec::with_capacity(filters.len());
        for filter in filters {
            let filter_name = get(filter, "name")
                .and_then(Value::as_str)
                .ok_or_else(|| err(file, format!("route {name}: filter has no name")))?;
            let config = match get(filter, "config") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(s)) => s.as_bytes().to_vec(),
                Some(other) => {
                    let json: serde_json::Value = serde_norway::from_value(other.clone())
                        .map_err(|e| err(file, format!("route {name}: {filter_name}: config: {e}")))?;
                    json.to_string().into_bytes()
                }
            };
            chain.push(ChainedFilter {
                filter: filters_dir.join(format!("{filter_name}.wasm")),
                plugin_name: filter_name.to_string(),
                root_id: String::new(),
                config,
            });
        }
        let first = chain.remove(0);
        let fallback = match service {
            Some(s) => match (
                get(s, "url").and_then(Value::as_str),
                get(s, "host").and_then(Value::as_str),
            ) {
                (Some(url), _) => {
                    Fallback::Upstream(url.trim_start_matches("http://").trim_end_matches('/').to_string())
                }
                (None, Some(host)) => Fallback::Upstream(format!(
                    "{host}:{}",
                    get(s, "port").and_then(Value::as_u64).unwrap_or(80)
                )),
                _ => Fallback::NotFound,
            },
            None => Fallback::NotFound,
        };
        let paths: Vec<String> = seq(get(route, "paths"))
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect();
        let group = kong_routes_read;
        kong_routes_read += 1;
        for path in if paths.is_empty() { vec!["/".to_string()] } else { paths } {
            routes.push(Route {
                name: name.clone(),
                path_prefix: path,
                filter: first.filter.clone(),
                plugin_name: first.plugin_name.clone(),
                root_id: first.root_id.clone(),
                vm_id: String::new(),
                config: first.config.clone(),
                vm_configuration: Vec::new(),
                fallback: fallback.clone(),
                fail_open: false,
                shared_filter: Some(group),
                chained: chain.clone(),
            });
        }
        Ok(())
    };
    for route in seq(get(&doc, "routes")) {
        add_route(route, None)?;
    }
    for service in seq(get(&doc, "services")) {
        for route in seq(get(service, "routes")) {
            add_route(route, Some(service))?;
        }
    }
    if routes.is_empty() {
        return Err(err(file, "no route with an enabled filter chain"));
    }
    Ok(Deployment {
        profile: Profile::Kong,
        routes,
        upstreams: BTreeMap::new(),
        listen: None,
        client_body_buffer_bytes: DEFAULT_CLIENT_BODY_BUFFER_BYTES,
        services: Vec::new(),
        notes: Vec::new(),
        generate_request_id: false,
    })
}

/// Reads `nginx_http_client_body_buffer_size` from a kong.conf: `name = value` lines, `#` starts
/// a comment (Kong's kong.conf.default format); the last setting wins. `None` when the file does
/// not set it (Kong then uses its default, 8k).
pub fn kong_conf_client_body_buffer(file: &Path) -> Result<Option<usize>, DeployError> {
    const NAME: &str = "nginx_http_client_body_buffer_size";
    let text = std::fs::read_to_string(file).map_err(|e| err(file, format!("cannot read: {e}")))?;
    let mut found = None;
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        if name.trim() != NAME {
            continue;
        }
        let size =
            parse_nginx_size(value.trim()).map_err(|e| err(file, format!("line {}: {NAME}: {e}", number + 1)))?;
        found = Some(size);
    }
    Ok(found)
}

/// Parses an nginx size (`8192`, `8k`, `64K`, `1m`, `1G`; nginx `ngx_parse_size`).
pub fn parse_nginx_size(text: &str) -> Result<usize, String> {
    let (digits, scale) = match text.as_bytes().last() {
        Some(b'k' | b'K') => (&text[..text.len() - 1], 1usize << 10),
        Some(b'm' | b'M') => (&text[..text.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a size (bytes, or a number with k, m or g)"));
    }
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses an nginx time (`60`, `60s`, `500ms`, `2m`, `1h`; a bare number is seconds, as in
/// nginx's `ngx_parse_time`).
pub fn parse_nginx_time(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "{text:?} is not a time (a number with ms, s, m or h; seconds without)"
            ))
        }
    };
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a time (a number with ms, s, m or h; seconds without)"
        ));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per_unit))
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses `NAME=HOST:PORT`.
pub fn parse_upstream(spec: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = spec
        .split_once('=')
        .ok_or_else(|| format!("--upstream {spec:?}: expected NAME=HOST:PORT"))?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("--upstream {spec:?}: {addr:?} is not a HOST:PORT address"))?;
    Ok((name.to_string(), addr))
}

#[cfg(test)]
mod tests {

    #[test]
    fn nginx_times_parse_as_nginx_reads_them() {
        use std::time::Duration;
        assert_eq!(parse_nginx_time("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_nginx_time("75s"), Ok(Duration::from_secs(75)));
        assert_eq!(parse_nginx_time("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_nginx_time("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_nginx_time("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "1.5s", "-1s", "10 minutes", "99999999999999999999h"] {
            assert!(parse_nginx_time(bad).is_err(), "{bad:?} accepted");
        }
    }

    use super::*;

    #[test]
    fn nginx_sizes() {
        assert_eq!(parse_nginx_size("8192"), Ok(8192));
        assert_eq!(parse_nginx_size("8k"), Ok(8192));
        assert_eq!(parse_nginx_size("64K"), Ok(65536));
        assert_eq!(parse_nginx_size("1m"), Ok(1 << 20));
        assert_eq!(parse_nginx_size("2G"), Ok(2 << 30));
        for bad in ["", "k", "8 k", "-1", "1.5m", "8kb", "99999999999999999999999g"] {
            assert!(parse_nginx_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_body_buffer_from_a_kong_conf() {
        let dir = std::env::temp_dir().join(format!("host-sim-kong-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kong.conf");
        let read = |text: &str| {
            std::fs::write(&file, text).unwrap();
            kong_conf_client_body_buffer(&file)
        };
        assert_eq!(read("wasm = on\n# nginx_http_client_body_buffer_size = 1m\n"), Ok(None));
        assert_eq!(
            read("nginx_http_client_body_buffer_size = 16k   # comment\nnginx_http_client_body_buffer_size=64k\n"),
            Ok(Some(65536))
        );
        let bad = read("wasm = on\nnginx_http_client_body_buffer_size = lots\n").unwrap_err();
        assert!(
            bad.message.contains("line 2: nginx_http_client_body_buffer_size"),
            "{bad}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            kong_conf_client_body_buffer(&file).is_err(),
            "a missing file is an error"
        );
    }

    #[test]
    fn the_shipped_kong_conf_buffers_kong_yml_bodies_in_memory() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let buffer = kong_conf_client_body_buffer(&root.join("kong.conf.example"))
            .unwrap()
            .expect("kong.conf.example sets nginx_http_client_body_buffer_size");
        let deployment = from_kong_file(&root.join("kong.yml"), Path::new("filters")).unwrap();
        for route in &deployment.routes {
            let config: serde_json::Value = serde_json::from_slice(&route.config).unwrap();
            let max = config["max_body_size"].as_u64().unwrap_or(1 << 20) as usize;
            assert!(
                Profile::Kong.request_body_readable(max, buffer),
                "route {}: max_body_size {max} > buffer {buffer}",
                route.name
            );
        }
    }

    /// Writes `yaml` to a scratch bootstrap and reads it.
    fn envoy(yaml: &str, listener: Option<&str>) -> Result<Deployment, DeployError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "host-sim-envoy-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("envoy.yaml");
        std::fs::write(&file, yaml).unwrap();
        let read = from_envoy_file(&file, listener);
        std::fs::remove_dir_all(&dir).unwrap();
        read
    }

    fn message(result: Result<Deployment, DeployError>) -> String {
        result.expect_err("the bootstrap is refused").message
    }

    /// A wasm filter's `typed_config` (indented for a listener's http_filters).
    fn wasm_filter(typed_config: &str) -> String {
        format!(
            "
  listeners:
    - name: main
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: 18000 }} }}
      filter_chains:
        - filters:
            - name: hcm
              typed_config:
                \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                http_filters:
                  - name: wasm
                    typed_config:
{typed_config}
                  - name: envoy.filters.http.router
                    typed_config:
                      \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"
        )
    }

    const PLAIN_WASM: &str =
        "                      \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: plain
                        vm_config:
                          vm_id: v
                          code: { local: { filename: f.wasm } }
                          configuration: { \"@type\": type.googleapis.com/google.protobuf.BytesValue, value: dm0= }
                        configuration: { \"@type\": type.googleapis.com/google.protobuf.StringValue, value: cfg }
";

    fn static_resources(listeners: &str, clusters: &str) -> String {
        format!("static_resources:{listeners}  clusters:\n{clusters}")
    }

    fn cluster(kind: &str, address: &str, extra: &str) -> String {
        format!(
            "    - name: up
      type: {kind}
{extra}      load_assignment:
        cluster_name: up
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: {address}, port_value: 9000 }}
"
        )
    }

    #[test]
    fn a_second_wasm_filter_is_refused_at_its_path_instead_of_skipped() {
        let second = format!(
            "                  - name: wasm2\n                    typed_config:\n{}",
            PLAIN_WASM.replace("name: plain", "name: second")
        );
        let two = wasm_filter(PLAIN_WASM).replace(
            "                  - name: envoy.filters.http.router",
            &format!("{second}                  - name: envoy.filters.http.router"),
        );
        assert_eq!(
            message(envoy(
                &static_resources(&two, &cluster("STATIC", "127.0.0.1", "")),
                None
            )),
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[1]: \
             a second envoy.filters.http.wasm filter: host-sim serve runs one wasm filter per listener"
        );
    }

    #[test]
    fn a_kong_route_runs_its_services_chain_then_its_own_without_the_disabled_filters() {
        let dir = std::env::temp_dir().join(format!("host-sim-kong-chain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kong.yml");
        let read = |filters: &str| {
            let yaml = format!(
                "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:9000\n    \
                 filter_chains:\n      - filters:\n          - name: b\n            config: from-service\n    \
                 routes:\n      - name: r\n        paths: [/]\n        filter_chains:\n          - filters:\n{filters}"
            );
            std::fs::write(&file, yaml).unwrap();
            from_kong_file(&file, Path::new("filters"))
        };
        let names = |route: &Route| -> Vec<(String, String)> {
            route
                .chain()
                .map(|f| (f.plugin_name, String::from_utf8(f.config).unwrap()))
                .collect()
        };
        let pair = |name: &str, config: &str| (name.to_string(), config.to_string());
        let two = read("              - name: a\n                config: { n: 1 }\n").unwrap();
        // The service's chain first, then the route's (kong/runloop/wasm.lua build_filter_list).
        assert_eq!(
            names(&two.routes[0]),
            [pair("b", "from-service"), pair("a", r#"{"n":1}"#)]
        );
        assert_eq!(two.routes[0].filter, Path::new("filters").join("b.wasm"));
        assert_eq!(two.routes[0].chained[0].filter, Path::new("filters").join("a.wasm"));
        // The same module twice, configured differently; a disabled filter is left out.
        let same_twice = read(
            "              - name: a\n                config: first\n              - name: off\n                \
             enabled: false\n              - name: a\n                config: second\n",
        )
        .unwrap();
        assert_eq!(
            names(&same_twice.routes[0]),
            [pair("b", "from-service"), pair("a", "first"), pair("a", "second")]
        );
        let only_disabled = read("              - name: off\n                enabled: false\n").unwrap();
        assert_eq!(names(&only_disabled.routes[0]), [pair("b", "from-service")]);
        let nameless = read("              - config: x\n").unwrap_err();
        assert!(nameless.message.ends_with("route r: filter has no name"), "{nameless}");
        let yaml = "_format_version: \"3.0\"\nroutes:\n  - name: r\n    paths: [/]\n    \
                    filter_chains:\n      - filters:\n          - name: off\n            enabled: false\n";
        std::fs::write(&file, yaml).unwrap();
        let none = from_kong_file(&file, Path::new("filters")).unwrap_err();
        assert!(
            none.message.ends_with("route r: filter chain has no enabled filter"),
            "{none}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kong_filters_of_one_module_share_its_vm_each_with_a_root_context_of_its_own() {
        let dir = std::env::temp_dir().join(format!("host-sim-kong-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kong.yml");
        // r (two paths): a, b, a; q: a.
        let yaml = "_format_version: \"3.0\"\nroutes:\n  - name: r\n    paths: [/a, /b]\n    \
                    filter_chains:\n      - filters:\n          - name: a\n            config: one\n          \
                    - name: b\n          - name: a\n            config: two\n  - name: q\n    paths: [/c]\n    \
                    filter_chains:\n      - filters:\n          - name: a\n            config: three\n";
        std::fs::write(&file, yaml).unwrap();
        let kong = from_kong_file(&file, Path::new("filters")).unwrap();
        let prefixes: Vec<&str> = kong.routes.iter().map(|r| r.path_prefix.as_str()).collect();
        assert_eq!(prefixes, ["/a", "/b", "/c"]);
        let plan = instance_plan(Profile::Kong, &kong.routes);
        // One VM per module: a's has the three a filters (r's two, q's one), b's has one.
        assert_eq!(plan.vms.len(), 2);
        assert_eq!(plan.vms[0].filter, Path::new("filters").join("a.wasm"));
        assert_eq!(plan.vms[0].roots, [(0, 0), (0, 2), (2, 0)]);
        assert_eq!(plan.vms[0].routes, [0, 1, 2]);
        assert_eq!(plan.vms[1].roots, [(0, 1)]);
        let link = |vm, root| Link { vm, root };
        // Both paths of r run the same filters (the same root contexts); q its own.
        assert_eq!(plan.chains[0], [link(0, 0), link(1, 0), link(0, 1)]);
        assert_eq!(plan.chains[1], plan.chains[0]);
        assert_eq!(plan.chains[2], [link(0, 2)]);
        // The Envoy profile gives each filter group its own VM.
        let envoy_plan = instance_plan(Profile::Envoy, &kong.routes);
        assert_eq!(envoy_plan.vms.len(), 4);
        assert_eq!(envoy_plan.chains[2], [link(3, 0)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_wasm_filter_in_either_typed_struct_reads_as_the_plain_one() {
        let plain = envoy(
            &static_resources(&wasm_filter(PLAIN_WASM), &cluster("STATIC", "127.0.0.1", "")),
            None,
        )
        .unwrap();
        assert_eq!(plain.routes[0].config, b"cfg");
        assert_eq!(plain.routes[0].vm_configuration, b"vm");
        assert_eq!(plain.routes[0].plugin_name, "plain");
        for url in TYPED_STRUCT_URLS {
            let wrapped = format!(
                "                      \"@type\": {url}
                      type_url: type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      value:
                        config:
                          name: plain
                          vm_config:
                            vm_id: v
                            code: {{ local: {{ filename: f.wasm }} }}
                            configuration: {{ \"@type\": type.googleapis.com/google.protobuf.BytesValue, value: dm0= }}
                          configuration: {{ \"@type\": type.googleapis.com/google.protobuf.StringValue, value: cfg }}
"
            );
            let read = envoy(
                &static_resources(&wasm_filter(&wrapped), &cluster("STATIC", "127.0.0.1", "")),
                None,
            )
            .unwrap_or_else(|e| panic!("{url}: {e}"));
            let without_dir = |routes: &[Route]| -> Vec<Route> {
                routes
                    .iter()
                    .map(|r| Route {
                        filter: r.filter.file_name().unwrap().into(),
                        ..r.clone()
                    })
                    .collect()
            };
            assert_eq!(without_dir(&read.routes), without_dir(&plain.routes), "{url}");
        }
        // A TypedStruct around something else is not the wasm filter.
        let other = "                      \"@type\": type.googleapis.com/xds.type.v3.TypedStruct
                      type_url: type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
                      value: { max_request_bytes: 10 }
";
        let refused = message(envoy(
            &static_resources(&wasm_filter(other), &cluster("STATIC", "127.0.0.1", "")),
            None,
        ));
        assert!(
            refused.starts_with("static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters: no envoy.filters.http.wasm"),
            "{refused}"
        );
        let no_type_url = "                      \"@type\": type.googleapis.com/udpa.type.v1.TypedStruct
                      value: {}
";
        let refused = message(envoy(
            &static_resources(&wasm_filter(no_type_url), &cluster("STATIC", "127.0.0.1", "")),
            None,
        ));
        assert_eq!(
            refused,
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.type_url: missing"
        );
    }

    fn with_configuration(configuration: &str) -> Result<Deployment, DeployError> {
        let filter = format!(
            "                      \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        vm_config: {{ code: {{ local: {{ filename: f.wasm }} }} }}
                        configuration:
{configuration}
"
        );
        envoy(
            &static_resources(&wasm_filter(&filter), &cluster("STATIC", "127.0.0.1", "")),
            None,
        )
    }

    const CONFIGURATION_PATH: &str =
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.config.configuration";

    #[test]
    fn plugin_configurations_reach_the_filter_as_envoy_hands_them_over() {
        let config = |c: &str| with_configuration(c).map(|d| d.routes[0].config.clone());
        let indent = "                          ";
        assert_eq!(
            config(&format!(
                "{indent}\"@type\": type.googleapis.com/google.protobuf.StringValue\n{indent}value: '{{\"a\":1}}'"
            )),
            Ok(br#"{"a":1}"#.to_vec())
        );
        assert_eq!(
            config(&format!(
                "{indent}\"@type\": type.googleapis.com/google.protobuf.BytesValue\n{indent}value: AAEC/w=="
            )),
            Ok(vec![0, 1, 2, 255])
        );
        // Struct { fields { "c": null, "b": ["x", true, 7], "a": "1.5", "d": "3000000000" } }, in
        // the file's order; a fraction and an integer beyond int32 as their text, as Envoy does.
        let mut expected = Vec::new();
        expected.extend([0x0a, 0x07, 0x0a, 0x01, b'c', 0x12, 0x02, 0x08, 0x00]);
        expected.extend([0x0a, 0x1b, 0x0a, 0x01, b'b', 0x12, 0x16, 0x32, 0x14]);
        expected.extend([0x0a, 0x03, 0x1a, 0x01, b'x', 0x0a, 0x02, 0x20, 0x01, 0x0a, 0x09, 0x11]);
        expected.extend(7f64.to_le_bytes());
        expected.extend([0x0a, 0x0a, 0x0a, 0x01, b'a', 0x12, 0x05, 0x1a, 0x03]);
        expected.extend(b"1.5");
        expected.extend([0x0a, 0x11, 0x0a, 0x01, b'd', 0x12, 0x0c, 0x1a, 0x0a]);
        expected.extend(b"3000000000");
        assert_eq!(
            config(&format!(
                "{indent}\"@type\": type.googleapis.com/google.protobuf.Struct\n{indent}value: {{ c: null, b: [x, true, 7], a: 1.5, d: 3000000000 }}"
            )),
            Ok(expected)
        );
        let refused = message(with_configuration(&format!(
            "{indent}\"@type\": type.googleapis.com/google.protobuf.BytesValue\n{indent}value: '***'"
        )));
        assert!(
            refused.starts_with(&format!(
                "{CONFIGURATION_PATH}.value: a BytesValue's value must be base64"
            )),
            "{refused}"
        );
        let refused = message(with_configuration(&format!(
            "{indent}\"@type\": type.googleapis.com/google.protobuf.Int32Value\n{indent}value: 3"
        )));
        assert!(
            refused.starts_with(&format!(
                "{CONFIGURATION_PATH}.@type: type.googleapis.com/google.protobuf.Int32Value: host-sim passes"
            )),
            "{refused}"
        );
        let refused = message(with_configuration(&format!("{indent}value: '{{}}'")));
        assert_eq!(refused, format!("{CONFIGURATION_PATH}.@type: missing"));
        let refused = message(with_configuration(&format!(
            "{indent}\"@type\": type.googleapis.com/google.protobuf.StringValue\n{indent}value: [1]"
        )));
        assert_eq!(
            refused,
            format!("{CONFIGURATION_PATH}.value: a StringValue's value must be a string")
        );
    }

    const ENDPOINT_ADDRESS: &str =
        "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address";

    #[test]
    fn dns_clusters_resolve_at_start_up_and_static_ones_take_addresses_only() {
        let upstream = |kind: &str, address: &str, extra: &str| {
            envoy(
                &static_resources(&wasm_filter(PLAIN_WASM), &cluster(kind, address, extra)),
                None,
            )
            .map(|d| d.upstreams["up"])
        };
        let v4 = "      dns_lookup_family: V4_ONLY\n";
        let localhost: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        assert_eq!(upstream("STRICT_DNS", "localhost", v4), Ok(localhost));
        assert_eq!(upstream("LOGICAL_DNS", "localhost", v4), Ok(localhost));
        assert_eq!(
            upstream("STRICT_DNS", "127.0.0.1", ""),
            Ok(localhost),
            "an IP needs no lookup"
        );
        let default_family = upstream("STRICT_DNS", "localhost", "").unwrap();
        assert!(
            default_family.ip().is_loopback() && default_family.port() == 9000,
            "{default_family}"
        );
        let refused = message(envoy(
            &static_resources(&wasm_filter(PLAIN_WASM), &cluster("STATIC", "localhost", "")),
            None,
        ));
        assert!(
            refused.starts_with(&format!(
                "{ENDPOINT_ADDRESS}: \"localhost\" is not an IP address; a STATIC cluster"
            )),
            "{refused}"
        );
        let refused = message(envoy(
            &static_resources(
                &wasm_filter(PLAIN_WASM),
                &cluster("STRICT_DNS", "no-such-host.invalid", ""),
            ),
            None,
        ));
        assert!(
            refused.starts_with(&format!("{ENDPOINT_ADDRESS}: cannot resolve \"no-such-host.invalid\"")),
            "{refused}"
        );
        let refused = message(envoy(
            &static_resources(
                &wasm_filter(PLAIN_WASM),
                &cluster("STRICT_DNS", "localhost", "      dns_lookup_family: V5\n"),
            ),
            None,
        ));
        assert!(
            refused.starts_with("static_resources.clusters[0].dns_lookup_family: "),
            "{refused}"
        );
        let refused = message(envoy(
            &static_resources(&wasm_filter(PLAIN_WASM), &cluster("EDS", "127.0.0.1", "")),
            None,
        ));
        assert!(
            refused.starts_with("static_resources.clusters[0].type: EDS: "),
            "{refused}"
        );
    }

    #[test]
    fn cluster_errors_name_the_yaml_path() {
        let two_endpoints = "    - name: up
      type: LOGICAL_DNS
      load_assignment:
        endpoints:
          - lb_endpoints:
              - endpoint: { address: { socket_address: { address: localhost, port_value: 1 } } }
              - endpoint: { address: { socket_address: { address: localhost, port_value: 2 } } }
";
        let refused = message(envoy(&static_resources(&wasm_filter(PLAIN_WASM), two_endpoints), None));
        assert!(
            refused.starts_with(
                "static_resources.clusters[0].load_assignment: a LOGICAL_DNS cluster takes exactly one endpoint"
            ),
            "{refused}"
        );
        let second_cluster_bad = format!(
            "{}    - name: other
      load_assignment:
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ port_value: 1 }} }} }}
",
            cluster("STATIC", "127.0.0.1", "")
        );
        assert_eq!(
            message(envoy(&static_resources(&wasm_filter(PLAIN_WASM), &second_cluster_bad), None)),
            "static_resources.clusters[1].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: missing"
        );
        let bad_port = cluster("STATIC", "127.0.0.1", "").replace("port_value: 9000", "port_value: 70000");
        assert!(message(envoy(&static_resources(&wasm_filter(PLAIN_WASM), &bad_port), None))
            .starts_with("static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: 70000 is not a port"));
        let no_assignment = "    - name: up\n      type: STRICT_DNS\n";
        assert_eq!(
            message(envoy(&static_resources(&wasm_filter(PLAIN_WASM), no_assignment), None)),
            "static_resources.clusters[0].load_assignment: missing"
        );
        let no_name = "    - type: STATIC\n";
        assert_eq!(
            message(envoy(&static_resources(&wasm_filter(PLAIN_WASM), no_name), None)),
            "static_resources.clusters[0].name: missing"
        );
    }

    fn two_listeners() -> String {
        let first = wasm_filter(PLAIN_WASM);
        let second = wasm_filter(&PLAIN_WASM.replace("name: plain", "name: second"))
            .replace("  listeners:\n", "")
            .replace("name: main", "name: other")
            .replace("18000", "18001");
        static_resources(&format!("{first}{second}"), &cluster("STATIC", "127.0.0.1", ""))
    }

    #[test]
    fn one_of_several_listeners_is_served_by_name_or_the_first_and_said_so() {
        let first = envoy(&two_listeners(), None).unwrap();
        assert_eq!(first.routes[0].plugin_name, "plain");
        assert_eq!(first.listen, Some("127.0.0.1:18000".parse().unwrap()));
        assert_eq!(first.notes.len(), 1);
        assert!(
            first.notes[0].contains("serving the first, \"main\" (others: [\"other\"]); pick one with --listener NAME"),
            "{:?}",
            first.notes
        );
        let other = envoy(&two_listeners(), Some("other")).unwrap();
        assert_eq!(other.routes[0].plugin_name, "second");
        assert_eq!(other.listen, Some("127.0.0.1:18001".parse().unwrap()));
        assert!(other.notes.is_empty());
        assert_eq!(
            message(envoy(&two_listeners(), Some("nope"))),
            "static_resources.listeners: no listener named \"nope\" (the file has [\"main\", \"other\"])"
        );
        let only_one = envoy(
            &static_resources(&wasm_filter(PLAIN_WASM), &cluster("STATIC", "127.0.0.1", "")),
            None,
        )
        .unwrap();
        assert!(only_one.notes.is_empty());
        let bad_listener = two_listeners().replace(
            "address: 127.0.0.1, port_value: 18001",
            "address: localhost, port_value: 18001",
        );
        assert_eq!(
            message(envoy(&bad_listener, Some("other"))),
            "static_resources.listeners[1].address.socket_address.address: \"localhost\" is not an IP address"
        );
    }

    fn with_extensions(extensions: &str) -> Result<Deployment, DeployError> {
        let doc = format!(
            "bootstrap_extensions:\n{extensions}{}",
            static_resources(&wasm_filter(PLAIN_WASM), &cluster("STATIC", "127.0.0.1", ""))
        );
        envoy(&doc, None)
    }

    #[test]
    fn wasm_services_are_read_from_bootstrap_extensions() {
        let services = with_extensions(
            "  - name: envoy.bootstrap.wasm
    typed_config:
      \"@type\": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
      singleton: true
      config:
        name: svc
        root_id: svc_root
        vm_config:
          vm_id: svc_vm
          configuration: { \"@type\": type.googleapis.com/google.protobuf.StringValue, value: vmcfg }
          code: { local: { filename: svc.wasm } }
        configuration: { \"@type\": type.googleapis.com/google.protobuf.StringValue, value: tick=10 }
  - name: wrapped
    typed_config:
      \"@type\": type.googleapis.com/xds.type.v3.TypedStruct
      type_url: type.googleapis.com/envoy.extensions.wasm.v3.WasmService
      value:
        config: { vm_config: { code: { local: { filename: other.wasm } } } }
  - name: envoy.bootstrap.internal_listener
    typed_config:
      \"@type\": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener
",
        )
        .unwrap()
        .services;
        assert_eq!(services.len(), 2, "{services:?}");
        assert_eq!(services[0].name, "svc");
        assert_eq!(services[0].root_id, "svc_root");
        assert_eq!(services[0].vm_id, "svc_vm");
        assert_eq!(services[0].vm_configuration, b"vmcfg");
        assert_eq!(services[0].config, b"tick=10");
        assert!(services[0].singleton);
        assert!(services[0].filter.ends_with("svc.wasm"));
        assert!(!services[1].singleton, "singleton defaults to false, as in wasm.proto");
        assert!(services[1].config.is_empty());
        assert_eq!(
            message(with_extensions(
                "  - typed_config:
      \"@type\": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
      config: { vm_config: { code: { local: {} } } }
"
            )),
            "bootstrap_extensions[0].typed_config.config.vm_config.code.local.filename: missing"
        );
        assert_eq!(
            message(with_extensions(
                "  - typed_config:
      \"@type\": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
      singleton: yes please
      config: { vm_config: { code: { local: { filename: a.wasm } } } }
"
            )),
            "bootstrap_extensions[0].typed_config.singleton: not a boolean"
        );
        assert_eq!(
            message(with_extensions("  - name: x\n")),
            "bootstrap_extensions[0].typed_config: missing"
        );
    }

    #[test]
    fn the_shipped_envoy_yaml_reads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let deployment = from_envoy_file(&root.join("envoy.yaml"), None).unwrap();
        assert_eq!(deployment.upstreams["kafka_rest"], "127.0.0.1:18082".parse().unwrap());
        assert_eq!(deployment.listen, Some("127.0.0.1:18000".parse().unwrap()));
        assert_eq!(deployment.routes.len(), 1);
        let route = &deployment.routes[0];
        assert_eq!(
            (route.plugin_name.as_str(), route.root_id.as_str(), route.vm_id.as_str()),
            ("kafka_upstream", "kafka_upstream", "kafka_upstream")
        );
        assert!(matches!(route.fallback, Fallback::Direct { status: 500, .. }));
        let config: serde_json::Value = serde_json::from_slice(&route.config).unwrap();
        assert_eq!(config["rest_proxy"]["upstream"], "kafka_rest");
        assert!(deployment.services.is_empty() && deployment.notes.is_empty());
        // envoy.yaml turns Envoy's request ids off (the filter forwards the client's own).
        assert!(!deployment.generate_request_id);
    }

    #[test]
    fn the_routes_of_one_connection_manager_share_its_filter() {
        let hcm_type = "http_connection_manager.v3.HttpConnectionManager\n";
        let route_config = "                route_config:
                  virtual_hosts:
                    - name: all
                      domains: [\"*\"]
                      routes:
                        - name: produce
                          match: { prefix: /topics }
                          route: { cluster: up }
                        - name: rest
                          match: { prefix: / }
                          direct_response: { status: 404, body: { inline_string: none } }
";
        let listeners = wasm_filter(PLAIN_WASM).replace(hcm_type, &format!("{hcm_type}{route_config}"));
        let deployment = envoy(&static_resources(&listeners, &cluster("STATIC", "127.0.0.1", "")), None).unwrap();
        let names: Vec<&str> = deployment.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["produce", "rest"]);
        // One VM slot for both: one VM and root context per thread, as Envoy's one wasm filter.
        assert_eq!(vm_routes(&deployment.routes), vec![vec![0, 1]]);
        // Each keeps its own prefix and fallback.
        assert_eq!(deployment.routes[0].path_prefix, "/topics");
        assert_eq!(deployment.routes[0].fallback, Fallback::Upstream("up".into()));
        assert_eq!(deployment.routes[1].path_prefix, "/");
        assert_eq!(
            deployment.routes[1].fallback,
            Fallback::Direct {
                status: 404,
                body: "none".into()
            }
        );
        // Routes without a shared filter (Kong, `serve --filter`) each have their own; routes of
        // different groups do not mix.
        let own = |name: &str, group: Option<usize>| Route {
            shared_filter: group,
            ..Route::new(name, PathBuf::from("f.wasm"), Vec::new())
        };
        let routes = [
            own("a", None),
            own("b", Some(1)),
            own("c", None),
            own("d", Some(1)),
            own("e", Some(2)),
        ];
        assert_eq!(vm_routes(&routes), vec![vec![0], vec![1, 3], vec![2], vec![4]]);
        assert!(vm_routes(&[]).is_empty());
        // One root context per VM: the group's one filter.
        let plan = instance_plan(Profile::Envoy, &routes);
        assert!(plan.vms.iter().all(|vm| vm.roots.len() == 1), "{plan:?}");
        assert_eq!(plan.chains[3], [Link { vm: 1, root: 0 }]);
    }

    /// The routes of each VM of the Envoy profile's plan.
    fn vm_routes(routes: &[Route]) -> Vec<Vec<usize>> {
        (instance_plan(Profile::Envoy, routes).vms.into_iter())
            .map(|vm| vm.routes)
            .collect()
    }

    #[test]
    fn request_ids_are_generated_unless_the_connection_manager_says_otherwise() {
        let plain = envoy(
            &static_resources(&wasm_filter(PLAIN_WASM), &cluster("STATIC", "127.0.0.1", "")),
            None,
        )
        .unwrap();
        assert!(plain.generate_request_id, "Envoy's default");
        let hcm_type = "http_connection_manager.v3.HttpConnectionManager\n";
        let off = wasm_filter(PLAIN_WASM).replace(
            hcm_type,
            &format!("{hcm_type}                generate_request_id: false\n"),
        );
        let off = envoy(&static_resources(&off, &cluster("STATIC", "127.0.0.1", "")), None).unwrap();
        assert!(!off.generate_request_id);
    }
}
