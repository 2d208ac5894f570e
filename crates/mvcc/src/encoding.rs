//! Order-preserving encoding of versioned keys, and the stored value format.

use crate::{Error, Result, Timestamp};

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xff;
const TERMINATOR: u8 = 0x01;
const RECORD_MARK: u8 = 0x02;
const SLOTS_END: u8 = 0x03;
const TIMESTAMP_LEN: usize = 12;

/// What an engine key under a user key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The metadata slot: a write intent, if any.
    Meta,
    /// A committed version at this timestamp.
    Version(Timestamp),
    /// A transaction record anchored at this key.
    Record,
}

/// Encodes a user key as the prefix shared by its metadata slot and all its versions.
pub fn encode_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2 + TIMESTAMP_LEN);
    for &b in key {
        out.push(b);
        if b == ESCAPE {
            out.push(ESCAPED_ZERO);
        }
    }
    out.push(ESCAPE);
    out.push(TERMINATOR);
    out
}

/// The first engine key past every slot of `key` (its intent, versions and records), where a
/// scan resumes to skip to the next user key.
pub fn encode_key_end(key: &[u8]) -> Vec<u8> {
    let mut out = encode_key(key);
    out.pop();
    out.push(SLOTS_END);
    out
}

/// Encodes the engine key of the version of `key` written at `ts`. Newer versions sort first.
pub fn encode_version(key: &[u8], ts: Timestamp) -> Vec<u8> {
    let mut out = encode_key(key);
    out.extend_from_slice(&(!ts.wall).to_be_bytes());
    out.extend_from_slice(&(!ts.logical).to_be_bytes());
    out
}

/// Encodes the engine key of the record of transaction `id` anchored at `anchor`. It sorts after
/// every version of `anchor` and before any greater user key, so it lives (and splits, and is
/// snapshotted) with the range holding `anchor`, and scans skip it.
pub fn encode_record_key(anchor: &[u8], id: &[u8]) -> Vec<u8> {
    let mut out = encode_key(anchor);
    out.pop();
    out.push(RECORD_MARK);
    out.extend_from_slice(id);
    out
}

/// Decodes an engine key into the user key and what its slot holds. Returns the length of the
/// encoded user-key prefix too (the metadata slot's key), so a scan can seek past all versions
/// of a key.
pub fn decode_key(encoded: &[u8]) -> Result<(Vec<u8>, Slot, usize)> {
    let mut key = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while i < encoded.len() {
        let b = encoded[i];
        if b != ESCAPE {
            key.push(b);
            i += 1;
            continue;
        }
        match encoded.get(i + 1) {
            Some(&ESCAPED_ZERO) => {
                key.push(ESCAPE);
                i += 2;
            }
            Some(&TERMINATOR) => {
                let prefix = i + 2;
                let rest = &encoded[prefix..];
                return match rest.len() {
                    0 => Ok((key, Slot::Meta, prefix)),
                    TIMESTAMP_LEN => {
                        let inv = Timestamp::from_bytes(rest)
                            .ok_or_else(|| Error::Corrupt("short timestamp".into()))?;
                        Ok((
                            key,
                            Slot::Version(Timestamp::new(!inv.wall, !inv.logical)),
                            prefix,
                        ))
                    }
                    n => Err(Error::Corrupt(format!("version suffix of {n} bytes"))),
                };
            }
            Some(&RECORD_MARK) => return Ok((key, Slot::Record, i + 2)),
            _ => return Err(Error::Corrupt("bad escape in key".into())),
        }
    }
    Err(Error::Corrupt("key without terminator".into()))
}

/// The smallest byte string greater than every string with prefix `prefix`, or empty (meaning
/// unbounded) when there is none.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// A stored version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A live value.
    Live(Vec<u8>),
    /// A deletion: the key has no value at this version.
    Tombstone,
}

const TAG_LIVE: u8 = 1;
const TAG_TOMBSTONE: u8 = 2;

impl Value {
    /// Encodes for storage.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Value::Live(v) => {
                let mut out = Vec::with_capacity(v.len() + 1);
                out.push(TAG_LIVE);
                out.extend_from_slice(v);
                out
            }
            Value::Tombstone => vec![TAG_TOMBSTONE],
        }
    }

    /// Decodes stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        match bytes.first() {
            Some(&TAG_LIVE) => Ok(Value::Live(bytes[1..].to_vec())),
            Some(&TAG_TOMBSTONE) => Ok(Value::Tombstone),
            Some(t) => Err(Error::Corrupt(format!("unknown value tag {t}"))),
            None => Err(Error::Corrupt("empty value".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_preserves_user_key_order() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\x00",
            b"\x00\x00",
            b"\x00\x01",
            b"a",
            b"a\x00",
            b"ab",
            b"a\xff",
            b"b",
        ];
        for w in keys.windows(2) {
            assert!(
                encode_key(w[0]) < encode_key(w[1]),
                "{:?} < {:?}",
                w[0],
                w[1]
            );
            let ts = Timestamp::new(1, 0);
            assert!(encode_version(w[0], Timestamp::ZERO) < encode_key(w[1]));
            assert!(encode_version(w[0], ts) < encode_version(w[1], ts));
        }
    }

    #[test]
    fn versions_sort_newest_first_after_the_metadata_slot() {
        let meta = encode_key(b"k");
        let new = encode_version(b"k", Timestamp::new(9, 0));
        let old = encode_version(b"k", Timestamp::new(3, 4));
        assert!(meta < new && new < old);
    }

    #[test]
    fn decode_round_trips_and_rejects_garbage() {
        let ts = Timestamp::new(42, 7);
        let (k, t, _) = decode_key(&encode_version(b"a\x00b", ts)).expect("decode");
        assert_eq!((k.as_slice(), t), (&b"a\x00b"[..], Slot::Version(ts)));
        let (k, t, _) = decode_key(&encode_key(b"meta")).expect("decode");
        assert_eq!((k.as_slice(), t), (&b"meta"[..], Slot::Meta));
        let (k, t, _) = decode_key(&encode_record_key(b"a", b"id")).expect("decode");
        assert_eq!((k.as_slice(), t), (&b"a"[..], Slot::Record));
        assert!(decode_key(b"no terminator").is_err());
        assert!(decode_key(b"a\x00\x07").is_err());
        assert!(decode_key(b"a\x00\x01abc").is_err());
    }

    #[test]
    fn records_sort_after_their_anchor_and_before_the_next_key() {
        let rec = encode_record_key(b"a", &[0xff; 16]);
        assert!(encode_version(b"a", Timestamp::ZERO) < rec);
        for next in [&b"a\x00"[..], b"a\x01", b"b"] {
            assert!(rec < encode_key(next));
        }
    }

    #[test]
    fn prefix_end_bounds_a_prefix() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"");
    }
}
