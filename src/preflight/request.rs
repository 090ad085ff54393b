//! What a preflight asks about, and the AdmissionReviews it stands for: the intended
//! change is turned into the very review the apiserver would send for it, so the
//! webhook's own parsing, classification and decision judge it.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::PreflightError;
use crate::cli::manifests::Manifest;
use crate::cli::request::{ManifestChange, Operation, Requester, Subresource, build_review};

/// `POST /v1/preflight`'s body.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreflightRequest {
    /// The object the change is about.
    pub workload: WorkloadRef,
    /// What the agent means to do to it.
    pub change: IntendedChange,
    /// Ask about another identity than the caller's own; the caller needs the RBAC to
    /// impersonate it.
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    /// The field manager the change will be sent with (`options.fieldManager`), which a
    /// policy may use to tell agents apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_manager: Option<String>,
    /// The object as stored now. Read from the cluster when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Value>,
}

/// The object the change is about.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadRef {
    /// Defaults by kind: `apps/v1` for Deployments and StatefulSets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Its kind, e.g. `Deployment`.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// An identity to ask about, as `kubectl --as` and `--as-group` name it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subject {
    /// The user name.
    pub user: String,
    /// Its groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// The change an agent intends: an action with its replicas, or a patch.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntendedChange {
    /// `scale` (with `replicas`), `restart`, `delete`, `create` (with `object`), or any
    /// agent action (`update-env`, `fix-image`, ...) with a `patch` or an `object`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The replicas a `scale` goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// A JSON merge patch (RFC 7386, `kubectl patch --type merge`) on the current object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Value>,
    /// The whole object after the change: a create, or a replace of the current object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    /// Annotations the change will set (the decision context: `slo-guard.io/decision-id`,
    /// `reason`, ...). A scale that sets them is sent as a patch of the workload, since a
    /// Scale carries no annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// A `delete`'s `propagationPolicy` (`Background`, kubectl's default, `Foreground`,
    /// or `Orphan`, which leaves the workloads the object owns in place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation_policy: Option<String>,
}

/// The reviews a preflight judges.
#[derive(Debug, Clone)]
pub struct Reviews {
    /// The intended change, as the apiserver would send it to the validating webhook.
    pub intended: Vec<u8>,
    /// `kubectl scale` by the same identity, one replica down and one up, for the replica
    /// envelope; absent when the object has no replicas or their number is unknown.
    pub probes: Option<ReplicaProbes>,
}

/// Scales one replica down and up from the current count, by the same identity: what
/// the replica envelope is searched from.
#[derive(Debug, Clone)]
pub struct ReplicaProbes {
    /// The replicas now.
    pub current: u32,
    /// One replica fewer; absent at zero.
    pub down: Option<Vec<u8>>,
    /// One replica more.
    pub up: Vec<u8>,
}

/// The kinds with a `scale` subresource slo-guard judges, and so a replica envelope.
fn scalable(kind: &str) -> bool {
    matches!(kind, "Deployment" | "StatefulSet")
}

pub(crate) fn default_api_version(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Deployment" | "StatefulSet" | "ReplicaSet" | "DaemonSet" => "apps/v1",
        "HorizontalPodAutoscaler" => "autoscaling/v2",
        "ConfigMap" | "Pod" | "Service" | "ReplicationController" => "v1",
        "Job" | "CronJob" => "batch/v1",
        _ => return None,
    })
}

/// RFC 7386: `patch` applied to `target`.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(fields), Value::Object(changes)) => {
            for (key, change) in changes {
                if change.is_null() {
                    fields.remove(key);
                } else {
                    merge_patch(fields.entry(key.clone()).or_insert(Value::Null), change);
                }
            }
        }
        (target, patch) => {
            let mut patch = patch.clone();
            if let Value::Object(fields) = &mut patch {
                // Nulls in a patch that replaces a non-object remove nothing: drop them.
                fields.retain(|_, v| !v.is_null());
            }
            *target = patch;
        }
    }
}

