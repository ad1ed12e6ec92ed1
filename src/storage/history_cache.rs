//! Often-read partitions' by-target keys and records, in memory, for
//! `history`.
//!
//! `history` finds a target's records partition by partition: one seek
//! into each partition's by-target index, then one get per record from
//! its records table. At N = 1,000,000 the 31 seeks of 30 days of a
//! day-bucketed kind were a third of a call, and the ~17 gets another
//! third, mostly waiting on memory for redb's pages (its page cache takes
//! a lock, a hash lookup and an `Arc` per page visited). A partition that
//! `history` has visited [`BUILD_AFTER`] times gets its by-target keys
//! copied into one sorted array, which later calls search instead, and
//! its records' encoded bytes (in the same order) into one block beside
//! them, which later calls decode from: no redb page is touched.
//!
//! Entries are stamped with the partition's record count and smallest and
//! largest ids (from its catalog entry): records are only ever added to a
//! partition, with new ids, ids are never reused, and a stored record's
//! bytes never change, so equal stamps mean equal contents. A commit that
//! adds records changes the stamp, and the next visit starts counting
//! again; a dropped partition's entry is never matched again, and a
//! reader on a snapshot older than the copy held neither uses nor
//! replaces it.
//!
//! The cost of a copy falls on one `history` call (the one that makes the
//! fourth visit), so a call copies at most one partition (`may_build`),
//! at most one caller copies a partition's contents at a time (a copy
//! finished or abandoned at an older stamp does not free the slot), and a
//! partition of more than [`MAX_PARTITION_KEYS`] records is never copied.
//! The cache holds at most its capacity in bytes
//! (`StoreOptions::history_cache_bytes`, [`DEFAULT_HISTORY_CACHE_BYTES`]
//! by default; 0 turns it off, with no lock taken): a partition's copy
//! keeps its records only within [`HistoryCache::records_budget`] (a
//! quarter of the capacity, and what its keys leave of it), a copy whose
//! keys alone pass the capacity is refused and not asked for again at
//! that stamp, and past the capacity the partitions used longest ago are
//! let go. Slots that hold only visit counts are let go past
//! [`MAX_EMPTY_SLOTS`] a kind.

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use super::read::PartitionInfo;

/// Keyed by names hashed on every visit; foldhash costs a fraction of SipHash.
type HashMap<K, V> = foldhash::HashMap<K, V>;

/// The visit of a partition (at one stamp) that copies it: the 4th.
pub(crate) const BUILD_AFTER: u32 = 4;

/// Slots a kind keeps for partitions it holds no copy of (visit counts);
/// past it those are let go, so that partitions dropped long ago (hourly
/// buckets over years) do not keep theirs.
const MAX_EMPTY_SLOTS: usize = 4096;

/// The history cache's capacity unless set: 64 MiB, the last 30 days of
/// `ingestion_volume` at N = 1,000,000 (~2,800 records of ~400 bytes a
/// day) with room to spare.
pub const DEFAULT_HISTORY_CACHE_BYTES: usize = 64 << 20;

/// Partitions with more records are always read from their index.
pub(crate) const MAX_PARTITION_KEYS: u64 = 1 << 17;

/// One by-target index key: (target id, `produced_at`, record id).
pub(crate) type TargetKey = (u64, i64, u64);

/// The memory a key takes in a copy.
const KEY_BYTES: usize = std::mem::size_of::<TargetKey>();

/// One partition's by-target keys, sorted, where each target's keys
/// start, and, when copied too, the records' encoded bytes in key order.
/// With dense target ids (a dictionary numbers targets from 1) a target's
/// keys are found by two reads of memory, where a binary search over
/// thousands of keys misses the CPU cache a dozen times.
pub(crate) struct PartKeys {
    keys: Box<[TargetKey]>,
    /// The smallest target id.
    first_target: u64,
    /// For target `first_target + i`, its keys are `starts[i]..starts[i + 1]`;
    /// empty when the ids are too sparse for it (binary search then).
    starts: Box<[u32]>,
    /// The records of the keys, when copied.
    records: Option<HeldRecords>,
}

/// Records' encoded bytes, one after another in key order: key `i`'s are
/// `bytes[ends[i - 1]..ends[i]]` (from 0 for the first).
struct HeldRecords {
    ends: Box<[u32]>,
    bytes: Box<[u8]>,
}

