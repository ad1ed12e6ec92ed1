//! The latest cache: the records that `latest()` has read, by `latest`
//! key, kept in memory, so a repeated lookup skips redb's two b-tree walks
//! (the `latest` entry, then the record in its partition; each walk three
//! page cache lookups, each a lock, a hash probe and an `Arc`) and reads
//! the bytes from a hash map. The bytes are `produced_at ‖ id ‖ encoded
//! record` (the table's value followed by the record); decoding them is
//! left to the caller, as for a value read from redb.
//!
//! **Consistency.** An answer from the cache is one some snapshot of the
//! last applied commit would give, and a reader never sees part of a
//! commit's `latest` changes from the cache and part from a snapshot:
//! - before a write transaction commits, [`LatestCache::begin_commit`]
//!   removes the entries it changed ([`LatestChange`]; every commit says
//!   what it changed, `snapshot::WriteTxn::commit`) and stops fills; so
//!   until the commit is applied those keys are read from snapshots, as
//!   every key was before this cache;
//! - after the commit, under the snapshot lock, [`LatestCache::end_commit`]
//!   records the commit's generation and allows fills again;
//! - a reader that missed fills the cache with what it read from a snapshot
//!   only if no commit is under way and none was applied since that
//!   snapshot's generation ([`LatestCache::fill`] checks both under the
//!   shard's lock), so a value read before a commit is never put back
//!   after it.
//!
//! A changed entry is read from redb again the first time it is asked for
//! after its commit; a write alone never brings an entry in.
//!
//! **Memory.** At most `capacity` bytes by the cache's own count (keys,
//! values and an estimated 96 bytes of overhead per entry; the hash
//! tables keep their largest size after being emptied), split evenly over
//! 16 shards; a shard that would overflow first drops a random half of its
//! entries (every other one in hash order; emptied only if that is still
//! not room enough), so when the pairs asked for do not fit, a shard keeps
//! about half of its entries rather than none. Capacity 0 turns the cache
//! off.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Shards, each behind its own lock, so concurrent readers and fills do not
/// all meet on one lock.
const SHARDS: usize = 16;

/// What an entry costs beyond its key and value bytes: the map slot, the
/// `Arc` header and the allocators' rounding, roughly.
const ENTRY_OVERHEAD: usize = 96;

/// What a write transaction changed in the `latest` table; every commit
/// says (see `snapshot::WriteTxn::commit`).
#[derive(Debug)]
pub(crate) enum LatestChange {
    /// Nothing: the transaction did not write the table.
    Nothing,
    /// The entries of these keys (replaced or removed).
    Keys(Vec<String>),
    /// Anything: the whole cache is emptied.
    All,
}

/// See the module documentation.
pub(crate) struct LatestCache {
    shards: Box<[RwLock<Shard>]>,
    /// Lookups answered and not, per shard (relaxed counters, each on a
    /// cache line of its own).
    counters: Box<[Counters]>,
    /// Random per cache (target names come from producers: no fixed seed
    /// to collide on), shared by the shards' maps.
    hasher: foldhash::fast::RandomState,
    shard_capacity: usize,
}

#[derive(Default)]
#[repr(align(64))]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Shard {
    /// The generation of the last commit applied to this shard.
    generation: u64,
    /// Commits begun and not yet applied (more than one when a commit's
    /// successor begins before the first is applied): no fills meanwhile.
    pending: u32,
    bytes: usize,
    map: HashMap<Box<str>, Arc<[u8]>, foldhash::fast::RandomState>,
}

impl Shard {
    /// Inserts or replaces the entry of `key`. An entry larger than the
    /// whole shard is not kept (and the old one goes).
    fn insert(&mut self, key: Box<str>, value: Arc<[u8]>, capacity: usize) {
        self.remove(&key);
        let cost = entry_cost(&key, &value);
        if cost > capacity {
            return;
        }
        if self.bytes + cost > capacity {
            self.evict_half();
        }
        if self.bytes + cost > capacity {
            self.clear();
        }
        self.bytes += cost;
        self.map.insert(key, value);
    }

    /// Drops every other entry in the map's order, which follows the keys'
    /// hashes (random per cache): a random half, so a full shard stays half
    /// warm instead of starting again from nothing.
    fn evict_half(&mut self) {
        let (mut keep, mut freed) = (false, 0);
        self.map.retain(|key, value| {
            keep = !keep;
            if !keep {
                freed += entry_cost(key, value);
            }
            keep
        });
        self.bytes -= freed;
    }

    fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    fn remove(&mut self, key: &str) {
        if let Some((key, value)) = self.map.remove_entry(key) {
            self.bytes -= entry_cost(&key, &value);
        }
    }
}

fn entry_cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

