//! Cluster-core figures for BENCHMARKS.md (prints, does not assert): bulk registration,
//! failover planning, snapshot codec, join + bounded rebalance rounds, and a full drain, at
//! 180,000 cameras / 200 nodes. Run in release:
//! `cargo run --release -p camrec-cluster-core --example bench_cluster`.

// A benchmark measures wall time; the sans-IO rule is for the core, not for this harness.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use camrec_cluster_core::codec;
use camrec_cluster_core::ids::{CameraId, NodeId};
use camrec_cluster_core::placement::load_spread;
use camrec_cluster_core::state::{
    CameraSpec, ClusterState, Command, NodeInfo, Response, Transport, BITRATE_KBPS_DEFAULT,
};

const CAMERAS: usize = 180_000;
const NODES: NodeId = 200;
const MOVES_PER_ROUND: u32 = 500;

fn node(id: NodeId) -> NodeInfo {
    NodeInfo {
        id,
        az: Some(format!("az-{}", id % 3)),
        capacity_weight: 1,
        admin_addr: format!("10.0.{}.{}:8080", id / 256, id % 256),
        raft_addr: format!("10.0.{}.{}:9080", id / 256, id % 256),
    }
}

fn camera(i: usize) -> CameraSpec {
    CameraSpec {
        id: CameraId::new(format!("cam-{i:06}")).expect("valid id"),
        url: format!("rtsp://10.1.{}.{}:554/stream1", i / 256 % 256, i % 256),
        username: Some("viewer".into()),
        password: Some("secret".into()),
        transport: Transport::Tcp,
        enabled: true,
        labels: BTreeMap::new(),
        bitrate_kbps: BITRATE_KBPS_DEFAULT,
    }
}

fn apply(s: &mut ClusterState, cmd: Command) -> Response {
    let r = s.apply(cmd);
    assert_eq!(r.result, None, "{r:?}");
    r
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn drain_changes(s: &mut ClusterState) {
    while s.poll_change().is_some() {}
}

/// Completes every pending handover; returns (count, total apply time).
fn complete_handovers(s: &mut ClusterState) -> (u32, Duration) {
    let pending: Vec<(CameraId, NodeId, u64)> = s
        .cameras()
        .values()
        .filter_map(|c| {
            let i = c.assignment?.incoming?;
            Some((c.spec.id.clone(), i.node, i.epoch))
        })
        .collect();
    let start = Instant::now();
    for (camera, node, epoch) in &pending {
        apply(s, Command::HandoverReady { camera: camera.clone(), node: *node, epoch: *epoch });
    }
    (pending.len() as u32, start.elapsed())
}

fn spread(s: &ClusterState) -> String {
    let sp = load_spread(s).expect("loaded");
    format!("max/mean {:.4}, min/mean {:.4}", sp.max_over_mean, sp.min_over_mean)
}

fn main() {
    println!("cluster core at {CAMERAS} cameras / {NODES} nodes (equal capacity and bitrate)");
    let mut base = ClusterState::new();
    for id in 1..=NODES {
        apply(&mut base, Command::RegisterNode(node(id)));
    }
    let cameras: Vec<CameraSpec> = (0..CAMERAS).map(camera).collect();

    // (a) One bulk registration.
    let (r, t) = timed(|| base.apply(Command::PutCameras { cameras, replace: false }));
    assert_eq!(r.result, None);
    drain_changes(&mut base);
    println!("(a) PutCameras x{}: {:.1} ms; {}", r.created, ms(t), spread(&base));

    // (b) Failover of one node.
    let mut s = base.clone();
    let owned = s.cameras_owned_by(77).count();
    let (r, t) = timed(|| apply(&mut s, Command::NodeDown { node: 77 }));
    let moved = base
        .cameras()
        .values()
        .filter(|c| {
            c.assignment.map(|a| a.owner) != s.camera(&c.spec.id).and_then(|c| c.assignment).map(|a| a.owner)
        })
        .count();
    println!(
        "(b) NodeDown: {:.2} ms; node owned {owned}, cameras moved {moved} (response {}); {}",
        ms(t),
        r.moved,
        spread(&s)
    );

    // (c) Snapshot codec.
    let (bytes, t_enc) = timed(|| codec::encode("state", &base).expect("encode"));
    let (decoded, t_dec) = timed(|| codec::decode::<ClusterState>("state", &bytes).expect("decode"));
    assert_eq!(decoded.cameras().len(), CAMERAS);
    println!(
        "(c) snapshot: {:.1} MB ({} B/camera), encode {:.1} ms, decode {:.1} ms",
        bytes.len() as f64 / 1e6,
        bytes.len() / CAMERAS,
        ms(t_enc),
        ms(t_dec)
    );

    // (d) A node joins; bounded rebalance rounds, each followed by its handovers completing.
    let mut s = base.clone();
    apply(&mut s, Command::RegisterNode(node(NODES + 1)));
    let (mut rounds, mut total, mut plan_time, mut ready_time) = (0u32, 0u32, Duration::ZERO, Duration::ZERO);
    loop {
        let (r, t) = timed(|| apply(&mut s, Command::Rebalance { max_moves: MOVES_PER_ROUND }));
        plan_time += t;
        if r.handovers == 0 {
            break;
        }
        rounds += 1;
        total += r.handovers;
        ready_time += complete_handovers(&mut s).1;
    }
    println!(
        "(d) join + Rebalance{{max_moves: {MOVES_PER_ROUND}}}: {rounds} rounds, {total} moves \
         (fair share {}), new node owns {}; plan {:.1} ms/round, HandoverReady {:.1} µs each; {}",
        CAMERAS / (NODES as usize + 1),
        s.cameras_owned_by(NODES + 1).count(),
        ms(plan_time) / f64::from(rounds + 1),
        ms(ready_time) * 1e3 / f64::from(total.max(1)),
        spread(&s)
    );

    // (e) Drain one node, make-before-break, to Drained.
    let mut s = base.clone();
    let (r, t) = timed(|| apply(&mut s, Command::Drain { node: 5 }));
    let (n, t_ready) = complete_handovers(&mut s);
    println!(
        "(e) Drain: {} handovers planned in {:.2} ms, {n} HandoverReady in {:.1} ms, node 5 {:?}; {}",
        r.handovers,
        ms(t),
        ms(t_ready),
        s.nodes()[&5].status,
        spread(&s)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
