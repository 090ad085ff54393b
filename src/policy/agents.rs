//! `agents`: who is an agent, what an agent's change must declare, and what it may never do.

use serde::{Deserialize, Serialize};

use super::{FieldError, Pattern, check_fraction};
use crate::admission::ChangeClass;

/// `agents`: who is an agent, and what an agent's change must carry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentSpec {
    /// Usernames of agents (`system:serviceaccount:ai-agents:*`).
    #[serde(default)]
    pub users: Vec<Pattern>,
    /// Groups of agents.
    #[serde(default)]
    pub groups: Vec<Pattern>,
    /// `request.options.fieldManager` patterns. A field manager can only make a request
    /// count as an agent's, never the reverse, so a client cannot use it to escape.
    #[serde(default)]
    pub field_managers: Vec<Pattern>,
    /// The decision-context annotations an agent's change must carry.
    #[serde(default = "default_required_annotations")]
    pub require_annotations: Vec<AgentAnnotation>,
    /// The lowest `slo-guard.io/confidence` accepted (0..1).
    #[serde(default)]
    pub min_confidence: Option<f64>,
    /// Change classes or declared actions agents may never take.
    #[serde(default = "default_forbidden")]
    pub forbidden: Vec<ForbiddenAction>,
}

impl Default for AgentSpec {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            groups: Vec::new(),
            field_managers: Vec::new(),
            require_annotations: default_required_annotations(),
            min_confidence: None,
            forbidden: default_forbidden(),
        }
    }
}

fn default_required_annotations() -> Vec<AgentAnnotation> {
    vec![
        AgentAnnotation::DecisionId,
        AgentAnnotation::Reason,
        AgentAnnotation::Confidence,
        AgentAnnotation::Action,
    ]
}

fn default_forbidden() -> Vec<ForbiddenAction> {
    vec![ForbiddenAction::Class(ChangeClass::Delete)]
}

/// The decision-context annotations an agent sets (prefix `slo-guard.io/`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum AgentAnnotation {
    /// `slo-guard.io/decision-id`: the agent's decision, which approvals name.
    DecisionId,
    /// `slo-guard.io/reason`: why, in a sentence (copied to `kubernetes.io/change-cause`).
    Reason,
    /// `slo-guard.io/confidence`: the agent's confidence, 0..1.
    Confidence,
    /// `slo-guard.io/action`: the declared action, from [`AgentAction`].
    Action,
    /// `slo-guard.io/trigger`: what set the agent off (an alert, an incident).
    Trigger,
}

impl AgentAnnotation {
    /// The annotation's full key.
    pub fn key(self) -> &'static str {
        match self {
            AgentAnnotation::DecisionId => "slo-guard.io/decision-id",
            AgentAnnotation::Reason => "slo-guard.io/reason",
            AgentAnnotation::Confidence => "slo-guard.io/confidence",
            AgentAnnotation::Action => "slo-guard.io/action",
            AgentAnnotation::Trigger => "slo-guard.io/trigger",
        }
    }
}

/// The closed list of actions an agent may declare in `slo-guard.io/action`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum AgentAction {
    /// Change the replicas: `spec.replicas` only.
    Scale,
    /// Restart the pods: the pod template's `kubectl.kubernetes.io/restartedAt` only.
    Restart,
    /// Change `env` only, never to a literal value for a secret-looking name.
    UpdateEnv,
    /// Raise memory requests or limits only, within `scope`.
    IncreaseMemory,
    /// Change container images only.
    FixImage,
    /// Go back to an earlier revision; any field may change.
    Rollback,
    /// Any other change; any field may change.
    Patch,
}

impl AgentAction {
    /// Every action, in the order documentation lists them.
    pub const ALL: [AgentAction; 7] = [
        AgentAction::Scale,
        AgentAction::Restart,
        AgentAction::UpdateEnv,
        AgentAction::IncreaseMemory,
        AgentAction::FixImage,
        AgentAction::Rollback,
        AgentAction::Patch,
    ];

    /// The action as `slo-guard.io/action` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentAction::Scale => "scale",
            AgentAction::Restart => "restart",
            AgentAction::UpdateEnv => "update-env",
            AgentAction::IncreaseMemory => "increase-memory",
            AgentAction::FixImage => "fix-image",
            AgentAction::Rollback => "rollback",
            AgentAction::Patch => "patch",
        }
    }

    /// The action `text` names, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == text)
    }
}

/// An entry of `agents.forbidden`: a change class (`delete`) or a declared action (`rollback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForbiddenAction {
    /// A change class (`delete`).
    Class(ChangeClass),
    /// A declared action (`rollback`).
    Action(AgentAction),
}

impl ForbiddenAction {
    /// The entry as policies write it.
    pub fn as_str(self) -> &'static str {
        match self {
            ForbiddenAction::Class(class) => class.as_str(),
            ForbiddenAction::Action(action) => action.as_str(),
        }
    }
}

impl<'de> Deserialize<'de> for ForbiddenAction {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if let Some(class) = ChangeClass::parse(&text) {
            return Ok(ForbiddenAction::Class(class));
        }
        if let Some(action) = AgentAction::parse(&text) {
            return Ok(ForbiddenAction::Action(action));
        }
        Err(serde::de::Error::custom(format!(
            "unknown forbidden action {text:?}: expected a change class (create, rollout, scale, autoscaling, metadata, delete) or an agent action (restart, update-env, increase-memory, fix-image, rollback, patch)"
        )))
    }
}

impl Serialize for ForbiddenAction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl AgentSpec {
    /// A confidence minimum is a fraction.
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if let Some(min) = self.min_confidence {
            check_fraction("agents.minConfidence", min, 0.0, 1.0)?;
        }
        Ok(())
    }
}
