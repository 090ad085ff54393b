//! The workload cache: Deployments and StatefulSets from watches, kept small, so a
//! request is judged with its workload's labels and decision context without an API call.

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde::Deserialize;

use super::watch::{WatchSink, follow};
use crate::admission::{WorkloadKey, WorkloadKind, WorkloadLookup, WorkloadSnapshot};

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
    /// The uids of its owners: a delete of any of them is judged for this workload,
    /// which the garbage collector deletes with it. Empty (no allocation) for most.
    owner_uids: Box<[Box<str>]>,
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
    fn of(
        metadata: ObjectMeta,
        replicas: Option<i32>,
        pod_labels: Option<BTreeMap<String, String>>,
    ) -> Self {
        CachedWorkload {
            labels: pairs(metadata.labels),
            pod_labels: pairs(pod_labels),
            annotations: pairs(metadata.annotations),
            replicas: replicas.and_then(|r| u32::try_from(r).ok()),
            uid: metadata.uid.map(String::into_boxed_str),
            owner_uids: metadata
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .map(|owner| owner.uid.into_boxed_str())
                .collect(),
        }
    }

    fn snapshot(&self) -> WorkloadSnapshot {
        WorkloadSnapshot {
            labels: map_of(&self.labels),
            pod_labels: map_of(&self.pod_labels),
            annotations: map_of(&self.annotations),
            replicas: self.replicas,
            owner_uids: self.owner_uids.iter().map(|uid| uid.to_string()).collect(),
        }
    }
}

/// A Deployment or StatefulSet as the watch reads it: only what the cache keeps is
/// decoded. serde skips the rest of each object (the pod spec, the status, the managed
/// fields) without allocating it, so a listed page costs little more than its text; a
/// typed page of 500 Deployments held the whole of every object at once.
#[derive(Deserialize, Clone, Debug)]
#[serde(bound = "")]
struct Watched<K> {
    #[serde(deserialize_with = "kept_metadata")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<WatchedSpec>,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

#[derive(Deserialize, Default, Clone, Debug)]
struct WatchedSpec {
    #[serde(default)]
    replicas: Option<i32>,
    #[serde(default)]
    template: Option<WatchedTemplate>,
}

#[derive(Deserialize, Default, Clone, Debug)]
struct WatchedTemplate {
    #[serde(default)]
    metadata: Option<WatchedLabels>,
}

#[derive(Deserialize, Default, Clone, Debug)]
struct WatchedLabels {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// The metadata the cache and the watch itself read: identity, the resource version the
/// watch resumes from, labels and annotations (less the last-applied copy, skipped).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeptMetadata {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "annotations_kept")]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    owner_references: Option<Vec<OwnerUid>>,
}

/// An `ownerReferences` entry as the cache keeps it: the uid alone, which is what the
/// garbage collector goes by.
#[derive(Deserialize)]
struct OwnerUid {
    #[serde(default)]
    uid: String,
}

fn kept_metadata<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<ObjectMeta, D::Error> {
    let kept = KeptMetadata::deserialize(deserializer)?;
    Ok(ObjectMeta {
        name: kept.name,
        namespace: kept.namespace,
        uid: kept.uid,
        resource_version: kept.resource_version,
        labels: kept.labels,
        annotations: kept.annotations,
        owner_references: kept.owner_references.map(|owners| {
            owners
                .into_iter()
                .map(|owner| OwnerReference {
                    uid: owner.uid,
                    ..OwnerReference::default()
                })
                .collect()
        }),
        ..ObjectMeta::default()
    })
}

/// Annotations without [`LAST_APPLIED`], whose value (a whole manifest) is skipped, not
/// read into a string.
fn annotations_kept<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct Kept;
    impl<'de> serde::de::Visitor<'de> for Kept {
        type Value = Option<BTreeMap<String, String>>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("a map of annotations")
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_map(self)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut entries: A,
        ) -> Result<Self::Value, A::Error> {
            let mut kept = BTreeMap::new();
            while let Some(key) = entries.next_key::<String>()? {
                if key == LAST_APPLIED {
                    entries.next_value::<serde::de::IgnoredAny>()?;
                } else {
                    kept.insert(key, entries.next_value()?);
                }
            }
            Ok(Some(kept))
        }
    }
    deserializer.deserialize_option(Kept)
}

