//! Instants: microseconds since the Unix epoch, in UTC.

use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeZone, Timelike, Utc};

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
        Some(Timestamp::from_datetime(parsed.with_timezone(&Utc)))
    }

    /// Parses a record's RFC 3339 timestamp (`produced_at`,
    /// `extras.window_start`/`window_end`) by the rule the standard kinds'
    /// JSON Schema `date-time` format applies to `payload.watermark`, so
    /// every timestamp of a record is held to one rule: `T` (or `t`)
    /// between date and time, not a space (which [`Timestamp::parse_rfc3339`]
    /// accepts, as query text may use it), and a second of 60 only at
    /// 23:59:60 UTC, a leap second. The instant keeps its full precision
    /// (for comparing a window's ends); [`Timestamp::from_datetime`] makes
    /// it a `Timestamp`.
    pub fn parse_record_rfc3339(text: &str) -> Option<DateTime<Utc>> {
        if !matches!(text.as_bytes().get(10), Some(b'T' | b't')) {
            return None;
        }
        let parsed = DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc);
        // chrono gives a second of 60 as 59 with a nanosecond of 1e9 or more.
        let leap = parsed.nanosecond() >= 1_000_000_000;
        if leap && !(parsed.hour() == 23 && parsed.minute() == 59) {
            return None;
        }
        Some(parsed)
    }

    /// The instant, truncated to microseconds (what every parser here keeps).
    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Timestamp(at.timestamp_micros())
    }

    /// The instant as a chrono `DateTime<Utc>`, when it is within chrono's range.
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        Utc.timestamp_micros(self.0).single()
    }

    /// RFC 3339 in UTC with a `Z` suffix and only as many fractional digits as needed.
    pub fn to_rfc3339(self) -> String {
        if (0..YEAR_10000).contains(&self.0) {
            return self.to_rfc3339_common();
        }
        match self.to_datetime() {
            Some(dt) => dt.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            None => format!("@{}us", self.0),
        }
    }

    /// [`Timestamp::to_rfc3339`] for instants from 1970 to 9999, without
    /// chrono: the same text as chrono's `to_rfc3339_opts(AutoSi, true)`
    /// (no fraction, 3 digits when whole milliseconds, else 6), written
    /// directly (stats output formats one instant per group).
    fn to_rfc3339_common(self) -> String {
        let secs = self.0.div_euclid(MICROS_PER_SECOND);
        let micros = self.0.rem_euclid(MICROS_PER_SECOND);
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let mut out = String::with_capacity(27);
        push_digits(&mut out, year, 4);
        out.push('-');
        push_digits(&mut out, month, 2);
        out.push('-');
        push_digits(&mut out, day, 2);
        out.push('T');
        push_digits(&mut out, sod / 3_600, 2);
        out.push(':');
        push_digits(&mut out, sod / 60 % 60, 2);
        out.push(':');
        push_digits(&mut out, sod % 60, 2);
        if micros % 1_000 == 0 && micros != 0 {
            out.push('.');
            push_digits(&mut out, micros / 1_000, 3);
        } else if micros != 0 {
            out.push('.');
            push_digits(&mut out, micros, 6);
        }
        out.push('Z');
        out
    }

    /// Whether the instant has an RFC 3339 form: from 0000-01-01T00:00:00Z
    /// up to, not including, 10000-01-01T00:00:00Z (RFC 3339 years have
    /// four digits). Every stored `produced_at` does; an instant computed
    /// by a query (`now + 100000000d`) may not.
    pub fn is_rfc3339(self) -> bool {
        (YEAR_0..YEAR_10000).contains(&self.0)
    }

    /// [`Timestamp::to_rfc3339`] when the instant [has an RFC 3339
    /// form](Timestamp::is_rfc3339), else `None`.
    pub fn to_rfc3339_checked(self) -> Option<String> {
        self.is_rfc3339().then(|| self.to_rfc3339())
    }

    /// Adds a number of microseconds, saturating at the ends of the range.
    pub fn saturating_add_micros(self, micros: i64) -> Self {
        Timestamp(self.0.saturating_add(micros))
    }
}

