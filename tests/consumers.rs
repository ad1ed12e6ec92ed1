//! Consumer helpers on a generated data set, each compared with the same computation written plainly over the same records: latest_many, lineage, baselines, failure streaks, outcome trends and schema changes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use almanac::consumers::{
    baseline, failure_streaks, latest_many, lineage, outcome_trend, schema_changes, Band,
    BandSource, BaselineMethod, BaselineSpec, BaselineWindow, ChangeKind, ConsumerError,
    LineageScope, OutcomeCounts, Position,
};
use almanac::producers::{
    Column, IngestionRuntime, IngestionVolume, Outcome, ReconResult, SchemaSnapshot,
    StandardPayload,
};
use almanac::{
    MetadataContext, MetadataRecord, MetadataRepository, MetadataTarget, Store, StoredRecord,
    TimeRange, Timestamp,
};
use common::{target, ts, BASE, DAY, HOUR};

const N_TARGETS: usize = 6;
const N_DAYS: i64 = 30;
const MINUTE: i64 = 60_000_000;

/// xorshift64: a deterministic generator for the data set.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A schema change the generator made, as the helper should report it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ExpectedChange {
    column: String,
    what: String,
    breaking: bool,
}

/// The data set: every record as stored, and what the generator knows.
struct DataSet {
    _dir: tempfile::TempDir,
    store: Store,
    records: Vec<StoredRecord>,
    /// Per target: per snapshot transition (older index, newer index), the changes made.
    schema_changes: Vec<Vec<(usize, usize, Vec<ExpectedChange>)>>,
}

fn with_run(mut record: MetadataRecord, producer: &str, run_id: &str) -> MetadataRecord {
    record.producer_id = producer.to_owned();
    record.context = MetadataContext {
        run_id: Some(run_id.to_owned()),
        ..MetadataContext::default()
    };
    record
}

fn outcome_for(rng: &mut Rng) -> Outcome {
    match rng.below(10) {
        0..=4 => Outcome::Pass,
        5..=6 => Outcome::Fail,
        7..=8 => Outcome::Timeout,
        _ => Outcome::Error,
    }
}

/// Applies one random schema mutation to `columns`, returning what changed.
fn mutate(rng: &mut Rng, columns: &mut Vec<Column>, n_added: &mut usize) -> Vec<ExpectedChange> {
    let change = |column: &str, what: &str, breaking: bool| ExpectedChange {
        column: column.to_owned(),
        what: what.to_owned(),
        breaking,
    };
    let i = rng.below(columns.len() as u64) as usize;
    match rng.below(8) {
        0 => Vec::new(),
        1 | 2 => {
            *n_added += 1;
            let name = format!("added_{n_added}");
            let not_null = rng.below(2) == 0;
            let mut column = Column::new(&name, "VARCHAR2");
            if not_null {
                column = column.nullable(false);
            }
            columns.push(column);
            vec![change(&name, "added", not_null)]
        }
        3 if columns.len() > 2 => {
            let dropped = columns.remove(i);
            vec![change(&dropped.name, "dropped", true)]
        }
        4 => {
            let column = &mut columns[i];
            column.data_type = format!("{}_V2", column.data_type);
            vec![change(&column.name, "retyped", true)]
        }
        5 => {
            let column = &mut columns[i];
            let was_nullable = column.nullable.unwrap_or(true);
            column.nullable = Some(!was_nullable);
            vec![change(&column.name, "nullability", was_nullable)]
        }
        6 => {
            let column = &mut columns[i];
            let wider = rng.below(2) == 0;
            let had_limit = column.precision.is_some();
            let before = column.precision.unwrap_or(10);
            column.precision = Some(if wider { before + 2 } else { before - 1 });
            // Setting a limit where there was none is breaking, like narrowing.
            let breaking = !had_limit || !wider;
            vec![change(&column.name, "precision", breaking)]
        }
        _ => {
            // Case changes in the type are not changes.
            let column = &mut columns[i];
            column.data_type = column.data_type.to_lowercase();
            Vec::new()
        }
    }
}

