//! The Raft-replicated cluster on real processes: kill -9 of a node and of the leader, a
//! make-before-break drain, a SIGSTOP partition, and voter replacement by the autopilot. Gaps are
//! measured from the segment timelines in the (shared, local-directory) object store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use camrec_e2e::*;
use serde_json::json;

const CAMERAS: usize = 6;

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A settled cluster and the node a test is about to fault.
struct Settled {
    leader: u64,
    /// camera → (owner, epoch) before the fault.
    before: BTreeMap<String, (u64, u64)>,
    victim: u64,
    /// The victim's cameras.
    moved: Vec<String>,
}

/// N node processes sharing one local object store.
struct Cluster {
    dir: PathBuf,
    nodes: BTreeMap<u64, Node>,
    cams: FakeCameras,
}

impl Cluster {
    fn start(dir: &Path, n: u64, voters: usize) -> anyhow::Result<Cluster> {
        let objects = dir.join("objects");
        let mut nodes = BTreeMap::new();
        let mut seed = String::new();
        for id in 1..=n {
            let cluster = format!(
                "[cluster]\nname = \"e2e\"\nbootstrap = {}\nseeds = [\"{seed}\"]\nvoters = {voters}\nrebalance_interval_ms = 1000\n",
                id == 1
            );
            let toml = format!(
                "az = \"az-{}\"\n\n[recorder]\nsegment_target_ms = 2000\n\n[storage]\nbackend = \"local\"\nlocal_dir = {:?}\n\n{cluster}",
                (id - 1) % 3,
                objects.display().to_string()
            );
            let node = Node::start(dir, id, &toml)?;
            if id == 1 {
                seed = node.api.trim_start_matches("http://").to_string();
            }
            nodes.insert(id, node);
        }
        let cams = FakeCameras::start(CAMERAS, &[])?;
        let c = Cluster { dir: dir.to_path_buf(), nodes, cams };
        let api = c.any_api();
        for i in 0..CAMERAS {
            api.add_camera(json!({"id": format!("cam{i}"), "url": c.cams.url(i)}))?;
        }
        Ok(c)
    }

    fn any_api(&self) -> Api {
        self.nodes.values().next().expect("a node").client()
    }

    fn api_of(&self, id: u64) -> Api {
        self.nodes[&id].client()
    }

    /// camera → (owner, epoch) as a node sees it.
    fn owners(&self, via: u64) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
        let (_, v) = self.api_of(via).get("/v1/cameras")?;
        let mut out = BTreeMap::new();
        for c in v["cameras"].as_array().cloned().unwrap_or_default() {
            if let (Some(id), Some(owner), Some(epoch)) =
                (c["id"].as_str(), c["owner"].as_u64(), c["epoch"].as_u64())
            {
                out.insert(id.to_string(), (owner, epoch));
            }
        }
        Ok(out)
    }

    fn leader(&self, via: u64) -> anyhow::Result<Option<u64>> {
        let (_, v) = self.api_of(via).get("/v1/cluster")?;
        Ok(v["leader"].as_u64())
    }

    /// Waits until every camera shows `recording` through node `via`.
    fn wait_all_recording(&self, via: u64, timeout: Duration) -> anyhow::Result<()> {
        let api = self.api_of(via);
        wait_for("all cameras recording", timeout, || {
            let (_, v) = api.get("/v1/cameras")?;
            let cams = v["cameras"].as_array().cloned().unwrap_or_default();
            Ok((cams.len() == CAMERAS && cams.iter().all(|c| c["state"]["state"] == "recording"))
                .then_some(()))
        })
    }

    /// Segment intervals of a camera in the shared store, sorted.
    fn timeline(&self, camera: &str) -> Vec<(i64, i64, String)> {
        let mut v: Vec<(i64, i64, String)> = mp4_files(&self.dir.join("objects").join(camera))
            .iter()
            .filter_map(|p| {
                let name = p.to_string_lossy().to_string();
                key_times(&name).map(|(s, d)| (s, s + d, name))
            })
            .collect();
        v.sort();
        v
    }

    /// Largest hole in the camera's recorded coverage within [from_ms, to_ms].
    fn max_gap_ms(&self, camera: &str, from_ms: i64, to_ms: i64) -> i64 {
        let mut covered_to = from_ms;
        let mut max_gap = 0;
        for (start, end, _) in self.timeline(camera) {
            if end <= covered_to {
                continue;
            }
            if start > covered_to {
                max_gap = max_gap.max(start.min(to_ms) - covered_to);
            }
            covered_to = covered_to.max(end);
            if covered_to >= to_ms {
                break;
            }
        }
        max_gap.max(to_ms - covered_to)
    }

    /// Waits until every camera has at least `n` segments in the store.
    fn wait_segments(&self, n: usize) -> anyhow::Result<()> {
        wait_for("segments in the store", Duration::from_secs(60), || {
            Ok((0..CAMERAS).all(|i| self.timeline(&format!("cam{i}")).len() >= n).then_some(()))
        })
    }

    /// Waits until every camera records and has segments stored, then picks a non-leader node
    /// that owns cameras (the victim of the test's fault).
    fn settle_and_pick_victim(&self) -> anyhow::Result<Settled> {
        self.wait_all_recording(1, Duration::from_secs(60))?;
        self.wait_segments(3)?;
        let leader = self.leader(1)?.expect("leader");
        let before = self.owners(leader)?;
        let victim = *self
            .nodes
            .keys()
            .find(|id| **id != leader && before.values().any(|(o, _)| o == *id))
            .expect("a non-leader node that owns cameras");
        let moved = before.iter().filter(|(_, (o, _))| *o == victim).map(|(k, _)| k.clone()).collect();
        Ok(Settled { leader, before, victim, moved })
    }

    /// Waits until the node's local buffer has no sealed segment left to upload.
    fn wait_flushed(&self, id: u64) -> anyhow::Result<()> {
        let sealed = self.nodes[&id].data.join("buffer/sealed");
        wait_for("buffer flushed", Duration::from_secs(60), || {
            Ok((std::fs::read_dir(&sealed).map(|d| d.count()).unwrap_or(0) == 0).then_some(()))
        })
    }
}

