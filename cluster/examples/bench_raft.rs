//! Benchmark: the cluster state machine *through openraft* (sled log store, fsync'd appends).
//!
//! `cargo run --release -p camrec-cluster --example bench_raft` prints:
//! - a bulk registration of 180,000 cameras as one Raft entry (propose → commit → apply),
//! - snapshot build, persist, and install into a fresh state machine, with its size.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use camrec_cluster::network::NoPeers;
use camrec_cluster::node::ClusterNode;
use camrec_cluster::sm::StateMachine;
use camrec_cluster::types::ProdConfig;
use camrec_cluster_core::ids::CameraId;
use camrec_cluster_core::state::{CameraSpec, Command, NodeInfo, Transport};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

const CAMERAS: u32 = 180_000;
const NODES: u64 = 200;

#[allow(clippy::disallowed_methods)] // a benchmark measures wall time
fn now() -> Instant {
    Instant::now()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = ClusterNode::open(1, "127.0.0.1:1", &dir.path().join("raft"), "bench", true, NoPeers)
        .await
        .expect("open");
    node.wait_for_leader(Duration::from_secs(10)).await.expect("leader");
    for id in 1..=NODES {
        let info = NodeInfo {
            id,
            az: Some(format!("az-{}", id % 3)),
            capacity_weight: 1,
            admin_addr: format!("10.0.0.{id}:8080"),
            raft_addr: format!("10.0.0.{id}:8080"),
        };
        node.write(Command::RegisterNode(info)).await.expect("register");
    }
    let cameras: Vec<CameraSpec> = (0..CAMERAS)
        .map(|i| CameraSpec {
            id: CameraId::new(format!("cam-{i:06}")).expect("id"),
            url: format!("rtsp://10.1.{}.{}:554/stream1", i / 250, i % 250),
            username: Some("viewer".into()),
            password: Some("secret".into()),
            transport: Transport::Tcp,
            enabled: true,
            labels: BTreeMap::new(),
            bitrate_kbps: 2_000,
        })
        .collect();
    let t = now();
    let r = node.write(Command::PutCameras { cameras, replace: false }).await.expect("bulk");
    let bulk = t.elapsed();
    assert_eq!(r.created, CAMERAS);
    println!(
        "bulk registration of {CAMERAS} cameras through Raft (1 entry, fsync'd): {:.3} s",
        bulk.as_secs_f64()
    );

    let mut sm = node.sm.clone();
    let t = now();
    let snap = RaftSnapshotBuilder::<ProdConfig>::build_snapshot(&mut sm).await.expect("snapshot");
    let build = t.elapsed();
    let bytes = snap.snapshot.get_ref().len();
    println!(
        "snapshot build + persist: {:.3} s, {:.1} MB ({} B/camera)",
        build.as_secs_f64(),
        bytes as f64 / 1e6,
        bytes / CAMERAS as usize
    );

    let fresh_dir = tempfile::tempdir().expect("tempdir");
    let mut fresh: StateMachine<ProdConfig> = StateMachine::open(Some(fresh_dir.path())).expect("fresh sm");
    let t = now();
    RaftStateMachine::<ProdConfig>::install_snapshot(&mut fresh, &snap.meta, snap.snapshot)
        .await
        .expect("install");
    let install = t.elapsed();
    assert_eq!(fresh.lock().state.cameras().len(), CAMERAS as usize);
    println!("snapshot install (decode + persist) on a fresh node: {:.3} s", install.as_secs_f64());
    node.shutdown().await;
}
