//! The SLO gate: no rollout while the error budget is spent or burning fast, no rollout
//! or scale-down during a traffic spike, and the policy's choice when there is no traffic
//! or no data. Pure: the figures arrive as an [`Observation`] gathered by the guard.

use chrono::{DateTime, Utc};

use super::{Finding, Rule, RuleInput};
use crate::admission::{ActorKind, Change, ChangeClass, ReplicaChange};
use crate::policy::{OnError, PolicySpec};
use crate::slo::figures::{
    Missing, RatioOrigin, budget_left, burn_rate, number, percent, ratio_origin, threshold_percent,
    traffic_ratio,
};
use crate::slo::{GateScope, Observation, QueryRole, Reading, Readings, request_rate_window};

/// Whether `change` goes through the SLO gate of `spec`, and how far. Pure; the guard
/// learns it through the assessment ([`super::figures_needed`]) and gathers figures only
/// where needed.
pub(super) fn gate(change: &Change, spec: &PolicySpec, actor: ActorKind) -> Option<GateScope> {
    if spec.slo.is_none() && spec.traffic.is_none() {
        return None;
    }
    // Controllers (the HPA above all) are the automation that answers a spike, and they
    // do not roll out; holding them back would only deepen an incident.
    if actor == ActorKind::Controller {
        return None;
    }
    match change.class {
        ChangeClass::Rollout => Some(GateScope::Full),
        ChangeClass::Create if spec.slo.as_ref().is_some_and(|slo| slo.gate_create) => {
            Some(GateScope::Full)
        }
        ChangeClass::Scale => match change.replicas() {
            // A scale-up never waits for the SLO: it is what a spike needs.
            Some(ReplicaChange {
                old: Some(old),
                new,
            }) if new >= old => None,
            // A scale-down, or one whose direction cannot be told.
            _ => Some(GateScope::ScaleDown),
        },
        _ => None,
    }
}

/// What the SLO gate found for one policy.
#[derive(Debug, Default)]
pub(super) struct SloOutcome {
    pub findings: Vec<Finding>,
    /// Allowed-anyway facts a reader should see (no data, no traffic, gate off).
    pub notes: Vec<String>,
    /// The figures seen, for logs: "budget 80.0% (30d); burn 1h 0.2, 5m 0.2; ...".
    pub figures: Option<String>,
}

