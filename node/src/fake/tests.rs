//! Tests of the fake camera fleet against third-party clients (ffprobe, retina), malformed
//! input, and a clock-driven check that looped timestamps are continuous.
//!
//! ffprobe/ffmpeg must be installed: a missing binary fails the test (it is never skipped).

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt as _;
use retina::client::{self, PlayOptions, SessionOptions, SetupOptions};
use retina::codec::CodecItem;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::*;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

async fn fleet(count: usize, clip: &str, creds: Option<(&str, &str)>) -> FakeFleet {
    let args = FakeCamerasArgs {
        count,
        listen: "127.0.0.1:0".parse().expect("addr"),
        clip: clip.to_owned(),
        username: creds.map(|c| c.0.to_owned()),
        password: creds.map(|c| c.1.to_owned()),
        ..FakeCamerasArgs::default()
    };
    FakeFleet::start(args).await.expect("fleet starts")
}

struct Probe {
    success: bool,
    stdout: String,
    stderr: String,
}

async fn ffprobe(url: &str, transport: &str) -> Probe {
    let child = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-rtsp_transport", transport, "-show_streams", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffprobe must be installed (Debian package ffmpeg)");
    let out = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .expect("ffprobe finished in time")
        .expect("ffprobe ran");
    Probe {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn check_ffprobe(clip: &str, video_codec: &str, transport: &str) {
    let fleet = fleet(2, clip, None).await;
    let p = ffprobe(&fleet.url(1), transport).await;
    assert!(p.success, "ffprobe failed: {}", p.stderr);
    assert_eq!(p.stderr, "", "ffprobe complained");
    assert!(p.stdout.contains(&format!("codec_name={video_codec}")), "{}", p.stdout);
    assert!(p.stdout.contains("codec_name=aac"), "{}", p.stdout);
    assert!(p.stdout.contains("width=640") && p.stdout.contains("height=360"), "{}", p.stdout);
    fleet.shutdown().await;
}

#[tokio::test]
async fn fake_ffprobe_h264_tcp() {
    check_ffprobe("h264", "h264", "tcp").await;
}

#[tokio::test]
async fn fake_ffprobe_h264_udp() {
    check_ffprobe("h264", "h264", "udp").await;
}

#[tokio::test]
async fn fake_ffprobe_h265_tcp() {
    check_ffprobe("h265", "hevc", "tcp").await;
}

#[tokio::test]
async fn fake_ffprobe_h265_udp() {
    check_ffprobe("h265", "hevc", "udp").await;
}

#[tokio::test]
async fn fake_ffprobe_digest_auth() {
    let fleet = fleet(1, "h264", Some(("alice", "s3cret"))).await;
    let p = ffprobe(&fleet.url(0), "tcp").await;
    assert!(!p.success);
    assert!(p.stderr.contains("401"), "{}", p.stderr);

    let wrong = fleet.url(0).replace("rtsp://", "rtsp://alice:wrong@");
    let p = ffprobe(&wrong, "tcp").await;
    assert!(!p.success);
    assert!(p.stderr.contains("401"), "{}", p.stderr);

    let good = fleet.url(0).replace("rtsp://", "rtsp://alice:s3cret@");
    let p = ffprobe(&good, "tcp").await;
    assert!(p.success, "{}", p.stderr);
    assert!(p.stdout.contains("codec_name=h264"), "{}", p.stdout);
    assert!(fleet.stats().auth_failures >= 2);
    fleet.shutdown().await;
}

#[derive(Debug, Default)]
struct Recorded {
    video_frames: usize,
    key_frames: usize,
    audio_frames: usize,
    /// Video pts deltas (90 kHz), in arrival order.
    video_deltas: Vec<i64>,
    audio_deltas: Vec<i64>,
}

/// Records `secs` of media with retina, checking pts are monotonic per stream.
async fn retina_record(
    url: &str,
    udp: bool,
    creds: Option<(&str, &str)>,
    secs: f64,
) -> Result<Recorded, String> {
    let creds = creds.map(|(u, p)| client::Credentials { username: u.to_owned(), password: p.to_owned() });
    let url = url::Url::parse(url).map_err(|e| e.to_string())?;
    let mut session = client::Session::describe(url, SessionOptions::default().creds(creds))
        .await
        .map_err(|e| e.to_string())?;
    let n_streams = session.streams().len();
    for i in 0..n_streams {
        let transport = if udp {
            client::Transport::Udp(client::UdpTransportOptions::default())
        } else {
            client::Transport::Tcp(client::TcpTransportOptions::default())
        };
        session.setup(i, SetupOptions::default().transport(transport)).await.map_err(|e| e.to_string())?;
    }
    let mut demuxed = session
        .play(PlayOptions::default())
        .await
        .map_err(|e| e.to_string())?
        .demuxed()
        .map_err(|e| e.to_string())?;
    let mut rec = Recorded::default();
    let (mut last_video, mut last_audio) = (None::<i64>, None::<i64>);
    let deadline = tokio::time::Instant::now() + CLIENT_TIMEOUT;
    loop {
        let item = tokio::time::timeout_at(deadline, demuxed.next())
            .await
            .map_err(|_| "timed out".to_owned())?
            .ok_or("stream ended")?
            .map_err(|e| e.to_string())?;
        match item {
            CodecItem::VideoFrame(f) => {
                let pts = f.timestamp().elapsed();
                if let Some(last) = last_video {
                    assert!(pts > last, "video pts not increasing: {last} then {pts}");
                    rec.video_deltas.push(pts - last);
                }
                last_video = Some(pts);
                rec.video_frames += 1;
                rec.key_frames += usize::from(f.is_random_access_point());
                if f.timestamp().elapsed_secs() >= secs {
                    break;
                }
            }
            CodecItem::AudioFrame(f) => {
                let pts = f.timestamp().elapsed();
                if let Some(last) = last_audio {
                    assert!(pts > last, "audio pts not increasing: {last} then {pts}");
                    rec.audio_deltas.push(pts - last);
                }
                last_audio = Some(pts);
                rec.audio_frames += 1;
            }
            _ => {}
        }
    }
    Ok(rec)
}

fn check_recorded(rec: &Recorded) {
    // ≥ 3 s at 25 fps with 1 s GOPs; 48 kHz AAC is 46.875 frames/s.
    assert!(rec.video_frames >= 75, "{rec:?}");
    assert!(rec.key_frames >= 3, "{rec:?}");
    assert!(rec.audio_frames >= 120, "{rec:?}");
    assert!(rec.video_deltas.iter().all(|&d| d == 3600), "video frame spacing: {:?}", rec.video_deltas);
    assert!(rec.audio_deltas.iter().all(|&d| d == 1024), "audio frame spacing: {:?}", rec.audio_deltas);
}

#[tokio::test]
async fn fake_retina_tcp() {
    let fleet = fleet(2, "h264", None).await;
    let rec = retina_record(&fleet.url(1), false, None, 3.0).await.expect("retina records");
    check_recorded(&rec);
    fleet.shutdown().await;
}

#[tokio::test]
async fn fake_retina_udp() {
    let fleet = fleet(2, "h264", None).await;
    let rec = retina_record(&fleet.url(0), true, None, 3.0).await.expect("retina records");
    check_recorded(&rec);
    fleet.shutdown().await;
}

#[tokio::test]
async fn fake_retina_h265_digest() {
    let fleet = fleet(1, "h265", Some(("bob", "pw"))).await;
    let err = retina_record(&fleet.url(0), false, None, 1.0).await.expect_err("no credentials");
    assert!(err.contains("401"), "{err}");
    let err = retina_record(&fleet.url(0), false, Some(("bob", "bad")), 1.0).await.expect_err("bad password");
    assert!(err.contains("401"), "{err}");
    let rec = retina_record(&fleet.url(0), false, Some(("bob", "pw")), 3.0).await.expect("retina records");
    check_recorded(&rec);
    fleet.shutdown().await;
}

#[tokio::test]
async fn fake_concurrent_clients_same_camera() {
    let fleet = fleet(1, "h264", None).await;
    let url = fleet.url(0);
    let (a, b) = tokio::join!(retina_record(&url, false, None, 1.5), retina_record(&url, true, None, 1.5));
    assert!(a.expect("tcp client").key_frames >= 2);
    assert!(b.expect("udp client").key_frames >= 2);
    fleet.shutdown().await;
}

/// Sends raw bytes and returns everything the server answers until it closes or goes quiet.
async fn raw_exchange(addr: std::net::SocketAddr, input: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(input).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn fake_rejects_garbage_with_400() {
    let fleet = fleet(2, "h264", None).await;
    let addr = fleet.local_addr();
    let url = fleet.url(0);
    let cases: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        b"\x00\x01\x02\x03\r\n\r\n".to_vec(),
        b"OPTIONS rtsp://x/cam/0 RTSP/9.9\r\nCSeq: 1\r\n\r\n".to_vec(),
        b"OPTIONS rtsp://x/cam/0 RTSP/1.0\r\nCSeq 1\r\n\r\n".to_vec(),
        b"DESCRIBE rtsp://x/cam/0 RTSP/1.0\r\nCSeq: 1\r\nContent-Length: nope\r\n\r\n".to_vec(),
        format!("OPTIONS {url} RTSP/1.0\r\n\r\n").into_bytes(), // no CSeq
        format!("SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: ;;;===\r\n\r\n").into_bytes(),
        [b"OPTIONS rtsp://x/cam/0 RTSP/1.0\r\nX: ".as_slice(), &vec![b'a'; 70 * 1024]].concat(), // oversized
    ];
    for case in &cases {
        let resp = raw_exchange(addr, case).await;
        assert!(
            resp.starts_with("RTSP/1.0 400"),
            "input {:?} → {resp:?}",
            String::from_utf8_lossy(&case[..40.min(case.len())])
        );
    }
    // Unknown paths are 404, unknown tracks too.
    for path in ["/nope", "/cam/2", "/cam/0/trackID=7"] {
        let req = format!("DESCRIBE rtsp://{addr}{path} RTSP/1.0\r\nCSeq: 3\r\n\r\n");
        let resp = raw_exchange(addr, req.as_bytes()).await;
        assert!(resp.starts_with("RTSP/1.0 404"), "{path} → {resp:?}");
        assert!(resp.contains("CSeq: 3"), "{resp:?}");
    }
    // Still serving after all that.
    let resp = raw_exchange(addr, format!("OPTIONS {url} RTSP/1.0\r\nCSeq: 9\r\n\r\n").as_bytes()).await;
    assert!(resp.starts_with("RTSP/1.0 200"), "{resp:?}");
    assert!(resp.contains("GET_PARAMETER"), "{resp:?}");
    assert!(fleet.stats().bad_requests >= cases.len() as u64);
    fleet.shutdown().await;
}

#[tokio::test]
async fn fake_session_timeout_closes_connection() {
    let args = FakeCamerasArgs {
        listen: "127.0.0.1:0".parse().expect("addr"),
        session_timeout_secs: 1,
        ..FakeCamerasArgs::default()
    };
    let fleet = FakeFleet::start(args).await.expect("fleet");
    let mut s = TcpStream::connect(fleet.local_addr()).await.expect("connect");
    let req = format!(
        "SETUP {}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n",
        fleet.url(0)
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.expect("read");
    let resp = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(resp.starts_with("RTSP/1.0 200") && resp.contains(";timeout=1"), "{resp}");
    assert!(resp.contains("interleaved=0-1"), "{resp}");
    let t0 = tokio::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "expected close, got {n:?}");
    assert!(t0.elapsed() >= Duration::from_millis(800));
    assert_eq!(fleet.stats().session_timeouts, 1);
    fleet.shutdown().await;
}

#[test]
fn fake_rejects_unknown_quirk_and_half_credentials() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let base = FakeCamerasArgs { listen: "127.0.0.1:0".parse().expect("addr"), ..FakeCamerasArgs::default() };
    let err = rt
        .block_on(FakeFleet::start(FakeCamerasArgs { quirk: Some("bogus".into()), ..base.clone() }))
        .expect_err("unknown quirk");
    assert!(err.to_string().contains("supported quirks: short-timeout, keepalive-rejected"), "{err}");
    let err = rt
        .block_on(FakeFleet::start(FakeCamerasArgs { username: Some("u".into()), ..base.clone() }))
        .expect_err("username without password");
    assert!(err.to_string().contains("--password"), "{err}");
    assert!(rt
        .block_on(FakeFleet::start(FakeCamerasArgs { clip: "/nonexistent.mp4".into(), ..base }))
        .is_err());
}

