//! The `crash-10pct` scenario at small scale: failover completes with the optimum number of
//! moves and a balanced result, and runs are deterministic (in one process and across processes).

use std::time::Duration;

use camrec_sim::scenario::{run, Report, RunOptions, Scenario};

fn small(seed: u64) -> RunOptions {
    RunOptions {
        seed,
        scenario: Scenario::Crash10Pct,
        cameras: 2_000,
        nodes: 10,
        duration: Duration::from_secs(60),
        keep_trace: false,
    }
}

fn run_small(seed: u64) -> Report {
    run(&small(seed)).expect("the run completes").0
}

#[test]
fn failover_assigns_every_orphan_with_optimal_moves_and_balance() {
    let r = run_small(1);
    assert_eq!(r.crashed.len(), 1, "{r:#?}");
    assert!(r.orphaned > 0, "{r:#?}");
    assert!(r.all_assigned_live, "{r:#?}");
    let ms = r.orphans_assigned_ms.expect("every orphan assigned within the run");
    // Dead after 2 s of silence, plus commit and apply: well under 5 s.
    assert!(ms <= 5_000, "{r:#?}");
    assert_eq!(r.moved, r.moved_optimum, "{r:#?}");
    assert!(r.load_max_over_mean <= 1.05, "{r:#?}");
    #[allow(clippy::cast_precision_loss)]
    let ratio = r.cameras_per_node_max as f64 / r.cameras_per_node_mean;
    assert!(ratio <= 1.05, "{r:#?}");
    assert_eq!(r.virtual_ms, 60_000);
}

#[test]
fn same_seed_same_trace_and_different_seeds_differ() {
    let a = run_small(7);
    let b = run_small(7);
    assert_eq!(a, b);
    let c = run_small(8);
    assert_ne!(a.trace_sha256, c.trace_sha256);
}

#[test]
fn check_determinism_across_processes() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_camrec-sim"))
        .args(["check-determinism", "--seed", "3", "--cameras", "500", "--nodes", "5", "--duration", "20s"])
        .output()
        .expect("run camrec-sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("deterministic: both runs gave"), "{stdout}");
}
