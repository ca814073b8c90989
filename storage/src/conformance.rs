//! The conformance suite every [`ObjectStore`] backend runs (style.md §11, after openraft's
//! `testing/log/suite.rs`). Public so that stores defined elsewhere (the simulator's faulty
//! store) run the same checks. It panics on the first violation.
//!
//! The suite expects an empty store and a scratch directory for the files it uploads.

use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};

use crate::error::ErrorKind;
use crate::object_store::{ObjectInfo, ObjectStore, PutOutcome};

/// Keys used by the paging check; more than one S3 `ListObjectsV2` page (1000).
pub const PAGING_KEYS: usize = 1_050;

/// Puts issued concurrently while filling the store for the paging check.
const PUTS_IN_FLIGHT_MAX: usize = 16;

fn write_file(scratch: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = scratch.join(name);
    std::fs::write(&path, data).expect("write scratch file");
    path
}

async fn put(store: &dyn ObjectStore, key: &str, path: &Path, data: &[u8]) -> PutOutcome {
    store
        .put_file(key, path, data.len() as u64, crc32c::crc32c(data))
        .await
        .unwrap_or_else(|e| panic!("{}: put {key}: {e}", store.describe()))
}

/// Runs every check against `store`.
pub async fn run(store: &dyn ObjectStore, scratch: &Path) {
    put_get_round_trip(store, scratch).await;
    put_is_create_only(store, scratch).await;
    put_checks_promised_checksum(store, scratch).await;
    missing_objects(store).await;
    list_prefix_start_after_and_paging(store, scratch).await;
    delete(store, scratch).await;
}

async fn put_get_round_trip(store: &dyn ObjectStore, scratch: &Path) {
    // Bigger than one 64 KiB copy buffer, with a non-trivial pattern.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let path = write_file(scratch, "round-trip", &data);
    let key = "rt/cam-1/2024/03/05/07/1709622489123-4000-7-3.mp4";
    assert_eq!(put(store, key, &path, &data).await, PutOutcome::Created);
    let got = store.get(key).await.unwrap_or_else(|e| panic!("get {key}: {e}"));
    assert_eq!(got.len(), data.len());
    assert!(got[..] == data[..], "{}: get returned different bytes", store.describe());

    let empty = write_file(scratch, "empty", b"");
    assert_eq!(put(store, "rt/empty", &empty, b"").await, PutOutcome::Created);
    assert_eq!(store.get("rt/empty").await.expect("get empty").len(), 0);
}

async fn put_is_create_only(store: &dyn ObjectStore, scratch: &Path) {
    let key = "co/cam/2024/01/01/00/1704067200000-2000-1-1.mp4";
    let first = write_file(scratch, "co-a", b"first version of the segment");
    assert_eq!(put(store, key, &first, b"first version of the segment").await, PutOutcome::Created);
    // A retried upload of the same bytes.
    let again = write_file(scratch, "co-a2", b"first version of the segment");
    assert_eq!(put(store, key, &again, b"first version of the segment").await, PutOutcome::AlreadyPresent);
    // Different content (different size) at the same key.
    let other = write_file(scratch, "co-b", b"another writer's bytes");
    let err = store
        .put_file(key, &other, 22, crc32c::crc32c(b"another writer's bytes"))
        .await
        .expect_err("different content at an existing key must not succeed");
    assert_eq!(err.kind, ErrorKind::Conflict, "{}: {err}", store.describe());
    // Same size, different bytes: a conflict wherever the backend can compare checksums.
    let same_len = b"FIRST version of the segment";
    let other = write_file(scratch, "co-c", same_len);
    let err = store
        .put_file(key, &other, same_len.len() as u64, crc32c::crc32c(same_len))
        .await
        .expect_err("same-size different content must not succeed");
    assert_eq!(err.kind, ErrorKind::Conflict, "{}: {err}", store.describe());
    // The original is untouched.
    assert_eq!(&store.get(key).await.expect("get")[..], b"first version of the segment");
}

async fn put_checks_promised_checksum(store: &dyn ObjectStore, scratch: &Path) {
    let key = "crc/cam/x.mp4";
    let path = write_file(scratch, "crc", b"bytes on disk");
    let err = store
        .put_file(key, &path, 13, crc32c::crc32c(b"bytes in ram!"))
        .await
        .expect_err("a put whose file does not match the promised checksum must fail");
    assert_eq!(err.kind, ErrorKind::DataLoss, "{}: {err}", store.describe());
    assert_eq!(store.get(key).await.expect_err("nothing stored").kind, ErrorKind::NotFound);
}

