//! Canned Prometheus answers for `slo-guard check --prometheus-answers FILE`: offline
//! policy tests, like `kyverno test`'s mocked responses. The file maps each PromQL query,
//! exactly as slo-guard sends it, to its answer:
//!
//! ```yaml
//! 'sum(rate(http_requests_total{job="checkout",code=~"5.."}[30d]))': 0.0105
//! 'sum(rate(http_requests_total{job="checkout"}[30d]))': 10
//! 'sum(rate(http_requests_total{job="checkout"}[5m] offset 1w))': NaN    # or .nan, "+Inf"
//! 'sum(rate(http_requests_total{job="checkout",code=~"5.."}[5m]))': []   # an empty result
//! 'sum(rate(http_requests_total{job="checkout"}[5m]))': {error: "connection refused"}
//! ```
//!
//! A query without an answer makes the policy's data unavailable, and the message names
//! the query, so the file can be completed by copying it. The freshness probe
//! (`max(timestamp(...))`) is optional: without it, staleness is not checked.

use std::collections::BTreeMap;
use std::path::Path;

/// One canned answer.
#[derive(Debug, Clone, PartialEq)]
pub enum CannedAnswer {
    /// `None` is an empty result.
    Value(Option<f64>),
    /// The query fails with this cause.
    Error(String),
}

/// Why an answers file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CannedError {
    /// The file cannot be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        cause: String,
    },
    /// The file is not a YAML map of query to answer.
    #[error("{path}: not a map of PromQL query to answer: {cause}")]
    Parse {
        /// The file.
        path: String,
        /// The YAML error.
        cause: String,
    },
    /// One answer is none of the forms an answer may take.
    #[error(
        "{path}: answer to {query:?} is {found}; expected a number, NaN, +Inf, [] (empty) or {{error: cause}}"
    )]
    Answer {
        /// The file.
        path: String,
        /// The query the answer is for.
        query: String,
        /// What the file gives instead.
        found: String,
    },
}

/// The answers of one file, by query: an offline stand-in for Prometheus.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CannedAnswers {
    answers: BTreeMap<String, CannedAnswer>,
}

impl CannedAnswers {
    /// Reads and parses the answers file at `path`.
    pub fn load(path: &Path) -> Result<Self, CannedError> {
        let text = std::fs::read_to_string(path).map_err(|e| CannedError::Read {
            path: path.display().to_string(),
            cause: e.to_string(),
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses an answers file's `text`; `name` is what errors call it.
    pub fn parse(name: &str, text: &str) -> Result<Self, CannedError> {
        let raw: BTreeMap<String, serde_yaml::Value> =
            serde_yaml::from_str(text).map_err(|e| CannedError::Parse {
                path: name.to_string(),
                cause: e.to_string(),
            })?;
        let mut answers = BTreeMap::new();
        for (query, value) in raw {
            let bad = |found: &str| CannedError::Answer {
                path: name.to_string(),
                query: query.clone(),
                found: found.to_string(),
            };
            use serde_yaml::Value;
            let answer = match &value {
                Value::Null => CannedAnswer::Value(None),
                Value::Sequence(items) if items.is_empty() => CannedAnswer::Value(None),
                Value::Number(number) => {
                    CannedAnswer::Value(Some(number.as_f64().ok_or_else(|| bad("not a float"))?))
                }
                Value::String(text) => CannedAnswer::Value(Some(
                    parse_float(text).ok_or_else(|| bad(&format!("{text:?}")))?,
                )),
                Value::Mapping(map) => match map.get("error") {
                    Some(Value::String(cause)) if map.len() == 1 => {
                        CannedAnswer::Error(cause.clone())
                    }
                    _ => return Err(bad("a map other than {error: cause}")),
                },
                _ => return Err(bad("a list or another value")),
            };
            answers.insert(query.trim().to_string(), answer);
        }
        Ok(Self { answers })
    }

    /// The answer to `query`, compared without surrounding whitespace.
    pub fn get(&self, query: &str) -> Option<&CannedAnswer> {
        self.answers.get(query.trim())
    }
}

/// Prometheus's own float spellings: `NaN`, `+Inf`, `-Inf`, and plain numbers.
fn parse_float(text: &str) -> Option<f64> {
    match text.trim() {
        "NaN" | "nan" => Some(f64::NAN),
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_no_data_and_errors() {
        let answers = CannedAnswers::parse(
            "answers.yaml",
            "'a': 0.5\n'b': NaN\n'c': .inf\n'd': []\n'e': {error: connection refused}\n'f': \"-Inf\"\n'g': ~\n",
        )
        .unwrap();
        assert_eq!(answers.get("a"), Some(&CannedAnswer::Value(Some(0.5))));
        assert!(matches!(answers.get("b"), Some(CannedAnswer::Value(Some(v))) if v.is_nan()));
        assert_eq!(
            answers.get("c"),
            Some(&CannedAnswer::Value(Some(f64::INFINITY)))
        );
        assert_eq!(answers.get("d"), Some(&CannedAnswer::Value(None)));
        assert_eq!(
            answers.get("e"),
            Some(&CannedAnswer::Error("connection refused".into()))
        );
        assert_eq!(
            answers.get("f"),
            Some(&CannedAnswer::Value(Some(f64::NEG_INFINITY)))
        );
        assert_eq!(answers.get("g"), Some(&CannedAnswer::Value(None)));
        assert_eq!(answers.get("missing"), None);
    }

    #[test]
    fn rejects_answers_it_cannot_read() {
        let error = CannedAnswers::parse("f.yaml", "'q': lots\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "f.yaml: answer to \"q\" is \"lots\"; expected a number, NaN, +Inf, [] (empty) or {error: cause}"
        );
        assert!(CannedAnswers::parse("f.yaml", "- a\n- b\n").is_err());
        assert!(CannedAnswers::parse("f.yaml", "'q': [1, 2]\n").is_err());
    }
}
