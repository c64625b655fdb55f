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

    /// Wraps a date-time, converting it to UTC.
    pub fn from_datetime(at: OffsetDateTime) -> Timestamp {
        Timestamp(at.to_offset(UtcOffset::UTC))
    }

    /// The wrapped date-time (UTC).
    pub fn datetime(self) -> OffsetDateTime {
        self.0
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i128 {
        self.0.unix_timestamp_nanos() / 1_000_000
    }

    /// Parses the written form or the older zone-less form.
    pub fn parse(text: &str) -> Option<Timestamp> {
        if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
            return Some(Timestamp::from_datetime(at));
        }
        let zoneless = format_description!(
            version = 2,
            "[year]-[month]-[day][first [T][ ]][hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        let naive = PrimitiveDateTime::parse(text, &zoneless).ok()?;
        let offset = UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC);
        Some(Timestamp::from_datetime(naive.assume_offset(offset)))
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
