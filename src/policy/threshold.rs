//! The thresholds a reflection may change: where each lives in a policy, what values it
//! takes, and which direction tightens it.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{PolicySpec, PromDuration, Step};

/// A threshold, as a dotted path into the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ThresholdPath {
    /// `scaling.maxReplicas`.
    ScalingMaxReplicas,
    /// `scaling.minReplicas`.
    ScalingMinReplicas,
    /// `scaling.maxStep`.
    ScalingMaxStep,
    /// `scaling.cooldown`.
    ScalingCooldown,
    /// `traffic.spikeRatio`.
    TrafficSpikeRatio,
    /// `slo.budget.freezeBelow`.
    BudgetFreezeBelow,
    /// `slo.budget.agentFreezeBelow`.
    BudgetAgentFreezeBelow,
    /// `slo.minRequestRate`.
    SloMinRequestRate,
    /// `agents.minConfidence`.
    AgentsMinConfidence,
}

/// A threshold's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Threshold {
    /// A replica count.
    Replicas(u32),
    /// A step, in replicas or percent.
    Step(Step),
    /// A duration (`5m`).
    Duration(PromDuration),
    /// A ratio or a rate.
    Number(f64),
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Replicas(count) => write!(f, "{count}"),
            Threshold::Step(step) => write!(f, "{step}"),
            Threshold::Duration(duration) => write!(f, "{duration}"),
            Threshold::Number(number) => write!(f, "{number}"),
        }
    }
}

impl Threshold {
    /// A number to compare two values of one threshold by, when they are comparable
    /// (a step of 5 replicas and one of 50% are not).
    fn magnitude(&self) -> (u8, f64) {
        match self {
            Threshold::Replicas(count) => (0, f64::from(*count)),
            Threshold::Step(Step::Replicas(count)) => (1, f64::from(*count)),
            Threshold::Step(Step::Percent(percent)) => (2, *percent),
            Threshold::Duration(duration) => (3, duration.duration().as_secs_f64()),
            Threshold::Number(number) => (4, *number),
        }
    }

    /// The value as the `slo-guard.io/thresholds` annotation writes it.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Threshold::Replicas(count) => serde_json::Value::from(*count),
            Threshold::Step(Step::Replicas(count)) => serde_json::Value::from(*count),
            Threshold::Number(number) => serde_json::Value::from(*number),
            other => serde_json::Value::String(other.to_string()),
        }
    }
}

impl ThresholdPath {
    /// Every threshold a reflection may change.
    pub const ALL: [ThresholdPath; 9] = [
        ThresholdPath::ScalingMaxReplicas,
        ThresholdPath::ScalingMinReplicas,
        ThresholdPath::ScalingMaxStep,
        ThresholdPath::ScalingCooldown,
        ThresholdPath::TrafficSpikeRatio,
        ThresholdPath::BudgetFreezeBelow,
        ThresholdPath::BudgetAgentFreezeBelow,
        ThresholdPath::SloMinRequestRate,
        ThresholdPath::AgentsMinConfidence,
    ];

