//! chaos: a hostile proxy-wasm guest for fuzzing host-sim (issue #13, item 3).
//!
//! Configured with `"<seed> <calls> [<skip>]"` (ASCII; the VM configuration for
//! `proxy_on_vm_start` of the first root context, the plugin configuration from
//! `proxy_on_configure` on; `<skip>` a bit mask of host functions, by index in the spec's list,
//! not to call), every callback it exports
//! (root: `proxy_on_vm_start`, `proxy_on_configure`, `proxy_on_tick`, `proxy_on_queue_ready`,
//! `proxy_on_http_call_response`, the gRPC and foreign-function callbacks; HTTP: request and
//! response headers, body and trailers, `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`)
//! makes `<calls>` calls to host functions chosen by a splitmix64 generator seeded from `<seed>`,
//! out of all 39 proxy-wasm ABI 0.2.1 host functions. Their arguments are chosen the same way:
//! pointers in range, null, just below the end of linear memory, past it; lengths 0, small,
//! huge, `u32::MAX`; valid and invalid map, buffer, stream and metric types, log levels and
//! status codes; serialized maps that are valid, truncated, with lying counts or sizes, or
//! without their NUL terminators. Even `proxy_on_memory_allocate` sometimes answers with a
//! null, an out-of-range or an end-of-memory pointer, and callbacks sometimes return an action
//! that does not exist.
//!
//! The generator lives in the VM (one stream for every context), so a host that drives the
//! module the same way sees the same calls: a seed reproduces a run. `"<seed> 0"` makes every
//! callback a no-op that continues, which is how the fuzz test checks a VM still works after
//! the chaos (tests/tests/integration/fuzz.rs).
//!
//! The module touches no heap: every byte it hands the host lives in fixed scratch areas, and
//! pointers the host writes through are never aimed at the module's own state, so the host's
//! behaviour, not the guest corrupting itself, decides what happens.

// The declarations of abi-probe (all 39 host functions as plain integers); this module uses
// them directly, not its helpers.
#[allow(dead_code)]
#[path = "../../abi-probe/src/raw.rs"]
mod raw;

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// A fixed byte area the host may read from and write into.
struct Scratch<const N: usize>(UnsafeCell<[u8; N]>);

// Single-threaded wasm: the cell is only reached through raw pointers handed to the host.
unsafe impl<const N: usize> Sync for Scratch<N> {}

impl<const N: usize> Scratch<N> {
    const fn new() -> Self {
        Scratch(UnsafeCell::new([0; N]))
    }

    fn base(&self) -> u32 {
        self.0.get() as u32
    }
}

const ARENA_SIZE: u32 = 64 * 1024;
const OUT_SIZE: u32 = 1024;
const MAP_SIZE: u32 = 4096;
const ALLOC_SIZE: u32 = 256 * 1024;

/// Bytes the host reads: left as zeros plus whatever the host wrote into it earlier.
static ARENA: Scratch<{ ARENA_SIZE as usize }> = Scratch::new();
/// Where the host writes return values (ids, sizes, pointers).
static OUT: Scratch<{ OUT_SIZE as usize }> = Scratch::new();
/// Serialized maps under construction.
static MAPS: Scratch<{ MAP_SIZE as usize }> = Scratch::new();
/// What `proxy_on_memory_allocate` hands out, bump-allocated and reused from the start.
static ALLOC: Scratch<{ ALLOC_SIZE as usize }> = Scratch::new();

static RNG: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU32 = AtomicU32::new(0);
/// Host functions not to call, one bit per index in the spec's list.
static SKIP: AtomicU64 = AtomicU64::new(0);
static ALLOC_NEXT: AtomicU32 = AtomicU32::new(0);
/// While false, `proxy_on_memory_allocate` always answers sensibly (reading the configuration).
static HOSTILE_ALLOC: AtomicBool = AtomicBool::new(false);
/// The last context ids the host created, for `proxy_set_effective_context` and `proxy_done`.
static LAST_ROOT: AtomicU32 = AtomicU32::new(0);
static LAST_STREAM: AtomicU32 = AtomicU32::new(0);
/// Root contexts created so far.
static ROOTS: AtomicU32 = AtomicU32::new(0);

