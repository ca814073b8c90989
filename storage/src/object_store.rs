//! The object store interface every upload target implements, and its backends.
//!
//! Contract (checked by [`crate::conformance`] against every backend):
//! - **Create-only puts.** [`ObjectStore::put_file`] never overwrites. If an object already exists
//!   at the key with the same size (and the same CRC-32C where the backend can tell) the put is a
//!   retried upload and returns [`PutOutcome::AlreadyPresent`]; any other object there is an
//!   [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) error.
//! - **Checksummed puts.** The caller passes the size and CRC-32C it verified in the buffer; the
//!   backend makes sure the stored bytes match them (it re-computes while copying, or has the
//!   server verify) and fails with `DataLoss` otherwise.
//! - **Listing** returns keys in lexicographic (byte) order, `> start_after`, starting with
//!   `prefix` (a plain string prefix, as in S3), at most `min(max, LIST_KEYS_MAX)` per call. A
//!   caller pages by passing the last key it got as the next `start_after`.
//! - **Delete** is idempotent: deleting a missing key succeeds. `get` of a missing key is
//!   `NotFound`.
//!
//! Backends: [`LocalDirStore`] (the embedded default), [`MemStore`] (tests, simulator) and
//! [`S3Store`] (aws-sdk-s3; any S3-compatible service).

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::StoreError;

pub(crate) mod local;
mod mem;
mod s3;

pub use local::LocalDirStore;
pub use mem::MemStore;
pub use s3::{S3Config, S3Store};

/// Most keys one `list` call returns, whatever `max` asks for.
pub const LIST_KEYS_MAX: usize = 10_000;

/// Largest object `get` reads into memory (segments are a few MiB).
pub const GET_BYTES_MAX: u64 = 1 << 30;

/// How a create-only put ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object did not exist and now does.
    Created,
    /// The same object (same size, and same CRC-32C where the backend can tell) was already at
    /// the key: a retried upload. Nothing was written.
    AlreadyPresent,
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub bytes: u64,
}

/// An object store holding segments under keys from [`crate::keys`].
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Uploads the file at `path` (exactly `bytes` long, with CRC-32C `crc32c`) to `key`,
    /// create-only. Streams from the file; never reads it whole into memory (except
    /// [`MemStore`], which keeps everything in memory anyway).
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        bytes: u64,
        crc32c: u32,
    ) -> Result<PutOutcome, StoreError>;

    /// Reads a whole object (at most [`GET_BYTES_MAX`]).
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;

    /// Lists keys starting with `prefix`, strictly after `start_after`, in key order, at most
    /// `min(max, LIST_KEYS_MAX)`.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Vec<ObjectInfo>, StoreError>;

    /// Deletes `key`; succeeds if it is already absent.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// One line for logs and the admin API, e.g. `s3://bucket/prefix (us-east-1)`.
    fn describe(&self) -> String;
}

/// Streams `path` and returns (bytes, CRC-32C); reads in 64 KiB chunks.
pub(crate) fn checksum_file(path: &Path) -> std::io::Result<(u64, u32)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut bytes, mut crc) = (0u64, 0u32);
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok((bytes, crc)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        bytes += n as u64;
    }
}
