//! The policy schema: what a platform team writes in a `slo-guard.io/policy` ConfigMap.
//! Every struct denies unknown fields, so a typo is an error rather than a silently
//! ignored guardrail.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::duration::PromDuration;
use crate::admission::{ActorKind, ChangeClass, WorkloadKind};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    #[serde(rename = "match")]
    pub matcher: MatchSpec,
    #[serde(default)]
    pub action: Mode,
    #[serde(default)]
    pub agents: AgentSpec,
    /// Identities that are controllers (never capped by agent rules). When absent, the
    /// built-in list applies: the kube-controller-manager and kube-system ServiceAccounts.
    #[serde(default)]
    pub controllers: Option<IdentitySpec>,
    #[serde(default)]
    pub slo: Option<SloSpec>,
    #[serde(default)]
    pub traffic: Option<TrafficSpec>,
    #[serde(default)]
    pub scaling: Option<ScalingSpec>,
    #[serde(default)]
    pub windows: Option<WindowsSpec>,
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

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Audit => "audit",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MatchSpec {
    #[serde(default = "all_workload_kinds")]
    pub kinds: Vec<WorkloadKind>,
    /// Workload names; empty means any name.
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    /// Only for policies in slo-guard's own namespace: the namespaces they govern.
    #[serde(default)]
    pub namespaces: Vec<Pattern>,
}

fn all_workload_kinds() -> Vec<WorkloadKind> {
    vec![WorkloadKind::Deployment, WorkloadKind::StatefulSet]
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelRequirement>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelRequirement {
    pub key: String,
    pub operator: LabelOperator,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum LabelOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && self.match_expressions.iter().all(|req| {
                let value = labels.get(&req.key);
                match req.operator {
                    LabelOperator::In => value.is_some_and(|v| req.values.contains(v)),
                    LabelOperator::NotIn => value.is_none_or(|v| !req.values.contains(v)),
                    LabelOperator::Exists => value.is_some(),
                    LabelOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// A name pattern where `*` matches any run of characters (as in `system:serviceaccount:ai-agents:*`).
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Pattern(String);

impl Pattern {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, candidate: &str) -> bool {
        glob_match(self.0.as_bytes(), candidate.as_bytes())
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Iterative `*` matching with single backtrack point: linear in practice, and no
/// recursion for an attacker-chosen username to blow up.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            resume = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star, matched)) = resume {
            p = star + 1;
            t = matched + 1;
            resume = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentitySpec {
    #[serde(default)]
    pub users: Vec<Pattern>,
    #[serde(default)]
    pub groups: Vec<Pattern>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentSpec {
    #[serde(default)]
    pub users: Vec<Pattern>,
    #[serde(default)]
    pub groups: Vec<Pattern>,
    /// `request.options.fieldManager` patterns. A field manager can only make a request
    /// count as an agent's, never the reverse, so a client cannot use it to escape.
    #[serde(default)]
    pub field_managers: Vec<Pattern>,
    #[serde(default = "default_required_annotations")]
    pub require_annotations: Vec<AgentAnnotation>,
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
    DecisionId,
    Reason,
    Confidence,
    Action,
    Trigger,
}

impl AgentAnnotation {
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
    Scale,
    Restart,
    UpdateEnv,
    IncreaseMemory,
    FixImage,
    Rollback,
    Patch,
}

impl AgentAction {
    pub const ALL: [AgentAction; 7] = [
        AgentAction::Scale,
        AgentAction::Restart,
        AgentAction::UpdateEnv,
        AgentAction::IncreaseMemory,
        AgentAction::FixImage,
        AgentAction::Rollback,
        AgentAction::Patch,
    ];

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

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == text)
    }
}

/// An entry of `agents.forbidden`: a change class (`delete`) or a declared action (`rollback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForbiddenAction {
    Class(ChangeClass),
    Action(AgentAction),
}

impl ForbiddenAction {
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

/// Which actors a rule applies to: `agents`, `people`, `controllers`, `everyone`, or a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActorSet {
    pub agents: bool,
    pub people: bool,
    pub controllers: bool,
}

impl ActorSet {
    pub const AGENTS: ActorSet = ActorSet {
        agents: true,
        people: false,
        controllers: false,
    };

    pub fn contains(self, actor: ActorKind) -> bool {
        match actor {
            ActorKind::Agent => self.agents,
            ActorKind::Person => self.people,
            ActorKind::Controller => self.controllers,
        }
    }

    /// How a denial names the actors, as in "the cap of 20 for agent changes".
    pub fn describe(self) -> &'static str {
        match (self.agents, self.people, self.controllers) {
            (true, false, false) => "agent changes",
            (false, true, false) => "changes by people",
            (true, true, false) => "changes by agents and people",
            (true, true, true) => "all changes",
            _ => "changes by the listed actors",
        }
    }

    fn from_names(names: &[String]) -> Result<Self, String> {
        let mut set = ActorSet {
            agents: false,
            people: false,
            controllers: false,
        };
        for name in names {
            match name.as_str() {
                "agents" => set.agents = true,
                "people" => set.people = true,
                "controllers" => set.controllers = true,
                "everyone" => {
                    set = ActorSet {
                        agents: true,
                        people: true,
                        controllers: true,
                    }
                }
                other => {
                    return Err(format!(
                        "unknown actor {other:?}: expected agents, people, controllers or everyone"
                    ));
                }
            }
        }
        if !(set.agents || set.people || set.controllers) {
            return Err("names no actors".to_string());
        }
        Ok(set)
    }

    fn names(self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.agents {
            names.push("agents");
        }
        if self.people {
            names.push("people");
        }
        if self.controllers {
            names.push("controllers");
        }
        names
    }
}

impl Default for ActorSet {
    fn default() -> Self {
        ActorSet::AGENTS
    }
}

impl<'de> Deserialize<'de> for ActorSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let names = match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(name) => vec![name],
            OneOrMany::Many(names) => names,
        };
        ActorSet::from_names(&names).map_err(serde::de::Error::custom)
    }
}

