//! Instants: microseconds since the Unix epoch, in UTC.

use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// An instant in UTC with microsecond precision.
///
/// Records store `produced_at` as a `Timestamp`; it orders like the instant it
/// names and prints as RFC 3339 with a `Z` suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Microseconds in one second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// Microseconds in one day.
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

impl Timestamp {
    /// The earliest representable instant.
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    /// The latest representable instant.
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    /// An instant from microseconds since the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// The current instant, truncated to microseconds.
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_micros())
    }

    /// Parses RFC 3339 with an explicit offset (`Z` or `+02:00`); the result is
    /// normalised to UTC and truncated to microseconds.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let parsed = DateTime::parse_from_rfc3339(text).ok()?;
        Some(Timestamp(parsed.with_timezone(&Utc).timestamp_micros()))
    }

    /// The instant as a chrono `DateTime<Utc>`, when it is within chrono's range.
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        Utc.timestamp_micros(self.0).single()
    }

    /// RFC 3339 in UTC with a `Z` suffix and only as many fractional digits as needed.
    pub fn to_rfc3339(self) -> String {
        match self.to_datetime() {
            Some(dt) => dt.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            None => format!("@{}us", self.0),
        }
    }

    /// Adds a number of microseconds, saturating at the ends of the range.
    pub fn saturating_add_micros(self, micros: i64) -> Self {
        Timestamp(self.0.saturating_add(micros))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        let ts = Timestamp::parse_rfc3339(input).expect("parses");
        assert_eq!(ts.to_rfc3339(), expected);
    }

    #[test]
    fn normalises_offsets_to_utc() {
        check("2024-01-10T07:00:00+02:00", "2024-01-10T05:00:00Z");
        check("2024-01-10T05:00:00Z", "2024-01-10T05:00:00Z");
    }

    #[test]
    fn keeps_microseconds_and_truncates_nanoseconds() {
        check(
            "2024-01-10T05:00:00.123456789Z",
            "2024-01-10T05:00:00.123456Z",
        );
        check("2024-01-10T05:00:00.5Z", "2024-01-10T05:00:00.500Z");
    }

    #[test]
    fn rejects_missing_offset() {
        assert!(Timestamp::parse_rfc3339("2024-01-10T05:00:00").is_none());
        assert!(Timestamp::parse_rfc3339("yesterday").is_none());
    }
}
