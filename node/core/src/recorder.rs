//! The per-camera recorder and segmenter core. The camera actor feeds it connection events and
//! frames (`handle(now, input)`) and executes what it asks for (`poll_output()`): connect,
//! disconnect, open/write/seal segment files, publish the camera state. It never reads a clock;
//! `poll_timeout()` says when the actor must deliver the next `Input::Tick`.
//!
//! Decisions (see the tests for each, with data):
//! - **Cuts.** A segment starts only at a video key frame and is cut at the first key frame at or
//!   after `segment_target_ms`; a long GOP therefore makes a long segment (a segment that does
//!   not start at a key frame could not be decoded on its own). A codec-parameter change on a
//!   key frame cuts at once (new init segment). A change announced on a non-key frame is applied
//!   at the next key frame: the frames in between stay in the old segment rather than being lost.
//! - **Streaming output.** Each segment file is an init segment then fragments of about
//!   `fragment_target_ms` of video, each emitted as a `Write` when complete. `OpenSegment` and
//!   the init segment are emitted together with the first fragment, and every output of segment
//!   `n` precedes every output of segment `n + 1` (a segment kept open for boundary audio is
//!   sealed before its successor writes anything).
//! - **Durations.** A video sample's duration is the next frame's pts minus its own (one frame
//!   of lookahead); the last sample of a segment gets the cut frame's pts minus its own, or, when
//!   the segment ends on a disconnect or stop, the previous sample's duration.
//! - **Timelines.** Each stream's pts are mapped onto a continuous media timeline. A backward or
//!   repeated pts is dropped (counted; B-frame streams are not supported). A jump larger than
//!   `reanchor_threshold_ms` is held for one frame: if the next frame is back on the old timeline
//!   the held frame was a one-frame outlier and is *retimed* to the midpoint of its neighbours
//!   (its data is kept: dropping a reference frame would corrupt decoding up to the next key
//!   frame, whereas the timestamp is the only thing wrong with it); if the next frame confirms
//!   the new timeline it is a step, and the segment **continues** with the step sample given the
//!   usual frame duration. Continuing (instead of sealing and waiting for the next key frame)
//!   loses nothing on long-GOP cameras and keeps the media timeline continuous; the wall clock
//!   below re-anchors if the step was also a real gap.
//! - **Wall clock.** Anchored at the first frame's receive time after each connect, then advanced
//!   by media time and slewed toward each frame's receive time by at most `slew_ppm_max` of the
//!   elapsed media time; if the error exceeds `reanchor_threshold_ms` (a host clock step, or a
//!   real gap in the stream) it re-anchors to the receive time. Segment start times are forced to
//!   be strictly increasing.
//! - **Audio.** Audio goes to the open segment, timed from the segment's first video frame. At a
//!   cut the old segment stays open for audio until an audio frame at or after the cut arrives or
//!   500 ms pass, so no audio is lost at the boundary; audio before a segment's start is dropped.
//! - **Storage full.** `StorageFull(Some(reason))` (the node's buffer is over its high
//!   watermark under the stop-recording policy) pauses segmenting: the open segment runs to its
//!   normal cut and is sealed, no new segment opens, frames are dropped (counted) and the state is
//!   `Paused`; the session stays up so that `StorageFull(None)` resumes at the next key frame
//!   without a reconnect.
//! - **Connection.** Failures seal the open segment and back off with full jitter (`Auth` and
//!   `Unsupported` with the slower `auth_backoff_base_ms`); no frame for `stall_timeout_ms` while
//!   connected is a stall: `Disconnect`, seal, then back off like a `Timeout`.

use std::collections::VecDeque;

use bytes::Bytes;
use camrec_cluster_core::ids::{CameraId, Epoch, NodeId};

use crate::backoff::{Backoff, BACKOFF_CAP_MS_DEFAULT};
use crate::clock::Now;
use crate::fmp4::{self, Sample, TrackRun, VIDEO_TIMESCALE_HZ};
use crate::params::{StreamParams, VideoParams};
use crate::segment::{SegmentContent, SegmentMeta, SegmentStart};
use crate::state::CameraState;

/// How long a cut segment waits for boundary audio (by receive time).
pub const AUDIO_BOUNDARY_WAIT_MS: u64 = 500;
/// Bound of the output queue between two `poll_output` drains (a shell bug if exceeded).
pub const OUTPUTS_QUEUED_MAX: usize = 4096;
/// A fragment is flushed early once its buffered sample data reaches this size.
pub const FRAGMENT_BYTES_MAX: usize = 8 << 20;
/// A fragment is flushed early once it buffers this many audio frames (video stalled).
pub const FRAGMENT_AUDIO_FRAMES_MAX: usize = 512;
/// Video frame duration assumed until the stream shows its cadence (25 fps).
const VIDEO_CADENCE_DEFAULT_90K: i64 = 3600;

/// Recorder tuning. `Default` gives the production values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecorderConfig {
    pub segment_target_ms: u32,
    pub fragment_target_ms: u32,
    /// Frames larger than this are dropped (counted) instead of buffered.
    pub frame_bytes_max: usize,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// Backoff base after an authentication (or unsupported-stream) failure.
    pub auth_backoff_base_ms: u64,
    pub stall_timeout_ms: u64,
    pub slew_ppm_max: u32,
    pub reanchor_threshold_ms: u64,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            segment_target_ms: 6000,
            fragment_target_ms: 1000,
            frame_bytes_max: 16 << 20,
            backoff_base_ms: 1000,
            backoff_cap_ms: BACKOFF_CAP_MS_DEFAULT,
            auth_backoff_base_ms: 10_000,
            stall_timeout_ms: 10_000,
            slew_ppm_max: 500,
            reanchor_threshold_ms: 5000,
        }
    }
}

/// Which stream a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Video,
    Audio,
}

/// One encoded frame from the ingest shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub stream: StreamKind,
    /// Presentation time in the stream's clock (90 kHz video, sample-rate audio), as retina's
    /// elapsed i64; may jump.
    pub pts: i64,
    pub is_key: bool,
    /// Video: length-prefixed NAL units; audio: one raw AAC frame.
    pub data: Bytes,
    /// New video parameters taking effect with this frame.
    pub new_params: Option<VideoParams>,
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    Auth,
    Unreachable,
    Protocol,
    Unsupported,
    Timeout,
}

impl FailureKind {
    fn as_str(self) -> &'static str {
        match self {
            FailureKind::Auth => "auth",
            FailureKind::Unreachable => "unreachable",
            FailureKind::Protocol => "protocol",
            FailureKind::Unsupported => "unsupported",
            FailureKind::Timeout => "timeout",
        }
    }
}

/// A failed or ended ingest session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestFailure {
    pub kind: FailureKind,
    pub message: String,
}

/// Inputs from the camera actor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The session is playing with these parameters.
    Connected {
        params: StreamParams,
    },
    Frame(Frame),
    /// The session ended.
    Disconnected {
        failure: IngestFailure,
    },
    /// `poll_timeout()` passed.
    Tick,
    /// The node's buffer is full (`Some(reason)`, shown as the `Paused` state's `last_error`):
    /// open no new segment until `None`.
    StorageFull(Option<String>),
}

/// What the camera actor must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Start an ingest session.
    Connect,
    /// Tear the current session down (stall, unusable parameters, stop).
    Disconnect {
        reason: String,
    },
    /// Create the file of segment `start.seq`. `start` is everything its [`SegmentMeta`] will
    /// say that does not depend on the content (the buffer keeps it to salvage a crash leftover).
    OpenSegment {
        start: SegmentStart,
    },
    /// Append to the file of segment `seq`.
    Write {
        seq: u64,
        bytes: Bytes,
    },
    /// Segment `meta.seq` is complete: fsync, rename, index, upload.
    Seal {
        meta: SegmentMeta,
    },
    StateChanged(CameraState),
}

/// Counters for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecorderStats {
    pub frames_video: u64,
    pub frames_audio: u64,
    pub bytes_written: u64,
    pub segments_sealed: u64,
    /// Video frames dropped while waiting for a key frame (after connect or a dropped frame).
    pub frames_dropped_waiting_key: u64,
    pub frames_dropped_oversize: u64,
    /// Frames with an implausible pts that could not be retimed.
    pub frames_dropped_outlier: u64,
    /// One-frame pts outliers kept with a corrected pts.
    pub frames_retimed_outlier: u64,
    pub frames_dropped_backward: u64,
    /// Audio frames before the open segment's start (or with no segment open).
    pub frames_dropped_audio_outside_segment: u64,
    /// Audio frames of a stream without usable audio parameters.
    pub frames_dropped_audio_unsupported: u64,
    /// Frames delivered while no session was connected.
    pub frames_dropped_not_connected: u64,
    /// Video frames dropped because storage was full (no segment could be opened).
    pub frames_dropped_storage_full: u64,
    /// Confirmed pts steps absorbed into a continuous media timeline.
    pub timeline_steps: u64,
    pub clock_reanchors: u64,
    /// `Connect` outputs after the first.
    pub reconnects: u64,
    pub disconnects: u64,
    pub stalls: u64,
}

