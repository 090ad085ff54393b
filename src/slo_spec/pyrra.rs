//! Pyrra: `ServiceLevelObjective` (`pyrra.dev/v1alpha1`) with a ratio indicator.
//!
//! Pyrra's indicator names counters with matchers, not queries: `errors.metric:
//! http_requests_total{job="api",code=~"5.."}`. Its error ratio over a window is
//! `sum(rate(errors[w])) / sum(rate(total[w]))`, with no error series read as no errors
//! (`or vector(0)`). Its recording rules, labelled `slo="<name>"`, are
//! `<metric>:burnrate<w>` (the error ratio over `w`, not yet divided by the budget) for
//! the windows [`pyrra_windows`] gives, and `<metric>:increase<period>` (the counters'
//! increase over the period, grouped by the labels the errors select on), where
//! `<metric>` is the total counter's name without `_total` or `_count`.

use std::time::Duration;

use super::{MappedSlo, RecordedWindow, RecordingRules, RecordingTool, prometheus_duration_text};
use crate::policy::PromDuration;

/// A Pyrra metric: a name and its matchers, as written.
#[derive(Debug, Clone, PartialEq)]
struct Selector {
    name: String,
    /// Each matcher as written (`code=~"5.."`), with whether it is an equality.
    matchers: Vec<(String, bool)>,
}

impl Selector {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let name_len = text
            .bytes()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
            .count();
        let (name, rest) = text.split_at(name_len);
        if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
            return Err(format!(
                "{text:?} does not start with a metric name (Pyrra names a counter with matchers)"
            ));
        }
        let rest = rest.trim();
        let inner = if rest.is_empty() {
            ""
        } else {
            rest.strip_prefix('{')
                .and_then(|r| r.strip_suffix('}'))
                .ok_or_else(|| {
                    format!(
                        "{text:?} is not a metric selector such as requests_total{{job=\"api\"}}"
                    )
                })?
        };
        let mut matchers = Vec::new();
        for matcher in split_matchers(inner)? {
            let label_len = matcher
                .bytes()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                .count();
            let op = matcher[label_len..].trim_start();
            let equality = op.starts_with('=') && !op.starts_with("=~");
            if label_len == 0 || !(op.starts_with('=') || op.starts_with('!')) {
                return Err(format!("{text:?}: {matcher:?} is not a label matcher"));
            }
            matchers.push((matcher, equality));
        }
        Ok(Self {
            name: name.to_string(),
            matchers,
        })
    }

    fn text(&self) -> String {
        if self.matchers.is_empty() {
            return self.name.clone();
        }
        let matchers: Vec<&str> = self.matchers.iter().map(|(m, _)| m.as_str()).collect();
        format!("{}{{{}}}", self.name, matchers.join(","))
    }

    /// The matchers with `slo="<name>"` added, for a recorded series.
    fn recorded_matchers(&self, slo: &str, only_equalities: bool) -> String {
        let mut matchers: Vec<String> = self
            .matchers
            .iter()
            .filter(|(_, equality)| *equality || !only_equalities)
            .map(|(m, _)| m.clone())
            .collect();
        matchers.push(format!("slo={}", super::label_value(slo)));
        format!("{{{}}}", matchers.join(","))
    }
}