impl PartKeys {
    /// Indexes sorted keys.
    pub(crate) fn new(keys: Vec<TargetKey>) -> Self {
        let (first, last) = match (keys.first(), keys.last()) {
            (Some(first), Some(last)) => (first.0, last.0),
            _ => (0, 0),
        };
        let span = last.saturating_sub(first).saturating_add(1);
        let dense = span <= 4 * keys.len() as u64 + 64 && keys.len() < u32::MAX as usize;
        let mut starts = Vec::new();
        if dense {
            starts.reserve(span as usize + 1);
            let mut at = 0;
            for target in first..=last {
                while keys.get(at).is_some_and(|k| k.0 < target) {
                    at += 1;
                }
                starts.push(at as u32);
            }
            starts.push(keys.len() as u32);
        }
        PartKeys {
            keys: keys.into_boxed_slice(),
            first_target: first,
            starts: starts.into_boxed_slice(),
            records: None,
        }
    }

    /// Copies the records of the keys, in key order, with `record(key)`
    /// giving a key's encoded bytes (`None`: not found, and nothing is
    /// kept). Stops, keeping the keys alone, once the bytes would pass
    /// `max_bytes`.
    pub(crate) fn copy_records<E>(
        &mut self,
        max_bytes: usize,
        mut record: impl FnMut(&TargetKey, &mut Vec<u8>) -> Result<bool, E>,
    ) -> Result<(), E> {
        let max_bytes = max_bytes.min(u32::MAX as usize);
        let mut ends = Vec::with_capacity(self.keys.len());
        let mut bytes = Vec::new();
        for key in self.keys.iter() {
            if !record(key, &mut bytes)? || bytes.len() > max_bytes {
                return Ok(());
            }
            ends.push(bytes.len() as u32);
        }
        self.records = Some(HeldRecords {
            ends: ends.into_boxed_slice(),
            bytes: bytes.into_boxed_slice(),
        });
        Ok(())
    }

    /// Where the keys of `target` produced in `[from, until)` are (see
    /// [`PartKeys::key`] and [`PartKeys::record`]).
    pub(crate) fn positions(&self, target: u64, from: i64, until: i64) -> Range<usize> {
        let (start, end) = if self.starts.is_empty() {
            (0, self.keys.len())
        } else {
            let i = target.wrapping_sub(self.first_target);
            usize::try_from(i)
                .ok()
                .and_then(|i| Some((*self.starts.get(i)?, *self.starts.get(i + 1)?)))
                .map_or((0, 0), |(start, end)| (start as usize, end as usize))
        };
        // Only the slice is read: where the target has no keys here, not
        // even the next target's first key (a cache miss a partition).
        let keys = self.keys.get(start..end).unwrap_or_default();
        let first = keys.partition_point(|&(t, ts, _)| (t, ts) < (target, from));
        let n = keys[first..]
            .iter()
            .take_while(|&&(t, ts, _)| t == target && ts < until)
            .count();
        start + first..start + first + n
    }

    /// The keys of `target` produced in `[from, until)`.
    #[cfg(test)]
    pub(crate) fn of(
        &self,
        target: u64,
        from: i64,
        until: i64,
    ) -> impl Iterator<Item = &TargetKey> {
        self.keys[self.positions(target, from, until)].iter()
    }

    /// The key at `position`.
    pub(crate) fn key(&self, position: usize) -> Option<&TargetKey> {
        self.keys.get(position)
    }

    /// Whether the records were copied too.
    pub(crate) fn holds_records(&self) -> bool {
        self.records.is_some()
    }

    /// The encoded bytes of the record of the key at `position`, if copied.
    pub(crate) fn record(&self, position: usize) -> Option<&[u8]> {
        let held = self.records.as_ref()?;
        let end = *held.ends.get(position)? as usize;
        let start = match position.checked_sub(1) {
            Some(before) => *held.ends.get(before)? as usize,
            None => 0,
        };
        held.bytes.get(start..end)
    }

    /// The memory it holds, in bytes (allocator overhead aside).
    fn weight(&self) -> usize {
        let records = self
            .records
            .as_ref()
            .map_or(0, |held| held.bytes.len() + 4 * held.ends.len());
        KEY_BYTES * self.keys.len() + 4 * self.starts.len() + records
    }
}

