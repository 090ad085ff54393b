//! Arbitrary bytes as one key of a reflection ConfigMap. A reflection that parses is
//! then applied: every captured change is judged by the baseline policy (tighten only)
//! and by a policy that allows bounded loosening and proposals, with the reflection in
//! its own namespace and, as slo-guard's proposals are, in slo-guard's namespace, under
//! calm and stormy SLO figures.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use slo_guard::policy::{Policy, PolicyRef, parse_policy};
use slo_guard::reflection::{Reflection, effective_policy, parse_reflection};
use slo_guard::rules::{DecisionContext, assess_and_decide};
use slo_guard::store::PolicySet;
use slo_guard_fuzz::{
    GUARD_NAMESPACE, LOOSE_POLICY, Weather, baseline_policy, changes, now, observations,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = parse_reflection("checkout.yaml", text) else {
        return;
    };
    let now = now();
    let loose = loose_policy();
    for namespace in ["payments", GUARD_NAMESPACE] {
        let reflection = Arc::new(Reflection {
            id: PolicyRef {
                namespace: namespace.into(),
                name: "checkout-reflections".into(),
            },
            key: "checkout.yaml".into(),
            spec: spec.clone(),
        });
        for policy in [baseline_policy(), loose.clone()] {
            let mut set = PolicySet::new(Vec::new(), GUARD_NAMESPACE);
            set.policies = vec![policy.clone()];
            set.reflections = vec![reflection.clone()];
            for change in changes() {
                let _ = effective_policy(
                    &policy,
                    &set.reflections,
                    &change.target,
                    GUARD_NAMESPACE,
                    now,
                );
                for weather in [Weather::Calm, Weather::Storm] {
                    let observations = observations(&policy, change, weather);
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
    }
});

fn loose_policy() -> Arc<Policy> {
    static LOOSE: std::sync::OnceLock<Arc<Policy>> = std::sync::OnceLock::new();
    LOOSE
        .get_or_init(|| {
            Arc::new(Policy {
                id: PolicyRef {
                    namespace: "payments".into(),
                    name: "checkout".into(),
                },
                spec: parse_policy("policy.yaml", LOOSE_POLICY)
                    .unwrap_or_else(|e| panic!("loose policy: {e}")),
            })
        })
        .clone()
}
