//! Live per-camera status on this node, written by camera actors, read by the admin API and
//! the dev progress line. Node-wide counters live here too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use camrec_cluster_core::ids::{CameraId, Epoch};
use camrec_node_core::state::CameraState;
use serde::Serialize;

/// What this node knows about a camera it records.
#[derive(Debug, Clone, Serialize)]
pub struct CameraStatus {
    #[serde(flatten)]
    pub state: CameraState,
    pub epoch: Epoch,
    pub segments_sealed: u64,
    /// Wall-clock end of the newest sealed segment, Unix ms.
    pub last_segment_end_ms: Option<i64>,
    /// Segments of this camera dropped from the local buffer (quota, drop-oldest policy) since
    /// this node started recording it.
    pub segments_dropped: u64,
    /// A problem the operator should know about even while recording (e.g. audio skipped,
    /// segments dropped for the buffer quota).
    pub note: Option<String>,
}

/// Node-wide counters (monotonic).
#[derive(Debug, Default)]
pub struct Counters {
    pub segments_sealed: AtomicU64,
    pub segments_uploaded: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub bytes_recorded: AtomicU64,
    pub upload_failures: AtomicU64,
    pub buffer_errors: AtomicU64,
    /// Seals started but not yet in the index (fsync + rename + index flush in progress).
    pub seals_in_flight: AtomicU64,
    /// Retryable upload failures (each retried with backoff).
    pub upload_retries: AtomicU64,
    /// Pending segments dropped to keep the buffer within its quota, and their bytes.
    pub segments_dropped: AtomicU64,
    pub bytes_dropped: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default, Clone)]
pub struct StatusBoard {
    cameras: Arc<Mutex<BTreeMap<CameraId, CameraStatus>>>,
    pub counters: Arc<Counters>,
    /// The buffer is over its high watermark and not yet drained below the low one (the
    /// buffer governor's readiness, inverted).
    pub buffer_over_high_watermark: Arc<AtomicBool>,
}

impl StatusBoard {
    pub fn update(&self, id: &CameraId, f: impl FnOnce(&mut CameraStatus)) {
        let mut g = self.cameras.lock().expect("status lock");
        let entry = g.entry(id.clone()).or_insert_with(|| CameraStatus {
            state: CameraState::Connecting,
            epoch: 0,
            segments_sealed: 0,
            last_segment_end_ms: None,
            segments_dropped: 0,
            note: None,
        });
        f(entry);
    }

    /// Like [`update`](Self::update), for a camera this node records now only (a dropped
    /// leftover of a camera that moved away must not bring its status back).
    pub fn update_if_present(&self, id: &CameraId, f: impl FnOnce(&mut CameraStatus)) {
        if let Some(entry) = self.cameras.lock().expect("status lock").get_mut(id) {
            f(entry);
        }
    }

    pub fn remove(&self, id: &CameraId) {
        self.cameras.lock().expect("status lock").remove(id);
    }

    pub fn get(&self, id: &CameraId) -> Option<CameraStatus> {
        self.cameras.lock().expect("status lock").get(id).cloned()
    }

    pub fn snapshot(&self) -> BTreeMap<CameraId, CameraStatus> {
        self.cameras.lock().expect("status lock").clone()
    }

    /// (recording, total) cameras on this node.
    pub fn recording_count(&self) -> (usize, usize) {
        let g = self.cameras.lock().expect("status lock");
        (g.values().filter(|s| s.state == CameraState::Recording).count(), g.len())
    }
}
