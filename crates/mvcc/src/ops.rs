//! MVCC reads and writes over an engine.
//!
//! Reads take any [`Reader`] (the engine or a snapshot); writes add to a [`WriteBatch`] so the
//! caller decides atomicity and durability — the replication layer puts the writes of many
//! applied commands into one batch.

use bini_storage::{Cf, Reader, WriteBatch};

use crate::encoding::{decode_key, encode_key, encode_version, prefix_end, Value};
use crate::{Result, Timestamp};

/// A key and its value as seen at some timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// User key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
}

/// Reads the newest live value of `key` at or below `ts`.
pub fn mvcc_get(reader: &dyn Reader, key: &[u8], ts: Timestamp) -> Result<Option<Vec<u8>>> {
    let prefix = encode_key(key);
    let mut it = reader.iter(Cf::Data, &prefix, &prefix_end(&prefix));
    it.seek(&encode_version(key, ts));
    if !it.valid()? {
        return Ok(None);
    }
    match Value::decode(it.value())? {
        Value::Live(v) => Ok(Some(v)),
        Value::Tombstone => Ok(None),
    }
}

/// The timestamp of the newest version of `key` (live or tombstone), if any.
pub fn mvcc_latest_timestamp(reader: &dyn Reader, key: &[u8]) -> Result<Option<Timestamp>> {
    let prefix = encode_key(key);
    let mut it = reader.iter(Cf::Data, &prefix, &prefix_end(&prefix));
    it.seek(&encode_version(key, Timestamp::MAX));
    if !it.valid()? {
        return Ok(None);
    }
    Ok(decode_key(it.key())?.1)
}

/// Writes a version of `key` at `ts`.
pub fn mvcc_put(batch: &mut WriteBatch, key: &[u8], ts: Timestamp, value: &[u8]) {
    batch.put(
        Cf::Data,
        encode_version(key, ts),
        Value::Live(value.to_vec()).encode(),
    );
}

/// Writes a tombstone for `key` at `ts`.
pub fn mvcc_delete(batch: &mut WriteBatch, key: &[u8], ts: Timestamp) {
    batch.put(Cf::Data, encode_version(key, ts), Value::Tombstone.encode());
}

/// Scans live values of user keys in `[start, end)` at `ts`, up to `limit` keys. An empty `end`
/// means no upper bound.
pub fn mvcc_scan(
    reader: &dyn Reader,
    start: &[u8],
    end: &[u8],
    ts: Timestamp,
    limit: usize,
) -> Result<Vec<KeyValue>> {
    let lower = encode_key(start);
    let upper = if end.is_empty() {
        Vec::new()
    } else {
        encode_key(end)
    };
    let mut it = reader.iter(Cf::Data, &lower, &upper);
    it.seek_to_first();
    let mut out = Vec::new();
    while out.len() < limit && it.valid()? {
        let (key, version, prefix_len) = decode_key(it.key())?;
        match version {
            // The metadata slot (intents) is not visible to plain reads.
            None => {
                it.next();
                continue;
            }
            // Too new: jump to the newest version visible at `ts` (or past this key).
            Some(v) if v > ts => {
                it.seek(&encode_version(&key, ts));
                continue;
            }
            Some(_) => {}
        }
        if let Value::Live(v) = Value::decode(it.value())? {
            out.push(KeyValue { key, value: v });
        }
        // Skip older versions of this key.
        let next = prefix_end(&it.key()[..prefix_len]);
        if next.is_empty() {
            break;
        }
        it.seek(&next);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use bini_storage::{Engine, MemEngine};

    use super::*;

    fn ts(w: u64) -> Timestamp {
        Timestamp::new(w, 0)
    }

    #[test]
    fn reads_see_the_newest_version_at_or_below_their_timestamp() {
        let e = MemEngine::new();
        let mut b = WriteBatch::new();
        mvcc_put(&mut b, b"a", ts(10), b"a10");
        mvcc_put(&mut b, b"a", ts(20), b"a20");
        mvcc_delete(&mut b, b"a", ts(30));
        mvcc_put(&mut b, b"b", ts(15), b"b15");
        mvcc_put(&mut b, b"c", ts(40), b"c40");
        e.write(&b, false).expect("write");

        assert_eq!(mvcc_get(&e, b"a", ts(5)).expect("get"), None);
        assert_eq!(
            mvcc_get(&e, b"a", ts(10)).expect("get"),
            Some(b"a10".to_vec())
        );
        assert_eq!(
            mvcc_get(&e, b"a", ts(25)).expect("get"),
            Some(b"a20".to_vec())
        );
        assert_eq!(mvcc_get(&e, b"a", ts(30)).expect("get"), None);
        assert_eq!(
            mvcc_latest_timestamp(&e, b"a").expect("latest"),
            Some(ts(30))
        );

        let scan = |at: u64, end: &[u8]| -> Vec<(String, String)> {
            mvcc_scan(&e, b"", end, ts(at), 100)
                .expect("scan")
                .into_iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(&kv.key).into(),
                        String::from_utf8_lossy(&kv.value).into(),
                    )
                })
                .collect()
        };
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(scan(12, b""), pairs(&[("a", "a10")]));
        assert_eq!(scan(20, b""), pairs(&[("a", "a20"), ("b", "b15")]));
        assert_eq!(scan(100, b""), pairs(&[("b", "b15"), ("c", "c40")]));
        assert_eq!(scan(100, b"c"), pairs(&[("b", "b15")]));
        assert_eq!(mvcc_scan(&e, b"", b"", ts(100), 1).expect("scan").len(), 1);
    }
}
