//! A driver for counting the asynchronous producer's instructions per callback (issue 15, "no
//! batching tail"): run it under `valgrind --tool=callgrind` and read the inclusive cost of
//! `accept_one` (what one accepted request's callback pays in the producer) and of `tick` (a
//! tick that sends one full batch, the worst tick of a steady load), each divided by its calls.
//!
//! `cargo run --release -p kafka-upstream --example async_flush_profile -- [BATCHES] [v2|v3]`:
//! BATCHES rounds of 200 records of 2,560 bytes (3,416 bytes of base64 each, a ~700 KB request
//! at the default limits), each round one flushing tick and its acknowledgement.
//! Build with debug symbols (`CARGO_PROFILE_RELEASE_DEBUG=true`) so callgrind names them.

use std::hint::black_box;
use std::rc::Rc;

use kafka_upstream::host::{DispatchError, Host, HostKind, Level};
use kafka_upstream::metrics::MetricUpdate;
use kafka_upstream::producer::Producer;
use kafka_upstream::rest::ReplyView;

const RECORDS_PER_BATCH: usize = 200;
const MESSAGE_BYTES: usize = 2_560;

/// A host that takes every dispatch and keeps only the last token.
#[derive(Default)]
struct Sink {
    next: u32,
    body_bytes: usize,
}

impl Host for Sink {
    fn dispatch(&mut self, _: &str, headers: &[u8], body: &[u8], _: u32) -> Result<u32, DispatchError> {
        black_box(&headers);
        self.body_bytes += black_box(body).len();
        self.next += 1;
        Ok(self.next)
    }
    fn request_body(&mut self, _: usize) -> Option<Vec<u8>> {
        None
    }
    fn respond(&mut self, _: u32, _: &[u8], _: &[u8]) {}
    fn log(&mut self, _: Level, _: &str) {}
    fn now_ms(&mut self) -> u64 {
        0
    }
    fn host_kind(&mut self) -> HostKind {
        HostKind::Envoy
    }
    fn metric(&mut self, _: MetricUpdate) {}
}

#[inline(never)]
fn accept_one(p: &mut Producer, now: u64, topics: &[String], message: Vec<u8>) {
    p.enqueue(now, topics, None, message).expect("accepted");
}

#[inline(never)]
fn tick(p: &mut Producer, host: &mut Sink, now: u64) {
    p.on_tick(host, now);
}

#[inline(never)]
fn acknowledge(p: &mut Producer, token: u32, reply: &ReplyView<'_>, now: u64) {
    assert!(p.on_response(token, reply, now));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let batches: usize = args.get(1).map_or(20, |s| s.parse().expect("BATCHES is a number"));
    let api = args.get(2).map_or("v2", String::as_str);
    let rest_proxy = match api {
        "v2" => r#"{"upstream":"kafka_rest","timeout":500}"#.to_string(),
        "v3" => r#"{"upstream":"kafka_rest","timeout":500,"api":"v3","cluster_id":"lkc-1"}"#.to_string(),
        other => panic!("api {other:?}: v2 or v3"),
    };
    let text = format!(r#"{{"topic":"t","rest_proxy":{rest_proxy},"producer_async":true}}"#);
    let config = Rc::new(kafka_upstream::config::parse(text.as_bytes()).expect("config"));
    let mut producer = Producer::new(config);
    let mut host = Sink::default();
    let topics = vec!["t".to_string()];
    let message: Vec<u8> = (0..MESSAGE_BYTES).map(|i| b'a' + (i % 26) as u8).collect();
    let v2_ack = format!(
        "{{\"offsets\":[{}]}}",
        vec![r#"{"partition":0,"offset":1}"#; RECORDS_PER_BATCH].join(",")
    );
    let v3_ack = vec![r#"{"error_code":200,"partition_id":0,"offset":1}"#; RECORDS_PER_BATCH].join("\r\n");
    let ack = if api == "v2" { v2_ack } else { v3_ack };
    let mut now = 0;
    for _ in 0..batches {
        for _ in 0..RECORDS_PER_BATCH {
            accept_one(&mut producer, now, &topics, message.clone());
        }
        now += 1;
        let before = host.next;
        tick(&mut producer, &mut host, now);
        assert_eq!(host.next, before + 1, "one full batch per tick");
        let reply = ReplyView {
            status: Some(b"200"),
            dispatch_status: None,
            body: ack.as_bytes(),
        };
        acknowledge(&mut producer, host.next, &reply, now);
    }
    assert_eq!(producer.depth(), 0);
    println!(
        "{batches} batches of {RECORDS_PER_BATCH} records ({api}): {} body bytes sent",
        host.body_bytes
    );
}
