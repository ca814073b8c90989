//! [`LocalDirStore`]: objects as files under a root directory (`{data}/objects/` in the
//! embedded deployment), one file per key at `root/{key}`.
//!
//! Create-only put, and its fsync discipline:
//! 1. copy the source into `root/{dir}/.{name}.tmp-{pid}-{n}` while computing size and CRC-32C
//!    (a mismatch with what the caller promised is `DataLoss`), then `fsync` the temp file;
//! 2. `hard_link(temp, final)`: atomic and create-only (`EEXIST` if anything is at the key, even
//!    an object a concurrent put just linked; `rename` would silently overwrite it);
//! 3. remove the temp name and `fsync` the directory, which makes the new name durable;
//!    directories created on the way are made durable by fsyncing their parents.
//!
//! If the key already exists, its size and CRC-32C decide between `AlreadyPresent` and
//! `Conflict`. A crash can leave `.…tmp-…` files behind; they are invisible to `list` and `get`
//! (keys may not have components starting with `.`), and never collide with new temp names.
//! Empty directories are left in place after deletes (removing them would race with puts).
//!
//! All filesystem work runs on tokio's blocking pool.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{checksum_file, ObjectInfo, ObjectStore, PutOutcome, GET_BYTES_MAX, LIST_KEYS_MAX};
use crate::error::StoreError;

/// Longest key accepted (S3's limit).
pub const KEY_BYTES_MAX: usize = 1024;

/// An object store in a local directory.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: Arc<PathBuf>,
}

