//! The failure detector, run by the Raft leader (sans-IO: time is an input).
//!
//! Nodes send the leader a heartbeat every `heartbeat_interval_ms` (outside the Raft log). The
//! shell feeds them in with [`FailureDetector::handle_heartbeat`], reports leadership with
//! [`FailureDetector::handle_leadership`], and after every input and whenever
//! [`FailureDetector::poll_timeout`] is reached calls [`FailureDetector::poll_proposal`] until it
//! returns `None`, proposing each command through Raft.
//!
//! Decisions:
//! - An `Active` or `Draining` node (never the leader itself) not heard from for `dead_after_ms`
//!   is proposed `NodeDown`. A new leader has no heartbeat history, so silence is counted from
//!   the later of the last heartbeat and the start of leadership: nobody is declared dead before
//!   one full `dead_after_ms` of leadership (design.md §4).
//! - A `Down` node heard from within the last `heartbeat_interval_ms` is proposed `NodeUp`. The
//!   leader itself counts as heard (it is alive by definition), so a leader marked `Down` brings
//!   itself back.
//! - `Drained` nodes are never declared dead: they own nothing and are expected to exit.
//! - At most one proposal per node is outstanding: it is not repeated while the state does not
//!   reflect it, except once `dead_after_ms` has passed (the write may have been lost with a
//!   leadership change), which bounds repeats to one per `dead_after_ms` per node. Losing
//!   leadership forgets outstanding proposals.
//! - False positives are cheap by design (a duplicate recording, never a gap), so there is no
//!   suspicion phase.

use std::collections::BTreeMap;

use crate::ids::NodeId;
use crate::state::{ClusterState, Command, NodeStatus};

/// Failure-detector timing (design.md §4: 500 ms heartbeats, dead after 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureConfig {
    pub heartbeat_interval_ms: u64,
    pub dead_after_ms: u64,
}

