//! Who asks a preflight, and what it may ask: the caller's bearer token is checked by the
//! apiserver (TokenReview); asking about another identity needs the RBAC to impersonate
//! it, and asking about a workload needs the right to read it (SubjectAccessReview), as
//! `kubectl --as` and `kubectl get` would need.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::{ObjectReader, PreflightError, Subject, WorkloadRef};

/// An authenticated caller, as the apiserver knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// Its user name, e.g. `system:serviceaccount:ai-agents:fixer`.
    pub username: String,
    /// Its UID, when the apiserver gives one.
    pub uid: Option<String>,
    /// The groups it is in.
    pub groups: Vec<String>,
    /// Extra attributes the authenticator attached, passed on to access reviews.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Caller {
    /// Whether `subject` is the caller itself (its name, and no groups beyond its own).
    pub fn is(&self, subject: &Subject) -> bool {
        subject.user == self.username && subject.groups.iter().all(|g| self.groups.contains(g))
    }
}

/// Who a preflight's caller is, and whom it may ask about. A trait so tests can answer
/// without an apiserver.
pub trait Authenticator: Send + Sync {
    /// The caller a bearer token stands for.
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, PreflightError>>;

    /// `Ok` when `caller` may impersonate `subject` (its user and every group).
    fn may_impersonate<'a>(
        &'a self,
        caller: &'a Caller,
        subject: &'a Subject,
    ) -> BoxFuture<'a, Result<(), PreflightError>>;

    /// `Ok` when `caller` may read `workload`.
    fn may_read<'a>(
        &'a self,
        caller: &'a Caller,
        workload: &'a WorkloadRef,
    ) -> BoxFuture<'a, Result<(), PreflightError>>;
}

/// What impersonating `subject` takes, as the apiserver's impersonation filter checks
/// it: `impersonate` on the service account (for a service account's username) or the
/// user, and on each group.
pub fn impersonation_checks(subject: &Subject) -> Vec<ResourceAttributes> {
    let impersonate = |resource: &str, namespace: Option<&str>, name: &str| ResourceAttributes {
        verb: Some("impersonate".into()),
        group: Some(String::new()),
        resource: Some(resource.into()),
        namespace: namespace.map(str::to_string),
        name: Some(name.into()),
        ..ResourceAttributes::default()
    };
    let mut checks = vec![match subject
        .user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((namespace, name)) => impersonate("serviceaccounts", Some(namespace), name),
        None => impersonate("users", None, &subject.user),
    }];
    checks.extend(
        subject
            .groups
            .iter()
            .map(|group| impersonate("groups", None, group)),
    );
    checks
}

/// The plural resource and API group of a workload kind, as RBAC names them.
fn resource_of(api_version: &str, kind: &str) -> (String, String) {
    let group = api_version
        .split_once('/')
        .map_or("", |(group, _)| group)
        .to_string();
    (group, format!("{}s", kind.to_ascii_lowercase()))
}

/// TokenReview and SubjectAccessReview through the apiserver, and reads of the object.
#[derive(Clone)]
pub struct KubeAuthenticator {
    client: kube::Client,
}

impl KubeAuthenticator {
    /// Asks the apiserver `client` talks to.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    async fn allowed(
        &self,
        caller: &Caller,
        attributes: ResourceAttributes,
    ) -> Result<bool, PreflightError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(caller.username.clone()),
                uid: caller.uid.clone(),
                groups: Some(caller.groups.clone()),
                extra: (!caller.extra.is_empty()).then(|| caller.extra.clone()),
                resource_attributes: Some(attributes),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| PreflightError::Unavailable(format!("SubjectAccessReview failed: {e}")))?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

