//! `reflection`: how far reflections may loosen this policy's thresholds.

use serde::{Deserialize, Serialize};

use super::{FieldError, PolicySpec, Thresholds, threshold};

/// How reflections may change this policy's thresholds.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReflectionPolicy {
    /// The furthest a reflection may loosen each threshold (dotted paths, as in
    /// reflections). A threshold not listed may only be tightened.
    #[serde(default, deserialize_with = "threshold::deserialize_bounds")]
    pub loosen_bounds: Thresholds,
    /// Whether slo-guard's own proposals (learned from outcomes) apply without a person
    /// accepting them.
    #[serde(default)]
    pub apply_proposals: bool,
}

impl ReflectionPolicy {
    /// Every bound is at least as loose as the value `spec`, the policy it belongs to,
    /// sets itself (paths and values are parsed as they are read).
    pub(crate) fn validate(&self, spec: &PolicySpec) -> Result<(), FieldError> {
        for (&threshold, bound) in &self.loosen_bounds {
            let field = format!("reflection.loosenBounds.{}", threshold.as_str());
            if let Some(current) = threshold.read(spec)
                && threshold.tightens(bound, &current) == Some(true)
                && *bound != current
            {
                return Err(FieldError::new(
                    &field,
                    format!(
                        "{bound} is stricter than the policy's own {current}: a loosening bound must be at least as loose"
                    ),
                ));
            }
        }
        Ok(())
    }
}
