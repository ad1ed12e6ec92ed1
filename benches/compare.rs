//! Almanac against SQLite (and redb's own floor) on the same generated records.
//!
//! `cargo bench --bench compare` loads the same N records (env
//! `ALMANAC_BENCH_N`, default 1,000,000; `-- --quick` makes it 2,000 for a
//! CI smoke test) into an Almanac store and into one SQLite table, runs the
//! operations of issue 5 on both, checks that both gave the same answers
//! (same counts, same ids) and prints one table: operation, Almanac, SQLite,
//! ratio (> 1 means Almanac is better), the target and whether it was met.
//! Any disagreement between the engines aborts the run: a comparison of
//! different work does not count.
//!
//! The selective query, the full scan and the stats run through the query
//! language on the Almanac side (`MetadataRepository::query`, the product
//! path); their plans are printed on standard error. The import row writes
//! the N records as JSONL and runs this package's `almanac import FILE`
//! (cargo builds the binary with the bench) under `/usr/bin/time -v` for its
//! peak memory.
//!
//! SQLite runs with `journal_mode=WAL`, `synchronous=FULL` (commits as durable
//! as Almanac's), the same 1 GiB page cache as the Almanac store here
//! (`CACHE_BYTES`; Almanac's default is 128 MiB), one table
//! with a column per top-level field, payload and extras as JSON text, an
//! index on (kind, target, produced_at) and one on run_id, and `ANALYZE`
//! after loading. Where Almanac returns records, the SQLite side builds the
//! same `StoredRecord`s from its rows (parsing the JSON columns), so both
//! sides hand the caller the same thing.
//!
//! Other knobs: `ALMANAC_BENCH_DIR` (where the stores go; default a temp
//! dir), `ALMANAC_BENCH_THREADS` (16), `ALMANAC_BENCH_PER_THREAD` (records
//! each thread stores, 100), `ALMANAC_BENCH_WARMUP` (records each thread
//! stores untimed first, 10), `ALMANAC_BENCH_LOOKUPS` (latest lookups, 10,000),
//! `ALMANAC_BENCH_HISTORIES` (history calls, 1,000).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use almanac::kinds::Retention;
use almanac::model::{JsonObject, MICROS_PER_DAY};
use almanac::query::{self, ExecOptions, Params, QueryOutput, Row as QueryRow};
use almanac::testdata::{GenConfig, Generator, SplitMix64, SOURCES};
use almanac::{
    Clock, MetadataContext, MetadataRecord, MetadataRepository, MetadataTarget, Store,
    StoreOptions, StoredRecord, TimeRange, Timestamp,
};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

const SEED: u64 = 42;
const BATCH: usize = 10_000;
/// Kinds the latest lookups ask for.
const LOOKUP_KINDS: [&str; 3] = ["ingestion_volume", "ingestion_runtime", "recon_result"];
/// The SQLite columns a record is rebuilt from, in `row_to_record` order.
const COLS: &str = "id, kind, source_id, schema, table_name, target_extras, payload, produced_at, \
                    producer_id, job_id, run_id, namespace, context_extras, version, quality, extras";
/// `payload.rows` above which the full scan keeps a record (the huge tables).
const BIG_ROWS: i64 = 50_000_000;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> BoxResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child-open-latest") {
        return child_open_latest(&args[1..]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let n = env_usize("ALMANAC_BENCH_N", if quick { 2_000 } else { 1_000_000 });
    let settings = Settings {
        n,
        threads: env_usize("ALMANAC_BENCH_THREADS", 16),
        per_thread: env_usize("ALMANAC_BENCH_PER_THREAD", if quick { 10 } else { 100 }),
        warmup: env_usize("ALMANAC_BENCH_WARMUP", if quick { 2 } else { 10 }),
        lookups: env_usize("ALMANAC_BENCH_LOOKUPS", if quick { 500 } else { 10_000 }),
        histories: env_usize("ALMANAC_BENCH_HISTORIES", if quick { 100 } else { 1_000 }),
        // Day-aligned: 30 days from the start are exactly 30 day partitions.
        config: GenConfig::scaled(n),
    };
    let _tmp;
    let dir = match std::env::var_os("ALMANAC_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            _tmp = tempfile::tempdir()?;
            _tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir)?;
    for stale in [
        "almanac",
        "floor.redb",
        "sqlite.db",
        "sqlite.db-wal",
        "sqlite.db-shm",
        "import.jsonl",
        "import",
    ] {
        let p = dir.join(stale);
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::remove_file(&p);
    }
    run(&settings, &dir)
}

struct Settings {
    n: usize,
    threads: usize,
    per_thread: usize,
    /// Records each thread stores, untimed, before its `per_thread`.
    warmup: usize,
    lookups: usize,
    histories: usize,
    config: GenConfig,
}

/// Notes the start of a phase on standard error, with the machine's load.
fn progress(phase: &str) {
    eprintln!("  {phase} (load average {})", load_average());
}

/// The first three fields of `/proc/loadavg`, or `?` where there is none.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".into())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// One line of the result table.
struct Row {
    operation: String,
    almanac: String,
    sqlite: String,
    /// How many times better Almanac is (> 1: Almanac wins).
    ratio: Option<f64>,
    target: String,
    met: Option<bool>,
}

fn row(operation: &str, almanac: String, sqlite: String, ratio: Option<f64>) -> Row {
    Row {
        operation: operation.to_owned(),
        almanac,
        sqlite,
        ratio,
        target: String::new(),
        met: None,
    }
}

impl Row {
    fn target(mut self, target: &str, met: bool) -> Row {
        self.target = target.to_owned();
        self.met = Some(met);
        self
    }
}

fn check(ok: bool, what: &str) -> BoxResult<()> {
    if ok {
        Ok(())
    } else {
        Err(format!("Almanac and SQLite disagree: {what}").into())
    }
}

