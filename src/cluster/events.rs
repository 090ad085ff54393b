//! Events: what slo-guard records on the objects it judges (denials) and the ConfigMaps
//! it rejects, sent in the background so that no admission answer waits on them.
//!
//! kube-runtime's `events::Recorder` (kube 5.0) is not used, for what admission needs
//! and it does not give:
//! - its `publish` makes the API call and must be awaited, so each denial would hold
//!   its answer or need a task of its own; here [`EventRecorder::record`] only queues,
//!   into a bounded queue that drops (and counts) what does not fit;
//! - its series key leaves the note out, so two different denials of one workload
//!   would count as repeats of the first; here the note is part of `EventKey`;
//! - its cache of sent Events has no size limit within its six minutes, so a flood of
//!   distinct denials would grow memory; here it holds at most `EVENT_SERIES_MAX`;
//! - it sends each repeat as its own call, and fails when the Event to update has
//!   expired; here identical Events in a batch go out as one call, and an expired one
//!   is created afresh;
//! - it sends notes as given; the API server refuses one over 1 KiB, so here they are
//!   cut to fit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as KubeEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::{Api, Client};

use crate::metrics::Metrics;

/// One Kubernetes Event to record (events.k8s.io/v1, type Warning).
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// The object the Event is about.
    pub regarding: ObjectReference,
    /// A second object the Event concerns: the workload an HPA scales.
    pub related: Option<ObjectReference>,
    /// `Denied`, `PolicyRejected`, `ReflectionRejected`.
    pub reason: &'static str,
    /// What slo-guard was doing: the change class judged, or `Load`.
    pub action: &'static str,
    /// What happened, for people (`kubectl describe`); cut to the API's 1 KiB.
    pub note: String,
}

/// What makes two Events the same one (same object, reason, action and note): repeats
/// count on its series instead of making new Events. The related object is left out, as
/// it follows from the regarding one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EventKey {
    api_version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    reason: &'static str,
    action: &'static str,
    note: String,
}

impl EventRecord {
    /// The key identical Events share.
    fn key(&self) -> EventKey {
        let regarding = &self.regarding;
        EventKey {
            api_version: regarding.api_version.clone(),
            kind: regarding.kind.clone(),
            namespace: regarding.namespace.clone(),
            name: regarding.name.clone(),
            uid: regarding.uid.clone(),
            reason: self.reason,
            action: self.action,
            note: self.note.clone(),
        }
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

    /// Queues `record` without waiting; drops it (counted, and logged now and then)
    /// when [`EVENT_QUEUE`] Events are already waiting.
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

/// The sending task: takes batches off the queue, sends each distinct Event once with
/// its repeats, and counts the outcome.
async fn send_events(
    client: Client,
    instance: String,
    mut receiver: tokio::sync::mpsc::Receiver<EventRecord>,
    metrics: Arc<Metrics>,
    pending: Arc<AtomicU64>,
) {
    let mut sent: HashMap<EventKey, Sent> = HashMap::new();
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

/// Sends one Event with `repeats` occurrences: as a series update of the same Event sent
/// within `EVENT_SERIES_WINDOW`, else as a new Event. Says which it was.
async fn send_event(
    client: &Client,
    instance: &str,
    sent: &mut HashMap<EventKey, Sent>,
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
