//! The simulated world: N camrec nodes in one process on one seeded, virtual-time runtime.
//!
//! A node is the real openraft (`TypeConfig<SimRuntime>`) over the simulated disk
//! ([`crate::store`]) and network ([`crate::net`]), plus the shells the `camrec` node runs
//! around its replica, rebuilt here without IO:
//! - the heartbeat sender: every `heartbeat_interval_ms` (virtual) a heartbeat to the current
//!   leader through the simulated network (a seeded phase per node, so nodes do not tick in step);
//! - the leader duties, mirroring `node/src/leader.rs`: heartbeats feed the production
//!   [`FailureDetector`]; the leader proposes its `NodeDown`/`NodeUp`, the voter autopilot's next
//!   voter set ([`plan_voters`] → `change_membership`) and, when [`rebalance_needed`], a bounded
//!   `Rebalance` round;
//! - the data plane's change consumer: drains the state machine's change feed (recording is
//!   not simulated yet);
//! - a metrics watcher that traces the node's Raft role, term and leader.
//!
//! A crash takes the node off the network, stops its tasks and shuts its Raft down; its
//! [`Disk`] stays. A restart reboots the disk (snapshot + log replay) and starts everything again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use camrec_cluster::sm::StateMachine;
use camrec_cluster_core::duties::{Duty, DutyConfig, LeaderDuties, Membership};
use camrec_cluster_core::failure::FailureConfig;
use camrec_cluster_core::state::{Command, NodeInfo, Response};
use openraft::{BasicNode, ServerState};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::net::{NetFactory, NetParams, SimNet, HEARTBEATS_QUEUED_MAX};
use crate::sim_rt::{SimConfig, SimRaft};
use crate::store::Disk;
use crate::trace::Trace;

pub type NodeId = u64;

/// How long a world-level write (bootstrap, cameras) retries before the run fails.
const WRITE_DEADLINE: Duration = Duration::from_secs(60);
/// Period of the leader-duty loop (as in `node/src/leader.rs`).
const DUTY_TICK: Duration = Duration::from_millis(100);

/// What the world is made of.
#[derive(Debug, Clone)]
pub struct WorldConfig {
    pub nodes: u64,
    /// Raft voters (the rest are learners).
    pub voters: usize,
    pub net: NetParams,
    pub failure: FailureConfig,
    pub rebalance_moves_max: u32,
    pub rebalance_interval_ms: u64,
}

impl WorldConfig {
    /// Production settings (design.md §4) for `nodes` nodes.
    pub fn new(nodes: u64) -> WorldConfig {
        WorldConfig {
            nodes,
            voters: 3,
            net: NetParams::default(),
            failure: FailureConfig::default(),
            rebalance_moves_max: 1_000,
            rebalance_interval_ms: 5_000,
        }
    }
}

struct Running {
    raft: SimRaft,
    sm: StateMachine<SimConfig>,
    tasks: Vec<JoinHandle<()>>,
}

/// The nodes, their disks and the network.
pub struct World {
    config: WorldConfig,
    raft_config: Arc<openraft::Config>,
    pub net: SimNet,
    pub trace: Trace,
    rng: ChaCha8Rng,
    disks: BTreeMap<NodeId, Disk>,
    running: BTreeMap<NodeId, Running>,
    /// Highest Raft term any node has seen.
    max_term: Arc<AtomicU64>,
}

