//! `almanac kinds`: the kind registry. Without a subcommand, lists every kind
//! with its retention, partition bucket, schema version and record count;
//! subcommands register a kind, add a schema version, set a retention,
//! index or stop indexing a path, show one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use almanac::kinds::{Bucket, KindSpec, Retention};
use almanac::Store;
use clap::{Args, Subcommand, ValueEnum};
use comfy_table::{presets, Table};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{CliResult, Context, Failure};
use super::output::Out;

/// Output of the listing commands (`kinds`, `stats`, `retention`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// An aligned table for people.
    #[default]
    Table,
    /// One JSON document, for scripts.
    Json,
}

/// Arguments of `almanac kinds`.
#[derive(Debug, Args)]
pub struct KindsArgs {
    #[command(subcommand)]
    action: Option<KindsAction>,
    /// How to print the list.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    format: ReportFormat,
}

#[derive(Debug, Subcommand)]
enum KindsAction {
    /// Register a kind from a JSON spec file (see `docs/cli.md`).
    Register {
        /// `{"name": ..., "description": ..., "schema": {...}, "retention": "30d",
        /// "bucket": "day"|"month", "indexed_paths": [...], "summarized_paths": [...]}`; `-` reads standard input.
        #[arg(value_name = "SPEC.json|-")]
        file: PathBuf,
    },
    /// Add a new payload schema version (a JSON Schema file) to a kind.
    AddSchema {
        /// The kind.
        kind: String,
        /// The JSON Schema of the new version; `-` reads standard input.
        #[arg(value_name = "SCHEMA.json|-")]
        file: PathBuf,
    },
    /// Set how long a kind's records are kept: `30d` or `forever`.
    SetRetention {
        /// The kind.
        kind: String,
        /// `Nd` (days) or `forever`.
        retention: String,
    },
    /// Index a payload or extras path of a kind (`payload.outcome`): built
    /// at once over the records it has, kept up by every later write.
    Index {
        /// The kind.
        kind: String,
        /// A dotted path starting with `payload.` or `extras.`.
        path: String,
    },
    /// Stop indexing a path of a kind: its index tables are dropped (their
    /// space is freed by the writer) and queries on it scan instead.
    Unindex {
        /// The kind.
        kind: String,
        /// A path the kind indexes.
        path: String,
    },
    /// Print one kind's full spec (schemas included) as JSON.
    Show {
        /// The kind.
        kind: String,
    },
}

/// A kind spec file: the registry's spec with friendlier defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KindFile {
    name: String,
    #[serde(default)]
    description: String,
    /// One payload schema (version 1).
    #[serde(default)]
    schema: Option<Value>,
    /// Several versions, oldest first.
    #[serde(default)]
    schemas: Vec<Value>,
    #[serde(default)]
    retention: Option<String>,
    #[serde(default)]
    bucket: Option<String>,
    #[serde(default)]
    indexed_paths: Vec<String>,
    #[serde(default)]
    summarized_paths: Vec<String>,
}

/// Runs `almanac kinds`.
pub fn run(db: &Path, args: &KindsArgs) -> CliResult {
    // Listing and showing only read: several may run at once.
    let store = match &args.action {
        None | Some(KindsAction::Show { .. }) => super::open_store_for_reading(db)?,
        Some(_) => super::open_store(db)?,
    };
    let mut out = Out::stdout();
    match &args.action {
        None => list(&store, args.format, &mut out)?,
        Some(KindsAction::Register { file }) => {
            let spec = read_kind_file(file)?;
            let name = spec.name.clone();
            store
                .register_kind(spec)
                .with_context(|| format!("cannot register kind `{name}`"))?;
            out.line(&format!("registered kind `{name}`"))?;
        }
        Some(KindsAction::AddSchema { kind, file }) => {
            let schema: Value = read_json(file)?;
            let spec = store
                .update_kind(kind, |spec| spec.schemas.push(schema))
                .with_context(|| format!("cannot add a schema version to kind `{kind}`"))?;
            out.line(&format!(
                "kind `{kind}` now has schema version {}",
                spec.latest_version()
            ))?;
        }
        Some(KindsAction::SetRetention { kind, retention }) => {
            let retention = parse_retention(retention)?;
            store
                .set_retention(kind, retention)
                .with_context(|| format!("cannot set the retention of kind `{kind}`"))?;
            out.line(&format!(
                "kind `{kind}` now keeps records {}",
                retention_words(retention)
            ))?;
        }
        Some(KindsAction::Index { kind, path }) => {
            let already = store
                .kind(kind)
                .is_some_and(|spec| spec.indexed_paths.contains(path));
            store
                .add_indexed_path(kind, path)
                .with_context(|| format!("cannot index `{path}` of kind `{kind}`"))?;
            out.line(&if already {
                format!("kind `{kind}` already indexes `{path}`")
            } else {
                format!("kind `{kind}` now indexes `{path}`")
            })?;
        }
        Some(KindsAction::Unindex { kind, path }) => {
            let spec = store
                .kind(kind)
                .ok_or_else(|| Failure::invalid(format!("unknown kind `{kind}`")))?;
            if !spec.indexed_paths.contains(path) {
                return Err(Failure::invalid(format!(
                    "kind `{kind}` does not index `{path}` (it indexes: {})",
                    if spec.indexed_paths.is_empty() {
                        "nothing".to_owned()
                    } else {
                        spec.indexed_paths.join(", ")
                    }
                )));
            }
            store
                .update_kind(kind, |spec| spec.indexed_paths.retain(|p| p != path))
                .with_context(|| format!("cannot stop indexing `{path}` of kind `{kind}`"))?;
            // Free the dropped tables' space before the process ends.
            store
                .purge_expired()
                .with_context(|| "cannot delete the dropped index tables".to_owned())?;
            out.line(&format!("kind `{kind}` no longer indexes `{path}`"))?;
        }
        Some(KindsAction::Show { kind }) => {
            let spec = store
                .kind(kind)
                .ok_or_else(|| Failure::invalid(format!("unknown kind `{kind}`")))?;
            let text = serde_json::to_string_pretty(&spec)
                .map_err(|e| Failure::other(format!("cannot print kind `{kind}`: {e}")))?;
            out.line(&text)?;
        }
    }
    out.flush()
}

