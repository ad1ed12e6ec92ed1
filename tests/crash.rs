//! Crash consistency: a child process bulk-stores batches in a loop and is
//! killed (SIGKILL) at random moments; after each kill the store is reopened
//! and must hold every acknowledged batch, no partial batch, and a log that
//! lists exactly the stored records once each in id order.
//!
//! This target has its own `main` (harness = false): run without arguments
//! it is the parent; with `ALMANAC_CRASH_CHILD` set it is the writer child.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use almanac::query::ScanRequest;
use almanac::storage::StorageError;
use almanac::{MetadataRecord, MetadataRepository, Store, StoreOptions};
use common::*;
use serde_json::json;

const CHILD_ENV: &str = "ALMANAC_CRASH_CHILD";
const SINGLES_ENV: &str = "ALMANAC_CRASH_SINGLES";
/// Records the singles child stores one `store` call at a time before it aborts.
const SINGLES: usize = 32;
/// Threads the singles child stores them from.
const SINGLE_THREADS: usize = 4;
const START_ENV: &str = "ALMANAC_CRASH_START";
/// Records in batch `b`: odd batches are large (written while they are
/// prepared, in chunks: a long write transaction for a kill to land in); every fourth is stored
/// one record at a time from four threads (commits made durable by the
/// log, then by redb later).
fn batch_len(b: u64) -> usize {
    if is_singles(b) {
        40
    } else if b.is_multiple_of(2) {
        200
    } else {
        4_500
    }
}

fn is_singles(b: u64) -> bool {
    b % 4 == 2
}
const ROUNDS: usize = 20;

fn batch(b: u64) -> Vec<MetadataRecord> {
    (0..batch_len(b))
        .map(|i| {
            let mut r = volume(i % 17, b as i64, i as i64);
            r.payload = object(json!({ "rows": i, "batch": b, "i": i }));
            r
        })
        .collect()
}

fn child(dir: &str) {
    let start: u64 = std::env::var(START_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let store = Store::open(dir).expect("child opens the store");
    let stdout = std::io::stdout();
    for b in start.. {
        let records = batch(b);
        if is_singles(b) {
            std::thread::scope(|scope| {
                for t in 0..SINGLE_THREADS {
                    let (store, records) = (&store, &records);
                    scope.spawn(move || {
                        for r in records.iter().skip(t).step_by(SINGLE_THREADS) {
                            store.store(r).expect("child stores");
                        }
                    });
                }
            });
        } else {
            store.bulk_store(&records).expect("child stores");
        }
        let mut out = stdout.lock();
        writeln!(out, "ack {b}").expect("parent reads");
        out.flush().expect("parent reads");
    }
}

/// Stores records one at a time from four threads (each commit, of one to
/// four records, made durable by the log, not by redb), acknowledges each,
/// then aborts: no destructor runs, so the writer never makes redb's file
/// catch up.
fn singles_child(dir: &str) {
    let store = Store::open(dir).expect("child opens the store");
    std::thread::scope(|scope| {
        for t in 0..SINGLE_THREADS {
            let store = &store;
            scope.spawn(move || {
                for i in (t..SINGLES).step_by(SINGLE_THREADS) {
                    let mut r = volume(i % 5, 1, i as i64);
                    r.payload = object(json!({ "rows": i, "single": i }));
                    store.store(&r).expect("child stores");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {i}").expect("parent reads");
                    out.flush().expect("parent reads");
                }
            });
        }
    });
    std::process::abort();
}

/// The records acknowledged by a child that aborted right after its last
/// `store` are all there after reopening: replayed from the log.
fn replay_after_abort() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("own path");
    let output = Command::new(&exe)
        .env(SINGLES_ENV, dir.path())
        .stderr(Stdio::null())
        .output()
        .expect("run child");
    assert!(!output.status.success(), "the child aborts");
    let mut acked: Vec<u64> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(parse_ack)
        .collect();
    acked.sort_unstable();
    assert_eq!(acked.len(), SINGLES, "every store was acknowledged");
    // A read-only handle cannot replay: it asks for a writer, and changes
    // nothing (the writable open below still finds the records to replay).
    match Store::open_read_only(dir.path(), StoreOptions::default()) {
        Err(almanac::Error::Storage(StorageError::NeedsWriter { .. })) => {}
        other => panic!(
            "a read-only open before the replay: {:?}",
            other.map(|_| ())
        ),
    }
    let store = Store::open(dir.path()).expect("reopen");
    let replayed = store.write_stats().n_replayed;
    assert!(
        (1..=SINGLES as u64).contains(&replayed),
        "the last records were durable only in the log, so opening replays them ({replayed})"
    );
    let records: Vec<_> = store
        .scan(&ScanRequest::default())
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("scan reads");
    let mut singles: Vec<u64> = records
        .iter()
        .map(|r| r.record.payload["single"].as_u64().expect("single"))
        .collect();
    singles.sort_unstable();
    assert_eq!(singles, acked, "every acknowledged record is stored once");
    let ids: Vec<u64> = records.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        (1..=SINGLES as u64).collect::<Vec<_>>(),
        "ids are kept"
    );
    let log_ids: Vec<u64> = store.tail(1).expect("log").iter().map(|r| r.id).collect();
    assert_eq!(log_ids, ids, "the log lists each record once");
    // Replayed records are indexed like any other.
    let last = records.last().expect("records");
    let latest = store
        .latest(&last.record.target, "ingestion_volume")
        .expect("latest")
        .expect("found");
    assert_eq!(latest.id, last.id);
    // A second reopen has nothing left to replay, and a read-only one
    // now sees every record.
    drop(store);
    let reader = Store::open_read_only(dir.path(), StoreOptions::default()).expect("read-only");
    assert_eq!(
        reader.scan(&ScanRequest::default()).expect("scan").count(),
        SINGLES
    );
    drop(reader);
    let store = Store::open(dir.path()).expect("reopen again");
    assert_eq!(store.write_stats().n_replayed, 0);
    assert_eq!(
        store.scan(&ScanRequest::default()).expect("scan").count(),
        SINGLES
    );
}

