//! The shared read snapshot: one redb read transaction, with the tables
//! point reads need opened from it once, reused by every `latest` and
//! `history` call until a write commits.
//!
//! Opening a read transaction and a table costs more than the lookup itself
//! (redb checks a table's definition by building type-name strings on every
//! open), so point reads share one [`Snapshot`] behind an `Arc`.
//!
//! **Invalidation.** The engine reaches redb only through [`Db`], whose
//! write transactions ([`WriteTxn`]) bump the generation and drop the cached
//! snapshot when they commit, *after* the commit and before the writer
//! answers its callers. Nothing else can commit: the `Database` is private
//! to this module. A reader takes the cached snapshot only if it was
//! opened at the current generation, otherwise it opens a new one. So once
//! `store()` has returned, a `latest()` on any thread sees the record; and a
//! stale snapshot never outlives the next commit in the cache (a live read
//! transaction keeps redb from reusing the pages freed after it).

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use redb::{
    Database, ReadOnlyDatabase, ReadOnlyTable, ReadTransaction, ReadableDatabase, TableError,
    WriteTransaction,
};

use super::latest_cache::{LatestCache, LatestChange};
use super::read::{catalog_of, CatalogEntry};
use super::{
    by_dict_id_def, part_table_name, records_def, PartTable, Result, StorageError, LATEST, TARGETS,
};

/// `kind ‖ 0x00 ‖ target name -> produced_at ‖ id`.
pub(crate) type LatestTable = ReadOnlyTable<&'static str, &'static [u8]>;
/// `target name -> (target id, source_id, schema, table)`.
pub(crate) type TargetsTable =
    ReadOnlyTable<&'static str, (u64, &'static str, &'static str, &'static str)>;
/// A partition's records: `(produced_at, id) -> encoded record`.
pub(crate) type RecordsTable = ReadOnlyTable<(i64, u64), &'static [u8]>;
/// A partition's by-target index: `(target id, produced_at, id) -> ()`.
pub(crate) type ByTargetTable = ReadOnlyTable<(u64, i64, u64), ()>;

/// The engine's redb database: read transactions, write transactions that
/// invalidate the shared snapshot on commit, and the snapshot itself.
pub(crate) struct Db {
    /// Declared first, so cached read transactions are dropped before the database.
    snapshots: Snapshots,
    /// The `latest` entries read so far, kept up to date by every commit.
    latest_cache: LatestCache,
    db: Handle,
}

/// A database open for writing, or read-only (which other read-only
/// handles may share, in this process or others; see
/// `Engine::open_read_only`).
enum Handle {
    Write(Database),
    Read(ReadOnlyDatabase),
}

impl Handle {
    fn begin_read(&self) -> std::result::Result<ReadTransaction, redb::TransactionError> {
        match self {
            Handle::Write(db) => db.begin_read(),
            Handle::Read(db) => db.begin_read(),
        }
    }
}

impl Db {
    /// `latest_cache_bytes`: the latest cache's capacity (0: none).
    pub(crate) fn new(db: Database, latest_cache_bytes: usize) -> Self {
        Db {
            snapshots: Snapshots::default(),
            latest_cache: LatestCache::new(latest_cache_bytes, 0),
            db: Handle::Write(db),
        }
    }

    /// A read-only database: every [`Db::begin_write`] fails with
    /// [`StorageError::ReadOnly`], so nothing is ever committed and the
    /// snapshot stays that of the open.
    pub(crate) fn new_read_only(db: ReadOnlyDatabase, latest_cache_bytes: usize) -> Self {
        Db {
            snapshots: Snapshots::default(),
            latest_cache: LatestCache::new(latest_cache_bytes, 0),
            db: Handle::Read(db),
        }
    }

    /// Whether this database was opened read-only.
    pub(crate) fn is_read_only(&self) -> bool {
        matches!(self.db, Handle::Read(_))
    }

    /// The cache of `latest` entries (see `latest_cache`).
    pub(crate) fn latest_cache(&self) -> &LatestCache {
        &self.latest_cache
    }

