//! The JSON shapes of `host-sim run`: request files, callout answers and the transcript.

/// Serializes bytes as a UTF-8 string when they are valid UTF-8, else as base64 with a marker.
pub mod bytes_as_text {
    use base64::Engine as _;
    use serde::Serializer;

    /// Serde `serialize_with` helper.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(bytes) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.serialize_str(&format!(
                "base64:{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )),
        }
    }
}
