//! Baselines: a moving centre and tolerance band of one numeric field over a
//! target's recent history, for variability checks and anomaly flags.

use std::time::Duration;

use serde_json::Value;

use super::ConsumerError;
use crate::model::{MetadataTarget, StoredRecord, TimeRange, Timestamp};
use crate::repository::MetadataRepository;

/// How the centre and spread of a baseline are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaselineMethod {
    /// Mean ± k·σ, with the sample standard deviation (n − 1). Needs at least
    /// two points.
    MeanStdDev,
    /// Median ± k·MAD, the median absolute deviation from the median, not
    /// rescaled (multiply `k` by 1.4826 to match σ on normal data). Robust
    /// to outliers; needs at least one point.
    MedianMad,
}

impl BaselineMethod {
    /// The fewest points the method can compute a spread from.
    fn min_points(self) -> usize {
        match self {
            BaselineMethod::MeanStdDev => 2,
            BaselineMethod::MedianMad => 1,
        }
    }
}

/// Which points of the history a baseline uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaselineWindow {
    /// The last `n` points (each record with a numeric value is one run).
    LastN(usize),
    /// Points produced within this span before the newest point, inclusive
    /// at both ends: `[newest - span, newest]`. Measured from the newest
    /// point, not from the wall clock, so a baseline does not depend on when
    /// it is computed.
    Span(Duration),
}

/// A tolerance band `[lower, upper]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Band {
    /// The lowest value inside the band.
    pub lower: f64,
    /// The highest value inside the band.
    pub upper: f64,
}

impl Band {
    /// The band `[lower, upper]`.
    pub fn new(lower: f64, upper: f64) -> Self {
        Band { lower, upper }
    }

    /// Where `value` lies relative to the band (bounds are inside). NaN lies
    /// outside every band and is reported as [`Position::Above`].
    pub fn check(&self, value: f64) -> Position {
        if value < self.lower {
            Position::Below
        } else if value <= self.upper {
            Position::Inside
        } else {
            Position::Above
        }
    }
}

/// Where a value lies relative to a band.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// Below the lower bound.
    Below,
    /// Within the bounds (inclusive).
    Inside,
    /// Above the upper bound (or NaN).
    Above,
}

/// How to compute a [`baseline`].
#[derive(Clone, Debug, PartialEq)]
pub struct BaselineSpec {
    /// Mean and σ, or median and MAD.
    pub method: BaselineMethod,
    /// Width of the band in spreads: `centre ± k·spread`; finite and >= 0.
    pub k: f64,
    /// Which points to use.
    pub window: BaselineWindow,
    /// Fewer points than this (or than the method needs) and the fallback
    /// band is used instead. Default 3.
    pub min_points: usize,
    /// The static band used when history is too short.
    pub fallback: Band,
    /// Only records produced strictly before this instant count (for
    /// checking a new value against the history before it); `None` for all.
    pub before: Option<Timestamp>,
}

impl BaselineSpec {
    /// A spec with `min_points` 3 and no `before` bound.
    pub fn new(method: BaselineMethod, k: f64, window: BaselineWindow, fallback: Band) -> Self {
        BaselineSpec {
            method,
            k,
            window,
            min_points: 3,
            fallback,
            before: None,
        }
    }

    fn check(&self) -> Result<(), ConsumerError> {
        let invalid = |reason: &str| Err(ConsumerError::InvalidSpec(reason.to_owned()));
        if !self.k.is_finite() || self.k < 0.0 {
            return invalid("k must be a finite number >= 0");
        }
        let Band { lower, upper } = self.fallback;
        if lower.is_nan() || upper.is_nan() || lower > upper {
            return invalid("the fallback band's lower bound must not exceed its upper bound");
        }
        match self.window {
            BaselineWindow::LastN(0) => invalid("the window must hold at least one run"),
            BaselineWindow::Span(span) if span.is_zero() => {
                invalid("the window's span must be longer than zero")
            }
            _ => Ok(()),
        }
    }
}

/// Whether a baseline's band came from history or from the fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BandSource {
    /// Computed from enough points of history.
    History,
    /// History was too short: the spec's static fallback band.
    Fallback,
}

/// A computed baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct Baseline {
    /// The tolerance band to check new values against.
    pub band: Band,
    /// Where the band came from: too short a history gives the fallback.
    pub source: BandSource,
    /// The number of points in the window.
    pub n_points: usize,
    /// The mean or median, when computed from history.
    pub center: Option<f64>,
    /// σ or MAD, when computed from history.
    pub spread: Option<f64>,
}

impl Baseline {
    /// Where `value` lies relative to the band.
    pub fn check(&self, value: f64) -> Position {
        self.band.check(value)
    }

    /// True when history was too short and the band is the fallback.
    pub fn is_fallback(&self) -> bool {
        self.source == BandSource::Fallback
    }
}

/// A parsed `payload.a.b` / `extras.a` path.
pub(crate) struct FieldPath<'a> {
    in_payload: bool,
    keys: Vec<&'a str>,
}

