//! The decision core: `decide(change, context) -> Decision`. Pure: no I/O, no clock, no
//! globals, so every rule is tested with plain values.

mod actor;
mod agent;
mod config;
mod freeze;
mod governance;
mod pods;
mod scaling;
mod scope;
mod slo;

pub use actor::classify_actor;

use std::cell::OnceCell;
use std::fmt;

use chrono::{DateTime, Utc};

use crate::admission::{ActorKind, Change, ChangeClass, TargetKind};
use crate::ledger::{ChangeMark, LedgerRecord};
use crate::policy::PolicySpec;
use crate::policy::{Mode, Policy};
use crate::reflection::{EffectivePolicy, Provenance, Threshold, ThresholdPath, effective_policy};
use crate::slo::{GateScope, Observations};
use crate::store::{MatchBasis, PolicySet};

/// The SLO figures judging `change` under `spec` needs, if any: the SLO gate's, or, for
/// a change no gate covers, the error budget alone when an `autonomy` rule's tier turns
/// on it. Shared with the guard, which gathers only these before calling [`decide`].
pub fn figures_needed(change: &Change, spec: &PolicySpec, actor: ActorKind) -> Option<GateScope> {
    slo::gate(change, spec, actor).or_else(|| {
        governance::budget_decides_tier(change, spec, actor).then_some(GateScope::BudgetOnly)
    })
}

/// Every rule a finding can name, as it appears in `[namespace/policy:rule]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// An agent's change lacks the decision context annotations its policy requires.
    AgentAnnotations,
    /// Replicas above `scaling.maxReplicas` (or an HPA's max above it).
    MaxReplicas,
    /// Replicas below `scaling.minReplicas`.
    MinReplicas,
    /// One change moves replicas by more than `scaling.maxStep`.
    MaxStep,
    /// An action the policy forbids agents (a delete, for one).
    ForbiddenAction,
    /// A policy ConfigMap that does not parse or breaks its bounds.
    PolicySchema,
    /// A reflection ConfigMap that does not parse or loosens past its bounds.
    ReflectionSchema,
    /// Error budget left at or below its floor.
    ErrorBudget,
    /// A burn-rate row's long and short windows both over its factor.
    BurnRate,
    /// Traffic above `spikeRatio` times its baseline.
    TrafficSpike,
    /// Traffic below `minRequestRate`, where `onNoTraffic` says to deny.
    NoTraffic,
    /// SLO figures missing, stale or unreadable, where `prometheus.onError` says to deny.
    SloData,
    /// The change is above the agent's autonomy tier.
    Autonomy,
    /// A change that needs a person's approval has none, or not for this change.
    Approval,
    /// Someone other than a person wrote an approval or its stamps.
    SelfApproval,
    /// A freeze exception that is malformed, too long, or not a person's.
    FreezeException,
    /// An agent's change inside the cooldown after its previous one.
    Cooldown,
    /// A change inside a freeze (a weekly window or a dated period).
    ChangeWindow,
    /// An agent's change touches fields its policy does not let it touch.
    DiffScope,
    /// A change to an object a GitOps tool manages, which would be reverted.
    GitOps,
    /// An agent creating, changing or removing a policy ConfigMap.
    PolicyChange,
    /// A change that takes a workload out of the policy that governs it.
    PolicyScope,
    /// An agent making pods (or a ReplicaSet's scale) that would serve a governed workload.
    PodRoute,
    /// An agent moving a governed workload's traffic (a Service's selector, or its delete).
    ServiceRoute,
    /// An agent changing or deleting a reflection it did not write.
    ReflectionAuthor,
    /// The change ledger could not be read or written for a rule that needs it.
    ChangeRecord,
    /// A policy whose namespaces could not be put in the webhooks' scope.
    WebhookScope,
}

