//! `almanac kinds` (list, register, add-schema, set-retention, index, unindex, show) and `almanac retention [--dry-run]`.

mod cli_support;

use cli_support::*;
use serde_json::Value;

fn import(dir: &std::path::Path, db: &std::path::Path, lines: &[String]) {
    let file = write_jsonl(dir, "in.jsonl", lines);
    let (code, _, stderr) = parts(&run(db, &["import", file.to_str().unwrap()]));
    assert_eq!(code, 0, "{stderr}");
}

fn kinds_json(db: &std::path::Path) -> Vec<Value> {
    let (code, stdout, stderr) = parts(&run(db, &["kinds", "--format", "json"]));
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str::<Value>(&stdout)
        .expect("JSON")
        .as_array()
        .cloned()
        .unwrap()
}

#[test]
fn lists_the_standard_kinds_with_counts() {
    let (dir, db) = store_dir();
    import(
        dir.path(),
        &db,
        &[
            volume_line(1, 1, 1),
            volume_line(1, 2, 2),
            recon_line(1, 2, "pass"),
        ],
    );
    let (code, stdout, stderr) = parts(&run(&db, &["kinds"]));
    assert_eq!(code, 0, "{stderr}");
    for kind in [
        "ingestion_volume",
        "ingestion_runtime",
        "recon_result",
        "schema_snapshot",
        "statistics_snapshot",
        "catalog_diff",
    ] {
        assert!(stdout.contains(kind), "{kind} missing from\n{stdout}");
    }
    assert!(
        stdout.contains("retention") && stdout.contains("bucket"),
        "{stdout}"
    );
    let kinds = kinds_json(&db);
    let volume = kinds
        .iter()
        .find(|k| k["kind"] == "ingestion_volume")
        .unwrap();
    assert_eq!(volume["records"], 2);
    assert_eq!(volume["retention"], "forever");
    assert_eq!(volume["bucket"], "day");
    assert_eq!(volume["schema_version"], 1);
    let snapshot = kinds
        .iter()
        .find(|k| k["kind"] == "schema_snapshot")
        .unwrap();
    assert_eq!(snapshot["bucket"], "month");
    assert_eq!(snapshot["records"], 0);
}

#[test]
fn unregistered_kinds_with_records_are_listed() {
    let (dir, db) = store_dir();
    let line = volume_line(1, 1, 1).replace("ingestion_volume", "custom_probe");
    import(dir.path(), &db, &[line]);
    let kinds = kinds_json(&db);
    let custom = kinds.iter().find(|k| k["kind"] == "custom_probe").unwrap();
    assert_eq!(custom["registered"], false);
    assert_eq!(custom["records"], 1);
}

