//! JSON output helpers: strings escaped the way Kong's lua-cjson escapes them, base64 strings,
//! and a validating minifier for JSON request bodies.
//!
//! The message and the REST proxy bodies are written straight into one `Vec<u8>` with these
//! helpers rather than through a `serde_json::Value`, so a request costs one output buffer and no
//! intermediate tree.
//!
//! These loops are the filter's per-byte cost (a 1 MiB body is escaped or base64-encoded, then
//! base64-encoded again inside the REST request), so they are written for speed, in wasm as
//! natively: output goes straight into the vector's spare capacity (no zeroed scratch buffer, no
//! second copy), 8-byte words with nothing to escape are copied whole, `"` and `\` are escaped
//! without a branch, and base64 takes one table lookup per two output characters.

use std::mem::MaybeUninit;

/// `ESCAPE[b]` is 0 when byte `b` is copied as is, `b'u'` when it is written as `\u00XX`, and
/// otherwise the letter that follows the backslash (`"`, `\`, `b`, `f`, `n`, `r`, `t`).
///
/// As lua-cjson does: control characters and DEL are escaped, `/` is not (Kong's documented
/// messages show `"uri":"/kafka"`), and bytes >= 0x80 are copied (the input is valid UTF-8).
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table[0x7f] = b'u';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `s` as a quoted JSON string.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    write_escaped(out, s.as_bytes());
    out.push(b'"');
}

/// Writes `bytes` as a quoted JSON string; invalid UTF-8 sequences become U+FFFD.
pub(crate) fn write_str_lossy(out: &mut Vec<u8>, bytes: &[u8]) {
    // Valid UTF-8 (every header and argument in practice) skips the lossy decoder's chunking.
    match as_utf8(bytes) {
        Some(s) => write_str(out, s),
        None => write_str(out, &String::from_utf8_lossy(bytes)),
    }
}

/// `bytes` as text when it is valid UTF-8 (`std::str::from_utf8`, faster on ASCII).
///
/// An ASCII prefix (all of most bodies, headers and queries) is recognised 8 bytes at a time
/// first; only what follows it goes through the standard validator, which in wasm32 reads at
/// most 4 bytes at a time. A body that is not text ends the prefix at its first high bit.
pub(crate) fn as_utf8(bytes: &[u8]) -> Option<&str> {
    let mut blocks = bytes.chunks_exact(32);
    let mut ascii = 0;
    for block in &mut blocks {
        if !is_ascii(block) {
            break;
        }
        ascii += 32;
    }
    let tail = blocks.remainder();
    if ascii + tail.len() != bytes.len() || !is_ascii(tail) {
        std::str::from_utf8(&bytes[ascii..]).ok()?;
    }
    // SAFETY: `bytes[..ascii]` is ASCII (no byte has its high bit set), and the rest is ASCII
    // too or was just checked to be valid UTF-8; an ASCII prefix ends on a character boundary,
    // so the whole is valid UTF-8.
    Some(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// Whether no byte of `bytes` has its high bit set, read a word at a time.
fn is_ascii(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    let mut high = 0u64;
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        high |= u64::from_le_bytes(w);
    }
    for &b in words.remainder() {
        high |= u64::from(b);
    }
    high & HIGHS == 0
}

/// Input bytes escaped per reservation of the output (at most 6 output bytes each).
const CHUNK: usize = 512;

/// Copies the escaped form of `bytes` (already valid UTF-8) without quotes.
///
/// Bytes are escaped straight into the output's spare capacity, 8 at a time, [`CHUNK`] input
/// bytes per reservation. Only a long run with nothing to escape at the start is copied with
/// `extend_from_slice`: in wasm that is a `memory.copy`, a call out to the host that costs more
/// than the word loop for the keys, header names and values a message is made of.
pub(crate) fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let clean = if bytes.len() >= 64 { clean_prefix_len(bytes) } else { 0 };
    let clean = if clean >= 64 { clean } else { 0 };
    out.extend_from_slice(&bytes[..clean]);
    for chunk in bytes[clean..].chunks(CHUNK) {
        let k = fill_spare(out, chunk.len() * 6, |buf| escape_chunk(buf, chunk));
        debug_assert!(k <= chunk.len() * 6);
    }
}

