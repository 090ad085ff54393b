//! Where a decision's SLO figures come from: nowhere (no Prometheus configured), canned
//! answers (offline `check`), or a live Prometheus. The guard asks before calling the
//! pure `decide`, so every failure here is turned into an [`Observation`], never an
//! error that escapes.

use std::sync::Arc;
use std::time::Duration;

use super::answer::{Answer, QueryError};
use super::canned::{CannedAnswer, CannedAnswers};
use super::client::Prometheus;
use super::plan::{Observation, QueryPlan, QueryRole, Reading, Readings};

/// Where the guard gets SLO figures from.
#[derive(Clone, Default)]
pub enum SloSource {
    /// No Prometheus: the SLO gate is off, and every gated decision says so.
    #[default]
    Off,
    /// Answers from a file, for offline `check` and tests.
    Canned(Arc<CannedAnswers>),
    /// A Prometheus, Thanos or Mimir, through its answer cache.
    Live(Arc<Prometheus>),
}

impl SloSource {
    /// Whether figures come from a live Prometheus.
    pub fn is_live(&self) -> bool {
        matches!(self, SloSource::Live(_))
    }

    /// Runs a plan: every query in parallel, the whole within `timeout`.
    pub async fn observe(&self, plan: &QueryPlan, timeout: Duration) -> Observation {
        match self {
            SloSource::Live(prometheus) => observe_live(prometheus, plan, timeout).await,
            other => other.observe_now(plan),
        }
    }

    /// A plan's figures only from what is already at hand: a live source answers from
    /// its cache, or `None` when some answer is not cached (nothing is asked of
    /// Prometheus); the other sources as [`Self::observe_now`].
    pub fn observe_cached(&self, plan: &QueryPlan) -> Option<Observation> {
        let SloSource::Live(prometheus) = self else {
            return Some(self.observe_now(plan));
        };
        let cached = |queries: &[(QueryRole, String)]| {
            let answers = prometheus.cached(queries.iter().map(|(_, query)| query.as_str()))?;
            let roles = queries.iter().map(|(role, _)| role);
            Some(observation_of(roles.zip(answers.into_iter().map(Ok))))
        };
        let (readings, fallback) = match after_first(plan, cached(&plan.queries)?) {
            AfterFirst::Final(done) => return Some(done),
            AfterFirst::Fallback(readings, fallback) => (readings, fallback),
        };
        Some(with_fallback(readings, cached(&fallback)?))
    }

    /// Runs a plan without waiting: for the sources that need no I/O. A live source
    /// cannot answer this way and reports so (the server always uses [`Self::observe`]).
    pub fn observe_now(&self, plan: &QueryPlan) -> Observation {
        match self {
            SloSource::Off => Observation::NotConfigured,
            SloSource::Canned(answers) => observe_canned(answers, plan),
            SloSource::Live(_) => Observation::Unavailable(
                "a live Prometheus can only be asked by an asynchronous review".into(),
            ),
        }
    }
}

/// Runs a plan's queries, then the fallbacks of the recording rules that had no
/// series, all within `timeout`.
async fn observe_live(
    prometheus: &Arc<Prometheus>,
    plan: &QueryPlan,
    timeout: Duration,
) -> Observation {
    let started = std::time::Instant::now();
    let first = ask_live(prometheus, &plan.queries, timeout).await;
    let (readings, fallback) = match after_first(plan, first) {
        AfterFirst::Final(done) => return done,
        AfterFirst::Fallback(readings, fallback) => (readings, fallback),
    };
    let remaining = timeout.saturating_sub(started.elapsed());
    with_fallback(readings, ask_live(prometheus, &fallback, remaining).await)
}

/// What a plan's first queries left: a final observation, or readings whose recording
/// rules had no series and the fallback queries still to ask.
enum AfterFirst {
    Final(Observation),
    Fallback(Readings, Vec<(QueryRole, String)>),
}

