//! What the probe observed, as one JSON object per event, logged as `probe:<event> <json>` at
//! INFO through `proxy_log`. The tests find the line by event name and assert on its fields, so
//! the filter needs no JSON dependency: this writer covers the few shapes it emits.

use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;

/// A JSON object under construction.
#[derive(Default)]
pub struct Report {
    fields: Vec<(String, String)>,
}

/// Escapes `s` as a JSON string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A JSON array of `[key, value]` string pairs.
pub fn pairs_json(pairs: &[(String, String)]) -> String {
    let items: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("[{},{}]", quote(k), quote(v)))
        .collect();
    format!("[{}]", items.join(","))
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Report::default()
    }

    /// Adds a field whose value is already JSON.
    pub fn raw(mut self, key: &str, json: String) -> Self {
        self.fields.push((key.to_string(), json));
        self
    }

    /// Adds a string field.
    pub fn str(self, key: &str, value: &str) -> Self {
        self.raw(key, quote(value))
    }

    /// Adds bytes as a (lossy UTF-8) string field, or `null` when absent.
    pub fn bytes(self, key: &str, value: Option<&[u8]>) -> Self {
        match value {
            Some(v) => self.str(key, &String::from_utf8_lossy(v)),
            None => self.raw(key, "null".into()),
        }
    }

    /// Adds an integer field.
    pub fn num(self, key: &str, value: impl Into<i128>) -> Self {
        let v: i128 = value.into();
        self.raw(key, v.to_string())
    }

    /// Adds a boolean field.
    pub fn bool(self, key: &str, value: bool) -> Self {
        self.raw(key, value.to_string())
    }

    /// The object as JSON text.
    pub fn json(&self) -> String {
        let items: Vec<String> = self.fields.iter().map(|(k, v)| format!("{}:{}", quote(k), v)).collect();
        format!("{{{}}}", items.join(","))
    }

    /// Logs the report as `probe:<event> <json>`.
    pub fn emit(&self, event: &str) {
        // proxy_log returns OK for any valid level and message (spec).
        let _ = hostcalls::log(LogLevel::Info, &format!("probe:{event} {}", self.json()));
    }
}
