//! Harness for camrec's end-to-end tests: starts real processes (camrec nodes, camrec's test
//! cameras, GStreamer's RTSP server, an S3-compatible server) on loopback, talks to the admin
//! API, and validates recorded segments with ffprobe/ffmpeg. Every process is killed on drop.
//!
//! Missing tools (ffmpeg, GStreamer, moto_server, the camrec binary) fail the test with a
//! message naming what to install — a test that cannot run must not pass.

// End-to-end tests wait on real processes in real time; the determinism bans do not apply.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The `camrec` binary: `$CAMREC_BIN`, else next to this test executable's `deps/` directory
/// (`cargo build --bins` puts it there; the test command builds it first).
pub fn camrec_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CAMREC_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/..");
    let bin = dir.join("camrec");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p camrec` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1 (bound and released; races are unlikely on loopback).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Proc> {
        let child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc { name: name.to_string(), child: Some(child) })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// kill -9 and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait up to `timeout` for exit; returns the exit success.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        let Some(mut c) = self.child.take() else { bail!("{} already stopped", self.name) };
        let status = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s.success());
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!("{} did not exit within {timeout:?} after SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` every 250 ms until it returns `Ok(Some(v))` or `timeout` passes.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last error: {last_err:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn require_tool(tool: &str, install: &str) -> anyhow::Result<()> {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()?
        .success();
    anyhow::ensure!(ok, "{tool} not found: install {install} (scripts/test.sh does)");
    Ok(())
}

// ------------------------------------------------------------------ camrec processes

/// A running `camrec node`.
pub struct Node {
    pub proc: Proc,
    pub api: String,
    pub data: PathBuf,
    pub config: PathBuf,
}

impl Node {
    /// Starts `camrec node --config` with the given TOML (a `[node]` section with data_dir and
    /// listen is added) and waits for /readyz.
    pub fn start(dir: &Path, id: u64, extra_toml: &str) -> anyhow::Result<Node> {
        let port = free_port();
        let data = dir.join(format!("node{id}"));
        let config = dir.join(format!("node{id}.toml"));
        // A lone node bootstraps its own cluster unless the test configures clustering.
        let cluster = if extra_toml.contains("[cluster]") { "" } else { "\n[cluster]\nbootstrap = true\n" };
        let toml = format!(
            "[node]\nid = {id}\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n\n{extra_toml}{cluster}",
            data.display()
        );
        std::fs::write(&config, toml)?;
        Node::start_with_config(config, data, port)
    }

    pub fn start_with_config(config: PathBuf, data: PathBuf, port: u16) -> anyhow::Result<Node> {
        let log = std::fs::File::create(config.with_extension("log"))?;
        let proc = Proc::spawn(
            "camrec node",
            Command::new(camrec_bin())
                .arg("node")
                .arg("--config")
                .arg(&config)
                .env("CAMREC_LOG", "info,camrec=debug")
                .stdout(log.try_clone()?)
                .stderr(log),
        )?;
        let node = Node { proc, api: format!("http://127.0.0.1:{port}"), data, config };
        node.wait_ready()?;
        Ok(node)
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.kill();
        let port: u16 = self.api.rsplit(':').next().and_then(|p| p.parse().ok()).context("port")?;
        let log = std::fs::OpenOptions::new().append(true).open(self.config.with_extension("log"))?;
        self.proc = Proc::spawn(
            "camrec node",
            Command::new(camrec_bin())
                .arg("node")
                .arg("--config")
                .arg(&self.config)
                .env("CAMREC_LOG", "info,camrec=debug")
                .stdout(log.try_clone()?)
                .stderr(log),
        )?;
        let _ = port;
        self.wait_ready()
    }

    pub fn wait_ready(&self) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.api);
        wait_for("node readiness", Duration::from_secs(60), || {
            Ok(reqwest::blocking::get(&url).ok().filter(|r| r.status().is_success()).map(|_| ()))
        })
        .with_context(|| format!("node log: {}", self.log_tail()))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn client(&self) -> Api {
        Api { base: self.api.clone(), http: reqwest::blocking::Client::new() }
    }
}

