//! The append-only log: JSONL segments in `log/`, one committed record per
//! line, in id order, each exactly once.
//!
//! It is also the write-ahead log of small commits. The writer thread makes
//! a small group of records durable by appending and syncing its lines
//! before redb commits it without a sync; a large group is committed by
//! redb durably and appended afterwards (see `Commit` and `Store::open_with`).
//! After a crash, [`LogWriter::open`] trims a torn last line; then the
//! store replays the lines redb's file lacks, or re-appends the committed
//! records the log lacks. So once the store is open the log holds every
//! committed record once. Readers ([`LogReader`]) only read files, so they
//! work while another process holds the store for writing.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Result, StorageError};
use crate::model::StoredRecord;

/// The log directory's name inside a store directory.
pub const LOG_DIR: &str = "log";
/// Default size at which a new segment is started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

const SEGMENT_EXT: &str = "jsonl";

/// A segment file: its path and the id of its first record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The file.
    pub path: PathBuf,
    /// The first id it holds (from its name).
    pub first_id: u64,
}

/// The segments of a log directory, in id order.
pub fn segments(log_dir: &Path) -> Result<Vec<Segment>> {
    let entries = match fs::read_dir(log_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io(log_dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(log_dir, e))?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
            continue;
        }
        let Some(first_id) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        out.push(Segment { path, first_id });
    }
    out.sort_by_key(|s| s.first_id);
    Ok(out)
}

fn segment_path(log_dir: &Path, first_id: u64) -> PathBuf {
    log_dir.join(format!("{first_id:020}.{SEGMENT_EXT}"))
}

/// The id at the start of a log line: lines begin with `{"id":N,` as written
/// by the canonical serializer; anything else is parsed in full.
pub fn line_id(line: &str) -> Option<u64> {
    if let Some(rest) = line.strip_prefix("{\"id\":") {
        let digits: &str = &rest[..rest.bytes().take_while(u8::is_ascii_digit).count()];
        if let Ok(id) = digits.parse() {
            return Some(id);
        }
    }
    serde_json::from_str::<serde_json::Value>(line)
        .ok()?
        .get("id")?
        .as_u64()
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends committed records to the log (one writer per store).
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    file: File,
    segment_bytes: u64,
    current_size: u64,
    last_id: u64,
    /// Set when a write failed: nothing more is appended until the store is
    /// reopened, so a torn line can only ever be the last one (and is repaired).
    poisoned: bool,
    /// Lines rendered by [`LogWriter::stage`] and not yet written; kept
    /// between appends, so a bulk load's ~5 MB of lines a batch reuse one
    /// block instead of growing a fresh one (page faults, copies) each time.
    staged: Vec<u8>,
    /// Where in `staged` a new segment starts: (offset, its first id).
    cuts: Vec<(usize, u64)>,
}

/// What staging held at one point (see [`LogWriter::mark`]).
#[derive(Clone, Copy, Debug)]
pub struct StageMark {
    staged: usize,
    cuts: usize,
    current_size: u64,
    last_id: u64,
}

/// The size of the writes staged lines are written in.
const WRITE_BYTES: usize = 1 << 20;
/// A staged block larger than this is not kept after it is written.
const KEEP_STAGED_BYTES: usize = 16 << 20;
/// Staging writes what it holds once it holds this much (a group of
/// ~60,000 records' lines), so a huge `bulk_store` does not hold all its
/// lines twice.
const STAGE_MAX_BYTES: usize = 32 << 20;

