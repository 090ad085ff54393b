//! Policy and reflection ConfigMaps are judged too, so `kubectl apply` of a bad one is
//! rejected with the parse error instead of being silently ignored at load.

use crate::admission::{
    ActorKind, Change, ConfigKind, POLICY_LABEL, REFLECTION_LABEL, Requester, TargetKind,
};
use crate::policy::{ConfigMapDocument, Mode, PolicyRef, PolicySet};
use crate::reflection::parse_reflection_configmap;

use super::{Finding, Rule};

/// The policy in force under which `requester` is an agent, if any.
pub(super) fn agent_under<'a>(
    requester: &Requester,
    policies: &'a PolicySet,
) -> Option<&'a PolicyRef> {
    policies
        .policies
        .iter()
        .find(|policy| super::classify_actor(requester, Some(&policy.spec)) == ActorKind::Agent)
        .map(|policy| &policy.id)
}

/// Policies are the guardrails agents are held to, so no agent may write, park, unlabel or
/// delete one, whatever RBAC allows it. Reflections are another matter: agents may write
/// them, and they loosen nothing beyond what the policy allows.
pub(super) fn agent_policy_change(change: &Change, agent_under: &PolicyRef) -> Option<Finding> {
    if change.target.kind != TargetKind::ConfigMap(ConfigKind::Policy) {
        return None;
    }
    let id = PolicyRef {
        namespace: change.target.namespace.clone(),
        name: change.target.name.clone(),
    };
    let user = &change.requester.username;
    Some(Finding {
        source: id.to_string(),
        rule: Rule::PolicyChange,
        mode: Mode::Enforce,
        headline: format!(
            "policy ConfigMap {id} not changed: agents cannot create, change, park or delete slo-guard policies; {user} is an agent under policy {agent_under}"
        ),
        remedy: "Ask a platform engineer to make this change".to_string(),
        brief: format!("{user} (agent) may not change policy {id}"),
    })
}

/// The checks of a policy or reflection ConfigMap that is in force after the change: its
/// label's value, and its schema. A change that deletes, parks or unlabels one has nothing
/// to check.
pub(super) fn check(change: &Change, policies: &PolicySet) -> Option<Finding> {
    let TargetKind::ConfigMap(kind) = change.target.kind else {
        return None;
    };
    change.config_data.as_ref()?;
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

    const AGENTS_POLICY: &str =
        "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"]}";

    fn by(mut change: Change, username: &str) -> Change {
        change.requester.username = username.to_string();
        change
    }

    #[test]
    fn no_agent_may_write_a_policy_even_a_valid_one() {
        let change = by(
            policy_configmap("match: {kinds: [Deployment]}\nscaling: {maxReplicas: 100}"),
            AGENT,
        );
        let decision = judge(AGENTS_POLICY, &change);
        let finding = only_finding(&decision, Rule::PolicyChange);
        assert_eq!(
            finding.headline,
            format!(
                "policy ConfigMap payments/checkout not changed: agents cannot create, change, park or delete slo-guard policies; {AGENT} is an agent under policy payments/checkout"
            )
        );
        assert_eq!(decision.actor, ActorKind::Agent);
        assert!(!decision.allowed());
        // The same change by a person is admitted.
        let person = judge(AGENTS_POLICY, &by(change, PERSON));
        assert!(person.findings.is_empty(), "{:?}", person.findings);
    }

    #[test]
    fn removing_a_policy_is_refused_to_agents_and_not_checked_for_people() {
        // Deleted, parked or unlabelled: nothing is in force after the change.
        let mut removal = policy_configmap("");
        removal.config_data = None;
        removal
            .target
            .labels
            .insert(POLICY_LABEL.to_string(), "false".to_string());
        let agent = judge(AGENTS_POLICY, &by(removal.clone(), AGENT));
        only_finding(&agent, Rule::PolicyChange);
        let person = judge(AGENTS_POLICY, &by(removal, PERSON));
        assert!(person.findings.is_empty(), "{:?}", person.findings);
    }

    #[test]
    fn agents_may_write_reflections() {
        let mut change = by(policy_configmap(""), AGENT);
        change.target.kind = TargetKind::ConfigMap(ConfigKind::Reflection);
        change.target.labels = BTreeMap::from([(REFLECTION_LABEL.to_string(), "true".to_string())]);
        change.config_data = Some(BTreeMap::from([(
            "checkout.yaml".to_string(),
            "target: {kind: Deployment, name: checkout}\nthresholds: {scaling.maxReplicas: 12}\nreason: INC-1\nsource: agent\nexpires: 2099-01-01T00:00:00Z\n".to_string(),
        )]));
        let decision = judge(AGENTS_POLICY, &change);
        assert!(decision.findings.is_empty(), "{:?}", decision.findings);
    }
}
