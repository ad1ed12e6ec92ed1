//! The query language on the real store: every query gives the same rows on
//! the store with indexes, the store scanning partitions, and the in-memory
//! reference source; `explain` shows the access path the store chose.

mod common;

use almanac::query::{
    self, ExecOptions, MemorySource, Params, QueryOutput, RecordSource, ScanRequest,
};
use almanac::{Clock, MetadataRecord, MetadataRepository, Store, StoreOptions, StoredRecord};
use common::*;
use serde_json::json;

const NOW: i64 = BASE + 90 * DAY;

fn dataset() -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    let mut state = 7u64;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    for day in 0..90i64 {
        for t in 0..12usize {
            let source = ["pg_main", "oracle_prod", "pg_dwh"][t % 3];
            let table = format!("t{t}");
            let at = BASE + day * DAY + (t as i64) * HOUR;
            let rows = if next(10) == 0 {
                None
            } else {
                Some(next(1_000_000) as i64)
            };
            let mut v = MetadataRecord::new(
                "ingestion_volume",
                almanac::MetadataTarget::new(source, "sales", &table),
                object(match rows {
                    Some(r) => json!({ "rows": r, "bytes": r * 40 }),
                    None => json!({ "bytes": 0 }),
                }),
                ts(at),
                "ingestion.v1",
            );
            let run = format!("run-{day}-{t}");
            v.context.run_id = Some(run.clone());
            v.context.job_id = Some(format!("load_{table}"));
            v.extras = object(json!({
                "window_start": ts(at - DAY).to_rfc3339(),
                "window_end": ts(at).to_rfc3339(),
            }));
            if rows.is_none() {
                // `rows` is required by the ingestion_volume schema: file these
                // under an unregistered kind, which takes any payload.
                v.kind = "ingestion_note".into();
            }
            out.push(v);
            let outcome = ["pass", "pass", "pass", "fail", "timeout", "error"][next(6) as usize];
            let mut r = MetadataRecord::new(
                "recon_result",
                almanac::MetadataTarget::new(source, "sales", &table),
                object(
                    json!({ "outcome": outcome, "observed": next(100), "threshold": 50, "ingestion_run_ids": [run] }),
                ),
                ts(at + HOUR),
                if next(2) == 0 { "recon.v1" } else { "recon.v2" },
            );
            r.context.run_id = Some(format!("recon-{day}-{t}"));
            let tenant = ["acme", "globex"][t % 2];
            r.context.extras = object(json!({ "tenant": tenant }));
            out.push(r);
        }
    }
    out
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    memory: MemorySource,
}

fn fixture() -> Fixture {
    fixture_of(&dataset())
}

/// A store holding `records` (with the clock at `NOW`), and the reference
/// source holding what it stored.
fn fixture_of(records: &[MetadataRecord]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            clock: Clock::fixed(ts(NOW)),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    store.bulk_store(records).unwrap();
    let all: Vec<StoredRecord> = store
        .scan(&ScanRequest::default())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    Fixture {
        _dir: dir,
        store,
        memory: MemorySource::new(all),
    }
}

