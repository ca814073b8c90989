//! Uploads to a real S3-compatible server process (moto_server), read back with the AWS SDK;
//! and kill -9 of a node while segments are pending upload.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use camrec_e2e::*;
use serde_json::json;

const RECORDER: &str = "[recorder]\nsegment_target_ms = 2000\n";

fn list_keys(s3: &S3Server, prefix: &str) -> anyhow::Result<Vec<(String, i64)>> {
    let client = s3.sdk();
    rt().block_on(async {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let r = client
                .list_objects_v2()
                .bucket(S3_BUCKET)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await?;
            for o in r.contents() {
                out.push((o.key().unwrap_or_default().to_string(), o.size().unwrap_or(0)));
            }
            match r.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        Ok(out)
    })
}

fn get_object(s3: &S3Server, key: &str) -> anyhow::Result<Vec<u8>> {
    let client = s3.sdk();
    rt().block_on(async {
        let r = client.get_object().bucket(S3_BUCKET).key(key).send().await?;
        Ok(r.body.collect().await?.into_bytes().to_vec())
    })
}

fn create_bucket(s3: &S3Server) -> anyhow::Result<()> {
    let client = s3.sdk();
    rt().block_on(async {
        client.create_bucket().bucket(S3_BUCKET).send().await?;
        Ok(())
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut child = out.expect("sha256sum");
    {
        use std::io::Write as _;
        child.stdin.take().expect("stdin").write_all(bytes).expect("write");
    }
    let o = child.wait_with_output().expect("sha256sum");
    let mut s = String::new();
    let _ = write!(s, "{}", String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or(""));
    s
}

use std::process::Command;

#[test]
fn uploads_to_s3_and_lists_the_same_segments() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let s3 = S3Server::start()?;
    create_bucket(&s3)?;
    let cams = FakeCameras::start(2, &[])?;
    let node = Node::start(dir.path(), 1, &format!("{RECORDER}\n{}", s3.node_toml("rec")))?;
    let api = node.client();
    let from = time_now_rfc3339(-5);
    for i in 0..2 {
        api.add_camera(json!({"id": format!("cam{i}"), "url": cams.url(i)}))?;
    }
    wait_for("3 objects per camera in S3", Duration::from_secs(60), || {
        let keys = list_keys(&s3, "rec/")?;
        Ok((0..2)
            .all(|i| keys.iter().filter(|(k, _)| k.starts_with(&format!("rec/cam{i}/"))).count() >= 3)
            .then_some(()))
    })
    .map_err(|e| e.context(node.log_tail()))?;
    let to = time_now_rfc3339(60);

    let keys = list_keys(&s3, "rec/")?;
    let scratch = dir.path().join("downloaded");
    std::fs::create_dir_all(&scratch)?;
    for (key, size) in &keys {
        let bytes = get_object(&s3, key)?;
        assert_eq!(bytes.len() as i64, *size);
        let file = scratch.join(key.rsplit('/').next().expect("file name"));
        std::fs::write(&file, &bytes)?;
        check_segment(&file)?;
    }
    // The recordings API lists what the bucket holds (keys relative to the prefix).
    for i in 0..2 {
        let (status, v) = api.get(&format!("/v1/cameras/cam{i}/recordings?from={from}&to={to}"))?;
        assert_eq!(status, 200, "{v}");
        let listed: BTreeSet<String> = v["segments"]
            .as_array()
            .expect("segments")
            .iter()
            .map(|s| s["key"].as_str().unwrap_or("").to_string())
            .collect();
        let in_bucket: BTreeSet<String> = keys
            .iter()
            .filter_map(|(k, _)| k.strip_prefix("rec/"))
            .filter(|k| k.starts_with(&format!("cam{i}/")))
            .map(str::to_string)
            .collect();
        // Uploads continue while we compare: everything listed must be in the bucket listing
        // taken before, except segments uploaded in between.
        assert!(in_bucket.is_subset(&listed), "bucket {in_bucket:?}\napi {listed:?}");
        assert_eq!(v["gaps"].as_array().map(Vec::len), Some(2), "only leading/trailing gaps expected: {v}");
    }
    Ok(())
}

fn time_now_rfc3339(offset_s: i64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("{offset_s} seconds"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn kill_9_with_uploads_pending_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let s3_port = free_port(); // nothing listens yet: uploads fail and stay buffered
    let endpoint_toml = {
        let fake = S3Server {
            proc: Proc { name: "none".into(), child: None },
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            port: s3_port,
        };
        fake.node_toml("")
    };
    let cams = FakeCameras::start(2, &[])?;
    let mut node = Node::start(dir.path(), 1, &format!("{RECORDER}\n{endpoint_toml}"))?;
    let api = node.client();
    for i in 0..2 {
        api.add_camera(json!({"id": format!("cam{i}"), "url": cams.url(i)}))?;
    }
    let sealed_dir = node.data.join("buffer/sealed");
    wait_for("6 sealed segments pending upload", Duration::from_secs(60), || {
        Ok((std::fs::read_dir(&sealed_dir).map(|d| d.count()).unwrap_or(0) >= 6).then_some(()))
    })?;
    node.proc.kill(); // kill -9 mid-recording, with uploads pending
    let mut pending: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for e in std::fs::read_dir(&sealed_dir)? {
        let p = e?.path();
        pending.insert(p.display().to_string(), std::fs::read(&p)?);
    }
    assert!(pending.len() >= 6);

    let s3 = S3Server::start_on(s3_port)?;
    create_bucket(&s3)?;
    node.restart()?;
    wait_for("the pre-crash backlog uploaded", Duration::from_secs(90), || {
        let left = pending.keys().filter(|p| std::path::Path::new(p).exists()).count();
        Ok((left == 0).then_some(()))
    })
    .map_err(|e| e.context(node.log_tail()))?;

    let keys = list_keys(&s3, "")?;
    let mut by_hash: BTreeMap<String, usize> = BTreeMap::new();
    let scratch = dir.path().join("dl");
    std::fs::create_dir_all(&scratch)?;
    for (key, _) in &keys {
        let bytes = get_object(&s3, key)?;
        let file = scratch.join(key.rsplit('/').next().expect("name"));
        std::fs::write(&file, &bytes)?;
        check_segment(&file)?;
        // Two cameras streaming the same clip in lockstep can produce byte-identical segments,
        // so identity is (camera, content).
        let camera = key.split('/').next().unwrap_or("").to_string();
        *by_hash.entry(format!("{camera}/{}", sha256_hex(&bytes))).or_default() += 1;
    }
    for (path, bytes) in &pending {
        // Buffer files are named `{id}-{camera}.mp4`.
        let name = std::path::Path::new(path).file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let camera = name.split_once('-').map(|(_, c)| c).unwrap_or("");
        let h = format!("{camera}/{}", sha256_hex(bytes));
        assert_eq!(by_hash.get(&h).copied(), Some(1), "{path} must be in the store exactly once");
    }
    assert!(by_hash.values().all(|n| *n == 1), "duplicate objects: {by_hash:?}");
    Ok(())
}