/// The JSON merge patch that turns `from` into `to` (objects field by field, anything
/// else replaced whole). For tests and the CLI, which hold both objects.
pub fn merge_diff(from: &Value, to: &Value) -> Value {
    match (from, to) {
        (Value::Object(before), Value::Object(after)) => {
            let mut patch = serde_json::Map::new();
            for (key, old) in before {
                match after.get(key) {
                    None => {
                        patch.insert(key.clone(), Value::Null);
                    }
                    Some(new) if new != old => {
                        patch.insert(key.clone(), merge_diff(old, new));
                    }
                    Some(_) => {}
                }
            }
            for (key, new) in after {
                if !before.contains_key(key) {
                    patch.insert(key.clone(), new.clone());
                }
            }
            Value::Object(patch)
        }
        (_, to) => to.clone(),
    }
}

impl PreflightRequest {
    /// The workload's `apiVersion`: as given, or the default of its kind.
    pub fn api_version(&self) -> Result<String, PreflightError> {
        match (
            &self.workload.api_version,
            default_api_version(&self.workload.kind),
        ) {
            (Some(version), _) => Ok(version.clone()),
            (None, Some(version)) => Ok(version.to_string()),
            (None, None) => Err(PreflightError::Invalid(format!(
                "workload.apiVersion is needed for kind {}",
                self.workload.kind
            ))),
        }
    }

    /// A scale alone, sent to the `scale` subresource: judged on the watch cache, like
    /// admission judges it, with no need of the stored object.
    pub fn is_plain_scale(&self) -> bool {
        let change = &self.change;
        change.action.as_deref() == Some("scale")
            && change.patch.is_none()
            && change.object.is_none()
            && change.annotations.is_empty()
    }

