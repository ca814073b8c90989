//! Live per-camera status on this node, written by camera actors, read by the admin API and
//! the dev progress line. Node-wide counters live here too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// A problem the operator should know about even while recording (e.g. audio skipped).
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
}

impl StatusBoard {
    pub fn update(&self, id: &CameraId, f: impl FnOnce(&mut CameraStatus)) {
        let mut g = self.cameras.lock().expect("status lock");
        let entry = g.entry(id.clone()).or_insert_with(|| CameraStatus {
            state: CameraState::Connecting,
            epoch: 0,
            segments_sealed: 0,
            last_segment_end_ms: None,
            note: None,
        });
        f(entry);
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
