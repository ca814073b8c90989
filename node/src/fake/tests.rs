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
    assert!(err.to_string().contains("supported quirks: none"), "{err}");
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
