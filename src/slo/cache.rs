//! Answers cached for a refresh interval, with single-flight: concurrent callers of the
//! same query share one in-flight call, so a storm of admissions for one workload costs
//! Prometheus one query per distinct PromQL per refresh interval.
//!
//! An answer asked for in the last quarter of its interval is renewed in the background
//! while it is still served, so that a workload under steady admission never waits on
//! Prometheus for a routine refresh. A renewal that fails changes nothing: the answer
//! still expires at the end of its interval, and the next caller asks Prometheus itself.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

use super::answer::{Answer, QueryError};

type Flight = Shared<BoxFuture<'static, Result<Answer, QueryError>>>;

enum Slot {
    Ready {
        answer: Answer,
        fetched: Instant,
        /// A background renewal is in flight.
        renewing: bool,
    },
    Pending {
        generation: u64,
        flight: Flight,
    },
}

/// Counters for `/metrics`, tests and the storm benchmark.
#[derive(Debug, Default)]
struct Counters {
    fetches: AtomicU64,
    renewals: AtomicU64,
    hits: AtomicU64,
    joined: AtomicU64,
    /// Failed calls by [`QueryError::reason`]. Rare, so a lock is cheap enough.
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counters {
    fn count_error(&self, error: &QueryError) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(error.reason()).or_default() += 1;
    }
}

/// A snapshot of the cache counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Calls that went to Prometheus, renewals included.
    pub fetches: u64,
    /// Of those, renewals of an answer that was still being served.
    pub renewals: u64,
    /// Calls answered from a fresh cached answer.
    pub hits: u64,
    /// Calls that joined a call already in flight.
    pub joined: u64,
}

/// Past this many entries, expired answers are dropped on the next fetch, so templated
/// queries for many workloads cannot grow the map without bound.
const PRUNE_ABOVE: usize = 4096;

pub struct QueryCache {
    refresh: Duration,
    inner: Arc<Inner>,
}

struct Inner {
    slots: Mutex<HashMap<String, Slot>>,
    generation: AtomicU64,
    counters: Counters,
}

impl Inner {
    // A panic while holding the lock leaves the map consistent (every write is a single
    // insert or remove), so a poisoned lock is safe to keep using.
    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl QueryCache {
    pub fn new(refresh: Duration) -> Self {
        Self {
            refresh,
            inner: Arc::new(Inner {
                slots: Mutex::new(HashMap::new()),
                generation: AtomicU64::new(0),
                counters: Counters::default(),
            }),
        }
    }

    pub fn refresh_interval(&self) -> Duration {
        self.refresh
    }

    /// Past this age a served answer is renewed in the background.
    fn renew_after(&self) -> Duration {
        self.refresh.mul_f64(0.75)
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        CacheStats {
            fetches: c.fetches.load(Ordering::Relaxed),
            renewals: c.renewals.load(Ordering::Relaxed),
            hits: c.hits.load(Ordering::Relaxed),
            joined: c.joined.load(Ordering::Relaxed),
        }
    }

    /// Exports the counters on every scrape of slo-guard's `/metrics`.
    pub fn collector(&self) -> CacheCollector {
        CacheCollector {
            inner: self.inner.clone(),
        }
    }

    /// Forgets every cached answer (calls in flight still finish).
    pub fn clear(&self) {
        self.inner
            .slots()
            .retain(|_, slot| matches!(slot, Slot::Pending { .. }));
    }

    /// The answers to all of `keys`, under one lock, when every one is cached, younger
    /// than the refresh interval and not due for renewal; `None` (and nothing counted)
    /// when any is not, and the caller asks for each with [`Self::get`]. The common case,
    /// an admission whose answers are all cached, thus costs one lock and no task or timer.
    pub fn fresh_all<'a>(&self, keys: impl Iterator<Item = &'a str>) -> Option<Vec<Answer>> {
        let slots = self.inner.slots();
        let answers = keys
            .map(|key| match slots.get(key) {
                Some(Slot::Ready {
                    answer,
                    fetched,
                    renewing,
                }) if fetched.elapsed() < self.refresh
                    && (*renewing || fetched.elapsed() < self.renew_after()) =>
                {
                    Some(answer.clone())
                }
                _ => None,
            })
            .collect::<Option<Vec<Answer>>>()?;
        self.inner
            .counters
            .hits
            .fetch_add(answers.len() as u64, Ordering::Relaxed);
        Some(answers)
    }

