//! The local segment buffer: segment files on disk plus a sled index of the sealed ones, at a
//! data directory:
//!
//! ```text
//! {dir}/index/        sled database; tree "segments": SealedId (u64 BE) -> IndexRecord
//!                                    tree "open": part file name -> SegmentStart
//! {dir}/open/         {camera}-{unique:020}.part   segments being written
//! {dir}/sealed/       {unique:020}-{camera}.mp4    sealed segments waiting for upload
//! {dir}/quarantine/   files set aside by `open` (unsalvageable crash leftovers, orphans)
//! ```
//!
//! `unique` comes from sled's `generate_id` at [`SegmentBuffer::begin`] (ids never repeat, across
//! restarts too), and a sealed file keeps the `unique` of its `.part`: `{camera}-{unique}.part`
//! becomes `{unique}-{camera}.mp4`, so recovery can map a sealed file back to its `open` record
//! (the [`SealedId`], the index key, is generated at seal time and is not in the name). Files
//! sealed by older versions are named `{id:020}-{camera}.mp4` (their index records store the
//! name); no `open` record ever maps to such a name, because ids and uniques share one sequence.
//!
//! Segment bytes go straight to the `.part` file as the recorder emits them; the buffer never
//! holds a segment in memory. Blocking `std::fs` and sled calls: async callers use
//! `spawn_blocking`.
//!
//! # Durability (fsync discipline)
//! [`SegmentBuffer::begin`] inserts the segment's `open` record (its [`SegmentStart`]: camera,
//! owner, epoch, seq, start time, codec, audio) and flushes sled *before* creating the `.part`
//! file, so every `.part` has a durable record naming what it is. That is one more sled flush
//! per segment (once per ~6 s per camera; `begin` + `abort` measured 0.13 ms on the dev VM's
//! ext4, next to the flush and two fsyncs `seal` already pays). The bytes themselves are not
//! fsync'd while being written: recovery validates whatever reached the disk.
//!
//! A segment is *sealed* exactly when its index record is flushed. [`OpenSegmentFile::seal`]:
//! 1. pair check, first half: the size and running CRC-32C of what was written must equal the
//!    recorder's [`SegmentMeta`] (the recorder checksummed what it emitted); otherwise the file
//!    is quarantined and the seal fails with `DataLoss`;
//! 2. `fsync` the file;
//! 3. `rename` it from `open/` to `sealed/{unique}-{camera}.mp4` and `fsync` `sealed/`;
//! 4. insert the index record, remove the `open` record, `flush` sled (one flush for both; a
//!    crash that keeps only the insert leaves an `open` record without a file, which `open`
//!    drops).
//!
//! Only after step 4 does `seal` return the [`SealedId`]. [`SegmentBuffer::verify`] re-reads the
//! file right before upload (pair check, second half).
//!
//! [`SegmentBuffer::confirm_uploaded`] runs in the opposite order: remove the index record and
//! flush sled, *then* delete the file. A crash in between leaves a sealed file without a
//! record (an *orphan*), never a record without its file, so a record always names bytes that
//! exist — the uploader can trust the index. The orphan is harmless: `open` sets it aside.
//! When `confirm_uploaded` runs, the segment's `open` record is durably gone: `seal` removed it
//! in the flush it returns after, and `open` clears (and flushes) every leftover `open` record
//! before it returns. So a sealed file without an index record *but with* its `open` record was
//! never confirmed, and one without either was uploaded (or is unknown).
//!
//! [`OpenSegmentFile::abort`] deletes the file, then the `open` record (not flushed: a record
//! without a file is dropped at the next `open`).
//!
//! # Recovery ([`SegmentBuffer::open`])
//! - `open/*` leftovers (a crash mid-segment, or a seal that failed before its rename) are
//!   **salvaged** when they can be: for a `.part` with an `open` record, the file is read and
//!   [`salvage_prefix`] finds its longest prefix ending after a complete, consistent fragment;
//!   the file is truncated to that prefix and sealed through the same steps 2-4 as `seal` (fsync,
//!   rename, `fsync` `sealed/`, index insert + `open` record removal + flush), with a
//!   [`SegmentMeta`] made from the record and the prefix (video duration and frames from the trun
//!   entries, size, CRC-32C of the prefix). The uploader then finds it pending like any other
//!   segment. A crash during salvage repeats it at the next `open` (truncation is idempotent). A
//!   `.part` without a record (written by an older version, or a stray), with no complete
//!   fragment, without video, or whose init segment contradicts its record (codec, audio) is
//!   moved to `quarantine/` untouched. `open` records left without a file are dropped.
//! - Files in `sealed/` without an index record (*orphans*) come from one of two crashes:
//!   - a seal (or a salvage) that crashed between its rename and its index flush: the file is
//!     complete (fsync'd before the rename, and checksummed against the recorder's metadata)
//!     but was never acknowledged, and its `open` record still exists (it is removed only in
//!     the seal's flush). Such an orphan is **re-indexed**: its [`SegmentMeta`] is rebuilt from
//!     the `open` record and a scan of the file exactly as for a `.part` (a complete file is
//!     one valid prefix; anything after the longest valid prefix is truncated, fsync'd), then
//!     the index record is inserted, the `open` record removed, sled flushed, and the uploader
//!     finds it pending. A crash during re-indexing repeats it at the next `open`. If the file
//!     cannot be scanned into a segment (disk corruption) it is quarantined and counted in
//!     [`OpenReport::lost_segments`].
//!   - a `confirm_uploaded` that crashed between its record removal and its file delete: no
//!     `open` record exists (see above). Such orphans, and any other sealed file without an
//!     `open` record, are **quarantined, not deleted**: the buffer never deletes bytes it cannot
//!     prove were uploaded. Quarantining is safe either way: if the file was somehow not
//!     uploaded it is still kept; re-indexing it instead would only upload it again, which the
//!     create-only put reports as `AlreadyPresent`. Orphans need a crash at one precise moment,
//!     so the quarantine grows slowly and an operator (or the salvage tool) clears it.
//!
//!   Leftover `open` records are cleared (flushed) only after the orphans were matched against
//!   them.
//! - Index records whose file is missing are dropped (flushed) and returned in
//!   [`OpenReport::lost`] for the node to log and count: those segments are gone.
//! - An index record that cannot be decoded (corruption or a newer format) fails `open` with
//!   `DataLoss` rather than being misread or silently dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use camrec_cluster_core::codec;
use camrec_cluster_core::ids::CameraId;
use camrec_node_core::fmp4::salvage_prefix;
use camrec_node_core::segment::{SegmentContent, SegmentMeta, SegmentStart};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::object_store::checksum_file;
use crate::object_store::local::fsync_dir;