impl World {
    /// Creates the world; call inside the simulation runtime.
    pub fn new(config: WorldConfig, seed: u64, trace: Trace) -> World {
        assert!(config.nodes >= 1 && config.voters >= 1);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let net = SimNet::new(rng.gen(), config.net);
        // The production Raft timing (heartbeat 250 ms, election timeout 1-2 s, snapshots).
        let raft_config =
            Arc::new(camrec_cluster::node::raft_config("sim").validate().expect("production raft config"));
        World {
            config,
            raft_config,
            net,
            trace,
            rng,
            disks: BTreeMap::new(),
            running: BTreeMap::new(),
            max_term: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn config(&self) -> &WorldConfig {
        &self.config
    }

    pub fn running_ids(&self) -> BTreeSet<NodeId> {
        self.running.keys().copied().collect()
    }

    pub fn raft(&self, id: NodeId) -> Option<SimRaft> {
        self.running.get(&id).map(|r| r.raft.clone())
    }

    pub fn sm(&self, id: NodeId) -> Option<StateMachine<SimConfig>> {
        self.running.get(&id).map(|r| r.sm.clone())
    }

    /// Highest Raft term seen by any node (each election bumps it at least once).
    pub fn max_term(&self) -> u64 {
        self.max_term.load(Ordering::Relaxed)
    }

    /// Starts node `id` from its disk (a blank one the first time).
    pub async fn start_node(&mut self, id: NodeId) {
        assert!(!self.running.contains_key(&id), "n{id} already running");
        let disk = self.disks.entry(id).or_default();
        let sm = disk.sm.clone();
        let network = NetFactory { from: id, net: self.net.clone() };
        let raft = SimRaft::new(id, self.raft_config.clone(), network, disk.log.clone(), sm.clone())
            .await
            .expect("openraft starts on the in-memory disk");
        let (hb_tx, hb_rx) = mpsc::channel(HEARTBEATS_QUEUED_MAX);
        self.net.attach(id, raft.clone(), hb_tx);
        let phase =
            Duration::from_micros(self.rng.gen_range(0..self.config.failure.heartbeat_interval_ms * 1_000));
        let tasks = vec![
            tokio::spawn(watch_metrics(id, raft.clone(), self.trace.clone(), self.max_term.clone())),
            tokio::spawn(send_heartbeats(id, raft.clone(), self.net.clone(), self.config.failure, phase)),
            tokio::spawn(run_duties(
                id,
                raft.clone(),
                sm.clone(),
                self.trace.clone(),
                self.config.clone(),
                hb_rx,
            )),
            tokio::spawn(drain_changes(sm.clone())),
        ];
        self.trace.event(format!("n{id} started"));
        self.running.insert(id, Running { raft, sm, tasks });
    }

    /// Crashes `id`: off the network, tasks stopped, Raft shut down; the disk is kept.
    pub async fn crash(&mut self, id: NodeId) {
        let node = self.running.remove(&id).expect("crashing a running node");
        self.trace.event(format!("n{id} crashed"));
        self.net.detach(id);
        for task in &node.tasks {
            task.abort();
        }
        // An error here means Raft had already stopped; a crash does not care.
        let _ = node.raft.shutdown().await;
    }

    /// Restarts a crashed node from its disk (snapshot, then log replay).
    pub async fn restart(&mut self, id: NodeId) {
        self.disks.get_mut(&id).expect("restarting a node that ran before").reboot().await;
        self.trace.event(format!("n{id} restarting from disk"));
        self.start_node(id).await;
    }

    /// Boots the cluster: starts every node, node 1 initializes alone, the others join as
    /// learners, the first `voters` become voters, every node registers (`RegisterNode`).
    pub async fn bootstrap(&mut self) -> anyhow::Result<()> {
        let ids: Vec<NodeId> = (1..=self.config.nodes).collect();
        for &id in &ids {
            self.start_node(id).await;
        }
        let first = self.raft(1).expect("n1 runs");
        first.initialize(BTreeMap::from([(1, node_addr(1))])).await.context("initializing n1")?;
        self.wait_leader().await?;
        for &id in &ids[1..] {
            let raft = self.leader_raft().await?;
            raft.add_learner(id, node_addr(id), true)
                .await
                .with_context(|| format!("adding learner n{id}"))?;
        }
        let voters: BTreeSet<NodeId> = ids.iter().copied().take(self.config.voters).collect();
        self.leader_raft().await?.change_membership(voters.clone(), true).await.context("voters")?;
        self.trace.event(format!("voters {voters:?}"));
        for &id in &ids {
            let info = NodeInfo {
                id,
                az: None,
                capacity_weight: 1,
                admin_addr: format!("n{id}"),
                raft_addr: format!("n{id}"),
            };
            let r = self.write(Command::RegisterNode(info)).await?;
            anyhow::ensure!(r.result.is_none(), "registering n{id}: {:?}", r.result);
        }
        self.trace.event("bootstrapped");
        Ok(())
    }

    /// The node every running node agrees leads, once one does.
    pub async fn wait_leader(&self) -> anyhow::Result<NodeId> {
        let deadline = tokio::time::Instant::now() + WRITE_DEADLINE;
        loop {
            if let Some(id) = self.leader() {
                return Ok(id);
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "no leader within {WRITE_DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A running node that is leader by its own metrics (the one with the highest term).
    pub fn leader(&self) -> Option<NodeId> {
        self.running
            .iter()
            .filter_map(|(id, r)| {
                let m = r.raft.metrics();
                let m = m.borrow();
                (m.state == ServerState::Leader).then_some((m.current_term, *id))
            })
            .max()
            .map(|(_, id)| id)
    }

    async fn leader_raft(&self) -> anyhow::Result<SimRaft> {
        let id = self.wait_leader().await?;
        Ok(self.raft(id).expect("the leader runs"))
    }

    /// Commits `cmd` through the current leader, retrying through elections.
    pub async fn write(&self, cmd: Command) -> anyhow::Result<Response> {
        let deadline = tokio::time::Instant::now() + WRITE_DEADLINE;
        loop {
            let raft = self.leader_raft().await?;
            match raft.client_write(cmd.clone()).await {
                Ok(r) => return Ok(r.data),
                Err(e) => {
                    anyhow::ensure!(tokio::time::Instant::now() < deadline, "write not committed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Waits until every running node has applied everything the leader has in its log.
    pub async fn wait_converged(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WRITE_DEADLINE;
        loop {
            let leader = self.wait_leader().await?;
            let target = self.running[&leader].raft.metrics().borrow().last_log_index;
            let behind = self
                .running
                .values()
                .any(|r| r.raft.metrics().borrow().last_applied.map(|l| l.index) < target);
            if !behind {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "replicas did not converge");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The running node whose replica has applied the most (the freshest view of the table).
    pub fn freshest(&self) -> Option<NodeId> {
        self.running
            .iter()
            .map(|(id, r)| (r.raft.metrics().borrow().last_applied.map(|l| l.index), std::cmp::Reverse(*id)))
            .max()
            .map(|(_, std::cmp::Reverse(id))| id)
    }

    /// Stops every node (end of the run), in id order.
    pub async fn shutdown(&mut self) {
        let ids: Vec<NodeId> = self.running.keys().copied().collect();
        for id in ids {
            let node = self.running.remove(&id).expect("running");
            self.net.detach(id);
            for task in &node.tasks {
                task.abort();
            }
            let _ = node.raft.shutdown().await;
        }
    }
}

fn node_addr(id: NodeId) -> BasicNode {
    BasicNode::new(format!("n{id}"))
}

/// Traces this node's view of (role, term, leader) on every change.
async fn watch_metrics(id: NodeId, raft: SimRaft, trace: Trace, max_term: Arc<AtomicU64>) {
    let mut rx = raft.metrics();
    let mut last = None;
    loop {
        let now = {
            let m = rx.borrow_and_update();
            (m.state, m.current_term, m.current_leader)
        };
        if last != Some(now) {
            max_term.fetch_max(now.1, Ordering::Relaxed);
            trace.event(format!("n{id} {:?} term={} leader={:?}", now.0, now.1, now.2));
            last = Some(now);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// A node's heartbeat sender (`run_heartbeats` + `Control::heartbeat` in the node).
async fn send_heartbeats(id: NodeId, raft: SimRaft, net: SimNet, config: FailureConfig, phase: Duration) {
    tokio::time::sleep(phase).await;
    let mut tick = tokio::time::interval(Duration::from_millis(config.heartbeat_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let leader = raft.metrics().borrow().current_leader;
        if let Some(leader) = leader.filter(|l| *l != id) {
            net.send_heartbeat(id, leader);
        }
    }
}

/// The data plane's consumer of the change feed; without it the feed would grow unboundedly.
async fn drain_changes(sm: StateMachine<SimConfig>) {
    let mut applied = sm.subscribe();
    loop {
        {
            let mut g = sm.lock();
            while g.state.poll_change().is_some() {}
            g.state.take_resync();
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}

/// The leader's control loop: the production [`LeaderDuties`] core (the same one
/// `node/src/leader.rs` drives), executed against the simulated Raft (idle on followers).
async fn run_duties(
    id: NodeId,
    raft: SimRaft,
    sm: StateMachine<SimConfig>,
    trace: Trace,
    config: WorldConfig,
    mut heartbeats: mpsc::Receiver<NodeId>,
) {
    let mut duties = LeaderDuties::new(
        id,
        DutyConfig {
            failure: config.failure,
            voters_target: config.voters,
            rebalance_moves_max: config.rebalance_moves_max,
            rebalance_interval_ms: config.rebalance_interval_ms,
        },
    );
    let mut tick = tokio::time::interval(DUTY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            hb = heartbeats.recv() => {
                let Some(node) = hb else { return };
                duties.handle_heartbeat(trace.now_ms(), node);
                continue;
            }
            _ = tick.tick() => {}
        }
        let now_ms = trace.now_ms();
        let metrics = raft.metrics().borrow().clone();
        duties.handle_leadership(now_ms, metrics.state == ServerState::Leader);
        let membership = {
            let m = metrics.membership_config.membership();
            Membership { voters: m.voter_ids().collect(), learners: m.learner_ids().collect() }
        };
        let duty = duties.poll_duty(now_ms, &sm.lock().state, &membership);
        match duty {
            None => {}
            Some(Duty::Propose(cmd)) => propose(id, &raft, &trace, cmd).await,
            Some(Duty::ChangeVoters(voters)) => {
                trace.event(format!("n{id} changing voters {:?} -> {voters:?}", membership.voters));
                if let Err(e) = raft.change_membership(voters, true).await {
                    trace.event(format!("n{id} voter change failed: {}", error_kind(&e.to_string())));
                }
            }
        }
    }
}

/// Proposes a leader-duty command and traces the outcome.
async fn propose(id: NodeId, raft: &SimRaft, trace: &Trace, cmd: Command) {
    let label = format!("{cmd:?}");
    match raft.client_write(cmd).await {
        Ok(r) => {
            let d = r.data;
            trace.event(format!(
                "n{id} committed {label} at {}: moved={} handovers={} refused={:?}",
                r.log_id.index, d.moved, d.handovers, d.result
            ));
        }
        Err(e) => trace.event(format!("n{id} proposal {label} failed: {}", error_kind(&e.to_string()))),
    }
}

/// A stable classification of an openraft error message for the trace.
fn error_kind(message: &str) -> &'static str {
    if message.contains("forward") || message.contains("Forward") {
        "not leader"
    } else if message.contains("in progress") || message.contains("InProgress") {
        "membership change in progress"
    } else {
        "other"
    }
}
