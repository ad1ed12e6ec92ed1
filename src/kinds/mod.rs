//! Kinds and governance: the kind registry (payload schemas by version,
//! retention, partition bucket, indexed paths) and the checks every stored
//! record passes (spec `records.md` §1a).

mod registry;
mod schema;
mod standard;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Timestamp, MICROS_PER_DAY};

pub use registry::KindRegistry;
pub use schema::PayloadSchema;
pub use standard::standard_kinds;

/// How long a kind's records are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retention {
    /// Never expire.
    Forever,
    /// Expire a partition once all of it is older than this many days.
    Days(u32),
}

impl Retention {
    /// The oldest `produced_at` still kept at `now`, or `None` when forever.
    pub fn cutoff(&self, now: Timestamp) -> Option<Timestamp> {
        match self {
            Retention::Forever => None,
            // Saturating: 106,751,992 days or more overflow i64
            // microseconds, and a wrapped product put the cutoff in the
            // future, so retention dropped every partition of the kind.
            Retention::Days(days) => Some(
                now.saturating_add_micros(
                    i64::from(*days)
                        .saturating_mul(MICROS_PER_DAY)
                        .saturating_neg(),
                ),
            ),
        }
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::Forever => f.write_str("forever"),
            Retention::Days(d) => write!(f, "{d}d"),
        }
    }
}

/// The time bucket of `produced_at` that makes one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// One partition per UTC day: high-frequency kinds.
    Day,
    /// One partition per UTC calendar month: snapshots.
    Month,
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bucket::Day => "day",
            Bucket::Month => "month",
        })
    }
}

/// Everything the registry knows about one kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KindSpec {
    /// The kind name, `[a-z][a-z0-9_]*`.
    pub name: String,
    /// What a record of this kind states, for people.
    pub description: String,
    /// Payload JSON Schemas; `schemas[i]` is schema version `i + 1`.
    pub schemas: Vec<Value>,
    /// How long records are kept.
    pub retention: Retention,
    /// The partition bucket.
    pub bucket: Bucket,
    /// Payload or extras paths indexed per partition (`payload.outcome`):
    /// one index entry per record and value, for selective lookups.
    pub indexed_paths: Vec<String>,
    /// Payload or extras paths summarized per partition
    /// (`extras.window_start`): the smallest and largest value there, so a
    /// query's range or equality on the path skips partitions that cannot
    /// match, at no per-record index cost. Made for values that follow
    /// `produced_at`, such as a record's window.
    #[serde(default)]
    pub summarized_paths: Vec<String>,
}

impl KindSpec {
    /// A kind with no schema (any payload; `Store::register_kind` makes that
    /// schema version 1, `{"type": "object"}`), kept forever, partitioned by day.
    pub fn new(name: &str, description: &str) -> Self {
        KindSpec {
            name: name.to_owned(),
            description: description.to_owned(),
            schemas: Vec::new(),
            retention: Retention::Forever,
            bucket: Bucket::Day,
            indexed_paths: Vec::new(),
            summarized_paths: Vec::new(),
        }
    }

    /// The newest schema version, 0 when the kind has no schema.
    pub fn latest_version(&self) -> u64 {
        self.schemas.len() as u64
    }
}

/// A record refused by governance; `field` is the path at fault
/// (`payload.rows`, `version`, `produced_at`, `kind`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GovernanceError {
    /// The path of the offending field.
    pub field: String,
    /// What is wrong, in plain words.
    pub reason: String,
}

impl GovernanceError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        GovernanceError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for GovernanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}` {}", self.field, self.reason)
    }
}

impl std::error::Error for GovernanceError {}

/// A kind registry operation that was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KindError {
    /// No kind of that name is registered.
    #[error("unknown kind `{0}`")]
    Unknown(String),
    /// The kind name breaks the naming rule.
    #[error("invalid kind name: {0}")]
    InvalidName(String),
    /// A payload schema is not a valid JSON Schema.
    #[error("invalid schema for kind `{kind}`: {reason}")]
    InvalidSchema {
        /// The kind.
        kind: String,
        /// What the schema compiler said.
        reason: String,
    },
    /// An indexed path is not of the form `payload.x` or `extras.x`.
    #[error("{0}")]
    InvalidPath(String),
    /// A kind of that name is already registered.
    #[error("kind `{0}` is already registered")]
    AlreadyRegistered(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 106,751,992 days and more overflowed i64 microseconds: the wrapped
    /// cutoff lay in the future and retention dropped every partition.
    #[test]
    fn a_retention_too_long_for_i64_keeps_everything() {
        let now = Timestamp::from_micros(1_700_000_000_000_000);
        for days in [106_751_991, 106_751_992, 213_503_982, u32::MAX] {
            let cutoff = Retention::Days(days).cutoff(now).unwrap();
            assert!(cutoff < now, "{days} days: {cutoff:?}");
            assert!(
                cutoff <= Timestamp::from_micros(i64::MIN / 2),
                "{days} days: {cutoff:?}"
            );
        }
        assert_eq!(
            Retention::Days(30).cutoff(now),
            Some(now.saturating_add_micros(-30 * MICROS_PER_DAY))
        );
    }
}
