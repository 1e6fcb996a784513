//! The asynchronous producer (`producer_async`): a bounded buffer of records per topic, sent in
//! batches, retried with backoff, with the REST proxy's health gating new requests. Plain Rust,
//! driven by the time its callers pass in; it owns no clock and makes no host call except through
//! [`Host::dispatch`].
//!
//! The life of a record:
//! 1. [`Producer::enqueue`] accepts it (the client then gets 200) unless the REST proxy is
//!    unhealthy or the buffer holds `producer_async_buffering_limits_messages_in_memory` records
//!    (waiting, retrying and in flight all count); then the client gets 503 and nothing is kept.
//! 2. [`Producer::on_tick`] sends a topic's batch when it is due: it has
//!    `producer_request_limits_messages_per_request` records, or its body would reach
//!    `producer_request_limits_bytes_per_request`, or its oldest record has waited
//!    `producer_async_flush_timeout`, or a retry's backoff has passed. One REST request carries the
//!    batch (v2: the `records` array; v3: streaming mode). A record larger than the byte limit is
//!    sent alone. The record was encoded into its topic's pending batch body when it was
//!    accepted ([`rest::BatchBody`]; the request that brings a record pays for it), so a tick
//!    only closes bodies already built, never does work proportional to a batch, and dispatches
//!    at most [`MAX_TICK_DISPATCH_BYTES`] of them. Ready retries go first: their batch encodes
//!    its retried records again (or sends the kept body of a failed batch made of exactly them)
//!    and copies in the encoded bytes of the fresh records that fit; the fresh records left are
//!    then cut into batches again by copying their bytes, so every batch holds exactly the
//!    records the greedy fill gives it. With a schema registry the bodies are built at the flush
//!    (the ids are only known then).
//! 3. [`Producer::on_response`] classifies the reply per record ([`rest::classify_batch`]):
//!    acknowledged records leave the buffer; each failed one is retried after
//!    `producer_request_retries_backoff_timeout × 2^(attempt − 1)` (capped at [`MAX_BACKOFF_MS`], or
//!    the base when larger) until it has been sent `producer_request_retries_max_attempts` times;
//!    then it is dropped, counted and logged with its topic, the count and the last error. Only
//!    the failed records of a partly acknowledged batch are sent again. When the REST proxy
//!    processed a batch of several records and acknowledged none of them (a 2xx reply that
//!    settles no record, 413 or 422), one bad record may have sunk the rest: Redpanda's
//!    pandaproxy writes or refuses a partition's batch as a whole and answers one `offsets`
//!    entry per partition (`src/v/pandaproxy/rest/proxy.cc`, `src/v/kafka/client/client.cc`
//!    `produce_records`). Each of those records is then retried in a batch of its own
//!    (isolated), so the good ones are written and only the bad one uses up its attempts. When
//!    every partition entry of such a reply says written, so was every record
//!    ([`rest::classify_batch`]); when some partitions were written and others refused, which
//!    records were written is not known and the isolated retries may write some twice
//!    (at least once).
//!
//! Per-record results are read whatever the HTTP status ([`rest::classify_batch`]): Karapace
//! answers 422 when some records of a batch failed, with one `offsets` entry per record, and the
//! others are written; they count as sent and are never sent again. A failed record is retried
//! like any other, whatever its per-record error code: REST proxies' codes do not reliably tell a
//! record that can never be written (too large, a partition that does not exist) from a passing
//! failure (Karapace's code 1 covers its own produce timeouts too), and a retry costs at most
//! `producer_request_retries_max_attempts` sends of that record before it is dropped and counted.
//!
//! Health: a flush succeeds when at least one of its records is acknowledged: the REST proxy and
//! Kafka took records, so a partial failure (Confluent's 200 or Karapace's 422 with some
//! per-record errors) never counts against health. A flush in which nothing was acknowledged
//! fails (no reply, a timeout, a host refusal, an error status, or every record refused) —
//! with one exception: when the REST proxy answered every record, and every record of the flush
//! had already failed in a reply that acknowledged other records, or is isolated, the flush counts
//! neither way. Those records have shown that they, not the path to Kafka, are the problem (an oversized
//! record retried alone would otherwise close the gate for every client after
//! `producer_async_health_failure_threshold` retries); fresh records failing alongside them
//! still count, so an outage that begins while such a record is retried is still seen. After
//! `producer_async_health_failure_threshold` consecutive failed flushes the REST proxy is
//! unhealthy: new requests get 503 at once, buffered records wait (their attempts are not used
//! up), and every `producer_async_health_probe_interval` one probe (`GET /topics`, v3
//! `GET /v3/clusters/{id}`) is sent. After `producer_async_health_recovery_threshold` successful
//! probes (or flushes still in flight when it turned unhealthy) in a row it is healthy again and
//! the buffer drains (the state machine: [`health::Health`]). Delivery is at least once: a
//! timed-out batch may have been written and is sent again.
//!
//! Logs and metric updates are collected here and drained by the glue after each callback
//! ([`Producer::take_logs`], [`Producer::take_metric_updates`]), so the HTTP contexts that
//! enqueue and the root context that flushes report them the same way.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::Range;
use std::rc::Rc;

use crate::config::{Config, RestProxy};
use crate::host::{Host, Level};
use crate::metrics::{Metric, MetricUpdate};
use crate::rest::{self, BatchBody, Failure, Outcome, ReplyView, BATCH_SEPARATOR_LEN};

pub mod health;

use health::{Change, Health};

/// The most REST proxy calls (batches) in flight at once per VM; further due batches wait for a
/// later tick. Keeps a burst from opening hundreds of connections (or tripping Envoy's circuit
/// breakers, which would count as failed flushes).
pub const MAX_CALLS_IN_FLIGHT: usize = 64;

/// The most body bytes one tick dispatches (the first batch of a tick always goes, whatever its
/// size). A batch's body is built as its records arrive, so dispatching it costs the guest O(1),
/// but the host still copies the body out of the guest's memory, and the requests waiting behind
/// the tick wait for that copy: 4 MiB is four batches at Kong's default
/// `producer_request_limits_bytes_per_request` (1 MiB), a few hundred microseconds of copying,
/// and still 200 MiB/s of records at the longest tick period ([`MAX_TICK_MS`]), far more than one
/// worker accepts; a backlog beyond it goes out over the next ticks.
pub const MAX_TICK_DISPATCH_BYTES: usize = 4 << 20;

/// The longest retry backoff, unless `producer_request_retries_backoff_timeout` is longer.
pub const MAX_BACKOFF_MS: u64 = 30_000;

/// The longest tick period: a full batch waits at most this long for the tick that sends it.
pub const MAX_TICK_MS: u32 = 20;

/// The tick period for a configuration: [`MAX_TICK_MS`], or the flush timeout, backoff or probe
/// interval when one is shorter (never below 1 ms).
pub fn tick_period_ms(config: &Config) -> u32 {
    let p = &config.producer;
    let mut period = MAX_TICK_MS.min(p.flush_timeout_ms).min(p.probe_interval_ms);
    if p.backoff_ms > 0 {
        period = period.min(p.backoff_ms);
    }
    period.max(1)
}

/// Why a message was not accepted (the client gets 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The REST proxy is unhealthy.
    Unhealthy,
    /// The buffer holds its limit of records.
    BufferFull,
}

impl Refusal {
    /// The `error` of the 503 answer.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Unhealthy => "the Kafka REST proxy is unhealthy",
            Refusal::BufferFull => "the message buffer is full",
        }
    }
}

/// Running totals since the producer started (what the counters add up to).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records accepted into the buffer.
    pub accepted: u64,
    /// Records acknowledged.
    pub sent: u64,
    /// Failed record sends.
    pub failed: u64,
    /// Records scheduled for a retry.
    pub retried: u64,
    /// Records given up.
    pub dropped: u64,
    /// Records refused with 503.
    pub rejected: u64,
    /// REST proxy requests made for batches (dispatched or refused by the host).
    pub batches: u64,
}

/// One buffered record.
#[derive(Debug, Clone)]
struct Record {
    key: Option<Rc<[u8]>>,
    /// The record's encoded v3 `headers` array (empty: none); shared like `message`.
    headers: Rc<[u8]>,
    /// Kong's message bytes; shared by the records of one request sent to several topics.
    message: Rc<[u8]>,
    /// Its exact size in a request body.
    size: usize,
    /// Sends so far.
    attempts: u32,
    /// When it must be sent: enqueue time + flush timeout, or failure time + backoff.
    due_at: u64,
    /// Arrival order, to keep retries in order among themselves.
    seq: u64,
    /// It failed in a reply that acknowledged other records: the REST proxy and Kafka took
    /// records then, so its failures are the record's, not the REST proxy's (see the health
    /// rule in the module documentation).
    failed_beside_ack: bool,
    /// Its batch of several records was processed by the REST proxy and refused as a whole, so
    /// it is retried in a batch of its own (see the module documentation); its failures then
    /// count like those of a record that failed beside acknowledged ones.
    isolated: bool,
}

/// How a batch body is built: from records encoded as they arrive (the REST request of the
/// configured API and format), or whole at the flush (with a schema registry, whose ids are only
/// known then, see [`crate::rest::schema`]).
#[derive(Debug, Clone, Copy)]
struct Encoding<'a> {
    /// The REST proxy settings and the partition the records are written with; `None`: the body
    /// is built at the flush.
    prebuilt: Option<(&'a RestProxy, Option<u32>)>,
}

/// Fresh records that go out together: one future batch, its body built as its records arrive.
#[derive(Debug)]
struct Chunk {
    records: Vec<Record>,
    /// The body so far (prebuilt encoding only).
    body: Option<BatchBody>,
    /// Where each record lies in `body`, parallel to `records` (prebuilt encoding only).
    spans: Vec<Range<usize>>,
    /// The batch's size as the limits count it: the envelope, the records and the separators.
    bytes: usize,
}

impl Chunk {
    /// A chunk whose first record has `size` bytes. Its vectors are sized for a full batch of
    /// such records (within the byte limit), so that no request's record pays for copying the
    /// body grown so far when it outgrows its allocation.
    fn new(limits: &Limits, encoding: Encoding<'_>, size: usize) -> Self {
        let expected = (limits.bytes / (size + BATCH_SEPARATOR_LEN).max(1)).clamp(1, limits.records);
        let prebuilt = encoding.prebuilt.is_some();
        Chunk {
            records: Vec::with_capacity(expected),
            body: encoding.prebuilt.map(|(rp, _)| {
                let capacity = limits
                    .bytes
                    .min(limits.envelope + expected * (size + BATCH_SEPARATOR_LEN))
                    .max(size);
                BatchBody::with_capacity(&rp.api, capacity)
            }),
            spans: Vec::with_capacity(if prebuilt { expected } else { 0 }),
            bytes: limits.envelope,
        }
    }

    fn add_size(&mut self, size: usize) {
        if !self.records.is_empty() {
            self.bytes += BATCH_SEPARATOR_LEN;
        }
        self.bytes += size;
    }
}

/// A failed batch's body kept for its retry: when the same records, in the same order, make up
/// the retry's batch, this body goes again as it is (a 5xx or a timeout says nothing about the
/// records, and their retry batch is usually the same one).
#[derive(Debug)]
struct KeptBody {
    /// The records' `seq`s in body order.
    seqs: Vec<u64>,
    body: Vec<u8>,
}

/// The records waiting for one topic.
#[derive(Debug)]
struct Queue {
    topic: String,
    /// Never sent, in arrival order (so `due_at` never decreases), cut into the batches a flush
    /// sends: each chunk is exactly what [`Queue::take_batch`] takes when no retry comes first
    /// (the same greedy fill within the limits), its body built record by record.
    fresh: VecDeque<Chunk>,
    /// Fresh records.
    fresh_len: usize,
    /// Sum of the fresh records' sizes.
    fresh_bytes: usize,
    /// Waiting for a retry, sorted by `(due_at, seq)`.
    retry: VecDeque<Record>,
    /// Bodies of failed batches whose records all wait for their retry.
    kept: Vec<KeptBody>,
}

/// A batch's limits.
#[derive(Debug, Clone, Copy)]
struct Limits {
    records: usize,
    bytes: usize,
    envelope: usize,
}

impl Limits {
    /// Whether a record of `size` bytes still fits in a batch of `count` records and `bytes`.
    fn fits(&self, count: usize, bytes: usize, size: usize) -> bool {
        count == 0 || (count < self.records && bytes + BATCH_SEPARATOR_LEN + size <= self.bytes)
    }
}

/// A batch taken from a queue: its records, and its finished body unless it is built at the
/// flush (see [`Encoding`]).
#[derive(Debug)]
struct Taken {
    records: Vec<Record>,
    body: Option<Vec<u8>>,
}

