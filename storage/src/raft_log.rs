//! The Raft log store on sled, generic over the openraft type config.
//!
//! Layout: tree `raft_log` maps the big-endian log index to the codec-encoded entry (so sled's
//! key order is log order); tree `raft_meta` holds the vote, the committed log id and the last
//! purged log id. Durability: `append` and `save_vote` return only after `flush_async` (sled's
//! fsync) — openraft counts an entry as persisted when the append callback fires, and a vote must
//! survive a crash or a node could vote twice in one term.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use camrec_cluster_core::codec;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftLogReader, RaftTypeConfig,
    StorageError, StorageIOError, Vote,
};
use serde::{de::DeserializeOwned, Serialize};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// A sled-backed openraft log store. Cheap to clone (sled trees are handles).
pub struct SledLogStore<C: RaftTypeConfig> {
    log: sled::Tree,
    meta: sled::Tree,
    _config: std::marker::PhantomData<C>,
}

impl<C: RaftTypeConfig> Clone for SledLogStore<C> {
    fn clone(&self) -> Self {
        SledLogStore { log: self.log.clone(), meta: self.meta.clone(), _config: std::marker::PhantomData }
    }
}

impl<C: RaftTypeConfig> Debug for SledLogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledLogStore").field("entries", &self.log.len()).finish()
    }
}

impl<C> SledLogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    /// Opens (or creates) the log trees inside `db`.
    pub fn open(db: &sled::Db) -> Result<SledLogStore<C>, sled::Error> {
        Ok(SledLogStore {
            log: db.open_tree("raft_log")?,
            meta: db.open_tree("raft_meta")?,
            _config: std::marker::PhantomData,
        })
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &'static [u8],
    ) -> Result<Option<T>, StorageError<C::NodeId>> {
        let Some(bytes) = self.meta.get(key).map_err(|e| read_err(ErrorSubject::Store, e))? else {
            return Ok(None);
        };
        codec::decode("raft meta", &bytes).map(Some).map_err(|e| read_err(ErrorSubject::Store, e))
    }

    async fn write_meta<T: Serialize>(
        &self,
        key: &'static [u8],
        value: &T,
        subject: ErrorSubject<C::NodeId>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let bytes = codec::encode("raft meta", value).map_err(|e| write_err(subject.clone(), e))?;
        self.meta.insert(key, bytes).map_err(|e| write_err(subject.clone(), e))?;
        self.meta.flush_async().await.map_err(|e| write_err(subject, e))?;
        Ok(())
    }

    /// Removes the entries in `range` (of index keys) in one batch (not flushed).
    fn remove_entries<R: RangeBounds<[u8; 8]>>(&self, range: R) -> Result<(), StorageError<C::NodeId>> {
        let keys: Vec<sled::IVec> = self
            .log
            .range(range)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| read_err(ErrorSubject::Logs, e))?;
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(|e| write_err(ErrorSubject::Logs, e))
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        let Some((_, bytes)) = self.log.last().map_err(|e| read_err(ErrorSubject::Logs, e))? else {
            return Ok(None);
        };
        let entry: C::Entry =
            codec::decode("raft entry", &bytes).map_err(|e| read_err(ErrorSubject::Logs, e))?;
        Ok(Some(entry.get_log_id().clone()))
    }
}

fn read_err<NID: openraft::NodeId>(
    subject: ErrorSubject<NID>,
    e: impl std::error::Error + 'static,
) -> StorageError<NID> {
    StorageError::IO { source: StorageIOError::new(subject, ErrorVerb::Read, AnyError::new(&e)) }
}

fn write_err<NID: openraft::NodeId>(
    subject: ErrorSubject<NID>,
    e: impl std::error::Error + 'static,
) -> StorageError<NID> {
    StorageError::IO { source: StorageIOError::new(subject, ErrorVerb::Write, AnyError::new(&e)) }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl<C> RaftLogReader<C> for SledLogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        for item in self.log.range::<[u8; 8], _>((start, end)) {
            let (_, bytes) = item.map_err(|e| read_err(ErrorSubject::Logs, e))?;
            entries.push(codec::decode("raft entry", &bytes).map_err(|e| read_err(ErrorSubject::Logs, e))?);
        }
        Ok(entries)
    }
}

impl<C> RaftLogStorage<C> for SledLogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let last_purged_log_id: Option<LogId<C::NodeId>> = self.read_meta(KEY_LAST_PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or_else(|| last_purged_log_id.clone());
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.write_meta(KEY_VOTE, vote, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        self.read_meta(KEY_VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        // Not flushed on its own: losing it only means re-applying committed entries on restart.
        let bytes = codec::encode("raft meta", &committed).map_err(|e| write_err(ErrorSubject::Store, e))?;
        self.meta.insert(KEY_COMMITTED, bytes).map_err(|e| write_err(ErrorSubject::Store, e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(self.read_meta::<Option<LogId<C::NodeId>>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let index = entry.get_log_id().index;
            let bytes = codec::encode("raft entry", &entry).map_err(|e| write_err(ErrorSubject::Logs, e))?;
            batch.insert(&index_key(index), bytes);
        }
        self.log.apply_batch(batch).map_err(|e| write_err(ErrorSubject::Logs, e))?;
        let flushed = self.log.flush_async().await.map(|_| ()).map_err(std::io::Error::other);
        callback.log_io_completed(flushed);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.remove_entries(index_key(log_id.index)..)?;
        self.log.flush_async().await.map_err(|e| write_err(ErrorSubject::Logs, e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        // Record the purge point first: a crash after it but before the deletes leaves extra
        // entries below it, which `get_log_state` and openraft tolerate.
        self.write_meta(KEY_LAST_PURGED, &log_id, ErrorSubject::Logs).await?;
        self.remove_entries(..=index_key(log_id.index))
    }
}