    /// Replaces the latest cache with an empty one of `bytes`, at the
    /// current generation (opening may have committed already: upgrading
    /// a store does).
    pub(crate) fn set_latest_cache(&mut self, bytes: usize) {
        let generation = self.snapshots.generation.load(Ordering::Acquire);
        self.latest_cache = LatestCache::new(bytes, generation);
    }

    /// A new read transaction of its own (for scans and rare reads).
    pub(crate) fn begin_read(&self) -> Result<ReadTransaction> {
        Ok(self.db.begin_read()?)
    }

    /// A write transaction; committing it invalidates the shared snapshot.
    pub(crate) fn begin_write(&self) -> Result<WriteTxn<'_>> {
        let Handle::Write(db) = &self.db else {
            return Err(StorageError::ReadOnly);
        };
        Ok(WriteTxn {
            txn: db.begin_write()?,
            snapshots: &self.snapshots,
            latest_cache: &self.latest_cache,
        })
    }

    /// The shared snapshot of the last commit.
    pub(crate) fn snapshot(&self) -> Result<Arc<Snapshot>> {
        self.snapshots.get(&self.db)
    }

    /// The generation of the last commit (for tests).
    #[cfg(test)]
    pub(crate) fn generation(&self) -> u64 {
        self.snapshots.generation.load(Ordering::Acquire)
    }
}

/// A redb write transaction whose commit invalidates the shared snapshot
/// and brings the latest cache up to date. Dropping or aborting it changes
/// nothing, so needs neither.
pub(crate) struct WriteTxn<'db> {
    txn: WriteTransaction,
    snapshots: &'db Snapshots,
    latest_cache: &'db LatestCache,
}

impl WriteTxn<'_> {
    /// Commits. `latest` says what the transaction changed in the
    /// `latest` table: those entries leave the latest cache first (see
    /// `latest_cache`). After the commit (even a failed one: a spare
    /// invalidation only costs the next read a new snapshot; and on a
    /// panic, by a guard) the shared snapshot is invalidated and the commit
    /// applied to the cache, before this returns.
    pub(crate) fn commit(self, latest: LatestChange) -> Result<()> {
        self.latest_cache.begin_commit(&latest);
        let applied = Applied {
            snapshots: self.snapshots,
            latest_cache: self.latest_cache,
        };
        let committed = self.txn.commit();
        #[cfg(test)]
        tests::after_redb_commit(self.latest_cache);
        drop(applied);
        Ok(committed?)
    }

    /// Aborts: nothing was written.
    pub(crate) fn abort(self) -> Result<()> {
        Ok(self.txn.abort()?)
    }
}

/// Applies a commit to the snapshot and the latest cache when dropped:
/// after the commit returns, or when it panics (else the cache would refuse
/// every fill from then on).
struct Applied<'db> {
    snapshots: &'db Snapshots,
    latest_cache: &'db LatestCache,
}

impl Drop for Applied<'_> {
    fn drop(&mut self) {
        let cache = self.latest_cache;
        self.snapshots
            .invalidate(|generation| cache.end_commit(generation));
    }
}

impl Deref for WriteTxn<'_> {
    type Target = WriteTransaction;

    fn deref(&self) -> &WriteTransaction {
        &self.txn
    }
}

impl DerefMut for WriteTxn<'_> {
    fn deref_mut(&mut self) -> &mut WriteTransaction {
        &mut self.txn
    }
}

/// The cached snapshot and the generation of the last commit.
#[derive(Default)]
struct Snapshots {
    /// Bumped after every committed write transaction.
    generation: AtomicU64,
    current: Mutex<Option<Arc<Snapshot>>>,
}

impl Snapshots {
    /// The snapshot of the current generation, opening one when the cached
    /// one is older (or missing).
    fn get(&self, db: &Handle) -> Result<Arc<Snapshot>> {
        let mut current = self.lock();
        // Read before `begin_read`: the snapshot holds at least every commit
        // whose bump this load sees (commits bump after they are visible).
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(snapshot) = current.as_ref() {
            if snapshot.generation == generation {
                return Ok(Arc::clone(snapshot));
            }
        }
        let snapshot = Arc::new(Snapshot::open(db, generation)?);
        *current = Some(Arc::clone(&snapshot));
        Ok(snapshot)
    }

