//! The decision core, in two pure steps: [`assess`] works out once what a change is
//! under the policies in force (which govern it, as reflections leave them, the actor
//! each sees, the figures each needs), and [`decide`] judges that assessment on what the
//! guard observed (SLO figures, the change ledger's record). No I/O, no clock, no
//! globals, so every rule is tested with plain values.
//!
//! - [`assess`]: the assessment, with the agent's decision context and the spec diff.
//! - [`decide`]: the decision, rule by rule: `actor`, `agent`, `scaling`, `governance`
//!   (approval, autonomy, cooldown, freeze windows, GitOps), `scope`, `slo`, and for
//!   ConfigMaps, pods and Services, `config` and `pods`.
//! - [`time_limits`]: when time alone changes the decision, for the preflight.

mod actor;
mod agent;
mod assess;
mod config;
mod governance;
mod handover;
mod pods;
mod scaling;
mod scope;
mod slo;

pub use actor::classify_actor;
pub use assess::{
    AgentContext, Assessment, ChangeIdentity, PolicyAssessment, Retargeted, SpecDiff, assess,
    figures_needed,
};

use std::fmt;

use chrono::{DateTime, Utc};

use crate::admission::{ActorKind, Change, ChangeClass, TargetKind};
use crate::ledger::LedgerRecord;
use crate::policy::PolicySpec;
use crate::policy::{Mode, Policy};
use crate::reflection::{Provenance, Threshold, ThresholdPath};
use crate::slo::Observations;
use crate::store::{MatchBasis, PolicySet};

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
    /// The deprecated rollback annotation, which makes the Deployment controller roll a
    /// workload back as itself.
    RollbackAnnotation,
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
            Rule::RollbackAnnotation => "rollback-annotation",
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

    /// Whether the mutating webhook must give this denial itself: an agent (or a
    /// controller) writing approval or freeze-exception keys. The mutating answer
    /// otherwise always admits and stamps, but its patch would strip what the agent wrote,
    /// and the validating webhook would never see it.
    pub fn denied_at_mutation(&self) -> bool {
        self.actor != ActorKind::Person
            && self.findings.iter().any(|f| {
                matches!(f.rule, Rule::SelfApproval | Rule::FreezeException)
                    && f.mode == Mode::Enforce
            })
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

impl Clamp {
    /// The warning the mutating webhook gives when it lowers the request.
    pub fn warning(&self) -> String {
        format!(
            "slo-guard: replicas lowered from {} to the cap of {} ({} scaling.onExceed: clamp)",
            self.requested, self.cap, self.policy
        )
    }
}

/// What the guard observed for an assessed change: the second input of [`decide`].
#[derive(Clone, Copy)]
pub struct Observed<'a> {
    /// The SLO figures gathered for this change, by policy (empty when none is gated).
    pub observations: &'a Observations,
    /// What slo-guard admitted before for the workload, from the change ledger; `None`
    /// where there is no ledger (offline) or no record yet.
    pub ledger: Option<&'a LedgerRecord>,
}

/// Everything a decision reads besides the request itself, for callers that assess and
/// decide in one go ([`assess_and_decide`]): the preflight's neighbouring changes, tests.
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
    /// What the agent declared in its annotations.
    pub agent_context: &'a AgentContext<'a>,
    /// What the change alters in `spec`.
    pub spec_diff: &'a SpecDiff<'a>,
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

/// The finding that denies `change` when the change ledger its decision records into
/// cannot be read or written (`cause`): cooldowns and approvals would not hold.
pub fn ledger_unavailable(change: &Change, cause: &str) -> Finding {
    Finding {
        source: "slo-guard".to_string(),
        rule: Rule::ChangeRecord,
        mode: Mode::Enforce,
        headline: format!(
            "{} of {} blocked: slo-guard could not record the change in its change ledger, which cooldowns and approvals are kept in ({cause})",
            change.class,
            change.describe()
        ),
        remedy: "Retry in a moment; if this persists, check slo-guard's access to Leases in its namespace".to_string(),
        brief: format!("change ledger unavailable: {cause}"),
    }
}

