//! `almanac stats`: store size, and records, partitions and the span of
//! `produced_at` per kind (from the partition catalog: no record is read).

use std::path::Path;

use almanac::{StoreStats, Timestamp};
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

/// The table's size line. Where the database file is sparse (redb grows it
/// ahead of use; the first write after `compact` doubles its length) the
/// line also says what it takes on disk, so the two figures are not taken
/// for each other.
fn size_line(stats: &StoreStats) -> String {
    let (db, log) = (stats.db_bytes, stats.log_bytes);
    match stats.db_allocated_bytes {
        // Blocks are rounded up, so a dense file can show a little more.
        Some(allocated) if allocated < db - db / 10 => format!(
            "size: {} ({} database, {} of it allocated on disk; {} log)",
            human_bytes(db + log),
            human_bytes(db),
            human_bytes(allocated),
            human_bytes(log)
        ),
        _ => format!(
            "size: {} ({} database, {} log)",
            human_bytes(db + log),
            human_bytes(db),
            human_bytes(log)
        ),
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
                "db_allocated_bytes": stats.db_allocated_bytes,
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
            out.line(&size_line(&stats))?;
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

    fn stats(db_bytes: u64, db_allocated_bytes: Option<u64>) -> StoreStats {
        StoreStats {
            db_bytes,
            db_allocated_bytes,
            log_bytes: 1024,
            kinds: Vec::new(),
        }
    }

    #[test]
    fn the_size_line_names_the_allocated_bytes_of_a_sparse_file() {
        let mib = 1024 * 1024;
        let line = size_line(&stats(80 * mib, Some(40 * mib)));
        assert_eq!(
            line,
            "size: 80.0 MiB (80.0 MiB database, 40.0 MiB of it allocated on disk; 1.0 KiB log)"
        );
        // A dense file (blocks round up, so it can show a little more) or an
        // unknown allocation: the length alone.
        for allocated in [Some(80 * mib + 4096), Some(73 * mib), None] {
            let line = size_line(&stats(80 * mib, allocated));
            assert_eq!(line, "size: 80.0 MiB (80.0 MiB database, 1.0 KiB log)");
        }
    }
}
