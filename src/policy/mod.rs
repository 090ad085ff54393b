//! Policy model and loading: parsing and validating `slo-guard.io/policy` ConfigMaps,
//! reading them from a directory or a cluster watch, and keeping the last good version
//! of each in force.

pub mod clock;
pub mod duration;
mod model;
pub mod quantity;
pub mod threshold;

pub use clock::ClockTime;
pub use duration::PromDuration;
pub use model::*;
pub use threshold::{Threshold, ThresholdPath};

use std::collections::BTreeMap;
use std::fmt;

use crate::admission::{ChangeClass, WorkloadKind};

/// The data key that holds a policy in its ConfigMap.
pub const POLICY_KEY: &str = "policy.yaml";

/// Identifies a policy by its ConfigMap: `namespace/name`, as denials print it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub id: PolicyRef,
    pub spec: PolicySpec,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A field has a bad value or type; `field` is the dotted path into the policy.
    #[error("{key}: field `{field}`: {message}")]
    Field {
        key: String,
        field: String,
        message: String,
    },
    #[error("{key}: {message}")]
    Document { key: String, message: String },
    #[error("ConfigMap {configmap} has no `{POLICY_KEY}` key (found: {found})")]
    MissingKey { configmap: String, found: String },
    #[error(
        "ConfigMap {configmap}: unexpected key `{key}`: a policy ConfigMap holds only `{POLICY_KEY}`"
    )]
    UnexpectedKey { configmap: String, key: String },
}

/// Parses and validates the YAML of one policy. `key` names where it came from, for errors.
pub fn parse_policy(key: &str, yaml: &str) -> Result<PolicySpec, PolicyError> {
    let spec: PolicySpec = deserialize_strict(key, yaml)?;
    validate(&spec).map_err(|(field, message)| PolicyError::Field {
        key: key.to_string(),
        field,
        message,
    })?;
    Ok(spec)
}

/// Deserializes YAML, naming the field path of the first error.
pub(crate) fn deserialize_strict<T: serde::de::DeserializeOwned>(
    key: &str,
    yaml: &str,
) -> Result<T, PolicyError> {
    if yaml.trim().is_empty() {
        return Err(PolicyError::Document {
            key: key.to_string(),
            message: "is empty".to_string(),
        });
    }
    let deserializer = serde_yaml::Deserializer::from_str(yaml);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let field = error.path().to_string();
        let mut message = error.into_inner().to_string();
        // serde_yaml repeats the path at the start of nested errors.
        if let Some((prefix, rest)) = message.split_once(": ")
            && field.starts_with(prefix)
        {
            message = rest.to_string();
        }
        if field == "." || field.is_empty() {
            PolicyError::Document {
                key: key.to_string(),
                message,
            }
        } else {
            PolicyError::Field {
                key: key.to_string(),
                field,
                message,
            }
        }
    })
}

/// Parses a policy ConfigMap's data. Every key other than `policy.yaml` is an error, so a
/// misnamed key cannot leave a workload unguarded without anyone noticing.
pub fn parse_policy_configmap(
    id: &PolicyRef,
    data: &BTreeMap<String, String>,
) -> Result<Policy, PolicyError> {
    if let Some(key) = data.keys().find(|key| key.as_str() != POLICY_KEY) {
        return Err(PolicyError::UnexpectedKey {
            configmap: id.to_string(),
            key: key.clone(),
        });
    }
    let yaml = data
        .get(POLICY_KEY)
        .ok_or_else(|| PolicyError::MissingKey {
            configmap: id.to_string(),
            found: if data.is_empty() {
                "no keys".to_string()
            } else {
                data.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        })?;
    let spec = parse_policy(POLICY_KEY, yaml)?;
    Ok(Policy {
        id: id.clone(),
        spec,
    })
}

/// Fills in a policy's `slo` from the spec its `slo.source` names, in the policy's
/// `namespace`, and checks the result as if it had been written inline. A policy
/// without a source is left as it is.
pub fn resolve_slo_source(
    key: &str,
    spec: &mut PolicySpec,
    namespace: &str,
    catalog: &crate::slo_spec::SloSpecCatalog,
) -> Result<(), PolicyError> {
    let Some(slo) = spec.slo.as_mut() else {
        return Ok(());
    };
    let Some(source) = slo.source.clone() else {
        return Ok(());
    };
    let error = |message: String| PolicyError::Field {
        key: key.to_string(),
        field: "slo.source".to_string(),
        message,
    };
    let mapped = catalog
        .resolve(&source, namespace, slo.written_period.as_ref())
        .map_err(|e| error(e.to_string()))?;
    slo.objective = mapped.objective;
    slo.period = mapped.period;
    slo.errors = mapped.errors;
    slo.total = mapped.total;
    slo.resolved = Some(std::sync::Arc::new(ResolvedSource {
        origin: mapped.origin.clone(),
        recorded: mapped.recorded,
    }));
    validate(spec).map_err(|(field, message)| {
        error(format!(
            "{}: what it gives does not pass as {field}: {message}",
            mapped.origin
        ))
    })
}

type FieldError = (String, String);

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    (field.to_string(), message.into())
}

