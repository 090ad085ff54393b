//! The cluster effects of a decision: a denial recorded as an Event on the object
//! judged. Also slo-guard's own username, whose writes the guard does not re-stamp.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{Api, Client};

use super::events::{EventRecord, EventRecorder};
use super::workloads::WorkloadCache;
use crate::admission::{Change, ChangeClass, TargetKind, WorkloadKind};
use crate::rules::Decision;

/// Records denials as Events on the objects judged.
pub struct ClusterEffects {
    events: EventRecorder,
    workloads: WorkloadCache,
}

impl ClusterEffects {
    /// Effects that record Events through `events`, naming workloads by their uid from
    /// `workloads`.
    pub fn new(events: EventRecorder, workloads: WorkloadCache) -> Self {
        Self { events, workloads }
    }

    /// The object a denial's Event is about (a scale request's is its workload), and the
    /// one it is related to: for an HPA change, the HPA and the workload it scales.
    fn denial_reference(
        &self,
        change: &Change,
    ) -> Option<(ObjectReference, Option<ObjectReference>)> {
        let target = &change.target;
        let reference =
            |api_version: &str, kind: &str, name: &str, uid: Option<String>| ObjectReference {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
                namespace: Some(target.namespace.clone()),
                name: Some(name.into()),
                uid,
                ..ObjectReference::default()
            };
        let workload = |kind: WorkloadKind| {
            reference(
                "apps/v1",
                kind.as_str(),
                &target.name,
                self.workloads.uid(kind, &target.namespace, &target.name),
            )
        };
        match (target.kind, target.workload_kind()) {
            (TargetKind::ConfigMap(_), _) => {
                Some((reference("v1", "ConfigMap", &target.name, None), None))
            }
            (TargetKind::Workload(_), Some(kind)) => Some((workload(kind), None)),
            (TargetKind::HorizontalPodAutoscaler { .. }, scaled) => Some((
                reference(
                    "autoscaling/v2",
                    "HorizontalPodAutoscaler",
                    &change.object_name,
                    change.object_uid.clone(),
                ),
                scaled.map(workload),
            )),
            (TargetKind::PodMaker(kind), _) => Some((
                reference(
                    kind.api_version(),
                    kind.as_str(),
                    &change.object_name,
                    change.object_uid.clone(),
                ),
                None,
            )),
            (TargetKind::Service, _) => Some((
                reference(
                    "v1",
                    "Service",
                    &change.object_name,
                    change.object_uid.clone(),
                ),
                None,
            )),
            // The object deleted, and the first workload the garbage collector would have
            // deleted with it.
            (TargetKind::Owner, _) => {
                let (kind, api_version) = match &change.detail {
                    crate::admission::ChangeDetail::Owner { kind, api_version } => {
                        (kind.as_str(), api_version.as_str())
                    }
                    _ => return None,
                };
                let related = change.dependents.first().and_then(|dependent| {
                    dependent.workload_kind().map(|kind| {
                        reference(
                            "apps/v1",
                            kind.as_str(),
                            &dependent.name,
                            self.workloads
                                .uid(kind, &dependent.namespace, &dependent.name),
                        )
                    })
                });
                Some((
                    reference(
                        api_version,
                        kind,
                        &change.object_name,
                        change.object_uid.clone(),
                    ),
                    related,
                ))
            }
            (TargetKind::Workload(_), None) => None,
        }
    }
}

/// An Event's `action`: the change class judged, in the API's PascalCase.
fn action_of(class: ChangeClass) -> &'static str {
    match class {
        ChangeClass::Create => "Create",
        ChangeClass::Rollout => "Rollout",
        ChangeClass::Scale => "Scale",
        ChangeClass::Autoscaling => "Autoscaling",
        ChangeClass::Metadata => "Metadata",
        ChangeClass::Delete => "Delete",
        ChangeClass::Config => "Config",
    }
}

impl crate::guard::AdmissionEffects for ClusterEffects {
    fn record_denial(&self, change: &Change, decision: &Decision) {
        let Some((regarding, related)) = self.denial_reference(change) else {
            return;
        };
        let message = crate::verdict::denial_message(decision).unwrap_or_default();
        self.events.record(EventRecord {
            regarding,
            related,
            reason: "Denied",
            action: action_of(change.class),
            note: format!(
                "By {} ({}): {message}",
                change.requester.username,
                decision.actor.as_str()
            ),
        });
    }
}

/// slo-guard's own username, from a SelfSubjectReview.
pub async fn own_username(client: &Client) -> Option<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    match reviews
        .create(
            &kube::api::PostParams::default(),
            &SelfSubjectReview::default(),
        )
        .await
    {
        Ok(review) => review.status?.user_info?.username,
        Err(error) => {
            tracing::warn!(%error, "cannot learn slo-guard's own identity (SelfSubjectReview)");
            None
        }
    }
}
