//! Durations written the way Prometheus writes them (`5m`, `1h30m`, `30d`, `1w`),
//! kept verbatim so they can be substituted into PromQL `{{window}}` templates.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A text that is not a Prometheus duration, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: {reason} (use Prometheus units such as 30s, 5m, 1h, 30d, 1w)")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// A positive duration with the text it was written as.
#[derive(Clone, PartialEq, Eq)]
pub struct PromDuration {
    text: String,
    value: Duration,
}

impl PromDuration {
    /// Parses one or more number-unit pairs (`1h30m`); the total must be positive.
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let err = |reason| DurationError {
            input: input.to_string(),
            reason,
        };
        let text = input.trim();
        if text.is_empty() {
            return Err(err("empty"));
        }
        let mut total_ms: u128 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err("expected a number"));
            }
            let number: u128 = rest[..digits]
                .parse()
                .map_err(|_| err("number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit_ms: u128 = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 604_800_000,
                "y" => 31_536_000_000,
                "" => return Err(err("missing unit")),
                _ => return Err(err("unknown unit")),
            };
            rest = &rest[unit_len..];
            total_ms = number
                .checked_mul(unit_ms)
                .and_then(|ms| total_ms.checked_add(ms))
                .ok_or_else(|| err("too large"))?;
        }
        if total_ms == 0 {
            return Err(err("must be greater than zero"));
        }
        let millis = u64::try_from(total_ms).map_err(|_| err("too large"))?;
        Ok(Self {
            text: text.to_string(),
            value: Duration::from_millis(millis),
        })
    }

    /// The duration as written, for PromQL ranges.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The duration.
    pub fn duration(&self) -> Duration {
        self.value
    }
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        PromDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for PromDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_compound_units() {
        assert_eq!(
            PromDuration::parse("5m").unwrap().duration(),
            Duration::from_secs(300)
        );
        assert_eq!(
            PromDuration::parse("30d").unwrap().duration(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            PromDuration::parse("1h30m").unwrap().duration(),
            Duration::from_secs(5_400)
        );
        assert_eq!(
            PromDuration::parse("1w").unwrap().duration(),
            Duration::from_secs(604_800)
        );
        assert_eq!(
            PromDuration::parse("250ms").unwrap().duration(),
            Duration::from_millis(250)
        );
        assert_eq!(PromDuration::parse("1h30m").unwrap().as_str(), "1h30m");
    }

    #[test]
    fn rejects_malformed_durations_with_the_reason() {
        assert_eq!(PromDuration::parse("").unwrap_err().reason, "empty");
        assert_eq!(PromDuration::parse("5").unwrap_err().reason, "missing unit");
        assert_eq!(
            PromDuration::parse("5mins").unwrap_err().reason,
            "unknown unit"
        );
        assert_eq!(
            PromDuration::parse("m5").unwrap_err().reason,
            "expected a number"
        );
        assert_eq!(
            PromDuration::parse("0s").unwrap_err().reason,
            "must be greater than zero"
        );
        assert_eq!(
            PromDuration::parse("99999999999999999999999999y")
                .unwrap_err()
                .reason,
            "too large"
        );
    }
}