    /// Called after every commit: later reads open a new snapshot. The old
    /// one is dropped here (unless a reader still holds it), so it does not
    /// pin the pages the commit freed. `then` runs with the new generation
    /// before any snapshot of it can be opened (the lock is held).
    fn invalidate(&self, then: impl FnOnce(u64)) {
        let mut current = self.lock();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        then(generation);
        let stale = current.take();
        drop(current);
        drop(stale);
    }

    fn lock(&self) -> MutexGuard<'_, Option<Arc<Snapshot>>> {
        // The guarded value is a cache: a panic elsewhere cannot leave it
        // inconsistent, so a poisoned lock is still usable.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The tables of one partition needed by `history`, opened once per snapshot.
pub(crate) struct PartTables {
    /// `None` when the partition has no such table (nothing to read).
    pub records: Option<RecordsTable>,
    pub by_target: Option<ByTargetTable>,
}

/// A partition of the catalog with its lazily opened tables.
pub(crate) struct SnapshotPartition {
    pub entry: CatalogEntry,
    tables: OnceLock<PartTables>,
}

/// One read transaction and what point reads open from it.
pub(crate) struct Snapshot {
    generation: u64,
    latest: LatestTable,
    targets: OnceLock<TargetsTable>,
    /// Per kind, its partitions in bucket order (the catalog, read once).
    kinds: Mutex<HashMap<String, Arc<[SnapshotPartition]>>>,
    txn: ReadTransaction,
}

impl Snapshot {
    fn open(db: &Handle, generation: u64) -> Result<Self> {
        let txn = db.begin_read()?;
        Ok(Snapshot {
            generation,
            latest: txn.open_table(LATEST)?,
            targets: OnceLock::new(),
            kinds: Mutex::default(),
            txn,
        })
    }

    /// The generation of the commit this snapshot reads (or a later one:
    /// see `Snapshots::get`).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The latest table.
    pub(crate) fn latest(&self) -> &LatestTable {
        &self.latest
    }

    /// The target dictionary.
    pub(crate) fn targets(&self) -> Result<&TargetsTable> {
        if let Some(table) = self.targets.get() {
            return Ok(table);
        }
        let table = self.txn.open_table(TARGETS)?;
        // Another thread may have set it meanwhile; either table is the same.
        Ok(self.targets.get_or_init(|| table))
    }

    /// The dictionary id of a canonical target name, if it has had records.
    pub(crate) fn target_id(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.targets()?.get(name)?.map(|v| v.value().0))
    }

    /// The partitions of `kind`, in bucket order.
    pub(crate) fn partitions(&self, kind: &str) -> Result<Arc<[SnapshotPartition]>> {
        let mut kinds = self.kinds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(parts) = kinds.get(kind) {
            return Ok(Arc::clone(parts));
        }
        let parts: Arc<[SnapshotPartition]> = catalog_of(&self.txn, Some(&[kind.to_owned()]))?
            .into_iter()
            .map(|entry| SnapshotPartition {
                entry,
                tables: OnceLock::new(),
            })
            .collect();
        kinds.insert(kind.to_owned(), Arc::clone(&parts));
        Ok(parts)
    }

