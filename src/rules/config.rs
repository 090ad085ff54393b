//! Policy and reflection ConfigMaps are judged too, so `kubectl apply` of a bad one is
//! rejected with the parse error instead of being silently ignored at load.

use crate::admission::{
    ActorKind, Change, ConfigKind, POLICY_LABEL, REFLECTION_LABEL, Requester, TargetKind,
};
use crate::annotations::WRITTEN_BY;
use crate::policy::{Mode, PolicyRef};
use crate::reflection::parse_reflection_configmap;
use crate::store::{ConfigMapDocument, PolicySet};

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

/// A reflection keeps its author: an agent may change or delete a reflection only if the
/// version in force was written by that agent, as slo-guard stamped it. A reflection
/// written by a person or another identity (or before slo-guard stamped authors) is
/// theirs.
pub(super) fn agent_reflection_change(change: &Change, agent_under: &PolicyRef) -> Option<Finding> {
    if change.target.kind != TargetKind::ConfigMap(ConfigKind::Reflection) {
        return None;
    }
    let was_reflection = change.target.before.as_ref().is_some_and(|before| {
        before
            .labels
            .get(REFLECTION_LABEL)
            .is_some_and(|value| value != "false")
    });
    if !was_reflection {
        return None;
    }
    let user = &change.requester.username;
    let author = change.annotations.before.get(WRITTEN_BY);
    if author == Some(user) {
        return None;
    }
    let id = format!("{}/{}", change.target.namespace, change.target.name);
    let author_text = author.map_or_else(
        || "someone slo-guard did not record".to_string(),
        |author| author.clone(),
    );
    Some(Finding {
        source: id.clone(),
        rule: Rule::ReflectionAuthor,
        mode: Mode::Enforce,
        headline: format!(
            "reflection ConfigMap {id} not changed: it was written by {author_text}, and agents may change or delete only reflections they wrote; {user} is an agent under policy {agent_under}"
        ),
        remedy: format!(
            "Write your own reflection ConfigMap, or ask {author_text} or a platform engineer to change this one"
        ),
        brief: format!("{user} (agent) may not change a reflection by {author_text}"),
    })
}

/// slo-guard stamps who wrote a reflection; a version in force must carry the stamp of
/// the identity that wrote it, which no client can set for another.
pub(super) fn check_written_by(change: &Change) -> Option<Finding> {
    if change.config_after() != Some(ConfigKind::Reflection) {
        return None;
    }
    let user = &change.requester.username;
    let stamped = change
        .annotations
        .after
        .as_ref()
        .and_then(|a| a.get(WRITTEN_BY));
    if stamped == Some(user) {
        return None;
    }
    let id = format!("{}/{}", change.target.namespace, change.target.name);
    Some(Finding {
        source: id.clone(),
        rule: Rule::ReflectionAuthor,
        mode: Mode::Enforce,
        headline: format!(
            "reflection ConfigMap {id} not changed: {WRITTEN_BY} is stamped by slo-guard from the writer's identity ({user}), and this request carries {}",
            stamped.map_or_else(|| "none".to_string(), |s| format!("{s:?}"))
        ),
        remedy: format!(
            "Leave {WRITTEN_BY} alone; if this persists, the slo-guard mutating webhook is not running"
        ),
        brief: format!("{WRITTEN_BY} is stamped by slo-guard only"),
    })
}

