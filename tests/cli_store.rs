//! `almanac stats`, `export` (all records, broken pipe), `demo` (deterministic, refuses a filled store), `compact`, `--db`/`$ALMANAC_DB`.

mod cli_support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use almanac::Store;
use cli_support::*;
use serde_json::Value;

fn demo(db: &std::path::Path, seed: &str) -> (i32, String, String) {
    parts(&run(
        db,
        &[
            "demo",
            "--seed",
            seed,
            "--targets",
            "12",
            "--days",
            "20",
            "--end",
            "2024-03-01T12:00:00Z",
        ],
    ))
}

#[test]
fn stats_report_records_partitions_and_span_per_kind() {
    let (dir, db) = store_dir();
    let file = write_jsonl(
        dir.path(),
        "in.jsonl",
        &[
            volume_line(1, 1, 1),
            volume_line(1, 3, 2),
            recon_line(1, 2, "pass"),
        ],
    );
    assert_eq!(
        run(&db, &["import", file.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let (code, stdout, stderr) = parts(&run(&db, &["stats"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("size:"), "{stdout}");
    assert!(
        stdout.contains("ingestion_volume") && stdout.contains("total"),
        "{stdout}"
    );

    let (code, stdout, _) = parts(&run(&db, &["stats", "--format", "json"]));
    assert_eq!(code, 0);
    let stats: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(stats["records"], 3);
    assert_eq!(stats["partitions"], 3);
    assert_eq!(stats["oldest"], "2024-03-01T05:00:00Z");
    assert_eq!(stats["newest"], "2024-03-03T05:00:00Z");
    assert!(stats["db_bytes"].as_u64().unwrap() > 0);
    if cfg!(unix) {
        assert!(stats["db_allocated_bytes"].as_u64().unwrap() > 0, "{stats}");
    }
    assert!(stats["log_bytes"].as_u64().unwrap() > 0);
    let volume = &stats["kinds"].as_array().unwrap()[0];
    assert_eq!(volume["kind"], "ingestion_volume");
    assert_eq!(volume["records"], 2);
    assert_eq!(volume["partitions"], 2);
}

#[test]
fn stats_of_a_locked_store_fail_with_status_1() {
    let (_dir, db) = store_dir();
    let _held = Store::open(&db).unwrap();
    let (code, _, stderr) = parts(&run(&db, &["stats"]));
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("already open"),
        "{stderr}"
    );
}

#[test]
fn export_writes_every_record_in_time_order() {
    let (dir, db) = store_dir();
    let file = write_jsonl(
        dir.path(),
        "in.jsonl",
        &[
            volume_line(1, 3, 3),
            volume_line(1, 1, 1),
            recon_line(1, 2, "fail"),
        ],
    );
    assert_eq!(
        run(&db, &["import", file.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let records = export(&db);
    let times: Vec<&str> = records
        .iter()
        .map(|r| r["produced_at"].as_str().unwrap())
        .collect();
    assert_eq!(
        times,
        [
            "2024-03-01T05:00:00Z",
            "2024-03-02T06:00:00Z",
            "2024-03-03T05:00:00Z"
        ]
    );
    assert_eq!(records[0]["id"], 2);
}

#[test]
fn a_reader_that_goes_away_ends_export_quietly_with_status_0() {
    let (_dir, db) = store_dir();
    let (code, _, stderr) = parts(&run(
        &db,
        &[
            "demo",
            "--targets",
            "20",
            "--days",
            "30",
            "--end",
            "2024-03-01T12:00:00Z",
        ],
    ));
    assert_eq!(code, 0, "{stderr}");
    let mut child = command(&db)
        .arg("export")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here, like `almanac export | head -1`.
    assert!(first.starts_with("{\"id\":"), "{first}");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn demo_is_deterministic_and_covers_the_standard_kinds() {
    let (dir, db) = store_dir();
    let (code, stdout, stderr) = demo(&db, "7");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("12 tables"), "{stdout}");
    let first = export(&db);
    let other = dir.path().join("other");
    assert_eq!(demo(&other, "7").0, 0);
    assert_eq!(export(&other), first);
    let third = dir.path().join("third");
    assert_eq!(demo(&third, "8").0, 0);
    assert_ne!(export(&third), first);

    for kind in [
        "ingestion_volume",
        "ingestion_runtime",
        "recon_result",
        "schema_snapshot",
        "statistics_snapshot",
    ] {
        assert!(first.iter().any(|r| r["kind"] == kind), "no {kind}");
    }
    let outcomes: Vec<&str> = first
        .iter()
        .filter(|r| r["kind"] == "recon_result")
        .map(|r| r["payload"]["outcome"].as_str().unwrap())
        .collect();
    assert!(outcomes.contains(&"pass") && outcomes.contains(&"timeout"));
    let linked = first.iter().any(|r| {
        r["kind"] == "recon_result"
            && r["payload"]["ingestion_run_ids"][0]
                .as_str()
                .is_some_and(|id| id.starts_with("run-"))
    });
    assert!(linked);
    assert!(first.iter().any(|r| r["context"]["run_id"] == "run-123"));
    assert!(first
        .iter()
        .all(|r| r["produced_at"].as_str().unwrap() <= "2024-03-01T12:00:00Z"));
    assert!(first
        .iter()
        .filter(|r| r["kind"] == "ingestion_volume")
        .all(|r| r["extras"]["window_start"].is_string()));
}

#[test]
fn demo_refuses_a_store_that_has_records() {
    let (_dir, db) = store_dir();
    assert_eq!(demo(&db, "1").0, 0);
    let n = export(&db).len();
    let (code, _, stderr) = demo(&db, "2");
    assert_eq!(code, 2);
    assert!(stderr.contains("already holds"), "{stderr}");
    assert_eq!(export(&db).len(), n);
    let (code, _, _) = parts(&run(&db, &["demo", "--end", "yesterday"]));
    assert_eq!(code, 2);
}

/// An `--end` whose history would start before the year 0000 is refused
/// as `--end`, before a store is made (it named "record #0" before).
#[test]
fn demo_refuses_an_end_too_early_for_its_days() {
    let (dir, _) = store_dir();
    let db = dir.path().join("early");
    let args = ["demo", "--end", "0000-02-01T00:00:00Z", "--days", "40"];
    let (code, stdout, stderr) = parts(&run(&db, &args));
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("invalid --end `0000-02-01T00:00:00Z`: 40 days of history"),
        "{stderr}"
    );
    assert!(!db.exists(), "no store made");
    // A month later the same history fits (its first window starts on
    // 0000-01-01) and is stored.
    let args = [
        "demo",
        "--end",
        "0000-03-01T00:00:00Z",
        "--days",
        "30",
        "--targets",
        "2",
    ];
    let (code, _, stderr) = parts(&run(&db, &args));
    assert_eq!(code, 0, "{stderr}");
    assert!(!export(&db).is_empty());
}

#[test]
fn the_store_comes_from_db_or_almanac_db() {
    let (dir, db) = store_dir();
    let file = write_jsonl(dir.path(), "in.jsonl", &[volume_line(1, 1, 1)]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_almanac"))
        .env("ALMANAC_DB", &db)
        .args(["import", file.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(export(&db).len(), 1);
    // Without either, ./metadata in the working directory.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_almanac"))
        .env_remove("ALMANAC_DB")
        .current_dir(dir.path())
        .args(["import", file.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(dir.path().join("metadata").join("almanac.redb").exists());
    // An empty $ALMANAC_DB counts as unset: ./metadata again.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_almanac"))
        .env("ALMANAC_DB", "")
        .current_dir(dir.path())
        .args(["stats", "--format", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(stats["records"], 1, "{stats}");
}

#[test]
fn compact_rewrites_a_closed_store_and_refuses_a_held_one() {
    let (dir, db) = store_dir();
    let file = write_jsonl(
        dir.path(),
        "in.jsonl",
        &[volume_line(1, 1, 1), recon_line(1, 2, "pass")],
    );
    assert_eq!(
        run(&db, &["import", file.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let (code, stdout, stderr) = parts(&run(&db, &["compact", "--format", "json"]));
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let after = report["bytes_after"].as_u64().unwrap();
    assert!(
        after <= report["bytes_before"].as_u64().unwrap(),
        "{report}"
    );
    assert_eq!(
        after,
        std::fs::metadata(db.join("almanac.redb")).unwrap().len()
    );
    let (code, stdout, _) = parts(&run(&db, &["export"]));
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");

    let held = Store::open(&db).unwrap();
    let (code, _, stderr) = parts(&run(&db, &["compact"]));
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("already open"),
        "{stderr}"
    );
    drop(held);

    let missing = dir.path().join("no-store-here");
    let (code, _, stderr) = parts(&run(&missing, &["compact"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("no store at"), "{stderr}");
    assert!(!missing.exists());
}

/// A damaged file that redb reads with an `unwrap` (a kind name that is not
/// UTF-8) made every command panic with status 101; the CLI now reports an
/// internal failure with status 1, names the store and how to rebuild it,
/// and prints no panic.
#[test]
fn a_damaged_store_is_an_error_not_a_panic() {
    let (dir, db) = store_dir();
    let file = write_jsonl(dir.path(), "in.jsonl", &[volume_line(1, 1, 10)]);
    assert_eq!(
        run(&db, &["import", file.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let path = db.join("almanac.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    let needle = b"\"name\":\"recon_result\"";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the kind registry holds recon_result's spec");
    bytes[at + 10] = 0xff;
    std::fs::write(&path, &bytes).unwrap();
    for args in [
        &["stats"][..],
        &["kinds"],
        &["query", "recon_result | latest"],
    ] {
        let (code, _, stderr) = parts(&run(&db, args));
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ")
                && stderr.contains("internal failure (")
                && stderr.contains("may be damaged")
                && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
    // The log still reads, and rebuilds the store elsewhere.
    let (code, stdout, _) = parts(&run(&db, &["tail"]));
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 1);
}
