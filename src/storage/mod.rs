//! The storage engine: the only module that touches redb.

/// The storage engine failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// Placeholder.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