/// The watch's URLs and kind are `K`'s: a `Watched<Deployment>` lists and watches
/// `apps/v1` deployments.
impl<K: k8s_openapi::Resource> k8s_openapi::Resource for Watched<K> {
    const API_VERSION: &'static str = K::API_VERSION;
    const GROUP: &'static str = K::GROUP;
    const KIND: &'static str = K::KIND;
    const VERSION: &'static str = K::VERSION;
    const URL_PATH_SEGMENT: &'static str = K::URL_PATH_SEGMENT;
    type Scope = K::Scope;
}

impl<K: k8s_openapi::Resource> k8s_openapi::Metadata for Watched<K> {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl<K> Watched<K> {
    /// The object's namespace, name and cached form.
    fn into_cached(self) -> (Box<str>, Box<str>, CachedWorkload) {
        let (namespace, name) = identity(&self.metadata);
        let spec = self.spec.unwrap_or_default();
        let pod_labels = spec
            .template
            .and_then(|t| t.metadata)
            .and_then(|m| m.labels);
        (
            namespace,
            name,
            CachedWorkload::of(self.metadata, spec.replicas, pod_labels),
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

impl WorkloadCache {
    /// Snapshots of the workloads in `namespace` that `keep` selects, filtered before
    /// they are copied.
    fn snapshots_in(
        &self,
        namespace: &str,
        keep: impl Fn(&CachedWorkload) -> bool,
    ) -> Vec<(WorkloadKind, String, WorkloadSnapshot)> {
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
                        .filter(|(_, cached)| keep(cached))
                        .map(|(name, cached)| (kind, name.to_string(), cached.snapshot()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect()
    }
}

impl WorkloadLookup for WorkloadCache {
    fn workload(&self, key: WorkloadKey<'_>) -> Option<WorkloadSnapshot> {
        self.cached(key.kind, key.namespace, key.name)
            .map(|w| w.snapshot())
    }

    fn workloads_in(&self, namespace: &str) -> Vec<(WorkloadKind, String, WorkloadSnapshot)> {
        self.snapshots_in(namespace, |_| true)
    }

    fn owned_by(
        &self,
        namespace: &str,
        owner_uid: &str,
    ) -> Vec<(WorkloadKind, String, WorkloadSnapshot)> {
        self.snapshots_in(namespace, |cached| {
            cached.owner_uids.iter().any(|uid| &**uid == owner_uid)
        })
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

impl<K> WatchSink<Watched<K>> for ShelfSink {
    type Listing = Shelf;

    fn listed(&mut self, listing: &mut Shelf, object: Watched<K>) {
        let (namespace, name, cached) = object.into_cached();
        listing
            .entry(namespace)
            .or_default()
            .insert(name, Arc::new(cached));
    }

    fn relisted(&mut self, listing: Shelf) {
        *write(&self.0) = listing;
    }

    fn applied(&mut self, object: Watched<K>) {
        let (namespace, name, cached) = object.into_cached();
        write(&self.0)
            .entry(namespace)
            .or_default()
            .insert(name, Arc::new(cached));
    }

    fn deleted(&mut self, object: Watched<K>) {
        let (namespace, name) = identity(&object.metadata);
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
async fn keep_in_step<K>(
    api: Api<Watched<K>>,
    shelf: Arc<RwLock<Shelf>>,
    what: &'static str,
    listed: tokio::sync::oneshot::Sender<()>,
    page_size: u32,
) where
    K: k8s_openapi::Resource + Clone + std::fmt::Debug + Send + 'static,
{
    let config = watcher::Config::default().page_size(page_size);
    let stream = watcher::watcher(api, config).default_backoff();
    follow(stream, what, ShelfSink(shelf), move || {
        let _ = listed.send(());
    })
    .await;
}

/// Starts the workload watches, listing `page_size` objects a page (each page's text is
/// held whole while it is read into the cache). The returned future resolves once
/// both caches have their initial list.
pub fn start_workload_cache(
    client: &Client,
    page_size: u32,
) -> (WorkloadCache, impl Future<Output = ()> + use<>) {
    let cache = WorkloadCache::default();
    let (deployments_listed, deployments_ready) = tokio::sync::oneshot::channel();
    let (statefulsets_listed, statefulsets_ready) = tokio::sync::oneshot::channel();
    tokio::spawn(keep_in_step(
        Api::<Watched<Deployment>>::all(client.clone()),
        cache.deployments.clone(),
        "deployments",
        deployments_listed,
        page_size,
    ));
    tokio::spawn(keep_in_step(
        Api::<Watched<StatefulSet>>::all(client.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A Deployment as the apiserver sent it in a captured review (managed fields, status
    /// and all), with a last-applied copy added.
    fn captured_deployment() -> serde_json::Value {
        let review: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/captured/deployment-image-change.json"
        ))
        .expect("fixture");
        let mut object = review["request"]["object"].clone();
        object["metadata"]["annotations"][LAST_APPLIED] =
            serde_json::Value::String("{\"apiVersion\":\"apps/v1\"}".to_string());
        object
    }

    #[test]
    fn a_watched_workload_keeps_what_the_cache_reads() {
        let object = captured_deployment();
        let typed: Deployment = serde_json::from_value(object.clone()).expect("typed");
        let watched: Watched<Deployment> = serde_json::from_value(object).expect("watched");
        assert_eq!(
            watched.metadata.resource_version,
            typed.metadata.resource_version
        );
        assert!(watched.metadata.resource_version.is_some());
        let (namespace, name, cached) = watched.into_cached();
        assert_eq!(
            (namespace.as_ref(), name.as_ref()),
            (
                typed.metadata.namespace.as_deref().unwrap_or_default(),
                typed.metadata.name.as_deref().unwrap_or_default()
            )
        );
        let spec = typed.spec.expect("spec");
        let snapshot = cached.snapshot();
        assert_eq!(snapshot.labels, typed.metadata.labels.unwrap_or_default());
        assert_eq!(
            Some(snapshot.pod_labels),
            spec.template.metadata.and_then(|m| m.labels)
        );
        assert_eq!(snapshot.replicas, spec.replicas.map(|r| r as u32));
        assert!(!snapshot.annotations.is_empty());
        let mut annotations = typed.metadata.annotations.unwrap_or_default();
        annotations.remove(LAST_APPLIED);
        assert_eq!(snapshot.annotations, annotations);
        assert_eq!(cached.uid.as_deref(), typed.metadata.uid.as_deref());
    }

    #[test]
    fn null_or_missing_parts_read_as_empty() {
        let watched: Watched<StatefulSet> = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "data", "annotations": null},
        }))
        .expect("watched");
        let (_, name, cached) = watched.into_cached();
        assert_eq!(name.as_ref(), "db");
        let snapshot = cached.snapshot();
        assert!(snapshot.annotations.is_empty() && snapshot.labels.is_empty());
        assert_eq!(snapshot.replicas, None);
    }

    #[test]
    fn the_cache_keeps_each_workloads_owner_uids_and_finds_what_an_object_owns() {
        let watched = |namespace: &str, name: &str, owners: serde_json::Value| {
            serde_json::from_value::<Watched<Deployment>>(serde_json::json!({
                "metadata": {"name": name, "namespace": namespace, "ownerReferences": owners},
            }))
            .expect("watched")
        };
        let owner = |uid: &str| serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "handle", "uid": uid});
        let cache = WorkloadCache::default();
        let mut sink = ShelfSink(cache.deployments.clone());
        for object in [
            watched(
                "payments",
                "checkout",
                serde_json::json!([owner("a"), owner("b")]),
            ),
            watched("payments", "worker", serde_json::Value::Null),
            watched("other", "checkout", serde_json::json!([owner("a")])),
        ] {
            WatchSink::<Watched<Deployment>>::applied(&mut sink, object);
        }
        let owned = |namespace: &str, uid: &str| -> Vec<(WorkloadKind, String, Vec<String>)> {
            cache
                .owned_by(namespace, uid)
                .into_iter()
                .map(|(kind, name, snapshot)| (kind, name, snapshot.owner_uids))
                .collect()
        };
        assert_eq!(
            owned("payments", "b"),
            vec![(
                WorkloadKind::Deployment,
                "checkout".to_string(),
                vec!["a".to_string(), "b".to_string()]
            )]
        );
        assert_eq!(owned("other", "a").len(), 1);
        assert!(owned("payments", "c").is_empty());
        assert!(owned("nowhere", "a").is_empty());
    }
}
