//! What to ask Prometheus for one policy and one workload, and what the answers are.
//! Pure: the guard runs the plan at the edge and hands the readings to `decide`.

use std::collections::BTreeMap;
use std::fmt;

use crate::admission::Target;
use crate::policy::{PolicyRef, PolicySpec};

/// Which figure a query feeds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QueryRole {
    /// `slo.errors` over a window (the period, or a burn-rate window).
    Errors(String),
    /// `slo.total` over a window.
    Total(String),
    /// The error ratio over a window, read from the recording rule of the tool whose
    /// spec `slo.source` names (Sloth, Pyrra).
    Recorded(String),
    /// `traffic.current`.
    Current,
    /// `traffic.baseline`.
    Baseline,
    /// `max(timestamp(<selector>))`: when the newest sample behind the figures was taken.
    Freshness,
}

impl fmt::Display for QueryRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryRole::Errors(window) => write!(f, "errors over {window}"),
            QueryRole::Total(window) => write!(f, "total over {window}"),
            QueryRole::Recorded(window) => write!(f, "recorded error ratio over {window}"),
            QueryRole::Current => f.write_str("current traffic"),
            QueryRole::Baseline => f.write_str("baseline traffic"),
            QueryRole::Freshness => f.write_str("newest sample"),
        }
    }
}

/// How much of the SLO gate a change goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateScope {
    /// Rollouts (and creates when `slo.gateCreate`): budget, burn rates and spikes.
    Full,
    /// Scale-downs: burn rates and spikes only. The budget says nothing about capacity.
    ScaleDown,
    /// Not a gate: only the error budget left (and the freshness probe), for an agent
    /// change that no gate covers but whose tier an `autonomy` rule sets by `budgetBelow`.
    BudgetOnly,
}

/// The queries one policy needs for one change. Templates are filled in here, so the
/// strings are exactly what Prometheus receives (and what canned answers are keyed by).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPlan {
    /// The policy whose figures these are.
    pub policy: PolicyRef,
    /// Each query, by the figure it gives, as Prometheus receives it.
    pub queries: Vec<(QueryRole, String)>,
    /// For a window read from a recording rule: the spec's own queries, asked only when
    /// the rule has no series (the tool's rules are not loaded in this Prometheus).
    pub fallbacks: Vec<Fallback>,
}

/// The raw queries standing in for one window's recording rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    /// The window the recording rule covers, as the policy writes it.
    pub window: String,
    /// The raw queries, by the figure each gives.
    pub queries: Vec<(QueryRole, String)>,
}

impl QueryPlan {
    /// The fallback queries that `readings` call for: those of each window whose
    /// recording rule returned no series, less any already answered.
    pub fn fallback_queries(&self, readings: &Readings) -> Vec<(QueryRole, String)> {
        let mut queries: Vec<(QueryRole, String)> = Vec::new();
        for fallback in &self.fallbacks {
            if readings.get(&QueryRole::Recorded(fallback.window.clone()))
                != Some(&Reading::NoData(NoData::Empty))
            {
                continue;
            }
            for (role, query) in &fallback.queries {
                if !readings.contains_key(role) && !queries.iter().any(|(r, _)| r == role) {
                    queries.push((role.clone(), query.clone()));
                }
            }
        }
        queries
    }
}