/// What the history cache holds (see `Store::history_cache_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryCacheStats {
    /// Partitions whose copy is held.
    pub n_partitions: usize,
    /// Of those, the ones whose records are held too (the others: keys alone).
    pub n_with_records: usize,
    /// Their bytes by the cache's own count (keys, starts, records and
    /// their offsets), not the allocator's.
    pub bytes: usize,
    /// The capacity the count is held under
    /// (`StoreOptions::history_cache_bytes`).
    pub capacity_bytes: usize,
}

/// What identifies a partition's contents: its record count, smallest
/// and largest id.
type Stamp = (u64, u64, u64);

fn stamp(info: &PartitionInfo) -> Stamp {
    (info.n_records, info.min_id, info.max_id)
}

#[derive(Default)]
struct Slot {
    stamp: Stamp,
    visits: u32,
    /// A caller is copying the keys.
    building: bool,
    /// A copy of it would not fit the capacity even without its records:
    /// never asked for again at this stamp.
    too_large: bool,
    /// When the keys were last used (the cache's visit clock).
    used: u64,
    keys: Option<Arc<PartKeys>>,
}

#[derive(Default)]
struct Slots {
    /// Per kind, per bucket start.
    kinds: HashMap<String, HashMap<i64, Slot>>,
    /// Bytes held in all (by [`PartKeys::weight`]).
    held: usize,
    /// Counts visits, to order slots by last use.
    clock: u64,
}

/// See the module documentation.
pub(crate) struct HistoryCache {
    slots: Mutex<Slots>,
    /// Bytes held at most (0: nothing is copied).
    capacity: usize,
}

impl Default for HistoryCache {
    fn default() -> Self {
        HistoryCache::new(DEFAULT_HISTORY_CACHE_BYTES)
    }
}

/// What [`HistoryCache::visit`] found for a partition.
pub(crate) enum Visit {
    /// Its keys, sorted.
    Keys(Arc<PartKeys>),
    /// Not held: seek the index. `build` when the caller should copy the
    /// keys and [`HistoryCache::put`] them (or [`HistoryCache::abandon`]).
    Seek { build: bool },
}

impl HistoryCache {
    /// A cache of at most `capacity` bytes (0: nothing is copied).
    pub(crate) fn new(capacity: usize) -> Self {
        HistoryCache {
            slots: Mutex::default(),
            capacity,
        }
    }

    /// Counts a visit of a partition and returns its keys if held. Asks
    /// the caller to copy them only if `may_build`.
    pub(crate) fn visit(
        &self,
        kind: &str,
        bucket_start: i64,
        info: &PartitionInfo,
        may_build: bool,
    ) -> Visit {
        if self.capacity == 0 {
            return Visit::Seek { build: false };
        }
        let mut slots = self.lock();
        let slots = &mut *slots;
        slots.clock += 1;
        if !slots.kinds.contains_key(kind) {
            // Once per kind: no allocation for the name on later visits.
            slots.kinds.insert(kind.to_owned(), HashMap::default());
        }
        let Some(kind_slots) = slots.kinds.get_mut(kind) else {
            return Visit::Seek { build: false };
        };
        if kind_slots.len() >= MAX_EMPTY_SLOTS && !kind_slots.contains_key(&bucket_start) {
            // Visit counts are all these slots hold: losing them only
            // delays a copy.
            kind_slots.retain(|_, slot| slot.keys.is_some() || slot.building);
        }
        let slot = kind_slots.entry(bucket_start).or_default();
        let now = stamp(info);
        if slot.stamp != now {
            if now.2 < slot.stamp.2 {
                // A reader on an older snapshot: leave the newer slot be.
                return Visit::Seek { build: false };
            }
            if let Some(keys) = slot.keys.take() {
                slots.held -= keys.weight();
            }
            *slot = Slot {
                stamp: now,
                ..Slot::default()
            };
        }
        if let Some(keys) = &slot.keys {
            slot.used = slots.clock;
            return Visit::Keys(Arc::clone(keys));
        }
        slot.visits = slot.visits.saturating_add(1);
        let build = may_build
            && !slot.building
            && !slot.too_large
            && slot.visits >= BUILD_AFTER
            && info.n_records <= MAX_PARTITION_KEYS;
        slot.building |= build;
        Visit::Seek { build }
    }

