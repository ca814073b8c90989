//! Placement: which active node takes a camera, and which cameras a rebalance round moves.
//!
//! Load is measured as the sum of the cameras' bitrates divided by the node's capacity weight,
//! in fixed point ([`LOAD_SCALE`]) so every replica computes the same integers. Only `Active`
//! nodes take part: draining, drained and down nodes receive nothing.
//!
//! - [`NodeLoads`] (new cameras, failover, drain targets) counts what each node records *now*:
//!   a camera in handover counts on its owner and on its incoming node. It is built in
//!   O(nodes) from the per-node bitrate sums the state keeps, and keeps the nodes ordered by
//!   load in a BTreeSet (and one per AZ), so placing a camera is O(log nodes) — a failover of
//!   900 cameras at 180,000 cameras / 200 nodes stays in milliseconds. Ties break by node id,
//!   so placement is deterministic.
//! - **AZ-aware**: a camera labelled `az=X` ([`AZ_LABEL`]) goes to the least-loaded active node
//!   in AZ `X` if there is one, else to the least-loaded active node anywhere. Unlabelled
//!   cameras ignore AZs.
//! - [`plan_rebalance`] counts each camera where it will end up (its incoming node while in
//!   handover), so a round issued before earlier handovers complete does not re-plan the same
//!   imbalance. It acts only while the spread is out of tolerance (max/mean > 1.05 or
//!   min/mean < 0.95: without the second bound a node joining a 200-node cluster — max/mean
//!   1.005 — would never get work) and takes only moves that strictly decrease
//!   Σ kbps²/weight. That potential can only fall, so rounds converge and never oscillate.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{CameraId, NodeId};
use crate::state::{CameraRecord, CameraSpec, ClusterState, NodeStatus};

/// Fixed-point scale for loads: load = bitrate_kbps * LOAD_SCALE / capacity_weight.
pub const LOAD_SCALE: u128 = 1 << 20;

/// The camera label naming the availability zone it should be recorded in.
pub const AZ_LABEL: &str = "az";

/// Rebalance tolerance: balanced when max/mean ≤ 1 + this and min/mean ≥ 1 − this (percent).
pub const REBALANCE_TOLERANCE_PERCENT: u128 = 5;

/// How many candidate cameras of one node a rebalance looks at on each side of the ideal
/// bitrate before giving up on a (source, destination) pair (only AZ labels make it skip any).
const REBALANCE_SCAN_MAX: usize = 64;

#[derive(Debug)]
struct Load {
    kbps: u64,
    weight: u32,
    az: Option<String>,
}

impl Load {
    fn scaled(&self) -> u128 {
        scaled(self.kbps, self.weight)
    }
}

/// Active nodes ordered by their current weighted load.
#[derive(Debug)]
pub struct NodeLoads {
    /// (scaled load, node) — the first element is the least-loaded node.
    ordered: BTreeSet<(u128, NodeId)>,
    /// The same, per AZ, for nodes that have one.
    ordered_by_az: BTreeMap<String, BTreeSet<(u128, NodeId)>>,
    nodes: BTreeMap<NodeId, Load>,
}

impl NodeLoads {
    /// Loads of the active nodes in `state`, counting the cameras they record now (owned, and
    /// incoming while in handover).
    /// O(nodes): the sums are kept per node by the state.
    pub fn new(state: &ClusterState) -> NodeLoads {
        let mut nodes = active_nodes(state);
        for (id, load) in &mut nodes {
            load.kbps = state.node_counts(*id).recording_kbps();
        }
        let mut ordered = BTreeSet::new();
        let mut ordered_by_az: BTreeMap<String, BTreeSet<(u128, NodeId)>> = BTreeMap::new();
        for (id, load) in &nodes {
            ordered.insert((load.scaled(), *id));
            if let Some(az) = &load.az {
                ordered_by_az.entry(az.clone()).or_default().insert((load.scaled(), *id));
            }
        }
        NodeLoads { ordered, ordered_by_az, nodes }
    }

    /// Picks the least-loaded node and charges it `bitrate_kbps`.
    pub fn take_least_loaded(&mut self, bitrate_kbps: u32) -> Option<NodeId> {
        let &(_, node) = self.ordered.first()?;
        self.charge(node, bitrate_kbps);
        Some(node)
    }

    /// Picks the node for `spec` — the least-loaded active node in its `az` label's AZ, else the
    /// least-loaded active node — and charges it the camera's bitrate.
    pub fn take_for(&mut self, spec: &CameraSpec) -> Option<NodeId> {
        let in_az = spec.labels.get(AZ_LABEL).and_then(|az| self.ordered_by_az.get(az.as_str()));
        let &(_, node) = in_az.and_then(|set| set.first()).or_else(|| self.ordered.first())?;
        self.charge(node, spec.bitrate_kbps);
        Some(node)
    }

