//! SLOs defined where platform teams already define them: Sloth's
//! `PrometheusServiceLevel` (and its `prometheus/v1` spec file), Pyrra's
//! `ServiceLevelObjective` and OpenSLO v1's `SLO` with an `SLI` ratio metric. A policy
//! names one with `slo.source`; the mapping here turns it into the objective, the period,
//! the `{{window}}` queries slo-guard fills in, and the tool's recording rules where it
//! has them. Every mapping is a pure function of the documents.

mod openslo;
mod pyrra;
mod sloth;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::PromDuration;

pub use openslo::map_openslo;
pub use pyrra::{map_pyrra, pyrra_windows};
pub use sloth::{map_sloth, sloth_windows};

/// The kinds of SLO spec a policy may name in `slo.source.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
pub enum SloSpecKind {
    /// Sloth, `sloth.slok.dev/v1` (or a `prometheus/v1` spec file).
    PrometheusServiceLevel,
    /// Pyrra, `pyrra.dev/v1alpha1`.
    ServiceLevelObjective,
    /// OpenSLO, `openslo/v1`.
    #[serde(rename = "SLO")]
    Slo,
}

impl SloSpecKind {
    /// The kind as the spec writes it in `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            SloSpecKind::PrometheusServiceLevel => "PrometheusServiceLevel",
            SloSpecKind::ServiceLevelObjective => "ServiceLevelObjective",
            SloSpecKind::Slo => "SLO",
        }
    }

    /// The tool that defines this kind, for messages.
    pub fn tool(self) -> &'static str {
        match self {
            SloSpecKind::PrometheusServiceLevel => "Sloth",
            SloSpecKind::ServiceLevelObjective => "Pyrra",
            SloSpecKind::Slo => "OpenSLO",
        }
    }
}

impl fmt::Display for SloSpecKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds a spec document may be, including OpenSLO's `SLI`, which an `SLO` refers to
/// by name and no policy names directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DocumentKind {
    /// A spec a policy may name.
    Spec(SloSpecKind),
    /// An OpenSLO `SLI`, which an OpenSLO `SLO` refers to.
    OpenSloSli,
}

impl DocumentKind {
    /// The kind as the document writes it in `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Spec(kind) => kind.as_str(),
            DocumentKind::OpenSloSli => "SLI",
        }
    }
}

/// One SLO spec document as read from a file or the cluster, not yet mapped: mapping
/// happens when a policy names it, so that a spec no policy uses costs nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct SloSpecDocument {
    /// What kind of spec the document is.
    pub kind: DocumentKind,
    /// `None` for a Sloth `prometheus/v1` file, which has no namespace: a policy in any
    /// namespace may name it.
    pub namespace: Option<String>,
    /// Its `metadata.name`, or a Sloth spec file's `service`.
    pub name: String,
    /// The whole document, mapped when a policy names it.
    pub body: serde_yaml::Value,
    /// Where it was read from: a file path with the document's index, or `cluster`.
    pub origin: String,
}

/// Identifies a spec document in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecKey {
    /// The document's kind.
    pub kind: DocumentKind,
    /// Its namespace; `None` for a Sloth `prometheus/v1` file.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl fmt::Display for SpecKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.kind.as_str(), self.name),
            None => write!(
                f,
                "{} {} (prometheus/v1 file)",
                self.kind.as_str(),
                self.name
            ),
        }
    }
}

