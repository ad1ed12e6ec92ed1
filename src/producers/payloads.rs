//! Typed builders for the six standard kinds of spec §1a, so every producer
//! writes (and every consumer reads) the same payload shapes.
//!
//! Each builder is plain data with public fields. [`StandardPayload::record`]
//! turns one into a [`MetadataRecord`] of its kind at schema version
//! [`StandardPayload::VERSION`]; [`StandardPayload::from_payload`] reads one
//! back and names the payload field at fault when it cannot. Optional fields
//! set to `None` (and empty lists) are left out of the payload.
//!
//! Conventions every builder follows:
//! - instants (`watermark`, windows) are RFC 3339 strings in UTC with a `Z`
//!   suffix, as [`Timestamp::to_rfc3339`] prints them;
//! - a window of time is `extras.window_start` / `extras.window_end`, set
//!   with [`RecordExt::window`];
//! - a non-finite float has no JSON form and is written as `null`, which the
//!   kind's schema then rejects with the field's path.

use std::fmt;

use serde_json::{Number, Value};

use crate::model::{JsonObject, MetadataRecord, MetadataTarget, Timestamp};

/// A payload (or window) that cannot be read as its typed form; `field` is
/// the path at fault (`payload.columns[2].name`, `extras.window_start`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` {reason}")]
pub struct PayloadError {
    /// The path of the offending field.
    pub field: String,
    /// What is wrong with it, in plain words.
    pub reason: String,
}

impl PayloadError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        PayloadError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A typed payload of one standard kind.
pub trait StandardPayload: Sized {
    /// The kind name (`ingestion_volume`).
    const KIND: &'static str;
    /// The schema version of the kind this type writes.
    const VERSION: u64 = 1;

    /// The payload as a JSON object.
    fn to_payload(&self) -> JsonObject;

    /// Reads a payload back; the error names the payload field at fault.
    fn from_payload(payload: &JsonObject) -> Result<Self, PayloadError>;

    /// A record of [`Self::KIND`] about `target`, produced at `produced_at`,
    /// with `version` set to [`Self::VERSION`].
    ///
    /// `producer_id` is left empty: the [`MetadataProducerRunner`] stamps it
    /// from the producer. Set it yourself to store the record directly.
    ///
    /// [`MetadataProducerRunner`]: super::MetadataProducerRunner
    fn record(&self, target: MetadataTarget, produced_at: Timestamp) -> MetadataRecord {
        let mut record =
            MetadataRecord::new(Self::KIND, target, self.to_payload(), produced_at, "");
        record.version = Some(Self::VERSION);
        record
    }

    /// Reads the payload of a record of [`Self::KIND`].
    fn from_record(record: &MetadataRecord) -> Result<Self, PayloadError> {
        if record.kind != Self::KIND {
            return Err(PayloadError::new(
                "kind",
                format!("is `{}`, expected `{}`", record.kind, Self::KIND),
            ));
        }
        Self::from_payload(&record.payload)
    }
}

/// The window of time a record covers: `[start, end]`, kept in
/// `extras.window_start` and `extras.window_end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The first instant covered.
    pub start: Timestamp,
    /// The last instant covered (not before `start`).
    pub end: Timestamp,
}

impl Window {
    /// The extras key of the start.
    pub const START_KEY: &'static str = "window_start";
    /// The extras key of the end.
    pub const END_KEY: &'static str = "window_end";

    /// A window from `start` to `end`; a window with `start > end` is
    /// rejected when the record is validated.
    pub fn new(start: Timestamp, end: Timestamp) -> Self {
        Window { start, end }
    }

    /// Writes the window into `extras` as RFC 3339 UTC strings.
    pub fn write_to(&self, extras: &mut JsonObject) {
        extras.insert(Self::START_KEY.into(), self.start.to_rfc3339().into());
        extras.insert(Self::END_KEY.into(), self.end.to_rfc3339().into());
    }

    /// Reads the window of a record's extras: `None` when neither key is
    /// present, an error naming the key when one is missing or unreadable.
    pub fn from_extras(extras: &JsonObject) -> Result<Option<Window>, PayloadError> {
        let read = |key: &str| -> Result<Option<Timestamp>, PayloadError> {
            opt_timestamp(extras, "extras", key)
        };
        match (read(Self::START_KEY)?, read(Self::END_KEY)?) {
            (None, None) => Ok(None),
            (Some(start), Some(end)) => Ok(Some(Window { start, end })),
            (Some(_), None) => Err(PayloadError::new(
                "extras.window_end",
                "is required when extras.window_start is present",
            )),
            (None, Some(_)) => Err(PayloadError::new(
                "extras.window_start",
                "is required when extras.window_end is present",
            )),
        }
    }
}

