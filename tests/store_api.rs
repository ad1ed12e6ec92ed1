//! The repository API of the embedded store: store, bulk_store, latest,
//! history, duplicates, reopening, locking, governance errors, the log,
//! subscriptions and group commit.

mod common;

use std::sync::Arc;

use almanac::kinds::Retention;
use almanac::query::RecordSource;
use almanac::storage::StorageError;
use almanac::{Clock, Error, MetadataRepository, Store, StoreOptions, TimeRange, Timestamp};
use common::*;
use serde_json::json;

fn open(dir: &std::path::Path) -> Store {
    Store::open_with(
        dir,
        StoreOptions {
            clock: Clock::fixed(ts(BASE + 30 * DAY)),
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn latest_and_history_follow_produced_at_not_insertion_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let late = store.store(&volume(1, 10, 100)).unwrap();
    let early = store.store(&volume(1, 2, 50)).unwrap();
    store.store(&volume(2, 20, 7)).unwrap();
    let latest = store
        .latest(&target(1), "ingestion_volume")
        .unwrap()
        .unwrap();
    assert_eq!(latest.id, late.id);
    assert_eq!(latest.record.payload["rows"], 100);
    let history = store
        .history(&target(1), "ingestion_volume", TimeRange::ALL)
        .unwrap();
    let ids: Vec<u64> = history.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![early.id, late.id]);
    let window = TimeRange::new(ts(BASE + 5 * HOUR), ts(BASE + 11 * HOUR));
    let ids: Vec<u64> = store
        .history(&target(1), "ingestion_volume", window)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![late.id]);
    assert!(store
        .latest(&target(3), "ingestion_volume")
        .unwrap()
        .is_none());
    assert!(store.latest(&target(1), "recon_result").unwrap().is_none());
}

#[test]
fn equal_timestamps_break_ties_by_greatest_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.store(&volume(1, 3, 1)).unwrap();
    let second = store.store(&volume(1, 3, 2)).unwrap();
    let latest = store
        .latest(&target(1), "ingestion_volume")
        .unwrap()
        .unwrap();
    assert_eq!(latest.id, second.id);
}

#[test]
fn duplicates_report_the_existing_id_across_calls_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let store = open(dir.path());
        let first = store.store(&volume(1, 1, 10)).unwrap();
        assert!(!first.duplicate);
        let again = store.store(&volume(1, 1, 10)).unwrap();
        assert_eq!((again.id, again.duplicate), (first.id, true));
        let bulk = store
            .bulk_store(&[volume(1, 1, 10), volume(1, 2, 10), volume(1, 2, 10)])
            .unwrap();
        assert_eq!(bulk.ids[0], first.id);
        assert_eq!(bulk.ids[1], bulk.ids[2]);
        assert_eq!((bulk.n_stored, bulk.n_duplicates), (1, 2));
        first
    };
    let store = open(dir.path());
    // The same content given with another offset and key order is the same record.
    let mut same = volume(1, 1, 10);
    same.payload = object(json!({"rows": 10}));
    let again = store.store(&same).unwrap();
    assert_eq!((again.id, again.duplicate), (first.id, true));
    let other = store.store(&volume(1, 1, 11)).unwrap();
    assert!(!other.duplicate);
    assert_eq!(other.id, 3, "ids continue after a restart");
}

#[test]
fn duplicates_among_several_new_records_at_one_instant_are_found_in_one_call() {
    // Three different records of one target at one instant, each repeated
    // in the same call: each repeat finds its own original, not another
    // record of that instant.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let batch = [
        volume(4, 1, 10),
        volume(4, 1, 20),
        volume(4, 1, 30),
        volume(4, 1, 30),
        volume(4, 1, 10),
        volume(4, 1, 20),
    ];
    let out = store.bulk_store(&batch).unwrap();
    assert_eq!((out.n_stored, out.n_duplicates), (3, 3));
    assert_eq!(out.ids[3..], [out.ids[2], out.ids[0], out.ids[1]]);
    let ids: std::collections::BTreeSet<_> = out.ids[..3].iter().collect();
    assert_eq!(ids.len(), 3, "three records stored under three ids");
}

#[test]
fn duplicates_are_found_at_the_edges_of_a_partitions_time_range() {
    // One day partition holding hours 1..=5; duplicates of its oldest and
    // newest records, alone and mixed into a batch with new records before,
    // inside and after that range, in one call and after a reopen.
    let dir = tempfile::tempdir().unwrap();
    let stored = {
        let store = open(dir.path());
        let batch: Vec<_> = (1..=5).map(|h| volume(2, h, h * 100)).collect();
        store.bulk_store(&batch).unwrap().ids
    };
    let store = open(dir.path());
    let mixed = [
        volume(2, 0, 1),   // new, before the committed range
        volume(2, 1, 100), // duplicate of the oldest
        volume(2, 3, 7),   // new content inside the range
        volume(2, 5, 500), // duplicate of the newest
        volume(2, 6, 1),   // new, after the range
        volume(2, 6, 1),   // duplicate of a record of this same call
        volume(3, 5, 500), // same instant and content, other target: new
    ];
    let out = store.bulk_store(&mixed).unwrap();
    assert_eq!(out.ids[1], stored[0]);
    assert_eq!(out.ids[3], stored[4]);
    assert_eq!(out.ids[5], out.ids[4]);
    assert_eq!((out.n_stored, out.n_duplicates), (4, 3));
    let latest = store
        .latest(&target(2), "ingestion_volume")
        .unwrap()
        .unwrap();
    assert_eq!(latest.id, out.ids[4], "the newest record is the latest");
    drop(store);
    let store = open(dir.path());
    let again = store.bulk_store(&mixed).unwrap();
    assert_eq!(again.ids, out.ids);
    assert_eq!(again.n_duplicates, 7);
}

#[test]
fn invalid_record_in_a_batch_names_index_and_field_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.store(&volume(1, 1, 1)).unwrap();
    let size_before = store.file_size().unwrap();
    let mut bad = volume(2, 2, 2);
    bad.target.table.clear();
    let err = store
        .bulk_store(&[volume(3, 1, 1), bad, volume(4, 1, 1)])
        .unwrap_err();
    match &err {
        Error::InvalidRecord { index, error } => {
            assert_eq!(*index, Some(1));
            assert_eq!(error.field, "target.table");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.is_invalid_input());
    assert!(err.to_string().contains("target.table"), "{err}");
    assert!(store
        .latest(&target(3), "ingestion_volume")
        .unwrap()
        .is_none());
    assert_eq!(store.tail(1).unwrap().len(), 1);
    assert_eq!(store.file_size().unwrap(), size_before);
    // The next good record gets the next id: nothing was reserved.
    assert_eq!(store.store(&volume(3, 1, 1)).unwrap().id, 2);
}

