//! Placement: which active node takes a camera.
//!
//! Load is measured as the sum of the owned cameras' bitrates divided by the node's capacity
//! weight. [`NodeLoads`] keeps the active nodes ordered by load in a BTreeSet so that placing
//! each camera is O(log nodes) — a bulk registration of 180,000 cameras stays well under a
//! second inside `apply`. Ties break by node id, so placement is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::NodeId;
use crate::state::{ClusterState, NodeStatus};

/// Fixed-point scale for loads: load = bitrate_kbps * LOAD_SCALE / capacity_weight.
const LOAD_SCALE: u128 = 1 << 20;

/// Active nodes ordered by their current weighted load.
#[derive(Debug)]
pub struct NodeLoads {
    /// (scaled load, node) — the first element is the least-loaded node.
    ordered: BTreeSet<(u128, NodeId)>,
    /// node → (bitrate_kbps total, capacity weight)
    nodes: BTreeMap<NodeId, (u64, u32)>,
}

impl NodeLoads {
    /// Loads of the active nodes in `state`, counting the cameras they own now.
    pub fn new(state: &ClusterState) -> NodeLoads {
        let mut nodes: BTreeMap<NodeId, (u64, u32)> = state
            .nodes()
            .iter()
            .filter(|(_, n)| n.status == NodeStatus::Active)
            .map(|(id, n)| (*id, (0u64, n.info.capacity_weight)))
            .collect();
        for record in state.cameras().values() {
            if let Some(a) = record.assignment {
                if let Some(entry) = nodes.get_mut(&a.owner) {
                    entry.0 += u64::from(record.spec.bitrate_kbps);
                }
            }
        }
        let ordered = nodes.iter().map(|(id, (kbps, weight))| (scaled(*kbps, *weight), *id)).collect();
        NodeLoads { ordered, nodes }
    }

    /// Picks the least-loaded node and charges it `bitrate_kbps`.
    pub fn take_least_loaded(&mut self, bitrate_kbps: u32) -> Option<NodeId> {
        let (load, node) = self.ordered.pop_first()?;
        let entry = self.nodes.get_mut(&node).expect("ordered and nodes agree");
        debug_assert_eq!(load, scaled(entry.0, entry.1));
        entry.0 += u64::from(bitrate_kbps);
        self.ordered.insert((scaled(entry.0, entry.1), node));
        Some(node)
    }
}

fn scaled(kbps: u64, weight: u32) -> u128 {
    u128::from(kbps) * LOAD_SCALE / u128::from(weight.max(1))
}
