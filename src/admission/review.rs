//! The AdmissionReview v1 request, read into the few fields slo-guard judges by.
//!
//! kube-core's `AdmissionReview<DynamicObject>` reads every object through a flattened
//! map and a full `ObjectMeta`, `managedFields` included; on a typical Deployment that was
//! over half of the server's work per review. This reader keeps the object's body
//! (`spec`, `status`, `data`, ...) as JSON, reads only the metadata the rules use, and
//! skips the rest of the metadata without allocating.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

/// `request.operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// `object` only.
    Create,
    /// `object` and `oldObject`.
    Update,
    /// `oldObject` only.
    Delete,
    /// `kubectl exec`, `port-forward` and the like; no webhook of slo-guard asks for it.
    Connect,
}

impl Operation {
    /// The operation as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// `request.resource`, without its version (slo-guard judges every served version alike).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct GroupResource {
    /// `""` for the core group.
    #[serde(default)]
    pub group: String,
    /// The plural resource: `deployments`.
    #[serde(default)]
    pub resource: String,
}

/// `request.userInfo`: who the apiserver authenticated (after impersonation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct UserInfo {
    /// `None` only in a malformed review: the apiserver always sends it.
    #[serde(default)]
    pub username: Option<String>,
    /// The groups, `system:authenticated` among them.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
}

/// `request.options`: the Create/Update/DeleteOptions of the call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestOptions {
    /// The field manager the client named (`kubectl`, `kubectl-client-side-apply`, an
    /// agent's own); chosen by the client, so it can mark an agent but never clear one.
    #[serde(default)]
    pub field_manager: Option<String>,
    /// A delete's `propagationPolicy`: `Orphan` leaves the object's dependents in place
    /// (kubectl's `--cascade=orphan`); `Background` and `Foreground` have the garbage
    /// collector delete them; absent means the resource's default, which deletes them.
    #[serde(default)]
    pub propagation_policy: Option<String>,
    /// A delete's deprecated `orphanDependents`; `true` is `propagationPolicy: Orphan`.
    #[serde(default)]
    pub orphan_dependents: Option<bool>,
}

impl RequestOptions {
    /// A delete that leaves the object's dependents in place, as the apiserver reads its
    /// DeleteOptions (either field: the apiserver refuses a request that sets both).
    #[must_use]
    pub fn orphans_dependents(&self) -> bool {
        self.propagation_policy.as_deref() == Some("Orphan") || self.orphan_dependents == Some(true)
    }
}

/// `request.kind`: what the object is, as the API names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RequestKind {
    /// `""` for the core group.
    #[serde(default)]
    pub group: String,
    /// `v1`, ...
    #[serde(default)]
    pub version: String,
    /// `ConfigMap`, `Deployment`, ...
    #[serde(default)]
    pub kind: String,
}

impl RequestKind {
    /// `v1`, `apps/v1`: the kind's apiVersion, as Events name the object.
    #[must_use]
    pub fn api_version(&self) -> String {
        match self.group.as_str() {
            "" => self.version.clone(),
            group => format!("{group}/{}", self.version),
        }
    }
}

/// `request` of an AdmissionReview v1.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewRequest {
    /// Echoed in the response.
    pub uid: String,
    /// What is written.
    pub resource: GroupResource,
    /// The kind of what is written, for denials that name an object slo-guard otherwise
    /// does not read (the owner of a workload, deleted).
    #[serde(default)]
    pub kind: RequestKind,
    /// `scale` for the scale subresource.
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// The object's name; empty for a create with `generateName`.
    #[serde(default)]
    pub name: String,
    /// `None` for cluster-scoped objects.
    #[serde(default)]
    pub namespace: Option<String>,
    /// What the call does to the object.
    pub operation: Operation,
    /// Who makes the call.
    pub user_info: UserInfo,
    /// The object after the change (not for a delete).
    #[serde(default)]
    pub object: Option<ReviewObject>,
    /// The object before it (an update or delete).
    #[serde(default)]
    pub old_object: Option<ReviewObject>,
    /// `--dry-run=server`: nothing will be stored.
    #[serde(default)]
    pub dry_run: bool,
    /// The call's options.
    #[serde(default)]
    pub options: Option<RequestOptions>,
}

/// The metadata the rules read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectMetadata {
    /// `metadata.name`.
    pub name: Option<String>,
    /// `metadata.uid` (absent on a create's object).
    pub uid: Option<String>,
    /// `metadata.labels`; `None` when the map is absent.
    pub labels: Option<BTreeMap<String, String>>,
    /// `metadata.annotations`; `None` when the map is absent, which decides how a patch
    /// may add to it.
    pub annotations: Option<BTreeMap<String, String>>,
    /// `ownerReferences`: a Pod or ReplicaSet that names a controller as its owner belongs
    /// to that controller's workload, and a workload given an owner is deleted with it.
    pub owner_references: Vec<OwnerReference>,
    /// How many fields the metadata had, read or skipped: 0 when it is absent or `{}`.
    pub field_count: usize,
}