fn run(s: &Settings, dir: &Path) -> BoxResult<()> {
    let cfg = &s.config;
    let end = cfg.end;
    eprintln!(
        "compare: N = {} records, {} targets, {} days, in {}",
        s.n,
        cfg.n_targets,
        cfg.days,
        dir.display()
    );
    let mut rows: Vec<Row> = Vec::new();
    let store_dir = dir.join("almanac");
    let sqlite_path = dir.join("sqlite.db");
    let options = || StoreOptions {
        clock: Clock::fixed(end.saturating_add_micros(2 * MICROS_PER_DAY)),
        cache_bytes: CACHE_BYTES,
        ..StoreOptions::default()
    };

    // --- bulk loads -----------------------------------------------------
    let store = Store::open_with(&store_dir, options())?;
    let mut almanac_load = Duration::ZERO;
    let mut next_id = 1u64;
    for batch in batches(SEED, cfg) {
        let t = Instant::now();
        let outcome = store.bulk_store(&batch)?;
        almanac_load += t.elapsed();
        let expected: Vec<u64> = (next_id..next_id + batch.len() as u64).collect();
        check(outcome.ids == expected, "bulk_store ids are not 1..=N")?;
        next_id += batch.len() as u64;
    }
    eprintln!("  almanac bulk_store: {almanac_load:?}");

    let mut db = open_sqlite(&sqlite_path)?;
    create_sqlite_schema(&db)?;
    let mut sqlite_load = Duration::ZERO;
    let mut next_id = 1u64;
    for batch in batches(SEED, cfg) {
        let t = Instant::now();
        let txn = db.transaction()?;
        {
            let mut insert = txn.prepare_cached(INSERT_SQL)?;
            for record in &batch {
                insert_row(&mut insert, next_id, record)?;
                next_id += 1;
            }
        }
        txn.commit()?;
        sqlite_load += t.elapsed();
    }
    eprintln!("  sqlite inserts: {sqlite_load:?}");
    db.execute_batch("ANALYZE")?;
    let n_sqlite: u64 = db.query_row("SELECT count(*) FROM records", [], |r| r.get(0))?;
    let n_almanac: u64 = store.partitions()?.iter().map(|p| p.info.n_records).sum();
    check(
        n_sqlite == s.n as u64 && n_almanac == s.n as u64,
        "record counts after loading",
    )?;

    // The floor is the faster of redb's two ways to append: one
    // `Table::insert` a record, or one cursor at the table's end that
    // buffers the batch and splices whole leaves (what Almanac's writer
    // uses for entries past a table's end).
    let floor_insert = redb_floor(SEED, cfg, &dir.join("floor.redb"), Append::Insert)?;
    let _ = std::fs::remove_file(dir.join("floor.redb"));
    let floor_cursor = redb_floor(SEED, cfg, &dir.join("floor.redb"), Append::Cursor)?;
    let _ = std::fs::remove_file(dir.join("floor.redb"));
    eprintln!("  redb floor: Table::insert {floor_insert:?}, cursor {floor_cursor:?}");
    let (floor_load, floor_how) = if floor_cursor < floor_insert {
        (floor_cursor, "a cursor append")
    } else {
        (floor_insert, "Table::insert")
    };

    let per_sec = |d: Duration| s.n as f64 / d.as_secs_f64();
    rows.push(
        row(
            &format!("bulk_store of N in batches of {BATCH} (records/s)"),
            fmt_rate(per_sec(almanac_load)),
            fmt_rate(per_sec(sqlite_load)),
            Some(sqlite_load.as_secs_f64() / almanac_load.as_secs_f64()),
        )
        .target(
            ">= 3x",
            sqlite_load.as_secs_f64() / almanac_load.as_secs_f64() >= 3.0,
        ),
    );
    let floor_ratio = floor_load.as_secs_f64() / almanac_load.as_secs_f64();
    rows.push(
        row(
            &format!(
                "bulk_store vs bare redb append of the same bytes, by {floor_how} (records/s; SQLite column: redb)"
            ),
            fmt_rate(per_sec(almanac_load)),
            fmt_rate(per_sec(floor_load)),
            Some(floor_ratio),
        )
        .target(">= 0.5x redb", floor_ratio >= 0.5),
    );

    // --- 16 threads, one durable record at a time -----------------------
    progress("concurrent stores");
    // SQLite's threads open new connections; the store they share is
    // opened anew too, not left with the page cache and heap of the load
    // (untimed, like their opening).
    drop(store);
    let store = Store::open_with(&store_dir, options())?;
    let (almanac_conc, sqlite_conc, n_conc, n_commits) = concurrent(s, &store, &sqlite_path)?;
    let ratio = sqlite_conc.as_secs_f64() / almanac_conc.as_secs_f64();
    rows.push(
        row(
            &format!(
                "{} threads x {} single durable stores, after {} each untimed (commits/s; Almanac grouped them into {n_commits} redb commits)",
                s.threads, s.per_thread, s.warmup
            ),
            fmt_rate(n_conc as f64 / almanac_conc.as_secs_f64()),
            fmt_rate(n_conc as f64 / sqlite_conc.as_secs_f64()),
            Some(ratio),
        )
        .target(">= 5x", ratio >= 5.0),
    );

    // --- latest ---------------------------------------------------------
    progress("latest");
    let mut rng = SplitMix64::new(SEED ^ 0x1a7e57);
    let lookups: Vec<(MetadataTarget, &str)> = (0..s.lookups)
        .map(|_| {
            let target = cfg.target(rng.below(cfg.n_targets as u64) as usize);
            let kind = LOOKUP_KINDS[rng.below(LOOKUP_KINDS.len() as u64) as usize];
            (target, kind)
        })
        .collect();
    // A warm-up pass each, then the measured pass.
    for (target, kind) in &lookups {
        store.latest(target, kind)?;
        sqlite_latest(&db, target, kind)?;
    }
    let (mut almanac_times, almanac_ids) = time_lookups(&lookups, |t, k| Ok(store.latest(t, k)?))?;
    let (mut sqlite_times, sqlite_ids) =
        time_lookups(&lookups, |t, k| Ok(sqlite_latest(&db, t, k)?))?;
    check(almanac_ids == sqlite_ids, "latest ids")?;
    let (a, q) = (median(&mut almanac_times), median(&mut sqlite_times));
    let ratio = q.as_secs_f64() / a.as_secs_f64();
    rows.push(
        row(
            &format!(
                "latest(target, kind), median of {} random lookups ({} found)",
                s.lookups,
                almanac_ids.iter().flatten().count()
            ),
            fmt_latency(a),
            fmt_latency(q),
            Some(ratio),
        )
        .target(
            "<= 2 µs and >= 4x",
            a <= Duration::from_micros(2) && ratio >= 4.0,
        ),
    );
    let cache = store.latest_cache_stats();
    eprintln!(
        "  latest cache after the lookups: {} entries, {:.1} MB by its own count (capacity {:.1} MB); \
         {} lookups answered from it, {} not",
        cache.n_entries,
        cache.bytes as f64 / 1e6,
        cache.capacity_bytes as f64 / 1e6,
        cache.n_hits,
        cache.n_misses
    );
    // The same lookups with the latest cache off (the store reopened
    // without it), after a warm-up pass for redb's page cache: what a
    // lookup the cache cannot answer costs (the first of a pair, the first
    // after a commit changed it). Informational: the target row is above.
    drop(store);
    let store = Store::open_with(
        &store_dir,
        StoreOptions {
            latest_cache_bytes: 0,
            ..options()
        },
    )?;
    for (target, kind) in &lookups {
        store.latest(target, kind)?;
    }
    let (mut uncached_times, uncached_ids) =
        time_lookups(&lookups, |t, k| Ok(store.latest(t, k)?))?;
    check(uncached_ids == sqlite_ids, "latest ids, latest cache off")?;
    let u = median(&mut uncached_times);
    rows.push(row(
        "  the same lookups with Almanac's latest cache off (reopened with latest_cache_bytes = 0)",
        fmt_latency(u),
        fmt_latency(q),
        Some(q.as_secs_f64() / u.as_secs_f64()),
    ));
    drop(store);
    let store = Store::open_with(&store_dir, options())?;

    // --- history, 30 days -----------------------------------------------
    // Both sides start with their own caches cold: the store was just
    // reopened, and SQLite's connection, whose page cache has held every
    // page since the load, is reopened here (the OS page cache is warm for
    // both). The first pass is each target's first call on those handles
    // (informational); the measured pass repeats the same calls, as
    // `latest` is measured after a warm-up pass. The queries after this
    // one run on these handles too.
    progress("history");
    drop(db);
    let mut db = open_sqlite(&sqlite_path)?;
    let range = TimeRange::new(end.saturating_add_micros(-30 * MICROS_PER_DAY), end);
    let histories: Vec<MetadataTarget> = (0..s.histories)
        .map(|_| cfg.target(rng.below(cfg.n_targets as u64) as usize))
        .collect();
    let (mut a_cold, a_ids_cold) = time_histories(&histories, |t| {
        Ok(store.history(t, "ingestion_volume", range)?)
    })?;
    let (mut q_cold, q_ids_cold) = time_histories(&histories, |t| {
        Ok(sqlite_history(&db, t, "ingestion_volume", range)?)
    })?;
    check(a_ids_cold == q_ids_cold, "history ids, first calls")?;
    let (mut a_times, a_ids) = time_histories(&histories, |t| {
        Ok(store.history(t, "ingestion_volume", range)?)
    })?;
    let (mut q_times, q_ids) = time_histories(&histories, |t| {
        Ok(sqlite_history(&db, t, "ingestion_volume", range)?)
    })?;
    check(a_ids == q_ids, "history ids")?;
    let n_rows: usize = a_ids.iter().map(Vec::len).sum();
    let (a, q) = (median(&mut a_times), median(&mut q_times));
    let ratio = q.as_secs_f64() / a.as_secs_f64();
    rows.push(
        row(
            &format!(
                "history(target, ingestion_volume, 30 days), median of {} ({:.1} records each), after a first pass over the same targets",
                s.histories,
                n_rows as f64 / s.histories.max(1) as f64
            ),
            fmt_latency(a),
            fmt_latency(q),
            Some(ratio),
        )
        .target(">= 3x", ratio >= 3.0),
    );
    let (a, q_cold) = (median(&mut a_cold), median(&mut q_cold));
    rows.push(row(
        "  the first pass: each target's first call, on the reopened store and a reopened SQLite connection",
        fmt_latency(a),
        fmt_latency(q_cold),
        Some(q_cold.as_secs_f64() / a.as_secs_f64()),
    ));
    let cache = store.history_cache_stats();
    eprintln!(
        "  history cache after the calls: {} partitions copied ({} with their records), \
         {:.1} MB by its own count (capacity {:.1} MB)",
        cache.n_partitions,
        cache.n_with_records,
        cache.bytes as f64 / 1e6,
        cache.capacity_bytes as f64 / 1e6
    );
    // The same calls with the history cache off (the store reopened
    // without it), after a pass of their own for redb's page cache: what
    // a call costs where the partitions are not copied. Informational.
    drop(store);
    let store = Store::open_with(
        &store_dir,
        StoreOptions {
            history_cache_bytes: 0,
            ..options()
        },
    )?;
    time_histories(&histories, |t| {
        Ok(store.history(t, "ingestion_volume", range)?)
    })?;
    let (mut uncached_times, uncached_ids) = time_histories(&histories, |t| {
        Ok(store.history(t, "ingestion_volume", range)?)
    })?;
    check(uncached_ids == q_ids, "history ids, history cache off")?;
    let u = median(&mut uncached_times);
    rows.push(row(
        "  the same calls with Almanac's history cache off (reopened with history_cache_bytes = 0), after a pass of their own",
        fmt_latency(u),
        fmt_latency(q),
        Some(q.as_secs_f64() / u.as_secs_f64()),
    ));
    drop(store);
    let store = Store::open_with(&store_dir, options())?;

    // --- selective query ------------------------------------------------
    progress("selective query");
    {
        let mut params = Params::new();
        params
            .insert_str("source", SOURCES[0].0)
            .insert_instant("from", end.saturating_add_micros(-7 * MICROS_PER_DAY))
            .insert_instant("until", end);
        for (text, params) in [
            (SELECTIVE_QUERY.to_owned(), &params),
            (full_scan_query(), &Params::new()),
            (STATS_QUERY.to_owned(), &Params::new()),
        ] {
            let plan = query::prepare(&text)?.explain(&store, params, &ExecOptions::default())?;
            for line in plan.lines() {
                // The target list of a source label can be thousands of names.
                match line.char_indices().nth(200) {
                    Some((cut, _)) => eprintln!("    {} ...", &line[..cut]),
                    None => eprintln!("    {line}"),
                }
            }
        }
    }
    let (mut a_times, mut q_times, mut n_found) = (Vec::new(), Vec::new(), 0usize);
    for week in 0..4i64 {
        let until = end.saturating_add_micros(-7 * week * MICROS_PER_DAY);
        let range = TimeRange::new(until.saturating_add_micros(-7 * MICROS_PER_DAY), until);
        for (source, _, _) in SOURCES {
            let t = Instant::now();
            let found = almanac_selective(&store, source, range)?;
            a_times.push(t.elapsed());
            let t = Instant::now();
            let expected = sqlite_selective(&db, source, range)?;
            q_times.push(t.elapsed());
            check(ids(&found) == ids(&expected), "selective query ids")?;
            n_found += found.len();
        }
    }
    let n_queries = a_times.len();
    let (a, q) = (median(&mut a_times), median(&mut q_times));
    let ratio = q.as_secs_f64() / a.as_secs_f64();
    rows.push(
        row(
            &format!(
                "selective: recon_result, one source, 7 days, outcome = fail; median of {n_queries} ({:.1} records each)",
                n_found as f64 / n_queries as f64
            ),
            fmt_latency(a),
            fmt_latency(q),
            Some(ratio),
        )
        .target(">= 3x", ratio >= 3.0),
    );

    // --- full scan with a payload filter ----------------------------------
    progress("full scan");
    let (mut a_times, mut q_times) = (Vec::new(), Vec::new());
    let mut n_big = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let found = almanac_full_scan(&store)?;
        a_times.push(t.elapsed());
        let t = Instant::now();
        let expected = sqlite_full_scan(&db)?;
        q_times.push(t.elapsed());
        check(ids(&found) == ids(&expected), "full scan ids")?;
        n_big = found.len();
    }
    let (a, q) = (median(&mut a_times), median(&mut q_times));
    let ratio = q.as_secs_f64() / a.as_secs_f64();
    rows.push(
        row(
            &format!("full scan, payload.rows > {BIG_ROWS}, over all records ({n_big} match), median of 3"),
            fmt_ms(a),
            fmt_ms(q),
            Some(ratio),
        )
        .target(">= 2x", ratio >= 2.0),
    );

    // --- stats by target, 1-day bins --------------------------------------
    progress("stats");
    let (mut a_times, mut q_times) = (Vec::new(), Vec::new());
    let mut n_groups = 0;
    for _ in 0..3 {
        // Timed: each side's answer, as owned rows in the caller's hands.
        // Untimed: turning both into comparable groups (Almanac's bins are
        // RFC 3339 strings, SQLite's day numbers).
        let t = Instant::now();
        let a_output = store.query(STATS_QUERY, &Params::new())?;
        a_times.push(t.elapsed());
        let t = Instant::now();
        let q_rows = sqlite_stats(&db)?;
        q_times.push(t.elapsed());
        let a_groups = almanac_groups(a_output)?;
        let q_groups = sqlite_groups(q_rows);
        check(same_groups(&a_groups, &q_groups), "stats groups")?;
        n_groups = a_groups.len();
    }
    let (a, q) = (median(&mut a_times), median(&mut q_times));
    let ratio = q.as_secs_f64() / a.as_secs_f64();
    rows.push(
        row(
            &format!(
                "stats count(), avg(payload.rows) by target, bin(produced_at, 1d) ({n_groups} groups), median of 3"
            ),
            fmt_ms(a),
            fmt_ms(q),
            Some(ratio),
        )
        .target(">= 2x", ratio >= 2.0),
    );

    // --- size on disk (before expiry) -------------------------------------
    progress("size on disk");
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    let sqlite_size = file_len(&sqlite_path) + file_len(&dir.join("sqlite.db-wal"));
    // At rest, as SQLite's after its checkpoint: while a store is open redb's
    // file holds free space it trims when the database is closed.
    let open_size = store.file_size()?;
    drop(store);
    let store = Store::open_with(&store_dir, options())?;
    let redb_size = store.file_size()?;
    eprintln!(
        "  almanac.redb: {} while open after the loads, {} closed and reopened",
        fmt_bytes(open_size),
        fmt_bytes(redb_size)
    );
    let log_size = dir_size(&store_dir.join("log"));
    let ratio = sqlite_size as f64 / redb_size as f64;
    rows.push(
        row(
            "store size on disk: almanac.redb vs SQLite db + wal after checkpoint",
            fmt_bytes(redb_size),
            fmt_bytes(sqlite_size),
            Some(ratio),
        )
        .target(
            "<= 1.2x SQLite",
            redb_size as f64 <= 1.2 * sqlite_size as f64,
        ),
    );
    rows.push(row(
        "  the same, with Almanac's log/ (JSONL of every record) counted",
        fmt_bytes(redb_size + log_size),
        fmt_bytes(sqlite_size),
        Some(sqlite_size as f64 / (redb_size + log_size) as f64),
    ));

    // --- compaction: `almanac compact` vs VACUUM ---------------------------
    // Both files keep free space from the loads; each engine's own
    // compaction removes it (Almanac's needs the store closed).
    progress("compaction");
    drop(store);
    let t = Instant::now();
    let compacted = Store::compact(&store_dir)?;
    let almanac_compact = t.elapsed();
    let t = Instant::now();
    db.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")?;
    let sqlite_vacuum = t.elapsed();
    let sqlite_vacuumed = file_len(&sqlite_path) + file_len(&dir.join("sqlite.db-wal"));
    let store = Store::open_with(&store_dir, options())?;
    let ratio = sqlite_vacuumed as f64 / compacted.bytes_after as f64;
    rows.push(
        row(
            "store size after compaction: `almanac compact` vs SQLite VACUUM (db + wal)",
            fmt_bytes(compacted.bytes_after),
            fmt_bytes(sqlite_vacuumed),
            Some(ratio),
        )
        .target(
            "<= 1.2x SQLite",
            compacted.bytes_after as f64 <= 1.2 * sqlite_vacuumed as f64,
        ),
    );
    rows.push(row(
        "  time to compact: `Store::compact` vs VACUUM + checkpoint",
        fmt_ms(almanac_compact),
        fmt_ms(sqlite_vacuum),
        Some(sqlite_vacuum.as_secs_f64() / almanac_compact.as_secs_f64()),
    ));

    // --- expiring the oldest 30 days of one kind -------------------------
    progress("expiry");
    let cutoff = cfg.start().saturating_add_micros(30 * MICROS_PER_DAY);
    store.set_retention("ingestion_volume", Retention::Days(30))?;
    let now = cutoff.saturating_add_micros(30 * MICROS_PER_DAY);
    // Each side's commit syncs: the file system's backlog (SQLite's VACUUM
    // and WAL truncation just before) is written out first, untimed, so
    // neither side pays for the other's writes.
    sync_all();
    let t = Instant::now();
    let report = store.apply_retention_at(now, false)?;
    let almanac_expire = t.elapsed();
    sync_all();
    let t = Instant::now();
    let deleted = {
        let txn = db.transaction()?;
        let n = txn.execute(
            "DELETE FROM records WHERE kind = 'ingestion_volume' AND produced_at < ?1",
            params![cutoff.as_micros()],
        )?;
        txn.commit()?;
        n as u64
    };
    let sqlite_expire = t.elapsed();
    check(
        report.n_records() == deleted && deleted > 0,
        &format!(
            "expired rows: Almanac {} in {} partitions, SQLite {deleted}",
            report.n_records(),
            report.dropped.len()
        ),
    )?;
    // The expiry renames the partitions' tables; deleting them (every page
    // visited and freed) follows on the writer thread. Measured until no
    // expired table is left, whoever deletes them.
    let t = Instant::now();
    store.purge_expired()?;
    let almanac_purge = t.elapsed();
    check(
        store.purge_pending()? == 0,
        "expired tables left after purge_expired",
    )?;
    eprintln!(
        "  almanac.redb after the expiry: {} (before: {})",
        fmt_bytes(store.file_size()?),
        fmt_bytes(redb_size)
    );
    let ratio = sqlite_expire.as_secs_f64() / almanac_expire.as_secs_f64();
    rows.push(
        row(
            &format!(
                "expire 30 days of ingestion_volume ({deleted} records, {} partitions)",
                report.dropped.len()
            ),
            fmt_ms(almanac_expire),
            fmt_ms(sqlite_expire),
            Some(ratio),
        )
        .target(">= 50x", ratio >= 50.0),
    );
    rows.push(row(
        "  then deleting the expired tables (writer thread, after the expiry; ratio: SQLite / both)",
        fmt_ms(almanac_purge),
        "-".to_owned(),
        Some(sqlite_expire.as_secs_f64() / (almanac_expire + almanac_purge).as_secs_f64()),
    ));

    // --- open + first latest, in a fresh process -------------------------
    progress("open + first latest");
    let (target, kind) = lookups
        .iter()
        .find(|(t, k)| matches!(store.latest(t, k), Ok(Some(_))))
        .cloned()
        .ok_or("no lookup found a record")?;
    drop(store);
    drop(db);
    let mut a_open = Vec::new();
    let mut q_open = Vec::new();
    let (mut a_id, mut q_id) = (String::new(), String::new());
    for _ in 0..3 {
        let (d, id) = open_latest_child("almanac", &store_dir, &target, kind)?;
        a_open.push(d);
        a_id = id;
        let (d, id) = open_latest_child("sqlite", &sqlite_path, &target, kind)?;
        q_open.push(d);
        q_id = id;
    }
    check(a_id == q_id, "first latest after open")?;
    let (a, q) = (median(&mut a_open), median(&mut q_open));
    rows.push(
        row(
            "open a store of N and answer the first latest (fresh process, median of 3)",
            fmt_latency(a),
            fmt_latency(q),
            Some(q.as_secs_f64() / a.as_secs_f64()),
        )
        .target("<= 50 ms", a <= Duration::from_millis(50)),
    );
    progress("import from JSONL");
    rows.extend(import_rows(s, dir)?);

    println!("{}", render(s, &rows));
    Ok(())
}

