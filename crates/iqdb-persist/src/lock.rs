//! The writer lock: `<snapshot>.lock`, held exclusively while a handle can
//! write (WAL mode, and during an explicit repair).
//!
//! It is an advisory `flock`-style lock through
//! [`FileSystem::try_lock`](crate::storage::FileSystem::try_lock), so a
//! second opener in this process or another is refused, and a crashed
//! holder releases it automatically. A lock that was just released can still
//! look held for a moment when another thread of the same process is
//! spawning a child: between fork and exec the child holds copies of every
//! descriptor, including the lock's. Acquisition therefore retries briefly
//! before reporting [`PersistError::Locked`].

use std::time::Duration;

use crate::config::PersistConfig;
use crate::error::{PersistError, Result};
use crate::storage::{FileSystem, LockGuard};

/// Waits between attempts (about 100 ms in all).
const RETRY_DELAYS_MS: [u64; 6] = [1, 2, 5, 10, 25, 60];

/// Takes the database's writer lock, or fails with `Locked`.
pub(crate) fn acquire(fs: &dyn FileSystem, config: &PersistConfig) -> Result<Box<dyn LockGuard>> {
    let path = config.lock_path();
    let mut delays = RETRY_DELAYS_MS.iter();
    loop {
        match fs.try_lock(&path) {
            Ok(guard) => return Ok(guard),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => match delays.next() {
                Some(&ms) => std::thread::sleep(Duration::from_millis(ms)),
                None => return Err(PersistError::Locked { path }),
            },
            Err(e) => return Err(PersistError::io(&path, e)),
        }
    }
}