/// A frame placed on a stream's continuous media timeline.
#[derive(Clone, Debug)]
struct TimedFrame {
    frame: Frame,
    /// Media time in the stream's clock.
    media_ticks: i64,
    recv: Now,
}

enum TimelineOut {
    Accepted(TimedFrame),
    DroppedBackward,
    DroppedOutlier,
    Retimed,
    Step,
}

/// Maps one stream's raw pts onto a continuous media timeline (see the module doc).
#[derive(Debug)]
struct Timeline {
    jump_threshold_ticks: i64,
    cadence_default_ticks: i64,
    cadence_ticks: i64,
    /// (raw pts, media ticks) of the last accepted frame.
    last: Option<(i64, i64)>,
    /// A frame whose pts jumped, held until the next frame says outlier or step.
    suspect: Option<(Frame, Now)>,
}

impl Timeline {
    fn new(clock_hz: u32, jump_threshold_ms: u64, cadence_default_ticks: i64) -> Timeline {
        let jump_threshold_ticks =
            i64::try_from(jump_threshold_ms).unwrap_or(i64::MAX / 1_000_000) * i64::from(clock_hz) / 1000;
        Timeline {
            jump_threshold_ticks: jump_threshold_ticks.max(1),
            cadence_default_ticks,
            cadence_ticks: cadence_default_ticks,
            last: None,
            suspect: None,
        }
    }

    fn push(&mut self, mut frame: Frame, recv: Now, out: &mut Vec<TimelineOut>) {
        let Some((suspect, suspect_recv)) = self.suspect.take() else {
            self.accept_or_hold(frame, recv, out);
            return;
        };
        let (last_raw, last_media) = self.last.expect("a suspect frame follows an accepted one");
        let thr = self.jump_threshold_ticks;
        let delta_old = frame.pts.saturating_sub(last_raw);
        let delta_new = frame.pts.saturating_sub(suspect.pts);
        if delta_old > 0 && delta_old <= thr {
            // Back on the old timeline: the suspect was a one-frame outlier.
            if delta_old >= 2 {
                let half = delta_old / 2;
                self.last = Some((last_raw + half, last_media + half));
                out.push(TimelineOut::Retimed);
                out.push(TimelineOut::Accepted(TimedFrame {
                    frame: suspect,
                    media_ticks: last_media + half,
                    recv: suspect_recv,
                }));
            } else {
                out.push(TimelineOut::DroppedOutlier);
                if frame.new_params.is_none() {
                    frame.new_params = suspect.new_params;
                }
            }
            self.accept_or_hold(frame, recv, out);
        } else if delta_new > 0 && delta_new <= thr {
            // Two frames on the new timeline: a step. Keep the media timeline continuous.
            let media = last_media + self.cadence_ticks;
            self.last = Some((suspect.pts, media));
            out.push(TimelineOut::Step);
            out.push(TimelineOut::Accepted(TimedFrame {
                frame: suspect,
                media_ticks: media,
                recv: suspect_recv,
            }));
            self.accept_or_hold(frame, recv, out);
        } else {
            out.push(TimelineOut::DroppedOutlier);
            if frame.new_params.is_none() {
                frame.new_params = suspect.new_params;
            }
            self.accept_or_hold(frame, recv, out);
        }
    }

    fn accept_or_hold(&mut self, frame: Frame, recv: Now, out: &mut Vec<TimelineOut>) {
        let Some((last_raw, last_media)) = self.last else {
            if frame.pts < 0 {
                out.push(TimelineOut::DroppedBackward);
                return;
            }
            self.last = Some((frame.pts, frame.pts));
            out.push(TimelineOut::Accepted(TimedFrame { media_ticks: frame.pts, frame, recv }));
            return;
        };
        let delta = frame.pts.saturating_sub(last_raw);
        if delta > 0 && delta <= self.jump_threshold_ticks {
            if delta <= self.cadence_default_ticks.saturating_mul(25) {
                self.cadence_ticks = delta;
            }
            self.last = Some((frame.pts, last_media + delta));
            out.push(TimelineOut::Accepted(TimedFrame { media_ticks: last_media + delta, frame, recv }));
        } else if delta <= 0 && delta >= -self.jump_threshold_ticks {
            out.push(TimelineOut::DroppedBackward);
        } else {
            self.suspect = Some((frame, recv));
        }
    }

    /// The stream ended: an unconfirmed suspect can be neither placed nor kept.
    fn finish(&mut self) -> bool {
        self.suspect.take().is_some()
    }

    fn reset(&mut self) {
        self.last = None;
        self.suspect = None;
        self.cadence_ticks = self.cadence_default_ticks;
    }
}

/// Wall-clock estimate of video media time (see the module doc).
#[derive(Debug)]
struct WallClock {
    slew_ppm_max: i64,
    reanchor_threshold_us: i64,
    /// (media 90k, estimated wall µs) of the last observed frame.
    last: Option<(i64, i64)>,
}

impl WallClock {
    /// Returns the estimated wall time of the frame and whether the estimate re-anchored.
    fn observe(&mut self, media_90k: i64, recv_wall_ms: i64) -> (i64, bool) {
        let recv_us = recv_wall_ms.saturating_mul(1000);
        let (estimate_us, reanchored) = match self.last {
            None => (recv_us, false),
            Some((last_media_90k, last_us)) => {
                let elapsed_us = (media_90k - last_media_90k).max(0) * 100 / 9;
                let predicted_us = last_us + elapsed_us;
                let error_us = recv_us - predicted_us;
                if error_us.abs() > self.reanchor_threshold_us {
                    (recv_us, true)
                } else {
                    let slew_us = elapsed_us * self.slew_ppm_max / 1_000_000;
                    (predicted_us + error_us.clamp(-slew_us, slew_us), false)
                }
            }
        };
        self.last = Some((media_90k, estimate_us));
        (estimate_us.div_euclid(1000), reanchored)
    }
}

#[derive(Clone, Debug)]
struct PendingVideo {
    media_90k: i64,
    is_key: bool,
    data: Bytes,
}

/// A segment being written.
#[derive(Debug)]
struct Segment {
    /// Identity (camera, owner, epoch, seq, start time, codec, audio) shared by `OpenSegment`
    /// and `Seal`.
    start: SegmentStart,
    params: StreamParams,
    init: Bytes,
    /// `OpenSegment` and the init segment have been emitted.
    opened: bool,
    start_media_90k: i64,
    /// `start_media_90k` in audio ticks (0 without audio).
    audio_start_ticks: i64,
    bytes: u64,
    crc32c: u32,
    video_frames: u32,
    /// Sum of the durations of the video samples handed to fragments.
    video_duration_90k: u64,
    fragment_seq: u32,
    fragment_video: Vec<Sample>,
    fragment_video_90k: u64,
    fragment_bytes: usize,
    /// (audio ticks from segment start, data).
    fragment_audio: Vec<(i64, Bytes)>,
    /// End of the audio written so far, in audio ticks from segment start.
    audio_end_ticks: u64,
    pending: Option<PendingVideo>,
    last_duration_90k: u32,
}

/// A cut segment kept open for boundary audio.
#[derive(Debug)]
struct Closing {
    segment: Segment,
    cut_media_90k: i64,
    deadline_mono_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `Connect` emitted; waiting for `Connected` or `Disconnected`.
    Connecting,
    /// Session up.
    Streaming {
        last_frame_mono_ms: u64,
    },
    Backoff {
        retry_at_mono_ms: u64,
    },
    Stopped,
}

/// The per-camera recorder core.
#[derive(Debug)]
pub struct Recorder {
    camera: CameraId,
    owner: NodeId,
    epoch: Epoch,
    config: RecorderConfig,
    phase: Phase,
    state: CameraState,
    got_frame: bool,
    outputs: VecDeque<Output>,
    backoff: Backoff,
    auth_backoff: Backoff,
    stats: RecorderStats,
    params: Option<StreamParams>,
    init: Option<Bytes>,
    /// Video parameters announced on a non-key frame, applied at the next key frame.
    params_pending: Option<(StreamParams, Bytes)>,
    video_timeline: Timeline,
    audio_timeline: Timeline,
    wall: WallClock,
    need_key: bool,
    open: Option<Segment>,
    closing: Option<Closing>,
    seq_next: u64,
    last_start_wall_ms: Option<i64>,
    /// Why storage is full (`Input::StorageFull`); no segment opens while set.
    storage_full: Option<String>,
}

