//! Wiring of one node: storage, Raft member, uploader, camera supervisor and admin API, in
//! start order, and the orderly shutdown (seal every camera, flush uploads until a deadline).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use camrec_cluster::http_net::HttpNetwork;
use camrec_cluster::node::ClusterNode;
use camrec_cluster_core::failure::FailureConfig;
use camrec_cluster_core::ids::{CameraId, Epoch};
use camrec_cluster_core::state::{Command, NodeInfo, NodeStatus};
use camrec_node_core::upload::UploadConfig;
use camrec_storage::buffer::SegmentBuffer;
use camrec_storage::object_store::{LocalDirStore, ObjectStore, S3Config, S3Store};
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::{Actor, ActorRef};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::camera::supervisor::{CameraSupervisor, SupervisorArgs, SupervisorMsg};
use crate::clock::{Clock, SystemClock};
use crate::config::{Backend, NodeConfig};
use crate::control::{Control, ProposeFailure};
use crate::leader;
use crate::node_ctx::NodeCtx;
use crate::status::StatusBoard;
use crate::uploader::{Uploader, UploaderArgs, UploaderMsg};
use camrec_cluster_core::duties::DutyConfig;

/// A started node.
pub struct RunningNode {
    pub ctx: Arc<NodeCtx>,
    pub cluster: Arc<ClusterNode>,
    pub control: Control,
    pub admin_addr: std::net::SocketAddr,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_join: JoinHandle<()>,
    uploader: ActorRef<UploaderMsg>,
    uploader_join: JoinHandle<()>,
    http: actix_web::dev::ServerHandle,
    http_task: JoinHandle<std::io::Result<()>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Bound on handover reports waiting to be proposed.
const HANDOVERS_QUEUED_MAX: usize = 65_536;

/// Proposes `HandoverReady` for incoming-owner cameras that sealed their first segment; retries
/// until committed or the handover is no longer pending (cancelled, node died).
async fn report_handovers(control: Control, mut rx: mpsc::Receiver<(CameraId, Epoch)>) {
    let me = control.cluster.id;
    while let Some((camera, epoch)) = rx.recv().await {
        loop {
            if !control.cluster.sm.lock().state.handover_pending(&camera, me, epoch) {
                break;
            }
            match control.propose(Command::HandoverReady { camera: camera.clone(), node: me, epoch }).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(%camera, error = %e, "reporting handover; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// The process-wide Prometheus recorder (metrics' recorder is global by design of the crate).
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().ok())
        .clone()
}

async fn open_store(cfg: &NodeConfig) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Ok(match cfg.storage.backend {
        Backend::Local => Arc::new(
            LocalDirStore::new(
                cfg.storage.local_dir.clone().unwrap_or_else(|| cfg.node.data_dir.join("objects")),
            )
            .context("opening local object store")?,
        ),
        Backend::S3 => {
            let s3 = &cfg.storage.s3;
            let mut c = S3Config::new(s3.bucket.clone(), s3.region.clone());
            c.endpoint = s3.endpoint.clone();
            c.force_path_style = s3.force_path_style;
            c.access_key_id = s3.access_key_id.clone();
            c.secret_access_key = s3.secret_access_key.clone();
            // The S3 store applies the prefix itself; keys handed to it are relative.
            c.prefix = cfg.storage.prefix.clone();
            let store = S3Store::new(c).await.context("configuring S3")?;
            // Probe once: a wrong bucket or missing credentials is a configuration error to
            // report now, not a stream of upload warnings later. An unreachable endpoint is not:
            // the node records and buffers until the store returns.
            match tokio::time::timeout(Duration::from_secs(10), store.list("", None, 1)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if !e.is_retryable() => {
                    anyhow::bail!("S3 bucket {:?} is not usable: {}", s3.bucket, first_line(&e.message))
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %first_line(&e.message), "S3 not reachable at start; buffering until it is")
                }
                Err(_) => tracing::warn!("S3 did not answer within 10 s at start; buffering until it does"),
            }
            Arc::new(store)
        }
    })
}

/// The first line of an error message, at most 300 characters (SDK errors nest pages of context).
pub fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or("").chars().take(300).collect()
}

fn os_seed() -> u64 {
    use rand::RngCore;
    rand::rngs::OsRng.next_u64()
}

