//! The shared read snapshot behind `latest` and `history`: every committed
//! write invalidates it, so reads never see the store as it was before a
//! write returned — on the writing thread, on other threads, after
//! retention and the background purge, and for kinds registered or changed
//! after the snapshot was taken. Each test reads first (so a snapshot is
//! cached, and `latest` entries are in the latest cache), then writes, then
//! reads again.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{mpsc, Arc};

use almanac::kinds::{KindSpec, Retention};
use almanac::{Clock, MetadataRecord, MetadataRepository, Store, StoreOptions, TimeRange};
use common::*;

fn open_at(dir: &std::path::Path, now: &Arc<AtomicI64>) -> Store {
    let clock_now = Arc::clone(now);
    Store::open_with(
        dir,
        StoreOptions {
            clock: Clock::from_fn(move || ts(clock_now.load(Ordering::SeqCst))),
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn open(dir: &std::path::Path) -> Store {
    open_at(dir, &Arc::new(AtomicI64::new(BASE + 60 * DAY)))
}

fn ids(records: &[almanac::StoredRecord]) -> Vec<u64> {
    records.iter().map(|r| r.id).collect()
}

/// The ids a scan of one kind, target and range finds (`history`'s oracle:
/// a scan plans through the indexes and never uses `history`'s keys).
fn scanned_ids(store: &Store, kind: &str, t: usize, range: TimeRange) -> Vec<u64> {
    let request = almanac::query::ScanRequest {
        kinds: Some(vec![kind.into()]),
        time: range,
        targets: Some(vec![target(t).canonical_name()]),
        ..almanac::query::ScanRequest::default()
    };
    store
        .scan(&request)
        .unwrap()
        .map(|r| r.unwrap().id)
        .collect()
}

fn heartbeat(t: usize, hours: i64, rows: i64) -> MetadataRecord {
    let mut r = volume(t, hours, rows);
    r.kind = "heartbeat".into();
    r
}

#[test]
fn each_store_is_seen_by_the_next_latest_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(store
        .latest(&target(1), "ingestion_volume")
        .unwrap()
        .is_none());
    let mut stored = Vec::new();
    for hour in 0..40 {
        // Both reads run before the store too, so a snapshot is always cached.
        let before = store
            .history(&target(1), "ingestion_volume", TimeRange::ALL)
            .unwrap();
        assert_eq!(ids(&before), stored);
        let id = if hour % 2 == 0 {
            store.store(&volume(1, hour * 7, hour)).unwrap().id
        } else {
            let outcome = store.bulk_store(&[volume(1, hour * 7, hour)]).unwrap();
            outcome.ids[0]
        };
        stored.push(id);
        let latest = store
            .latest(&target(1), "ingestion_volume")
            .unwrap()
            .unwrap();
        assert_eq!(latest.id, id, "latest after store {hour}");
        assert_eq!(latest.record.payload["rows"], hour);
        let history = store
            .history(&target(1), "ingestion_volume", TimeRange::ALL)
            .unwrap();
        assert_eq!(ids(&history), stored, "history after store {hour}");
    }
}

/// Sets the flag when dropped, so helper threads stop even if an assertion fails.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_store_returned_on_one_thread_is_seen_by_latest_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let n_rounds = 200;
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&done);
        // Keep the shared snapshot in use and refreshed all along.
        for t in 0..2 {
            let (store, done) = (store.clone(), &done);
            scope.spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    store.latest(&target(t), "ingestion_volume").unwrap();
                    store
                        .history(&target(t), "ingestion_volume", TimeRange::ALL)
                        .unwrap();
                }
            });
        }
        // Channels owned by this closure: if an assertion below fails, they
        // close and the writer stops instead of waiting forever.
        let (stored_tx, stored_rx) = mpsc::channel::<u64>();
        let (checked_tx, checked_rx) = mpsc::channel::<()>();
        // Stores one record at a time, each after the last one was checked.
        let writer = store.clone();
        scope.spawn(move || {
            for hour in 0..n_rounds {
                let id = writer.store(&volume(0, hour, hour)).unwrap().id;
                if stored_tx.send(id).is_err() || checked_rx.recv().is_err() {
                    return;
                }
            }
        });
        // Reads on this thread once the writer's `store` has returned.
        let mut n_seen = 0;
        for id in stored_rx.iter() {
            let latest = store
                .latest(&target(0), "ingestion_volume")
                .unwrap()
                .unwrap();
            assert_eq!(latest.id, id, "latest on another thread");
            let history = store
                .history(&target(0), "ingestion_volume", TimeRange::ALL)
                .unwrap();
            n_seen += 1;
            assert_eq!(history.last().map(|r| r.id), Some(id));
            assert_eq!(history.len(), n_seen);
            checked_tx.send(()).unwrap();
        }
        assert_eq!(n_seen, n_rounds as usize);
    });
}

