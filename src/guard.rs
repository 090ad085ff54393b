//! The webhook's work for one AdmissionReview, shared by the HTTPS server and the
//! offline `check` command: parse, classify, decide, answer, and record.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::admission::{AdmissionError, ReviewResponse, WorkloadLookup, classify, parse_review};
use crate::metrics::{DecisionLabels, Metrics};
use crate::policy::PolicyStore;
use crate::rules::{Decision, DecisionContext, decide};
use crate::{mutation, verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Validate,
    Mutate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        }
    }
}

/// The answer to one review, with the decision behind it when slo-guard governs the
/// request.
#[derive(Debug)]
pub struct Judgement {
    pub response: ReviewResponse,
    pub decision: Option<Decision>,
}

pub struct Guard {
    pub policies: Arc<PolicyStore>,
    pub workloads: Arc<dyn WorkloadLookup>,
    pub metrics: Arc<Metrics>,
}

impl Guard {
    pub fn new(
        policies: Arc<PolicyStore>,
        workloads: Arc<dyn WorkloadLookup>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            policies,
            workloads,
            metrics,
        }
    }

    pub fn review(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Judgement, AdmissionError> {
        let started = Instant::now();
        let request = parse_review(body)?;
        let Some(change) = classify(&request, self.workloads.as_ref())? else {
            return Ok(Judgement {
                response: ReviewResponse::allow(&request.uid),
                decision: None,
            });
        };
        let policies = self.policies.snapshot();
        let decision = decide(
            &change,
            &DecisionContext {
                policies: &policies,
                now,
            },
        );
        let response = match endpoint {
            Endpoint::Validate => verdict::review_response(&change.uid, &decision),
            // The validating webhook gives the denial; the mutating one only stamps what
            // it would admit.
            Endpoint::Mutate if decision.allowed() => {
                let patch = mutation::patch_for(&change, &decision);
                ReviewResponse::allow(&change.uid)
                    .with_patch(&patch)
                    .map_err(|e| AdmissionError::Malformed(format!("cannot encode patch: {e}")))?
            }
            Endpoint::Mutate => ReviewResponse::allow(&change.uid),
        };
        let verdict = verdict::verdict_word(&decision);
        if endpoint == Endpoint::Validate {
            self.count(&decision, verdict);
        }
        let rules: Vec<String> = decision
            .findings
            .iter()
            .map(|f| format!("{}:{}={}", f.source, f.rule, f.mode.as_str()))
            .collect();
        tracing::info!(
            target: "slo_guard::decision",
            uid = %change.uid,
            endpoint = endpoint.as_str(),
            object = %decision.target,
            class = decision.class.as_str(),
            actor = decision.actor.as_str(),
            user = %change.requester.username,
            dry_run = change.dry_run,
            verdict,
            policies = %decision.policies.join(","),
            rules = %rules.join(","),
            old_replicas = change.replicas.and_then(|r| r.old),
            new_replicas = change.replicas.map(|r| r.new),
            elapsed_us = started.elapsed().as_micros() as u64,
            "decision"
        );
        Ok(Judgement {
            response,
            decision: Some(decision),
        })
    }

    fn count(&self, decision: &Decision, verdict: &str) {
        if decision.findings.is_empty() {
            let policies: Vec<&str> = if decision.policies.is_empty() {
                vec!["none"]
            } else {
                decision.policies.iter().map(String::as_str).collect()
            };
            for policy in policies {
                self.metrics
                    .decisions
                    .get_or_create(&DecisionLabels {
                        policy: policy.to_string(),
                        rule: "none".to_string(),
                        verdict: verdict.to_string(),
                    })
                    .inc();
            }
            return;
        }
        for finding in &decision.findings {
            let outcome = match finding.mode {
                crate::policy::Mode::Enforce => "denied",
                crate::policy::Mode::Warn => "warned",
                crate::policy::Mode::Audit => "audited",
            };
            self.metrics
                .decisions
                .get_or_create(&DecisionLabels {
                    policy: finding.source.clone(),
                    rule: finding.rule.as_str().to_string(),
                    verdict: outcome.to_string(),
                })
                .inc();
        }
    }
}
