//! Reflection ConfigMaps (`slo-guard.io/reflection: "true"`): threshold updates written
//! after incidents, with their provenance. This module parses and validates them, so a
//! bad one is rejected at `kubectl apply`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

mod effective;
/// Proposals learned from the outcomes of past changes.
pub mod learn;

pub use crate::policy::{Threshold, ThresholdPath, Thresholds};
pub use effective::{EffectivePolicy, Provenance, effective_policy};

use crate::admission::WorkloadKind;
use crate::policy::{PolicyError, PolicyRef, deserialize_strict};

/// One reflection, as written under a key of a reflection ConfigMap: threshold updates
/// for one workload, with why, from where, and until when.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReflectionSpec {
    /// The workload whose policy's thresholds it updates.
    pub target: ReflectionTarget,
    /// New values by threshold path (`scaling.maxReplicas: 12`), each parsed for its
    /// path as it is read; checked against the policy's `reflection` bounds when applied.
    #[serde(deserialize_with = "crate::policy::threshold::deserialize_reflected")]
    pub thresholds: Thresholds,
    /// Why (an incident, a postmortem finding); shown in denials that cite the value.
    pub reason: String,
    /// Where the reflection came from (a postmortem URL, an agent's run).
    pub source: String,
    /// After this it no longer applies.
    pub expires: DateTime<Utc>,
    /// Written by slo-guard from an observed outcome: applies only where the policy sets
    /// `reflection.applyProposals`.
    #[serde(default)]
    pub proposal: bool,
}

/// The workload a reflection applies to.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReflectionTarget {
    /// Deployment or StatefulSet.
    pub kind: WorkloadKind,
    /// The workload's name.
    pub name: String,
    /// Only for reflections in slo-guard's own namespace (its proposals): the workload's
    /// namespace. Elsewhere a reflection targets workloads in its own namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// A reflection loaded from the cluster or files.
#[derive(Debug, Clone, PartialEq)]
pub struct Reflection {
    /// The ConfigMap and key it came from.
    pub id: PolicyRef,
    /// The data key within the ConfigMap.
    pub key: String,
    /// What it says.
    pub spec: ReflectionSpec,
}

/// Parses and checks one reflection (the YAML under `key`); unknown fields are errors.
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
