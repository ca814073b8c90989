//! RTSP ingest shell: drives a retina session and translates what it yields into recorder-core
//! inputs ([`IngestEvent`]). It decides nothing about recording: which frames go where, when to
//! reconnect and what a failure means for the camera are the recorder core's business.

use std::num::NonZeroU32;
use std::sync::Arc;

use bytes::Bytes;
use camrec_cluster_core::state::Transport;
use camrec_node_core::params::{AudioParams, StreamParams, VideoParams};
use camrec_node_core::recorder::{FailureKind, Frame, IngestFailure, StreamKind};
use camrec_node_core::segment::VideoCodec;
use futures::StreamExt;
use retina::client::{self, PlayOptions, SessionGroup, SessionOptions, SetupOptions};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a camera's session reports to its actor.
#[derive(Debug)]
pub enum IngestEvent {
    Connected(StreamParams),
    /// Frames in arrival order. A video frame closes a batch (the audio frames received since
    /// the previous one ride along), so a camera costs one actor message per video frame, not
    /// one per frame; audio waits at most one video frame interval.
    Frames(Vec<Frame>),
    Failed(IngestFailure),
}

/// Most frames one event carries (audio-only streaming, or a camera whose video stalls).
const FRAMES_PER_EVENT_MAX: usize = 16;

/// How to reach a camera.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: url::Url,
    pub username: Option<String>,
    pub password: Option<String>,
    pub transport: Transport,
    /// Bound on DESCRIBE + SETUP + PLAY.
    pub connect_timeout: std::time::Duration,
}

/// Delivers one event to the camera actor; false when the actor is gone.
pub type Deliver = Box<dyn Fn(IngestEvent, OwnedSemaphorePermit) -> bool + Send + Sync>;

/// Sends events to the camera actor with a bounded number in flight: each carries a permit that
/// is released when the actor has handled it, so a slow actor slows the session (TCP
/// backpressure) instead of growing its mailbox.
pub struct EventSink {
    pub permits: Arc<Semaphore>,
    pub deliver: Deliver,
}

impl EventSink {
    async fn send(&self, ev: IngestEvent) -> bool {
        let Ok(permit) = self.permits.clone().acquire_owned().await else { return false };
        (self.deliver)(ev, permit)
    }
}

/// Classifies a retina error by what the camera's owner should do about it.
pub fn classify(e: &retina::Error) -> FailureKind {
    match e.status_code() {
        Some(401 | 403) => return FailureKind::Auth,
        Some(404 | 454 | 461) => return FailureKind::Protocol,
        Some(s) if s >= 500 => return FailureKind::Unreachable,
        _ => {}
    }
    let msg = e.to_string();
    if msg.contains("Unable to connect")
        || msg.contains("onnection refused")
        || msg.contains("Connection reset")
    {
        FailureKind::Unreachable
    } else if msg.contains("imeout") || msg.contains("timed out") {
        FailureKind::Timeout
    } else {
        FailureKind::Protocol
    }
}

fn failure(kind: FailureKind, message: impl Into<String>) -> IngestFailure {
    IngestFailure { kind, message: message.into() }
}

fn from_retina(e: &retina::Error) -> IngestFailure {
    // retina's errors are multi-line (connection context); the first line names the problem.
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("").trim().to_string();
    failure(classify(e), first)
}

fn video_params(p: &retina::codec::VideoParameters) -> Option<VideoParams> {
    let codec = match p.rfc6381_codec().get(..4) {
        Some("avc1") => VideoCodec::H264,
        Some("hvc1" | "hev1") => VideoCodec::H265,
        _ => return None,
    };
    let (width, height) = p.pixel_dimensions();
    Some(VideoParams {
        codec,
        width: u16::try_from(width).unwrap_or(u16::MAX),
        height: u16::try_from(height).unwrap_or(u16::MAX),
        extra_data: Bytes::copy_from_slice(p.extra_data()),
        pixel_aspect_ratio: p.pixel_aspect_ratio(),
    })
}

fn audio_params(p: &retina::codec::AudioParameters) -> Option<AudioParams> {
    if !p.rfc6381_codec().is_some_and(|c| c.starts_with("mp4a.40")) {
        return None; // only AAC fits our MP4 audio track
    }
    Some(AudioParams {
        sample_rate_hz: p.clock_rate(),
        channels: p.channels().get(),
        audio_specific_config: Bytes::copy_from_slice(p.extra_data()),
        frame_length: p.frame_length().map_or(1024, NonZeroU32::get),
    })
}

/// Runs one RTSP session until it fails or the sink closes. Always ends by sending `Failed`
/// (unless the actor is gone).
pub async fn run_session(target: Target, group: Arc<SessionGroup>, sink: EventSink) {
    let result = session(&target, group, &sink).await;
    if let Err(f) = result {
        sink.send(IngestEvent::Failed(f)).await;
    }
}

