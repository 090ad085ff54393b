//! Turning an admission request into the change it represents: what is changed, by whom,
//! and which class of change it is.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AdmissionError;
use super::review::{Operation, OwnerReference, ReviewObject, ReviewRequest};

/// The label (`"true"`) that makes a ConfigMap a slo-guard policy.
pub const POLICY_LABEL: &str = "slo-guard.io/policy";
/// The label (`"true"`) that makes a ConfigMap a set of reflections (threshold updates).
pub const REFLECTION_LABEL: &str = "slo-guard.io/reflection";

/// The workload kinds policies govern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, PartialOrd, Ord)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
}

impl WorkloadKind {
    /// The kind as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }

    fn from_resource(resource: &str) -> Option<Self> {
        match resource {
            "deployments" => Some(WorkloadKind::Deployment),
            "statefulsets" => Some(WorkloadKind::StatefulSet),
            _ => None,
        }
    }

    fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "Deployment" => Some(WorkloadKind::Deployment),
            "StatefulSet" => Some(WorkloadKind::StatefulSet),
            _ => None,
        }
    }
}

/// The change classes of DESIGN.md's "What it judges" table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeClass {
    /// A Deployment or StatefulSet created.
    Create,
    /// An update that changes `spec.template`: new pods roll out.
    Rollout,
    /// An update of `spec.replicas` only, or of the `scale` subresource.
    Scale,
    /// An HPA created or updated.
    Autoscaling,
    /// An update of metadata only (labels, annotations: approvals among them).
    Metadata,
    /// An object deleted.
    Delete,
    /// A policy or reflection ConfigMap written.
    Config,
}

impl ChangeClass {
    /// The class as policies, annotations and denials spell it (`rollout`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeClass::Create => "create",
            ChangeClass::Rollout => "rollout",
            ChangeClass::Scale => "scale",
            ChangeClass::Autoscaling => "autoscaling",
            ChangeClass::Metadata => "metadata",
            ChangeClass::Delete => "delete",
            ChangeClass::Config => "config",
        }
    }

    /// The class [`ChangeClass::as_str`] spells `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        [
            ChangeClass::Create,
            ChangeClass::Rollout,
            ChangeClass::Scale,
            ChangeClass::Autoscaling,
            ChangeClass::Metadata,
            ChangeClass::Delete,
            ChangeClass::Config,
        ]
        .into_iter()
        .find(|class| class.as_str() == text)
    }
}

impl fmt::Display for ChangeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a requester is to a policy: its `agents` and `controllers` lists decide; anyone
/// else is a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    /// Matches a policy's `agents` (user, group or field manager).
    Agent,
    /// Matches a policy's `controllers`: never capped by agent rules.
    Controller,
    /// Anyone else.
    Person,
}

impl ActorKind {
    /// The actor as denials and the audit log spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Agent => "agent",
            ActorKind::Controller => "controller",
            ActorKind::Person => "person",
        }
    }
}

/// Who sent the request, as the apiserver authenticated it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requester {
    /// `userInfo.username`: for a ServiceAccount, `system:serviceaccount:<ns>:<name>`.
    pub username: String,
    /// `userInfo.groups`.
    pub groups: Vec<String>,
    /// `request.options.fieldManager`, chosen by the client.
    pub field_manager: Option<String>,
}

/// What kind of object a change is judged for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A Deployment or StatefulSet, by itself or through its `scale` subresource.
    Workload(WorkloadKind),
    /// An HPA, judged for the workload its `scaleTargetRef` names.
    HorizontalPodAutoscaler,
    /// A policy or reflection ConfigMap (other ConfigMaps never reach the webhook).
    ConfigMap(ConfigKind),
    /// A ReplicaSet or a bare Pod: objects that make pods, or are pods, outside the
    /// workloads policies name. Judged for the workloads whose pods they would serve.
    PodMaker(PodMakerKind),
    /// A Service: judged for the workloads whose pods it selects, before or after.
    Service,
}

/// The kinds that make pods (or are pods) outside the workloads policies name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodMakerKind {
    /// `apps/v1`: what a Deployment makes; one made by hand serves its pods as well.
    ReplicaSet,
    /// `v1`: a bare Pod.
    Pod,
    /// `apps/v1`.
    DaemonSet,
    /// `batch/v1`.
    Job,
    /// `batch/v1`: its pods come from `spec.jobTemplate`.
    CronJob,
    /// `v1`: the ReplicaSet's predecessor, still served.
    ReplicationController,
}

impl PodMakerKind {
    /// The kind as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PodMakerKind::ReplicaSet => "ReplicaSet",
            PodMakerKind::Pod => "Pod",
            PodMakerKind::DaemonSet => "DaemonSet",
            PodMakerKind::Job => "Job",
            PodMakerKind::CronJob => "CronJob",
            PodMakerKind::ReplicationController => "ReplicationController",
        }
    }

    /// The API group and version of the kind, for Events.
    pub fn api_version(self) -> &'static str {
        match self {
            PodMakerKind::Pod | PodMakerKind::ReplicationController => "v1",
            PodMakerKind::ReplicaSet | PodMakerKind::DaemonSet => "apps/v1",
            PodMakerKind::Job | PodMakerKind::CronJob => "batch/v1",
        }
    }

    fn from_resource(group: &str, resource: &str) -> Option<Self> {
        match (group, resource) {
            ("", "pods") => Some(PodMakerKind::Pod),
            ("", "replicationcontrollers") => Some(PodMakerKind::ReplicationController),
            ("apps", "replicasets") => Some(PodMakerKind::ReplicaSet),
            ("apps", "daemonsets") => Some(PodMakerKind::DaemonSet),
            ("batch", "jobs") => Some(PodMakerKind::Job),
            ("batch", "cronjobs") => Some(PodMakerKind::CronJob),
            _ => None,
        }
    }

    /// Where the labels of the pods it makes are.
    fn pod_template_labels(self) -> &'static str {
        match self {
            PodMakerKind::CronJob => "/spec/jobTemplate/spec/template/metadata/labels",
            _ => "/spec/template/metadata/labels",
        }
    }
}

