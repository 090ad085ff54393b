//! Manifest inputs read the way `kubectl apply -f` reads them: a file of one or more YAML
//! (or JSON) documents, a directory of `.yaml`, `.yml` and `.json` files (sorted, not
//! recursive), or `-` for standard input. `List` documents are expanded into their items.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::admission::WorkloadKind;
use crate::reflection::learn::WorkloadState;
use crate::store::{PolicySources, SourceError, parse_sources_text};

/// Why manifests given on the command line cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory cannot be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file or directory.
        path: String,
        /// The I/O error.
        cause: String,
    },
    /// A document is not YAML or JSON.
    #[error("{origin}: not a manifest: {cause}")]
    Parse {
        /// The document, as `file#index`.
        origin: String,
        /// The parse error.
        cause: String,
    },
    /// A document is not the kind of manifest the flag takes.
    #[error("{origin}: {message}")]
    Invalid {
        /// The document, as `file#index`.
        origin: String,
        /// What is wrong with it.
        message: String,
    },
    /// A path holds no manifest.
    #[error("{path}: no manifests found")]
    Empty {
        /// The file or directory.
        path: String,
    },
    /// Two flags both ask for standard input.
    #[error("`-` (standard input) can be given only once")]
    StdinTwice,
    /// The policy or reflection ConfigMaps cannot be read.
    #[error(transparent)]
    Policy(#[from] SourceError),
}

/// One document of a manifest input, with where it came from (`file#index`), which every
/// error about it names.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where it came from: `file#index`, or `-#index` for standard input.
    pub origin: String,
    /// The document.
    pub value: Value,
}

