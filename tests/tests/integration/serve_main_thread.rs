//! `host-sim serve`'s main-thread root contexts, on the real abi-probe module: in the Envoy
//! profile each route's filter also gets a root context on a thread that takes no requests, in a
//! VM of its own (Envoy's main thread, `HostBehaviour::runs_main_thread_root`), which starts,
//! ticks and calls out as the workers' roots do, is replaced on a hot reload and shut down at
//! the end; the Kong profile has no such root. kafka_upstream's asynchronous producer in the
//! main thread's root holds no record (no request reaches it) and sends nothing, and every
//! record the workers acknowledged reaches the REST proxy once. The routes of one Envoy listener
//! share its filter's VM and root context on each thread. The guest's log lines are read from the gateway's
//! own log ([`serve_service::log`]): host-sim names the thread `worker=0`, `worker=1`, …, and
//! `worker=main`.

use crate::serve::send;
use crate::serve_common::{self, in_memory_rest_proxy};
use crate::serve_service::{lines_with, log, until};
use host_sim::limits::EdgeLimits;
use host_sim::serve::config::{Deployment, Route};
use host_sim::serve::{start, RunningGateway, ServeOptions};
use host_sim::Profile;
use kafka_upstream_tests::{engine, wasm_path, with_custom_section};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WORKERS: usize = 2;

/// An upstream that answers every request `200 pong` and keeps each request head.
async fn start_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    serve_common::recording_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\npong").await
}

/// A gateway of [`WORKERS`] workers with one route, `name`, running `filter` with `config`;
/// `upstreams` are its clusters (Envoy: called by name).
async fn gateway(
    profile: Profile,
    name: &str,
    filter: &Path,
    config: &str,
    upstreams: &[(&str, SocketAddr)],
    drain_time: Duration,
    reload_poll: Option<Duration>,
) -> RunningGateway {
    log();
    let route = Route {
        plugin_name: name.into(),
        ..Route::new(name, filter.to_path_buf(), config.as_bytes().to_vec())
    };
    start(ServeOptions {
        workers: WORKERS,
        edge: EdgeLimits {
            drain_time,
            ..EdgeLimits::default()
        },
        reload_poll,
        ..ServeOptions::new(
            Deployment {
                upstreams: upstreams.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
                ..Deployment::new(profile, vec![route])
            },
            engine().clone(),
        )
    })
    .await
    .expect("gateway starts")
}

/// The route's probe lines of `event`.
fn events(route: &str, event: &str) -> Vec<String> {
    lines_with(&[&format!("route=\"{route}\""), &format!("probe:{event} ")])
}

/// The thread (`worker=…`) that logged `line`.
fn thread_of(line: &str) -> Option<&str> {
    let rest = line.split(" worker=").nth(1)?;
    rest.split_whitespace().next()
}

/// The threads that logged the route's `event`.
fn threads(route: &str, event: &str) -> BTreeSet<String> {
    events(route, event)
        .iter()
        .filter_map(|line| thread_of(line).map(String::from))
        .collect()
}

