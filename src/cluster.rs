//! The Kubernetes edge: watches that keep the policy store and the workload cache
//! current. Nothing here judges anything; requests never wait on the API server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use crate::admission::{
    ConfigKind, POLICY_LABEL, REFLECTION_LABEL, WorkloadKind, WorkloadLookup, WorkloadSnapshot,
};
use crate::metrics::{ConfigMapLabels, Metrics};
use crate::policy::{ConfigMapDocument, PolicyStore, StoreEvent};

/// Workload labels and annotations from metadata-only watches, so a scale request is
/// matched and judged by its parent's decision context without an API call.
#[derive(Clone)]
pub struct WorkloadCache {
    deployments: Store<PartialObjectMeta<Deployment>>,
    statefulsets: Store<PartialObjectMeta<StatefulSet>>,
}

fn snapshot_of<K>(meta: &PartialObjectMeta<K>) -> WorkloadSnapshot {
    WorkloadSnapshot {
        labels: meta.metadata.labels.clone().unwrap_or_default(),
        annotations: meta.metadata.annotations.clone().unwrap_or_default(),
        replicas: None,
    }
}

impl WorkloadLookup for WorkloadCache {
    fn workload(
        &self,
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
    ) -> Option<WorkloadSnapshot> {
        match kind {
            WorkloadKind::Deployment => self
                .deployments
                .get(&ObjectRef::new(name).within(namespace))
                .map(|meta| snapshot_of(&meta)),
            WorkloadKind::StatefulSet => self
                .statefulsets
                .get(&ObjectRef::new(name).within(namespace))
                .map(|meta| snapshot_of(&meta)),
        }
    }
}

