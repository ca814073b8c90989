//! [`MemStore`]: objects in a `BTreeMap` behind a mutex. For tests and the simulator; it reads
//! put files whole into memory, which is fine at test sizes.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ObjectInfo, ObjectStore, PutOutcome, LIST_KEYS_MAX};
use crate::error::StoreError;

/// An in-memory object store.
#[derive(Debug, Default)]
pub struct MemStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Every stored key with its size, in key order (for assertions).
    pub fn snapshot(&self) -> Vec<ObjectInfo> {
        let objects = self.objects.lock().expect("MemStore mutex poisoned");
        objects.iter().map(|(key, v)| ObjectInfo { key: key.clone(), bytes: v.len() as u64 }).collect()
    }
}

#[async_trait]
impl ObjectStore for MemStore {
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        bytes: u64,
        crc32c: u32,
    ) -> Result<PutOutcome, StoreError> {
        let data =
            std::fs::read(path).map_err(|e| StoreError::io(format_args!("read {}", path.display()), &e))?;
        if data.len() as u64 != bytes || crc32c::crc32c(&data) != crc32c {
            return Err(StoreError::data_loss(format!(
                "{}: file is {} bytes crc32c {:08x}, caller promised {bytes} bytes crc32c {crc32c:08x}",
                path.display(),
                data.len(),
                crc32c::crc32c(&data)
            )));
        }
        let mut objects = self.objects.lock().expect("MemStore mutex poisoned");
        match objects.get(key) {
            Some(existing) if existing.len() as u64 == bytes && crc32c::crc32c(existing) == crc32c => {
                Ok(PutOutcome::AlreadyPresent)
            }
            Some(existing) => Err(StoreError::conflict(format!(
                "{key}: a different object ({} bytes) is already stored",
                existing.len()
            ))),
            None => {
                objects.insert(key.to_owned(), Bytes::from(data));
                Ok(PutOutcome::Created)
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let objects = self.objects.lock().expect("MemStore mutex poisoned");
        objects.get(key).cloned().ok_or_else(|| StoreError::not_found(format!("no object {key}")))
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Vec<ObjectInfo>, StoreError> {
        let objects = self.objects.lock().expect("MemStore mutex poisoned");
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        Ok(objects
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(max.min(LIST_KEYS_MAX))
            .map(|(key, v)| ObjectInfo { key: key.clone(), bytes: v.len() as u64 })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.objects.lock().expect("MemStore mutex poisoned").remove(key);
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}
