//! `host-sim serve`: the filter as a real HTTP gateway, optionally with the embedded Kafka REST
//! proxy as its upstream. Flags are validated into a [`Deployment`] before anything starts.

use super::{read_input, Failure};
use anyhow::anyhow;
use clap::Args;
use host_sim::limits::EdgeLimits;
use host_sim::serve::config::{self, Deployment, Fallback, Route};
use host_sim::serve::{start, ServeOptions};
use host_sim::{Engine, EngineConfig, Profile};
use rest_proxy::{Flavor, RestProxy, RestProxyOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `host-sim serve`.
#[derive(Debug, Args)]
#[command(
    after_help = "Give the filter one of three ways: --filter (with --config), --envoy envoy.yaml, \
                        or --kong kong.yml (with --filters-dir). The module file is watched: a new \
                        build is picked up without a restart."
)]
pub struct ServeArgs {
    /// Which host to behave like (with --filter; --envoy and --kong imply it).
    #[arg(long, value_enum, value_name = "PROFILE", default_value = "envoy")]
    profile: Profile,
    /// The filter module.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["envoy", "kong"])]
    filter: Option<PathBuf>,
    /// Plugin configuration for --filter, passed verbatim to `proxy_on_configure`.
    #[arg(long, value_name = "FILE", requires = "filter")]
    config: Option<PathBuf>,
    /// Root id of the plugin's root context (with --filter).
    #[arg(long, value_name = "ID", default_value = "", requires = "filter")]
    root_id: String,
    /// Read a listener's wasm filter and routes, the clusters (STATIC, STRICT_DNS, LOGICAL_DNS)
    /// and the bootstrap_extensions WasmServices from an Envoy bootstrap.
    #[arg(long, value_name = "FILE", conflicts_with = "kong")]
    envoy: Option<PathBuf>,
    /// Which listener of the --envoy bootstrap to serve, by name [default: the first].
    #[arg(long, value_name = "NAME", requires = "envoy")]
    listener: Option<String>,
    /// Read routes and filter chains from a Kong declarative config.
    #[arg(long, value_name = "FILE")]
    kong: Option<PathBuf>,
    /// A kong.conf to take `nginx_http_client_body_buffer_size` from (with --kong).
    #[arg(long, value_name = "FILE", requires = "kong")]
    kong_conf: Option<PathBuf>,
    /// nginx's client_body_buffer_size for the Kong profile (e.g. 8k, 64k): a larger request
    /// body is buffered to a file the filter cannot read, as in Kong [default: from --kong-conf,
    /// else 8k, Kong's default].
    #[arg(long, value_name = "SIZE", value_parser = config::parse_nginx_size)]
    client_body_buffer_size: Option<usize>,
    /// Where --kong finds `<filter name>.wasm` (Kong's `wasm_filters_path`).
    #[arg(long, value_name = "DIR", default_value = "target/wasm32-wasip1/wasm")]
    filters_dir: PathBuf,
    /// Listen address [default: the Envoy listener's, else 127.0.0.1:8000].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// An upstream (Envoy cluster) the filter may call: NAME=HOST:PORT. Repeatable; overrides a
    /// cluster of the same name from --envoy.
    #[arg(long = "upstream", value_name = "NAME=HOST:PORT", value_parser = config::parse_upstream)]
    upstreams: Vec<(String, SocketAddr)>,
    /// Where requests the filter lets through go (with --filter): an upstream name or HOST:PORT.
    /// Without it they get 404.
    #[arg(long, value_name = "UPSTREAM", requires = "filter")]
    default_upstream: Option<String>,
    /// Start the embedded Kafka REST proxy on this address and make it the cluster named by
    /// --rest-proxy-cluster.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8082")]
    embedded_rest_proxy: Option<SocketAddr>,
    /// The cluster name the embedded REST proxy answers to (Envoy profile).
    #[arg(long, value_name = "NAME", default_value = "kafka_rest")]
    rest_proxy_cluster: String,
    /// Which REST proxy the embedded one behaves like (`host-sim rest-proxy --flavor`).
    #[arg(long, value_name = "FLAVOR", value_enum, default_value_t = Flavor::Confluent)]
    embedded_rest_proxy_flavor: Flavor,
    /// Admin endpoint address (`GET /status`: module sha256 and counters; `GET /stats`: metrics).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Worker threads, each with its own VM (the Envoy profile adds a main thread that runs
    /// each filter's root context too, as Envoy does, and takes no requests).
    #[arg(long, value_name = "N", default_value_t = 2)]
    workers: usize,
    /// Largest request body the gateway accepts (bytes); larger ones get 413 before the filter.
    #[arg(long, value_name = "BYTES", default_value_t = EdgeLimits::default().max_request_bytes)]
    max_body_bytes: usize,
    /// A request head (request line and headers) must arrive within this time of its first
    /// byte, or the connection is closed (nginx client_header_timeout). Times: 60, 60s, 500ms, 2m.
    #[arg(long, value_name = "TIME", default_value = "60s", value_parser = config::parse_nginx_time)]
    header_read_timeout: Duration,
    /// A connection with no request in progress is closed after this (nginx keepalive_timeout).
    #[arg(long, value_name = "TIME", default_value = "75s", value_parser = config::parse_nginx_time)]
    idle_timeout: Duration,
    /// A whole request (head and body) must arrive within this time of its first byte, or the
    /// client gets 408 (Envoy request_timeout).
    #[arg(long, value_name = "TIME", default_value = "60s", value_parser = config::parse_nginx_time)]
    request_timeout: Duration,
    /// A request the filter holds without answering (a callout or gRPC call without a timeout,
    /// an open gRPC stream) gets 408 "stream timeout" after this, and the filter's stream ends
    /// (Envoy stream_idle_timeout, 5 min by default).
    #[arg(long, value_name = "TIME", default_value = "300s", value_parser = config::parse_nginx_time)]
    stream_idle_timeout: Duration,
    /// On SIGTERM or SIGINT: how long requests in flight, then the filters (Envoy profile:
    /// proxy_on_done until proxy_done), get to finish before serve exits.
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = config::parse_nginx_time)]
    drain_time: Duration,
    /// Connections open at once; at the cap the listener waits for one to close.
    #[arg(long, value_name = "N", default_value_t = EdgeLimits::default().max_connections)]
    max_connections: usize,
    /// Do not watch the module file for changes.
    #[arg(long)]
    no_reload: bool,
    /// Embedded REST proxy settings.
    #[command(flatten)]
    rest: RestProxyOptions,
}

