//! The local segment buffer: segment files on disk plus a sled index of the sealed ones, at a
//! data directory:
//!
//! ```text
//! {dir}/index/        sled database; tree "segments": SealedId (u64 BE) -> IndexRecord
//! {dir}/open/         {camera}-{unique:020}.part   segments being written
//! {dir}/sealed/       {id:020}-{camera}.mp4        sealed segments waiting for upload
//! {dir}/quarantine/   files set aside by `open` (crash leftovers), kept for salvage
//! ```
//!
//! Segment bytes go straight to the `.part` file as the recorder emits them; the buffer never
//! holds a segment in memory. Blocking `std::fs` and sled calls: async callers use
//! `spawn_blocking`.
//!
//! # Durability (fsync discipline)
//! A segment is *sealed* exactly when its index record is flushed. [`OpenSegmentFile::seal`]:
//! 1. pair check, first half: the size and running CRC-32C of what was written must equal the
//!    recorder's [`SegmentMeta`] (the recorder checksummed what it emitted); otherwise the file
//!    is quarantined and the seal fails with `DataLoss`;
//! 2. `fsync` the file;
//! 3. `rename` it from `open/` to `sealed/{id}-{camera}.mp4` and `fsync` `sealed/`;
//! 4. insert the index record and `flush` sled.
//!
//! Only after step 4 does `seal` return the [`SealedId`]. [`SegmentBuffer::verify`] re-reads the
//! file right before upload (pair check, second half).
//!
//! [`SegmentBuffer::confirm_uploaded`] runs in the opposite order: remove the index record and
//! flush sled, *then* delete the file. A crash in between leaves a sealed file without a
//! record (an *orphan*), never a record without its file, so a record always names bytes that
//! exist — the uploader can trust the index. The orphan is harmless: `open` sets it aside.
//!
//! # Recovery ([`SegmentBuffer::open`])
//! - `open/*` leftovers (a crash mid-segment, or a seal that failed before its rename) are moved
//!   to `quarantine/`. Salvaging the complete fragments inside them is a later issue.
//! - Orphans in `sealed/` are **quarantined, not deleted**. An orphan is either an uploaded
//!   segment whose delete was interrupted, or a segment whose seal crashed between rename and
//!   index flush (complete and checksummed, but never acknowledged). The buffer cannot tell the
//!   two apart, and it never deletes bytes it cannot prove were uploaded; orphans need a crash at
//!   one precise moment, so the quarantine grows slowly and an operator (or the salvage tool)
//!   clears it.
//! - Index records whose file is missing are dropped (flushed) and returned in
//!   [`OpenReport::lost`] for the node to log and count: those segments are gone.
//! - An index record that cannot be decoded (corruption or a newer format) fails `open` with
//!   `DataLoss` rather than being misread or silently dropped.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use camrec_cluster_core::codec;
use camrec_cluster_core::ids::CameraId;
use camrec_node_core::segment::SegmentMeta;
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
    /// `open/` leftovers moved to `quarantine/`.
    pub parts_quarantined: u64,
    /// Files in `sealed/` without an index record, moved to `quarantine/`.
    pub orphans_quarantined: u64,
    /// Index records whose file was missing (dropped): segments lost.
    pub lost_segments: u64,
    /// The first [`REPORT_LOST_LISTED_MAX`] lost segments.
    pub lost: Vec<(SealedId, SegmentMeta)>,
}

struct Inner {
    dir: PathBuf,
    open_dir: PathBuf,
    sealed_dir: PathBuf,
    quarantine_dir: PathBuf,
    db: sled::Db,
    segments: sled::Tree,
    stats: Mutex<BufferStats>,
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
/// [`abort`](Self::abort) leaves the `.part` file for the next `open` to quarantine.
#[derive(Debug)]
pub struct OpenSegmentFile {
    buffer: SegmentBuffer,
    file: fs::File,
    part_path: PathBuf,
    camera: CameraId,
    seq: u64,
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
        let db = sled::Config::new()
            .path(&index_path)
            .cache_capacity(INDEX_CACHE_BYTES_MAX)
            .open()
            .map_err(|e| StoreError::sled(format_args!("open {}", index_path.display()), &e))?;
        let segments = db.open_tree("segments").map_err(|e| StoreError::sled("open tree segments", &e))?;
        let buffer = SegmentBuffer {
            inner: Arc::new(Inner {
                dir,
                open_dir,
                sealed_dir,
                quarantine_dir,
                db,
                segments,
                stats: Mutex::new(BufferStats::default()),
            }),
        };
        let report = buffer.recover()?;
        Ok((buffer, report))
    }

