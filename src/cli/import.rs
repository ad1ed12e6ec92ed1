//! `almanac import [FILE|-] [--skip-invalid]`: JSONL records into the store.
//!
//! Streaming: lines are read one at a time (at most 1 MiB each) and stored in
//! batches, so a file of any size never sits in memory. All or nothing by
//! default, in two passes: the first parses and checks every line without
//! writing and stops at the first invalid one (exit 2, nothing stored); the
//! second stores them with `bulk_store`. The first pass copies the input as
//! it reads it to a spool file in the store directory, and the second reads
//! that copy: a pipe, a FIFO or standard input cannot be read twice, and a
//! file that changes between the passes must not have unchecked lines
//! stored. The spool is removed afterwards, and any spool a killed import
//! left behind is removed the next time a command opens the store with
//! `open_store` (see
//! [`remove_stale_spools`]). With `--skip-invalid` one pass suffices.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use almanac::model::{MAX_LINE_BYTES, MAX_RECORD_BYTES};
use almanac::{Error, MetadataRecord, MetadataRepository, Store};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::error::{CliResult, Context, Failure};
use super::output::Out;

/// Records per `bulk_store` call.
const BATCH_RECORDS: usize = 10_000;
/// Inputs at least this large show a progress bar (on a terminal).
const PROGRESS_MIN_BYTES: u64 = 8 << 20;

/// Arguments of `almanac import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The JSONL file; `-` or nothing reads standard input.
    #[arg(value_name = "FILE|-")]
    file: Option<PathBuf>,
    /// Store the valid lines, report each invalid one on standard error, exit 0.
    #[arg(long)]
    skip_invalid: bool,
}

/// What an import did.
#[derive(Debug, Default)]
struct Counts {
    n_stored: usize,
    n_duplicates: usize,
    n_rejected: usize,
}

/// Runs `almanac import`.
pub fn run(db: &Path, args: &ImportArgs) -> CliResult {
    let store = super::open_store(db)?;
    // Refused input exits 2 with nothing stored (all or nothing), and a
    // store this import created then goes again (`super::Before`).
    let counts = import(&store, db, args)?;
    let mut out = Out::stdout();
    let mut summary = format!(
        "stored {} records, skipped {} duplicates",
        counts.n_stored, counts.n_duplicates
    );
    if args.skip_invalid {
        summary.push_str(&format!(", rejected {} invalid lines", counts.n_rejected));
    }
    out.line(&summary)?;
    out.flush()
}

fn import(store: &Store, db: &Path, args: &ImportArgs) -> CliResult<Counts> {
    let file = args.file.as_deref().filter(|f| *f != Path::new("-"));
    let counts = match (file, args.skip_invalid) {
        (Some(path), false) => {
            let (reader, len) = open_input(path)?;
            let name = path.display().to_string();
            import_all_or_nothing(store, db, reader, len, &name)?
        }
        (None, false) => {
            let stdin = Box::new(io::stdin().lock());
            import_all_or_nothing(store, db, stdin, stdin_len(), "standard input")?
        }
        (Some(path), true) => {
            let (reader, len) = open_input(path)?;
            import_skipping_invalid(store, reader, len)?
        }
        (None, true) => import_skipping_invalid(store, Box::new(io::stdin().lock()), stdin_len())?,
    };
    Ok(counts)
}

/// The length of standard input when it is a regular file (`import - <
/// FILE`), for the progress bar; `None` for a pipe or a terminal.
fn stdin_len() -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        let fd = io::stdin().as_fd().try_clone_to_owned().ok()?;
        let meta = File::from(fd).metadata().ok()?;
        meta.is_file().then_some(meta.len())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

fn open_input(path: &Path) -> CliResult<(Box<dyn BufRead>, Option<u64>)> {
    let file = File::open(path)
        .map_err(|e| Failure::other(format!("cannot read {}: {e}", path.display())))?;
    let len = file.metadata().ok().map(|m| m.len());
    Ok((Box::new(BufReader::with_capacity(256 * 1024, file)), len))
}

