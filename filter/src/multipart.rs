//! `multipart/form-data` bodies (RFC 7578) decoded into the field map Kong puts in `body_args`
//! (`kong.request.get_body()` uses lua-multipart's `get_all_with_arrays()`: field name → value,
//! a repeated name → array of values, a file part's value is its content).
//!
//! The parser is lenient like lua-multipart: a preamble before the first delimiter is ignored, a
//! missing close delimiter ends the last part at the end of the body, lines may end in CRLF or
//! LF, and parts without a `name` in their `Content-Disposition` are skipped.

use crate::json;

/// One form field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// The `name` parameter of the part's `Content-Disposition` header.
    pub name: &'a [u8],
    /// The part's content, without the line break that precedes the next delimiter.
    pub value: &'a [u8],
}

/// The `boundary` parameter of a `Content-Type` header value, unquoted; `None` when absent or
/// empty.
pub fn boundary(content_type: &[u8]) -> Option<&[u8]> {
    let mut params = content_type.split(|&b| b == b';');
    params.next(); // the media type
    for param in params {
        let param = trim(param);
        let Some(eq) = param.iter().position(|&b| b == b'=') else {
            continue;
        };
        if !trim(&param[..eq]).eq_ignore_ascii_case(b"boundary") {
            continue;
        }
        let mut value = trim(&param[eq + 1..]);
        if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
            value = &value[1..value.len() - 1];
        }
        return if value.is_empty() { None } else { Some(value) };
    }
    None
}

/// Splits `body` into its named fields. Returns `None` when `boundary` is empty (nothing can be
/// decoded), otherwise the fields found, in order (possibly none).
pub fn parse<'a>(body: &'a [u8], boundary: &[u8]) -> Option<Vec<Field<'a>>> {
    if boundary.is_empty() {
        return None;
    }
    let mut delimiter = Vec::with_capacity(boundary.len() + 2);
    delimiter.extend_from_slice(b"--");
    delimiter.extend_from_slice(boundary);

    let mut fields = Vec::new();
    // The first delimiter starts the body or a line.
    let Some(mut pos) = find_delimiter(body, 0, &delimiter, true) else {
        return Some(fields);
    };
    loop {
        let after = pos + delimiter.len();
        if body[after..].starts_with(b"--") {
            break; // close delimiter
        }
        // The rest of the delimiter line (transport padding) is ignored.
        let Some(eol) = find(body, after, b"\n") else {
            break;
        };
        let headers_start = eol + 1;
        let (name, content_start) = part_headers(body, headers_start);
        let next = find_delimiter(body, content_start, &delimiter, false);
        let content_end = match next {
            Some(d) => strip_line_break(body, content_start, d),
            None => strip_line_break(body, content_start, body.len()),
        };
        if let Some(name) = name {
            fields.push(Field {
                name,
                value: &body[content_start.min(content_end)..content_end],
            });
        }
        match next {
            Some(d) => pos = d,
            None => break,
        }
    }
    Some(fields)
}

/// Reads a part's header lines from `start`; returns the field name (if any) and where the
/// content starts (after the empty line, or the end of the body when there is none).
fn part_headers(body: &[u8], start: usize) -> (Option<&[u8]>, usize) {
    let mut name = None;
    let mut line_start = start;
    while line_start < body.len() {
        let line_end = find(body, line_start, b"\n").unwrap_or(body.len());
        let line = trim_cr(&body[line_start..line_end]);
        let next = (line_end + 1).min(body.len());
        if line.is_empty() {
            return (name, next);
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            if trim(&line[..colon]).eq_ignore_ascii_case(b"content-disposition") {
                name = disposition_name(&line[colon + 1..]);
            }
        }
        line_start = next;
    }
    (name, body.len())
}

/// The `name` parameter of a `Content-Disposition: form-data; name="x"` value.
fn disposition_name(value: &[u8]) -> Option<&[u8]> {
    let mut rest = value;
    while let Some(semi) = rest.iter().position(|&b| b == b';') {
        rest = &rest[semi + 1..];
        let param = trim_start(rest);
        let Some(eq) = param.iter().position(|&b| b == b'=') else {
            continue;
        };
        if !trim(&param[..eq]).eq_ignore_ascii_case(b"name") {
            continue;
        }
        let v = trim_start(&param[eq + 1..]);
        if let Some(quoted) = v.strip_prefix(b"\"") {
            let end = quoted.iter().position(|&b| b == b'"')?;
            return Some(&quoted[..end]);
        }
        let end = v.iter().position(|&b| b == b';').unwrap_or(v.len());
        return Some(trim(&v[..end]));
    }
    None
}

/// Finds `delimiter` at `from` or later, at the start of a line (or at `from` itself when
/// `at_start` allows the very first position of the body).
fn find_delimiter(body: &[u8], from: usize, delimiter: &[u8], at_start: bool) -> Option<usize> {
    let mut search = from;
    while let Some(at) = find(body, search, delimiter) {
        if (at_start && at == 0) || (at > 0 && body[at - 1] == b'\n') {
            return Some(at);
        }
        search = at + 1;
    }
    None
}