    /// Holds a partition's keys, read at the stamp of `info`, after a
    /// visit that asked for them.
    pub(crate) fn put(
        &self,
        kind: &str,
        bucket_start: i64,
        info: &PartitionInfo,
        keys: Arc<PartKeys>,
    ) {
        let mut slots = self.lock();
        let slots = &mut *slots;
        let clock = slots.clock;
        let Some(slot) = slot_of(slots, kind, bucket_start) else {
            return;
        };
        if slot.stamp != stamp(info) {
            // The partition changed meanwhile: the copy is of older
            // contents, and whoever builds at the new stamp goes on.
            return;
        }
        slot.building = false;
        if keys.weight() > self.capacity {
            slot.too_large = true;
            return;
        }
        if slot.keys.is_some() {
            return;
        }
        slot.used = clock;
        let added = keys.weight();
        slot.keys = Some(keys);
        slots.held += added;
        Self::make_room(slots, self.capacity);
    }

    /// A copy asked for at the stamp of `info` was not made (an error):
    /// another visit may ask again.
    pub(crate) fn abandon(&self, kind: &str, bucket_start: i64, info: &PartitionInfo) {
        if let Some(slot) = slot_of(&mut self.lock(), kind, bucket_start) {
            if slot.stamp == stamp(info) {
                slot.building = false;
            }
        }
    }

    /// Most bytes the records of a copy whose keys are `keys` may take: a
    /// quarter of the capacity, so that a few partitions fit, and never so
    /// much that keys and records together pass the capacity.
    pub(crate) fn records_budget(&self, keys: &PartKeys) -> usize {
        let with_ends = keys.weight() + 4 * keys.keys.len();
        (self.capacity / 4).min(self.capacity.saturating_sub(with_ends))
    }

    /// Lets go of the copies used longest ago until at most `capacity`
    /// bytes are held.
    fn make_room(slots: &mut Slots, capacity: usize) {
        while slots.held > capacity {
            let oldest = slots
                .kinds
                .values_mut()
                .flat_map(|kind_slots| kind_slots.values_mut())
                .filter(|slot| slot.keys.is_some())
                .min_by_key(|slot| slot.used);
            let Some(slot) = oldest else {
                slots.held = 0;
                return;
            };
            if let Some(keys) = slot.keys.take() {
                slots.held -= keys.weight();
            }
            slot.visits = 0;
        }
    }

    /// What it holds now.
    pub(crate) fn stats(&self) -> HistoryCacheStats {
        let slots = self.lock();
        let held = slots
            .kinds
            .values()
            .flat_map(|kind_slots| kind_slots.values())
            .filter_map(|slot| slot.keys.as_ref());
        let mut stats = HistoryCacheStats {
            bytes: slots.held,
            capacity_bytes: self.capacity,
            ..HistoryCacheStats::default()
        };
        for keys in held {
            stats.n_partitions += 1;
            stats.n_with_records += usize::from(keys.holds_records());
        }
        stats
    }

    /// Partitions held and the bytes they take (for tests).
    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize) {
        let slots = self.lock();
        let n = slots
            .kinds
            .values()
            .flat_map(|kind_slots| kind_slots.values())
            .filter(|slot| slot.keys.is_some())
            .count();
        (n, slots.held)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // A cache: a panic elsewhere cannot leave it wrong, only incomplete.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The slot of a partition visited before, if any.
fn slot_of<'a>(slots: &'a mut Slots, kind: &str, bucket_start: i64) -> Option<&'a mut Slot> {
    slots.kinds.get_mut(kind)?.get_mut(&bucket_start)
}