impl Rule {
    /// The rule as findings name it (`max-replicas`).
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::AgentAnnotations => "agent-annotations",
            Rule::MaxReplicas => "max-replicas",
            Rule::MinReplicas => "min-replicas",
            Rule::MaxStep => "max-step",
            Rule::ForbiddenAction => "forbidden-action",
            Rule::PolicySchema => "policy-schema",
            Rule::ReflectionSchema => "reflection-schema",
            Rule::ErrorBudget => "error-budget",
            Rule::BurnRate => "burn-rate",
            Rule::TrafficSpike => "traffic-spike",
            Rule::NoTraffic => "no-traffic",
            Rule::SloData => "slo-data",
            Rule::Autonomy => "autonomy",
            Rule::Approval => "approval",
            Rule::SelfApproval => "self-approval",
            Rule::FreezeException => "freeze-exception",
            Rule::Cooldown => "cooldown",
            Rule::ChangeWindow => "change-window",
            Rule::DiffScope => "diff-scope",
            Rule::GitOps => "gitops",
            Rule::PolicyChange => "policy-change",
            Rule::PolicyScope => "policy-scope",
            Rule::PodRoute => "pod-route",
            Rule::ServiceRoute => "service-route",
            Rule::ReflectionAuthor => "reflection-author",
            Rule::ChangeRecord => "change-record",
            Rule::WebhookScope => "webhook-scope",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The policy (or ConfigMap) that set the rule, as `namespace/name`.
    pub source: String,
    /// Which rule.
    pub rule: Rule,
    /// The policy's mode for it: only `enforce` denies.
    pub mode: Mode,
    /// The first sentence: what was blocked and the value seen against the threshold.
    pub headline: String,
    /// What would make the change pass.
    pub remedy: String,
    /// A compact form for warnings, which kubectl shows one per line.
    pub brief: String,
}

impl Finding {
    /// `payments/checkout:max-replicas=enforce`, as logs and audit annotations list it.
    pub fn tag(&self) -> String {
        format!("{}:{}={}", self.source, self.rule, self.mode.as_str())
    }

    /// `[payments/checkout:max-replicas] scale of Deployment payments/checkout blocked: ... Remedy.`
    pub fn message(&self) -> String {
        format!(
            "[{}:{}] {}. {}.",
            self.source, self.rule, self.headline, self.remedy
        )
    }
}

/// What the rules found about one change.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The change class it was judged as.
    pub class: ChangeClass,
    /// The actor as the matching policies judged it (an agent if any policy says so).
    pub actor: ActorKind,
    /// "Deployment payments/checkout".
    pub target: String,
    /// The policies that govern the change, as `namespace/name`.
    pub policies: Vec<String>,
    /// Every failed rule, in every mode.
    pub findings: Vec<Finding>,
    /// Facts about how the decision was made that a reader should know, such as a
    /// selector that could not be checked.
    pub notes: Vec<String>,
    /// The SLO figures each gated policy saw, as `namespace/name: budget 80.0% (30d); ...`,
    /// for logs and audit.
    pub figures: Vec<String>,
    /// Set when a policy clamps replicas to its cap instead of denying: the mutating
    /// webhook lowers the request to `cap`.
    pub clamp: Option<Clamp>,
    /// The effective thresholds by policy, each with where it came from. Kept typed: only
    /// the mutating patch renders them, so the validating path pays no JSON for them.
    pub thresholds: Vec<PolicyThresholds>,
    /// The change ledger's record once this change is admitted, when a cooldown or a
    /// spent approval needs it written: the guard writes it, on the version it read,
    /// before it answers. `None` when nothing needs recording.
    pub record: Option<LedgerRecord>,
}

impl Decision {
    /// Whether no `enforce` finding denies it.
    pub fn allowed(&self) -> bool {
        !self.findings.iter().any(|f| f.mode == Mode::Enforce)
    }

    /// The findings of one mode.
    pub fn findings_in(&self, mode: Mode) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.mode == mode)
    }
}

/// A replica request lowered to a cap by `scaling.onExceed: clamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clamp {
    /// What the change asked for.
    pub requested: u32,
    /// What it is lowered to.
    pub cap: u32,
    /// The clamping policy, as `namespace/name`.
    pub policy: String,
}

/// Everything a decision reads besides the request itself.
pub struct DecisionContext<'a> {
    /// The policies and reflections in force.
    pub policies: &'a PolicySet,
    /// The time windows, freezes and cooldowns are judged at.
    pub now: DateTime<Utc>,
    /// The SLO figures gathered for this change, by policy (empty when none is gated).
    pub observations: &'a Observations,
    /// What slo-guard admitted before for the workload, from the change ledger; `None`
    /// where there is no ledger (offline) or no record yet.
    pub ledger: Option<&'a LedgerRecord>,
}

/// What identifies a change, computed once and only for the changes that need it.
pub(crate) struct ChangeIdentity<'a> {
    change: &'a Change,
    digest: OnceCell<String>,
    mark: OnceCell<ChangeMark>,
}

impl<'a> ChangeIdentity<'a> {
    fn new(change: &'a Change) -> Self {
        Self {
            change,
            digest: OnceCell::new(),
            mark: OnceCell::new(),
        }
    }

