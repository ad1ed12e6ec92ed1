//! Partition summaries (`KindSpec::summarized_paths`): a scan with a range
//! or equality on a summarized path skips the partitions whose smallest and
//! largest values there cannot match, and answers exactly as a full scan
//! and a plain filter do, whatever the kind's summarized paths were when
//! each record was written.

mod common;

use almanac::kinds::{KindSpec, Retention};
use almanac::query::{IndexValue, PathConstraint, PathMatch, RecordSource, ScanRequest};
use almanac::{
    Clock, MetadataRecord, MetadataRepository, Store, StoreOptions, StoredRecord, TimeRange,
};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

fn open(dir: &std::path::Path, now: i64) -> Store {
    Store::open_with(
        dir,
        StoreOptions {
            clock: Clock::fixed(ts(now)),
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

/// An `ingestion_volume` record `hours` after BASE whose window is the
/// `lag` hours before it (none when `lag` is negative).
fn windowed(t: usize, hours: i64, lag: i64) -> MetadataRecord {
    let mut r = volume(t, hours, hours);
    if lag >= 0 {
        r.extras = object(json!({
            "window_start": ts(BASE + (hours - lag - 6) * HOUR).to_rfc3339(),
            "window_end": ts(BASE + (hours - lag) * HOUR).to_rfc3339(),
        }));
    }
    r
}

fn scan(store: &Store, request: &ScanRequest) -> Vec<StoredRecord> {
    store
        .scan(request)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The request with and without indexes and summaries, and a plain filter
/// over every record, agree; returns how many partitions the summaries
/// skipped beyond what the kinds and time range do.
fn check(store: &Store, request: &ScanRequest) -> usize {
    let all = scan(store, &ScanRequest::default());
    let mut plain: Vec<StoredRecord> = all
        .into_iter()
        .filter(|r| {
            request
                .kinds
                .as_ref()
                .is_none_or(|k| k.contains(&r.record.kind))
                && request.time.contains(r.record.produced_at)
                && request
                    .producers
                    .as_ref()
                    .is_none_or(|p| p.contains(&r.record.producer_id))
                && request.paths.iter().all(|c| c.matches(&r.record))
        })
        .collect();
    plain.sort_by_key(|r| (r.record.produced_at, r.id));
    let with = scan(store, request);
    let without = scan(
        store,
        &ScanRequest {
            use_indexes: false,
            ..request.clone()
        },
    );
    assert_eq!(without, plain, "full scan vs plain filter for {request:?}");
    assert_eq!(
        with, plain,
        "summarized scan vs plain filter for {request:?}"
    );
    let pruned = store.describe_scan(request).unwrap().partitions_pruned;
    let by_time = store
        .describe_scan(&ScanRequest {
            paths: Vec::new(),
            producers: None,
            ..request.clone()
        })
        .unwrap()
        .partitions_pruned;
    pruned - by_time
}

fn path(path: &str, matcher: PathMatch) -> PathConstraint {
    PathConstraint {
        path: path.into(),
        matcher,
    }
}

fn instant(hours: i64) -> IndexValue {
    IndexValue::Instant(ts(BASE + hours * HOUR))
}

#[test]
fn window_queries_skip_partitions_and_answer_as_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), BASE + 100 * DAY);
    let spec = store.kind("ingestion_volume").unwrap();
    assert_eq!(
        spec.summarized_paths,
        ["extras.window_start", "extras.window_end"]
    );
    assert!(spec.indexed_paths.is_empty());
    // 30 days of hourly loads; most windows end 0-4 hours before the load,
    // a few days later (a backfill), some loads have no window.
    let records: Vec<MetadataRecord> = (0..30 * 24)
        .map(|h| {
            let lag = match h % 97 {
                0 => 24 * 9,
                1 | 2 => -1,
                _ => h % 5,
            };
            windowed((h % 13) as usize, h, lag)
        })
        .collect();
    for batch in records.chunks(100) {
        store.bulk_store(batch).unwrap();
    }
    // A few more one at a time, into partitions that exist.
    for h in [5, 200, 201, 650] {
        store.store(&windowed(3, h, 1)).unwrap();
    }
    let kind = Some(vec!["ingestion_volume".to_owned()]);
    // One day's windows: most partitions are skipped.
    let day = ScanRequest {
        kinds: kind.clone(),
        paths: vec![
            path(
                "extras.window_start",
                PathMatch::Range {
                    lower: Some((instant(10 * 24), true)),
                    upper: None,
                },
            ),
            path(
                "extras.window_end",
                PathMatch::Range {
                    lower: None,
                    upper: Some((instant(11 * 24), false)),
                },
            ),
        ],
        ..ScanRequest::default()
    };
    let skipped = check(&store, &day);
    assert!(skipped >= 25, "only {skipped} of 30 partitions skipped");
    let described = store.describe_scan(&day).unwrap();
    assert_eq!(described.index, None, "{described:?}");
    // An equality on an instant, and a range with the time range too.
    assert!(
        check(
            &store,
            &ScanRequest {
                kinds: kind.clone(),
                paths: vec![path(
                    "extras.window_end",
                    PathMatch::AnyOf(vec![instant(15 * 24 + 3)])
                )],
                ..ScanRequest::default()
            }
        ) >= 25
    );
    check(
        &store,
        &ScanRequest {
            kinds: kind.clone(),
            time: TimeRange::new(ts(BASE + 5 * DAY), ts(BASE + 20 * DAY)),
            paths: vec![path(
                "extras.window_end",
                PathMatch::Range {
                    lower: Some((instant(12 * 24), false)),
                    upper: Some((instant(14 * 24), true)),
                },
            )],
            ..ScanRequest::default()
        },
    );
    // A bound of another type matches no instant: every partition skipped.
    check(
        &store,
        &ScanRequest {
            kinds: kind.clone(),
            paths: vec![path(
                "extras.window_end",
                PathMatch::Range {
                    lower: Some((IndexValue::Number(0.0), true)),
                    upper: None,
                },
            )],
            ..ScanRequest::default()
        },
    );

    // Random bounds against the plain filter.
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    let bound = (-24i64..32 * 24, any::<bool>());
    let strategy = (
        prop::option::of(bound.clone()),
        prop::option::of(bound),
        any::<bool>(),
        prop::option::of((0i64..30, 1i64..10)),
    );
    runner
        .run(&strategy, |(lower, upper, on_start, days)| {
            let p = if on_start {
                "extras.window_start"
            } else {
                "extras.window_end"
            };
            let matcher = PathMatch::Range {
                lower: lower.map(|(h, inc)| (instant(h), inc)),
                upper: upper.map(|(h, inc)| (instant(h), inc)),
            };
            let time = days.map_or(TimeRange::ALL, |(from, n)| {
                TimeRange::new(ts(BASE + from * DAY), ts(BASE + (from + n) * DAY))
            });
            check(
                &store,
                &ScanRequest {
                    kinds: kind.clone(),
                    time,
                    paths: vec![path(p, matcher)],
                    ..ScanRequest::default()
                },
            );
            Ok(())
        })
        .unwrap();
}

fn reading(day: i64, value: i64) -> MetadataRecord {
    MetadataRecord::new(
        "reading",
        target((day % 3) as usize),
        object(json!({ "v": value })),
        ts(BASE + day * DAY + HOUR * (value % 20)),
        "sensor",
    )
}

fn above(v: f64) -> ScanRequest {
    ScanRequest {
        kinds: Some(vec!["reading".to_owned()]),
        paths: vec![path(
            "payload.v",
            PathMatch::Range {
                lower: Some((IndexValue::Number(v), true)),
                upper: None,
            },
        )],
        ..ScanRequest::default()
    }
}

/// Records written while the kind did not summarize the path, or while it
/// summarized it no more, are never skipped wrongly: a partition that had
/// records before its summary could start stays unknown, and one written
/// without the path loses its summary.
#[test]
fn summaries_follow_the_kinds_paths_as_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), BASE + 100 * DAY);
    let mut spec = KindSpec::new("reading", "a value per day");
    spec.retention = Retention::Days(40);
    store.register_kind(spec).unwrap();
    // Days 0-4 before the path is summarized.
    let early: Vec<_> = (0..5).map(|d| reading(d, 10 * d)).collect();
    store.bulk_store(&early).unwrap();
    store
        .update_kind("reading", |s| s.summarized_paths = vec!["payload.v".into()])
        .unwrap();
    // Days 3-8 after: days 3 and 4 had records, so they stay unknown.
    let later: Vec<_> = (3..9).map(|d| reading(d, 10 * d + 1)).collect();
    store.bulk_store(&later).unwrap();
    // Days 5-8 were new, so summarized: 51, 61, 71, 81. Days 0-4 are not.
    assert_eq!(check(&store, &above(65.0)), 2, "days 5 and 6");
    // Unsummarized again: new records in summarized partitions, with
    // values beyond their ranges, take the summaries away.
    store
        .update_kind("reading", |s| s.summarized_paths.clear())
        .unwrap();
    store.store(&reading(5, 500)).unwrap();
    store.store(&reading(6, 600)).unwrap();
    store
        .update_kind("reading", |s| s.summarized_paths = vec!["payload.v".into()])
        .unwrap();
    store.store(&reading(7, 700)).unwrap();
    let skipped = check(&store, &above(450.0));
    // Days 5 and 6 are unknown now (a summary kept there would skip 500
    // and 600); day 7 holds 71 and 700; only day 8 (81) is skipped.
    assert_eq!(skipped, 1);
    assert_eq!(scan(&store, &above(450.0)).len(), 3);

    // Retention at the clock's now (day 100) drops every partition (days
    // 0-8); buckets written again start afresh, without the old ranges.
    let report = store.apply_retention().unwrap();
    assert_eq!(report.dropped.len(), 9);
    let again: Vec<_> = (5..8).map(|d| reading(d, 2)).collect();
    store.bulk_store(&again).unwrap();
    assert_eq!(check(&store, &above(1.0)), 0);
    assert_eq!(check(&store, &above(3.0)), 3);
}