/// The finding that keeps policy ConfigMap `policy` out when slo-guard could not extend
/// its webhooks to the namespaces it governs (`cause`): the policy would not see their
/// changes.
pub fn scope_not_widened(policy: &crate::policy::PolicyRef, cause: &str) -> Finding {
    Finding {
        source: policy.to_string(),
        rule: Rule::WebhookScope,
        mode: Mode::Enforce,
        headline: format!(
            "policy ConfigMap {policy} not admitted: slo-guard could not extend its webhooks to the namespaces this policy governs, so the policy would not see their changes ({cause})"
        ),
        remedy: "Retry in a moment; if this persists, check slo-guard's access to its webhook configurations (get, update), or run it with --webhook-scope static".to_string(),
        brief: format!("webhook scope not widened: {cause}"),
    }
}

/// Assesses `change` and decides on it in one go: [`assess`], then [`decide`].
pub fn assess_and_decide(change: &Change, context: &DecisionContext<'_>) -> Decision {
    decide(
        &assess(change, context.policies, context.now),
        &Observed {
            observations: context.observations,
            ledger: context.ledger,
        },
    )
}

/// Judges an assessed change on what was observed for it. Pure: everything it reads
/// (the policies as assessed, the SLO figures, the ledger's record, the time, the
/// workloads the garbage collector would delete with a deleted object) is in
/// `assessment` and `observed`.
pub fn decide(assessment: &Assessment<'_>, observed: &Observed<'_>) -> Decision {
    let mut decision = decide_for_target(assessment, observed);
    // Whatever the object is, deleting it deletes the workloads it owns.
    let (agent, owned) = handover::check_owner_change(assessment.change, assessment.policies);
    if agent {
        decision.actor = ActorKind::Agent;
    }
    decision.findings.extend(owned);
    decision
}

/// [`decide`] for the object the change writes (or, for an HPA or a scale, the workload
/// it scales).
fn decide_for_target(assessment: &Assessment<'_>, observed: &Observed<'_>) -> Decision {
    let change = assessment.change;
    let policies = assessment.policies;
    let mut decision = Decision {
        class: change.class,
        actor: assessment.default_actor,
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
        if let Some(agent) = config::agent_under(&change.requester, policies) {
            decision.actor = ActorKind::Agent;
            decision
                .findings
                .extend(config::agent_policy_change(change, agent));
            decision
                .findings
                .extend(config::agent_reflection_change(change, agent));
        }
        decision.findings.extend(config::check_written_by(change));
        decision.findings.extend(config::check(change, policies));
        return decision;
    }
    if change.target.kind == TargetKind::Owner {
        // Judged for its dependents alone, by `decide`.
        return decision;
    }
    if let TargetKind::PodMaker(_) | TargetKind::Service = change.target.kind {
        let (actor, findings) = pods::check(change, policies);
        decision.actor = actor;
        decision.findings = findings;
        return decision;
    }
    let mut judged = Judged::default();
    let target = Target {
        change,
        identity: &assessment.identity,
        governing: &assessment.governing,
    };
    judge_target(&target, assessment, observed, &mut decision, &mut judged);
    let unlisted = pods::check_unlisted_kind(change, policies);
    if !unlisted.is_empty() {
        decision.actor = ActorKind::Agent;
        decision.findings.extend(unlisted);
    }
    // An HPA pointed elsewhere stops autoscaling the workload it scaled: for that
    // workload's policies, the change is a delete of its HPA.
    if let Some(retargeted) = &assessment.retargeted {
        let away_identity = ChangeIdentity::new(&retargeted.change);
        let away = Target {
            change: &retargeted.change,
            identity: &away_identity,
            governing: &retargeted.governing,
        };
        let mut ignored = Judged::default();
        judge_target(&away, assessment, observed, &mut decision, &mut ignored);
        decision.notes.push(format!(
            "the HPA's scaleTargetRef moved from {} to {}: judged as a delete for the former",
            retargeted.change.target.describe_workload(),
            change.target.describe_workload()
        ));
    }
    decision.record = record_after(assessment, observed, &decision, &judged);
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

/// A change judged for one target: the change's own, or, for a retargeted HPA, the
/// workload it leaves.
struct Target<'t, 'a> {
    change: &'t Change,
    identity: &'t ChangeIdentity<'t>,
    governing: &'t [PolicyAssessment<'a>],
}

