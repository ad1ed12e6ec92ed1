//! Secondary indexes: target, producer, run id and declared payload/extras
//! paths give the same answers as full scans and as a plain filter over the
//! records, and `describe_scan` names the index in use.

mod common;

use almanac::query::{IndexValue, PathConstraint, PathMatch, RecordSource, ScanRequest};
use almanac::{
    Clock, MetadataRecord, MetadataRepository, Store, StoreOptions, StoredRecord, TimeRange,
};
use common::*;
use proptest::prelude::*;
use serde_json::json;

fn open(dir: &std::path::Path) -> Store {
    Store::open_with(
        dir,
        StoreOptions {
            clock: Clock::fixed(ts(BASE + 60 * DAY)),
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn recon(t: usize, hours: i64, outcome: &str, runs: &[&str], window_hours: i64) -> MetadataRecord {
    let mut r = MetadataRecord::new(
        "recon_result",
        target(t),
        object(json!({ "outcome": outcome, "ingestion_run_ids": runs, "observed": hours % 7 })),
        ts(BASE + hours * HOUR),
        if t.is_multiple_of(2) {
            "recon.v1"
        } else {
            "recon.v2"
        },
    );
    r.context.run_id = Some(format!("recon-{}", hours % 5));
    r.extras = object(json!({
        "window_start": ts(BASE + (hours - window_hours) * HOUR).to_rfc3339(),
        "window_end": ts(BASE + hours * HOUR).to_rfc3339(),
    }));
    r
}

fn scan(store: &Store, request: &ScanRequest) -> Vec<StoredRecord> {
    store
        .scan(request)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The same request with and without indexes, and a plain filter, agree.
fn check(store: &Store, all: &[StoredRecord], request: ScanRequest, expected_index: Option<&str>) {
    let with = scan(store, &request);
    let without = scan(
        store,
        &ScanRequest {
            use_indexes: false,
            ..request.clone()
        },
    );
    let names = |v: &Option<Vec<String>>| v.clone();
    let mut plain: Vec<StoredRecord> = all
        .iter()
        .filter(|r| {
            let rec = &r.record;
            request.kinds.as_ref().is_none_or(|k| k.contains(&rec.kind))
                && request.time.contains(rec.produced_at)
                && names(&request.targets).is_none_or(|t| t.contains(&rec.target.canonical_name()))
                && names(&request.producers).is_none_or(|p| p.contains(&rec.producer_id))
                && names(&request.run_ids)
                    .is_none_or(|p| rec.context.run_id.as_ref().is_some_and(|r| p.contains(r)))
                && request.paths.iter().all(|c| c.matches(rec))
        })
        .cloned()
        .collect();
    plain.sort_by_key(|r| (r.record.produced_at, r.id));
    assert_eq!(without, plain, "full scan vs plain filter for {request:?}");
    assert_eq!(with, plain, "indexed scan vs plain filter for {request:?}");
    let described = store.describe_scan(&request).unwrap();
    assert_eq!(described.index.as_deref(), expected_index, "{described:?}");
}

fn outcome_in(values: &[&str]) -> PathConstraint {
    PathConstraint {
        path: "payload.outcome".into(),
        matcher: PathMatch::AnyOf(
            values
                .iter()
                .map(|v| IndexValue::String((*v).into()))
                .collect(),
        ),
    }
}

#[test]
fn declared_paths_are_indexed_and_built_for_existing_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut records = Vec::new();
    for i in 0..300i64 {
        let outcome = ["pass", "pass", "fail", "timeout", "error"][(i % 5) as usize];
        records.push(recon(
            (i % 7) as usize,
            i * 3,
            outcome,
            &[&format!("ing-{}", i % 11)],
            2 + i % 30,
        ));
    }
    // Half stored before the paths are declared, half after.
    store.bulk_store(&records[..150]).unwrap();
    let spec = store.kind("recon_result").unwrap();
    assert!(
        spec.indexed_paths.contains(&"payload.outcome".to_owned()),
        "standard kinds declare it"
    );
    store
        .add_indexed_path("recon_result", "payload.observed")
        .unwrap();
    store.bulk_store(&records[150..]).unwrap();
    let all = scan(&store, &ScanRequest::default());
    assert_eq!(all.len(), 300);

    let kind = Some(vec!["recon_result".to_owned()]);
    check(
        &store,
        &all,
        ScanRequest {
            kinds: kind.clone(),
            paths: vec![outcome_in(&["fail", "timeout"])],
            ..ScanRequest::default()
        },
        Some("payload.outcome"),
    );
    // Arrays are indexed element by element.
    check(
        &store,
        &all,
        ScanRequest {
            paths: vec![PathConstraint {
                path: "payload.ingestion_run_ids".into(),
                matcher: PathMatch::AnyOf(vec![IndexValue::String("ing-3".into())]),
            }],
            ..ScanRequest::default()
        },
        Some("payload.ingestion_run_ids"),
    );
    // A numeric range on the path declared after half the data existed.
    check(
        &store,
        &all,
        ScanRequest {
            kinds: kind.clone(),
            paths: vec![PathConstraint {
                path: "payload.observed".into(),
                matcher: PathMatch::Range {
                    lower: Some((IndexValue::Number(2.0), true)),
                    upper: Some((IndexValue::Number(5.0), false)),
                },
            }],
            ..ScanRequest::default()
        },
        Some("payload.observed"),
    );
    // Windows ending after an instant: a range over instants. Standard
    // kinds summarize windows per partition rather than index them (see
    // tests/store_summaries.rs): the scan reads the partitions whose
    // windows may match and checks each record.
    check(
        &store,
        &all,
        ScanRequest {
            kinds: kind.clone(),
            paths: vec![PathConstraint {
                path: "extras.window_end".into(),
                matcher: PathMatch::Range {
                    lower: Some((IndexValue::Instant(ts(BASE + 500 * HOUR)), false)),
                    upper: None,
                },
            }],
            time: TimeRange::new(ts(BASE), ts(BASE + 700 * HOUR)),
            ..ScanRequest::default()
        },
        None,
    );
    // A run id beats a path; a target beats an equality path.
    check(
        &store,
        &all,
        ScanRequest {
            run_ids: Some(vec!["recon-2".into()]),
            paths: vec![outcome_in(&["pass"])],
            ..ScanRequest::default()
        },
        Some("run_id"),
    );
    check(
        &store,
        &all,
        ScanRequest {
            targets: Some(vec![target(3).canonical_name()]),
            paths: vec![outcome_in(&["pass"])],
            ..ScanRequest::default()
        },
        Some("target"),
    );
    check(
        &store,
        &all,
        ScanRequest {
            producers: Some(vec!["recon.v2".into()]),
            ..ScanRequest::default()
        },
        // Producers have no index: partitions without the producer are
        // skipped by their summaries (tests/store_summaries.rs).
        None,
    );
    check(
        &store,
        &all,
        ScanRequest {
            use_indexes: false,
            producers: Some(vec!["recon.v2".into()]),
            ..ScanRequest::default()
        },
        None,
    );
}

/// A path taken off a kind's indexed paths is no longer indexed: records
/// stored after that, in the same partitions, are found all the same (its
/// index tables must not answer for partitions it no longer covers), and
/// declaring it again builds it afresh over everything.
#[test]
fn a_path_no_longer_indexed_answers_from_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let records: Vec<MetadataRecord> = (0..200i64)
        .map(|i| {
            let outcome = ["pass", "fail", "timeout", "error"][(i % 4) as usize];
            // Two records an hour for 100 hours: the later ones land in the
            // day partitions the earlier ones opened.
            recon((i % 5) as usize, i / 2, outcome, &[], 2)
        })
        .collect();
    let (first, second): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| {
        r.payload
            .get("observed")
            .and_then(|v| v.as_i64())
            .is_some_and(|o| o % 2 == 0)
    });
    store.bulk_store(&first).unwrap();
    let failed = ScanRequest {
        kinds: Some(vec!["recon_result".to_owned()]),
        paths: vec![outcome_in(&["fail"])],
        ..ScanRequest::default()
    };
    let all = scan(&store, &ScanRequest::default());
    check(&store, &all, failed.clone(), Some("payload.outcome"));

    // A path named twice is kept once (and taken off once below).
    let spec = store
        .update_kind("recon_result", |spec| {
            spec.indexed_paths.push("payload.outcome".into())
        })
        .unwrap();
    let named = spec
        .indexed_paths
        .iter()
        .filter(|p| *p == "payload.outcome");
    assert_eq!(named.count(), 1, "{:?}", spec.indexed_paths);
    store
        .update_kind("recon_result", |spec| {
            spec.indexed_paths.retain(|p| p != "payload.outcome")
        })
        .unwrap();
    store.bulk_store(&second).unwrap();
    let all = scan(&store, &ScanRequest::default());
    assert_eq!(all.len(), 200);
    check(&store, &all, failed.clone(), None);
    // The path's tables wait under `purge/` (as expired partitions' do)
    // until the writer, or this call, deletes them.
    store.purge_expired().unwrap();
    assert_eq!(store.purge_pending().unwrap(), 0);

    // Reopened, the same.
    drop(store);
    let store = open(dir.path());
    check(&store, &all, failed.clone(), None);

    store
        .add_indexed_path("recon_result", "payload.outcome")
        .unwrap();
    check(&store, &all, failed, Some("payload.outcome"));
}

/// A kind registered with an indexed path after records of it were stored
/// (open governance) has the path built over those records, so later
/// records in the same partitions do not leave an index of part of them.
#[test]
fn registering_a_kind_indexes_the_records_it_already_has() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let record = |i: i64| {
        let status = ["ok", "bad"][(i % 2) as usize];
        MetadataRecord::new(
            "custom_check",
            target((i % 3) as usize),
            object(json!({ "status": status, "i": i })),
            ts(BASE + i * HOUR),
            "checker",
        )
    };
    store
        .bulk_store(&(0..40).map(record).collect::<Vec<_>>())
        .unwrap();
    let mut spec = almanac::kinds::KindSpec::new("custom_check", "a check");
    spec.indexed_paths = vec!["payload.status".into()];
    store.register_kind(spec).unwrap();
    store
        .bulk_store(&(40..80).map(record).collect::<Vec<_>>())
        .unwrap();
    let all = scan(&store, &ScanRequest::default());
    assert_eq!(all.len(), 80);
    check(
        &store,
        &all,
        ScanRequest {
            kinds: Some(vec!["custom_check".into()]),
            paths: vec![PathConstraint {
                path: "payload.status".into(),
                matcher: PathMatch::AnyOf(vec![IndexValue::String("bad".into())]),
            }],
            ..ScanRequest::default()
        },
        Some("payload.status"),
    );
}