/// `camrec fake-cameras` in its own process.
pub struct FakeCameras {
    pub proc: Proc,
    pub addr: String,
}

impl FakeCameras {
    pub fn start(count: usize, extra: &[&str]) -> anyhow::Result<FakeCameras> {
        FakeCameras::start_on(free_port(), count, extra)
    }

    pub fn start_on(port: u16, count: usize, extra: &[&str]) -> anyhow::Result<FakeCameras> {
        let addr = format!("127.0.0.1:{port}");
        let mut proc = Proc::spawn(
            "camrec fake-cameras",
            Command::new(camrec_bin())
                .args(["fake-cameras", "--count", &count.to_string(), "--listen", &addr])
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        )?;
        // It prints one URL per camera once it listens.
        let stdout = proc.child.as_mut().and_then(|c| c.stdout.take()).context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().context("fake-cameras exited before listening")??;
        anyhow::ensure!(first.starts_with("rtsp://"), "unexpected first line {first:?}");
        std::thread::spawn(move || for _ in lines {});
        Ok(FakeCameras { proc, addr })
    }

    pub fn url(&self, i: usize) -> String {
        format!("rtsp://{}/cam/{i}", self.addr)
    }
}

// ------------------------------------------------------------------ third-party servers

/// GStreamer's RTSP server (tests/support/gst_rtsp_server.py) serving the committed clips.
pub struct GstServer {
    pub proc: Proc,
    pub base: String,
}

impl GstServer {
    /// `auth`: none | digest | basic (user admin, password secret).
    pub fn start(auth: &str) -> anyhow::Result<GstServer> {
        let python = "/usr/bin/python3";
        anyhow::ensure!(
            Path::new(python).exists(),
            "{python} not found: install python3-gi (scripts/test.sh does)"
        );
        let root = repo_root();
        let mut proc = Proc::spawn(
            "gst-rtsp-server",
            Command::new(python)
                .arg(root.join("tests/support/gst_rtsp_server.py"))
                .args(["--port", "0", "--auth", auth])
                .arg("--h264")
                .arg(root.join("node/clips/h264_aac.mp4"))
                .arg("--h265")
                .arg(root.join("node/clips/h265_aac.mp4"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )?;
        let stdout = proc.child.as_mut().and_then(|c| c.stdout.take()).context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = match lines.next() {
            Some(l) => l?,
            None => {
                let mut err = String::new();
                if let Some(mut e) = proc.child.as_mut().and_then(|c| c.stderr.take()) {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                bail!("GStreamer RTSP server failed to start (install gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-good/bad): {err}");
            }
        };
        let base = line
            .strip_prefix("ready ")
            .context("unexpected GStreamer server output")?
            .trim_end_matches('/')
            .to_string();
        std::thread::spawn(move || for _ in lines {});
        Ok(GstServer { proc, base })
    }
}

/// An S3-compatible server (moto_server) on a free port, with a bucket.
pub struct S3Server {
    pub proc: Proc,
    pub endpoint: String,
    pub port: u16,
}

pub const S3_BUCKET: &str = "camrec-test";
pub const S3_KEY_ID: &str = "testing";
pub const S3_SECRET: &str = "testing-secret";

impl S3Server {
    pub fn start() -> anyhow::Result<S3Server> {
        S3Server::start_on(free_port())
    }

    pub fn start_on(port: u16) -> anyhow::Result<S3Server> {
        require_tool("moto_server", "`pip install 'moto[server]'`")?;
        let proc = Proc::spawn(
            "moto_server",
            Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_for("moto_server", Duration::from_secs(30), || {
            Ok(reqwest::blocking::get(format!("{endpoint}/")).ok().map(|_| ()))
        })?;
        Ok(S3Server { proc, endpoint, port })
    }

    pub fn sdk(&self) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new(S3_KEY_ID, S3_SECRET, None, None, "test");
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(creds)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// The `[storage]` config section for a node using this server.
    pub fn node_toml(&self, prefix: &str) -> String {
        format!(
            "[storage]\nbackend = \"s3\"\nprefix = \"{prefix}\"\nupload_retry_base_ms = 200\nupload_retry_cap_ms = 2000\n\n[storage.s3]\nbucket = \"{S3_BUCKET}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nforce_path_style = true\naccess_key_id = \"{S3_KEY_ID}\"\nsecret_access_key = \"{S3_SECRET}\"\n",
            self.endpoint
        )
    }
}

/// A current-thread tokio runtime for SDK calls from blocking tests.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

// ------------------------------------------------------------------ admin API

pub struct Api {
    pub base: String,
    pub http: reqwest::blocking::Client,
}

impl Api {
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let r = self.http.get(format!("{}{path}", self.base)).send()?;
        let status = r.status().as_u16();
        let text = r.text()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))))
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let r = self.http.request(method, format!("{}{path}", self.base)).json(body).send()?;
        let status = r.status().as_u16();
        let text = r.text()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))))
    }

    pub fn add_camera(&self, body: serde_json::Value) -> anyhow::Result<()> {
        let (status, resp) = self.send("POST", "/v1/cameras", &body)?;
        anyhow::ensure!(status == 201, "POST /v1/cameras → {status}: {resp}");
        Ok(())
    }

    /// The camera's live `state` string.
    pub fn camera_state(&self, id: &str) -> anyhow::Result<String> {
        let (status, v) = self.get(&format!("/v1/cameras/{id}"))?;
        anyhow::ensure!(status == 200, "GET camera {id} → {status}: {v}");
        Ok(v["state"]["state"].as_str().unwrap_or("?").to_string())
    }

    pub fn camera(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        let (status, v) = self.get(&format!("/v1/cameras/{id}"))?;
        anyhow::ensure!(status == 200, "GET camera {id} → {status}: {v}");
        Ok(v)
    }
}

