//! `prometheus`: what a decision does without its figures.

use serde::{Deserialize, Serialize};

use super::{FieldError, PromDuration};

/// What a decision does when its Prometheus data cannot be had.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Allow the change.
    Allow,
    /// Deny it.
    Deny,
    /// Deny agents' changes; allow the rest.
    DenyAgents,
}

/// `prometheus`: what a decision does without its figures.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusSpec {
    /// What a decision does when its data cannot be had; `deny-agents` by default.
    #[serde(default = "default_on_error")]
    pub on_error: OnError,
    /// The decision is taken within it (`2s`).
    #[serde(default = "default_timeout")]
    pub timeout: PromDuration,
    /// Samples older than this count as stale data (`2m`).
    #[serde(default = "default_max_staleness")]
    pub max_staleness: PromDuration,
}

impl Default for PrometheusSpec {
    fn default() -> Self {
        Self {
            on_error: default_on_error(),
            timeout: default_timeout(),
            max_staleness: default_max_staleness(),
        }
    }
}

fn default_on_error() -> OnError {
    OnError::DenyAgents
}

fn default_timeout() -> PromDuration {
    PromDuration::parse("2s").expect("constant duration is valid")
}

fn default_max_staleness() -> PromDuration {
    PromDuration::parse("2m").expect("constant duration is valid")
}

impl PrometheusSpec {
    /// The timeout leaves the apiserver's 30s admission limit some room.
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if self.timeout.duration() > std::time::Duration::from_secs(25) {
            return Err(FieldError::new(
                "prometheus.timeout",
                format!(
                    "{} is longer than an admission webhook may take (the apiserver allows at most 30s)",
                    self.timeout
                ),
            ));
        }
        Ok(())
    }
}
