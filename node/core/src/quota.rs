//! Sans-IO buffer governor: keeps the local segment buffer within its disk quota during an
//! object-store outage. The shell reports the buffer's contents after every seal and upload
//! ([`BufferGovernor::handle_usage`]: the pending segments and the bytes of the segments still
//! being written) and executes what comes out of [`BufferGovernor::poll_output`]: drop a pending
//! segment, pause or resume recording, readiness changes.
//!
//! Decisions (tests below, with data):
//! - **Used bytes** = pending bytes + open-segment bytes. The *high watermark* is
//!   `quota * high_watermark_percent / 100`, the *low* one likewise. Quota 0 means unlimited:
//!   nothing is ever dropped or paused and the node is always ready.
//! - **Pressure** starts when used bytes exceed the high watermark (the headroom above it is for
//!   the segments being written, which cannot be dropped). It ends when used bytes are at or
//!   below the low watermark *and fell since the previous report* — that is, the backlog drains
//!   through uploads. Bytes freed by this governor's own drops do not end it: a node dropping
//!   footage every few segments stays under pressure until the store takes its backlog.
//! - **drop-oldest**: each report that finds used bytes above the high watermark drops pending
//!   segments, oldest first by start time (then seal order), until used bytes are at or below
//!   the low watermark. Uploads in flight are never dropped (they may be landing right now).
//!   Recording never pauses.
//! - **stop-recording**: nothing is dropped; while under pressure the recorders open no new
//!   segments (the open ones finish), so the buffer holds what was recorded before the outage
//!   and recording resumes once the backlog drains below the low watermark.
//! - **Readiness**: not ready while under pressure, whatever the policy.

use std::collections::VecDeque;

use camrec_cluster_core::ids::CameraId;

/// What to do when the buffer reaches its quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullPolicy {
    /// Drop the oldest pending segments (counted, logged, reported).
    DropOldest,
    /// Stop opening new segments until the backlog drains.
    StopRecording,
}

/// Quota and watermarks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaConfig {
    /// Disk quota of the buffer (pending + open segments); 0 = unlimited.
    pub quota_bytes: u64,
    pub high_watermark_percent: u8,
    pub low_watermark_percent: u8,
    pub policy: FullPolicy,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            quota_bytes: 0,
            high_watermark_percent: 90,
            low_watermark_percent: 80,
            policy: FullPolicy::DropOldest,
        }
    }
}

impl QuotaConfig {
    /// High watermark in bytes (`None` when unlimited).
    pub fn high_watermark_bytes(&self) -> Option<u64> {
        self.watermark_bytes(self.high_watermark_percent)
    }

    /// Low watermark in bytes (`None` when unlimited).
    pub fn low_watermark_bytes(&self) -> Option<u64> {
        self.watermark_bytes(self.low_watermark_percent)
    }

    fn watermark_bytes(&self, percent: u8) -> Option<u64> {
        (self.quota_bytes > 0).then(|| {
            u64::try_from(u128::from(self.quota_bytes) * u128::from(percent) / 100).unwrap_or(u64::MAX)
        })
    }
}

/// A sealed segment waiting for upload, as the governor sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingSegment {
    /// The buffer's id (seal order).
    pub id: u64,
    pub bytes: u64,
    pub camera: CameraId,
    pub start_wall_ms: i64,
    /// Being uploaded right now: never dropped.
    pub uploading: bool,
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuotaOutput {
    /// Delete this pending segment from the buffer (count it, log it, report it).
    Drop(PendingSegment),
    /// Recorders must not open new segments (stop-recording policy).
    PauseRecording,
    /// Recorders may open segments again.
    ResumeRecording,
    /// Readiness changed (`false` while under pressure).
    Ready(bool),
}

/// Totals of what the governor dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaStats {
    pub segments_dropped: u64,
    pub bytes_dropped: u64,
    /// Used bytes after the last report (and its drops).
    pub used_bytes: u64,
}

/// Bound of the output queue between two drains (a shell bug if exceeded): one report can drop
/// at most every pending segment, so this bounds the segments one report may carry.
pub const OUTPUTS_QUEUED_MAX: usize = 1 << 20;

