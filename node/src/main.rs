//! camrec
// Temporary dispatch for `camrec fake-cameras` until the lead integrates the full CLI.
mod fake;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// RTSP test cameras at rtsp://ADDR/cam/{i}.
    FakeCameras(fake::FakeCamerasArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::FakeCameras(args) => rt.block_on(fake::run(args)),
    }
}
