//! Test-only helpers: fake codec parameters for unit tests, and real encoded media produced by
//! ffmpeg at test time (Annex-B H.264/H.265 split into access units, ADTS AAC split into raw
//! frames, avcC/hvcC records built from the in-band parameter sets), plus the ffprobe/ffmpeg
//! validation every segment must pass. In production retina supplies all of this.
//!
//! Compiled for this crate's tests and, with the `testutil` feature, for other crates' tests
//! (the storage buffer's crash-salvage tests build real segments with [`build_segment`]). Never
//! enabled in a production build: it runs processes and touches files.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use mp4_atom::{Atom, Avcc, HvcCArray, Hvcc};

use crate::fmp4::{self, Sample, TrackRun};
use crate::params::{AudioParams, StreamParams, VideoParams};
use crate::segment::VideoCodec;

/// A plausible avcC body (High profile SPS/PPS); not decodable together with fake frames.
pub fn fake_h264_params() -> VideoParams {
    let sps = [
        0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04,
        0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58,
    ];
    let pps = [0x68, 0xeb, 0xec, 0xb2, 0x2c];
    VideoParams {
        codec: VideoCodec::H264,
        width: 320,
        height: 240,
        extra_data: avcc_body(&sps, &pps),
        pixel_aspect_ratio: None,
    }
}

/// A structurally valid hvcC body with dummy parameter sets.
pub fn fake_h265_params() -> VideoParams {
    let hvcc = Hvcc {
        general_profile_idc: 1,
        general_level_idc: 93,
        chroma_format_idc: 1,
        num_temporal_layers: 1,
        temporal_id_nested: true,
        length_size_minus_one: 3,
        arrays: [(32u8, vec![0x40, 0x01, 0x0c]), (33, vec![0x42, 0x01, 0x01]), (34, vec![0x44, 0x01, 0xc1])]
            .into_iter()
            .map(|(nal_unit_type, nalu)| HvcCArray { completeness: true, nal_unit_type, nalus: vec![nalu] })
            .collect(),
        ..Hvcc::new()
    };
    let mut body = Vec::new();
    hvcc.encode_body(&mut body).unwrap();
    VideoParams {
        codec: VideoCodec::H265,
        width: 320,
        height: 240,
        extra_data: Bytes::from(body),
        pixel_aspect_ratio: None,
    }
}

/// AAC-LC, 48 kHz, mono.
pub fn fake_aac_params() -> AudioParams {
    AudioParams {
        sample_rate_hz: 48_000,
        channels: 1,
        audio_specific_config: Bytes::from_static(&[0x11, 0x88]),
        frame_length: 1024,
    }
}

fn avcc_body(sps: &[u8], pps: &[u8]) -> Bytes {
    let mut body = Vec::new();
    Avcc::new(sps, pps).unwrap().encode_body(&mut body).unwrap();
    Bytes::from(body)
}

/// Runs a command and returns (stdout, stderr); panics with a clear message when it cannot run.
pub fn run(program: &str, args: &[&str]) -> (String, String) {
    let output = Command::new(program).args(args).output().unwrap_or_else(|err| {
        panic!("cannot run {program} ({err}): the validation tests need ffmpeg/ffprobe; install them with `apt-get install ffmpeg`")
    });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{program} {args:?} failed: {stderr}");
    (stdout, stderr)
}

/// One encoded video access unit in MP4 sample format.
#[derive(Clone, Debug)]
pub struct VideoAccessUnit {
    pub is_key: bool,
    pub data: Bytes,
}

/// Encoded test video: parameters plus access units at a constant frame rate.
#[derive(Clone, Debug)]
pub struct EncodedVideo {
    pub params: VideoParams,
    pub frames: Vec<VideoAccessUnit>,
    pub frame_duration_90k: i64,
}

/// Encoded test audio: AAC parameters plus raw AAC frames (ADTS headers removed).
#[derive(Clone, Debug)]
pub struct EncodedAudio {
    pub params: AudioParams,
    pub frames: Vec<Bytes>,
}

