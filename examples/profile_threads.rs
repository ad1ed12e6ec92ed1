//! Profiling aid: bulk-loads N generated records, then 16 threads each store
//! 100 new records one durable `store` call at a time; prints commits/s and
//! how many redb commits the writer grouped them into.
//! `cargo run --release --example profile_threads -- 200000`
use std::time::Instant;

use almanac::testdata::{GenConfig, Generator};
use almanac::{MetadataRepository, Store};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let (threads, per_thread) = (16, 100);
    // ALMANAC_PROFILE_DIR: a store directory to use instead of a temp dir;
    // if it already holds a store the load is skipped, so a profiler can
    // watch the 16 threads alone. The first run only loads: copy the loaded
    // store afresh for each later run.
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = std::env::var_os("ALMANAC_PROFILE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    let loaded = dir.join("almanac.redb").exists();
    // ALMANAC_PROFILE_CACHE_MB: the page cache (the compare bench's is 1024).
    let mut options = almanac::StoreOptions::default();
    if let Some(mb) = std::env::var("ALMANAC_PROFILE_CACHE_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        options.cache_bytes = mb << 20;
    }
    let store = Store::open_with(&dir, options).expect("open");
    let config = GenConfig {
        n_records: n + threads * per_thread,
        ..GenConfig::default()
    };
    let mut records: Vec<_> = Generator::new(7, config).collect();
    let extra = records.split_off(n);
    if !loaded {
        for batch in records.chunks(10_000) {
            store.bulk_store(batch).expect("stored");
        }
        if dir != temp.path() {
            eprintln!(
                "loaded {n} records into {}; copy it and run again",
                dir.display()
            );
            return;
        }
    }
    let before = store.write_stats();
    eprintln!("loaded {n} records; storing {threads} x {per_thread}");
    let start = Instant::now();
    std::thread::scope(|scope| {
        for part in extra.chunks(per_thread) {
            let store = &store;
            std::thread::Builder::new()
                .name("storer".into())
                .spawn_scoped(scope, move || {
                    for r in part {
                        store.store(r).expect("stored");
                    }
                })
                .expect("thread");
        }
    });
    let elapsed = start.elapsed();
    let after = store.write_stats();
    println!(
        "{} stores: {:.0}/s in {} redb commits ({:.2} ms per commit)",
        threads * per_thread,
        (threads * per_thread) as f64 / elapsed.as_secs_f64(),
        after.n_commits - before.n_commits,
        elapsed.as_secs_f64() * 1e3 / (after.n_commits - before.n_commits) as f64
    );
}
