//! Record timestamps: milliseconds since the Unix epoch internally (Kafka's `CreateTime`), ISO-8601
//! UTC strings in v3 JSON the way Jackson writes and reads a `java.time.Instant`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let d = i64::from(d);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (`civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats epoch milliseconds as Jackson formats an `Instant`: `2021-02-05T19:14:42Z`, with
/// `.123` when the milliseconds are not zero.
pub fn format_iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, (sod % 3600) / 60, sod % 60);
    if millis == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z")
    }
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses an ISO-8601 instant, `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, into epoch
/// milliseconds (fractions below a millisecond are dropped).
pub fn parse_iso8601(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once(['T', 't'])?;
    let mut date_parts = date.splitn(3, '-');
    let (y, mo, d) = (
        digits(date_parts.next()?)?,
        digits(date_parts.next()?)?,
        digits(date_parts.next()?)?,
    );
    if date.len() != 10 || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let (clock, offset_secs) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        (clock, 0i64)
    } else {
        let idx = time.rfind(['+', '-'])?;
        let (clock, off) = time.split_at(idx);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        let (oh, om) = (digits(oh)?, digits(om)?);
        if oh > 23 || om > 59 {
            return None;
        }
        (clock, sign * (i64::from(oh) * 3600 + i64::from(om) * 60))
    };
    let (hms, fraction) = match clock.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (clock, None),
    };
    let mut hms_parts = hms.splitn(3, ':');
    let (h, mi, sec) = (
        digits(hms_parts.next()?)?,
        digits(hms_parts.next()?)?,
        digits(hms_parts.next()?)?,
    );
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let millis = match fraction {
        Some(f) => {
            digits(f)?;
            let mut padded: String = f.chars().take(3).collect();
            while padded.len() < 3 {
                padded.push('0');
            }
            i64::from(digits(&padded)?)
        }
        None => 0,
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(sec) - offset_secs;
    secs.checked_mul(1000)?.checked_add(millis)
}

/// Reads a v3 `timestamp` the way Jackson's `InstantDeserializer` does: a string is ISO-8601, a
/// number is epoch *seconds* (with an optional fraction).
pub fn parse_json_instant(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::String(s) => parse_iso8601(s),
        serde_json::Value::Number(n) => {
            if let Some(secs) = n.as_i64() {
                secs.checked_mul(1000)
            } else {
                let f = n.as_f64()?;
                let ms = (f * 1000.0).round();
                if ms.is_finite() && ms.abs() < 9.0e15 {
                    Some(ms as i64)
                } else {
                    None
                }
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_jackson() {
        assert_eq!(format_iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_iso8601(1_612_552_482_000), "2021-02-05T19:14:42Z");
        assert_eq!(format_iso8601(1_612_552_482_123), "2021-02-05T19:14:42.123Z");
        assert_eq!(format_iso8601(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_iso8601(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_iso_instants() {
        assert_eq!(parse_iso8601("2021-02-05T19:14:42Z"), Some(1_612_552_482_000));
        assert_eq!(parse_iso8601("2021-02-05T19:14:42.123456Z"), Some(1_612_552_482_123));
        assert_eq!(parse_iso8601("2021-02-05T19:14:42.1Z"), Some(1_612_552_482_100));
        assert_eq!(parse_iso8601("2021-02-05T20:14:42+01:00"), Some(1_612_552_482_000));
        assert_eq!(parse_iso8601("2021-02-05T18:14:42-01:00"), Some(1_612_552_482_000));
        for bad in [
            "",
            "2021-02-05",
            "2021-13-05T00:00:00Z",
            "2021-02-05T25:00:00Z",
            "2021-02-05T19:14:42",
            "x021-02-05T19:14:42Z",
            "2021-02-05T19:14:42.Z",
            "2021-02-05T19:14:42+1",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips() {
        for ms in [0i64, 1, 999, 1_000, 1_795_335_727_226, 253_402_300_799_999] {
            assert_eq!(parse_iso8601(&format_iso8601(ms)), Some(ms));
        }
    }

    #[test]
    fn json_numbers_are_seconds() {
        assert_eq!(
            parse_json_instant(&serde_json::json!(1_612_552_482)),
            Some(1_612_552_482_000)
        );
        assert_eq!(parse_json_instant(&serde_json::json!(1.5)), Some(1_500));
        assert_eq!(parse_json_instant(&serde_json::json!(true)), None);
        assert_eq!(parse_json_instant(&serde_json::json!(i64::MAX)), None);
        assert_eq!(parse_json_instant(&serde_json::json!(1e300)), None);
    }
}
