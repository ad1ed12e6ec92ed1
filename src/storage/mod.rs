//! The storage engine: the only module that touches redb.
//!
//! One redb file holds small global tables (meta, kind registry, target and
//! producer dictionaries, the latest table, the partition catalog) and, per
//! partition (kind × time bucket of `produced_at`), a records table and its
//! secondary indexes. Expiring a partition deletes its tables. The on-disk
//! layout is described byte by byte in `docs/format.md`.

mod codec;
mod history_cache;
mod latest_cache;
pub mod log;
mod partition;
mod path_index;
mod read;
mod snapshot;
mod summary;
mod write;

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

pub use codec::{
    content_hash, decode_projected, decode_projected_into, decode_record, empty_record,
    encode_record, DecodeError, KeySet, Projection,
};
pub use latest_cache::LatestCacheStats;
pub use partition::{bucket_end, bucket_label, bucket_start, partition_name, PartitionKey};
pub use path_index::{check_index_path, keys_at, IndexValue, PathConstraint, PathMatch};
pub use read::PartitionInfo;
pub use write::{
    Commit, DroppedPartition, PreparedRecord, RetentionReport, WriteAhead, WriteOutcome,
};

use crate::kinds::KindSpec;
use latest_cache::LatestChange;

/// The version of the on-disk format this build reads and writes.
pub const FORMAT_VERSION: u64 = 5;

/// The latest cache's default capacity: 32 MiB, the entries of ~50,000
/// (kind, target) pairs of ~500-byte records.
pub const DEFAULT_LATEST_CACHE_BYTES: usize = 32 << 20;

pub use history_cache::{HistoryCacheStats, DEFAULT_HISTORY_CACHE_BYTES};

/// The redb file's name inside a store directory.
pub const DB_FILE: &str = "almanac.redb";

// Global tables. Per-partition tables are named at run time (see `part_table_name`).
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const KINDS: TableDefinition<&str, &str> = TableDefinition::new("kinds");
pub(crate) const TARGETS: TableDefinition<&str, (u64, &str, &str, &str)> =
    TableDefinition::new("targets");
pub(crate) const PRODUCERS: TableDefinition<&str, u64> = TableDefinition::new("producers");
/// `kind ‖ 0x00 ‖ target name -> produced_at ‖ id` (16 bytes, see
/// `write::latest_value`); see [`latest_key`].
pub(crate) const LATEST: TableDefinition<&str, &[u8]> = TableDefinition::new("latest");
pub(crate) const PARTITIONS: TableDefinition<(&str, i64), &[u8]> =
    TableDefinition::new("partitions");
/// `(kind, bucket_start) -> summary` of the partitions of kinds with
/// summarized paths (see `summary::PartSummary`; since format version 5).
pub(crate) const SUMMARIES: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("summaries");

/// The `latest` table's key for (`kind`, `target`): the kind, a NUL byte,
/// the canonical target name. A kind name (`[a-z][a-z0-9_]*`) holds no NUL,
/// so keys of one kind are contiguous and sort by target name, and the key
/// compares as one byte string (format version 1 used a `(kind, target)`
/// tuple, whose every comparison decoded both keys' element lengths).
pub(crate) fn latest_key(kind: &str, target_name: &str) -> String {
    let mut key = String::with_capacity(kind.len() + 1 + target_name.len());
    push_latest_key(&mut key, kind, target_name);
    key
}

/// Appends the `latest` key of (`kind`, `target_name`) to `out` (see [`latest_key`]).
pub(crate) fn push_latest_key(out: &mut String, kind: &str, target_name: &str) {
    out.push_str(kind);
    out.push('\0');
    out.push_str(target_name);
}

/// The (`kind`, `target name`) of a `latest` key.
pub(crate) fn split_latest_key(key: &str) -> Result<(&str, &str)> {
    key.split_once('\0')
        .ok_or_else(|| StorageError::Corrupt(format!("latest table key {key:?} has no kind")))
}

/// The range of the `latest` keys of `kind`: from `kind ‖ 0x00` to `kind ‖ 0x01`.
pub(crate) fn latest_kind_range(kind: &str) -> (String, String) {
    (format!("{kind}\0"), format!("{kind}\u{1}"))
}

