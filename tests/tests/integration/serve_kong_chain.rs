//! `serve --kong` with filter chains (test-filters/chain-tag): a Kong route runs every enabled
//! filter of its service's chain and its own, in order, each step through every filter, each
//! filter handed the request and response as the filters before it left them; a local reply
//! stops the request steps and passes every filter's response callbacks; a paused filter holds
//! the chain. Every filter of one module runs on that module's one instance per worker, across
//! routes, with a root context of its own, and a trap replaces that instance under all of them
//! (ngx_wasm_module's default isolation `none`, which Kong keeps).

use crate::serve::send;
use crate::serve_common::recording_backend;
use host_sim::limits::EdgeLimits;
use host_sim::serve::config::{from_kong_file, Deployment};
use host_sim::serve::upstream::UpstreamResponse;
use host_sim::serve::{start, RunningGateway, ServeOptions};
use kafka_upstream_tests::{engine, wasm_path};

/// What `serve --kong` reads from `kong_yml` (written to a scratch directory; filters from the
/// wasm directory).
fn kong_deployment(kong_yml: &str) -> (Deployment, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kong.yml");
    std::fs::write(&file, kong_yml).unwrap();
    let filters_dir = wasm_path("chain_tag").parent().unwrap().to_path_buf();
    let deployment = from_kong_file(&file, &filters_dir).expect("the kong.yml reads");
    (deployment, dir)
}

/// Why serve refuses to start `deployment` (one worker); it must refuse.
async fn refusal(deployment: Deployment) -> String {
    let refused = start(ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        ..ServeOptions::new(deployment, engine().clone())
    })
    .await
    .err()
    .expect("serve refuses to start");
    refused.to_string()
}

/// Starts `serve --kong` on `kong_yml` ([`kong_deployment`]), one worker so every request meets
/// the same instances.
async fn kong_gateway(kong_yml: &str) -> (RunningGateway, tempfile::TempDir) {
    let (deployment, dir) = kong_deployment(kong_yml);
    let gateway = start(ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        edge: EdgeLimits::default(),
        ..ServeOptions::new(deployment, engine().clone())
    })
    .await
    .expect("gateway starts");
    (gateway, dir)
}

/// Two callout targets: one that answers at once (200, no body), and one that accepts and never
/// answers (its task holds the connections until aborted).
async fn callout_servers() -> (std::net::SocketAddr, std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let (quick, _) = recording_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    (quick, silent_addr, holder)
}

