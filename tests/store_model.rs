//! Model-based test of the store: random sequences of store, bulk_store,
//! reopen, clock advances and retention, checked after every step against a
//! plain in-memory reference (a Vec of records with ids).

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use almanac::kinds::{Bucket, KindSpec, Retention};
use almanac::query::ScanRequest;
use almanac::storage::bucket_end;
use almanac::{
    Clock, MetadataRecord, MetadataRepository, Store, StoreOptions, StoredRecord, TimeRange,
    Timestamp,
};
use common::*;
use proptest::prelude::*;
use serde_json::json;

const KINDS: [&str; 3] = ["ingestion_volume", "heartbeat", "snapshot"];
const RETENTION_DAYS: u32 = 3;
const N_TARGETS: usize = 3;

#[derive(Clone, Debug)]
struct RecordSpec {
    kind: usize,
    target: usize,
    producer: usize,
    hours_ago: i64,
    rows: i64,
    run: Option<u8>,
}

#[derive(Clone, Debug)]
enum Op {
    Store(RecordSpec),
    /// A batch; `invalid_at` makes that record invalid so the whole batch fails.
    Bulk(Vec<RecordSpec>, Option<usize>),
    Reopen,
    AdvanceHours(i64),
    Retention {
        dry_run: bool,
    },
}