/// Largest segment file accepted; a recorder that never cuts is a bug, not a reason to fill the
/// disk.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;

/// sled's page cache (its default of 1 GiB is far more than an index of small records needs).
pub const INDEX_CACHE_BYTES_MAX: u64 = 64 << 20;

/// Most lost segments listed individually in an [`OpenReport`]; the count is always exact.
pub const REPORT_LOST_LISTED_MAX: usize = 1_000;

/// Identifies a sealed segment in the buffer. Ordered by seal time (ids come from sled's
/// monotonic `generate_id`, which never repeats across restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SealedId(pub u64);

/// Where a sealed segment is in its life; records are removed once uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum SegmentState {
    /// Sealed and durable; waiting for upload.
    Pending,
}

/// The value stored per sealed segment.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexRecord {
    meta: SegmentMeta,
    /// File name in `sealed/`.
    file_name: String,
    state: SegmentState,
}

/// What the buffer holds waiting for upload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    pub pending_segments: u64,
    pub pending_bytes: u64,
}

/// What recovery found and did at [`SegmentBuffer::open`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// `open/` leftovers whose complete fragments were sealed (pending upload).
    pub parts_salvaged: u64,
    /// Total video duration of the salvaged segments.
    pub salvaged_ms: u64,
    /// `open/` leftovers moved to `quarantine/` (nothing salvageable, or no `open` record).
    pub parts_quarantined: u64,
    /// Files in `sealed/` without an index record but with their `open` record (a seal that
    /// crashed after its rename), indexed again (pending upload).
    pub orphans_reindexed: u64,
    /// Files in `sealed/` without an index record, moved to `quarantine/`: those without an
    /// `open` record (already uploaded, or unknown), and those that could not be re-indexed
    /// (also counted in `lost_segments`).
    pub orphans_quarantined: u64,
    /// Segments lost: index records whose file was missing (dropped), and sealed files that
    /// could not be re-indexed (quarantined).
    pub lost_segments: u64,
    /// The first [`REPORT_LOST_LISTED_MAX`] lost index records (sealed files that could not be
    /// re-indexed have no id and are only counted).
    pub lost: Vec<(SealedId, SegmentMeta)>,
}

struct Inner {
    dir: PathBuf,
    open_dir: PathBuf,
    sealed_dir: PathBuf,
    quarantine_dir: PathBuf,
    db: sled::Db,
    segments: sled::Tree,
    /// Part file name -> [`SegmentStart`] of each segment being written.
    open_records: sled::Tree,
    stats: Mutex<BufferStats>,
    /// Bytes written to segments not yet sealed or aborted (they count against the quota).
    open_bytes: AtomicU64,
}