/// Through the query language: `overlaps` and `where` on windows become
/// path constraints, the summaries skip partitions (`explain` counts
/// them), and the rows equal those of the same query without indexes.
#[test]
fn window_stages_of_the_query_language_skip_partitions() {
    use almanac::query::{self, ExecOptions, Params};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), BASE + 100 * DAY);
    let records: Vec<MetadataRecord> = (0..20 * 24)
        .map(|h| windowed((h % 5) as usize, h, h % 3))
        .collect();
    store.bulk_store(&records).unwrap();
    let from = ts(BASE + 10 * DAY).to_rfc3339();
    let until = ts(BASE + 10 * DAY + 6 * HOUR).to_rfc3339();
    for q in [
        format!("ingestion_volume | overlaps {from} .. {until}"),
        format!("ingestion_volume | where extras.window_end > {from} and extras.window_start < {until} | select produced_at"),
        format!("* | where extras.window_end = {until} | stats count()"),
    ] {
        let prepared = query::prepare(&q).unwrap();
        let run = |use_indexes: bool| {
            let options = ExecOptions {
                now: ts(BASE + 100 * DAY),
                use_indexes,
            };
            prepared.run(&store, &Params::new(), &options).unwrap()
        };
        let (with, without) = (run(true), run(false));
        assert_eq!(with.rows, without.rows, "{q}");
        assert!(!with.rows.is_empty(), "{q}");
        let options = ExecOptions {
            now: ts(BASE + 100 * DAY),
            use_indexes: true,
        };
        let text = prepared.explain(&store, &Params::new(), &options).unwrap();
        assert!(
            text.contains("read, 19 pruned") || text.contains("read, 18 pruned"),
            "{q}\n{text}"
        );
    }
}

