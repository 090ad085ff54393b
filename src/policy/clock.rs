//! A wall-clock time of day as policies write it (`HH:MM`), parsed when the policy is
//! loaded so that no request parses it again.

use std::fmt;

use chrono::NaiveTime;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `HH:MM`, 00:00 to 23:59.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClockTime(NaiveTime);

/// A text that is not `HH:MM`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not HH:MM")]
pub struct ClockTimeError(String);

impl ClockTime {
    /// Parses `HH:MM`.
    pub fn parse(text: &str) -> Result<Self, ClockTimeError> {
        NaiveTime::parse_from_str(text.trim(), "%H:%M")
            .map(ClockTime)
            .map_err(|_| ClockTimeError(text.to_string()))
    }

    /// The time of day.
    pub fn time(self) -> NaiveTime {
        self.0
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%H:%M"))
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ClockTime::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for ClockTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_and_minutes_round_trip_and_anything_else_is_refused() {
        let nine = ClockTime::parse("09:30").unwrap();
        assert_eq!(nine.to_string(), "09:30");
        assert_eq!(nine.time(), NaiveTime::from_hms_opt(9, 30, 0).unwrap());
        for bad in ["24:00", "9", "09:60", "noon", ""] {
            assert_eq!(
                ClockTime::parse(bad),
                Err(ClockTimeError(bad.to_string())),
                "{bad}"
            );
        }
    }
}