impl Serialize for ActorSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(serializer)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScalingSpec {
    #[serde(default)]
    pub min_replicas: Option<u32>,
    #[serde(default)]
    pub max_replicas: Option<u32>,
    #[serde(default)]
    pub max_step: Option<Step>,
    #[serde(default)]
    pub cooldown: Option<PromDuration>,
    #[serde(default)]
    pub applies_to: ActorSet,
    /// What happens to a replica count above `maxReplicas`: a denial, or (`clamp`) a
    /// mutating patch that lowers it to the cap, with a warning.
    #[serde(default)]
    pub on_exceed: OnExceed,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnExceed {
    #[default]
    Deny,
    Clamp,
}

/// How reflections may change this policy's thresholds.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReflectionPolicy {
    /// The furthest a reflection may loosen each threshold (dotted paths, as in
    /// reflections). A threshold not listed may only be tightened.
    #[serde(default)]
    pub loosen_bounds: BTreeMap<String, serde_yaml::Value>,
    /// Whether slo-guard's own proposals (learned from outcomes) apply without a person
    /// accepting them.
    #[serde(default)]
    pub apply_proposals: bool,
}

/// The largest change of replicas in one request: a count (`5`) or a share of the
/// current replicas (`"50%"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    Replicas(u32),
    Percent(f64),
}

impl Step {
    /// The step allowed from `current` replicas. A percentage always allows at least one
    /// replica, so a workload at 1 replica can still move.
    pub fn allowed_from(self, current: u32) -> u32 {
        match self {
            Step::Replicas(count) => count,
            Step::Percent(percent) => {
                ((f64::from(current) * percent / 100.0).floor() as u32).max(1)
            }
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Replicas(count) => write!(f, "{count}"),
            Step::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Count(0) => Err(serde::de::Error::custom("maxStep must be at least 1")),
            Raw::Count(count) => Ok(Step::Replicas(count)),
            Raw::Text(text) => {
                let invalid = || {
                    serde::de::Error::custom(format!(
                        "invalid maxStep {text:?}: expected a replica count such as 5 or a percentage such as \"50%\""
                    ))
                };
                let percent: f64 = text
                    .trim()
                    .strip_suffix('%')
                    .ok_or_else(invalid)?
                    .trim()
                    .parse()
                    .map_err(|_| invalid())?;
                if !(percent.is_finite() && percent > 0.0) {
                    return Err(invalid());
                }
                Ok(Step::Percent(percent))
            }
        }
    }
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Step::Replicas(count) => serializer.serialize_u32(*count),
            Step::Percent(_) => serializer.serialize_str(&self.to_string()),
        }
    }
}