fn header<'a>(response: &'a UpstreamResponse, name: &str) -> Option<&'a str> {
    (response.headers.iter())
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A chain-tag filter entry (for a top-level route's filter chain) named `name` with more
/// configuration tokens.
fn tag(name: &str, more: &str) -> String {
    tag_at("          ", name, more)
}

/// A chain-tag filter entry at `indent` (the list item's) named `name` with more tokens.
fn tag_at(indent: &str, name: &str, more: &str) -> String {
    format!("{indent}- name: chain_tag\n{indent}  config: \"name={name} {more}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_runs_every_filter_in_order_each_handed_what_the_one_before_left() {
    let (backend, heads) =
        recording_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
    // The service's chain (s) runs before the route's (a, noop, a disabled one, b).
    let route_filters = "              ";
    let yaml = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: up\n    url: http://{backend}\n    filter_chains:\n      \
         - filters:\n{s}    routes:\n      - name: chained\n        paths: [/chain]\n        filter_chains:\n          \
         - filters:\n{a}{route_filters}- name: noop\n{off}{b}",
        s = tag("s", ""),
        a = tag_at(route_filters, "a", ""),
        off = tag_at(route_filters, "off", "").replace("\"\n", "\"\n                enabled: false\n"),
        b = tag_at(route_filters, "b", ""),
    );
    let (gateway, _dir) = kong_gateway(&yaml).await;
    let response = send(gateway.local_addr, "POST", "/chain", &[], b"payload").await;
    assert_eq!(response.status, 200, "{:?}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.body, b"ok");
    // Request headers, then bodies, in chain order, each filter seeing the ones before.
    assert_eq!(header(&response, "x-s-saw-request"), Some("-"));
    assert_eq!(header(&response, "x-a-saw-request"), Some("s"));
    assert_eq!(header(&response, "x-b-saw-request"), Some("s,a"));
    assert_eq!(header(&response, "x-s-saw-body"), Some("payload"));
    assert_eq!(header(&response, "x-a-saw-body"), Some("payload.s"));
    assert_eq!(header(&response, "x-b-saw-body"), Some("payload.s.a"));
    // The upstream got the request as the last filter left it.
    let head = heads.lock().unwrap().first().cloned().expect("the upstream was called");
    assert!(head.to_ascii_lowercase().contains("x-chain: s,a,b\r\n"), "{head}");
    // The response steps run in chain order too (not reversed), each seeing the one before.
    assert_eq!(header(&response, "x-response-chain"), Some("s,a,b"));
    assert_eq!(header(&response, "x-b-saw-status"), Some("200"));
    // One instance for the three chain-tag filters: three root contexts, each started
    // (on_vm_start) and configured on it, and one stream count for all of them.
    let roots: Vec<&str> = ["s", "a", "b"]
        .iter()
        .map(|n| header(&response, &format!("x-{n}-root")).unwrap())
        .collect();
    assert!(
        roots[0] != roots[1] && roots[1] != roots[2] && roots[0] != roots[2],
        "{roots:?}"
    );
    assert_eq!(header(&response, "x-b-vm-starts"), Some("3"));
    assert_eq!(header(&response, "x-b-configures"), Some("3"));
    let seen: Vec<&str> = ["s", "a", "b"]
        .iter()
        .map(|n| header(&response, &format!("x-{n}-seen")).unwrap())
        .collect();
    assert_eq!(
        seen,
        ["1", "2", "3"],
        "the filters' contexts are created in chain order on one instance"
    );
    // The streams end step by step: every filter's on_log (after its on_done), then every
    // filter's on_delete, in chain order.
    let next = send(gateway.local_addr, "GET", "/chain", &[], b"").await;
    assert_eq!(
        header(&next, "x-b-ends"),
        Some("log:s,log:a,log:b,delete:s,delete:a,delete:b")
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_reply_stops_the_request_steps_and_passes_every_filters_response_callbacks() {
    let route = |name: &str, path: &str, answer_at: &str| {
        format!(
            "  - name: {name}\n    paths: [{path}]\n    filter_chains:\n      - filters:\n{}{}{}",
            tag("a", ""),
            tag("b", &format!("answer={answer_at}")),
            tag("c", "")
        )
    };
    let yaml = format!(
        "_format_version: \"3.0\"\nroutes:\n{}{}",
        route("at-headers", "/headers", "request_headers"),
        route("at-body", "/body", "request_body")
    );
    let (gateway, _dir) = kong_gateway(&yaml).await;
    let at_headers = send(gateway.local_addr, "POST", "/headers", &[], b"x").await;
    assert_eq!(at_headers.status, 200);
    // ngx_wasm_module appends a line feed to a local reply's body.
    assert_eq!(at_headers.body, b"answered by b\n");
    assert_eq!(header(&at_headers, "x-answered-by"), Some("b"));
    assert_eq!(header(&at_headers, "x-b-saw-request"), Some("a"));
    // c never got its request headers, but its response callbacks run on b's reply, after a's
    // and b's.
    assert_eq!(header(&at_headers, "x-c-saw-request"), Some("never"));
    assert_eq!(header(&at_headers, "x-response-chain"), Some("a,b,c"));
    assert_eq!(header(&at_headers, "x-c-saw-status"), Some("200"));
    // No filter got to the body step.
    assert_eq!(header(&at_headers, "x-a-saw-body"), None);

    let at_body = send(gateway.local_addr, "POST", "/body", &[], b"x").await;
    assert_eq!(at_body.status, 200);
    assert_eq!(at_body.body, b"answered by b\n");
    // Every filter had its request headers step; the body step stopped at b.
    assert_eq!(header(&at_body, "x-c-saw-request"), Some("a,b"));
    assert_eq!(header(&at_body, "x-b-saw-body"), Some("x.a"));
    assert_eq!(header(&at_body, "x-c-saw-body"), None);
    assert_eq!(header(&at_body, "x-response-chain"), Some("a,b,c"));
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_filter_holds_the_chain_until_it_continues() {
    let (backend, heads) =
        recording_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
    let yaml = format!(
        "_format_version: \"3.0\"\nroutes:\n  - name: paused\n    paths: [/]\n    filter_chains:\n      - filters:\n{}{}",
        tag("a", &format!("pause={backend}")),
        tag("b", "")
    );
    let (gateway, _dir) = kong_gateway(&yaml).await;
    let response = send(gateway.local_addr, "GET", "/", &[], b"").await;
    // The route has no service: Kong's 404, through both filters' response callbacks.
    assert_eq!(response.status, 404, "{:?}", String::from_utf8_lossy(&response.body));
    // a called out and paused; b ran once the call's answer resumed a, and saw what a left.
    assert_eq!(heads.lock().unwrap().len(), 1, "a's callout");
    assert_eq!(header(&response, "x-b-saw-request"), Some("a"));
    assert_eq!(header(&response, "x-response-chain"), Some("a,b"));
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_of_one_module_share_its_instance_across_routes_and_a_trap_replaces_it_for_all() {
    let route = |name: &str, filter: &str| {
        format!(
            "  - name: {name}\n    paths: [/{name}]\n    filter_chains:\n      - filters:\n{}",
            tag(filter, "")
        )
    };
    let yaml = format!(
        "_format_version: \"3.0\"\nroutes:\n{}{}",
        route("one", "a"),
        route("two", "b")
    );
    let (gateway, _dir) = kong_gateway(&yaml).await;
    let addr = gateway.local_addr;
    let one = send(addr, "GET", "/one", &[], b"").await;
    let two = send(addr, "GET", "/two", &[], b"").await;
    assert_eq!((one.status, two.status), (404, 404));
    // One instance: the second route's filter counts the first route's stream too.
    assert_eq!(header(&one, "x-a-seen"), Some("1"));
    assert_eq!(header(&two, "x-b-seen"), Some("2"));
    // Each filter has its own root context, both started and configured on that instance.
    assert_ne!(header(&one, "x-a-root"), header(&two, "x-b-root"));
    assert_eq!(header(&two, "x-b-vm-starts"), Some("2"));
    assert_eq!(header(&two, "x-b-configures"), Some("2"));
    // a traps: its request gets the host's 500 ...
    let trapped = send(addr, "GET", "/one", &[("x-trap", "a")], b"").await;
    assert_eq!(trapped.status, 500);
    // ... and b, on the other route, runs on a fresh instance: no stream seen before, its root
    // context created and configured again but not started (no on_vm_start), with the same id;
    // a's root is not created on it until a runs again (ngx_wasm_module re-creates a filter's
    // root when that filter next runs).
    let after = send(addr, "GET", "/two", &[], b"").await;
    assert_eq!(after.status, 404);
    assert_eq!(header(&after, "x-b-seen"), Some("1"));
    assert_eq!(header(&after, "x-b-vm-starts"), Some("0"));
    assert_eq!(header(&after, "x-b-root"), header(&two, "x-b-root"));
    assert_eq!(header(&after, "x-b-configures"), Some("1"));
    let again = send(addr, "GET", "/one", &[], b"").await;
    assert_eq!(header(&again, "x-a-seen"), Some("2"));
    assert_eq!(header(&again, "x-a-root"), header(&one, "x-a-root"));
    assert_eq!(header(&again, "x-a-configures"), Some("2"), "a's root, configured now");
    assert_eq!(header(&again, "x-a-vm-starts"), Some("0"));
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_ends_the_chain_with_the_hosts_500_and_no_filter_is_called_again() {
    // a (chain-tag), then abi-probe, which traps in its request headers when asked.
    let yaml = format!(
        "_format_version: \"3.0\"\nroutes:\n  - name: pair\n    paths: [/]\n    filter_chains:\n      \
         - filters:\n{}          - name: abi_probe\n",
        tag("a", "")
    );
    let (gateway, _dir) = kong_gateway(&yaml).await;
    let addr = gateway.local_addr;
    let trapped = send(addr, "GET", "/", &[("x-trap-in", "request_headers")], b"").await;
    assert_eq!(trapped.status, 500);
    // The host's own answer: no filter's response callback ran on it.
    assert_eq!(header(&trapped, "x-response-chain"), None);
    let later = send(addr, "GET", "/", &[], b"").await;
    assert_eq!(later.status, 404, "{:?}", String::from_utf8_lossy(&later.body));
    assert_eq!(header(&later, "x-response-chain"), Some("a"));
    // a's instance did not trap, and its stream of the trapped request got no on_log.
    assert_eq!(header(&later, "x-a-seen"), Some("2"));
    assert_eq!(header(&later, "x-a-logs"), Some("0"));
    let third = send(addr, "GET", "/", &[], b"").await;
    assert_eq!(
        header(&third, "x-a-logs"),
        Some("1"),
        "the untrapped request's on_log ran"
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_whose_later_filter_rejects_its_configuration_does_not_start() {
    // One chain-tag instance for a, b and c: its first root is a (route fine), and the one that
    // fails is c, later on route picky, so the message must name c's route, not the VM's first.
    let yaml = format!(
        "_format_version: \"3.0\"\nroutes:\n  - name: fine\n    paths: [/fine]\n    filter_chains:\n      - filters:\n{}\
         \x20 - name: picky\n    paths: [/]\n    filter_chains:\n      - filters:\n{}{}",
        tag("a", ""),
        tag("b", ""),
        tag("c", "refuse=always")
    );
    let (deployment, _dir) = kong_deployment(&yaml);
    let message = refusal(deployment).await;
    assert!(
        message.contains("picky") && !message.contains("fine"),
        "the route of the filter that failed: {message}"
    );
    assert!(message.contains("proxy_on_configure returned false"), "{message}");
}

/// A route (to a recording upstream) whose chain is `filters(answering, silent)`, the
/// chain-tag entries for a callout target that answers at once and one that never does, gets
/// one request (`method`, `body`). Filter a's local reply must end it before b's silent call's
/// 5 s timeout, and the upstream must not be called; the response, for more checks.
async fn answered_by_a_before_bs_silent_call(
    filters: impl Fn(&str, std::net::SocketAddr, std::net::SocketAddr) -> String,
    method: &str,
    body: &[u8],
) -> UpstreamResponse {
    let (callout, silent_addr, holder) = callout_servers().await;
    let (backend, heads) =
        recording_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
    let yaml = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: up\n    url: http://{backend}\n    routes:\n      \
         - name: r\n        paths: [/]\n        filter_chains:\n          - filters:\n{}",
        filters("              ", callout, silent_addr)
    );
    let (gateway, _dir) = kong_gateway(&yaml).await;
    let started = std::time::Instant::now();
    let response = send(gateway.local_addr, method, "/", &[], body).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "the reply waited for b's call: {:?}",
        started.elapsed()
    );
    assert_eq!(response.status, 200, "{:?}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.body, b"answered by a\n");
    assert_eq!(header(&response, "x-answered-by"), Some("a"));
    assert!(heads.lock().unwrap().is_empty(), "the upstream was called");
    gateway.shutdown().await;
    holder.abort();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_reply_from_a_filter_the_chain_has_passed_ends_the_request_at_once() {
    // a calls out and continues; b calls the silent server and pauses. a's call is answered
    // while the chain waits at b: a's local reply ends the request then, through every filter's
    // response callbacks.
    let response = answered_by_a_before_bs_silent_call(
        |indent, answering, silent| {
            tag_at(indent, "a", &format!("call={answering} answer=call_response"))
                + &tag_at(indent, "b", &format!("pause={silent}"))
        },
        "GET",
        b"",
    )
    .await;
    assert_eq!(header(&response, "x-response-chain"), Some("a,b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_reply_from_a_later_filter_while_an_earlier_one_holds_the_body_ends_the_request() {
    // b pauses in its body step on the silent server; a, after it in the chain, had its headers
    // step already and called out then. a's call is answered while the chain waits at b's body
    // step: a's local reply ends the request.
    let response = answered_by_a_before_bs_silent_call(
        |indent, answering, silent| {
            tag_at(indent, "b", &format!("pause_body={silent}"))
                + &tag_at(indent, "a", &format!("call={answering} answer=call_response"))
        },
        "POST",
        b"payload",
    )
    .await;
    assert_eq!(header(&response, "x-b-saw-body"), Some("payload"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_that_refuses_its_configuration_after_a_trap_fails_only_its_own_requests() {
    // x and y share chain-tag's instance. After x traps, x's root refuses its configuration on
    // the fresh instance: that request fails, and the instance stays for y (ngx_wasm_module
    // leaves x's root unstarted, not the instance failed).
    let yaml = format!(
        "_format_version: \"3.0\"\nroutes:\n  - name: x\n    paths: [/x]\n    filter_chains:\n      - filters:\n{}\
         \x20 - name: y\n    paths: [/y]\n    filter_chains:\n      - filters:\n{}",
        tag("x", "refuse=when_recreated"),
        tag("y", "")
    );
    let (gateway, _dir) = kong_gateway(&yaml).await;
    let addr = gateway.local_addr;
    let trapped = send(addr, "GET", "/x", &[("x-trap", "x")], b"").await;
    assert_eq!(trapped.status, 500);
    let refused = send(addr, "GET", "/x", &[], b"").await;
    assert_eq!(refused.status, 500, "{:?}", String::from_utf8_lossy(&refused.body));
    let y = send(addr, "GET", "/y", &[], b"").await;
    assert_eq!(header(&y, "x-response-chain"), Some("y"));
    assert_eq!(
        header(&y, "x-y-vm-starts"),
        Some("0"),
        "a re-created root: no on_vm_start"
    );
    assert_eq!(
        header(&y, "x-y-configures"),
        Some("2"),
        "x's attempt and y's, on one instance"
    );
    assert_eq!(header(&y, "x-y-seen"), Some("1"));
    // x's next request creates its root context again, as ngx_wasm_module does; the Rust SDK
    // refuses a context id it already has with a panic, so that traps, and y meets a fresh
    // instance once more.
    let retried = send(addr, "GET", "/x", &[], b"").await;
    assert_eq!(retried.status, 500);
    let y_again = send(addr, "GET", "/y", &[], b"").await;
    assert_eq!(header(&y_again, "x-y-configures"), Some("1"), "a fresh instance again");
    assert_eq!(header(&y_again, "x-y-seen"), Some("1"));
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_later_in_a_chain_is_reloaded_when_its_file_changes() {
    // noop first, then chain-tag, both copied to a directory of the test's own.
    let dir = tempfile::tempdir().unwrap();
    for name in ["noop", "chain_tag"] {
        std::fs::copy(wasm_path(name), dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    let file = dir.path().join("kong.yml");
    let yaml = format!(
        "_format_version: \"3.0\"\nroutes:\n  - name: r\n    paths: [/]\n    filter_chains:\n      - filters:\n          \
         - name: noop\n{}",
        tag("a", "")
    );
    std::fs::write(&file, yaml).unwrap();
    let deployment = from_kong_file(&file, dir.path()).expect("the kong.yml reads");
    let gateway = start(ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        reload_poll: Some(std::time::Duration::from_millis(20)),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..ServeOptions::new(deployment, engine().clone())
    })
    .await
    .expect("gateway starts");
    let before = send(gateway.local_addr, "GET", "/", &[], b"").await;
    assert_eq!(header(&before, "x-response-chain"), Some("a"));
    // chain_tag.wasm now holds the noop module: the chain's second filter tags nothing.
    let replaced = dir.path().join("chain_tag.wasm.new");
    std::fs::copy(wasm_path("noop"), &replaced).unwrap();
    std::fs::rename(&replaced, dir.path().join("chain_tag.wasm")).unwrap();
    let started = std::time::Instant::now();
    loop {
        let after = send(gateway.local_addr, "GET", "/", &[], b"").await;
        if header(&after, "x-response-chain").is_none() {
            assert_eq!(after.status, 404);
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the chained module was not reloaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The admin status names the later filter's module as it is now.
    let admin = gateway.admin_addr.expect("admin listener");
    let status: serde_json::Value =
        serde_json::from_slice(&send(admin, "GET", "/status", &[], b"").await.body).unwrap();
    let noop_sha256 = engine().load_file(wasm_path("noop")).unwrap().sha256().to_string();
    let chained = &status["routes"][0]["chained"][0];
    assert!(
        chained["filter"]
            .as_str()
            .is_some_and(|f| f.ends_with("chain_tag.wasm")),
        "{status}"
    );
    assert_eq!(chained["sha256"].as_str(), Some(noop_sha256.as_str()), "{status}");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_under_a_profile_that_streams_the_body_is_refused() {
    // The library lets a deployment carry chains under any profile; serve runs them only as
    // ngx_wasm_module does, with the whole body read first.
    let yaml = format!(
        "_format_version: \"3.0\"\nroutes:\n  - name: pair\n    paths: [/]\n    filter_chains:\n      - filters:\n{}{}",
        tag("a", ""),
        tag("b", "")
    );
    let (mut deployment, _dir) = kong_deployment(&yaml);
    deployment.profile = host_sim::Profile::Envoy;
    let message = refusal(deployment).await;
    assert!(
        message.contains("pair") && message.contains("whole request body"),
        "{message}"
    );
}