/// Writers store records while a path is declared and dropped again and
/// again: records prepared against one spec and committed after a change
/// must not leave a partition's index short (the change waits for them to
/// commit, then builds over them), nor leave a table behind for a path no
/// longer indexed. Run ending declared, and ending dropped.
#[test]
fn index_changes_during_writes_leave_no_partition_short() {
    for rounds in [15, 16] {
        index_changes_during_writes(rounds);
    }
}

fn index_changes_during_writes(rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(dir.path()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4i64)
        .map(|w| {
            let (store, stop) = (std::sync::Arc::clone(&store), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = w * 100_000;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let outcome = ["pass", "fail"][(n % 2) as usize];
                    if n % 10 == 0 {
                        let batch: Vec<_> = (0..5)
                            .map(|k| recon(k, (n + k as i64) % 200, outcome, &[], 1))
                            .collect();
                        store.bulk_store(&batch).unwrap();
                    } else {
                        let r = recon((n % 9) as usize, n % 200, outcome, &[], 1);
                        store.store(&r).unwrap();
                    }
                }
            })
        })
        .collect();
    for round in 0..rounds {
        std::thread::sleep(std::time::Duration::from_millis(5));
        if round % 2 == 0 {
            store
                .add_indexed_path("recon_result", "payload.observed")
                .unwrap();
        } else {
            store
                .update_kind("recon_result", |spec| {
                    spec.indexed_paths.retain(|p| p != "payload.observed")
                })
                .unwrap();
        }
    }
    // The writers go on for a while after the last change.
    std::thread::sleep(std::time::Duration::from_millis(20));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let declared = rounds % 2 == 1;
    let all = scan(&store, &ScanRequest::default());
    for observed in 0..7 {
        check(
            &store,
            &all,
            ScanRequest {
                kinds: Some(vec!["recon_result".into()]),
                paths: vec![PathConstraint {
                    path: "payload.observed".into(),
                    matcher: PathMatch::AnyOf(vec![IndexValue::Number(f64::from(observed))]),
                }],
                ..ScanRequest::default()
            },
            declared.then_some("payload.observed"),
        );
    }
}

