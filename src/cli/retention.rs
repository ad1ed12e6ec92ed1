//! `almanac retention [--dry-run]`: applies each kind's retention now,
//! dropping whole expired partitions, and reports what went (or would go).

use std::path::Path;

use clap::Args;
use comfy_table::{presets, Table};
use serde_json::json;

use super::error::{CliResult, Context};
use super::kinds::ReportFormat;
use super::output::Out;

/// Arguments of `almanac retention`.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Report what would be dropped, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// How to print the report.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    format: ReportFormat,
}

/// Runs `almanac retention`.
pub fn run(db: &Path, args: &RetentionArgs) -> CliResult {
    let store = super::open_store(db)?;
    let report = if args.dry_run {
        store.retention_dry_run()
    } else {
        store.apply_retention()
    }
    .context("cannot apply retention")?;
    if !report.dry_run {
        // Reclaim the dropped partitions' space before the process ends
        // (the writer would otherwise finish it on the next open).
        store
            .purge_expired()
            .context("cannot delete the expired partitions' tables")?;
    }
    let mut out = Out::stdout();
    match args.format {
        ReportFormat::Json => {
            let dropped: Vec<_> = report
                .dropped
                .iter()
                .map(|p| {
                    json!({
                        "partition": p.name,
                        "kind": p.kind,
                        "records": p.n_records,
                        "start": p.start.to_rfc3339(),
                        "end": p.end.to_rfc3339(),
                    })
                })
                .collect();
            let doc = json!({
                "dry_run": report.dry_run,
                "partitions": report.dropped.len(),
                "records": report.n_records(),
                "dropped": dropped,
            });
            out.line(&doc.to_string())?;
        }
        ReportFormat::Table => {
            if !report.dropped.is_empty() {
                let mut table = Table::new();
                table
                    .load_preset(presets::UTF8_FULL_CONDENSED)
                    .set_header(vec!["partition", "records", "from", "until"]);
                for p in &report.dropped {
                    table.add_row(vec![
                        p.name.clone(),
                        p.n_records.to_string(),
                        p.start.to_rfc3339(),
                        p.end.to_rfc3339(),
                    ]);
                }
                out.line(&table.to_string())?;
            }
            let verb = if report.dry_run {
                "would drop"
            } else {
                "dropped"
            };
            out.line(&format!(
                "{verb} {} partitions ({} records)",
                report.dropped.len(),
                report.n_records()
            ))?;
        }
    }
    out.flush()
}
