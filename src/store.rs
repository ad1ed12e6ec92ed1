//! `Store`: the embedded implementation of [`MetadataRepository`].
//!
//! A `Store` is a cheap-to-clone, `Send + Sync` handle. Writes are validated
//! and encoded on the caller's thread, then handed to one writer thread that
//! groups every write waiting at that moment into one transaction (group
//! commit) and makes it durable before answering: a small group of
//! single-record calls by appending its records to the log and syncing it
//! (redb then commits without syncing), a larger one by redb's durable
//! commit (its log lines written afterwards); see [`Store::open_with`].
//! Then it wakes subscribers and answers each caller. `latest` and `history` share one redb read snapshot
//! that every commit invalidates before the writer answers; scans open their
//! own. Reads never wait for a write transaction.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::kinds::{standard_kinds, KindError, KindRegistry, KindSpec, Retention};
use crate::model::{
    MetadataRecord, MetadataTarget, StoredRecord, TimeRange, Timestamp, ValidationError,
    MAX_WRITTEN_RECORD_BYTES,
};
use crate::query::{
    ExecOptions, Params, QueryOutput, RecordIter, RecordSource, ScanDescription, ScanRequest,
    TargetInfo,
};
use crate::repository::{BulkOutcome, MetadataRepository, StoreOutcome};
use crate::storage::log::{LogReader, LogWriter, DEFAULT_SEGMENT_BYTES, LOG_DIR};
use crate::storage::{
    self, check_index_path, decode_record, Commit, CompactReport, Engine, PartitionInfo,
    PreparedRecord, RetentionReport, StorageError, WriteOutcome,
};
pub use crate::storage::{
    HistoryCacheStats, LatestCacheStats, DEFAULT_HISTORY_CACHE_BYTES, DEFAULT_LATEST_CACHE_BYTES,
};

/// Where "now" comes from: the system clock, or a fixed or scripted one in tests.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock(Arc::new(Timestamp::now))
    }

    /// A clock that always reads `at`.
    pub fn fixed(at: Timestamp) -> Self {
        Clock(Arc::new(move || at))
    }

    /// A clock driven by a function.
    pub fn from_fn(f: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        Clock(Arc::new(f))
    }

    /// The current instant by this clock.
    pub fn now(&self) -> Timestamp {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

/// Whether records of unregistered kinds are accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Governance {
    /// Unregistered kinds are accepted (registered kinds are always checked).
    #[default]
    Open,
    /// Unregistered kinds are rejected until registered.
    Strict,
}

/// Tuning for [`Store::open_with`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Governance mode.
    pub governance: Governance,
    /// Size at which the log starts a new segment.
    pub log_segment_bytes: u64,
    /// The clock used for retention checks and the query language's `now`.
    pub clock: Clock,
    /// Most records the writer groups into one commit (bulk batches are never split).
    pub max_group_records: usize,
    /// redb's page cache, in bytes. redb's own default is 1 GiB, too much for
    /// an engine embedded in someone else's process; 128 MiB by default.
    pub cache_bytes: usize,
    /// The latest cache, in bytes: the `latest` entries read so far, kept
    /// in memory (encoded, as stored; a commit removes those it changes),
    /// so that a repeated `latest` skips redb's b-tree walk. About this
    /// much memory at most, on top of `cache_bytes`, by the cache's own
    /// count (keys, values and an estimated overhead per entry); 0 turns
    /// it off. 32 MiB by default ([`DEFAULT_LATEST_CACHE_BYTES`]): the
    /// entries of ~50,000 (kind, target) pairs of ~500-byte records. It is
    /// split into 16 shards, and a shard that would overflow is emptied,
    /// so when the pairs asked for do not fit, a shard holds anything
    /// between nothing and its share (about half, if it fills evenly; not
    /// measured). [`Store::latest_cache_stats`] says what it holds.
    pub latest_cache_bytes: usize,
    /// The history cache, in bytes: copies, in memory, of the partitions
    /// `history` reads often (copied on the fourth visit at the same
    /// contents): their by-target keys and, where they fit, their records'
    /// encoded bytes, so that a call reads neither the partition's index
    /// nor (records copied) its records table. A commit that adds records
    /// to a partition makes its copy stale: it is no longer used, and is
    /// let go at the next visit that sees the new contents. The copies
    /// held take at most this many bytes by the cache's own count, on top
    /// of `cache_bytes` and `latest_cache_bytes` (not counted: allocator
    /// overhead, a copy being made, about a partition's keys plus a
    /// quarter of this, and a copy let go while a call still reads it).
    /// Past it the copies used longest ago are let go; a partition's
    /// records are copied only within a quarter of it (and what the keys
    /// leave), else its keys alone; a partition whose keys alone would not
    /// fit, or of more than 131,072 records, is never copied. 0 turns it
    /// off. 64 MiB by default ([`DEFAULT_HISTORY_CACHE_BYTES`]): 30 days
    /// of `ingestion_volume` at N = 1,000,000 in the compare bench took
    /// 27.4 MB. [`Store::history_cache_stats`] says what it holds.
    pub history_cache_bytes: usize,
    /// Lets a scan that reads whole partitions of several kinds (a full scan,
    /// `stats` over every record) walk each kind on a thread of its own (and
    /// decode on a second one when it tests paths and few rows pass) while
    /// the calling thread merges: the same answers, on every core. Off, every
    /// query runs on the calling thread alone. On by default.
    pub parallel_scans: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            governance: Governance::Open,
            log_segment_bytes: DEFAULT_SEGMENT_BYTES,
            clock: Clock::system(),
            max_group_records: 100_000,
            cache_bytes: DEFAULT_CACHE_BYTES,
            latest_cache_bytes: DEFAULT_LATEST_CACHE_BYTES,
            history_cache_bytes: DEFAULT_HISTORY_CACHE_BYTES,
            parallel_scans: true,
        }
    }
}

/// The default page cache of a store (see [`StoreOptions::cache_bytes`]).
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

/// Batches at least this large are written while they are prepared
/// ([`Store::write_streamed`]), in chunks of [`STREAM_CHUNK`] records.
const STREAM_MIN: usize = 2 * STREAM_CHUNK;
/// See [`STREAM_MIN`].
const STREAM_CHUNK: usize = 1024;

/// A durable group at least this large has its log lines rendered while
/// redb commits it, on a thread of its own (see `Commit::DurableBeside`);
/// for smaller ones starting the thread would cost more than it saves.
const STAGE_BESIDE_MIN: usize = 1024;

/// The largest streamed batch whose commit writes the log lines the last
/// one left behind: until then (its preparing and writing: ~0.5 s for this
/// many records at the ~140,000 records/s of the compare bench here)
/// `Store::log` waits for them.
const BEHIND_MAX: usize = 65_536;

/// The largest streamed batch whose prepared records (each its encoding
/// and its JSON) are kept to be freed by the next call (see
/// [`Store::write_streamed`]).
const SPENT_MAX: usize = 16_384;

/// How long the writer waits for the next job before writing the log lines
/// of a large batch it left behind (see `Writer::run`). A bulk load's next
/// batch comes within microseconds of the answer to the last.
const LOG_BEHIND_WAIT: Duration = Duration::from_millis(2);

/// The longest the writer waits for the callers of its last group to come
/// back before committing a smaller group.
const GROUP_WAIT_MAX: Duration = Duration::from_millis(2);
/// Groups of fewer records (from single-record calls) are made durable by
/// the log, larger ones by redb (see `Writer::run`): syncing a large group's
/// lines would cost more than redb's commit saves.
const LOGGED_GROUP_MAX: usize = 256;
/// At most this many commits in a row are made durable by the log alone.
const CHECKPOINT_COMMITS: usize = 256;
/// The first commit this long after an earlier one that is durable only in the
/// log is made durable by redb.
const CHECKPOINT_AGE: Duration = Duration::from_secs(1);
/// A writer with nothing to do this long makes redb's file catch up with the log.
const CHECKPOINT_IDLE: Duration = Duration::from_millis(50);
/// Expired partitions are deleted between writes, when no job waits; under
/// writes that never pause, one is deleted between two groups once this
/// long has passed since the last deletion, so their space comes back
/// during a long load too.
const PURGE_STARVE_MAX: Duration = Duration::from_secs(1);

/// Threads that help the caller's thread prepare a streamed batch: none
/// on two cores (the writer has the other), else the cores left, at most 3.
fn stream_helpers() -> usize {
    crate::storage::available_cores().saturating_sub(2).min(3)
}