fn record_spec() -> impl Strategy<Value = RecordSpec> {
    (
        0..KINDS.len(),
        0..N_TARGETS,
        0..2usize,
        0..(24 * 6i64),
        0..3i64,
        proptest::option::of(0..3u8),
    )
        .prop_map(
            |(kind, target, producer, hours_ago, rows, run)| RecordSpec {
                kind,
                target,
                producer,
                hours_ago,
                rows,
                run,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => record_spec().prop_map(Op::Store),
        3 => (proptest::collection::vec(record_spec(), 1..8), proptest::option::of(0..8usize))
            .prop_map(|(batch, bad)| {
                let bad = bad.filter(|&i| i < batch.len());
                Op::Bulk(batch, bad)
            }),
        1 => Just(Op::Reopen),
        2 => (1..48i64).prop_map(Op::AdvanceHours),
        1 => any::<bool>().prop_map(|dry_run| Op::Retention { dry_run }),
    ]
}

fn build(spec: &RecordSpec, now: i64) -> MetadataRecord {
    let mut record = MetadataRecord::new(
        KINDS[spec.kind],
        target(spec.target),
        object(json!({ "rows": spec.rows })),
        ts(now - spec.hours_ago * HOUR),
        ["ingestion.v1", "recon.v2"][spec.producer],
    );
    record.context.run_id = spec.run.map(|r| format!("run-{r}"));
    record
}

/// The reference: what a store must hold, in the plainest terms.
struct Model {
    records: Vec<StoredRecord>,
    next_id: u64,
}

impl Model {
    fn retention(kind: &str) -> Option<i64> {
        (kind == "heartbeat").then_some(i64::from(RETENTION_DAYS) * DAY)
    }

    fn bucket(kind: &str) -> Bucket {
        if kind == "snapshot" {
            Bucket::Month
        } else {
            Bucket::Day
        }
    }

    /// Stores one record; returns its (possibly existing) id.
    fn store(&mut self, record: MetadataRecord) -> u64 {
        if let Some(existing) = self.records.iter().find(|r| r.record == record) {
            return existing.id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.records.push(StoredRecord { id, record });
        id
    }

    fn expire(&mut self, now: i64, dry_run: bool) -> u64 {
        let expired = |r: &StoredRecord| {
            Model::retention(&r.record.kind).is_some_and(|keep| {
                let bucket = Model::bucket(&r.record.kind);
                let start = almanac::storage::bucket_start(bucket, r.record.produced_at);
                bucket_end(bucket, start) <= now - keep
            })
        };
        let n = self.records.iter().filter(|r| expired(r)).count() as u64;
        if !dry_run {
            self.records.retain(|r| !expired(r));
        }
        n
    }

    fn history(&self, kind: &str, t: usize) -> Vec<u64> {
        let name = target(t).canonical_name();
        let mut matching: Vec<&StoredRecord> = self
            .records
            .iter()
            .filter(|r| r.record.kind == kind && r.record.target.canonical_name() == name)
            .collect();
        matching.sort_by_key(|r| (r.record.produced_at, r.id));
        matching.iter().map(|r| r.id).collect()
    }
}

fn open(dir: &std::path::Path, now: &Arc<AtomicI64>) -> Store {
    let now = Arc::clone(now);
    let store = Store::open_with(
        dir,
        StoreOptions {
            clock: Clock::from_fn(move || Timestamp::from_micros(now.load(Ordering::SeqCst))),
            log_segment_bytes: 2_000,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    if store.kind("heartbeat").is_none() {
        let mut heartbeat = KindSpec::new("heartbeat", "short-lived");
        heartbeat.retention = Retention::Days(RETENTION_DAYS);
        store.register_kind(heartbeat).unwrap();
        let mut snapshot = KindSpec::new("snapshot", "monthly");
        snapshot.bucket = Bucket::Month;
        store.register_kind(snapshot).unwrap();
    }
    store
}

fn check_agrees(store: &Store, model: &Model) {
    for kind in KINDS {
        for t in 0..N_TARGETS {
            let expected = model.history(kind, t);
            let got: Vec<u64> = store
                .history(&target(t), kind, TimeRange::ALL)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect();
            assert_eq!(got, expected, "history of {kind} t{t}");
            let latest = store.latest(&target(t), kind).unwrap().map(|r| r.id);
            assert_eq!(latest, expected.last().copied(), "latest of {kind} t{t}");
        }
    }
    // The full scan, in (produced_at, id) order, with contents.
    let mut expected = model.records.clone();
    expected.sort_by_key(|r| (r.record.produced_at, r.id));
    let got: Vec<StoredRecord> = store
        .scan(&ScanRequest::default())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, expected);
    let n_partition_records: u64 = store
        .partitions()
        .unwrap()
        .iter()
        .map(|p| p.info.n_records)
        .sum();
    assert_eq!(
        n_partition_records,
        model.records.len() as u64,
        "catalog counts"
    );
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(BASE));
    let mut store = open(dir.path(), &now);
    let mut model = Model {
        records: Vec::new(),
        next_id: 1,
    };
    let mut logged: Vec<u64> = Vec::new();
    for op in ops {
        let t_now = now.load(Ordering::SeqCst);
        match op {
            Op::Store(spec) => {
                let record = build(&spec, t_now);
                // A record older than its kind's retention is stored like
                // any other (the next retention run drops it).
                let result = store.store(&record);
                let before = model.next_id;
                let id = model.store(record);
                let out = result.unwrap();
                assert_eq!(out.id, id);
                assert_eq!(out.duplicate, id < before);
                if !out.duplicate {
                    logged.push(id);
                }
            }
            Op::Bulk(specs, invalid_at) => {
                let mut records: Vec<MetadataRecord> =
                    specs.iter().map(|s| build(s, t_now)).collect();
                if let Some(i) = invalid_at {
                    records[i].producer_id.clear();
                }
                let result = store.bulk_store(&records);
                match invalid_at {
                    Some(i) => {
                        let err = result.unwrap_err();
                        assert_eq!(err.record_index(), Some(i));
                    }
                    None => {
                        let out = result.unwrap();
                        let mut ids = Vec::new();
                        for record in records {
                            let before = model.next_id;
                            let id = model.store(record);
                            if id >= before {
                                logged.push(id);
                            }
                            ids.push(id);
                        }
                        assert_eq!(out.ids, ids);
                    }
                }
            }
            Op::Reopen => {
                drop(store);
                store = open(dir.path(), &now);
            }
            Op::AdvanceHours(h) => {
                now.fetch_add(h * HOUR, Ordering::SeqCst);
            }
            Op::Retention { dry_run } => {
                let expected = model.expire(t_now, dry_run);
                let report = if dry_run {
                    store.retention_dry_run().unwrap()
                } else {
                    store.apply_retention().unwrap()
                };
                assert_eq!(report.n_records(), expected);
            }
        }
        check_agrees(&store, &model);
    }
    // The log holds every committed record exactly once, in id order.
    let log: Vec<u64> = store.tail(1).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(log, logged);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn store_agrees_with_the_reference(ops in proptest::collection::vec(op(), 1..25)) {
        run(ops);
    }
}
