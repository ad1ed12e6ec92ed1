//! The log as the write-ahead log of small commits: records it holds that
//! redb's file lacks are stored again when the store opens, under their own
//! ids, and a log that cannot be replayed stops the open with a plain error.
//!
//! A crash between the log's sync and redb's next durable commit leaves
//! exactly this state (`tests/crash.rs` produces it with real processes);
//! here it is made by appending lines to the log of a closed store.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use almanac::query::ScanRequest;
use almanac::{MetadataRecord, MetadataRepository, Store, StoredRecord, TimeRange};
use common::*;

/// Stores two records (ids 1 and 2) and closes the store; returns them.
fn two_records(dir: &Path) -> Vec<MetadataRecord> {
    let records = vec![volume(0, 1, 10), volume(1, 2, 20)];
    let store = Store::open(dir).expect("open");
    store.bulk_store(&records).expect("stored");
    records
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

fn append_to_log(dir: &Path, id: u64, record: &MetadataRecord) {
    let line = StoredRecord {
        id,
        record: record.clone(),
    }
    .to_json_string();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(last_segment(dir))
        .expect("segment");
    writeln!(file, "{line}").expect("appended");
}

#[test]
fn records_only_in_the_log_are_stored_again_under_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let records = two_records(dir.path());
    let third = volume(0, 3, 30);
    let fourth = volume(2, 3, 40);
    append_to_log(dir.path(), 3, &third);
    append_to_log(dir.path(), 4, &fourth);

    let store = Store::open(dir.path()).expect("reopen replays");
    assert_eq!(store.write_stats().n_replayed, 2);
    let latest = store
        .latest(&third.target, "ingestion_volume")
        .unwrap()
        .expect("found");
    assert_eq!((latest.id, &latest.record), (3, &third));
    // Indexed like any record: the target's history and the scan find them.
    let history = store
        .history(&third.target, "ingestion_volume", TimeRange::ALL)
        .unwrap();
    let ids: Vec<u64> = history.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![1, 3]);
    assert_eq!(history[0].record, records[0]);
    let scanned: Vec<u64> = store
        .scan(&ScanRequest::default())
        .unwrap()
        .map(|r| r.unwrap().id)
        .collect();
    assert_eq!(scanned, vec![1, 2, 3, 4]);
    // The log lists each record once; the next record gets the next id.
    let logged: Vec<u64> = store.tail(1).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(logged, vec![1, 2, 3, 4]);
    let id = store.store(&volume(3, 4, 50)).unwrap().id;
    assert_eq!(id, 5);
    // A replayed record is a duplicate if stored again.
    assert!(store.store(&fourth).unwrap().duplicate);
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(store.write_stats().n_replayed, 0, "nothing left to replay");
}

/// Appends the line of `record` under `id` to a closed store holding two
/// records, and returns the error opening it gives.
fn open_error_after(id: u64, record: impl FnOnce(&[MetadataRecord]) -> MetadataRecord) -> String {
    let dir = tempfile::tempdir().unwrap();
    let records = two_records(dir.path());
    append_to_log(dir.path(), id, &record(&records));
    match Store::open(dir.path()) {
        Ok(_) => panic!("the open should fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_gap_in_the_log_stops_the_open() {
    let error = open_error_after(4, |_| volume(0, 3, 30));
    assert!(
        error.contains("replaying the log: record 3 is missing (the next line is record 4)"),
        "{error}"
    );
}

#[test]
fn a_log_line_that_repeats_a_stored_record_stops_the_open() {
    let error = open_error_after(3, |records| records[0].clone());
    assert!(
        error.contains("replaying the log: record 3 came back as Duplicate(1)"),
        "{error}"
    );
}

/// Whatever the writer did last (small commits, an expiry and the purge of
/// its tables, more small commits), closing makes redb's file catch up:
/// the next open has nothing to replay.
#[test]
fn a_closed_store_has_nothing_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for i in 0..5 {
            store.store(&volume(i, i as i64, 1)).unwrap();
        }
        store
            .set_retention("ingestion_volume", almanac::kinds::Retention::Days(1))
            .unwrap();
        let expired = store
            .apply_retention_at(ts(BASE + 100 * 24 * HOUR), false)
            .unwrap();
        assert_eq!(expired.n_records(), 5);
        // The purge runs on the writer thread between these writes.
        for i in 0..5 {
            let snapshot = MetadataRecord::new(
                "statistics_snapshot",
                target(i),
                object(serde_json::json!({ "row_count": i })),
                ts(BASE + i as i64 * HOUR),
                "stats.v1",
            );
            store.store(&snapshot).unwrap();
        }
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.write_stats().n_replayed, 0);
    assert_eq!(store.scan(&ScanRequest::default()).unwrap().count(), 5);
    assert_eq!(store.purge_pending().unwrap(), 0);
}

