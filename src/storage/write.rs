//! The write path: one redb write transaction per group of batches, and
//! retention by dropping whole partitions.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashSet};

/// The write path's maps are keyed by names and ids it hashes for every
/// record; foldhash (randomly seeded per map) costs a fraction of SipHash.
type HashMap<K, V> = foldhash::HashMap<K, V>;

use redb::{Durability, ReadableTable, Table, TableHandle, WriteTransaction};

use super::codec::encode_record;
use super::latest_cache::LatestChange;
use super::partition::{bucket_end, bucket_start, partition_name, PartitionKey};
use super::path_index::{keys_at, push_keys_at};
use super::read::PartitionInfo;
use super::summary::{self, KeyRange, NewRanges, PartSummary};
use super::{
    by_dict_id_def, by_run_def, part_prefix, part_table_name, path_index_def, path_table_name,
    records_def, Engine, PartTable, Result, LATEST, META, META_NEXT_ID, META_NEXT_PRODUCER_ID,
    META_NEXT_PURGE, META_NEXT_TARGET_ID, PARTITIONS, PRODUCERS, PURGE_PREFIX, SUMMARIES, TARGETS,
};
use super::{latest_key, latest_kind_range, push_latest_key};
use crate::kinds::{Bucket, KindSpec, Retention};
use crate::model::{push_target_key, MetadataRecord, Timestamp};

/// A validated record with everything the writer needs computed up front,
/// so that encoding, index keys and JSON rendering run on the caller's thread,
/// not the writer's. It holds only what the write transaction reads, not
/// the record itself (which [`decode_record`](super::decode_record) can
/// rebuild from [`PreparedRecord::encoded`]).
///
/// Its parts live in two buffers, `bytes` (the encoding, then the
/// path-index entries) and `text` (the canonical JSON, then the names the
/// writer looks up): two allocations a record instead of one per part. A
/// `bulk_store` of 10,000 records used to make ~200,000 small allocations
/// here, each freed again by its caller.
#[derive(Clone, Debug)]
pub struct PreparedRecord {
    /// The encoding (`..encoded_len`), then one entry per path-index key
    /// (`..summaries_at`): `u32` LE start and end of the path's name in
    /// `text`, `u32` LE key length, the key's bytes; then one entry per
    /// summarized path: `u32` LE start and end of its name in `text`, `u32`
    /// LE lengths of the smallest and largest key there (0 and 0 when the
    /// record has none), those keys' bytes.
    bytes: Vec<u8>,
    encoded_len: usize,
    summaries_at: usize,
    /// The canonical JSON, then the kind, source, schema, table, target
    /// key, producer id, run id and the indexed and summarized paths'
    /// names; `ends[i]` is
    /// where part `i` of the first eight ends.
    text: String,
    ends: [usize; 8],
    has_run_id: bool,
    /// The kind's bucket (for the catalog).
    pub bucket: Bucket,
    /// The first instant of the record's bucket: with the kind, its partition.
    pub bucket_start: i64,
    /// `produced_at` in microseconds.
    pub produced_at: i64,
}

/// The parts of [`PreparedRecord::text`], in order.
const JSON: usize = 0;
const KIND: usize = 1;
const SOURCE: usize = 2;
const SCHEMA: usize = 3;
const TABLE: usize = 4;
const TARGET_KEY: usize = 5;
const PRODUCER: usize = 6;
const RUN: usize = 7;

impl PreparedRecord {
    /// Encodes and renders a record for a kind with the given bucket,
    /// indexed and summarized paths. Object keys come out sorted in both the
    /// encoding and the JSON, the store's canonical form, without copying
    /// the record.
    pub fn new(
        record: &MetadataRecord,
        bucket: Bucket,
        indexed_paths: &[String],
        summarized_paths: &[String],
    ) -> Self {
        let mut bytes = encode_record(record);
        let encoded_len = bytes.len();
        let t = &record.target;
        let names = record.kind.len()
            + 2 * (t.source_id.len() + t.schema.len() + t.table.len())
            + record.producer_id.len()
            + record.context.run_id.as_ref().map_or(0, String::len)
            + indexed_paths.iter().map(String::len).sum::<usize>()
            + summarized_paths.iter().map(String::len).sum::<usize>()
            + 16;
        // The JSON is about as long as the encoding plus its quotes, keys'
        // punctuation and spelled-out times: sized so it rarely grows.
        let mut json = Vec::with_capacity(encoded_len + encoded_len / 2 + 128 + names);
        // Writing a record into a vector cannot fail (its numbers are
        // finite, its keys strings); the JSON is left empty if it did.
        if serde_json::to_writer(&mut json, &crate::model::SortedJson(record)).is_err() {
            json.clear();
        }
        // serde_json writes UTF-8 only.
        let mut text = String::from_utf8(json).unwrap_or_default();
        let mut ends = [0; 8];
        ends[JSON] = text.len();
        for (part, name) in [
            (KIND, record.kind.as_str()),
            (SOURCE, t.source_id.as_str()),
            (SCHEMA, t.schema.as_str()),
            (TABLE, t.table.as_str()),
        ] {
            text.push_str(name);
            ends[part] = text.len();
        }
        push_target_key(&mut text, &t.source_id, &t.schema, &t.table);
        ends[TARGET_KEY] = text.len();
        text.push_str(&record.producer_id);
        ends[PRODUCER] = text.len();
        if let Some(run_id) = &record.context.run_id {
            text.push_str(run_id);
        }
        ends[RUN] = text.len();
        // Offsets fit in `u32`: `prepare_with` refuses records over 1 MiB of
        // JSON, and a longer one's wrapped offsets only misplace its keys.
        let mut key_buf = Vec::new();
        // Room for one key a path (header and an instant's 9 bytes).
        bytes.reserve(indexed_paths.len() * 21);
        for path in indexed_paths {
            let start = text.len();
            text.push_str(path);
            let end = text.len();
            push_keys_at(record, path, &mut key_buf, |key| {
                for n in [start, end, key.len()] {
                    bytes.extend_from_slice(&(n as u32).to_le_bytes());
                }
                bytes.extend_from_slice(key);
            });
        }
        let summaries_at = bytes.len();
        let (mut min, mut max) = (Vec::new(), Vec::new());
        for path in summarized_paths {
            let start = text.len();
            text.push_str(path);
            let end = text.len();
            min.clear();
            max.clear();
            push_keys_at(record, path, &mut key_buf, |key| {
                if min.is_empty() || key < min.as_slice() {
                    min.clear();
                    min.extend_from_slice(key);
                }
                if max.is_empty() || key > max.as_slice() {
                    max.clear();
                    max.extend_from_slice(key);
                }
            });
            for n in [start, end, min.len(), max.len()] {
                bytes.extend_from_slice(&(n as u32).to_le_bytes());
            }
            bytes.extend_from_slice(&min);
            bytes.extend_from_slice(&max);
        }
        PreparedRecord {
            bytes,
            encoded_len,
            summaries_at,
            text,
            ends,
            has_run_id: record.context.run_id.is_some(),
            bucket,
            bucket_start: bucket_start(bucket, record.produced_at),
            produced_at: record.produced_at.as_micros(),
        }
    }

