//! UTC timestamps written as RFC 3339 with milliseconds, read leniently.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// A point in time, always held in UTC.
///
/// Written as `2026-01-24T10:30:00.000Z`; read from any RFC 3339 form, and from the older zone-less form
/// `2026-01-24T10:30:00.123456`, which is taken as local time (UTC where the local offset is unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Timestamp {
        Timestamp(OffsetDateTime::now_utc())
    }

    /// Wraps a date-time, converting it to UTC; one that cannot be expressed in UTC (within a day of the
    /// supported range's ends) is clamped to the nearest end.
    pub fn from_datetime(at: OffsetDateTime) -> Timestamp {
        Timestamp::checked(at).unwrap_or_else(|| {
            let end = if at.year() > 0 { PrimitiveDateTime::MAX } else { PrimitiveDateTime::MIN };
            Timestamp(end.assume_utc())
        })
    }

    /// Converts a date-time to UTC; `None` when it falls outside the supported range in UTC.
    pub fn checked(at: OffsetDateTime) -> Option<Timestamp> {
        at.checked_to_offset(UtcOffset::UTC).map(Timestamp)
    }

    /// This time plus `millis` milliseconds, clamped to the end of the supported range.
    pub fn plus_millis(self, millis: i64) -> Timestamp {
        match self.0.checked_add(time::Duration::milliseconds(millis)) {
            Some(at) => Timestamp(at),
            None => self,
        }
    }

    /// As a system time (`None` before the Unix epoch, which no process start can be).
    pub fn to_system_time(self) -> Option<std::time::SystemTime> {
        let nanos = u64::try_from(self.0.unix_timestamp_nanos()).ok()?;
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos))
    }

    /// The wrapped date-time (UTC).
    pub fn datetime(self) -> OffsetDateTime {
        self.0
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i128 {
        self.0.unix_timestamp_nanos() / 1_000_000
    }

    /// Parses the written form or the older zone-less form (taken as local time, UTC where the local offset
    /// cannot be determined).
    pub fn parse(text: &str) -> Option<Timestamp> {
        Timestamp::parse_with_local_offset(text, UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC))
    }

    /// Like [`Timestamp::parse`], with the offset that a zone-less text is taken to be in given explicitly.
    pub fn parse_with_local_offset(text: &str, local: UtcOffset) -> Option<Timestamp> {
        if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
            return Timestamp::checked(at);
        }
        let zoneless = format_description!(
            version = 2,
            "[year]-[month]-[day][first [T][ ]][hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        let naive = PrimitiveDateTime::parse(text, &zoneless).ok()?;
        Timestamp::checked(naive.assume_offset(local))
    }

    /// Formats as `YYYYMMDD_HHMMSS` (UTC), the form used in log file and folder names.
    pub fn compact(self) -> String {
        let at = self.0;
        format!(
            "{:04}{:02}{:02}_{:02}{:02}{:02}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use time::macros::{datetime, offset};

    use super::*;

    /// Parses `text` (zone-less forms taken at +02:00) and writes it back; `None` when it must be refused.
    fn check(text: &str, expected: Option<&str>) {
        let got = Timestamp::parse_with_local_offset(text, offset!(+2)).map(|at| at.to_string());
        assert_eq!(got.as_deref(), expected, "{text:?}");
    }

    #[test]
    fn writes_utc_with_milliseconds() {
        let at = Timestamp::from_datetime(datetime!(2026-01-24 10:30:00 UTC));
        assert_eq!(at.to_string(), "2026-01-24T10:30:00.000Z");
        let at = Timestamp::from_datetime(datetime!(2026-01-24 10:30:00.123456789 UTC));
        assert_eq!(at.to_string(), "2026-01-24T10:30:00.123Z");
        let at = Timestamp::from_datetime(datetime!(0999-03-04 05:06:07.008 UTC));
        assert_eq!(at.to_string(), "0999-03-04T05:06:07.008Z");
    }

    #[test]
    fn converts_to_utc_on_wrap() {
        let at = Timestamp::from_datetime(datetime!(2026-01-24 12:30:00 +02:00));
        assert_eq!(at.datetime().offset(), UtcOffset::UTC);
        assert_eq!(at.to_string(), "2026-01-24T10:30:00.000Z");
    }

    #[test]
    fn reads_rfc3339() {
        check("2026-01-24T10:30:00.000Z", Some("2026-01-24T10:30:00.000Z"));
        check("2026-01-24T10:30:00.123Z", Some("2026-01-24T10:30:00.123Z"));
        check("2026-01-24T10:30:00Z", Some("2026-01-24T10:30:00.000Z"));
        check("2026-01-24T10:30:00.123456789Z", Some("2026-01-24T10:30:00.123Z"));
        check("2026-01-24T10:30:00+00:00", Some("2026-01-24T10:30:00.000Z"));
    }

    #[test]
    fn reads_offsets_as_utc() {
        check("2026-01-24T12:30:00.500+02:00", Some("2026-01-24T10:30:00.500Z"));
        check("2026-01-24T05:00:00-05:30", Some("2026-01-24T10:30:00.000Z"));
        check("2026-01-01T01:00:00+03:00", Some("2025-12-31T22:00:00.000Z"));
    }

    #[test]
    fn times_beyond_the_range_in_utc_are_refused_not_a_panic() {
        check("9999-12-31T23:59:59-01:00", None);
        check("9999-12-31T23:59:59Z", Some("9999-12-31T23:59:59.000Z"));
        let last = Timestamp::parse("9999-12-31T23:59:59.999Z").unwrap();
        assert_eq!(last.plus_millis(1), last, "clamped at the end of the range");
        assert!(serde_json::from_str::<Timestamp>("\"9999-12-31T23:59:59-01:00\"").is_err());
        let first = Timestamp::parse("1970-01-01T00:00:01Z").unwrap();
        assert_eq!(first.to_system_time(), Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1)));
        assert_eq!(Timestamp::parse("1969-12-31T23:59:59Z").unwrap().to_system_time(), None);
    }

    #[test]
    fn reads_the_older_zoneless_form_as_local_time() {
        // Taken at +02:00 by `check`.
        check("2026-01-24T10:30:00.123456", Some("2026-01-24T08:30:00.123Z"));
        check("2026-01-24T10:30:00", Some("2026-01-24T08:30:00.000Z"));
        check("2026-01-24 10:30:00.5", Some("2026-01-24T08:30:00.500Z"));
        let at = Timestamp::parse_with_local_offset("2026-01-24T10:30:00.123456", UtcOffset::UTC).unwrap();
        assert_eq!(at.to_string(), "2026-01-24T10:30:00.123Z");
    }

    #[test]
    fn parse_uses_some_local_offset_for_zoneless_text() {
        // The offset depends on the machine; only check that it parses to within a day of the UTC reading.
        let at = Timestamp::parse("2026-01-24T10:30:00.123456").unwrap();
        let utc = Timestamp::parse_with_local_offset("2026-01-24T10:30:00.123456", UtcOffset::UTC).unwrap();
        assert!((at.unix_millis() - utc.unix_millis()).abs() <= 26 * 3600 * 1000);
        assert_eq!(Timestamp::parse("2026-01-24T10:30:00.000Z").unwrap().to_string(), "2026-01-24T10:30:00.000Z");
    }

    #[test]
    fn rejects_garbage() {
        check("", None);
        check("yesterday", None);
        check("2026-01-24", None);
        check("10:30:00", None);
        check("2026-13-01T00:00:00Z", None);
        check("2026-02-30T00:00:00Z", None);
        check("2026-01-24T25:00:00Z", None);
        check("2026-01-24T10:30:00+25:00", None);
        check("2026-01-24T10:30:00.Z", None);
        check("2026-01-24T10:30:00.123456 trailing", None);
        check(" 2026-01-24T10:30:00Z", None);
        check("1706092200", None);
    }

    #[test]
    fn compact_form_for_file_names() {
        let at = Timestamp::from_datetime(datetime!(2026-01-24 10:30:05.999 UTC));
        assert_eq!(at.compact(), "20260124_103005");
        let at = Timestamp::from_datetime(datetime!(2026-01-24 01:02:03 +05:00));
        assert_eq!(at.compact(), "20260123_200203");
    }

    #[test]
    fn unix_millis() {
        assert_eq!(Timestamp::parse("1970-01-01T00:00:01.250Z").unwrap().unix_millis(), 1250);
        assert_eq!(Timestamp::parse("2026-01-24T10:30:00.000Z").unwrap().unix_millis(), 1_769_250_600_000);
    }

    #[test]
    fn serde_uses_the_text_form() {
        let at: Timestamp = serde_json::from_str("\"2026-01-24T12:30:00+02:00\"").unwrap();
        assert_eq!(serde_json::to_string(&at).unwrap(), "\"2026-01-24T10:30:00.000Z\"");
        let err = serde_json::from_str::<Timestamp>("\"not a time\"").unwrap_err();
        assert!(err.to_string().contains("invalid timestamp"), "{err}");
        assert!(serde_json::from_str::<Timestamp>("12345").is_err());
    }

    #[test]
    fn orders_by_time() {
        let early = Timestamp::parse("2026-01-24T10:30:00.000Z").unwrap();
        let late = Timestamp::parse("2026-01-24T11:30:00.000+01:00").unwrap();
        assert_eq!(early, late);
        assert!(early < Timestamp::parse("2026-01-24T10:30:00.001Z").unwrap());
    }
}