/// How many leading bytes of `bytes` are copied as is.
fn clean_prefix_len(bytes: &[u8]) -> usize {
    let mut i = 0;
    while let Some(Ok(word)) = bytes.get(i..i + 8).map(<[u8; 8]>::try_from) {
        if needs_escape(u64::from_le_bytes(word)) {
            break;
        }
        i += 8;
    }
    while i < bytes.len() && ESCAPE[bytes[i] as usize] == 0 {
        i += 1;
    }
    i
}

/// Writes the escaped form of `chunk` at the start of `buf` (6 bytes per input byte available);
/// returns how many bytes it wrote.
///
/// A word without control characters (all of them in JSON bodies) is written whole, then once
/// more from each `"` or `\` on, one byte further, after a backslash: a handful of operations
/// per escape instead of a table lookup and two stores per byte.
fn escape_chunk(buf: &mut [MaybeUninit<u8>], chunk: &[u8]) -> usize {
    let mut k = 0;
    let mut words = chunk.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let x = u64::from_le_bytes(w);
        if has_control(x) {
            for &b in word {
                k = escape_byte(buf, k, b);
            }
            continue;
        }
        // `buf[k..]` has room for 48 more bytes here (6 per input byte); the writes below stay
        // within 23 bytes, in a window taken once so that they need no bounds check.
        let Ok(dst) = <&mut [MaybeUninit<u8>; 24]>::try_from(&mut buf[k..k + 24]) else {
            unreachable!("a 24-byte slice converts to a 24-byte array");
        };
        write_word(dst, 0, x);
        // One 0x80 bit per `"` or `\` byte, lowest first.
        let mut quotes = zero_bytes(x ^ (ONES * b'"' as u64)) | zero_bytes(x ^ (ONES * b'\\' as u64));
        let mut shift = 0;
        while quotes != 0 {
            let p = (quotes.trailing_zeros() / 8) as usize;
            // The byte at `p` lands at `p + shift`: a backslash goes there, and the word from
            // `p` on moves one further. `p + shift <= 14`; the mask only proves it.
            let at = (p + shift) & 15;
            dst[at].write(b'\\');
            write_word(dst, at + 1, x >> (8 * p));
            shift += 1;
            quotes &= quotes - 1;
        }
        k += 8 + shift;
    }
    for &b in words.remainder() {
        k = escape_byte(buf, k, b);
    }
    k
}

/// Writes the 8 bytes of `x` (little-endian) at `dst[at..at + 8]`, as one store; `at <= 15`.
#[inline(always)]
fn write_word(dst: &mut [MaybeUninit<u8>; 24], at: usize, x: u64) {
    let at = at & 15;
    dst[at..at + 8].copy_from_slice(&x.to_le_bytes().map(MaybeUninit::new));
}

/// Writes `b`, escaped if needed, at `buf[k..]`; returns the new end. `buf` has room for 6 bytes.
#[inline(always)]
fn escape_byte(buf: &mut [MaybeUninit<u8>], k: usize, b: u8) -> usize {
    let esc = ESCAPE[b as usize];
    if esc == 0 {
        buf[k].write(b);
        k + 1
    } else if esc == b'u' {
        let seq = [
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[(b >> 4) as usize],
            HEX[(b & 0x0f) as usize],
        ];
        for (dst, c) in buf[k..k + 6].iter_mut().zip(seq) {
            dst.write(c);
        }
        k + 6
    } else {
        buf[k].write(b'\\');
        buf[k + 1].write(esc);
        k + 2
    }
}