const META_FORMAT_VERSION: &str = "format_version";
pub(crate) const META_NEXT_ID: &str = "next_id";
const META_NEXT_TARGET_ID: &str = "next_target_id";
const META_NEXT_PRODUCER_ID: &str = "next_producer_id";
/// The sequence number of the next retention run that moves tables to `purge/`.
pub(crate) const META_NEXT_PURGE: &str = "next_purge";
/// Tables of expired partitions, renamed `purge/{run}/{original name}`,
/// wait under this prefix until the writer deletes them.
pub(crate) const PURGE_PREFIX: &str = "purge/";

/// The tables of one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PartTable {
    /// `(produced_at, id) -> encoded record`.
    Records,
    /// `(target_id, produced_at, id) -> ()`.
    ByTarget,
    /// `(producer_id, produced_at, id) -> ()`.
    ByProducer,
    /// `(run_id, produced_at, id) -> ()`.
    ByRun,
}

impl PartTable {
    fn suffix(self) -> &'static str {
        match self {
            PartTable::Records => "rec",
            PartTable::ByTarget => "tgt",
            PartTable::ByProducer => "prd",
            PartTable::ByRun => "run",
        }
    }
}

/// The prefix of every table name of a partition: `part/{kind}/{bucket_start}/`.
pub(crate) fn part_prefix(key: &PartitionKey) -> String {
    format!("part/{}/{}/", key.kind, key.bucket_start)
}

/// The redb table name of one table of a partition: `part/{kind}/{bucket_start}/{suffix}`.
pub(crate) fn part_table_name(key: &PartitionKey, table: PartTable) -> String {
    format!("{}{}", part_prefix(key), table.suffix())
}

/// The redb table name of a path index of a partition: `part/{kind}/{bucket_start}/ix:{path}`.
pub(crate) fn path_table_name(key: &PartitionKey, path: &str) -> String {
    format!("{}ix:{path}", part_prefix(key))
}

pub(crate) fn path_index_def(name: &str) -> TableDefinition<'_, (&'static [u8], i64, u64), ()> {
    TableDefinition::new(name)
}

pub(crate) fn records_def(name: &str) -> TableDefinition<'_, (i64, u64), &'static [u8]> {
    TableDefinition::new(name)
}
pub(crate) fn by_dict_id_def(name: &str) -> TableDefinition<'_, (u64, i64, u64), ()> {
    TableDefinition::new(name)
}
pub(crate) fn by_run_def(name: &str) -> TableDefinition<'_, (&'static str, i64, u64), ()> {
    TableDefinition::new(name)
}

/// The storage engine failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// Reading or writing a file failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another process (or another handle in this one) has the store open.
    #[error("the store at {0} is already open in another process (or handle); close it first")]
    Locked(PathBuf),
    /// The store was written by a newer version of Almanac.
    #[error("the store at {path} has format version {found}, but this build reads version {supported} (and upgrades versions 1 to 4); upgrade almanac")]
    UnsupportedFormat {
        /// The store directory.
        path: PathBuf,
        /// The version found in the file.
        found: u64,
        /// The version this build supports.
        supported: u64,
    },
    /// Stored bytes did not decode: the file is damaged.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// An error inside redb.
    #[error("storage engine error: {0}")]
    Redb(String),
    /// There is no store (no `almanac.redb`) in the directory.
    #[error("no store at {0} (it has no almanac.redb)")]
    NoStore(PathBuf),
    /// The store's writer has shut down (the handle is being dropped) or failed earlier.
    #[error("the store's writer is not running: {0}")]
    WriterGone(String),
    /// A thread of a parallel scan ended before the end of its records
    /// without reporting an error (it panicked): the answer would be short.
    #[error("a scan thread stopped before the end of its records: {0}")]
    ScanThread(String),
    /// A batch written while it was being prepared was given up part-way
    /// (a record failed its checks): nothing of it was written.
    #[error("the batch was abandoned while it was being written; nothing of it was stored")]
    Abandoned,
    /// The engine panicked (redb reads some damaged pages with an
    /// `unwrap`, e.g. a name that is not UTF-8); the call was abandoned.
    #[error("internal failure ({0}); if it persists, the store may be damaged: its log (`almanac tail`) still reads, and importing that into a new store rebuilds it")]
    Internal(String),
    /// A write through a store opened read-only ([`crate::Store::open_read_only`]).
    #[error("the store was opened read-only: it cannot be written through this handle")]
    ReadOnly,
    /// A read-only open found work only a writer may do first: upgrading
    /// the format, or replaying log records the redb file lacks after a
    /// crash. Opening the store for writing once does it.
    #[error("the store at {path} must first be opened for writing: {reason}")]
    NeedsWriter {
        /// The store directory.
        path: PathBuf,
        /// What a writer must do.
        reason: String,
    },
}

