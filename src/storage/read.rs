//! The read path: point lookups in the latest table, index range scans and
//! partition scans merged into (`produced_at`, `id`) order.

use std::cmp::Reverse;
use std::collections::binary_heap::PeekMut;
use std::collections::{BinaryHeap, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, TableError};

use super::codec::{
    decode_projected, decode_projected_into, decode_record, empty_record, Projection,
};
use super::history_cache::{HistoryCache, PartKeys, Visit};
use super::partition::partition_name;
use super::path_index::{KeyTest, PathConstraint, PathMatch};
use super::snapshot::{ByTargetTable, RecordBytes, RecordsTable, Snapshot, SnapshotPartition};
use super::summary::{self, PartSummary};
use super::write::latest_order;
use super::{
    by_dict_id_def, by_run_def, part_table_name, path_index_def, path_table_name, records_def,
    Engine, PartTable, PartitionKey, Result, StorageError, PARTITIONS, PRODUCERS, SUMMARIES,
    TARGETS,
};
use super::{latest_key, latest_kind_range, push_latest_key, split_latest_key};
use crate::kinds::Bucket;
use crate::model::{canonical_name, push_target_key, MetadataTarget, StoredRecord, TimeRange};
use crate::query::{ScanDescription, ScanRequest, TargetInfo};

/// Above this many targets, an indexed path equality is preferred to the target index.
const FEW_TARGETS: usize = 64;

/// A scan that reads whole partitions (no index) of two kinds or more and
/// at least this many partitions in all walks each kind on a thread of its
/// own (see [`parallel_scan`]); smaller scans are not worth the threads.
const PARALLEL_SCAN_MIN_PARTITIONS: usize = 32;
/// Above this many kinds a scan stays on the caller's thread.
const PARALLEL_SCAN_MAX_KINDS: usize = 16;
/// Records a scan thread sends at a time (the first batches are smaller,
/// so the first rows arrive early).
const SCAN_BATCH: usize = 256;

/// The catalog entry of one partition (48 bytes plus a bucket byte on disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The bucket size of the partition.
    pub bucket: Bucket,
    /// Exclusive end of the bucket, microseconds.
    pub bucket_end: i64,
    /// Records stored in it.
    pub n_records: u64,
    /// Smallest id in it.
    pub min_id: u64,
    /// Largest id in it.
    pub max_id: u64,
    /// Oldest `produced_at`, microseconds.
    pub min_ts: i64,
    /// Newest `produced_at`, microseconds.
    pub max_ts: i64,
}

impl PartitionInfo {
    pub(crate) fn empty(bucket: Bucket, bucket_end: i64) -> Self {
        PartitionInfo {
            bucket,
            bucket_end,
            n_records: 0,
            min_id: u64::MAX,
            max_id: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
        }
    }

    pub(crate) fn add(&mut self, ts: i64, id: u64) {
        self.n_records += 1;
        self.min_id = self.min_id.min(id);
        self.max_id = self.max_id.max(id);
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
    }

    pub(crate) fn encode(&self) -> [u8; 49] {
        let mut out = [0u8; 49];
        out[0] = match self.bucket {
            Bucket::Day => 0,
            Bucket::Month => 1,
        };
        out[1..9].copy_from_slice(&self.bucket_end.to_le_bytes());
        out[9..17].copy_from_slice(&self.n_records.to_le_bytes());
        out[17..25].copy_from_slice(&self.min_id.to_le_bytes());
        out[25..33].copy_from_slice(&self.max_id.to_le_bytes());
        out[33..41].copy_from_slice(&self.min_ts.to_le_bytes());
        out[41..49].copy_from_slice(&self.max_ts.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 49 {
            return Err(StorageError::Corrupt(
                "partition catalog entry of wrong size".into(),
            ));
        }
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            b
        };
        Ok(PartitionInfo {
            bucket: match bytes[0] {
                0 => Bucket::Day,
                1 => Bucket::Month,
                _ => return Err(StorageError::Corrupt("unknown bucket in catalog".into())),
            },
            bucket_end: i64::from_le_bytes(word(1)),
            n_records: u64::from_le_bytes(word(9)),
            min_id: u64::from_le_bytes(word(17)),
            max_id: u64::from_le_bytes(word(25)),
            min_ts: i64::from_le_bytes(word(33)),
            max_ts: i64::from_le_bytes(word(41)),
        })
    }
}

/// A partition as listed by the catalog.
#[derive(Clone, Debug)]
pub(crate) struct CatalogEntry {
    pub key: PartitionKey,
    pub info: PartitionInfo,
}

impl CatalogEntry {
    pub fn name(&self) -> String {
        partition_name(&self.key.kind, self.info.bucket, self.key.bucket_start)
    }
}

fn missing_table_is_empty<T>(r: std::result::Result<T, TableError>) -> Result<Option<T>> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The exact row filter of a scan request, and how much of each record to decode.
#[derive(Debug)]
struct RowFilter {
    time: Option<TimeRange>,
    targets: Option<HashSet<String>>,
    producers: Option<HashSet<String>>,
    run_ids: Option<HashSet<String>>,
    /// Path constraints, tested on the encoded bytes before decoding.
    paths: Vec<KeyTest>,
    /// What to decode: the request's projection plus what the filter reads;
    /// `None` decodes everything.
    projection: Option<Projection>,
}

impl RowFilter {
    fn new(request: &ScanRequest) -> Self {
        let set = |v: &Option<Vec<String>>| v.as_ref().map(|v| v.iter().cloned().collect());
        let projection = request.projection.as_ref().map(|p| {
            let mut p = p.clone();
            p.target |= request.targets.is_some();
            p.producer_id |= request.producers.is_some();
            p.context |= request.run_ids.is_some();
            p
        });
        RowFilter {
            time: Some(request.time),
            targets: set(&request.targets),
            producers: set(&request.producers),
            run_ids: set(&request.run_ids),
            paths: request.paths.iter().map(KeyTest::new).collect(),
            projection,
        }
    }

    /// Decodes the record into `slot` and returns true if it passes the
    /// filter (`slot` is left empty otherwise). Path constraints are checked
    /// on the bytes, so most rejected records are never decoded; the record
    /// is built in its slot because it is large and moving it costs.
    fn decode_kept(&self, id: u64, bytes: &[u8], slot: &mut Option<StoredRecord>) -> Result<bool> {
        if !self.passes_paths(bytes)? {
            return Ok(false);
        }
        self.decode_passed(id, bytes, slot)
    }