    /// The dotted path, as reflections and denials write it.
    pub fn as_str(self) -> &'static str {
        match self {
            ThresholdPath::ScalingMaxReplicas => "scaling.maxReplicas",
            ThresholdPath::ScalingMinReplicas => "scaling.minReplicas",
            ThresholdPath::ScalingMaxStep => "scaling.maxStep",
            ThresholdPath::ScalingCooldown => "scaling.cooldown",
            ThresholdPath::TrafficSpikeRatio => "traffic.spikeRatio",
            ThresholdPath::BudgetFreezeBelow => "slo.budget.freezeBelow",
            ThresholdPath::BudgetAgentFreezeBelow => "slo.budget.agentFreezeBelow",
            ThresholdPath::SloMinRequestRate => "slo.minRequestRate",
            ThresholdPath::AgentsMinConfidence => "agents.minConfidence",
        }
    }

    /// The threshold `text` names, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|path| path.as_str() == text)
    }

    /// Whether a smaller value is the stricter one. A lower cap, step, spike ratio or
    /// request-rate floor guards more; a higher floor, cooldown, budget floor or
    /// confidence minimum does.
    fn lower_is_tighter(self) -> bool {
        matches!(
            self,
            ThresholdPath::ScalingMaxReplicas
                | ThresholdPath::ScalingMaxStep
                | ThresholdPath::TrafficSpikeRatio
                | ThresholdPath::SloMinRequestRate
        )
    }

    /// `Some(true)` when `candidate` is at least as strict as `current`, `Some(false)`
    /// when it loosens, `None` when the two cannot be compared.
    pub fn tightens(self, candidate: &Threshold, current: &Threshold) -> Option<bool> {
        let ((kind_a, a), (kind_b, b)) = (candidate.magnitude(), current.magnitude());
        if kind_a != kind_b {
            return None;
        }
        Some(if self.lower_is_tighter() {
            a <= b
        } else {
            a >= b
        })
    }

    /// The looser of two comparable values bounded: `candidate`, but no looser than `bound`.
    pub fn bounded(self, candidate: &Threshold, bound: &Threshold) -> Option<Threshold> {
        match self.tightens(candidate, bound)? {
            true => Some(candidate.clone()),
            false => Some(bound.clone()),
        }
    }

    /// Parses a value written in a reflection or a policy bound, checking its range.
    pub fn parse_value(self, value: &serde_yaml::Value) -> Result<Threshold, String> {
        let number = || value.as_f64().filter(|n| n.is_finite());
        match self {
            ThresholdPath::ScalingMaxReplicas | ThresholdPath::ScalingMinReplicas => value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Threshold::Replicas)
                .ok_or_else(|| format!("{value:?} is not a replica count")),
            ThresholdPath::ScalingMaxStep => serde_yaml::from_value::<Step>(value.clone())
                .map(Threshold::Step)
                .map_err(|e| e.to_string()),
            ThresholdPath::ScalingCooldown => value
                .as_str()
                .ok_or_else(|| "expected a duration such as 10m".to_string())
                .and_then(|text| {
                    PromDuration::parse(text)
                        .map(Threshold::Duration)
                        .map_err(|e| e.to_string())
                }),
            ThresholdPath::TrafficSpikeRatio => match number() {
                Some(ratio) if ratio > 1.0 => Ok(Threshold::Number(ratio)),
                _ => Err(format!("{value:?} must be a number above 1")),
            },
            ThresholdPath::BudgetFreezeBelow | ThresholdPath::BudgetAgentFreezeBelow => {
                match number() {
                    Some(floor) if (-100.0..=1.0).contains(&floor) => Ok(Threshold::Number(floor)),
                    _ => Err(format!("{value:?} must be a budget fraction at most 1")),
                }
            }
            ThresholdPath::SloMinRequestRate => match number() {
                Some(rate) if rate >= 0.0 => Ok(Threshold::Number(rate)),
                _ => Err(format!("{value:?} must be a non-negative request rate")),
            },
            ThresholdPath::AgentsMinConfidence => match number() {
                Some(confidence) if (0.0..=1.0).contains(&confidence) => {
                    Ok(Threshold::Number(confidence))
                }
                _ => Err(format!("{value:?} must be a number in 0..1")),
            },
        }
    }

    /// The value the policy sets, if it sets one.
    pub fn read(self, spec: &PolicySpec) -> Option<Threshold> {
        let scaling = spec.scaling.as_ref();
        let slo = spec.slo.as_ref();
        match self {
            ThresholdPath::ScalingMaxReplicas => scaling?.max_replicas.map(Threshold::Replicas),
            ThresholdPath::ScalingMinReplicas => scaling?.min_replicas.map(Threshold::Replicas),
            ThresholdPath::ScalingMaxStep => scaling?.max_step.map(Threshold::Step),
            ThresholdPath::ScalingCooldown => scaling?.cooldown.clone().map(Threshold::Duration),
            ThresholdPath::TrafficSpikeRatio => spec
                .traffic
                .as_ref()
                .map(|t| Threshold::Number(t.spike_ratio)),
            ThresholdPath::BudgetFreezeBelow => {
                slo.map(|s| Threshold::Number(s.budget.freeze_below))
            }
            ThresholdPath::BudgetAgentFreezeBelow => {
                slo?.budget.agent_freeze_below.map(Threshold::Number)
            }
            ThresholdPath::SloMinRequestRate => slo?.min_request_rate.map(Threshold::Number),
            ThresholdPath::AgentsMinConfidence => spec.agents.min_confidence.map(Threshold::Number),
        }
    }

    /// Sets the value in the policy. A threshold of a section the policy does not have
    /// (traffic, slo) cannot be set, since the rest of the section would be missing; the
    /// scaling section is created, as all its fields are optional.
    pub fn write(self, spec: &mut PolicySpec, value: &Threshold) -> bool {
        fn scaling(spec: &mut PolicySpec) -> &mut super::ScalingSpec {
            spec.scaling.get_or_insert_with(|| super::ScalingSpec {
                min_replicas: None,
                max_replicas: None,
                max_step: None,
                cooldown: None,
                applies_to: Default::default(),
                on_exceed: Default::default(),
            })
        }
        match (self, value) {
            (ThresholdPath::ScalingMaxReplicas, Threshold::Replicas(n)) => {
                scaling(spec).max_replicas = Some(*n)
            }
            (ThresholdPath::ScalingMinReplicas, Threshold::Replicas(n)) => {
                scaling(spec).min_replicas = Some(*n)
            }
            (ThresholdPath::ScalingMaxStep, Threshold::Step(step)) => {
                scaling(spec).max_step = Some(*step)
            }
            (ThresholdPath::ScalingCooldown, Threshold::Duration(d)) => {
                scaling(spec).cooldown = Some(d.clone())
            }
            (ThresholdPath::TrafficSpikeRatio, Threshold::Number(n)) => match spec.traffic.as_mut()
            {
                Some(traffic) => traffic.spike_ratio = *n,
                None => return false,
            },
            (ThresholdPath::BudgetFreezeBelow, Threshold::Number(n)) => match spec.slo.as_mut() {
                Some(slo) => slo.budget.freeze_below = *n,
                None => return false,
            },
            (ThresholdPath::BudgetAgentFreezeBelow, Threshold::Number(n)) => {
                match spec.slo.as_mut() {
                    Some(slo) => slo.budget.agent_freeze_below = Some(*n),
                    None => return false,
                }
            }
            (ThresholdPath::SloMinRequestRate, Threshold::Number(n)) => match spec.slo.as_mut() {
                Some(slo) => slo.min_request_rate = Some(*n),
                None => return false,
            },
            (ThresholdPath::AgentsMinConfidence, Threshold::Number(n)) => {
                spec.agents.min_confidence = Some(*n)
            }
            _ => return false,
        }
        true
    }
}

