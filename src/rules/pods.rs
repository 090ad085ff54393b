//! Pods are their controllers' to make. An agent that makes pods itself (a Pod, or a
//! ReplicaSet, DaemonSet, Job, CronJob or ReplicationController) with a governed
//! workload's pod labels or under its name gets pods that serve the workload's Service
//! outside every rule its policy sets; so in a namespace a policy governs, agents may not
//! create or change such objects, nor scale any ReplicaSet or ReplicationController. The
//! controllers are never agents, and the webhook's match conditions keep their requests
//! from reaching slo-guard at all.

use std::collections::BTreeMap;

use crate::admission::{ActorKind, Change, ChangeClass, PodMakerKind, TargetKind, WorkloadKind};
use crate::policy::Policy;
use crate::store::{MatchBasis, PolicySet};

use super::{Finding, Rule, classify_actor};

pub(super) fn check(change: &Change, policies: &PolicySet) -> (ActorKind, Vec<Finding>) {
    let mut actor = classify_actor(&change.requester, None);
    let mut findings = Vec::new();
    let kind = match change.target.kind {
        TargetKind::PodMaker(kind) => kind,
        TargetKind::Service => return check_service(change, policies),
        _ => return (actor, findings),
    };
    for policy in &policies.policies {
        if !policies.governs_namespace(policy, &change.target.namespace) {
            continue;
        }
        let policy_actor = classify_actor(&change.requester, Some(&policy.spec));
        if policy_actor != ActorKind::Agent {
            continue;
        }
        actor = ActorKind::Agent;
        if change.class == ChangeClass::Delete {
            // Deleting a pod restarts it; its controller makes another.
            continue;
        }
        let Some(reason) = reason(change, kind, policy, policies) else {
            continue;
        };
        let what = format!("{} {}", kind.as_str(), change.target.describe_name());
        findings.push(Finding {
            source: policy.id.to_string(),
            rule: Rule::PodRoute,
            mode: policy.spec.action,
            headline: format!("{} of {what} blocked: {reason}", change.class),
            remedy: format!(
                "Change the workload policy {} governs instead (kubectl scale, set image, or apply its Deployment or StatefulSet); its controller makes the pods",
                policy.id
            ),
            brief: format!(
                "agents may not make pods outside policy {}: {reason}",
                policy.id
            ),
        });
    }
    (actor, findings)
}

/// A Deployment or StatefulSet of a kind a policy does not list, whose pods carry the
/// labels the policy's selector picks, serves the governed workloads' traffic outside
/// the policy as surely as a bare Pod does: for agents it is a pod route too.
pub(super) fn check_unlisted_kind(change: &Change, policies: &PolicySet) -> Vec<Finding> {
    let Some(kind) = change.target.workload_kind() else {
        return Vec::new();
    };
    if change.class == ChangeClass::Delete {
        return Vec::new();
    }
    policies
        .policies
        .iter()
        .filter(|policy| {
            !policy.spec.matcher.kinds.contains(&kind)
                && policy.spec.matcher.selector.is_some()
                && classify_actor(&change.requester, Some(&policy.spec)) == ActorKind::Agent
        })
        .filter_map(|policy| {
            // Unknown labels (a scale whose parent is not cached) say nothing about pods.
            let basis = policies
                .governs_by_labels_only(policy, &change.target)
                .filter(|basis| *basis != MatchBasis::Assumed)?;
            let (when, labels) = match basis {
                MatchBasis::Before => (
                    " before the change",
                    change.target.before.as_ref().map(|b| &b.pod_labels),
                ),
                _ => ("", Some(&change.target.pod_labels)),
            };
            Some(Finding {
                source: policy.id.to_string(),
                rule: Rule::PodRoute,
                mode: policy.spec.action,
                headline: format!(
                    "{} of {} blocked: its pods carry the pod labels of workloads policy {} governs ({}){when}, and the policy does not govern {}s",
                    change.class,
                    change.describe(),
                    policy.id,
                    selected_labels(policy, labels),
                    kind.as_str()
                ),
                remedy: format!(
                    "Give its pods labels of their own, or ask a platform engineer to add {} to match.kinds of policy {}",
                    kind.as_str(),
                    policy.id
                ),
                brief: format!(
                    "agents may not make pods outside policy {} under another kind",
                    policy.id
                ),
            })
        })
        .collect()
}

