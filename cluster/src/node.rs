//! A running Raft member: openraft over the sled log store and the cluster state machine.
//!
//! [`ClusterNode::open`] opens the node's Raft storage under `{data}/raft/`, starts openraft and,
//! when asked to bootstrap a fresh store, initializes a single-voter cluster containing only this
//! node. Writes go through [`ClusterNode::write`], which maps openraft's errors onto
//! [`WriteError`] kinds a caller can act on (retry later, forward to the leader, give up).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use camrec_cluster_core::state::{Command, Response};
use camrec_storage::raft_log::SledLogStore;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};

use openraft::RaftNetworkFactory;

use crate::sm::StateMachine;
use crate::types::ProdConfig;

/// What went wrong with a write, by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteErrorKind {
    /// No leader right now (election in progress): retry shortly. HTTP 503.
    Unavailable,
    /// Another node leads; forward the write there.
    NotLeader { leader: Option<u64> },
    /// The Raft core stopped (storage failure); the node must restart.
    Fatal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WriteError {
    pub kind: WriteErrorKind,
    pub message: String,
}

/// Error opening the node's Raft storage.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("opening raft log store at {path}: {source}")]
    Log { path: String, source: sled::Error },
    #[error("opening state machine: {0}")]
    StateMachine(String),
    #[error("starting raft: {0}")]
    Raft(String),
    #[error("{0}")]
    WrongIdentity(String),
}

/// The file recording which cluster and node id a data dir belongs to.
const IDENTITY_FILE: &str = "identity";