/// The checks of a policy or reflection ConfigMap that is in force after the change: its
/// label's value, and its schema. A change that deletes, parks or unlabels one has nothing
/// to check.
pub(super) fn check(change: &Change, policies: &PolicySet) -> Option<Finding> {
    let config = change.config_in_force()?;
    let id = PolicyRef {
        namespace: change.target.namespace.clone(),
        name: change.target.name.clone(),
    };
    let document = ConfigMapDocument {
        namespace: id.namespace.clone(),
        name: id.name.clone(),
        labels: change.target.labels.clone(),
        data: config.data.clone(),
        origin: "admission".to_string(),
    };
    let (label, rule, what) = match config.kind {
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
    let (rule, what, error) = match config.kind {
        ConfigKind::Policy => (
            Rule::PolicySchema,
            "policy",
            crate::store::validate_policy_with_specs(
                &policies.guard_namespace,
                &policies.slo_specs,
                &id,
                &document,
            )
            .err()?,
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
    use crate::admission::{ChangeDetail, ConfigInForce, POLICY_LABEL};
    use crate::rules::testing::*;

    fn policy_configmap(yaml: &str) -> Change {
        let mut change = create_by(PERSON, 1);
        change.class = crate::admission::ChangeClass::Config;
        change.target.kind = TargetKind::ConfigMap(ConfigKind::Policy);
        change.target.labels = BTreeMap::from([(POLICY_LABEL.to_string(), "true".to_string())]);
        change.detail = ChangeDetail::Config(Some(ConfigInForce {
            kind: ConfigKind::Policy,
            data: BTreeMap::from([("policy.yaml".to_string(), yaml.to_string())]),
        }));
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

    #[test]
    fn a_policy_naming_a_missing_or_bad_spec_is_rejected_and_one_naming_a_good_spec_admitted() {
        let sourced = "match: {kinds: [Deployment]}\nslo:\n  source: {kind: ServiceLevelObjective, name: checkout-errors}\n";
        let change = policy_configmap(sourced);
        let decision = judge("match: {kinds: [Deployment]}", &change);
        let finding = only_finding(&decision, Rule::PolicySchema);
        assert!(
            finding.headline.starts_with("policy ConfigMap payments/checkout rejected: policy.yaml: field `slo.source`: Pyrra ServiceLevelObjective payments/checkout-errors not found"),
            "{}",
            finding.headline
        );

        let spec = |target: &str| {
            let text = format!(
                "apiVersion: pyrra.dev/v1alpha1\nkind: ServiceLevelObjective\nmetadata: {{name: checkout-errors, namespace: payments}}\nspec:\n  target: \"{target}\"\n  window: 4w\n  indicator:\n    ratio:\n      errors: {{metric: 'http_requests_total{{job=\"checkout\",code=~\"5..\"}}'}}\n      total: {{metric: 'http_requests_total{{job=\"checkout\"}}'}}\n"
            );
            let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
            crate::slo_spec::SloSpecDocument::recognize(&value, "payments", "cluster")
                .unwrap()
                .unwrap()
        };
        let judge_with_spec = |document| {
            let mut catalog = crate::slo_spec::SloSpecCatalog::default();
            catalog.insert(document);
            let mut policies = PolicySet::new(
                vec![policy_yaml("match: {kinds: [Deployment]}")],
                "slo-guard",
            );
            policies.slo_specs = std::sync::Arc::new(catalog);
            crate::rules::assess_and_decide(
                &change,
                &crate::rules::DecisionContext {
                    policies: &policies,
                    now: test_now(),
                    observations: &crate::slo::Observations::new(),
                    ledger: None,
                },
            )
        };
        assert!(judge_with_spec(spec("99.9")).findings.is_empty());
        let decision = judge_with_spec(spec("100"));
        let finding = only_finding(&decision, Rule::PolicySchema);
        assert!(
            finding.headline.contains("was rejected")
                && finding
                    .headline
                    .contains("spec.target 100 must be a percentage"),
            "{}",
            finding.headline
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
        removal.detail = ChangeDetail::Config(None);
        removal
            .target
            .labels
            .insert(POLICY_LABEL.to_string(), "false".to_string());
        let agent = judge(AGENTS_POLICY, &by(removal.clone(), AGENT));
        only_finding(&agent, Rule::PolicyChange);
        let person = judge(AGENTS_POLICY, &by(removal, PERSON));
        assert!(person.findings.is_empty(), "{:?}", person.findings);
    }

    const REFLECTION: &str = "target: {kind: Deployment, name: checkout}\nthresholds: {scaling.maxReplicas: 12}\nreason: INC-1\nsource: agent\nexpires: 2099-01-01T00:00:00Z\n";

    /// A reflection ConfigMap written by `username`, with slo-guard's stamp for them, over
    /// a stored version written by `stored_author` (`None`: a create).
    fn reflection_by(username: &str, stored_author: Option<&str>) -> Change {
        let mut change = by(policy_configmap(""), username);
        change.target.kind = TargetKind::ConfigMap(ConfigKind::Reflection);
        let labels = BTreeMap::from([(REFLECTION_LABEL.to_string(), "true".to_string())]);
        change.target.labels = labels.clone();
        change.detail = ChangeDetail::Config(Some(ConfigInForce {
            kind: ConfigKind::Reflection,
            data: BTreeMap::from([("checkout.yaml".to_string(), REFLECTION.to_string())]),
        }));
        change.annotations.after = Some(BTreeMap::from([(
            WRITTEN_BY.to_string(),
            username.to_string(),
        )]));
        if let Some(author) = stored_author {
            change.target.before = Some(crate::admission::LabelState {
                labels,
                pod_labels: BTreeMap::new(),
            });
            change.annotations.before =
                BTreeMap::from([(WRITTEN_BY.to_string(), author.to_string())]);
        }
        change
    }

    #[test]
    fn agents_may_write_and_rewrite_their_own_reflections() {
        for stored in [None, Some(AGENT)] {
            let decision = judge(AGENTS_POLICY, &reflection_by(AGENT, stored));
            assert!(
                decision.findings.is_empty(),
                "{stored:?}: {:?}",
                decision.findings
            );
        }
    }

    #[test]
    fn a_reflection_keeps_its_author_against_agents() {
        let decision = judge(AGENTS_POLICY, &reflection_by(AGENT, Some(PERSON)));
        let finding = only_finding(&decision, Rule::ReflectionAuthor);
        assert_eq!(
            finding.message(),
            format!(
                "[payments/checkout:reflection-author] reflection ConfigMap payments/checkout not changed: it was written by {PERSON}, and agents may change or delete only reflections they wrote; {AGENT} is an agent under policy payments/checkout. Write your own reflection ConfigMap, or ask {PERSON} or a platform engineer to change this one."
            )
        );
        // Deleting it: nothing is in force after the change, and the author still holds.
        let mut delete = reflection_by(AGENT, Some(PERSON));
        delete.detail = ChangeDetail::Config(None);
        delete.annotations.after = None;
        only_finding(&judge(AGENTS_POLICY, &delete), Rule::ReflectionAuthor);
        // A reflection without a recorded author is not the agent's either.
        let mut unstamped = reflection_by(AGENT, Some(PERSON));
        unstamped.annotations.before.clear();
        assert!(
            only_finding(&judge(AGENTS_POLICY, &unstamped), Rule::ReflectionAuthor)
                .headline
                .contains("written by someone slo-guard did not record")
        );
        // A person may change anyone's reflection.
        let person = judge(AGENTS_POLICY, &reflection_by(PERSON, Some(AGENT)));
        assert!(person.findings.is_empty(), "{:?}", person.findings);
    }

    #[test]
    fn the_author_stamp_cannot_be_written_for_someone_else() {
        let mut forged = reflection_by(AGENT, None);
        forged.annotations.after = Some(BTreeMap::from([(
            WRITTEN_BY.to_string(),
            PERSON.to_string(),
        )]));
        let decision = judge(AGENTS_POLICY, &forged);
        assert!(
            only_finding(&decision, Rule::ReflectionAuthor)
                .headline
                .contains("is stamped by slo-guard from the writer's identity")
        );
    }

    #[test]
    fn turning_a_policy_into_a_reflection_is_removing_a_policy() {
        // What classify makes of it: a policy before, a reflection after.
        let mut change = reflection_by(AGENT, None);
        change.target.kind = TargetKind::ConfigMap(ConfigKind::Policy);
        let decision = judge(AGENTS_POLICY, &change);
        assert!(
            decision
                .findings
                .iter()
                .any(|f| f.rule == Rule::PolicyChange),
            "{:?}",
            decision.findings
        );
        assert!(!decision.allowed());
    }
}