fn run(source: &dyn RecordSource, text: &str, params: &Params, use_indexes: bool) -> QueryOutput {
    let options = ExecOptions {
        now: ts(NOW),
        use_indexes,
    };
    query::prepare(text)
        .unwrap_or_else(|e| panic!("{}", e.render(text)))
        .run(source, params, &options)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

const QUERIES: &[&str] = &[
    r#"recon_result{schema="sales", table="t3"} | latest"#,
    r#"ingestion_volume{table="t3"} | since 30d"#,
    "ingestion_volume | overlaps 2024-03-10 .. 2024-03-20 | where payload.rows > 0",
    r#"recon_result | since 7d | where producer_id = "recon.v2" and payload.outcome in ("fail", "timeout")"#,
    r#"recon_result | since 30d | stats countif(payload.outcome = "fail") as failures, count() as checks by target"#,
    r#"recon_result{source=~"pg_.*"} | latest by target | select target, payload.outcome"#,
    "ingestion_volume | window avg(payload.rows) as mean7, stddev(payload.rows) as sd7 by target rows -7 .. -1 | where payload.rows > mean7 + 3 * sd7",
    r#"recon_result | window countif(payload.outcome = "timeout") as streak by target rows -2 .. 0 | where streak = 3 | latest by target"#,
    "ingestion_volume | stats percentile(payload.rows, 95) as p95 by bin(produced_at, 1d) as day",
    r#"* {run_id="run-3-4"}"#,
    r#"* {tenant="acme", producer!="recon.v1"} | between 2024-04-01 .. 2024-04-08 | sort produced_at desc | limit 5"#,
    r#"ingestion_volume{source="oracle_prod"} | since 2024-05-01 | where payload.rows >= 500000 | stats count(), avg(payload.rows), min(payload.rows), max(payload.rows)"#,
    r#"recon_result{target!~"oracle.*"} | until 2024-03-05 | extend gap = payload.observed - payload.threshold | select target, gap"#,
    "ingestion_volume, recon_result | latest",
    "ingestion_note | latest by target",
    "recon_result | latest by target",
    "* | latest by target, kind",
    "* | latest by target",
    r#"recon_result | where payload.outcome = "pass" | stats count() by producer_id"#,
    r#"recon_result | where payload.outcome in ("fail", "error") and payload.observed >= 40 | stats count() by target"#,
    "recon_result | where payload.observed < 20 or payload.observed > 90 | stats count()",
    "recon_result | where 10 >= payload.observed | select target, payload.observed",
    "ingestion_volume | where extras.window_end > 2024-05-01T00:00:00Z and extras.window_end <= 2024-05-03",
    r#"ingestion_volume | where extras.window_end = "2024-04-01T03:00:00Z""#,
    "ingestion_volume | overlaps 2024-05-01 .. 2024-05-02 | stats count() by target",
    "ingestion_volume | where extras.window_end >= 2024-05-01T00:30:00Z and extras.window_end < 2024-05-01T05:30:00Z",
    "ingestion_volume | where extras.window_start > 2024-05-01T02:30:00+02:00 | limit 3",
    // `stats` over the store's reused-record scan: label filters, `extend`
    // and `where` before it, order-sensitive aggregates, stages after it.
    r#"*{producer=~"rec.*"} | extend r = payload.observed * 2 | where r > 10 | stats count(), sum(r), first(target), last(kind), count_distinct(target) by kind, bin(produced_at, 7d)"#,
    "* | stats count() as n, avg(payload.rows) as a, min(produced_at), max(target) by target, bin(produced_at, 1d) as day | where n > 1 | limit 7",
    r#"*{schema!="sales"} | stats count(), avg(payload.observed), stddev(payload.rows) by payload.outcome, context.run_id"#,
];

#[test]
fn store_with_and_without_indexes_agrees_with_the_reference() {
    let f = fixture();
    let params = Params::new();
    for text in QUERIES {
        let indexed = run(&f.store, text, &params, true);
        let scanned = run(&f.store, text, &params, false);
        let reference = run(&f.memory, text, &params, true);
        assert_eq!(indexed, reference, "indexed store vs reference: {text}");
        assert_eq!(scanned, reference, "scanning store vs reference: {text}");
    }
}

#[test]
fn queries_that_select_rows_are_not_vacuous() {
    // Guards the comparison above: most queries must return something.
    let f = fixture();
    let non_empty = QUERIES
        .iter()
        .filter(|q| !run(&f.store, q, &Params::new(), true).rows.is_empty())
        .count();
    assert!(
        non_empty >= QUERIES.len() - 2,
        "only {non_empty} of {} queries returned rows",
        QUERIES.len()
    );
}

#[test]
fn parameters_bind_values_not_query_text() {
    let f = fixture();
    let prepared = query::prepare(
        r#"recon_result{table=$table} | where payload.outcome = $outcome | stats count()"#,
    )
    .unwrap();
    let options = ExecOptions {
        now: ts(NOW),
        use_indexes: true,
    };
    let mut params = Params::new();
    params.insert_str("table", "t1");
    params.insert_str("outcome", "fail");
    let a = prepared.run(&f.store, &params, &options).unwrap();
    params.insert_str("table", r#"t1"} | where true | stats count() //"#);
    let b = prepared.run(&f.store, &params, &options).unwrap();
    assert_ne!(a, b);
    assert_eq!(b.rows.len(), 1, "an injected string is only a value: {b:?}");
    params = Params::new();
    params.insert_str("table", "t1");
    let err = prepared.run(&f.store, &params, &options).unwrap_err();
    assert!(err.to_string().contains("outcome"), "{err}");
}

#[test]
fn explain_shows_partition_pruning_and_the_index() {
    let f = fixture();
    let options = ExecOptions {
        now: ts(NOW),
        use_indexes: true,
    };
    let text = r#"recon_result{table="t3"} | since 7d | where payload.outcome = "fail""#;
    let plan = query::prepare(text)
        .unwrap()
        .explain(&f.store, &Params::new(), &options)
        .unwrap();
    assert!(plan.contains("target"), "{plan}");
    assert!(plan.contains("recon_result/"), "{plan}");
    assert!(plan.contains("pruned"), "{plan}");
}

#[test]
fn explain_shows_a_path_index_for_a_payload_filter() {
    let f = fixture();
    let options = ExecOptions {
        now: ts(NOW),
        use_indexes: true,
    };
    let text = r#"recon_result | where payload.outcome in ("fail", "timeout")"#;
    let plan = query::prepare(text)
        .unwrap()
        .explain(&f.store, &Params::new(), &options)
        .unwrap();
    assert!(plan.contains("payload.outcome"), "{plan}");
    let scan = query::prepare(text).unwrap();
    let with = scan.run(&f.store, &Params::new(), &options).unwrap();
    let without = scan
        .run(
            &f.store,
            &Params::new(),
            &ExecOptions {
                use_indexes: false,
                ..options
            },
        )
        .unwrap();
    assert_eq!(with, without);
    assert!(!with.rows.is_empty());
}

#[test]
fn the_repository_query_uses_the_store_clock() {
    let f = fixture();
    let out = f
        .store
        .query("recon_result | since 1d | stats count()", &Params::new())
        .unwrap();
    assert_eq!(out.rows.len(), 1);
    let err = f
        .store
        .query("recon_result | where rows > 1", &Params::new())
        .unwrap_err();
    assert!(err.is_invalid_input());
    assert!(err.to_string().contains("payload.rows"), "{err}");
}

/// Two targets whose canonical names are equal (`pg:sales.eu.orders` is
/// (`pg`, `sales`, `eu.orders`) and (`pg`, `sales.eu`, `orders`)) stay two
/// targets: `latest` and `history` of each, and label matchers, see only
/// its records, with indexes, without, and in the reference source; the
/// `target` field (the canonical name) is one value for both, so `latest`
/// by it keeps the newer of the two.
#[test]
fn targets_whose_canonical_names_collide_stay_apart() {
    let dotted_table = almanac::MetadataTarget::new("pg", "sales", "eu.orders");
    let dotted_schema = almanac::MetadataTarget::new("pg", "sales.eu", "orders");
    assert_eq!(
        dotted_table.canonical_name(),
        dotted_schema.canonical_name()
    );
    let record = |target: &almanac::MetadataTarget, day: i64, rows: i64| {
        let mut r = volume(0, day * 24, rows);
        r.target = target.clone();
        r
    };
    let records = vec![
        record(&dotted_table, 1, 100),
        record(&dotted_schema, 2, 999),
        record(&dotted_table, 3, 101),
        record(&dotted_schema, 4, 1000),
        record(&dotted_table, 5, 102),
    ];
    let Fixture {
        _dir,
        store,
        memory,
    } = fixture_of(&records);
    let ids_of = |target: &almanac::MetadataTarget| -> Vec<u64> {
        store
            .history(target, "ingestion_volume", almanac::TimeRange::ALL)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(ids_of(&dotted_table), [1, 3, 5]);
    assert_eq!(ids_of(&dotted_schema), [2, 4]);
    let latest = |target| {
        store
            .latest(target, "ingestion_volume")
            .unwrap()
            .unwrap()
            .id
    };
    assert_eq!(latest(&dotted_table), 5);
    assert_eq!(latest(&dotted_schema), 4);

    let ids = |out: &QueryOutput| -> Vec<u64> {
        out.rows
            .iter()
            .map(|r| match r {
                query::Row::Record { record, .. } => record.id,
                other => panic!("a record row: {other:?}"),
            })
            .collect()
    };
    for (text, expected) in [
        (r#"ingestion_volume{schema="sales.eu"}"#, vec![2, 4]),
        (
            r#"ingestion_volume{schema="sales", table="eu.orders"}"#,
            vec![1, 3, 5],
        ),
        (r#"ingestion_volume{table="orders"} | latest"#, vec![4]),
        (
            r#"ingestion_volume{table="eu.orders"} | latest by target"#,
            vec![5],
        ),
        (
            r#"ingestion_volume{target="pg:sales.eu.orders"}"#,
            vec![1, 2, 3, 4, 5],
        ),
        ("ingestion_volume | latest", vec![5]),
        ("ingestion_volume | latest by target", vec![5]),
        ("ingestion_volume | latest by target.schema", vec![4, 5]),
    ] {
        for (source, use_indexes) in [
            (&store as &dyn RecordSource, true),
            (&store as &dyn RecordSource, false),
            (&memory as &dyn RecordSource, true),
        ] {
            let out = run(source, text, &Params::new(), use_indexes);
            assert_eq!(ids(&out), expected, "{text} (indexes: {use_indexes})");
        }
    }
}
