//! What an engine serves, and each thread's own copy of it.
//!
//! The hot path reads what an engine serves on every handshake. Through an
//! `ArcSwap` alone that read costs two atomic read-modify-writes (arc-swap
//! takes a debt slot, then gives it back), as many as the handshake's own
//! `Arc` clone and drop. So each thread keeps, per engine, the value it used
//! last in a small thread-local table, tagged with the engine's generation
//! (how many values were published). A read compares the generation (one
//! atomic load, no write) and, while nothing was published since, borrows
//! the thread's copy: it takes the `Arc` out of the table and puts it back
//! when done, plain moves with no reference count touched. After a publish,
//! each thread's next read takes the new value from the `ArcSwap` and keeps
//! that.
//!
//! - A value published is seen by every read that begins after the publish
//!   returns; a read racing a publish may use the previous value, as it
//!   would had it begun a moment earlier.
//! - A thread's copy keeps the value it last used alive until its next read
//!   after a publish replaces it, another engine takes the slot, or the
//!   thread ends (as arc-swap's own `Cache` does).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::LocalKey;

use arc_swap::ArcSwap;

/// A value that the hot path reads and a reload replaces.
pub(crate) struct Published<T: 'static> {
    /// Tells this one's copies from other engines' in a thread's table.
    id: u64,
    /// How many values were published after the first: a copy tagged with
    /// an older count is stale.
    generation: AtomicU64,
    value: ArcSwap<T>,
}

/// How many engines of a kind a thread keeps a copy for.
const SLOTS: usize = 4;

/// A thread's copies of what engines of one kind publish: declare one per
/// kind, `thread_local!` with `Recent::new()`.
pub(crate) struct Recent<T>([Cell<Option<Kept<T>>>; SLOTS]);

struct Kept<T> {
    id: u64,
    generation: u64,
    value: Arc<T>,
}

impl<T> Recent<T> {
    pub(crate) const fn new() -> Self {
        Self([const { Cell::new(None) }; SLOTS])
    }
}

/// A value borrowed from a thread's copy (or, when that was stale, from
/// the `ArcSwap`); dropped, it goes to the thread's table as its copy.
pub(crate) struct Lent<T: 'static> {
    /// Taken only when dropped.
    kept: Option<Kept<T>>,
    recent: &'static LocalKey<Recent<T>>,
}

impl<T> Published<T> {
    pub(crate) fn new(value: Arc<T>) -> Self {
        static IDS: AtomicU64 = AtomicU64::new(0);
        Self {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            value: ArcSwap::new(value),
        }
    }

    /// The value now, from the `ArcSwap` (hold the guard briefly: the value
    /// it replaces lives until the guard goes).
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<T>> {
        self.value.load()
    }

    /// Publishes `value`; returns the one it replaces.
    pub(crate) fn swap(&self, value: Arc<T>) -> Arc<T> {
        let old = self.value.swap(value);
        // After the store: a read that sees the new count finds the new
        // value.
        self.generation.fetch_add(1, Ordering::Release);
        old
    }

    /// The value now, through this thread's copy in `recent` while it is
    /// current: no atomic write at all.
    #[inline]
    pub(crate) fn lend(&self, recent: &'static LocalKey<Recent<T>>) -> Lent<T> {
        let generation = self.generation.load(Ordering::Acquire);
        let slot = self.slot();
        match recent.try_with(|copies| copies.0[slot].take()) {
            Ok(Some(kept)) if kept.id == self.id && kept.generation == generation => Lent {
                kept: Some(kept),
                recent,
            },
            stale => self.lend_fresh(recent, generation, stale.ok().flatten()),
        }
    }

    /// This thread's copy is stale, another engine's, or missing: the value
    /// from the `ArcSwap`, to keep as the copy.
    #[cold]
    #[inline(never)]
    fn lend_fresh(
        &self,
        recent: &'static LocalKey<Recent<T>>,
        generation: u64,
        stale: Option<Kept<T>>,
    ) -> Lent<T> {
        // Another engine's copy goes back; a stale one of this engine's
        // goes.
        let other = stale.filter(|kept| kept.id != self.id);
        if let Some(other) = other {
            let _ = recent.try_with(|copies| copies.0[self.slot()].set(Some(other)));
        }
        Lent {
            kept: Some(Kept {
                id: self.id,
                generation,
                value: self.value.load_full(),
            }),
            recent,
        }
    }

    /// Where this engine's copy goes in a thread's table.
    fn slot(&self) -> usize {
        // Direct-mapped: the first few engines of a kind in a process never
        // evict each other.
        (self.id % SLOTS as u64) as usize
    }
}

impl<T> Lent<T> {
    /// The value; `None` only once it went back, in `drop`.
    #[inline]
    pub(crate) fn get(&self) -> Option<&T> {
        self.kept.as_ref().map(|kept| &*kept.value)
    }
}

impl<T> Drop for Lent<T> {
    #[inline]
    fn drop(&mut self) {
        let Some(kept) = self.kept.take() else {
            return;
        };
        let slot = (kept.id % SLOTS as u64) as usize;
        // Whatever took the slot meanwhile (nothing, unless a read on this
        // thread began while this one was lent) goes, outside the table.
        let replaced = self
            .recent
            .try_with(|copies| copies.0[slot].replace(Some(kept)));
        drop(replaced);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static TEST_RECENT: Recent<&'static str> = const { Recent::new() };
    }

    fn read(published: &Published<&'static str>) -> &'static str {
        let lent = published.lend(&TEST_RECENT);
        lent.get().copied().unwrap_or("none")
    }

    #[test]
    fn a_read_after_a_publish_sees_it_and_lets_the_old_value_go() {
        let published = Published::new(Arc::new("first"));
        assert_eq!(read(&published), "first");
        assert_eq!(read(&published), "first", "from the thread's copy");
        let first = Arc::downgrade(&published.swap(Arc::new("second")));
        assert!(first.upgrade().is_some(), "the thread's copy holds it");
        assert_eq!(read(&published), "second");
        assert!(first.upgrade().is_none(), "the stale copy went");
        assert_eq!(read(&published), "second");
    }

    #[test]
    fn engines_sharing_a_slot_each_read_their_own() {
        // Made in a row, so every `SLOTS`-th shares a slot with the first.
        let all: Vec<_> = (0..=SLOTS)
            .map(|i| Published::new(Arc::new(["a", "b", "c", "d", "e"][i % 5])))
            .collect();
        let (first, same_slot) = (&all[0], &all[SLOTS]);
        assert_eq!(first.slot(), same_slot.slot());
        for _ in 0..3 {
            assert_eq!(read(first), "a");
            assert_eq!(read(same_slot), ["a", "b", "c", "d", "e"][SLOTS % 5]);
        }
        same_slot.swap(Arc::new("z"));
        assert_eq!(read(first), "a");
        assert_eq!(read(same_slot), "z");
    }

    #[test]
    fn another_threads_publish_is_seen_here() {
        let published = Arc::new(Published::new(Arc::new("first")));
        assert_eq!(read(&published), "first");
        let publisher = published.clone();
        std::thread::spawn(move || {
            publisher.swap(Arc::new("second"));
        })
        .join()
        .expect("the publishing thread");
        assert_eq!(read(&published), "second");
    }
}
