//! What the CLI says, and where. Results go to stdout; notes and errors to stderr, as plain
//! text, or as JSON lines through the log when `--log-format json` is set, so that a JSON
//! log holds nothing but JSON. Writing to a closed stdout (`verdict query … | head`) is
//! not an error: the command ends quietly with status 0 (see `main`).

use std::io::Write;
use std::sync::OnceLock;

static JSON: OnceLock<bool> = OnceLock::new();

/// Set once, at start-up.
pub fn set_json(json: bool) {
    let _ = JSON.set(json);
}

pub fn json() -> bool {
    JSON.get().copied().unwrap_or(false)
}

/// A note for the person at the terminal (or a JSON log line).
pub fn note(msg: impl std::fmt::Display) {
    if json() {
        tracing::info!(target: "verdict", "{msg}");
    } else {
        eprintln!("{msg}");
    }
}

/// A warning: the same, at warning level.
pub fn warn(msg: impl std::fmt::Display) {
    if json() {
        tracing::warn!(target: "verdict", "{msg}");
    } else {
        eprintln!("warning: {msg}");
    }
}

/// One line of results on stdout; a closed stdout comes back as a `BrokenPipe` error.
pub fn out(line: impl std::fmt::Display) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{line}")
}

/// A progress bar on stderr, hidden when stderr is not a terminal or logs are JSON.
pub fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = if json() { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(len) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} items  {per_sec}  ETA {eta}  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Whether an error is only a reader that went away (stdout closed).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    let pipe = Some(std::io::ErrorKind::BrokenPipe);
    // serde_json wraps the io error of the writer it was given, and hides it from `source`.
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().map(std::io::Error::kind) == pipe || c.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind) == pipe
    })
}
