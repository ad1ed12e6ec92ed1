//! `almanac query` and `export QUERY`: every format, --param, --explain, bad queries (exit 2, column and caret), a locked store.

mod cli_support;

use almanac::Store;
use cli_support::*;
use serde_json::{json, Value};

/// A store with 3 volumes and 3 recon results over two tables.
fn fixture() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, db) = store_dir();
    let lines = vec![
        volume_line(1, 1, 100),
        volume_line(1, 2, 200),
        volume_line(2, 1, 50),
        recon_line(1, 1, "pass"),
        recon_line(1, 2, "fail"),
        recon_line(2, 1, "timeout"),
    ];
    let file = write_jsonl(dir.path(), "in.jsonl", &lines);
    let (code, _, stderr) = parts(&run(&db, &["import", file.to_str().unwrap()]));
    assert_eq!(code, 0, "{stderr}");
    (dir, db)
}

fn query(db: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["query"];
    all.extend_from_slice(args);
    parts(&run(db, &all))
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn jsonl_is_the_default_off_a_terminal_and_record_rows_are_canonical() {
    let (_dir, db) = fixture();
    let (code, stdout, stderr) = query(&db, &["ingestion_volume{table=\"t1\"}"]);
    assert_eq!(code, 0, "{stderr}");
    let rows = json_lines(&stdout);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], 1);
    assert_eq!(rows[0]["kind"], "ingestion_volume");
    assert_eq!(rows[0]["target"]["table"], "t1");
    assert_eq!(rows[0]["payload"]["rows"], 100);
    assert_eq!(rows[0]["produced_at"], "2024-03-01T05:00:00Z");
    assert_eq!(rows[1]["payload"]["rows"], 200);
}

#[test]
fn computed_fields_are_extra_top_level_keys() {
    let (_dir, db) = fixture();
    let (code, stdout, stderr) = query(
        &db,
        &["ingestion_volume | extend double = payload.rows * 2 | limit 1"],
    );
    assert_eq!(code, 0, "{stderr}");
    let rows = json_lines(&stdout);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["double"], 200);
    assert_eq!(rows[0]["kind"], "ingestion_volume");
}

