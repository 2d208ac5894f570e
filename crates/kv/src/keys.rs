//! The keyspace.
//!
//! ```text
//!   0x01 <range id:8> <suffix>    range-local, unreplicated or per-replica state (both CFs)
//!   0x02 <end key>                meta: the descriptor of the range ending at <end key>
//!   0x03 ...                      system: node records, id counters, cluster settings
//!   0x04 ... 0xffff               user data: SQL tables (`/Table/<id>/...`) and raw KV keys
//! ```
//!
//! The first range, `[0x02, 0x04)`, holds meta and system keys and never splits; its own
//! descriptor is found through gossip rather than a meta lookup. User keys start at
//! [`USER_START`]; keys below it are rejected from clients.

use crate::RangeId;

/// Start of the range-local prefix.
pub const LOCAL_PREFIX: u8 = 0x01;
/// Start of the meta span.
pub const META_START: &[u8] = b"\x02";
/// End of the meta span; start of the system span.
pub const SYSTEM_START: &[u8] = b"\x03";
/// First user key.
pub const USER_START: &[u8] = b"\x04";
/// Upper bound of all keys.
pub const KEY_MAX: &[u8] = b"\xff\xff";

/// The id counter for nodes.
pub const NODE_ID_COUNTER: &[u8] = b"\x03counter/node";
/// The id counter for ranges.
pub const RANGE_ID_COUNTER: &[u8] = b"\x03counter/range";
/// The cluster id.
pub const CLUSTER_ID: &[u8] = b"\x03cluster-id";
/// Prefix of node records (`NodeInfo`), followed by the node id (8 bytes, big-endian).
pub const NODE_PREFIX: &[u8] = b"\x03node/";

/// The meta key of a range that ends at `end`.
pub fn meta_key(end: &[u8]) -> Vec<u8> {
    let mut k = META_START.to_vec();
    k.extend_from_slice(end);
    k
}

/// The record key of a node.
pub fn node_key(node_id: u64) -> Vec<u8> {
    let mut k = NODE_PREFIX.to_vec();
    k.extend_from_slice(&node_id.to_be_bytes());
    k
}

/// The range-local prefix of a range.
pub fn range_local_prefix(range: RangeId) -> Vec<u8> {
    let mut k = vec![LOCAL_PREFIX];
    k.extend_from_slice(&range.0.to_be_bytes());
    k
}

fn range_local(range: RangeId, suffix: &[u8]) -> Vec<u8> {
    let mut k = range_local_prefix(range);
    k.extend_from_slice(suffix);
    k
}

/// Raft CF: a log entry.
pub fn raft_log_key(range: RangeId, index: u64) -> Vec<u8> {
    let mut k = range_local(range, b"l");
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Raft CF: the hard state.
pub fn raft_hard_state_key(range: RangeId) -> Vec<u8> {
    range_local(range, b"h")
}

/// Raft CF: the truncated state (index and term of the last entry removed from the log).
pub fn raft_truncated_key(range: RangeId) -> Vec<u8> {
    range_local(range, b"t")
}

/// Data CF: the applied state (applied index, term, stats, descriptor), written atomically
/// with the applied commands.
pub fn applied_state_key(range: RangeId) -> Vec<u8> {
    range_local(range, b"a")
}

/// Data CF: left when a replica is removed, so stale messages do not recreate it.
pub fn tombstone_key(range: RangeId) -> Vec<u8> {
    range_local(range, b"x")
}

/// Data CF: the store identity (cluster id and node id).
pub const STORE_IDENT_KEY: &[u8] = b"\x01\x00\x00\x00\x00\x00\x00\x00\x00ident";

/// Whether a client may address this key.
pub fn is_user_addressable(key: &[u8]) -> bool {
    key >= META_START && key < KEY_MAX
}

/// Renders a key for humans: printable ASCII as is, other bytes as `\xNN`.
pub fn pretty(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_graphic() && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// Parses the form [`pretty`] prints (also accepts `\\` for a backslash).
pub fn parse_pretty(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            match bytes.get(i + 1) {
                Some(b'\\') => {
                    out.push(b'\\');
                    i += 2;
                }
                Some(b'x') => {
                    let hex = s.get(i + 2..i + 4).ok_or("truncated \\x escape")?;
                    out.push(
                        u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape \\x{hex}"))?,
                    );
                    i += 4;
                }
                _ => return Err("a backslash must be followed by x or \\".into()),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_round_trips() {
        let k = b"\x03node/\x00\x01a\\b".to_vec();
        assert_eq!(parse_pretty(&pretty(&k)).expect("parse"), k);
        assert!(parse_pretty("\\xzz").is_err());
        assert!(parse_pretty("\\x1").is_err());
    }

    #[test]
    fn keyspace_is_ordered() {
        assert!(range_local_prefix(RangeId(u64::MAX)).as_slice() < META_START);
        assert!(meta_key(KEY_MAX).as_slice() < SYSTEM_START);
        assert!(NODE_PREFIX < USER_START && USER_START < KEY_MAX);
    }
}