fn check_fraction(field: &str, value: f64, low: f64, high: f64) -> Result<(), FieldError> {
    if value.is_finite() && (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(field_error(
            field,
            format!("{value} is outside {low}..{high}"),
        ))
    }
}

fn check_query(field: &str, query: &str, templated: bool) -> Result<(), FieldError> {
    if query.trim().is_empty() {
        return Err(field_error(field, "query is empty"));
    }
    if templated && !query.contains("{{window}}") {
        return Err(field_error(
            field,
            "query must contain {{window}} where the range goes, e.g. rate(x[{{window}}])",
        ));
    }
    if !templated && query.contains("{{window}}") {
        return Err(field_error(
            field,
            "traffic queries have no {{window}}: write the range, e.g. rate(x[5m])",
        ));
    }
    // Only these placeholders are filled in; any other would reach Prometheus verbatim
    // and fail every decision at admission time instead of here.
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(field_error(field, "unclosed {{ placeholder"));
        };
        let name = after[..end].trim();
        if !matches!(name, "window" | "namespace" | "name") {
            return Err(field_error(
                field,
                format!(
                    "unknown placeholder {{{{{name}}}}}: use {{{{window}}}}, {{{{namespace}}}} or {{{{name}}}}"
                ),
            ));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

/// A freeze is weekly (`days`, `start`/`end`, `timezone`) or dated (`from`, `until`),
/// never both; names are unique, so that an exception names one freeze.
fn validate_windows(windows: &WindowsSpec) -> Result<(), FieldError> {
    let mut names = Vec::<&str>::new();
    for (index, window) in windows.freeze.iter().enumerate() {
        let field = format!("windows.freeze[{index}]");
        if let Some(name) = &window.name {
            if !valid_window_name(name) {
                return Err(field_error(
                    &format!("{field}.name"),
                    format!(
                        "{name:?} is not a name: use 1-63 of [A-Za-z0-9._-], starting with a letter or digit"
                    ),
                ));
            }
            if names.contains(&name.as_str()) {
                return Err(field_error(
                    &format!("{field}.name"),
                    format!("{name:?} names another freeze too: names must be unique"),
                ));
            }
            names.push(name);
        }
        if window.is_dated() {
            let weekly: Vec<&str> = [
                ("days", !window.days.is_empty()),
                ("start", window.start.is_some()),
                ("end", window.end.is_some()),
                ("timezone", window.timezone.is_some()),
            ]
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect();
            if let Some(first) = weekly.first() {
                return Err(field_error(
                    &format!("{field}.{first}"),
                    format!(
                        "a freeze is either weekly (days, start, end, timezone) or dated (from, until), not both: this one sets from/until and {}",
                        weekly.join(", ")
                    ),
                ));
            }
            let (Some(from), Some(until)) = (window.from, window.until) else {
                let missing = if window.from.is_none() {
                    "from"
                } else {
                    "until"
                };
                return Err(field_error(
                    &format!("{field}.{missing}"),
                    "a dated freeze needs both from and until (RFC 3339 with an offset)",
                ));
            };
            if from >= until {
                return Err(field_error(
                    &format!("{field}.until"),
                    format!(
                        "{} is not after from {}: a freeze ends after it starts",
                        until.to_rfc3339(),
                        from.to_rfc3339()
                    ),
                ));
            }
            continue;
        }
        if window.days.is_empty() {
            return Err(field_error(
                &format!("{field}.days"),
                "lists no days (a weekly freeze needs days and a timezone; a dated one, from and until)",
            ));
        }
        if window.timezone.is_none() {
            return Err(field_error(
                &format!("{field}.timezone"),
                "is missing: a weekly freeze needs an IANA time zone, such as Europe/Berlin or UTC",
            ));
        }
    }
    Ok(())
}

/// A freeze's name: what an exception names, so no `;`, `=` or spaces.
pub fn valid_window_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Bounds that serde cannot express. Returns the dotted field path and the reason.
fn validate(spec: &PolicySpec) -> Result<(), FieldError> {
    if spec.matcher.kinds.is_empty() {
        return Err(field_error(
            "match.kinds",
            "lists no kinds (use Deployment and/or StatefulSet)",
        ));
    }
    let mut seen = Vec::<WorkloadKind>::new();
    for kind in &spec.matcher.kinds {
        if seen.contains(kind) {
            return Err(field_error(
                "match.kinds",
                format!("{} is listed twice", kind.as_str()),
            ));
        }
        seen.push(*kind);
    }
    if let Some(min) = spec.agents.min_confidence {
        check_fraction("agents.minConfidence", min, 0.0, 1.0)?;
    }
    if let Some(scaling) = &spec.scaling {
        if let (Some(min), Some(max)) = (scaling.min_replicas, scaling.max_replicas)
            && min > max
        {
            return Err(field_error(
                "scaling.minReplicas",
                format!("{min} is above scaling.maxReplicas {max}"),
            ));
        }
        if let Some(Step::Percent(percent)) = scaling.max_step
            && percent > 1000.0
        {
            return Err(field_error(
                "scaling.maxStep",
                format!("{percent}% is above 1000%"),
            ));
        }
    }
    if let Some(slo) = &spec.slo {
        // With a source, the objective and the queries are the spec's: they are
        // checked once the store resolves it (`resolve_slo_source`).
        if !slo.awaits_source() {
            if !(slo.objective.is_finite() && slo.objective > 0.0 && slo.objective < 100.0) {
                return Err(field_error(
                    "slo.objective",
                    format!(
                        "{} must be a percentage strictly between 0 and 100, e.g. 99.9",
                        slo.objective
                    ),
                ));
            }
            check_query("slo.errors", &slo.errors, true)?;
            check_query("slo.total", &slo.total, true)?;
        }
        if let Some(rate) = slo.min_request_rate
            && !(rate.is_finite() && rate >= 0.0)
        {
            return Err(field_error(
                "slo.minRequestRate",
                format!("{rate} must be a non-negative number"),
            ));
        }
        check_fraction(
            "slo.budget.freezeBelow",
            slo.budget.freeze_below,
            -100.0,
            1.0,
        )?;
        if let Some(agent_floor) = slo.budget.agent_freeze_below {
            check_fraction("slo.budget.agentFreezeBelow", agent_floor, -100.0, 1.0)?;
            if agent_floor < slo.budget.freeze_below {
                return Err(field_error(
                    "slo.budget.agentFreezeBelow",
                    format!(
                        "{agent_floor} is below slo.budget.freezeBelow {}: agents must not get a lower floor than people",
                        slo.budget.freeze_below
                    ),
                ));
            }
        }
        for (index, row) in slo.burn_rate.iter().enumerate() {
            let field = format!("slo.burnRate[{index}]");
            if !(row.factor.is_finite() && row.factor > 0.0) {
                return Err(field_error(
                    &format!("{field}.factor"),
                    format!("{} must be above 0", row.factor),
                ));
            }
            if row.short.duration() >= row.long.duration() {
                return Err(field_error(
                    &format!("{field}.short"),
                    format!("{} must be shorter than long {}", row.short, row.long),
                ));
            }
        }
    }
    if let Some(traffic) = &spec.traffic {
        check_query("traffic.current", &traffic.current, false)?;
        check_query("traffic.baseline", &traffic.baseline, false)?;
        if !(traffic.spike_ratio.is_finite() && traffic.spike_ratio > 1.0) {
            return Err(field_error(
                "traffic.spikeRatio",
                format!(
                    "{} must be above 1 (current traffic over baseline)",
                    traffic.spike_ratio
                ),
            ));
        }
    }
    if let Some(windows) = &spec.windows {
        validate_windows(windows)?;
    }
    if let Some(approval) = &spec.approval
        && approval.required_for.contains(&ChangeClass::Config)
    {
        return Err(field_error(
            "approval.requiredFor",
            "config changes cannot require approval",
        ));
    }
    if let Some(max) = &spec.scope.max_memory
        && quantity::parse_bytes(max).is_none()
    {
        return Err(field_error(
            "scope.maxMemory",
            format!("{max:?} is not a memory quantity such as 4Gi"),
        ));
    }
    if !(spec.scope.max_memory_factor.is_finite() && spec.scope.max_memory_factor >= 1.0) {
        return Err(field_error(
            "scope.maxMemoryFactor",
            format!("{} must be at least 1", spec.scope.max_memory_factor),
        ));
    }
    if let Some(autonomy) = &spec.autonomy {
        for (index, rule) in autonomy.rules.iter().enumerate() {
            let field = format!("autonomy.rules[{index}]");
            if let Some(factor) = rule.min_memory_factor
                && !(factor.is_finite() && factor >= 1.0)
            {
                return Err(field_error(
                    &format!("{field}.minMemoryFactor"),
                    format!("{factor} must be at least 1"),
                ));
            }
            if let Some(floor) = rule.budget_below {
                check_fraction(&format!("{field}.budgetBelow"), floor, -100.0, 1.0)?;
                if spec.slo.is_none() {
                    return Err(field_error(
                        &format!("{field}.budgetBelow"),
                        "needs an `slo` section to read the error budget from",
                    ));
                }
            }
        }
    }
    for (path, value) in &spec.reflection.loosen_bounds {
        let field = format!("reflection.loosenBounds.{path}");
        let threshold =
            ThresholdPath::parse(path).ok_or_else(|| field_error(&field, "unknown threshold"))?;
        let bound = threshold
            .parse_value(value)
            .map_err(|message| field_error(&field, message))?;
        if let Some(current) = threshold.read(spec)
            && threshold.tightens(&bound, &current) == Some(true)
            && bound != current
        {
            return Err(field_error(
                &field,
                format!(
                    "{bound} is stricter than the policy's own {current}: a loosening bound must be at least as loose"
                ),
            ));
        }
    }
    if spec.prometheus.timeout.duration() > std::time::Duration::from_secs(25) {
        return Err(field_error(
            "prometheus.timeout",
            format!(
                "{} is longer than an admission webhook may take (the apiserver allows at most 30s)",
                spec.prometheus.timeout
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
