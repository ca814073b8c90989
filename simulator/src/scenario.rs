//! Scenarios and the report. Built-in so far: `crash-10pct`.
//!
//! `crash-10pct`: boot the cluster, register the cameras in bulk (`PutCameras`, 1,000 per
//! command), let it settle (every replica applied everything, then 5 s of idle heartbeats so the
//! failure detector's grace period has passed), crash 10% of the nodes at once (at least one),
//! and run to `duration` (virtual, from the start). Which nodes crash: drawn by the seed from the
//! learners first; voters only if there are not enough learners, and never a majority of the
//! voters (Raft would stop — a different scenario), so with few nodes fewer than 10% may crash.
//!
//! Measured from the crash: the time until every orphaned camera (owned by a crashed node) is
//! assigned to a live node in that node's own replica, cameras moved against the optimum (the
//! orphans), and the final balance over the live nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use camrec_cluster_core::ids::CameraId;
use camrec_cluster_core::placement::load_spread;
use camrec_cluster_core::state::{CameraSpec, ClusterState, Command, Transport, BITRATE_KBPS_DEFAULT};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::net::NetStats;
use crate::sim_rt;
use crate::trace::Trace;
use crate::world::{NodeId, World, WorldConfig};

/// Cameras per `PutCameras` command.
const CAMERAS_PER_COMMAND_MAX: usize = 1_000;
/// Idle time after convergence before the faults start.
const SETTLE: Duration = Duration::from_secs(5);
/// How often the observer checks for orphans.
const OBSERVE_INTERVAL: Duration = Duration::from_millis(10);

/// The built-in scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Scenario {
    /// 10% of the nodes die at once.
    #[value(name = "crash-10pct")]
    #[serde(rename = "crash-10pct")]
    Crash10Pct,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub seed: u64,
    pub scenario: Scenario,
    pub cameras: u32,
    pub nodes: u64,
    pub duration: Duration,
    /// Keep the trace lines in memory (for `--trace-out` and tests).
    pub keep_trace: bool,
}

/// The run's figures (deterministic: no wall-clock values).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub seed: u64,
    pub scenario: Scenario,
    pub cameras: u32,
    pub nodes: u64,
    pub crashed: Vec<NodeId>,
    pub crash_at_ms: u64,
    /// Cameras the crashed nodes owned.
    pub orphaned: u64,
    /// Virtual ms from the crash until every orphan was assigned to a live node (in that node's
    /// replica); `None` if that never happened within the run.
    pub orphans_assigned_ms: Option<u64>,
    /// Cameras whose owner differs between the crash and the end.
    pub moved: u64,
    /// The least possible: the orphans.
    pub moved_optimum: u64,
    /// Every enabled camera is owned by a live, active node at the end.
    pub all_assigned_live: bool,
    pub cameras_per_node_max: u64,
    pub cameras_per_node_mean: f64,
    /// Load (bitrate / capacity) max/mean over the active nodes at the end.
    pub load_max_over_mean: f64,
    /// Highest Raft term reached (each election bumps it).
    pub elections: u64,
    pub elections_after_crash: u64,
    pub net: NetStats,
    pub virtual_ms: u64,
    pub trace_events: u64,
    pub trace_sha256: String,
}

/// Synthetic camera `i`.
pub fn camera(i: u32) -> CameraSpec {
    CameraSpec {
        id: CameraId::new(format!("cam-{i:06}")).expect("valid id"),
        url: format!("rtsp://sim/cam/{i}"),
        username: None,
        password: None,
        transport: Transport::Tcp,
        enabled: true,
        labels: BTreeMap::new(),
        bitrate_kbps: BITRATE_KBPS_DEFAULT,
    }
}