/// Judges the change against the SLO gate of `input`'s policy, which it goes through
/// as far as `gate` says (from the assessment), on the figures in `observation`.
pub(super) fn check(
    input: &RuleInput<'_>,
    gate: Option<GateScope>,
    observation: Option<&Observation>,
    now: DateTime<Utc>,
) -> SloOutcome {
    let mut outcome = SloOutcome::default();
    let spec = &input.policy.spec;
    let Some(scope) = gate else {
        return outcome;
    };
    let policy = &input.policy.id;
    if let Some(source) = spec
        .slo
        .as_ref()
        .filter(|slo| slo.awaits_source())
        .and_then(|slo| slo.source.as_ref())
    {
        on_error(
            input,
            &mut outcome,
            &format!(
                "slo.source {} {} is not resolved, so there is no objective to judge by",
                source.kind, source.name
            ),
        );
        return outcome;
    }
    let readings = match observation {
        Some(Observation::Readings(readings)) => readings,
        Some(Observation::NotConfigured) => {
            outcome.notes.push(format!(
                "SLO gate off (no --prometheus-url): slo/traffic of {policy} not checked"
            ));
            return outcome;
        }
        Some(Observation::Unavailable(cause)) => {
            on_error(input, &mut outcome, cause);
            return outcome;
        }
        None => {
            on_error(input, &mut outcome, "the SLO figures were not gathered");
            return outcome;
        }
    };

    if let Some(cause) = staleness(spec, readings, now) {
        on_error(input, &mut outcome, &cause);
        return outcome;
    }

    if let Some((rate, min)) = below_min_rate(spec, readings) {
        no_traffic(input, &mut outcome, rate, min);
        return outcome;
    }

    let mut missing: Vec<Missing> = Vec::new();
    let mut figures: Vec<String> = Vec::new();
    let scale_down = describe_scale_down(input.change, scope);

    if let Some(slo) = &spec.slo {
        let mut objective = format!("SLO {}% over {}", slo.objective, slo.period);
        if let Some(resolved) = &slo.resolved {
            let mut windows: Vec<&str> = Vec::new();
            if scope == GateScope::Full {
                windows.push(slo.period.as_str());
            }
            for row in &slo.burn_rate {
                windows.extend([row.long.as_str(), row.short.as_str()]);
            }
            let mut seen = Vec::new();
            windows.retain(|w| {
                let new = !seen.contains(w);
                seen.push(*w);
                new
            });
            let (sources, absent) = figure_sources(resolved, readings, &windows);
            objective = format!("{objective} from {}; {sources}", resolved.origin);
            figures.push(sources);
            if !absent.is_empty()
                && let Some(rules) = &resolved.recorded
            {
                outcome.notes.push(format!(
                    "{}: {} recording rules absent ({}): figures from the spec's queries",
                    input.policy.id,
                    rules.tool.as_str(),
                    absent.join(", ")
                ));
            }
        }
        if scope == GateScope::Full {
            match budget_left(readings, slo.period.as_str(), slo.objective) {
                Ok(left) => {
                    figures.push(format!("budget {} ({})", percent(left), slo.period));
                    budget_finding(input, &mut outcome, left, &objective, now);
                }
                Err(m) => missing.push(m),
            }
        }
        let mut firing = Vec::new();
        let mut briefs = Vec::new();
        let mut burns = Vec::new();
        for row in &slo.burn_rate {
            let (long, short) = (row.long.as_str(), row.short.as_str());
            let long_burn = burn_rate(readings, long, slo.objective);
            let short_burn = burn_rate(readings, short, slo.objective);
            for (window, burn) in [(long, &long_burn), (short, &short_burn)] {
                if let Ok(value) = burn {
                    burns.push(format!("{window} {}", number(*value)));
                }
            }
            let factor = row.factor;
            match (long_burn, short_burn) {
                (Ok(l), Ok(s)) if l > factor && s > factor => {
                    firing.push(format!(
                        "{}x over {long} and {}x over {short}, both above {}",
                        number(l),
                        number(s),
                        number(factor)
                    ));
                    briefs.push(format!(
                        "{}x/{long} {}x/{short} > {}",
                        number(l),
                        number(s),
                        number(factor)
                    ));
                }
                (Ok(_), Ok(_)) => {}
                // One window known to be at or under the factor: the row cannot fire,
                // whatever the other window would say.
                (Ok(l), Err(_)) if l <= factor => {}
                (Err(_), Ok(s)) if s <= factor => {}
                (Err(m), Ok(_)) | (Ok(_), Err(m)) => missing.push(m),
                (Err(a), Err(b)) => {
                    missing.push(a);
                    missing.push(b);
                }
            }
        }
        if !burns.is_empty() {
            figures.push(format!("burn {}", burns.join(", ")));
        }
        let agent_approved =
            input.actor == ActorKind::Agent && super::governance::approved(input, now);
        if !firing.is_empty() && agent_approved {
            outcome.notes.push(format!(
                "fast burn ({}) passed for an agent change a person approved",
                briefs.join("; ")
            ));
        } else if !firing.is_empty() {
            let prefix = scale_down
                .as_ref()
                .map(|s| format!("{s} while "))
                .unwrap_or_default();
            outcome.findings.push(input.finding(
                Rule::BurnRate,
                format!(
                    "{prefix}the error budget burns fast: {} ({objective})",
                    firing.join("; ")
                ),
                if input.actor == ActorKind::Agent {
                    format!(
                        "{}, or wait until the burn rate is at most the factor in either window",
                        approve_remedy(input)
                    )
                } else {
                    "Wait until the burn rate is at most the factor in either window".to_string()
                },
                format!("burn {}", briefs.join("; ")),
            ));
        }
    }

    if let Some(traffic) = &spec.traffic {
        match traffic_ratio(readings) {
            Ok((current, baseline, ratio)) => {
                figures.push(format!(
                    "traffic {}/{} req/s ({}x)",
                    number(current),
                    number(baseline),
                    number(ratio)
                ));
                if ratio >= traffic.spike_ratio {
                    let spike = format!(
                        "traffic spike: {} req/s, {}x the baseline of {} req/s, at or above the spike ratio {}",
                        number(current),
                        number(ratio),
                        number(baseline),
                        number(traffic.spike_ratio)
                    );
                    let observation = match &scale_down {
                        Some(s) => format!("{s} during a {spike}"),
                        None => spike,
                    };
                    let calm = number(traffic.spike_ratio * baseline);
                    let remedy = if scale_down.is_some() {
                        format!(
                            "Keep the replicas until traffic is below {calm} req/s; scaling up is allowed"
                        )
                    } else {
                        format!(
                            "Wait until traffic is below {calm} req/s ({}x the baseline); scaling up is allowed meanwhile",
                            number(traffic.spike_ratio)
                        )
                    };
                    outcome.findings.push(input.finding(
                        Rule::TrafficSpike,
                        observation,
                        remedy,
                        format!(
                            "traffic {}x baseline >= {} ({}/{} req/s)",
                            number(ratio),
                            number(traffic.spike_ratio),
                            number(current),
                            number(baseline)
                        ),
                    ));
                }
            }
            Err(m) => missing.push(m),
        }
    }

    if !figures.is_empty() {
        outcome.figures = Some(figures.join("; "));
    }
    if !missing.is_empty() {
        let causes: Vec<String> = missing.into_iter().map(|m| m.0).collect();
        on_error(
            input,
            &mut outcome,
            &format!("no data: {}", causes.join("; ")),
        );
    }
    outcome
}

