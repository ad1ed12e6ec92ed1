//! The domain model: records, targets, contexts and instants, with the
//! validation rules of spec `records.md` §1. Pure data: no storage, no I/O.

mod record;
mod strict_json;
mod time;
mod validate;

pub use record::{
    canonical_name, push_canonical_name, push_target_key, target_key, JsonObject, MetadataContext,
    MetadataRecord, MetadataTarget, SortedJson, StoredRecord,
};
pub use time::{Timestamp, MICROS_PER_DAY, MICROS_PER_SECOND};
pub use validate::{
    check_kind_name, ValidationError, MAX_ID_PREFIX_BYTES, MAX_KIND_BYTES, MAX_LINE_BYTES,
    MAX_PRODUCER_BYTES, MAX_RECORD_BYTES, MAX_RECORD_DEPTH, MAX_WRITTEN_RECORD_BYTES,
};

/// A half-open range of instants `[from, until)` on `produced_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    /// Inclusive lower bound.
    pub from: Timestamp,
    /// Exclusive upper bound.
    pub until: Timestamp,
}

impl TimeRange {
    /// Every instant.
    pub const ALL: TimeRange = TimeRange {
        from: Timestamp::MIN,
        until: Timestamp::MAX,
    };

    /// `[from, until)`.
    pub fn new(from: Timestamp, until: Timestamp) -> Self {
        TimeRange { from, until }
    }

    /// The last `micros` microseconds before `now`: `[now - micros, now + 1µs)`.
    pub fn last(now: Timestamp, micros: i64) -> Self {
        TimeRange {
            from: now.saturating_add_micros(-micros),
            until: now.saturating_add_micros(1),
        }
    }

    /// Does the range hold `ts`?
    pub fn contains(&self, ts: Timestamp) -> bool {
        self.from <= ts && ts < self.until
    }

    /// The intersection of two ranges (possibly empty).
    pub fn intersect(&self, other: &TimeRange) -> TimeRange {
        TimeRange {
            from: self.from.max(other.from),
            until: self.until.min(other.until),
        }
    }

    /// True when no instant is in the range.
    pub fn is_empty(&self) -> bool {
        self.from >= self.until
    }
}
