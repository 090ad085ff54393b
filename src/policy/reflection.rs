//! `reflection`: how far reflections may loosen this policy's thresholds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{FieldError, PolicySpec, ThresholdPath};

/// How reflections may change this policy's thresholds.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReflectionPolicy {
    /// The furthest a reflection may loosen each threshold (dotted paths, as in
    /// reflections). A threshold not listed may only be tightened.
    #[serde(default)]
    pub loosen_bounds: BTreeMap<String, serde_yaml::Value>,
    /// Whether slo-guard's own proposals (learned from outcomes) apply without a person
    /// accepting them.
    #[serde(default)]
    pub apply_proposals: bool,
}

impl ReflectionPolicy {
    /// Every bound names a threshold, has a value it takes, and is at least as loose as
    /// the value `spec`, the policy it belongs to, sets itself.
    pub(crate) fn validate(&self, spec: &PolicySpec) -> Result<(), FieldError> {
        for (path, value) in &self.loosen_bounds {
            let field = format!("reflection.loosenBounds.{path}");
            let threshold = ThresholdPath::parse(path)
                .ok_or_else(|| FieldError::new(&field, "unknown threshold"))?;
            let bound = threshold
                .parse_value(value)
                .map_err(|message| FieldError::new(&field, message))?;
            if let Some(current) = threshold.read(spec)
                && threshold.tightens(&bound, &current) == Some(true)
                && bound != current
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
