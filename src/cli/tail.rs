//! `almanac tail [--since ID] [--follow]`: committed records as JSONL in id
//! order, read from the `log/` segments only (the store is never opened, so
//! this works while another process holds it for writing).

use std::path::Path;
use std::time::Duration;

use almanac::storage::log::{LogReader, LOG_DIR};
use clap::Args;

use super::error::{CliResult, Context, Failure};
use super::output::Out;

/// How often `--follow` looks for new lines once it has caught up.
const FOLLOW_POLL: Duration = Duration::from_millis(150);

/// Arguments of `almanac tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Start at this record id (inclusive); default: the first record.
    #[arg(long, value_name = "ID", default_value_t = 1)]
    since: u64,
    /// Keep waiting for new records (until interrupted or the reader goes away).
    #[arg(long, short = 'f')]
    follow: bool,
}

/// Runs `almanac tail`.
pub fn run(db: &Path, args: &TailArgs) -> CliResult {
    // tail never creates a store: a mistyped --db must not look like an empty log.
    if !db.join(LOG_DIR).is_dir() {
        return Err(Failure::other(format!(
            "no store at {}: its log directory is missing",
            db.display()
        )));
    }
    let reader = LogReader::new(db);
    let mut lines = reader
        .lines_since(args.since)
        .with_context(|| format!("cannot read the log of {}", db.display()))?;
    let mut out = Out::stdout();
    loop {
        for line in lines.by_ref() {
            let (_, text) = line.context("cannot read the log")?;
            out.line(&text)?;
        }
        out.flush()?;
        if !args.follow {
            return Ok(());
        }
        // Caught up: the open segment is re-read from where it stopped on the
        // next pass; refresh picks up segments started since.
        std::thread::sleep(FOLLOW_POLL);
        lines.refresh(db).context("cannot read the log")?;
    }
}
