//! The node's SQL memory budget (`bini start --max-sql-memory`).
//!
//! Whatever a statement holds while it runs — rows a sort or an aggregation keeps, a hash
//! join's build side, a materialized subquery, a batch of results on its way to the client,
//! COPY's buffers — is reserved from one [`MemoryPool`] per node first. A reservation that
//! would pass the budget fails with SQLSTATE 53200 and the statement ends, releasing what it
//! held, while the node goes on serving everyone else.
//!
//! - A [`Reservation`] is what one holder has reserved; it grows as the holder keeps more and
//!   gives everything back when dropped, so an error or a cancel can never leak budget.
//! - Sizes are estimates of the heap a value occupies ([`row_bytes`]): the vector and every
//!   datum in it, strings and byte arrays by capacity, plus allocator overhead. They err on
//!   the large side, so the process stays near the budget, not above it.
//! - The last [`SMALL_HOLDER_BYTES`] of the budget are kept for holders smaller than that: a
//!   statement that has taken most of the budget is refused the remainder, so the point reads
//!   and small queries of other sessions still get the little they need.
//!
//! What is not counted: the parsed and planned statement itself (bounded by the statement's
//! size limit) and the few rows an operator works on at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::types::Datum;

/// Holders below this size may use the last part of the budget that larger ones may not.
pub const SMALL_HOLDER_BYTES: u64 = 1 << 20;

/// A node's SQL memory budget, shared by every session.
#[derive(Debug)]
pub struct MemoryPool {
    limit: u64,
    used: AtomicU64,
}

impl MemoryPool {
    /// A pool of `limit` bytes.
    pub fn new(limit: u64) -> Arc<MemoryPool> {
        Arc::new(MemoryPool {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// A pool without a limit (tests and tools that run no untrusted SQL).
    pub fn unlimited() -> Arc<MemoryPool> {
        Self::new(u64::MAX)
    }

    /// The budget.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes reserved now, by every holder.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// An empty reservation against this pool.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            pool: self.clone(),
            bytes: 0,
        }
    }
}

/// Bytes one holder has reserved from a [`MemoryPool`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    pool: Arc<MemoryPool>,
    bytes: u64,
}