/// Pass 1 checks every line (copying the input to a spool), pass 2 stores
/// them from the spool; nothing is stored when a line is invalid.
fn import_all_or_nothing(
    store: &Store,
    db: &Path,
    reader: Box<dyn BufRead>,
    len: Option<u64>,
    name: &str,
) -> CliResult<Counts> {
    let spool = Spool::new(db);
    let copy = File::create(&spool.path)
        .map_err(|e| Failure::other(format!("cannot create {}: {e}", spool.path.display())))?;
    let mut progress = Progress::new(len, "checking");
    let mut lines = LineReader::stopping_at_overlong(Tee::new(reader, copy));
    while let Some(line) = lines
        .next_line()
        .with_context(|| format!("cannot read {name}"))?
    {
        if let Some(text) = line.text()? {
            parse_and_check(store, text).map_err(|e| e.at_line(line.number))?;
        }
        progress.set_position(lines.bytes_read);
    }
    progress.finish_and_clear();
    lines
        .into_inner()
        .finish()
        .with_context(|| format!("cannot copy {name} to {}", spool.path.display()))?;

    // The spool's length: what was read, also from a pipe.
    let (reader, len) = open_input(&spool.path)?;
    let mut progress = Progress::new(len, "storing");
    let mut lines = LineReader::new(reader);
    let mut batch = Batch::default();
    let mut counts = Counts::default();
    while let Some(line) = lines
        .next_line()
        .with_context(|| format!("cannot read {}", spool.path.display()))?
    {
        if let Some(text) = line.text()? {
            // The very bytes pass 1 checked; `bulk_store` checks again.
            let record = parse(text).map_err(|e| e.at_line(line.number))?;
            batch.push(line.number, record);
            if batch.is_full() {
                batch.store(store, &mut counts)?;
                progress.set_position(lines.bytes_read);
            }
        }
    }
    batch.store(store, &mut counts)?;
    progress.finish_and_clear();
    Ok(counts)
}

/// One pass: valid lines are stored, invalid ones reported and counted.
fn import_skipping_invalid(
    store: &Store,
    reader: Box<dyn BufRead>,
    len: Option<u64>,
) -> CliResult<Counts> {
    let mut progress = Progress::new(len, "storing");
    let mut lines = LineReader::new(reader);
    let mut batch = Batch::default();
    let mut counts = Counts::default();
    while let Some(line) = lines.next_line().context("cannot read the input")? {
        let checked = match line.text() {
            Ok(Some(text)) => parse_and_check(store, text),
            Ok(None) => continue,
            Err(e) => {
                // Its message names the line already.
                progress.suspend(|| eprintln_quiet(&e.message()));
                counts.n_rejected += 1;
                continue;
            }
        };
        match checked {
            Ok(record) => batch.push(line.number, record),
            Err(LineError::Invalid(message)) => {
                progress.suspend(|| eprintln_quiet(&format!("line {}: {message}", line.number)));
                counts.n_rejected += 1;
            }
            Err(LineError::Fatal(failure)) => return Err(failure),
        }
        if batch.is_full() {
            batch.store(store, &mut counts)?;
            progress.set_position(lines.bytes_read);
        }
    }
    batch.store(store, &mut counts)?;
    progress.finish_and_clear();
    Ok(counts)
}

