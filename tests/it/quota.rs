//! The buffer quota under an object-store outage: an S3 endpoint where nothing listens (uploads
//! fail), a small quota, two cameras. `drop-oldest` drops exactly what it reports and keeps the
//! buffer within the quota; `stop-recording` drops nothing and pauses the cameras. Both report
//! not-ready above the high watermark and recover once a real S3 server (moto) appears on the
//! endpoint.

use std::path::Path;
use std::time::Duration;

use camrec_e2e::*;
use serde_json::json;

const RECORDER: &str = "[recorder]\nsegment_target_ms = 2000\n";
const QUOTA_BYTES: u64 = 3_000_000;

/// A node config for an S3 endpoint on `port` (nothing listening yet) with the quota and `policy`.
fn config(port: u16, policy: &str) -> String {
    let endpoint = S3Server {
        proc: Proc { name: "none".into(), child: None },
        endpoint: format!("http://127.0.0.1:{port}"),
        port,
    };
    let storage = endpoint.node_toml("").replace(
        "[storage]\n",
        &format!("[storage]\nbuffer_quota_bytes = {QUOTA_BYTES}\nbuffer_full_policy = \"{policy}\"\n"),
    );
    format!("{RECORDER}\n{storage}")
}

fn create_bucket(s3: &S3Server) -> anyhow::Result<()> {
    let client = s3.sdk();
    rt().block_on(async {
        client.create_bucket().bucket(S3_BUCKET).send().await?;
        Ok(())
    })
}

fn count_objects(s3: &S3Server) -> anyhow::Result<u64> {
    let client = s3.sdk();
    rt().block_on(async {
        let mut n = 0;
        let mut token = None;
        loop {
            let r = client
                .list_objects_v2()
                .bucket(S3_BUCKET)
                .set_continuation_token(token.take())
                .send()
                .await?;
            n += r.contents().len() as u64;
            match r.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => return Ok(n),
            }
        }
    })
}

/// (files, total bytes, largest file) in `dir`.
fn dir_usage(dir: &Path) -> (u64, u64, u64) {
    let mut out = (0, 0, 0);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.0 += 1;
        out.1 += len;
        out.2 = out.2.max(len);
    }
    out
}

/// A counter's value in a Prometheus text scrape.
fn metric(api: &Api, name: &str) -> anyhow::Result<Option<f64>> {
    let text = api.http.get(format!("{}/metrics", api.base)).send()?.text()?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok()))
}

fn summary(api: &Api) -> anyhow::Result<serde_json::Value> {
    let (status, v) = api.get("/v1/internal/summary")?;
    anyhow::ensure!(status == 200, "summary → {status}: {v}");
    Ok(v)
}

fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn drop_oldest_keeps_the_buffer_within_quota_and_counts_every_drop() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let s3_port = free_port();
    let cams = FakeCameras::start(2, &[])?;
    let node = Node::start(dir.path(), 1, &config(s3_port, "drop-oldest"))?;
    let api = node.client();
    for i in 0..2 {
        api.add_camera(json!({"id": format!("cam{i}"), "url": cams.url(i)}))?;
    }
    let sealed_dir = node.data.join("buffer/sealed");
    let mut largest_bytes = 0;
    let mut worst_bytes = 0;
    // Outage: wait for a few drops while sampling the buffer's size.
    wait_for("segments dropped for the quota", Duration::from_secs(120), || {
        let (_, bytes, largest) = dir_usage(&sealed_dir);
        largest_bytes = largest_bytes.max(largest);
        worst_bytes = worst_bytes.max(bytes);
        Ok((n(&summary(&api)?, "segments_dropped") >= 4).then_some(()))
    })
    .map_err(|e| e.context(node.log_tail()))?;
    let (status, ready) = api.get("/readyz")?;
    assert_eq!((status, &ready["buffer_over_high_watermark"]), (503, &json!(true)), "{ready}");
    for _ in 0..20 {
        let (_, bytes, largest) = dir_usage(&sealed_dir);
        largest_bytes = largest_bytes.max(largest);
        worst_bytes = worst_bytes.max(bytes);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(largest_bytes > 0);
    assert!(
        worst_bytes <= QUOTA_BYTES + largest_bytes,
        "buffer held {worst_bytes} bytes; quota {QUOTA_BYTES} + one segment {largest_bytes}"
    );
    // Every missing segment is a counted drop, and the API, metrics and disk agree.
    wait_for("drop counts that agree", Duration::from_secs(20), || {
        let s = summary(&api)?;
        let (files, _, _) = dir_usage(&sealed_dir);
        let dropped = n(&s, "segments_dropped");
        let missing = n(&s, "segments_sealed") - n(&s, "pending_segments") - n(&s, "segments_uploaded");
        let metric_dropped = metric(&api, "camrec_buffer_dropped_segments_total")?;
        let metric_bytes = metric(&api, "camrec_buffer_dropped_bytes_total")?;
        Ok((dropped == missing
            && files == n(&s, "pending_segments")
            && metric_dropped == Some(dropped as f64)
            && metric_bytes == Some(n(&s, "bytes_dropped") as f64))
        .then_some(()))
    })?;
    let cam0 = api.camera("cam0")?;
    let cam1 = api.camera("cam1")?;
    let dropped_per_camera = cam0["state"]["segments_dropped"].as_u64().unwrap_or(0)
        + cam1["state"]["segments_dropped"].as_u64().unwrap_or(0);
    assert!(dropped_per_camera > 0, "{cam0}\n{cam1}");
    assert!(
        cam0["state"]["note"].as_str().unwrap_or("").contains("dropped")
            || cam1["state"]["note"].as_str().unwrap_or("").contains("dropped")
    );
    assert!(metric(&api, "camrec_upload_retries_total")?.unwrap_or(0.0) > 0.0);

    // The store comes back: the backlog uploads and the node is ready again.
    let backlog: Vec<_> = std::fs::read_dir(&sealed_dir)?.flatten().map(|e| e.path()).collect();
    assert!(!backlog.is_empty());
    let s3 = S3Server::start_on(s3_port)?;
    create_bucket(&s3)?;
    wait_for("the backlog uploaded and ready", Duration::from_secs(120), || {
        let left = backlog.iter().filter(|p| p.exists()).count();
        let (status, _) = api.get("/readyz")?;
        Ok((left == 0 && status == 200).then_some(()))
    })
    .map_err(|e| e.context(node.log_tail()))?;
    let s = summary(&api)?;
    assert!(n(&s, "segments_uploaded") >= backlog.len() as u64);
    assert!(count_objects(&s3)? >= n(&s, "segments_uploaded"));
    wait_for("missing = dropped after the outage", Duration::from_secs(10), || {
        let s = summary(&api)?;
        let missing = n(&s, "segments_sealed") - n(&s, "pending_segments") - n(&s, "segments_uploaded");
        Ok((missing == n(&s, "segments_dropped")).then_some(()))
    })?;
    Ok(())
}

