//! The leader's duties as one sans-IO core: what the leader should do next, given heartbeats,
//! its leadership, the Raft membership and the replicated table. The node's `leader.rs` and the
//! simulator both drive this same logic, so what the simulator proves is what production runs.
//!
//! Order of concerns per poll: failure detection first (a dead node's cameras are the urgent
//! case), then the voter set, then rebalance rounds at a bounded cadence.

use std::collections::BTreeSet;

use crate::autopilot::plan_voters;
use crate::failure::{FailureConfig, FailureDetector};
use crate::ids::NodeId;
use crate::placement::rebalance_needed;
use crate::state::{ClusterState, Command, NodeStatus};

/// Settings of the leader's duties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DutyConfig {
    pub failure: FailureConfig,
    /// Voters to keep (3 or 5).
    pub voters_target: usize,
    /// Most handovers one rebalance round plans.
    pub rebalance_moves_max: u32,
    /// Pause between rebalance rounds.
    pub rebalance_interval_ms: u64,
}

/// Something the leader should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Duty {
    /// Propose this command through Raft.
    Propose(Command),
    /// Change the Raft voters to exactly this set (learners stay learners).
    ChangeVoters(BTreeSet<NodeId>),
}

/// The Raft membership as the leader sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

#[derive(Debug)]
pub struct LeaderDuties {
    me: NodeId,
    config: DutyConfig,
    detector: FailureDetector,
    is_leader: bool,
    next_rebalance_ms: u64,
}

impl LeaderDuties {
    pub fn new(me: NodeId, config: DutyConfig) -> LeaderDuties {
        LeaderDuties {
            me,
            config,
            detector: FailureDetector::new(config.failure),
            is_leader: false,
            next_rebalance_ms: 0,
        }
    }

    pub fn handle_heartbeat(&mut self, now_ms: u64, node: NodeId) {
        self.detector.handle_heartbeat(now_ms, node);
    }

    /// Tells the duties whether this node leads now (a change resets the failure detector's
    /// grace period).
    pub fn handle_leadership(&mut self, now_ms: u64, is_leader: bool) {
        if is_leader != self.is_leader {
            self.detector.handle_leadership(now_ms, is_leader);
            self.is_leader = is_leader;
        }
    }

    /// The next duty, if any. Call again after executing it (and periodically).
    pub fn poll_duty(&mut self, now_ms: u64, state: &ClusterState, membership: &Membership) -> Option<Duty> {
        if !self.is_leader {
            return None;
        }
        if let Some(cmd) = self.detector.poll_proposal(now_ms, state, self.me) {
            return Some(Duty::Propose(cmd));
        }
        let alive: BTreeSet<NodeId> =
            state.nodes().iter().filter(|(_, n)| n.status != NodeStatus::Down).map(|(id, _)| *id).collect();
        if let Some(voters) =
            plan_voters(&membership.voters, &membership.learners, state, &alive, self.config.voters_target)
        {
            return Some(Duty::ChangeVoters(voters));
        }
        if now_ms >= self.next_rebalance_ms {
            self.next_rebalance_ms = now_ms + self.config.rebalance_interval_ms;
            if rebalance_needed(state) {
                return Some(Duty::Propose(Command::Rebalance {
                    max_moves: self.config.rebalance_moves_max,
                }));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ids::CameraId;
    use crate::state::{CameraSpec, NodeInfo, Transport};

    fn info(id: NodeId) -> NodeInfo {
        NodeInfo {
            id,
            az: None,
            capacity_weight: 1,
            admin_addr: format!("n{id}"),
            raft_addr: format!("n{id}"),
        }
    }

    fn config() -> DutyConfig {
        DutyConfig {
            failure: FailureConfig { heartbeat_interval_ms: 500, dead_after_ms: 2_000 },
            voters_target: 3,
            rebalance_moves_max: 10,
            rebalance_interval_ms: 1_000,
        }
    }

    fn state(nodes: u64, cameras: usize) -> ClusterState {
        let mut s = ClusterState::new();
        for id in 1..=nodes {
            s.apply(Command::RegisterNode(info(id)));
        }
        let cams = (0..cameras)
            .map(|i| CameraSpec {
                id: CameraId::new(format!("c{i}")).unwrap(),
                url: format!("rtsp://h/{i}"),
                username: None,
                password: None,
                transport: Transport::Tcp,
                enabled: true,
                labels: BTreeMap::new(),
                bitrate_kbps: 1000,
            })
            .collect();
        s.apply(Command::PutCameras { cameras: cams, replace: false });
        s
    }

    fn membership(voters: &[NodeId], learners: &[NodeId]) -> Membership {
        Membership { voters: voters.iter().copied().collect(), learners: learners.iter().copied().collect() }
    }

    #[test]
    fn followers_have_no_duties() {
        let mut d = LeaderDuties::new(1, config());
        let s = state(3, 6);
        assert_eq!(d.poll_duty(10_000, &s, &membership(&[1, 2, 3], &[])), None);
    }

    #[test]
    fn a_silent_node_is_declared_down_before_anything_else() {
        let mut d = LeaderDuties::new(1, config());
        let s = state(4, 8);
        let m = membership(&[1, 2, 3], &[4]);
        d.handle_leadership(0, true);
        for t in (0..=3_000).step_by(500) {
            for n in [2, 3] {
                d.handle_heartbeat(t, n);
            }
        }
        assert_eq!(d.poll_duty(3_000, &s, &m), Some(Duty::Propose(Command::NodeDown { node: 4 })));
    }

    #[test]
    fn voters_grow_to_the_target_then_rebalance_rounds_follow_the_cadence() {
        let mut d = LeaderDuties::new(1, config());
        let mut s = state(2, 8);
        d.handle_leadership(0, true);
        // Node 3 joins empty: first the voter set grows, then rebalance moves cameras to it.
        s.apply(Command::RegisterNode(info(3)));
        let m = membership(&[1, 2], &[3]);
        assert_eq!(d.poll_duty(100, &s, &m), Some(Duty::ChangeVoters([1, 2, 3].into_iter().collect())));
        let m = membership(&[1, 2, 3], &[]);
        assert_eq!(d.poll_duty(200, &s, &m), Some(Duty::Propose(Command::Rebalance { max_moves: 10 })));
        assert_eq!(d.poll_duty(300, &s, &m), None, "one round per interval");
        assert_eq!(d.poll_duty(1_200, &s, &m), Some(Duty::Propose(Command::Rebalance { max_moves: 10 })));
    }
}
