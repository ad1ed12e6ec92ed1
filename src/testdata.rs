//! Realistic generated records, for benches, tests and demos.
//!
//! One generator, shared by the criterion benches, the comparison against
//! SQLite and the integration tests (the CLI's `demo` has its own, in
//! `src/cli/demo.rs`, shaped for trying queries). For a seed and a [`GenConfig`] it yields the same
//! records every time, in ascending `produced_at` order, spread evenly over
//! `days` days that end at `end`.
//!
//! The data imitates a platform that loads thousands of tables from a few
//! sources. Every ingestion *run* of a target emits an `ingestion_volume`
//! (rows and bytes, skewed: a few huge tables, many small ones) and an
//! `ingestion_runtime`; most runs are followed by a `recon_result` (mostly
//! `pass`, some `fail`, `timeout` or `error`) whose `ingestion_run_ids` name
//! the runs it covers; some by a `statistics_snapshot` or a
//! `schema_snapshot`, and a schema that changed emits a `catalog_diff`.
//! Records carry `extras.window_start`/`window_end` and a context with
//! `job_id`, `run_id`, `namespace` and `extras.tenant`.
//!
//! ```
//! use almanac::testdata::{GenConfig, Generator};
//! let config = GenConfig { n_records: 100, ..GenConfig::default() };
//! let records: Vec<_> = Generator::new(7, config.clone()).collect();
//! assert_eq!(records.len(), 100);
//! assert_eq!(records, Generator::new(7, config).collect::<Vec<_>>());
//! ```

use std::collections::VecDeque;

use serde_json::{json, Value};

use crate::model::{
    JsonObject, MetadataContext, MetadataRecord, MetadataTarget, Timestamp, MICROS_PER_DAY,
    MICROS_PER_SECOND,
};

/// A small, fast, deterministic PRNG (splitmix64); not for cryptography.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is `0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: unbiased enough for test data, and no division.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// The sources of generated targets: `(source_id, tenant, producer_id)`.
pub const SOURCES: [(&str, &str, &str); 4] = [
    ("oracle_prod", "acme", "ingestion.v1"),
    ("postgres_crm", "acme", "ingestion.v1"),
    ("s3_lake", "globex", "ingestion.v2"),
    ("mysql_billing", "initech", "ingestion.v1"),
];

/// Schemas per source, cycled through by target index.
const SCHEMAS: [&str; 4] = ["sales", "finance", "ops", "staging"];

/// Table name stems; the target index makes each name unique.
const STEMS: [&str; 12] = [
    "orders",
    "customers",
    "invoices",
    "payments",
    "shipments",
    "events",
    "accounts",
    "products",
    "ledger",
    "sessions",
    "contracts",
    "tickets",
];

const COLUMN_TYPES: [&str; 6] = [
    "NUMBER",
    "VARCHAR2",
    "DATE",
    "TIMESTAMP",
    "DECIMAL",
    "BOOLEAN",
];

/// The size and time span of generated data.
#[derive(Clone, Debug, PartialEq)]
pub struct GenConfig {
    /// Records to generate.
    pub n_records: usize,
    /// Distinct targets (tables); at least 1.
    pub n_targets: usize,
    /// Days of history; at least 1.
    pub days: u32,
    /// Exclusive end of the generated `produced_at` range.
    pub end: Timestamp,
}

impl Default for GenConfig {
    /// 10,000 records over 1,000 targets and 90 days ending 2024-06-01T00:00:00Z.
    fn default() -> Self {
        GenConfig {
            n_records: 10_000,
            n_targets: 1_000,
            days: 90,
            end: Timestamp::from_micros(1_717_200_000 * MICROS_PER_SECOND),
        }
    }
}

impl GenConfig {
    /// `n_records` records shaped like the benches' data: `n_records / 200`
    /// targets (50 to 5,000) over 120 days ending 2024-06-01T00:00:00Z
    /// (day-aligned, so 30 days from the start are exactly 30 day
    /// partitions).
    pub fn scaled(n_records: usize) -> Self {
        GenConfig {
            n_records,
            n_targets: (n_records / 200).clamp(50, 5_000),
            days: 120,
            ..GenConfig::default()
        }
    }

