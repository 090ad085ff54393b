//! `slo`: the objective, the error budget floors and the burn-rate gate.

use serde::{Deserialize, Serialize};

use super::{FieldError, OnError, PromDuration, check_fraction, check_query};

/// The `slo` section. Its objective, period and queries are written inline, or come
/// from the SLO spec `source` names (Sloth, Pyrra, OpenSLO): then they are filled in
/// when the policy store resolves the source, and [`SloSpec::resolved`] says from where.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(try_from = "RawSloSpec", rename_all = "camelCase")]
pub struct SloSpec {
    /// The SLO spec this section reads its objective, period and queries from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::slo_spec::SourceRef>,
    /// Percent, for example 99.9.
    pub objective: f64,
    /// The period the error budget is computed over (`30d`).
    pub period: PromDuration,
    /// PromQL for the error rate, with `{{window}}` where the range goes.
    pub errors: String,
    /// PromQL for the total request rate, with `{{window}}`.
    pub total: String,
    /// Requests per second below which `onNoTraffic` applies and the other SLO checks are skipped.
    #[serde(default)]
    pub min_request_rate: Option<f64>,
    /// What applies when traffic is below `minRequestRate`.
    #[serde(default = "default_no_traffic")]
    pub on_no_traffic: OnError,
    /// The budget floors.
    #[serde(default)]
    pub budget: BudgetSpec,
    /// Multiwindow burn-rate rows (the SRE workbook's); a row fires when both windows burn
    /// above its factor.
    #[serde(default)]
    pub burn_rate: Vec<BurnRateRow>,
    /// Whether CREATE is gated too (by default only rollouts are).
    #[serde(default)]
    pub gate_create: bool,
    /// With a `source`: the period the policy wrote (only a Sloth spec takes one).
    #[serde(skip)]
    pub written_period: Option<PromDuration>,
    /// With a `source`, once resolved: where the figures come from, and the tool's
    /// recording rules.
    #[serde(skip)]
    pub resolved: Option<std::sync::Arc<ResolvedSource>>,
}

/// What resolving `slo.source` found, beyond the objective, period and queries it
/// filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedSource {
    /// "Sloth PrometheusServiceLevel payments/checkout, SLO requests-availability".
    pub origin: String,
    /// The tool's recording rules, where the source defines them.
    pub recorded: Option<crate::slo_spec::RecordingRules>,
}

impl SloSpec {
    /// Whether the objective, period and queries still wait for `source` to resolve.
    pub fn awaits_source(&self) -> bool {
        self.source.is_some() && self.resolved.is_none()
    }
}

/// `slo` as written: either `source` or the inline objective, period and queries.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSloSpec {
    #[serde(default)]
    source: Option<crate::slo_spec::SourceRef>,
    #[serde(default)]
    objective: Option<f64>,
    #[serde(default)]
    period: Option<PromDuration>,
    #[serde(default)]
    errors: Option<String>,
    #[serde(default)]
    total: Option<String>,
    #[serde(default)]
    min_request_rate: Option<f64>,
    #[serde(default = "default_no_traffic")]
    on_no_traffic: OnError,
    #[serde(default)]
    budget: BudgetSpec,
    #[serde(default)]
    burn_rate: Vec<BurnRateRow>,
    #[serde(default)]
    gate_create: bool,
}

impl TryFrom<RawSloSpec> for SloSpec {
    type Error = String;

