//! Learning from outcomes: after an observation period, compare how fast the error budget
//! burned before and after each recorded rollout and agent scale, and propose tighter
//! thresholds where a change was followed by a burn. Proposals only ever tighten, carry
//! their evidence and an expiry, and apply automatically only where a policy sets
//! `reflection.applyProposals`.
//!
//! The records live on the workloads themselves (`slo-guard.io/last-rollout`,
//! `slo-guard.io/last-agent-change`, stamped by slo-guard), so they survive restarts.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;

use super::{Threshold, ThresholdPath};
use crate::admission::{Target, TargetKind, WorkloadKind};
use crate::annotations::{LAST_AGENT_CHANGE, LAST_ROLLOUT};
use crate::policy::{Policy, PromDuration};

/// What the burn must do after a change to count as its consequence: at least this many
/// times the burn before it, and at least this burn rate (1.0 spends exactly the budget).
pub const REGRESSION_FACTOR: f64 = 2.0;
/// See [`REGRESSION_FACTOR`].
pub const MIN_BURN: f64 = 1.0;
/// How long a proposal stays in force before someone must renew it.
pub const PROPOSAL_LIFETIME: Duration = Duration::from_secs(14 * 24 * 3600);
/// How far a proposal raises the agents' budget floor after a rollout that burned.
const AGENT_FLOOR_STEP: f64 = 0.1;

