//! Codec parameters of a camera stream, as the ingest shell (retina) reports them. They are
//! what the fMP4 init segment is built from; a change of video parameters starts a new segment.

use bytes::Bytes;

use crate::segment::VideoCodec;

/// Parameters of the video stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoParams {
    pub codec: VideoCodec,
    pub width: u16,
    pub height: u16,
    /// The decoder configuration record, exactly what retina's `VideoParameters::extra_data()`
    /// returns: an `AVCDecoderConfigurationRecord` (avcC body) for H.264, an
    /// `HEVCDecoderConfigurationRecord` (hvcC body) for H.265.
    pub extra_data: Bytes,
    /// Pixel aspect ratio (h_spacing, v_spacing) when the camera signals a non-square one.
    pub pixel_aspect_ratio: Option<(u32, u32)>,
}

/// Parameters of an AAC audio stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioParams {
    /// Also the audio track's timescale: audio `pts` are in samples.
    pub sample_rate_hz: u32,
    pub channels: u16,
    /// The AAC `AudioSpecificConfig` (ISO/IEC 14496-3 §1.6.2.1).
    pub audio_specific_config: Bytes,
    /// Samples per AAC frame, normally 1024.
    pub frame_length: u32,
}

/// Everything needed to write a segment's init segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamParams {
    pub video: VideoParams,
    /// `None` for a video-only camera, or when its audio cannot go into MP4 (e.g. G.711).
    pub audio: Option<AudioParams>,
}
