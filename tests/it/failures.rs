//! Failing cameras: one that refuses our credentials shows `auth_failed` and backs off; one that
//! goes away shows `backoff` and records again when it returns; a healthy camera next to them
//! keeps recording without a gap.

use std::time::Duration;

use camrec_e2e::*;

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
use serde_json::json;

#[test]
fn auth_failure_and_outage_back_off_without_disturbing_others() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let healthy = FakeCameras::start(1, &[])?;
    let locked = FakeCameras::start(1, &["--username", "admin", "--password", "right"])?;
    let flaky_port = free_port();
    let mut flaky = FakeCameras::start_on(flaky_port, 1, &[])?;
    let node = Node::start(
        dir.path(),
        1,
        "[recorder]\nsegment_target_ms = 2000\nstall_timeout_ms = 3000\nbackoff_base_ms = 500\nbackoff_cap_ms = 4000\nauth_backoff_base_ms = 2000\n",
    )?;
    let api = node.client();
    api.add_camera(json!({"id": "healthy", "url": healthy.url(0)}))?;
    api.add_camera(json!({"id": "locked", "url": locked.url(0), "username": "admin", "password": "wrong"}))?;
    api.add_camera(json!({"id": "flaky", "url": flaky.url(0)}))?;

    wait_for("auth_failed", Duration::from_secs(20), || {
        Ok((api.camera_state("locked")? == "auth_failed").then_some(()))
    })?;
    wait_for("flaky recording", Duration::from_secs(20), || {
        Ok((api.camera_state("flaky")? == "recording").then_some(()))
    })?;
    let cam = api.camera("locked")?;
    assert!(cam["state"]["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{cam}");

    let outage_start_ms = wall_ms();
    flaky.proc.kill();
    wait_for("flaky in backoff", Duration::from_secs(20), || {
        Ok((api.camera_state("flaky")? == "backoff").then_some(()))
    })?;
    std::thread::sleep(Duration::from_secs(5));
    let backoff = api.camera("flaky")?;
    assert!(backoff["state"]["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{backoff}");

    // Auth failures back off: over ~15 s of failing, only a handful of attempts.
    let attempts = api.camera("locked")?["state"]["attempts"].as_u64().unwrap_or(0);
    assert!((1..=8).contains(&attempts), "auth attempts {attempts}: hammering the camera?");

    let flaky_dir = node.data.join("objects/flaky");
    let before = mp4_files(&flaky_dir).len();
    flaky = FakeCameras::start_on(flaky_port, 1, &[])?;
    wait_for("flaky recording again", Duration::from_secs(30), || {
        Ok((api.camera_state("flaky")? == "recording").then_some(()))
    })?;
    wait_for("flaky uploading new segments", Duration::from_secs(30), || {
        Ok((mp4_files(&flaky_dir).len() >= before + 2).then_some(()))
    })?;
    for f in mp4_files(&flaky_dir) {
        check_segment(&f)?;
    }
    let outage_end_ms = wall_ms();

    // The healthy camera recorded throughout the other cameras' trouble, without a gap.
    assert_eq!(api.camera_state("healthy")?, "recording");
    let objects = node.data.join("objects/healthy");
    wait_for("healthy camera's segments past the outage", Duration::from_secs(20), || {
        let ends = mp4_files(&objects)
            .iter()
            .filter_map(|p| key_times(&p.to_string_lossy()))
            .map(|(s, d)| s + d)
            .max();
        Ok(ends.filter(|e| *e >= outage_end_ms).map(|_| ()))
    })?;
    let mut times: Vec<(i64, i64)> =
        mp4_files(&objects).iter().map(|p| key_times(&p.to_string_lossy()).expect("key")).collect();
    times.sort();
    let first_start = times.first().map(|t| t.0).unwrap_or(i64::MAX);
    assert!(first_start <= outage_start_ms, "healthy camera started recording only after the outage began");
    for w in times.windows(2) {
        let gap = w[1].0 - (w[0].0 + w[0].1);
        assert!(gap.abs() <= 250, "healthy camera gap {gap} ms at {}", w[0].0 + w[0].1);
    }
    drop(flaky);
    Ok(())
}