/// Where each window's figure came from, for a policy whose SLO is a tool's spec:
/// "figures: 30d from slo:sli_error:ratio_rate30d (…), 1h from the spec's queries
/// (slo:sli_error:ratio_rate1h absent)"; and the windows whose rules were absent.
fn figure_sources(
    resolved: &crate::policy::ResolvedSource,
    readings: &Readings,
    windows: &[&str],
) -> (String, Vec<String>) {
    // (windows, where from): windows with the same source are listed together.
    let mut parts: Vec<(Vec<&str>, String)> = Vec::new();
    let mut absent = Vec::new();
    for window in windows {
        let rule = resolved.recorded.as_ref().and_then(|rules| {
            let duration = crate::policy::PromDuration::parse(window).ok()?;
            rules.window(duration.duration())
        });
        let source = match (ratio_origin(readings, window), rule) {
            (RatioOrigin::Recorded, Some(rule)) => match rule.caveat {
                Some(caveat) => format!("{} ({caveat})", rule.rule),
                None => rule.rule.clone(),
            },
            (RatioOrigin::QueriesRuleAbsent, Some(rule)) => {
                absent.push(window.to_string());
                format!("the spec's queries ({} absent)", rule.rule)
            }
            _ => "the spec's queries".to_string(),
        };
        match parts.iter_mut().find(|(_, from)| *from == source) {
            Some((listed, _)) => listed.push(window),
            None => parts.push((vec![window], source)),
        }
    }
    let parts: Vec<String> = parts
        .into_iter()
        .map(|(windows, from)| format!("{} from {from}", windows.join("/")))
        .collect();
    (format!("figures: {}", parts.join(", ")), absent)
}

/// "scale-down from 10 to 8 replicas", for scale-downs.
fn describe_scale_down(change: &Change, scope: GateScope) -> Option<String> {
    if scope != GateScope::ScaleDown {
        return None;
    }
    Some(match change.replicas() {
        Some(ReplicaChange {
            old: Some(old),
            new,
        }) => format!("scale-down from {old} to {new} replicas"),
        Some(ReplicaChange { old: None, new }) => {
            format!("scale to {new} replicas (from an unknown count, so possibly down)")
        }
        None => "scale of unknown size".to_string(),
    })
}

fn budget_finding(
    input: &RuleInput<'_>,
    outcome: &mut SloOutcome,
    left: f64,
    objective: &str,
    now: DateTime<Utc>,
) {
    let Some(slo) = &input.policy.spec.slo else {
        return;
    };
    let everyone = slo.budget.freeze_below;
    let (floor, who, remedy) = if left <= everyone {
        (
            everyone,
            "all changes",
            format!(
                "Wait for the error budget to recover above {}",
                threshold_percent(everyone)
            ),
        )
    } else {
        match slo.budget.agent_freeze_below {
            Some(agents)
                if input.actor == ActorKind::Agent
                    && left <= agents
                    && !super::governance::approved(input, now) =>
            {
                (
                    agents,
                    "agent changes",
                    format!(
                        "{} or wait for the budget to recover above {}",
                        approve_remedy(input),
                        threshold_percent(agents)
                    ),
                )
            }
            _ => return,
        }
    };
    // Within rounding of the floor reads "at", so no message says "25.0% left, below the 25% floor".
    let relation = if left < floor - 1e-9 { "below" } else { "at" };
    outcome.findings.push(input.finding(
        Rule::ErrorBudget,
        format!(
            "error budget {} left, {relation} the {} floor for {who} ({objective})",
            percent(left),
            threshold_percent(floor)
        ),
        remedy,
        format!(
            "budget {} <= floor {} for {who}",
            percent(left),
            threshold_percent(floor)
        ),
    ));
}

/// "Ask an SRE to approve decision 7f3a… (kubectl annotate …)", naming the agent's
/// decision when it has one, and the command that approves this change and no other.
fn approve_remedy(input: &RuleInput<'_>) -> String {
    match input
        .agent_context
        .decision_id
        .filter(|id| !id.trim().is_empty())
    {
        Some(id) => format!(
            "Ask an SRE to approve decision {id} ({})",
            super::governance::approve_command(input, id)
        ),
        None => "Ask an SRE to approve the change".to_string(),
    }
}

/// Why the data is too old to judge by, if it is. Without a freshness reading (no
/// plain selector to probe, or a canned source without the probe), it is not checked.
pub(super) fn staleness(
    spec: &PolicySpec,
    readings: &Readings,
    now: DateTime<Utc>,
) -> Option<String> {
    let max = spec.prometheus.max_staleness.duration();
    match readings.get(&QueryRole::Freshness)? {
        Reading::Value(newest) => {
            let age = now.timestamp_millis() as f64 / 1000.0 - newest;
            // A sample from the future (clock skew) is not stale.
            (age > max.as_secs_f64()).then(|| {
                format!(
                    "stale data: the newest sample is {} old, above prometheus.maxStaleness {}",
                    humantime::format_duration(std::time::Duration::from_secs(age as u64)),
                    spec.prometheus.max_staleness
                )
            })
        }
        Reading::NoData(_) => {
            Some("stale data: no sample of the SLO's series in Prometheus's last 5 minutes".into())
        }
    }
}

/// The request rate and the floor, when the rate is known and below `minRequestRate`.
fn below_min_rate(spec: &PolicySpec, readings: &Readings) -> Option<(f64, f64)> {
    let min = spec.slo.as_ref()?.min_request_rate?;
    let role = if spec.traffic.is_some() {
        QueryRole::Current
    } else {
        QueryRole::Total(request_rate_window(spec).to_string())
    };
    let rate = readings.get(&role)?.value()?;
    (rate < min).then_some((rate, min))
}