/// `almanac import` of the N records as JSONL under `/usr/bin/time -v`: peak
/// memory (maximum resident set size) and the import rate (both passes).
///
/// The binary is the package's own `almanac`, which cargo builds (bench
/// profile: release with debug info) along with this bench.
fn import_rows(s: &Settings, dir: &Path) -> BoxResult<Vec<Row>> {
    const OPERATION: &str = "peak memory while importing N from JSONL (`almanac import FILE`)";
    let time = Path::new("/usr/bin/time");
    if !time.is_file() {
        return Ok(vec![row(
            OPERATION,
            "not measured: no /usr/bin/time".into(),
            "-".into(),
            None,
        )]);
    }
    let cli = Path::new(env!("CARGO_BIN_EXE_almanac"));
    let jsonl = dir.join("import.jsonl");
    let store_dir = dir.join("import");
    {
        use std::io::Write as _;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&jsonl)?);
        for batch in batches(SEED, &s.config) {
            for record in &batch {
                out.write_all(record.to_json_string().as_bytes())?;
                out.write_all(b"\n")?;
            }
        }
        out.flush()?;
    }
    let jsonl_size = file_len(&jsonl);
    let t = Instant::now();
    let out = Command::new(time)
        .arg("-v")
        .arg(cli)
        .arg("--db")
        .arg(&store_dir)
        .arg("import")
        .arg(&jsonl)
        .output()?;
    let elapsed = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("almanac import failed: {stdout}{stderr}").into());
    }
    let expected = format!("stored {} records, skipped 0 duplicates", s.n);
    check(
        stdout.trim() == expected,
        &format!(
            "almanac import printed {:?}, expected {expected:?}",
            stdout.trim()
        ),
    )?;
    let max_rss_kb: u64 = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no maximum resident set size in the output of /usr/bin/time -v")?;
    let _ = std::fs::remove_file(&jsonl);
    let _ = std::fs::remove_dir_all(&store_dir);
    let peak = max_rss_kb * 1024;
    Ok(vec![
        row(
            OPERATION,
            fmt_bytes(peak),
            "-".into(),
            None,
        )
        .target("<= 300 MB", peak <= 300_000_000),
        row(
            &format!(
                "  import rate: {} of JSONL, check pass + store pass, process start to exit (records/s)",
                fmt_bytes(jsonl_size)
            ),
            fmt_rate(s.n as f64 / elapsed.as_secs_f64()),
            "-".into(),
            None,
        ),
    ])
}