    fn charge(&mut self, node: NodeId, bitrate_kbps: u32) {
        let load = self.nodes.get_mut(&node).expect("ordered and nodes agree");
        let before = (load.scaled(), node);
        load.kbps += u64::from(bitrate_kbps);
        let after = (load.scaled(), node);
        let removed = self.ordered.remove(&before);
        debug_assert!(removed, "ordered and nodes agree");
        self.ordered.insert(after);
        if let Some(set) = load.az.as_ref().and_then(|az| self.ordered_by_az.get_mut(az)) {
            set.remove(&before);
            set.insert(after);
        }
    }
}

fn active_nodes(state: &ClusterState) -> BTreeMap<NodeId, Load> {
    state
        .nodes()
        .iter()
        .filter(|(_, n)| n.status == NodeStatus::Active)
        .map(|(id, n)| (*id, Load { kbps: 0, weight: n.info.capacity_weight, az: n.info.az.clone() }))
        .collect()
}

fn scaled(kbps: u64, weight: u32) -> u128 {
    u128::from(kbps) * LOAD_SCALE / u128::from(weight.max(1))
}

/// Load of each active node once pending handovers complete (a camera counts on its
/// destination only).
fn destination_loads(state: &ClusterState) -> BTreeMap<NodeId, Load> {
    let mut nodes = active_nodes(state);
    for (id, load) in &mut nodes {
        load.kbps = state.node_counts(*id).destination_kbps();
    }
    nodes
}

/// The cluster-wide fair load: Σ kbps · LOAD_SCALE / Σ weight (the mean for equal weights).
fn mean_scaled(nodes: &BTreeMap<NodeId, Load>) -> u128 {
    let kbps: u128 = nodes.values().map(|l| u128::from(l.kbps)).sum();
    let weight: u128 = nodes.values().map(|l| u128::from(l.weight.max(1))).sum();
    kbps * LOAD_SCALE / weight.max(1)
}

fn balanced(max: u128, min: u128, mean: u128) -> bool {
    max * 100 <= mean * (100 + REBALANCE_TOLERANCE_PERCENT)
        && min * 100 >= mean * (100 - REBALANCE_TOLERANCE_PERCENT)
}

/// How far the active nodes' loads (after pending handovers) are from the fair load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSpread {
    pub max_over_mean: f64,
    pub min_over_mean: f64,
}

/// The load spread over the active nodes, `None` with no active node or no load.
/// For reports and tests; `apply` never uses floating point.
pub fn load_spread(state: &ClusterState) -> Option<LoadSpread> {
    let nodes = destination_loads(state);
    let mean = mean_scaled(&nodes);
    if mean == 0 {
        return None;
    }
    let max = nodes.values().map(Load::scaled).max()?;
    let min = nodes.values().map(Load::scaled).min()?;
    #[allow(clippy::cast_precision_loss)] // a report: f64 precision is plenty
    Some(LoadSpread { max_over_mean: max as f64 / mean as f64, min_over_mean: min as f64 / mean as f64 })
}

/// Whether a `Rebalance` round would plan a move now: the leader's pre-check before proposing
/// one. O(nodes) while the spread is within tolerance, one planning pass otherwise.
pub fn rebalance_needed(state: &ClusterState) -> bool {
    let nodes = destination_loads(state);
    let loads = || nodes.values().map(Load::scaled);
    let (Some(max), Some(min)) = (loads().max(), loads().min()) else { return false };
    nodes.len() >= 2 && !balanced(max, min, mean_scaled(&nodes)) && !plan_rebalance(state, 1).is_empty()
}

