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

use chrono::{DateTime, Utc};

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

#[cfg(test)]
mod tests;
