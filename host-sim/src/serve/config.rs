//! What a gateway serves: routes (a path prefix, a filter and its configuration, what answers
//! when the filter lets a request through) and upstreams. Built from flags, from an Envoy
//! bootstrap (`envoy.yaml`) or from a Kong declarative config (`kong.yml`), so the project's own
//! deployment files are exercised by the same code path users run.

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
    /// The plugin configuration bytes.
    pub config: Vec<u8>,
    /// What answers when the filter continues the request.
    pub fallback: Fallback,
    /// Envoy `fail_open`: once the filter's VM has failed, requests pass without it instead of
    /// getting 503. Kong has no such setting.
    pub fail_open: bool,
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
    /// filter unreadable ([`crate::profile::Profile::request_body_readable`]). Kong's
    /// `nginx_http_client_body_buffer_size` ([`kong_conf_client_body_buffer`]).
    pub client_body_buffer_bytes: usize,
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

fn socket_address(v: &Value) -> Option<SocketAddr> {
    let sa = get(get(v, "address")?, "socket_address")?;
    let address = get(sa, "address")?.as_str()?;
    let port = get(sa, "port_value")?.as_u64()?;
    format!("{address}:{port}")
        .parse()
        .ok()
        .or_else(|| format!("[{address}]:{port}").parse().ok())
}

