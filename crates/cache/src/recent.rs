//! The last two keys each stream (agent) asked for on this thread, kept without a lock.
//!
//! While the prefetcher backs off, the cache's observer shows the model only the gets in a
//! one-in-256 slice of the keys (`prefetch::CachePrefetcher`); the model still needs the two
//! keys before each of those, the transition it learns. Keeping every stream's context in
//! the model would take its lock on every get, and a shared slot per stream would move a
//! cache line between the cores on every get; so each thread keeps the contexts of the
//! streams it served last. A stream served by several threads is seen by each as the part
//! it served, which only matters while backing off, to notice a pattern coming back.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use super::policy::KeyHash;

/// Streams remembered per thread (a thread serves a few agents at a time; past that, the
/// model's own context of the stream stands in: `Prefetcher::observe_after`).
const SLOTS: usize = 16;

static NEXT_BOOK: AtomicU64 = AtomicU64::new(1);

#[derive(Clone, Copy, Default)]
struct Slot {
    /// Which `RecentKeys` (0: free).
    book: u64,
    stream: u64,
    last: Option<KeyHash>,
    before_last: Option<KeyHash>,
}

#[derive(Default)]
struct Slots {
    slots: [Slot; SLOTS],
    /// The slot a new stream takes next.
    next: usize,
}

thread_local! {
    static RECENT: RefCell<Slots> = RefCell::new(Slots::default());
}

/// One observer's view of the threads' recent keys.
#[derive(Debug)]
pub(crate) struct RecentKeys {
    book: u64,
}

impl RecentKeys {
    pub fn new() -> Self {
        Self {
            book: NEXT_BOOK.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Records `key` as `stream`'s newest on this thread; returns the two keys it asked
    /// for before, older first (`None` where this thread has not seen them).
    pub fn push(&self, stream: u64, key: KeyHash) -> (Option<KeyHash>, Option<KeyHash>) {
        RECENT
            .try_with(|recent| {
                let Ok(mut recent) = recent.try_borrow_mut() else {
                    return (None, None);
                };
                let book = self.book;
                let found = recent
                    .slots
                    .iter()
                    .position(|s| s.book == book && s.stream == stream);
                let i = found.unwrap_or_else(|| {
                    let i = recent.next;
                    recent.next = (i + 1) % SLOTS;
                    recent.slots[i] = Slot {
                        book,
                        stream,
                        ..Slot::default()
                    };
                    i
                });
                let slot = &mut recent.slots[i];
                let before = (slot.before_last, slot.last);
                slot.before_last = slot.last;
                slot.last = Some(key);
                before
            })
            .unwrap_or((None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_observers_keep_their_own_keys() {
        let (one, two) = (RecentKeys::new(), RecentKeys::new());
        assert_eq!(one.push(7, 1), (None, None));
        assert_eq!(one.push(7, 2), (None, Some(1)));
        assert_eq!(one.push(8, 100), (None, None), "another stream");
        assert_eq!(two.push(7, 50), (None, None), "another observer");
        assert_eq!(one.push(7, 3), (Some(1), Some(2)));
        let elsewhere = std::thread::scope(|s| s.spawn(|| one.push(7, 4)).join());
        assert_eq!(elsewhere.expect("thread"), (None, None), "another thread");
    }

    #[test]
    fn the_least_recently_added_stream_makes_room() {
        let recent = RecentKeys::new();
        for stream in 0..SLOTS as u64 {
            recent.push(stream, stream);
        }
        assert_eq!(recent.push(0, 10), (None, Some(0)), "still held");
        recent.push(99, 1);
        assert_eq!(recent.push(0, 11), (None, None), "stream 0 made room");
    }
}