/// How long opening the index waits for a previous holder's file lock: sled's background
/// flusher releases it shortly after the `Db` is dropped, so an in-process reopen (or a restart
/// right after a crash, while the old process is being reaped) can briefly find it held.
const INDEX_LOCK_WAIT_MS: u64 = 3_000;
const INDEX_LOCK_RETRY_MS: u64 = 20;

fn open_index(path: &Path) -> Result<sled::Db, StoreError> {
    let mut waited_ms = 0;
    loop {
        match sled::Config::new().path(path).cache_capacity(INDEX_CACHE_BYTES_MAX).open() {
            Ok(db) => return Ok(db),
            // sled reports a held lock as an `Other` IO error carrying this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && waited_ms < INDEX_LOCK_WAIT_MS =>
            {
                std::thread::sleep(std::time::Duration::from_millis(INDEX_LOCK_RETRY_MS));
                waited_ms += INDEX_LOCK_RETRY_MS;
            }
            Err(e) => {
                return Err(StoreError::sled(
                    format_args!("open {} (is another camrec using this data dir?)", path.display()),
                    &e,
                ))
            }
        }
    }
}

/// The local segment buffer. Cheap to clone; clones share one index.
#[derive(Clone)]
pub struct SegmentBuffer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SegmentBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentBuffer").field("dir", &self.inner.dir).finish()
    }
}

/// A segment being written. Dropping it without [`seal`](Self::seal) or
/// [`abort`](Self::abort) (a crash) leaves the `.part` file for the next `open` to salvage.
#[derive(Debug)]
pub struct OpenSegmentFile {
    buffer: SegmentBuffer,
    file: fs::File,
    part_name: String,
    part_path: PathBuf,
    start: SegmentStart,
    bytes: u64,
    crc32c: u32,
}

fn io_err(what: &str, path: &Path, err: &io::Error) -> StoreError {
    StoreError::io(format_args!("{what} {}", path.display()), err)
}

fn record_key(id: SealedId) -> [u8; 8] {
    id.0.to_be_bytes()
}

fn decode_entry(key: &[u8], value: &[u8]) -> Result<(SealedId, IndexRecord), StoreError> {
    let id = SealedId(u64::from_be_bytes(
        key.try_into()
            .map_err(|_| StoreError::data_loss(format!("segment index key of {} bytes", key.len())))?,
    ));
    let record: IndexRecord =
        codec::decode("segment index record", value).map_err(|e| StoreError::codec(format!("{id:?}"), &e))?;
    Ok((id, record))
}

impl SegmentBuffer {
    /// Opens (creating if needed) the buffer at `dir` and recovers from a crash; see the module
    /// docs for what recovery does.
    pub fn open(dir: impl Into<PathBuf>) -> Result<(SegmentBuffer, OpenReport), StoreError> {
        let dir = dir.into();
        let open_dir = dir.join("open");
        let sealed_dir = dir.join("sealed");
        let quarantine_dir = dir.join("quarantine");
        for d in [&dir, &open_dir, &sealed_dir, &quarantine_dir] {
            fs::create_dir_all(d).map_err(|e| io_err("create", d, &e))?;
        }
        fsync_dir(&dir)?;
        let index_path = dir.join("index");
        let db = open_index(&index_path)?;
        let segments = db.open_tree("segments").map_err(|e| StoreError::sled("open tree segments", &e))?;
        let open_records = db.open_tree("open").map_err(|e| StoreError::sled("open tree open", &e))?;
        let buffer = SegmentBuffer {
            inner: Arc::new(Inner {
                dir,
                open_dir,
                sealed_dir,
                quarantine_dir,
                db,
                segments,
                open_records,
                stats: Mutex::new(BufferStats::default()),
                open_bytes: AtomicU64::new(0),
            }),
        };
        let report = buffer.recover()?;
        Ok((buffer, report))
    }

