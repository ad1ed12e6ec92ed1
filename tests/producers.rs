//! Producers and the runner: stamping, validation, per-producer atomic batches, failure reports, retries, and the typed builders of the standard kinds against the store's schemas.

mod common;

use std::sync::Arc;

use almanac::model::JsonObject;
use almanac::producers::{
    CatalogDiff, Column, Environment, IngestionRuntime, IngestionVolume, MetadataProducer,
    MetadataProducerRunner, MetadataRequest, Outcome, ProducerError, ProducerFailure, ReconResult,
    RecordExt, RunReport, RunnerError, SchemaSnapshot, StandardPayload, StatisticsSnapshot, Window,
};
use almanac::query::ScanRequest;
use almanac::{Error, MetadataContext, MetadataRecord, MetadataRepository, Store, TimeRange};
use common::{target, ts, BASE, DAY, HOUR};
use serde_json::json;

type ProduceFn =
    dyn Fn(&MetadataRequest) -> Result<Vec<MetadataRecord>, ProducerError> + Send + Sync;

/// A producer made of an id and a function.
struct FnProducer {
    id: &'static str,
    produce: Box<ProduceFn>,
}

impl FnProducer {
    fn new(
        id: &'static str,
        produce: impl Fn(&MetadataRequest) -> Result<Vec<MetadataRecord>, ProducerError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        FnProducer {
            id,
            produce: Box::new(produce),
        }
    }
}

impl MetadataProducer for FnProducer {
    fn producer_id(&self) -> &str {
        self.id
    }

    fn produce(&self, request: &MetadataRequest) -> Result<Vec<MetadataRecord>, ProducerError> {
        (self.produce)(request)
    }
}

/// Emits one `ingestion_volume` per request, rows = the table name's length.
fn volumes(id: &'static str) -> FnProducer {
    FnProducer::new(id, |request| {
        let volume = IngestionVolume {
            rows: request.target.table.len() as u64,
            ..IngestionVolume::default()
        };
        Ok(vec![volume.record(request.target.clone(), ts(BASE))])
    })
}

fn env() -> Environment {
    Environment::new("eu-1", "dwh", "acme")
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store opens");
    (dir, store)
}

fn runner_for(store: &Store, producers: Vec<FnProducer>) -> MetadataProducerRunner {
    let mut builder = MetadataProducerRunner::builder(Arc::new(store.clone())).environment(env());
    for producer in producers {
        builder = builder.producer(producer);
    }
    builder.build().expect("runner builds")
}

fn context(run_id: &str) -> MetadataContext {
    MetadataContext {
        job_id: Some("load".into()),
        run_id: Some(run_id.into()),
        namespace: Some("prod".into()),
        extras: JsonObject::new(),
    }
}

fn requests(n: usize, run_id: &str) -> Vec<MetadataRequest> {
    (0..n)
        .map(|i| MetadataRequest::new(target(i), context(run_id)))
        .collect()
}

fn all_records(store: &Store) -> Vec<almanac::StoredRecord> {
    store
        .scan(&ScanRequest::default())
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("records")
}

fn records_of(store: &Store, producer_id: &str) -> usize {
    all_records(store)
        .iter()
        .filter(|r| r.record.producer_id == producer_id)
        .count()
}

fn failure<'a>(report: &'a RunReport, producer_id: &str) -> &'a ProducerFailure {
    report
        .producer(producer_id)
        .and_then(|p| p.failure())
        .unwrap_or_else(|| panic!("{producer_id} should have failed: {report:?}"))
}

