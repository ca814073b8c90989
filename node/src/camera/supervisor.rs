//! The camera supervisor: reconciles "cameras my local replica assigns to me" into one camera
//! actor per camera. It follows the replica's change feed (and resyncs from the whole table
//! after a snapshot install or an overflow), restarts a camera whose spec or epoch changed, and
//! stops children in camera-id order (ractor's own `stop_children` iterates a HashMap, which
//! would make shutdown order — and the simulator's traces — vary from run to run).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use camrec_cluster::sm::StateMachine;
use camrec_cluster::types::ProdConfig;
use camrec_cluster_core::ids::{CameraId, Epoch};
use camrec_cluster_core::state::{CameraSpec, Change};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::task::JoinHandle;

use super::actor::{CameraActor, CameraArgs, CameraMsg};
use crate::node_ctx::NodeCtx;

/// Bound on how long shutdown waits for one camera to seal and stop.
const CAMERA_STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub enum SupervisorMsg {
    /// The replica applied entries; drain its change feed.
    Applied,
    /// Reconcile one camera again (after its actor died).
    Recheck(CameraId),
}

pub struct SupervisorArgs {
    pub ctx: Arc<NodeCtx>,
    pub sm: StateMachine<ProdConfig>,
}

pub struct CameraSupervisor;

struct Child {
    actor: ActorRef<CameraMsg>,
    join: JoinHandle<()>,
    epoch: Epoch,
    spec: CameraSpec,
}

pub struct SupervisorState {
    ctx: Arc<NodeCtx>,
    sm: StateMachine<ProdConfig>,
    children: BTreeMap<CameraId, Child>,
    watcher: JoinHandle<()>,
}

impl Actor for CameraSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut rx = args.sm.subscribe();
        let me = myself.clone();
        let watcher = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                if me.cast(SupervisorMsg::Applied).is_err() {
                    break;
                }
            }
        });
        let mut st = SupervisorState { ctx: args.ctx, sm: args.sm, children: BTreeMap::new(), watcher };
        // Start from the whole table: the change feed only carries what happens from now on.
        st.sm.lock().state.request_resync();
        st.reconcile_changes(&myself).await?;
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Applied => st.reconcile_changes(&myself).await?,
            SupervisorMsg::Recheck(id) => {
                if st.children.get(&id).is_some_and(|c| c.join.is_finished()) {
                    st.children.remove(&id);
                }
                st.reconcile(&myself, &id).await?;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // A camera actor died on its own (a bug, or a failed start): isolate it, retry later.
        let (cell, why): (ActorCell, String) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason.unwrap_or_default()),
            _ => return Ok(()),
        };
        let dead =
            st.children.iter().find(|(_, c)| c.actor.get_id() == cell.get_id()).map(|(id, _)| id.clone());
        if let Some(id) = dead {
            tracing::warn!(camera = %id, reason = %why, "camera actor stopped unexpectedly; restarting in 1 s");
            myself.send_after(Duration::from_secs(1), move || SupervisorMsg::Recheck(id));
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        st.watcher.abort();
        let children = std::mem::take(&mut st.children);
        // Stop all in id order first (they seal in parallel), then wait for each in id order.
        for child in children.values() {
            child.actor.stop(Some("node shutting down".into()));
        }
        for (id, child) in children {
            if tokio::time::timeout(CAMERA_STOP_TIMEOUT, child.join).await.is_err() {
                tracing::warn!(camera = %id, "camera did not stop in time");
            }
        }
        Ok(())
    }
}

impl SupervisorState {
    async fn reconcile_changes(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let ids: BTreeSet<CameraId> = {
            let mut g = self.sm.lock();
            if g.state.take_resync() {
                while g.state.poll_change().is_some() {}
                g.state.cameras().keys().cloned().chain(self.children.keys().cloned()).collect()
            } else {
                let mut ids = BTreeSet::new();
                while let Some(change) = g.state.poll_change() {
                    match change {
                        Change::Camera { id } | Change::CameraRemoved { id, .. } => ids.insert(id),
                    };
                }
                ids
            }
        };
        for id in ids {
            self.reconcile(myself, &id).await?;
        }
        Ok(())
    }

    /// Makes the running actor for `id` match what the replica says.
    async fn reconcile(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &CameraId,
    ) -> Result<(), ActorProcessingErr> {
        // Record when this node owns the camera, or is its incoming owner during a handover.
        let me = self.ctx.node_id;
        let desired: Option<(CameraSpec, Epoch, bool)> = {
            let g = self.sm.lock();
            g.state.camera(id).filter(|c| c.spec.enabled).and_then(|c| {
                let a = c.assignment?;
                a.recording_epoch(me).map(|epoch| (c.spec.clone(), epoch, a.owner != me))
            })
        };
        let running_matches = match (&desired, self.children.get(id)) {
            // Label or bitrate edits keep the session (and the segment) running.
            (Some((spec, epoch, _)), Some(child)) => child.epoch == *epoch && child.spec.same_stream(spec),
            (None, None) => true,
            _ => false,
        };
        if running_matches {
            if let (Some((spec, ..)), Some(child)) = (&desired, self.children.get_mut(id)) {
                child.spec = spec.clone();
            }
        }
        if running_matches {
            return Ok(());
        }
        if let Some(child) = self.children.remove(id) {
            tracing::info!(camera = %id, "stopping camera");
            child.actor.stop(Some("assignment changed".into()));
            // Wait so the old actor seals before a new one for the same camera opens files.
            let _ = tokio::time::timeout(CAMERA_STOP_TIMEOUT, child.join).await;
        }
        if let Some((spec, epoch, handover)) = desired {
            tracing::info!(camera = %id, epoch, handover, "starting camera");
            let args = CameraArgs { spec: spec.clone(), epoch, handover, ctx: self.ctx.clone() };
            match Actor::spawn_linked(None, CameraActor, args, myself.get_cell()).await {
                Ok((actor, join)) => {
                    self.children.insert(id.clone(), Child { actor, join, epoch, spec });
                }
                Err(e) => {
                    // e.g. an unparseable URL: the camera cannot run here; others are unaffected.
                    tracing::error!(camera = %id, error = %e, "camera failed to start");
                    self.ctx.status.update(id, |s| {
                        s.state = camrec_node_core::state::CameraState::Backoff {
                            last_error: format!("failed to start: {e}"),
                            retry_in_ms: 30_000,
                            attempts: 1,
                        };
                    });
                    let id = id.clone();
                    myself.send_after(Duration::from_secs(30), move || SupervisorMsg::Recheck(id));
                }
            }
        }
        Ok(())
    }
}