impl Recorder {
    pub fn new(
        camera: CameraId,
        owner: NodeId,
        epoch: Epoch,
        config: RecorderConfig,
        rng_seed: u64,
        now: Now,
    ) -> Recorder {
        assert!(config.segment_target_ms > 0 && config.fragment_target_ms > 0);
        let _ = now;
        let backoff =
            Backoff::new(config.backoff_base_ms, config.backoff_cap_ms.max(config.backoff_base_ms), rng_seed);
        let auth_backoff = Backoff::new(
            config.auth_backoff_base_ms,
            config.backoff_cap_ms.max(config.auth_backoff_base_ms),
            rng_seed ^ 0x9e37_79b9_7f4a_7c15,
        );
        let video_timeline =
            Timeline::new(VIDEO_TIMESCALE_HZ, config.reanchor_threshold_ms, VIDEO_CADENCE_DEFAULT_90K);
        let wall = WallClock {
            slew_ppm_max: i64::from(config.slew_ppm_max),
            reanchor_threshold_us: i64::try_from(config.reanchor_threshold_ms).unwrap_or(i64::MAX / 1000)
                * 1000,
            last: None,
        };
        let mut recorder = Recorder {
            camera,
            owner,
            epoch,
            audio_timeline: Timeline::new(48_000, config.reanchor_threshold_ms, 1024),
            config,
            phase: Phase::Connecting,
            state: CameraState::Connecting,
            got_frame: false,
            outputs: VecDeque::new(),
            backoff,
            auth_backoff,
            stats: RecorderStats::default(),
            params: None,
            init: None,
            params_pending: None,
            video_timeline,
            wall,
            need_key: true,
            open: None,
            closing: None,
            seq_next: 1,
            last_start_wall_ms: None,
            storage_full: None,
        };
        recorder.outputs.push_back(Output::Connect);
        recorder.outputs.push_back(Output::StateChanged(CameraState::Connecting));
        recorder.check_invariants();
        recorder
    }

    pub fn state(&self) -> &CameraState {
        &self.state
    }

