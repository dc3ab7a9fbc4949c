//! The clock the lease is measured with: the system's, or one a test
//! moves by hand.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Time as the lease sees it: a monotonic reading (for "has my lease run
/// out") and wall-clock Unix milliseconds (written into the lease object
/// for other processes).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since an arbitrary fixed origin; never goes backwards.
    fn monotonic(&self) -> Duration;
    /// Now, in Unix milliseconds.
    fn unix_ms(&self) -> u64;
}

/// The system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

fn origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        origin().elapsed()
    }

    fn unix_ms(&self) -> u64 {
        crate::unix_ms()
    }
}

/// A clock that runs with the system's but can be moved forward by hand
/// ([`advance`](Self::advance)), so that tests can let a lease run out
/// without waiting for it.
///
/// ```
/// use std::time::Duration;
/// use iqdb_persist_replicate::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let before = clock.monotonic();
/// clock.advance(Duration::from_secs(60));
/// assert!(clock.monotonic() >= before + Duration::from_secs(60));
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    offset: Mutex<Duration>,
}

impl ManualClock {
    /// A clock at the system's time.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut offset = self
            .offset
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *offset += by;
    }

    fn offset(&self) -> Duration {
        *self
            .offset
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn monotonic(&self) -> Duration {
        origin().elapsed() + self.offset()
    }

    fn unix_ms(&self) -> u64 {
        let offset = u64::try_from(self.offset().as_millis()).unwrap_or(u64::MAX);
        crate::unix_ms().saturating_add(offset)
    }
}