fn data_set() -> DataSet {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store opens");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut records = Vec::new();
    let mut expected_schema = Vec::new();
    for t in 0..N_TARGETS {
        let tgt = target(t);
        let mut columns = vec![
            Column::new("id", "NUMBER").nullable(false).precision(10),
            Column::new("name", "VARCHAR2"),
            Column::new("amount", "NUMBER").precision(10),
        ];
        let mut n_added = 0;
        let mut transitions = Vec::new();
        let mut n_snapshots = 0;
        let base_rows = 1_000 * (t as u64 + 1);
        for d in 0..N_DAYS {
            let day = BASE + d * DAY;
            // Some days have no load (and so no check): gaps in every series.
            if rng.below(7) == 0 {
                continue;
            }
            let run = format!("ing-{t}-{d}");
            let rows = base_rows + rng.below(200);
            let volume = IngestionVolume {
                rows,
                bytes: Some(rows * 100),
                ..Default::default()
            }
            .record(tgt.clone(), ts(day + HOUR));
            // Target 5 reports volumes only in its last days: a short history.
            if t != 5 || d >= N_DAYS - 4 {
                records.push(with_run(volume, "ingestion.v1", &run));
            }
            records.push(with_run(
                IngestionRuntime {
                    duration_s: 10.0 + rng.below(50) as f64 / 4.0,
                    retries: None,
                }
                .record(tgt.clone(), ts(day + HOUR)),
                "ingestion.v1",
                &run,
            ));
            // The last `t` checks of target t fail or time out; before that, random.
            let outcome = if d >= N_DAYS - t as i64 {
                if d % 2 == 0 {
                    Outcome::Fail
                } else {
                    Outcome::Timeout
                }
            } else {
                outcome_for(&mut rng)
            };
            let mut result = ReconResult::new(outcome);
            result.observed = Some(rng.below(100) as f64 / 10.0);
            result.ingestion_run_ids = vec![run.clone()];
            if rng.below(3) == 0 && d > 0 {
                // A catch-up check also covering yesterday's run.
                result.ingestion_run_ids.push(format!("ing-{t}-{}", d - 1));
            }
            let minutes = rng.below(120) as i64;
            records.push(with_run(
                result.record(tgt.clone(), ts(day + 2 * HOUR + minutes * MINUTE)),
                "recon.v1",
                &format!("rec-{d}"),
            ));
            if d % 5 == 0 {
                if n_snapshots > 0 {
                    let changes = mutate(&mut rng, &mut columns, &mut n_added);
                    transitions.push((n_snapshots - 1, n_snapshots, changes));
                }
                n_snapshots += 1;
                records.push(with_run(
                    SchemaSnapshot {
                        columns: columns.clone(),
                    }
                    .record(tgt.clone(), ts(day + 3 * HOUR)),
                    "collector.v1",
                    &format!("col-{d}"),
                ));
            }
        }
        expected_schema.push(transitions);
    }
    let outcome = store.bulk_store(&records).expect("data set stores");
    assert_eq!(outcome.n_duplicates, 0);
    let records = records
        .into_iter()
        .zip(outcome.ids)
        .map(|(record, id)| StoredRecord { id, record })
        .collect();
    DataSet {
        _dir: dir,
        store,
        records,
        schema_changes: expected_schema,
    }
}

impl DataSet {
    fn targets(&self) -> Vec<MetadataTarget> {
        (0..N_TARGETS).map(target).collect()
    }

    /// Records of `kind` for `t`, ascending by (produced_at, id).
    fn series(&self, t: &MetadataTarget, kind: &str) -> Vec<&StoredRecord> {
        let mut series: Vec<&StoredRecord> = self
            .records
            .iter()
            .filter(|r| r.record.kind == kind && r.record.target_name() == t.canonical_name())
            .collect();
        series.sort_by_key(|r| (r.record.produced_at, r.id));
        series
    }
}

fn ids<'a>(records: impl IntoIterator<Item = &'a StoredRecord>) -> BTreeSet<u64> {
    records.into_iter().map(|r| r.id).collect()
}

fn outcome_of(record: &StoredRecord) -> Option<Outcome> {
    Outcome::parse(record.record.payload.get("outcome")?.as_str()?)
}

