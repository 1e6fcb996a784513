//! The REST proxy's cost per record of a v2 binary produce batch, as the filter's asynchronous
//! producer sends it (issue 15: `make bench` part 3b found the REST proxy sharing Envoy's CPU):
//! the whole in-memory path of [`RestProxy::handle`] (routing, body, parsing, base64 decoding,
//! storing, the offsets answer), no socket.
//!
//! `cargo run --release -p host-sim-rest-proxy --example produce_batch -- [--batches N]
//! [--records N] [--value-bytes N] [--frame-bytes N]` prints the time per record; for
//! instruction counts, run it under `valgrind --tool=callgrind` with two `--batches` counts and
//! divide the difference by the records between them. Defaults: 200 records of 2,550 bytes (3.4
//! KB in base64, the bench's 1 KiB JSON POST as the filter's Kafka-shaped message), the filter's
//! default batch, its body in frames of 16 KiB as a server reads it from a socket.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper::{Method, Request};
use rest_proxy::codec::encode_base64;
use rest_proxy::{RestProxy, RestProxyConfig};

fn flag(args: &[String], name: &str, default: usize) -> Result<usize, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name}: expected a number")),
    }
}

/// A request body delivered in the frames given, as hyper delivers one read from a socket.
struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

/// A v2 produce body of `records` binary records of `value_bytes` bytes each, one value per
/// record, as the filter writes it (`{"records":[{"value":"<base64>"},...]}`).
fn batch_body(records: usize, value_bytes: usize) -> Bytes {
    let mut body = String::from("{\"records\":[");
    for i in 0..records {
        if i > 0 {
            body.push(',');
        }
        let value: Vec<u8> = (0..value_bytes).map(|j| ((i * 31 + j * 7) % 251) as u8).collect();
        body.push_str("{\"value\":\"");
        body.push_str(&encode_base64(&value));
        body.push_str("\"}");
    }
    body.push_str("]}");
    Bytes::from(body)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let batches = flag(&args, "--batches", 200)?;
    let records = flag(&args, "--records", 200)?.max(1);
    let value_bytes = flag(&args, "--value-bytes", 2550)?;
    let frame_bytes = flag(&args, "--frame-bytes", 16 * 1024)?.max(1);
    let proxy = RestProxy::new(RestProxyConfig::default())?;
    let body = batch_body(records, value_bytes);
    let started = Instant::now();
    for batch in 0..batches {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/topics/bench")
            .header("content-type", "application/vnd.kafka.binary.v2+json")
            .header("content-length", body.len())
            .body(Frames(
                (0..body.len())
                    .step_by(frame_bytes)
                    .map(|at| body.slice(at..(at + frame_bytes).min(body.len())))
                    .collect(),
            ))?;
        let response = proxy
            .handle(request)
            .await
            .map_err(|_| "the REST proxy dropped the connection")?;
        let status = response.status();
        let answer = response.into_body().collect().await?.to_bytes();
        // The first answer is read whole (every record stored); the others by status only, so
        // that the loop measures the REST proxy rather than this check.
        let stored = if batch == 0 {
            serde_json::from_slice::<serde_json::Value>(&answer)?["offsets"]
                .as_array()
                .map_or(0, |o| o.iter().filter(|o| o["error_code"].is_null()).count())
        } else {
            records
        };
        if !status.is_success() || stored != records {
            return Err(format!("expected 200 with {records} offsets, got {status} {answer:?}").into());
        }
    }
    let elapsed = started.elapsed();
    let per_record = elapsed.as_secs_f64() * 1e6 / (batches * records) as f64;
    println!(
        "{batches} batches of {records} records ({} bytes each, a {} byte body in {frame_bytes} byte frames): {per_record:.2} µs per record",
        value_bytes,
        body.len()
    );
    Ok(())
}