impl Queue {
    fn new(topic: &str) -> Self {
        Queue {
            topic: topic.to_string(),
            fresh: VecDeque::new(),
            fresh_len: 0,
            fresh_bytes: 0,
            retry: VecDeque::new(),
            kept: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.fresh_len + self.retry.len()
    }

    /// The chunk a fresh record of `size` bytes goes into: the last one while it fits, else a
    /// new one (as [`Queue::take_batch`] fills a batch: a record that would overflow starts the
    /// next).
    fn chunk_for(&mut self, size: usize, limits: &Limits, encoding: Encoding<'_>) -> &mut Chunk {
        let fits = self
            .fresh
            .back()
            .is_some_and(|c| limits.fits(c.records.len(), c.bytes, size));
        if !fits {
            self.fresh.push_back(Chunk::new(limits, encoding, size));
        }
        self.fresh_len += 1;
        self.fresh_bytes += size;
        let chunk = self.fresh.back_mut().expect("a chunk was just ensured");
        chunk.add_size(size);
        chunk
    }

    /// Adds a fresh record, encoding it into its chunk's body.
    fn push_fresh(&mut self, record: Record, limits: &Limits, encoding: Encoding<'_>) {
        let chunk = self.chunk_for(record.size, limits, encoding);
        if let (Some(body), Some((rp, partition))) = (chunk.body.as_mut(), encoding.prebuilt) {
            let span = body.push(rp, record.key.as_deref(), &record.headers, partition, &record.message);
            chunk.spans.push(span);
        }
        chunk.records.push(record);
    }

    /// Adds a fresh record already encoded (`encoded`, prebuilt encoding only).
    fn push_fresh_encoded(&mut self, record: Record, encoded: &[u8], limits: &Limits, encoding: Encoding<'_>) {
        let chunk = self.chunk_for(record.size, limits, encoding);
        if let Some(body) = chunk.body.as_mut() {
            let span = body.push_encoded(encoded);
            chunk.spans.push(span);
        }
        chunk.records.push(record);
    }

    /// The fresh records cut into chunks again, from the front, after the first `take` of them
    /// joined `batch` (and their encoded bytes `body`): a retry batch took them, or the limits
    /// or the encoding changed. `reencode`: the encoding changed (a new configuration), so they
    /// are encoded again; otherwise their bytes are copied.
    fn recut(
        &mut self,
        limits: &Limits,
        encoding: Encoding<'_>,
        reencode: bool,
        take: usize,
        batch: &mut Vec<Record>,
        body: &mut Option<BatchBody>,
    ) {
        let old = std::mem::take(&mut self.fresh);
        self.fresh_len = 0;
        self.fresh_bytes = 0;
        let mut moved = 0;
        for chunk in old {
            let Chunk {
                records,
                body: chunk_body,
                spans,
                ..
            } = chunk;
            let chunk_body = if reencode || encoding.prebuilt.is_none() {
                None
            } else {
                chunk_body
            };
            let mut spans = spans.into_iter();
            for record in records {
                let encoded = chunk_body
                    .as_ref()
                    .zip(spans.next())
                    .map(|(b, span)| b.record_bytes(span));
                if moved < take {
                    moved += 1;
                    if let (Some(out), Some(encoded)) = (body.as_mut(), encoded) {
                        out.push_encoded(encoded);
                    } else if let (Some(out), Some((rp, partition))) = (body.as_mut(), encoding.prebuilt) {
                        out.push(rp, record.key.as_deref(), &record.headers, partition, &record.message);
                    }
                    batch.push(record);
                } else {
                    match encoded {
                        Some(encoded) => self.push_fresh_encoded(record, encoded, limits, encoding),
                        None => self.push_fresh(record, limits, encoding),
                    }
                }
            }
        }
    }

    /// Whether a batch should go now.
    fn is_due(&self, now: u64, limits: &Limits) -> bool {
        if self.retry.front().is_some_and(|r| r.due_at <= now) {
            return true;
        }
        let n = self.fresh_len;
        n > 0
            && (n >= limits.records
                || limits.envelope + self.fresh_bytes + (n - 1) * BATCH_SEPARATOR_LEN >= limits.bytes
                || self.fresh_front().is_some_and(|r| r.due_at <= now))
    }

    fn fresh_front(&self) -> Option<&Record> {
        self.fresh.front().and_then(|c| c.records.first())
    }

    /// The next batch: retries whose backoff has passed, then fresh records, in order, within
    /// the limits (at least one record). Without ready retries it is the first chunk, its body
    /// already built (closing it is O(1)). A retry batch encodes its retried records again
    /// (unless it is exactly a failed batch whose body was kept) and copies the encoded bytes
    /// of the fresh records it takes in; the fresh records left are then cut into chunks
    /// again by copying their bytes, so that every later batch holds exactly the records it
    /// always held.
    fn take_batch(&mut self, now: u64, limits: &Limits, encoding: Encoding<'_>) -> Taken {
        let ready = self.retry.partition_point(|r| r.due_at <= now);
        if ready == 0 {
            let Some(chunk) = self.fresh.pop_front() else {
                return Taken {
                    records: Vec::new(),
                    body: None,
                };
            };
            self.fresh_len -= chunk.records.len();
            self.fresh_bytes -= chunk.records.iter().map(|r| r.size).sum::<usize>();
            return Taken {
                records: chunk.records,
                body: chunk.body.map(BatchBody::finish),
            };
        }
        let mut batch: Vec<Record> = Vec::new();
        let mut bytes = limits.envelope;
        let add = |batch: &mut Vec<Record>, bytes: &mut usize, r: Record| {
            if !batch.is_empty() {
                *bytes += BATCH_SEPARATOR_LEN;
            }
            *bytes += r.size;
            batch.push(r);
        };
        // Ready retries in arrival order (records that failed in different batches have
        // different backoffs); those that do not fit go back, still ready.
        let due = sorted_by_key(self.retry.drain(..ready).collect(), |r| (r.seq, 0));
        let mut left: Vec<Record> = Vec::new();
        for r in due {
            // An isolated record goes in a batch of its own: first, or left for the next.
            let alone_ok = !r.isolated || batch.is_empty();
            let batch_open = batch.first().is_none_or(|b| !b.isolated);
            if left.is_empty() && alone_ok && batch_open && limits.fits(batch.len(), bytes, r.size) {
                add(&mut batch, &mut bytes, r);
            } else {
                left.push(r);
            }
        }
        for r in sorted_by_key(left, |r| (r.due_at, r.seq)).into_iter().rev() {
            self.retry.push_front(r);
        }
        let mut body = encoding
            .prebuilt
            .map(|(rp, partition)| self.retry_body(&batch, rp, partition));
        if batch.len() < ready || batch.first().is_some_and(|r| r.isolated) {
            // Full of retries already, or an isolated record's own batch.
            return Taken {
                records: batch,
                body: body.map(BatchBody::finish),
            };
        }
        // The fresh records that fit after the retries, from the front.
        let (mut count, mut taken) = (batch.len(), 0);
        'count: for chunk in &self.fresh {
            for r in &chunk.records {
                if !limits.fits(count, bytes, r.size) {
                    break 'count;
                }
                bytes += BATCH_SEPARATOR_LEN + r.size;
                count += 1;
                taken += 1;
            }
        }
        if taken > 0 {
            // They leave the first chunk(s), so the rest is cut again from the front.
            self.recut(limits, encoding, false, taken, &mut batch, &mut body);
        }
        Taken {
            records: batch,
            body: body.map(BatchBody::finish),
        }
    }

    /// The body of a batch of retried records: a kept body when they are exactly its records,
    /// else the records encoded again. Kept bodies of any of these records are let go.
    fn retry_body(&mut self, batch: &[Record], rp: &RestProxy, partition: Option<u32>) -> BatchBody {
        let seqs: Vec<u64> = batch.iter().map(|r| r.seq).collect();
        let mut body = None;
        if let Some(i) = self.kept.iter().position(|k| k.seqs == seqs) {
            let kept = self.kept.swap_remove(i);
            body = Some(BatchBody::reopen(&rp.api, kept.body, batch.len()));
        }
        if !self.kept.is_empty() {
            let sorted = sorted_by_key(seqs, |s| (*s, 0));
            self.kept
                .retain(|k| !k.seqs.iter().any(|s| sorted.binary_search(s).is_ok()));
        }
        body.unwrap_or_else(|| {
            let mut body = BatchBody::new(&rp.api);
            for r in batch {
                body.push(rp, r.key.as_deref(), &r.headers, partition, &r.message);
            }
            body
        })
    }

    fn push_retry(&mut self, record: Record) {
        let at = self
            .retry
            .partition_point(|r| (r.due_at, r.seq) <= (record.due_at, record.seq));
        self.retry.insert(at, record);
    }
}

/// A batch waiting for its reply.
#[derive(Debug)]
struct Batch {
    token: u32,
    queue: usize,
    records: Vec<Record>,
    /// The body sent (unless built at the flush, see [`Encoding`]), kept to send again as it is
    /// if the whole batch fails (see [`KeptBody`]) and the encoding has not changed since.
    body: Option<Vec<u8>>,
    /// [`Producer::encoding_generation`] when it was sent.
    encoding_generation: u64,
    /// When it was dispatched (ms), for the latency histogram.
    sent_at: u64,
}

/// The asynchronous producer of one VM (owned by the root context, shared with its HTTP
/// contexts).
#[derive(Debug)]
pub struct Producer {
    config: Rc<Config>,
    queues: Vec<Queue>,
    in_flight: Vec<Batch>,
    /// The token of the health probe in flight.
    probe: Option<u32>,
    /// Records held: waiting, retrying or in flight.
    depth: usize,
    health: Health,
    stats: Stats,
    next_seq: u64,
    /// Which queue the next tick serves first.
    rotation: usize,
    /// A "buffer full" line was logged and the buffer has not drained to half since.
    full_logged: bool,
    /// The plugin is shutting down ([`Producer::begin_drain`]): everything held goes out now.
    draining: bool,
    /// `schema_registry.confluent`: batches go out with the ids it holds, and wait while it has
    /// none (see [`crate::schema_registry`]).
    schema_registry: Option<Rc<RefCell<crate::schema_registry::Resolver>>>,
    logs: Vec<(Level, String)>,
    /// Counter increments not yet reported, by [`Metric::index`].
    counter_deltas: [u64; Metric::ALL.len()],
    depth_reported: Option<usize>,
    /// Counts the changes of configuration or schema registry (see [`Producer::reencode`]): a
    /// body sent before one is never sent again.
    encoding_generation: u64,
    /// Histogram samples not yet reported, in order.
    samples: Vec<MetricUpdate>,
}

impl Producer {
    /// A producer with an empty buffer and a healthy REST proxy.
    pub fn new(config: Rc<Config>) -> Self {
        Producer {
            config,
            queues: Vec::new(),
            in_flight: Vec::new(),
            probe: None,
            depth: 0,
            health: Health::new(),
            stats: Stats::default(),
            next_seq: 0,
            rotation: 0,
            full_logged: false,
            draining: false,
            schema_registry: None,
            logs: Vec::new(),
            counter_deltas: [0; Metric::ALL.len()],
            depth_reported: None,
            encoding_generation: 0,
            samples: Vec::new(),
        }
    }

    /// Uses `config` from now on; buffered records are kept and sent with it.
    pub fn reconfigure(&mut self, config: Rc<Config>) {
        self.config = config;
        self.reencode();
    }

    /// Sends batches with the schema ids of `resolver` (`None`: without a schema registry).
    /// While it has no ids, records wait in the buffer (bounded by its limit, as ever).
    pub fn set_schema_registry(&mut self, resolver: Option<Rc<RefCell<crate::schema_registry::Resolver>>>) {
        let changed = self.schema_registry.is_some() != resolver.is_some();
        self.schema_registry = resolver;
        if changed {
            self.reencode();
        }
    }

    /// Whether the REST proxy is considered healthy.
    pub fn is_healthy(&self) -> bool {
        self.health.is_healthy()
    }

    /// Records held: waiting, retrying or in flight.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Batch calls in flight.
    pub fn calls_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Running totals.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether `records` more records would be accepted now; a refusal counts them as rejected.
    /// The HTTP context asks at the request headers, so a refused client is answered at once.
    pub fn admit(&mut self, records: usize) -> Result<(), Refusal> {
        let refusal = if !self.is_healthy() || self.draining {
            Refusal::Unhealthy
        } else if self.depth + records > self.limit() {
            Refusal::BufferFull
        } else {
            return Ok(());
        };
        self.stats.rejected += records as u64;
        self.count(Metric::Rejected, records);
        if refusal == Refusal::BufferFull && !self.full_logged {
            self.full_logged = true;
            let line = format!(
                "kafka-upstream: the message buffer is full ({} messages held, limit {}): new requests get 503 until it drains",
                self.depth,
                self.limit()
            );
            self.log(Level::Warn, line);
        }
        Err(refusal)
    }

    /// Accepts one record per topic (all or none) holding `message` and `key`, without record
    /// headers, at time `now` (milliseconds).
    pub fn enqueue(
        &mut self,
        now: u64,
        topics: &[String],
        key: Option<&[u8]>,
        message: Vec<u8>,
    ) -> Result<(), Refusal> {
        self.enqueue_with_headers(now, topics, key, Vec::new(), message)
    }

