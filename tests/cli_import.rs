//! `almanac import`: all or nothing, --skip-invalid, duplicates, stdin, line numbers and fields in errors, a locked store.

mod cli_support;

use almanac::Store;
use cli_support::*;

#[test]
fn imports_a_file_and_prints_the_counts() {
    let (dir, db) = store_dir();
    let lines: Vec<String> = (1..=5)
        .map(|d| volume_line(1, d, 100 * i64::from(d)))
        .collect();
    let file = write_jsonl(dir.path(), "in.jsonl", &lines);
    let (code, stdout, stderr) = parts(&run(&db, &["import", file.to_str().unwrap()]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("stored 5 records"), "{stdout}");
    assert!(stdout.contains("skipped 0 duplicates"), "{stdout}");
    let records = export(&db);
    assert_eq!(records.len(), 5);
    assert_eq!(records[0]["payload"]["rows"], 100);
    assert!(records[0]["id"].is_u64());
}

#[test]
fn an_invalid_line_stores_nothing_and_names_line_and_field() {
    let (dir, db) = store_dir();
    let mut lines: Vec<String> = (1..=4).map(|d| volume_line(1, d, 10)).collect();
    // Line 3: rows must be an integer >= 0 (the kind's schema).
    lines[2] = volume_line(1, 3, -5);
    let file = write_jsonl(dir.path(), "in.jsonl", &lines);
    let (code, stdout, stderr) = parts(&run(&db, &["import", file.to_str().unwrap()]));
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    let first = stderr.lines().next().unwrap_or("");
    assert!(first.contains("line 3"), "{stderr}");
    assert!(first.contains("payload.rows"), "{stderr}");
    assert!(export(&db).is_empty(), "nothing may be stored");
}

#[test]
fn a_missing_field_and_a_bad_json_line_are_reported_with_their_line() {
    let (dir, db) = store_dir();
    let good = volume_line(1, 1, 10);
    let missing_producer = good.replace(r#","producer_id":"ingestion.v1""#, "");
    let file = write_jsonl(
        dir.path(),
        "a.jsonl",
        &[good.clone(), String::new(), missing_producer],
    );
    let (code, _, stderr) = parts(&run(&db, &["import", file.to_str().unwrap()]));
    assert_eq!(code, 2);
    // Blank lines count: the bad record is on line 3.
    assert!(
        stderr.contains("line 3") && stderr.contains("producer_id"),
        "{stderr}"
    );

    let file = write_jsonl(dir.path(), "b.jsonl", &[good, "{not json".into()]);
    let (code, _, stderr) = parts(&run(&db, &["import", file.to_str().unwrap()]));
    assert_eq!(code, 2);
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(export(&db).is_empty());
}

#[test]
fn skip_invalid_stores_the_good_lines_and_reports_each_bad_one() {
    let (dir, db) = store_dir();
    let lines = vec![
        volume_line(1, 1, 10),
        volume_line(1, 2, -1),
        recon_line(1, 2, "pass"),
        recon_line(1, 3, "maybe"),
        volume_line(1, 4, 40),
    ];
    let file = write_jsonl(dir.path(), "in.jsonl", &lines);
    let (code, stdout, stderr) = parts(&run(
        &db,
        &["import", "--skip-invalid", file.to_str().unwrap()],
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("line 2:") && stderr.contains("payload.rows"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 4:") && stderr.contains("payload.outcome"),
        "{stderr}"
    );
    assert!(stdout.contains("stored 3 records"), "{stdout}");
    assert!(stdout.contains("rejected 2 invalid lines"), "{stdout}");
    assert_eq!(export(&db).len(), 3);
    // A line that is not UTF-8 is reported once, with its number once.
    let mut bytes = format!("{}\n", volume_line(2, 1, 10)).into_bytes();
    bytes.extend_from_slice(b"\xff\xfe\n");
    let file = dir.path().join("binary.jsonl");
    std::fs::write(&file, bytes).unwrap();
    let (code, _, stderr) = parts(&run(
        &db,
        &["import", "--skip-invalid", file.to_str().unwrap()],
    ));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "line 2: field `record` is not valid UTF-8",
        "{stderr}"
    );
}

#[test]
fn duplicates_are_counted_not_stored_again() {
    let (dir, db) = store_dir();
    let lines = vec![
        volume_line(1, 1, 10),
        volume_line(1, 1, 10),
        volume_line(1, 2, 20),
    ];
    let file = write_jsonl(dir.path(), "in.jsonl", &lines);
    let (code, stdout, _) = parts(&run(&db, &["import", file.to_str().unwrap()]));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("stored 2 records, skipped 1 duplicates"),
        "{stdout}"
    );
    let (code, stdout, _) = parts(&run(&db, &["import", file.to_str().unwrap()]));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("stored 0 records, skipped 3 duplicates"),
        "{stdout}"
    );
    assert_eq!(export(&db).len(), 2);
}

#[test]
fn reads_standard_input_with_and_without_a_dash() {
    let (dir, db) = store_dir();
    let input = format!("{}\n\n{}\n", volume_line(1, 1, 10), volume_line(2, 1, 20));
    let (code, stdout, stderr) = parts(&run_with_stdin(&db, &["import", "-"], &input));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("stored 2 records"), "{stdout}");
    let input = format!("{}\n{}", volume_line(3, 1, 10), volume_line(3, 2, 1));
    let (code, stdout, _) = parts(&run_with_stdin(&db, &["import"], &input));
    assert_eq!(code, 0);
    assert!(stdout.contains("stored 2 records"), "{stdout}");
    assert_eq!(export(&db).len(), 4);
    // The spool file is gone.
    let leftovers: Vec<_> = std::fs::read_dir(&db)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("spool"))
        .collect();
    assert!(leftovers.is_empty());
    drop(dir);
}

