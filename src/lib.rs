//! Almanac: an embedded metadata engine for data platforms.
//!
//! Tools that load, reconcile and inspect data emit facts about their runs
//! (`ingestion_volume`, `recon_result`, `schema_snapshot`, ...); Almanac keeps
//! them in one embedded store and answers operational questions from them.
//!
//! ```
//! use almanac::{MetadataRecord, MetadataRepository, MetadataTarget, Store, TimeRange};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path())?;
//! let record = MetadataRecord::from_json_str(r#"{
//!     "kind": "ingestion_volume",
//!     "target": {"source_id": "oracle_prod", "schema": "sales", "table": "orders"},
//!     "payload": {"rows": 1843221},
//!     "produced_at": "2024-01-10T05:00:00Z",
//!     "producer_id": "ingestion.v1"
//! }"#)?;
//! let stored = store.store(&record)?;
//! let target = MetadataTarget::new("oracle_prod", "sales", "orders");
//! let latest = store.latest(&target, "ingestion_volume")?.expect("stored above");
//! assert_eq!(latest.id, stored.id);
//! let history = store.history(&target, "ingestion_volume", TimeRange::ALL)?;
//! assert_eq!(history.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod consumers;
pub mod error;
pub mod kinds;
pub mod model;
pub mod producers;
pub mod query;
pub mod repository;
pub mod storage;
mod store;
pub mod testdata;

pub use error::{Error, Result};
pub use model::{
    MetadataContext, MetadataRecord, MetadataTarget, StoredRecord, TimeRange, Timestamp,
};
pub use repository::{BulkOutcome, MetadataRepository, StoreOutcome};
pub use store::{
    Clock, Governance, HistoryCacheStats, KindStats, LatestCacheStats, PartitionSummary, Store,
    StoreOptions, StoreStats, WriteStats, DEFAULT_CACHE_BYTES, DEFAULT_HISTORY_CACHE_BYTES,
    DEFAULT_LATEST_CACHE_BYTES,
};