/// Drives one connection's sans-IO core with a synthetic clock across two loop boundaries and
/// checks that every RTP timestamp step is exactly one frame, including at the boundaries.
#[test]
fn fake_loop_timestamps_continuous() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _guard = rt.enter();
    let clip = Arc::new(load_clip("h264").expect("clip"));
    let loop_90k = clip.loop_90k;
    let shared = Arc::new(Shared {
        clip,
        camera_count: 1,
        auth: None,
        session_timeout: Duration::from_secs(60),
        quirk: None,
        stats: Stats::default(),
        wall_anchor: (tokio::time::Instant::now(), Duration::from_secs(1_700_000_000)),
    });
    let t0 = tokio::time::Instant::now();
    let peer: std::net::SocketAddr = "127.0.0.1:5555".parse().expect("addr");
    let rng = rand::SeedableRng::seed_from_u64(7);
    let mut conn = Connection::new(shared, peer, peer.ip(), t0, rng);
    let url = "rtsp://127.0.0.1:8554/cam/0";
    for (cseq, req) in [
        format!("SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"),
        format!("SETUP {url}/trackID=1 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;unicast;interleaved=2-3\r\n\r\n"),
        format!("PLAY {url}/ RTSP/1.0\r\nCSeq: 3\r\n\r\n"),
    ]
    .into_iter()
    .enumerate()
    {
        conn.inbuf_for_test().extend_from_slice(req.as_bytes());
        conn.handle_input(t0);
        let out = conn.take_output_for_test();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("RTSP/1.0 200"), "request {cseq}: {text}");
    }
    // Two and a half loops, in 20 ms steps.
    let end_90k = loop_90k * 5 / 2;
    let mut video_ts = Vec::new();
    let mut audio_ts = Vec::new();
    let mut t_90k = 0;
    while t_90k <= end_90k {
        conn.poll_media(t0 + Duration::from_nanos(t_90k * 1_000_000_000 / 90_000));
        let out = conn.take_output_for_test();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let (msg, used) = rtsp_types::Message::<&[u8]>::parse(rest).expect("interleaved frame");
            rest = &rest[used..];
            let rtsp_types::Message::Data(d) = msg else { panic!("unexpected message") };
            if d.channel_id() % 2 == 1 {
                continue; // RTCP
            }
            let pkt = rtp_types::RtpPacket::parse(d.as_slice()).expect("rtp");
            let ts = pkt.timestamp();
            let list = if d.channel_id() == 0 { &mut video_ts } else { &mut audio_ts };
            if list.last() != Some(&ts) {
                list.push(ts);
            }
        }
        t_90k += 1800;
    }
    // 2.5 loops of 256 frames and 480 AAC frames (± the boundary frame).
    assert!(video_ts.len() >= 256 * 5 / 2, "{}", video_ts.len());
    assert!(audio_ts.len() >= 480 * 5 / 2, "{}", audio_ts.len());
    assert!(video_ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 3600), "video ts not continuous");
    assert!(audio_ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 1024), "audio ts not continuous");
}