/// Builder-style additions to [`MetadataRecord`] for producers.
pub trait RecordExt: Sized {
    /// Sets `extras.window_start` and `extras.window_end` to `start` and
    /// `end` as RFC 3339 UTC strings.
    fn window(self, start: Timestamp, end: Timestamp) -> Self;
}

impl RecordExt for MetadataRecord {
    fn window(mut self, start: Timestamp, end: Timestamp) -> Self {
        Window::new(start, end).write_to(&mut self.extras);
        self
    }
}

/// `ingestion_volume`: what an ingestion run loaded into a table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestionVolume {
    /// Rows loaded.
    pub rows: u64,
    /// Bytes loaded.
    pub bytes: Option<u64>,
    /// The filter the run applied at the source (`year_month = '2024-01'`).
    pub filter: Option<String>,
    /// The high-water mark the run reached at the source.
    pub watermark: Option<Timestamp>,
    /// How many slices (chunks, partitions) the run loaded.
    pub slices: Option<u64>,
}

impl StandardPayload for IngestionVolume {
    const KIND: &'static str = "ingestion_volume";

    fn to_payload(&self) -> JsonObject {
        let mut p = JsonObject::new();
        p.insert("rows".into(), self.rows.into());
        put(&mut p, "bytes", self.bytes);
        put(&mut p, "filter", self.filter.clone());
        put(&mut p, "watermark", self.watermark.map(|w| w.to_rfc3339()));
        put(&mut p, "slices", self.slices);
        p
    }

    fn from_payload(p: &JsonObject) -> Result<Self, PayloadError> {
        Ok(IngestionVolume {
            rows: required(p, "rows", opt_u64)?,
            bytes: opt_u64(p, "payload", "bytes")?,
            filter: opt_string(p, "payload", "filter")?,
            watermark: opt_timestamp(p, "payload", "watermark")?,
            slices: opt_u64(p, "payload", "slices")?,
        })
    }
}

/// `ingestion_runtime`: how long an ingestion run took.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngestionRuntime {
    /// Wall-clock duration in seconds, >= 0.
    pub duration_s: f64,
    /// How often the run retried.
    pub retries: Option<u64>,
}

impl StandardPayload for IngestionRuntime {
    const KIND: &'static str = "ingestion_runtime";

    fn to_payload(&self) -> JsonObject {
        let mut p = JsonObject::new();
        p.insert("duration_s".into(), float(self.duration_s));
        put(&mut p, "retries", self.retries);
        p
    }

    fn from_payload(p: &JsonObject) -> Result<Self, PayloadError> {
        Ok(IngestionRuntime {
            duration_s: required(p, "duration_s", opt_f64)?,
            retries: opt_u64(p, "payload", "retries")?,
        })
    }
}

/// The outcome of a reconciliation check (`payload.outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// The check passed.
    Pass,
    /// The check ran and found a difference beyond tolerance.
    Fail,
    /// The check did not finish in time.
    Timeout,
    /// The check itself failed (could not connect, bad query).
    Error,
}

impl Outcome {
    /// Every outcome, in the order of the spec.
    pub const ALL: [Outcome; 4] = [
        Outcome::Pass,
        Outcome::Fail,
        Outcome::Timeout,
        Outcome::Error,
    ];

    /// The payload string: `pass`, `fail`, `timeout` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }

    /// The outcome a payload string names, if any.
    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }

    /// True for `fail` and `timeout`: the outcomes that count in a failure
    /// streak (an `error` is a broken check, not a failed table).
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Fail | Outcome::Timeout)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `recon_result`: the outcome of a reconciliation check, with the
/// ingestion runs it covers.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconResult {
    /// Pass, fail, timeout or error.
    pub outcome: Outcome,
    /// The value the check measured (a row-count difference, a ratio).
    pub observed: Option<f64>,
    /// The threshold it was compared with.
    pub threshold: Option<f64>,
    /// How the tolerance was set (free object: `{"method": "mad", "k": 3}`).
    pub tolerance: Option<JsonObject>,
    /// The ingestion runs (`context.run_id`) the check covers: the lineage link.
    pub ingestion_run_ids: Vec<String>,
    /// Where to look next (queries, keys of the differing rows).
    pub drill_down: Vec<String>,
    /// The variability statistics the threshold came from.
    pub variability: Option<JsonObject>,
}

