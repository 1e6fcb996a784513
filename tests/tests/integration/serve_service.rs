//! `host-sim serve` with Envoy `bootstrap_extensions` WasmServices, on the real abi-probe module:
//! the service's VM starts with its root context, its ticks fire while no request reaches the
//! listener, its HTTP callouts reach an upstream and their answers come back to the root, it gets
//! `proxy_on_done` at shutdown; `singleton: false` starts one VM per thread; a service that
//! rejects its configuration stops the gateway from starting. The guest's log lines are read from
//! the gateway's own log (a capturing tracing subscriber).

use crate::serve_common;
use host_sim::limits::EdgeLimits;
use host_sim::serve::config::{Deployment, Route, WasmService};
use host_sim::serve::{start, ServeError, ServeOptions};
use host_sim::Profile;
use kafka_upstream_tests::{engine, wasm_path};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Everything logged in this process since the first test here installed the capturing
/// subscriber (it is process-wide, so the gateways of other modules' tests log here too: the
/// assertions look for lines naming this module's own services).
pub(crate) fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .try_init();
        log
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Log lines that mention all of `needles`.
pub(crate) fn lines_with(needles: &[&str]) -> Vec<String> {
    let text = String::from_utf8_lossy(&log().lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(String::from)
        .collect()
}

/// An upstream that answers every request `200 pong` and keeps each request head.
async fn start_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    serve_common::recording_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\npong").await
}

fn deployment(upstream: SocketAddr, services: Vec<WasmService>) -> Deployment {
    let route = Route {
        plugin_name: "probe".into(),
        ..Route::new("probe", wasm_path("abi_probe"), Vec::new())
    };
    Deployment {
        upstreams: BTreeMap::from([("up".to_string(), upstream)]),
        services,
        ..Deployment::new(Profile::Envoy, vec![route])
    }
}

fn service(name: &str, config: &str, singleton: bool) -> WasmService {
    WasmService {
        name: name.into(),
        filter: wasm_path("abi_probe"),
        root_id: format!("{name}_root"),
        vm_id: format!("{name}_vm"),
        vm_configuration: Vec::new(),
        config: config.as_bytes().to_vec(),
        singleton,
    }
}

async fn gateway(deployment: Deployment) -> Result<host_sim::serve::RunningGateway, ServeError> {
    gateway_draining(deployment, Duration::from_secs(5)).await
}

/// A gateway whose shutdown waits at most `drain_time` for roots that owe `proxy_done`.
async fn gateway_draining(
    deployment: Deployment,
    drain_time: Duration,
) -> Result<host_sim::serve::RunningGateway, ServeError> {
    log();
    start(ServeOptions {
        deployment,
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: None,
        workers: 2,
        edge: EdgeLimits {
            drain_time,
            ..EdgeLimits::default()
        },
        reload_poll: None,
        engine: engine().clone(),
        access_log: false,
    })
    .await
}