/// Encodes `seconds` of 320x240 test video at 25 fps with a key frame every second.
pub fn encode_video(dir: &Path, codec: VideoCodec, seconds: u32) -> EncodedVideo {
    let t = seconds.to_string();
    let (name, codec_args): (&str, &[&str]) = match codec {
        VideoCodec::H264 => ("video.h264", &["-c:v", "libx264", "-bf", "0", "-g", "25", "-f", "h264"]),
        VideoCodec::H265 => (
            "video.hevc",
            &[
                "-c:v",
                "libx265",
                "-x265-params",
                "keyint=25:min-keyint=25:bframes=0:open-gop=0:repeat-headers=1:log-level=error",
                "-f",
                "hevc",
            ],
        ),
    };
    let path = dir.join(name);
    let path_str = path.to_str().unwrap();
    let mut args = vec!["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", &t];
    args.extend_from_slice(&["-pix_fmt", "yuv420p"]);
    args.extend_from_slice(codec_args);
    args.push(path_str);
    run("ffmpeg", &args);
    let annexb = std::fs::read(&path).unwrap();
    let nals = split_annexb(&annexb);
    match codec {
        VideoCodec::H264 => h264_access_units(&nals),
        VideoCodec::H265 => h265_access_units(&nals),
    }
}

/// Encodes `seconds` of a 440 Hz sine as AAC-LC 48 kHz mono ADTS.
pub fn encode_audio(dir: &Path, seconds: u32) -> EncodedAudio {
    let path = dir.join("audio.aac");
    let t = seconds.to_string();
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            &t,
            "-c:a",
            "aac",
            "-ac",
            "1",
            "-f",
            "adts",
            path.to_str().unwrap(),
        ],
    );
    parse_adts(&std::fs::read(&path).unwrap())
}

fn split_annexb(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::new();
    for (n, &start) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |&next| next - 3);
        while end > start && data[end - 1] == 0 {
            end -= 1; // trailing zero of a 4-byte start code (or trailing_zero_8bits)
        }
        if end > start {
            nals.push(&data[start..end]);
        }
    }
    nals
}

fn push_length_prefixed(out: &mut Vec<u8>, nal: &[u8]) {
    out.extend_from_slice(&u32::try_from(nal.len()).unwrap().to_be_bytes());
    out.extend_from_slice(nal);
}

/// Groups NAL units into access units. `kind(nal)` says (is_vcl, first_slice_of_picture,
/// is_key, keep_in_sample, starts_new_access_unit_if_after_vcl).
fn access_units(
    nals: &[&[u8]],
    kind: impl Fn(&[u8]) -> (bool, bool, bool, bool, bool),
) -> Vec<VideoAccessUnit> {
    let mut units = Vec::new();
    let mut data = Vec::new();
    let (mut has_vcl, mut is_key) = (false, false);
    for nal in nals {
        let (vcl, first_slice, key, keep, starts_unit) = kind(nal);
        if has_vcl && ((vcl && first_slice) || (!vcl && starts_unit)) {
            units.push(VideoAccessUnit { is_key, data: Bytes::from(std::mem::take(&mut data)) });
            has_vcl = false;
            is_key = false;
        }
        if vcl {
            has_vcl = true;
            is_key |= key;
        }
        if keep {
            push_length_prefixed(&mut data, nal);
        }
    }
    if has_vcl {
        units.push(VideoAccessUnit { is_key, data: Bytes::from(data) });
    }
    units
}

fn h264_access_units(nals: &[&[u8]]) -> EncodedVideo {
    let sps = nals.iter().find(|n| n[0] & 0x1f == 7).expect("no SPS");
    let pps = nals.iter().find(|n| n[0] & 0x1f == 8).expect("no PPS");
    let frames = access_units(nals, |nal| {
        let nal_type = nal[0] & 0x1f;
        let vcl = (1..=5).contains(&nal_type);
        (vcl, vcl && nal[1] & 0x80 != 0, nal_type == 5, !matches!(nal_type, 7..=9), matches!(nal_type, 6..=9))
    });
    EncodedVideo {
        params: VideoParams {
            codec: VideoCodec::H264,
            width: 320,
            height: 240,
            extra_data: avcc_body(sps, pps),
            pixel_aspect_ratio: None,
        },
        frames,
        frame_duration_90k: 3600,
    }
}

/// Removes emulation-prevention bytes (00 00 03 -> 00 00).
fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

struct BitReader<'a> {
    data: &'a [u8],
    pos_bits: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> u32 {
        let b = (self.data[self.pos_bits / 8] >> (7 - self.pos_bits % 8)) & 1;
        self.pos_bits += 1;
        u32::from(b)
    }
    fn ue(&mut self) -> u32 {
        let mut zeros = 0;
        while self.bit() == 0 {
            zeros += 1;
        }
        let mut value = 1u32;
        for _ in 0..zeros {
            value = (value << 1) | self.bit();
        }
        value - 1
    }
}