impl ReconResult {
    /// A result with only an outcome.
    pub fn new(outcome: Outcome) -> Self {
        ReconResult {
            outcome,
            observed: None,
            threshold: None,
            tolerance: None,
            ingestion_run_ids: Vec::new(),
            drill_down: Vec::new(),
            variability: None,
        }
    }
}

impl StandardPayload for ReconResult {
    const KIND: &'static str = "recon_result";

    fn to_payload(&self) -> JsonObject {
        let mut p = JsonObject::new();
        p.insert("outcome".into(), self.outcome.as_str().into());
        if let Some(observed) = self.observed {
            p.insert("observed".into(), float(observed));
        }
        if let Some(threshold) = self.threshold {
            p.insert("threshold".into(), float(threshold));
        }
        put(
            &mut p,
            "tolerance",
            self.tolerance.clone().map(Value::Object),
        );
        put_strings(&mut p, "ingestion_run_ids", &self.ingestion_run_ids);
        put_strings(&mut p, "drill_down", &self.drill_down);
        put(
            &mut p,
            "variability",
            self.variability.clone().map(Value::Object),
        );
        p
    }

    fn from_payload(p: &JsonObject) -> Result<Self, PayloadError> {
        let outcome: String = required(p, "outcome", opt_string)?;
        let outcome = Outcome::parse(&outcome).ok_or_else(|| {
            PayloadError::new(
                "payload.outcome",
                format!("must be one of pass, fail, timeout, error, got {outcome:?}"),
            )
        })?;
        Ok(ReconResult {
            outcome,
            observed: opt_f64(p, "payload", "observed")?,
            threshold: opt_f64(p, "payload", "threshold")?,
            tolerance: opt_object(p, "payload", "tolerance")?,
            ingestion_run_ids: opt_strings(p, "payload", "ingestion_run_ids")?,
            drill_down: opt_strings(p, "payload", "drill_down")?,
            variability: opt_object(p, "payload", "variability")?,
        })
    }
}

/// One column of a [`SchemaSnapshot`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Column {
    /// The column name, as the source spells it.
    pub name: String,
    /// The type, as the source spells it (`NUMBER`, `varchar`); written as `type`.
    pub data_type: String,
    /// Whether the column accepts nulls, when the collector knows.
    pub nullable: Option<bool>,
    /// The precision (or length), when the type has one.
    pub precision: Option<i64>,
}

impl Column {
    /// A column with unknown nullability and no precision.
    pub fn new(name: &str, data_type: &str) -> Self {
        Column {
            name: name.to_owned(),
            data_type: data_type.to_owned(),
            nullable: None,
            precision: None,
        }
    }

    /// The same column with `nullable` set.
    pub fn nullable(mut self, nullable: bool) -> Self {
        self.nullable = Some(nullable);
        self
    }

    /// The same column with `precision` set.
    pub fn precision(mut self, precision: i64) -> Self {
        self.precision = Some(precision);
        self
    }

    fn to_json(&self) -> Value {
        let mut c = JsonObject::new();
        c.insert("name".into(), self.name.clone().into());
        c.insert("type".into(), self.data_type.clone().into());
        put(&mut c, "nullable", self.nullable);
        put(&mut c, "precision", self.precision);
        Value::Object(c)
    }

    fn from_json(value: &Value, path: &str) -> Result<Self, PayloadError> {
        let Value::Object(c) = value else {
            return Err(PayloadError::new(path, "must be an object"));
        };
        let required_string = |key: &str| {
            opt_string(c, path, key)?
                .ok_or_else(|| PayloadError::new(format!("{path}.{key}"), "is required"))
        };
        Ok(Column {
            name: required_string("name")?,
            data_type: required_string("type")?,
            nullable: opt_bool(c, path, "nullable")?,
            precision: opt_i64(c, path, "precision")?,
        })
    }
}

/// `schema_snapshot`: the columns of a table as a collector saw them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchemaSnapshot {
    /// The columns, in table order.
    pub columns: Vec<Column>,
}

impl StandardPayload for SchemaSnapshot {
    const KIND: &'static str = "schema_snapshot";

    fn to_payload(&self) -> JsonObject {
        let mut p = JsonObject::new();
        p.insert(
            "columns".into(),
            Value::Array(self.columns.iter().map(Column::to_json).collect()),
        );
        p
    }

