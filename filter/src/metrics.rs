//! The filter's metrics: their names, types and what updates them, in both modes. Plain Rust;
//! the glue defines them with `proxy_define_metric` and applies the [`MetricUpdate`]s that the
//! exchange ([`crate::host::Host::metric`]) and the producer
//! ([`crate::producer::Producer::take_metric_updates`]) produce.
//!
//! **Names.** Every metric is defined as `<prefix>.<name>`: `prefix` is the configuration's
//! `metrics.prefix`, else [`default_prefix`] (the Envoy plugin's `root_id`, else
//! `kafka_upstream`), so that several instances of the filter in one Envoy or Kong keep their
//! figures apart. The host adds its own prefix: Envoy exports custom metrics
//! as `wasmcustom.<defined name>` (envoy `source/extensions/common/wasm/context.cc`,
//! `Context::defineMetric`), ngx_wasm_module as `pw.<filter name>.<defined name>`
//! (Kong/ngx_wasm_module `docs/adr/005-metrics.md` and its host-differences notes, "Metrics
//! Prefixing"). ngx_wasm_module refuses a name longer than `max_metric_name_length`, 256 by
//! default (`ngx_wa.h` `NGX_WA_METRICS_DEFAULT_MAX_NAME_LEN`, checked in `ngx_wa_metrics.c`
//! `ngx_wa_metrics_define`), its own prefix included: [`PREFIX_MAX`] leaves room for it.
//!
//! **Host rules.** ngx_wasm_module traps where Envoy answers with a status
//! (`ngx_wa_metrics.c`: `ngx_wa_metrics_increment` accepts only counters, `ngx_wa_metrics_record`
//! only gauges and histograms; an unknown id fails too), so the filter increments counters only,
//! with non-negative amounts, sets gauges and records histogram samples only with
//! `proxy_record_metric`, and never touches a metric whose definition the host refused. A gauge
//! is per worker VM: Kong reports the most recently set worker's value (`get_gauge`), Envoy the
//! last value set by any VM.

/// One of the filter's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Counter: requests answered 200.
    Requests200,
    /// Counter: requests answered 400 (a topic outside the allowlist).
    Requests400,
    /// Counter: requests answered 413 (body larger than `max_body_size`).
    Requests413,
    /// Counter: requests answered with a 5xx (500, 502, 503, 504).
    Requests5xx,
    /// Counter: records the REST proxy acknowledged.
    Sent,
    /// Counter: failed sends of a record (every failed attempt counts once).
    Failed,
    /// Counter: failed records scheduled for another attempt (asynchronous mode).
    Retried,
    /// Counter: records given up: attempts exhausted, or still held when the plugin shut down
    /// (asynchronous mode).
    Dropped,
    /// Counter: records refused with 503 (asynchronous mode: buffer full or REST proxy unhealthy).
    Rejected,
    /// Counter: produce calls answered 2xx.
    RestCalls2xx,
    /// Counter: produce calls answered 4xx.
    RestCalls4xx,
    /// Counter: produce calls answered 5xx other than 504.
    RestCalls5xx,
    /// Counter: produce calls that timed out (Envoy's local 504, Kong's `:dispatch_status:
    /// timeout`; a REST proxy's own 504 too, which the filter treats alike).
    RestCallsTimeout,
    /// Counter: produce calls without a reply: connection failure or reset, or the host refused
    /// the call.
    RestCallsNoReply,
    /// Counter: produce calls answered with another status (1xx, 3xx, unreadable).
    RestCallsOther,
    /// Gauge: records the VM holds (asynchronous mode: waiting, retrying or in flight).
    BufferDepth,
    /// Histogram: records per REST proxy request (asynchronous mode).
    BatchSize,
    /// Histogram: milliseconds from dispatching a produce call to its reply (or timeout), by the
    /// host's clock.
    RestCallLatency,
}

