//! The simulated network: openraft RPCs and failure-detector heartbeats between nodes of one
//! process, with seeded per-message latency and loss, directed link cuts and nodes that are down
//! (absent). A Raft RPC is delivered by calling the target's `Raft` handle after a virtual-time
//! delay; its response travels back with its own delay and its own chance of loss.
//!
//! Every random draw comes from one ChaCha stream, in the order the single runtime thread sends
//! messages, so a seed fixes every message's fate.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;

use crate::sim_rt::{SimConfig, SimRaft};

type NodeId = u64;

/// Bound on heartbeats queued at one node's leader duties (a full queue drops, like a busy server).
pub const HEARTBEATS_QUEUED_MAX: usize = 4_096;

/// Network behaviour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetParams {
    /// One-way latency, uniform in `[latency_us_min, latency_us_max]`.
    pub latency_us_min: u64,
    pub latency_us_max: u64,
    /// Chance that a message (request and response independently) is lost.
    pub loss: f64,
}

impl Default for NetParams {
    fn default() -> NetParams {
        NetParams { latency_us_min: 200, latency_us_max: 2_000, loss: 0.001 }
    }
}

/// A live node as the network sees it.
struct Endpoint {
    raft: SimRaft,
    heartbeats: mpsc::Sender<NodeId>,
}

/// Message counters, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetStats {
    pub rpcs: u64,
    pub heartbeats: u64,
    pub lost: u64,
    pub refused: u64,
}

struct NetInner {
    rng: ChaCha8Rng,
    params: NetParams,
    endpoints: BTreeMap<NodeId, Endpoint>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    stats: NetStats,
}

/// Handle on the simulated network. Clones share it.
#[derive(Clone)]
pub struct SimNet {
    inner: Arc<Mutex<NetInner>>,
}

enum Fate {
    /// The target is down: refused after one latency.
    Refused {
        delay: Duration,
    },
    /// The request never arrives.
    Lost,
    Deliver {
        request: Duration,
        response: Duration,
        response_lost: bool,
    },
}

fn io_error(kind: std::io::ErrorKind, text: &'static str) -> std::io::Error {
    std::io::Error::new(kind, text)
}

