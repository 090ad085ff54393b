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
    pub path: ThresholdPath,
    pub value: Threshold,
    /// What the policy itself says (none when the policy leaves it unset).
    pub policy_value: Option<Threshold>,
    /// `namespace/configmap#key` of the reflection.
    pub reflection: String,
    pub reason: String,
    pub source: String,
    pub expires: DateTime<Utc>,
    /// Set when the reflection asked for more than it got (a loosening capped at the
    /// policy's bound).
    pub note: Option<String>,
}

impl Provenance {
    /// "12 (was 20, by reflection payments/checkout-reflections#checkout.yaml: INC-4711 ...)".
    pub fn describe(&self) -> String {
        let was = self
            .policy_value
            .as_ref()
            .map_or_else(|| "unset in the policy".to_string(), |v| format!("policy {v}"));
        format!(
            "{} ({was}; set by reflection {} from {}: {})",
            self.value, self.reflection, self.source, self.reason
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EffectivePolicy {
    pub policy: Policy,
    pub applied: Vec<Provenance>,
    /// Reflections, or parts of them, that did not apply, and why.
    pub skipped: Vec<String>,
}

fn targets(reflection: &Reflection, target: &Target, guard_namespace: &str) -> bool {
    let spec = &reflection.spec;
    if Some(spec.target.kind) != target.workload_kind || spec.target.name != target.name {
        return false;
    }
    match &spec.target.namespace {
        None => reflection.id.namespace == target.namespace,
        Some(namespace) => {
            *namespace == target.namespace
                && (reflection.id.namespace == target.namespace || reflection.id.namespace == guard_namespace)
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
    let mut candidates: BTreeMap<ThresholdPath, Vec<(Threshold, &Reflection, Option<String>)>> = BTreeMap::new();
    for reflection in relevant {
        let name = format!("{}#{}", reflection.id, reflection.key);
        if reflection.spec.expires <= now {
            skipped.push(format!("reflection {name} expired at {}", reflection.spec.expires.to_rfc3339()));
            continue;
        }
        if reflection.spec.proposal && !policy.spec.reflection.apply_proposals {
            skipped.push(format!(
                "reflection {name} is a proposal, and policy {} does not set reflection.applyProposals",
                policy.id
            ));
            continue;
        }
        for (text, value) in &reflection.spec.thresholds {
            let Some(path) = ThresholdPath::parse(text) else {
                continue;
            };
            let Ok(candidate) = path.parse_value(value) else {
                continue;
            };
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
                        let bound = policy
                            .spec
                            .reflection
                            .loosen_bounds
                            .get(text)
                            .and_then(|b| path.parse_value(b).ok());
                        match bound.and_then(|bound| path.bounded(&candidate, &bound).map(|v| (v, bound))) {
                            Some((value, bound)) if value != candidate => Some((
                                value,
                                Some(format!("asked for {candidate}, capped at the policy's loosening bound {bound}")),
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
                candidates.entry(path).or_default().push((value, reflection, note));
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