/// A FILE that cannot be read twice (a pipe named as a path, a FIFO) is
/// imported whole: the first pass copies what it checks, and the second
/// stores that copy (it used to store nothing, say so, and exit 0).
#[test]
fn a_pipe_or_fifo_given_as_the_file_is_imported_whole() {
    let (dir, db) = store_dir();
    let input = format!("{}\n{}\n", volume_line(1, 1, 10), volume_line(2, 1, 20));
    let (code, stdout, stderr) = parts(&run_with_stdin(&db, &["import", "/dev/stdin"], &input));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("stored 2 records"), "{stdout}");
    assert_eq!(export(&db).len(), 2);

    let fifo = dir.path().join("in.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let lines: Vec<String> = (1..=3).map(|d| volume_line(3, d, 5)).collect();
    let writer = {
        let (fifo, text) = (fifo.clone(), lines.join("\n"));
        std::thread::spawn(move || std::fs::write(fifo, text))
    };
    let (code, stdout, stderr) = parts(&run(&db, &["import", fifo.to_str().unwrap()]));
    assert!(writer.join().unwrap().is_ok());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("stored 3 records"), "{stdout}");
    assert_eq!(export(&db).len(), 5);
}

/// The spool of an import killed before it could remove it goes the next
/// time the store is opened for writing (a read-only open writes nothing).
#[test]
fn a_killed_imports_spool_is_removed_at_the_next_open() {
    let (_dir, db) = store_dir();
    let (code, _, stderr) = parts(&run(&db, &["stats"]));
    assert_eq!(code, 0, "{stderr}");
    let stale = db.join(".import-4242.jsonl.spool");
    std::fs::write(&stale, volume_line(1, 1, 10)).unwrap();
    let (code, _, stderr) = parts(&run(&db, &["stats"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stale.exists(), "a read-only open removed a file");
    let (code, _, stderr) = parts(&run(&db, &["retention", "--dry-run"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stale.exists(), "the stale spool is still there");
}

#[test]
fn invalid_standard_input_stores_nothing() {
    let (_dir, db) = store_dir();
    let input = format!("{}\n{{\"kind\": 3}}\n", volume_line(1, 1, 10));
    let (code, _, stderr) = parts(&run_with_stdin(&db, &["import", "-"], &input));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("line 2") && stderr.contains("kind"),
        "{stderr}"
    );
    assert!(export(&db).is_empty());
}

/// Exit 2 says nothing was written: refused input leaves no store behind
/// where there was none (a new directory, or an empty one), and leaves an
/// existing store as it was.
#[test]
fn refused_input_creates_no_store() {
    let (dir, db) = store_dir();
    let input = "garbage\n";
    let (code, _, stderr) = parts(&run_with_stdin(&db, &["import"], input));
    assert_eq!(code, 2, "{stderr}");
    assert!(!db.exists(), "the store directory was left behind");

    std::fs::create_dir(&db).unwrap();
    std::fs::write(db.join("notes.txt"), "mine").unwrap();
    let (code, _, stderr) = parts(&run_with_stdin(&db, &["import"], input));
    assert_eq!(code, 2, "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["notes.txt"]);

    let file = write_jsonl(dir.path(), "in.jsonl", &[volume_line(1, 1, 10)]);
    assert_eq!(
        run(&db, &["import", file.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let (code, _, stderr) = parts(&run_with_stdin(&db, &["import"], input));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(export(&db).len(), 1, "the store was kept");
}

#[test]
fn exported_lines_import_into_another_store() {
    let (dir, db) = store_dir();
    let file = write_jsonl(
        dir.path(),
        "in.jsonl",
        &[volume_line(1, 1, 10), recon_line(1, 1, "fail")],
    );
    assert_eq!(
        run(&db, &["import", file.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let exported = run(&db, &["export"]);
    let (code, stdout, stderr) = import_into(&dir.path().join("other"), &exported);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("stored 2 records"), "{stdout}");
}

/// Imports what `export` wrote into the store in `db`, from standard input.
fn import_into(db: &std::path::Path, exported: &std::process::Output) -> (i32, String, String) {
    parts(&run_with_stdin(
        db,
        &["import"],
        &String::from_utf8_lossy(&exported.stdout),
    ))
}

/// A minimal record whose input line is exactly `len` bytes: its canonical
/// form adds the defaults, and the id, so it is longer.
fn record_line_of(len: usize) -> String {
    let head = r#"{"kind":"k","target":{"table":"t"},"producer_id":"p","produced_at":"2024-01-01T00:00:00Z","payload":{"s":""#;
    let tail = r#""}}"#;
    format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()))
}

/// The 1 MiB limit holds for a line as given (spec §1: a record whose
/// JSON exceeds 1 MiB is rejected): a line of exactly 1 MiB is stored, and
/// although its canonical form (defaults, the id) is longer, it reads back
/// everywhere (log, read-only opens, export, import into another store);
/// one byte more is refused, naming the limit.
#[test]
fn a_line_of_exactly_1_mib_is_stored_and_reads_back_everywhere() {
    let (dir, db) = store_dir();
    let max = almanac::model::MAX_RECORD_BYTES;
    let file = write_jsonl(dir.path(), "over.jsonl", &[record_line_of(max + 1)]);
    let (code, _, stderr) = parts(&run(&db, &["import", file.to_str().unwrap()]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "line 1: field `record` is {} bytes of JSON, more than the limit of {max}",
            max + 1
        )),
        "{stderr}"
    );
    let file = write_jsonl(dir.path(), "max.jsonl", &[record_line_of(max)]);
    let (code, stdout, stderr) = parts(&run(&db, &["import", file.to_str().unwrap()]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("stored 1 records"), "{stdout}");
    // The log's line (over 1 MiB: the defaults and the id) reads back: a
    // read-only command opens the store.
    let (code, stdout, stderr) = parts(&run(&db, &["query", "k | stats count()"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"count()\":1"), "{stdout}");
    let exported = run(&db, &["export"]);
    assert!(
        exported.stdout.len() > max + 1,
        "the canonical line is longer"
    );
    assert!(exported.stdout.len() <= almanac::model::MAX_LINE_BYTES + 1);
    let (code, stdout, stderr) = import_into(&dir.path().join("other"), &exported);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("stored 1 records"), "{stdout}");
    // The export line without its id is over 1 MiB as given: refused.
    let text = String::from_utf8(exported.stdout).unwrap();
    let without_id = text.trim_end().replacen("\"id\":1,", "", 1);
    assert!(without_id.len() > max);
    let (code, _, stderr) = parts(&run_with_stdin(
        &dir.path().join("third"),
        &["import"],
        &without_id,
    ));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("more than the limit of 1048576"),
        "{stderr}"
    );
}

/// A record within 1 MiB as given whose canonical form grows past what a
/// line the store writes may hold (numbers written in full: `9e15` is
/// `9000000000000000.0`) is refused before anything is stored, naming the
/// form: every stored record reads back as a line.
#[test]
fn a_record_too_long_as_written_back_is_refused() {
    let (dir, db) = store_dir();
    let numbers = vec!["9e15"; 150_000].join(",");
    let line = format!(
        r#"{{"kind":"k","target":{{"table":"t"}},"producer_id":"p","produced_at":"2024-01-01T00:00:00Z","payload":{{"n":[{numbers}]}}}}"#
    );
    assert!(line.len() <= almanac::model::MAX_RECORD_BYTES);
    let file = write_jsonl(dir.path(), "grows.jsonl", &[line]);
    let (code, _, stderr) = parts(&run(&db, &["import", file.to_str().unwrap()]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("line 1: field `record`") && stderr.contains("as the store writes it back"),
        "{stderr}"
    );
    let (code, stdout, _) = parts(&run(&db, &["export"]));
    assert_eq!((code, stdout.as_str()), (0, ""));
}

#[test]
fn a_locked_store_fails_with_status_1_and_a_clear_message() {
    let (dir, db) = store_dir();
    let file = write_jsonl(dir.path(), "in.jsonl", &[volume_line(1, 1, 10)]);
    let held = Store::open(&db).expect("open");
    let (code, _, stderr) = parts(&run(&db, &["import", file.to_str().unwrap()]));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.lines().next().unwrap_or("").contains("already open"),
        "{stderr}"
    );
    drop(held);
    assert_eq!(
        run(&db, &["import", file.to_str().unwrap()]).status.code(),
        Some(0)
    );
}

#[test]
fn a_missing_file_fails_with_status_1() {
    let (dir, db) = store_dir();
    let missing = dir.path().join("nope.jsonl");
    let (code, _, stderr) = parts(&run(&db, &["import", missing.to_str().unwrap()]));
    assert_eq!(code, 1);
    assert!(stderr.contains("nope.jsonl"), "{stderr}");
}

#[test]
fn bad_usage_exits_2() {
    let (_dir, db) = store_dir();
    let (code, _, stderr) = parts(&run(&db, &["import", "--no-such-flag"]));
    assert_eq!(code, 2, "{stderr}");
    let (code, _, _) = parts(&run(&db, &["no-such-command"]));
    assert_eq!(code, 2);
    // Spec §3: the first line says what is wrong (then the usage), with
    // `--db` and with no argument at all (where clap prints only help).
    let bare = std::process::Command::new(env!("CARGO_BIN_EXE_almanac"))
        .env_remove("ALMANAC_DB")
        .output()
        .unwrap();
    for output in [run(&db, &[]), bare] {
        let (code, _, stderr) = parts(&output);
        assert_eq!(code, 2);
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains("command"), "{stderr}");
        assert!(stderr.contains("Usage: almanac"), "{stderr}");
    }
}

/// A key named twice in one object is refused naming its path (serde_json
/// would keep the last value silently).
#[test]
fn a_key_named_twice_is_refused() {
    let (_dir, db) = store_dir();
    let line = volume_line(1, 1, 10).replacen("\"rows\":", "\"rows\":1,\"rows\":", 1);
    assert!(line.contains("\"rows\":1,\"rows\":"), "{line}");
    let (code, _, stderr) = parts(&run_with_stdin(&db, &["import"], &format!("{line}\n")));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("line 1: field `payload.rows` appears twice in its object"),
        "{stderr}"
    );
}

/// An integer beyond i64 and u64 is refused naming its path: serde_json
/// would round it to a float, changing the value written back and making
/// two records that differ only there one record.
#[test]
fn an_integer_too_large_to_keep_is_refused() {
    let (_dir, db) = store_dir();
    let good = volume_line(1, 1, 10);
    let bad =
        volume_line(2, 1, 10).replacen("\"rows\":", "\"big\":123456789012345678901,\"rows\":", 1);
    assert!(bad.contains("\"big\":1234"), "{bad}");
    let (code, _, stderr) = parts(&run_with_stdin(
        &db,
        &["import"],
        &format!("{good}\n{bad}\n"),
    ));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("line 2: field `payload.big` is the integer 123456789012345678901"),
        "{stderr}"
    );
    // All or nothing: the good line was not stored either.
    let (code, stdout, stderr) = parts(&run(&db, &["query", "--format", "jsonl", "*"]));
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
}

/// Spec §3: `import` shows progress on a terminal for large input: a file
/// named, standard input redirected from one, and a pipe (whose length is
/// unknown until read: its store pass reads the spool, a file). Runs under
/// util-linux `script`, which gives the command a terminal.
#[test]
fn large_input_shows_progress_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let padding = "x".repeat(500);
    let lines: Vec<String> = (0..20_000)
        .map(|i| {
            volume_line(i % 500, 1 + (i / 500) as u32 % 28, i as i64).replacen(
                "\"rows\":",
                &format!("\"filter\":\"{padding}{i}\",\"rows\":"),
                1,
            )
        })
        .collect();
    let file = write_jsonl(dir.path(), "big.jsonl", &lines);
    assert!(std::fs::metadata(&file).unwrap().len() > 9 << 20);
    let bin = env!("CARGO_BIN_EXE_almanac");
    let file = file.display();
    // Each way, and what its progress must show: a bar while checking
    // where the length is known, and while storing (for a pipe, from the
    // spool). `--skip-invalid` has one pass, storing.
    for (i, (how, shows)) in [
        (
            format!("'{bin}' --db DB import '{file}'"),
            &["checking", "storing"][..],
        ),
        (
            format!("'{bin}' --db DB import - < '{file}'"),
            &["checking", "storing"][..],
        ),
        (
            format!("cat '{file}' | '{bin}' --db DB import"),
            &["storing"][..],
        ),
        (
            format!("'{bin}' --db DB import --skip-invalid - < '{file}'"),
            &["storing"][..],
        ),
    ]
    .iter()
    .enumerate()
    {
        let db = dir.path().join(format!("db{i}"));
        let command = how.replace("DB", &format!("'{}'", db.display()));
        let output = std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env_remove("ALMANAC_DB")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("util-linux `script` runs");
        let shown = String::from_utf8_lossy(&output.stdout);
        assert!(shown.contains("stored 20000 records"), "{how}: {shown}");
        for what in *shows {
            assert!(
                shown.contains(what),
                "{how}: no {what} progress in {shown:?}"
            );
        }
    }
}

/// A UTF-8 byte order mark first in the input (some editors and Windows
/// tools write one) is not part of the first record; elsewhere it is.
#[test]
fn a_byte_order_mark_first_in_the_input_is_skipped() {
    let (_dir, db) = store_dir();
    let input = format!(
        "\u{feff}{}\n{}\n",
        volume_line(1, 1, 1),
        volume_line(1, 2, 2)
    );
    let (code, stdout, stderr) = parts(&run_with_stdin(&db, &["import"], &input));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("stored 2 records"), "{stdout}");
    let input = format!(
        "{}\n\u{feff}{}\n",
        volume_line(1, 3, 3),
        volume_line(1, 4, 4)
    );
    let (code, _, stderr) = parts(&run_with_stdin(&db, &["import"], &input));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
}
