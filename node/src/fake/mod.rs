//! The test camera fleet (`camrec fake-cameras`, design §6): our own RTSP server serving N
//! cameras at `rtsp://ADDR/cam/{i}` from a small clip, looping with continuous timestamps, over
//! RTSP/TCP-interleaved and RTP/UDP, with optional digest (or Basic) auth.
//!
//! Code map:
//! - `clip`: MP4 → shared list of timed access units (parsed once, `Arc`-shared by all cameras).
//! - `rtp`: RTP packetizers (H.264, H.265, AAC-hbr) and the RTCP sender-report writer.
//! - `sdp`: the DESCRIBE answer.
//! - `auth`: Digest/Basic checks.
//! - `session`: one task per connection; requests, pacing, RTCP, bounds.
//! - `Quirk`: camera misbehaviours from `shared/camera-quirks.md` a fleet can imitate
//!   (`--quirk NAME`; one quirk for every camera of the fleet).
//!
//! Cost model: `camrec dev` runs a fleet in-process next to hundreds of recorders, so there is
//! one task per connection (none per camera), no per-session copies of media, and pacing is
//! `sleep_until` the next access unit's time.

mod auth;
mod clip;
mod rtp;
mod sdp;
mod session;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::auth::Authenticator;
use self::clip::Clip;
use self::session::{Connection, Shared, Stats};

/// Most concurrent connections per fleet; further ones are closed at once (counted).
pub const CONNECTIONS_MAX: usize = 4096;

/// Quirks (camera misbehaviours to imitate) that `--quirk` accepts, in [`Quirk::ALL`] order;
/// shared by the argument parser (help text, validation) and [`FakeFleet::start`].
pub const QUIRKS_SUPPORTED: &[&str] = &[
    "short-timeout",
    "keepalive-rejected",
    "bogus-rtp-info",
    "no-sprop",
    "ssrc-change",
    "timestamp-outliers",
    "digest-variants",
    "huge-frames",
    "sei-marker",
];

/// A camera misbehaviour the fleet imitates (see `shared/camera-quirks.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quirk {
    /// `Session: X;timeout=8`; the session is dropped 8 s after the last *request* (RTCP
    /// receiver reports and interleaved data do not keep it alive).
    ShortTimeout,
    /// `timeout=15`; `Public` advertises SET_PARAMETER and GET_PARAMETER, but every
    /// SET_PARAMETER is answered `400 Bad Request` carrying the previous request's CSeq.
    KeepaliveRejected,
    /// PLAY's `RTP-Info` says `seq=0` (even cameras) or `seq=1` (odd cameras) and `rtptime=0`
    /// on every stream, each entry ending in a stray `;`; the packets keep their real values.
    BogusRtpInfo,
    /// The SDP has no `sprop-parameter-sets` (H.265: no `sprop-vps/sps/pps`); parameter sets
    /// arrive only in-band, in front of every key frame.
    NoSprop,
    /// Packets carry an SSRC other than the one SETUP's `Transport` announced, and video picks a
    /// new SSRC at every key frame while sequence numbers and timestamps stay continuous.
    SsrcChange,
    /// Every `OUTLIER_PERIOD_FRAMES` video frames, one frame is stamped ~9,800 s in the past or
    /// ~37,600 s in the future (alternately); the next frame resumes normal timing.
    TimestampOutliers,
    /// (Needs `--username/--password`.) A 401 carries two `WWW-Authenticate` headers: SHA-256
    /// with `algorithm="SHA-256"` quoted, then MD5; neither offers `qop`; both algorithms are
    /// accepted. The first request after PLAY gets a 401 with a fresh nonce and `stale=TRUE`.
    DigestVariants,
    /// Video NAL units up to 60,000 bytes go whole in one RTP packet (far above the MTU, over
    /// TCP and UDP); larger ones in 60,000-byte FU fragments.
    HugeFrames,
    /// (H.264.) An SEI packet with the marker bit set inside every access unit, FU-A
    /// continuation packets naming another NAL type, and an empty FU-A fragment per NAL.
    SeiMarker,
}

