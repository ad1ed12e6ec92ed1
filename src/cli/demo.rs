//! `almanac demo`: fills an empty store with a realistic sample, so a new
//! user can try every example query in a minute.
//!
//! The six standard kinds over hundreds of targets and months of history
//! ending now: daily ingestion runs (volumes with windows in `extras`,
//! runtimes), reconciliation checks linked to the ingestion runs they cover
//! by `payload.ingestion_run_ids`, with failures, timeouts and a few streaks
//! of three timeouts, volume spikes, weekly schema and statistics snapshots,
//! and catalog diffs, some breaking. Deterministic given `--seed` and `--end`.

use std::path::Path;

use almanac::model::{JsonObject, MetadataContext, MICROS_PER_DAY, MICROS_PER_SECOND};
use almanac::{MetadataRecord, MetadataRepository, MetadataTarget, Store, Timestamp};
use clap::Args;
use comfy_table::{presets, Table};
use serde_json::{json, Value};

use super::error::{CliResult, Context, Failure};
use super::output::Out;

const BATCH_RECORDS: usize = 10_000;
const HOUR: i64 = 3600 * MICROS_PER_SECOND;
const MINUTE: i64 = 60 * MICROS_PER_SECOND;

/// Arguments of `almanac demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seed of the generator: the same seed and end give the same records.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of tables.
    #[arg(long, default_value_t = 240, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    targets: u64,
    /// Days of history.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=3650))]
    days: u64,
    /// The end of the history (RFC 3339); default: now.
    #[arg(long, value_name = "INSTANT")]
    end: Option<String>,
}

/// SplitMix64: small, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn hex(&mut self) -> String {
        format!("{:08x}", self.next() as u32)
    }
}

const SOURCES: [(&str, &[&str]); 5] = [
    ("oracle_prod", &["itcftth", "billing", "crm"]),
    ("pg_sales", &["public", "staging"]),
    ("pg_analytics", &["marts", "reporting"]),
    ("mysql_web", &["shop"]),
    ("sqlserver_erp", &["dbo", "finance"]),
];
const TABLE_STEMS: [&str; 24] = [
    "orders",
    "customers",
    "invoices",
    "payments",
    "subscriptions",
    "events",
    "sessions",
    "products",
    "inventory",
    "shipments",
    "refunds",
    "accounts",
    "contracts",
    "tickets",
    "usage",
    "devices",
    "sites",
    "plans",
    "ledger",
    "balances",
    "srv_cfsver_ct",
    "campaigns",
    "leads",
    "returns",
];
const TABLE_SUFFIXES: [&str; 6] = ["main", "hist", "daily", "stage", "detail", "agg"];
const COLUMN_TYPES: [&str; 7] = [
    "varchar(64)",
    "integer",
    "bigint",
    "numeric(18,2)",
    "timestamp",
    "date",
    "boolean",
];
const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const CLUSTERS: [&str; 2] = ["eu-1", "us-1"];

/// One generated table and its habits.
struct DemoTarget {
    target: MetadataTarget,
    base_rows: f64,
    row_bytes: u64,
    load_minute: i64,
    reconciled: bool,
    recon_producer: &'static str,
    timeout_streak: bool,
    breaking_week: Option<u64>,
    snapshot_weekday: u64,
    tenant: &'static str,
    cluster: &'static str,
    columns: Vec<(String, String)>,
}

fn make_targets(rng: &mut Rng, n: u64) -> Vec<DemoTarget> {
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (source, schemas) = SOURCES[(i % SOURCES.len() as u64) as usize];
        let schema = schemas[((i / SOURCES.len() as u64) % schemas.len() as u64) as usize];
        let stem = TABLE_STEMS[((i / 3) % TABLE_STEMS.len() as u64) as usize];
        let suffix = TABLE_SUFFIXES[((i / 7) % TABLE_SUFFIXES.len() as u64) as usize];
        let round = i / (TABLE_STEMS.len() as u64 * TABLE_SUFFIXES.len() as u64);
        let (source, schema, table) = if i == 0 {
            // The table of the spec's examples.
            ("oracle_prod", "itcftth", "srv_cfsver_ct_main".to_owned())
        } else if round == 0 {
            (source, schema, format!("{stem}_{suffix}"))
        } else {
            (source, schema, format!("{stem}_{suffix}_{round}"))
        };
        let n_columns = 4 + rng.below(10) as usize;
        let mut columns = vec![("id".to_owned(), "bigint".to_owned())];
        for c in 1..n_columns {
            columns.push((format!("col_{c}"), (*rng.pick(&COLUMN_TYPES)).to_owned()));
        }
        let mut target = MetadataTarget::new(source, schema, &table);
        if rng.chance(0.2) {
            target.extras.insert(
                "partition".into(),
                json!(format!("p{}", 2020 + rng.below(6))),
            );
        }
        out.push(DemoTarget {
            target,
            base_rows: 1_000.0 * 10f64.powf(rng.unit() * 4.0),
            row_bytes: 80 + rng.below(800),
            load_minute: 60 + rng.below(300) as i64,
            reconciled: i == 0 || rng.chance(0.75),
            recon_producer: if rng.chance(0.6) {
                "recon.v2"
            } else {
                "recon.v1"
            },
            timeout_streak: i % 37 == 5,
            breaking_week: rng.chance(0.15).then(|| 1 + rng.below(10)),
            snapshot_weekday: rng.below(7),
            tenant: TENANTS[(i % 3) as usize],
            cluster: CLUSTERS[rng.below(CLUSTERS.len() as u64) as usize],
            columns,
        });
    }
    out
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

