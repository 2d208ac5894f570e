//! Snapshot payloads: everything a replica needs to start from an applied index.
//!
//! The payload is the range descriptor followed by every `Data` key of the range's span, each
//! as `len:u32 bytes len:u32 bytes`. The receiver replaces its span with it in the same write
//! batch that moves its Raft log to the snapshot's index. Payloads are built in memory and
//! streamed in chunks ([`SNAPSHOT_CHUNK_BYTES`]); building them incrementally from an engine
//! snapshot is left for when ranges grow past what fits in memory comfortably.

use bini_mvcc::encode_key;
use bini_proto::RangeDescriptor;
use bini_storage::{Cf, Engine, WriteBatch};
use prost::Message;

use crate::{Error, RangeId, Result};

/// Size of one streamed snapshot chunk.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// The engine span `[lower, upper)` holding a range's replicated user data.
pub fn data_span(desc: &RangeDescriptor) -> (Vec<u8>, Vec<u8>) {
    (encode_key(&desc.start_key), encode_key(&desc.end_key))
}

fn push_record(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Builds a snapshot of a range from one consistent view of the engine: the applied state
/// (index, term, configuration, descriptor) and the data it describes, read from the same
/// engine snapshot. (The store's in-memory applied index runs ahead of the engine during a
/// round, until the round's apply batch is written; a payload paired with that index would lack
/// the round's writes.)
pub fn build_snapshot(
    engine: &dyn Engine,
    range: RangeId,
) -> Result<Option<(bini_proto::AppliedState, Vec<u8>)>> {
    let snap = engine.snapshot();
    let Some(applied) = crate::replica::load_applied_state(snap.as_ref(), range)? else {
        return Ok(None);
    };
    let desc = applied.descriptor.clone().unwrap_or_default();
    let mut out = Vec::new();
    push_record(&mut out, &desc.encode_to_vec());
    let (lower, upper) = data_span(&desc);
    let mut it = snap.iter(Cf::Data, &lower, &upper);
    it.seek_to_first();
    while it.valid()? {
        push_record(&mut out, it.key());
        push_record(&mut out, it.value());
        it.next();
    }
    drop(it);
    Ok(Some((applied, out)))
}

fn read_record<'a>(data: &'a [u8], pos: &mut usize) -> Result<&'a [u8]> {
    let len = data
        .get(*pos..*pos + 4)
        .ok_or_else(|| Error::Decode("truncated snapshot".into()))?;
    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    let rec = data
        .get(*pos + 4..*pos + 4 + len)
        .ok_or_else(|| Error::Decode("truncated snapshot record".into()))?;
    *pos += 4 + len;
    Ok(rec)
}

/// Key-value pairs borrowed from a snapshot payload.
pub type Pairs<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Splits a payload into its descriptor and data pairs.
pub fn parse_snapshot_data(data: &[u8]) -> Result<(RangeDescriptor, Pairs<'_>)> {
    let mut pos = 0;
    let desc = RangeDescriptor::decode(read_record(data, &mut pos)?)?;
    let mut pairs = Vec::new();
    while pos < data.len() {
        let k = read_record(data, &mut pos)?;
        let v = read_record(data, &mut pos)?;
        pairs.push((k, v));
    }
    Ok((desc, pairs))
}

/// Adds to `batch` the writes that replace the range's span with the payload's data. Returns
/// the number of bytes of data.
pub fn apply_snapshot_data(
    batch: &mut WriteBatch,
    desc: &RangeDescriptor,
    pairs: &[(&[u8], &[u8])],
) -> u64 {
    let (lower, upper) = data_span(desc);
    batch.delete_range(Cf::Data, lower, upper);
    let mut bytes = 0;
    for (k, v) in pairs {
        bytes += (k.len() + v.len()) as u64;
        batch.put(Cf::Data, k.to_vec(), v.to_vec());
    }
    bytes
}
