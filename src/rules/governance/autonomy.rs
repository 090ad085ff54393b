//! Tiered autonomy: whether an agent's change is `auto`, needs a person's `approval`, or
//! is `never` an agent's to make, by class, size, declared action and error budget.

use chrono::{DateTime, Utc};

use super::approval::{approval_problem, approve_command};
use crate::admission::{ActorKind, Change, ChangeClass};
use crate::policy::{AgentAction, PolicySpec, Tier, TierRule};
use crate::rules::scope::memory_changes;
use crate::rules::{Finding, Rule, RuleInput};

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
        let Some(replicas) = change.replicas() else {
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
pub(in crate::rules) fn budget_decides_tier(
    change: &Change,
    spec: &PolicySpec,
    actor: ActorKind,
) -> bool {
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
pub(in crate::rules) fn tier_of(input: &RuleInput<'_>, budget_left: Option<f64>) -> (Tier, String) {
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

pub(in crate::rules) fn check_tier(
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
