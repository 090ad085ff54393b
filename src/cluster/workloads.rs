//! The workload cache: Deployments and StatefulSets from watches, kept small, so a
//! request is judged with its workload's labels and decision context without an API call.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client};

use super::watch::{WatchSink, follow};
use crate::admission::{WorkloadKind, WorkloadLookup, WorkloadSnapshot};

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
    /// The object's metadata, replicas and pod template: all the cache keeps of it.
    fn parts(self) -> (ObjectMeta, Option<i32>, PodTemplateSpec);

    /// The object's namespace, name and cached form.
    fn into_cached(self) -> (Box<str>, Box<str>, CachedWorkload) {
        let (metadata, replicas, template) = self.parts();
        let (namespace, name) = identity(&metadata);
        (
            namespace,
            name,
            CachedWorkload::of(metadata, replicas, template),
        )
    }
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
    fn parts(self) -> (ObjectMeta, Option<i32>, PodTemplateSpec) {
        let spec = self.spec.unwrap_or_default();
        (self.metadata, spec.replicas, spec.template)
    }
}

impl Cacheable for StatefulSet {
    fn parts(self) -> (ObjectMeta, Option<i32>, PodTemplateSpec) {
        let spec = self.spec.unwrap_or_default();
        (self.metadata, spec.replicas, spec.template)
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

/// Keeps a shelf in step with a watch of `K`: a relist builds a new shelf and swaps it
/// in whole, so lookups never see half a list.
struct ShelfSink(Arc<RwLock<Shelf>>);

impl<K: Cacheable> WatchSink<K> for ShelfSink {
    type Listing = Shelf;

    fn listed(&mut self, listing: &mut Shelf, object: K) {
        let (namespace, name, cached) = object.into_cached();
        listing
            .entry(namespace)
            .or_default()
            .insert(name, Arc::new(cached));
    }

    fn relisted(&mut self, listing: Shelf) {
        *write(&self.0) = listing;
    }

    fn applied(&mut self, object: K) {
        let (namespace, name, cached) = object.into_cached();
        write(&self.0)
            .entry(namespace)
            .or_default()
            .insert(name, Arc::new(cached));
    }

    fn deleted(&mut self, object: K) {
        let (namespace, name) = identity(object.meta());
        let mut shelf = write(&self.0);
        if let Some(workloads) = shelf.get_mut(&namespace) {
            workloads.remove(&name);
            if workloads.is_empty() {
                shelf.remove(&namespace);
            }
        }
    }
}

/// Keeps `shelf` in step with a watch of `K`. Sends on `listed` after the first list.
async fn keep_in_step<K: Cacheable>(
    api: Api<K>,
    shelf: Arc<RwLock<Shelf>>,
    what: &'static str,
    listed: tokio::sync::oneshot::Sender<()>,
    page_size: u32,
) {
    let config = watcher::Config::default().page_size(page_size);
    let stream = watcher::watcher(api, config).default_backoff();
    follow(stream, what, ShelfSink(shelf), move || {
        let _ = listed.send(());
    })
    .await;
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