    /// The records table and by-target index of a partition.
    pub(crate) fn part_tables<'a>(&self, part: &'a SnapshotPartition) -> Result<&'a PartTables> {
        if let Some(tables) = part.tables.get() {
            return Ok(tables);
        }
        let key = &part.entry.key;
        let records = missing_is_none(
            self.txn
                .open_table(records_def(&part_table_name(key, PartTable::Records))),
        )?;
        let by_target = missing_is_none(
            self.txn
                .open_table(by_dict_id_def(&part_table_name(key, PartTable::ByTarget))),
        )?;
        Ok(part
            .tables
            .get_or_init(|| PartTables { records, by_target }))
    }

    /// The encoded record (`produced_at`, `id`) of a kind whose
    /// [`Snapshot::partitions`] are `partitions`, read from the partition
    /// whose bucket holds `produced_at` (a kind's partitions do not overlap
    /// in time: its bucket cannot change once it has records); `None` if
    /// there is no such record.
    pub(crate) fn record(
        &self,
        partitions: &[SnapshotPartition],
        ts: i64,
        id: u64,
    ) -> Result<Option<RecordBytes>> {
        let after = partitions.partition_point(|p| p.entry.key.bucket_start <= ts);
        // No check against the bucket's end: the last bucket's end saturates
        // at the largest instant, which a record may have; a `produced_at`
        // outside the bucket simply finds no record there.
        let Some(part) = after.checked_sub(1).and_then(|i| partitions.get(i)) else {
            return Ok(None);
        };
        match &self.part_tables(part)?.records {
            Some(records) => Ok(records.get((ts, id))?),
            None => Ok(None),
        }
    }
}

/// An encoded record read from a snapshot.
pub(crate) type RecordBytes = redb::AccessGuard<'static, &'static [u8]>;

