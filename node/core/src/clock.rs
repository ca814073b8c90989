//! Time as an input: the shell reads its clocks once per event and passes a [`Now`] in. The core
//! never reads a clock itself, so the simulator can drive it with a fake, drifting or stepping
//! clock and replay a run exactly.

/// The two clocks the shell read when it delivered an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds since an arbitrary origin (never goes backwards).
    pub mono_ms: u64,
    /// Wall clock, Unix milliseconds (may step when the host's clock is corrected).
    pub wall_ms: i64,
}