/// Opens the session: DESCRIBE, SETUP of the video (and AAC audio) stream, PLAY. Returns the
/// demuxed stream and the chosen stream indices.
async fn open(
    target: &Target,
    group: Arc<SessionGroup>,
) -> Result<(client::Demuxed, usize, Option<usize>), IngestFailure> {
    let creds = match (&target.username, &target.password) {
        (Some(u), Some(p)) => Some(client::Credentials { username: u.clone(), password: p.clone() }),
        (Some(u), None) => Some(client::Credentials { username: u.clone(), password: String::new() }),
        _ => None,
    };
    let options = SessionOptions::default()
        .creds(creds)
        .user_agent("camrec".to_string())
        .session_group(group)
        .teardown(client::TeardownPolicy::Auto);
    let mut described =
        client::Session::describe(target.url.clone(), options).await.map_err(|e| from_retina(&e))?;

    let streams = described.streams();
    let video_i = streams
        .iter()
        .position(|s| s.media() == "video" && matches!(s.encoding_name(), "h264" | "h265"))
        .ok_or_else(|| {
            let found: Vec<String> =
                streams.iter().map(|s| format!("{}/{}", s.media(), s.encoding_name())).collect();
            failure(
                FailureKind::Unsupported,
                format!("no H.264/H.265 video stream (found: {})", found.join(", ")),
            )
        })?;
    let audio_i = streams.iter().position(|s| s.media() == "audio" && s.encoding_name() == "mpeg4-generic");
    let transport = match target.transport {
        Transport::Tcp => client::Transport::Tcp(Default::default()),
        Transport::Udp => client::Transport::Udp(Default::default()),
    };
    for i in std::iter::once(video_i).chain(audio_i) {
        described
            .setup(i, SetupOptions::default().transport(transport.clone()).frame_format(FrameFormat::MP4))
            .await
            .map_err(|e| from_retina(&e))?;
    }
    let playing = described.play(PlayOptions::default()).await.map_err(|e| from_retina(&e))?;
    let demuxed = playing.demuxed().map_err(|e| from_retina(&e))?;
    Ok((demuxed, video_i, audio_i))
}

async fn session(target: &Target, group: Arc<SessionGroup>, sink: &EventSink) -> Result<(), IngestFailure> {
    // A camera that accepts TCP but never answers must not sit in `connecting` forever.
    let (mut demuxed, video_i, audio_i) =
        tokio::time::timeout(target.connect_timeout, open(target, group)).await.map_err(|_| {
            failure(
                FailureKind::Timeout,
                format!(
                    "camera did not complete DESCRIBE/SETUP/PLAY within {} s",
                    target.connect_timeout.as_secs()
                ),
            )
        })??;

    let mut audio = audio_i.and_then(|i| match demuxed.streams()[i].parameters() {
        Some(ParametersRef::Audio(a)) => audio_params(a),
        _ => None,
    });
    let mut video = match demuxed.streams()[video_i].parameters() {
        Some(ParametersRef::Video(v)) => video_params(v),
        _ => None,
    };
    let mut announced = false;
    if let Some(v) = &video {
        announced =
            sink.send(IngestEvent::Connected(StreamParams { video: v.clone(), audio: audio.clone() })).await;
    }

    let mut batch: Vec<Frame> = Vec::with_capacity(8);
    while let Some(item) = demuxed.next().await {
        let item = item.map_err(|e| from_retina(&e))?;
        let event = match item {
            CodecItem::VideoFrame(f) if f.stream_id() == video_i => {
                let new_params = if f.has_new_parameters() {
                    match demuxed.streams()[video_i].parameters() {
                        Some(ParametersRef::Video(v)) => video_params(v),
                        _ => None,
                    }
                } else {
                    None
                };
                if let Some(p) = &new_params {
                    video = Some(p.clone());
                }
                if !announced {
                    // Parameters arrived in-band (no sprop-parameter-sets in the SDP).
                    let Some(v) = &video else { continue };
                    if audio.is_none() {
                        audio = audio_i.and_then(|i| match demuxed.streams()[i].parameters() {
                            Some(ParametersRef::Audio(a)) => audio_params(a),
                            _ => None,
                        });
                    }
                    if !sink
                        .send(IngestEvent::Connected(StreamParams { video: v.clone(), audio: audio.clone() }))
                        .await
                    {
                        return Ok(());
                    }
                    announced = true;
                }
                let is_key = f.is_random_access_point();
                let pts = f.timestamp().elapsed();
                Frame {
                    stream: StreamKind::Video,
                    pts,
                    is_key,
                    data: Bytes::from(f.into_data()),
                    new_params: if announced { new_params } else { None },
                }
            }
            CodecItem::AudioFrame(f) if Some(f.stream_id()) == audio_i && announced && audio.is_some() => {
                Frame {
                    stream: StreamKind::Audio,
                    pts: f.timestamp().elapsed(),
                    is_key: true,
                    data: Bytes::copy_from_slice(f.data()),
                    new_params: None,
                }
            }
            _ => continue,
        };
        let closes_batch = event.stream == StreamKind::Video;
        batch.push(event);
        if (closes_batch || batch.len() >= FRAMES_PER_EVENT_MAX)
            && !sink.send(IngestEvent::Frames(std::mem::take(&mut batch))).await
        {
            return Ok(());
        }
    }
    Err(failure(FailureKind::Unreachable, "camera closed the stream"))
}
