//! Rules for agents: the decision context they must carry, and actions they may never take.

use crate::admission::{ActorKind, ChangeClass};
use crate::policy::{AgentAction, AgentAnnotation, ForbiddenAction};

use super::{Finding, Rule, RuleInput};

const MAX_REASON_CHARS: usize = 1024;

/// Changes that must carry the decision context. A delete cannot carry annotations, and
/// a metadata change is how an agent attaches context before it scales.
fn needs_context(class: ChangeClass) -> bool {
    matches!(
        class,
        ChangeClass::Create | ChangeClass::Rollout | ChangeClass::Scale | ChangeClass::Autoscaling
    )
}

/// `decision-id`: 6 to 128 characters of letters, digits and `.`, `_`, `:`, `-`, starting
/// with a letter or digit; UUIDs and ULIDs fit.
pub(crate) fn valid_decision_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    (6..=128).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Why an annotation's value is unacceptable, if it is. `action` is the `action`
/// annotation as the assessment parsed it (`None` when it names no known action).
fn annotation_problem(
    annotation: AgentAnnotation,
    value: &str,
    min_confidence: Option<f64>,
    action: Option<AgentAction>,
) -> Option<String> {
    let key = annotation.key();
    match annotation {
        AgentAnnotation::DecisionId if !valid_decision_id(value) => Some(format!(
            "{key} {value:?} is not 6-128 characters of letters, digits, '.', '_', ':' or '-'"
        )),
        AgentAnnotation::Reason | AgentAnnotation::Trigger if value.trim().is_empty() => {
            Some(format!("{key} is empty"))
        }
        AgentAnnotation::Reason if value.chars().count() > MAX_REASON_CHARS => Some(format!(
            "{key} is longer than {MAX_REASON_CHARS} characters"
        )),
        AgentAnnotation::Confidence => match value.trim().parse::<f64>() {
            Ok(confidence) if confidence.is_finite() && (0.0..=1.0).contains(&confidence) => {
                match min_confidence {
                    Some(min) if confidence < min => Some(format!(
                        "{key} {confidence} is below the policy minimum {min}"
                    )),
                    _ => None,
                }
            }
            _ => Some(format!("{key} {value:?} is not a number in 0..1")),
        },
        AgentAnnotation::Action if action.is_none() => Some(format!(
            "{key} {value:?} is not one of {}",
            AgentAction::ALL.map(AgentAction::as_str).join(", ")
        )),
        _ => None,
    }
}

const ALL_ANNOTATIONS: [AgentAnnotation; 5] = [
    AgentAnnotation::DecisionId,
    AgentAnnotation::Reason,
    AgentAnnotation::Confidence,
    AgentAnnotation::Action,
    AgentAnnotation::Trigger,
];

pub(super) fn check_annotations(input: &RuleInput<'_>) -> Option<Finding> {
    if input.actor != ActorKind::Agent || !needs_context(input.change.class) {
        return None;
    }
    let agents = &input.policy.spec.agents;
    let where_to_set = match input.change.target.kind {
        crate::admission::TargetKind::HorizontalPodAutoscaler { .. } => {
            "the HorizontalPodAutoscaler".to_string()
        }
        _ if input.change.is_scale_subresource() => format!(
            "the {} itself (kubectl annotate) before scaling",
            input
                .change
                .target
                .workload_kind()
                .map_or("workload", |k| k.as_str())
        ),
        _ => "the object".to_string(),
    };
    let Some(annotations) = &input.change.annotations.after else {
        return Some(input.finding(
            Rule::AgentAnnotations,
            format!(
                "decision context unavailable: {} is not in slo-guard's workload cache, so its slo-guard.io/ annotations cannot be read",
                input.change.target.describe()
            ),
            "Retry in a few seconds; if it persists, check that slo-guard can list and watch the workload".to_string(),
            "decision context unavailable (workload not in cache)".to_string(),
        ));
    };
    let mut missing = Vec::new();
    let mut invalid = Vec::new();
    for annotation in ALL_ANNOTATIONS {
        match annotations.get(annotation.key()) {
            None if agents.require_annotations.contains(&annotation) => {
                missing.push(annotation.key())
            }
            None => {}
            Some(value) => invalid.extend(annotation_problem(
                annotation,
                value,
                agents.min_confidence,
                input.agent_context.action,
            )),
        }
    }
    if missing.is_empty() && invalid.is_empty() {
        return None;
    }
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing {}", missing.join(", ")));
    }
    problems.extend(invalid.iter().cloned());
    let brief = if missing.is_empty() {
        format!("invalid agent annotations: {}", invalid.join("; "))
    } else {
        format!("missing {}", missing.join(", "))
    };
    Some(input.finding(
        Rule::AgentAnnotations,
        format!(
            "agent change lacks a valid decision context: {}",
            problems.join("; ")
        ),
        format!("Set the slo-guard.io/ annotations on {where_to_set} and retry"),
        brief,
    ))
}

