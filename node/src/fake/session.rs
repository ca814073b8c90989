//! One task per RTSP connection: parses requests with `rtsp-types`, answers them, and while
//! playing paces the shared clip's access units out as RTP (TCP-interleaved or UDP) with RTCP
//! sender reports. The RTSP session lives as long as its connection (what ffmpeg and retina do).
//!
//! Bounds: the request buffer is `REQUEST_BYTES_MAX` (a longer request gets 400 and the
//! connection closes); the TCP send backlog is `TCP_BACKLOG_BYTES_MAX` (a client that reads
//! slower than the stream is disconnected, counted in `slow_client_disconnects`); UDP sends that
//! would block are dropped, counted in `udp_send_drops`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, BytesMut};
use rand::rngs::StdRng;
use rand::Rng as _;
use rtsp_types::headers::{
    self, RtpInfos, RtpLowerTransport, RtpProfile, RtpTransport, RtpTransportParameters, Transport,
    Transports,
};
use rtsp_types::{Message, Method, ParseError, Request, Response, StatusCode, Version};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use super::auth::Authenticator;
use super::clip::{rescale, Clip, StreamKind, VIDEO_CLOCK_HZ};
use super::rtp::{ntp_from_unix, RtpSender};
use super::sdp;
use super::Quirk;

/// Largest request (headers + body) we buffer before answering 400.
pub const REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Largest unsent TCP backlog before a slow client is disconnected.
pub const TCP_BACKLOG_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Interval between RTCP sender reports of a stream.
const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// Delay of the first sender report after PLAY (after the first packets).
const SENDER_REPORT_FIRST_DELAY: Duration = Duration::from_millis(500);
/// Most access units sent in one wakeup, so a stalled task catches up without starving others.
const BURST_UNITS_MAX: usize = 256;
const SERVER: &str = "camrec-fake-cameras";
const CNAME: &str = "camrec-fake";
/// `Quirk::TimestampOutliers`: one outlier every this many video frames (5 s at 25 fps).
pub const OUTLIER_PERIOD_FRAMES: u64 = 125;
/// `Quirk::TimestampOutliers`: the outlier's offset into the past / the future, in 90 kHz ticks.
pub const OUTLIER_PAST_90K: u64 = 9_800 * 90_000;
pub const OUTLIER_FUTURE_90K: u64 = 37_600 * 90_000;

/// Counters shared by all connections of a fleet.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub connections_refused: AtomicU64,
    pub bad_requests: AtomicU64,
    pub auth_failures: AtomicU64,
    pub session_timeouts: AtomicU64,
    pub slow_client_disconnects: AtomicU64,
    pub udp_send_drops: AtomicU64,
}

/// Immutable fleet-wide state shared by every connection task.
#[derive(Debug)]
pub struct Shared {
    pub clip: Arc<Clip>,
    pub camera_count: usize,
    pub auth: Option<Authenticator>,
    pub session_timeout: Duration,
    /// The misbehaviour every camera of the fleet imitates, if any.
    pub quirk: Option<Quirk>,
    pub stats: Stats,
    /// Wall time (since the Unix epoch) at monotonic instant `.0`, read once at start; sender
    /// reports derive their NTP time from it.
    pub wall_anchor: (Instant, Duration),
}

#[derive(Debug)]
enum Dest {
    Tcp { rtp_channel: u8, rtcp_channel: u8 },
    Udp { rtp: SocketAddr, rtcp: SocketAddr },
}

#[derive(Debug)]
struct StreamSetup {
    kind: StreamKind,
    clock_hz: u32,
    sender: RtpSender,
    rtp_ts_base: u32,
    dest: Dest,
    /// Access units sent on this stream (drives `Quirk::TimestampOutliers`).
    units_sent: u64,
}

