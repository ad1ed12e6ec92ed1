//! [`MemorySource`]: a [`RecordSource`] over records held in memory.
//!
//! It answers every request exactly and plainly (a filtered `Vec`), which
//! makes it the reference the real store is compared with, and the source
//! of the query engine's own tests.

use std::collections::{BTreeMap, BTreeSet};

use super::source::{RecordIter, RecordSource, ScanDescription, ScanRequest, TargetInfo};
use crate::model::{StoredRecord, MICROS_PER_DAY};

/// Records in memory, kept in ascending (`produced_at`, `id`) order.
#[derive(Clone, Debug, Default)]
pub struct MemorySource {
    records: Vec<StoredRecord>,
}

impl MemorySource {
    /// A source over `records` (any order).
    pub fn new(mut records: Vec<StoredRecord>) -> Self {
        records.sort_by_key(|r| (r.record.produced_at, r.id));
        MemorySource { records }
    }

    /// The records, in ascending (`produced_at`, `id`) order.
    pub fn records(&self) -> &[StoredRecord] {
        &self.records
    }

    /// Does `r` satisfy every constraint of `request`?
    pub fn matches(request: &ScanRequest, r: &StoredRecord) -> bool {
        let rec = &r.record;
        let within = |list: &Option<Vec<String>>, value: &str| {
            list.as_ref().is_none_or(|l| l.iter().any(|v| v == value))
        };
        within(&request.kinds, &rec.kind)
            && request.time.contains(rec.produced_at)
            && within(&request.targets, &rec.target.key())
            && within(&request.producers, &rec.producer_id)
            && request.run_ids.as_ref().is_none_or(|ids| {
                rec.context
                    .run_id
                    .as_ref()
                    .is_some_and(|run| ids.iter().any(|v| v == run))
            })
            && request.paths.iter().all(|c| c.matches(rec))
    }
}

/// The partition name of a record: `kind/YYYY-MM-DD` (daily buckets).
fn partition_of(r: &StoredRecord) -> String {
    let day = r.record.produced_at.as_micros().div_euclid(MICROS_PER_DAY);
    let date = crate::model::Timestamp::from_micros(day.saturating_mul(MICROS_PER_DAY))
        .to_rfc3339()
        .chars()
        .take(10)
        .collect::<String>();
    format!("{}/{date}", r.record.kind)
}

impl RecordSource for MemorySource {
    fn scan(&self, request: &ScanRequest) -> crate::Result<RecordIter<'_>> {
        let request = request.clone();
        let projection = request.projection.clone();
        Ok(Box::new(
            self.records
                .iter()
                .filter(move |r| Self::matches(&request, r))
                .map(move |r| {
                    // Projected like the store's records, so that a
                    // projection missing a field the query reads shows here.
                    Ok(match &projection {
                        None => r.clone(),
                        Some(p) => StoredRecord {
                            id: r.id,
                            record: p.apply(&r.record),
                        },
                    })
                }),
        ))
    }

    fn latest_records(
        &self,
        kinds: Option<&[String]>,
        targets: Option<&[String]>,
    ) -> crate::Result<Vec<StoredRecord>> {
        let mut latest: BTreeMap<(String, String), &StoredRecord> = BTreeMap::new();
        for r in &self.records {
            let name = r.record.target.key();
            if kinds.is_some_and(|k| !k.contains(&r.record.kind))
                || targets.is_some_and(|t| !t.contains(&name))
            {
                continue;
            }
            // Records are in ascending order: the last one seen wins.
            latest.insert((r.record.kind.clone(), name), r);
        }
        Ok(latest.into_values().cloned().collect())
    }

    fn kind_names(&self) -> crate::Result<Vec<String>> {
        let kinds: BTreeSet<&str> = self
            .records
            .iter()
            .map(|r| r.record.kind.as_str())
            .collect();
        Ok(kinds.into_iter().map(str::to_owned).collect())
    }

    fn targets(&self) -> crate::Result<Vec<TargetInfo>> {
        let mut seen = BTreeMap::new();
        for r in &self.records {
            let t = &r.record.target;
            seen.entry(t.key()).or_insert_with(|| TargetInfo {
                source_id: t.source_id.clone(),
                schema: t.schema.clone(),
                table: t.table.clone(),
                name: t.canonical_name(),
            });
        }
        Ok(seen.into_values().collect())
    }

    fn producer_ids(&self) -> crate::Result<Vec<String>> {
        let ids: BTreeSet<&str> = self
            .records
            .iter()
            .map(|r| r.record.producer_id.as_str())
            .collect();
        Ok(ids.into_iter().map(str::to_owned).collect())
    }

    fn describe_scan(&self, request: &ScanRequest) -> crate::Result<ScanDescription> {
        let mut read = BTreeSet::new();
        let mut pruned = BTreeSet::new();
        for r in &self.records {
            if request
                .kinds
                .as_ref()
                .is_some_and(|k| !k.contains(&r.record.kind))
            {
                continue;
            }
            let partition = partition_of(r);
            if request.time.contains(r.record.produced_at) {
                read.insert(partition);
            } else {
                pruned.insert(partition);
            }
        }
        let pruned = pruned.difference(&read).count();
        let index = if !request.use_indexes {
            None
        } else if request.targets.is_some() {
            Some("target".to_owned())
        } else if request.run_ids.is_some() {
            Some("run_id".to_owned())
        } else {
            None
        };
        let mut row_filters = Vec::new();
        let mut constraint = |name: &str, list: &Option<Vec<String>>| {
            if let Some(list) = list {
                if index.as_deref() != Some(name) {
                    row_filters.push(format!("{name} in [{}]", list.join(", ")));
                }
            }
        };
        constraint("target", &request.targets);
        constraint("producer", &request.producers);
        constraint("run_id", &request.run_ids);
        Ok(ScanDescription {
            partitions: read.into_iter().collect(),
            partitions_pruned: pruned,
            index,
            row_filters,
        })
    }
}