impl LogWriter {
    /// Opens the log in `log_dir`, trims a torn last line, and returns the
    /// writer and the id of the last record the log holds (0 when empty).
    /// The caller then appends what the store committed after that id.
    pub fn open(log_dir: &Path, segment_bytes: u64) -> Result<Self> {
        fs::create_dir_all(log_dir).map_err(|e| StorageError::io(log_dir, e))?;
        let segs = segments(log_dir)?;
        let (path, last_id) = match segs.last() {
            None => (segment_path(log_dir, 1), 0),
            Some(seg) => {
                let last_id = repair_tail(&seg.path)?;
                // An empty last segment: the id before its first.
                let last_id = last_id.unwrap_or(seg.first_id.saturating_sub(1));
                (seg.path.clone(), last_id)
            }
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        // Synced lines must not vanish with their file's directory entry
        // (the log is the write-ahead log of small commits): the segment's
        // entry in `log/`, and `log/` in the store directory, are synced.
        super::sync_dir(log_dir)?;
        if let Some(store_dir) = log_dir.parent() {
            super::sync_dir(store_dir)?;
        }
        let current_size = file
            .metadata()
            .map_err(|e| StorageError::io(&path, e))?
            .len();
        Ok(LogWriter {
            dir: log_dir.to_path_buf(),
            file,
            segment_bytes: segment_bytes.max(1),
            current_size,
            last_id,
            poisoned: false,
            staged: Vec::new(),
            cuts: Vec::new(),
        })
    }

    /// The id of the last record in the log (0 when empty).
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Appends records (ascending ids, all above [`Self::last_id`]), rotating
    /// segments by size. Records at or below the last id are skipped, so
    /// replaying after a crash never writes a record twice.
    pub fn append(&mut self, records: &[StoredRecord]) -> Result<()> {
        // A stored record's line is `{"id":N,` then the record's own JSON
        // without its opening brace.
        let lines: Vec<(u64, String)> = records
            .iter()
            .map(|r| (r.id, r.record.to_json_string()))
            .collect();
        self.append_with_ids(
            lines
                .iter()
                .map(|(id, json)| (*id, json.get(1..).unwrap_or_default())),
        )
    }

    /// Appends records rendered as JSON without their opening brace
    /// (`"kind":...}`): each line is `{"id":N,` then that text. The same as
    /// [`LogWriter::stage`] then [`LogWriter::write_staged`].
    pub fn append_with_ids<'a>(
        &mut self,
        records: impl Iterator<Item = (u64, &'a str)>,
    ) -> Result<()> {
        self.stage(records)?;
        self.write_staged()
    }

    /// Renders the lines of records (as [`LogWriter::append_with_ids`]
    /// takes them) without writing them: [`LogWriter::write_staged`] does,
    /// so the caller can let go of the records in between. From here on
    /// [`LogWriter::last_id`] counts the staged lines.
    pub fn stage<'a>(&mut self, records: impl Iterator<Item = (u64, &'a str)>) -> Result<()> {
        if self.poisoned {
            return Err(StorageError::Corrupt(
                "the log stopped after a failed write; reopen the store to repair it".into(),
            ));
        }
        for (id, tail) in records {
            if id <= self.last_id {
                continue;
            }
            if self.staged.len() >= STAGE_MAX_BYTES {
                // A huge group: what is staged is written now rather than
                // held twice in memory (the records hold their JSON too).
                self.write_staged()?;
            }
            if self.current_size > 0 && self.current_size >= self.segment_bytes {
                // The segment is full: this line starts the next one.
                self.cuts.push((self.staged.len(), id));
                self.current_size = 0;
            }
            let buf = &mut self.staged;
            let before = buf.len();
            buf.extend_from_slice(b"{\"id\":");
            push_decimal(buf, id);
            buf.push(b',');
            buf.extend_from_slice(tail.as_bytes());
            buf.push(b'\n');
            self.current_size += (buf.len() - before) as u64;
            self.last_id = id;
        }
        Ok(())
    }

    /// Where staging stands: [`LogWriter::rollback`] returns to it.
    pub fn mark(&self) -> StageMark {
        StageMark {
            staged: self.staged.len(),
            cuts: self.cuts.len(),
            current_size: self.current_size,
            last_id: self.last_id,
        }
    }

    /// [`LogWriter::stage`] that never writes: it stages nothing and returns
    /// `Ok(false)` when the lines would not fit under the staging limit.
    /// What it stages can be taken back with [`LogWriter::rollback`] until
    /// the next write: the store renders a batch's lines while redb
    /// commits it, and drops them if the commit fails.
    pub fn stage_held<'a>(
        &mut self,
        records: impl Iterator<Item = (u64, &'a str)> + Clone,
    ) -> Result<bool> {
        // A line is its tail, `{"id":`, at most 20 digits, `,` and `\n`.
        let most: usize = records.clone().map(|(_, tail)| tail.len() + 28).sum();
        if self.staged.len() + most >= STAGE_MAX_BYTES {
            return Ok(false);
        }
        self.stage(records)?;
        Ok(true)
    }

    /// Takes back what was staged since `mark`, which must have been taken
    /// after the last write (staging only appends until then).
    pub fn rollback(&mut self, mark: StageMark) {
        debug_assert!(mark.staged <= self.staged.len() && mark.cuts <= self.cuts.len());
        self.staged.truncate(mark.staged);
        self.cuts.truncate(mark.cuts);
        self.current_size = mark.current_size;
        self.last_id = mark.last_id;
    }

    /// Writes the staged lines (not synced), starting new segments where
    /// staging said. A failed write poisons the log.
    pub fn write_staged(&mut self) -> Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let staged = std::mem::take(&mut self.staged);
        let cuts = std::mem::take(&mut self.cuts);
        let result = self.write_cut(&staged, &cuts);
        if result.is_err() {
            self.poisoned = true;
        }
        if staged.capacity() <= KEEP_STAGED_BYTES {
            self.staged = staged;
            self.staged.clear();
        }
        self.cuts = cuts;
        self.cuts.clear();
        result
    }

    fn write_cut(&mut self, staged: &[u8], cuts: &[(usize, u64)]) -> Result<()> {
        let mut from = 0;
        for &(at, first_id) in cuts {
            self.write_blocks(&staged[from..at])?;
            self.start_segment(first_id)?;
            from = at;
        }
        self.write_blocks(&staged[from..])
    }

    /// Writes whole lines, about [`WRITE_BYTES`] at a time: each write ends
    /// at a line's end, so a reader following the file never meets a line
    /// cut inside a write.
    fn write_blocks(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let end = if bytes.len() <= WRITE_BYTES {
                bytes.len()
            } else {
                match bytes[..WRITE_BYTES].iter().rposition(|&b| b == b'\n') {
                    Some(at) => at + 1,
                    // One line longer than a block: up to its end.
                    None => bytes[WRITE_BYTES..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(bytes.len(), |at| WRITE_BYTES + at + 1),
                }
            };
            let (block, rest) = bytes.split_at(end);
            self.file
                .write_all(block)
                .map_err(|e| StorageError::io(&self.dir, e))?;
            bytes = rest;
        }
        Ok(())
    }

    /// Syncs the current segment and opens the next, named by its first id.
    fn start_segment(&mut self, first_id: u64) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| StorageError::io(&self.dir, e))?;
        let path = segment_path(&self.dir, first_id);
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        super::sync_dir(&self.dir)
    }

    /// True after a failed write: nothing more is appended until the store
    /// is reopened (and the log repaired).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Starts writing the appended lines to disk without waiting for it,
    /// so that [`LogWriter::sync`] then mostly waits for writes under way.
    /// Linux only (`sync_file_range`); elsewhere, and on any error, it does
    /// nothing: `sync` makes the lines durable either way.
    pub fn start_sync(&self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain system call on a descriptor `self.file` owns;
            // it reads no memory of this process.
            let _ = unsafe {
                libc::sync_file_range(self.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
            };
        }
    }

    /// Forces appended lines to disk.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| StorageError::io(&self.dir, e))
    }
}

