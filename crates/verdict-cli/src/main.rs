//! `verdict`: the one binary. Subcommands: `label` (judge a dataset in one process) and
//! `model` (make random-weight model folders). The distributed subcommands (`coordinator`,
//! `worker`, `submit`, ...) come with the queue and the store.

mod input;
mod label;
mod model_cmd;
mod output;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "verdict", version, about = "Preference labeling with generative reward models (DeepSeek-GRM style)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Judge a JSONL dataset on this machine and write one verdict per line.
    Label(label::LabelArgs),
    /// Make or inspect model folders.
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VERDICT_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Label(args) => label::run(args),
        Command::Model(cmd) => model_cmd::run(cmd),
    }
}