fn retention_words(retention: Retention) -> String {
    match retention {
        Retention::Forever => "forever".into(),
        Retention::Days(d) => format!("for {d} days"),
    }
}

/// Reads `30d` or `forever`.
pub fn parse_retention(text: &str) -> CliResult<Retention> {
    if text.eq_ignore_ascii_case("forever") {
        return Ok(Retention::Forever);
    }
    text.strip_suffix('d')
        .and_then(|days| days.parse::<u32>().ok())
        .filter(|days| *days > 0)
        .map(Retention::Days)
        .ok_or_else(|| {
            Failure::invalid(format!(
                "invalid retention `{text}`: expected a number of days such as `30d`, or `forever`"
            ))
        })
}

fn parse_bucket(text: &str) -> CliResult<Bucket> {
    match text {
        "day" => Ok(Bucket::Day),
        "month" => Ok(Bucket::Month),
        other => Err(Failure::invalid(format!(
            "invalid bucket `{other}`: expected `day` or `month`"
        ))),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(file: &Path) -> CliResult<T> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin().lock())
            .map_err(|e| Failure::other(format!("cannot read standard input: {e}")))?
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Failure::other(format!("cannot read {}: {e}", file.display())))?
    };
    serde_json::from_str(&text)
        .map_err(|e| Failure::invalid(format!("invalid JSON in {}: {e}", file.display())))
}

fn read_kind_file(file: &Path) -> CliResult<KindSpec> {
    let kind: KindFile = read_json(file)?;
    let mut schemas = kind.schemas;
    if let Some(schema) = kind.schema {
        if !schemas.is_empty() {
            return Err(Failure::invalid(format!(
                "invalid kind spec in {}: give `schema` or `schemas`, not both",
                file.display()
            )));
        }
        schemas.push(schema);
    }
    let mut spec = KindSpec::new(&kind.name, &kind.description);
    spec.schemas = schemas;
    if let Some(retention) = &kind.retention {
        spec.retention = parse_retention(retention)?;
    }
    if let Some(bucket) = &kind.bucket {
        spec.bucket = parse_bucket(bucket)?;
    }
    spec.indexed_paths = kind.indexed_paths;
    spec.summarized_paths = kind.summarized_paths;
    Ok(spec)
}

/// One line of the listing.
struct KindRow {
    name: String,
    registered: Option<KindSpec>,
    n_records: u64,
}

fn rows(store: &Store) -> CliResult<Vec<KindRow>> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for p in store.partitions().context("cannot list partitions")? {
        *counts.entry(p.kind).or_default() += p.info.n_records;
    }
    let mut rows: Vec<KindRow> = store
        .kinds()
        .into_iter()
        .map(|spec| KindRow {
            name: spec.name.clone(),
            n_records: counts.remove(&spec.name).unwrap_or(0),
            registered: Some(spec),
        })
        .collect();
    // Kinds with records but no registry entry (open governance).
    rows.extend(counts.into_iter().map(|(name, n_records)| KindRow {
        name,
        registered: None,
        n_records,
    }));
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

pub fn list(store: &Store, format: ReportFormat, out: &mut Out) -> CliResult {
    let rows = rows(store)?;
    match format {
        ReportFormat::Json => {
            let items: Vec<Value> = rows
                .iter()
                .map(|r| match &r.registered {
                    Some(spec) => json!({
                        "kind": r.name,
                        "registered": true,
                        "retention": spec.retention.to_string(),
                        "bucket": spec.bucket.to_string(),
                        "schema_version": spec.latest_version(),
                        "records": r.n_records,
                        "description": spec.description,
                    }),
                    None => json!({
                        "kind": r.name,
                        "registered": false,
                        "retention": "forever",
                        "bucket": "day",
                        "schema_version": null,
                        "records": r.n_records,
                        "description": "",
                    }),
                })
                .collect();
            out.line(&Value::Array(items).to_string())
        }
        ReportFormat::Table => {
            let mut table = Table::new();
            table
                .load_preset(presets::UTF8_FULL_CONDENSED)
                .set_header(vec![
                    "kind",
                    "retention",
                    "bucket",
                    "schema version",
                    "records",
                ]);
            for r in &rows {
                let (retention, bucket, version) = match &r.registered {
                    Some(spec) => (
                        spec.retention.to_string(),
                        spec.bucket.to_string(),
                        spec.latest_version().to_string(),
                    ),
                    None => ("forever".into(), "day".into(), "unregistered".into()),
                };
                table.add_row(vec![
                    r.name.clone(),
                    retention,
                    bucket,
                    version,
                    r.n_records.to_string(),
                ]);
            }
            out.line(&table.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_days_and_forever() {
        assert_eq!(parse_retention("30d").ok(), Some(Retention::Days(30)));
        assert_eq!(parse_retention("forever").ok(), Some(Retention::Forever));
        assert!(parse_retention("0d").is_err());
        assert!(parse_retention("30").is_err());
        assert!(parse_retention("1y").is_err());
    }
}
