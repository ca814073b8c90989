//! Voter autopilot: which Raft voter set to move to next (pure; the leader's shell calls
//! `change_membership` with the answer and calls again once it has committed).
//!
//! One step at a time, in priority order:
//! 1. **Replace** an unhealthy voter — dead first, then alive but not `Active` (draining,
//!    drained, down, forgotten) — by a healthy learner: `voters − bad + learner`.
//! 2. **Drop** a dead voter that has no substitute, while more than `min(target, 3)` voters
//!    remain (5 voters with 2 dead tolerate no further failure; the 3 alive ones alone tolerate
//!    one). An alive-but-draining voter is kept until a substitute exists.
//! 3. **Grow** by one healthy learner while below `target_voters`.
//! 4. **Shrink** by one while above `target_voters` (unhealthy first, then from the AZ with the
//!    most voters, highest id).
//!
//! A healthy learner is alive and `Active`. Among candidates, one from an AZ not yet represented
//! among the remaining voters is preferred, then the least node id.
//!
//! Safety: a step is returned only if the alive members are a strict majority of the old set
//! *and* of the new set, so the joint configuration (old ∪ new, both majorities needed) can
//! commit. Every step changes one member, so a failure mid-change costs at most one.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::NodeId;
use crate::state::{ClusterState, NodeStatus};

/// The next voter set, or `None` when the current one is right (or no safe step exists).
pub fn plan_voters(
    voters: &BTreeSet<NodeId>,
    learners: &BTreeSet<NodeId>,
    state: &ClusterState,
    alive: &BTreeSet<NodeId>,
    target_voters: usize,
) -> Option<BTreeSet<NodeId>> {
    assert!(target_voters >= 1, "target_voters must be at least 1");
    if !has_quorum(voters, alive) {
        return None; // nothing can commit; a membership change would not either
    }
    let healthy = |n: &NodeId| alive.contains(n) && is_active(state, *n);
    let candidates: BTreeSet<NodeId> =
        learners.iter().filter(|n| !voters.contains(n) && healthy(n)).copied().collect();
    let dead: Vec<NodeId> = voters.iter().filter(|n| !alive.contains(n)).copied().collect();
    let not_active: Vec<NodeId> =
        voters.iter().filter(|n| alive.contains(n) && !is_active(state, **n)).copied().collect();
    let safe = |new: BTreeSet<NodeId>| has_quorum(&new, alive).then_some(new);

    // 1. Replace.
    for bad in dead.iter().chain(&not_active) {
        let mut rest = voters.clone();
        rest.remove(bad);
        if let Some(learner) = best_candidate(&candidates, &rest, state) {
            rest.insert(learner);
            if let Some(new) = safe(rest) {
                return Some(new);
            }
        }
    }
    // 2. Drop a dead voter without substitute.
    let floor = target_voters.min(3);
    if voters.len() > floor {
        if let Some(bad) = dead.first() {
            let mut rest = voters.clone();
            rest.remove(bad);
            if let Some(new) = safe(rest) {
                return Some(new);
            }
        }
    }
    // 3. Grow.
    if voters.len() < target_voters {
        if let Some(learner) = best_candidate(&candidates, voters, state) {
            let mut new = voters.clone();
            new.insert(learner);
            if let Some(new) = safe(new) {
                return Some(new);
            }
        }
    }
    // 4. Shrink.
    if voters.len() > target_voters {
        let victim = dead.first().or(not_active.first()).copied().or_else(|| most_crowded(voters, state))?;
        let mut new = voters.clone();
        new.remove(&victim);
        return safe(new);
    }
    None
}

/// Alive members are a strict majority of `set` (an empty set has no quorum).
fn has_quorum(set: &BTreeSet<NodeId>, alive: &BTreeSet<NodeId>) -> bool {
    let alive_count = set.iter().filter(|n| alive.contains(n)).count();
    alive_count * 2 > set.len()
}

fn is_active(state: &ClusterState, node: NodeId) -> bool {
    state.nodes().get(&node).is_some_and(|n| n.status == NodeStatus::Active)
}

fn az_of(state: &ClusterState, node: NodeId) -> Option<&str> {
    state.nodes().get(&node).and_then(|n| n.info.az.as_deref())
}

/// A candidate from an AZ not represented among `voters` first, then the least id.
fn best_candidate(
    candidates: &BTreeSet<NodeId>,
    voters: &BTreeSet<NodeId>,
    state: &ClusterState,
) -> Option<NodeId> {
    let voter_azs: BTreeSet<&str> = voters.iter().filter_map(|v| az_of(state, *v)).collect();
    candidates.iter().copied().min_by_key(|c| {
        let new_az = az_of(state, *c).is_some_and(|az| !voter_azs.contains(az));
        (!new_az, *c)
    })
}