#[test]
fn latest_many_matches_the_newest_record_per_target() {
    let data = data_set();
    let mut targets = data.targets();
    targets.push(MetadataTarget::new("src", "sch", "unknown"));
    for kind in ["ingestion_volume", "recon_result", "schema_snapshot"] {
        let got = latest_many(&data.store, &targets, kind).unwrap();
        let expected: Vec<Option<u64>> = targets
            .iter()
            .map(|t| data.series(t, kind).last().map(|r| r.id))
            .collect();
        let got: Vec<Option<u64>> = got.iter().map(|r| r.as_ref().map(|r| r.id)).collect();
        assert_eq!(got, expected, "{kind}");
        assert_eq!(got.last(), Some(&None));
    }
}

#[test]
fn lineage_matches_plain_filters() {
    let data = data_set();
    let scope = LineageScope::new(data.targets());
    let run_of = |r: &StoredRecord, run: &str| r.record.context.run_id.as_deref() == Some(run);
    let names = |r: &StoredRecord, run: &str| {
        r.record.kind == "recon_result"
            && ReconResult::from_payload(&r.record.payload)
                .unwrap()
                .ingestion_run_ids
                .iter()
                .any(|id| id == run)
    };
    let mut n_checked_by = 0;
    let mut n_checked = 0;
    let mut runs: Vec<String> = (0..N_DAYS).map(|d| format!("rec-{d}")).collect();
    runs.extend((0..N_DAYS).map(|d| format!("ing-2-{d}")));
    runs.push("no-such-run".into());
    for run in &runs {
        let got = lineage(&data.store, run, &scope).unwrap();
        assert_eq!(&got.run_id, run);
        let records: Vec<&StoredRecord> = data.records.iter().filter(|r| run_of(r, run)).collect();
        assert_eq!(ids(&got.records), ids(records.iter().copied()), "{run}");
        let checked_by = data.records.iter().filter(|r| names(r, run));
        assert_eq!(ids(&got.checked_by), ids(checked_by), "{run}");
        let checked_runs: BTreeSet<String> = records
            .iter()
            .filter(|r| r.record.kind == "recon_result")
            .flat_map(|r| {
                ReconResult::from_payload(&r.record.payload)
                    .unwrap()
                    .ingestion_run_ids
            })
            .collect();
        assert_eq!(
            got.checked_run_ids,
            checked_runs.iter().cloned().collect::<Vec<_>>(),
            "{run}"
        );
        let checked = data.records.iter().filter(|r| {
            r.record
                .context
                .run_id
                .as_ref()
                .is_some_and(|id| checked_runs.contains(id))
        });
        assert_eq!(ids(&got.checked_records), ids(checked), "{run}");
        // Ordered by id, no repeats.
        for list in [&got.records, &got.checked_by, &got.checked_records] {
            assert!(list.windows(2).all(|w| w[0].id < w[1].id), "{run}");
        }
        n_checked_by += got.checked_by.len();
        n_checked += got.checked_records.len();
    }
    assert!(
        n_checked_by > 0 && n_checked > 0,
        "the data set has lineage"
    );

    // A narrower scope sees only its targets and kinds.
    let narrow = LineageScope {
        targets: vec![target(1)],
        kinds: vec!["ingestion_volume".into()],
        range: TimeRange::ALL,
    };
    let got = lineage(&data.store, "rec-10", &narrow).unwrap();
    let expected = data.records.iter().filter(|r| {
        r.record.target_name() == target(1).canonical_name()
            && r.record.context.run_id.as_ref().is_some_and(|id| {
                got.checked_run_ids.contains(id) && r.record.kind == "ingestion_volume"
            })
    });
    assert_eq!(ids(&got.checked_records), ids(expected));
    assert!(got
        .records
        .iter()
        .all(|r| r.record.target == target(1) && r.record.kind == "recon_result"));
}

/// Mean and sample standard deviation, written out.
fn plain_mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, variance.sqrt())
}