/// Splits `a="x,y",b=~"z"` at the commas outside quotes.
fn split_matchers(inner: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in inner.chars() {
        match quote {
            Some(q) => {
                current.push(c);
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' || c == '`' => {
                quote = Some(c);
                current.push(c);
            }
            None if c == ',' => {
                parts.push(std::mem::take(&mut current));
            }
            None => current.push(c),
        }
    }
    if quote.is_some() {
        return Err(format!("unterminated string in matchers {inner:?}"));
    }
    parts.push(current);
    Ok(parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect())
}

/// The burn-rate windows Pyrra records for an SLO period: its four alerts' long and
/// short windows, scaled from 1h/5m, 6h/30m, 1d/2h and 4d/6h at 28 days and rounded to
/// the minute (Pyrra's `Windows`).
pub fn pyrra_windows(period: Duration) -> Vec<Duration> {
    let nanos = period.as_nanos();
    let round_to_minute = |divisor: u128| {
        let minute = 60_000_000_000u128;
        let exact = nanos / divisor;
        let minutes = (exact + minute / 2) / minute;
        Duration::from_secs(u64::try_from(minutes * 60).unwrap_or(u64::MAX))
    };
    let mut windows: Vec<Duration> = [672, 8064, 112, 1344, 28, 336, 7]
        .into_iter()
        .map(round_to_minute)
        .filter(|w| !w.is_zero())
        .collect();
    windows.sort();
    windows.dedup();
    windows
}

/// Strips the suffixes Pyrra strips when it names a recording rule after a counter.
fn rule_base(metric: &str, also_bucket: bool) -> &str {
    let mut base = metric.strip_suffix("_total").unwrap_or(metric);
    base = base.strip_suffix("_count").unwrap_or(base);
    if also_bucket {
        base = base.strip_suffix("_bucket").unwrap_or(base);
    }
    base
}

/// Maps a Pyrra `ServiceLevelObjective`. `place` names it for messages.
pub fn map_pyrra(body: &serde_yaml::Value, place: &str) -> Result<MappedSlo, String> {
    let name = body
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(serde_yaml::Value::as_str)
        .ok_or("has no metadata.name")?;
    let spec = body.get("spec").ok_or("has no spec")?;
    let objective = match spec.get("target") {
        Some(serde_yaml::Value::String(text)) => text
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("spec.target {text:?} is not a number"))?,
        Some(value) => value
            .as_f64()
            .ok_or("spec.target is not a number such as \"99.9\"")?,
        None => return Err("has no spec.target".to_string()),
    };
    if !(objective.is_finite() && objective > 0.0 && objective < 100.0) {
        return Err(format!(
            "spec.target {objective} must be a percentage strictly between 0 and 100"
        ));
    }
    let window = spec
        .get("window")
        .and_then(serde_yaml::Value::as_str)
        .ok_or("has no spec.window")?;
    let period = PromDuration::parse(window).map_err(|e| format!("spec.window: {e}"))?;
    let indicator = spec.get("indicator").ok_or("has no spec.indicator")?;
    let Some(ratio) = indicator.get("ratio") else {
        let kinds: Vec<&str> = indicator
            .as_mapping()
            .map(|m| m.keys().filter_map(serde_yaml::Value::as_str).collect())
            .unwrap_or_default();
        return Err(format!(
            "has a {} indicator; slo-guard reads ratio indicators (errors and total)",
            if kinds.is_empty() {
                "missing".to_string()
            } else {
                kinds.join("/")
            }
        ));
    };
    let selector = |key: &str| {
        ratio
            .get(key)
            .and_then(|q| q.get("metric"))
            .and_then(serde_yaml::Value::as_str)
            .ok_or_else(|| format!("has no spec.indicator.ratio.{key}.metric"))
            .and_then(|text| {
                Selector::parse(text).map_err(|e| format!("spec.indicator.ratio.{key}.metric: {e}"))
            })
    };
    let errors = selector("errors")?;
    let total = selector("total")?;
    let grouped = ratio
        .get("grouping")
        .and_then(serde_yaml::Value::as_sequence)
        .is_some_and(|g| !g.is_empty());
    let recorded = (!grouped).then(|| pyrra_recording_rules(name, &errors, &total, &period));
    Ok(MappedSlo {
        objective,
        period,
        // No error series at all is no errors, as Pyrra reads it; no total is no data.
        errors: format!(
            "(sum(rate({}[{{{{window}}}}])) or vector(0))",
            errors.text()
        ),
        total: format!("sum(rate({}[{{{{window}}}}]))", total.text()),
        recorded,
        origin: format!("Pyrra ServiceLevelObjective {place}"),
    })
}

fn pyrra_recording_rules(
    name: &str,
    errors: &Selector,
    total: &Selector,
    period: &PromDuration,
) -> RecordingRules {
    let total_base = rule_base(&total.name, false);
    let mut windows: Vec<RecordedWindow> = pyrra_windows(period.duration())
        .into_iter()
        .map(|window| {
            let rule = format!("{total_base}:burnrate{}", prometheus_duration_text(window));
            RecordedWindow {
                window,
                query: format!("sum({rule}{})", total.recorded_matchers(name, true)),
                rule,
                caveat: None,
            }
        })
        .collect();
    let period_text = prometheus_duration_text(period.duration());
    let errors_rule = format!("{}:increase{period_text}", rule_base(&errors.name, true));
    let total_rule = format!("{}:increase{period_text}", rule_base(&total.name, true));
    windows.retain(|w| w.window != period.duration());
    windows.push(RecordedWindow {
        window: period.duration(),
        query: format!(
            "(sum({errors_rule}{}) or vector(0)) / sum({total_rule}{})",
            errors.recorded_matchers(name, false),
            total.recorded_matchers(name, false)
        ),
        rule: if errors_rule == total_rule {
            total_rule
        } else {
            format!("{errors_rule} / {total_rule}")
        },
        caveat: None,
    });
    RecordingRules {
        tool: RecordingTool::Pyrra,
        windows,
    }
}