#[test]
fn kill_9_of_a_node_moves_its_cameras_within_5_s() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut c = Cluster::start(dir.path(), 3, 3)?;
    let Settled { leader, before, victim, moved } = c.settle_and_pick_victim()?;
    let t_kill = wall_ms();
    c.nodes.get_mut(&victim).expect("victim").proc.kill();

    wait_for("the victim's cameras owned by survivors", Duration::from_secs(20), || {
        let now = c.owners(leader)?;
        Ok(moved.iter().all(|cam| now.get(cam).is_some_and(|(o, _)| *o != victim)).then_some(()))
    })?;
    c.wait_all_recording(leader, Duration::from_secs(30))?;
    let after = c.owners(leader)?;
    for (cam, (owner, epoch)) in &before {
        if *owner != victim {
            assert_eq!(after[cam], (*owner, *epoch), "{cam} did not belong to the victim and must not move");
        }
    }
    std::thread::sleep(Duration::from_secs(6));
    // The victim comes back (its partial segment is salvaged and uploaded) and rejoins.
    c.nodes.get_mut(&victim).expect("victim").restart()?;
    c.wait_flushed(victim)?;
    for n in c.nodes.keys().copied().collect::<Vec<_>>() {
        c.wait_flushed(n)?;
    }
    let to = wall_ms() - 4_000;
    let mut worst = 0;
    for cam in &moved {
        let gap = c.max_gap_ms(cam, t_kill - 3_000, to);
        println!("camera {cam}: max gap {gap} ms around the kill of node {victim}");
        worst = worst.max(gap);
    }
    assert!(worst <= 5_000, "max gap {worst} ms > 5 s");
    Ok(())
}

#[test]
fn kill_9_of_the_leader_keeps_other_cameras_recording_and_it_rejoins() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut c = Cluster::start(dir.path(), 3, 3)?;
    c.wait_all_recording(1, Duration::from_secs(60))?;
    c.wait_segments(3)?;
    let leader = c.leader(1)?.expect("leader");
    let survivor = *c.nodes.keys().find(|id| **id != leader).expect("survivor");
    let before = c.owners(survivor)?;
    let t_kill = wall_ms();
    c.nodes.get_mut(&leader).expect("leader").proc.kill();

    let new_leader = wait_for("a new leader", Duration::from_secs(20), || {
        let l = c.leader(survivor)?;
        Ok(l.filter(|l| *l != leader))
    })?;
    wait_for("the old leader's cameras moved", Duration::from_secs(20), || {
        let now = c.owners(new_leader)?;
        Ok((now.len() == CAMERAS && now.values().all(|(o, _)| *o != leader)).then_some(()))
    })?;
    c.wait_all_recording(new_leader, Duration::from_secs(30))?;
    let after = c.owners(new_leader)?;
    assert_eq!(after.len(), CAMERAS, "no assignment may be lost");
    std::thread::sleep(Duration::from_secs(3));
    let to = wall_ms() - 2_500;
    for (cam, (owner, epoch)) in &before {
        if *owner != leader {
            assert_eq!(after[cam], (*owner, *epoch), "{cam} must not be interrupted by the leader change");
            let gap = c.max_gap_ms(cam, t_kill - 3_000, to);
            assert!(gap <= 300, "{cam} on a surviving node has a {gap} ms gap across the leader change");
        }
    }

    // The old leader restarts, rejoins, and gets cameras back by rebalance.
    c.nodes.get_mut(&leader).expect("old leader").restart()?;
    wait_for("the restarted node owns cameras again", Duration::from_secs(60), || {
        let now = c.owners(new_leader)?;
        Ok((now.values().filter(|(o, _)| *o == leader).count() >= 1).then_some(()))
    })?;
    let (_, nodes) = c.api_of(new_leader).get("/v1/nodes")?;
    let status = nodes["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == leader))
        .map(|n| n["status"].clone());
    assert_eq!(status, Some(json!("active")));
    Ok(())
}

