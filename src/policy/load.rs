//! Loading a policy: its ConfigMap's key, its name, its errors, and parsing and
//! validating it (with its `slo.source` resolved against the SLO spec catalog).

use std::collections::BTreeMap;
use std::fmt;

use super::check::FieldError;
use super::{PolicySpec, ResolvedSource};

/// The data key that holds a policy in its ConfigMap.
pub const POLICY_KEY: &str = "policy.yaml";

/// Identifies a policy by its ConfigMap: `namespace/name`, as denials print it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyRef {
    /// The ConfigMap's namespace.
    pub namespace: String,
    /// The ConfigMap's name.
    pub name: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A policy in force: the ConfigMap it came from, and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The ConfigMap it came from.
    pub id: PolicyRef,
    /// What it says, validated (and, with `slo.source`, resolved).
    pub spec: PolicySpec,
}

/// Why a policy or reflection ConfigMap was rejected; the text is what its owner sees
/// (in the `kubectl apply` denial, the log and the ConfigMap's Events).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A field has a bad value or type; `field` is the dotted path into the policy.
    #[error("{key}: field `{field}`: {message}")]
    Field {
        /// The data key the document came from.
        key: String,
        /// The dotted path into the document (`slo.burnRate[0].short`).
        field: String,
        /// What is wrong with the value.
        message: String,
    },
    /// The document as a whole is not one: empty, not a map, not YAML.
    #[error("{key}: {message}")]
    Document {
        /// The data key the document came from.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A policy ConfigMap without its `policy.yaml` key.
    #[error("ConfigMap {configmap} has no `{POLICY_KEY}` key (found: {found})")]
    MissingKey {
        /// `namespace/name` of the ConfigMap.
        configmap: String,
        /// The keys it has instead.
        found: String,
    },
    /// A policy ConfigMap with a key other than `policy.yaml`.
    #[error(
        "ConfigMap {configmap}: unexpected key `{key}`: a policy ConfigMap holds only `{POLICY_KEY}`"
    )]
    UnexpectedKey {
        /// `namespace/name` of the ConfigMap.
        configmap: String,
        /// The stray key.
        key: String,
    },
}

/// Parses and validates the YAML of one policy. `key` names where it came from, for errors.
pub fn parse_policy(key: &str, yaml: &str) -> Result<PolicySpec, PolicyError> {
    let spec: PolicySpec = deserialize_strict(key, yaml)?;
    spec.validate()
        .map_err(|FieldError { field, message }| PolicyError::Field {
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
    spec.validate().map_err(|FieldError { field, message }| {
        error(format!(
            "{}: what it gives does not pass as {field}: {message}",
            mapped.origin
        ))
    })
}
