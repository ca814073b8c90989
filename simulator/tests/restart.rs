//! A crashed node restarts from its disk (snapshot + log replay), catches up, and the failure
//! detector's `NodeDown` is followed by `NodeUp` once it heartbeats again.

use std::time::Duration;

use camrec_cluster_core::state::{Command, NodeStatus};
use camrec_sim::scenario::camera;
use camrec_sim::sim_rt;
use camrec_sim::trace::Trace;
use camrec_sim::world::{World, WorldConfig};

#[test]
fn a_crashed_node_comes_back_down_then_up_with_the_same_table() {
    sim_rt::seed_raft_rng(11);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .rng_seed(tokio::runtime::RngSeed::from_bytes(b"restart"))
        .build()
        .unwrap();
    rt.block_on(async {
        let trace = Trace::new(true);
        let mut world = World::new(WorldConfig::new(4), 11, trace.clone());
        world.bootstrap().await.unwrap();
        world
            .write(Command::PutCameras { cameras: (0..100).map(camera).collect(), replace: false })
            .await
            .unwrap();
        world.wait_converged().await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;

        world.crash(4).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let leader = world.wait_leader().await.unwrap();
        let status = |w: &World| w.sm(leader).unwrap().lock().state.nodes()[&4].status;
        assert_eq!(status(&world), NodeStatus::Down);

        world.restart(4).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        world.wait_converged().await.unwrap();
        assert_eq!(status(&world), NodeStatus::Active, "{:#?}", trace.lines());
        let table = |id| world.sm(id).unwrap().lock().state.cameras().clone();
        assert_eq!(table(4), table(leader));
        world.shutdown().await;
    });
}