#[test]
fn each_record_rule_is_enforced_on_the_store_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    type Mutation = Box<dyn Fn(&mut almanac::MetadataRecord)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("kind", Box::new(|r| r.kind = "Bad-Kind".into())),
        ("kind", Box::new(|r| r.kind = "k".repeat(65))),
        ("target.table", Box::new(|r| r.target.table.clear())),
        ("producer_id", Box::new(|r| r.producer_id.clear())),
        ("producer_id", Box::new(|r| r.producer_id = "p".repeat(129))),
        ("quality", Box::new(|r| r.quality = Some(json!([1])))),
        (
            "extras.window_end",
            Box::new(|r| r.extras = object(json!({"window_start": "2024-01-01T00:00:00Z"}))),
        ),
    ];
    for (field, mutate) in cases {
        let mut record = volume(1, 1, 1);
        mutate(&mut record);
        let err = store.store(&record).unwrap_err();
        match err {
            Error::InvalidRecord { error, .. } => assert_eq!(error.field, field),
            other => panic!("{field}: unexpected {other:?}"),
        }
    }
    assert!(store.tail(1).unwrap().is_empty());
}

#[test]
fn retention_drops_the_partitions_wholly_before_the_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(std::sync::atomic::AtomicI64::new(BASE + 10 * DAY));
    let clock_now = Arc::clone(&now);
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            clock: Clock::from_fn(move || {
                Timestamp::from_micros(clock_now.load(std::sync::atomic::Ordering::SeqCst))
            }),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    register_heartbeat(&store, 3);
    let beat = |t: usize, hours: i64| {
        let mut r = volume(t, hours, 1);
        r.kind = "heartbeat".into();
        r
    };
    store
        .bulk_store(&[
            beat(1, 24 * 7 + 1),
            beat(1, 24 * 8 + 1),
            beat(2, 24 * 7 + 2),
            beat(2, 24 * 9 + 1),
        ])
        .unwrap();
    store.store(&volume(1, 1, 1)).unwrap(); // kept forever
    assert_eq!(store.partitions().unwrap().len(), 4);

    // Two days later the cutoff is day 9: days 7 and 8 expire.
    now.store(BASE + 12 * DAY, std::sync::atomic::Ordering::SeqCst);
    let dry = store.retention_dry_run().unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.dropped.len(), 2);
    assert_eq!(dry.n_records(), 3);
    assert_eq!(dry.n_latest_removed, 1, "target 1's latest was on day 8");
    assert_eq!(
        store.partitions().unwrap().len(),
        4,
        "a dry run changes nothing"
    );

    let report = store.apply_retention().unwrap();
    assert_eq!(report.dropped, dry.dropped);
    let names: Vec<&str> = report.dropped.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["heartbeat/2024-03-08", "heartbeat/2024-03-09"]);
    assert!(store.latest(&target(1), "heartbeat").unwrap().is_none());
    let t2 = store.latest(&target(2), "heartbeat").unwrap().unwrap();
    assert_eq!(t2.record.produced_at, ts(BASE + (24 * 9 + 1) * HOUR));
    assert_eq!(
        store
            .history(&target(2), "heartbeat", TimeRange::ALL)
            .unwrap()
            .len(),
        1
    );
    assert!(store
        .latest(&target(1), "ingestion_volume")
        .unwrap()
        .is_some());
    assert!(store.apply_retention().unwrap().dropped.is_empty());
}

/// A store whose clock the test moves.
fn open_at(dir: &std::path::Path, now: &Arc<std::sync::atomic::AtomicI64>) -> Store {
    let clock_now = Arc::clone(now);
    Store::open_with(
        dir,
        StoreOptions {
            clock: Clock::from_fn(move || {
                Timestamp::from_micros(clock_now.load(std::sync::atomic::Ordering::SeqCst))
            }),
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

/// A `heartbeat` record: [`volume`] under the short-lived kind.
fn beat(t: usize, hours: i64, rows: i64) -> almanac::MetadataRecord {
    let mut r = volume(t, hours, rows);
    r.kind = "heartbeat".into();
    r
}

#[test]
fn a_record_older_than_an_expired_latest_entry_becomes_the_latest() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(std::sync::atomic::AtomicI64::new(BASE + 10 * DAY));
    let store = open_at(dir.path(), &now);
    register_heartbeat(&store, 3);
    store.store(&beat(1, 24 * 8 + 1, 1)).unwrap();
    store
        .apply_retention_at(ts(BASE + 12 * DAY), false)
        .unwrap();
    // Older than the expired entry the writer had seen for the pair, and
    // still inside the retention by the clock: the pair's only record.
    let older = store.store(&beat(1, 24 * 7 + 3, 2)).unwrap();
    let want = Some(older.id);
    assert_eq!(
        store.latest(&target(1), "heartbeat").unwrap().map(|r| r.id),
        want
    );
    drop(store);
    let store = open_at(dir.path(), &now);
    assert_eq!(
        store.latest(&target(1), "heartbeat").unwrap().map(|r| r.id),
        want
    );
}

#[test]
fn expired_tables_are_purged_after_the_expiry_and_new_writes_to_their_bucket_survive() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(std::sync::atomic::AtomicI64::new(BASE + 10 * DAY));
    let store = open_at(dir.path(), &now);
    register_heartbeat(&store, 3);
    store
        .bulk_store(&[beat(1, 24 * 7 + 1, 1), beat(1, 24 * 8 + 1, 2)])
        .unwrap();
    // Expire as of day 12 (cutoff day 9) while the clock still says day 10.
    let report = store
        .apply_retention_at(ts(BASE + 12 * DAY), false)
        .unwrap();
    assert_eq!(report.dropped.len(), 2);
    // Gone from every read at once, whether or not the tables are deleted yet.
    assert!(store.latest(&target(1), "heartbeat").unwrap().is_none());
    assert!(store
        .history(&target(1), "heartbeat", TimeRange::ALL)
        .unwrap()
        .is_empty());
    assert!(store.partitions().unwrap().is_empty());
    // By the clock, day 8 is still inside the retention: a new record for
    // that bucket gets fresh tables, untouched by the purge of the old ones.
    let fresh = store.store(&beat(1, 24 * 8 + 3, 3)).unwrap();
    store.purge_expired().unwrap();
    assert_eq!(store.purge_pending().unwrap(), 0);
    let history = store
        .history(&target(1), "heartbeat", TimeRange::ALL)
        .unwrap();
    let ids: Vec<u64> = history.iter().map(|r| r.id).collect();
    assert_eq!(ids, [fresh.id]);
    drop(store);
    let store = open_at(dir.path(), &now);
    assert_eq!(
        store.latest(&target(1), "heartbeat").unwrap().unwrap().id,
        fresh.id
    );
}

#[test]
fn expired_tables_are_deleted_while_writes_never_pause() {
    // Two threads store large batches back to back, so a job always waits
    // for the writer (and each batch leaves its log lines for the next
    // one's commit): the expired partitions must still go, at least one
    // a second, rather than once the load stops.
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(std::sync::atomic::AtomicI64::new(BASE + 20 * DAY));
    let store = Arc::new(open_at(dir.path(), &now));
    register_heartbeat(&store, 30);
    let beats: Vec<_> = (0..10 * 24).map(|h| beat(h as usize % 7, h, h)).collect();
    store.bulk_store(&beats).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stored = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let loaders: Vec<_> = (0..2)
        .map(|thread| {
            let (store, stop, stored) =
                (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&stored));
            std::thread::spawn(move || {
                let mut round = 0i64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    // New content each round (rows differ between rounds and
                    // threads; within a batch, records repeat every 600).
                    let batch: Vec<_> = (0..2_048)
                        .map(|i| volume(i % 50, 30 * 24 + i as i64 % 24, round * 10 + thread))
                        .collect();
                    store.bulk_store(&batch).unwrap();
                    stored.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    round += 1;
                }
            })
        })
        .collect();
    let loading = std::time::Instant::now();
    while stored.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(
            loading.elapsed() < std::time::Duration::from_secs(60)
                && loaders.iter().all(|l| !l.is_finished()),
            "the loaders stored nothing"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let report = store
        .apply_retention_at(ts(BASE + 39 * DAY), false)
        .unwrap();
    assert_eq!(report.dropped.len(), 9);
    let start = std::time::Instant::now();
    // `purge_pending` counts tables: a `heartbeat` partition has three
    // (records, by target, by run; the kind indexes no path). The writer
    // may have deleted one already (in a pause of the load): the goal is
    // two partitions gone in all.
    const TABLES_PER_PARTITION: usize = 3;
    let at_expiry = store.purge_pending().unwrap();
    assert!(
        at_expiry <= 9 * TABLES_PER_PARTITION && at_expiry.is_multiple_of(TABLES_PER_PARTITION),
        "{at_expiry} tables for 9 partitions"
    );
    let goal = 7 * TABLES_PER_PARTITION;
    let mut pending = at_expiry;
    while pending > goal && start.elapsed() < std::time::Duration::from_secs(15) {
        std::thread::sleep(std::time::Duration::from_millis(20));
        pending = store.purge_pending().unwrap();
    }
    let batches_meanwhile = stored.load(std::sync::atomic::Ordering::SeqCst);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for loader in loaders {
        loader.join().unwrap();
    }
    assert!(
        pending <= goal,
        "{pending} of {} expired tables left after {:?} of writes ({batches_meanwhile} batches)",
        9 * TABLES_PER_PARTITION,
        start.elapsed()
    );
}