    /// The answer to `key`: cached if younger than the refresh interval, else from the
    /// call in flight, else from a new call made by `fetch`. The call runs in its own
    /// task, so a caller that gives up (its timeout) neither cancels it for the others
    /// nor loses the answer for the next caller. Failures are not cached: the next caller
    /// tries again.
    pub async fn get<F, Fut>(&self, key: &str, fetch: F) -> Result<Answer, QueryError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Answer, QueryError>> + Send + 'static,
    {
        let flight = {
            let mut slots = self.inner.slots();
            match slots.get_mut(key) {
                Some(Slot::Ready {
                    answer,
                    fetched,
                    renewing,
                }) if fetched.elapsed() < self.refresh => {
                    self.inner.counters.hits.fetch_add(1, Ordering::Relaxed);
                    if !*renewing && fetched.elapsed() >= self.renew_after() {
                        *renewing = true;
                        self.renew(key, fetch());
                    }
                    return Ok(answer.clone());
                }
                Some(Slot::Pending { flight, .. }) => {
                    self.inner.counters.joined.fetch_add(1, Ordering::Relaxed);
                    flight.clone()
                }
                _ => {
                    self.inner.counters.fetches.fetch_add(1, Ordering::Relaxed);
                    if slots.len() > PRUNE_ABOVE {
                        let refresh = self.refresh;
                        slots.retain(|_, slot| match slot {
                            Slot::Ready { fetched, .. } => fetched.elapsed() < refresh,
                            Slot::Pending { .. } => true,
                        });
                    }
                    let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
                    let inner = self.inner.clone();
                    let owned_key = key.to_string();
                    let call = fetch();
                    // The task takes the lock only after this block releases it, so it
                    // always finds its own Pending slot (unless `clear` raced it).
                    let task = tokio::spawn(async move {
                        let result = call.await;
                        if let Err(error) = &result {
                            inner.counters.count_error(error);
                        }
                        let mut slots = inner.slots();
                        let ours = matches!(
                            slots.get(&owned_key),
                            Some(Slot::Pending { generation: g, .. }) if *g == generation
                        );
                        if ours {
                            match &result {
                                Ok(answer) => {
                                    slots.insert(
                                        owned_key,
                                        Slot::Ready {
                                            answer: answer.clone(),
                                            fetched: Instant::now(),
                                            renewing: false,
                                        },
                                    );
                                }
                                Err(_) => {
                                    slots.remove(&owned_key);
                                }
                            }
                        }
                        result
                    });
                    let flight: Flight = async move {
                        task.await.unwrap_or_else(|error| {
                            Err(QueryError::Internal(format!("query task failed: {error}")))
                        })
                    }
                    .boxed()
                    .shared();
                    slots.insert(
                        key.to_string(),
                        Slot::Pending {
                            generation,
                            flight: flight.clone(),
                        },
                    );
                    flight
                }
            }
        };
        flight.await
    }