/// The generated records in batches of [`BATCH`], made lazily so that N
/// records never sit in memory at once.
fn batches(seed: u64, cfg: &GenConfig) -> impl Iterator<Item = Vec<MetadataRecord>> {
    let mut gen = Generator::new(seed, cfg.clone());
    std::iter::from_fn(move || {
        let batch: Vec<MetadataRecord> = gen.by_ref().take(BATCH).collect();
        (!batch.is_empty()).then_some(batch)
    })
}

/// How the floor appends to its table.
#[derive(Clone, Copy)]
enum Append {
    /// One `Table::insert` a record.
    Insert,
    /// One cursor at the end of the table a batch (`upper_bound_mut`,
    /// `insert_before`): redb buffers the entries and splices whole leaves.
    Cursor,
}

/// redb's floor: the same encoded bytes appended to a bare `u64 -> &[u8]`
/// table in the same batches, one durable commit per batch.
fn redb_floor(seed: u64, cfg: &GenConfig, path: &Path, how: Append) -> BoxResult<Duration> {
    const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("records");
    let db = redb::Database::create(path)?;
    let mut total = Duration::ZERO;
    let mut id = 1u64;
    for batch in batches(seed, cfg) {
        let encoded: Vec<Vec<u8>> = batch.iter().map(almanac::storage::encode_record).collect();
        let t = Instant::now();
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        {
            let mut table = txn.open_table(TABLE)?;
            match how {
                Append::Insert => {
                    for bytes in &encoded {
                        table.insert(id, bytes.as_slice())?;
                        id += 1;
                    }
                }
                Append::Cursor => {
                    let mut cursor = table.upper_bound_mut(std::ops::Bound::<u64>::Unbounded)?;
                    for bytes in &encoded {
                        cursor.insert_before(id, bytes.as_slice())?;
                        id += 1;
                    }
                    cursor.close()?;
                }
            }
        }
        txn.commit()?;
        total += t.elapsed();
    }
    Ok(total)
}

