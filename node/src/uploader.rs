//! The uploader actor: moves sealed segments from the local buffer into the object store. The
//! sans-IO [`UploadScheduler`] decides what to upload next and when to retry; this shell runs the
//! uploads and reports results back to it. A segment's local file is deleted only after the
//! store confirmed it (`confirm_uploaded` runs after a successful put).
//!
//! The uploader also runs the sans-IO [`BufferGovernor`] (the buffer's disk quota) after every
//! seal and upload result: it drops the pending segments the governor names (each logged at WARN
//! with camera, start time and bytes, counted in the node counters, `/metrics` and the camera's
//! status — never silently), pauses and resumes recording through `NodeCtx::storage_full`, and
//! publishes readiness for `/readyz`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use camrec_node_core::quota::{BufferGovernor, PendingSegment, QuotaConfig, QuotaOutput};
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
    pub quota: QuotaConfig,
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
    governor: BufferGovernor,
    /// Uploads started and not yet reported (the governor never drops these).
    in_flight: BTreeSet<SealedId>,
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
            governor: BufferGovernor::new(args.quota),
            in_flight: BTreeSet::new(),
        };
        // Drop counters exist from the start (a scrape shows 0, not nothing).
        metrics::counter!("camrec_buffer_dropped_segments_total").increment(0);
        metrics::counter!("camrec_buffer_dropped_bytes_total").increment(0);
        metrics::counter!("camrec_upload_retries_total").increment(0);
        metrics::counter!("camrec_upload_failures_total").increment(0);
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
        st.govern().await;
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
        let is_tick = matches!(msg, UploaderMsg::Tick);
        match msg {
            UploaderMsg::Sealed { id, meta } => {
                st.metas.insert(id, meta);
                st.core.handle_sealed(now_ms, id.0);
            }
            UploaderMsg::Done { id, result } => {
                st.in_flight.remove(&id);
                match result {
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
                            ErrorKind::Retryable | ErrorKind::NotFound | ErrorKind::Fatal => {
                                RetryKind::Retryable
                            }
                        };
                        if kind == RetryKind::Retryable {
                            Counters::add(&st.ctx.status.counters.upload_retries, 1);
                            metrics::counter!("camrec_upload_retries_total").increment(1);
                        }
                        st.core.handle_result(now_ms, id.0, Err(kind));
                    }
                }
            }
            UploaderMsg::Tick => st.timer.fired(),
        }
        if !is_tick {
            st.govern().await;
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
            self.in_flight.insert(id);
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

impl UploaderState {
    /// Reports the buffer's contents to the governor and executes its outputs.
    async fn govern(&mut self) {
        if self.governor.config().quota_bytes == 0 {
            return;
        }
        let pending: Vec<PendingSegment> = self
            .metas
            .iter()
            .map(|(id, meta)| PendingSegment {
                id: id.0,
                bytes: meta.bytes,
                camera: meta.camera.clone(),
                start_wall_ms: meta.start_wall_ms,
                uploading: self.in_flight.contains(id),
            })
            .collect();
        self.governor.handle_usage(&pending, self.ctx.buffer.open_bytes());
        let quota_bytes = self.governor.config().quota_bytes;
        let mut drops = Vec::new();
        while let Some(out) = self.governor.poll_output() {
            match out {
                QuotaOutput::Drop(segment) => drops.push(SealedId(segment.id)),
                QuotaOutput::PauseRecording => {
                    let reason = format!("local buffer full (quota {quota_bytes} bytes): recording paused");
                    tracing::warn!(quota_bytes, used_bytes = self.governor.stats().used_bytes, "{reason}");
                    self.ctx.storage_full.send_replace(Some(reason));
                }
                QuotaOutput::ResumeRecording => {
                    tracing::info!(
                        quota_bytes,
                        used_bytes = self.governor.stats().used_bytes,
                        "local buffer drained: recording resumes"
                    );
                    self.ctx.storage_full.send_replace(None);
                }
                QuotaOutput::Ready(ready) => {
                    self.ctx.status.buffer_over_high_watermark.store(!ready, Ordering::Relaxed);
                    if ready {
                        tracing::info!(quota_bytes, "local buffer below its low watermark: ready");
                    } else {
                        tracing::warn!(
                            quota_bytes,
                            used_bytes = self.governor.stats().used_bytes,
                            "local buffer over its high watermark: not ready"
                        );
                    }
                }
            }
        }
        if drops.is_empty() {
            return;
        }
        for id in &drops {
            self.core.remove(id.0);
        }
        let buffer = self.ctx.buffer.clone();
        let results = tokio::task::spawn_blocking(move || {
            drops.into_iter().map(|id| (id, buffer.drop_pending(id))).collect::<Vec<_>>()
        })
        .await;
        let results = match results {
            Ok(results) => results,
            Err(e) => {
                tracing::error!(error = %e, "buffer drop task failed");
                return;
            }
        };
        for (id, result) in results {
            let meta = self.metas.remove(&id);
            match result {
                Ok(meta) => self.count_drop(id, &meta, quota_bytes),
                // Confirmed uploaded in the meantime: nothing was lost.
                Err(e) if e.kind == ErrorKind::NotFound => {
                    tracing::debug!(segment = id.0, "segment to drop was no longer pending")
                }
                Err(e) => {
                    // Still pending (the record removal failed): upload it when the store returns.
                    Counters::add(&self.ctx.status.counters.buffer_errors, 1);
                    tracing::error!(segment = id.0, error = %e, "cannot drop segment from the local buffer");
                    if let Some(meta) = meta {
                        self.metas.insert(id, meta);
                        self.core.handle_sealed(self.ctx.clock.now().mono_ms, id.0);
                    }
                }
            }
        }
    }

    fn count_drop(&self, id: SealedId, meta: &SegmentMeta, quota_bytes: u64) {
        let c = &self.ctx.status.counters;
        Counters::add(&c.segments_dropped, 1);
        Counters::add(&c.bytes_dropped, meta.bytes);
        metrics::counter!("camrec_buffer_dropped_segments_total").increment(1);
        metrics::counter!("camrec_buffer_dropped_bytes_total").increment(meta.bytes);
        tracing::warn!(
            camera = %meta.camera,
            start_wall_ms = meta.start_wall_ms,
            duration_ms = meta.duration_ms,
            bytes = meta.bytes,
            segment = id.0,
            quota_bytes,
            "dropped a pending segment: local buffer over quota while uploads fail (drop-oldest policy)"
        );
        self.ctx.status.update_if_present(&meta.camera, |s| {
            s.segments_dropped += 1;
            s.note = Some(format!(
                "{} segment(s) dropped: local buffer over its quota ({quota_bytes} bytes) while uploads fail",
                s.segments_dropped
            ));
        });
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