impl QueryPlan {
    /// The plan for `spec` judging `target`. `{{window}}`, `{{namespace}}` and `{{name}}`
    /// are substituted; a policy in slo-guard's namespace can thus cover many workloads.
    pub fn new(policy: &PolicyRef, spec: &PolicySpec, target: &Target, scope: GateScope) -> Self {
        let mut queries = Vec::new();
        let mut fallbacks: Vec<Fallback> = Vec::new();
        let mut push = |role: QueryRole, query: String| {
            if !queries.iter().any(|(r, _)| r == &role) {
                queries.push((role, query));
            }
        };
        // An unresolved source has no queries yet; the store never publishes such a
        // policy, and the gate reports it as no data if one gets through.
        if let Some(slo) = spec.slo.as_ref().filter(|slo| !slo.awaits_source()) {
            let mut windows: Vec<&str> = Vec::new();
            if scope != GateScope::ScaleDown {
                windows.push(slo.period.as_str());
            }
            // The window whose total stands for the request rate: read raw, since
            // recording rules give ratios, not rates.
            let mut rate_window = None;
            if scope != GateScope::BudgetOnly {
                for row in &slo.burn_rate {
                    windows.push(row.long.as_str());
                    windows.push(row.short.as_str());
                }
                if spec.traffic.is_none() && slo.min_request_rate.is_some() {
                    windows.push(request_rate_window(spec));
                    rate_window = Some(request_rate_window(spec));
                }
            }
            let recorded = slo
                .resolved
                .as_ref()
                .and_then(|resolved| resolved.recorded.as_ref());
            for window in windows {
                let raw = [
                    (
                        QueryRole::Errors(window.to_string()),
                        fill(&slo.errors, Some(window), target),
                    ),
                    (
                        QueryRole::Total(window.to_string()),
                        fill(&slo.total, Some(window), target),
                    ),
                ];
                let rule = recorded.and_then(|rules| {
                    let duration = crate::policy::PromDuration::parse(window).ok()?;
                    rules.window(duration.duration())
                });
                match rule {
                    Some(rule) => {
                        push(QueryRole::Recorded(window.to_string()), rule.query.clone());
                        if rate_window == Some(window) {
                            let [_, total] = &raw;
                            push(total.0.clone(), total.1.clone());
                        }
                        if !fallbacks.iter().any(|f| f.window == window) {
                            fallbacks.push(Fallback {
                                window: window.to_string(),
                                queries: raw.to_vec(),
                            });
                        }
                    }
                    None => {
                        for (role, query) in raw {
                            push(role, query);
                        }
                    }
                }
            }
        }
        if let Some(traffic) = spec
            .traffic
            .as_ref()
            .filter(|_| scope != GateScope::BudgetOnly)
        {
            push(QueryRole::Current, fill(&traffic.current, None, target));
            push(QueryRole::Baseline, fill(&traffic.baseline, None, target));
        }
        let probe_source = spec
            .slo
            .as_ref()
            .filter(|slo| !slo.awaits_source())
            .map(|slo| fill(&slo.total, Some("1m"), target))
            .or_else(|| {
                spec.traffic
                    .as_ref()
                    .map(|t| fill(&t.current, None, target))
            });
        if let Some(selector) = probe_source.as_deref().and_then(first_range_selector) {
            push(QueryRole::Freshness, format!("max(timestamp({selector}))"));
        }
        Self {
            policy: policy.clone(),
            queries,
            fallbacks,
        }
    }
}

/// The window whose `total` stands for the request rate when a policy has no `traffic`
/// section: the shortest burn-rate window, or 5m.
pub fn request_rate_window(spec: &PolicySpec) -> &str {
    spec.slo
        .as_ref()
        .and_then(|slo| {
            slo.burn_rate
                .iter()
                .map(|row| &row.short)
                .min_by_key(|d| d.duration())
        })
        .map(|d| d.as_str())
        .unwrap_or("5m")
}

/// Fills a query template. Namespace and name are DNS labels in practice; they are
/// escaped anyway, since they are spliced into PromQL string literals.
pub fn fill(template: &str, window: Option<&str>, target: &Target) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut text = template
        .replace("{{namespace}}", &escape(&target.namespace))
        .replace("{{name}}", &escape(&target.name));
    if let Some(window) = window {
        text = text.replace("{{window}}", window);
    }
    text.trim().to_string()
}

/// The first vector selector in `query` that is used as a range (`x{...}[5m]`), as text.
/// It is the series the figures are computed from, so the age of its newest sample is
/// the age of the data. `None` when there is no plain one (a subquery, say).
pub fn first_range_selector(query: &str) -> Option<String> {
    let bytes = query.as_bytes();
    let mut i = 0;
    // Start of the identifier or `{` that may begin a selector, outside strings.
    let mut candidate: Option<usize> = None;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i = skip_string(bytes, i)?;
                continue;
            }
            b'{' => {
                let start = candidate.unwrap_or(i);
                let end = matching_brace(bytes, i)?;
                let after = skip_spaces(bytes, end + 1);
                if bytes.get(after) == Some(&b'[') {
                    return Some(query[start..=end].to_string());
                }
                candidate = None;
                i = end + 1;
                continue;
            }
            b'[' => {
                if let Some(start) = candidate {
                    return Some(query[start..i].trim_end().to_string());
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
                {
                    i += 1;
                }
                let after = skip_spaces(bytes, i);
                // A function, an aggregation or a keyword followed by its arguments.
                let word = &query[start..i];
                candidate = match bytes.get(after) {
                    Some(b'(') => None,
                    _ if is_keyword(word) => None,
                    _ => Some(start),
                };
                i = after;
                continue;
            }
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => candidate = None,
        }
        i += 1;
    }
    None
}

