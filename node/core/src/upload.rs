//! Sans-IO upload scheduler: decides which sealed segments to upload next, how many at once, and
//! when a failed upload is retried. The shell owns the object store client and the segment files;
//! it reports seals and upload results here and starts the uploads this core hands out.
//!
//! Order: oldest sealed first among the ready ones, so a backlog drains in recording order.
//! Retryable failures wait `uniform(0, min(cap, base * 2^n))` (full jitter); fatal ones are
//! parked and reported once through [`UploadScheduler::poll_parked`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Scheduler limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadConfig {
    /// Uploads in flight at once.
    pub concurrency_max: usize,
    /// Ceiling of the first retry delay.
    pub retry_base_ms: u64,
    /// Ceiling of every retry delay.
    pub retry_cap_ms: u64,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig { concurrency_max: 4, retry_base_ms: 1000, retry_cap_ms: 60_000 }
    }
}

/// How an upload failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryKind {
    /// Worth retrying later (5xx, SlowDown, timeout, connection reset).
    Retryable,
    /// Retrying cannot help (object rejected, segment unreadable): park it and report.
    Fatal,
}

/// Counters, also the gauges `in_flight` and `pending`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Uploads started and not yet reported.
    pub in_flight: usize,
    /// Known, not in flight, not parked (ready or waiting for a retry).
    pub pending: usize,
    /// Retryable failures seen.
    pub retries: u64,
    /// Uploads parked after a fatal failure.
    pub failed: u64,
    /// Uploads confirmed.
    pub succeeded: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum UploadState {
    Ready,
    Waiting { retry_at_ms: u64 },
    InFlight,
    Parked,
}

#[derive(Clone, Debug)]
struct Upload {
    /// Position in seal order (oldest first).
    order: u64,
    attempts: u32,
    state: UploadState,
}

/// Doublings after which the retry ceiling is pinned at the cap.
const ATTEMPTS_DOUBLING_MAX: u32 = 32;

/// The upload scheduler core.
#[derive(Debug)]
pub struct UploadScheduler {
    config: UploadConfig,
    rng: ChaCha8Rng,
    uploads: BTreeMap<u64, Upload>,
    /// (order, id) of uploads that may start now.
    ready: BTreeSet<(u64, u64)>,
    /// (retry_at_ms, order, id) of uploads waiting for their retry.
    waiting: BTreeSet<(u64, u64, u64)>,
    /// Parked ids not yet reported.
    parked_unreported: VecDeque<u64>,
    order_next: u64,
    stats: UploadStats,
}

impl UploadScheduler {
    pub fn new(config: UploadConfig, rng_seed: u64) -> UploadScheduler {
        assert!(config.concurrency_max > 0, "upload concurrency_max must be positive");
        assert!(config.retry_cap_ms >= config.retry_base_ms, "retry cap below base");
        UploadScheduler {
            config,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            uploads: BTreeMap::new(),
            ready: BTreeSet::new(),
            waiting: BTreeSet::new(),
            parked_unreported: VecDeque::new(),
            order_next: 0,
            stats: UploadStats::default(),
        }
    }

    /// A segment was sealed (or found pending at startup): schedule its upload. Idempotent.
    pub fn handle_sealed(&mut self, _now_ms: u64, id: u64) {
        if self.uploads.contains_key(&id) {
            return;
        }
        let order = self.order_next;
        self.order_next += 1;
        self.uploads.insert(id, Upload { order, attempts: 0, state: UploadState::Ready });
        self.ready.insert((order, id));
        self.check_invariants();
    }

