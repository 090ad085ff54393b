//! The first of the core's two pure steps: what a change is under the policies in force,
//! worked out once per request. [`assess`] matches the policies, applies their
//! reflections, classifies the actor and reads the agent's decision context; the guard
//! builds its Prometheus query plans from the result, and [`super::decide`] judges it.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::classify_actor;
use super::scope::changed_paths;
use crate::admission::{ActorKind, Change, ChangeClass, ChangeDetail, Target, TargetKind};
use crate::ledger::ChangeMark;
use crate::policy::{AgentAction, AgentAnnotation, Policy, PolicySpec};
use crate::reflection::{EffectivePolicy, Provenance, effective_policy};
use crate::slo::GateScope;
use crate::store::{MatchBasis, PolicySet};

/// A change as the policies in force see it, before any figure is gathered: everything
/// the rules read that does not come from Prometheus or the change ledger.
pub struct Assessment<'a> {
    /// The change judged.
    pub change: &'a Change,
    /// The policies and reflections in force.
    pub policies: &'a PolicySet,
    /// The time reflections, windows, freezes and cooldowns are judged at.
    pub now: DateTime<Utc>,
    /// The actor the decision starts from: the first governing policy's view (which the
    /// decision takes anyway), or, when no policy governs the target, the actor as no
    /// policy sees it (controller or person).
    pub default_actor: ActorKind,
    /// What the agent declared in its `slo-guard.io/` annotations, read once.
    pub agent_context: AgentContext<'a>,
    /// What the change alters in `spec`, computed at most once, when a rule asks.
    pub spec_diff: SpecDiff<'a>,
    /// The digest and mark that identify the change, computed at most once.
    pub identity: ChangeIdentity<'a>,
    /// Every policy that governs the change's target, in the order they are judged.
    /// Empty for changes whose rules read the policy set as a whole (ConfigMaps, pods,
    /// Services).
    pub governing: Vec<PolicyAssessment<'a>>,
    /// For an HPA whose `scaleTargetRef` moves: the change as the workload it leaves sees
    /// it, a delete of its autoscaler.
    pub retargeted: Option<Retargeted<'a>>,
}

/// One policy governing a change, as it judges it.
pub struct PolicyAssessment<'a> {
    /// The policy as stored, whose Prometheus query plan the guard caches.
    pub stored: &'a Policy,
    /// The policy with the reflections in force for the target applied, when any apply.
    pub reflected: Option<EffectivePolicy>,
    /// Why the policy governs the target (its labels, assumed, or only before the change).
    pub basis: MatchBasis,
    /// The actor as this policy classifies the requester.
    pub actor: ActorKind,
    /// The SLO figures judging the change under this policy needs, if any.
    pub figures: Option<GateScope>,
}

impl PolicyAssessment<'_> {
    /// How far the change goes through this policy's SLO gate, if it does: the figures
    /// it needs, unless only an autonomy tier reads the budget.
    pub fn slo_gate(&self) -> Option<GateScope> {
        self.figures.filter(|scope| *scope != GateScope::BudgetOnly)
    }

    /// The policy the rules judge by: the stored one with its reflections applied.
    pub fn policy(&self) -> &Policy {
        self.reflected
            .as_ref()
            .map_or(self.stored, |reflected| &reflected.policy)
    }

    /// Which thresholds reflections set, and why.
    pub fn provenance(&self) -> &[Provenance] {
        self.reflected
            .as_ref()
            .map_or(&[][..], |reflected| reflected.applied.as_slice())
    }

    /// Reflections, or parts of them, that did not apply to the target, and why.
    pub fn skipped(&self) -> &[String] {
        self.reflected
            .as_ref()
            .map_or(&[][..], |reflected| reflected.skipped.as_slice())
    }
}

/// An HPA's change as the workload it stopped scaling sees it.
pub struct Retargeted<'a> {
    /// The change judged as a delete of the HPA, for the workload it scaled before.
    pub change: Box<Change>,
    /// The policies governing that workload. They are judged without SLO figures: the
    /// guard gathers figures only for the change's own target.
    pub governing: Vec<PolicyAssessment<'a>>,
}

/// The decision context an agent writes in `slo-guard.io/` annotations, parsed once.
pub struct AgentContext<'a> {
    /// `slo-guard.io/decision-id` on the changed object (or the scaled workload), as
    /// written.
    pub decision_id: Option<&'a str>,
    /// `slo-guard.io/action` on the changed object, when it names a known action.
    pub action: Option<AgentAction>,
    /// The action the forbidden-actions rule reads: the changed object's, or, for a change
    /// that carries no annotations of its own, the stored object's.
    pub declared_action: Option<AgentAction>,
}

