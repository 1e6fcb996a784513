//! The request headers of an HTTP/1 connection as the client wrote them: names in their own
//! letter case, in wire order, a repeated name at each of its positions.
//!
//! hyper hands a request's headers over as a `HeaderMap`: names lower-cased, the values of a
//! repeated name grouped under its first position. Its preserved-case map is private to the
//! crate and it keeps no order outside its `ffi` feature (hyper 1.x src/proto/h1/role.rs, the
//! `header_case_map` and `header_order` of `Server::parse`). A host whose filter sees the wire
//! names (ngx_wasm_module hands the filter nginx's `r->headers_in.headers` list, which nginx
//! fills in arrival order with the client's spelling: ngx_proxy_wasm_maps.c:106-113 and
//! :149-197) needs them from the bytes themselves, so the connection's socket wrapper
//! ([`super::edge::TrackedIo`]) feeds every byte hyper reads into a [`HeadRecorder`]. The
//! recorder parses each request head with httparse (the parser hyper itself uses), skips the
//! body by its framing as hyper does (Content-Length, or chunked: hyper 1.x
//! src/proto/h1/decode.rs), and queues the head's method, target and field names. The request
//! handler takes one head per HTTP/1 request, in order (hyper serves an HTTP/1 connection's
//! requests one after the other), and [`in_wire_order`] lays hyper's values out in the recorded
//! order and spelling, after checking that the head and hyper's request agree.
//!
//! Everything here is bounded (`MAX_WIRE_HEAD_BYTES`, `MAX_WIRE_HEAD_FIELDS` and
//! `MAX_RECORDED_HEAD_BYTES` in `crate::limits`) and nothing panics on any input: whatever the recorder cannot
//! follow (a head too large, a malformed body framing, an HTTP/2 preface, an upgrade) stops it
//! for the rest of the connection, and a request without a head that agrees with hyper's gets
//! hyper's own view (names lower-case, repeats grouped), as before.

use crate::limits::{MAX_RECORDED_HEAD_BYTES, MAX_WIRE_HEAD_BYTES, MAX_WIRE_HEAD_FIELDS};
use std::collections::{BTreeMap, VecDeque};
use std::mem::MaybeUninit;

/// Most buffer capacity an idle connection keeps for its next head.
const KEPT_HEAD_CAPACITY: usize = 16 * 1024;
/// Bookkeeping bytes a recorded head counts toward [`MAX_RECORDED_HEAD_BYTES`] besides its text.
const HEAD_OVERHEAD_BYTES: usize = 48;
/// Bookkeeping bytes each recorded name counts besides its text.
const NAME_OVERHEAD_BYTES: usize = 24;
/// Most bytes of chunk extensions hyper accepts in one body (`CHUNKED_EXTENSIONS_LIMIT`, hyper
/// 1.x src/proto/h1/decode.rs:20); the recorder stops past it, where hyper fails the body.
const CHUNK_EXTENSION_BYTES: u64 = 16 * 1024;
/// Most bytes of trailers hyper accepts after a chunked body (`TRAILER_LIMIT`, decode.rs:25).
const TRAILER_BYTES: usize = 16 * 1024;

/// One request head as the client wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireHead {
    /// The request line's method.
    pub method: String,
    /// The request line's target.
    pub target: String,
    /// The header field names, in order and as spelled.
    pub names: Vec<String>,
}

impl WireHead {
    fn cost(&self) -> usize {
        HEAD_OVERHEAD_BYTES
            + self.method.len()
            + self.target.len()
            + self.names.iter().map(|n| n.len() + NAME_OVERHEAD_BYTES).sum::<usize>()
    }
}

/// Where a chunked body is (the states of hyper's `ChunkedState`, decode.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The first hex digit of a size line.
    Start,
    /// More hex digits, or what ends them.
    Size,
    /// Blanks after the size.
    SizeBlank,
    /// A chunk extension, up to the line's CR.
    Extension,
    /// The size line's LF.
    SizeLf,
    /// Chunk data: this many bytes left.
    Data(u64),
    /// The CR after the data.
    DataCr,
    /// The LF after the data.
    DataLf,
    /// After the last chunk: a CR ends the body, anything else starts a trailer line.
    EndCr,
    /// The body's final LF.
    EndLf,
    /// A trailer line, up to its CR.
    Trailer,
    /// A trailer line's LF.
    TrailerLf,
}