// ------------------------------------------------------------------ segment validation

/// Every `.mp4` under `dir`, sorted.
pub fn mp4_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "mp4") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// What ffprobe says about a segment.
#[derive(Debug, Clone)]
pub struct Probe {
    pub duration_s: f64,
    pub codecs: Vec<String>,
    pub frame_duration_s: f64,
}

/// The segment check from the issue: `ffprobe -v error` and `ffmpeg -v error -i SEG -f null -`
/// print nothing, and the duration matches `duration_ms` (from the key) within one frame.
pub fn check_segment(path: &Path) -> anyhow::Result<Probe> {
    require_tool("ffprobe", "Debian's ffmpeg")?;
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=codec_name,avg_frame_rate,codec_type",
            "-of",
            "json",
        ])
        .arg(path)
        .output()?;
    anyhow::ensure!(
        out.status.success() && out.stderr.is_empty(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let duration_s: f64 = v["format"]["duration"].as_str().context("no duration")?.parse()?;
    let mut codecs = Vec::new();
    let mut frame_duration_s = 0.04;
    for s in v["streams"].as_array().context("streams")? {
        codecs.push(s["codec_name"].as_str().unwrap_or("?").to_string());
        if s["codec_type"] == "video" {
            if let Some((n, d)) = s["avg_frame_rate"].as_str().and_then(|r| r.split_once('/')) {
                let (n, d): (f64, f64) = (n.parse()?, d.parse()?);
                if n > 0.0 && d > 0.0 {
                    frame_duration_s = d / n;
                }
            }
        }
    }
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()?;
    anyhow::ensure!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "ffmpeg decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(meta_ms) = key_duration_ms(path) {
        let diff = (duration_s - meta_ms as f64 / 1000.0).abs();
        anyhow::ensure!(
            diff <= frame_duration_s + 0.001,
            "{}: ffprobe duration {duration_s:.3}s vs metadata {meta_ms} ms (more than one frame apart)",
            path.display()
        );
    }
    Ok(Probe { duration_s, codecs, frame_duration_s })
}

/// `duration_ms` from a segment key/file name `{start}-{duration}-{node}-{epoch}.mp4`.
pub fn key_duration_ms(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    stem.split('-').nth(1)?.parse().ok()
}

/// `(start_ms, duration_ms)` from a segment key or path.
pub fn key_times(key: &str) -> Option<(i64, i64)> {
    let file = key.rsplit('/').next()?;
    let mut it = file.strip_suffix(".mp4")?.split('-');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}
