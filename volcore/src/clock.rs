//! Wall-clock time for what must follow the calendar (snapshot slots, record
//! timestamps). Production uses [`SystemClock`]; tests use [`TokioClock`], whose wall clock
//! moves with tokio's (pausable) time.

use std::time::SystemTime;

/// A wall clock.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A wall clock that starts at a given time and advances with `tokio::time` (so a paused
/// test runtime drives it).
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    base: SystemTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `base` now.
    pub fn starting_at(base: SystemTime) -> Self {
        Self {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }
}