fn eprintln_quiet(text: &str) {
    use std::io::Write;
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// Progress on standard error when it is a terminal and the input is
/// large: a bar when the input's length is known (a file, or standard
/// input redirected from one), else (a pipe) the bytes read so far, shown
/// once they pass [`PROGRESS_MIN_BYTES`].
struct Progress {
    bar: ProgressBar,
    /// Hidden until the input is found large (a pipe's length is unknown).
    hidden_until_large: bool,
}

impl Progress {
    fn new(len: Option<u64>, what: &'static str) -> Self {
        let hidden = Progress {
            bar: ProgressBar::hidden(),
            hidden_until_large: false,
        };
        if !io::stderr().is_terminal() {
            return hidden;
        }
        match len {
            Some(len) if len >= PROGRESS_MIN_BYTES => {
                let bar = ProgressBar::new(len);
                if let Ok(style) = ProgressStyle::with_template(
                    "{msg:>8} [{bar:40}] {binary_bytes}/{binary_total_bytes} ({eta})",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_message(what);
                Progress {
                    bar,
                    hidden_until_large: false,
                }
            }
            Some(_) => hidden,
            None => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
                if let Ok(style) = ProgressStyle::with_template(
                    "{msg:>8} {binary_bytes} read ({binary_bytes_per_sec})",
                ) {
                    bar.set_style(style);
                }
                bar.set_message(what);
                Progress {
                    bar,
                    hidden_until_large: true,
                }
            }
        }
    }

    fn set_position(&mut self, bytes: u64) {
        self.bar.set_position(bytes);
        if self.hidden_until_large && bytes >= PROGRESS_MIN_BYTES {
            self.hidden_until_large = false;
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    fn suspend<T>(&self, f: impl FnOnce() -> T) -> T {
        self.bar.suspend(f)
    }

    fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// Why one line was not accepted.
enum LineError {
    /// The line is at fault: the message names the field.
    Invalid(String),
    /// Something else failed (storage): the import stops.
    Fatal(Failure),
}

impl LineError {
    fn at_line(self, number: usize) -> Failure {
        match self {
            LineError::Invalid(message) => Failure::invalid(format!("line {number}: {message}")),
            LineError::Fatal(failure) => failure,
        }
    }
}

/// Parses one line and runs every check `bulk_store` would run.
///
/// A line with an `id` (an `export` line) is accepted and its id ignored:
/// the store assigns ids, and content deduplication makes re-imports no-ops.
fn parse_and_check(store: &Store, text: &str) -> Result<MetadataRecord, LineError> {
    let record = parse(text)?;
    match store.check_record(&record) {
        Ok(()) => Ok(record),
        Err(e) => Err(invalid_or_fatal(e)),
    }
}

/// Parses one line into a record (format checks only), ignoring an `id`.
fn parse(text: &str) -> Result<MetadataRecord, LineError> {
    MetadataRecord::from_json_line(text)
        .map(|(record, _id)| record)
        .map_err(|e| LineError::Invalid(e.to_string()))
}

fn invalid_or_fatal(e: Error) -> LineError {
    match e {
        Error::InvalidRecord { error, .. } => LineError::Invalid(error.to_string()),
        Error::Rejected { error, .. } => LineError::Invalid(error.to_string()),
        other if other.is_invalid_input() => LineError::Invalid(other.to_string()),
        other => LineError::Fatal(Failure::from(other)),
    }
}

/// Records waiting for one `bulk_store`, with their line numbers.
#[derive(Default)]
struct Batch {
    records: Vec<MetadataRecord>,
    line_numbers: Vec<usize>,
}

impl Batch {
    fn push(&mut self, line_number: usize, record: MetadataRecord) {
        self.records.push(record);
        self.line_numbers.push(line_number);
    }

    fn is_full(&self) -> bool {
        self.records.len() >= BATCH_RECORDS
    }

    fn store(&mut self, store: &Store, counts: &mut Counts) -> CliResult {
        if self.records.is_empty() {
            return Ok(());
        }
        match store.bulk_store(&self.records) {
            Ok(outcome) => {
                counts.n_stored += outcome.n_stored;
                counts.n_duplicates += outcome.n_duplicates;
            }
            Err(e) => {
                let line = e
                    .record_index()
                    .and_then(|i| self.line_numbers.get(i).copied());
                let stored = counts.n_stored;
                let failure = match invalid_or_fatal(e) {
                    LineError::Invalid(message) => match line {
                        Some(n) => Failure::invalid(format!("line {n}: {message}")),
                        None => Failure::invalid(message),
                    },
                    LineError::Fatal(failure) => failure,
                };
                return Err(
                    failure.context(format!("import stopped after storing {stored} records"))
                );
            }
        }
        self.records.clear();
        self.line_numbers.clear();
        Ok(())
    }
}

/// One input line (1-based number, counting blank lines).
struct Line<'a> {
    number: usize,
    content: LineContent<'a>,
}

enum LineContent<'a> {
    Text(&'a str),
    NotUtf8,
    /// Longer than a line may be: its length, or with `cut` the bytes read
    /// before reading stopped (the rest of the line was not read).
    TooLong {
        len: usize,
        cut: bool,
    },
}

/// A line that cannot be a record before it is even parsed.
struct BadLine(String);

impl BadLine {
    fn message(self) -> String {
        self.0
    }
}

impl From<BadLine> for Failure {
    fn from(e: BadLine) -> Self {
        Failure::invalid(e.0)
    }
}

impl Line<'_> {
    /// The line's text, `None` for a blank line; a line that is not UTF-8 or
    /// longer than a record may be is an error naming the line.
    fn text(&self) -> Result<Option<&str>, BadLine> {
        match self.content {
            LineContent::Text(text) => {
                let text = text.trim_end_matches('\r');
                // A UTF-8 byte order mark, which some editors and Windows
                // tools put first in a file, is no part of the record.
                let text = match self.number {
                    1 => text.strip_prefix('\u{feff}').unwrap_or(text),
                    _ => text,
                };
                Ok(if text.trim().is_empty() { None } else { Some(text) })
            }
            LineContent::NotUtf8 => Err(BadLine(format!(
                "line {}: field `record` is not valid UTF-8",
                self.number
            ))),
            LineContent::TooLong { len, cut: false } => Err(BadLine(format!(
                "line {}: field `record` is {len} bytes of JSON, more than the limit of {MAX_RECORD_BYTES}",
                self.number
            ))),
            LineContent::TooLong { len, cut: true } => Err(BadLine(format!(
                "line {}: field `record` is longer than the limit of {MAX_RECORD_BYTES} bytes of JSON (reading stopped after {len} bytes)",
                self.number
            ))),
        }
    }
}

/// Reads lines of at most [`MAX_LINE_BYTES`], the longest the store writes
/// (longer lines are skipped and reported, never held in memory); which
/// lines may be that long is the parser's business.
struct LineReader<R = Box<dyn BufRead>> {
    reader: R,
    buf: Vec<u8>,
    number: usize,
    bytes_read: u64,
    /// Stop at a line longer than a line may be instead of reading on to
    /// its end (the all-or-nothing check, which ends at the first bad
    /// line): an endless line (`import /dev/zero`) must not be read, nor
    /// copied to the spool, forever.
    stop_at_overlong: bool,
}

impl<R: BufRead> LineReader<R> {
    fn into_inner(self) -> R {
        self.reader
    }

    fn new(reader: R) -> Self {
        LineReader {
            reader,
            buf: Vec::new(),
            number: 0,
            bytes_read: 0,
            stop_at_overlong: false,
        }
    }

    /// A reader whose first overlong line is its last (see
    /// `stop_at_overlong`).
    fn stopping_at_overlong(reader: R) -> Self {
        LineReader {
            stop_at_overlong: true,
            ..LineReader::new(reader)
        }
    }

    fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let mut line_len = 0usize;
        let mut saw_any = false;
        let mut cut = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                break;
            }
            saw_any = true;
            let newline = available.iter().position(|&b| b == b'\n');
            let take = newline.unwrap_or(available.len());
            let room = (MAX_LINE_BYTES + 2).saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&available[..take.min(room)]);
            line_len += take;
            let consumed = take + usize::from(newline.is_some());
            self.reader.consume(consumed);
            self.bytes_read += consumed as u64;
            if newline.is_some() {
                break;
            }
            if self.stop_at_overlong && line_len > MAX_LINE_BYTES + 1 {
                cut = true;
                break;
            }
        }
        if !saw_any {
            return Ok(None);
        }
        self.number += 1;
        let content = if line_len > MAX_LINE_BYTES + 1 {
            LineContent::TooLong { len: line_len, cut }
        } else {
            match std::str::from_utf8(&self.buf) {
                Ok(text) => LineContent::Text(text),
                Err(_) => LineContent::NotUtf8,
            }
        };
        Ok(Some(Line {
            number: self.number,
            content,
        }))
    }
}

