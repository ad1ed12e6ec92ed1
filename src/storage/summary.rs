//! Partition summaries: per partition, the producer dictionary ids of its
//! records, and for each path its kind summarizes
//! ([`KindSpec::summarized_paths`](crate::kinds::KindSpec)) the smallest
//! and largest index key (see `path_index`) any record of the partition
//! has there. A scan for some producers, or with a constraint on such a
//! path, skips partitions that cannot match: a block-range index, one
//! entry per partition instead of one per record, made for values that
//! follow `produced_at` (a record's window) or are few in a partition
//! (producers).
//!
//! The invariant: a summary's producers, when known, include every
//! producer of the partition's records; where it names a path, every key
//! at that path of every record in the partition lies within its range
//! (`None`: no record has a key there). A path it does not name is
//! unknown, and nothing is skipped for it. The writer keeps this true: it
//! starts a path's range only in a partition that was empty when its
//! transaction began, widens it with each record written, and forgets it
//! when a record of the transaction was prepared without the path (the
//! kind changed meanwhile).

use super::path_index::{PathConstraint, PathMatch};
use super::StorageError;

/// One partition's summary (the value of its `summaries` entry).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PartSummary {
    /// The producer dictionary ids of its records, sorted; `None` when
    /// unknown (a version-4 partition whose by-producer index was missing).
    pub producers: Option<Vec<u64>>,
    pub paths: Vec<PathSummary>,
}

/// The range of one path's keys in a partition; `None` when no record has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PathSummary {
    pub path: String,
    pub range: Option<(Vec<u8>, Vec<u8>)>,
}

/// The smallest and largest key at a path, borrowed.
pub(crate) type KeyRange<'a> = (&'a [u8], &'a [u8]);

/// A transaction's view of one partition's new records: the summarized
/// paths they were prepared with, and their keys' range at each; `None`
/// once two records disagree on the paths.
pub(crate) type NewRanges<'g> = Option<Vec<(&'g str, Option<KeyRange<'g>>)>>;

impl PartSummary {
    /// The path's summary, if the partition has one.
    pub fn get(&self, path: &str) -> Option<&PathSummary> {
        self.paths.iter().find(|p| p.path == path)
    }

    /// `[varint n]` then `n - 1` producer ids as varints (`n` = 0: unknown),
    /// then per path `[varint n][n bytes path][varint n][n bytes smallest
    /// key][varint n][n bytes largest key]`; both lengths 0 when no record
    /// has a key there (keys are never empty).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match &self.producers {
            None => put_varint(&mut out, 0),
            Some(ids) => {
                put_varint(&mut out, ids.len() as u64 + 1);
                for &id in ids {
                    put_varint(&mut out, id);
                }
            }
        }
        for p in &self.paths {
            put_bytes(&mut out, p.path.as_bytes());
            let (min, max) = p
                .range
                .as_ref()
                .map_or((&[][..], &[][..]), |(a, b)| (a.as_slice(), b.as_slice()));
            put_bytes(&mut out, min);
            put_bytes(&mut out, max);
        }
        out
    }

    pub fn decode(mut bytes: &[u8]) -> Result<Self, StorageError> {
        let corrupt = || StorageError::Corrupt("partition summary cut short".into());
        let producers = match take_varint(&mut bytes).ok_or_else(corrupt)? {
            0 => None,
            n => Some(
                (1..n)
                    .map(|_| take_varint(&mut bytes).ok_or_else(corrupt))
                    .collect::<Result<Vec<u64>, _>>()?,
            ),
        };
        let mut paths = Vec::new();
        while !bytes.is_empty() {
            let path = take_bytes(&mut bytes).ok_or_else(corrupt)?;
            let path = std::str::from_utf8(path)
                .map_err(|_| StorageError::Corrupt("partition summary path not UTF-8".into()))?;
            let min = take_bytes(&mut bytes).ok_or_else(corrupt)?;
            let max = take_bytes(&mut bytes).ok_or_else(corrupt)?;
            paths.push(PathSummary {
                path: path.to_owned(),
                range: (!min.is_empty()).then(|| (min.to_vec(), max.to_vec())),
            });
        }
        Ok(PartSummary { producers, paths })
    }

    /// Whether the partition may hold a record of one of these producers.
    pub fn may_have_producer(&self, ids: &[u64]) -> bool {
        self.producers
            .as_ref()
            .is_none_or(|have| ids.iter().any(|id| have.binary_search(id).is_ok()))
    }

    /// The summary after a transaction wrote records with `new` paths'
    /// ranges and `new_producers` (sorted) into the partition this summary
    /// (`old`, if any) belongs to; `fresh` when the partition was empty
    /// before the transaction.
    pub fn next(
        old: Option<&PartSummary>,
        fresh: bool,
        new: &NewRanges<'_>,
        new_producers: &[u64],
    ) -> PartSummary {
        let producers = if fresh {
            Some(new_producers.to_vec())
        } else {
            old.and_then(|o| o.producers.as_ref()).map(|have| {
                let mut all: Vec<u64> = have.iter().chain(new_producers).copied().collect();
                all.sort_unstable();
                all.dedup();
                all
            })
        };
        let Some(new) = new else {
            return PartSummary {
                producers,
                paths: Vec::new(),
            };
        };
        let paths = new
            .iter()
            .filter_map(|&(path, range)| {
                let owned = range.map(|(a, b)| (a.to_vec(), b.to_vec()));
                if fresh {
                    return Some(PathSummary {
                        path: path.to_owned(),
                        range: owned,
                    });
                }
                // A path the partition's older records were not summarized
                // for stays unknown.
                let prior = old?.get(path)?;
                Some(PathSummary {
                    path: path.to_owned(),
                    range: union(prior.range.clone(), owned),
                })
            })
            .collect();
        PartSummary { producers, paths }
    }
}

