//! Query plans kept for the policy snapshot they were made from. Filling a policy's
//! templates for a workload is the same work on every admission of that workload, and
//! the filled strings are also what the answer cache is keyed by.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::plan::{GateScope, QueryPlan};
use crate::admission::Target;
use crate::policy::Policy;
use crate::store::PolicySet;

/// Past this many plans the cache starts over, so templated policies over many workloads
/// cannot grow it without bound.
const MAX_PLANS: usize = 4096;

/// The query plans of one policy snapshot, by workload; shared by every request.
#[derive(Default)]
pub struct PlanCache {
    state: Mutex<PlanState>,
}

/// A plan with what it was made for: a policy (by address) and a scope.
type KeptPlan = (usize, GateScope, Arc<QueryPlan>);

#[derive(Default)]
struct PlanState {
    /// The snapshot the plans were made from. Holding it keeps its policies alive, so a
    /// policy's address identifies it for as long as the plans are kept.
    snapshot: Option<Arc<PolicySet>>,
    /// namespace → name → the plans for that workload.
    plans: HashMap<String, HashMap<String, Vec<KeptPlan>>>,
    count: usize,
}

impl PlanCache {
    fn state(&self) -> MutexGuard<'_, PlanState> {
        // Every write leaves the maps consistent, so a poisoned lock is safe to reuse.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The plan of `policy`, one of `snapshot`'s policies, for `target` and `scope`.
    pub fn plan(
        &self,
        snapshot: &Arc<PolicySet>,
        policy: &Policy,
        target: &Target,
        scope: GateScope,
    ) -> Arc<QueryPlan> {
        let address = std::ptr::from_ref(policy) as usize;
        {
            let mut state = self.state();
            if !state
                .snapshot
                .as_ref()
                .is_some_and(|kept| Arc::ptr_eq(kept, snapshot))
            {
                *state = PlanState {
                    snapshot: Some(snapshot.clone()),
                    ..PlanState::default()
                };
            }
            let found = state
                .plans
                .get(target.namespace.as_str())
                .and_then(|names| names.get(target.name.as_str()))
                .and_then(|plans| {
                    plans
                        .iter()
                        .find(|(a, s, _)| *a == address && *s == scope)
                        .map(|(_, _, plan)| plan.clone())
                });
            if let Some(plan) = found {
                return plan;
            }
        }
        let plan = Arc::new(QueryPlan::new(&policy.id, &policy.spec, target, scope));
        let mut state = self.state();
        // Another snapshot may have come in while the plan was made; keep only plans of
        // the snapshot the cache holds.
        if state
            .snapshot
            .as_ref()
            .is_some_and(|kept| Arc::ptr_eq(kept, snapshot))
        {
            if state.count >= MAX_PLANS {
                state.plans.clear();
                state.count = 0;
            }
            state
                .plans
                .entry(target.namespace.clone())
                .or_default()
                .entry(target.name.clone())
                .or_default()
                .push((address, scope, plan.clone()));
            state.count += 1;
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{TargetKind, WorkloadKind};
    use crate::rules::testing::policy_yaml;

    fn target(name: &str) -> Target {
        Target {
            kind: TargetKind::Workload(WorkloadKind::Deployment),
            namespace: "shop".into(),
            name: name.into(),
            labels: Default::default(),
            labels_known: true,
            pod_labels: Default::default(),
            before: None,
            owners: Vec::new(),
        }
    }

    fn snapshot(metric: &str) -> Arc<PolicySet> {
        let yaml = format!(
            "match: {{kinds: [Deployment]}}\n\
             slo:\n  objective: 99.9\n  period: 30d\n\
             \x20 errors: sum(rate({metric}{{job=\"{{{{name}}}}\"}}[{{{{window}}}}]))\n\
             \x20 total: sum(rate(requests{{job=\"{{{{name}}}}\"}}[{{{{window}}}}]))\n"
        );
        Arc::new(PolicySet::new(vec![policy_yaml(&yaml)], "slo-guard"))
    }

    #[test]
    fn a_plan_is_made_once_per_workload_and_scope_and_again_for_a_new_snapshot() {
        let cache = PlanCache::default();
        let first = snapshot("errors");
        let policy = &first.policies[0];
        let a = cache.plan(&first, policy, &target("web"), GateScope::Full);
        let again = cache.plan(&first, policy, &target("web"), GateScope::Full);
        assert!(
            Arc::ptr_eq(&a, &again),
            "the second admission reuses the plan"
        );
        let other = cache.plan(&first, policy, &target("api"), GateScope::Full);
        assert!(other.queries.iter().any(|(_, q)| q.contains("job=\"api\"")));
        let down = cache.plan(&first, policy, &target("web"), GateScope::ScaleDown);
        assert_ne!(
            down.queries, a.queries,
            "a scale-down does not ask for the period"
        );

        let second = snapshot("failures");
        let renewed = cache.plan(
            &second,
            &second.policies[0],
            &target("web"),
            GateScope::Full,
        );
        assert!(
            renewed
                .queries
                .iter()
                .any(|(_, q)| q.contains("failures{job=\"web\"}")),
            "a changed policy's plan is made from the new templates: {:?}",
            renewed.queries
        );
    }
}
