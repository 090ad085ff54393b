//! Changes that hand work to a controller, which then does it as itself. slo-guard does
//! not hold controllers to agents' and people's limits (the HPA must answer a spike), so
//! a change that makes a controller act must be judged for what the controller will do:
//! - `deprecated.deployment.rollback.to`: the Deployment controller (apps/v1, still in
//!   Kubernetes 1.34) puts that revision's pod template back, a rollout that no rollout
//!   rule would see. Nothing writes it any more (`kubectl rollout undo` writes the
//!   template), so slo-guard refuses it and names the command that is judged.
//! - a new `ownerReferences` entry: the garbage collector deletes the workload once that
//!   owner is gone, so an agent that may not delete the workload may not give it an
//!   owner it can delete.

use crate::admission::{ActorKind, TargetKind, WorkloadKind};
use crate::policy::ForbiddenAction;

use super::{Finding, Rule, RuleInput};

/// The annotation the Deployment controller reads as "roll back to this revision".
pub const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";

/// A Deployment's rollback annotation set or changed by anyone but a controller (which
/// clears it once it rolled back).
pub(super) fn check_rollback_annotation(input: &RuleInput<'_>) -> Option<Finding> {
    let change = input.change;
    if input.actor == ActorKind::Controller
        || change.target.kind != TargetKind::Workload(WorkloadKind::Deployment)
    {
        return None;
    }
    let revision = change.annotations.after.as_ref()?.get(ROLLBACK_TO)?;
    if revision.trim().is_empty() || change.annotations.before.get(ROLLBACK_TO) == Some(revision) {
        return None;
    }
    let target = &change.target;
    Some(input.finding(
        Rule::RollbackAnnotation,
        format!(
            "the annotation {ROLLBACK_TO}={revision} would make the Deployment controller put revision {revision}'s pod template back as itself, past every rollout rule"
        ),
        format!(
            "Roll back by writing the pod template, which is judged as a rollout: kubectl rollout undo deployment/{} -n {} --to-revision={revision}",
            target.name, target.namespace
        ),
        format!("{ROLLBACK_TO} set"),
    ))
}

/// An agent giving a workload, or the HPA that scales it, an owner, where its policy
/// forbids agents to delete them.
pub(super) fn check_new_owner(input: &RuleInput<'_>) -> Option<Finding> {
    let change = input.change;
    if input.actor != ActorKind::Agent
        || change.new_owners.is_empty()
        || !matches!(
            change.target.kind,
            TargetKind::Workload(_) | TargetKind::HorizontalPodAutoscaler { .. }
        )
    {
        return None;
    }
    let delete = ForbiddenAction::Class(crate::admission::ChangeClass::Delete);
    if !input.policy.spec.agents.forbidden.contains(&delete) {
        return None;
    }
    let owners = change
        .new_owners
        .iter()
        .map(|owner| format!("{} {}", owner.kind, owner.name))
        .collect::<Vec<_>>()
        .join(", ");
    let kind = change.target.kind.as_str();
    Some(input.finding(
        Rule::ForbiddenAction,
        format!(
            "agents may not give a {kind} an owner ({owners} in metadata.ownerReferences) under this policy: the garbage collector deletes it with its owner, and agents.forbidden lists delete"
        ),
        "Only a person can give a governed workload an owner; escalate it to an SRE".to_string(),
        format!("new owner {owners}: delete is forbidden for agents"),
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::admission::{AnnotationState, ChangeClass, OwnerReference};
    use crate::rules::testing::*;

    const POLICY: &str = "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"], forbidden: [delete]}";

    fn annotated(
        username: &str,
        before: Option<&str>,
        after: Option<&str>,
    ) -> crate::admission::Change {
        let map = |value: Option<&str>| -> BTreeMap<String, String> {
            value
                .map(|v| BTreeMap::from([(ROLLBACK_TO.to_string(), v.to_string())]))
                .unwrap_or_default()
        };
        let mut change = change(username, ChangeClass::Metadata);
        change.annotations = AnnotationState {
            after: Some(map(after)),
            before: map(before),
            map_present: true,
        };
        change
    }

    fn owned(username: &str, owners: Vec<OwnerReference>) -> crate::admission::Change {
        let mut change = change(username, ChangeClass::Metadata);
        change.new_owners = owners;
        change
    }

    fn configmap_owner() -> OwnerReference {
        OwnerReference {
            kind: "ConfigMap".to_string(),
            name: "handle".to_string(),
            uid: "1a243de2".to_string(),
        }
    }

    fn rules_found(change: &crate::admission::Change, policy: &str) -> Vec<String> {
        judge(policy, change)
            .findings
            .iter()
            .map(|f| format!("{}: {}", f.rule, f.headline))
            .collect()
    }

    #[test]
    fn setting_the_rollback_annotation_is_refused_for_agents_and_people_alike() {
        for who in [AGENT, "alice"] {
            let found = rules_found(&annotated(who, None, Some("1")), POLICY);
            assert!(
                found.iter().any(|f| f.starts_with("rollback-annotation: ")
                    && f.contains("deprecated.deployment.rollback.to=1 would make the Deployment controller put revision 1's pod template back")),
                "{who}: {found:?}"
            );
        }
        // Changing it is setting it; clearing it, or leaving it as it was, is not.
        let changed = rules_found(&annotated(AGENT, Some("1"), Some("2")), POLICY);
        assert!(
            changed
                .iter()
                .any(|f| f.starts_with("rollback-annotation: ") && f.contains("=2 would")),
            "{changed:?}"
        );
        assert!(rules_found(&annotated(AGENT, Some("1"), None), POLICY).is_empty());
        assert!(rules_found(&annotated(AGENT, Some("1"), Some("1")), POLICY).is_empty());
        assert!(rules_found(&annotated(AGENT, None, Some(" ")), POLICY).is_empty());
        // The controller clears it as it rolls back.
        let controller = "system:serviceaccount:kube-system:deployment-controller";
        assert!(rules_found(&annotated(controller, None, Some("1")), POLICY).is_empty());
    }

    #[test]
    fn an_agent_may_not_give_a_workload_an_owner_when_it_may_not_delete_it() {
        let found = rules_found(&owned(AGENT, vec![configmap_owner()]), POLICY);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("forbidden-action: ")
                && found[0].contains("agents may not give a Deployment an owner (ConfigMap handle in metadata.ownerReferences)"),
            "{found:?}"
        );
        // A person may; so may an agent whose policy lets it delete.
        assert!(rules_found(&owned("alice", vec![configmap_owner()]), POLICY).is_empty());
        let deletes_allowed = "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"], forbidden: []}";
        assert!(rules_found(&owned(AGENT, vec![configmap_owner()]), deletes_allowed).is_empty());
        assert!(rules_found(&owned(AGENT, Vec::new()), POLICY).is_empty());
        // An HPA given an owner is deleted with it too: autoscaling taken away.
        let mut hpa = hpa_by(AGENT, 2, 10, Some(10));
        hpa.new_owners = vec![configmap_owner()];
        let found = rules_found(&hpa, POLICY);
        assert!(
            found.iter().any(|f| f.starts_with("forbidden-action: ")
                && f.contains("agents may not give a HorizontalPodAutoscaler an owner")),
            "{found:?}"
        );
    }
}