#[test]
fn retention_and_the_purge_are_seen_by_the_next_read() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(BASE + 10 * DAY));
    let store = open_at(dir.path(), &now);
    register_heartbeat(&store, 3);
    let old = store
        .bulk_store(&[heartbeat(1, 24 * 7 + 1, 1), heartbeat(1, 24 * 8 + 1, 2)])
        .unwrap();
    let kept = store.store(&heartbeat(1, 24 * 9 + 1, 3)).unwrap();
    let mut all = old.ids.clone();
    all.push(kept.id);
    let history = store
        .history(&target(1), "heartbeat", TimeRange::ALL)
        .unwrap();
    assert_eq!(ids(&history), all);

    // Cutoff day 9: days 7 and 8 expire; the latest (day 9) stays.
    let report = store
        .apply_retention_at(ts(BASE + 12 * DAY), false)
        .unwrap();
    assert_eq!(report.dropped.len(), 2);
    let history = store
        .history(&target(1), "heartbeat", TimeRange::ALL)
        .unwrap();
    assert_eq!(ids(&history), [kept.id], "history after the expiry");

    // Expire day 9 too: the latest entry goes with it.
    assert_eq!(
        store.latest(&target(1), "heartbeat").unwrap().map(|r| r.id),
        Some(kept.id)
    );
    store
        .apply_retention_at(ts(BASE + 13 * DAY), false)
        .unwrap();
    assert!(store.latest(&target(1), "heartbeat").unwrap().is_none());
    assert!(store
        .history(&target(1), "heartbeat", TimeRange::ALL)
        .unwrap()
        .is_empty());

    // The purge deletes the renamed tables; a new record in an expired
    // bucket gets fresh tables, and reads see exactly it, before and after.
    let fresh = store.store(&heartbeat(1, 24 * 8 + 3, 4)).unwrap();
    assert_eq!(
        ids(&store
            .history(&target(1), "heartbeat", TimeRange::ALL)
            .unwrap()),
        [fresh.id]
    );
    store.purge_expired().unwrap();
    assert_eq!(store.purge_pending().unwrap(), 0);
    assert_eq!(
        store.latest(&target(1), "heartbeat").unwrap().map(|r| r.id),
        Some(fresh.id)
    );
    assert_eq!(
        ids(&store
            .history(&target(1), "heartbeat", TimeRange::ALL)
            .unwrap()),
        [fresh.id]
    );
}

#[test]
fn a_kind_registered_after_a_read_is_seen_with_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(BASE + 10 * DAY));
    let store = open_at(dir.path(), &now);
    // The snapshot now knows the kind has no partitions.
    assert!(store
        .history(&target(1), "heartbeat", TimeRange::ALL)
        .unwrap()
        .is_empty());
    assert!(store.latest(&target(1), "heartbeat").unwrap().is_none());
    store
        .register_kind(KindSpec::new("heartbeat", "a new kind"))
        .unwrap();
    let first = store.store(&heartbeat(1, 5, 1)).unwrap();
    assert_eq!(
        ids(&store
            .history(&target(1), "heartbeat", TimeRange::ALL)
            .unwrap()),
        [first.id]
    );
    // A kind change (a new indexed path, built over existing partitions)
    // then a record in a new partition of the kind.
    store.add_indexed_path("heartbeat", "payload.rows").unwrap();
    store
        .set_retention("heartbeat", Retention::Days(30))
        .unwrap();
    let second = store.store(&heartbeat(1, 24 * 2, 2)).unwrap();
    assert_eq!(
        store.latest(&target(1), "heartbeat").unwrap().map(|r| r.id),
        Some(second.id)
    );
    assert_eq!(
        ids(&store
            .history(&target(1), "heartbeat", TimeRange::ALL)
            .unwrap()),
        [first.id, second.id]
    );
    let spec = store
        .kinds()
        .into_iter()
        .find(|k| k.name == "heartbeat")
        .unwrap();
    assert_eq!(spec.retention, Retention::Days(30));
}

#[test]
fn history_matches_a_scan_of_the_same_kind_target_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut records = Vec::new();
    for hour in (0..24 * 20).step_by(5) {
        records.push(volume(hour as usize % 3, hour, hour));
    }
    store.bulk_store(&records).unwrap();
    for (from, until) in [
        (0, 24 * 20),
        (3, 4),
        (24 * 3 + 5, 24 * 11 + 1),
        (24 * 19, 24 * 40),
        (-24, 1),
        (7, 7),
    ] {
        let range = TimeRange::new(ts(BASE + from * HOUR), ts(BASE + until * HOUR));
        for t in 0..4 {
            let scanned = scanned_ids(&store, "ingestion_volume", t, range);
            let history = store
                .history(&target(t), "ingestion_volume", range)
                .unwrap();
            assert_eq!(ids(&history), scanned, "target {t}, hours {from}..{until}");
        }
    }
}

