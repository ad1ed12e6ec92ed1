//! Profiling aid: median latency of `history` (one target, `ingestion_volume`,
//! the last 30 days) over random targets of a generated store shaped like the
//! compare bench's (N / 200 targets, 120 days).
//! `cargo run --release --example profile_history -- 200000`
use std::time::Instant;

use almanac::model::MICROS_PER_DAY;
use almanac::testdata::{GenConfig, Generator};
use almanac::{MetadataRepository, Store, TimeRange};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("open");
    let config = GenConfig::scaled(n);
    let records: Vec<_> = Generator::new(7, config.clone()).collect();
    for batch in records.chunks(10_000) {
        store.bulk_store(batch).expect("stored");
    }
    // Freed now, not at exit, so a profile of the calls below does not
    // end with glibc consolidating the million records' freed blocks.
    drop(records);
    let range = TimeRange::new(
        config.end.saturating_add_micros(-30 * MICROS_PER_DAY),
        config.end,
    );
    let targets: Vec<_> = (0..1_000)
        .map(|i| config.target(i * 7919 % config.n_targets))
        .collect();
    for target in &targets {
        store
            .history(target, "ingestion_volume", range)
            .expect("history");
    }
    let mut times = Vec::with_capacity(targets.len());
    let mut n_found = 0;
    for target in &targets {
        let t = Instant::now();
        let found = store
            .history(target, "ingestion_volume", range)
            .expect("history");
        times.push(t.elapsed());
        n_found += found.len();
    }
    times.sort();
    // Repeat the calls (unmeasured) so a profiler sees mostly `history`.
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for _ in 0..rounds {
        for target in &targets {
            std::hint::black_box(
                store
                    .history(target, "ingestion_volume", range)
                    .expect("history"),
            );
        }
    }
    println!(
        "history: median {:?}, p90 {:?} over {} calls ({:.1} records each)",
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        times.len(),
        n_found as f64 / times.len() as f64
    );
}
