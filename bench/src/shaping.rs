//! `bench --shaping`: the native cost of building one record value per `message.mode`, for the
//! same request: Kong's message with every `forward_*` flag on (what the filter builds by
//! default), a compiled template with header, query and body-field placeholders (the body parsed
//! once, as the filter does), and `body` mode with the json format (the body compacted). Medians
//! of interleaved batches (see `measure`); printed, never asserted.

use anyhow::{anyhow, Result};
use kafka_upstream::message::{build_message, MessageOptions, RequestView};
use kafka_upstream::template::{self, Facts};
use serde_json::json;

use crate::measure;

/// Runs the comparison for 1 KiB and 64 KiB JSON bodies and prints one line per body size.
pub fn run() -> Result<()> {
    let kong = MessageOptions {
        forward_method: true,
        forward_uri: true,
        forward_headers: true,
        forward_body: true,
    };
    let mut errors = Vec::new();
    let plan = template::compile(
        &json!({
            "type": "checkout",
            "source": "${query.source}",
            "agent": "${header.user-agent}",
            "first": "${body_json/items/0}",
            "second_name": "${body_json/items/1/name}",
            "route": "${method} ${path}",
            "received_at": "${received_at}",
            "trace": "${request_id}"
        }),
        "message.template",
        &mut errors,
    )
    .ok_or_else(|| anyhow!("template rejected: {errors:?}"))?;

    println!(
        "{:<12} {:>10} {:>12} {:>10} {:>9} {:>10}",
        "body", "kong µs", "template µs", "body µs", "tmpl/kong", "body/kong"
    );
    for (name, size) in [("1 KiB JSON", 1024), ("64 KiB JSON", 64 << 10)] {
        let body = crate::json_body(size);
        let headers: Vec<(String, Vec<u8>)> = vec![
            (":method".into(), b"POST".to_vec()),
            (":path".into(), b"/orders/checkout?source=web&tag=a".to_vec()),
            (":authority".into(), b"gateway.example.com".to_vec()),
            ("user-agent".into(), b"bench/1.0".to_vec()),
            ("x-request-id".into(), b"0d6f7a8e-2f7c-4d21-9a55-1c0e3b9f4a11".to_vec()),
            ("content-type".into(), b"application/json".to_vec()),
        ];
        let view = RequestView {
            method: "POST",
            path: b"/orders/checkout?source=web&tag=a",
            authority: Some(b"gateway.example.com"),
            headers: &headers,
            body: &body,
        };
        let mut ops: Vec<measure::Op<'_>> = vec![
            Box::new(|| {
                std::hint::black_box(build_message(&kong, &view));
                Ok(())
            }),
            Box::new(|| {
                let doc = template::body_json(view.body);
                let facts = Facts {
                    received_at_ms: 1_796_577_168_123,
                    request_id: Some(b"0d6f7a8e-2f7c-4d21-9a55-1c0e3b9f4a11"),
                    body_json: doc.as_deref(),
                    kong: &kong,
                };
                std::hint::black_box(template::render(&plan, &view, &facts));
                Ok(())
            }),
            Box::new(|| {
                let value = template::body_json(view.body).ok_or_else(|| anyhow!("the body is JSON"))?;
                std::hint::black_box(value);
                Ok(())
            }),
        ];
        let samples = measure::measure_interleaved(&mut ops)?;
        let (k, t, b) = (samples[0].median_us(), samples[1].median_us(), samples[2].median_us());
        println!(
            "{name:<12} {k:>10.2} {t:>12.2} {b:>10.2} {:>9.2} {:>10.2}",
            t / k.max(1e-9),
            b / k.max(1e-9)
        );
    }
    Ok(())
}
