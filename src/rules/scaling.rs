//! Scaling caps: min/max replicas, the largest step, and HPA bounds.

use super::{Finding, Rule, RuleInput};
use crate::admission::ReplicaChange;
use crate::policy::OnExceed;
use crate::reflection::ThresholdPath;

/// A replica request above the cap that also grows. A change that moves toward the bounds
/// is allowed even if it does not reach them, so an agent can still shrink a workload
/// someone scaled past the cap.
fn above_cap(replicas: ReplicaChange, max: u32) -> bool {
    replicas.new > max && replicas.old.is_none_or(|old| replicas.new > old)
}

/// The clamp `scaling.onExceed: clamp` asks for, when the request is above the cap.
pub(super) fn clamp(input: &RuleInput<'_>) -> Option<super::Clamp> {
    let scaling = input.policy.spec.scaling.as_ref()?;
    if scaling.on_exceed != OnExceed::Clamp || !scaling.applies_to.contains(input.actor) {
        return None;
    }
    let max = scaling.max_replicas?;
    let replicas = input.change.replicas()?;
    above_cap(replicas, max).then(|| super::Clamp {
        requested: replicas.new,
        cap: max,
        policy: input.policy.id.to_string(),
    })
}

pub(super) fn check(input: &RuleInput<'_>) -> Vec<Finding> {
    let Some(scaling) = &input.policy.spec.scaling else {
        return Vec::new();
    };
    if !scaling.applies_to.contains(input.actor) {
        return Vec::new();
    }
    let actors = scaling.applies_to.describe();
    let policy = &input.policy.id;
    let mut findings = Vec::new();

    if let Some(replicas) = input.change.replicas() {
        let (old, new) = (replicas.old, replicas.new);
        if let Some(max) = scaling.max_replicas
            && above_cap(replicas, max)
        {
            findings.push(input.finding(
                Rule::MaxReplicas,
                format!(
                    "{new} replicas requested, above the cap of {max} for {actors}{}",
                    input.cite(ThresholdPath::ScalingMaxReplicas)
                ),
                format!("Request at most {max} replicas, or ask a platform engineer to raise scaling.maxReplicas in policy {policy}"),
                format!("{new} replicas > cap {max} for {actors}"),
            ));
        }
        if let Some(min) = scaling.min_replicas
            && new < min
            && old.is_none_or(|old| new < old)
        {
            findings.push(input.finding(
                Rule::MinReplicas,
                format!(
                    "{new} replicas requested, below the floor of {min} for {actors}{}",
                    input.cite(ThresholdPath::ScalingMinReplicas)
                ),
                format!("Keep at least {min} replicas"),
                format!("{new} replicas < floor {min} for {actors}"),
            ));
        }
        if let (Some(step), Some(old)) = (scaling.max_step, old) {
            let moved = new.abs_diff(old);
            let allowed = step.allowed_from(old);
            if moved > allowed {
                let toward = if new > old {
                    old.saturating_add(allowed)
                } else {
                    old.saturating_sub(allowed)
                };
                findings.push(input.finding(
                    Rule::MaxStep,
                    format!(
                        "a step of {moved} replicas ({old} to {new}), above the largest step of {step} for {actors} ({allowed} from {old}){}",
                        input.cite(ThresholdPath::ScalingMaxStep)
                    ),
                    format!("Scale in steps of at most {allowed}: first to {toward} replicas"),
                    format!("step {old}->{new} ({moved}) > max step {allowed} for {actors}"),
                ));
            }
        }
    }

    if let Some(hpa) = input.change.hpa_bounds() {
        if let Some(max) = scaling.max_replicas
            && hpa.max > max
            && hpa.old_max.is_none_or(|old| hpa.max > old)
        {
            findings.push(input.finding(
                Rule::MaxReplicas,
                format!(
                    "maxReplicas {} requested, above the cap of {max} for {actors}{}",
                    hpa.max,
                    input.cite(ThresholdPath::ScalingMaxReplicas)
                ),
                format!("Set maxReplicas to at most {max}"),
                format!("HPA maxReplicas {} > cap {max} for {actors}", hpa.max),
            ));
        }
        if let Some(min) = scaling.min_replicas
            && hpa.min < min
            && hpa.old_min.is_none_or(|old| hpa.min < old)
        {
            findings.push(input.finding(
                Rule::MinReplicas,
                format!(
                    "minReplicas {} requested, below the floor of {min} for {actors}",
                    hpa.min
                ),
                format!("Set minReplicas to at least {min}"),
                format!("HPA minReplicas {} < floor {min} for {actors}", hpa.min),
            ));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use crate::policy::Mode;
    use crate::rules::Rule;
    use crate::rules::testing::*;

    const CAPS: &str = "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"], requireAnnotations: []}\nscaling: {minReplicas: 2, maxReplicas: 20, maxStep: 5, appliesTo: agents}";

    #[test]
    fn an_agent_scale_past_the_cap_is_denied_with_the_figures() {
        let decision = judge(CAPS, &scale_by(AGENT, Some(20), 25));
        let finding = only_finding(&decision, Rule::MaxReplicas);
        assert_eq!(
            finding.message(),
            "[payments/checkout:max-replicas] scale of Deployment payments/checkout blocked: 25 replicas requested, above the cap of 20 for agent changes. Request at most 20 replicas, or ask a platform engineer to raise scaling.maxReplicas in policy payments/checkout."
        );
        assert!(!decision.allowed());
    }

    #[test]
    fn the_cap_itself_is_allowed() {
        assert!(
            judge(CAPS, &scale_by(AGENT, Some(18), 20))
                .findings
                .is_empty()
        );
    }

    #[test]
    fn step_limits_in_both_directions() {
        let up = judge(CAPS, &scale_by(AGENT, Some(3), 9));
        let finding = only_finding(&up, Rule::MaxStep);
        assert!(
            finding.headline.contains("a step of 6 replicas (3 to 9)"),
            "{}",
            finding.headline
        );
        assert!(
            finding.remedy.contains("first to 8 replicas"),
            "{}",
            finding.remedy
        );
        let down = judge(CAPS, &scale_by(AGENT, Some(15), 9));
        assert!(
            only_finding(&down, Rule::MaxStep)
                .remedy
                .contains("first to 10 replicas")
        );
        assert!(
            judge(CAPS, &scale_by(AGENT, Some(3), 8))
                .findings
                .is_empty()
        );
    }

    #[test]
    fn percentage_steps() {
        let policy = CAPS.replace("maxStep: 5", "maxStep: \"50%\"");
        assert!(
            judge(&policy, &scale_by(AGENT, Some(10), 15))
                .findings
                .is_empty()
        );
        let decision = judge(&policy, &scale_by(AGENT, Some(10), 16));
        assert!(
            only_finding(&decision, Rule::MaxStep)
                .headline
                .contains("largest step of 50%")
        );
    }

    #[test]
    fn the_floor_applies_to_scale_downs() {
        let decision = judge(CAPS, &scale_by(AGENT, Some(3), 1));
        assert_eq!(
            only_finding(&decision, Rule::MinReplicas).rule,
            Rule::MinReplicas
        );
    }

    #[test]
    fn moving_toward_the_bounds_is_allowed() {
        // Someone scaled to 30 by hand; an agent bringing it down to 26 still helps.
        assert!(
            judge(CAPS, &scale_by(AGENT, Some(30), 26))
                .findings
                .is_empty()
        );
    }

    #[test]
    fn caps_follow_applies_to() {
        assert!(
            judge(CAPS, &scale_by(PERSON, Some(3), 40))
                .findings
                .is_empty()
        );
        assert!(
            judge(CAPS, &scale_by(HPA_CONTROLLER, Some(3), 40))
                .findings
                .is_empty()
        );
        let everyone = CAPS.replace("appliesTo: agents", "appliesTo: [agents, people]");
        let decision = judge(&everyone, &scale_by(PERSON, Some(20), 25));
        assert!(
            only_finding(&decision, Rule::MaxReplicas)
                .headline
                .contains("for changes by agents and people")
        );
    }

    #[test]
    fn create_checks_caps_but_not_steps() {
        let decision = judge(CAPS, &create_by(AGENT, 25));
        assert_eq!(decision.findings.len(), 1);
        assert_eq!(decision.findings[0].rule, Rule::MaxReplicas);
    }

    #[test]
    fn hpa_bounds() {
        let decision = judge(
            &CAPS.replace("appliesTo: agents", "appliesTo: everyone"),
            &hpa_by(PERSON, 1, 30, Some(10)),
        );
        let rules: Vec<Rule> = decision.findings.iter().map(|f| f.rule).collect();
        assert_eq!(rules, vec![Rule::MaxReplicas, Rule::MinReplicas]);
        assert!(
            decision.findings[0]
                .headline
                .contains("maxReplicas 30 requested, above the cap of 20")
        );
    }

    #[test]
    fn warn_mode_allows_with_the_finding() {
        let decision = judge(
            &format!("action: warn\n{CAPS}"),
            &scale_by(AGENT, Some(20), 25),
        );
        assert!(decision.allowed());
        assert_eq!(only_finding(&decision, Rule::MaxReplicas).mode, Mode::Warn);
    }

    const REFLECTION: &str = "target: {kind: Deployment, name: checkout}\nthresholds: {scaling.maxReplicas: 12}\nreason: \"INC-4711: scaling to 20 exhausted the DB pool\"\nsource: reflection-agent\nexpires: 2027-01-31T00:00:00Z";

    #[test]
    fn a_reflected_cap_is_enforced_and_cited() {
        let decision = judge_with_reflections(
            CAPS,
            &[("checkout.yaml", REFLECTION)],
            &scale_by(AGENT, Some(10), 14),
        );
        let finding = only_finding(&decision, Rule::MaxReplicas);
        assert_eq!(
            finding.headline,
            "scale of Deployment payments/checkout blocked: 14 replicas requested, above the cap of 12 for agent changes (set by reflection payments/checkout-reflections#checkout.yaml from reflection-agent: INC-4711: scaling to 20 exhausted the DB pool; policy 20)"
        );
        let thresholds = &decision.thresholds[0].to_json();
        assert_eq!(thresholds["scaling.maxReplicas"]["value"], 12);
        assert_eq!(thresholds["scaling.maxReplicas"]["policy"], 20);
        assert_eq!(thresholds["scaling.maxStep"]["from"], "policy");
        // Expired, it no longer applies.
        let expired = REFLECTION.replace("2027-01-31", "2026-11-01");
        let decision = judge_with_reflections(
            CAPS,
            &[("checkout.yaml", &expired)],
            &scale_by(AGENT, Some(10), 14),
        );
        assert!(decision.findings.is_empty(), "{:#?}", decision.findings);
        assert!(decision.notes.iter().any(|n| n.contains("expired")));
    }

    #[test]
    fn clamp_mode_lowers_instead_of_denying_in_the_mutating_patch() {
        let clamp = CAPS.replace("appliesTo: agents}", "appliesTo: agents, onExceed: clamp}");
        let decision = judge(&clamp, &scale_by(AGENT, Some(18), 23));
        let clamped = decision.clamp.as_ref().expect("a clamp");
        assert_eq!((clamped.requested, clamped.cap), (23, 20));
        // Scaled down or within the cap: nothing to clamp.
        assert!(
            judge(&clamp, &scale_by(AGENT, Some(18), 19))
                .clamp
                .is_none()
        );
        assert!(
            judge(&clamp, &scale_by(PERSON, Some(18), 23))
                .clamp
                .is_none()
        );
    }
}