/// Producers have no index: each partition's summary lists its producers,
/// and a scan for some skips the partitions that hold none of them.
#[test]
fn producer_scans_skip_partitions_without_the_producer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), BASE + 100 * DAY);
    let by = |producer: &str, day: i64, t: usize| {
        let mut r = windowed(t, day * 24 + t as i64, 1);
        r.producer_id = producer.into();
        r
    };
    let mut records: Vec<_> = (0..5)
        .flat_map(|d| (0..3).map(move |t| (d, t)))
        .map(|(d, t)| by("ingestion.a", d, t))
        .collect();
    records.extend(
        (3..9)
            .flat_map(|d| (0..3).map(move |t| (d, t)))
            .map(|(d, t)| by("ingestion.b", d, t)),
    );
    store.bulk_store(&records).unwrap();
    // One at a time too: a producer new to an existing partition.
    store.store(&by("ingestion.c", 7, 5)).unwrap();
    let producers = |names: &[&str]| ScanRequest {
        producers: Some(names.iter().map(|n| (*n).to_owned()).collect()),
        ..ScanRequest::default()
    };
    assert_eq!(check(&store, &producers(&["ingestion.a"])), 4, "days 5-8");
    assert_eq!(check(&store, &producers(&["ingestion.b"])), 3, "days 0-2");
    assert_eq!(
        check(&store, &producers(&["ingestion.c"])),
        8,
        "all but day 7"
    );
    assert_eq!(
        check(&store, &producers(&["ingestion.a", "ingestion.c"])),
        3
    );
    assert_eq!(check(&store, &producers(&["nobody"])), 9);
    assert_eq!(scan(&store, &producers(&["ingestion.c"])).len(), 1);
    let described = store.describe_scan(&producers(&["ingestion.a"])).unwrap();
    assert_eq!(described.index, None, "{described:?}");
}