    fn recover(&self) -> Result<OpenReport, StoreError> {
        let inner = &self.inner;
        let mut report = OpenReport::default();

        // 1. Partial segments.
        for name in list_names(&inner.open_dir)? {
            self.quarantine(&inner.open_dir.join(&name), &name)?;
            report.parts_quarantined += 1;
        }

        // 2. Index records: keep those with files, drop those without.
        let mut referenced = std::collections::BTreeSet::new();
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

        // 3. Orphans: sealed files without a record.
        for name in list_names(&inner.sealed_dir)? {
            if !referenced.contains(&name) {
                tracing::warn!(file = %name, "quarantining sealed file without index record");
                self.quarantine(&inner.sealed_dir.join(&name), &name)?;
                report.orphans_quarantined += 1;
            }
        }
        if report.parts_quarantined + report.orphans_quarantined > 0 {
            fsync_dir(&inner.quarantine_dir)?;
            fsync_dir(&inner.open_dir)?;
            fsync_dir(&inner.sealed_dir)?;
        }
        *inner.stats.lock().expect("stats mutex poisoned") = stats;
        Ok(report)
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

    /// Starts a segment file for `camera`; `seq` is the recorder's sequence number, checked
    /// again at seal.
    pub fn begin(&self, camera: &CameraId, seq: u64) -> Result<OpenSegmentFile, StoreError> {
        let unique = self.inner.db.generate_id().map_err(|e| StoreError::sled("generate id", &e))?;
        let part_path = self.inner.open_dir.join(format!("{camera}-{unique:020}.part"));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part_path)
            .map_err(|e| io_err("create", &part_path, &e))?;
        Ok(OpenSegmentFile {
            buffer: self.clone(),
            file,
            part_path,
            camera: camera.clone(),
            seq,
            bytes: 0,
            crc32c: 0,
        })
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
            tracing::warn!(?id, path = %path.display(), error = %e, "cannot delete uploaded segment file");
        }
        Ok(())
    }

    /// Pending segments and bytes.
    pub fn stats(&self) -> BufferStats {
        *self.inner.stats.lock().expect("stats mutex poisoned")
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
        self.crc32c = crc32c::crc32c_append(self.crc32c, data);
        Ok(())
    }

    pub fn camera(&self) -> &CameraId {
        &self.camera
    }

    /// The recorder's sequence number given to `begin`.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// CRC-32C of the bytes written so far.
    pub fn crc32c(&self) -> u32 {
        self.crc32c
    }

    /// Seals the segment (see the module docs for the steps). `meta` must be for this camera
    /// and sequence number (a programmer error otherwise). A size or checksum mismatch
    /// quarantines the file and returns `DataLoss`. On an IO error the `.part` file stays for
    /// the next `open` to quarantine.
    pub fn seal(self, meta: SegmentMeta) -> Result<SealedId, StoreError> {
        assert_eq!(meta.camera, self.camera, "sealing a segment with another camera's metadata");
        assert_eq!(meta.seq, self.seq, "sealing a segment with another sequence number's metadata");
        let buffer = self.buffer.clone();
        let inner = &buffer.inner;
        if meta.bytes != self.bytes || meta.crc32c != self.crc32c {
            let name = self.part_path.file_name().expect("part has a name").to_string_lossy().into_owned();
            let (bytes, crc32c, part_path) = (self.bytes, self.crc32c, self.part_path.clone());
            drop(self.file);
            buffer.quarantine(&part_path, &name)?;
            return Err(StoreError::data_loss(format!(
                "{}: wrote {bytes} bytes crc32c {crc32c:08x} but the recorder sealed {} bytes crc32c {:08x}; \
                 quarantined",
                part_path.display(),
                meta.bytes,
                meta.crc32c
            )));
        }
        self.file.sync_all().map_err(|e| io_err("fsync", &self.part_path, &e))?;
        let on_disk = self.file.metadata().map_err(|e| io_err("stat", &self.part_path, &e))?.len();
        if on_disk != meta.bytes {
            return Err(StoreError::data_loss(format!(
                "{}: file is {on_disk} bytes after writing {}",
                self.part_path.display(),
                meta.bytes
            )));
        }
        drop(self.file);
        let id = SealedId(inner.db.generate_id().map_err(|e| StoreError::sled("generate id", &e))?);
        let file_name = format!("{:020}-{}.mp4", id.0, meta.camera);
        let sealed_path = inner.sealed_dir.join(&file_name);
        fs::rename(&self.part_path, &sealed_path).map_err(|e| io_err("rename", &self.part_path, &e))?;
        fsync_dir(&inner.sealed_dir)?;
        let bytes = meta.bytes;
        let record = IndexRecord { meta, file_name, state: SegmentState::Pending };
        let value = codec::encode("segment index record", &record)
            .map_err(|e| StoreError::codec(format!("{id:?}"), &e))?;
        inner
            .segments
            .insert(record_key(id), value)
            .map_err(|e| StoreError::sled("insert segment record", &e))?;
        buffer.flush()?;
        let mut stats = inner.stats.lock().expect("stats mutex poisoned");
        stats.pending_segments += 1;
        stats.pending_bytes += bytes;
        Ok(id)
    }

    /// Abandons the segment and deletes its file.
    pub fn abort(self) -> Result<(), StoreError> {
        drop(self.file);
        match fs::remove_file(&self.part_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("delete", &self.part_path, &e)),
        }
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