/// A data dir is bound to one cluster name and node id on first start; starting it with another
/// (a copied disk, a config mix-up) would corrupt two clusters' logs, so it is refused.
fn check_identity(dir: &Path, id: u64, cluster_name: &str) -> Result<(), OpenError> {
    let path = dir.join(IDENTITY_FILE);
    let want = format!("cluster={cluster_name}\nnode={id}\n");
    match std::fs::read_to_string(&path) {
        Ok(found) if found == want => Ok(()),
        Ok(found) => Err(OpenError::WrongIdentity(format!(
            "data dir {} belongs to {}; this node is configured as cluster={cluster_name} node={id}",
            dir.display(),
            found.trim().replace('\n', " ")
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join("identity.tmp");
            let write = || -> std::io::Result<()> {
                std::fs::write(&tmp, &want)?;
                std::fs::File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(dir)?.sync_all()
            };
            write().map_err(|e| OpenError::StateMachine(format!("writing {}: {e}", path.display())))
        }
        Err(e) => Err(OpenError::StateMachine(format!("reading {}: {e}", path.display()))),
    }
}

/// Raft timing for production nodes.
pub fn raft_config(cluster_name: &str) -> Config {
    Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: 250,
        election_timeout_min: 1_000,
        election_timeout_max: 2_000,
        // A snapshot every 20k entries keeps restart replay short; 180k cameras snapshot in ~1 s.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(20_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Config::default()
    }
}

/// This node's Raft member.
pub struct ClusterNode {
    pub id: u64,
    pub raft: Raft<ProdConfig>,
    pub sm: StateMachine<ProdConfig>,
}

impl ClusterNode {
    /// Opens the Raft storage under `dir` and starts openraft over `network`. With
    /// `bootstrap_single` and an uninitialized store, makes this node the sole voter of a new
    /// cluster. Refuses a data dir that belongs to another cluster.
    pub async fn open<N: RaftNetworkFactory<ProdConfig>>(
        id: u64,
        raft_addr: &str,
        dir: &Path,
        cluster_name: &str,
        bootstrap_single: bool,
        network: N,
    ) -> Result<ClusterNode, OpenError> {
        std::fs::create_dir_all(dir).map_err(|e| OpenError::StateMachine(e.to_string()))?;
        check_identity(dir, id, cluster_name)?;
        let log_path = dir.join("log");
        let db = sled::Config::new()
            .path(&log_path)
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(|source| OpenError::Log { path: log_path.display().to_string(), source })?;
        let log = SledLogStore::<ProdConfig>::open(&db)
            .map_err(|source| OpenError::Log { path: log_path.display().to_string(), source })?;
        let sm =
            StateMachine::open(Some(&dir.join("sm"))).map_err(|e| OpenError::StateMachine(e.to_string()))?;
        let config =
            Arc::new(raft_config(cluster_name).validate().map_err(|e| OpenError::Raft(e.to_string()))?);
        let raft = Raft::new(id, config, network, log, sm.clone())
            .await
            .map_err(|e| OpenError::Raft(e.to_string()))?;
        if bootstrap_single && !raft.is_initialized().await.map_err(|e| OpenError::Raft(e.to_string()))? {
            let members = BTreeMap::from([(id, BasicNode::new(raft_addr))]);
            raft.initialize(members).await.map_err(|e| OpenError::Raft(e.to_string()))?;
        }
        Ok(ClusterNode { id, raft, sm })
    }

    /// Waits until some node is leader, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<u64> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(leader) = rx.borrow().current_leader {
                return Some(leader);
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return None;
            }
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Proposes `cmd` and waits until it is committed and applied.
    pub async fn write(&self, cmd: Command) -> Result<Response, WriteError> {
        self.write_indexed(cmd).await.map(|(r, _)| r)
    }

    /// Waits until this replica has applied log `index` (or `timeout` passes; returns false).
    /// After a forwarded write, this makes the node's own reads see the write.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.sm.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if *rx.borrow_and_update() >= index {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.map_or(true, |r| r.is_err()) {
                return *rx.borrow() >= index;
            }
        }
    }

    /// Like [`ClusterNode::write`], also returning the log index the command was committed at.
    pub async fn write_indexed(&self, cmd: Command) -> Result<(Response, u64), WriteError> {
        match self.raft.client_write(cmd).await {
            Ok(r) => Ok((r.data, r.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(WriteError {
                kind: match f.leader_id {
                    Some(leader) => WriteErrorKind::NotLeader { leader: Some(leader) },
                    None => WriteErrorKind::Unavailable,
                },
                message: match f.leader_id {
                    Some(leader) => format!("node {} is not the leader; node {leader} is", self.id),
                    None => "no Raft leader right now (election in progress); retry shortly".to_string(),
                },
            }),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(WriteError { kind: WriteErrorKind::Unavailable, message: e.to_string() })
            }
            Err(RaftError::Fatal(e)) => {
                Err(WriteError { kind: WriteErrorKind::Fatal, message: e.to_string() })
            }
        }
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use camrec_cluster_core::ids::CameraId;
    use camrec_cluster_core::state::{CameraSpec, NodeInfo, Transport};

    use super::*;

    fn cam(i: u32) -> CameraSpec {
        CameraSpec {
            id: CameraId::new(format!("cam-{i}")).unwrap(),
            url: format!("rtsp://127.0.0.1:8554/cam/{i}"),
            username: None,
            password: Some("secret".into()),
            transport: Transport::Tcp,
            enabled: true,
            labels: BTreeMap::new(),
            bitrate_kbps: 1000,
        }
    }

    fn info() -> NodeInfo {
        NodeInfo {
            id: 1,
            az: None,
            capacity_weight: 1,
            admin_addr: "127.0.0.1:8080".into(),
            raft_addr: "127.0.0.1:8080".into(),
        }
    }

    async fn open(dir: &Path) -> ClusterNode {
        let node =
            ClusterNode::open(1, "127.0.0.1:8080", dir, "test", true, crate::network::NoPeers).await.unwrap();
        assert_eq!(node.wait_for_leader(Duration::from_secs(10)).await, Some(1));
        node
    }

    #[tokio::test]
    async fn single_voter_survives_restart_from_log_and_from_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let node = open(dir.path()).await;
        node.write(Command::RegisterNode(info())).await.unwrap();
        let r = node
            .write(Command::PutCameras { cameras: (0..10).map(cam).collect(), replace: false })
            .await
            .unwrap();
        assert_eq!((r.result, r.created), (None, 10));
        let before = node.sm.lock().state.clone();
        assert_eq!(before.cameras_owned_by(1).count(), 10);
        node.shutdown().await;
        drop(node);

        // Restart: the state machine is rebuilt by replaying the sled log.
        let node = open(dir.path()).await;
        // Wait for the replay (the leader's blank entry commits after it).
        node.write(Command::NodeUp { node: 1 }).await.unwrap();
        assert_eq!(node.sm.lock().state.cameras(), before.cameras());

        // Snapshot + purge, restart again: the state comes from the persisted snapshot.
        node.raft.trigger().snapshot().await.unwrap();
        let mut rx = node.raft.metrics();
        while rx.borrow().snapshot.is_none() {
            rx.changed().await.unwrap();
        }
        let snap_index = rx.borrow().snapshot.unwrap().index;
        node.raft.trigger().purge_log(snap_index).await.unwrap();
        node.shutdown().await;
        drop(node);
        let node = open(dir.path()).await;
        assert_eq!(node.sm.lock().state.cameras(), before.cameras());
        node.shutdown().await;
    }

    #[tokio::test]
    async fn a_data_dir_of_another_cluster_or_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path()).await.shutdown().await;
        let other =
            ClusterNode::open(1, "127.0.0.1:8080", dir.path(), "other", true, crate::network::NoPeers).await;
        assert!(matches!(other, Err(OpenError::WrongIdentity(_))));
        let other =
            ClusterNode::open(2, "127.0.0.1:8080", dir.path(), "test", true, crate::network::NoPeers).await;
        let msg = other.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("cluster=test node=1"), "{msg}");
    }

    #[tokio::test]
    async fn refused_commands_are_reported_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let node = open(dir.path()).await;
        node.write(Command::PutCameras { cameras: vec![cam(1)], replace: false }).await.unwrap();
        let r = node.write(Command::PutCameras { cameras: vec![cam(1)], replace: false }).await.unwrap();
        assert!(r.result.is_some(), "duplicate create must be refused");
        node.shutdown().await;
    }
}