/// End to end with a third-party client: a 1.28 s clip loaded with `--clip FILE` loops twice
/// during the recording, and retina sees every frame exactly one frame after the previous one.
#[tokio::test]
async fn fake_retina_short_clip_loops_continuously() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("short.mp4");
    // 1.28 s = 32 video frames = 60 AAC frames at 48 kHz: a seamless loop in both clocks.
    let status = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "1.28"])
        .args(["-c:v", "libx264", "-bf", "0", "-g", "16", "-keyint_min", "16", "-sc_threshold", "0"])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "1", "-b:a", "32k"])
        .arg(&path)
        .status()
        .await
        .expect("ffmpeg must be installed (Debian package ffmpeg)");
    assert!(status.success());
    let args = FakeCamerasArgs {
        count: 1,
        listen: "127.0.0.1:0".parse().expect("addr"),
        clip: path.to_string_lossy().into_owned(),
        ..FakeCamerasArgs::default()
    };
    let fleet = FakeFleet::start(args).await.expect("fleet");
    let rec = retina_record(&fleet.url(0), false, None, 3.0).await.expect("retina records");
    check_recorded(&rec); // every step exactly 3600 (video) / 1024 (audio) ticks
    assert!(rec.video_frames > 2 * 32, "crossed two loop boundaries: {rec:?}");
    fleet.shutdown().await;
}

fn core_conn() -> (Connection, tokio::time::Instant) {
    let clip = Arc::new(load_clip("h264").expect("clip"));
    let now = tokio::time::Instant::now();
    let shared = Arc::new(Shared {
        clip,
        camera_count: 1,
        auth: None,
        session_timeout: Duration::from_secs(60),
        quirk: None,
        stats: Stats::default(),
        wall_anchor: (now, Duration::from_secs(1_700_000_000)),
    });
    let peer: std::net::SocketAddr = "127.0.0.1:5555".parse().expect("addr");
    (Connection::new(shared, peer, peer.ip(), now, rand::SeedableRng::seed_from_u64(1)), now)
}

