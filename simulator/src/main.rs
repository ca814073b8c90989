//! `camrec-sim`: run a scenario from a seed, or check that a run is deterministic across
//! processes.
//!
//! ```text
//! camrec-sim run --seed 1 --scenario crash-10pct --cameras 2000 --nodes 10 --duration 60s --report r.json
//! camrec-sim check-determinism --seed 1 --scenario crash-10pct --cameras 2000 --nodes 10 --duration 60s
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use camrec_sim::scenario::{run, RunOptions, Scenario};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "camrec-sim", about = "camrec's deterministic cluster simulator")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one scenario; prints the report and `TRACE_SHA256=…`.
    Run {
        #[command(flatten)]
        run: RunArgs,
        /// Write the JSON report here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Write the trace lines here.
        #[arg(long)]
        trace_out: Option<PathBuf>,
    },
    /// Run the same scenario twice in child processes and compare the trace hashes.
    CheckDeterminism {
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Args, Clone)]
struct RunArgs {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, value_enum, default_value = "crash-10pct")]
    scenario: Scenario,
    #[arg(long, default_value_t = 2_000)]
    cameras: u32,
    #[arg(long, default_value_t = 10)]
    nodes: u64,
    /// Virtual time to run, e.g. `60s`, `10m`, `1h`.
    #[arg(long, default_value = "60s")]
    duration: humantime::Duration,
}

impl RunArgs {
    /// The same arguments as a command line (for child processes and replay hints).
    fn to_args(&self) -> Vec<String> {
        vec![
            "--seed".into(),
            self.seed.to_string(),
            "--scenario".into(),
            clap::ValueEnum::to_possible_value(&self.scenario).expect("named").get_name().to_string(),
            "--cameras".into(),
            self.cameras.to_string(),
            "--nodes".into(),
            self.nodes.to_string(),
            "--duration".into(),
            self.duration.to_string(),
        ]
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("camrec-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Cmd::Run { run: args, report, trace_out } => {
            let opts = RunOptions {
                seed: args.seed,
                scenario: args.scenario,
                cameras: args.cameras,
                nodes: args.nodes,
                duration: args.duration.into(),
                keep_trace: trace_out.is_some(),
            };
            // The one wall-clock read: how long the run took, for the human summary only
            // (never in the report or the trace, which must be deterministic).
            #[allow(clippy::disallowed_methods)]
            let wall = std::time::Instant::now();
            let (r, trace) = run(&opts)?;
            let wall = wall.elapsed();
            let json = serde_json::to_string_pretty(&r)?;
            println!("{json}");
            #[allow(clippy::cast_precision_loss)] // a ratio for humans
            let speedup = r.virtual_ms as f64 / wall.as_millis().max(1) as f64;
            println!("wall {:.2}s, {speedup:.0}x real time", wall.as_secs_f64());
            if let Some(path) = report {
                std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
            }
            if let Some(path) = trace_out {
                let mut text = trace.lines().join("\n");
                text.push('\n');
                std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            }
            println!("TRACE_SHA256={}", r.trace_sha256);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CheckDeterminism { run: args } => {
            let exe = std::env::current_exe().context("locating camrec-sim")?;
            let mut child_args = vec!["run".to_string()];
            child_args.extend(args.to_args());
            let replay = format!("{} {}", exe.display(), child_args.join(" "));
            let mut hashes = Vec::new();
            for attempt in 1..=2 {
                let out = std::process::Command::new(&exe)
                    .args(&child_args)
                    .output()
                    .with_context(|| format!("running {replay}"))?;
                let stdout = String::from_utf8_lossy(&out.stdout);
                anyhow::ensure!(
                    out.status.success(),
                    "run {attempt} failed ({}):\n{}\nreplay: {replay}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                let hash = stdout
                    .lines()
                    .find_map(|l| l.strip_prefix("TRACE_SHA256="))
                    .context("child printed no TRACE_SHA256")?
                    .to_string();
                println!("run {attempt}: TRACE_SHA256={hash}");
                hashes.push(hash);
            }
            if hashes[0] == hashes[1] {
                println!("deterministic: both runs gave {}", hashes[0]);
                Ok(ExitCode::SUCCESS)
            } else {
                println!("NOT deterministic: {} != {}", hashes[0], hashes[1]);
                println!("replay: {replay} --trace-out trace.txt");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