    fn recover(&self) -> Result<OpenReport, StoreError> {
        let inner = &self.inner;
        let mut report = OpenReport::default();

        // 1. Partial segments: salvage (sealing into the index) or quarantine.
        let mut starts = BTreeMap::new();
        for entry in inner.open_records.iter() {
            let (key, value) = entry.map_err(|e| StoreError::sled("scan open records", &e))?;
            let name = String::from_utf8_lossy(&key).into_owned();
            match codec::decode::<SegmentStart>("open segment record", &value) {
                Ok(start) => {
                    starts.insert(name, start);
                }
                // The file is quarantined (kept), so nothing is dropped silently.
                Err(e) => tracing::error!(file = %name, error = %e, "undecodable open segment record"),
            }
        }
        for name in list_names(&inner.open_dir)? {
            let path = inner.open_dir.join(&name);
            let salvaged = match starts.remove(&name) {
                Some(start) => self.salvage(&path, &name, start)?,
                None => {
                    tracing::warn!(file = %name, "partial segment without an open record");
                    None
                }
            };
            match salvaged {
                Some(meta) => {
                    report.parts_salvaged += 1;
                    report.salvaged_ms += u64::from(meta.duration_ms);
                }
                None => {
                    self.quarantine(&path, &name)?;
                    report.parts_quarantined += 1;
                }
            }
        }
        // `starts` now holds the records without a `.part`: sealed segments (their record
        // removal was lost, or their index flush was: step 3), and segments with no file.

        // 2. Index records: keep those with files, drop those without.
        let mut referenced = BTreeSet::new();
        let mut stats = BufferStats::default();
        let mut dropped = Vec::new();
        for entry in inner.segments.iter() {
            let (key, value) = entry.map_err(|e| StoreError::sled("scan segment index", &e))?;
            let (id, record) = decode_entry(&key, &value)?;
            if inner.sealed_dir.join(&record.file_name).is_file() {
                stats.pending_segments += 1;
                stats.pending_bytes += record.meta.bytes;
                referenced.insert(record.file_name);
            } else {
                tracing::error!(?id, file = %record.file_name, camera = %record.meta.camera,
                    "segment lost: index record without its file");
                dropped.push(id);
                report.lost_segments += 1;
                if report.lost.len() < REPORT_LOST_LISTED_MAX {
                    report.lost.push((id, record.meta));
                }
            }
        }
        for id in &dropped {
            inner.segments.remove(record_key(*id)).map_err(|e| StoreError::sled("drop lost record", &e))?;
        }
        if !dropped.is_empty() {
            self.flush()?;
        }

        // 3. Orphans: sealed files without an index record. With their `open` record, a seal
        // crashed after its rename: re-index. Without, quarantine.
        for name in list_names(&inner.sealed_dir)? {
            if referenced.contains(&name) {
                continue;
            }
            let path = inner.sealed_dir.join(&name);
            let open_record =
                part_name_of_sealed(&name).and_then(|part| starts.remove(&part).map(|s| (part, s)));
            let Some((part_name, start)) = open_record else {
                tracing::warn!(file = %name,
                    "quarantining sealed file without index record or open record (uploaded, or unknown)");
                self.quarantine(&path, &name)?;
                report.orphans_quarantined += 1;
                continue;
            };
            match self.reindex(&path, &name, &part_name, start)? {
                Some(meta) => {
                    report.orphans_reindexed += 1;
                    stats.pending_segments += 1;
                    stats.pending_bytes += meta.bytes;
                }
                None => {
                    tracing::error!(file = %name,
                        "segment lost: quarantining sealed file without index record that cannot be re-indexed");
                    self.quarantine(&path, &name)?;
                    report.orphans_quarantined += 1;
                    report.lost_segments += 1;
                }
            }
        }

        // 4. `open` records left: of quarantined parts, of segments without a file (begun but
        // never created, aborted, or failed seals, whose removal was not flushed), and of sealed
        // segments whose index insert reached the disk but not the record removal.
        if !inner.open_records.is_empty() {
            inner.open_records.clear().map_err(|e| StoreError::sled("clear open records", &e))?;
            self.flush()?;
        }
        if report.parts_quarantined + report.orphans_quarantined > 0 {
            fsync_dir(&inner.quarantine_dir)?;
            fsync_dir(&inner.open_dir)?;
            fsync_dir(&inner.sealed_dir)?;
        }
        *inner.stats.lock().expect("stats mutex poisoned") = stats;
        Ok(report)
    }

    /// Salvages the `.part` file at `path` (see the module docs): seals its longest valid prefix
    /// and returns its metadata, or `None` when nothing in it can be sealed (the caller
    /// quarantines it). IO and index errors fail.
    fn salvage(
        &self,
        path: &Path,
        name: &str,
        start: SegmentStart,
    ) -> Result<Option<SegmentMeta>, StoreError> {
        let Some((file, meta, len)) = scan_prefix(path, name, &start)? else {
            return Ok(None);
        };
        let id = self.seal_part(file, path, name, meta.clone())?;
        tracing::info!(?id, file = %name, camera = %meta.camera, seq = meta.seq, duration_ms = meta.duration_ms,
            kept_bytes = meta.bytes, dropped_bytes = len - meta.bytes, "salvaged partial segment");
        Ok(Some(meta))
    }