fn h265_access_units(nals: &[&[u8]]) -> EncodedVideo {
    let nal_type = |nal: &[u8]| (nal[0] >> 1) & 0x3f;
    let vps = nals.iter().find(|n| nal_type(n) == 32).expect("no VPS");
    let sps = nals.iter().find(|n| nal_type(n) == 33).expect("no SPS");
    let pps = nals.iter().find(|n| nal_type(n) == 34).expect("no PPS");

    let sps_rbsp = rbsp(sps);
    let max_sub_layers_minus1 = (sps_rbsp[2] >> 1) & 0x07;
    assert_eq!(max_sub_layers_minus1, 0, "test helper only parses single-layer SPS");
    let ptl = &sps_rbsp[3..15];
    let mut bits = BitReader { data: &sps_rbsp, pos_bits: 15 * 8 };
    let _sps_id = bits.ue();
    let chroma_format_idc = bits.ue();
    if chroma_format_idc == 3 {
        bits.bit();
    }
    let _width = bits.ue();
    let _height = bits.ue();
    if bits.bit() == 1 {
        for _ in 0..4 {
            bits.ue();
        }
    }
    let bit_depth_luma_minus8 = bits.ue();
    let bit_depth_chroma_minus8 = bits.ue();

    let hvcc = Hvcc {
        general_profile_space: ptl[0] >> 6,
        general_tier_flag: ptl[0] & 0x20 != 0,
        general_profile_idc: ptl[0] & 0x1f,
        general_profile_compatibility_flags: ptl[1..5].try_into().unwrap(),
        general_constraint_indicator_flags: ptl[5..11].try_into().unwrap(),
        general_level_idc: ptl[11],
        chroma_format_idc: chroma_format_idc as u8,
        bit_depth_luma_minus8: bit_depth_luma_minus8 as u8,
        bit_depth_chroma_minus8: bit_depth_chroma_minus8 as u8,
        num_temporal_layers: 1,
        temporal_id_nested: sps_rbsp[2] & 1 != 0,
        length_size_minus_one: 3,
        arrays: [(32u8, vps), (33, sps), (34, pps)]
            .into_iter()
            .map(|(nal_unit_type, nal)| HvcCArray {
                completeness: true,
                nal_unit_type,
                nalus: vec![nal.to_vec()],
            })
            .collect(),
        ..Hvcc::new()
    };
    let mut body = Vec::new();
    hvcc.encode_body(&mut body).unwrap();

    let frames = access_units(nals, |nal| {
        let t = nal_type(nal);
        let vcl = t < 32;
        let starts_unit = matches!(t, 32..=35 | 39);
        (vcl, vcl && nal[2] & 0x80 != 0, (16..=23).contains(&t), !matches!(t, 32..=35), starts_unit)
    });
    EncodedVideo {
        params: VideoParams {
            codec: VideoCodec::H265,
            width: 320,
            height: 240,
            extra_data: Bytes::from(body),
            pixel_aspect_ratio: None,
        },
        frames,
        frame_duration_90k: 3600,
    }
}

