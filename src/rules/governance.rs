//! Agent governance: tiered autonomy, approvals no agent can forge, cooldowns, change
//! windows (see [`super::freeze`]), and GitOps ownership.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::scope::memory_changes;
use super::{Finding, Rule, RuleInput, classify_actor};
use crate::admission::{ActorKind, Change, ChangeClass, Requester, TargetKind};
use crate::annotations::{
    APPROVAL_KEYS, APPROVE, APPROVED_AT, APPROVED_BY, GITOPS_MARKERS, LAST_AGENT_CHANGE,
};
use crate::policy::{
    AgentAction, AgentAnnotation, GitOpsMode, Mode, PolicySpec, PromDuration, Tier, TierRule,
};

/// How far a stamped `approved-at` may be from the judging clock: slo-guard stamps it in
/// the same request, so anything further was written by hand.
const STAMP_SKEW: Duration = Duration::from_secs(120);

/// How old an approval may be when the policy sets no `approval.maxAge`.
const DEFAULT_APPROVAL_AGE: Duration = Duration::from_secs(3600);

fn human(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60),
    }
}

fn since(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    (now - then).to_std().unwrap_or_default()
}

pub(super) fn kubectl_resource(input: &RuleInput<'_>) -> String {
    let kind = input
        .change
        .target
        .workload_kind
        .map_or("deployment", |k| match k {
            crate::admission::WorkloadKind::Deployment => "deployment",
            crate::admission::WorkloadKind::StatefulSet => "statefulset",
        });
    format!(
        "{kind}/{} -n {}",
        input.change.target.name, input.change.target.namespace
    )
}

/// Changes that carry their own object annotations (a Scale or a delete carries none).
pub(super) fn carries_annotations(input: &RuleInput<'_>) -> bool {
    !input.change.scale_subresource
        && input.change.class != ChangeClass::Delete
        && input.change.annotations.is_some()
}

/// Only people approve. An agent (or a controller) that adds or changes an approval key
/// is denied, and so is a person who writes `approved-by`/`approved-at` by hand instead
/// of letting slo-guard stamp them: the stamp is checked here too, so approvals stay
/// unforgeable even when the mutating webhook is skipped.
pub(super) fn check_approval_keys(input: &RuleInput<'_>, now: DateTime<Utc>) -> Option<Finding> {
    if !carries_annotations(input) {
        return None;
    }
    let new = input.change.annotations.as_ref()?;
    let old = &input.change.old_annotations;
    let changed: Vec<&str> = APPROVAL_KEYS
        .into_iter()
        .filter(|key| new.get(*key) != old.get(*key))
        .collect();
    if changed.is_empty() {
        return None;
    }
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
    let stamped_by = new.get(APPROVED_BY);
    let stamped_at = new
        .get(APPROVED_AT)
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok());
    let forged_by = changed.contains(&APPROVED_BY) && stamped_by.is_some_and(|by| by != requester);
    let forged_at = changed.contains(&APPROVED_AT)
        && new.contains_key(APPROVED_AT)
        && stamped_at.is_none_or(|at| {
            let at = at.with_timezone(&Utc);
            since(now, at).max(since(at, now)) > STAMP_SKEW
        });
    let approve_without_stamp =
        changed.contains(&APPROVE) && new.contains_key(APPROVE) && stamped_by != Some(requester);
    if forged_by || forged_at || approve_without_stamp {
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

/// The annotations a workload carries as stored (an approval, the cooldown stamp): for an
/// update, the object as it was before the request, which only a person and slo-guard's
/// stamps could have written; for a scale, the parent workload in the cache (`None` when
/// it is not there).
pub(super) fn stored_annotations<'a>(
    input: &RuleInput<'a>,
) -> Option<&'a BTreeMap<String, String>> {
    if input.change.scale_subresource {
        input.change.annotations.as_ref()
    } else {
        // Empty for a create: nothing is stored yet.
        Some(&input.change.old_annotations)
    }
}