/// Validates, checks governance and encodes `records`, the batch's records
/// from index `first` on (errors name their index in the batch).
fn prepare_with(
    registry: &KindRegistry,
    strict: bool,
    first: usize,
    records: &[MetadataRecord],
) -> Result<Vec<PreparedRecord>> {
    records
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let index = Some(first + i);
            record
                .validate()
                .map_err(|error| Error::InvalidRecord { index, error })?;
            registry
                .check(record, strict)
                .map_err(|error| Error::Rejected { index, error })?;
            let prepared = PreparedRecord::new(
                record,
                registry.bucket_of(&record.kind),
                registry.indexed_paths_of(&record.kind),
                registry.summarized_paths_of(&record.kind),
            );
            // The record as the store writes it back (its log line,
            // `export`, `tail`) must read back as a line: its canonical
            // JSON, which can be longer than the text it came from
            // (defaults, `Z` times), is held to a limit above the 1 MiB one
            // on the text (see `MAX_WRITTEN_RECORD_BYTES`).
            let written = prepared.json().len();
            if written > MAX_WRITTEN_RECORD_BYTES {
                return Err(Error::InvalidRecord {
                    index,
                    error: ValidationError::new(
                        "record",
                        format!(
                            "is {written} bytes of JSON as the store writes it back (defaults filled in, times in UTC), more than the limit of {MAX_WRITTEN_RECORD_BYTES}"
                        ),
                    ),
                });
            }
            Ok(prepared)
        })
        .collect()
}

/// Drops repeated entries of a list, keeping the first of each.
fn dedup(list: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    list.retain(|p| seen.insert(p.clone()));
}

/// A kind's indexed and summarized paths, each named once (a path listed
/// twice would be indexed, or taken off, twice).
fn dedup_paths(spec: &mut KindSpec) {
    dedup(&mut spec.indexed_paths);
    dedup(&mut spec.summarized_paths);
}

/// A single record's error: without the batch index.
fn without_index(e: Error) -> Error {
    match e {
        Error::InvalidRecord { error, .. } => Error::InvalidRecord { index: None, error },
        Error::Rejected { error, .. } => Error::Rejected { index: None, error },
        other => other,
    }
}

/// What the writer thread is asked to do.
enum Msg {
    /// Store these records.
    Write(Job),
    /// Expired partitions wait under `purge/`: delete them between writes.
    Purge,
}

/// A write waiting for the writer thread.
struct Job {
    records: Records,
    reply: SyncSender<Reply>,
}

/// The writer's answer, with the job's records handed back so the caller's
/// thread frees what it allocated (cross-thread frees contend in malloc).
type Reply = (Result<Vec<WriteOutcome>, StorageError>, Records);

/// A job's records.
enum Records {
    /// Prepared before the job was sent: written as one group.
    Ready(Vec<PreparedRecord>),
    /// A large batch its caller prepares in chunks while the writer writes
    /// the chunks already prepared (see [`Store::write_streamed`]): one
    /// group per chunk, in order.
    Streamed(Arc<Streamed>),
}

/// See [`Records::Streamed`].
struct Streamed {
    n_records: usize,
    /// Each chunk once prepared; `None` when it never will be (a record of
    /// the batch failed its checks, or its preparing thread panicked): the
    /// writer then abandons the whole batch.
    chunks: Vec<OnceLock<Option<Vec<PreparedRecord>>>>,
}

impl Records {
    fn len(&self) -> usize {
        match self {
            Records::Ready(records) => records.len(),
            Records::Streamed(streamed) => streamed.n_records,
        }
    }

    fn is_streamed(&self) -> bool {
        matches!(self, Records::Streamed(_))
    }

    /// The groups [`Engine::write_groups`] writes, a streamed chunk waited
    /// for when the writer comes to it.
    fn groups(&self) -> Box<dyn Iterator<Item = Option<&[PreparedRecord]>> + '_> {
        match self {
            Records::Ready(records) => Box::new(std::iter::once(Some(records.as_slice()))),
            Records::Streamed(streamed) => {
                Box::new(streamed.chunks.iter().map(|chunk| chunk.wait().as_deref()))
            }
        }
    }

    /// The records of a written job, in order (every chunk of a streamed
    /// batch is prepared once its write has succeeded).
    fn iter(&self) -> Box<dyn Iterator<Item = &PreparedRecord> + '_> {
        match self {
            Records::Ready(records) => Box::new(records.iter()),
            Records::Streamed(streamed) => Box::new(
                streamed
                    .chunks
                    .iter()
                    .filter_map(|chunk| chunk.get().and_then(Option::as_ref))
                    .flatten(),
            ),
        }
    }
}

/// Sets every chunk of a streamed batch not set yet to `None` when dropped:
/// once the preparing threads are done, or as the caller unwinds, so a
/// chunk whose thread panicked never leaves the writer waiting for it.
struct StreamGuard<'a>(&'a Streamed);

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        for chunk in &self.0.chunks {
            let _ = chunk.set(None);
        }
    }
}

/// Counters of the writer since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Commits made, each durable when its callers were answered (by the
    /// log, or by redb for large groups; see [`Store::open_with`]).
    pub n_commits: u64,
    /// Records written (duplicates excluded).
    pub n_records: u64,
    /// Records the opening replayed from the log: they were durable in the
    /// log, but not yet in the redb file, when the last writer stopped
    /// without closing the store.
    pub n_replayed: u64,
}

#[derive(Debug, Default)]
struct WriteCounters {
    n_commits: AtomicU64,
    n_records: AtomicU64,
    n_replayed: AtomicU64,
}

struct Inner {
    engine: Arc<Engine>,
    counters: Arc<WriteCounters>,
    registry: RwLock<KindRegistry>,
    options: StoreOptions,
    jobs: Option<Sender<Msg>>,
    writer: Option<JoinHandle<()>>,
    subscribers: Arc<Mutex<Vec<Sender<StoredRecord>>>>,
    log_progress: Arc<LogProgress>,
    dir: PathBuf,
    /// The prepared records of the last streamed batch, freed by the next
    /// write while it waits for the writer (see [`Store::write_streamed`]).
    spent: Mutex<Option<Arc<Streamed>>>,
    /// Write jobs queued for the writer and not yet answered (see
    /// [`InFlight`]); [`Store::update_kind`] waits for none to be left.
    in_flight: InFlight,
}

