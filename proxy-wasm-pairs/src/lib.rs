//! The proxy-wasm header-map pairs format (ABI 0.2.x), written once for the filter, host-sim and
//! the test filters.
//!
//! A map of `n` pairs is serialized as (proxy-wasm/spec `abi-versions/v0.2.1/README.md`,
//! "Serialization"; proxy-wasm-cpp-host `include/proxy-wasm/pairs_util.h`, `PairsUtil`):
//! - `n` as a little-endian `u32`;
//! - per pair, the key's and the value's lengths, each a little-endian `u32`;
//! - per pair, the key's bytes and a `NUL`, then the value's bytes and a `NUL`.
//!
//! An empty buffer and a single `NUL` byte also mean an empty map (spec, "Serialization").
//!
//! The decoder reads bytes that may come from the other side of the ABI (a host reads an
//! untrusted guest's maps, a guest reads its host's): every offset is checked, a malformed map
//! is an [`Error`], never a panic, and nothing is allocated from a claimed count before the
//! buffer is known to be long enough for that many length words. `no_std` (with `alloc`) so a
//! wasm guest links it without more of std than it already has.
#![no_std]
#![deny(missing_docs)]

extern crate alloc;

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

/// Bytes of the count word and of each pair's two length words.
const WORD: usize = 4;

/// Why a serialized map could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The buffer ends before the declared count, lengths or bytes.
    Truncated,
    /// A key or value is not followed by its `NUL` separator.
    MissingTerminator,
    /// The declared number of pairs exceeds the caller's bound.
    TooManyPairs(usize),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("serialized map is truncated"),
            Error::MissingTerminator => f.write_str("serialized map entry is missing its NUL terminator"),
            Error::TooManyPairs(n) => write!(f, "serialized map declares {n} pairs, more than allowed"),
        }
    }
}

impl core::error::Error for Error {}

/// The size of `pairs` serialized.
pub fn encoded_len<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> usize {
    let data: usize = pairs.iter().map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 2).sum();
    WORD + pairs.len() * 2 * WORD + data
}

/// Serializes `pairs` (in order, repeats kept). Lengths are written as `u32`: a key or value of
/// 4 GiB or more cannot be represented, and no proxy-wasm memory (32-bit) can hold one.
pub fn encode<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(pairs));
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// Where one pair lies in the serialized buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key's bytes (its `NUL` excluded).
    pub key: Range<usize>,
    /// The value's bytes (its `NUL` excluded).
    pub value: Range<usize>,
}

/// A serialized map read pair by pair, in place: each item is the next pair's [`Entry`], or the
/// [`Error`] that ends the map (after which the reader yields nothing more). A caller that wants
/// the whole map or nothing collects into a `Result`; one that keeps what came before a fault
/// stops at the first error.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    count: usize,
    next: usize,
    /// Where the next key starts.
    at: usize,
    failed: bool,
}

impl<'a> Reader<'a> {
    /// Checks the count: at most `max_pairs`, and room in `bytes` for its length words.
    pub fn new(bytes: &'a [u8], max_pairs: usize) -> Result<Self, Error> {
        let mut reader = Reader {
            bytes,
            count: 0,
            next: 0,
            at: 0,
            failed: false,
        };
        if bytes.is_empty() || bytes == [0] {
            return Ok(reader);
        }
        let count = word(bytes, 0)?;
        if count > max_pairs {
            return Err(Error::TooManyPairs(count));
        }
        let sizes_end = count
            .checked_mul(2 * WORD)
            .and_then(|n| n.checked_add(WORD))
            .ok_or(Error::Truncated)?;
        if sizes_end > bytes.len() {
            return Err(Error::Truncated);
        }
        reader.count = count;
        reader.at = sizes_end;
        Ok(reader)
    }

    /// The number of pairs the map declares (bounded by the buffer's length, see [`Reader::new`]).
    pub fn declared(&self) -> usize {
        self.count
    }