#[derive(Debug)]
struct UdpPair {
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

#[derive(Debug, Clone, Copy)]
enum PlayState {
    /// Set up or paused; `cursor` is the next access unit to send.
    Ready { cursor: u64 },
    /// `start` is the instant of clip position 0 of loop 0.
    Playing { start: Instant, cursor: u64, next_sr: Instant },
}

#[derive(Debug)]
struct Session {
    id: String,
    camera: usize,
    streams: Vec<StreamSetup>,
    udp: Option<UdpPair>,
    play: PlayState,
}

/// The connection: protocol state plus its buffers. IO happens only in [`Connection::run`].
pub struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    local_ip: IpAddr,
    inbuf: BytesMut,
    outbuf: BytesMut,
    scratch: Vec<u8>,
    session: Option<Session>,
    deadline: Instant,
    close_after_flush: bool,
    rng: StdRng,
    /// CSeq of the last request (`Quirk::KeepaliveRejected` answers with it).
    last_cseq: Option<String>,
    /// `Quirk::DigestVariants`: the connection's fresh nonce after the mid-session `stale=TRUE`.
    stale_nonce: Option<String>,
    /// A second `WWW-Authenticate` header for the next response (`Quirk::DigestVariants`).
    extra_www_authenticate: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("peer", &self.peer).field("session", &self.session).finish()
    }
}

/// Position of access unit `cursor` (global index over all loops) in 90 kHz units.
fn cursor_90k(clip: &Clip, cursor: u64) -> u64 {
    let n = clip.units.len() as u64;
    let unit = &clip.units[(cursor % n) as usize];
    (cursor / n) * clip.loop_90k + unit.send_90k
}

fn duration_90k(ticks_90k: u64) -> Duration {
    Duration::from_nanos(rescale(ticks_90k, 90_000, 1_000_000_000))
}

/// Parses `/cam/{i}` or `/cam/{i}/trackID={k}` (trailing slash allowed).
pub fn parse_path(path: &str) -> Option<(usize, Option<usize>)> {
    let rest = path.strip_prefix("/cam/")?.trim_end_matches('/');
    let (cam, track) = match rest.split_once('/') {
        Some((cam, track)) => (cam, Some(track.strip_prefix("trackID=")?.parse().ok()?)),
        None => (rest, None),
    };
    if cam.is_empty() || !cam.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((cam.parse().ok()?, track))
}

fn bind_udp_pair(ip: IpAddr) -> io::Result<UdpPair> {
    let bind = |port: u16| -> io::Result<UdpSocket> {
        let s = std::net::UdpSocket::bind((ip, port))?;
        s.set_nonblocking(true)?;
        UdpSocket::from_std(s)
    };
    // Prefer an even RTP port with RTCP on the next one, as RFC 3550 suggests.
    for _ in 0..16 {
        let rtp = bind(0)?;
        let port = rtp.local_addr()?.port();
        if port % 2 == 0 {
            if let Ok(rtcp) = bind(port + 1) {
                return Ok(UdpPair { rtp, rtcp });
            }
        }
    }
    Ok(UdpPair { rtp: bind(0)?, rtcp: bind(0)? })
}