    /// [`Change::content_digest`].
    pub fn digest(&self) -> &str {
        self.digest.get_or_init(|| self.change.content_digest())
    }

    /// [`ChangeMark::of`] the change.
    pub fn mark(&self) -> &ChangeMark {
        self.mark
            .get_or_init(|| ChangeMark::of(self.change, self.digest()))
    }
}

/// The facts a rule needs about the policy it is checking on behalf of.
pub(crate) struct RuleInput<'a> {
    pub change: &'a Change,
    /// The policy with every active reflection for the target applied.
    pub policy: &'a Policy,
    pub actor: ActorKind,
    /// Which thresholds reflections set, and why.
    pub provenance: &'a [Provenance],
    pub identity: &'a ChangeIdentity<'a>,
    pub ledger: Option<&'a LedgerRecord>,
}

impl RuleInput<'_> {
    /// " (set by reflection ns/cm#key from source: reason; policy 20)" when a reflection
    /// set `path`, so a denial cites what changed the threshold.
    pub fn cite(&self, path: ThresholdPath) -> String {
        self.provenance
            .iter()
            .find(|p| p.path == path)
            .map(|p| {
                let was = p.policy_value.as_ref().map_or_else(
                    || "unset in the policy".to_string(),
                    |v| format!("policy {v}"),
                );
                format!(
                    " (set by reflection {} from {}: {}; {was})",
                    p.reflection, p.source, p.reason
                )
            })
            .unwrap_or_default()
    }

    pub fn finding(
        &self,
        rule: Rule,
        observation: String,
        remedy: String,
        brief: String,
    ) -> Finding {
        Finding {
            source: self.policy.id.to_string(),
            rule,
            mode: self.policy.spec.action,
            headline: format!(
                "{} of {} blocked: {observation}",
                self.change.class,
                self.change.describe()
            ),
            remedy,
            brief,
        }
    }
}

/// The thresholds one policy sets once reflections are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyThresholds {
    /// The policy, as `namespace/name`.
    pub policy: String,
    /// Every threshold the policy sets, after reflections.
    pub values: Vec<(ThresholdPath, Threshold)>,
    /// The reflections that changed them, and why.
    pub provenance: Vec<Provenance>,
}

impl PolicyThresholds {
    fn of(policy: &Policy, provenance: &[Provenance]) -> Self {
        Self {
            policy: policy.id.to_string(),
            values: ThresholdPath::ALL
                .into_iter()
                .filter_map(|path| Some((path, path.read(&policy.spec)?)))
                .collect(),
            provenance: provenance.to_vec(),
        }
    }

    /// Every threshold as `{"value": 12, "from": "policy"}`, or with the reflection that
    /// set it.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.values
            .iter()
            .map(|(path, value)| {
                let entry = match self.provenance.iter().find(|p| p.path == *path) {
                    Some(p) => serde_json::json!({
                        "value": value.to_json(),
                        "policy": p.policy_value.as_ref().map(|v| v.to_json()),
                        "reflection": p.reflection,
                        "source": p.source,
                        "reason": p.reason,
                        "expires": p.expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    }),
                    None => serde_json::json!({"value": value.to_json(), "from": "policy"}),
                };
                (path.as_str().to_string(), entry)
            })
            .collect()
    }
}

/// The error budget left that the policy's SLO readings show, if they show one and are
/// not older than `prometheus.maxStaleness`.
fn budget_left_for(
    policy: &Policy,
    observations: &Observations,
    now: DateTime<Utc>,
) -> Option<f64> {
    let slo = policy.spec.slo.as_ref()?;
    match observations.get(&policy.id)? {
        crate::slo::Observation::Readings(readings)
            if slo::staleness(&policy.spec, readings, now).is_none() =>
        {
            crate::slo::figures::budget_left(readings, slo.period.as_str(), slo.objective).ok()
        }
        _ => None,
    }
}