fn exchange(conn: &mut Connection, now: tokio::time::Instant, req: &str) -> String {
    conn.inbuf_for_test().extend_from_slice(req.as_bytes());
    conn.handle_input(now);
    String::from_utf8_lossy(&conn.take_output_for_test()).into_owned()
}

/// PAUSE stops the flow, PLAY resumes with RTP-Info continuing where it stopped; keepalives,
/// wrong session ids and TEARDOWN behave.
#[test]
fn fake_pause_resume_keepalive_teardown() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _guard = rt.enter();
    let (mut conn, t0) = core_conn();
    let url = "rtsp://127.0.0.1:8554/cam/0";
    let r = exchange(
        &mut conn,
        t0,
        &format!("SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"),
    );
    assert!(r.starts_with("RTSP/1.0 200"), "{r}");
    let session = r
        .lines()
        .find_map(|l| l.strip_prefix("Session: "))
        .and_then(|v| v.split(';').next())
        .expect("session header")
        .to_owned();
    let play = format!("PLAY {url}/ RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n");
    let r = exchange(&mut conn, t0, &play);
    assert!(r.starts_with("RTSP/1.0 200") && r.contains("RTP-Info: url=") && r.contains("npt=0.000-"), "{r}");
    let rtptime = |r: &str| -> u32 {
        let v = r.split("rtptime=").nth(1).expect("rtptime");
        v.trim_end_matches(|c: char| !c.is_ascii_digit())
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|d| d.parse().ok())
            .expect("number")
    };
    let start_ts = rtptime(&r);
    let t1 = t0 + Duration::from_millis(1000);
    conn.poll_media(t1);
    assert!(!conn.take_output_for_test().is_empty());
    let r =
        exchange(&mut conn, t1, &format!("PAUSE {url}/ RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\n\r\n"));
    assert!(r.starts_with("RTSP/1.0 200"), "{r}");
    conn.poll_media(t1 + Duration::from_secs(5));
    assert!(conn.take_output_for_test().is_empty(), "paused session sent media");
    let r = exchange(&mut conn, t1 + Duration::from_secs(5), &play.replace("CSeq: 2", "CSeq: 4"));
    assert!(r.starts_with("RTSP/1.0 200"), "{r}");
    // Frames 0..=25 (0 s .. 1.0 s) were sent; the resume point (Range, rtptime) lies after
    // them, at or before frame 26 (1.04 s).
    let resumed_90k = rtptime(&r).wrapping_sub(start_ts);
    assert!((25 * 3600 + 1..=26 * 3600).contains(&resumed_90k), "{r}");
    for m in ["GET_PARAMETER", "SET_PARAMETER", "OPTIONS"] {
        let r =
            exchange(&mut conn, t1, &format!("{m} {url}/ RTSP/1.0\r\nCSeq: 5\r\nSession: {session}\r\n\r\n"));
        assert!(r.starts_with("RTSP/1.0 200") && r.contains(";timeout=60"), "{m}: {r}");
    }
    let r = exchange(&mut conn, t1, &format!("PLAY {url}/ RTSP/1.0\r\nCSeq: 6\r\nSession: BOGUS\r\n\r\n"));
    assert!(r.starts_with("RTSP/1.0 454"), "{r}");
    let r = exchange(
        &mut conn,
        t1,
        &format!("TEARDOWN {url}/ RTSP/1.0\r\nCSeq: 7\r\nSession: {session}\r\n\r\n"),
    );
    assert!(r.starts_with("RTSP/1.0 200"), "{r}");
    conn.poll_media(t1 + Duration::from_secs(10));
    assert!(conn.take_output_for_test().is_empty(), "torn-down session sent media");
    let r = exchange(&mut conn, t1, &play.replace("CSeq: 2", "CSeq: 8"));
    assert!(r.starts_with("RTSP/1.0 454"), "{r}");
}

// ---- Quirks (shared/camera-quirks.md) ----

/// A sans-IO connection into a fleet of two cameras imitating `quirk`, serving `clip`.
fn quirk_conn(quirk: Quirk, clip: &str) -> (Connection, tokio::time::Instant) {
    let clip = Arc::new(load_clip(clip).expect("clip"));
    let now = tokio::time::Instant::now();
    let shared = Arc::new(Shared {
        clip,
        camera_count: 2,
        auth: None,
        session_timeout: quirk.session_timeout().unwrap_or(Duration::from_secs(60)),
        quirk: Some(quirk),
        stats: Stats::default(),
        wall_anchor: (now, Duration::from_secs(1_700_000_000)),
    });
    let peer: std::net::SocketAddr = "127.0.0.1:5555".parse().expect("addr");
    (Connection::new(shared, peer, peer.ip(), now, rand::SeedableRng::seed_from_u64(3)), now)
}