/// A metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (`proxy_increment_metric`); `proxy_define_metric` type 0.
    Counter,
    /// Set to the current value (`proxy_record_metric`); type 1.
    Gauge,
    /// One sample per event (`proxy_record_metric`); type 2.
    Histogram,
}

impl MetricKind {
    /// The `metric_type` argument of `proxy_define_metric`.
    pub fn abi_type(self) -> u32 {
        match self {
            MetricKind::Counter => 0,
            MetricKind::Gauge => 1,
            MetricKind::Histogram => 2,
        }
    }
}

impl Metric {
    /// Every metric, in definition order.
    pub const ALL: [Metric; 18] = [
        Metric::Requests200,
        Metric::Requests400,
        Metric::Requests413,
        Metric::Requests5xx,
        Metric::Sent,
        Metric::Failed,
        Metric::Retried,
        Metric::Dropped,
        Metric::Rejected,
        Metric::RestCalls2xx,
        Metric::RestCalls4xx,
        Metric::RestCalls5xx,
        Metric::RestCallsTimeout,
        Metric::RestCallsNoReply,
        Metric::RestCallsOther,
        Metric::BufferDepth,
        Metric::BatchSize,
        Metric::RestCallLatency,
    ];

    /// The name after the prefix.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Requests200 => "requests_200",
            Metric::Requests400 => "requests_400",
            Metric::Requests413 => "requests_413",
            Metric::Requests5xx => "requests_5xx",
            Metric::Sent => "messages_sent",
            Metric::Failed => "messages_failed",
            Metric::Retried => "messages_retried",
            Metric::Dropped => "messages_dropped",
            Metric::Rejected => "messages_rejected",
            Metric::RestCalls2xx => "rest_calls_2xx",
            Metric::RestCalls4xx => "rest_calls_4xx",
            Metric::RestCalls5xx => "rest_calls_5xx",
            Metric::RestCallsTimeout => "rest_calls_timeout",
            Metric::RestCallsNoReply => "rest_calls_no_reply",
            Metric::RestCallsOther => "rest_calls_other",
            Metric::BufferDepth => "buffer_depth",
            Metric::BatchSize => "batch_size",
            Metric::RestCallLatency => "rest_call_latency_ms",
        }
    }

    /// Its type.
    pub fn kind(self) -> MetricKind {
        match self {
            Metric::BufferDepth => MetricKind::Gauge,
            Metric::BatchSize | Metric::RestCallLatency => MetricKind::Histogram,
            _ => MetricKind::Counter,
        }
    }

    /// Its position in [`Metric::ALL`].
    pub fn index(self) -> usize {
        Metric::ALL.iter().position(|m| *m == self).unwrap_or(0)
    }

    /// The counter of requests answered with `status`: 200, 400, 413, and every other status
    /// (the filter answers only 500, 502, 503 and 504 besides) as a 5xx.
    pub fn for_answer(status: u32) -> Metric {
        match status {
            200 => Metric::Requests200,
            400 => Metric::Requests400,
            413 => Metric::Requests413,
            _ => Metric::Requests5xx,
        }
    }

    /// The counter of produce calls that a reply belongs to, from its `:status` (`None`: no
    /// reply) and Kong's `:dispatch_status` (the fields of [`crate::rest::ReplyView`]). A 504 is
    /// a timeout, as the filter reads it (Envoy answers a call that hit its timeout with a local
    /// 504).
    pub fn for_reply(status: Option<&[u8]>, dispatch_status: Option<&[u8]>) -> Metric {
        let Some(status) = status else {
            return if dispatch_status == Some(&b"timeout"[..]) {
                Metric::RestCallsTimeout
            } else {
                Metric::RestCallsNoReply
            };
        };
        match std::str::from_utf8(status)
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
        {
            Some(504) => Metric::RestCallsTimeout,
            Some(200..=299) => Metric::RestCalls2xx,
            Some(400..=499) => Metric::RestCalls4xx,
            Some(500..=599) => Metric::RestCalls5xx,
            _ => Metric::RestCallsOther,
        }
    }
}