    /// Whether the encoded record meets every path constraint.
    fn passes_paths(&self, bytes: &[u8]) -> Result<bool> {
        for test in &self.paths {
            if !test.matches_encoded(bytes)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// [`RowFilter::decode_kept`] of a record known to pass the path constraints.
    fn decode_passed(
        &self,
        id: u64,
        bytes: &[u8],
        slot: &mut Option<StoredRecord>,
    ) -> Result<bool> {
        let record = match &self.projection {
            None => decode_record(bytes)?,
            Some(p) => decode_projected(bytes, p)?,
        };
        let kept = self.keeps(slot.insert(StoredRecord { id, record }));
        if !kept {
            *slot = None;
        }
        Ok(kept)
    }

    /// [`RowFilter::decode_kept`] into `place`, reusing its buffers: the
    /// record is left there whether it passes or not.
    fn decode_kept_into(&self, id: u64, bytes: &[u8], place: &mut StoredRecord) -> Result<bool> {
        for test in &self.paths {
            if !test.matches_encoded(bytes)? {
                return Ok(false);
            }
        }
        match &self.projection {
            None => place.record = decode_record(bytes)?,
            Some(p) => decode_projected_into(bytes, p, &mut place.record)?,
        }
        place.id = id;
        Ok(self.keeps(place))
    }

    /// The constraints other than paths.
    fn keeps(&self, r: &StoredRecord) -> bool {
        let rec = &r.record;
        self.time.is_none_or(|t| t.contains(rec.produced_at))
            && self
                .targets
                .as_ref()
                .is_none_or(|s| s.contains(&rec.target.key()))
            && self
                .producers
                .as_ref()
                .is_none_or(|s| s.contains(&rec.producer_id))
            && self
                .run_ids
                .as_ref()
                .is_none_or(|s| rec.context.run_id.as_ref().is_some_and(|r| s.contains(r)))
    }
}

/// Which index answers a partition scan.
#[derive(Clone, Debug)]
enum IndexChoice {
    Full,
    Run(Vec<String>),
    Target(Vec<u64>),
    Path(PathConstraint),
}

impl IndexChoice {
    fn name(&self) -> Option<&str> {
        match self {
            IndexChoice::Full => None,
            IndexChoice::Run(_) => Some("run_id"),
            IndexChoice::Target(_) => Some("target"),
            IndexChoice::Path(c) => Some(c.path.as_str()),
        }
    }
}

/// Records of one partition, in (`produced_at`, `id`) order.
enum PartScan {
    Range(redb::Range<'static, (i64, u64), &'static [u8]>),
    Keys {
        records: ReadOnlyTable<(i64, u64), &'static [u8]>,
        keys: std::vec::IntoIter<(i64, u64)>,
    },
}

impl PartScan {
    /// Feeds each (id, encoded record) to `f` until it returns true; false
    /// when the partition has no more records.
    fn next_with(&mut self, mut f: impl FnMut(u64, &[u8]) -> Result<bool>) -> Result<bool> {
        match self {
            PartScan::Range(range) => {
                for entry in range.by_ref() {
                    let (key, value) = entry?;
                    if f(key.value().1, value.value())? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            PartScan::Keys { records, keys } => {
                for key in keys.by_ref() {
                    if let Some(v) = records.get(key)? {
                        if f(key.1, v.value())? {
                            return Ok(true);
                        }
                    }
                }
                Ok(false)
            }
        }
    }
}

/// All records of one kind matching a request, partition after partition.
struct KindScan {
    txn: Arc<ReadTransaction>,
    partitions: std::vec::IntoIter<CatalogEntry>,
    current: Option<PartScan>,
    time: TimeRange,
    index: IndexChoice,
    filter: Arc<RowFilter>,
    /// Set when the scan this walk feeds was dropped (parallel scans): the
    /// walk stops at the next row instead of reading on to the end.
    cancel: Option<Arc<AtomicBool>>,
    /// Rows walked so far (each tested, kept or not).
    visited: usize,
}

/// What a scan thread's reader gets when the thread ended without its end
/// marker or an error: it panicked, and the answer would be short.
fn stopped_early() -> StorageError {
    StorageError::ScanThread("it ended without finishing (a panic); see standard error".into())
}

/// What a cancelled walk returns; nobody is left to read it.
fn cancelled() -> StorageError {
    StorageError::WriterGone("the scan was dropped".into())
}

impl KindScan {
    fn open_partition(&self, entry: &CatalogEntry) -> Result<Option<PartScan>> {
        let rec_name = part_table_name(&entry.key, PartTable::Records);
        let Some(records) = missing_table_is_empty(self.txn.open_table(records_def(&rec_name)))?
        else {
            return Ok(None);
        };
        let (from, until) = (self.time.from.as_micros(), self.time.until.as_micros());
        let mut keys: Vec<(i64, u64)> = Vec::new();
        match &self.index {
            IndexChoice::Full => {
                return Ok(Some(PartScan::Range(records.range((from, 0)..(until, 0))?)));
            }
            IndexChoice::Target(ids) => {
                let name = part_table_name(&entry.key, PartTable::ByTarget);
                if let Some(index) =
                    missing_table_is_empty(self.txn.open_table(by_dict_id_def(&name)))?
                {
                    for &dict_id in ids {
                        for item in index.range((dict_id, from, 0)..(dict_id, until, 0))? {
                            let (k, _) = item?;
                            let (_, ts, id) = k.value();
                            keys.push((ts, id));
                        }
                    }
                }
            }
            IndexChoice::Run(run_ids) => {
                let name = part_table_name(&entry.key, PartTable::ByRun);
                if let Some(index) = missing_table_is_empty(self.txn.open_table(by_run_def(&name)))?
                {
                    for run in run_ids {
                        for item in
                            index.range((run.as_str(), from, 0)..(run.as_str(), until, 0))?
                        {
                            let (k, _) = item?;
                            let (_, ts, id) = k.value();
                            keys.push((ts, id));
                        }
                    }
                }
            }
            IndexChoice::Path(constraint) => {
                let name = path_table_name(&entry.key, &constraint.path);
                let Some(index) =
                    missing_table_is_empty(self.txn.open_table(path_index_def(&name)))?
                else {
                    // Not indexed in this partition: scan it with the row filter.
                    return Ok(Some(PartScan::Range(records.range((from, 0)..(until, 0))?)));
                };
                let test = KeyTest::new(constraint);
                let mut push = |item: std::result::Result<_, redb::StorageError>| -> Result<()> {
                    let (k, _): (redb::AccessGuard<'_, (&[u8], i64, u64)>, _) = item?;
                    let (value, ts, id) = k.value();
                    if from <= ts && ts < until && test.matches_key(value) {
                        keys.push((ts, id));
                    }
                    Ok(())
                };
                match &constraint.matcher {
                    PathMatch::AnyOf(values) => {
                        for v in values {
                            let k = v.key();
                            for item in
                                index.range((k.as_slice(), from, 0)..(k.as_slice(), until, 0))?
                            {
                                push(item)?;
                            }
                        }
                    }
                    PathMatch::Range { lower, upper } => {
                        let lo = lower.as_ref().map(|(v, _)| v.key());
                        let hi = upper.as_ref().map(|(v, _)| {
                            let mut k = v.key();
                            k.push(0xff); // past every (value, ts, id) with this value
                            k
                        });
                        let lo_key: (&[u8], i64, u64) = (lo.as_deref().unwrap_or(&[]), i64::MIN, 0);
                        let iter = match &hi {
                            Some(hi) => index.range(lo_key..(hi.as_slice(), i64::MIN, 0))?,
                            None => index.range(lo_key..)?,
                        };
                        for item in iter {
                            push(item)?;
                        }
                    }
                }
            }
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(Some(PartScan::Keys {
            records,
            keys: keys.into_iter(),
        }))
    }

    /// Puts the next matching record into `slot`; false when there is none.
    fn next_into(&mut self, slot: &mut Option<StoredRecord>) -> Result<bool> {
        self.next_decoded(|filter, id, bytes| filter.decode_kept(id, bytes, slot))
    }

    /// [`KindScan::next_into`], decoding into `place` (its buffers reused).
    fn next_reusing(&mut self, place: &mut StoredRecord) -> Result<bool> {
        self.next_decoded(|filter, id, bytes| filter.decode_kept_into(id, bytes, place))
    }

    /// Walks the partitions until `decode` keeps a record; false when none is left.
    fn next_decoded(
        &mut self,
        mut decode: impl FnMut(&RowFilter, u64, &[u8]) -> Result<bool>,
    ) -> Result<bool> {
        loop {
            if let Some(scan) = &mut self.current {
                let filter = &self.filter;
                let cancel = self.cancel.as_deref();
                let visited = &mut self.visited;
                if scan.next_with(|id, bytes| {
                    if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                        return Err(cancelled());
                    }
                    *visited += 1;
                    decode(filter, id, bytes)
                })? {
                    return Ok(true);
                }
                self.current = None;
            }
            let Some(entry) = self.partitions.next() else {
                return Ok(false);
            };
            self.current = self.open_partition(&entry)?;
        }
    }
}

/// The records of one kind, walked on a thread of its own and received in batches.
struct KindStream {
    rx: Receiver<Result<Vec<StoredRecord>>>,
    batch: std::vec::IntoIter<StoredRecord>,
}

impl Walk for KindStream {
    fn next_record(&mut self) -> Result<Option<StoredRecord>> {
        loop {
            if let Some(record) = self.batch.next() {
                return Ok(Some(record));
            }
            match self.rx.recv() {
                // An empty batch: the walk is over.
                Ok(Ok(batch)) if batch.is_empty() => return Ok(None),
                Ok(Ok(batch)) => self.batch = batch.into_iter(),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(stopped_early()),
            }
        }
    }
}

/// A [`Merge`] with each kind walked (partitions read, rows filtered on
/// their bytes, kept records decoded) on a thread of its own, the caller's
/// thread only merging: the same records in the same order, on every core.
/// One walk per kind rather than a pool: each kind's stream must keep
/// flowing while the merge waits on another. When the scan tests paths on
/// the records' bytes, a kind whose rows mostly fail them decodes those
/// that pass on a second thread ([`walk_kind`]): a filtered scan's kinds
/// are unequal, and the one whose records pass, walking and decoding on
/// one thread, took most of a full scan's time (see `benches/README.md`).
/// Dropping the merge stops the threads (at their next row or batch).
fn parallel_scan(kinds: Vec<KindScan>) -> Result<Merge<KindStream>> {
    let guard = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let mut streams = Vec::with_capacity(kinds.len());
    for mut kind in kinds {
        let (tx, rx) = sync_channel::<Result<Vec<StoredRecord>>>(4);
        let stop = Arc::clone(&guard.0);
        kind.cancel = Some(Arc::clone(&guard.0));
        // Without path tests nothing is rejected on its bytes: every record
        // in range is decoded, so the kinds' threads are about as busy as
        // their record counts, and a split would only copy the bytes.
        let may_split = !kind.filter.paths.is_empty();
        spawn_scan_thread(move || walk_kind(kind, &stop, tx, may_split))?;
        streams.push(KindStream {
            rx,
            batch: Vec::new().into_iter(),
        });
    }
    Ok(Merge::new(streams, Some(guard)))
}

fn spawn_scan_thread(f: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name("almanac-scan".into())
        .spawn(f)
        .map(drop)
        .map_err(|e| StorageError::io(std::path::Path::new("<scan thread>"), e))
}

/// Encoded records that passed a kind's byte-level tests, on their way from
/// the kind's walk to its decoding: their bytes one after another.
#[derive(Default)]
struct RawBatch {
    bytes: Vec<u8>,
    /// Each record's id and the end of its bytes in `bytes`.
    ends: Vec<(u64, usize)>,
}

impl RawBatch {
    fn records(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(id, end)| {
            let bytes = self.bytes.get(start..end).unwrap_or_default();
            start = end;
            (id, bytes)
        })
    }
}

/// A raw batch is sent once it holds this many bytes (or [`SCAN_BATCH`] records).
const RAW_BATCH_BYTES: usize = 256 << 10;

/// What a kind's walk sends to its decoding thread.
enum Walked {
    /// Records that passed the byte-level tests, to decode.
    Raw(RawBatch),
    /// Records the walk decoded itself, to pass on.
    Decoded(Vec<StoredRecord>),
}

/// The walk decodes a batch itself when the previous batch held at least
/// one record for this many rows walked. Splitting pays where few records
/// pass (a filter: the walk is most of the work); where most pass, a
/// second thread only adds a copy of every record's bytes. A first version
/// that always split (and one that decoded inside the walk's row callback)
/// made a scan returning 338,350 of 1,000,000 records steady at ~0.9 s but
/// with rounds of 2.5-3.5 s, twice the system time and up to 5 GB of peak
/// memory against ~1.1 s and 2.3-3.2 GB; decoding through
/// [`KindScan::next_into`], as a walk without path tests does, gives back
/// the latter (`profile_scan DIR 1000000 5 '* | where payload.rows >= 0'`).
/// Not traced further.
const DECODE_IN_WALK_RATIO: usize = 4;

/// The second thread of a kind's walk, once started: the channel to it
/// and the one its raw batches come back on.
struct Decoder {
    tx: SyncSender<Result<Walked>>,
    back: Receiver<RawBatch>,
}

/// A kind's parallel scan: walks its partitions, decodes the records that
/// pass and sends them to `out` in batches, then an empty batch (the end).
/// With `may_split` (the filter tests paths on the bytes), the first time
/// a batch holds few of the rows walked (see [`DECODE_IN_WALK_RATIO`]) it
/// starts a second thread ([`decode_raw`]) and from then on sends it the
/// bytes that pass, or the batches it decoded itself, in order, to pass on.
fn walk_kind(
    mut kind: KindScan,
    stop: &AtomicBool,
    out: SyncSender<Result<Vec<StoredRecord>>>,
    may_split: bool,
) {
    let mut cap = 16;
    let mut raw = RawBatch::default();
    let mut decoded: Vec<StoredRecord> = Vec::with_capacity(cap);
    let mut slot = None;
    // Rows walked when the current batch began.
    let mut visited_before = 0;
    let mut decode_here = true;
    let mut decoder: Option<Decoder> = None;
    // Sends to the decoder once there is one (keeping the order), else on.
    let send = |decoder: &Option<Decoder>, walked: Result<Walked>| -> bool {
        match (decoder, walked) {
            (Some(d), walked) => d.tx.send(walked).is_ok(),
            (None, Ok(Walked::Decoded(records))) => out.send(Ok(records)).is_ok(),
            (None, Err(e)) => out.send(Err(e)).is_ok(),
            (None, Ok(Walked::Raw(_))) => false, // not reached: raw needs a decoder
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let pushed = if decode_here {
            let pushed = kind.next_into(&mut slot);
            decoded.extend(slot.take());
            pushed
        } else {
            kind.next_decoded(|filter, id, bytes| {
                if !filter.passes_paths(bytes)? {
                    return Ok(false);
                }
                raw.bytes.extend_from_slice(bytes);
                raw.ends.push((id, raw.bytes.len()));
                Ok(true)
            })
        };
        let held = raw.ends.len() + decoded.len();
        match pushed {
            Ok(true) if held < cap && raw.bytes.len() < RAW_BATCH_BYTES => {}
            Ok(more) => {
                if held > 0 {
                    cap = (cap * 4).min(SCAN_BATCH);
                    let walked = if decode_here {
                        Walked::Decoded(std::mem::replace(&mut decoded, Vec::with_capacity(cap)))
                    } else {
                        let mut next = decoder
                            .as_ref()
                            .and_then(|d| d.back.try_recv().ok())
                            .unwrap_or_default();
                        next.bytes.clear();
                        next.ends.clear();
                        Walked::Raw(std::mem::replace(&mut raw, next))
                    };
                    if !send(&decoder, Ok(walked)) {
                        return;
                    }
                }
                if !more {
                    let _ = send(&decoder, Ok(Walked::Decoded(Vec::new()))); // the end
                    return;
                }
                if held > 0 {
                    // The batch's share of the rows walked that it holds.
                    let walked = kind.visited - visited_before;
                    visited_before = kind.visited;
                    decode_here = !may_split || held.saturating_mul(DECODE_IN_WALK_RATIO) >= walked;
                    if !decode_here && decoder.is_none() {
                        match start_decoder(&kind.filter, &out) {
                            Some(started) => decoder = Some(started),
                            None => decode_here = true, // no thread: decode here
                        }
                    }
                }
            }
            Err(e) => {
                let _ = send(&decoder, Err(e));
                return;
            }
        }
    }
}

/// Starts [`decode_raw`] on a thread of its own, sending on to `out`.
fn start_decoder(
    filter: &Arc<RowFilter>,
    out: &SyncSender<Result<Vec<StoredRecord>>>,
) -> Option<Decoder> {
    let (tx, rx) = sync_channel::<Result<Walked>>(4);
    let (back_tx, back) = sync_channel::<RawBatch>(4);
    let (filter, out) = (Arc::clone(filter), out.clone());
    spawn_scan_thread(move || decode_raw(&filter, &rx, &back_tx, &out)).ok()?;
    Some(Decoder { tx, back })
}

/// The second half of a kind's parallel scan: decodes what [`walk_kind`]
/// sends, applies the rest of the filter and sends the kept records on.
fn decode_raw(
    filter: &RowFilter,
    rx: &Receiver<Result<Walked>>,
    back: &SyncSender<RawBatch>,
    tx: &SyncSender<Result<Vec<StoredRecord>>>,
) {
    while let Ok(received) = rx.recv() {
        let raw = match received {
            Ok(Walked::Raw(raw)) => raw,
            Ok(Walked::Decoded(records)) => {
                // An empty batch is the walk's end: passed on as it is.
                if tx.send(Ok(records)).is_err() {
                    return;
                }
                continue;
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let mut out = Vec::with_capacity(raw.ends.len());
        let mut slot = None;
        for (id, bytes) in raw.records() {
            match filter.decode_passed(id, bytes, &mut slot) {
                Ok(true) => out.extend(slot.take()),
                Ok(false) => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        let _ = back.try_send(raw); // or dropped, if the walk has enough
        if !out.is_empty() && tx.send(Ok(out)).is_err() {
            return;
        }
    }
}

/// Records of one kind decoded on a thread of their own into batches of
/// places that come back to that thread to be decoded into again.
struct PlaceStream {
    rx: Receiver<Result<(Vec<StoredRecord>, usize)>>,
    back: std::sync::mpsc::SyncSender<Vec<StoredRecord>>,
    batch: Vec<StoredRecord>,
    len: usize,
    pos: usize,
}

/// One kind's records in (`produced_at`, `id`) order, each decoded into a
/// place that the next one may reuse.
trait PlaceWalk {
    /// Moves to the next record (`current`); false at the end.
    fn advance(&mut self) -> Result<bool>;
    fn current(&self) -> Option<&StoredRecord>;
}

/// A kind walked on this thread, decoding into one reused place.
struct ReusedPlace {
    kind: KindScan,
    place: StoredRecord,
}

impl PlaceWalk for ReusedPlace {
    fn advance(&mut self) -> Result<bool> {
        self.kind.next_reusing(&mut self.place)
    }

    fn current(&self) -> Option<&StoredRecord> {
        Some(&self.place)
    }
}

/// Calls `f` on the records of `walks` merged into (`produced_at`, `id`)
/// order. The head taken is replaced in place by its kind's next record (one
/// sift down) rather than popped and pushed again.
fn merge_places<P: PlaceWalk>(walks: &mut [P], f: &mut dyn FnMut(&StoredRecord)) -> Result<()> {
    let order = |r: &StoredRecord| (r.record.produced_at.as_micros(), r.id);
    let mut heads = BinaryHeap::with_capacity(walks.len());
    for (idx, walk) in walks.iter_mut().enumerate() {
        if walk.advance()? {
            if let Some(r) = walk.current() {
                let (ts, id) = order(r);
                heads.push(Reverse((ts, id, idx)));
            }
        }
    }
    while let Some(mut top) = heads.peek_mut() {
        let Reverse((_, _, idx)) = *top;
        let Some(walk) = walks.get_mut(idx) else {
            break;
        };
        if let Some(r) = walk.current() {
            f(r);
        }
        match walk.advance()?.then(|| walk.current()).flatten() {
            Some(r) => {
                let (ts, id) = order(r);
                *top = Reverse((ts, id, idx));
            }
            None => {
                PeekMut::pop(top);
            }
        }
    }
    Ok(())
}

impl PlaceWalk for PlaceStream {
    fn advance(&mut self) -> Result<bool> {
        self.pos += 1;
        if self.pos < self.len {
            return Ok(true);
        }
        let used = std::mem::take(&mut self.batch);
        if used.capacity() > 0 {
            let _ = self.back.try_send(used); // or dropped, if the thread has enough
        }
        match self.rx.recv() {
            Ok(Ok((batch, len))) => {
                (self.batch, self.len, self.pos) = (batch, len, 0);
                Ok(len > 0)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(stopped_early()),
        }
    }

    fn current(&self) -> Option<&StoredRecord> {
        self.batch.get(self.pos)
    }
}

/// Sets a scan's cancel flag when the scan is dropped (or fails).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// [`Engine::scan_each`] with each kind walked and decoded on a thread of
/// its own (into reused places, as on one thread); this thread merges the
/// kinds into (`produced_at`, `id`) order and calls `f`, so `f` sees the
/// same records in the same order.
fn scan_each_parallel(kinds: Vec<KindScan>, f: &mut dyn FnMut(&StoredRecord)) -> Result<()> {
    let guard = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let mut streams = Vec::with_capacity(kinds.len());
    for mut kind in kinds {
        let (tx, rx) = sync_channel::<Result<(Vec<StoredRecord>, usize)>>(4);
        let (back, back_rx) = sync_channel::<Vec<StoredRecord>>(8);
        kind.cancel = Some(Arc::clone(&guard.0));
        std::thread::Builder::new()
            .name("almanac-scan".into())
            .spawn(move || {
                let mut cap = 16;
                loop {
                    let mut batch = back_rx.try_recv().unwrap_or_default();
                    while batch.len() < cap {
                        batch.push(StoredRecord {
                            id: 0,
                            record: empty_record(),
                        });
                    }
                    let mut n = 0;
                    let mut done = false;
                    while n < cap {
                        match kind.next_reusing(&mut batch[n]) {
                            Ok(true) => n += 1,
                            Ok(false) => {
                                done = true;
                                break;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        }
                    }
                    if n > 0 && tx.send(Ok((batch, n))).is_err() {
                        return;
                    }
                    if done {
                        let _ = tx.send(Ok((Vec::new(), 0))); // the end
                        return;
                    }
                    cap = (cap * 4).min(SCAN_BATCH);
                }
            })
            .map_err(|e| StorageError::io(std::path::Path::new("<scan thread>"), e))?;
        streams.push(PlaceStream {
            rx,
            back,
            batch: Vec::new(),
            len: 0,
            pos: 0,
        });
    }
    let merged = merge_places(&mut streams, f);
    drop(guard);
    merged
}

/// Records a `history` call holds on the stack while it decodes; a longer
/// answer boxes each record.
const HISTORY_ON_STACK: usize = 32;

/// How many records ahead of the one it decodes `history` prefetches.
const PREFETCH_AHEAD: usize = 16;

/// Asks the CPU to bring `bytes` into its caches (a hint: no effect on
/// what is read, and none on targets without one).
#[inline]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch never faults and reads nothing the program
        // sees; the address is inside `bytes` anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast::<i8>(),
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Where a `history` call finds one of its records: a partition's records
/// table (by `produced_at` and id), or a copy of the partition in memory
/// (by the copy's index among those the call uses, and the position of
/// the record in it).
enum HistoryKey<'a> {
    Table(&'a RecordsTable, i64, u64),
    Held(usize, usize),
}

/// The records a `history` call has decoded, held until the answer's vector
/// is allocated last (see [`Engine::history`]): on the stack when they are
/// few, so holding them costs no allocation, else each in a box.
#[allow(
    clippy::large_enum_variant, // the array is meant to be on the stack
    clippy::vec_box // pointers keep the vector's block small (see above)
)]
enum Decoded {
    Stack(usize, [Option<StoredRecord>; HISTORY_ON_STACK]),
    Boxed(Vec<Box<StoredRecord>>),
}

impl Decoded {
    fn new(expected: usize) -> Self {
        if expected <= HISTORY_ON_STACK {
            Decoded::Stack(0, std::array::from_fn(|_| None))
        } else {
            Decoded::Boxed(Vec::with_capacity(expected))
        }
    }

    fn push(&mut self, record: StoredRecord) {
        match self {
            Decoded::Stack(n, slots) => match slots.get_mut(*n) {
                Some(slot) => {
                    *slot = Some(record);
                    *n += 1;
                }
                None => {
                    // Not reached: at most `expected` records are pushed.
                    let mut boxed: Vec<Box<StoredRecord>> = slots
                        .iter_mut()
                        .filter_map(|s| s.take().map(Box::new))
                        .collect();
                    boxed.push(Box::new(record));
                    *self = Decoded::Boxed(boxed);
                }
            },
            Decoded::Boxed(boxed) => boxed.push(Box::new(record)),
        }
    }

    fn into_vec(self) -> Vec<StoredRecord> {
        match self {
            Decoded::Stack(n, mut slots) => {
                let mut out = Vec::with_capacity(n);
                out.extend(slots.iter_mut().take(n).filter_map(Option::take));
                out
            }
            Decoded::Boxed(boxed) => {
                let mut out = Vec::with_capacity(boxed.len());
                out.extend(boxed.into_iter().map(|record| *record));
                out
            }
        }
    }
}

/// Whether a scan of these walks is worth a thread per kind.
fn worth_threads(kinds: &[KindScan]) -> bool {
    let whole_partitions = kinds
        .iter()
        .filter(|k| matches!(k.index, IndexChoice::Full))
        .map(|k| k.partitions.len())
        .sum::<usize>();
    (2..=PARALLEL_SCAN_MAX_KINDS).contains(&kinds.len())
        && whole_partitions >= PARALLEL_SCAN_MIN_PARTITIONS
        && super::available_cores() > 1
}

/// A scan on the caller's thread or on one thread per kind.
enum AnyScan {
    Serial(Merge<KindScan>),
    Parallel(Merge<KindStream>),
}

impl Iterator for AnyScan {
    type Item = Result<StoredRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            AnyScan::Serial(scan) => scan.next(),
            AnyScan::Parallel(scan) => scan.next(),
        }
    }
}

/// One kind's records in (`produced_at`, `id`) order, one at a time.
trait Walk {
    fn next_record(&mut self) -> Result<Option<StoredRecord>>;
}

impl Walk for KindScan {
    fn next_record(&mut self) -> Result<Option<StoredRecord>> {
        let mut slot = None;
        self.next_into(&mut slot)?;
        Ok(slot)
    }
}

/// A k-way merge of per-kind walks into (`produced_at`, `id`) order, on
/// this thread ([`KindScan`]) or fed by a thread per kind ([`KindStream`]).
struct Merge<W> {
    kinds: Vec<W>,
    heads: BinaryHeap<Reverse<(i64, u64, usize)>>,
    pending: Vec<Option<StoredRecord>>,
    started: bool,
    failed: bool,
    /// Stops the kinds' threads when the merge is dropped.
    _cancel: Option<CancelOnDrop>,
}

impl<W: Walk> Merge<W> {
    fn new(kinds: Vec<W>, cancel: Option<CancelOnDrop>) -> Self {
        let n = kinds.len();
        Merge {
            kinds,
            heads: BinaryHeap::with_capacity(n),
            pending: (0..n).map(|_| None).collect(),
            started: false,
            failed: false,
            _cancel: cancel,
        }
    }

    fn pull(&mut self, idx: usize) -> Result<()> {
        if let Some(r) = self.kinds[idx].next_record()? {
            self.heads
                .push(Reverse((r.record.produced_at.as_micros(), r.id, idx)));
            self.pending[idx] = Some(r);
        }
        Ok(())
    }
}

impl<W: Walk> Iterator for Merge<W> {
    type Item = Result<StoredRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if !self.started {
            self.started = true;
            for idx in 0..self.kinds.len() {
                if let Err(e) = self.pull(idx) {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        let Reverse((_, _, idx)) = self.heads.pop()?;
        let record = self.pending[idx].take()?;
        if let Err(e) = self.pull(idx) {
            self.failed = true;
            return Some(Err(e));
        }
        Some(Ok(record))
    }
}

impl Engine {
    fn begin_read(&self) -> Result<ReadTransaction> {
        self.db.begin_read()
    }

    /// The latest record of `kind` for `target`: one lookup in the shared
    /// snapshot's latest table.
    pub fn latest(&self, kind: &str, target: &MetadataTarget) -> Result<Option<StoredRecord>> {
        if kind.contains('\0') {
            return Ok(None); // no kind name holds one (see `latest_key`)
        }
        // The key built in one buffer, without the target name on its own:
        // the kind's key prefix, then the name.
        let (source, schema, table) = (&target.source_id, &target.schema, &target.table);
        let mut key =
            String::with_capacity(kind.len() + source.len() + schema.len() + table.len() + 3);
        push_latest_key(&mut key, kind, "");
        push_target_key(&mut key, source, schema, table);
        let cache = self.db.latest_cache();
        if let Some(value) = cache.get(&key) {
            return decode_latest(&value).map(Some);
        }
        let snapshot = self.snapshot()?;
        let Some(order) = snapshot.latest().get(key.as_str())? else {
            return Ok(None);
        };
        let (ts, id) = latest_order(order.value());
        let bytes = latest_record(&snapshot, &snapshot.partitions(kind)?, &key, ts, id)?;
        if cache.enabled() {
            // The cache keeps the record with its order, as `decode_latest` reads it.
            let mut value = Vec::with_capacity(16 + bytes.value().len());
            value.extend_from_slice(order.value());
            value.extend_from_slice(bytes.value());
            cache.fill(&key, snapshot.generation(), &value);
        }
        Ok(Some(StoredRecord {
            id,
            record: decode_record(bytes.value())?,
        }))
    }

    /// The records of `kind` for `target` produced within `range`, in
    /// (`produced_at`, `id`) order: the same answer as a [`Engine::scan`]
    /// of that kind, target and range, without its planning. The target's
    /// id is resolved once (by its key, `MetadataTarget::key`), then each
    /// partition of the kind overlapping the range (tables opened once per
    /// snapshot) gives the keys from its by-target index and the records
    /// from its records table, or both from the copy held in memory for
    /// often-read partitions (`history_cache`, used only at the snapshot's
    /// stamp; a copy may hold the keys alone). Each record's
    /// target is checked too: in a store upgraded from format version 3,
    /// two targets whose canonical names collided can share an id.
    pub fn history(
        &self,
        kind: &str,
        target: &MetadataTarget,
        range: TimeRange,
    ) -> Result<Vec<StoredRecord>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let snapshot = self.snapshot()?;
        let Some(target_id) = snapshot.target_id(&target.key())? else {
            return Ok(Vec::new());
        };
        let (from, until) = (range.from.as_micros(), range.until.as_micros());
        let partitions = snapshot.partitions(kind)?;
        // First the keys, partition by partition: keys come in (produced_at,
        // id) order within a partition, and partitions of a kind do not
        // overlap in time. Then the records, each decoded into a box of its
        // own, and last the answer, a vector of the right size (records are
        // large: growing it would copy them). The answer's block (hundreds
        // of bytes a record) is asked for after the decoding on purpose:
        // glibc's malloc consolidates its free lists whenever a block of
        // 1 KiB or more is requested, and the ~35 small allocations of each
        // record decoded after that took its slow path (callgrind,
        // profile_history at N = 50,000: 5.6% fewer instructions a call).
        let mut keys: Vec<HistoryKey> = Vec::with_capacity(HISTORY_ON_STACK);
        // The copies used by this call; `HistoryKey::Held` points into them.
        let mut copies: Vec<Arc<PartKeys>> = Vec::new();
        let mut built = false;
        for part in partitions.iter() {
            let (key, info) = (&part.entry.key, &part.entry.info);
            if key.bucket_start >= until {
                break; // partitions come in bucket order
            }
            if info.bucket_end <= from || info.min_ts >= until || info.max_ts < from {
                continue;
            }
            let tables = snapshot.part_tables(part)?;
            let (Some(records), Some(index)) = (&tables.records, &tables.by_target) else {
                continue;
            };
            // An often-read partition's keys (and records) are read from
            // its copy in memory (see `history_cache`), the others' from
            // its tables; a call copies at most one partition.
            let cache = &self.history_cache;
            let held = match cache.visit(&key.kind, key.bucket_start, info, !built) {
                Visit::Keys(held) => Some(held),
                Visit::Seek { build: true } => {
                    built = true;
                    match copy_partition(index, records, info.n_records, cache) {
                        Ok(copy) => {
                            cache.put(&key.kind, key.bucket_start, info, Arc::clone(&copy));
                            Some(copy)
                        }
                        Err(e) => {
                            cache.abandon(&key.kind, key.bucket_start, info);
                            return Err(e);
                        }
                    }
                }
                Visit::Seek { build: false } => None,
            };
            if let Some(held) = held {
                let positions = held.positions(target_id, from, until);
                if held.holds_records() {
                    let copy = copies.len();
                    keys.extend(positions.map(|at| HistoryKey::Held(copy, at)));
                    copies.push(held);
                } else {
                    let found = positions.filter_map(|at| held.key(at));
                    keys.extend(found.map(|&(_, ts, id)| HistoryKey::Table(records, ts, id)));
                }
                continue;
            }
            // A cursor rather than a range: one key to encode and one seek,
            // which is most of the cost where the target has no records.
            let mut cursor = index.lower_bound(Bound::Included((target_id, from, 0)))?;
            while let Some((key, _)) = cursor.next()? {
                let (key_target, ts, id) = key.value();
                if key_target != target_id || ts >= until {
                    break;
                }
                keys.push(HistoryKey::Table(records, ts, id));
            }
        }
        // The copies' records are scattered over tens of MB: before
        // decoding a record, ask for the cache lines of the one
        // `PREFETCH_AHEAD` places on, so the waits on memory overlap
        // instead of adding up (an answer of ~17 records is asked for whole
        // before its first is decoded).
        let prefetch_at = |at: usize| {
            if let Some(&HistoryKey::Held(copy, position)) = keys.get(at) {
                if let Some(bytes) = copies.get(copy).and_then(|held| held.record(position)) {
                    prefetch(bytes);
                }
            }
        };
        (0..PREFETCH_AHEAD).for_each(prefetch_at);
        let mut decoded = Decoded::new(keys.len());
        for (at, key) in keys.iter().enumerate() {
            prefetch_at(at + PREFETCH_AHEAD);
            let (id, record) = match *key {
                HistoryKey::Table(records, ts, id) => match records.get((ts, id))? {
                    Some(bytes) => (id, decode_record(bytes.value())?),
                    None => continue,
                },
                HistoryKey::Held(copy, position) => {
                    let Some(held) = copies.get(copy) else {
                        continue; // not reached: the index is of `copies`
                    };
                    match (held.key(position), held.record(position)) {
                        (Some(&(_, _, id)), Some(bytes)) => (id, decode_record(bytes)?),
                        _ => continue, // not reached: the positions are the copy's
                    }
                }
            };
            if record.target.source_id == target.source_id
                && record.target.schema == target.schema
                && record.target.table == target.table
            {
                decoded.push(StoredRecord { id, record });
            }
        }
        Ok(decoded.into_vec())
    }

    /// Latest records for the given kinds and targets (all when `None`), from the latest table.
    pub fn latest_records(
        &self,
        kinds: Option<&[String]>,
        targets: Option<&[String]>,
    ) -> Result<Vec<StoredRecord>> {
        let snapshot = self.snapshot()?;
        let table = snapshot.latest();
        let mut resolver = LatestResolver::new(&snapshot);
        let mut out = Vec::new();
        let target_set: Option<HashSet<&str>> =
            targets.map(|t| t.iter().map(String::as_str).collect());
        let keep = |key: &str| -> Result<bool> {
            let (_, target) = split_latest_key(key)?;
            Ok(target_set.as_ref().is_none_or(|s| s.contains(target)))
        };
        match kinds {
            None => {
                for entry in table.iter()? {
                    let (k, v) = entry?;
                    if keep(k.value())? {
                        out.push(resolver.resolve(k.value(), v.value())?);
                    }
                }
            }
            Some(kinds) => {
                for kind in kinds {
                    if kind.contains('\0') {
                        continue; // no such kind (see `latest_key`)
                    }
                    match (&target_set, targets) {
                        // Few targets: point lookups.
                        (Some(_), Some(names)) if names.len() <= 64 => {
                            for name in names {
                                let key = latest_key(kind, name);
                                if let Some(v) = table.get(key.as_str())? {
                                    out.push(resolver.resolve(&key, v.value())?);
                                }
                            }
                        }
                        _ => {
                            let (from, until) = latest_kind_range(kind);
                            for entry in table.range(from.as_str()..until.as_str())? {
                                let (k, v) = entry?;
                                if keep(k.value())? {
                                    out.push(resolver.resolve(k.value(), v.value())?);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every partition in the catalog, by kind then bucket.
    pub(crate) fn catalog(&self) -> Result<Vec<CatalogEntry>> {
        let txn = self.begin_read()?;
        catalog_of(&txn, None)
    }

    /// Records matching `request` in (`produced_at`, `id`) order, streamed
    /// from one read snapshot.
    pub fn scan(
        &self,
        request: &ScanRequest,
    ) -> Result<impl Iterator<Item = Result<StoredRecord>> + 'static> {
        let kinds = self.kind_scans(request)?;
        if self.parallel_scans && worth_threads(&kinds) {
            return Ok(AnyScan::Parallel(parallel_scan(kinds)?));
        }
        Ok(AnyScan::Serial(Merge::new(kinds, None)))
    }

    /// One scan per kind that `request` reads, on one read snapshot.
    fn kind_scans(&self, request: &ScanRequest) -> Result<Vec<KindScan>> {
        let txn = Arc::new(self.begin_read()?);
        let (per_kind, _, index) = self.plan_scan(&txn, request)?;
        let filter = Arc::new(RowFilter::new(request));
        Ok(per_kind
            .into_iter()
            .map(|partitions| KindScan {
                txn: Arc::clone(&txn),
                partitions: partitions.into_iter(),
                current: None,
                time: request.time,
                index: index.clone(),
                filter: Arc::clone(&filter),
                cancel: None,
                visited: 0,
            })
            .collect())
    }

    /// Calls `f` on each record [`Engine::scan`] would yield, in the same
    /// order. Each kind's records are decoded into one place, reusing its
    /// buffers, so a reader that does not keep records (`stats`) costs
    /// neither a record's allocations nor its moves.
    pub fn scan_each(&self, request: &ScanRequest, f: &mut dyn FnMut(&StoredRecord)) -> Result<()> {
        let kinds = self.kind_scans(request)?;
        if self.parallel_scans && worth_threads(&kinds) {
            return scan_each_parallel(kinds, f);
        }
        let mut walks: Vec<ReusedPlace> = kinds
            .into_iter()
            .map(|kind| ReusedPlace {
                kind,
                place: StoredRecord {
                    id: 0,
                    record: empty_record(),
                },
            })
            .collect();
        merge_places(&mut walks, f)
    }

    /// How [`Engine::scan`] would answer `request`.
    pub fn describe_scan(&self, request: &ScanRequest) -> Result<ScanDescription> {
        let txn = self.begin_read()?;
        let (per_kind, n_pruned, index) = self.plan_scan(&txn, request)?;
        let mut row_filters = Vec::new();
        let index_name = index.name();
        for (what, present) in [
            ("target", request.targets.is_some()),
            ("producer", request.producers.is_some()),
            ("run_id", request.run_ids.is_some()),
        ] {
            if present && index_name != Some(what) {
                row_filters.push(format!("{what} in the requested set"));
            }
        }
        for c in &request.paths {
            if index_name != Some(c.path.as_str()) {
                row_filters.push(format!("{} checked on each record", c.path));
            }
        }
        if request.time != TimeRange::ALL {
            row_filters.push("produced_at within the range (key range, no row cost)".to_owned());
        }
        Ok(ScanDescription {
            partitions: per_kind.iter().flatten().map(CatalogEntry::name).collect(),
            partitions_pruned: n_pruned,
            index: index_name.map(str::to_owned),
            row_filters,
        })
    }

    /// Partitions to read per kind (time-pruned), how many were pruned, and the index to use.
    fn plan_scan(
        &self,
        txn: &ReadTransaction,
        request: &ScanRequest,
    ) -> Result<(Vec<Vec<CatalogEntry>>, usize, IndexChoice)> {
        let entries = catalog_of(txn, request.kinds.as_deref())?;
        let mut per_kind: Vec<Vec<CatalogEntry>> = Vec::new();
        let mut n_pruned = 0;
        let time = request.time;
        // Partition summaries prune like an index would (not when a
        // scan is asked to use none): by the paths' ranges and by the
        // producers (a producer the dictionary lacks has no records).
        let summaries =
            if request.use_indexes && (!request.paths.is_empty() || request.producers.is_some()) {
                missing_table_is_empty(txn.open_table(SUMMARIES))?
            } else {
                None
            };
        let producer_ids = match (&summaries, &request.producers) {
            (Some(_), Some(names)) => {
                let table = txn.open_table(PRODUCERS)?;
                let mut ids = Vec::new();
                for name in names {
                    if let Some(v) = table.get(name.as_str())? {
                        ids.push(v.value());
                    }
                }
                Some(ids)
            }
            _ => None,
        };
        for entry in entries {
            let overlaps = entry.key.bucket_start < time.until.as_micros()
                && entry.info.bucket_end > time.from.as_micros()
                && entry.info.min_ts < time.until.as_micros()
                && entry.info.max_ts >= time.from.as_micros();
            if time.is_empty() || !overlaps {
                n_pruned += 1;
                continue;
            }
            if let Some(table) = &summaries {
                if let Some(summary) =
                    table.get((entry.key.kind.as_str(), entry.key.bucket_start))?
                {
                    let summary = PartSummary::decode(summary.value())?;
                    let excluded = producer_ids
                        .as_ref()
                        .is_some_and(|ids| !summary.may_have_producer(ids))
                        || request.paths.iter().any(|c| {
                            summary.get(&c.path).is_some_and(|s| {
                                let range =
                                    s.range.as_ref().map(|(a, b)| (a.as_slice(), b.as_slice()));
                                !summary::may_match(c, range)
                            })
                        });
                    if excluded {
                        n_pruned += 1;
                        continue;
                    }
                }
            }
            match per_kind.last_mut() {
                Some(group) if group[0].key.kind == entry.key.kind => group.push(entry),
                _ => per_kind.push(vec![entry]),
            }
        }
        let eq_path = request
            .paths
            .iter()
            .find(|c| matches!(c.matcher, PathMatch::AnyOf(_)));
        // A lower bound (window_end > T, values above X) is usually the
        // selective side of a range over time-like values.
        let range_path = request
            .paths
            .iter()
            .find(|c| matches!(c.matcher, PathMatch::Range { lower: Some(_), .. }))
            .or(request.paths.first());
        // Only paths some partition of the scan actually indexes.
        let indexed = |c: &&PathConstraint| {
            per_kind.iter().flatten().any(|entry| {
                let name = path_table_name(&entry.key, &c.path);
                txn.open_table(path_index_def(&name)).is_ok()
            })
        };
        let eq_path = eq_path.filter(indexed);
        let range_path = range_path.filter(indexed);
        let many_targets = request
            .targets
            .as_ref()
            .is_some_and(|t| t.len() > FEW_TARGETS);
        let index = if !request.use_indexes {
            IndexChoice::Full
        } else if let Some(runs) = &request.run_ids {
            IndexChoice::Run(runs.clone())
        } else if let (true, Some(c)) = (many_targets, eq_path) {
            // A label matcher that names many targets (`source="x"`) reads
            // one index range per target; an equality on a path is one range.
            IndexChoice::Path(c.clone())
        } else if let Some(targets) = &request.targets {
            let table = txn.open_table(TARGETS)?;
            let mut ids = Vec::new();
            for name in targets {
                if let Some(v) = table.get(name.as_str())? {
                    ids.push(v.value().0);
                }
            }
            IndexChoice::Target(ids)
        } else if let Some(c) = eq_path {
            IndexChoice::Path(c.clone())
        } else if let Some(c) = range_path {
            IndexChoice::Path(c.clone())
        } else {
            IndexChoice::Full
        };
        Ok((per_kind, n_pruned, index))
    }

    /// Every target that has had records.
    pub fn targets(&self) -> Result<Vec<TargetInfo>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(TARGETS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, value) = entry?;
            let (_, source_id, schema, table) = value.value();
            out.push(TargetInfo {
                source_id: source_id.to_owned(),
                schema: schema.to_owned(),
                table: table.to_owned(),
                name: canonical_name(source_id, schema, table),
            });
        }
        Ok(out)
    }

    /// Every producer id that has had records.
    pub fn producer_ids(&self) -> Result<Vec<String>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(PRODUCERS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            out.push(entry?.0.value().to_owned());
        }
        Ok(out)
    }

    /// Records with `id >= since_id`, in id order, read from the partitions
    /// whose id range reaches it (used to repair the log after a crash).
    pub fn records_since(&self, since_id: u64) -> Result<Vec<StoredRecord>> {
        let txn = self.begin_read()?;
        let mut out = Vec::new();
        for entry in catalog_of(&txn, None)? {
            if entry.info.max_id < since_id {
                continue;
            }
            let name = part_table_name(&entry.key, PartTable::Records);
            let Some(table) = missing_table_is_empty(txn.open_table(records_def(&name)))? else {
                continue;
            };
            for item in table.iter()? {
                let (key, value) = item?;
                let (_, id) = key.value();
                if id >= since_id {
                    out.push(StoredRecord {
                        id,
                        record: decode_record(value.value())?,
                    });
                }
            }
        }
        out.sort_by_key(|r| r.id);
        Ok(out)
    }
}

pub(crate) fn catalog_of(
    txn: &ReadTransaction,
    kinds: Option<&[String]>,
) -> Result<Vec<CatalogEntry>> {
    let table = txn.open_table(PARTITIONS)?;
    let mut out = Vec::new();
    let mut push = |kind: &str, start: i64, value: &[u8]| -> Result<()> {
        out.push(CatalogEntry {
            key: PartitionKey {
                kind: kind.to_owned(),
                bucket_start: start,
            },
            info: PartitionInfo::decode(value)?,
        });
        Ok(())
    };
    match kinds {
        None => {
            for entry in table.iter()? {
                let (k, v) = entry?;
                let (kind, start) = k.value();
                push(kind, start, v.value())?;
            }
        }
        Some(kinds) => {
            let mut sorted: Vec<&String> = kinds.iter().collect();
            sorted.sort();
            sorted.dedup();
            for kind in sorted {
                for entry in table.range((kind.as_str(), i64::MIN)..=(kind.as_str(), i64::MAX))? {
                    let (k, v) = entry?;
                    let (kind, start) = k.value();
                    push(kind, start, v.value())?;
                }
            }
        }
    }
    Ok(out)
}

/// The record a `latest` entry (`key`, of the kind whose partitions are
/// `partitions`) points at: (`produced_at`, `id`) in the kind's partition
/// of `produced_at`. A missing record is corruption: expiry removes the
/// entries into a partition it drops in the same transaction, and nothing
/// else removes records.
fn latest_record(
    snapshot: &Snapshot,
    partitions: &[SnapshotPartition],
    key: &str,
    ts: i64,
    id: u64,
) -> Result<RecordBytes> {
    snapshot.record(partitions, ts, id)?.ok_or_else(|| {
        StorageError::Corrupt(format!(
            "the latest entry {key:?} points at record {id} (produced_at {ts} µs), which is not stored"
        ))
    })
}

/// Finds the records of `latest` entries read one after another: entries
/// come in key order, so a kind's come together, and its partitions are
/// looked up once per run of them rather than once per entry.
struct LatestResolver<'s> {
    snapshot: &'s Snapshot,
    kind: String,
    partitions: Arc<[SnapshotPartition]>,
}

impl<'s> LatestResolver<'s> {
    fn new(snapshot: &'s Snapshot) -> Self {
        LatestResolver {
            snapshot,
            kind: String::new(),
            partitions: Arc::new([]),
        }
    }

    /// The record of the entry `key` → `value`.
    fn resolve(&mut self, key: &str, value: &[u8]) -> Result<StoredRecord> {
        let (kind, _) = split_latest_key(key)?;
        if kind != self.kind {
            self.partitions = self.snapshot.partitions(kind)?;
            kind.clone_into(&mut self.kind);
        }
        let (ts, id) = latest_order(value);
        let bytes = latest_record(self.snapshot, &self.partitions, key, ts, id)?;
        Ok(StoredRecord {
            id,
            record: decode_record(bytes.value())?,
        })
    }
}

/// A latest cache value: `produced_at ‖ id ‖ encoded record`.
fn decode_latest(value: &[u8]) -> Result<StoredRecord> {
    let (_, id) = latest_order(value);
    let bytes = value
        .get(16..)
        .ok_or_else(|| StorageError::Corrupt("latest entry too short".into()))?;
    Ok(StoredRecord {
        id,
        record: decode_record(bytes)?,
    })
}

/// A partition's copy for `history` (see `history_cache`): every key of
/// its by-target index, in order, and their records' encoded bytes where
/// those fit the cache's budget for them (`HistoryCache::records_budget`).
fn copy_partition(
    index: &ByTargetTable,
    records: &RecordsTable,
    n_records: u64,
    cache: &HistoryCache,
) -> Result<Arc<PartKeys>> {
    let mut all = Vec::with_capacity(usize::try_from(n_records).unwrap_or(0));
    for entry in index.iter()? {
        all.push(entry?.0.value());
    }
    let mut copy = PartKeys::new(all);
    let budget = cache.records_budget(&copy);
    copy.copy_records(budget, |&(_, ts, id), bytes| {
        let found = records.get((ts, id))?;
        if let Some(record) = &found {
            bytes.extend_from_slice(record.value());
        }
        Ok::<bool, StorageError>(found.is_some())
    })?;
    Ok(Arc::new(copy))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64) -> StoredRecord {
        StoredRecord {
            id,
            record: empty_record(),
        }
    }

    /// A scan thread's stream ends at its end marker; a thread that went
    /// away without one (a panic) is an error, not a short answer.
    #[test]
    fn a_scan_thread_gone_without_its_end_is_an_error() {
        let (tx, rx) = sync_channel(4);
        let mut stream = KindStream {
            rx,
            batch: Vec::new().into_iter(),
        };
        tx.send(Ok(vec![record(1), record(2)])).unwrap();
        tx.send(Ok(Vec::new())).unwrap();
        let ids: Vec<u64> = std::iter::from_fn(|| stream.next_record().unwrap())
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, [1, 2]);

        let (tx, rx) = sync_channel(4);
        let mut stream = KindStream {
            rx,
            batch: Vec::new().into_iter(),
        };
        tx.send(Ok(vec![record(1)])).unwrap();
        drop(tx);
        assert_eq!(stream.next_record().unwrap().map(|r| r.id), Some(1));
        assert!(matches!(
            stream.next_record(),
            Err(StorageError::ScanThread(_))
        ));

        let (tx, rx) = sync_channel(4);
        let (back, _back_rx) = sync_channel(4);
        let mut places = PlaceStream {
            rx,
            back,
            batch: Vec::new(),
            len: 0,
            pos: 0,
        };
        tx.send(Ok((vec![record(7)], 1))).unwrap();
        assert!(places.advance().unwrap());
        assert_eq!(places.current().map(|r| r.id), Some(7));
        drop(tx);
        assert!(matches!(places.advance(), Err(StorageError::ScanThread(_))));
    }

    /// `history`'s holder gives back what was pushed, in order, on the
    /// stack, boxed, and when more come than it was told to expect.
    #[test]
    fn decoded_records_come_back_in_order_however_they_were_held() {
        for (expected, pushed) in [
            (0, 0),
            (3, 3),
            (3, 1),
            (HISTORY_ON_STACK, HISTORY_ON_STACK),
            (HISTORY_ON_STACK, HISTORY_ON_STACK + 5),
            (HISTORY_ON_STACK + 1, HISTORY_ON_STACK + 1),
            (100, 70),
        ] {
            let mut decoded = Decoded::new(expected);
            for id in 0..pushed as u64 {
                decoded.push(record(id));
            }
            let ids: Vec<u64> = decoded.into_vec().iter().map(|r| r.id).collect();
            assert_eq!(
                ids,
                (0..pushed as u64).collect::<Vec<_>>(),
                "{expected}, {pushed}"
            );
        }
    }
}
