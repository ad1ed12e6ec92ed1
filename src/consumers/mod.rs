//! Consumer helpers: the questions planners, variability checks, dashboards
//! and the orchestrator ask of the metadata, answered the same way for all.
//!
//! Every helper is read-only and written against `&dyn MetadataRepository`
//! only (its `latest`, `history` and `find`), so it works unchanged over
//! the embedded [`Store`](crate::Store) and over a remote client.
//!
//! | helper | question |
//! |---|---|
//! | [`latest_many`] | the latest record of a kind for each of a set of targets |
//! | [`lineage`] | the records of a run, the recon results naming it, and the runs a recon run names |
//! | [`baseline`] | the moving centre and tolerance band of a numeric field |
//! | [`failure_streaks`] | targets whose latest checks failed (or timed out) in a row |
//! | [`outcome_trend`] | pass / fail / timeout / error counts per time bucket |
//! | [`schema_changes`] | columns added, dropped, retyped between snapshots; breaking or not |
//!
//! The repository has no "list targets" call: helpers over many targets take
//! them as an argument (a caller can find them with
//! [`MetadataRepository::query`], e.g.
//! `recon_result | latest by target | select target`).
//!
//! # Example: a consumer end to end
//!
//! ```
//! use almanac::consumers::{
//!     baseline, failure_streaks, Band, BaselineMethod, BaselineSpec, BaselineWindow, Position,
//! };
//! use almanac::producers::{IngestionVolume, Outcome, ReconResult, StandardPayload};
//! use almanac::{MetadataRepository, MetadataTarget, Store, Timestamp};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path())?;
//! let orders = MetadataTarget::new("oracle_prod", "sales", "orders");
//! let day = |d: i64| Timestamp::from_micros(1_704_067_200_000_000 + d * 86_400_000_000);
//!
//! // A week of daily loads and checks, as producers would have written them.
//! for (d, rows) in [1000, 1010, 990, 1005, 995, 1002, 998].into_iter().enumerate() {
//!     let mut volume = IngestionVolume { rows, ..Default::default() }.record(orders.clone(), day(d as i64));
//!     volume.producer_id = "ingestion.v1".into();
//!     store.store(&volume)?;
//!     let outcome = if d >= 5 { Outcome::Fail } else { Outcome::Pass };
//!     let mut check = ReconResult::new(outcome).record(orders.clone(), day(d as i64));
//!     check.producer_id = "recon.v1".into();
//!     store.store(&check)?;
//! }
//!
//! // Is today's load of 700 rows normal? Median ± 5·MAD over the last 5 loads.
//! let spec = BaselineSpec::new(
//!     BaselineMethod::MedianMad,
//!     5.0,
//!     BaselineWindow::LastN(5),
//!     Band::new(0.0, f64::INFINITY),
//! );
//! let band = baseline(&store, &orders, "ingestion_volume", "payload.rows", &spec)?;
//! assert!(!band.is_fallback());
//! assert_eq!(band.n_points, 5);
//! assert_eq!(band.check(700.0), Position::Below);
//! assert_eq!(band.check(1001.0), Position::Inside);
//!
//! // Which tables failed their last two checks or more?
//! let streaks = failure_streaks(&store, "recon_result", &[orders.clone()], 2)?;
//! assert_eq!(streaks.len(), 1);
//! assert_eq!(streaks[0].length, 2);
//! assert_eq!(streaks[0].started_at, day(5));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod baseline;
mod lineage;
mod outcomes;
mod schema;

use crate::model::{MetadataTarget, StoredRecord};
use crate::producers::PayloadError;
use crate::repository::MetadataRepository;

pub use baseline::{
    baseline, Band, BandSource, Baseline, BaselineMethod, BaselineSpec, BaselineWindow, Position,
};
pub use lineage::{lineage, Lineage, LineageScope};
pub use outcomes::{
    failure_streaks, outcome_trend, FailureStreak, OutcomeCounts, TrendBucket, MAX_TREND_BUCKETS,
};
pub use schema::{diff_columns, schema_changes, ChangeKind, ColumnChange, SchemaChange};

/// Why a consumer helper could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// The repository failed to read.
    #[error(transparent)]
    Repository(#[from] crate::Error),
    /// A [`BaselineSpec`] is unusable.
    #[error("invalid baseline spec: {0}")]
    InvalidSpec(String),
    /// A field path does not name a payload or extras field.
    #[error("invalid field path `{path}`: {reason}")]
    InvalidFieldPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A trend bucket width (or the number of buckets) is unusable.
    #[error("invalid trend bucket: {0}")]
    InvalidBucket(String),
    /// A stored record's payload cannot be read as its kind's typed form.
    #[error("record {id} of kind `{kind}` has an unreadable payload: {error}")]
    Payload {
        /// The record's id.
        id: u64,
        /// Its kind.
        kind: String,
        /// The field at fault.
        error: PayloadError,
    },
}

/// The latest record of `kind` for each target, in the order of `targets`
/// (`None` where a target has none).
pub fn latest_many(
    repository: &dyn MetadataRepository,
    targets: &[MetadataTarget],
    kind: &str,
) -> Result<Vec<Option<StoredRecord>>, ConsumerError> {
    targets
        .iter()
        .map(|target| Ok(repository.latest(target, kind)?))
        .collect()
}

/// `targets` without repeats (the first one stays), in order, compared as
/// the repository compares them: by key (`MetadataTarget::key`).
fn distinct_targets(targets: &[MetadataTarget]) -> Vec<&MetadataTarget> {
    let mut seen = std::collections::HashSet::new();
    targets.iter().filter(|t| seen.insert(t.key())).collect()
}
