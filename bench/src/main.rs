//! `make bench`: what the filter costs per request and what host-sim adds, each figure beside a
//! baseline measured in the same run on the same machine. Prints a table and writes JSON.
//!
//! 1. Filter guest cost through host-sim (Envoy profile) for 0 B, 1 KiB JSON, 64 KiB JSON and
//!    1 MiB binary bodies with every `forward_*` flag on, against (a) the same lifecycle on a
//!    no-op filter and (b) the same message-building code compiled natively.
//! 2. host-sim's own per-request lifecycle cost (no-op filter), and warm start from the
//!    precompiled cache against a fresh compile.
//!
//! 3. `--shaping`: the native cost of each `message.mode` for the same request (see
//!    `shaping.rs`).
//!
//! Timing: each figure is the median of many samples, each a batch sized to run ~10 ms; the
//! batches of every case's filter, no-op and native requests are interleaved, so drift hits a
//! figure and its baselines alike. No figure is asserted anywhere (targets are printed beside
//! them).

mod measure;
mod shaping;

use anyhow::{bail, Context, Result};
use host_sim::{Engine, EngineConfig, HttpCallReply, Profile, Vm, VmOptions};
use kafka_upstream::message::{build_message, RequestView};
use kafka_upstream::rest;
use measure::measure;
use serde::Serialize;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

const ACK: &[u8] = br#"{"offsets":[{"partition":0,"offset":1,"error_code":null,"error":null}],"key_schema_id":null,"value_schema_id":null}"#;

fn config_json() -> String {
    serde_json::json!({
        "topic": "bench",
        "rest_proxy": {"upstream": "kafka_rest"},
        "forward_method": true, "forward_uri": true, "forward_headers": true, "forward_body": true,
        "max_body_size": 4 << 20,
    })
    .to_string()
}

struct Case {
    name: &'static str,
    method: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

fn json_body(size: usize) -> Vec<u8> {
    let mut out = String::from("{\"items\":[");
    let mut i = 0;
    while out.len() + 64 < size {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item-{i}\",\"price\":{}.5,\"tags\":[\"a\",\"b/c\"]}}",
            i * 3
        ));
        i += 1;
    }
    out.push_str("]}");
    while out.len() < size {
        out.insert(out.len() - 2, ' ');
    }
    out.into_bytes()
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "0 B GET",
            method: "GET",
            content_type: None,
            body: Vec::new(),
        },
        Case {
            name: "1 KiB JSON",
            method: "POST",
            content_type: Some("application/json"),
            body: json_body(1024),
        },
        Case {
            name: "64 KiB JSON",
            method: "POST",
            content_type: Some("application/json"),
            body: json_body(64 << 10),
        },
        Case {
            name: "1 MiB binary",
            method: "POST",
            content_type: Some("application/octet-stream"),
            body: (0..(1u32 << 20))
                .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
                .collect(),
        },
    ]
}

fn headers(case: &Case) -> Vec<(String, String)> {
    let mut h = vec![
        (":method".to_string(), case.method.to_string()),
        (
            ":path".to_string(),
            "/orders/checkout?source=web&tag=a&tag=b".to_string(),
        ),
        (":authority".to_string(), "gateway.example.com".to_string()),
        (":scheme".to_string(), "http".to_string()),
        ("user-agent".to_string(), "bench/1.0".to_string()),
        ("accept".to_string(), "*/*".to_string()),
        (
            "x-request-id".to_string(),
            "0d6f7a8e-2f7c-4d21-9a55-1c0e3b9f4a11".to_string(),
        ),
        ("x-forwarded-for".to_string(), "10.1.2.3".to_string()),
    ];
    if let Some(ct) = case.content_type {
        h.push(("content-type".into(), ct.into()));
        h.push(("content-length".into(), case.body.len().to_string()));
    }
    h
}

/// One full request through a VM: headers, body, the REST proxy callout answered with an ack,
/// the client answer checked, the stream finished.
fn filter_request(vm: &mut Vm, root: u32, headers: &[(String, String)], body: &[u8]) -> Result<()> {
    let stream = vm.create_http_stream(root)?;
    vm.send_request_headers(stream, headers, body.is_empty())?;
    if !body.is_empty() {
        vm.send_request_body(stream, body, true)?;
    }
    let Some(token) = vm.pending_http_call_tokens().first().copied() else {
        bail!("the filter made no callout: {:?}", vm.local_response(stream));
    };
    vm.respond_http_call(
        token,
        HttpCallReply::Response {
            status: 200,
            headers: Vec::new(),
            body: ACK.to_vec(),
            trailers: Vec::new(),
        },
    )?;
    match vm.local_response(stream) {
        Some(r) if r.status == 200 => {}
        other => bail!("expected 200, got {other:?}"),
    }
    vm.finish_stream(stream)?;
    Ok(())
}

