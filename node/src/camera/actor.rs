//! The camera actor: one per camera this node records. It owns the sans-IO recorder core and
//! executes what the core asks for — open an RTSP session, write fragment bytes to the buffer
//! file, seal, report state. It makes no recording decisions itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use camrec_cluster_core::ids::{CameraId, Epoch};
use camrec_cluster_core::state::CameraSpec;
use camrec_node_core::recorder::{Input, Output, Recorder};
use camrec_node_core::segment::SegmentMeta;
use camrec_storage::buffer::OpenSegmentFile;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::ingest::{self, EventSink, IngestEvent, Target};
use crate::node_ctx::NodeCtx;
use crate::status::Counters;
use crate::timer::CoreTimer;
use crate::uploader::UploaderMsg;

pub enum CameraMsg {
    /// An event from the RTSP session numbered `session`.
    Ingest { session: u64, event: IngestEvent, _permit: OwnedSemaphorePermit },
    /// The recorder core's timer fired.
    Tick,
    /// The node's buffer became full (`Some(reason)`) or drained (`None`).
    StorageFull(Option<String>),
}

pub struct CameraArgs {
    pub spec: CameraSpec,
    pub epoch: Epoch,
    /// This node is the incoming owner of a make-before-break handover: report the first
    /// sealed segment so the leader can complete it.
    pub handover: bool,
    pub ctx: Arc<NodeCtx>,
}

pub struct CameraActor;

pub struct CameraActorState {
    id: CameraId,
    target: Target,
    recorder: Recorder,
    ctx: Arc<NodeCtx>,
    /// Current RTSP session: its number and task.
    session: Option<(u64, JoinHandle<()>)>,
    sessions_started: u64,
    /// Open segment files by recorder sequence number (two at once during an audio tail).
    open: BTreeMap<u64, OpenSegmentFile>,
    timer: CoreTimer,
    permits: Arc<Semaphore>,
    epoch: Epoch,
    /// Still to report the first sealed segment of a handover.
    handover_pending: bool,
    /// Forwards changes of `ctx.storage_full` to this actor.
    storage_watch: JoinHandle<()>,
}