impl Manifest {
    /// Its `kind`, or empty.
    pub fn kind(&self) -> &str {
        self.value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Its `metadata.name`, or empty.
    pub fn name(&self) -> &str {
        self.value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The manifest's namespace, or `default` as kubectl assumes without `-n`.
    pub fn namespace(&self) -> &str {
        self.value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
            .unwrap_or("default")
    }
}

/// Reads standard input at most once across all the flags of one command.
#[derive(Default)]
pub struct Stdin {
    taken: bool,
}

impl Stdin {
    /// All of standard input; an error the second time.
    pub fn read(&mut self) -> Result<String, ManifestError> {
        if self.taken {
            return Err(ManifestError::StdinTwice);
        }
        self.taken = true;
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| ManifestError::Read {
                path: "standard input".into(),
                cause: e.to_string(),
            })?;
        Ok(text)
    }
}

fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The files a path stands for: itself, or a directory's manifest files, sorted.
fn files_of(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    crate::store::manifest_files(path).map_err(|e| ManifestError::Read {
        path: path.display().to_string(),
        cause: e.to_string(),
    })
}

/// Every document in `text`, Lists expanded; empty documents skipped.
pub fn parse_documents(origin: &str, text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let mut manifests = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = format!("{origin}#{}", index + 1);
        let value = Value::deserialize(document).map_err(|e| ManifestError::Parse {
            origin: origin.clone(),
            cause: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        if !value.is_object() {
            return Err(ManifestError::Invalid {
                origin,
                message: "a manifest is a mapping with apiVersion, kind and metadata".into(),
            });
        }
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind.is_empty() {
            return Err(ManifestError::Invalid {
                origin,
                message: "document has no kind".into(),
            });
        }
        if kind == "List" || kind.ends_with("List") {
            let Some(items) = value.get("items").and_then(Value::as_array) else {
                return Err(ManifestError::Invalid {
                    origin,
                    message: format!("{kind} has no items"),
                });
            };
            for (item_index, item) in items.iter().enumerate() {
                manifests.push(Manifest {
                    origin: format!("{origin} item {}", item_index + 1),
                    value: item.clone(),
                });
            }
        } else {
            manifests.push(Manifest { origin, value });
        }
    }
    Ok(manifests)
}

/// Reads every document of every path. A path that holds no document at all is an error:
/// it is almost always a wrong name.
pub fn read_manifests(
    paths: &[PathBuf],
    stdin: &mut Stdin,
) -> Result<Vec<Manifest>, ManifestError> {
    let mut manifests = Vec::new();
    for path in paths {
        let before = manifests.len();
        if is_stdin(path) {
            manifests.extend(parse_documents("standard input", &stdin.read()?)?);
        } else {
            for file in files_of(path)? {
                let text = std::fs::read_to_string(&file).map_err(|e| ManifestError::Read {
                    path: file.display().to_string(),
                    cause: e.to_string(),
                })?;
                manifests.extend(parse_documents(&file.display().to_string(), &text)?);
            }
        }
        if manifests.len() == before {
            return Err(ManifestError::Empty {
                path: path.display().to_string(),
            });
        }
    }
    Ok(manifests)
}

/// Policy and reflection ConfigMaps, and the SLO specs policies may name, from files,
/// directories or standard input.
pub fn read_policy_sources(
    paths: &[PathBuf],
    stdin: &mut Stdin,
) -> Result<PolicySources, ManifestError> {
    let mut sources = PolicySources::default();
    for path in paths {
        if is_stdin(path) {
            let text = stdin.read()?;
            sources.extend(parse_sources_text(
                Path::new("standard input"),
                &text,
                "default",
            )?);
        } else {
            sources.extend(crate::store::read_sources(path, "default")?);
        }
    }
    Ok(sources)
}

/// The Deployments and StatefulSets among `manifests`, as the watch cache would hold
/// them. Other kinds are passed over, as a file of a Deployment and its Service is the
/// usual thing to point at; a path with no workload at all is an error.
pub fn workloads_of(
    paths: &[PathBuf],
    stdin: &mut Stdin,
) -> Result<Vec<WorkloadState>, ManifestError> {
    let mut workloads = Vec::new();
    for path in paths {
        let manifests = read_manifests(std::slice::from_ref(path), stdin)?;
        let before = workloads.len();
        workloads.extend(manifests.iter().filter_map(workload_state));
        if workloads.len() == before {
            return Err(ManifestError::Invalid {
                origin: path.display().to_string(),
                message: format!(
                    "expected a Deployment or StatefulSet, found {}",
                    manifests
                        .iter()
                        .map(|m| m.kind().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    Ok(workloads)
}

/// A Deployment or StatefulSet manifest as the watch cache keeps it; None for other kinds.
pub fn workload_state(manifest: &Manifest) -> Option<WorkloadState> {
    let kind = match manifest.kind() {
        "Deployment" => WorkloadKind::Deployment,
        "StatefulSet" => WorkloadKind::StatefulSet,
        _ => return None,
    };
    let map = |pointer: &str| -> BTreeMap<String, String> {
        manifest
            .value
            .pointer(pointer)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    };
    Some(WorkloadState {
        kind,
        namespace: manifest.namespace().to_string(),
        name: manifest.name().to_string(),
        labels: map("/metadata/labels"),
        pod_labels: map("/spec/template/metadata/labels"),
        annotations: map("/metadata/annotations"),
        replicas: manifest
            .value
            .pointer("/spec/replicas")
            .and_then(Value::as_u64)
            .and_then(|r| u32::try_from(r).ok()),
        owner_uids: manifest
            .value
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .map(|owners| {
                owners
                    .iter()
                    .filter_map(|owner| owner.get("uid").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_WORKLOADS: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a, namespace: shop}\nspec: {replicas: 3}\n---\n# a comment only\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: b}\n";

    #[test]
    fn a_file_of_several_documents_yields_each_workload_and_skips_other_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("all.yaml");
        std::fs::write(&file, TWO_WORKLOADS).unwrap();
        let workloads = workloads_of(&[file], &mut Stdin::default()).unwrap();
        let names: Vec<_> = workloads
            .iter()
            .map(|w| (w.kind, w.namespace.as_str(), w.name.as_str(), w.replicas))
            .collect();
        assert_eq!(
            names,
            vec![
                (WorkloadKind::Deployment, "shop", "a", Some(3)),
                (WorkloadKind::StatefulSet, "default", "b", None),
            ]
        );
    }

    #[test]
    fn a_directory_is_read_file_by_file_in_order_and_lists_are_expanded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: second}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("a.json"), r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"first"}}]}"#).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let manifests = read_manifests(&[dir.path().to_path_buf()], &mut Stdin::default()).unwrap();
        let names: Vec<_> = manifests.iter().map(Manifest::name).collect();
        assert_eq!(names, ["first", "second"]);
        assert!(
            manifests[0].origin.ends_with("a.json#1 item 1"),
            "{}",
            manifests[0].origin
        );
    }

    #[test]
    fn errors_name_the_file_and_the_document() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.yaml");
        std::fs::write(
            &file,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nmetadata: {name: b}\n",
        )
        .unwrap();
        let error = read_manifests(std::slice::from_ref(&file), &mut Stdin::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.ends_with("bad.yaml#2: document has no kind"),
            "{error}"
        );

        let missing = dir.path().join("missing.yaml");
        let error = read_manifests(&[missing], &mut Stdin::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("cannot read ") && error.contains("missing.yaml"),
            "{error}"
        );

        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let error = read_manifests(&[empty], &mut Stdin::default())
            .unwrap_err()
            .to_string();
        assert!(error.ends_with("empty: no manifests found"), "{error}");

        let service = dir.path().join("service.yaml");
        std::fs::write(
            &service,
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n",
        )
        .unwrap();
        let error = workloads_of(&[service], &mut Stdin::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.ends_with("expected a Deployment or StatefulSet, found Service"),
            "{error}"
        );
    }

    #[test]
    fn standard_input_is_read_once() {
        let mut stdin = Stdin { taken: true };
        let error = read_manifests(&[PathBuf::from("-")], &mut stdin).unwrap_err();
        assert!(matches!(error, ManifestError::StdinTwice));
    }
}
