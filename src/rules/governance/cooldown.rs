//! Cooldowns: a minimum time between agent changes of one workload, counted from the
//! change ledger (or the workload's stamp offline).

use chrono::{DateTime, Utc};

use super::{human, since, stored_annotations};
use crate::admission::{ActorKind, ChangeClass};
use crate::annotations::LAST_AGENT_CHANGE;
use crate::policy::PromDuration;
use crate::rules::{Finding, Rule, RuleInput};

/// Whether a cooldown holds this agent change: the classes it covers, under a policy
/// that sets one.
pub(in crate::rules) fn cooldown_applies(input: &RuleInput<'_>) -> bool {
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
pub(in crate::rules) fn check_cooldown(
    input: &RuleInput<'_>,
    now: DateTime<Utc>,
) -> Option<Finding> {
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
pub(in crate::rules) fn cooldown_span(
    input: &RuleInput<'_>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
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
