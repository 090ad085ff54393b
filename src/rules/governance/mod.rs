//! Agent governance, one concept a file:
//!
//! - [`approval`]: approvals no agent can forge, each admitting one change once;
//! - [`autonomy`]: the tier of an agent's change (auto, approval, never);
//! - [`cooldown`]: the minimum time between agent changes of one workload;
//! - [`windows`]: change freezes and the exceptions a person may grant;
//! - [`gitops`]: objects a GitOps tool manages.
//!
//! What they share (durations as denials print them, the stored annotations an approval
//! or a stamp is read from, the kubectl resource remedies name) is here.

mod approval;
mod autonomy;
mod cooldown;
mod gitops;
pub(super) mod windows;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};

use super::RuleInput;
use crate::admission::ChangeClass;

pub(super) use approval::{approve_command, approved, check_approval_keys, stored_approval};
pub(super) use autonomy::{budget_decides_tier, check_tier};
pub(super) use cooldown::{check_cooldown, cooldown_applies, cooldown_span};
pub(super) use gitops::check_gitops;

/// A duration as cooldown and approval denials print it: `45s`, `4m05s`, `2h10m`.
fn human(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60),
    }
}

/// How long ago `then` was at `now`; zero for a time after `now`.
fn since(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    (now - then).to_std().unwrap_or_default()
}

/// The workload as kubectl names it in a remedy: `deployment/checkout -n payments`.
pub(super) fn kubectl_resource(input: &RuleInput<'_>) -> String {
    let kind = input
        .change
        .target
        .workload_kind()
        .map_or("deployment", |k| match k {
            crate::admission::WorkloadKind::Deployment => "deployment",
            crate::admission::WorkloadKind::StatefulSet => "statefulset",
        });
    format!(
        "{kind}/{} -n {}",
        input.change.target.name, input.change.target.namespace
    )
}

/// How far a person's stamp (`approved-at`, `freeze-exception-at`) may be from the judging
/// clock when it is written: slo-guard stamps it in the same request, so anything
/// further was written by hand.
const STAMP_SKEW: Duration = Duration::from_secs(120);

/// The annotations among `keys` a change writes (adds, changes or removes), with the
/// object's annotations after it; `None` when the change carries no annotations of its
/// own or writes none of the keys.
fn written_keys<'a>(
    input: &RuleInput<'a>,
    keys: [&'static str; 3],
) -> Option<(&'a BTreeMap<String, String>, Vec<&'static str>)> {
    if !carries_annotations(input) {
        return None;
    }
    let new = input.change.annotations.after.as_ref()?;
    let old = &input.change.annotations.before;
    let changed: Vec<&str> = keys
        .into_iter()
        .filter(|key| new.get(*key) != old.get(*key))
        .collect();
    (!changed.is_empty()).then_some((new, changed))
}

/// A person's stamp (who, when) as a request that writes it sets it.
struct Stamp<'a> {
    /// The stamped identity.
    by: Option<&'a String>,
    /// The stamped time, when it is one.
    at: Option<DateTime<FixedOffset>>,
    /// The request sets the stamp otherwise than slo-guard would: another identity than
    /// the requester's, or a time that is not within [`STAMP_SKEW`] of now.
    forged: bool,
}

impl<'a> Stamp<'a> {
    /// The stamp under `by_key` and `at_key` in `new`, written (`changed`) by `requester`.
    fn read(
        new: &'a BTreeMap<String, String>,
        changed: &[&str],
        [by_key, at_key]: [&str; 2],
        requester: &str,
        now: DateTime<Utc>,
    ) -> Self {
        let by = new.get(by_key);
        let at = new
            .get(at_key)
            .and_then(|at| DateTime::parse_from_rfc3339(at).ok());
        let forged_by = changed.contains(&by_key) && by.is_some_and(|by| by != requester);
        let forged_at = changed.contains(&at_key)
            && new.contains_key(at_key)
            && at.is_none_or(|at| {
                let at = at.with_timezone(&Utc);
                since(now, at).max(since(at, now)) > STAMP_SKEW
            });
        Self {
            by,
            at,
            forged: forged_by || forged_at,
        }
    }
}

/// Changes that carry their own object annotations (a Scale or a delete carries none).
/// Whether the person who stamped an approval or a freeze exception is a person under
/// `policy`: known only by the username on the stamp, so no group can vouch for it.
fn stamped_by_person(username: &str, policy: &crate::policy::PolicySpec) -> bool {
    let stamper = crate::admission::Requester {
        username: username.to_string(),
        groups: Vec::new(),
        field_manager: None,
    };
    super::classify_actor(&stamper, Some(policy)) == crate::admission::ActorKind::Person
}

pub(super) fn carries_annotations(input: &RuleInput<'_>) -> bool {
    !input.change.is_scale_subresource()
        && input.change.class != ChangeClass::Delete
        && input.change.annotations.after.is_some()
}

/// The annotations a workload carries as stored (an approval, the cooldown stamp): for an
/// update, the object as it was before the request, which only a person and slo-guard's
/// stamps could have written; for a scale, the parent workload in the cache (`None` when
/// it is not there).
pub(super) fn stored_annotations<'a>(
    input: &RuleInput<'a>,
) -> Option<&'a BTreeMap<String, String>> {
    if input.change.is_scale_subresource() {
        input.change.annotations.after.as_ref()
    } else {
        // Empty for a create: nothing is stored yet.
        Some(&input.change.annotations.before)
    }
}

#[cfg(test)]
mod tests;
