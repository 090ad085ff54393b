//! The preflight's answer: the decision admission would take now, and the envelope
//! around it. Every bound and instant in it is found by asking the pure decision core
//! ([`decide`]) about a neighbouring change, so the answer cannot disagree with admission;
//! nothing here judges a rule itself.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::admission::{ActorKind, Change};
use crate::guard::PreflightJudgement;
use crate::ledger::LedgerRecord;
use crate::policy::Mode;
use crate::reflection::ThresholdPath;
use crate::rules::{
    Decision, DecisionContext, Finding, Observed, Rule, assess, assess_and_decide, time_limits,
};
use crate::slo::figures::{budget_left, burn_rate, traffic_ratio};
use crate::slo::{Observation, Observations, QueryRole};
use crate::store::PolicySet;

/// The most replicas a probe tries: beyond it the envelope says "no upper bound".
pub const REPLICA_CEILING: u32 = 100_000;

/// Rules whose verdict moves with the clock alone, all else equal.
const TIME_RULES: [Rule; 2] = [Rule::Cooldown, Rule::ChangeWindow];

fn stamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The largest value in `(from, ceiling]` that `allowed` accepts, walking up from `from`
/// while it does. Gallops, then bisects, so a probe costs O(log n) decisions; it assumes
/// what the caps and steps make true, that a scale allowed to n is allowed to every count
/// between `from` and n. `None` when `from + 1` is refused already.
pub fn largest_allowed(from: u32, ceiling: u32, allowed: impl Fn(u32) -> bool) -> Option<u32> {
    let first = from.checked_add(1).filter(|f| *f <= ceiling)?;
    if !allowed(first) {
        return None;
    }
    let (mut good, mut step) = (first, 1u32);
    let bad = loop {
        let next = good.saturating_add(step).min(ceiling);
        if next == good {
            return Some(good);
        }
        if !allowed(next) {
            break next;
        }
        good = next;
        step = step.saturating_mul(2);
    };
    Some(bisect(good, bad, &allowed))
}

/// The smallest value in `[0, from)` that `allowed` accepts, walking down from `from`:
/// the mirror of [`largest_allowed`].
pub fn smallest_allowed(from: u32, allowed: impl Fn(u32) -> bool) -> Option<u32> {
    let first = from.checked_sub(1)?;
    if !allowed(first) {
        return None;
    }
    let (mut good, mut step) = (first, 1u32);
    let bad = loop {
        if good == 0 {
            return Some(0);
        }
        let next = good.saturating_sub(step);
        if !allowed(next) {
            break next;
        }
        good = next;
        step = step.saturating_mul(2);
    };
    // Bisect between a refused `bad` below and an accepted `good` above.
    let (mut low, mut high) = (bad, good);
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if allowed(middle) {
            high = middle;
        } else {
            low = middle;
        }
    }
    Some(high)
}

/// The last accepted value between an accepted `good` and a refused `bad` above it.
fn bisect(mut good: u32, mut bad: u32, allowed: &impl Fn(u32) -> bool) -> u32 {
    while bad - good > 1 {
        let middle = good + (bad - good) / 2;
        if allowed(middle) {
            good = middle;
        } else {
            bad = middle;
        }
    }
    good
}

/// What one decision needs besides the change: the policies, figures and ledger it was
/// taken on.
pub struct Basis<'a> {
    /// The policies in force.
    pub policies: &'a PolicySet,
    /// The SLO figures, by policy.
    pub observations: &'a Observations,
    /// The workload's change ledger, for cooldowns and step limits.
    pub ledger: Option<&'a LedgerRecord>,
}

impl<'a> Basis<'a> {
    /// The basis a preflight judgement gathered.
    pub fn of(judgement: &'a PreflightJudgement) -> Self {
        Self {
            policies: &judgement.policies,
            observations: &judgement.observations,
            ledger: judgement.ledger.as_ref(),
        }
    }