#[test]
fn the_writer_purges_expired_tables_in_the_background_even_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(std::sync::atomic::AtomicI64::new(BASE + 20 * DAY));
    let store = open_at(dir.path(), &now);
    register_heartbeat(&store, 30);
    let beats: Vec<_> = (0..10 * 24).map(|h| beat(h as usize % 7, h, h)).collect();
    store.bulk_store(&beats).unwrap();
    let report = store
        .apply_retention_at(ts(BASE + 39 * DAY), false)
        .unwrap();
    assert_eq!(report.dropped.len(), 9);
    drop(store); // the writer may stop before it has deleted everything
    let store = open_at(dir.path(), &now);
    // Reopening hands what is left to the writer; wait for it (bounded).
    let mut waited = 0;
    while store.purge_pending().unwrap() > 0 {
        assert!(waited < 600, "the writer never purged the expired tables");
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
    }
    let left = store.partitions().unwrap();
    assert_eq!(left.len(), 1, "day 9 is not expired yet");
    let history = store
        .history(&target(0), "heartbeat", TimeRange::ALL)
        .unwrap();
    assert!(history
        .iter()
        .all(|r| r.record.produced_at >= ts(BASE + 9 * DAY)));
    assert!(!history.is_empty());
}

#[test]
fn a_second_open_fails_at_once_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Storage(StorageError::Locked(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("already open"), "{err}");
    drop(store);
    Store::open(dir.path()).unwrap();
}

/// Read-only handles share a store with each other, in one process or
/// several, and exclude writers (which exclude them); they read what a
/// writable handle reads and refuse every write.
#[test]
fn read_only_handles_share_the_store_and_refuse_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = store.store(&volume(1, 2, 50)).unwrap();
    let last = store.store(&volume(1, 10, 100)).unwrap();
    // A writer excludes a reader.
    let err = Store::open_read_only(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::Storage(StorageError::Locked(_))),
        "{err:?}"
    );
    drop(store);

    let a = Store::open_read_only(dir.path(), StoreOptions::default()).unwrap();
    let b = Store::open_read_only(dir.path(), StoreOptions::default()).unwrap();
    assert!(a.is_read_only() && b.is_read_only());
    for reader in [&a, &b] {
        let latest = reader
            .latest(&target(1), "ingestion_volume")
            .unwrap()
            .unwrap();
        assert_eq!(latest.id, last.id);
        let history = reader
            .history(&target(1), "ingestion_volume", TimeRange::ALL)
            .unwrap();
        assert_eq!(
            history.iter().map(|r| r.id).collect::<Vec<_>>(),
            [first.id, last.id]
        );
        let out = reader
            .query("ingestion_volume | stats count()", &Default::default())
            .unwrap();
        assert_eq!(out.rows.len(), 1);
        assert!(reader.kind("ingestion_volume").is_some());
        assert_eq!(reader.stats().unwrap().n_records(), 2);
    }
    // Readers exclude a writer.
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Storage(StorageError::Locked(_))),
        "{err:?}"
    );
    // Every write is refused, and nothing changes.
    let read_only = |e: Error| matches!(e, Error::Storage(StorageError::ReadOnly));
    assert!(read_only(a.store(&volume(2, 3, 1)).unwrap_err()));
    assert!(read_only(
        a.bulk_store(&[volume(2, 3, 1), volume(2, 4, 1)])
            .unwrap_err()
    ));
    assert!(read_only(
        a.set_retention("ingestion_volume", Retention::Days(1))
            .unwrap_err()
    ));
    assert!(read_only(a.apply_retention().unwrap_err()));
    // A dry run too: it runs in a write transaction, which it aborts.
    assert!(read_only(a.retention_dry_run().unwrap_err()));
    assert_eq!(b.stats().unwrap().n_records(), 2);
    drop((a, b));
    // Writable again once they are gone.
    let store = open(dir.path());
    assert_eq!(store.stats().unwrap().n_records(), 2);
}

#[test]
fn a_read_only_open_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    let err = Store::open_read_only(&missing, StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::Storage(StorageError::NoStore(_))),
        "{err:?}"
    );
    assert!(!missing.exists());
}

/// File names in the store directory, sorted.
fn dir_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_new_store_is_created_whole_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    assert_eq!(dir_files(dir.path()), ["almanac.redb", "log"]);
    // A leftover of a creation killed before its link does not get in the way.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("almanac.redb.new-4242"), b"partial").unwrap();
    let store = open(other.path());
    let record = volume(1, 0, 10);
    store.store(&record).unwrap();
    assert!(store
        .latest(&record.target, "ingestion_volume")
        .unwrap()
        .is_some());
}