pub(super) fn check_forbidden(input: &RuleInput<'_>) -> Option<Finding> {
    if input.actor != ActorKind::Agent {
        return None;
    }
    let declared_action = input.agent_context.declared_action;
    let forbidden = input
        .policy
        .spec
        .agents
        .forbidden
        .iter()
        .find(|item| match item {
            ForbiddenAction::Class(class) => *class == input.change.class,
            ForbiddenAction::Action(action) => Some(*action) == declared_action,
        })?;
    let what = match forbidden {
        ForbiddenAction::Class(class) => format!("agents may not {class} {}s", kind_name(input)),
        ForbiddenAction::Action(action) => {
            format!("agents may not take the action {}", action.as_str())
        }
    };
    Some(input.finding(
        Rule::ForbiddenAction,
        format!(
            "{what} under this policy (agents.forbidden lists {})",
            forbidden.as_str()
        ),
        "Only a person can make this change; escalate it to an SRE".to_string(),
        format!("{} is forbidden for agents", forbidden.as_str()),
    ))
}

fn kind_name(input: &RuleInput<'_>) -> &'static str {
    match input.change.target.kind {
        crate::admission::TargetKind::HorizontalPodAutoscaler { .. } => "HorizontalPodAutoscaler",
        _ => input
            .change
            .target
            .workload_kind()
            .map_or("workload", |k| k.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Mode;
    use crate::rules::testing::*;

    const POLICY: &str = "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"], minConfidence: 0.7}";

    #[test]
    fn a_complete_decision_context_passes() {
        let decision = judge(POLICY, &rollout_by(AGENT).with_annotations(&full_context()));
        assert!(decision.findings.is_empty(), "{:?}", decision.findings);
    }

    #[test]
    fn missing_annotations_are_all_named() {
        let decision = judge(POLICY, &rollout_by(AGENT));
        let finding = only_finding(&decision, Rule::AgentAnnotations);
        assert_eq!(finding.mode, Mode::Enforce);
        assert!(finding.headline.contains(
            "missing slo-guard.io/decision-id, slo-guard.io/reason, slo-guard.io/confidence, slo-guard.io/action"
        ));
        assert!(finding.message().starts_with(
            "[payments/checkout:agent-annotations] rollout of Deployment payments/checkout blocked:"
        ));
    }

    #[test]
    fn malformed_values_are_rejected_with_the_value_seen() {
        let cases = [
            ("slo-guard.io/decision-id", "x", "is not 6-128 characters"),
            (
                "slo-guard.io/decision-id",
                "7f3a 9c2e",
                "is not 6-128 characters",
            ),
            (
                "slo-guard.io/confidence",
                "high",
                "\"high\" is not a number in 0..1",
            ),
            ("slo-guard.io/confidence", "1.5", "is not a number in 0..1"),
            ("slo-guard.io/confidence", "NaN", "is not a number in 0..1"),
            (
                "slo-guard.io/confidence",
                "0.5",
                "0.5 is below the policy minimum 0.7",
            ),
            (
                "slo-guard.io/action",
                "delete-everything",
                "is not one of scale, restart",
            ),
            ("slo-guard.io/reason", "  ", "slo-guard.io/reason is empty"),
        ];
        for (key, value, expected) in cases {
            let mut annotations = full_context();
            annotations.insert(key.to_string(), value.to_string());
            let decision = judge(POLICY, &rollout_by(AGENT).with_annotations(&annotations));
            let finding = only_finding(&decision, Rule::AgentAnnotations);
            assert!(
                finding.headline.contains(expected),
                "{key}={value}: {}",
                finding.headline
            );
        }
    }

    #[test]
    fn people_and_controllers_need_no_context() {
        assert!(judge(POLICY, &rollout_by(PERSON)).findings.is_empty());
        assert!(
            judge(POLICY, &scale_by(HPA_CONTROLLER, Some(3), 30))
                .findings
                .is_empty()
        );
    }

    #[test]
    fn a_scale_whose_parent_is_unknown_cannot_prove_its_context() {
        let mut change = scale_by(AGENT, Some(3), 4);
        change.annotations.after = None;
        let decision = judge(POLICY, &change);
        let finding = only_finding(&decision, Rule::AgentAnnotations);
        assert!(
            finding.headline.contains("decision context unavailable"),
            "{}",
            finding.headline
        );
    }

    #[test]
    fn agents_may_not_delete_by_default() {
        let decision = judge(POLICY, &delete_by(AGENT));
        let finding = only_finding(&decision, Rule::ForbiddenAction);
        assert_eq!(
            finding.headline,
            "delete of Deployment payments/checkout blocked: agents may not delete Deployments under this policy (agents.forbidden lists delete)"
        );
        assert!(judge(POLICY, &delete_by(PERSON)).findings.is_empty());
    }

    #[test]
    fn forbidden_declared_actions() {
        let policy = "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"], forbidden: [delete, rollback]}";
        let mut annotations = full_context();
        annotations.insert("slo-guard.io/action".into(), "rollback".into());
        let decision = judge(policy, &rollout_by(AGENT).with_annotations(&annotations));
        let finding = only_finding(&decision, Rule::ForbiddenAction);
        assert!(
            finding
                .headline
                .contains("agents may not take the action rollback"),
            "{}",
            finding.headline
        );
    }
}
