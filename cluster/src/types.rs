//! The openraft type configuration, generic over the async runtime.
//!
//! Production nodes use [`ProdConfig`] (tokio, OS-seeded election jitter); the simulator plugs in
//! its own runtime whose RNG is seeded, and gets the same Raft code.

use std::fmt;
use std::io::Cursor;
use std::marker::PhantomData;

use camrec_cluster_core::state::{Command, Response};
use openraft::{AsyncRuntime, BasicNode, RaftTypeConfig};

/// camrec's Raft types over the async runtime `R`.
pub struct TypeConfig<R>(PhantomData<fn() -> R>);

// Manual impls: derives would demand the same traits of `R`, which runtimes don't implement.
impl<R> Clone for TypeConfig<R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R> Copy for TypeConfig<R> {}
impl<R> Default for TypeConfig<R> {
    fn default() -> Self {
        TypeConfig(PhantomData)
    }
}
impl<R> PartialEq for TypeConfig<R> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<R> Eq for TypeConfig<R> {}
impl<R> PartialOrd for TypeConfig<R> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<R> Ord for TypeConfig<R> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}
impl<R> fmt::Debug for TypeConfig<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TypeConfig")
    }
}

impl<R: AsyncRuntime> RaftTypeConfig for TypeConfig<R> {
    type D = Command;
    type R = Response;
    type NodeId = u64;
    /// `addr` is the node's inter-node RPC address.
    type Node = BasicNode;
    type Entry = openraft::Entry<Self>;
    type SnapshotData = Cursor<Vec<u8>>;
    type AsyncRuntime = R;
    type Responder = openraft::impls::OneshotResponder<Self>;
}

/// The production configuration: tokio runtime.
pub type ProdConfig = TypeConfig<openraft::TokioRuntime>;
