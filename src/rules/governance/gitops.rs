//! GitOps ownership: a change to an object Argo CD or Flux manages is reverted at the
//! next sync, so the policy warns or denies.

use crate::admission::{ActorKind, ChangeClass, TargetKind};
use crate::annotations::GITOPS_MARKERS;
use crate::policy::{GitOpsMode, Mode};
use crate::rules::{Finding, Rule, RuleInput};

/// Argo CD and Flux put changes made outside Git back at their next sync.
pub(in crate::rules) fn check_gitops(input: &RuleInput<'_>) -> Option<Finding> {
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
        || matches!(
            input.change.target.kind,
            TargetKind::HorizontalPodAutoscaler { .. }
        )
    {
        return None;
    }
    let annotations = input
        .change
        .annotations
        .after
        .as_ref()
        .unwrap_or(&input.change.annotations.before);
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