#[test]
fn a_store_whose_creation_was_cut_short_opens_as_a_new_store() {
    // redb writes its magic number last when it initialises a file, so a
    // creation killed before that leaves a file of zeros at the start.
    for len in [0usize, 5, 4096, 1 << 20] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("almanac.redb"), vec![0u8; len]).unwrap();
        let record = volume(1, 0, 10);
        let store = open(dir.path());
        store.store(&record).unwrap();
        drop(store);
        let store = open(dir.path());
        let latest = store.latest(&record.target, "ingestion_volume").unwrap();
        assert!(latest.is_some(), "file of {len} zero bytes");
    }
    // A file that is something else entirely is reported, not replaced.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("almanac.redb"), b"not a database at all").unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("almanac.redb") || err.to_string().contains("redb"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("almanac.redb")).unwrap(),
        b"not a database at all"
    );
}

#[test]
fn the_log_holds_every_committed_record_once_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        log_segment_bytes: 600, // a few records per segment: exercises rotation
        clock: Clock::fixed(ts(BASE + 30 * DAY)),
        ..StoreOptions::default()
    };
    {
        let store = Store::open_with(dir.path(), options.clone()).unwrap();
        for i in 0..20 {
            store.store(&volume(i % 3, i as i64, i as i64)).unwrap();
        }
        store.store(&volume(0, 0, 0)).unwrap(); // a duplicate: not logged again
    }
    let store = Store::open_with(dir.path(), options).unwrap();
    store
        .bulk_store(&[volume(5, 1, 1), volume(5, 2, 2)])
        .unwrap();
    let log = store.tail(1).unwrap();
    let ids: Vec<u64> = log.iter().map(|r| r.id).collect();
    assert_eq!(ids, (1..=22).collect::<Vec<_>>());
    assert_eq!(log[3].record, volume(0, 3, 3));
    let segments = almanac::storage::log::segments(&dir.path().join("log")).unwrap();
    assert!(segments.len() > 3, "{} segments", segments.len());
    let from_15: Vec<u64> = store.tail(15).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(from_15, (15..=22).collect::<Vec<_>>());
}

#[test]
fn subscribers_see_new_commits_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.store(&volume(1, 1, 1)).unwrap();
    let rx = store.subscribe();
    store
        .bulk_store(&[volume(1, 2, 2), volume(1, 3, 3)])
        .unwrap();
    store.store(&volume(1, 2, 2)).unwrap(); // duplicate: nothing new
    store.store(&volume(1, 4, 4)).unwrap();
    let got: Vec<u64> = rx.try_iter().map(|r| r.id).collect();
    assert_eq!(got, vec![2, 3, 4]);
}

#[test]
fn concurrent_stores_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let n_threads = 16;
    let per_thread = 25;
    let handles: Vec<_> = (0..n_threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    store.store(&volume(t, i as i64, 1)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let n_records = n_threads * per_thread;
    let log = store.tail(1).unwrap();
    assert_eq!(log.len(), n_records);
    let stats = store.write_stats();
    assert_eq!(stats.n_records, n_records as u64);
    assert!(
        stats.n_commits < n_records as u64,
        "{} commits for {n_records} records: no grouping",
        stats.n_commits
    );
}

#[test]
fn the_repository_is_object_safe() {
    let dir = tempfile::tempdir().unwrap();
    let repo: Box<dyn MetadataRepository> = Box::new(open(dir.path()));
    let out = repo.store(&volume(1, 1, 1)).unwrap();
    assert_eq!(
        repo.latest(&target(1), "ingestion_volume")
            .unwrap()
            .unwrap()
            .id,
        out.id
    );
}

#[test]
fn a_large_batch_reports_its_first_invalid_record() {
    // Large batches are written while they are prepared, in chunks (on
    // several threads beyond two cores): the error must still be the
    // lowest invalid index, and nothing may be written.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut records: Vec<_> = (0..5000)
        .map(|i| volume(i % 50, (i / 50) as i64, i as i64))
        .collect();
    records[4100].producer_id.clear();
    records[3001].target.table.clear();
    let err = store.bulk_store(&records).unwrap_err();
    assert_eq!(err.record_index(), Some(3001), "{err}");
    assert!(store.tail(1).unwrap().is_empty());
    records[3001].target.table = "t".into();
    records[4100].producer_id = "p".into();
    let out = store.bulk_store(&records).unwrap();
    assert_eq!(out.n_stored, 5000);
    assert_eq!(out.ids, (1..=5000).collect::<Vec<u64>>());
}

#[test]
fn compaction_shrinks_a_closed_store_and_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(std::sync::atomic::AtomicI64::new(BASE + 20 * DAY));
    let store = open_at(dir.path(), &now);
    register_heartbeat(&store, 30);
    for day in 0..20 {
        let beats: Vec<_> = (0..500)
            .map(|i| beat(i % 40, day * 24 + (i as i64 % 24), i as i64))
            .collect();
        store.bulk_store(&beats).unwrap();
    }
    let kept: Vec<u64> = (0..20)
        .map(|i| store.store(&volume(i, 1 + i as i64, 7)).unwrap().id)
        .collect();
    // Expire 15 of the 20 days: their pages become free space in the file.
    let report = store
        .apply_retention_at(ts(BASE + 45 * DAY), false)
        .unwrap();
    assert_eq!(report.dropped.len(), 15);
    let history_before = store
        .history(&target(3), "heartbeat", TimeRange::ALL)
        .unwrap();
    assert!(!history_before.is_empty());

    // Not while the store is open, and no store is created where none is.
    let err = Store::compact(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Storage(StorageError::Locked(_))),
        "{err:?}"
    );
    drop(store);
    let empty = tempfile::tempdir().unwrap();
    let missing = empty.path().join("nothing");
    let err = Store::compact(&missing).unwrap_err();
    assert!(
        matches!(err, Error::Storage(StorageError::NoStore(_))),
        "{err:?}"
    );
    assert!(!missing.exists());

    let compacted = Store::compact(dir.path()).unwrap();
    assert!(
        compacted.bytes_after < compacted.bytes_before,
        "{compacted:?}"
    );
    assert_eq!(
        compacted.bytes_after,
        std::fs::metadata(dir.path().join("almanac.redb"))
            .unwrap()
            .len()
    );
    let store = open_at(dir.path(), &now);
    assert_eq!(store.purge_pending().unwrap(), 0);
    let history_after = store
        .history(&target(3), "heartbeat", TimeRange::ALL)
        .unwrap();
    assert_eq!(history_after, history_before);
    for (i, id) in kept.iter().enumerate() {
        let latest = store
            .latest(&target(i), "ingestion_volume")
            .unwrap()
            .unwrap();
        assert_eq!(latest.id, *id);
    }
    // Still writable after compaction.
    store.store(&volume(1, 30, 1)).unwrap();
}

