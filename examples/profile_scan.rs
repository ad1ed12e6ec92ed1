//! Profiling aid: the compare bench's full scan with a payload filter and its
//! `stats` query, on a generated store (built once in DIR, reused after).
//! `cargo run --release --example profile_scan -- DIR [N] [ROUNDS] [full|stats|both|QUERY]`
//! (`ALMANAC_PROFILE_CACHE_MB`: the store's page cache, as the compare
//! bench sets it to 1024; default the store's own default).
use std::time::Instant;

use almanac::query::Params;
use almanac::testdata::{GenConfig, Generator};
use almanac::{MetadataRepository, Store};

const FULL_SCAN: &str = "* | where payload.rows > 50000000";
const STATS: &str = "* | stats count(), avg(payload.rows) by target, bin(produced_at, 1d)";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).map_or("/tmp/profile-scan", String::as_str);
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let which = args.get(4).map_or("both", String::as_str);
    let fresh = !std::path::Path::new(dir).join("almanac.redb").exists();
    let mut options = almanac::StoreOptions::default();
    if let Some(mb) = std::env::var("ALMANAC_PROFILE_CACHE_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        options.cache_bytes = mb << 20;
    }
    let store = Store::open_with(dir, options).expect("open");
    if fresh {
        // The compare bench's data: N/200 targets, 120 days ending 2024-06-01, seed 42.
        let config = GenConfig::scaled(n);
        let records: Vec<_> = Generator::new(42, config).collect();
        for batch in records.chunks(10_000) {
            store.bulk_store(batch).expect("stored");
        }
        eprintln!("built a store of {n} records in {dir}");
    }
    let queries = match which {
        "full" => vec![("full scan", FULL_SCAN)],
        "stats" => vec![("stats", STATS)],
        "both" => vec![("full scan", FULL_SCAN), ("stats", STATS)],
        other => vec![("query", other)],
    };
    for (name, query) in queries {
        for _ in 0..rounds {
            let t = Instant::now();
            let out = store.query(query, &Params::new()).expect("query");
            println!("{name}: {} rows in {:?}", out.rows.len(), t.elapsed());
        }
    }
}