#[test]
fn stamps_context_environment_and_producer_id() {
    let (_dir, store) = open();
    let runner = runner_for(
        &store,
        vec![FnProducer::new("stamped.v1", |request| {
            let mut record = IngestionVolume {
                rows: 1,
                ..Default::default()
            }
            .record(request.target.clone(), ts(BASE));
            // What a producer writes itself: kept unless the request or the
            // environment says otherwise.
            record.producer_id = "ignored".into();
            record.context.run_id = Some("producer-run".into());
            record.context.job_id = Some("producer-job".into());
            record
                .context
                .extras
                .insert("tenant".into(), json!("other"));
            record.context.extras.insert("attempt".into(), json!(2));
            Ok(vec![record])
        })],
    );
    let mut request_context = MetadataContext {
        run_id: Some("run-7".into()),
        ..MetadataContext::default()
    };
    request_context
        .extras
        .insert("region".into(), json!("west"));
    let report = runner.run(&[MetadataRequest::new(target(0), request_context)]);
    assert!(report.is_success(), "{report:?}");
    let stored = all_records(&store);
    assert_eq!(stored.len(), 1);
    let record = &stored[0].record;
    assert_eq!(record.producer_id, "stamped.v1");
    assert_eq!(record.context.run_id.as_deref(), Some("run-7"));
    assert_eq!(record.context.job_id.as_deref(), Some("producer-job"));
    assert_eq!(record.context.namespace, None);
    let extras = &record.context.extras;
    assert_eq!(extras["cluster"], "eu-1");
    assert_eq!(extras["workspace"], "dwh");
    assert_eq!(extras["tenant"], "acme");
    assert_eq!(extras["region"], "west");
    assert_eq!(extras["attempt"], 2);
    assert_eq!(
        report.producer("stamped.v1").unwrap().ids(),
        &[stored[0].id]
    );
}

#[test]
fn missing_environment_identifiers_are_named_and_nothing_runs() {
    let (_dir, store) = open();
    let cases = [
        (Environment::new("", "dwh", "acme"), "cluster"),
        (Environment::new("eu-1", "  ", "acme"), "workspace"),
        (Environment::new("eu-1", "dwh", ""), "tenant"),
        (Environment::default(), "cluster"),
    ];
    for (environment, missing) in cases {
        let err = MetadataProducerRunner::builder(Arc::new(store.clone()))
            .environment(environment)
            .producer(volumes("ingestion.v1"))
            .build()
            .expect_err("an environment identifier is missing");
        assert_eq!(err, RunnerError::MissingEnvironment(missing));
        assert!(err.to_string().contains(&format!("`{missing}`")), "{err}");
    }
    // Without an environment at all.
    let err = MetadataProducerRunner::builder(Arc::new(store.clone()))
        .producer(volumes("ingestion.v1"))
        .build()
        .expect_err("no environment");
    assert_eq!(err, RunnerError::MissingEnvironment("cluster"));
    assert!(all_records(&store).is_empty());
}

#[test]
fn producer_ids_must_be_valid_and_distinct() {
    let (_dir, store) = open();
    let build = |producers: Vec<FnProducer>| {
        let mut builder =
            MetadataProducerRunner::builder(Arc::new(store.clone())).environment(env());
        for p in producers {
            builder = builder.producer(p);
        }
        builder.build()
    };
    assert_eq!(
        build(vec![volumes("a.v1"), volumes("a.v1")]).unwrap_err(),
        RunnerError::DuplicateProducer("a.v1".into())
    );
    assert!(matches!(
        build(vec![volumes("")]).unwrap_err(),
        RunnerError::InvalidProducerId { .. }
    ));
}

#[test]
fn a_failing_producer_stores_nothing_and_loses_no_other_records() {
    let (_dir, store) = open();
    let runner = runner_for(
        &store,
        vec![
            volumes("before.v1"),
            FnProducer::new("flaky.v1", |request| {
                if request.target.table == "t2" {
                    return Err(ProducerError::Unavailable {
                        source_name: "src".into(),
                        reason: "connection refused".into(),
                    });
                }
                Ok(vec![IngestionRuntime {
                    duration_s: 1.0,
                    retries: None,
                }
                .record(request.target.clone(), ts(BASE))])
            }),
            FnProducer::new("panicky.v1", |_| panic!("index out of range")),
            volumes("after.v1"),
        ],
    );
    let report = runner.run(&requests(4, "run-1"));
    assert!(!report.is_success());
    match failure(&report, "flaky.v1") {
        ProducerFailure::Produce {
            request_index,
            target,
            error,
        } => {
            assert_eq!(*request_index, 2);
            assert_eq!(target, "src:sch.t2");
            assert!(error.to_string().contains("connection refused"), "{error}");
        }
        other => panic!("unexpected failure {other:?}"),
    }
    match failure(&report, "panicky.v1") {
        ProducerFailure::Panicked {
            request_index,
            message,
            ..
        } => {
            assert_eq!(*request_index, 0);
            assert_eq!(message, "index out of range");
        }
        other => panic!("unexpected failure {other:?}"),
    }
    assert_eq!(report.failures().count(), 2);
    // The flaky producer's runtimes for t0 and t1 are not stored: all or nothing.
    assert_eq!(records_of(&store, "flaky.v1"), 0);
    assert_eq!(records_of(&store, "panicky.v1"), 0);
    assert_eq!(records_of(&store, "before.v1"), 4);
    assert_eq!(records_of(&store, "after.v1"), 4);
    assert_eq!(report.n_stored(), 8);
    assert_eq!(report.producer("after.v1").unwrap().ids().len(), 4);
}