fn no_traffic(input: &RuleInput<'_>, outcome: &mut SloOutcome, rate: f64, min: f64) {
    let Some(slo) = &input.policy.spec.slo else {
        return;
    };
    let policy = &input.policy.id;
    let setting = slo.on_no_traffic;
    if denies(setting, input.actor) {
        outcome.findings.push(input.finding(
            Rule::NoTraffic,
            format!(
                "no traffic: {} req/s, below slo.minRequestRate {} req/s, and slo.onNoTraffic is {}",
                number(rate),
                number(min),
                on_error_name(setting)
            ),
            format!(
                "Retry when the service has traffic, or ask a platform engineer to set slo.onNoTraffic: allow in policy {policy}"
            ),
            format!(
                "no traffic ({} < {} req/s), onNoTraffic: {}",
                number(rate),
                number(min),
                on_error_name(setting)
            ),
        ));
    } else {
        outcome.notes.push(format!(
            "{policy}: no traffic ({} < {} req/s), SLO checks skipped (onNoTraffic: {})",
            number(rate),
            number(min),
            on_error_name(setting)
        ));
    }
}

/// Applies `prometheus.onError` to a cause: a `slo-data` finding when it denies, a note
/// naming the cause when it allows.
fn on_error(input: &RuleInput<'_>, outcome: &mut SloOutcome, cause: &str) {
    let setting = input.policy.spec.prometheus.on_error;
    let policy = &input.policy.id;
    if denies(setting, input.actor) {
        outcome.findings.push(input.finding(
            Rule::SloData,
            format!(
                "SLO figures unavailable ({cause}), and prometheus.onError is {}",
                on_error_name(setting)
            ),
            "Retry once Prometheus answers with current data, or ask a platform engineer to check slo-guard's Prometheus connection".to_string(),
            format!("no SLO data: {cause}"),
        ));
    } else {
        outcome.notes.push(format!(
            "{policy} allowed without SLO data (onError: {}): {cause}",
            on_error_name(setting)
        ));
    }
}

fn denies(setting: OnError, actor: ActorKind) -> bool {
    match setting {
        OnError::Allow => false,
        OnError::Deny => true,
        OnError::DenyAgents => actor == ActorKind::Agent,
    }
}

