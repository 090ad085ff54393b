//! Approvals: only a person approves an agent's change, slo-guard stamps who and when,
//! and an approval names one change's content and admits it once.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Stamp, human, kubectl_resource, since, stored_annotations, written_keys};
use crate::admission::ActorKind;
use crate::annotations::{APPROVAL_KEYS, APPROVE, APPROVED_AT, APPROVED_BY};
use crate::policy::AgentAnnotation;
use crate::rules::{Finding, Rule, RuleInput};

/// How old an approval may be when the policy sets no `approval.maxAge`.
const DEFAULT_APPROVAL_AGE: Duration = Duration::from_secs(3600);

/// Only people approve. An agent (or a controller) that adds or changes an approval key
/// is denied, and so is a person who writes `approved-by`/`approved-at` by hand instead
/// of letting slo-guard stamp them: the stamp is checked here too, so approvals stay
/// unforgeable even when the mutating webhook is skipped.
pub(in crate::rules) fn check_approval_keys(
    input: &RuleInput<'_>,
    now: DateTime<Utc>,
) -> Option<Finding> {
    let (new, changed) = written_keys(input, APPROVAL_KEYS)?;
    let requester = &input.change.requester.username;
    if input.actor != ActorKind::Person {
        return Some(input.finding(
            Rule::SelfApproval,
            format!(
                "agents cannot approve their own changes: {requester} ({}) changed {}",
                input.actor.as_str(),
                changed.join(", ")
            ),
            format!(
                "Leave approval keys alone; a person approves with kubectl annotate {} {APPROVE}=<decision-id>",
                kubectl_resource(input)
            ),
            format!("agents cannot approve: {} changed {}", requester, changed.join(", ")),
        ));
    }
    let stamp = Stamp::read(new, &changed, [APPROVED_BY, APPROVED_AT], requester, now);
    let approve_without_stamp =
        changed.contains(&APPROVE) && new.contains_key(APPROVE) && stamp.by != Some(requester);
    if stamp.forged || approve_without_stamp {
        return Some(input.finding(
            Rule::SelfApproval,
            format!(
                "{APPROVED_BY} and {APPROVED_AT} are stamped by slo-guard from the approver's identity, and this request sets them otherwise ({})",
                changed.join(", ")
            ),
            format!(
                "Set only {APPROVE}=<decision-id>; if this persists, the slo-guard mutating webhook is not running"
            ),
            "approved-by/approved-at are stamped by slo-guard only".to_string(),
        ));
    }
    None
}

/// The command a person runs to approve this change, and no other, under `decision_id`.
pub(in crate::rules) fn approve_command(input: &RuleInput<'_>, decision_id: &str) -> String {
    format!(
        "kubectl annotate {} {APPROVE}={decision_id}@{} --overwrite",
        kubectl_resource(input),
        input.identity.digest()
    )
}

/// Whether a person's valid approval covers this agent change (its decision id, stamped
/// by a person, within `maxAge`). An approved agent change may pass the agent-only SLO
/// blocks (the agent budget floor, a fast burn); the floor for everyone still holds.
pub(in crate::rules) fn approved(input: &RuleInput<'_>, now: DateTime<Utc>) -> bool {
    let decision_id = input.agent_context.decision_id;
    decision_id.is_some() && approval_problem(input, now, decision_id).is_none()
}

/// The approval stored on the workload (`<decision-id>@<digest>`), if any.
pub(in crate::rules) fn stored_approval<'a>(input: &RuleInput<'a>) -> Option<&'a str> {
    stored_annotations(input)?.get(APPROVE).map(String::as_str)
}

/// Why the stored approval does not cover this change, or `None` when it does. An
/// approval names a decision and the digest of one change's content, and admits that
/// change once: the change ledger remembers the approvals that admitted a change.
pub(super) fn approval_problem(
    input: &RuleInput<'_>,
    now: DateTime<Utc>,
    decision_id: Option<&str>,
) -> Option<String> {
    let Some(decision_id) = decision_id else {
        return Some(format!(
            "the change carries no {}",
            AgentAnnotation::DecisionId.key()
        ));
    };
    let stored = stored_annotations(input);
    let Some(approval) = stored.and_then(|a| a.get(APPROVE)) else {
        return Some(format!("decision {decision_id} has no approval"));
    };
    let (approved, approved_digest) = match approval.rsplit_once('@') {
        Some((decision, digest)) => (decision, Some(digest)),
        None => (approval.as_str(), None),
    };
    if approved != decision_id {
        return Some(format!(
            "the approval is for decision {approved}, not {decision_id}"
        ));
    }
    let digest = input.identity.digest();
    match approved_digest {
        None => {
            return Some(format!(
                "the approval of {decision_id} names no change; an approval names the change it approves ({decision_id}@{digest})"
            ));
        }
        Some(approved_digest) if approved_digest != digest => {
            return Some(format!(
                "the approval of {decision_id} is for change {approved_digest}, not this change ({digest})"
            ));
        }
        Some(_) => {}
    }
    let stored = stored?;
    let Some(by) = stored.get(APPROVED_BY) else {
        return Some(format!(
            "the approval of {decision_id} has no {APPROVED_BY} stamp, so no person is known to have given it"
        ));
    };
    if *by == input.change.requester.username {
        return Some(format!("the approval was given by {by}, the agent itself"));
    }
    if !super::stamped_by_person(by, &input.policy.spec) {
        return Some(format!(
            "the approval was given by {by}, which is not a person; only people approve"
        ));
    }
    let Some(at) = stored
        .get(APPROVED_AT)
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
    else {
        return Some(format!(
            "the approval of {decision_id} has no valid {APPROVED_AT} stamp"
        ));
    };
    let at = at.with_timezone(&Utc);
    let max_age = input
        .policy
        .spec
        .approval
        .as_ref()
        .map_or(DEFAULT_APPROVAL_AGE, |a| a.max_age.duration());
    let age = since(now, at);
    if age > max_age {
        return Some(format!(
            "the approval of {decision_id} by {by} is {} old, older than the {} limit",
            human(age),
            human(max_age)
        ));
    }
    // Spent by another change; the change that spent it, retried, still passes.
    if let Some(spent) = input.ledger.and_then(|ledger| ledger.spent(approval))
        && !spent.mark.recognizes(input.identity.mark())
    {
        return Some(format!(
            "the approval {approval} was used up by the change admitted at {}; an approval admits one change",
            spent.at.format("%Y-%m-%dT%H:%M:%SZ")
        ));
    }
    None
}