    fn part(&self, part: usize) -> &str {
        let start = if part == 0 { 0 } else { self.ends[part - 1] };
        self.text.get(start..self.ends[part]).unwrap_or_default()
    }

    /// The record's encoding (see `docs/format.md`), object keys sorted.
    pub fn encoded(&self) -> &[u8] {
        &self.bytes[..self.encoded_len]
    }

    /// The canonical JSON of the record (keys sorted): a log line is
    /// `{"id":N,` followed by this without its opening brace.
    pub fn json(&self) -> &str {
        self.part(JSON)
    }

    /// The kind.
    pub fn kind(&self) -> &str {
        self.part(KIND)
    }

    /// The partition it belongs to (its kind and bucket start).
    pub fn partition(&self) -> PartitionKey {
        PartitionKey {
            kind: self.kind().to_owned(),
            bucket_start: self.bucket_start,
        }
    }

    /// The target's key (`MetadataTarget::key`: its canonical name unless
    /// that is ambiguous), which names it in the target dictionary and the
    /// `latest` table.
    pub fn target_key(&self) -> &str {
        self.part(TARGET_KEY)
    }

    /// `(source_id, schema, table)`, for the target dictionary.
    pub fn target_parts(&self) -> (&str, &str, &str) {
        (self.part(SOURCE), self.part(SCHEMA), self.part(TABLE))
    }

    /// The producer id.
    pub fn producer_id(&self) -> &str {
        self.part(PRODUCER)
    }

    /// `context.run_id`.
    pub fn run_id(&self) -> Option<&str> {
        self.has_run_id.then(|| self.part(RUN))
    }

    /// The index keys at the kind's indexed paths: `(path, key)` for each
    /// scalar there (see `path_index`), paths in the kind's order.
    pub fn path_keys(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        let mut rest = &self.bytes[self.encoded_len..self.summaries_at];
        std::iter::from_fn(move || {
            let (start, end, len) = (word(&mut rest)?, word(&mut rest)?, word(&mut rest)?);
            let (key, tail) = rest.split_at_checked(len)?;
            rest = tail;
            Some((self.text.get(start..end)?, key))
        })
    }

    /// The kind's summarized paths, in the kind's order, each with the
    /// smallest and largest of the record's keys there (`None` when it has
    /// none): what the partition's summary must cover.
    pub fn summaries(&self) -> impl Iterator<Item = (&str, Option<KeyRange<'_>>)> + '_ {
        let mut rest = &self.bytes[self.summaries_at..];
        std::iter::from_fn(move || {
            let (start, end) = (word(&mut rest)?, word(&mut rest)?);
            let (min_len, max_len) = (word(&mut rest)?, word(&mut rest)?);
            let (min, tail) = rest.split_at_checked(min_len)?;
            let (max, tail) = tail.split_at_checked(max_len)?;
            rest = tail;
            let range = (min_len > 0).then_some((min, max));
            Some((self.text.get(start..end)?, range))
        })
    }
}

/// Reads one `u32` LE off the front of `rest`.
fn word(rest: &mut &[u8]) -> Option<usize> {
    let (n, tail) = rest.split_first_chunk::<4>()?;
    *rest = tail;
    Some(u32::from_le_bytes(*n) as usize)
}

/// What happened to one record of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored under a new id.
    Stored(u64),
    /// Identical content was already stored under this id; nothing was written.
    Duplicate(u64),
}

impl WriteOutcome {
    /// The record's id, new or existing.
    pub fn id(self) -> u64 {
        match self {
            WriteOutcome::Stored(id) | WriteOutcome::Duplicate(id) => id,
        }
    }
}

/// The partition catalog, open for writing.
type CatalogTable<'txn> = Table<'txn, (&'static str, i64), &'static [u8]>;

/// A record new in this transaction: its id and encoded bytes.
type NewRecord<'g> = (u64, &'g [u8]);

