//! Profiling aid: bulk-stores N generated records in batches of 10,000 and
//! prints the time split between preparing (validation, encoding) and the
//! whole call. `cargo run --release --example profile_bulk -- 200000`
//! (knobs: `ALMANAC_PROFILE_DIR`, `ALMANAC_PROFILE_CHECK`, `ALMANAC_PROFILE_SHAPE`, below).
use std::time::Instant;

use almanac::testdata::{GenConfig, Generator};
use almanac::{MetadataRepository, Store};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    // `ALMANAC_PROFILE_DIR=DIR` keeps the store there (for inspecting it).
    let kept = std::env::var_os("ALMANAC_PROFILE_DIR").map(std::path::PathBuf::from);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(kept.as_deref().unwrap_or(dir.path())).expect("open");
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
    // `ALMANAC_PROFILE_CHECK=0` skips the separate check pass (bulk_store only).
    let with_check = std::env::var("ALMANAC_PROFILE_CHECK").map_or(true, |v| v != "0");
    eprintln!("generated {n} records; storing");
    let mut check = std::time::Duration::ZERO;
    let start = Instant::now();
    for batch in records.chunks(10_000) {
        let t = Instant::now();
        if with_check {
            for r in batch {
                store.check_record(r).expect("valid");
            }
        }
        check += t.elapsed();
        store.bulk_store(batch).expect("stored");
    }
    let total = start.elapsed();
    println!(
        "{n} records: {:.0}/s overall; check_record alone {:.1}% of the time",
        n as f64 / (total - check).as_secs_f64(),
        100.0 * check.as_secs_f64() / total.as_secs_f64()
    );
}
