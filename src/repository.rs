//! `MetadataRepository`: the one API that the embedded store and, later, a
//! remote client both implement. Object-safe, so callers can hold a
//! `Box<dyn MetadataRepository>` and swap backends without changing a line.

use crate::error::Result;
use crate::model::{MetadataRecord, MetadataTarget, StoredRecord, TimeRange};
use crate::query::{Params, QueryOutput, ScanRequest};
use crate::storage::WriteOutcome;

/// What storing one record did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOutcome {
    /// The record's id: new, or the existing one for a duplicate.
    pub id: u64,
    /// True when identical content was already stored (nothing was written).
    pub duplicate: bool,
}

impl From<WriteOutcome> for StoreOutcome {
    fn from(o: WriteOutcome) -> Self {
        StoreOutcome {
            id: o.id(),
            duplicate: matches!(o, WriteOutcome::Duplicate(_)),
        }
    }
}

/// What storing a batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    /// The id of each input record, in input order (existing ids for duplicates).
    pub ids: Vec<u64>,
    /// Records written.
    pub n_stored: usize,
    /// Records that were already stored (including repeats within the batch).
    pub n_duplicates: usize,
}

impl BulkOutcome {
    pub(crate) fn from_outcomes(outcomes: &[WriteOutcome]) -> Self {
        let n_duplicates = outcomes
            .iter()
            .filter(|o| matches!(o, WriteOutcome::Duplicate(_)))
            .count();
        BulkOutcome {
            ids: outcomes.iter().map(|o| o.id()).collect(),
            n_stored: outcomes.len() - n_duplicates,
            n_duplicates,
        }
    }
}

/// Store and read metadata records.
pub trait MetadataRepository: Send + Sync {
    /// Stores one record durably. Identical content already stored is not
    /// written again: the outcome carries the existing id.
    fn store(&self, record: &MetadataRecord) -> Result<StoreOutcome>;

    /// Stores a batch atomically: all records or none. One invalid record
    /// rejects the batch with an error naming its index and field.
    fn bulk_store(&self, records: &[MetadataRecord]) -> Result<BulkOutcome>;

    /// The record of `kind` for `target` with the greatest `produced_at`
    /// (ties: greatest id). Targets are compared exactly, by their three
    /// parts (two targets with one canonical name are two targets).
    fn latest(&self, target: &MetadataTarget, kind: &str) -> Result<Option<StoredRecord>>;

    /// Records of `kind` for `target` produced within `range`, ascending by
    /// (`produced_at`, `id`).
    fn history(
        &self,
        target: &MetadataTarget,
        kind: &str,
        range: TimeRange,
    ) -> Result<Vec<StoredRecord>>;

    /// Runs a query of the query language with parameter bindings.
    fn query(&self, query: &str, params: &Params) -> Result<QueryOutput>;

    /// Records matching an access-path request (kinds, time range, targets,
    /// producers, run ids, payload/extras path constraints), ascending by
    /// (`produced_at`, `id`), answered through the indexes. This is what the
    /// query language cannot say, such as "arrays containing a run id".
    fn find(&self, request: &ScanRequest) -> Result<Vec<StoredRecord>>;
}