fn date_of(ts: Timestamp) -> String {
    ts.to_datetime()
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Collects generated records and stores them in batches.
struct Sink<'a> {
    store: &'a Store,
    batch: Vec<MetadataRecord>,
    n_stored: usize,
    n_duplicates: usize,
}

impl Sink<'_> {
    fn push(&mut self, record: MetadataRecord) -> CliResult {
        self.batch.push(record);
        if self.batch.len() >= BATCH_RECORDS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> CliResult {
        if !self.batch.is_empty() {
            let outcome = self
                .store
                .bulk_store(&self.batch)
                .context("cannot store the demo records")?;
            self.n_stored += outcome.n_stored;
            self.n_duplicates += outcome.n_duplicates;
            self.batch.clear();
        }
        Ok(())
    }
}

/// Runs `almanac demo`.
pub fn run(db: &Path, args: &DemoArgs) -> CliResult {
    let end = match &args.end {
        Some(text) => Timestamp::parse_rfc3339(text).ok_or_else(|| {
            Failure::invalid(format!(
                "invalid --end `{text}`: expected an RFC 3339 instant such as 2024-03-01T00:00:00Z"
            ))
        })?,
        None => Timestamp::now(),
    };
    // The history's first window starts the day before its first day.
    let today = end.as_micros().div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY;
    let first_day = today - (args.days as i64 - 1) * MICROS_PER_DAY;
    if !Timestamp::from_micros(first_day - MICROS_PER_DAY).is_rfc3339() {
        return Err(Failure::invalid(format!(
            "invalid --end `{}`: {} days of history before it would start before the year 0000 (records lie within years 0000 to 9999 in UTC)",
            args.end.as_deref().unwrap_or_default(),
            args.days
        )));
    }
    let store = super::open_store(db)?;
    let existing = store.stats().context("cannot read the store")?.n_records();
    if existing > 0 {
        return Err(Failure::invalid(format!(
            "the store at {} already holds {existing} records; demo fills only an empty store (choose another --db)",
            db.display()
        )));
    }
    let mut rng = Rng(args.seed);
    let targets = make_targets(&mut rng, args.targets);
    let mut sink = Sink {
        store: &store,
        batch: Vec::with_capacity(BATCH_RECORDS),
        n_stored: 0,
        n_duplicates: 0,
    };
    let mut states: Vec<TargetState> = targets
        .iter()
        .map(|t| TargetState::new(t, rng.next()))
        .collect();
    for d in 0..args.days {
        for (t_idx, (t, state)) in targets.iter().zip(&mut states).enumerate() {
            generate_day(state, &mut sink, t, t_idx, d, first_day, args.days, end)?;
        }
    }
    sink.flush()?;
    print_summary(&store, db, &targets, sink.n_stored, first_day, end)
}

fn context(t: &DemoTarget, job: &str, run_id: &str) -> MetadataContext {
    MetadataContext {
        job_id: Some(format!("{job}_{}", t.target.table)),
        run_id: Some(run_id.to_owned()),
        namespace: Some("prod".into()),
        extras: object(json!({"cluster": t.cluster, "workspace": "dwh", "tenant": t.tenant})),
    }
}

/// What one target's generator carries from day to day. Each target has a
/// random stream of its own, so the records can be generated day by day
/// across targets (and stored roughly in time order, as a platform writes
/// them: appends to each partition's tables rather than inserts all over
/// every partition, which left most of a demo store's file free space).
struct TargetState {
    rng: Rng,
    previous_run: Option<String>,
    columns: Vec<(String, String)>,
    row_count: u64,
}

impl TargetState {
    fn new(t: &DemoTarget, seed: u64) -> Self {
        TargetState {
            rng: Rng(seed),
            previous_run: None,
            columns: t.columns.clone(),
            row_count: (t.base_rows * 30.0) as u64,
        }
    }
}

