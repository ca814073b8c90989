//! Clip loading: parses an MP4 file (H.264 or H.265 video, optional AAC audio) once into a
//! shared, immutable list of timed access units that every fake camera session replays.
//!
//! Timing model: the clip loops with period `loop_90k` (the video track's total duration). Each
//! access unit carries `send_90k`, its send time within one loop (decode order), and
//! `rtp_offset`, its presentation time within one loop in its stream's RTP clock. Audio is
//! shifted by its edit list (AAC encoder priming) and trimmed to the loop period so both tracks
//! repeat with exactly the same period and stay in sync over any number of loops.

use bytes::Bytes;
use mp4_atom::{Any, Codec, Decode, StszSamples, Trak};

/// RTP clock rate of every video stream.
pub const VIDEO_CLOCK_HZ: u32 = 90_000;

/// Committed clips embedded into the binary (see scripts/make-clips.sh).
pub static H264_AAC_MP4: &[u8] = include_bytes!("../../clips/h264_aac.mp4");
pub static H265_AAC_MP4: &[u8] = include_bytes!("../../clips/h265_aac.mp4");

/// Why a clip could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("mp4 parse error: {0}")]
    Mp4(#[from] mp4_atom::Error),
    #[error("clip has no moov box")]
    NoMoov,
    #[error("clip has no H.264/H.265 video track")]
    NoVideo,
    #[error("clip track is malformed: {0}")]
    Malformed(&'static str),
}

/// Video codec with its out-of-band parameter sets (NAL units without start codes).
#[derive(Debug, Clone)]
pub enum VideoCodec {
    H264 { sps: Bytes, pps: Bytes },
    H265 { vps: Bytes, sps: Bytes, pps: Bytes },
}

/// AAC audio parameters.
#[derive(Debug, Clone)]
pub struct AudioParams {
    pub clock_hz: u32,
    pub channels: u16,
    /// The AudioSpecificConfig, as carried in the SDP `config=` parameter.
    pub config: Bytes,
}

/// Which stream of a camera an access unit belongs to; also the SDP track index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Video = 0,
    Audio = 1,
}

/// One access unit: a video frame (its NAL units) or an AAC frame.
#[derive(Debug, Clone)]
pub struct AccessUnit {
    pub kind: StreamKind,
    /// Send time within one loop, in 90 kHz units.
    pub send_90k: u64,
    /// Presentation time within one loop, in the stream's RTP clock.
    pub rtp_offset: u64,
    /// Video: an IDR/IRAP picture (parameter sets have been put in-band before it).
    #[allow(dead_code)] // read by tests; for the key-frame quirks of a later issue
    pub is_key: bool,
    /// Video: NAL units without start codes or length prefixes. Audio: one raw AAC frame.
    pub nals: Vec<Bytes>,
}

/// A parsed clip, shared (via `Arc`) by every camera and session.
#[derive(Debug)]
pub struct Clip {
    pub video: VideoCodec,
    pub audio: Option<AudioParams>,
    /// Loop period in 90 kHz units.
    pub loop_90k: u64,
    /// All access units of one loop, sorted by `send_90k`.
    pub units: Vec<AccessUnit>,
}

impl Clip {
    /// Loop period in the given RTP clock (exact when the period is a whole number of ticks).
    pub fn loop_ticks(&self, clock_hz: u32) -> u64 {
        rescale(self.loop_90k, VIDEO_CLOCK_HZ as u64, clock_hz as u64)
    }

    pub fn clock_hz(&self, kind: StreamKind) -> u32 {
        match (kind, &self.audio) {
            (StreamKind::Audio, Some(a)) => a.clock_hz,
            _ => VIDEO_CLOCK_HZ,
        }
    }

