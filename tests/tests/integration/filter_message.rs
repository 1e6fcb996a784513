//! What the REST proxy receives from the real `kafka_upstream.wasm`, in both profiles: the exact
//! message bytes (Kong's kafka-upstream message) for each content type and every `forward_*`
//! combination, `headers` / `uri` / `uri_args` semantics, the record key and partition, target
//! topics, the v2 (binary, json) and v3 request shapes, path prefix, static headers and the
//! call timeout.

use crate::filter_common::{
    base64, call_json, config, upstream, v2_message, Gateway, Request, AUTHORITY, FORWARD_FLAGS_MESSAGE, NOT_ALLOWED,
    SENT, TOPIC, V2_ACK, V3_ACK,
};
use host_sim::{HttpCall, LogLevel, Profile};
use kafka_upstream_tests::PROFILES;
use serde_json::{json, Value};

/// The message of a bodiless GET with the default flags (body only): Kong's handler sends the
/// empty body base64-encoded with `body_args` `{}` (no content type).
const BODILESS: &str = r#"{"body":"","body_args":{},"body_base64":true}"#;

/// Produces `req` with `cfg` on `profile`; returns the one call and its message (v2 binary).
fn produce(profile: Profile, cfg: &Value, req: &Request) -> (HttpCall, String) {
    let mut gw = Gateway::new(profile, cfg);
    let call = gw.produce(req);
    let message = v2_message(&call);
    assert!(
        serde_json::from_str::<Value>(&message).is_ok(),
        "{profile}: the message is JSON: {message}"
    );
    (call, message)
}

// ---- content types -----------------------------------------------------------------------------

const MULTIPART: &str = "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\na\r\n--XyZ\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\nb\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.txt\"\r\nContent-Type: text/plain\r\n\r\nfile content\r\n--XyZ--\r\n";
const MULTIPART_ESCAPED: &str = r#"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\na\r\n--XyZ\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\nb\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.txt\"\r\nContent-Type: text/plain\r\n\r\nfile content\r\n--XyZ--\r\n"#;