fn rule_matches(
    rule: &TierRule,
    input: &RuleInput<'_>,
    action: Option<AgentAction>,
    budget_left: Option<f64>,
) -> bool {
    let change = input.change;
    if !rule.classes.is_empty() && !rule.classes.contains(&change.class) {
        return false;
    }
    if !rule.actions.is_empty() && !action.is_some_and(|a| rule.actions.contains(&a)) {
        return false;
    }
    if let Some(step) = rule.min_step {
        let Some(replicas) = change.replicas else {
            return false;
        };
        let Some(old) = replicas.old else {
            return false;
        };
        let moved = replicas.new.abs_diff(old);
        if moved == 0 || moved < step.allowed_from(old) {
            return false;
        }
    }
    if let Some(min_factor) = rule.min_memory_factor {
        let (Some(old), Some(new), Some(paths)) =
            (&change.old_object, &change.object, input.spec_diff.paths())
        else {
            return false;
        };
        let grows = memory_changes(old, new, paths)
            .iter()
            .filter_map(|m| m.factor())
            .any(|factor| factor >= min_factor);
        if !grows {
            return false;
        }
    }
    // An unknown budget counts as below the floor: without data, a person decides.
    if let Some(floor) = rule.budget_below
        && budget_left.is_some_and(|budget| budget >= floor)
    {
        return false;
    }
    true
}

/// Whether the tier of an agent's `change` can turn on the error budget: the policy has an
/// SLO and an `autonomy` rule with `budgetBelow` for the change's class. The guard then
/// asks for the budget even when no SLO gate covers the change (a scale-up, say), so that
/// the rule judges the budget rather than its absence.
pub(super) fn budget_decides_tier(change: &Change, spec: &PolicySpec, actor: ActorKind) -> bool {
    actor == ActorKind::Agent
        && spec.slo.is_some()
        && spec.autonomy.as_ref().is_some_and(|autonomy| {
            autonomy.rules.iter().any(|rule| {
                rule.budget_below.is_some()
                    && (rule.classes.is_empty() || rule.classes.contains(&change.class))
            })
        })
}

/// The tier of an agent change: the first matching autonomy rule, else `approval` for the
/// classes `approval.requiredFor` lists, else the autonomy default.
pub(super) fn tier_of(input: &RuleInput<'_>, budget_left: Option<f64>) -> (Tier, String) {
    let spec = &input.policy.spec;
    let action = input.agent_context.action;
    if let Some(autonomy) = &spec.autonomy
        && let Some((index, rule)) = autonomy
            .rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule_matches(rule, input, action, budget_left))
    {
        return (rule.tier, format!("autonomy.rules[{index}]"));
    }
    if let Some(approval) = &spec.approval
        && approval.required_for.contains(&input.change.class)
    {
        return (Tier::Approval, "approval.requiredFor".to_string());
    }
    let default = spec
        .autonomy
        .as_ref()
        .map(|a| a.default)
        .unwrap_or_default();
    (default, "autonomy.default".to_string())
}

pub(super) fn check_tier(
    input: &RuleInput<'_>,
    now: DateTime<Utc>,
    budget_left: Option<f64>,
) -> Option<Finding> {
    let change = input.change;
    if input.actor != ActorKind::Agent
        || !matches!(
            change.class,
            ChangeClass::Create
                | ChangeClass::Rollout
                | ChangeClass::Scale
                | ChangeClass::Autoscaling
                | ChangeClass::Delete
        )
    {
        return None;
    }
    let (tier, why) = tier_of(input, budget_left);
    let decision_id = input.agent_context.decision_id;
    let id_text = decision_id.unwrap_or("<decision-id>");
    match tier {
        Tier::Auto => None,
        Tier::Never => Some(input.finding(
            Rule::Autonomy,
            format!("agent {} changes are tier never under this policy ({why}): only a person may make them", change.class),
            format!("Escalate decision {id_text} to an SRE; it cannot be approved for an agent"),
            format!("tier never ({why}): a person must make this change"),
        )),
        Tier::Approval => {
            let remedy = format!(
                "Ask an SRE to approve this change and no other: {}",
                approve_command(input, id_text)
            );
            let problem = approval_problem(input, now, decision_id)?;
            Some(input.finding(
                Rule::Approval,
                format!("agent {} needs a person's approval (tier approval, {why}): {problem}", change.class),
                remedy,
                format!("needs approval ({why}): {problem}"),
            ))
        }
    }
}

