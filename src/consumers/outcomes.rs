//! Dashboards over check outcomes (`payload.outcome`): failure streaks per
//! target and outcome counts per time bucket.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{distinct_targets, ConsumerError};
use crate::model::{MetadataTarget, StoredRecord, TimeRange, Timestamp};
use crate::producers::Outcome;
use crate::repository::MetadataRepository;

/// The most trend buckets [`outcome_trend`] returns.
pub const MAX_TREND_BUCKETS: usize = 100_000;

/// The outcome of a record, when `payload.outcome` names one.
fn outcome_of(record: &StoredRecord) -> Option<Outcome> {
    record
        .record
        .payload
        .get("outcome")
        .and_then(|v| v.as_str())
        .and_then(Outcome::parse)
}

/// A target whose most recent outcomes are all failures or timeouts.
#[derive(Clone, Debug, PartialEq)]
pub struct FailureStreak {
    /// The target.
    pub target: MetadataTarget,
    /// How many consecutive most-recent records are `fail` or `timeout`.
    pub length: usize,
    /// `produced_at` of the oldest record of the streak.
    pub started_at: Timestamp,
    /// `produced_at` of the newest record of the streak.
    pub latest_at: Timestamp,
    /// The streak's record ids, oldest first.
    pub record_ids: Vec<u64>,
}

/// Per target, the streak of consecutive most-recent `kind` records whose
/// `payload.outcome` is `fail` or `timeout`, for targets whose streak is at
/// least `min` long (`min` 0 counts as 1: a streak has a failure).
///
/// Any other record (`pass`, `error`, an unknown or missing outcome) ends a
/// streak: an `error` says the check itself broke, not that the table failed
/// it. Records are ordered by (`produced_at`, `id`), as `history` returns them.
///
/// The repository cannot list targets, so the caller names them (from its
/// catalog, or later from a `query`); repeated targets (the same three
/// parts) are read once. Results come in the order of `targets`. Each target costs
/// one `latest` read, plus one `history` read when its latest record is a
/// failure.
pub fn failure_streaks(
    repository: &dyn MetadataRepository,
    kind: &str,
    targets: &[MetadataTarget],
    min: usize,
) -> Result<Vec<FailureStreak>, ConsumerError> {
    let min = min.max(1);
    let mut streaks = Vec::new();
    for target in distinct_targets(targets) {
        let latest = repository.latest(target, kind)?;
        if !latest
            .as_ref()
            .and_then(outcome_of)
            .is_some_and(Outcome::is_failure)
        {
            continue;
        }
        let history = repository.history(target, kind, TimeRange::ALL)?;
        let streak: Vec<&StoredRecord> = history
            .iter()
            .rev()
            .take_while(|r| outcome_of(r).is_some_and(Outcome::is_failure))
            .collect();
        if streak.len() < min {
            continue;
        }
        let (Some(newest), Some(oldest)) = (streak.first(), streak.last()) else {
            continue;
        };
        streaks.push(FailureStreak {
            target: target.clone(),
            length: streak.len(),
            started_at: oldest.record.produced_at,
            latest_at: newest.record.produced_at,
            record_ids: streak.iter().rev().map(|r| r.id).collect(),
        });
    }
    Ok(streaks)
}

/// Counts of outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    /// `pass`.
    pub pass: usize,
    /// `fail`.
    pub fail: usize,
    /// `timeout`.
    pub timeout: usize,
    /// `error`.
    pub error: usize,
    /// Records with no recognised `payload.outcome`.
    pub other: usize,
}

impl OutcomeCounts {
    /// Counts one record's outcome.
    pub fn add(&mut self, outcome: Option<Outcome>) {
        match outcome {
            Some(Outcome::Pass) => self.pass += 1,
            Some(Outcome::Fail) => self.fail += 1,
            Some(Outcome::Timeout) => self.timeout += 1,
            Some(Outcome::Error) => self.error += 1,
            None => self.other += 1,
        }
    }

    /// Every record counted.
    pub fn total(&self) -> usize {
        self.pass + self.fail + self.timeout + self.error + self.other
    }
}

/// The outcomes of one time bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrendBucket {
    /// The bucket's first instant; the bucket is `[start, start + bucket)`.
    pub start: Timestamp,
    /// The outcomes of records produced in the bucket.
    pub counts: OutcomeCounts,
}

/// Outcome counts of `kind` records for `targets`, produced within `range`,
/// per bucket of `bucket` length.
///
/// Buckets are aligned on multiples of `bucket` since the Unix epoch, in
/// UTC (a day bucket is a UTC day). Empty buckets are included, zero
/// counts: from the bucket of `range.from` to the bucket of the range's last
/// instant when the range is bounded at both ends, else from the first to
/// the last bucket holding a record. More than [`MAX_TREND_BUCKETS`]
/// buckets is an error. Targets are named by the caller, as for
/// [`failure_streaks`].
pub fn outcome_trend(
    repository: &dyn MetadataRepository,
    kind: &str,
    targets: &[MetadataTarget],
    bucket: Duration,
    range: TimeRange,
) -> Result<Vec<TrendBucket>, ConsumerError> {
    let width = i128::try_from(bucket.as_micros()).unwrap_or(i128::MAX);
    if width < 1 || width > i128::from(i64::MAX) {
        return Err(ConsumerError::InvalidBucket(format!(
            "the bucket must last between 1µs and {} days, got {bucket:?}",
            i64::MAX / crate::model::MICROS_PER_DAY
        )));
    }
    let floor = |ts: Timestamp| i128::from(ts.as_micros()).div_euclid(width) * width;
    let mut counts: BTreeMap<i128, OutcomeCounts> = BTreeMap::new();
    for target in distinct_targets(targets) {
        for record in repository.history(target, kind, range)? {
            counts
                .entry(floor(record.record.produced_at))
                .or_default()
                .add(outcome_of(&record));
        }
    }
    let bounded = range.from != Timestamp::MIN && range.until != Timestamp::MAX;
    let span = if bounded && !range.is_empty() {
        Some((
            floor(range.from),
            floor(range.until.saturating_add_micros(-1)),
        ))
    } else {
        counts
            .keys()
            .next()
            .zip(counts.keys().next_back())
            .map(|(first, last)| (*first, *last))
    };
    let Some((first, last)) = span else {
        return Ok(Vec::new());
    };
    let n_buckets = (last - first) / width + 1;
    if n_buckets > MAX_TREND_BUCKETS as i128 {
        return Err(ConsumerError::InvalidBucket(format!(
            "the range holds {n_buckets} buckets of {bucket:?}, more than {MAX_TREND_BUCKETS}"
        )));
    }
    Ok((0..n_buckets)
        .map(|i| {
            let start = first + i * width;
            TrendBucket {
                start: Timestamp::from_micros(i64::try_from(start).unwrap_or(if start < 0 {
                    i64::MIN
                } else {
                    i64::MAX
                })),
                counts: counts.get(&start).copied().unwrap_or_default(),
            }
        })
        .collect())
}
