//! `match`: which workloads a policy governs, by kind, name, labels and namespace.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{FieldError, Pattern};
use crate::admission::WorkloadKind;

/// `match`: which workloads a policy governs, in its namespace (or, in slo-guard's
/// namespace, in `namespaces`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MatchSpec {
    /// Workload kinds; both by default.
    #[serde(default = "all_workload_kinds")]
    pub kinds: Vec<WorkloadKind>,
    /// Workload names; empty means any name.
    #[serde(default)]
    pub names: Vec<String>,
    /// Workload labels; any when absent.
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    /// Only for policies in slo-guard's own namespace: the namespaces they govern.
    #[serde(default)]
    pub namespaces: Vec<Pattern>,
}

fn all_workload_kinds() -> Vec<WorkloadKind> {
    vec![WorkloadKind::Deployment, WorkloadKind::StatefulSet]
}

/// A Kubernetes label selector.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(default)]
    pub match_expressions: Vec<LabelRequirement>,
}

/// One `matchExpressions` requirement.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelRequirement {
    /// The label.
    pub key: String,
    /// How its value is tested.
    pub operator: LabelOperator,
    /// The values `In` and `NotIn` test against.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A `matchExpressions` operator.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum LabelOperator {
    /// The label is present with one of the values.
    In,
    /// The label is absent, or present with none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && self.match_expressions.iter().all(|req| {
                let value = labels.get(&req.key);
                match req.operator {
                    LabelOperator::In => value.is_some_and(|v| req.values.contains(v)),
                    LabelOperator::NotIn => value.is_none_or(|v| !req.values.contains(v)),
                    LabelOperator::Exists => value.is_some(),
                    LabelOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

impl MatchSpec {
    /// At least one kind, none listed twice.
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if self.kinds.is_empty() {
            return Err(FieldError::new(
                "match.kinds",
                "lists no kinds (use Deployment and/or StatefulSet)",
            ));
        }
        let mut seen = Vec::<WorkloadKind>::new();
        for kind in &self.kinds {
            if seen.contains(kind) {
                return Err(FieldError::new(
                    "match.kinds",
                    format!("{} is listed twice", kind.as_str()),
                ));
            }
            seen.push(*kind);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selector_operators() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "checkout".to_string())]
            .into_iter()
            .collect();
        let selector = |req: LabelRequirement| LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![req],
        };
        let req = |operator, values: &[&str]| LabelRequirement {
            key: "app".into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        assert!(selector(req(LabelOperator::In, &["checkout", "cart"])).matches(&labels));
        assert!(!selector(req(LabelOperator::NotIn, &["checkout"])).matches(&labels));
        assert!(selector(req(LabelOperator::Exists, &[])).matches(&labels));
        assert!(!selector(req(LabelOperator::DoesNotExist, &[])).matches(&labels));
    }
}
