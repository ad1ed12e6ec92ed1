//! criterion benches of the query language: parsing, preparing (parse +
//! name resolution + plan), and representative queries run end to end on a
//! store of generated records (`ALMANAC_BENCH_SIZE`, default 50,000, from
//! `almanac::testdata`), each through the store's indexes as a service
//! would run them (`PreparedQuery::run` with parameters bound).
//!
//! `cargo bench --bench query` (add `-- parse` etc. to pick a group).

use std::time::Duration;

use almanac::query::{self, ExecOptions, Params};
use almanac::testdata::{GenConfig, Generator};
use almanac::{MetadataRecord, MetadataRepository as _, Store};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SEED: u64 = 42;

/// The query texts parsed and prepared: the spec's examples, from short to
/// long, plus one with parameters.
const TEXTS: [(&str, &str); 6] = [
    ("source + latest", r#"recon_result{schema="itcftth", table="srv_cfsver_ct_main"} | latest"#),
    ("filter", r#"recon_result | since 7d | where producer_id = "recon.v2" and payload.outcome in ("fail", "timeout")"#),
    ("stats", r#"recon_result | since 30d | stats countif(payload.outcome = "fail") as failures, count() as checks by target"#),
    ("window", "ingestion_volume | window avg(payload.rows) as mean7, stddev(payload.rows) as sd7 by target rows -7 .. -1 | where payload.rows > mean7 + 3 * sd7"),
    ("select", r#"schema_snapshot{source=~"pg_.*"} | latest by target | select target, len(payload.columns) as columns"#),
    ("params", "recon_result{source=$source} | between $from .. $until | where payload.outcome = $outcome"),
];

fn size() -> usize {
    std::env::var("ALMANAC_BENCH_SIZE")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(50_000)
}

fn language(c: &mut Criterion) {
    let mut group = c.benchmark_group("language");
    group.throughput(Throughput::Elements(1));
    for (name, text) in TEXTS {
        group.bench_function(format!("parse: {name}"), |b| {
            b.iter(|| query::parse(text).expect("parses"));
        });
    }
    for (name, text) in TEXTS {
        group.bench_function(format!("prepare: {name}"), |b| {
            b.iter(|| query::prepare(text).expect("prepares"));
        });
    }
    group.finish();
}

fn queries(c: &mut Criterion) {
    let n = size();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("open store");
    let cfg = GenConfig::scaled(n);
    let records: Vec<MetadataRecord> = Generator::new(SEED, cfg.clone()).collect();
    for batch in records.chunks(10_000) {
        store.bulk_store(batch).expect("bulk_store");
    }
    let table = cfg.target(0).table;
    // `now` is the end of the generated history, so `since 7d` finds rows.
    let options = ExecOptions {
        now: cfg.end,
        use_indexes: true,
    };
    let runs: Vec<(&str, String)> = vec![
        (
            "one source's recon failures per table and day, 30 days",
            r#"recon_result{source="oracle_prod"} | since 30d | where payload.outcome = "fail" | stats count() as failures by target, bin(produced_at, 1d) as day"#.to_owned(),
        ),
        ("latest volume of every table", "ingestion_volume | latest".to_owned()),
        (
            "one table's volumes, 30 days",
            format!(r#"ingestion_volume{{table="{table}"}} | since 30d"#),
        ),
        (
            "timeouts in 7 days, top 10 tables",
            r#"recon_result | since 7d | where payload.outcome = "timeout" | stats count() as timeouts by target | sort timeouts desc | limit 10"#.to_owned(),
        ),
        (
            "last schema change of every table",
            "catalog_diff | latest by target".to_owned(),
        ),
        (
            "one source's volumes, 7 days, p95 per day",
            r#"ingestion_volume{source="oracle_prod"} | since 7d | stats percentile(payload.rows, 95) as p95 by bin(produced_at, 1d) as day"#.to_owned(),
        ),
    ];
    let mut group = c.benchmark_group("query");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for (name, text) in &runs {
        let prepared = query::prepare(text).expect("prepares");
        let rows = prepared
            .run(&store, &Params::new(), &options)
            .expect("runs")
            .rows
            .len();
        assert!(
            rows > 0,
            "`{text}` finds nothing: the bench would measure nothing"
        );
        group.bench_function(*name, |b| {
            b.iter(|| {
                prepared
                    .run(&store, &Params::new(), &options)
                    .expect("runs")
                    .rows
                    .len()
            });
        });
    }
    group.finish();
    drop(store);
}

criterion_group!(benches, language, queries);
criterion_main!(benches);