fn plain_median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn baselines_match_plain_statistics() {
    let data = data_set();
    let fallback = Band::new(0.0, 1e12);
    let windows = [
        BaselineWindow::LastN(7),
        BaselineWindow::LastN(1000),
        BaselineWindow::Span(Duration::from_secs(10 * 86_400)),
    ];
    let befores = [None, Some(ts(BASE + 20 * DAY))];
    let mut n_history = 0;
    let mut n_fallback = 0;
    for t in data.targets() {
        for (kind, field) in [
            ("ingestion_volume", "payload.rows"),
            ("ingestion_runtime", "payload.duration_s"),
        ] {
            for method in [BaselineMethod::MeanStdDev, BaselineMethod::MedianMad] {
                for window in windows {
                    for before in befores {
                        let mut spec = BaselineSpec::new(method, 2.5, window, fallback);
                        spec.before = before;
                        spec.min_points = 5;
                        let got = baseline(&data.store, &t, kind, field, &spec).unwrap();

                        let key = field.trim_start_matches("payload.");
                        let points: Vec<(Timestamp, f64)> = data
                            .series(&t, kind)
                            .into_iter()
                            .filter(|r| before.is_none_or(|b| r.record.produced_at < b))
                            .filter_map(|r| {
                                Some((r.record.produced_at, r.record.payload.get(key)?.as_f64()?))
                            })
                            .collect();
                        let values: Vec<f64> = match window {
                            BaselineWindow::LastN(n) => {
                                points.iter().rev().take(n).map(|(_, v)| *v).collect()
                            }
                            BaselineWindow::Span(span) => {
                                let newest = points.last().map(|(at, _)| *at).unwrap_or(ts(0));
                                let from = newest.as_micros() - span.as_micros() as i64;
                                points
                                    .iter()
                                    .filter(|(at, _)| at.as_micros() >= from)
                                    .map(|(_, v)| *v)
                                    .collect()
                            }
                        };
                        let what = format!("{t:?} {kind} {method:?} {window:?} {before:?}");
                        assert_eq!(got.n_points, values.len(), "{what}");
                        if values.len() < 5 {
                            assert_eq!(got.source, BandSource::Fallback, "{what}");
                            assert_eq!(got.band, fallback, "{what}");
                            n_fallback += 1;
                            continue;
                        }
                        let (center, spread) = match method {
                            BaselineMethod::MeanStdDev => plain_mean_std(&values),
                            BaselineMethod::MedianMad => {
                                let median = plain_median(&values);
                                let deviations: Vec<f64> =
                                    values.iter().map(|v| (v - median).abs()).collect();
                                (median, plain_median(&deviations))
                            }
                        };
                        assert_eq!(got.source, BandSource::History, "{what}");
                        assert!(close(got.center.unwrap(), center), "{what}: {got:?}");
                        assert!(close(got.spread.unwrap(), spread), "{what}: {got:?}");
                        assert!(close(got.band.lower, center - 2.5 * spread), "{what}");
                        assert!(close(got.band.upper, center + 2.5 * spread), "{what}");
                        let above = center + 2.5 * spread + 1.0;
                        assert_eq!(got.check(above), Position::Above, "{what}");
                        assert_eq!(got.check(center), Position::Inside, "{what}");
                        n_history += 1;
                    }
                }
            }
        }
    }
    assert!(n_history > 0 && n_fallback > 0, "{n_history} {n_fallback}");
}

