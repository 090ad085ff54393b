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
    HorizontalPodAutoscaler {
        /// The kind of the workload it scales; `None` when that is no kind policies
        /// govern (the name is still the scaled object's).
        scales: Option<WorkloadKind>,
    },
    /// A policy or reflection ConfigMap (other ConfigMaps never reach the webhook).
    ConfigMap(ConfigKind),
    /// A ReplicaSet or a bare Pod: objects that make pods, or are pods, outside the
    /// workloads policies name. Judged for the workloads whose pods they would serve.
    PodMaker(PodMakerKind),
    /// A Service: judged for the workloads whose pods it selects, before or after.
    Service,
    /// Any other object, deleted while it owns governed workloads, or given an owner of
    /// its own while it owns them: judged for the workloads the garbage collector would
    /// delete with it ([`Change::dependents`]).
    Owner,
}

impl TargetKind {
    /// The workload kind policies match on: the workload's own, or the one an HPA scales.
    #[must_use]
    pub fn workload_kind(self) -> Option<WorkloadKind> {
        match self {
            TargetKind::Workload(kind) => Some(kind),
            TargetKind::HorizontalPodAutoscaler { scales } => scales,
            TargetKind::ConfigMap(_)
            | TargetKind::PodMaker(_)
            | TargetKind::Service
            | TargetKind::Owner => None,
        }
    }

    /// The kind as the API spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Workload(kind) => kind.as_str(),
            TargetKind::HorizontalPodAutoscaler { .. } => "HorizontalPodAutoscaler",
            TargetKind::ConfigMap(_) => "ConfigMap",
            TargetKind::PodMaker(kind) => kind.as_str(),
            TargetKind::Service => "Service",
            TargetKind::Owner => "object",
        }
    }
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
    /// What the object is, and for an HPA the kind of workload it scales.
    pub kind: TargetKind,
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
    #[must_use]
    pub fn new(
        kind: TargetKind,
        namespace: &str,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Self {
        Self {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            labels,
            pod_labels: BTreeMap::new(),
            before: None,
            labels_known: true,
            owners: Vec::new(),
        }
    }

    /// The workload kind policies match on (the HPA's scale target for HPAs).
    #[must_use]
    pub fn workload_kind(&self) -> Option<WorkloadKind> {
        self.kind.workload_kind()
    }

    /// Every label set the object had or will have, for matching selectors.
    pub fn label_sets(&self) -> impl Iterator<Item = &BTreeMap<String, String>> {
        [&self.labels, &self.pod_labels]
            .into_iter()
            .chain(self.before.iter().flat_map(|b| [&b.labels, &b.pod_labels]))
    }

    /// "Deployment payments/checkout", as denials name it.
    #[must_use]
    pub fn describe(&self) -> String {
        format!("{} {}", self.kind.as_str(), self.describe_name())
    }

    /// The workload a target stands for: "Deployment payments/checkout" for an HPA's
    /// scale target too.
    pub fn describe_workload(&self) -> String {
        match self.workload_kind() {
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
    /// The uids of its owners (`metadata.ownerReferences`): the garbage collector deletes
    /// it once they are gone.
    pub owner_uids: Vec<String>,
}

/// A workload as the cache is asked for it: its kind, namespace and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadKey<'a> {
    /// Deployment or StatefulSet.
    pub kind: WorkloadKind,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
}

/// Read access to the workload watch cache. Implementations must not do I/O per call.
pub trait WorkloadLookup: Send + Sync {
    /// The workload `key` names, if the cache holds it.
    fn workload(&self, key: WorkloadKey<'_>) -> Option<WorkloadSnapshot>;

    /// Every workload the cache holds in `namespace`, for a Service change, which is
    /// judged for the workloads whose pods it selects.
    fn workloads_in(&self, namespace: &str) -> Vec<(WorkloadKind, String, WorkloadSnapshot)>;

    /// The workloads in `namespace` that name `owner_uid` among their owners: those the
    /// garbage collector deletes with that object. Implementations should filter before
    /// they copy; this default copies the namespace's every workload.
    fn owned_by(
        &self,
        namespace: &str,
        owner_uid: &str,
    ) -> Vec<(WorkloadKind, String, WorkloadSnapshot)> {
        self.workloads_in(namespace)
            .into_iter()
            .filter(|(_, _, snapshot)| snapshot.owner_uids.iter().any(|uid| uid == owner_uid))
            .collect()
    }
}

impl WorkloadLookup for () {
    fn workload(&self, _: WorkloadKey<'_>) -> Option<WorkloadSnapshot> {
        None
    }

    fn workloads_in(&self, _: &str) -> Vec<(WorkloadKind, String, WorkloadSnapshot)> {
        Vec::new()
    }
}

impl WorkloadLookup for BTreeMap<(WorkloadKind, String, String), WorkloadSnapshot> {
    fn workload(&self, key: WorkloadKey<'_>) -> Option<WorkloadSnapshot> {
        self.get(&(key.kind, key.namespace.to_string(), key.name.to_string()))
            .cloned()
    }

    fn workloads_in(&self, namespace: &str) -> Vec<(WorkloadKind, String, WorkloadSnapshot)> {
        self.iter()
            .filter(|((_, ns, _), _)| ns == namespace)
            .map(|((kind, _, name), snapshot)| (*kind, name.clone(), snapshot.clone()))
            .collect()
    }
}

/// The annotations a change is judged by: slo-guard reads the decision context and
/// approvals from them, and patches them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnotationState {
    /// The decision context: the object's annotations after the change, or the parent
    /// workload's for a scale request. `None` when it could not be read (a delete, or a
    /// scale of a workload the watch cache does not hold).
    pub after: Option<BTreeMap<String, String>>,
    /// The annotations before the change (empty for a create).
    pub before: BTreeMap<String, String>,
    /// Whether the written object has a `metadata.annotations` map at all, which decides
    /// how a patch may add to it: a key into the map, or the whole map.
    pub map_present: bool,
}

/// A policy or reflection ConfigMap in force after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigInForce {
    /// Which of slo-guard's ConfigMaps it is after the change.
    pub kind: ConfigKind,
    /// Its `data`.
    pub data: BTreeMap<String, String>,
}

