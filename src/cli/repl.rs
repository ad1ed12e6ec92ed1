//! `almanac repl`: an interactive shell over the store.
//!
//! On a terminal: line editing and persistent history (rustyline), multi-line
//! input (a line ending in `|` continues), tab completion of kinds, stage
//! names, functions and field paths present in the store; Ctrl-C cancels the
//! current line, Ctrl-D exits. When standard input is not a terminal the same
//! commands are read from it line by line, without prompts (scripted use);
//! every command runs, and the exit status is that of the worst failure.
//!
//! History lives in `$ALMANAC_HISTORY`, else `$HOME/.almanac_history`, else
//! `.almanac_history` in the store directory.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use almanac::model::{TimeRange, MICROS_PER_DAY};
use almanac::query::{Params, RecordSource, ScanRequest};
use almanac::Store;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context as LineContext, Editor, Helper};
use serde_json::{Map, Value};

use super::error::{CliResult, Failure, EXIT_OK};
use super::kinds::ReportFormat;
use super::output::{Format, Out};

const PROMPT: &str = "almanac> ";

const HELP: &str = "\
Type a query and press Enter; a line ending in `|` continues on the next line.
  .help                  this text
  .kinds                 the kind registry with record counts
  .format [FORMAT]       show or set the output format: table, json, jsonl, csv
  .timing [on|off]       show the elapsed time of each query (no argument toggles)
  .explain QUERY         print the plan of QUERY instead of running it
  .param NAME VALUE      bind $NAME for the following queries (.param NAME unbinds)
  .params                list the bound parameters
  .quit                  leave (Ctrl-D too); Ctrl-C cancels the current line";

/// Stage names, for completion.
const STAGES: [&str; 12] = [
    "where", "since", "until", "between", "overlaps", "latest", "sort", "limit", "extend",
    "select", "stats", "window",
];
/// Scalar and aggregate functions, for completion.
const FUNCTIONS: [&str; 19] = [
    "exists",
    "len",
    "lower",
    "upper",
    "abs",
    "coalesce",
    "timestamp",
    "bin",
    "count",
    "countif",
    "count_distinct",
    "sum",
    "avg",
    "min",
    "max",
    "stddev",
    "percentile",
    "first",
    "last",
];
/// Other keywords, for completion.
const KEYWORDS: [&str; 13] = [
    "by", "as", "asc", "desc", "and", "or", "not", "in", "rows", "now", "true", "false", "null",
];
/// Source labels, completed inside `{...}`.
const LABELS: [&str; 9] = [
    "source",
    "schema",
    "table",
    "target",
    "producer",
    "run_id",
    "job_id",
    "namespace",
    "tenant",
];
/// Record fields every record has.
const RECORD_PATHS: [&str; 13] = [
    "id",
    "kind",
    "target",
    "target.source_id",
    "target.schema",
    "target.table",
    "producer_id",
    "produced_at",
    "context.job_id",
    "context.run_id",
    "context.namespace",
    "version",
    "quality",
];
const DOT_COMMANDS: [&str; 9] = [
    ".help", ".kinds", ".format", ".timing", ".explain", ".param", ".params", ".quit", ".exit",
];
/// Records sampled per kind to find the field paths to complete.
const SAMPLE_PER_KIND: usize = 200;

/// Runs `almanac repl`.
pub fn run(db: &Path) -> CliResult {
    let store = super::open_store_for_reading(db)?;
    let mut session = Session {
        store,
        format: Format::default_for_stdout(),
        timing: false,
        params: BTreeMap::new(),
        out: Out::stdout(),
    };
    if io::stdin().is_terminal() {
        interactive(&mut session, db)
    } else {
        scripted(&mut session)
    }
}

/// What to do after a command.
enum Flow {
    Continue,
    Quit,
}

/// The REPL's state: the store, the output settings and bound parameters.
struct Session {
    store: Store,
    format: Format,
    timing: bool,
    params: BTreeMap<String, String>,
    out: Out,
}

impl Session {
    fn bindings(&self) -> Vec<String> {
        self.params
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect()
    }

