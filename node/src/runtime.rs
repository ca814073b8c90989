//! Wiring of one node: storage, Raft member, uploader, camera supervisor and admin API, in
//! start order, and the orderly shutdown (seal every camera, flush uploads until a deadline).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use camrec_cluster::node::ClusterNode;
use camrec_cluster_core::state::{Command, NodeInfo};
use camrec_node_core::upload::UploadConfig;
use camrec_storage::buffer::SegmentBuffer;
use camrec_storage::object_store::{LocalDirStore, ObjectStore, S3Config, S3Store};
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::camera::supervisor::{CameraSupervisor, SupervisorArgs, SupervisorMsg};
use crate::clock::{Clock, SystemClock};
use crate::config::{Backend, NodeConfig};
use crate::node_ctx::NodeCtx;
use crate::status::StatusBoard;
use crate::uploader::{Uploader, UploaderArgs, UploaderMsg};

/// A started node.
pub struct RunningNode {
    pub ctx: Arc<NodeCtx>,
    pub cluster: Arc<ClusterNode>,
    pub admin_addr: std::net::SocketAddr,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_join: JoinHandle<()>,
    uploader: ActorRef<UploaderMsg>,
    uploader_join: JoinHandle<()>,
    http: actix_web::dev::ServerHandle,
    http_task: JoinHandle<std::io::Result<()>>,
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
            LocalDirStore::new(cfg.node.data_dir.join("objects")).context("opening local object store")?,
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
            Arc::new(S3Store::new(c).await.context("configuring S3")?)
        }
    })
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
            )
            .await
            .context("starting Raft")?,
        );
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let ctx = Arc::new(NodeCtx {
            node_id: cfg.node.id,
            clock,
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
            seed_base: os_seed(),
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
                seed: os_seed(),
            },
        )
        .await
        .context("starting uploader")?;
        let _ = ctx.uploader.set(uploader.clone());

        // Join: make sure the replicated table knows this node (it is where cameras get placed).
        register(&cluster, cfg).await?;

        let (supervisor, supervisor_join) =
            Actor::spawn(None, CameraSupervisor, SupervisorArgs { ctx: ctx.clone(), sm: cluster.sm.clone() })
                .await
                .context("starting camera supervisor")?;

        let state = actix_web::web::Data::new(ApiState {
            ctx: ctx.clone(),
            cluster: cluster.clone(),
            metrics: metrics_handle(),
            buffer_quota_bytes: None,
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
        tracing::info!(%admin_addr, node = cfg.node.id, "node started");
        Ok(RunningNode {
            ctx,
            cluster,
            admin_addr,
            supervisor,
            supervisor_join,
            uploader,
            uploader_join,
            http,
            http_task,
        })
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

async fn register(cluster: &ClusterNode, cfg: &NodeConfig) -> anyhow::Result<()> {
    let info = NodeInfo {
        id: cfg.node.id,
        az: cfg.node.az.clone(),
        capacity_weight: cfg.node.capacity_weight,
        admin_addr: cfg.advertise_addr(),
        raft_addr: cfg.advertise_addr(),
    };
    if cluster.sm.lock().state.nodes().get(&cfg.node.id).is_some_and(|n| n.info == info) {
        return Ok(());
    }
    cluster.wait_for_leader(Duration::from_secs(30)).await.context("no Raft leader within 30 s")?;
    for attempt in 1..=50 {
        match cluster.write(Command::RegisterNode(info.clone())).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 50 => {
                tracing::info!(error = %e, "registering node; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(anyhow::anyhow!("registering node: {e}")),
        }
    }
    Ok(())
}