    /// Re-indexes the sealed file `name` at `path` whose seal crashed between its rename and its
    /// index flush, from its `open` record `part_name` (see the module docs): returns its
    /// metadata, or `None` when the file is not a segment of `start` (the caller quarantines
    /// it). IO and index errors fail.
    fn reindex(
        &self,
        path: &Path,
        name: &str,
        part_name: &str,
        start: SegmentStart,
    ) -> Result<Option<SegmentMeta>, StoreError> {
        let Some((file, meta, len)) = scan_prefix(path, name, &start)? else {
            return Ok(None);
        };
        // Makes a truncation durable before the index names the new size (and is cheap when the
        // file, fsync'd before its rename, is unchanged).
        file.sync_all().map_err(|e| io_err("fsync", path, &e))?;
        drop(file);
        let id = SealedId(self.inner.db.generate_id().map_err(|e| StoreError::sled("generate id", &e))?);
        self.index_sealed(id, name.to_owned(), part_name, meta.clone())?;
        tracing::warn!(?id, file = %name, camera = %meta.camera, seq = meta.seq, duration_ms = meta.duration_ms,
            kept_bytes = meta.bytes, dropped_bytes = len - meta.bytes,
            "re-indexed sealed segment whose seal crashed before its index flush");
        Ok(Some(meta))
    }

    /// Steps 2-4 of sealing (module docs): fsync `file`, check its size, rename it from
    /// `part_path` into `sealed/`, fsync `sealed/`, insert the index record, remove the `open`
    /// record, flush.
    fn seal_part(
        &self,
        file: fs::File,
        part_path: &Path,
        part_name: &str,
        meta: SegmentMeta,
    ) -> Result<SealedId, StoreError> {
        let inner = &self.inner;
        file.sync_all().map_err(|e| io_err("fsync", part_path, &e))?;
        let on_disk = file.metadata().map_err(|e| io_err("stat", part_path, &e))?.len();
        if on_disk != meta.bytes {
            return Err(StoreError::data_loss(format!(
                "{}: file is {on_disk} bytes, sealing {}",
                part_path.display(),
                meta.bytes
            )));
        }
        drop(file);
        let id = SealedId(inner.db.generate_id().map_err(|e| StoreError::sled("generate id", &e))?);
        // `begin` names every part, so the fallback (an id-named file recovery cannot map back
        // to its `open` record) is never taken.
        let file_name =
            sealed_name_of_part(part_name).unwrap_or_else(|| format!("{:020}-{}.mp4", id.0, meta.camera));
        let sealed_path = inner.sealed_dir.join(&file_name);
        fs::rename(part_path, &sealed_path).map_err(|e| io_err("rename", part_path, &e))?;
        fsync_dir(&inner.sealed_dir)?;
        #[cfg(feature = "fault-injection")]
        if fault::take_crash_after_rename() {
            return Err(StoreError::fatal(format!("fault injection: crash after renaming {file_name}")));
        }
        let bytes = meta.bytes;
        self.index_sealed(id, file_name, part_name, meta)?;
        let mut stats = inner.stats.lock().expect("stats mutex poisoned");
        stats.pending_segments += 1;
        stats.pending_bytes += bytes;
        Ok(id)
    }

    /// Step 4 of sealing (module docs): inserts the index record `id` of `file_name` (already
    /// durable in `sealed/`), removes the `open` record `part_name`, flushes sled. Does not
    /// count the segment in the stats.
    fn index_sealed(
        &self,
        id: SealedId,
        file_name: String,
        part_name: &str,
        meta: SegmentMeta,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let record = IndexRecord { meta, file_name, state: SegmentState::Pending };
        let value = codec::encode("segment index record", &record)
            .map_err(|e| StoreError::codec(format!("{id:?}"), &e))?;
        inner
            .segments
            .insert(record_key(id), value)
            .map_err(|e| StoreError::sled("insert segment record", &e))?;
        inner.open_records.remove(part_name).map_err(|e| StoreError::sled("remove open record", &e))?;
        self.flush()
    }