    /// The first instant of the generated range: `end - days`.
    pub fn start(&self) -> Timestamp {
        self.end
            .saturating_add_micros(-(i64::from(self.days.max(1)) * MICROS_PER_DAY))
    }

    /// The target with index `target_idx` (`0..n_targets`): the same for
    /// every seed, so callers can name targets without generating records.
    pub fn target(&self, target_idx: usize) -> MetadataTarget {
        let (source_id, _, _) = SOURCES[target_idx % SOURCES.len()];
        let schema = SCHEMAS[(target_idx / SOURCES.len()) % SCHEMAS.len()];
        let stem = STEMS[target_idx % STEMS.len()];
        let mut target = MetadataTarget::new(source_id, schema, &format!("{stem}_{target_idx}"));
        if source_id == "s3_lake" {
            target.extras.insert("format".into(), "parquet".into());
        }
        target
    }
}

/// Per-target facts fixed for the whole run of a generator.
#[derive(Clone, Debug)]
struct TargetState {
    target: MetadataTarget,
    source_idx: usize,
    /// Typical rows per load: log-skewed, so a few tables are huge.
    base_rows: u64,
    /// Bytes per row.
    row_width: u64,
    /// Bumped by each schema change.
    schema_version: u32,
    /// The last ingestion run of this target, for recon's `ingestion_run_ids`.
    last_run: Option<u64>,
}

/// An iterator over generated records (see the module docs).
#[derive(Clone, Debug)]
pub struct Generator {
    config: GenConfig,
    rng: SplitMix64,
    targets: Vec<TargetState>,
    /// Records of the current run not yet yielded.
    pending: VecDeque<MetadataRecord>,
    /// Records yielded or queued so far: the index of the next record made.
    n_made: usize,
    n_yielded: usize,
    next_run: u64,
}

