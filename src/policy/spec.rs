//! The policy document: its sections, and what a failed rule does.

use serde::{Deserialize, Serialize};

use super::{
    AgentSpec, ApprovalSpec, AutonomySpec, FieldError, IdentitySpec, MatchSpec, PrometheusSpec,
    ReflectionPolicy, ScalingSpec, ScopeSpec, SloSpec, TrafficSpec, WindowsSpec,
};

/// One policy, as written under a key of a `slo-guard.io/policy` ConfigMap (every field
/// is in docs/policy.md).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    /// `match`: which workloads the policy governs.
    #[serde(rename = "match")]
    pub matcher: MatchSpec,
    /// `action`: what a failed rule does (enforce, warn, audit).
    #[serde(default)]
    pub action: Mode,
    /// `agents`: who is an agent, and what agents must declare.
    #[serde(default)]
    pub agents: AgentSpec,
    /// Identities that are controllers (never capped by agent rules). When absent, the
    /// built-in list applies: the kube-controller-manager and kube-system ServiceAccounts.
    #[serde(default)]
    pub controllers: Option<IdentitySpec>,
    /// `slo`: the error budget and burn-rate gate.
    #[serde(default)]
    pub slo: Option<SloSpec>,
    /// `traffic`: the spike check.
    #[serde(default)]
    pub traffic: Option<TrafficSpec>,
    /// `scaling`: caps, step and cooldown.
    #[serde(default)]
    pub scaling: Option<ScalingSpec>,
    /// `windows`: change freezes.
    #[serde(default)]
    pub windows: Option<WindowsSpec>,
    /// `approval`: agent changes that need a person's approval.
    #[serde(default)]
    pub approval: Option<ApprovalSpec>,
    /// Which agent changes run on their own, which need a person's approval, and which
    /// a person must make.
    #[serde(default)]
    pub autonomy: Option<AutonomySpec>,
    /// What an agent's declared action may touch.
    #[serde(default)]
    pub scope: ScopeSpec,
    /// What happens when an agent changes an object that Argo CD or Flux manages.
    #[serde(default)]
    pub gitops: GitOpsMode,
    /// How reflections may change the thresholds.
    #[serde(default)]
    pub reflection: ReflectionPolicy,
    /// `prometheus`: what to do when the figures cannot be had.
    #[serde(default)]
    pub prometheus: PrometheusSpec,
}

/// What happens when a rule fails.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny the request.
    #[default]
    Enforce,
    /// Allow it, with a warning kubectl prints.
    Warn,
    /// Allow it silently, recording the verdict in audit annotations and the log.
    Audit,
}

impl Mode {
    /// The verdict a failed rule in this mode amounts to.
    pub fn verdict(self) -> &'static str {
        match self {
            Mode::Enforce => "denied",
            Mode::Warn => "warned",
            Mode::Audit => "audited",
        }
    }

    /// The mode as policies write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Audit => "audit",
        }
    }
}

/// `gitops`: what happens to an agent's change to an object Argo CD or Flux manages.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GitOpsMode {
    /// Allow, with a warning that the GitOps controller will revert the change.
    #[default]
    Warn,
    /// Deny under the policy's mode.
    Deny,
    /// Say nothing.
    Ignore,
}

impl PolicySpec {
    /// The bounds serde cannot express, section by section, in the order the policy
    /// writes them; the first that fails is the error.
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.matcher.validate()?;
        self.agents.validate()?;
        if let Some(scaling) = &self.scaling {
            scaling.validate()?;
        }
        if let Some(slo) = &self.slo {
            slo.validate()?;
        }
        if let Some(traffic) = &self.traffic {
            traffic.validate()?;
        }
        if let Some(windows) = &self.windows {
            windows.validate()?;
        }
        if let Some(approval) = &self.approval {
            approval.validate()?;
        }
        self.scope.validate()?;
        if let Some(autonomy) = &self.autonomy {
            autonomy.validate(self.slo.is_some())?;
        }
        self.reflection.validate(self)?;
        self.prometheus.validate()
    }
}
