//! A node's simulated disk: an in-memory openraft log store (BTreeMap) and the PRODUCTION state
//! machine (`camrec_cluster::sm::StateMachine` over `ClusterState::apply`) with in-memory
//! snapshots (`open(None)`).
//!
//! The log store's contents survive a simulated crash (the store is what the node finds on its
//! disk when it restarts). The state machine does not: on restart the node gets a fresh state
//! machine that loads the last snapshot and replays the log after it, exactly as a production
//! node loads `snapshot.bin` and replays sled. Every write counts as synced for now; losing
//! unsynced writes on a crash comes later.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use camrec_cluster::sm::StateMachine;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, Vote};

use crate::sim_rt::SimConfig;

type NodeId = u64;

#[derive(Debug, Default)]
struct LogInner {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    entries: BTreeMap<u64, Entry<SimConfig>>,
}

/// The Raft log on the simulated disk. Clones share the same disk.
#[derive(Debug, Clone, Default)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    fn lock(&self) -> MutexGuard<'_, LogInner> {
        self.inner.lock().expect("log store lock poisoned")
    }

    /// Entries currently held (not purged).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RaftLogReader<SimConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<SimConfig>>, StorageError<NodeId>> {
        Ok(self.lock().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<SimConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<SimConfig>, StorageError<NodeId>> {
        let g = self.lock();
        let last = g.entries.values().next_back().map(|e| e.log_id).or(g.last_purged);
        Ok(LogState { last_purged_log_id: g.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<SimConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<SimConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut g = self.lock();
            for e in entries {
                g.entries.insert(e.log_id.index, e);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut g = self.lock();
        drop(g.entries.split_off(&log_id.index));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut g = self.lock();
        assert!(g.last_purged <= Some(log_id), "purge must not go backwards");
        g.last_purged = Some(log_id);
        g.entries = g.entries.split_off(&(log_id.index + 1));
        Ok(())
    }
}

/// What a node keeps across a crash.
pub struct Disk {
    pub log: LogStore,
    /// The state machine of the node's current incarnation (replaced on restart).
    pub sm: StateMachine<SimConfig>,
}

impl Disk {
    /// A blank disk for a new node.
    pub fn new() -> Disk {
        Disk { log: LogStore::default(), sm: open_sm() }
    }

    /// After a crash: a fresh state machine holding only the last snapshot (the log is replayed
    /// by openraft on start), like a production node loading `snapshot.bin`.
    pub async fn reboot(&mut self) {
        let mut old = self.sm.clone();
        let mut fresh = open_sm();
        let snapshot = old.get_current_snapshot().await.expect("in-memory snapshot read cannot fail");
        if let Some(s) = snapshot {
            fresh.install_snapshot(&s.meta, s.snapshot).await.expect("reinstalling our own snapshot");
        }
        self.sm = fresh;
    }
}

impl Default for Disk {
    fn default() -> Disk {
        Disk::new()
    }
}

fn open_sm() -> StateMachine<SimConfig> {
    StateMachine::open(None).expect("an in-memory state machine opens without IO")
}

#[cfg(test)]
mod tests {
    //! The disk across a reboot: the log stays, the state machine comes back from the snapshot.

    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder};

    use camrec_cluster_core::state::{Command, NodeInfo};

    use super::*;

    fn entry(index: u64, cmd: Command) -> Entry<SimConfig> {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(cmd) }
    }

    fn register(id: u64) -> Command {
        Command::RegisterNode(NodeInfo {
            id,
            az: None,
            capacity_weight: 1,
            admin_addr: String::new(),
            raft_addr: String::new(),
        })
    }

    #[tokio::test]
    async fn reboot_keeps_the_snapshot_and_forgets_later_applies() {
        let mut disk = Disk::new();
        disk.sm.apply([entry(1, register(1))]).await.unwrap();
        disk.sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        disk.sm.apply([entry(2, register(2))]).await.unwrap();
        assert_eq!(disk.sm.lock().state.nodes().len(), 2);
        disk.reboot().await;
        let g = disk.sm.lock();
        assert_eq!(
            g.state.nodes().keys().copied().collect::<Vec<_>>(),
            [1],
            "entry 2 is replayed from the log"
        );
        assert_eq!(g.last_applied.map(|l| l.index), Some(1));
    }

    #[tokio::test]
    async fn truncate_and_purge_keep_the_log_contiguous() {
        let mut log = LogStore::default();
        {
            let mut g = log.lock();
            for i in 1..=5 {
                g.entries.insert(i, entry(i, register(i)));
            }
        }
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 4)).await.unwrap();
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 2)).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(2));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
        assert_eq!(log.try_get_log_entries(0..10).await.unwrap().len(), 1);
    }
}