/// A multi-threaded tokio runtime for the serving commands.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(anyhow!("cannot start the async runtime: {e}")))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn deployment(args: &ServeArgs) -> Result<Deployment, Failure> {
    let mut deployment = if let Some(file) = &args.envoy {
        config::from_envoy_file(file, args.listener.as_deref()).map_err(Failure::usage)?
    } else if let Some(file) = &args.kong {
        config::from_kong_file(file, &args.filters_dir).map_err(Failure::usage)?
    } else if let Some(filter) = &args.filter {
        let config = match &args.config {
            Some(path) => read_input(path)?,
            None => Vec::new(),
        };
        let route = Route {
            root_id: args.root_id.clone(),
            fallback: args
                .default_upstream
                .clone()
                .map_or(Fallback::NotFound, Fallback::Upstream),
            ..Route::new("default", filter.clone(), config)
        };
        Deployment::new(args.profile, vec![route])
    } else {
        return Err(Failure::usage(anyhow!(
            "give the filter with --filter, --envoy or --kong (see --help)"
        )));
    };
    // Said whatever the log level, like the listening line.
    for note in &deployment.notes {
        eprintln!("host-sim serve: {note}");
    }
    for (name, addr) in &args.upstreams {
        deployment.upstreams.insert(name.clone(), *addr);
    }
    if let Some(file) = &args.kong_conf {
        if let Some(size) = config::kong_conf_client_body_buffer(file).map_err(Failure::usage)? {
            deployment.client_body_buffer_bytes = size;
        }
    }
    if let Some(size) = args.client_body_buffer_size {
        deployment.client_body_buffer_bytes = size;
    }
    for route in &deployment.routes {
        if !route.filter.is_file() {
            // kong.yml names a filter by file name only, as Kong does (wasm_filters_path).
            let hint = if args.kong.is_some() {
                " (kong.yml's filters are looked up in --filters-dir, relative to the current directory)"
            } else {
                ""
            };
            return Err(Failure::usage(anyhow!(
                "route {}: filter {} does not exist{hint}",
                route.name,
                route.filter.display()
            )));
        }
    }
    for (index, service) in deployment.services.iter().enumerate() {
        if !service.filter.is_file() {
            return Err(Failure::usage(anyhow!(
                "bootstrap_extensions[{index}] ({}): module {} does not exist",
                service.name,
                service.filter.display()
            )));
        }
    }
    Ok(deployment)
}