/// This transaction's new records at one (target, instant): nearly always
/// one, kept without a vector of its own.
enum NewHere<'g> {
    One(NewRecord<'g>),
    Many(Vec<NewRecord<'g>>),
}

/// A path index table: `(value key, produced_at, id) -> ()`.
type PathIndexTable<'txn> = Table<'txn, (&'static [u8], i64, u64), ()>;

/// The open tables of one partition inside a write transaction, and the
/// secondary index entries collected for it (`'g`: the records written).
struct PartTables<'txn, 'g> {
    records: Table<'txn, (i64, u64), &'static [u8]>,
    by_target: Table<'txn, (u64, i64, u64), ()>,
    by_run: Table<'txn, (&'static str, i64, u64), ()>,
    paths: HashMap<String, PathIndexTable<'txn>>,
    info: PartitionInfo,
    /// Its kind's number in the transaction (see `write_locked`).
    kind_no: usize,
    /// The producer dictionary ids of this transaction's new records
    /// here, for the partition's summary (a partition has few).
    new_producers: Vec<u64>,
    /// The records, `((produced_at, id), encoded)`, inserted in key order
    /// with the indexes (see [`insert_sorted`]).
    pending_records: Vec<((i64, u64), &'g [u8])>,
    pending_run: Vec<(&'g str, i64, u64)>,
    pending_paths: Vec<(&'g str, &'g [u8], i64, u64)>,
    /// By-target entries, also inserted in key order at the end; until
    /// then `new_here` answers duplicate checks against this transaction's
    /// own records: `(target_id, produced_at)` → `(id, encoded bytes)`.
    pending_target: Vec<(u64, i64, u64)>,
    new_here: HashMap<(u64, i64), NewHere<'g>>,
    /// `[min_ts, max_ts]` of the records committed before this transaction
    /// (from the catalog), `None` when there are none: no committed record
    /// outside it can be a duplicate, so `find_duplicate` skips the index.
    committed_ts: Option<(i64, i64)>,
    /// The summarized paths of this transaction's new records here and
    /// their keys' ranges (see `summary`), once `summarized` is set.
    new_ranges: NewRanges<'g>,
    summarized: bool,
}

impl<'txn, 'g> PartTables<'txn, 'g> {
    fn open(
        txn: &'txn WriteTransaction,
        catalog: &CatalogTable<'_>,
        key: &PartitionKey,
        bucket: Bucket,
        kind_no: usize,
    ) -> Result<Self> {
        let name = |t| part_table_name(key, t);
        let info = match catalog.get((key.kind.as_str(), key.bucket_start))? {
            Some(bytes) => PartitionInfo::decode(bytes.value())?,
            None => PartitionInfo::empty(bucket, bucket_end(bucket, key.bucket_start)),
        };
        let committed_ts = (info.n_records > 0).then_some((info.min_ts, info.max_ts));
        Ok(PartTables {
            committed_ts,
            records: txn.open_table(records_def(&name(PartTable::Records)))?,
            by_target: txn.open_table(by_dict_id_def(&name(PartTable::ByTarget)))?,
            by_run: txn.open_table(by_run_def(&name(PartTable::ByRun)))?,
            paths: HashMap::default(),
            info,
            kind_no,
            new_producers: Vec::new(),
            pending_records: Vec::new(),
            pending_run: Vec::new(),
            pending_paths: Vec::new(),
            pending_target: Vec::new(),
            new_here: HashMap::default(),
            new_ranges: None,
            summarized: false,
        })
    }

    /// Collects the run and path index entries of one record, and its
    /// producer and summarized paths for the partition's summary.
    fn add_index_entries(&mut self, prepared: &'g PreparedRecord, producer_id: u64, id: u64) {
        let ts = prepared.produced_at;
        if !self.new_producers.contains(&producer_id) {
            self.new_producers.push(producer_id);
        }
        if let Some(run_id) = prepared.run_id() {
            self.pending_run.push((run_id, ts, id));
        }
        for (path, key) in prepared.path_keys() {
            self.pending_paths.push((path, key, ts, id));
        }
        summary::add_record(
            &mut self.new_ranges,
            &mut self.summarized,
            prepared.summaries(),
        );
    }

    /// Writes the partition's catalog entry and, when this transaction
    /// added records, its summary (see `summary`).
    fn write_catalog(
        &mut self,
        key: &PartitionKey,
        catalog: &mut CatalogTable<'_>,
        summaries: &mut Table<'_, (&'static str, i64), &'static [u8]>,
    ) -> Result<()> {
        if self.info.n_records == 0 {
            return Ok(());
        }
        let id = (key.kind.as_str(), key.bucket_start);
        catalog.insert(id, self.info.encode().as_slice())?;
        if !self.summarized {
            return Ok(());
        }
        let old = summaries
            .get(id)?
            .map(|v| PartSummary::decode(v.value()))
            .transpose()?;
        self.new_producers.sort_unstable();
        let next = PartSummary::next(
            old.as_ref(),
            self.committed_ts.is_none(),
            &self.new_ranges,
            &self.new_producers,
        );
        if old.as_ref() != Some(&next) {
            summaries.insert(id, next.encode().as_slice())?;
        }
        Ok(())
    }

    /// Inserts the collected records and index entries, each table's in
    /// key order (see [`insert_sorted`]).
    fn flush_indexes(&mut self, txn: &'txn WriteTransaction, key: &PartitionKey) -> Result<()> {
        self.pending_records.sort_unstable_by_key(|(k, _)| *k);
        insert_sorted(&mut self.records, self.pending_records.drain(..))?;
        self.pending_target.sort_unstable();
        insert_sorted(
            &mut self.by_target,
            self.pending_target.drain(..).map(|e| (e, ())),
        )?;
        self.pending_run.sort_unstable();
        insert_sorted(
            &mut self.by_run,
            self.pending_run.drain(..).map(|e| (e, ())),
        )?;
        self.pending_paths.sort_unstable();
        // Sorted by path first: one table lookup per path.
        for run in self.pending_paths.chunk_by(|a, b| a.0 == b.0) {
            let path = run[0].0;
            if !self.paths.contains_key(path) {
                let table = txn.open_table(path_index_def(&path_table_name(key, path)))?;
                self.paths.insert(path.to_owned(), table);
            }
            if let Some(table) = self.paths.get_mut(path) {
                insert_sorted(
                    table,
                    run.iter()
                        .map(|&(_, value_key, ts, id)| ((value_key, ts, id), ())),
                )?;
            }
        }
        self.pending_paths.clear();
        Ok(())
    }

    /// Records a new record of this transaction for `find_duplicate` and
    /// queues its by-target entry.
    fn add_new(&mut self, target_id: u64, ts: i64, id: u64, encoded: &'g [u8]) {
        self.pending_target.push((target_id, ts, id));
        let new = (id, encoded);
        match self.new_here.entry((target_id, ts)) {
            Entry::Vacant(entry) => {
                entry.insert(NewHere::One(new));
            }
            Entry::Occupied(mut entry) => {
                let here = entry.get_mut();
                match here {
                    NewHere::One(first) => *here = NewHere::Many(vec![*first, new]),
                    NewHere::Many(all) => all.push(new),
                }
            }
        }
    }

    /// The id of a stored record with exactly these bytes, if any.
    ///
    /// Identical content means the same kind, target and `produced_at`, so
    /// the candidates are this transaction's new records at that instant
    /// and the committed target index entries there (almost always none);
    /// each is confirmed by comparing the bytes.
    fn find_duplicate(&self, target_id: u64, ts: i64, encoded: &[u8]) -> Result<Option<u64>> {
        if let Some(here) = self.new_here.get(&(target_id, ts)) {
            let here = match here {
                NewHere::One(one) => std::slice::from_ref(one),
                NewHere::Many(all) => all.as_slice(),
            };
            if let Some((id, _)) = here.iter().find(|(_, bytes)| *bytes == encoded) {
                return Ok(Some(*id));
            }
        }
        if self
            .committed_ts
            .is_none_or(|(min, max)| ts < min || ts > max)
        {
            return Ok(None);
        }
        for entry in self
            .by_target
            .range((target_id, ts, 0u64)..=(target_id, ts, u64::MAX))?
        {
            let (_, _, id) = entry?.0.value();
            if let Some(bytes) = self.records.get((ts, id))? {
                if bytes.value() == encoded {
                    return Ok(Some(id));
                }
            }
        }
        Ok(None)
    }
}

/// Inserts `entries`, sorted ascending and none of them in `table` yet.
///
/// The entries above the table's greatest key, which are all of them for a
/// new partition and the records and time-keyed indexes of data newer than
/// the partition's, go through one cursor at the end of the table: redb
/// buffers them and splices them in as whole leaves, one update of the
/// path above per MiB, instead of a descent from the root and a copy of a
/// leaf per entry. The others are inserted one by one. An entry the cursor
/// refuses (should redb order keys differently from the sort) is inserted
/// plainly, so the result never depends on the order.
fn insert_sorted<'e, K, V>(
    table: &mut Table<'_, K, V>,
    entries: impl ExactSizeIterator<Item = (K::SelfType<'e>, V::SelfType<'e>)>,
) -> Result<()>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    if entries.len() == 0 {
        return Ok(());
    }
    let last: Option<Vec<u8>> = table
        .last()?
        .map(|(key, _)| K::as_bytes(&key.value()).as_ref().to_vec());
    let mut entries = entries.peekable();
    // Entries at or below the greatest key: one by one.
    if let Some(last) = &last {
        while let Some((key, _)) = entries.peek() {
            if K::compare(K::as_bytes(key).as_ref(), last) == std::cmp::Ordering::Greater {
                break;
            }
            if let Some((key, value)) = entries.next() {
                table.insert(key, value)?;
            }
        }
    }
    if entries.peek().is_none() {
        return Ok(());
    }
    let mut refused = None;
    {
        let mut cursor = table.upper_bound_mut(std::ops::Bound::<K::SelfType<'_>>::Unbounded)?;
        for (key, value) in entries.by_ref() {
            match cursor.insert_before(&key, &value) {
                Ok(()) => {}
                Err(redb::CursorError::UnorderedKey) => {
                    refused = Some((key, value));
                    break;
                }
                Err(e) => return Err(redb::Error::from(e).into()),
            }
        }
        cursor.close()?;
    }
    for (key, value) in refused.into_iter().chain(entries) {
        table.insert(key, value)?;
    }
    Ok(())
}

/// Facts the write path would otherwise read back from redb for every
/// record: dictionary ids and the (`produced_at`, `id`) of each latest
/// entry. Only write transactions touch it, under its lock. Entries are
/// added as a transaction writes them; if the transaction then fails, the
/// whole cache is cleared, so it never holds what was not committed.
///
/// A target's latest entries sit beside its id, so one entry by its
/// target's name serves both (a target has a handful of kinds, searched
/// in order).
#[derive(Debug, Default)]
pub(crate) struct WriteCache {
    targets: HashMap<String, TargetFacts>,
    producers: HashMap<String, u64>,
}

/// What [`WriteCache`] knows of one target.
#[derive(Debug)]
struct TargetFacts {
    /// Its dictionary id.
    id: u64,
    /// kind → (produced_at, id) of the `latest` entry, for the kinds
    /// looked up so far (absent: not looked up; a kind with no entry is
    /// not cached).
    latest: Vec<(Box<str>, (i64, u64))>,
}

impl TargetFacts {
    fn latest_mut(&mut self, kind: &str) -> Option<&mut (i64, u64)> {
        self.latest
            .iter_mut()
            .find(|(k, _)| &**k == kind)
            .map(|(_, order)| order)
    }

    fn set_latest(&mut self, kind: &str, order: (i64, u64)) {
        match self.latest_mut(kind) {
            Some(slot) => *slot = order,
            None => self.latest.push((kind.into(), order)),
        }
    }
}

impl WriteCache {
    fn clear(&mut self) {
        *self = WriteCache::default();
    }

    /// Forgets every latest entry of `kind` (retention removed some).
    fn forget_latest(&mut self, kind: &str) {
        for facts in self.targets.values_mut() {
            facts.latest.retain(|(k, _)| &**k != kind);
        }
    }
}

/// Looks up or assigns a dictionary id (cache, then the table, then a new id).
fn dict_id(
    table: &mut Table<'_, &'static str, u64>,
    meta: &mut Table<'_, &'static str, u64>,
    counter: &'static str,
    key: &str,
    cache: &mut HashMap<String, u64>,
) -> Result<u64> {
    if let Some(id) = cache.get(key) {
        return Ok(*id);
    }
    let existing = table.get(key)?.map(|v| v.value());
    let id = match existing {
        Some(id) => id,
        None => {
            let id = meta.get(counter)?.map_or(1, |v| v.value());
            meta.insert(counter, id + 1)?;
            table.insert(key, id)?;
            id
        }
    };
    cache.insert(key.to_owned(), id);
    Ok(id)
}

/// What the cache knows of a prepared record's target, its id looked up
/// or assigned first.
fn target_facts<'c>(
    targets: &mut Table<'_, &'static str, (u64, &'static str, &'static str, &'static str)>,
    meta: &mut Table<'_, &'static str, u64>,
    prepared: &PreparedRecord,
    cache: &'c mut HashMap<String, TargetFacts>,
) -> Result<&'c mut TargetFacts> {
    let name = prepared.target_key();
    // A hit costs two lookups (`contains_key`, `get_mut`): returning the
    // first `get_mut`'s borrow before an insert does not pass the borrow
    // checker, and a map of indexes into a vector of facts, which would
    // make it one, measured no faster.
    if !cache.contains_key(name) {
        let existing = targets.get(name)?.map(|v| v.value().0);
        let id = match existing {
            Some(id) => id,
            None => {
                let id = meta.get(META_NEXT_TARGET_ID)?.map_or(1, |v| v.value());
                meta.insert(META_NEXT_TARGET_ID, id + 1)?;
                let (source_id, schema, table) = prepared.target_parts();
                targets.insert(name, (id, source_id, schema, table))?;
                id
            }
        };
        cache.insert(
            name.to_owned(),
            TargetFacts {
                id,
                latest: Vec::new(),
            },
        );
    }
    cache
        .get_mut(name)
        .ok_or_else(|| super::StorageError::Corrupt("write cache lost a target".into()))
}

