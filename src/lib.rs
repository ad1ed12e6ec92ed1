//! Almanac: an embedded metadata engine for data platforms.
#![warn(missing_docs)]

pub mod error;
pub mod kinds;
pub mod model;
pub mod query;
pub mod storage;

pub use error::{Error, Result};
pub use model::{
    MetadataContext, MetadataRecord, MetadataTarget, StoredRecord, TimeRange, Timestamp,
};