#[test]
fn baseline_falls_back_on_short_history_and_rejects_bad_specs() {
    let data = data_set();
    let fallback = Band::new(10.0, 20.0);
    // Target 5 reports rows only in the last days.
    let spec = BaselineSpec::new(
        BaselineMethod::MeanStdDev,
        3.0,
        BaselineWindow::LastN(30),
        fallback,
    );
    let got = baseline(
        &data.store,
        &target(5),
        "ingestion_volume",
        "payload.rows",
        &spec,
    )
    .unwrap();
    assert!(got.is_fallback());
    assert!(got.n_points < 5, "{got:?}");
    assert_eq!(got.band, fallback);
    assert_eq!(got.check(5.0), Position::Below);
    let unknown = MetadataTarget::new("src", "sch", "unknown");
    let got = baseline(
        &data.store,
        &unknown,
        "ingestion_volume",
        "payload.rows",
        &spec,
    )
    .unwrap();
    assert_eq!((got.n_points, got.source), (0, BandSource::Fallback));

    let bad_specs = [
        BaselineSpec::new(
            BaselineMethod::MedianMad,
            -1.0,
            BaselineWindow::LastN(3),
            fallback,
        ),
        BaselineSpec::new(
            BaselineMethod::MedianMad,
            f64::NAN,
            BaselineWindow::LastN(3),
            fallback,
        ),
        BaselineSpec::new(
            BaselineMethod::MedianMad,
            1.0,
            BaselineWindow::LastN(0),
            fallback,
        ),
        BaselineSpec::new(
            BaselineMethod::MedianMad,
            1.0,
            BaselineWindow::Span(Duration::ZERO),
            fallback,
        ),
        BaselineSpec::new(
            BaselineMethod::MedianMad,
            1.0,
            BaselineWindow::LastN(3),
            Band::new(2.0, 1.0),
        ),
    ];
    for spec in bad_specs {
        let err = baseline(
            &data.store,
            &target(0),
            "ingestion_volume",
            "payload.rows",
            &spec,
        )
        .expect_err("invalid spec");
        assert!(matches!(err, ConsumerError::InvalidSpec(_)), "{err}");
    }
    for path in ["rows", "payload.", "target.table"] {
        let err = baseline(&data.store, &target(0), "ingestion_volume", path, &spec)
            .expect_err("invalid path");
        assert!(err.to_string().contains(path), "{err}");
    }
}

#[test]
fn failure_streaks_match_a_plain_count() {
    let data = data_set();
    let mut targets = data.targets();
    targets.push(target(3)); // a repeat is read once
    targets.push(MetadataTarget::new("src", "sch", "unknown"));
    let mut longest = 0;
    for min in [0, 1, 2, 3, 5] {
        let got = failure_streaks(&data.store, "recon_result", &targets, min).unwrap();
        let mut expected = Vec::new();
        for t in data.targets() {
            let series = data.series(&t, "recon_result");
            let streak: Vec<&StoredRecord> = series
                .iter()
                .rev()
                .take_while(|r| matches!(outcome_of(r), Some(Outcome::Fail | Outcome::Timeout)))
                .copied()
                .collect();
            if !streak.is_empty() && streak.len() >= min {
                let mut record_ids: Vec<u64> = streak.iter().map(|r| r.id).collect();
                record_ids.reverse();
                expected.push((
                    t.canonical_name(),
                    streak.len(),
                    streak.last().unwrap().record.produced_at,
                    streak[0].record.produced_at,
                    record_ids,
                ));
            }
        }
        let got: Vec<_> = got
            .into_iter()
            .map(|s| {
                (
                    s.target.canonical_name(),
                    s.length,
                    s.started_at,
                    s.latest_at,
                    s.record_ids,
                )
            })
            .collect();
        assert_eq!(got, expected, "min {min}");
        longest = longest.max(got.iter().map(|s| s.1).max().unwrap_or(0));
    }
    assert!(longest >= 3, "the data set has long streaks");
}