/// `threads` threads each store `per_thread` records one at a time on both
/// engines; returns the elapsed times, the records timed and Almanac's commits.
///
/// Each thread first stores `warmup` records untimed, on either engine; the
/// clock starts once every thread has. The timed part so measures the
/// steady rate of threads that already run, not their start: a new thread's
/// stack and allocator arena are fresh memory, and on this bench's machines
/// memory left idle for a while (here: during the other engine's load and
/// the `sync`) is slow to touch again (see benches/README.md, "The machine").
fn concurrent(
    s: &Settings,
    store: &Store,
    sqlite_path: &Path,
) -> BoxResult<(Duration, Duration, usize, u64)> {
    let per_thread = s.warmup + s.per_thread.max(1);
    let cfg = GenConfig {
        n_records: s.threads * per_thread,
        days: 1,
        end: s.config.end.saturating_add_micros(MICROS_PER_DAY),
        ..s.config.clone()
    };
    let records: Vec<MetadataRecord> = Generator::new(SEED + 1, cfg).collect();
    let chunks: Vec<Vec<MetadataRecord>> = records
        .chunks(per_thread)
        .map(<[MetadataRecord]>::to_vec)
        .collect();
    let n_timed: usize = chunks
        .iter()
        .map(|c| c.len().saturating_sub(s.warmup))
        .sum();
    // Untimed: the loads just before left ~1.5 GB of dirty pages whose
    // writeback would slow whichever side syncs first (this one).
    sync_all();
    // Every thread waits at `warmed` after its warm-up; the main thread
    // too, and the clock starts then.
    let warmed = Arc::new(Barrier::new(chunks.len() + 1));
    let handles: Vec<_> = chunks
        .iter()
        .cloned()
        .map(|chunk| {
            let store = store.clone();
            let warmed = Arc::clone(&warmed);
            let warmup = s.warmup;
            std::thread::spawn(move || -> Result<Vec<u64>, String> {
                let mut gate = Gate(Some(&warmed));
                let store_one = |r: &MetadataRecord| store.store(r).map(|o| o.id);
                let mut ids = Vec::with_capacity(chunk.len());
                let mut records = chunk.iter();
                for r in records.by_ref().take(warmup) {
                    ids.push(store_one(r).map_err(|e| e.to_string())?);
                }
                gate.pass();
                for r in records {
                    ids.push(store_one(r).map_err(|e| e.to_string())?);
                }
                Ok(ids)
            })
        })
        .collect();
    warmed.wait();
    let commits_before = store.write_stats().n_commits;
    let t = Instant::now();
    let mut ids_per_thread = Vec::new();
    for h in handles {
        ids_per_thread.push(h.join().map_err(|_| "store thread panicked")??);
    }
    let almanac = t.elapsed();
    let n_commits = store.write_stats().n_commits - commits_before;

    // SQLite gets each record under the id Almanac gave it, so later answers compare by id.
    sync_all();
    let warmed = Arc::new(Barrier::new(chunks.len() + 1));
    let handles: Vec<_> = chunks
        .into_iter()
        .zip(ids_per_thread)
        .map(|(chunk, ids)| {
            let path = sqlite_path.to_path_buf();
            let warmed = Arc::clone(&warmed);
            let warmup = s.warmup;
            std::thread::spawn(move || -> Result<(), String> {
                let mut gate = Gate(Some(&warmed));
                let db = open_sqlite(&path).map_err(|e| e.to_string())?;
                let mut insert = db.prepare(INSERT_SQL).map_err(|e| e.to_string())?;
                let mut rows = chunk.iter().zip(ids);
                for (record, id) in rows.by_ref().take(warmup) {
                    insert_row(&mut insert, id, record).map_err(|e| e.to_string())?;
                }
                gate.pass();
                for (record, id) in rows {
                    insert_row(&mut insert, id, record).map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .collect();
    warmed.wait();
    let t = Instant::now();
    for h in handles {
        h.join().map_err(|_| "sqlite thread panicked")??;
    }
    let sqlite = t.elapsed();
    Ok((almanac, sqlite, n_timed, n_commits))
}

/// A thread's place at a barrier: taken by `pass`, or when dropped, so a
/// thread that fails before it does not leave the others waiting.
struct Gate<'b>(Option<&'b Barrier>);

impl Gate<'_> {
    fn pass(&mut self) {
        if let Some(barrier) = self.0.take() {
            barrier.wait();
        }
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        self.pass();
    }
}

/// The selective query, in the query language (parameters, not pasted text).
const SELECTIVE_QUERY: &str = "recon_result{source=$source} | between $from .. $until \
                               | where payload.outcome = \"fail\"";

/// The full scan with a payload filter, in the query language.
fn full_scan_query() -> String {
    format!("* | where payload.rows > {BIG_ROWS}")
}

/// The stats of issue 5 over every record (SQLite's GROUP BY has no kind filter either).
const STATS_QUERY: &str = "* | stats count(), avg(payload.rows) by target, bin(produced_at, 1d)";

/// The records of a query's answer, in its order; an error if a row is not a record.
fn records_of(output: QueryOutput) -> BoxResult<Vec<StoredRecord>> {
    output
        .rows
        .into_iter()
        .map(|row| match row {
            QueryRow::Record { record, .. } => Ok(record),
            QueryRow::Values(values) => {
                Err(format!("expected records, the query returned values {values:?}").into())
            }
        })
        .collect()
}

fn almanac_selective(
    store: &Store,
    source: &str,
    range: TimeRange,
) -> BoxResult<Vec<StoredRecord>> {
    let mut params = Params::new();
    params
        .insert_str("source", source)
        .insert_instant("from", range.from)
        .insert_instant("until", range.until);
    records_of(store.query(SELECTIVE_QUERY, &params)?)
}

fn almanac_full_scan(store: &Store) -> BoxResult<Vec<StoredRecord>> {
    records_of(store.query(&full_scan_query(), &Params::new())?)
}

/// `(target, day) -> (count, average of rows or NaN, unused)`.
type Groups = HashMap<(String, i64), (u64, f64, u64)>;

fn almanac_groups(output: QueryOutput) -> BoxResult<Groups> {
    let expected = [
        "target",
        "bin(produced_at, 1d)",
        "count()",
        "avg(payload.rows)",
    ];
    if output.columns != expected {
        return Err(format!("stats columns {:?}, expected {expected:?}", output.columns).into());
    }
    let mut groups = Groups::new();
    for row in output.rows {
        let QueryRow::Values(values) = row else {
            return Err("stats returned a record".into());
        };
        let bad = || format!("unexpected stats row {values:?}");
        let [target, bin, count, avg] = values.as_slice() else {
            return Err(bad().into());
        };
        let target = target.as_str().ok_or_else(bad)?.to_owned();
        let bin = bin
            .as_str()
            .and_then(Timestamp::parse_rfc3339)
            .ok_or_else(bad)?;
        let count = count.as_u64().ok_or_else(bad)?;
        let avg = if avg.is_null() {
            f64::NAN
        } else {
            avg.as_f64().ok_or_else(bad)?
        };
        let key = (target, bin.as_micros().div_euclid(MICROS_PER_DAY));
        if groups.insert(key, (count, avg, 0)).is_some() {
            return Err(bad().into());
        }
    }
    Ok(groups)
}

fn same_groups(a: &Groups, q: &Groups) -> bool {
    a.len() == q.len()
        && a.iter().all(|(key, (count, avg, _))| {
            q.get(key).is_some_and(|(q_count, q_avg, _)| {
                count == q_count
                    && ((avg.is_nan() && q_avg.is_nan())
                        || (avg - q_avg).abs() <= 1e-6 * avg.abs().max(1.0))
            })
        })
}

fn ids(records: &[StoredRecord]) -> Vec<u64> {
    records.iter().map(|r| r.id).collect()
}

// --- SQLite ------------------------------------------------------------------

const INSERT_SQL: &str = "INSERT INTO records (id, kind, source_id, schema, table_name, target, \
    target_extras, payload, produced_at, producer_id, job_id, run_id, namespace, tenant, \
    context_extras, version, quality, extras) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)";

/// The page cache of both engines: the Almanac store (`StoreOptions::cache_bytes`)
/// and every SQLite connection. `almanac import` (the import row) and the
/// open + first `latest` child run with Almanac's default (128 MiB).
const CACHE_BYTES: usize = 1 << 30;

fn open_sqlite(path: &Path) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    db.busy_timeout(Duration::from_secs(60))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    // A negative cache_size is in KiB.
    db.pragma_update(None, "cache_size", -((CACHE_BYTES / 1024) as i64))?;
    Ok(db)
}

fn create_sqlite_schema(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE records (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            source_id TEXT NOT NULL,
            schema TEXT NOT NULL,
            table_name TEXT NOT NULL,
            target TEXT NOT NULL,
            target_extras TEXT NOT NULL,
            payload TEXT NOT NULL,
            produced_at INTEGER NOT NULL,
            producer_id TEXT NOT NULL,
            job_id TEXT,
            run_id TEXT,
            namespace TEXT,
            tenant TEXT,
            context_extras TEXT NOT NULL,
            version INTEGER,
            quality TEXT,
            extras TEXT NOT NULL
        );
        CREATE INDEX records_kind_target_time ON records (kind, target, produced_at);
        CREATE INDEX records_run ON records (run_id);",
    )
}

fn json_text(map: &JsonObject) -> String {
    serde_json::to_string(map).unwrap_or_default()
}

fn insert_row(
    insert: &mut rusqlite::Statement<'_>,
    id: u64,
    r: &MetadataRecord,
) -> rusqlite::Result<()> {
    insert.execute(params![
        id as i64,
        r.kind,
        r.target.source_id,
        r.target.schema,
        r.target.table,
        r.target_name(),
        json_text(&r.target.extras),
        json_text(&r.payload),
        r.produced_at.as_micros(),
        r.producer_id,
        r.context.job_id,
        r.context.run_id,
        r.context.namespace,
        r.context.tenant(),
        json_text(&r.context.extras),
        r.version.map(|v| v as i64),
        r.quality.as_ref().map(Value::to_string),
        json_text(&r.extras),
    ])?;
    Ok(())
}

fn parse_object(text: &str) -> rusqlite::Result<JsonObject> {
    serde_json::from_str(text).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Rebuilds the stored record from a row selected with [`COLS`].
fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRecord> {
    let quality: Option<String> = row.get(14)?;
    let record = MetadataRecord {
        kind: row.get(1)?,
        target: MetadataTarget {
            source_id: row.get(2)?,
            schema: row.get(3)?,
            table: row.get(4)?,
            extras: parse_object(&row.get::<_, String>(5)?)?,
        },
        payload: parse_object(&row.get::<_, String>(6)?)?,
        produced_at: Timestamp::from_micros(row.get(7)?),
        producer_id: row.get(8)?,
        context: MetadataContext {
            job_id: row.get(9)?,
            run_id: row.get(10)?,
            namespace: row.get(11)?,
            extras: parse_object(&row.get::<_, String>(12)?)?,
        },
        version: row.get::<_, Option<i64>>(13)?.map(|v| v as u64),
        quality: quality.and_then(|q| serde_json::from_str(&q).ok()),
        extras: parse_object(&row.get::<_, String>(15)?)?,
    };
    Ok(StoredRecord {
        id: row.get::<_, i64>(0)? as u64,
        record,
    })
}

fn sqlite_latest(
    db: &Connection,
    target: &MetadataTarget,
    kind: &str,
) -> rusqlite::Result<Option<StoredRecord>> {
    let mut stmt = db.prepare_cached(&format!(
        "SELECT {COLS} FROM records WHERE kind = ?1 AND target = ?2 \
         ORDER BY produced_at DESC, id DESC LIMIT 1"
    ))?;
    stmt.query_row(params![kind, target.canonical_name()], row_to_record)
        .optional()
}

fn sqlite_history(
    db: &Connection,
    target: &MetadataTarget,
    kind: &str,
    range: TimeRange,
) -> rusqlite::Result<Vec<StoredRecord>> {
    let mut stmt = db.prepare_cached(&format!(
        "SELECT {COLS} FROM records WHERE kind = ?1 AND target = ?2 \
         AND produced_at >= ?3 AND produced_at < ?4 ORDER BY produced_at, id"
    ))?;
    let rows = stmt.query_map(
        params![
            kind,
            target.canonical_name(),
            range.from.as_micros(),
            range.until.as_micros()
        ],
        row_to_record,
    )?;
    rows.collect()
}

fn sqlite_selective(
    db: &Connection,
    source: &str,
    range: TimeRange,
) -> rusqlite::Result<Vec<StoredRecord>> {
    let mut stmt = db.prepare_cached(&format!(
        "SELECT {COLS} FROM records WHERE kind = 'recon_result' AND source_id = ?1 \
         AND produced_at >= ?2 AND produced_at < ?3 \
         AND json_extract(payload, '$.outcome') = 'fail' ORDER BY produced_at, id"
    ))?;
    let rows = stmt.query_map(
        params![source, range.from.as_micros(), range.until.as_micros()],
        row_to_record,
    )?;
    rows.collect()
}

fn sqlite_full_scan(db: &Connection) -> rusqlite::Result<Vec<StoredRecord>> {
    let mut stmt = db.prepare_cached(&format!(
        "SELECT {COLS} FROM records WHERE json_extract(payload, '$.rows') > ?1 \
         ORDER BY produced_at, id"
    ))?;
    let rows = stmt.query_map(params![BIG_ROWS], row_to_record)?;
    rows.collect()
}

/// `(target, day, count, average of rows)` per group, as SQLite returns them.
type SqliteGroupRow = (String, i64, i64, Option<f64>);

fn sqlite_stats(db: &Connection) -> rusqlite::Result<Vec<SqliteGroupRow>> {
    let mut stmt = db.prepare_cached(
        "SELECT target, produced_at / 86400000000 AS day, count(*), \
         avg(json_extract(payload, '$.rows')) FROM records GROUP BY target, day",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
    })?;
    rows.collect()
}

fn sqlite_groups(rows: Vec<SqliteGroupRow>) -> Groups {
    rows.into_iter()
        .map(|(target, day, count, avg)| {
            ((target, day), (count as u64, avg.unwrap_or(f64::NAN), 0))
        })
        .collect()
}

// --- open + first latest in a child process -----------------------------------

fn open_latest_child(
    engine: &str,
    path: &Path,
    target: &MetadataTarget,
    kind: &str,
) -> BoxResult<(Duration, String)> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--child-open-latest", engine])
        .arg(path)
        .args([&target.source_id, &target.schema, &target.table, kind])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "child for {engine} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8(out.stdout)?;
    let mut words = text.split_whitespace();
    let nanos: u64 = words.next().ok_or("child printed nothing")?.parse()?;
    let id = words.next().unwrap_or("none").to_owned();
    Ok((Duration::from_nanos(nanos), id))
}