#[test]
fn invalid_records_are_reported_with_the_field() {
    let (_dir, store) = open();
    let runner = runner_for(
        &store,
        vec![
            // Breaks the record format: an empty table name (checked by the runner).
            FnProducer::new("no_table.v1", |request| {
                let good = IngestionVolume::default().record(request.target.clone(), ts(BASE));
                let mut bad = good.clone();
                bad.target.table.clear();
                Ok(vec![good, bad])
            }),
            // Breaks the payload schema of recon_result (checked by the store).
            FnProducer::new("bad_outcome.v1", |request| {
                let mut record =
                    ReconResult::new(Outcome::Pass).record(request.target.clone(), ts(BASE));
                if request.target.table == "t1" {
                    record.payload.insert("outcome".into(), json!("maybe"));
                }
                Ok(vec![record])
            }),
            // A window the wrong way round.
            FnProducer::new("bad_window.v1", |request| {
                Ok(vec![IngestionVolume::default()
                    .record(request.target.clone(), ts(BASE))
                    .window(ts(BASE), ts(BASE - DAY))])
            }),
            volumes("good.v1"),
        ],
    );
    let report = runner.run(&requests(2, "run-1"));
    let check = |producer: &str, request: usize, record: usize, kind: &str, field: &str| {
        match failure(&report, producer) {
            ProducerFailure::InvalidRecord {
                request_index,
                record_index,
                kind: got_kind,
                field: got_field,
                ..
            } => {
                assert_eq!(
                    (
                        *request_index,
                        *record_index,
                        got_kind.as_str(),
                        got_field.as_str()
                    ),
                    (request, record, kind, field),
                    "{producer}"
                );
            }
            other => panic!("{producer}: unexpected failure {other:?}"),
        }
        let message = failure(&report, producer).to_string();
        assert!(message.contains(field), "{message}");
    };
    check("no_table.v1", 0, 1, "ingestion_volume", "target.table");
    check("bad_outcome.v1", 1, 0, "recon_result", "payload.outcome");
    check(
        "bad_window.v1",
        0,
        0,
        "ingestion_volume",
        "extras.window_start",
    );
    for producer in ["no_table.v1", "bad_outcome.v1", "bad_window.v1"] {
        assert_eq!(records_of(&store, producer), 0, "{producer}");
    }
    assert_eq!(records_of(&store, "good.v1"), 2);
}

