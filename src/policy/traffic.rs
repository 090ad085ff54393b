//! `traffic`: the spike check.

use serde::{Deserialize, Serialize};

use super::{FieldError, check_query};

/// `traffic`: a spike is `current` / `baseline` at or above `spikeRatio`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficSpec {
    /// PromQL for the request rate now.
    pub current: String,
    /// PromQL for the rate to compare it with (`offset 1w`).
    pub baseline: String,
    /// The ratio that counts as a spike.
    pub spike_ratio: f64,
}

impl TrafficSpec {
    /// Two queries without `{{window}}`, and a ratio above 1.
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        check_query("traffic.current", &self.current, false)?;
        check_query("traffic.baseline", &self.baseline, false)?;
        if !(self.spike_ratio.is_finite() && self.spike_ratio > 1.0) {
            return Err(FieldError::new(
                "traffic.spikeRatio",
                format!(
                    "{} must be above 1 (current traffic over baseline)",
                    self.spike_ratio
                ),
            ));
        }
        Ok(())
    }
}
