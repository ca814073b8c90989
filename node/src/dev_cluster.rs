//! `camrec dev --nodes K`: a local cluster of K separate `camrec node` processes (so anyone can
//! try failover with `kill -9`), the built-in test cameras in this process, and one progress
//! line for the whole cluster. Node i listens on `--listen`'s port + i − 1; node 1 bootstraps,
//! the others join through it. All nodes share `DATA/objects` (create-only writes).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::dev::{wait_for_stop, DevArgs};

/// How long a stopping node may take to seal and flush before it is killed.
const CHILD_STOP_TIMEOUT: Duration = Duration::from_secs(60);

struct ChildNode {
    id: u64,
    api: String,
    child: Child,
}

fn node_toml(args: &DevArgs, id: u64, listen: SocketAddr, seed: SocketAddr) -> String {
    let data = args.data.join(format!("node{id}"));
    let objects = args.data.join("objects");
    let mut s = format!(
        "# Written by `camrec dev --nodes {n}`; rewritten at every start.\n[node]\nid = {id}\ndata_dir = {data:?}\nlisten = \"{listen}\"\naz = \"dev-az-{az}\"\n\n[storage]\nbackend = \"local\"\nlocal_dir = {objects:?}\n\n[cluster]\nname = \"camrec-dev\"\nbootstrap = {bootstrap}\nseeds = [\"{seed}\"]\n",
        n = args.nodes,
        data = data.display().to_string(),
        objects = objects.display().to_string(),
        az = (id - 1) % 3,
        bootstrap = id == 1,
    );
    if let Some(ms) = args.segment_ms {
        s.push_str(&format!("\n[recorder]\nsegment_target_ms = {ms}\n"));
    }
    s
}

async fn spawn_node(exe: &Path, config: &Path, log: &Path) -> anyhow::Result<Child> {
    let log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    Command::new(exe)
        .arg("node")
        .arg("--config")
        .arg(config)
        .env("CAMREC_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))
}

async fn get_json(http: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    let r = http.get(url).timeout(Duration::from_millis(800)).send().await.ok()?;
    r.json().await.ok()
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the camrec binary")?;
    std::fs::create_dir_all(&args.data)?;
    let http = reqwest::Client::new();

    let fleet = crate::dev::start_test_cameras(&args).await?;

    let seed = args.listen;
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        let id = i as u64 + 1;
        let port = args.listen.port().checked_add(i as u16).context("--listen port too high for --nodes")?;
        let listen = SocketAddr::new(args.listen.ip(), port);
        let config: PathBuf = args.data.join(format!("node{id}.toml"));
        std::fs::write(&config, node_toml(&args, id, listen, seed))?;
        let child = spawn_node(&exe, &config, &args.data.join(format!("node{id}.log"))).await?;
        nodes.push(ChildNode { id, api: format!("http://{listen}"), child });
        if id == 1 {
            wait_ready(&http, &nodes[0].api).await.context("node 1 did not become ready (see node1.log)")?;
        }
    }
    for n in &nodes {
        wait_ready(&http, &n.api).await.with_context(|| format!("node {} did not become ready", n.id))?;
    }

    if let Some(fleet) = &fleet {
        for i in 0..args.cameras {
            let body = json!({"id": format!("test-{i}"), "url": fleet.url(i), "bitrate_kbps": 500,
                              "labels": {"camrec-dev": "test-camera"}});
            let r = http.post(format!("{}/v1/cameras", nodes[0].api)).json(&body).send().await?;
            if r.status() == reqwest::StatusCode::CONFLICT {
                // Known from an earlier run: point it at this run's test camera.
                let patch = json!({"url": fleet.url(i)});
                http.patch(format!("{}/v1/cameras/test-{i}", nodes[0].api))
                    .json(&patch)
                    .send()
                    .await?
                    .error_for_status()?;
            } else {
                r.error_for_status().context("registering a test camera")?;
            }
        }
    }
    eprintln!(
        "camrec dev: {} node processes, {} test camera(s), data {}",
        args.nodes,
        args.cameras,
        args.data.display()
    );
    for n in &nodes {
        eprintln!(
            "  node {}: admin API {}  (pid {}, log {}/node{}.log)",
            n.id,
            n.api,
            n.child.id().unwrap_or(0),
            args.data.display(),
            n.id
        );
    }
    eprintln!("  try: kill -9 one node's pid and watch its cameras move; curl {}/v1/nodes", nodes[0].api);

    let started = tokio::time::Instant::now();
    let stop = wait_for_stop(args.duration);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut last_line = String::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = tick.tick() => {
                let mut parts = Vec::new();
                let (mut rec, mut sealed, mut uploaded) = (0u64, 0u64, 0u64);
                for n in &nodes {
                    match get_json(&http, &format!("{}/v1/internal/summary", n.api)).await {
                        Some(v) => {
                            rec += v["recording"].as_u64().unwrap_or(0);
                            sealed += v["segments_sealed"].as_u64().unwrap_or(0);
                            uploaded += v["segments_uploaded"].as_u64().unwrap_or(0);
                            parts.push(format!("n{}:{}", n.id, v["recording"].as_u64().unwrap_or(0)));
                        }
                        None => parts.push(format!("n{}:down", n.id)),
                    }
                }
                last_line = format!("recording {rec} ({}) | segments sealed {sealed} uploaded {uploaded}", parts.join(" "));
                eprintln!("[{:>5}s] {last_line}", started.elapsed().as_secs());
            }
        }
    }
    eprintln!("camrec dev: stopping the nodes (seal + flush, no drain)");
    for n in &mut nodes {
        if let Some(pid) = n.child.id() {
            let _ = std::process::Command::new("kill").arg("-INT").arg(pid.to_string()).status();
        }
    }
    for n in &mut nodes {
        match tokio::time::timeout(CHILD_STOP_TIMEOUT, n.child.wait()).await {
            Ok(Ok(status)) => eprintln!("  node {} exited: {status}", n.id),
            _ => {
                eprintln!("  node {} did not stop in time; killing it", n.id);
                let _ = n.child.kill().await;
            }
        }
    }
    if let Some(fleet) = fleet {
        fleet.shutdown().await;
    }
    eprintln!(
        "camrec dev: summary after {:.0}s (last reading, counted by live nodes): {last_line} — segments are under {}/objects",
        started.elapsed().as_secs_f64(),
        args.data.display()
    );
    Ok(())
}

async fn wait_ready(http: &reqwest::Client, api: &str) -> anyhow::Result<()> {
    for _ in 0..240 {
        if let Ok(r) = http.get(format!("{api}/readyz")).timeout(Duration::from_millis(500)).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("{api}/readyz not ready after 60 s")
}