/// The voter to remove when shrinking a healthy set: from the AZ with the most voters (no AZ
/// counts as one AZ), the highest id.
fn most_crowded(voters: &BTreeSet<NodeId>, state: &ClusterState) -> Option<NodeId> {
    let mut per_az: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    for v in voters {
        *per_az.entry(az_of(state, *v)).or_default() += 1;
    }
    voters.iter().copied().max_by_key(|v| (per_az[&az_of(state, *v)], *v))
}

#[cfg(test)]
mod tests {
    //! Membership, liveness and node status in; the next voter set out.

    use super::*;
    use crate::state::{Command, NodeInfo};

    /// Nodes with AZs: (id, az).
    fn state(nodes: &[(NodeId, &str)]) -> ClusterState {
        let mut s = ClusterState::new();
        for &(id, az) in nodes {
            let info = NodeInfo {
                id,
                az: Some(az.into()),
                capacity_weight: 1,
                admin_addr: String::new(),
                raft_addr: String::new(),
            };
            assert_eq!(s.apply(Command::RegisterNode(info)).result, None);
        }
        s
    }

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    const ZONES: [(NodeId, &str); 6] = [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")];

    #[test]
    fn grows_one_voter_at_a_time_preferring_new_azs() {
        let s = state(&ZONES);
        let alive = set(&[1, 2, 3, 4, 5, 6]);
        let mut voters = set(&[1]);
        let mut steps = Vec::new();
        while let Some(next) = plan_voters(&voters, &(&alive - &voters), &s, &alive, 3) {
            steps.push(next.clone());
            voters = next;
        }
        assert_eq!(steps, [set(&[1, 3]), set(&[1, 3, 5])]);
        assert_eq!(plan_voters(&voters, &set(&[2, 4, 6]), &s, &alive, 5), Some(set(&[1, 2, 3, 5])));
    }

    #[test]
    fn a_dead_voter_is_replaced_by_a_healthy_learner_from_a_missing_az() {
        let s = state(&ZONES);
        let voters = set(&[1, 3, 5]);
        let alive = set(&[1, 2, 3, 4, 6]);
        assert_eq!(plan_voters(&voters, &set(&[2, 4, 6]), &s, &alive, 3), Some(set(&[1, 3, 6])));
        // No learner alive: a 3-voter set is kept (2 of 3 still commit).
        assert_eq!(plan_voters(&voters, &set(&[2, 4, 6]), &s, &set(&[1, 3]), 3), None);
    }

    #[test]
    fn no_step_without_quorum_in_the_old_set() {
        let s = state(&ZONES);
        assert_eq!(plan_voters(&set(&[1, 3, 5]), &set(&[2, 4, 6]), &s, &set(&[1, 2, 4, 6]), 3), None);
    }

    #[test]
    fn five_voters_losing_two_shrink_to_three_then_stop() {
        let s = state(&ZONES);
        let mut voters = set(&[1, 2, 3, 4, 5]);
        let alive = set(&[3, 4, 5]);
        let mut steps = Vec::new();
        while let Some(next) = plan_voters(&voters, &BTreeSet::new(), &s, &alive, 5) {
            steps.push(next.clone());
            voters = next;
        }
        assert_eq!(steps, [set(&[2, 3, 4, 5]), set(&[3, 4, 5])]);
        // A learner that comes up afterwards grows the set back.
        let alive = set(&[3, 4, 5, 6]);
        assert_eq!(plan_voters(&voters, &set(&[6]), &s, &alive, 5), Some(set(&[3, 4, 5, 6])));
    }

    #[test]
    fn a_draining_voter_is_replaced_only_when_a_substitute_exists() {
        let mut s = state(&ZONES);
        s.apply(Command::Drain { node: 3 });
        let alive = set(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(plan_voters(&set(&[1, 3, 5]), &set(&[4]), &s, &alive, 3), Some(set(&[1, 4, 5])));
        assert_eq!(plan_voters(&set(&[1, 3, 5]), &BTreeSet::new(), &s, &alive, 3), None);
        // Draining/down learners never become voters.
        s.apply(Command::Drain { node: 4 });
        s.apply(Command::NodeDown { node: 6 });
        assert_eq!(plan_voters(&set(&[1, 3, 5]), &set(&[4, 6]), &s, &alive, 3), None);
    }

    #[test]
    fn shrinks_to_a_lower_target_from_the_most_crowded_az() {
        let s = state(&ZONES);
        let alive = set(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(plan_voters(&set(&[1, 2, 3, 4, 5]), &set(&[6]), &s, &alive, 3), Some(set(&[1, 2, 3, 5])));
        assert_eq!(plan_voters(&set(&[1, 2, 3, 5]), &set(&[4, 6]), &s, &alive, 3), Some(set(&[1, 3, 5])));
        assert_eq!(plan_voters(&set(&[1, 3, 5]), &set(&[2, 4, 6]), &s, &alive, 3), None);
    }
}
