//! The crate's top-level error: one variant per layer, each with `#[from]`.

use crate::model::ValidationError;

/// Everything that can go wrong in Almanac.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A record broke the record format (spec §1); nothing was written.
    #[error("invalid record{}: {error}", index.map(|i| format!(" #{i}")).unwrap_or_default())]
    InvalidRecord {
        /// The record's position in a batch (0-based), when it came in one.
        index: Option<usize>,
        /// What is wrong, naming the field.
        error: ValidationError,
    },
    /// A record was refused by governance: its kind's schema, its version,
    /// its retention, or strict mode; nothing was written.
    #[error("rejected record{}: {error}", index.map(|i| format!(" #{i}")).unwrap_or_default())]
    Rejected {
        /// The record's position in a batch (0-based), when it came in one.
        index: Option<usize>,
        /// Why it was refused, naming the field or path.
        error: crate::kinds::GovernanceError,
    },
    /// The storage engine failed (I/O, corruption, a held lock).
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// A query did not parse, plan or run.
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    /// A kind registry operation was refused.
    #[error(transparent)]
    Kind(#[from] crate::kinds::KindError),
}

impl Error {
    /// True for errors caused by the caller's input (a bad record, query or
    /// kind definition): the CLI exits 2 for these, 1 for the rest.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            Error::InvalidRecord { .. } | Error::Rejected { .. } | Error::Kind(_) => true,
            Error::Query(e) => e.is_invalid_input(),
            Error::Storage(_) => false,
        }
    }

    /// The batch index of the record at fault, for invalid-record errors.
    pub fn record_index(&self) -> Option<usize> {
        match self {
            Error::InvalidRecord { index, .. } | Error::Rejected { index, .. } => *index,
            _ => None,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
