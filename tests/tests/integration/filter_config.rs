//! `proxy_on_configure` of the real `kafka_upstream.wasm` in both profiles: valid configurations
//! are accepted (and take effect), each kind of invalid one is rejected with exactly one error
//! log line naming the field (every problem of a configuration in that one line) — whether the
//! configuration arrives as JSON object text (Envoy's StringValue, Kong with a `.meta.json`) or
//! as a JSON string holding that text — and a filter left without a configuration answers 500
//! rather than producing anything.

use crate::filter_common::{
    config, upstream, Gateway, Request, FORWARD_FLAGS_MESSAGE, NOT_CONFIGURED, TOPIC, V2_ACK, V3_ACK,
};
use host_sim::{LogLevel, Profile};
use kafka_upstream_tests::PROFILES;
use serde_json::{json, Value};

/// The two ways a configuration reaches `proxy_on_configure`.
fn encodings(config: &Value) -> [(&'static str, Vec<u8>); 2] {
    let text = config.to_string();
    let as_string = Value::String(text.clone()).to_string();
    [("object", text.into_bytes()), ("string", as_string.into_bytes())]
}

/// Valid configurations, with the REST path and timeout of the call they make for `GET /`.
fn valid(profile: Profile) -> Vec<(&'static str, Value, String, u32)> {
    let up = upstream(profile);
    vec![
        (
            "minimal",
            config(profile, json!({})),
            format!("/topics/{TOPIC}"),
            10_000,
        ),
        (
            "README example",
            json!({
                "topic": "orders",
                "rest_proxy": {
                    "upstream": up,
                    "authority": "rest-proxy:8082",
                    "api": "v2",
                    "headers": { "authorization": "Basic dXNlcjpwYXNz" },
                    "timeout": 5000
                },
                "forward_method": true,
                "forward_uri": true,
                "forward_headers": false,
                "forward_body": true,
                "topics_query_arg": "topic-list",
                "allowed_topics": ["orders-eu", "orders-us"],
                "key_query_arg": "key",
                "max_body_size": 1048576,
                "error_handling": { "return_error_message": true }
            }),
            "/topics/orders".into(),
            5000,
        ),
        (
            "every field, v3",
            json!({
                "topic": "orders",
                "rest_proxy": {
                    "upstream": up,
                    "authority": "rest.internal",
                    "scheme": "https",
                    "path_prefix": "kafka/",
                    "api": "v3",
                    "cluster_id": "lkc-1",
                    "format": "json",
                    "headers": { "X-Api-Key": "k" },
                    "timeout": 1
                },
                "forward_method": false,
                "forward_uri": false,
                "forward_headers": true,
                "forward_body": false,
                "topics_query_arg": "t",
                "allowed_topics": {},
                "key_query_arg": "k",
                "partition": 2147483647,
                "max_body_size": 0,
                "error_handling": {},
                "headers": {
                    "forward_http_headers_as_record_headers": true,
                    "forward_all_by_default": true,
                    "include_headers": [],
                    "exclude_headers": ["cookie"],
                    "name_mappings": {"x-request-id": "trace-id"},
                    "repeated_headers_behavior": "take_first",
                    "static_headers": {"source": "gateway"}
                }
            }),
            "/kafka/v3/clusters/lkc-1/topics/orders/records".into(),
            1,
        ),
        (
            "limits",
            config(
                profile,
                json!({
                    "topic": "t".repeat(249),
                    "rest_proxy": {"timeout": 2147483646, "path_prefix": ""},
                    "partition": 0,
                    "max_body_size": 67108864,
                    "allowed_topics": [],
                    "forward_body": true
                }),
            ),
            format!("/topics/{}", "t".repeat(249)),
            2_147_483_646,
        ),
    ]
}

#[test]
fn valid_configurations_are_accepted_in_both_encodings_and_take_effect() {
    for profile in PROFILES {
        for (name, cfg, path, timeout) in valid(profile) {
            let v3 = cfg["rest_proxy"]["api"] == "v3";
            for (encoding, bytes) in encodings(&cfg) {
                let mut gw = Gateway::with_config_bytes(profile, &bytes);
                assert!(
                    gw.configure_ok,
                    "{profile} {name} ({encoding}): rejected: {:?}",
                    gw.problems()
                );
                assert_eq!(gw.problems(), Vec::<String>::new(), "{profile} {name} ({encoding})");
                let call = gw.produce_with(&Request::get("/"), if v3 { V3_ACK } else { V2_ACK });
                assert_eq!(
                    call.header(":path"),
                    Some(path.as_str()),
                    "{profile} {name} ({encoding})"
                );
                assert_eq!(call.timeout_ms, timeout, "{profile} {name} ({encoding})");
                assert_eq!(call.upstream, upstream(profile), "{profile} {name} ({encoding})");
            }
        }
    }
}

/// Sets `value` at `path` (dot-separated) in `target`, `Value::Null` included; `None` removes it.
fn set(target: &mut Value, path: &str, value: Option<Value>) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap();
    let mut at = target;
    for p in parts {
        at = at.get_mut(p).unwrap_or_else(|| panic!("no {p} in the base config"));
    }
    let map = at.as_object_mut().expect("object");
    match value {
        Some(v) => {
            map.insert(last.to_string(), v);
        }
        None => {
            map.remove(last);
        }
    }
}