/// Counts write jobs between their queueing and their answer. A job is
/// queued while its caller still holds the kind registry's read lock (the
/// registry it was prepared against), so once a kind change holds the
/// write lock, the jobs prepared against the old registry are exactly the
/// ones in flight: the change waits for them to commit before it changes
/// the kind's tables, so no record is written with index entries of a
/// spec that no longer holds (or without those of one that does).
#[derive(Debug, Default)]
struct InFlight {
    count: Mutex<usize>,
    idle: std::sync::Condvar,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.count.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one job until the returned guard is dropped.
    fn start(&self) -> InFlightJob<'_> {
        *self.lock() += 1;
        InFlightJob(self)
    }

    /// Waits until no job is in flight.
    fn wait_idle(&self) {
        let mut count = self.lock();
        while *count > 0 {
            count = self
                .idle
                .wait(count)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// One job of [`InFlight`]: uncounted when dropped (answered, or failed).
struct InFlightJob<'a>(&'a InFlight);

impl Drop for InFlightJob<'_> {
    fn drop(&mut self) {
        let mut count = self.0.lock();
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// Whether the writer has answered callers whose records' log lines it has
/// not yet written: after a durable (redb) commit it renders the lines,
/// answers, then writes them, so the caller's next batch is prepared while
/// the log is written (a large batch's lines are written while the next
/// batch commits, or once the writer is idle). [`Store::log`] (so `tail`
/// and `stats`) waits for those lines, so through it a record is in the log
/// once its call returned; a `LogReader` made on its own may trail by that
/// write.
#[derive(Debug, Default)]
struct LogProgress {
    /// (answered, written): how many groups were answered before their
    /// lines were written, and how many of those have been written since.
    /// A reader waits for the groups answered before it asked, not for
    /// `written` to catch up with an `answered` that keeps growing.
    state: Mutex<(u64, u64)>,
    written: std::sync::Condvar,
}

impl LogProgress {
    /// The longest a reader waits for the writer (a write that hangs in
    /// the kernel never finishes; a writer loop that ends, a panic
    /// included, releases the readers: see `ReleaseReaders`).
    const MAX_WAIT: Duration = Duration::from_secs(10);

    /// A group is answered before its lines are written.
    fn answered(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 += 1;
    }

    /// Every answered group's lines are written (or failed to be: the log
    /// is then repaired at the next open, and nobody should wait for it).
    fn written(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.1 = state.0;
        self.written.notify_all();
    }

    fn wait(&self) {
        let deadline = Instant::now() + Self::MAX_WAIT;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let target = state.0;
        while state.1 < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            state = match self.written.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// See `Writer::run`.
struct ReleaseReaders<'a>(&'a LogProgress);

impl Drop for ReleaseReaders<'_> {
    fn drop(&mut self) {
        self.0.written();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop once queued jobs are done.
        self.jobs.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The embedded store: a directory with `almanac.redb` and `log/`.
///
/// ```
/// use almanac::{MetadataRecord, MetadataRepository, MetadataTarget, Store, Timestamp};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path()).unwrap();
/// let target = MetadataTarget::new("oracle_prod", "sales", "orders");
/// let mut payload = serde_json::Map::new();
/// payload.insert("rows".into(), 1200.into());
/// let record = MetadataRecord::new("ingestion_volume", target.clone(), payload,
///     Timestamp::now(), "ingestion.v1");
/// let first = store.store(&record).unwrap();
/// let retry = store.store(&record).unwrap();
/// assert_eq!(first.id, retry.id); // retries never duplicate
/// let latest = store.latest(&target, "ingestion_volume").unwrap().unwrap();
/// assert_eq!(latest.record.payload["rows"], 1200);
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// One partition, as reported by [`Store::partitions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSummary {
    /// `kind/bucket`.
    pub name: String,
    /// The kind.
    pub kind: String,
    /// The catalog entry.
    pub info: PartitionInfo,
}

/// Records, partitions and time span of one kind, as reported by [`Store::stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindStats {
    /// The kind.
    pub kind: String,
    /// Records stored.
    pub n_records: u64,
    /// Partitions holding them.
    pub n_partitions: usize,
    /// The oldest `produced_at` (`None` when there are no records).
    pub oldest: Option<Timestamp>,
    /// The newest `produced_at` (`None` when there are no records).
    pub newest: Option<Timestamp>,
}

/// A summary of a store: sizes on disk and figures per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Length of the redb file in bytes.
    pub db_bytes: u64,
    /// Bytes the file system allocated to the redb file (Unix; `None`
    /// elsewhere). Less than `db_bytes` when the file is sparse: redb grows
    /// its file ahead of use without writing the new space (the first write
    /// after `compact` doubles its length), so this is what it takes on disk.
    pub db_allocated_bytes: Option<u64>,
    /// Size of the log segments in bytes.
    pub log_bytes: u64,
    /// Every kind that has partitions, by name.
    pub kinds: Vec<KindStats>,
}

impl StoreStats {
    /// Records in the whole store.
    pub fn n_records(&self) -> u64 {
        self.kinds.iter().map(|k| k.n_records).sum()
    }

    /// Partitions in the whole store.
    pub fn n_partitions(&self) -> usize {
        self.kinds.iter().map(|k| k.n_partitions).sum()
    }

    /// The oldest `produced_at` in the store.
    pub fn oldest(&self) -> Option<Timestamp> {
        self.kinds.iter().filter_map(|k| k.oldest).min()
    }

    /// The newest `produced_at` in the store.
    pub fn newest(&self) -> Option<Timestamp> {
        self.kinds.iter().filter_map(|k| k.newest).max()
    }
}

impl Store {
    /// Opens the store in `dir` (created when missing) with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Store::open_with(dir, StoreOptions::default())
    }

    /// Opens the store in `dir` with the given options.
    ///
    /// Fails at once with [`StorageError::Locked`] when another process (or
    /// another open handle) holds the store.
    ///
    /// **Durability.** A write returns once it is durable. Small groups of
    /// single-record calls (fewer than 256 in one commit, as when threads
    /// `store` one record at a time) are made durable by the log: their lines are
    /// appended to `log/` and synced, then redb commits without syncing its
    /// file. Larger groups, groups holding a `bulk_store` of several
    /// records, every 256th commit, the first commit a second
    /// after such a commit, an idle writer (50 ms) and closing the store
    /// commit redb durably. So after a crash the redb file may lack the last
    /// records the log holds: opening replays them, under their own ids,
    /// before anything else ([`WriteStats::n_replayed`]); and records redb
    /// committed that the log lacks (the log is appended after a durable
    /// commit) are appended to the log. A small group that fails once its
    /// lines began to be written may still be applied by the next open,
    /// and the writer refuses every write until that open; a retried write
    /// is recognised as a duplicate.
    pub fn open_with(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        guarded(|| {
            let dir = dir.as_ref().to_path_buf();
            let engine = Arc::new(
                Engine::open(&dir, &standard_kinds(), options.cache_bytes)?
                    .with_latest_cache(options.latest_cache_bytes)
                    .with_history_cache(options.history_cache_bytes)
                    .with_parallel_scans(options.parallel_scans),
            );
            let registry = KindRegistry::from_specs(engine.load_kinds()?)?;
            let mut log = LogWriter::open(&dir.join(LOG_DIR), options.log_segment_bytes)?;
            let next_id = engine.next_id()?;
            let counters: Arc<WriteCounters> = Arc::default();
            if log.last_id() >= next_id {
                // Records made durable by the log whose redb commit was not yet
                // durable when the last writer died.
                replay_log(&engine, &registry, &dir, next_id, log.last_id())?;
                counters
                    .n_replayed
                    .store(log.last_id() + 1 - next_id, Ordering::Relaxed);
            } else if log.last_id() + 1 < next_id {
                // Records committed but not yet logged when the last writer died.
                let missing = engine.records_since(log.last_id() + 1)?;
                log.append(&missing)?;
                log.sync()?;
            }
            let (tx, rx) = mpsc::channel::<Msg>();
            let subscribers: Arc<Mutex<Vec<Sender<StoredRecord>>>> = Arc::default();
            let log_progress: Arc<LogProgress> = Arc::default();
            let writer = {
                let engine = Arc::clone(&engine);
                let counters = Arc::clone(&counters);
                let subscribers = Arc::clone(&subscribers);
                let log_progress = Arc::clone(&log_progress);
                let max_group = options.max_group_records.max(1);
                std::thread::Builder::new()
                    .name("almanac-writer".into())
                    .spawn(move || {
                        let writer = Writer {
                            engine: &engine,
                            subscribers: &subscribers,
                            counters: &counters,
                            log_progress: &log_progress,
                            max_group,
                        };
                        writer.run(log, &rx);
                    })
                    .map_err(|e| StorageError::io(&dir, e))?
            };
            if engine.purge_pending()? > 0 {
                // Expired partitions an earlier process did not finish deleting.
                let _ = tx.send(Msg::Purge);
            }
            Ok(Store {
                inner: Arc::new(Inner {
                    engine,
                    counters,
                    registry: RwLock::new(registry),
                    options,
                    jobs: Some(tx),
                    writer: Some(writer),
                    subscribers,
                    log_progress,
                    dir,
                    spent: Mutex::default(),
                    in_flight: InFlight::default(),
                }),
            })
        })
    }

    /// Opens the existing store in `dir` read-only, with the given options
    /// (the writer's are unused).
    ///
    /// Any number of read-only handles, in this process or others, may
    /// have a store open at once; a handle open for writing excludes them
    /// and they exclude it ([`StorageError::Locked`] at once, either way).
    /// Reads (`latest`, `history`, queries, the kind registry, statistics)
    /// work as on a writable handle; every write fails with
    /// [`StorageError::ReadOnly`], and so does a retention dry run (it runs
    /// in a write transaction it aborts). Nothing is created or written:
    /// [`StorageError::NoStore`] when `dir` holds no store, and
    /// [`StorageError::NeedsWriter`] when a writer must open it first: its
    /// format must be upgraded, or its last writer did not close it (redb
    /// repairs the file, and the log may hold records to replay), which a
    /// writable open does; likewise when the log and the redb file do not
    /// end at the same record.
    pub fn open_read_only(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        guarded(|| {
            let dir = dir.as_ref().to_path_buf();
            let engine = Arc::new(
                Engine::open_read_only(&dir, options.cache_bytes)?
                    .with_latest_cache(options.latest_cache_bytes)
                    .with_history_cache(options.history_cache_bytes)
                    .with_parallel_scans(options.parallel_scans),
            );
            let registry = KindRegistry::from_specs(engine.load_kinds()?)?;
            let next_id = engine.next_id()?;
            let logged = crate::storage::log::last_logged_id(&dir.join(LOG_DIR))?;
            // A writable open brings the two together: it replays what only the
            // log holds and appends to the log what only the redb file holds.
            if logged + 1 != next_id {
                let reason = if logged >= next_id {
                    format!("its log holds records {next_id}..={logged}, which the redb file lacks")
                } else {
                    format!(
                        "the redb file holds records {}..{next_id} its log lacks",
                        logged + 1
                    )
                };
                return Err(StorageError::NeedsWriter { path: dir, reason }.into());
            }
            Ok(Store {
                inner: Arc::new(Inner {
                    engine,
                    counters: Arc::default(),
                    registry: RwLock::new(registry),
                    options,
                    jobs: None,
                    writer: None,
                    subscribers: Arc::default(),
                    log_progress: Arc::default(),
                    dir,
                    spent: Mutex::default(),
                    in_flight: InFlight::default(),
                }),
            })
        })
    }

    /// Whether this handle was opened read-only ([`Store::open_read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.inner.engine.is_read_only()
    }

    /// The writer's queue; a read-only handle has none.
    fn jobs(&self) -> Result<&Sender<Msg>> {
        match &self.inner.jobs {
            Some(jobs) => Ok(jobs),
            None if self.is_read_only() => Err(StorageError::ReadOnly.into()),
            None => Err(StorageError::WriterGone("the store is closing".into()).into()),
        }
    }

    /// Compacts the closed store in `dir`: deletes the tables of expired
    /// partitions still waiting for the writer, then rewrites `almanac.redb`
    /// without its free space (see [`storage::compact`](crate::storage::compact)).
    ///
    /// Fails with [`StorageError::NoStore`] when `dir` holds no store (none
    /// is created) and with [`StorageError::Locked`] while any handle,
    /// in this process or another, has it open. The log is not touched.
    pub fn compact(dir: impl AsRef<Path>) -> Result<CompactReport> {
        guarded(|| {
            let dir = dir.as_ref();
            if !dir.join(crate::storage::DB_FILE).is_file() {
                return Err(StorageError::NoStore(dir.to_path_buf()).into());
            }
            {
                let store = Store::open(dir)?;
                store.purge_expired()?;
            }
            Ok(crate::storage::compact(dir)?)
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The current instant by the store's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.options.clock.now()
    }

    /// Validates, checks governance and encodes records on the caller's thread.
    fn prepare(&self, records: &[MetadataRecord]) -> Result<Vec<PreparedRecord>> {
        let registry = self.registry()?;
        prepare_with(&registry, self.strict(), 0, records)
    }

    /// Prepares records and has the writer write them: the registry they
    /// were prepared against is held until the job is queued (see
    /// [`InFlight`]).
    fn prepare_and_submit(
        &self,
        records: &[MetadataRecord],
        single: bool,
    ) -> Result<Vec<WriteOutcome>> {
        let registry = self.registry()?;
        let prepared = prepare_with(&registry, self.strict(), 0, records);
        let prepared = if single {
            prepared.map_err(without_index)
        } else {
            prepared
        }?;
        self.submit(prepared, registry)
    }

    fn registry(&self) -> Result<std::sync::RwLockReadGuard<'_, KindRegistry>> {
        Ok(self
            .inner
            .registry
            .read()
            .map_err(|_| StorageError::WriterGone("kind registry lock poisoned".into()))?)
    }

    fn strict(&self) -> bool {
        self.inner.options.governance == Governance::Strict
    }

    /// Writes a large batch while preparing it: the job goes to the writer
    /// first, then this thread (and, with more than two cores, helpers)
    /// prepares it in chunks of [`STREAM_CHUNK`] records, and the writer
    /// writes each chunk as soon as it is ready, in order, in one
    /// transaction. A record that fails its checks abandons the
    /// transaction (nothing is written) and its error is returned: the one
    /// of the lowest index, as [`Store::prepare`] would report.
    fn write_streamed(&self, records: &[MetadataRecord]) -> Result<Vec<WriteOutcome>> {
        let jobs = self.jobs()?;
        // Held until every chunk is prepared: the whole batch is checked
        // against one registry, as a batch prepared at once is.
        let registry = self.registry()?;
        let strict = self.strict();
        let streamed = Arc::new(Streamed {
            n_records: records.len(),
            chunks: (0..records.len().div_ceil(STREAM_CHUNK))
                .map(|_| OnceLock::new())
                .collect(),
        });
        let (reply, answer) = mpsc::sync_channel(1);
        let _in_flight = self.inner.in_flight.start();
        jobs.send(Msg::Write(Job {
            records: Records::Streamed(Arc::clone(&streamed)),
            reply,
        }))
        .map_err(|_| StorageError::WriterGone("the writer thread stopped".into()))?;
        // Whatever happens from here on (a panic included), every chunk ends
        // up set, so the writer never waits for one forever.
        let abandon_rest = StreamGuard(&streamed);
        let next = AtomicUsize::new(0);
        // The lowest chunk that failed its checks (`usize::MAX`: none).
        let failed_at = AtomicUsize::new(usize::MAX);
        // Each thread's first failure: (chunk, error). Only chunks above a
        // failed one are skipped, so the lowest failing chunk is always
        // prepared, and its error is the batch's lowest-index one.
        let work = || -> Option<(usize, Error)> {
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(slot) = streamed.chunks.get(i) else {
                    return first_error;
                };
                if i > failed_at.load(Ordering::Relaxed) {
                    let _ = slot.set(None); // the batch is abandoned
                    continue;
                }
                let start = i * STREAM_CHUNK;
                let part = &records[start..records.len().min(start + STREAM_CHUNK)];
                match prepare_with(&registry, strict, start, part) {
                    Ok(prepared) => {
                        let _ = slot.set(Some(prepared));
                    }
                    Err(error) => {
                        failed_at.fetch_min(i, Ordering::Relaxed);
                        let _ = slot.set(None);
                        first_error.get_or_insert((i, error));
                    }
                }
            }
        };
        let helpers = stream_helpers();
        let errors: Vec<Option<(usize, Error)>> = std::thread::scope(|scope| {
            // A helper that cannot be started leaves its share to the others.
            let handles: Vec<_> = (0..helpers)
                .filter_map(|_| {
                    std::thread::Builder::new()
                        .name("almanac-prepare".into())
                        .spawn_scoped(scope, work)
                        .ok()
                })
                .collect();
            let mut errors = vec![work()];
            for handle in handles {
                errors.push(handle.join().unwrap_or_else(|_| {
                    Some((
                        usize::MAX,
                        StorageError::WriterGone("a preparing thread panicked".into()).into(),
                    ))
                }));
            }
            errors
        });
        // A chunk a panicked helper claimed is still unset: `None` now.
        drop(abandon_rest);
        drop(registry);
        // Freeing a batch's prepared records (~100,000 allocations for
        // 10,000 records) takes milliseconds; this thread would otherwise
        // only wait for the writer now, so it frees the last batch's here
        // rather than delaying its own return.
        drop(self.take_spent());
        // The writer's answer comes once the transaction is over (abandoned
        // if a chunk failed), so nothing of a failed batch is left behind.
        let answered = answer.recv();
        if let Some((_, error)) = errors.into_iter().flatten().min_by_key(|(i, _)| *i) {
            return Err(error);
        }
        let (outcome, records) =
            answered.map_err(|_| StorageError::WriterGone("the writer thread stopped".into()))?;
        drop(records);
        let outcome = outcome?;
        if streamed.n_records <= SPENT_MAX {
            // Whatever another caller left there is freed after the lock.
            let _earlier = self
                .inner
                .spent
                .lock()
                .map_or(None, |mut spent| spent.replace(streamed));
        }
        Ok(outcome)
    }

    /// The last streamed batch's prepared records, if not freed yet.
    fn take_spent(&self) -> Option<Arc<Streamed>> {
        self.inner
            .spent
            .lock()
            .map_or(None, |mut spent| spent.take())
    }

    /// Runs every check `store` would run (record format, kind registry,
    /// retention) without writing: for two-pass imports and dry runs.
    pub fn check_record(&self, record: &MetadataRecord) -> Result<()> {
        self.prepare_one(record).map(|_| ())
    }

    /// [`Store::prepare`] for a single record: errors carry no batch index.
    fn prepare_one(&self, record: &MetadataRecord) -> Result<Vec<PreparedRecord>> {
        self.prepare(std::slice::from_ref(record))
            .map_err(without_index)
    }

    /// Queues prepared records for the writer, then lets go of `registry`
    /// (what they were prepared against), and waits for the answer.
    fn submit(
        &self,
        records: Vec<PreparedRecord>,
        registry: std::sync::RwLockReadGuard<'_, KindRegistry>,
    ) -> Result<Vec<WriteOutcome>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = mpsc::sync_channel(1);
        let jobs = self.jobs()?;
        let _in_flight = self.inner.in_flight.start();
        jobs.send(Msg::Write(Job {
            records: Records::Ready(records),
            reply,
        }))
        .map_err(|_| StorageError::WriterGone("the writer thread stopped".into()))?;
        drop(registry);
        // As in `write_streamed`: this thread only waits from here on.
        drop(self.take_spent());
        let (outcome, records) = answer
            .recv()
            .map_err(|_| StorageError::WriterGone("the writer thread stopped".into()))?;
        drop(records);
        Ok(outcome?)
    }

    /// Follows new commits in this process: every record committed after this
    /// call is sent to the returned receiver, in id order.
    ///
    /// A read-only handle commits nothing: its receiver is closed at once
    /// (`recv` fails rather than waits forever).
    pub fn subscribe(&self) -> Receiver<StoredRecord> {
        let (tx, rx) = mpsc::channel();
        if self.is_read_only() {
            return rx;
        }
        if let Ok(mut subs) = self.inner.subscribers.lock() {
            subs.push(tx);
        }
        rx
    }

    /// A reader of this store's log (also usable without opening the store:
    /// see [`LogReader::new`]).
    pub fn log(&self) -> LogReader {
        self.inner.log_progress.wait();
        LogReader::new(&self.inner.dir)
    }

    /// Records with `id >= since_id` from the log, in id order.
    pub fn tail(&self, since_id: u64) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        for line in self.log().lines_since(since_id)? {
            let (_, line) = line?;
            let record = StoredRecord::from_log_line(&line).map_err(|e| {
                StorageError::Corrupt(format!("log line does not parse as a record: {e}"))
            })?;
            out.push(record);
        }
        Ok(out)
    }

    /// What the writer has done since the store was opened.
    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            n_commits: self.inner.counters.n_commits.load(Ordering::Relaxed),
            n_records: self.inner.counters.n_records.load(Ordering::Relaxed),
            n_replayed: self.inner.counters.n_replayed.load(Ordering::Relaxed),
        }
    }

    /// What the latest cache holds now, and the lookups it has answered
    /// and not since the store was opened
    /// ([`StoreOptions::latest_cache_bytes`]).
    pub fn latest_cache_stats(&self) -> LatestCacheStats {
        self.inner.engine.latest_cache_stats()
    }

    /// What the history cache holds now: the partitions `history` has
    /// copied and the bytes they take ([`StoreOptions::history_cache_bytes`]).
    pub fn history_cache_stats(&self) -> HistoryCacheStats {
        self.inner.engine.history_cache_stats()
    }

    /// Every registered kind.
    pub fn kinds(&self) -> Vec<KindSpec> {
        self.inner
            .registry
            .read()
            .map(|r| r.specs().cloned().collect())
            .unwrap_or_default()
    }

    /// One registered kind.
    pub fn kind(&self, name: &str) -> Option<KindSpec> {
        self.inner
            .registry
            .read()
            .ok()
            .and_then(|r| r.get(name).cloned())
    }

    /// The kind registry, locked for a change, once every write prepared
    /// against it as it was has committed (so the change's checks and
    /// index work see those writes). Not also waited for before taking the
    /// lock: under steady writes the count need never reach zero while new
    /// jobs may still be queued.
    fn registry_for_change(&self) -> Result<RwLockWriteGuard<'_, KindRegistry>> {
        let registry = self
            .inner
            .registry
            .write()
            .map_err(|_| StorageError::WriterGone("kind registry lock poisoned".into()))?;
        self.inner.in_flight.wait_idle();
        Ok(registry)
    }

    /// Registers a new kind (its schemas must compile). A kind given no
    /// schema gets `{"type": "object"}` as version 1 (any payload).
    pub fn register_kind(&self, mut spec: KindSpec) -> Result<()> {
        guarded(|| {
            dedup_paths(&mut spec);
            if spec.schemas.is_empty() {
                // Spec §1a: every kind has a payload schema, and a record's
                // `version` names one. A kind given none gets version 1,
                // which takes any payload object.
                spec.schemas.push(serde_json::json!({"type": "object"}));
            }
            let mut registry = self.registry_for_change()?;
            if registry.get(&spec.name).is_some() {
                return Err(KindError::AlreadyRegistered(spec.name).into());
            }
            if self
                .inner
                .engine
                .catalog()?
                .iter()
                .any(|p| p.key.kind == spec.name && p.info.bucket != spec.bucket)
            {
                return Err(KindError::InvalidSchema {
                    kind: spec.name.clone(),
                    reason: "records of this kind already exist with another partition bucket"
                        .into(),
                }
                .into());
            }
            for path in spec.indexed_paths.iter().chain(&spec.summarized_paths) {
                check_index_path(path).map_err(KindError::InvalidPath)?;
            }
            // Compile first, persist second, publish last: a bad schema changes nothing.
            KindRegistry::from_specs(vec![spec.clone()])?;
            // Records of the kind may exist (stored while it was not
            // registered): its indexes are built over them.
            self.inner
                .engine
                .put_kind_and_index(&spec, &spec.indexed_paths, &[])?;
            registry.insert(spec)?;
            Ok(())
        })
    }

    /// Changes a kind with `change` (retention, description, a new schema
    /// version, indexed paths); the bucket cannot change once records exist.
    pub fn update_kind(&self, name: &str, change: impl FnOnce(&mut KindSpec)) -> Result<KindSpec> {
        guarded(|| {
            let mut registry = self.registry_for_change()?;
            let mut spec = registry
                .get(name)
                .cloned()
                .ok_or_else(|| KindError::Unknown(name.to_owned()))?;
            let old_bucket = spec.bucket;
            let old_versions = spec.schemas.len();
            let mut old_paths = spec.indexed_paths.clone();
            dedup(&mut old_paths);
            change(&mut spec);
            dedup_paths(&mut spec);
            if spec.name != name {
                return Err(KindError::InvalidName("a kind cannot be renamed".into()).into());
            }
            if spec.schemas.len() < old_versions {
                return Err(KindError::InvalidSchema {
                    kind: name.to_owned(),
                    reason: "schema versions cannot be removed".into(),
                }
                .into());
            }
            if spec.bucket != old_bucket
                && self
                    .inner
                    .engine
                    .catalog()?
                    .iter()
                    .any(|p| p.key.kind == name)
            {
                return Err(KindError::InvalidSchema {
                    kind: name.to_owned(),
                    reason: "the partition bucket cannot change once records exist".into(),
                }
                .into());
            }
            for path in spec.indexed_paths.iter().chain(&spec.summarized_paths) {
                check_index_path(path).map_err(KindError::InvalidPath)?;
            }
            KindRegistry::from_specs(vec![spec.clone()])?;
            let new_paths: Vec<String> = spec
                .indexed_paths
                .iter()
                .filter(|p| !old_paths.contains(p))
                .cloned()
                .collect();
            let removed_paths: Vec<String> = old_paths
                .iter()
                .filter(|p| !spec.indexed_paths.contains(p))
                .cloned()
                .collect();
            let (_, n_moved) =
                self.inner
                    .engine
                    .put_kind_and_index(&spec, &new_paths, &removed_paths)?;
            if n_moved > 0 {
                // The tables of the paths taken off wait under `purge/`.
                if let Some(jobs) = &self.inner.jobs {
                    let _ = jobs.send(Msg::Purge);
                }
            }
            registry.insert(spec.clone())?;
            Ok(spec)
        })
    }

    /// Declares an indexed payload or extras path on a kind (e.g.
    /// `payload.outcome`) and builds it for the partitions that exist.
    pub fn add_indexed_path(&self, kind: &str, path: &str) -> Result<KindSpec> {
        self.update_kind(kind, |spec| {
            if !spec.indexed_paths.iter().any(|p| p == path) {
                spec.indexed_paths.push(path.to_owned());
            }
        })
    }

    /// Sets a kind's retention.
    pub fn set_retention(&self, kind: &str, retention: Retention) -> Result<KindSpec> {
        self.update_kind(kind, |spec| spec.retention = retention)
    }

    /// Applies every kind's retention at the store clock's now.
    pub fn apply_retention(&self) -> Result<RetentionReport> {
        self.apply_retention_at(self.now(), false)
    }

    /// Reports what [`Store::apply_retention`] would drop, changing nothing.
    pub fn retention_dry_run(&self) -> Result<RetentionReport> {
        self.apply_retention_at(self.now(), true)
    }

    /// Applies (or, with `dry_run`, reports) retention as of `now`.
    pub fn apply_retention_at(&self, now: Timestamp, dry_run: bool) -> Result<RetentionReport> {
        guarded(|| {
            let kinds = self.kinds();
            let report = self.inner.engine.apply_retention(&kinds, now, dry_run)?;
            if !report.dry_run && !report.dropped.is_empty() {
                // The expired partitions are gone from every read; their tables
                // are deleted by the writer thread between writes.
                if let Some(jobs) = &self.inner.jobs {
                    let _ = jobs.send(Msg::Purge);
                }
            }
            Ok(report)
        })
    }

    /// Deletes, now and on this thread, every table of expired partitions
    /// still waiting to be deleted, and returns how many it deleted.
    ///
    /// [`Store::apply_retention`] commits the expiry at once (the dropped
    /// partitions' tables are renamed, which costs the same however many
    /// rows they hold) and leaves the deletion, which visits every page,
    /// to the writer thread between writes. Call this to reclaim the space
    /// before going on, e.g. at the end of a command-line run.
    pub fn purge_expired(&self) -> Result<usize> {
        guarded(|| {
            let mut n = 0;
            loop {
                let step = self.inner.engine.purge_step()?;
                if step == 0 {
                    return Ok(n);
                }
                n += step;
            }
        })
    }

    /// The number of tables of expired partitions not yet deleted.
    pub fn purge_pending(&self) -> Result<usize> {
        guarded(|| Ok(self.inner.engine.purge_pending()?))
    }

    /// Every partition, by kind then bucket.
    pub fn partitions(&self) -> Result<Vec<PartitionSummary>> {
        guarded(|| {
            Ok(self
                .inner
                .engine
                .catalog()?
                .into_iter()
                .map(|e| PartitionSummary {
                    name: e.name(),
                    kind: e.key.kind.clone(),
                    info: e.info,
                })
                .collect())
        })
    }

    /// Size of the redb file in bytes.
    pub fn file_size(&self) -> Result<u64> {
        Ok(self.inner.engine.file_size()?)
    }

    /// Sizes on disk and, per kind, records, partitions and the span of
    /// `produced_at`, from the partition catalog (no record is read).
    pub fn stats(&self) -> Result<StoreStats> {
        guarded(|| {
            let mut kinds: Vec<KindStats> = Vec::new();
            for p in self.partitions()? {
                let info = p.info;
                if kinds.last().map(|k| k.kind != p.kind).unwrap_or(true) {
                    kinds.push(KindStats {
                        kind: p.kind.clone(),
                        n_records: 0,
                        n_partitions: 0,
                        oldest: None,
                        newest: None,
                    });
                }
                let Some(k) = kinds.last_mut() else { continue };
                k.n_partitions += 1;
                k.n_records += info.n_records;
                if info.n_records > 0 {
                    let (min, max) = (
                        Timestamp::from_micros(info.min_ts),
                        Timestamp::from_micros(info.max_ts),
                    );
                    k.oldest = Some(k.oldest.map_or(min, |o| o.min(min)));
                    k.newest = Some(k.newest.map_or(max, |n| n.max(max)));
                }
            }
            let (db_bytes, db_allocated_bytes) = self.inner.engine.file_sizes()?;
            Ok(StoreStats {
                db_bytes,
                db_allocated_bytes,
                log_bytes: self.log().size_bytes()?,
                kinds,
            })
        })
    }

    /// Records matching a scan request, streamed in (`produced_at`, `id`) order.
    pub fn scan(&self, request: &ScanRequest) -> Result<RecordIter<'static>> {
        let iter = guarded(|| Ok(self.inner.engine.scan(request)?))?;
        Ok(Box::new(Guarded {
            inner: Some(iter.map(|r| r.map_err(Error::from))),
        }))
    }
}

