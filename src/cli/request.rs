//! Builds the AdmissionReview the apiserver would send for a change given as manifests:
//! the object after the change, the object before it, and who asks. The fields slo-guard
//! reads are filled as kube-apiserver fills them (compared with captured reviews in the
//! golden test below): the resource and its version, `requestKind`, the namespace from the
//! manifest (or `default`), the impersonated user's groups, `options` and `dryRun`, and for
//! the `scale` subresource a `Scale` built from the workload.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::manifests::Manifest;

/// The operation of an admission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[value(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }

    fn options_kind(self) -> &'static str {
        match self {
            Operation::Create => "CreateOptions",
            Operation::Update => "UpdateOptions",
            Operation::Delete => "DeleteOptions",
        }
    }
}

/// The subresources slo-guard judges requests to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subresource {
    Scale,
}

/// Who asks and how: what `kubectl --as`, `--as-group`, `--field-manager` and
/// `--dry-run=server` would send.
#[derive(Debug, Clone, Default)]
pub struct Requester {
    /// The user name the request comes from.
    pub user: String,
    /// Groups given with the user; empty means the apiserver's defaults for the user.
    pub groups: Vec<String>,
    /// The field manager (`options.fieldManager`).
    pub field_manager: Option<String>,
    /// A server-side dry run.
    pub dry_run: bool,
}

/// One change as manifests.
#[derive(Debug, Clone)]
pub struct ManifestChange {
    /// The object after the change (for DELETE: the object deleted, if `old` is not given).
    pub object: Option<Manifest>,
    /// The object as stored before the change; absent for a CREATE.
    pub old: Option<Manifest>,
    /// CREATE without an old object, UPDATE with one, unless given.
    pub operation: Option<Operation>,
    /// The subresource the request is to, if any.
    pub subresource: Option<Subresource>,
    /// A DELETE's `propagationPolicy`; kubectl's default, `Background`, when absent.
    /// `Orphan` leaves the objects the deleted one owns in place.
    pub propagation_policy: Option<String>,
}

/// Why no AdmissionReview can be built from the manifests and flags.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A manifest cannot be the object of the request.
    #[error("{origin}: {message}")]
    Manifest {
        /// The manifest, as `file#index`.
        origin: String,
        /// What is wrong with it.
        message: String,
    },
    /// The flags do not describe one request.
    #[error("{0}")]
    Usage(String),
}

/// The resource (plural) the apiserver serves a kind under, for the kinds slo-guard's
/// webhooks are registered for.
fn resource_of(group: &str, kind: &str) -> Option<&'static str> {
    Some(match (group, kind) {
        ("apps", "Deployment") => "deployments",
        ("apps", "StatefulSet") => "statefulsets",
        ("apps", "ReplicaSet") => "replicasets",
        ("apps", "DaemonSet") => "daemonsets",
        ("autoscaling", "HorizontalPodAutoscaler") => "horizontalpodautoscalers",
        ("", "ConfigMap") => "configmaps",
        ("", "Pod") => "pods",
        ("", "Service") => "services",
        ("", "ReplicationController") => "replicationcontrollers",
        ("batch", "Job") => "jobs",
        ("batch", "CronJob") => "cronjobs",
        _ => return None,
    })
}

/// The groups the apiserver gives an impersonated user: those asked for, else a service
/// account's own groups; always `system:authenticated`.
pub fn groups_for(user: &str, groups: &[String]) -> Vec<String> {
    let mut all: Vec<String> = groups.to_vec();
    if all.is_empty()
        && let Some(namespace) = user
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .map(|(namespace, _)| namespace)
    {
        all.push("system:serviceaccounts".to_string());
        all.push(format!("system:serviceaccounts:{namespace}"));
    }
    if !all.iter().any(|g| g == "system:authenticated") {
        all.push("system:authenticated".to_string());
    }
    all
}

/// A random version-4 UUID, as the apiserver gives every review.
fn review_uid() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // The uid only has to be unique; a failed random source falls back to the clock.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = nanos.to_le_bytes();
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn group_version(manifest: &Manifest) -> Result<(String, String), RequestError> {
    let api_version = manifest
        .value
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| RequestError::Manifest {
            origin: manifest.origin.clone(),
            message: "no apiVersion".into(),
        })?;
    Ok(match api_version.split_once('/') {
        Some((group, version)) => (group.to_string(), version.to_string()),
        None => (String::new(), api_version.to_string()),
    })
}