/// Distinguishes temp files of concurrent puts within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LocalDirStore {
    /// Uses (and creates) `root`.
    pub fn new(root: impl Into<PathBuf>) -> Result<LocalDirStore, StoreError> {
        let root = root.into();
        fs::create_dir_all(&root)
            .map_err(|e| StoreError::io(format_args!("create {}", root.display()), &e))?;
        Ok(LocalDirStore { root: Arc::new(root) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root/key`, after checking that `key` is a safe relative path.
    fn path_for(&self, key: &str) -> Result<PathBuf, StoreError> {
        let valid = !key.is_empty()
            && key.len() <= KEY_BYTES_MAX
            && !key.contains('\\')
            && !key.contains('\0')
            && key.split('/').all(|c| !c.is_empty() && !c.starts_with('.'));
        if !valid {
            return Err(StoreError::fatal(format!(
                "invalid key {key:?} for a local store: components must be non-empty and not start with '.'"
            )));
        }
        Ok(self.root.join(key))
    }

    fn put_blocking(&self, key: &str, src: &Path, bytes: u64, crc32c: u32) -> Result<PutOutcome, StoreError> {
        let dest = self.path_for(key)?;
        if dest.exists() {
            return compare_existing(key, &dest, bytes, crc32c);
        }
        let dir = dest.parent().expect("a joined key has a parent");
        create_dirs_durably(&self.root, dir)?;
        let name = dest.file_name().expect("a valid key has a file name").to_string_lossy();
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        let result = copy_to_link(src, &temp, &dest, bytes, crc32c);
        // The temp name goes in every case; on success the link keeps the data.
        let _ = fs::remove_file(&temp);
        match result {
            Ok(()) => {
                fsync_dir(dir)?;
                Ok(PutOutcome::Created)
            }
            Err(e) if e.kind == crate::ErrorKind::Conflict => compare_existing(key, &dest, bytes, crc32c),
            Err(e) => Err(e),
        }
    }

    fn list_blocking(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = Vec::new();
        let max = max.min(LIST_KEYS_MAX);
        if max > 0 {
            walk(&self.root, "", prefix, start_after, max, &mut out)?;
        }
        Ok(out)
    }
}

/// Copies `src` to `temp` checking size and CRC-32C, fsyncs it and links it at `dest`.
/// `Conflict` when `dest` already exists.
fn copy_to_link(src: &Path, temp: &Path, dest: &Path, bytes: u64, crc32c: u32) -> Result<(), StoreError> {
    use std::io::{Read, Write};
    let mut input =
        fs::File::open(src).map_err(|e| StoreError::io(format_args!("open {}", src.display()), &e))?;
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .map_err(|e| StoreError::io(format_args!("create {}", temp.display()), &e))?;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut copied, mut crc) = (0u64, 0u32);
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io(format_args!("read {}", src.display()), &e)),
        };
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        copied += n as u64;
        out.write_all(&buf[..n]).map_err(|e| StoreError::io(format_args!("write {}", temp.display()), &e))?;
    }
    if copied != bytes || crc != crc32c {
        return Err(StoreError::data_loss(format!(
            "{}: file is {copied} bytes crc32c {crc:08x}, caller promised {bytes} bytes crc32c {crc32c:08x}",
            src.display()
        )));
    }
    out.sync_all().map_err(|e| StoreError::io(format_args!("fsync {}", temp.display()), &e))?;
    match fs::hard_link(temp, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StoreError::conflict("exists")),
        Err(e) => Err(StoreError::io(format_args!("link {}", dest.display()), &e)),
    }
}

/// An object is already at `dest`: the same one (a retried upload) or a conflict.
fn compare_existing(key: &str, dest: &Path, bytes: u64, crc32c: u32) -> Result<PutOutcome, StoreError> {
    let (have_bytes, have_crc) =
        checksum_file(dest).map_err(|e| StoreError::io(format_args!("read {}", dest.display()), &e))?;
    if have_bytes == bytes && have_crc == crc32c {
        Ok(PutOutcome::AlreadyPresent)
    } else {
        Err(StoreError::conflict(format!(
            "{key}: already holds {have_bytes} bytes crc32c {have_crc:08x}, not {bytes} bytes crc32c {crc32c:08x}"
        )))
    }
}

/// `create_dir_all(dir)`, then fsyncs the parent of every directory it created so the new
/// entries survive a crash.
fn create_dirs_durably(root: &Path, dir: &Path) -> Result<(), StoreError> {
    let mut missing = Vec::new();
    let mut at = dir;
    while at != root && !at.is_dir() {
        missing.push(at.to_path_buf());
        at = match at.parent() {
            Some(p) => p,
            None => break,
        };
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| StoreError::io(format_args!("create {}", dir.display()), &e))?;
    for created in missing.iter().rev() {
        fsync_dir(created.parent().expect("created dirs are below root"))?;
    }
    Ok(())
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format_args!("fsync dir {}", dir.display()), &e))
}

/// Depth-first walk in key order. `rel` is the key prefix of `dir` ("" or ending in `/`).
/// Entries are sorted with directories as `name/`, which makes the walk order equal the byte
/// order of the full keys.
fn walk(
    dir: &Path,
    rel: &str,
    prefix: &str,
    start_after: Option<&str>,
    max: usize,
    out: &mut Vec<ObjectInfo>,
) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(format_args!("list {}", dir.display()), &e)),
    };
    let mut children: Vec<(String, bool)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(format_args!("list {}", dir.display()), &e))?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if name.starts_with('.') {
            continue; // temp files
        }
        let is_dir = entry.file_type().map_err(|e| StoreError::io(format_args!("stat {name}"), &e))?.is_dir();
        children.push((if is_dir { format!("{rel}{name}/") } else { format!("{rel}{name}") }, is_dir));
    }
    children.sort();
    for (key, is_dir) in children {
        if out.len() >= max {
            return Ok(());
        }
        if is_dir {
            // Descend only where keys can both match the prefix and come after start_after.
            let overlaps_prefix = key.starts_with(prefix) || prefix.starts_with(&key);
            let after = match start_after {
                Some(a) => a.starts_with(&key) || key.as_str() > a,
                None => true,
            };
            if overlaps_prefix && after {
                let name = key[rel.len()..key.len() - 1].to_owned();
                walk(&dir.join(name), &key, prefix, start_after, max, out)?;
            }
        } else if key.starts_with(prefix) && start_after.is_none_or(|a| key.as_str() > a) {
            let path = dir.join(&key[rel.len()..]);
            let bytes = match fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // deleted meanwhile
                Err(e) => return Err(StoreError::io(format_args!("stat {}", path.display()), &e)),
            };
            out.push(ObjectInfo { key, bytes });
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::fatal(format!("local store task failed: {e}"))))
}

#[async_trait]
impl ObjectStore for LocalDirStore {
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        bytes: u64,
        crc32c: u32,
    ) -> Result<PutOutcome, StoreError> {
        let (this, key, path) = (self.clone(), key.to_owned(), path.to_owned());
        blocking(move || this.put_blocking(&key, &path, bytes, crc32c)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path_for(key)?;
        let key = key.to_owned();
        blocking(move || {
            let len = match fs::metadata(&path) {
                Ok(m) if m.is_file() => m.len(),
                Ok(_) => return Err(StoreError::not_found(format!("no object {key}"))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StoreError::not_found(format!("no object {key}")))
                }
                Err(e) => return Err(StoreError::io(format_args!("stat {}", path.display()), &e)),
            };
            if len > GET_BYTES_MAX {
                return Err(StoreError::fatal(format!("{key}: {len} bytes exceeds GET_BYTES_MAX")));
            }
            fs::read(&path).map(Bytes::from).map_err(|e| StoreError::io(format_args!("read {key}"), &e))
        })
        .await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Vec<ObjectInfo>, StoreError> {
        let (this, prefix, start_after) = (self.clone(), prefix.to_owned(), start_after.map(str::to_owned));
        blocking(move || this.list_blocking(&prefix, start_after.as_deref(), max)).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_for(key)?;
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format_args!("delete {}", path.display()), &e)),
        })
        .await
    }

    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }
}