/// The filter's own work on one request, compiled natively: the message, the REST request,
/// the classification of the REST proxy's acknowledgement.
fn native_request(parsed: &kafka_upstream::config::Config, case: &Case, headers: &[(String, Vec<u8>)]) -> Result<()> {
    let view = RequestView {
        method: case.method,
        path: &headers[1].1,
        authority: Some(&headers[2].1),
        headers,
        body: &case.body,
    };
    let message = build_message(&parsed.message, &view);
    let request = rest::build_request(&parsed.rest_proxy, &parsed.topic, None, b"", parsed.partition, &message);
    std::hint::black_box(request);
    let reply = rest::ReplyView {
        status: Some(b"200"),
        dispatch_status: None,
        body: ACK,
    };
    if rest::classify(&parsed.rest_proxy.api, &reply) != rest::Outcome::Acknowledged {
        bail!("the native build did not read the acknowledgement as one");
    }
    Ok(())
}

fn header_bytes(headers: &[(String, String)]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect()
}

/// The same lifecycle on a filter that does nothing.
fn noop_request(vm: &mut Vm, root: u32, headers: &[(String, String)], body: &[u8]) -> Result<()> {
    let stream = vm.create_http_stream(root)?;
    vm.send_request_headers(stream, headers, body.is_empty())?;
    if !body.is_empty() {
        vm.send_request_body(stream, body, true)?;
    }
    vm.finish_stream(stream)?;
    Ok(())
}

fn start_vm(module: &host_sim::Module, config: &[u8]) -> Result<(Vm, u32)> {
    let mut options = VmOptions::new(Profile::Envoy);
    options.clusters = vec!["kafka_rest".into()];
    options.log_level = host_sim::LogLevel::Warn;
    let mut vm = Vm::start(module, options)?;
    let root = vm.create_root_context("", config)?;
    if !root.configure_ok {
        bail!("configuration rejected: {:?}", vm.logs());
    }
    Ok((vm, root.id))
}

#[derive(Serialize)]
struct GuestRow {
    case: String,
    body_bytes: usize,
    filter_request_us: f64,
    noop_request_us: f64,
    filter_cost_us: f64,
    native_baseline_us: f64,
    ratio_wasm_native: f64,
    mb_per_s: f64,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    guest: Vec<GuestRow>,
    /// Context create, request headers, a 1 KiB body, done, delete, on the no-op filter.
    host_overhead_noop_request_us: f64,
    /// The same without a body.
    host_overhead_noop_bodiless_us: f64,
    warm_start_cached_ms: f64,
    fresh_compile_ms: f64,
    ratio_fresh_warm: f64,
    vm_start_and_configure_ms: f64,
}

