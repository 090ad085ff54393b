//! The webhook's work for one AdmissionReview, shared by the HTTPS server and the
//! offline `check` command: parse, classify, assess ([`crate::rules::assess`]), gather
//! the figures and ledger record the assessment asks for, decide
//! ([`crate::rules::decide`]), answer, and record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::admission::{
    ActorKind, AdmissionError, Change, ChangeClass, ConfigKind, ReviewResponse, WorkloadLookup,
    classify, parse_review,
};
use crate::ledger::{ChangeLedger, LedgerError, LedgerKey, LedgerRecord};
use crate::metrics::{DecisionLabels, Metrics};
use crate::policy::{PolicyRef, parse_policy_configmap};
use crate::rules::{Assessment, Decision, Observed, assess, decide};
use crate::slo::{Observation, Observations, PlanCache, QueryPlan, SloSource};
use crate::store::{PolicySet, PolicyStore};
use crate::webhook_scope::Reach;
use crate::webhook_scope::manager::ScopeWidener;
use crate::{mutation, verdict};

/// Why a neighbouring change of a preflight was judged without its SLO figures.
const NEIGHBOUR_NOT_ASKED: &str =
    "not asked: a preflight asks Prometheus only what admission of the intended change asks";

/// Which webhook a review came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/validate`: allows or denies.
    Validate,
    /// `/mutate`: stamps the decision on what it admits, through a JSON Patch.
    Mutate,
}

impl Endpoint {
    /// The route's name, as the metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        }
    }
}

/// The answer to one review, with the decision behind it when slo-guard governs the
/// request.
#[derive(Debug)]
pub struct Judgement {
    /// What the apiserver gets.
    pub response: ReviewResponse,
    /// `None` when no policy governs the request.
    pub decision: Option<Decision>,
}

/// A change judged as admission would judge it, without admitting it: nothing is
/// written, recorded or counted. What the preflight reads, and what it needs to ask the
/// same pure core about neighbouring changes (other replica counts, later times).
#[derive(Debug)]
pub struct PreflightJudgement {
    /// The change as classified from the synthesized review.
    pub change: Change,
    /// The policies in force when it was judged.
    pub policies: Arc<PolicySet>,
    /// The SLO figures gathered for this change: exactly the queries admission asks, through
    /// the same source and cache.
    pub observations: Observations,
    /// The change ledger's record for the workload, when admission would read it.
    pub ledger: Option<LedgerRecord>,
    /// Why the ledger could not be read, when admission would have read it.
    pub ledger_error: Option<String>,
    /// A neighbouring change whose SLO figures were not in the cache: they were not
    /// asked for, and the decision was taken without them.
    pub figures_uncached: bool,
    /// The decision admission would take now.
    pub decision: Decision,
}

/// Turns AdmissionReviews into answers: classifies the change, assesses it
/// ([`crate::rules::assess`]), gathers what the assessment says the rules read (SLO
/// figures, the ledger's record), calls [`crate::rules::decide`], and records
/// what admission leaves behind (the ledger, Events, the webhook scope).
pub struct Guard {
    /// The policies and reflections in force.
    pub policies: Arc<PolicyStore>,
    /// The workload watch cache, for scale requests and HPAs.
    pub workloads: Arc<dyn WorkloadLookup>,
    /// Where decisions and latencies are counted.
    pub metrics: Arc<Metrics>,
    /// Where SLO figures come from. [`SloSource::Off`] unless set with [`Guard::with_slo`].
    pub slo: SloSource,
    /// What admitting a change records beyond the response (denial Events). None outside
    /// a cluster.
    pub effects: Option<Arc<dyn AdmissionEffects>>,
    /// The change ledger cooldowns and approvals are kept in. None outside a cluster,
    /// where cooldowns read the `last-agent-change` stamp and approvals are not spent.
    pub ledger: Option<Arc<dyn ChangeLedger>>,
    /// Widens the workload webhooks' scope as policies are admitted. None unless slo-guard
    /// manages its webhook configurations (`--webhook-scope policies`).
    pub scope: Option<Arc<dyn ScopeWidener>>,
    /// slo-guard's own username in the cluster, whose writes are not re-stamped.
    pub own_username: Option<String>,
    plans: PlanCache,
}

/// What a decision may need done in the cluster. Called only for requests that are not
/// dry runs, and never awaited by the admission answer.
pub trait AdmissionEffects: Send + Sync {
    /// slo-guard denied `change` (not a dry run): record a Kubernetes Event on the object
    /// it judged, so `kubectl describe` and `kubectl get events` show who was stopped and
    /// why. Must not block: the event is sent in the background.
    fn record_denial(&self, change: &Change, decision: &Decision);
}

/// A review that was read and classified, with the policies in force.
struct Prepared {
    started: Instant,
    change: Change,
    policies: Arc<PolicySet>,
}