async fn recv_opt(socket: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<usize> {
    match socket {
        Some(s) => s.recv(buf).await,
        None => std::future::pending().await,
    }
}

impl Connection {
    pub fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        local_ip: IpAddr,
        now: Instant,
        rng: StdRng,
    ) -> Connection {
        let deadline = now + shared.session_timeout;
        Connection {
            shared,
            peer,
            local_ip,
            inbuf: BytesMut::with_capacity(4096),
            outbuf: BytesMut::with_capacity(64 * 1024),
            scratch: Vec::with_capacity(1500),
            session: None,
            deadline,
            close_after_flush: false,
            rng,
            last_cseq: None,
            stale_nonce: None,
            extra_www_authenticate: None,
        }
    }

    /// Serves the connection until the client leaves, times out, is too slow, or shutdown.
    pub async fn run(mut self, stream: TcpStream, mut shutdown: watch::Receiver<bool>) {
        let mut read_chunk = vec![0u8; 16 * 1024];
        let mut rtcp_buf = vec![0u8; 2048];
        let mut rtp_buf = vec![0u8; 2048];
        loop {
            let now = Instant::now();
            self.poll_media(now);
            if let Err(e) = self.flush(&stream) {
                tracing::debug!(peer = %self.peer, "write failed: {e}");
                break;
            }
            if self.outbuf.len() > TCP_BACKLOG_BYTES_MAX {
                self.shared.stats.slow_client_disconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer = %self.peer, "disconnecting slow client: {} bytes backlog", self.outbuf.len());
                break;
            }
            if self.close_after_flush && self.outbuf.is_empty() {
                break;
            }
            let media_at = self.next_media_instant();
            let udp = self.session.as_ref().and_then(|s| s.udp.as_ref());
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = sleep_until(self.deadline) => {
                    self.shared.stats.session_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %self.peer, "session timed out");
                    break;
                }
                _ = sleep_until(media_at.unwrap_or(now)), if media_at.is_some() => {}
                r = stream.readable(), if !self.close_after_flush => {
                    if r.is_err() {
                        break;
                    }
                    match stream.try_read(&mut read_chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            self.inbuf.extend_from_slice(&read_chunk[..n]);
                            self.handle_input(Instant::now());
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => break,
                    }
                }
                r = stream.writable(), if !self.outbuf.is_empty() => {
                    if r.is_err() {
                        break;
                    }
                }
                r = recv_opt(udp.map(|u| &u.rtcp), &mut rtcp_buf) => {
                    // Receiver reports (content ignored) keep the session alive, except on a
                    // camera that only counts requests.
                    if r.is_ok() && self.shared.quirk != Some(Quirk::ShortTimeout) {
                        self.deadline = Instant::now() + self.shared.session_timeout;
                    }
                }
                r = recv_opt(udp.map(|u| &u.rtp), &mut rtp_buf) => {
                    // NAT hole-punching packets (ffmpeg sends some); ignored.
                    let _ = r;
                }
            }
        }
    }

    #[cfg(test)]
    pub fn inbuf_for_test(&mut self) -> &mut BytesMut {
        &mut self.inbuf
    }

    #[cfg(test)]
    pub fn take_output_for_test(&mut self) -> BytesMut {
        self.outbuf.split()
    }

    fn flush(&mut self, stream: &TcpStream) -> io::Result<()> {
        while !self.outbuf.is_empty() {
            match stream.try_write(&self.outbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.outbuf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn next_media_instant(&self) -> Option<Instant> {
        match self.session.as_ref()?.play {
            PlayState::Playing { start, cursor, next_sr } => {
                Some((start + duration_90k(cursor_90k(&self.shared.clip, cursor))).min(next_sr))
            }
            PlayState::Ready { .. } => None,
        }
    }

    /// Consumes buffered input: requests are answered, interleaved data (client RTCP) only
    /// refreshes the session timeout.
    pub fn handle_input(&mut self, now: Instant) {
        while !self.inbuf.is_empty() && !self.close_after_flush {
            match Message::<Vec<u8>>::parse(&self.inbuf[..]) {
                Ok((msg, consumed)) => {
                    self.inbuf.advance(consumed);
                    if matches!(msg, Message::Request(_)) || self.shared.quirk != Some(Quirk::ShortTimeout) {
                        self.deadline = now + self.shared.session_timeout;
                    }
                    match msg {
                        Message::Request(req) => {
                            let resp = self.handle_request(now, &req);
                            self.write_response(&resp);
                        }
                        Message::Data(_) | Message::Response(_) => {}
                    }
                }
                Err(ParseError::Incomplete(_)) if self.inbuf.len() <= REQUEST_BYTES_MAX => return,
                Err(_) => {
                    self.shared.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %self.peer, "unparseable request; closing");
                    let resp = Response::builder(Version::V1_0, StatusCode::BadRequest)
                        .header(headers::SERVER, SERVER)
                        .build(Vec::new());
                    self.write_response(&resp);
                    self.inbuf.clear();
                    self.close_after_flush = true;
                }
            }
        }
    }

    fn write_response(&mut self, resp: &Response<Vec<u8>>) {
        let Some(extra) = self.extra_www_authenticate.take() else {
            // Writing into memory cannot fail.
            let _ = resp.write(&mut (&mut self.outbuf).writer());
            return;
        };
        // `rtsp-types` merges repeated headers into one; splice a separate `WWW-Authenticate`
        // line in right after the status line.
        let mut head = Vec::new();
        let _ = resp.write(&mut head);
        let at = head.windows(2).position(|w| w == b"\r\n").map_or(head.len(), |p| p + 2);
        self.outbuf.extend_from_slice(&head[..at]);
        self.outbuf.extend_from_slice(format!("WWW-Authenticate: {extra}\r\n").as_bytes());
        self.outbuf.extend_from_slice(&head[at..]);
    }

    fn respond(&self, req: &Request<Vec<u8>>, status: StatusCode) -> rtsp_types::ResponseBuilder {
        let mut b = Response::builder(Version::V1_0, status).header(headers::SERVER, SERVER);
        if let Some(cseq) = req.header(&headers::CSEQ) {
            b = b.header(headers::CSEQ, cseq.as_str());
        }
        if let Some(s) = &self.session {
            b = b.header(
                headers::SESSION,
                format!("{};timeout={}", s.id, self.shared.session_timeout.as_secs()),
            );
        }
        b
    }

    fn error(&self, req: &Request<Vec<u8>>, status: StatusCode) -> Response<Vec<u8>> {
        if status == StatusCode::BadRequest {
            self.shared.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
        }
        self.respond(req, status).build(Vec::new())
    }

    /// Answers one request, updating the session state.
    pub fn handle_request(&mut self, now: Instant, req: &Request<Vec<u8>>) -> Response<Vec<u8>> {
        let Some(cseq) = req.header(&headers::CSEQ).map(|v| v.as_str().to_owned()) else {
            return self.error(req, StatusCode::BadRequest);
        };
        let previous_cseq = self.last_cseq.replace(cseq.clone());
        let method: &str = req.method().into();
        let shared = Arc::clone(&self.shared);
        if let (Some(auth), Some(Quirk::DigestVariants)) = (&shared.auth, shared.quirk) {
            let authorization = req.header(&headers::AUTHORIZATION).map(|v| v.as_str());
            let nonce = self.stale_nonce.clone().unwrap_or_else(|| auth.nonce().to_owned());
            let ok = auth.check_nonce(method, authorization, &nonce);
            let playing = matches!(&self.session, Some(Session { play: PlayState::Playing { .. }, .. }));
            // The first valid request after PLAY is refused: the nonce went stale.
            let stale = ok && playing && self.stale_nonce.is_none();
            if !ok || stale {
                let nonce = if stale {
                    let fresh = format!("{:032x}", self.rng.gen::<u128>());
                    self.stale_nonce = Some(fresh.clone());
                    fresh
                } else {
                    self.shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                    nonce
                };
                let [sha256, md5] = Authenticator::challenges_variant(&nonce, stale);
                // The spliced header goes right after the status line, so SHA-256 comes first.
                self.extra_www_authenticate = Some(sha256);
                return self
                    .respond(req, StatusCode::Unauthorized)
                    .header(headers::WWW_AUTHENTICATE, md5)
                    .build(Vec::new());
            }
        } else if let Some(auth) = &shared.auth {
            let authorization = req.header(&headers::AUTHORIZATION).map(|v| v.as_str());
            if !auth.check(method, authorization) {
                self.shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                return self
                    .respond(req, StatusCode::Unauthorized)
                    .header(headers::WWW_AUTHENTICATE, auth.challenge())
                    .build(Vec::new());
            }
        }
        // `*` (OPTIONS) has no URI; every other request names a camera.
        let target = match req.request_uri() {
            None => None,
            Some(uri) => match parse_path(uri.path()) {
                Some((cam, track)) if cam < self.shared.camera_count => Some((cam, track)),
                _ => return self.error(req, StatusCode::NotFound),
            },
        };
        if let Some(s) = &self.session {
            match req.typed_header::<headers::Session>() {
                Ok(Some(h)) if h.0 != s.id => return self.error(req, StatusCode::SessionNotFound),
                Err(_) => return self.error(req, StatusCode::BadRequest),
                _ => {}
            }
        }
        match req.method() {
            Method::Options => self
                .respond(req, StatusCode::Ok)
                .header(
                    headers::PUBLIC,
                    "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER",
                )
                .build(Vec::new()),
            Method::SetParameter if self.shared.quirk == Some(Quirk::KeepaliveRejected) => {
                // The Tapo behaviour: 400, carrying the CSeq of the request before this one.
                Response::builder(Version::V1_0, StatusCode::BadRequest)
                    .header(headers::SERVER, SERVER)
                    .header(headers::CSEQ, previous_cseq.unwrap_or(cseq))
                    .build(Vec::new())
            }
            Method::GetParameter | Method::SetParameter => {
                self.respond(req, StatusCode::Ok).build(Vec::new())
            }
            Method::Describe => {
                let (Some((cam, None)), Some(uri)) = (target, req.request_uri()) else {
                    return self.error(req, StatusCode::NotFound);
                };
                let mut base = uri.to_string();
                if !base.ends_with('/') {
                    base.push('/');
                }
                let sprop = self.shared.quirk != Some(Quirk::NoSprop);
                let body = sdp::describe(&self.shared.clip, cam, self.rng.gen::<u32>().into(), sprop);
                self.respond(req, StatusCode::Ok)
                    .header(headers::CONTENT_TYPE, "application/sdp")
                    .header(headers::CONTENT_BASE, base)
                    .build(body)
            }
            Method::Setup => self.handle_setup(req, target),
            Method::Play => self.handle_play(now, req),
            Method::Pause => {
                let Some(s) = &mut self.session else { return self.error(req, StatusCode::SessionNotFound) };
                if let PlayState::Playing { cursor, .. } = s.play {
                    s.play = PlayState::Ready { cursor };
                }
                self.respond(req, StatusCode::Ok).build(Vec::new())
            }
            Method::Teardown => {
                let resp = self.respond(req, StatusCode::Ok).build(Vec::new());
                self.session = None;
                resp
            }
            _ => self
                .respond(req, StatusCode::MethodNotAllowed)
                .header(
                    headers::ALLOW,
                    "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER",
                )
                .build(Vec::new()),
        }
    }

    fn handle_setup(
        &mut self,
        req: &Request<Vec<u8>>,
        target: Option<(usize, Option<usize>)>,
    ) -> Response<Vec<u8>> {
        let clip = Arc::clone(&self.shared.clip);
        let (cam, kind) = match target {
            Some((cam, Some(0))) => (cam, StreamKind::Video),
            Some((cam, Some(1))) if clip.audio.is_some() => (cam, StreamKind::Audio),
            _ => return self.error(req, StatusCode::NotFound),
        };
        let transports = match req.typed_header::<Transports>() {
            Ok(Some(t)) => t,
            Ok(None) => return self.error(req, StatusCode::UnsupportedTransport),
            Err(_) => return self.error(req, StatusCode::BadRequest),
        };
        if let Some(s) = &self.session {
            if s.camera != cam || matches!(s.play, PlayState::Playing { .. }) {
                return self.error(req, StatusCode::MethodNotValidInThisState);
            }
        }
        // Pick the first transport we can serve.
        let mut chosen = None;
        for t in transports.iter() {
            let Transport::Rtp(t) = t else { continue };
            if t.profile != RtpProfile::Avp || t.params.multicast {
                continue;
            }
            match t.lower_transport {
                Some(RtpLowerTransport::Tcp) => {
                    let (a, b) = t.params.interleaved.unwrap_or((kind as u8 * 2, None));
                    chosen = Some((
                        Dest::Tcp { rtp_channel: a, rtcp_channel: b.unwrap_or(a.wrapping_add(1)) },
                        None,
                    ));
                    break;
                }
                None | Some(RtpLowerTransport::Udp) => {
                    let Some((a, b)) = t.params.client_port else { continue };
                    let b = b.unwrap_or(a.wrapping_add(1));
                    let ip = self.peer.ip();
                    let dest = Dest::Udp { rtp: SocketAddr::new(ip, a), rtcp: SocketAddr::new(ip, b) };
                    chosen = Some((dest, Some((a, b))));
                    break;
                }
                Some(_) => {}
            }
        }
        let Some((dest, client_ports)) = chosen else {
            return self.error(req, StatusCode::UnsupportedTransport);
        };
        let rng = &mut self.rng;
        let session = self.session.get_or_insert_with(|| Session {
            id: format!("{:016X}", rng.gen::<u64>()),
            camera: cam,
            streams: Vec::new(),
            udp: None,
            play: PlayState::Ready { cursor: 0 },
        });
        if client_ports.is_some() && session.udp.is_none() {
            match bind_udp_pair(self.local_ip) {
                Ok(pair) => session.udp = Some(pair),
                Err(e) => {
                    tracing::warn!("binding UDP ports: {e}");
                    return self.error(req, StatusCode::InternalServerError);
                }
            }
        }
        let h265 = matches!(clip.video, super::clip::VideoCodec::H265 { .. });
        let ssrc = rng.gen::<u32>();
        // `Quirk::SsrcChange`: the packets' SSRC is not the one announced in `Transport`.
        let packet_ssrc = if self.shared.quirk == Some(Quirk::SsrcChange) { !ssrc } else { ssrc };
        let mut sender = RtpSender::new(packet_ssrc, rng.gen::<u16>(), kind, h265);
        if self.shared.quirk == Some(Quirk::HugeFrames) {
            sender.video_payload_max = super::rtp::HUGE_PAYLOAD_BYTES_MAX;
        }
        sender.sei_marker = self.shared.quirk == Some(Quirk::SeiMarker);
        let setup = StreamSetup {
            kind,
            clock_hz: clip.clock_hz(kind),
            sender,
            rtp_ts_base: rng.gen::<u32>(),
            dest,
            units_sent: 0,
        };
        let mut params = RtpTransportParameters { unicast: true, ssrc: vec![ssrc], ..Default::default() };
        let lower_transport = match (&setup.dest, &session.udp) {
            (Dest::Tcp { rtp_channel, rtcp_channel }, _) => {
                params.interleaved = Some((*rtp_channel, Some(*rtcp_channel)));
                Some(RtpLowerTransport::Tcp)
            }
            (Dest::Udp { .. }, Some(udp)) => {
                let port = |s: &UdpSocket| s.local_addr().map_or(0, |a| a.port());
                params.client_port = client_ports.map(|(a, b)| (a, Some(b)));
                params.server_port = Some((port(&udp.rtp), Some(port(&udp.rtcp))));
                None
            }
            (Dest::Udp { .. }, None) => return self.error(req, StatusCode::InternalServerError),
        };
        session.streams.retain(|s| s.kind != kind);
        session.streams.push(setup);
        let transport: Transports =
            vec![Transport::Rtp(RtpTransport { profile: RtpProfile::Avp, lower_transport, params })].into();
        self.respond(req, StatusCode::Ok).typed_header(&transport).build(Vec::new())
    }

    fn handle_play(&mut self, now: Instant, req: &Request<Vec<u8>>) -> Response<Vec<u8>> {
        let clip = Arc::clone(&self.shared.clip);
        let Some(s) = &mut self.session else { return self.error(req, StatusCode::SessionNotFound) };
        if s.streams.is_empty() {
            return self.error(req, StatusCode::MethodNotValidInThisState);
        }
        let cursor = match s.play {
            PlayState::Ready { cursor } | PlayState::Playing { cursor, .. } => cursor,
        };
        let pos_90k = cursor_90k(&clip, cursor);
        if let PlayState::Ready { .. } = s.play {
            s.play = PlayState::Playing {
                start: now.checked_sub(duration_90k(pos_90k)).unwrap_or(now),
                cursor,
                next_sr: now + SENDER_REPORT_FIRST_DELAY,
            };
        }
        let base = req.request_uri().map(|u| u.as_str().trim_end_matches('/').to_owned()).unwrap_or_default();
        let infos: Vec<_> = s
            .streams
            .iter()
            .filter_map(|st| {
                let uri = url::Url::parse(&format!("{base}/{}", sdp::control(st.kind))).ok()?;
                let rtptime =
                    st.rtp_ts_base
                        .wrapping_add(rescale(pos_90k, VIDEO_CLOCK_HZ.into(), st.clock_hz.into()) as u32);
                Some(headers::rtp_info::v1::RtpInfo {
                    uri,
                    seq: Some(st.sender.next_seq),
                    rtptime: Some(rtptime),
                })
            })
            .collect();
        let npt_secs = pos_90k as f64 / 90_000.0;
        let camera = s.camera;
        let b = self.respond(req, StatusCode::Ok).header(headers::RANGE, format!("npt={npt_secs:.3}-"));
        if self.shared.quirk == Some(Quirk::BogusRtpInfo) {
            // seq=0 or 1 whatever the real sequence number, rtptime=0, and a stray `;`.
            let seq = camera % 2;
            let bogus: Vec<_> = infos.iter().map(|i| format!("url={};seq={seq};rtptime=0;", i.uri)).collect();
            return b.header(headers::RTP_INFO, bogus.join(",")).build(Vec::new());
        }
        b.typed_header(&RtpInfos::V1(infos)).build(Vec::new())
    }

    /// Sends every access unit and sender report that is due at `now`.
    pub fn poll_media(&mut self, now: Instant) {
        let Some(s) = &mut self.session else { return };
        let PlayState::Playing { start, mut cursor, mut next_sr } = s.play else { return };
        let clip = &*self.shared.clip;
        let n = clip.units.len() as u64;
        let stats = &self.shared.stats;
        let outbuf = &mut self.outbuf;
        let scratch = &mut self.scratch;
        let quirk = self.shared.quirk;
        let rng = &mut self.rng;
        for _ in 0..BURST_UNITS_MAX {
            let at_90k = cursor_90k(clip, cursor);
            if start + duration_90k(at_90k) > now {
                break;
            }
            let loop_n = cursor / n;
            let unit = &clip.units[(cursor % n) as usize];
            cursor += 1;
            let Some(st) = s.streams.iter_mut().find(|st| st.kind == unit.kind) else { continue };
            let ticks = loop_n * clip.loop_ticks(st.clock_hz) + unit.rtp_offset;
            let mut rtp_ts = st.rtp_ts_base.wrapping_add(ticks as u32);
            if st.kind == StreamKind::Video {
                match quirk {
                    Some(Quirk::SsrcChange) if unit.is_key && st.units_sent > 0 => st.sender.ssrc = rng.gen(),
                    Some(Quirk::TimestampOutliers)
                        if st.units_sent % OUTLIER_PERIOD_FRAMES == OUTLIER_PERIOD_FRAMES / 2 =>
                    {
                        rtp_ts = if (st.units_sent / OUTLIER_PERIOD_FRAMES).is_multiple_of(2) {
                            rtp_ts.wrapping_sub(OUTLIER_PAST_90K as u32)
                        } else {
                            rtp_ts.wrapping_add(OUTLIER_FUTURE_90K as u32)
                        };
                    }
                    _ => {}
                }
            }
            st.units_sent += 1;
            let (dest, udp) = (&st.dest, s.udp.as_ref());
            st.sender.packetize(unit, rtp_ts, scratch, &mut |pkt| emit(dest, udp, outbuf, stats, pkt, false));
        }
        if next_sr <= now {
            let (anchor_mono, anchor_wall) = self.shared.wall_anchor;
            let ntp = ntp_from_unix(anchor_wall + now.saturating_duration_since(anchor_mono));
            let elapsed_90k =
                rescale(now.saturating_duration_since(start).as_nanos() as u64, 1_000_000_000, 90_000);
            for st in &s.streams {
                let ticks = rescale(elapsed_90k, 90_000, st.clock_hz.into());
                let sr = st.sender.sender_report(ntp, st.rtp_ts_base.wrapping_add(ticks as u32), CNAME);
                emit(&st.dest, s.udp.as_ref(), outbuf, stats, &sr, true);
            }
            next_sr = now + SENDER_REPORT_INTERVAL;
        }
        s.play = PlayState::Playing { start, cursor, next_sr };
    }
}

/// Sends one RTP (or, with `rtcp`, RTCP) packet to its destination.
fn emit(dest: &Dest, udp: Option<&UdpPair>, outbuf: &mut BytesMut, stats: &Stats, pkt: &[u8], rtcp: bool) {
    match dest {
        Dest::Tcp { rtp_channel, rtcp_channel } => {
            let channel = if rtcp { *rtcp_channel } else { *rtp_channel };
            // Writing into memory cannot fail.
            let _ = rtsp_types::Data::new(channel, pkt).write(&mut outbuf.writer());
        }
        Dest::Udp { rtp, rtcp: rtcp_addr } => {
            let sent = udp.map(|u| {
                if rtcp {
                    u.rtcp.try_send_to(pkt, *rtcp_addr)
                } else {
                    u.rtp.try_send_to(pkt, *rtp)
                }
            });
            if !matches!(sent, Some(Ok(_))) {
                stats.udp_send_drops.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_parse_path() {
        assert_eq!(parse_path("/cam/0"), Some((0, None)));
        assert_eq!(parse_path("/cam/12/"), Some((12, None)));
        assert_eq!(parse_path("/cam/3/trackID=1"), Some((3, Some(1))));
        for bad in ["/", "/cam/", "/cam/x", "/cam/-1", "/cam/1/foo", "/cam/1/trackID=", "/cams/1", "/cam/+1"]
        {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
        assert_eq!(parse_path("/cam/99999999999999999999999"), None);
    }
}
