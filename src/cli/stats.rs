//! `almanac stats`: store size, and records, partitions and the span of
//! `produced_at` per kind (from the partition catalog: no record is read).

use std::path::Path;

use almanac::Timestamp;
use clap::Args;
use comfy_table::{presets, CellAlignment, Table};
use serde_json::json;

use super::error::{CliResult, Context};
use super::kinds::ReportFormat;
use super::output::Out;

/// Arguments of `almanac stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// How to print the figures.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    format: ReportFormat,
}

fn instant(ts: Option<Timestamp>) -> String {
    ts.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
}

/// Bytes in binary units for people (`1.5 MiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Runs `almanac stats`.
pub fn run(db: &Path, args: &StatsArgs) -> CliResult {
    let store = super::open_store_for_reading(db)?;
    let stats = store.stats().context("cannot read store statistics")?;
    let mut out = Out::stdout();
    match args.format {
        ReportFormat::Json => {
            let kinds: Vec<_> = stats
                .kinds
                .iter()
                .map(|k| {
                    json!({
                        "kind": k.kind,
                        "records": k.n_records,
                        "partitions": k.n_partitions,
                        "oldest": k.oldest.map(|t| t.to_rfc3339()),
                        "newest": k.newest.map(|t| t.to_rfc3339()),
                    })
                })
                .collect();
            let doc = json!({
                "store": db.display().to_string(),
                "db_bytes": stats.db_bytes,
                "log_bytes": stats.log_bytes,
                "records": stats.n_records(),
                "partitions": stats.n_partitions(),
                "oldest": stats.oldest().map(|t| t.to_rfc3339()),
                "newest": stats.newest().map(|t| t.to_rfc3339()),
                "kinds": kinds,
            });
            out.line(&doc.to_string())?;
        }
        ReportFormat::Table => {
            out.line(&format!("store: {}", db.display()))?;
            out.line(&format!(
                "size: {} ({} database, {} log)",
                human_bytes(stats.db_bytes + stats.log_bytes),
                human_bytes(stats.db_bytes),
                human_bytes(stats.log_bytes)
            ))?;
            let mut table = Table::new();
            table
                .load_preset(presets::UTF8_FULL_CONDENSED)
                .set_header(vec![
                    "kind",
                    "records",
                    "partitions",
                    "oldest produced_at",
                    "newest produced_at",
                ]);
            for k in &stats.kinds {
                table.add_row(vec![
                    k.kind.clone(),
                    k.n_records.to_string(),
                    k.n_partitions.to_string(),
                    instant(k.oldest),
                    instant(k.newest),
                ]);
            }
            table.add_row(vec![
                "total".to_owned(),
                stats.n_records().to_string(),
                stats.n_partitions().to_string(),
                instant(stats.oldest()),
                instant(stats.newest()),
            ]);
            for column in [1, 2] {
                if let Some(c) = table.column_mut(column) {
                    c.set_cell_alignment(CellAlignment::Right);
                }
            }
            out.line(&table.to_string())?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
