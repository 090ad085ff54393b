//! Tests of agent governance: approvals, tiers, cooldowns, windows and GitOps.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::*;
use crate::annotations::{APPROVAL_KEYS, APPROVE, APPROVED_AT, APPROVED_BY, LAST_AGENT_CHANGE};
use crate::policy::Mode;
use crate::rules::testing::*;
use crate::rules::{Finding, Rule};

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
    change.annotations.before = stored.clone();
    let mut annotations = full_context();
    annotations.extend(stored);
    change.annotations.after = Some(annotations);
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
    other.annotations.before = stored.clone();
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
    same.annotations.before = stored;
    assert!(judge(APPROVAL_POLICY, &same).findings.is_empty());
    // An approval that names no change approves none.
    let mut bare = same.clone();
    for annotations in [
        &mut bare.annotations.before,
        bare.annotations.after.as_mut().expect("set"),
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
    judge_at(policy, change, test_now(), Some(ledger))
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
    let approval = change.annotations.before[APPROVE].clone();
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
    change.annotations.after = Some(BTreeMap::from([(
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
    change.annotations.after = Some(approved(PERSON, "2026-11-18T10:00:00Z", DECISION));
    assert!(judge(APPROVAL_POLICY, &change).findings.is_empty());
    // Written by hand for someone else, or backdated: refused.
    change.annotations.after = Some(approved(
        "bob@example.com",
        "2026-11-18T10:00:00Z",
        DECISION,
    ));
    assert_eq!(
        only_finding(&judge(APPROVAL_POLICY, &change), Rule::SelfApproval).rule,
        Rule::SelfApproval
    );
    change.annotations.after = Some(approved(PERSON, "2026-11-01T10:00:00Z", DECISION));
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
    change.annotations.after = Some(BTreeMap::from([(
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
    change.annotations.after = Some(BTreeMap::from([(
        LAST_AGENT_CHANGE.to_string(),
        "2026-11-18T09:55:00Z".to_string(),
    )]));
    assert!(judge(policy, &change).findings.is_empty());
    // People are not held by the agents' cooldown.
    let mut person = change.clone();
    person.requester.username = PERSON.into();
    person.annotations.after = Some(BTreeMap::from([(
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
    let policy = window_policy("{days: [Sat, Sun], timezone: Europe/Berlin, appliesTo: agents}");
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
