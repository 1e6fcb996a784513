//! The host-memory budget (`Limits::max_host_bytes`): a guest that loops one host function,
//! asking the host to keep 64 KiB more each call (`hog.wasm`, up to 1 GiB in all), is refused
//! once the budget is full, the way the profile's host refuses it, and the host's accounted bytes
//! and the process's memory stay bounded. One test per vector, each run in both profiles.

use host_sim::{Limits, LogLevel, Profile, Status, Vm, VmOptions};
use kafka_upstream_tests::{load, start_with, PROFILES};

/// A few MiB (the hog tries 1 GiB), and not a multiple of its chunk: a refused hog still has
/// room for the line that reports how its loop ended.
const BUDGET: usize = (4 << 20) + 4096;
/// What the hog asks the host to keep per call.
const CHUNK: usize = 64 * 1024;
const VM_ID: &str = "hog";

fn hog(profile: Profile, vector: &str) -> (Vm, u32) {
    let mut options = VmOptions::new(profile);
    options.vm_id = VM_ID.into();
    options.plugin_name = "hog".into();
    options.any_cluster = true;
    options.limits = Limits {
        max_host_bytes: BUDGET,
        ..Limits::default()
    };
    let mut vm = start_with(&load("hog"), options);
    let root = vm.create_root_context("", vector.as_bytes()).unwrap();
    assert!(root.configure_ok, "{profile}: hog accepts {vector}");
    let stream = vm.create_http_stream(root.id).unwrap();
    let headers = [(":method", "POST"), (":path", "/"), (":authority", "hog")];
    vm.send_request_headers(stream, &headers, false).unwrap();
    vm.send_request_body(stream, b"payload", true).unwrap();
    (vm, stream)
}

/// The hog's last line: how its loop ended.
fn outcome(vm: &Vm, vector: &str) -> Option<String> {
    vm.logs()
        .into_iter()
        .rev()
        .map(|l| l.message)
        .find(|m| m.starts_with(&format!("hog {vector}:")))
}

/// The process's peak resident memory (Linux `VmHWM`), in bytes.
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux)");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib * 1024
}

/// The hog was stopped by the budget, as `profile`'s host stops it: Envoy fails the VM with a
/// trap (it has no bound of its own); Kong returns the status or traps with the message in
/// `kong`. Returns how many calls the host accepted before it refused with a status.
fn assert_refused(profile: Profile, vm: &Vm, stream: u32, vector: &str, kong: Result<Status, &str>) -> Option<usize> {
    let used = vm.host_bytes();
    assert!(
        used <= BUDGET,
        "{profile} {vector}: {used} bytes accounted, over {BUDGET}"
    );
    match (profile, kong) {
        (Profile::Kong, Ok(status)) => {
            let line = outcome(vm, vector).unwrap_or_else(|| {
                panic!(
                    "{profile} {vector}: no outcome line; {:?} {:?}",
                    vm.failure(),
                    vm.logs()
                )
            });
            let prefix = format!("hog {vector}: status {} after ", status as u32);
            let calls: usize = line
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(" calls"))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{profile} {vector}: {line:?}"));
            // Refused when the budget was full: not before it held most of it.
            assert!(
                calls >= BUDGET / CHUNK / 2,
                "{profile} {vector}: refused after {calls} calls"
            );
            assert!(vm.failure().is_none(), "{profile} {vector}: {:?}", vm.failure());
            assert!(
                peak_rss() < 1 << 30,
                "{profile} {vector}: the process grew to {} bytes",
                peak_rss()
            );
            Some(calls)
        }
        (_, kong) => {
            let failure = vm
                .failure()
                .unwrap_or_else(|| panic!("{profile} {vector}: the VM did not fail"));
            let expected = match (profile, kong) {
                (Profile::Kong, Err(trap)) => trap,
                _ => "host memory budget exhausted",
            };
            assert!(failure.contains(expected), "{profile} {vector}: {failure}");
            assert_eq!(outcome(vm, vector), None, "{profile} {vector}: the callback trapped");
            // The stream failed closed, as a trap fails it on that host.
            let status = vm.local_response(stream).map(|r| r.status);
            let fail_closed = if profile == Profile::Envoy { 503 } else { 500 };
            assert_eq!(status, Some(fail_closed), "{profile} {vector}");
            assert!(
                peak_rss() < 1 << 30,
                "{profile} {vector}: the process grew to {} bytes",
                peak_rss()
            );
            None
        }
    }
}

/// What the refused guest still holds is most of the budget.
fn assert_held(profile: Profile, vm: &Vm, vector: &str) {
    let used = vm.host_bytes();
    assert!(
        used > BUDGET / 2,
        "{profile} {vector}: only {used} bytes held when refused"
    );
}