/// Runs a scenario on a fresh seeded runtime on the current thread.
pub fn run(opts: &RunOptions) -> anyhow::Result<(Report, Trace)> {
    let mut master = ChaCha8Rng::seed_from_u64(opts.seed);
    let raft_seed: u64 = master.gen();
    let tokio_seed: u64 = master.gen();
    let world_seed: u64 = master.gen();
    let scenario_seed: u64 = master.gen();
    sim_rt::seed_raft_rng(raft_seed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .rng_seed(tokio::runtime::RngSeed::from_bytes(&tokio_seed.to_le_bytes()))
        .build()?;
    rt.block_on(async {
        let trace = Trace::new(opts.keep_trace);
        let mut world = World::new(WorldConfig::new(opts.nodes), world_seed, trace.clone());
        let result = match opts.scenario {
            Scenario::Crash10Pct => crash_10pct(&mut world, opts, scenario_seed).await,
        };
        world.shutdown().await;
        result.map(|r| (r, trace))
    })
}

/// Current owner of every assigned camera.
fn owners(state: &ClusterState) -> BTreeMap<CameraId, NodeId> {
    state.cameras().iter().filter_map(|(id, c)| Some((id.clone(), c.assignment?.owner))).collect()
}

/// The nodes to crash: 10% (at least one), learners first, never a voter majority.
fn pick_victims(world: &World, rng: &mut ChaCha8Rng) -> Vec<NodeId> {
    let nodes = world.config().nodes;
    let want = usize::try_from((nodes / 10).max(1)).expect("small");
    let raft = world.raft(world.leader().expect("a leader after settling")).expect("runs");
    let membership = raft.metrics().borrow().membership_config.membership().clone();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let mut learners: Vec<NodeId> = membership.learner_ids().collect();
    learners.shuffle(rng);
    let mut victims: Vec<NodeId> = learners.into_iter().take(want).collect();
    let voters_crashable = (voters.len() - 1) / 2;
    let mut voters = voters;
    voters.shuffle(rng);
    victims.extend(voters.into_iter().take(want.saturating_sub(victims.len()).min(voters_crashable)));
    victims.sort_unstable();
    victims
}

async fn crash_10pct(world: &mut World, opts: &RunOptions, seed: u64) -> anyhow::Result<Report> {
    let trace = world.trace.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    world.bootstrap().await?;
    let all: Vec<CameraSpec> = (0..opts.cameras).map(camera).collect();
    for chunk in all.chunks(CAMERAS_PER_COMMAND_MAX) {
        let r = world.write(Command::PutCameras { cameras: chunk.to_vec(), replace: false }).await?;
        anyhow::ensure!(r.result.is_none(), "PutCameras refused: {:?}", r.result);
    }
    trace.event(format!("registered {} cameras", opts.cameras));
    world.wait_converged().await?;
    tokio::time::sleep(SETTLE).await;
    trace.event("settled");

    let victims = pick_victims(world, &mut rng);
    let before = {
        let sm = world.sm(world.freshest().expect("nodes run")).expect("runs");
        let g = sm.lock();
        owners(&g.state)
    };
    let dead: BTreeSet<NodeId> = victims.iter().copied().collect();
    let orphans: BTreeSet<CameraId> =
        before.iter().filter(|(_, o)| dead.contains(o)).map(|(c, _)| c.clone()).collect();
    let elections_before = world.max_term();
    let crash_at_ms = trace.now_ms();
    for &id in &victims {
        world.crash(id).await;
    }
    trace.event(format!("crashed {victims:?} owning {} cameras", orphans.len()));

    // Observe until every orphan is owned by a live node in its own replica, or the run ends.
    let end = tokio::time::Instant::now() - trace.elapsed() + opts.duration;
    let mut pending = orphans.clone();
    let mut orphans_assigned_ms = None;
    while tokio::time::Instant::now() < end {
        pending = still_orphaned(world, pending);
        if pending.is_empty() {
            let ms = trace.now_ms() - crash_at_ms;
            trace.event(format!("all {} orphans assigned to live nodes after {ms} ms", orphans.len()));
            orphans_assigned_ms = Some(ms);
            break;
        }
        tokio::time::sleep(OBSERVE_INTERVAL).await;
    }
    tokio::time::sleep_until(end.max(tokio::time::Instant::now())).await;
    world.wait_converged().await?;
    trace.event("end");

    let sm = world.sm(world.freshest().expect("nodes run")).expect("runs");
    let g = sm.lock();
    let after = owners(&g.state);
    let running = world.running_ids();
    let active: BTreeSet<NodeId> = g
        .state
        .nodes()
        .iter()
        .filter(|(id, n)| n.status == camrec_cluster_core::state::NodeStatus::Active && running.contains(id))
        .map(|(id, _)| *id)
        .collect();
    let all_assigned_live = g.state.cameras().values().filter(|c| c.spec.enabled).all(|c| {
        c.assignment
            .is_some_and(|a| active.contains(&a.owner) && a.incoming.is_none_or(|i| active.contains(&i.node)))
    });
    let moved = before.iter().filter(|(c, o)| after.get(*c) != Some(o)).count() as u64;
    let mut per_node: BTreeMap<NodeId, u64> = active.iter().map(|id| (*id, 0)).collect();
    for o in after.values() {
        *per_node.entry(*o).or_default() += 1;
    }
    let cameras_per_node_max = per_node.values().copied().max().unwrap_or(0);
    #[allow(clippy::cast_precision_loss)] // a report
    let cameras_per_node_mean = after.len() as f64 / active.len().max(1) as f64;
    let load_max_over_mean = load_spread(&g.state).map_or(0.0, |s| s.max_over_mean);
    drop(g);
    let elections = world.max_term();
    Ok(Report {
        seed: opts.seed,
        scenario: opts.scenario,
        cameras: opts.cameras,
        nodes: opts.nodes,
        crashed: victims,
        crash_at_ms,
        orphaned: orphans.len() as u64,
        orphans_assigned_ms,
        moved,
        moved_optimum: orphans.len() as u64,
        all_assigned_live,
        cameras_per_node_max,
        cameras_per_node_mean,
        load_max_over_mean,
        elections,
        elections_after_crash: elections - elections_before,
        net: world.net.stats(),
        virtual_ms: trace.now_ms(),
        trace_events: trace.events(),
        trace_sha256: trace.sha256(),
    })
}

/// The cameras of `pending` that are not yet owned by a live node according to that node's own
/// replica.
fn still_orphaned(world: &World, pending: BTreeSet<CameraId>) -> BTreeSet<CameraId> {
    let running = world.running_ids();
    let Some(fresh) = world.freshest().and_then(|id| world.sm(id)) else { return pending };
    let claimed: Vec<(CameraId, NodeId)> = {
        let g = fresh.lock();
        pending
            .iter()
            .filter_map(|c| {
                let owner = g.state.camera(c)?.assignment?.owner;
                running.contains(&owner).then(|| (c.clone(), owner))
            })
            .collect()
    };
    let mut left = pending;
    for (c, owner) in claimed {
        let sm = world.sm(owner).expect("running");
        let g = sm.lock();
        if g.state.camera(&c).and_then(|r| r.assignment).is_some_and(|a| a.owner == owner) {
            left.remove(&c);
        }
    }
    left
}