/// One change for the host's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricUpdate {
    /// Increment a counter by this much.
    Add(Metric, u64),
    /// Set a gauge.
    Set(Metric, u64),
    /// Record a histogram sample.
    Record(Metric, u64),
}

impl MetricUpdate {
    /// The metric it changes.
    pub fn metric(self) -> Metric {
        match self {
            MetricUpdate::Add(m, _) | MetricUpdate::Set(m, _) | MetricUpdate::Record(m, _) => m,
        }
    }

    /// Whether the update is the operation the metric's type allows (ngx_wasm_module traps on
    /// the others): increments for counters, sets for gauges, samples for histograms.
    pub fn fits_its_metric(self) -> bool {
        matches!(
            (self, self.metric().kind()),
            (MetricUpdate::Add(..), MetricKind::Counter)
                | (MetricUpdate::Set(..), MetricKind::Gauge)
                | (MetricUpdate::Record(..), MetricKind::Histogram)
        )
    }
}

/// The prefix used when the configuration has no `metrics.prefix` and the root id gives none.
pub const DEFAULT_PREFIX: &str = "kafka_upstream";

/// The longest prefix: 256 characters (ngx_wasm_module's default limit on a whole metric name)
/// less room for `pw.<filter name>.` and the longest metric name.
pub const PREFIX_MAX: usize = 160;

/// Whether `prefix` is a valid metric prefix: 1 to [`PREFIX_MAX`] characters, dot-separated
/// non-empty segments of ASCII letters, digits, `_` and `-` (what Envoy's and Prometheus'
/// exporters keep as is, apart from `-`).
pub fn is_valid_prefix(prefix: &str) -> bool {
    prefix.len() <= PREFIX_MAX
        && prefix
            .split('.')
            .all(|segment| !segment.is_empty() && segment.bytes().all(is_prefix_byte))
}

/// The regular expression (JSON Schema `pattern`) equivalent to [`is_valid_prefix`] apart from
/// the length.
pub const PREFIX_PATTERN: &str = "^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$";

