//! The Kubernetes edge: watches that keep the policy store and the workload cache
//! current. Nothing here judges anything; requests never wait on the API server.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, PodTemplateSpec};
use k8s_openapi::api::events::v1::{Event as KubeEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use crate::admission::{
    Change, ChangeClass, ConfigKind, POLICY_LABEL, REFLECTION_LABEL, TargetKind, WorkloadKind,
    WorkloadLookup, WorkloadSnapshot,
};
use crate::metrics::{ConfigMapLabels, Metrics};
use crate::policy::PolicyRef;
use crate::rules::Decision;
use crate::slo_spec::{CatalogEvent, DocumentKind, SloSpecDocument, SloSpecKind};
use crate::store::{ConfigMapDocument, PolicyStore, StoreEvent};

/// Workload labels, pod template labels, annotations and replicas from watches, so a
/// scale request is matched and judged by its parent's decision context without an API
/// call. The watch reads whole objects (a metadata-only watch cannot see the pod
/// template's labels, by which a policy governs a workload whose pods serve a guarded
/// one), but the cache keeps only what is read here, in a compact form: a cached
/// Deployment costs a few hundred bytes instead of the kilobytes of its typed object.
#[derive(Clone, Default)]
pub struct WorkloadCache {
    deployments: Arc<RwLock<Shelf>>,
    statefulsets: Arc<RwLock<Shelf>>,
}

/// Workloads by namespace, then name: a Service change reads one namespace's.
type Shelf = HashMap<Box<str>, HashMap<Box<str>, Arc<CachedWorkload>>>;

/// Sorted key-value pairs: the smallest form of a label or annotation map.
type Pairs = Box<[(Box<str>, Box<str>)]>;

struct CachedWorkload {
    labels: Pairs,
    pod_labels: Pairs,
    annotations: Pairs,
    replicas: Option<u32>,
    uid: Option<Box<str>>,
}

/// Never read by a rule, and often the largest thing on an object: a copy of the whole
/// manifest as last applied by kubectl.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn pairs(map: Option<BTreeMap<String, String>>) -> Pairs {
    map.unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key != LAST_APPLIED)
        .map(|(key, value)| (key.into_boxed_str(), value.into_boxed_str()))
        .collect()
}

fn map_of(pairs: &Pairs) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

impl CachedWorkload {
    fn of(metadata: ObjectMeta, replicas: Option<i32>, template: PodTemplateSpec) -> Self {
        CachedWorkload {
            labels: pairs(metadata.labels),
            pod_labels: pairs(template.metadata.and_then(|m| m.labels)),
            annotations: pairs(metadata.annotations),
            replicas: replicas.and_then(|r| u32::try_from(r).ok()),
            uid: metadata.uid.map(String::into_boxed_str),
        }
    }

    fn snapshot(&self) -> WorkloadSnapshot {
        WorkloadSnapshot {
            labels: map_of(&self.labels),
            pod_labels: map_of(&self.pod_labels),
            annotations: map_of(&self.annotations),
            replicas: self.replicas,
        }
    }
}

/// A watched kind the cache keeps: where its name, namespace and cached form come from.
trait Cacheable:
    kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static
{
    fn into_cached(self) -> (Box<str>, Box<str>, CachedWorkload);
}

fn identity(metadata: &ObjectMeta) -> (Box<str>, Box<str>) {
    (
        metadata
            .namespace
            .clone()
            .unwrap_or_default()
            .into_boxed_str(),
        metadata.name.clone().unwrap_or_default().into_boxed_str(),
    )
}

impl Cacheable for Deployment {
    fn into_cached(self) -> (Box<str>, Box<str>, CachedWorkload) {
        let (namespace, name) = identity(&self.metadata);
        let spec = self.spec.unwrap_or_default();
        let cached = CachedWorkload::of(self.metadata, spec.replicas, spec.template);
        (namespace, name, cached)
    }
}

impl Cacheable for StatefulSet {
    fn into_cached(self) -> (Box<str>, Box<str>, CachedWorkload) {
        let (namespace, name) = identity(&self.metadata);
        let spec = self.spec.unwrap_or_default();
        let cached = CachedWorkload::of(self.metadata, spec.replicas, spec.template);
        (namespace, name, cached)
    }
}