/// A dropped (or, in a dry run, droppable) partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedPartition {
    /// `kind/bucket`, e.g. `ingestion_volume/2024-01-10`.
    pub name: String,
    /// The kind.
    pub kind: String,
    /// Records it held.
    pub n_records: u64,
    /// Its time range as `[start, end)`.
    pub start: Timestamp,
    /// Exclusive end of its bucket.
    pub end: Timestamp,
}

/// What applying retention did (or would do, in a dry run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// The partitions dropped, oldest first per kind.
    pub dropped: Vec<DroppedPartition>,
    /// Entries of the latest table removed because they pointed into a dropped partition.
    pub n_latest_removed: u64,
    /// True when nothing was changed.
    pub dry_run: bool,
}

impl RetentionReport {
    /// Records in the dropped partitions.
    pub fn n_records(&self) -> u64 {
        self.dropped.iter().map(|p| p.n_records).sum()
    }
}

/// A group at least this large has its entries inserted (`flush_indexes`)
/// as soon as it is written rather than with the transaction's others at
/// the end, so that a streamed batch's b-tree inserts overlap the
/// preparing of its next chunks; smaller groups (single-record calls
/// grouped into one commit) are still inserted together, in key order.
const FLUSH_GROUP_MIN: usize = 512;

/// How [`Engine::write`] makes a transaction durable.
pub enum Commit<'a> {
    /// redb commits durably (it syncs its file) before `write` returns.
    Durable,
    /// The outcomes are made durable first (the store appends the new
    /// records to the log and syncs it: the log is the write-ahead log),
    /// then redb commits without syncing. If `write` or `sync` fails,
    /// redb commits nothing. A later durable commit ([`Engine::checkpoint`],
    /// or any `Durable` write) makes the redb file catch up; after a crash
    /// before that, redb reopens at its last durable commit and the store
    /// replays the log's later records.
    Logged(&'a mut dyn WriteAhead),
    /// As `Durable`, and the function runs with the outcomes on another
    /// thread while redb commits (a durable commit mostly waits for the
    /// disk): the store renders the new records' log lines there. It runs
    /// whether or not the commit then succeeds, so what it does must be
    /// undone by the caller when `write` fails. If no thread can be started
    /// it runs after the commit, on the caller's.
    DurableBeside(&'a mut (dyn FnMut(&[Vec<WriteOutcome>]) + Send)),
}

/// The write-ahead log of a [`Commit::Logged`] transaction.
pub trait WriteAhead {
    /// Writes the transaction's new records, known by `outcomes`, and may
    /// start making them durable. Called once the records have their ids,
    /// before the indexes are written, so the disk works while the writer
    /// does. After it, a failure anywhere in the transaction may leave
    /// lines in the log that redb never commits: the caller replays them
    /// at the next open.
    fn write(&mut self, outcomes: &[Vec<WriteOutcome>]) -> Result<()>;
    /// Returns once what `write` wrote is durable; redb commits after it.
    fn sync(&mut self) -> Result<()>;
}

impl Engine {
    /// Stores groups of prepared records in one transaction, made durable
    /// as `commit` says.
    ///
    /// Records identical to a stored one (or to an earlier one in the same
    /// call) are not written again; their outcome names the existing id. The
    /// outcomes mirror the input shape. Either everything commits or nothing.
    pub fn write(
        &self,
        groups: &[&[PreparedRecord]],
        commit: Commit<'_>,
    ) -> Result<Vec<Vec<WriteOutcome>>> {
        self.write_groups(&mut groups.iter().map(|g| Some(*g)), commit)
    }

    /// [`Engine::write`] of groups that may still be in the making: each is
    /// taken from `groups` when the transaction is ready for it (the
    /// iterator may block until it is prepared), so preparing the later
    /// groups overlaps writing the earlier ones. A `None` abandons the
    /// transaction: nothing is written and the result is
    /// [`StorageError::Abandoned`](super::StorageError::Abandoned).
    pub fn write_groups(
        &self,
        groups: &mut dyn Iterator<Item = Option<&[PreparedRecord]>>,
        commit: Commit<'_>,
    ) -> Result<Vec<Vec<WriteOutcome>>> {
        let mut cache = self
            .write_cache
            .lock()
            .map_err(|_| super::StorageError::WriterGone("write cache lock poisoned".into()))?;
        let result = self.write_locked(groups, commit, &mut cache);
        if result.is_err() {
            // The failed transaction may have cached what it did not commit.
            cache.clear();
        }
        result
    }

    /// Makes every earlier commit durable: an empty durable transaction.
    pub fn checkpoint(&self) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| super::StorageError::Redb(e.to_string()))?;
        txn.commit(LatestChange::Nothing)
    }

    fn write_locked(
        &self,
        groups: &mut dyn Iterator<Item = Option<&[PreparedRecord]>>,
        mut commit: Commit<'_>,
        cache: &mut WriteCache,
    ) -> Result<Vec<Vec<WriteOutcome>>> {
        let mut txn = self.db.begin_write()?;
        let durability = match commit {
            Commit::Durable | Commit::DurableBeside(_) => Durability::Immediate,
            Commit::Logged(_) => Durability::None,
        };
        txn.set_durability(durability)
            .map_err(|e| super::StorageError::Redb(e.to_string()))?;
        let (outcomes, latest_changed) = {
            let mut meta = txn.open_table(META)?;
            let mut targets = txn.open_table(TARGETS)?;
            let mut producers = txn.open_table(PRODUCERS)?;
            let mut latest = txn.open_table(LATEST)?;
            let mut catalog = txn.open_table(PARTITIONS)?;
            // Keyed by the prepared records' (kind, bucket start), borrowed.
            let mut parts: HashMap<(&str, i64), (PartitionKey, PartTables<'_, '_>)> =
                HashMap::default();
            let mut next_id = meta.get(META_NEXT_ID)?.map_or(1, |v| v.value());
            let mut outcomes = Vec::new();
            // (target id, kind number) → (kind, target, produced_at, id) of
            // the newest record of this transaction for the pair, when newer
            // than the committed latest entry. Kind numbers are the order
            // in which this transaction met the kinds (`kinds`).
            let mut new_latest: HashMap<(u64, usize), (&str, &str, i64, u64)> = HashMap::default();
            let mut kinds: Vec<&str> = Vec::new();
            // The `latest` keys written, for the latest cache (if on).
            let mut latest_changed = Vec::new();
            let cache_on = self.db.latest_cache().enabled();
            for group in groups {
                // Dropping the transaction aborts it.
                let group = group.ok_or(super::StorageError::Abandoned)?;
                // Sized once rather than doubled (and rehashed) as a bulk
                // batch's thousands of pairs arrive.
                new_latest.reserve(group.len());
                let mut group_outcomes = Vec::with_capacity(group.len());
                for prepared in group.iter() {
                    let kind = prepared.kind();
                    let part_id = (kind, prepared.bucket_start);
                    let (_, part) = match parts.entry(part_id) {
                        Entry::Occupied(entry) => entry.into_mut(),
                        Entry::Vacant(entry) => {
                            let key = prepared.partition();
                            let kind_no = match kinds.iter().position(|k| *k == kind) {
                                Some(no) => no,
                                None => {
                                    kinds.push(kind);
                                    kinds.len() - 1
                                }
                            };
                            let opened =
                                PartTables::open(&txn, &catalog, &key, prepared.bucket, kind_no)?;
                            entry.insert((key, opened))
                        }
                    };
                    let ts = prepared.produced_at;
                    let facts =
                        target_facts(&mut targets, &mut meta, prepared, &mut cache.targets)?;
                    let target_id = facts.id;
                    let encoded = prepared.encoded();
                    if let Some(id) = part.find_duplicate(target_id, ts, encoded)? {
                        group_outcomes.push(WriteOutcome::Duplicate(id));
                        continue;
                    }
                    let id = next_id;
                    next_id += 1;
                    part.pending_records.push(((ts, id), encoded));
                    part.add_new(target_id, ts, id, encoded);
                    let target_key = prepared.target_key();
                    let current = match facts.latest_mut(kind) {
                        Some(order) => Some(*order),
                        None => {
                            let stored = latest
                                .get(latest_key(kind, target_key).as_str())?
                                .map(|v| latest_order(v.value()));
                            if let Some(order) = stored {
                                facts.set_latest(kind, order);
                            }
                            stored
                        }
                    };
                    if current.is_none_or(|order| order < (ts, id)) {
                        // Written once per pair, in key order, at the end.
                        new_latest.insert((target_id, part.kind_no), (kind, target_key, ts, id));
                        facts.set_latest(kind, (ts, id));
                    }
                    let producer_id = dict_id(
                        &mut producers,
                        &mut meta,
                        META_NEXT_PRODUCER_ID,
                        prepared.producer_id(),
                        &mut cache.producers,
                    )?;
                    part.add_index_entries(prepared, producer_id, id);
                    part.info.add(ts, id);
                    group_outcomes.push(WriteOutcome::Stored(id));
                }
                if group.len() >= FLUSH_GROUP_MIN {
                    // The next group may still be being prepared (see
                    // `write_groups`): insert this one's entries meanwhile.
                    for (key, part) in parts.values_mut() {
                        part.flush_indexes(&txn, key)?;
                    }
                }
                outcomes.push(group_outcomes);
            }
            if let Commit::Logged(log) = &mut commit {
                // The ids are known: the log's lines go out now, and the
                // disk writes them while the entries below are inserted.
                log.write(&outcomes)?;
            }
            meta.insert(META_NEXT_ID, next_id)?;
            let mut new_latest: Vec<_> = new_latest.into_values().collect();
            new_latest.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            let mut key = String::new();
            for (kind, target, ts, id) in new_latest {
                key.clear();
                push_latest_key(&mut key, kind, target);
                latest.insert(key.as_str(), latest_value(ts, id).as_slice())?;
                if cache_on {
                    latest_changed.push(key.clone());
                }
            }
            for (key, part) in parts.values_mut() {
                part.flush_indexes(&txn, key)?;
            }
            let mut summaries = txn.open_table(SUMMARIES)?;
            for (key, part) in parts.values_mut() {
                part.write_catalog(key, &mut catalog, &mut summaries)?;
            }
            (outcomes, latest_changed)
        };
        match commit {
            Commit::Durable => txn.commit(LatestChange::Keys(latest_changed))?,
            Commit::Logged(log) => {
                // Dropping the transaction on failure aborts it.
                log.sync()?;
                txn.commit(LatestChange::Keys(latest_changed))?;
            }
            Commit::DurableBeside(beside) => {
                let outcomes = &outcomes;
                // Shared by the thread and the fallback: a failed spawn
                // drops its closure.
                let beside = std::sync::Mutex::new(beside);
                let run = || {
                    let mut f = beside
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    f(outcomes)
                };
                std::thread::scope(|scope| {
                    let side = std::thread::Builder::new()
                        .name("almanac-beside".into())
                        .spawn_scoped(scope, run);
                    let committed = txn.commit(LatestChange::Keys(latest_changed));
                    match side {
                        Ok(handle) => {
                            if let Err(panic) = handle.join() {
                                std::panic::resume_unwind(panic);
                            }
                        }
                        Err(_) => run(),
                    }
                    committed
                })?;
            }
        }
        Ok(outcomes)
    }

    /// Saves a kind spec and, in the same transaction, builds the path
    /// indexes `new_paths` for every existing partition of the kind and
    /// moves the tables of `removed_paths` under `purge/`, for the writer
    /// to delete later as it does expired partitions' (no read looks at
    /// them from this commit on). Returns the number of records indexed
    /// and the number of tables moved.
    pub fn put_kind_and_index(
        &self,
        spec: &KindSpec,
        new_paths: &[String],
        removed_paths: &[String],
    ) -> Result<(u64, usize)> {
        let json =
            serde_json::to_string(spec).map_err(|e| super::StorageError::Corrupt(e.to_string()))?;
        let txn = self.db.begin_write()?;
        let mut n_indexed = 0;
        let mut n_moved = 0;
        {
            let mut all_tables: HashSet<String> = if removed_paths.is_empty() {
                HashSet::new()
            } else {
                txn.list_tables()?.map(|t| t.name().to_owned()).collect()
            };
            let mut purge_run = None;
            let mut kinds = txn.open_table(super::KINDS)?;
            kinds.insert(spec.name.as_str(), json.as_str())?;
            let starts: Vec<i64> = {
                let catalog = txn.open_table(PARTITIONS)?;
                let mut starts = Vec::new();
                for entry in catalog
                    .range((spec.name.as_str(), i64::MIN)..=(spec.name.as_str(), i64::MAX))?
                {
                    starts.push(entry?.0.value().1);
                }
                starts
            };
            for start in starts {
                let key = PartitionKey {
                    kind: spec.name.clone(),
                    bucket_start: start,
                };
                // A path no longer indexed loses its tables: records stored
                // from now on get no entries there, and a reader must not
                // take what is left for the whole partition.
                for path in removed_paths {
                    let name = path_table_name(&key, path);
                    // Each table once, even if a path were named twice.
                    if !all_tables.remove(&name) {
                        continue;
                    }
                    let run = match purge_run {
                        Some(run) => run,
                        None => *purge_run.insert(take_purge_run(&txn)?),
                    };
                    move_to_purge(&txn, run, &name)?;
                    n_moved += 1;
                }
                let records =
                    txn.open_table(records_def(&part_table_name(&key, PartTable::Records)))?;
                for path in new_paths {
                    let mut index = txn.open_table(path_index_def(&path_table_name(&key, path)))?;
                    for entry in records.iter()? {
                        let (k, v) = entry?;
                        let (ts, id) = k.value();
                        let record = super::codec::decode_record(v.value())?;
                        for index_key in keys_at(&record, path) {
                            index.insert((index_key.as_slice(), ts, id), ())?;
                        }
                        n_indexed += 1;
                    }
                }
            }
        }
        txn.commit(LatestChange::Nothing)?;
        Ok((n_indexed, n_moved))
    }

    /// Drops every partition of the given kinds that lies wholly before its
    /// kind's retention cutoff at `now`, and the latest entries pointing into
    /// them. With `dry_run`, reports the same without changing anything.
    pub fn apply_retention(
        &self,
        kinds: &[KindSpec],
        now: Timestamp,
        dry_run: bool,
    ) -> Result<RetentionReport> {
        let mut report = RetentionReport {
            dry_run,
            ..RetentionReport::default()
        };
        // Held for the whole transaction: no write interleaves with the
        // removal of latest entries it may have cached.
        let mut cache = self
            .write_cache
            .lock()
            .map_err(|_| super::StorageError::WriterGone("write cache lock poisoned".into()))?;
        let txn = self.db.begin_write()?;
        let mut all_tables: Option<Vec<String>> = None;
        let mut purge_run: Option<u64> = None;
        // The `latest` keys removed, for the latest cache.
        let mut latest_removed = Vec::new();
        {
            let mut catalog = txn.open_table(PARTITIONS)?;
            let mut summaries = txn.open_table(SUMMARIES)?;
            let mut latest = txn.open_table(LATEST)?;
            for spec in kinds {
                let Some(cutoff) = spec.retention.cutoff(now) else {
                    continue;
                };
                debug_assert!(spec.retention != Retention::Forever);
                let mut expired: BTreeMap<i64, PartitionInfo> = BTreeMap::new();
                for entry in catalog
                    .range((spec.name.as_str(), i64::MIN)..=(spec.name.as_str(), i64::MAX))?
                {
                    let (key, value) = entry?;
                    let info = PartitionInfo::decode(value.value())?;
                    if info.bucket_end <= cutoff.as_micros() {
                        expired.insert(key.value().1, info);
                    }
                }
                if expired.is_empty() {
                    continue;
                }
                // Latest entries are the newest record of their target: if one
                // lies in an expired partition, all of that target's records do.
                let mut stale = Vec::new();
                let (from, until) = latest_kind_range(&spec.name);
                for entry in latest.range(from.as_str()..until.as_str())? {
                    let (key, value) = entry?;
                    let (ts, _) = latest_order(value.value());
                    let start = bucket_start(spec.bucket, Timestamp::from_micros(ts));
                    if expired.contains_key(&start) {
                        stale.push(key.value().to_owned());
                    }
                }
                report.n_latest_removed += stale.len() as u64;
                for (start, info) in &expired {
                    report.dropped.push(DroppedPartition {
                        name: partition_name(&spec.name, info.bucket, *start),
                        kind: spec.name.clone(),
                        n_records: info.n_records,
                        start: Timestamp::from_micros(*start),
                        end: Timestamp::from_micros(info.bucket_end),
                    });
                }
                if dry_run {
                    continue;
                }
                for key in &stale {
                    latest.remove(key.as_str())?;
                }
                latest_removed.extend(stale);
                cache.forget_latest(&spec.name);
                if all_tables.is_none() {
                    all_tables = Some(txn.list_tables()?.map(|t| t.name().to_owned()).collect());
                }
                let purge_run = match purge_run {
                    Some(run) => run,
                    None => *purge_run.insert(take_purge_run(&txn)?),
                };
                for start in expired.keys() {
                    let key = PartitionKey {
                        kind: spec.name.clone(),
                        bucket_start: *start,
                    };
                    // Every table of the partition, path indexes included, is
                    // renamed (a change to the table directory only, however
                    // many rows it holds); the writer deletes them later.
                    let prefix = part_prefix(&key);
                    for name in all_tables
                        .iter()
                        .flatten()
                        .filter(|n| n.starts_with(&prefix))
                    {
                        move_to_purge(&txn, purge_run, name)?;
                    }
                    catalog.remove((spec.name.as_str(), *start))?;
                    summaries.remove((spec.name.as_str(), *start))?;
                }
            }
        }
        if dry_run {
            txn.abort()?;
        } else {
            txn.commit(LatestChange::Keys(latest_removed))?;
        }
        Ok(report)
    }

    /// Deletes the tables of one partition waiting under `purge/`
    /// (see [`Engine::apply_retention`]) in one transaction. Returns the
    /// number of tables deleted (0 when nothing waits).
    ///
    /// Deleting a table visits every page it holds, so this is the part of
    /// expiry whose cost grows with the rows; it runs after the expiry has
    /// committed, one partition per transaction, between writes.
    pub fn purge_step(&self) -> Result<usize> {
        let mut txn = self.db.begin_write()?;
        // A crash before this commits leaves the tables to the next attempt.
        txn.set_durability(Durability::Immediate)
            .map_err(|e| super::StorageError::Redb(e.to_string()))?;
        let waiting: Vec<String> = txn
            .list_tables()?
            .map(|t| t.name().to_owned())
            .filter(|n| n.starts_with(PURGE_PREFIX))
            .collect();
        // `purge/{run}/part/{kind}/{bucket}/`: the first table's partition.
        let Some(prefix) = waiting
            .first()
            .and_then(|n| n.rfind('/').map(|i| n[..=i].to_owned()))
        else {
            txn.abort()?;
            return Ok(0);
        };
        let mut n_deleted = 0;
        for name in waiting.iter().filter(|n| n.starts_with(&prefix)) {
            txn.delete_table(records_def(name))?;
            n_deleted += 1;
        }
        txn.commit(LatestChange::Nothing)?;
        Ok(n_deleted)
    }

    /// The number of tables of expired partitions not yet deleted.
    pub fn purge_pending(&self) -> Result<usize> {
        let txn = self.db.begin_read()?;
        let n = txn
            .list_tables()?
            .filter(|t| t.name().starts_with(PURGE_PREFIX))
            .count();
        Ok(n)
    }
}

