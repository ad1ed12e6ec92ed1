//! Scans that read whole partitions of several kinds walk each kind on a
//! thread of its own (`storage::read::parallel_scan`, `scan_each_parallel`);
//! a scan that tests paths on the bytes walks each kind on one thread and
//! decodes what passes on a second.
//! They must yield exactly what one thread would: the same records in the
//! same (`produced_at`, `id`) order, through `scan`, `scan_each` and the
//! query language, and stop their threads when dropped early.

use almanac::model::MICROS_PER_DAY;
use almanac::query::{Params, RecordSource, ScanRequest};
use almanac::testdata::{GenConfig, Generator};
use almanac::{Clock, MetadataRecord, MetadataRepository, Store, StoreOptions};

const N: usize = 12_000;

/// The tests count this process's scan threads: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn generated() -> (tempfile::TempDir, Store, Vec<MetadataRecord>) {
    generated_with(true)
}

fn generated_with(parallel_scans: bool) -> (tempfile::TempDir, Store, Vec<MetadataRecord>) {
    let config = GenConfig {
        n_records: N,
        n_targets: 300,
        days: 60,
        ..GenConfig::default()
    };
    let end = config.end;
    let records: Vec<_> = Generator::new(11, config).collect();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            clock: Clock::fixed(end.saturating_add_micros(MICROS_PER_DAY)),
            parallel_scans,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    for batch in records.chunks(5_000) {
        store.bulk_store(batch).unwrap();
    }
    (dir, store, records)
}

/// Ids 1..=N were assigned in input order: the expected scan order is the
/// input sorted by (`produced_at`, id).
fn expected_ids(records: &[MetadataRecord], keep: impl Fn(&MetadataRecord) -> bool) -> Vec<u64> {
    let mut keyed: Vec<(i64, u64)> = records
        .iter()
        .zip(1u64..)
        .filter(|(r, _)| keep(r))
        .map(|(r, id)| (r.produced_at.as_micros(), id))
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, id)| id).collect()
}

/// The names of this process's threads (Linux), to see the scan threads.
fn scan_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "almanac-scan")
        .count()
}

/// A full scan (its first id, then the rest) yields every record in
/// (`produced_at`, id) order, and `scan_each` (what `stats` reads through)
/// visits the same, in the same order.
fn check_every_record_in_order<E: std::fmt::Debug>(
    store: &Store,
    first: u64,
    rest: impl Iterator<Item = Result<almanac::StoredRecord, E>>,
    records: &[MetadataRecord],
) {
    let mut ids = vec![first];
    ids.extend(rest.map(|r| r.unwrap().id));
    assert_eq!(ids, expected_ids(records, |_| true));
    let mut each = Vec::new();
    store
        .scan_each(&ScanRequest::default(), &mut |r| each.push(r.id))
        .unwrap();
    assert_eq!(each, ids);
}

#[test]
fn a_scan_on_threads_yields_every_record_in_order() {
    let _one_at_a_time = serial();
    let (_dir, store, records) = generated();
    let mut scan = store.scan(&ScanRequest::default()).unwrap();
    let first = scan.next().unwrap().unwrap();
    if cfg!(target_os = "linux") && std::thread::available_parallelism().map_or(1, |n| n.get()) > 1
    {
        assert!(scan_threads() >= 2, "the scan runs on its own threads");
    }
    check_every_record_in_order(&store, first.id, scan, &records);
}