/// Every (key, value) of a `latest` table of version 2 or later, read
/// from a closed store's file by the downgrades below.
fn latest_entries(
    table: &impl redb::ReadableTable<&'static str, &'static [u8]>,
) -> Vec<(String, Vec<u8>)> {
    table
        .iter()
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.value().to_owned(), v.value().to_vec())
        })
        .collect()
}

/// Rewrites a closed version-3 store as version 2 did: each `latest` value
/// `produced_at ‖ id` goes on with a copy of the encoded record (read from
/// its partition's `rec` table), `format_version` 2.
fn downgrade_to_v2(dir: &std::path::Path) {
    use redb::{ReadableTable, TableDefinition};
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    const LATEST: TableDefinition<&str, &[u8]> = TableDefinition::new("latest");
    const PARTITIONS: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("partitions");
    let db = redb::Database::open(dir.join(almanac::storage::DB_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut latest = txn.open_table(LATEST).unwrap();
        let catalog = txn.open_table(PARTITIONS).unwrap();
        let entries = latest_entries(&latest);
        assert!(!entries.is_empty());
        for (key, value) in entries {
            assert_eq!(value.len(), 16, "a version-3 latest value");
            let ts = i64::from_le_bytes(value[..8].try_into().unwrap());
            let id = u64::from_le_bytes(value[8..].try_into().unwrap());
            let (kind, _) = key.split_once('\0').unwrap();
            let start = catalog
                .range((kind, i64::MIN)..=(kind, ts))
                .unwrap()
                .last()
                .unwrap()
                .unwrap()
                .0
                .value()
                .1;
            let name = format!("part/{kind}/{start}/rec");
            let records: TableDefinition<(i64, u64), &[u8]> = TableDefinition::new(&name);
            let record = txn
                .open_table(records)
                .unwrap()
                .get((ts, id))
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            let mut long = value;
            long.extend_from_slice(&record);
            latest.insert(key.as_str(), long.as_slice()).unwrap();
        }
        txn.open_table(META)
            .unwrap()
            .insert("format_version", 2)
            .unwrap();
    }
    txn.commit().unwrap();
}

/// Rewrites a closed version-3 store as version 1 did: the `latest` table
/// keyed by a `(kind, target name)` tuple, each value with a copy of the
/// record (see [`downgrade_to_v2`]), `format_version` 1.
fn downgrade_to_v1(dir: &std::path::Path) {
    downgrade_to_v2(dir);
    use redb::{ReadableDatabase, TableDefinition};
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    const V2: TableDefinition<&str, &[u8]> = TableDefinition::new("latest");
    const V1: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("latest");
    let db = redb::Database::open(dir.join(almanac::storage::DB_FILE)).unwrap();
    let entries = latest_entries(&db.begin_read().unwrap().open_table(V2).unwrap());
    assert!(!entries.is_empty());
    let txn = db.begin_write().unwrap();
    txn.delete_table(V2).unwrap();
    {
        let mut v1 = txn.open_table(V1).unwrap();
        for (key, value) in &entries {
            let (kind, target) = key.split_once('\0').expect("kind \\0 target");
            v1.insert((kind, target), value.as_slice()).unwrap();
        }
        txn.open_table(META)
            .unwrap()
            .insert("format_version", 1)
            .unwrap();
    }
    txn.commit().unwrap();
}

fn format_version(dir: &std::path::Path) -> u64 {
    use redb::{ReadableDatabase, TableDefinition};
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    let db = redb::Database::open(dir.join(almanac::storage::DB_FILE)).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let version = meta.get("format_version").unwrap().unwrap().value();
    version
}

/// The lengths of the `latest` table's values, read from the closed store's file.
fn latest_value_lengths(dir: &std::path::Path) -> Vec<usize> {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    const LATEST: TableDefinition<&str, &[u8]> = TableDefinition::new("latest");
    let db = redb::Database::open(dir.join(almanac::storage::DB_FILE)).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(LATEST).unwrap();
    let lengths = table
        .iter()
        .unwrap()
        .map(|e| e.unwrap().1.value().len())
        .collect();
    lengths
}

#[test]
fn a_version_1_store_is_upgraded_at_open_and_keeps_its_latest_entries() {
    upgrade_keeps_latest_entries(downgrade_to_v1, 1);
}

#[test]
fn a_version_2_store_is_upgraded_at_open_and_keeps_its_latest_entries() {
    upgrade_keeps_latest_entries(downgrade_to_v2, 2);
}

/// Writes a store, rewrites it as format version `from` did, and checks
/// that opening it upgrades it to the current version with the same
/// `latest` answers, which later writes still replace.
fn upgrade_keeps_latest_entries(downgrade: fn(&std::path::Path), from: u64) {
    // A second kind whose name extends the first: its keys sort right
    // after the first kind's, and neither kind's range may take the other's.
    const LONGER: &str = "ingestion_volume_x";
    let dir = tempfile::tempdir().unwrap();
    let mut records: Vec<_> = (0..40)
        .map(|i| volume(i % 7, (i / 7) as i64, 100 + i as i64))
        .collect();
    records.extend((0..12).map(|i| {
        let mut r = volume(i % 4, (i / 4) as i64, 7 + i as i64);
        r.kind = LONGER.to_owned();
        r
    }));
    let kinds = |k: &str| [k.to_owned()];
    let (before, every, volumes, longer) = {
        let store = open(dir.path());
        store.bulk_store(&records).unwrap();
        let before: Vec<_> = (0..7)
            .flat_map(|t| [(t, "ingestion_volume"), (t, LONGER)])
            .map(|(t, k)| store.latest(&target(t), k).unwrap())
            .collect();
        (
            before,
            store.latest_records(None, None).unwrap(),
            store
                .latest_records(Some(&kinds("ingestion_volume")), None)
                .unwrap(),
            store.latest_records(Some(&kinds(LONGER)), None).unwrap(),
        )
    };
    assert_eq!((every.len(), volumes.len(), longer.len()), (11, 7, 4));
    downgrade(dir.path());
    assert_eq!(format_version(dir.path()), from);
    if from == 2 {
        // (Version 1's table has other key types.)
        assert!(latest_value_lengths(dir.path()).iter().all(|&n| n > 16));
    }

    let store = open(dir.path());
    let after: Vec<_> = (0..7)
        .flat_map(|t| [(t, "ingestion_volume"), (t, LONGER)])
        .map(|(t, k)| store.latest(&target(t), k).unwrap())
        .collect();
    assert_eq!(after, before);
    let by_kind = |k: &str| store.latest_records(Some(&kinds(k)), None).unwrap();
    assert_eq!(by_kind("ingestion_volume"), volumes);
    assert_eq!(by_kind(LONGER), longer);
    assert!(longer.iter().all(|r| r.record.kind == LONGER));
    assert_eq!(store.latest_records(None, None).unwrap(), every);
    // Newer records still replace the upgraded entries.
    let newer = volume(3, 1000, 5);
    let id = store.store(&newer).unwrap().id;
    let found = store
        .latest(&target(3), "ingestion_volume")
        .unwrap()
        .unwrap();
    assert_eq!(found.id, id);
    drop(store);
    assert_eq!(format_version(dir.path()), almanac::storage::FORMAT_VERSION);
    let lengths = latest_value_lengths(dir.path());
    assert_eq!(lengths.len(), 11);
    assert!(lengths.iter().all(|&n| n == 16), "{lengths:?}");
}

/// Rewrites a closed version-4 store as version 3 did: target dictionary
/// and `latest` entries keyed by the canonical name, `format_version` 3.
fn downgrade_to_v3(dir: &std::path::Path) {
    use redb::{ReadableTable, TableDefinition};
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    const TARGETS: TableDefinition<&str, (u64, &str, &str, &str)> = TableDefinition::new("targets");
    const LATEST: TableDefinition<&str, &[u8]> = TableDefinition::new("latest");
    let db = redb::Database::open(dir.join(almanac::storage::DB_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut targets = txn.open_table(TARGETS).unwrap();
        let mut moved = std::collections::HashMap::new();
        let entries: Vec<(String, u64, String, String, String)> = targets
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                let (id, s, sc, t) = v.value();
                (
                    k.value().to_owned(),
                    id,
                    s.to_owned(),
                    sc.to_owned(),
                    t.to_owned(),
                )
            })
            .collect();
        for (key, id, s, sc, t) in entries {
            let name = almanac::model::canonical_name(&s, &sc, &t);
            if name != key {
                targets.remove(key.as_str()).unwrap();
                targets
                    .insert(name.as_str(), (id, s.as_str(), sc.as_str(), t.as_str()))
                    .unwrap();
                moved.insert(key, name);
            }
        }
        assert!(!moved.is_empty(), "a target with an escaped key");
        let mut latest = txn.open_table(LATEST).unwrap();
        let entries = latest_entries(&latest);
        for (key, value) in entries {
            let (kind, target) = key.split_once('\0').unwrap();
            if let Some(name) = moved.get(target) {
                latest.remove(key.as_str()).unwrap();
                latest
                    .insert(format!("{kind}\0{name}").as_str(), value.as_slice())
                    .unwrap();
            }
        }
        txn.open_table(META)
            .unwrap()
            .insert("format_version", 3)
            .unwrap();
    }
    txn.commit().unwrap();
}