/// The labels that decide which policies govern an object: its own, and those of the
/// pods it makes (a Service selects pods by these, so a workload whose pods carry a
/// guarded workload's labels serves the guarded workload's traffic).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelState {
    /// The object's own `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// The labels of the pods it makes (its pod template's).
    pub pod_labels: BTreeMap<String, String>,
}

/// Which of slo-guard's ConfigMaps an object is, by its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    /// Labelled [`POLICY_LABEL`].
    Policy,
    /// Labelled [`REFLECTION_LABEL`].
    Reflection,
}

/// The object a change is judged for. For a scale request or an HPA this is the workload
/// being scaled, so that policies match it by the workload's labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// What the object is.
    pub kind: TargetKind,
    /// The workload kind policies match on (the HPA's scale target for HPAs).
    pub workload_kind: Option<WorkloadKind>,
    /// Policies govern the workloads of their own namespace.
    pub namespace: String,
    /// The workload's name (for an HPA, the workload it scales).
    pub name: String,
    /// `metadata.labels` after the change, which policy selectors match.
    pub labels: BTreeMap<String, String>,
    /// The labels of the pods it makes (`spec.template.metadata.labels`; a Pod's own).
    pub pod_labels: BTreeMap<String, String>,
    /// The labels before the change (an UPDATE or DELETE): a change is judged under the
    /// policies of what the object was as well as of what it becomes, so no change can
    /// carry a workload out of its policy.
    pub before: Option<LabelState>,
    /// False when the labels could not be read (a scale request whose parent workload is
    /// not in the watch cache), so matching must not rely on them.
    pub labels_known: bool,
    /// The owners a Pod or ReplicaSet names, before and after the change.
    pub owners: Vec<OwnerReference>,
}

impl Target {
    /// A target known by its labels alone (no pod template, nothing before).
    pub fn new(
        kind: TargetKind,
        workload_kind: Option<WorkloadKind>,
        namespace: &str,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Self {
        Self {
            kind,
            workload_kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            labels,
            pod_labels: BTreeMap::new(),
            before: None,
            labels_known: true,
            owners: Vec::new(),
        }
    }

    /// Every label set the object had or will have, for matching selectors.
    pub fn label_sets(&self) -> impl Iterator<Item = &BTreeMap<String, String>> {
        [&self.labels, &self.pod_labels]
            .into_iter()
            .chain(self.before.iter().flat_map(|b| [&b.labels, &b.pod_labels]))
    }

    /// "Deployment payments/checkout", as denials name it.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            TargetKind::Workload(kind) => kind.as_str(),
            TargetKind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            TargetKind::ConfigMap(_) => "ConfigMap",
            TargetKind::PodMaker(kind) => kind.as_str(),
            TargetKind::Service => "Service",
        };
        format!("{kind} {}", self.describe_name())
    }

    /// The workload a target stands for: "Deployment payments/checkout" for an HPA's
    /// scale target too.
    pub fn describe_workload(&self) -> String {
        match self.workload_kind {
            Some(kind) => format!("{} {}", kind.as_str(), self.describe_name()),
            None => self.describe(),
        }
    }

    /// "payments/checkout".
    pub fn describe_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// `spec.replicas` before and after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaChange {
    /// `None` for a create, or when the old object had none.
    pub old: Option<u32>,
    /// What the change sets.
    pub new: u32,
}

/// An HPA's replica bounds after the change, and before it (an update).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HpaBounds {
    /// `spec.minReplicas` (the API's default, 1, when absent).
    pub min: u32,
    /// `spec.maxReplicas`.
    pub max: u32,
    /// The bounds before an update; `None` for a create.
    pub old_min: Option<u32>,
    /// See `old_min`.
    pub old_max: Option<u32>,
}