/// The command a person runs to approve this change, and no other, under `decision_id`.
pub(super) fn approve_command(input: &RuleInput<'_>, decision_id: &str) -> String {
    format!(
        "kubectl annotate {} {APPROVE}={decision_id}@{} --overwrite",
        kubectl_resource(input),
        input.identity.digest()
    )
}

/// Whether a person's valid approval covers this agent change (its decision id, stamped
/// by a person, within `maxAge`). An approved agent change may pass the agent-only SLO
/// blocks (the agent budget floor, a fast burn); the floor for everyone still holds.
pub(super) fn approved(input: &RuleInput<'_>, now: DateTime<Utc>) -> bool {
    let decision_id = input.agent_context.decision_id;
    decision_id.is_some() && approval_problem(input, now, decision_id).is_none()
}

/// The approval stored on the workload (`<decision-id>@<digest>`), if any.
pub(super) fn stored_approval<'a>(input: &RuleInput<'a>) -> Option<&'a str> {
    stored_annotations(input)?.get(APPROVE).map(String::as_str)
}

/// Why the stored approval does not cover this change, or `None` when it does. An
/// approval names a decision and the digest of one change's content, and admits that
/// change once: the change ledger remembers the approvals that admitted a change.
fn approval_problem(
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
    let approver = Requester {
        username: by.clone(),
        groups: Vec::new(),
        field_manager: None,
    };
    if *by == input.change.requester.username {
        return Some(format!("the approval was given by {by}, the agent itself"));
    }
    if classify_actor(&approver, Some(&input.policy.spec)) != ActorKind::Person {
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

/// Whether a cooldown holds this agent change: the classes it covers, under a policy
/// that sets one.
pub(super) fn cooldown_applies(input: &RuleInput<'_>) -> bool {
    input.actor == ActorKind::Agent
        && matches!(
            input.change.class,
            ChangeClass::Rollout | ChangeClass::Scale | ChangeClass::Autoscaling
        )
        && input
            .policy
            .spec
            .scaling
            .as_ref()
            .is_some_and(|scaling| scaling.cooldown.is_some())
}

/// A minimum time between agent changes of one workload. The last one is read from the
/// change ledger, which every replica shares and writes with optimistic concurrency, so
/// that of two racing changes only one is admitted; where there is no ledger (offline),
/// from the `slo-guard.io/last-agent-change` stamp on the workload. The change the ledger
/// holds is never held up by its own record: a retry of it passes.
pub(super) fn check_cooldown(input: &RuleInput<'_>, now: DateTime<Utc>) -> Option<Finding> {
    if !cooldown_applies(input) {
        return None;
    }
    let (last, ready) = cooldown_span(input)?;
    let cooldown: &PromDuration = input.policy.spec.scaling.as_ref()?.cooldown.as_ref()?;
    let elapsed = since(now, last);
    if now >= ready {
        return None;
    }
    Some(input.finding(
        Rule::Cooldown,
        format!(
            "the last agent change was {} ago (at {}), inside the {cooldown} cooldown",
            human(elapsed),
            last.format("%H:%M:%SZ")
        ),
        format!("Retry after {}", ready.format("%Y-%m-%dT%H:%M:%SZ")),
        format!(
            "cooldown {cooldown}: last agent change {} ago",
            human(elapsed)
        ),
    ))
}

/// The last agent change a cooldown counts from, and when the cooldown it starts ends;
/// `None` when no cooldown holds this change (none applies, no change before, or this
/// change is the one the ledger holds).
pub(super) fn cooldown_span(input: &RuleInput<'_>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    if !cooldown_applies(input) {
        return None;
    }
    let cooldown: &PromDuration = input.policy.spec.scaling.as_ref()?.cooldown.as_ref()?;
    let stamped = stored_annotations(input)
        .and_then(|stored| stored.get(LAST_AGENT_CHANGE))
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
        .map(|at| at.with_timezone(&Utc));
    let recorded = input.ledger.and_then(|l| l.last_agent_change.as_ref());
    // The ledger is written after the stamp's request is judged, so it is the newer
    // of the two unless the stamp comes from a change the ledger never saw.
    let last = match (recorded, stamped) {
        (Some(recorded), Some(stamped)) if stamped > recorded.at + chrono::Duration::seconds(1) => {
            stamped
        }
        (Some(recorded), _) => {
            if recorded.mark.recognizes(input.identity.mark()) {
                return None;
            }
            recorded.at
        }
        (None, Some(stamped)) => stamped,
        (None, None) => return None,
    };
    let ready = last + chrono::Duration::from_std(cooldown.duration()).ok()?;
    Some((last, ready))
}

/// Argo CD and Flux put changes made outside Git back at their next sync.
pub(super) fn check_gitops(input: &RuleInput<'_>) -> Option<Finding> {
    let mode = match input.policy.spec.gitops {
        GitOpsMode::Ignore => return None,
        GitOpsMode::Warn => Mode::Warn,
        GitOpsMode::Deny => input.policy.spec.action,
    };
    if input.actor != ActorKind::Agent
        || matches!(
            input.change.class,
            ChangeClass::Metadata | ChangeClass::Config
        )
        || input.change.target.kind == TargetKind::HorizontalPodAutoscaler
    {
        return None;
    }
    let annotations = input
        .change
        .annotations
        .as_ref()
        .unwrap_or(&input.change.old_annotations);
    let (marker, tool) = GITOPS_MARKERS.iter().find(|(key, _)| {
        annotations.contains_key(*key) || input.change.target.labels.contains_key(*key)
    })?;
    let mut finding = input.finding(
        Rule::GitOps,
        format!(
            "{} is managed by {tool} ({marker}), which will revert this change at its next sync",
            input.change.target.describe()
        ),
        "Make the change in Git instead".to_string(),
        format!("managed by {tool}: the change will be reverted"),
    );
    finding.mode = mode;
    Some(finding)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::rules::testing::*;

    const APPROVAL_POLICY: &str = "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"]}\napproval: {requiredFor: [rollout], maxAge: 1h}";
    const DECISION: &str = "7f3a9c2e-1b4d-4e8a-9c6f-2d1e0b7a5c3f";

    fn approved(by: &str, at: &str, decision: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (APPROVE.to_string(), decision.to_string()),
            (APPROVED_BY.to_string(), by.to_string()),
            (APPROVED_AT.to_string(), at.to_string()),
        ])
    }

    /// An agent rollout over a stored approval; an approval without a digest is given
    /// the digest of this rollout.
    fn agent_rollout_with_stored(mut stored: BTreeMap<String, String>) -> crate::admission::Change {
        let mut change = rollout_by(AGENT).with_annotations(&full_context());
        if let Some(approval) = stored.get_mut(APPROVE)
            && !approval.contains('@')
        {
            *approval = format!("{approval}@{}", change.content_digest());
        }
        change.old_annotations = stored.clone();
        let mut annotations = full_context();
        annotations.extend(stored);
        change.annotations = Some(annotations);
        change
    }

    #[test]
    fn a_rollout_that_needs_approval_names_the_command_to_give_it() {
        let decision = judge(
            APPROVAL_POLICY,
            &rollout_by(AGENT).with_annotations(&full_context()),
        );
        let finding = only_finding(&decision, Rule::Approval);
        assert_eq!(
            finding.message(),
            format!(
                "[payments/checkout:approval] rollout of Deployment payments/checkout blocked: agent rollout needs a person's approval (tier approval, approval.requiredFor): decision {DECISION} has no approval. Ask an SRE to approve this change and no other: kubectl annotate deployment/checkout -n payments slo-guard.io/approve={DECISION}@{} --overwrite.",
                rollout_by(AGENT).content_digest()
            )
        );
    }

    fn with_image(mut change: crate::admission::Change, image: &str) -> crate::admission::Change {
        change.object = Some(serde_json::json!({
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}
        }));
        change
    }

    #[test]
    fn an_approval_approves_one_content_and_names_it() {
        let approved_change = with_image(rollout_by(AGENT), "checkout:1.4.1");
        let digest = approved_change.content_digest();
        let stored = approved(
            "alice@example.com",
            "2026-11-18T09:30:00Z",
            &format!("{DECISION}@{digest}"),
        );
        let mut other = with_image(agent_rollout_with_stored(stored.clone()), "checkout:6.6.6");
        other.old_annotations = stored.clone();
        let finding = only_finding(&judge(APPROVAL_POLICY, &other), Rule::Approval).clone();
        assert!(
            finding.headline.contains(&format!(
                "the approval of {DECISION} is for change {digest}, not this change ({})",
                other.content_digest()
            )),
            "{}",
            finding.headline
        );
        let mut same = with_image(agent_rollout_with_stored(stored.clone()), "checkout:1.4.1");
        same.old_annotations = stored;
        assert!(judge(APPROVAL_POLICY, &same).findings.is_empty());
        // An approval that names no change approves none.
        let mut bare = same.clone();
        for annotations in [
            &mut bare.old_annotations,
            bare.annotations.as_mut().expect("set"),
        ] {
            annotations.insert(APPROVE.to_string(), DECISION.to_string());
        }
        assert!(
            only_finding(&judge(APPROVAL_POLICY, &bare), Rule::Approval)
                .headline
                .contains("names no change")
        );
    }

    fn judge_with_ledger(
        policy: &str,
        change: &crate::admission::Change,
        ledger: &crate::ledger::LedgerRecord,
    ) -> crate::rules::Decision {
        let policies = crate::store::PolicySet::new(vec![policy_yaml(policy)], "slo-guard");
        let observations = crate::slo::Observations::new();
        crate::rules::assess_and_decide(
            change,
            &crate::rules::DecisionContext {
                policies: &policies,
                now: test_now(),
                observations: &observations,
                ledger: Some(ledger),
            },
        )
    }

    #[test]
    fn an_approval_admits_one_change_once_and_its_retry() {
        let change = agent_rollout_with_stored(approved(
            "alice@example.com",
            "2026-11-18T09:30:00Z",
            DECISION,
        ));
        let empty = crate::ledger::LedgerRecord::default();
        let first = judge_with_ledger(APPROVAL_POLICY, &change, &empty);
        assert!(first.allowed(), "{:?}", first.findings);
        let record = first.record.expect("the spent approval is recorded");
        let approval = change.old_annotations[APPROVE].clone();
        assert!(record.spent(&approval).is_some());
        // The same change again (a retry, or the apiserver after a conflict) passes and
        // needs no new record.
        let retry = judge_with_ledger(APPROVAL_POLICY, &change, &record);
        assert!(retry.allowed(), "{:?}", retry.findings);
        assert_eq!(retry.record, None);
        // The same content by another decision or another agent is another change.
        let mut other_agent = change.clone();
        other_agent.requester.username = "system:serviceaccount:ai-agents:other".into();
        let decision = judge_with_ledger(APPROVAL_POLICY, &other_agent, &record);
        assert!(
            only_finding(&decision, Rule::Approval)
                .headline
                .contains("was used up by the change admitted at 2026-11-18T10:00:00Z"),
            "{:?}",
            decision.findings
        );
    }

    #[test]
    fn a_persons_fresh_approval_of_the_same_decision_passes() {
        let change = agent_rollout_with_stored(approved(
            "alice@example.com",
            "2026-11-18T09:30:00Z",
            DECISION,
        ));
        assert!(judge(APPROVAL_POLICY, &change).findings.is_empty());
    }

    #[test]
    fn stale_foreign_and_agent_approvals_are_refused() {
        let cases = [
            (
                approved("alice@example.com", "2026-11-18T08:00:00Z", DECISION),
                "is 2h00m old, older than the 1h00m limit",
            ),
            (
                approved(
                    "alice@example.com",
                    "2026-11-18T09:30:00Z",
                    "0000aaaa-other",
                ),
                "the approval is for decision 0000aaaa-other",
            ),
            (
                approved(AGENT, "2026-11-18T09:30:00Z", DECISION),
                "the agent itself",
            ),
            (
                approved(
                    "system:serviceaccount:ai-agents:other",
                    "2026-11-18T09:30:00Z",
                    DECISION,
                ),
                "which is not a person",
            ),
            (
                approved(HPA_CONTROLLER, "2026-11-18T09:30:00Z", DECISION),
                "which is not a person",
            ),
            (
                BTreeMap::from([(APPROVE.to_string(), DECISION.to_string())]),
                "has no slo-guard.io/approved-by stamp",
            ),
        ];
        for (stored, expected) in cases {
            let decision = judge(APPROVAL_POLICY, &agent_rollout_with_stored(stored));
            let finding = only_finding(&decision, Rule::Approval);
            assert!(
                finding.headline.contains(expected),
                "{expected}: {}",
                finding.headline
            );
        }
    }

    #[test]
    fn agents_cannot_write_approval_keys_at_all() {
        for key in APPROVAL_KEYS {
            let mut annotations = full_context();
            annotations.insert(key.to_string(), "anything".to_string());
            let change = rollout_by(AGENT).with_annotations(&annotations);
            let decision = judge(
                "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"]}",
                &change,
            );
            let finding = decision
                .findings
                .iter()
                .find(|f| f.rule == Rule::SelfApproval)
                .expect("denied");
            assert!(
                finding
                    .headline
                    .contains("agents cannot approve their own changes"),
                "{}",
                finding.headline
            );
        }
        // A metadata-only approval attempt, as `kubectl annotate --as <agent>` sends it.
        let mut change = rollout_by(AGENT);
        change.class = ChangeClass::Metadata;
        change.annotations = Some(BTreeMap::from([(
            APPROVE.to_string(),
            DECISION.to_string(),
        )]));
        let decision = judge(APPROVAL_POLICY, &change);
        assert_eq!(
            only_finding(&decision, Rule::SelfApproval).mode,
            Mode::Enforce
        );
    }

    #[test]
    fn a_persons_approval_must_carry_slo_guards_stamp() {
        let mut change = rollout_by(PERSON);
        change.class = ChangeClass::Metadata;
        // What the mutating webhook produces: approved-by is the requester, at now.
        change.annotations = Some(approved(PERSON, "2026-11-18T10:00:00Z", DECISION));
        assert!(judge(APPROVAL_POLICY, &change).findings.is_empty());
        // Written by hand for someone else, or backdated: refused.
        change.annotations = Some(approved(
            "bob@example.com",
            "2026-11-18T10:00:00Z",
            DECISION,
        ));
        assert_eq!(
            only_finding(&judge(APPROVAL_POLICY, &change), Rule::SelfApproval).rule,
            Rule::SelfApproval
        );
        change.annotations = Some(approved(PERSON, "2026-11-01T10:00:00Z", DECISION));
        assert_eq!(
            only_finding(&judge(APPROVAL_POLICY, &change), Rule::SelfApproval).rule,
            Rule::SelfApproval
        );
    }

    #[test]
    fn tiers_by_class_size_and_budget() {
        let policy = "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"]}\nautonomy:\n  default: auto\n  rules:\n    - {classes: [delete], tier: never}\n    - {classes: [scale], minStep: \"50%\", tier: approval}\n";
        let small = scale_by(AGENT, Some(10), 14).with_annotations(&scale_context());
        assert!(judge(policy, &small).findings.is_empty());
        let large = scale_by(AGENT, Some(10), 15).with_annotations(&scale_context());
        let decision = judge(policy, &large);
        assert!(
            only_finding(&decision, Rule::Approval)
                .headline
                .contains("autonomy.rules[1]")
        );
        let decision = judge(policy, &delete_by(AGENT));
        let never = decision
            .findings
            .iter()
            .find(|f| f.rule == Rule::Autonomy)
            .expect("tier never");
        assert_eq!(
            never.headline,
            "delete of Deployment payments/checkout blocked: agent delete changes are tier never under this policy (autonomy.rules[0]): only a person may make them"
        );
    }

    #[test]
    fn the_ledger_holds_the_cooldown_for_other_changes_but_not_for_a_retry() {
        let policy = "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"], requireAnnotations: []}\nscaling: {cooldown: 5m}";
        let first = scale_by(AGENT, Some(3), 4);
        let empty = crate::ledger::LedgerRecord::default();
        let admitted = judge_with_ledger(policy, &first, &empty);
        assert!(admitted.allowed());
        let record = admitted
            .record
            .expect("a cooldown needs the change recorded");
        assert_eq!(
            record.last_agent_change.as_ref().map(|c| c.at),
            Some(test_now())
        );
        // Racing with it: another change, judged on the record that won, is held.
        let racing = scale_by(AGENT, Some(3), 5);
        let decision = judge_with_ledger(policy, &racing, &record);
        assert_eq!(
            only_finding(&decision, Rule::Cooldown).headline,
            "scale of Deployment payments/checkout blocked: the last agent change was 0s ago (at 10:00:00Z), inside the 5m cooldown"
        );
        // The admitted change retried (by the client, or by the apiserver after a write
        // conflict from a status update: the same base) is recognized and passes, without
        // a new record.
        let retried = scale_by(AGENT, Some(3), 4);
        let decision = judge_with_ledger(policy, &retried, &record);
        assert!(decision.allowed(), "{:?}", decision.findings);
        assert_eq!(decision.record, None);
        // So is its retry after it landed, from the state it left.
        let landed = scale_by(AGENT, Some(4), 4);
        let decision = judge_with_ledger(policy, &landed, &record);
        assert!(decision.allowed(), "{:?}", decision.findings);
        // The same content replayed over a base someone else changed is another change.
        let replayed = scale_by(AGENT, Some(9), 4);
        let decision = judge_with_ledger(policy, &replayed, &record);
        only_finding(&decision, Rule::Cooldown);
        // People are not agents: nothing to record.
        let person = judge_with_ledger(policy, &scale_by(PERSON, Some(3), 5), &record);
        assert!(person.allowed());
        assert_eq!(person.record, None);
    }

    #[test]
    fn cooldown_holds_until_it_has_passed() {
        let policy = "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"], requireAnnotations: []}\nscaling: {cooldown: 5m}";
        let mut change = scale_by(AGENT, Some(3), 4);
        change.annotations = Some(BTreeMap::from([(
            LAST_AGENT_CHANGE.to_string(),
            "2026-11-18T09:57:00Z".to_string(),
        )]));
        let decision = judge(policy, &change);
        let finding = only_finding(&decision, Rule::Cooldown);
        assert_eq!(
            finding.headline,
            "scale of Deployment payments/checkout blocked: the last agent change was 3m00s ago (at 09:57:00Z), inside the 5m cooldown"
        );
        assert_eq!(finding.remedy, "Retry after 2026-11-18T10:02:00Z");
        change.annotations = Some(BTreeMap::from([(
            LAST_AGENT_CHANGE.to_string(),
            "2026-11-18T09:55:00Z".to_string(),
        )]));
        assert!(judge(policy, &change).findings.is_empty());
        // People are not held by the agents' cooldown.
        let mut person = change.clone();
        person.requester.username = PERSON.into();
        person.annotations = Some(BTreeMap::from([(
            LAST_AGENT_CHANGE.to_string(),
            "2026-11-18T09:59:00Z".to_string(),
        )]));
        assert!(judge(policy, &person).findings.is_empty());
    }

    fn window_policy(window: &str) -> String {
        format!(
            "match: {{kinds: [Deployment]}}\nagents: {{users: [\"system:serviceaccount:ai-agents:*\"], requireAnnotations: []}}\nwindows: {{freeze: [{window}]}}"
        )
    }

    fn freeze_at(policy: &str, now: DateTime<Utc>, username: &str) -> Option<Finding> {
        let policies = crate::store::PolicySet::new(vec![policy_yaml(policy)], "slo-guard");
        let observations = crate::slo::Observations::new();
        let decision = crate::rules::assess_and_decide(
            &rollout_by(username),
            &crate::rules::DecisionContext {
                policies: &policies,
                now,
                observations: &observations,
                ledger: None,
            },
        );
        decision
            .findings
            .into_iter()
            .find(|f| f.rule == Rule::ChangeWindow)
    }

    #[test]
    fn weekend_freezes_follow_the_local_calendar() {
        let policy =
            window_policy("{days: [Sat, Sun], timezone: Europe/Berlin, appliesTo: agents}");
        // Friday 23:30 UTC is already Saturday 00:30 in Berlin (CET, UTC+1).
        let finding = freeze_at(&policy, at("2026-11-20T23:30:00Z"), AGENT).expect("frozen");
        assert!(
            finding.headline.contains("it is Sat 00:30 CET there"),
            "{}",
            finding.headline
        );
        assert!(freeze_at(&policy, at("2026-11-20T22:59:00Z"), AGENT).is_none());
        assert!(freeze_at(&policy, at("2026-11-21T12:00:00Z"), PERSON).is_none());
    }

    #[test]
    fn window_boundaries_and_daylight_saving_time() {
        let policy = window_policy(
            "{days: [Sun], start: \"01:00\", end: \"03:30\", timezone: Europe/Berlin, appliesTo: everyone}",
        );
        // 2026-03-29 is the spring-forward Sunday: 02:00 CET becomes 03:00 CEST.
        assert!(freeze_at(&policy, at("2026-03-28T23:59:59Z"), PERSON).is_none()); // 00:59:59 CET
        assert!(freeze_at(&policy, at("2026-03-29T00:00:00Z"), PERSON).is_some()); // 01:00 CET: start is inclusive
        assert!(freeze_at(&policy, at("2026-03-29T01:29:59Z"), PERSON).is_some()); // 03:29:59 CEST
        assert!(freeze_at(&policy, at("2026-03-29T01:30:00Z"), PERSON).is_none()); // 03:30 CEST: end is exclusive
        // An overnight window belongs to the day it starts on.
        let overnight = window_policy(
            "{days: [Fri], start: \"22:00\", end: \"06:00\", timezone: UTC, appliesTo: agents}",
        );
        assert!(freeze_at(&overnight, at("2026-11-21T05:59:00Z"), AGENT).is_some()); // Saturday early morning
        assert!(freeze_at(&overnight, at("2026-11-21T06:00:00Z"), AGENT).is_none());
        assert!(freeze_at(&overnight, at("2026-11-20T21:59:00Z"), AGENT).is_none());
    }

    #[test]
    fn gitops_managed_objects_warn_or_deny() {
        let mut change = rollout_by(AGENT).with_annotations(&full_context());
        change
            .target
            .labels
            .insert("kustomize.toolkit.fluxcd.io/name".into(), "payments".into());
        let warn = judge(
            "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"]}",
            &change,
        );
        let finding = only_finding(&warn, Rule::GitOps);
        assert_eq!(finding.mode, Mode::Warn);
        assert!(finding.headline.contains("managed by Flux"));
        assert!(warn.allowed());
        let deny = judge(
            "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"]}\ngitops: deny",
            &change,
        );
        assert!(!deny.allowed());
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(human(Duration::from_secs(185)), "3m05s");
        assert_eq!(human(Duration::from_secs(7260)), "2h01m");
    }
}