impl LatestCache {
    /// A cache of at most `capacity` bytes (0: off) for a database whose
    /// last applied commit has `generation` (fills of older snapshots are
    /// refused; one opened later has at least this generation).
    pub(crate) fn new(capacity: usize, generation: u64) -> Self {
        let hasher = foldhash::fast::RandomState::default();
        LatestCache {
            shards: (0..SHARDS)
                .map(|_| {
                    RwLock::new(Shard {
                        generation,
                        pending: 0,
                        bytes: 0,
                        map: HashMap::with_hasher(hasher.clone()),
                    })
                })
                .collect(),
            counters: (0..SHARDS).map(|_| Counters::default()).collect(),
            hasher,
            shard_capacity: capacity / SHARDS,
        }
    }

    /// Whether the cache holds anything at all (capacity above 0).
    pub(crate) fn enabled(&self) -> bool {
        self.shard_capacity > 0
    }

    fn shard_index(&self, key: &str) -> usize {
        // Bits 32 and up pick the shard: hashbrown probes from the low bits
        // and tags each slot with the top 7, and a shard whose keys all
        // agreed on either would have fewer distinct probe starts or tags.
        let hash = self.hasher.hash_one(key);
        (hash >> 32) as usize % SHARDS
    }

    /// The cached value of `key`, if any.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        if !self.enabled() {
            return None;
        }
        let index = self.shard_index(key);
        let found = read(&self.shards[index]).map.get(key).cloned();
        let counter = match found {
            Some(_) => &self.counters[index].hits,
            None => &self.counters[index].misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches `value`, read from a snapshot of `generation`, unless a
    /// commit is under way or has been applied since (then the value may
    /// be stale).
    pub(crate) fn fill(&self, key: &str, generation: u64, value: &[u8]) {
        if !self.enabled() {
            return;
        }
        let lock = &self.shards[self.shard_index(key)];
        let fillable = |shard: &Shard| shard.pending == 0 && shard.generation == generation;
        // Most refusals need no write lock.
        if !fillable(&read(lock)) {
            return;
        }
        let mut shard = write(lock);
        if fillable(&shard) {
            shard.insert(key.into(), value.into(), self.shard_capacity);
        }
    }

    /// Called before a write transaction commits: removes the entries
    /// `change` names and stops fills until [`LatestCache::end_commit`].
    pub(crate) fn begin_commit(&self, change: &LatestChange) {
        if !self.enabled() {
            return;
        }
        // Hashed before the locks are taken, so readers wait less.
        let keys: Vec<(usize, &str)> = match change {
            LatestChange::Keys(keys) => keys
                .iter()
                .map(|k| (self.shard_index(k), k.as_str()))
                .collect(),
            LatestChange::Nothing | LatestChange::All => Vec::new(),
        };
        let mut shards: Vec<RwLockWriteGuard<'_, Shard>> = self.shards.iter().map(write).collect();
        if let LatestChange::All = change {
            for shard in &mut shards {
                shard.clear();
            }
        }
        for (index, key) in keys {
            shards[index].remove(key);
        }
        for shard in &mut shards {
            shard.pending += 1;
        }
    }

    /// Called after the commit (whether or not it succeeded, and on a
    /// panic too), with the snapshot lock held and the generation it was
    /// given.
    pub(crate) fn end_commit(&self, generation: u64) {
        if !self.enabled() {
            return;
        }
        for shard in self.shards.iter() {
            let mut shard = write(shard);
            shard.pending = shard.pending.saturating_sub(1);
            shard.generation = shard.generation.max(generation);
        }
    }

    /// What the cache holds now.
    pub(crate) fn stats(&self) -> LatestCacheStats {
        let mut stats = self.shards.iter().fold(
            LatestCacheStats {
                capacity_bytes: self.shard_capacity * SHARDS,
                ..LatestCacheStats::default()
            },
            |mut stats, shard| {
                let shard = read(shard);
                stats.n_entries += shard.map.len();
                stats.bytes += shard.bytes;
                stats
            },
        );
        for counters in self.counters.iter() {
            stats.n_hits += counters.hits.load(Ordering::Relaxed);
            stats.n_misses += counters.misses.load(Ordering::Relaxed);
        }
        stats
    }

    /// Entries and bytes held (for tests).
    #[cfg(test)]
    pub(crate) fn usage(&self) -> (usize, usize) {
        let stats = self.stats();
        (stats.n_entries, stats.bytes)
    }
}

/// What the latest cache holds (see `Store::latest_cache_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatestCacheStats {
    /// Entries: (kind, target) pairs whose `latest` entry is in memory.
    pub n_entries: usize,
    /// Their bytes by the cache's own count: keys, values and a fixed
    /// estimate of each entry's overhead (96 bytes), not the allocator's.
    pub bytes: usize,
    /// The capacity the count is held under.
    pub capacity_bytes: usize,
    /// `latest` lookups the cache answered since the store was opened.
    pub n_hits: u64,
    /// `latest` lookups it could not answer (read from redb, and then
    /// cached when no commit was under way). With the cache off, both
    /// counts stay 0.
    pub n_misses: u64,
}

