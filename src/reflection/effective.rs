//! Effective thresholds: a policy with every active reflection for a workload applied.
//! Reflections may tighten any threshold; they loosen one only as far as the policy's
//! `reflection.loosenBounds` allow, and expired ones stop applying.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Reflection, Threshold, ThresholdPath};
use crate::admission::Target;
use crate::policy::Policy;

/// Where an effective threshold came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// Which threshold.
    pub path: ThresholdPath,
    /// Its value in force.
    pub value: Threshold,
    /// What the policy itself says (none when the policy leaves it unset).
    pub policy_value: Option<Threshold>,
    /// `namespace/configmap#key` of the reflection.
    pub reflection: String,
    /// The reflection's reason.
    pub reason: String,
    /// The reflection's source.
    pub source: String,
    /// When the reflection stops applying.
    pub expires: DateTime<Utc>,
    /// Set when the reflection asked for more than it got (a loosening capped at the
    /// policy's bound).
    pub note: Option<String>,
}

impl Provenance {
    /// "12 (was 20, by reflection payments/checkout-reflections#checkout.yaml: INC-4711 ...)".
    pub fn describe(&self) -> String {
        let was = self.policy_value.as_ref().map_or_else(
            || "unset in the policy".to_string(),
            |v| format!("policy {v}"),
        );
        format!(
            "{} ({was}; set by reflection {} from {}: {})",
            self.value, self.reflection, self.source, self.reason
        )
    }
}

/// A policy with the reflections for one workload applied.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectivePolicy {
    /// The policy as it judges that workload.
    pub policy: Policy,
    /// The thresholds reflections changed.
    pub applied: Vec<Provenance>,
    /// Reflections, or parts of them, that did not apply, and why.
    pub skipped: Vec<String>,
}

/// A value a reflection may set, with who asked and any note on how it was bounded.
type Candidate<'a> = (Threshold, &'a Reflection, Option<String>);

fn targets(reflection: &Reflection, target: &Target, guard_namespace: &str) -> bool {
    let spec = &reflection.spec;
    if Some(spec.target.kind) != target.workload_kind() || spec.target.name != target.name {
        return false;
    }
    match &spec.target.namespace {
        None => reflection.id.namespace == target.namespace,
        Some(namespace) => {
            *namespace == target.namespace
                && (reflection.id.namespace == target.namespace
                    || reflection.id.namespace == guard_namespace)
        }
    }
}