#[test]
fn queries_on_threads_answer_as_a_filter_over_all_records() {
    let _one_at_a_time = serial();
    let (_dir, store, records) = generated();
    let rows = |r: &MetadataRecord| r.payload.get("rows").and_then(|v| v.as_i64());
    let threshold = 1_000_000;
    let out = store
        .query(
            &format!("* | where payload.rows > {threshold}"),
            &Params::new(),
        )
        .unwrap();
    let ids: Vec<u64> = out
        .rows
        .iter()
        .map(|row| match row {
            almanac::query::Row::Record { record, .. } => record.id,
            other => panic!("expected records, got {other:?}"),
        })
        .collect();
    let expected = expected_ids(&records, |r| rows(r).is_some_and(|n| n > threshold));
    assert!(!expected.is_empty());
    assert_eq!(ids, expected);

    // stats: the count per kind equals a plain count.
    let out = store
        .query("* | stats count() by kind", &Params::new())
        .unwrap();
    let mut counts: Vec<(String, u64)> = out
        .rows
        .iter()
        .map(|row| match row {
            almanac::query::Row::Values(v) => {
                (v[0].as_str().unwrap().to_owned(), v[1].as_u64().unwrap())
            }
            other => panic!("expected values, got {other:?}"),
        })
        .collect();
    counts.sort();
    let mut plain = std::collections::BTreeMap::<String, u64>::new();
    for r in &records {
        *plain.entry(r.kind.clone()).or_default() += 1;
    }
    assert_eq!(counts, plain.into_iter().collect::<Vec<_>>());
}

#[test]
fn a_scan_dropped_early_stops_its_threads_and_the_store_goes_on() {
    let _one_at_a_time = serial();
    let (_dir, store, records) = generated();
    let taken: Vec<u64> = store
        .scan(&ScanRequest::default())
        .unwrap()
        .take(3)
        .map(|r| r.unwrap().id)
        .collect();
    assert_eq!(taken, expected_ids(&records, |_| true)[..3]);
    // The threads notice the drop at their next row and end.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while scan_threads() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(scan_threads(), 0, "scan threads still running");
    let mut again = records[0].clone();
    again.payload.insert("note".into(), "after the scan".into());
    let stored = store.store(&again).unwrap();
    assert!(!stored.duplicate);
    let n = store.scan(&ScanRequest::default()).unwrap().count();
    assert_eq!(n, N + 1);
}

#[test]
fn with_parallel_scans_off_every_scan_stays_on_the_calling_thread() {
    let _one_at_a_time = serial();
    let (_dir, store, records) = generated_with(false);
    let mut scan = store.scan(&ScanRequest::default()).unwrap();
    let first = scan.next().unwrap().unwrap();
    assert_eq!(scan_threads(), 0, "no scan threads when they are off");
    check_every_record_in_order(&store, first.id, scan, &records);
}

/// `payload.rows >= threshold`, as a scan request's path constraint.
fn rows_at_least(threshold: f64) -> almanac::storage::PathConstraint {
    almanac::storage::PathConstraint {
        path: "payload.rows".into(),
        matcher: almanac::storage::PathMatch::Range {
            lower: Some((almanac::storage::IndexValue::Number(threshold), true)),
            upper: None,
        },
    }
}

#[test]
fn a_scan_testing_paths_on_threads_yields_what_one_thread_does() {
    let _one_at_a_time = serial();
    let (_dir, store, records) = generated();
    let rows = |r: &MetadataRecord| r.payload.get("rows").and_then(|v| v.as_f64());
    let producer = records[17].producer_id.clone();
    for (threshold, producers) in [
        (0.0, None),
        (1_000_000.0, None),
        (1_000_000.0, Some(vec![producer.clone()])),
        (f64::MAX, None),
    ] {
        let request = ScanRequest {
            paths: vec![rows_at_least(threshold)],
            producers: producers.clone(),
            ..ScanRequest::default()
        };
        let got: Vec<almanac::StoredRecord> =
            store.scan(&request).unwrap().map(|r| r.unwrap()).collect();
        let expected = expected_ids(&records, |r| {
            rows(r).is_some_and(|n| n >= threshold)
                && producers
                    .as_ref()
                    .is_none_or(|p| p.contains(&r.producer_id))
        });
        let ids: Vec<u64> = got.iter().map(|r| r.id).collect();
        assert_eq!(
            ids, expected,
            "rows >= {threshold}, producers {producers:?}"
        );
        // Whole records, as stored.
        for r in &got {
            assert_eq!(r.record, records[(r.id - 1) as usize], "record {}", r.id);
        }
    }
}