fn is_keyword(word: &str) -> bool {
    matches!(
        word.to_ascii_lowercase().as_str(),
        "by" | "without"
            | "on"
            | "ignoring"
            | "group_left"
            | "group_right"
            | "offset"
            | "bool"
            | "and"
            | "or"
            | "unless"
    )
}

fn skip_spaces(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Index just past the string literal starting at `start`.
fn skip_string(bytes: &[u8], start: usize) -> Option<usize> {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote != b'`' => i += 2,
            c if c == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Index of the `}` closing the `{` at `open`, skipping strings.
fn matching_brace(bytes: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' | b'`' => {
                i = skip_string(bytes, i)?;
                continue;
            }
            b'}' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Why a query gave no number. NaN, ±Inf and an empty result are never read as zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoData {
    /// The query matched no series.
    Empty,
    /// The value was NaN, as 0/0 gives when a service had no traffic.
    NaN,
    /// The value was infinite.
    Inf,
}

impl fmt::Display for NoData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoData::Empty => "no series",
            NoData::NaN => "NaN",
            NoData::Inf => "Inf",
        })
    }
}

/// One answer: a finite number, or no data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// A finite number.
    Value(f64),
    /// No number, and why.
    NoData(NoData),
}

impl Reading {
    /// `None` is an empty result. Non-finite values are no data.
    pub fn from_value(value: Option<f64>) -> Self {
        match value {
            None => Reading::NoData(NoData::Empty),
            Some(v) if v.is_nan() => Reading::NoData(NoData::NaN),
            Some(v) if v.is_infinite() => Reading::NoData(NoData::Inf),
            Some(v) => Reading::Value(v),
        }
    }

    /// The number, if there is one.
    pub fn value(self) -> Option<f64> {
        match self {
            Reading::Value(v) => Some(v),
            Reading::NoData(_) => None,
        }
    }
}

/// The answers to one plan, keyed by role.
pub type Readings = BTreeMap<QueryRole, Reading>;

/// What the edge found out for one policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Every query answered (possibly with no data, which the rules judge).
    Readings(Readings),
    /// Prometheus could not be asked, or its answer was unusable; the cause, for the
    /// message. The policy's `prometheus.onError` applies.
    Unavailable(String),
    /// This slo-guard has no Prometheus configured, so the SLO gate is off.
    NotConfigured,
}

/// The observations for one decision, by policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    by_policy: BTreeMap<PolicyRef, Observation>,
}

impl FromIterator<(PolicyRef, Observation)> for Observations {
    fn from_iter<I: IntoIterator<Item = (PolicyRef, Observation)>>(iter: I) -> Self {
        Self {
            by_policy: iter.into_iter().collect(),
        }
    }
}

impl Observations {
    /// No observation yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records what was found out for `policy`, replacing any earlier observation.
    pub fn insert(&mut self, policy: PolicyRef, observation: Observation) {
        self.by_policy.insert(policy, observation);
    }

    /// What was found out for `policy`, if it was asked.
    pub fn get(&self, policy: &PolicyRef) -> Option<&Observation> {
        self.by_policy.get(policy)
    }

    /// Whether no policy was asked.
    pub fn is_empty(&self) -> bool {
        self.by_policy.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy;

    const POLICY: &str = r#"match: {kinds: [Deployment]}
slo:
  objective: 99.9
  period: 30d
  errors: 'sum(rate(http_requests_total{namespace="{{namespace}}",job="{{name}}",code=~"5.."}[{{window}}]))'
  total: 'sum(rate(http_requests_total{namespace="{{namespace}}",job="{{name}}"}[{{window}}]))'
  burnRate: [{long: 1h, short: 5m, factor: 14.4}]
traffic:
  current: 'sum(rate(http_requests_total{job="{{name}}"}[5m]))'
  baseline: 'sum(rate(http_requests_total{job="{{name}}"}[5m] offset 1w))'
  spikeRatio: 2
"#;

    /// Deployment payments/checkout, as the rule tests' changes target it.
    fn target() -> Target {
        crate::rules::testing::rollout_by(crate::rules::testing::AGENT).target
    }

    fn policy_ref() -> PolicyRef {
        PolicyRef {
            namespace: "payments".into(),
            name: "checkout".into(),
        }
    }

    #[test]
    fn a_plan_fills_every_template_and_probes_freshness() {
        let spec = parse_policy("policy.yaml", POLICY).unwrap();
        let plan = QueryPlan::new(&policy_ref(), &spec, &target(), GateScope::Full);
        let query = |role: QueryRole| {
            plan.queries
                .iter()
                .find(|(r, _)| *r == role)
                .map(|(_, q)| q.as_str())
                .unwrap_or_else(|| panic!("no {role} in {plan:#?}"))
        };
        assert_eq!(
            query(QueryRole::Errors("30d".into())),
            r#"sum(rate(http_requests_total{namespace="payments",job="checkout",code=~"5.."}[30d]))"#
        );
        assert_eq!(
            query(QueryRole::Total("5m".into())),
            r#"sum(rate(http_requests_total{namespace="payments",job="checkout"}[5m]))"#
        );
        assert_eq!(
            query(QueryRole::Baseline),
            r#"sum(rate(http_requests_total{job="checkout"}[5m] offset 1w))"#
        );
        assert_eq!(
            query(QueryRole::Freshness),
            r#"max(timestamp(http_requests_total{namespace="payments",job="checkout"}))"#
        );
        // 30d, 1h and 5m for errors and total, two traffic queries, the probe.
        assert_eq!(plan.queries.len(), 9);

        let down = QueryPlan::new(&policy_ref(), &spec, &target(), GateScope::ScaleDown);
        assert!(
            !down
                .queries
                .iter()
                .any(|(role, _)| *role == QueryRole::Errors("30d".into())),
            "a scale-down does not need the budget"
        );
    }

    #[test]
    fn a_budget_only_plan_asks_for_the_period_and_its_freshness_only() {
        let spec = parse_policy("policy.yaml", POLICY).unwrap();
        let plan = QueryPlan::new(&policy_ref(), &spec, &target(), GateScope::BudgetOnly);
        let roles: Vec<&QueryRole> = plan.queries.iter().map(|(role, _)| role).collect();
        assert_eq!(
            roles,
            [
                &QueryRole::Errors("30d".into()),
                &QueryRole::Total("30d".into()),
                &QueryRole::Freshness
            ],
            "{:?}",
            plan.queries
        );
    }

    #[test]
    fn only_known_placeholders_pass_validation() {
        let unknown = POLICY.replace("job=\"{{name}}\",code", "job=\"{{service}}\",code");
        let error = parse_policy("policy.yaml", &unknown)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("field `slo.errors`: unknown placeholder {{service}}"),
            "{error}"
        );
        let windowed = POLICY.replace("[5m] offset", "[{{window}}] offset");
        let error = parse_policy("policy.yaml", &windowed)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("field `traffic.baseline`: traffic queries have no {{window}}"),
            "{error}"
        );
    }

    #[test]
    fn finds_the_range_selector_of_common_queries() {
        assert_eq!(
            first_range_selector(
                r#"sum(rate(http_requests_total{job="checkout",code=~"5.."}[5m]))"#
            )
            .as_deref(),
            Some(r#"http_requests_total{job="checkout",code=~"5.."}"#)
        );
        assert_eq!(
            first_range_selector("sum by (job) (rate(requests_total [5m] offset 1w))").as_deref(),
            Some("requests_total")
        );
        assert_eq!(
            first_range_selector(r#"sum(rate({__name__="x", le="[1]}"}[1h]))"#).as_deref(),
            Some(r#"{__name__="x", le="[1]}"}"#)
        );
        assert_eq!(
            first_range_selector(r#"sum(rate(x{a="[5]"}[5m])) / sum(rate(y[5m]))"#).as_deref(),
            Some(r#"x{a="[5]"}"#)
        );
        // A subquery has no plain selector before its range.
        assert_eq!(
            first_range_selector("max_over_time(rate(x[5m])[1h:])"),
            Some("x".into())
        );
        assert_eq!(first_range_selector("sum(job:requests:rate5m)"), None);
        assert_eq!(first_range_selector(r#"sum(x{a="unterminated)"#), None);
    }

    #[test]
    fn readings_never_turn_missing_data_into_zero() {
        assert_eq!(Reading::from_value(None), Reading::NoData(NoData::Empty));
        assert_eq!(
            Reading::from_value(Some(f64::NAN)),
            Reading::NoData(NoData::NaN)
        );
        assert_eq!(
            Reading::from_value(Some(f64::NEG_INFINITY)),
            Reading::NoData(NoData::Inf)
        );
        assert_eq!(Reading::from_value(Some(0.0)), Reading::Value(0.0));
    }
}
