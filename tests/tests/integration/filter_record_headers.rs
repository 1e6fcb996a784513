//! Kafka record headers (`headers`, Kong kafka-upstream 3.15+, plus `static_headers`) of the real
//! `kafka_upstream.wasm`, in both profiles: the v3 produce body carries each record's `headers`
//! (`[{"name":…,"value":<base64>}]`), forwarded, renamed, joined, withheld and static headers as
//! configured, in synchronous and asynchronous mode and for every target topic; a v2
//! configuration that asks for record headers is refused with one line saying why.

use crate::filter_common::*;
use kafka_upstream_tests::PROFILES;
use serde_json::{json, Value};

/// A v3 configuration with `headers` as given; the REST call's own credential header is
/// `x-api-key`.
fn v3_config(profile: host_sim::Profile, headers: Value) -> Value {
    config(
        profile,
        json!({
            "rest_proxy": {"api": "v3", "cluster_id": "lkc-1", "headers": {"X-Api-Key": "rest-secret"}},
            "headers": headers,
            "topics_query_arg": "topics",
            "allowed_topics": ["audit"],
        }),
    )
}

/// A request with the headers every case looks at: wire-case names (as Kong's engine gives
/// them), credentials, hop-by-hop headers and a repeated header.
fn request(path: &str) -> Request {
    Request::post(path, Some("application/json"), br#"{"id":1}"#)
        .header("X-Request-Id", "r-1")
        .header("x-tenant-id", "acme")
        .header("authorization", "Bearer client-secret")
        .header("x-api-key", "client-key")
        .header("connection", "keep-alive, x-hop")
        .header("keep-alive", "timeout=5")
        .header("x-hop", "1")
        .header("te", "trailers")
        .header("upgrade", "h2c")
        .header("x-tag", "a")
        .header("x-tag", "b")
}

/// One v3 record's headers as (name, decoded value) pairs; `None` when it has no `headers`.
fn record_headers(record: &Value) -> Option<Vec<(String, String)>> {
    let headers = record.get("headers")?.as_array().expect("headers is an array");
    Some(
        headers
            .iter()
            .map(|h| {
                let value = unbase64_text(h["value"].as_str().expect("value is base64 text"));
                (h["name"].as_str().expect("name is a string").to_string(), value)
            })
            .collect(),
    )
}

fn unbase64_text(text: &str) -> String {
    String::from_utf8(unbase64(text)).expect("UTF-8 value")
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

/// Produces `req` synchronously and returns the record headers of its one call.
fn produced_headers(profile: host_sim::Profile, headers: Value, req: &Request) -> Option<Vec<(String, String)>> {
    let mut gw = Gateway::new(profile, &v3_config(profile, headers));
    let call = gw.produce_with(req, V3_ACK);
    let records = call_values(&call);
    assert_eq!(records.len(), 1, "{profile}");
    record_headers(&records[0])
}

#[test]
fn allowlist_forwards_and_renames_as_kong_documents() {
    for profile in PROFILES {
        // Kong's allowlist example: include_headers, name_mappings, concatenate_by_comma.
        let headers = json!({
            "forward_http_headers_as_record_headers": true,
            "forward_all_by_default": false,
            "include_headers": ["x-request-id", "x-tenant-id", "x-correlation-id", "x-tag"],
            "name_mappings": {"x-request-id": "trace-id", "x-tenant-id": "tenant"},
            "repeated_headers_behavior": "concatenate_by_comma"
        });
        assert_eq!(
            produced_headers(profile, headers, &request("/")),
            Some(pairs(&[("trace-id", "r-1"), ("tenant", "acme"), ("x-tag", "a,b")])),
            "{profile}"
        );
    }
}

#[test]
fn blocklist_forwards_the_rest_without_hop_by_hop_headers_or_credentials() {
    for profile in PROFILES {
        // Kong's blocklist example: everything but the excluded headers, duplicates retained.
        let headers = json!({
            "forward_all_by_default": true,
            "exclude_headers": ["X-Tenant-Id", "content-length"],
            "repeated_headers_behavior": "retain_duplicates"
        });
        assert_eq!(
            produced_headers(profile, headers, &request("/")),
            Some(pairs(&[
                ("host", AUTHORITY),
                ("content-type", "application/json"),
                ("x-request-id", "r-1"),
                ("x-tag", "a"),
                ("x-tag", "b"),
            ])),
            "{profile}: no pseudo-headers, no authorization, no x-api-key (a rest_proxy.headers name), no connection, keep-alive, te, upgrade or x-hop (named by connection)"
        );
    }
}

#[test]
fn an_allowlist_may_name_a_credential_but_never_a_hop_by_hop_header() {
    for profile in PROFILES {
        let headers = json!({
            "include_headers": ["authorization", "x-api-key", "connection", "te", "x-hop", ":path"],
            "repeated_headers_behavior": "take_first"
        });
        assert_eq!(
            produced_headers(profile, headers, &request("/")),
            Some(pairs(&[
                ("authorization", "Bearer client-secret"),
                ("x-api-key", "client-key")
            ])),
            "{profile}"
        );
    }
}

#[test]
fn static_headers_are_added_and_win_over_forwarded_ones() {
    for profile in PROFILES {
        let headers = json!({
            "include_headers": ["x-request-id", "x-source"],
            "static_headers": {"x-source": "gateway-eu", "env": "prod"}
        });
        let req = request("/").header("x-source", "counterfeit");
        assert_eq!(
            produced_headers(profile, headers, &req),
            Some(pairs(&[
                ("x-request-id", "r-1"),
                ("env", "prod"),
                ("x-source", "gateway-eu")
            ])),
            "{profile}"
        );
    }
}

#[test]
fn kong_defaults_send_no_headers_member() {
    for profile in PROFILES {
        assert_eq!(produced_headers(profile, json!({}), &request("/")), None, "{profile}");
        let off = json!({"forward_http_headers_as_record_headers": false, "forward_all_by_default": true});
        assert_eq!(produced_headers(profile, off, &request("/")), None, "{profile}");
    }
}

#[test]
fn every_topic_of_a_request_gets_the_same_headers() {
    for profile in PROFILES {
        let mut gw = Gateway::new(
            profile,
            &v3_config(profile, json!({"include_headers": ["x-request-id"]})),
        );
        let stream = gw.send(&request("/?topics=orders,audit"));
        let calls = gw.calls();
        assert_eq!(calls.len(), 2, "{profile}");
        for call in &calls {
            let records = call_values(call);
            assert_eq!(
                record_headers(&records[0]),
                Some(pairs(&[("x-request-id", "r-1")])),
                "{profile} {}",
                call.headers
                    .iter()
                    .find(|(k, _)| k == ":path")
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("")
            );
        }
        for call in calls {
            gw.reply(call.token, 200, V3_ACK);
        }
        assert_eq!(gw.answer(stream), (200, SENT.to_string()), "{profile}");
    }
}

#[test]
fn asynchronous_batches_carry_each_records_headers() {
    for profile in PROFILES {
        let mut cfg = v3_config(profile, json!({"include_headers": ["x-request-id"]}));
        merge(
            &mut cfg,
            json!({"producer_async": true, "producer_async_flush_timeout": 50}),
        );
        let mut gw = Gateway::new(profile, &cfg);
        let first = gw.send(&request("/"));
        let mut second = request("/");
        second
            .headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("x-request-id"));
        let second = gw.send(&second.header("x-request-id", "r-2"));
        assert_eq!(gw.answer(first), (200, SENT.to_string()), "{profile}");
        assert_eq!(gw.answer(second), (200, SENT.to_string()), "{profile}");
        assert!(
            gw.calls().is_empty(),
            "{profile}: nothing leaves before the flush timeout"
        );
        gw.advance(100);
        let call = gw.only_call();
        let records = call_values(&call);
        assert_eq!(
            records.iter().map(record_headers).collect::<Vec<_>>(),
            vec![
                Some(pairs(&[("x-request-id", "r-1")])),
                Some(pairs(&[("x-request-id", "r-2")]))
            ],
            "{profile}"
        );
        let acks = format!("{V3_ACK}\n{V3_ACK}");
        gw.reply_with(
            call.token,
            200,
            &[("content-type", "application/json")],
            acks.as_bytes(),
        );
        assert!(gw.problems().is_empty(), "{profile}: {:?}", gw.problems());
    }
}

#[test]
fn a_v2_configuration_asking_for_record_headers_is_refused() {
    let reason = r#"headers: REST API v2 cannot carry record headers (Confluent v2, Karapace and Redpanda take none); set rest_proxy.api to "v3" or leave headers out"#;
    for profile in PROFILES {
        for headers in [
            json!({"include_headers": ["x-request-id"]}),
            json!({"forward_all_by_default": true}),
            json!({"static_headers": {"env": "prod"}}),
        ] {
            let cfg = config(profile, json!({"headers": headers}));
            let gw = Gateway::with_config_bytes(profile, cfg.to_string().as_bytes());
            assert!(!gw.configure_ok, "{profile} {headers}: accepted");
            assert_eq!(
                gw.problems(),
                vec![format!("[error] kafka-upstream: invalid configuration: {reason}")],
                "{profile} {headers}"
            );
        }
        // Headers that would send nothing are fine with v2.
        let harmless = config(profile, json!({"headers": {"include_headers": []}}));
        let mut gw = Gateway::new(profile, &harmless);
        let call = gw.produce(&request("/"));
        assert!(call_json(&call)["records"][0].get("headers").is_none(), "{profile}");
    }
}
