//! Exponential backoff with full jitter: the n-th retry waits a uniform random delay in
//! `[0, min(cap, base * 2^n)]` ("Exponential Backoff And Jitter", AWS Architecture Blog). Full
//! jitter spreads a fleet of cameras that failed together (a switch reboot) over the whole window
//! instead of having them retry in lockstep.
//!
//! The RNG is seeded by the caller and owned here, so a run replays exactly.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Default ceiling of a single delay.
pub const BACKOFF_CAP_MS_DEFAULT: u64 = 30_000;

/// Doublings after which the ceiling is pinned at `cap_ms` (2^32 * base exceeds any sane cap).
const ATTEMPTS_DOUBLING_MAX: u32 = 32;

/// Reconnect / retry delay generator for one camera or one upload.
#[derive(Debug, Clone)]
pub struct Backoff {
    base_ms: u64,
    cap_ms: u64,
    /// Failures since the last success.
    attempts: u32,
    rng: ChaCha8Rng,
}

impl Backoff {
    /// `base_ms` is the ceiling of the first delay; `cap_ms` the ceiling of every delay.
    pub fn new(base_ms: u64, cap_ms: u64, rng_seed: u64) -> Backoff {
        assert!(base_ms > 0, "backoff base must be positive");
        assert!(cap_ms >= base_ms, "backoff cap {cap_ms} ms below base {base_ms} ms");
        Backoff { base_ms, cap_ms, attempts: 0, rng: ChaCha8Rng::seed_from_u64(rng_seed) }
    }

    /// Failures recorded since the last [`Backoff::reset`].
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Upper bound of the delay the next [`Backoff::next_delay_ms`] call can return.
    pub fn ceiling_ms(&self) -> u64 {
        let doublings = self.attempts.min(ATTEMPTS_DOUBLING_MAX);
        self.base_ms.saturating_mul(1u64 << doublings).min(self.cap_ms)
    }

    /// Records one more failure and returns how long to wait before the next attempt.
    pub fn next_delay_ms(&mut self) -> u64 {
        let ceiling_ms = self.ceiling_ms();
        self.attempts = self.attempts.saturating_add(1);
        let delay_ms = self.rng.gen_range(0..=ceiling_ms);
        debug_assert!(delay_ms <= self.cap_ms);
        delay_ms
    }

    /// Records a success: the next failure starts again from `base_ms`.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_the_growing_ceiling() {
        let mut backoff = Backoff::new(1000, 30_000, 7);
        let ceilings_expected = [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000];
        for ceiling_expected in ceilings_expected {
            assert_eq!(backoff.ceiling_ms(), ceiling_expected);
            let delay_ms = backoff.next_delay_ms();
            assert!(delay_ms <= ceiling_expected, "{delay_ms} > {ceiling_expected}");
        }
        assert_eq!(backoff.attempts(), 8);
    }

    #[test]
    fn cap_holds_after_many_attempts() {
        let mut backoff = Backoff::new(1000, 30_000, 1);
        for _ in 0..200 {
            assert!(backoff.next_delay_ms() <= 30_000);
        }
        assert_eq!(backoff.ceiling_ms(), 30_000);
    }

    #[test]
    fn jitter_is_full_and_spread() {
        // At the cap, 1000 draws must cover the whole window, not cluster near the ceiling.
        let mut backoff = Backoff::new(1000, 30_000, 3);
        for _ in 0..10 {
            backoff.next_delay_ms();
        }
        let draws: Vec<u64> = (0..1000).map(|_| backoff.next_delay_ms()).collect();
        let below_a_third = draws.iter().filter(|&&d| d < 10_000).count();
        let above_two_thirds = draws.iter().filter(|&&d| d > 20_000).count();
        assert!(below_a_third > 250 && above_two_thirds > 250, "{below_a_third} {above_two_thirds}");
        let mean = draws.iter().sum::<u64>() / 1000;
        assert!((13_000..17_000).contains(&mean), "mean {mean}");
    }

    #[test]
    fn reset_starts_over_from_base() {
        let mut backoff = Backoff::new(1000, 30_000, 5);
        for _ in 0..6 {
            backoff.next_delay_ms();
        }
        assert_eq!(backoff.ceiling_ms(), 30_000);
        backoff.reset();
        assert_eq!(backoff.attempts(), 0);
        assert_eq!(backoff.ceiling_ms(), 1000);
        assert!(backoff.next_delay_ms() <= 1000);
    }

    #[test]
    fn same_seed_same_delays_other_seed_other_delays() {
        let draw = |seed| {
            let mut backoff = Backoff::new(1000, 30_000, seed);
            (0..10).map(|_| backoff.next_delay_ms()).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }
}