#[test]
fn a_bad_indexed_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = store
        .add_indexed_path("recon_result", "outcome")
        .unwrap_err();
    assert!(err.to_string().contains("payload."), "{err}");
    assert!(err.is_invalid_input());
    assert!(!store
        .kind("recon_result")
        .unwrap()
        .indexed_paths
        .contains(&"outcome".to_owned()));
}

#[test]
fn index_choice_follows_selectivity_and_existence() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let records: Vec<MetadataRecord> = (0..100i64)
        .map(|i| {
            recon(
                (i % 7) as usize,
                i,
                ["pass", "fail"][(i % 2) as usize],
                &["r"],
                1,
            )
        })
        .collect();
    store.bulk_store(&records).unwrap();
    let all = scan(&store, &ScanRequest::default());
    // Many target names (a broad label matcher): the outcome index is one range.
    let many: Vec<String> = (0..70).map(|i| target(i).canonical_name()).collect();
    let request = ScanRequest {
        targets: Some(many),
        paths: vec![outcome_in(&["fail"])],
        ..ScanRequest::default()
    };
    check(&store, &all, request, Some("payload.outcome"));
    // A path no partition indexes is a row filter, not an index.
    let unindexed = PathConstraint {
        path: "payload.observed".into(),
        matcher: PathMatch::Range {
            lower: Some((IndexValue::Number(3.0), true)),
            upper: None,
        },
    };
    check(
        &store,
        &all,
        ScanRequest {
            paths: vec![unindexed],
            ..ScanRequest::default()
        },
        None,
    );
}