/// A version-3 store keyed a target whose canonical name is ambiguous by
/// that name: opening it moves its entries to the target's key, so its
/// `latest` and `history` are found, and a read-only open asks for the
/// upgrade first.
#[test]
fn a_version_3_store_is_upgraded_to_target_keys() {
    let dir = tempfile::tempdir().unwrap();
    let dotted = almanac::MetadataTarget::new("pg", "sales.eu", "orders");
    let mut first = volume(0, 1, 10);
    first.target = dotted.clone();
    let mut second = volume(0, 2, 20);
    second.target = dotted.clone();
    {
        let store = open(dir.path());
        store.bulk_store(&[first, volume(1, 1, 5), second]).unwrap();
    }
    downgrade_to_v3(dir.path());
    assert_eq!(format_version(dir.path()), 3);
    let err = Store::open_read_only(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::Storage(StorageError::NeedsWriter { .. })),
        "{err:?}"
    );
    let store = open(dir.path());
    let latest = store.latest(&dotted, "ingestion_volume").unwrap().unwrap();
    assert_eq!(latest.id, 3);
    let history = store
        .history(&dotted, "ingestion_volume", TimeRange::ALL)
        .unwrap();
    assert_eq!(history.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(
        store
            .latest(&target(1), "ingestion_volume")
            .unwrap()
            .unwrap()
            .id,
        2
    );
    // A new record of the target joins the same entries (no second id).
    let mut third = volume(0, 3, 30);
    third.target = dotted.clone();
    let id = store.store(&third).unwrap().id;
    let history = store
        .history(&dotted, "ingestion_volume", TimeRange::ALL)
        .unwrap();
    assert_eq!(history.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 3, id]);
    drop(store);
    assert_eq!(format_version(dir.path()), almanac::storage::FORMAT_VERSION);
}

