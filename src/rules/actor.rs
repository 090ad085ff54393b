//! Who is acting: an agent, a controller, or a person.

use crate::admission::{ActorKind, Requester};
use crate::policy::{Pattern, PolicySpec};

/// Controllers recognised when a policy names none: the controller manager and the
/// ServiceAccounts it runs its controllers as (the HPA controller among them).
const DEFAULT_CONTROLLER_USERS: [&str; 2] = [
    "system:kube-controller-manager",
    "system:serviceaccount:kube-system:*",
];

/// Controllers are checked first so that a broad agent pattern can never cap the HPA
/// controller. The field manager only ever adds agent-ness: a client cannot pick one to
/// pass as a person.
pub fn classify_actor(requester: &Requester, policy: Option<&PolicySpec>) -> ActorKind {
    let any = |patterns: &[Pattern], value: &str| patterns.iter().any(|p| p.matches(value));
    let is_controller = match policy.and_then(|p| p.controllers.as_ref()) {
        Some(controllers) => {
            any(&controllers.users, &requester.username)
                || requester
                    .groups
                    .iter()
                    .any(|group| any(&controllers.groups, group))
        }
        None => DEFAULT_CONTROLLER_USERS
            .iter()
            .any(|pattern| Pattern::new(*pattern).matches(&requester.username)),
    };
    if is_controller {
        return ActorKind::Controller;
    }
    if let Some(policy) = policy {
        let agents = &policy.agents;
        let is_agent = any(&agents.users, &requester.username)
            || requester
                .groups
                .iter()
                .any(|group| any(&agents.groups, group))
            || requester
                .field_manager
                .as_deref()
                .is_some_and(|manager| any(&agents.field_managers, manager));
        if is_agent {
            return ActorKind::Agent;
        }
    }
    ActorKind::Person
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::policy_yaml;

    fn requester(username: &str, groups: &[&str], field_manager: Option<&str>) -> Requester {
        Requester {
            username: username.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            field_manager: field_manager.map(str::to_string),
        }
    }

    #[test]
    fn agents_by_user_group_and_field_manager() {
        let policy = policy_yaml(
            "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"], groups: [agents], fieldManagers: [\"kagent*\"]}",
        );
        let spec = Some(&policy.spec);
        assert_eq!(
            classify_actor(
                &requester("system:serviceaccount:ai-agents:fixer", &[], None),
                spec
            ),
            ActorKind::Agent
        );
        assert_eq!(
            classify_actor(&requester("bob", &["agents"], None), spec),
            ActorKind::Agent
        );
        assert_eq!(
            classify_actor(&requester("bob", &[], Some("kagent-controller")), spec),
            ActorKind::Agent
        );
        assert_eq!(
            classify_actor(
                &requester(
                    "alice@example.com",
                    &["sre"],
                    Some("kubectl-client-side-apply")
                ),
                spec
            ),
            ActorKind::Person
        );
    }

    #[test]
    fn the_hpa_controller_is_a_controller_even_under_a_broad_agent_pattern() {
        let policy = policy_yaml(
            "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:*\"]}",
        );
        let hpa = requester(
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
            ],
            None,
        );
        assert_eq!(
            classify_actor(&hpa, Some(&policy.spec)),
            ActorKind::Controller
        );
        assert_eq!(classify_actor(&hpa, None), ActorKind::Controller);
    }

    #[test]
    fn a_policy_can_name_its_own_controllers() {
        let policy = policy_yaml(
            "match: {kinds: [Deployment]}\ncontrollers: {users: [\"system:serviceaccount:keda:*\"]}\nagents: {users: [\"system:serviceaccount:*\"]}",
        );
        let keda = requester("system:serviceaccount:keda:keda-operator", &[], None);
        assert_eq!(
            classify_actor(&keda, Some(&policy.spec)),
            ActorKind::Controller
        );
        // Naming controllers replaces the defaults.
        let hpa = requester(
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
            &[],
            None,
        );
        assert_eq!(classify_actor(&hpa, Some(&policy.spec)), ActorKind::Agent);
    }
}
