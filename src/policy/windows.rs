//! `windows`: weekly and dated change freezes, and how long an exception may run.

use serde::{Deserialize, Serialize};

use super::{ActorSet, FieldError, PromDuration};

/// `windows`: change freezes, and how long an exception to one may run.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WindowsSpec {
    /// The freezes.
    #[serde(default)]
    pub freeze: Vec<FreezeWindow>,
    /// The longest freeze exception a person may grant (`slo-guard.io/freeze-exception`),
    /// from the time slo-guard stamps it to its `until`. Default 24h.
    #[serde(default)]
    pub max_exception: Option<PromDuration>,
}

/// How long a freeze exception may run when the policy sets no `windows.maxException`.
pub const DEFAULT_MAX_EXCEPTION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl WindowsSpec {
    /// The longest exception a person may grant under this policy.
    pub fn max_exception(&self) -> std::time::Duration {
        self.max_exception
            .as_ref()
            .map_or(DEFAULT_MAX_EXCEPTION, PromDuration::duration)
    }
}

/// A change freeze: either weekly (`days`, optional `start`/`end`, `timezone`), or dated
/// (`from` and `until`, RFC 3339 with an offset). Validation makes it one or the other.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FreezeWindow {
    /// Names the freeze in denials, and in the exceptions that lift it.
    #[serde(default)]
    pub name: Option<String>,
    /// A weekly window's days.
    #[serde(default)]
    pub days: Vec<chrono::Weekday>,
    /// `HH:MM` local time; absent means the whole day.
    #[serde(default)]
    pub start: Option<super::ClockTime>,
    /// `HH:MM` local time, exclusive; absent means the end of the day.
    #[serde(default)]
    pub end: Option<super::ClockTime>,
    /// The IANA time zone of a weekly window.
    #[serde(default)]
    pub timezone: Option<chrono_tz::Tz>,
    /// A dated window's start (inclusive).
    #[serde(default, with = "rfc3339_option")]
    pub from: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// A dated window's end (exclusive).
    #[serde(default, with = "rfc3339_option")]
    pub until: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Who the freeze binds; agents by default.
    #[serde(default)]
    pub applies_to: ActorSet,
}

impl FreezeWindow {
    /// Whether this is a dated window (`from`/`until`) rather than a weekly one.
    pub fn is_dated(&self) -> bool {
        self.from.is_some() || self.until.is_some()
    }
}

/// RFC 3339 times with an explicit offset (`2026-12-20T00:00:00+01:00`, or `Z`), kept
/// with the offset they were written in so that denials print them the same way.
mod rfc3339_option {
    use chrono::{DateTime, FixedOffset, SecondsFormat};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Reads an RFC 3339 time, refusing one without an offset.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(text.trim())
            .map(Some)
            .map_err(|error| {
                D::Error::custom(format!(
                    "{text:?} is not an RFC 3339 time with an offset, such as 2026-12-20T00:00:00+01:00 ({error})"
                ))
            })
    }

    /// Writes the time with the offset it was read with.
    pub fn serialize<S: Serializer>(
        value: &Option<DateTime<FixedOffset>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(time) => {
                serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }
            None => serializer.serialize_none(),
        }
    }
}

/// A freeze is weekly (`days`, `start`/`end`, `timezone`) or dated (`from`, `until`),
/// never both; names are unique, so that an exception names one freeze.
impl WindowsSpec {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        let mut names = Vec::<&str>::new();
        for (index, window) in self.freeze.iter().enumerate() {
            let field = format!("windows.freeze[{index}]");
            if let Some(name) = &window.name {
                if !valid_window_name(name) {
                    return Err(FieldError::new(
                        &format!("{field}.name"),
                        format!(
                            "{name:?} is not a name: use 1-63 of [A-Za-z0-9._-], starting with a letter or digit"
                        ),
                    ));
                }
                if names.contains(&name.as_str()) {
                    return Err(FieldError::new(
                        &format!("{field}.name"),
                        format!("{name:?} names another freeze too: names must be unique"),
                    ));
                }
                names.push(name);
            }
            if window.is_dated() {
                let weekly: Vec<&str> = [
                    ("days", !window.days.is_empty()),
                    ("start", window.start.is_some()),
                    ("end", window.end.is_some()),
                    ("timezone", window.timezone.is_some()),
                ]
                .into_iter()
                .filter_map(|(name, set)| set.then_some(name))
                .collect();
                if let Some(first) = weekly.first() {
                    return Err(FieldError::new(
                        &format!("{field}.{first}"),
                        format!(
                            "a freeze is either weekly (days, start, end, timezone) or dated (from, until), not both: this one sets from/until and {}",
                            weekly.join(", ")
                        ),
                    ));
                }
                let (Some(from), Some(until)) = (window.from, window.until) else {
                    let missing = if window.from.is_none() {
                        "from"
                    } else {
                        "until"
                    };
                    return Err(FieldError::new(
                        &format!("{field}.{missing}"),
                        "a dated freeze needs both from and until (RFC 3339 with an offset)",
                    ));
                };
                if from >= until {
                    return Err(FieldError::new(
                        &format!("{field}.until"),
                        format!(
                            "{} is not after from {}: a freeze ends after it starts",
                            until.to_rfc3339(),
                            from.to_rfc3339()
                        ),
                    ));
                }
                continue;
            }
            if window.days.is_empty() {
                return Err(FieldError::new(
                    &format!("{field}.days"),
                    "lists no days (a weekly freeze needs days and a timezone; a dated one, from and until)",
                ));
            }
            if window.timezone.is_none() {
                return Err(FieldError::new(
                    &format!("{field}.timezone"),
                    "is missing: a weekly freeze needs an IANA time zone, such as Europe/Berlin or UTC",
                ));
            }
        }
        Ok(())
    }
}

/// A freeze's name: what an exception names, so no `;`, `=` or spaces.
pub fn valid_window_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