impl SloSpecDocument {
    /// The key the catalog files the document under.
    pub fn key(&self) -> SpecKey {
        SpecKey {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Recognizes a manifest as an SLO spec: `Ok(None)` when it is some other kind of
    /// document. `default_namespace` stands in for a missing `metadata.namespace`, as
    /// kubectl uses its context's.
    pub fn recognize(
        value: &serde_yaml::Value,
        default_namespace: &str,
        origin: &str,
    ) -> Result<Option<Self>, SpecError> {
        let text = |key: &str| value.get(key).and_then(serde_yaml::Value::as_str);
        let invalid = |message: String| SpecError::Invalid {
            spec: origin.to_string(),
            message,
        };
        if text("version") == Some("prometheus/v1") && text("kind").is_none() {
            let service = text("service")
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| invalid("a prometheus/v1 spec file needs a `service`".into()))?;
            return Ok(Some(Self {
                kind: DocumentKind::Spec(SloSpecKind::PrometheusServiceLevel),
                namespace: None,
                name: service.to_string(),
                body: value.clone(),
                origin: origin.to_string(),
            }));
        }
        let api_version = text("apiVersion").unwrap_or_default();
        let group = api_version.split('/').next().unwrap_or_default();
        let kind = match (group, text("kind").unwrap_or_default()) {
            ("sloth.slok.dev", "PrometheusServiceLevel") => {
                DocumentKind::Spec(SloSpecKind::PrometheusServiceLevel)
            }
            ("pyrra.dev", "ServiceLevelObjective") => {
                DocumentKind::Spec(SloSpecKind::ServiceLevelObjective)
            }
            ("openslo", "SLO") => DocumentKind::Spec(SloSpecKind::Slo),
            ("openslo", "SLI") => DocumentKind::OpenSloSli,
            _ => return Ok(None),
        };
        let supported = match kind {
            DocumentKind::Spec(SloSpecKind::PrometheusServiceLevel) => "sloth.slok.dev/v1",
            DocumentKind::Spec(SloSpecKind::ServiceLevelObjective) => "pyrra.dev/v1alpha1",
            DocumentKind::Spec(SloSpecKind::Slo) | DocumentKind::OpenSloSli => "openslo/v1",
        };
        if api_version != supported {
            return Err(invalid(format!(
                "{} {api_version} is not supported: slo-guard reads {supported}",
                kind.as_str()
            )));
        }
        let metadata = value.get("metadata");
        let name = metadata
            .and_then(|m| m.get("name"))
            .and_then(serde_yaml::Value::as_str)
            .filter(|name| !name.is_empty())
            .ok_or_else(|| invalid(format!("{} has no metadata.name", kind.as_str())))?;
        let namespace = metadata
            .and_then(|m| m.get("namespace"))
            .and_then(serde_yaml::Value::as_str)
            .filter(|namespace| !namespace.is_empty())
            .unwrap_or(default_namespace);
        Ok(Some(Self {
            kind,
            namespace: Some(namespace.to_string()),
            name: name.to_string(),
            body: value.clone(),
            origin: origin.to_string(),
        }))
    }
}

/// What a policy's `slo.source` names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceRef {
    /// The kind of spec.
    pub kind: SloSpecKind,
    /// Its name, in the policy's namespace (or a Sloth spec file's `service`).
    pub name: String,
    /// Which SLO of a Sloth spec (which lists several); for OpenSLO, which objective
    /// (by `displayName`) when the SLO has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<String>,
}

/// An SLO read from a spec: what a policy's `slo` section would otherwise repeat.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedSlo {
    /// Percent, as in a policy: 99.9.
    pub objective: f64,
    /// The spec's period; for Sloth, whose specs carry none, the one its generator
    /// uses (the policy's `slo.period`, 30d by default as `--default-slo-period`).
    pub period: PromDuration,
    /// slo-guard templates, with `{{window}}` where the range goes.
    pub errors: String,
    /// The query of all requests, with `{{window}}` where the range goes.
    pub total: String,
    /// The tool's recording rules, when it writes them for this SLO.
    pub recorded: Option<RecordingRules>,
    /// "Sloth PrometheusServiceLevel payments/checkout, SLO requests-availability".
    pub origin: String,
}

/// The tool whose recording rules a figure reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingTool {
    /// Sloth's `slo:sli_error:ratio_rate<window>` rules.
    Sloth,
    /// Pyrra's burn-rate rules.
    Pyrra,
}

impl RecordingTool {
    /// The tool's name, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingTool::Sloth => "Sloth",
            RecordingTool::Pyrra => "Pyrra",
        }
    }
}

/// A tool's recording rules for one SLO: one query per window it records, each giving
/// the error ratio over that window directly.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingRules {
    /// The tool that writes the rules.
    pub tool: RecordingTool,
    /// The windows the rules cover, each with its query; the period's too when the
    /// tool records it.
    pub windows: Vec<RecordedWindow>,
}

/// One recorded window of an SLO: where the error ratio over it is already computed.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedWindow {
    /// The window the rule covers.
    pub window: Duration,
    /// PromQL giving the error ratio (errors over total) for the window.
    pub query: String,
    /// The recording rule's name, for messages: `slo:sli_error:ratio_rate1h`.
    pub rule: String,
    /// What the figure means when that is not plainly errors over total in the window.
    pub caveat: Option<&'static str>,
}

impl RecordingRules {
    /// The rule recording `window`, if the tool records it.
    pub fn window(&self, window: Duration) -> Option<&RecordedWindow> {
        self.windows.iter().find(|w| w.window == window)
    }
}

/// Why a spec could not be read, or a policy's `slo.source` not resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A document that is not a spec slo-guard can read.
    #[error("{spec}: {message}")]
    Invalid {
        /// Where the document came from.
        spec: String,
        /// What is wrong with it.
        message: String,
    },
    /// A policy names a spec the catalog does not hold.
    #[error("{wanted} not found{}", candidates_text(.candidates))]
    NotFound {
        /// The spec the policy names.
        wanted: String,
        /// The specs of that kind the policy could name instead.
        candidates: Vec<String>,
    },
    /// A policy names a spec whose latest version the catalog rejected.
    #[error("{wanted} was rejected: {error}")]
    Rejected {
        /// The spec the policy names.
        wanted: String,
        /// Why the catalog rejected it.
        error: String,
    },
}

