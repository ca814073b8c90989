//! `camrec dev`: the embedded default. N built-in test cameras, one node (single-voter Raft),
//! the local object store under `DATA/objects`, the admin API; a live progress line and a
//! summary on exit. Restarting on the same `--data` resumes pending uploads.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use camrec_cluster_core::ids::CameraId;
use camrec_cluster_core::state::{CameraSpec, Command, Transport};

use crate::config::NodeConfig;
use crate::fake::{FakeCamerasArgs, FakeFleet};
use crate::runtime::RunningNode;
use crate::status::Counters;

/// Label marking the cameras `camrec dev` registered itself.
const DEV_LABEL: (&str, &str) = ("camrec-dev", "test-camera");
/// How long an exiting `dev` keeps uploading what is still buffered.
const FLUSH_DEADLINE: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug, Clone)]
pub struct DevArgs {
    /// Number of built-in test cameras (0: record only cameras added through the API).
    #[arg(long, default_value_t = 4)]
    pub cameras: usize,
    /// Data directory (buffer, Raft state, objects/).
    #[arg(long, default_value = "camrec-data")]
    pub data: PathBuf,
    /// Admin API address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Stop by itself after this long (e.g. `60s`, `5m`), flushing the buffer first.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Built-in clip for the test cameras: h264 or h265.
    #[arg(long, default_value = "h264")]
    pub clip: String,
    /// Target segment duration in milliseconds.
    #[arg(long)]
    pub segment_ms: Option<u32>,
    /// Number of node processes: 1 runs in this process; K > 1 starts K `camrec node`
    /// processes on consecutive ports from --listen (try `kill -9` on one).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.nodes >= 1, "--nodes must be at least 1");
    if args.nodes > 1 {
        return crate::dev_cluster::run(args).await;
    }
    let mut cfg = NodeConfig::default();
    cfg.node.data_dir = args.data.clone();
    cfg.node.listen = args.listen;
    cfg.cluster.bootstrap = true;
    if let Some(ms) = args.segment_ms {
        cfg.recorder.segment_target_ms = ms;
    }
    cfg.validate()?;

    let fleet = start_test_cameras(&args).await?;

    let node = RunningNode::start(&cfg).await?;
    register_test_cameras(&node, fleet.as_ref(), args.cameras).await?;

    eprintln!(
        "camrec dev: {} test camera(s){}, admin API http://{}, data {}",
        args.cameras,
        fleet
            .as_ref()
            .map(|f| format!(" at rtsp://{}/cam/0 … /cam/{}", f.local_addr(), args.cameras - 1))
            .unwrap_or_default(),
        node.admin_addr,
        args.data.display()
    );
    eprintln!("  try: curl -s http://{}/v1/cameras | jq", node.admin_addr);

    let started = tokio::time::Instant::now();
    let tty = std::io::stderr().is_terminal();
    let stop = wait_for_stop(args.duration);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut lines = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = tick.tick() => {
                lines += 1;
                let line = progress_line(&node, started.elapsed());
                if tty {
                    eprint!("\r{line}\x1b[K");
                    let _ = std::io::stderr().flush();
                } else if lines.is_multiple_of(5) {
                    eprintln!("{line}");
                }
            }
        }
    }
    if tty {
        eprintln!();
    }
    eprintln!(
        "camrec dev: stopping — sealing open segments and flushing uploads (up to {}s)",
        FLUSH_DEADLINE.as_secs()
    );
    let ctx = node.ctx.clone();
    let report = node.shutdown(FLUSH_DEADLINE).await;
    if let Some(fleet) = fleet {
        fleet.shutdown().await;
    }
    let c = &ctx.status.counters;
    eprintln!(
        "camrec dev: summary after {:.0}s: segments sealed {}, uploaded {} ({}), upload failures {}, buffer errors {}, still buffered {} ({}) — resumes on the next start with --data {}",
        started.elapsed().as_secs_f64(),
        Counters::get(&c.segments_sealed),
        Counters::get(&c.segments_uploaded),
        human_bytes(Counters::get(&c.bytes_uploaded)),
        Counters::get(&c.upload_failures),
        Counters::get(&c.buffer_errors),
        report.pending_segments,
        human_bytes(report.pending_bytes),
        args.data.display(),
    );
    Ok(())
}

/// The built-in test cameras on an ephemeral loopback port (none with `--cameras 0`).
pub async fn start_test_cameras(args: &DevArgs) -> anyhow::Result<Option<FakeFleet>> {
    if args.cameras == 0 {
        return Ok(None);
    }
    let fake = FakeCamerasArgs {
        count: args.cameras,
        listen: "127.0.0.1:0".parse().expect("literal"),
        clip: args.clip.clone(),
        ..FakeCamerasArgs::default()
    };
    Ok(Some(FakeFleet::start(fake).await.context("starting the test cameras")?))
}

async fn register_test_cameras(
    node: &RunningNode,
    fleet: Option<&FakeFleet>,
    count: usize,
) -> anyhow::Result<()> {
    let mut cameras = Vec::new();
    if let Some(fleet) = fleet {
        for i in 0..count {
            cameras.push(CameraSpec {
                id: CameraId::new(format!("test-{i}")).expect("valid id"),
                url: fleet.url(i),
                username: None,
                password: None,
                transport: Transport::Tcp,
                enabled: true,
                labels: BTreeMap::from([(DEV_LABEL.0.to_string(), DEV_LABEL.1.to_string())]),
                bitrate_kbps: 500,
            });
        }
    }
    // Test cameras of an earlier, larger run point at a port that no longer serves: remove them.
    let stale: Vec<CameraId> = {
        let g = node.cluster.sm.lock();
        g.state
            .cameras()
            .values()
            .filter(|c| c.spec.labels.get(DEV_LABEL.0).map(String::as_str) == Some(DEV_LABEL.1))
            .filter(|c| !cameras.iter().any(|n| n.id == c.spec.id))
            .map(|c| c.spec.id.clone())
            .collect()
    };
    for id in stale {
        node.cluster.write(Command::RemoveCamera { id }).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if !cameras.is_empty() {
        let r = node
            .cluster
            .write(Command::PutCameras { cameras, replace: true })
            .await
            .map_err(|e| anyhow::anyhow!("registering test cameras: {e}"))?;
        if let Some(e) = r.result {
            anyhow::bail!("registering test cameras: {e}");
        }
    }
    Ok(())
}

fn progress_line(node: &RunningNode, elapsed: Duration) -> String {
    let (recording, total) = node.ctx.status.recording_count();
    let c = &node.ctx.status.counters;
    let buffer = node.ctx.buffer.stats();
    format!(
        "[{:>5}s] cameras recording {recording}/{total} | segments sealed {} uploaded {} pending {} | recorded {} uploaded {}",
        elapsed.as_secs(),
        Counters::get(&c.segments_sealed),
        Counters::get(&c.segments_uploaded),
        buffer.pending_segments,
        human_bytes(Counters::get(&c.bytes_recorded)),
        human_bytes(Counters::get(&c.bytes_uploaded)),
    )
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Why the process is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Ctrl-C / SIGINT: seal and flush, no drain.
    Interrupt,
    /// SIGTERM (orchestrator, ASG lifecycle): drain first.
    Terminate,
    /// `--duration` elapsed.
    Timer,
}

/// Resolves on Ctrl-C, SIGTERM, or after `duration`.
pub async fn wait_for_stop(duration: Option<Duration>) -> StopReason {
    let timer = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => StopReason::Interrupt,
        _ = term => StopReason::Terminate,
        _ = timer => StopReason::Timer,
    }
}