/// A Service decides which pods get a workload's traffic. An agent that changes the
/// selector of a Service serving a governed workload's pods (or deletes it) moves that
/// traffic to pods no policy holds, or takes it away; a selector change toward them sends
/// them traffic they were not sized for. Creating a Service, or changing its metadata,
/// moves nothing.
fn check_service(change: &Change, policies: &PolicySet) -> (ActorKind, Vec<Finding>) {
    let mut actor = classify_actor(&change.requester, None);
    let mut findings: Vec<Finding> = Vec::new();
    for served in change.served_workloads() {
        for (policy, _) in policies.matching(served) {
            if classify_actor(&change.requester, Some(&policy.spec)) != ActorKind::Agent {
                continue;
            }
            actor = ActorKind::Agent;
            if !matches!(change.class, ChangeClass::Rollout | ChangeClass::Delete)
                || findings.iter().any(|f| f.source == policy.id.to_string())
            {
                continue;
            }
            let show = |labels: &BTreeMap<String, String>| {
                if labels.is_empty() {
                    "none".to_string()
                } else {
                    selector_labels(Some(labels))
                }
            };
            let what = match change.class {
                ChangeClass::Delete => "deleting it takes that traffic away".to_string(),
                _ => format!(
                    "its selector changes from {} to {}, which moves that traffic",
                    show(
                        &change
                            .target
                            .before
                            .as_ref()
                            .map(|b| b.pod_labels.clone())
                            .unwrap_or_default()
                    ),
                    show(&change.target.pod_labels)
                ),
            };
            let reason = format!(
                "it sends traffic to the pods of {}, which policy {} governs, and {what}",
                served.describe(),
                policy.id
            );
            findings.push(Finding {
                source: policy.id.to_string(),
                rule: Rule::ServiceRoute,
                mode: policy.spec.action,
                headline: format!(
                    "{} of Service {} blocked: {reason}",
                    change.class,
                    change.target.describe_name()
                ),
                remedy: "Ask a person to change the Service; agents change the workloads policies govern, not where their traffic goes".to_string(),
                brief: format!("agents may not redirect the traffic of workloads policy {} governs", policy.id),
            });
        }
    }
    (actor, findings)
}

fn reason(
    change: &Change,
    kind: PodMakerKind,
    policy: &Policy,
    policies: &PolicySet,
) -> Option<String> {
    let target = &change.target;
    if change.is_scale_subresource() {
        return Some(format!(
            "agents may not scale {}s in namespace {}, which policy {} governs",
            kind.as_str(),
            target.namespace,
            policy.id
        ));
    }
    let matched = match policies.governs_by_labels_only(policy, target) {
        Some(MatchBasis::Before) => Some(format!(
            "it carried the pod labels of workloads policy {} governs ({}) before the change",
            policy.id,
            selected_labels(policy, target.before.as_ref().map(|b| &b.pod_labels))
        )),
        Some(_) if policy.spec.matcher.selector.is_none() => Some(format!(
            "policy {} governs every workload in namespace {}, so the {} would serve them outside it",
            policy.id,
            target.namespace,
            kind.as_str()
        )),
        Some(_) => Some(format!(
            "it carries the pod labels of workloads policy {} governs ({})",
            policy.id,
            selected_labels(policy, Some(&target.pod_labels))
        )),
        None => None,
    };
    matched.or_else(|| {
        let owner = target
            .owners
            .iter()
            .find(|owner| owned_workload(policy, &owner.kind, &owner.name))?;
        Some(format!(
            "it names {} {} as its owner, a workload policy {} governs",
            owner.kind, owner.name, policy.id
        ))
    })
}

