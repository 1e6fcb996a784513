//! What `serve` tells its operator: the access log line of each request and the guest-defined
//! metrics in Prometheus text exposition format 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format>).

use crate::abi::MetricType;
use crate::state::Metric;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The Content-Type of [`prometheus_text`].
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric name as Prometheus accepts it (`[a-zA-Z_:][a-zA-Z0-9_:]*`): every other character
/// becomes `_` (`wasmcustom.kafka.sent` → `wasmcustom_kafka_sent`), and a name that would start
/// with a digit (or is empty) gets a leading `_`.
pub fn prometheus_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// HELP text escaped as the format asks (`\` and line feeds).
fn help_text(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The metrics as Prometheus text: one family per metric with `# HELP` and `# TYPE`, under the
/// name the profile exported it as, sanitized ([`prometheus_name`]). Counters and gauges are
/// one sample; a histogram is its `_count`, `_sum` and the `+Inf` bucket (host-sim keeps the
/// count and sum of every recorded value, not per-bucket counts). Two names that sanitize to
/// the same one would make an invalid family twice: the first (in name order) is kept.
pub fn prometheus_text(metrics: &BTreeMap<String, Metric>) -> String {
    let mut out = String::new();
    let mut seen = HashSet::new();
    for metric in metrics.values() {
        let name = prometheus_name(&metric.name);
        if !seen.insert(name.clone()) {
            continue;
        }
        let (kind, what) = match metric.kind {
            MetricType::Counter => ("counter", "counter"),
            MetricType::Gauge => ("gauge", "gauge"),
            MetricType::Histogram => ("histogram", "histogram"),
        };
        let help = help_text(&format!("proxy-wasm {what} {} defined by the filter", metric.name));
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        match metric.kind {
            MetricType::Counter | MetricType::Gauge => {
                let _ = writeln!(out, "{name} {}", metric.value);
            }
            MetricType::Histogram => {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", metric.count);
                let _ = writeln!(out, "{name}_sum {}", metric.sum);
                let _ = writeln!(out, "{name}_count {}", metric.count);
            }
        }
    }
    out
}

/// One access log line, Envoy's default format cut to what `serve` knows:
/// `[START] "METHOD PATH PROTOCOL" STATUS BYTES_RECEIVED BYTES_SENT DURATION_MS ROUTE`.
/// `STATUS` is 0 when the stream was reset without an answer; `ROUTE` `-` when none matched.
pub struct AccessLogLine<'a> {
    /// When the request arrived.
    pub start: SystemTime,
    /// Request method.
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// `HTTP/1.1`, ...
    pub protocol: &'a str,
    /// Response status, 0 for none.
    pub status: u16,
    /// Request body bytes read.
    pub received: u64,
    /// Response body bytes sent.
    pub sent: u64,
    /// Time to the answer.
    pub duration: Duration,
    /// The route's name.
    pub route: Option<&'a str>,
}

impl std::fmt::Display for AccessLogLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}] \"{} {} {}\" {} {} {} {} {}",
            rfc3339_millis(self.start),
            self.method,
            self.path.escape_default(),
            self.protocol,
            self.status,
            self.received,
            self.sent,
            self.duration.as_millis(),
            self.route.unwrap_or("-")
        )
    }
}

/// `2026-12-06T14:20:00.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, <https://howardhinnant.github.io/date_algorithms.html#civil_from_days>).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: &str, kind: MetricType, value: u64, count: u64, sum: u128) -> (String, Metric) {
        (
            name.to_string(),
            Metric {
                name: name.to_string(),
                kind,
                value,
                samples: Vec::new(),
                count,
                sum,
            },
        )
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(prometheus_name("wasmcustom.kafka_sent"), "wasmcustom_kafka_sent");
        assert_eq!(prometheus_name("pw.kafka-upstream.sent"), "pw_kafka_upstream_sent");
        assert_eq!(prometheus_name("9lives"), "_9lives");
        assert_eq!(prometheus_name(""), "_");
        assert_eq!(prometheus_name("a:b é"), "a:b__");
    }

    #[test]
    fn every_kind_renders_with_help_and_type() {
        let metrics: BTreeMap<String, Metric> = [
            metric("wasmcustom.sent", MetricType::Counter, 7, 0, 0),
            metric("wasmcustom.buffered", MetricType::Gauge, 3, 0, 0),
            metric("wasmcustom.batch", MetricType::Histogram, 20, 2, 30),
        ]
        .into_iter()
        .collect();
        let text = prometheus_text(&metrics);
        let expected = "\
# HELP wasmcustom_batch proxy-wasm histogram wasmcustom.batch defined by the filter
# TYPE wasmcustom_batch histogram
wasmcustom_batch_bucket{le=\"+Inf\"} 2
wasmcustom_batch_sum 30
wasmcustom_batch_count 2
# HELP wasmcustom_buffered proxy-wasm gauge wasmcustom.buffered defined by the filter
# TYPE wasmcustom_buffered gauge
wasmcustom_buffered 3
# HELP wasmcustom_sent proxy-wasm counter wasmcustom.sent defined by the filter
# TYPE wasmcustom_sent counter
wasmcustom_sent 7
";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_name_clash_after_sanitizing_keeps_one_family() {
        let metrics: BTreeMap<String, Metric> = [
            metric("a.b", MetricType::Counter, 1, 0, 0),
            metric("a_b", MetricType::Counter, 2, 0, 0),
        ]
        .into_iter()
        .collect();
        let text = prometheus_text(&metrics);
        assert_eq!(text.matches("# TYPE a_b counter").count(), 1, "{text}");
        assert!(text.contains("a_b 1\n"), "{text}");
    }

    #[test]
    fn help_escapes_backslashes_and_line_feeds() {
        let metrics: BTreeMap<String, Metric> = [metric("odd\\name\nx", MetricType::Gauge, 1, 0, 0)]
            .into_iter()
            .collect();
        let text = prometheus_text(&metrics);
        assert!(
            text.starts_with("# HELP odd_name_x proxy-wasm gauge odd\\\\name\\nx defined"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_571_600_123);
        assert_eq!(rfc3339_millis(t), "2026-12-06T15:40:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn access_log_line_format() {
        let line = AccessLogLine {
            start: UNIX_EPOCH,
            method: "POST",
            path: "/orders?id=1",
            protocol: "HTTP/1.1",
            status: 200,
            received: 9,
            sent: 27,
            duration: Duration::from_micros(3400),
            route: Some("kafka"),
        };
        assert_eq!(
            line.to_string(),
            "[1970-01-01T00:00:00.000Z] \"POST /orders?id=1 HTTP/1.1\" 200 9 27 3 kafka"
        );
    }
}