/// Appends to `out` what `fill` writes into `max` bytes of spare capacity; `fill` returns how
/// many leading bytes it initialised (at most `max`). Writing in place avoids both zeroing a
/// buffer first and copying it afterwards.
fn fill_spare(out: &mut Vec<u8>, max: usize, fill: impl FnOnce(&mut [MaybeUninit<u8>]) -> usize) -> usize {
    out.reserve(max);
    let len = out.len();
    let written = fill(&mut out.spare_capacity_mut()[..max]);
    assert!(written <= max, "spare capacity overrun");
    // SAFETY: `fill` initialised `written` bytes of the spare capacity, starting right after the
    // current length; `written <= max` and `max` bytes were reserved.
    unsafe { out.set_len(len + written) };
    written
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `v` is zero.
fn has_zero(v: u64) -> bool {
    v.wrapping_sub(ONES) & !v & HIGHS != 0
}

/// The high bit of exactly each zero byte of `v` (no false positives, unlike [`has_zero`]'s
/// borrow trick, so the bits can be iterated).
fn zero_bytes(v: u64) -> u64 {
    const LOWS: u64 = !HIGHS;
    !(((v & LOWS).wrapping_add(LOWS)) | v | LOWS)
}

/// Whether any byte of the little-endian word `x` is a control character, `"` or `\\`: the
/// bytes that end or break a run of plain string content.
fn has_special(x: u64) -> bool {
    // Some byte < 0x20 (exact for n <= 0x80).
    let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS != 0;
    control || has_zero(x ^ (ONES * b'"' as u64)) || has_zero(x ^ (ONES * b'\\' as u64))
}

/// Whether any byte of `x` is a control character or DEL (escaped as `\u00XX` or a letter).
fn has_control(x: u64) -> bool {
    x.wrapping_sub(ONES * 0x20) & !x & HIGHS != 0 || has_zero(x ^ (ONES * 0x7f))
}

/// Whether any byte of `x` is escaped on output ([`has_special`] or DEL).
fn needs_escape(x: u64) -> bool {
    has_special(x) || has_zero(x ^ (ONES * 0x7f))
}

/// The standard base64 alphabet.
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `BASE64_PAIRS[n]`: the two base64 characters of the 12-bit value `n`, first in the low byte.
/// One lookup per two output characters (8 KiB, shared by the whole module).
static BASE64_PAIRS: [u16; 4096] = {
    let mut table = [0u16; 4096];
    let mut n = 0;
    while n < 4096 {
        table[n] = BASE64[n >> 6] as u16 | (BASE64[n & 63] as u16) << 8;
        n += 1;
    }
    table
};

/// The length of the padded base64 encoding of `len` bytes.
pub(crate) fn base64_len(len: usize) -> usize {
    len.div_ceil(3) * 4
}

/// Writes the standard base64 (with padding) of `bytes` as a quoted JSON string.
pub(crate) fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = base64_len(bytes.len());
    out.reserve(len + 2);
    out.push(b'"');
    let written = fill_spare(out, len, |buf| encode_base64(buf, bytes));
    debug_assert_eq!(written, len);
    out.push(b'"');
}

/// Encodes `bytes` into `buf` (exactly [`base64_len`] bytes long); returns that length.
fn encode_base64(buf: &mut [MaybeUninit<u8>], bytes: &[u8]) -> usize {
    // 12 input bytes (four groups) per iteration, each group read byte by byte: wasm has no
    // byte swap, so big-endian word loads would cost more than they save.
    let mut blocks = bytes.chunks_exact(12);
    let mut slots = buf.chunks_exact_mut(16);
    for (block, slot) in (&mut blocks).zip(&mut slots) {
        for (group, quad) in block.chunks_exact(3).zip(slot.chunks_exact_mut(4)) {
            encode_group(quad, group[0], group[1], group[2]);
        }
    }
    let rest = blocks.remainder();
    let done = bytes.len() - rest.len();
    let at = done / 3 * 4;
    let mut quads = buf[at..].chunks_exact_mut(4);
    let mut groups = rest.chunks_exact(3);
    for (group, quad) in (&mut groups).zip(&mut quads) {
        encode_group(quad, group[0], group[1], group[2]);
    }
    let tail = groups.remainder();
    if let (false, Some(quad)) = (tail.is_empty(), quads.next()) {
        let n = (tail[0] as usize) << 16 | (tail.get(1).copied().unwrap_or(0) as usize) << 8;
        let chars = [
            BASE64[n >> 18],
            BASE64[(n >> 12) & 63],
            if tail.len() == 2 { BASE64[(n >> 6) & 63] } else { b'=' },
            b'=',
        ];
        for (d, c) in quad.iter_mut().zip(chars) {
            d.write(c);
        }
    }
    base64_len(bytes.len())
}

/// Writes the four base64 characters of the three bytes `a`, `b`, `c` into `quad`.
#[inline(always)]
fn encode_group(quad: &mut [MaybeUninit<u8>], a: u8, b: u8, c: u8) {
    let n = (a as usize) << 16 | (b as usize) << 8 | c as usize;
    let chars = BASE64_PAIRS[n >> 12] as u32 | (BASE64_PAIRS[n & 0xfff] as u32) << 16;
    for (d, c) in quad.iter_mut().zip(chars.to_le_bytes()) {
        d.write(c);
    }
}

