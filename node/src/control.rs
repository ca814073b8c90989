//! The node's client side of the control plane: proposing commands (locally when this node
//! leads, otherwise forwarded to the leader), joining a cluster through its seeds, and sending
//! heartbeats to the leader. Shell code: it moves commands and answers; the cluster core and
//! openraft decide.

use std::sync::Arc;
use std::time::Duration;

use camrec_cluster::http_net::CLUSTER_HEADER;
use camrec_cluster::node::{ClusterNode, WriteErrorKind};
use camrec_cluster_core::codec;
use camrec_cluster_core::ids::NodeId;
use camrec_cluster_core::state::{Command, NodeInfo, Response};

use serde::{Deserialize, Serialize};

/// How long a proposal keeps retrying through an election before giving up (→ HTTP 503).
pub const PROPOSE_DEADLINE: Duration = Duration::from_secs(5);
/// Per-request timeout of forwarded proposals and joins.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Heartbeat request timeout (shorter than the interval, so one slow leader can't pile them up).
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(400);

/// Body of `POST /v1/internal/join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub cluster: String,
    pub info: NodeInfo,
}

/// Body of `POST /v1/internal/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub cluster: String,
    pub node: NodeId,
}

/// A committed command: its response and the log index it was committed at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub response: Response,
    pub index: u64,
}

/// Answer of `POST /v1/internal/propose`, codec-encoded.
pub type ProposeAnswer = Result<Committed, ProposeFailure>;

/// How long a proposer waits for its own replica to apply a forwarded write before answering.
const READ_YOUR_WRITE_WAIT: Duration = Duration::from_secs(3);

/// Why a proposal failed, by what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeFailure {
    /// No leader reachable within the deadline (election, partition): retry later.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The Raft core stopped on the leader.
    #[error("cluster failed: {0}")]
    Fatal(String),
}

/// Proposes commands and talks to the leader.
#[derive(Clone)]
pub struct Control {
    pub cluster: Arc<ClusterNode>,
    pub cluster_name: String,
    http: reqwest::Client,
}

impl Control {
    pub fn new(cluster: Arc<ClusterNode>, cluster_name: &str) -> Control {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .build()
            .expect("reqwest client with static settings");
        Control { cluster, cluster_name: cluster_name.to_string(), http }
    }

    /// The admin/RPC address of `node` from the Raft membership.
    pub fn addr_of(&self, node: NodeId) -> Option<String> {
        let m = self.cluster.raft.metrics().borrow().membership_config.clone();
        let addr = m.nodes().find(|(id, _)| **id == node).map(|(_, n)| n.addr.clone());
        addr
    }

    /// Commits `cmd`: locally when leader, else through the leader; retries through elections
    /// until [`PROPOSE_DEADLINE`]. Returns once this node's replica has applied it too (bounded
    /// wait), so a client reading from this node right after sees its write.
    pub async fn propose(&self, cmd: Command) -> ProposeAnswer {
        let committed = self.propose_inner(cmd).await?;
        if !self.cluster.wait_applied(committed.index, READ_YOUR_WRITE_WAIT).await {
            tracing::warn!(index = committed.index, "replica is slow to apply a committed write");
        }
        Ok(committed)
    }

    async fn propose_inner(&self, cmd: Command) -> ProposeAnswer {
        let deadline = tokio::time::Instant::now() + PROPOSE_DEADLINE;
        let mut last;
        loop {
            match self.cluster.write_indexed(cmd.clone()).await {
                Ok((response, index)) => return Ok(Committed { response, index }),
                Err(e) => match e.kind {
                    WriteErrorKind::Fatal => return Err(ProposeFailure::Fatal(e.message)),
                    WriteErrorKind::NotLeader { leader: Some(leader) } if leader != self.cluster.id => {
                        match self.forward(leader, &cmd).await {
                            Ok(Ok(r)) => return Ok(r),
                            Ok(Err(ProposeFailure::Fatal(m))) => return Err(ProposeFailure::Fatal(m)),
                            Ok(Err(ProposeFailure::Unavailable(m))) | Err(m) => last = m,
                        }
                    }
                    _ => last = e.message,
                },
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProposeFailure::Unavailable(format!(
                    "no leader committed the change within {}s ({last}); retry",
                    PROPOSE_DEADLINE.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    async fn forward(&self, leader: NodeId, cmd: &Command) -> Result<ProposeAnswer, String> {
        let addr = self.addr_of(leader).ok_or_else(|| format!("leader {leader} has no known address"))?;
        let body = codec::encode("propose", cmd).map_err(|e| e.to_string())?;
        let resp = self
            .http
            .post(format!("http://{addr}/v1/internal/propose"))
            .header(CLUSTER_HEADER, &self.cluster_name)
            .timeout(FORWARD_TIMEOUT)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("forwarding to leader {leader} at {addr}: {e}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("leader {leader} answered {status}: {}", String::from_utf8_lossy(&bytes)));
        }
        codec::decode("propose answer", &bytes).map_err(|e| e.to_string())
    }

    /// Sends one heartbeat to the current leader (no-op when this node leads or none is known).
    pub async fn heartbeat(&self) {
        let Some(leader) = self.cluster.raft.metrics().borrow().current_leader else { return };
        if leader == self.cluster.id {
            return;
        }
        let Some(addr) = self.addr_of(leader) else { return };
        let hb = Heartbeat { cluster: self.cluster_name.clone(), node: self.cluster.id };
        let Ok(body) = codec::encode("heartbeat", &hb) else { return };
        let _ = self
            .http
            .post(format!("http://{addr}/v1/internal/heartbeat"))
            .header(CLUSTER_HEADER, &self.cluster_name)
            .timeout(HEARTBEAT_TIMEOUT)
            .body(body)
            .send()
            .await;
    }

    /// Asks the seeds, in turn, to add this node to the cluster, until one accepts. A seed of
    /// another cluster is a configuration error and ends the attempt.
    pub async fn join(&self, seeds: &[String], info: &NodeInfo) -> anyhow::Result<()> {
        anyhow::ensure!(
            !seeds.is_empty(),
            "this node is not bootstrapping and has no cluster.seeds to join through"
        );
        let req = JoinRequest { cluster: self.cluster_name.clone(), info: info.clone() };
        let body = codec::encode("join", &req)?;
        let mut attempt = 0u32;
        loop {
            for seed in seeds {
                let sent = self
                    .http
                    .post(format!("http://{seed}/v1/internal/join"))
                    .header(CLUSTER_HEADER, &self.cluster_name)
                    .timeout(Duration::from_secs(15))
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => return Ok(()),
                    Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => {
                        let text = r.text().await.unwrap_or_default();
                        anyhow::bail!("seed {seed} refused the join: {text}");
                    }
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        tracing::info!(%seed, %status, %text, "join not accepted yet; retrying");
                    }
                    Err(e) => tracing::info!(%seed, error = %e, "seed unreachable; retrying"),
                }
            }
            attempt += 1;
            let delay_ms = (250u64 << attempt.min(4)).min(4_000);
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
    }
}

/// Checks the cluster-name header of an internal request.
pub fn same_cluster(req: &actix_web::HttpRequest, cluster_name: &str) -> bool {
    req.headers().get(CLUSTER_HEADER).and_then(|v| v.to_str().ok()) == Some(cluster_name)
}