/// 10000-01-01T00:00:00Z in microseconds: the first instant with a five-digit year.
const YEAR_10000: i64 = 253_402_300_800 * MICROS_PER_SECOND;
/// 0000-01-01T00:00:00Z in microseconds: the earliest instant RFC 3339 can write.
const YEAR_0: i64 = -62_167_219_200 * MICROS_PER_SECOND;

/// Appends the last `width` decimal digits of `value` (not negative), zero-padded.
fn push_digits(out: &mut String, value: i64, width: u32) {
    for i in (0..width).rev() {
        let digit = (value / 10_i64.pow(i)) % 10;
        out.push(char::from(b'0' + digit as u8));
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

    /// What `to_rfc3339` gave before its chrono-free path.
    fn chrono_text(micros: i64) -> String {
        Utc.timestamp_micros(micros)
            .single()
            .expect("in range")
            .to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    #[test]
    fn common_instants_print_as_chrono_prints_them() {
        let edges = [
            0,
            1,
            999,
            1_000,
            1_500,
            999_999,
            1_000_000,
            MICROS_PER_DAY - 1,
            951_782_400_000_000, // 2000-02-29
            1_717_200_000_000_000,
            4_107_542_400_000_000, // 2100-03-01
            YEAR_10000 - 1,
        ];
        for micros in edges {
            assert_eq!(
                Timestamp(micros).to_rfc3339(),
                chrono_text(micros),
                "{micros}"
            );
        }
        // Every day from 1970 to 9999 (leap years, century rules), at a
        // varying time of day and fraction.
        let mut micros = 0;
        let mut step = 0;
        while micros < YEAR_10000 {
            assert_eq!(
                Timestamp(micros).to_rfc3339(),
                chrono_text(micros),
                "{micros}"
            );
            step += 1;
            micros += MICROS_PER_DAY + (step % 7) * 1_000 + (step % 3) * 1_000_037;
        }
        // Outside the common range chrono still prints.
        assert_eq!(Timestamp(-1).to_rfc3339(), chrono_text(-1));
        assert_eq!(Timestamp(YEAR_10000).to_rfc3339(), chrono_text(YEAR_10000));
    }

    #[test]
    fn rfc3339_range_is_years_0000_to_9999() {
        assert_eq!(
            Timestamp(YEAR_0).to_rfc3339_checked().as_deref(),
            Some("0000-01-01T00:00:00Z")
        );
        assert_eq!(Timestamp(YEAR_0 - 1).to_rfc3339_checked(), None);
        assert_eq!(
            Timestamp(YEAR_10000 - 1).to_rfc3339_checked().as_deref(),
            Some("9999-12-31T23:59:59.999999Z")
        );
        assert_eq!(Timestamp(YEAR_10000).to_rfc3339_checked(), None);
        assert_eq!(Timestamp::MAX.to_rfc3339_checked(), None);
        assert_eq!(Timestamp::MIN.to_rfc3339_checked(), None);
    }

    #[test]
    fn record_timestamps_follow_the_date_time_format_rule() {
        let ok = |t: &str| Timestamp::parse_record_rfc3339(t).is_some();
        for good in [
            "2024-01-10T05:00:00Z",
            "2024-01-10t05:00:00z",
            "2024-01-10T07:00:00.123456789+02:00",
            "2016-12-31T23:59:60Z",
            "2017-01-01T00:59:60+01:00",
        ] {
            assert!(ok(good), "{good}");
        }
        for bad in [
            "2024-01-10 05:00:00Z",
            "2024-03-15T12:30:60Z",
            "2016-12-31T23:59:60+01:00",
            "2024-01-10T05:00:00",
            "2024-01-10",
        ] {
            assert!(!ok(bad), "{bad}");
        }
        // The lenient parser (query text) still takes a space.
        assert!(Timestamp::parse_rfc3339("2024-01-10 05:00:00Z").is_some());
        let leap = Timestamp::parse_record_rfc3339("2016-12-31T23:59:60.5Z").unwrap();
        assert_eq!(
            Timestamp::from_datetime(leap),
            Timestamp::parse_rfc3339("2016-12-31T23:59:60.5Z").unwrap()
        );
    }

    #[test]
    fn rejects_missing_offset() {
        assert!(Timestamp::parse_rfc3339("2024-01-10T05:00:00").is_none());
        assert!(Timestamp::parse_rfc3339("yesterday").is_none());
    }
}