/// The end of a part's content: `end` minus the CRLF (or LF) that belongs to the delimiter.
fn strip_line_break(body: &[u8], start: usize, end: usize) -> usize {
    let mut end = end;
    if end > start && body[end - 1] == b'\n' {
        end -= 1;
        if end > start && body[end - 1] == b'\r' {
            end -= 1;
        }
    }
    end
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from > hay.len() || needle.is_empty() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn trim(s: &[u8]) -> &[u8] {
    let s = trim_start(s);
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |p| p + 1);
    &s[..end]
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    &s[start..]
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Writes `fields` as a JSON object: a name's first appearance fixes its position, a repeated
/// name gives an array of values. Invalid UTF-8 becomes U+FFFD.
pub(crate) fn write_object(out: &mut Vec<u8>, fields: &[Field<'_>]) {
    out.push(b'{');
    let mut first = true;
    for (i, field) in fields.iter().enumerate() {
        if fields[..i].iter().any(|f| f.name == field.name) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        json::write_str_lossy(out, field.name);
        out.push(b':');
        let count = fields[i..].iter().filter(|f| f.name == field.name).count();
        if count == 1 {
            json::write_str_lossy(out, field.value);
        } else {
            out.push(b'[');
            let mut first_value = true;
            for same in fields[i..].iter().filter(|f| f.name == field.name) {
                if !first_value {
                    out.push(b',');
                }
                first_value = false;
                json::write_str_lossy(out, same.value);
            }
            out.push(b']');
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &[u8], boundary: &[u8]) -> Option<String> {
        let fields = parse(body, boundary)?;
        let mut out = Vec::new();
        write_object(&mut out, &fields);
        Some(String::from_utf8(out).unwrap())
    }

    #[test]
    fn boundary_parameter() {
        let cases: [(&[u8], Option<&[u8]>); 7] = [
            (b"multipart/form-data; boundary=abc", Some(b"abc")),
            (b"multipart/form-data;boundary=\"a b\"", Some(b"a b")),
            (b"multipart/form-data; charset=x; BOUNDARY=z1 ", Some(b"z1")),
            (b"multipart/form-data", None),
            (b"multipart/form-data; boundary=", None),
            (b"multipart/form-data; boundary=\"\"", None),
            (b"multipart/form-data; xboundary=q", None),
        ];
        for (ct, want) in cases {
            assert_eq!(boundary(ct), want, "{}", String::from_utf8_lossy(ct));
        }
    }

    #[test]
    fn curl_form_body() {
        let body = b"--------------------------d74496d66958873e\r\n\
Content-Disposition: form-data; name=\"person\"\r\n\r\n\
anonymous\r\n\
--------------------------d74496d66958873e\r\n\
Content-Disposition: form-data; name=\"secret\"; filename=\"file.txt\"\r\n\
Content-Type: text/plain\r\n\r\n\
contents of the file\r\n\
--------------------------d74496d66958873e--\r\n";
        assert_eq!(
            decode(body, b"------------------------d74496d66958873e").unwrap(),
            r#"{"person":"anonymous","secret":"contents of the file"}"#
        );
    }

    #[test]
    fn repeated_names_multiline_values_and_lf_endings() {
        let body = b"preamble\n--b\nContent-Disposition: form-data; name=a\n\n1\n--b\n\
content-disposition: form-data; name=\"a\"\n\nline1\r\nline2\n--b\n\
Content-Disposition: form-data\n\nunnamed\n--b--";
        assert_eq!(decode(body, b"b").unwrap(), r#"{"a":["1","line1\r\nline2"]}"#);
    }

    #[test]
    fn lenient_endings() {
        // No close delimiter: the last part runs to the end of the body.
        let body = b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nvalue\r\n";
        assert_eq!(decode(body, b"b").unwrap(), r#"{"x":"value"}"#);
        // A delimiter-like string inside a line is content.
        let body = b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\na--b\r\n--b--";
        assert_eq!(decode(body, b"b").unwrap(), r#"{"x":"a--b"}"#);
        // Nothing that looks like a part.
        assert_eq!(decode(b"hello", b"b").unwrap(), "{}");
        assert_eq!(decode(b"", b"b").unwrap(), "{}");
        assert_eq!(decode(b"--b", b"b").unwrap(), "{}");
        assert_eq!(
            decode(b"--b\r\nContent-Disposition: form-data; name=\"x\"", b"b").unwrap(),
            r#"{"x":""}"#
        );
        assert!(decode(b"--b", b"").is_none());
    }

    #[test]
    fn binary_values_are_lossy_strings() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n\xff\x00\r\n--b--";
        assert_eq!(decode(body, b"b").unwrap(), "{\"f\":\"\u{fffd}\\u0000\"}");
    }
}