/// `--child-open-latest ENGINE PATH SOURCE SCHEMA TABLE KIND`: opens the
/// store and answers one `latest`; prints the nanoseconds that took and the id.
fn child_open_latest(args: &[String]) -> BoxResult<()> {
    let [engine, path, source, schema, table, kind, ..] = args else {
        return Err("usage: --child-open-latest ENGINE PATH SOURCE SCHEMA TABLE KIND".into());
    };
    let target = MetadataTarget::new(source, schema, table);
    // Timed up to the answer: closing (redb writes its allocator state and
    // syncs on close; SQLite checkpoints) is not part of the row.
    let t = Instant::now();
    let (id, elapsed) = match engine.as_str() {
        "almanac" => {
            let store = Store::open(path)?;
            let id = store.latest(&target, kind)?.map(|r| r.id);
            (id, t.elapsed())
        }
        _ => {
            let db = Connection::open(path)?;
            let id = sqlite_latest(&db, &target, kind)?.map(|r| r.id);
            (id, t.elapsed())
        }
    };
    match id {
        Some(id) => println!("{} {id}", elapsed.as_nanos()),
        None => println!("{} none", elapsed.as_nanos()),
    }
    Ok(())
}

// --- output --------------------------------------------------------------------

/// Times each `latest` lookup on its own; the ids found, in order.
fn time_lookups(
    lookups: &[(MetadataTarget, &str)],
    mut latest: impl FnMut(&MetadataTarget, &str) -> BoxResult<Option<StoredRecord>>,
) -> BoxResult<(Vec<Duration>, Vec<Option<u64>>)> {
    let mut times = Vec::with_capacity(lookups.len());
    let mut ids = Vec::with_capacity(lookups.len());
    for (target, kind) in lookups {
        let t = Instant::now();
        let found = latest(target, kind)?;
        times.push(t.elapsed());
        ids.push(found.map(|r| r.id));
    }
    Ok((times, ids))
}