/// splitmix64 (Steele, Lea, Flood 2014): one 64-bit state, good enough spread for choosing.
fn next() -> u64 {
    let mut z = RNG
        .fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn below(n: u32) -> u32 {
    (next() % n as u64) as u32
}

fn one_of<T: Copy>(choices: &[T]) -> T {
    choices[below(choices.len() as u32) as usize]
}

/// Bytes of linear memory (saturating at 4 GiB - 1, the most a u32 pointer can say).
fn memory_end() -> u32 {
    let bytes = core::arch::wasm32::memory_size(0) as u64 * 65536;
    bytes.min(u32::MAX as u64) as u32
}

/// A pointer the host reads from.
fn read_ptr() -> u32 {
    let end = memory_end();
    match below(8) {
        0 => 0,
        1..=3 => ARENA.base() + below(ARENA_SIZE),
        4 => end.saturating_sub(below(16)),
        5 => end.saturating_add(below(1 << 16)),
        6 => u32::MAX - below(8),
        _ => next() as u32,
    }
}

/// A pointer the host writes through: never at the module's own state (see the module docs).
fn write_ptr() -> u32 {
    let end = memory_end();
    match below(8) {
        0 => 0,
        1..=4 => OUT.base() + below(OUT_SIZE - 8),
        5 => end.saturating_sub(below(8)),
        6 => end.saturating_add(below(1 << 16)),
        _ => u32::MAX - below(8),
    }
}

fn length() -> u32 {
    match below(8) {
        0 => 0,
        1 | 2 => 1 + below(32),
        3 => below(4096),
        4 => 1 << (16 + below(13)),
        5 => u32::MAX,
        6 => u32::MAX - below(16),
        _ => next() as u32,
    }
}

/// A `(pointer, length)` the host reads: half the time a coherent slice of the arena.
fn bytes() -> (u32, u32) {
    if below(2) == 0 {
        let offset = below(ARENA_SIZE);
        (ARENA.base() + offset, below(ARENA_SIZE - offset + 1).min(below(512)))
    } else {
        (read_ptr(), length())
    }
}

const WORDS: &[&str] = &[
    ":method",
    "GET",
    ":path",
    "/",
    ":authority",
    "chaos",
    "127.0.0.1:1",
    "content-type",
    "x-chaos",
    "q",
    "k",
    "",
    "request\0path",
    "plugin_root_id",
    "response\0code",
    "\u{0}",
    "é",
];

/// Text the host reads (names, keys, upstreams, property paths): a known word, or [`bytes`].
fn text() -> (u32, u32) {
    if below(3) == 0 {
        bytes()
    } else {
        let w = one_of(WORDS);
        (w.as_ptr() as u32, w.len() as u32)
    }
}

/// Writes `bytes` at `MAPS[at..]`, as far as they fit; returns the next offset.
fn put(at: u32, bytes: &[u8]) -> u32 {
    let room = MAP_SIZE.saturating_sub(at) as usize;
    let n = bytes.len().min(room);
    // SAFETY: `at + n <= MAP_SIZE`, inside the static scratch area.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), (MAPS.base() + at) as *mut u8, n) };
    at + n as u32
}

/// A serialized map (spec "Serialization"): valid, truncated, lying about its count or sizes,
/// missing terminators, or just wild bytes.
fn map() -> (u32, u32) {
    if below(5) == 0 {
        return bytes();
    }
    let mut storage = [("", ""); 5];
    let count = if below(3) == 0 {
        storage[..3].copy_from_slice(&[(":method", "GET"), (":path", "/"), (":authority", "chaos")]);
        3
    } else {
        let count = below(6) as usize;
        for pair in &mut storage[..count] {
            *pair = (one_of(WORDS), one_of(WORDS));
        }
        count
    };
    let pairs = &storage[..count];
    let mut at = put(0, &(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        at = put(at, &(k.len() as u32).to_le_bytes());
        at = put(at, &(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        at = put(at, k.as_bytes());
        at = put(at, &[0]);
        at = put(at, v.as_bytes());
        at = put(at, &[0]);
    }
    let mut len = at;
    match below(8) {
        0 => len = below(len + 1),
        1 => {
            put(0, &one_of(&[pairs.len() as u32 + 1, 1 << 20, u32::MAX]).to_le_bytes());
        }
        2 if !pairs.is_empty() => {
            put(
                4 + 8 * below(pairs.len() as u32),
                &one_of(&[1u32 << 16, u32::MAX]).to_le_bytes(),
            );
        }
        3 if len > 0 => {
            put(len - 1, b"x");
        }
        _ => {}
    }
    (MAPS.base(), len)
}

fn map_type() -> u32 {
    one_of(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 100, u32::MAX])
}

fn buffer_type() -> u32 {
    one_of(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 100, u32::MAX])
}

fn small_id() -> u32 {
    match below(4) {
        0 => below(8),
        1 => LAST_ROOT.load(Relaxed),
        2 => LAST_STREAM.load(Relaxed),
        _ => one_of(&[u32::MAX, next() as u32]),
    }
}

/// An upstream for the callouts: half the time one the test's hosts know.
fn upstream() -> (u32, u32) {
    if below(2) == 0 {
        let u = one_of(&["chaos", "127.0.0.1:1"]);
        (u.as_ptr() as u32, u.len() as u32)
    } else {
        text()
    }
}

/// One call of host function `function` (its index in the spec's list, host-sim's
/// `HostFunction::ALL`) with chaotic arguments. The status is not looked at: the point is
/// what the host does, and a trap ends the callback (allowed: the guest is hostile).
fn call_one(function: u32) {
    use raw::*;
    let r = |p: u32| p as *const u8;
    let w8 = |p: u32| p as *mut *mut u8;
    let wz = |p: u32| p as *mut usize;
    let w32 = |p: u32| p as *mut u32;
    let w64 = |p: u32| p as *mut u64;
    let z = |n: u32| n as usize;
    // SAFETY: every host function takes plain integers; the host bounds-checks what it reads
    // and writes, which is exactly what is under test. Pointers it may write through are never
    // this module's own state (see `write_ptr`).
    unsafe {
        match function {
            2 => {
                let (p, n) = text();
                proxy_log(one_of(&[0, 1, 2, 3, 4, 5, 6, u32::MAX]), r(p), z(n));
            }
            3 => {
                proxy_get_log_level(w32(write_ptr()));
            }
            4 => {
                proxy_get_current_time_nanoseconds(w64(write_ptr()));
            }
            5 => {
                proxy_set_tick_period_milliseconds(one_of(&[0, 1, 5, 20, 1000, u32::MAX]));
            }
            7 => {
                proxy_get_buffer_bytes(
                    buffer_type(),
                    z(length()),
                    z(length()),
                    w8(write_ptr()),
                    wz(write_ptr()),
                );
            }
            8 => {
                proxy_get_buffer_status(buffer_type(), wz(write_ptr()), w32(write_ptr()));
            }
            6 => {
                let (p, n) = bytes();
                proxy_set_buffer_bytes(buffer_type(), z(length()), z(length()), r(p), z(n));
            }
            9 => {
                proxy_get_header_map_size(map_type(), wz(write_ptr()));
            }
            10 => {
                proxy_get_header_map_pairs(map_type(), w8(write_ptr()), wz(write_ptr()));
            }
            11 => {
                let (p, n) = map();
                proxy_set_header_map_pairs(map_type(), r(p), z(n));
            }
            12 => {
                let (k, kn) = text();
                proxy_get_header_map_value(map_type(), r(k), z(kn), w8(write_ptr()), wz(write_ptr()));
            }
            13 => {
                let ((k, kn), (v, vn)) = (text(), text());
                proxy_add_header_map_value(map_type(), r(k), z(kn), r(v), z(vn));
            }
            14 => {
                let ((k, kn), (v, vn)) = (text(), text());
                proxy_replace_header_map_value(map_type(), r(k), z(kn), r(v), z(vn));
            }
            15 => {
                let (k, kn) = text();
                proxy_remove_header_map_value(map_type(), r(k), z(kn));
            }
            16 => {
                proxy_continue_stream(one_of(&[0, 1, 2, 3, 4, u32::MAX]));
            }
            17 => {
                proxy_close_stream(one_of(&[0, 1, 2, 3, 4, u32::MAX]));
            }
            18 => {
                proxy_get_status(w32(write_ptr()), w8(write_ptr()), wz(write_ptr()));
            }
            19 => {
                let ((d, dn), (b, bn), (h, hn)) = (text(), bytes(), map());
                let code = one_of(&[0, 99, 200, 400, 503, 1000, u32::MAX, next() as u32]);
                let grpc = one_of(&[-1, 0, 14, i32::MIN, next() as i32]);
                proxy_send_local_response(code, r(d), z(dn), r(b), z(bn), r(h), z(hn), grpc);
            }
            20 => {
                let ((u, un), (h, hn), (b, bn)) = (upstream(), map(), bytes());
                let (t, tn) = if below(2) == 0 { (0, 0) } else { map() };
                let timeout = one_of(&[0, 1, 100, 10_000, u32::MAX]);
                proxy_http_call(
                    r(u),
                    z(un),
                    r(h),
                    z(hn),
                    r(b),
                    z(bn),
                    r(t),
                    z(tn),
                    timeout,
                    w32(write_ptr()),
                );
            }
            21 => {
                let ((u, un), (s, sn), (m, mn), (md, mdn), (b, bn)) = (upstream(), text(), text(), map(), bytes());
                let timeout = one_of(&[0, 1, 100, u32::MAX]);
                proxy_grpc_call(
                    r(u),
                    z(un),
                    r(s),
                    z(sn),
                    r(m),
                    z(mn),
                    r(md),
                    z(mdn),
                    r(b),
                    z(bn),
                    timeout,
                    w32(write_ptr()),
                );
            }
            22 => {
                let ((u, un), (s, sn), (m, mn), (md, mdn)) = (upstream(), text(), text(), map());
                proxy_grpc_stream(r(u), z(un), r(s), z(sn), r(m), z(mn), r(md), z(mdn), w32(write_ptr()));
            }
            23 => {
                let (b, bn) = bytes();
                proxy_grpc_send(small_id(), r(b), z(bn), one_of(&[0, 1, 2, u32::MAX]));
            }
            24 => {
                proxy_grpc_cancel(small_id());
            }
            25 => {
                proxy_grpc_close(small_id());
            }
            26 => {
                let ((k, kn), (v, vn)) = (text(), bytes());
                proxy_set_shared_data(r(k), z(kn), r(v), z(vn), one_of(&[0, 1, 2, u32::MAX, next() as u32]));
            }
            27 => {
                let (k, kn) = text();
                proxy_get_shared_data(r(k), z(kn), w8(write_ptr()), wz(write_ptr()), w32(write_ptr()));
            }
            28 => {
                let (n, nn) = text();
                proxy_register_shared_queue(r(n), z(nn), w32(write_ptr()));
            }
            29 => {
                let ((v, vn), (n, nn)) = (text(), text());
                proxy_resolve_shared_queue(r(v), z(vn), r(n), z(nn), w32(write_ptr()));
            }
            30 => {
                let (v, vn) = bytes();
                proxy_enqueue_shared_queue(small_id(), r(v), z(vn));
            }
            31 => {
                proxy_dequeue_shared_queue(small_id(), w8(write_ptr()), wz(write_ptr()));
            }
            32 => {
                let (n, nn) = text();
                proxy_define_metric(one_of(&[0, 1, 2, 3, u32::MAX]), r(n), z(nn), w32(write_ptr()));
            }
            33 => {
                proxy_record_metric(small_id(), next());
            }
            34 => {
                proxy_increment_metric(small_id(), one_of(&[1, -1, i64::MIN, i64::MAX, next() as i64]));
            }
            35 => {
                proxy_get_metric(small_id(), w64(write_ptr()));
            }
            36 => {
                let (p, pn) = text();
                proxy_get_property(r(p), z(pn), w8(write_ptr()), wz(write_ptr()));
            }
            37 => {
                let ((p, pn), (v, vn)) = (text(), bytes());
                proxy_set_property(r(p), z(pn), r(v), z(vn));
            }
            38 => {
                let ((n, nn), (a, an)) = (text(), bytes());
                proxy_call_foreign_function(r(n), z(nn), r(a), z(an), w8(write_ptr()), wz(write_ptr()));
            }
            0 => {
                proxy_done();
            }
            1 => {
                proxy_set_effective_context(small_id());
            }
            _ => {}
        }
    }
}

/// The body of every callback: `CALLS` host calls, each of a function not in `SKIP`.
fn chaos() {
    let skip = SKIP.load(Relaxed);
    for _ in 0..CALLS.load(Relaxed) {
        // Bounded: with every function skipped, nothing is called.
        if let Some(function) = (0..64).map(|_| below(39)).find(|f| skip & (1 << f) == 0) {
            call_one(function);
        }
    }
}

/// What a stream callback returns: Continue, Pause, or (rarely) a value that is no action.
fn action() -> u32 {
    if CALLS.load(Relaxed) == 0 {
        return 0;
    }
    one_of(&[0, 0, 0, 1, 2, u32::MAX])
}

/// What a bool-returning callback answers: true, false, or (rarely) something else.
fn verdict() -> u32 {
    if CALLS.load(Relaxed) == 0 {
        return 1;
    }
    one_of(&[1, 1, 1, 0, 7])
}

/// Reads `"<seed> <calls> [<skip mask>]"` from a configuration buffer (VM or plugin) with a sane
/// allocator, and reseeds.
fn configure(buffer_type: u32, size: u32) {
    HOSTILE_ALLOC.store(false, Relaxed);
    let mut data: *mut u8 = core::ptr::null_mut();
    let mut len: usize = 0;
    // SAFETY: valid out-pointers on the stack; the host allocates `len` bytes through
    // `proxy_on_memory_allocate`, which answers from ALLOC while HOSTILE_ALLOC is false.
    let status = unsafe { raw::proxy_get_buffer_bytes(buffer_type, 0, size as usize, &mut data, &mut len) };
    let text = if status == 0 && !data.is_null() {
        // SAFETY: the host wrote `len` bytes at `data`, inside ALLOC.
        unsafe { core::slice::from_raw_parts(data, len) }
    } else {
        &[]
    };
    let text = core::str::from_utf8(text).unwrap_or("");
    let mut words = text.split_ascii_whitespace().map(|w| w.parse::<u64>().unwrap_or(0));
    let seed = words.next().unwrap_or(0);
    let calls = words.next().unwrap_or(0).min(10_000) as u32;
    SKIP.store(words.next().unwrap_or(0), Relaxed);
    RNG.store(seed, Relaxed);
    CALLS.store(calls, Relaxed);
    HOSTILE_ALLOC.store(calls > 0, Relaxed);
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: u32) -> u32 {
    if HOSTILE_ALLOC.load(Relaxed) && below(8) == 0 {
        let end = memory_end();
        return one_of(&[0, end.saturating_sub(4), end, u32::MAX - 3]);
    }
    if size > ALLOC_SIZE {
        return 0;
    }
    let mut at = ALLOC_NEXT.load(Relaxed);
    if at + size > ALLOC_SIZE {
        at = 0;
    }
    ALLOC_NEXT.store((at + size + 7) & !7, Relaxed);
    ALLOC.base() + at
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context: u32, parent: u32) {
    if parent == 0 {
        LAST_ROOT.store(context, Relaxed);
        ROOTS.fetch_add(1, Relaxed);
    } else {
        LAST_STREAM.store(context, Relaxed);
        chaos();
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, size: u32) -> u32 {
    // Only the VM's first root context starts the VM; later ones (the test's quiet root after
    // the chaos) must not replay it.
    if ROOTS.load(Relaxed) > 1 {
        return 1;
    }
    configure(6, size);
    chaos();
    verdict()
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, size: u32) -> u32 {
    configure(7, size);
    chaos();
    verdict()
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(_root: u32) {
    chaos();
}

#[no_mangle]
pub extern "C" fn proxy_on_queue_ready(_root: u32, _queue: u32) {
    chaos();
}

#[no_mangle]
pub extern "C" fn proxy_on_foreign_function(_root: u32, _function: u32, _size: u32) {
    chaos();
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(_ctx: u32, _token: u32, _headers: u32, _body: u32, _trailers: u32) {
    chaos();
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive_initial_metadata(_ctx: u32, _token: u32, _headers: u32) {
    chaos();
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive(_ctx: u32, _token: u32, _size: u32) {
    chaos();
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive_trailing_metadata(_ctx: u32, _token: u32, _trailers: u32) {
    chaos();
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_close(_ctx: u32, _token: u32, _status: u32) {
    chaos();
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_ctx: u32, _headers: u32, _eos: u32) -> u32 {
    chaos();
    action()
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(_ctx: u32, _size: u32, _eos: u32) -> u32 {
    chaos();
    action()
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(_ctx: u32, _trailers: u32) -> u32 {
    chaos();
    action()
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(_ctx: u32, _headers: u32, _eos: u32) -> u32 {
    chaos();
    action()
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(_ctx: u32, _size: u32, _eos: u32) -> u32 {
    chaos();
    action()
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(_ctx: u32, _trailers: u32) -> u32 {
    chaos();
    action()
}

#[no_mangle]
pub extern "C" fn proxy_on_done(_ctx: u32) -> u32 {
    chaos();
    verdict()
}

#[no_mangle]
pub extern "C" fn proxy_on_log(_ctx: u32) {
    chaos();
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(_ctx: u32) {
    chaos();
}