/// Trims anything after the last complete, parseable line of a segment and
/// returns that line's id.
fn repair_tail(path: &Path) -> Result<Option<u64>> {
    last_valid_id(path, true)
}

/// The id of the last record in the log in `log_dir` (0 when empty), read
/// without writing anything: a torn last line (a write in progress, or a
/// crash's) is passed over, not trimmed.
pub fn last_logged_id(log_dir: &Path) -> Result<u64> {
    match segments(log_dir)?.last() {
        None => Ok(0),
        // As `LogWriter::open` reads it: an empty last segment gives the
        // id before its first.
        Some(seg) => Ok(last_valid_id(&seg.path, false)?.unwrap_or(seg.first_id.saturating_sub(1))),
    }
}

/// The id of a complete log line: JSON that parses whole, with an `id`.
/// A torn line (a write cut short) does not parse. Nothing else of the
/// record is checked, so a line the store wrote before its size limit
/// counted the canonical form (over 1 MiB) still reads as complete.
fn complete_line_id(line: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: u64,
    }
    serde_json::from_slice::<Id>(line).ok().map(|l| l.id)
}

/// The id of the last valid line of a segment; with `repair`, what follows
/// it (a torn line) is cut off.
fn last_valid_id(path: &Path, repair: bool) -> Result<Option<u64>> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(repair)
        .open(path)
        .map_err(|e| StorageError::io(path, e))?;
    let len = file
        .metadata()
        .map_err(|e| StorageError::io(path, e))?
        .len();
    // Walk back through the tail in chunks until a complete valid line is found.
    let mut end = len;
    let mut chunk = 64 * 1024u64;
    loop {
        let start = end.saturating_sub(chunk);
        file.seek(SeekFrom::Start(start))
            .map_err(|e| StorageError::io(path, e))?;
        let mut tail = vec![0u8; (len - start) as usize];
        file.read_exact(&mut tail)
            .map_err(|e| StorageError::io(path, e))?;
        // Complete lines end with '\n'; try them from the last one backwards.
        let mut line_end = tail.iter().rposition(|&b| b == b'\n');
        while let Some(nl) = line_end {
            let line_start = tail[..nl].iter().rposition(|&b| b == b'\n').map(|p| p + 1);
            let Some(line_start) = line_start.or(if start == 0 { Some(0) } else { None }) else {
                break; // the line begins before this chunk: read more
            };
            let valid = complete_line_id(&tail[line_start..nl]);
            if let Some(id) = valid {
                let keep = start + nl as u64 + 1;
                if repair && keep < len {
                    file.set_len(keep).map_err(|e| StorageError::io(path, e))?;
                }
                return Ok(Some(id));
            }
            line_end = line_start.checked_sub(1);
        }
        if start == 0 {
            // No valid line at all.
            if repair && len > 0 {
                file.set_len(0).map_err(|e| StorageError::io(path, e))?;
            }
            return Ok(None);
        }
        chunk = chunk.saturating_mul(2);
        end = len;
    }
}