    /// Parses an MP4 file held in memory. Sample data is referenced, not copied.
    pub fn parse(file: Bytes) -> Result<Clip, ClipError> {
        let mut cursor = std::io::Cursor::new(file.as_ref());
        let mut moov = None;
        while (cursor.position() as usize) < file.len() {
            if let Any::Moov(m) = Any::decode(&mut cursor)? {
                moov = Some(m);
            }
        }
        let moov = moov.ok_or(ClipError::NoMoov)?;

        let mut video = None;
        let mut audio = None;
        for trak in &moov.trak {
            let Some(codec) = trak.mdia.minf.stbl.stsd.codecs.first() else { continue };
            match codec {
                Codec::Avc1(c) if video.is_none() => {
                    let (Some(sps), Some(pps)) =
                        (c.avcc.sequence_parameter_sets.first(), c.avcc.picture_parameter_sets.first())
                    else {
                        return Err(ClipError::Malformed("avcC without SPS/PPS"));
                    };
                    let codec =
                        VideoCodec::H264 { sps: Bytes::from(sps.clone()), pps: Bytes::from(pps.clone()) };
                    video = Some((trak, codec, c.avcc.length_size));
                }
                Codec::Hvc1(c) if video.is_none() => {
                    let codec = h265_codec(&c.hvcc)?;
                    let len_size = c.hvcc.length_size_minus_one + 1;
                    video = Some((trak, codec, len_size));
                }
                Codec::Hev1(c) if video.is_none() => {
                    let codec = h265_codec(&c.hvcc)?;
                    let len_size = c.hvcc.length_size_minus_one + 1;
                    video = Some((trak, codec, len_size));
                }
                Codec::Mp4a(c) if audio.is_none() => {
                    let dec = &c.esds.es_desc.dec_config;
                    let Some(spec) = dec.dec_specific.as_ref() else {
                        return Err(ClipError::Malformed("mp4a without AudioSpecificConfig"));
                    };
                    if spec.raw.len() < 2 {
                        return Err(ClipError::Malformed("short AudioSpecificConfig"));
                    }
                    let params = AudioParams {
                        clock_hz: trak.mdia.mdhd.timescale,
                        // The AudioSpecificConfig is authoritative (ffmpeg writes 2 in the
                        // sample entry of mono AAC); retina checks the SDP against it.
                        channels: match spec.chan_conf {
                            1..=6 => u16::from(spec.chan_conf),
                            7 => 8,
                            _ => c.audio.channel_count.max(1),
                        },
                        config: Bytes::from(spec.raw.clone()),
                    };
                    audio = Some((trak, params));
                }
                _ => {}
            }
        }
        let (vtrak, vcodec, len_size) = video.ok_or(ClipError::NoVideo)?;

        let vsamples = samples(vtrak, file.len())?;
        let vscale = u64::from(vtrak.mdia.mdhd.timescale);
        if vscale == 0 || vsamples.is_empty() {
            return Err(ClipError::Malformed("empty video track"));
        }
        let vshift = edit_shift(vtrak);
        let loop_ts: u64 = vsamples.iter().map(|s| s.duration).sum();
        let loop_90k = rescale(loop_ts, vscale, VIDEO_CLOCK_HZ as u64);
        if loop_90k == 0 {
            return Err(ClipError::Malformed("video track has zero duration"));
        }

        let mut units = Vec::with_capacity(vsamples.len() * 3);
        for s in &vsamples {
            let data = file.slice(s.offset..s.offset + s.size);
            let mut nals = split_length_prefixed(&data, len_size)?;
            if s.is_sync {
                insert_parameter_sets(&vcodec, &mut nals);
            }
            let pts = (s.dts as i64 + s.cts_offset - vshift).max(0) as u64;
            let dts = (s.dts as i64 - vshift).max(0) as u64;
            units.push(AccessUnit {
                kind: StreamKind::Video,
                send_90k: rescale(dts, vscale, 90_000),
                rtp_offset: rescale(pts, vscale, 90_000),
                is_key: s.is_sync,
                nals,
            });
        }

        let audio = match audio {
            None => None,
            Some((atrak, params)) => {
                let ascale = u64::from(params.clock_hz);
                if ascale == 0 {
                    return Err(ClipError::Malformed("audio timescale 0"));
                }
                let loop_ticks = rescale(loop_90k, 90_000, ascale);
                let shift = edit_shift(atrak);
                for s in samples(atrak, file.len())? {
                    let pts = s.dts as i64 + s.cts_offset - shift;
                    if pts < 0 || pts as u64 >= loop_ticks {
                        continue; // encoder priming or beyond the loop period
                    }
                    if s.size >= 1 << 13 {
                        return Err(ClipError::Malformed("AAC frame too large for sizelength=13"));
                    }
                    units.push(AccessUnit {
                        kind: StreamKind::Audio,
                        send_90k: rescale(pts as u64, ascale, 90_000),
                        rtp_offset: pts as u64,
                        is_key: true,
                        nals: vec![file.slice(s.offset..s.offset + s.size)],
                    });
                }
                Some(params)
            }
        };
        // Stable: video before audio at equal send times.
        units.sort_by_key(|u| u.send_90k);
        Ok(Clip { video: vcodec, audio, loop_90k, units })
    }
}