/// A workload as the learning loop reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadState {
    /// Deployment or StatefulSet.
    pub kind: WorkloadKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.template.metadata.labels`.
    pub pod_labels: BTreeMap<String, String>,
    /// `metadata.annotations`, where slo-guard stamped its changes.
    pub annotations: BTreeMap<String, String>,
    /// `spec.replicas`.
    pub replicas: Option<u32>,
    /// The uids of its owners (`metadata.ownerReferences`), which the watch cache keeps
    /// so that a delete of an owner is judged for the workload.
    pub owner_uids: Vec<String>,
}

impl WorkloadState {
    /// The workload as policies match it.
    pub fn target(&self) -> Target {
        let mut target = Target::new(
            TargetKind::Workload(self.kind),
            &self.namespace,
            &self.name,
            self.labels.clone(),
        );
        target.pod_labels = self.pod_labels.clone();
        target
    }

    /// "Deployment payments/checkout".
    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// What an admitted change did.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    /// A rollout (`slo-guard.io/last-rollout`).
    Rollout {
        /// agent, controller or person.
        actor: String,
        /// The username.
        user: String,
    },
    /// An agent's scale (`slo-guard.io/last-agent-change`).
    AgentScale {
        /// The replicas it left.
        replicas: u32,
    },
}

/// One admitted change whose outcome can be judged.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    /// When it was admitted.
    pub at: DateTime<Utc>,
    /// What it did.
    pub kind: ChangeKind,
}

impl ChangeRecord {
    /// "the rollout at 2026-11-30T09:00:00Z by alice (person)".
    pub fn describe(&self) -> String {
        let at = self.at.to_rfc3339_opts(SecondsFormat::Secs, true);
        match &self.kind {
            ChangeKind::Rollout { actor, user } => {
                format!("the rollout at {at} by {user} ({actor})")
            }
            ChangeKind::AgentScale { replicas } => {
                format!("the agent scale to {replicas} replicas at {at}")
            }
        }
    }
}

#[derive(Deserialize)]
struct RolloutStamp {
    at: DateTime<Utc>,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    user: String,
}

/// The changes slo-guard recorded on a workload. An agent change stamped at the same
/// instant as the last rollout is that rollout, not a scale.
pub fn records(workload: &WorkloadState) -> Vec<ChangeRecord> {
    let rollout = workload
        .annotations
        .get(LAST_ROLLOUT)
        .and_then(|text| serde_json::from_str::<RolloutStamp>(text).ok());
    let mut found = Vec::new();
    if let Some(stamp) = &rollout {
        found.push(ChangeRecord {
            at: stamp.at,
            kind: ChangeKind::Rollout {
                actor: stamp.actor.clone(),
                user: stamp.user.clone(),
            },
        });
    }
    let agent_change = workload
        .annotations
        .get(LAST_AGENT_CHANGE)
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|at| at.with_timezone(&Utc));
    if let (Some(at), Some(replicas)) = (agent_change, workload.replicas)
        && rollout.as_ref().is_none_or(|stamp| stamp.at != at)
    {
        found.push(ChangeRecord {
            at,
            kind: ChangeKind::AgentScale { replicas },
        });
    }
    found
}

/// The burn rate over the observation window ending at the change, and the one starting at it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// The burn before the change; `None` without data.
    pub before: Option<f64>,
    /// The burn after it.
    pub after: Option<f64>,
}

/// A threshold update slo-guard proposes, with its evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The workload whose change burned.
    pub workload: WorkloadState,
    /// The policy whose threshold it tightens, as `namespace/name`.
    pub policy: String,
    /// Which threshold.
    pub path: ThresholdPath,
    /// Its proposed value.
    pub value: Threshold,
    /// The evidence: the change, and the burn before and after it.
    pub reason: String,
    /// Until when, unless renewed ([`PROPOSAL_LIFETIME`]).
    pub expires: DateTime<Utc>,
}

impl Proposal {
    /// The data key it is stored under in the proposals ConfigMap.
    pub fn key(&self) -> String {
        format!(
            "{}.{}.{}.yaml",
            self.workload.namespace,
            self.workload.kind.as_str().to_lowercase(),
            self.workload.name
        )
    }

    /// The reflection YAML, in the format `kubectl apply` and the webhook accept.
    pub fn to_yaml(&self) -> String {
        let value = match &self.value {
            Threshold::Replicas(n) => n.to_string(),
            Threshold::Number(n) => format!("{n}"),
            other => format!("\"{other}\""),
        };
        format!(
            "target: {{kind: {}, name: {}, namespace: {}}}\nthresholds: {{{}: {value}}}\nreason: {}\nsource: slo-guard/reflect\nexpires: {}\nproposal: true\n",
            self.workload.kind.as_str(),
            self.workload.name,
            self.workload.namespace,
            self.path.as_str(),
            serde_json::Value::String(self.reason.clone()),
            self.expires.to_rfc3339_opts(SecondsFormat::Secs, true),
        )
    }
}

fn burn_text(burn: Option<f64>) -> String {
    burn.map_or_else(|| "no data".to_string(), |b| format!("{b:.2}x"))
}

/// Whether the outcome shows the change made the budget burn faster.
pub fn regressed(outcome: &Outcome) -> bool {
    match (outcome.before, outcome.after) {
        (Some(before), Some(after)) => after >= MIN_BURN && after >= before * REGRESSION_FACTOR,
        // Without a "before", a burn that alone spends the budget too fast still counts.
        (None, Some(after)) => after >= MIN_BURN * REGRESSION_FACTOR,
        _ => false,
    }
}

/// The tightening a regression calls for, or `None` (no regression, or nothing tighter
/// to propose). Pure: the caller supplies the outcome.
pub fn propose(
    workload: &WorkloadState,
    policy: &Policy,
    record: &ChangeRecord,
    outcome: &Outcome,
    window: &PromDuration,
    now: DateTime<Utc>,
) -> Option<Proposal> {
    if !regressed(outcome) {
        return None;
    }
    let evidence = format!(
        "burn rate {} in the {window} before {}, {} in the {window} after",
        burn_text(outcome.before),
        record.describe(),
        burn_text(outcome.after),
    );
    let (path, value) = match &record.kind {
        ChangeKind::AgentScale { replicas } => {
            let floor = policy
                .spec
                .scaling
                .as_ref()
                .and_then(|s| s.min_replicas)
                .unwrap_or(1);
            let cap = replicas.saturating_sub(1).max(floor);
            (ThresholdPath::ScalingMaxReplicas, Threshold::Replicas(cap))
        }
        ChangeKind::Rollout { .. } => {
            let slo = policy.spec.slo.as_ref()?;
            let current = slo
                .budget
                .agent_freeze_below
                .unwrap_or(slo.budget.freeze_below);
            let raised = ((current.max(0.0) + AGENT_FLOOR_STEP) * 100.0).round() / 100.0;
            (
                ThresholdPath::BudgetAgentFreezeBelow,
                Threshold::Number(raised.min(0.9)),
            )
        }
    };
    // Proposals only tighten.
    if let Some(current) = path.read(&policy.spec)
        && path.tightens(&value, &current) != Some(true)
    {
        return None;
    }
    if path.read(&policy.spec).as_ref() == Some(&value) {
        return None;
    }
    Some(Proposal {
        workload: workload.clone(),
        policy: policy.id.to_string(),
        path,
        value,
        reason: evidence,
        expires: now + chrono::Duration::from_std(PROPOSAL_LIFETIME).ok()?,
    })
}

/// The records old enough to judge (their observation window has passed) and recent
/// enough to matter.
pub fn due(
    records: Vec<ChangeRecord>,
    window: Duration,
    lookback: Duration,
    now: DateTime<Utc>,
) -> Vec<ChangeRecord> {
    let window = chrono::Duration::from_std(window).unwrap_or_default();
    let lookback = chrono::Duration::from_std(lookback).unwrap_or_default();
    records
        .into_iter()
        .filter(|record| record.at + window <= now && record.at >= now - lookback)
        .collect()
}

/// Measures the burn rate over `window` just before and just after the change, by
/// evaluating the policy's SLO queries at those two instants.
pub async fn measure(
    prometheus: &crate::slo::Prometheus,
    policy: &Policy,
    workload: &WorkloadState,
    record: &ChangeRecord,
    window: &PromDuration,
) -> Result<Outcome, String> {
    let slo = policy
        .spec
        .slo
        .as_ref()
        .ok_or_else(|| format!("policy {} has no slo section", policy.id))?;
    let target = workload.target();
    let errors = crate::slo::fill(&slo.errors, Some(window.as_str()), &target);
    let total = crate::slo::fill(&slo.total, Some(window.as_str()), &target);
    let timeout = policy
        .spec
        .prometheus
        .timeout
        .duration()
        .max(Duration::from_secs(5));
    let allowed = 1.0 - slo.objective / 100.0;
    let after_at =
        record.at + chrono::Duration::from_std(window.duration()).map_err(|e| e.to_string())?;
    let mut burns = Vec::new();
    for at in [record.at, after_at] {
        let (e, t) = futures::join!(
            prometheus.fetch_at(&errors, at, timeout),
            prometheus.fetch_at(&total, at, timeout)
        );
        let e = e.map_err(|e| e.to_string())?.value;
        let t = t.map_err(|e| e.to_string())?.value;
        burns.push(match (e, t) {
            (Some(e), Some(t)) if e.is_finite() && t.is_finite() && t > 0.0 => {
                Some(e / t / allowed)
            }
            _ => None,
        });
    }
    Ok(Outcome {
        before: burns[0],
        after: burns[1],
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::policy::{PolicyRef, parse_policy};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 18, 10, 0, 0).unwrap()
    }

    fn policy() -> Policy {
        Policy {
            id: PolicyRef {
                namespace: "payments".into(),
                name: "checkout".into(),
            },
            spec: parse_policy(
                "policy.yaml",
                "match: {kinds: [Deployment]}\nslo: {objective: 99.9, period: 30d, errors: 'e[{{window}}]', total: 't[{{window}}]', budget: {freezeBelow: 0, agentFreezeBelow: 0.25}}\nscaling: {minReplicas: 2, maxReplicas: 20}",
            )
            .unwrap(),
        }
    }

    fn workload(annotations: &[(&str, &str)], replicas: u32) -> WorkloadState {
        WorkloadState {
            kind: WorkloadKind::Deployment,
            namespace: "payments".into(),
            name: "checkout".into(),
            labels: BTreeMap::new(),
            pod_labels: BTreeMap::new(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            replicas: Some(replicas),
            owner_uids: Vec::new(),
        }
    }

    fn window() -> PromDuration {
        PromDuration::parse("30m").unwrap()
    }

    #[test]
    fn records_tell_rollouts_from_agent_scales() {
        let stamp = r#"{"at":"2026-11-18T08:00:00Z","actor":"agent","user":"system:serviceaccount:ai-agents:fixer"}"#;
        let rollout_by_agent = workload(
            &[
                (LAST_ROLLOUT, stamp),
                (LAST_AGENT_CHANGE, "2026-11-18T08:00:00Z"),
            ],
            6,
        );
        let found = records(&rollout_by_agent);
        assert_eq!(found.len(), 1);
        assert!(matches!(found[0].kind, ChangeKind::Rollout { .. }));
        let scaled_later = workload(
            &[
                (LAST_ROLLOUT, stamp),
                (LAST_AGENT_CHANGE, "2026-11-18T09:00:00Z"),
            ],
            18,
        );
        let found = records(&scaled_later);
        assert_eq!(found[1].kind, ChangeKind::AgentScale { replicas: 18 });
        assert!(records(&workload(&[(LAST_ROLLOUT, "garbage")], 3)).is_empty());
    }

    #[test]
    fn only_a_clear_burn_after_the_change_counts() {
        assert!(regressed(&Outcome {
            before: Some(0.2),
            after: Some(20.9)
        }));
        assert!(!regressed(&Outcome {
            before: Some(0.2),
            after: Some(0.3)
        }));
        assert!(
            !regressed(&Outcome {
                before: Some(16.7),
                after: Some(25.0)
            }),
            "already burning before"
        );
        assert!(
            !regressed(&Outcome {
                before: Some(0.1),
                after: Some(0.9)
            }),
            "under budget pace"
        );
        assert!(!regressed(&Outcome {
            before: Some(0.2),
            after: None
        }));
    }

    #[test]
    fn a_burning_rollout_raises_the_agent_floor_and_a_burning_scale_caps_replicas() {
        let rollout = ChangeRecord {
            at: Utc.with_ymd_and_hms(2026, 11, 18, 8, 0, 0).unwrap(),
            kind: ChangeKind::Rollout {
                actor: "agent".into(),
                user: "system:serviceaccount:ai-agents:fixer".into(),
            },
        };
        let burn = Outcome {
            before: Some(0.2),
            after: Some(20.9),
        };
        let proposal = propose(
            &workload(&[], 6),
            &policy(),
            &rollout,
            &burn,
            &window(),
            now(),
        )
        .unwrap();
        assert_eq!(proposal.path, ThresholdPath::BudgetAgentFreezeBelow);
        assert_eq!(proposal.value, Threshold::Number(0.35));
        assert_eq!(
            proposal.reason,
            "burn rate 0.20x in the 30m before the rollout at 2026-11-18T08:00:00Z by system:serviceaccount:ai-agents:fixer (agent), 20.90x in the 30m after"
        );
        let yaml = proposal.to_yaml();
        let parsed = crate::reflection::parse_reflection(&proposal.key(), &yaml).unwrap();
        assert!(parsed.proposal);
        assert_eq!(parsed.target.namespace.as_deref(), Some("payments"));
        assert_eq!(proposal.key(), "payments.deployment.checkout.yaml");

        let scale = ChangeRecord {
            at: rollout.at,
            kind: ChangeKind::AgentScale { replicas: 18 },
        };
        let proposal = propose(
            &workload(&[], 18),
            &policy(),
            &scale,
            &burn,
            &window(),
            now(),
        )
        .unwrap();
        assert_eq!(
            (proposal.path, proposal.value),
            (ThresholdPath::ScalingMaxReplicas, Threshold::Replicas(17))
        );
        // Nothing to propose when the outcome was good.
        let good = Outcome {
            before: Some(0.2),
            after: Some(0.2),
        };
        assert!(
            propose(
                &workload(&[], 6),
                &policy(),
                &rollout,
                &good,
                &window(),
                now()
            )
            .is_none()
        );
    }

    #[test]
    fn proposals_never_loosen() {
        let scale = ChangeRecord {
            at: Utc.with_ymd_and_hms(2026, 11, 18, 8, 0, 0).unwrap(),
            kind: ChangeKind::AgentScale { replicas: 30 },
        };
        let burn = Outcome {
            before: Some(0.2),
            after: Some(20.9),
        };
        // Capping at 29 would loosen the policy's 20.
        assert!(
            propose(
                &workload(&[], 30),
                &policy(),
                &scale,
                &burn,
                &window(),
                now()
            )
            .is_none()
        );
    }

    #[test]
    fn only_records_past_their_window_and_within_the_lookback_are_due() {
        let at = |h, m| ChangeRecord {
            at: Utc.with_ymd_and_hms(2026, 11, 18, h, m, 0).unwrap(),
            kind: ChangeKind::AgentScale { replicas: 3 },
        };
        let due = due(
            vec![at(9, 45), at(9, 0), at(1, 0)],
            Duration::from_secs(1800),
            Duration::from_secs(6 * 3600),
            now(),
        );
        assert_eq!(due, vec![at(9, 0)]);
    }
}