/// Reads an Envoy bootstrap: the first listener's HTTP connection manager, its
/// `envoy.filters.http.wasm` filter (`config.name`, `root_id`, `vm_config.vm_id`,
/// `vm_config.code.local.filename` relative to the file, `configuration.value`, `fail_open`), the routes of
/// its `route_config`, and every STATIC cluster's first endpoint.
pub fn from_envoy_file(file: &Path) -> Result<Deployment, DeployError> {
    let doc = read_yaml(file)?;
    let base = file.parent().unwrap_or(Path::new("."));
    let resources = get(&doc, "static_resources").ok_or_else(|| err(file, "no static_resources"))?;
    let mut upstreams = BTreeMap::new();
    for cluster in seq(get(resources, "clusters")) {
        let name = get(cluster, "name")
            .and_then(Value::as_str)
            .ok_or_else(|| err(file, "a cluster has no name"))?;
        let endpoint = seq(get(cluster, "load_assignment").and_then(|la| get(la, "endpoints")))
            .iter()
            .flat_map(|e| seq(get(e, "lb_endpoints")))
            .find_map(|lb| get(lb, "endpoint").and_then(socket_address))
            .ok_or_else(|| {
                err(
                    file,
                    format!("cluster {name}: no load_assignment endpoint with a socket_address"),
                )
            })?;
        upstreams.insert(name.to_string(), endpoint);
    }
    let listener = seq(get(resources, "listeners"))
        .first()
        .ok_or_else(|| err(file, "no listeners"))?;
    let listen = socket_address(listener);
    let hcm = seq(get(listener, "filter_chains"))
        .iter()
        .flat_map(|fc| seq(get(fc, "filters")))
        .find_map(|f| get(f, "typed_config"))
        .ok_or_else(|| err(file, "listener has no http_connection_manager"))?;
    let wasm = seq(get(hcm, "http_filters"))
        .iter()
        .find(|f| get(f, "name").and_then(Value::as_str) == Some("envoy.filters.http.wasm"))
        .and_then(|f| get(f, "typed_config"))
        .and_then(|tc| get(tc, "config"))
        .ok_or_else(|| err(file, "no envoy.filters.http.wasm filter with typed_config.config"))?;
    let vm_config = get(wasm, "vm_config").ok_or_else(|| err(file, "wasm config has no vm_config"))?;
    let filename = get(vm_config, "code")
        .and_then(|c| get(c, "local"))
        .and_then(|l| get(l, "filename"))
        .and_then(Value::as_str)
        .ok_or_else(|| err(file, "vm_config.code.local.filename is missing"))?;
    let config = get(wasm, "configuration")
        .and_then(|c| get(c, "value"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let template = Route {
        name: String::new(),
        path_prefix: "/".into(),
        filter: base.join(filename),
        plugin_name: text(get(wasm, "name")),
        root_id: text(get(wasm, "root_id")),
        vm_id: text(get(vm_config, "vm_id")),
        config: config.as_bytes().to_vec(),
        fallback: Fallback::NotFound,
        fail_open: get(wasm, "fail_open").and_then(Value::as_bool).unwrap_or(false),
    };
    let mut routes = Vec::new();
    let virtual_hosts = get(hcm, "route_config")
        .map(|rc| seq(get(rc, "virtual_hosts")))
        .unwrap_or(&[]);
    for vh in virtual_hosts {
        for route in seq(get(vh, "routes")) {
            let prefix = get(route, "match")
                .and_then(|m| get(m, "prefix"))
                .and_then(Value::as_str)
                .unwrap_or("/");
            let fallback = if let Some(cluster) = get(route, "route")
                .and_then(|r| get(r, "cluster"))
                .and_then(Value::as_str)
            {
                Fallback::Upstream(cluster.to_string())
            } else if let Some(dr) = get(route, "direct_response") {
                Fallback::Direct {
                    status: get(dr, "status").and_then(Value::as_u64).unwrap_or(200) as u16,
                    body: get(dr, "body")
                        .and_then(|b| get(b, "inline_string"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                }
            } else {
                Fallback::NotFound
            };
            routes.push(Route {
                name: text(get(route, "name")),
                path_prefix: prefix.to_string(),
                fallback,
                ..template.clone()
            });
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
    Ok(Deployment {
        profile: Profile::Envoy,
        routes,
        upstreams,
        listen,
        client_body_buffer_bytes: DEFAULT_CLIENT_BODY_BUFFER_BYTES,
    })
}

/// Reads a Kong 3.x declarative config: each route (top level, or under a service) with
/// `paths` and `filter_chains`. A chain's first enabled filter names `<filters_dir>/<name>.wasm`
/// (Kong's `wasm_filters_path`: the filter name is the file name); its `config` is passed as a
/// string verbatim, or JSON-encoded when it is an object (Kong with a `.meta.json`). A route
/// under a service falls back to the service's `url` / `host:port`.
pub fn from_kong_file(file: &Path, filters_dir: &Path) -> Result<Deployment, DeployError> {
    let doc = read_yaml(file)?;
    match get(&doc, "_format_version").and_then(Value::as_str) {
        Some("3.0") => {}
        other => return Err(err(file, format!("_format_version must be \"3.0\", found {other:?}"))),
    }
    let mut routes = Vec::new();
    let mut add_route = |route: &Value, service: Option<&Value>| -> Result<(), DeployError> {
        let name = get(route, "name")
            .and_then(Value::as_str)
            .unwrap_or("route")
            .to_string();
        let chains: Vec<&Value> = seq(get(route, "filter_chains"))
            .iter()
            .chain(service.map(|s| seq(get(s, "filter_chains"))).unwrap_or(&[]))
            .collect();
        let Some(chain) = chains
            .into_iter()
            .find(|c| get(c, "enabled").and_then(Value::as_bool) != Some(false))
        else {
            return Ok(());
        };
        let filter = seq(get(chain, "filters"))
            .iter()
            .find(|f| get(f, "enabled").and_then(Value::as_bool) != Some(false))
            .ok_or_else(|| err(file, format!("route {name}: filter chain has no enabled filter")))?;
        let filter_name = get(filter, "name")
            .and_then(Value::as_str)
            .ok_or_else(|| err(file, format!("route {name}: filter has no name")))?;
        let config = match get(filter, "config") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.as_bytes().to_vec(),
            Some(other) => {
                let json: serde_json::Value = serde_norway::from_value(other.clone())
                    .map_err(|e| err(file, format!("route {name}: config: {e}")))?;
                json.to_string().into_bytes()
            }
        };
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
        for path in if paths.is_empty() { vec!["/".to_string()] } else { paths } {
            routes.push(Route {
                name: name.clone(),
                path_prefix: path,
                filter: filters_dir.join(format!("{filter_name}.wasm")),
                plugin_name: filter_name.to_string(),
                root_id: String::new(),
                vm_id: String::new(),
                config: config.clone(),
                fallback: fallback.clone(),
                fail_open: false,
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
}