    /// Runs one complete input: a dot command or a query.
    fn handle(&mut self, input: &str) -> CliResult<Flow> {
        let input = input.trim();
        if input.is_empty() || input.starts_with('#') {
            return Ok(Flow::Continue);
        }
        if let Some(command) = input.strip_prefix('.') {
            return self.dot_command(command);
        }
        let started = Instant::now();
        let result = super::query::execute(
            &self.store,
            input,
            &self.bindings(),
            self.format,
            &mut self.out,
        );
        let elapsed = started.elapsed();
        if self.timing {
            self.out
                .line(&format!("time: {:.3} ms", elapsed.as_secs_f64() * 1000.0))?;
        }
        self.out.flush()?;
        result.map(|_| Flow::Continue)
    }

    fn dot_command(&mut self, command: &str) -> CliResult<Flow> {
        let (name, rest) = match command.split_once(char::is_whitespace) {
            Some((name, rest)) => (name, rest.trim()),
            None => (command, ""),
        };
        match name {
            "quit" | "exit" => return Ok(Flow::Quit),
            "help" => self.out.line(HELP)?,
            "kinds" => super::kinds::list(&self.store, ReportFormat::Table, &mut self.out)?,
            "format" if rest.is_empty() => {
                self.out.line(&format!("format: {}", self.format.name()))?
            }
            "format" => {
                self.format = Format::parse(rest).ok_or_else(|| {
                    Failure::invalid(format!(
                        "unknown format `{rest}`: expected table, json, jsonl or csv"
                    ))
                })?;
                self.out.line(&format!("format: {}", self.format.name()))?;
            }
            "timing" => {
                self.timing = match rest {
                    "" => !self.timing,
                    "on" => true,
                    "off" => false,
                    other => {
                        return Err(Failure::invalid(format!(
                            "unknown timing setting `{other}`: expected on or off"
                        )))
                    }
                };
                let state = if self.timing { "on" } else { "off" };
                self.out.line(&format!("timing: {state}"))?;
            }
            "explain" if rest.is_empty() => {
                return Err(Failure::invalid("usage: .explain QUERY"));
            }
            "explain" => {
                let plan = super::query::explain(&self.store, rest, &self.bindings())?;
                self.out.line(&plan)?;
            }
            "param" => {
                let (param, value) = match rest.split_once(char::is_whitespace) {
                    Some((param, value)) => (param, Some(value.trim())),
                    None => (rest, None),
                };
                let param = param.strip_prefix('$').unwrap_or(param);
                if param.is_empty() {
                    return Err(Failure::invalid("usage: .param NAME VALUE"));
                }
                // The name is checked here, not at the next query (only the
                // name can be refused: any value is at least a string).
                if Params::parse_binding(&format!("{param}=")).is_err() {
                    return Err(Failure::invalid(format!(
                        "invalid parameter name `${param}`: use [a-z_][a-z0-9_]*"
                    )));
                }
                match value {
                    Some(value) => {
                        self.params.insert(param.to_owned(), value.to_owned());
                    }
                    None => {
                        self.params.remove(param);
                    }
                }
            }
            "params" => {
                if self.params.is_empty() {
                    self.out.line("no parameters bound")?;
                }
                for (param, value) in &self.params {
                    self.out.line(&format!("${param} = {value}"))?;
                }
            }
            other => {
                return Err(Failure::invalid(format!(
                    "unknown command `.{other}`; type .help for the list"
                )))
            }
        }
        self.out.flush()?;
        Ok(Flow::Continue)
    }
}

fn report(failure: &Failure) {
    if let Failure::Message { message, .. } = failure {
        let _ = writeln!(io::stderr().lock(), "error: {message}");
    }
}