/// What a change sets, by the kind of request it is.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeDetail {
    /// A workload or pod maker written as an object: `spec.replicas` when the change
    /// moves them.
    Object {
        /// `None` when the replicas stay, or the object has none.
        replicas: Option<ReplicaChange>,
    },
    /// A write to the `scale` subresource: its object is a Scale, not the workload.
    ScaleSubresource(ReplicaChange),
    /// An HPA created, updated or deleted.
    Autoscaler {
        /// Its bounds after the change; `None` when the request carries no new object
        /// (a delete).
        bounds: Option<HpaBounds>,
        /// When its `scaleTargetRef` changes: the workload it scaled before, which loses
        /// its autoscaler (judged as a delete for that workload).
        retargeted_from: Option<Box<Target>>,
    },
    /// A policy or reflection ConfigMap written: what is in force after the change;
    /// `None` when the change deletes, parks or unlabels it. `target.kind` is what it was
    /// or becomes, a policy if either is one: turning a policy into anything else
    /// removes a policy.
    Config(Option<ConfigInForce>),
    /// A Service.
    Service {
        /// The workloads (from the watch cache) whose pods its selector picks, before or
        /// after the change.
        served_workloads: Vec<Target>,
    },
    /// An object of a kind slo-guard does not otherwise judge, deleted while it owns
    /// governed workloads ([`Change::dependents`]), or given an owner of its own
    /// ([`Change::new_owners`]) while it owns them.
    Owner {
        /// Its kind, as the request names it (`ConfigMap`); the resource when the request
        /// names none.
        kind: String,
        /// Its apiVersion (`v1`), for the Event that records a denial.
        api_version: String,
    },
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
    /// What the change sets, by the kind of request it is.
    pub detail: ChangeDetail,
    /// The annotations before and after the change.
    pub annotations: AnnotationState,
    /// Owners the written object has after the change and did not have before (none for
    /// a subresource, whose metadata is not stored): the garbage collector deletes the
    /// object once any of them is gone.
    pub new_owners: Vec<OwnerReference>,
    /// The workloads (from the watch cache) that name the object as an owner, which the
    /// garbage collector deletes with it: empty unless the change is a DELETE that does
    /// not orphan its dependents (`propagationPolicy: Orphan`), or an update that gives
    /// the object an owner ([`Change::new_owners`]), whose deletion would then delete the
    /// object and its dependents after it.
    pub dependents: Vec<Target>,
    /// The name and uid of the object the request writes. For an HPA that is the HPA
    /// itself, while `target` is the workload it scales. Events about the request go here.
    pub object_name: String,
    /// `None` for a create, whose object has no uid yet.
    pub object_uid: Option<String>,
    /// The object's fields other than apiVersion, kind and metadata (`spec`, `status`, `data`).
    pub object: Option<Value>,
    /// The same fields of the object before the change (an update or delete).
    pub old_object: Option<Value>,
}

