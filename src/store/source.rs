//! Reading ConfigMap manifests from files, as `kubectl apply -f` would take them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ConfigMap;
use serde::Deserialize;

use crate::slo_spec::SloSpecDocument;

/// What a policy directory holds: slo-guard's ConfigMaps, and the SLO specs (Sloth,
/// Pyrra, OpenSLO) its policies may name in `slo.source`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySources {
    /// Policy and reflection ConfigMaps.
    pub configmaps: Vec<ConfigMapDocument>,
    /// SLO specs.
    pub slo_specs: Vec<SloSpecDocument>,
}

impl PolicySources {
    /// Adds what `other` holds.
    pub fn extend(&mut self, other: PolicySources) {
        self.configmaps.extend(other.configmaps);
        self.slo_specs.extend(other.slo_specs);
    }
}

/// The parts of a ConfigMap slo-guard reads, wherever it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigMapDocument {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its labels, which say whether it holds a policy or reflections.
    pub labels: BTreeMap<String, String>,
    /// Its data: the documents, by key.
    pub data: BTreeMap<String, String>,
    /// Where it was read from, for messages: a file path or `cluster`.
    pub origin: String,
}

impl ConfigMapDocument {
    /// `namespace` is used when the manifest has none, as kubectl uses its context's.
    pub fn from_configmap(
        configmap: ConfigMap,
        namespace: &str,
        origin: String,
    ) -> Result<Self, String> {
        let name = configmap
            .metadata
            .name
            .filter(|name| !name.is_empty())
            .ok_or_else(|| format!("{origin}: ConfigMap has no metadata.name"))?;
        if configmap
            .binary_data
            .as_ref()
            .is_some_and(|data| !data.is_empty())
        {
            return Err(format!(
                "{origin}: ConfigMap {name} uses binaryData; slo-guard reads only data"
            ));
        }
        Ok(Self {
            namespace: configmap
                .metadata
                .namespace
                .unwrap_or_else(|| namespace.to_string()),
            name,
            labels: configmap.metadata.labels.unwrap_or_default(),
            data: configmap.data.unwrap_or_default(),
            origin,
        })
    }

    /// Whether `label` is set to `"true"`.
    pub fn has_label(&self, label: &str) -> bool {
        self.labels.get(label).is_some_and(|value| value == "true")
    }
}

/// Why a policy file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A YAML document in it is not a manifest slo-guard reads.
    #[error("{path}: document {index}: {message}")]
    Document {
        /// The file.
        path: PathBuf,
        /// Which document, from 1.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// The files a path stands for: itself, or a directory's `.yaml`, `.yml` and `.json`
/// files, sorted (not recursive), as `kubectl apply -f` reads them.
pub fn manifest_files(path: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let file = entry?.path();
        let manifest = file
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| matches!(ext, "yaml" | "yml" | "json"));
        if manifest && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every ConfigMap in a file or, for a directory, in its `.yaml`, `.yml` and `.json`
/// files (sorted, not recursive). SLO specs are passed over (see [`read_sources`]); other
/// kinds of documents are errors, since a policy directory that holds something else is
/// almost certainly a mistake.
pub fn read_manifests(
    path: &Path,
    default_namespace: &str,
) -> Result<Vec<ConfigMapDocument>, SourceError> {
    Ok(read_sources(path, default_namespace)?.configmaps)
}

/// Reads the ConfigMaps and SLO specs in a file or a directory's manifest files.
pub fn read_sources(path: &Path, default_namespace: &str) -> Result<PolicySources, SourceError> {
    let files = manifest_files(path).map_err(|source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut sources = PolicySources::default();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| SourceError::Io {
            path: file.clone(),
            source,
        })?;
        sources.extend(parse_sources_text(&file, &text, default_namespace)?);
    }
    Ok(sources)
}

/// Reads the ConfigMaps in several files or directories.
pub fn load_directory(
    paths: &[PathBuf],
    default_namespace: &str,
) -> Result<Vec<ConfigMapDocument>, SourceError> {
    Ok(load_sources(paths, default_namespace)?.configmaps)
}

/// Reads the ConfigMaps and SLO specs in several files or directories.
pub fn load_sources(
    paths: &[PathBuf],
    default_namespace: &str,
) -> Result<PolicySources, SourceError> {
    let mut sources = PolicySources::default();
    for path in paths {
        sources.extend(read_sources(path, default_namespace)?);
    }
    Ok(sources)
}

/// The ConfigMaps in a manifest text; SLO specs are passed over.
pub fn parse_manifest_text(
    path: &Path,
    text: &str,
    default_namespace: &str,
) -> Result<Vec<ConfigMapDocument>, SourceError> {
    Ok(parse_sources_text(path, text, default_namespace)?.configmaps)
}

/// The ConfigMaps and SLO specs in a manifest text.
pub fn parse_sources_text(
    path: &Path,
    text: &str,
    default_namespace: &str,
) -> Result<PolicySources, SourceError> {
    let mut sources = PolicySources::default();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let error = |message: String| SourceError::Document {
            path: path.to_path_buf(),
            index: index + 1,
            message,
        };
        let value = serde_yaml::Value::deserialize(document).map_err(|e| error(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let origin = format!("{}#{}", path.display(), index + 1);
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        let (items, from_list) = match kind.as_str() {
            "List" | "ConfigMapList" => match value.get("items") {
                Some(serde_yaml::Value::Sequence(items)) => (items.clone(), true),
                _ => return Err(error(format!("{kind} has no items"))),
            },
            _ => (vec![value], false),
        };
        for item in items {
            if let Some(spec) = SloSpecDocument::recognize(&item, default_namespace, &origin)
                .map_err(|e| error(e.to_string()))?
            {
                sources.slo_specs.push(spec);
                continue;
            }
            match item
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
            {
                "ConfigMap" => {}
                // A list's items are ConfigMaps unless they say otherwise.
                "" if from_list => {}
                "" => return Err(error("document has no kind".to_string())),
                other => {
                    return Err(error(format!(
                        "expected a ConfigMap or an SLO spec (Sloth PrometheusServiceLevel, Pyrra ServiceLevelObjective, OpenSLO SLO or SLI), found kind {other}"
                    )));
                }
            }
            let configmap: ConfigMap =
                serde_yaml::from_value(item).map_err(|e| error(e.to_string()))?;
            sources.configmaps.push(
                ConfigMapDocument::from_configmap(configmap, default_namespace, origin.clone())
                    .map_err(error)?,
            );
        }
    }
    Ok(sources)
}
