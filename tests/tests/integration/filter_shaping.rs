//! Message shaping and keys on the real `kafka_upstream.wasm`, in both profiles: `message.mode`
//! `template` (placeholders with their JSON types, interpolation, the host's clock and request
//! id), `body` (raw bytes with the binary format, the body's JSON with the json format, 400 for
//! a body that is not JSON), keys from `key_header` and `key_body_field` after
//! `key_query_arg`, the shaped record and its key buffered in asynchronous mode, and templates
//! rejected at configuration with the field's path.

use crate::filter_common::{base64, call_json, config, v2_message, Gateway, Request, SENT, V3_ACK};
use host_sim::{LogLevel, Profile};
use kafka_upstream_tests::PROFILES;
use serde_json::{json, Value};

const ORDER: &str = r#"{"order": {"id": "o-1", "qty": 3, "tags": ["a", "b"]}, "note": "x\"y"}"#;

fn order_request(path: &str) -> Request {
    Request::post(path, Some("application/json"), ORDER.as_bytes()).header("x-tenant", "acme")
}

/// The record key of a v2 binary call, decoded.
fn v2_key(call: &host_sim::HttpCall) -> Option<String> {
    let v = call_json(call);
    let key = v["records"][0].get("key")?.as_str()?.to_string();
    let bytes = base64_decode(&key);
    Some(String::from_utf8(bytes).expect("key is UTF-8"))
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).expect("base64")
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS.mmmZ` (Howard Hinnant's
/// `days_from_civil`), checking the shape on the way.
fn ms_of_rfc3339(text: &str) -> u64 {
    let b = text.as_bytes();
    assert!(
        b.len() == 24 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z',
        "{text}"
    );
    let n = |from: usize, to: usize| text[from..to].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19);
    (secs * 1000 + n(20, 23)) as u64
}

// ---- template ----------------------------------------------------------------------------------

#[test]
fn template_fills_placeholders_with_their_types() {
    for profile in PROFILES {
        let cfg = config(
            profile,
            json!({"message": {"mode": "template", "template": {
                "type": "order.created",
                "tenant": "${header.x-tenant}",
                "order": "${body_json/order}",
                "qty": "${body_json/order/qty}",
                "second_tag": "${body_json/order/tags/1}",
                "missing": "${body_json/nope}",
                "source": "${method} ${path} (${query.src})",
                "flag": "${query.flag}",
                "note": "note: ${body_json/note}",
                "literal": "$${method}",
                "version": 2
            }}}),
        );
        let mut gw = Gateway::new(profile, &cfg);
        let call = gw.produce(&order_request("/orders?src=web&flag"));
        assert_eq!(
            v2_message(&call),
            r#"{"flag":true,"literal":"${method}","missing":null,"note":"note: x\"y","order":{"id":"o-1","qty":3,"tags":["a","b"]},"qty":3,"second_tag":"b","source":"POST /orders (web)","tenant":"acme","type":"order.created","version":2}"#,
            "{profile}"
        );
    }
}

#[test]
fn template_gateway_facts_receive_time_and_request_id() {
    for profile in PROFILES {
        let cfg = config(
            profile,
            json!({"message": {"mode": "template", "template": {
                "at": "${received_at}", "at_ms": "${received_at_ms}", "id": "${request_id}"
            }}}),
        );
        // With an x-request-id header (Envoy adds one unless generate_request_id is off): that id.
        let mut gw = Gateway::new(profile, &cfg);
        let before_ms = gw.vm.now_ns() / 1_000_000;
        let call = gw.produce(&Request::get("/r").header("x-request-id", "rid-7"));
        let after_ms = gw.vm.now_ns() / 1_000_000;
        let v: Value = serde_json::from_str(&v2_message(&call)).unwrap();
        assert_eq!(v["id"], "rid-7", "{profile}");
        let at_ms = v["at_ms"].as_u64().expect("received_at_ms is an integer");
        assert!(
            (before_ms..=after_ms).contains(&at_ms),
            "{profile}: {at_ms} in {before_ms}..={after_ms}"
        );
        assert_eq!(
            ms_of_rfc3339(v["at"].as_str().unwrap()),
            at_ms,
            "{profile}: {}",
            v["at"]
        );

        // Without one: Kong's nginx $request_id (32 hex digits), null on Envoy.
        let call = gw.produce(&Request::get("/r"));
        let v: Value = serde_json::from_str(&v2_message(&call)).unwrap();
        match profile {
            Profile::Kong => {
                let id = v["id"].as_str().expect("Kong gives $request_id");
                assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            }
            Profile::Envoy => assert_eq!(v["id"], Value::Null),
        }
    }
}

#[test]
fn template_with_kong_message_and_json_format_on_v3() {
    for profile in PROFILES {
        let cfg = config(
            profile,
            json!({
                "rest_proxy": {"api": "v3", "cluster_id": "lkc-1", "format": "json"},
                "forward_method": true,
                "message": {"mode": "template", "template": {"kong": "${kong}", "headers_seen": "${header.x-tenant}"}}
            }),
        );
        let mut gw = Gateway::new(profile, &cfg);
        let call = gw.produce_with(&order_request("/o"), V3_ACK);
        let body = String::from_utf8(call.body.clone()).unwrap();
        assert!(
            body.contains(r#""value":{"type":"JSON","data":{"headers_seen":"acme","kong":{"method":"POST","body":"#),
            "{profile}: {body}"
        );
        let v = call_json(&call);
        assert_eq!(v["value"]["data"]["kong"]["body_args"]["order"]["qty"], 3);
    }
}

// ---- body mode ---------------------------------------------------------------------------------

#[test]
fn body_mode_binary_sends_the_body_bytes_exactly() {
    let raw: &[u8] = &[0, 159, 146, 150, 255, b'{'];
    for profile in PROFILES {
        let cfg = config(profile, json!({"message": {"mode": "body"}}));
        let mut gw = Gateway::new(profile, &cfg);
        let call = gw.produce(&Request::post("/b", Some("application/octet-stream"), raw));
        assert_eq!(call_json(&call)["records"][0]["value"], base64(raw), "{profile}");
        // Kong's schema-registry example shape: a JSON body is the record, as sent.
        let call = gw.produce(&order_request("/b"));
        assert_eq!(
            call_json(&call)["records"][0]["value"],
            base64(ORDER.as_bytes()),
            "{profile}"
        );
    }
}

#[test]
fn body_mode_json_embeds_the_body_document_and_refuses_other_bodies() {
    for profile in PROFILES {
        let cfg = config(
            profile,
            json!({"rest_proxy": {"format": "json"}, "message": {"mode": "body"}}),
        );
        let mut gw = Gateway::new(profile, &cfg);
        // Any Content-Type: the body's JSON, compacted, numbers as sent.
        let call = gw.produce(&Request::post("/b", Some("text/plain"), b" [1, 2.50, {\"a\": null}] "));
        assert_eq!(
            String::from_utf8(call.body.clone()).unwrap(),
            r#"{"records":[{"value":[1,2.50,{"a":null}]}]}"#,
            "{profile}"
        );
        for bad in [&b"not json"[..], b"{\"a\":", b"\xff"] {
            let stream = gw.send(&Request::post("/b", Some("application/json"), bad));
            assert!(gw.calls().is_empty(), "{profile}: nothing is sent");
            assert_eq!(
                gw.answer(stream),
                (
                    400,
                    r#"{"message":"Bad Request","error":"the request body is not a JSON document"}"#.to_string()
                ),
                "{profile}"
            );
        }
        assert!(gw
            .logs_at(LogLevel::Warn)
            .iter()
            .any(|l| l.contains("not a JSON document")));
    }
}

// ---- keys --------------------------------------------------------------------------------------

#[test]
fn key_from_header() {
    for profile in PROFILES {
        let cfg = config(profile, json!({"key_header": "X-User"}));
        let mut gw = Gateway::new(profile, &cfg);
        let call = gw.produce(&Request::get("/k").header("x-user", "u-42"));
        assert_eq!(v2_key(&call).as_deref(), Some("u-42"), "{profile}");
        let call = gw.produce(&Request::get("/k"));
        assert_eq!(v2_key(&call), None, "{profile}: no header, no key");
    }
}

#[test]
fn key_from_body_field() {
    for profile in PROFILES {
        let cfg = config(profile, json!({"key_body_field": "/order/id"}));
        let mut gw = Gateway::new(profile, &cfg);
        let call = gw.produce(&order_request("/k"));
        assert_eq!(v2_key(&call).as_deref(), Some("o-1"), "{profile}");
        // A number's JSON text; a body that is not JSON gives no key.
        let cfg = config(profile, json!({"key_body_field": "/order/qty"}));
        let mut gw = Gateway::new(profile, &cfg);
        assert_eq!(v2_key(&gw.produce(&order_request("/k"))).as_deref(), Some("3"));
        let call = gw.produce(&Request::post("/k", Some("text/plain"), b"plain"));
        assert_eq!(v2_key(&call), None, "{profile}");
    }
}

#[test]
fn key_precedence_query_arg_then_header_then_body_field() {
    for profile in PROFILES {
        let cfg = config(
            profile,
            json!({"key_query_arg": "key", "key_header": "x-user", "key_body_field": "/order/id"}),
        );
        let mut gw = Gateway::new(profile, &cfg);
        let both = order_request("/k?key=from-query").header("x-user", "from-header");
        assert_eq!(v2_key(&gw.produce(&both)).as_deref(), Some("from-query"), "{profile}");
        let header = order_request("/k").header("x-user", "from-header");
        assert_eq!(
            v2_key(&gw.produce(&header)).as_deref(),
            Some("from-header"),
            "{profile}"
        );
        assert_eq!(
            v2_key(&gw.produce(&order_request("/k?key="))).as_deref(),
            Some("o-1"),
            "{profile}"
        );
    }
}

// ---- configuration -----------------------------------------------------------------------------

#[test]
fn bad_templates_are_rejected_with_the_field_path() {
    let cases: [(Value, &str); 4] = [
        (
            json!({"user": {"id": "${usr}"}}),
            "message.template.user.id: unknown placeholder ${usr} (expected one of ",
        ),
        (
            json!(["ok", "x ${method"]),
            "message.template[1]: unterminated placeholder ${method",
        ),
        (
            json!({"h": "${header.}"}),
            "message.template.h: placeholder ${header.} must name a header",
        ),
        (
            json!({"p": "${body_json/a~9}"}),
            r#"message.template.p: placeholder ${body_json/a~9}: JSON pointer "/a~9""#,
        ),
    ];
    for profile in PROFILES {
        for (template, want) in &cases {
            let cfg = config(profile, json!({"message": {"mode": "template", "template": template}}));
            let gw = Gateway::with_config_bytes(profile, cfg.to_string().as_bytes());
            assert!(!gw.configure_ok, "{profile}: {template} accepted");
            let problems = gw.problems();
            assert_eq!(problems.len(), 1, "{profile}: {problems:?}");
            assert!(
                problems[0].starts_with(&format!("[error] kafka-upstream: invalid configuration: {want}")),
                "{profile}: {problems:?}"
            );
        }
        let cfg = config(profile, json!({"message": {"mode": "template"}}));
        let gw = Gateway::with_config_bytes(profile, cfg.to_string().as_bytes());
        assert_eq!(
            gw.problems(),
            vec![
                r#"[error] kafka-upstream: invalid configuration: message.template: required when message.mode is "template""#
            ]
        );
    }
}

// ---- asynchronous mode -------------------------------------------------------------------------

/// The buffered record carries the shaped value and the body-field key: both are built at the
/// request, before the root context sends the batch.
#[test]
fn async_mode_buffers_the_shaped_record_and_its_key() {
    for profile in PROFILES {
        let cfg = config(
            profile,
            json!({
                "producer_async": true,
                "producer_async_flush_timeout": 5,
                "message": {"mode": "template", "template": {"id": "${body_json/order/id}", "m": "${method}"}},
                "key_body_field": "/order/id"
            }),
        );
        let mut gw = Gateway::new(profile, &cfg);
        let stream = gw.send(&order_request("/a"));
        assert_eq!(gw.answer(stream), (200, SENT.to_string()), "{profile}");
        assert!(gw.calls().is_empty(), "{profile}: nothing is sent from the request");
        gw.advance(50);
        let call = gw.only_call();
        assert_eq!(v2_message(&call), r#"{"id":"o-1","m":"POST"}"#, "{profile}");
        assert_eq!(v2_key(&call).as_deref(), Some("o-1"), "{profile}");
    }
}