impl Default for FailureConfig {
    fn default() -> FailureConfig {
        FailureConfig { heartbeat_interval_ms: 500, dead_after_ms: 2_000 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proposed {
    Down,
    Up,
}

#[derive(Debug, Clone)]
pub struct FailureDetector {
    config: FailureConfig,
    /// When this node's current leadership began; `None` while not leader.
    leader_since_ms: Option<u64>,
    /// Latest heartbeat per node (kept across leadership changes; bounded by the node count).
    heard_ms: BTreeMap<NodeId, u64>,
    /// Outstanding proposals: what, and when it was made.
    proposed: BTreeMap<NodeId, (Proposed, u64)>,
    /// Latest `now_ms` seen, for [`FailureDetector::poll_timeout`].
    now_ms: u64,
}

impl FailureDetector {
    pub fn new(config: FailureConfig) -> FailureDetector {
        assert!(config.heartbeat_interval_ms > 0 && config.dead_after_ms > config.heartbeat_interval_ms);
        FailureDetector {
            config,
            leader_since_ms: None,
            heard_ms: BTreeMap::new(),
            proposed: BTreeMap::new(),
            now_ms: 0,
        }
    }

    pub fn config(&self) -> FailureConfig {
        self.config
    }

    /// Whether this node leads now. Becoming leader starts the grace period; losing leadership
    /// drops outstanding proposals.
    pub fn handle_leadership(&mut self, now_ms: u64, is_leader: bool) {
        self.observe(now_ms);
        match (self.leader_since_ms, is_leader) {
            (None, true) => {
                self.leader_since_ms = Some(now_ms);
                self.proposed.clear();
            }
            (Some(_), false) => {
                self.leader_since_ms = None;
                self.proposed.clear();
            }
            _ => {}
        }
    }

    /// A heartbeat from `node` arrived at `now_ms`.
    pub fn handle_heartbeat(&mut self, now_ms: u64, node: NodeId) {
        self.observe(now_ms);
        let heard = self.heard_ms.entry(node).or_insert(now_ms);
        *heard = (*heard).max(now_ms);
    }

    /// The next status change to propose, if any. Call until `None`.
    pub fn poll_proposal(&mut self, now_ms: u64, state: &ClusterState, self_id: NodeId) -> Option<Command> {
        self.observe(now_ms);
        let leader_since_ms = self.leader_since_ms?;
        // Forget proposals the state now reflects (or that concern forgotten nodes).
        self.proposed.retain(|node, (what, _)| match (state.nodes().get(node).map(|n| n.status), what) {
            (None, _) => false,
            (Some(status), Proposed::Down) => matches!(status, NodeStatus::Active | NodeStatus::Draining),
            (Some(status), Proposed::Up) => status == NodeStatus::Down,
        });
        for (&node, record) in state.nodes() {
            if let Some(&(_, at_ms)) = self.proposed.get(&node) {
                if now_ms < at_ms + self.config.dead_after_ms {
                    continue; // outstanding
                }
            }
            let heard_ms = if node == self_id { Some(now_ms) } else { self.heard_ms.get(&node).copied() };
            let proposal = match record.status {
                NodeStatus::Active | NodeStatus::Draining if node != self_id => {
                    let silent_since_ms = heard_ms.unwrap_or(0).max(leader_since_ms);
                    (now_ms >= silent_since_ms + self.config.dead_after_ms).then_some(Proposed::Down)
                }
                NodeStatus::Down => heard_ms
                    .is_some_and(|h| now_ms <= h + self.config.heartbeat_interval_ms)
                    .then_some(Proposed::Up),
                _ => None,
            };
            if let Some(what) = proposal {
                self.proposed.insert(node, (what, now_ms));
                return Some(match what {
                    Proposed::Down => Command::NodeDown { node },
                    Proposed::Up => Command::NodeUp { node },
                });
            }
        }
        None
    }

    /// When `poll_proposal` should next be called if no input arrives (absolute ms): the
    /// earliest moment a known node's silence reaches `dead_after_ms`, the grace period ends, or
    /// an outstanding proposal may be repeated. `None` while not leader.
    pub fn poll_timeout(&self) -> Option<u64> {
        let leader_since_ms = self.leader_since_ms?;
        let dead_after_ms = self.config.dead_after_ms;
        let grace_end = std::iter::once(leader_since_ms + dead_after_ms);
        let silences = self.heard_ms.values().map(|h| (*h).max(leader_since_ms) + dead_after_ms);
        let repeats = self.proposed.values().map(|(_, at)| at + dead_after_ms);
        grace_end.chain(silences).chain(repeats).filter(|t| *t > self.now_ms).min()
    }

    fn observe(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }
}

#[cfg(test)]
mod tests {
    //! Scripted heartbeat timelines in, proposals out.

    use super::*;
    use crate::state::NodeInfo;

    const LEADER: NodeId = 1;

    fn state(nodes: &[NodeId]) -> ClusterState {
        let mut s = ClusterState::new();
        for &id in nodes {
            let info = NodeInfo {
                id,
                az: None,
                capacity_weight: 1,
                admin_addr: String::new(),
                raft_addr: String::new(),
            };
            assert_eq!(s.apply(Command::RegisterNode(info)).result, None);
        }
        s
    }

    fn detector() -> FailureDetector {
        FailureDetector::new(FailureConfig { heartbeat_interval_ms: 500, dead_after_ms: 2_000 })
    }

    /// All proposals at `now_ms` (polling until `None`).
    fn poll_all(fd: &mut FailureDetector, now_ms: u64, s: &ClusterState) -> Vec<Command> {
        std::iter::from_fn(|| fd.poll_proposal(now_ms, s, LEADER)).collect()
    }

    #[test]
    fn a_new_leader_waits_one_full_timeout_before_declaring_anyone_dead() {
        let s = state(&[1, 2, 3]);
        let mut fd = detector();
        assert_eq!(poll_all(&mut fd, 10_000, &s), [], "not leader: nothing");
        assert_eq!(fd.poll_timeout(), None);
        fd.handle_leadership(10_000, true);
        assert_eq!(fd.poll_timeout(), Some(12_000));
        fd.handle_heartbeat(10_400, 2);
        // Node 3 never heartbeats; node 2 heartbeats every 500 ms.
        for t in (10_900..=11_900).step_by(500) {
            fd.handle_heartbeat(t, 2);
        }
        assert_eq!(poll_all(&mut fd, 11_999, &s), []);
        assert_eq!(poll_all(&mut fd, 12_000, &s), [Command::NodeDown { node: 3 }]);
        assert_eq!(fd.poll_timeout(), Some(13_900), "node 2's silence would reach 2 s at 13,900");
    }

    #[test]
    fn silence_of_dead_after_declares_a_node_down_exactly_once() {
        let mut s = state(&[1, 2, 3]);
        let mut fd = detector();
        fd.handle_leadership(0, true);
        for t in (0..=3_000).step_by(500) {
            fd.handle_heartbeat(t, 2);
            fd.handle_heartbeat(t, 3);
        }
        // Node 3 stops after 3,000; node 2 keeps going.
        let mut proposals = Vec::new();
        for t in (3_100..=6_000).step_by(100) {
            if t % 500 == 0 {
                fd.handle_heartbeat(t, 2);
            }
            for p in poll_all(&mut fd, t, &s) {
                proposals.push((t, p));
            }
        }
        assert_eq!(proposals, [(5_000, Command::NodeDown { node: 3 })]);
        // Once the state reflects it, nothing more.
        s.apply(Command::NodeDown { node: 3 });
        assert_eq!(poll_all(&mut fd, 7_000, &s), []);
    }

    #[test]
    fn an_unreflected_proposal_is_repeated_only_after_dead_after() {
        let s = state(&[1, 2]);
        let mut fd = detector();
        fd.handle_leadership(0, true);
        assert_eq!(poll_all(&mut fd, 2_000, &s), [Command::NodeDown { node: 2 }]);
        assert_eq!(poll_all(&mut fd, 2_001, &s), []);
        assert_eq!(poll_all(&mut fd, 3_999, &s), []);
        assert_eq!(fd.poll_timeout(), Some(4_000));
        assert_eq!(poll_all(&mut fd, 4_000, &s), [Command::NodeDown { node: 2 }]);
    }

    #[test]
    fn a_down_node_heard_again_is_proposed_up() {
        let mut s = state(&[1, 2]);
        s.apply(Command::NodeDown { node: 2 });
        let mut fd = detector();
        fd.handle_leadership(0, true);
        fd.handle_heartbeat(100, 2);
        assert_eq!(poll_all(&mut fd, 700, &s), [], "last heard 600 ms ago: more than one interval");
        fd.handle_heartbeat(800, 2);
        assert_eq!(poll_all(&mut fd, 900, &s), [Command::NodeUp { node: 2 }]);
        assert_eq!(poll_all(&mut fd, 1_000, &s), [], "no duplicate");
        s.apply(Command::NodeUp { node: 2 });
        fd.handle_heartbeat(1_300, 2);
        assert_eq!(poll_all(&mut fd, 1_300, &s), []);
    }

    #[test]
    fn the_leader_never_declares_itself_dead_and_brings_itself_back() {
        let mut s = state(&[1, 2]);
        let mut fd = detector();
        fd.handle_leadership(0, true);
        fd.handle_heartbeat(4_500, 2);
        assert_eq!(poll_all(&mut fd, 5_000, &s), []);
        s.apply(Command::NodeDown { node: LEADER }); // e.g. declared by a previous leader
        assert_eq!(poll_all(&mut fd, 5_000, &s), [Command::NodeUp { node: LEADER }]);
    }

    #[test]
    fn draining_nodes_are_watched_and_drained_ones_are_not() {
        let mut s = state(&[1, 2, 3]);
        s.apply(Command::Drain { node: 2 }); // owns nothing: drained at once
        s.apply(Command::PutCameras { cameras: Vec::new(), replace: false });
        assert_eq!(s.nodes()[&2].status, NodeStatus::Drained);
        let mut fd = detector();
        fd.handle_leadership(0, true);
        assert_eq!(poll_all(&mut fd, 2_000, &s), [Command::NodeDown { node: 3 }]);
    }

    #[test]
    fn losing_leadership_stops_and_forgets_proposals() {
        let s = state(&[1, 2]);
        let mut fd = detector();
        fd.handle_leadership(0, true);
        fd.handle_leadership(1_000, false);
        assert_eq!(poll_all(&mut fd, 5_000, &s), []);
        // Leader again: a fresh grace period.
        fd.handle_leadership(6_000, true);
        assert_eq!(poll_all(&mut fd, 7_999, &s), []);
        assert_eq!(poll_all(&mut fd, 8_000, &s), [Command::NodeDown { node: 2 }]);
    }
}