/// What the watch cache knows of a workload, for requests that do not carry it
/// (the `scale` subresource, HPAs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkloadSnapshot {
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.template.metadata.labels`.
    pub pod_labels: BTreeMap<String, String>,
    /// `metadata.annotations`: the decision context of a scale request.
    pub annotations: BTreeMap<String, String>,
    /// `spec.replicas`.
    pub replicas: Option<u32>,
}

/// Read access to the workload watch cache. Implementations must not do I/O per call.
pub trait WorkloadLookup: Send + Sync {
    /// The workload `kind` `namespace/name`, if the cache holds it.
    fn workload(&self, kind: WorkloadKind, namespace: &str, name: &str)
    -> Option<WorkloadSnapshot>;

    /// Every workload the cache holds in `namespace`, for a Service change, which is
    /// judged for the workloads whose pods it selects.
    fn workloads_in(&self, namespace: &str) -> Vec<(WorkloadKind, String, WorkloadSnapshot)>;
}

impl WorkloadLookup for () {
    fn workload(&self, _: WorkloadKind, _: &str, _: &str) -> Option<WorkloadSnapshot> {
        None
    }

    fn workloads_in(&self, _: &str) -> Vec<(WorkloadKind, String, WorkloadSnapshot)> {
        Vec::new()
    }
}

impl WorkloadLookup for BTreeMap<(WorkloadKind, String, String), WorkloadSnapshot> {
    fn workload(
        &self,
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
    ) -> Option<WorkloadSnapshot> {
        self.get(&(kind, namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn workloads_in(&self, namespace: &str) -> Vec<(WorkloadKind, String, WorkloadSnapshot)> {
        self.iter()
            .filter(|((_, ns, _), _)| ns == namespace)
            .map(|((kind, _, name), snapshot)| (*kind, name.clone(), snapshot.clone()))
            .collect()
    }
}

/// A request the rules can judge.
#[derive(Debug, Clone)]
pub struct Change {
    /// The AdmissionReview's `request.uid`, echoed in the response.
    pub uid: String,
    /// Which rules apply (DESIGN.md, "What it judges").
    pub class: ChangeClass,
    /// What the change is judged for (for a scale request or an HPA, the workload).
    pub target: Target,
    /// Who sent it.
    pub requester: Requester,
    /// A server-side dry run: judged as any change, but nothing is recorded (no cooldown
    /// stamp, no spent approval, no Event, no widened webhook scope).
    pub dry_run: bool,
    /// `spec.replicas` of a workload or Scale, when the change has them.
    pub replicas: Option<ReplicaChange>,
    /// The bounds of an HPA change.
    pub hpa: Option<HpaBounds>,
    /// The decision context: the object's annotations after the change, or the parent
    /// workload's for a scale request. `None` when it could not be read.
    pub annotations: Option<BTreeMap<String, String>>,
    /// The annotations before the change (empty for a create).
    pub old_annotations: BTreeMap<String, String>,
    /// The ConfigMap's data, for policy and reflection ConfigMaps that are in force after
    /// the change; `None` when the change deletes, parks or unlabels one.
    pub config_data: Option<BTreeMap<String, String>>,
    /// What a policy or reflection ConfigMap is after the change; `None` when the change
    /// deletes, parks or unlabels it. `target.kind` is what it was or becomes, a policy
    /// if either is one: turning a policy into anything else removes a policy.
    pub config_after: Option<ConfigKind>,
    /// For an HPA whose `scaleTargetRef` changes: the workload it scaled before, which
    /// loses its autoscaler (judged as a delete for that workload).
    pub retargeted_from: Option<Target>,
    /// For a Service: the workloads (from the watch cache) whose pods its selector picks,
    /// before or after the change.
    pub served_workloads: Vec<Target>,
    /// A request to the `scale` subresource: its object is a Scale, not the workload.
    pub scale_subresource: bool,
    /// The name and uid of the object the request writes. For an HPA that is the HPA
    /// itself, while `target` is the workload it scales. Events about the request go here.
    pub object_name: String,
    /// `None` for a create, whose object has no uid yet.
    pub object_uid: Option<String>,
    /// Whether the new object has a `metadata.annotations` map at all, which decides how
    /// a patch may add to it.
    pub annotations_map_present: bool,
    /// The object's fields other than apiVersion, kind and metadata (`spec`, `status`, `data`).
    pub object: Option<Value>,
    /// The same fields of the object before the change (an update or delete).
    pub old_object: Option<Value>,
}

impl Change {
    /// The object as denials name it: "Deployment payments/checkout", or for an HPA named
    /// apart from its workload "HorizontalPodAutoscaler payments/web-hpa (scales
    /// Deployment web)", since the policy is matched by the workload the HPA scales.
    pub fn describe(&self) -> String {
        match (self.target.kind, self.target.workload_kind) {
            (TargetKind::HorizontalPodAutoscaler, Some(kind))
                if self.object_name != self.target.name =>
            {
                format!(
                    "HorizontalPodAutoscaler {}/{} (scales {} {})",
                    self.target.namespace,
                    self.object_name,
                    kind.as_str(),
                    self.target.name
                )
            }
            _ => self.target.describe(),
        }
    }
}

impl Change {
    /// What the change sets, as 16 hex digits of a SHA-256 over the target and the
    /// content: the new spec for a create, the spec but replicas (and the replicas if they
    /// move) for a rollout, the replicas for a scale by either route, the bounds for an
    /// HPA. An approval names this digest, so it approves this change and no other; a
    /// retry of the same change has the same digest.
    pub fn content_digest(&self) -> String {
        let content = match self.class {
            ChangeClass::Create => spec_of(self.object.as_ref()),
            ChangeClass::Rollout => serde_json::json!({
                "spec": spec_without_replicas_of(self.object.as_ref()),
                "replicas": self.replicas.map(|r| r.new),
            }),
            ChangeClass::Scale => serde_json::json!({"replicas": self.replicas.map(|r| r.new)}),
            ChangeClass::Autoscaling => serde_json::json!({
                "min": self.hpa.map(|h| h.min),
                "max": self.hpa.map(|h| h.max),
                "hpa": self.object_name,
            }),
            ChangeClass::Delete => Value::from("delete"),
            ChangeClass::Metadata => Value::from("metadata"),
            ChangeClass::Config => serde_json::json!(self.config_data),
        };
        self.digest_of(content)
    }

    /// What the change is applied to, digested as [`Change::content_digest`]: the spec
    /// but replicas before a rollout, the replicas before a scale, the bounds before an
    /// HPA change. The apiserver's retry after a write conflict (another writer changed
    /// the status, say) starts from the same base; a replay of the same content after
    /// someone else changed the workload does not, and is another change.
    pub fn base_digest(&self) -> String {
        let base = match self.class {
            ChangeClass::Rollout => spec_without_replicas_of(self.old_object.as_ref()),
            ChangeClass::Scale => {
                serde_json::json!({"replicas": self.replicas.and_then(|r| r.old)})
            }
            ChangeClass::Autoscaling => serde_json::json!({
                "min": self.hpa.and_then(|h| h.old_min),
                "max": self.hpa.and_then(|h| h.old_max),
            }),
            _ => Value::Null,
        };
        self.digest_of(base)
    }

    /// The state the change leaves, in the form of [`Change::base_digest`]: a retry of
    /// the change after it landed starts from it.
    pub fn result_digest(&self) -> String {
        let result = match self.class {
            ChangeClass::Rollout => spec_without_replicas_of(self.object.as_ref()),
            ChangeClass::Scale => serde_json::json!({"replicas": self.replicas.map(|r| r.new)}),
            ChangeClass::Autoscaling => serde_json::json!({
                "min": self.hpa.map(|h| h.min),
                "max": self.hpa.map(|h| h.max),
            }),
            _ => Value::Null,
        };
        self.digest_of(result)
    }

    fn digest_of(&self, content: Value) -> String {
        let identity = serde_json::json!({
            "target": self.target.describe(),
            "class": self.class.as_str(),
            "content": content,
        });
        // serde_json's map is ordered by key, so equal content serializes equally.
        let digest = ring::digest::digest(&ring::digest::SHA256, identity.to_string().as_bytes());
        digest.as_ref()[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

fn spec_of(body: Option<&Value>) -> Value {
    body.and_then(|o| o.get("spec"))
        .cloned()
        .unwrap_or(Value::Null)
}

fn spec_without_replicas_of(body: Option<&Value>) -> Value {
    let mut spec = spec_of(body);
    if let Some(fields) = spec.as_object_mut() {
        fields.remove("replicas");
    }
    spec
}

/// Classifies a request. `Ok(None)` means slo-guard does not govern it (for example a
/// ConfigMap without a slo-guard label), which is allowed. The request is consumed so the
/// objects' bodies move into the [`Change`] rather than being copied on every admission.
pub fn classify(
    request: ReviewRequest,
    workloads: &dyn WorkloadLookup,
) -> Result<Option<Change>, AdmissionError> {
    let Some(mut change) = classify_borrowed(&request, workloads)? else {
        return Ok(None);
    };
    change.object = request.object.map(|o| o.body);
    change.old_object = request.old_object.map(|o| o.body);
    Ok(Some(change))
}

/// Everything [`classify`] reads, from a borrowed request; the bodies are left for it
/// to move.
fn classify_borrowed(
    request: &ReviewRequest,
    workloads: &dyn WorkloadLookup,
) -> Result<Option<Change>, AdmissionError> {
    let requester = Requester {
        username: request.user_info.username.clone().unwrap_or_default(),
        groups: request.user_info.groups.clone().unwrap_or_default(),
        field_manager: request
            .options
            .as_ref()
            .and_then(|options| options.field_manager.clone()),
    };
    let namespace = request.namespace.clone().unwrap_or_default();
    let object = request.object.as_ref();
    let old_object = request.old_object.as_ref();
    let sub_resource = request.sub_resource.as_deref().unwrap_or("");
    let group = request.resource.group.as_str();
    let resource = request.resource.resource.as_str();

    // The name of the object the request writes: the apiserver leaves `request.name` empty
    // for a create whose name is generated.
    let object_name = object
        .or(old_object)
        .and_then(|o| o.metadata.name.clone())
        .unwrap_or_else(|| request.name.clone());
    let base = |class, target, annotations| Change {
        uid: request.uid.clone(),
        class,
        target,
        requester: requester.clone(),
        dry_run: request.dry_run,
        replicas: None,
        hpa: None,
        annotations,
        old_annotations: old_object.map(annotations_of).unwrap_or_default(),
        config_data: None,
        config_after: None,
        retargeted_from: None,
        served_workloads: Vec::new(),
        scale_subresource: sub_resource == "scale",
        object_name: object_name.clone(),
        object_uid: object.or(old_object).and_then(|o| o.metadata.uid.clone()),
        annotations_map_present: object.is_some_and(|o| o.metadata.annotations.is_some()),
        object: None,
        old_object: None,
    };

    // A change of a workload or pod maker itself (no subresource): judged by its class,
    // with the replicas it moves.
    let object_change = |target: Target| -> Result<Option<Change>, AdmissionError> {
        let Some(class) = object_class(request.operation, object, old_object)? else {
            return Ok(None);
        };
        let mut change = base(class, target, object.map(annotations_of));
        change.replicas = replica_change(object, old_object);
        Ok(Some(change))
    };

    // The apiserver always sends metadata; an object without any is hand-made, and a patch
    // under /metadata could not apply to it.
    if [object, old_object]
        .into_iter()
        .flatten()
        .any(|o| o.metadata.field_count == 0)
    {
        return Err(AdmissionError::Malformed(
            "object or oldObject has no metadata".to_string(),
        ));
    }
    // The object the request is about: the new one, or the old one for a DELETE.
    let current = || {
        object.or(old_object).ok_or_else(|| {
            AdmissionError::Malformed(format!(
                "{} {resource} request carries neither object nor oldObject",
                request.operation.as_str()
            ))
        })
    };
    match (group, resource, sub_resource) {
        ("apps", "deployments" | "statefulsets", "scale") => {
            let kind = WorkloadKind::from_resource(resource)
                .ok_or_else(|| unreachable_resource(resource))?;
            let parent = workloads.workload(kind, &namespace, &request.name);
            let new = object
                .and_then(|scale| replicas_at(&scale.body, "spec"))
                .ok_or_else(|| {
                    AdmissionError::Malformed("Scale object has no spec.replicas".into())
                })?;
            let old = old_object
                .and_then(|scale| replicas_at(&scale.body, "spec"))
                .or_else(|| parent.as_ref().and_then(|p| p.replicas));
            let mut target = Target::new(
                TargetKind::Workload(kind),
                Some(kind),
                &namespace,
                &request.name,
                BTreeMap::new(),
            );
            if let Some(parent) = &parent {
                target.labels = parent.labels.clone();
                target.pod_labels = parent.pod_labels.clone();
            }
            target.labels_known = parent.is_some();
            let mut change = base(ChangeClass::Scale, target, parent.map(|p| p.annotations));
            change.replicas = Some(ReplicaChange { old, new });
            Ok(Some(change))
        }
        ("apps", "deployments" | "statefulsets", "") => {
            let kind = WorkloadKind::from_resource(resource)
                .ok_or_else(|| unreachable_resource(resource))?;
            // Malformed without an object to judge.
            current()?;
            let mut target = Target::new(
                TargetKind::Workload(kind),
                Some(kind),
                &namespace,
                &object_name,
                BTreeMap::new(),
            );
            set_labels(&mut target, object, old_object, request.operation);
            object_change(target)
        }
        ("autoscaling", "horizontalpodautoscalers", "") => {
            let current = current()?;
            let (target_kind, target_name) = scale_target_of(current);
            let target = hpa_target(current, target_kind, &target_name, &namespace, workloads);
            // Pointing an HPA elsewhere takes autoscaling away from the workload it scaled.
            let retargeted_from = match (request.operation, old_object) {
                (Operation::Update, Some(old)) => {
                    let (old_kind, old_name) = scale_target_of(old);
                    (old_kind != target_kind || old_name != target_name)
                        .then(|| hpa_target(old, old_kind, &old_name, &namespace, workloads))
                }
                _ => None,
            };
            let class = match request.operation {
                Operation::Delete => ChangeClass::Delete,
                Operation::Connect => return Ok(None),
                _ => ChangeClass::Autoscaling,
            };
            let mut change = base(class, target, object.map(annotations_of));
            change.retargeted_from = retargeted_from;
            if let Some(new) = object {
                let max = replicas_field(&new.body, "/spec/maxReplicas").ok_or_else(|| {
                    AdmissionError::Malformed(
                        "HorizontalPodAutoscaler has no spec.maxReplicas".into(),
                    )
                })?;
                // The API defaults minReplicas to 1 when it is absent.
                let min = replicas_field(&new.body, "/spec/minReplicas").unwrap_or(1);
                change.hpa = Some(HpaBounds {
                    min,
                    max,
                    old_min: old_object
                        .map(|o| replicas_field(&o.body, "/spec/minReplicas").unwrap_or(1)),
                    old_max: old_object.and_then(|o| replicas_field(&o.body, "/spec/maxReplicas")),
                });
            }
            Ok(Some(change))
        }
        ("", "configmaps", "") => {
            let current = current()?;
            // "true" enables, "false" parks a ConfigMap; any other value is a typo that
            // would silently disable a guardrail, so it is judged (and rejected) too.
            let config_kind_of = |o: &ReviewObject| {
                let label_state = |label: &str| {
                    o.metadata
                        .labels
                        .as_ref()
                        .and_then(|labels| labels.get(label))
                        .map(|value| value.as_str())
                };
                match (label_state(POLICY_LABEL), label_state(REFLECTION_LABEL)) {
                    (Some(value), _) if value != "false" => Some(ConfigKind::Policy),
                    (_, Some(value)) if value != "false" => Some(ConfigKind::Reflection),
                    _ => None,
                }
            };
            // The version after the change, if it is one slo-guard reads; for a DELETE
            // there is none.
            let after = object
                .filter(|_| request.operation != Operation::Delete)
                .and_then(|o| config_kind_of(o).map(|kind| (o, kind)));
            let before = old_object.and_then(config_kind_of);
            // A change is judged for what the ConfigMap was and what it becomes; a policy
            // if either is one, so that turning a policy into a reflection (or into nothing)
            // is judged as removing a policy.
            let Some(config_kind) = [after.map(|(_, kind)| kind), before]
                .into_iter()
                .flatten()
                .min_by_key(|kind| *kind != ConfigKind::Policy)
            else {
                return Ok(None);
            };
            let mut target = Target::new(
                TargetKind::ConfigMap(config_kind),
                None,
                &namespace,
                &object_name,
                current.metadata.labels.clone().unwrap_or_default(),
            );
            target.before = old_object.map(|o| LabelState {
                labels: o.metadata.labels.clone().unwrap_or_default(),
                pod_labels: BTreeMap::new(),
            });
            let mut change = base(ChangeClass::Config, target, object.map(annotations_of));
            change.config_data = after.map(|(o, _)| config_data_of(&o.body)).transpose()?;
            change.config_after = after.map(|(_, kind)| kind);
            Ok(Some(change))
        }
        ("apps", "replicasets", "scale") | ("", "replicationcontrollers", "scale") => {
            let kind = PodMakerKind::from_resource(group, resource)
                .ok_or_else(|| unreachable_resource(resource))?;
            let new = object
                .and_then(|scale| replicas_at(&scale.body, "spec"))
                .ok_or_else(|| {
                    AdmissionError::Malformed("Scale object has no spec.replicas".into())
                })?;
            let mut target = Target::new(
                TargetKind::PodMaker(kind),
                None,
                &namespace,
                &request.name,
                BTreeMap::new(),
            );
            target.labels_known = false;
            let mut change = base(ChangeClass::Scale, target, None);
            change.replicas = Some(ReplicaChange {
                old: old_object.and_then(|scale| replicas_at(&scale.body, "spec")),
                new,
            });
            Ok(Some(change))
        }
        // An ephemeral container runs another image in a live Pod: judged as a change of
        // that Pod.
        ("apps", "replicasets" | "daemonsets", "")
        | ("", "pods" | "replicationcontrollers", "")
        | ("", "pods", "ephemeralcontainers")
        | ("batch", "jobs" | "cronjobs", "") => {
            let kind = PodMakerKind::from_resource(group, resource)
                .ok_or_else(|| unreachable_resource(resource))?;
            // Malformed without an object to judge.
            current()?;
            let mut target = Target::new(
                TargetKind::PodMaker(kind),
                None,
                &namespace,
                &object_name,
                BTreeMap::new(),
            );
            set_labels_at(
                &mut target,
                object,
                old_object,
                request.operation,
                kind.pod_template_labels(),
            );
            if kind == PodMakerKind::Pod {
                // A Pod's own labels are what a Service selects.
                target.pod_labels = target.labels.clone();
                if let Some(before) = target.before.as_mut() {
                    before.pod_labels = before.labels.clone();
                }
            }
            target.owners = [object, old_object]
                .into_iter()
                .flatten()
                .flat_map(|o| o.metadata.owner_references.iter().cloned())
                .collect();
            object_change(target)
        }
        ("", "services", "") => {
            let current = current()?;
            let selector_of = |o: &ReviewObject| string_map_at(&o.body, "/spec/selector");
            let after = object
                .filter(|_| request.operation != Operation::Delete)
                .map(selector_of);
            let before = old_object.map(selector_of);
            let class = match request.operation {
                Operation::Create => ChangeClass::Create,
                Operation::Delete => ChangeClass::Delete,
                Operation::Update if after == before => ChangeClass::Metadata,
                Operation::Update => ChangeClass::Rollout,
                Operation::Connect => return Ok(None),
            };
            let mut target = Target::new(
                TargetKind::Service,
                None,
                &namespace,
                &object_name,
                current.metadata.labels.clone().unwrap_or_default(),
            );
            target.pod_labels = after.clone().unwrap_or_default();
            target.before = before.clone().map(|selector| LabelState {
                labels: BTreeMap::new(),
                pod_labels: selector,
            });
            // A selector picks a pod when the pod carries every pair; an empty one picks
            // none (a Service without selector, whose endpoints are managed by hand).
            let picks = |selector: &BTreeMap<String, String>, pods: &BTreeMap<String, String>| {
                !selector.is_empty() && selector.iter().all(|(k, v)| pods.get(k) == Some(v))
            };
            let served_workloads = workloads
                .workloads_in(&namespace)
                .into_iter()
                .filter(|(_, _, snapshot)| {
                    [after.as_ref(), before.as_ref()]
                        .into_iter()
                        .flatten()
                        .any(|selector| picks(selector, &snapshot.pod_labels))
                })
                .map(|(kind, name, snapshot)| {
                    let mut served = Target::new(
                        TargetKind::Workload(kind),
                        Some(kind),
                        &namespace,
                        &name,
                        snapshot.labels,
                    );
                    served.pod_labels = snapshot.pod_labels;
                    served
                })
                .collect();
            let mut change = base(class, target, object.map(annotations_of));
            change.served_workloads = served_workloads;
            Ok(Some(change))
        }
        _ => Ok(None),
    }
}

/// The class of a change to an object that holds a spec: a create, a delete, or by what
/// an update changes. `None` for a CONNECT, which slo-guard does not judge.
fn object_class(
    operation: Operation,
    object: Option<&ReviewObject>,
    old_object: Option<&ReviewObject>,
) -> Result<Option<ChangeClass>, AdmissionError> {
    Ok(Some(match operation {
        Operation::Create => ChangeClass::Create,
        Operation::Delete => ChangeClass::Delete,
        Operation::Update => match (object, old_object) {
            (Some(new), Some(old)) => update_class(&new.body, &old.body),
            _ => {
                return Err(AdmissionError::Malformed(
                    "UPDATE request needs object and oldObject".into(),
                ));
            }
        },
        Operation::Connect => return Ok(None),
    }))
}

/// `spec.replicas` before and after, when the change sets it to something new.
fn replica_change(
    object: Option<&ReviewObject>,
    old_object: Option<&ReviewObject>,
) -> Option<ReplicaChange> {
    let new = object.and_then(|o| replicas_at(&o.body, "spec"))?;
    let old = old_object.and_then(|o| replicas_at(&o.body, "spec"));
    (old != Some(new)).then_some(ReplicaChange { old, new })
}

/// The labels of a workload after the change (before it, for a DELETE), and before it
/// for an UPDATE.
fn set_labels(
    target: &mut Target,
    object: Option<&ReviewObject>,
    old_object: Option<&ReviewObject>,
    operation: Operation,
) {
    set_labels_at(
        target,
        object,
        old_object,
        operation,
        "/spec/template/metadata/labels",
    );
}

/// [`set_labels`] for an object whose pod template is at `template_labels`.
fn set_labels_at(
    target: &mut Target,
    object: Option<&ReviewObject>,
    old_object: Option<&ReviewObject>,
    operation: Operation,
    template_labels: &str,
) {
    let state = |o: &ReviewObject| LabelState {
        labels: o.metadata.labels.clone().unwrap_or_default(),
        pod_labels: string_map_at(&o.body, template_labels),
    };
    let after = object
        .filter(|_| operation != Operation::Delete)
        .or(old_object);
    if let Some(after) = after {
        let LabelState { labels, pod_labels } = state(after);
        target.labels = labels;
        target.pod_labels = pod_labels;
    }
    if operation == Operation::Update {
        target.before = old_object.map(state);
    }
}

/// The kind and name an HPA's `spec.scaleTargetRef` names.
fn scale_target_of(hpa: &ReviewObject) -> (Option<WorkloadKind>, String) {
    let scale_target = hpa.body.pointer("/spec/scaleTargetRef");
    let kind = scale_target
        .and_then(|r| r.get("kind"))
        .and_then(Value::as_str)
        .and_then(WorkloadKind::from_kind);
    let name = scale_target
        .and_then(|r| r.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    (kind, name)
}

/// The workload an HPA scales, as policies match it: by the workload's labels from the
/// watch cache, else by the HPA's own labels, without trusting them for selectors.
fn hpa_target(
    hpa: &ReviewObject,
    kind: Option<WorkloadKind>,
    name: &str,
    namespace: &str,
    workloads: &dyn WorkloadLookup,
) -> Target {
    let parent = kind.and_then(|kind| workloads.workload(kind, namespace, name));
    let mut target = Target::new(
        TargetKind::HorizontalPodAutoscaler,
        kind,
        namespace,
        name,
        BTreeMap::new(),
    );
    match parent {
        Some(parent) => {
            target.labels = parent.labels;
            target.pod_labels = parent.pod_labels;
        }
        None => {
            target.labels = hpa.metadata.labels.clone().unwrap_or_default();
            target.labels_known = false;
        }
    }
    target
}

fn unreachable_resource(resource: &str) -> AdmissionError {
    AdmissionError::Malformed(format!("unexpected resource {resource:?}"))
}

/// An UPDATE is a rollout when the pod template changes (or any other spec field than
/// replicas, which is the conservative reading), a scale when only replicas change, and
/// metadata when the spec is untouched.
fn update_class(new: &Value, old: &Value) -> ChangeClass {
    let (new_spec, old_spec) = (new.get("spec"), old.get("spec"));
    if new_spec == old_spec {
        return ChangeClass::Metadata;
    }
    if new_spec.and_then(|s| s.get("template")) != old_spec.and_then(|s| s.get("template")) {
        return ChangeClass::Rollout;
    }
    if spec_without_replicas(new_spec) == spec_without_replicas(old_spec) {
        ChangeClass::Scale
    } else {
        ChangeClass::Rollout
    }
}

fn spec_without_replicas(spec: Option<&Value>) -> Option<Vec<(&String, &Value)>> {
    spec.and_then(Value::as_object).map(|fields| {
        fields
            .iter()
            .filter(|(key, _)| key.as_str() != "replicas")
            .collect()
    })
}

fn replicas_at(data: &Value, section: &str) -> Option<u32> {
    data.get(section)?
        .get("replicas")?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
}

fn replicas_field(data: &Value, pointer: &str) -> Option<u32> {
    data.pointer(pointer)?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
}

/// The string entries of the map at `pointer` in `body` (a label map or a selector);
/// empty when there is none.
fn string_map_at(body: &Value, pointer: &str) -> BTreeMap<String, String> {
    body.pointer(pointer)
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn annotations_of(object: &ReviewObject) -> BTreeMap<String, String> {
    object.metadata.annotations.clone().unwrap_or_default()
}

fn config_data_of(data: &Value) -> Result<BTreeMap<String, String>, AdmissionError> {
    match data.get("data") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(entries)) => entries
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) => Ok((key.clone(), text.clone())),
                _ => Err(AdmissionError::Malformed(format!(
                    "ConfigMap data key {key:?} is not a string"
                ))),
            })
            .collect(),
        Some(_) => Err(AdmissionError::Malformed(
            "ConfigMap data is not a map".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::parse_review;
    use crate::rules::testing::{AGENT, hpa_by};

    /// An AdmissionReview of `resource` (group, version, plural) by the agent.
    fn review_body(
        resource: (&str, &str, &str),
        operation: &str,
        object: Value,
        old: Value,
    ) -> Value {
        let (group, version, plural) = resource;
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0c1d",
                "kind": {"group": group, "version": version, "kind": "X"},
                "resource": {"group": group, "version": version, "resource": plural},
                "name": "x",
                "namespace": "payments",
                "operation": operation,
                "userInfo": {"username": AGENT},
                "object": object,
                "oldObject": old,
                "dryRun": false,
            }
        })
    }

    fn review(resource: (&str, &str, &str), operation: &str, object: Value, old: Value) -> Change {
        let body = review_body(resource, operation, object, old);
        let request = parse_review(body.to_string().as_bytes()).expect("a review");
        classify(request, &()).expect("classified").expect("judged")
    }

    #[test]
    fn a_service_is_judged_for_the_workloads_whose_pods_it_selects_before_or_after() {
        let deployment = |namespace: &str, name: &str, pod_labels: &[(&str, &str)]| {
            (
                (
                    WorkloadKind::Deployment,
                    namespace.to_string(),
                    name.to_string(),
                ),
                WorkloadSnapshot {
                    pod_labels: pod_labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..WorkloadSnapshot::default()
                },
            )
        };
        let workloads = BTreeMap::from([
            deployment(
                "payments",
                "checkout",
                &[("app", "checkout"), ("tier", "web")],
            ),
            deployment("payments", "shadow", &[("app", "shadow")]),
            deployment("other", "checkout", &[("app", "checkout")]),
        ]);
        let service = |app: &str| {
            serde_json::json!({
                "metadata": {"name": "checkout"},
                "spec": {"selector": {"app": app}, "ports": [{"port": 80}]}
            })
        };
        let body = review_body(
            ("", "v1", "services"),
            "UPDATE",
            service("shadow"),
            service("checkout"),
        );
        let request = parse_review(body.to_string().as_bytes()).expect("a review");
        let change = classify(request, &workloads)
            .expect("classified")
            .expect("judged");
        assert_eq!(change.class, ChangeClass::Rollout);
        let served: Vec<&str> = change
            .served_workloads
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(
            served,
            ["checkout", "shadow"],
            "only payments' workloads, before and after"
        );
    }

    #[test]
    fn a_cronjob_is_judged_by_the_labels_of_the_pods_it_makes() {
        let cronjob = serde_json::json!({
            "metadata": {"name": "x", "labels": {"app": "batch"}},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {
                "metadata": {"labels": {"app": "checkout"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}
            }}}}
        });
        let change = review(("batch", "v1", "cronjobs"), "CREATE", cronjob, Value::Null);
        assert_eq!(
            change.target.kind,
            TargetKind::PodMaker(PodMakerKind::CronJob)
        );
        assert_eq!(change.target.pod_labels["app"], "checkout");
        assert_eq!(change.class, ChangeClass::Create);
    }

    #[test]
    fn an_ephemeral_container_is_a_change_of_its_pod() {
        let pod = |ephemeral: Value| {
            serde_json::json!({
                "metadata": {"name": "x", "labels": {"app": "checkout"}},
                "spec": {"containers": [{"name": "c", "image": "i"}], "ephemeralContainers": ephemeral}
            })
        };
        let mut body = review_body(
            ("", "v1", "pods"),
            "UPDATE",
            pod(serde_json::json!([{"name": "debug", "image": "evil:1"}])),
            pod(serde_json::json!([])),
        );
        body["request"]["subResource"] = Value::from("ephemeralcontainers");
        let request = parse_review(body.to_string().as_bytes()).expect("a review");
        let change = classify(request, &()).expect("classified").expect("judged");
        assert_eq!(change.target.kind, TargetKind::PodMaker(PodMakerKind::Pod));
        assert_eq!(change.class, ChangeClass::Rollout);
        assert_eq!(change.target.pod_labels["app"], "checkout");
        body["request"]["subResource"] = Value::from("status");
        let request = parse_review(body.to_string().as_bytes()).expect("a review");
        assert!(classify(request, &()).expect("classified").is_none());
    }

    #[test]
    fn a_relabelled_pod_carries_its_labels_before_and_after_and_its_owner() {
        let pod = |app: &str| {
            serde_json::json!({
                "metadata": {"name": "x", "labels": {"app": app},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-5d8f", "uid": "u", "controller": true}]},
                "spec": {"containers": [{"name": "c", "image": "i"}]}
            })
        };
        let change = review(("", "v1", "pods"), "UPDATE", pod("debug"), pod("checkout"));
        assert_eq!(change.class, ChangeClass::Metadata);
        assert_eq!(change.target.pod_labels["app"], "debug");
        let before = change.target.before.as_ref().expect("before");
        assert_eq!(before.pod_labels["app"], "checkout");
        assert_eq!(change.target.owners[0].name, "checkout-5d8f");
    }

    #[test]
    fn a_policy_turned_into_a_reflection_is_judged_as_a_policy() {
        let configmap = |label: &str| {
            serde_json::json!({
                "metadata": {"name": "x", "labels": {label: "true"}},
                "data": {"checkout.yaml": "x"}
            })
        };
        let change = review(
            ("", "v1", "configmaps"),
            "UPDATE",
            configmap(REFLECTION_LABEL),
            configmap(POLICY_LABEL),
        );
        assert_eq!(
            change.target.kind,
            TargetKind::ConfigMap(ConfigKind::Policy)
        );
        assert_eq!(change.config_after, Some(ConfigKind::Reflection));
    }

    #[test]
    fn an_hpa_pointed_elsewhere_remembers_the_workload_it_scaled() {
        let hpa = |target: &str| {
            serde_json::json!({
                "metadata": {"name": "x"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                         "minReplicas": 1, "maxReplicas": 5}
            })
        };
        let change = review(
            ("autoscaling", "v2", "horizontalpodautoscalers"),
            "UPDATE",
            hpa("other"),
            hpa("checkout"),
        );
        assert_eq!(change.target.name, "other");
        assert_eq!(
            change.retargeted_from.as_ref().map(|t| t.name.as_str()),
            Some("checkout")
        );
    }

    #[test]
    fn an_hpa_is_named_with_the_workload_it_scales_when_their_names_differ() {
        let mut change = hpa_by(AGENT, 2, 10, None);
        change.object_name = "checkout".into();
        assert_eq!(
            change.describe(),
            "HorizontalPodAutoscaler payments/checkout"
        );
        change.object_name = "checkout-hpa".into();
        assert_eq!(
            change.describe(),
            "HorizontalPodAutoscaler payments/checkout-hpa (scales Deployment checkout)"
        );
    }
}