/// The sizes of the redb file before and after [`compact`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactReport {
    /// Size of `almanac.redb` before, in bytes.
    pub bytes_before: u64,
    /// Size of `almanac.redb` after, in bytes.
    pub bytes_after: u64,
}

/// Rewrites the redb file of the closed store in `dir` without its free
/// space: redb moves pages towards the start of the file and truncates it.
///
/// Copy-on-write leaves freed pages behind every commit; redb reuses them,
/// but a store that grew fast (a bulk import) keeps the high-water mark.
/// Compaction needs the file to itself: a store open in this or another
/// process fails with [`StorageError::Locked`]. Each step is a redb commit,
/// so a crash part-way leaves a consistent (partly compacted) file.
pub fn compact(dir: &Path) -> Result<CompactReport> {
    let path = dir.join(DB_FILE);
    let size = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|e| StorageError::io(path, e))
    };
    if !path.is_file() {
        return Err(StorageError::NoStore(dir.to_path_buf()));
    }
    let bytes_before = size(&path)?;
    {
        let mut db = Database::builder()
            .open(&path)
            .map_err(|e| open_error(dir, &path, e))?;
        while db
            .compact()
            .map_err(|e| StorageError::Redb(e.to_string()))?
        {}
    }
    Ok(CompactReport {
        bytes_before,
        bytes_after: size(&path)?,
    })
}