/// Waits (at most 20 s) until `done` holds.
pub(crate) async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_singleton_service_ticks_and_calls_out_with_no_request_and_is_shut_down() {
    let (upstream, heads) = start_upstream().await;
    let label = "bootstrap_extensions[0] (ticker)";
    let gateway = gateway(deployment(
        upstream,
        vec![service("ticker", "tick=20 dispatch_on_tick=up", true)],
    ))
    .await
    .expect("gateway starts");
    let calls = heads.clone();
    until("three callouts from the service's ticks", || {
        calls.lock().unwrap().len() >= 3
    })
    .await;
    until("the callout answers reaching the service's root", || {
        lines_with(&[label, "probe:root_http_call_response", "pong"]).len() >= 2
    })
    .await;
    // Envoy's router adds its header to a callout's reply as to a proxied response (ENVOY-1.40,
    // e2e test_lifecycle_differential.py).
    assert!(
        lines_with(&[
            label,
            "probe:root_http_call_response",
            "[\"x-envoy-upstream-service-time\","
        ])
        .len()
            >= 2,
        "{:?}",
        lines_with(&[label, "probe:root_http_call_response"])
    );
    for head in heads.lock().unwrap().iter() {
        assert!(head.starts_with("GET /tick HTTP/1.1\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("x-envoy-internal: true"), "{head}");
    }
    assert_eq!(
        lines_with(&[label, "probe:vm_start"]).len(),
        1,
        "one VM for a singleton"
    );
    let configured = lines_with(&[label, "probe:configure"]);
    assert_eq!(configured.len(), 1, "{configured:?}");
    assert!(lines_with(&[label, "probe:tick"]).len() >= 3);
    // No request ever reached the listener: the route's VMs never ticked.
    assert!(lines_with(&["route=\"probe\"", "probe:tick"]).is_empty());
    gateway.shutdown().await;
    assert_eq!(
        lines_with(&[label, "probe:root_on_done"]).len(),
        1,
        "the root context is shut down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_is_not_a_singleton_gets_a_vm_per_thread() {
    let (upstream, _heads) = start_upstream().await;
    let label = "bootstrap_extensions[0] (per_thread)";
    let gateway = gateway(deployment(upstream, vec![service("per_thread", "tick=25", false)]))
        .await
        .expect("gateway starts");
    // Two workers and the main thread, as Envoy's thread-local slot.
    assert_eq!(lines_with(&[label, "probe:vm_start"]).len(), 3);
    until("every VM ticking", || {
        let copies: std::collections::BTreeSet<String> = lines_with(&[label, "probe:tick"])
            .iter()
            .filter_map(|l| {
                l.split("worker=")
                    .nth(1)
                    .map(|w| w.split(' ').next().unwrap_or("").to_string())
            })
            .collect();
        copies.len() == 3
    })
    .await;
    gateway.shutdown().await;
    assert_eq!(lines_with(&[label, "probe:root_on_done"]).len(), 3);
}

/// A service whose root never calls `proxy_done` is deleted at the end of the drain time, as a
/// route's filter is (`Vm::abandon_root`): the guest gets `proxy_on_delete` and can count what it
/// still holds before its VM stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_still_owing_proxy_done_at_the_drain_deadline_is_deleted() {
    let (upstream, _heads) = start_upstream().await;
    let label = "bootstrap_extensions[0] (stubborn)";
    let gateway = gateway_draining(
        deployment(
            upstream,
            vec![service("stubborn", "root_done=never report_delete", true)],
        ),
        Duration::from_millis(300),
    )
    .await
    .expect("gateway starts");
    until("the service's VM started", || {
        !lines_with(&[label, "probe:vm_start"]).is_empty()
    })
    .await;
    assert!(lines_with(&[label, "probe:root_deleted"]).is_empty());
    gateway.shutdown().await;
    assert_eq!(lines_with(&[label, "probe:root_on_done"]).len(), 1);
    until("the root deleted at the drain deadline", || {
        lines_with(&[label, "probe:root_deleted"]).len() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_rejects_its_configuration_stops_the_gateway_from_starting() {
    let (upstream, _heads) = start_upstream().await;
    let refused = gateway(deployment(
        upstream,
        vec![
            service("fine", "tick=1000", true),
            service("picky", "fail_configure", true),
        ],
    ))
    .await;
    match refused {
        Err(ServeError::FilterStart { route, reason }) => {
            assert_eq!(route, "bootstrap_extensions[1] (picky)");
            assert!(reason.contains("proxy_on_configure returned false"), "{reason}");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("the gateway started with a service that rejected its configuration"),
    }
    // The service that had started is shut down again.
    let label = "bootstrap_extensions[0] (fine)";
    until("the started service's shutdown", || {
        !lines_with(&[label, "probe:root_on_done"]).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_vm_configuration_reaches_proxy_on_vm_start() {
    let (upstream, _heads) = start_upstream().await;
    let mut deployment = deployment(upstream, Vec::new());
    deployment.routes[0].name = "probe_vm_config".into();
    deployment.routes[0].vm_configuration = b"vm-of-the-route".to_vec();
    let gateway = gateway(deployment).await.expect("gateway starts");
    // Each of the two workers starts a VM, and so does the main thread, as Envoy's does (the
    // start-up check does not log).
    until("the workers' and the main thread's VMs started", || {
        lines_with(&[
            "route=\"probe_vm_config\"",
            "probe:vm_start",
            r#""vm_config":"vm-of-the-route""#,
        ])
        .len()
            >= 3
    })
    .await;
    gateway.shutdown().await;
}