impl<'t> Target<'t, '_> {
    /// The facts the rules read about `assessed`, one of the target's policies.
    fn input(
        &self,
        assessed: &'t PolicyAssessment<'_>,
        assessment: &'t Assessment<'_>,
        observed: &Observed<'t>,
    ) -> RuleInput<'t> {
        RuleInput {
            change: self.change,
            policy: assessed.policy(),
            actor: assessed.actor,
            provenance: assessed.provenance(),
            identity: self.identity,
            ledger: observed.ledger,
            agent_context: &assessment.agent_context,
            spec_diff: &assessment.spec_diff,
        }
    }
}

fn judge_target(
    target: &Target<'_, '_>,
    assessment: &Assessment<'_>,
    observed: &Observed<'_>,
    decision: &mut Decision,
    judged: &mut Judged,
) {
    let change = target.change;
    let now = assessment.now;
    let mut first_policy = decision.policies.is_empty();
    for assessed in target.governing {
        decision.notes.extend(assessed.skipped().iter().cloned());
        let input = target.input(assessed, assessment, observed);
        let policy = input.policy;
        let actor = input.actor;
        let thresholds = PolicyThresholds::of(policy, input.provenance);
        if !thresholds.values.is_empty() {
            decision.thresholds.push(thresholds);
        }
        // The decision's actor: an agent if any policy says so, else the first policy's view.
        if first_policy || actor == ActorKind::Agent {
            decision.actor = actor;
        }
        first_policy = false;
        let id = policy.id.to_string();
        if !decision.policies.contains(&id) {
            decision.policies.push(id);
        }
        if assessed.basis == MatchBasis::Assumed {
            decision.notes.push(format!(
                "labels of {} unknown; {} applied without its selector",
                change.target.describe_workload(),
                policy.id
            ));
        }
        // Most decisive first: kubectl users read the first line.
        if assessed.basis == MatchBasis::Before {
            decision.findings.extend(scope::check_policy_scope(&input));
        }
        decision.findings.extend(agent::check_forbidden(&input));
        decision.findings.extend(handover::check_new_owner(&input));
        decision
            .findings
            .extend(handover::check_rollback_annotation(&input));
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
            .extend(governance::check_approval_keys(&input, now));
        decision
            .findings
            .extend(governance::windows::check_exception_keys(&input, now));
        decision
            .findings
            .extend(governance::windows::check_windows(&input, now));
        decision
            .findings
            .extend(governance::check_cooldown(&input, now));
        judged.cooldown |= governance::cooldown_applies(&input);
        let budget_left = budget_left_for(policy, observed.observations, now);
        decision
            .findings
            .extend(governance::check_tier(&input, now, budget_left));
        if actor == ActorKind::Agent && governance::approved(&input, now) {
            judged.approval = governance::stored_approval(&input).map(str::to_string);
        }
        decision.findings.extend(scope::check(&input));
        decision.findings.extend(governance::check_gitops(&input));
        let slo = slo::check(
            &input,
            assessed.slo_gate(),
            observed.observations.get(&policy.id),
            now,
        );
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

/// The cooldown and freeze windows each policy governing an assessed change holds it to,
/// on the policy as reflections leave it, for the actor that policy sees. Pure, like
/// [`decide`]; reads the ledger record in `observed` for the cooldown.
pub fn time_limits(assessment: &Assessment<'_>, observed: &Observed<'_>) -> Vec<TimeLimits> {
    let target = Target {
        change: assessment.change,
        identity: &assessment.identity,
        governing: &assessment.governing,
    };
    target
        .governing
        .iter()
        .filter_map(|assessed| {
            let input = target.input(assessed, assessment, observed);
            let entry = TimeLimits {
                policy: input.policy.id.to_string(),
                cooldown: governance::cooldown_span(&input),
                windows: governance::windows::window_spans(&input, assessment.now),
            };
            (entry.cooldown.is_some() || !entry.windows.is_empty()).then_some(entry)
        })
        .collect()
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
    assessment: &Assessment<'_>,
    observed: &Observed<'_>,
    decision: &Decision,
    judged: &Judged,
) -> Option<LedgerRecord> {
    if decision.actor != ActorKind::Agent
        || !decision.allowed()
        || (!judged.cooldown && judged.approval.is_none())
    {
        return None;
    }
    let previous = observed.ledger.cloned().unwrap_or_default();
    let mark = assessment.identity.mark();
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
    Some(previous.after(
        assessment.change,
        mark,
        judged.approval.as_deref(),
        assessment.now,
    ))
}

#[cfg(test)]
pub(crate) mod testing;
