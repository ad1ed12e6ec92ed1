//! What the query engine needs from a store: the access paths the indexes
//! answer. The planner turns a query's source and time stages into one
//! [`ScanRequest`]; the storage engine answers it exactly (every record it
//! yields satisfies every constraint) in ascending (`produced_at`, `id`) order.

use crate::error::Result;
use crate::model::{StoredRecord, TimeRange};
pub use crate::storage::{IndexValue, KeySet, PathConstraint, PathMatch, Projection};

/// The constraints of a scan; `None` means "no constraint".
#[derive(Clone, Debug, PartialEq)]
pub struct ScanRequest {
    /// Kinds to read; `None` is every kind.
    pub kinds: Option<Vec<String>>,
    /// `produced_at` must lie in this range.
    pub time: TimeRange,
    /// Targets to keep, by key (`MetadataTarget::key`: the canonical name
    /// `source:schema.table` when it reads back as the same parts, which
    /// it does unless `source_id` holds a `:` or `schema` a `.`, ...).
    pub targets: Option<Vec<String>>,
    /// `producer_id` values to keep.
    pub producers: Option<Vec<String>>,
    /// `context.run_id` values to keep.
    pub run_ids: Option<Vec<String>>,
    /// Constraints on payload or extras paths; those on a kind's indexed
    /// paths can be answered by the path index.
    pub paths: Vec<PathConstraint>,
    /// When false, the engine must not use secondary indexes (full partition
    /// scans with row filters); results must be the same either way.
    pub use_indexes: bool,
    /// The parts of each record the reader needs; `None` is every part.
    /// A source may leave the other parts empty (empty strings and
    /// objects, `None`) or fill them; which records it yields does not
    /// depend on this.
    pub projection: Option<Projection>,
}

impl Default for ScanRequest {
    fn default() -> Self {
        ScanRequest {
            kinds: None,
            time: TimeRange::ALL,
            targets: None,
            producers: None,
            run_ids: None,
            paths: Vec::new(),
            use_indexes: true,
            projection: None,
        }
    }
}

/// A stream of stored records.
pub type RecordIter<'a> = Box<dyn Iterator<Item = Result<StoredRecord>> + 'a>;

/// One distinct target known to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetInfo {
    /// `target.source_id`.
    pub source_id: String,
    /// `target.schema`.
    pub schema: String,
    /// `target.table`.
    pub table: String,
    /// The canonical name.
    pub name: String,
}

/// How the engine would answer a scan, for `explain`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanDescription {
    /// The partitions read, by name (`ingestion_volume/2024-01-10`).
    pub partitions: Vec<String>,
    /// Partitions of the requested kinds skipped because of the time range.
    pub partitions_pruned: usize,
    /// The secondary index used, if any (`target`, `producer`, `run_id`,
    /// or an indexed path such as `payload.outcome`).
    pub index: Option<String>,
    /// Constraints checked row by row.
    pub row_filters: Vec<String>,
}

/// The read side of a store, as the query engine sees it.
pub trait RecordSource {
    /// Records satisfying `request`, ascending by (`produced_at`, `id`).
    fn scan(&self, request: &ScanRequest) -> Result<RecordIter<'_>>;
    /// Calls `f` on each record `scan(request)` yields, in the same order,
    /// for readers that do not keep records: a source may decode each
    /// record over the previous one, reusing its buffers. The default runs
    /// [`RecordSource::scan`].
    fn scan_each(&self, request: &ScanRequest, f: &mut dyn FnMut(&StoredRecord)) -> Result<()> {
        for record in self.scan(request)? {
            f(&record?);
        }
        Ok(())
    }
    /// The latest record per (kind, target) from the latest table, restricted
    /// to the given kinds and target keys (`MetadataTarget::key`); any order.
    /// Targets are told apart exactly: two whose canonical names are equal
    /// have an entry each.
    fn latest_records(
        &self,
        kinds: Option<&[String]>,
        targets: Option<&[String]>,
    ) -> Result<Vec<StoredRecord>>;
    /// Every kind that has records or is registered.
    fn kind_names(&self) -> Result<Vec<String>>;
    /// Every target that has records.
    fn targets(&self) -> Result<Vec<TargetInfo>>;
    /// Every producer id that has records.
    fn producer_ids(&self) -> Result<Vec<String>>;
    /// How `scan(request)` would run.
    fn describe_scan(&self, request: &ScanRequest) -> Result<ScanDescription>;
}
