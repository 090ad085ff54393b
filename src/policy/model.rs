//! The policy schema: what a platform team writes in a `slo-guard.io/policy` ConfigMap.
//! Every struct denies unknown fields, so a typo is an error rather than a silently
//! ignored guardrail.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::duration::PromDuration;
use crate::admission::{ActorKind, ChangeClass, WorkloadKind};

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

/// `match`: which workloads a policy governs, in its namespace (or, in slo-guard's
/// namespace, in `namespaces`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MatchSpec {
    /// Workload kinds; both by default.
    #[serde(default = "all_workload_kinds")]
    pub kinds: Vec<WorkloadKind>,
    /// Workload names; empty means any name.
    #[serde(default)]
    pub names: Vec<String>,
    /// Workload labels; any when absent.
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    /// Only for policies in slo-guard's own namespace: the namespaces they govern.
    #[serde(default)]
    pub namespaces: Vec<Pattern>,
}

fn all_workload_kinds() -> Vec<WorkloadKind> {
    vec![WorkloadKind::Deployment, WorkloadKind::StatefulSet]
}

/// A Kubernetes label selector.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(default)]
    pub match_expressions: Vec<LabelRequirement>,
}

/// One `matchExpressions` requirement.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelRequirement {
    /// The label.
    pub key: String,
    /// How its value is tested.
    pub operator: LabelOperator,
    /// The values `In` and `NotIn` test against.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A `matchExpressions` operator.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum LabelOperator {
    /// The label is present with one of the values.
    In,
    /// The label is absent, or present with none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector.
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
    /// A pattern from its text.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` matches (`*` matches any run, including none).
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

/// Who counts as someone: exact names or `*` patterns.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentitySpec {
    /// Usernames.
    #[serde(default)]
    pub users: Vec<Pattern>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<Pattern>,
}

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

/// Which actors a rule applies to: `agents`, `people`, `controllers`, `everyone`, or a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActorSet {
    /// Agents.
    pub agents: bool,
    /// People.
    pub people: bool,
    /// Controllers.
    pub controllers: bool,
}

impl ActorSet {
    /// Agents only: the default of every `appliesTo`.
    pub const AGENTS: ActorSet = ActorSet {
        agents: true,
        people: false,
        controllers: false,
    };

    /// Whether `actor` is in the set.
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

/// `scaling`: bounds on replicas for the actors in `appliesTo`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScalingSpec {
    /// The fewest replicas (and the lowest HPA `minReplicas`).
    #[serde(default)]
    pub min_replicas: Option<u32>,
    /// The most replicas (and the highest HPA `maxReplicas`).
    #[serde(default)]
    pub max_replicas: Option<u32>,
    /// The largest change of replicas in one request.
    #[serde(default)]
    pub max_step: Option<Step>,
    /// The least time between two agent changes of one workload.
    #[serde(default)]
    pub cooldown: Option<PromDuration>,
    /// Who the caps bind; agents by default.
    #[serde(default)]
    pub applies_to: ActorSet,
    /// What happens to a replica count above `maxReplicas`: a denial, or (`clamp`) a
    /// mutating patch that lowers it to the cap, with a warning.
    #[serde(default)]
    pub on_exceed: OnExceed,
}

/// `scaling.onExceed`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnExceed {
    /// Deny a request above the cap.
    #[default]
    Deny,
    /// Lower it to the cap in the mutating patch, with a warning.
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
    /// A number of replicas.
    Replicas(u32),
    /// A percentage of the current replicas (at least one).
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
    /// The period the error budget is computed over (`30d`).
    pub period: PromDuration,
    /// PromQL for the error rate, with `{{window}}` where the range goes.
    pub errors: String,
    /// PromQL for the total request rate, with `{{window}}`.
    pub total: String,
    /// Requests per second below which `onNoTraffic` applies and the other SLO checks are skipped.
    #[serde(default)]
    pub min_request_rate: Option<f64>,
    /// What applies when traffic is below `minRequestRate`.
    #[serde(default = "default_no_traffic")]
    pub on_no_traffic: OnError,
    /// The budget floors.
    #[serde(default)]
    pub budget: BudgetSpec,
    /// Multiwindow burn-rate rows (the SRE workbook's); a row fires when both windows burn
    /// above its factor.
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
    /// The tool's recording rules, where the source defines them.
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

/// `slo.budget`: the floors of the error budget left.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BudgetSpec {
    /// Fraction of the budget left (0.0 = exhausted) at or below which rollouts freeze.
    #[serde(default)]
    pub freeze_below: f64,
    /// The floor for agents' rollouts (fraction of the budget left); none by default.
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

/// One burn-rate row.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BurnRateRow {
    /// The long window (`1h`).
    pub long: PromDuration,
    /// The short window (`5m`), which confirms the burn is still going on.
    pub short: PromDuration,
    /// The burn rate both windows must exceed (`14.4` spends 2% of a 30-day budget in an hour).
    pub factor: f64,
}

/// `traffic`: a spike is `current` / `baseline` at or above `spikeRatio`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficSpec {
    /// PromQL for the request rate now.
    pub current: String,
    /// PromQL for the rate to compare it with (`offset 1w`).
    pub baseline: String,
    /// The ratio that counts as a spike.
    pub spike_ratio: f64,
}

/// `windows`: change freezes, and how long an exception to one may run.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WindowsSpec {
    /// The freezes.
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
    /// A weekly window's days.
    #[serde(default)]
    pub days: Vec<chrono::Weekday>,
    /// `HH:MM` local time; absent means the whole day.
    #[serde(default)]
    pub start: Option<super::ClockTime>,
    /// `HH:MM` local time, exclusive; absent means the end of the day.
    #[serde(default)]
    pub end: Option<super::ClockTime>,
    /// The IANA time zone of a weekly window.
    #[serde(default)]
    pub timezone: Option<chrono_tz::Tz>,
    /// A dated window's start (inclusive).
    #[serde(default, with = "rfc3339_option")]
    pub from: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// A dated window's end (exclusive).
    #[serde(default, with = "rfc3339_option")]
    pub until: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Who the freeze binds; agents by default.
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

/// `approval`: which agent changes need a person's approval, and for how long one holds.
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
    /// The tier as policies write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Auto => "auto",
            Tier::Approval => "approval",
            Tier::Never => "never",
        }
    }
}

/// `autonomy`: tiers of agent changes.
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

/// One `autonomy.rules` entry: conditions, all of which must hold, and the tier.
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
    /// The tier of the changes it matches.
    pub tier: Tier,
}

/// `scope`: the bounds of what a declared action may change.
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

/// What a decision does when its Prometheus data cannot be had.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Allow the change.
    Allow,
    /// Deny it.
    Deny,
    /// Deny agents' changes; allow the rest.
    DenyAgents,
}

/// `prometheus`: what a decision does without its figures.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusSpec {
    /// What a decision does when its data cannot be had; `deny-agents` by default.
    #[serde(default = "default_on_error")]
    pub on_error: OnError,
    /// The decision is taken within it (`2s`).
    #[serde(default = "default_timeout")]
    pub timeout: PromDuration,
    /// Samples older than this count as stale data (`2m`).
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