    /// Moves `path` into `quarantine/` under `name` (suffixed if taken).
    fn quarantine(&self, path: &Path, name: &str) -> Result<(), StoreError> {
        let mut target = self.inner.quarantine_dir.join(name);
        let mut n = 1u32;
        while target.exists() {
            target = self.inner.quarantine_dir.join(format!("{name}.{n}"));
            n += 1;
        }
        fs::rename(path, &target).map_err(|e| io_err("quarantine", path, &e))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush().map(drop).map_err(|e| StoreError::sled("flush segment index", &e))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The quarantine directory (for operators and the salvage tool).
    pub fn quarantine_dir(&self) -> &Path {
        &self.inner.quarantine_dir
    }

    /// Starts the file of the segment `start` describes (the recorder's `OpenSegment`). `start`
    /// is recorded durably (one sled flush) before the file exists, so that a crash leftover can
    /// be sealed with it; [`OpenSegmentFile::seal`] checks the final metadata agrees with it.
    pub fn begin(&self, start: SegmentStart) -> Result<OpenSegmentFile, StoreError> {
        let inner = &self.inner;
        let unique = inner.db.generate_id().map_err(|e| StoreError::sled("generate id", &e))?;
        let part_name = format!("{}-{unique:020}.part", start.camera);
        let part_path = inner.open_dir.join(&part_name);
        let value =
            codec::encode("open segment record", &start).map_err(|e| StoreError::codec(&part_name, &e))?;
        inner
            .open_records
            .insert(part_name.as_bytes(), value)
            .map_err(|e| StoreError::sled("insert open record", &e))?;
        self.flush()?;
        let file = match fs::OpenOptions::new().write(true).create_new(true).open(&part_path) {
            Ok(file) => file,
            Err(e) => {
                // Best effort: a record without a file is dropped at the next `open` anyway.
                let _ = inner.open_records.remove(part_name.as_bytes());
                return Err(io_err("create", &part_path, &e));
            }
        };
        Ok(OpenSegmentFile { buffer: self.clone(), file, part_name, part_path, start, bytes: 0, crc32c: 0 })
    }

    fn record(&self, id: SealedId) -> Result<IndexRecord, StoreError> {
        let value = self
            .inner
            .segments
            .get(record_key(id))
            .map_err(|e| StoreError::sled("read segment index", &e))?
            .ok_or_else(|| StoreError::not_found(format!("no sealed segment {id:?}")))?;
        Ok(decode_entry(&record_key(id), &value)?.1)
    }

    /// All pending (sealed, not yet confirmed uploaded) segments in seal order. See
    /// [`pending_page`](Self::pending_page) to bound the result.
    pub fn pending(&self) -> Result<Vec<(SealedId, SegmentMeta)>, StoreError> {
        self.pending_page(None, usize::MAX)
    }

    /// At most `max` pending segments sealed after `after`, in seal order.
    pub fn pending_page(
        &self,
        after: Option<SealedId>,
        max: usize,
    ) -> Result<Vec<(SealedId, SegmentMeta)>, StoreError> {
        let iter = match after {
            Some(id) => self.inner.segments.range(record_key(id)..),
            None => self.inner.segments.iter(),
        };
        let mut out = Vec::new();
        for entry in iter {
            if out.len() >= max {
                break;
            }
            let (key, value) = entry.map_err(|e| StoreError::sled("scan segment index", &e))?;
            let (id, record) = decode_entry(&key, &value)?;
            if Some(id) != after {
                out.push((id, record.meta));
            }
        }
        Ok(out)
    }

    /// The file of a pending segment.
    pub fn path_of(&self, id: SealedId) -> Result<PathBuf, StoreError> {
        Ok(self.inner.sealed_dir.join(self.record(id)?.file_name))
    }

    /// Pair check, second half: re-reads the file and checks size and CRC-32C against the
    /// index. Call right before uploading. Returns the segment's metadata. A missing or
    /// different file is `DataLoss`.
    pub fn verify(&self, id: SealedId) -> Result<SegmentMeta, StoreError> {
        let record = self.record(id)?;
        let path = self.inner.sealed_dir.join(&record.file_name);
        let (bytes, crc32c) = checksum_file(&path).map_err(|e| {
            StoreError::data_loss(format!("{id:?}: cannot read sealed file {}: {e}", path.display()))
        })?;
        if bytes != record.meta.bytes || crc32c != record.meta.crc32c {
            return Err(StoreError::data_loss(format!(
                "{id:?}: {} is {bytes} bytes crc32c {crc32c:08x}, sealed as {} bytes crc32c {:08x}",
                path.display(),
                record.meta.bytes,
                record.meta.crc32c
            )));
        }
        Ok(record.meta)
    }

    /// The object store confirmed the upload: remove the index record (flushed), then the file.
    /// `NotFound` if `id` is not pending. Failing to delete the file after the record is gone
    /// is only logged: the upload is confirmed either way, and `open` quarantines the orphan.
    pub fn confirm_uploaded(&self, id: SealedId) -> Result<(), StoreError> {
        self.remove_pending(id, "uploaded").map(|_| ())
    }

    /// Deletes a pending segment that will never be uploaded (the quota's drop-oldest policy):
    /// removes the index record and flushes sled, then deletes the file, in the same order as
    /// [`confirm_uploaded`](Self::confirm_uploaded) (a crash in between leaves an orphan that
    /// `open` quarantines). Returns the dropped segment's metadata for the caller to log and
    /// count: a drop is never silent. `NotFound` if `id` is not pending (e.g. its upload was
    /// confirmed first): then nothing was dropped.
    pub fn drop_pending(&self, id: SealedId) -> Result<SegmentMeta, StoreError> {
        self.remove_pending(id, "dropped")
    }

    /// Removes a pending segment: index record first (flushed), then the file. Shared by
    /// [`confirm_uploaded`](Self::confirm_uploaded) and [`drop_pending`](Self::drop_pending).
    fn remove_pending(&self, id: SealedId, why: &'static str) -> Result<SegmentMeta, StoreError> {
        let value = self
            .inner
            .segments
            .remove(record_key(id))
            .map_err(|e| StoreError::sled("remove segment record", &e))?
            .ok_or_else(|| StoreError::not_found(format!("no sealed segment {id:?}")))?;
        let (_, record) = decode_entry(&record_key(id), &value)?;
        self.flush()?;
        {
            let mut stats = self.inner.stats.lock().expect("stats mutex poisoned");
            stats.pending_segments -= 1;
            stats.pending_bytes -= record.meta.bytes;
        }
        let path = self.inner.sealed_dir.join(&record.file_name);
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(?id, path = %path.display(), error = %e, "cannot delete {why} segment file");
        }
        Ok(record.meta)
    }

