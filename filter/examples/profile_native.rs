//! A native driver for profiling the filter's per-request work (message, REST request, ack
//! classification) on the inputs `make bench` uses, e.g.
//!
//! ```text
//! cargo build --release -p kafka-upstream --example profile_native
//! valgrind --tool=callgrind target/release/examples/profile_native json1k 2000
//! ```
//!
//! Cases: `get`, `json1k`, `json64k`, `bin1m`; the second argument is the iteration count.

use kafka_upstream::config;
use kafka_upstream::message::{build_message, RequestView};
use kafka_upstream::rest::{self, ReplyView};

const ACK: &[u8] = br#"{"offsets":[{"partition":0,"offset":1,"error_code":null,"error":null}],"key_schema_id":null,"value_schema_id":null}"#;

/// The bench's JSON body of about `size` bytes (bench/src/main.rs `json_body`).
fn json_body(size: usize) -> Vec<u8> {
    let mut out = String::from("{\"items\":[");
    let mut i = 0;
    while out.len() + 64 < size {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item-{i}\",\"price\":{}.5,\"tags\":[\"a\",\"b/c\"]}}",
            i * 3
        ));
        i += 1;
    }
    out.push_str("]}");
    while out.len() < size {
        out.insert(out.len() - 2, ' ');
    }
    out.into_bytes()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let case = args.first().map_or("json1k", String::as_str);
    let iterations: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1000);
    let (method, content_type, body): (&str, Option<&str>, Vec<u8>) = match case {
        "get" => ("GET", None, Vec::new()),
        "json1k" => ("POST", Some("application/json"), json_body(1024)),
        "json64k" => ("POST", Some("application/json"), json_body(64 << 10)),
        "bin1m" => (
            "POST",
            Some("application/octet-stream"),
            (0..(1u32 << 20))
                .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
                .collect(),
        ),
        other => panic!("unknown case {other}"),
    };
    let config = serde_json::json!({
        "topic": "bench",
        "rest_proxy": {"upstream": "kafka_rest"},
        "forward_method": true, "forward_uri": true, "forward_headers": true, "forward_body": true,
        "max_body_size": 4 << 20,
    })
    .to_string();
    let cfg = config::parse(config.as_bytes()).expect("valid configuration");
    let mut headers: Vec<(String, Vec<u8>)> = [
        (":method", method),
        (":path", "/orders/checkout?source=web&tag=a&tag=b"),
        (":authority", "gateway.example.com"),
        (":scheme", "http"),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("x-request-id", "0d6f7a8e-2f7c-4d21-9a55-1c0e3b9f4a11"),
        ("x-forwarded-for", "10.1.2.3"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
    .collect();
    if let Some(ct) = content_type {
        headers.push(("content-type".into(), ct.as_bytes().to_vec()));
        headers.push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    let mut total = 0usize;
    for _ in 0..iterations {
        let view = RequestView {
            method,
            path: &headers[1].1,
            authority: Some(&headers[2].1),
            headers: &headers,
            body: &body,
        };
        let message = build_message(&cfg.message, &view);
        let request = rest::build_request(&cfg.rest_proxy, &cfg.topic, None, cfg.partition, &message);
        let reply = ReplyView {
            status: Some(b"200"),
            dispatch_status: None,
            body: ACK,
        };
        let outcome = rest::classify(&cfg.rest_proxy.api, &reply);
        assert_eq!(outcome, rest::Outcome::Acknowledged);
        total += std::hint::black_box(request).body.len();
    }
    println!("{case}: {iterations} requests, {total} request body bytes");
}
