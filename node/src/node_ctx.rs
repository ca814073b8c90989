//! What every actor of a node shares: identity, clock, buffer, object store, status board.

use std::sync::{Arc, OnceLock};

use camrec_cluster_core::ids::{CameraId, Epoch, NodeId};
use camrec_node_core::recorder::RecorderConfig;
use camrec_storage::buffer::SegmentBuffer;
use camrec_storage::object_store::ObjectStore;
use ractor::ActorRef;
use retina::client::SessionGroup;

use crate::clock::Clock;
use crate::status::StatusBoard;
use crate::uploader::UploaderMsg;

pub struct NodeCtx {
    pub node_id: NodeId,
    pub clock: Arc<dyn Clock>,
    pub buffer: Arc<SegmentBuffer>,
    pub store: Arc<dyn ObjectStore>,
    /// Object key prefix.
    pub prefix: String,
    pub status: StatusBoard,
    pub recorder_config: RecorderConfig,
    pub frames_queued_max: usize,
    /// retina's record of sessions it could not tear down (some cameras refuse a new session
    /// while a stale one lives).
    pub session_group: Arc<SessionGroup>,
    pub uploader: OnceLock<ActorRef<UploaderMsg>>,
    /// Incoming-owner cameras whose first segment is sealed: (camera, epoch) to report.
    pub handovers: tokio::sync::mpsc::Sender<(CameraId, Epoch)>,
    /// Per-process entropy mixed into every recorder's seed (jitter must differ between nodes,
    /// or reconnect storms synchronise).
    pub seed_base: u64,
    /// Why the buffer is full under the stop-recording policy (`None`: recording may open
    /// segments). Set by the uploader's buffer governor; every camera actor watches it.
    pub storage_full: tokio::sync::watch::Sender<Option<String>>,
}

impl NodeCtx {
    /// Seed for one recorder's RNG (backoff jitter).
    pub fn seed_for(&self, camera: &CameraId, epoch: Epoch) -> u64 {
        // FNV-1a over the id, mixed with the epoch and the node's entropy.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in camera.as_str().bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h ^ epoch.rotate_left(32) ^ self.seed_base
    }
}