impl Quirk {
    /// Every quirk, in [`QUIRKS_SUPPORTED`] order.
    pub const ALL: [Quirk; 9] = [
        Quirk::ShortTimeout,
        Quirk::KeepaliveRejected,
        Quirk::BogusRtpInfo,
        Quirk::NoSprop,
        Quirk::SsrcChange,
        Quirk::TimestampOutliers,
        Quirk::DigestVariants,
        Quirk::HugeFrames,
        Quirk::SeiMarker,
    ];

    /// The `--quirk` name.
    pub fn name(self) -> &'static str {
        // ALL and QUIRKS_SUPPORTED have the same length and order (checked by a test).
        let i = Quirk::ALL.iter().position(|q| *q == self).unwrap_or(0);
        QUIRKS_SUPPORTED[i]
    }

    /// Parses a `--quirk` name.
    pub fn from_name(name: &str) -> Option<Quirk> {
        QUIRKS_SUPPORTED.iter().position(|n| *n == name).and_then(|i| Quirk::ALL.get(i).copied())
    }

    /// The session timeout this quirk imposes (in place of `--session-timeout-secs`).
    fn session_timeout(self) -> Option<Duration> {
        match self {
            Quirk::ShortTimeout => Some(Duration::from_secs(8)),
            Quirk::KeepaliveRejected => Some(Duration::from_secs(15)),
            _ => None,
        }
    }
}

/// `camrec fake-cameras` options.
#[derive(clap::Args, Debug, Clone)]
pub struct FakeCamerasArgs {
    /// Number of cameras, served at rtsp://ADDR/cam/0 .. cam/N-1.
    #[arg(long, default_value_t = 4)]
    pub count: usize,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8554")]
    pub listen: SocketAddr,
    /// Built-in clip `h264` or `h265`, or the path of an .mp4 (H.264/H.265 + optional AAC).
    #[arg(long, default_value = "h264")]
    pub clip: String,
    /// Require this user name (with --password): Digest auth, Basic also accepted.
    #[arg(long, requires = "password")]
    pub username: Option<String>,
    /// Password for --username.
    #[arg(long, requires = "username")]
    pub password: Option<String>,
    /// Imitate a camera quirk (see shared/camera-quirks.md) on every camera of the fleet.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(QUIRKS_SUPPORTED))]
    pub quirk: Option<String>,
    /// Seed for SSRCs, sequence numbers, RTP timestamps, session ids and the auth nonce
    /// (from OS entropy when absent).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seconds without a request or RTCP packet before a session is closed.
    #[arg(long, default_value_t = 60, hide = true)]
    pub session_timeout_secs: u64,
}

impl Default for FakeCamerasArgs {
    fn default() -> Self {
        FakeCamerasArgs {
            count: 4,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8554),
            clip: "h264".to_owned(),
            username: None,
            password: None,
            quirk: None,
            seed: None,
            session_timeout_secs: 60,
        }
    }
}

/// A snapshot of a fleet's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetStats {
    pub connections: u64,
    pub connections_refused: u64,
    pub bad_requests: u64,
    pub auth_failures: u64,
    pub session_timeouts: u64,
    pub slow_client_disconnects: u64,
    pub udp_send_drops: u64,
}

/// A running fleet of fake cameras.
#[derive(Debug)]
pub struct FakeFleet {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    accept_task: tokio::task::JoinHandle<()>,
}

fn load_clip(name: &str) -> anyhow::Result<Clip> {
    let bytes = match name {
        "h264" => Bytes::from_static(clip::H264_AAC_MP4),
        "h265" => Bytes::from_static(clip::H265_AAC_MP4),
        path => Bytes::from(std::fs::read(path).with_context(|| format!("reading clip {path:?}"))?),
    };
    Clip::parse(bytes).with_context(|| format!("loading clip {name:?}"))
}