/// The `latest` entries one commit changes are seen together: a reader
/// that finds commit n's record for one target then finds commit n's, or a
/// later one's, for the other, whether each answer comes from the latest
/// cache or from a snapshot. The writer stores both targets' records in one
/// `bulk_store` (one commit) each round; two readers read the pair over and
/// over, in both orders. A live check of the whole store: the window in
/// which a wrong order inside a commit would show is narrow, so the order
/// itself is checked deterministically in `storage::snapshot`'s tests.
#[test]
fn the_latest_entries_of_one_commit_are_seen_together() {
    for latest_cache_bytes in [almanac::DEFAULT_LATEST_CACHE_BYTES, 0] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(
            dir.path(),
            StoreOptions {
                latest_cache_bytes,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let n_rounds = 300;
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let _stop = StopOnDrop(&done);
            let rows = |store: &Store, t: usize| -> i64 {
                store
                    .latest(&target(t), "ingestion_volume")
                    .unwrap()
                    .map_or(-1, |r| r.record.payload["rows"].as_i64().unwrap())
            };
            let mut readers = Vec::new();
            for first in 0..2 {
                let (store, done) = (store.clone(), &done);
                readers.push(scope.spawn(move || {
                    let mut n_reads = 0u64;
                    while !done.load(Ordering::SeqCst) {
                        let a = rows(&store, first);
                        let b = rows(&store, 1 - first);
                        assert!(
                            b >= a,
                            "target {first} at round {a}, then target {} at round {b} \
                             (latest cache {latest_cache_bytes} bytes)",
                            1 - first
                        );
                        n_reads += 1;
                    }
                    n_reads
                }));
            }
            for round in 0..n_rounds {
                store
                    .bulk_store(&[volume(0, round, round), volume(1, round, round)])
                    .unwrap();
            }
            done.store(true, Ordering::SeqCst);
            for reader in readers {
                assert!(reader.join().unwrap() > 0);
            }
            assert_eq!(rows(&store, 0), n_rounds - 1);
            assert_eq!(rows(&store, 1), n_rounds - 1);
        });
    }
}

/// `history` keeps copies of the partitions it reads often in memory
/// (keys and records, after 4 visits; see `storage::history_cache`). Whatever it holds,
/// every answer equals a scan's (which never uses those keys): after
/// repeated reads, after new records in the partitions read (for the
/// target asked for and for others), after an expiry, and after a new
/// record in an expired bucket (fresh tables with the same name).
#[test]
fn history_read_often_still_sees_every_later_write() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(BASE + 10 * DAY));
    let store = open_at(dir.path(), &now);
    register_heartbeat(&store, 3);
    let check = |store: &Store, when: &str| {
        for t in 0..4 {
            let scanned = scanned_ids(store, "heartbeat", t, TimeRange::ALL);
            for _ in 0..6 {
                let history = store
                    .history(&target(t), "heartbeat", TimeRange::ALL)
                    .unwrap();
                assert_eq!(ids(&history), scanned, "target {t}, {when}");
            }
        }
    };
    let first: Vec<_> = (24 * 5..24 * 10)
        .step_by(5)
        .map(|h| heartbeat(h as usize % 3, h, h))
        .collect();
    store.bulk_store(&first).unwrap();
    check(&store, "after the first load");
    store.store(&heartbeat(1, 24 * 7 + 2, 1_000)).unwrap();
    store.store(&heartbeat(3, 24 * 8 + 2, 1_001)).unwrap();
    check(&store, "after two records in partitions read often");
    let more: Vec<_> = (24 * 5..24 * 10)
        .step_by(7)
        .map(|h| heartbeat(h as usize % 4, h, 2_000 + h))
        .collect();
    store.bulk_store(&more).unwrap();
    check(&store, "after a second load");
    let report = store
        .apply_retention_at(ts(BASE + 10 * DAY), false)
        .unwrap();
    assert_eq!(report.dropped.len(), 2, "days 5 and 6");
    check(&store, "after the expiry");
    store.store(&heartbeat(1, 24 * 5 + 3, 3_000)).unwrap();
    check(&store, "after a record in an expired bucket");
    store.purge_expired().unwrap();
    check(&store, "after the purge");
}