#[test]
fn outcome_trends_match_plain_buckets() {
    let data = data_set();
    let targets = data.targets();
    let cases = [
        (DAY, TimeRange::ALL),
        (6 * HOUR, TimeRange::ALL),
        (
            DAY,
            TimeRange::new(
                ts(BASE + 3 * DAY + 5 * HOUR),
                ts(BASE + 10 * DAY + 5 * HOUR),
            ),
        ),
        (
            7 * DAY,
            TimeRange::new(ts(BASE - 20 * DAY), ts(BASE + 40 * DAY)),
        ),
    ];
    for (width, range) in cases {
        let bucket = Duration::from_micros(width as u64);
        let got = outcome_trend(&data.store, "recon_result", &targets, bucket, range).unwrap();

        let in_range: Vec<&StoredRecord> = data
            .records
            .iter()
            .filter(|r| r.record.kind == "recon_result" && range.contains(r.record.produced_at))
            .collect();
        let floor = |micros: i64| micros.div_euclid(width) * width;
        let (first, last) = if range == TimeRange::ALL {
            let starts = in_range
                .iter()
                .map(|r| floor(r.record.produced_at.as_micros()));
            (starts.clone().min().unwrap(), starts.max().unwrap())
        } else {
            (
                floor(range.from.as_micros()),
                floor(range.until.as_micros() - 1),
            )
        };
        let mut expected: BTreeMap<i64, OutcomeCounts> = BTreeMap::new();
        let mut start = first;
        while start <= last {
            expected.insert(start, OutcomeCounts::default());
            start += width;
        }
        for r in &in_range {
            let counts = expected
                .get_mut(&floor(r.record.produced_at.as_micros()))
                .unwrap();
            match outcome_of(r) {
                Some(Outcome::Pass) => counts.pass += 1,
                Some(Outcome::Fail) => counts.fail += 1,
                Some(Outcome::Timeout) => counts.timeout += 1,
                Some(Outcome::Error) => counts.error += 1,
                None => counts.other += 1,
            }
        }
        let got: Vec<(i64, OutcomeCounts)> = got
            .iter()
            .map(|b| (b.start.as_micros(), b.counts))
            .collect();
        let expected: Vec<(i64, OutcomeCounts)> = expected.into_iter().collect();
        assert_eq!(got, expected, "bucket {bucket:?} range {range:?}");
        let total: usize = got.iter().map(|(_, c)| c.total()).sum();
        assert_eq!(total, in_range.len());
        assert!(got.iter().any(|(_, c)| c.fail > 0 && c.pass > 0));
    }
    let err = outcome_trend(
        &data.store,
        "recon_result",
        &targets,
        Duration::ZERO,
        TimeRange::ALL,
    )
    .expect_err("zero-width bucket");
    assert!(matches!(err, ConsumerError::InvalidBucket(_)), "{err}");
    let err = outcome_trend(
        &data.store,
        "recon_result",
        &targets,
        Duration::from_micros(1),
        TimeRange::new(ts(BASE), ts(BASE + DAY)),
    )
    .expect_err("too many buckets");
    assert!(matches!(err, ConsumerError::InvalidBucket(_)), "{err}");
}

#[test]
fn schema_changes_match_the_generated_mutations() {
    let data = data_set();
    let mut n_breaking = 0;
    let mut n_safe = 0;
    for (t, transitions) in data.schema_changes.iter().enumerate() {
        let snapshots = data.series(&target(t), "schema_snapshot");
        let got = schema_changes(&data.store, &target(t)).unwrap();
        let expected: Vec<(u64, u64, Vec<ExpectedChange>)> = transitions
            .iter()
            .filter(|(_, _, changes)| !changes.is_empty())
            .map(|(from, to, changes)| {
                let mut changes = changes.clone();
                changes.sort();
                (snapshots[*from].id, snapshots[*to].id, changes)
            })
            .collect();
        let got: Vec<(u64, u64, Vec<ExpectedChange>)> = got
            .iter()
            .map(|change| {
                assert_eq!(
                    change.is_breaking(),
                    change.changes.iter().any(|c| c.breaking)
                );
                let mut changes: Vec<ExpectedChange> = change
                    .changes
                    .iter()
                    .map(|c| ExpectedChange {
                        column: c.column.clone(),
                        what: match c.change {
                            ChangeKind::Added { .. } => "added",
                            ChangeKind::Dropped { .. } => "dropped",
                            ChangeKind::Retyped { .. } => "retyped",
                            ChangeKind::NullabilityChanged { .. } => "nullability",
                            ChangeKind::PrecisionChanged { .. } => "precision",
                        }
                        .to_owned(),
                        breaking: c.breaking,
                    })
                    .collect();
                changes.sort();
                (change.from_id, change.to_id, changes)
            })
            .collect();
        assert_eq!(got, expected, "target {t}");
        for (_, _, changes) in &got {
            for c in changes {
                if c.breaking {
                    n_breaking += 1;
                } else {
                    n_safe += 1;
                }
            }
        }
    }
    assert!(n_breaking > 0 && n_safe > 0, "{n_breaking} {n_safe}");
}
