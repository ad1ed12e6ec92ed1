//! The by-target keys of often-read partitions, in memory, for `history`.
//!
//! `history` finds a target's records partition by partition, one seek
//! into each partition's by-target index; at N = 1,000,000 those 31 seeks
//! (30 days of a day-bucketed kind) were a third of a call, mostly waiting
//! on memory for redb's pages. A partition that `history` has visited
//! [`BUILD_AFTER`] times gets its by-target keys copied into one sorted
//! array, which later calls search instead.
//!
//! Entries are stamped with the partition's record count and smallest and
//! largest ids (from its catalog entry): records are only ever added to a
//! partition, with new ids, and ids are never reused, so equal stamps
//! mean equal contents. A commit that adds records changes the stamp, and
//! the next visit starts counting again; a dropped partition's entry is
//! never matched again. The cache holds at most [`MAX_KEYS`] keys; past
//! that it is emptied and fills again from the partitions still read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::read::PartitionInfo;

/// Visits of a partition (at one stamp) before its keys are copied.
pub(crate) const BUILD_AFTER: u32 = 4;

/// At most this many keys (24 bytes each: 24 MiB) are held.
pub(crate) const MAX_KEYS: usize = 1 << 20;

/// One by-target index key: (target id, `produced_at`, record id).
pub(crate) type TargetKey = (u64, i64, u64);

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
    keys: Option<Arc<[TargetKey]>>,
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct TargetKeysCache {
    /// Per kind, per bucket start.
    slots: Mutex<HashMap<String, HashMap<i64, Slot>>>,
}

/// What [`TargetKeysCache::visit`] found for a partition.
pub(crate) enum Visit {
    /// Its keys, sorted.
    Keys(Arc<[TargetKey]>),
    /// Not held: seek the index. `build` when the caller should copy the
    /// keys and [`TargetKeysCache::put`] them.
    Seek { build: bool },
}

impl TargetKeysCache {
    /// Counts a visit of a partition and returns its keys if held.
    pub(crate) fn visit(&self, kind: &str, bucket_start: i64, info: &PartitionInfo) -> Visit {
        let mut slots = self.lock();
        if !slots.contains_key(kind) {
            // Once per kind: no allocation for the name on later visits.
            slots.insert(kind.to_owned(), HashMap::new());
        }
        match slots.get_mut(kind) {
            Some(kind_slots) => {
                Self::count(kind_slots.entry(bucket_start).or_default(), stamp(info))
            }
            None => Visit::Seek { build: false },
        }
    }

    fn count(slot: &mut Slot, stamp: Stamp) -> Visit {
        if slot.stamp != stamp {
            *slot = Slot {
                stamp,
                ..Slot::default()
            };
        }
        if let Some(keys) = &slot.keys {
            return Visit::Keys(Arc::clone(keys));
        }
        slot.visits = slot.visits.saturating_add(1);
        Visit::Seek {
            build: slot.visits >= BUILD_AFTER,
        }
    }

    /// Holds a partition's keys, read at the stamp of `info`.
    pub(crate) fn put(
        &self,
        kind: &str,
        bucket_start: i64,
        info: &PartitionInfo,
        keys: Arc<[TargetKey]>,
    ) {
        let mut slots = self.lock();
        let held: usize = slots
            .values()
            .flat_map(HashMap::values)
            .filter_map(|slot| slot.keys.as_ref().map(|k| k.len()))
            .sum();
        if held + keys.len() > MAX_KEYS {
            slots.clear();
            if keys.len() > MAX_KEYS {
                return;
            }
        }
        let slot = slots
            .entry(kind.to_owned())
            .or_default()
            .entry(bucket_start)
            .or_default();
        if slot.stamp == stamp(info) || slot.keys.is_none() {
            *slot = Slot {
                stamp: stamp(info),
                visits: BUILD_AFTER,
                keys: Some(keys),
            };
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<i64, Slot>>> {
        // A cache: a panic elsewhere cannot leave it wrong, only incomplete.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The keys of `target` produced in `[from, until)`, from sorted keys.
pub(crate) fn keys_of(
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

    #[test]
    fn keys_are_held_after_enough_visits_and_dropped_when_the_partition_changes() {
        let cache = TargetKeysCache::default();
        let before = info(3, 3);
        for _ in 1..BUILD_AFTER {
            assert!(matches!(
                cache.visit("k", 0, &before),
                Visit::Seek { build: false }
            ));
        }
        assert!(matches!(
            cache.visit("k", 0, &before),
            Visit::Seek { build: true }
        ));
        cache.put(
            "k",
            0,
            &before,
            Arc::from(vec![(1, 1, 1), (1, 2, 2), (2, 3, 3)]),
        );
        let Visit::Keys(keys) = cache.visit("k", 0, &before) else {
            panic!("keys not held");
        };
        assert_eq!(keys.len(), 3);
        // Another partition of the kind, and the same bucket of another kind, count apart.
        assert!(matches!(cache.visit("k", 1, &before), Visit::Seek { .. }));
        assert!(matches!(cache.visit("j", 0, &before), Visit::Seek { .. }));
        // A commit added a record: the keys are no longer used.
        let after = info(4, 4);
        assert!(matches!(
            cache.visit("k", 0, &after),
            Visit::Seek { build: false }
        ));
        // The same count with other ids (expired and written again): not used either.
        let other = info(3, 9);
        assert!(matches!(cache.visit("k", 0, &other), Visit::Seek { .. }));
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
    fn the_cache_empties_itself_past_its_bound() {
        let cache = TargetKeysCache::default();
        let i = info(1, 1);
        let big: Arc<[TargetKey]> = Arc::from(vec![(0, 0, 0); MAX_KEYS / 2 + 1]);
        cache.put("k", 0, &i, Arc::clone(&big));
        assert!(matches!(cache.visit("k", 0, &i), Visit::Keys(_)));
        cache.put("k", 1, &i, big);
        assert!(matches!(cache.visit("k", 1, &i), Visit::Keys(_)));
        assert!(
            matches!(cache.visit("k", 0, &i), Visit::Seek { .. }),
            "the first partition's keys were let go"
        );
    }
}