impl RunningNode {
    pub async fn start(cfg: &NodeConfig) -> anyhow::Result<RunningNode> {
        let data = &cfg.node.data_dir;
        std::fs::create_dir_all(data).with_context(|| format!("creating data dir {}", data.display()))?;
        let (buffer, report) = {
            let dir = data.join("buffer");
            tokio::task::spawn_blocking(move || SegmentBuffer::open(dir))
                .await?
                .context("opening segment buffer")?
        };
        tracing::info!(?report, "segment buffer opened");
        let store = open_store(cfg).await?;

        let cluster = Arc::new(
            ClusterNode::open(
                cfg.node.id,
                &cfg.advertise_addr(),
                &data.join("raft"),
                &cfg.cluster.name,
                cfg.cluster.bootstrap,
                HttpNetwork::new(&cfg.cluster.name),
            )
            .await
            .context("starting Raft")?,
        );
        let control = Control::new(cluster.clone(), &cfg.cluster.name);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let (handovers_tx, handovers_rx) = mpsc::channel(HANDOVERS_QUEUED_MAX);
        let ctx = Arc::new(NodeCtx {
            node_id: cfg.node.id,
            clock: clock.clone(),
            buffer: Arc::new(buffer),
            store,
            prefix: match cfg.storage.backend {
                Backend::Local => cfg.storage.prefix.clone(),
                Backend::S3 => String::new(),
            },
            status: StatusBoard::default(),
            recorder_config: cfg.recorder.core_config(),
            frames_queued_max: cfg.recorder.frames_queued_max,
            session_group: Arc::new(retina::client::SessionGroup::default()),
            uploader: OnceLock::new(),
            handovers: handovers_tx,
            seed_base: os_seed(),
            storage_full: tokio::sync::watch::Sender::new(None),
        });

        let (uploader, uploader_join) = Actor::spawn(
            None,
            Uploader,
            UploaderArgs {
                ctx: ctx.clone(),
                config: UploadConfig {
                    concurrency_max: cfg.storage.upload_concurrency_max,
                    retry_base_ms: cfg.storage.upload_retry_base_ms,
                    retry_cap_ms: cfg.storage.upload_retry_cap_ms,
                },
                quota: cfg.storage.quota_config(),
                seed: os_seed(),
            },
        )
        .await
        .context("starting uploader")?;
        let _ = ctx.uploader.set(uploader.clone());

        // The API (and Raft RPC) must serve before joining: the leader replicates to us.
        let (heartbeats_tx, heartbeats_rx) = mpsc::channel(api::HEARTBEATS_QUEUED_MAX);
        let state = actix_web::web::Data::new(ApiState {
            ctx: ctx.clone(),
            cluster: cluster.clone(),
            control: control.clone(),
            metrics: metrics_handle(),
            buffer_quota_bytes: (cfg.storage.buffer_quota_bytes > 0)
                .then_some(cfg.storage.buffer_quota_bytes),
            heartbeats: heartbeats_tx,
        });
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new().app_data(state.clone()).configure(api::configure)
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(2)
        .bind(cfg.node.listen)
        .with_context(|| format!("binding the admin API to {}", cfg.node.listen))?;
        let admin_addr = *server.addrs().first().context("admin API bound no address")?;
        let server = server.run();
        let http = server.handle();
        let http_task = tokio::spawn(server);

        let mut tasks = Vec::new();
        let duties = DutyConfig {
            failure: FailureConfig {
                heartbeat_interval_ms: cfg.cluster.heartbeat_interval_ms,
                dead_after_ms: cfg.cluster.dead_after_ms,
            },
            voters_target: cfg.cluster.voters,
            rebalance_moves_max: cfg.cluster.rebalance_moves_max,
            rebalance_interval_ms: cfg.cluster.rebalance_interval_ms,
        };
        tasks.push(tokio::spawn(leader::run_duties(control.clone(), clock.clone(), duties, heartbeats_rx)));
        tasks.push(tokio::spawn(leader::run_heartbeats(
            control.clone(),
            Duration::from_millis(cfg.cluster.heartbeat_interval_ms),
        )));
        tasks.push(tokio::spawn(report_handovers(control.clone(), handovers_rx)));

        // Join (a fresh non-bootstrap node) or re-register (addresses may have changed).
        let info = NodeInfo {
            id: cfg.node.id,
            az: cfg.node.az.clone(),
            capacity_weight: cfg.node.capacity_weight,
            admin_addr: cfg.advertise_addr(),
            raft_addr: cfg.advertise_addr(),
        };
        let initialized = cluster.raft.is_initialized().await.map_err(|e| anyhow::anyhow!("raft: {e}"))?;
        if !initialized {
            tracing::info!(seeds = ?cfg.cluster.seeds, "joining the cluster");
            control.join(&cfg.cluster.seeds, &info).await?;
        } else {
            register(&control, info).await?;
        }

        let (supervisor, supervisor_join) =
            Actor::spawn(None, CameraSupervisor, SupervisorArgs { ctx: ctx.clone(), sm: cluster.sm.clone() })
                .await
                .context("starting camera supervisor")?;
        tracing::info!(%admin_addr, node = cfg.node.id, "node started");
        Ok(RunningNode {
            ctx,
            cluster,
            control,
            admin_addr,
            supervisor,
            supervisor_join,
            uploader,
            uploader_join,
            http,
            http_task,
            tasks,
        })
    }