    /// [`Producer::enqueue`] with record headers: `headers` is the records' encoded v3
    /// `headers` array (see [`crate::record_headers`]), empty for none.
    pub fn enqueue_with_headers(
        &mut self,
        now: u64,
        topics: &[String],
        key: Option<&[u8]>,
        headers: Vec<u8>,
        message: Vec<u8>,
    ) -> Result<(), Refusal> {
        self.admit(topics.len())?;
        let config = Rc::clone(&self.config);
        let message: Rc<[u8]> = message.into();
        let headers: Rc<[u8]> = headers.into();
        let key: Option<Rc<[u8]>> = key.map(Rc::from);
        let size = self.record_size(key.as_deref(), &headers, message.len());
        let due_at = now.saturating_add(u64::from(config.producer.flush_timeout_ms));
        let limits = self.limits();
        let encoding = self.encoding(&config);
        // The record is encoded here, by the request that brings it, into its topic's pending
        // batch body; several topics share one encoding (the same key, headers, partition and
        // message), copied.
        let mut shared: Option<Vec<u8>> = None;
        if topics.len() > 1 {
            if let Some((rp, partition)) = encoding.prebuilt {
                let mut out = Vec::with_capacity(size);
                rest::encode_record(&mut out, rp, key.as_deref(), &headers, partition, &message);
                shared = Some(out);
            }
        }
        for topic in topics {
            let seq = self.next_seq;
            self.next_seq += 1;
            let queue = self.queue_index(topic);
            let record = Record {
                key: key.clone(),
                headers: Rc::clone(&headers),
                message: Rc::clone(&message),
                size,
                attempts: 0,
                due_at,
                seq,
                failed_beside_ack: false,
                isolated: false,
            };
            let q = &mut self.queues[queue];
            match &shared {
                Some(encoded) => q.push_fresh_encoded(record, encoded, &limits, encoding),
                None => q.push_fresh(record, &limits, encoding),
            }
        }
        self.depth += topics.len();
        self.stats.accepted += topics.len() as u64;
        Ok(())
    }

    /// The tick at time `now`: sends the health probe when one is due, and, while the REST
    /// proxy is healthy, every due batch (up to [`MAX_CALLS_IN_FLIGHT`] calls).
    pub fn on_tick(&mut self, host: &mut dyn Host, now: u64) {
        self.probe_if_due(host, now);
        self.flush(host, now);
    }

    /// The reply to call `token` at time `now`. Returns false when the call is not the
    /// producer's.
    pub fn on_response(&mut self, token: u32, reply: &ReplyView<'_>, now: u64) -> bool {
        if self.probe == Some(token) {
            self.probe = None;
            let failure = rest::probe_failure(reply);
            if let Some(why) = &failure {
                self.log(
                    Level::Warn,
                    format!("kafka-upstream: health probe of the Kafka REST proxy failed: {why}"),
                );
            }
            if !self.is_healthy() {
                self.health_event(failure.is_none(), now, failure.as_deref().unwrap_or(""));
            }
            return true;
        }
        let Some(pos) = self.in_flight.iter().position(|b| b.token == token) else {
            return false;
        };
        let mut batch = self.in_flight.swap_remove(pos);
        self.count(Metric::for_reply(reply.status, reply.dispatch_status), 1);
        self.samples.push(MetricUpdate::Record(
            Metric::RestCallLatency,
            now.saturating_sub(batch.sent_at),
        ));
        let outcomes = rest::classify_batch(&self.config.rest_proxy.api, reply, batch.records.len());
        // A body encoded with a configuration replaced since is not sent again.
        let body = batch
            .body
            .take()
            .filter(|_| batch.encoding_generation == self.encoding_generation);
        self.settle(batch.queue, batch.records, outcomes, now, body);
        true
    }

    /// The plugin is shutting down but the host lets it finish (Envoy waits for `proxy_done`
    /// after `proxy_on_done` returns false): from now on every queue is sent at once, without
    /// waiting for a full batch or the flush timeout, and new records are refused (no request
    /// should arrive any more; one that does gets 503 rather than a record that may never go).
    /// Retries keep their backoff and the health rules stay: a REST proxy that is down is not
    /// hammered while the host's drain time runs. Sends what is due right away.
    pub fn begin_drain(&mut self, host: &mut dyn Host, now: u64) {
        if !self.draining {
            self.draining = true;
            if self.depth > 0 {
                let line = format!(
                    "kafka-upstream: shutting down: sending the {} buffered message(s) before the plugin stops",
                    self.depth
                );
                self.log(Level::Info, line);
            }
        }
        self.on_tick(host, now);
    }

    /// Whether nothing is held any more (no record waiting, retrying or in flight, no probe):
    /// a draining plugin may then tell the host it is done.
    pub fn is_drained(&self) -> bool {
        self.depth == 0 && self.in_flight.is_empty() && self.probe.is_none()
    }

    /// Whether [`Producer::begin_drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// The plugin is going away: every record still held is dropped, counted and logged per
    /// topic (those in flight may have been written; their acknowledgement cannot arrive).
    pub fn shutdown(&mut self) {
        let mut lines = Vec::new();
        let mut total = 0;
        for (i, q) in self.queues.iter_mut().enumerate() {
            let flying: usize = self
                .in_flight
                .iter()
                .filter(|b| b.queue == i)
                .map(|b| b.records.len())
                .sum();
            let n = q.len() + flying;
            if n > 0 {
                lines.push(format!(
                    "kafka-upstream: dropped {n} message(s) to topic {} at shutdown ({flying} in flight, outcome unknown)",
                    q.topic
                ));
            }
            total += n;
            q.fresh.clear();
            q.retry.clear();
            q.kept.clear();
            q.fresh_len = 0;
            q.fresh_bytes = 0;
        }
        self.in_flight.clear();
        self.probe = None;
        for line in lines {
            self.log(Level::Error, line);
        }
        self.stats.dropped += total as u64;
        self.count(Metric::Dropped, total);
        self.depth = 0;
    }

    /// The log lines collected since the last call.
    pub fn take_logs(&mut self) -> Vec<(Level, String)> {
        std::mem::take(&mut self.logs)
    }

    /// The metric updates collected since the last call: counter increments (in
    /// [`Metric::ALL`] order), the buffer depth when it changed, then the histogram samples (one
    /// batch size per batch sent, one latency per produce call answered), in order.
    pub fn take_metric_updates(&mut self) -> Vec<MetricUpdate> {
        let mut out = Vec::new();
        for (metric, delta) in Metric::ALL.iter().zip(self.counter_deltas.iter_mut()) {
            if *delta > 0 {
                out.push(MetricUpdate::Add(*metric, *delta));
                *delta = 0;
            }
        }
        if self.depth_reported != Some(self.depth) {
            self.depth_reported = Some(self.depth);
            out.push(MetricUpdate::Set(Metric::BufferDepth, self.depth as u64));
        }
        out.append(&mut self.samples);
        out
    }

    // -----------------------------------------------------------------------------------------

    fn limit(&self) -> usize {
        self.config.producer.messages_in_memory as usize
    }

    fn limits(&self) -> Limits {
        let p = &self.config.producer;
        Limits {
            records: p.messages_per_request.max(1) as usize,
            bytes: p.bytes_per_request as usize,
            envelope: if self.schema_registry.is_some() {
                crate::rest::schema::batch_envelope_len_bound(&self.config.rest_proxy.api)
            } else {
                rest::batch_envelope_len(&self.config.rest_proxy.api)
            },
        }
    }

    /// A record's exact size in a request body (with a schema registry, whose ids are not known
    /// yet, its bound).
    fn record_size(&self, key: Option<&[u8]>, headers: &[u8], message_len: usize) -> usize {
        let config = &self.config;
        if self.schema_registry.is_some() {
            crate::rest::schema::record_len_bound(&config.rest_proxy, key, headers, config.partition, message_len)
        } else {
            rest::record_len(&config.rest_proxy, key, headers, config.partition, message_len)
        }
    }

    /// How batch bodies are built with `config` (which is `self.config`, passed so that the
    /// borrow is the caller's).
    fn encoding<'a>(&self, config: &'a Config) -> Encoding<'a> {
        Encoding {
            prebuilt: match self.schema_registry {
                None => Some((&config.rest_proxy, config.partition)),
                Some(_) => None,
            },
        }
    }

    /// The configuration or the schema registry changed: every held record is sized again, the
    /// fresh ones cut into batches and encoded again, and kept bodies let go (their retries are
    /// encoded anew), so that everything goes out as the new configuration writes it.
    fn reencode(&mut self) {
        self.encoding_generation += 1;
        let config = Rc::clone(&self.config);
        let limits = self.limits();
        let encoding = self.encoding(&config);
        let mut queues = std::mem::take(&mut self.queues);
        for q in &mut queues {
            for r in q
                .fresh
                .iter_mut()
                .flat_map(|c| c.records.iter_mut())
                .chain(q.retry.iter_mut())
            {
                r.size = self.record_size(r.key.as_deref(), &r.headers, r.message.len());
            }
            q.kept.clear();
            q.recut(&limits, encoding, true, 0, &mut Vec::new(), &mut None);
        }
        self.queues = queues;
    }

    fn queue_index(&mut self, topic: &str) -> usize {
        match self.queues.iter().position(|q| q.topic == topic) {
            Some(i) => i,
            None => {
                self.queues.push(Queue::new(topic));
                self.queues.len() - 1
            }
        }
    }

    fn log(&mut self, level: Level, line: String) {
        self.logs.push((level, line));
    }

    fn count(&mut self, metric: Metric, n: usize) {
        self.counter_deltas[metric.index()] += n as u64;
    }

    /// Records leave the buffer (acknowledged or dropped).
    fn release(&mut self, n: usize) {
        self.depth -= n.min(self.depth);
        if self.full_logged && self.depth <= self.limit() / 2 {
            self.full_logged = false;
        }
    }

    fn flush(&mut self, host: &mut dyn Host, now: u64) {
        let n = self.queues.len();
        if n == 0 {
            return;
        }
        // With a schema registry nothing goes out without its ids: while they are pending or
        // the lookup failed, the records wait (the root retries the lookup).
        let schema_ids = match &self.schema_registry {
            None => None,
            Some(r) => {
                match r
                    .borrow()
                    .ids()
                    .and_then(|ids| crate::rest::schema::check_api(&self.config.rest_proxy.api, ids))
                {
                    Ok(ids) => Some(ids),
                    Err(_) => return,
                }
            }
        };
        let start = self.rotation % n;
        self.rotation = self.rotation.wrapping_add(1);
        let limits = self.limits();
        let config = Rc::clone(&self.config);
        let encoding = self.encoding(&config);
        // One batch per due topic in turn, so one busy topic does not take every call. Host
        // refusals settle at once (and may be due again at once with a zero backoff): the budget
        // bounds the work of one tick. The bodies are already built, so a dispatch costs the
        // guest O(1), but the host copies each body out of the guest's memory (and the REST
        // call then writes it): the bytes dispatched in one tick are bounded too, by
        // MAX_TICK_DISPATCH_BYTES, so a backlog goes out over several ticks instead of stalling
        // the requests that wait behind one long tick.
        let mut budget = MAX_CALLS_IN_FLIGHT;
        let mut bytes_left = MAX_TICK_DISPATCH_BYTES;
        loop {
            let mut sent = false;
            for i in 0..n {
                if budget == 0 || bytes_left == 0 || !self.is_healthy() || self.in_flight.len() >= MAX_CALLS_IN_FLIGHT {
                    return;
                }
                let queue = (start + i) % n;
                let draining_due = self.draining && self.queues[queue].fresh_len > 0;
                if !draining_due && !self.queues[queue].is_due(now, &limits) {
                    continue;
                }
                let taken = self.queues[queue].take_batch(now, &limits, encoding);
                if taken.records.is_empty() {
                    continue;
                }
                budget -= 1;
                sent = true;
                let bytes = self.send(host, queue, taken, schema_ids.as_ref(), now);
                bytes_left = bytes_left.saturating_sub(bytes);
            }
            if !sent {
                return;
            }
        }
    }

    /// Dispatches a batch taken from `queue`; returns its body's size.
    fn send(
        &mut self,
        host: &mut dyn Host,
        queue: usize,
        taken: Taken,
        schema_ids: Option<&crate::schema_registry::SchemaIds>,
        now: u64,
    ) -> usize {
        let config = Rc::clone(&self.config);
        let rp = &config.rest_proxy;
        let Taken { mut records, body } = taken;
        let topic = &self.queues[queue].topic;
        let (call, prebuilt) = match (body, schema_ids) {
            (Some(body), _) => (rest::batch_call(rp, topic, body), true),
            (None, Some(ids)) => {
                let items = records.iter().map(|r| (r.key.as_deref(), &*r.headers, &*r.message));
                (
                    crate::rest::schema::build_produce_call(rp, ids, topic, config.partition, items),
                    false,
                )
            }
            (None, None) => {
                // Not reached: without a schema registry every batch has its body. Built whole
                // rather than lost.
                let items = records.iter().map(|r| (r.key.as_deref(), &*r.headers, &*r.message));
                let request = rest::build_batch_request(rp, topic, config.partition, items);
                (rest::batch_call(rp, topic, request.body), true)
            }
        };
        for r in &mut records {
            r.attempts += 1;
        }
        self.stats.batches += 1;
        self.samples
            .push(MetricUpdate::Record(Metric::BatchSize, records.len() as u64));
        let size = call.body.len();
        let result = host.dispatch(&rp.upstream, &call.header_map(rp), &call.body, rp.timeout_ms);
        let body = prebuilt.then_some(call.body);
        match result {
            Ok(token) => self.in_flight.push(Batch {
                token,
                queue,
                records,
                body,
                encoding_generation: self.encoding_generation,
                sent_at: now,
            }),
            Err(refusal) => {
                self.count(Metric::RestCallsNoReply, 1);
                let failure = Failure::host_refusal(&refusal);
                let outcomes = vec![Outcome::Failed(failure); records.len()];
                self.settle(queue, records, outcomes, now, body);
            }
        }
        size
    }

    /// Applies one outcome per record of a batch of `queue`.
    /// `body` is the batch's body when it was built before the flush: when every record failed
    /// with nothing said about the records themselves, and all wait for one retry together,
    /// it is kept to go again as it is ([`KeptBody`]).
    fn settle(&mut self, queue: usize, records: Vec<Record>, outcomes: Vec<Outcome>, now: u64, body: Option<Vec<u8>>) {
        let total = records.len();
        let max_attempts = self.config.producer.max_attempts;
        let backoff = self.config.producer.backoff_ms;
        // One outcome per record; a missing one is a failure, never a silent loss.
        let mut outcomes = outcomes;
        outcomes.resize_with(total, || {
            Outcome::Failed(Failure {
                reason: "no outcome for this record",
                ..Failure::default()
            })
        });
        let acked = outcomes.iter().filter(|o| matches!(o, Outcome::Acknowledged)).count();
        let health = flush_health(&records, &outcomes, acked);
        let isolate = total > 1 && acked == 0 && outcomes.iter().all(refused_after_processing);
        let keep_body = acked == 0
            && !isolate
            && records
                .iter()
                .all(|r| r.attempts < max_attempts && r.attempts == records[0].attempts);
        if let (true, Some(body)) = (keep_body, body) {
            let seqs = records.iter().map(|r| r.seq).collect();
            self.queues[queue].kept.push(KeptBody { seqs, body });
        }
        let (mut retried, mut dropped) = (0usize, 0usize);
        let mut first_failure: Option<Failure> = None;
        for (mut record, outcome) in records.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Acknowledged => {}
                Outcome::Failed(f) | Outcome::TimedOut(f) => {
                    if first_failure.is_none() {
                        first_failure = Some(f);
                    }
                    if acked > 0 {
                        record.failed_beside_ack = true;
                    }
                    if isolate {
                        record.isolated = true;
                    }
                    if record.attempts >= max_attempts {
                        dropped += 1;
                    } else {
                        record.due_at = now.saturating_add(backoff_ms(backoff, record.attempts));
                        self.queues[queue].push_retry(record);
                        retried += 1;
                    }
                }
            }
        }
        let failed = retried + dropped;
        self.stats.sent += acked as u64;
        self.stats.failed += failed as u64;
        self.stats.retried += retried as u64;
        self.stats.dropped += dropped as u64;
        self.count(Metric::Sent, acked);
        self.count(Metric::Failed, failed);
        self.count(Metric::Retried, retried);
        self.count(Metric::Dropped, dropped);
        self.release(acked + dropped);

        let why = first_failure.as_ref().map(Failure::to_string).unwrap_or_default();
        if failed > 0 {
            let topic = self.queues[queue].topic.clone();
            if retried > 0 {
                self.log(
                    Level::Warn,
                    format!(
                        "kafka-upstream: {failed} of {total} message(s) to topic {topic} not acknowledged: {why}; {retried} will be retried"
                    ),
                );
            }
            if dropped > 0 {
                self.log(
                    Level::Error,
                    format!(
                        "kafka-upstream: dropped {dropped} message(s) to topic {topic} after {max_attempts} attempt(s); last error: {why}"
                    ),
                );
            }
        }
        match health {
            FlushHealth::Succeeded => self.health_event(true, now, &why),
            FlushHealth::Failed => self.health_event(false, now, &why),
            FlushHealth::RecordsOnly => {}
        }
    }

    fn probe_if_due(&mut self, host: &mut dyn Host, now: u64) {
        if self.probe.is_some() || !self.health.take_probe(now, &self.config.producer) {
            return;
        }
        let config = Rc::clone(&self.config);
        let rp = &config.rest_proxy;
        let request = rest::build_probe_request(rp);
        match host.dispatch(&rp.upstream, &request.header_map(), &request.body, rp.timeout_ms) {
            Ok(token) => self.probe = Some(token),
            Err(refusal) => {
                let why = refusal.to_string();
                self.log(
                    Level::Warn,
                    format!("kafka-upstream: health probe of the Kafka REST proxy failed: {why}"),
                );
                self.health_event(false, now, &why);
            }
        }
    }

    /// A flush or probe ended: `ok` when something was acknowledged (or the probe got a 2xx).
    /// Logs a change of health.
    fn health_event(&mut self, ok: bool, now: u64, why: &str) {
        let probe_interval = self.config.producer.probe_interval_ms;
        match self.health.record(ok, now, &self.config.producer) {
            None => {}
            Some(Change::BecameUnhealthy { failures }) => self.log(
                Level::Error,
                format!(
                    "kafka-upstream: the Kafka REST proxy is unhealthy after {failures} consecutive failed flushes (last: {why}); new requests get 503, buffered messages wait, probing every {probe_interval} ms"
                ),
            ),
            Some(Change::BecameHealthy { successes }) => {
                let held = self.depth;
                self.log(
                    Level::Info,
                    format!(
                        "kafka-upstream: the Kafka REST proxy is healthy again after {successes} successful probe(s) or flush(es) in a row; accepting requests, sending {held} held message(s)"
                    ),
                );
            }
        }
    }
}

