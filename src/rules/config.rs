//! Policy and reflection ConfigMaps are judged too, so `kubectl apply` of a bad one is
//! rejected with the parse error instead of being silently ignored at load.

use crate::admission::{Change, ConfigKind, POLICY_LABEL, REFLECTION_LABEL, TargetKind};
use crate::policy::{ConfigMapDocument, Mode, PolicyRef, PolicySet};
use crate::reflection::parse_reflection_configmap;

use super::{Finding, Rule};

pub(super) fn check(change: &Change, policies: &PolicySet) -> Option<Finding> {
    let TargetKind::ConfigMap(kind) = change.target.kind else {
        return None;
    };
    let id = PolicyRef {
        namespace: change.target.namespace.clone(),
        name: change.target.name.clone(),
    };
    let document = ConfigMapDocument {
        namespace: id.namespace.clone(),
        name: id.name.clone(),
        labels: change.target.labels.clone(),
        data: change.config_data.clone().unwrap_or_default(),
        origin: "admission".to_string(),
    };
    let (label, rule, what) = match kind {
        ConfigKind::Policy => (POLICY_LABEL, Rule::PolicySchema, "policy"),
        ConfigKind::Reflection => (REFLECTION_LABEL, Rule::ReflectionSchema, "reflection"),
    };
    if let Some(value) = change
        .target
        .labels
        .get(label)
        .filter(|value| value.as_str() != "true")
    {
        return Some(Finding {
            source: id.to_string(),
            rule,
            mode: Mode::Enforce,
            headline: format!(
                "{what} ConfigMap {id} rejected: label {label}={value:?} is neither \"true\" nor \"false\""
            ),
            remedy: format!("Set {label} to \"true\" to enforce it, or \"false\" to park it"),
            brief: format!("label {label}={value:?} must be \"true\" or \"false\""),
        });
    }
    let (rule, what, error) = match kind {
        ConfigKind::Policy => (
            Rule::PolicySchema,
            "policy",
            crate::policy::store_validate(&policies.guard_namespace, &id, &document).err()?,
        ),
        ConfigKind::Reflection => (
            Rule::ReflectionSchema,
            "reflection",
            parse_reflection_configmap(&id, &document.data).err()?,
        ),
    };
    Some(Finding {
        source: id.to_string(),
        rule,
        mode: Mode::Enforce,
        headline: format!("{what} ConfigMap {id} rejected: {error}"),
        remedy: "Fix it and apply again; until then the last good version stays in force"
            .to_string(),
        brief: format!("invalid {what}: {error}"),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::admission::POLICY_LABEL;
    use crate::rules::testing::*;

    fn policy_configmap(yaml: &str) -> Change {
        let mut change = create_by(PERSON, 1);
        change.class = crate::admission::ChangeClass::Config;
        change.target.kind = TargetKind::ConfigMap(ConfigKind::Policy);
        change.target.workload_kind = None;
        change.target.labels = BTreeMap::from([(POLICY_LABEL.to_string(), "true".to_string())]);
        change.config_data = Some(BTreeMap::from([(
            "policy.yaml".to_string(),
            yaml.to_string(),
        )]));
        change
    }

    #[test]
    fn a_bad_policy_is_rejected_with_the_field_and_value() {
        let change = policy_configmap("match: {kinds: [Deployment]}\nscaling: {maxStep: \"lots\"}");
        let decision = judge("match: {kinds: [Deployment]}", &change);
        let finding = only_finding(&decision, Rule::PolicySchema);
        assert!(
            finding.headline.starts_with("policy ConfigMap payments/checkout rejected: policy.yaml: field `scaling.maxStep`: invalid maxStep \"lots\""),
            "{}",
            finding.headline
        );
        assert!(!decision.allowed());
    }

    #[test]
    fn a_label_value_other_than_true_or_false_is_rejected() {
        let mut change = policy_configmap("match: {kinds: [Deployment]}");
        change
            .target
            .labels
            .insert(POLICY_LABEL.to_string(), "yes".to_string());
        let decision = judge("match: {kinds: [Deployment]}", &change);
        let finding = only_finding(&decision, Rule::PolicySchema);
        assert!(
            finding
                .headline
                .contains("label slo-guard.io/policy=\"yes\" is neither"),
            "{}",
            finding.headline
        );
    }

    #[test]
    fn a_good_policy_is_admitted() {
        let change = policy_configmap("match: {kinds: [Deployment]}\nscaling: {maxReplicas: 10}");
        assert!(
            judge("match: {kinds: [Deployment]}", &change)
                .findings
                .is_empty()
        );
    }
}