/// Writes `"key":` preceded by a comma unless it is the first member of the object.
pub(crate) fn write_key(out: &mut Vec<u8>, first: &mut bool, key: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    write_str(out, key);
    out.push(b':');
}

/// The JSON container kind a document starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Container {
    /// A JSON object (`{...}`).
    Object,
    /// A JSON array (`[...]`).
    Array,
    /// A string, number, boolean or null.
    Scalar,
}

/// How deep objects and arrays may nest (lua-cjson's default `decode_max_depth`).
const MAX_DEPTH: usize = 1000;

/// Checks that `doc` is exactly one JSON document (RFC 8259) and appends its compact form to
/// `out`: insignificant whitespace removed, strings, escapes and numbers copied byte for byte,
/// key order and duplicates kept. Returns what the top-level value is; on invalid JSON (or
/// nesting deeper than [`MAX_DEPTH`]) nothing is written and `None` is returned.
///
/// One pass: the validator copies the text between whitespace runs as it skips them, so a
/// document without insignificant whitespace costs one copy and a spaced one no second scan.
pub(crate) fn write_compact(out: &mut Vec<u8>, doc: &str) -> Option<Container> {
    let mark = out.len();
    out.reserve(doc.len());
    let mut c = Compactor {
        d: doc.as_bytes(),
        out,
        copied: 0,
    };
    match c.run() {
        Some(kind) => {
            c.out.extend_from_slice(&c.d[c.copied..]);
            Some(kind)
        }
        None => {
            c.out.truncate(mark);
            None
        }
    }
}

/// The validating minifier's state: the document, the output, and how much of the document has
/// been copied out (everything before `copied` except skipped whitespace).
struct Compactor<'a> {
    d: &'a [u8],
    out: &'a mut Vec<u8>,
    copied: usize,
}

impl Compactor<'_> {
    /// Validates the document; returns the top-level kind.
    fn run(&mut self) -> Option<Container> {
        let d = self.d;
        // One bit per open container: 1 = object, 0 = array.
        let mut stack = [0u64; MAX_DEPTH.div_ceil(64)];
        let mut depth = 0usize;
        let mut i = self.skip_ws(0);
        let kind = match d.get(i)? {
            b'{' => Container::Object,
            b'[' => Container::Array,
            _ => Container::Scalar,
        };
        'value: loop {
            // A value starts at d[i] (whitespace already skipped).
            match *d.get(i)? {
                open @ (b'{' | b'[') => {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    let object = open == b'{';
                    if object {
                        stack[depth / 64] |= 1 << (depth % 64);
                    } else {
                        stack[depth / 64] &= !(1 << (depth % 64));
                    }
                    depth += 1;
                    i = self.skip_ws(i + 1);
                    let close = if object { b'}' } else { b']' };
                    if *d.get(i)? == close {
                        depth -= 1;
                        i += 1;
                    } else {
                        if object {
                            i = self.object_key(i)?;
                        }
                        continue 'value;
                    }
                }
                b'"' => i = string_end(d, i)?,
                b'-' | b'0'..=b'9' => i = number_end(d, i)?,
                b't' => i = literal_end(d, i, b"true")?,
                b'f' => i = literal_end(d, i, b"false")?,
                b'n' => i = literal_end(d, i, b"null")?,
                _ => return None,
            }
            // After a complete value: close containers or move to the next member.
            loop {
                i = self.skip_ws(i);
                if depth == 0 {
                    return (i == d.len()).then_some(kind);
                }
                let top = depth - 1;
                let object = stack[top / 64] & (1 << (top % 64)) != 0;
                match (*d.get(i)?, object) {
                    (b',', _) => {
                        i = self.skip_ws(i + 1);
                        if object {
                            i = self.object_key(i)?;
                        }
                        continue 'value;
                    }
                    (b'}', true) | (b']', false) => {
                        depth -= 1;
                        i += 1;
                    }
                    _ => return None,
                }
            }
        }
    }

    /// Checks `"key":` starting at d[i]; returns the index of the member's value.
    #[inline(always)]
    fn object_key(&mut self, i: usize) -> Option<usize> {
        if *self.d.get(i)? != b'"' {
            return None;
        }
        let i = self.skip_ws(string_end(self.d, i)?);
        if *self.d.get(i)? != b':' {
            return None;
        }
        Some(self.skip_ws(i + 1))
    }

    /// The index of the first non-whitespace byte at or after `from`; a whitespace run is cut
    /// out of the output (the text before it is copied first).
    #[inline(always)]
    fn skip_ws(&mut self, from: usize) -> usize {
        let d = self.d;
        match d.get(from) {
            Some(&b) if is_json_space(b) => {}
            _ => return from,
        }
        self.out.extend_from_slice(&d[self.copied..from]);
        let mut i = from + 1;
        while i < d.len() && is_json_space(d[i]) {
            i += 1;
        }
        self.copied = i;
        i
    }
}