fn is_prefix_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// The prefix when the configuration sets none: the host's `plugin_root_id` property when it is
/// an operator-chosen name (Envoy's `root_id`, which tells the filter's instances apart; the
/// shipped `envoy.yaml` names it `kafka_upstream`), else `kafka_upstream`. A root id of digits
/// only is not used: Kong's `plugin_root_id` is a number, not a name (real ngx_wasm_module
/// answered `0`; `ngx_proxy_wasm_properties.c` `get_filter_root_id`).
/// Characters other than ASCII letters, digits, `_` and `-` (dots included) become `_`, and the
/// result is cut to [`PREFIX_MAX`]: always a valid prefix.
pub fn default_prefix(root_id: &str) -> String {
    if root_id.is_empty() || root_id.bytes().all(|b| b.is_ascii_digit()) {
        return DEFAULT_PREFIX.to_string();
    }
    root_id
        .chars()
        .take(PREFIX_MAX)
        .map(|c| {
            if c.is_ascii() && is_prefix_byte(c as u8) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The name `metric` is defined under with `prefix`.
pub fn full_name(prefix: &str, metric: Metric) -> String {
    format!("{prefix}.{}", metric.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::ReplyView;

    #[test]
    fn names_kinds_and_order() {
        let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "names are distinct");
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
        }
        assert_eq!(Metric::BufferDepth.kind(), MetricKind::Gauge);
        assert_eq!(Metric::BatchSize.kind().abi_type(), 2);
        assert_eq!(Metric::RestCallLatency.kind(), MetricKind::Histogram);
        assert_eq!(Metric::Sent.kind().abi_type(), 0);
        assert_eq!(
            full_name("kafka_upstream", Metric::Sent),
            "kafka_upstream.messages_sent"
        );
        // The longest full name fits ngx_wasm_module's 256 with `pw.kafka_upstream.`.
        let longest = Metric::ALL.iter().map(|m| m.name().len()).max().unwrap();
        assert!(PREFIX_MAX + 1 + longest + "pw.kafka_upstream.".len() <= 256);
    }

    #[test]
    fn updates_fit_their_metric() {
        assert!(MetricUpdate::Add(Metric::Sent, 1).fits_its_metric());
        assert!(MetricUpdate::Set(Metric::BufferDepth, 1).fits_its_metric());
        assert!(MetricUpdate::Record(Metric::RestCallLatency, 1).fits_its_metric());
        assert!(!MetricUpdate::Add(Metric::BufferDepth, 1).fits_its_metric());
        assert!(!MetricUpdate::Record(Metric::Sent, 1).fits_its_metric());
        assert!(!MetricUpdate::Set(Metric::BatchSize, 1).fits_its_metric());
    }

    #[test]
    fn answers_and_replies_by_class() {
        let classes: Vec<Metric> = [200, 400, 413, 500, 502, 503, 504]
            .into_iter()
            .map(Metric::for_answer)
            .collect();
        assert_eq!(
            classes,
            [
                Metric::Requests200,
                Metric::Requests400,
                Metric::Requests413,
                Metric::Requests5xx,
                Metric::Requests5xx,
                Metric::Requests5xx,
                Metric::Requests5xx
            ]
        );
        let reply = |status: Option<&'static [u8]>, dispatch: Option<&'static [u8]>| ReplyView {
            status,
            dispatch_status: dispatch,
            body: b"",
        };
        let cases = [
            (reply(Some(b"200"), None), Metric::RestCalls2xx),
            (reply(Some(b"207"), None), Metric::RestCalls2xx),
            (reply(Some(b"422"), None), Metric::RestCalls4xx),
            (reply(Some(b"500"), None), Metric::RestCalls5xx),
            (reply(Some(b"503"), None), Metric::RestCalls5xx),
            (reply(Some(b"504"), None), Metric::RestCallsTimeout),
            (reply(Some(b"302"), None), Metric::RestCallsOther),
            (reply(Some(b"x"), None), Metric::RestCallsOther),
            (reply(None, Some(b"timeout")), Metric::RestCallsTimeout),
            (reply(None, Some(b"broken connection")), Metric::RestCallsNoReply),
            (reply(None, None), Metric::RestCallsNoReply),
        ];
        for (r, want) in cases {
            assert_eq!(Metric::for_reply(r.status, r.dispatch_status), want, "{r:?}");
        }
    }

    #[test]
    fn prefixes() {
        for good in ["a", "kafka_upstream", "orders.eu-1", "A_b-C.d"] {
            assert!(is_valid_prefix(good), "{good}");
        }
        let too_long = "x".repeat(PREFIX_MAX + 1);
        for bad in ["", ".", "a.", ".a", "a..b", "a b", "a/b", "é", "a:b", too_long.as_str()] {
            assert!(!is_valid_prefix(bad), "{bad}");
        }
        assert!(is_valid_prefix(&"x".repeat(PREFIX_MAX)));
        assert_eq!(default_prefix(""), "kafka_upstream");
        assert_eq!(default_prefix("0"), "kafka_upstream");
        assert_eq!(default_prefix("3735928559"), "kafka_upstream");
        assert_eq!(default_prefix("kafka_upstream"), "kafka_upstream");
        assert_eq!(default_prefix("orders"), "orders");
        assert_eq!(default_prefix("eu/orders v2"), "eu_orders_v2");
        assert_eq!(default_prefix("a.b"), "a_b");
        let long = default_prefix(&"r".repeat(1000));
        assert_eq!(long.len(), PREFIX_MAX);
        for root_id in ["é", "a..b", ".x", "x.", " ", "\u{0}", long.as_str()] {
            let p = default_prefix(root_id);
            assert!(is_valid_prefix(&p), "{root_id:?} -> {p}");
        }
    }
}