async fn missing_objects(store: &dyn ObjectStore) {
    let err = store.get("missing/cam/none.mp4").await.expect_err("get of a missing key");
    assert_eq!(err.kind, ErrorKind::NotFound, "{}: {err}", store.describe());
    assert!(store.list("missing/", None, 10).await.expect("list").is_empty());
}

async fn list_prefix_start_after_and_paging(store: &dyn ObjectStore, scratch: &Path) {
    let data = b"tiny segment";
    let path = write_file(scratch, "page", data);
    let keys: Vec<String> =
        (0..PAGING_KEYS).map(|i| format!("pg/cam/{:013}-1000-1-1.mp4", i * 1000)).collect();
    futures::stream::iter(keys.iter())
        .map(|key| store.put_file(key, &path, data.len() as u64, crc32c::crc32c(data)))
        .buffer_unordered(PUTS_IN_FLIGHT_MAX)
        .try_for_each(|outcome| async move {
            assert_eq!(outcome, PutOutcome::Created);
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("{}: filling: {e}", store.describe()));
    // Neighbours that share a string prefix but must not show up, on both sides.
    let neighbour = write_file(scratch, "nb", b"n");
    put(store, "pg/cal/x.mp4", &neighbour, b"n").await;
    put(store, "pg/cam-2/x.mp4", &neighbour, b"n").await;
    put(store, "pg/camera/x.mp4", &neighbour, b"n").await;

    // One call larger than a server page.
    let all = store.list("pg/cam/", None, PAGING_KEYS + 10).await.expect("list all");
    let listed: Vec<&str> = all.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(listed, keys.iter().map(String::as_str).collect::<Vec<_>>(), "{}", store.describe());
    assert!(all.iter().all(|o| o.bytes == data.len() as u64));

    // Paging with start_after, odd page size.
    let mut paged: Vec<ObjectInfo> = Vec::new();
    loop {
        let after = paged.last().map(|o| o.key.clone());
        let page = store.list("pg/cam/", after.as_deref(), 333).await.expect("list page");
        assert!(page.len() <= 333);
        if page.is_empty() {
            break;
        }
        paged.extend(page);
    }
    assert_eq!(paged, all);

    // start_after in the middle, and between keys.
    let tail = store.list("pg/cam/", Some(&keys[1000]), 5).await.expect("list tail");
    assert_eq!(tail.iter().map(|o| o.key.clone()).collect::<Vec<_>>(), keys[1001..1006].to_vec());
    let between = format!("{}x", keys[7]);
    let tail = store.list("pg/cam/", Some(&between), 1).await.expect("list between");
    assert_eq!(tail[0].key, keys[8]);
    // A partial-component prefix is a string prefix, as in S3.
    let partial = store.list("pg/cam", None, PAGING_KEYS + 10).await.expect("list partial");
    assert_eq!(partial.len(), PAGING_KEYS + 2, "pg/cam matches pg/cam/…, pg/cam-2/… and pg/camera/…");
    assert!(partial.windows(2).all(|w| w[0].key < w[1].key), "keys not in order");
    // start_after before the prefix range and after it.
    assert_eq!(store.list("pg/cam/", Some("a"), 1).await.expect("list")[0].key, keys[0]);
    assert!(store.list("pg/cam/", Some("pg/cam/z"), 10).await.expect("list").is_empty());
    assert!(store.list("pg/cam/", None, 0).await.expect("list").is_empty());
}

async fn delete(store: &dyn ObjectStore, scratch: &Path) {
    let key = "del/cam/2024/01/01/00/1704067200000-2000-1-1.mp4";
    let path = write_file(scratch, "del", b"to be deleted");
    assert_eq!(put(store, key, &path, b"to be deleted").await, PutOutcome::Created);
    store.delete(key).await.expect("delete");
    assert_eq!(store.get(key).await.expect_err("deleted").kind, ErrorKind::NotFound);
    assert!(store.list("del/", None, 10).await.expect("list").is_empty());
    store.delete(key).await.expect("deleting a missing key succeeds");
    // The key can be created again after a delete.
    assert_eq!(put(store, key, &path, b"to be deleted").await, PutOutcome::Created);
}
