//! The uploader actor: moves sealed segments from the local buffer into the object store. The
//! sans-IO [`UploadScheduler`] decides what to upload next and when to retry; this shell runs the
//! uploads and reports results back to it. A segment's local file is deleted only after the
//! store confirmed it (`confirm_uploaded` runs after a successful put).

use std::collections::BTreeMap;
use std::sync::Arc;

use camrec_node_core::segment::SegmentMeta;
use camrec_node_core::upload::{RetryKind, UploadConfig, UploadScheduler};
use camrec_storage::buffer::SealedId;
use camrec_storage::error::{ErrorKind, StoreError};
use camrec_storage::keys::object_key;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::node_ctx::NodeCtx;
use crate::status::Counters;
use crate::timer::CoreTimer;

pub enum UploaderMsg {
    Sealed { id: SealedId, meta: SegmentMeta },
    Done { id: SealedId, result: Result<u64, StoreError> },
    Tick,
}

pub struct UploaderArgs {
    pub ctx: Arc<NodeCtx>,
    pub config: UploadConfig,
    pub seed: u64,
}

pub struct Uploader;

pub struct UploaderState {
    ctx: Arc<NodeCtx>,
    core: UploadScheduler,
    metas: BTreeMap<SealedId, SegmentMeta>,
    timer: CoreTimer,
    /// Start (mono ms) of the current streak of failed uploads.
    failing_since: Option<u64>,
}

impl Actor for Uploader {
    type Msg = UploaderMsg;
    type State = UploaderState;
    type Arguments = UploaderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<UploaderMsg>,
        args: UploaderArgs,
    ) -> Result<UploaderState, ActorProcessingErr> {
        let mut st = UploaderState {
            core: UploadScheduler::new(args.config, args.seed),
            ctx: args.ctx,
            metas: BTreeMap::new(),
            timer: CoreTimer::default(),
            failing_since: None,
        };
        // Resume what a previous run sealed but did not upload.
        let buffer = st.ctx.buffer.clone();
        let pending = tokio::task::spawn_blocking(move || buffer.pending()).await??;
        let now_ms = st.ctx.clock.now().mono_ms;
        if !pending.is_empty() {
            tracing::info!(segments = pending.len(), "resuming uploads from the local buffer");
        }
        for (id, meta) in pending {
            st.metas.insert(id, meta);
            st.core.handle_sealed(now_ms, id.0);
        }
        st.pump(&myself);
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<UploaderMsg>,
        msg: UploaderMsg,
        st: &mut UploaderState,
    ) -> Result<(), ActorProcessingErr> {
        let now_ms = st.ctx.clock.now().mono_ms;
        match msg {
            UploaderMsg::Sealed { id, meta } => {
                st.metas.insert(id, meta);
                st.core.handle_sealed(now_ms, id.0);
            }
            UploaderMsg::Done { id, result } => match result {
                Ok(bytes) => {
                    if let Some(since) = st.failing_since.take() {
                        tracing::info!(after_ms = now_ms.saturating_sub(since), "uploads succeed again");
                    }
                    st.metas.remove(&id);
                    Counters::add(&st.ctx.status.counters.segments_uploaded, 1);
                    Counters::add(&st.ctx.status.counters.bytes_uploaded, bytes);
                    metrics::counter!("camrec_segments_uploaded_total").increment(1);
                    st.core.handle_result(now_ms, id.0, Ok(()));
                }
                Err(e) => {
                    Counters::add(&st.ctx.status.counters.upload_failures, 1);
                    metrics::counter!("camrec_upload_failures_total").increment(1);
                    // One warning per failure streak; retries of the same outage log at debug.
                    let msg = crate::runtime::first_line(&e.message);
                    if st.failing_since.is_none() {
                        st.failing_since = Some(now_ms);
                        tracing::warn!(segment = id.0, kind = ?e.kind, error = %msg, "upload failed; retrying with backoff");
                    } else {
                        tracing::debug!(segment = id.0, kind = ?e.kind, error = %msg, "upload failed");
                    }
                    // Only a conflicting object or a corrupt local file can never succeed; a missing
                    // bucket or denied access is an operator fix away, so it is retried (with the
                    // capped backoff) rather than parked until a restart.
                    let kind = match e.kind {
                        ErrorKind::Conflict | ErrorKind::DataLoss => RetryKind::Fatal,
                        ErrorKind::Retryable | ErrorKind::NotFound | ErrorKind::Fatal => RetryKind::Retryable,
                    };
                    st.core.handle_result(now_ms, id.0, Err(kind));
                }
            },
            UploaderMsg::Tick => st.timer.fired(),
        }
        st.pump(&myself);
        Ok(())
    }
}

impl UploaderState {
    fn pump(&mut self, myself: &ActorRef<UploaderMsg>) {
        let now_ms = self.ctx.clock.now().mono_ms;
        while let Some(raw) = self.core.poll_start(now_ms) {
            let id = SealedId(raw);
            let Some(meta) = self.metas.get(&id).cloned() else {
                debug_assert!(false, "scheduler started unknown segment {}", id.0);
                continue;
            };
            let ctx = self.ctx.clone();
            let actor = myself.clone();
            tokio::spawn(async move {
                let result = upload_one(&ctx, id, &meta).await;
                let _ = actor.cast(UploaderMsg::Done { id, result });
            });
        }
        metrics::gauge!("camrec_upload_pending_segments").set(self.metas.len() as f64);
        self.timer.arm(self.core.poll_timeout(), now_ms, myself, || UploaderMsg::Tick);
    }
}

/// Verify → put (create-only) → confirm. Returns the bytes uploaded.
async fn upload_one(ctx: &NodeCtx, id: SealedId, meta: &SegmentMeta) -> Result<u64, StoreError> {
    let buffer = ctx.buffer.clone();
    // Second half of the pair check: the file still matches the checksum taken at seal.
    let path = tokio::task::spawn_blocking(move || buffer.verify(id).and_then(|_| buffer.path_of(id)))
        .await
        .map_err(|e| StoreError::fatal(format!("verify task: {e}")))??;
    let key = object_key(&ctx.prefix, meta);
    let started = tokio::time::Instant::now();
    ctx.store.put_file(&key, &path, meta.bytes, meta.crc32c).await?;
    metrics::histogram!("camrec_upload_seconds").record(started.elapsed().as_secs_f64());
    let buffer = ctx.buffer.clone();
    tokio::task::spawn_blocking(move || buffer.confirm_uploaded(id))
        .await
        .map_err(|e| StoreError::fatal(format!("confirm task: {e}")))??;
    Ok(meta.bytes)
}
