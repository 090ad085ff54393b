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
//! - a delete of an object that owns governed workloads: the garbage collector deletes
//!   them after it, so an agent that may not delete them may not delete their owner,
//!   unless it orphans them (`propagationPolicy: Orphan`), which leaves them in place.
//! - an owner given to such an object: deleting that new owner has the garbage collector
//!   delete the object, then the workloads, so an agent may not give one either.

use crate::admission::{ActorKind, Change, ChangeClass, TargetKind, WorkloadKind};
use crate::policy::{ForbiddenAction, Policy};
use crate::store::PolicySet;

use super::{Finding, Rule, RuleInput, classify_actor};

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
    if !forbids_agents_to_delete(input.policy) {
        return None;
    }
    let owners = describe_owners(change);
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

/// The owners a change gives its object, as denials name them: "ConfigMap root, ...".
fn describe_owners(change: &Change) -> String {
    change
        .new_owners
        .iter()
        .map(|owner| format!("{} {}", owner.kind, owner.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `policy` forbids agents to delete what it governs.
fn forbids_agents_to_delete(policy: &Policy) -> bool {
    policy
        .spec
        .agents
        .forbidden
        .contains(&ForbiddenAction::Class(ChangeClass::Delete))
}

/// A delete of an object that owns governed workloads ([`Change::dependents`]), which
/// the garbage collector deletes with it, or an update giving such an object an owner
/// ([`Change::new_owners`]), whose deletion would delete them: for each policy governing
/// one of them whose agents may not delete, a finding naming them, when the requester is
/// one of its agents. Also whether the requester is an agent of such a policy at all,
/// which the decision reports as its actor. Judged whatever the object is (a ConfigMap,
/// a custom resource, or a workload itself).
pub(super) fn check_owner_change(change: &Change, policies: &PolicySet) -> (bool, Vec<Finding>) {
    // Every change comes through here; only a delete of an owner, or an owner given to
    // one, has dependents.
    if change.dependents.is_empty() {
        return (false, Vec::new());
    }
    let mut agent = false;
    // Per policy, in the order first met: the dependents it governs.
    let mut governed: Vec<(&Policy, Vec<String>)> = Vec::new();
    for dependent in &change.dependents {
        for (policy, _) in policies.matching(dependent) {
            if classify_actor(&change.requester, Some(&policy.spec)) != ActorKind::Agent {
                continue;
            }
            agent = true;
            if !forbids_agents_to_delete(policy) {
                continue;
            }
            let described = dependent.describe();
            match governed.iter_mut().find(|(known, _)| known.id == policy.id) {
                Some((_, names)) if !names.contains(&described) => names.push(described),
                Some(_) => {}
                None => governed.push((policy, vec![described])),
            }
        }
    }
    let object = change.describe();
    // A delete gains no owner; a change with dependents that is not a delete does.
    let new_owners = (!change.new_owners.is_empty()).then(|| describe_owners(change));
    let findings = governed
        .into_iter()
        .map(|(policy, dependents)| {
            let names = dependents.join(", ");
            let them = if dependents.len() == 1 { "it" } else { "them" };
            let (headline, remedy, brief) = match &new_owners {
                None => (
                    format!(
                        "delete of {object} blocked: it owns {names}, which policy {} governs, and the garbage collector deletes {them} with its owner; agents.forbidden lists delete",
                        policy.id
                    ),
                    format!(
                        "Ask a person to delete it, or delete it with --cascade=orphan (propagationPolicy: Orphan), which leaves {names} in place"
                    ),
                    format!("owner of {names}: delete is forbidden for agents"),
                ),
                Some(owners) => (
                    format!(
                        "giving {object} an owner ({owners} in metadata.ownerReferences) blocked: it owns {names}, which policy {} governs, and once that owner is deleted the garbage collector deletes {object}, then {names}; agents.forbidden lists delete",
                        policy.id
                    ),
                    "Only a person can give an owner to an object that owns a governed workload; escalate it to an SRE".to_string(),
                    format!("new owner {owners} of the owner of {names}: delete is forbidden for agents"),
                ),
            };
            Finding {
                source: policy.id.to_string(),
                rule: Rule::ForbiddenAction,
                mode: policy.spec.action,
                headline,
                remedy,
                brief,
            }
        })
        .collect();
    (agent, findings)
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

    /// A delete of ConfigMap payments/handle, which owns `dependents` (Deployments in
    /// payments with the given `app` label).
    fn owner_deleted(username: &str, dependents: &[(&str, &str)]) -> crate::admission::Change {
        let mut change = change(username, ChangeClass::Delete);
        change.target =
            crate::admission::Target::new(TargetKind::Owner, "payments", "handle", BTreeMap::new());
        change.detail = crate::admission::ChangeDetail::Owner {
            kind: "ConfigMap".to_string(),
            api_version: "v1".to_string(),
        };
        change.object_name = "handle".to_string();
        change.annotations.after = None;
        change.dependents = dependents
            .iter()
            .map(|(name, app)| {
                crate::admission::Target::new(
                    TargetKind::Workload(WorkloadKind::Deployment),
                    "payments",
                    name,
                    BTreeMap::from([("app".to_string(), app.to_string())]),
                )
            })
            .collect();
        change
    }

    const SELECTED: &str = "match: {kinds: [Deployment], selector: {matchLabels: {app: checkout}}}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"], forbidden: [delete]}";

    #[test]
    fn an_agent_may_not_delete_the_owner_of_a_governed_workload() {
        let decision = judge(SELECTED, &owner_deleted(AGENT, &[("checkout", "checkout")]));
        assert_eq!(decision.actor, ActorKind::Agent);
        assert!(!decision.allowed());
        assert_eq!(
            crate::verdict::denial_message(&decision).as_deref(),
            Some(
                "[payments/checkout:forbidden-action] delete of ConfigMap payments/handle blocked: it owns Deployment payments/checkout, which policy payments/checkout governs, and the garbage collector deletes it with its owner; agents.forbidden lists delete. Ask a person to delete it, or delete it with --cascade=orphan (propagationPolicy: Orphan), which leaves Deployment payments/checkout in place."
            )
        );
        // Every governed dependent is named, once per policy; one it does not govern is not.
        let several = judge(
            SELECTED,
            &owner_deleted(
                AGENT,
                &[
                    ("checkout", "checkout"),
                    ("worker", "other"),
                    ("canary", "checkout"),
                ],
            ),
        );
        let finding = only_finding(&several, Rule::ForbiddenAction);
        assert!(
            finding.headline.contains(
                "it owns Deployment payments/checkout, Deployment payments/canary, which policy payments/checkout governs, and the garbage collector deletes them"
            ),
            "{}",
            finding.headline
        );
    }

    #[test]
    fn deleting_an_owner_is_left_to_people_and_to_what_policies_allow() {
        // A person may.
        let person = judge(
            SELECTED,
            &owner_deleted("alice", &[("checkout", "checkout")]),
        );
        assert!(person.findings.is_empty(), "{:?}", person.findings);
        assert_eq!(person.actor, ActorKind::Person);
        // An agent may where its policy lets agents delete.
        let deletes_allowed = "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"], forbidden: []}";
        let allowed = judge(
            deletes_allowed,
            &owner_deleted(AGENT, &[("checkout", "checkout")]),
        );
        assert!(allowed.findings.is_empty(), "{:?}", allowed.findings);
        assert_eq!(allowed.actor, ActorKind::Agent);
        // An object owning no governed workload (or deleted with its dependents
        // orphaned, which classify leaves without dependents) deletes nothing governed.
        for dependents in [&[][..], &[("worker", "other")][..]] {
            let decision = judge(SELECTED, &owner_deleted(AGENT, dependents));
            assert!(decision.findings.is_empty(), "{:?}", decision.findings);
        }
    }

    #[test]
    fn an_agent_may_not_give_the_owner_of_a_governed_workload_an_owner() {
        // The chain an agent could build: its own ConfigMap "root" made the owner of
        // "handle", which owns checkout; deleting root would then delete both.
        let given_owner = |username: &str| {
            let mut change = owner_deleted(username, &[("checkout", "checkout")]);
            change.class = ChangeClass::Metadata;
            change.new_owners = vec![OwnerReference {
                kind: "ConfigMap".to_string(),
                name: "root".to_string(),
                uid: "root-1".to_string(),
            }];
            change
        };
        let decision = judge(SELECTED, &given_owner(AGENT));
        assert_eq!(decision.actor, ActorKind::Agent);
        assert_eq!(
            crate::verdict::denial_message(&decision).as_deref(),
            Some(
                "[payments/checkout:forbidden-action] giving ConfigMap payments/handle an owner (ConfigMap root in metadata.ownerReferences) blocked: it owns Deployment payments/checkout, which policy payments/checkout governs, and once that owner is deleted the garbage collector deletes ConfigMap payments/handle, then Deployment payments/checkout; agents.forbidden lists delete. Only a person can give an owner to an object that owns a governed workload; escalate it to an SRE."
            )
        );
        let person = judge(SELECTED, &given_owner("alice"));
        assert!(person.findings.is_empty(), "{:?}", person.findings);
    }

    #[test]
    fn a_workload_deleted_with_its_dependents_is_judged_for_them_too() {
        // A Deployment no policy governs that owns a governed one: its own delete is not
        // judged, the garbage collector's of its dependent is.
        let mut change = change(AGENT, ChangeClass::Delete);
        change.target.name = "umbrella".to_string();
        change.target.labels = BTreeMap::from([("app".to_string(), "umbrella".to_string())]);
        change.object_name = "umbrella".to_string();
        change.dependents = owner_deleted(AGENT, &[("checkout", "checkout")]).dependents;
        let found = rules_found(&change, SELECTED);
        assert_eq!(
            found,
            vec![
                "forbidden-action: delete of Deployment payments/umbrella blocked: it owns Deployment payments/checkout, which policy payments/checkout governs, and the garbage collector deletes it with its owner; agents.forbidden lists delete"
                    .to_string()
            ]
        );
    }
}
