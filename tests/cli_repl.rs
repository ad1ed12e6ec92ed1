//! `almanac repl` driven by a script on standard input: dot commands, errors that continue, exit status.

mod cli_support;

use cli_support::*;

#[test]
fn dot_commands_work_without_a_terminal() {
    let (_dir, db) = store_dir();
    let script = "\
.help
.format
.format csv
.timing
.timing off
.param table t1
.param $day 2024-03-01
.params
.param day
.params
.kinds
.quit
.format json
";
    let (code, stdout, stderr) = parts(&run_with_stdin(&db, &["repl"], script));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert!(
        stdout.contains(".explain QUERY"),
        "help text missing:\n{stdout}"
    );
    // Not a terminal: jsonl by default, no prompt.
    assert!(stdout.contains("format: jsonl"), "{stdout}");
    assert!(stdout.contains("format: csv"), "{stdout}");
    assert!(
        stdout.contains("timing: on") && stdout.contains("timing: off"),
        "{stdout}"
    );
    assert!(
        stdout.contains("$day = 2024-03-01") && stdout.contains("$table = t1"),
        "{stdout}"
    );
    assert!(stdout.contains("recon_result"), "{stdout}");
    assert!(!stdout.contains("almanac>"), "{stdout}");
    // Nothing after .quit runs.
    assert!(!stdout.contains("format: json\n"), "{stdout}");
    let after_unbind = stdout.split("$table = t1").nth(2).unwrap_or("");
    assert!(!after_unbind.contains("$day"), "{stdout}");
}

#[test]
fn an_error_is_reported_and_the_script_goes_on() {
    let (_dir, db) = store_dir();
    let script = ".nope\n.format yaml\n.format csv\n";
    let (code, stdout, stderr) = parts(&run_with_stdin(&db, &["repl"], script));
    assert!(stderr.contains("unknown command `.nope`"), "{stderr}");
    assert!(stderr.contains("unknown format `yaml`"), "{stderr}");
    assert!(stdout.contains("format: csv"), "{stdout}");
    // A script with failed commands ends with the status of the worst one.
    assert_eq!(code, 2);
}

#[test]
fn end_of_input_ends_the_session() {
    let (_dir, db) = store_dir();
    let (code, stdout, stderr) = parts(&run_with_stdin(&db, &["repl"], ""));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.is_empty());
}

#[test]
fn a_locked_store_fails_before_reading_the_script() {
    let (_dir, db) = store_dir();
    let _held = almanac::Store::open(&db).unwrap();
    let (code, _, stderr) = parts(&run_with_stdin(&db, &["repl"], ".kinds\n"));
    assert_eq!(code, 1);
    assert!(stderr.contains("already open"), "{stderr}");
}

#[test]
fn queries_run_with_formats_params_multi_line_input_and_explain() {
    let (dir, db) = store_dir();
    let lines = [
        volume_line(1, 1, 100),
        volume_line(1, 2, 200),
        volume_line(2, 1, 50),
    ];
    let file = write_jsonl(dir.path(), "in.jsonl", &lines);
    assert_eq!(
        run(&db, &["import", file.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let script = "\
ingestion_volume | stats count() as n
# a comment, then a query over three lines
ingestion_volume |
  where payload.rows >= 100 |
  select payload.rows as rows
.format csv
.param table t2
.param Table t3
ingestion_volume{table=$table} | select target
.explain ingestion_volume{table=$table}
ingestion_volume | where nope > 1
# an open parenthesis continues the query too (and this comment's ' does not)
ingestion_volume | where (payload.rows
  > 150) | select payload.rows as big
.format json
.timing on
ingestion_volume | limit 1 | select id
";
    let (code, stdout, stderr) = parts(&run_with_stdin(&db, &["repl"], script));
    assert!(stdout.contains(r#"{"n":3}"#), "{stdout}");
    assert!(
        stdout.contains("{\"rows\":100}\n{\"rows\":200}\n"),
        "{stdout}"
    );
    assert!(stdout.contains("target\nsrc:sch.t2\n"), "{stdout}");
    assert!(stdout.contains("access:"), "{stdout}");
    assert!(stdout.contains("big\n200\n"), "{stdout}");
    assert!(stdout.contains("[\n{\"id\":1}\n]\n"), "{stdout}");
    assert!(stdout.contains("time: "), "{stdout}");
    // A bad parameter name is refused where it is bound (and binds nothing).
    assert!(
        stderr.contains("invalid parameter name `$Table`: use [a-z_][a-z0-9_]*"),
        "{stderr}"
    );
    // The bad query is reported with its caret and the script goes on.
    assert!(
        stderr.contains("unknown field `nope`") && stderr.contains('^'),
        "{stderr}"
    );
    assert_eq!(code, 2);
}