/// Reads the log from files only: committed records as JSONL lines in id order.
#[derive(Debug)]
pub struct LogReader {
    dir: PathBuf,
}

impl LogReader {
    /// A reader of the log of the store in `store_dir`.
    pub fn new(store_dir: &Path) -> Self {
        LogReader {
            dir: store_dir.join(LOG_DIR),
        }
    }

    /// Total size of the log's segments in bytes.
    pub fn size_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for seg in segments(&self.dir)? {
            total += fs::metadata(&seg.path)
                .map_err(|e| StorageError::io(&seg.path, e))?
                .len();
        }
        Ok(total)
    }

    /// Lines of records with `id >= since_id`, with their ids, in id order.
    /// Stops at a torn last line (a write in progress).
    pub fn lines_since(&self, since_id: u64) -> Result<LogLines> {
        let segs = segments(&self.dir)?;
        let start = segs
            .iter()
            .rposition(|s| s.first_id <= since_id.max(1))
            .unwrap_or(0);
        Ok(LogLines {
            segments: segs.into_iter().skip(start).collect::<Vec<_>>().into_iter(),
            current: None,
            since_id,
            last_id: since_id.saturating_sub(1),
        })
    }
}

/// An iterator over log lines `(id, line)`; see [`LogReader::lines_since`].
/// After it ends, calling [`LogLines::refresh`] picks up lines appended since.
#[derive(Debug)]
pub struct LogLines {
    segments: std::vec::IntoIter<Segment>,
    current: Option<(PathBuf, BufReader<File>)>,
    since_id: u64,
    last_id: u64,
}

impl LogLines {
    /// The id of the last line returned (or `since_id - 1`).
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Looks for new segments after the iterator ran dry (for `--follow`).
    pub fn refresh(&mut self, store_dir: &Path) -> Result<()> {
        let segs = segments(&store_dir.join(LOG_DIR))?;
        let current_first = self
            .current
            .as_ref()
            .and_then(|(p, _)| segs.iter().find(|s| &s.path == p).map(|s| s.first_id));
        let newer: Vec<Segment> = segs
            .into_iter()
            .filter(|s| match current_first {
                Some(first) => s.first_id > first,
                None => s.first_id > self.last_id,
            })
            .collect();
        if !newer.is_empty() && self.current.is_none() {
            self.segments = newer.into_iter();
        } else if !newer.is_empty() {
            let rest: Vec<Segment> = self.segments.by_ref().collect();
            let mut all = rest;
            for s in newer {
                if !all.contains(&s) {
                    all.push(s);
                }
            }
            self.segments = all.into_iter();
        }
        Ok(())
    }
}