/// The `slo` section. Its objective, period and queries are written inline, or come
/// from the SLO spec `source` names (Sloth, Pyrra, OpenSLO): then they are filled in
/// when the policy store resolves the source, and [`SloSpec::resolved`] says from where.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(try_from = "RawSloSpec", rename_all = "camelCase")]
pub struct SloSpec {
    /// The SLO spec this section reads its objective, period and queries from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::slo_spec::SourceRef>,
    /// Percent, for example 99.9.
    pub objective: f64,
    pub period: PromDuration,
    /// PromQL for the error rate, with `{{window}}` where the range goes.
    pub errors: String,
    /// PromQL for the total request rate, with `{{window}}`.
    pub total: String,
    #[serde(default)]
    pub min_request_rate: Option<f64>,
    /// What applies when traffic is below `minRequestRate`.
    #[serde(default = "default_no_traffic")]
    pub on_no_traffic: OnError,
    #[serde(default)]
    pub budget: BudgetSpec,
    #[serde(default)]
    pub burn_rate: Vec<BurnRateRow>,
    /// Whether CREATE is gated too (by default only rollouts are).
    #[serde(default)]
    pub gate_create: bool,
    /// With a `source`: the period the policy wrote (only a Sloth spec takes one).
    #[serde(skip)]
    pub written_period: Option<PromDuration>,
    /// With a `source`, once resolved: where the figures come from, and the tool's
    /// recording rules.
    #[serde(skip)]
    pub resolved: Option<std::sync::Arc<ResolvedSource>>,
}

/// What resolving `slo.source` found, beyond the objective, period and queries it
/// filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedSource {
    /// "Sloth PrometheusServiceLevel payments/checkout, SLO requests-availability".
    pub origin: String,
    pub recorded: Option<crate::slo_spec::RecordingRules>,
}

impl SloSpec {
    /// Whether the objective, period and queries still wait for `source` to resolve.
    pub fn awaits_source(&self) -> bool {
        self.source.is_some() && self.resolved.is_none()
    }
}

/// `slo` as written: either `source` or the inline objective, period and queries.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSloSpec {
    #[serde(default)]
    source: Option<crate::slo_spec::SourceRef>,
    #[serde(default)]
    objective: Option<f64>,
    #[serde(default)]
    period: Option<PromDuration>,
    #[serde(default)]
    errors: Option<String>,
    #[serde(default)]
    total: Option<String>,
    #[serde(default)]
    min_request_rate: Option<f64>,
    #[serde(default = "default_no_traffic")]
    on_no_traffic: OnError,
    #[serde(default)]
    budget: BudgetSpec,
    #[serde(default)]
    burn_rate: Vec<BurnRateRow>,
    #[serde(default)]
    gate_create: bool,
}

impl TryFrom<RawSloSpec> for SloSpec {
    type Error = String;

    fn try_from(raw: RawSloSpec) -> Result<Self, String> {
        let inline = [
            ("objective", raw.objective.is_some()),
            ("errors", raw.errors.is_some()),
            ("total", raw.total.is_some()),
        ];
        let (objective, period, errors, total, written_period) = match &raw.source {
            Some(source) => {
                let given: Vec<&str> = inline
                    .iter()
                    .filter_map(|(name, set)| set.then_some(*name))
                    .collect();
                if !given.is_empty() {
                    return Err(format!(
                        "sets both source ({} {}) and {}: the objective and the queries come from the spec, so leave {} out",
                        source.kind,
                        source.name,
                        given.join(", "),
                        if given.len() == 1 { "it" } else { "them" }
                    ));
                }
                // Placeholders until the store resolves the source; `awaits_source`
                // keeps them out of every check and every query.
                (
                    0.0,
                    raw.period
                        .clone()
                        .unwrap_or_else(crate::slo_spec::sloth_default_period),
                    String::new(),
                    String::new(),
                    raw.period,
                )
            }
            None => {
                let missing: Vec<&str> = [
                    ("objective", raw.objective.is_some()),
                    ("period", raw.period.is_some()),
                    ("errors", raw.errors.is_some()),
                    ("total", raw.total.is_some()),
                ]
                .into_iter()
                .filter_map(|(name, set)| (!set).then_some(name))
                .collect();
                match (raw.objective, raw.period, raw.errors, raw.total) {
                    (Some(objective), Some(period), Some(errors), Some(total)) => {
                        (objective, period, errors, total, None)
                    }
                    _ => {
                        return Err(format!(
                            "needs either source (a Sloth PrometheusServiceLevel, Pyrra ServiceLevelObjective or OpenSLO SLO) or objective, period, errors and total; missing: {}",
                            missing.join(", ")
                        ));
                    }
                }
            }
        };
        Ok(SloSpec {
            source: raw.source,
            objective,
            period,
            errors,
            total,
            min_request_rate: raw.min_request_rate,
            on_no_traffic: raw.on_no_traffic,
            budget: raw.budget,
            burn_rate: raw.burn_rate,
            gate_create: raw.gate_create,
            written_period,
            resolved: None,
        })
    }
}