/// A read-only handle cannot replay, nor append what the log lacks: it
/// asks for a writer and changes no file; after a writable open it reads
/// what that open brought together.
#[test]
fn a_read_only_open_asks_for_a_writer_when_the_log_and_the_file_disagree() {
    use almanac::storage::StorageError;
    use almanac::{Error, StoreOptions};
    let read_only = |dir: &Path| Store::open_read_only(dir, StoreOptions::default());
    let needs_writer = |result: almanac::Result<Store>| match result {
        Err(Error::Storage(StorageError::NeedsWriter { reason, .. })) => reason,
        other => panic!("expected NeedsWriter, got {:?}", other.map(|_| ())),
    };

    // The log ahead of the file (records to replay).
    let dir = tempfile::tempdir().unwrap();
    two_records(dir.path());
    append_to_log(dir.path(), 3, &volume(0, 3, 30));
    let before = std::fs::read(last_segment(dir.path())).unwrap();
    let reason = needs_writer(read_only(dir.path()));
    assert!(reason.contains("log holds records 3..=3"), "{reason}");
    assert_eq!(std::fs::read(last_segment(dir.path())).unwrap(), before);
    drop(Store::open(dir.path()).expect("replays"));
    let store = read_only(dir.path()).expect("read-only after the replay");
    assert_eq!(store.scan(&ScanRequest::default()).unwrap().count(), 3);
    drop(store);

    // The log behind the file (lines to append).
    let dir = tempfile::tempdir().unwrap();
    two_records(dir.path());
    let segment = last_segment(dir.path());
    let text = std::fs::read_to_string(&segment).unwrap();
    let first_line = text.lines().next().unwrap();
    std::fs::write(&segment, format!("{first_line}\n")).unwrap();
    let reason = needs_writer(read_only(dir.path()));
    assert!(reason.contains("records 2..3 its log lacks"), "{reason}");
    drop(Store::open(dir.path()).expect("appends"));
    let store = read_only(dir.path()).expect("read-only after the append");
    let logged: Vec<u64> = store.tail(1).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(logged, vec![1, 2]);
    drop(store);

    // A torn last line (a write cut short) is passed over, not trimmed.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    file.write_all(b"{\"id\":3,\"kind\":\"ingest").unwrap();
    drop(file);
    let torn = std::fs::read(&segment).unwrap();
    let store = read_only(dir.path()).expect("a torn tail needs no writer");
    assert_eq!(store.scan(&ScanRequest::default()).unwrap().count(), 2);
    // Nothing is ever sent to a read-only handle's subscribers.
    assert!(store.subscribe().recv().is_err());
    drop(store);
    assert_eq!(std::fs::read(&segment).unwrap(), torn);

    // A file whose creation was cut short (no redb magic yet) is left for
    // a writable open to remove.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("almanac.redb");
    std::fs::write(&file, [0u8; 64]).unwrap();
    let reason = needs_writer(read_only(dir.path()));
    assert!(reason.contains("cut short"), "{reason}");
    assert_eq!(std::fs::read(&file).unwrap(), [0u8; 64]);
}

/// A log line over 1 MiB (a store written before the size limit counted
/// the canonical form could hold one) is a complete line: neither a
/// read-only open nor a writable one takes it for a torn write.
#[test]
fn a_log_line_over_the_size_limit_is_not_taken_for_a_torn_one() {
    let dir = tempfile::tempdir().unwrap();
    let records = two_records(dir.path());
    let segment = last_segment(dir.path());
    let text = std::fs::read_to_string(&segment).unwrap();
    let first_line = text.lines().next().unwrap();
    let mut big = records[1].clone();
    big.extras.insert(
        "padding".into(),
        "x".repeat(almanac::model::MAX_RECORD_BYTES).into(),
    );
    let line = StoredRecord { id: 2, record: big }.to_json_string();
    std::fs::write(&segment, format!("{first_line}\n{line}\n")).unwrap();
    let before = std::fs::read(&segment).unwrap();
    let store = Store::open_read_only(dir.path(), almanac::StoreOptions::default())
        .expect("the last line's id reads back");
    drop(store);
    let store = Store::open(dir.path()).expect("opens for writing");
    assert_eq!(store.write_stats().n_replayed, 0);
    drop(store);
    assert_eq!(std::fs::read(&segment).unwrap(), before, "the log was cut");
}

/// A log line over 1 MiB that the redb file lacks (a store written before
/// the size limit counted the canonical form, then a crash) is replayed.
#[test]
fn a_log_line_over_the_size_limit_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    two_records(dir.path());
    let mut big = volume(2, 3, 30);
    big.extras.insert(
        "padding".into(),
        "x".repeat(almanac::model::MAX_RECORD_BYTES).into(),
    );
    append_to_log(dir.path(), 3, &big);
    let store = Store::open(dir.path()).expect("replays");
    assert_eq!(store.write_stats().n_replayed, 1);
    let latest = store
        .latest(&big.target, "ingestion_volume")
        .unwrap()
        .expect("stored");
    assert_eq!((latest.id, &latest.record), (3, &big));
    assert_eq!(store.tail(3).unwrap().len(), 1);
}

/// A large batch's log lines are written while the next one commits, or
/// once the writer is idle: through `Store::tail` each record is in the
/// log as soon as its call returned, between small writes too, and the
/// reopened store's log holds every record once, in id order.
#[test]
fn large_batches_are_in_the_log_once_their_calls_return() {
    let dir = tempfile::tempdir().expect("temp dir");
    let batch = |from: usize| -> Vec<MetadataRecord> {
        (from..from + 3_000)
            .map(|i| volume(i % 40, i as i64, i as i64))
            .collect()
    };
    let mut expected = 0u64;
    {
        let store = Store::open(dir.path()).expect("open");
        for round in 0..3 {
            store.bulk_store(&batch(round * 3_000)).expect("stored");
            expected += 3_000;
            assert_eq!(
                tail_ids(&store),
                (1..=expected).collect::<Vec<u64>>(),
                "round {round}"
            );
            // A single record between large batches.
            store
                .store(&volume(0, 100_000 + round as i64, 1))
                .expect("stored");
            expected += 1;
            assert_eq!(store.tail(expected).expect("tail").len(), 1);
        }
        // Two large batches back to back, then the store is dropped.
        store.bulk_store(&batch(20_000)).expect("stored");
        store.bulk_store(&batch(30_000)).expect("stored");
        expected += 6_000;
    }
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(tail_ids(&store), (1..=expected).collect::<Vec<u64>>());
}

/// The ids of every record in the store's log, through `Store::tail`.
fn tail_ids(store: &Store) -> Vec<u64> {
    store.tail(0).expect("tail").iter().map(|r| r.id).collect()
}