fn parse_adts(mut data: &[u8]) -> EncodedAudio {
    const RATES_HZ: [u32; 13] =
        [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
    let mut frames = Vec::new();
    let mut asc = None;
    while data.len() >= 7 {
        assert!(data[0] == 0xff && data[1] & 0xf0 == 0xf0, "lost ADTS sync");
        let protection_absent = data[1] & 1 == 1;
        let object_type = (data[2] >> 6) + 1;
        let freq_index = (data[2] >> 2) & 0x0f;
        let channels = ((data[2] & 1) << 2) | (data[3] >> 6);
        let frame_len =
            (usize::from(data[3] & 3) << 11) | (usize::from(data[4]) << 3) | usize::from(data[5] >> 5);
        let header_len = if protection_absent { 7 } else { 9 };
        frames.push(Bytes::copy_from_slice(&data[header_len..frame_len]));
        asc.get_or_insert((object_type, freq_index, channels));
        data = &data[frame_len..];
    }
    let (object_type, freq_index, channels) = asc.expect("no ADTS frames");
    EncodedAudio {
        params: AudioParams {
            sample_rate_hz: RATES_HZ[usize::from(freq_index)],
            channels: u16::from(channels),
            audio_specific_config: Bytes::from(vec![
                (object_type << 3) | (freq_index >> 1),
                ((freq_index & 1) << 7) | (channels << 3),
            ]),
            frame_length: 1024,
        },
        frames,
    }
}

/// Asserts a segment file passes `ffprobe -v error` and decodes with `ffmpeg -v error` without a
/// single message; returns ffprobe's format duration in milliseconds.
pub fn validate_with_ffmpeg(path: &Path) -> f64 {
    let path_str = path.to_str().unwrap();
    let (stdout, stderr) = run("ffprobe", &["-v", "error", path_str]);
    assert!(stdout.is_empty() && stderr.is_empty(), "ffprobe on {path_str}: {stdout}{stderr}");
    let (stdout, stderr) = run("ffmpeg", &["-v", "error", "-i", path_str, "-f", "null", "-"]);
    assert!(stdout.is_empty() && stderr.is_empty(), "ffmpeg decode of {path_str}: {stdout}{stderr}");
    let (stdout, _) =
        run("ffprobe", &["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path_str]);
    let duration_s: f64 = stdout.trim().parse().unwrap_or_else(|_| panic!("ffprobe duration {stdout:?}"));
    duration_s * 1000.0
}

/// Counts the video frames ffprobe finds in a file.
pub fn ffprobe_video_frames(path: &Path) -> u64 {
    let (stdout, _) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            path.to_str().unwrap(),
        ],
    );
    stdout.trim().trim_end_matches(',').parse().unwrap_or_else(|_| panic!("nb_read_frames {stdout:?}"))
}

/// A segment file built with the writer, and where each of its fragments ends.
#[derive(Clone, Debug)]
pub struct BuiltSegment {
    pub bytes: Vec<u8>,
    /// Length of ftyp + moov.
    pub init_bytes: usize,
    /// Per fragment, in order: totals up to and including it.
    pub fragments: Vec<FragmentEnd>,
}

/// Where a fragment of a [`BuiltSegment`] ends, and what the segment holds up to there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentEnd {
    pub end_bytes: usize,
    pub video_frames: u32,
    pub video_duration_90k: u64,
}

/// Writes a segment as the recorder would: the init segment for `params`, then fragments of
/// `video_per_fragment` video samples, each with the next `audio_per_fragment` audio samples.
pub fn build_segment(
    params: &StreamParams,
    video: &[Sample],
    audio: &[Sample],
    video_per_fragment: usize,
    audio_per_fragment: usize,
) -> BuiltSegment {
    let mut bytes = fmp4::init_segment(params).expect("init segment").to_vec();
    let init_bytes = bytes.len();
    let mut fragments = Vec::new();
    let (mut video_frames, mut video_90k, mut audio_ticks) = (0u32, 0u64, 0u64);
    for (n, video) in video.chunks(video_per_fragment).enumerate() {
        let audio: &[Sample] = if params.audio.is_some() {
            let first = (n * audio_per_fragment).min(audio.len());
            &audio[first..(first + audio_per_fragment).min(audio.len())]
        } else {
            &[]
        };
        let fragment = fmp4::fragment(
            n as u32 + 1,
            TrackRun { base_decode_time_ticks: video_90k, samples: video },
            Some(TrackRun { base_decode_time_ticks: audio_ticks, samples: audio }),
        )
        .expect("fragment");
        bytes.extend_from_slice(&fragment);
        video_frames += video.len() as u32;
        video_90k += video.iter().map(|s| u64::from(s.duration_ticks)).sum::<u64>();
        audio_ticks += audio.iter().map(|s| u64::from(s.duration_ticks)).sum::<u64>();
        fragments.push(FragmentEnd { end_bytes: bytes.len(), video_frames, video_duration_90k: video_90k });
    }
    BuiltSegment { bytes, init_bytes, fragments }
}

/// `seconds` of real H.264 or H.265 video (25 fps, key frame every second) with AAC audio,
/// written as a segment of 1 s fragments (25 video frames, 46 AAC frames ≈ 0.98 s each).
pub fn encoded_segment(dir: &Path, codec: VideoCodec, seconds: u32) -> (StreamParams, BuiltSegment) {
    let video = encode_video(dir, codec, seconds);
    let audio = encode_audio(dir, seconds);
    let params = StreamParams { video: video.params.clone(), audio: Some(audio.params.clone()) };
    let frame_90k = u32::try_from(video.frame_duration_90k).expect("frame duration");
    let video_samples: Vec<Sample> = video
        .frames
        .iter()
        .map(|f| Sample { duration_ticks: frame_90k, is_sync: f.is_key, data: f.data.clone() })
        .collect();
    let audio_samples: Vec<Sample> = audio
        .frames
        .iter()
        .map(|data| Sample { duration_ticks: 1024, is_sync: true, data: data.clone() })
        .collect();
    let built = build_segment(&params, &video_samples, &audio_samples, 25, 48_000 / 1024);
    (params, built)
}