fn candidates_text(candidates: &[String]) -> String {
    if candidates.is_empty() {
        " (slo-guard has read no spec of that kind in that namespace)".to_string()
    } else {
        format!(" (known: {})", candidates.join(", "))
    }
}

/// The SLO spec documents slo-guard knows, by kind, namespace and name, and the
/// latest error of each document that was rejected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SloSpecCatalog {
    documents: BTreeMap<SpecKey, SloSpecDocument>,
    errors: BTreeMap<SpecKey, String>,
}

/// The outcome of adding one spec document to a catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogEvent {
    /// The document mapped and is in force.
    Loaded(SpecKey),
    /// The document does not map; `kept_previous` says whether an older good version
    /// stays in force.
    Rejected {
        /// The document.
        key: SpecKey,
        /// Why it does not map.
        error: String,
        /// Whether an older good version of it stays in force.
        kept_previous: bool,
    },
}

impl SloSpecCatalog {
    /// Whether the catalog holds no document and no rejection.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty() && self.errors.is_empty()
    }

    /// How many documents are in force.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    /// Adds or replaces a document. One whose SLOs do not all map is rejected, and the
    /// previous good version, if any, stays.
    pub fn insert(&mut self, document: SloSpecDocument) -> CatalogEvent {
        let key = document.key();
        match check_document(&document, self) {
            Ok(()) => {
                self.errors.remove(&key);
                self.documents.insert(key.clone(), document);
                CatalogEvent::Loaded(key)
            }
            Err(error) => {
                let error = error.to_string();
                self.errors.insert(key.clone(), error.clone());
                CatalogEvent::Rejected {
                    kept_previous: self.documents.contains_key(&key),
                    key,
                    error,
                }
            }
        }
    }

    /// Forgets a document and its rejection; whether a document was in force.
    pub fn remove(&mut self, key: &SpecKey) -> bool {
        self.errors.remove(key);
        self.documents.remove(key).is_some()
    }

    /// The documents in force.
    pub fn keys(&self) -> impl Iterator<Item = &SpecKey> {
        self.documents.keys()
    }

    /// The rejected documents, each with its latest error.
    pub fn errors(&self) -> impl Iterator<Item = (&SpecKey, &String)> {
        self.errors.iter()
    }

    /// The document a policy in `namespace` names: one in its namespace, or a Sloth
    /// `prometheus/v1` file (which has none).
    fn find(&self, kind: DocumentKind, namespace: &str, name: &str) -> Option<&SloSpecDocument> {
        let key = |namespace: Option<&str>| SpecKey {
            kind,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        };
        self.documents
            .get(&key(Some(namespace)))
            .or_else(|| self.documents.get(&key(None)))
    }

    /// Maps the SLO that `source` names for a policy in `namespace`. `period` is the
    /// policy's `slo.period`, which only a Sloth spec (that carries none) may take.
    pub fn resolve(
        &self,
        source: &SourceRef,
        namespace: &str,
        period: Option<&PromDuration>,
    ) -> Result<MappedSlo, SpecError> {
        let kind = DocumentKind::Spec(source.kind);
        let wanted = format!(
            "{} {} {namespace}/{}",
            source.kind.tool(),
            source.kind,
            source.name
        );
        let Some(document) = self.find(kind, namespace, &source.name) else {
            let rejected = self.errors.iter().find(|(key, _)| {
                key.kind == kind
                    && key.name == source.name
                    && key.namespace.as_deref().is_none_or(|ns| ns == namespace)
            });
            if let Some((_, error)) = rejected {
                return Err(SpecError::Rejected {
                    wanted,
                    error: error.clone(),
                });
            }
            let candidates = self
                .documents
                .keys()
                .filter(|key| {
                    key.kind == kind && key.namespace.as_deref().is_none_or(|ns| ns == namespace)
                })
                .map(|key| key.name.clone())
                .collect();
            return Err(SpecError::NotFound { wanted, candidates });
        };
        let mapped = map_document(document, source.slo.as_deref(), period, self)?;
        if let Some(period) = period
            && source.kind != SloSpecKind::PrometheusServiceLevel
        {
            return Err(SpecError::Invalid {
                spec: format!("{} ({})", document.key(), document.origin),
                message: format!(
                    "the policy sets slo.period {period}, but the period comes from the spec ({}): only a Sloth spec, which carries none, takes slo.period",
                    mapped.period
                ),
            });
        }
        Ok(mapped)
    }
}

/// Sloth's generator's default period (`--default-slo-period`).
pub fn sloth_default_period() -> PromDuration {
    PromDuration::parse("30d").expect("constant duration is valid")
}