#[test]
fn running_twice_stores_nothing_twice() {
    let (_dir, store) = open();
    let runner = runner_for(
        &store,
        vec![
            volumes("ingestion.v1"),
            FnProducer::new("recon.v1", |request| {
                let mut result = ReconResult::new(Outcome::Fail);
                result.ingestion_run_ids = vec!["run-1".into()];
                result.observed = Some(0.25);
                Ok(vec![result
                    .record(request.target.clone(), ts(BASE + HOUR))
                    .window(ts(BASE - DAY), ts(BASE))])
            }),
        ],
    );
    let requests = requests(3, "run-1");
    let first = runner.run(&requests);
    assert!(first.is_success(), "{first:?}");
    assert_eq!((first.n_stored(), first.n_duplicates()), (6, 0));
    let n_after_first = all_records(&store).len();
    assert_eq!(n_after_first, 6);

    let second = runner.run(&requests);
    assert!(second.is_success(), "{second:?}");
    assert_eq!((second.n_stored(), second.n_duplicates()), (0, 6));
    assert_eq!(all_records(&store).len(), n_after_first);
    for producer in ["ingestion.v1", "recon.v1"] {
        assert_eq!(
            first.producer(producer).unwrap().ids(),
            second.producer(producer).unwrap().ids()
        );
    }

    // A partially failed run, retried once the cause is gone, fills in
    // exactly what was missing.
    let (_dir2, store2) = open();
    let flaky = |fail: bool| {
        FnProducer::new("volumes.v1", move |request| {
            if fail && request.target.table == "t1" {
                return Err(ProducerError::other("timeout"));
            }
            Ok(vec![IngestionVolume {
                rows: 5,
                ..Default::default()
            }
            .record(request.target.clone(), ts(BASE))])
        })
    };
    let failing = runner_for(&store2, vec![flaky(true), volumes("other.v1")]);
    let report = failing.run(&requests);
    assert_eq!(report.failures().count(), 1);
    assert_eq!(all_records(&store2).len(), 3);
    let healed = runner_for(&store2, vec![flaky(false), volumes("other.v1")]);
    let report = healed.run(&requests);
    assert_eq!((report.n_stored(), report.n_duplicates()), (3, 3));
    assert_eq!(all_records(&store2).len(), 6);
}