/// True when `buffer`, a query, needs more lines: it ends with `|`, or a
/// parenthesis, bracket or brace is still open, or a string is
/// unterminated. A `.command` or a `# comment` never continues.
fn continues(buffer: &str) -> bool {
    let trimmed = buffer.trim_end();
    if trimmed.trim_start().starts_with(['.', '#']) {
        return false;
    }
    if trimmed.ends_with('|') {
        return true;
    }
    let mut open = 0usize;
    let mut quote: Option<char> = None;
    let mut chars = trimmed.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next(); // an escaped character, whatever it is
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(' | '[' | '{') => open += 1,
            // A closer too many is the parser's error to report, not a
            // reason to wait for more lines.
            (None, ')' | ']' | '}') => open = open.saturating_sub(1),
            (None, _) => {}
        }
    }
    quote.is_some() || open > 0
}

/// Reads commands from standard input without prompts.
fn scripted(session: &mut Session) -> CliResult {
    let mut worst = EXIT_OK;
    let mut buffer = String::new();
    let stdin = io::stdin();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| Failure::other(format!("cannot read standard input: {e}")))?;
        if !buffer.is_empty() {
            buffer.push('\n');
        }
        buffer.push_str(&line);
        if continues(&buffer) {
            continue;
        }
        let input = std::mem::take(&mut buffer);
        match session.handle(&input) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Quit) => break,
            Err(Failure::BrokenPipe) => return Err(Failure::BrokenPipe),
            Err(failure) => {
                report(&failure);
                worst = worst.max(failure.code());
            }
        }
    }
    if !buffer.trim().is_empty() {
        if let Err(failure) = session.handle(&buffer) {
            report(&failure);
            worst = worst.max(failure.code());
        }
    }
    match worst {
        EXIT_OK => Ok(()),
        code => Err(Failure::Message {
            code,
            message: "some commands of the script failed (see above)".into(),
        }),
    }
}

fn history_path(db: &Path) -> PathBuf {
    if let Some(path) = std::env::var_os("ALMANAC_HISTORY") {
        return PathBuf::from(path);
    }
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".almanac_history"),
        _ => db.join(".almanac_history"),
    }
}

/// Line editing on a terminal.
fn interactive(session: &mut Session, db: &Path) -> CliResult {
    let mut editor: Editor<ReplHelper, FileHistory> =
        Editor::new().map_err(|e| Failure::other(format!("cannot start line editing: {e}")))?;
    editor.set_helper(Some(ReplHelper::from_store(&session.store)));
    let history = history_path(db);
    // A missing history file is the normal first run.
    let _ = editor.load_history(&history);
    session
        .out
        .line("almanac repl: type .help for commands, .quit or Ctrl-D to leave")?;
    session.out.flush()?;
    loop {
        match editor.readline(PROMPT) {
            Ok(input) => {
                if input.trim().is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(input.as_str());
                match session.handle(&input) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Quit) => break,
                    Err(Failure::BrokenPipe) => break,
                    Err(failure) => report(&failure),
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                let _ = editor.save_history(&history);
                return Err(Failure::other(format!("cannot read the terminal: {e}")));
            }
        }
    }
    if let Err(e) = editor.save_history(&history) {
        report(&Failure::other(format!(
            "cannot save the history to {}: {e}",
            history.display()
        )));
    }
    Ok(())
}

/// Completion and multi-line validation for the editor.
struct ReplHelper {
    kinds: Vec<String>,
    fields: Vec<String>,
}

impl ReplHelper {
    /// Collects kind names and the field paths of a bounded sample of each
    /// kind's recent records.
    fn from_store(store: &Store) -> Self {
        let kinds = store.kind_names().unwrap_or_default();
        let mut fields: BTreeSet<String> = RECORD_PATHS.iter().map(|p| (*p).to_owned()).collect();
        let recent = TimeRange::last(store.now(), 30 * MICROS_PER_DAY);
        for kind in &kinds {
            let mut sampled = 0;
            for range in [recent, TimeRange::ALL] {
                if sampled > 0 {
                    break;
                }
                let request = ScanRequest {
                    kinds: Some(vec![kind.clone()]),
                    time: range,
                    ..ScanRequest::default()
                };
                let Ok(records) = store.scan(&request) else {
                    continue;
                };
                for stored in records.take(SAMPLE_PER_KIND).flatten() {
                    let r = &stored.record;
                    add_paths(&mut fields, "payload", &r.payload, 2);
                    add_paths(&mut fields, "extras", &r.extras, 1);
                    add_paths(&mut fields, "target.extras", &r.target.extras, 1);
                    add_paths(&mut fields, "context.extras", &r.context.extras, 1);
                    sampled += 1;
                }
            }
        }
        ReplHelper {
            kinds,
            fields: fields.into_iter().collect(),
        }
    }