// Every write is a single insert, remove or swap, so a poisoned lock holds a consistent
// map and is safe to keep using.
fn read(shelf: &RwLock<Shelf>) -> std::sync::RwLockReadGuard<'_, Shelf> {
    shelf
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write(shelf: &RwLock<Shelf>) -> std::sync::RwLockWriteGuard<'_, Shelf> {
    shelf
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl WorkloadLookup for WorkloadCache {
    fn workload(
        &self,
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
    ) -> Option<WorkloadSnapshot> {
        self.cached(kind, namespace, name).map(|w| w.snapshot())
    }

    fn workloads_in(&self, namespace: &str) -> Vec<(WorkloadKind, String, WorkloadSnapshot)> {
        [
            (WorkloadKind::Deployment, &self.deployments),
            (WorkloadKind::StatefulSet, &self.statefulsets),
        ]
        .into_iter()
        .flat_map(|(kind, shelf)| {
            read(shelf)
                .get(namespace)
                .map(|workloads| {
                    workloads
                        .iter()
                        .map(|(name, cached)| (kind, name.to_string(), cached.snapshot()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect()
    }
}

impl WorkloadCache {
    fn shelf(&self, kind: WorkloadKind) -> &RwLock<Shelf> {
        match kind {
            WorkloadKind::Deployment => &self.deployments,
            WorkloadKind::StatefulSet => &self.statefulsets,
        }
    }

    fn cached(
        &self,
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<CachedWorkload>> {
        read(self.shelf(kind)).get(namespace)?.get(name).cloned()
    }

    /// The workload's uid, so an Event names the very object (`kubectl describe` matches
    /// Events by uid). None for a workload the cache has not seen (a denied create).
    pub fn uid(&self, kind: WorkloadKind, namespace: &str, name: &str) -> Option<String> {
        self.cached(kind, namespace, name)?
            .uid
            .as_deref()
            .map(str::to_string)
    }
}

/// Keeps `shelf` in step with a watch of `K`: a relist builds a new shelf and swaps it
/// in whole, so lookups never see half a list. Sends on `listed` after the first list.
async fn keep_in_step<K: Cacheable>(
    api: Api<K>,
    shelf: Arc<RwLock<Shelf>>,
    what: &'static str,
    listed: tokio::sync::oneshot::Sender<()>,
    page_size: u32,
) {
    let config = watcher::Config::default().page_size(page_size);
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(resilient(stream, what));
    let mut listed = Some(listed);
    let mut pending: Option<Shelf> = None;
    while let Some(event) = stream.next().await {
        match event {
            Event::Init => pending = Some(Shelf::new()),
            Event::InitApply(object) => {
                let (namespace, name, cached) = object.into_cached();
                pending
                    .get_or_insert_with(Shelf::new)
                    .entry(namespace)
                    .or_default()
                    .insert(name, Arc::new(cached));
            }
            Event::InitDone => {
                *write(&shelf) = pending.take().unwrap_or_default();
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
            }
            Event::Apply(object) => {
                let (namespace, name, cached) = object.into_cached();
                write(&shelf)
                    .entry(namespace)
                    .or_default()
                    .insert(name, Arc::new(cached));
            }
            Event::Delete(object) => {
                let (namespace, name) = identity(object.meta());
                let mut shelf = write(&shelf);
                if let Some(workloads) = shelf.get_mut(&namespace) {
                    workloads.remove(&name);
                    if workloads.is_empty() {
                        shelf.remove(&namespace);
                    }
                }
            }
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

/// Starts the workload watches, listing `page_size` objects a page (each page is held
/// whole, typed, while it is read into the cache). The returned future resolves once
/// both caches have their initial list.
pub fn start_workload_cache(
    client: &Client,
    page_size: u32,
) -> (WorkloadCache, impl Future<Output = ()> + use<>) {
    let cache = WorkloadCache::default();
    let (deployments_listed, deployments_ready) = tokio::sync::oneshot::channel();
    let (statefulsets_listed, statefulsets_ready) = tokio::sync::oneshot::channel();
    tokio::spawn(keep_in_step(
        Api::<Deployment>::all(client.clone()),
        cache.deployments.clone(),
        "deployments",
        deployments_listed,
        page_size,
    ));
    tokio::spawn(keep_in_step(
        Api::<StatefulSet>::all(client.clone()),
        cache.statefulsets.clone(),
        "statefulsets",
        statefulsets_listed,
        page_size,
    ));
    let synced = async move {
        let _ = deployments_ready.await;
        let _ = statefulsets_ready.await;
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
/// The reference an Event on a ConfigMap carries: this very version of it.
fn configmap_reference(configmap: &ConfigMap) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        namespace: configmap.metadata.namespace.clone(),
        name: configmap.metadata.name.clone(),
        uid: configmap.metadata.uid.clone(),
        resource_version: configmap.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

/// Logs and counts a store event and, for a rejected version, records a Warning Event
/// on the ConfigMap so its owner sees the error with `kubectl describe configmap`.
fn surface(
    event: &StoreEvent,
    kind: ConfigKind,
    references: &HashMap<(String, String), ObjectReference>,
    metrics: &Metrics,
    events: Option<&EventRecorder>,
) {
    report(event, metrics);
    let (
        Some(events),
        StoreEvent::Rejected {
            configmap,
            error,
            kept_previous,
        },
    ) = (events, event)
    else {
        return;
    };
    let PolicyRef { namespace, name } = configmap;
    let Some(reference) = references.get(&(namespace.clone(), name.clone())) else {
        return;
    };
    let consequence = if *kept_previous {
        "The last good version stays in force."
    } else {
        "No earlier version was valid, so this ConfigMap governs nothing."
    };
    events.record(EventRecord {
        regarding: reference.clone(),
        related: None,
        reason: match kind {
            ConfigKind::Policy => "PolicyRejected",
            ConfigKind::Reflection => "ReflectionRejected",
        },
        action: "Load",
        note: format!("{error}. {consequence} Fix it and apply again."),
    });
}

/// Watches one kind of slo-guard ConfigMap cluster-wide and keeps the store in step.
/// Sends on `synced` after the first complete list. Rejected versions are logged,
/// counted, and recorded as Events on their ConfigMap when `events` is given.
pub async fn watch_configmaps(
    client: Client,
    kind: ConfigKind,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    events: Option<EventRecorder>,
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
    // The version of each ConfigMap last seen, for Events about it.
    let mut references: HashMap<(String, String), ObjectReference> = HashMap::new();
    let mut listed: HashMap<(String, String), ObjectReference> = HashMap::new();
    let mut synced = Some(synced);
    let events = events.as_ref();
    let key_of = |configmap: &ConfigMap| {
        (
            configmap.metadata.namespace.clone().unwrap_or_default(),
            configmap.metadata.name.clone().unwrap_or_default(),
        )
    };
    while let Some(event) = stream.next().await {
        match event {
            Event::Init => {
                listing.clear();
                listed.clear();
            }
            Event::InitApply(configmap) => {
                listed.insert(key_of(&configmap), configmap_reference(&configmap));
                if let Some(document) = document_of(configmap) {
                    listing.insert(
                        (document.namespace.clone(), document.name.clone()),
                        document,
                    );
                }
            }
            Event::InitDone => {
                references = std::mem::take(&mut listed);
                let documents: Vec<ConfigMapDocument> =
                    std::mem::take(&mut listing).into_values().collect();
                for event in store.replace_all(Some(kind), &documents) {
                    surface(&event, kind, &references, &metrics, events);
                }
                if let Some(synced) = synced.take() {
                    let _ = synced.send(());
                }
            }
            Event::Apply(configmap) => {
                references.insert(key_of(&configmap), configmap_reference(&configmap));
                if let Some(document) = document_of(configmap) {
                    surface(&store.apply(&document), kind, &references, &metrics, events);
                }
            }
            Event::Delete(configmap) => {
                let key = key_of(&configmap);
                references.remove(&key);
                report(&store.remove(&key.0, &key.1), &metrics);
            }
        }
    }
}

/// The SLO spec kinds slo-guard reads from the cluster: the API version, kind and
/// plural of each CRD, and the kind of document it holds.
const SLO_SPEC_RESOURCES: [(&str, &str, &str, &str, DocumentKind); 4] = [
    (
        "sloth.slok.dev",
        "v1",
        "PrometheusServiceLevel",
        "prometheusservicelevels",
        DocumentKind::Spec(SloSpecKind::PrometheusServiceLevel),
    ),
    (
        "pyrra.dev",
        "v1alpha1",
        "ServiceLevelObjective",
        "servicelevelobjectives",
        DocumentKind::Spec(SloSpecKind::ServiceLevelObjective),
    ),
    (
        "openslo",
        "v1",
        "SLO",
        "slos",
        DocumentKind::Spec(SloSpecKind::Slo),
    ),
    ("openslo", "v1", "SLI", "slis", DocumentKind::OpenSloSli),
];

/// The SLO spec CRDs this cluster serves: those whose group and version the API server
/// lists with the kind. A cluster without Sloth, Pyrra or OpenSLO has none, and
/// slo-guard does without them.
async fn served_slo_spec_resources(client: &Client) -> Vec<(ApiResource, DocumentKind)> {
    let mut served = Vec::new();
    for (group, version, kind, plural, document_kind) in SLO_SPEC_RESOURCES {
        let api_version = format!("{group}/{version}");
        match client.list_api_group_resources(&api_version).await {
            Ok(list)
                if list
                    .resources
                    .iter()
                    .any(|r| r.kind == kind && r.name == plural) =>
            {
                let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
                served.push((
                    ApiResource::from_gvk_with_plural(&gvk, plural),
                    document_kind,
                ));
            }
            Ok(_) | Err(_) => {}
        }
    }
    served
}

/// An SLO spec object as a document, or why it is not one.
fn spec_document_of(object: &DynamicObject) -> Option<SloSpecDocument> {
    let value = serde_json::to_value(object)
        .ok()
        .and_then(|json| serde_yaml::to_value(json).ok())?;
    match SloSpecDocument::recognize(&value, "", "cluster") {
        Ok(document) => document,
        Err(error) => {
            tracing::error!(%error, "SLO spec unreadable");
            None
        }
    }
}

/// Logs what adding an SLO spec did.
pub fn report_slo_spec(event: &CatalogEvent) {
    match event {
        CatalogEvent::Loaded(key) => tracing::info!(spec = %key, "SLO spec loaded"),
        CatalogEvent::Rejected {
            key,
            error,
            kept_previous,
        } => tracing::error!(spec = %key, %error, kept_previous, "SLO spec rejected"),
    }
}

/// Lists the SLO specs of every served kind once (for `reflect`, which judges past
/// changes and needs no watch).
pub async fn list_slo_specs(client: &Client) -> Vec<SloSpecDocument> {
    let mut documents = Vec::new();
    let served = served_slo_spec_resources(client).await;
    log_unserved_slo_specs(&served);
    for (resource, _) in served {
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        match api.list(&Default::default()).await {
            Ok(list) => documents.extend(list.items.iter().filter_map(spec_document_of)),
            Err(error) => {
                tracing::warn!(kind = resource.kind, %error, "cannot list SLO specs");
            }
        }
    }
    documents
}

/// Watches the SLO spec kinds whose CRDs the cluster serves, and keeps the store's
/// catalog in step; policies that name a spec are resolved again when it changes, and
/// keep their last good version when it goes bad or away. Sends on `synced` once every
/// kind served at start has been listed (at once when none is). The kinds not served
/// are looked for again every `recheck`, so a CRD installed later (Sloth after
/// slo-guard) is watched without a restart.
pub async fn watch_slo_specs(
    client: Client,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    synced: tokio::sync::oneshot::Sender<()>,
    recheck: Duration,
) {
    let served = served_slo_spec_resources(&client).await;
    log_unserved_slo_specs(&served);
    let mut watched: Vec<String> = served.iter().map(|(r, _)| r.kind.clone()).collect();
    let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(served.len()));
    let synced = Arc::new(std::sync::Mutex::new(Some(synced)));
    let signal = move || {
        if let Some(sender) = synced
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        {
            let _ = sender.send(());
        }
    };
    if served.is_empty() {
        signal();
    }
    for (resource, kind) in served {
        let remaining = remaining.clone();
        let signal = signal.clone();
        tokio::spawn(watch_slo_spec_kind(
            client.clone(),
            store.clone(),
            metrics.clone(),
            resource,
            kind,
            move || {
                if remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                    signal();
                }
            },
        ));
    }
    while watched.len() < SLO_SPEC_RESOURCES.len() {
        tokio::time::sleep(recheck).await;
        for (resource, kind) in served_slo_spec_resources(&client).await {
            if watched.contains(&resource.kind) {
                continue;
            }
            tracing::info!(
                api_version = resource.api_version,
                kind = resource.kind,
                "SLO spec CRD now served: watching it"
            );
            watched.push(resource.kind.clone());
            tokio::spawn(watch_slo_spec_kind(
                client.clone(),
                store.clone(),
                metrics.clone(),
                resource,
                kind,
                || {},
            ));
        }
    }
}

fn log_unserved_slo_specs(served: &[(ApiResource, DocumentKind)]) {
    for (group, version, kind, _, _) in SLO_SPEC_RESOURCES {
        if !served.iter().any(|(r, _)| r.kind == kind) {
            tracing::info!(
                api_version = format!("{group}/{version}"),
                kind,
                "SLO spec CRD not served: policies cannot name this kind in slo.source until it is"
            );
        }
    }
}

/// Keeps the store's catalog in step with one served SLO spec kind; calls `listed` after
/// its first list.
async fn watch_slo_spec_kind(
    client: Client,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    resource: ApiResource,
    kind: DocumentKind,
    listed: impl FnOnce(),
) {
    let api = Api::<DynamicObject>::all_with(client, &resource);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(resilient(stream, "SLO specs"));
    let mut listing: Vec<SloSpecDocument> = Vec::new();
    let mut listed = Some(listed);
    while let Some(event) = stream.next().await {
        match event {
            Event::Init => listing.clear(),
            Event::InitApply(object) => listing.extend(spec_document_of(&object)),
            Event::InitDone => {
                let (catalog, policies) =
                    store.replace_slo_specs(&[kind], std::mem::take(&mut listing));
                catalog.iter().for_each(report_slo_spec);
                policies.iter().for_each(|event| report(event, &metrics));
                if let Some(listed) = listed.take() {
                    listed();
                }
            }
            Event::Apply(object) => {
                if let Some(document) = spec_document_of(&object) {
                    let (catalog, policies) = store.apply_slo_spec(document);
                    report_slo_spec(&catalog);
                    policies.iter().for_each(|event| report(event, &metrics));
                }
            }
            Event::Delete(object) => {
                if let Some(document) = spec_document_of(&object) {
                    let policies = store.remove_slo_spec(&document.key());
                    policies.iter().for_each(|event| report(event, &metrics));
                }
            }
        }
    }
}

/// How long `serve` waits for the SLO specs' first list before it watches the policies.
pub const SLO_SPEC_SYNC_WAIT: Duration = Duration::from_secs(5);

/// How long `serve` waits for the first list before it reports not ready and keeps trying.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Records denials as Events on the objects judged.
pub struct ClusterEffects {
    events: EventRecorder,
    workloads: WorkloadCache,
}

impl ClusterEffects {
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
        match (target.kind, target.workload_kind) {
            (TargetKind::ConfigMap(_), _) => {
                Some((reference("v1", "ConfigMap", &target.name, None), None))
            }
            (TargetKind::Workload(_), Some(kind)) => Some((workload(kind), None)),
            (TargetKind::HorizontalPodAutoscaler, scaled) => Some((
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

/// One Kubernetes Event to record (events.k8s.io/v1, type Warning).
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub regarding: ObjectReference,
    /// A second object the Event concerns: the workload an HPA scales.
    pub related: Option<ObjectReference>,
    /// `Denied`, `PolicyRejected`, `ReflectionRejected`.
    pub reason: &'static str,
    /// What slo-guard was doing: the change class judged, or `Load`.
    pub action: &'static str,
    pub note: String,
}

impl EventRecord {
    /// Identical Events (same object, reason and note) count on one Event's series.
    fn key(&self) -> String {
        let r = &self.regarding;
        let field = |v: &Option<String>| v.clone().unwrap_or_default();
        format!(
            "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            field(&r.api_version),
            field(&r.kind),
            field(&r.namespace),
            field(&r.name),
            field(&r.uid),
            self.reason,
            self.action,
            self.note
        )
    }
}

/// Events waiting to be sent. Beyond this, new ones are dropped (and counted): a storm of
/// denials must never grow memory or hold an admission answer.
pub const EVENT_QUEUE: usize = 1024;
/// Events taken from the queue at once; identical ones among them are sent as one.
const EVENT_BATCH: usize = 64;
/// Repeats of an Event within this time after its last occurrence update its series
/// instead of creating a new Event (as client-go does).
const EVENT_SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// Events remembered for counting repeats; past this, the oldest is forgotten, so a flood
/// of distinct denials cannot grow memory.
const EVENT_SERIES_MAX: usize = 4096;
/// The longest one Event may hold up the ones behind it.
const EVENT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The API server's limit on an Event's note.
const EVENT_NOTE_MAX_BYTES: usize = 1024;
/// `reportingController` of every Event slo-guard records.
pub const REPORTING_CONTROLLER: &str = "slo-guard.io/slo-guard";

/// Records Events in the background: [`EventRecorder::record`] never waits. One task
/// sends them in order, one API call at a time, so a burst of denials costs the API
/// server at most one call per distinct Event and batch.
#[derive(Clone)]
pub struct EventRecorder {
    queue: tokio::sync::mpsc::Sender<EventRecord>,
    metrics: Arc<Metrics>,
    dropped: Arc<AtomicU64>,
    /// Events queued and not yet sent (or given up on).
    pending: Arc<AtomicU64>,
}

impl EventRecorder {
    /// Starts the sending task. `instance` is the `reportingInstance` (the pod name).
    pub fn start(client: Client, instance: String, metrics: Arc<Metrics>) -> Self {
        let (queue, receiver) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        let pending = Arc::new(AtomicU64::new(0));
        tokio::spawn(send_events(
            client,
            instance,
            receiver,
            metrics.clone(),
            pending.clone(),
        ));
        Self {
            queue,
            metrics,
            dropped: Arc::default(),
            pending,
        }
    }

    /// Waits until every queued Event is sent, at most `timeout`: on shutdown, so the
    /// denials of the last requests are not lost.
    pub async fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.pending.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.pending.load(Ordering::Acquire);
        if left > 0 {
            tracing::warn!(left, "stopping with Events not yet recorded");
        }
    }

    pub fn record(&self, record: EventRecord) {
        let reason = record.reason;
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.queue.try_send(record).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.metrics.event(reason, "dropped");
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped == 1 || dropped % 1000 == 0 {
                tracing::warn!(
                    reason,
                    dropped,
                    "Event not recorded: {EVENT_QUEUE} are already waiting for the API server"
                );
            }
        }
    }
}

/// An Event sent, for counting repeats on it.
struct Sent {
    namespace: String,
    name: String,
    count: i32,
    last: Instant,
}

async fn send_events(
    client: Client,
    instance: String,
    mut receiver: tokio::sync::mpsc::Receiver<EventRecord>,
    metrics: Arc<Metrics>,
    pending: Arc<AtomicU64>,
) {
    let mut sent: HashMap<String, Sent> = HashMap::new();
    let mut batch = Vec::with_capacity(EVENT_BATCH);
    while receiver.recv_many(&mut batch, EVENT_BATCH).await > 0 {
        let mut distinct: Vec<(EventRecord, i32)> = Vec::new();
        for record in batch.drain(..) {
            match distinct.iter_mut().find(|(seen, _)| *seen == record) {
                Some((_, repeats)) => *repeats += 1,
                None => distinct.push((record, 1)),
            }
        }
        let now = Instant::now();
        sent.retain(|_, s| now.duration_since(s.last) < EVENT_SERIES_WINDOW);
        for (record, repeats) in distinct {
            let result = tokio::time::timeout(
                EVENT_CALL_TIMEOUT,
                send_event(&client, &instance, &mut sent, &record, repeats),
            )
            .await
            .unwrap_or_else(|_| {
                Err(kube::Error::Service(
                    format!("no answer within {EVENT_CALL_TIMEOUT:?}").into(),
                ))
            });
            pending.fetch_sub(repeats as u64, Ordering::AcqRel);
            match result {
                Ok(outcome) => metrics.event(record.reason, outcome),
                Err(error) => {
                    metrics.event(record.reason, "failed");
                    tracing::warn!(
                        reason = record.reason,
                        object = %format!(
                            "{}/{}",
                            record.regarding.namespace.as_deref().unwrap_or_default(),
                            record.regarding.name.as_deref().unwrap_or_default()
                        ),
                        %error,
                        "cannot record an Event"
                    );
                }
            }
        }
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
fn truncate_note(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

async fn send_event(
    client: &Client,
    instance: &str,
    sent: &mut HashMap<String, Sent>,
    record: &EventRecord,
    repeats: i32,
) -> Result<&'static str, kube::Error> {
    let key = record.key();
    let now = k8s_openapi::jiff::Timestamp::now();
    if let Some(previous) = sent.get_mut(&key) {
        let count = previous.count + repeats;
        let patch = serde_json::json!({
            "series": {"count": count, "lastObservedTime": MicroTime(now)}
        });
        let events: Api<KubeEvent> = Api::namespaced(client.clone(), &previous.namespace);
        match events
            .patch(
                &previous.name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                previous.count = count;
                previous.last = Instant::now();
                return Ok("updated");
            }
            // Gone (Events expire) or unreadable: record it afresh.
            Err(error) => {
                tracing::debug!(%error, "cannot update an Event's series; creating a new one");
                sent.remove(&key);
            }
        }
    }
    let namespace = record
        .regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let name = format!(
        "{}.{:x}",
        record.regarding.name.as_deref().unwrap_or("slo-guard"),
        now.as_nanosecond()
    );
    let event = KubeEvent {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some("Warning".into()),
        reason: Some(record.reason.into()),
        action: Some(record.action.into()),
        note: Some(truncate_note(&record.note, EVENT_NOTE_MAX_BYTES)),
        regarding: Some(record.regarding.clone()),
        related: record.related.clone(),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(instance.chars().take(128).collect()),
        // The API server wants a series only for a repeat (count of at least 2).
        series: (repeats > 1).then_some(EventSeries {
            count: repeats,
            last_observed_time: MicroTime(now),
        }),
        ..KubeEvent::default()
    };
    let events: Api<KubeEvent> = Api::namespaced(client.clone(), &namespace);
    events
        .create(&kube::api::PostParams::default(), &event)
        .await?;
    if sent.len() >= EVENT_SERIES_MAX
        && let Some(oldest) = sent
            .iter()
            .min_by_key(|(_, s)| s.last)
            .map(|(key, _)| key.clone())
    {
        sent.remove(&oldest);
    }
    sent.insert(
        key,
        Sent {
            namespace,
            name,
            count: repeats,
            last: Instant::now(),
        },
    );
    Ok("created")
}

/// Who records Events: the pod name in a cluster (`POD_NAME`, else the hostname, which
/// Kubernetes sets to the pod name), else `slo-guard`.
pub fn reporting_instance() -> String {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "slo-guard".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_to_the_api_limit_on_a_character_boundary() {
        let long = "ü".repeat(700);
        let cut = truncate_note(&long, EVENT_NOTE_MAX_BYTES);
        assert!(cut.len() <= EVENT_NOTE_MAX_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_note("short", EVENT_NOTE_MAX_BYTES), "short");
    }

    #[test]
    fn identical_events_share_a_key_and_different_notes_do_not() {
        let record = |note: &str| EventRecord {
            related: None,
            regarding: ObjectReference {
                kind: Some("Deployment".into()),
                namespace: Some("payments".into()),
                name: Some("checkout".into()),
                ..ObjectReference::default()
            },
            reason: "Denied",
            action: "Scale",
            note: note.into(),
        };
        assert_eq!(record("a").key(), record("a").key());
        assert_ne!(record("a").key(), record("b").key());
    }
}