    /// What the judgement's figures and ledger record were.
    pub fn observed(&self) -> Observed<'a> {
        Observed {
            observations: self.observations,
            ledger: self.ledger,
        }
    }

    /// Decides `change` at `now` on this basis, as the webhook would.
    pub fn decide(&self, change: &Change, now: DateTime<Utc>) -> Decision {
        assess_and_decide(
            change,
            &DecisionContext {
                policies: self.policies,
                now,
                observations: self.observations,
                ledger: self.ledger,
            },
        )
    }
}

/// A scale to `replicas` from the same base: the probe's change with the count moved,
/// in the request object as well, where the webhook reads it.
pub fn scaled_to(probe: &Change, replicas: u32) -> Change {
    let mut change = probe.clone();
    if let Some(r) = change.replicas_mut() {
        r.new = replicas;
    }
    if let Some(spec) = change
        .object
        .as_mut()
        .and_then(|o| o.get_mut("spec"))
        .and_then(Value::as_object_mut)
    {
        spec.insert("replicas".into(), Value::from(replicas));
    }
    change
}

/// The replica envelope: the fewest and most replicas a `kubectl scale` by the same
/// identity would be admitted with now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaBounds {
    /// The replicas now.
    pub current: u32,
    /// The most replicas allowed now (`current` when no scale-up is), or `None` when
    /// none up to [`REPLICA_CEILING`] is refused.
    pub largest: Option<u32>,
    /// The fewest replicas allowed now (`current` when no scale-down is).
    pub smallest: u32,
}