impl Actor for CameraActor {
    type Msg = CameraMsg;
    type State = CameraActorState;
    type Arguments = CameraArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CameraMsg>,
        args: CameraArgs,
    ) -> Result<CameraActorState, ActorProcessingErr> {
        let CameraArgs { spec, epoch, handover, ctx } = args;
        let url = url::Url::parse(&spec.url)?;
        let target = Target {
            url,
            username: spec.username.clone(),
            password: spec.password.clone(),
            transport: spec.transport,
            connect_timeout: std::time::Duration::from_millis(ctx.recorder_config.stall_timeout_ms),
        };
        let now = ctx.clock.now();
        let mut recorder = Recorder::new(
            spec.id.clone(),
            ctx.node_id,
            epoch,
            ctx.recorder_config.clone(),
            ctx.seed_for(&spec.id, epoch),
            now,
        );
        ctx.status.update(&spec.id, |s| {
            s.epoch = epoch;
            s.segments_sealed = 0;
            s.segments_dropped = 0;
        });
        // A camera started while the buffer is full starts paused.
        let mut storage_rx = ctx.storage_full.subscribe();
        let full = storage_rx.borrow_and_update().clone();
        if full.is_some() {
            recorder.handle(now, Input::StorageFull(full));
        }
        let storage_watch = {
            let actor = myself.clone();
            tokio::spawn(async move {
                while storage_rx.changed().await.is_ok() {
                    let full = storage_rx.borrow_and_update().clone();
                    if actor.cast(CameraMsg::StorageFull(full)).is_err() {
                        break;
                    }
                }
            })
        };
        let mut state = CameraActorState {
            id: spec.id,
            target,
            recorder,
            permits: Arc::new(Semaphore::new(ctx.frames_queued_max)),
            ctx,
            session: None,
            sessions_started: 0,
            open: BTreeMap::new(),
            timer: CoreTimer::default(),
            epoch,
            handover_pending: handover,
            storage_watch,
        };
        state.drain(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<CameraMsg>,
        msg: CameraMsg,
        st: &mut CameraActorState,
    ) -> Result<(), ActorProcessingErr> {
        let now = st.ctx.clock.now();
        match msg {
            CameraMsg::Ingest { session, event, _permit } => {
                if st.session.as_ref().map(|(n, _)| *n) != Some(session) {
                    return Ok(()); // from a session we already closed
                }
                match event {
                    IngestEvent::Connected(params) => st.recorder.handle(now, Input::Connected { params }),
                    IngestEvent::Frames(frames) => {
                        for frame in frames {
                            st.recorder.handle(now, Input::Frame(frame));
                        }
                    }
                    IngestEvent::Failed(failure) => {
                        st.session = None;
                        st.recorder.handle(now, Input::Disconnected { failure });
                    }
                }
            }
            CameraMsg::Tick => {
                st.timer.fired();
                st.recorder.handle(now, Input::Tick);
            }
            CameraMsg::StorageFull(full) => st.recorder.handle(now, Input::StorageFull(full)),
        }
        st.drain(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<CameraMsg>,
        st: &mut CameraActorState,
    ) -> Result<(), ActorProcessingErr> {
        let now = st.ctx.clock.now();
        st.recorder.stop(now);
        st.drain(&myself);
        if let Some((_, task)) = st.session.take() {
            task.abort();
        }
        st.timer.cancel();
        st.storage_watch.abort();
        // Anything still open could not be sealed (no frames yet): drop the partial file.
        for (_, file) in std::mem::take(&mut st.open) {
            if let Err(e) = file.abort() {
                tracing::warn!(camera = %st.id, error = %e, "removing unsealed segment file");
            }
        }
        st.ctx.status.remove(&st.id);
        Ok(())
    }
}

impl CameraActorState {
    /// Executes every pending core output, then (re)arms the core's timer.
    fn drain(&mut self, myself: &ActorRef<CameraMsg>) {
        while let Some(out) = self.recorder.poll_output() {
            match out {
                Output::Connect => self.connect(myself),
                Output::Disconnect { reason } => {
                    tracing::info!(camera = %self.id, %reason, "closing RTSP session");
                    if let Some((_, task)) = self.session.take() {
                        task.abort();
                    }
                }
                Output::OpenSegment { start } => match self.ctx.buffer.begin(start) {
                    Ok(file) => {
                        debug_assert_eq!(
                            (file.start().owner, file.start().epoch),
                            (self.ctx.node_id, self.epoch)
                        );
                        self.open.insert(file.seq(), file);
                    }
                    Err(e) => {
                        Counters::add(&self.ctx.status.counters.buffer_errors, 1);
                        tracing::error!(camera = %self.id, error = %e, "cannot open segment file");
                    }
                },
                Output::Write { seq, bytes } => {
                    if let Some(file) = self.open.get_mut(&seq) {
                        if let Err(e) = file.write(&bytes) {
                            Counters::add(&self.ctx.status.counters.buffer_errors, 1);
                            tracing::error!(camera = %self.id, error = %e, "segment write failed; dropping segment");
                            if let Some(file) = self.open.remove(&seq) {
                                let _ = file.abort();
                            }
                        } else {
                            Counters::add(&self.ctx.status.counters.bytes_recorded, bytes.len() as u64);
                        }
                    }
                }
                Output::Seal { meta } => self.seal(meta),
                Output::StateChanged(state) => {
                    tracing::debug!(camera = %self.id, ?state, "camera state");
                    self.ctx.status.update(&self.id, |s| s.state = state);
                }
            }
        }
        self.arm_timer(myself);
    }

    fn connect(&mut self, myself: &ActorRef<CameraMsg>) {
        if let Some((_, task)) = self.session.take() {
            task.abort();
        }
        self.sessions_started += 1;
        let session = self.sessions_started;
        let actor = myself.clone();
        let sink = EventSink {
            permits: self.permits.clone(),
            deliver: Box::new(move |event, permit| {
                actor.cast(CameraMsg::Ingest { session, event, _permit: permit }).is_ok()
            }),
        };
        let task =
            tokio::spawn(ingest::run_session(self.target.clone(), self.ctx.session_group.clone(), sink));
        self.session = Some((session, task));
    }

    fn seal(&mut self, meta: SegmentMeta) {
        let Some(file) = self.open.remove(&meta.seq) else {
            tracing::warn!(camera = %self.id, seq = meta.seq, "seal for a segment with no file (its write failed)");
            return;
        };
        let ctx = self.ctx.clone();
        let id = self.id.clone();
        let report_handover = std::mem::take(&mut self.handover_pending).then_some(self.epoch);
        Counters::add(&ctx.status.counters.seals_in_flight, 1);
        // fsync + rename + index flush happen off the actor so frames keep flowing.
        tokio::spawn(async move {
            let end_ms = meta.end_wall_ms();
            let sealed =
                tokio::task::spawn_blocking(move || file.seal(meta.clone()).map(|sid| (sid, meta))).await;
            match sealed {
                Ok(Ok((sealed_id, meta))) => {
                    Counters::add(&ctx.status.counters.segments_sealed, 1);
                    metrics::counter!("camrec_segments_sealed_total").increment(1);
                    ctx.status.update(&id, |s| {
                        s.segments_sealed += 1;
                        s.last_segment_end_ms = Some(end_ms);
                    });
                    if let Some(uploader) = ctx.uploader.get() {
                        let _ = uploader.cast(UploaderMsg::Sealed { id: sealed_id, meta });
                    }
                    if let Some(epoch) = report_handover {
                        if ctx.handovers.try_send((id.clone(), epoch)).is_err() {
                            tracing::warn!(camera = %id, "handover report queue full; the leader will retry the drain");
                        }
                    }
                }
                Ok(Err(e)) => {
                    Counters::add(&ctx.status.counters.buffer_errors, 1);
                    tracing::error!(camera = %id, error = %e, "sealing segment failed");
                }
                Err(e) => tracing::error!(camera = %id, error = %e, "seal task panicked"),
            }
            ctx.status.counters.seals_in_flight.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        });
    }

    fn arm_timer(&mut self, myself: &ActorRef<CameraMsg>) {
        let now_ms = self.ctx.clock.now().mono_ms;
        self.timer.arm(self.recorder.poll_timeout(), now_ms, myself, || CameraMsg::Tick);
    }
}
