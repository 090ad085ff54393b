//! Arbitrary bytes as the body of a Prometheus `/api/v1/query` answer, read by
//! `slo_guard::slo::parse_response` (the function the live client calls on every
//! response) with a success, a client-error and a server-error status. A body that gives
//! a number is then turned into SLO figures and judged, as the gate would.

#![no_main]

use libfuzzer_sys::fuzz_target;
use slo_guard::rules::{DecisionContext, assess_and_decide};
use slo_guard::slo::{Observation, Observations, QueryRole, Reading, figures, parse_response};
use slo_guard::store::PolicySet;
use slo_guard_fuzz::{GUARD_NAMESPACE, Weather, baseline_policy, changes, now, readings};

fuzz_target!(|data: &[u8]| {
    for (status, content_type) in [
        (200, "application/json"),
        (422, "application/json; charset=utf-8"),
        (503, "text/html"),
        (200, ""),
    ] {
        let answer = parse_response(status, content_type, data);
        match &answer {
            Ok(answer) => judge(answer.value),
            Err(error) => {
                let _ = error.to_string();
            }
        }
    }
});

/// The answer as every error query of the baseline policy (and, separately, as every
/// total and traffic query), the other queries answered calmly.
fn judge(value: Option<f64>) {
    let reading = Reading::from_value(value);
    let _ = figures::number(value.unwrap_or_default());
    let _ = figures::percent(value.unwrap_or_default());
    let policy = baseline_policy();
    let mut set = PolicySet::new(Vec::new(), GUARD_NAMESPACE);
    set.policies = vec![policy.clone()];
    let now = now();
    // Enough to cover every class of change: a rollout and a scale.
    for change in changes().iter().skip(1).take(2) {
        let calm = readings(&policy.id, &policy.spec, change, Weather::Calm);
        let as_errors = calm
            .iter()
            .map(|(role, r)| match role {
                QueryRole::Errors(_) => (role.clone(), reading),
                _ => (role.clone(), *r),
            })
            .collect();
        let as_traffic = calm
            .iter()
            .map(|(role, r)| match role {
                QueryRole::Total(_) | QueryRole::Current | QueryRole::Freshness => {
                    (role.clone(), reading)
                }
                _ => (role.clone(), *r),
            })
            .collect();
        for readings in [as_errors, as_traffic] {
            let mut observations = Observations::new();
            observations.insert(policy.id.clone(), Observation::Readings(readings));
            let decision = assess_and_decide(
                change,
                &DecisionContext {
                    policies: &set,
                    now,
                    observations: &observations,
                    ledger: None,
                },
            );
            for finding in &decision.findings {
                let _ = finding.message();
            }
        }
    }
}