fn wasm(name: &str) -> Result<PathBuf> {
    let dir = std::env::var_os("WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/wasm32-wasip1/wasm"));
    let path = dir.join(format!("{name}.wasm"));
    if !path.is_file() {
        bail!("{} is missing: run `make wasm` first", path.display());
    }
    Ok(path)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--shaping") {
        return shaping::run();
    }
    let out = args
        .windows(2)
        .find(|w| w[0] == "--out")
        .map(|w| PathBuf::from(&w[1]))
        .unwrap_or_else(|| PathBuf::from("target/bench/results.json"));
    let filter_bytes = std::fs::read(wasm("kafka_upstream")?)?;
    let noop_bytes = std::fs::read(wasm("noop")?)?;
    let config = config_json().into_bytes();
    if let Some(w) = args.windows(3).find(|w| w[0] == "--loop") {
        let native = args.iter().any(|a| a == "--native");
        let noop = args.iter().any(|a| a == "--noop").then_some(noop_bytes.as_slice());
        let count = match args.windows(2).find(|w| w[0] == "--count") {
            Some(w) => Some(
                w[1].parse::<u64>()
                    .with_context(|| format!("--count: {:?} is not a number", w[1]))?,
            ),
            None => None,
        };
        return profile_loop(&filter_bytes, &config, &w[1], &w[2], native, noop, count);
    }

    // Warm start: a fresh compile against a load from the precompiled cache.
    let cache = std::env::temp_dir().join(format!("host-sim-bench-cache-{}", std::process::id()));
    let cached_engine = Engine::new(EngineConfig {
        cache_dir: Some(cache.clone()),
        fuel: false,
    })?;
    let uncached_engine = Engine::new(EngineConfig {
        cache_dir: None,
        fuel: false,
    })?;
    let fresh = measure::time_each(3, || Ok(uncached_engine.load_bytes(&filter_bytes).map(drop)?))?;
    cached_engine.load_bytes(&filter_bytes)?;
    let warm = measure::time_each(20, || {
        let m = cached_engine.load_bytes(&filter_bytes)?;
        if !m.loaded_from_cache() {
            bail!("the warm load compiled instead of reading the cache");
        }
        Ok(())
    })?;
    let _ = std::fs::remove_dir_all(&cache);

    let filter = cached_engine.load_bytes(&filter_bytes)?;
    let noop = cached_engine.load_bytes(&noop_bytes)?;
    let vm_start = measure::time_each(30, || start_vm(&filter, &config).map(drop))?;

    let parsed = kafka_upstream::config::parse(&config).map_err(|e| anyhow::anyhow!(e.message().to_string()))?;
    let (fvm, froot) = start_vm(&filter, &config)?;
    let (nvm, nroot) = start_vm(&noop, b"")?;
    // Every case's filter, no-op and native requests measured together, batches interleaved.
    let (fvm, nvm) = (RefCell::new(fvm), RefCell::new(nvm));
    let all = cases();
    let inputs: Vec<_> = all
        .iter()
        .map(|case| {
            let headers = headers(case);
            let header_bytes = header_bytes(&headers);
            (case, headers, header_bytes)
        })
        .collect();
    let mut ops: Vec<measure::Op<'_>> = Vec::new();
    for (case, headers, header_bytes) in &inputs {
        let (fvm, nvm, parsed) = (&fvm, &nvm, &parsed);
        ops.push(Box::new(move || {
            filter_request(&mut fvm.borrow_mut(), froot, headers, &case.body)
        }));
        ops.push(Box::new(move || {
            noop_request(&mut nvm.borrow_mut(), nroot, headers, &case.body)
        }));
        ops.push(Box::new(move || native_request(parsed, case, header_bytes)));
    }
    let samples = measure::measure_interleaved(&mut ops)?;
    drop(ops);
    let mut guest = Vec::new();
    for (case, s) in all.iter().zip(samples.chunks(3)) {
        let (filter_sample, noop_sample, native) = (&s[0], &s[1], &s[2]);
        let cost = (filter_sample.median_us() - noop_sample.median_us()).max(0.0);
        guest.push(GuestRow {
            case: case.name.to_string(),
            body_bytes: case.body.len(),
            filter_request_us: filter_sample.median_us(),
            noop_request_us: noop_sample.median_us(),
            filter_cost_us: cost,
            native_baseline_us: native.median_us(),
            ratio_wasm_native: if native.median_us() > 0.0 {
                cost / native.median_us()
            } else {
                0.0
            },
            mb_per_s: case.body.len() as f64 / filter_sample.median_us(),
        });
    }
    let mut nvm = nvm.into_inner();
    // Part 2's lifecycle: context create, headers, a 1 KiB body, done, delete; and without a body.
    let bare = headers(&all[0]);
    let with_body = headers(&all[1]);
    let overhead = measure(|| noop_request(&mut nvm, nroot, &with_body, &all[1].body))?;
    let bodiless = measure(|| noop_request(&mut nvm, nroot, &bare, b""))?;

    let report = Report {
        machine: machine(),
        guest,
        host_overhead_noop_request_us: overhead.median_us(),
        host_overhead_noop_bodiless_us: bodiless.median_us(),
        warm_start_cached_ms: warm.median_ms(),
        fresh_compile_ms: fresh.median_ms(),
        ratio_fresh_warm: fresh.median_ms() / warm.median_ms(),
        vm_start_and_configure_ms: vm_start.median_ms(),
    };
    print_table(&report);
    write_json(&out, &report)?;
    println!("\nJSON: {}", out.display());
    Ok(())
}

