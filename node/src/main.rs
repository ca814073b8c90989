//! `camrec`: the recording node binary. Subcommands: `dev` (the embedded default), `node`
//! (a production node from a config file), `fake-cameras` (RTSP test cameras), `config check`.

mod api;
mod camera;
mod clock;
mod config;
mod control;
mod dev;
mod dev_cluster;
mod fake;
mod imds;
mod ingest;
mod leader;
mod node_ctx;
mod runtime;
mod status;
mod timer;
mod uploader;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "camrec", version, about = "Distributed recording of IP cameras into object storage")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The embedded default: test cameras + one node + local object store + admin API.
    Dev(dev::DevArgs),
    /// Run a node from a config file (every key overridable by CAMREC__SECTION__KEY).
    Node {
        /// The node's TOML config (see config/); CAMREC__SECTION__KEY variables override it.
        #[arg(long)]
        config: PathBuf,
        /// Initialize a new single-voter cluster if the data dir is empty.
        #[arg(long)]
        bootstrap: bool,
    },
    /// RTSP test cameras at rtsp://ADDR/cam/{i}.
    FakeCameras(fake::FakeCamerasArgs),
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Validate a config file; exits non-zero naming the bad key.
    Check { file: PathBuf },
}

fn init_tracing(format: &str, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAMREC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Config { command: ConfigCmd::Check { file } } => match config::NodeConfig::load(Some(&file)) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(())
            }
            Err(e) => Err(e),
        },
        Cmd::Dev(args) => {
            init_tracing("text", "warn,camrec=warn");
            runtime().and_then(|rt| rt.block_on(dev::run(args)))
        }
        Cmd::FakeCameras(args) => {
            init_tracing("text", "info");
            runtime().and_then(|rt| rt.block_on(fake::run(args)))
        }
        Cmd::Node { config, bootstrap } => config::NodeConfig::load(Some(&config)).and_then(|mut cfg| {
            cfg.cluster.bootstrap |= bootstrap;
            init_tracing(&cfg.log.format, &cfg.log.filter);
            runtime().and_then(|rt| rt.block_on(run_node(cfg)))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("camrec: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("camrec").build()?)
}

/// Grace for uploads after SIGTERM before exiting with data still buffered (it resumes on
/// restart).
const NODE_FLUSH_DEADLINE: Duration = Duration::from_secs(30);

async fn run_node(mut cfg: config::NodeConfig) -> anyhow::Result<()> {
    if cfg.node.identity == config::IdentitySource::Ec2 {
        let id = imds::fetch_identity(&cfg.node.imds_endpoint).await?;
        cfg.node.id = imds::node_id_for(&id.instance_id);
        cfg.node.az.get_or_insert(id.az);
        tracing::info!(instance = %id.instance_id, node = cfg.node.id, az = ?cfg.node.az, "identity from EC2 metadata");
    }
    let node = runtime::RunningNode::start(&cfg).await?;
    let reason = dev::wait_for_stop(None).await;
    if reason == dev::StopReason::Terminate {
        tracing::info!("SIGTERM: draining this node's cameras to the others (make-before-break)");
        node.drain_self(Duration::from_millis(cfg.cluster.drain_timeout_ms)).await;
    }
    tracing::info!("stopping: sealing segments and flushing uploads");
    let report = node.shutdown(NODE_FLUSH_DEADLINE).await;
    if report.pending_segments > 0 {
        tracing::warn!(
            pending_segments = report.pending_segments,
            pending_bytes = report.pending_bytes,
            "stopped with segments not yet uploaded; they stay buffered and upload on the next start"
        );
    } else {
        tracing::info!("stopped; every sealed segment is uploaded");
    }
    Ok(())
}
