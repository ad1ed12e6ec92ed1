//! Producers: code that emits metadata records, and the runner that stamps,
//! validates and stores what they emit.
//!
//! A [`MetadataProducer`] answers a [`MetadataRequest`] (a target and the
//! run's [`MetadataContext`]) with records, usually built with the typed
//! builders of the standard kinds ([`IngestionVolume`], [`ReconResult`],
//! [`SchemaSnapshot`], ...). A [`MetadataProducerRunner`] runs every producer
//! for every request and, per producer, stores everything it produced in the
//! run as one atomic batch:
//!
//! - it stamps each record: `producer_id` from the producer; `job_id`,
//!   `run_id` and `namespace` from the request's context (when the request
//!   sets them); the request's `context.extras`; and the environment
//!   identifiers `cluster`, `workspace` and `tenant` in `context.extras`,
//!   which the runner requires and which override whatever a producer or a
//!   request put under those keys;
//! - it adds nothing time-dependent, so running the same requests twice
//!   stores nothing new (the store deduplicates identical content);
//! - a producer that fails (an error, a panic, an invalid record) stores
//!   nothing of that run and is named in the [`RunReport`] with the reason;
//!   the other producers' records are stored all the same.
//!
//! # Example: a producer end to end
//!
//! ```
//! use std::sync::Arc;
//! use almanac::producers::{
//!     Environment, IngestionVolume, MetadataProducer, MetadataProducerRunner, MetadataRequest,
//!     ProducerError, RecordExt, StandardPayload,
//! };
//! use almanac::{MetadataContext, MetadataRecord, MetadataRepository, MetadataTarget, Store, Timestamp};
//!
//! /// Reports the rows an ingestion job loaded (here: a fixed number).
//! struct VolumeProducer;
//!
//! impl MetadataProducer for VolumeProducer {
//!     fn producer_id(&self) -> &str {
//!         "ingestion.v1"
//!     }
//!
//!     fn produce(&self, request: &MetadataRequest) -> Result<Vec<MetadataRecord>, ProducerError> {
//!         let day = Timestamp::parse_rfc3339("2024-01-10T00:00:00Z").expect("valid instant");
//!         let loaded = IngestionVolume { rows: 1_843_221, bytes: Some(734_003_200), ..Default::default() };
//!         let start = day.saturating_add_micros(-86_400_000_000);
//!         Ok(vec![loaded.record(request.target.clone(), day).window(start, day)])
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path())?;
//! let runner = MetadataProducerRunner::builder(Arc::new(store.clone()))
//!     .environment(Environment::new("eu-1", "dwh", "acme"))
//!     .producer(VolumeProducer)
//!     .build()?;
//!
//! let target = MetadataTarget::new("oracle_prod", "sales", "orders");
//! let mut context = MetadataContext::default();
//! context.job_id = Some("load_orders".into());
//! context.run_id = Some("run-123".into());
//! let requests = [MetadataRequest::new(target.clone(), context)];
//!
//! let report = runner.run(&requests);
//! assert!(report.is_success());
//! assert_eq!(report.n_stored(), 1);
//!
//! let stored = store.latest(&target, "ingestion_volume")?.expect("stored by the run");
//! assert_eq!(stored.record.producer_id, "ingestion.v1");
//! assert_eq!(stored.record.context.run_id.as_deref(), Some("run-123"));
//! assert_eq!(stored.record.context.tenant(), Some("acme"));
//! assert_eq!(stored.record.extras["window_start"], "2024-01-09T00:00:00Z");
//!
//! // A retry of the same run stores nothing new.
//! let again = runner.run(&requests);
//! assert_eq!((again.n_stored(), again.n_duplicates()), (0, 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod payloads;
mod runner;

use std::sync::Arc;

use crate::model::{MetadataContext, MetadataRecord, MetadataTarget};

pub use payloads::{
    CatalogDiff, Column, IngestionRuntime, IngestionVolume, Outcome, PayloadError, ReconResult,
    RecordExt, SchemaSnapshot, StandardPayload, StatisticsSnapshot, Window,
};
pub use runner::{
    Environment, MetadataProducerRunner, ProducerFailure, ProducerReport, RunReport, RunnerBuilder,
    RunnerError,
};

/// What a producer is asked to describe: one target, in the context of one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetadataRequest {
    /// The artifact to produce records about.
    pub target: MetadataTarget,
    /// The run: job and run ids, namespace, and free extras.
    pub context: MetadataContext,
}

impl MetadataRequest {
    /// A request for `target` in `context`.
    pub fn new(target: MetadataTarget, context: MetadataContext) -> Self {
        MetadataRequest { target, context }
    }
}

/// Emits metadata records for requests.
///
/// Implementations should be deterministic for a given request (no wall-clock
/// `produced_at` unless the fact really is new), so that a retried run is
/// deduplicated by the store.
pub trait MetadataProducer: Send + Sync {
    /// A stable identifier (`ingestion.v1`): non-empty, at most 128 bytes,
    /// unique among the producers of a runner. Stamped as `producer_id` on
    /// every record the producer emits.
    fn producer_id(&self) -> &str;

    /// The records describing `request.target`. The runner stamps the
    /// context and `producer_id`, so producers need not set them.
    fn produce(&self, request: &MetadataRequest) -> Result<Vec<MetadataRecord>, ProducerError>;
}

impl<P: MetadataProducer + ?Sized> MetadataProducer for Arc<P> {
    fn producer_id(&self) -> &str {
        (**self).producer_id()
    }

    fn produce(&self, request: &MetadataRequest) -> Result<Vec<MetadataRecord>, ProducerError> {
        (**self).produce(request)
    }
}

impl<P: MetadataProducer + ?Sized> MetadataProducer for Box<P> {
    fn producer_id(&self) -> &str {
        (**self).producer_id()
    }

    fn produce(&self, request: &MetadataRequest) -> Result<Vec<MetadataRecord>, ProducerError> {
        (**self).produce(request)
    }
}

/// Why a producer could not produce records for a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    /// The system the producer reads from could not be reached or read.
    #[error("source `{source_name}` is unavailable: {reason}")]
    Unavailable {
        /// The system (`oracle_prod`, `spark history server`).
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// The producer does not describe this kind of target.
    #[error("target `{0}` is not supported by this producer")]
    UnsupportedTarget(String),
    /// A payload the producer read could not be interpreted.
    #[error("unreadable payload: {0}")]
    Payload(#[from] PayloadError),
    /// Any other failure, with its cause.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl ProducerError {
    /// Wraps any error as [`ProducerError::Other`].
    pub fn other(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ProducerError::Other(error.into())
    }
}