    fn candidates(&self, before: &str, prefix: &str) -> Vec<String> {
        let before = before.trim_end();
        let mut out: Vec<String> = Vec::new();
        if before.is_empty() && prefix.starts_with('.') {
            out.extend(DOT_COMMANDS.iter().map(|c| (*c).to_owned()));
        } else if before.is_empty()
            || before.ends_with(',') && !before.contains('|') && !before.contains('{')
        {
            out.extend(self.kinds.iter().cloned());
            out.push("*".into());
        } else if before.ends_with('|') {
            out.extend(STAGES.iter().map(|s| (*s).to_owned()));
        } else if before.matches('{').count() > before.matches('}').count() {
            out.extend(LABELS.iter().map(|l| (*l).to_owned()));
        } else {
            out.extend(self.fields.iter().cloned());
            out.extend(FUNCTIONS.iter().map(|f| format!("{f}(")));
            out.extend(KEYWORDS.iter().map(|k| (*k).to_owned()));
        }
        out.retain(|c| c.starts_with(prefix));
        out.sort();
        out.dedup();
        out
    }
}

fn add_paths(
    fields: &mut BTreeSet<String>,
    prefix: &str,
    object: &Map<String, Value>,
    depth: usize,
) {
    for (key, value) in object {
        let simple = key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit());
        let key = if simple {
            key.clone()
        } else {
            format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
        };
        let path = format!("{prefix}.{key}");
        if depth > 1 {
            if let Value::Object(inner) = value {
                add_paths(fields, &path, inner, depth - 1);
            }
        }
        fields.insert(path);
    }
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &LineContext<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = line.get(..pos).unwrap_or(line);
        let start = head
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || matches!(c, '_' | '.' | '$' | '*')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let prefix = &head[start..];
        // The text before the word, within the current query (after a newline).
        let before = &head[..start];
        let candidates = self
            .candidates(before, prefix)
            .into_iter()
            .map(|c| Pair {
                display: c.clone(),
                replacement: c,
            })
            .collect();
        Ok((start, candidates))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        Ok(if continues(ctx.input()) {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

impl Helper for ReplHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper() -> ReplHelper {
        ReplHelper {
            kinds: vec!["ingestion_volume".into(), "recon_result".into()],
            fields: vec![
                "payload.outcome".into(),
                "payload.rows".into(),
                "produced_at".into(),
            ],
        }
    }

    fn check(line: &str, expected: &[&str]) {
        let h = helper();
        let head = line;
        let start = head
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || matches!(c, '_' | '.' | '$' | '*')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let got = h.candidates(&head[..start], &head[start..]);
        assert_eq!(got, expected, "completing {line:?}");
    }

    #[test]
    fn completes_by_position() {
        check("rec", &["recon_result"]);
        check("recon_result | wh", &["where"]);
        check("recon_result | where payload.o", &["payload.outcome"]);
        check("recon_result{ta", &["table", "target"]);
        check(
            "recon_result | stats cou",
            &["count(", "count_distinct(", "countif("],
        );
        check(".ti", &[".timing"]);
    }

    #[test]
    fn trailing_pipe_continues_the_query() {
        assert!(continues("recon_result |"));
        assert!(continues("recon_result |  \n"));
        assert!(!continues("recon_result | latest"));
        assert!(!continues(".explain a |"));
    }

    #[test]
    fn an_open_parenthesis_or_string_continues_the_query() {
        assert!(continues("k | where (payload.v"));
        assert!(continues("k | where payload.v in (1, 2,\n 3"));
        assert!(continues("k{table=\"orders"));
        assert!(continues("k | where payload.note = 'it\\'s"));
        assert!(!continues("k | where (payload.v > 50)"));
        assert!(!continues("k | where payload.note = \"(\""));
        assert!(!continues("k | where payload.note = 'a\\'b'"));
        assert!(!continues("k | where x > 1)"), "a stray closer is an error");
        assert!(!continues(".param p ("));
        assert!(!continues("# don't (wait"));
    }

    #[test]
    fn sampled_paths_quote_odd_keys_and_nest() {
        let mut fields = BTreeSet::new();
        let payload = serde_json::json!({"rows": 1, "row count": 2, "tolerance": {"abs": 1}});
        let Value::Object(payload) = payload else {
            unreachable!()
        };
        add_paths(&mut fields, "payload", &payload, 2);
        let fields: Vec<_> = fields.into_iter().collect();
        assert_eq!(
            fields,
            [
                "payload.\"row count\"",
                "payload.rows",
                "payload.tolerance",
                "payload.tolerance.abs"
            ]
        );
    }
}