/// A reader that copies every byte read through it to a file.
struct Tee<R> {
    inner: R,
    copy: BufWriter<File>,
    /// The first failed write to the copy, reported by [`Tee::finish`]
    /// (`consume` cannot return it).
    error: Option<io::Error>,
}

impl<R: BufRead> Tee<R> {
    fn new(inner: R, copy: File) -> Self {
        Tee {
            inner,
            copy: BufWriter::with_capacity(256 * 1024, copy),
            error: None,
        }
    }

    /// Flushes the copy; the first error writing it, if any (the next
    /// `fill_buf` reports one too, so reading stops at once).
    fn finish(mut self) -> io::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.copy.flush()
    }
}

impl<R: BufRead> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Tee<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if let Some(e) = self.error.take() {
            // The copy failed (a full disk): stop reading now.
            return Err(e);
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if self.error.is_none() {
            // The bytes consumed are the front of the buffer just filled.
            let written = match self.inner.fill_buf() {
                Ok(buffered) => self.copy.write_all(&buffered[..n.min(buffered.len())]),
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                self.error = Some(e);
            }
        }
        self.inner.consume(n);
    }
}

/// The name of a spool file: `.import-<pid>.jsonl.spool` in the store directory.
const SPOOL_PREFIX: &str = ".import-";
const SPOOL_SUFFIX: &str = ".jsonl.spool";