/// Once the stream is over and the logs are taken, the host holds nothing for the guest.
fn assert_released(profile: Profile, vm: &mut Vm, stream: u32, vector: &str) {
    vm.finish_stream(stream).unwrap();
    vm.take_logs();
    assert_eq!(
        vm.host_bytes(),
        0,
        "{profile} {vector}: bytes left after the stream ended"
    );
}

#[test]
fn logging_is_never_refused_and_the_oldest_lines_give_way() {
    for profile in PROFILES {
        let (mut vm, stream) = hog(profile, "log");
        assert_eq!(
            outcome(&vm, "log").as_deref(),
            Some("hog log: never refused after 16384 calls"),
            "{profile}"
        );
        assert!(vm.failure().is_none(), "{profile}: {:?}", vm.failure());
        let used = vm.host_bytes();
        assert!(used <= BUDGET && used > BUDGET - 2 * CHUNK, "{profile}: {used}");
        assert!(vm.logs_dropped() > 16_000, "{profile}: {} dropped", vm.logs_dropped());
        let kept = vm.logs();
        assert!(kept.len() <= BUDGET / CHUNK + 1, "{profile}: {} lines kept", kept.len());
        assert!(kept.iter().all(|l| l.level == LogLevel::Info), "{profile}");
        assert!(
            peak_rss() < 1 << 30,
            "{profile}: the process grew to {} bytes",
            peak_rss()
        );
        assert_released(profile, &mut vm, stream, "log");
    }
}

#[test]
fn request_body_growth_is_bounded() {
    for profile in PROFILES {
        let (mut vm, stream) = hog(profile, "body");
        if let Some(calls) = assert_refused(profile, &vm, stream, "body", Ok(Status::InternalFailure)) {
            // The filter continued: the body it grew went upstream, and the host let go of it.
            let forwarded = vm.forwarded_request_body(stream).map_or(0, <[u8]>::len);
            assert_eq!(forwarded, b"payload".len() + calls * CHUNK, "{profile}");
        }
        assert_released(profile, &mut vm, stream, "body");
    }
}

#[test]
fn header_map_growth_is_bounded() {
    for profile in PROFILES {
        let (mut vm, stream) = hog(profile, "header");
        if assert_refused(profile, &vm, stream, "header", Ok(Status::InternalFailure)).is_some() {
            assert_held(profile, &vm, "header");
        }
        assert_released(profile, &mut vm, stream, "header");
    }
}

#[test]
fn pending_http_calls_are_bounded() {
    for profile in PROFILES {
        let (mut vm, stream) = hog(profile, "http_call");
        if let Some(calls) = assert_refused(profile, &vm, stream, "http_call", Ok(Status::InternalFailure)) {
            assert_held(profile, &vm, "http_call");
            assert_eq!(
                vm.pending_http_call_tokens().len(),
                calls,
                "{profile}: every accepted call pending"
            );
        }
        assert_released(profile, &mut vm, stream, "http_call");
    }
}

#[test]
fn properties_are_bounded() {
    for profile in PROFILES {
        let (mut vm, stream) = hog(profile, "property");
        if assert_refused(profile, &vm, stream, "property", Ok(Status::InternalFailure)).is_some() {
            assert_held(profile, &vm, "property");
        }
        assert_released(profile, &mut vm, stream, "property");
    }
}

#[test]
fn shared_data_is_bounded() {
    for profile in PROFILES {
        let (mut vm, stream) = hog(profile, "shared_data");
        let trap = "failed setting value to shm (could not write to slab)";
        assert_refused(profile, &vm, stream, "shared_data", Err(trap));
        // Shared data outlives the stream: still charged to the VM that wrote it.
        vm.finish_stream(stream).unwrap();
        vm.take_logs();
        assert!(vm.host_bytes() > BUDGET / 2, "{profile}: {}", vm.host_bytes());
        assert!(vm.shared().shared_data(VM_ID, b"hog-0").is_some(), "{profile}");
    }
}

#[test]
fn shared_queues_are_bounded() {
    for profile in PROFILES {
        let (mut vm, stream) = hog(profile, "queue");
        assert_refused(profile, &vm, stream, "queue", Err("could not enqueue (queue is full)"));
        vm.finish_stream(stream).unwrap();
        vm.take_logs();
        let items = vm.shared().queue_items(VM_ID, "hog").expect("the hog's queue").len();
        assert!(items >= BUDGET / CHUNK / 2, "{profile}: {items} items");
        assert!(vm.host_bytes() > items * CHUNK, "{profile}: items still charged");
    }
}
