//! Storage shells: the local segment buffer (files + sled index), the [`ObjectStore`] trait with
//! local-directory, in-memory and S3 backends, the object key layout, and the conformance suite
//! every backend runs.
//!
//! Everything here does IO; the sans-IO cores decide *what* to store and when, this crate makes
//! it durable. Durability rules (fsync order) are documented per module: [`buffer`] for the
//! local segment buffer, [`object_store`] and its backends for uploads.

pub mod buffer;
pub mod conformance;
pub mod error;
pub mod keys;
pub mod object_store;
pub mod raft_log;
pub mod recordings;

pub use buffer::{BufferStats, OpenReport, OpenSegmentFile, SealedId, SegmentBuffer};
pub use error::{ErrorKind, StoreError};
pub use keys::{hour_prefixes, object_key, parse_key, KeyInfo};
pub use object_store::{LocalDirStore, MemStore, ObjectInfo, ObjectStore, PutOutcome, S3Config, S3Store};