/// (case, Content-Type, body, the exact message).
fn content_type_cases() -> Vec<(&'static str, Option<&'static str>, Vec<u8>, String)> {
    let binary: &[u8] = &[0, 159, 146, 150, 255];
    vec![
        (
            "json object (compacted in body_args)",
            Some("application/json"),
            br#"{"a": 1, "b": [true, null], "s": "x/y"}"#.to_vec(),
            r#"{"body":"{\"a\": 1, \"b\": [true, null], \"s\": \"x/y\"}","body_args":{"a":1,"b":[true,null],"s":"x/y"}}"#.into(),
        ),
        (
            "json with parameters",
            Some("application/json; charset=utf-8"),
            br#"[1, "two"]"#.to_vec(),
            r#"{"body":"[1, \"two\"]","body_args":[1,"two"]}"#.into(),
        ),
        (
            "json media type in capitals",
            Some("Application/JSON"),
            br#"{"n":3.141592653589793}"#.to_vec(),
            r#"{"body":"{\"n\":3.141592653589793}","body_args":{"n":3.141592653589793}}"#.into(),
        ),
        (
            "invalid json: body raw, body_args omitted",
            Some("application/json"),
            br#"{"a":"#.to_vec(),
            r#"{"body":"{\"a\":"}"#.into(),
        ),
        (
            "json scalar: body raw, body_args omitted",
            Some("application/json"),
            br#""just a string""#.to_vec(),
            r#"{"body":"\"just a string\""}"#.into(),
        ),
        (
            "json after a byte order mark: invalid for cjson, body_args omitted",
            Some("application/json"),
            "\u{feff}{\"a\":1}".as_bytes().to_vec(),
            "{\"body\":\"\u{feff}{\\\"a\\\":1}\"}".into(),
        ),
        (
            "form-urlencoded",
            Some("application/x-www-form-urlencoded"),
            b"name=ada&lang=rust&lang=c&flag&empty=&sp=a+b%21".to_vec(),
            r#"{"body":"name=ada&lang=rust&lang=c&flag&empty=&sp=a+b%21","body_args":{"name":"ada","lang":["rust","c"],"flag":true,"empty":"","sp":"a b!"}}"#.into(),
        ),
        (
            "form-urlencoded with charset",
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
            b"k=%C3%A9".to_vec(),
            r#"{"body":"k=%C3%A9","body_args":{"k":"é"}}"#.into(),
        ),
        (
            "multipart",
            Some("multipart/form-data; boundary=XyZ"),
            MULTIPART.as_bytes().to_vec(),
            format!(
                r#"{{"body":"{MULTIPART_ESCAPED}","body_args":{{"title":"hello","tag":["a","b"],"file":"file content"}}}}"#
            ),
        ),
        (
            "multipart, quoted boundary",
            Some("multipart/form-data; boundary=\"XyZ\""),
            MULTIPART.as_bytes().to_vec(),
            format!(
                r#"{{"body":"{MULTIPART_ESCAPED}","body_args":{{"title":"hello","tag":["a","b"],"file":"file content"}}}}"#
            ),
        ),
        (
            "multipart without boundary: no body_args",
            Some("multipart/form-data"),
            MULTIPART.as_bytes().to_vec(),
            format!(r#"{{"body":"{MULTIPART_ESCAPED}"}}"#),
        ),
        (
            "text/plain exactly: raw",
            Some("text/plain"),
            b"hello \"world\"\n".to_vec(),
            r#"{"body":"hello \"world\"\n","body_args":{}}"#.into(),
        ),
        (
            "text/plain with charset: base64 (as Kong)",
            Some("text/plain; charset=utf-8"),
            b"hello".to_vec(),
            format!(r#"{{"body":"{}","body_args":{{}},"body_base64":true}}"#, base64(b"hello")),
        ),
        ("text/html exactly: raw", Some("text/html"), b"<p>hi</p>".to_vec(), r#"{"body":"<p>hi</p>","body_args":{}}"#.into()),
        ("application/xml exactly: raw", Some("application/xml"), b"<a/>".to_vec(), r#"{"body":"<a/>","body_args":{}}"#.into()),
        ("text/xml exactly: raw", Some("text/xml"), b"<a/>".to_vec(), r#"{"body":"<a/>","body_args":{}}"#.into()),
        (
            "application/soap+xml exactly: raw",
            Some("application/soap+xml"),
            b"<e/>".to_vec(),
            r#"{"body":"<e/>","body_args":{}}"#.into(),
        ),
        (
            "TEXT/PLAIN (not exactly text/plain): base64",
            Some("TEXT/PLAIN"),
            b"hi".to_vec(),
            format!(r#"{{"body":"{}","body_args":{{}},"body_base64":true}}"#, base64(b"hi")),
        ),
        (
            "missing content type: base64",
            None,
            b"plain words".to_vec(),
            format!(r#"{{"body":"{}","body_args":{{}},"body_base64":true}}"#, base64(b"plain words")),
        ),
        (
            "binary body",
            Some("application/octet-stream"),
            binary.to_vec(),
            r#"{"body":"AJ+Slv8=","body_args":{},"body_base64":true}"#.into(),
        ),
        (
            "invalid UTF-8 under text/plain: base64 (deliberate difference)",
            Some("text/plain"),
            b"ok \xff".to_vec(),
            format!(r#"{{"body":"{}","body_args":{{}},"body_base64":true}}"#, base64(b"ok \xff")),
        ),
        (
            "invalid UTF-8 under application/json: base64, no body_args",
            Some("application/json"),
            b"\"\xff\"".to_vec(),
            format!(r#"{{"body":"{}","body_base64":true}}"#, base64(b"\"\xff\"")),
        ),
        (
            "control characters and DEL escaped as cjson does",
            Some("text/plain"),
            b"a\tb\x01c\x7fd\\".to_vec(),
            r#"{"body":"a\tb\u0001c\u007fd\\","body_args":{}}"#.into(),
        ),
    ]
}

#[test]
fn each_content_type_gives_kongs_message() {
    for profile in PROFILES {
        let cfg = config(profile, json!({}));
        for (case, content_type, body, expected) in content_type_cases() {
            let (_, message) = produce(profile, &cfg, &Request::post("/ingest", content_type, &body));
            assert_eq!(message, expected, "{profile}: {case}");
        }
    }
}

#[test]
fn a_body_in_several_chunks_is_one_message() {
    for profile in PROFILES {
        let cfg = config(profile, json!({}));
        let req = Request::new("POST", "/ingest")
            .header("content-type", "application/json")
            .header("content-length", "17")
            .chunk(br#"{"parts":"#)
            .chunk(br#"[1,"#)
            .chunk(br#"2]}"#);
        let (_, message) = produce(profile, &cfg, &req);
        assert_eq!(
            message, r#"{"body":"{\"parts\":[1,2]}","body_args":{"parts":[1,2]}}"#,
            "{profile}"
        );
    }
}

#[test]
fn header_names_are_matched_whatever_their_case() {
    // Kong hands header names over as the client sent them; Envoy lowercases them.
    for profile in PROFILES {
        let cfg = config(profile, json!({}));
        let req = Request::new("POST", "/")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Content-Length", "3")
            .chunk(b"a=1");
        let (_, message) = produce(profile, &cfg, &req);
        assert_eq!(message, r#"{"body":"a=1","body_args":{"a":"1"}}"#, "{profile}");
    }
}

// ---- forward_* ---------------------------------------------------------------------------------

#[test]
fn every_forward_combination() {
    let req = Request::post("/p/x?id=7&tag=a&tag=b", Some("application/json"), br#"{"k":"v"}"#)
        .header("X-Tag", "a")
        .header("x-tag", "b");
    let method = r#""method":"POST""#;
    let headers = format!(
        r#""headers":{{"host":"{AUTHORITY}","content-type":"application/json","content-length":"9","x-tag":["a","b"]}}"#
    );
    let uri = r#""uri":"/p/x?id=7&tag=a&tag=b","uri_args":{"id":"7","tag":["a","b"]}"#;
    let body = r#""body":"{\"k\":\"v\"}","body_args":{"k":"v"}"#;
    for profile in PROFILES {
        for bits in 0..16u8 {
            let (fm, fu, fh, fb) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0, bits & 8 != 0);
            let cfg = config(
                profile,
                json!({"forward_method": fm, "forward_uri": fu, "forward_headers": fh, "forward_body": fb}),
            );
            let context = format!("{profile} method={fm} uri={fu} headers={fh} body={fb}");
            if bits == 0 {
                let gw = Gateway::with_config_bytes(profile, cfg.to_string().as_bytes());
                assert!(!gw.configure_ok, "{context}");
                assert_eq!(
                    gw.problems(),
                    vec![format!(
                        "[error] kafka-upstream: invalid configuration: {FORWARD_FLAGS_MESSAGE}"
                    )],
                    "{context}"
                );
                continue;
            }
            let mut parts: Vec<&str> = Vec::new();
            if fm {
                parts.push(method);
            }
            if fh {
                parts.push(&headers);
            }
            if fu {
                parts.push(uri);
            }
            if fb {
                parts.push(body);
            }
            let expected = format!("{{{}}}", parts.join(","));
            let (_, message) = produce(profile, &cfg, &req);
            assert_eq!(message, expected, "{context}");
        }
    }
}

#[test]
fn forward_body_false_leaves_the_body_out_even_when_one_is_sent() {
    for profile in PROFILES {
        let cfg = config(profile, json!({"forward_method": true, "forward_body": false}));
        let (_, message) = produce(profile, &cfg, &Request::post("/", Some("text/plain"), b"secret"));
        assert_eq!(message, r#"{"method":"POST"}"#, "{profile}");
    }
}

// ---- headers -----------------------------------------------------------------------------------

fn headers_only(profile: Profile) -> Value {
    config(profile, json!({"forward_headers": true, "forward_body": false}))
}

#[test]
fn headers_lowercase_repeated_as_array_host_from_authority_no_pseudo_headers() {
    for profile in PROFILES {
        let req = Request::get("/h")
            .header("User-Agent", "curl/8.7.1")
            .header("Accept", "*/*")
            .header("X-Multi", "1")
            .header("x-multi", "2")
            .header("X-MULTI", "3")
            .header("x-empty", "")
            .header("x-quote", "a \"b\" \\c");
        let (_, message) = produce(profile, &headers_only(profile), &req);
        assert_eq!(
            message,
            format!(
                r#"{{"headers":{{"host":"{AUTHORITY}","user-agent":"curl/8.7.1","accept":"*/*","x-multi":["1","2","3"],"x-empty":"","x-quote":"a \"b\" \\c"}}}}"#
            ),
            "{profile}"
        );
    }
}

#[test]
fn a_host_header_wins_over_authority() {
    for profile in PROFILES {
        let req = Request::get("/h").header("accept", "*/*").header("Host", "h.example");
        let (_, message) = produce(profile, &headers_only(profile), &req);
        assert_eq!(
            message, r#"{"headers":{"accept":"*/*","host":"h.example"}}"#,
            "{profile}"
        );
    }
}

#[test]
fn at_most_100_header_lines_as_kong() {
    for profile in PROFILES {
        let mut req = Request::get("/h");
        for i in 0..120 {
            req = req.header(&format!("x-h-{i:03}"), &i.to_string());
        }
        let (_, message) = produce(profile, &headers_only(profile), &req);
        let v: Value = serde_json::from_str(&message).unwrap();
        let h = v["headers"].as_object().unwrap();
        assert_eq!(h.len(), 100, "{profile}: host + 99 header lines");
        assert_eq!(h["host"], AUTHORITY, "{profile}");
        assert_eq!(h["x-h-098"], "98", "{profile}");
        assert!(!h.contains_key("x-h-099"), "{profile}");
    }
}

// ---- uri and uri_args --------------------------------------------------------------------------

#[test]
fn uri_and_uri_args_follow_kong_get_query() {
    let cases = [
        ("/a", r#"{"uri":"/a","uri_args":{}}"#),
        ("/a?", r#"{"uri":"/a?","uri_args":{}}"#),
        (
            "/a?x=1&x=2&flag&e=&=skip&p=%41%2b+b&bad=%zz&u=%C3%A9&a%5B%5D=1",
            r#"{"uri":"/a?x=1&x=2&flag&e=&=skip&p=%41%2b+b&bad=%zz&u=%C3%A9&a%5B%5D=1","uri_args":{"x":["1","2"],"flag":true,"e":"","p":"A+ b","bad":"%zz","u":"é","a[]":"1"}}"#,
        ),
        ("/a?k=1&k&k=", r#"{"uri":"/a?k=1&k&k=","uri_args":{"k":["1",true,""]}}"#),
        ("/p%20q?x=%20", r#"{"uri":"/p%20q?x=%20","uri_args":{"x":" "}}"#),
        ("/a?q=\"x\"", r#"{"uri":"/a?q=\"x\"","uri_args":{"q":"\"x\""}}"#),
    ];
    for profile in PROFILES {
        let cfg = config(profile, json!({"forward_uri": true, "forward_body": false}));
        for (path, expected) in cases {
            let (_, message) = produce(profile, &cfg, &Request::get(path));
            assert_eq!(message, expected, "{profile} {path}");
        }
    }
}

#[test]
fn at_most_100_query_arguments_as_kong() {
    for profile in PROFILES {
        let cfg = config(profile, json!({"forward_uri": true, "forward_body": false}));
        let query: Vec<String> = (0..110).map(|i| format!("a{i}={i}")).collect();
        let path = format!("/q?{}", query.join("&"));
        let (_, message) = produce(profile, &cfg, &Request::get(&path));
        let v: Value = serde_json::from_str(&message).unwrap();
        assert_eq!(v["uri"], path.as_str(), "{profile}");
        let args = v["uri_args"].as_object().unwrap();
        assert_eq!(args.len(), 100, "{profile}");
        assert_eq!(args["a99"], "99", "{profile}");
        assert!(!args.contains_key("a100"), "{profile}");
    }
}

// ---- key and partition -------------------------------------------------------------------------

#[test]
fn key_query_arg_becomes_the_record_key() {
    let cases: [(&str, Option<&[u8]>); 7] = [
        ("/", None),
        ("/?key=user-1", Some(b"user-1")),
        ("/?key=user%201", Some(b"user 1")),
        ("/?key=a+b%2Bc", Some(b"a b+c")),
        ("/?key", None),
        ("/?key=", None),
        ("/?other=1&key=first&key=second", Some(b"first")),
    ];
    let value = base64(BODILESS.as_bytes());
    for profile in PROFILES {
        let cfg = config(profile, json!({"key_query_arg": "key"}));
        for (path, key) in cases {
            let (call, _) = produce(profile, &cfg, &Request::get(path));
            let expected = match key {
                Some(k) => format!(r#"{{"records":[{{"value":"{value}","key":"{}"}}]}}"#, base64(k)),
                None => format!(r#"{{"records":[{{"value":"{value}"}}]}}"#),
            };
            assert_eq!(String::from_utf8(call.body).unwrap(), expected, "{profile} {path}");
        }
    }
}

#[test]
fn fixed_partition_in_v2_and_v3() {
    let value = base64(BODILESS.as_bytes());
    for profile in PROFILES {
        for partition in [0u32, 3] {
            let v2 = config(profile, json!({"partition": partition, "key_query_arg": "key"}));
            let (call, _) = produce(profile, &v2, &Request::get("/?key=k"));
            assert_eq!(
                String::from_utf8(call.body).unwrap(),
                format!(r#"{{"records":[{{"value":"{value}","key":"aw==","partition":{partition}}}]}}"#),
                "{profile} v2"
            );

            let v3 = config(
                profile,
                json!({"partition": partition, "key_query_arg": "key", "rest_proxy": {"api": "v3", "cluster_id": "lkc-1"}}),
            );
            let mut gw = Gateway::new(profile, &v3);
            let call = gw.produce_with(&Request::get("/?key=k"), V3_ACK);
            assert_eq!(
                String::from_utf8(call.body).unwrap(),
                format!(
                    r#"{{"value":{{"type":"BINARY","data":"{value}"}},"key":{{"type":"BINARY","data":"aw=="}},"partition_id":{partition}}}"#
                ),
                "{profile} v3"
            );
        }
    }
}

// ---- REST request shapes -----------------------------------------------------------------------

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn v2_binary_request() {
    for profile in PROFILES {
        let (call, message) = produce(profile, &config(profile, json!({})), &Request::get("/"));
        assert_eq!(message, BODILESS);
        let body = format!(r#"{{"records":[{{"value":"{}"}}]}}"#, base64(BODILESS.as_bytes()));
        assert_eq!(String::from_utf8(call.body.clone()).unwrap(), body, "{profile}");
        assert_eq!(
            call.headers,
            owned(&[
                (":method", "POST"),
                (":path", "/topics/orders"),
                (":authority", upstream(profile)),
                (":scheme", "http"),
                ("content-type", "application/vnd.kafka.binary.v2+json"),
                ("accept", "application/vnd.kafka.v2+json"),
                ("content-length", &body.len().to_string()),
            ]),
            "{profile}"
        );
        assert_eq!(call.upstream, upstream(profile), "{profile}");
        assert_eq!(call.timeout_ms, 10_000, "{profile}: the default timeout");
        assert!(call.trailers.is_empty(), "{profile}");
    }
}

#[test]
fn v2_json_request_embeds_the_message() {
    for profile in PROFILES {
        let cfg = config(
            profile,
            json!({"rest_proxy": {"format": "json"}, "key_query_arg": "key"}),
        );
        let req = Request::post("/?key=user-1", Some("application/json"), br#"{"a": [1, 2]}"#);
        let call = Gateway::new(profile, &cfg).produce(&req);
        let body = r#"{"records":[{"value":{"body":"{\"a\": [1, 2]}","body_args":{"a":[1,2]}},"key":"user-1"}]}"#;
        assert_eq!(String::from_utf8(call.body.clone()).unwrap(), body, "{profile}");
        assert_eq!(
            call.header("content-type"),
            Some("application/vnd.kafka.json.v2+json"),
            "{profile}"
        );
        assert_eq!(
            call.header("accept"),
            Some("application/vnd.kafka.v2+json"),
            "{profile}"
        );
        assert_eq!(
            call.header("content-length"),
            Some(body.len().to_string().as_str()),
            "{profile}"
        );
    }
}

#[test]
fn v2_json_format_keeps_the_record_valid_json_for_any_body() {
    // A body that is not UTF-8 is base64-encoded inside the message, so the embedded value is
    // still JSON; a key that is not UTF-8 becomes U+FFFD in the JSON string.
    for profile in PROFILES {
        let cfg = config(
            profile,
            json!({"rest_proxy": {"format": "json"}, "key_query_arg": "key"}),
        );
        let call = Gateway::new(profile, &cfg).produce(&Request::post("/?key=%FFk", Some("text/plain"), &[0xff, 0]));
        assert_eq!(
            String::from_utf8(call.body).unwrap(),
            format!(
                r#"{{"records":[{{"value":{{"body":"/wA=","body_args":{{}},"body_base64":true}},"key":"{}k"}}]}}"#,
                char::REPLACEMENT_CHARACTER
            ),
            "{profile}"
        );
    }
}

#[test]
fn static_content_type_and_accept_replace_the_filters() {
    for profile in PROFILES {
        let cfg = config(
            profile,
            json!({"rest_proxy": {"headers": {"Content-Type": "application/vnd.kafka.binary.v2+json; charset=utf-8"}}}),
        );
        let call = Gateway::new(profile, &cfg).produce(&Request::get("/"));
        let len = call.body.len().to_string();
        assert_eq!(
            call.headers,
            owned(&[
                (":method", "POST"),
                (":path", "/topics/orders"),
                (":authority", upstream(profile)),
                (":scheme", "http"),
                ("content-type", "application/vnd.kafka.binary.v2+json; charset=utf-8"),
                ("accept", "application/vnd.kafka.v2+json"),
                ("content-length", &len),
            ]),
            "{profile}"
        );
    }
}

#[test]
fn v3_binary_and_json_requests() {
    for profile in PROFILES {
        for (format, expected_value) in [
            (
                "binary",
                format!(r#"{{"type":"BINARY","data":"{}"}}"#, base64(br#"{"method":"PUT"}"#)),
            ),
            ("json", r#"{"type":"JSON","data":{"method":"PUT"}}"#.to_string()),
        ] {
            let cfg = config(
                profile,
                json!({
                    "rest_proxy": {"api": "v3", "cluster_id": "lkc-1", "format": format},
                    "forward_method": true, "forward_body": false, "key_query_arg": "key"
                }),
            );
            let mut gw = Gateway::new(profile, &cfg);
            let call = gw.produce_with(&Request::new("PUT", "/?key=user-1"), V3_ACK);
            let body = format!(
                r#"{{"value":{expected_value},"key":{{"type":"BINARY","data":"{}"}}}}"#,
                base64(b"user-1")
            );
            assert_eq!(
                String::from_utf8(call.body.clone()).unwrap(),
                body,
                "{profile} {format}"
            );
            assert_eq!(
                call.headers,
                owned(&[
                    (":method", "POST"),
                    (":path", "/v3/clusters/lkc-1/topics/orders/records"),
                    (":authority", upstream(profile)),
                    (":scheme", "http"),
                    ("content-type", "application/json"),
                    ("accept", "application/json"),
                    ("content-length", &body.len().to_string()),
                ]),
                "{profile} {format}"
            );
        }
    }
}

#[test]
fn path_prefix_is_normalised() {
    let cases = [
        (json!({"path_prefix": ""}), "/topics/orders"),
        (json!({"path_prefix": "kafka"}), "/kafka/topics/orders"),
        (json!({"path_prefix": "/kafka/"}), "/kafka/topics/orders"),
        (json!({"path_prefix": "/a/b"}), "/a/b/topics/orders"),
        (
            json!({"path_prefix": "/rest/", "api": "v3", "cluster_id": "c/1"}),
            "/rest/v3/clusters/c%2F1/topics/orders/records",
        ),
    ];
    for profile in PROFILES {
        for (rest_proxy, path) in &cases {
            let cfg = config(profile, json!({ "rest_proxy": rest_proxy }));
            let ack = if rest_proxy.get("api").is_some() {
                V3_ACK
            } else {
                V2_ACK
            };
            let call = Gateway::new(profile, &cfg).produce_with(&Request::get("/"), ack);
            assert_eq!(call.header(":path"), Some(*path), "{profile} {rest_proxy}");
        }
    }
}

#[test]
fn static_headers_authority_scheme_and_timeout() {
    for profile in PROFILES {
        let cfg = config(
            profile,
            json!({"rest_proxy": {
                "authority": "rest.internal:8082",
                "scheme": "https",
                "timeout": 2500,
                "headers": {
                    "Authorization": "Basic dXNlcjpwYXNz",
                    "X-Trace": "1",
                    "Accept": "application/json",
                    "content-length": "1",
                    "Host": "evil",
                    "transfer-encoding": "chunked"
                }
            }}),
        );
        let call = Gateway::new(profile, &cfg).produce(&Request::get("/"));
        let len = call.body.len().to_string();
        assert_eq!(
            call.headers,
            owned(&[
                (":method", "POST"),
                (":path", "/topics/orders"),
                (":authority", "rest.internal:8082"),
                (":scheme", "https"),
                ("content-type", "application/vnd.kafka.binary.v2+json"),
                ("accept", "application/json"),
                ("content-length", &len),
                ("authorization", "Basic dXNlcjpwYXNz"),
                ("x-trace", "1"),
            ]),
            "{profile}"
        );
        assert_eq!(
            call.upstream,
            upstream(profile),
            "{profile}: upstream, not authority, routes the call"
        );
        assert_eq!(call.timeout_ms, 2500, "{profile}");
    }
}

// ---- target topics -----------------------------------------------------------------------------

fn topics_config(profile: Profile) -> Value {
    config(
        profile,
        json!({"topics_query_arg": "topic-list", "allowed_topics": ["orders-eu", "orders-us", "x/y"]}),
    )
}

#[test]
fn topics_query_arg_picks_the_targets() {
    let cases: [(&str, &[&str]); 8] = [
        ("/", &["/topics/orders"]),
        ("/?topic-list", &["/topics/orders"]),
        ("/?topic-list=", &["/topics/orders"]),
        ("/?topic-list=,%20,", &["/topics/orders"]),
        ("/?topic-list=orders", &["/topics/orders"]),
        ("/?topic-list=orders-eu", &["/topics/orders-eu"]),
        ("/?topic-list=x%2Fy", &["/topics/x%2Fy"]),
        (
            "/?topic-list=orders-eu,%20orders-us%20,orders-eu,&topic-list=orders",
            &["/topics/orders-eu", "/topics/orders-us", "/topics/orders"],
        ),
    ];
    for profile in PROFILES {
        for (path, expected) in cases {
            let mut gw = Gateway::new(profile, &topics_config(profile));
            let stream = gw.send(&Request::get(path));
            let calls = gw.calls();
            let paths: Vec<&str> = calls.iter().map(|c| c.header(":path").unwrap()).collect();
            assert_eq!(paths, expected, "{profile} {path}");
            // One call per topic, the same record in each.
            assert!(calls.iter().all(|c| c.body == calls[0].body), "{profile} {path}");
            assert_eq!(v2_message(&calls[0]), BODILESS);
            for (i, call) in calls.iter().enumerate() {
                assert!(
                    !gw.answered(stream),
                    "{profile} {path}: answered before call {i} was back"
                );
                gw.reply(call.token, 200, V2_ACK);
            }
            assert_eq!(gw.answer(stream), (200, SENT.to_string()), "{profile} {path}");
        }
    }
}

#[test]
fn a_topic_outside_the_allowlist_is_400_and_nothing_is_sent() {
    let cases = [
        ("/?topic-list=topic3", "topic3"),
        ("/?topic-list=orders-eu,topic3,topic4", "topic3, topic4"),
        ("/?topic-list=orders&topic-list=ORDERS", "ORDERS"),
    ];
    for profile in PROFILES {
        for (path, refused) in cases {
            for req in [
                Request::get(path),
                Request::post(path, Some("application/json"), br#"{"a":1}"#),
            ] {
                let mut gw = Gateway::new(profile, &topics_config(profile));
                let stream = gw.send(&req);
                assert_eq!(gw.answer(stream), (400, NOT_ALLOWED.to_string()), "{profile} {path}");
                assert!(gw.calls().is_empty(), "{profile} {path}");
                assert_eq!(
                    gw.actions(stream),
                    vec![("on_request_headers", Some("Pause".into()))],
                    "{profile} {path}"
                );
                assert_eq!(
                    gw.logs_at(LogLevel::Warn),
                    vec![format!(
                        "kafka-upstream: sending message to the following topics is not allowed: ({refused})"
                    )],
                    "{profile} {path}"
                );
                assert!(gw.logs_at(LogLevel::Error).is_empty(), "{profile} {path}");
            }
        }
    }
}

#[test]
fn an_empty_allowlist_as_kong_encodes_it_allows_only_the_topic() {
    for profile in PROFILES {
        let cfg = config(profile, json!({"topics_query_arg": "t", "allowed_topics": {}}));
        let mut gw = Gateway::new(profile, &cfg);
        let refused = gw.send(&Request::get("/?t=other"));
        assert_eq!(gw.answer(refused), (400, NOT_ALLOWED.to_string()), "{profile}");
        let call = gw.produce(&Request::get("/?t=orders"));
        assert_eq!(
            call.header(":path"),
            Some(format!("/topics/{TOPIC}").as_str()),
            "{profile}"
        );
    }
}

#[test]
fn the_record_is_exactly_the_message_bytes() {
    // Binary format: base64-decoding the record value gives the message bytes, byte for byte,
    // including non-ASCII text (copied as UTF-8, not \u-escaped).
    for profile in PROFILES {
        let cfg = config(profile, json!({}));
        let (call, message) = produce(
            profile,
            &cfg,
            &Request::post("/", Some("text/plain"), "crème brûlée €".as_bytes()),
        );
        assert_eq!(message, r#"{"body":"crème brûlée €","body_args":{}}"#, "{profile}");
        assert_eq!(
            call_json(&call)["records"][0]["value"],
            base64(message.as_bytes()),
            "{profile}"
        );
    }
}