/// The policy as it applies to `target` at `now`. `None` when no reflection touches it,
/// so the common case clones nothing.
pub fn effective_policy(
    policy: &Policy,
    reflections: &[Arc<Reflection>],
    target: &Target,
    guard_namespace: &str,
    now: DateTime<Utc>,
) -> Option<EffectivePolicy> {
    let relevant: Vec<&Reflection> = reflections
        .iter()
        .map(Arc::as_ref)
        .filter(|reflection| targets(reflection, target, guard_namespace))
        .collect();
    if relevant.is_empty() {
        return None;
    }
    let mut skipped = Vec::new();
    let mut candidates: BTreeMap<ThresholdPath, Vec<Candidate<'_>>> = BTreeMap::new();
    for reflection in relevant {
        let name = format!("{}#{}", reflection.id, reflection.key);
        if reflection.spec.expires <= now {
            skipped.push(format!(
                "reflection {name} expired at {}",
                reflection.spec.expires.to_rfc3339()
            ));
            continue;
        }
        if reflection.spec.proposal && !policy.spec.reflection.apply_proposals {
            skipped.push(format!(
                "reflection {name} is a proposal, and policy {} does not set reflection.applyProposals",
                policy.id
            ));
            continue;
        }
        for (&path, candidate) in &reflection.spec.thresholds {
            let text = path.as_str();
            let candidate = candidate.clone();
            let base = path.read(&policy.spec);
            let allowed = match &base {
                None => Some((candidate, None)),
                Some(current) => match path.tightens(&candidate, current) {
                    Some(true) => Some((candidate, None)),
                    None => {
                        skipped.push(format!("{name}: {text} {candidate} cannot be compared with the policy's {current}"));
                        None
                    }
                    Some(false) => {
                        let bound = policy.spec.reflection.loosen_bounds.get(&path);
                        match bound
                            .and_then(|bound| path.bounded(&candidate, bound).map(|v| (v, bound)))
                        {
                            Some((value, bound)) if value != candidate => Some((
                                value,
                                Some(format!(
                                    "asked for {candidate}, capped at the policy's loosening bound {bound}"
                                )),
                            )),
                            Some((value, _)) => Some((value, None)),
                            None => {
                                skipped.push(format!(
                                    "{name}: {text} {candidate} would loosen the policy's {current}, and policy {} declares no reflection.loosenBounds for it",
                                    policy.id
                                ));
                                None
                            }
                        }
                    }
                },
            };
            if let Some((value, note)) = allowed {
                candidates
                    .entry(path)
                    .or_default()
                    .push((value, reflection, note));
            }
        }
    }
    let mut effective = policy.clone();
    let mut applied = Vec::new();
    for (path, values) in candidates {
        // Several reflections on one threshold: the strictest wins.
        let Some((value, reflection, note)) = values.into_iter().reduce(|best, next| {
            if path.tightens(&next.0, &best.0) == Some(true) && next.0 != best.0 {
                next
            } else {
                best
            }
        }) else {
            continue;
        };
        if !path.write(&mut effective.spec, &value) {
            skipped.push(format!(
                "{}#{}: {} cannot be set, since policy {} has no section for it",
                reflection.id,
                reflection.key,
                path.as_str(),
                policy.id
            ));
            continue;
        }
        applied.push(Provenance {
            path,
            policy_value: path.read(&policy.spec),
            value,
            reflection: format!("{}#{}", reflection.id, reflection.key),
            reason: reflection.spec.reason.clone(),
            source: reflection.spec.source.clone(),
            expires: reflection.spec.expires,
            note,
        });
    }
    Some(EffectivePolicy {
        policy: effective,
        applied,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::admission::{TargetKind, WorkloadKind};
    use crate::policy::{PolicyRef, parse_policy};
    use crate::reflection::parse_reflection;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 18, 10, 0, 0).unwrap()
    }

    fn policy(extra: &str) -> Policy {
        let yaml = format!(
            "match: {{kinds: [Deployment]}}\nscaling: {{maxReplicas: 20, maxStep: 5}}\ntraffic: {{current: a, baseline: b, spikeRatio: 2.0}}\n{extra}"
        );
        Policy {
            id: PolicyRef {
                namespace: "payments".into(),
                name: "checkout".into(),
            },
            spec: parse_policy("policy.yaml", &yaml).unwrap(),
        }
    }

    fn reflection(namespace: &str, key: &str, body: &str) -> Arc<Reflection> {
        let yaml = format!(
            "target: {{kind: Deployment, name: checkout}}\nreason: \"INC-4711: scaling to 20 exhausted the DB pool\"\nsource: reflection-agent\n{body}"
        );
        Arc::new(Reflection {
            id: PolicyRef {
                namespace: namespace.into(),
                name: "checkout-reflections".into(),
            },
            key: key.into(),
            spec: parse_reflection(key, &yaml).unwrap(),
        })
    }

    fn target() -> Target {
        Target::new(
            TargetKind::Workload(WorkloadKind::Deployment),
            "payments",
            "checkout",
            Default::default(),
        )
    }

    fn apply(policy: &Policy, reflections: &[Arc<Reflection>]) -> Option<EffectivePolicy> {
        effective_policy(policy, reflections, &target(), "slo-guard", now())
    }

    #[test]
    fn tightening_applies_with_its_provenance() {
        let reflections = [reflection(
            "payments",
            "checkout.yaml",
            "thresholds: {scaling.maxReplicas: 12, traffic.spikeRatio: 1.5}\nexpires: 2027-01-31T00:00:00Z",
        )];
        let effective = apply(&policy(""), &reflections).unwrap();
        let scaling = effective.policy.spec.scaling.as_ref().unwrap();
        assert_eq!(scaling.max_replicas, Some(12));
        assert_eq!(
            effective.policy.spec.traffic.as_ref().unwrap().spike_ratio,
            1.5
        );
        assert_eq!(effective.applied.len(), 2);
        let cap = effective
            .applied
            .iter()
            .find(|p| p.path == ThresholdPath::ScalingMaxReplicas)
            .unwrap();
        assert_eq!(cap.policy_value, Some(Threshold::Replicas(20)));
        assert_eq!(
            cap.describe(),
            "12 (policy 20; set by reflection payments/checkout-reflections#checkout.yaml from reflection-agent: INC-4711: scaling to 20 exhausted the DB pool)"
        );
        assert!(effective.skipped.is_empty());
    }

    #[test]
    fn loosening_needs_a_bound_and_stops_at_it() {
        let loosen = [reflection(
            "payments",
            "a.yaml",
            "thresholds: {scaling.maxReplicas: 40}\nexpires: 2027-01-31T00:00:00Z",
        )];
        let effective = apply(&policy(""), &loosen).unwrap();
        assert_eq!(
            effective.policy.spec.scaling.as_ref().unwrap().max_replicas,
            Some(20)
        );
        assert!(effective.applied.is_empty());
        assert!(effective.skipped[0].contains("would loosen the policy's 20, and policy payments/checkout declares no reflection.loosenBounds"), "{:?}", effective.skipped);

        let bounded = policy("reflection: {loosenBounds: {scaling.maxReplicas: 30}}");
        let effective = apply(&bounded, &loosen).unwrap();
        assert_eq!(
            effective.policy.spec.scaling.as_ref().unwrap().max_replicas,
            Some(30)
        );
        assert_eq!(
            effective.applied[0].note.as_deref(),
            Some("asked for 40, capped at the policy's loosening bound 30")
        );
    }

    #[test]
    fn expired_reflections_stop_applying() {
        let expired = [reflection(
            "payments",
            "a.yaml",
            "thresholds: {scaling.maxReplicas: 12}\nexpires: 2026-11-18T09:59:59Z",
        )];
        let effective = apply(&policy(""), &expired).unwrap();
        assert_eq!(
            effective.policy.spec.scaling.as_ref().unwrap().max_replicas,
            Some(20)
        );
        assert!(effective.skipped[0].contains("expired at 2026-11-18T09:59:59+00:00"));
    }

    #[test]
    fn the_strictest_of_several_wins() {
        let reflections = [
            reflection(
                "payments",
                "a.yaml",
                "thresholds: {scaling.maxReplicas: 15}\nexpires: 2027-01-31T00:00:00Z",
            ),
            reflection(
                "payments",
                "b.yaml",
                "thresholds: {scaling.maxReplicas: 12}\nexpires: 2027-01-31T00:00:00Z",
            ),
            reflection(
                "payments",
                "c.yaml",
                "thresholds: {scaling.maxReplicas: 18}\nexpires: 2027-01-31T00:00:00Z",
            ),
        ];
        let effective = apply(&policy(""), &reflections).unwrap();
        assert_eq!(
            effective.policy.spec.scaling.as_ref().unwrap().max_replicas,
            Some(12)
        );
        assert_eq!(
            effective.applied[0].reflection,
            "payments/checkout-reflections#b.yaml"
        );
    }

    #[test]
    fn proposals_apply_only_where_the_policy_allows() {
        let proposal = [reflection(
            "payments",
            "p.yaml",
            "thresholds: {scaling.maxReplicas: 12}\nexpires: 2027-01-31T00:00:00Z\nproposal: true",
        )];
        let effective = apply(&policy(""), &proposal).unwrap();
        assert!(effective.applied.is_empty());
        let effective = apply(&policy("reflection: {applyProposals: true}"), &proposal).unwrap();
        assert_eq!(effective.applied.len(), 1);
    }

    #[test]
    fn reflections_elsewhere_or_for_other_workloads_do_not_apply() {
        let other_namespace = [reflection(
            "shipping",
            "a.yaml",
            "thresholds: {scaling.maxReplicas: 12}\nexpires: 2027-01-31T00:00:00Z",
        )];
        assert!(apply(&policy(""), &other_namespace).is_none());
        let from_guard = [reflection(
            "slo-guard",
            "a.yaml",
            "thresholds: {scaling.maxReplicas: 12}\nexpires: 2027-01-31T00:00:00Z",
        )];
        assert!(
            apply(&policy(""), &from_guard).is_none(),
            "the guard namespace must name the target namespace"
        );
    }

    #[test]
    fn incomparable_steps_are_reported_not_guessed() {
        let percent = [reflection(
            "payments",
            "a.yaml",
            "thresholds: {scaling.maxStep: \"20%\"}\nexpires: 2027-01-31T00:00:00Z",
        )];
        let effective = apply(&policy(""), &percent).unwrap();
        assert!(effective.applied.is_empty());
        assert!(effective.skipped[0].contains("cannot be compared"));
    }
}