/// Judges `change` against every policy in `context` that governs it. Pure: everything it
/// reads (the SLO figures, the ledger's record, the time) is in `context`.
pub fn decide(change: &Change, context: &DecisionContext<'_>) -> Decision {
    let mut decision = Decision {
        class: change.class,
        actor: classify_actor(&change.requester, None),
        target: change.describe(),
        policies: Vec::new(),
        findings: Vec::new(),
        notes: Vec::new(),
        figures: Vec::new(),
        clamp: None,
        thresholds: Vec::new(),
        record: None,
    };
    if change.class == ChangeClass::Config {
        if let Some(agent) = config::agent_under(&change.requester, context.policies) {
            decision.actor = ActorKind::Agent;
            decision
                .findings
                .extend(config::agent_policy_change(change, agent));
            decision
                .findings
                .extend(config::agent_reflection_change(change, agent));
        }
        decision.findings.extend(config::check_written_by(change));
        decision
            .findings
            .extend(config::check(change, context.policies));
        return decision;
    }
    if let TargetKind::PodMaker(_) | TargetKind::Service = change.target.kind {
        let (actor, findings) = pods::check(change, context.policies);
        decision.actor = actor;
        decision.findings = findings;
        return decision;
    }
    let identity = ChangeIdentity::new(change);
    let mut judged = Judged::default();
    judge_target(change, &identity, context, &mut decision, &mut judged);
    let unlisted = pods::check_unlisted_kind(change, context.policies);
    if !unlisted.is_empty() {
        decision.actor = ActorKind::Agent;
        decision.findings.extend(unlisted);
    }
    // An HPA pointed elsewhere stops autoscaling the workload it scaled: for that
    // workload's policies, the change is a delete of its HPA.
    if let Some(previous) = &change.retargeted_from {
        let mut away = change.clone();
        away.class = ChangeClass::Delete;
        away.target = previous.clone();
        away.retargeted_from = None;
        let away_identity = ChangeIdentity::new(&away);
        let mut ignored = Judged::default();
        judge_target(&away, &away_identity, context, &mut decision, &mut ignored);
        decision.notes.push(format!(
            "the HPA's scaleTargetRef moved from {} to {}: judged as a delete for the former",
            previous.describe_workload(),
            change.target.describe_workload()
        ));
    }
    decision.record = record_after(change, &identity, context, &decision, &judged);
    decision
}

/// What judging a change under its policies found that the ledger needs.
#[derive(Default)]
struct Judged {
    /// A policy holds agents to a cooldown for this class of change.
    cooldown: bool,
    /// The approval (`<decision-id>@<digest>`) that covers this exact change.
    approval: Option<String>,
}

fn judge_target(
    change: &Change,
    identity: &ChangeIdentity<'_>,
    context: &DecisionContext<'_>,
    decision: &mut Decision,
    judged: &mut Judged,
) {
    let mut first_policy = decision.policies.is_empty();
    for (policy, basis) in context.policies.matching(&change.target) {
        let effective = reflected(policy, change, context);
        let (policy, provenance) = match &effective {
            Some(effective) => {
                decision.notes.extend(effective.skipped.iter().cloned());
                (&effective.policy, effective.applied.as_slice())
            }
            None => (policy, &[][..]),
        };
        let thresholds = PolicyThresholds::of(policy, provenance);
        if !thresholds.values.is_empty() {
            decision.thresholds.push(thresholds);
        }
        let actor = classify_actor(&change.requester, Some(&policy.spec));
        // The decision's actor: an agent if any policy says so, else the first policy's view.
        if first_policy || actor == ActorKind::Agent {
            decision.actor = actor;
        }
        first_policy = false;
        let id = policy.id.to_string();
        if !decision.policies.contains(&id) {
            decision.policies.push(id);
        }
        if basis == MatchBasis::Assumed {
            decision.notes.push(format!(
                "labels of {} unknown; {} applied without its selector",
                change.target.describe_workload(),
                policy.id
            ));
        }
        let input = RuleInput {
            change,
            policy,
            actor,
            provenance,
            identity,
            ledger: context.ledger,
        };
        // Most decisive first: kubectl users read the first line.
        if basis == MatchBasis::Before {
            decision.findings.extend(scope::check_policy_scope(&input));
        }
        decision.findings.extend(agent::check_forbidden(&input));
        decision.findings.extend(scaling::check(&input));
        if let Some(clamp) = scaling::clamp(&input) {
            // Several clamping policies: the lowest cap wins.
            decision.clamp = Some(match decision.clamp.take() {
                Some(existing) if existing.cap <= clamp.cap => existing,
                _ => clamp,
            });
        }
        decision
            .findings
            .extend(governance::check_approval_keys(&input, context.now));
        decision
            .findings
            .extend(freeze::check_exception_keys(&input, context.now));
        decision
            .findings
            .extend(freeze::check_windows(&input, context.now));
        decision
            .findings
            .extend(governance::check_cooldown(&input, context.now));
        judged.cooldown |= governance::cooldown_applies(&input);
        let budget_left = budget_left_for(policy, context.observations, context.now);
        decision
            .findings
            .extend(governance::check_tier(&input, context.now, budget_left));
        if actor == ActorKind::Agent && governance::approved(&input, context.now) {
            judged.approval = governance::stored_approval(&input).map(str::to_string);
        }
        decision.findings.extend(scope::check(&input));
        decision.findings.extend(governance::check_gitops(&input));
        let slo = slo::check(&input, context.observations.get(&policy.id), context.now);
        decision.findings.extend(slo.findings);
        decision.notes.extend(slo.notes);
        if let Some(figures) = slo.figures {
            decision.figures.push(format!("{}: {figures}", policy.id));
        }
        decision.findings.extend(agent::check_annotations(&input));
    }
}