/// Maps one SLO of a document (`slo` picks it when the document holds several).
fn map_document(
    document: &SloSpecDocument,
    slo: Option<&str>,
    period: Option<&PromDuration>,
    catalog: &SloSpecCatalog,
) -> Result<MappedSlo, SpecError> {
    let invalid = |message: String| SpecError::Invalid {
        spec: format!("{} ({})", document.key(), document.origin),
        message,
    };
    let place = match &document.namespace {
        Some(namespace) => format!("{namespace}/{}", document.name),
        None => document.name.clone(),
    };
    match document.kind {
        DocumentKind::Spec(SloSpecKind::PrometheusServiceLevel) => {
            let period = period.cloned().unwrap_or_else(sloth_default_period);
            map_sloth(&document.body, &place, slo, &period).map_err(invalid)
        }
        DocumentKind::Spec(SloSpecKind::ServiceLevelObjective) => {
            if let Some(slo) = slo {
                return Err(invalid(format!(
                    "slo.source.slo {slo:?} is for Sloth specs, which list several SLOs; a Pyrra ServiceLevelObjective is one"
                )));
            }
            map_pyrra(&document.body, &place).map_err(invalid)
        }
        DocumentKind::Spec(SloSpecKind::Slo) => {
            let namespace = document.namespace.as_deref().unwrap_or_default();
            let sli = |name: &str| {
                catalog
                    .find(DocumentKind::OpenSloSli, namespace, name)
                    .map(|document| &document.body)
            };
            map_openslo(&document.body, &place, slo, &sli).map_err(invalid)
        }
        DocumentKind::OpenSloSli => Err(invalid(
            "an OpenSLO SLI is named by an SLO's indicatorRef, not by a policy".to_string(),
        )),
    }
}

/// Checks that every SLO of a document maps, for `lint` and for keeping the last good
/// version of a spec. An OpenSLO SLO whose SLI is in a document not read yet is judged
/// when a policy names it.
pub fn check_document(
    document: &SloSpecDocument,
    catalog: &SloSpecCatalog,
) -> Result<(), SpecError> {
    let invalid = |message: String| SpecError::Invalid {
        spec: format!("{} ({})", document.key(), document.origin),
        message,
    };
    match document.kind {
        DocumentKind::Spec(SloSpecKind::PrometheusServiceLevel) => {
            // An SLO slo-guard cannot read (a raw or plugin SLI) is valid Sloth: it is
            // an error only for a policy that names it.
            let names = sloth::event_slo_names(&document.body);
            if sloth::slo_names(&document.body).is_empty() {
                return map_document(document, None, None, catalog).map(|_| ());
            }
            for name in names {
                map_document(document, Some(&name), None, catalog)?;
            }
            Ok(())
        }
        DocumentKind::Spec(SloSpecKind::Slo) => openslo::check_slo(&document.body).map_err(invalid),
        DocumentKind::Spec(SloSpecKind::ServiceLevelObjective) => {
            map_document(document, None, None, catalog).map(|_| ())
        }
        DocumentKind::OpenSloSli => openslo::check_sli(&document.body).map_err(invalid),
    }
}

/// A duration as Prometheus prints it (`model.Duration.String()`), which is how Sloth
/// and Pyrra name their rules: `5m`, `1h`, `1d`, `30d`, `4w` (28d), `1h4m`. Years and
/// weeks are used only when they divide the duration exactly.
pub fn prometheus_duration_text(duration: Duration) -> String {
    let mut ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut text = String::new();
    let units: [(&str, u128, bool); 7] = [
        ("y", 365 * 86_400_000, true),
        ("w", 7 * 86_400_000, true),
        ("d", 86_400_000, false),
        ("h", 3_600_000, false),
        ("m", 60_000, false),
        ("s", 1_000, false),
        ("ms", 1, false),
    ];
    for (unit, size, exact) in units {
        if exact && ms % size != 0 {
            continue;
        }
        let count = ms / size;
        if count > 0 {
            text.push_str(&format!("{count}{unit}"));
            ms -= count * size;
        }
    }
    text
}

/// Turns a tool's window placeholder (Sloth's `{{.window}}`, `{{ .window }}`) into
/// slo-guard's `{{window}}`. Any other Go template action is an error: slo-guard fills
/// in only the window.
pub fn convert_window_template(query: &str) -> Result<String, String> {
    let mut converted = String::with_capacity(query.len());
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        converted.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ in query {query:?}"))?;
        let action = after[..end].trim();
        if action == ".window" || action == "window" {
            converted.push_str("{{window}}");
        } else {
            return Err(format!(
                "query {query:?} uses the template action {{{{{action}}}}}: only {{{{.window}}}} is filled in"
            ));
        }
        rest = &after[end + 2..];
    }
    converted.push_str(rest);
    Ok(converted)
}

/// Escapes a value for a PromQL double-quoted label matcher.
pub(crate) fn label_value(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests;