/// Invalid configurations: (what is changed in the minimal config, the value — `None` removes
/// the key —, the exact reason the log line gives).
fn invalid() -> Vec<(&'static str, Option<Value>, &'static str)> {
    vec![
        ("topic", None, "topic: required"),
        (
            "topic",
            Some(json!("")),
            "topic: expected a string of 1 to 249 characters",
        ),
        (
            "topic",
            Some(json!("t".repeat(250))),
            "topic: expected a string of 1 to 249 characters",
        ),
        (
            "topic",
            Some(json!(5)),
            "topic: expected a string of 1 to 249 characters",
        ),
        (
            "topic",
            Some(Value::Null),
            "topic: null is not accepted, the field is required (expected a string of 1 to 249 characters)",
        ),
        ("topics", Some(json!(["a"])), "topics: unknown field"),
        ("rest_proxy", None, "rest_proxy: required"),
        (
            "rest_proxy",
            Some(json!("kafka_rest")),
            "rest_proxy: expected an object",
        ),
        ("rest_proxy.upstream", None, "rest_proxy.upstream: required"),
        (
            "rest_proxy.upstream",
            Some(json!("")),
            "rest_proxy.upstream: expected a string of 1 to 1024 characters",
        ),
        (
            "rest_proxy.url",
            Some(json!("http://x")),
            "rest_proxy.url: unknown field",
        ),
        (
            "rest_proxy.authority",
            Some(json!(["a"])),
            "rest_proxy.authority: expected a string of 1 to 1024 characters",
        ),
        (
            "rest_proxy.scheme",
            Some(json!("ftp")),
            r#"rest_proxy.scheme: expected one of "http", "https""#,
        ),
        (
            "rest_proxy.api",
            Some(json!("v1")),
            r#"rest_proxy.api: expected one of "v2", "v3""#,
        ),
        (
            "rest_proxy.api",
            Some(json!("v3")),
            r#"rest_proxy.cluster_id: required when rest_proxy.api is "v3""#,
        ),
        (
            "rest_proxy.cluster_id",
            Some(json!("")),
            "rest_proxy.cluster_id: expected a string of 1 to 255 characters",
        ),
        (
            "rest_proxy.format",
            Some(json!("avro")),
            r#"rest_proxy.format: expected one of "binary", "json""#,
        ),
        (
            "rest_proxy.path_prefix",
            Some(json!(5)),
            "rest_proxy.path_prefix: expected a string of at most 1024 characters",
        ),
        (
            "rest_proxy.headers",
            Some(json!(["authorization: x"])),
            "rest_proxy.headers: expected an object of header names to string values",
        ),
        (
            "rest_proxy.headers",
            Some(json!({":path": "/x"})),
            r#"rest_proxy.headers: header name ":path" must not be empty or start with ':'"#,
        ),
        (
            "rest_proxy.headers",
            Some(json!({"x-n": 1})),
            "rest_proxy.headers.x-n: expected a string",
        ),
        (
            "rest_proxy.timeout",
            Some(json!(0)),
            "rest_proxy.timeout: expected an integer from 1 to 2147483646",
        ),
        (
            "rest_proxy.timeout",
            Some(json!(2147483647u64)),
            "rest_proxy.timeout: expected an integer from 1 to 2147483646",
        ),
        (
            "rest_proxy.timeout",
            Some(json!("1000")),
            "rest_proxy.timeout: expected an integer from 1 to 2147483646",
        ),
        (
            "rest_proxy.timeout",
            Some(json!(1.5)),
            "rest_proxy.timeout: expected an integer from 1 to 2147483646",
        ),
        (
            "forward_method",
            Some(json!("yes")),
            "forward_method: expected true or false",
        ),
        ("forward_uri", Some(json!(1)), "forward_uri: expected true or false"),
        (
            "forward_headers",
            Some(Value::Null),
            "forward_headers: null is not accepted, leave the key out for the default (false)",
        ),
        ("forward_body", Some(json!(false)), FORWARD_FLAGS_MESSAGE),
        (
            "topics_query_arg",
            Some(json!("")),
            "topics_query_arg: expected a string of 1 to 255 characters",
        ),
        (
            "allowed_topics",
            Some(json!("a,b")),
            "allowed_topics: expected an array of strings",
        ),
        (
            "allowed_topics",
            Some(json!({"a": "b"})),
            "allowed_topics: expected an array of strings",
        ),
        (
            "allowed_topics",
            Some(json!(["a", ""])),
            "allowed_topics[1]: expected a string of 1 to 249 characters",
        ),
        (
            "allowed_topics",
            Some(json!(["a", 7])),
            "allowed_topics[1]: expected a string of 1 to 249 characters",
        ),
        (
            "key_query_arg",
            Some(json!(true)),
            "key_query_arg: expected a string of 1 to 255 characters",
        ),
        (
            "partition",
            Some(json!(-1)),
            "partition: expected an integer from 0 to 2147483647",
        ),
        (
            "partition",
            Some(json!(2147483648u64)),
            "partition: expected an integer from 0 to 2147483647",
        ),
        (
            "partition",
            Some(Value::Null),
            "partition: null is not accepted, leave the key out to leave it unset",
        ),
        (
            "max_body_size",
            Some(json!(67108865)),
            "max_body_size: expected an integer from 0 to 67108864",
        ),
        (
            "max_body_size",
            Some(json!(-1)),
            "max_body_size: expected an integer from 0 to 67108864",
        ),
        (
            "error_handling",
            Some(json!(true)),
            "error_handling: expected an object",
        ),
        (
            "error_handling",
            Some(json!({"verbose": true})),
            "error_handling.verbose: unknown field",
        ),
        (
            "error_handling",
            Some(json!({"return_error_message": "yes"})),
            "error_handling.return_error_message: expected true or false",
        ),
        // Record headers (filter/src/record_headers.rs); the base configuration is v2.
        (
            "headers",
            Some(json!({"repeated_headers_behavior": "merge"})),
            r#"headers.repeated_headers_behavior: expected one of "retain_duplicates", "concatenate_by_comma", "take_first""#,
        ),
        (
            "headers",
            Some(json!({"exclude_header": []})),
            "headers.exclude_header: unknown field (did you mean `exclude_headers`?)",
        ),
        (
            "headers",
            Some(json!({"name_mappings": {"x-a": 1}})),
            "headers.name_mappings.x-a: expected a string",
        ),
        (
            "headers",
            Some(json!({"include_headers": ["x-request-id"]})),
            r#"headers: REST API v2 cannot carry record headers (Confluent v2, Karapace and Redpanda take none); set rest_proxy.api to "v3" or leave headers out"#,
        ),
        (
            "headers",
            Some(json!({"static_headers": {"env": "prod"}})),
            r#"headers: REST API v2 cannot carry record headers (Confluent v2, Karapace and Redpanda take none); set rest_proxy.api to "v3" or leave headers out"#,
        ),
    ]
}

