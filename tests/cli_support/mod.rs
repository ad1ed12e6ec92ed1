//! Helpers shared by the `cli_*` tests: run the binary on a temporary store.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// The binary under test, with a clean environment for the store.
pub fn command(db: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_almanac"));
    cmd.env_remove("ALMANAC_DB")
        .env("ALMANAC_HISTORY", db.with_extension("history"))
        .arg("--db")
        .arg(db);
    cmd
}

/// Runs `almanac --db DB ARGS...` with empty standard input.
pub fn run(db: &Path, args: &[&str]) -> Output {
    command(db)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

/// Runs `almanac --db DB ARGS...` with `input` on standard input.
pub fn run_with_stdin(db: &Path, args: &[&str], input: &str) -> Output {
    let mut child = command(db)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let output = child.wait_with_output().expect("the binary runs");
    let _ = writer.join();
    output
}

/// Exit status, stdout and stderr as text.
pub fn parts(output: &Output) -> (i32, String, String) {
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A temporary directory and the store path inside it.
pub fn store_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store");
    (dir, db)
}

/// A valid `ingestion_volume` record line for table `t{table}` at `day` of March 2024.
pub fn volume_line(table: usize, day: u32, rows: i64) -> String {
    format!(
        r#"{{"kind":"ingestion_volume","target":{{"source_id":"src","schema":"sch","table":"t{table}"}},"payload":{{"rows":{rows}}},"produced_at":"2024-03-{day:02}T05:00:00Z","producer_id":"ingestion.v1","context":{{"run_id":"run-{table}-{day}"}}}}"#
    )
}

/// A valid `recon_result` record line.
pub fn recon_line(table: usize, day: u32, outcome: &str) -> String {
    format!(
        r#"{{"kind":"recon_result","target":{{"source_id":"src","schema":"sch","table":"t{table}"}},"payload":{{"outcome":"{outcome}","ingestion_run_ids":["run-{table}-{day}"]}},"produced_at":"2024-03-{day:02}T06:00:00Z","producer_id":"recon.v2"}}"#
    )
}

/// Writes `lines` as a JSONL file next to the store and returns its path.
pub fn write_jsonl(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).expect("write jsonl");
    path
}

/// Every record of the store, as exported (one JSON value per record).
pub fn export(db: &Path) -> Vec<serde_json::Value> {
    let (code, stdout, stderr) = parts(&run(db, &["export"]));
    assert_eq!(code, 0, "export failed: {stderr}");
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("export lines are JSON"))
        .collect()
}

/// Reads a child's stdout lines on a thread, so tests can wait with a timeout.
pub fn line_reader(stdout: ChildStdout) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line from `lines`, failing the test after a generous timeout
/// (a hang, not a timing assertion).
pub fn next_line(lines: &Receiver<String>) -> String {
    lines
        .recv_timeout(Duration::from_secs(60))
        .expect("a line within 60 s")
}

/// Kills and reaps a child.
pub fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}