    /// Checks what can be checked before anything is read.
    pub fn validate(&self) -> Result<(), PreflightError> {
        let workload = &self.workload;
        if workload.kind.is_empty() || workload.namespace.is_empty() || workload.name.is_empty() {
            return Err(PreflightError::Invalid(
                "workload needs kind, namespace and name".into(),
            ));
        }
        self.api_version()?;
        let change = &self.change;
        match change.action.as_deref() {
            Some("scale") if change.replicas.is_none() => Err(PreflightError::Invalid(
                "change.action scale needs change.replicas".into(),
            )),
            Some("scale") if !scalable(&workload.kind) => Err(PreflightError::Invalid(format!(
                "{} has no replicas slo-guard judges; scale a Deployment or a StatefulSet",
                workload.kind
            ))),
            Some("create") if change.object.is_none() => Err(PreflightError::Invalid(
                "change.action create needs change.object".into(),
            )),
            action if change.propagation_policy.is_some() && action != Some("delete") => {
                Err(PreflightError::Invalid(
                    "change.propagationPolicy goes with change.action delete".into(),
                ))
            }
            Some("delete")
                if !matches!(
                    change.propagation_policy.as_deref(),
                    None | Some("Background" | "Foreground" | "Orphan")
                ) =>
            {
                Err(PreflightError::Invalid(
                    "change.propagationPolicy is Background, Foreground or Orphan".into(),
                ))
            }
            Some("scale" | "restart" | "delete" | "create") => Ok(()),
            _ if change.patch.is_none() && change.object.is_none() && change.annotations.is_empty() => {
                Err(PreflightError::Invalid(
                    "change needs an action with replicas (scale), restart, delete, or a patch or object".into(),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The workload's identity on an object, so a patch cannot move the change elsewhere.
    fn stamp_identity(&self, object: &mut Value, api_version: &str) {
        if let Value::Object(fields) = object {
            fields.insert("apiVersion".into(), Value::from(api_version));
            fields.insert("kind".into(), Value::from(self.workload.kind.as_str()));
            let metadata = fields.entry("metadata").or_insert_with(|| json!({}));
            if !metadata.is_object() {
                *metadata = json!({});
            }
            if let Some(metadata) = metadata.as_object_mut() {
                metadata.insert("name".into(), Value::from(self.workload.name.as_str()));
                metadata.insert(
                    "namespace".into(),
                    Value::from(self.workload.namespace.as_str()),
                );
            }
        }
    }

    /// The reviews for this request by `requester`, on `current` (the object as stored,
    /// if it exists). `cached_replicas` is what the watch cache holds, for a scale when
    /// the object itself is unknown.
    pub fn reviews(
        &self,
        requester: &Requester,
        current: Option<&Value>,
        cached_replicas: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<Reviews, PreflightError> {
        self.validate()?;
        let api_version = self.api_version()?;
        let manifest = |origin: &str, value: Value| Manifest {
            origin: origin.to_string(),
            value,
        };
        let current = current.cloned().map(|mut value| {
            self.stamp_identity(&mut value, &api_version);
            value
        });
        let current_replicas = current
            .as_ref()
            .and_then(|c| c.pointer("/spec/replicas"))
            .and_then(Value::as_u64)
            .and_then(|r| u32::try_from(r).ok())
            .or(cached_replicas)
            // The API defaults a workload's replicas to 1.
            .or_else(|| current.as_ref().map(|_| 1));
        // A stand-in for the stored workload when only its replica count is known: a
        // scale request shows webhooks a Scale, built from these fields alone.
        let scale_base = |replicas: u32| {
            let mut base = current.clone().unwrap_or_else(|| json!({}));
            self.stamp_identity(&mut base, &api_version);
            if let Some(spec) = base
                .as_object_mut()
                .map(|f| f.entry("spec").or_insert_with(|| json!({})))
                && let Some(spec) = spec.as_object_mut()
            {
                spec.insert("replicas".into(), Value::from(replicas));
            }
            base
        };
        let scale_review = |to: u32| -> Result<Vec<u8>, PreflightError> {
            let from = current_replicas.ok_or_else(|| {
                PreflightError::NotFound(format!(
                    "{} {}/{}: its replicas are not known (not in the watch cache; give `current`)",
                    self.workload.kind, self.workload.namespace, self.workload.name
                ))
            })?;
            let change = ManifestChange {
                object: Some(manifest("scale", scale_base(to))),
                old: Some(manifest("current", scale_base(from))),
                operation: Some(Operation::Update),
                subresource: Some(Subresource::Scale),
                propagation_policy: None,
            };
            encode(build_review(&change, requester)?)
        };

        let change = &self.change;
        let needs_current = |what: &str| {
            current.clone().ok_or_else(|| {
                PreflightError::NotFound(format!(
                    "{} {}/{} does not exist, so it cannot be {what}",
                    self.workload.kind, self.workload.namespace, self.workload.name
                ))
            })
        };
        let intended = match change.action.as_deref() {
            Some("scale") if self.is_plain_scale() => {
                scale_review(change.replicas.unwrap_or_default())?
            }
            Some("delete") => {
                let old = needs_current("deleted")?;
                // Orphaning decides whether the workloads the object owns are deleted.
                encode(build_review(
                    &ManifestChange {
                        object: None,
                        old: Some(manifest("current", old)),
                        operation: Some(Operation::Delete),
                        subresource: None,
                        propagation_policy: change.propagation_policy.clone(),
                    },
                    requester,
                )?)?
            }
            action => {
                let mut object = match (&change.object, &current) {
                    (Some(object), _) => object.clone(),
                    (None, Some(current)) => current.clone(),
                    (None, None) => needs_current("patched")?,
                };
                if let Some(patch) = &change.patch {
                    merge_patch(&mut object, patch);
                }
                if let Some(replicas) = change.replicas {
                    merge_patch(&mut object, &json!({"spec": {"replicas": replicas}}));
                }
                if action == Some("restart") {
                    let at = now.to_rfc3339_opts(SecondsFormat::Secs, true);
                    merge_patch(
                        &mut object,
                        &json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": at}}}}}),
                    );
                }
                if !change.annotations.is_empty() {
                    merge_patch(
                        &mut object,
                        &json!({"metadata": {"annotations": change.annotations}}),
                    );
                }
                self.stamp_identity(&mut object, &api_version);
                let create = action == Some("create") || current.is_none();
                encode(build_review(
                    &ManifestChange {
                        object: Some(manifest("intended", object)),
                        old: (!create)
                            .then(|| current.clone().map(|c| manifest("current", c)))
                            .flatten(),
                        operation: Some(if create {
                            Operation::Create
                        } else {
                            Operation::Update
                        }),
                        subresource: None,
                        propagation_policy: None,
                    },
                    requester,
                )?)?
            }
        };
        let probes = match current_replicas {
            Some(from) if scalable(&self.workload.kind) => Some(ReplicaProbes {
                current: from,
                down: from.checked_sub(1).map(scale_review).transpose()?,
                up: scale_review(from.saturating_add(1))?,
            }),
            _ => None,
        };
        Ok(Reviews { intended, probes })
    }
}

fn encode(review: Value) -> Result<Vec<u8>, PreflightError> {
    serde_json::to_vec(&review)
        .map_err(|e| PreflightError::Internal(format!("cannot encode the review: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_diff_applied_gives_the_target_back() {
        let from = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]});
        let to = json!({"a": 1, "b": {"c": 5}, "e": [2], "f": "new"});
        let diff = merge_diff(&from, &to);
        assert_eq!(
            diff,
            json!({"b": {"c": 5, "d": null}, "e": [2], "f": "new"})
        );
        let mut patched = from.clone();
        merge_patch(&mut patched, &diff);
        assert_eq!(patched, to);
    }

    #[test]
    fn requests_say_what_they_lack() {
        let request: PreflightRequest = serde_json::from_value(json!({
            "workload": {"kind": "Deployment", "namespace": "payments", "name": "checkout"},
            "change": {"action": "scale"}
        }))
        .expect("parses");
        assert!(
            matches!(request.validate(), Err(PreflightError::Invalid(m)) if m.contains("replicas"))
        );
        let unknown = serde_json::from_value::<PreflightRequest>(json!({
            "workload": {"kind": "Deployment", "namespace": "p", "name": "c"},
            "change": {"action": "scale", "replicas": 2},
            "surprise": true
        }));
        assert!(unknown.is_err(), "unknown fields are refused, not ignored");
        let gadget: PreflightRequest = serde_json::from_value(json!({
            "workload": {"kind": "Gadget", "namespace": "p", "name": "c"},
            "change": {"action": "delete"}
        }))
        .expect("parses");
        assert!(gadget.validate().is_err());
    }

    #[test]
    fn a_scale_is_the_scale_subresource_review_with_probes_around_it() {
        let request: PreflightRequest = serde_json::from_value(json!({
            "workload": {"kind": "Deployment", "namespace": "payments", "name": "checkout"},
            "change": {"action": "scale", "replicas": 6}
        }))
        .expect("parses");
        let requester = Requester {
            user: "system:serviceaccount:ai-agents:fixer".into(),
            ..Requester::default()
        };
        let reviews = request
            .reviews(&requester, None, Some(3), Utc::now())
            .expect("reviews");
        let intended: Value = serde_json::from_slice(&reviews.intended).expect("json");
        assert_eq!(intended["request"]["subResource"], "scale");
        assert_eq!(intended["request"]["object"]["spec"]["replicas"], 6);
        assert_eq!(intended["request"]["oldObject"]["spec"]["replicas"], 3);
        let probes = reviews.probes.expect("probes");
        assert_eq!(probes.current, 3);
        let up: Value = serde_json::from_slice(&probes.up).expect("json");
        assert_eq!(up["request"]["object"]["spec"]["replicas"], 4);
        // Unknown replicas and no object: nothing to judge against.
        assert!(matches!(
            request.reviews(&requester, None, None, Utc::now()),
            Err(PreflightError::NotFound(_))
        ));
    }

    #[test]
    fn a_delete_carries_its_propagation_policy() {
        let request = |change: Value| -> PreflightRequest {
            serde_json::from_value(json!({
                "workload": {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "payments", "name": "handle"},
                "change": change
            }))
            .expect("parses")
        };
        let requester = Requester {
            user: "system:serviceaccount:ai-agents:fixer".into(),
            ..Requester::default()
        };
        let current =
            json!({"metadata": {"name": "handle", "namespace": "payments", "uid": "u-1"}});
        let options_of = |change: Value| -> Value {
            let reviews = request(change)
                .reviews(&requester, Some(&current), None, Utc::now())
                .expect("reviews");
            let intended: Value = serde_json::from_slice(&reviews.intended).expect("json");
            intended["request"]["options"].clone()
        };
        assert_eq!(
            options_of(json!({"action": "delete", "propagationPolicy": "Orphan"}))["propagationPolicy"],
            "Orphan"
        );
        // kubectl's default.
        assert_eq!(
            options_of(json!({"action": "delete"}))["propagationPolicy"],
            "Background"
        );
        for wrong in [
            json!({"action": "delete", "propagationPolicy": "Sideways"}),
            json!({"action": "restart", "propagationPolicy": "Orphan"}),
        ] {
            assert!(
                matches!(request(wrong.clone()).validate(), Err(PreflightError::Invalid(m)) if m.contains("propagationPolicy")),
                "{wrong}"
            );
        }
    }
}