impl Authenticator for KubeAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, PreflightError>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_string()),
                    audiences: None,
                },
                ..TokenReview::default()
            };
            let answer = Api::<TokenReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| PreflightError::Unavailable(format!("TokenReview failed: {e}")))?;
            let status = answer.status.unwrap_or_default();
            if status.authenticated != Some(true) {
                return Err(PreflightError::Unauthenticated(
                    status
                        .error
                        .unwrap_or_else(|| "the token was not accepted".to_string()),
                ));
            }
            let user = status.user.unwrap_or_default();
            let username = user.username.unwrap_or_default();
            if username.is_empty() {
                return Err(PreflightError::Unauthenticated(
                    "the token names no user".into(),
                ));
            }
            Ok(Caller {
                username,
                uid: user.uid,
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default(),
            })
        })
    }

    fn may_impersonate<'a>(
        &'a self,
        caller: &'a Caller,
        subject: &'a Subject,
    ) -> BoxFuture<'a, Result<(), PreflightError>> {
        Box::pin(async move {
            for check in impersonation_checks(subject) {
                let what = format!(
                    "impersonate {} {}",
                    check.resource.as_deref().unwrap_or_default(),
                    check.name.as_deref().unwrap_or_default()
                );
                if !self.allowed(caller, check).await? {
                    return Err(PreflightError::Forbidden(format!(
                        "{} may not ask about {}: it needs RBAC to {what}",
                        caller.username, subject.user
                    )));
                }
            }
            Ok(())
        })
    }

    fn may_read<'a>(
        &'a self,
        caller: &'a Caller,
        workload: &'a WorkloadRef,
    ) -> BoxFuture<'a, Result<(), PreflightError>> {
        Box::pin(async move {
            let api_version = workload.api_version.clone().unwrap_or_else(|| {
                super::request::default_api_version(&workload.kind)
                    .unwrap_or("v1")
                    .to_string()
            });
            let (group, resource) = resource_of(&api_version, &workload.kind);
            let check = ResourceAttributes {
                verb: Some("get".into()),
                group: Some(group),
                resource: Some(resource.clone()),
                namespace: Some(workload.namespace.clone()),
                name: Some(workload.name.clone()),
                ..ResourceAttributes::default()
            };
            if self.allowed(caller, check).await? {
                Ok(())
            } else {
                Err(PreflightError::Forbidden(format!(
                    "{} may not read {resource} {}/{}",
                    caller.username, workload.namespace, workload.name
                )))
            }
        })
    }
}

impl ObjectReader for KubeAuthenticator {
    fn read<'a>(
        &'a self,
        api_version: &'a str,
        workload: &'a WorkloadRef,
    ) -> BoxFuture<'a, Result<Option<Value>, PreflightError>> {
        let WorkloadRef {
            kind,
            namespace,
            name,
            ..
        } = workload;
        Box::pin(async move {
            let (group, version) = match api_version.split_once('/') {
                Some((group, version)) => (group, version),
                None => ("", api_version),
            };
            let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), namespace, &resource);
            let object = api.get_opt(name).await.map_err(|e| {
                PreflightError::Unavailable(format!("cannot read {kind} {namespace}/{name}: {e}"))
            })?;
            object
                .map(serde_json::to_value)
                .transpose()
                .map_err(|e| PreflightError::Internal(format!("cannot encode {kind}: {e}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impersonating_a_service_account_is_checked_on_the_service_account() {
        let checks = impersonation_checks(&Subject {
            user: "system:serviceaccount:ai-agents:fixer".into(),
            groups: vec!["sre".into()],
        });
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[0].resource.as_deref(), Some("serviceaccounts"));
        assert_eq!(checks[0].namespace.as_deref(), Some("ai-agents"));
        assert_eq!(checks[0].name.as_deref(), Some("fixer"));
        assert_eq!(checks[1].resource.as_deref(), Some("groups"));
        let person = impersonation_checks(&Subject {
            user: "alice".into(),
            groups: Vec::new(),
        });
        assert_eq!(person[0].resource.as_deref(), Some("users"));
        assert_eq!(person[0].namespace, None);
    }
}