/// Sends one request through the sans-IO core and parses the single response.
fn quirk_request(
    conn: &mut Connection,
    now: tokio::time::Instant,
    req: &str,
) -> rtsp_types::Response<Vec<u8>> {
    conn.inbuf_for_test().extend_from_slice(req.as_bytes());
    conn.handle_input(now);
    let out = conn.take_output_for_test();
    let (msg, used) = rtsp_types::Message::<Vec<u8>>::parse(&out[..]).expect("one response");
    assert_eq!(used, out.len(), "exactly one message");
    match msg {
        rtsp_types::Message::Response(r) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn header(resp: &rtsp_types::Response<Vec<u8>>, name: &rtsp_types::HeaderName) -> String {
    resp.header(name).map(|v| v.as_str().to_owned()).unwrap_or_default()
}

/// SETUP of the video track (and audio with `audio`) over TCP, then PLAY, on camera `cam`.
/// Returns the SETUP responses and the PLAY response.
fn quirk_setup_play(
    conn: &mut Connection,
    t0: tokio::time::Instant,
    cam: usize,
    audio: bool,
) -> (Vec<rtsp_types::Response<Vec<u8>>>, rtsp_types::Response<Vec<u8>>) {
    let url = format!("rtsp://127.0.0.1:8554/cam/{cam}");
    let mut setups = Vec::new();
    let tracks: &[usize] = if audio { &[0, 1] } else { &[0] };
    for (i, &track) in tracks.iter().enumerate() {
        let (a, b) = (track * 2, track * 2 + 1);
        let r = quirk_request(
            conn,
            t0,
            &format!(
                "SETUP {url}/trackID={track} RTSP/1.0\r\nCSeq: {}\r\nTransport: RTP/AVP/TCP;unicast;interleaved={a}-{b}\r\n\r\n",
                i + 1
            ),
        );
        assert_eq!(r.status(), rtsp_types::StatusCode::Ok, "{r:?}");
        setups.push(r);
    }
    let r = quirk_request(conn, t0, &format!("PLAY {url}/ RTSP/1.0\r\nCSeq: 9\r\n\r\n"));
    assert_eq!(r.status(), rtsp_types::StatusCode::Ok, "{r:?}");
    (setups, r)
}

/// Drives the clock from `t0` for `secs` in 20 ms steps; returns the RTP packets of channel 0.
fn quirk_video_packets(conn: &mut Connection, t0: tokio::time::Instant, secs: u64) -> Vec<Vec<u8>> {
    let mut pkts = Vec::new();
    for step in 0..=secs * 50 {
        conn.poll_media(t0 + Duration::from_millis(step * 20));
        let out = conn.take_output_for_test();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let (msg, used) = rtsp_types::Message::<&[u8]>::parse(rest).expect("interleaved frame");
            rest = &rest[used..];
            let rtsp_types::Message::Data(d) = msg else { panic!("unexpected message") };
            if d.channel_id() == 0 {
                pkts.push(d.as_slice().to_vec());
            }
        }
    }
    pkts
}

#[test]
fn fake_quirk_names_shared_by_cli_and_enum() {
    use clap::{Args as _, Command};
    assert_eq!(QUIRKS_SUPPORTED.len(), Quirk::ALL.len());
    for q in Quirk::ALL {
        assert_eq!(Quirk::from_name(q.name()), Some(q));
    }
    assert_eq!(Quirk::from_name("long-gop"), None);
    let mut cmd = FakeCamerasArgs::augment_args(Command::new("fake-cameras"));
    let help = cmd.render_long_help().to_string();
    for name in QUIRKS_SUPPORTED {
        assert!(help.contains(name), "--quirk help lacks {name}: {help}");
    }
    assert!(cmd.clone().try_get_matches_from(["x", "--quirk", "ssrc-change"]).is_ok());
    assert!(cmd.try_get_matches_from(["x", "--quirk", "bogus"]).is_err());
}

/// `short-timeout`: SETUP announces timeout=8 and the camera drops the session ~8 s after the
/// last request even though the client keeps sending interleaved (RTCP-like) data.
#[tokio::test]
async fn fake_quirk_short_timeout() {
    let args = FakeCamerasArgs {
        listen: "127.0.0.1:0".parse().expect("addr"),
        quirk: Some("short-timeout".into()),
        ..FakeCamerasArgs::default()
    };
    let fleet = FakeFleet::start(args).await.expect("fleet");
    let mut s = TcpStream::connect(fleet.local_addr()).await.expect("connect");
    let req = format!(
        "SETUP {}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n",
        fleet.url(0)
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let t0 = tokio::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.expect("read");
    let resp = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(resp.starts_with("RTSP/1.0 200") && resp.contains(";timeout=8\r\n"), "{resp}");
    let closed_after = loop {
        // An interleaved "receiver report" on channel 1 every 500 ms; it must not count.
        let _ = s.write_all(b"$\x01\x00\x04\x80\xc9\x00\x00").await;
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break t0.elapsed(),
            Ok(Ok(_)) => panic!("unexpected output before PLAY"),
            Err(_) => assert!(t0.elapsed() < Duration::from_secs(12), "session never dropped"),
        }
    };
    assert!(
        (Duration::from_millis(7500)..Duration::from_millis(9500)).contains(&closed_after),
        "{closed_after:?}"
    );
    assert_eq!(fleet.stats().session_timeouts, 1);
    fleet.shutdown().await;
}

/// `keepalive-rejected`: timeout=15, SET_PARAMETER advertised but answered 400 with the previous
/// request's CSeq; GET_PARAMETER and OPTIONS work.
#[test]
fn fake_quirk_keepalive_rejected() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _guard = rt.enter();
    let (mut conn, t0) = quirk_conn(Quirk::KeepaliveRejected, "h264");
    let url = "rtsp://127.0.0.1:8554/cam/0";
    let r = quirk_request(&mut conn, t0, &format!("OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n"));
    let public = header(&r, &rtsp_types::headers::PUBLIC);
    assert!(public.contains("SET_PARAMETER") && public.contains("GET_PARAMETER"), "{public}");
    let (setups, _) = quirk_setup_play(&mut conn, t0, 0, false);
    assert!(header(&setups[0], &rtsp_types::headers::SESSION).ends_with(";timeout=15"), "{setups:?}");
    // The PLAY above had CSeq 9.
    let r = quirk_request(&mut conn, t0, &format!("SET_PARAMETER {url} RTSP/1.0\r\nCSeq: 10\r\n\r\n"));
    assert_eq!(r.status(), rtsp_types::StatusCode::BadRequest);
    assert_eq!(header(&r, &rtsp_types::headers::CSEQ), "9");
    let r = quirk_request(&mut conn, t0, &format!("GET_PARAMETER {url} RTSP/1.0\r\nCSeq: 11\r\n\r\n"));
    assert_eq!(
        (r.status(), header(&r, &rtsp_types::headers::CSEQ)),
        (rtsp_types::StatusCode::Ok, "11".into())
    );
    let r = quirk_request(&mut conn, t0, &format!("SET_PARAMETER {url} RTSP/1.0\r\nCSeq: 12\r\n\r\n"));
    assert_eq!(
        (r.status(), header(&r, &rtsp_types::headers::CSEQ)),
        (rtsp_types::StatusCode::BadRequest, "11".into())
    );
    let r = quirk_request(&mut conn, t0, &format!("OPTIONS {url} RTSP/1.0\r\nCSeq: 13\r\n\r\n"));
    assert_eq!(
        (r.status(), header(&r, &rtsp_types::headers::CSEQ)),
        (rtsp_types::StatusCode::Ok, "13".into())
    );
}