    /// The declared `(key, value)` lengths, in order, as the length words give them.
    pub fn declared_lengths(&self) -> impl Iterator<Item = (usize, usize)> + 'a {
        let bytes = self.bytes;
        (0..self.count).filter_map(move |i| {
            let at = WORD + i * 2 * WORD;
            Some((word(bytes, at).ok()?, word(bytes, at + WORD).ok()?))
        })
    }

    fn entry(&mut self) -> Result<Entry, Error> {
        let at = WORD + self.next * 2 * WORD;
        let (key_len, value_len) = (word(self.bytes, at)?, word(self.bytes, at + WORD)?);
        let key = terminated(self.bytes, self.at, key_len)?;
        let value = terminated(self.bytes, key.end + 1, value_len)?;
        self.at = value.end + 1;
        Ok(Entry { key, value })
    }
}

impl Iterator for Reader<'_> {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next >= self.count {
            return None;
        }
        let entry = self.entry();
        self.next += 1;
        self.failed = entry.is_err();
        Some(entry)
    }
}

/// Decodes a whole map, each pair turned into an item by `item` straight from the serialized
/// bytes; the first fault is the result. `max_pairs` bounds the declared count before anything
/// is allocated.
pub fn decode_with<'b, T>(
    bytes: &'b [u8],
    max_pairs: usize,
    mut item: impl FnMut(&'b [u8], &'b [u8]) -> T,
) -> Result<Vec<T>, Error> {
    let reader = Reader::new(bytes, max_pairs)?;
    let mut out = Vec::with_capacity(reader.declared());
    for entry in reader {
        let entry = entry?;
        out.push(item(&bytes[entry.key], &bytes[entry.value]));
    }
    Ok(out)
}

/// One decoded pair: the key's and the value's bytes, borrowed from the serialized map.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// Decodes a whole map into borrowed `(key, value)` slices.
pub fn decode(bytes: &[u8], max_pairs: usize) -> Result<Vec<Pair<'_>>, Error> {
    decode_with(bytes, max_pairs, |k, v| (k, v))
}

/// The little-endian `u32` at `at`, as a `usize`.
fn word(bytes: &[u8], at: usize) -> Result<usize, Error> {
    let end = at.checked_add(WORD).ok_or(Error::Truncated)?;
    match bytes.get(at..end) {
        Some(&[a, b, c, d]) => Ok(u32::from_le_bytes([a, b, c, d]) as usize),
        _ => Err(Error::Truncated),
    }
}

