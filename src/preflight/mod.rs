//! The preflight: what a change would get now, and the envelope around it, before it is
//! made (`POST /v1/preflight`, `slo-guard preflight`).
//!
//! The intended change becomes the AdmissionReview the apiserver would send for it, and
//! the guard judges that review on the same path as the validating webhook (parse,
//! classify, gather the same SLO figures through the same cache, read the change ledger,
//! [`crate::rules::decide`]), writing nothing. The envelope asks the same pure core about
//! neighbouring changes: other replica counts, later instants. So the preflight cannot
//! disagree with admission; `tests/preflight.rs` checks it over every captured review.

pub mod auth;
pub mod envelope;
pub mod limiter;
pub mod request;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::admission::{AdmissionError, WorkloadKey, WorkloadKind};
use crate::cli::request::{RequestError, Requester};
use crate::guard::{Guard, PreflightJudgement};

pub use auth::{Authenticator, Caller};
pub use limiter::RateLimiter;
pub use request::{IntendedChange, PreflightRequest, Subject, WorkloadRef};

/// Why a preflight gets no answer. `server::error` maps each to its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// No bearer token, or one the apiserver does not accept.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller may not ask this: another identity without the RBAC to impersonate it,
    /// or a workload it may not read.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The caller has asked too often in the current window.
    #[error("too many preflight requests from {caller}; retry after {retry_after_secs}s")]
    RateLimited {
        /// The caller, by user name.
        caller: String,
        /// When its window ends.
        retry_after_secs: u64,
    },
    /// The request is malformed or asks for something a preflight cannot judge.
    #[error("invalid preflight request: {0}")]
    Invalid(String),
    /// The workload does not exist and the change does not create it.
    #[error("not found: {0}")]
    NotFound(String),
    /// The apiserver could not be asked (to authenticate the caller, or to read the
    /// workload).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The preflight is not served here: no cluster to authenticate callers against.
    #[error("the preflight is not enabled: {0}")]
    Disabled(String),
    /// The reviews built for the change could not be judged.
    #[error("the change cannot be judged: {0}")]
    Admission(#[from] AdmissionError),
    /// A fault in slo-guard itself.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<RequestError> for PreflightError {
    fn from(error: RequestError) -> Self {
        PreflightError::Invalid(error.to_string())
    }
}

/// Reads the object a change is about as it is stored, for the preflight.
pub trait ObjectReader: Send + Sync {
    /// The workload as stored, read at `api_version` (the request's, or its kind's
    /// default), or `None` when there is none.
    fn read<'a>(
        &'a self,
        api_version: &'a str,
        workload: &'a WorkloadRef,
    ) -> futures::future::BoxFuture<'a, Result<Option<Value>, PreflightError>>;
}

/// What the server needs to answer preflights besides the guard.
pub struct PreflightService {
    /// Who the caller is, and whom it may ask about.
    pub authenticator: Arc<dyn Authenticator>,
    /// Reads the current object from the cluster; `None` where there is no cluster
    /// (tests), and the request's `current` is used instead.
    pub reader: Option<Arc<dyn ObjectReader>>,
    /// Preflights per caller.
    pub limiter: RateLimiter,
}

/// The bearer token of an `Authorization` header.
pub fn bearer(authorization: Option<&str>) -> Result<&str, PreflightError> {
    let header = authorization.ok_or_else(|| {
        PreflightError::Unauthenticated("no Authorization: Bearer <token> header".into())
    })?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            PreflightError::Unauthenticated("the Authorization header is not a bearer token".into())
        })?;
    Ok(token)
}