/// The index after the string starting at d[i] (`"`).
#[inline(always)]
fn string_end(d: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        j = next_special(d, j);
        match *d.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => match *d.get(j + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                b'u' => {
                    let hex = d.get(j + 2..j + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    j += 6;
                }
                _ => return None,
            },
            // A control character.
            _ => return None,
        }
    }
}

/// The index of the first byte at or after `j` that ends or breaks plain string content (a
/// control character, `"` or `\\`), or `d.len()`.
///
/// Eight bytes at a time, the first special byte located from its bit: most strings in a JSON
/// body (keys, short values) end within one word, and a loop turn costs more in wasm (the host
/// checks its deadline on every back edge) than the bit arithmetic.
#[inline(always)]
fn next_special(d: &[u8], mut j: usize) -> usize {
    while let Some(Ok(word)) = d.get(j..j + 8).map(<[u8; 8]>::try_from) {
        let special = special_bytes(u64::from_le_bytes(word));
        if special != 0 {
            return j + (special.trailing_zeros() / 8) as usize;
        }
        j += 8;
    }
    while j < d.len() && !STRING_SPECIAL[d[j] as usize] {
        j += 1;
    }
    j
}

/// The high bit of exactly each byte of `x` that is a control character, `"` or `\\`.
fn special_bytes(x: u64) -> u64 {
    zero_bytes(x & (ONES * 0xe0)) | zero_bytes(x ^ (ONES * b'"' as u64)) | zero_bytes(x ^ (ONES * b'\\' as u64))
}

/// `STRING_SPECIAL[b]`: byte `b` ends or breaks plain string content (control, `"`, `\\`).
static STRING_SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// The index after the number starting at d[i].
fn number_end(d: &[u8], i: usize) -> Option<usize> {
    let digits = |mut j: usize| {
        let from = j;
        while j < d.len() && d[j].is_ascii_digit() {
            j += 1;
        }
        (j > from).then_some(j)
    };
    let mut j = i;
    if d.get(j) == Some(&b'-') {
        j += 1;
    }
    j = match d.get(j)? {
        b'0' => j + 1,
        b'1'..=b'9' => digits(j)?,
        _ => return None,
    };
    if d.get(j) == Some(&b'.') {
        j = digits(j + 1)?;
    }
    if matches!(d.get(j), Some(b'e' | b'E')) {
        j += 1;
        if matches!(d.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        j = digits(j)?;
    }
    Some(j)
}

/// The value a JSON pointer (RFC 6901, already split into unescaped reference tokens) designates
/// in `doc`, a document [`write_compact`] produced (valid, no insignificant whitespace): its text,
/// or `None` when a token names no member or element. Of repeated object keys the first one
/// counts (RFC 8259 leaves duplicates to the reader; stopping at the first match reads less).
///
/// One forward scan that skips the members and elements before each match: at most one pass
/// over the document per pointer, no tree built.
pub(crate) fn pointer<'d>(doc: &'d str, tokens: &[String]) -> Option<&'d str> {
    let d = doc.as_bytes();
    let mut i = 0;
    for token in tokens {
        match *d.get(i)? {
            b'{' => {
                i += 1;
                loop {
                    if *d.get(i)? != b'"' {
                        return None;
                    }
                    let key_end = string_end(d, i)?;
                    let matches = key_is(doc.get(i + 1..key_end - 1)?, token);
                    // `"key":` then the value.
                    i = key_end + 1;
                    if matches {
                        break;
                    }
                    i = value_end(d, i)?;
                    if *d.get(i)? != b',' {
                        return None;
                    }
                    i += 1;
                }
            }
            b'[' => {
                let index = array_index(token)?;
                i += 1;
                if *d.get(i)? == b']' {
                    return None;
                }
                for _ in 0..index {
                    i = value_end(d, i)?;
                    if *d.get(i)? != b',' {
                        return None;
                    }
                    i += 1;
                }
            }
            _ => return None,
        }
    }
    let end = value_end(d, i)?;
    doc.get(i..end)
}