/// The topic a configuration names, for the hint line `make run` prints.
fn configured_topic(config: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(config).ok()?;
    value.get("topic")?.as_str().map(String::from)
}

/// Runs the gateway until SIGINT/SIGTERM.
pub fn run(args: ServeArgs) -> Result<(), Failure> {
    let mut deployment = deployment(&args)?;
    let listen = args
        .listen
        .or(deployment.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8000)));
    let rest_config = match args.embedded_rest_proxy {
        Some(addr) => {
            deployment
                .upstreams
                .entry(args.rest_proxy_cluster.clone())
                .or_insert(addr);
            Some(
                args.rest
                    .into_config(addr, args.embedded_rest_proxy_flavor)
                    .map_err(Failure::usage)?,
            )
        }
        None => None,
    };
    let engine = Engine::new(EngineConfig::default()).map_err(Failure::runtime)?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        let rest_addr = match rest_config {
            Some(config) => {
                let listener = tokio::net::TcpListener::bind(config.listen)
                    .await
                    .map_err(|e| Failure::runtime(anyhow!("cannot listen on {}: {e}", config.listen)))?;
                let addr = listener.local_addr().map_err(Failure::runtime)?;
                let proxy = RestProxy::new(config).map_err(Failure::usage)?;
                proxy.check_backend().await.map_err(Failure::runtime)?;
                tokio::spawn(proxy.serve(listener, std::future::pending()));
                Some(addr)
            }
            None => None,
        };
        let profile = deployment.profile;
        let first_route = deployment.routes[0].clone();
        let gateway = start(ServeOptions {
            deployment,
            listen,
            admin_listen: args.admin,
            workers: args.workers,
            edge: EdgeLimits {
                max_request_bytes: args.max_body_bytes,
                header_read_timeout: args.header_read_timeout,
                idle_timeout: args.idle_timeout,
                request_timeout: args.request_timeout,
                stream_idle_timeout: args.stream_idle_timeout,
                max_connections: args.max_connections,
                drain_time: args.drain_time,
                ..EdgeLimits::default()
            },
            reload_poll: (!args.no_reload).then_some(Duration::from_millis(500)),
            engine,
            access_log: true,
        })
        .await
        .map_err(|e| match e {
            // A module that does not load is the input's fault; an address in use is not, and
            // FilterStart (the filter refused its configuration) is a runtime failure too: exit 1.
            host_sim::serve::ServeError::Module { .. } => Failure::usage(e),
            other => Failure::runtime(other),
        })?;
        let addr = gateway.local_addr;
        eprintln!("host-sim serve: {profile} profile, listening on http://{addr}");
        if let Some(admin) = gateway.admin_addr {
            eprintln!("host-sim serve: admin on http://{admin}/status");
        }
        if let Some(rest) = rest_addr {
            eprintln!("host-sim serve: embedded Kafka REST proxy on http://{rest}");
            let topic = configured_topic(&first_route.config).unwrap_or_else(|| "<topic>".into());
            eprintln!();
            eprintln!("  produce:   curl -s -X POST 'http://{addr}{}/orders?id=42' -H 'content-type: application/json' -d '{{\"order\":42}}'", first_route.path_prefix.trim_end_matches('/'));
            eprintln!("  read back: curl -s 'http://{rest}/_sim/topics/{topic}/records'");
            eprintln!();
        }
        let stopper = gateway.stopper();
        let drain_time = args.drain_time;
        tokio::spawn(async move {
            shutdown_signal().await;
            eprintln!("host-sim serve: shutting down (drain time {:?})", drain_time);
            let _ = stopper.send(true);
        });
        gateway.wait().await;
        Ok(())
    })
}
