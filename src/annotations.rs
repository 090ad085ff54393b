//! Annotation keys slo-guard reads and writes, beyond the agents' decision context
//! (see [`crate::policy::AgentAnnotation`]).

/// Set by a person to approve an agent's decision: the decision id.
pub const APPROVE: &str = "slo-guard.io/approve";
/// Stamped by slo-guard's mutating patch from the approver's userInfo.
pub const APPROVED_BY: &str = "slo-guard.io/approved-by";
/// Stamped by slo-guard's mutating patch when the approval is given.
pub const APPROVED_AT: &str = "slo-guard.io/approved-at";
/// Set by a person to lift a change freeze for this workload for a while:
/// `<freeze name or *>;until=<RFC 3339>[;change=<decision-id>@<digest>];reason=<text>`.
pub const FREEZE_EXCEPTION: &str = "slo-guard.io/freeze-exception";
/// Stamped by slo-guard's mutating patch from the granting person's userInfo.
pub const FREEZE_EXCEPTION_BY: &str = "slo-guard.io/freeze-exception-by";
/// Stamped by slo-guard's mutating patch when the exception is granted.
pub const FREEZE_EXCEPTION_AT: &str = "slo-guard.io/freeze-exception-at";
/// The effective thresholds with their provenance.
pub const THRESHOLDS: &str = "slo-guard.io/thresholds";
/// The decision and the figures it saw.
pub const VERDICT: &str = "slo-guard.io/verdict";
/// When an agent last changed the workload, for cooldowns.
pub const LAST_AGENT_CHANGE: &str = "slo-guard.io/last-agent-change";
/// The last admitted rollout (JSON: `at`, `actor`, `user`), for judging its outcome.
pub const LAST_ROLLOUT: &str = "slo-guard.io/last-rollout";
/// Stamped by slo-guard's mutating patch on reflection ConfigMaps: who wrote the
/// version in force, from userInfo. Agents may change or delete only their own.
pub const WRITTEN_BY: &str = "slo-guard.io/written-by";
/// Optional: the one container an agent's decision is about.
pub const CONTAINER: &str = "slo-guard.io/container";
/// Copied from the agent's reason so `kubectl rollout history` shows it.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// What `kubectl rollout restart` sets on the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Keys whose values say who approved what. Only people may change `approve`; only
/// slo-guard may write the other two.
pub const APPROVAL_KEYS: [&str; 3] = [APPROVE, APPROVED_BY, APPROVED_AT];

/// Keys whose values say who lifted a freeze, until when. Only people may change
/// `freeze-exception`; only slo-guard may write the other two.
pub const EXCEPTION_KEYS: [&str; 3] = [FREEZE_EXCEPTION, FREEZE_EXCEPTION_BY, FREEZE_EXCEPTION_AT];

/// Annotations that only slo-guard's own patch may set. A client's value is replaced by
/// the previous one (or removed), so no client can forge them.
pub const GUARD_OWNED: [&str; 8] = [
    APPROVED_BY,
    APPROVED_AT,
    FREEZE_EXCEPTION_BY,
    FREEZE_EXCEPTION_AT,
    THRESHOLDS,
    VERDICT,
    LAST_AGENT_CHANGE,
    WRITTEN_BY,
];

/// Argo CD and Flux mark what they manage with these labels and annotations.
pub const GITOPS_MARKERS: [(&str, &str); 4] = [
    ("argocd.argoproj.io/tracking-id", "Argo CD"),
    ("argocd.argoproj.io/instance", "Argo CD"),
    ("kustomize.toolkit.fluxcd.io/name", "Flux"),
    ("helm.toolkit.fluxcd.io/name", "Flux"),
];