/// Asserts the gateway rejected its configuration with exactly the one error line `reason`.
fn assert_rejected(gw: &Gateway, reason: &str, context: &str) {
    assert!(!gw.configure_ok, "{context}: accepted");
    assert_eq!(
        gw.problems(),
        vec![format!("[error] kafka-upstream: invalid configuration: {reason}")],
        "{context}"
    );
}

#[test]
fn each_invalid_kind_is_rejected_with_one_line_naming_the_field() {
    for profile in PROFILES {
        for (path, value, reason) in invalid() {
            let mut cfg = config(profile, json!({}));
            set(&mut cfg, path, value.clone());
            for (encoding, bytes) in encodings(&cfg) {
                let gw = Gateway::with_config_bytes(profile, &bytes);
                assert_rejected(&gw, reason, &format!("{profile} {path}={value:?} ({encoding})"));
            }
        }
    }
}

#[test]
fn every_forward_flag_false_is_kongs_error() {
    for profile in PROFILES {
        let cfg = config(
            profile,
            json!({"forward_method": false, "forward_uri": false, "forward_headers": false, "forward_body": false}),
        );
        for (encoding, bytes) in encodings(&cfg) {
            let gw = Gateway::with_config_bytes(profile, &bytes);
            assert_rejected(&gw, FORWARD_FLAGS_MESSAGE, &format!("{profile} ({encoding})"));
        }
    }
}

