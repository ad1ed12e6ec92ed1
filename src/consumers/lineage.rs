//! Run lineage: the records of one run, the recon results that name it, and
//! the ingestion runs a recon run names.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{distinct_targets, ConsumerError};
use crate::kinds::standard_kinds;
use crate::model::{MetadataTarget, StoredRecord, TimeRange};
use crate::producers::{ReconResult, StandardPayload};
use crate::query::{IndexValue, PathConstraint, PathMatch, ScanRequest};
use crate::repository::MetadataRepository;

/// Where [`lineage`] looks: targets (none: every target), kinds and a time range.
#[derive(Clone, Debug, PartialEq)]
pub struct LineageScope {
    /// The targets to read; empty means every target.
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
/// Answered through the indexes with [`MetadataRepository::find`]: the run-id
/// index for the run's records, and the path index on
/// `payload.ingestion_run_ids` for the recon results that name it.
pub fn lineage(
    repository: &dyn MetadataRepository,
    run_id: &str,
    scope: &LineageScope,
) -> Result<Lineage, ConsumerError> {
    let mut kinds: Vec<String> = scope.kinds.clone();
    kinds.push(ReconResult::KIND.to_owned());
    kinds.sort_unstable();
    kinds.dedup();
    let targets = (!scope.targets.is_empty()).then(|| {
        distinct_targets(&scope.targets)
            .into_iter()
            .map(MetadataTarget::key)
            .collect::<Vec<_>>()
    });
    let request = |run_ids: Option<Vec<String>>, paths: Vec<PathConstraint>| ScanRequest {
        kinds: Some(kinds.clone()),
        time: scope.range,
        targets: targets.clone(),
        run_ids,
        paths,
        ..ScanRequest::default()
    };
    let by_id = |mut v: Vec<StoredRecord>| {
        v.sort_by_key(|r| r.id);
        v
    };
    let is_recon = |r: &StoredRecord| r.record.kind == ReconResult::KIND;

    let records = by_id(repository.find(&request(Some(vec![run_id.to_owned()]), Vec::new()))?);
    let naming_run = PathConstraint {
        path: "payload.ingestion_run_ids".to_owned(),
        matcher: PathMatch::AnyOf(vec![IndexValue::from_str_value(run_id)]),
    };
    let mut checked_by_request = request(None, vec![naming_run]);
    checked_by_request.kinds = Some(vec![ReconResult::KIND.to_owned()]);
    // The index also matches a bare string equal to the run (and instants
    // written differently): keep only arrays that name it exactly.
    let checked_by = by_id(
        repository
            .find(&checked_by_request)?
            .into_iter()
            .filter(|r| named_run_ids(r).any(|id| id == run_id))
            .collect(),
    );
    let checked_run_ids: BTreeSet<String> = records
        .iter()
        .filter(|r| is_recon(r))
        .flat_map(named_run_ids)
        .map(str::to_owned)
        .collect();
    let checked_records = if checked_run_ids.is_empty() {
        Vec::new()
    } else {
        by_id(repository.find(&request(
            Some(checked_run_ids.iter().cloned().collect()),
            Vec::new(),
        ))?)
    };
    Ok(Lineage {
        run_id: run_id.to_owned(),
        records,
        checked_by,
        checked_run_ids: checked_run_ids.into_iter().collect(),
        checked_records,
    })
}