    pub fn stats(&self) -> &RecorderStats {
        &self.stats
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Monotonic time (ms) by which the shell must deliver `Input::Tick`, if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        let phase_deadline = match self.phase {
            Phase::Streaming { last_frame_mono_ms } => {
                Some(last_frame_mono_ms.saturating_add(self.config.stall_timeout_ms))
            }
            Phase::Backoff { retry_at_mono_ms } => Some(retry_at_mono_ms),
            Phase::Connecting | Phase::Stopped => None,
        };
        let closing_deadline = self.closing.as_ref().map(|c| c.deadline_mono_ms);
        match (phase_deadline, closing_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle(&mut self, now: Now, input: Input) {
        match input {
            Input::Connected { params } => self.handle_connected(now, params),
            Input::Frame(frame) => self.handle_frame(now, frame),
            Input::Disconnected { failure } => self.handle_failure(now, failure),
            Input::Tick => {}
            Input::StorageFull(reason) => self.handle_storage_full(reason),
        }
        self.handle_deadlines(now);
        self.check_invariants();
    }

    /// Seals the open segment(s) and stops: no further `Connect`.
    pub fn stop(&mut self, now: Now) {
        let _ = now;
        if self.phase == Phase::Stopped {
            return;
        }
        if matches!(self.phase, Phase::Connecting | Phase::Streaming { .. }) {
            self.outputs.push_back(Output::Disconnect { reason: "stopped".into() });
        }
        self.end_stream();
        self.phase = Phase::Stopped;
        self.set_state(CameraState::Disabled);
        self.check_invariants();
    }

    fn handle_connected(&mut self, now: Now, params: StreamParams) {
        if self.phase == Phase::Stopped {
            return;
        }
        // A new session is a new timeline: whatever was open ends here.
        self.end_stream();
        let init = match fmp4::init_segment(&params) {
            Ok(init) => init,
            Err(err) => {
                let reason = format!("unusable stream parameters: {err}");
                self.outputs.push_back(Output::Disconnect { reason: reason.clone() });
                self.phase = Phase::Streaming { last_frame_mono_ms: now.mono_ms };
                self.handle_failure(now, IngestFailure { kind: FailureKind::Unsupported, message: reason });
                return;
            }
        };
        let audio_hz = params.audio.as_ref().map_or(48_000, |a| a.sample_rate_hz);
        let audio_frame_ticks = params.audio.as_ref().map_or(1024, |a| i64::from(a.frame_length.max(1)));
        self.audio_timeline = Timeline::new(audio_hz, self.config.reanchor_threshold_ms, audio_frame_ticks);
        self.params = Some(params);
        self.init = Some(init);
        self.phase = Phase::Streaming { last_frame_mono_ms: now.mono_ms };
        self.got_frame = false;
    }

    fn handle_frame(&mut self, now: Now, frame: Frame) {
        let Phase::Streaming { .. } = self.phase else {
            self.stats.frames_dropped_not_connected += 1;
            return;
        };
        self.phase = Phase::Streaming { last_frame_mono_ms: now.mono_ms };
        if !self.got_frame {
            self.got_frame = true;
            self.backoff.reset();
            self.auth_backoff.reset();
            self.set_state(self.streaming_state());
        }
        match frame.stream {
            StreamKind::Video => self.stats.frames_video += 1,
            StreamKind::Audio => self.stats.frames_audio += 1,
        }
        if frame.data.len() > self.config.frame_bytes_max {
            self.stats.frames_dropped_oversize += 1;
            if frame.stream == StreamKind::Video {
                self.need_key = true;
            }
            return;
        }
        let stream = frame.stream;
        let mut timed = Vec::with_capacity(3);
        match stream {
            StreamKind::Video => self.video_timeline.push(frame, now, &mut timed),
            StreamKind::Audio => {
                if self.params.as_ref().is_none_or(|p| p.audio.is_none()) {
                    self.stats.frames_dropped_audio_unsupported += 1;
                    return;
                }
                self.audio_timeline.push(frame, now, &mut timed);
            }
        }
        for out in timed {
            match out {
                TimelineOut::Accepted(t) => match stream {
                    StreamKind::Video => self.handle_video(now, t),
                    StreamKind::Audio => self.handle_audio(t),
                },
                TimelineOut::DroppedBackward | TimelineOut::DroppedOutlier => {
                    if matches!(out, TimelineOut::DroppedBackward) {
                        self.stats.frames_dropped_backward += 1;
                    } else {
                        self.stats.frames_dropped_outlier += 1;
                    }
                    // A lost video frame breaks decoding up to the next key frame.
                    if stream == StreamKind::Video {
                        self.need_key = true;
                    }
                }
                TimelineOut::Retimed => self.stats.frames_retimed_outlier += 1,
                TimelineOut::Step => self.stats.timeline_steps += 1,
            }
        }
    }

    fn handle_video(&mut self, now: Now, t: TimedFrame) {
        if !matches!(self.phase, Phase::Streaming { .. }) {
            return; // an earlier frame of this input ended the session
        }
        let (wall_ms, reanchored) = self.wall.observe(t.media_ticks, t.recv.wall_ms);
        if reanchored {
            self.stats.clock_reanchors += 1;
        }
        let TimedFrame { frame, media_ticks: media_90k, .. } = t;
        let mut params_changed = false;
        if let Some(video) = frame.new_params {
            let params = self.params.as_ref().expect("streaming has params");
            if video != params.video {
                let params = StreamParams { video, audio: params.audio.clone() };
                match fmp4::init_segment(&params) {
                    Ok(init) => {
                        if frame.is_key {
                            self.params = Some(params);
                            self.init = Some(init);
                            self.params_pending = None;
                            params_changed = true;
                        } else {
                            self.params_pending = Some((params, init));
                        }
                    }
                    Err(err) => {
                        let reason = format!("unusable stream parameters: {err}");
                        self.outputs.push_back(Output::Disconnect { reason: reason.clone() });
                        self.handle_failure(
                            now,
                            IngestFailure { kind: FailureKind::Unsupported, message: reason },
                        );
                        return;
                    }
                }
            }
        }
        if frame.is_key {
            if let Some((params, init)) = self.params_pending.take() {
                self.params = Some(params);
                self.init = Some(init);
                params_changed = true;
            }
        }
        if self.open.is_none() && self.storage_full.is_some() {
            self.stats.frames_dropped_storage_full += 1;
            self.need_key = true;
            return;
        }
        if self.need_key && !frame.is_key {
            self.stats.frames_dropped_waiting_key += 1;
            return;
        }
        let pending = PendingVideo { media_90k, is_key: frame.is_key, data: frame.data };
        let Some(open) = &self.open else {
            if !pending.is_key {
                self.stats.frames_dropped_waiting_key += 1;
                return;
            }
            self.need_key = false;
            self.open_segment(pending, wall_ms);
            return;
        };
        if pending.is_key {
            self.need_key = false;
            let elapsed_90k = media_90k - open.start_media_90k;
            let target_90k = i64::from(self.config.segment_target_ms) * 90;
            if params_changed || elapsed_90k >= target_90k {
                self.cut(now, media_90k);
                if self.storage_full.is_some() {
                    self.stats.frames_dropped_storage_full += 1;
                    self.need_key = true;
                    return;
                }
                self.open_segment(pending, wall_ms);
                return;
            }
        }
        let open = self.open.as_mut().expect("checked above");
        let previous = open.pending.replace(pending).expect("an open segment holds its last frame");
        let duration_90k = media_90k - previous.media_90k;
        self.push_video_sample(previous, duration_90k);
    }

    fn open_segment(&mut self, first: PendingVideo, wall_ms: i64) {
        debug_assert!(first.is_key);
        let params = self.params.clone().expect("streaming has params");
        let init = self.init.clone().expect("streaming has an init segment");
        let start_wall_ms = match self.last_start_wall_ms {
            Some(previous) => wall_ms.max(previous + 1),
            None => wall_ms,
        };
        self.last_start_wall_ms = Some(start_wall_ms);
        let seq = self.seq_next;
        self.seq_next += 1;
        let audio_start_ticks =
            params.audio.as_ref().map_or(0, |a| first.media_90k * i64::from(a.sample_rate_hz) / 90_000);
        let start = SegmentStart {
            camera: self.camera.clone(),
            owner: self.owner,
            epoch: self.epoch,
            seq,
            start_wall_ms,
            video_codec: params.video.codec,
            has_audio: params.audio.is_some(),
        };
        self.open = Some(Segment {
            start,
            params,
            init,
            opened: false,
            start_media_90k: first.media_90k,
            audio_start_ticks,
            bytes: 0,
            crc32c: 0,
            video_frames: 0,
            video_duration_90k: 0,
            fragment_seq: 1,
            fragment_video: Vec::new(),
            fragment_video_90k: 0,
            fragment_bytes: 0,
            fragment_audio: Vec::new(),
            audio_end_ticks: 0,
            pending: Some(first),
            last_duration_90k: VIDEO_CADENCE_DEFAULT_90K as u32,
        });
    }

    /// Hands a video sample with a known duration to the open segment's fragment.
    fn push_video_sample(&mut self, sample: PendingVideo, duration_90k: i64) {
        let open = self.open.as_mut().expect("pushing into an open segment");
        assert!(duration_90k > 0, "video sample duration {duration_90k} (timeline keeps pts increasing)");
        let duration_90k = u32::try_from(duration_90k).expect("durations are bounded by the jump threshold");
        open.fragment_bytes += sample.data.len();
        open.fragment_video.push(Sample {
            duration_ticks: duration_90k,
            is_sync: sample.is_key,
            data: sample.data,
        });
        open.fragment_video_90k += u64::from(duration_90k);
        open.video_duration_90k += u64::from(duration_90k);
        open.video_frames += 1;
        open.last_duration_90k = duration_90k;
        let fragment_target_90k = u64::from(self.config.fragment_target_ms) * 90;
        if open.fragment_video_90k >= fragment_target_90k || open.fragment_bytes >= FRAGMENT_BYTES_MAX {
            self.flush_open();
        }
    }

    fn handle_audio(&mut self, t: TimedFrame) {
        if !matches!(self.phase, Phase::Streaming { .. }) {
            return;
        }
        let rate_hz = i64::from(
            self.params.as_ref().and_then(|p| p.audio.as_ref()).expect("audio params").sample_rate_hz,
        );
        let media_90k = t.media_ticks * 90_000 / rate_hz;
        if let Some(closing) = &mut self.closing {
            if media_90k < closing.cut_media_90k {
                let segment = &mut closing.segment;
                if t.media_ticks < segment.audio_start_ticks {
                    self.stats.frames_dropped_audio_outside_segment += 1;
                    return;
                }
                segment.fragment_audio.push((t.media_ticks - segment.audio_start_ticks, t.frame.data));
                segment.fragment_bytes += segment.fragment_audio.last().map_or(0, |a| a.1.len());
                if segment.fragment_audio.len() >= FRAGMENT_AUDIO_FRAMES_MAX
                    || segment.fragment_bytes >= FRAGMENT_BYTES_MAX
                {
                    let (segment, outputs, stats) =
                        (&mut closing.segment, &mut self.outputs, &mut self.stats);
                    emit_fragment(segment, outputs, stats);
                }
                return;
            }
            // Audio reached the cut: the old segment has all its audio.
            self.seal_closing();
        }
        let Some(open) = &mut self.open else {
            self.stats.frames_dropped_audio_outside_segment += 1;
            return;
        };
        if t.media_ticks < open.audio_start_ticks {
            self.stats.frames_dropped_audio_outside_segment += 1;
            return;
        }
        open.fragment_bytes += t.frame.data.len();
        open.fragment_audio.push((t.media_ticks - open.audio_start_ticks, t.frame.data));
        if open.fragment_audio.len() >= FRAGMENT_AUDIO_FRAMES_MAX || open.fragment_bytes >= FRAGMENT_BYTES_MAX
        {
            self.flush_open();
        }
    }

    /// Emits the open segment's buffered fragment, after sealing any older segment.
    fn flush_open(&mut self) {
        if self.open.as_ref().is_some_and(|open| !open.opened) && self.closing.is_some() {
            self.seal_closing();
        }
        if let Some(open) = &mut self.open {
            emit_fragment(open, &mut self.outputs, &mut self.stats);
        }
    }

    /// Ends the open segment at a cut key frame at `cut_media_90k`.
    fn cut(&mut self, now: Now, cut_media_90k: i64) {
        self.finish_open_video(Some(cut_media_90k));
        if self.closing.is_some() {
            self.seal_closing();
        }
        let segment = self.open.take().expect("cutting an open segment");
        if segment.params.audio.is_some() {
            self.closing = Some(Closing {
                segment,
                cut_media_90k,
                deadline_mono_ms: now.mono_ms.saturating_add(AUDIO_BOUNDARY_WAIT_MS),
            });
        } else {
            self.seal_segment(segment);
        }
    }

    /// Gives the open segment's held last frame its duration: up to the cut, else the previous
    /// sample's duration.
    fn finish_open_video(&mut self, cut_media_90k: Option<i64>) {
        let Some(open) = &mut self.open else { return };
        let Some(last) = open.pending.take() else { return };
        let duration_90k = match cut_media_90k {
            Some(cut) => cut - last.media_90k,
            None => i64::from(open.last_duration_90k),
        };
        self.push_video_sample(last, duration_90k);
    }

    fn seal_closing(&mut self) {
        if let Some(closing) = self.closing.take() {
            self.seal_segment(closing.segment);
        }
    }

    fn seal_segment(&mut self, mut segment: Segment) {
        debug_assert!(segment.pending.is_none());
        emit_fragment(&mut segment, &mut self.outputs, &mut self.stats);
        assert!(segment.opened && segment.video_frames > 0, "a sealed segment has video");
        let meta = segment.start.seal(SegmentContent {
            video_duration_90k: segment.video_duration_90k,
            bytes: segment.bytes,
            crc32c: segment.crc32c,
            video_frames: segment.video_frames,
        });
        self.outputs.push_back(Output::Seal { meta });
        self.stats.segments_sealed += 1;
    }

    /// The stream ended (disconnect, stall, reconnect, stop): seal everything, forget timelines.
    fn end_stream(&mut self) {
        self.finish_open_video(None);
        self.seal_closing();
        if let Some(open) = self.open.take() {
            self.seal_segment(open);
        }
        if self.video_timeline.finish() {
            self.stats.frames_dropped_outlier += 1;
        }
        if self.audio_timeline.finish() {
            self.stats.frames_dropped_outlier += 1;
        }
        self.video_timeline.reset();
        self.audio_timeline.reset();
        self.wall.last = None;
        self.need_key = true;
        self.params_pending = None;
    }

    fn handle_failure(&mut self, now: Now, failure: IngestFailure) {
        if matches!(self.phase, Phase::Stopped | Phase::Backoff { .. }) {
            return;
        }
        self.end_stream();
        self.stats.disconnects += 1;
        let backoff = match failure.kind {
            FailureKind::Auth | FailureKind::Unsupported => &mut self.auth_backoff,
            FailureKind::Unreachable | FailureKind::Protocol | FailureKind::Timeout => &mut self.backoff,
        };
        let retry_in_ms = backoff.next_delay_ms();
        let attempts = backoff.attempts();
        let last_error = format!("{}: {}", failure.kind.as_str(), failure.message);
        self.phase = Phase::Backoff { retry_at_mono_ms: now.mono_ms.saturating_add(retry_in_ms) };
        self.set_state(match failure.kind {
            FailureKind::Auth => CameraState::AuthFailed { last_error, retry_in_ms, attempts },
            _ => CameraState::Backoff { last_error, retry_in_ms, attempts },
        });
    }

    fn handle_storage_full(&mut self, reason: Option<String>) {
        self.storage_full = reason;
        if matches!(self.phase, Phase::Streaming { .. }) && self.got_frame {
            self.set_state(self.streaming_state());
        }
    }

    /// The state of a session that delivers frames.
    fn streaming_state(&self) -> CameraState {
        match &self.storage_full {
            Some(reason) => CameraState::Paused { last_error: reason.clone() },
            None => CameraState::Recording,
        }
    }

    fn handle_deadlines(&mut self, now: Now) {
        if self.closing.as_ref().is_some_and(|c| now.mono_ms >= c.deadline_mono_ms) {
            self.seal_closing();
        }
        match self.phase {
            Phase::Streaming { last_frame_mono_ms }
                if now.mono_ms >= last_frame_mono_ms.saturating_add(self.config.stall_timeout_ms) =>
            {
                let reason = format!("no frames for {} ms", now.mono_ms - last_frame_mono_ms);
                self.stats.stalls += 1;
                self.outputs.push_back(Output::Disconnect { reason: reason.clone() });
                self.handle_failure(now, IngestFailure { kind: FailureKind::Timeout, message: reason });
            }
            Phase::Backoff { retry_at_mono_ms } if now.mono_ms >= retry_at_mono_ms => {
                self.phase = Phase::Connecting;
                self.stats.reconnects += 1;
                self.outputs.push_back(Output::Connect);
                self.set_state(CameraState::Connecting);
            }
            _ => {}
        }
    }

    fn set_state(&mut self, state: CameraState) {
        if self.state != state {
            self.state = state.clone();
            self.outputs.push_back(Output::StateChanged(state));
        }
    }

    fn check_invariants(&self) {
        assert!(self.outputs.len() <= OUTPUTS_QUEUED_MAX, "output queue not drained by the shell");
        if let (Some(closing), Some(open)) = (&self.closing, &self.open) {
            assert!(closing.segment.start.seq < open.start.seq);
            assert!(!open.opened, "a segment writes only after its predecessor is sealed");
        }
        for segment in self.open.iter().chain(self.closing.iter().map(|c| &c.segment)) {
            assert!(segment.start.seq < self.seq_next);
            assert!(segment.fragment_video_90k <= segment.video_duration_90k);
            if let Some(pending) = &segment.pending {
                assert_eq!(
                    pending.media_90k - segment.start_media_90k,
                    segment.video_duration_90k as i64,
                    "video samples tile the segment's media time"
                );
            }
        }
        match self.phase {
            Phase::Backoff { .. } => {
                assert!(matches!(self.state, CameraState::Backoff { .. } | CameraState::AuthFailed { .. }))
            }
            Phase::Stopped => assert_eq!(self.state, CameraState::Disabled),
            Phase::Connecting => assert_eq!(self.state, CameraState::Connecting),
            Phase::Streaming { .. } => {}
        }
        if let CameraState::Paused { last_error } = &self.state {
            assert!(matches!(self.phase, Phase::Streaming { .. }), "paused only while streaming");
            assert_eq!(Some(last_error), self.storage_full.as_ref(), "paused exactly while storage is full");
        }
        if !matches!(self.phase, Phase::Streaming { .. }) {
            assert!(self.open.is_none() && self.closing.is_none(), "segments open only while streaming");
        }
    }
}

/// Emits a segment's buffered samples as one fragment (and `OpenSegment` + the init segment
/// first if this is its first output).
fn emit_fragment(segment: &mut Segment, outputs: &mut VecDeque<Output>, stats: &mut RecorderStats) {
    if segment.fragment_video.is_empty() && segment.fragment_audio.is_empty() {
        return;
    }
    if !segment.opened {
        segment.opened = true;
        outputs.push_back(Output::OpenSegment { start: segment.start.clone() });
        let init = segment.init.clone();
        write(segment, init, outputs, stats);
    }
    let audio_samples: Vec<Sample> = match &segment.params.audio {
        None => Vec::new(),
        Some(audio) => {
            let frame_ticks = audio.frame_length.max(1);
            let n = segment.fragment_audio.len();
            (0..n)
                .map(|i| {
                    let (start, data) = &segment.fragment_audio[i];
                    let duration_ticks = match segment.fragment_audio.get(i + 1) {
                        Some((next, _)) if next > start => u32::try_from(next - start).unwrap_or(frame_ticks),
                        _ => frame_ticks,
                    };
                    Sample { duration_ticks, is_sync: true, data: data.clone() }
                })
                .collect()
        }
    };
    let audio_base_ticks = match segment.fragment_audio.first() {
        Some((start, _)) => u64::try_from(*start).unwrap_or(0).max(segment.audio_end_ticks),
        None => segment.audio_end_ticks,
    };
    segment.audio_end_ticks =
        audio_base_ticks + audio_samples.iter().map(|s| u64::from(s.duration_ticks)).sum::<u64>();
    let video_base_90k = segment.video_duration_90k - segment.fragment_video_90k;
    let bytes = fmp4::fragment(
        segment.fragment_seq,
        TrackRun { base_decode_time_ticks: video_base_90k, samples: &segment.fragment_video },
        Some(TrackRun { base_decode_time_ticks: audio_base_ticks, samples: &audio_samples }),
    )
    .expect("fragments stay within the bounds of moof fields");
    segment.fragment_seq += 1;
    segment.fragment_video.clear();
    segment.fragment_video_90k = 0;
    segment.fragment_audio.clear();
    segment.fragment_bytes = 0;
    write(segment, bytes, outputs, stats);
}

fn write(segment: &mut Segment, bytes: Bytes, outputs: &mut VecDeque<Output>, stats: &mut RecorderStats) {
    segment.bytes += bytes.len() as u64;
    segment.crc32c = crc32c::crc32c_append(segment.crc32c, &bytes);
    stats.bytes_written += bytes.len() as u64;
    outputs.push_back(Output::Write { seq: segment.start.seq, bytes });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mp4_atom::{Any, Codec, Decode};

    use super::*;
    use crate::segment::VideoCodec;
    use crate::testutil;

    const WALL0_MS: i64 = 1_700_000_000_000;

    /// Drives a recorder and checks the output protocol on every drain: segment outputs in
    /// order, writes only between open and seal, seal metadata matching the bytes written.
    struct Harness {
        rec: Recorder,
        mono_ms: u64,
        wall_offset_ms: i64,
        files: BTreeMap<u64, Vec<u8>>,
        /// `OpenSegment` identities by seq.
        starts: BTreeMap<u64, SegmentStart>,
        sealed: Vec<SegmentMeta>,
        states: Vec<CameraState>,
        events: Vec<Output>,
    }

    impl Harness {
        fn new(config: RecorderConfig) -> Harness {
            let now = Now { mono_ms: 0, wall_ms: WALL0_MS };
            let rec = Recorder::new(CameraId::new("cam-1").unwrap(), 3, 7, config, 42, now);
            let mut h = Harness {
                rec,
                mono_ms: 0,
                wall_offset_ms: 0,
                files: BTreeMap::new(),
                starts: BTreeMap::new(),
                sealed: Vec::new(),
                states: Vec::new(),
                events: Vec::new(),
            };
            h.drain();
            h
        }

        fn now(&self) -> Now {
            Now { mono_ms: self.mono_ms, wall_ms: WALL0_MS + self.mono_ms as i64 + self.wall_offset_ms }
        }

        fn drain(&mut self) {
            while let Some(output) = self.rec.poll_output() {
                match output {
                    Output::OpenSegment { start } => {
                        let seq = start.seq;
                        assert!(!self.files.contains_key(&seq), "segment {seq} opened twice");
                        for &earlier in self.files.keys() {
                            assert!(earlier < seq);
                            assert!(
                                self.sealed.iter().any(|m| m.seq == earlier),
                                "{earlier} not sealed before {seq}"
                            );
                        }
                        self.files.insert(seq, Vec::new());
                        self.starts.insert(seq, start);
                    }
                    Output::Write { seq, bytes } => {
                        assert!(!self.sealed.iter().any(|m| m.seq == seq), "write after seal");
                        self.files.get_mut(&seq).expect("write before open").extend_from_slice(&bytes);
                    }
                    Output::Seal { meta } => {
                        let file = &self.files[&meta.seq];
                        assert_eq!(meta.bytes, file.len() as u64, "bytes == sum of writes");
                        assert_eq!(meta.crc32c, crc32c::crc32c(file), "crc32c over the emitted bytes");
                        assert!(meta.duration_ms > 0 && meta.video_frames > 0);
                        assert_eq!((meta.owner, meta.epoch, meta.camera.as_str()), (3, 7, "cam-1"));
                        assert_eq!(meta.start(), self.starts[&meta.seq], "seal agrees with OpenSegment");
                        if let Some(previous) = self.sealed.last() {
                            assert!(meta.seq > previous.seq);
                            assert!(
                                meta.start_wall_ms > previous.start_wall_ms,
                                "start times strictly increase"
                            );
                        }
                        self.sealed.push(meta);
                    }
                    Output::StateChanged(state) => self.states.push(state),
                    other => self.events.push(other),
                }
            }
        }

        fn handle(&mut self, input: Input) {
            let now = self.now();
            self.rec.handle(now, input);
            self.drain();
        }

        fn advance_to(&mut self, mono_ms: u64) {
            assert!(mono_ms >= self.mono_ms);
            self.mono_ms = mono_ms;
        }

        fn connect(&mut self, params: StreamParams) {
            self.handle(Input::Connected { params });
        }

        fn video(&mut self, pts: i64, is_key: bool) {
            self.handle(Input::Frame(video_frame(pts, is_key)));
        }

        fn audio(&mut self, pts: i64) {
            self.handle(Input::Frame(Frame {
                stream: StreamKind::Audio,
                pts,
                is_key: true,
                data: Bytes::from_static(b"aac"),
                new_params: None,
            }));
        }

        fn stop(&mut self) {
            let now = self.now();
            self.rec.stop(now);
            self.drain();
        }

        fn durations_ms(&self) -> Vec<u32> {
            self.sealed.iter().map(|m| m.duration_ms).collect()
        }
    }

    fn video_frame(pts: i64, is_key: bool) -> Frame {
        Frame {
            stream: StreamKind::Video,
            pts,
            is_key,
            data: Bytes::from_static(b"\0\0\0\x04fake"),
            new_params: None,
        }
    }

    fn video_only() -> StreamParams {
        StreamParams { video: testutil::fake_h264_params(), audio: None }
    }

    fn with_audio() -> StreamParams {
        StreamParams { video: testutil::fake_h264_params(), audio: Some(testutil::fake_aac_params()) }
    }

    /// 25 fps frames `from..to` (frame numbers), key every `gop` frames, received on time.
    fn feed(h: &mut Harness, frames: std::ops::Range<i64>, gop: i64) {
        for n in frames {
            h.advance_to(n as u64 * 40);
            h.video(n * 3600, n % gop == 0);
        }
    }

    /// Per track id: (tfdt, sample count, summed duration) of each traf.
    type TrafsByTrack = BTreeMap<u32, Vec<(u64, usize, u64)>>;

    /// The moov and the trafs of a segment file.
    fn parse_segment(file: &[u8]) -> (mp4_atom::Moov, TrafsByTrack) {
        let mut buf = file;
        let mut moov = None;
        let mut tracks: BTreeMap<u32, Vec<(u64, usize, u64)>> = BTreeMap::new();
        while !buf.is_empty() {
            match Any::decode(&mut buf).unwrap() {
                Any::Moov(m) => moov = Some(m),
                Any::Moof(moof) => {
                    for traf in moof.traf {
                        let duration: u64 =
                            traf.trun[0].samples.iter().map(|e| u64::from(e.duration.unwrap())).sum();
                        tracks.entry(traf.tfhd.track_id).or_default().push((
                            traf.tfdt.unwrap().base_media_decode_time,
                            traf.trun[0].samples.len(),
                            duration,
                        ));
                    }
                }
                _ => {}
            }
        }
        (moov.unwrap(), tracks)
    }

    #[test]
    fn starts_connecting_then_recording_on_first_frame() {
        let mut h = Harness::new(RecorderConfig::default());
        assert_eq!(h.events, vec![Output::Connect]);
        assert_eq!(h.states, vec![CameraState::Connecting]);
        assert_eq!(h.rec.poll_timeout(), None);
        h.connect(video_only());
        assert_eq!(h.rec.state(), &CameraState::Connecting);
        assert_eq!(h.rec.poll_timeout(), Some(10_000), "stall deadline from Connected");
        h.video(0, true);
        assert_eq!(h.rec.state(), &CameraState::Recording);
        assert_eq!(h.states, vec![CameraState::Connecting, CameraState::Recording]);
    }

    #[test]
    fn cuts_at_first_key_frame_at_or_after_target() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(video_only());
        feed(&mut h, 0..500, 35); // keys every 1.4 s; 20 s
                                  // Keys at 0, 1.4, ... the first at/after 6 s is 7.0 s, then 14.0 s.
        assert_eq!(h.durations_ms(), vec![7000, 7000]);
        assert_eq!(h.sealed.iter().map(|m| m.video_frames).collect::<Vec<_>>(), vec![175, 175]);
        assert_eq!(h.sealed[1].start_wall_ms - h.sealed[0].start_wall_ms, 7000);
        assert_eq!(h.sealed[0].start_wall_ms, WALL0_MS);
        h.stop();
        // The last segment: 14.0 s .. 19.96 s + one frame duration (the previous sample's).
        assert_eq!(h.durations_ms(), vec![7000, 7000, 6000]);
        assert_eq!(h.rec.stats().segments_sealed, 3);
        assert_eq!(h.rec.stats().frames_video, 500);
        // Fragments of about 1 s: tfdt of successive video fragments in segment 1.
        let (_, tracks) = parse_segment(&h.files[&1]);
        let tfdts: Vec<u64> = tracks[&1].iter().map(|t| t.0).collect();
        assert_eq!(tfdts, vec![0, 90_000, 180_000, 270_000, 360_000, 450_000, 540_000]);
        assert_eq!(tracks[&1].iter().map(|t| t.2).sum::<u64>(), 630_000);
    }

    #[test]
    fn drops_frames_before_the_first_key_frame() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(video_only());
        for n in 0..10 {
            h.advance_to(n * 40);
            h.video(n as i64 * 3600, false);
        }
        feed(&mut h, 10..200, 25); // keys at frame 25, 50, ...
        h.stop();
        assert_eq!(h.rec.stats().frames_dropped_waiting_key, 25);
        assert_eq!(h.sealed[0].start_wall_ms, WALL0_MS + 1000, "first segment starts at the first key frame");
        assert_eq!(h.durations_ms(), vec![6000, 1000]);
    }