fn request_strategy() -> impl Strategy<Value = ScanRequest> {
    (
        proptest::option::of(proptest::sample::subsequence(
            vec!["recon_result", "ingestion_volume"],
            1..=2,
        )),
        proptest::option::of((0..600i64, 1..600i64)),
        proptest::option::of(proptest::sample::subsequence(
            vec![0usize, 1, 2, 3, 4, 5, 6],
            1..3,
        )),
        proptest::option::of(proptest::sample::subsequence(
            vec!["recon.v1", "recon.v2", "ingestion.v1"],
            1..3,
        )),
        proptest::option::of(proptest::sample::subsequence(
            vec!["pass", "fail", "timeout"],
            1..3,
        )),
        any::<bool>(),
    )
        .prop_map(
            |(kinds, time, targets, producers, outcomes, with_run)| ScanRequest {
                kinds: kinds.map(|k| k.into_iter().map(str::to_owned).collect()),
                time: time.map_or(TimeRange::ALL, |(from, len)| {
                    TimeRange::new(ts(BASE + from * HOUR), ts(BASE + (from + len) * HOUR))
                }),
                targets: targets
                    .map(|t| t.into_iter().map(|i| target(i).canonical_name()).collect()),
                producers: producers.map(|p| p.into_iter().map(str::to_owned).collect()),
                run_ids: with_run.then(|| vec!["recon-1".to_owned(), "recon-4".to_owned()]),
                paths: outcomes.map(|o| vec![outcome_in(&o)]).unwrap_or_default(),
                use_indexes: true,
                projection: None,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn indexed_and_full_scans_agree(requests in proptest::collection::vec(request_strategy(), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut records = Vec::new();
        for i in 0..120i64 {
            let outcome = ["pass", "fail", "timeout"][(i % 3) as usize];
            records.push(recon((i % 7) as usize, i * 5, outcome, &["ing-1"], 3));
            records.push(volume((i % 5) as usize, i * 4, i));
        }
        store.bulk_store(&records).unwrap();
        let all = scan(&store, &ScanRequest::default());
        for request in requests {
            let with = scan(&store, &request);
            let without = scan(&store, &ScanRequest { use_indexes: false, ..request.clone() });
            prop_assert_eq!(&with, &without);
            let plain: Vec<&StoredRecord> = all.iter().filter(|r| {
                let rec = &r.record;
                request.kinds.as_ref().is_none_or(|k| k.contains(&rec.kind))
                    && request.time.contains(rec.produced_at)
                    && request.targets.as_ref().is_none_or(|t| t.contains(&rec.target.canonical_name()))
                    && request.producers.as_ref().is_none_or(|p| p.contains(&rec.producer_id))
                    && request.run_ids.as_ref().is_none_or(|p| rec.context.run_id.as_ref().is_some_and(|r| p.contains(r)))
                    && request.paths.iter().all(|c| c.matches(rec))
            }).collect();
            prop_assert_eq!(with.iter().collect::<Vec<_>>(), plain);
        }
    }
}

/// `scan_each` (the stats path: records decoded in place, kinds merged)
/// visits what `scan` yields in the same (`produced_at`, `id`) order,
/// including records of different kinds at the same instant, over several
/// day partitions, with and without a projection.
#[test]
fn scan_each_visits_records_in_scan_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut records = Vec::new();
    for hours in 0..(4 * 24) {
        // Both kinds at the same instant, twice (ties broken by id), and
        // a target or two each time.
        for t in 0..(1 + hours as usize % 3) {
            records.push(volume(t, hours, hours * 10 + t as i64));
            records.push(recon(t, hours, "pass", &["r1"], 2));
            if hours % 5 == 0 {
                records.push(volume(t + 7, hours, 1));
            }
        }
    }
    // Stored newest first, so ids do not follow produced_at.
    records.reverse();
    store.bulk_store(&records).unwrap();
    let mut projected = almanac::query::Projection {
        target: true,
        ..Default::default()
    };
    projected.payload.add(Some("rows"));
    for projection in [None, Some(projected)] {
        let request = ScanRequest {
            projection,
            ..ScanRequest::default()
        };
        let scanned: Vec<(i64, u64)> = scan(&store, &request)
            .iter()
            .map(|r| (r.record.produced_at.as_micros(), r.id))
            .collect();
        let mut visited = Vec::new();
        store
            .scan_each(&request, &mut |r| {
                visited.push((r.record.produced_at.as_micros(), r.id))
            })
            .unwrap();
        assert_eq!(scanned.len(), records.len());
        assert!(scanned.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(visited, scanned);
    }
}
