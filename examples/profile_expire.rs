//! Profiling aid: bulk-loads N generated records (120 days), reopens the
//! store, gives `ingestion_volume` a 30-day retention and expires its first
//! 30 day-partitions, as `benches/compare.rs` does; prints the time.
//! `cargo run --release --example profile_expire -- 200000`
use std::time::Instant;

use almanac::kinds::Retention;
use almanac::testdata::{GenConfig, Generator};
use almanac::{MetadataRepository, Store};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = GenConfig {
        n_records: n,
        ..GenConfig::default()
    };
    let records: Vec<_> = Generator::new(7, config).collect();
    let first = records
        .iter()
        .map(|r| r.produced_at)
        .min()
        .expect("records");
    {
        let store = Store::open(dir.path()).expect("open");
        for batch in records.chunks(10_000) {
            store.bulk_store(batch).expect("stored");
        }
    }
    if std::env::var_os("ALMANAC_PROFILE_COMPACT").is_some() {
        // As the compare bench does before its expiry.
        Store::compact(dir.path()).expect("compacted");
    }
    let store = Store::open(dir.path()).expect("reopen");
    store
        .set_retention("ingestion_volume", Retention::Days(30))
        .expect("retention");
    // The instant at which the first 30 day-partitions are just expired.
    let day = 86_400_000_000i64;
    let first_day = first.as_micros().div_euclid(day) * day;
    let now = almanac::Timestamp::from_micros(first_day + 60 * day);
    eprintln!("loaded {n} records; expiring");
    let t = Instant::now();
    let report = store.apply_retention_at(now, false).expect("expired");
    println!(
        "expired {} records in {} partitions in {:.2} ms",
        report.n_records(),
        report.dropped.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
}
