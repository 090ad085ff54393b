//! Reflection ConfigMaps (`slo-guard.io/reflection: "true"`): threshold updates written
//! after incidents, with their provenance. This module parses and validates them, so a
//! bad one is rejected at `kubectl apply`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::admission::WorkloadKind;
use crate::policy::{PolicyError, PolicyRef, PromDuration, deserialize_strict};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReflectionSpec {
    pub target: ReflectionTarget,
    pub thresholds: BTreeMap<String, serde_yaml::Value>,
    pub reason: String,
    pub source: String,
    pub expires: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReflectionTarget {
    pub kind: WorkloadKind,
    pub name: String,
}

/// The thresholds a reflection may set, as dotted paths into the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThresholdPath {
    ScalingMaxReplicas,
    ScalingMinReplicas,
    ScalingMaxStep,
    ScalingCooldown,
    TrafficSpikeRatio,
    BudgetFreezeBelow,
    BudgetAgentFreezeBelow,
    SloMinRequestRate,
    AgentsMinConfidence,
}

impl ThresholdPath {
    const ALL: [ThresholdPath; 9] = [
        ThresholdPath::ScalingMaxReplicas,
        ThresholdPath::ScalingMinReplicas,
        ThresholdPath::ScalingMaxStep,
        ThresholdPath::ScalingCooldown,
        ThresholdPath::TrafficSpikeRatio,
        ThresholdPath::BudgetFreezeBelow,
        ThresholdPath::BudgetAgentFreezeBelow,
        ThresholdPath::SloMinRequestRate,
        ThresholdPath::AgentsMinConfidence,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ThresholdPath::ScalingMaxReplicas => "scaling.maxReplicas",
            ThresholdPath::ScalingMinReplicas => "scaling.minReplicas",
            ThresholdPath::ScalingMaxStep => "scaling.maxStep",
            ThresholdPath::ScalingCooldown => "scaling.cooldown",
            ThresholdPath::TrafficSpikeRatio => "traffic.spikeRatio",
            ThresholdPath::BudgetFreezeBelow => "slo.budget.freezeBelow",
            ThresholdPath::BudgetAgentFreezeBelow => "slo.budget.agentFreezeBelow",
            ThresholdPath::SloMinRequestRate => "slo.minRequestRate",
            ThresholdPath::AgentsMinConfidence => "agents.minConfidence",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|path| path.as_str() == text)
    }

    /// Checks that `value` has the type and range this threshold takes.
    fn check(self, value: &serde_yaml::Value) -> Result<(), String> {
        let number = || value.as_f64().filter(|n| n.is_finite());
        let whole = || value.as_u64().and_then(|n| u32::try_from(n).ok());
        match self {
            ThresholdPath::ScalingMaxReplicas | ThresholdPath::ScalingMinReplicas => whole()
                .map(|_| ())
                .ok_or_else(|| format!("{value:?} is not a replica count")),
            ThresholdPath::ScalingMaxStep => {
                serde_yaml::from_value::<crate::policy::Step>(value.clone())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            ThresholdPath::ScalingCooldown => value
                .as_str()
                .ok_or_else(|| "expected a duration such as 10m".to_string())
                .and_then(|text| {
                    PromDuration::parse(text)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }),
            ThresholdPath::TrafficSpikeRatio => match number() {
                Some(ratio) if ratio > 1.0 => Ok(()),
                _ => Err(format!("{value:?} must be a number above 1")),
            },
            ThresholdPath::BudgetFreezeBelow | ThresholdPath::BudgetAgentFreezeBelow => {
                match number() {
                    Some(floor) if (-100.0..=1.0).contains(&floor) => Ok(()),
                    _ => Err(format!("{value:?} must be a budget fraction at most 1")),
                }
            }
            ThresholdPath::SloMinRequestRate => match number() {
                Some(rate) if rate >= 0.0 => Ok(()),
                _ => Err(format!("{value:?} must be a non-negative request rate")),
            },
            ThresholdPath::AgentsMinConfidence => match number() {
                Some(confidence) if (0.0..=1.0).contains(&confidence) => Ok(()),
                _ => Err(format!("{value:?} must be a number in 0..1")),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reflection {
    /// The ConfigMap and key it came from.
    pub id: PolicyRef,
    pub key: String,
    pub spec: ReflectionSpec,
}

pub fn parse_reflection(key: &str, yaml: &str) -> Result<ReflectionSpec, PolicyError> {
    let spec: ReflectionSpec = deserialize_strict(key, yaml)?;
    let field_error = |field: String, message: String| PolicyError::Field {
        key: key.to_string(),
        field,
        message,
    };
    if spec.target.name.trim().is_empty() {
        return Err(field_error("target.name".into(), "is empty".into()));
    }
    if spec.thresholds.is_empty() {
        return Err(field_error(
            "thresholds".into(),
            "sets no thresholds".into(),
        ));
    }
    for (path, value) in &spec.thresholds {
        let threshold = ThresholdPath::parse(path).ok_or_else(|| {
            field_error(
                format!("thresholds.{path}"),
                format!(
                    "unknown threshold; expected one of {}",
                    ThresholdPath::ALL.map(ThresholdPath::as_str).join(", ")
                ),
            )
        })?;
        threshold
            .check(value)
            .map_err(|message| field_error(format!("thresholds.{path}"), message))?;
    }
    if spec.reason.trim().is_empty() {
        return Err(field_error(
            "reason".into(),
            "is empty: say why the threshold changed".into(),
        ));
    }
    if spec.source.trim().is_empty() {
        return Err(field_error(
            "source".into(),
            "is empty: say who reflected".into(),
        ));
    }
    Ok(spec)
}

/// Parses every key of a reflection ConfigMap; each key holds one reflection.
pub fn parse_reflection_configmap(
    id: &PolicyRef,
    data: &BTreeMap<String, String>,
) -> Result<Vec<Reflection>, PolicyError> {
    if data.is_empty() {
        return Err(PolicyError::Document {
            key: id.to_string(),
            message: "reflection ConfigMap has no data".to_string(),
        });
    }
    data.iter()
        .map(|(key, yaml)| {
            Ok(Reflection {
                id: id.clone(),
                key: key.clone(),
                spec: parse_reflection(key, yaml)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
target: {kind: Deployment, name: checkout}
thresholds: {scaling.maxReplicas: 12, traffic.spikeRatio: 1.5}
reason: "INC-4711: scaling to 20 exhausted the DB pool"
source: reflection-agent
expires: 2027-01-31T00:00:00Z
"#;

    #[test]
    fn parses_the_design_example() {
        let spec = parse_reflection("checkout.yaml", GOOD).unwrap();
        assert_eq!(spec.target.name, "checkout");
        assert_eq!(spec.thresholds.len(), 2);
        assert_eq!(spec.expires.to_rfc3339(), "2027-01-31T00:00:00+00:00");
    }

    #[test]
    fn rejects_unknown_thresholds_and_bad_values_naming_the_field() {
        let unknown = GOOD.replace("scaling.maxReplicas: 12", "scaling.maxReplica: 12");
        let error = parse_reflection("checkout.yaml", &unknown)
            .unwrap_err()
            .to_string();
        assert!(error.contains("thresholds.scaling.maxReplica"), "{error}");

        let bad_ratio = GOOD.replace("traffic.spikeRatio: 1.5", "traffic.spikeRatio: 0.5");
        let error = parse_reflection("checkout.yaml", &bad_ratio)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("traffic.spikeRatio") && error.contains("above 1"),
            "{error}"
        );

        let bad_expiry = GOOD.replace("2027-01-31T00:00:00Z", "next tuesday");
        let error = parse_reflection("checkout.yaml", &bad_expiry)
            .unwrap_err()
            .to_string();
        assert!(error.contains("expires"), "{error}");
    }

    #[test]
    fn requires_provenance() {
        let no_reason = GOOD.replace("\"INC-4711: scaling to 20 exhausted the DB pool\"", "\" \"");
        let error = parse_reflection("checkout.yaml", &no_reason)
            .unwrap_err()
            .to_string();
        assert!(error.contains("field `reason`"), "{error}");
    }
}