impl Change {
    /// The object as denials name it: "Deployment payments/checkout", or for an HPA named
    /// apart from its workload "HorizontalPodAutoscaler payments/web-hpa (scales
    /// Deployment web)", since the policy is matched by the workload the HPA scales.
    #[must_use]
    pub fn describe(&self) -> String {
        if let ChangeDetail::Owner { kind, .. } = &self.detail {
            return format!("{kind} {}", self.target.describe_name());
        }
        match self.target.kind {
            TargetKind::HorizontalPodAutoscaler { scales: Some(kind) }
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

    /// `spec.replicas` before and after, of a workload or pod maker written as an object
    /// or through its `scale` subresource.
    #[must_use]
    pub fn replicas(&self) -> Option<ReplicaChange> {
        match &self.detail {
            ChangeDetail::Object { replicas } => *replicas,
            ChangeDetail::ScaleSubresource(replicas) => Some(*replicas),
            _ => None,
        }
    }

    /// [`Change::replicas`], to move: the preflight's probes are the intended change
    /// with another count.
    pub fn replicas_mut(&mut self) -> Option<&mut ReplicaChange> {
        match &mut self.detail {
            ChangeDetail::Object { replicas } => replicas.as_mut(),
            ChangeDetail::ScaleSubresource(replicas) => Some(replicas),
            _ => None,
        }
    }

    /// A request to the `scale` subresource.
    #[must_use]
    pub fn is_scale_subresource(&self) -> bool {
        matches!(self.detail, ChangeDetail::ScaleSubresource(_))
    }

    /// The bounds of an HPA change that carries them.
    #[must_use]
    pub fn hpa_bounds(&self) -> Option<HpaBounds> {
        match &self.detail {
            ChangeDetail::Autoscaler { bounds, .. } => *bounds,
            _ => None,
        }
    }

    /// For an HPA pointed elsewhere: the workload it scaled before.
    #[must_use]
    pub fn retargeted_from(&self) -> Option<&Target> {
        match &self.detail {
            ChangeDetail::Autoscaler {
                retargeted_from, ..
            } => retargeted_from.as_deref(),
            _ => None,
        }
    }

    /// The policy or reflection ConfigMap in force after the change, if any.
    #[must_use]
    pub fn config_in_force(&self) -> Option<&ConfigInForce> {
        match &self.detail {
            ChangeDetail::Config(in_force) => in_force.as_ref(),
            _ => None,
        }
    }

    /// Which of slo-guard's ConfigMaps is in force after the change, if any.
    #[must_use]
    pub fn config_after(&self) -> Option<ConfigKind> {
        self.config_in_force().map(|config| config.kind)
    }

    /// For a Service: the workloads whose pods it selects, before or after.
    #[must_use]
    pub fn served_workloads(&self) -> &[Target] {
        match &self.detail {
            ChangeDetail::Service { served_workloads } => served_workloads,
            _ => &[],
        }
    }
}

impl Change {
    /// What the change sets, as 16 hex digits of a SHA-256 over the target and the
    /// content: the new spec for a create, the spec but replicas (and the replicas if they
    /// move) for a rollout, the replicas for a scale by either route, the bounds for an
    /// HPA. An approval names this digest, so it approves this change and no other; a
    /// retry of the same change has the same digest.
    #[must_use]
    pub fn content_digest(&self) -> String {
        let content = match self.class {
            ChangeClass::Create => spec_of(self.object.as_ref()),
            ChangeClass::Rollout => serde_json::json!({
                "spec": spec_without_replicas_of(self.object.as_ref()),
                "replicas": self.replicas().map(|r| r.new),
            }),
            ChangeClass::Scale => serde_json::json!({"replicas": self.replicas().map(|r| r.new)}),
            ChangeClass::Autoscaling => serde_json::json!({
                "min": self.hpa_bounds().map(|h| h.min),
                "max": self.hpa_bounds().map(|h| h.max),
                "hpa": self.object_name,
            }),
            ChangeClass::Delete => Value::from("delete"),
            ChangeClass::Metadata => Value::from("metadata"),
            ChangeClass::Config => serde_json::json!(self.config_in_force().map(|c| &c.data)),
        };
        self.digest_of(content)
    }

    /// What the change is applied to, digested as [`Change::content_digest`]: the spec
    /// but replicas before a rollout, the replicas before a scale, the bounds before an
    /// HPA change. The apiserver's retry after a write conflict (another writer changed
    /// the status, say) starts from the same base; a replay of the same content after
    /// someone else changed the workload does not, and is another change.
    #[must_use]
    pub fn base_digest(&self) -> String {
        let base = match self.class {
            ChangeClass::Rollout => spec_without_replicas_of(self.old_object.as_ref()),
            ChangeClass::Scale => {
                serde_json::json!({"replicas": self.replicas().and_then(|r| r.old)})
            }
            ChangeClass::Autoscaling => serde_json::json!({
                "min": self.hpa_bounds().and_then(|h| h.old_min),
                "max": self.hpa_bounds().and_then(|h| h.old_max),
            }),
            _ => Value::Null,
        };
        self.digest_of(base)
    }

    /// The state the change leaves, in the form of [`Change::base_digest`]: a retry of
    /// the change after it landed starts from it.
    #[must_use]
    pub fn result_digest(&self) -> String {
        let result = match self.class {
            ChangeClass::Rollout => spec_without_replicas_of(self.object.as_ref()),
            ChangeClass::Scale => serde_json::json!({"replicas": self.replicas().map(|r| r.new)}),
            ChangeClass::Autoscaling => serde_json::json!({
                "min": self.hpa_bounds().map(|h| h.min),
                "max": self.hpa_bounds().map(|h| h.max),
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
/// to move. Each resource slo-guard judges has its own classifier.
fn classify_borrowed(
    request: &ReviewRequest,
    workloads: &dyn WorkloadLookup,
) -> Result<Option<Change>, AdmissionError> {
    let incoming = Incoming::new(request, workloads);
    // The apiserver always sends metadata; an object without any is hand-made, and a patch
    // under /metadata could not apply to it.
    if [incoming.object, incoming.old_object]
        .into_iter()
        .flatten()
        .any(|o| o.metadata.field_count == 0)
    {
        return Err(AdmissionError::Malformed(
            "object or oldObject has no metadata".to_string(),
        ));
    }
    let group = request.resource.group.as_str();
    let resource = request.resource.resource.as_str();
    let sub_resource = request.sub_resource.as_deref().unwrap_or("");
    let workload_kind =
        || WorkloadKind::from_resource(resource).ok_or_else(|| unreachable_resource(resource));
    let pod_maker_kind = || {
        PodMakerKind::from_resource(group, resource).ok_or_else(|| unreachable_resource(resource))
    };
    let classified = match (group, resource, sub_resource) {
        ("apps", "deployments" | "statefulsets", "scale") => {
            classify_workload_scale(&incoming, workload_kind()?, workloads)
        }
        ("apps", "deployments" | "statefulsets", "") => {
            classify_workload(&incoming, workload_kind()?)
        }
        ("autoscaling", "horizontalpodautoscalers", "") => classify_hpa(&incoming, workloads),
        ("", "configmaps", "") => classify_config_map(&incoming),
        ("apps", "replicasets", "scale") | ("", "replicationcontrollers", "scale") => {
            classify_pod_maker_scale(&incoming, pod_maker_kind()?)
        }
        // An ephemeral container runs another image in a live Pod: judged as a change of
        // that Pod.
        ("apps", "replicasets" | "daemonsets", "")
        | ("", "pods" | "replicationcontrollers", "")
        | ("", "pods", "ephemeralcontainers")
        | ("batch", "jobs" | "cronjobs", "") => classify_pod_maker(&incoming, pod_maker_kind()?),
        ("", "services", "") => classify_service(&incoming, workloads),
        _ => Ok(None),
    }?;
    match classified {
        None if matches!(request.operation, Operation::Delete | Operation::Update)
            && sub_resource.is_empty() =>
        {
            classify_owner(&incoming)
        }
        classified => Ok(classified),
    }
}

/// What every classifier reads of a request.
struct Incoming<'a> {
    request: &'a ReviewRequest,
    /// The watch cache, for the workloads a deleted object owns.
    workloads: &'a dyn WorkloadLookup,
    /// [`Incoming::dependents`], looked up once: [`classify_owner`] asks before it builds
    /// the change that carries them.
    dependents: std::cell::OnceCell<Vec<Target>>,
    namespace: &'a str,
    object: Option<&'a ReviewObject>,
    old_object: Option<&'a ReviewObject>,
    /// The name of the object the request writes: the apiserver leaves `request.name`
    /// empty for a create whose name is generated.
    object_name: String,
}

impl<'a> Incoming<'a> {
    fn new(request: &'a ReviewRequest, workloads: &'a dyn WorkloadLookup) -> Self {
        let object = request.object.as_ref();
        let old_object = request.old_object.as_ref();
        Self {
            request,
            workloads,
            dependents: std::cell::OnceCell::new(),
            namespace: request.namespace.as_deref().unwrap_or_default(),
            object,
            old_object,
            object_name: object
                .or(old_object)
                .and_then(|o| o.metadata.name.clone())
                .unwrap_or_else(|| request.name.clone()),
        }
    }

    /// The object the request is about: the new one, or the old one for a DELETE.
    fn current(&self) -> Result<&'a ReviewObject, AdmissionError> {
        self.object.or(self.old_object).ok_or_else(|| {
            AdmissionError::Malformed(format!(
                "{} {} request carries neither object nor oldObject",
                self.request.operation.as_str(),
                self.request.resource.resource
            ))
        })
    }

    /// The object after the change, if the change leaves one: none for a DELETE.
    fn after(&self) -> Option<&'a ReviewObject> {
        self.object
            .filter(|_| self.request.operation != Operation::Delete)
    }

    /// The change of `class` to `target`, judged by the decision context `context`.
    fn change(
        &self,
        class: ChangeClass,
        target: Target,
        detail: ChangeDetail,
        context: Option<BTreeMap<String, String>>,
    ) -> Change {
        let request = self.request;
        Change {
            uid: request.uid.clone(),
            class,
            target,
            requester: Requester {
                username: request.user_info.username.clone().unwrap_or_default(),
                groups: request.user_info.groups.clone().unwrap_or_default(),
                field_manager: request
                    .options
                    .as_ref()
                    .and_then(|options| options.field_manager.clone()),
            },
            dry_run: request.dry_run,
            detail,
            annotations: AnnotationState {
                after: context,
                before: self.old_object.map(annotations_of).unwrap_or_default(),
                map_present: self
                    .object
                    .is_some_and(|o| o.metadata.annotations.is_some()),
            },
            new_owners: match request.sub_resource {
                Some(_) => Vec::new(),
                None => new_owners(self.object, self.old_object),
            },
            dependents: self.dependents().to_vec(),
            object_name: self.object_name.clone(),
            object_uid: self
                .object
                .or(self.old_object)
                .and_then(|o| o.metadata.uid.clone()),
            object: None,
            old_object: None,
        }
    }

    /// The workloads the garbage collector deletes once this request is done, or once
    /// an owner the request gives the object is deleted: those the watch cache holds in
    /// the namespace that name the object (by its uid) as an owner. None unless the
    /// request deletes an object without orphaning its dependents, or gives an object an
    /// owner it did not have. Only direct dependents: a workload owned by an object that
    /// this one owns is not seen (docs/threat-model.md §4b).
    fn dependents(&self) -> &[Target] {
        self.dependents.get_or_init(|| self.look_up_dependents())
    }

    fn look_up_dependents(&self) -> Vec<Target> {
        let request = self.request;
        if request.sub_resource.is_some() {
            return Vec::new();
        }
        let owner = match request.operation {
            Operation::Delete
                if !request
                    .options
                    .as_ref()
                    .is_some_and(|options| options.orphans_dependents()) =>
            {
                self.old_object
            }
            // An agent that makes its own object the owner of a workload's owner can
            // delete that object: the garbage collector then deletes the owner, and the
            // workload after it.
            Operation::Update if !new_owners(self.object, self.old_object).is_empty() => {
                self.object.or(self.old_object)
            }
            _ => None,
        };
        let Some(uid) = owner
            .and_then(|o| o.metadata.uid.as_deref())
            .filter(|uid| !uid.is_empty())
        else {
            return Vec::new();
        };
        self.workloads
            .owned_by(self.namespace, uid)
            .into_iter()
            .map(|(kind, name, snapshot)| {
                let mut dependent = Target::new(
                    TargetKind::Workload(kind),
                    self.namespace,
                    &name,
                    snapshot.labels,
                );
                dependent.pod_labels = snapshot.pod_labels;
                dependent
            })
            .collect()
    }

    /// A change of a workload or pod maker itself (no subresource): judged by its class,
    /// with the replicas it moves.
    fn object_change(&self, target: Target) -> Result<Option<Change>, AdmissionError> {
        let Some(class) = object_class(self.request.operation, self.object, self.old_object)?
        else {
            return Ok(None);
        };
        let detail = ChangeDetail::Object {
            replicas: replica_change(self.object, self.old_object),
        };
        Ok(Some(self.change(
            class,
            target,
            detail,
            self.object.map(annotations_of),
        )))
    }

    /// A target with the labels of the object after the change (before it, for a
    /// DELETE), and before it for an UPDATE, its pods' labels read at `template_labels`.
    fn labelled_target(&self, kind: TargetKind, template_labels: &str) -> Target {
        let state = |o: &ReviewObject| LabelState {
            labels: o.metadata.labels.clone().unwrap_or_default(),
            pod_labels: string_map_at(&o.body, template_labels),
        };
        let mut target = Target::new(kind, self.namespace, &self.object_name, BTreeMap::new());
        if let Some(LabelState { labels, pod_labels }) = self.after().or(self.old_object).map(state)
        {
            target.labels = labels;
            target.pod_labels = pod_labels;
        }
        if self.request.operation == Operation::Update {
            target.before = self.old_object.map(state);
        }
        target
    }
}

/// A Deployment or StatefulSet written as an object.
fn classify_workload(
    incoming: &Incoming<'_>,
    kind: WorkloadKind,
) -> Result<Option<Change>, AdmissionError> {
    // Malformed without an object to judge.
    incoming.current()?;
    let target =
        incoming.labelled_target(TargetKind::Workload(kind), "/spec/template/metadata/labels");
    incoming.object_change(target)
}

/// A write to a Deployment's or StatefulSet's `scale` subresource: judged for the
/// workload, by its labels and decision context from the watch cache.
fn classify_workload_scale(
    incoming: &Incoming<'_>,
    kind: WorkloadKind,
    workloads: &dyn WorkloadLookup,
) -> Result<Option<Change>, AdmissionError> {
    let name = incoming.request.name.as_str();
    let parent = workloads.workload(WorkloadKey {
        kind,
        namespace: incoming.namespace,
        name,
    });
    let new = scale_replicas(incoming.object).ok_or_else(no_scale_replicas)?;
    let old =
        scale_replicas(incoming.old_object).or_else(|| parent.as_ref().and_then(|p| p.replicas));
    let mut target = Target::new(
        TargetKind::Workload(kind),
        incoming.namespace,
        name,
        BTreeMap::new(),
    );
    target.labels_known = parent.is_some();
    let context = parent.map(|parent| {
        target.labels = parent.labels;
        target.pod_labels = parent.pod_labels;
        parent.annotations
    });
    let detail = ChangeDetail::ScaleSubresource(ReplicaChange { old, new });
    Ok(Some(incoming.change(
        ChangeClass::Scale,
        target,
        detail,
        context,
    )))
}

/// An HPA created, updated or deleted: judged for the workload it scales.
fn classify_hpa(
    incoming: &Incoming<'_>,
    workloads: &dyn WorkloadLookup,
) -> Result<Option<Change>, AdmissionError> {
    let current = incoming.current()?;
    let namespace = incoming.namespace;
    let (target_kind, target_name) = scale_target_of(current);
    let target = hpa_target(current, target_kind, &target_name, namespace, workloads);
    // Pointing an HPA elsewhere takes autoscaling away from the workload it scaled.
    let retargeted_from = match (incoming.request.operation, incoming.old_object) {
        (Operation::Update, Some(old)) => {
            let (old_kind, old_name) = scale_target_of(old);
            (old_kind != target_kind || old_name != target_name)
                .then(|| Box::new(hpa_target(old, old_kind, &old_name, namespace, workloads)))
        }
        _ => None,
    };
    let class = match incoming.request.operation {
        Operation::Delete => ChangeClass::Delete,
        Operation::Connect => return Ok(None),
        _ => ChangeClass::Autoscaling,
    };
    let bounds = incoming
        .object
        .map(|new| hpa_bounds(new, incoming.old_object))
        .transpose()?;
    let detail = ChangeDetail::Autoscaler {
        bounds,
        retargeted_from,
    };
    Ok(Some(incoming.change(
        class,
        target,
        detail,
        incoming.object.map(annotations_of),
    )))
}

/// A ConfigMap: judged when it is a policy or a reflection before or after the change.
fn classify_config_map(incoming: &Incoming<'_>) -> Result<Option<Change>, AdmissionError> {
    let current = incoming.current()?;
    // The version after the change, if it is one slo-guard reads; for a DELETE there is
    // none.
    let after = incoming
        .after()
        .and_then(|o| config_kind_of(o).map(|kind| (o, kind)));
    let before = incoming.old_object.and_then(config_kind_of);
    // A change is judged for what the ConfigMap was and what it becomes; a policy if
    // either is one, so that turning a policy into a reflection (or into nothing) is
    // judged as removing a policy.
    let Some(config_kind) = [after.map(|(_, kind)| kind), before]
        .into_iter()
        .flatten()
        .min_by_key(|kind| *kind != ConfigKind::Policy)
    else {
        return Ok(None);
    };
    let mut target = Target::new(
        TargetKind::ConfigMap(config_kind),
        incoming.namespace,
        &incoming.object_name,
        current.metadata.labels.clone().unwrap_or_default(),
    );
    target.before = incoming.old_object.map(|o| LabelState {
        labels: o.metadata.labels.clone().unwrap_or_default(),
        pod_labels: BTreeMap::new(),
    });
    let in_force = after
        .map(|(o, kind)| {
            Ok::<_, AdmissionError>(ConfigInForce {
                kind,
                data: config_data_of(&o.body)?,
            })
        })
        .transpose()?;
    Ok(Some(incoming.change(
        ChangeClass::Config,
        target,
        ChangeDetail::Config(in_force),
        incoming.object.map(annotations_of),
    )))
}

/// A write to a ReplicaSet's or ReplicationController's `scale` subresource. Its labels
/// are not read: no watch cache holds these kinds.
fn classify_pod_maker_scale(
    incoming: &Incoming<'_>,
    kind: PodMakerKind,
) -> Result<Option<Change>, AdmissionError> {
    let new = scale_replicas(incoming.object).ok_or_else(no_scale_replicas)?;
    let mut target = Target::new(
        TargetKind::PodMaker(kind),
        incoming.namespace,
        &incoming.request.name,
        BTreeMap::new(),
    );
    target.labels_known = false;
    let detail = ChangeDetail::ScaleSubresource(ReplicaChange {
        old: scale_replicas(incoming.old_object),
        new,
    });
    Ok(Some(incoming.change(
        ChangeClass::Scale,
        target,
        detail,
        None,
    )))
}

/// A ReplicaSet, DaemonSet, Job, CronJob, ReplicationController or bare Pod written as
/// an object (or a Pod's ephemeral containers): judged by the labels of the pods it makes.
fn classify_pod_maker(
    incoming: &Incoming<'_>,
    kind: PodMakerKind,
) -> Result<Option<Change>, AdmissionError> {
    // Malformed without an object to judge.
    incoming.current()?;
    let mut target =
        incoming.labelled_target(TargetKind::PodMaker(kind), kind.pod_template_labels());
    if kind == PodMakerKind::Pod {
        // A Pod's own labels are what a Service selects.
        target.pod_labels = target.labels.clone();
        if let Some(before) = target.before.as_mut() {
            before.pod_labels = before.labels.clone();
        }
    }
    target.owners = [incoming.object, incoming.old_object]
        .into_iter()
        .flatten()
        .flat_map(|o| o.metadata.owner_references.iter().cloned())
        .collect();
    incoming.object_change(target)
}

/// A DELETE of an object slo-guard does not otherwise judge, or an update that gives it
/// an owner: judged for the workloads the garbage collector deletes with it, when there
/// are any. Every other DELETE or update of a namespaced object (most of them) is not
/// governed.
fn classify_owner(incoming: &Incoming<'_>) -> Result<Option<Change>, AdmissionError> {
    if incoming.dependents().is_empty() {
        return Ok(None);
    }
    let current = incoming.current()?;
    let request = incoming.request;
    let kind = match request.kind.kind.as_str() {
        "" => request.resource.resource.clone(),
        kind => kind.to_string(),
    };
    let target = Target::new(
        TargetKind::Owner,
        incoming.namespace,
        &incoming.object_name,
        current.metadata.labels.clone().unwrap_or_default(),
    );
    let detail = ChangeDetail::Owner {
        kind,
        api_version: request.kind.api_version(),
    };
    let class = match request.operation {
        Operation::Delete => ChangeClass::Delete,
        _ => ChangeClass::Metadata,
    };
    Ok(Some(incoming.change(class, target, detail, None)))
}

/// A Service: judged for the workloads whose pods it selects, before or after the change.
fn classify_service(
    incoming: &Incoming<'_>,
    workloads: &dyn WorkloadLookup,
) -> Result<Option<Change>, AdmissionError> {
    let current = incoming.current()?;
    let namespace = incoming.namespace;
    let selector_of = |o: &ReviewObject| string_map_at(&o.body, "/spec/selector");
    let after = incoming.after().map(selector_of);
    let before = incoming.old_object.map(selector_of);
    let class = match incoming.request.operation {
        Operation::Create => ChangeClass::Create,
        Operation::Delete => ChangeClass::Delete,
        Operation::Update if after == before => ChangeClass::Metadata,
        Operation::Update => ChangeClass::Rollout,
        Operation::Connect => return Ok(None),
    };
    let mut target = Target::new(
        TargetKind::Service,
        namespace,
        &incoming.object_name,
        current.metadata.labels.clone().unwrap_or_default(),
    );
    target.pod_labels = after.clone().unwrap_or_default();
    target.before = before.clone().map(|selector| LabelState {
        labels: BTreeMap::new(),
        pod_labels: selector,
    });
    // A selector picks a pod when the pod carries every pair; an empty one picks none (a
    // Service without selector, whose endpoints are managed by hand).
    let picks = |selector: &BTreeMap<String, String>, pods: &BTreeMap<String, String>| {
        !selector.is_empty() && selector.iter().all(|(k, v)| pods.get(k) == Some(v))
    };
    let served_workloads = workloads
        .workloads_in(namespace)
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
                namespace,
                &name,
                snapshot.labels,
            );
            served.pod_labels = snapshot.pod_labels;
            served
        })
        .collect();
    Ok(Some(incoming.change(
        class,
        target,
        ChangeDetail::Service { served_workloads },
        incoming.object.map(annotations_of),
    )))
}

/// Which of slo-guard's ConfigMaps `o` is by its labels. "true" enables, "false" parks a
/// ConfigMap; any other value is a typo that would silently disable a guardrail, so it is
/// judged (and rejected) too.
fn config_kind_of(o: &ReviewObject) -> Option<ConfigKind> {
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
}

/// An HPA's bounds after the change, and before it when there is an old object.
fn hpa_bounds(new: &ReviewObject, old: Option<&ReviewObject>) -> Result<HpaBounds, AdmissionError> {
    let max = replicas_field(&new.body, "/spec/maxReplicas").ok_or_else(|| {
        AdmissionError::Malformed("HorizontalPodAutoscaler has no spec.maxReplicas".into())
    })?;
    // The API defaults minReplicas to 1 when it is absent.
    let min_of = |o: &ReviewObject| replicas_field(&o.body, "/spec/minReplicas").unwrap_or(1);
    Ok(HpaBounds {
        min: min_of(new),
        max,
        old_min: old.map(min_of),
        old_max: old.and_then(|o| replicas_field(&o.body, "/spec/maxReplicas")),
    })
}

/// A Scale object's `spec.replicas`.
fn scale_replicas(scale: Option<&ReviewObject>) -> Option<u32> {
    scale.and_then(|scale| replicas_at(&scale.body, "spec"))
}

fn no_scale_replicas() -> AdmissionError {
    AdmissionError::Malformed("Scale object has no spec.replicas".into())
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

/// The owners `object` names that `old_object` did not (all of them for a create).
fn new_owners(
    object: Option<&ReviewObject>,
    old_object: Option<&ReviewObject>,
) -> Vec<OwnerReference> {
    let before = old_object.map_or(&[][..], |o| &o.metadata.owner_references[..]);
    object
        .map(|o| &o.metadata.owner_references[..])
        .unwrap_or_default()
        .iter()
        .filter(|owner| !before.contains(owner))
        .cloned()
        .collect()
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
    let parent = kind.and_then(|kind| {
        workloads.workload(WorkloadKey {
            kind,
            namespace,
            name,
        })
    });
    let mut target = Target::new(
        TargetKind::HorizontalPodAutoscaler { scales: kind },
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
    fn a_workload_write_names_the_owners_it_gains() {
        let deployments = ("apps", "v1", "deployments");
        let owner = |name: &str, uid: &str| serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": uid});
        let object = |owners: Vec<Value>| {
            serde_json::json!({
                "metadata": {"name": "checkout", "namespace": "payments", "ownerReferences": owners},
                "spec": {"replicas": 2, "template": {"spec": {"containers": []}}}
            })
        };
        let names = |change: &Change| -> Vec<(String, String)> {
            change
                .new_owners
                .iter()
                .map(|o| (o.name.clone(), o.uid.clone()))
                .collect()
        };
        let created = review(
            deployments,
            "CREATE",
            object(vec![owner("a", "1")]),
            Value::Null,
        );
        assert_eq!(names(&created), vec![("a".into(), "1".into())]);
        let kept = review(
            deployments,
            "UPDATE",
            object(vec![owner("a", "1"), owner("b", "2")]),
            object(vec![owner("a", "1")]),
        );
        assert_eq!(kept.class, ChangeClass::Metadata);
        assert_eq!(names(&kept), vec![("b".into(), "2".into())]);
        // The same name with another uid is another owner: the old one may be gone.
        let swapped = review(
            deployments,
            "UPDATE",
            object(vec![owner("a", "9")]),
            object(vec![owner("a", "1")]),
        );
        assert_eq!(names(&swapped), vec![("a".into(), "9".into())]);
        let dropped = review(
            deployments,
            "UPDATE",
            object(vec![]),
            object(vec![owner("a", "1")]),
        );
        assert!(dropped.new_owners.is_empty());
        // An HPA's owners are its own; a Scale's metadata is not stored, so it adds none.
        let hpa = |owners: Vec<Value>| {
            serde_json::json!({
                "metadata": {"name": "web", "namespace": "payments", "ownerReferences": owners},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "checkout"}, "maxReplicas": 5}
            })
        };
        let hpas = ("autoscaling", "v2", "horizontalpodautoscalers");
        let owned_hpa = review(hpas, "UPDATE", hpa(vec![owner("a", "1")]), hpa(vec![]));
        assert_eq!(names(&owned_hpa), vec![("a".into(), "1".into())]);
        let mut body = review_body(
            ("apps", "v1", "deployments"),
            "UPDATE",
            serde_json::json!({"metadata": {"name": "checkout", "ownerReferences": [owner("a", "1")]}, "spec": {"replicas": 3}}),
            serde_json::json!({"metadata": {"name": "checkout"}, "spec": {"replicas": 2}}),
        );
        body["request"]["subResource"] = Value::from("scale");
        body["request"]["kind"]["kind"] = Value::from("Scale");
        let request = parse_review(body.to_string().as_bytes()).expect("a review");
        let scale = classify(request, &()).expect("classified").expect("judged");
        assert!(scale.is_scale_subresource());
        assert!(scale.new_owners.is_empty());
    }

    #[test]
    fn a_delete_is_judged_for_the_workloads_the_garbage_collector_deletes_with_it() {
        let owned = |namespace: &str, name: &str, owner_uid: &str| {
            (
                (
                    WorkloadKind::Deployment,
                    namespace.to_string(),
                    name.to_string(),
                ),
                WorkloadSnapshot {
                    labels: BTreeMap::from([("app".to_string(), name.to_string())]),
                    owner_uids: vec![owner_uid.to_string()],
                    ..WorkloadSnapshot::default()
                },
            )
        };
        // Owner references name objects of the dependent's own namespace.
        let workloads = BTreeMap::from([
            owned("payments", "checkout", "cm-1"),
            owned("payments", "worker", "cm-2"),
            owned("other", "checkout", "cm-1"),
        ]);
        let configmaps = ("", "v1", "configmaps");
        let delete = |uid: &str, options: Value, dry_run: bool| {
            let mut body = review_body(
                configmaps,
                "DELETE",
                Value::Null,
                serde_json::json!({"metadata": {"name": "handle", "namespace": "payments", "uid": uid}, "data": {}}),
            );
            body["request"]["kind"] =
                serde_json::json!({"group": "", "version": "v1", "kind": "ConfigMap"});
            body["request"]["name"] = Value::from("handle");
            body["request"]["options"] = options;
            body["request"]["dryRun"] = Value::from(dry_run);
            let request = parse_review(body.to_string().as_bytes()).expect("a review");
            classify(request, &workloads).expect("classified")
        };
        let background = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "propagationPolicy": "Background"});
        let change = delete("cm-1", background.clone(), false).expect("judged");
        assert_eq!(change.class, ChangeClass::Delete);
        assert_eq!(change.target.kind, TargetKind::Owner);
        assert_eq!(change.describe(), "ConfigMap payments/handle");
        let names: Vec<String> = change.dependents.iter().map(Target::describe).collect();
        assert_eq!(names, vec!["Deployment payments/checkout".to_string()]);
        assert_eq!(
            change.dependents[0].labels,
            BTreeMap::from([("app".to_string(), "checkout".to_string())])
        );
        // No options (the resource's default, background) and foreground delete them too;
        // a dry run is judged as the delete would be.
        for options in [
            Value::Null,
            serde_json::json!({"propagationPolicy": "Foreground"}),
            serde_json::json!({"orphanDependents": false}),
        ] {
            let judged = delete("cm-1", options.clone(), false);
            assert_eq!(judged.map(|c| c.dependents.len()), Some(1), "{options}");
        }
        assert!(delete("cm-1", background, true).expect("judged").dry_run);
        // Orphaned dependents stay: nothing governed is deleted, nothing to judge.
        for options in [
            serde_json::json!({"propagationPolicy": "Orphan"}),
            serde_json::json!({"orphanDependents": true}),
        ] {
            assert!(
                delete("cm-1", options.clone(), false).is_none(),
                "{options}"
            );
        }
        // An object that owns no cached workload is not judged.
        assert!(delete("cm-9", Value::Null, false).is_none());
        // A delete slo-guard judges for itself (a Service's) carries its dependents too.
        let mut service = review_body(
            ("", "v1", "services"),
            "DELETE",
            Value::Null,
            serde_json::json!({"metadata": {"name": "front", "uid": "cm-2"}, "spec": {}}),
        );
        service["request"]["name"] = Value::from("front");
        let request = parse_review(service.to_string().as_bytes()).expect("a review");
        let change = classify(request, &workloads)
            .expect("classified")
            .expect("judged");
        assert_eq!(change.target.kind, TargetKind::Service);
        let names: Vec<String> = change.dependents.iter().map(Target::describe).collect();
        assert_eq!(names, vec!["Deployment payments/worker".to_string()]);
        // Writes other than deletes have none.
        let created = review(
            ("apps", "v1", "deployments"),
            "CREATE",
            serde_json::json!({"metadata": {"name": "checkout", "uid": "cm-1"}, "spec": {}}),
            Value::Null,
        );
        assert!(created.dependents.is_empty());
    }

    #[test]
    fn an_owner_given_an_owner_of_its_own_is_judged_for_the_workloads_it_owns() {
        let workloads = BTreeMap::from([(
            (
                WorkloadKind::Deployment,
                "payments".to_string(),
                "ledger".to_string(),
            ),
            WorkloadSnapshot {
                owner_uids: vec!["cm-1".to_string()],
                ..WorkloadSnapshot::default()
            },
        )]);
        let root = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "root", "uid": "root-1"});
        let other = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "other-1"});
        let update = |uid: &str, owners_after: Value, owners_before: Value| {
            let object = |owners: &Value| serde_json::json!({"metadata": {"name": "handle", "namespace": "payments", "uid": uid, "ownerReferences": owners}, "data": {}});
            let mut body = review_body(
                ("", "v1", "configmaps"),
                "UPDATE",
                object(&owners_after),
                object(&owners_before),
            );
            body["request"]["kind"] =
                serde_json::json!({"group": "", "version": "v1", "kind": "ConfigMap"});
            body["request"]["name"] = Value::from("handle");
            let request = parse_review(body.to_string().as_bytes()).expect("a review");
            classify(request, &workloads).expect("classified")
        };
        let change = update("cm-1", serde_json::json!([root]), Value::Null).expect("judged");
        assert_eq!(change.class, ChangeClass::Metadata);
        assert_eq!(change.target.kind, TargetKind::Owner);
        assert_eq!(change.new_owners.len(), 1);
        assert_eq!(change.new_owners[0].name, "root");
        let names: Vec<String> = change.dependents.iter().map(Target::describe).collect();
        assert_eq!(names, vec!["Deployment payments/ledger".to_string()]);
        // A second owner is an owner gained too.
        let added = update(
            "cm-1",
            serde_json::json!([other, root]),
            serde_json::json!([other]),
        );
        assert_eq!(added.map(|c| c.dependents.len()), Some(1));
        // Not judged: owners kept or removed, and an object that owns nothing cached.
        assert!(update("cm-1", serde_json::json!([root]), serde_json::json!([root])).is_none());
        assert!(update("cm-1", Value::Null, serde_json::json!([root])).is_none());
        assert!(update("cm-9", serde_json::json!([root]), Value::Null).is_none());
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
            .served_workloads()
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
        assert_eq!(change.config_after(), Some(ConfigKind::Reflection));
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
            change.retargeted_from().map(|t| t.name.as_str()),
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