/// What a settled flush says about the REST proxy's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlushHealth {
    /// Something was acknowledged: records get through.
    Succeeded,
    /// Nothing was acknowledged, and nothing shows the records themselves are at fault.
    Failed,
    /// Nothing was acknowledged, but the REST proxy answered every record, each of which had
    /// already failed in a reply that acknowledged others: the records are at fault, not the
    /// REST proxy. Neither a success nor a failure.
    RecordsOnly,
}

/// The health verdict of a flush of `records` that ended with `outcomes` (`acked` of them
/// acknowledged).
fn flush_health(records: &[Record], outcomes: &[Outcome], acked: usize) -> FlushHealth {
    if acked > 0 {
        return FlushHealth::Succeeded;
    }
    let answered_by_the_proxy = |o: &Outcome| matches!(o, Outcome::Failed(f) if f.status.is_some());
    if !records.is_empty()
        && records.iter().all(|r| r.failed_beside_ack || r.isolated)
        && outcomes.iter().all(answered_by_the_proxy)
    {
        FlushHealth::RecordsOnly
    } else {
        FlushHealth::Failed
    }
}

/// Whether the REST proxy processed the request and refused this record with it: a 2xx reply
/// (per-record errors, or Redpanda's per-partition ones that cannot be matched to records), 413
/// (the request too large for it) or 422 (records it could not take). Other statuses and
/// failures without a reply say nothing about the records (an outage, a timeout, a refused
/// request), so their batches stay together.
fn refused_after_processing(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Failed(f) => matches!(f.status, Some(200..=299 | 413 | 422)),
        Outcome::Acknowledged | Outcome::TimedOut(_) => false,
    }
}

/// The delay before the retry that follows attempt `attempts` (1 for the first failure):
/// `base × 2^(attempts − 1)`, at most [`MAX_BACKOFF_MS`] (or `base` when larger).
pub fn backoff_ms(base: u32, attempts: u32) -> u64 {
    let base = u64::from(base);
    let shift = attempts.saturating_sub(1).min(40);
    base.saturating_mul(1u64 << shift).min(base.max(MAX_BACKOFF_MS))
}

/// `items` stably sorted by `key`: the `(key, index)` pairs are sorted, then the items taken in
/// that order. Every sort of the producer goes through it and [`heap_sort`], instead of a slice
/// sort instantiated per element type and key (each ~5 KB of code in the `.wasm`); none of them
/// is on a request's path. Out of line, and `key` a plain function, so each element type has one
/// copy.
#[inline(never)]
fn sorted_by_key<T>(items: Vec<T>, key: fn(&T) -> (u64, u64)) -> Vec<T> {
    let mut order: Vec<(u64, u64, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let (a, b) = key(item);
            (a, b, i)
        })
        .collect();
    heap_sort(&mut order);
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    order.into_iter().filter_map(|(_, _, i)| slots[i].take()).collect()
}

