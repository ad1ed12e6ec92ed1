//! `almanac tail`: JSONL in id order from the log, --since, --follow while another process holds the store.

mod cli_support;

use std::process::Stdio;

use almanac::{MetadataRecord, MetadataRepository, Store};
use cli_support::*;

fn import_days(dir: &std::path::Path, db: &std::path::Path, days: u32) {
    let lines: Vec<String> = (1..=days)
        .map(|d| volume_line(1, d, i64::from(d)))
        .collect();
    let file = write_jsonl(dir, "in.jsonl", &lines);
    assert_eq!(
        run(db, &["import", file.to_str().unwrap()]).status.code(),
        Some(0)
    );
}

fn ids(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            v["id"].as_u64().expect("id")
        })
        .collect()
}

#[test]
fn prints_every_record_in_id_order_and_from_since() {
    let (dir, db) = store_dir();
    import_days(dir.path(), &db, 5);
    let (code, stdout, stderr) = parts(&run(&db, &["tail"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&stdout), vec![1, 2, 3, 4, 5]);
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "ingestion_volume");
    assert_eq!(first["produced_at"], "2024-03-01T05:00:00Z");

    let (code, stdout, _) = parts(&run(&db, &["tail", "--since", "4"]));
    assert_eq!(code, 0);
    assert_eq!(ids(&stdout), vec![4, 5]);
    let (code, stdout, _) = parts(&run(&db, &["tail", "--since", "99"]));
    assert_eq!(code, 0);
    assert!(stdout.is_empty());
}

#[test]
fn works_while_another_process_holds_the_store() {
    let (dir, db) = store_dir();
    import_days(dir.path(), &db, 3);
    let _held = Store::open(&db).expect("open");
    let (code, stdout, stderr) = parts(&run(&db, &["tail"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&stdout), vec![1, 2, 3]);
}

#[test]
fn a_bad_since_is_bad_usage() {
    let (_dir, db) = store_dir();
    let (code, _, stderr) = parts(&run(&db, &["tail", "--since", "ten"]));
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn follow_prints_new_commits_as_they_land() {
    let (dir, db) = store_dir();
    import_days(dir.path(), &db, 2);
    let mut child = command(&db)
        .args(["tail", "--follow", "--since", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tail starts");
    let lines = line_reader(child.stdout.take().expect("stdout"));
    assert_eq!(ids(&next_line(&lines)), vec![2]);

    // Another process (this test) holds the store and writes.
    let store = Store::open(&db).expect("open");
    for day in 10..13 {
        let record = MetadataRecord::from_json_str(&volume_line(7, day, 1)).unwrap();
        store.store(&record).expect("store");
    }
    for expected in 3..6 {
        let line = next_line(&lines);
        assert_eq!(ids(&line), vec![expected], "{line}");
    }
    // A batch lands too.
    let batch: Vec<MetadataRecord> = (14..20)
        .map(|d| MetadataRecord::from_json_str(&recon_line(7, d, "pass")).unwrap())
        .collect();
    store.bulk_store(&batch).expect("bulk");
    for expected in 6..12 {
        assert_eq!(ids(&next_line(&lines)), vec![expected]);
    }
    stop(child);
}

#[test]
fn follow_picks_up_new_log_segments() {
    let (_dir, db) = store_dir();
    let options = almanac::StoreOptions {
        log_segment_bytes: 512,
        ..almanac::StoreOptions::default()
    };
    let store = Store::open_with(&db, options).expect("open");
    let mut child = command(&db)
        .args(["tail", "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tail starts");
    let lines = line_reader(child.stdout.take().expect("stdout"));
    for day in 1..=12 {
        let record = MetadataRecord::from_json_str(&volume_line(1, day, 5)).unwrap();
        store.store(&record).expect("store");
    }
    let segments = std::fs::read_dir(db.join("log")).unwrap().count();
    assert!(
        segments > 2,
        "the test needs several segments, got {segments}"
    );
    for expected in 1..=12 {
        assert_eq!(ids(&next_line(&lines)), vec![expected]);
    }
    stop(child);
}

#[test]
fn a_directory_without_a_store_is_an_error_and_stays_untouched() {
    let (_dir, db) = store_dir();
    let (code, stdout, stderr) = parts(&run(&db, &["tail"]));
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(stderr.starts_with("error: no store at"), "{stderr}");
    assert!(!db.exists(), "tail must not create a store");
}