    /// Pending segments and bytes.
    pub fn stats(&self) -> BufferStats {
        *self.inner.stats.lock().expect("stats mutex poisoned")
    }

    /// Bytes written so far to segments being written (not yet sealed or aborted).
    pub fn open_bytes(&self) -> u64 {
        self.inner.open_bytes.load(Ordering::Relaxed)
    }
}

impl OpenSegmentFile {
    /// Appends `data` to the file.
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        if self.bytes + data.len() as u64 > SEGMENT_BYTES_MAX {
            return Err(StoreError::fatal(format!(
                "segment {} would exceed SEGMENT_BYTES_MAX ({SEGMENT_BYTES_MAX} bytes)",
                self.part_path.display()
            )));
        }
        self.file.write_all(data).map_err(|e| io_err("write", &self.part_path, &e))?;
        self.bytes += data.len() as u64;
        self.buffer.inner.open_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.crc32c = crc32c::crc32c_append(self.crc32c, data);
        Ok(())
    }

    pub fn camera(&self) -> &CameraId {
        &self.start.camera
    }

    /// The recorder's sequence number given to `begin`.
    pub fn seq(&self) -> u64 {
        self.start.seq
    }

    /// What `begin` was told about the segment.
    pub fn start(&self) -> &SegmentStart {
        &self.start
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// CRC-32C of the bytes written so far.
    pub fn crc32c(&self) -> u32 {
        self.crc32c
    }

    /// Seals the segment (see the module docs for the steps). `meta` must agree with the
    /// [`SegmentStart`] given to `begin` (a programmer error otherwise). A size or checksum
    /// mismatch quarantines the file and returns `DataLoss`. On an IO error the `.part` file
    /// stays for the next `open` to salvage.
    pub fn seal(self, meta: SegmentMeta) -> Result<SealedId, StoreError> {
        assert_eq!(meta.start(), self.start, "sealing a segment with another segment's metadata");
        let buffer = self.buffer;
        // The bytes stop counting as open once sealed (counted as pending first) or set aside.
        let open_bytes = self.bytes;
        let _uncount = UncountOpen { buffer: &buffer, bytes: open_bytes };
        if meta.bytes != self.bytes || meta.crc32c != self.crc32c {
            drop(self.file);
            buffer.quarantine(&self.part_path, &self.part_name)?;
            // Not flushed: a record without a file is dropped at the next `open`.
            buffer
                .inner
                .open_records
                .remove(self.part_name.as_bytes())
                .map_err(|e| StoreError::sled("remove open record", &e))?;
            return Err(StoreError::data_loss(format!(
                "{}: wrote {} bytes crc32c {:08x} but the recorder sealed {} bytes crc32c {:08x}; \
                 quarantined",
                self.part_path.display(),
                self.bytes,
                self.crc32c,
                meta.bytes,
                meta.crc32c
            )));
        }
        buffer.seal_part(self.file, &self.part_path, &self.part_name, meta)
    }

    /// Abandons the segment and deletes its file.
    pub fn abort(self) -> Result<(), StoreError> {
        let _uncount = UncountOpen { buffer: &self.buffer, bytes: self.bytes };
        drop(self.file);
        match fs::remove_file(&self.part_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("delete", &self.part_path, &e)),
        }
        // Not flushed: a record without a file is dropped at the next `open`.
        self.buffer
            .inner
            .open_records
            .remove(self.part_name.as_bytes())
            .map_err(|e| StoreError::sled("remove open record", &e))?;
        Ok(())
    }
}

/// Subtracts a segment's bytes from [`SegmentBuffer::open_bytes`] when dropped (after the seal
/// counted them as pending, on every path out of `seal` and `abort`).
struct UncountOpen<'a> {
    buffer: &'a SegmentBuffer,
    bytes: u64,
}

