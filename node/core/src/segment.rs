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

    /// The part of this record known when the segment's file was opened.
    pub fn start(&self) -> SegmentStart {
        SegmentStart {
            camera: self.camera.clone(),
            owner: self.owner,
            epoch: self.epoch,
            seq: self.seq,
            start_wall_ms: self.start_wall_ms,
            video_codec: self.video_codec,
            has_audio: self.has_audio,
        }
    }
}

/// What is known about a segment when its file is opened: every field of [`SegmentMeta`] that
/// does not depend on the content. The buffer keeps it next to the file being written so that a
/// crash leftover can be salvaged and sealed with the identity the recorder would have given it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentStart {
    pub camera: CameraId,
    pub owner: NodeId,
    pub epoch: Epoch,
    pub seq: u64,
    pub start_wall_ms: i64,
    pub video_codec: VideoCodec,
    pub has_audio: bool,
}

/// What the content of a segment file adds to its [`SegmentStart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentContent {
    /// Sum of the video sample durations, 90 kHz ticks.
    pub video_duration_90k: u64,
    pub bytes: u64,
    pub crc32c: u32,
    pub video_frames: u32,
}

impl SegmentStart {
    /// The sealed segment's record: this identity plus what the file holds.
    pub fn seal(&self, content: SegmentContent) -> SegmentMeta {
        SegmentMeta {
            camera: self.camera.clone(),
            owner: self.owner,
            epoch: self.epoch,
            seq: self.seq,
            start_wall_ms: self.start_wall_ms,
            duration_ms: video_duration_ms(content.video_duration_90k),
            bytes: content.bytes,
            crc32c: content.crc32c,
            video_codec: self.video_codec,
            has_audio: self.has_audio,
            video_frames: content.video_frames,
        }
    }
}

/// A video duration in 90 kHz ticks as [`SegmentMeta::duration_ms`]: rounded to the nearest
/// millisecond, at least 1 (a sealed segment has video), saturating at `u32::MAX`.
pub fn video_duration_ms(duration_90k: u64) -> u32 {
    let duration_ms = duration_90k.saturating_add(45) / 90;
    u32::try_from(duration_ms.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_rounds_to_nearest_ms_and_is_at_least_one() {
        assert_eq!(video_duration_ms(0), 1);
        assert_eq!(video_duration_ms(44), 1);
        assert_eq!(video_duration_ms(134), 1);
        assert_eq!(video_duration_ms(135), 2);
        assert_eq!(video_duration_ms(540_000), 6000);
        assert_eq!(video_duration_ms(u64::MAX), u32::MAX);
    }

    #[test]
    fn start_and_seal_round_trip() {
        let start = SegmentStart {
            camera: CameraId::new("cam").unwrap(),
            owner: 3,
            epoch: 9,
            seq: 12,
            start_wall_ms: 1_700_000_000_000,
            video_codec: VideoCodec::H265,
            has_audio: true,
        };
        let meta = start.seal(SegmentContent {
            video_duration_90k: 540_000,
            bytes: 1234,
            crc32c: 0xdead_beef,
            video_frames: 150,
        });
        assert_eq!(
            (meta.duration_ms, meta.bytes, meta.crc32c, meta.video_frames),
            (6000, 1234, 0xdead_beef, 150)
        );
        assert_eq!(meta.start(), start);
    }
}