/// `bogus-rtp-info`: RTP-Info says seq=0 (camera 0) / seq=1 (camera 1) and rtptime=0 with a
/// trailing `;`, while the packets carry their real (random) values; ffprobe still copes.
#[tokio::test]
async fn fake_quirk_bogus_rtp_info() {
    for cam in 0..2 {
        let (mut conn, t0) = quirk_conn(Quirk::BogusRtpInfo, "h264");
        let (_, play) = quirk_setup_play(&mut conn, t0, cam, true);
        let info = header(&play, &rtsp_types::headers::RTP_INFO);
        let entries: Vec<_> = info.split(',').collect();
        assert_eq!(entries.len(), 2, "{info}");
        for e in entries {
            assert!(e.ends_with(&format!(";seq={cam};rtptime=0;")), "{info}");
        }
        let pkts = quirk_video_packets(&mut conn, t0, 1);
        let first = rtp_types::RtpPacket::parse(&pkts[0]).expect("rtp");
        assert_ne!((first.sequence_number(), first.timestamp()), (cam as u16, 0), "packets are real");
    }
    let args = FakeCamerasArgs {
        count: 2,
        listen: "127.0.0.1:0".parse().expect("addr"),
        quirk: Some("bogus-rtp-info".into()),
        ..FakeCamerasArgs::default()
    };
    let fleet = FakeFleet::start(args).await.expect("fleet");
    let p = ffprobe(&fleet.url(1), "tcp").await;
    assert!(p.success && p.stdout.contains("codec_name=h264"), "{}{}", p.stdout, p.stderr);
    fleet.shutdown().await;
}

/// `no-sprop`: the SDP carries no parameter sets; SPS and PPS come in-band before the first
/// IDR, which ffprobe uses.
#[tokio::test]
async fn fake_quirk_no_sprop() {
    for clip in ["h264", "h265"] {
        let (mut conn, t0) = quirk_conn(Quirk::NoSprop, clip);
        let r =
            quirk_request(&mut conn, t0, "DESCRIBE rtsp://127.0.0.1:8554/cam/0 RTSP/1.0\r\nCSeq: 1\r\n\r\n");
        let sdp = sdp_types::Session::parse(r.body()).expect("valid sdp");
        let fmtp = sdp.medias[0].get_first_attribute_value("fmtp").ok().flatten().expect("fmtp").to_owned();
        assert!(!fmtp.contains("sprop"), "{clip}: {fmtp}");
        if clip == "h264" {
            assert!(fmtp.contains("packetization-mode=1"), "{fmtp}");
            quirk_setup_play(&mut conn, t0, 0, false);
            let types: Vec<u8> = quirk_video_packets(&mut conn, t0, 1)
                .iter()
                .map(|p| rtp_types::RtpPacket::parse(p).expect("rtp").payload()[0] & 0x1f)
                .collect();
            // Single NAL units (SPS 7, PPS 8) or FU-A (28) of an IDR (checked via position).
            let sps = types.iter().position(|&t| t == 7).expect("in-band SPS");
            let pps = types.iter().position(|&t| t == 8).expect("in-band PPS");
            assert!(sps == 0 && pps == 1, "parameter sets lead the stream: {types:?}");
        }
    }
    let args = FakeCamerasArgs {
        count: 1,
        listen: "127.0.0.1:0".parse().expect("addr"),
        quirk: Some("no-sprop".into()),
        ..FakeCamerasArgs::default()
    };
    let fleet = FakeFleet::start(args).await.expect("fleet");
    let p = ffprobe(&fleet.url(0), "tcp").await;
    assert!(p.success, "{}", p.stderr);
    assert!(p.stdout.contains("codec_name=h264") && p.stdout.contains("width=640"), "{}", p.stdout);
    fleet.shutdown().await;
}

/// `ssrc-change`: no packet carries the SSRC that SETUP announced, and video switches to a new
/// SSRC at every key frame (starting with the in-band SPS) with seq and timestamps continuous.
#[test]
fn fake_quirk_ssrc_change() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _guard = rt.enter();
    let (mut conn, t0) = quirk_conn(Quirk::SsrcChange, "h264");
    let (setups, _) = quirk_setup_play(&mut conn, t0, 0, false);
    let transports =
        setups[0].typed_header::<rtsp_types::headers::Transports>().expect("parses").expect("present");
    let Some(rtsp_types::headers::Transport::Rtp(t)) = transports.iter().next() else {
        panic!("rtp transport")
    };
    let announced = t.params.ssrc[0];
    let pkts = quirk_video_packets(&mut conn, t0, 4);
    let parsed: Vec<_> = pkts.iter().map(|p| rtp_types::RtpPacket::parse(p).expect("rtp")).collect();
    assert!(parsed.iter().all(|p| p.ssrc() != announced), "a packet carried the announced SSRC");
    let mut changes = 0;
    for w in parsed.windows(2) {
        assert_eq!(w[1].sequence_number(), w[0].sequence_number().wrapping_add(1), "seq continuous");
        let dts = w[1].timestamp().wrapping_sub(w[0].timestamp());
        assert!(dts == 0 || dts == 3600, "timestamps continuous: {dts}");
        if w[1].ssrc() != w[0].ssrc() {
            changes += 1;
            assert_eq!(w[1].payload()[0] & 0x1f, 7, "SSRC changes only at a key frame (SPS first)");
            assert_eq!(dts, 3600);
        }
    }
    assert!(changes >= 3, "1 s GOPs over 4 s: {changes} SSRC changes");
}