    /// The upload of `id` finished. Results for ids not in flight are ignored (a late duplicate).
    pub fn handle_result(&mut self, now_ms: u64, id: u64, result: Result<(), RetryKind>) {
        let Some(upload) = self.uploads.get_mut(&id) else { return };
        if upload.state != UploadState::InFlight {
            return;
        }
        match result {
            Ok(()) => {
                self.uploads.remove(&id);
                self.stats.succeeded += 1;
            }
            Err(RetryKind::Retryable) => {
                let doublings = upload.attempts.min(ATTEMPTS_DOUBLING_MAX);
                let ceiling_ms =
                    self.config.retry_base_ms.saturating_mul(1u64 << doublings).min(self.config.retry_cap_ms);
                let retry_at_ms = now_ms.saturating_add(self.rng.gen_range(0..=ceiling_ms));
                upload.attempts = upload.attempts.saturating_add(1);
                upload.state = UploadState::Waiting { retry_at_ms };
                self.waiting.insert((retry_at_ms, upload.order, id));
                self.stats.retries += 1;
            }
            Err(RetryKind::Fatal) => {
                upload.state = UploadState::Parked;
                self.parked_unreported.push_back(id);
                self.stats.failed += 1;
            }
        }
        self.check_invariants();
    }

    /// The next upload to start now, if any: the oldest ready one, within `concurrency_max`.
    pub fn poll_start(&mut self, now_ms: u64) -> Option<u64> {
        while let Some(&(retry_at_ms, order, id)) = self.waiting.first() {
            if retry_at_ms > now_ms {
                break;
            }
            self.waiting.pop_first();
            self.ready.insert((order, id));
            self.uploads.get_mut(&id).expect("waiting upload is known").state = UploadState::Ready;
        }
        if self.in_flight() >= self.config.concurrency_max {
            return None;
        }
        let (_, id) = self.ready.pop_first()?;
        self.uploads.get_mut(&id).expect("ready upload is known").state = UploadState::InFlight;
        self.check_invariants();
        Some(id)
    }