impl Iterator for LogLines {
    type Item = Result<(u64, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let seg = self.segments.next()?;
                match File::open(&seg.path) {
                    Ok(f) => self.current = Some((seg.path, BufReader::new(f))),
                    Err(e) => return Some(Err(StorageError::io(&seg.path, e))),
                }
            }
            let (path, reader) = self.current.as_mut()?;
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => {
                    // End of this segment; keep it open if it is the last
                    // (more may be appended), else move on.
                    if self.segments.len() == 0 {
                        return None;
                    }
                    self.current = None;
                }
                Ok(n) => {
                    if !line.ends_with('\n') {
                        // A torn or in-progress line: rewind and stop here.
                        let back = -(n as i64);
                        if let Err(e) = reader.seek_relative(back) {
                            return Some(Err(StorageError::io(path, e)));
                        }
                        return None;
                    }
                    line.pop();
                    let Some(id) = line_id(&line) else {
                        return Some(Err(StorageError::Corrupt(format!(
                            "log line without an id in {}",
                            path.display()
                        ))));
                    };
                    if id < self.since_id || id <= self.last_id {
                        continue;
                    }
                    self.last_id = id;
                    return Some(Ok((id, line)));
                }
                Err(e) => return Some(Err(StorageError::io(path, e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_like_format() {
        for n in [0, 7, 10, 99, 100, 123_456_789, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    /// Lines rendered with their ids, written in 1 MiB pieces across
    /// segments, read back whole, once each, in id order.
    #[test]
    fn lines_with_ids_span_writes_and_segments() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_dir = dir.path().join(LOG_DIR);
        let mut log = LogWriter::open(&log_dir, 3 << 20).expect("open");
        let filler = "x".repeat(900);
        let tail = format!("\"kind\":\"k\",\"pad\":\"{filler}\"}}");
        // ~9.3 MB: several writes of the buffer and three segment rotations.
        let ids: Vec<u64> = (1..=10_000).collect();
        log.append_with_ids(ids.iter().map(|id| (*id, tail.as_str())))
            .expect("appended");
        // Ids at or below the last are skipped.
        log.append_with_ids([(10_000, tail.as_str()), (10_001, tail.as_str())].into_iter())
            .expect("appended");
        assert_eq!(log.last_id(), 10_001);
        assert!(segments(&log_dir).expect("segments").len() >= 3);
        let mut lines = LogReader::new(dir.path()).lines_since(0).expect("lines");
        let mut seen = 0u64;
        for line in lines.by_ref() {
            let (id, line) = line.expect("line");
            seen += 1;
            assert_eq!(id, seen);
            assert_eq!(line, format!("{{\"id\":{seen},{tail}"));
        }
        assert_eq!(seen, 10_001);
    }

    /// Staged lines are written only by `write_staged`, segments cut where
    /// staging said, in two stagings' order.
    #[test]
    fn staged_lines_are_written_by_write_staged() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_dir = dir.path().join(LOG_DIR);
        let mut log = LogWriter::open(&log_dir, 1 << 10).expect("open");
        let tail = format!("\"pad\":\"{}\"}}", "y".repeat(300));
        log.stage((1..=4).map(|id| (id, tail.as_str())))
            .expect("staged");
        log.stage((3..=9).map(|id| (id, tail.as_str())))
            .expect("staged");
        assert_eq!(log.last_id(), 9);
        assert!(logged_ids(dir.path()).is_empty());
        log.write_staged().expect("written");
        assert_eq!(logged_ids(dir.path()), (1..=9).collect::<Vec<u64>>());
        // ~330-byte lines, 1 KiB segments: a new one every 4 lines.
        assert_eq!(segment_firsts(&log_dir), [1, 5, 9]);
        // Nothing staged: nothing to write.
        log.write_staged().expect("written");
        assert_eq!(logged_ids(dir.path()).len(), 9);
    }

    /// The ids of the lines the log in `store_dir` holds, in order.
    fn logged_ids(store_dir: &Path) -> Vec<u64> {
        LogReader::new(store_dir)
            .lines_since(0)
            .expect("lines")
            .map(|l| l.expect("line").0)
            .collect()
    }

    /// The first id of each segment in `log_dir`.
    fn segment_firsts(log_dir: &Path) -> Vec<u64> {
        segments(log_dir)
            .expect("segments")
            .iter()
            .map(|s| s.first_id)
            .collect()
    }

    /// What `stage_held` staged is taken back by `rollback` (ids, segment
    /// cuts and sizes too), so staging again writes each line once; lines
    /// that would not fit under the staging limit are not staged at all.
    #[test]
    fn held_staging_can_be_taken_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_dir = dir.path().join(LOG_DIR);
        let mut log = LogWriter::open(&log_dir, 1 << 10).expect("open");
        let tail = format!("\"pad\":\"{}\"}}", "y".repeat(300));
        log.stage((1..=3).map(|id| (id, tail.as_str())))
            .expect("staged");
        let mark = log.mark();
        assert!(log
            .stage_held((4..=9).map(|id| (id, tail.as_str())))
            .expect("staged"));
        assert_eq!(log.last_id(), 9);
        log.rollback(mark);
        assert_eq!(log.last_id(), 3);
        // Too much for one staging: nothing staged, nothing written.
        let huge = "z".repeat(STAGE_MAX_BYTES);
        assert!(!log
            .stage_held([(4, huge.as_str())].into_iter())
            .expect("refused"));
        assert_eq!(log.last_id(), 3);
        assert!(log
            .stage_held((4..=6).map(|id| (id, tail.as_str())))
            .expect("staged"));
        log.write_staged().expect("written");
        assert_eq!(logged_ids(dir.path()), (1..=6).collect::<Vec<u64>>());
        // ~330-byte lines, 1 KiB segments: the cuts of the taken-back
        // staging are gone, so segments start at 1 and 5 only.
        assert_eq!(segment_firsts(&log_dir), [1, 5]);
    }

    /// Lines longer than a write block, between short ones, come back whole.
    #[test]
    fn lines_longer_than_a_write_block_are_written_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = LogWriter::open(&dir.path().join(LOG_DIR), 64 << 20).expect("open");
        let long = format!(
            "\"pad\":\"{}\"}}",
            "z".repeat(WRITE_BYTES + WRITE_BYTES / 2)
        );
        let short = "\"k\":1}".to_owned();
        let tails = [&short, &long, &short, &long, &long, &short];
        log.append_with_ids(
            tails
                .iter()
                .enumerate()
                .map(|(i, t)| (i as u64 + 1, t.as_str())),
        )
        .expect("appended");
        let lines: Vec<(u64, String)> = LogReader::new(dir.path())
            .lines_since(0)
            .expect("lines")
            .map(|l| l.expect("line"))
            .collect();
        assert_eq!(lines.len(), tails.len());
        for ((id, line), tail) in lines.iter().zip(tails) {
            assert_eq!(line, &format!("{{\"id\":{id},{tail}"));
        }
    }

    /// `append` writes a stored record's own canonical line.
    #[test]
    fn appended_records_are_their_json_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = LogWriter::open(&dir.path().join(LOG_DIR), 1 << 20).expect("open");
        let record = crate::model::MetadataRecord::new(
            "k",
            crate::model::MetadataTarget::new("s", "d", "t"),
            serde_json::json!({"rows": 1, "a": "x"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            crate::model::Timestamp::from_micros(0),
            "p",
        );
        let stored = StoredRecord { id: 3, record };
        log.append(std::slice::from_ref(&stored)).expect("appended");
        let lines: Vec<(u64, String)> = LogReader::new(dir.path())
            .lines_since(0)
            .expect("lines")
            .map(|line| line.expect("line"))
            .collect();
        assert_eq!(lines, vec![(3, stored.to_json_string())]);
    }
}
