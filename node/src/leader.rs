//! Leader duties and the heartbeat sender. Every node runs [`run_duties`]; it acts only while
//! its Raft member leads: feeding heartbeats to the failure-detector core and proposing what the
//! cores decide (`NodeDown`/`NodeUp`, rebalance rounds, voter changes). Followers send a
//! heartbeat to the leader every interval. Decisions are the cores'; this loop moves data.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use camrec_cluster_core::autopilot::plan_voters;
use camrec_cluster_core::failure::{FailureConfig, FailureDetector};
use camrec_cluster_core::ids::NodeId;
use camrec_cluster_core::placement::rebalance_needed;
use camrec_cluster_core::state::{Command, NodeStatus};
use openraft::ServerState;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::control::Control;

/// Settings of the control loops.
#[derive(Debug, Clone)]
pub struct DutyConfig {
    pub failure: FailureConfig,
    /// Voters to keep (3 or 5).
    pub voters_target: usize,
    /// Most handovers one rebalance round plans.
    pub rebalance_moves_max: u32,
    /// Pause between rebalance rounds.
    pub rebalance_interval_ms: u64,
}

/// Sends a heartbeat to the leader every interval, forever.
pub async fn run_heartbeats(control: Control, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        control.heartbeat().await;
    }
}

/// The leader's control loop (idle on followers).
pub async fn run_duties(
    control: Control,
    clock: Arc<dyn Clock>,
    config: DutyConfig,
    mut heartbeats: mpsc::Receiver<NodeId>,
) {
    let me = control.cluster.id;
    let mut detector = FailureDetector::new(config.failure);
    let mut was_leader = false;
    let mut next_rebalance_ms = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            hb = heartbeats.recv() => {
                let Some(node) = hb else { return };
                detector.handle_heartbeat(clock.now().mono_ms, node);
                continue;
            }
            _ = tick.tick() => {}
        }
        let now_ms = clock.now().mono_ms;
        let metrics = control.cluster.raft.metrics().borrow().clone();
        let is_leader = metrics.state == ServerState::Leader;
        if is_leader != was_leader {
            detector.handle_leadership(now_ms, is_leader);
            was_leader = is_leader;
            if is_leader {
                tracing::info!(term = metrics.current_term, "became leader");
            }
        }
        if !is_leader {
            continue;
        }

        // Failure detection: propose what the detector concluded.
        let proposal = {
            let g = control.cluster.sm.lock();
            detector.poll_proposal(now_ms, &g.state, me)
        };
        if let Some(cmd) = proposal {
            tracing::warn!(?cmd, "failure detector");
            if let Err(e) = control.propose(cmd).await {
                tracing::warn!(error = %e, "failure-detector proposal failed");
            }
            continue;
        }

        // Voters: keep the target number, spread over AZs, replace dead ones.
        {
            let membership = metrics.membership_config.membership().clone();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
            let plan = {
                let g = control.cluster.sm.lock();
                let alive: BTreeSet<NodeId> = g
                    .state
                    .nodes()
                    .iter()
                    .filter(|(_, n)| n.status != NodeStatus::Down)
                    .map(|(id, _)| *id)
                    .collect();
                plan_voters(&voters, &learners, &g.state, &alive, config.voters_target)
            };
            if let Some(new_voters) = plan {
                tracing::info!(?voters, ?new_voters, "changing Raft voters");
                // Blocks until the joint and final configs commit: one voter change at a time.
                if let Err(e) = control.cluster.raft.change_membership(new_voters, true).await {
                    tracing::warn!(error = %e, "voter change failed");
                }
                continue;
            }
        }

        // Rebalance in bounded rounds.
        if now_ms >= next_rebalance_ms {
            next_rebalance_ms = now_ms + config.rebalance_interval_ms;
            let needed = rebalance_needed(&control.cluster.sm.lock().state);
            if needed {
                if let Err(e) =
                    control.propose(Command::Rebalance { max_moves: config.rebalance_moves_max }).await
                {
                    tracing::warn!(error = %e, "rebalance proposal failed");
                }
            }
        }
    }
}