impl Generator {
    /// A generator of `config.n_records` records for `seed`.
    pub fn new(seed: u64, config: GenConfig) -> Self {
        let mut rng = SplitMix64::new(seed);
        let n_targets = config.n_targets.max(1);
        let targets = (0..n_targets)
            .map(|idx| {
                // 10^(2 + 7u^3): most tables load hundreds to thousands of
                // rows, a few load hundreds of millions.
                let u = rng.unit();
                let base_rows = 10f64.powf(2.0 + 7.0 * u * u * u) as u64;
                TargetState {
                    target: config.target(idx),
                    source_idx: idx % SOURCES.len(),
                    base_rows,
                    row_width: 40 + rng.below(400),
                    schema_version: 0,
                    last_run: None,
                }
            })
            .collect();
        Generator {
            config,
            rng,
            targets,
            pending: VecDeque::new(),
            n_made: 0,
            n_yielded: 0,
            next_run: 1,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GenConfig {
        &self.config
    }

    /// `produced_at` of the record with index `record_idx`: evenly spread
    /// over the range, so records come out in ascending time order.
    fn time_of(&self, record_idx: usize) -> Timestamp {
        let start = self.config.start().as_micros();
        let span = i128::from(self.config.end.as_micros() - start);
        let n = self.config.n_records.max(1) as i128;
        let offset = (record_idx as i128).min(n - 1) * span / n;
        Timestamp::from_micros(start + offset as i64)
    }

    /// Queues the records of one ingestion run and what follows it.
    fn make_run(&mut self) {
        let run = self.next_run;
        self.next_run += 1;
        let target_idx = self.rng.below(self.targets.len() as u64) as usize;
        let state = self.targets[target_idx].clone();
        let (_, tenant, ingest_producer) = SOURCES[state.source_idx];
        let table = state.target.table.clone();
        let run_id = format!("run-{run:08}");
        let namespace = if self.rng.chance(0.95) {
            "prod"
        } else {
            "staging"
        };
        let cluster = if state.source_idx.is_multiple_of(2) {
            "eu-1"
        } else {
            "us-1"
        };
        let context = |job_id: String, run_id: String| MetadataContext {
            job_id: Some(job_id),
            run_id: Some(run_id),
            namespace: Some(namespace.to_owned()),
            extras: object(json!({"tenant": tenant, "cluster": cluster})),
        };
        let ingest_ctx = context(format!("load_{table}"), run_id.clone());

        // ingestion_volume: rows vary around the target's typical volume;
        // now and then a load is empty or far off (what recon catches).
        let t_volume = self.time_of(self.n_made);
        let factor = if self.rng.chance(0.02) {
            self.rng.unit() * 0.2
        } else {
            0.8 + self.rng.unit() * 0.4
        };
        let rows = (state.base_rows as f64 * factor) as u64;
        let (window_start, window_end) = day_window(t_volume);
        let mut volume_payload = object(json!({
            "rows": rows,
            "bytes": rows * state.row_width,
            "watermark": window_end.to_rfc3339(),
        }));
        if self.rng.chance(0.3) {
            volume_payload.insert(
                "filter".into(),
                format!("load_date = '{}'", &window_start.to_rfc3339()[..10]).into(),
            );
        }
        if state.base_rows > 10_000_000 {
            volume_payload.insert("slices".into(), (1 + rows / 5_000_000).into());
        }
        let mut volume = self.record(
            "ingestion_volume",
            &state.target,
            volume_payload,
            t_volume,
            ingest_producer,
            ingest_ctx.clone(),
            (window_start, window_end),
        );
        volume.quality = Some(if self.rng.chance(0.8) {
            "verified".into()
        } else {
            "estimated".into()
        });
        if ingest_producer == "ingestion.v2" {
            volume.version = Some(1);
        }
        self.push(volume);

        // ingestion_runtime: roughly proportional to the volume.
        let t = self.time_of(self.n_made);
        let duration_s = 1.0 + (rows as f64).sqrt() / 50.0 * (0.5 + self.rng.unit());
        let retries = if self.rng.chance(0.05) {
            1 + self.rng.below(3)
        } else {
            0
        };
        let runtime = self.record(
            "ingestion_runtime",
            &state.target,
            object(
                json!({"duration_s": (duration_s * 1000.0).round() / 1000.0, "retries": retries}),
            ),
            t,
            ingest_producer,
            ingest_ctx,
            (window_start, window_end),
        );
        self.push(runtime);

        // recon_result for most runs, covering this run (and the previous one).
        if self.rng.chance(0.8) {
            let t = self.time_of(self.n_made);
            let mut run_ids = vec![Value::from(run_id.clone())];
            if let Some(prev) = state.last_run {
                if self.rng.chance(0.3) {
                    run_ids.insert(0, Value::from(format!("run-{prev:08}")));
                }
            }
            let draw = self.rng.unit();
            let outcome = match draw {
                d if d < 0.90 => "pass",
                d if d < 0.96 => "fail",
                d if d < 0.98 => "timeout",
                _ => "error",
            };
            let threshold = 0.05;
            let mut payload = object(json!({
                "outcome": outcome,
                "ingestion_run_ids": run_ids,
            }));
            match outcome {
                "pass" => {
                    payload.insert(
                        "observed".into(),
                        round4(self.rng.unit() * threshold).into(),
                    );
                    payload.insert("threshold".into(), threshold.into());
                }
                "fail" => {
                    let observed = threshold + self.rng.unit() * 0.5;
                    payload.insert("observed".into(), round4(observed).into());
                    payload.insert("threshold".into(), threshold.into());
                    payload.insert(
                        "drill_down".into(),
                        json!([format!(
                            "load_date = '{}'",
                            &window_start.to_rfc3339()[..10]
                        )]),
                    );
                }
                _ => {}
            }
            payload.insert("tolerance".into(), json!({"relative": threshold}));
            let recon = self.record(
                "recon_result",
                &state.target,
                payload,
                t,
                "recon.v3",
                context(format!("recon_{table}"), format!("recon-{run:08}")),
                (window_start, window_end),
            );
            self.push(recon);
        }

        // statistics_snapshot now and then.
        if self.rng.chance(0.1) {
            let t = self.time_of(self.n_made);
            let payload = object(json!({
                "row_count": state.base_rows * (10 + self.rng.below(100)),
                "null_fraction": round4(self.rng.unit() * 0.3),
            }));
            let stats = self.record(
                "statistics_snapshot",
                &state.target,
                payload,
                t,
                "collector.v1",
                context(format!("stats_{table}"), format!("stats-{run:08}")),
                (window_start, window_end),
            );
            self.push(stats);
        }

        // schema_snapshot now and then; one in ten finds a changed schema,
        // which the catalog reports as a catalog_diff.
        if self.rng.chance(0.05) {
            let changed = self.rng.chance(0.1);
            if changed {
                self.targets[target_idx].schema_version += 1;
            }
            let version = self.targets[target_idx].schema_version;
            let t = self.time_of(self.n_made);
            let snapshot = self.record(
                "schema_snapshot",
                &state.target,
                object(json!({"columns": columns(target_idx, version)})),
                t,
                "collector.v1",
                context(format!("schema_{table}"), format!("schema-{run:08}")),
                (window_start, window_end),
            );
            self.push(snapshot);
            if changed {
                let t = self.time_of(self.n_made);
                let n_base = base_columns(target_idx);
                let payload = if version.is_multiple_of(3) {
                    json!({"change": "alter_type", "column": format!("col_{}", version % n_base), "breaking": true})
                } else {
                    json!({"change": "add_column", "column": format!("extra_{version}"), "breaking": false})
                };
                let diff = self.record(
                    "catalog_diff",
                    &state.target,
                    object(payload),
                    t,
                    "catalog.v1",
                    context(format!("schema_{table}"), format!("schema-{run:08}")),
                    (window_start, window_end),
                );
                self.push(diff);
            }
        }
        self.targets[target_idx].last_run = Some(run);
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        kind: &str,
        target: &MetadataTarget,
        payload: JsonObject,
        produced_at: Timestamp,
        producer_id: &str,
        context: MetadataContext,
        window: (Timestamp, Timestamp),
    ) -> MetadataRecord {
        let mut record =
            MetadataRecord::new(kind, target.clone(), payload, produced_at, producer_id);
        record.context = context;
        record.extras = object(json!({
            "window_start": window.0.to_rfc3339(),
            "window_end": window.1.to_rfc3339(),
        }));
        record
    }

    fn push(&mut self, record: MetadataRecord) {
        self.pending.push_back(record);
        self.n_made += 1;
    }
}

impl Iterator for Generator {
    type Item = MetadataRecord;

    fn next(&mut self) -> Option<MetadataRecord> {
        if self.n_yielded >= self.config.n_records {
            return None;
        }
        while self.pending.is_empty() {
            self.make_run();
        }
        self.n_yielded += 1;
        self.pending.pop_front()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.config.n_records - self.n_yielded;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Generator {}

/// The UTC day before the one holding `t`: the window a daily load covers.
fn day_window(t: Timestamp) -> (Timestamp, Timestamp) {
    let end = t.as_micros().div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY;
    (
        Timestamp::from_micros(end - MICROS_PER_DAY),
        Timestamp::from_micros(end),
    )
}

fn base_columns(target_idx: usize) -> u32 {
    4 + (target_idx % 17) as u32
}

/// The columns of a target's table at a schema version: the base columns
/// (one changes type at every third version) plus one added per version.
fn columns(target_idx: usize, version: u32) -> Value {
    let n_base = base_columns(target_idx);
    let mut cols = Vec::new();
    for col in 0..n_base {
        let mut ty = COLUMN_TYPES[(target_idx + col as usize) % COLUMN_TYPES.len()];
        if version >= 3 && col == (version / 3 * 3) % n_base {
            ty = "VARCHAR2";
        }
        let mut c = json!({"name": format!("col_{col}"), "type": ty, "nullable": col != 0});
        if ty == "DECIMAL" {
            c["precision"] = json!(18);
        }
        cols.push(c);
    }
    for added in 1..=version {
        if added % 3 != 0 {
            cols.push(
                json!({"name": format!("extra_{added}"), "type": "VARCHAR2", "nullable": true}),
            );
        }
    }
    Value::Array(cols)
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::Store;

    fn config(n_records: usize) -> GenConfig {
        GenConfig {
            n_records,
            n_targets: 50,
            days: 60,
            ..GenConfig::default()
        }
    }

    #[test]
    fn same_seed_same_records_other_seed_other_records() {
        let a: Vec<_> = Generator::new(1, config(500)).collect();
        let b: Vec<_> = Generator::new(1, config(500)).collect();
        let c: Vec<_> = Generator::new(2, config(500)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 500);
    }

    #[test]
    fn records_are_in_time_order_within_the_range() {
        let cfg = config(3_000);
        let records: Vec<_> = Generator::new(3, cfg.clone()).collect();
        assert!(records
            .windows(2)
            .all(|w| w[0].produced_at < w[1].produced_at));
        assert!(records[0].produced_at >= cfg.start());
        assert!(records.last().unwrap().produced_at < cfg.end);
    }

    #[test]
    fn every_record_passes_the_store_checks_and_none_is_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let records: Vec<_> = Generator::new(4, config(5_000)).collect();
        for record in &records {
            if let Err(e) = store.check_record(record) {
                panic!("{e}: {}", record.to_json_string());
            }
        }
        let encoded: HashSet<Vec<u8>> = records.iter().map(crate::storage::encode_record).collect();
        assert_eq!(encoded.len(), records.len());
    }

    #[test]
    fn the_mix_looks_like_a_platform() {
        let records: Vec<_> = Generator::new(5, config(20_000)).collect();
        let mut by_kind: HashMap<&str, usize> = HashMap::new();
        let mut outcomes: HashMap<&str, usize> = HashMap::new();
        for r in &records {
            *by_kind.entry(r.kind.as_str()).or_default() += 1;
            if let Some(outcome) = r.payload.get("outcome").and_then(Value::as_str) {
                *outcomes.entry(outcome).or_default() += 1;
            }
        }
        for kind in [
            "ingestion_volume",
            "ingestion_runtime",
            "recon_result",
            "statistics_snapshot",
            "schema_snapshot",
            "catalog_diff",
        ] {
            assert!(by_kind.get(kind).copied().unwrap_or(0) > 0, "no {kind}");
        }
        assert!(outcomes["pass"] > 10 * outcomes["fail"]);
        assert!(outcomes["fail"] > 0 && outcomes["timeout"] > 0 && outcomes["error"] > 0);
        // Skewed volumes: the largest table loads far more than the median.
        let mut rows: Vec<u64> = records
            .iter()
            .filter_map(|r| r.payload.get("rows").and_then(Value::as_u64))
            .collect();
        rows.sort_unstable();
        assert!(rows[rows.len() - 1] > 1_000 * rows[rows.len() / 2]);
        // Every target gets history.
        let targets: HashSet<String> = records.iter().map(|r| r.target_name()).collect();
        assert_eq!(targets.len(), 50);
    }

    #[test]
    fn recon_results_name_ingestion_runs_that_exist() {
        let records: Vec<_> = Generator::new(6, config(5_000)).collect();
        let runs: HashSet<&str> = records
            .iter()
            .filter(|r| r.kind == "ingestion_volume")
            .filter_map(|r| r.context.run_id.as_deref())
            .collect();
        let mut n_linked = 0;
        for r in records.iter().filter(|r| r.kind == "recon_result") {
            for id in r.payload["ingestion_run_ids"].as_array().unwrap() {
                assert!(runs.contains(id.as_str().unwrap()), "{id}");
                n_linked += 1;
            }
        }
        assert!(n_linked > 0);
    }
}