    /// Hands this node's cameras to others (make-before-break) and waits until it owns none, or
    /// `timeout` passes. Skipped when no other node could take them.
    pub async fn drain_self(&self, timeout: Duration) {
        let me = self.ctx.node_id;
        if !self.cluster.sm.lock().state.has_other_active_node(me) {
            tracing::info!("no other active node: stopping without a drain");
            return;
        }
        if let Err(e) = self.control.propose(Command::Drain { node: me }).await {
            tracing::warn!(error = %e, "could not start the drain; stopping anyway");
            return;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let done = {
                let g = self.cluster.sm.lock();
                g.state.nodes().get(&me).is_some_and(|n| n.status == NodeStatus::Drained)
            };
            if done {
                tracing::info!("drained: all cameras handed over");
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("drain did not finish in time; stopping with cameras still assigned");
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Seals every camera's open segment, then uploads until the buffer is empty or
    /// `flush_deadline` passes (what is left stays buffered and resumes on the next start).
    pub async fn shutdown(self, flush_deadline: Duration) -> ShutdownReport {
        self.supervisor.stop(Some("shutdown".into()));
        let _ = self.supervisor_join.await;
        // Sealing runs in background tasks: give them a moment to land in the index.
        let started = tokio::time::Instant::now();
        let mut last_pending = u64::MAX;
        loop {
            let sealing = crate::status::Counters::get(&self.ctx.status.counters.seals_in_flight);
            let pending = self.ctx.buffer.stats().pending_segments + sealing;
            if pending == 0 || started.elapsed() >= flush_deadline {
                break;
            }
            if pending != last_pending {
                tracing::info!(pending, "flushing uploads before exit");
                last_pending = pending;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = self.ctx.buffer.stats();
        self.uploader.stop(Some("shutdown".into()));
        let _ = self.uploader_join.await;
        for task in &self.tasks {
            task.abort();
        }
        self.http.stop(true).await;
        let _ = self.http_task.await;
        self.cluster.shutdown().await;
        ShutdownReport { pending_segments: left.pending_segments, pending_bytes: left.pending_bytes }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ShutdownReport {
    pub pending_segments: u64,
    pub pending_bytes: u64,
}

/// How long a restarted member tries to re-register (and so catch its replica up) before it
/// starts recording from its possibly stale replica anyway (availability first).
const REGISTER_DEADLINE: Duration = Duration::from_secs(15);

/// Re-registers a restarted member (it may have new addresses, or have been declared down).
/// `propose` returns once the local replica applied the registration, so the camera supervisor
/// then starts from a caught-up table instead of briefly recording cameras that moved while
/// this node was away. If no leader answers in time, start anyway: recording what the local
/// replica says beats recording nothing, and duplicates are merged at read time.
async fn register(control: &Control, info: NodeInfo) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + REGISTER_DEADLINE;
    loop {
        match control.propose(Command::RegisterNode(info.clone())).await {
            Ok(_) => return Ok(()),
            Err(ProposeFailure::Fatal(m)) => anyhow::bail!("registering node: {m}"),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(error = %e, "no leader reachable: recording from the local replica until one is");
                return Ok(());
            }
            Err(e) => {
                tracing::info!(error = %e, "registering node; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
