//! Arbitrary bytes as the `policy.yaml` key of a policy ConfigMap. A policy that parses
//! is then used: every captured change is judged by it (with the example reflection in
//! force, so reflections are applied to the fuzzed thresholds) under calm, stormy,
//! unavailable and missing SLO figures, and the mutating patch is built.

#![no_main]

use libfuzzer_sys::fuzz_target;
use slo_guard::mutation::{StampContext, patch_for};
use slo_guard::policy::{Policy, PolicyRef, parse_policy};
use slo_guard::rules::{DecisionContext, assess_and_decide};
use slo_guard::slo::{Observation, Observations};
use slo_guard::store::PolicySet;
use slo_guard_fuzz::{
    GUARD_NAMESPACE, Weather, changes, example_policies, example_reflections, now, observations,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = parse_policy("policy.yaml", text) else {
        return;
    };
    // `match.namespaces` is valid only in slo-guard's own namespace.
    let namespace = if spec.matcher.namespaces.is_empty() {
        "payments"
    } else {
        GUARD_NAMESPACE
    };
    let policy = Policy {
        id: PolicyRef {
            namespace: namespace.into(),
            name: "checkout".into(),
        },
        spec,
    };
    let mut policies = PolicySet::new(vec![policy.clone()], GUARD_NAMESPACE);
    // The example reflection (payments/checkout-reflections) and the other examples.
    let examples = example_policies();
    let mut with_examples = PolicySet::new(Vec::new(), GUARD_NAMESPACE);
    with_examples.policies = examples
        .into_iter()
        .filter(|p| p.id != policy.id)
        .chain([std::sync::Arc::new(policy.clone())])
        .collect();
    policies.reflections = example_reflections();
    with_examples.reflections = example_reflections();
    let now = now();
    for change in changes() {
        let mut unavailable = Observations::new();
        unavailable.insert(
            policy.id.clone(),
            Observation::Unavailable("connection refused".into()),
        );
        let mut not_configured = Observations::new();
        not_configured.insert(policy.id.clone(), Observation::NotConfigured);
        let all = [
            observations(&policy, change, Weather::Calm),
            observations(&policy, change, Weather::Storm),
            unavailable,
            not_configured,
            Observations::new(),
        ];
        for observations in &all {
            for set in [&policies, &with_examples] {
                let decision = assess_and_decide(
                    change,
                    &DecisionContext {
                        policies: set,
                        now,
                        observations,
                        ledger: None,
                    },
                );
                for finding in &decision.findings {
                    let _ = finding.message();
                }
                let _ = patch_for(
                    change,
                    &decision,
                    StampContext {
                        now,
                        own_username: None,
                    },
                );
            }
        }
    }
});