/// Plans one rebalance round: up to `max_moves` (camera, new incoming node) pairs, from the
/// most to the least loaded active nodes, never touching a camera already in handover. Empty
/// when the spread is within tolerance or no move strictly reduces the imbalance.
/// O(cameras · log cameras) to index, then O(log cameras + nodes) per move.
pub fn plan_rebalance(state: &ClusterState, max_moves: u32) -> Vec<(CameraId, NodeId)> {
    let mut nodes = destination_loads(state);
    if nodes.len() < 2 || max_moves == 0 {
        return Vec::new();
    }
    // Movable cameras per node, keyed (bitrate, index into `records`).
    let mut records: Vec<&CameraRecord> = Vec::new();
    let mut movable: BTreeMap<NodeId, BTreeSet<(u32, usize)>> = BTreeMap::new();
    for record in state.cameras().values() {
        let Some(a) = record.assignment else { continue };
        if a.incoming.is_none() && nodes.contains_key(&a.owner) {
            movable.entry(a.owner).or_default().insert((record.spec.bitrate_kbps, records.len()));
            records.push(record);
        }
    }
    let azs_present: BTreeSet<&str> = nodes.values().filter_map(|l| l.az.as_deref()).collect();
    let azs_present: BTreeSet<String> = azs_present.into_iter().map(str::to_owned).collect();
    let mean = mean_scaled(&nodes);
    let mut ordered: BTreeSet<(u128, NodeId)> = nodes.iter().map(|(id, l)| (l.scaled(), *id)).collect();
    let mut stuck: BTreeSet<NodeId> = BTreeSet::new();
    let mut moves = Vec::new();
    while moves.len() < max_moves as usize {
        let (Some(&(max, _)), Some(&(min, _))) = (ordered.last(), ordered.first()) else { break };
        if balanced(max, min, mean) {
            break;
        }
        let Some(&(source_load, source)) = ordered.iter().rev().find(|(_, n)| !stuck.contains(n)) else {
            break;
        };
        let mut chosen = None;
        for &(dest_load, dest) in &ordered {
            if dest_load >= source_load {
                break;
            }
            let pair = Pair {
                source_load,
                source_weight: nodes[&source].weight,
                dest_load,
                dest_weight: nodes[&dest].weight,
            };
            let dest_az = nodes[&dest].az.as_deref();
            let allowed = |i: usize| match records[i].spec.labels.get(AZ_LABEL) {
                None => true,
                Some(az) => dest_az == Some(az.as_str()) || !azs_present.contains(az),
            };
            if let Some(key) = pick(movable.get(&source), &pair, allowed) {
                chosen = Some((key, dest));
                break;
            }
        }
        let Some(((bitrate_kbps, index), dest)) = chosen else {
            stuck.insert(source);
            continue;
        };
        movable.get_mut(&source).expect("picked from it").remove(&(bitrate_kbps, index));
        for (node, delta_add) in [(source, false), (dest, true)] {
            let load = nodes.get_mut(&node).expect("active");
            ordered.remove(&(load.scaled(), node));
            if delta_add {
                load.kbps += u64::from(bitrate_kbps);
            } else {
                load.kbps -= u64::from(bitrate_kbps);
            }
            ordered.insert((load.scaled(), node));
        }
        moves.push((records[index].spec.id.clone(), dest));
    }
    moves
}

/// A candidate (source → destination) move's loads.
struct Pair {
    source_load: u128,
    source_weight: u32,
    dest_load: u128,
    dest_weight: u32,
}

impl Pair {
    /// Moving `bitrate_kbps` keeps the destination below the source's current load and
    /// strictly decreases Σ kbps²/weight.
    fn improves(&self, bitrate_kbps: u32) -> bool {
        let d_source = scaled(u64::from(bitrate_kbps), self.source_weight);
        let d_dest = scaled(u64::from(bitrate_kbps), self.dest_weight);
        self.dest_load + d_dest < self.source_load
            && 2 * self.dest_load + d_dest + d_source < 2 * self.source_load
    }

    /// The bitrate that would leave both nodes equally loaded.
    fn ideal_kbps(&self) -> u128 {
        let (ws, wd) = (u128::from(self.source_weight.max(1)), u128::from(self.dest_weight.max(1)));
        (self.source_load - self.dest_load) * ws * wd / (LOAD_SCALE * (ws + wd))
    }
}

/// The movable camera of the source whose bitrate is closest to the pair's ideal, among those
/// that improve the balance and are `allowed` on the destination.
fn pick(
    candidates: Option<&BTreeSet<(u32, usize)>>,
    pair: &Pair,
    allowed: impl Fn(usize) -> bool,
) -> Option<(u32, usize)> {
    let candidates = candidates?;
    let ideal = u32::try_from(pair.ideal_kbps()).unwrap_or(u32::MAX);
    let split = (ideal.saturating_add(1), 0usize);
    let below = candidates
        .range(..split)
        .rev()
        .take(REBALANCE_SCAN_MAX)
        .find(|(b, i)| allowed(*i) && pair.improves(*b))
        .copied();
    let above = candidates
        .range(split..)
        .take(REBALANCE_SCAN_MAX)
        .take_while(|(b, _)| pair.improves(*b))
        .find(|(_, i)| allowed(*i))
        .copied();
    match (below, above) {
        (Some(b), Some(a)) => Some(if a.0 - ideal < ideal - b.0 { a } else { b }),
        (b, a) => b.or(a),
    }
}
