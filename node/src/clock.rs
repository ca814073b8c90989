//! The real clock: the only place the node shell reads system time. Cores receive [`Now`]
//! values; the simulator supplies virtual ones.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use camrec_node_core::clock::Now;

/// Monotonic + wall time source.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Now;
}

/// System time. Monotonic milliseconds count from when the clock was made.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned real-clock read
    pub fn new() -> SystemClock {
        SystemClock { origin: Instant::now() }
    }
}

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned real-clock read
    fn now(&self) -> Now {
        let mono_ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Now { mono_ms, wall_ms }
    }
}