/// Sorts `v` ascending in place, in O(n log n) time and no memory: a heapsort, a few hundred
/// bytes of `.wasm` where the standard library's slice sort is ~5 KB. The elements are distinct
/// (their last part is an index), so the order is the only one there is.
fn heap_sort(v: &mut [(u64, u64, usize)]) {
    // Moves `v[root]` down the max-heap `v[..end]` to its place.
    fn sift_down(v: &mut [(u64, u64, usize)], mut root: usize, end: usize) {
        loop {
            let mut child = 2 * root + 1;
            if child >= end {
                return;
            }
            if child + 1 < end && v[child] < v[child + 1] {
                child += 1;
            }
            if v[root] >= v[child] {
                return;
            }
            v.swap(root, child);
            root = child;
        }
    }
    for root in (0..v.len() / 2).rev() {
        sift_down(v, root, v.len());
    }
    for end in (1..v.len()).rev() {
        v.swap(0, end);
        sift_down(v, 0, end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heapsort behind [`sorted_by_key`] agrees with the standard library's sort, and the
    /// records' order is a stable sort by key.
    #[test]
    fn heap_sort_and_sorted_by_key_agree_with_std() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        for len in [0, 1, 2, 3, 4, 5, 7, 8, 16, 17, 100, 1000] {
            for bound in [1, 3, 1000, u64::MAX] {
                let items: Vec<(u64, u64)> = (0..len).map(|_| (next(bound), next(bound))).collect();
                let mut pairs: Vec<(u64, u64, usize)> =
                    items.iter().enumerate().map(|(i, &(a, b))| (a, b, i)).collect();
                let mut want = pairs.clone();
                want.sort();
                heap_sort(&mut pairs);
                assert_eq!(pairs, want, "len {len}, bound {bound}");
                let tagged: Vec<(u64, u64, usize)> = items.iter().enumerate().map(|(i, &(a, b))| (a, b, i)).collect();
                let mut stable = tagged.clone();
                stable.sort_by_key(|&(a, _, _)| a);
                assert_eq!(
                    sorted_by_key(tagged, |&(a, _, _)| (a, 0)),
                    stable,
                    "len {len}, bound {bound}"
                );
            }
        }
    }
    use serde_json::Value;

    /// One dispatched call: headers and body.
    #[derive(Debug, Clone)]
    struct Call {
        token: u32,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Call {
        fn header(&self, name: &str) -> &str {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_default()
        }

        /// The v2 binary records' messages, decoded.
        fn v2_messages(&self) -> Vec<String> {
            use base64::Engine as _;
            let v: Value = serde_json::from_slice(&self.body).unwrap();
            v["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(r["value"].as_str().unwrap())
                        .unwrap();
                    String::from_utf8(bytes).unwrap()
                })
                .collect()
        }
    }

    #[derive(Default)]
    struct FakeTransport {
        calls: Vec<Call>,
        refuse: bool,
        next: u32,
    }

    impl FakeTransport {
        fn take(&mut self) -> Vec<Call> {
            std::mem::take(&mut self.calls)
        }
    }

    /// A host for the producer, which only ever dispatches calls (time is passed in, logs and
    /// metrics are collected): any other host call fails the test.
    impl Host for FakeTransport {
        fn dispatch(
            &mut self,
            upstream: &str,
            headers: &[u8],
            body: &[u8],
            timeout_ms: u32,
        ) -> Result<u32, crate::host::DispatchError> {
            assert_eq!(upstream, "kafka_rest");
            assert_eq!(timeout_ms, 500);
            if self.refuse {
                return Err(crate::host::DispatchError::BadArgument);
            }
            self.next += 1;
            self.calls.push(Call {
                token: self.next,
                headers: crate::wire::decode_text(headers),
                body: body.to_vec(),
            });
            Ok(self.next)
        }

        fn request_body(&mut self, _: usize) -> Option<Vec<u8>> {
            panic!("the producer read a request body")
        }

        fn respond(&mut self, status: u32, _: &[u8], _: &[u8]) {
            panic!("the producer answered a client ({status})")
        }

        fn log(&mut self, _: Level, message: &str) {
            panic!("the producer logged through the host instead of take_logs: {message}")
        }

        fn now_ms(&mut self) -> u64 {
            panic!("the producer read the host clock instead of the time it was given")
        }

        fn host_kind(&mut self) -> crate::host::HostKind {
            panic!("the producer asked which host runs it")
        }

        fn metric(&mut self, update: MetricUpdate) {
            panic!("the producer updated a metric through the host instead of take_metric_updates: {update:?}")
        }
    }

    fn config(extra: &str) -> Rc<Config> {
        let text = format!(
            r#"{{"topic":"t","rest_proxy":{{"upstream":"kafka_rest","timeout":500}},"producer_async":true{extra}}}"#
        );
        Rc::new(crate::config::parse(text.as_bytes()).unwrap())
    }

    fn topics(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn put(p: &mut Producer, now: u64, message: &str) {
        p.enqueue(now, &topics(&["t"]), None, message.as_bytes().to_vec())
            .unwrap();
    }

    fn reply<'a>(status: &'a str, body: &'a str) -> ReplyView<'a> {
        ReplyView {
            status: Some(status.as_bytes()),
            dispatch_status: None,
            body: body.as_bytes(),
        }
    }

    fn v2_ack(n: usize) -> String {
        let offsets: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"partition":0,"offset":{i},"error_code":null,"error":null}}"#))
            .collect();
        format!(r#"{{"offsets":[{}]}}"#, offsets.join(","))
    }

    fn ack(p: &mut Producer, call: &Call, now: u64) {
        let n = call.v2_messages().len();
        assert!(p.on_response(call.token, &reply("200", &v2_ack(n)), now));
    }

    fn fail(p: &mut Producer, call: &Call, now: u64) {
        assert!(p.on_response(
            call.token,
            &reply("500", r#"{"error_code":50001,"message":"broker down"}"#),
            now
        ));
    }

    /// The body the whole-batch builder writes for `messages` (v2 binary, no key), which the
    /// bodies built record by record must equal byte for byte (see
    /// `rest::request::tests::batch_bodies_built_record_by_record_are_the_whole_batch_bytes`).
    fn whole_body(p: &Producer, messages: &[&str]) -> Vec<u8> {
        let items = messages.iter().map(|m| (None, &b""[..], m.as_bytes()));
        rest::build_batch_request(&p.config.rest_proxy, "t", p.config.partition, items).body
    }

    /// Every call's body is the whole-batch body of the records it carries.
    fn assert_whole_bodies(p: &Producer, calls: &[Call]) {
        for call in calls {
            let messages = call.v2_messages();
            let messages: Vec<&str> = messages.iter().map(String::as_str).collect();
            assert_eq!(
                String::from_utf8_lossy(&call.body),
                String::from_utf8_lossy(&whole_body(p, &messages))
            );
        }
    }

    #[test]
    fn records_are_encoded_when_accepted_and_a_tick_only_closes_the_body() {
        let mut p = Producer::new(config(r#","producer_request_limits_messages_per_request":3"#));
        let mut t = FakeTransport::default();
        for m in ["a", "b", "c", "d"] {
            put(&mut p, 0, m);
        }
        // Encoded at enqueue: two pending batches, their bodies already written.
        let q = &p.queues[0];
        assert_eq!(q.fresh.len(), 2);
        let first = q.fresh[0].body.clone().expect("prebuilt");
        assert_eq!(first.records(), 3);
        assert_eq!(first.finish(), whole_body(&p, &["a", "b", "c"]));
        p.on_tick(&mut t, 1);
        let calls = t.take();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].v2_messages(), vec!["a", "b", "c"]);
        assert_whole_bodies(&p, &calls);
    }

    #[test]
    fn a_record_that_would_overflow_the_bytes_starts_the_next_batch() {
        // A record of 9 bytes is {"value":"<12 base64>"}, 24 bytes; the envelope 14, the
        // separator 1: three records take exactly 14 + 3 × 24 + 2 = 88 bytes, the limit.
        let mut p = Producer::new(config(
            r#","producer_request_limits_bytes_per_request":88,"producer_async_flush_timeout":1"#,
        ));
        let mut t = FakeTransport::default();
        for m in ["m00000001", "m00000002", "m00000003", "m00000004", "m00000005"] {
            put(&mut p, 0, m);
        }
        let big = "x".repeat(200);
        put(&mut p, 0, &big);
        put(&mut p, 0, "m00000006");
        p.on_tick(&mut t, 1);
        let calls = t.take();
        let batches: Vec<Vec<String>> = calls.iter().map(Call::v2_messages).collect();
        let want: Vec<Vec<&str>> = vec![
            vec!["m00000001", "m00000002", "m00000003"],
            vec!["m00000004", "m00000005"],
            vec![&big],
            vec!["m00000006"],
        ];
        assert_eq!(batches, want);
        assert_eq!(calls[0].body.len(), 88);
        assert_whole_bodies(&p, &calls);
    }

    #[test]
    fn a_failed_batch_goes_again_with_the_body_it_was_sent_with() {
        let mut p = Producer::new(config(
            r#","producer_async_flush_timeout":1,"producer_request_retries_backoff_timeout":10,"producer_async_health_failure_threshold":100"#,
        ));
        let mut t = FakeTransport::default();
        put(&mut p, 0, "a");
        put(&mut p, 0, "b");
        p.on_tick(&mut t, 1);
        let first = t.take().remove(0);
        fail(&mut p, &first, 1);
        // Kept, not encoded again: the retry sends those very bytes.
        assert_eq!(p.queues[0].kept.len(), 1);
        assert_eq!(p.queues[0].kept[0].body, first.body);
        p.on_tick(&mut t, 11);
        let again = t.take().remove(0);
        assert_eq!(again.body, first.body);
        assert!(p.queues[0].kept.is_empty(), "a kept body goes once");
        // A timeout: kept too.
        p.on_response(
            again.token,
            &ReplyView {
                status: None,
                dispatch_status: Some(b"timeout"),
                body: b"",
            },
            12,
        );
        assert_eq!(p.queues[0].kept.len(), 1);
        // Acknowledged: nothing is kept.
        p.on_tick(&mut t, 40);
        let third = t.take().remove(0);
        assert_eq!(third.body, first.body);
        ack(&mut p, &third, 41);
        assert!(p.queues[0].kept.is_empty());
        assert!(p.is_drained());
        assert_eq!((p.stats().sent, p.stats().dropped), (2, 0));
    }

    #[test]
    fn a_retry_batch_takes_fresh_records_and_the_later_batches_stay_as_they_were() {
        let mut p = Producer::new(config(
            r#","producer_request_limits_messages_per_request":3,"producer_async_flush_timeout":1,"producer_request_retries_backoff_timeout":10,"producer_async_health_failure_threshold":100"#,
        ));
        let mut t = FakeTransport::default();
        put(&mut p, 0, "a");
        p.on_tick(&mut t, 1);
        fail(&mut p, &t.take()[0], 1);
        for m in ["b", "c", "d", "e", "f", "g", "h"] {
            put(&mut p, 5, m);
        }
        // Pending: [b c d] [e f g] [h]; the retry of a takes b and c, so the rest is cut again
        // as a greedy fill from d gives it: [d e f] [g h].
        p.on_tick(&mut t, 11);
        let calls = t.take();
        let batches: Vec<Vec<String>> = calls.iter().map(Call::v2_messages).collect();
        assert_eq!(batches, vec![vec!["a", "b", "c"], vec!["d", "e", "f"], vec!["g", "h"]]);
        assert_whole_bodies(&p, &calls);
        for c in &calls {
            ack(&mut p, c, 12);
        }
        assert!(p.is_drained());
        assert_eq!(p.stats().sent, 8);
    }

    #[test]
    fn a_partly_acknowledged_batch_encodes_only_its_failed_records_again() {
        let mut p = Producer::new(config(
            r#","producer_async_flush_timeout":1,"producer_request_retries_backoff_timeout":10"#,
        ));
        let mut t = FakeTransport::default();
        for m in ["a", "b", "c"] {
            put(&mut p, 0, m);
        }
        p.on_tick(&mut t, 1);
        let call = t.take().remove(0);
        let body = r#"{"offsets":[{"offset":1},{"error_code":50002,"error":"x"},{"offset":2}]}"#;
        p.on_response(call.token, &reply("200", body), 2);
        assert!(p.queues[0].kept.is_empty(), "the batch's body is not the retry's");
        p.on_tick(&mut t, 12);
        let retry = t.take();
        assert_eq!(retry[0].v2_messages(), vec!["b"]);
        assert_whole_bodies(&p, &retry);
    }

    #[test]
    fn a_new_configuration_encodes_the_held_records_again() {
        let mut p = Producer::new(config(
            r#","producer_async_flush_timeout":1000,"producer_request_retries_backoff_timeout":10"#,
        ));
        let mut t = FakeTransport::default();
        put(&mut p, 0, "a");
        p.on_tick(&mut t, 1000);
        fail(&mut p, &t.take()[0], 1000);
        put(&mut p, 1001, "b");
        put(&mut p, 1001, "c");
        p.reconfigure(config(
            r#","rest_proxy":{"upstream":"kafka_rest","timeout":500,"api":"v3","cluster_id":"lkc-1"},"producer_request_limits_messages_per_request":2,"producer_async_flush_timeout":1000"#,
        ));
        assert!(p.queues[0].kept.is_empty());
        p.on_tick(&mut t, 1010);
        let calls = t.take();
        let config = Rc::clone(&p.config);
        let want = |messages: &[&[u8]]| {
            let items = messages.iter().map(|m| (None, &b""[..], *m));
            rest::build_batch_request(&config.rest_proxy, "t", None, items).body
        };
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].header(":path"), "/v3/clusters/lkc-1/topics/t/records");
        assert_eq!(calls[0].body, want(&[b"a", b"b"]));
        p.on_tick(&mut t, 2001);
        assert_eq!(t.take()[0].body, want(&[b"c"]));
    }

    #[test]
    fn a_batch_in_flight_across_a_new_configuration_is_encoded_again_for_its_retry() {
        let mut p = Producer::new(config(
            r#","producer_async_flush_timeout":1,"producer_request_retries_backoff_timeout":10"#,
        ));
        let mut t = FakeTransport::default();
        put(&mut p, 0, "a");
        p.on_tick(&mut t, 1);
        let call = t.take().remove(0);
        p.reconfigure(config(
            r#","rest_proxy":{"upstream":"kafka_rest","timeout":500,"api":"v3","cluster_id":"lkc-1"},"producer_async_flush_timeout":1,"producer_request_retries_backoff_timeout":10"#,
        ));
        fail(&mut p, &call, 2);
        assert!(p.queues[0].kept.is_empty(), "a v2 body kept for a v3 retry");
        p.on_tick(&mut t, 12);
        let retry = t.take().remove(0);
        assert_eq!(retry.header(":path"), "/v3/clusters/lkc-1/topics/t/records");
        let items = [(None, &b""[..], &b"a"[..])];
        assert_eq!(
            retry.body,
            rest::build_batch_request(&p.config.rest_proxy, "t", None, items).body
        );
    }

    #[test]
    fn topics_of_one_request_carry_the_same_record_bytes() {
        let mut p = Producer::new(config(r#","producer_async_flush_timeout":1"#));
        let mut t = FakeTransport::default();
        p.enqueue(0, &topics(&["t", "u"]), Some(b"k"), b"{\"n\":1}".to_vec())
            .unwrap();
        p.enqueue(0, &topics(&["u"]), None, b"{\"n\":2}".to_vec()).unwrap();
        p.on_tick(&mut t, 1);
        let calls = t.take();
        let body = |path: &str| calls.iter().find(|c| c.header(":path") == path).unwrap().body.clone();
        let rp = &p.config.rest_proxy;
        let one = [(Some(&b"k"[..]), &b""[..], &b"{\"n\":1}"[..])];
        let two = [one[0], (None, &b""[..], &b"{\"n\":2}"[..])];
        assert_eq!(body("/topics/t"), rest::build_batch_request(rp, "t", None, one).body);
        assert_eq!(body("/topics/u"), rest::build_batch_request(rp, "u", None, two).body);
    }

    #[test]
    fn one_tick_dispatches_a_bounded_number_of_bytes() {
        let mut p = Producer::new(config(
            r#","producer_request_limits_messages_per_request":1,"producer_request_limits_bytes_per_request":4194304,"producer_async_flush_timeout":1"#,
        ));
        let mut t = FakeTransport::default();
        let big = "x".repeat(1 << 20);
        for _ in 0..6 {
            put(&mut p, 0, &big);
        }
        // Each body is ~1.4 MB of base64: the third one reaches the tick's bound.
        p.on_tick(&mut t, 1);
        let first = t.take();
        assert_eq!(first.len(), 3);
        assert!(first[..2].iter().map(|c| c.body.len()).sum::<usize>() < MAX_TICK_DISPATCH_BYTES);
        p.on_tick(&mut t, 2);
        assert_eq!(t.take().len(), 3, "the rest goes on the next tick");
        // A single batch larger than the bound still goes.
        let mut p = Producer::new(config(
            r#","producer_request_limits_bytes_per_request":10000000,"producer_async_flush_timeout":1"#,
        ));
        put(&mut p, 0, &"y".repeat(5 << 20));
        p.on_tick(&mut t, 1);
        assert_eq!(t.take().len(), 1);
    }

    /// Random schedules of arrivals, ticks and replies (acknowledged, 5xx, timeouts, partial
    /// failures, whole-batch 422s that isolate records) against random limits: every body is the
    /// whole-batch bytes of its records and within the limits, and every record is either
    /// acknowledged once or dropped once.
    /// A random v2 reply to a batch of `records` (a whole acknowledgement, 500, 504, a 200 with
    /// per-record failures, a 422 failing every record; only the first when `draining`), with
    /// which records it acknowledges. `rand(n)` draws below n: one draw per record, then one for
    /// the reply unless draining (the pinned-hash test depends on this order).
    fn random_v2_reply(
        records: usize,
        draining: bool,
        rand: &mut impl FnMut(u64) -> u64,
    ) -> (&'static str, String, Vec<bool>) {
        let failing: Vec<bool> = (0..records).map(|_| rand(3) == 0).collect();
        if draining {
            return ("200", v2_ack(records), vec![true; records]);
        }
        match rand(5) {
            0 => ("200", v2_ack(records), vec![true; records]),
            1 => ("500", "{}".to_string(), vec![false; records]),
            2 => ("504", String::new(), vec![false; records]),
            3 => {
                let offsets: Vec<&str> = failing
                    .iter()
                    .map(|f| {
                        if *f {
                            r#"{"error_code":50002,"error":"x"}"#
                        } else {
                            r#"{"offset":1}"#
                        }
                    })
                    .collect();
                let partial = format!(r#"{{"offsets":[{}]}}"#, offsets.join(","));
                ("200", partial, failing.iter().map(|f| !f).collect())
            }
            _ => {
                let all_failed = vec![r#"{"error_code":1,"error":"x"}"#; records].join(",");
                ("422", format!(r#"{{"offsets":[{all_failed}]}}"#), vec![false; records])
            }
        }
    }

    #[test]
    fn random_schedules_send_whole_batch_bytes_within_the_limits_and_lose_nothing() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..200 {
            let per_request = 1 + rand(5);
            let bytes = 40 + rand(200);
            let cfg = format!(
                r#","producer_request_limits_messages_per_request":{per_request},"producer_request_limits_bytes_per_request":{bytes},"producer_async_flush_timeout":{},"producer_request_retries_backoff_timeout":{},"producer_request_retries_max_attempts":{},"producer_async_health_failure_threshold":1000"#,
                1 + rand(30),
                rand(20),
                1 + rand(4)
            );
            let mut p = Producer::new(config(&cfg));
            let mut t = FakeTransport::default();
            let mut in_flight: Vec<Call> = Vec::new();
            let mut acked: Vec<String> = Vec::new();
            let mut next = 0;
            let mut now = 0;
            for step in 0..400 {
                let draining = step >= 300;
                match rand(4) {
                    0 if !draining => {
                        for _ in 0..=rand(4) {
                            let message = format!("m{next}{}", "x".repeat(rand(40) as usize));
                            next += 1;
                            put(&mut p, now, &message);
                        }
                    }
                    1 | 2 => {
                        now += 1 + rand(10);
                        p.on_tick(&mut t, now);
                        let calls = t.take();
                        for call in &calls {
                            let messages = call.v2_messages();
                            let messages: Vec<&str> = messages.iter().map(String::as_str).collect();
                            assert_eq!(call.body, whole_body(&p, &messages), "round {round}");
                            assert!(messages.len() as u64 <= per_request, "round {round}");
                            assert!(call.body.len() as u64 <= bytes || messages.len() == 1, "round {round}");
                        }
                        in_flight.extend(calls);
                    }
                    _ if !in_flight.is_empty() => {
                        let call = in_flight.swap_remove(rand(in_flight.len() as u64) as usize);
                        let messages = call.v2_messages();
                        let (status, body, acks) = random_v2_reply(messages.len(), draining, &mut rand);
                        assert!(p.on_response(call.token, &reply(status, &body), now));
                        for (message, ok) in messages.into_iter().zip(acks) {
                            if ok {
                                acked.push(message);
                            }
                        }
                    }
                    _ => {}
                }
            }
            // Everything left goes and is acknowledged.
            for _ in 0..10_000 {
                if p.is_drained() {
                    break;
                }
                now += 50;
                p.on_tick(&mut t, now);
                in_flight.extend(t.take());
                for call in std::mem::take(&mut in_flight) {
                    let messages = call.v2_messages();
                    assert_eq!(
                        call.body,
                        whole_body(&p, &messages.iter().map(String::as_str).collect::<Vec<_>>())
                    );
                    assert!(p.on_response(call.token, &reply("200", &v2_ack(messages.len())), now));
                    acked.extend(messages);
                }
            }
            assert!(p.is_drained(), "round {round}");
            let stats = p.stats();
            assert_eq!(stats.sent, acked.len() as u64, "round {round}");
            assert_eq!(stats.sent + stats.dropped, stats.accepted, "round {round}");
            let mut unique = acked.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), acked.len(), "round {round}: a record acknowledged twice");
        }
    }

    #[test]
    fn batches_by_count() {
        let mut p = Producer::new(config(r#","producer_request_limits_messages_per_request":3"#));
        let mut t = FakeTransport::default();
        for i in 0..7 {
            put(&mut p, 0, &format!("m{i}"));
        }
        p.on_tick(&mut t, 10);
        let calls = t.take();
        assert_eq!(calls.len(), 2, "two full batches go at once");
        assert_eq!(calls[0].v2_messages(), vec!["m0", "m1", "m2"]);
        assert_eq!(calls[1].v2_messages(), vec!["m3", "m4", "m5"]);
        assert_eq!(calls[0].header(":path"), "/topics/t");
        assert_eq!(calls[0].header(":method"), "POST");
        // The last one waits for the flush timeout.
        p.on_tick(&mut t, 999);
        assert!(t.take().is_empty());
        p.on_tick(&mut t, 1000);
        let last = t.take();
        assert_eq!(last[0].v2_messages(), vec!["m6"]);
        assert_eq!(p.depth(), 7);
        for c in calls.iter().chain(&last) {
            ack(&mut p, c, 1001);
        }
        assert_eq!(p.depth(), 0);
        assert_eq!(p.stats().sent, 7);
        assert_eq!(p.stats().batches, 3);
    }

    #[test]
    fn batches_by_bytes() {
        // Each {"value":"<base64 of 6 bytes>"} record is 20 bytes; the envelope 14, a comma 1:
        // two records are 55 bytes, three 76.
        let mut p = Producer::new(config(r#","producer_request_limits_bytes_per_request":60"#));
        let mut t = FakeTransport::default();
        put(&mut p, 0, "aaaaaa");
        p.on_tick(&mut t, 1);
        assert!(t.take().is_empty(), "one record does not fill 60 bytes");
        put(&mut p, 2, "bbbbbb");
        p.on_tick(&mut t, 3);
        assert!(t.take().is_empty(), "two records (55 bytes) do not either");
        put(&mut p, 4, "cccccc");
        p.on_tick(&mut t, 5);
        let calls = t.take();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].v2_messages(), vec!["aaaaaa", "bbbbbb"]);
        assert_eq!(calls[0].body.len(), 55);
        // A record larger than the limit goes alone.
        let big = "x".repeat(100);
        put(&mut p, 6, &big);
        p.on_tick(&mut t, 7);
        let calls = t.take();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].v2_messages(), vec!["cccccc"]);
        assert_eq!(calls[1].v2_messages(), vec![big]);
    }

    #[test]
    fn flush_timeout() {
        let mut p = Producer::new(config(r#","producer_async_flush_timeout":250"#));
        let mut t = FakeTransport::default();
        put(&mut p, 1000, "a");
        put(&mut p, 1100, "b");
        p.on_tick(&mut t, 1249);
        assert!(t.take().is_empty());
        p.on_tick(&mut t, 1250);
        let calls = t.take();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].v2_messages(), vec!["a", "b"], "the younger record rides along");
        p.on_tick(&mut t, 5000);
        assert!(t.take().is_empty());
    }

    #[test]
    fn retry_then_success() {
        let mut p = Producer::new(config(r#","producer_async_flush_timeout":10"#));
        let mut t = FakeTransport::default();
        put(&mut p, 0, "a");
        p.on_tick(&mut t, 10);
        let first = t.take();
        fail(&mut p, &first[0], 20);
        assert_eq!(p.depth(), 1);
        assert_eq!(p.stats().retried, 1);
        let logs = p.take_logs();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].0, Level::Warn);
        assert!(
            logs[0]
                .1
                .contains("1 of 1 message(s) to topic t not acknowledged: error status, status 500, error_code 50001"),
            "{logs:?}"
        );
        // Backoff 100 ms after the first failure.
        p.on_tick(&mut t, 119);
        assert!(t.take().is_empty());
        p.on_tick(&mut t, 120);
        let second = t.take();
        assert_eq!(second[0].v2_messages(), vec!["a"]);
        ack(&mut p, &second[0], 130);
        assert_eq!(p.depth(), 0);
        assert_eq!(
            *p.stats(),
            Stats {
                accepted: 1,
                sent: 1,
                failed: 1,
                retried: 1,
                dropped: 0,
                rejected: 0,
                batches: 2
            }
        );
        assert!(p.is_healthy());
    }

    #[test]
    fn retry_exhaustion_drops_counts_and_logs() {
        let mut p = Producer::new(config(
            r#","producer_async_flush_timeout":1,"producer_request_retries_max_attempts":3,"producer_request_retries_backoff_timeout":10,"producer_async_health_failure_threshold":100"#,
        ));
        let mut t = FakeTransport::default();
        put(&mut p, 0, "a");
        put(&mut p, 0, "b");
        let mut now = 1;
        let mut sends = 0;
        while p.depth() > 0 && now < 10_000 {
            p.on_tick(&mut t, now);
            for c in t.take() {
                sends += 1;
                fail(&mut p, &c, now);
            }
            now += 1;
        }
        assert_eq!(sends, 3, "one batch, sent three times");
        assert_eq!(p.stats().dropped, 2);
        assert_eq!(p.stats().failed, 6);
        assert_eq!(p.stats().retried, 4);
        let errors: Vec<String> = p
            .take_logs()
            .into_iter()
            .filter(|(l, _)| *l == Level::Error)
            .map(|(_, m)| m)
            .collect();
        assert_eq!(
            errors,
            vec![
                r#"kafka-upstream: dropped 2 message(s) to topic t after 3 attempt(s); last error: error status, status 500, error_code 50001, message "broker down""#
            ]
        );
        // Backoff doubled: failures at 1, 11, 31 (10 then 20 ms).
        assert_eq!(now, 32);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff_ms(100, 1), 100);
        assert_eq!(backoff_ms(100, 2), 200);
        assert_eq!(backoff_ms(100, 9), 25_600);
        assert_eq!(backoff_ms(100, 10), 30_000);
        assert_eq!(backoff_ms(100, 1000), 30_000);
        assert_eq!(backoff_ms(60_000, 3), 60_000);
        assert_eq!(backoff_ms(0, 5), 0);
    }

    #[test]
    fn buffer_full_rejects_until_records_leave() {
        let mut p = Producer::new(config(
            r#","producer_async_buffering_limits_messages_in_memory":3,"producer_async_flush_timeout":1"#,
        ));
        let mut t = FakeTransport::default();
        put(&mut p, 0, "a");
        put(&mut p, 0, "b");
        // Two topics need two places: all or nothing.
        assert_eq!(
            p.enqueue(0, &topics(&["t", "u"]), None, b"c".to_vec()),
            Err(Refusal::BufferFull)
        );
        put(&mut p, 0, "c");
        assert_eq!(p.admit(1), Err(Refusal::BufferFull));
        assert_eq!(p.stats().rejected, 3);
        let logs = p.take_logs();
        assert_eq!(logs.len(), 1, "logged once: {logs:?}");
        assert!(logs[0]
            .1
            .contains("the message buffer is full (2 messages held, limit 3)"));
        // In flight still counts.
        p.on_tick(&mut t, 1);
        let calls = t.take();
        assert_eq!(p.admit(1), Err(Refusal::BufferFull));
        ack(&mut p, &calls[0], 2);
        assert_eq!(p.admit(3), Ok(()));
        assert_eq!(Refusal::BufferFull.reason(), "the message buffer is full");
    }

    #[test]
    fn health_gating_opens_and_closes() {
        let mut p = Producer::new(config(
            r#","producer_async_flush_timeout":1,"producer_request_retries_backoff_timeout":0,"producer_async_health_failure_threshold":2,"producer_async_health_probe_interval":1000,"producer_async_health_recovery_threshold":2"#,
        ));
        let mut t = FakeTransport::default();
        put(&mut p, 0, "a");
        p.on_tick(&mut t, 1);
        fail(&mut p, &t.take()[0], 2);
        assert!(p.is_healthy(), "one failure is below the threshold");
        p.on_tick(&mut t, 3);
        fail(&mut p, &t.take()[0], 4);
        assert!(!p.is_healthy());
        assert_eq!(p.admit(1), Err(Refusal::Unhealthy));
        assert_eq!(
            p.enqueue(5, &topics(&["t"]), None, b"x".to_vec()),
            Err(Refusal::Unhealthy)
        );
        assert!(p
            .take_logs()
            .iter()
            .any(|(l, m)| *l == Level::Error && m.contains("unhealthy after 2 consecutive failed flushes")));
        // Buffered records wait: no flush, and no probe before the interval.
        p.on_tick(&mut t, 1003);
        assert!(t.take().is_empty());
        assert_eq!(p.depth(), 1);
        // The probe: GET /topics.
        p.on_tick(&mut t, 1004);
        let probe = t.take();
        assert_eq!(probe.len(), 1);
        assert_eq!(probe[0].header(":method"), "GET");
        assert_eq!(probe[0].header(":path"), "/topics");
        // Only one probe at a time.
        p.on_tick(&mut t, 2500);
        assert!(t.take().is_empty());
        assert!(p.on_response(probe[0].token, &reply("503", ""), 2600));
        assert!(!p.is_healthy());
        p.on_tick(&mut t, 2600);
        let probe = t.take();
        assert_eq!(probe.len(), 1, "next probe one interval after the last");
        assert!(p.on_response(probe[0].token, &reply("200", "[\"t\"]"), 2700));
        assert!(!p.is_healthy(), "recovery needs two successes");
        p.on_tick(&mut t, 3600);
        let probe = t.take();
        assert!(p.on_response(probe[0].token, &reply("200", "[\"t\"]"), 3700));
        assert!(p.is_healthy());
        assert!(p
            .take_logs()
            .iter()
            .any(|(l, m)| *l == Level::Info && m.contains("healthy again after 2 successful probe(s)")));
        assert_eq!(p.admit(1), Ok(()));
        // The held record goes at the next tick, its attempts not used up by the wait.
        p.on_tick(&mut t, 3701);
        let calls = t.take();
        assert_eq!(calls[0].v2_messages(), vec!["a"]);
        ack(&mut p, &calls[0], 3702);
        assert_eq!(p.stats().sent, 1);
        assert_eq!(p.stats().batches, 3);
    }

    #[test]
    fn host_refusals_count_as_failed_flushes() {
        let mut p = Producer::new(config(
            r#","producer_async_flush_timeout":1,"producer_async_health_failure_threshold":1"#,
        ));
        let mut t = FakeTransport {
            refuse: true,
            ..FakeTransport::default()
        };
        put(&mut p, 0, "a");
        p.on_tick(&mut t, 1);
        assert!(!p.is_healthy());
        assert_eq!(p.stats().retried, 1);
        assert!(p
            .take_logs()
            .iter()
            .any(|(_, m)| m.contains(r#"call rejected, dispatch_status "call rejected by the host: BadArgument""#)));
        // A refused probe is a failed probe.
        p.on_tick(&mut t, 5001);
        assert!(!p.is_healthy());
        t.refuse = false;
        p.on_tick(&mut t, 10_001);
        let probe = t.take();
        assert_eq!(probe.len(), 1);
        p.on_response(probe[0].token, &reply("200", "[]"), 10_002);
        assert!(p.is_healthy());
    }

    #[test]
    fn v2_partial_failure_retries_only_failed_records() {
        let mut p = Producer::new(config(r#","producer_async_flush_timeout":1"#));
        let mut t = FakeTransport::default();
        for m in ["a", "b", "c"] {
            put(&mut p, 0, m);
        }
        p.on_tick(&mut t, 1);
        let call = t.take().remove(0);
        assert_eq!(call.v2_messages(), vec!["a", "b", "c"]);
        let body = r#"{"offsets":[{"partition":0,"offset":5,"error_code":null,"error":null},{"partition":null,"offset":null,"error_code":50003,"error":"retriable"},{"partition":0,"offset":6,"error_code":null,"error":null}]}"#;
        assert!(p.on_response(call.token, &reply("200", body), 2));
        assert_eq!(p.stats().sent, 2);
        assert_eq!(p.depth(), 1);
        p.on_tick(&mut t, 102);
        let retry = t.take().remove(0);
        assert_eq!(retry.v2_messages(), vec!["b"]);
        ack(&mut p, &retry, 103);
        assert_eq!(p.stats().sent, 3);
        assert!(p.is_healthy());
    }

    /// Karapace's answer to a batch in which record `failed` could not be written: 422, one
    /// `offsets` entry per record.
    fn karapace_422(n: usize, failed: usize) -> String {
        let offsets: Vec<String> = (0..n)
            .map(|i| {
                if i == failed {
                    r#"{"partition":null,"offset":null,"error_code":1,"error":"MessageSizeTooLargeError"}"#.to_string()
                } else {
                    format!(r#"{{"partition":0,"offset":{i},"error_code":null,"error":null}}"#)
                }
            })
            .collect();
        format!(
            r#"{{"key_schema_id":null,"value_schema_id":null,"offsets":[{}]}}"#,
            offsets.join(",")
        )
    }

    #[test]
    fn karapace_422_settles_each_record_and_keeps_the_proxy_healthy() {
        let mut p = Producer::new(config(
            r#","producer_async_flush_timeout":1,"producer_request_retries_max_attempts":4,"producer_request_retries_backoff_timeout":10,"producer_async_health_failure_threshold":1"#,
        ));
        let mut t = FakeTransport::default();
        for i in 0..11 {
            put(&mut p, 0, &format!("m{i}"));
        }
        p.on_tick(&mut t, 1);
        let call = t.take().remove(0);
        assert_eq!(call.v2_messages().len(), 11);
        assert!(p.on_response(call.token, &reply("422", &karapace_422(11, 4)), 2));
        assert_eq!(p.stats().sent, 10);
        assert_eq!(p.depth(), 1);
        assert!(p.is_healthy());
        // The failed record alone, until its attempts are used up; the proxy stays healthy
        // (threshold 1) because the record already failed beside acknowledged ones.
        let mut now = 2;
        let mut resent = Vec::new();
        while p.depth() > 0 && now < 10_000 {
            p.on_tick(&mut t, now);
            for c in t.take() {
                resent.push(c.v2_messages());
                assert!(p.on_response(c.token, &reply("422", &karapace_422(1, 0)), now));
                assert!(p.is_healthy(), "unhealthy after a record-level failure at {now}");
            }
            now += 1;
        }
        assert_eq!(
            resent,
            vec![vec!["m4".to_string()]; 3],
            "only the failed record is sent again"
        );
        assert_eq!(
            *p.stats(),
            Stats {
                accepted: 11,
                sent: 10,
                failed: 4,
                retried: 3,
                dropped: 1,
                rejected: 0,
                batches: 4
            }
        );
        assert!(p.take_logs().iter().any(|(l, m)| *l == Level::Error
            && m.contains("dropped 1 message(s) to topic t after 4 attempt(s); last error: per-record error, status 422, error_code 1, message \"MessageSizeTooLargeError\"")));
    }

    /// Redpanda's answer to a batch one bad record sank: one `offsets` entry for the partition,
    /// with Kafka's MESSAGE_TOO_LARGE (`src/v/pandaproxy/json/requests/produce.h`; host-sim's
    /// redpanda flavour answers the same).
    const REDPANDA_BATCH_REFUSED: &str = r#"{"offsets":[{"partition":0,"error_code":10,"offset":-1}]}"#;

    /// Redpanda's answer to a batch it wrote: one `offsets` entry for the partition, not one per
    /// record. Every record is acknowledged once; nothing is sent again.
    #[test]
    fn a_batch_redpanda_wrote_is_acknowledged_from_its_partition_entry() {
        let mut p = Producer::new(config(r#","producer_async_flush_timeout":1"#));
        let mut t = FakeTransport::default();
        for m in ["a", "b", "c"] {
            put(&mut p, 0, m);
        }
        p.on_tick(&mut t, 1);
        let call = t.take().remove(0);
        assert_eq!(call.v2_messages(), vec!["a", "b", "c"]);
        assert!(p.on_response(
            call.token,
            &reply("200", r#"{"offsets":[{"partition":0,"offset":7}]}"#),
            1
        ));
        assert_eq!((p.stats().sent, p.depth()), (3, 0));
        for now in 2..100 {
            p.on_tick(&mut t, now);
        }
        assert!(t.take().is_empty(), "a written batch was sent again");
        assert!(p.is_healthy());
    }

    #[test]
    fn a_batch_refused_as_a_whole_is_retried_record_by_record() {
        let mut p = Producer::new(config(
            r#","producer_async_flush_timeout":1,"producer_request_retries_max_attempts":3,"producer_request_retries_backoff_timeout":10,"producer_async_health_failure_threshold":2"#,
        ));
        let mut t = FakeTransport::default();
        for m in ["a", "bad", "c"] {
            put(&mut p, 0, m);
        }
        p.on_tick(&mut t, 1);
        let call = t.take().remove(0);
        assert_eq!(call.v2_messages(), vec!["a", "bad", "c"]);
        // One entry for three records: it cannot be matched, so every record failed.
        assert!(p.on_response(call.token, &reply("200", REDPANDA_BATCH_REFUSED), 1));
        assert_eq!((p.stats().sent, p.depth()), (0, 3));
        // Each is now sent in a call of its own; the good ones are written, the bad one is
        // refused alone until its attempts are used up, and the REST proxy stays healthy.
        let mut now = 2;
        let mut calls = Vec::new();
        while p.depth() > 0 && now < 10_000 {
            p.on_tick(&mut t, now);
            for c in t.take() {
                let messages = c.v2_messages();
                let answer = if messages == ["bad"] {
                    REDPANDA_BATCH_REFUSED.to_string()
                } else {
                    v2_ack(1)
                };
                assert!(p.on_response(c.token, &reply("200", &answer), now));
                assert!(p.is_healthy(), "unhealthy after a record-level failure at {now}");
                calls.push(messages);
            }
            now += 1;
        }
        let alone = |m: &str| vec![m.to_string()];
        assert_eq!(calls, vec![alone("a"), alone("bad"), alone("c"), alone("bad")]);
        assert_eq!((p.stats().sent, p.stats().dropped), (2, 1));
    }

    #[test]
    fn an_outage_keeps_a_batch_together() {
        let mut p = Producer::new(config(
            r#","producer_async_flush_timeout":1,"producer_request_retries_backoff_timeout":0,"producer_async_health_failure_threshold":5"#,
        ));
        let mut t = FakeTransport::default();
        put(&mut p, 0, "a");
        put(&mut p, 0, "b");
        p.on_tick(&mut t, 1);
        let call = t.take().remove(0);
        fail(&mut p, &call, 1);
        p.on_tick(&mut t, 2);
        let calls = t.take();
        assert_eq!(calls.len(), 1, "a 5xx says nothing about the records: one batch again");
        assert_eq!(calls[0].v2_messages(), vec!["a", "b"]);
    }

    #[test]
    fn fresh_records_failing_beside_a_bad_one_still_count_against_health() {
        let mut p = Producer::new(config(
            r#","producer_async_flush_timeout":1,"producer_request_retries_backoff_timeout":0,"producer_async_health_failure_threshold":1"#,
        ));
        let mut t = FakeTransport::default();
        put(&mut p, 0, "a");
        put(&mut p, 0, "b");
        p.on_tick(&mut t, 1);
        let call = t.take().remove(0);
        p.on_response(call.token, &reply("422", &karapace_422(2, 1)), 1);
        assert!(p.is_healthy());
        // Kafka goes away: the bad record and a fresh one both fail; the fresh one has not
        // shown itself to be the problem, so the flush counts as failed.
        put(&mut p, 2, "c");
        p.on_tick(&mut t, 3);
        let call = t.take().remove(0);
        assert_eq!(call.v2_messages(), vec!["b", "c"]);
        let down = r#"{"offsets":[{"error_code":1,"error":"timed out waiting to publish message"},{"error_code":1,"error":"timed out waiting to publish message"}]}"#;
        p.on_response(call.token, &reply("422", down), 4);
        assert!(!p.is_healthy());
    }

    #[test]
    fn no_reply_for_a_bad_record_still_counts_against_health() {
        let mut p = Producer::new(config(
            r#","producer_async_flush_timeout":1,"producer_request_retries_backoff_timeout":0,"producer_async_health_failure_threshold":1"#,
        ));
        let mut t = FakeTransport::default();
        put(&mut p, 0, "a");
        put(&mut p, 0, "b");
        p.on_tick(&mut t, 1);
        let call = t.take().remove(0);
        p.on_response(call.token, &reply("200", &karapace_422(2, 1)), 1);
        p.on_tick(&mut t, 2);
        let call = t.take().remove(0);
        assert_eq!(call.v2_messages(), vec!["b"]);
        p.on_response(call.token, &ReplyView::default(), 3);
        assert!(!p.is_healthy(), "no reply says nothing about the record");
    }

    #[test]
    fn ready_retries_keep_arrival_order_before_fresh_records() {
        let mut p = Producer::new(config(
            r#","producer_async_flush_timeout":1,"producer_request_retries_backoff_timeout":10,"producer_async_health_failure_threshold":100"#,
        ));
        let mut t = FakeTransport::default();
        put(&mut p, 0, "a");
        p.on_tick(&mut t, 1);
        fail(&mut p, &t.take()[0], 1); // a: attempt 1, due 11
        p.on_tick(&mut t, 11);
        put(&mut p, 11, "b");
        let call = t.take().remove(0);
        assert_eq!(call.v2_messages(), vec!["a"]);
        fail(&mut p, &call, 11); // a: attempt 2, due 31
        p.on_tick(&mut t, 12);
        fail(&mut p, &t.take()[0], 12); // b: attempt 1, due 22
        put(&mut p, 40, "c");
        p.on_tick(&mut t, 41);
        let call = t.take().remove(0);
        assert_eq!(call.v2_messages(), vec!["a", "b", "c"]);
    }

    #[test]
    fn v3_streaming_batches() {
        let mut p = Producer::new(config(
            r#","rest_proxy":{"upstream":"kafka_rest","timeout":500,"api":"v3","cluster_id":"lkc-1"},"producer_async_flush_timeout":1"#,
        ));
        let mut t = FakeTransport::default();
        p.enqueue(0, &topics(&["t"]), Some(b"k"), b"{\"n\":1}".to_vec())
            .unwrap();
        put(&mut p, 0, "{\"n\":2}");
        put(&mut p, 0, "{\"n\":3}");
        p.on_tick(&mut t, 1);
        let call = t.take().remove(0);
        assert_eq!(call.header(":path"), "/v3/clusters/lkc-1/topics/t/records");
        assert_eq!(call.header("content-type"), "application/json");
        let records: Vec<Value> = serde_json::Deserializer::from_slice(&call.body)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0]["key"]["data"], "aw==");
        assert_eq!(call.body.iter().filter(|b| **b == b'\n').count(), 2);
        let ok = |o: u32| {
            format!(r#"{{"error_code":200,"cluster_id":"lkc-1","topic_name":"t","partition_id":0,"offset":{o}}}"#)
        };
        let body = format!(
            "{}\r\n{}\r\n{}\r\n",
            ok(1),
            r#"{"error_code":50003,"message":"retriable"}"#,
            ok(2)
        );
        assert!(p.on_response(call.token, &reply("200", &body), 2));
        assert_eq!(p.stats().sent, 2);
        p.on_tick(&mut t, 102);
        let retry = t.take().remove(0);
        let v: Value = serde_json::from_slice(&retry.body).unwrap();
        assert_eq!(v["value"]["data"], "eyJuIjoyfQ=="); // {"n":2}
        assert!(p.on_response(retry.token, &reply("200", &ok(3)), 103));
        assert_eq!(p.stats().sent, 3);
        assert_eq!(p.depth(), 0);
    }

    #[test]
    fn several_topics_and_the_call_cap() {
        let mut p = Producer::new(config(
            r#","producer_request_limits_messages_per_request":1,"producer_async_buffering_limits_messages_in_memory":1000"#,
        ));
        let mut t = FakeTransport::default();
        for i in 0..100 {
            p.enqueue(0, &topics(&["t", "u"]), None, format!("m{i}").into_bytes())
                .unwrap();
        }
        assert_eq!(p.depth(), 200);
        p.on_tick(&mut t, 1);
        let calls = t.take();
        assert_eq!(calls.len(), MAX_CALLS_IN_FLIGHT);
        assert_eq!(p.calls_in_flight(), MAX_CALLS_IN_FLIGHT);
        let to_u = calls.iter().filter(|c| c.header(":path") == "/topics/u").count();
        assert!(to_u > 0 && to_u < MAX_CALLS_IN_FLIGHT, "both topics served: {to_u}");
        p.on_tick(&mut t, 2);
        assert!(t.take().is_empty(), "no more until calls come back");
        for c in &calls {
            ack(&mut p, c, 3);
        }
        p.on_tick(&mut t, 4);
        assert_eq!(t.take().len(), MAX_CALLS_IN_FLIGHT);
    }

    #[test]
    fn metric_updates() {
        let mut p = Producer::new(config(
            r#","producer_request_limits_messages_per_request":2,"producer_async_buffering_limits_messages_in_memory":3"#,
        ));
        let mut t = FakeTransport::default();
        assert_eq!(p.take_metric_updates(), vec![MetricUpdate::Set(Metric::BufferDepth, 0)]);
        for m in ["a", "b", "c"] {
            put(&mut p, 0, m);
        }
        assert!(p.admit(1).is_err());
        p.on_tick(&mut t, 1);
        let call = t.take().remove(0);
        assert_eq!(
            p.take_metric_updates(),
            vec![
                MetricUpdate::Add(Metric::Rejected, 1),
                MetricUpdate::Set(Metric::BufferDepth, 3),
                MetricUpdate::Record(Metric::BatchSize, 2),
            ]
        );
        let body = r#"{"offsets":[{"offset":1},{"error_code":50002,"error":"x"}]}"#;
        p.on_response(call.token, &reply("200", body), 8);
        assert_eq!(
            p.take_metric_updates(),
            vec![
                MetricUpdate::Add(Metric::Sent, 1),
                MetricUpdate::Add(Metric::Failed, 1),
                MetricUpdate::Add(Metric::Retried, 1),
                MetricUpdate::Add(Metric::RestCalls2xx, 1),
                MetricUpdate::Set(Metric::BufferDepth, 2),
                MetricUpdate::Record(Metric::RestCallLatency, 7),
            ]
        );
        assert!(p.take_metric_updates().is_empty());
        // Every update fits its metric's type (Kong traps otherwise).
        p.on_tick(&mut t, 200);
        for c in t.take() {
            p.on_response(c.token, &ReplyView::default(), 210);
        }
        let updates = p.take_metric_updates();
        assert!(
            updates.contains(&MetricUpdate::Add(Metric::RestCallsNoReply, 1)),
            "{updates:?}"
        );
        assert!(updates.iter().all(|u| u.fits_its_metric()));
        // A host refusal counts as a call without a reply, and has no latency.
        let mut refusing = FakeTransport {
            refuse: true,
            ..FakeTransport::default()
        };
        put(&mut p, 300, "d");
        p.on_tick(&mut refusing, 2000);
        let updates = p.take_metric_updates();
        assert!(
            updates
                .iter()
                .any(|u| matches!(u, MetricUpdate::Add(Metric::RestCallsNoReply, n) if *n >= 1)),
            "{updates:?}"
        );
        assert!(!updates.iter().any(|u| u.metric() == Metric::RestCallLatency));
    }

    #[test]
    fn shutdown_drops_what_is_held() {
        let mut p = Producer::new(config(r#","producer_request_limits_messages_per_request":2"#));
        let mut t = FakeTransport::default();
        for m in ["a", "b", "c"] {
            put(&mut p, 0, m);
        }
        p.on_tick(&mut t, 1);
        assert_eq!(t.take().len(), 1);
        p.shutdown();
        assert_eq!(p.depth(), 0);
        assert_eq!(p.stats().dropped, 3);
        assert_eq!(
            p.take_logs(),
            vec![(
                Level::Error,
                "kafka-upstream: dropped 3 message(s) to topic t at shutdown (2 in flight, outcome unknown)"
                    .to_string()
            )]
        );
    }

    #[test]
    fn a_drain_sends_every_partial_batch_at_once_and_ends_drained() {
        // Batches of 2, a flush timeout far away: without the drain nothing would go yet.
        let mut p = Producer::new(config(
            r#","producer_request_limits_messages_per_request":2,"producer_async_flush_timeout":60000"#,
        ));
        let mut t = FakeTransport::default();
        for m in ["a", "b", "c"] {
            put(&mut p, 0, m);
        }
        p.enqueue(0, &topics(&["other"]), None, b"d".to_vec()).unwrap();
        p.on_tick(&mut t, 1);
        let early = t.take();
        assert_eq!(early.len(), 1, "only the full batch goes before the drain");
        assert!(!p.is_drained());
        p.begin_drain(&mut t, 2);
        assert!(p.is_draining());
        let drained = t.take();
        let mut sent: Vec<String> = early.iter().chain(&drained).flat_map(|c| c.v2_messages()).collect();
        sent.sort();
        assert_eq!(sent, vec!["a", "b", "c", "d"], "every held record is on its way");
        assert_eq!(
            p.take_logs(),
            vec![(
                Level::Info,
                "kafka-upstream: shutting down: sending the 4 buffered message(s) before the plugin stops".to_string()
            )]
        );
        for call in early.iter().chain(&drained) {
            assert!(!p.is_drained(), "drained with calls in flight");
            ack(&mut p, call, 3);
        }
        assert!(p.is_drained());
        assert_eq!(p.stats().sent, 4);
        assert_eq!(p.stats().dropped, 0);
    }

    #[test]
    fn a_draining_producer_refuses_new_records_and_keeps_retry_backoff() {
        let mut p = Producer::new(config(
            r#","producer_async_flush_timeout":60000,"producer_request_retries_max_attempts":3,"producer_request_retries_backoff_timeout":1000"#,
        ));
        let mut t = FakeTransport::default();
        put(&mut p, 0, "a");
        p.begin_drain(&mut t, 0);
        let first = t.take();
        assert_eq!(first.len(), 1);
        assert_eq!(p.admit(1), Err(Refusal::Unhealthy), "a record accepted while draining");
        p.on_response(first[0].token, &reply("500", "{}"), 1);
        assert!(!p.is_drained(), "the failed record is still held for its retry");
        p.on_tick(&mut t, 2);
        assert!(t.take().is_empty(), "retried before its backoff");
        p.on_tick(&mut t, 5_000);
        let retry = t.take();
        assert_eq!(retry.len(), 1);
        ack(&mut p, &retry[0], 5_001);
        assert!(p.is_drained());
        assert_eq!(p.stats().sent, 1);
    }

    #[test]
    fn unknown_tokens_are_not_ours() {
        let mut p = Producer::new(config(""));
        assert!(!p.on_response(42, &reply("200", "{}"), 0));
    }

    #[test]
    fn tick_periods() {
        assert_eq!(tick_period_ms(&config("")), MAX_TICK_MS);
        assert_eq!(tick_period_ms(&config(r#","producer_async_flush_timeout":5"#)), 5);
        assert_eq!(
            tick_period_ms(&config(r#","producer_request_retries_backoff_timeout":0"#)),
            MAX_TICK_MS
        );
        assert_eq!(
            tick_period_ms(&config(r#","producer_request_retries_backoff_timeout":3"#)),
            3
        );
    }

    #[test]
    fn schema_registry_batches_wait_for_the_ids_then_carry_them() {
        let cfg = config(
            r#","rest_proxy":{"upstream":"kafka_rest","timeout":500,"format":"json"},"message":{"mode":"body"},
               "schema_registry":{"confluent":{"url":"http://sr:8081","value_schema":{"subject_name":"t-value"}}}"#,
        );
        let settings = cfg.schema_registry.clone().unwrap();
        let resolver = Rc::new(RefCell::new(crate::schema_registry::Resolver::new(settings)));
        let mut p = Producer::new(cfg);
        p.set_schema_registry(Some(Rc::clone(&resolver)));
        let mut t = FakeTransport::default();
        put(&mut p, 0, r#"{"a":1}"#);
        put(&mut p, 0, r#"{"a":2}"#);
        // No ids yet: nothing is sent, however late, and the records stay held.
        p.on_tick(&mut t, 5_000);
        assert!(t.take().is_empty());
        // A failed lookup: still nothing sent.
        resolver.borrow_mut().calls_due(0);
        resolver
            .borrow_mut()
            .on_reply(crate::schema_registry::Part::Value, Err("connection refused"), 5_000);
        p.on_tick(&mut t, 5_010);
        assert!(t.take().is_empty());
        // Resolved: one batch with the schema's content type and id.
        resolver.borrow_mut().calls_due(6_000);
        resolver.borrow_mut().on_reply(
            crate::schema_registry::Part::Value,
            Ok((200, br#"{"id":9,"schemaType":"JSON"}"#)),
            6_000,
        );
        p.on_tick(&mut t, 6_010);
        let calls = t.take();
        assert_eq!(calls.len(), 1);
        assert!(calls[0].headers.contains(&(
            "content-type".to_string(),
            "application/vnd.kafka.jsonschema.v2+json".to_string()
        )));
        assert_eq!(
            String::from_utf8_lossy(&calls[0].body),
            r#"{"value_schema_id":9,"records":[{"value":{"a":1}},{"value":{"a":2}}]}"#
        );
        assert!(p.on_response(calls[0].token, &reply("200", &v2_ack(2)), 6_020));
        assert!(p.is_drained());
    }
    /// The requests of random schedules (arrivals, ticks, and replies that acknowledge, fail
    /// with 5xx, time out, fail in part, or refuse a batch whole with 422) are exactly those the
    /// producer sent before bodies were built as records arrive (issue 15): the FNV-1a hash of
    /// every body sent (4,171,729 bytes, 46,109 requests over 300 schedules) and the final
    /// statistics, as the whole-batch builder of commit b2d36c8 produced them.
    #[test]
    fn random_schedules_send_the_bytes_the_whole_batch_builder_sent() {
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut out = String::new();
        for round in 0..300 {
            let per_request = 1 + rand(5);
            let bytes = 40 + rand(200);
            let cfg = format!(
                r#","producer_request_limits_messages_per_request":{per_request},"producer_request_limits_bytes_per_request":{bytes},"producer_async_flush_timeout":{},"producer_request_retries_backoff_timeout":{},"producer_request_retries_max_attempts":{},"producer_async_health_failure_threshold":1000"#,
                1 + rand(30),
                rand(20),
                1 + rand(4)
            );
            let mut p = Producer::new(config(&cfg));
            let mut t = FakeTransport::default();
            let mut in_flight: Vec<Call> = Vec::new();
            let mut next = 0;
            let mut now = 0;
            for _step in 0..400 {
                match rand(4) {
                    0 => {
                        for _ in 0..=rand(4) {
                            let message = format!("m{next}{}", "x".repeat(rand(40) as usize));
                            next += 1;
                            put(&mut p, now, &message);
                        }
                    }
                    1 | 2 => {
                        now += 1 + rand(10);
                        p.on_tick(&mut t, now);
                        let calls = t.take();
                        for call in &calls {
                            out.push_str(&format!("{round} {now} {}\n", String::from_utf8_lossy(&call.body)));
                        }
                        in_flight.extend(calls);
                    }
                    _ if !in_flight.is_empty() => {
                        let call = in_flight.swap_remove(rand(in_flight.len() as u64) as usize);
                        let messages = call.v2_messages();
                        let (status, body, _) = random_v2_reply(messages.len(), false, &mut rand);
                        assert!(p.on_response(call.token, &reply(status, &body), now));
                    }
                    _ => {}
                }
            }
            out.push_str(&format!("{round} stats {:?}\n", p.stats()));
        }
        let hash = out.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        assert_eq!((out.len(), hash), (4_171_729, 0x7d09_f91e_c3b4_213d));
    }
}
