//! The Raft state machine adapter: applies committed entries to the sans-IO [`ClusterState`],
//! builds and installs snapshots, and wakes the data plane when the table changed.
//!
//! Snapshots are the codec-encoded `ClusterState` plus the Raft metadata, written to
//! `{dir}/snapshot.bin` with temp file + fsync + rename + directory fsync before they count, and
//! loaded on start so a node whose log was purged does not come back empty.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use camrec_cluster_core::codec;
use camrec_cluster_core::state::{ClusterState, Response};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, RaftTypeConfig,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

type NodeIdT = u64;

/// Version of the snapshot layout (inside the codec's format byte). Bump it when
/// `ClusterState`'s serialized shape changes; a node refuses a snapshot of another version
/// instead of misreading it.
pub const SNAPSHOT_FORMAT: u32 = 2;

/// What a snapshot file holds.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    format: u32,
    meta: SnapshotMeta<NodeIdT, BasicNode>,
    state: ClusterState,
}

fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotFile, String> {
    // The format field comes first, so an unknown version is reported as such.
    let (format, _): (u32, &[u8]) = codec::decode_prefix("snapshot", bytes).map_err(|e| e.to_string())?;
    if format != SNAPSHOT_FORMAT {
        return Err(format!(
            "snapshot format {format} is not {SNAPSHOT_FORMAT} (written by another camrec version)"
        ));
    }
    codec::decode("snapshot", bytes).map_err(|e| e.to_string())
}

/// The current snapshot: its metadata and encoded bytes (shared, never copied until sent).
type CurrentSnapshot = Option<(SnapshotMeta<NodeIdT, BasicNode>, Arc<Vec<u8>>)>;

pub struct SmInner {
    pub state: ClusterState,
    pub last_applied: Option<LogId<NodeIdT>>,
    pub last_membership: StoredMembership<NodeIdT, BasicNode>,
    snapshot: CurrentSnapshot,
    snapshot_seq: u64,
}

/// Shared handle on the state machine. Queries lock it briefly; the data plane drains
/// [`ClusterState::poll_change`] after each wake-up on [`StateMachine::subscribe`].
pub struct StateMachine<C> {
    inner: Arc<Mutex<SmInner>>,
    /// Where snapshots persist; `None` keeps them in memory only (simulator, tests).
    dir: Option<PathBuf>,
    applied_tx: Arc<watch::Sender<u64>>,
    _config: std::marker::PhantomData<fn() -> C>,
}

impl<C> Clone for StateMachine<C> {
    fn clone(&self) -> Self {
        StateMachine {
            inner: self.inner.clone(),
            dir: self.dir.clone(),
            applied_tx: self.applied_tx.clone(),
            _config: std::marker::PhantomData,
        }
    }
}

fn io_err(
    subject: ErrorSubject<NodeIdT>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeIdT> {
    StorageError::IO { source: StorageIOError::new(subject, verb, AnyError::new(&e)) }
}

impl<C> StateMachine<C> {
    /// Opens the state machine, loading the persisted snapshot from `dir` if there is one.
    pub fn open(dir: Option<&Path>) -> Result<StateMachine<C>, StorageError<NodeIdT>> {
        let mut inner = SmInner {
            state: ClusterState::new(),
            last_applied: None,
            last_membership: StoredMembership::default(),
            snapshot: None,
            snapshot_seq: 0,
        };
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
            let path = dir.join("snapshot.bin");
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let file: SnapshotFile = codec::decode("snapshot", &bytes)
                        .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
                    inner.state = file.state;
                    inner.state.request_resync();
                    inner.last_applied = file.meta.last_log_id;
                    inner.last_membership = file.meta.last_membership.clone();
                    inner.snapshot = Some((file.meta, Arc::new(bytes)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e)),
            }
        }
        let applied = inner.last_applied.map_or(0, |l| l.index);
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(inner)),
            dir: dir.map(Path::to_path_buf),
            applied_tx: Arc::new(watch::channel(applied).0),
            _config: std::marker::PhantomData,
        })
    }

    /// Locks the state for a query or for draining changes. Hold it briefly.
    pub fn lock(&self) -> MutexGuard<'_, SmInner> {
        self.inner.lock().expect("state machine lock poisoned")
    }

    /// Wakes whenever entries were applied or a snapshot installed (value: last applied index).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    fn persist(&self, bytes: &[u8]) -> Result<(), StorageError<NodeIdT>> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let tmp = dir.join("snapshot.bin.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join("snapshot.bin"))?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))
    }
}

impl<C> RaftSnapshotBuilder<C> for StateMachine<C>
where
    C: RaftTypeConfig<
        NodeId = NodeIdT,
        Node = BasicNode,
        D = camrec_cluster_core::state::Command,
        R = Response,
        SnapshotData = Cursor<Vec<u8>>,
    >,
{
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError<NodeIdT>> {
        let (meta, bytes) = {
            let mut g = self.lock();
            g.snapshot_seq += 1;
            let meta = SnapshotMeta {
                last_log_id: g.last_applied,
                last_membership: g.last_membership.clone(),
                // Deterministic: no timestamps or randomness (the simulator hashes traces).
                snapshot_id: format!(
                    "{}-{}-{}",
                    g.last_applied.map_or(0, |l| l.leader_id.term),
                    g.last_applied.map_or(0, |l| l.index),
                    g.snapshot_seq
                ),
            };
            let file = SnapshotFile { format: SNAPSHOT_FORMAT, meta: meta.clone(), state: g.state.clone() };
            let bytes = codec::encode("snapshot", &file)
                .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
            (meta, bytes)
        };
        self.persist(&bytes)?;
        let bytes = Arc::new(bytes);
        self.lock().snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes.to_vec())) })
    }
}

impl<C> RaftStateMachine<C> for StateMachine<C>
where
    C: RaftTypeConfig<
        NodeId = NodeIdT,
        Node = BasicNode,
        D = camrec_cluster_core::state::Command,
        R = Response,
        SnapshotData = Cursor<Vec<u8>>,
        Entry = openraft::Entry<C>,
    >,
{
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeIdT>>, StoredMembership<NodeIdT, BasicNode>), StorageError<NodeIdT>> {
        let g = self.lock();
        Ok((g.last_applied, g.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeIdT>>
    where
        I: IntoIterator<Item = openraft::Entry<C>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut responses = Vec::new();
        let applied = {
            let mut g = self.lock();
            for entry in entries {
                g.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => responses.push(Response::default()),
                    EntryPayload::Normal(cmd) => responses.push(g.state.apply(cmd)),
                    EntryPayload::Membership(m) => {
                        g.last_membership = StoredMembership::new(Some(entry.log_id), m);
                        responses.push(Response::default());
                    }
                }
            }
            g.last_applied.map_or(0, |l| l.index)
        };
        self.applied_tx.send_replace(applied);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeIdT>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeIdT, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeIdT>> {
        let bytes = snapshot.into_inner();
        let file = decode_snapshot(&bytes).map_err(|e| {
            io_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Read, std::io::Error::other(e))
        })?;
        self.persist(&bytes)?;
        let applied = {
            let mut g = self.lock();
            g.state = file.state;
            g.state.request_resync();
            g.last_applied = meta.last_log_id;
            g.last_membership = meta.last_membership.clone();
            g.snapshot = Some((meta.clone(), Arc::new(bytes)));
            g.last_applied.map_or(0, |l| l.index)
        };
        self.applied_tx.send_replace(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError<NodeIdT>> {
        let g = self.lock();
        Ok(g.snapshot.as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(bytes.to_vec())),
        }))
    }
}