/// The buffer governor core.
#[derive(Debug)]
pub struct BufferGovernor {
    config: QuotaConfig,
    under_pressure: bool,
    paused: bool,
    /// Used bytes after the previous report's drops (`None` before the first report).
    used_bytes_last: Option<u64>,
    outputs: VecDeque<QuotaOutput>,
    stats: QuotaStats,
}

impl BufferGovernor {
    pub fn new(config: QuotaConfig) -> BufferGovernor {
        assert!(
            config.low_watermark_percent < config.high_watermark_percent
                && config.high_watermark_percent <= 100,
            "watermarks must satisfy low < high <= 100"
        );
        BufferGovernor {
            config,
            under_pressure: false,
            paused: false,
            used_bytes_last: None,
            outputs: VecDeque::new(),
            stats: QuotaStats::default(),
        }
    }

    pub fn config(&self) -> &QuotaConfig {
        &self.config
    }

    /// The buffer now holds `pending` (any order) and `open_bytes` in segments being written.
    pub fn handle_usage(&mut self, pending: &[PendingSegment], open_bytes: u64) {
        let (Some(high_bytes), Some(low_bytes)) =
            (self.config.high_watermark_bytes(), self.config.low_watermark_bytes())
        else {
            return; // unlimited
        };
        let pending_bytes: u64 = pending.iter().map(|p| p.bytes).sum();
        let mut used_bytes = pending_bytes.saturating_add(open_bytes);
        let draining = self.used_bytes_last.is_none_or(|last| used_bytes < last);
        if used_bytes > high_bytes {
            self.set_pressure(true);
            if self.config.policy == FullPolicy::DropOldest {
                let mut candidates: Vec<&PendingSegment> = pending.iter().filter(|p| !p.uploading).collect();
                candidates.sort_by_key(|p| (p.start_wall_ms, p.id));
                for segment in candidates {
                    if used_bytes <= low_bytes {
                        break;
                    }
                    used_bytes -= segment.bytes;
                    self.stats.segments_dropped += 1;
                    self.stats.bytes_dropped += segment.bytes;
                    self.outputs.push_back(QuotaOutput::Drop(segment.clone()));
                }
            }
        } else if used_bytes <= low_bytes && draining {
            self.set_pressure(false);
        }
        self.used_bytes_last = Some(used_bytes);
        self.stats.used_bytes = used_bytes;
        self.check_invariants();
    }

    fn set_pressure(&mut self, on: bool) {
        if self.under_pressure != on {
            self.under_pressure = on;
            self.outputs.push_back(QuotaOutput::Ready(!on));
        }
        let pause = on && self.config.policy == FullPolicy::StopRecording;
        if self.paused != pause {
            self.paused = pause;
            self.outputs.push_back(if pause {
                QuotaOutput::PauseRecording
            } else {
                QuotaOutput::ResumeRecording
            });
        }
    }

    pub fn poll_output(&mut self) -> Option<QuotaOutput> {
        self.outputs.pop_front()
    }

    /// `false` while under pressure (above the high watermark until the backlog drains).
    pub fn ready(&self) -> bool {
        !self.under_pressure
    }

    /// Recorders must not open new segments.
    pub fn paused(&self) -> bool {
        self.paused
    }

    pub fn stats(&self) -> &QuotaStats {
        &self.stats
    }