/// How many of the route's `event` lines `thread` logged.
fn count_on(route: &str, event: &str, thread: &str) -> usize {
    events(route, event)
        .iter()
        .filter(|line| thread_of(line) == Some(thread))
        .count()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_runs_each_filters_root_on_the_main_thread_too() {
    let route = "main_thread_ticker";
    let (upstream, heads) = start_upstream().await;
    let gateway = gateway(
        Profile::Envoy,
        route,
        &wasm_path("abi_probe"),
        "tick=20 dispatch_on_tick=up",
        &[("up", upstream)],
        Duration::from_secs(5),
        None,
    )
    .await;
    let every_thread = set(&["0", "1", "main"]);
    // Each root (two workers' and the main thread's) ticks, calls out, and gets the answer.
    until("callout answers on every thread", || {
        every_thread.iter().all(|t| {
            events(route, "root_http_call_response")
                .iter()
                .any(|l| thread_of(l) == Some(t.as_str()) && l.contains("pong"))
        })
    })
    .await;
    assert_eq!(threads(route, "tick"), every_thread);
    for head in heads.lock().unwrap().iter() {
        assert!(head.starts_with("GET /tick HTTP/1.1\r\n"), "{head}");
    }
    // One VM per thread, each started and configured once (the start-up check does not log).
    assert_eq!(events(route, "vm_start").len(), WORKERS + 1);
    assert_eq!(threads(route, "vm_start"), every_thread);
    assert_eq!(threads(route, "configure"), every_thread);
    gateway.shutdown().await;
    // Every root, the main thread's included, is shut down.
    assert_eq!(events(route, "root_on_done").len(), WORKERS + 1);
    assert_eq!(threads(route, "root_on_done"), every_thread);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_has_no_main_thread_root() {
    let route = "kong_workers_only";
    let (upstream, _heads) = start_upstream().await;
    let gateway = gateway(
        Profile::Kong,
        route,
        &wasm_path("abi_probe"),
        "tick=20",
        &[("up", upstream)],
        Duration::from_secs(5),
        None,
    )
    .await;
    until("several ticks on each worker", || {
        (0..WORKERS).all(|w| count_on(route, "tick", &w.to_string()) >= 3)
    })
    .await;
    gateway.shutdown().await;
    assert_eq!(threads(route, "vm_start"), set(&["0", "1"]));
    assert_eq!(threads(route, "tick"), set(&["0", "1"]));
}

/// The main thread's root owes `proxy_done` like a worker's: at the end of the drain time it is
/// deleted as theirs are, so the filter can account for what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_main_thread_root_still_owing_proxy_done_is_deleted_at_the_drain_deadline() {
    let route = "main_thread_stubborn";
    let (upstream, _heads) = start_upstream().await;
    let gateway = gateway(
        Profile::Envoy,
        route,
        &wasm_path("abi_probe"),
        "root_done=never report_delete",
        &[("up", upstream)],
        Duration::from_millis(300),
        None,
    )
    .await;
    until("every VM started", || events(route, "configure").len() == WORKERS + 1).await;
    gateway.shutdown().await;
    assert_eq!(threads(route, "root_on_done"), set(&["0", "1", "main"]));
    assert_eq!(threads(route, "root_deleted"), set(&["0", "1", "main"]));
}

/// A changed module replaces the main thread's VM as it replaces the workers': the new one is
/// started and configured, the old root gets `proxy_on_done` and goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_reload_replaces_the_main_thread_root() {
    let route = "main_thread_reloaded";
    let (upstream, _heads) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let filter = dir.path().join("abi_probe.wasm");
    let original = std::fs::read(wasm_path("abi_probe")).unwrap();
    std::fs::write(&filter, &original).unwrap();
    let gateway = gateway(
        Profile::Envoy,
        route,
        &filter,
        "tick=20 report_delete",
        &[("up", upstream)],
        Duration::from_secs(5),
        Some(Duration::from_millis(50)),
    )
    .await;
    until("the main thread's root ticking", || {
        count_on(route, "tick", "main") >= 1
    })
    .await;
    let staging = dir.path().join("abi_probe.wasm.new");
    std::fs::write(&staging, with_custom_section(&original, "v2")).unwrap();
    std::fs::rename(&staging, &filter).unwrap();
    until("the old main-thread root shut down and a new one started", || {
        count_on(route, "root_on_done", "main") == 1 && count_on(route, "vm_start", "main") == 2
    })
    .await;
    until("the old main-thread root deleted", || {
        count_on(route, "root_deleted", "main") == 1
    })
    .await;
    let ticks = count_on(route, "tick", "main");
    until("the new main-thread root ticking", || {
        count_on(route, "tick", "main") > ticks
    })
    .await;
    gateway.shutdown().await;
    assert_eq!(count_on(route, "root_on_done", "main"), 2);
}

