//! slo-guard: a Kubernetes admission webhook that keeps people, CI and AI agents from
//! changing workloads in ways that endanger their SLOs.
//!
//! The decision core is pure and takes two steps: [`rules::assess`] works out once what a
//! change is under the policies in force, and [`rules::decide`] judges that assessment on
//! the SLO figures and ledger record the guard ([`guard::Guard`]) gathered for it.
//! Admission I/O, policy loading, TLS and HTTP are thin edges around it. [`server::router`] is exposed so tests can drive it.

pub mod admission;
pub mod annotations;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod guard;
pub mod ledger;
pub mod metrics;
pub mod mutation;
pub mod policy;
pub mod preflight;
pub mod reflection;
pub mod rules;
pub mod server;
pub mod slo;
pub mod slo_spec;
pub mod store;
pub mod verdict;
pub mod webhook_scope;