    /// When the earliest waiting retry becomes ready (the shell calls `poll_start` then).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.waiting.first().map(|&(retry_at_ms, _, _)| retry_at_ms)
    }

    /// Parked (fatally failed) uploads, each reported once.
    pub fn poll_parked(&mut self) -> Option<u64> {
        self.parked_unreported.pop_front()
    }

    /// Forgets a parked upload (e.g. after an operator deleted or requeued the segment).
    pub fn remove(&mut self, id: u64) {
        if let Some(upload) = self.uploads.remove(&id) {
            self.ready.remove(&(upload.order, id));
            if let UploadState::Waiting { retry_at_ms } = upload.state {
                self.waiting.remove(&(retry_at_ms, upload.order, id));
            }
            self.parked_unreported.retain(|&p| p != id);
        }
        self.check_invariants();
    }

    pub fn stats(&self) -> UploadStats {
        UploadStats {
            in_flight: self.in_flight(),
            pending: self.ready.len() + self.waiting.len(),
            ..self.stats.clone()
        }
    }

    fn in_flight(&self) -> usize {
        self.uploads.values().filter(|u| u.state == UploadState::InFlight).count()
    }

    fn check_invariants(&self) {
        if cfg!(debug_assertions) {
            assert!(self.in_flight() <= self.config.concurrency_max);
            for &(order, id) in &self.ready {
                let upload = &self.uploads[&id];
                assert_eq!((upload.order, &upload.state), (order, &UploadState::Ready));
            }
            for &(retry_at_ms, order, id) in &self.waiting {
                let upload = &self.uploads[&id];
                assert_eq!((upload.order, &upload.state), (order, &UploadState::Waiting { retry_at_ms }));
            }
            let parked = self.uploads.values().filter(|u| u.state == UploadState::Parked).count();
            assert_eq!(self.uploads.len(), self.ready.len() + self.waiting.len() + self.in_flight() + parked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheduler(concurrency_max: usize) -> UploadScheduler {
        UploadScheduler::new(UploadConfig { concurrency_max, retry_base_ms: 1000, retry_cap_ms: 8000 }, 9)
    }

    fn drain_starts(s: &mut UploadScheduler, now_ms: u64) -> Vec<u64> {
        std::iter::from_fn(|| s.poll_start(now_ms)).collect()
    }

    #[test]
    fn oldest_first_within_concurrency() {
        let mut s = scheduler(2);
        for id in [30, 10, 20, 40] {
            s.handle_sealed(0, id);
        }
        assert_eq!(drain_starts(&mut s, 0), vec![30, 10], "seal order, not id order");
        assert_eq!(s.stats(), UploadStats { in_flight: 2, pending: 2, ..Default::default() });
        s.handle_result(5, 10, Ok(()));
        assert_eq!(drain_starts(&mut s, 5), vec![20]);
        s.handle_result(6, 30, Ok(()));
        s.handle_result(6, 20, Ok(()));
        assert_eq!(drain_starts(&mut s, 6), vec![40]);
        s.handle_result(7, 40, Ok(()));
        assert_eq!(s.stats(), UploadStats { succeeded: 4, ..Default::default() });
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn retryable_failure_backs_off_with_growing_jittered_delay() {
        let mut s = scheduler(1);
        s.handle_sealed(0, 1);
        let mut now_ms = 0;
        let ceilings_ms = [1000, 2000, 4000, 8000, 8000, 8000];
        for ceiling_ms in ceilings_ms {
            assert_eq!(s.poll_start(now_ms), Some(1));
            s.handle_result(now_ms, 1, Err(RetryKind::Retryable));
            let retry_at_ms = s.poll_timeout().unwrap();
            assert!(retry_at_ms >= now_ms && retry_at_ms <= now_ms + ceiling_ms, "{retry_at_ms} {now_ms}");
            if retry_at_ms > now_ms {
                assert_eq!(s.poll_start(retry_at_ms - 1), None, "not before its retry time");
            }
            now_ms = retry_at_ms;
        }
        assert_eq!(s.stats().retries, 6);
        assert_eq!(s.poll_start(now_ms), Some(1));
        s.handle_result(now_ms, 1, Ok(()));
        assert_eq!(s.stats(), UploadStats { retries: 6, succeeded: 1, ..Default::default() });
    }

    #[test]
    fn a_retrying_upload_does_not_block_newer_ones_and_keeps_its_age() {
        let mut s = scheduler(1);
        s.handle_sealed(0, 1);
        s.handle_sealed(0, 2);
        assert_eq!(s.poll_start(0), Some(1));
        s.handle_result(0, 1, Err(RetryKind::Retryable));
        let retry_at_ms = s.poll_timeout().unwrap();
        s.handle_sealed(0, 3);
        if retry_at_ms > 0 {
            assert_eq!(s.poll_start(0), Some(2));
            s.handle_result(0, 2, Ok(()));
        }
        // Once due, the older upload 1 goes before 3 (and before 2 if it was due at once).
        assert_eq!(s.poll_start(retry_at_ms), Some(1));
    }

    #[test]
    fn fatal_failure_parks_and_reports_once() {
        let mut s = scheduler(2);
        s.handle_sealed(0, 7);
        s.handle_sealed(0, 8);
        assert_eq!(drain_starts(&mut s, 0), vec![7, 8]);
        s.handle_result(1, 7, Err(RetryKind::Fatal));
        assert_eq!(s.poll_parked(), Some(7));
        assert_eq!(s.poll_parked(), None);
        assert_eq!(drain_starts(&mut s, 100_000), Vec::<u64>::new(), "parked uploads never restart");
        assert_eq!(s.stats(), UploadStats { in_flight: 1, pending: 0, failed: 1, ..Default::default() });
        s.remove(7);
        s.handle_result(2, 8, Ok(()));
        assert_eq!(s.stats(), UploadStats { failed: 1, succeeded: 1, ..Default::default() });
    }

    #[test]
    fn duplicate_seal_and_stray_results_are_ignored() {
        let mut s = scheduler(1);
        s.handle_sealed(0, 1);
        s.handle_sealed(0, 1);
        s.handle_result(0, 1, Ok(())); // not in flight yet
        s.handle_result(0, 99, Ok(())); // unknown
        assert_eq!(s.stats().pending, 1);
        assert_eq!(drain_starts(&mut s, 0), vec![1]);
    }

    #[test]
    fn deterministic_per_seed() {
        let run = |seed| {
            let mut s = UploadScheduler::new(UploadConfig::default(), seed);
            s.handle_sealed(0, 1);
            let mut retry_ats = Vec::new();
            for _ in 0..5 {
                let now_ms = s.poll_timeout().unwrap_or(0);
                assert_eq!(s.poll_start(now_ms), Some(1));
                s.handle_result(now_ms, 1, Err(RetryKind::Retryable));
                retry_ats.push(s.poll_timeout().unwrap());
            }
            retry_ats
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