#[test]
fn registers_a_kind_and_adds_a_schema_version() {
    let (dir, db) = store_dir();
    let spec = dir.path().join("kind.json");
    std::fs::write(
        &spec,
        r#"{"name": "dq_check", "description": "data quality checks", "retention": "400d", "bucket": "month",
            "schema": {"type": "object", "required": ["passed"], "properties": {"passed": {"type": "boolean"}}}}"#,
    )
    .unwrap();
    let (code, stdout, stderr) = parts(&run(&db, &["kinds", "register", spec.to_str().unwrap()]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("dq_check"), "{stdout}");
    let kinds = kinds_json(&db);
    let dq = kinds.iter().find(|k| k["kind"] == "dq_check").unwrap();
    assert_eq!(dq["retention"], "400d");
    assert_eq!(dq["bucket"], "month");
    assert_eq!(dq["schema_version"], 1);

    // The schema is enforced on import.
    let bad = volume_line(1, 1, 1).replace("ingestion_volume", "dq_check");
    let file = write_jsonl(dir.path(), "bad.jsonl", &[bad]);
    let (code, _, stderr) = parts(&run(&db, &["import", file.to_str().unwrap()]));
    assert_eq!(code, 2);
    assert!(stderr.contains("payload"), "{stderr}");

    let schema = dir.path().join("v2.json");
    std::fs::write(&schema, r#"{"type": "object"}"#).unwrap();
    let (code, stdout, stderr) = parts(&run(
        &db,
        &["kinds", "add-schema", "dq_check", schema.to_str().unwrap()],
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("version 2"), "{stdout}");
    let (code, stdout, _) = parts(&run(&db, &["kinds", "show", "dq_check"]));
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["schemas"].as_array().map(Vec::len), Some(2));

    // Registering it again is refused.
    let (code, _, stderr) = parts(&run(&db, &["kinds", "register", spec.to_str().unwrap()]));
    assert_eq!(code, 2);
    assert!(stderr.contains("already registered"), "{stderr}");
}

#[test]
fn bad_kind_specs_and_arguments_exit_2() {
    let (dir, db) = store_dir();
    let spec = dir.path().join("kind.json");
    std::fs::write(&spec, r#"{"name": "Bad-Name"}"#).unwrap();
    assert_eq!(
        run(&db, &["kinds", "register", spec.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    std::fs::write(&spec, r#"{"name": "ok_name", "retention": "soon"}"#).unwrap();
    assert_eq!(
        run(&db, &["kinds", "register", spec.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    std::fs::write(&spec, "not json").unwrap();
    assert_eq!(
        run(&db, &["kinds", "register", spec.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    std::fs::write(&spec, r#"{"name": "k", "schema": {"type": 12}}"#).unwrap();
    assert_eq!(
        run(&db, &["kinds", "register", spec.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run(&db, &["kinds", "set-retention", "recon_result", "soon"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run(&db, &["kinds", "set-retention", "no_such_kind", "30d"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run(&db, &["kinds", "show", "no_such_kind"]).status.code(),
        Some(2)
    );
    let missing = dir.path().join("missing.json");
    assert_eq!(
        run(&db, &["kinds", "register", missing.to_str().unwrap()])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn retention_dry_run_reports_and_retention_drops_expired_partitions() {
    let (dir, db) = store_dir();
    // March 2024 is long past: with a 30-day retention every partition expires.
    import(
        dir.path(),
        &db,
        &[
            volume_line(1, 1, 1),
            volume_line(1, 2, 2),
            recon_line(1, 2, "pass"),
        ],
    );
    let (code, stdout, _) = parts(&run(&db, &["retention"]));
    assert_eq!(code, 0);
    assert!(stdout.contains("dropped 0 partitions"), "{stdout}");

    let (code, stdout, stderr) = parts(&run(
        &db,
        &["kinds", "set-retention", "ingestion_volume", "30d"],
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("30 days"), "{stdout}");

    let (code, stdout, _) = parts(&run(&db, &["retention", "--dry-run"]));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("would drop 2 partitions (2 records)"),
        "{stdout}"
    );
    assert!(stdout.contains("ingestion_volume/2024-03-01"), "{stdout}");
    assert_eq!(export(&db).len(), 3, "a dry run changes nothing");

    let (code, stdout, _) = parts(&run(&db, &["retention", "--format", "json"]));
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["dry_run"], false);
    assert_eq!(report["partitions"], 2);
    assert_eq!(report["records"], 2);
    let left = export(&db);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["kind"], "recon_result");

    let (code, stdout, _) = parts(&run(
        &db,
        &["kinds", "set-retention", "ingestion_volume", "forever"],
    ));
    assert_eq!(code, 0);
    assert!(stdout.contains("forever"), "{stdout}");
}

#[test]
fn indexes_and_unindexes_a_path_and_queries_answer_the_same() {
    let (dir, db) = store_dir();
    let outcomes = ["pass", "fail", "timeout"];
    let first: Vec<String> = (1..=9)
        .map(|day| recon_line(day as usize % 4, day, outcomes[day as usize % 3]))
        .collect();
    import(dir.path(), &db, &first);
    let failed = |db: &std::path::Path| -> String {
        let (code, stdout, stderr) = parts(&run(
            db,
            &[
                "query",
                "--format",
                "jsonl",
                r#"recon_result | where payload.outcome = "fail" | stats count()"#,
            ],
        ));
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    let indexed = |db: &std::path::Path| -> Vec<Value> {
        let (code, stdout, _) = parts(&run(db, &["kinds", "show", "recon_result"]));
        assert_eq!(code, 0);
        let spec: Value = serde_json::from_str(&stdout).unwrap();
        spec["indexed_paths"].as_array().cloned().unwrap()
    };
    assert_eq!(failed(&db).trim(), r#"{"count()":3}"#);

    let (code, stdout, stderr) = parts(&run(
        &db,
        &["kinds", "unindex", "recon_result", "payload.outcome"],
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("no longer indexes `payload.outcome`"),
        "{stdout}"
    );
    assert!(!indexed(&db).contains(&Value::from("payload.outcome")));
    // Records stored after, in the same day partitions, are found.
    let more: Vec<String> = (1..=9)
        .map(|day| recon_line(day as usize % 4 + 4, day, "fail"))
        .collect();
    import(dir.path(), &db, &more);
    assert_eq!(failed(&db).trim(), r#"{"count()":12}"#);

    let (code, stdout, stderr) = parts(&run(
        &db,
        &["kinds", "index", "recon_result", "payload.outcome"],
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("now indexes `payload.outcome`"), "{stdout}");
    assert!(indexed(&db).contains(&Value::from("payload.outcome")));
    assert_eq!(failed(&db).trim(), r#"{"count()":12}"#);
    let (code, stdout, _) = parts(&run(
        &db,
        &["kinds", "index", "recon_result", "payload.outcome"],
    ));
    assert_eq!(code, 0);
    assert!(stdout.contains("already indexes"), "{stdout}");

    // Mistakes exit 2 and say what is wrong.
    for (args, says) in [
        (
            vec!["kinds", "index", "no_such_kind", "payload.x"],
            "unknown kind `no_such_kind`",
        ),
        (
            vec!["kinds", "index", "recon_result", "target.table"],
            "must start with `payload.` or `extras.`",
        ),
        (
            vec!["kinds", "unindex", "recon_result", "payload.nothing"],
            "does not index `payload.nothing`",
        ),
        (
            vec!["kinds", "unindex", "no_such_kind", "payload.x"],
            "unknown kind `no_such_kind`",
        ),
    ] {
        let (code, _, stderr) = parts(&run(&db, &args));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// Exit 2 says nothing was written (spec §3): a command refused on a
/// directory with no store leaves no store behind, and one refused on an
/// existing store leaves it as it was.
#[test]
fn refused_commands_create_no_store() {
    let (dir, _) = store_dir();
    let schema = write_jsonl(dir.path(), "bad.json", &["{not json".to_owned()]);
    let commands: [&[&str]; 6] = [
        &["kinds", "set-retention", "ingestion_volume", "abc"],
        &["kinds", "set-retention", "no_such_kind", "30d"],
        &["kinds", "show", "no_such_kind"],
        &["kinds", "index", "ingestion_volume", "foo.bar"],
        &["kinds", "register", schema.to_str().unwrap()],
        &["query", "ingestion_volume |"],
    ];
    for (i, args) in commands.iter().enumerate() {
        let db = dir.path().join(format!("new{i}"));
        let (code, _, stderr) = parts(&run(&db, args));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(!db.exists(), "{args:?} left {}", db.display());
        // An existing empty directory stays, and empty.
        std::fs::create_dir(&db).unwrap();
        let (code, _, stderr) = parts(&run(&db, args));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(std::fs::read_dir(&db).unwrap().count(), 0, "{args:?}");
    }
    // Parents the open created go too.
    let deep = dir.path().join("deep").join("a").join("b");
    let (code, _, _) = parts(&run(&deep, &["kinds", "show", "no_such_kind"]));
    assert_eq!(code, 2);
    assert!(!dir.path().join("deep").exists());
    // On an existing store, the store stays.
    let db = dir.path().join("kept");
    import(dir.path(), &db, &[volume_line(1, 1, 1)]);
    let (code, _, _) = parts(&run(&db, &["kinds", "show", "no_such_kind"]));
    assert_eq!(code, 2);
    let (code, stdout, _) = parts(&run(&db, &["query", "--format", "jsonl", "*"]));
    assert_eq!((code, stdout.lines().count()), (0, 1));
}
