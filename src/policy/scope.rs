//! `scope`: the bounds of what a declared action may change.

use serde::{Deserialize, Serialize};

use super::{FieldError, MemoryQuantity, Pattern};

/// `scope`: the bounds of what a declared action may change.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScopeSpec {
    /// The largest memory request or limit `increase-memory` may set, e.g. `4Gi`.
    #[serde(default)]
    pub max_memory: Option<MemoryQuantity>,
    /// The largest factor (new over old) `increase-memory` may apply.
    #[serde(default = "default_memory_factor")]
    pub max_memory_factor: f64,
    /// Env var names that must never get a literal value from an agent.
    #[serde(default = "default_secret_names")]
    pub secret_names: Vec<Pattern>,
}

impl Default for ScopeSpec {
    fn default() -> Self {
        Self {
            max_memory: None,
            max_memory_factor: default_memory_factor(),
            secret_names: default_secret_names(),
        }
    }
}

fn default_memory_factor() -> f64 {
    2.0
}

fn default_secret_names() -> Vec<Pattern> {
    ["*PASSWORD*", "*TOKEN*", "*SECRET*", "*KEY*"]
        .into_iter()
        .map(Pattern::new)
        .collect()
}

impl ScopeSpec {
    /// The factor is at least 1 (`maxMemory` is parsed as it is read).
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if !(self.max_memory_factor.is_finite() && self.max_memory_factor >= 1.0) {
            return Err(FieldError::new(
                "scope.maxMemoryFactor",
                format!("{} must be at least 1", self.max_memory_factor),
            ));
        }
        Ok(())
    }
}