/// kafka_upstream in asynchronous mode: the main thread's root gets no request, so its producer
/// holds nothing; at shutdown it has nothing to send and is done at once, while the workers send
/// what they acknowledged. Every record arrives once and nothing is dropped. (That the main
/// thread's root runs at all is what the probe tests above show; kafka_upstream logs nothing
/// at start-up.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_upstreams_main_thread_root_holds_and_sends_nothing() {
    let route = "main_thread_kafka";
    let (proxy, rest) = in_memory_rest_proxy().await;
    // Batches would wait a minute: only the shutdown sends them.
    let config = serde_json::json!({
        "topic": "main-thread-orders",
        "rest_proxy": {"upstream": "kafka_rest"},
        "forward_body": true,
        "producer_async": true,
        "producer_async_flush_timeout": 60_000,
    });
    let gateway = gateway(
        Profile::Envoy,
        route,
        &wasm_path("kafka_upstream"),
        &config.to_string(),
        &[("kafka_rest", rest)],
        Duration::from_secs(10),
        None,
    )
    .await;
    const REQUESTS: usize = 6;
    for i in 0..REQUESTS {
        let answer = send(
            gateway.local_addr,
            "POST",
            "/orders",
            &[("content-type", "text/plain")],
            format!("{i:04}").as_bytes(),
        )
        .await;
        assert_eq!(
            answer.status,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    gateway.shutdown().await;
    let records = proxy
        .read_records("main-thread-orders", None, 0, 1000)
        .await
        .unwrap_or_default();
    let mut bodies: Vec<String> = records
        .iter()
        .map(|r| {
            let message: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap_or_default()).unwrap();
            message["body"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    bodies.sort();
    let expected: Vec<String> = (0..REQUESTS).map(|i| format!("{i:04}")).collect();
    assert_eq!(bodies, expected, "every acknowledged record, once");
    let route_field = format!("route=\"{route}\"");
    let main_lines = lines_with(&[&route_field, "worker=main"]);
    assert!(
        !main_lines
            .iter()
            .any(|l| l.contains("shutting down") || l.contains("dropped")),
        "the main thread's root held nothing: {main_lines:#?}"
    );
    assert!(lines_with(&[&route_field, "dropped"]).is_empty());
}

/// Each VM fails alone: a request that traps fails its worker's VM (its ticks stop, later
/// requests there get 503, as the trapping one does) while the main thread's root, in a VM of its own, keeps ticking, as
/// each of Envoy's thread-local VMs keeps its own failure state (proxy-wasm-cpp-host
/// `WasmBase::failed_`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_on_a_worker_leaves_the_main_thread_root_ticking() {
    let route = "main_thread_outlives_a_trap";
    let (upstream, _heads) = start_upstream().await;
    let gateway = gateway(
        Profile::Envoy,
        route,
        &wasm_path("abi_probe"),
        "tick=20",
        &[("up", upstream)],
        Duration::from_secs(5),
        None,
    )
    .await;
    until("the main thread's root ticking", || {
        count_on(route, "tick", "main") >= 1
    })
    .await;
    let answer = send(
        gateway.local_addr,
        "GET",
        "/probe",
        &[("x-trap-in", "request_headers")],
        b"",
    )
    .await;
    // Envoy's answer to a stream whose filter failed.
    assert_eq!(answer.status, 503, "{}", String::from_utf8_lossy(&answer.body));
    let ticks = count_on(route, "tick", "main");
    until("the main thread's root ticking after the trap", || {
        count_on(route, "tick", "main") >= ticks + 3
    })
    .await;
    gateway.shutdown().await;
}

/// An Envoy bootstrap whose connection manager runs abi-probe (plugin `name`) on two routes:
/// `/shared/upstream` to the cluster `up` at `upstream`, and `/` answered by a direct_response
/// `203 direct`; `filter`: the abi-probe module, in a scratch directory the bootstrap is written
/// to. Returns the deployment as `serve --envoy` reads it.
fn two_routes_of_one_listener(name: &str, filter: &Path, upstream: SocketAddr) -> Deployment {
    let yaml = format!(
        r#"static_resources:
  listeners:
    - name: main
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: 18000 }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - name: {name}_upstream
                          match: {{ prefix: /shared/upstream }}
                          route: {{ cluster: up }}
                        - name: {name}_direct
                          match: {{ prefix: / }}
                          direct_response: {{ status: 203, body: {{ inline_string: direct }} }}
                http_filters:
                  - name: envoy.filters.http.wasm
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: {name}
                        vm_config:
                          vm_id: {name}
                          code: {{ local: {{ filename: {filter} }} }}
                        configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: "tick=50" }}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: up
      type: STATIC
      load_assignment:
        cluster_name: up
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: 127.0.0.1, port_value: {port} }}
"#,
        filter = filter.display(),
        port = upstream.port(),
    );
    // Beside the module, which is the test's own scratch directory.
    let file = filter.with_file_name("envoy.yaml");
    std::fs::write(&file, yaml).unwrap();
    host_sim::serve::config::from_envoy_file(&file, None).expect("the bootstrap reads")
}

/// GETs `path` from the gateway: (status, body).
async fn get(gateway: &RunningGateway, path: &str) -> (u16, String) {
    let answer = send(gateway.local_addr, "GET", path, &[], b"").await;
    (answer.status, String::from_utf8_lossy(&answer.body).into_owned())
}

