//! The proxy-wasm wire formats the glue reads, decoded here so native tests reach them: the
//! request's header map as `proxy_get_header_map_pairs` returns it (the pairs format, decoded by
//! the workspace's one codec, `proxy-wasm-pairs`).

use crate::exchange::RequestHeaders;

/// The request headers in the host's serialized map (`proxy_get_header_map_pairs`), names and
/// values read in place. A name that is not UTF-8 is read lossily; a map that is malformed keeps the
/// lines before the fault (none when its count or length table is).
pub fn request_headers(map: Vec<u8>) -> RequestHeaders {
    let mut headers = RequestHeaders::in_place(map);
    let (map, mut lines) = headers.line_writer();
    // The host's count is checked against the map before anything is reserved; names are read
    // where they are (only a name that is not UTF-8 is copied).
    if let Ok(reader) = proxy_wasm_pairs::Reader::new(map, usize::MAX) {
        lines.reserve(reader.declared(), 0);
        for entry in reader.map_while(Result::ok) {
            lines.push_in_place(entry.key, entry.value);
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    /// The serialized header map is read as the SDK reads it, without its panics.
    #[test]
    fn request_headers_from_the_serialized_map() {
        let pairs = headers(&[
            (":method", "GET"),
            ("x-empty", ""),
            ("x-multi", "a"),
            ("X-Multi", "b\u{e9}"),
        ]);
        let map = RequestHeaders::from_pairs(&pairs);
        assert_eq!(map.len(), 4);
        let lines: Vec<(&str, &[u8])> = map.iter().collect();
        let want: Vec<(&str, &[u8])> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        assert_eq!(lines, want);
        // The same pairs through the host's wire format.
        let decoded = request_headers(proxy_wasm_pairs::encode(&pairs));
        assert_eq!(decoded.iter().collect::<Vec<_>>(), want);

        // The spec's example bytes, and a name that is not UTF-8.
        let mut spec = vec![2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];
        spec.extend_from_slice(b"a\x001\x00\xff\x0022\x00");
        let map = request_headers(spec.clone());
        let lines: Vec<(&str, &[u8])> = map.iter().collect();
        assert_eq!(lines, vec![("a", &b"1"[..]), ("\u{fffd}", &b"22"[..])]);

        // Empty and malformed maps: nothing, or the lines before the fault; never a panic.
        for bytes in [vec![], vec![0], vec![1, 0, 0, 0], vec![255, 255, 255, 255]] {
            assert!(request_headers(bytes).is_empty());
        }
        for cut in 20..spec.len() {
            let map = request_headers(spec[..cut].to_vec());
            assert_eq!(map.len(), usize::from(cut >= 24), "cut at {cut}");
        }
        // A value without its NUL ends the map there.
        let mut no_nul = spec.clone();
        no_nul[28] = b'x';
        assert_eq!(
            request_headers(no_nul).iter().collect::<Vec<_>>(),
            vec![("a", &b"1"[..])]
        );
        // Names read in place from the store, or copied when they are not UTF-8; a range
        // outside the store is no line.
        let mut store = RequestHeaders::in_place(b"x-a1\xffb2".to_vec());
        let (_, mut writer) = store.line_writer();
        assert!(writer.push_in_place(0..3, 3..4));
        assert!(writer.push_in_place(4..5, 6..7));
        assert!(!writer.push_in_place(0..8, 3..4));
        assert!(!writer.push_in_place(0..3, 3..8));
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 3..2;
        assert!(!writer.push_in_place(backwards, 0..1));
        assert_eq!(
            store.iter().collect::<Vec<_>>(),
            vec![("x-a", &b"1"[..]), ("\u{fffd}", &b"2"[..])]
        );
        let mut huge = spec;
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(request_headers(huge).len(), 1);
    }
}