#[test]
fn drain_hands_over_every_camera_once_without_a_gap() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Cluster::start(dir.path(), 3, 3)?;
    c.wait_all_recording(1, Duration::from_secs(60))?;
    c.wait_segments(3)?;
    let before = c.owners(1)?;
    let target = *c.nodes.keys().find(|id| before.values().any(|(o, _)| o == *id)).expect("an owner");
    let drained: Vec<String> =
        before.iter().filter(|(_, (o, _))| *o == target).map(|(k, _)| k.clone()).collect();
    let t_drain = wall_ms();
    let (status, body) = c.api_of(1).send("POST", &format!("/v1/nodes/{target}/drain"), &json!({}))?;
    assert_eq!(status, 200, "{body}");
    wait_for("node drained", Duration::from_secs(60), || {
        let (_, v) = c.api_of(1).get("/v1/nodes")?;
        let s = v["nodes"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["id"] == target))
            .map(|n| n["status"].clone());
        Ok((s == Some(json!("drained"))).then_some(()))
    })?;
    let after = c.owners(1)?;
    for cam in &drained {
        let (owner, epoch) = after[cam];
        assert_ne!(owner, target);
        assert!(epoch > before[cam].1);
    }
    for (cam, was) in &before {
        if !drained.contains(cam) {
            assert_eq!(&after[cam], was, "{cam} was not on the drained node and must not move");
        }
    }
    std::thread::sleep(Duration::from_secs(5));
    for n in c.nodes.keys() {
        c.wait_flushed(*n)?;
    }
    let to = wall_ms() - 3_000;
    for cam in &drained {
        let gap = c.max_gap_ms(cam, t_drain - 3_000, to);
        println!("camera {cam}: max gap {gap} ms across the drain");
        assert!(gap <= 250, "{cam}: drain left a {gap} ms gap");
        // Moved exactly once: segments come from exactly two (node, epoch) recorders.
        let recorders: std::collections::BTreeSet<(String, String)> = c
            .timeline(cam)
            .iter()
            .filter(|(s, _, _)| *s >= t_drain - 4_000)
            .filter_map(|(_, _, k)| {
                let f = k.rsplit('/').next()?.trim_end_matches(".mp4").to_string();
                let mut it = f.split('-').skip(2);
                Some((it.next()?.to_string(), it.next()?.to_string()))
            })
            .collect();
        assert_eq!(recorders.len(), 2, "{cam}: recorded by {recorders:?}");
    }
    let (status, _) = c.api_of(1).send("POST", &format!("/v1/nodes/{target}/undrain"), &json!({}))?;
    assert_eq!(status, 200);
    Ok(())
}

#[test]
fn a_partitioned_node_stops_its_duplicates_quickly_after_it_returns() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Cluster::start(dir.path(), 3, 3)?;
    let Settled { leader, before, victim, moved } = c.settle_and_pick_victim()?;
    let pid = c.nodes[&victim].proc.pid().to_string();
    let t0 = wall_ms();
    std::process::Command::new("kill").args(["-STOP", &pid]).status()?;
    wait_for("cameras reassigned", Duration::from_secs(20), || {
        let now = c.owners(leader)?;
        Ok(moved.iter().all(|cam| now.get(cam).is_some_and(|(o, _)| *o != victim)).then_some(()))
    })?;
    std::thread::sleep(Duration::from_millis((10_000 - (wall_ms() - t0)).max(0) as u64));
    std::process::Command::new("kill").args(["-CONT", &pid]).status()?;
    let resumed = wall_ms();
    let victim_api = c.api_of(victim);
    wait_for("the returned node stops its duplicates", Duration::from_secs(10), || {
        // A duplicate is the victim still recording under its old epoch; after it returns,
        // rebalance may legitimately hand cameras back to it under new epochs.
        let (_, v) = victim_api.get("/v1/internal/status")?;
        let still: Vec<&String> = moved
            .iter()
            .filter(|cam| v[cam.as_str()]["epoch"].as_u64() == Some(before[cam.as_str()].1))
            .collect();
        Ok(still.is_empty().then_some(()))
    })?;
    let took = wall_ms() - resumed;
    println!("duplicates stopped {took} ms after SIGCONT");
    assert!(took <= 2_500, "duplicates ran {took} ms after the node came back");
    std::thread::sleep(Duration::from_secs(4));
    for n in c.nodes.keys() {
        c.wait_flushed(*n)?;
    }
    // The recordings list shows each time range once.
    let from = rfc3339(t0 - 3_000);
    let to = rfc3339(wall_ms() - 3_000);
    for cam in &moved {
        let (status, v) =
            c.api_of(leader).get(&format!("/v1/cameras/{cam}/recordings?from={from}&to={to}"))?;
        assert_eq!(status, 200, "{v}");
        let segs = v["segments"].as_array().cloned().unwrap_or_default();
        assert!(!segs.is_empty(), "{cam}: nothing listed");
        for w in segs.windows(2) {
            let (a_end, b_start) =
                (w[0]["end_ms"].as_i64().unwrap_or(0), w[1]["start_ms"].as_i64().unwrap_or(0));
            assert!(b_start >= a_end - 250, "{cam}: the list shows a time range twice: {w:?}");
        }
        // The only hole is the failover itself (a frozen process records nothing).
        for g in v["gaps"].as_array().cloned().unwrap_or_default() {
            let len = g["end_ms"].as_i64().unwrap_or(0) - g["start_ms"].as_i64().unwrap_or(0);
            assert!(len <= 5_000, "{cam}: gap of {len} ms: {g}");
        }
    }
    Ok(())
}

