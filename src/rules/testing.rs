//! Plain-value builders for rule tests.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};

use super::{Decision, DecisionContext, Finding, Rule, assess_and_decide};
use crate::admission::{
    AnnotationState, Change, ChangeClass, ChangeDetail, HpaBounds, ReplicaChange, Requester,
    Target, TargetKind, WorkloadKind,
};
use crate::policy::{Policy, PolicyRef, parse_policy};
use crate::slo::Observations;
use crate::store::PolicySet;

pub const AGENT: &str = "system:serviceaccount:ai-agents:fixer";
pub const PERSON: &str = "alice@example.com";
pub const HPA_CONTROLLER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";

pub fn policy_yaml(yaml: &str) -> Policy {
    Policy {
        id: PolicyRef {
            namespace: "payments".into(),
            name: "checkout".into(),
        },
        spec: parse_policy("policy.yaml", yaml)
            .unwrap_or_else(|e| panic!("test policy invalid: {e}")),
    }
}

pub fn judge(policy: &str, change: &Change) -> Decision {
    judge_with(policy, change, &Observations::new())
}

/// Judges with SLO observations (keyed by the test policy, `payments/checkout`).
pub fn judge_with(policy: &str, change: &Change, observations: &Observations) -> Decision {
    let policies = PolicySet::new(vec![policy_yaml(policy)], "slo-guard");
    assess_and_decide(
        change,
        &DecisionContext {
            policies: &policies,
            now: test_now(),
            observations,
            ledger: None,
        },
    )
}

/// Judges under one test policy at `now`, with the change ledger's record `ledger`.
pub fn judge_at(
    policy: &str,
    change: &Change,
    now: chrono::DateTime<Utc>,
    ledger: Option<&crate::ledger::LedgerRecord>,
) -> Decision {
    let policies = PolicySet::new(vec![policy_yaml(policy)], "slo-guard");
    assess_and_decide(
        change,
        &DecisionContext {
            policies: &policies,
            now,
            observations: &Observations::new(),
            ledger,
        },
    )
}

pub fn test_now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 18, 10, 0, 0).unwrap()
}

/// An RFC 3339 instant, in UTC.
pub fn at(text: &str) -> chrono::DateTime<Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

pub fn checkout_ref() -> PolicyRef {
    PolicyRef {
        namespace: "payments".into(),
        name: "checkout".into(),
    }
}

/// Judges with reflection ConfigMap entries (YAML bodies, keyed) in `payments`.
pub fn judge_with_reflections(
    policy: &str,
    reflections: &[(&str, &str)],
    change: &Change,
) -> Decision {
    let mut policies = PolicySet::new(vec![policy_yaml(policy)], "slo-guard");
    policies.reflections = reflections
        .iter()
        .map(|(key, yaml)| {
            std::sync::Arc::new(crate::reflection::Reflection {
                id: PolicyRef {
                    namespace: "payments".into(),
                    name: "checkout-reflections".into(),
                },
                key: key.to_string(),
                spec: crate::reflection::parse_reflection(key, yaml)
                    .unwrap_or_else(|e| panic!("test reflection invalid: {e}")),
            })
        })
        .collect();
    let observations = crate::slo::Observations::new();
    assess_and_decide(
        change,
        &DecisionContext {
            policies: &policies,
            now: Utc.with_ymd_and_hms(2026, 11, 18, 10, 0, 0).unwrap(),
            observations: &observations,
            ledger: None,
        },
    )
}

pub fn only_finding(decision: &Decision, rule: Rule) -> &Finding {
    assert_eq!(
        decision.findings.len(),
        1,
        "expected one {rule} finding, got {:#?}",
        decision.findings
    );
    assert_eq!(decision.findings[0].rule, rule);
    &decision.findings[0]
}

pub fn full_context() -> BTreeMap<String, String> {
    [
        (
            "slo-guard.io/decision-id",
            "7f3a9c2e-1b4d-4e8a-9c6f-2d1e0b7a5c3f",
        ),
        (
            "slo-guard.io/reason",
            "p99 latency above SLO; image 1.4.1 fixes the N+1 query",
        ),
        ("slo-guard.io/confidence", "0.92"),
        ("slo-guard.io/action", "fix-image"),
        ("slo-guard.io/trigger", "alert:CheckoutLatencyHigh"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub fn change(username: &str, class: ChangeClass) -> Change {
    Change {
        uid: "705ab4f5-6393-11e8-b7cc-42010a800002".into(),
        class,
        target: Target::new(
            TargetKind::Workload(WorkloadKind::Deployment),
            "payments",
            "checkout",
            BTreeMap::from([("app".to_string(), "checkout".to_string())]),
        ),
        requester: Requester {
            username: username.into(),
            groups: vec!["system:authenticated".into()],
            field_manager: None,
        },
        dry_run: false,
        detail: ChangeDetail::Object { replicas: None },
        annotations: AnnotationState {
            after: Some(BTreeMap::new()),
            before: BTreeMap::new(),
            map_present: true,
        },
        new_owners: Vec::new(),
        dependents: Vec::new(),
        object_name: "checkout".into(),
        object_uid: None,
        object: None,
        old_object: None,
    }
}

/// The decision context of an agent that scales.
pub fn scale_context() -> BTreeMap<String, String> {
    let mut annotations = full_context();
    annotations.insert("slo-guard.io/action".to_string(), "scale".to_string());
    annotations
}

pub fn rollout_by(username: &str) -> Change {
    change(username, ChangeClass::Rollout)
}

pub fn create_by(username: &str, replicas: u32) -> Change {
    Change {
        detail: ChangeDetail::Object {
            replicas: Some(ReplicaChange {
                old: None,
                new: replicas,
            }),
        },
        ..change(username, ChangeClass::Create)
    }
}

pub fn scale_by(username: &str, old: Option<u32>, new: u32) -> Change {
    Change {
        detail: ChangeDetail::ScaleSubresource(ReplicaChange { old, new }),
        ..change(username, ChangeClass::Scale)
    }
}

pub fn delete_by(username: &str) -> Change {
    let mut change = change(username, ChangeClass::Delete);
    change.annotations.after = None;
    change
}

pub fn hpa_by(username: &str, min: u32, max: u32, old_max: Option<u32>) -> Change {
    let mut change = change(username, ChangeClass::Autoscaling);
    change.target.kind = TargetKind::HorizontalPodAutoscaler {
        scales: Some(WorkloadKind::Deployment),
    };
    change.detail = ChangeDetail::Autoscaler {
        bounds: Some(HpaBounds {
            min,
            max,
            old_min: old_max.map(|_| 2),
            old_max,
        }),
        retargeted_from: None,
    };
    change
}

pub trait WithAnnotations {
    fn with_annotations(self, annotations: &BTreeMap<String, String>) -> Self;
}

impl WithAnnotations for Change {
    fn with_annotations(mut self, annotations: &BTreeMap<String, String>) -> Self {
        self.annotations.after = Some(annotations.clone());
        self
    }
}
