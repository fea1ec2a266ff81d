//! Choosing a backend slot, and the bounded wait for one when every backend is full.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hyper::Response;

use super::{Shared, unavailable};
use crate::backend::Slot;
use crate::body::ResBody;
use crate::pick::Algorithm;
use crate::pool::{Choice, Members, Pool, Skip};

/// A backend slot and when it was chosen, waiting in the pool's bounded queue when every
/// backend is full (or others already wait); the 503 to send when there is none.
pub(super) async fn acquire(
    shared: &Shared,
    pool: &Pool,
    members: &Members,
    tried: &Skip,
    session: Option<&[u8]>,
) -> Result<(Slot, Instant), Response<ResBody>> {
    // With requests queued, a newcomer queues too: taking the slot a finished request just
    // freed for the oldest waiter would starve the queue. Not in consistent-hash pools:
    // there a waiter may be waiting for its own full home while other backends are free,
    // and newcomers must not wait on it.
    let fair = pool.algorithm != Algorithm::ConsistentHash;
    if !fair || pool.waiters.queued.load(Ordering::Relaxed) == 0 {
        match pool.choose(members, tried, session) {
            Choice::Got(slot, now) => return Ok((slot, now)),
            Choice::NoneUp => return Err(unavailable(shared, "no backend is up\n")),
            Choice::Full => {}
        }
    }
    // Boxed: the queue's timer and waiter would otherwise make every request's future
    // (moved whole a few times per request) larger, for a path few requests take.
    Box::pin(wait_in_queue(shared, pool, tried, session)).await
}

/// How long a newcomer lets the requests queued before it have the slots that free up
/// before trying itself. Bounded: a wake-up taken by a waiter that could not use it (its
/// session's home is elsewhere) must not leave the newcomer waiting for the full timeout.
const QUEUE_COURTESY: Duration = Duration::from_millis(50);

/// Every backend is full: wait (bounded in count and time) for a slot to come free.
async fn wait_in_queue(
    shared: &Shared,
    pool: &Pool,
    tried: &Skip,
    session: Option<&[u8]>,
) -> Result<(Slot, Instant), Response<ResBody>> {
    let waiters = &pool.waiters;
    let ahead = waiters.queued.fetch_add(1, Ordering::AcqRel);
    if ahead >= shared.settings.max_queue {
        waiters.queued.fetch_sub(1, Ordering::AcqRel);
        return Err(unavailable(
            shared,
            "every backend is full and the queue too\n",
        ));
    }
    // Leaves the queue however this ends (answered, timed out, client gone).
    struct InQueue<'a>(&'a crate::backend::Waiters);
    impl Drop for InQueue<'_> {
        fn drop(&mut self) {
            self.0.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let _in_queue = InQueue(waiters);
    let deadline = tokio::time::Instant::now() + shared.settings.queue_timeout;
    // Requests ahead get the slots that free up first (see `acquire`).
    if ahead > 0 && pool.algorithm != Algorithm::ConsistentHash {
        let courtesy = (tokio::time::Instant::now() + QUEUE_COURTESY).min(deadline);
        let _ = tokio::time::timeout_at(courtesy, waiters.notify.notified()).await;
    }
    loop {
        let notified = waiters.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Members may have changed while waiting: look at the current ones.
        let current = pool.members();
        match pool.choose(&current, tried, session) {
            Choice::Got(slot, now) => return Ok((slot, now)),
            Choice::NoneUp => return Err(unavailable(shared, "no backend is up\n")),
            Choice::Full => {}
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(unavailable(shared, "every backend is full\n"));
        }
    }
}