fn on_error_name(setting: OnError) -> &'static str {
    match setting {
        OnError::Allow => "allow",
        OnError::Deny => "deny",
        OnError::DenyAgents => "deny-agents",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Mode;
    use crate::rules::testing::*;
    use crate::rules::{Decision, Rule};
    use crate::slo::{NoData, Observations};
    use crate::verdict;

    const POLICY: &str = r#"match: {kinds: [Deployment]}
agents: {users: ["system:serviceaccount:ai-agents:*"], requireAnnotations: []}
slo:
  objective: 99.9
  period: 30d
  errors: 'sum(rate(e[{{window}}]))'
  total: 'sum(rate(t[{{window}}]))'
  minRequestRate: 1
  budget: {freezeBelow: 0.0, agentFreezeBelow: 0.25}
  burnRate:
    - {long: 1h, short: 5m, factor: 14.4}
    - {long: 6h, short: 30m, factor: 6}
traffic: {current: 'sum(rate(t[5m]))', baseline: 'sum(rate(t[5m] offset 1w))', spikeRatio: 2}
prometheus: {onError: deny-agents, timeout: 2s, maxStaleness: 2m}
"#;

    /// Readings as Prometheus would give them: 10 req/s everywhere, errors set so the
    /// figures come out as asked, and a sample 15 s old.
    struct Figures {
        budget: f64,
        burns: [(&'static str, f64); 4],
        current: f64,
        baseline: f64,
    }

    const HEALTHY: Figures = Figures {
        budget: 0.8,
        burns: [("5m", 0.2), ("30m", 0.2), ("1h", 0.2), ("6h", 0.2)],
        current: 10.0,
        baseline: 10.0,
    };

    impl Figures {
        fn readings(&self) -> Readings {
            let mut readings = Readings::new();
            let mut window = |w: &str, burn: f64| {
                readings.insert(
                    QueryRole::Errors(w.into()),
                    Reading::Value(burn * 0.001 * 10.0),
                );
                readings.insert(QueryRole::Total(w.into()), Reading::Value(10.0));
            };
            window("30d", 1.0 - self.budget);
            for (w, burn) in self.burns {
                window(w, burn);
            }
            readings.insert(QueryRole::Current, Reading::Value(self.current));
            readings.insert(QueryRole::Baseline, Reading::Value(self.baseline));
            readings.insert(
                QueryRole::Freshness,
                Reading::Value(test_now().timestamp() as f64 - 15.0),
            );
            readings
        }
    }

    fn observed(observation: Observation) -> Observations {
        let mut observations = Observations::new();
        observations.insert(checkout_ref(), observation);
        observations
    }

    fn judge_figures(policy: &str, change: &Change, figures: &Figures) -> Decision {
        judge_with(
            policy,
            change,
            &observed(Observation::Readings(figures.readings())),
        )
    }

    fn agent_rollout() -> Change {
        rollout_by(AGENT).with_annotations(&full_context())
    }

    fn rules(decision: &Decision) -> Vec<Rule> {
        decision.findings.iter().map(|f| f.rule).collect()
    }

    #[test]
    fn a_healthy_service_lets_rollouts_through_and_records_the_figures() {
        let decision = judge_figures(POLICY, &agent_rollout(), &HEALTHY);
        assert!(decision.findings.is_empty(), "{:#?}", decision.findings);
        assert!(decision.notes.is_empty(), "{:?}", decision.notes);
        assert_eq!(
            decision.figures,
            vec![
                "payments/checkout: budget 80.0% (30d); burn 1h 0.2, 5m 0.2, 6h 0.2, 30m 0.2; traffic 10/10 req/s (1x)"
            ]
        );
    }

    #[test]
    fn a_persons_approval_lifts_the_agent_floor_but_not_the_floor_for_everyone() {
        let mut approved = agent_rollout();
        approved.annotations.before = [
            (
                "slo-guard.io/approve",
                format!(
                    "7f3a9c2e-1b4d-4e8a-9c6f-2d1e0b7a5c3f@{}",
                    approved.content_digest()
                )
                .as_str(),
            ),
            ("slo-guard.io/approved-by", "alice@example.com"),
            ("slo-guard.io/approved-at", "2026-11-18T09:50:00Z"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        approved
            .annotations
            .after
            .as_mut()
            .unwrap()
            .extend(approved.annotations.before.clone());
        let low = Figures {
            budget: 0.042,
            ..HEALTHY
        };
        assert!(judge_figures(POLICY, &approved, &low).findings.is_empty());
        let spent = Figures {
            budget: -0.05,
            ..HEALTHY
        };
        let decision = judge_figures(POLICY, &approved, &spent);
        assert!(
            only_finding(&decision, Rule::ErrorBudget)
                .headline
                .contains("floor for all changes")
        );
    }

    #[test]
    fn a_low_budget_stops_agents_first_then_everyone() {
        let low = Figures {
            budget: 0.042,
            ..HEALTHY
        };
        let decision = judge_figures(POLICY, &agent_rollout(), &low);
        assert_eq!(
            only_finding(&decision, Rule::ErrorBudget).message(),
            format!(
                "[payments/checkout:error-budget] rollout of Deployment payments/checkout blocked: error budget 4.2% left, below the 25% floor for agent changes (SLO 99.9% over 30d). Ask an SRE to approve decision 7f3a9c2e-1b4d-4e8a-9c6f-2d1e0b7a5c3f (kubectl annotate deployment/checkout -n payments slo-guard.io/approve=7f3a9c2e-1b4d-4e8a-9c6f-2d1e0b7a5c3f@{} --overwrite) or wait for the budget to recover above 25%.",
                agent_rollout().content_digest()
            )
        );
        assert!(!decision.allowed());
        // People keep the budget down to freezeBelow.
        assert!(
            judge_figures(POLICY, &rollout_by(PERSON), &low)
                .findings
                .is_empty()
        );
        let spent = Figures {
            budget: -0.05,
            ..HEALTHY
        };
        let decision = judge_figures(POLICY, &rollout_by(PERSON), &spent);
        assert_eq!(
            only_finding(&decision, Rule::ErrorBudget).message(),
            "[payments/checkout:error-budget] rollout of Deployment payments/checkout blocked: error budget -5.0% left, below the 0% floor for all changes (SLO 99.9% over 30d). Wait for the error budget to recover above 0%."
        );
        let at_floor = Figures {
            budget: 0.25,
            ..HEALTHY
        };
        let decision = judge_figures(POLICY, &agent_rollout(), &at_floor);
        assert!(
            only_finding(&decision, Rule::ErrorBudget)
                .headline
                .contains("error budget 25.0% left, at the 25% floor"),
        );
    }

    #[test]
    fn a_burn_row_fires_only_when_both_windows_exceed_the_factor() {
        let short_only = Figures {
            burns: [("5m", 30.0), ("30m", 8.15), ("1h", 4.17), ("6h", 0.86)],
            ..HEALTHY
        };
        let decision = judge_figures(POLICY, &rollout_by(PERSON), &short_only);
        assert!(decision.findings.is_empty(), "{:#?}", decision.findings);

        let both = Figures {
            burns: [("5m", 25.0), ("30m", 25.0), ("1h", 25.0), ("6h", 8.47)],
            ..HEALTHY
        };
        let decision = judge_figures(POLICY, &rollout_by(PERSON), &both);
        assert_eq!(
            only_finding(&decision, Rule::BurnRate).message(),
            "[payments/checkout:burn-rate] rollout of Deployment payments/checkout blocked: the error budget burns fast: 25x over 1h and 25x over 5m, both above 14.4; 8.47x over 6h and 25x over 30m, both above 6 (SLO 99.9% over 30d). Wait until the burn rate is at most the factor in either window."
        );
    }

    #[test]
    fn a_spike_blocks_rollouts_and_scale_downs_but_never_scale_ups() {
        let spike = Figures {
            current: 30.0,
            baseline: 10.0,
            ..HEALTHY
        };
        let decision = judge_figures(POLICY, &rollout_by(PERSON), &spike);
        assert_eq!(
            only_finding(&decision, Rule::TrafficSpike).message(),
            "[payments/checkout:traffic-spike] rollout of Deployment payments/checkout blocked: traffic spike: 30 req/s, 3x the baseline of 10 req/s, at or above the spike ratio 2. Wait until traffic is below 20 req/s (2x the baseline); scaling up is allowed meanwhile."
        );
        let up = judge_figures(
            POLICY,
            &scale_by(AGENT, Some(5), 8).with_annotations(&scale_context()),
            &spike,
        );
        assert!(up.findings.is_empty(), "{:#?}", up.findings);
        assert!(up.figures.is_empty(), "a scale-up asks for no figures");
        let down = judge_figures(POLICY, &scale_by(PERSON, Some(10), 8), &spike);
        assert_eq!(
            only_finding(&down, Rule::TrafficSpike).message(),
            "[payments/checkout:traffic-spike] scale of Deployment payments/checkout blocked: scale-down from 10 to 8 replicas during a traffic spike: 30 req/s, 3x the baseline of 10 req/s, at or above the spike ratio 2. Keep the replicas until traffic is below 20 req/s; scaling up is allowed."
        );
        // The HPA controller is never held back by the SLO gate.
        let hpa = judge_figures(POLICY, &scale_by(HPA_CONTROLLER, Some(10), 8), &spike);
        assert!(hpa.findings.is_empty());
    }

    #[test]
    fn a_scale_down_is_held_during_a_fast_burn_but_not_for_a_low_budget() {
        let burning = Figures {
            budget: -0.5,
            burns: [("5m", 25.0), ("30m", 25.0), ("1h", 25.0), ("6h", 8.47)],
            ..HEALTHY
        };
        let down = judge_figures(POLICY, &scale_by(PERSON, Some(10), 8), &burning);
        let finding = only_finding(&down, Rule::BurnRate);
        assert!(
            finding
                .headline
                .contains("scale-down from 10 to 8 replicas while the error budget burns fast"),
            "{}",
            finding.headline
        );
    }

    #[test]
    fn no_traffic_applies_the_policys_choice() {
        let quiet = Figures {
            current: 0.01,
            baseline: 0.01,
            ..HEALTHY
        };
        let decision = judge_figures(POLICY, &agent_rollout(), &quiet);
        assert!(decision.findings.is_empty());
        assert_eq!(
            decision.notes,
            vec![
                "payments/checkout: no traffic (0.01 < 1 req/s), SLO checks skipped (onNoTraffic: allow)"
            ]
        );
        let strict = POLICY.replace(
            "minRequestRate: 1",
            "minRequestRate: 1\n  onNoTraffic: deny",
        );
        let decision = judge_figures(&strict, &rollout_by(PERSON), &quiet);
        assert_eq!(
            only_finding(&decision, Rule::NoTraffic).message(),
            "[payments/checkout:no-traffic] rollout of Deployment payments/checkout blocked: no traffic: 0.01 req/s, below slo.minRequestRate 1 req/s, and slo.onNoTraffic is deny. Retry when the service has traffic, or ask a platform engineer to set slo.onNoTraffic: allow in policy payments/checkout."
        );
    }

    #[test]
    fn unavailable_data_follows_on_error() {
        let down = observed(Observation::Unavailable(
            "connection refused by http://127.0.0.1:9".into(),
        ));
        let decision = judge_with(POLICY, &agent_rollout(), &down);
        assert_eq!(
            only_finding(&decision, Rule::SloData).message(),
            "[payments/checkout:slo-data] rollout of Deployment payments/checkout blocked: SLO figures unavailable (connection refused by http://127.0.0.1:9), and prometheus.onError is deny-agents. Retry once Prometheus answers with current data, or ask a platform engineer to check slo-guard's Prometheus connection."
        );
        // deny-agents lets people through, with the cause in a warning.
        let decision = judge_with(POLICY, &rollout_by(PERSON), &down);
        assert!(decision.allowed() && decision.findings.is_empty());
        let warnings = verdict::warnings(&decision);
        assert_eq!(
            warnings,
            vec![
                "slo-guard: payments/checkout allowed without SLO data (onError: deny-agents): connection refused by http://127.0.0.1:9"
            ]
        );
        assert!(warnings[0].chars().count() <= verdict::MAX_WARNING_CHARS);
        let deny = POLICY.replace("onError: deny-agents", "onError: deny");
        assert_eq!(
            rules(&judge_with(&deny, &rollout_by(PERSON), &down)),
            vec![Rule::SloData]
        );
        let allow = POLICY.replace("onError: deny-agents", "onError: allow");
        let decision = judge_with(&allow, &agent_rollout(), &down);
        assert!(decision.findings.is_empty());
        assert_eq!(decision.notes.len(), 1);
    }

    #[test]
    fn nan_and_empty_answers_are_no_data_never_zero() {
        let mut readings = HEALTHY.readings();
        readings.insert(
            QueryRole::Errors("30d".into()),
            Reading::NoData(NoData::NaN),
        );
        readings.insert(QueryRole::Baseline, Reading::NoData(NoData::Empty));
        let decision = judge_with(
            POLICY,
            &agent_rollout(),
            &observed(Observation::Readings(readings)),
        );
        assert_eq!(
            only_finding(&decision, Rule::SloData).headline,
            "rollout of Deployment payments/checkout blocked: SLO figures unavailable (no data: errors over 30d: NaN; baseline traffic: no series), and prometheus.onError is deny-agents"
        );
    }

    #[test]
    fn a_burn_row_that_cannot_fire_needs_no_second_window() {
        let mut readings = HEALTHY.readings();
        readings.insert(
            QueryRole::Errors("5m".into()),
            Reading::NoData(NoData::Empty),
        );
        let decision = judge_with(
            &POLICY.replace("onError: deny-agents", "onError: deny"),
            &rollout_by(PERSON),
            &observed(Observation::Readings(readings)),
        );
        assert!(decision.findings.is_empty(), "{:#?}", decision.findings);
    }

    #[test]
    fn stale_data_is_no_data() {
        let mut readings = HEALTHY.readings();
        readings.insert(
            QueryRole::Freshness,
            Reading::Value(test_now().timestamp() as f64 - 600.0),
        );
        let decision = judge_with(
            POLICY,
            &agent_rollout(),
            &observed(Observation::Readings(readings.clone())),
        );
        assert!(
            only_finding(&decision, Rule::SloData).headline.contains(
                "stale data: the newest sample is 10m old, above prometheus.maxStaleness 2m"
            ),
            "{:?}",
            decision.findings
        );
        readings.insert(QueryRole::Freshness, Reading::NoData(NoData::Empty));
        let decision = judge_with(
            POLICY,
            &agent_rollout(),
            &observed(Observation::Readings(readings)),
        );
        assert!(
            only_finding(&decision, Rule::SloData)
                .headline
                .contains("no sample of the SLO's series")
        );
    }

    #[test]
    fn creates_are_gated_only_when_the_policy_says_so() {
        let spent = Figures {
            budget: -0.05,
            ..HEALTHY
        };
        assert!(
            judge_figures(POLICY, &create_by(PERSON, 3), &spent)
                .findings
                .is_empty()
        );
        let gated = POLICY.replace("minRequestRate: 1", "minRequestRate: 1\n  gateCreate: true");
        assert_eq!(
            rules(&judge_figures(&gated, &create_by(PERSON, 3), &spent)),
            vec![Rule::ErrorBudget]
        );
    }

    #[test]
    fn without_prometheus_the_gate_is_off_and_says_so() {
        let decision = judge_with(
            POLICY,
            &agent_rollout(),
            &observed(Observation::NotConfigured),
        );
        assert!(decision.findings.is_empty());
        assert_eq!(
            decision.notes,
            vec![
                "SLO gate off (no --prometheus-url): slo/traffic of payments/checkout not checked"
            ]
        );
    }

    #[test]
    fn warn_mode_turns_slo_denials_into_warnings() {
        let spike = Figures {
            current: 30.0,
            baseline: 10.0,
            ..HEALTHY
        };
        let decision = judge_figures(
            &format!("action: warn\n{POLICY}"),
            &rollout_by(PERSON),
            &spike,
        );
        assert!(decision.allowed());
        assert_eq!(only_finding(&decision, Rule::TrafficSpike).mode, Mode::Warn);
        assert_eq!(
            verdict::warnings(&decision),
            vec![
                "[payments/checkout:traffic-spike] would deny: traffic 3x baseline >= 2 (30/10 req/s)"
            ]
        );
    }

    #[test]
    fn the_gate_covers_rollouts_scale_downs_and_gated_creates_only() {
        let spec = policy_yaml(POLICY).spec;
        let gate_of = |change: &Change| {
            let actor = crate::rules::classify_actor(&change.requester, Some(&spec));
            gate(change, &spec, actor)
        };
        assert_eq!(gate_of(&rollout_by(PERSON)), Some(GateScope::Full));
        assert_eq!(
            gate_of(&scale_by(PERSON, Some(5), 3)),
            Some(GateScope::ScaleDown)
        );
        assert_eq!(
            gate_of(&scale_by(PERSON, None, 3)),
            Some(GateScope::ScaleDown)
        );
        assert_eq!(gate_of(&scale_by(PERSON, Some(3), 5)), None);
        assert_eq!(gate_of(&create_by(PERSON, 3)), None);
        assert_eq!(gate_of(&delete_by(AGENT)), None);
        assert_eq!(gate_of(&hpa_by(AGENT, 1, 5, Some(4))), None);
        assert_eq!(gate_of(&rollout_by(HPA_CONTROLLER)), None);
    }

    /// A policy whose SLO is a Sloth spec's, resolved as the store resolves it.
    fn sloth_sourced_policy() -> crate::policy::Policy {
        let spec_text = crate::policy::fixtures::SLOTH_CHECKOUT;
        let value: serde_yaml::Value = serde_yaml::from_str(spec_text).unwrap();
        let mut catalog = crate::slo_spec::SloSpecCatalog::default();
        catalog.insert(
            crate::slo_spec::SloSpecDocument::recognize(&value, "payments", "sloth.yaml#1")
                .unwrap()
                .unwrap(),
        );
        let yaml = POLICY.replace(
            "  objective: 99.9\n  period: 30d\n  errors: 'sum(rate(e[{{window}}]))'\n  total: 'sum(rate(t[{{window}}]))'\n",
            "  source: {kind: PrometheusServiceLevel, name: checkout}\n",
        );
        let mut policy = policy_yaml(&yaml);
        crate::policy::resolve_slo_source("policy.yaml", &mut policy.spec, "payments", &catalog)
            .unwrap();
        policy
    }

    #[test]
    fn a_sourced_policy_reads_recording_rules_and_falls_back_to_the_specs_queries() {
        let policy = sloth_sourced_policy();
        let slo = policy.spec.slo.as_ref().unwrap();
        assert_eq!(
            slo.errors,
            r#"sum(rate(http_requests_total{job="checkout",code=~"5.."}[{{window}}]))"#
        );
        let plan = crate::slo::QueryPlan::new(
            &policy.id,
            &policy.spec,
            &agent_rollout().target,
            GateScope::Full,
        );
        let query = |role: QueryRole| {
            plan.queries
                .iter()
                .find(|(r, _)| *r == role)
                .map(|(_, q)| q.clone())
        };
        assert_eq!(
            query(QueryRole::Recorded("30d".into())).as_deref(),
            Some(
                r#"max(slo:sli_error:ratio_rate30d{sloth_service="checkout",sloth_slo="availability"})"#
            )
        );
        assert_eq!(
            query(QueryRole::Errors("1h".into())),
            None,
            "the rule, not the raw query"
        );
        // minRequestRate with traffic: the rate comes from traffic.current, not a total.
        assert_eq!(query(QueryRole::Total("5m".into())), None);

        // Sloth's rules are there for 30d, 1h, 6h, 30m; absent for 5m.
        let mut readings = Readings::new();
        readings.insert(QueryRole::Recorded("30d".into()), Reading::Value(0.00096));
        for w in ["1h", "6h", "30m"] {
            readings.insert(QueryRole::Recorded(w.into()), Reading::Value(0.0002));
        }
        readings.insert(
            QueryRole::Recorded("5m".into()),
            Reading::NoData(NoData::Empty),
        );
        assert_eq!(
            plan.fallback_queries(&readings),
            vec![
                (
                    QueryRole::Errors("5m".into()),
                    r#"sum(rate(http_requests_total{job="checkout",code=~"5.."}[5m]))"#.to_string()
                ),
                (
                    QueryRole::Total("5m".into()),
                    r#"sum(rate(http_requests_total{job="checkout"}[5m]))"#.to_string()
                ),
            ],
            "only the window whose rule has no series falls back"
        );
        readings.insert(QueryRole::Errors("5m".into()), Reading::Value(0.002));
        readings.insert(QueryRole::Total("5m".into()), Reading::Value(10.0));
        readings.insert(QueryRole::Current, Reading::Value(10.0));
        readings.insert(QueryRole::Baseline, Reading::Value(10.0));

        let policies = crate::store::PolicySet::new(vec![policy], "slo-guard");
        let decision = crate::rules::assess_and_decide(
            &agent_rollout(),
            &crate::rules::DecisionContext {
                policies: &policies,
                now: test_now(),
                observations: &observed(Observation::Readings(readings)),
                ledger: None,
            },
        );
        assert_eq!(
            rules(&decision),
            [Rule::ErrorBudget],
            "{:#?}",
            decision.findings
        );
        let headline = &decision.findings[0].headline;
        assert!(
            headline.contains(
                "error budget 4.0% left, below the 25% floor for agent changes (SLO 99.9% over 30d from Sloth PrometheusServiceLevel payments/checkout, SLO availability; figures: 30d from slo:sli_error:ratio_rate30d (Sloth's time-weighted mean of its 5m error ratios), 1h from slo:sli_error:ratio_rate1h, 5m from the spec's queries (slo:sli_error:ratio_rate5m absent)"
            ),
            "{headline}"
        );
        assert_eq!(
            decision.notes,
            [
                "payments/checkout: Sloth recording rules absent (5m): figures from the spec's queries"
            ]
        );
        assert!(
            decision.figures[0].contains("budget 4.0% (30d); burn 1h 0.2, 5m 0.2"),
            "{:?}",
            decision.figures
        );
    }

    #[test]
    fn a_pyrra_burnrate_series_is_a_ratio_divided_by_the_budget() {
        // Pyrra's `:burnrate1h` is 0.0144 errors per request; with a 99.9% target that is
        // a burn of 14.4, not 0.0144.
        let mut readings = Readings::new();
        readings.insert(QueryRole::Recorded("1h".into()), Reading::Value(0.0144));
        let burn = crate::slo::figures::burn_rate(&readings, "1h", 99.9).unwrap();
        assert!((burn - 14.4).abs() < 1e-9, "{burn}");
        readings.insert(QueryRole::Recorded("4w".into()), Reading::Value(0.0005));
        let left = crate::slo::figures::budget_left(&readings, "4w", 99.9).unwrap();
        assert!((left - 0.5).abs() < 1e-9, "{left}");
        readings.insert(
            QueryRole::Recorded("5m".into()),
            Reading::NoData(NoData::NaN),
        );
        assert_eq!(
            crate::slo::figures::burn_rate(&readings, "5m", 99.9)
                .unwrap_err()
                .0,
            "recorded error ratio over 5m: NaN",
            "a NaN ratio is no data, never zero"
        );
    }

    #[test]
    fn an_unresolved_source_is_no_data_never_a_pass() {
        let yaml = POLICY.replace(
            "  objective: 99.9\n  period: 30d\n  errors: 'sum(rate(e[{{window}}]))'\n  total: 'sum(rate(t[{{window}}]))'\n",
            "  source: {kind: SLO, name: checkout}\n",
        );
        let decision = judge_figures(&yaml, &agent_rollout(), &HEALTHY);
        assert_eq!(
            rules(&decision),
            [Rule::SloData],
            "{:#?}",
            decision.findings
        );
        assert!(
            decision.findings[0]
                .headline
                .contains("slo.source SLO checkout is not resolved"),
            "{}",
            decision.findings[0].headline
        );
    }
}
