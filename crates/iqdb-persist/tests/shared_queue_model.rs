//! The shared handle's commit queue (`src/shared/queue.rs`, this very file
//! compiled over shuttle's `Arc`/`Mutex`/`Condvar`) under shuttle's random
//! and PCT schedules, against a model log with duplicate rejection and an
//! injected fsync failure. Oracle, per request: an `Ok` names a frame that
//! holds this request and was durable when the caller woke; an `Err` request
//! is in no durable frame; at most one group commits at a time; no request
//! is in two frames.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sync {
    pub(crate) use shuttle::sync::{Arc, Condvar, Mutex, MutexGuard};
    pub(crate) use shuttle::thread::yield_now;
}

#[path = "../src/shared/queue.rs"]
mod queue;

use std::collections::HashSet;

use queue::CommitQueue;
use shuttle::sync::{Arc, Mutex};

/// A request: (caller, k) and the id it inserts.
type Req = ((u64, u64), u64);

#[derive(Default)]
struct Log {
    frames: Vec<(u64, u64)>,
    durable: usize,
    ids: HashSet<u64>,
    committing: bool,
    groups: usize,
    poisoned: bool,
}

/// The fsync of the group numbered `fail_group` fails (none if `None`).
fn model(fail_group: Option<usize>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let queue: Arc<CommitQueue<Req, Result<usize, ()>>> = Arc::new(CommitQueue::new(2, || Err(())));
    let threads: Vec<_> = (0..3u64)
        .map(|t| {
            let log = log.clone();
            let queue = queue.clone();
            shuttle::thread::spawn(move || {
                let mut results = Vec::new();
                for k in 0..2u64 {
                    let tag = (t, k);
                    let id = (t + k) % 3; // ids collide across callers
                    let commit_log = log.clone();
                    let result = queue.submit((tag, id), move |group| {
                        commit(&commit_log, group, fail_group)
                    });
                    // Woken: an Ok must already be durable.
                    {
                        let log = log.lock().unwrap();
                        if let Ok(pos) = result {
                            assert!(pos < log.durable, "woken before its fsync");
                            assert_eq!(log.frames[pos], tag, "an Ok names its own frame");
                        }
                    }
                    results.push((tag, result));
                }
                results
            })
        })
        .collect();
    let results: Vec<_> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let log = log.lock().unwrap();
    let durable = &log.frames[..log.durable];
    let mut seen = HashSet::new();
    for tag in &log.frames {
        assert!(seen.insert(*tag), "{tag:?} logged twice");
    }
    for (tag, result) in results {
        match result {
            Ok(pos) => assert_eq!(durable[pos], tag),
            Err(()) => assert!(!durable.contains(&tag), "{tag:?} failed but is durable"),
        }
    }
    if fail_group.is_some_and(|g| g < log.groups) {
        assert!(log.poisoned, "the injected fsync failure fired");
    }
}

fn commit(log: &Mutex<Log>, group: Vec<Req>, fail_group: Option<usize>) -> Vec<Result<usize, ()>> {
    {
        let mut l = log.lock().unwrap();
        assert!(!l.committing, "two groups commit at once");
        l.committing = true;
    }
    shuttle::thread::yield_now();
    let mut l = log.lock().unwrap();
    let number = l.groups;
    l.groups += 1;
    let mut results = Vec::new();
    let mut logged = Vec::new();
    for (tag, id) in group {
        if l.poisoned || !l.ids.insert(id) {
            results.push(Err(()));
            logged.push(false);
        } else {
            l.frames.push(tag);
            results.push(Ok(l.frames.len() - 1));
            logged.push(true);
        }
    }
    drop(l);
    // The "fsync", with the lock released so others interleave.
    shuttle::thread::yield_now();
    let mut l = log.lock().unwrap();
    if fail_group == Some(number) {
        l.poisoned = true;
        for (r, logged) in results.iter_mut().zip(logged) {
            if logged {
                *r = Err(());
            }
        }
    } else if !l.poisoned {
        l.durable = l.frames.len();
    }
    l.committing = false;
    results
}

#[test]
fn commit_queue_random_schedules() {
    shuttle::check_random(|| model(None), 3000);
}

#[test]
fn commit_queue_pct_schedules() {
    shuttle::check_pct(|| model(None), 3000, 3);
}

#[test]
fn commit_queue_with_a_failed_fsync() {
    for group in 0..3 {
        shuttle::check_random(move || model(Some(group)), 1000);
    }
}