/// The object as the apiserver hands it to webhooks: in its namespace (from the manifest,
/// or `default`), and on UPDATE with the identity, version and status of the stored
/// object, which a client cannot change through the main resource.
fn as_admitted(manifest: &Manifest, old: Option<&Manifest>) -> Value {
    let mut object = manifest.value.clone();
    let namespace = manifest.namespace().to_string();
    if let Some(fields) = object.as_object_mut() {
        let metadata = fields.entry("metadata").or_insert_with(|| json!({}));
        if let Some(metadata) = metadata.as_object_mut() {
            metadata.insert("namespace".into(), Value::String(namespace));
            if let Some(old_metadata) = old.and_then(|o| o.value.get("metadata")) {
                for key in ["uid", "resourceVersion", "creationTimestamp", "generation"] {
                    if let (false, Some(value)) =
                        (metadata.contains_key(key), old_metadata.get(key))
                    {
                        metadata.insert(key.into(), value.clone());
                    }
                }
            }
        }
        if let Some(status) = old.and_then(|o| o.value.get("status")) {
            fields.insert("status".into(), status.clone());
        }
    }
    object
}

/// The `Scale` the apiserver shows webhooks for a workload's scale subresource.
fn scale_of(manifest: &Manifest) -> Value {
    let source = &manifest.value;
    let mut metadata = serde_json::Map::new();
    metadata.insert("name".into(), Value::String(manifest.name().into()));
    metadata.insert(
        "namespace".into(),
        Value::String(manifest.namespace().into()),
    );
    for key in ["uid", "resourceVersion", "creationTimestamp"] {
        if let Some(value) = source.pointer(&format!("/metadata/{key}")) {
            metadata.insert(key.into(), value.clone());
        }
    }
    // The selector as the Scale's status spells it: matchLabels joined, "a=b,c=d".
    let selector: BTreeMap<String, String> = source
        .pointer("/spec/selector/matchLabels")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let selector = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": source.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": source.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// Builds the AdmissionReview for `change` by `requester`.
pub fn build_review(change: &ManifestChange, requester: &Requester) -> Result<Value, RequestError> {
    let operation = change.operation.unwrap_or(if change.old.is_some() {
        Operation::Update
    } else {
        Operation::Create
    });
    // For DELETE the object deleted is the old one, whichever flag named it.
    let (new, old) = match operation {
        Operation::Delete => (None, change.old.as_ref().or(change.object.as_ref())),
        _ => (change.object.as_ref(), change.old.as_ref()),
    };
    let subject = new.or(old).ok_or_else(|| {
        RequestError::Usage("--object is required (the object after the change)".into())
    })?;
    match operation {
        Operation::Create if old.is_some() => {
            return Err(RequestError::Usage(
                "CREATE takes no --old-object: there is nothing before a create".into(),
            ));
        }
        Operation::Update if old.is_none() => {
            return Err(RequestError::Usage(
                "UPDATE needs --old-object, the object as it is stored before the change".into(),
            ));
        }
        Operation::Update if new.is_none() => {
            return Err(RequestError::Usage("UPDATE needs --object".into()));
        }
        _ => {}
    }
    if let (Some(new), Some(old)) = (new, old)
        && (new.kind() != old.kind()
            || new.name() != old.name()
            || new.namespace() != old.namespace())
    {
        return Err(RequestError::Manifest {
            origin: old.origin.clone(),
            message: format!(
                "the old object is {} {}/{}, not {} {}/{} like {}",
                old.kind(),
                old.namespace(),
                old.name(),
                new.kind(),
                new.namespace(),
                new.name(),
                new.origin
            ),
        });
    }
    if subject.name().is_empty() {
        return Err(RequestError::Manifest {
            origin: subject.origin.clone(),
            message: "no metadata.name".into(),
        });
    }
    let (group, version) = group_version(subject)?;
    let kind = subject.kind();
    let resource = resource_of(&group, kind).ok_or_else(|| RequestError::Manifest {
        origin: subject.origin.clone(),
        message: format!(
            "slo-guard's webhooks are not registered for {kind} ({}); they see Deployments, StatefulSets, ReplicaSets, DaemonSets, HorizontalPodAutoscalers, ConfigMaps, Pods, Services, ReplicationControllers, Jobs and CronJobs",
            if group.is_empty() { version.clone() } else { format!("{group}/{version}") }
        ),
    })?;
    let (kind_value, object, old_object) = match change.subresource {
        Some(Subresource::Scale) => {
            if kind == "Scale" {
                return Err(RequestError::Manifest {
                    origin: subject.origin.clone(),
                    message: "give the workload (Deployment, StatefulSet) with its new spec.replicas; the Scale is built from it".into(),
                });
            }
            if !matches!(
                resource,
                "deployments" | "statefulsets" | "replicasets" | "replicationcontrollers"
            ) {
                return Err(RequestError::Manifest {
                    origin: subject.origin.clone(),
                    message: format!("{kind} has no scale subresource"),
                });
            }
            if operation != Operation::Update {
                return Err(RequestError::Usage(
                    "the scale subresource is only ever updated: use --operation UPDATE".into(),
                ));
            }
            (
                json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}),
                new.map(scale_of),
                old.map(scale_of),
            )
        }
        None => (
            json!({"group": group, "version": version, "kind": kind}),
            new.map(|n| as_admitted(n, old)),
            old.map(|o| as_admitted(o, None)),
        ),
    };
    let resource_value = json!({"group": group, "version": version, "resource": resource});
    let mut options = serde_json::Map::new();
    options.insert("kind".into(), Value::from(operation.options_kind()));
    options.insert("apiVersion".into(), Value::from("meta.k8s.io/v1"));
    if requester.dry_run {
        options.insert("dryRun".into(), json!(["All"]));
    }
    if operation == Operation::Delete {
        // kubectl delete's default cascade, unless the change names one.
        let propagation = change.propagation_policy.as_deref().unwrap_or("Background");
        options.insert("propagationPolicy".into(), Value::from(propagation));
    } else if let Some(manager) = &requester.field_manager {
        options.insert("fieldManager".into(), Value::from(manager.as_str()));
    }
    let mut request = serde_json::Map::new();
    request.insert("uid".into(), Value::from(review_uid()));
    request.insert("kind".into(), kind_value.clone());
    request.insert("resource".into(), resource_value.clone());
    if change.subresource.is_some() {
        request.insert("subResource".into(), Value::from("scale"));
    }
    request.insert("requestKind".into(), kind_value);
    request.insert("requestResource".into(), resource_value);
    if change.subresource.is_some() {
        request.insert("requestSubResource".into(), Value::from("scale"));
    }
    request.insert("name".into(), Value::from(subject.name()));
    request.insert("namespace".into(), Value::from(subject.namespace()));
    request.insert("operation".into(), Value::from(operation.as_str()));
    request.insert(
        "userInfo".into(),
        json!({"username": requester.user, "groups": groups_for(&requester.user, &requester.groups)}),
    );
    request.insert("object".into(), object.unwrap_or(Value::Null));
    request.insert("oldObject".into(), old_object.unwrap_or(Value::Null));
    request.insert("dryRun".into(), Value::from(requester.dry_run));
    request.insert("options".into(), Value::Object(options));
    Ok(json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": request,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(name: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/captured/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("captured review");
        serde_json::from_str(&text).expect("JSON")
    }

    fn manifest(origin: &str, value: &Value) -> Option<Manifest> {
        (!value.is_null()).then(|| Manifest {
            origin: origin.into(),
            value: value.clone(),
        })
    }

    /// The workload a captured Scale was shown for: what a user holds for a scale.
    fn workload_of_scale(resource: &str, scale: &Value) -> Value {
        let kind = match resource {
            "deployments" => "Deployment",
            "statefulsets" => "StatefulSet",
            other => panic!("no workload kind for {other}"),
        };
        let match_labels: serde_json::Map<String, Value> = scale["status"]["selector"]
            .as_str()
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), Value::from(v)))
            .collect();
        json!({
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": scale["metadata"].clone(),
            "spec": {"replicas": scale["spec"]["replicas"].clone(), "selector": {"matchLabels": match_labels}},
            "status": {"replicas": scale["status"]["replicas"].clone()},
        })
    }

    /// Builds the review for a captured one from what a user holds: its objects as
    /// manifests, and the flags `kubectl` was run with.
    fn rebuild(review: &Value) -> Value {
        let request = &review["request"];
        let operation = match request["operation"].as_str() {
            Some("CREATE") => Operation::Create,
            Some("UPDATE") => Operation::Update,
            _ => Operation::Delete,
        };
        let resource = request["resource"]["resource"].as_str().unwrap_or_default();
        let as_held = |object: &Value| match request.get("subResource") {
            Some(_) if !object.is_null() => workload_of_scale(resource, object),
            _ => object.clone(),
        };
        let change = ManifestChange {
            object: manifest("object", &as_held(&request["object"])),
            old: manifest("oldObject", &as_held(&request["oldObject"])),
            operation: Some(operation),
            subresource: request.get("subResource").map(|_| Subresource::Scale),
            propagation_policy: request["options"]["propagationPolicy"]
                .as_str()
                .map(String::from),
        };
        let user = request["userInfo"]["username"].as_str().unwrap_or_default();
        let groups: Vec<String> =
            serde_json::from_value(request["userInfo"]["groups"].clone()).unwrap_or_default();
        // What `--groups` would be: the groups but the ones the apiserver adds itself.
        let given: Vec<String> = groups
            .iter()
            .filter(|g| {
                *g != "system:authenticated"
                    && !(user.starts_with("system:serviceaccount:")
                        && g.starts_with("system:serviceaccounts"))
            })
            .cloned()
            .collect();
        let requester = Requester {
            user: user.into(),
            groups: given,
            field_manager: request["options"]["fieldManager"]
                .as_str()
                .map(String::from),
            dry_run: request["dryRun"].as_bool().unwrap_or_default(),
        };
        build_review(&change, &requester).expect("builds")
    }

    /// What a client chooses and slo-guard never reads: the uid (random per request) and
    /// kubectl's `fieldValidation`.
    fn comparable(mut review: Value) -> Value {
        let request = review["request"].as_object_mut().expect("request");
        let uid = request.remove("uid").expect("uid");
        assert_eq!(uid.as_str().map(str::len), Some(36), "a UUID: {uid}");
        if let Some(options) = request.get_mut("options").and_then(Value::as_object_mut) {
            options.remove("fieldValidation");
        }
        review
    }

    #[test]
    fn built_reviews_match_the_ones_kube_apiserver_sent() {
        let dir = format!("{}/tests/fixtures/captured", env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("fixtures")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        assert!(names.len() >= 13, "{names:?}");
        for name in names {
            let review = captured(&name);
            assert_eq!(
                comparable(rebuild(&review)),
                comparable(review.clone()),
                "{name}"
            );
        }
    }

    #[test]
    fn a_scale_is_built_from_the_workload_as_the_apiserver_shows_it() {
        let review = captured("scale-agent.json");
        let scale = &review["request"]["object"];
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": scale["metadata"].clone(),
            "spec": {"replicas": 25, "selector": {"matchLabels": {"app": "checkout"}}},
        });
        let built = scale_of(&Manifest {
            origin: "d".into(),
            value: deployment,
        });
        assert_eq!(&built, scale);
    }

    #[test]
    fn groups_are_the_apiservers_for_an_impersonated_user() {
        assert_eq!(
            groups_for("system:serviceaccount:ai-agents:fixer", &[]),
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ai-agents",
                "system:authenticated"
            ]
        );
        assert_eq!(
            groups_for("alice@example.com", &[]),
            ["system:authenticated"]
        );
        assert_eq!(
            groups_for("alice@example.com", &["sre".into()]),
            ["sre", "system:authenticated"]
        );
    }

    #[test]
    fn defaults_and_mistakes() {
        let deployment = Manifest {
            origin: "new.yaml#1".into(),
            value: json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}}),
        };
        let requester = Requester {
            user: "alice".into(),
            ..Requester::default()
        };
        let create = ManifestChange {
            object: Some(deployment.clone()),
            old: None,
            operation: None,
            subresource: None,
            propagation_policy: None,
        };
        let review = build_review(&create, &requester).expect("create");
        assert_eq!(review["request"]["operation"], "CREATE");
        assert_eq!(review["request"]["namespace"], "default");
        assert_eq!(
            review["request"]["object"]["metadata"]["namespace"],
            "default"
        );
        assert_eq!(review["request"]["oldObject"], Value::Null);

        let delete = ManifestChange {
            operation: Some(Operation::Delete),
            ..create.clone()
        };
        let review = build_review(&delete, &requester).expect("delete");
        assert_eq!(review["request"]["object"], Value::Null);
        assert_eq!(review["request"]["oldObject"]["metadata"]["name"], "web");
        assert_eq!(review["request"]["options"]["kind"], "DeleteOptions");

        let update_without_old = ManifestChange {
            operation: Some(Operation::Update),
            ..create.clone()
        };
        let error = build_review(&update_without_old, &requester)
            .unwrap_err()
            .to_string();
        assert!(error.contains("UPDATE needs --old-object"), "{error}");

        let mut other = deployment.clone();
        other.value["metadata"]["name"] = json!("api");
        other.origin = "old.yaml#1".into();
        let mismatched = ManifestChange {
            old: Some(other),
            ..create.clone()
        };
        let error = build_review(&mismatched, &requester)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("old.yaml#1: the old object is Deployment default/api"),
            "{error}"
        );

        let secret = Manifest {
            origin: "s.yaml#1".into(),
            value: json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}),
        };
        let error = build_review(
            &ManifestChange {
                object: Some(secret),
                ..create.clone()
            },
            &requester,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("s.yaml#1: slo-guard's webhooks are not registered for Secret (v1)"),
            "{error}"
        );

        let scale_create = ManifestChange {
            subresource: Some(Subresource::Scale),
            propagation_policy: None,
            ..create
        };
        let error = build_review(&scale_create, &requester)
            .unwrap_err()
            .to_string();
        assert!(error.contains("only ever updated"), "{error}");
    }
}