#[test]
fn stop_recording_pauses_without_drops_and_resumes_when_the_store_returns() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let s3_port = free_port();
    let cams = FakeCameras::start(2, &[])?;
    let node = Node::start(dir.path(), 1, &config(s3_port, "stop-recording"))?;
    let api = node.client();
    for i in 0..2 {
        api.add_camera(json!({"id": format!("cam{i}"), "url": cams.url(i)}))?;
    }
    wait_for("both cameras paused", Duration::from_secs(120), || {
        Ok((api.camera_state("cam0")? == "paused" && api.camera_state("cam1")? == "paused").then_some(()))
    })
    .map_err(|e| e.context(node.log_tail()))?;
    let cam0 = api.camera("cam0")?;
    let reason = cam0["state"]["last_error"].as_str().unwrap_or("");
    assert!(reason.contains("local buffer full") && reason.contains(&QUOTA_BYTES.to_string()), "{cam0}");
    let (status, ready) = api.get("/readyz")?;
    assert_eq!((status, &ready["buffer_over_high_watermark"]), (503, &json!(true)), "{ready}");
    // Paused: at most the segments open at the pause are sealed after it.
    std::thread::sleep(Duration::from_secs(3));
    let sealed_paused = n(&summary(&api)?, "segments_sealed");
    std::thread::sleep(Duration::from_secs(6));
    let s = summary(&api)?;
    assert_eq!(n(&s, "segments_sealed"), sealed_paused, "no segment sealed while paused: {s}");
    assert_eq!(n(&s, "segments_dropped"), 0);
    assert_eq!(n(&s, "pending_segments"), n(&s, "segments_sealed"), "{s}");

    let s3 = S3Server::start_on(s3_port)?;
    create_bucket(&s3)?;
    wait_for("recording again and ready", Duration::from_secs(120), || {
        let (status, _) = api.get("/readyz")?;
        let recording = api.camera_state("cam0")? == "recording" && api.camera_state("cam1")? == "recording";
        let s = summary(&api)?;
        Ok((status == 200 && recording && n(&s, "segments_sealed") > sealed_paused).then_some(()))
    })
    .map_err(|e| e.context(node.log_tail()))?;
    // Nothing missing (retried: a seal lands in the index just before its counter).
    wait_for("sealed = pending + uploaded, nothing dropped", Duration::from_secs(10), || {
        let s = summary(&api)?;
        anyhow::ensure!(n(&s, "segments_dropped") == 0, "{s}");
        Ok((n(&s, "segments_sealed") == n(&s, "pending_segments") + n(&s, "segments_uploaded")).then_some(()))
    })?;
    let s = summary(&api)?;
    assert!(count_objects(&s3)? >= n(&s, "segments_uploaded"));
    Ok(())
}
