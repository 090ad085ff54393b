//! The SLO gate's edge: what to ask Prometheus ([`QueryPlan`]), asking it ([`Prometheus`],
//! with a single-flight cache), canned answers for offline checks, and the arithmetic
//! that turns answers into figures. The rules that judge the figures are in
//! `rules::slo`, inside the pure `decide`.

mod answer;
mod cache;
mod canned;
mod client;
pub mod figures;
mod plan;
mod plans;
mod source;

pub use answer::{Answer, QueryError};
pub use cache::{CacheCollector, CacheStats};
pub use canned::{CannedAnswer, CannedAnswers, CannedError};
pub use client::{ConfigError, Prometheus, PrometheusConfig, parse_header, parse_response};
pub use plan::{
    Fallback, GateScope, NoData, Observation, Observations, QueryPlan, QueryRole, Reading,
    Readings, fill, first_range_selector, request_rate_window,
};
pub use plans::PlanCache;
pub use source::SloSource;