/// Backoff keeps a flapping API server from being hammered; the stream never ends.
fn resilient<S, T>(stream: S, what: &'static str) -> impl Stream<Item = T>
where
    S: Stream<Item = Result<T, watcher::Error>>,
{
    stream.filter_map(move |item| async move {
        match item {
            Ok(item) => Some(item),
            Err(error) => {
                tracing::warn!(%error, watch = what, "watch error; retrying");
                None
            }
        }
    })
}

/// Starts the workload watches. The returned future resolves once both caches have
/// their initial list.
pub fn start_workload_cache(client: &Client) -> (WorkloadCache, impl Future<Output = ()> + use<>) {
    let (deployments, deployment_writer) = reflector::store();
    let (statefulsets, statefulset_writer) = reflector::store();
    let deployment_stream = reflector::reflector(
        deployment_writer,
        watcher::watcher(
            Api::<PartialObjectMeta<Deployment>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let statefulset_stream = reflector::reflector(
        statefulset_writer,
        watcher::watcher(
            Api::<PartialObjectMeta<StatefulSet>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    tokio::spawn(resilient(deployment_stream, "deployments").for_each(|_| async {}));
    tokio::spawn(resilient(statefulset_stream, "statefulsets").for_each(|_| async {}));
    let cache = WorkloadCache {
        deployments: deployments.clone(),
        statefulsets: statefulsets.clone(),
    };
    let synced = async move {
        let _ = deployments.wait_until_ready().await;
        let _ = statefulsets.wait_until_ready().await;
    };
    (cache, synced)
}

fn document_of(configmap: ConfigMap) -> Option<ConfigMapDocument> {
    let origin = format!(
        "configmap {}/{}",
        configmap.metadata.namespace.as_deref().unwrap_or_default(),
        configmap.metadata.name.as_deref().unwrap_or_default()
    );
    match ConfigMapDocument::from_configmap(configmap, "default", origin) {
        Ok(document) => Some(document),
        Err(error) => {
            tracing::warn!(%error, "unreadable ConfigMap");
            None
        }
    }
}

pub fn report(event: &StoreEvent, metrics: &Metrics) {
    match event {
        StoreEvent::Loaded { configmap } => tracing::info!(configmap = %configmap, "policy loaded"),
        StoreEvent::Removed { configmap } => {
            tracing::info!(configmap = %configmap, "policy removed")
        }
        StoreEvent::Rejected {
            configmap,
            error,
            kept_previous,
        } => {
            metrics
                .policy_load_errors
                .get_or_create(&ConfigMapLabels {
                    configmap: configmap.to_string(),
                })
                .inc();
            tracing::error!(configmap = %configmap, %error, kept_previous, "policy rejected");
        }
        StoreEvent::Ignored => {}
    }
}

/// Watches one kind of slo-guard ConfigMap cluster-wide and keeps the store in step.
/// Sends on `synced` after the first complete list.
pub async fn watch_configmaps(
    client: Client,
    kind: ConfigKind,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    synced: tokio::sync::oneshot::Sender<()>,
) {
    let label = match kind {
        ConfigKind::Policy => POLICY_LABEL,
        ConfigKind::Reflection => REFLECTION_LABEL,
    };
    let config = watcher::Config::default().labels(&format!("{label}=true"));
    let stream = watcher::watcher(Api::<ConfigMap>::all(client), config).default_backoff();
    let mut stream = std::pin::pin!(resilient(stream, "configmaps"));
    let mut listing: BTreeMap<(String, String), ConfigMapDocument> = BTreeMap::new();
    let mut synced = Some(synced);
    while let Some(event) = stream.next().await {
        match event {
            Event::Init => listing.clear(),
            Event::InitApply(configmap) => {
                if let Some(document) = document_of(configmap) {
                    listing.insert(
                        (document.namespace.clone(), document.name.clone()),
                        document,
                    );
                }
            }
            Event::InitDone => {
                let documents: Vec<ConfigMapDocument> =
                    std::mem::take(&mut listing).into_values().collect();
                for event in store.replace_all(Some(kind), &documents) {
                    report(&event, &metrics);
                }
                if let Some(synced) = synced.take() {
                    let _ = synced.send(());
                }
            }
            Event::Apply(configmap) => {
                if let Some(document) = document_of(configmap) {
                    report(&store.apply(&document), &metrics);
                }
            }
            Event::Delete(configmap) => {
                let namespace = configmap.metadata.namespace.unwrap_or_default();
                let name = configmap.metadata.name.unwrap_or_default();
                report(&store.remove(&namespace, &name), &metrics);
            }
        }
    }
}

/// How long `serve` waits for the first list before it reports not ready and keeps trying.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Stamps `slo-guard.io/last-agent-change` on workloads agents scale through the
/// subresource, so the cooldown holds across slo-guard replicas and restarts.
pub struct ClusterEffects {
    client: Client,
}

impl ClusterEffects {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl crate::guard::AdmissionEffects for ClusterEffects {
    fn record_agent_scale(
        &self,
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) {
        let client = self.client.clone();
        let (namespace, name) = (namespace.to_string(), name.to_string());
        let stamp = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        tokio::spawn(async move {
            let patch = serde_json::json!({
                "metadata": {"annotations": {crate::annotations::LAST_AGENT_CHANGE: stamp}}
            });
            let params = kube::api::PatchParams::default();
            let result = match kind {
                WorkloadKind::Deployment => Api::<Deployment>::namespaced(client, &namespace)
                    .patch_metadata(&name, &params, &kube::api::Patch::Merge(&patch))
                    .await
                    .map(|_| ()),
                WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client, &namespace)
                    .patch_metadata(&name, &params, &kube::api::Patch::Merge(&patch))
                    .await
                    .map(|_| ()),
            };
            match result {
                Ok(()) => {
                    tracing::debug!(workload = %format!("{namespace}/{name}"), "recorded agent scale for the cooldown")
                }
                Err(error) => tracing::error!(
                    workload = %format!("{namespace}/{name}"),
                    %error,
                    "could not record an agent scale; the cooldown will not see it"
                ),
            }
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
