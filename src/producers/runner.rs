//! `MetadataProducerRunner`: runs producers for requests, stamps the context,
//! validates, and stores each producer's records of a run in one atomic batch.

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use serde_json::Value;

use super::{MetadataProducer, MetadataRequest, ProducerError};
use crate::error::Error;
use crate::model::{MetadataRecord, MAX_PRODUCER_BYTES};
use crate::repository::{BulkOutcome, MetadataRepository};

/// The environment identifiers the runner stamps into every record's
/// `context.extras`: all three are required and must not be blank.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    /// The compute cluster (`eu-1`), stamped as `context.extras.cluster`.
    pub cluster: String,
    /// The workspace (`dwh`), stamped as `context.extras.workspace`.
    pub workspace: String,
    /// The tenant (`acme`), stamped as `context.extras.tenant`.
    pub tenant: String,
}

impl Environment {
    /// An environment from its three identifiers.
    pub fn new(cluster: &str, workspace: &str, tenant: &str) -> Self {
        Environment {
            cluster: cluster.to_owned(),
            workspace: workspace.to_owned(),
            tenant: tenant.to_owned(),
        }
    }

    /// The identifiers as `(context.extras key, value)`, in stamping order.
    fn entries(&self) -> [(&'static str, &str); 3] {
        [
            ("cluster", &self.cluster),
            ("workspace", &self.workspace),
            ("tenant", &self.tenant),
        ]
    }

    fn check(&self) -> Result<(), RunnerError> {
        match self
            .entries()
            .into_iter()
            .find(|(_, v)| v.trim().is_empty())
        {
            Some((name, _)) => Err(RunnerError::MissingEnvironment(name)),
            None => Ok(()),
        }
    }
}

/// A runner that could not be built; nothing was run or stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// An environment identifier is empty or blank.
    #[error(
        "environment identifier `{0}` is missing: the runner needs cluster, workspace and tenant"
    )]
    MissingEnvironment(&'static str),
    /// A producer's id breaks the `producer_id` rule of the record format.
    #[error("producer id {producer_id:?} is invalid: {reason}")]
    InvalidProducerId {
        /// The id as the producer gave it.
        producer_id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two producers share an id: their reports and records would be confused.
    #[error("producer id `{0}` is used by more than one producer")]
    DuplicateProducer(String),
}

/// Builds a [`MetadataProducerRunner`]; see [`MetadataProducerRunner::builder`].
pub struct RunnerBuilder {
    repository: Arc<dyn MetadataRepository>,
    environment: Environment,
    producers: Vec<Box<dyn MetadataProducer>>,
}

impl fmt::Debug for RunnerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerBuilder")
            .field("environment", &self.environment)
            .field(
                "producers",
                &self
                    .producers
                    .iter()
                    .map(|p| p.producer_id())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RunnerBuilder {
    /// Sets the environment identifiers (required).
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = environment;
        self
    }

    /// Adds a producer; producers run in the order they were added.
    pub fn producer(mut self, producer: impl MetadataProducer + 'static) -> Self {
        self.producers.push(Box::new(producer));
        self
    }

    /// The runner, or an error naming the missing environment identifier,
    /// an invalid producer id, or a producer id used twice.
    pub fn build(self) -> Result<MetadataProducerRunner, RunnerError> {
        self.environment.check()?;
        let mut producer_ids: Vec<String> = Vec::with_capacity(self.producers.len());
        for producer in &self.producers {
            let id = producer.producer_id();
            let reason = if id.is_empty() {
                Some("it must not be empty".to_owned())
            } else if id.len() > MAX_PRODUCER_BYTES {
                Some(format!(
                    "it is {} bytes long, more than {MAX_PRODUCER_BYTES}",
                    id.len()
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(RunnerError::InvalidProducerId {
                    producer_id: id.to_owned(),
                    reason,
                });
            }
            if producer_ids.iter().any(|seen| seen == id) {
                return Err(RunnerError::DuplicateProducer(id.to_owned()));
            }
            producer_ids.push(id.to_owned());
        }
        Ok(MetadataProducerRunner {
            repository: self.repository,
            environment: self.environment,
            producers: self.producers.into_iter().zip(producer_ids).collect(),
        })
    }
}

/// Runs producers for requests and stores what they produce.
///
/// Batching: everything one producer produces in one [`run`](Self::run)
/// (over all requests) is stored in one atomic `bulk_store` batch. A run is
/// the unit an orchestrator retries, and the store deduplicates identical
/// content, so "all of this producer's run or none of it" never leaves a
/// partial run behind, and a retry fills in exactly what is missing.
pub struct MetadataProducerRunner {
    repository: Arc<dyn MetadataRepository>,
    environment: Environment,
    /// Each producer with the id it gave when the runner was built.
    producers: Vec<(Box<dyn MetadataProducer>, String)>,
}

impl fmt::Debug for MetadataProducerRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataProducerRunner")
            .field("environment", &self.environment)
            .field("producers", &self.producer_ids().collect::<Vec<_>>())
            .finish()
    }
}

impl MetadataProducerRunner {
    /// A builder storing into `repository`; set the environment and add
    /// producers, then [`build`](RunnerBuilder::build).
    pub fn builder(repository: Arc<dyn MetadataRepository>) -> RunnerBuilder {
        RunnerBuilder {
            repository,
            environment: Environment::default(),
            producers: Vec::new(),
        }
    }

    /// The producers' ids, in running order.
    pub fn producer_ids(&self) -> impl Iterator<Item = &str> {
        self.producers.iter().map(|(_, id)| id.as_str())
    }

    /// The environment stamped into every record.
    pub fn environment(&self) -> &Environment {
        &self.environment
    }

    /// Runs every producer for every request, in order, and stores each
    /// producer's records in one atomic batch. Never fails as a whole: each
    /// producer's outcome is in the report, in running order.
    ///
    /// A producer's run fails, and stores nothing, when it returns an error
    /// or panics for any request (the remaining requests are not asked), when
    /// one of its records breaks the record format, or when the store refuses
    /// the batch (a payload against its kind's schema, an I/O error).
    pub fn run(&self, requests: &[MetadataRequest]) -> RunReport {
        let producers = self
            .producers
            .iter()
            .map(|(producer, id)| ProducerReport {
                producer_id: id.clone(),
                result: self.run_producer(producer.as_ref(), id, requests),
            })
            .collect();
        RunReport { producers }
    }

    fn run_producer(
        &self,
        producer: &dyn MetadataProducer,
        producer_id: &str,
        requests: &[MetadataRequest],
    ) -> Result<BulkOutcome, ProducerFailure> {
        let mut batch: Vec<MetadataRecord> = Vec::new();
        // Where each record of the batch came from: (request index, index in its output).
        let mut origins: Vec<(usize, usize)> = Vec::new();
        for (request_index, request) in requests.iter().enumerate() {
            let produced = catch_unwind(AssertUnwindSafe(|| producer.produce(request)));
            let records = match produced {
                Ok(Ok(records)) => records,
                Ok(Err(error)) => {
                    return Err(ProducerFailure::Produce {
                        request_index,
                        target: request.target.canonical_name(),
                        error,
                    })
                }
                Err(panic) => {
                    return Err(ProducerFailure::Panicked {
                        request_index,
                        target: request.target.canonical_name(),
                        message: panic_message(panic.as_ref()),
                    })
                }
            };
            for (record_index, mut record) in records.into_iter().enumerate() {
                self.stamp(&mut record, request, producer_id);
                batch.push(record);
                origins.push((request_index, record_index));
            }
        }
        let invalid = |batch_index: usize, field: String, reason: String| {
            let (request_index, record_index) = origins[batch_index];
            ProducerFailure::InvalidRecord {
                request_index,
                record_index,
                kind: batch[batch_index].kind.clone(),
                field,
                reason,
            }
        };
        // Check the record format here so the report names the record even
        // when a repository's errors carry no batch index.
        for (batch_index, record) in batch.iter().enumerate() {
            if let Err(e) = record.validate() {
                return Err(invalid(batch_index, e.field, e.reason));
            }
        }
        match self.repository.bulk_store(&batch) {
            Ok(outcome) => Ok(outcome),
            Err(Error::InvalidRecord {
                index: Some(i),
                error,
            }) if i < batch.len() => Err(invalid(i, error.field, error.reason)),
            Err(Error::Rejected {
                index: Some(i),
                error,
            }) if i < batch.len() => Err(invalid(i, error.field, error.reason)),
            Err(error) => Err(ProducerFailure::Store(error)),
        }
    }

    /// Stamps producer id, request context and environment onto a record.
    fn stamp(&self, record: &mut MetadataRecord, request: &MetadataRequest, producer_id: &str) {
        record.producer_id = producer_id.to_owned();
        let from = &request.context;
        let to = &mut record.context;
        for (field, value) in [
            (&mut to.job_id, &from.job_id),
            (&mut to.run_id, &from.run_id),
            (&mut to.namespace, &from.namespace),
        ] {
            if value.is_some() {
                field.clone_from(value);
            }
        }
        for (key, value) in &from.extras {
            to.extras.insert(key.clone(), value.clone());
        }
        for (key, value) in self.environment.entries() {
            to.extras
                .insert(key.to_owned(), Value::String(value.to_owned()));
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Why a producer's run stored nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerFailure {
    /// The producer returned an error for a request.
    #[error("producing for request #{request_index} (target `{target}`) failed: {error}")]
    Produce {
        /// The request's position in the run (0-based).
        request_index: usize,
        /// The request's canonical target name.
        target: String,
        /// What the producer said.
        error: ProducerError,
    },
    /// The producer panicked on a request.
    #[error("producer panicked on request #{request_index} (target `{target}`): {message}")]
    Panicked {
        /// The request's position in the run (0-based).
        request_index: usize,
        /// The request's canonical target name.
        target: String,
        /// The panic message.
        message: String,
    },
    /// A record broke the record format or its kind's payload schema.
    #[error(
        "record #{record_index} (kind `{kind}`) produced for request #{request_index} is invalid: field `{field}` {reason}"
    )]
    InvalidRecord {
        /// The request the record was produced for (0-based).
        request_index: usize,
        /// The record's position in the producer's output for that request.
        record_index: usize,
        /// The record's kind.
        kind: String,
        /// The path of the field at fault (`payload.rows`, `extras.window_end`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The repository failed to store the batch (I/O, storage, a closed store).
    #[error("storing the batch failed: {0}")]
    Store(Error),
}

impl ProducerFailure {
    /// The field at fault, for invalid records.
    pub fn field(&self) -> Option<&str> {
        match self {
            ProducerFailure::InvalidRecord { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// What one producer's run did.
#[derive(Debug)]
pub struct ProducerReport {
    /// The producer.
    pub producer_id: String,
    /// The batch's outcome (ids in production order, counts of new records
    /// and duplicates), or why nothing was stored.
    pub result: Result<BulkOutcome, ProducerFailure>,
}

impl ProducerReport {
    /// The ids of the producer's records (existing ids for duplicates);
    /// empty when it failed.
    pub fn ids(&self) -> &[u64] {
        match &self.result {
            Ok(outcome) => &outcome.ids,
            Err(_) => &[],
        }
    }

    /// The failure, when the producer stored nothing.
    pub fn failure(&self) -> Option<&ProducerFailure> {
        self.result.as_ref().err()
    }
}

/// What a run did, per producer.
#[derive(Debug)]
pub struct RunReport {
    /// One report per producer, in running order.
    pub producers: Vec<ProducerReport>,
}

impl RunReport {
    /// True when every producer's records were stored.
    pub fn is_success(&self) -> bool {
        self.producers.iter().all(|p| p.result.is_ok())
    }

    /// The report of one producer.
    pub fn producer(&self, producer_id: &str) -> Option<&ProducerReport> {
        self.producers.iter().find(|p| p.producer_id == producer_id)
    }

    /// The producers that failed, with why.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &ProducerFailure)> {
        self.producers
            .iter()
            .filter_map(|p| p.failure().map(|f| (p.producer_id.as_str(), f)))
    }

    /// Records newly written, over every producer.
    pub fn n_stored(&self) -> usize {
        self.producers
            .iter()
            .filter_map(|p| p.result.as_ref().ok())
            .map(|o| o.n_stored)
            .sum()
    }

    /// Records that were already stored, over every producer.
    pub fn n_duplicates(&self) -> usize {
        self.producers
            .iter()
            .filter_map(|p| p.result.as_ref().ok())
            .map(|o| o.n_duplicates)
            .sum()
    }
}