#[test]
fn sigterm_drains_the_node_before_it_exits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut c = Cluster::start(dir.path(), 3, 3)?;
    let Settled { leader, victim, moved, .. } = c.settle_and_pick_victim()?;
    let t0 = wall_ms();
    let clean = c.nodes.get_mut(&victim).expect("victim").proc.terminate(Duration::from_secs(90))?;
    assert!(clean, "SIGTERM must end in a clean exit");
    let after = c.owners(leader)?;
    for cam in &moved {
        assert_ne!(after[cam].0, victim, "{cam} still owned by the stopped node");
    }
    let (_, nodes) = c.api_of(leader).get("/v1/nodes")?;
    let status = nodes["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == victim))
        .map(|n| n["status"].clone());
    assert_eq!(status, Some(json!("drained")));
    std::thread::sleep(Duration::from_secs(5));
    for n in c.nodes.keys().copied().filter(|n| *n != victim).collect::<Vec<_>>() {
        c.wait_flushed(n)?;
    }
    let to = wall_ms() - 3_000;
    for cam in &moved {
        let gap = c.max_gap_ms(cam, t0 - 3_000, to);
        println!("camera {cam}: max gap {gap} ms across the SIGTERM drain");
        assert!(gap <= 250, "{cam}: SIGTERM drain left a {gap} ms gap");
    }
    Ok(())
}

fn rfc3339(ms: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{}", ms / 1000), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn five_nodes_survive_losing_two_voters_one_after_another() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut c = Cluster::start(dir.path(), 5, 3)?;
    c.wait_all_recording(1, Duration::from_secs(60))?;
    let voters = |c: &Cluster, via: u64| -> anyhow::Result<Vec<u64>> {
        let (_, v) = c.api_of(via).get("/v1/cluster")?;
        Ok(v["voters"].as_array().cloned().unwrap_or_default().iter().filter_map(|x| x.as_u64()).collect())
    };
    for round in 0..2 {
        let alive: Vec<u64> =
            c.nodes.iter_mut().filter_map(|(id, n)| n.proc.is_running().then_some(*id)).collect();
        let via = alive[0];
        let vs = voters(&c, via)?;
        assert_eq!(vs.len(), 3, "round {round}: voters {vs:?}");
        let leader = c.leader(via)?.expect("leader");
        let victim = *vs.iter().find(|v| **v != leader).expect("a follower voter");
        c.nodes.get_mut(&victim).expect("victim").proc.kill();
        let via = *alive.iter().find(|id| **id != victim).expect("survivor");
        wait_for("the dead voter replaced", Duration::from_secs(40), || {
            let vs = voters(&c, via)?;
            Ok((vs.len() == 3 && !vs.contains(&victim)).then_some(()))
        })?;
    }
    let alive: Vec<u64> =
        c.nodes.iter_mut().filter_map(|(id, n)| n.proc.is_running().then_some(*id)).collect();
    assert_eq!(alive.len(), 3);
    let api = c.api_of(alive[0]);
    api.add_camera(json!({"id": "after", "url": c.cams.url(0)}))?;
    wait_for("all cameras on survivors", Duration::from_secs(30), || {
        let now = c.owners(alive[0])?;
        Ok((now.len() == CAMERAS + 1 && now.values().all(|(o, _)| alive.contains(o))).then_some(()))
    })?;
    Ok(())
}