impl Reservation {
    /// Reserves `n` more bytes, or fails with SQLSTATE 53200 when the budget has no room.
    pub fn grow(&mut self, n: u64) -> Result<()> {
        let after = self.bytes.saturating_add(n);
        let limit = if after > SMALL_HOLDER_BYTES {
            self.pool.limit.saturating_sub(SMALL_HOLDER_BYTES)
        } else {
            self.pool.limit
        };
        let fits = self
            .pool
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                let total = used.checked_add(n)?;
                (total <= limit).then_some(total)
            })
            .is_ok();
        if !fits {
            return Err(Error::OutOfMemory(format!(
                "the statement needs more than the node's SQL memory budget \
                 (--max-sql-memory={} MiB; it holds {} MiB)",
                self.pool.limit >> 20,
                after >> 20
            )));
        }
        self.bytes = after;
        Ok(())
    }

    /// Gives `n` bytes back (at most what is held).
    pub fn shrink(&mut self, n: u64) {
        let n = n.min(self.bytes);
        self.bytes -= n;
        self.pool.used.fetch_sub(n, Ordering::Relaxed);
    }

    /// Gives everything back.
    pub fn clear(&mut self) {
        self.shrink(self.bytes);
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Another reservation against the same pool.
    pub fn sibling(&self) -> Reservation {
        self.pool.reservation()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Allocator overhead per heap allocation (a header and rounding to the size class).
const ALLOC_OVERHEAD: u64 = 16;

/// The heap a row's datums occupy (by capacity: a vector collected without a size hint has
/// room for four), with what they point to. The row's own vector header lives in whatever
/// holds the row, counted by [`Growth`].
pub fn row_bytes(row: &Vec<Datum>) -> u64 {
    let spare = (row.capacity() - row.len()) * std::mem::size_of::<Datum>();
    ALLOC_OVERHEAD + spare as u64 + row.iter().map(datum_bytes).sum::<u64>()
}

/// Follows a growing collection's own buffer (by capacity, which grows in doublings ahead
/// of its length) and reserves each growth.
#[derive(Debug, Default)]
pub struct Growth {
    counted: u64,
}

impl Growth {
    /// Reserves what `buffer_bytes` (a collection's capacity times its element size) passed
    /// since last counted.
    pub fn track(&mut self, buffer_bytes: u64, mem: &mut Reservation) -> Result<()> {
        if buffer_bytes > self.counted {
            mem.grow(buffer_bytes - self.counted)?;
            self.counted = buffer_bytes;
        }
        Ok(())
    }

    /// Reserves the buffer of `v`.
    pub fn vec<T>(&mut self, v: &Vec<T>, mem: &mut Reservation) -> Result<()> {
        self.track((v.capacity() * std::mem::size_of::<T>()) as u64, mem)
    }

    /// Reserves the table of a hash map or set of `capacity` entries of `T` (each entry also
    /// costs a control byte).
    pub fn table<T>(&mut self, capacity: usize, mem: &mut Reservation) -> Result<()> {
        self.track((capacity * (std::mem::size_of::<T>() + 1)) as u64, mem)
    }
}

/// The size of a datum in a row, with what it points to.
pub fn datum_bytes(d: &Datum) -> u64 {
    std::mem::size_of::<Datum>() as u64
        + match d {
            Datum::String(s) => ALLOC_OVERHEAD + s.capacity() as u64,
            Datum::Bytes(b) => ALLOC_OVERHEAD + b.capacity() as u64,
            Datum::Json(j) => json_bytes(j),
            _ => 0,
        }
}

fn json_bytes(j: &serde_json::Value) -> u64 {
    use serde_json::Value as V;
    // Each element of an array or map is its own value; maps also keep their keys.
    let node = std::mem::size_of::<V>() as u64 + ALLOC_OVERHEAD;
    match j {
        V::String(s) => node + s.capacity() as u64,
        V::Array(a) => node + a.iter().map(json_bytes).sum::<u64>(),
        V::Object(m) => {
            node + m
                .iter()
                .map(|(k, v)| ALLOC_OVERHEAD + 24 + k.capacity() as u64 + json_bytes(v))
                .sum::<u64>()
        }
        _ => node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_budget_and_give_back_on_drop() {
        let pool = MemoryPool::new(8 << 20);
        let mut big = pool.reservation();
        big.grow(6 << 20).expect("fits");
        // A large holder may not take the last MiB…
        assert!(matches!(big.grow(3 << 20), Err(Error::OutOfMemory(_))));
        assert!(big.grow(1 << 20).is_ok());
        assert!(matches!(big.grow(1), Err(Error::OutOfMemory(_))));
        // …which a small one still gets.
        let mut small = pool.reservation();
        small.grow(512 << 10).expect("the small holder's share");
        assert_eq!(pool.used(), (7 << 20) + (512 << 10));
        drop(big);
        assert_eq!(pool.used(), 512 << 10);
        small.shrink(100);
        drop(small);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn row_sizes_count_what_datums_point_to() {
        let small = row_bytes(&vec![Datum::Int(1)]);
        let text = row_bytes(&vec![Datum::String("x".repeat(1000))]);
        assert!((40..100).contains(&small), "{small}");
        let pool = MemoryPool::new(1 << 30);
        let mut mem = pool.reservation();
        let mut g = Growth::default();
        let mut v: Vec<u64> = Vec::new();
        for i in 0..1000 {
            v.push(i);
            g.vec(&v, &mut mem).expect("room");
        }
        assert_eq!(mem.bytes(), (v.capacity() * 8) as u64);
        assert!(text >= 1000 + small, "{text}");
    }
}
