//! criterion benches of the store's access paths on generated data:
//! `store` (one durable record), `bulk_store` (batches of 10,000), `latest`
//! (with the latest cache, then with it off), `history` (30 days), a
//! selective scan (kind + target + 7 days) and a full scan with a payload
//! filter.
//!
//! The read benches run on a store preloaded with `ALMANAC_BENCH_SIZE`
//! records (default 50,000) from `almanac::testdata`. The query language's
//! benches (parse, prepare, representative queries) are in `benches/query.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use almanac::model::MICROS_PER_DAY;
use almanac::query::ScanRequest;
use almanac::testdata::{GenConfig, Generator, SplitMix64};
use almanac::{MetadataRecord, MetadataRepository, MetadataTarget, Store, StoreOptions, TimeRange};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};
use serde_json::Value;

const SEED: u64 = 42;
const BULK_BATCH: usize = 10_000;

fn size() -> usize {
    std::env::var("ALMANAC_BENCH_SIZE")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(50_000)
}

fn config(n_records: usize) -> GenConfig {
    GenConfig::scaled(n_records)
}

/// A store in a temp dir holding `n_records` generated records.
fn loaded_store(n_records: usize) -> (tempfile::TempDir, Store, GenConfig) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("open store");
    let cfg = config(n_records);
    let records: Vec<MetadataRecord> = Generator::new(SEED, cfg.clone()).collect();
    for batch in records.chunks(BULK_BATCH) {
        store.bulk_store(batch).expect("bulk_store");
    }
    (dir, store, cfg)
}

/// `n` fresh records that no earlier call returned: each call generates a
/// later day, so no record is a duplicate of a stored one.
fn fresh_records(cfg: &GenConfig, n: usize) -> Vec<MetadataRecord> {
    static CALL: AtomicU64 = AtomicU64::new(1);
    let call = CALL.fetch_add(1, Ordering::Relaxed);
    let fresh = GenConfig {
        n_records: n,
        days: 1,
        end: cfg.end.saturating_add_micros(call as i64 * MICROS_PER_DAY),
        ..cfg.clone()
    };
    Generator::new(SEED + call, fresh).collect()
}

fn writes(c: &mut Criterion) {
    let (_dir, store, cfg) = loaded_store(size());
    let mut group = c.benchmark_group("write");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));

    group.throughput(Throughput::Elements(1));
    group.bench_function("store (one durable record)", |b| {
        b.iter_custom(|iters| {
            let records = fresh_records(&cfg, iters as usize);
            let t = Instant::now();
            for r in &records {
                store.store(r).expect("store");
            }
            t.elapsed()
        });
    });

    group.throughput(Throughput::Elements(BULK_BATCH as u64));
    group.bench_function("bulk_store (batch of 10,000)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch = fresh_records(&cfg, BULK_BATCH);
                let t = Instant::now();
                store.bulk_store(&batch).expect("bulk_store");
                total += t.elapsed();
            }
            total
        });
    });
    group.finish();
}

fn reads(c: &mut Criterion) {
    let n = size();
    let (dir, store, cfg) = loaded_store(n);
    let end = cfg.end;
    let mut rng = SplitMix64::new(7);
    let targets: Vec<_> = (0..1_024)
        .map(|_| cfg.target(rng.below(cfg.n_targets as u64) as usize))
        .collect();
    let mut next = 0usize;
    let mut pick = move || {
        next = (next + 1) % targets.len();
        targets[next].clone()
    };

    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(1));
    bench_latest(&mut group, "latest", &store, &mut pick);
    let month = TimeRange::new(end.saturating_add_micros(-30 * MICROS_PER_DAY), end);
    group.bench_function("history (30 days)", |b| {
        b.iter_batched(
            &mut pick,
            |t| {
                store
                    .history(&t, "ingestion_volume", month)
                    .expect("history")
            },
            BatchSize::SmallInput,
        );
    });
    let week = TimeRange::new(end.saturating_add_micros(-7 * MICROS_PER_DAY), end);
    group.bench_function("scan kind + target + 7 days", |b| {
        b.iter_batched(
            &mut pick,
            |t| {
                let request = ScanRequest {
                    kinds: Some(vec!["recon_result".into()]),
                    targets: Some(vec![t.canonical_name()]),
                    time: week,
                    ..ScanRequest::default()
                };
                store
                    .scan(&request)
                    .expect("scan")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("scan rows")
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();

    let mut group = c.benchmark_group("scan");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("full scan, payload.rows > 10^7", |b| {
        b.iter(|| {
            let mut n_found = 0usize;
            for r in store.scan(&ScanRequest::default()).expect("scan") {
                let r = r.expect("scan row");
                if r.record
                    .payload
                    .get("rows")
                    .and_then(Value::as_u64)
                    .is_some_and(|rows| rows > 10_000_000)
                {
                    n_found += 1;
                }
            }
            n_found
        });
    });
    group.finish();

    // `latest` again with the latest cache off (the store reopened without
    // it): what a lookup the cache cannot answer costs.
    drop(store);
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            latest_cache_bytes: 0,
            ..StoreOptions::default()
        },
    )
    .expect("reopen store");
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(1));
    bench_latest(&mut group, "latest (latest cache off)", &store, &mut pick);
    group.finish();
}

/// `latest` of `ingestion_volume` for the targets `pick` gives in turn.
fn bench_latest(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    store: &Store,
    pick: &mut impl FnMut() -> MetadataTarget,
) {
    group.bench_function(name, |b| {
        b.iter_batched(
            &mut *pick,
            |t| store.latest(&t, "ingestion_volume").expect("latest"),
            BatchSize::SmallInput,
        );
    });
}

criterion_group!(benches, writes, reads);
criterion_main!(benches);