/// Runs a call into the storage engine, turning a panic into
/// [`StorageError::Internal`]. The engine's own code returns errors, but
/// redb `unwrap`s what it reads in places (a name that is not UTF-8 on a
/// damaged page, some damaged pages): a damaged store file must give an
/// embedding program an error, not unwind through it. The panic hook still
/// runs (the default one prints the panic); caches behind the engine's
/// locks recover from poisoning, and a write transaction dropped while
/// unwinding is aborted.
fn guarded<T>(call: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call))
        .unwrap_or_else(|panic| Err(StorageError::Internal(panic_message(&*panic)).into()))
}

/// The message a panic carried.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// A scan's records, each read under [`guarded`]: after a panic, one
/// [`StorageError::Internal`], then the end.
struct Guarded<I> {
    inner: Option<I>,
}

impl<I: Iterator<Item = Result<StoredRecord>>> Iterator for Guarded<I> {
    type Item = Result<StoredRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        let inner = self.inner.as_mut()?;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.next())) {
            Ok(item) => item,
            Err(panic) => {
                // Dropping what panicked may panic again: caught too.
                let spent = self.inner.take();
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(spent)));
                Some(Err(StorageError::Internal(panic_message(&*panic)).into()))
            }
        }
    }
}

/// The writer thread's state.
struct Writer<'a> {
    engine: &'a Engine,
    subscribers: &'a Mutex<Vec<Sender<StoredRecord>>>,
    counters: &'a WriteCounters,
    log_progress: &'a LogProgress,
    max_group: usize,
}

