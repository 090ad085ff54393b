//! `approval` and `autonomy`: which agent changes run alone, which need a person's
//! approval, and which only a person may make.

use serde::{Deserialize, Serialize};

use super::{AgentAction, FieldError, PromDuration, Step, check_fraction};
use crate::admission::ChangeClass;

/// `approval`: which agent changes need a person's approval, and for how long one holds.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApprovalSpec {
    /// Agent change classes that need a person's approval (when no autonomy rule says otherwise).
    pub required_for: Vec<ChangeClass>,
    /// How long an approval stays valid after it is given.
    pub max_age: PromDuration,
}

/// How much autonomy an agent change gets.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The agent may act alone.
    #[default]
    Auto,
    /// A person must approve the decision first.
    Approval,
    /// Always escalated: only a person may make the change.
    Never,
}

impl Tier {
    /// The tier as policies write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Auto => "auto",
            Tier::Approval => "approval",
            Tier::Never => "never",
        }
    }
}

/// `autonomy`: tiers of agent changes.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AutonomySpec {
    /// The tier of agent changes no rule matches.
    #[serde(default)]
    pub default: Tier,
    /// Checked in order; the first rule whose conditions all hold gives the tier.
    #[serde(default)]
    pub rules: Vec<TierRule>,
}

/// One `autonomy.rules` entry: conditions, all of which must hold, and the tier.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TierRule {
    /// Change classes this rule covers; empty means any.
    #[serde(default)]
    pub classes: Vec<ChangeClass>,
    /// Declared agent actions this rule covers; empty means any.
    #[serde(default)]
    pub actions: Vec<AgentAction>,
    /// Matches a replica change at least this large (a count, or a percentage of the
    /// current replicas).
    #[serde(default)]
    pub min_step: Option<Step>,
    /// Matches a memory increase of at least this factor (new over old) on any container.
    #[serde(default)]
    pub min_memory_factor: Option<f64>,
    /// Matches while the error budget left is below this fraction (needs `slo`).
    #[serde(default)]
    pub budget_below: Option<f64>,
    /// The tier of the changes it matches.
    pub tier: Tier,
}

impl ApprovalSpec {
    /// Config changes are never gated on approval.
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if self.required_for.contains(&ChangeClass::Config) {
            return Err(FieldError::new(
                "approval.requiredFor",
                "config changes cannot require approval",
            ));
        }
        Ok(())
    }
}

impl AutonomySpec {
    /// Every rule's conditions are in range; a budget condition needs the policy to
    /// have an `slo` section (`has_slo`) to read the budget from.
    pub(crate) fn validate(&self, has_slo: bool) -> Result<(), FieldError> {
        for (index, rule) in self.rules.iter().enumerate() {
            let field = format!("autonomy.rules[{index}]");
            if let Some(factor) = rule.min_memory_factor
                && !(factor.is_finite() && factor >= 1.0)
            {
                return Err(FieldError::new(
                    &format!("{field}.minMemoryFactor"),
                    format!("{factor} must be at least 1"),
                ));
            }
            if let Some(floor) = rule.budget_below {
                check_fraction(&format!("{field}.budgetBelow"), floor, -100.0, 1.0)?;
                if !has_slo {
                    return Err(FieldError::new(
                        &format!("{field}.budgetBelow"),
                        "needs an `slo` section to read the error budget from",
                    ));
                }
            }
        }
        Ok(())
    }
}
