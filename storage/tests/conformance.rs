//! Runs the object-store conformance suite against every backend: the local directory store,
//! the in-memory store, and the S3 store against a real S3-compatible server (`moto_server`,
//! pip package `moto[server]`) started by the test on a free loopback port.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use camrec_storage::{conformance, LocalDirStore, MemStore, ObjectStore, S3Config, S3Store};

/// How long moto_server may take to accept connections.
const MOTO_START_TIMEOUT_MS: u64 = 30_000;
const MOTO_POLL_MS: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_dir_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(dir.path().join("objects")).unwrap();
    conformance::run(&store, scratch.path()).await;
    // Temp files never outlive a put.
    let leftovers: Vec<_> = walk_names(dir.path()).into_iter().filter(|n| n.starts_with('.')).collect();
    assert!(leftovers.is_empty(), "temp files left behind: {leftovers:?}");
}

#[tokio::test]
async fn mem_store_conforms() {
    let scratch = tempfile::tempdir().unwrap();
    conformance::run(&MemStore::new(), scratch.path()).await;
}

/// A moto_server child process, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start moto_server ({e}): the S3 conformance test needs a real S3-compatible \
                 server. Install it with `pip install 'moto[server]'` so `moto_server` is on PATH."
            )
        });
    let moto = Moto { child, port };
    // Polls every MOTO_POLL_MS; counting attempts keeps the test free of clock reads.
    let mut waited_ms = 0;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            waited_ms < MOTO_START_TIMEOUT_MS,
            "moto_server did not listen on port {port} within {MOTO_START_TIMEOUT_MS} ms"
        );
        std::thread::sleep(Duration::from_millis(MOTO_POLL_MS));
        waited_ms += MOTO_POLL_MS;
    }
    moto
}

fn moto_config(port: u16, bucket: &str, prefix: &str) -> S3Config {
    let mut config = S3Config::new(bucket, "us-east-1");
    config.prefix = prefix.to_owned();
    config.endpoint = Some(format!("http://127.0.0.1:{port}"));
    config.force_path_style = true;
    config.access_key_id = Some("testing".into());
    config.secret_access_key = Some("testing".into());
    config.operation_timeout_ms = 30_000;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conforms_against_moto() {
    let moto = start_moto();
    let scratch = tempfile::tempdir().unwrap();
    let store = S3Store::new(moto_config(moto.port, "camrec-test", "")).await.unwrap();
    store.client().create_bucket().bucket("camrec-test").send().await.expect("create bucket");
    conformance::run(&store, scratch.path()).await;

    // The same suite through a key prefix, in the same bucket: the prefix isolates it.
    let scratch = tempfile::tempdir().unwrap();
    let prefixed = S3Store::new(moto_config(moto.port, "camrec-test", "/cluster-a/")).await.unwrap();
    assert_eq!(prefixed.describe(), format!("s3://camrec-test/cluster-a (http://127.0.0.1:{})", moto.port));
    let bucket_with_other_data = S3Store::new(moto_config(moto.port, "camrec-test", "other")).await.unwrap();
    let scratch2 = tempfile::tempdir().unwrap();
    conformance::run(&bucket_with_other_data, scratch2.path()).await;
    conformance::run(&prefixed, scratch.path()).await;

    // A missing bucket is fatal, not retryable.
    let missing = S3Store::new(moto_config(moto.port, "no-such-bucket", "")).await.unwrap();
    let err = missing.get("k").await.expect_err("missing bucket");
    assert_eq!(err.kind, camrec_storage::ErrorKind::Fatal, "{err}");
    drop(moto);

    // A dead endpoint is retryable.
    let mut dead =
        moto_config(TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(), "b", "");
    dead.max_attempts = 1;
    let store = S3Store::new(dead).await.unwrap();
    let err = store.get("k").await.expect_err("nothing listens");
    assert!(err.is_retryable(), "{err}");
}

fn walk_names(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        out.push(entry.file_name().to_string_lossy().into_owned());
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk_names(&entry.path()));
        }
    }
    out
}