/// Generates target `t`'s records of day `d` (0 = `first_day`).
#[allow(clippy::too_many_arguments)]
fn generate_day(
    state: &mut TargetState,
    sink: &mut Sink<'_>,
    t: &DemoTarget,
    t_idx: usize,
    d: u64,
    first_day: i64,
    days: u64,
    end: Timestamp,
) -> CliResult {
    let TargetState {
        rng,
        previous_run,
        columns,
        row_count,
    } = state;
    let day_start = first_day + d as i64 * MICROS_PER_DAY;
    let loaded = Timestamp::from_micros(
        day_start + t.load_minute * MINUTE + rng.below(600) as i64 * MICROS_PER_SECOND,
    );
    if loaded > end {
        return Ok(()); // and so are the later days'
    }
    let days_left = days - 1 - d;
    let run_id = if t_idx == 0 && days_left == 1 {
        "run-123".to_owned() // the run of the spec's `* {run_id="run-123"}` example
    } else {
        format!("run-{}", rng.hex())
    };
    let window_start = Timestamp::from_micros(day_start - MICROS_PER_DAY);
    let window_end = Timestamp::from_micros(day_start);
    let extras = object(json!({
        "window_start": window_start.to_rfc3339(),
        "window_end": window_end.to_rfc3339(),
    }));

    // Ingestion volume: noisy around the table's size, a rare spike or empty load.
    let noise = 1.0 + (rng.unit() - 0.5) * 0.2;
    let mut rows = (t.base_rows * noise) as u64;
    if rng.chance(0.01) {
        rows *= 8;
    } else if rng.chance(0.005) {
        rows = 0;
    }
    *row_count += rows;
    let mut volume = MetadataRecord::new(
        "ingestion_volume",
        t.target.clone(),
        object(json!({
            "rows": rows,
            "bytes": rows * t.row_bytes,
            "filter": format!("load_date = '{}'", date_of(window_start)),
            "watermark": window_end.to_rfc3339(),
        })),
        loaded,
        "ingestion.v1",
    );
    volume.context = context(t, "load", &run_id);
    volume.version = Some(1);
    volume.quality = Some(json!(if rng.chance(0.9) {
        "verified"
    } else {
        "estimated"
    }));
    volume.extras = extras.clone();
    sink.push(volume)?;

    // Runtime of the same run.
    let retries = if rng.chance(0.05) {
        1 + rng.below(3)
    } else {
        0
    };
    let duration = (rows as f64 / 20_000.0 + 5.0 + rng.unit() * 30.0) * (1.0 + retries as f64);
    let mut runtime = MetadataRecord::new(
        "ingestion_runtime",
        t.target.clone(),
        object(json!({"duration_s": (duration * 10.0).round() / 10.0, "retries": retries})),
        Timestamp::from_micros(loaded.as_micros() + (duration as i64 + 1) * MICROS_PER_SECOND),
        "ingestion.v1",
    );
    runtime.context = context(t, "load", &run_id);
    runtime.version = Some(1);
    runtime.extras = extras.clone();
    sink.push(runtime)?;

    // Reconciliation of the load (and the previous one when it was retried).
    if t.reconciled {
        let checked = Timestamp::from_micros(
            loaded.as_micros() + 30 * MINUTE + rng.below(20) as i64 * MINUTE,
        );
        if checked <= end {
            let outcome = if t.timeout_streak && days_left < 3 {
                "timeout"
            } else {
                let x = rng.unit();
                if x < 0.05 {
                    "fail"
                } else if x < 0.08 {
                    "timeout"
                } else if x < 0.09 {
                    "error"
                } else {
                    "pass"
                }
            };
            let threshold = 0.01;
            let observed = match outcome {
                "fail" => threshold * (1.5 + rng.unit() * 5.0),
                _ => threshold * rng.unit() * 0.9,
            };
            let mut run_ids = vec![run_id.clone()];
            if retries > 0 {
                if let Some(prev) = previous_run.as_ref() {
                    run_ids.push(prev.clone());
                }
            }
            let mut payload = json!({
                "outcome": outcome,
                "observed": (observed * 1e5).round() / 1e5,
                "threshold": threshold,
                "tolerance": {"relative": threshold},
                "ingestion_run_ids": run_ids,
            });
            if outcome == "fail" {
                payload["drill_down"] = json!([format!(
                    "select count(*) from {}.{} where load_date = '{}'",
                    t.target.schema,
                    t.target.table,
                    date_of(window_start)
                )]);
            }
            let mut recon = MetadataRecord::new(
                "recon_result",
                t.target.clone(),
                object(payload),
                checked,
                t.recon_producer,
            );
            recon.context = context(t, "recon", &format!("recon-{}", rng.hex()));
            recon.version = Some(1);
            recon.extras = extras.clone();
            sink.push(recon)?;
        }
    }
    *previous_run = Some(run_id);

    // Weekly snapshots: schema (with a change now and then) and statistics.
    if d % 7 == t.snapshot_weekday % 7 {
        let week = d / 7;
        let snap_at = Timestamp::from_micros(day_start + 22 * HOUR);
        if snap_at <= end {
            if let Some(diff) = evolve_schema(rng, columns, t.breaking_week == Some(week)) {
                let (change, column, breaking) = diff;
                let mut record = MetadataRecord::new(
                    "catalog_diff",
                    t.target.clone(),
                    object(json!({"change": change, "column": column, "breaking": breaking})),
                    Timestamp::from_micros(snap_at.as_micros() - MINUTE),
                    "catalog.v1",
                );
                record.version = Some(1);
                sink.push(record)?;
            }
            let cols: Vec<Value> = columns
                .iter()
                .map(|(name, ty)| json!({"name": name, "type": ty, "nullable": name != "id"}))
                .collect();
            let mut snapshot = MetadataRecord::new(
                "schema_snapshot",
                t.target.clone(),
                object(json!({ "columns": cols })),
                snap_at,
                "catalog.v1",
            );
            snapshot.version = Some(1);
            sink.push(snapshot)?;
            let mut statistics = MetadataRecord::new(
                "statistics_snapshot",
                t.target.clone(),
                object(json!({
                    "row_count": *row_count,
                    "null_fraction": (rng.unit() * 0.2 * 1000.0).round() / 1000.0,
                })),
                Timestamp::from_micros(snap_at.as_micros() + 5 * MINUTE),
                "profiler.v1",
            );
            statistics.version = Some(1);
            sink.push(statistics)?;
        }
    }
    Ok(())
}

