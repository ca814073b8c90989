//! The run's event trace: one line `"<virtual µs> <text>"` per event (leader changes, crashes,
//! proposals of the leader duties and their outcome, milestones), hashed with SHA-256. Same seed
//! and same binary must give the same hash; the lines are what to diff when they do not.

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// Shared, append-only trace. Clone freely (one `Arc`).
#[derive(Clone)]
pub struct Trace {
    inner: Arc<Mutex<TraceInner>>,
}

struct TraceInner {
    start: tokio::time::Instant,
    lines: Vec<String>,
    hasher: Sha256,
    /// Keep lines in memory (for `--trace-out` and tests); the hash is always kept.
    keep_lines: bool,
    events: u64,
}

impl Trace {
    /// Starts the trace at the runtime's current (virtual) instant. Call inside the runtime.
    pub fn new(keep_lines: bool) -> Trace {
        Trace {
            inner: Arc::new(Mutex::new(TraceInner {
                start: tokio::time::Instant::now(),
                lines: Vec::new(),
                hasher: Sha256::new(),
                keep_lines,
                events: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TraceInner> {
        self.inner.lock().expect("trace lock poisoned")
    }

    /// Virtual time since the trace started.
    pub fn elapsed(&self) -> std::time::Duration {
        let start = self.lock().start;
        tokio::time::Instant::now() - start
    }

    /// Virtual milliseconds since the trace started.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.elapsed().as_millis()).expect("virtual time fits u64 ms")
    }

    /// Records one event at the current virtual time.
    pub fn event(&self, text: impl AsRef<str>) {
        let mut g = self.lock();
        let t_us = (tokio::time::Instant::now() - g.start).as_micros();
        let line = format!("{t_us} {}", text.as_ref());
        g.hasher.update(line.as_bytes());
        g.hasher.update(b"\n");
        g.events += 1;
        if g.keep_lines {
            g.lines.push(line);
        }
    }

    pub fn events(&self) -> u64 {
        self.lock().events
    }

    /// SHA-256 (hex) over every line so far, each followed by `\n`.
    pub fn sha256(&self) -> String {
        let h = self.lock().hasher.clone().finalize();
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The kept lines (empty unless created with `keep_lines`).
    pub fn lines(&self) -> Vec<String> {
        self.lock().lines.clone()
    }
}