fn h265_codec(hvcc: &mp4_atom::Hvcc) -> Result<VideoCodec, ClipError> {
    let find = |t: u8| {
        hvcc.arrays
            .iter()
            .find(|a| a.nal_unit_type == t)
            .and_then(|a| a.nalus.first())
            .map(|n| Bytes::from(n.clone()))
            .ok_or(ClipError::Malformed("hvcC without VPS/SPS/PPS"))
    };
    Ok(VideoCodec::H265 { vps: find(32)?, sps: find(33)?, pps: find(34)? })
}

/// `value * to / from`, rounded to nearest, without overflow.
pub fn rescale(value: u64, from: u64, to: u64) -> u64 {
    if from == 0 {
        return 0;
    }
    ((value as u128 * to as u128 + from as u128 / 2) / from as u128) as u64
}

/// The first edit's media time (in media timescale), or 0.
fn edit_shift(trak: &Trak) -> i64 {
    trak.edts
        .as_ref()
        .and_then(|e| e.elst.as_ref())
        .and_then(|l| l.entries.iter().find_map(|e| e.media_time))
        .map_or(0, |t| t as i64)
}

struct Sample {
    offset: usize,
    size: usize,
    dts: u64,
    duration: u64,
    cts_offset: i64,
    is_sync: bool,
}

/// Expands a track's sample tables into one entry per sample.
fn samples(trak: &Trak, file_len: usize) -> Result<Vec<Sample>, ClipError> {
    let stbl = &trak.mdia.minf.stbl;
    let sizes: Vec<u32> = match &stbl.stsz.samples {
        StszSamples::Identical { count, size } => vec![*size; *count as usize],
        StszSamples::Different { sizes } => sizes.clone(),
    };
    let chunk_offsets: Vec<u64> = match (&stbl.stco, &stbl.co64) {
        (Some(stco), _) => stco.entries.iter().map(|&o| u64::from(o)).collect(),
        (None, Some(co64)) => co64.entries.clone(),
        (None, None) => return Err(ClipError::Malformed("no chunk offsets")),
    };
    let mut out = Vec::with_capacity(sizes.len());
    let mut sample_i = 0usize;
    for (chunk_i, &chunk_offset) in chunk_offsets.iter().enumerate() {
        let chunk_no = chunk_i as u32 + 1;
        let per_chunk = stbl
            .stsc
            .entries
            .iter()
            .rev()
            .find(|e| e.first_chunk <= chunk_no)
            .map_or(0, |e| e.samples_per_chunk);
        let mut offset = chunk_offset as usize;
        for _ in 0..per_chunk {
            let Some(&size) = sizes.get(sample_i) else { break };
            let size = size as usize;
            if offset.checked_add(size).is_none_or(|end| end > file_len) {
                return Err(ClipError::Malformed("sample beyond end of file"));
            }
            out.push(Sample { offset, size, dts: 0, duration: 0, cts_offset: 0, is_sync: true });
            offset += size;
            sample_i += 1;
        }
    }
    if out.len() != sizes.len() {
        return Err(ClipError::Malformed("stsc/stsz sample counts disagree"));
    }
    let mut deltas =
        stbl.stts.entries.iter().flat_map(|e| std::iter::repeat_n(e.sample_delta, e.sample_count as usize));
    let mut dts = 0u64;
    for s in &mut out {
        let d = u64::from(deltas.next().ok_or(ClipError::Malformed("stts too short"))?);
        s.dts = dts;
        s.duration = d;
        dts += d;
    }
    if let Some(ctts) = &stbl.ctts {
        let mut offs =
            ctts.entries.iter().flat_map(|e| std::iter::repeat_n(e.sample_offset, e.sample_count as usize));
        for s in &mut out {
            s.cts_offset = offs.next().unwrap_or(0);
        }
    }
    if let Some(stss) = &stbl.stss {
        for s in &mut out {
            s.is_sync = false;
        }
        for &n in &stss.entries {
            if let Some(s) = (n as usize).checked_sub(1).and_then(|i| out.get_mut(i)) {
                s.is_sync = true;
            }
        }
    }
    Ok(out)
}