/// A copy of the input in the store directory, removed on drop.
struct Spool {
    path: PathBuf,
}

impl Spool {
    fn new(db: &Path) -> Self {
        let name = format!("{SPOOL_PREFIX}{}{SPOOL_SUFFIX}", std::process::id());
        Spool {
            path: db.join(name),
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes the spool files of imports that were killed before they could
/// (called with the store open, so no other import of it is running: a
/// store is open in one process at a time). Best effort: a spool that
/// cannot be removed is left for the next time.
pub fn remove_stale_spools(db: &Path) {
    let Ok(entries) = std::fs::read_dir(db) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(SPOOL_PREFIX) && name.ends_with(SPOOL_SUFFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &str) -> Vec<(usize, Option<String>)> {
        let mut reader = LineReader::new(Box::new(io::Cursor::new(input.as_bytes().to_vec())));
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            let text = line.text().ok().flatten().map(str::to_owned);
            out.push((line.number, text));
        }
        out
    }

    #[test]
    fn numbers_count_blank_lines_and_a_last_line_without_newline() {
        assert_eq!(
            lines_of("a\n\n  \nb\r\nc"),
            vec![
                (1, Some("a".into())),
                (2, None),
                (3, None),
                (4, Some("b".into())),
                (5, Some("c".into())),
            ]
        );
        assert_eq!(lines_of(""), vec![]);
        assert_eq!(lines_of("a\n"), vec![(1, Some("a".into()))]);
    }

    /// `import /dev/zero` read (and spooled) its endless line until the
    /// disk filled; the check pass now stops at the limit.
    #[test]
    fn an_endless_line_stops_the_check_pass_at_the_limit() {
        let endless = io::BufReader::new(io::repeat(b'x'));
        let mut reader = LineReader::stopping_at_overlong(endless);
        let line = reader.next_line().unwrap().unwrap();
        let message = line.text().expect_err("too long").message();
        assert!(
            message.starts_with("line 1: field `record` is longer than the limit of 1048576"),
            "{message}"
        );
        assert!(reader.bytes_read < 2 * MAX_LINE_BYTES as u64);
    }

    #[test]
    fn overlong_lines_are_reported_not_kept() {
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let input = format!("{long}\nok\n");
        let mut reader = LineReader::new(Box::new(io::Cursor::new(input.into_bytes())));
        assert!(reader.next_line().unwrap().unwrap().text().is_err());
        assert!(reader.buf.len() <= MAX_LINE_BYTES + 2);
        let second = reader.next_line().unwrap().unwrap();
        assert_eq!(second.text().ok().flatten(), Some("ok"));
    }
}
