//! `scaling`: replica caps, the largest step, and the cooldown.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ActorSet, FieldError, PromDuration};

/// `scaling`: bounds on replicas for the actors in `appliesTo`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScalingSpec {
    /// The fewest replicas (and the lowest HPA `minReplicas`).
    #[serde(default)]
    pub min_replicas: Option<u32>,
    /// The most replicas (and the highest HPA `maxReplicas`).
    #[serde(default)]
    pub max_replicas: Option<u32>,
    /// The largest change of replicas in one request.
    #[serde(default)]
    pub max_step: Option<Step>,
    /// The least time between two agent changes of one workload.
    #[serde(default)]
    pub cooldown: Option<PromDuration>,
    /// Who the caps bind; agents by default.
    #[serde(default)]
    pub applies_to: ActorSet,
    /// What happens to a replica count above `maxReplicas`: a denial, or (`clamp`) a
    /// mutating patch that lowers it to the cap, with a warning.
    #[serde(default)]
    pub on_exceed: OnExceed,
}

/// `scaling.onExceed`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnExceed {
    /// Deny a request above the cap.
    #[default]
    Deny,
    /// Lower it to the cap in the mutating patch, with a warning.
    Clamp,
}

/// The largest change of replicas in one request: a count (`5`) or a share of the
/// current replicas (`"50%"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// A number of replicas.
    Replicas(u32),
    /// A percentage of the current replicas (at least one).
    Percent(f64),
}

impl Step {
    /// The step allowed from `current` replicas. A percentage always allows at least one
    /// replica, so a workload at 1 replica can still move.
    pub fn allowed_from(self, current: u32) -> u32 {
        match self {
            Step::Replicas(count) => count,
            Step::Percent(percent) => {
                ((f64::from(current) * percent / 100.0).floor() as u32).max(1)
            }
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Replicas(count) => write!(f, "{count}"),
            Step::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Count(0) => Err(serde::de::Error::custom("maxStep must be at least 1")),
            Raw::Count(count) => Ok(Step::Replicas(count)),
            Raw::Text(text) => {
                let invalid = || {
                    serde::de::Error::custom(format!(
                        "invalid maxStep {text:?}: expected a replica count such as 5 or a percentage such as \"50%\""
                    ))
                };
                let percent: f64 = text
                    .trim()
                    .strip_suffix('%')
                    .ok_or_else(invalid)?
                    .trim()
                    .parse()
                    .map_err(|_| invalid())?;
                if !(percent.is_finite() && percent > 0.0) {
                    return Err(invalid());
                }
                Ok(Step::Percent(percent))
            }
        }
    }
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Step::Replicas(count) => serializer.serialize_u32(*count),
            Step::Percent(_) => serializer.serialize_str(&self.to_string()),
        }
    }
}

impl ScalingSpec {
    /// The floor is not above the cap, and a percentage step is at most 1000%.
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if let (Some(min), Some(max)) = (self.min_replicas, self.max_replicas)
            && min > max
        {
            return Err(FieldError::new(
                "scaling.minReplicas",
                format!("{min} is above scaling.maxReplicas {max}"),
            ));
        }
        if let Some(Step::Percent(percent)) = self.max_step
            && percent > 1000.0
        {
            return Err(FieldError::new(
                "scaling.maxStep",
                format!("{percent}% is above 1000%"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentage_steps_scale_with_current_replicas() {
        assert_eq!(Step::Percent(50.0).allowed_from(10), 5);
        assert_eq!(Step::Percent(50.0).allowed_from(1), 1);
        assert_eq!(Step::Replicas(3).allowed_from(100), 3);
    }
}
