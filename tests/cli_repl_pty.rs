//! `almanac repl` on a pseudo-terminal (util-linux `script`): prompt, tab completion, multi-line queries, Ctrl-C, Ctrl-D, persistent history.

mod cli_support;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use cli_support::*;

/// A REPL running on a pseudo-terminal, driven like a person: type a line
/// only once the prompt shows (rustyline drops typeahead when it switches
/// the terminal mode).
struct Terminal {
    child: Child,
    stdin: ChildStdin,
    output: Receiver<Vec<u8>>,
    seen: String,
    cursor: usize,
}

impl Terminal {
    fn start(db: &std::path::Path, history: &std::path::Path) -> Self {
        let command_line = format!(
            "{} --db '{}' repl",
            env!("CARGO_BIN_EXE_almanac"),
            db.display()
        );
        let mut child = Command::new("script")
            .args(["-qec", &command_line, "/dev/null"])
            .env("ALMANAC_HISTORY", history)
            .env("TERM", "xterm")
            .env_remove("ALMANAC_DB")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("util-linux `script` runs");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Terminal {
            child,
            stdin,
            output: rx,
            seen: String::new(),
            cursor: 0,
        }
    }

    /// Waits until `text` appears after everything matched so far.
    fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(at) = self.seen[self.cursor..].find(text) {
                self.cursor += at + text.len();
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!("{text:?} never showed; the terminal shows:\n{}", self.seen),
            }
        }
    }

    fn type_keys(&mut self, keys: &str) {
        self.stdin.write_all(keys.as_bytes()).expect("type");
        self.stdin.flush().expect("flush");
    }

    fn finish(mut self) -> i32 {
        drop(self.stdin);
        let status = self.child.wait().expect("script ends");
        status.code().unwrap_or(-1)
    }
}

#[test]
fn completion_cancel_and_history_on_a_terminal() {
    let (dir, db) = store_dir();
    let file = write_jsonl(
        dir.path(),
        "in.jsonl",
        &[volume_line(1, 1, 7), volume_line(1, 2, 9)],
    );
    assert_eq!(
        run(&db, &["import", file.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let history = dir.path().join("history");
    let mut term = Terminal::start(&db, &history);
    term.expect("almanac> ");

    // A kind and a payload path seen in the store complete; a line ending
    // in `|` continues the query on the next line.
    term.type_keys("ingestion_vol\t|\r");
    term.type_keys("  where payload.ro\t > 8 | select payload.rows as r\r");
    term.expect("│ 9 │");
    term.expect("1 row");
    term.expect("almanac> ");

    // Tab completes a dot command; on a terminal the default format is table.
    term.type_keys(".form\t\r");
    term.expect("format: table");
    term.expect("almanac> ");

    // Ctrl-C cancels the line being typed: no error for `garbage`.
    term.type_keys("garbage\x03");
    term.expect("almanac> ");
    term.type_keys(".timing\r");
    term.expect("timing: on");
    term.expect("almanac> ");
    assert!(!term.seen.contains("unknown"), "{}", term.seen);

    // Ctrl-D leaves; the history file keeps what was entered.
    term.type_keys("\x04");
    assert_eq!(term.finish(), 0);
    let saved = std::fs::read_to_string(&history).expect("history saved");
    assert!(
        saved.contains(".format") && saved.contains(".timing"),
        "{saved}"
    );
    assert!(!saved.contains("garbage"), "{saved}");

    // A new session starts with that history: Up recalls `.timing`.
    let mut term = Terminal::start(&db, &history);
    term.expect("almanac> ");
    term.type_keys("\x1b[A\r");
    term.expect("timing: on");
    term.expect("almanac> ");
    term.type_keys(".quit\r");
    assert_eq!(term.finish(), 0);
}