/// Threshold values by path, as reflections and `reflection.loosenBounds` write them.
pub type Thresholds = BTreeMap<ThresholdPath, Threshold>;

impl Serialize for ThresholdPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl Serialize for Threshold {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Threshold::Replicas(count) => serializer.serialize_u32(*count),
            Threshold::Step(step) => step.serialize(serializer),
            Threshold::Duration(duration) => duration.serialize(serializer),
            Threshold::Number(number) => serializer.serialize_f64(*number),
        }
    }
}

/// Reads a map of thresholds, each value parsed and range-checked for its path, so that
/// a document with a bad one is refused when it is loaded. The error names the path as
/// a field (`thresholds.traffic.spikeRatio`), as a field of the document would be.
fn deserialize_map<'de, D: Deserializer<'de>>(
    deserializer: D,
    unknown: fn(&str) -> String,
) -> Result<Thresholds, D::Error> {
    /// A key: a threshold path, or the `unknown` message.
    struct PathSeed(fn(&str) -> String);

    impl<'de> DeserializeSeed<'de> for PathSeed {
        type Value = ThresholdPath;

        fn deserialize<D: Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<ThresholdPath, D::Error> {
            let text = String::deserialize(deserializer)?;
            ThresholdPath::parse(&text).ok_or_else(|| de::Error::custom((self.0)(&text)))
        }
    }

    /// A value, parsed for its path.
    struct ValueSeed(ThresholdPath);

    impl<'de> DeserializeSeed<'de> for ValueSeed {
        type Value = Threshold;

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Threshold, D::Error> {
            let value = serde_yaml::Value::deserialize(deserializer)?;
            self.0.parse_value(&value).map_err(de::Error::custom)
        }
    }

    struct MapVisitor(fn(&str) -> String);

    impl<'de> Visitor<'de> for MapVisitor {
        type Value = Thresholds;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of threshold paths to values")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Thresholds, A::Error> {
            let mut thresholds = Thresholds::new();
            while let Some(path) = map.next_key_seed(PathSeed(self.0))? {
                let value = map.next_value_seed(ValueSeed(path))?;
                thresholds.insert(path, value);
            }
            Ok(thresholds)
        }
    }

    deserializer.deserialize_map(MapVisitor(unknown))
}

/// A reflection's `thresholds`: an unknown path is refused with the list of known ones.
pub(crate) fn deserialize_reflected<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Thresholds, D::Error> {
    deserialize_map(deserializer, |_| {
        format!(
            "unknown threshold; expected one of {}",
            ThresholdPath::ALL.map(ThresholdPath::as_str).join(", ")
        )
    })
}

/// A policy's `reflection.loosenBounds`.
pub(crate) fn deserialize_bounds<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Thresholds, D::Error> {
    deserialize_map(deserializer, |_| "unknown threshold".to_string())
}