/// Times one `history` call per target; returns the times and each answer's ids.
fn time_histories(
    targets: &[MetadataTarget],
    mut history: impl FnMut(&MetadataTarget) -> BoxResult<Vec<StoredRecord>>,
) -> BoxResult<(Vec<Duration>, Vec<Vec<u64>>)> {
    let mut times = Vec::with_capacity(targets.len());
    let mut found_ids = Vec::with_capacity(targets.len());
    for target in targets {
        let t = Instant::now();
        let found = history(target)?;
        times.push(t.elapsed());
        found_ids.push(ids(&found));
    }
    Ok((times, found_ids))
}

fn median(times: &mut [Duration]) -> Duration {
    if times.is_empty() {
        return Duration::ZERO;
    }
    times.sort_unstable();
    times[times.len() / 2]
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn fmt_rate(per_sec: f64) -> String {
    let n = per_sec.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out}/s")
}

fn fmt_latency(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.2} µs")
    } else {
        format!("{:.2} ms", us / 1_000.0)
    }
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn fmt_bytes(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1e6)
}

fn render(s: &Settings, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nN = {} records ({} targets, {} days); ratio > 1 means Almanac is better; \
         load average at the end: {}\n",
        s.n,
        s.config.n_targets,
        s.config.days,
        load_average()
    );
    let _ = writeln!(
        out,
        "| operation | Almanac | SQLite | ratio | target | met |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|---|");
    for r in rows {
        let ratio = r.ratio.map_or("-".to_owned(), |x| format!("{x:.2}x"));
        let met = match r.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.operation, r.almanac, r.sqlite, ratio, r.target, met
        );
    }
    out
}

/// Writes out every file system's dirty data (`sync(1)`; untimed). Where
/// the command is missing, nothing happens.
fn sync_all() {
    let _ = std::process::Command::new("sync").status();
}