// The guarded values are caches whose every update leaves them consistent
// (a map and its byte count updated together): a panic elsewhere cannot
// leave one half-done, so a poisoned lock is still usable.
fn read(lock: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(lock: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ingestion_volume\0s.d.t";

    fn value(n: u8) -> Vec<u8> {
        vec![n; 100]
    }

    #[test]
    fn a_fill_of_the_current_generation_is_kept_and_returned() {
        let cache = LatestCache::new(1 << 20, 0);
        assert!(cache.get(KEY).is_none());
        cache.fill(KEY, 0, &value(1));
        assert_eq!(cache.get(KEY).as_deref(), Some(&value(1)[..]));
        assert!(cache.get("ingestion_volume\0s.d.u").is_none());
        let stats = cache.stats();
        assert_eq!((stats.n_hits, stats.n_misses), (1, 2));
        assert_eq!(stats.n_entries, 1);
    }

    #[test]
    fn a_fill_from_before_the_last_commit_is_refused() {
        let cache = LatestCache::new(1 << 20, 0);
        cache.begin_commit(&LatestChange::Nothing);
        cache.end_commit(1);
        cache.fill(KEY, 0, &value(1));
        assert!(cache.get(KEY).is_none(), "read from generation 0, after 1");
        cache.fill(KEY, 1, &value(2));
        assert_eq!(cache.get(KEY).as_deref(), Some(&value(2)[..]));
    }

    #[test]
    fn no_fill_is_kept_while_a_commit_is_under_way() {
        let cache = LatestCache::new(1 << 20, 0);
        cache.begin_commit(&LatestChange::Keys(vec![KEY.to_owned()]));
        cache.fill(KEY, 0, &value(1));
        assert!(cache.get(KEY).is_none());
        // A second commit begins before the first is applied.
        cache.begin_commit(&LatestChange::Nothing);
        cache.end_commit(1);
        cache.fill(KEY, 1, &value(1));
        assert!(
            cache.get(KEY).is_none(),
            "the second commit is still under way"
        );
        cache.end_commit(2);
        cache.fill(KEY, 2, &value(3));
        assert_eq!(cache.get(KEY).as_deref(), Some(&value(3)[..]));
    }

    #[test]
    fn a_commit_removes_the_entries_it_changed_and_keeps_the_rest() {
        let cache = LatestCache::new(1 << 20, 0);
        let other = "ingestion_volume\0s.d.u";
        cache.fill(KEY, 0, &value(1));
        cache.fill(other, 0, &value(2));
        cache.begin_commit(&LatestChange::Keys(vec![KEY.to_owned()]));
        assert!(cache.get(KEY).is_none(), "removed before the commit");
        assert_eq!(cache.get(other).as_deref(), Some(&value(2)[..]));
        cache.end_commit(1);
        assert!(cache.get(KEY).is_none(), "read again from redb");
        cache.begin_commit(&LatestChange::All);
        cache.end_commit(2);
        assert!(cache.get(other).is_none(), "All empties the cache");
        assert_eq!(cache.usage(), (0, 0));
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        // 16 shards of 2 entries of (22 + 100 + overhead) bytes each.
        let capacity = SHARDS * 2 * entry_cost(KEY, &value(0));
        let cache = LatestCache::new(capacity, 0);
        for i in 0..1000 {
            cache.fill(&format!("{KEY}{i}"), 0, &value(1));
            let (_, bytes) = cache.usage();
            assert!(bytes <= capacity, "{bytes} > {capacity} after {i}");
        }
        let (n, _) = cache.usage();
        assert!(n > 0 && n <= SHARDS * 2, "{n} entries");
        // Replacing an entry counts its bytes once.
        let cache = LatestCache::new(1 << 20, 0);
        cache.fill(KEY, 0, &value(1));
        cache.fill(KEY, 0, &value(2));
        assert_eq!(cache.usage(), (1, entry_cost(KEY, &value(2))));
    }

    /// A full shard drops half of its entries for a new one, not all.
    #[test]
    fn a_full_shard_keeps_half_of_its_entries() {
        let cost = entry_cost("k00", &value(0));
        let capacity = 8 * cost;
        let mut shard = Shard {
            generation: 0,
            pending: 0,
            bytes: 0,
            map: HashMap::default(),
        };
        for i in 0..8 {
            shard.insert(format!("k{i:02}").into(), value(0).into(), capacity);
        }
        assert_eq!((shard.map.len(), shard.bytes), (8, capacity));
        shard.insert("k99".into(), value(0).into(), capacity);
        assert_eq!(shard.map.len(), 5, "half of 8 kept, and the new one");
        assert!(shard.map.contains_key("k99"));
        assert_eq!(shard.bytes, 5 * cost);
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let cache = LatestCache::new(0, 0);
        cache.fill(KEY, 0, &value(1));
        assert!(cache.get(KEY).is_none());
        cache.begin_commit(&LatestChange::All);
        cache.end_commit(1);
        assert_eq!(cache.usage(), (0, 0));
    }
}