    #[test]
    fn long_gop_keeps_the_segment_open_until_the_next_key_frame() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(video_only());
        feed(&mut h, 0..500, 500); // one key frame, then 20 s without one
        assert!(h.sealed.is_empty(), "no key frame, no cut");
        assert!(h.files[&1].len() > 1000, "fragments are written while the segment stays open");
        feed(&mut h, 500..510, 500);
        assert_eq!(h.durations_ms(), vec![20_000]);
        assert_eq!(h.sealed[0].video_frames, 500);
    }

    #[test]
    fn parameter_change_on_a_key_frame_cuts_at_once() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(video_only());
        feed(&mut h, 0..50, 25);
        // Same parameters again: no cut.
        h.advance_to(50 * 40);
        let mut frame = video_frame(50 * 3600, true);
        frame.new_params = Some(testutil::fake_h264_params());
        h.handle(Input::Frame(frame));
        assert!(h.sealed.is_empty());
        feed(&mut h, 51..60, 25);
        // A real change at 2.4 s on a key frame.
        let mut changed = testutil::fake_h264_params();
        changed.width = 640;
        changed.height = 480;
        h.advance_to(60 * 40);
        let mut frame = video_frame(60 * 3600, true);
        frame.new_params = Some(changed);
        h.handle(Input::Frame(frame));
        assert_eq!(h.durations_ms(), vec![2400]);
        feed(&mut h, 61..100, 25);
        h.stop();
        let (moov, _) = parse_segment(&h.files[&2]);
        let Codec::Avc1(avc1) = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] else { panic!() };
        assert_eq!((avc1.visual.width, avc1.visual.height), (640, 480), "new init segment");
        let (moov, _) = parse_segment(&h.files[&1]);
        let Codec::Avc1(avc1) = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] else { panic!() };
        assert_eq!(avc1.visual.width, 320);
    }

    #[test]
    fn boundary_audio_stays_in_the_old_segment() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(with_audio());
        // Video 25 fps, key every second; audio 48 kHz in 1024-sample frames arriving 200 ms
        // late relative to the video.
        let mut audio_n = 0i64;
        let mut audio_fed = 0;
        for n in 0..400i64 {
            h.advance_to(n as u64 * 40);
            h.video(n * 3600, n % 25 == 0);
            while (audio_n * 1024 * 1000 / 48_000) + 200 <= n * 40 {
                h.audio(audio_n * 1024);
                audio_n += 1;
                audio_fed += 1;
            }
        }
        h.stop();
        assert_eq!(h.durations_ms(), vec![6000, 6000, 4000]);
        let mut audio_written = 0;
        for (i, meta) in h.sealed.iter().enumerate() {
            assert!(meta.has_audio);
            let (_, tracks) = parse_segment(&h.files[&meta.seq]);
            let audio = &tracks[&2];
            let samples: usize = audio.iter().map(|t| t.1).sum();
            audio_written += samples;
            let first_tfdt = audio[0].0;
            let end_ticks = audio.last().map(|t| t.0 + t.2).unwrap();
            assert!(first_tfdt < 1024, "segment {i}: audio starts at its video start ({first_tfdt})");
            if i < 2 {
                // Audio runs up to the cut (6 s = 288000 ticks), within one AAC frame.
                assert!(
                    (288_000..288_000 + 1024).contains(&end_ticks),
                    "segment {i} audio ends at {end_ticks}"
                );
            }
        }
        assert_eq!(audio_written, audio_fed, "no audio lost at the boundaries");
        assert_eq!(h.rec.stats().frames_dropped_audio_outside_segment, 0);
    }

    #[test]
    fn boundary_wait_for_audio_ends_after_500_ms() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(with_audio());
        for n in 0..150i64 {
            h.advance_to(n as u64 * 40);
            h.video(n * 3600, n % 25 == 0);
            if n < 100 {
                h.audio(n * 1920); // 40 ms of 48 kHz per video frame
            }
        }
        h.advance_to(150 * 40);
        h.video(150 * 3600, true); // the cut; audio went silent at 4 s
        assert!(h.sealed.is_empty(), "old segment waits for boundary audio");
        assert_eq!(h.rec.poll_timeout(), Some(150 * 40 + AUDIO_BOUNDARY_WAIT_MS));
        h.advance_to(150 * 40 + AUDIO_BOUNDARY_WAIT_MS);
        h.handle(Input::Tick);
        assert_eq!(h.durations_ms(), vec![6000]);
    }

    #[test]
    fn audio_before_the_first_segment_is_dropped() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(with_audio());
        h.audio(0);
        h.video(0, false);
        h.audio(1024);
        h.advance_to(40);
        h.video(3600, true);
        h.audio(2048); // 42.7 ms, after the segment start at 40 ms
        feed(&mut h, 2..10, 100);
        h.stop();
        assert_eq!(h.rec.stats().frames_dropped_audio_outside_segment, 2);
        let (_, tracks) = parse_segment(&h.files[&1]);
        assert_eq!(tracks[&2][0].1, 1);
        assert_eq!(tracks[&2][0].0, 2048 - 1920, "timed from the segment's video start");
    }

    #[test]
    fn one_frame_outliers_do_not_stretch_segments() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(video_only());
        for n in 0..400i64 {
            h.advance_to(n as u64 * 40);
            let pts = match n {
                60 => n * 3600 + 37_600 * 90_000, // far future
                130 => n * 3600 - 9_800 * 90_000, // far past (negative)
                _ => n * 3600,
            };
            h.video(pts, n % 25 == 0);
        }
        h.stop();
        assert_eq!(h.durations_ms(), vec![6000, 6000, 4000]);
        assert_eq!(h.rec.stats().frames_retimed_outlier, 2);
        assert_eq!(h.rec.stats().frames_dropped_outlier, 0);
        assert_eq!(h.sealed.iter().map(|m| m.video_frames).sum::<u32>(), 400, "outliers keep their data");
        assert_eq!(h.sealed[1].start_wall_ms, WALL0_MS + 6000);
    }

    #[test]
    fn permanent_camera_clock_step_continues_the_timeline() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(video_only());
        for n in 0..400i64 {
            h.advance_to(n as u64 * 40);
            let step = if n >= 80 { 3600 * 90_000 } else { 0 }; // SNTP correction: +1 h
            h.video(n * 3600 + step, n % 25 == 0);
        }
        h.stop();
        assert_eq!(h.rec.stats().timeline_steps, 1);
        assert_eq!(h.durations_ms(), vec![6000, 6000, 4000]);
        for (i, meta) in h.sealed.iter().enumerate() {
            let received_ms = WALL0_MS + i as i64 * 6000;
            assert!(
                (meta.start_wall_ms - received_ms).abs() <= 1000,
                "segment {i} at {}",
                meta.start_wall_ms
            );
        }
        assert_eq!(h.rec.stats().clock_reanchors, 0);
    }

    #[test]
    fn host_clock_step_reanchors_the_wall_clock() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(video_only());
        feed(&mut h, 0..200, 25);
        h.wall_offset_ms = 3_600_000; // host clock stepped forward by 1 h at 8 s
        feed(&mut h, 200..400, 25);
        h.stop();
        assert_eq!(h.rec.stats().clock_reanchors, 1);
        assert_eq!(h.sealed[0].start_wall_ms, WALL0_MS);
        let received_ms = WALL0_MS + 12_000 + 3_600_000;
        assert!((h.sealed[2].start_wall_ms - received_ms).abs() <= 1000, "{}", h.sealed[2].start_wall_ms);
        assert_eq!(h.durations_ms(), vec![6000, 6000, 4000], "media durations unaffected");
    }

    #[test]
    fn slew_toward_the_host_clock_is_bounded() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(video_only());
        // The camera's clock runs 1000 ppm slow: 40 ms of pts every 40.04 ms of host time.
        for n in 0..1500i64 {
            h.mono_ms = (n as u64 * 4004) / 100;
            h.video(n * 3600, n % 25 == 0);
        }
        h.stop();
        assert_eq!(h.sealed.len(), 10);
        for pair in h.sealed.windows(2) {
            let step_ms = pair[1].start_wall_ms - pair[0].start_wall_ms;
            // 6 s of media, slewed by at most 500 ppm (3 ms) toward the host clock.
            assert!((6000..=6004).contains(&step_ms), "{step_ms}");
        }
        let total_ms = h.sealed[9].start_wall_ms - h.sealed[0].start_wall_ms;
        assert!(total_ms >= 54_000 + 25, "slews toward the host clock: {total_ms}");
    }

    #[test]
    fn backward_pts_is_dropped_and_waits_for_a_key_frame() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(video_only());
        feed(&mut h, 0..30, 25);
        h.video(29 * 3600, false); // repeated pts
        feed(&mut h, 30..100, 25);
        h.stop();
        assert_eq!(h.rec.stats().frames_dropped_backward, 1);
        assert_eq!(h.rec.stats().frames_dropped_waiting_key, 20, "frames 30..50 until the key at 50");
        // The gap is absorbed by the last sample before it: the timeline stays true.
        assert_eq!(h.durations_ms(), vec![4000]);
        assert_eq!(h.sealed[0].video_frames, 80);
    }

    #[test]
    fn oversize_frames_are_dropped_and_recording_resumes_at_a_key_frame() {
        let mut h = Harness::new(RecorderConfig { frame_bytes_max: 100, ..RecorderConfig::default() });
        h.connect(video_only());
        feed(&mut h, 0..10, 25);
        h.advance_to(10 * 40);
        let mut big = video_frame(10 * 3600, false);
        big.data = Bytes::from(vec![0u8; 101]);
        h.handle(Input::Frame(big));
        feed(&mut h, 11..60, 25);
        h.stop();
        assert_eq!(h.rec.stats().frames_dropped_oversize, 1);
        assert_eq!(h.rec.stats().frames_dropped_waiting_key, 14);
        assert_eq!(h.sealed[0].video_frames, 45);
        assert_eq!(h.durations_ms(), vec![2400]);
    }

    #[test]
    fn failures_back_off_and_reconnect_on_time() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(video_only());
        feed(&mut h, 0..50, 25);
        h.handle(Input::Disconnected {
            failure: IngestFailure { kind: FailureKind::Unreachable, message: "connection reset".into() },
        });
        assert_eq!(h.durations_ms(), vec![2000], "disconnect seals");
        let CameraState::Backoff { retry_in_ms, attempts: 1, last_error } = h.rec.state().clone() else {
            panic!("{:?}", h.rec.state())
        };
        assert_eq!(last_error, "unreachable: connection reset");
        assert!(retry_in_ms <= 1000);
        let retry_at_ms = h.mono_ms + retry_in_ms;
        assert_eq!(h.rec.poll_timeout(), Some(retry_at_ms));
        h.events.clear();
        if retry_in_ms > 0 {
            h.advance_to(retry_at_ms - 1);
            h.handle(Input::Tick);
            assert!(h.events.is_empty(), "no Connect before the backoff expires");
        }
        h.advance_to(retry_at_ms);
        h.handle(Input::Tick);
        assert_eq!(h.events, vec![Output::Connect]);
        assert_eq!(h.rec.state(), &CameraState::Connecting);
        // A second failure before any frame: the window doubles.
        h.handle(Input::Disconnected {
            failure: IngestFailure { kind: FailureKind::Timeout, message: "no answer".into() },
        });
        let CameraState::Backoff { retry_in_ms, attempts: 2, .. } = h.rec.state().clone() else { panic!() };
        assert!(retry_in_ms <= 2000);
        h.advance_to(h.mono_ms + retry_in_ms);
        h.handle(Input::Tick);
        // Success resets the backoff.
        h.connect(video_only());
        h.video(0, true);
        assert_eq!(h.rec.state(), &CameraState::Recording);
        h.handle(Input::Disconnected {
            failure: IngestFailure { kind: FailureKind::Protocol, message: "bad rtp".into() },
        });
        let CameraState::Backoff { attempts: 1, .. } = h.rec.state() else { panic!() };
        assert_eq!(h.rec.stats().reconnects, 2);
        assert_eq!(h.rec.stats().disconnects, 3);
    }

    #[test]
    fn auth_failures_use_the_slow_backoff() {
        let mut h = Harness::new(RecorderConfig::default());
        let mut retries = Vec::new();
        for attempt in 1..=3u32 {
            h.handle(Input::Disconnected {
                failure: IngestFailure { kind: FailureKind::Auth, message: "401 Unauthorized".into() },
            });
            let CameraState::AuthFailed { retry_in_ms, attempts, .. } = h.rec.state().clone() else {
                panic!()
            };
            assert_eq!(attempts, attempt);
            assert!(retry_in_ms <= (10_000u64 << (attempt - 1)).min(30_000));
            retries.push(retry_in_ms);
            h.advance_to(h.mono_ms + retry_in_ms);
            h.handle(Input::Tick);
            assert_eq!(h.events.last(), Some(&Output::Connect));
        }
        assert!(retries.iter().sum::<u64>() > 3000, "not hammering: {retries:?}");
    }

    #[test]
    fn stall_disconnects_seals_and_backs_off() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(video_only());
        feed(&mut h, 0..50, 25);
        let last_frame_ms = 49 * 40;
        assert_eq!(h.rec.poll_timeout(), Some(last_frame_ms + 10_000));
        h.advance_to(last_frame_ms + 9_999);
        h.handle(Input::Tick);
        assert!(h.sealed.is_empty());
        h.advance_to(last_frame_ms + 10_000);
        h.handle(Input::Tick);
        assert_eq!(h.events.last(), Some(&Output::Disconnect { reason: "no frames for 10000 ms".into() }));
        assert_eq!(h.durations_ms(), vec![2000]);
        let CameraState::Backoff { last_error, .. } = h.rec.state() else { panic!() };
        assert!(last_error.starts_with("timeout: "));
        assert_eq!(h.rec.stats().stalls, 1);
    }

    #[test]
    fn stop_seals_and_never_connects_again() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(with_audio());
        for n in 0..30i64 {
            h.advance_to(n as u64 * 40);
            h.video(n * 3600, n % 25 == 0);
            h.audio(n * 1920);
        }
        h.events.clear();
        h.stop();
        assert_eq!(h.events, vec![Output::Disconnect { reason: "stopped".into() }]);
        assert_eq!(h.durations_ms(), vec![1200]);
        assert_eq!(h.rec.state(), &CameraState::Disabled);
        assert_eq!(h.rec.poll_timeout(), None);
        h.advance_to(100_000);
        h.handle(Input::Tick);
        h.handle(Input::Disconnected {
            failure: IngestFailure { kind: FailureKind::Timeout, message: "x".into() },
        });
        assert_eq!(h.events.len(), 1, "nothing after stop");
        let (_, tracks) = parse_segment(&h.files[&1]);
        assert_eq!(tracks[&2].iter().map(|t| t.1).sum::<usize>(), 30);
    }

    #[test]
    fn storage_full_finishes_the_open_segment_and_resumes_at_the_next_key_frame() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(video_only());
        feed(&mut h, 0..100, 25); // keys every 1 s; segment 1 open since 0 s
        h.handle(Input::StorageFull(Some("local buffer full".into())));
        let paused = CameraState::Paused { last_error: "local buffer full".into() };
        assert_eq!(h.rec.state(), &paused);
        // The open segment runs to its cut at 6 s; nothing opens after it.
        feed(&mut h, 100..200, 25);
        assert_eq!(h.durations_ms(), vec![6000]);
        assert_eq!(h.rec.stats().frames_dropped_storage_full, 50);
        assert_eq!(h.rec.poll_timeout(), Some(199 * 40 + 10_000), "the session stays up (stall timer)");
        h.handle(Input::StorageFull(None));
        assert_eq!(h.rec.state(), &CameraState::Recording);
        // Resumes at the key frame at 8 s without a reconnect; cut at 14 s; stop at 16 s.
        feed(&mut h, 200..400, 25);
        h.stop();
        assert_eq!(h.durations_ms(), vec![6000, 6000, 2000]);
        assert_eq!(h.sealed[1].start_wall_ms - h.sealed[0].start_wall_ms, 8000);
        assert_eq!(h.rec.stats().reconnects, 0);
        assert_eq!(
            h.states,
            vec![
                CameraState::Connecting,
                CameraState::Recording,
                paused,
                CameraState::Recording,
                CameraState::Disabled
            ]
        );
    }

    #[test]
    fn storage_full_while_disconnected_pauses_on_the_first_frame() {
        let mut h = Harness::new(RecorderConfig::default());
        h.handle(Input::StorageFull(Some("full".into())));
        assert_eq!(h.rec.state(), &CameraState::Connecting);
        h.connect(video_only());
        feed(&mut h, 0..100, 25);
        assert_eq!(h.rec.state(), &CameraState::Paused { last_error: "full".into() });
        h.stop();
        assert_eq!(h.sealed, vec![], "no segment opened while full");
        assert_eq!(h.rec.stats().frames_dropped_storage_full, 100);
    }

    #[test]
    fn reconnect_while_recording_starts_a_new_segment() {
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(video_only());
        feed(&mut h, 0..50, 25);
        h.connect(video_only()); // retina restarted the session; pts restart at 0
        assert_eq!(h.durations_ms(), vec![2000]);
        h.advance_to(2000);
        h.video(0, true);
        h.advance_to(2040);
        h.video(3600, false);
        h.stop();
        assert_eq!(h.sealed.len(), 2);
        assert!(h.sealed[1].start_wall_ms >= WALL0_MS + 2000);
    }

    #[test]
    fn bad_parameters_disconnect_with_a_clear_error() {
        let mut h = Harness::new(RecorderConfig::default());
        let mut params = video_only();
        params.video.extra_data = Bytes::from_static(b"junk");
        h.connect(params);
        assert!(matches!(h.events.last(), Some(Output::Disconnect { .. })));
        let CameraState::Backoff { last_error, .. } = h.rec.state() else { panic!("{:?}", h.rec.state()) };
        assert!(last_error.starts_with("unsupported: unusable stream parameters"), "{last_error}");
    }

    /// A multi-segment recording from real encoded frames passes ffprobe/ffmpeg silently, with
    /// ffprobe's duration matching the metadata within one frame.
    fn ffmpeg_accepts_recording(codec: VideoCodec) {
        let dir = tempfile::tempdir().unwrap();
        let video = testutil::encode_video(dir.path(), codec, 14);
        let audio = testutil::encode_audio(dir.path(), 14);
        let mut h = Harness::new(RecorderConfig::default());
        h.connect(StreamParams { video: video.params.clone(), audio: Some(audio.params.clone()) });
        // Interleave by media time: video every 40 ms, audio every 21.33 ms.
        let mut audio_n = 0usize;
        for (n, frame) in video.frames.iter().enumerate() {
            let video_ms = n as u64 * 40;
            while audio_n < audio.frames.len() && (audio_n as u64 * 1024 * 1000 / 48_000) <= video_ms {
                h.advance_to(audio_n as u64 * 1024 * 1000 / 48_000);
                h.handle(Input::Frame(Frame {
                    stream: StreamKind::Audio,
                    pts: audio_n as i64 * 1024,
                    is_key: true,
                    data: audio.frames[audio_n].clone(),
                    new_params: None,
                }));
                audio_n += 1;
            }
            h.advance_to(video_ms);
            h.handle(Input::Frame(Frame {
                stream: StreamKind::Video,
                pts: n as i64 * video.frame_duration_90k,
                is_key: frame.is_key,
                data: frame.data.clone(),
                new_params: None,
            }));
        }
        h.stop();
        assert_eq!(h.durations_ms(), vec![6000, 6000, 2000]);
        let mut frames_total = 0;
        for meta in &h.sealed {
            let path = dir.path().join(format!("{}.mp4", meta.seq));
            std::fs::write(&path, &h.files[&meta.seq]).unwrap();
            let probed_ms = testutil::validate_with_ffmpeg(&path);
            assert!(
                (probed_ms - f64::from(meta.duration_ms)).abs() <= 40.0,
                "segment {}: ffprobe {probed_ms} ms, meta {} ms",
                meta.seq,
                meta.duration_ms
            );
            let frames = testutil::ffprobe_video_frames(&path);
            assert_eq!(frames, u64::from(meta.video_frames));
            frames_total += frames;
        }
        assert_eq!(frames_total, video.frames.len() as u64);
    }

    #[test]
    fn ffmpeg_accepts_h264_recording() {
        ffmpeg_accepts_recording(VideoCodec::H264);
    }

    #[test]
    fn ffmpeg_accepts_h265_recording() {
        ffmpeg_accepts_recording(VideoCodec::H265);
    }
}