    fn from_payload(p: &JsonObject) -> Result<Self, PayloadError> {
        let Some(columns) = p.get("columns") else {
            return Err(PayloadError::new("payload.columns", "is required"));
        };
        let Value::Array(columns) = columns else {
            return Err(PayloadError::new("payload.columns", "must be an array"));
        };
        let columns = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Column::from_json(c, &format!("payload.columns[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(SchemaSnapshot { columns })
    }
}

/// `statistics_snapshot`: statistics a collector computed on a table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatisticsSnapshot {
    /// Rows in the table.
    pub row_count: Option<u64>,
    /// The fraction of null values, in `[0, 1]`.
    pub null_fraction: Option<f64>,
}

impl StandardPayload for StatisticsSnapshot {
    const KIND: &'static str = "statistics_snapshot";

    fn to_payload(&self) -> JsonObject {
        let mut p = JsonObject::new();
        put(&mut p, "row_count", self.row_count);
        if let Some(fraction) = self.null_fraction {
            p.insert("null_fraction".into(), float(fraction));
        }
        p
    }

    fn from_payload(p: &JsonObject) -> Result<Self, PayloadError> {
        Ok(StatisticsSnapshot {
            row_count: opt_u64(p, "payload", "row_count")?,
            null_fraction: opt_f64(p, "payload", "null_fraction")?,
        })
    }
}

/// `catalog_diff`: one change to a table's definition in the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogDiff {
    /// What changed (`column_added`, `column_dropped`, `type_changed`).
    pub change: String,
    /// The column concerned, if any.
    pub column: Option<String>,
    /// Whether the change breaks readers or writers.
    pub breaking: Option<bool>,
}

impl StandardPayload for CatalogDiff {
    const KIND: &'static str = "catalog_diff";

    fn to_payload(&self) -> JsonObject {
        let mut p = JsonObject::new();
        p.insert("change".into(), self.change.clone().into());
        put(&mut p, "column", self.column.clone());
        put(&mut p, "breaking", self.breaking);
        p
    }

    fn from_payload(p: &JsonObject) -> Result<Self, PayloadError> {
        Ok(CatalogDiff {
            change: required(p, "change", opt_string)?,
            column: opt_string(p, "payload", "column")?,
            breaking: opt_bool(p, "payload", "breaking")?,
        })
    }
}

/// A float as JSON; non-finite floats have no JSON form and become `null`.
fn float(value: f64) -> Value {
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

fn put<T: Into<Value>>(p: &mut JsonObject, key: &str, value: Option<T>) {
    if let Some(value) = value {
        p.insert(key.into(), value.into());
    }
}

fn put_strings(p: &mut JsonObject, key: &str, values: &[String]) {
    if !values.is_empty() {
        p.insert(key.into(), values.to_vec().into());
    }
}

type Reader<T> = fn(&JsonObject, &str, &str) -> Result<Option<T>, PayloadError>;

/// A required payload field read with `read`.
fn required<T>(p: &JsonObject, key: &str, read: Reader<T>) -> Result<T, PayloadError> {
    read(p, "payload", key)?
        .ok_or_else(|| PayloadError::new(format!("payload.{key}"), "is required"))
}

fn wrong(parent: &str, key: &str, expected: &str) -> PayloadError {
    PayloadError::new(format!("{parent}.{key}"), format!("must be {expected}"))
}

fn opt_u64(p: &JsonObject, parent: &str, key: &str) -> Result<Option<u64>, PayloadError> {
    p.get(key)
        .map(|v| {
            v.as_u64()
                .ok_or_else(|| wrong(parent, key, "an integer >= 0"))
        })
        .transpose()
}

fn opt_i64(p: &JsonObject, parent: &str, key: &str) -> Result<Option<i64>, PayloadError> {
    p.get(key)
        .map(|v| v.as_i64().ok_or_else(|| wrong(parent, key, "an integer")))
        .transpose()
}

fn opt_f64(p: &JsonObject, parent: &str, key: &str) -> Result<Option<f64>, PayloadError> {
    p.get(key)
        .map(|v| v.as_f64().ok_or_else(|| wrong(parent, key, "a number")))
        .transpose()
}

fn opt_bool(p: &JsonObject, parent: &str, key: &str) -> Result<Option<bool>, PayloadError> {
    p.get(key)
        .map(|v| v.as_bool().ok_or_else(|| wrong(parent, key, "a boolean")))
        .transpose()
}

fn opt_string(p: &JsonObject, parent: &str, key: &str) -> Result<Option<String>, PayloadError> {
    p.get(key)
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| wrong(parent, key, "a string"))
        })
        .transpose()
}