impl SimNet {
    pub fn new(seed: u64, params: NetParams) -> SimNet {
        assert!(params.latency_us_min <= params.latency_us_max && (0.0..=1.0).contains(&params.loss));
        SimNet {
            inner: Arc::new(Mutex::new(NetInner {
                rng: ChaCha8Rng::seed_from_u64(seed),
                params,
                endpoints: BTreeMap::new(),
                cut: BTreeSet::new(),
                stats: NetStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetInner> {
        self.inner.lock().expect("net lock poisoned")
    }

    /// Brings `id` up: RPCs reach `raft`, heartbeats go to `heartbeats`.
    pub fn attach(&self, id: NodeId, raft: SimRaft, heartbeats: mpsc::Sender<NodeId>) {
        self.lock().endpoints.insert(id, Endpoint { raft, heartbeats });
    }

    /// Takes `id` off the network (crash): everything sent to it is refused.
    pub fn detach(&self, id: NodeId) {
        self.lock().endpoints.remove(&id);
    }

    /// Cuts (or heals) the directed link `from → to`.
    pub fn set_cut(&self, from: NodeId, to: NodeId, cut: bool) {
        let mut g = self.lock();
        if cut {
            g.cut.insert((from, to));
        } else {
            g.cut.remove(&(from, to));
        }
    }

    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    fn latency(g: &mut NetInner) -> Duration {
        let (lo, hi) = (g.params.latency_us_min, g.params.latency_us_max);
        Duration::from_micros(g.rng.gen_range(lo..=hi))
    }

    fn fate(&self, from: NodeId, to: NodeId) -> Fate {
        let mut g = self.lock();
        g.stats.rpcs += 1;
        // Always draw the same numbers, whatever the outcome, so one fate does not shift the next.
        let request = Self::latency(&mut g);
        let response = Self::latency(&mut g);
        let loss = g.params.loss;
        let request_lost = g.rng.gen_bool(loss);
        let response_lost = g.rng.gen_bool(loss);
        if !g.endpoints.contains_key(&to) {
            g.stats.refused += 1;
            Fate::Refused { delay: request }
        } else if request_lost || g.cut.contains(&(from, to)) {
            g.stats.lost += 1;
            Fate::Lost
        } else {
            let response_lost = response_lost || g.cut.contains(&(to, from));
            if response_lost {
                g.stats.lost += 1;
            }
            Fate::Deliver { request, response, response_lost }
        }
    }

    fn raft_of(&self, id: NodeId) -> Option<SimRaft> {
        self.lock().endpoints.get(&id).map(|e| e.raft.clone())
    }

    /// Sends a failure-detector heartbeat `from → to`; fire and forget.
    pub fn send_heartbeat(&self, from: NodeId, to: NodeId) {
        let delay = {
            let mut g = self.lock();
            g.stats.heartbeats += 1;
            let delay = Self::latency(&mut g);
            let loss = g.params.loss;
            if g.rng.gen_bool(loss) || g.cut.contains(&(from, to)) {
                g.stats.lost += 1;
                return;
            }
            delay
        };
        let net = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let tx = net.lock().endpoints.get(&to).map(|e| e.heartbeats.clone());
            // Down on arrival, or its queue is full: the heartbeat is gone.
            if let Some(tx) = tx {
                let _ = tx.try_send(from);
            }
        });
    }

    /// One RPC: decide its fate, wait, call the target's Raft, wait, answer.
    async fn rpc<T, E, F, Fut>(
        &self,
        from: NodeId,
        to: NodeId,
        ttl: Duration,
        call: F,
    ) -> Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        F: FnOnce(SimRaft) -> Fut,
        Fut: Future<Output = Result<T, RaftError<NodeId, E>>>,
        E: std::error::Error,
    {
        let refused = || {
            let e = io_error(std::io::ErrorKind::ConnectionRefused, "node down");
            RPCError::Unreachable(Unreachable::new(&e))
        };
        // openraft wraps every RPC in a timeout of `ttl`; a lost message is silence until then.
        let silence = || async move {
            tokio::time::sleep(ttl + Duration::from_millis(1)).await;
            RPCError::Network(NetworkError::new(&io_error(std::io::ErrorKind::TimedOut, "message lost")))
        };
        match self.fate(from, to) {
            Fate::Refused { delay } => {
                tokio::time::sleep(delay).await;
                Err(refused())
            }
            Fate::Lost => Err(silence().await),
            Fate::Deliver { request, response, response_lost } => {
                tokio::time::sleep(request).await;
                let Some(raft) = self.raft_of(to) else { return Err(refused()) };
                let answer = call(raft).await;
                if response_lost {
                    return Err(silence().await);
                }
                tokio::time::sleep(response).await;
                match answer {
                    Ok(v) => Ok(v),
                    Err(RaftError::Fatal(_)) => Err(refused()),
                    Err(e) => Err(RPCError::RemoteError(RemoteError::new(to, e))),
                }
            }
        }
    }
}

/// openraft's per-node network factory.
pub struct NetFactory {
    pub from: NodeId,
    pub net: SimNet,
}

impl RaftNetworkFactory<SimConfig> for NetFactory {
    type Network = NetClient;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> NetClient {
        NetClient { from: self.from, to: target, net: self.net.clone() }
    }
}

/// openraft's connection from one node to another.
pub struct NetClient {
    from: NodeId,
    to: NodeId,
    net: SimNet,
}

impl RaftNetwork<SimConfig> for NetClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<SimConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.net
            .rpc(self.from, self.to, option.hard_ttl(), |r| async move { r.append_entries(rpc).await })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<SimConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.net
            .rpc(self.from, self.to, option.hard_ttl(), |r| async move { r.install_snapshot(rpc).await })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.net.rpc(self.from, self.to, option.hard_ttl(), |r| async move { r.vote(rpc).await }).await
    }
}
