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
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
/// kind, `thread_local!` with `Recent::new()`, and name it with a
/// [`Local`].
pub(crate) struct Recent<T>([Copy<T>; SLOTS]);

/// Names a kind's thread-local [`Recent`] by type, so that reaching it
/// compiles to a direct thread-local access (through a `&LocalKey` value it
/// would be a call through a pointer).
pub(crate) trait Local: 'static {
    type Value: 'static;

    /// Runs `f` on this thread's table; `None` once the thread's
    /// thread-locals are gone.
    fn with<R>(f: impl FnOnce(&Recent<Self::Value>) -> R) -> Option<R>;
}

/// One engine's copy, direct-mapped by the engine's id.
struct Copy<T> {
    id: Cell<u64>,
    generation: Cell<u64>,
    /// Out while lent.
    value: Cell<Option<Arc<T>>>,
}

impl<T> Recent<T> {
    pub(crate) const fn new() -> Self {
        Self(
            [const {
                Copy {
                    id: Cell::new(u64::MAX),
                    generation: Cell::new(0),
                    value: Cell::new(None),
                }
            }; SLOTS],
        )
    }
}

/// A value borrowed from a thread's copy (or, when that was stale, from
/// the `ArcSwap`); dropped, it goes back to the thread's table as its copy.
pub(crate) struct Lent<L: Local> {
    /// Taken only when dropped.
    value: Option<Arc<L::Value>>,
    /// Whose copy and of which generation: it goes back only to a slot
    /// still tagged so.
    id: u64,
    generation: u64,
    local: PhantomData<L>,
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
    pub(crate) fn lend<L: Local<Value = T>>(&self) -> Lent<L> {
        let generation = self.generation.load(Ordering::Acquire);
        let slot = self.slot();
        let id = self.id;
        let copy = L::with(move |copies| {
            let copy = &copies.0[slot];
            if copy.id.get() == id && copy.generation.get() == generation {
                copy.value.take()
            } else {
                None
            }
        });
        match copy {
            Some(Some(value)) => Lent {
                value: Some(value),
                id: self.id,
                generation,
                local: PhantomData,
            },
            _ => self.lend_fresh(generation),
        }
    }

    /// This thread's copy is stale, another engine's, or missing: the value
    /// from the `ArcSwap`, which becomes the copy (tagged with the
    /// generation read before it) once given back.
    #[cold]
    #[inline(never)]
    fn lend_fresh<L: Local<Value = T>>(&self, generation: u64) -> Lent<L> {
        let slot = self.slot();
        let replaced = L::with(|copies| {
            let copy = &copies.0[slot];
            copy.id.set(self.id);
            copy.generation.set(generation);
            copy.value.take()
        });
        // Dropped outside the table: it may run a config's destructor.
        drop(replaced);
        Lent {
            value: Some(self.value.load_full()),
            id: self.id,
            generation,
            local: PhantomData,
        }
    }

    fn slot(&self) -> usize {
        slot_of(self.id)
    }
}

/// Where an engine's copy goes in a thread's table: direct-mapped, so the
/// first few engines of a kind in a process never evict each other.
fn slot_of(id: u64) -> usize {
    (id % SLOTS as u64) as usize
}

impl<L: Local> Lent<L> {
    /// The value; `None` only once it went back, in `drop`.
    #[inline]
    pub(crate) fn get(&self) -> Option<&L::Value> {
        self.value.as_deref()
    }
}

impl<L: Local> Drop for Lent<L> {
    #[inline]
    fn drop(&mut self) {
        let value = self.value.take();
        let (id, generation) = (self.id, self.generation);
        // A slot retagged meanwhile (by a read on this thread while this
        // one was lent) keeps its own; what does not go back is dropped
        // outside the table.
        let left = L::with(move |copies| {
            let copy = &copies.0[slot_of(id)];
            if copy.id.get() == id && copy.generation.get() == generation {
                copy.value.replace(value)
            } else {
                value
            }
        });
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static RECENT: Recent<&'static str> = const { Recent::new() };
    }

    struct Strs;

    impl Local for Strs {
        type Value = &'static str;

        fn with<R>(f: impl FnOnce(&Recent<&'static str>) -> R) -> Option<R> {
            RECENT.try_with(f).ok()
        }
    }

    fn read(published: &Published<&'static str>) -> &'static str {
        let lent = published.lend::<Strs>();
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