/// What the recorder expects next on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A request head (its bytes so far are in `HeadRecorder::head`).
    Head,
    /// This many bytes of a Content-Length body.
    Body(u64),
    /// A chunked body.
    Chunked(Chunk),
    /// Nothing more: the recorder could not follow the connection (or it left HTTP/1).
    Stopped,
}

/// Follows an HTTP/1 connection's bytes and records each request head ([module docs](self)).
#[derive(Debug)]
pub struct HeadRecorder {
    expect: Expect,
    /// The bytes of an incomplete head, at most [`MAX_WIRE_HEAD_BYTES`].
    head: Vec<u8>,
    /// Recorded heads the handler has not taken yet.
    queue: VecDeque<WireHead>,
    /// What the queued heads cost, at most [`MAX_RECORDED_HEAD_BYTES`].
    queued_bytes: usize,
    /// Chunk extension bytes of the current body.
    extension_bytes: u64,
    /// Trailer bytes of the current body.
    trailer_bytes: usize,
    /// The size of the chunk whose size line is being read.
    chunk_size: u64,
}

impl Default for HeadRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeadRecorder {
    /// A recorder at the start of a connection.
    pub fn new() -> HeadRecorder {
        HeadRecorder {
            expect: Expect::Head,
            head: Vec::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            extension_bytes: 0,
            trailer_bytes: 0,
            chunk_size: 0,
        }
    }

    /// Whether the recorder has given up on the connection.
    pub fn stopped(&self) -> bool {
        self.expect == Expect::Stopped
    }

    /// The next recorded head, in request order.
    pub fn next_head(&mut self) -> Option<WireHead> {
        let head = self.queue.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(head.cost());
        Some(head)
    }

    /// A head did not agree with hyper's request: the recorder lost its place, so it records
    /// nothing more on this connection and drops what it queued.
    pub fn lost_track(&mut self) {
        self.stop();
        self.queue.clear();
        self.queued_bytes = 0;
    }

    fn stop(&mut self) {
        self.expect = Expect::Stopped;
        self.head = Vec::new();
    }