/// The `len` bytes at `at`, which must be followed by a `NUL`.
fn terminated(bytes: &[u8], at: usize, len: usize) -> Result<Range<usize>, Error> {
    let end = at.checked_add(len).ok_or(Error::Truncated)?;
    match bytes.get(end) {
        Some(0) => Ok(at..end),
        Some(_) => Err(Error::MissingTerminator),
        None => Err(Error::Truncated),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    /// The spec's example, `{{"a", "1"}, {"b", "22"}}`, byte for byte.
    fn spec_example() -> Vec<u8> {
        let mut bytes = vec![2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];
        bytes.extend_from_slice(b"a\x001\x00b\x0022\x00");
        bytes
    }

    #[test]
    fn encodes_the_spec_example() {
        let encoded = encode(&[("a", "1"), ("b", "22")]);
        assert_eq!(encoded, spec_example());
        assert_eq!(encoded_len(&[("a", "1"), ("b", "22")]), encoded.len());
    }

    #[test]
    fn decodes_the_spec_example() {
        let bytes = spec_example();
        assert_eq!(
            decode(&bytes, 16).unwrap(),
            vec![(&b"a"[..], &b"1"[..]), (&b"b"[..], &b"22"[..])]
        );
        let entries: Vec<Entry> = Reader::new(&bytes, 16).unwrap().map(Result::unwrap).collect();
        assert_eq!(
            entries,
            vec![
                Entry {
                    key: 20..21,
                    value: 22..23
                },
                Entry {
                    key: 24..25,
                    value: 26..28
                }
            ]
        );
        let lengths: Vec<(usize, usize)> = Reader::new(&bytes, 16).unwrap().declared_lengths().collect();
        assert_eq!(lengths, vec![(1, 1), (1, 2)]);
    }

    #[test]
    fn empty_maps_in_every_spelling() {
        assert!(decode(&[], 1).unwrap().is_empty());
        assert!(decode(&[0], 1).unwrap().is_empty());
        assert!(decode(&[0, 0, 0, 0], 0).unwrap().is_empty());
        assert_eq!(encode::<&str, &str>(&[]), vec![0, 0, 0, 0]);
    }

    #[test]
    fn empty_keys_and_values_and_repeats_are_kept() {
        let pairs = [("", ""), ("k", ""), ("", "v"), ("k", "again")];
        let bytes = encode(&pairs);
        let decoded = decode(&bytes, 4).unwrap();
        let want: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect();
        assert_eq!(decoded, want);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let good = encode(&[("key", "value"), ("k2", "")]);
        for cut in 1..good.len() {
            let result = decode(&good[..cut], 16);
            assert!(result.is_err(), "cut at {cut}: {result:?}");
        }
        // Read pair by pair, the pairs before the cut are still there.
        let cut = good.len() - 1;
        let mut reader = Reader::new(&good[..cut], 16).unwrap();
        assert!(reader.next().unwrap().is_ok());
        assert_eq!(reader.next(), Some(Err(Error::Truncated)));
        assert_eq!(reader.next(), None);
    }

    #[test]
    fn malformed_maps_are_errors() {
        let good = encode(&[("key", "value")]);
        let mut no_nul = good.clone();
        no_nul[4 + 8 + 3] = b'x';
        assert_eq!(decode(&no_nul, 16), Err(Error::MissingTerminator));
        let mut no_value_nul = good.clone();
        let last = no_value_nul.len() - 1;
        no_value_nul[last] = b'x';
        assert_eq!(decode(&no_value_nul, 16), Err(Error::MissingTerminator));

        // A count above the bound is refused before the buffer's length is looked at.
        assert_eq!(
            decode(&u32::MAX.to_le_bytes(), 16),
            Err(Error::TooManyPairs(u32::MAX as usize))
        );
        // A count the buffer has no room for is truncated, whatever the bound.
        assert_eq!(decode(&u32::MAX.to_le_bytes(), usize::MAX), Err(Error::Truncated));
        assert_eq!(decode(&[1, 0, 0, 0], 16), Err(Error::Truncated));
        assert_eq!(decode(&[1, 0], 16), Err(Error::Truncated));

        // Lengths that overflow or point past the end.
        for bad in [u32::MAX, u32::MAX - 3, 1 << 31] {
            let mut huge_key = good.clone();
            huge_key[4..8].copy_from_slice(&bad.to_le_bytes());
            assert_eq!(decode(&huge_key, 16), Err(Error::Truncated));
            let mut huge_value = good.clone();
            huge_value[8..12].copy_from_slice(&bad.to_le_bytes());
            assert_eq!(decode(&huge_value, 16), Err(Error::Truncated));
        }
    }

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(Error::Truncated.to_string(), "serialized map is truncated");
        assert_eq!(
            Error::MissingTerminator.to_string(),
            "serialized map entry is missing its NUL terminator"
        );
        assert_eq!(
            Error::TooManyPairs(9).to_string(),
            "serialized map declares 9 pairs, more than allowed"
        );
    }

    /// xorshift64*: a fixed seed, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }

        fn bytes(&mut self, max: u64) -> Vec<u8> {
            let len = self.below(max + 1);
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    /// Random maps (keys and values of any bytes, NULs included) round-trip; random damage to
    /// their bytes never panics, and what decodes stays inside the buffer.
    #[test]
    fn seeded_random_round_trip_and_damage() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let n = rng.below(12);
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..n).map(|_| (rng.bytes(24), rng.bytes(40))).collect();
            let bytes = encode(&pairs);
            assert_eq!(bytes.len(), encoded_len(&pairs));
            let decoded = decode_with(&bytes, n, |k, v| (k.to_vec(), v.to_vec())).unwrap();
            assert_eq!(decoded, pairs);
            if n > 0 {
                assert_eq!(decode(&bytes, n - 1), Err(Error::TooManyPairs(n)));
            }

            let mut damaged = bytes.clone();
            for _ in 0..1 + rng.below(4) {
                if damaged.is_empty() {
                    break;
                }
                let at = rng.below(damaged.len() as u64);
                damaged[at] = rng.next() as u8;
            }
            damaged.truncate(rng.below(damaged.len() as u64 + 1));
            if let Ok(reader) = Reader::new(&damaged, usize::MAX) {
                for entry in reader.flatten() {
                    assert!(entry.key.end < damaged.len() && entry.value.end < damaged.len());
                    assert_eq!(damaged[entry.key.end], 0);
                    assert_eq!(damaged[entry.value.end], 0);
                }
            }
        }
    }
}
