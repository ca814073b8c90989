//! Leader duties and the heartbeat sender. Every node runs [`run_duties`]; it acts only while
//! its Raft member leads: feeding heartbeats to the failure-detector core and proposing what the
//! cores decide (`NodeDown`/`NodeUp`, rebalance rounds, voter changes). Followers send a
//! heartbeat to the leader every interval. Decisions are the cores'; this loop moves data.

use std::sync::Arc;
use std::time::Duration;

use camrec_cluster_core::duties::{Duty, DutyConfig, LeaderDuties, Membership};
use camrec_cluster_core::ids::NodeId;
use openraft::ServerState;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::control::Control;

/// Sends a heartbeat to the leader every interval, forever.
pub async fn run_heartbeats(control: Control, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        control.heartbeat().await;
    }
}

/// The leader's control loop (idle on followers): feeds the [`LeaderDuties`] core and executes
/// what it returns.
pub async fn run_duties(
    control: Control,
    clock: Arc<dyn Clock>,
    config: DutyConfig,
    mut heartbeats: mpsc::Receiver<NodeId>,
) {
    let mut duties = LeaderDuties::new(control.cluster.id, config);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            hb = heartbeats.recv() => {
                let Some(node) = hb else { return };
                duties.handle_heartbeat(clock.now().mono_ms, node);
                continue;
            }
            _ = tick.tick() => {}
        }
        let now_ms = clock.now().mono_ms;
        let metrics = control.cluster.raft.metrics().borrow().clone();
        let is_leader = metrics.state == ServerState::Leader;
        duties.handle_leadership(now_ms, is_leader);
        let membership = {
            let m = metrics.membership_config.membership();
            Membership { voters: m.voter_ids().collect(), learners: m.learner_ids().collect() }
        };
        let duty = {
            let g = control.cluster.sm.lock();
            duties.poll_duty(now_ms, &g.state, &membership)
        };
        match duty {
            None => {}
            Some(Duty::Propose(cmd)) => {
                tracing::info!(?cmd, "leader duty");
                if let Err(e) = control.propose(cmd).await {
                    tracing::warn!(error = %e, "leader duty proposal failed");
                }
            }
            Some(Duty::ChangeVoters(voters)) => {
                tracing::info!(from = ?membership.voters, to = ?voters, "changing Raft voters");
                // Blocks until the joint and final configs commit: one voter change at a time.
                if let Err(e) = control.cluster.raft.change_membership(voters, true).await {
                    tracing::warn!(error = %e, "voter change failed");
                }
            }
        }
    }
}