/// In a version-3 store two targets whose canonical names collided shared
/// one target id, so their by-target index entries too. Made here by
/// pointing the second target's dictionary entry and index entries at the
/// first's id: `history` of each still returns only its own records.
#[test]
fn history_checks_each_records_target_where_two_targets_share_an_id() {
    use redb::{ReadableTable, TableDefinition, TableHandle};
    let dir = tempfile::tempdir().unwrap();
    let a = almanac::MetadataTarget::new("pg", "sales", "eu.orders");
    let b = almanac::MetadataTarget::new("pg", "sales.eu", "orders");
    let at = |target: &almanac::MetadataTarget, hours: i64| {
        let mut r = volume(0, hours, hours);
        r.target = target.clone();
        r
    };
    {
        let store = open(dir.path());
        store
            .bulk_store(&[at(&a, 1), at(&b, 2), at(&a, 3), at(&b, 4)])
            .unwrap();
    }
    {
        const TARGETS: TableDefinition<&str, (u64, &str, &str, &str)> =
            TableDefinition::new("targets");
        let db = redb::Database::open(dir.path().join(almanac::storage::DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut targets = txn.open_table(TARGETS).unwrap();
            let id_of = |k: &str| targets.get(k).unwrap().unwrap().value().0;
            let (a_id, b_id) = (id_of(&a.key()), id_of(&b.key()));
            assert_ne!(a_id, b_id);
            targets
                .insert(b.key().as_str(), (a_id, "pg", "sales.eu", "orders"))
                .unwrap();
            let names: Vec<String> = txn
                .list_tables()
                .unwrap()
                .map(|t| t.name().to_owned())
                .filter(|n| n.ends_with("/tgt"))
                .collect();
            assert!(!names.is_empty());
            for name in names {
                let def: TableDefinition<(u64, i64, u64), ()> = TableDefinition::new(&name);
                let mut index = txn.open_table(def).unwrap();
                let of_b: Vec<(u64, i64, u64)> = index
                    .iter()
                    .unwrap()
                    .map(|e| e.unwrap().0.value())
                    .filter(|k| k.0 == b_id)
                    .collect();
                for (_, ts, id) in of_b {
                    index.remove((b_id, ts, id)).unwrap();
                    index.insert((a_id, ts, id), ()).unwrap();
                }
            }
        }
        txn.commit().unwrap();
    }
    let store = open(dir.path());
    let ids = |target| -> Vec<u64> {
        store
            .history(target, "ingestion_volume", TimeRange::ALL)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(ids(&a), [1, 3]);
    assert_eq!(ids(&b), [2, 4]);
}

#[test]
fn a_store_of_an_unknown_format_version_is_refused_with_its_version() {
    use redb::TableDefinition;
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    {
        let db = redb::Database::open(dir.path().join(almanac::storage::DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format_version", 99)
            .unwrap();
        txn.commit().unwrap();
    }
    let Err(err) = Store::open(dir.path()) else {
        panic!("a store of format version 99 opened");
    };
    let message = err.to_string();
    assert!(message.contains("format version 99"), "{message}");
}

/// Spec §1a names no rejection for age: a record older than its kind's
/// retention is stored, and the next retention run drops it with its
/// partition (here the whole day lies before the cutoff).
#[test]
fn a_record_older_than_its_kinds_retention_is_stored_then_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()); // now = BASE + 30 days
    register_heartbeat(&store, 3);
    let mut old = volume(1, 24 * 10, 1);
    old.kind = "heartbeat".into();
    let mut recent = volume(1, 24 * 29, 2);
    recent.kind = "heartbeat".into();
    let stored = store.bulk_store(&[old, recent]).unwrap();
    assert_eq!(stored.ids.len(), 2);
    let all = store
        .history(&target(1), "heartbeat", TimeRange::ALL)
        .unwrap();
    assert_eq!(all.len(), 2, "both stored");
    let report = store.apply_retention().unwrap();
    assert_eq!(report.dropped.len(), 1);
    assert_eq!(report.dropped[0].n_records, 1);
    let left: Vec<u64> = store
        .history(&target(1), "heartbeat", TimeRange::ALL)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, [stored.ids[1]]);
}

#[test]
fn a_latest_entry_naming_a_missing_record_is_reported_as_corruption() {
    use redb::{ReadableTable, TableDefinition};
    const LATEST: TableDefinition<&str, &[u8]> = TableDefinition::new("latest");
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.store(&volume(0, 1, 10)).unwrap();
        store.store(&volume(1, 1, 11)).unwrap();
    }
    let key = format!("ingestion_volume\0{}", target(0).canonical_name());
    {
        let db = redb::Database::open(dir.path().join(almanac::storage::DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut latest = txn.open_table(LATEST).unwrap();
            let ts = latest.get(key.as_str()).unwrap().unwrap().value()[..8].to_vec();
            let mut value = ts;
            value.extend_from_slice(&999u64.to_le_bytes());
            latest.insert(key.as_str(), value.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = open(dir.path());
    let err = store
        .latest(&target(0), "ingestion_volume")
        .expect_err("a latest entry naming record 999");
    let message = err.to_string();
    assert!(
        message.contains("record 999") && message.contains("not stored"),
        "{message}"
    );
    assert!(store.latest_records(None, None).is_err());
    // The other target's entry is intact.
    let other = store
        .latest(&target(1), "ingestion_volume")
        .unwrap()
        .unwrap();
    assert_eq!(other.record.payload["rows"], 11);
}

/// 5,000 records over 50 targets and 100 hours: a batch large enough to be
/// written while it is prepared, in chunks.
fn large_batch() -> Vec<almanac::MetadataRecord> {
    (0..5_000)
        .map(|i| volume(i % 50, (i / 50) as i64, i as i64))
        .collect()
}

#[test]
fn a_large_batch_with_bad_records_names_the_first_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.store(&volume(999, 1, 1)).unwrap();
    let size_before = store.file_size().unwrap();
    let mut records = large_batch();
    // Bad records in two chunks, the later one first in the batch's order
    // of preparing; the error names the lower index. Record 4,321 fails
    // its format check, record 2,100 its kind's schema.
    records[4_321].target.table.clear();
    records[2_100].payload = object(json!({"rows": -1}));
    let err = store.bulk_store(&records).unwrap_err();
    match &err {
        Error::Rejected { index, error } => {
            assert_eq!(*index, Some(2_100), "{err}");
            assert_eq!(error.field, "payload.rows", "{err}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.is_invalid_input());
    // The same with only the later bad record.
    records[2_100] = volume(0, 42, 2_100);
    match store.bulk_store(&records).unwrap_err() {
        Error::InvalidRecord { index, error } => {
            assert_eq!(index, Some(4_321));
            assert_eq!(error.field, "target.table");
        }
        other => panic!("unexpected error {other:?}"),
    }
    // Nothing of either batch was written, nor any id taken.
    assert_eq!(store.tail(1).unwrap().len(), 1);
    assert!(store
        .latest(&target(0), "ingestion_volume")
        .unwrap()
        .is_none());
    assert_eq!(store.file_size().unwrap(), size_before);
    assert_eq!(store.store(&volume(0, 1, 1)).unwrap().id, 2);
}

#[test]
fn a_large_batch_gets_the_answers_of_the_same_records_in_small_batches() {
    let mut records = large_batch();
    // Repeats within the batch (one chunk apart and in the same chunk)...
    records[3_000] = records[10].clone();
    records[3_001] = records[2_999].clone();
    // ...and records stored before the batch.
    let before = [records[7].clone(), records[4_500].clone()];
    let (large, small) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let answers = |dir: &std::path::Path, batch: usize| {
        let store = open(dir);
        store.bulk_store(&before).unwrap();
        let mut ids = Vec::new();
        let (mut n_stored, mut n_duplicates) = (0, 0);
        for part in records.chunks(batch) {
            let out = store.bulk_store(part).unwrap();
            ids.extend(out.ids);
            n_stored += out.n_stored;
            n_duplicates += out.n_duplicates;
        }
        let latest: Vec<_> = (0..50)
            .map(|t| store.latest(&target(t), "ingestion_volume").unwrap())
            .collect();
        let history = store
            .history(&target(10), "ingestion_volume", TimeRange::ALL)
            .unwrap();
        let log: Vec<u64> = store.tail(1).unwrap().iter().map(|r| r.id).collect();
        (ids, n_stored, n_duplicates, latest, history, log)
    };
    let one = answers(large.path(), records.len());
    let many = answers(small.path(), 500);
    assert_eq!((one.1, one.2), (4_998 - 2, 4));
    assert_eq!(one.0[3_000], one.0[10]);
    assert_eq!(one.0[7], 1);
    assert_eq!(one, many);
    assert_eq!(one.5.len(), 2 + 4_996);
}

#[test]
fn a_large_batch_and_single_stores_from_other_threads_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let singles: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| store.store(&volume(100 + t, i, 1)).unwrap().id)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let bulk = store.bulk_store(&large_batch()).unwrap();
    let mut ids: Vec<u64> = bulk.ids.clone();
    for handle in singles {
        ids.extend(handle.join().unwrap());
    }
    assert_eq!(bulk.n_stored, 5_000);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5_200);
    assert_eq!(ids, (1..=5_200).collect::<Vec<u64>>());
    assert_eq!(store.tail(1).unwrap().len(), 5_200);
    // The batch's ids are consecutive: one transaction.
    assert!(bulk.ids.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn an_abandoned_large_batch_does_not_fail_other_callers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let singles = {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Every call must succeed, whatever batch it is queued with.
                store.store(&volume(200 + n % 7, n as i64, 1)).unwrap();
                n += 1;
            }
            n
        })
    };
    let mut bad = large_batch();
    bad[2_500].target.table.clear();
    for _ in 0..20 {
        let err = store.bulk_store(&bad).unwrap_err();
        assert_eq!(err.record_index(), Some(2_500), "{err}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = singles.join().unwrap();
    assert!(n > 0);
    // Only the single stores were written.
    assert_eq!(store.tail(1).unwrap().len(), n);
}

/// A version-4 store has no partition summaries table: opening it adds
/// one (format version 5), and a read-only open asks for that first. Its
/// kinds keep the paths they had, so its windows stay indexed.
#[test]
fn a_version_4_store_is_upgraded_to_partition_summaries() {
    use almanac::query::{IndexValue, PathConstraint, PathMatch, ScanRequest};
    let dir = tempfile::tempdir().unwrap();
    let windowed = |hours: i64| {
        let mut r = volume(0, hours, hours);
        r.extras = object(json!({
            "window_start": ts(BASE + (hours - 2) * HOUR).to_rfc3339(),
            "window_end": ts(BASE + hours * HOUR).to_rfc3339(),
        }));
        r
    };
    {
        let store = open(dir.path());
        // A kind shaped like a version-4 store's standard kinds: windows indexed.
        let mut spec = almanac::kinds::KindSpec::new("old_style", "windows indexed");
        spec.indexed_paths = vec!["extras.window_end".into()];
        store.register_kind(spec).unwrap();
        let mut old = windowed(3);
        old.kind = "old_style".into();
        let mut other = windowed(30);
        other.producer_id = "ingestion.v2".into();
        store.bulk_store(&[old, windowed(1), other]).unwrap();
    }
    {
        // Version 4: a by-producer index per partition, no summaries.
        use redb::{ReadableTable, TableDefinition};
        const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
        const SUMMARIES: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("summaries");
        const PARTITIONS: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("partitions");
        const PRODUCERS: TableDefinition<&str, u64> = TableDefinition::new("producers");
        let db = redb::Database::open(dir.path().join(almanac::storage::DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        let partitions: Vec<(String, i64)> = txn
            .open_table(PARTITIONS)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| {
                let (k, _) = e.unwrap();
                (k.value().0.to_owned(), k.value().1)
            })
            .collect();
        assert_eq!(partitions.len(), 3);
        for (kind, start) in &partitions {
            let prefix = format!("part/{kind}/{start}/");
            let rec_name = format!("{prefix}rec");
            let prd_name = format!("{prefix}prd");
            let records: TableDefinition<(i64, u64), &[u8]> = TableDefinition::new(&rec_name);
            let prd: TableDefinition<(u64, i64, u64), ()> = TableDefinition::new(&prd_name);
            let producers = txn.open_table(PRODUCERS).unwrap();
            let rows: Vec<(u64, i64, u64)> = txn
                .open_table(records)
                .unwrap()
                .iter()
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    let record = almanac::storage::decode_record(v.value()).unwrap();
                    let producer = producers
                        .get(record.producer_id.as_str())
                        .unwrap()
                        .unwrap()
                        .value();
                    (producer, k.value().0, k.value().1)
                })
                .collect();
            let mut index = txn.open_table(prd).unwrap();
            for row in rows {
                index.insert(row, ()).unwrap();
            }
        }
        assert!(
            txn.delete_table(SUMMARIES).unwrap(),
            "a version-5 store has one"
        );
        txn.open_table(META)
            .unwrap()
            .insert("format_version", 4)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open_read_only(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::Storage(StorageError::NeedsWriter { .. })),
        "{err:?}"
    );
    let store = open(dir.path());
    let ending_late = |kind: &str| ScanRequest {
        kinds: Some(vec![kind.to_owned()]),
        paths: vec![PathConstraint {
            path: "extras.window_end".into(),
            matcher: PathMatch::Range {
                lower: Some((IndexValue::Instant(ts(BASE + 2 * HOUR)), true)),
                upper: None,
            },
        }],
        ..ScanRequest::default()
    };
    let ids = |request: &ScanRequest| -> Vec<u64> {
        store
            .scan(request)
            .unwrap()
            .map(|r| r.unwrap().id)
            .collect()
    };
    assert_eq!(ids(&ending_late("old_style")), [1]);
    let described = store.describe_scan(&ending_late("old_style")).unwrap();
    assert_eq!(described.index.as_deref(), Some("extras.window_end"));
    assert_eq!(ids(&ending_late("ingestion_volume")), [3]);
    // The upgrade read each partition's producers from its by-producer
    // index and deleted the index.
    let by_v2 = ScanRequest {
        producers: Some(vec!["ingestion.v2".into()]),
        ..ScanRequest::default()
    };
    assert_eq!(ids(&by_v2), [3]);
    assert_eq!(store.describe_scan(&by_v2).unwrap().partitions_pruned, 2);
    // New records are summarized again.
    store.store(&windowed(80)).unwrap();
    assert_eq!(ids(&ending_late("ingestion_volume")), [3, 4]);
    drop(store);
    assert_eq!(format_version(dir.path()), almanac::storage::FORMAT_VERSION);
    use redb::{ReadableDatabase, TableHandle};
    let db = redb::Database::open(dir.path().join(almanac::storage::DB_FILE)).unwrap();
    let txn = db.begin_read().unwrap();
    let left: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_owned())
        .filter(|n| n.ends_with("/prd"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Damages every copy of `needle` in the store's redb file by turning its
/// byte at `at` into 0xff (not UTF-8), as a bad disk block might.
fn damage(dir: &std::path::Path, needle: &[u8], at: usize) -> usize {
    let path = dir.join("almanac.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    let mut n = 0;
    let mut from = 0;
    while let Some(i) = bytes[from..]
        .windows(needle.len())
        .position(|w| w == needle)
    {
        bytes[from + i + at] = 0xff;
        from += i + needle.len();
        n += 1;
    }
    std::fs::write(&path, &bytes).unwrap();
    n
}

/// redb reads names with an `unwrap` of their UTF-8: a damaged name made
/// the library panic through the embedding program. Opening a store whose
/// kind registry is damaged, and listing the targets of one whose target
/// dictionary is, are errors (`StorageError::Internal`), not panics.
#[test]
fn a_damaged_store_gives_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        // A durable commit (a single `store` would be made durable by the
        // log, and redb's file catch up later).
        store.bulk_store(&[volume(7, 1, 10)]).unwrap();
    }
    // The target dictionary's entry for `src:sch.t7`: its value holds the
    // three parts one after another (the records hold them in their own
    // encoding, which the engine checks).
    assert!(damage(dir.path(), b"srcscht7", 6) >= 1);
    let store = Store::open(dir.path()).unwrap();
    match store.targets() {
        Err(Error::Storage(StorageError::Internal(message))) => {
            assert!(message.contains("Utf8Error"), "{message}")
        }
        other => panic!("expected an internal failure, got {other:?}"),
    }
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    assert!(damage(dir.path(), b"\"name\":\"recon_result\"", 10) >= 1);
    match Store::open(dir.path()) {
        Err(e @ Error::Storage(StorageError::Internal(_))) => {
            assert!(e.to_string().contains("may be damaged"), "{e}")
        }
        other => panic!("expected an internal failure, got {other:?}"),
    }
}