/// One `metadata.ownerReferences` entry, reduced to what names the owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct OwnerReference {
    /// The owner's kind: `ReplicaSet`, `Deployment`, ...
    #[serde(default)]
    pub kind: String,
    /// The owner's name, in the object's namespace.
    #[serde(default)]
    pub name: String,
    /// The owner's uid: the garbage collector deletes the object when no object of that
    /// uid exists, whatever its kind and name say.
    #[serde(default)]
    pub uid: String,
}

/// An object of a review: its metadata, and every other field except apiVersion and kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReviewObject {
    /// The metadata the rules read.
    pub metadata: ObjectMetadata,
    /// The rest (`spec`, `status`, `data`, ...), as JSON.
    pub body: Value,
}

impl<'de> Deserialize<'de> for ObjectMetadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MetadataVisitor;

        impl<'de> Visitor<'de> for MetadataVisitor {
            type Value = ObjectMetadata;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("object metadata")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut metadata = ObjectMetadata::default();
                while let Some(key) = map.next_key::<KeyName>()? {
                    metadata.field_count += 1;
                    match key.0.as_ref() {
                        "name" => metadata.name = map.next_value()?,
                        "uid" => metadata.uid = map.next_value()?,
                        "labels" => metadata.labels = map.next_value()?,
                        "annotations" => metadata.annotations = map.next_value()?,
                        "ownerReferences" => {
                            metadata.owner_references = map
                                .next_value::<Option<Vec<OwnerReference>>>()?
                                .unwrap_or_default();
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(metadata)
            }
        }

        deserializer.deserialize_map(MetadataVisitor)
    }
}

impl<'de> Deserialize<'de> for ReviewObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;

        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = ReviewObject;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Kubernetes object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut metadata = None;
                let mut body = Map::new();
                while let Some(key) = map.next_key::<KeyName>()? {
                    match key.0.as_ref() {
                        "metadata" => {
                            metadata = map.next_value::<Option<ObjectMetadata>>()?;
                        }
                        "apiVersion" | "kind" => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        _ => {
                            let value = map.next_value::<Value>()?;
                            body.insert(key.0.into_owned(), value);
                        }
                    }
                }
                Ok(ReviewObject {
                    metadata: metadata.unwrap_or_default(),
                    body: Value::Object(body),
                })
            }
        }

        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// A map key, borrowed from the body when it has no escapes.
struct KeyName<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for KeyName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeyName<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
                Ok(KeyName(key.into()))
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
                Ok(KeyName(key.to_owned().into()))
            }

            fn visit_string<E: de::Error>(self, key: String) -> Result<Self::Value, E> {
                Ok(KeyName(key.into()))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The envelope around the request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReviewEnvelope {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub request: Option<ReviewRequest>,
}

/// Only the type fields of a body, to tell "a review of another version" apart from
/// "not a review" when the full read fails.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TypeFields {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_metadata_and_body_and_skips_managed_fields() {
        let object: ReviewObject = serde_json::from_str(
            r#"{"apiVersion":"apps/v1","kind":"Deployment",
                "metadata":{"name":"web","uid":"u","labels":{"app":"web"},
                            "managedFields":[{"manager":"kubectl","fieldsV1":{"f:spec":{}}}]},
                "spec":{"replicas":3},"status":{}}"#,
        )
        .expect("object");
        assert_eq!(object.metadata.name.as_deref(), Some("web"));
        assert_eq!(
            object.metadata.labels,
            Some(BTreeMap::from([("app".to_string(), "web".to_string())]))
        );
        assert_eq!(object.metadata.annotations, None);
        assert_eq!(object.metadata.field_count, 4);
        assert_eq!(
            object.body,
            serde_json::json!({"spec": {"replicas": 3}, "status": {}})
        );
    }

    #[test]
    fn absent_null_and_empty_metadata_have_no_fields() {
        for text in [
            r#"{"spec":{}}"#,
            r#"{"metadata":null,"spec":{}}"#,
            r#"{"metadata":{},"spec":{}}"#,
        ] {
            let object: ReviewObject = serde_json::from_str(text).expect(text);
            assert_eq!(object.metadata.field_count, 0, "{text}");
        }
    }

    #[test]
    fn escaped_keys_are_read_like_plain_ones() {
        let object: ReviewObject =
            serde_json::from_str(r#"{"metadata":{"n\u0061me":"web"},"sp\u0065c":{"a":1}}"#)
                .expect("object");
        assert_eq!(object.metadata.name.as_deref(), Some("web"));
        assert_eq!(object.body, serde_json::json!({"spec": {"a": 1}}));
    }

    #[test]
    fn a_label_that_is_not_a_string_is_refused() {
        let result = serde_json::from_str::<ReviewObject>(r#"{"metadata":{"labels":{"app":1}}}"#);
        assert!(result.is_err());
    }
}