/// `timestamp-outliers`: frame 62 of every 125 is stamped 9,800 s in the past or 37,600 s in
/// the future (alternately); all other frames keep exact 25 fps timing.
#[test]
fn fake_quirk_timestamp_outliers() {
    use super::session::{OUTLIER_FUTURE_90K, OUTLIER_PAST_90K, OUTLIER_PERIOD_FRAMES};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _guard = rt.enter();
    let (mut conn, t0) = quirk_conn(Quirk::TimestampOutliers, "h264");
    quirk_setup_play(&mut conn, t0, 0, true);
    let mut frames: Vec<(u16, u32)> = Vec::new(); // (first seq, ts) per access unit
    for p in quirk_video_packets(&mut conn, t0, 12) {
        let p = rtp_types::RtpPacket::parse(&p).expect("rtp");
        if frames.last().map(|f| f.1) != Some(p.timestamp()) {
            frames.push((p.sequence_number(), p.timestamp()));
        }
    }
    assert!(frames.len() >= 300, "{}", frames.len());
    let base = frames[0].1;
    let mut outliers = Vec::new();
    for (i, &(_, ts)) in frames.iter().enumerate() {
        let expected = base.wrapping_add(i as u32 * 3600);
        if ts != expected {
            outliers.push((i as u64, ts.wrapping_sub(expected)));
        }
    }
    let half = OUTLIER_PERIOD_FRAMES / 2;
    assert_eq!(
        outliers,
        [
            (half, (OUTLIER_PAST_90K as u32).wrapping_neg()),
            (OUTLIER_PERIOD_FRAMES + half, OUTLIER_FUTURE_90K as u32),
        ]
    );
}

/// A digest `Authorization` value (no qop) for `algo` (`MD5` or `SHA-256`).
fn digest_authorization(algo: &str, password: &str, nonce: &str, method: &str, uri: &str) -> String {
    let h = if algo == "MD5" { auth::md5_hex } else { auth::sha256_hex };
    let ha1 = h(&format!("alice:{}:{password}", auth::REALM));
    let ha2 = h(&format!("{method}:{uri}"));
    let response = h(&format!("{ha1}:{nonce}:{ha2}"));
    format!(
        "Digest username=\"alice\", realm=\"{}\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm={algo}, response=\"{response}\"",
        auth::REALM
    )
}

/// `digest-variants`: two `WWW-Authenticate` headers (SHA-256 with a quoted algorithm, then
/// MD5, no qop), both algorithms accepted, and a `stale=TRUE` fresh nonce mid-session.
#[test]
fn fake_quirk_digest_variants() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _guard = rt.enter();
    let clip = Arc::new(load_clip("h264").expect("clip"));
    let t0 = tokio::time::Instant::now();
    let shared = Arc::new(Shared {
        clip,
        camera_count: 1,
        auth: Some(auth::Authenticator::new("alice".into(), "s3cret".into(), "n0nce".into())),
        session_timeout: Duration::from_secs(60),
        quirk: Some(Quirk::DigestVariants),
        stats: Stats::default(),
        wall_anchor: (t0, Duration::from_secs(1_700_000_000)),
    });
    let peer: std::net::SocketAddr = "127.0.0.1:5555".parse().expect("addr");
    let mut conn =
        Connection::new(Arc::clone(&shared), peer, peer.ip(), t0, rand::SeedableRng::seed_from_u64(5));
    let url = "rtsp://127.0.0.1:8554/cam/0";
    let challenges = |raw: &str| -> Vec<String> {
        raw.lines().filter_map(|l| l.strip_prefix("WWW-Authenticate: ")).map(str::to_owned).collect()
    };
    let nonce_of =
        |c: &str| c.split("nonce=\"").nth(1).and_then(|v| v.split('"').next()).expect("nonce").to_owned();

    let r = exchange(&mut conn, t0, &format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n"));
    assert!(r.starts_with("RTSP/1.0 401"), "{r}");
    let c = challenges(&r);
    assert_eq!(c.len(), 2, "two separate headers: {r}");
    assert!(c[0].contains("algorithm=\"SHA-256\"") && c[1].contains("algorithm=MD5"), "{c:?}");
    assert!(c.iter().all(|c| !c.contains("qop") && !c.contains("stale")), "{c:?}");
    let nonce = nonce_of(&c[0]);
    assert_eq!(nonce, nonce_of(&c[1]));

    let authz = |algo: &str, pw: &str, nonce: &str, method: &str, uri: &str| {
        format!("Authorization: {}\r\n", digest_authorization(algo, pw, nonce, method, uri))
    };
    let r = exchange(
        &mut conn,
        t0,
        &format!(
            "DESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\n{}\r\n",
            authz("SHA-256", "s3cret", &nonce, "DESCRIBE", url)
        ),
    );
    assert!(r.starts_with("RTSP/1.0 200"), "SHA-256 accepted: {r}");
    let track = format!("{url}/trackID=0");
    let r = exchange(
        &mut conn,
        t0,
        &format!(
            "SETUP {track} RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n{}\r\n",
            authz("MD5", "s3cret", &nonce, "SETUP", &track)
        ),
    );
    assert!(r.starts_with("RTSP/1.0 200"), "MD5 accepted: {r}");
    let r = exchange(
        &mut conn,
        t0,
        &format!("PLAY {url} RTSP/1.0\r\nCSeq: 4\r\n{}\r\n", authz("SHA-256", "s3cret", &nonce, "PLAY", url)),
    );
    assert!(r.starts_with("RTSP/1.0 200"), "{r}");
    let _ = conn.take_output_for_test();

    // Mid-session: a valid keepalive gets 401 stale=TRUE with a fresh nonce.
    let keepalive = |cseq: u32, nonce: &str, pw: &str| {
        format!(
            "GET_PARAMETER {url} RTSP/1.0\r\nCSeq: {cseq}\r\n{}\r\n",
            authz("MD5", pw, nonce, "GET_PARAMETER", url)
        )
    };
    let r = exchange(&mut conn, t0, &keepalive(5, &nonce, "s3cret"));
    assert!(r.starts_with("RTSP/1.0 401"), "{r}");
    let c = challenges(&r);
    assert_eq!(c.len(), 2, "{r}");
    assert!(c.iter().all(|c| c.contains("stale=TRUE")), "{c:?}");
    let fresh = nonce_of(&c[0]);
    assert_ne!(fresh, nonce);
    let r = exchange(&mut conn, t0, &keepalive(6, &nonce, "s3cret"));
    assert!(r.starts_with("RTSP/1.0 401") && !r.contains("stale"), "old nonce refused: {r}");
    let r = exchange(&mut conn, t0, &keepalive(7, &fresh, "s3cret"));
    assert!(r.starts_with("RTSP/1.0 200"), "fresh nonce accepted: {r}");
    let r = exchange(&mut conn, t0, &keepalive(8, &fresh, "wrong"));
    assert!(r.starts_with("RTSP/1.0 401") && !r.contains("stale"), "{r}");
    assert_eq!(shared.stats.auth_failures.load(std::sync::atomic::Ordering::Relaxed), 3);

    // The quirk needs credentials.
    let err = rt
        .block_on(FakeFleet::start(FakeCamerasArgs {
            listen: "127.0.0.1:0".parse().expect("addr"),
            quirk: Some("digest-variants".into()),
            ..FakeCamerasArgs::default()
        }))
        .expect_err("no credentials");
    assert!(err.to_string().contains("--username"), "{err}");
}

