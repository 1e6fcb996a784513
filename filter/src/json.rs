//! JSON output helpers: strings escaped the way Kong's lua-cjson escapes them, base64 strings,
//! and a validating minifier for JSON request bodies.
//!
//! The message and the REST proxy bodies are written straight into one `Vec<u8>` with these
//! helpers rather than through a `serde_json::Value`, so a request costs one output buffer and no
//! intermediate tree.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

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
    write_str(out, &String::from_utf8_lossy(bytes));
}

/// Size of the stack buffer the byte-wise writers fill before copying into the output.
const CHUNK: usize = 512;

/// Copies the escaped form of `bytes` (already valid UTF-8) without quotes.
///
/// Output goes through a stack buffer flushed every [`CHUNK`] bytes (JSON bodies are dense in
/// characters to escape, and one `extend_from_slice` per short run costs more than a byte loop);
/// 8-byte words with nothing to escape are copied whole.
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut buf = [0u8; CHUNK];
    let mut k = 0;
    let mut i = 0;
    loop {
        // Room for 8 input bytes escaped to 6 output bytes each.
        if k > CHUNK - 48 {
            out.extend_from_slice(&buf[..k]);
            k = 0;
        }
        let Some(Ok(word)) = bytes.get(i..i + 8).map(<[u8; 8]>::try_from) else {
            break;
        };
        if needs_escape(u64::from_le_bytes(word)) {
            for b in word {
                k = escape_byte(&mut buf, k, b);
            }
        } else {
            buf[k..k + 8].copy_from_slice(&word);
            k += 8;
        }
        i += 8;
    }
    for &b in bytes.get(i..).unwrap_or_default() {
        k = escape_byte(&mut buf, k, b);
    }
    out.extend_from_slice(&buf[..k]);
}

/// Writes `b`, escaped if needed, at `buf[k..]`; returns the new end. `buf` has room for 6 bytes.
#[inline(always)]
fn escape_byte(buf: &mut [u8; CHUNK], k: usize, b: u8) -> usize {
    let esc = ESCAPE[b as usize];
    if esc == 0 {
        buf[k] = b;
        k + 1
    } else if esc == b'u' {
        buf[k..k + 6].copy_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[(b >> 4) as usize],
            HEX[(b & 0x0f) as usize],
        ]);
        k + 6
    } else {
        buf[k] = b'\\';
        buf[k + 1] = esc;
        k + 2
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `v` is zero.
fn has_zero(v: u64) -> bool {
    v.wrapping_sub(ONES) & !v & HIGHS != 0
}

/// Whether any byte of the little-endian word `x` is a control character, `"` or `\\`: the
/// bytes that end or break a run of plain string content.
fn has_special(x: u64) -> bool {
    // Some byte < 0x20 (exact for n <= 0x80).
    let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS != 0;
    control || has_zero(x ^ (ONES * b'"' as u64)) || has_zero(x ^ (ONES * b'\\' as u64))
}

/// Whether any byte of `x` is escaped on output ([`has_special`] or DEL).
fn needs_escape(x: u64) -> bool {
    has_special(x) || has_zero(x ^ (ONES * 0x7f))
}

/// Writes the standard base64 (with padding) of `bytes` as a quoted JSON string.
pub(crate) fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let start = out.len();
    let len = bytes.len().div_ceil(3) * 4;
    out.resize(start + len, 0);
    // The slice is exactly the encoded length, so encoding cannot fail; fall back to the
    // allocating encoder rather than panic if it ever did.
    if STANDARD.encode_slice(bytes, &mut out[start..]).is_err() {
        out.truncate(start);
        out.extend_from_slice(STANDARD.encode(bytes).as_bytes());
    }
    out.push(b'"');
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
pub(crate) fn write_compact(out: &mut Vec<u8>, doc: &str) -> Option<Container> {
    let (kind, spaced) = scan(doc.as_bytes())?;
    if spaced {
        write_minified(out, doc.as_bytes());
    } else {
        out.extend_from_slice(doc.as_bytes());
    }
    Some(kind)
}

/// Validates `d`; returns the top-level kind and whether it has whitespace outside strings.
fn scan(d: &[u8]) -> Option<(Container, bool)> {
    // One bit per open container: 1 = object, 0 = array.
    let mut stack = [0u64; MAX_DEPTH.div_ceil(64)];
    let mut depth = 0usize;
    let mut spaced = false;
    let mut i = skip_ws(d, 0, &mut spaced);
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
                i = skip_ws(d, i + 1, &mut spaced);
                let close = if object { b'}' } else { b']' };
                if *d.get(i)? == close {
                    depth -= 1;
                    i += 1;
                } else {
                    if object {
                        i = object_key(d, i, &mut spaced)?;
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
            i = skip_ws(d, i, &mut spaced);
            if depth == 0 {
                return (i == d.len()).then_some((kind, spaced));
            }
            let top = depth - 1;
            let object = stack[top / 64] & (1 << (top % 64)) != 0;
            match (*d.get(i)?, object) {
                (b',', _) => {
                    i = skip_ws(d, i + 1, &mut spaced);
                    if object {
                        i = object_key(d, i, &mut spaced)?;
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

/// Copies the valid JSON document `doc` without its insignificant whitespace.
fn write_minified(out: &mut Vec<u8>, doc: &[u8]) {
    let mut buf = [0u8; CHUNK];
    let mut k = 0;
    let mut in_string = false;
    let mut escaped = false;
    for &b in doc {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if is_json_space(b) {
            continue;
        } else if b == b'"' {
            in_string = true;
        }
        if k == CHUNK {
            out.extend_from_slice(&buf);
            k = 0;
        }
        buf[k] = b;
        k += 1;
    }
    out.extend_from_slice(&buf[..k]);
}

/// Checks `"key":` starting at d[i]; returns the index of the member's value.
fn object_key(d: &[u8], i: usize, spaced: &mut bool) -> Option<usize> {
    if *d.get(i)? != b'"' {
        return None;
    }
    let i = skip_ws(d, string_end(d, i)?, spaced);
    if *d.get(i)? != b':' {
        return None;
    }
    Some(skip_ws(d, i + 1, spaced))
}

#[inline(always)]
fn skip_ws(d: &[u8], from: usize, spaced: &mut bool) -> usize {
    match d.get(from) {
        Some(&b) if is_json_space(b) => {}
        _ => return from,
    }
    *spaced = true;
    let mut i = from + 1;
    while i < d.len() && is_json_space(d[i]) {
        i += 1;
    }
    i
}

/// The index after the string starting at d[i] (`"`).
#[inline(always)]
fn string_end(d: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        // Short strings end within a few bytes: look byte by byte first, then skip plain
        // 8-byte words, then find the special byte.
        let near = (j + 8).min(d.len());
        while j < near && !STRING_SPECIAL[d[j] as usize] {
            j += 1;
        }
        if j == near {
            while let Some(Ok(word)) = d.get(j..j + 8).map(<[u8; 8]>::try_from) {
                if has_special(u64::from_le_bytes(word)) {
                    break;
                }
                j += 8;
            }
            while j < d.len() && !STRING_SPECIAL[d[j] as usize] {
                j += 1;
            }
        }
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