#[test]
fn a_scan_testing_paths_dropped_early_stops_its_threads() {
    let _one_at_a_time = serial();
    let (_dir, store, records, request) = changing_pass_rate();
    let mut scan = store.scan(&request).unwrap();
    let taken: Vec<u64> = (&mut scan).take(200).map(|r| r.unwrap().id).collect();
    if threads_expected() {
        // The decoding threads run too when the scan is dropped.
        assert!(scan_threads() > 2, "{} scan threads", scan_threads());
    }
    drop(scan);
    assert_eq!(
        taken,
        expected_ids(&records, |r| r.payload["v"] == 1000)[..200]
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while scan_threads() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(scan_threads(), 0, "scan threads still running");
}

/// Two kinds over 120 days, 160 records a day each, whose `payload.v` is
/// 1000 for one record in twenty, and for all of them from day 12 to 23:
/// the share of rows passing `payload.v >= 1000` goes from few to all and
/// back to few for long enough to fill batches again.
fn changing_pass_rate() -> (tempfile::TempDir, Store, Vec<MetadataRecord>, ScanRequest) {
    const DAY: i64 = MICROS_PER_DAY;
    let start = 1_709_251_200_000_000; // 2024-03-01
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            clock: Clock::fixed(almanac::Timestamp::from_micros(start + 200 * DAY)),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let mut records = Vec::new();
    for day in 0..120i64 {
        for i in 0..160i64 {
            for kind in ["check_a", "check_b"] {
                let v = if (12..24).contains(&day) || i % 20 == 0 {
                    1000
                } else {
                    0
                };
                let mut payload = almanac::model::JsonObject::new();
                payload.insert("v".into(), v.into());
                payload.insert("i".into(), i.into());
                records.push(MetadataRecord::new(
                    kind,
                    almanac::MetadataTarget::new("src", "sch", &format!("t{}", i % 7)),
                    payload,
                    almanac::Timestamp::from_micros(start + day * DAY + i * 30_000_000),
                    "tester",
                ));
            }
        }
    }
    store.bulk_store(&records).unwrap();
    let request = ScanRequest {
        paths: vec![almanac::storage::PathConstraint {
            path: "payload.v".into(),
            matcher: almanac::storage::PathMatch::Range {
                lower: Some((almanac::storage::IndexValue::Number(1000.0), true)),
                upper: None,
            },
        }],
        ..ScanRequest::default()
    };
    (dir, store, records, request)
}

/// Linux with more than one core: where scans run on threads of their own.
fn threads_expected() -> bool {
    cfg!(target_os = "linux") && std::thread::available_parallelism().map_or(1, |n| n.get()) > 1
}

/// Where the share of a kind's rows that pass its path tests changes along
/// the scan, the walk switches between sending bytes to its decoding
/// thread and decoding itself: the answer keeps the (`produced_at`, id)
/// order across every switch.
#[test]
fn a_scan_whose_pass_rate_changes_keeps_its_order() {
    let _one_at_a_time = serial();
    let (_dir, store, records, request) = changing_pass_rate();
    let mut scan = store.scan(&request).unwrap();
    let mut got: Vec<almanac::StoredRecord> = (&mut scan).take(200).map(|r| r.unwrap()).collect();
    if threads_expected() {
        // Past each kind's first batch (decoded in its walk), so each has
        // started its decoding thread; too many pass for a walk to be done.
        assert!(scan_threads() > 2, "{} scan threads", scan_threads());
    }
    got.extend(scan.map(|r| r.unwrap()));
    let expected = expected_ids(&records, |r| r.payload["v"] == 1000);
    assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), expected);
    for r in &got {
        assert_eq!(r.record, records[(r.id - 1) as usize], "record {}", r.id);
    }
}
