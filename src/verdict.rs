//! How a decision reads: the denial kubectl prints, warnings of at most 120 characters,
//! and the audit annotations the apiserver writes to its audit log.

use std::collections::BTreeMap;

use crate::admission::ReviewResponse;
use crate::policy::Mode;
use crate::rules::{Decision, Finding};

/// kubectl prints each warning on its own line; longer ones are cut at this many characters.
pub const MAX_WARNING_CHARS: usize = 120;

/// The name the validating webhook is registered under, which kubectl prints.
pub const VALIDATING_WEBHOOK: &str = "validate.slo-guard.io";

/// What the decision amounts to, as logs, metrics and audit annotations name it.
pub fn verdict_word(decision: &Decision) -> &'static str {
    [Mode::Enforce, Mode::Warn, Mode::Audit]
        .into_iter()
        .find(|mode| decision.findings_in(*mode).next().is_some())
        .map_or("allowed", Mode::verdict)
}

/// The denial message: every enforced finding, one per line, the first being the one
/// kubectl shows after "denied the request:".
pub fn denial_message(decision: &Decision) -> Option<String> {
    let lines: Vec<String> = decision
        .findings_in(Mode::Enforce)
        .map(Finding::message)
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// The `warn`-mode findings and the decision's notes, as the warnings kubectl prints
/// (`Warning: ...`), each clipped to one short line.
pub fn warnings(decision: &Decision) -> Vec<String> {
    let mut warnings: Vec<String> = decision
        .findings_in(Mode::Warn)
        .map(|f| {
            clip(&format!(
                "[{}:{}] would deny: {}",
                f.source, f.rule, f.brief
            ))
        })
        .collect();
    warnings.extend(
        decision
            .notes
            .iter()
            .map(|note| clip(&format!("slo-guard: {note}"))),
    );
    warnings
}

/// Shortens to at most [`MAX_WARNING_CHARS`] characters on a character boundary.
pub fn clip(text: &str) -> String {
    if text.chars().count() <= MAX_WARNING_CHARS {
        return text.to_string();
    }
    let mut clipped: String = text.chars().take(MAX_WARNING_CHARS - 1).collect();
    clipped.push('…');
    clipped
}

/// Audit annotation keys are prefixed by the apiserver with the webhook name, so they are
/// plain names here.
pub fn audit_annotations(decision: &Decision) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([
        ("verdict".to_string(), verdict_word(decision).to_string()),
        ("class".to_string(), decision.class.as_str().to_string()),
        ("actor".to_string(), decision.actor.as_str().to_string()),
    ]);
    if !decision.policies.is_empty() {
        annotations.insert("policies".to_string(), decision.policies.join(","));
    }
    if !decision.figures.is_empty() {
        annotations.insert("figures".to_string(), decision.figures.join(" | "));
    }
    if !decision.findings.is_empty() {
        let rules: Vec<String> = decision.findings.iter().map(Finding::tag).collect();
        annotations.insert("rules".to_string(), rules.join(","));
        let messages: Vec<String> = decision.findings.iter().map(Finding::message).collect();
        annotations.insert("findings".to_string(), messages.join("\n"));
    }
    annotations
}

/// The validating webhook's response for a decision.
pub fn review_response(uid: &str, decision: &Decision) -> ReviewResponse {
    let mut response = match denial_message(decision) {
        Some(message) => ReviewResponse::deny(uid, message),
        None => ReviewResponse::allow(uid),
    };
    response.warnings = warnings(decision);
    response.audit_annotations = audit_annotations(decision);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::*;

    const CAPS: &str = "match: {kinds: [Deployment]}\nagents: {users: [\"system:serviceaccount:ai-agents:*\"]}\nscaling: {maxReplicas: 20, maxStep: 5}";

    #[test]
    fn a_denial_lists_every_failed_rule_first_line_first() {
        let decision = judge(CAPS, &scale_by(AGENT, Some(3), 25));
        let response = review_response("uid-1", &decision);
        assert!(!response.allowed);
        let status = response.status.expect("a denial has a status");
        assert_eq!(status.code, 403);
        let lines: Vec<&str> = status.message.lines().collect();
        assert_eq!(lines.len(), 3, "{}", status.message);
        assert!(lines[0].starts_with("[payments/checkout:max-replicas] scale of Deployment payments/checkout blocked: 25 replicas requested"));
        assert!(lines[1].starts_with("[payments/checkout:max-step]"));
        assert!(lines[2].starts_with("[payments/checkout:agent-annotations] scale of Deployment payments/checkout blocked: agent change lacks"));
        assert_eq!(response.audit_annotations["verdict"], "denied");
        assert_eq!(
            response.audit_annotations["rules"],
            "payments/checkout:max-replicas=enforce,payments/checkout:max-step=enforce,payments/checkout:agent-annotations=enforce"
        );
    }

    #[test]
    fn warn_mode_allows_with_short_warnings() {
        let decision = judge(
            &format!("action: warn\n{CAPS}"),
            &scale_by(AGENT, Some(3), 25),
        );
        let response = review_response("uid-1", &decision);
        assert!(response.allowed);
        assert!(response.status.is_none());
        assert_eq!(response.warnings.len(), 3);
        assert!(
            response
                .warnings
                .iter()
                .all(|w| w.chars().count() <= MAX_WARNING_CHARS)
        );
        assert_eq!(
            response.warnings[0],
            "[payments/checkout:max-replicas] would deny: 25 replicas > cap 20 for agent changes"
        );
        assert_eq!(response.audit_annotations["verdict"], "warned");
    }

    #[test]
    fn audit_mode_allows_silently_with_audit_annotations() {
        let decision = judge(
            &format!("action: audit\n{CAPS}"),
            &scale_by(AGENT, Some(3), 25),
        );
        let response = review_response("uid-1", &decision);
        assert!(response.allowed && response.warnings.is_empty());
        assert_eq!(response.audit_annotations["verdict"], "audited");
        assert!(
            response.audit_annotations["findings"]
                .contains("25 replicas requested, above the cap of 20")
        );
    }

    #[test]
    fn clipping_respects_character_boundaries() {
        let long = "ü".repeat(200);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), MAX_WARNING_CHARS);
        assert!(clipped.ends_with('…'));
        assert_eq!(clip("short"), "short");
    }
}
