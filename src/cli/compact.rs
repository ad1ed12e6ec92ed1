//! `almanac compact`: rewrites `almanac.redb` without its free space (the
//! store must not be open anywhere else), like SQLite's `VACUUM`.

use std::path::Path;

use almanac::Store;
use clap::Args;
use serde_json::json;

use almanac::storage::StorageError;

use super::error::{CliResult, Failure};
use super::kinds::ReportFormat;
use super::output::Out;
use super::stats::human_bytes;

/// Arguments of `almanac compact`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// How to print the report.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    format: ReportFormat,
}

/// Runs `almanac compact`.
pub fn run(db: &Path, args: &CompactArgs) -> CliResult {
    let report = Store::compact(db).map_err(|e| match e {
        almanac::Error::Storage(StorageError::Locked(_)) => {
            Failure::other(format!("{e}: compaction needs the store to itself"))
        }
        almanac::Error::Storage(StorageError::NoStore(_)) => Failure::other(e.to_string()),
        other => {
            Failure::from(other).context(format!("cannot compact the store at {}", db.display()))
        }
    })?;
    let mut out = Out::stdout();
    match args.format {
        ReportFormat::Json => {
            let doc = json!({
                "store": db.display().to_string(),
                "bytes_before": report.bytes_before,
                "bytes_after": report.bytes_after,
            });
            out.line(&doc.to_string())
        }
        ReportFormat::Table => out.line(&format!(
            "compacted {}: {} -> {} ({} freed)",
            db.join(almanac::storage::DB_FILE).display(),
            human_bytes(report.bytes_before),
            human_bytes(report.bytes_after),
            human_bytes(report.bytes_before.saturating_sub(report.bytes_after)),
        )),
    }
}