    /// Follows `bytes`, the next bytes the connection read.
    pub fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.expect {
                Expect::Stopped => return,
                Expect::Head => bytes = self.read_head(bytes),
                Expect::Body(left) => {
                    let left = skip(&mut bytes, left);
                    self.expect = if left == 0 { Expect::Head } else { Expect::Body(left) };
                }
                Expect::Chunked(Chunk::Data(left)) => {
                    let left = skip(&mut bytes, left);
                    self.expect = Expect::Chunked(if left == 0 { Chunk::DataCr } else { Chunk::Data(left) });
                }
                Expect::Chunked(state) => {
                    match self.chunk_byte(state, bytes[0]) {
                        Some(next) => self.expect = next,
                        None => self.stop(),
                    }
                    bytes = &bytes[1..];
                }
            }
        }
    }

    /// Adds `bytes` to the head being read and, once it is complete, records it. Returns the
    /// bytes past the head.
    fn read_head<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let before = self.head.len();
        let room = MAX_WIRE_HEAD_BYTES.saturating_sub(before);
        let taken = room.min(bytes.len());
        self.head.extend_from_slice(&bytes[..taken]);
        match self.parse_head() {
            Parsed::Partial if self.head.len() >= MAX_WIRE_HEAD_BYTES => {
                // Larger than hyper reads: hyper answers 431 and closes.
                self.stop();
                &[]
            }
            Parsed::Partial => &bytes[taken..],
            Parsed::Invalid => {
                self.stop();
                &[]
            }
            Parsed::Complete { len, head, framing } => {
                // The head's end lies in the new bytes: the bytes before them were incomplete.
                let Some(used) = len.checked_sub(before).filter(|used| *used <= taken) else {
                    self.stop();
                    return &[];
                };
                // A large head's buffer is not kept for the connection's life.
                if self.head.capacity() > KEPT_HEAD_CAPACITY {
                    self.head = Vec::new();
                } else {
                    self.head.clear();
                }
                let cost = head.cost();
                if self.queued_bytes + cost > MAX_RECORDED_HEAD_BYTES {
                    self.stop();
                    return &[];
                }
                self.queued_bytes += cost;
                self.queue.push_back(head);
                self.extension_bytes = 0;
                self.trailer_bytes = 0;
                self.expect = match framing {
                    Framing::Length(0) => Expect::Head,
                    Framing::Length(n) => Expect::Body(n),
                    Framing::Chunked => Expect::Chunked(Chunk::Start),
                    Framing::Unknown => Expect::Stopped,
                };
                if self.expect == Expect::Stopped {
                    self.head = Vec::new();
                }
                &bytes[used..]
            }
        }
    }

    fn parse_head(&self) -> Parsed {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_WIRE_HEAD_FIELDS];
        let mut request = httparse::Request::new(&mut []);
        let len = match request.parse_with_uninit_headers(&self.head, &mut fields) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            // Not HTTP/1 (an HTTP/2 preface is version 2.0), too many fields, bad syntax: hyper
            // refuses these too, or the connection is not HTTP/1 at all.
            Err(_) => return Parsed::Invalid,
        };
        let (Some(method), Some(target), Some(version)) = (request.method, request.path, request.version) else {
            return Parsed::Invalid;
        };
        let head = WireHead {
            method: method.to_string(),
            target: target.to_string(),
            names: request.headers.iter().map(|f| f.name.to_string()).collect(),
        };
        let framing = body_framing(method, version, request.headers);
        Parsed::Complete { len, head, framing }
    }

    /// One byte of a chunked body's framing (hyper's `ChunkedState::step`, decode.rs); `None`
    /// where hyper fails the body.
    fn chunk_byte(&mut self, state: Chunk, byte: u8) -> Option<Expect> {
        let next = match (state, byte) {
            (Chunk::Start, b) => {
                self.chunk_size = hex(b)?;
                Chunk::Size
            }
            (Chunk::Size, b) if hex(b).is_some() => {
                self.chunk_size = self.chunk_size.checked_mul(16)?.checked_add(hex(b)?)?;
                Chunk::Size
            }
            (Chunk::Size | Chunk::SizeBlank, b'\t' | b' ') => Chunk::SizeBlank,
            (Chunk::Size | Chunk::SizeBlank, b';') => Chunk::Extension,
            (Chunk::Size | Chunk::SizeBlank | Chunk::Extension, b'\r') => Chunk::SizeLf,
            (Chunk::Extension, b'\n') => return None,
            (Chunk::Extension, _) => {
                self.extension_bytes += 1;
                if self.extension_bytes >= CHUNK_EXTENSION_BYTES {
                    return None;
                }
                Chunk::Extension
            }
            (Chunk::SizeLf, b'\n') if self.chunk_size == 0 => Chunk::EndCr,
            (Chunk::SizeLf, b'\n') => Chunk::Data(self.chunk_size),
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::Start,
            (Chunk::EndCr, b'\r') => Chunk::EndLf,
            (Chunk::EndCr | Chunk::Trailer, b) => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > TRAILER_BYTES {
                    return None;
                }
                if b == b'\r' {
                    Chunk::TrailerLf
                } else {
                    Chunk::Trailer
                }
            }
            (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
            (Chunk::EndLf, b'\n') => return Some(Expect::Head),
            _ => return None,
        };
        Some(Expect::Chunked(next))
    }
}

/// The value of a hex digit.
fn hex(byte: u8) -> Option<u64> {
    (byte as char).to_digit(16).map(u64::from)
}

/// What parsing the bytes of a head so far gave.
enum Parsed {
    Partial,
    Invalid,
    Complete {
        len: usize,
        head: WireHead,
        framing: Framing,
    },
}

