//! The proxy-wasm header-map wire format the filter writes (spec ABI 0.2.1 "map": a little-endian
//! `u32` pair count, then a `u32` name length and a `u32` value length per pair, then each name
//! and each value followed by a NUL), for the REST proxy calls and the local answer. Plain Rust,
//! using no other module of the crate; decoding is the workspace's one codec, `proxy-wasm-pairs`
//! (read by [`crate::exchange::RequestHeaders::from_serialized`]).
//!
//! A call's header map is mostly the same bytes every time (method, authority, scheme, accept,
//! the static headers): a [`MapTemplate`] serializes those once per configuration and leaves
//! slots for the values that change per call (path, content type, content length), which
//! [`MapTemplate::encode`] splices in: a few copies per call instead of a pair list built and
//! serialized.

/// The value of one pair of a [`MapTemplate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// The same value in every map.
    Fixed(&'a str),
    /// The value given per map: the index of it among [`MapTemplate::encode`]'s values.
    Slot(usize),
}

/// A fixed value (what a configured static header gives).
impl<'a> From<&'a str> for Value<'a> {
    fn from(value: &'a str) -> Self {
        Value::Fixed(value)
    }
}

/// Where one slot's value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotAt {
    /// Which of the values given to [`MapTemplate::encode`].
    value: usize,
    /// The offset of its length field in the head.
    length_at: usize,
    /// The offset in the fixed data where it is spliced in (before its NUL).
    data_at: usize,
}

/// A header map serialized once with slots for the values that vary (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapTemplate {
    /// The count and the length table, a slot's value length left 0.
    head: Vec<u8>,
    /// The names and values with their NULs, a slot's value left out.
    data: Vec<u8>,
    /// The slots in map order (so by increasing `data_at`).
    slots: Vec<SlotAt>,
}

impl MapTemplate {
    /// The template of `pairs`, in that order.
    pub fn new(pairs: &[(&str, Value<'_>)]) -> Self {
        let mut head = Vec::with_capacity(4 + 8 * pairs.len());
        head.extend_from_slice(&len_u32(pairs.len()).to_le_bytes());
        let mut data = Vec::new();
        let mut slots = Vec::new();
        for (name, value) in pairs {
            head.extend_from_slice(&len_u32(name.len()).to_le_bytes());
            let length_at = head.len();
            data.extend_from_slice(name.as_bytes());
            data.push(0);
            match value {
                Value::Fixed(v) => {
                    head.extend_from_slice(&len_u32(v.len()).to_le_bytes());
                    data.extend_from_slice(v.as_bytes());
                }
                Value::Slot(index) => {
                    head.extend_from_slice(&0u32.to_le_bytes());
                    slots.push(SlotAt {
                        value: *index,
                        length_at,
                        data_at: data.len(),
                    });
                }
            }
            data.push(0);
        }
        MapTemplate { head, data, slots }
    }

    /// The serialized map with `values` in its slots (a slot whose value index is past `values`
    /// gets an empty value).
    pub fn encode(&self, values: &[&[u8]]) -> Vec<u8> {
        let value = |slot: &SlotAt| values.get(slot.value).copied().unwrap_or_default();
        let spliced: usize = self.slots.iter().map(|s| value(s).len()).sum();
        let mut out = Vec::with_capacity(self.head.len() + self.data.len() + spliced);
        out.extend_from_slice(&self.head);
        for slot in &self.slots {
            let length = len_u32(value(slot).len()).to_le_bytes();
            out[slot.length_at..slot.length_at + 4].copy_from_slice(&length);
        }
        let mut copied = 0;
        for slot in &self.slots {
            out.extend_from_slice(&self.data[copied..slot.data_at]);
            out.extend_from_slice(value(slot));
            copied = slot.data_at;
        }
        out.extend_from_slice(&self.data[copied..]);
        out
    }
}

/// A length as the format's `u32`. Every length the filter writes is a header or a decimal
/// number, far below 4 GiB; one that is not is written as `u32::MAX`, which no host accepts as
/// a map rather than a map with a wrong length.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// The header map of every local answer: `content-type: application/json`.
pub const JSON_CONTENT_TYPE: &[u8] =
    b"\x01\x00\x00\x00\x0c\x00\x00\x00\x10\x00\x00\x00content-type\x00application/json\x00";

/// A serialized map as text pairs, for the native tests' fake hosts (panics on a malformed map
/// or one that is not UTF-8: the filter writes neither).
#[cfg(test)]
pub(crate) fn decode_text(map: &[u8]) -> Vec<(String, String)> {
    proxy_wasm_pairs::decode_with(map, usize::MAX, |k, v| {
        (
            String::from_utf8(k.to_vec()).unwrap(),
            String::from_utf8(v.to_vec()).unwrap(),
        )
    })
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(map: &[u8]) -> Vec<(String, String)> {
        decode_text(map)
    }

    #[test]
    fn the_answer_headers_are_the_codec_s_bytes() {
        assert_eq!(
            JSON_CONTENT_TYPE,
            proxy_wasm_pairs::encode(&[("content-type", "application/json")]).as_slice()
        );
    }

    /// A template filled in is byte for byte the codec's encoding of the same pairs, whatever
    /// the slots' places, values and order.
    #[test]
    fn a_filled_template_is_the_plain_encoding() {
        let template = MapTemplate::new(&[
            (":method", Value::Fixed("POST")),
            (":path", Value::Slot(0)),
            (":authority", Value::Fixed("rest:8082")),
            ("content-type", Value::Slot(2)),
            ("x-empty", Value::Fixed("")),
            ("content-length", Value::Slot(1)),
        ]);
        for (path, length, ct) in [
            ("/topics/orders", "42", "application/json"),
            ("", "", ""),
            ("/a/very/long/path/\u{e9}", "1234567890", "x"),
        ] {
            let got = template.encode(&[path.as_bytes(), length.as_bytes(), ct.as_bytes()]);
            let want = proxy_wasm_pairs::encode(&[
                (":method", "POST"),
                (":path", path),
                (":authority", "rest:8082"),
                ("content-type", ct),
                ("x-empty", ""),
                ("content-length", length),
            ]);
            assert_eq!(got, want, "{path:?} {length:?} {ct:?}");
        }
        // A missing value is an empty one; an unused one is ignored.
        assert_eq!(
            pairs(&template.encode(&[b"/p"])),
            vec![
                (":method".into(), "POST".into()),
                (":path".into(), "/p".into()),
                (":authority".into(), "rest:8082".into()),
                ("content-type".into(), String::new()),
                ("x-empty".into(), String::new()),
                ("content-length".into(), String::new()),
            ]
        );
        // The same value in two slots, a slot at the very start and at the very end.
        let twice = MapTemplate::new(&[("a", Value::Slot(0)), ("b", Value::Fixed("1")), ("c", Value::Slot(0))]);
        assert_eq!(
            twice.encode(&[b"v", b"unused"]),
            proxy_wasm_pairs::encode(&[("a", "v"), ("b", "1"), ("c", "v")])
        );
    }

    #[test]
    fn templates_without_slots_or_pairs() {
        let fixed = MapTemplate::new(&[("content-type", Value::Fixed("application/json"))]);
        assert_eq!(fixed.encode(&[]), JSON_CONTENT_TYPE);
        let empty = MapTemplate::new(&[]);
        assert_eq!(empty.encode(&[b"x"]), proxy_wasm_pairs::encode::<&str, &str>(&[]));
        assert_eq!(MapTemplate::default().encode(&[]), Vec::<u8>::new());
    }
}
