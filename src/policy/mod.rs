//! The policy: what a platform team writes in a `slo-guard.io/policy` ConfigMap, one
//! file per section, the value types those sections are written in, and loading one
//! (parsing and validating it). Which policies are in force is `crate::store`'s.

// The policy document, one file per section, in the order policies write them.
mod spec;
pub use spec::{GitOpsMode, Mode, PolicySpec};
mod matcher;
pub use matcher::{LabelOperator, LabelRequirement, LabelSelector, MatchSpec};
mod identity;
pub use identity::{ActorSet, IdentitySpec, Pattern};
mod agents;
pub use agents::{AgentAction, AgentAnnotation, AgentSpec, ForbiddenAction};
mod slo;
pub use slo::{BudgetSpec, BurnRateRow, ResolvedSource, SloSpec};
mod traffic;
pub use traffic::TrafficSpec;
mod scaling;
pub use scaling::{OnExceed, ScalingSpec, Step};
mod windows;
pub use windows::{DEFAULT_MAX_EXCEPTION, FreezeWindow, WindowsSpec, valid_window_name};
mod autonomy;
pub use autonomy::{ApprovalSpec, AutonomySpec, Tier, TierRule};
mod scope;
pub use scope::ScopeSpec;
mod reflection;
pub use reflection::ReflectionPolicy;
mod prometheus;
pub use prometheus::{OnError, PrometheusSpec};

// What validation reports, and the checks several sections share.
mod check;
use check::{FieldError, check_fraction, check_query};

// Loading: from a ConfigMap's YAML to a validated policy.
mod load;
pub(crate) use load::deserialize_strict;
pub use load::{
    POLICY_KEY, Policy, PolicyError, PolicyRef, parse_policy, parse_policy_configmap,
    resolve_slo_source,
};

// The value types sections are written in, parsed when the policy is loaded.
/// `HH:MM` times of day (freeze windows).
pub mod clock;
pub use clock::ClockTime;
/// Prometheus durations (`5m`, `30d`).
pub mod duration;
pub use duration::PromDuration;
/// Memory quantities (`4Gi`).
pub mod quantity;
pub use quantity::MemoryQuantity;
/// The thresholds reflections may change, and their values.
pub mod threshold;
pub use threshold::{Threshold, ThresholdPath, Thresholds};

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