impl FakeFleet {
    /// Parses the clip, binds the listener and starts serving.
    pub async fn start(args: FakeCamerasArgs) -> anyhow::Result<FakeFleet> {
        let quirk = match &args.quirk {
            None => None,
            Some(q) => Some(Quirk::from_name(q).with_context(|| {
                format!("unknown quirk {q:?}; supported quirks: {}", QUIRKS_SUPPORTED.join(", "))
            })?),
        };
        let mut rng = match args.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let auth = match (args.username, args.password) {
            (Some(u), Some(p)) => Some(Authenticator::new(u, p, format!("{:032x}", rng.gen::<u128>()))),
            (None, None) => None,
            _ => anyhow::bail!("--username and --password must be given together"),
        };
        if quirk == Some(Quirk::DigestVariants) && auth.is_none() {
            anyhow::bail!("quirk digest-variants needs --username and --password");
        }
        if args.session_timeout_secs == 0 {
            anyhow::bail!("session timeout must be positive");
        }
        let clip = Arc::new(load_clip(&args.clip)?);
        if quirk == Some(Quirk::SeiMarker) && !matches!(clip.video, clip::VideoCodec::H264 { .. }) {
            anyhow::bail!("quirk sei-marker needs an H.264 clip");
        }
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding RTSP listener {}", args.listen))?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            clip,
            camera_count: args.count,
            auth,
            session_timeout: quirk
                .and_then(Quirk::session_timeout)
                .unwrap_or(Duration::from_secs(args.session_timeout_secs)),
            quirk,
            stats: Stats::default(),
            wall_anchor: wall_anchor(),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown_rx, rng));
        tracing::info!(%local_addr, cameras = args.count, quirk = quirk.map(Quirk::name), "fake cameras listening");
        Ok(FakeFleet { local_addr, shared, shutdown_tx, accept_task })
    }

    /// The address actually bound (the real port when `--listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL of camera `i`.
    pub fn url(&self, i: usize) -> String {
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        format!("rtsp://{addr}/cam/{i}")
    }

    /// Current counters.
    pub fn stats(&self) -> FleetStats {
        let s = &self.shared.stats;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        FleetStats {
            connections: get(&s.connections),
            connections_refused: get(&s.connections_refused),
            bad_requests: get(&s.bad_requests),
            auth_failures: get(&s.auth_failures),
            session_timeouts: get(&s.session_timeouts),
            slow_client_disconnects: get(&s.slow_client_disconnects),
            udp_send_drops: get(&s.udp_send_drops),
        }
    }

    /// Stops accepting, closes every connection and waits for the tasks to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        let _ = self.accept_task.await;
    }
}

/// Reads the wall clock once, paired with the monotonic clock; sender reports need wall time.
#[allow(clippy::disallowed_methods)] // the fleet's one wall-clock read, an input to every session
fn wall_anchor() -> (tokio::time::Instant, Duration) {
    let mono = tokio::time::Instant::now();
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (mono, wall)
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    mut rng: StdRng,
) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    while tasks.try_join_next().is_some() {}
                    if tasks.len() >= CONNECTIONS_MAX {
                        shared.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    let local_ip = stream.local_addr().map_or(listener_ip(&listener), |a| a.ip());
                    let conn_rng = StdRng::seed_from_u64(rng.gen());
                    let now = tokio::time::Instant::now();
                    let conn = Connection::new(Arc::clone(&shared), peer, local_ip, now, conn_rng);
                    tasks.spawn(conn.run(stream, shutdown.clone()));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    tasks.shutdown().await;
}

fn listener_ip(listener: &TcpListener) -> IpAddr {
    listener.local_addr().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip())
}

/// `camrec fake-cameras`: starts the fleet, prints one URL per camera, runs until Ctrl-C or
/// SIGTERM.
pub async fn run(args: FakeCamerasArgs) -> anyhow::Result<()> {
    let count = args.count;
    let fleet = FakeFleet::start(args).await?;
    for i in 0..count {
        println!("{}", fleet.url(i));
    }
    wait_for_signal().await?;
    tracing::info!(local_addr = %fleet.local_addr(), stats = ?fleet.stats(), "fake cameras stopping");
    fleet.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
