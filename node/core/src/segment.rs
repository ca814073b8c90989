//! What a sealed segment is: the metadata that travels from the recorder core through the buffer
//! index to the object key and the recordings list.

use camrec_cluster_core::ids::{CameraId, Epoch, NodeId};
use serde::{Deserialize, Serialize};

/// Video codec of a segment's video track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    H264,
    H265,
}

/// A sealed segment: one standalone fragmented MP4 file (ftyp+moov+(moof+mdat)*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub camera: CameraId,
    /// The node that recorded it (the owner at the time).
    pub owner: NodeId,
    /// The owner's assignment epoch for this camera.
    pub epoch: Epoch,
    /// Recorder-local sequence number (strictly increasing within one recorder lifetime).
    pub seq: u64,
    /// Wall-clock time of the first video frame, Unix milliseconds.
    pub start_wall_ms: i64,
    /// Media duration of the video track, milliseconds (sum of sample durations).
    pub duration_ms: u32,
    /// Size of the whole file.
    pub bytes: u64,
    /// CRC-32C of the whole file, computed over the bytes as the recorder emitted them.
    pub crc32c: u32,
    pub video_codec: VideoCodec,
    pub has_audio: bool,
    pub video_frames: u32,
}

impl SegmentMeta {
    /// Wall-clock end, Unix milliseconds.
    pub fn end_wall_ms(&self) -> i64 {
        self.start_wall_ms + i64::from(self.duration_ms)
    }
}
