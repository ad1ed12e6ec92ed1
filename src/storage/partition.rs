//! Partitions: one set of tables per (kind, time bucket of `produced_at`).

use chrono::{Datelike, NaiveDate, TimeZone, Utc};

use crate::kinds::Bucket;
use crate::model::{Timestamp, MICROS_PER_DAY};

/// Identifies one partition: a kind and the start of its bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    /// The kind.
    pub kind: String,
    /// The first instant of the bucket (inclusive), microseconds.
    pub bucket_start: i64,
}

/// The first instant of the bucket holding `ts`.
pub fn bucket_start(bucket: Bucket, ts: Timestamp) -> i64 {
    let micros = ts.as_micros();
    match bucket {
        Bucket::Day => micros.div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY,
        Bucket::Month => match ts.to_datetime() {
            Some(dt) => month_start_micros(dt.year(), dt.month()).unwrap_or(micros),
            None => micros,
        },
    }
}

/// The first instant after the bucket that starts at `start` (exclusive end).
pub fn bucket_end(bucket: Bucket, start: i64) -> i64 {
    match bucket {
        Bucket::Day => start.saturating_add(MICROS_PER_DAY),
        Bucket::Month => match Timestamp::from_micros(start).to_datetime() {
            Some(dt) => {
                let (year, month) = if dt.month() == 12 {
                    (dt.year() + 1, 1)
                } else {
                    (dt.year(), dt.month() + 1)
                };
                month_start_micros(year, month).unwrap_or(i64::MAX)
            }
            None => i64::MAX,
        },
    }
}

fn month_start_micros(year: i32, month: u32) -> Option<i64> {
    let date = NaiveDate::from_ymd_opt(year, month, 1)?;
    let dt = Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?);
    Some(dt.timestamp_micros())
}

/// The bucket's label in partition and table names: `2024-01-10` or `2024-01`.
pub fn bucket_label(bucket: Bucket, start: i64) -> String {
    match Timestamp::from_micros(start).to_datetime() {
        Some(dt) => match bucket {
            Bucket::Day => dt.format("%Y-%m-%d").to_string(),
            Bucket::Month => dt.format("%Y-%m").to_string(),
        },
        None => format!("@{start}"),
    }
}

/// The partition's name for people: `ingestion_volume/2024-01-10`.
pub fn partition_name(kind: &str, bucket: Bucket, start: i64) -> String {
    format!("{kind}/{}", bucket_label(bucket, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bucket: Bucket, ts: &str, label: &str, end: &str) {
        let ts = Timestamp::parse_rfc3339(ts).unwrap();
        let start = bucket_start(bucket, ts);
        assert_eq!(bucket_label(bucket, start), label);
        assert_eq!(
            Timestamp::from_micros(bucket_end(bucket, start)).to_rfc3339(),
            end
        );
        assert!(start <= ts.as_micros() && ts.as_micros() < bucket_end(bucket, start));
    }

    #[test]
    fn buckets() {
        check(
            Bucket::Day,
            "2024-01-10T05:00:00Z",
            "2024-01-10",
            "2024-01-11T00:00:00Z",
        );
        check(
            Bucket::Day,
            "1969-12-31T23:00:00Z",
            "1969-12-31",
            "1970-01-01T00:00:00Z",
        );
        check(
            Bucket::Month,
            "2024-02-29T23:59:59Z",
            "2024-02",
            "2024-03-01T00:00:00Z",
        );
        check(
            Bucket::Month,
            "2023-12-31T10:00:00Z",
            "2023-12",
            "2024-01-01T00:00:00Z",
        );
    }
}