    fn try_from(raw: RawSloSpec) -> Result<Self, String> {
        let inline = [
            ("objective", raw.objective.is_some()),
            ("errors", raw.errors.is_some()),
            ("total", raw.total.is_some()),
        ];
        let (objective, period, errors, total, written_period) = match &raw.source {
            Some(source) => {
                let given: Vec<&str> = inline
                    .iter()
                    .filter_map(|(name, set)| set.then_some(*name))
                    .collect();
                if !given.is_empty() {
                    return Err(format!(
                        "sets both source ({} {}) and {}: the objective and the queries come from the spec, so leave {} out",
                        source.kind,
                        source.name,
                        given.join(", "),
                        if given.len() == 1 { "it" } else { "them" }
                    ));
                }
                // Placeholders until the store resolves the source; `awaits_source`
                // keeps them out of every check and every query.
                (
                    0.0,
                    raw.period
                        .clone()
                        .unwrap_or_else(crate::slo_spec::sloth_default_period),
                    String::new(),
                    String::new(),
                    raw.period,
                )
            }
            None => {
                let missing: Vec<&str> = [
                    ("objective", raw.objective.is_some()),
                    ("period", raw.period.is_some()),
                    ("errors", raw.errors.is_some()),
                    ("total", raw.total.is_some()),
                ]
                .into_iter()
                .filter_map(|(name, set)| (!set).then_some(name))
                .collect();
                match (raw.objective, raw.period, raw.errors, raw.total) {
                    (Some(objective), Some(period), Some(errors), Some(total)) => {
                        (objective, period, errors, total, None)
                    }
                    _ => {
                        return Err(format!(
                            "needs either source (a Sloth PrometheusServiceLevel, Pyrra ServiceLevelObjective or OpenSLO SLO) or objective, period, errors and total; missing: {}",
                            missing.join(", ")
                        ));
                    }
                }
            }
        };
        Ok(SloSpec {
            source: raw.source,
            objective,
            period,
            errors,
            total,
            min_request_rate: raw.min_request_rate,
            on_no_traffic: raw.on_no_traffic,
            budget: raw.budget,
            burn_rate: raw.burn_rate,
            gate_create: raw.gate_create,
            written_period,
            resolved: None,
        })
    }
}

fn default_no_traffic() -> OnError {
    OnError::Allow
}

/// `slo.budget`: the floors of the error budget left.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BudgetSpec {
    /// Fraction of the budget left (0.0 = exhausted) at or below which rollouts freeze.
    #[serde(default)]
    pub freeze_below: f64,
    /// The floor for agents' rollouts (fraction of the budget left); none by default.
    #[serde(default)]
    pub agent_freeze_below: Option<f64>,
}

impl Default for BudgetSpec {
    fn default() -> Self {
        Self {
            freeze_below: 0.0,
            agent_freeze_below: None,
        }
    }
}

/// One burn-rate row.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BurnRateRow {
    /// The long window (`1h`).
    pub long: PromDuration,
    /// The short window (`5m`), which confirms the burn is still going on.
    pub short: PromDuration,
    /// The burn rate both windows must exceed (`14.4` spends 2% of a 30-day budget in an hour).
    pub factor: f64,
}

impl SloSpec {
    /// The objective, queries, floors and burn-rate rows make sense. With a `source`
    /// that is not resolved yet, the objective and queries are the spec's: they are
    /// checked once the store resolves it (`resolve_slo_source`).
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if !self.awaits_source() {
            if !(self.objective.is_finite() && self.objective > 0.0 && self.objective < 100.0) {
                return Err(FieldError::new(
                    "slo.objective",
                    format!(
                        "{} must be a percentage strictly between 0 and 100, e.g. 99.9",
                        self.objective
                    ),
                ));
            }
            check_query("slo.errors", &self.errors, true)?;
            check_query("slo.total", &self.total, true)?;
        }
        if let Some(rate) = self.min_request_rate
            && !(rate.is_finite() && rate >= 0.0)
        {
            return Err(FieldError::new(
                "slo.minRequestRate",
                format!("{rate} must be a non-negative number"),
            ));
        }
        self.budget.validate()?;
        for (index, row) in self.burn_rate.iter().enumerate() {
            row.validate(&format!("slo.burnRate[{index}]"))?;
        }
        Ok(())
    }
}

impl BudgetSpec {
    /// Both floors are budget fractions, and agents' is not below people's.
    fn validate(&self) -> Result<(), FieldError> {
        check_fraction("slo.budget.freezeBelow", self.freeze_below, -100.0, 1.0)?;
        if let Some(agent_floor) = self.agent_freeze_below {
            check_fraction("slo.budget.agentFreezeBelow", agent_floor, -100.0, 1.0)?;
            if agent_floor < self.freeze_below {
                return Err(FieldError::new(
                    "slo.budget.agentFreezeBelow",
                    format!(
                        "{agent_floor} is below slo.budget.freezeBelow {}: agents must not get a lower floor than people",
                        self.freeze_below
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl BurnRateRow {
    /// A positive factor, and a short window shorter than the long one. `field` is the
    /// row's path.
    fn validate(&self, field: &str) -> Result<(), FieldError> {
        if !(self.factor.is_finite() && self.factor > 0.0) {
            return Err(FieldError::new(
                &format!("{field}.factor"),
                format!("{} must be above 0", self.factor),
            ));
        }
        if self.short.duration() >= self.long.duration() {
            return Err(FieldError::new(
                &format!("{field}.short"),
                format!("{} must be shorter than long {}", self.short, self.long),
            ));
        }
        Ok(())
    }
}
