//! Run lineage: the records of one run, the recon results that name it, and
//! the ingestion runs a recon run names.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{distinct_targets, ConsumerError};
use crate::kinds::standard_kinds;
use crate::model::{MetadataTarget, StoredRecord, TimeRange};
use crate::producers::{ReconResult, StandardPayload};
use crate::repository::MetadataRepository;

/// Where [`lineage`] looks: the repository can only read by (target, kind),
/// so the caller names the targets; every (target, kind) pair is read once.
#[derive(Clone, Debug, PartialEq)]
pub struct LineageScope {
    /// The targets to read.
    pub targets: Vec<MetadataTarget>,
    /// The kinds to read; `recon_result` is always read as well.
    pub kinds: Vec<String>,
    /// Only records produced within this range.
    pub range: TimeRange,
}

impl LineageScope {
    /// The six standard kinds of `targets`, at any time.
    pub fn new(targets: Vec<MetadataTarget>) -> Self {
        LineageScope {
            targets,
            kinds: standard_kinds().into_iter().map(|k| k.name).collect(),
            range: TimeRange::ALL,
        }
    }
}

/// The lineage of one run. Every list is ordered by id and holds each
/// record once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lineage {
    /// The run.
    pub run_id: String,
    /// Every record with `context.run_id` equal to the run, across kinds.
    pub records: Vec<StoredRecord>,
    /// The `recon_result` records naming the run in
    /// `payload.ingestion_run_ids`: the checks that covered this run.
    pub checked_by: Vec<StoredRecord>,
    /// The runs named in `payload.ingestion_run_ids` by this run's own
    /// `recon_result` records (when the run is a reconciliation run),
    /// sorted and distinct.
    pub checked_run_ids: Vec<String>,
    /// Every record (any kind in scope) of the runs in `checked_run_ids`:
    /// the ingestion records this run's checks covered.
    pub checked_records: Vec<StoredRecord>,
}

/// The run ids a `recon_result` record names in `payload.ingestion_run_ids`;
/// entries that are not strings name no run and are ignored.
fn named_run_ids(record: &StoredRecord) -> impl Iterator<Item = &str> {
    record
        .record
        .payload
        .get("ingestion_run_ids")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// The lineage of `run_id` within `scope`, in both directions: the run's
/// records and the recon results that name it, and — for a recon run — the
/// ingestion runs its results name and their records.
///
/// This reads every (target, kind) of the scope through `history`. Once the
/// query language is on the repository, the index on
/// `payload.ingestion_run_ids` answers the same question without a scope:
/// `recon_result | where payload.ingestion_run_ids contains $run_id`, with
/// `$run_id` bound as a parameter.
pub fn lineage(
    repository: &dyn MetadataRepository,
    run_id: &str,
    scope: &LineageScope,
) -> Result<Lineage, ConsumerError> {
    let mut kinds: Vec<&str> = scope.kinds.iter().map(String::as_str).collect();
    kinds.push(ReconResult::KIND);
    kinds.sort_unstable();
    kinds.dedup();
    // Every record in scope, by id: a target named twice is read once.
    let mut in_scope: BTreeMap<u64, StoredRecord> = BTreeMap::new();
    for target in distinct_targets(&scope.targets) {
        for kind in &kinds {
            for record in repository.history(target, kind, scope.range)? {
                in_scope.insert(record.id, record);
            }
        }
    }
    let run_of = |r: &StoredRecord| r.record.context.run_id.as_deref() == Some(run_id);
    let is_recon = |r: &StoredRecord| r.record.kind == ReconResult::KIND;

    let records: Vec<StoredRecord> = in_scope.values().filter(|r| run_of(r)).cloned().collect();
    let checked_by = in_scope
        .values()
        .filter(|r| is_recon(r) && named_run_ids(r).any(|id| id == run_id))
        .cloned()
        .collect();
    let checked_run_ids: BTreeSet<String> = records
        .iter()
        .filter(|r| is_recon(r))
        .flat_map(named_run_ids)
        .map(str::to_owned)
        .collect();
    let checked_records = in_scope
        .values()
        .filter(|r| {
            r.record
                .context
                .run_id
                .as_deref()
                .is_some_and(|id| checked_run_ids.contains(id))
        })
        .cloned()
        .collect();
    let checked_run_ids = checked_run_ids.into_iter().collect();
    Ok(Lineage {
        run_id: run_id.to_owned(),
        records,
        checked_by,
        checked_run_ids,
        checked_records,
    })
}