impl PreflightService {
    /// Answers one preflight: authenticates the caller, holds it to its rate, checks
    /// that it may ask about the identity and workload it names, and judges.
    pub async fn answer(
        &self,
        guard: &Guard,
        authorization: Option<&str>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Value, PreflightError> {
        let token = bearer(authorization)?;
        let caller = self.authenticator.authenticate(token).await?;
        self.limiter.admit(&caller.username)?;
        let request: PreflightRequest = serde_json::from_slice(body)
            .map_err(|e| PreflightError::Invalid(format!("not a preflight request: {e}")))?;
        request.validate()?;
        let requester = match &request.subject {
            Some(subject) if !caller.is(subject) => {
                self.authenticator.may_impersonate(&caller, subject).await?;
                Requester {
                    user: subject.user.clone(),
                    groups: subject.groups.clone(),
                    field_manager: request.field_manager.clone(),
                    dry_run: false,
                }
            }
            _ => Requester {
                user: caller.username.clone(),
                groups: caller.groups.clone(),
                field_manager: request.field_manager.clone(),
                dry_run: false,
            },
        };
        // The answer describes the workload: only for a caller that may read it.
        self.authenticator
            .may_read(&caller, &request.workload)
            .await?;
        let current = match (&self.reader, &request.current) {
            (Some(_), Some(_)) => {
                return Err(PreflightError::Invalid(
                    "`current` is read from the cluster here; leave it out".into(),
                ));
            }
            // A scale is judged on the watch cache, as admission judges it.
            (Some(_), None) if request.is_plain_scale() => None,
            (Some(reader), None) => {
                let api_version = request.api_version()?;
                reader.read(&api_version, &request.workload).await?
            }
            (None, current) => current.clone(),
        };
        let subject = json!({
            "user": requester.user,
            "groups": crate::cli::request::groups_for(&requester.user, &requester.groups),
            "askedBy": caller.username,
        });
        let prepared = prepare(guard, &request, &requester, current.as_ref(), now)?;
        let judgements = guard.assess(&prepared.bodies, now).await?;
        Ok(prepared.answer(judgements, &subject, now))
    }
}

/// The reviews of one preflight, ready to be judged.
pub struct Prepared {
    /// The AdmissionReviews to judge: the intended change, then the replica probes.
    pub bodies: Vec<Vec<u8>>,
    current_replicas: Option<u32>,
    has_down: bool,
}

/// Builds the reviews for `request` by `requester` on `current` (the stored object).
pub fn prepare(
    guard: &Guard,
    request: &PreflightRequest,
    requester: &Requester,
    current: Option<&Value>,
    now: DateTime<Utc>,
) -> Result<Prepared, PreflightError> {
    let cached_replicas = match request.workload.kind.as_str() {
        "Deployment" => Some(WorkloadKind::Deployment),
        "StatefulSet" => Some(WorkloadKind::StatefulSet),
        _ => None,
    }
    .and_then(|kind| {
        guard.workloads.workload(WorkloadKey {
            kind,
            namespace: &request.workload.namespace,
            name: &request.workload.name,
        })
    })
    .and_then(|snapshot| snapshot.replicas);
    let reviews = request.reviews(requester, current, cached_replicas, now)?;
    let mut bodies = vec![reviews.intended];
    let (current_replicas, has_down) = match reviews.probes {
        Some(probes) => {
            bodies.push(probes.up);
            let has_down = probes.down.is_some();
            bodies.extend(probes.down);
            (Some(probes.current), has_down)
        }
        None => (None, false),
    };
    Ok(Prepared {
        bodies,
        current_replicas,
        has_down,
    })
}

impl Prepared {
    /// The answer, from the judgements of [`Prepared::bodies`] in order.
    pub fn answer(
        &self,
        judgements: Vec<Option<PreflightJudgement>>,
        subject: &Value,
        now: DateTime<Utc>,
    ) -> Value {
        let mut judgements = judgements.into_iter();
        let Some(intended) = judgements.next().flatten() else {
            return json!({
                "allowed": true,
                "verdict": "not governed",
                "message": "slo-guard does not govern this change: no policy judges it, and admission allows it",
                "subject": subject,
                "evaluatedAt": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "nextAllowedTime": null,
            });
        };
        let (up, down) = match self.current_replicas {
            Some(_) => {
                let up = judgements.next().flatten();
                let down = if self.has_down {
                    judgements.next().flatten()
                } else {
                    None
                };
                (up, down)
            }
            None => (None, None),
        };
        envelope::answer(
            &intended,
            self.current_replicas,
            up.as_ref(),
            down.as_ref(),
            subject,
            now,
        )
    }
}

/// Judges a preflight without a cluster: the identity is given, not authenticated, and
/// the SLO figures come from canned answers (or the gate is off). For `slo-guard
/// preflight --policies` and tests.
pub fn answer_offline(
    guard: &Guard,
    request: &PreflightRequest,
    requester: &Requester,
    now: DateTime<Utc>,
) -> Result<Value, PreflightError> {
    request.validate()?;
    let prepared = prepare(guard, request, requester, request.current.as_ref(), now)?;
    let judgements = guard.assess_now(&prepared.bodies, now)?;
    let subject = json!({
        "user": requester.user,
        "groups": crate::cli::request::groups_for(&requester.user, &requester.groups),
    });
    Ok(prepared.answer(judgements, &subject, now))
}