fn missing_is_none<T>(r: std::result::Result<T, TableError>) -> Result<Option<T>> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{standard_kinds, Bucket, KindSpec, Retention};
    use crate::model::{JsonObject, MetadataRecord, MetadataTarget, Timestamp};
    use crate::storage::{Engine, PreparedRecord};

    fn assert_send_sync<T: Send + Sync>() {}

    type Hook = Box<dyn FnMut(&LatestCache)>;

    thread_local! {
        /// Runs on this thread between redb's commit and its application
        /// to the snapshot and the latest cache (see `WriteTxn::commit`).
        static AFTER_REDB_COMMIT: std::cell::RefCell<Option<Hook>> =
            std::cell::RefCell::new(None);
    }

    pub(super) fn after_redb_commit(cache: &LatestCache) {
        AFTER_REDB_COMMIT.with(|hook| {
            if let Some(hook) = hook.borrow_mut().as_mut() {
                hook(cache);
            }
        });
    }

    fn volume_at(day: i64) -> MetadataRecord {
        MetadataRecord::new(
            "ingestion_volume",
            MetadataTarget::new("s", "d", "t"),
            JsonObject::new(),
            Timestamp::from_micros(day * 86_400_000_000),
            "p",
        )
    }

    fn write_one(engine: &Engine, record: &MetadataRecord) -> u64 {
        let prepared = PreparedRecord::new(record, Bucket::Day, &[], &[]);
        let outcomes = engine
            .write(
                &[std::slice::from_ref(&prepared)],
                crate::storage::Commit::Durable,
            )
            .unwrap();
        match outcomes[0][0] {
            crate::storage::WriteOutcome::Stored(id) => id,
            ref other => panic!("{other:?}"),
        }
    }

    /// Between redb's commit and its application, the commit's new data is
    /// already visible to a new snapshot: the entries it changed must be out
    /// of the latest cache by then, and stay out, or a reader could mix the
    /// cache's old entries with a snapshot's new ones.
    #[test]
    fn changed_latest_entries_leave_the_cache_before_redb_commits() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &standard_kinds(), 1 << 20).unwrap();
        let target = MetadataTarget::new("s", "d", "t");
        let first = write_one(&engine, &volume_at(10));
        let read = |e: &Engine| e.latest("ingestion_volume", &target).unwrap().map(|r| r.id);
        assert_eq!(read(&engine), Some(first));
        assert_eq!(engine.db.latest_cache().usage().0, 1, "the read filled it");
        let checked = std::rc::Rc::new(std::cell::Cell::new(false));
        let seen = std::rc::Rc::clone(&checked);
        let generation = engine.db.generation();
        AFTER_REDB_COMMIT.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move |cache: &LatestCache| {
                let key = crate::storage::latest_key("ingestion_volume", "s.d.t");
                assert!(
                    cache.get(&key).is_none(),
                    "still cached after redb's commit"
                );
                cache.fill(&key, generation, b"stale");
                assert!(cache.get(&key).is_none(), "filled during the commit");
                seen.set(true);
            }));
        });
        let second = write_one(&engine, &volume_at(11));
        AFTER_REDB_COMMIT.with(|hook| hook.borrow_mut().take());
        assert!(checked.get(), "the hook ran");
        assert_eq!(read(&engine), Some(second));
        assert_eq!(read(&engine), Some(second), "and from the cache");
    }

    /// A panic between redb's commit and its application still applies it:
    /// the cache takes fills again afterwards.
    #[test]
    fn a_panic_during_a_commit_does_not_leave_the_cache_refusing_fills() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &standard_kinds(), 1 << 20).unwrap();
        AFTER_REDB_COMMIT.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(|_: &LatestCache| panic!("injected")));
        });
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            write_one(&engine, &volume_at(10))
        }));
        AFTER_REDB_COMMIT.with(|hook| hook.borrow_mut().take());
        assert!(panicked.is_err());
        let target = MetadataTarget::new("s", "d", "t");
        let latest = engine.latest("ingestion_volume", &target).unwrap();
        assert!(latest.is_some(), "redb committed before the panic");
        assert_eq!(
            engine.latest_cache_stats().n_entries,
            1,
            "the read filled it"
        );
    }

    /// A cache set up after opening committed (as upgrading a store does)
    /// starts at that commit's generation, so reads fill it.
    #[test]
    fn a_latest_cache_set_after_a_commit_is_filled_by_reads() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &standard_kinds(), 1 << 20).unwrap();
        let id = write_one(&engine, &volume_at(10));
        let engine = engine.with_latest_cache(1 << 20);
        let target = MetadataTarget::new("s", "d", "t");
        for _ in 0..2 {
            let latest = engine.latest("ingestion_volume", &target).unwrap();
            assert_eq!(latest.map(|r| r.id), Some(id));
        }
        assert_eq!(engine.latest_cache_stats().n_entries, 1);
    }

    #[test]
    fn snapshots_are_shared_across_threads() {
        assert_send_sync::<Db>();
        assert_send_sync::<Snapshot>();
    }

    /// Each step must bump the generation and replace the cached snapshot.
    fn check_invalidates(engine: &Engine, what: &str, step: impl FnOnce()) {
        let before = engine.snapshot().unwrap();
        let generation = engine.db.generation();
        step();
        assert!(
            engine.db.generation() > generation,
            "{what} did not invalidate the read snapshot"
        );
        assert!(!Arc::ptr_eq(&before, &engine.snapshot().unwrap()), "{what}");
    }

    #[test]
    fn every_committed_write_transaction_invalidates_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &standard_kinds(), 1 << 20).unwrap();
        let mut spec = KindSpec::new("heartbeat", "test kind");
        check_invalidates(&engine, "put_kind", || engine.put_kind(&spec).unwrap());
        let day = 86_400_000_000;
        let record = MetadataRecord::new(
            "heartbeat",
            MetadataTarget::new("s", "d", "t"),
            JsonObject::new(),
            Timestamp::from_micros(10 * day),
            "p",
        );
        check_invalidates(&engine, "write", || {
            write_one(&engine, &record);
        });
        check_invalidates(&engine, "put_kind_and_index", || {
            engine
                .put_kind_and_index(&spec, &["payload.rows".to_owned()], &[])
                .unwrap();
        });
        spec.retention = Retention::Days(1);
        let now = Timestamp::from_micros(20 * day);
        // A dry run commits nothing; the real run renames the tables.
        let dry = engine.apply_retention(&[spec.clone()], now, true).unwrap();
        assert_eq!(dry.dropped.len(), 1);
        check_invalidates(&engine, "apply_retention", || {
            let report = engine.apply_retention(&[spec], now, false).unwrap();
            assert_eq!(report.dropped.len(), 1);
        });
        check_invalidates(&engine, "purge_step", || {
            assert!(engine.purge_step().unwrap() > 0);
        });
    }
}
