//! Recording from GStreamer's RTSP server (a third-party implementation): H.264+AAC and
//! H.265+AAC over TCP and UDP, with and without digest auth; and `camrec dev` end to end.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use camrec_e2e::*;
use serde_json::json;

const RECORDER: &str = "[recorder]\nsegment_target_ms = 2000\n";

/// Segments of each camera under `objects/`, keyed by camera id.
fn segments_by_camera(objects: &Path) -> BTreeMap<String, Vec<std::path::PathBuf>> {
    let mut by: BTreeMap<String, Vec<std::path::PathBuf>> = BTreeMap::new();
    for p in mp4_files(objects) {
        // objects/{camera}/YYYY/MM/DD/HH/file.mp4
        let rel = p.strip_prefix(objects).expect("under objects");
        let camera = rel.components().next().expect("camera dir").as_os_str().to_string_lossy().to_string();
        by.entry(camera).or_default().push(p);
    }
    by
}

/// Asserts the camera's segments, ordered by start time, follow each other without a gap.
fn assert_continuous(camera: &str, files: &[std::path::PathBuf]) {
    let mut times: Vec<(i64, i64)> =
        files.iter().map(|p| key_times(&p.to_string_lossy()).expect("segment key")).collect();
    times.sort();
    for w in times.windows(2) {
        let (prev_start, prev_dur) = w[0];
        let (next_start, _) = w[1];
        let gap_ms = next_start - (prev_start + prev_dur);
        assert!(
            gap_ms.abs() <= 250,
            "{camera}: gap of {gap_ms} ms between segments at {prev_start} and {next_start}"
        );
    }
}

#[test]
fn records_gstreamer_h264_h265_tcp_udp_with_and_without_digest() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let open = GstServer::start("none")?;
    let digest = GstServer::start("digest")?;
    let node = Node::start(dir.path(), 1, RECORDER)?;
    let api = node.client();
    let cameras = [
        ("h264-tcp", format!("{}/h264", open.base), "tcp", false),
        ("h265-udp", format!("{}/h265", open.base), "udp", false),
        ("h264-udp-digest", format!("{}/h264", digest.base), "udp", true),
        ("h265-tcp-digest", format!("{}/h265", digest.base), "tcp", true),
    ];
    for (id, url, transport, auth) in &cameras {
        let mut body = json!({"id": id, "url": url, "transport": transport});
        if *auth {
            body["username"] = json!("admin");
            body["password"] = json!("secret");
        }
        api.add_camera(body)?;
    }
    let objects = node.data.join("objects");
    wait_for("3 uploaded segments per camera", Duration::from_secs(90), || {
        let by = segments_by_camera(&objects);
        Ok(cameras.iter().all(|(id, ..)| by.get(*id).is_some_and(|v| v.len() >= 3)).then_some(()))
    })
    .map_err(|e| {
        let states: Vec<String> =
            cameras.iter().map(|(id, ..)| format!("{id}: {:?}", api.camera(id).ok())).collect();
        e.context(format!("camera states: {states:#?}\nnode log:\n{}", node.log_tail()))
    })?;

    let by = segments_by_camera(&objects);
    for (id, url, ..) in &cameras {
        let files = &by[*id];
        for f in files {
            let probe = check_segment(f)?;
            let want_video = if url.ends_with("h265") { "hevc" } else { "h264" };
            assert!(probe.codecs.contains(&want_video.to_string()), "{id}: {:?}", probe.codecs);
            assert!(probe.codecs.contains(&"aac".to_string()), "{id}: audio missing: {:?}", probe.codecs);
        }
        assert_continuous(id, files);
        assert_eq!(api.camera_state(id)?, "recording");
    }
    // Passwords are write-only.
    let (_, listing) = api.get("/v1/cameras")?;
    assert!(!listing.to_string().contains("secret"), "password leaked: {listing}");
    Ok(())
}

#[test]
fn dev_records_every_camera_continuously_and_flushes_on_exit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let port = free_port();
    let out = Command::new(camrec_bin())
        .args(["dev", "--cameras", "4", "--duration", "25s", "--segment-ms", "2000"])
        .arg("--data")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "camrec dev failed: {stderr}");
    assert!(stderr.contains("summary"), "no summary line: {stderr}");
    let objects = data.join("objects");
    let by = segments_by_camera(&objects);
    assert_eq!(by.len(), 4, "cameras recorded: {:?}\n{stderr}", by.keys().collect::<Vec<_>>());
    for (camera, files) in &by {
        assert!(files.len() >= 8, "{camera}: only {} segments in 25 s", files.len());
        for f in files {
            check_segment(f)?;
        }
        assert_continuous(camera, files);
    }
    // Nothing left behind: the exit flushed the buffer.
    let sealed = data.join("buffer/sealed");
    let left = std::fs::read_dir(&sealed).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "segments left in {}", sealed.display());

    // A restart on the same data dir resumes: the same four cameras, recording again.
    let out = Command::new(camrec_bin())
        .args(["dev", "--cameras", "4", "--duration", "8s", "--segment-ms", "2000"])
        .arg("--data")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .output()?;
    assert!(out.status.success(), "restart failed: {}", String::from_utf8_lossy(&out.stderr));
    let after = segments_by_camera(&objects);
    for (camera, files) in &by {
        assert!(after[camera].len() > files.len(), "{camera} did not record after the restart");
    }
    Ok(())
}

#[test]
fn dev_with_no_test_cameras_records_cameras_added_through_the_api() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let port = free_port();
    let cams = FakeCameras::start(1, &[])?;
    let mut dev = Proc::spawn(
        "camrec dev",
        Command::new(camrec_bin())
            .args(["dev", "--cameras", "0", "--duration", "20s", "--segment-ms", "2000"])
            .arg("--data")
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )?;
    let api = Api { base: format!("http://127.0.0.1:{port}"), http: reqwest::blocking::Client::new() };
    wait_for("dev ready", Duration::from_secs(30), || {
        Ok(api.get("/readyz").ok().filter(|(s, _)| *s == 200).map(|_| ()))
    })?;
    let (_, listed) = api.get("/v1/cameras")?;
    assert_eq!(listed["cameras"].as_array().map(Vec::len), Some(0), "--cameras 0 starts with none: {listed}");
    api.add_camera(json!({"id": "api-cam", "url": cams.url(0)}))?;
    let objects = data.join("objects/api-cam");
    wait_for("segments of the API camera", Duration::from_secs(30), || {
        Ok((mp4_files(&objects).len() >= 2).then_some(()))
    })?;
    let exited = wait_for("dev exits after --duration", Duration::from_secs(60), || {
        Ok(dev.child.as_mut().and_then(|c| c.try_wait().ok().flatten()))
    })?;
    assert!(exited.success(), "dev exit status {exited}");
    for f in mp4_files(&objects) {
        check_segment(&f)?;
    }
    Ok(())
}