/// The keys of `target` produced in `[from, until)`, from sorted keys: a
/// binary search, what [`PartKeys::positions`] must agree with.
#[cfg(test)]
fn keys_of(
    keys: &[TargetKey],
    target: u64,
    from: i64,
    until: i64,
) -> impl Iterator<Item = &TargetKey> {
    let start = keys.partition_point(|&(t, ts, _)| (t, ts) < (target, from));
    keys[start..]
        .iter()
        .take_while(move |&&(t, ts, _)| t == target && ts < until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Bucket;

    fn info(n: u64, max_id: u64) -> PartitionInfo {
        let mut info = PartitionInfo::empty(Bucket::Day, 100);
        for id in max_id + 1 - n..=max_id {
            info.add(id as i64, id);
        }
        info
    }

    fn seeks(visit: Visit) -> Option<bool> {
        match visit {
            Visit::Seek { build } => Some(build),
            Visit::Keys(_) => None,
        }
    }

    #[test]
    fn keys_are_held_after_enough_visits_and_dropped_when_the_partition_changes() {
        let cache = HistoryCache::default();
        let before = info(3, 3);
        for _ in 1..BUILD_AFTER {
            assert_eq!(seeks(cache.visit("k", 0, &before, true)), Some(false));
        }
        // Not while the caller may not build; then once, to one caller.
        assert_eq!(seeks(cache.visit("k", 0, &before, false)), Some(false));
        assert_eq!(seeks(cache.visit("k", 0, &before, true)), Some(true));
        assert_eq!(seeks(cache.visit("k", 0, &before, true)), Some(false));
        let copied = Arc::new(PartKeys::new(vec![(1, 1, 1), (1, 2, 2), (2, 3, 3)]));
        let weight = copied.weight();
        assert_eq!(weight, 3 * 24 + 3 * 4, "3 keys, 3 starts");
        cache.put("k", 0, &before, copied);
        let Visit::Keys(keys) = cache.visit("k", 0, &before, true) else {
            panic!("keys not held");
        };
        assert_eq!(keys.of(1, 0, 9).count(), 2);
        assert_eq!(cache.held(), (1, weight));
        // Another partition of the kind, and the same bucket of another kind, count apart.
        assert_eq!(seeks(cache.visit("k", 1, &before, true)), Some(false));
        assert_eq!(seeks(cache.visit("j", 0, &before, true)), Some(false));
        // A commit added a record: the keys are let go.
        let after = info(4, 4);
        assert_eq!(seeks(cache.visit("k", 0, &after, true)), Some(false));
        assert_eq!(cache.held(), (0, 0));
        // A reader on the older snapshot neither uses nor resets the newer
        // slot (the visit above was the first at the new stamp).
        for _ in 2..BUILD_AFTER {
            assert_eq!(seeks(cache.visit("k", 0, &after, true)), Some(false));
        }
        assert_eq!(seeks(cache.visit("k", 0, &before, true)), Some(false));
        assert_eq!(seeks(cache.visit("k", 0, &after, true)), Some(true));
        // Keys read at the older stamp are refused.
        cache.put("k", 0, &before, Arc::new(PartKeys::new(vec![(1, 1, 1)])));
        assert_eq!(cache.held(), (0, 0));
        // The same count with other ids (expired and written again): not used either.
        cache.put("k", 0, &after, Arc::new(PartKeys::new(vec![(1, 1, 1)])));
        assert!(matches!(cache.visit("k", 0, &after, true), Visit::Keys(_)));
        let other = info(4, 9);
        assert_eq!(seeks(cache.visit("k", 0, &other, true)), Some(false));
    }

    #[test]
    fn an_abandoned_copy_can_be_asked_for_again_and_large_partitions_never_are() {
        let cache = HistoryCache::default();
        let i = info(2, 2);
        for _ in 1..BUILD_AFTER {
            cache.visit("k", 0, &i, true);
        }
        assert_eq!(seeks(cache.visit("k", 0, &i, true)), Some(true));
        cache.abandon("k", 0, &i);
        assert_eq!(seeks(cache.visit("k", 0, &i, true)), Some(true));
        // A copy of older contents neither lands nor frees the copy under
        // way at the new stamp: only one caller builds at a time.
        let newer = info(3, 3);
        for _ in 0..BUILD_AFTER {
            cache.visit("k", 0, &newer, true);
        }
        assert_eq!(seeks(cache.visit("k", 0, &newer, true)), Some(false));
        cache.put("k", 0, &i, Arc::new(PartKeys::new(vec![(1, 1, 1)])));
        cache.abandon("k", 0, &i);
        assert_eq!(seeks(cache.visit("k", 0, &newer, true)), Some(false));
        assert_eq!(cache.held(), (0, 0));
        let mut large = PartitionInfo::empty(Bucket::Month, 100);
        large.add(1, 1);
        large.n_records = MAX_PARTITION_KEYS + 1;
        for _ in 0..2 * BUILD_AFTER {
            assert_eq!(seeks(cache.visit("k", 5, &large, true)), Some(false));
        }
    }

    /// A copy too large for the capacity even without its records is
    /// refused and never asked for again at that stamp (it was rebuilt on
    /// every call); records are kept only within the budget that leaves
    /// the whole copy inside the capacity; a cache of capacity 0 asks for
    /// nothing and keeps no slots.
    #[test]
    fn copies_stay_inside_the_capacity_and_too_large_ones_are_not_asked_again() {
        let keys: Vec<TargetKey> = (0..100u64).map(|i| (1 + i % 10, i as i64, i)).collect();
        let weight = PartKeys::new(keys.clone()).weight();
        let i = info(100, 100);
        let cache = HistoryCache::new(weight - 1);
        for _ in 1..BUILD_AFTER {
            cache.visit("k", 0, &i, true);
        }
        assert_eq!(seeks(cache.visit("k", 0, &i, true)), Some(true));
        cache.put("k", 0, &i, Arc::new(PartKeys::new(keys.clone())));
        assert_eq!(cache.held(), (0, 0));
        for _ in 0..2 * BUILD_AFTER {
            assert_eq!(seeks(cache.visit("k", 0, &i, true)), Some(false));
        }
        // New contents: asked again.
        let more = info(101, 101);
        for _ in 1..BUILD_AFTER {
            cache.visit("k", 0, &more, true);
        }
        assert_eq!(seeks(cache.visit("k", 0, &more, true)), Some(true));

        for capacity in [
            weight + 400 + 50,
            weight + 400 + 5_000,
            4 * (weight + 400) + 40_000,
        ] {
            let cache = HistoryCache::new(capacity);
            let mut part = PartKeys::new(keys.clone());
            let budget = cache.records_budget(&part);
            part.copy_records(budget, |_, out| {
                out.extend([7u8; 100]);
                Ok::<bool, ()>(true)
            })
            .unwrap();
            assert!(part.weight() <= capacity, "capacity {capacity}");
            assert!(budget <= capacity / 4);
            // 100 records of 100 bytes fit only the largest.
            assert_eq!(
                part.holds_records(),
                budget >= 10_000,
                "capacity {capacity}"
            );
        }

        let off = HistoryCache::new(0);
        for _ in 0..2 * BUILD_AFTER {
            assert_eq!(seeks(off.visit("k", 0, &i, true)), Some(false));
        }
        assert!(off.lock().kinds.is_empty());
    }

    /// Slots that hold nothing but visit counts are let go past a bound.
    #[test]
    fn slots_of_partitions_long_gone_are_let_go() {
        let cache = HistoryCache::default();
        let i = info(1, 1);
        for bucket in 0..3 * MAX_EMPTY_SLOTS as i64 {
            cache.visit("k", bucket, &i, true);
        }
        assert!(cache.lock().kinds["k"].len() <= MAX_EMPTY_SLOTS);
    }

    #[test]
    fn part_keys_find_what_a_search_finds_with_dense_or_sparse_ids() {
        let dense: Vec<TargetKey> = (0..300u64)
            .map(|i| (3 + i / 3 * 2, (i % 3) as i64, i))
            .collect();
        let sparse: Vec<TargetKey> = (0..300u64)
            .map(|i| (i / 3 * 1_000, (i % 3) as i64, i))
            .collect();
        for keys in [dense, sparse, Vec::new()] {
            let part = PartKeys::new(keys.clone());
            let targets = keys
                .iter()
                .map(|k| k.0)
                .chain([0, 1, 2, u64::MAX, 400, 999_999]);
            for target in targets {
                for (from, until) in [(0, 3), (1, 2), (2, 9), (5, 9), (i64::MIN, i64::MAX)] {
                    let found: Vec<_> = part.of(target, from, until).collect();
                    let searched: Vec<_> = keys_of(&keys, target, from, until).collect();
                    assert_eq!(found, searched, "target {target}, {from}..{until}");
                }
            }
        }
        assert!(!PartKeys::new(vec![(1, 0, 0), (2, 0, 1)]).starts.is_empty());
        assert!(PartKeys::new(vec![(1, 0, 0), (1 << 40, 0, 1)])
            .starts
            .is_empty());
    }

    /// A copy's records are found at their keys' positions; a copy whose
    /// records would pass the bound, or miss one, keeps its keys alone.
    #[test]
    fn copied_records_are_found_at_their_keys_positions() {
        let keys: Vec<TargetKey> = vec![(1, 5, 10), (2, 1, 11), (2, 5, 12), (4, 0, 13)];
        let bytes_of = |&(_, _, id): &TargetKey| vec![id as u8; id as usize - 9];
        let copy = |max_bytes: usize, missing: u64| {
            let mut part = PartKeys::new(keys.clone());
            part.copy_records(max_bytes, |key, out| {
                out.extend(bytes_of(key));
                Ok::<bool, ()>(key.2 != missing)
            })
            .unwrap();
            part
        };
        let whole = copy(10, 0);
        assert!(whole.holds_records());
        assert_eq!(whole.weight(), 4 * 24 + 5 * 4 + 10 + 4 * 4);
        for target in 0..6 {
            for (from, until) in [(0, 9), (1, 5), (5, 6)] {
                let positions = whole.positions(target, from, until);
                let found: Vec<_> = positions.clone().filter_map(|at| whole.key(at)).collect();
                let searched: Vec<_> = keys_of(&keys, target, from, until).collect();
                assert_eq!(found, searched);
                for at in positions {
                    assert_eq!(whole.record(at), Some(bytes_of(&keys[at]).as_slice()));
                }
            }
        }
        assert_eq!(whole.record(4), None);
        for part in [copy(9, 0), copy(10, 12)] {
            assert!(!part.holds_records());
            assert_eq!(part.record(0), None);
            assert_eq!(part.weight(), 4 * 24 + 5 * 4);
        }
    }

    #[test]
    fn a_target_s_keys_within_a_range() {
        let keys = [(1, 5, 1), (2, 1, 2), (2, 5, 3), (2, 9, 4), (3, 0, 5)];
        let of =
            |t, from, until| -> Vec<u64> { keys_of(&keys, t, from, until).map(|k| k.2).collect() };
        assert_eq!(of(2, 0, 100), [2, 3, 4]);
        assert_eq!(of(2, 5, 9), [3]);
        assert_eq!(of(2, 10, 100), Vec::<u64>::new());
        assert_eq!(of(4, 0, 100), Vec::<u64>::new());
        assert_eq!(of(1, 0, 5), Vec::<u64>::new());
    }

    #[test]
    fn past_its_bound_the_cache_lets_go_of_the_keys_used_longest_ago() {
        let third = Arc::new(PartKeys::new(vec![(0, 0, 0); 1_000]));
        let cache = HistoryCache::new(3 * third.weight() - 1);
        let i = info(1, 1);
        for bucket in 0..3 {
            for _ in 0..BUILD_AFTER {
                cache.visit("k", bucket, &i, true);
            }
            cache.put("k", bucket, &i, Arc::clone(&third));
        }
        assert_eq!(cache.held().0, 2, "the third put let one go");
        assert_eq!(
            seeks(cache.visit("k", 0, &i, true)),
            Some(false),
            "bucket 0 went"
        );
        assert!(matches!(cache.visit("k", 1, &i, true), Visit::Keys(_)));
        assert!(matches!(cache.visit("k", 2, &i, true), Visit::Keys(_)));
    }

    /// Through the engine: `history` over the same partitions copies them
    /// after enough calls, one partition a call, answers as a scan does
    /// with them (ranges inside partitions included: the same records,
    /// whole), and reads a partition a commit changed from its tables
    /// again. With the default capacity the copies hold the records; with
    /// a small one the keys alone; with none nothing is copied.
    #[test]
    fn history_uses_the_copies_and_answers_as_a_scan_does() {
        // (capacity, partitions held after the 6 calls, whether with records)
        for (capacity, held_after, records) in [
            (DEFAULT_HISTORY_CACHE_BYTES, [0, 0, 0, 1, 2, 3], true),
            (2_000, [0, 0, 0, 1, 2, 3], false),
            (0, [0; 6], false),
        ] {
            history_with_cache(capacity, held_after, records);
        }
    }

    fn history_with_cache(capacity: usize, held_after: [usize; 6], records: bool) {
        use crate::kinds::standard_kinds;
        use crate::model::{
            JsonObject, MetadataRecord, MetadataTarget, StoredRecord, TimeRange, Timestamp,
        };
        use crate::query::ScanRequest;
        use crate::storage::{Commit, Engine, PreparedRecord};

        const HOUR: i64 = 3_600_000_000;
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &standard_kinds(), 1 << 20)
            .unwrap()
            .with_history_cache(capacity);
        let target = |t: usize| MetadataTarget::new("s", "d", &format!("t{t}"));
        let record = |t: usize, hour: i64| {
            // ~150 bytes a record: 5 a partition pass a quarter of 2,000.
            let mut payload = JsonObject::new();
            payload.insert("note".into(), format!("{hour:0>120}").into());
            payload.insert("rows".into(), hour.into());
            MetadataRecord::new(
                "ingestion_volume",
                target(t),
                payload,
                Timestamp::from_micros(hour * HOUR),
                "p",
            )
        };
        let write = |records: &[MetadataRecord]| {
            let prepared: Vec<_> = records
                .iter()
                .map(|r| PreparedRecord::new(r, Bucket::Day, &[], &[]))
                .collect();
            engine
                .write(&[prepared.as_slice()], Commit::Durable)
                .unwrap();
        };
        let ranges = [
            TimeRange::ALL,
            TimeRange::new(
                Timestamp::from_micros(7 * HOUR),
                Timestamp::from_micros(50 * HOUR),
            ),
        ];
        type Answer = (Vec<StoredRecord>, Vec<StoredRecord>);
        // Each target and range: history's records, and a scan's.
        let answers = || -> Vec<Answer> {
            let mut out = Vec::new();
            for range in ranges {
                for t in 0..5 {
                    let found = engine
                        .history("ingestion_volume", &target(t), range)
                        .unwrap();
                    let request = ScanRequest {
                        kinds: Some(vec!["ingestion_volume".into()]),
                        time: range,
                        targets: Some(vec![target(t).canonical_name()]),
                        ..ScanRequest::default()
                    };
                    let scanned = engine.scan(&request).unwrap().map(|r| r.unwrap());
                    out.push((found, scanned.collect()));
                }
            }
            out
        };
        let agree = |answers: &[Answer]| answers.iter().all(|(h, s)| h == s);
        let with_records = || {
            let slots = engine.history_cache.lock();
            slots
                .kinds
                .values()
                .flat_map(|kind_slots| kind_slots.values())
                .filter_map(|slot| slot.keys.as_ref())
                .all(|keys| keys.holds_records() == records)
        };
        // Three days, four targets, a record every 5 hours.
        write(
            &(0..72)
                .step_by(5)
                .map(|h| record(h as usize % 4, h))
                .collect::<Vec<_>>(),
        );
        // Calls over all three days: the 4th visit of each asks for a copy,
        // and a call makes at most one.
        let mut held = Vec::new();
        for _ in 0..6 {
            engine
                .history("ingestion_volume", &target(0), TimeRange::ALL)
                .unwrap();
            held.push(engine.history_cache.held().0);
        }
        assert_eq!(held, held_after, "capacity {capacity}");
        assert!(with_records(), "capacity {capacity}");
        let stats = engine.history_cache_stats();
        assert_eq!(
            stats,
            HistoryCacheStats {
                n_partitions: held_after[5],
                n_with_records: if records { held_after[5] } else { 0 },
                bytes: engine.history_cache.held().1,
                capacity_bytes: capacity,
            }
        );
        assert_eq!(stats.bytes == 0, capacity == 0);
        let warm = answers();
        assert!(agree(&warm), "capacity {capacity}: {warm:?}");
        assert!(warm.iter().any(|(h, _)| !h.is_empty()));
        // A new record in day 1 changes that partition: read from its tables
        // again (and copied again after more visits), the record in the answer.
        write(&[record(1, 30)]);
        assert_eq!(
            engine.history_cache.held().0,
            held_after[5],
            "nothing let go before a visit"
        );
        let after = answers();
        assert!(agree(&after), "capacity {capacity}: {after:?}");
        assert_ne!(after, warm);
        assert_eq!(
            engine.history_cache.held().0,
            held_after[5],
            "day 1 copied again"
        );
        assert!(with_records(), "capacity {capacity}");
    }
}