/// Writes the format version, the id counters, the initial kinds and the
/// global tables into a database that has none; checks the version of one
/// that has them, upgrading versions 1 to 4 a step at a time
/// ([`upgrade_from_v1`] to [`upgrade_from_v4`]).
fn init_tables(db: &snapshot::Db, dir: &Path, initial_kinds: &[KindSpec]) -> Result<()> {
    {
        let txn = db.begin_read()?;
        if let Ok(meta) = txn.open_table(META) {
            if let Some(found) = meta.get(META_FORMAT_VERSION)?.map(|v| v.value()) {
                if (1..=4).contains(&found) {
                    drop(meta);
                    drop(txn);
                    if found == 1 {
                        upgrade_from_v1(db)?;
                    }
                    if found <= 2 {
                        upgrade_from_v2(db)?;
                    }
                    if found <= 3 {
                        upgrade_from_v3(db)?;
                    }
                    return upgrade_from_v4(db);
                }
                if found != FORMAT_VERSION {
                    return Err(StorageError::UnsupportedFormat {
                        path: dir.to_path_buf(),
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                return Ok(());
            }
        }
    }
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert(META_FORMAT_VERSION, FORMAT_VERSION)?;
        meta.insert(META_NEXT_ID, 1)?;
        meta.insert(META_NEXT_TARGET_ID, 1)?;
        meta.insert(META_NEXT_PRODUCER_ID, 1)?;
        let mut kinds = txn.open_table(KINDS)?;
        for spec in initial_kinds {
            let json =
                serde_json::to_string(spec).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            kinds.insert(spec.name.as_str(), json.as_str())?;
        }
        txn.open_table(TARGETS)?;
        txn.open_table(PRODUCERS)?;
        txn.open_table(LATEST)?;
        txn.open_table(PARTITIONS)?;
        txn.open_table(SUMMARIES)?;
    }
    txn.commit(LatestChange::All)?;
    Ok(())
}

/// Version 1's `latest` table, keyed by a `(kind, target name)` tuple.
const LATEST_V1: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("latest");

/// Upgrades a format-1 store to version 2 in one durable transaction (so a
/// crash leaves it at version 1, to be upgraded at the next open): the
/// `latest` entries are copied under their version-2 keys ([`latest_key`])
/// into a new table, which then replaces the old one. Nothing else differs
/// between the two versions.
fn upgrade_from_v1(db: &snapshot::Db) -> Result<()> {
    const NEW: TableDefinition<&str, &[u8]> = TableDefinition::new("latest.v2");
    let txn = db.begin_write()?;
    {
        let old = txn.open_table(LATEST_V1)?;
        let mut new = txn.open_table(NEW)?;
        let mut key = String::new();
        for entry in old.iter()? {
            let (k, v) = entry?;
            let (kind, target) = k.value();
            key.clear();
            push_latest_key(&mut key, kind, target);
            new.insert(key.as_str(), v.value())?;
        }
    }
    txn.delete_table(LATEST_V1)?;
    txn.rename_table(NEW, LATEST)?;
    // This step's own result, not `FORMAT_VERSION`: a later version adds
    // its own step after this one.
    txn.open_table(META)?.insert(META_FORMAT_VERSION, 2)?;
    txn.commit(LatestChange::All)
}

/// Upgrades a format-2 store to version 3 in one durable transaction (a
/// crash leaves it at version 2): version 2's `latest` values went on with
/// a copy of the encoded record after `produced_at ‖ id`; version 3 keeps
/// those 16 bytes, which locate the record in its partition. Every value
/// is cut to them in place. Nothing else differs between the two versions.
fn upgrade_from_v2(db: &snapshot::Db) -> Result<()> {
    let txn = db.begin_write()?;
    {
        let mut latest = txn.open_table(LATEST)?;
        let mut long: Vec<(String, [u8; 16])> = Vec::new();
        for entry in latest.iter()? {
            let (k, v) = entry?;
            let value = v.value();
            // A value shorter than 16 bytes (damaged) is left as it is: its
            // lookup reports the damage, as it did at version 2, and the
            // store still opens.
            if value.len() > 16 {
                let (ts, id) = write::latest_order(value);
                long.push((k.value().to_owned(), write::latest_value(ts, id)));
            }
        }
        for (key, value) in &long {
            latest.insert(key.as_str(), value.as_slice())?;
        }
    }
    txn.open_table(META)?.insert(META_FORMAT_VERSION, 3)?;
    txn.commit(LatestChange::All)
}

/// Upgrades a format-3 store to version 4 in one durable transaction.
/// Version 3 keyed the target dictionary and the `latest` table by a
/// target's canonical name; version 4 by its key (`MetadataTarget::key`),
/// which differs only where the canonical name is ambiguous (`pg:sales.eu.orders`
/// from (`pg`, `sales.eu`, `orders`)): those entries move to their key, ids
/// and values unchanged. (Two targets whose names collided shared one
/// entry in version 3, the first one's: what stays shared is in
/// docs/format.md, "Versioning".)
fn upgrade_from_v3(db: &snapshot::Db) -> Result<()> {
    let txn = db.begin_write()?;
    {
        let mut targets = txn.open_table(TARGETS)?;
        // (old name, key, value) of every entry that moves.
        let mut entries = Vec::new();
        for entry in targets.iter()? {
            let (name, value) = entry?;
            let (id, source, schema, table) = value.value();
            let key = crate::model::target_key(source, schema, table);
            if key != name.value() {
                entries.push((
                    name.value().to_owned(),
                    key,
                    (id, source.to_owned(), schema.to_owned(), table.to_owned()),
                ));
            }
        }
        // Every old key goes before any new one is written, so no move can
        // undo another (an old name may equal another target's new key).
        for (old, ..) in &entries {
            targets.remove(old.as_str())?;
        }
        for (_, key, (id, source, schema, table)) in &entries {
            targets.insert(
                key.as_str(),
                (*id, source.as_str(), schema.as_str(), table.as_str()),
            )?;
        }
        if !entries.is_empty() {
            let moved: std::collections::HashMap<&str, &str> = entries
                .iter()
                .map(|(old, key, _)| (old.as_str(), key.as_str()))
                .collect();
            let mut latest = txn.open_table(LATEST)?;
            let mut rekeyed = Vec::new();
            for entry in latest.iter()? {
                let (key, value) = entry?;
                let Some((kind, name)) = key.value().split_once('\0') else {
                    continue;
                };
                if let Some(new) = moved.get(name) {
                    rekeyed.push((
                        key.value().to_owned(),
                        latest_key(kind, new),
                        value.value().to_vec(),
                    ));
                }
            }
            for (old, ..) in &rekeyed {
                latest.remove(old.as_str())?;
            }
            for (_, new, value) in &rekeyed {
                latest.insert(new.as_str(), value.as_slice())?;
            }
        }
    }
    txn.open_table(META)?.insert(META_FORMAT_VERSION, 4)?;
    txn.commit(LatestChange::All)
}

/// Version 4 → 5 in one durable transaction: the partition summaries
/// table (see `summary`), with each partition's producers read from its
/// by-producer index, which is then deleted (version 5 keeps producers in
/// the summary only). Kinds registered before keep their indexed paths
/// and have no summarized ones; partitions written from now on are
/// summarized for the paths their kind names.
fn upgrade_from_v4(db: &snapshot::Db) -> Result<()> {
    use redb::TableHandle;
    let txn = db.begin_write()?;
    {
        let existing: std::collections::HashSet<String> =
            txn.list_tables()?.map(|t| t.name().to_owned()).collect();
        let partitions: Vec<PartitionKey> = txn
            .open_table(PARTITIONS)?
            .iter()?
            .map(|entry| {
                entry.map(|(key, _)| {
                    let (kind, bucket_start) = key.value();
                    PartitionKey {
                        kind: kind.to_owned(),
                        bucket_start,
                    }
                })
            })
            .collect::<std::result::Result<_, _>>()?;
        let mut summaries = txn.open_table(SUMMARIES)?;
        for key in &partitions {
            let name = part_table_name(key, PartTable::ByProducer);
            if !existing.contains(&name) {
                continue; // unknown producers: nothing is skipped for them
            }
            let mut producers = Vec::new();
            {
                let index = txn.open_table(by_dict_id_def(&name))?;
                // One seek a producer: a partition has few.
                let mut next = 0u64;
                while let Some(entry) = index.range((next, i64::MIN, 0)..)?.next() {
                    let producer = entry?.0.value().0;
                    producers.push(producer);
                    match producer.checked_add(1) {
                        Some(n) => next = n,
                        None => break,
                    }
                }
            }
            txn.delete_table(by_dict_id_def(&name))?;
            let summary = summary::PartSummary {
                producers: Some(producers),
                paths: Vec::new(),
            };
            summaries.insert(
                (key.kind.as_str(), key.bucket_start),
                summary.encode().as_slice(),
            )?;
        }
    }
    txn.open_table(META)?.insert(META_FORMAT_VERSION, 5)?;
    txn.commit(LatestChange::Nothing)
}

/// Whether `path` holds a redb database. A missing file does not; nor does
/// one without redb's magic number at its start: redb writes the magic last
/// when it initialises a file, so such a file is a creation cut short (by a
/// store version without atomic creation) and holds no committed data. It
/// is removed so the store can be created afresh.
fn holds_database(path: &Path) -> Result<bool> {
    let holds = has_database_magic(path)?;
    if holds != Some(false) {
        return Ok(holds.unwrap_or(false));
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Whether `path` starts like a redb database (see [`holds_database`]),
/// changing nothing: `None` when there is no file, `Some(false)` for a
/// creation cut short.
fn has_database_magic(path: &Path) -> Result<Option<bool>> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(path, e)),
    };
    let mut magic = [0u8; 9];
    let mut read = 0;
    while read < magic.len() {
        match file.read(&mut magic[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StorageError::io(path, e)),
        }
    }
    // redb's open reports anything else that is not a database.
    Ok(Some(magic.iter().any(|&b| b != 0)))
}

/// Creates the store file at `path` atomically: builds it as
/// `almanac.redb.new-{pid}` with its tables committed (durably), then links
/// it to `path`, which fails rather than replace a file another process
/// created meanwhile; then syncs the directory so the name is durable too.
fn create_file(dir: &Path, path: &Path, initial_kinds: &[KindSpec]) -> Result<()> {
    let tmp = dir.join(format!("{DB_FILE}.new-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp); // a leftover of an earlier process with our pid
    let built = Database::builder()
        .create(&tmp)
        .map_err(|e| open_error(dir, &tmp, e))
        .and_then(|db| init_tables(&snapshot::Db::new(db, 0), dir, initial_kinds));
    if let Err(e) = built {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let linked = match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(()),
        // Another process created the store first: open theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        // A file system without hard links: a rename still places the file
        // atomically, but could replace a store created meanwhile.
        Err(_) if !path.exists() => std::fs::rename(&tmp, path),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(|e| StorageError::io(path, e))?;
    sync_dir(dir)
}

/// Makes a directory's entries (a new or renamed file) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Maps redb's error opening a database file to ours.
fn open_error(dir: &Path, path: &Path, e: redb::DatabaseError) -> StorageError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StorageError::Locked(dir.to_path_buf()),
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => StorageError::io(path, io),
        other => StorageError::Redb(other.to_string()),
    }
}

impl StorageError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

macro_rules! redb_errors {
    ($($ty:ty),*) => {$(
        impl From<$ty> for StorageError {
            fn from(e: $ty) -> Self {
                StorageError::Redb(e.to_string())
            }
        }
    )*};
}
redb_errors!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError
);

impl From<DecodeError> for StorageError {
    fn from(e: DecodeError) -> Self {
        StorageError::Corrupt(e.0.to_owned())
    }
}

/// The cores this process may use, asked once: the standard library reads
/// cgroup files to answer, which costs more than preparing a record.
pub(crate) fn available_cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `Result` with [`StorageError`].
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The redb database of one store, with its tables created.
pub struct Engine {
    /// The redb database, behind the wrapper whose commits invalidate the
    /// shared read snapshot.
    db: snapshot::Db,
    dir: PathBuf,
    /// What the write path has already looked up; see `write::WriteCache`.
    write_cache: std::sync::Mutex<write::WriteCache>,
    /// Often-read partitions' by-target keys and records, for `history`.
    history_cache: history_cache::HistoryCache,
    /// Whether large scans may walk each kind on a thread of its own.
    parallel_scans: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("dir", &self.dir).finish()
    }
}