impl<'a> AgentContext<'a> {
    /// Reads the decision context of `change`.
    pub fn of(change: &'a Change) -> Self {
        let action_in = |annotations: &std::collections::BTreeMap<String, String>| {
            annotations
                .get(AgentAnnotation::Action.key())
                .and_then(|action| AgentAction::parse(action.trim()))
        };
        let action = change.annotations.after.as_ref().and_then(action_in);
        let declared_action = match &change.annotations.after {
            Some(_) => action,
            None => action_in(&change.annotations.before),
        };
        Self {
            decision_id: change
                .annotations
                .after
                .as_ref()
                .and_then(|a| a.get(AgentAnnotation::DecisionId.key()))
                .map(String::as_str),
            action,
            declared_action,
        }
    }
}

/// The leaf paths a change alters under `spec` (`spec.template.spec.containers[0].image`),
/// computed on first use: only an agent's declared action or a memory tier reads them.
pub struct SpecDiff<'a> {
    change: &'a Change,
    paths: OnceLock<Option<Vec<String>>>,
}

impl<'a> SpecDiff<'a> {
    /// The diff of `change`'s spec, not yet computed.
    pub fn of(change: &'a Change) -> Self {
        Self {
            change,
            paths: OnceLock::new(),
        }
    }

    /// The changed paths, or `None` when the change lacks the object before or after.
    pub fn paths(&self) -> Option<&[String]> {
        self.paths
            .get_or_init(|| {
                let (Some(old), Some(new)) = (&self.change.old_object, &self.change.object) else {
                    return None;
                };
                let mut paths = Vec::new();
                changed_paths(
                    old.get("spec").unwrap_or(&Value::Null),
                    new.get("spec").unwrap_or(&Value::Null),
                    "spec",
                    &mut paths,
                );
                Some(paths)
            })
            .as_deref()
    }
}

/// What identifies a change, computed once and only for the changes that need it.
pub struct ChangeIdentity<'a> {
    change: &'a Change,
    digest: OnceLock<String>,
    mark: OnceLock<ChangeMark>,
}

impl<'a> ChangeIdentity<'a> {
    /// The identity of `change`, not yet computed.
    pub fn new(change: &'a Change) -> Self {
        Self {
            change,
            digest: OnceLock::new(),
            mark: OnceLock::new(),
        }
    }

    /// [`Change::content_digest`].
    pub fn digest(&self) -> &str {
        self.digest.get_or_init(|| self.change.content_digest())
    }

    /// [`ChangeMark::of`] the change.
    pub fn mark(&self) -> &ChangeMark {
        self.mark
            .get_or_init(|| ChangeMark::of(self.change, self.digest()))
    }
}

/// The SLO figures judging `change` under `spec` needs, if any: the SLO gate's, or, for
/// a change no gate covers, the error budget alone when an `autonomy` rule's tier turns
/// on it.
pub fn figures_needed(change: &Change, spec: &PolicySpec, actor: ActorKind) -> Option<GateScope> {
    super::slo::gate(change, spec, actor).or_else(|| {
        super::governance::budget_decides_tier(change, spec, actor).then_some(GateScope::BudgetOnly)
    })
}

/// Assesses `change` under `policies` at `now`. Pure, like [`super::decide`].
pub fn assess<'a>(
    change: &'a Change,
    policies: &'a PolicySet,
    now: DateTime<Utc>,
) -> Assessment<'a> {
    let judged_per_policy = change.class != ChangeClass::Config
        && !matches!(
            change.target.kind,
            TargetKind::PodMaker(_) | TargetKind::Service | TargetKind::Owner
        );
    let (governing, retargeted) = if judged_per_policy {
        let retargeted = change.retargeted_from().map(|previous| {
            let mut away = change.clone();
            away.class = ChangeClass::Delete;
            away.target = previous.clone();
            if let ChangeDetail::Autoscaler {
                retargeted_from, ..
            } = &mut away.detail
            {
                *retargeted_from = None;
            }
            let governing = assess_governing(previous, &away, policies, now);
            Retargeted {
                change: Box::new(away),
                governing,
            }
        });
        (
            assess_governing(&change.target, change, policies, now),
            retargeted,
        )
    } else {
        (Vec::new(), None)
    };
    let default_actor = match governing.first() {
        Some(first) => first.actor,
        None => classify_actor(&change.requester, None),
    };
    Assessment {
        change,
        policies,
        now,
        default_actor,
        agent_context: AgentContext::of(change),
        spec_diff: SpecDiff::of(change),
        identity: ChangeIdentity::new(change),
        governing,
        retargeted,
    }
}

/// Every policy governing `target` (the target of `change`), assessed.
fn assess_governing<'a>(
    target: &'a Target,
    change: &Change,
    policies: &'a PolicySet,
    now: DateTime<Utc>,
) -> Vec<PolicyAssessment<'a>> {
    policies
        .matching(target)
        .map(|(stored, basis)| {
            let reflected = effective_policy(
                stored,
                &policies.reflections,
                target,
                &policies.guard_namespace,
                now,
            );
            let spec = &reflected.as_ref().map_or(stored, |r| &r.policy).spec;
            let actor = classify_actor(&change.requester, Some(spec));
            let figures = figures_needed(change, spec, actor);
            PolicyAssessment {
                stored,
                reflected,
                basis,
                actor,
                figures,
            }
        })
        .collect()
}
