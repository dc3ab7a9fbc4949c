//! The commit queue behind [`SharedIndex`](crate::SharedIndex): leader and
//! followers, as in RocksDB's write groups.
//!
//! Every caller enqueues its request. The first caller to find no leader
//! becomes the leader: it takes the queued requests (its own first, up to a
//! group limit), runs the group's commit with no queue lock held — so the
//! next group forms while this one is written and fsynced — then hands the
//! leadership to the oldest request still queued (or gives it up if there is
//! none) and wakes each member of its group with that member's own result.
//! A follower sleeps on its own slot until it is handed either its result
//! or the leadership.
//!
//! Invariants (checked by the shuttle model in `tests/shared_queue_model.rs`,
//! which compiles this very file over shuttle's primitives):
//!
//! * at most one group commits at a time, and groups commit in queue order;
//! * every request is in exactly one group, and its caller gets exactly the
//!   result the commit returned for it, after that commit returned;
//! * no request waits forever: a leader always hands off to a queued request
//!   before it returns.
//!
//! The file uses nothing but `super::sync` (std's or shuttle's `Arc`,
//! `Mutex`, `Condvar`) and `std`, so the model can include it unchanged.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};

use super::sync::{Arc, Condvar, Mutex, MutexGuard, yield_now};

/// How often a leader yields at most for a group to fill.
const YIELDS: usize = 4;

/// A queue of requests committed in groups by whichever caller leads.
pub(crate) struct CommitQueue<Req, Res> {
    state: Mutex<QueueState<Req, Res>>,
    max_group: usize,
    /// The result each member of a group whose commit panicked gets.
    on_panic: fn() -> Res,
}

struct QueueState<Req, Res> {
    pending: VecDeque<Entry<Req, Res>>,
    /// Whether some caller is leading (committing a group or about to).
    leading: bool,
    /// The size of the last group taken.
    last_group: usize,
}

struct Entry<Req, Res> {
    req: Req,
    slot: Arc<Slot<Res>>,
}

/// Where a follower waits.
struct Slot<Res> {
    state: Mutex<SlotState<Res>>,
    wake: Condvar,
}

enum SlotState<Res> {
    Waiting,
    /// The caller leads the next group.
    Lead,
    /// The caller's result.
    Done(Res),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain bookkeeping stays consistent across a panic elsewhere.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl<Res> Slot<Res> {
    fn set(&self, state: SlotState<Res>) {
        *lock(&self.state) = state;
        self.wake.notify_one();
    }
}

impl<Req, Res> CommitQueue<Req, Res> {
    /// A queue whose groups hold at most `max_group` requests (at least 1).
    /// `on_panic` makes the result of every member of a group whose commit
    /// panicked (the leader itself panics again after handing off).
    pub(crate) fn new(max_group: usize, on_panic: fn() -> Res) -> Self {
        Self {
            state: Mutex::new(QueueState {
                pending: VecDeque::new(),
                leading: false,
                last_group: 0,
            }),
            max_group: max_group.max(1),
            on_panic,
        }
    }

    /// Enqueues `req` and returns its result. If this caller becomes the
    /// leader of a group, `commit` is called with the group's requests in
    /// queue order and must return one result per request, in the same
    /// order; otherwise `commit` is dropped unused.
    pub(crate) fn submit<F>(&self, req: Req, commit: F) -> Res
    where
        F: FnOnce(Vec<Req>) -> Vec<Res>,
    {
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState::Waiting),
            wake: Condvar::new(),
        });
        let lead = {
            let mut queue = lock(&self.state);
            queue.pending.push_back(Entry {
                req,
                slot: slot.clone(),
            });
            !std::mem::replace(&mut queue.leading, true)
        };
        if !lead {
            let mut state = lock(&slot.state);
            loop {
                match std::mem::replace(&mut *state, SlotState::Waiting) {
                    SlotState::Done(res) => return res,
                    SlotState::Lead => break,
                    SlotState::Waiting => {
                        state = slot.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                    }
                }
            }
        }
        self.lead(&slot, commit)
    }

    /// Commits one group, which starts with the leader's own request (a new
    /// leader is always the oldest queued request, and only leaders take
    /// requests off the queue).
    fn lead<F>(&self, own: &Arc<Slot<Res>>, commit: F) -> Res
    where
        F: FnOnce(Vec<Req>) -> Vec<Res>,
    {
        let group: Vec<Entry<Req, Res>> = {
            let mut queue = lock(&self.state);
            // Fewer queued than the last group took: the callers that group
            // just woke are likely about to queue again. Let them (a few
            // yields, microseconds against an fsync), so closed-loop
            // writers share one group instead of alternating between two.
            for _ in 0..YIELDS {
                if queue.pending.len() >= queue.last_group.min(self.max_group) {
                    break;
                }
                drop(queue);
                yield_now();
                queue = lock(&self.state);
            }
            let n = queue.pending.len().min(self.max_group);
            queue.last_group = n;
            queue.pending.drain(..n).collect()
        };
        let n = group.len();
        let (reqs, slots): (Vec<Req>, Vec<Arc<Slot<Res>>>) =
            group.into_iter().map(|e| (e.req, e.slot)).unzip();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| commit(reqs)));
        let (mut results, panicked) = match outcome {
            Ok(results) => (results, None),
            Err(payload) => (Vec::new(), Some(payload)),
        };
        // A commit that returned too few results leaves the rest failed
        // rather than waiting forever.
        while results.len() < n {
            results.push((self.on_panic)());
        }
        // Hand off first, so the next group starts while this one is woken.
        {
            let mut queue = lock(&self.state);
            match queue.pending.front() {
                Some(next) => next.slot.set(SlotState::Lead),
                None => queue.leading = false,
            }
        }
        let mut mine = None;
        for (slot, res) in slots.into_iter().zip(results) {
            if Arc::ptr_eq(&slot, own) {
                mine = Some(res);
            } else {
                slot.set(SlotState::Done(res));
            }
        }
        if let Some(payload) = panicked {
            panic::resume_unwind(payload);
        }
        mine.unwrap_or_else(self.on_panic)
    }
}