impl Engine {
    /// Opens (creating when missing) the redb file of the store in `dir`,
    /// with a page cache of `cache_bytes`. A new store gets the format
    /// version and the given initial kinds.
    ///
    /// Creation is atomic: the new file is built under a temporary name and
    /// linked into place once its tables are committed (`create_file`), so
    /// a process killed while creating a store leaves no `almanac.redb` or
    /// a whole one, never a file that later opens fail on.
    pub fn open(dir: &Path, initial_kinds: &[KindSpec], cache_bytes: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let path = dir.join(DB_FILE);
        if !holds_database(&path)? {
            create_file(dir, &path, initial_kinds)?;
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| open_error(dir, &path, e))?;
        let engine = Engine::with_db(snapshot::Db::new(db, DEFAULT_LATEST_CACHE_BYTES), dir);
        engine.init(initial_kinds)?;
        Ok(engine)
    }

    /// An engine over `db`, with the defaults `with_*` change.
    fn with_db(db: snapshot::Db, dir: &Path) -> Self {
        Engine {
            db,
            dir: dir.to_path_buf(),
            write_cache: std::sync::Mutex::default(),
            history_cache: history_cache::HistoryCache::default(),
            parallel_scans: true,
        }
    }

    /// Opens the existing store in `dir` read-only, with a page cache of
    /// `cache_bytes`: redb shares the file with other read-only handles
    /// (in this process or others) and excludes writers, which exclude it
    /// ([`StorageError::Locked`] either way). Nothing is created or
    /// written: [`StorageError::NoStore`] without a store, and
    /// [`StorageError::NeedsWriter`] when its format must be upgraded or
    /// its last writer did not close it (redb must repair the file).
    pub fn open_read_only(dir: &Path, cache_bytes: usize) -> Result<Self> {
        let path = dir.join(DB_FILE);
        match has_database_magic(&path)? {
            None => return Err(StorageError::NoStore(dir.to_path_buf())),
            // A creation cut short, which a writable open removes.
            Some(false) => {
                return Err(StorageError::NeedsWriter {
                    path: dir.to_path_buf(),
                    reason: "its creation was cut short".into(),
                })
            }
            Some(true) => {}
        }
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .open_read_only(&path)
            .map_err(|e| match e {
                // redb repairs a file its last writer did not close, which
                // needs a writable handle.
                redb::DatabaseError::RepairAborted => StorageError::NeedsWriter {
                    path: dir.to_path_buf(),
                    reason:
                        "the last writer stopped without closing it, so its file must be repaired"
                            .into(),
                },
                other => open_error(dir, &path, other),
            })?;
        let engine = Engine::with_db(
            snapshot::Db::new_read_only(db, DEFAULT_LATEST_CACHE_BYTES),
            dir,
        );
        let found = {
            let txn = engine.db.begin_read()?;
            match txn.open_table(META) {
                Ok(meta) => meta.get(META_FORMAT_VERSION)?.map(|v| v.value()),
                // Tables not created yet: a writable open creates them.
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            }
        };
        match found {
            Some(FORMAT_VERSION) => Ok(engine),
            Some(1..=4) => Err(StorageError::NeedsWriter {
                path: dir.to_path_buf(),
                reason: "its format must be upgraded".into(),
            }),
            None => Err(StorageError::NeedsWriter {
                path: dir.to_path_buf(),
                reason: "its tables must be created".into(),
            }),
            Some(found) => Err(StorageError::UnsupportedFormat {
                path: dir.to_path_buf(),
                found,
                supported: FORMAT_VERSION,
            }),
        }
    }