/// Finds the bounds by deciding scales of `probe_up`/`probe_down` (scale requests one
/// replica up and down, judged on their own figures).
pub fn replica_bounds(
    current: u32,
    up: Option<(&Change, &Basis<'_>)>,
    down: Option<(&Change, &Basis<'_>)>,
    now: DateTime<Utc>,
) -> ReplicaBounds {
    let largest = match up {
        Some((probe, basis)) => {
            let found = largest_allowed(current, REPLICA_CEILING, |n| {
                basis.decide(&scaled_to(probe, n), now).allowed()
            });
            match found {
                Some(REPLICA_CEILING) => None,
                Some(n) => Some(n),
                None => Some(current),
            }
        }
        None => Some(current),
    };
    let smallest = match down {
        Some((probe, basis)) => smallest_allowed(current, |n| {
            basis.decide(&scaled_to(probe, n), now).allowed()
        })
        .unwrap_or(current),
        None => current,
    };
    ReplicaBounds {
        current,
        largest,
        smallest,
    }
}

fn enforced(decision: &Decision) -> impl Iterator<Item = &Finding> {
    decision.findings.iter().filter(|f| f.mode == Mode::Enforce)
}

/// The earliest instant at which time alone lets the change through: when every
/// finding that denies it now is a time rule (a cooldown, a freeze), the first of the
/// instants those rules name (a cooldown's end, a freeze's end) at which the decision,
/// taken again then on the same figures, no longer holds the change for a time rule.
/// `None` when the change passes now, or when something other than time denies it.
pub fn next_allowed_time(
    change: &Change,
    basis: &Basis<'_>,
    decision: &Decision,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if decision.allowed() || enforced(decision).any(|f| !TIME_RULES.contains(&f.rule)) {
        return None;
    }
    let mut candidates: Vec<DateTime<Utc>> =
        time_limits(&assess(change, basis.policies, now), &basis.observed())
            .into_iter()
            .flat_map(|limits| {
                limits
                    .cooldown
                    .map(|(_, ends)| ends)
                    .into_iter()
                    .chain(limits.windows.into_iter().filter_map(|w| w.ends))
            })
            .filter(|at| *at > now)
            .collect();
    candidates.sort();
    candidates.dedup();
    // A cooldown may end inside a freeze: each candidate is tried in turn.
    candidates
        .into_iter()
        .find(|at| !enforced(&basis.decide(change, *at)).any(|f| TIME_RULES.contains(&f.rule)))
}

/// The SLO figures one policy's decision saw, as numbers.
pub fn slo_figures(
    policies: &PolicySet,
    observations: &Observations,
    now: DateTime<Utc>,
) -> Vec<Value> {
    let mut figures = Vec::new();
    for policy in &policies.policies {
        let Some(observation) = observations.get(&policy.id) else {
            continue;
        };
        let mut entry = serde_json::Map::new();
        entry.insert("policy".into(), Value::from(policy.id.to_string()));
        match observation {
            Observation::NotConfigured => {
                entry.insert(
                    "unavailable".into(),
                    Value::from("no Prometheus is configured: the SLO gate is off"),
                );
            }
            Observation::Unavailable(cause) => {
                entry.insert("unavailable".into(), Value::from(cause.as_str()));
            }
            Observation::Readings(readings) => {
                if let Some(slo) = &policy.spec.slo {
                    if readings.contains_key(&QueryRole::Errors(slo.period.as_str().to_string())) {
                        entry.insert(
                            "budgetLeft".into(),
                            number_or_why(budget_left(
                                readings,
                                slo.period.as_str(),
                                slo.objective,
                            )),
                        );
                        entry.insert("period".into(), Value::from(slo.period.as_str()));
                    }
                    let burns: Vec<Value> = slo
                        .burn_rate
                        .iter()
                        .flat_map(|row| [row.long.as_str(), row.short.as_str()])
                        .filter(|window| {
                            readings.contains_key(&QueryRole::Errors(window.to_string()))
                        })
                        .map(|window| {
                            json!({"window": window, "burnRate": number_or_why(burn_rate(readings, window, slo.objective))})
                        })
                        .collect();
                    if !burns.is_empty() {
                        entry.insert("burnRates".into(), Value::Array(burns));
                    }
                }
                if readings.contains_key(&QueryRole::Current) {
                    entry.insert(
                        "traffic".into(),
                        match traffic_ratio(readings) {
                            Ok((current, baseline, ratio)) => {
                                json!({"current": current, "baseline": baseline, "ratio": ratio})
                            }
                            Err(why) => json!({"unavailable": why.0}),
                        },
                    );
                }
                if let Some(newest) = readings.get(&QueryRole::Freshness).and_then(|r| r.value()) {
                    entry.insert(
                        "ageSeconds".into(),
                        Value::from((now.timestamp() as f64 - newest).max(0.0).round()),
                    );
                }
            }
        }
        figures.push(Value::Object(entry));
    }
    figures
}

fn number_or_why(figure: Result<f64, crate::slo::figures::Missing>) -> Value {
    match figure {
        Ok(value) => Value::from(value),
        Err(why) => json!({"unavailable": why.0}),
    }
}

/// The rule a threshold sets, for the per-rule results.
fn rule_of(path: ThresholdPath) -> Rule {
    match path {
        ThresholdPath::ScalingMaxReplicas => Rule::MaxReplicas,
        ThresholdPath::ScalingMinReplicas => Rule::MinReplicas,
        ThresholdPath::ScalingMaxStep => Rule::MaxStep,
        ThresholdPath::ScalingCooldown => Rule::Cooldown,
        ThresholdPath::TrafficSpikeRatio => Rule::TrafficSpike,
        ThresholdPath::BudgetFreezeBelow | ThresholdPath::BudgetAgentFreezeBelow => {
            Rule::ErrorBudget
        }
        ThresholdPath::SloMinRequestRate => Rule::NoTraffic,
        ThresholdPath::AgentsMinConfidence => Rule::AgentAnnotations,
    }
}

/// The value a threshold was held against, where the change or the figures give one.
fn seen_for(path: ThresholdPath, change: &Change, figures: Option<&Value>) -> Value {
    let replicas = change
        .replicas()
        .map(|r| r.new)
        .or(change.hpa_bounds().map(|h| h.max));
    match path {
        ThresholdPath::ScalingMaxReplicas => replicas.map_or(Value::Null, Value::from),
        ThresholdPath::ScalingMinReplicas => change
            .replicas()
            .map(|r| r.new)
            .or(change.hpa_bounds().map(|h| h.min))
            .map_or(Value::Null, Value::from),
        ThresholdPath::ScalingMaxStep => change
            .replicas()
            .and_then(|r| Some(r.new.abs_diff(r.old?)))
            .map_or(Value::Null, Value::from),
        ThresholdPath::TrafficSpikeRatio => figures
            .and_then(|f| f.pointer("/traffic/ratio"))
            .cloned()
            .unwrap_or(Value::Null),
        ThresholdPath::BudgetFreezeBelow | ThresholdPath::BudgetAgentFreezeBelow => figures
            .and_then(|f| f.get("budgetLeft"))
            .cloned()
            .unwrap_or(Value::Null),
        ThresholdPath::SloMinRequestRate => figures
            .and_then(|f| f.pointer("/traffic/current"))
            .cloned()
            .unwrap_or(Value::Null),
        ThresholdPath::AgentsMinConfidence => change
            .annotations
            .after
            .as_ref()
            .and_then(|a| a.get(crate::policy::AgentAnnotation::Confidence.key()))
            .map_or(Value::Null, |c| Value::from(c.as_str())),
        ThresholdPath::ScalingCooldown => Value::Null,
    }
}

fn outcome(finding: Option<&Finding>) -> &'static str {
    match finding.map(|f| f.mode) {
        None => "passed",
        Some(Mode::Enforce) => "denied",
        Some(Mode::Warn) => "warned",
        Some(Mode::Audit) => "audited",
    }
}

fn finding_json(finding: &Finding) -> Value {
    json!({
        "policy": finding.source,
        "rule": finding.rule.as_str(),
        "result": outcome(Some(finding)),
        "message": finding.message(),
        "remedy": finding.remedy,
    })
}

/// Each rule's result: every threshold in force with the value it was held against and
/// whether it stopped the change; then every finding no threshold names (approvals,
/// freezes, annotations...), whose message gives the value seen and the threshold.
pub fn rule_results(change: &Change, decision: &Decision, figures: &[Value]) -> Vec<Value> {
    let mut results = Vec::new();
    let mut covered: Vec<(&str, Rule)> = Vec::new();
    for thresholds in &decision.thresholds {
        let policy_figures = figures
            .iter()
            .find(|f| f.get("policy").and_then(Value::as_str) == Some(thresholds.policy.as_str()));
        let rendered = thresholds.to_json();
        for (path, value) in &thresholds.values {
            let rule = rule_of(*path);
            let finding = decision
                .findings
                .iter()
                .find(|f| f.source == thresholds.policy && f.rule == rule);
            covered.push((thresholds.policy.as_str(), rule));
            let mut entry = json!({
                "policy": thresholds.policy,
                "rule": rule.as_str(),
                "threshold": {"name": path.as_str(), "value": value.to_json()},
                "seen": seen_for(*path, change, policy_figures),
                "result": outcome(finding),
            });
            if let Some(source) = rendered
                .get(path.as_str())
                .and_then(|e| e.get("reflection"))
            {
                entry["threshold"]["reflection"] = source.clone();
            }
            if let Some(finding) = finding {
                entry["message"] = Value::from(finding.message());
                entry["remedy"] = Value::from(finding.remedy.as_str());
            }
            results.push(entry);
        }
    }
    for finding in &decision.findings {
        if !covered.contains(&(finding.source.as_str(), finding.rule)) {
            results.push(finding_json(finding));
        }
    }
    results
}

/// The approval a change needs, with the exact command a person gives it with.
pub fn approval(decision: &Decision) -> Value {
    let needed = decision
        .findings
        .iter()
        .find(|f| f.rule == Rule::Approval && f.mode == Mode::Enforce);
    match needed {
        Some(finding) => json!({
            "required": true,
            "reason": finding.headline,
            // The remedy ends with the command that approves this change and no other.
            "command": finding.remedy.find("kubectl annotate").map(|at| &finding.remedy[at..]),
        }),
        None => json!({"required": false}),
    }
}

/// The cooldown and freeze windows that hold the change, as instants.
pub fn timing(change: &Change, basis: &Basis<'_>, now: DateTime<Utc>) -> (Value, Vec<Value>) {
    let limits = time_limits(&assess(change, basis.policies, now), &basis.observed());
    let cooldown = limits
        .iter()
        .filter_map(|l| {
            l.cooldown
                .map(|(last, ends)| (l.policy.as_str(), last, ends))
        })
        .max_by_key(|(_, _, ends)| *ends)
        .map_or(Value::Null, |(policy, last, ends)| {
            json!({
                "policy": policy,
                "lastAgentChange": stamp(last),
                "endsAt": stamp(ends),
                "active": ends > now,
            })
        });
    let windows = limits
        .iter()
        .flat_map(|l| {
            l.windows.iter().map(move |w| {
                json!({
                    "policy": l.policy,
                    "window": w.window,
                    "inForce": w.ends.is_some(),
                    "closesAt": w.ends.map(stamp),
                    "nextOpensAt": w.next_start.map(stamp),
                })
            })
        })
        .collect();
    (cooldown, windows)
}

/// The whole answer, from the judgements of the intended change and of the replica
/// probes (a scale one down and one up, each judged on its own figures).
pub fn answer(
    intended: &PreflightJudgement,
    current_replicas: Option<u32>,
    up: Option<&PreflightJudgement>,
    down: Option<&PreflightJudgement>,
    subject: &Value,
    now: DateTime<Utc>,
) -> Value {
    let decision = &intended.decision;
    let basis = Basis::of(intended);
    let mut figures = slo_figures(&intended.policies, &intended.observations, now);
    // A scale-up asks Prometheus nothing; the scale-down probe's figures (burn, spike) are
    // the ones that bound the envelope below, so they are shown when the change has none.
    if figures.is_empty()
        && let Some(down) = down
    {
        figures = slo_figures(&down.policies, &down.observations, now);
    }
    let replicas = current_replicas.map_or(Value::Null, |current| {
        let up_basis = up.map(Basis::of);
        let down_basis = down.map(Basis::of);
        let bounds = replica_bounds(
            current,
            up.zip(up_basis.as_ref()).map(|(a, b)| (&a.change, b)),
            down.zip(down_basis.as_ref()).map(|(a, b)| (&a.change, b)),
            now,
        );
        let steps: Vec<Value> = decision
            .thresholds
            .iter()
            .filter_map(|t| {
                t.values
                    .iter()
                    .find(|(path, _)| *path == ThresholdPath::ScalingMaxStep)
                    .map(|(_, value)| json!({"policy": t.policy, "maxStep": value.to_json()}))
            })
            .collect();
        // A bound whose probe needed SLO figures that were not cached is not known: the
        // preflight does not ask Prometheus for them (admission of this change would not).
        let uncached = |probe: Option<&PreflightJudgement>| probe.is_some_and(|a| a.figures_uncached);
        let mut unknown = Vec::new();
        let largest = if uncached(up) {
            unknown.push("largestAllowed");
            Value::Null
        } else {
            json!(bounds.largest)
        };
        let smallest = if uncached(down) {
            unknown.push("smallestAllowed");
            Value::Null
        } else {
            json!(bounds.smallest)
        };
        let mut replicas = json!({
            "current": bounds.current,
            "largestAllowed": largest,
            "smallestAllowed": smallest,
            "step": steps,
            "probedAs": "kubectl scale by the same identity",
        });
        if !unknown.is_empty() {
            replicas["unknown"] = json!(unknown);
            replicas["unknownBecause"] = json!(
                "that scale is judged on SLO figures admission of this change does not ask Prometheus for; ask a preflight of that scale itself"
            );
        }
        replicas
    });
    let (cooldown, windows) = timing(&intended.change, &basis, now);
    let next = next_allowed_time(&intended.change, &basis, decision, now);
    let mut notes = decision.notes.clone();
    if let Some(cause) = &intended.ledger_error {
        notes.push(format!("the change ledger could not be read: {cause}"));
    }
    json!({
        "allowed": decision.allowed(),
        "verdict": crate::verdict::verdict_word(decision),
        "message": crate::verdict::denial_message(decision),
        "workload": decision.target,
        "class": decision.class.as_str(),
        "actor": decision.actor.as_str(),
        "subject": subject,
        "policies": decision.policies,
        "rules": rule_results(&intended.change, decision, &figures),
        "notes": notes,
        "envelope": {
            "replicas": replicas,
            "cooldown": cooldown,
            "windows": windows,
            "slo": figures,
            "approval": approval(decision),
            "thresholds": decision.thresholds.iter().map(|t| (t.policy.clone(), Value::Object(t.to_json()))).collect::<serde_json::Map<_, _>>(),
        },
        "nextAllowedTime": next.map(stamp),
        "evaluatedAt": stamp(now),
        "agent": decision.actor == ActorKind::Agent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{AGENT, PERSON, judge, policy_yaml, scale_by, test_now};

    const CAPS: &str = "match: {kinds: [Deployment]}\n\
                        agents: {users: [\"system:serviceaccount:ai-agents:*\"], requireAnnotations: []}\n\
                        scaling: {minReplicas: 2, maxReplicas: 12, maxStep: 4, cooldown: 5m, appliesTo: agents}\n";

    fn bounds_for(policy: &str, probe: &Change) -> ReplicaBounds {
        let policies = PolicySet::new(vec![policy_yaml(policy)], "slo-guard");
        let observations = Observations::new();
        let basis = Basis {
            policies: &policies,
            observations: &observations,
            ledger: None,
        };
        let current = probe.replicas().and_then(|r| r.old).expect("a scale");
        replica_bounds(
            current,
            Some((probe, &basis)),
            Some((probe, &basis)),
            test_now(),
        )
    }

    #[test]
    fn replica_bounds_are_where_the_core_starts_refusing() {
        let agent = bounds_for(CAPS, &scale_by(AGENT, Some(5), 6));
        assert_eq!(
            agent,
            ReplicaBounds {
                current: 5,
                largest: Some(9),
                smallest: 2
            },
            "the step binds above, the floor below"
        );
        let near_the_cap = bounds_for(CAPS, &scale_by(AGENT, Some(11), 12));
        assert_eq!(near_the_cap.largest, Some(12));
        assert_eq!(near_the_cap.smallest, 7);
        // Caps for agents only: a person's scale has no bound up to the ceiling.
        let person = bounds_for(CAPS, &scale_by(PERSON, Some(5), 6));
        assert_eq!(person.largest, None);
        assert_eq!(person.smallest, 0);
    }

    #[test]
    fn rule_results_give_the_value_seen_and_the_threshold() {
        let change = scale_by(AGENT, Some(5), 15);
        let decision = judge(CAPS, &change);
        let results = rule_results(&change, &decision, &[]);
        let result = |rule: &str| {
            results
                .iter()
                .find(|r| r["rule"] == rule)
                .unwrap_or_else(|| panic!("no {rule} in {results:#?}"))
                .clone()
        };
        assert_eq!(result("max-replicas")["seen"], 15);
        assert_eq!(result("max-replicas")["threshold"]["value"], 12);
        assert_eq!(result("max-replicas")["result"], "denied");
        assert!(result("max-replicas")["message"].is_string());
        assert_eq!(result("max-step")["seen"], 10);
        assert_eq!(result("max-step")["result"], "denied");
        assert_eq!(result("min-replicas")["result"], "passed");
        assert_eq!(result("cooldown")["result"], "passed");
    }

    fn cooling_down(new: u32) -> (Change, PolicySet) {
        let mut change = scale_by(AGENT, Some(5), new);
        change.annotations.after.get_or_insert_default().insert(
            crate::annotations::LAST_AGENT_CHANGE.to_string(),
            "2026-11-18T09:58:00Z".to_string(),
        );
        (change, PolicySet::new(vec![policy_yaml(CAPS)], "slo-guard"))
    }

    #[test]
    fn time_alone_lets_a_change_through_when_the_cooldown_ends() {
        let observations = Observations::new();
        let (change, policies) = cooling_down(6);
        let basis = Basis {
            policies: &policies,
            observations: &observations,
            ledger: None,
        };
        let decision = basis.decide(&change, test_now());
        assert!(!decision.allowed(), "{:?}", decision.findings);
        assert_eq!(
            next_allowed_time(&change, &basis, &decision, test_now()).map(stamp),
            Some("2026-11-18T10:03:00Z".to_string())
        );
        let (cooldown, windows) = timing(&change, &basis, test_now());
        assert_eq!(cooldown["endsAt"], "2026-11-18T10:03:00Z");
        assert_eq!(cooldown["active"], true);
        assert!(windows.is_empty());
        // Past the cap as well: waiting does not help.
        let (past_cap, _) = cooling_down(15);
        let decision = basis.decide(&past_cap, test_now());
        assert_eq!(
            next_allowed_time(&past_cap, &basis, &decision, test_now()),
            None
        );
    }

    #[test]
    fn an_approval_finding_gives_its_command() {
        let mut decision = judge(CAPS, &scale_by(AGENT, Some(5), 6));
        assert_eq!(approval(&decision), json!({"required": false}));
        decision.findings.push(Finding {
            source: "payments/checkout".into(),
            rule: Rule::Approval,
            mode: Mode::Enforce,
            headline: "rollout needs a person's approval".into(),
            remedy: "Ask an SRE to approve this change and no other: kubectl annotate deployment/checkout -n payments slo-guard.io/approve=d-1@ab --overwrite".into(),
            brief: String::new(),
        });
        let needed = approval(&decision);
        assert_eq!(needed["required"], true);
        assert_eq!(
            needed["command"],
            "kubectl annotate deployment/checkout -n payments slo-guard.io/approve=d-1@ab --overwrite"
        );
    }

    #[test]
    fn the_largest_allowed_count_is_found_in_few_probes() {
        let probes = std::cell::Cell::new(0);
        let cap = |n: u32| {
            probes.set(probes.get() + 1);
            n <= 20
        };
        assert_eq!(largest_allowed(3, REPLICA_CEILING, cap), Some(20));
        assert!(probes.get() <= 12, "{} probes", probes.get());
        assert_eq!(largest_allowed(20, REPLICA_CEILING, |n| n <= 20), None);
        assert_eq!(
            largest_allowed(5, REPLICA_CEILING, |_| true),
            Some(REPLICA_CEILING)
        );
        assert_eq!(
            largest_allowed(REPLICA_CEILING, REPLICA_CEILING, |_| true),
            None
        );
        for cap in 4..40 {
            assert_eq!(largest_allowed(3, REPLICA_CEILING, |n| n <= cap), Some(cap));
        }
    }

    #[test]
    fn the_smallest_allowed_count_is_found_going_down() {
        for floor in 0..10 {
            assert_eq!(smallest_allowed(10, |n| n >= floor), Some(floor));
        }
        assert_eq!(smallest_allowed(10, |n| n >= 10), None);
        assert_eq!(smallest_allowed(0, |_| true), None);
        assert_eq!(smallest_allowed(1000, |_| true), Some(0));
    }
}