#[test]
fn every_error_is_in_the_one_log_line() {
    for profile in PROFILES {
        let mut cfg = config(profile, json!({"forward_bdy": false}));
        set(&mut cfg, "rest_proxy.timeout", Some(Value::Null));
        set(&mut cfg, "rest_proxy.api", Some(json!("v3")));
        set(&mut cfg, "partition", Some(json!(-1)));
        let reasons = [
            "forward_bdy: unknown field (did you mean `forward_body`?)",
            "rest_proxy.timeout: null is not accepted, leave the key out for the default (10000)",
            r#"rest_proxy.cluster_id: required when rest_proxy.api is "v3""#,
            "partition: expected an integer from 0 to 2147483647",
        ];
        for (encoding, bytes) in encodings(&cfg) {
            let gw = Gateway::with_config_bytes(profile, &bytes);
            assert_rejected(&gw, &reasons.join("; "), &format!("{profile} ({encoding})"));
        }
    }
}

#[test]
fn configurations_that_are_not_an_object() {
    // (bytes, exact reason, or a prefix when the reason quotes the JSON parser)
    let cases: [(&[u8], &str, bool); 8] = [
        (b"", "configuration: missing (expected a JSON object)", true),
        (b"  \n", "configuration: missing (expected a JSON object)", true),
        (b"[1]", "configuration: expected an object", true),
        (
            b"null",
            "configuration: null is not accepted (expected an object)",
            true,
        ),
        (br#""[]""#, "configuration: expected an object", true),
        (br#""{\"topic\":\"orders\"}""#, "rest_proxy: required", true),
        (b"{", "configuration: invalid JSON: ", false),
        (br#""{topic""#, "configuration: invalid JSON inside the string: ", false),
    ];
    for profile in PROFILES {
        for (bytes, reason, exact) in cases {
            let gw = Gateway::with_config_bytes(profile, bytes);
            let context = format!("{profile} {:?}", String::from_utf8_lossy(bytes));
            if exact {
                assert_rejected(&gw, reason, &context);
            } else {
                assert!(!gw.configure_ok, "{context}: accepted");
                let problems = gw.problems();
                assert_eq!(problems.len(), 1, "{context}: {problems:?}");
                let prefix = format!("[error] kafka-upstream: invalid configuration: {reason}");
                assert!(problems[0].starts_with(&prefix), "{context}: {problems:?}");
                assert!(
                    problems[0].len() > prefix.len(),
                    "{context}: the parser's reason is given: {problems:?}"
                );
            }
        }
    }
}

#[test]
fn a_filter_without_valid_configuration_answers_500_and_sends_nothing() {
    for profile in PROFILES {
        let mut gw = Gateway::with_config_bytes(profile, br#"{"topic":"orders"}"#);
        assert!(!gw.configure_ok);
        for req in [
            Request::get("/"),
            Request::post("/", Some("application/json"), br#"{"a":1}"#),
        ] {
            let stream = gw.send(&req);
            assert_eq!(gw.answer(stream), (500, NOT_CONFIGURED.to_string()), "{profile}");
            assert_eq!(
                gw.actions(stream),
                vec![("on_request_headers", Some("Pause".to_string()))],
                "{profile}"
            );
            assert!(gw.calls().is_empty(), "{profile}");
        }
        assert_eq!(
            gw.logs_at(LogLevel::Error),
            vec![
                "kafka-upstream: invalid configuration: rest_proxy: required".to_string(),
                "kafka-upstream: no valid configuration, answering 500".to_string(),
                "kafka-upstream: no valid configuration, answering 500".to_string(),
            ],
            "{profile}"
        );
    }
}