/// What the guard gathers before deciding on an assessed change.
struct Gathering {
    /// One plan per policy whose figures the decision needs, with that policy's
    /// `prometheus.timeout`.
    plans: Vec<(Arc<QueryPlan>, Duration)>,
    /// The workload whose change ledger the decision reads: set for an agent's change of
    /// a class the ledger records ([`reads_ledger`]) under a policy that governs it.
    ledger_key: Option<LedgerKey>,
}

/// How often a decision is taken again after another admission wrote the ledger record
/// it was based on. Each round is lost only to an admission that succeeded, so a few
/// are plenty.
const LEDGER_ROUNDS: usize = 5;

/// How a review's figures and records are gathered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gather {
    /// As the server gathers them: Prometheus (through the cache), the change ledger and
    /// the webhook scope, awaited.
    Live,
    /// Without I/O: canned answers or the gate off, no change ledger, no webhook scope.
    WithoutIo,
}

enum Stage {
    /// slo-guard does not govern the request: the answer is already known.
    Answered(Box<Judgement>),
    Prepared(Box<Prepared>),
}

impl Guard {
    /// A guard with no SLO source, no cluster effects and no ledger (offline).
    pub fn new(
        policies: Arc<PolicyStore>,
        workloads: Arc<dyn WorkloadLookup>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            policies,
            workloads,
            metrics,
            slo: SloSource::Off,
            effects: None,
            ledger: None,
            scope: None,
            own_username: None,
            plans: PlanCache::default(),
        }
    }

    /// Records denials as Events and the like through `effects`; `own_username` is
    /// slo-guard's identity, whose own writes of guard-owned annotations stand.
    pub fn with_effects(
        mut self,
        effects: Arc<dyn AdmissionEffects>,
        own_username: Option<String>,
    ) -> Self {
        self.effects = Some(effects);
        self.own_username = own_username;
        self
    }

    /// Reads and writes cooldowns and spent approvals in `ledger`.
    pub fn with_ledger(mut self, ledger: Arc<dyn ChangeLedger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Widen the workload webhooks' scope for each policy ConfigMap admitted, before it is
    /// stored (see `webhook_scope`).
    pub fn with_scope(mut self, scope: Arc<dyn ScopeWidener>) -> Self {
        self.scope = Some(scope);
        self
    }

    /// Where SLO figures come from.
    pub fn with_slo(mut self, slo: SloSource) -> Self {
        self.slo = slo;
        self
    }

    /// Judges a review without waiting on I/O: the SLO figures come from canned answers,
    /// or the gate is off, and neither the change ledger nor the webhook scope is used.
    /// For `check` and tests; the server uses [`Guard::review_async`].
    pub fn review(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Judgement, AdmissionError> {
        // Nothing in a review gathered without I/O awaits anything: it runs to completion.
        futures::executor::block_on(self.judge(endpoint, body, now, Gather::WithoutIo))
    }

    /// Judges a review, asking Prometheus first when a matching policy gates the change.
    /// Every policy's queries run in parallel, each within its policy's timeout, so the
    /// answer never waits on Prometheus longer than the largest timeout involved.
    pub async fn review_async(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Judgement, AdmissionError> {
        self.judge(endpoint, body, now, Gather::Live).await
    }

    /// The one path of a review: read, assess, gather what the assessment asks for (as
    /// `gather` allows), decide, answer.
    async fn judge(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        now: DateTime<Utc>,
        gather: Gather,
    ) -> Result<Judgement, AdmissionError> {
        let prepared = match self.prepare(body)? {
            Stage::Answered(judgement) => return Ok(*judgement),
            Stage::Prepared(prepared) => prepared,
        };
        let assessment = assess(&prepared.change, &prepared.policies, now);
        let gathering = self.gathering(&prepared, &assessment);
        let (observations, slo_time) = match gather {
            Gather::WithoutIo => (self.observe_now(&gathering), Duration::ZERO),
            Gather::Live => {
                let asked = Instant::now();
                let observations = self.observe(&gathering).await;
                let slo_time = if gathering.plans.is_empty() {
                    Duration::ZERO
                } else {
                    asked.elapsed()
                };
                (observations, slo_time)
            }
        };
        let decision = match (gather, &self.ledger, &gathering.ledger_key, endpoint) {
            // Only the validating answer admits; the mutating one stamps what it is sent.
            (Gather::Live, Some(ledger), Some(key), Endpoint::Validate) => {
                decide_recorded(ledger.as_ref(), key, &assessment, &observations).await
            }
            _ => decide_once(&assessment, &observations, None),
        };
        let decision = match (gather, &self.scope, endpoint) {
            (Gather::Live, Some(scope), Endpoint::Validate) => {
                widen_for_policy(
                    scope.as_ref(),
                    &prepared.change,
                    decision,
                    self.policies.guard_namespace(),
                )
                .await
            }
            _ => decision,
        };
        self.finish(endpoint, &prepared, decision, slo_time, now)
    }

    /// Judges reviews as the validating webhook would, without admitting them: for the
    /// preflight. The first review is the intended change: its SLO figures are gathered
    /// as admission gathers them (the same plans, source and cache). The others are
    /// neighbouring changes (the replica probes), judged only on figures already cached,
    /// so that a preflight asks Prometheus nothing admission of the intended change would
    /// not. The change ledger is read, never written, once per workload. `None` for a
    /// review slo-guard does not govern.
    pub async fn assess(
        &self,
        bodies: &[Vec<u8>],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<PreflightJudgement>>, AdmissionError> {
        self.assess_all(bodies, now, Gather::Live).await
    }

    /// [`Guard::assess`] without waiting on I/O: SLO figures from canned answers (or the
    /// gate off) for every review, and no change ledger. For the offline preflight and
    /// tests.
    pub fn assess_now(
        &self,
        bodies: &[Vec<u8>],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<PreflightJudgement>>, AdmissionError> {
        // Nothing gathered without I/O awaits anything: it runs to completion.
        futures::executor::block_on(self.assess_all(bodies, now, Gather::WithoutIo))
    }

    /// The one path of [`Guard::assess`] and [`Guard::assess_now`].
    async fn assess_all(
        &self,
        bodies: &[Vec<u8>],
        now: DateTime<Utc>,
        gather: Gather,
    ) -> Result<Vec<Option<PreflightJudgement>>, AdmissionError> {
        let mut ledger_reads: Vec<(LedgerKey, Result<LedgerRecord, String>)> = Vec::new();
        let mut judgements = Vec::with_capacity(bodies.len());
        for (index, body) in bodies.iter().enumerate() {
            let prepared = match self.prepare(body)? {
                Stage::Answered(_) => {
                    judgements.push(None);
                    continue;
                }
                Stage::Prepared(prepared) => prepared,
            };
            let assessment = assess(&prepared.change, &prepared.policies, now);
            let gathering = self.gathering(&prepared, &assessment);
            let mut figures_uncached = false;
            let observations: Observations = match gather {
                Gather::WithoutIo => self.observe_now(&gathering),
                Gather::Live if index == 0 => self.observe(&gathering).await,
                Gather::Live => gathering
                    .plans
                    .iter()
                    .map(|(plan, _)| {
                        let observation = self.slo.observe_cached(plan).unwrap_or_else(|| {
                            figures_uncached = true;
                            Observation::Unavailable(NEIGHBOUR_NOT_ASKED.to_string())
                        });
                        (plan.policy.clone(), observation)
                    })
                    .collect(),
            };
            let read = match (gather, &self.ledger, &gathering.ledger_key) {
                (Gather::Live, Some(ledger), Some(key)) => {
                    match ledger_reads.iter().find(|(read_key, _)| read_key == key) {
                        Some((_, read)) => Some(read.clone()),
                        None => {
                            let read = ledger
                                .read(key)
                                .await
                                .map(|versioned| versioned.record)
                                .map_err(|error| error.to_string());
                            ledger_reads.push((key.clone(), read.clone()));
                            Some(read)
                        }
                    }
                }
                _ => None,
            };
            let decision = decide_unrecorded(&assessment, &observations, &read);
            drop(assessment);
            let mut judgement = preflight_judgement_of(*prepared, observations, read, decision);
            judgement.figures_uncached = figures_uncached;
            judgements.push(Some(judgement));
        }
        Ok(judgements)
    }

    /// What deciding on `assessment` needs gathered: the query plan of every policy whose
    /// figures it needs (built from the assessment, cached per policy snapshot), and the
    /// change ledger's key when an agent's change may be judged on its record.
    fn gathering(&self, prepared: &Prepared, assessment: &Assessment<'_>) -> Gathering {
        let change = &prepared.change;
        let mut plans = Vec::new();
        let mut ledger_key = None;
        for assessed in &assessment.governing {
            if assessed.actor == ActorKind::Agent
                && ledger_key.is_none()
                && reads_ledger(change)
                && (crate::rules::turns_on_ledger(&assessed.policy().spec)
                    || !prepared.policies.reflections.is_empty())
            {
                ledger_key = LedgerKey::of(change);
            }
            if let Some(scope) = assessed.figures {
                plans.push((
                    self.plans
                        .plan(&prepared.policies, assessed.stored, &change.target, scope),
                    assessed.stored.spec.prometheus.timeout.duration(),
                ));
            }
        }
        Gathering { plans, ledger_key }
    }

    /// The SLO figures of every plan of `gathering`, asked in parallel, each within its
    /// policy's timeout.
    async fn observe(&self, gathering: &Gathering) -> Observations {
        futures::future::join_all(gathering.plans.iter().map(|(plan, timeout)| async move {
            (plan.policy.clone(), self.slo.observe(plan, *timeout).await)
        }))
        .await
        .into_iter()
        .collect()
    }

    /// The SLO figures of every plan of `gathering`, from a source that needs no I/O.
    fn observe_now(&self, gathering: &Gathering) -> Observations {
        gathering
            .plans
            .iter()
            .map(|(plan, _)| (plan.policy.clone(), self.slo.observe_now(plan)))
            .collect()
    }

    /// Reads and classifies a review; `Answered` when slo-guard does not govern it.
    fn prepare(&self, body: &[u8]) -> Result<Stage, AdmissionError> {
        let started = Instant::now();
        let request = parse_review(body)?;
        let uid = request.uid.clone();
        let Some(change) = classify(request, self.workloads.as_ref())? else {
            return Ok(Stage::Answered(Box::new(Judgement {
                response: ReviewResponse::allow(uid),
                decision: None,
            })));
        };
        Ok(Stage::Prepared(Box::new(Prepared {
            started,
            change,
            policies: self.policies.snapshot(),
        })))
    }

    fn finish(
        &self,
        endpoint: Endpoint,
        prepared: &Prepared,
        decision: Decision,
        slo_time: Duration,
        now: DateTime<Utc>,
    ) -> Result<Judgement, AdmissionError> {
        let Prepared {
            started, change, ..
        } = prepared;
        let response = match endpoint {
            Endpoint::Validate => verdict::review_response(&change.uid, &decision),
            // The validating webhook gives the denial; the mutating one always stamps,
            // because what it stamps (an approver's identity) can be what turns a denial
            // into an admission, and a change that is still denied is never stored.
            Endpoint::Mutate if decision.denied_at_mutation() => {
                verdict::review_response(&change.uid, &decision)
            }
            Endpoint::Mutate => {
                let patch = mutation::patch_for(
                    change,
                    &decision,
                    mutation::StampContext {
                        now,
                        own_username: self.own_username.as_deref(),
                    },
                );
                let mut response = ReviewResponse::allow(&change.uid)
                    .with_patch(&patch)
                    .map_err(|e| AdmissionError::Internal(format!("cannot encode patch: {e}")))?;
                if let Some(clamp) = &decision.clamp {
                    response.warnings.push(verdict::clip(&clamp.warning()));
                }
                response
            }
        };
        let verdict = verdict::verdict_word(&decision);
        // Whichever webhook answers with the denial records it: validate as a rule, mutate
        // for an agent's self-approval, which the validating webhook then never sees.
        if let Some(effects) = &self.effects
            && !response.allowed
            && !change.dry_run
        {
            effects.record_denial(change, &decision);
        }
        if endpoint == Endpoint::Validate {
            self.count(&decision, verdict);
        }
        // The decision log line is built only when it will be written.
        if tracing::enabled!(target: "slo_guard::decision", tracing::Level::INFO) {
            let rules: Vec<String> = decision
                .findings
                .iter()
                .map(crate::rules::Finding::tag)
                .collect();
            tracing::info!(
                target: "slo_guard::decision",
                uid = %change.uid,
                endpoint = endpoint.as_str(),
                object = %decision.target,
                class = decision.class.as_str(),
                actor = decision.actor.as_str(),
                user = %change.requester.username,
                dry_run = change.dry_run,
                verdict,
                // What this endpoint answered: the mutating webhook admits (and stamps) what
                // the validating one will deny, except an agent's self-approval.
                answered = if response.allowed { "allowed" } else { "denied" },
                policies = %decision.policies.join(","),
                rules = %rules.join(","),
                figures = %decision.figures.join(" | "),
                old_replicas = change.replicas().and_then(|r| r.old),
                new_replicas = change.replicas().map(|r| r.new),
                slo_us = slo_time.as_micros() as u64,
                elapsed_us = started.elapsed().as_micros() as u64,
                "decision"
            );
        }
        Ok(Judgement {
            response,
            decision: Some(decision),
        })
    }

    fn count(&self, decision: &Decision, verdict: &str) {
        if decision.findings.is_empty() {
            let policies: Vec<&str> = if decision.policies.is_empty() {
                vec!["none"]
            } else {
                decision.policies.iter().map(String::as_str).collect()
            };
            for policy in policies {
                self.metrics
                    .decisions
                    .get_or_create(&DecisionLabels {
                        policy: policy.to_string(),
                        rule: "none".to_string(),
                        verdict: verdict.to_string(),
                    })
                    .inc();
            }
            return;
        }
        for finding in &decision.findings {
            let outcome = finding.mode.verdict();
            self.metrics
                .decisions
                .get_or_create(&DecisionLabels {
                    policy: finding.source.clone(),
                    rule: finding.rule.as_str().to_string(),
                    verdict: outcome.to_string(),
                })
                .inc();
        }
    }
}

/// Whether an agent's change is judged on what was admitted before: a cooldown (which a
/// reflection may add to a policy that has none), or an approval that may be spent. Read
/// for every agent change of these classes, since only the decision, on the effective
/// policy, knows whether it needs the record.
fn reads_ledger(change: &Change) -> bool {
    matches!(
        change.class,
        ChangeClass::Create | ChangeClass::Rollout | ChangeClass::Scale | ChangeClass::Autoscaling
    )
}

fn decide_once(
    assessment: &Assessment<'_>,
    observations: &Observations,
    ledger: Option<&LedgerRecord>,
) -> Decision {
    decide(
        assessment,
        &Observed {
            observations,
            ledger,
        },
    )
}

/// The decision admission would take on `read` (the ledger as it stands, if admission
/// reads it), as [`decide_recorded`] takes it when its write succeeds, with nothing to
/// record.
fn decide_unrecorded(
    assessment: &Assessment<'_>,
    observations: &Observations,
    read: &Option<Result<LedgerRecord, String>>,
) -> Decision {
    let ledger = match read {
        Some(Ok(record)) => Some(record),
        _ => None,
    };
    let mut decision = decide_once(assessment, observations, ledger);
    if let Some(Err(cause)) = read
        && decision.record.is_some()
    {
        decision = ledger_failure(assessment, observations, cause);
    }
    decision.record = None;
    decision
}

/// The preflight's record of a change judged as admission would judge it.
fn preflight_judgement_of(
    prepared: Prepared,
    observations: Observations,
    read: Option<Result<LedgerRecord, String>>,
    decision: Decision,
) -> PreflightJudgement {
    let (ledger, ledger_error) = match read {
        Some(Ok(record)) => (Some(record), None),
        Some(Err(cause)) => (None, Some(cause)),
        None => (None, None),
    };
    PreflightJudgement {
        change: prepared.change,
        policies: prepared.policies,
        observations,
        ledger,
        ledger_error,
        figures_uncached: false,
        decision,
    }
}

/// Decides on the ledger record as it stands and, if the change is admitted, writes the
/// record that admitting it makes, on the version the decision read. When another
/// admission wrote first, the change is judged again on the record that won: so of two
/// racing changes only one takes a cooldown's slot, and a retry of the admitted change
/// finds itself in the record and passes. A dry run reads but never writes.
async fn decide_recorded(
    ledger: &dyn ChangeLedger,
    key: &LedgerKey,
    assessment: &Assessment<'_>,
    observations: &Observations,
) -> Decision {
    let mut last_error = None;
    for _ in 0..LEDGER_ROUNDS {
        let read = match ledger.read(key).await {
            Ok(read) => read,
            Err(error) => {
                // A decision that records nothing (no cooldown, no approval) does not
                // need the ledger: it stands, denial or not.
                let decision = decide_once(assessment, observations, None);
                if decision.record.is_none() {
                    return decision;
                }
                last_error = Some(error);
                break;
            }
        };
        let mut decision = decide_once(assessment, observations, Some(&read.record));
        let Some(record) = decision.record.take() else {
            return decision;
        };
        if assessment.change.dry_run {
            return decision;
        }
        match ledger.write(key, &record, read.version.as_deref()).await {
            Ok(()) => return decision,
            Err(error @ LedgerError::Conflict(_)) => last_error = Some(error),
            Err(error) => {
                last_error = Some(error);
                break;
            }
        }
    }
    let cause = last_error.map_or_else(|| "no answer".to_string(), |e| e.to_string());
    tracing::error!(workload = %assessment.change.target.describe(), %cause, "change ledger not written; the agent change is denied");
    ledger_failure(assessment, observations, &cause)
}

/// What admission answers when the change ledger a decision needs cannot be read or
/// written: the decision without the record, denied for the ledger, naming `cause`.
fn ledger_failure(
    assessment: &Assessment<'_>,
    observations: &Observations,
    cause: &str,
) -> Decision {
    let mut decision = decide_once(assessment, observations, None);
    decision.findings.insert(
        0,
        crate::rules::ledger_unavailable(assessment.change, cause),
    );
    decision.record = None;
    decision
}

/// A policy ConfigMap about to be admitted: the namespaces it governs are added to the
/// workload webhooks' scope first, so no policy is ever in force where the apiserver does
/// not send its changes. If that cannot be written, the policy is not admitted. A dry run
/// and a policy removal change nothing here (narrowing is the reconciler's, after a grace).
async fn widen_for_policy(
    scope: &dyn ScopeWidener,
    change: &Change,
    mut decision: Decision,
    guard_namespace: &str,
) -> Decision {
    if change.class != ChangeClass::Config
        || change.config_after() != Some(ConfigKind::Policy)
        || change.dry_run
        || !decision.allowed()
    {
        return decision;
    }
    let id = PolicyRef {
        namespace: change.target.namespace.clone(),
        name: change.target.name.clone(),
    };
    let Some(policy) = change
        .config_in_force()
        .and_then(|config| parse_policy_configmap(&id, &config.data).ok())
    else {
        return decision;
    };
    let reach = Reach::of_policy(&policy, guard_namespace);
    if let Err(cause) = scope.widen(&reach).await {
        tracing::error!(policy = %id, %cause, "webhook scope not widened; the policy is not admitted");
        decision
            .findings
            .insert(0, crate::rules::scope_not_widened(&id, &cause.to_string()));
    }
    decision
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;

    use super::*;
    use crate::admission::POLICY_LABEL;
    use crate::rules::Rule;
    use crate::slo::CannedAnswers;
    use crate::store::ConfigMapDocument;

    const SCALE_UP: &str =
        include_str!("../tests/fixtures/captured/deployment-replicas-change.json");

    /// An agent scale-up (3 to 4 replicas) under a policy whose scale tier turns on the
    /// budget: no SLO gate covers a scale-up, yet the tier must see the budget.
    fn judge_scale_up(errors_over_30d: f64) -> Decision {
        judge_scale_up_with_newest_sample(errors_over_30d, None)
    }

    /// `newest_sample_age`: the age of the newest sample the freshness probe reports, or
    /// no probe answer (then staleness is not checked).
    fn judge_scale_up_with_newest_sample(
        errors_over_30d: f64,
        newest_sample_age: Option<i64>,
    ) -> Decision {
        let policy = "match: {kinds: [Deployment]}\n\
                      agents: {users: [\"system:serviceaccount:ai-agents:*\"], requireAnnotations: []}\n\
                      slo:\n  objective: 99.9\n  period: 30d\n\
                      \x20 errors: sum(rate(errors[{{window}}]))\n\
                      \x20 total: sum(rate(requests[{{window}}]))\n\
                      autonomy:\n  default: auto\n\
                      \x20 rules: [{classes: [scale], budgetBelow: 0.5, tier: approval}]\n";
        let store = Arc::new(PolicyStore::new("slo-guard"));
        let document = ConfigMapDocument {
            namespace: "payments".into(),
            name: "checkout".into(),
            labels: BTreeMap::from([(POLICY_LABEL.into(), "true".into())]),
            data: BTreeMap::from([("policy.yaml".into(), policy.into())]),
            origin: "test".into(),
        };
        store.replace_all(None, &[document]);
        assert_eq!(store.snapshot().policies.len(), 1, "{:?}", store.errors());
        let now = Utc.with_ymd_and_hms(2026, 11, 18, 10, 0, 0).unwrap();
        let mut answers =
            format!("'sum(rate(errors[30d]))': {errors_over_30d}\n'sum(rate(requests[30d]))': 1\n");
        if let Some(age) = newest_sample_age {
            answers.push_str(&format!(
                "'max(timestamp(requests))': {}\n",
                now.timestamp() - age
            ));
        }
        let answers = CannedAnswers::parse("answers.yaml", &answers).expect("answers");
        let guard = Guard::new(store, Arc::new(()), Arc::new(Metrics::new()))
            .with_slo(SloSource::Canned(Arc::new(answers)));
        guard
            .review(Endpoint::Validate, SCALE_UP.as_bytes(), now)
            .expect("review")
            .decision
            .expect("governed")
    }

    #[test]
    fn a_budget_tier_rule_is_judged_on_the_budget_even_without_an_slo_gate() {
        let healthy = judge_scale_up(0.0002);
        assert!(
            healthy.findings.is_empty(),
            "80% of the budget left: the rule does not apply, the default tier (auto) does: {:?}",
            healthy.findings
        );
        let spent = judge_scale_up(0.0009);
        assert!(
            spent.findings.iter().any(|f| f.rule == Rule::Approval),
            "10% left, below 50%: approval is required: {:?}",
            spent.findings
        );
    }

    #[test]
    fn a_stale_budget_counts_as_unknown_for_a_tier_rule() {
        let fresh = judge_scale_up_with_newest_sample(0.0002, Some(30));
        assert!(fresh.findings.is_empty(), "{:?}", fresh.findings);
        let stale = judge_scale_up_with_newest_sample(0.0002, Some(3600));
        assert!(
            stale.findings.iter().any(|f| f.rule == Rule::Approval),
            "a budget from an hour-old sample is not trusted: {:?}",
            stale.findings
        );
    }

    /// A change ledger in memory with the Lease's semantics: a write must name the
    /// version it read. `interloper` is written by "another replica" between this
    /// replica's first read and its first write.
    #[derive(Default)]
    struct MemoryLedger {
        state: std::sync::Mutex<(crate::ledger::LedgerRecord, u64)>,
        interloper: std::sync::Mutex<Option<crate::ledger::LedgerRecord>>,
        unavailable: bool,
        reads: std::sync::atomic::AtomicUsize,
    }

    impl ChangeLedger for MemoryLedger {
        fn read<'a>(
            &'a self,
            _: &'a LedgerKey,
        ) -> crate::ledger::LedgerFuture<'a, crate::ledger::Versioned> {
            self.reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Box::pin(async move {
                if self.unavailable {
                    return Err(LedgerError::Unavailable("connection refused".into()));
                }
                let (record, version) = self.state.lock().expect("lock").clone();
                Ok(crate::ledger::Versioned {
                    record,
                    version: (version > 0).then(|| version.to_string()),
                })
            })
        }

        fn write<'a>(
            &'a self,
            _: &'a LedgerKey,
            record: &'a crate::ledger::LedgerRecord,
            expected: Option<&'a str>,
        ) -> crate::ledger::LedgerFuture<'a, ()> {
            Box::pin(async move {
                let mut state = self.state.lock().expect("lock");
                if let Some(other) = self.interloper.lock().expect("lock").take() {
                    *state = (other, state.1 + 1);
                }
                let current = (state.1 > 0).then(|| state.1.to_string());
                if current.as_deref() != expected {
                    return Err(LedgerError::Conflict("payments/checkout".into()));
                }
                *state = (record.clone(), state.1 + 1);
                Ok(())
            })
        }
    }

    /// A guard with one policy, `payments/checkout`, and the change ledger `ledger`.
    fn guard_with(policy: &str, ledger: Arc<MemoryLedger>) -> Guard {
        let store = Arc::new(PolicyStore::new("slo-guard"));
        store.replace_all(
            None,
            &[ConfigMapDocument {
                namespace: "payments".into(),
                name: "checkout".into(),
                labels: BTreeMap::from([(POLICY_LABEL.into(), "true".into())]),
                data: BTreeMap::from([("policy.yaml".into(), policy.into())]),
                origin: "test".into(),
            }],
        );
        assert_eq!(store.snapshot().policies.len(), 1, "{:?}", store.errors());
        Guard::new(store, Arc::new(()), Arc::new(Metrics::new())).with_ledger(ledger)
    }

    fn cooldown_guard(ledger: Arc<MemoryLedger>) -> Guard {
        guard_with(
            "match: {kinds: [Deployment]}\n\
             agents: {users: [\"system:serviceaccount:ai-agents:*\"], requireAnnotations: []}\n\
             scaling: {cooldown: 5m}\n",
            ledger,
        )
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 18, 10, 0, 0).unwrap()
    }

    async fn validate(guard: &Guard, body: &str) -> Decision {
        guard
            .review_async(Endpoint::Validate, body.as_bytes(), now())
            .await
            .expect("review")
            .decision
            .expect("governed")
    }

    #[tokio::test]
    async fn the_ledger_is_read_only_under_a_policy_whose_rules_turn_on_it() {
        let ledger = Arc::new(MemoryLedger::default());
        let caps_only = guard_with(
            "match: {kinds: [Deployment]}\n\
             agents: {users: [\"system:serviceaccount:ai-agents:*\"], requireAnnotations: []}\n\
             scaling: {maxReplicas: 20}\n",
            ledger.clone(),
        );
        assert!(validate(&caps_only, SCALE_UP).await.allowed());
        assert_eq!(
            ledger.reads.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "no cooldown, approval or autonomy: nothing to read"
        );
        let ledger = Arc::new(MemoryLedger::default());
        assert!(
            validate(&cooldown_guard(ledger.clone()), SCALE_UP)
                .await
                .allowed()
        );
        assert_eq!(ledger.reads.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn an_admitted_agent_change_is_recorded_and_its_retry_passes() {
        let ledger = Arc::new(MemoryLedger::default());
        let guard = cooldown_guard(ledger.clone());
        let first = validate(&guard, SCALE_UP).await;
        assert!(first.allowed(), "{:?}", first.findings);
        let (record, version) = ledger.state.lock().expect("lock").clone();
        assert_eq!(version, 1, "the record was written once");
        assert!(record.last_agent_change.is_some());
        // The same request again (the apiserver's retry after a conflict) passes, with no
        // second write.
        let retry = validate(&guard, SCALE_UP).await;
        assert!(retry.allowed(), "{:?}", retry.findings);
        assert_eq!(ledger.state.lock().expect("lock").1, 1);
        // Another change inside the cooldown is held.
        let other = SCALE_UP.replace("\"replicas\": 4", "\"replicas\": 5");
        assert_ne!(other, SCALE_UP, "the fixture scales to 4");
        let held = validate(&guard, &other).await;
        assert!(
            held.findings.iter().any(|f| f.rule == Rule::Cooldown),
            "{:?}",
            held.findings
        );
    }

    #[tokio::test]
    async fn a_change_that_loses_the_race_is_judged_on_the_record_that_won() {
        let ledger = Arc::new(MemoryLedger::default());
        let guard = cooldown_guard(ledger.clone());
        // Another replica admits a different agent change between our read and our write.
        let winner = crate::ledger::LedgerRecord {
            last_agent_change: Some(crate::ledger::AdmittedChange {
                at: now(),
                mark: crate::ledger::ChangeMark {
                    fingerprint: "another-change".into(),
                    base: "b".into(),
                    result: "r".into(),
                },
                user: "system:serviceaccount:ai-agents:fixer".into(),
                decision_id: None,
                class: "scale".into(),
            }),
            spent_approvals: Vec::new(),
        };
        *ledger.interloper.lock().expect("lock") = Some(winner.clone());
        let lost = validate(&guard, SCALE_UP).await;
        assert!(
            lost.findings.iter().any(|f| f.rule == Rule::Cooldown),
            "{:?}",
            lost.findings
        );
        assert_eq!(ledger.state.lock().expect("lock").0, winner);
    }

    #[tokio::test]
    async fn an_unreachable_ledger_holds_up_only_changes_that_need_it() {
        let ledger = Arc::new(MemoryLedger {
            unavailable: true,
            ..MemoryLedger::default()
        });
        let guard = guard_with(
            "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"], requireAnnotations: []}\nscaling: {maxReplicas: 10}\n",
            ledger,
        );
        let decision = validate(&guard, SCALE_UP).await;
        assert!(decision.allowed(), "{:?}", decision.findings);
    }

    #[tokio::test]
    async fn an_unreachable_ledger_denies_the_agent_change_and_names_the_cause() {
        let ledger = Arc::new(MemoryLedger {
            unavailable: true,
            ..MemoryLedger::default()
        });
        let guard = cooldown_guard(ledger);
        let decision = validate(&guard, SCALE_UP).await;
        let finding = decision
            .findings
            .iter()
            .find(|f| f.rule == Rule::ChangeRecord)
            .expect("denied for the ledger");
        assert!(
            finding.headline.contains("connection refused"),
            "{}",
            finding.headline
        );
        assert!(!decision.allowed());
    }

    /// A scope that records what it was asked to widen, or fails.
    #[derive(Default)]
    struct RecordingScope {
        widened: std::sync::Mutex<Vec<Reach>>,
        failing: bool,
    }

    impl ScopeWidener for RecordingScope {
        fn widen<'a>(
            &'a self,
            reach: &'a Reach,
        ) -> futures::future::BoxFuture<'a, Result<(), crate::webhook_scope::manager::ScopeError>>
        {
            Box::pin(async move {
                if self.failing {
                    return Err(crate::webhook_scope::manager::ScopeError::Write {
                        what: "ValidatingWebhookConfiguration slo-guard".into(),
                        cause: "forbidden".into(),
                    });
                }
                self.widened.lock().expect("lock").push(reach.clone());
                Ok(())
            })
        }
    }

    const POLICY_CREATE: &str =
        include_str!("../tests/fixtures/captured/configmap-policy-create.json");

    fn scoped_guard(scope: Arc<RecordingScope>) -> Guard {
        Guard::new(
            Arc::new(PolicyStore::new("slo-guard")),
            Arc::new(()),
            Arc::new(Metrics::new()),
        )
        .with_scope(scope)
    }

    #[tokio::test]
    async fn an_admitted_policy_widens_the_scope_first_and_a_dry_run_does_not() {
        let scope = Arc::new(RecordingScope::default());
        let guard = scoped_guard(scope.clone());
        let admitted = validate(&guard, POLICY_CREATE).await;
        assert!(admitted.allowed(), "{:?}", admitted.findings);
        assert_eq!(
            *scope.widened.lock().expect("lock"),
            vec![Reach {
                namespaces: crate::webhook_scope::Governed::Namespaces(
                    ["payments".to_string()].into()
                ),
                clamps_scales: false,
            }]
        );
        let dry_run = POLICY_CREATE.replacen("\"dryRun\": false", "\"dryRun\": true", 1);
        assert_ne!(dry_run, POLICY_CREATE, "the fixture has a dryRun field");
        assert!(validate(&guard, &dry_run).await.allowed());
        // Nor does the mutating call, which does not admit.
        guard
            .review_async(Endpoint::Mutate, POLICY_CREATE.as_bytes(), now())
            .await
            .expect("review");
        assert_eq!(scope.widened.lock().expect("lock").len(), 1);
    }

    #[tokio::test]
    async fn a_policy_whose_scope_cannot_be_widened_is_not_admitted() {
        let scope = Arc::new(RecordingScope {
            failing: true,
            ..RecordingScope::default()
        });
        let denied = validate(&scoped_guard(scope), POLICY_CREATE).await;
        assert!(!denied.allowed());
        let finding = &denied.findings[0];
        assert_eq!(finding.rule, Rule::WebhookScope);
        assert!(
            finding.headline.contains("payments/checkout not admitted")
                && finding.headline.contains("forbidden"),
            "{}",
            finding.headline
        );
    }
}