#[test]
fn select_and_stats_rows_keep_column_order() {
    let (_dir, db) = fixture();
    let (code, stdout, _) = query(
        &db,
        &["recon_result | stats countif(payload.outcome = \"fail\") as failures, count() as checks by target"],
    );
    assert_eq!(code, 0);
    let first = stdout.lines().next().unwrap();
    assert_eq!(first, r#"{"target":"src:sch.t1","failures":1,"checks":2}"#);
    let rows = json_lines(&stdout);
    assert_eq!(
        rows[1],
        json!({"target": "src:sch.t2", "failures": 0, "checks": 1})
    );

    let (code, stdout, _) = query(
        &db,
        &[
            "--format",
            "json",
            "ingestion_volume | select payload.rows as rows, target | sort rows desc",
        ],
    );
    assert_eq!(code, 0);
    let all: Value = serde_json::from_str(&stdout).expect("one JSON array");
    assert_eq!(
        all,
        json!([
            {"rows": 200, "target": "src:sch.t1"},
            {"rows": 100, "target": "src:sch.t1"},
            {"rows": 50, "target": "src:sch.t2"}
        ])
    );
    assert!(stdout.find("\"rows\"") < stdout.find("\"target\""));
}

/// RFC 3339 has four-digit years: an instant a query computes outside
/// 0000-9999 (`now` plus a huge duration, `timestamp` of text whose offset
/// carries it past 9999, `bin` of one) is output as null, never as some other
/// text; it still compares as the instant it is.
#[test]
fn instants_outside_rfc3339_years_are_output_as_null() {
    let (_dir, db) = fixture();
    let (code, stdout, stderr) = query(
        &db,
        &[
            "ingestion_volume | select now + 100000000d as far, now - 9000000d as past, \
             timestamp(\"9999-12-31T23:59:59-23:59\") as shifted, \
             timestamp(\"9999-12-31T23:59:59Z\") as last, \
             bin(now + 9000000d, 7w) as binned | limit 1",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let rows = json_lines(&stdout);
    assert_eq!(
        rows,
        vec![json!({"far": null, "past": null, "shifted": null,
                    "last": "9999-12-31T23:59:59Z", "binned": null})]
    );
    let (code, stdout, stderr) = query(
        &db,
        &["ingestion_volume | where now + 100000000d > produced_at | stats count()"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json_lines(&stdout), vec![json!({"count()": 3})]);
}

#[test]
fn json_of_no_rows_is_an_empty_array() {
    let (_dir, db) = fixture();
    let (code, stdout, _) = query(&db, &["--format", "json", "catalog_diff"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), json!([]));
}

#[test]
fn csv_has_a_header_quotes_and_compact_json() {
    let (_dir, db) = fixture();
    let (code, stdout, stderr) = query(
        &db,
        &[
            "--format",
            "csv",
            "recon_result | limit 1 | select id, payload.ingestion_run_ids as runs, \"a,b\" as text, payload.nothing as missing",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "id,runs,text,missing");
    assert_eq!(lines[1], r#"4,"[""run-1-1""]","a,b","#);
    assert_eq!(lines.len(), 2);
}

#[test]
fn csv_of_records_uses_the_record_columns() {
    let (_dir, db) = fixture();
    let (code, stdout, _) = query(&db, &["--format", "csv", "ingestion_volume | limit 1"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "id,kind,target,produced_at,producer_id,payload");
    assert_eq!(
        lines[1],
        r#"1,ingestion_volume,src:sch.t1,2024-03-01T05:00:00Z,ingestion.v1,"{""rows"":100}""#
    );
}

#[test]
fn table_is_aligned_with_a_row_count() {
    let (_dir, db) = fixture();
    let (code, stdout, _) = query(&db, &["--format", "table", "recon_result"]);
    assert_eq!(code, 0);
    for column in [
        "id",
        "kind",
        "target",
        "produced_at",
        "producer_id",
        "payload",
    ] {
        assert!(stdout.contains(column), "{column} missing:\n{stdout}");
    }
    assert!(stdout.contains("src:sch.t1"), "{stdout}");
    assert!(stdout.trim_end().ends_with("3 rows"), "{stdout}");
    // Every line of the table body has the same width.
    let widths: Vec<usize> = stdout
        .lines()
        .filter(|l| !l.ends_with("rows"))
        .map(|l| l.chars().count())
        .collect();
    assert!(widths.windows(2).all(|w| w[0] == w[1]), "{stdout}");
}

#[test]
fn wide_table_cells_are_truncated() {
    let (dir, db) = store_dir();
    let wide = volume_line(1, 1, 1).replace(
        r#""payload":{"rows":1}"#,
        &format!(r#""payload":{{"rows":1,"note":"{}"}}"#, "x".repeat(500)),
    );
    let file = write_jsonl(dir.path(), "in.jsonl", &[wide]);
    assert_eq!(
        run(&db, &["import", file.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let (code, stdout, _) = query(&db, &["--format", "table", "ingestion_volume"]);
    assert_eq!(code, 0);
    assert!(stdout.contains('…'), "{stdout}");
    assert!(!stdout.contains(&"x".repeat(100)), "{stdout}");
}

#[test]
fn params_bind_strings_and_numbers() {
    let (_dir, db) = fixture();
    let (code, stdout, stderr) = query(
        &db,
        &[
            "--param",
            "table=t1",
            "--param",
            "min=150",
            "ingestion_volume{table=$table} | where payload.rows > $min",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let rows = json_lines(&stdout);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["payload"]["rows"], 200);

    let (code, stdout, stderr) = query(&db, &["ingestion_volume{table=$table}"]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("$table") && stderr.contains("not bound"),
        "{stderr}"
    );

    let (code, _, stderr) = query(&db, &["--param", "no equals sign", "ingestion_volume"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no equals sign"), "{stderr}");
}

#[test]
fn a_bad_query_exits_2_with_column_and_caret() {
    let (_dir, db) = fixture();
    let text = "ingestion_volume | where rows > 0";
    let (code, stdout, stderr) = query(&db, &[text]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains("payload.rows"),
        "{stderr}"
    );
    assert!(stderr.contains("column 26"), "{stderr}");
    let query_line = lines
        .iter()
        .position(|l| l.ends_with(text))
        .expect("the query is shown");
    let caret_line = lines[query_line + 1];
    let text_start = lines[query_line].len() - text.len();
    assert_eq!(caret_line.find('^'), Some(text_start + 25), "{stderr}");

    for bad in [
        "",
        "ingestion_volume |",
        "recon_result | stats nope()",
        "a | where (((",
    ] {
        let (code, _, stderr) = query(&db, &[bad]);
        assert_eq!(code, 2, "{bad:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
}

#[test]
fn explain_prints_the_plan_without_rows() {
    let (_dir, db) = fixture();
    let (code, stdout, stderr) = query(
        &db,
        &[
            "--explain",
            "recon_result{table=\"t1\"} | where payload.outcome = \"fail\"",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("access:"), "{stdout}");
    assert!(stdout.contains("where payload.outcome"), "{stdout}");
    assert!(!stdout.contains("\"id\""), "{stdout}");
}

#[test]
fn a_locked_store_exits_1() {
    let (_dir, db) = fixture();
    let _held = Store::open(&db).unwrap();
    let (code, _, stderr) = query(&db, &["recon_result"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("already open"), "{stderr}");
}

/// Commands that only read open the store read-only: they run beside each
/// other (here beside a read-only handle of this process), while a command
/// that writes is refused at once, as a reader is beside a writer.
#[test]
fn readers_run_together_and_exclude_writers() {
    let (dir, db) = fixture();
    let held = Store::open_read_only(&db, almanac::StoreOptions::default()).unwrap();
    let (code, stdout, stderr) = query(&db, &["recon_result | stats count()"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json_lines(&stdout), vec![json!({"count()": 3})]);
    for args in [
        vec!["export", "ingestion_volume"],
        vec!["stats"],
        vec!["kinds"],
        vec!["kinds", "show", "recon_result"],
    ] {
        let (code, _, stderr) = parts(&run(&db, &args));
        assert_eq!(code, 0, "{args:?}: {stderr}");
    }
    let file = write_jsonl(dir.path(), "more.jsonl", &[volume_line(3, 1, 10)]);
    for args in [
        vec!["import", file.to_str().unwrap()],
        vec!["retention"],
        vec!["kinds", "set-retention", "ingestion_volume", "30d"],
    ] {
        let (code, _, stderr) = parts(&run(&db, &args));
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stderr.contains("already open"), "{args:?}: {stderr}");
    }
    drop(held);
    let (code, _, stderr) = parts(&run(&db, &["import", file.to_str().unwrap()]));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn export_with_a_query_writes_its_records() {
    let (_dir, db) = fixture();
    let (code, stdout, stderr) = parts(&run(
        &db,
        &["export", "recon_result | where payload.outcome != \"pass\""],
    ));
    assert_eq!(code, 0, "{stderr}");
    let rows = json_lines(&stdout);
    let outcomes: Vec<&str> = rows
        .iter()
        .map(|r| r["payload"]["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["timeout", "fail"]);
    let (code, _, _) = parts(&run(&db, &["export", "recon_result |"]));
    assert_eq!(code, 2);
}

/// `export` writes records: a query of columns is refused (exit 2, nothing
/// written), and fields computed by `extend` are left out, so the lines
/// import into another store.
#[test]
fn export_writes_only_records_in_their_canonical_form() {
    let (dir, db) = fixture();
    for columns in [
        "recon_result | stats count()",
        "recon_result | select id, target",
    ] {
        let (code, stdout, stderr) = parts(&run(&db, &["export", columns]));
        assert_eq!(code, 2, "{columns}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains("export writes records"), "{stderr}");
    }
    let (code, stdout, stderr) = parts(&run(
        &db,
        &[
            "export",
            "ingestion_volume | extend twice = payload.rows * 2",
        ],
    ));
    assert_eq!(code, 0, "{stderr}");
    let rows = json_lines(&stdout);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.get("twice").is_none()), "{stdout}");
    let file = dir.path().join("exported.jsonl");
    std::fs::write(&file, &stdout).unwrap();
    let (_copy_dir, copy) = store_dir();
    let (code, out, stderr) = parts(&run(&copy, &["import", file.to_str().unwrap()]));
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("stored 3 records"), "{out}");
}

/// Bad parameters are bad input (exit 2) even when the store is held by
/// another process: they are checked before the store is opened.
#[test]
fn bad_parameters_exit_2_before_the_store_is_opened() {
    let (_dir, db) = fixture();
    let _held = Store::open(&db).unwrap();
    for args in [
        vec!["query", "ingestion_volume | where payload.rows > $n"],
        vec!["query", "--param", "t=hello", "ingestion_volume | since $t"],
        vec![
            "query",
            "--explain",
            "ingestion_volume | where payload.rows > $n",
        ],
        vec!["export", "ingestion_volume | where payload.rows > $n"],
    ] {
        let (code, stdout, stderr) = parts(&run(&db, &args));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty());
        assert!(!stderr.contains("already open"), "{stderr}");
    }
    // A name bound twice: which value was meant is unknown, so refused.
    for command in ["query", "export"] {
        let args = [
            command,
            "--param",
            "n=1",
            "--param",
            "$n=2",
            "ingestion_volume | where payload.rows > $n",
        ];
        let (code, stdout, stderr) = parts(&run(&db, &args));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty());
        assert!(
            stderr.contains("parameter `$n` is bound twice (`--param $n=2`"),
            "{stderr}"
        );
    }
}