/// The stream context ids `thread` logged `probe:request_headers` with (the probe numbers its
/// contexts per VM).
fn stream_contexts_on(label: &str, thread: &str) -> Vec<u64> {
    events(label, "request_headers")
        .iter()
        .filter(|line| thread_of(line) == Some(thread))
        .filter_map(|line| {
            let after = line.split("probe:request_headers {\"context\":").nth(1)?;
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// The routes of one Envoy connection manager share its one wasm filter: one VM and one root
/// context per thread (the workers' and the main thread's), started and configured once and
/// ticking once, which the requests of both routes reach, while each route keeps its own
/// fallback (cluster, direct_response); a hot reload replaces that one VM once per thread.
/// Envoy builds the HCM's http_filters once, and the wasm
/// filter's config holds one thread-local plugin (envoy
/// source/extensions/filters/http/wasm/wasm_filter.cc, `getOrCreateThreadLocalPlugin`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_of_one_envoy_listener_share_one_vm_per_thread() {
    let name = "shared_vm_probe";
    let (upstream, heads) = start_upstream().await;
    log();
    let dir = tempfile::tempdir().unwrap();
    let filter = dir.path().join("abi_probe.wasm");
    let original = std::fs::read(wasm_path("abi_probe")).unwrap();
    std::fs::write(&filter, &original).unwrap();
    let deployment = two_routes_of_one_listener(name, &filter, upstream);
    let routes: Vec<&str> = deployment.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(routes, [format!("{name}_upstream"), format!("{name}_direct")]);
    let gateway = start(ServeOptions {
        workers: WORKERS,
        reload_poll: Some(Duration::from_millis(50)),
        ..ServeOptions::new(deployment, engine().clone())
    })
    .await
    .expect("gateway starts");
    // The VM's log lines name the routes that share it.
    let label = format!("{name}_upstream,{name}_direct");
    let every_thread = set(&["0", "1", "main"]);
    until("a tick on every thread", || threads(&label, "tick") == every_thread).await;
    each_route_on_each_worker(&gateway).await;
    assert_eq!(
        heads.lock().unwrap().len(),
        2,
        "only the upstream route's requests go upstream"
    );
    // One VM per thread, not one per route and thread: each started and configured once.
    assert_eq!(events(&label, "vm_start").len(), WORKERS + 1);
    assert_eq!(threads(&label, "vm_start"), every_thread);
    assert_eq!(events(&label, "configure").len(), WORKERS + 1);
    // Both routes' requests on a worker are streams of the one VM: its context ids differ (two
    // VMs would each number their first stream alike).
    for worker in ["0", "1"] {
        let contexts = stream_contexts_on(&label, worker);
        assert_eq!(contexts.len(), 2, "worker {worker}: {contexts:?}");
        assert_ne!(contexts[0], contexts[1], "worker {worker}: {contexts:?}");
    }
    // A new module replaces the one VM on each thread once, not once per route.
    let staging = dir.path().join("abi_probe.wasm.new");
    std::fs::write(&staging, with_custom_section(&original, "v2")).unwrap();
    std::fs::rename(&staging, &filter).unwrap();
    until("the old roots shut down and new ones started on every thread", || {
        every_thread
            .iter()
            .all(|t| count_on(&label, "vm_start", t) == 2 && count_on(&label, "root_on_done", t) == 1)
    })
    .await;
    each_route_on_each_worker(&gateway).await;
    assert_eq!(heads.lock().unwrap().len(), 4);
    assert_eq!(events(&label, "vm_start").len(), 2 * (WORKERS + 1));
    gateway.shutdown().await;
    // Each thread's root is shut down, after the one the reload replaced there.
    assert_eq!(events(&label, "root_on_done").len(), 2 * (WORKERS + 1));
    assert_eq!(threads(&label, "root_on_done"), every_thread);
}

/// Two requests to each route of [`two_routes_of_one_listener`], in an order that gives each of
/// the [`WORKERS`] workers (round-robin) one of each; each answered by its route's fallback.
async fn each_route_on_each_worker(gateway: &RunningGateway) {
    for path in ["/shared/upstream/1", "/shared/upstream/2", "/other/1", "/other/2"] {
        let answer = get(gateway, path).await;
        if path.starts_with("/shared/upstream") {
            assert_eq!(answer, (200, "pong".to_string()), "{path}");
        } else {
            assert_eq!(answer, (203, "direct".to_string()), "{path}");
        }
    }
}