impl Writer<'_> {
    /// Takes every job waiting, commits them together, logs, notifies, answers.
    ///
    /// A group of fewer than [`LOGGED_GROUP_MAX`] records, all from
    /// single-record calls, is made durable by the log: its lines are
    /// appended and synced, then redb commits without syncing its file
    /// (`Commit::Logged`), which saves most of a small commit's cost (redb
    /// writes and syncs every page a commit touched). Other groups (larger,
    /// holding a multi-record `bulk_store`, or after a failed log write),
    /// every [`CHECKPOINT_COMMITS`]th commit, the first after
    /// [`CHECKPOINT_AGE`], and an idle writer ([`CHECKPOINT_IDLE`]) commit
    /// redb durably, so the log's part that redb's file lacks (replayed
    /// after a crash) stays small.
    fn run(&self, mut log: LogWriter, jobs: &Receiver<Msg>) {
        let (engine, subscribers, max_group) = (self.engine, self.subscribers, self.max_group);
        // Callers answered by the last commit come back together a few
        // microseconds after it: `last_jobs` and `last_commit` let the next
        // group wait briefly for them (see `GROUP_WAIT_MAX`).
        let mut last_jobs = 1usize;
        let mut last_commit = Duration::ZERO;
        let mut purging = false;
        // Commits since the last durable one, and when the first of them was.
        let mut n_logged = 0usize;
        let mut logged_since: Option<Instant> = None;
        // Set when redb failed to commit records the log already holds:
        // they are applied when the store is reopened, and until then no
        // write may commit after them.
        let mut broken: Option<String> = None;
        // A streamed job taken while gathering a group, for the next round.
        let mut carried: Option<Job> = None;
        // Set when the log lines of a large batch are staged but not yet
        // written: they are written while the next large batch commits,
        // before any other write, or once no job came for `LOG_BEHIND_WAIT`.
        let mut log_behind = false;
        // However the loop ends (a panic included), readers waiting in
        // `Store::log` for lines left behind stop waiting; the next open
        // writes those lines from the store.
        let _release = ReleaseReaders(self.log_progress);
        let write_behind = |log: &mut LogWriter, behind: &mut bool| {
            if std::mem::take(behind) {
                // A failed write poisons the log; the next open repairs it
                // from the store.
                let _ = log.write_staged();
                self.log_progress.written();
            }
        };
        // When a partition was last deleted, or purging began.
        let mut last_purge = Instant::now();
        let begin_purge = |purging: &mut bool, last_purge: &mut Instant| {
            if !*purging {
                *last_purge = Instant::now();
            }
            *purging = true;
        };
        // Deletes one expired partition; false when none is left to delete.
        let purge_step = |n_logged: &mut usize, since: &mut Option<Instant>| -> bool {
            // An error leaves the tables for the next attempt.
            match engine.purge_step() {
                Ok(0) | Err(_) => false,
                Ok(_) => {
                    // A durable commit: everything before it is too.
                    *n_logged = 0;
                    *since = None;
                    true
                }
            }
        };
        loop {
            if purging && broken.is_none() && last_purge.elapsed() >= PURGE_STARVE_MAX {
                // Writes have not paused for a second: one partition now,
                // after the lines left behind, which precede any other write.
                write_behind(&mut log, &mut log_behind);
                purging = purge_step(&mut n_logged, &mut logged_since);
                last_purge = Instant::now();
            }
            let msg = if let Some(job) = carried.take() {
                Msg::Write(job)
            } else if log_behind {
                match jobs.recv_timeout(LOG_BEHIND_WAIT) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => {
                        write_behind(&mut log, &mut log_behind);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else if purging {
                // Writes first; one partition's deletion whenever none waits.
                match jobs.try_recv() {
                    Ok(msg) => msg,
                    Err(TryRecvError::Empty) => {
                        purging = purge_step(&mut n_logged, &mut logged_since);
                        last_purge = Instant::now();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            } else if n_logged > 0 && broken.is_none() {
                match jobs.recv_timeout(CHECKPOINT_IDLE) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => {
                        if engine.checkpoint().is_ok() {
                            n_logged = 0;
                            logged_since = None;
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match jobs.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                }
            };
            let first = match msg {
                Msg::Write(job) => job,
                Msg::Purge => {
                    begin_purge(&mut purging, &mut last_purge);
                    continue;
                }
            };
            // Only a large streamed batch (written alone, durably, with its
            // lines staged beside its commit) writes the lines left behind
            // from within its commit; anything else writes them first, and
            // so does a batch so large that preparing it would keep them
            // from `Store::log` for long (see `BEHIND_MAX`).
            let len = first.records.len();
            if !(first.records.is_streamed() && (STAGE_BESIDE_MIN..=BEHIND_MAX).contains(&len)) {
                write_behind(&mut log, &mut log_behind);
            }
            // A streamed batch is written alone: if preparing it fails, its
            // transaction is abandoned, which must not take other callers'
            // records with it. A streamed job met while gathering waits for
            // the next round (`carried`).
            let alone = first.records.is_streamed();
            let mut group = vec![first];
            let mut n_records = group[0].records.len();
            while !alone && carried.is_none() && n_records < max_group {
                match jobs.try_recv() {
                    Ok(Msg::Write(job)) if job.records.is_streamed() => carried = Some(job),
                    Ok(Msg::Write(job)) => {
                        n_records += job.records.len();
                        group.push(job);
                    }
                    Ok(Msg::Purge) => begin_purge(&mut purging, &mut last_purge),
                    Err(_) => break,
                }
            }
            if !alone && carried.is_none() && group.len() < last_jobs && n_records < max_group {
                // Fewer callers than last time: wait for the rest, at most a
                // quarter of the last commit's time (a commit is an fsync, so
                // this adds little latency and saves whole commits).
                let deadline = Instant::now() + (last_commit / 4).min(GROUP_WAIT_MAX);
                while carried.is_none() && group.len() < last_jobs && n_records < max_group {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match jobs.recv_timeout(left) {
                        Ok(Msg::Write(job)) if job.records.is_streamed() => carried = Some(job),
                        Ok(Msg::Write(job)) => {
                            n_records += job.records.len();
                            group.push(job);
                        }
                        Ok(Msg::Purge) => begin_purge(&mut purging, &mut last_purge),
                        Err(_) => break,
                    }
                }
            }
            last_jobs = group.len();
            if let Some(message) = &broken {
                for job in group {
                    let error = StorageError::WriterGone(message.clone());
                    let _ = job.reply.send((Err(error), job.records));
                }
                continue;
            }
            let mut groups = group.iter().flat_map(|j| j.records.groups());
            // Only single-record jobs go through the log first: replay
            // after a torn append stores the complete lines, which must not
            // be part of one `bulk_store` (all or nothing). And a log that
            // failed (repaired from redb at the next open) is no
            // write-ahead log.
            let durable = n_records >= LOGGED_GROUP_MAX
                || group.iter().any(|job| job.records.len() > 1)
                || log.is_poisoned()
                || n_logged + 1 >= CHECKPOINT_COMMITS
                || logged_since.is_some_and(|t| t.elapsed() >= CHECKPOINT_AGE);
            let started = Instant::now();
            // Whether the log may hold lines of this group's records.
            let mut in_log = false;
            // The stored records, once the log has them (logged commits).
            let mut logged: Option<Vec<(u64, &PreparedRecord)>> = None;
            // Whether this group's log lines were staged while redb committed.
            let mut staged_beside = false;
            let written = if durable && n_records >= STAGE_BESIDE_MIN {
                // Writing the last batch's lines and rendering this one's
                // (~5 MB each for 10,000 records) take milliseconds; the
                // durable commit is mostly a wait for the disk, so they are
                // done meanwhile (and this batch's taken back if the commit
                // fails).
                let mut mark = None;
                let log = &mut log;
                let staged = &mut staged_beside;
                let behind = &mut log_behind;
                let group = &group;
                let mut beside = |outcomes: &[Vec<WriteOutcome>]| {
                    write_behind(log, behind);
                    mark = Some(log.mark());
                    let stored = committed(group, outcomes);
                    *staged = log.stage_held(log_tails(&stored)).unwrap_or(false);
                };
                let written = engine.write_groups(&mut groups, Commit::DurableBeside(&mut beside));
                if let (Err(_), Some(mark), true) = (&written, mark, staged_beside) {
                    log.rollback(mark);
                    staged_beside = false;
                }
                written
            } else if durable {
                engine.write_groups(&mut groups, Commit::Durable)
            } else {
                let mut ahead = LogAhead {
                    log: &mut log,
                    group: &group,
                    in_log: &mut in_log,
                    logged: &mut logged,
                };
                engine.write_groups(&mut groups, Commit::Logged(&mut ahead))
            };
            last_commit = started.elapsed();
            drop(groups);
            match written {
                Ok(outcomes) => {
                    let committed = match logged {
                        Some(stored) => stored,
                        None => committed(&group, &outcomes),
                    };
                    if durable {
                        n_logged = 0;
                        logged_since = None;
                        // The commit is durable; the lines are rendered now
                        // (the records go back to their callers) and written
                        // once the callers are answered. A failed log append
                        // is repaired from the store on the next open, so
                        // callers still get success.
                        if staged_beside || stage_log(&mut log, &committed).is_ok() {
                            self.log_progress.answered();
                        }
                    } else {
                        n_logged += 1;
                        logged_since.get_or_insert(started);
                    }
                    self.counters.n_commits.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .n_records
                        .fetch_add(committed.len() as u64, Ordering::Relaxed);
                    if let Ok(mut subs) = subscribers.lock() {
                        if !subs.is_empty() {
                            subs.retain(|s| {
                                committed.iter().all(|(id, p)| {
                                    // Rebuilt from its bytes: the writer holds no record.
                                    match decode_record(p.encoded()) {
                                        Ok(record) => {
                                            s.send(StoredRecord { id: *id, record }).is_ok()
                                        }
                                        Err(_) => true,
                                    }
                                })
                            });
                        }
                    }
                    // One outcome per record, in order: each job takes its own.
                    let mut outcomes = outcomes.into_iter().flatten();
                    for job in group {
                        let job_outcomes = outcomes.by_ref().take(job.records.len()).collect();
                        let _ = job.reply.send((Ok(job_outcomes), job.records));
                    }
                    if durable {
                        if staged_beside {
                            // Written while the next batch commits (or
                            // when the writer is idle).
                            log_behind = true;
                        } else {
                            let _ = log.write_staged();
                            self.log_progress.written();
                        }
                    }
                }
                Err(e) => {
                    let message = if in_log {
                        // Some of the records' lines may be in the log: they
                        // are committed by the replay at the next open, and
                        // no other write may take their ids before that.
                        let message = format!(
                            "commit failed after the records were written to the log \
                             ({e}); what the log holds is applied when the store is \
                             reopened, and no write succeeds until then"
                        );
                        broken = Some(message.clone());
                        message
                    } else {
                        format!("commit failed: {e}")
                    };
                    for job in group {
                        let error = StorageError::Redb(message.clone());
                        let _ = job.reply.send((Err(error), job.records));
                    }
                }
            }
        }
        write_behind(&mut log, &mut log_behind);
        if n_logged > 0 {
            // Closing: redb's file catches up with the log (if this fails,
            // the next open replays the log instead).
            let _ = engine.checkpoint();
        }
    }
}

/// Stores the log's records `first..=last` again, under their own ids, in
/// durable commits: the redb file lost them in a crash (see `Commit::Logged`).
fn replay_log(
    engine: &Engine,
    registry: &KindRegistry,
    dir: &Path,
    first: u64,
    last: u64,
) -> Result<()> {
    let corrupt = |what: String| StorageError::Corrupt(format!("replaying the log: {what}"));
    // The log's records up to `next_id` (exclusive), consecutive (checked as read).
    let mut batch: Vec<PreparedRecord> = Vec::new();
    let flush = |batch: &mut Vec<PreparedRecord>, next_id: u64| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let first_id = next_id - batch.len() as u64;
        let outcomes = engine.write(&[batch.as_slice()], Commit::Durable)?;
        for (outcome, id) in outcomes.iter().flatten().zip(first_id..) {
            if *outcome != WriteOutcome::Stored(id) {
                return Err(corrupt(format!("record {id} came back as {outcome:?}")).into());
            }
        }
        batch.clear();
        Ok(())
    };
    let mut expected = first;
    for line in LogReader::new(dir).lines_since(first)? {
        let (id, text) = line?;
        if id > last {
            break;
        }
        if id != expected {
            return Err(corrupt(format!(
                "record {expected} is missing (the next line is record {id})"
            ))
            .into());
        }
        expected += 1;
        let stored = StoredRecord::from_log_line(&text)
            .map_err(|e| corrupt(format!("the line of record {id}: {e}")))?;
        let kind = &stored.record.kind;
        batch.push(PreparedRecord::new(
            &stored.record,
            registry.bucket_of(kind),
            registry.indexed_paths_of(kind),
            registry.summarized_paths_of(kind),
        ));
        if batch.len() >= 10_000 {
            flush(&mut batch, expected)?;
        }
    }
    flush(&mut batch, expected)?;
    if expected != last + 1 {
        return Err(corrupt(format!("records {expected} to {last} are missing")).into());
    }
    Ok(())
}

/// The records a group stored (not the duplicates), with their ids, in id order.
fn committed<'g>(
    group: &'g [Job],
    outcomes: &[Vec<WriteOutcome>],
) -> Vec<(u64, &'g PreparedRecord)> {
    group
        .iter()
        .flat_map(|job| job.records.iter())
        .zip(outcomes.iter().flatten())
        .filter_map(|(prepared, outcome)| match outcome {
            WriteOutcome::Stored(id) => Some((*id, prepared)),
            WriteOutcome::Duplicate(_) => None,
        })
        .collect()
}

/// Appends stored records to the log (not synced).
fn append_to_log(log: &mut LogWriter, committed: &[(u64, &PreparedRecord)]) -> storage::Result<()> {
    stage_log(log, committed)?;
    log.write_staged()
}

/// The log as the write-ahead log of a small group (`Commit::Logged`).
struct LogAhead<'w, 'g> {
    log: &'w mut LogWriter,
    group: &'g [Job],
    /// Set before anything is written: the log may then hold the group's lines.
    in_log: &'w mut bool,
    /// The stored records, once their lines are written.
    logged: &'w mut Option<Vec<(u64, &'g PreparedRecord)>>,
}

impl storage::WriteAhead for LogAhead<'_, '_> {
    fn write(&mut self, outcomes: &[Vec<WriteOutcome>]) -> storage::Result<()> {
        *self.in_log = true;
        let stored = committed(self.group, outcomes);
        append_to_log(self.log, &stored)?;
        self.log.start_sync();
        *self.logged = Some(stored);
        Ok(())
    }

    fn sync(&mut self) -> storage::Result<()> {
        self.log.sync()
    }
}

/// Renders the log lines of stored records, to be written by `write_staged`.
fn stage_log(log: &mut LogWriter, committed: &[(u64, &PreparedRecord)]) -> storage::Result<()> {
    log.stage(log_tails(committed))
}

/// What the log takes of each stored record (see `LogWriter::stage`): its
/// id and its canonical JSON without the opening brace.
fn log_tails<'a>(
    committed: &'a [(u64, &'a PreparedRecord)],
) -> impl Iterator<Item = (u64, &'a str)> + Clone + 'a {
    committed
        .iter()
        .map(|(id, p)| (*id, p.json().get(1..).unwrap_or_default()))
}

impl MetadataRepository for Store {
    fn store(&self, record: &MetadataRecord) -> Result<StoreOutcome> {
        let outcome = self
            .prepare_and_submit(std::slice::from_ref(record), true)?
            .into_iter()
            .next()
            .ok_or_else(|| StorageError::WriterGone("no outcome for the record".into()))?;
        Ok(StoreOutcome::from(outcome))
    }

    fn bulk_store(&self, records: &[MetadataRecord]) -> Result<BulkOutcome> {
        let outcomes = if records.len() >= STREAM_MIN {
            self.write_streamed(records)?
        } else {
            self.prepare_and_submit(records, false)?
        };
        Ok(BulkOutcome::from_outcomes(&outcomes))
    }

    fn latest(&self, target: &MetadataTarget, kind: &str) -> Result<Option<StoredRecord>> {
        guarded(|| Ok(self.inner.engine.latest(kind, target)?))
    }

    fn history(
        &self,
        target: &MetadataTarget,
        kind: &str,
        range: TimeRange,
    ) -> Result<Vec<StoredRecord>> {
        // The same answer as a scan of this kind, target and range, by a
        // path of its own: no planning, one target id, cached tables.
        guarded(|| Ok(self.inner.engine.history(kind, target, range)?))
    }

    fn find(&self, request: &ScanRequest) -> Result<Vec<StoredRecord>> {
        self.scan(request)?.collect()
    }

    fn query(&self, query: &str, params: &Params) -> Result<QueryOutput> {
        guarded(|| {
            let options = ExecOptions {
                now: self.now(),
                ..ExecOptions::default()
            };
            crate::query::prepare(query)?.run(self, params, &options)
        })
    }
}

impl RecordSource for Store {
    fn scan(&self, request: &ScanRequest) -> Result<RecordIter<'_>> {
        Store::scan(self, request)
    }

    fn scan_each(&self, request: &ScanRequest, f: &mut dyn FnMut(&StoredRecord)) -> Result<()> {
        guarded(|| Ok(self.inner.engine.scan_each(request, f)?))
    }

    fn latest_records(
        &self,
        kinds: Option<&[String]>,
        targets: Option<&[String]>,
    ) -> Result<Vec<StoredRecord>> {
        guarded(|| Ok(self.inner.engine.latest_records(kinds, targets)?))
    }

    fn kind_names(&self) -> Result<Vec<String>> {
        guarded(|| {
            let mut names: Vec<String> = self.kinds().into_iter().map(|k| k.name).collect();
            for p in self.inner.engine.catalog()? {
                names.push(p.key.kind);
            }
            names.sort();
            names.dedup();
            Ok(names)
        })
    }

    fn targets(&self) -> Result<Vec<TargetInfo>> {
        guarded(|| Ok(self.inner.engine.targets()?))
    }

    fn producer_ids(&self) -> Result<Vec<String>> {
        guarded(|| Ok(self.inner.engine.producer_ids()?))
    }

    fn describe_scan(&self, request: &ScanRequest) -> Result<ScanDescription> {
        guarded(|| Ok(self.inner.engine.describe_scan(request)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scan whose reading panics yields one `Internal` error, then ends;
    /// a panic in a call is an `Internal` error with its message.
    #[test]
    fn panics_in_the_engine_become_internal_errors() {
        let mut n = 0;
        let records = std::iter::from_fn(|| {
            n += 1;
            if n > 1 {
                panic!("damaged page {n}");
            }
            Some(Ok(StoredRecord {
                id: 1,
                record: MetadataRecord::new(
                    "k",
                    MetadataTarget::new("s", "d", "t"),
                    crate::model::JsonObject::new(),
                    Timestamp::from_micros(0),
                    "p",
                ),
            }))
        });
        let mut guarded_records = Guarded {
            inner: Some(records),
        };
        assert!(matches!(guarded_records.next(), Some(Ok(_))));
        match guarded_records.next() {
            Some(Err(Error::Storage(StorageError::Internal(message)))) => {
                assert_eq!(message, "damaged page 2")
            }
            other => panic!("{other:?}"),
        }
        assert!(guarded_records.next().is_none());
        let failed: Result<()> = guarded(|| panic!("{}", "boom"));
        assert!(
            matches!(failed, Err(Error::Storage(StorageError::Internal(ref m))) if m == "boom"),
            "{failed:?}"
        );
    }
}
