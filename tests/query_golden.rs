//! Golden cases of the query grammar: every `grammar/ok/NAME.q` parses (syntax
//! only: its names need not exist), prints
//! as `NAME.canonical` and reads back equal; every `grammar/err/NAME.q` is
//! refused (by the parser or the planner) with the message and position in
//! `NAME.err` (`LINE:COLUMN: message`). `UPDATE_GOLDEN=1` rewrites the
//! expected files from the current output (review the diff before committing).

use std::fs;
use std::path::{Path, PathBuf};

use almanac::query;

fn cases(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("grammar")
        .join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "q"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no cases in {}", dir.display());
    files
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

/// The query text of a case: the file without its final newline.
fn read_query(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.strip_suffix('\n').unwrap_or(&text).to_owned()
}

fn check_expected(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if updating() {
        fs::write(path, format!("{actual}\n")).expect("write golden file");
        return;
    }
    let expected = fs::read_to_string(path).unwrap_or_default();
    if expected.trim_end_matches('\n') != actual {
        failures.push(format!(
            "{}:\n  expected: {}\n  actual:   {actual}",
            path.display(),
            expected.trim_end()
        ));
    }
}

#[test]
fn ok_cases_parse_print_canonically_and_round_trip() {
    let mut failures = Vec::new();
    for path in cases("ok") {
        let text = read_query(&path);
        let parsed = match query::parse(&text) {
            Ok(parsed) => parsed,
            Err(e) => {
                failures.push(format!("{}: {}", path.display(), e.render(&text)));
                continue;
            }
        };
        let printed = parsed.to_string();
        match query::parse(&printed) {
            Ok(again) if again == parsed => {}
            Ok(again) => failures.push(format!(
                "{}: round trip changed the query: {printed} read back as {again}",
                path.display()
            )),
            Err(e) => failures.push(format!("{}: {}", path.display(), e.render(&printed))),
        }
        check_expected(&path.with_extension("canonical"), &printed, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn err_cases_are_refused_with_message_and_position() {
    let mut failures = Vec::new();
    for path in cases("err") {
        let text = read_query(&path);
        let actual = match query::prepare(&text) {
            Ok(_) => format!("OK (expected an error): {text}"),
            Err(e) => {
                let (line, column) = e.line_column_in(&text).unwrap_or((0, 0));
                format!("{line}:{column}: {e}")
            }
        };
        check_expected(&path.with_extension("err"), &actual, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