/// `huge-frames`: key frames go out as single RTP packets far above the MTU (no FU-A), and
/// ffprobe still reads the stream over TCP and UDP.
#[tokio::test]
async fn fake_quirk_huge_frames() {
    let (mut conn, t0) = quirk_conn(Quirk::HugeFrames, "h264");
    quirk_setup_play(&mut conn, t0, 0, false);
    let pkts = quirk_video_packets(&mut conn, t0, 2);
    let parsed: Vec<_> = pkts.iter().map(|p| rtp_types::RtpPacket::parse(p).expect("rtp")).collect();
    assert!(parsed.iter().all(|p| p.payload()[0] & 0x1f != 28), "no FU-A below 60,000 bytes");
    let idr_sizes: Vec<usize> =
        parsed.iter().filter(|p| p.payload()[0] & 0x1f == 5).map(|p| p.payload().len()).collect();
    assert!(idr_sizes.len() >= 2, "{idr_sizes:?}");
    // The built-in clip's IDRs are 6.5-7 KB: over four MTUs in one packet.
    assert!(idr_sizes.iter().all(|&n| n > 4 * rtp::PAYLOAD_BYTES_MAX), "whole IDR NALs: {idr_sizes:?}");
    let args = FakeCamerasArgs {
        count: 1,
        listen: "127.0.0.1:0".parse().expect("addr"),
        quirk: Some("huge-frames".into()),
        ..FakeCamerasArgs::default()
    };
    let fleet = FakeFleet::start(args).await.expect("fleet");
    for transport in ["tcp", "udp"] {
        let p = ffprobe(&fleet.url(0), transport).await;
        assert!(p.success && p.stdout.contains("width=640"), "{transport}: {}{}", p.stdout, p.stderr);
    }
    fleet.shutdown().await;
}

/// `sei-marker`: inside every access unit an SEI packet carries the marker bit; FU-A
/// continuations name another NAL type; an empty fragment follows each start fragment.
/// ffprobe still reads the stream.
#[tokio::test]
async fn fake_quirk_sei_marker() {
    let (mut conn, t0) = quirk_conn(Quirk::SeiMarker, "h264");
    quirk_setup_play(&mut conn, t0, 0, false);
    let pkts = quirk_video_packets(&mut conn, t0, 2);
    let parsed: Vec<_> = pkts.iter().map(|p| rtp_types::RtpPacket::parse(p).expect("rtp")).collect();
    let (mut seis, mut retyped, mut empty) = (0, 0, 0);
    for (i, p) in parsed.iter().enumerate() {
        let pl = p.payload();
        if pl == rtp::QUIRK_SEI_NAL {
            seis += 1;
            assert!(p.marker_bit(), "SEI packet has the marker");
            let next = parsed.get(i + 1).expect("slice follows");
            assert_eq!(next.timestamp(), p.timestamp(), "SEI is inside the access unit");
        }
        if pl[0] & 0x1f == 28 && pl[1] & 0x80 == 0 {
            empty += usize::from(pl.len() == 2);
            // Compare with the start fragment's type.
            let start =
                parsed[..i].iter().rev().find(|q| q.payload()[0] & 0x1f == 28 && q.payload()[1] & 0x80 != 0);
            let start_type = start.expect("start fragment").payload()[1] & 0x1f;
            retyped += usize::from(pl.len() > 2 && pl[1] & 0x1f != start_type);
        }
    }
    assert!(seis >= 40, "one SEI per frame over 2 s: {seis}");
    assert!(retyped >= 2 && empty >= 2, "retyped={retyped} empty={empty}");
    let args = FakeCamerasArgs {
        count: 1,
        listen: "127.0.0.1:0".parse().expect("addr"),
        quirk: Some("sei-marker".into()),
        ..FakeCamerasArgs::default()
    };
    let fleet = FakeFleet::start(args).await.expect("fleet");
    let p = ffprobe(&fleet.url(0), "tcp").await;
    assert!(p.success && p.stdout.contains("width=640"), "{}{}", p.stdout, p.stderr);
    fleet.shutdown().await;
}