/// How a request's body is delimited.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// This many bytes (none without Content-Length or Transfer-Encoding).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Something the recorder does not follow: what hyper refuses (a Transfer-Encoding that
    /// does not end in chunked, one on HTTP/1.0, differing or invalid Content-Lengths), and a
    /// connection that may leave HTTP/1 after this request (CONNECT, Upgrade).
    Unknown,
}

/// The body framing of a request, as hyper's `Server::parse` decides it (hyper 1.x
/// src/proto/h1/role.rs: Transfer-Encoding chunked wins over Content-Length, equal repeated
/// Content-Lengths are one, RFC 9112 §6.3).
fn body_framing(method: &str, version: u8, fields: &[httparse::Header<'_>]) -> Framing {
    if method == "CONNECT" {
        return Framing::Unknown;
    }
    let mut length: Option<u64> = None;
    let mut transfer_encoding: Option<bool> = None;
    for field in fields {
        if field.name.eq_ignore_ascii_case("transfer-encoding") {
            if version == 0 {
                return Framing::Unknown;
            }
            transfer_encoding = Some(ends_in_chunked(field.value));
        } else if field.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = digits(field.value) else {
                if transfer_encoding.is_some() {
                    continue;
                }
                return Framing::Unknown;
            };
            if length.is_some_and(|previous| previous != n) && transfer_encoding.is_none() {
                return Framing::Unknown;
            }
            length = Some(n);
        } else if field.name.eq_ignore_ascii_case("upgrade") && version == 1 {
            return Framing::Unknown;
        }
    }
    match transfer_encoding {
        Some(true) => Framing::Chunked,
        Some(false) => Framing::Unknown,
        None => Framing::Length(length.unwrap_or(0)),
    }
}

/// Whether a Transfer-Encoding value's last coding is `chunked` (hyper's `is_chunked_`).
fn ends_in_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .map(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        .unwrap_or(false)
}