/// splitmix64: a seeded, dependency-free source of kill points.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn parent() {
    let seed: u64 = std::env::var("ALMANAC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("crash test seed {seed} (set ALMANAC_CRASH_SEED to replay)");
    let mut rng = seed;
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("own path");
    let mut acked: Vec<u64> = Vec::new();
    let mut next_batch = 0u64;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, dir.path())
            .env(START_ENV, next_batch.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        // Kill after 0..4 acknowledgements: at open, mid-batch, mid-commit, mid-log.
        let kill_after = next_random(&mut rng) % 5;
        for _ in 0..kill_after {
            match lines.next() {
                Some(Ok(line)) => acked.push(parse_ack(&line)),
                _ => break,
            }
        }
        child.kill().expect("kill child");
        child.wait().expect("reap child");
        // Acknowledgements written before the kill still count.
        for line in lines.map_while(Result::ok) {
            acked.push(parse_ack(&line));
        }
        next_batch = check_store(dir.path(), &acked, round) + 1;
    }
    println!("{} batches acknowledged over {ROUNDS} kills", acked.len());
}

fn parse_ack(line: &str) -> u64 {
    line.strip_prefix("ack ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected child output {line:?}"))
}

/// Reopens the store and checks it; returns the highest batch stored.
fn check_store(dir: &std::path::Path, acked: &[u64], round: usize) -> u64 {
    let store = Store::open(dir).unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
    let records: Vec<_> = store
        .scan(&ScanRequest::default())
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("scan reads");
    let mut per_batch: BTreeMap<u64, usize> = BTreeMap::new();
    for r in &records {
        let b = r.record.payload["batch"].as_u64().expect("batch number");
        *per_batch.entry(b).or_default() += 1;
    }
    for b in acked {
        assert!(
            per_batch.contains_key(b),
            "round {round}: acknowledged batch {b} is missing"
        );
    }
    for (b, n) in &per_batch {
        if is_singles(*b) && !acked.contains(b) {
            // Killed part-way: each single store is all or nothing.
            assert!(
                *n <= batch_len(*b),
                "round {round}: batch {b} has extra records"
            );
        } else {
            assert_eq!(*n, batch_len(*b), "round {round}: batch {b} is partial");
        }
    }
    let mut store_ids: Vec<u64> = records.iter().map(|r| r.id).collect();
    store_ids.sort_unstable();
    let log_ids: Vec<u64> = store.tail(1).expect("log").iter().map(|r| r.id).collect();
    assert_eq!(
        log_ids, store_ids,
        "round {round}: the log differs from the store"
    );
    // Spot-check that a stored record still reads back whole.
    if let Some(last) = records.last() {
        let latest = store
            .latest(&last.record.target, "ingestion_volume")
            .expect("latest");
        assert!(latest.is_some());
    }
    per_batch.keys().next_back().copied().unwrap_or(0)
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    if let Ok(dir) = std::env::var(SINGLES_ENV) {
        singles_child(&dir);
        return;
    }
    let tests: [(&str, fn()); 2] = [
        ("crash_consistency", parent),
        ("replay_after_abort", replay_after_abort),
    ];
    let mut failed = 0;
    for (name, test) in tests {
        if std::panic::catch_unwind(test).is_ok() {
            println!("test {name} ... ok");
        } else {
            println!("test {name} ... FAILED");
            failed += 1;
        }
    }
    let passed = tests.len() - failed;
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "test result: {verdict}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out"
    );
    if failed > 0 {
        std::process::exit(101);
    }
}