/// Changes the columns now and then: returns (change, column, breaking).
fn evolve_schema(
    rng: &mut Rng,
    columns: &mut Vec<(String, String)>,
    breaking: bool,
) -> Option<(&'static str, String, bool)> {
    if breaking && columns.len() > 2 {
        let idx = 1 + rng.below(columns.len() as u64 - 1) as usize;
        if rng.chance(0.5) {
            let (name, _) = columns.remove(idx);
            return Some(("column_dropped", name, true));
        }
        let new_type = (*rng.pick(&COLUMN_TYPES)).to_owned();
        columns[idx].1 = new_type;
        return Some(("column_type_changed", columns[idx].0.clone(), true));
    }
    if rng.chance(0.04) {
        let name = format!("col_{}", columns.len() + rng.below(100) as usize);
        columns.push((name.clone(), (*rng.pick(&COLUMN_TYPES)).to_owned()));
        return Some(("column_added", name, false));
    }
    None
}

fn print_summary(
    store: &Store,
    db: &Path,
    targets: &[DemoTarget],
    n_stored: usize,
    first_day: i64,
    end: Timestamp,
) -> CliResult {
    let stats = store.stats().context("cannot read the store")?;
    let mut out = Out::stdout();
    out.line(&format!(
        "demo store at {}: {n_stored} records about {} tables, from {} to {}",
        db.display(),
        targets.len(),
        Timestamp::from_micros(first_day - MICROS_PER_DAY).to_rfc3339(),
        end.to_rfc3339()
    ))?;
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_header(vec!["kind", "records", "partitions"]);
    for k in &stats.kinds {
        table.add_row(vec![
            k.kind.clone(),
            k.n_records.to_string(),
            k.n_partitions.to_string(),
        ]);
    }
    out.line(&table.to_string())?;
    out.line("try:")?;
    for example in [
        r#"almanac query 'recon_result{schema="itcftth", table="srv_cfsver_ct_main"} | latest'"#,
        r#"almanac query 'recon_result | since 30d | stats countif(payload.outcome = "fail") as failures, count() as checks by target | sort failures desc | limit 10'"#,
        r#"almanac query 'recon_result | window countif(payload.outcome = "timeout") as streak by target rows -2 .. 0 | where streak = 3 | latest by target'"#,
        r#"almanac query '* {run_id="run-123"}'"#,
        "almanac repl",
    ] {
        out.line(&format!("  {example}"))?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic() {
        let a: Vec<u64> = {
            let mut r = Rng(7);
            (0..5).map(|_| r.next()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng(7);
            (0..5).map(|_| r.next()).collect()
        };
        assert_eq!(a, b);
        let mut r = Rng(1);
        assert!((0..1000).all(|_| (0.0..1.0).contains(&r.unit())));
    }

    #[test]
    fn target_names_are_unique() {
        let mut rng = Rng(42);
        let targets = make_targets(&mut rng, 2000);
        let mut names: Vec<String> = targets.iter().map(|t| t.target.canonical_name()).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
        assert_eq!(
            targets[0].target.canonical_name(),
            "oracle_prod:itcftth.srv_cfsver_ct_main"
        );
    }
}