/// A latest-table value: `produced_at` (i64 LE, µs) ‖ `id` (u64 LE), which
/// locate the record in its kind's partition of `produced_at`.
pub(crate) fn latest_value(ts: i64, id: u64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&ts.to_le_bytes());
    value[8..].copy_from_slice(&id.to_le_bytes());
    value
}

/// `(produced_at, id)` of a latest-table value (or of a latest cache value,
/// which goes on with the encoded record).
pub(crate) fn latest_order(value: &[u8]) -> (i64, u64) {
    let mut ts = [0u8; 8];
    let mut id = [0u8; 8];
    if value.len() >= 16 {
        ts.copy_from_slice(&value[..8]);
        id.copy_from_slice(&value[8..16]);
    }
    (i64::from_le_bytes(ts), u64::from_le_bytes(id))
}

/// Takes the number of a new purge run from `meta` (one a transaction: the
/// tables it moves go under `purge/{run}/`).
fn take_purge_run(txn: &WriteTransaction) -> Result<u64> {
    let mut meta = txn.open_table(META)?;
    let run = meta.get(META_NEXT_PURGE)?.map_or(1, |v| v.value());
    meta.insert(META_NEXT_PURGE, run + 1)?;
    Ok(run)
}

/// Moves table `name` under `purge/{run}/`: a change to the table directory
/// only, however many rows it holds; the writer deletes it later
/// ([`Engine::purge_step`]).
fn move_to_purge(txn: &WriteTransaction, run: u64, name: &str) -> Result<()> {
    // The definition's types don't matter for renaming.
    let purged = format!("{PURGE_PREFIX}{run}/{name}");
    txn.rename_table(records_def(name), records_def(&purged))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

    use super::insert_sorted;

    const TABLE: TableDefinition<(u64, i64, u64), &[u8]> = TableDefinition::new("t");

    /// Inserts `batches` one transaction each through `insert_sorted`
    /// (every batch given sorted unless `unsorted`), and checks the table
    /// then holds exactly what a `BTreeMap` fed the same entries holds.
    fn check(batches: &[Vec<(u64, i64, u64)>], unsorted: bool) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::create(dir.path().join("t.redb")).expect("db");
        let mut expected = BTreeMap::new();
        for batch in batches {
            let mut entries: Vec<((u64, i64, u64), Vec<u8>)> = batch
                .iter()
                .map(|k| (*k, format!("{k:?}").into_bytes()))
                .collect();
            if !unsorted {
                entries.sort();
            }
            let txn = db.begin_write().expect("txn");
            {
                let mut table = txn.open_table(TABLE).expect("table");
                insert_sorted(&mut table, entries.iter().map(|(k, v)| (*k, v.as_slice())))
                    .expect("inserted");
            }
            txn.commit().expect("commit");
            expected.extend(entries);
        }
        let txn = db.begin_read().expect("read");
        let table = txn.open_table(TABLE).expect("table");
        let got: Vec<((u64, i64, u64), Vec<u8>)> = table
            .iter()
            .expect("iter")
            .map(|e| {
                let (k, v) = e.expect("entry");
                (k.value(), v.value().to_vec())
            })
            .collect();
        assert_eq!(got, expected.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn sorted_entries_land_whether_past_the_end_or_among_the_keys() {
        // Into an empty table; then past its end; then among its keys and
        // past the end in one batch; then only among its keys.
        let first: Vec<_> = (0..5_000u64).map(|i| (i % 7, i as i64, i)).collect();
        let past_end: Vec<_> = (5_000..9_000u64)
            .map(|i| (7 + i % 3, i as i64, i))
            .collect();
        let mixed: Vec<_> = (9_000..13_000u64).map(|i| (i % 11, i as i64, i)).collect();
        let among: Vec<_> = (13_000..14_000u64)
            .map(|i| (i % 5, -(i as i64), i))
            .collect();
        check(&[first, past_end, mixed, among], false);
        check(&[vec![]], false);
    }

    #[test]
    fn entries_out_of_order_are_still_all_inserted() {
        // The cursor refuses a key below the one before it; the rest go in
        // one by one.
        let batch: Vec<_> = [5u64, 9, 3, 12, 1, 20].iter().map(|&i| (i, 0, i)).collect();
        check(
            &[batch.clone(), vec![(2, 0, 2), (30, 0, 30), (4, 0, 4)]],
            true,
        );
    }

    /// Every part of a prepared record reads back as what it was made from:
    /// the encoding, the JSON, the names and each indexed path's keys (a
    /// path with no value, one with an array of several, a run id, an empty
    /// one or none, targets whose key is escaped, names beyond ASCII). The
    /// keys are checked against `IndexValue::key`, which queries use.
    #[test]
    fn prepared_parts_read_back() {
        use super::PreparedRecord;
        use crate::kinds::Bucket;
        use crate::storage::{decode_record, IndexValue};
        use crate::testdata::{GenConfig, Generator};
        use serde_json::Value;

        /// The keys at `path` as a query would build them.
        fn query_keys(record: &crate::model::MetadataRecord, path: &str) -> Vec<Vec<u8>> {
            let mut segments = path.split('.');
            let mut value = match segments.next() {
                Some("payload") => record.payload.get(segments.next().unwrap()),
                _ => record.extras.get(segments.next().unwrap()),
            };
            for segment in segments {
                value = value.and_then(|v| v.get(segment));
            }
            let scalars: Vec<&Value> = match value {
                Some(Value::Array(items)) => items.iter().collect(),
                Some(v) => vec![v],
                None => Vec::new(),
            };
            scalars
                .into_iter()
                .filter_map(|v| IndexValue::from_json(v).map(|v| v.key()))
                .collect()
        }

        let paths: Vec<String> = [
            "extras.window_start",
            "payload.ingestion_run_ids",
            "payload.missing",
            "payload.outcome",
        ]
        .map(String::from)
        .to_vec();
        let mut seen_several = false;
        for (i, mut record) in Generator::new(3, GenConfig::scaled(2_000)).enumerate() {
            match i % 4 {
                0 => record.context.run_id = None,
                1 => record.context.run_id = Some(String::new()),
                _ => {}
            }
            record.target.source_id = match i % 5 {
                0 => "pg:eu".into(), // a `:` in the source: the key is escaped
                1 => String::new(),  // no source
                2 => "sö".into(),    // beyond ASCII
                _ => format!("src{}", i % 3),
            };
            if i % 7 == 0 {
                record.producer_id = "producteur-é".into();
            }
            let prepared = PreparedRecord::new(&record, Bucket::Day, &paths, &paths[..2]);
            assert_eq!(decode_record(prepared.encoded()).unwrap(), record);
            assert_eq!(prepared.json(), record.to_json_string());
            assert_eq!(prepared.kind(), record.kind);
            let t = &record.target;
            assert_eq!(
                prepared.target_parts(),
                (t.source_id.as_str(), t.schema.as_str(), t.table.as_str())
            );
            assert_eq!(prepared.target_key(), t.key());
            assert_eq!(prepared.producer_id(), record.producer_id);
            assert_eq!(prepared.run_id(), record.context.run_id.as_deref());
            assert_eq!(prepared.partition().kind, record.kind);
            let expected: Vec<(String, Vec<u8>)> = paths
                .iter()
                .flat_map(|p| query_keys(&record, p).into_iter().map(|k| (p.clone(), k)))
                .collect();
            let got: Vec<(String, Vec<u8>)> = prepared
                .path_keys()
                .map(|(p, k)| (p.to_owned(), k.to_vec()))
                .collect();
            assert_eq!(got, expected);
            // The summaries of the first two paths: each one's smallest
            // and largest key.
            type Owned = Vec<(String, Option<(Vec<u8>, Vec<u8>)>)>;
            let expected: Owned = paths[..2]
                .iter()
                .map(|p| {
                    let keys = query_keys(&record, p);
                    let range = keys.iter().min().cloned().zip(keys.iter().max().cloned());
                    (p.clone(), range)
                })
                .collect();
            let got: Owned = prepared
                .summaries()
                .map(|(p, r)| (p.to_owned(), r.map(|(a, b)| (a.to_vec(), b.to_vec()))))
                .collect();
            assert_eq!(got, expected);
            seen_several |= query_keys(&record, &paths[1]).len() > 1;
        }
        assert!(seen_several, "no record had several keys at one path");
    }
}