    fn check_invariants(&self) {
        assert!(self.outputs.len() <= OUTPUTS_QUEUED_MAX, "quota outputs not drained by the shell");
        assert!(!self.paused || self.under_pressure, "paused only under pressure");
        if self.config.policy == FullPolicy::DropOldest {
            assert!(!self.paused, "drop-oldest never pauses");
        } else {
            assert_eq!(self.stats.segments_dropped, 0, "stop-recording never drops");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1000-byte quota: high watermark 900, low 800.
    fn governor(policy: FullPolicy) -> BufferGovernor {
        BufferGovernor::new(QuotaConfig {
            quota_bytes: 1000,
            high_watermark_percent: 90,
            low_watermark_percent: 80,
            policy,
        })
    }

    fn seg(id: u64, bytes: u64, camera: &str, start_wall_ms: i64) -> PendingSegment {
        PendingSegment { id, bytes, camera: CameraId::new(camera).unwrap(), start_wall_ms, uploading: false }
    }

    fn outputs(g: &mut BufferGovernor) -> Vec<QuotaOutput> {
        std::iter::from_fn(|| g.poll_output()).collect()
    }

    /// Only the ids of `Drop` outputs, and the other outputs as they are.
    fn summary(g: &mut BufferGovernor) -> (Vec<u64>, Vec<QuotaOutput>) {
        let mut dropped = Vec::new();
        let mut other = Vec::new();
        for out in outputs(g) {
            match out {
                QuotaOutput::Drop(s) => dropped.push(s.id),
                o => other.push(o),
            }
        }
        (dropped, other)
    }

    #[test]
    fn watermarks_in_bytes() {
        let c = QuotaConfig { quota_bytes: 3_000_000, ..QuotaConfig::default() };
        assert_eq!((c.high_watermark_bytes(), c.low_watermark_bytes()), (Some(2_700_000), Some(2_400_000)));
        let c = QuotaConfig { quota_bytes: u64::MAX, high_watermark_percent: 100, ..QuotaConfig::default() };
        assert_eq!(c.high_watermark_bytes(), Some(u64::MAX));
        assert_eq!(QuotaConfig::default().high_watermark_bytes(), None);
    }

    #[test]
    fn unlimited_quota_never_acts() {
        let mut g = BufferGovernor::new(QuotaConfig::default());
        let pending: Vec<_> = (0..100).map(|i| seg(i, u64::MAX / 200, "a", i as i64)).collect();
        g.handle_usage(&pending, u64::MAX / 2);
        assert_eq!(outputs(&mut g), vec![]);
        assert!(g.ready() && !g.paused());
    }

    /// A scripted run: each step seals (`id`, 0 included) or uploads (`-id`, `id > 0`) one
    /// 100-byte segment, with
    /// `open_bytes` being written, and reports the buffer. Returns the steps that produced
    /// outputs: (step, dropped ids, other outputs). Dropped segments leave `pending`.
    fn run(
        g: &mut BufferGovernor,
        pending: &mut Vec<PendingSegment>,
        script: &[i64],
        open_bytes: u64,
    ) -> Vec<(usize, Vec<u64>, Vec<QuotaOutput>)> {
        let mut acted = Vec::new();
        for (step, &op) in script.iter().enumerate() {
            let id = op.unsigned_abs();
            if op >= 0 {
                let camera = if id % 2 == 0 { "a" } else { "b" };
                pending.push(seg(id, 100, camera, 1_000 * op));
            } else {
                pending.retain(|p| p.id != id);
            }
            g.handle_usage(pending, open_bytes);
            let (dropped, other) = summary(g);
            pending.retain(|p| !dropped.contains(&p.id));
            if !dropped.is_empty() || !other.is_empty() {
                acted.push((step, dropped, other));
            }
        }
        acted
    }

    #[test]
    fn drop_oldest_fill_drops_exactly_down_to_the_low_watermark_and_stays_not_ready() {
        let mut g = governor(FullPolicy::DropOldest);
        let mut pending = Vec::new();
        // Used = 100 * pending + 50 open. Seal 0..=13 during an outage.
        let fill: Vec<i64> = (0..14).collect();
        assert_eq!(
            run(&mut g, &mut pending, &fill, 50),
            vec![
                // 950 > 900: drop 0 (850), 1 (750 <= 800).
                (8, vec![0, 1], vec![QuotaOutput::Ready(false)]),
                // 850 (no action), then 950 again: drop 2, 3; never ready in between.
                (10, vec![2, 3], vec![]),
                (12, vec![4, 5], vec![]),
            ]
        );
        assert!(!g.ready());
        assert_eq!(
            (g.stats().segments_dropped, g.stats().bytes_dropped, g.stats().used_bytes),
            (6, 600, 850)
        );
        // The store is back: uploads drain the backlog; ready again at <= 800 while falling.
        assert_eq!(run(&mut g, &mut pending, &[-6], 50), vec![(0, vec![], vec![QuotaOutput::Ready(true)])]);
        assert_eq!(pending.iter().map(|p| p.id).collect::<Vec<_>>(), vec![7, 8, 9, 10, 11, 12, 13]);
        assert!(g.ready() && !g.paused());
    }

    #[test]
    fn bytes_freed_by_drops_do_not_end_the_pressure() {
        let mut g = governor(FullPolicy::DropOldest);
        // One big segment pushes used over; dropping it leaves 300, far below the low watermark.
        let mut pending = vec![seg(1, 100, "a", 10), seg(2, 800, "b", 20)];
        g.handle_usage(&pending, 50);
        assert_eq!(summary(&mut g), (vec![1, 2], vec![QuotaOutput::Ready(false)]));
        pending.clear();
        // Seals after the drop: used rises from 50; still the outage, still not ready.
        pending.push(seg(3, 100, "a", 30));
        g.handle_usage(&pending, 50);
        assert_eq!(outputs(&mut g), vec![]);
        assert!(!g.ready());
        // An upload brings it down: ready.
        pending.clear();
        g.handle_usage(&pending, 50);
        assert_eq!(outputs(&mut g), vec![QuotaOutput::Ready(true)]);
    }

    #[test]
    fn drop_oldest_orders_by_start_time_then_seal_order_and_skips_uploads_in_flight() {
        let mut g = governor(FullPolicy::DropOldest);
        let mut pending = vec![
            seg(5, 300, "a", 2_000),
            PendingSegment { uploading: true, ..seg(1, 300, "b", 1_000) },
            seg(7, 200, "c", 1_500),
            seg(6, 200, "a", 1_500),
        ];
        // 1000 + 0 open > 900: candidates by (start, id): 6, 7, 5 (1 is uploading).
        g.handle_usage(&pending, 0);
        let (dropped, other) = summary(&mut g);
        assert_eq!((dropped, other), (vec![6], vec![QuotaOutput::Ready(false)]));
        assert_eq!(g.stats().used_bytes, 800);
        pending.retain(|p| p.id != 6);
        // Everything in flight, nothing droppable: pressure persists, nothing dropped.
        for p in &mut pending {
            p.uploading = true;
        }
        pending.push(seg(9, 200, "a", 3_000));
        g.handle_usage(&pending, 0);
        assert_eq!(summary(&mut g), (vec![9], vec![]), "only the one not uploading");
    }

    #[test]
    fn stop_recording_pauses_above_high_and_resumes_below_low_with_hysteresis() {
        let mut g = governor(FullPolicy::StopRecording);
        let mut pending = Vec::new();
        let fill: Vec<i64> = (1..=9).collect();
        // 950 > 900 at step 8: pause, no drops.
        assert_eq!(
            run(&mut g, &mut pending, &fill, 50),
            vec![(8, vec![], vec![QuotaOutput::Ready(false), QuotaOutput::PauseRecording])]
        );
        assert!(g.paused() && !g.ready());
        // Paused: the open segment is sealed (50 open bytes become a pending segment).
        pending.push(seg(10, 50, "a", 10_000));
        g.handle_usage(&pending, 0);
        assert_eq!(outputs(&mut g), vec![]);
        // Uploads: 850 (between the watermarks: still paused), then 750: resume.
        assert_eq!(
            run(&mut g, &mut pending, &[-1, -2], 0),
            vec![(1, vec![], vec![QuotaOutput::Ready(true), QuotaOutput::ResumeRecording])]
        );
        assert_eq!(g.stats().segments_dropped, 0);
        // Recording again: 750 -> 900 rising does not pause (not above the high watermark); 1000 does.
        assert_eq!(run(&mut g, &mut pending, &[11], 50), vec![]);
        assert_eq!(
            run(&mut g, &mut pending, &[12], 50),
            vec![(0, vec![], vec![QuotaOutput::Ready(false), QuotaOutput::PauseRecording])]
        );
    }

    #[test]
    fn a_restart_with_a_full_buffer_starts_under_pressure() {
        let mut g = governor(FullPolicy::StopRecording);
        let pending: Vec<_> = (0..10).map(|i| seg(i, 100, "a", i as i64)).collect();
        g.handle_usage(&pending, 0);
        assert_eq!(outputs(&mut g), vec![QuotaOutput::Ready(false), QuotaOutput::PauseRecording]);
        // A first report at or below the low watermark is ready (nothing to drain from).
        let mut g = governor(FullPolicy::StopRecording);
        g.handle_usage(&pending[..8], 0);
        assert_eq!(outputs(&mut g), vec![]);
        assert!(g.ready());
    }
}