/// Whether the raw (still escaped) key text equals `token`.
fn key_is(raw: &str, token: &str) -> bool {
    if !raw.contains('\\') {
        return raw == token;
    }
    // Read as a `Value` from bytes, as the configuration is: one instantiation of serde_json's
    // parser in the `.wasm` instead of a second one for `&str` input and typed `String`s.
    let quoted = format!("\"{raw}\"");
    matches!(serde_json::from_slice(quoted.as_bytes()), Ok(serde_json::Value::String(key)) if key == token)
}

/// An RFC 6901 array index: `0`, or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let digits = token.bytes().all(|b| b.is_ascii_digit());
    if token.is_empty() || !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// The index after the value starting at `d[i]` in a compact, valid document.
fn value_end(d: &[u8], i: usize) -> Option<usize> {
    match *d.get(i)? {
        b'"' => string_end(d, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match *d.get(j)? {
                    b'"' => j = string_end(d, j)?,
                    b'{' | b'[' => {
                        depth += 1;
                        j += 1;
                    }
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        j += 1;
                        if depth == 0 {
                            return Some(j);
                        }
                    }
                    _ => j += 1,
                }
            }
        }
        _ => {
            let mut j = i;
            while j < d.len() && !matches!(d[j], b',' | b'}' | b']') {
                j += 1;
            }
            Some(j)
        }
    }
}

fn literal_end(d: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    d.get(i..)?.starts_with(word).then_some(i + word.len())
}

fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_like_cjson() {
        assert_eq!(s("/kafka?a=1"), r#""/kafka?a=1""#);
        assert_eq!(s("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(s("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(s("\u{1}\u{1f}\u{7f}"), r#""\u0001\u001f\u007f""#);
        assert_eq!(s("é€😀"), "\"é€😀\"");
        assert_eq!(s(""), "\"\"");
    }

    #[test]
    fn every_escaped_string_parses_back() {
        let all: String = (0u32..0x300).filter_map(char::from_u32).collect();
        let text = s(&all);
        let back: String = serde_json::from_str(&text).unwrap();
        assert_eq!(back, all);
    }

    #[test]
    fn long_strings_cross_the_stack_buffer() {
        for unit in ["\u{1}", "ab\"", "é", "x"] {
            let text = unit.repeat(700);
            let back: String = serde_json::from_str(&s(&text)).unwrap();
            assert_eq!(back, text);
        }
    }

    #[test]
    fn swar_check_matches_bytewise() {
        let special = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
        for pos in 0..8 {
            for b in 0..=255u8 {
                let mut word = [b'a'; 8];
                word[pos] = b;
                assert_eq!(has_special(u64::from_le_bytes(word)), special(b), "{b:#x}@{pos}");
                let mut word = [0xc3u8; 8];
                word[pos] = b;
                assert_eq!(has_special(u64::from_le_bytes(word)), special(b), "{b:#x}@{pos} hi");
            }
        }
        for pos in 0..8 {
            for b in 0..=255u8 {
                for fill in [b'a', 0xc3, 0x80, 0xff, b' ', b'"', 0x1f] {
                    let mut word = [fill; 8];
                    word[pos] = b;
                    let want = word
                        .iter()
                        .enumerate()
                        .filter(|(_, &c)| special(c))
                        .fold(0u64, |m, (i, _)| m | 0x80 << (8 * i));
                    assert_eq!(
                        special_bytes(u64::from_le_bytes(word)),
                        want,
                        "{b:#x}@{pos} in {fill:#x}"
                    );
                }
            }
        }
        let control = |b: u8| b < 0x20 || b == 0x7f;
        let quote = |b: u8| b == b'"' || b == b'\\';
        for pos in 0..8 {
            for b in 0..=255u8 {
                for fill in [b'a', 0xc3, 0x80, 0xff, b' '] {
                    let mut word = [fill; 8];
                    word[pos] = b;
                    let x = u64::from_le_bytes(word);
                    assert_eq!(has_control(x), control(b) || control(fill), "{b:#x}@{pos} in {fill:#x}");
                    let quotes = zero_bytes(x ^ (ONES * b'"' as u64)) | zero_bytes(x ^ (ONES * b'\\' as u64));
                    let want = word
                        .iter()
                        .enumerate()
                        .filter(|(_, &c)| quote(c))
                        .fold(0u64, |m, (i, _)| m | 0x80 << (8 * i));
                    assert_eq!(quotes, want, "{b:#x}@{pos} in {fill:#x}");
                    let escaped = control(b) || quote(b) || control(fill) || quote(fill);
                    assert_eq!(needs_escape(x), escaped, "{b:#x}@{pos} in {fill:#x}");
                }
            }
        }
    }

    /// The ASCII-first check agrees with `std::str::from_utf8` wherever the first non-ASCII or
    /// invalid byte falls.
    #[test]
    fn utf8_check_matches_std() {
        for len in [0, 1, 31, 32, 33, 63, 64, 65, 100] {
            for at in 0..len {
                for bad in [
                    &b"\xff"[..],
                    b"\xc3\xa9",
                    b"\xe2\x82",
                    b"\xf0\x9f\x98\x80",
                    b"\x80",
                    b"\xed\xa0\x80",
                ] {
                    let mut bytes = vec![b'a'; len];
                    bytes.splice(at..at, bad.iter().copied());
                    let want = std::str::from_utf8(&bytes).ok();
                    assert_eq!(as_utf8(&bytes), want, "{bytes:?}");
                }
            }
            let bytes = vec![b'z'; len];
            assert_eq!(as_utf8(&bytes), std::str::from_utf8(&bytes).ok());
        }
    }

    #[test]
    fn lossy_replaces_invalid_utf8() {
        let mut out = Vec::new();
        write_str_lossy(&mut out, b"a\xffb");
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\u{fffd}b\"");
    }

    #[test]
    fn base64_strings() {
        for (input, want) in [
            (&b""[..], "\"\""),
            (b"f", "\"Zg==\""),
            (b"fo", "\"Zm8=\""),
            (b"foo", "\"Zm9v\""),
            (b"\x00\xff\xfe", "\"AP/+\""),
        ] {
            let mut out = b"x".to_vec();
            write_base64(&mut out, input);
            assert_eq!(&out[1..], want.as_bytes());
        }
    }

    /// The table-driven encoder agrees with the base64 crate for every tail length, across the
    /// whole byte range, after any prefix.
    #[test]
    fn base64_matches_the_base64_crate() {
        use base64::Engine as _;
        let data: Vec<u8> = (0u32..3000).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for len in (0..64).chain([255, 256, 257, 1000, 2999, 3000]) {
            let mut out = b"pre".to_vec();
            write_base64(&mut out, &data[..len]);
            let want = format!("\"{}\"", base64::engine::general_purpose::STANDARD.encode(&data[..len]));
            assert_eq!(&out[3..], want.as_bytes(), "len {len}");
            assert_eq!(base64_len(len) + 2, want.len());
        }
    }

    /// The word-at-a-time and chunked escaper writes exactly what a byte-by-byte one writes.
    #[test]
    fn escaping_matches_bytewise_reference() {
        fn reference(s: &str) -> String {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\u{8}' => out.push_str("\\b"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\u{c}' => out.push_str("\\f"),
                    '\r' => out.push_str("\\r"),
                    c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        let units = [
            "a", "\"", "\\", "\n", "\u{1}", "\u{7f}", "é", "😀", "/", " ", "\t", "xyzw",
        ];
        let mut seed = 7u32;
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 100, 511, 512, 513, 1500] {
            for _ in 0..20 {
                let text: String = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        units[(seed >> 16) as usize % units.len()]
                    })
                    .collect();
                let mut out = b"pre".to_vec();
                write_str(&mut out, &text);
                assert_eq!(std::str::from_utf8(&out[3..]).unwrap(), reference(&text), "{text:?}");
            }
        }
        let clean = "0123456789abcdef".repeat(70);
        let dirty = format!("{clean}\"{clean}");
        for text in [clean.as_str(), &dirty] {
            assert_eq!(s(text), reference(text));
        }
    }

    fn compact_of(doc: &str) -> Option<(Container, String)> {
        let mut out = b"prefix".to_vec();
        match write_compact(&mut out, doc) {
            Some(kind) => Some((kind, String::from_utf8(out[6..].to_vec()).unwrap())),
            None => {
                assert_eq!(out, b"prefix", "output restored on {doc:?}");
                None
            }
        }
    }

    #[test]
    fn compact_tells_containers() {
        assert_eq!(
            compact_of(" {\"a\":1} "),
            Some((Container::Object, r#"{"a":1}"#.into()))
        );
        assert_eq!(compact_of("[1,2]"), Some((Container::Array, "[1,2]".into())));
        assert_eq!(compact_of("\"x\""), Some((Container::Scalar, "\"x\"".into())));
        assert_eq!(compact_of(" 42 "), Some((Container::Scalar, "42".into())));
        assert_eq!(compact_of("null"), Some((Container::Scalar, "null".into())));
        assert_eq!(compact_of("[1e400]"), Some((Container::Array, "[1e400]".into())));
    }

    #[test]
    fn compact_keeps_strings_and_numbers() {
        let doc = "{ \"a b\" : [ 1 , -2.50e+3 ,\n\t\"x \\\" y\\\\ \\u00E9 \\/\" , true,false , null ] , \"c\":{ }, \"d\" : [ ] , \"a b\":0}";
        assert_eq!(
            compact_of(doc).unwrap().1,
            r#"{"a b":[1,-2.50e+3,"x \" y\\ \u00E9 \/",true,false,null],"c":{},"d":[],"a b":0}"#
        );
        let long = format!("[\"{}\",\"{}\\n{}\"]", "a".repeat(100), "é".repeat(20), "z".repeat(9));
        assert_eq!(compact_of(&long).unwrap().1, long);
    }

    #[test]
    fn compact_rejects_invalid_json() {
        let deep_ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(compact_of(&deep_ok).is_some());
        let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        for doc in [
            "",
            " ",
            "{",
            "}",
            "[",
            "]",
            "[1,]",
            "[,1]",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{a:1}",
            "{1:1}",
            "[1 2]",
            "{\"a\":1 \"b\":2}",
            "{} x",
            "{}{}",
            "[01]",
            "[1.]",
            "[.5]",
            "[1e]",
            "[-]",
            "[+1]",
            "[tru]",
            "[nul]",
            "[True]",
            "\"\\x\"",
            "\"\\u12G4\"",
            "\"\\u12\"",
            "\"a\u{1}b\"",
            "\"tab\there\"",
            "\"open",
            "[1]]",
            "[}",
            "{]",
            "\u{feff}{}",
            too_deep.as_str(),
        ] {
            assert_eq!(compact_of(doc), None, "{doc:?}");
        }
    }

    /// Strings of every length up to a few words, with an escape, a bad escape, a control
    /// character or an early end at every position, wherever the document ends.
    #[test]
    fn compact_strings_across_word_boundaries() {
        for len in 0..40 {
            for at in 0..=len {
                for insert in ["", "\\\"", "\\u00e9", "\\x", "\u{1}", "\"", "é", "\\\\"] {
                    let mut content = "a".repeat(len);
                    content.insert_str(at, insert);
                    for doc in [
                        format!("\"{content}\""),
                        format!("[\"{content}\"]"),
                        format!("{{\"{content}\":1}}"),
                        format!("[\"{content}"),
                    ] {
                        let ours = compact_of(&doc);
                        let theirs = serde_json::from_str::<serde_json::Value>(&doc);
                        assert_eq!(ours.is_some(), theirs.is_ok(), "{doc:?}");
                        if let Some((_, text)) = ours {
                            assert_eq!(text, doc);
                        }
                    }
                }
            }
        }
    }

    /// The compactor agrees with serde_json on what is JSON, and its output is the same value.
    #[test]
    fn compact_agrees_with_serde_json() {
        let docs = [
            r#"{"k":[1,2,{"x":null}],"s":"\u0041\n"}"#,
            "[ -0, 0.1, 1E5, 2e-3, 10 ]",
            r#"{"a":"\ud83d\ude00","b":"😀"}"#,
            r#"[[[[[]]]]]"#,
            r#"{"":""}"#,
            "[1,2",
            r#"{"a":1}}"#,
        ];
        for doc in docs {
            let ours = compact_of(doc);
            let theirs = serde_json::from_str::<serde_json::Value>(doc);
            assert_eq!(ours.is_some(), theirs.is_ok(), "{doc}");
            if let (Some((_, text)), Ok(v)) = (ours, theirs) {
                assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), v);
            }
        }
    }
}