/// The labels among `labels` that the policy's selector names: what made it match.
fn selected_labels(policy: &Policy, labels: Option<&BTreeMap<String, String>>) -> String {
    let Some(selector) = &policy.spec.matcher.selector else {
        return selector_labels(labels);
    };
    let named = |key: &str| {
        selector.match_labels.contains_key(key)
            || selector.match_expressions.iter().any(|r| r.key == key)
    };
    let picked: BTreeMap<String, String> = labels
        .into_iter()
        .flatten()
        .filter(|(key, _)| named(key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    selector_labels(Some(&picked))
}

fn selector_labels(labels: Option<&BTreeMap<String, String>>) -> String {
    labels
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Whether an owner reference names a workload `policy` governs by name: the workload
/// itself, or a ReplicaSet the Deployment controller made for it (`<deployment>-<hash>`).
fn owned_workload(policy: &Policy, kind: &str, name: &str) -> bool {
    let matcher = &policy.spec.matcher;
    let named =
        |workload: &str| matcher.names.is_empty() || matcher.names.iter().any(|n| n == workload);
    match kind {
        "Deployment" => matcher.kinds.contains(&WorkloadKind::Deployment) && named(name),
        "StatefulSet" => matcher.kinds.contains(&WorkloadKind::StatefulSet) && named(name),
        "ReplicaSet" => {
            matcher.kinds.contains(&WorkloadKind::Deployment)
                && name
                    .rsplit_once('-')
                    .is_some_and(|(deployment, _)| named(deployment))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::admission::{ChangeDetail, LabelState, OwnerReference, Target};
    use crate::rules::testing::*;

    const POLICY: &str = "match: {kinds: [Deployment], selector: {matchLabels: {app: checkout}}}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"]}";

    fn pod_by(username: &str, labels: &[(&str, &str)]) -> Change {
        let mut change = create_by(username, 1);
        change.detail = ChangeDetail::Object { replicas: None };
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        change.target = Target::new(
            TargetKind::PodMaker(PodMakerKind::Pod),
            "payments",
            "intruder",
            labels.clone(),
        );
        change.target.pod_labels = labels;
        change
    }

    #[test]
    fn an_agent_pod_with_a_governed_workloads_labels_is_denied() {
        let decision = judge(POLICY, &pod_by(AGENT, &[("app", "checkout")]));
        let finding = only_finding(&decision, Rule::PodRoute);
        assert_eq!(
            finding.message(),
            "[payments/checkout:pod-route] create of Pod payments/intruder blocked: it carries the pod labels of workloads policy payments/checkout governs (app=checkout). Change the workload policy payments/checkout governs instead (kubectl scale, set image, or apply its Deployment or StatefulSet); its controller makes the pods."
        );
        assert!(!decision.allowed());
    }

    #[test]
    fn people_controllers_and_unrelated_pods_pass() {
        assert!(judge(POLICY, &pod_by(PERSON, &[("app", "checkout")])).allowed());
        let controller = "system:serviceaccount:kube-system:replicaset-controller";
        assert!(judge(POLICY, &pod_by(controller, &[("app", "checkout")])).allowed());
        assert!(judge(POLICY, &pod_by(AGENT, &[("app", "debug")])).allowed());
    }

    #[test]
    fn relabelling_a_pod_into_or_out_of_a_workload_is_denied() {
        let mut into = pod_by(AGENT, &[("app", "checkout")]);
        into.class = ChangeClass::Metadata;
        into.target.before = Some(LabelState {
            labels: BTreeMap::from([("app".into(), "debug".into())]),
            pod_labels: BTreeMap::from([("app".into(), "debug".into())]),
        });
        assert_eq!(
            only_finding(&judge(POLICY, &into), Rule::PodRoute).rule,
            Rule::PodRoute
        );
        let mut out_of = pod_by(AGENT, &[("app", "debug")]);
        out_of.class = ChangeClass::Metadata;
        out_of.target.before = Some(LabelState {
            labels: BTreeMap::from([("app".into(), "checkout".into())]),
            pod_labels: BTreeMap::from([("app".into(), "checkout".into())]),
        });
        let decision = judge(POLICY, &out_of);
        assert!(
            only_finding(&decision, Rule::PodRoute)
                .headline
                .contains("before the change"),
            "{:?}",
            decision.findings
        );
    }

    fn service_by(username: &str, class: ChangeClass, before: &str, after: &str) -> Change {
        let mut change = create_by(username, 1);
        change.class = class;
        change.detail = ChangeDetail::Object { replicas: None };
        change.target = Target::new(TargetKind::Service, "payments", "checkout", BTreeMap::new());
        change.target.pod_labels = BTreeMap::from([("app".into(), after.into())]);
        change.target.before = Some(LabelState {
            labels: BTreeMap::new(),
            pod_labels: BTreeMap::from([("app".into(), before.into())]),
        });
        let mut served = Target::new(
            TargetKind::Workload(WorkloadKind::Deployment),
            "payments",
            "checkout",
            BTreeMap::from([("app".into(), "checkout".into())]),
        );
        served.pod_labels = BTreeMap::from([("app".into(), "checkout".into())]);
        change.detail = ChangeDetail::Service {
            served_workloads: vec![served],
        };
        change
    }

    #[test]
    fn an_agent_may_not_redirect_or_remove_a_governed_workloads_service() {
        let moved = judge(
            POLICY,
            &service_by(AGENT, ChangeClass::Rollout, "checkout", "shadow"),
        );
        assert_eq!(
            only_finding(&moved, Rule::ServiceRoute).message(),
            "[payments/checkout:service-route] rollout of Service payments/checkout blocked: it sends traffic to the pods of Deployment payments/checkout, which policy payments/checkout governs, and its selector changes from app=checkout to app=shadow, which moves that traffic. Ask a person to change the Service; agents change the workloads policies govern, not where their traffic goes."
        );
        let deleted = judge(
            POLICY,
            &service_by(AGENT, ChangeClass::Delete, "checkout", "checkout"),
        );
        assert!(
            only_finding(&deleted, Rule::ServiceRoute)
                .headline
                .contains("deleting it takes that traffic away")
        );
        // People may; a metadata change or a new Service moves nothing.
        assert!(
            judge(
                POLICY,
                &service_by(PERSON, ChangeClass::Rollout, "checkout", "shadow")
            )
            .allowed()
        );
        assert!(
            judge(
                POLICY,
                &service_by(AGENT, ChangeClass::Metadata, "checkout", "checkout")
            )
            .allowed()
        );
        assert!(
            judge(
                POLICY,
                &service_by(AGENT, ChangeClass::Create, "checkout", "checkout")
            )
            .allowed()
        );
    }

    #[test]
    fn a_workload_of_a_kind_the_policy_does_not_list_with_its_pod_labels_is_a_pod_route() {
        let mut change = create_by(AGENT, 50);
        change.target = Target::new(
            TargetKind::Workload(WorkloadKind::StatefulSet),
            "payments",
            "checkout-sts",
            BTreeMap::from([("app".into(), "sts".into())]),
        );
        change.target.pod_labels = BTreeMap::from([("app".into(), "checkout".into())]);
        let decision = judge(POLICY, &change);
        assert_eq!(
            only_finding(&decision, Rule::PodRoute).headline,
            "create of StatefulSet payments/checkout-sts blocked: its pods carry the pod labels of workloads policy payments/checkout governs (app=checkout), and the policy does not govern StatefulSets"
        );
        // Its own pod labels, or a person: nothing to say.
        change.target.pod_labels = BTreeMap::from([("app".into(), "sts".into())]);
        assert!(judge(POLICY, &change).allowed());
        change.target.pod_labels = BTreeMap::from([("app".into(), "checkout".into())]);
        change.requester.username = PERSON.into();
        assert!(judge(POLICY, &change).allowed());
    }

    #[test]
    fn a_claimed_owner_under_a_named_policy_and_any_replicaset_scale_are_denied() {
        let named = "match: {kinds: [Deployment], names: [checkout]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"]}";
        let mut owned = pod_by(AGENT, &[("pod-template-hash", "5d8f")]);
        owned.target.owners = vec![OwnerReference {
            kind: "ReplicaSet".into(),
            name: "checkout-5d8f".into(),
            uid: String::new(),
        }];
        assert!(
            only_finding(&judge(named, &owned), Rule::PodRoute)
                .headline
                .contains("it names ReplicaSet checkout-5d8f as its owner")
        );
        owned.target.owners[0].name = "search-5d8f".into();
        assert!(judge(named, &owned).allowed());

        let mut scale = scale_by(AGENT, Some(3), 30);
        scale.target = Target::new(
            TargetKind::PodMaker(PodMakerKind::ReplicaSet),
            "payments",
            "anything-7c9",
            BTreeMap::new(),
        );
        scale.target.labels_known = false;
        assert!(
            only_finding(&judge(POLICY, &scale), Rule::PodRoute)
                .headline
                .starts_with("scale of ReplicaSet payments/anything-7c9 blocked: agents may not scale ReplicaSets")
        );
    }
}