    /// Whether the engine was opened read-only ([`Engine::open_read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.db.is_read_only()
    }

    /// Gives the latest cache (the `latest` entries read so far, kept in
    /// memory; see `latest_cache`) a capacity of `bytes`; 0 turns it off.
    /// [`DEFAULT_LATEST_CACHE_BYTES`] unless set.
    pub fn with_latest_cache(mut self, bytes: usize) -> Self {
        self.db.set_latest_cache(bytes);
        self
    }

    /// Gives the history cache (copies of the partitions `history` reads
    /// often; see `history_cache`) a capacity of `bytes`; 0 turns it off.
    /// [`DEFAULT_HISTORY_CACHE_BYTES`] unless set.
    pub fn with_history_cache(mut self, bytes: usize) -> Self {
        self.history_cache = history_cache::HistoryCache::new(bytes);
        self
    }

    /// What the history cache holds now.
    pub fn history_cache_stats(&self) -> HistoryCacheStats {
        self.history_cache.stats()
    }

    /// What the latest cache holds now.
    pub fn latest_cache_stats(&self) -> LatestCacheStats {
        self.db.latest_cache().stats()
    }

    /// Allows or forbids scans on threads of their own (on by default; see
    /// `read::parallel_scan`).
    pub fn with_parallel_scans(mut self, on: bool) -> Self {
        self.parallel_scans = on;
        self
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The shared read snapshot of the last commit (see `snapshot.rs`).
    pub(crate) fn snapshot(&self) -> Result<std::sync::Arc<snapshot::Snapshot>> {
        self.db.snapshot()
    }

    fn init(&self, initial_kinds: &[KindSpec]) -> Result<()> {
        init_tables(&self.db, &self.dir, initial_kinds)
    }

    /// The kind specs stored in the registry table.
    pub fn load_kinds(&self) -> Result<Vec<KindSpec>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KINDS)?;
        let mut specs = Vec::new();
        for entry in table.iter()? {
            let (name, json) = entry?;
            let spec: KindSpec = serde_json::from_str(json.value()).map_err(|e| {
                StorageError::Corrupt(format!("kind `{}` in the registry: {e}", name.value()))
            })?;
            specs.push(spec);
        }
        Ok(specs)
    }

    /// Writes (inserts or replaces) one kind spec.
    pub fn put_kind(&self, spec: &KindSpec) -> Result<()> {
        let json = serde_json::to_string(spec).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let txn = self.db.begin_write()?;
        {
            let mut kinds = txn.open_table(KINDS)?;
            kinds.insert(spec.name.as_str(), json.as_str())?;
        }
        txn.commit(LatestChange::Nothing)?;
        Ok(())
    }

    /// The id the next stored record will get; every id below it was assigned.
    pub fn next_id(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(META_NEXT_ID)?.map_or(1, |v| v.value()))
    }

    /// Size of the redb file in bytes: its length.
    pub fn file_size(&self) -> Result<u64> {
        Ok(self.file_sizes()?.0)
    }

    /// The redb file's length, and the bytes the file system allocated to
    /// it where it says so (Unix; `None` elsewhere). They differ because
    /// redb grows its file ahead of use without writing the new space (after
    /// `compact`, the next write doubles the length), so the file is sparse.
    pub fn file_sizes(&self) -> Result<(u64, Option<u64>)> {
        let path = self.dir.join(DB_FILE);
        let meta = std::fs::metadata(&path).map_err(|e| StorageError::io(&path, e))?;
        #[cfg(unix)]
        let allocated = {
            use std::os::unix::fs::MetadataExt;
            Some(meta.blocks().saturating_mul(512))
        };
        #[cfg(not(unix))]
        let allocated = None;
        Ok((meta.len(), allocated))
    }
}