/// `bench --loop CASE SECONDS [--native] [--noop] [--count N]`: one case's filter request through
/// host-sim (with `--native`: its native baseline; with `--noop`: the same lifecycle on the no-op
/// filter, host-sim's own cost) and nothing else, repeated for that long (with `--count`: exactly
/// N requests, so two counts' instruction totals differ by exactly the requests), for a profiler:
/// `HOST_SIM_PERFMAP=1 perf record target/release/bench --loop 1kib 5` (the variable makes
/// wasmtime name the guest's functions), or `valgrind --tool=callgrind` for instruction counts.
/// CASE is the start of a case name without spaces, lowercased (`0b`, `1kib`, `64kib`, `1mib`).
fn profile_loop(
    filter_bytes: &[u8],
    config: &[u8],
    case: &str,
    seconds: &str,
    native: bool,
    noop: Option<&[u8]>,
    count: Option<u64>,
) -> Result<()> {
    let seconds: f64 = seconds
        .parse()
        .with_context(|| format!("--loop: {seconds:?} is not a number of seconds"))?;
    let Some(case) = cases()
        .into_iter()
        .find(|c| c.name.replace(' ', "").to_ascii_lowercase().starts_with(case))
    else {
        bail!("--loop: no case {case:?} (0b, 1kib, 64kib, 1mib)");
    };
    let headers = headers(&case);
    let mut one: Box<dyn FnMut() -> Result<()>> = if native {
        let parsed = kafka_upstream::config::parse(config).map_err(|e| anyhow::anyhow!(e.message().to_string()))?;
        let header_bytes = header_bytes(&headers);
        Box::new(move || native_request(&parsed, &case, &header_bytes))
    } else if let Some(noop_bytes) = noop {
        let engine = Engine::new(EngineConfig {
            cache_dir: None,
            fuel: false,
        })?;
        let module = engine.load_bytes(noop_bytes)?;
        let (mut vm, root) = start_vm(&module, b"")?;
        Box::new(move || noop_request(&mut vm, root, &headers, &case.body))
    } else {
        let engine = Engine::new(EngineConfig {
            cache_dir: None,
            fuel: false,
        })?;
        let module = engine.load_bytes(filter_bytes)?;
        let (mut vm, root) = start_vm(&module, config)?;
        Box::new(move || filter_request(&mut vm, root, &headers, &case.body))
    };
    if let Some(count) = count {
        for _ in 0..count {
            one()?;
        }
        println!("{count} requests");
        return Ok(());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(seconds);
    let mut requests = 0u64;
    while std::time::Instant::now() < deadline {
        for _ in 0..100 {
            one()?;
        }
        requests += 100;
    }
    println!("{requests} requests in {seconds} s");
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    format!(
        "{cpu}, {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    )
}

fn write_json(path: &Path, report: &Report) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(report)?).with_context(|| format!("writing {}", path.display()))
}

fn print_table(r: &Report) {
    println!("machine: {}\n", r.machine);
    println!("1. Filter guest cost per request (host-sim, envoy profile, all forward_* flags on)");
    println!(
        "{:<14} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "body", "filter µs", "no-op µs", "filter-noop", "native µs", "wasm/nat", "MB/s"
    );
    for g in &r.guest {
        println!(
            "{:<14} {:>12.2} {:>12.2} {:>12.2} {:>12.2} {:>10.2} {:>10.1}",
            g.case,
            g.filter_request_us,
            g.noop_request_us,
            g.filter_cost_us,
            g.native_baseline_us,
            g.ratio_wasm_native,
            g.mb_per_s
        );
    }
    println!("   targets: filter cost <= 5 µs for 1 KiB; >= 300 MB/s on 1 MiB\n");
    println!("2. host-sim");
    println!(
        "   per-request lifecycle, no-op filter (create, headers, 1 KiB body, done, delete): {:.2} µs; without the body: {:.2} µs",
        r.host_overhead_noop_request_us, r.host_overhead_noop_bodiless_us
    );
    println!("   warm start from the precompiled cache: {:.2} ms   fresh compile: {:.1} ms   ratio {:.0}x   (target warm <= 5 ms)", r.warm_start_cached_ms, r.fresh_compile_ms, r.ratio_fresh_warm);
    println!(
        "   VM start + root context + configure: {:.2} ms",
        r.vm_start_and_configure_ms
    );
}