/// A Content-Length value: decimal digits only (hyper's `content_length_parse`).
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, b| {
        let digit = (*b as char).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// hyper's headers of a request laid out in the order and spelling of its recorded `head`:
/// each recorded name takes the next of hyper's values for it. `None` when the two disagree
/// (another method or target, a name hyper has more or fewer values of): the head is not this
/// request's. Content-Length is the one name hyper may hold fewer of (it keeps one of equal
/// repeats and drops it beside Transfer-Encoding: hyper 1.x role.rs `Server::parse`); such an
/// entry is left out, as hyper left it out.
pub fn in_wire_order(
    head: &WireHead,
    method: &hyper::Method,
    uri: &hyper::Uri,
    headers: &hyper::HeaderMap,
) -> Option<Vec<(String, String)>> {
    let target_matches =
        uri.path_and_query().is_some_and(|p| p.as_str() == head.target) || uri.to_string() == head.target;
    if head.method != method.as_str() || !target_matches {
        return None;
    }
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    let mut ordered = Vec::with_capacity(headers.len());
    for name in &head.names {
        let lower = name.to_ascii_lowercase();
        let index = taken.entry(lower.clone()).or_insert(0);
        let value = headers.get_all(lower.as_str()).iter().nth(*index);
        *index += 1;
        match value {
            Some(value) => ordered.push((name.clone(), String::from_utf8_lossy(value.as_bytes()).into_owned())),
            None if lower == "content-length" => {}
            None => return None,
        }
    }
    // Every value hyper holds has its place: nothing hyper added or the head lacks.
    (ordered.len() == headers.len()).then_some(ordered)
}

/// Passes over up to `left` body bytes at the front of `bytes`; returns how many are still to
/// come after them.
fn skip(bytes: &mut &[u8], left: u64) -> u64 {
    let skipped = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
    *bytes = &bytes[skipped..];
    left - skipped as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn recorded(bytes: &[u8]) -> (Vec<WireHead>, bool) {
        let mut recorder = HeadRecorder::new();
        recorder.observe(bytes);
        drain(&mut recorder)
    }

    fn drain(recorder: &mut HeadRecorder) -> (Vec<WireHead>, bool) {
        let stopped = recorder.stopped();
        (std::iter::from_fn(|| recorder.next_head()).collect(), stopped)
    }

    fn names(head: &WireHead) -> Vec<&str> {
        head.names.iter().map(String::as_str).collect()
    }

    #[test]
    fn a_head_keeps_the_clients_spelling_order_and_repeats() {
        let (heads, stopped) =
            recorded(b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\nX-MiXeD-Case: 1\r\nx-dup: 1\r\nAccept: */*\r\nX-Dup: 2\r\n\r\n");
        assert!(!stopped);
        assert_eq!(heads.len(), 1);
        assert_eq!((heads[0].method.as_str(), heads[0].target.as_str()), ("GET", "/a?b=1"));
        assert_eq!(
            names(&heads[0]),
            ["Host", "User-Agent", "X-MiXeD-Case", "x-dup", "Accept", "X-Dup"]
        );
    }

    /// Pipelined requests with a sized body, a chunked body (extension, trailer) and none.
    const PIPELINE: &[u8] = b"POST /one HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nGET /\r\n\
        PUT /two HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n\
        4;ext=1\r\nGET \r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\n\r\n\
        \r\nDELETE /three HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
        POST /four HTTP/1.1\r\ncontent-length: 0\r\nContent-Length: 0\r\n\r\n";

    fn pipeline_expectation() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
        vec![
            ("POST", "/one", vec!["Host", "Content-Length"]),
            ("PUT", "/two", vec!["Transfer-Encoding", "X-A"]),
            ("DELETE", "/three", vec!["Connection"]),
            ("POST", "/four", vec!["content-length", "Content-Length"]),
        ]
    }

    fn summary(heads: &[WireHead]) -> Vec<(&str, &str, Vec<&str>)> {
        heads
            .iter()
            .map(|h| (h.method.as_str(), h.target.as_str(), names(h)))
            .collect()
    }

    #[test]
    fn pipelined_requests_are_found_past_sized_and_chunked_bodies() {
        let (heads, stopped) = recorded(PIPELINE);
        assert!(!stopped);
        assert_eq!(summary(&heads), pipeline_expectation());
    }

    #[test]
    fn any_split_of_the_bytes_records_the_same_heads() {
        let mut rng = StdRng::seed_from_u64(17);
        for round in 0..300 {
            let mut recorder = HeadRecorder::new();
            let mut rest = PIPELINE;
            while !rest.is_empty() {
                let n = if round == 0 {
                    1
                } else {
                    rng.random_range(1..=rest.len().min(40))
                };
                recorder.observe(&rest[..n]);
                rest = &rest[n..];
            }
            let (heads, stopped) = drain(&mut recorder);
            assert!(!stopped, "round {round}");
            assert_eq!(summary(&heads), pipeline_expectation(), "round {round}");
        }
    }

    /// A random request: mixed-case names (some repeated), and a body sized or chunked.
    fn random_request(rng: &mut StdRng, index: usize) -> (Vec<u8>, WireHead) {
        const NAMES: [&str; 6] = ["Host", "X-MiXeD-Case", "accept", "X-DUP", "x-dup", "User-Agent"];
        let mut names = Vec::new();
        let mut text = format!("POST /r/{index} HTTP/1.1\r\n");
        for _ in 0..rng.random_range(0..8) {
            let name = NAMES[rng.random_range(0..NAMES.len())];
            text.push_str(&format!("{name}: v{}\r\n", rng.random_range(0..1000)));
            names.push(name.to_string());
        }
        let body: Vec<u8> = (0..rng.random_range(0..300)).map(|_| rng.random::<u8>()).collect();
        let mut bytes;
        if rng.random_range(0..2) == 0 {
            text.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            names.push("Content-Length".to_string());
            bytes = text.into_bytes();
            bytes.extend_from_slice(&body);
        } else {
            text.push_str("Transfer-Encoding: chunked\r\n\r\n");
            names.push("Transfer-Encoding".to_string());
            bytes = text.into_bytes();
            let mut rest = &body[..];
            while !rest.is_empty() {
                let n = rng.random_range(1..=rest.len());
                bytes.extend_from_slice(format!("{n:X}\r\n").as_bytes());
                bytes.extend_from_slice(&rest[..n]);
                bytes.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            bytes.extend_from_slice(b"0\r\n\r\n");
        }
        let head = WireHead {
            method: "POST".to_string(),
            target: format!("/r/{index}"),
            names,
        };
        (bytes, head)
    }

    #[test]
    fn random_pipelines_in_random_pieces_record_every_head_in_order() {
        let mut rng = StdRng::seed_from_u64(4);
        for round in 0..200 {
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for index in 0..rng.random_range(1..12) {
                let (bytes, head) = random_request(&mut rng, index);
                wire.extend(bytes);
                expected.push(head);
            }
            let mut recorder = HeadRecorder::new();
            let mut rest = &wire[..];
            let mut heads = Vec::new();
            while !rest.is_empty() {
                let n = rng.random_range(1..=rest.len().min(700));
                recorder.observe(&rest[..n]);
                rest = &rest[n..];
                // The handler takes heads while bytes still arrive.
                if rng.random_range(0..3) == 0 {
                    heads.extend(std::iter::from_fn(|| recorder.next_head()));
                }
            }
            heads.extend(std::iter::from_fn(|| recorder.next_head()));
            assert!(!recorder.stopped(), "round {round}");
            assert_eq!(heads, expected, "round {round}");
        }
    }

    #[test]
    fn random_bytes_never_panic_and_stay_within_the_bounds() {
        let mut rng = StdRng::seed_from_u64(9);
        let alphabet = b"GET POST / HTTP/1.1\r\n:Content-Length: 12Transfer-Encoding: chunked;0aF \t\xff";
        for _ in 0..2_000 {
            let mut recorder = HeadRecorder::new();
            for _ in 0..rng.random_range(1..20) {
                let piece: Vec<u8> = (0..rng.random_range(0..200))
                    .map(|_| match rng.random_range(0..4) {
                        0 => rng.random::<u8>(),
                        _ => alphabet[rng.random_range(0..alphabet.len())],
                    })
                    .collect();
                recorder.observe(&piece);
                assert!(recorder.head.len() <= MAX_WIRE_HEAD_BYTES);
                assert!(recorder.queued_bytes <= MAX_RECORDED_HEAD_BYTES);
                if rng.random_range(0..4) == 0 {
                    let _ = recorder.next_head();
                }
            }
        }
    }

    #[test]
    fn a_head_larger_than_hypers_buffer_stops_the_recorder_without_keeping_it() {
        let mut recorder = HeadRecorder::new();
        recorder.observe(b"GET / HTTP/1.1\r\n");
        let line = format!("X-Big: {}\r\n", "a".repeat(4000));
        for _ in 0..(MAX_WIRE_HEAD_BYTES / line.len() + 2) {
            recorder.observe(line.as_bytes());
            assert!(recorder.head.len() <= MAX_WIRE_HEAD_BYTES);
        }
        recorder.observe(b"\r\n");
        assert!(recorder.stopped());
        assert!(recorder.head.capacity() == 0 && recorder.next_head().is_none());
    }

    #[test]
    fn more_fields_than_hyper_takes_stop_the_recorder() {
        let mut text = "GET / HTTP/1.1\r\n".to_string();
        for i in 0..=MAX_WIRE_HEAD_FIELDS {
            text.push_str(&format!("X-{i}: v\r\n"));
        }
        text.push_str("\r\n");
        let (heads, stopped) = recorded(text.as_bytes());
        assert!(stopped && heads.is_empty());
    }

    #[test]
    fn heads_past_the_queue_budget_are_not_kept_and_the_earlier_ones_are() {
        let target = "/".to_string() + &"p".repeat(60_000);
        let request = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
        let mut recorder = HeadRecorder::new();
        for _ in 0..40 {
            recorder.observe(request.as_bytes());
        }
        assert!(recorder.stopped());
        assert!(recorder.queued_bytes <= MAX_RECORDED_HEAD_BYTES);
        let kept = std::iter::from_fn(|| recorder.next_head()).count();
        assert!(kept > 0 && kept < 40, "{kept}");
    }

    #[test]
    fn what_hyper_refuses_or_hands_elsewhere_stops_the_recorder_after_its_head() {
        for (wire, heads_kept) in [
            (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], 0),
            (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\r\n\r\n", 1),
            (b"CONNECT h:1 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", 1),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 1),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 1),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                1,
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\na", 1),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZ\r\n", 1),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXY", 1),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF\r\n",
                1,
            ),
        ] {
            let (heads, stopped) = recorded(wire);
            assert!(stopped, "{}", String::from_utf8_lossy(wire));
            assert_eq!(heads.len(), heads_kept, "{}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn content_length_beside_chunked_frames_as_chunked_like_hyper() {
        let (heads, stopped) = recorded(
            b"POST /a HTTP/1.1\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
        );
        assert!(!stopped);
        assert_eq!(
            heads.iter().map(|h| h.target.as_str()).collect::<Vec<_>>(),
            ["/a", "/b"]
        );
    }

    fn hyper_headers(pairs: &[(&str, &str)]) -> hyper::HeaderMap {
        let mut map = hyper::HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                hyper::header::HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn head(method: &str, target: &str, names: &[&str]) -> WireHead {
        WireHead {
            method: method.into(),
            target: target.into(),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn hypers_values_take_the_wire_names_and_positions() {
        let wire = head("GET", "/p?q", &["Host", "X-Dup", "Accept", "x-dup"]);
        let map = hyper_headers(&[("host", "h"), ("x-dup", "1"), ("x-dup", "2"), ("accept", "a")]);
        let uri: hyper::Uri = "/p?q".parse().unwrap();
        assert_eq!(
            in_wire_order(&wire, &hyper::Method::GET, &uri, &map),
            Some(vec![
                ("Host".to_string(), "h".to_string()),
                ("X-Dup".to_string(), "1".to_string()),
                ("Accept".to_string(), "a".to_string()),
                ("x-dup".to_string(), "2".to_string()),
            ])
        );
    }

    #[test]
    fn a_content_length_hyper_dropped_is_left_out() {
        let wire = head("POST", "/", &["Content-Length", "Host", "content-length"]);
        let map = hyper_headers(&[("content-length", "3"), ("host", "h")]);
        let uri: hyper::Uri = "/".parse().unwrap();
        let ordered = in_wire_order(&wire, &hyper::Method::POST, &uri, &map).unwrap();
        assert_eq!(
            ordered,
            [
                ("Content-Length".to_string(), "3".to_string()),
                ("Host".to_string(), "h".to_string())
            ]
        );
    }

    #[test]
    fn a_head_that_is_not_the_requests_is_refused() {
        let map = hyper_headers(&[("host", "h"), ("accept", "a")]);
        let uri: hyper::Uri = "/p".parse().unwrap();
        let get = hyper::Method::GET;
        assert!(in_wire_order(&head("GET", "/p", &["Host", "Accept"]), &get, &uri, &map).is_some());
        for other in [
            head("POST", "/p", &["Host", "Accept"]),
            head("GET", "/q", &["Host", "Accept"]),
            head("GET", "/p", &["Host"]),
            head("GET", "/p", &["Host", "Accept", "Accept"]),
            head("GET", "/p", &["Host", "X-Other"]),
        ] {
            assert_eq!(in_wire_order(&other, &get, &uri, &map), None, "{other:?}");
        }
        let absolute: hyper::Uri = "http://h/p".parse().unwrap();
        assert!(in_wire_order(&head("GET", "http://h/p", &["Host", "Accept"]), &get, &absolute, &map).is_some());
    }

    #[test]
    fn a_recorder_that_lost_track_keeps_nothing_more() {
        let mut recorder = HeadRecorder::new();
        recorder.observe(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
        recorder.lost_track();
        recorder.observe(b"GET /c HTTP/1.1\r\n\r\n");
        assert!(recorder.next_head().is_none());
        assert_eq!(recorder.queued_bytes, 0);
    }
}