fn default_no_traffic() -> OnError {
    OnError::Allow
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BudgetSpec {
    /// Fraction of the budget left (0.0 = exhausted) at or below which rollouts freeze.
    #[serde(default)]
    pub freeze_below: f64,
    #[serde(default)]
    pub agent_freeze_below: Option<f64>,
}

impl Default for BudgetSpec {
    fn default() -> Self {
        Self {
            freeze_below: 0.0,
            agent_freeze_below: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BurnRateRow {
    pub long: PromDuration,
    pub short: PromDuration,
    pub factor: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficSpec {
    pub current: String,
    pub baseline: String,
    pub spike_ratio: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WindowsSpec {
    #[serde(default)]
    pub freeze: Vec<FreezeWindow>,
    /// The longest freeze exception a person may grant (`slo-guard.io/freeze-exception`),
    /// from the time slo-guard stamps it to its `until`. Default 24h.
    #[serde(default)]
    pub max_exception: Option<PromDuration>,
}

/// How long a freeze exception may run when the policy sets no `windows.maxException`.
pub const DEFAULT_MAX_EXCEPTION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl WindowsSpec {
    /// The longest exception a person may grant under this policy.
    pub fn max_exception(&self) -> std::time::Duration {
        self.max_exception
            .as_ref()
            .map_or(DEFAULT_MAX_EXCEPTION, PromDuration::duration)
    }
}

/// A change freeze: either weekly (`days`, optional `start`/`end`, `timezone`), or dated
/// (`from` and `until`, RFC 3339 with an offset). Validation makes it one or the other.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FreezeWindow {
    /// Names the freeze in denials, and in the exceptions that lift it.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub days: Vec<chrono::Weekday>,
    /// `HH:MM` local time; absent means the whole day.
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
    /// The IANA time zone of a weekly window.
    #[serde(default)]
    pub timezone: Option<chrono_tz::Tz>,
    /// A dated window's start (inclusive).
    #[serde(default, with = "rfc3339_option")]
    pub from: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// A dated window's end (exclusive).
    #[serde(default, with = "rfc3339_option")]
    pub until: Option<chrono::DateTime<chrono::FixedOffset>>,
    #[serde(default)]
    pub applies_to: ActorSet,
}

impl FreezeWindow {
    /// Whether this is a dated window (`from`/`until`) rather than a weekly one.
    pub fn is_dated(&self) -> bool {
        self.from.is_some() || self.until.is_some()
    }
}

/// RFC 3339 times with an explicit offset (`2026-12-20T00:00:00+01:00`, or `Z`), kept
/// with the offset they were written in so that denials print them the same way.
mod rfc3339_option {
    use chrono::{DateTime, FixedOffset, SecondsFormat};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(text.trim())
            .map(Some)
            .map_err(|error| {
                D::Error::custom(format!(
                    "{text:?} is not an RFC 3339 time with an offset, such as 2026-12-20T00:00:00+01:00 ({error})"
                ))
            })
    }

    pub fn serialize<S: Serializer>(
        value: &Option<DateTime<FixedOffset>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(time) => {
                serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }
            None => serializer.serialize_none(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApprovalSpec {
    /// Agent change classes that need a person's approval (when no autonomy rule says otherwise).
    pub required_for: Vec<ChangeClass>,
    /// How long an approval stays valid after it is given.
    pub max_age: PromDuration,
}

/// How much autonomy an agent change gets.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The agent may act alone.
    #[default]
    Auto,
    /// A person must approve the decision first.
    Approval,
    /// Always escalated: only a person may make the change.
    Never,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Auto => "auto",
            Tier::Approval => "approval",
            Tier::Never => "never",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AutonomySpec {
    /// The tier of agent changes no rule matches.
    #[serde(default)]
    pub default: Tier,
    /// Checked in order; the first rule whose conditions all hold gives the tier.
    #[serde(default)]
    pub rules: Vec<TierRule>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TierRule {
    /// Change classes this rule covers; empty means any.
    #[serde(default)]
    pub classes: Vec<ChangeClass>,
    /// Declared agent actions this rule covers; empty means any.
    #[serde(default)]
    pub actions: Vec<AgentAction>,
    /// Matches a replica change at least this large (a count, or a percentage of the
    /// current replicas).
    #[serde(default)]
    pub min_step: Option<Step>,
    /// Matches a memory increase of at least this factor (new over old) on any container.
    #[serde(default)]
    pub min_memory_factor: Option<f64>,
    /// Matches while the error budget left is below this fraction (needs `slo`).
    #[serde(default)]
    pub budget_below: Option<f64>,
    pub tier: Tier,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScopeSpec {
    /// The largest memory request or limit `increase-memory` may set, e.g. `4Gi`.
    #[serde(default)]
    pub max_memory: Option<String>,
    /// The largest factor (new over old) `increase-memory` may apply.
    #[serde(default = "default_memory_factor")]
    pub max_memory_factor: f64,
    /// Env var names that must never get a literal value from an agent.
    #[serde(default = "default_secret_names")]
    pub secret_names: Vec<Pattern>,
}

impl Default for ScopeSpec {
    fn default() -> Self {
        Self {
            max_memory: None,
            max_memory_factor: default_memory_factor(),
            secret_names: default_secret_names(),
        }
    }
}

fn default_memory_factor() -> f64 {
    2.0
}

fn default_secret_names() -> Vec<Pattern> {
    ["*PASSWORD*", "*TOKEN*", "*SECRET*", "*KEY*"]
        .into_iter()
        .map(Pattern::new)
        .collect()
}

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

/// What a decision does when its Prometheus data cannot be had.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    Allow,
    Deny,
    DenyAgents,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusSpec {
    #[serde(default = "default_on_error")]
    pub on_error: OnError,
    #[serde(default = "default_timeout")]
    pub timeout: PromDuration,
    #[serde(default = "default_max_staleness")]
    pub max_staleness: PromDuration,
}

impl Default for PrometheusSpec {
    fn default() -> Self {
        Self {
            on_error: default_on_error(),
            timeout: default_timeout(),
            max_staleness: default_max_staleness(),
        }
    }
}

fn default_on_error() -> OnError {
    OnError::DenyAgents
}

fn default_timeout() -> PromDuration {
    PromDuration::parse("2s").expect("constant duration is valid")
}

fn default_max_staleness() -> PromDuration {
    PromDuration::parse("2m").expect("constant duration is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns_match_service_accounts() {
        let pattern = Pattern::new("system:serviceaccount:ai-agents:*");
        assert!(pattern.matches("system:serviceaccount:ai-agents:fixer"));
        assert!(!pattern.matches("system:serviceaccount:payments:fixer"));
        assert!(Pattern::new("kagent*").matches("kagent"));
        assert!(Pattern::new("*bot*").matches("the-bot-9"));
        assert!(!Pattern::new("exact").matches("exactly"));
        assert!(Pattern::new("a*b*c").matches("aXXbYYc"));
        assert!(!Pattern::new("a*b*c").matches("aXXbYY"));
    }

    #[test]
    fn percentage_steps_scale_with_current_replicas() {
        assert_eq!(Step::Percent(50.0).allowed_from(10), 5);
        assert_eq!(Step::Percent(50.0).allowed_from(1), 1);
        assert_eq!(Step::Replicas(3).allowed_from(100), 3);
    }

    #[test]
    fn label_selector_operators() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "checkout".to_string())]
            .into_iter()
            .collect();
        let selector = |req: LabelRequirement| LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![req],
        };
        let req = |operator, values: &[&str]| LabelRequirement {
            key: "app".into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        assert!(selector(req(LabelOperator::In, &["checkout", "cart"])).matches(&labels));
        assert!(!selector(req(LabelOperator::NotIn, &["checkout"])).matches(&labels));
        assert!(selector(req(LabelOperator::Exists, &[])).matches(&labels));
        assert!(!selector(req(LabelOperator::DoesNotExist, &[])).matches(&labels));
    }
}