fn after_first(plan: &QueryPlan, first: Observation) -> AfterFirst {
    let Observation::Readings(readings) = first else {
        return AfterFirst::Final(first);
    };
    let fallback = plan.fallback_queries(&readings);
    if fallback.is_empty() {
        return AfterFirst::Final(Observation::Readings(readings));
    }
    AfterFirst::Fallback(readings, fallback)
}

/// The first readings with the fallbacks' added, or the fallbacks' failure.
fn with_fallback(mut readings: Readings, fallback: Observation) -> Observation {
    match fallback {
        Observation::Readings(more) => {
            readings.extend(more);
            Observation::Readings(readings)
        }
        other => other,
    }
}

async fn ask_live(
    prometheus: &Arc<Prometheus>,
    queries: &[(QueryRole, String)],
    timeout: Duration,
) -> Observation {
    if let Some(answers) = prometheus.cached(queries.iter().map(|(_, query)| query.as_str())) {
        let roles = queries.iter().map(|(role, _)| role);
        return observation_of(roles.zip(answers.into_iter().map(Ok)));
    }
    let calls = queries
        .iter()
        .map(|(role, query)| async move { (role, prometheus.query(query, timeout).await) });
    // Each call is bounded by `timeout` already; this bounds their sum as well, so a
    // decision never waits longer than the policy allows, whatever happens inside.
    let results = match tokio::time::timeout(
        timeout + Duration::from_millis(5),
        futures::future::join_all(calls),
    )
    .await
    {
        Ok(results) => results,
        Err(_) => {
            return Observation::Unavailable(format!(
                "no answer within the {} timeout",
                humantime::format_duration(timeout)
            ));
        }
    };
    observation_of(results)
}

/// The readings of a plan's answers, or why there are none.
fn observation_of<'a>(
    results: impl IntoIterator<Item = (&'a QueryRole, Result<Answer, QueryError>)>,
) -> Observation {
    let mut readings = Readings::new();
    let mut failures: Vec<(QueryRole, String)> = Vec::new();
    for (role, result) in results {
        match result {
            Ok(answer) => {
                readings.insert(role.clone(), Reading::from_value(answer.value));
            }
            Err(error) => failures.push((role.clone(), error.to_string())),
        }
    }
    if failures.is_empty() {
        Observation::Readings(readings)
    } else {
        Observation::Unavailable(describe_failures(&failures))
    }
}

/// One cause for the message. When every query failed the same way (Prometheus is down)
/// that is the cause; otherwise the first failing query is named.
fn describe_failures(failures: &[(QueryRole, String)]) -> String {
    let (role, first) = &failures[0];
    if failures.iter().all(|(_, cause)| cause == first) {
        return first.clone();
    }
    let others = failures.len() - 1;
    format!(
        "{role}: {first} (and {others} more failing {})",
        if others == 1 { "query" } else { "queries" }
    )
}

fn observe_canned(answers: &CannedAnswers, plan: &QueryPlan) -> Observation {
    let (readings, fallback) = match after_first(plan, ask_canned(answers, &plan.queries)) {
        AfterFirst::Final(done) => return done,
        AfterFirst::Fallback(readings, fallback) => (readings, fallback),
    };
    with_fallback(readings, ask_canned(answers, &fallback))
}

fn ask_canned(answers: &CannedAnswers, queries: &[(QueryRole, String)]) -> Observation {
    let mut readings = Readings::new();
    let mut failures = Vec::new();
    let mut missing = Vec::new();
    for (role, query) in queries {
        match answers.get(query) {
            Some(CannedAnswer::Value(value)) => {
                readings.insert(role.clone(), Reading::from_value(*value));
            }
            Some(CannedAnswer::Error(cause)) => failures.push((role.clone(), cause.clone())),
            // Without a canned probe, staleness is simply not checked.
            None if *role == QueryRole::Freshness => {}
            None => missing.push(query.as_str()),
        }
    }
    if let Some(first) = missing.first() {
        let more = match missing.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        return Observation::Unavailable(format!("no canned answer for `{first}`{more}"));
    }
    if failures.is_empty() {
        Observation::Readings(readings)
    } else {
        Observation::Unavailable(describe_failures(&failures))
    }
}
