//! Query-string and form-body arguments, parsed the way OpenResty's `ngx.req.get_uri_args` /
//! `ngx.req.get_post_args` parse them (which is what Kong's `kong.request.get_query()` and
//! `kong.request.get_body()` return), and written as the JSON object Kong's cjson produces.
//!
//! Rules (lua-nginx-module `ngx_http_lua_parse_args` and `ngx_http_lua_unescape_uri`):
//! - arguments are separated by `&` only;
//! - `key=value` gives a string, a bare `key` gives `true`, `key=` gives `""`;
//! - keys and values are percent-decoded and `+` becomes a space; a `%` not followed by two hex
//!   digits is kept as a literal `%` (current lua-nginx-module behaviour);
//! - an argument whose decoded key is empty is skipped;
//! - at most [`MAX_ARGS`] arguments are kept (Kong's default `max_args`), the rest is ignored;
//! - a repeated key becomes an array of its values in order of appearance.

use std::borrow::Cow;

use crate::json;

/// How many arguments Kong's `get_query()` / `get_body()` return by default; later ones are
/// dropped.
pub const MAX_ARGS: usize = 100;

/// One decoded argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg<'a> {
    /// The decoded key (never empty).
    pub key: Cow<'a, [u8]>,
    /// The decoded value, or `None` for an argument given without `=` (Kong's `true`).
    pub value: Option<Cow<'a, [u8]>>,
}

/// Parses an `&`-separated argument list (a query string without its `?`, or a form body).
pub fn parse(input: &[u8], max: usize) -> Vec<Arg<'_>> {
    let mut args = Vec::new();
    for segment in input.split(|&b| b == b'&') {
        if args.len() >= max {
            break;
        }
        let (key, value) = match segment.iter().position(|&b| b == b'=') {
            Some(eq) => (&segment[..eq], Some(&segment[eq + 1..])),
            None => (segment, None),
        };
        let key = unescape(key);
        if key.is_empty() {
            continue;
        }
        args.push(Arg {
            key,
            value: value.map(unescape),
        });
    }
    args
}

/// The query string of a request path (the part after the first `?`), empty when there is none.
pub fn query_of(path: &[u8]) -> &[u8] {
    match path.iter().position(|&b| b == b'?') {
        Some(q) => &path[q + 1..],
        None => &[],
    }
}

/// Percent-decodes `input` with `+` as space, borrowing when nothing needs decoding.
pub fn unescape(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.iter().any(|&b| b == b'%' || b == b'+') {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (input.get(i + 1).and_then(hex), input.get(i + 2).and_then(hex)) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Writes `args` as a JSON object: a key's first appearance fixes its position, a repeated key
/// gives an array, a value-less argument gives `true`. Invalid UTF-8 becomes U+FFFD.
pub(crate) fn write_object(out: &mut Vec<u8>, args: &[Arg<'_>]) {
    out.push(b'{');
    let mut first = true;
    for (i, arg) in args.iter().enumerate() {
        if args[..i].iter().any(|a| a.key == arg.key) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        json::write_str_lossy(out, &arg.key);
        out.push(b':');
        let count = args[i..].iter().filter(|a| a.key == arg.key).count();
        if count == 1 {
            write_value(out, arg);
        } else {
            out.push(b'[');
            let mut first_value = true;
            for same in args[i..].iter().filter(|a| a.key == arg.key) {
                if !first_value {
                    out.push(b',');
                }
                first_value = false;
                write_value(out, same);
            }
            out.push(b']');
        }
    }
    out.push(b'}');
}

fn write_value(out: &mut Vec<u8>, arg: &Arg<'_>) {
    match &arg.value {
        Some(v) => json::write_str_lossy(out, v),
        None => out.extend_from_slice(b"true"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(query: &str) -> String {
        let mut out = Vec::new();
        write_object(&mut out, &parse(query.as_bytes(), MAX_ARGS));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn kong_pdk_documented_example() {
        // kong.request.get_query() doc: GET /test?foo=hello%20world&bar=baz&zzz&blo=&bar=bla&bar
        assert_eq!(
            object("foo=hello%20world&bar=baz&zzz&blo=&bar=bla&bar"),
            r#"{"foo":"hello world","bar":["baz","bla",true],"zzz":true,"blo":""}"#
        );
    }

    #[test]
    fn edge_cases() {
        let cases = [
            ("", "{}"),
            ("&&&", "{}"),
            ("=x&=&a", r#"{"a":true}"#),
            ("a+b=c+d", r#"{"a b":"c d"}"#),
            ("a%2Bb=%3d%26", r#"{"a+b":"=&"}"#),
            ("k=v=w", r#"{"k":"v=w"}"#),
            ("%zz=1", r#"{"%zz":"1"}"#),
            ("a=%2z", r#"{"a":"%2z"}"#),
            ("a=100%", r#"{"a":"100%"}"#),
            ("a=%4", r#"{"a":"%4"}"#),
            ("a=%C3%A9", r#"{"a":"é"}"#),
            ("a=%FF", "{\"a\":\"\u{fffd}\"}"),
            ("q=\"x\"", r#"{"q":"\"x\""}"#),
            ("%20=sp", r#"{" ":"sp"}"#),
            ("a=1&b=2&a=3", r#"{"a":["1","3"],"b":"2"}"#),
            ("a&a", r#"{"a":[true,true]}"#),
        ];
        for (query, want) in cases {
            assert_eq!(object(query), want, "query {query:?}");
        }
    }

    #[test]
    fn keeps_at_most_max_args() {
        let query: Vec<String> = (0..150).map(|i| format!("k{i}=v")).collect();
        let query = query.join("&");
        let args = parse(query.as_bytes(), MAX_ARGS);
        assert_eq!(args.len(), 100);
        assert_eq!(&*args[99].key, b"k99");
    }

    #[test]
    fn query_of_path() {
        assert_eq!(query_of(b"/kafka"), b"");
        assert_eq!(query_of(b"/kafka?"), b"");
        assert_eq!(query_of(b"/kafka?a=1?b"), b"a=1?b");
    }

    #[test]
    fn unescape_borrows_plain_input() {
        assert!(matches!(unescape(b"plain"), Cow::Borrowed(_)));
        assert!(matches!(unescape(b"a+b"), Cow::Owned(_)));
    }
}
