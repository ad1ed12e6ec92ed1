//! Profiling aid: median latency of `latest` over random targets of a
//! generated store. `cargo run --release --example profile_latest -- 200000`
//! (knobs: `ALMANAC_PROFILE_SHAPE=bench`, `ALMANAC_PROFILE_LATEST_CACHE`
//! (bytes; 0 turns the latest cache off), `ROUNDS`, below).
use std::time::Instant;

use almanac::testdata::{GenConfig, Generator};
use almanac::{MetadataRepository, Store, StoreOptions};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("temp dir");
    // `ALMANAC_PROFILE_LATEST_CACHE=0` turns the latest cache off, so every
    // lookup walks redb's b-tree (as the first lookup of a pair does).
    let options = match std::env::var("ALMANAC_PROFILE_LATEST_CACHE") {
        Ok(bytes) => StoreOptions {
            latest_cache_bytes: bytes.parse().expect("ALMANAC_PROFILE_LATEST_CACHE: bytes"),
            ..StoreOptions::default()
        },
        Err(_) => StoreOptions::default(),
    };
    let store = Store::open_with(dir.path(), options).expect("open");
    // `ALMANAC_PROFILE_SHAPE=bench` shapes the data like the compare
    // bench's (N / 200 targets, 120 days) instead of 1,000 targets, 90 days.
    let config = if std::env::var("ALMANAC_PROFILE_SHAPE").is_ok_and(|v| v == "bench") {
        GenConfig::scaled(n)
    } else {
        GenConfig {
            n_records: n,
            ..GenConfig::default()
        }
    };
    let records: Vec<_> = Generator::new(7, config).collect();
    for batch in records.chunks(10_000) {
        store.bulk_store(batch).expect("stored");
    }
    let probes: Vec<_> = records.iter().step_by(97).take(10_000).collect();
    // A warm-up pass, as in the compare bench: the measured pass then finds
    // the pages in redb's cache.
    for r in &probes {
        std::hint::black_box(store.latest(&r.target, &r.kind).expect("latest"));
    }
    let mut times = Vec::with_capacity(probes.len());
    let mut found = 0;
    for r in &probes {
        let t = Instant::now();
        let latest = store.latest(&r.target, &r.kind).expect("latest");
        times.push(t.elapsed());
        found += usize::from(latest.is_some());
    }
    times.sort();
    // Repeat the lookups (unmeasured) so a profiler sees mostly `latest`.
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for _ in 0..rounds {
        for r in &probes {
            std::hint::black_box(store.latest(&r.target, &r.kind).expect("latest"));
        }
    }
    println!(
        "latest: median {:?}, p90 {:?} over {} lookups ({found} found)",
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        times.len()
    );
    let cache = store.latest_cache_stats();
    println!(
        "latest cache: {} entries, {} bytes; {} lookups answered from it, {} not",
        cache.n_entries, cache.bytes, cache.n_hits, cache.n_misses
    );
}