/// When time alone changes what one policy decides about a change: its cooldown and its
/// freeze windows. Read by the preflight, which checks every instant it reports with
/// [`decide`] before it names it.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeLimits {
    /// The policy, as `namespace/name`.
    pub policy: String,
    /// The last agent change the cooldown counts from, and when the cooldown ends.
    pub cooldown: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The freeze windows that apply to the change.
    pub windows: Vec<WindowSpan>,
}

/// One freeze window as it applies to a change.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSpan {
    /// The window as denials name it.
    pub window: String,
    /// When it ends, if it is in force now.
    pub ends: Option<DateTime<Utc>>,
    /// When it next begins after now.
    pub next_start: Option<DateTime<Utc>>,
}

/// `policy` with the reflections in force for `change`'s target applied, when any apply.
fn reflected(
    policy: &Policy,
    change: &Change,
    context: &DecisionContext<'_>,
) -> Option<EffectivePolicy> {
    effective_policy(
        policy,
        &context.policies.reflections,
        &change.target,
        &context.policies.guard_namespace,
        context.now,
    )
}

/// The cooldown and freeze windows each policy matching `change` holds it to, on the
/// policy as reflections leave it, for the actor that policy sees. Pure, like [`decide`].
pub fn time_limits(change: &Change, context: &DecisionContext<'_>) -> Vec<TimeLimits> {
    let identity = ChangeIdentity::new(change);
    let mut limits = Vec::new();
    for (policy, _) in context.policies.matching(&change.target) {
        let effective = reflected(policy, change, context);
        let (policy, provenance) = match &effective {
            Some(effective) => (&effective.policy, effective.applied.as_slice()),
            None => (policy, &[][..]),
        };
        let input = RuleInput {
            change,
            policy,
            actor: classify_actor(&change.requester, Some(&policy.spec)),
            provenance,
            identity: &identity,
            ledger: context.ledger,
        };
        let entry = TimeLimits {
            policy: policy.id.to_string(),
            cooldown: governance::cooldown_span(&input),
            windows: freeze::window_spans(&input, context.now),
        };
        if entry.cooldown.is_some() || !entry.windows.is_empty() {
            limits.push(entry);
        }
    }
    limits
}

/// Whether an agent change under `spec` can turn on the change ledger: a cooldown, an
/// approval, or autonomy tiers (which ask for approvals). Under any other policy the
/// decision neither reads nor writes a record, so the guard skips the ledger's round trip
/// to the apiserver. Reflections can add a cooldown, so the guard also reads it whenever
/// any are in force.
pub fn turns_on_ledger(spec: &PolicySpec) -> bool {
    spec.scaling
        .as_ref()
        .is_some_and(|scaling| scaling.cooldown.is_some())
        || spec.approval.is_some()
        || spec.autonomy.is_some()
}

/// The ledger record to write when an agent's change is admitted and a cooldown or an
/// approval turns on it. A change the ledger already holds (a retry) needs no write.
fn record_after(
    change: &Change,
    identity: &ChangeIdentity<'_>,
    context: &DecisionContext<'_>,
    decision: &Decision,
    judged: &Judged,
) -> Option<LedgerRecord> {
    if decision.actor != ActorKind::Agent
        || !decision.allowed()
        || (!judged.cooldown && judged.approval.is_none())
    {
        return None;
    }
    let previous = context.ledger.cloned().unwrap_or_default();
    let mark = identity.mark();
    let already_recorded = previous
        .last_agent_change
        .as_ref()
        .is_some_and(|last| last.mark.recognizes(mark))
        && judged
            .approval
            .as_deref()
            .is_none_or(|approval| previous.spent(approval).is_some());
    if already_recorded {
        return None;
    }
    Some(previous.after(change, mark, judged.approval.as_deref(), context.now))
}

#[cfg(test)]
pub(crate) mod testing;