/// Adds one record's summarized paths and ranges to a transaction's
/// `acc` for its partition (`started` once the first record was added).
pub(crate) fn add_record<'g>(
    acc: &mut NewRanges<'g>,
    started: &mut bool,
    record: impl Iterator<Item = (&'g str, Option<KeyRange<'g>>)>,
) {
    if !*started {
        *started = true;
        *acc = Some(record.collect());
        return;
    }
    let Some(paths) = acc else {
        return;
    };
    let mut n = 0;
    for (path, range) in record {
        match paths.get_mut(n) {
            Some((known, have)) if *known == path => {
                *have = match (*have, range) {
                    (None, r) | (r, None) => r,
                    (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
                };
            }
            _ => {
                *acc = None;
                return;
            }
        }
        n += 1;
    }
    if n != paths.len() {
        *acc = None;
    }
}

fn union(
    a: Option<(Vec<u8>, Vec<u8>)>,
    b: Option<(Vec<u8>, Vec<u8>)>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    match (a, b) {
        (None, r) | (r, None) => r,
        (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
    }
}

/// Whether a partition whose keys at the constraint's path lie in `range`
/// (`None`: it has none) may hold a record the constraint selects. Never
/// false for a partition that holds one (see `path_index::KeyTest`: a
/// selected record has a key the constraint matches).
pub(crate) fn may_match(c: &PathConstraint, range: Option<KeyRange<'_>>) -> bool {
    let Some((min, max)) = range else {
        return false;
    };
    match &c.matcher {
        PathMatch::AnyOf(values) => values.iter().any(|v| {
            let key = v.key();
            min <= key.as_slice() && key.as_slice() <= max
        }),
        PathMatch::Range { lower, upper } => {
            let lower = lower.as_ref().map(|(v, inclusive)| (v.key(), *inclusive));
            let upper = upper.as_ref().map(|(v, inclusive)| (v.key(), *inclusive));
            // A range matches keys of its bounds' type only: those lie
            // between the type's tag byte and the next.
            let Some(tag) = lower
                .as_ref()
                .or(upper.as_ref())
                .and_then(|(k, _)| k.first())
            else {
                return true;
            };
            let above = match &lower {
                Some((bound, true)) => max >= bound.as_slice(),
                Some((bound, false)) => max > bound.as_slice(),
                None => max >= &[*tag][..],
            };
            let below = match &upper {
                Some((bound, true)) => min <= bound.as_slice(),
                Some((bound, false)) => min < bound.as_slice(),
                None => tag.checked_add(1).is_none_or(|next| min < &[next][..]),
            };
            above && below
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    let mut shift = 0;
    loop {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        if shift > 63 {
            return None;
        }
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(n);
        }
        shift += 7;
    }
}

fn take_bytes<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = take_varint(bytes)?;
    let (head, rest) = bytes.split_at_checked(usize::try_from(n).ok()?)?;
    *bytes = rest;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;
    use crate::storage::path_index::IndexValue;

    fn instant(micros: i64) -> IndexValue {
        IndexValue::Instant(Timestamp::from_micros(micros))
    }

    fn range(
        lower: Option<(IndexValue, bool)>,
        upper: Option<(IndexValue, bool)>,
    ) -> PathConstraint {
        PathConstraint {
            path: "extras.window_start".into(),
            matcher: PathMatch::Range { lower, upper },
        }
    }

    #[test]
    fn encoding_round_trips() {
        let s = PartSummary {
            producers: Some(vec![1, 300]),
            paths: vec![
                PathSummary {
                    path: "extras.window_start".into(),
                    range: Some((instant(5).key(), instant(900).key())),
                },
                PathSummary {
                    path: "payload.é".into(),
                    range: None,
                },
            ],
        };
        assert_eq!(PartSummary::decode(&s.encode()).unwrap(), s);
        let unknown = PartSummary::default();
        assert_eq!(PartSummary::decode(&unknown.encode()).unwrap(), unknown);
        assert!(PartSummary::decode(&[]).is_err());
        assert!(PartSummary::decode(&[0, 5, b'a']).is_err());
        assert!(PartSummary::decode(&[3, 1]).is_err());
        assert!(PartSummary::decode(&[0xff; 12]).is_err());
    }

    /// `may_match` against the brute force: is there a key in `[min, max]`
    /// among the candidates that the constraint matches?
    #[test]
    fn may_match_is_never_false_where_a_key_in_range_matches() {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for m in [-50, 0, 10, 20, 30, 40, 1000] {
            keys.push(instant(m).key());
        }
        for f in [-1.5, 0.0, 10.0, 20.0, 1e9] {
            keys.push(IndexValue::Number(f).key());
        }
        for s in ["a", "m", "z"] {
            keys.push(IndexValue::String(s.into()).key());
        }
        keys.push(IndexValue::Bool(true).key());
        keys.sort();
        let values = [
            instant(10),
            instant(25),
            IndexValue::Number(10.0),
            IndexValue::String("m".into()),
        ];
        let mut constraints = Vec::new();
        for v in &values {
            for inc in [true, false] {
                constraints.push(range(Some((v.clone(), inc)), None));
                constraints.push(range(None, Some((v.clone(), inc))));
                for w in &values {
                    constraints.push(range(Some((v.clone(), inc)), Some((w.clone(), !inc))));
                }
            }
            constraints.push(PathConstraint {
                path: "extras.window_start".into(),
                matcher: PathMatch::AnyOf(vec![v.clone()]),
            });
        }
        let mut pruned = 0;
        for c in &constraints {
            let test = super::super::path_index::KeyTest::new(c);
            assert!(!may_match(c, None));
            for i in 0..keys.len() {
                for j in i..keys.len() {
                    let (min, max) = (&keys[i], &keys[j]);
                    let holds = keys[i..=j].iter().any(|k| test.matches_key(k));
                    let may = may_match(c, Some((min, max)));
                    assert!(may || !holds, "{c:?} on [{min:?}, {max:?}]");
                    pruned += usize::from(!may);
                }
            }
        }
        assert!(pruned > 100, "summaries prune nothing: {pruned}");
    }

    #[test]
    fn next_keeps_what_is_known_and_only_that() {
        let (a, b, c) = (instant(1).key(), instant(5).key(), instant(9).key());
        let path = "extras.window_start";
        let some = |x: &[u8], y: &[u8]| Some((x.to_vec(), y.to_vec()));
        let new: NewRanges<'_> = Some(vec![(path, Some((&b[..], &c[..])))]);
        // A fresh partition takes the transaction's range and producers.
        let fresh = PartSummary::next(None, true, &new, &[4, 7]);
        assert_eq!(fresh.get(path).unwrap().range, some(&b, &c));
        assert_eq!(fresh.producers, Some(vec![4, 7]));
        assert!(fresh.may_have_producer(&[1, 7]) && !fresh.may_have_producer(&[5]));
        // An older partition without a summary stays unknown.
        let unknown = PartSummary::next(None, false, &new, &[4]);
        assert!(unknown.get(path).is_none());
        assert_eq!(unknown.producers, None);
        assert!(unknown.may_have_producer(&[9]));
        // One with a summary widens it.
        let old = PartSummary {
            producers: Some(vec![2, 7]),
            paths: vec![PathSummary {
                path: path.into(),
                range: some(&a, &b),
            }],
        };
        let widened = PartSummary::next(Some(&old), false, &new, &[4, 7]);
        assert_eq!(widened.get(path).unwrap().range, some(&a, &c));
        assert_eq!(widened.producers, Some(vec![2, 4, 7]));
        // Records prepared without the path, or disagreeing: the path is
        // forgotten, the producers kept.
        let only_producers = PartSummary {
            producers: Some(vec![2, 7]),
            paths: Vec::new(),
        };
        assert_eq!(
            PartSummary::next(Some(&old), false, &Some(vec![]), &[7]),
            only_producers
        );
        assert_eq!(
            PartSummary::next(Some(&old), false, &None, &[2]),
            only_producers
        );
    }

    #[test]
    fn add_record_merges_and_notices_disagreement() {
        let (a, b, c) = (instant(1).key(), instant(5).key(), instant(9).key());
        let (p, q) = ("extras.window_start", "extras.window_end");
        let mut acc: NewRanges<'_> = None;
        let mut started = false;
        add_record(
            &mut acc,
            &mut started,
            [(p, Some((&b[..], &b[..]))), (q, None)].into_iter(),
        );
        add_record(
            &mut acc,
            &mut started,
            [(p, Some((&a[..], &a[..]))), (q, Some((&c[..], &c[..])))].into_iter(),
        );
        assert_eq!(
            acc,
            Some(vec![
                (p, Some((&a[..], &b[..]))),
                (q, Some((&c[..], &c[..])))
            ])
        );
        add_record(&mut acc, &mut started, [(p, None)].into_iter());
        assert_eq!(acc, None);
        add_record(&mut acc, &mut started, [(p, None), (q, None)].into_iter());
        assert_eq!(acc, None, "a disagreement is not forgotten");
    }
}