/// Splits an MP4 sample of length-prefixed NAL units.
fn split_length_prefixed(data: &Bytes, len_size: u8) -> Result<Vec<Bytes>, ClipError> {
    let len_size = usize::from(len_size);
    if !(1..=4).contains(&len_size) {
        return Err(ClipError::Malformed("NAL length size not 1..4"));
    }
    let mut nals = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let header = data.get(pos..pos + len_size).ok_or(ClipError::Malformed("truncated NAL length"))?;
        let len = header.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        pos += len_size;
        if len == 0 || pos + len > data.len() {
            return Err(ClipError::Malformed("NAL length beyond sample"));
        }
        nals.push(data.slice(pos..pos + len));
        pos += len;
    }
    Ok(nals)
}

/// Puts the out-of-band parameter sets in front of a key frame unless it carries them already.
fn insert_parameter_sets(codec: &VideoCodec, nals: &mut Vec<Bytes>) {
    match codec {
        VideoCodec::H264 { sps, pps } => {
            if !nals.iter().any(|n| n.first().is_some_and(|b| b & 0x1f == 7)) {
                nals.splice(0..0, [sps.clone(), pps.clone()]);
            }
        }
        VideoCodec::H265 { vps, sps, pps } => {
            if !nals.iter().any(|n| n.first().is_some_and(|b| (b >> 1) & 0x3f == 32)) {
                nals.splice(0..0, [vps.clone(), sps.clone(), pps.clone()]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_clip(bytes: &'static [u8], h265: bool) {
        let clip = Clip::parse(Bytes::from_static(bytes)).expect("clip parses");
        assert_eq!(matches!(clip.video, VideoCodec::H265 { .. }), h265);
        assert_eq!(clip.loop_90k, 10_240 * 90); // 10.24 s: 256 frames, 480 AAC frames
        let audio = clip.audio.as_ref().expect("audio track");
        assert_eq!((audio.clock_hz, audio.channels), (48_000, 1));
        let video: Vec<_> = clip.units.iter().filter(|u| u.kind == StreamKind::Video).collect();
        let aac: Vec<_> = clip.units.iter().filter(|u| u.kind == StreamKind::Audio).collect();
        assert_eq!(video.len(), 256);
        assert_eq!(aac.len(), 480);
        assert!(video[0].is_key);
        assert_eq!(video.iter().filter(|u| u.is_key).count(), 11); // closed 1 s GOPs
        for (i, v) in video.iter().enumerate() {
            assert_eq!(v.rtp_offset, i as u64 * 3600);
        }
        for (i, a) in aac.iter().enumerate() {
            assert_eq!(a.rtp_offset, i as u64 * 1024);
        }
        // A loop is a whole number of frames in both clocks, so looping is seamless.
        assert_eq!(clip.loop_ticks(48_000), 480 * 1024);
        assert!(clip.units.windows(2).all(|w| w[0].send_90k <= w[1].send_90k));
    }

    #[test]
    fn fake_clip_h264_parses() {
        check_clip(H264_AAC_MP4, false);
    }

    #[test]
    fn fake_clip_h265_parses() {
        check_clip(H265_AAC_MP4, true);
    }

    #[test]
    fn fake_clip_rejects_garbage() {
        assert!(Clip::parse(Bytes::from_static(b"\0\0\0\x08free")).is_err());
        assert!(Clip::parse(Bytes::from_static(b"not an mp4 file at all")).is_err());
    }
}