fn opt_object(p: &JsonObject, parent: &str, key: &str) -> Result<Option<JsonObject>, PayloadError> {
    p.get(key)
        .map(|v| {
            v.as_object()
                .cloned()
                .ok_or_else(|| wrong(parent, key, "an object"))
        })
        .transpose()
}

/// An optional array of strings; absent reads as empty.
fn opt_strings(p: &JsonObject, parent: &str, key: &str) -> Result<Vec<String>, PayloadError> {
    let Some(value) = p.get(key) else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = value else {
        return Err(wrong(parent, key, "an array of strings"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str().map(str::to_owned).ok_or_else(|| {
                PayloadError::new(format!("{parent}.{key}[{i}]"), "must be a string")
            })
        })
        .collect()
}

fn opt_timestamp(
    p: &JsonObject,
    parent: &str,
    key: &str,
) -> Result<Option<Timestamp>, PayloadError> {
    p.get(key)
        .map(|v| {
            v.as_str()
                .and_then(Timestamp::parse_rfc3339)
                .ok_or_else(|| wrong(parent, key, "an RFC 3339 timestamp string with an offset"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> JsonObject {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    /// Reading `payload` as `T` fails naming `field`.
    fn check_error<T: StandardPayload + fmt::Debug>(payload: Value, field: &str) {
        let err = T::from_payload(&object(payload)).expect_err("payload is invalid");
        assert_eq!(err.field, field, "{err}");
    }

    #[test]
    fn round_trips() {
        let at = Timestamp::parse_rfc3339("2024-01-10T05:00:00Z").unwrap();
        let volume = IngestionVolume {
            rows: 10,
            bytes: Some(20),
            filter: Some("x = 1".into()),
            watermark: Some(at),
            slices: None,
        };
        assert_eq!(
            IngestionVolume::from_payload(&volume.to_payload()).unwrap(),
            volume
        );
        let mut recon = ReconResult::new(Outcome::Timeout);
        recon.observed = Some(1.5);
        recon.ingestion_run_ids = vec!["run-1".into(), "run-2".into()];
        recon.tolerance = Some(object(json!({"k": 3})));
        assert_eq!(
            ReconResult::from_payload(&recon.to_payload()).unwrap(),
            recon
        );
        let snapshot = SchemaSnapshot {
            columns: vec![
                Column::new("id", "NUMBER").nullable(false).precision(38),
                Column::new("name", "VARCHAR2"),
            ],
        };
        assert_eq!(
            SchemaSnapshot::from_payload(&snapshot.to_payload()).unwrap(),
            snapshot
        );
    }

    #[test]
    fn errors_name_the_field() {
        check_error::<IngestionVolume>(json!({}), "payload.rows");
        check_error::<IngestionVolume>(json!({"rows": -1}), "payload.rows");
        check_error::<IngestionVolume>(
            json!({"rows": 1, "watermark": "yesterday"}),
            "payload.watermark",
        );
        check_error::<ReconResult>(json!({"outcome": "maybe"}), "payload.outcome");
        check_error::<ReconResult>(
            json!({"outcome": "pass", "ingestion_run_ids": ["a", 2]}),
            "payload.ingestion_run_ids[1]",
        );
        check_error::<SchemaSnapshot>(
            json!({"columns": [{"name": "a", "type": "int"}, {"name": "b"}]}),
            "payload.columns[1].type",
        );
        check_error::<StatisticsSnapshot>(json!({"null_fraction": "x"}), "payload.null_fraction");
    }

    #[test]
    fn windows_are_utc_strings_and_read_back() {
        let start = Timestamp::parse_rfc3339("2024-01-09T02:00:00+02:00").unwrap();
        let end = Timestamp::parse_rfc3339("2024-01-10T00:00:00Z").unwrap();
        let record = IngestionVolume::default()
            .record(MetadataTarget::new("s", "d", "t"), end)
            .window(start, end);
        assert_eq!(record.extras["window_start"], "2024-01-09T00:00:00Z");
        assert_eq!(
            Window::from_extras(&record.extras).unwrap(),
            Some(Window::new(start, end))
        );
        let half = object(json!({"window_start": "2024-01-09T00:00:00Z"}));
        assert_eq!(
            Window::from_extras(&half).unwrap_err().field,
            "extras.window_end"
        );
    }
}