impl<'a> FieldPath<'a> {
    pub(crate) fn parse(path: &'a str) -> Result<Self, ConsumerError> {
        let invalid = |reason: &str| ConsumerError::InvalidFieldPath {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = path.split('.');
        let in_payload = match parts.next() {
            Some("payload") => true,
            Some("extras") => false,
            _ => return Err(invalid("it must start with `payload.` or `extras.`")),
        };
        let keys: Vec<&str> = parts.collect();
        if keys.is_empty() || keys.iter().any(|k| k.is_empty()) {
            return Err(invalid(
                "it must name a field after the first dot, with no empty parts",
            ));
        }
        Ok(FieldPath { in_payload, keys })
    }

    /// The value at the path in `record`, if present.
    pub(crate) fn get<'r>(&self, record: &'r StoredRecord) -> Option<&'r Value> {
        let root = if self.in_payload {
            &record.record.payload
        } else {
            &record.record.extras
        };
        let (first, rest) = self.keys.split_first()?;
        let mut value = root.get(*first)?;
        for key in rest {
            value = value.as_object()?.get(*key)?;
        }
        Some(value)
    }
}

/// The baseline of one numeric field of `kind` records for `target`.
///
/// `field_path` names the field: `payload.rows`, `payload.variability.ratio`
/// or `extras.x`. Records where it is missing or not a number are skipped;
/// each remaining record is one point. The window then picks the points
/// (the last N, or a span before the newest point), and the band is
/// `centre ± k·spread`. With fewer points than `spec.min_points` (or than
/// the method needs), the band is `spec.fallback` and the source says so.
pub fn baseline(
    repository: &dyn MetadataRepository,
    target: &MetadataTarget,
    kind: &str,
    field_path: &str,
    spec: &BaselineSpec,
) -> Result<Baseline, ConsumerError> {
    spec.check()?;
    let path = FieldPath::parse(field_path)?;
    let range = TimeRange::new(Timestamp::MIN, spec.before.unwrap_or(Timestamp::MAX));
    let history = repository.history(target, kind, range)?;
    // (produced_at, value), ascending by (produced_at, id) as history returns them.
    let points: Vec<(Timestamp, f64)> = history
        .iter()
        .filter_map(|r| Some((r.record.produced_at, path.get(r)?.as_f64()?)))
        .collect();
    let values: Vec<f64> = match spec.window {
        BaselineWindow::LastN(n) => points[points.len().saturating_sub(n)..]
            .iter()
            .map(|(_, v)| *v)
            .collect(),
        BaselineWindow::Span(span) => match points.last() {
            None => Vec::new(),
            Some((newest, _)) => {
                let micros = i64::try_from(span.as_micros()).unwrap_or(i64::MAX);
                let from = newest.saturating_add_micros(-micros);
                points
                    .iter()
                    .filter(|(at, _)| *at >= from)
                    .map(|(_, v)| *v)
                    .collect()
            }
        },
    };
    let n_points = values.len();
    if n_points < spec.min_points.max(spec.method.min_points()) {
        return Ok(Baseline {
            band: spec.fallback,
            source: BandSource::Fallback,
            n_points,
            center: None,
            spread: None,
        });
    }
    let (center, spread) = match spec.method {
        BaselineMethod::MeanStdDev => mean_and_sample_std_dev(&values),
        BaselineMethod::MedianMad => median_and_mad(&values),
    };
    Ok(Baseline {
        band: Band::new(center - spec.k * spread, center + spec.k * spread),
        source: BandSource::History,
        n_points,
        center: Some(center),
        spread: Some(spread),
    })
}

/// Mean and sample standard deviation; `values` has at least two elements.
fn mean_and_sample_std_dev(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let squares: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (mean, (squares / (n - 1.0)).sqrt())
}

/// Median and median absolute deviation; `values` is not empty.
fn median_and_mad(values: &[f64]) -> (f64, f64) {
    let median = median(values.to_vec());
    let deviations = values.iter().map(|v| (v - median).abs()).collect();
    (median, self::median(deviations))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(values: &[f64], expected_median: f64, expected_mad: f64) {
        assert_eq!(median_and_mad(values), (expected_median, expected_mad));
    }

    #[test]
    fn medians_and_mads() {
        check(&[5.0], 5.0, 0.0);
        check(&[1.0, 3.0], 2.0, 1.0);
        check(&[1.0, 2.0, 3.0, 4.0, 100.0], 3.0, 1.0);
    }

    #[test]
    fn bands_include_their_bounds() {
        let band = Band::new(1.0, 2.0);
        assert_eq!(band.check(1.0), Position::Inside);
        assert_eq!(band.check(2.0), Position::Inside);
        assert_eq!(band.check(0.5), Position::Below);
        assert_eq!(band.check(2.5), Position::Above);
        assert_eq!(band.check(f64::NAN), Position::Above);
    }

    #[test]
    fn field_paths() {
        assert!(FieldPath::parse("payload.rows").is_ok());
        assert!(FieldPath::parse("extras.a.b").is_ok());
        for bad in ["rows", "payload", "payload.", "payload..x", "target.table"] {
            assert!(FieldPath::parse(bad).is_err(), "{bad}");
        }
    }
}