#[test]
fn typed_builders_pass_the_standard_schemas() {
    let (_dir, store) = open();
    let t = target(0);
    let at = ts(BASE);
    let window = Window::new(ts(BASE - DAY), at);
    let mut tolerance = JsonObject::new();
    tolerance.insert("method".into(), json!("mad"));
    tolerance.insert("k".into(), json!(3));
    let recon = ReconResult {
        outcome: Outcome::Timeout,
        observed: Some(12.5),
        threshold: Some(10.0),
        tolerance: Some(tolerance.clone()),
        ingestion_run_ids: vec!["run-1".into(), "run-2".into()],
        drill_down: vec!["select * from t where id in (1, 2)".into()],
        variability: Some(tolerance),
    };
    let volume = IngestionVolume {
        rows: 1_843_221,
        bytes: Some(734_003_200),
        filter: Some("year_month = '2024-01'".into()),
        watermark: Some(at),
        slices: Some(4),
    };
    let runtime = IngestionRuntime {
        duration_s: 73.25,
        retries: Some(1),
    };
    let snapshot = SchemaSnapshot {
        columns: vec![
            Column::new("id", "NUMBER").nullable(false).precision(38),
            Column::new("name", "VARCHAR2").nullable(true),
            Column::new("loaded_at", "TIMESTAMP"),
        ],
    };
    let statistics = StatisticsSnapshot {
        row_count: Some(1_843_221),
        null_fraction: Some(0.125),
    };
    let diff = CatalogDiff {
        change: "column_dropped".into(),
        column: Some("legacy".into()),
        breaking: Some(true),
    };
    let records = [
        volume.record(t.clone(), at),
        runtime.record(t.clone(), at),
        recon.record(t.clone(), at),
        snapshot.record(t.clone(), at),
        statistics.record(t.clone(), at),
        diff.record(t.clone(), at),
    ];
    for mut record in records {
        record = record.window(window.start, window.end);
        record.producer_id = "builders.v1".into();
        assert_eq!(record.version, Some(1));
        store
            .store(&record)
            .unwrap_or_else(|e| panic!("{} is schema-valid: {e}", record.kind));
        let stored = store
            .latest(&t, &record.kind)
            .unwrap()
            .unwrap_or_else(|| panic!("{} stored", record.kind));
        assert_eq!(stored.record, record);
        assert_eq!(
            stored.record.extras["window_start"], "2024-02-29T00:00:00Z",
            "windows are RFC 3339 UTC strings"
        );
        assert_eq!(
            Window::from_extras(&stored.record.extras).unwrap(),
            Some(window)
        );
    }
    // Read back through the typed forms.
    let read = |kind: &str| store.latest(&t, kind).unwrap().unwrap().record;
    assert_eq!(
        IngestionVolume::from_record(&read("ingestion_volume")).unwrap(),
        volume
    );
    assert_eq!(
        IngestionRuntime::from_record(&read("ingestion_runtime")).unwrap(),
        runtime
    );
    assert_eq!(
        ReconResult::from_record(&read("recon_result")).unwrap(),
        recon
    );
    assert_eq!(
        SchemaSnapshot::from_record(&read("schema_snapshot")).unwrap(),
        snapshot
    );
    assert_eq!(
        StatisticsSnapshot::from_record(&read("statistics_snapshot")).unwrap(),
        statistics
    );
    assert_eq!(
        CatalogDiff::from_record(&read("catalog_diff")).unwrap(),
        diff
    );
    assert_eq!(
        ReconResult::from_record(&read("catalog_diff"))
            .unwrap_err()
            .field,
        "kind"
    );
    assert_eq!(
        store
            .history(&t, "recon_result", TimeRange::ALL)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn typed_builders_do_not_bypass_the_schemas() {
    let (_dir, store) = open();
    let reject = |mut record: MetadataRecord, field: &str| {
        record.producer_id = "builders.v1".into();
        match store.store(&record) {
            Err(Error::Rejected { error, .. }) => assert_eq!(error.field, field),
            other => panic!("{} should be rejected at {field}: {other:?}", record.kind),
        }
    };
    reject(
        StatisticsSnapshot {
            row_count: None,
            null_fraction: Some(1.5),
        }
        .record(target(0), ts(BASE)),
        "payload.null_fraction",
    );
    reject(
        IngestionRuntime {
            duration_s: f64::NAN,
            retries: None,
        }
        .record(target(0), ts(BASE)),
        "payload.duration_s",
    );
    reject(
        IngestionRuntime {
            duration_s: -1.0,
            retries: None,
        }
        .record(target(0), ts(BASE)),
        "payload.duration_s",
    );
    assert!(all_records(&store).is_empty());
}

/// A repository over a store whose `bulk_store` fails, like a disk or a
/// remote service going away, for batches from one producer.
struct FailingFor {
    store: Store,
    producer_id: &'static str,
}

impl MetadataRepository for FailingFor {
    fn store(&self, record: &MetadataRecord) -> almanac::Result<almanac::StoreOutcome> {
        self.store.store(record)
    }

    fn bulk_store(&self, records: &[MetadataRecord]) -> almanac::Result<almanac::BulkOutcome> {
        if records.iter().any(|r| r.producer_id == self.producer_id) {
            return Err(almanac::storage::StorageError::WriterGone("disk full".into()).into());
        }
        self.store.bulk_store(records)
    }

    fn latest(
        &self,
        target: &almanac::MetadataTarget,
        kind: &str,
    ) -> almanac::Result<Option<almanac::StoredRecord>> {
        self.store.latest(target, kind)
    }

    fn history(
        &self,
        target: &almanac::MetadataTarget,
        kind: &str,
        range: TimeRange,
    ) -> almanac::Result<Vec<almanac::StoredRecord>> {
        self.store.history(target, kind, range)
    }

    fn query(
        &self,
        query: &str,
        params: &almanac::query::Params,
    ) -> almanac::Result<almanac::query::QueryOutput> {
        self.store.query(query, params)
    }

    fn find(
        &self,
        request: &almanac::query::ScanRequest,
    ) -> almanac::Result<Vec<almanac::StoredRecord>> {
        self.store.find(request)
    }
}

#[test]
fn a_storage_failure_is_reported_and_other_producers_still_store() {
    let (_dir, store) = open();
    let repository = FailingFor {
        store: store.clone(),
        producer_id: "unlucky.v1",
    };
    let runner = MetadataProducerRunner::builder(Arc::new(repository))
        .environment(env())
        .producer(volumes("first.v1"))
        .producer(volumes("unlucky.v1"))
        .producer(volumes("last.v1"))
        .build()
        .expect("runner builds");
    let report = runner.run(&requests(3, "run-1"));
    match failure(&report, "unlucky.v1") {
        ProducerFailure::Store(error) => {
            assert!(error.to_string().contains("disk full"), "{error}")
        }
        other => panic!("unexpected failure {other:?}"),
    }
    assert_eq!(report.failures().count(), 1);
    assert_eq!(records_of(&store, "first.v1"), 3);
    assert_eq!(records_of(&store, "unlucky.v1"), 0);
    assert_eq!(records_of(&store, "last.v1"), 3);
}
