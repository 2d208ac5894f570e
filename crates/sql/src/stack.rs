//! Stack room for the walks that recurse through a statement.
//!
//! Binding, planning, evaluating and executing recurse once per level of a statement's
//! nesting, which `nesting.rs` bounds (to [`crate::nesting::MAX_EXPR_DEPTH`]) but does not
//! make shallow. Tokio's worker threads have 2 MiB stacks by default, and a debug build's
//! frames are large, so each recursive step asks for room first: when less than
//! [`RED_ZONE`] is left, the step continues on a fresh heap-allocated segment (`stacker`, the
//! crate rustc uses for the same purpose). The check is a comparison against a thread-local;
//! a new segment is only ever allocated on deep statements.
//!
//! [`grow`] wraps a synchronous step, [`Grow`] a future (async recursion nests `poll` calls
//! as deep as the futures nest).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Below this much stack left, a recursive step moves to a new segment. Generous, because
/// between two guarded steps run unguarded walks over a whole subtree: derived `Clone`,
/// `Drop` and `PartialEq` of a statement at the deepest `nesting.rs` allows.
pub const RED_ZONE: usize = 1024 * 1024;

/// The size of each new segment.
pub const SEGMENT: usize = 8 * 1024 * 1024;

/// Runs `f`, on a new stack segment if this one is nearly used up.
#[inline]
pub fn grow<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(RED_ZONE, SEGMENT, f)
}

/// A future whose every poll runs with stack room ([`grow`]).
pub struct Grow<F>(F);

impl<F: Future + Unpin> Future for Grow<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let inner = &mut self.0;
        grow(move || Pin::new(inner).poll(cx))
    }
}

/// The boxed future of an async recursive step, polled with stack room.
pub type DeepFuture<'a, T> = Grow<Pin<Box<dyn Future<Output = T> + Send + 'a>>>;

/// Boxes one step of an async recursion (binding, planning, executing) so that polling it
/// never runs out of stack.
pub fn deep<'a, T>(f: impl Future<Output = T> + Send + 'a) -> DeepFuture<'a, T> {
    Grow(Box::pin(f))
}

/// [`deep`] keeping the future's own type (and so whether it is `Send`), for a recursive
/// `async fn` called directly.
pub fn deep_boxed<F: Future>(f: F) -> Grow<Pin<Box<F>>> {
    Grow(Box::pin(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_of(n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        // A large frame, as a debug build's match over an expression has.
        let pad = std::hint::black_box([0u8; 2048]);
        grow(|| 1 + depth_of(n - 1)) + usize::from(pad[0])
    }

    #[test]
    fn deep_recursion_runs_on_a_small_stack() {
        // 20,000 levels of 2 KiB frames (40 MiB of stack) on a 256 KiB thread.
        let t = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| depth_of(20_000))
            .expect("spawn");
        assert_eq!(t.join().expect("no overflow"), 20_000);
    }
}
