//! The query language (spec `query-language.md`): parse → plan → execute.

mod source;

pub use source::{
    IndexValue, PathConstraint, PathMatch, RecordIter, RecordSource, ScanDescription, ScanRequest,
    TargetInfo,
};

/// A query that did not parse, plan or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// Placeholder until the parser lands.
    #[error("the query language is not built yet")]
    NotBuilt,
}

impl QueryError {
    /// True when the query text or its parameters are at fault (exit 2).
    pub fn is_invalid_input(&self) -> bool {
        true
    }
}

/// Parameter bindings (placeholder until the query language lands).
#[derive(Clone, Debug, Default)]
pub struct Params {}

/// Query results (placeholder until the query language lands).
#[derive(Clone, Debug, Default)]
pub struct QueryOutput {}

/// Runs a query against a source (placeholder until the query language lands).
pub fn run_query(
    _source: &dyn RecordSource,
    _query: &str,
    _params: &Params,
    _now: crate::model::Timestamp,
) -> crate::Result<QueryOutput> {
    Err(QueryError::NotBuilt.into())
}
