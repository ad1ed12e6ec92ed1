//! The query language (spec `query-language.md`): parse → plan → execute.

pub mod ast;
mod source;

pub use source::{RecordIter, RecordSource, ScanDescription, ScanRequest, TargetInfo};

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
