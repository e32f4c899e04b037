//! `verdict token new`: make a bearer token for the coordinator. The token goes to stdout
//! (redirect it into the caller's token file); only its hash goes into the coordinator's
//! token file, so that file holds no secret.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use verdict_proto::auth::{new_token, token_hash};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token: print it on stdout and its line for the coordinator's token file.
    New(NewArgs),
}

#[derive(Args)]
pub struct NewArgs {
    /// worker (reports and heartbeats), client (its own jobs) or admin (everything).
    #[arg(long, value_parser = ["worker", "client", "admin"])]
    role: String,
    /// The identity: a client's jobs belong to it (letters, digits and . _ @ -, at most 64).
    #[arg(long)]
    name: String,
    /// Append the token's line to this token file (the coordinator's --auth-tokens); without it the line goes to stderr.
    #[arg(long)]
    append: Option<PathBuf>,
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::New(args) = cmd;
    anyhow::ensure!(
        !args.name.is_empty() && args.name.len() <= 64 && args.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b)),
        "--name {:?}: use letters, digits and . _ @ - (at most 64)",
        args.name
    );
    let token = new_token();
    let line = format!("{} {} {}", args.role, args.name, token_hash(&token));
    match &args.append {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
            writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
            eprintln!("added {} {:?} to {} (send the coordinator SIGHUP to read it)", args.role, args.name, path.display());
        }
        None => eprintln!("add this line to the coordinator's token file:\n{line}"),
    }
    println!("{token}");
    Ok(())
}