impl Drop for UncountOpen<'_> {
    fn drop(&mut self) {
        self.buffer.inner.open_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Reads the segment file at `path` (a `.part` being salvaged, or a sealed file being
/// re-indexed) and finds its longest valid prefix with [`salvage_prefix`]. Returns the file
/// (open for writing, truncated to the prefix when longer), the [`SegmentMeta`] of the prefix
/// made from `start`, and the file's length before truncation; `None` when nothing in it can be
/// sealed (too large, no complete fragment, no video, or an init segment that contradicts
/// `start`). IO errors fail.
fn scan_prefix(
    path: &Path,
    name: &str,
    start: &SegmentStart,
) -> Result<Option<(fs::File, SegmentMeta, u64)>, StoreError> {
    let mut file =
        fs::OpenOptions::new().read(true).write(true).open(path).map_err(|e| io_err("open", path, &e))?;
    let len = file.metadata().map_err(|e| io_err("stat", path, &e))?.len();
    if len > SEGMENT_BYTES_MAX {
        tracing::warn!(file = %name, len, "segment file larger than SEGMENT_BYTES_MAX");
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes).map_err(|e| io_err("read", path, &e))?;
    let Some(salvaged) = salvage_prefix(&bytes) else {
        tracing::warn!(file = %name, len, "segment file without a complete fragment");
        return Ok(None);
    };
    if salvaged.video_frames == 0
        || salvaged.video_codec != start.video_codec
        || salvaged.has_audio != start.has_audio
    {
        tracing::warn!(file = %name, ?salvaged, ?start, "segment file does not match its open record");
        return Ok(None);
    }
    let prefix = &bytes[..salvaged.prefix_bytes];
    let meta = start.seal(SegmentContent {
        video_duration_90k: salvaged.video_duration_90k,
        bytes: prefix.len() as u64,
        crc32c: crc32c::crc32c(prefix),
        video_frames: salvaged.video_frames,
    });
    if meta.bytes != len {
        file.set_len(meta.bytes).map_err(|e| io_err("truncate", path, &e))?;
    }
    Ok(Some((file, meta, len)))
}

/// The `sealed/` name of the part file `part_name`: `{camera}-{unique:020}.part` ->
/// `{unique:020}-{camera}.mp4` (module docs). `None` for a name `begin` did not make.
fn sealed_name_of_part(part_name: &str) -> Option<String> {
    let (camera, unique) = part_name.strip_suffix(".part")?.rsplit_once('-')?;
    (is_unique(unique) && !camera.is_empty()).then(|| format!("{unique}-{camera}.mp4"))
}

/// The inverse of [`sealed_name_of_part`]: the `open` record key of the sealed file
/// `file_name`. `None` for a name `seal` did not make.
fn part_name_of_sealed(file_name: &str) -> Option<String> {
    let (unique, camera) = file_name.strip_suffix(".mp4")?.split_once('-')?;
    (is_unique(unique) && !camera.is_empty()).then(|| format!("{camera}-{unique}.part"))
}

/// A `unique` as part and sealed file names spell it: 20 decimal digits.
fn is_unique(s: &str) -> bool {
    s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Test-only fault injection (feature `fault-injection`, enabled for this crate's own tests):
/// simulated crashes at precise points of the seal protocol.
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub mod fault {
    use std::cell::Cell;

    thread_local! {
        static CRASH_AFTER_RENAME: Cell<bool> = const { Cell::new(false) };
    }

    /// Makes the next seal on this thread ([`OpenSegmentFile::seal`](super::OpenSegmentFile::seal),
    /// or a salvage inside [`SegmentBuffer::open`](super::SegmentBuffer::open)) stop right
    /// after its rename into `sealed/` and the fsync of `sealed/`, before the index record is
    /// inserted, and fail, as a kill -9 at that moment would leave the buffer.
    pub fn crash_next_seal_after_rename() {
        CRASH_AFTER_RENAME.with(|c| c.set(true));
    }

    pub(super) fn take_crash_after_rename() -> bool {
        CRASH_AFTER_RENAME.with(|c| c.replace(false))
    }
}

/// File names in `dir`, sorted.
fn list_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_err("list", dir, &e))? {
        let entry = entry.map_err(|e| io_err("list", dir, &e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_names_map_back_to_part_names() {
        for part in
            ["c-00000000000000000042.part", "b-2-00000000000000001234.part", "c.3-00000000000000000001.part"]
        {
            let sealed = sealed_name_of_part(part).unwrap();
            assert_eq!(part_name_of_sealed(&sealed).as_deref(), Some(part), "{sealed}");
        }
        assert_eq!(
            sealed_name_of_part("b-2-00000000000000001234.part").unwrap(),
            "00000000000000001234-b-2.mp4"
        );
        for bad in ["x.part", "c-42.part", "-00000000000000000042.part", "c-00000000000000000042.mp4"] {
            assert_eq!(sealed_name_of_part(bad), None, "{bad}");
        }
        for bad in ["x.mp4", "42-c.mp4", "00000000000000000042-.mp4", "00000000000000000042-c.part"] {
            assert_eq!(part_name_of_sealed(bad), None, "{bad}");
        }
    }
}
