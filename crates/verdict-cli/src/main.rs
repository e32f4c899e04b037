//! `verdict`: the one binary.
//!
//! - `label`: judge a dataset in this process (no services needed).
//! - `coordinator`, `worker`: the distributed mode's two processes.
//! - `submit`, `status`, `watch`, `cancel`, `query`, `export`, `revote`, `extend`, `report`: the distributed mode's client (`report` reads label outputs too).
//! - `model`: make random-weight model folders, probe a model.

mod bench_attention;
mod bench_cmd;
mod client;
mod dead_letters_cmd;
mod file_ends;
mod input;
mod jobs_cmd;
mod label;
mod model_cmd;
mod output;
mod query;
mod repeats;
mod report_cmd;
mod revote;
mod say;
mod schemas;
mod serve;
mod sink;
mod spec_args;
mod submit;
mod tabular;
mod token_cmd;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "verdict", version, about = "Preference labeling with generative reward models (DeepSeek-GRM style)")]
struct Cli {
    /// Log format on stderr: text or json.
    #[arg(long, global = true, env = "VERDICT_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Judge a JSONL or Parquet dataset on this machine and write one verdict per line.
    Label(label::LabelArgs),
    /// Run the coordinator: the gRPC server in front of the queue (Redis) and the store (Postgres).
    Coordinator(serve::CoordinatorArgs),
    /// Apply the store's schema migrations (as the schema's owner) and exit.
    Migrate(serve::MigrateArgs),
    /// Run a worker: lease items, judge them with a local model, report to the coordinator.
    Worker(serve::WorkerArgs),
    /// Create a job from a dataset and queue its items.
    Submit(submit::SubmitArgs),
    /// Show a job, or the newest jobs and the live workers.
    Status(jobs_cmd::StatusArgs),
    /// Follow a job's progress until it is done.
    Watch(jobs_cmd::WatchArgs),
    /// Cancel a job.
    Cancel(jobs_cmd::CancelArgs),
    /// Read stored verdicts, with filters.
    Query(query::QueryArgs),
    /// Export a job as training data (DPO pairs, rewards or whole verdicts), JSONL or Parquet.
    Export(query::ExportArgs),
    /// A job's verdicts at a smaller k, voted again over the stored samples (no GPU), against the stored ones.
    Revote(revote::RevoteArgs),
    /// Raise a finished job's k: queue only each item's missing samples, then vote again over all.
    Extend(jobs_cmd::ExtendArgs),
    /// A judge's telemetry over a job or a label output: sample outcomes, ties, agreement, position bias, scores, tokens; printed and written as HTML.
    Report(report_cmd::ReportArgs),
    /// Make or inspect model folders.
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
    /// Items that died (delivered too often without a result): list, show, requeue.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(dead_letters_cmd::DeadLettersCommand),
    /// Make bearer tokens for the coordinator's --auth-tokens file.
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
}

fn init_logging(format: &str, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VERDICT_LOG").unwrap_or_else(|_| default_level.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        // Colour codes only for a person at a terminal, never into a file or a pipe.
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn main() {
    let cli = Cli::parse();
    let services = matches!(cli.command, Command::Coordinator(_) | Command::Worker(_));
    say::set_json(cli.log_format == "json");
    // Client commands log their notes at info level in JSON mode, so that level is on.
    init_logging(&cli.log_format, if services || say::json() { "info" } else { "warn" });
    let runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build();
    let result = match cli.command {
        Command::Label(args) => label::run(args),
        Command::Model(cmd) => model_cmd::run(cmd),
        Command::Token(cmd) => token_cmd::run(cmd),
        Command::Coordinator(args) => runtime().map_err(Into::into).and_then(|r| r.block_on(serve::coordinator(args))),
        Command::Migrate(args) => runtime().map_err(Into::into).and_then(|r| r.block_on(serve::migrate(args))),
        Command::Worker(args) => runtime().map_err(Into::into).and_then(|r| r.block_on(serve::worker(args))),
        Command::Submit(args) => runtime().map_err(Into::into).and_then(|r| r.block_on(submit::run(args))),
        Command::Status(args) => runtime().map_err(Into::into).and_then(|r| r.block_on(jobs_cmd::status_cmd(args))),
        Command::Watch(args) => runtime().map_err(Into::into).and_then(|r| r.block_on(jobs_cmd::watch_cmd(args))),
        Command::Cancel(args) => runtime().map_err(Into::into).and_then(|r| r.block_on(jobs_cmd::cancel_cmd(args))),
        Command::Query(args) => runtime().map_err(Into::into).and_then(|r| r.block_on(query::query_cmd(args))),
        Command::Export(args) => runtime().map_err(Into::into).and_then(|r| r.block_on(query::export_cmd(args))),
        Command::Extend(args) => runtime().map_err(Into::into).and_then(|r| r.block_on(jobs_cmd::extend_cmd(args))),
        Command::Report(args) => runtime().map_err(Into::into).and_then(|r| r.block_on(report_cmd::run(args))),
        Command::DeadLetters(cmd) => runtime().map_err(Into::into).and_then(|r| r.block_on(dead_letters_cmd::run(cmd))),
        Command::Revote(args) => runtime().map_err(Into::into).and_then(|r| r.block_on(revote::run(args))),
    };
    match result {
        Ok(()) => {}
        // The reader of our stdout went away (`| head`): what it wanted, it got.
        Err(e) if say::is_broken_pipe(&e) => std::process::exit(0),
        Err(e) => {
            if say::json() {
                tracing::error!(target: "verdict", "{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
            std::process::exit(1);
        }
    }
}