    /// Runs `call` in its own task and, when it succeeds, replaces the answer it renews.
    /// Nothing is inserted when the answer was forgotten or has expired meanwhile (then
    /// a caller's own call is, or will be, in flight).
    fn renew<Fut>(&self, key: &str, call: Fut)
    where
        Fut: Future<Output = Result<Answer, QueryError>> + Send + 'static,
    {
        self.inner.counters.fetches.fetch_add(1, Ordering::Relaxed);
        self.inner.counters.renewals.fetch_add(1, Ordering::Relaxed);
        let inner = self.inner.clone();
        let owned_key = key.to_string();
        tokio::spawn(async move {
            let result = call.await;
            if let Err(error) = &result {
                inner.counters.count_error(error);
            }
            let mut slots = inner.slots();
            if let Some(Slot::Ready {
                answer,
                fetched,
                renewing,
            }) = slots.get_mut(&owned_key)
            {
                *renewing = false;
                if let Ok(renewed) = result {
                    *answer = renewed;
                    *fetched = Instant::now();
                }
            }
        });
    }
}

/// The query cache's counters as metrics, read on each scrape:
/// `prometheus_lookups_total{result}` (hit: a fresh cached answer; joined: a call
/// already in flight; fetched: a new call to Prometheus), `prometheus_renewals_total`
/// (background renewals of a served answer) and `prometheus_query_errors_total{reason}`.
#[derive(Debug)]
pub struct CacheCollector {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryCache").finish_non_exhaustive()
    }
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.inner.counters;
        let fetches = c.fetches.load(Ordering::Relaxed);
        let renewals = c.renewals.load(Ordering::Relaxed);
        let lookups = [
            ("hit", c.hits.load(Ordering::Relaxed)),
            ("joined", c.joined.load(Ordering::Relaxed)),
            ("fetched", fetches.saturating_sub(renewals)),
        ];
        let mut family = encoder.encode_descriptor(
            "prometheus_lookups",
            "SLO query lookups by result: hit (a fresh cached answer), joined (a call in flight), fetched (a new call to Prometheus)",
            None,
            MetricType::Counter,
        )?;
        for (result, count) in lookups {
            ConstCounter::new(count).encode(family.encode_family(&[("result", result)])?)?;
        }
        ConstCounter::new(renewals).encode(encoder.encode_descriptor(
            "prometheus_renewals",
            "Background renewals of a cached answer that was still served",
            None,
            MetricType::Counter,
        )?)?;
        let errors = c.errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut family = encoder.encode_descriptor(
            "prometheus_query_errors",
            "Failed calls to Prometheus, by reason (refused, connect, timeout, prometheus_error, http_status, bad_response, partial_response, bad_query, too_large, transport, credentials, internal)",
            None,
            MetricType::Counter,
        )?;
        for (reason, count) in errors {
            ConstCounter::new(count).encode(family.encode_family(&[("reason", reason)])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn answer(value: f64) -> Answer {
        Answer { value: Some(value) }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_call_and_later_ones_hit_the_cache() {
        let cache = Arc::new(QueryCache::new(Duration::from_secs(60)));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let cache = cache.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .get("q", move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(answer(1.0))
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), answer(1.0));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let stats = cache.stats();
        assert_eq!(stats.fetches, 1);
        assert_eq!(stats.fetches + stats.hits + stats.joined, 200);
        let again = cache.get("q", || async { Ok(answer(2.0)) }).await.unwrap();
        assert_eq!(again, answer(1.0), "fresh answers come from the cache");
    }

    #[tokio::test(start_paused = true)]
    async fn answers_expire_after_the_refresh_interval_and_failures_are_not_kept() {
        let cache = QueryCache::new(Duration::from_millis(30));
        cache.get("q", || async { Ok(answer(1.0)) }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(
            cache.get("q", || async { Ok(answer(2.0)) }).await.unwrap(),
            answer(2.0)
        );
        let failed = cache
            .get("e", || async { Err(QueryError::Internal("boom".into())) })
            .await;
        assert!(failed.is_err());
        assert_eq!(
            cache.get("e", || async { Ok(answer(3.0)) }).await.unwrap(),
            answer(3.0)
        );
    }

    // Paused time: the cache reads tokio's clock, so these run the same on a busy machine.
    #[tokio::test(start_paused = true)]
    async fn an_answer_due_for_renewal_is_served_while_it_is_renewed() {
        let cache = QueryCache::new(Duration::from_millis(400));
        cache.get("q", || async { Ok(answer(1.0)) }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(320)).await;
        assert_eq!(cache.fresh_all(["q"].into_iter()), None, "due for renewal");
        let slow_renewal = || async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(answer(2.0))
        };
        let served = tokio::time::timeout(Duration::from_millis(10), cache.get("q", slow_renewal))
            .await
            .expect("the caller does not wait for the renewal");
        assert_eq!(served.unwrap(), answer(1.0));
        // One renewal at a time.
        assert_eq!(
            cache.get("q", || async { Ok(answer(3.0)) }).await.unwrap(),
            answer(1.0)
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(cache.fresh_all(["q"].into_iter()), Some(vec![answer(2.0)]));
        let stats = cache.stats();
        assert_eq!((stats.fetches, stats.renewals), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_renewal_leaves_the_answer_to_expire_on_time() {
        let cache = QueryCache::new(Duration::from_millis(200));
        cache.get("q", || async { Ok(answer(1.0)) }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(160)).await;
        let failing = || async { Err(QueryError::Internal("down".into())) };
        assert_eq!(cache.get("q", failing).await.unwrap(), answer(1.0));
        tokio::time::sleep(Duration::from_millis(60)).await;
        let after_expiry = cache.get("q", failing).await;
        assert!(
            after_expiry.is_err(),
            "expired: the caller asks Prometheus itself"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_all_answers_only_when_every_key_is_fresh() {
        let cache = QueryCache::new(Duration::from_millis(40));
        cache.get("a", || async { Ok(answer(1.0)) }).await.unwrap();
        assert_eq!(cache.fresh_all(["a", "b"].into_iter()), None);
        assert_eq!(cache.stats().hits, 0, "a partial lookup counts nothing");
        cache.get("b", || async { Ok(answer(2.0)) }).await.unwrap();
        assert_eq!(
            cache.fresh_all(["b", "a"].into_iter()),
            Some(vec![answer(2.0), answer(1.0)])
        );
        assert_eq!(cache.stats().hits, 2);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(cache.fresh_all(["a"].into_iter()), None, "expired");
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_cancel_the_call() {
        let cache = Arc::new(QueryCache::new(Duration::from_secs(60)));
        let slow = cache.get("q", || async {
            tokio::time::sleep(Duration::from_millis(60)).await;
            Ok(answer(7.0))
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(10), slow)
                .await
                .is_err()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            cache.get("q", || async { Ok(answer(0.0)) }).await.unwrap(),
            answer(7.0)
        );
        assert_eq!(cache.stats().fetches, 1);
    }

    #[tokio::test]
    async fn the_collector_exports_lookups_and_errors_by_reason() {
        let cache = QueryCache::new(Duration::from_secs(60));
        let ok = cache.get("up", || async { Ok(answer(1.0)) }).await;
        assert!(ok.is_ok());
        let hit = cache.get("up", || async { Ok(answer(2.0)) }).await;
        assert_eq!(hit.ok(), Some(answer(1.0)));
        let failed = cache
            .get("down", || async {
                Err(QueryError::Timeout {
                    timeout: "2s".into(),
                })
            })
            .await;
        assert!(failed.is_err());

        let mut registry = prometheus_client::registry::Registry::with_prefix("slo_guard");
        registry.register_collector(Box::new(cache.collector()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for line in [
            "slo_guard_prometheus_lookups_total{result=\"hit\"} 1",
            "slo_guard_prometheus_lookups_total{result=\"joined\"} 0",
            "slo_guard_prometheus_lookups_total{result=\"fetched\"} 2",
            "slo_guard_prometheus_renewals_total 0",
            "slo_guard_prometheus_query_errors_total{reason=\"timeout\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
    }
}
