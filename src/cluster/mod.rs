//! The Kubernetes edge: watches that keep the policy store and the workload cache
//! current, and the Events slo-guard records. Nothing here judges anything; requests
//! never wait on the API server.

mod watch;

mod workloads;
pub use workloads::{WorkloadCache, start_workload_cache};
mod configmaps;
pub use configmaps::{report, watch_configmaps};
mod slo_specs;
pub use slo_specs::{SLO_SPEC_SYNC_WAIT, list_slo_specs, report_slo_spec, watch_slo_specs};
mod effects;
pub use effects::{ClusterEffects, own_username};
mod events;
pub use events::{
    EVENT_QUEUE, EventRecord, EventRecorder, REPORTING_CONTROLLER, reporting_instance,
};

use std::time::Duration;

/// How long `serve` waits for the first list before it reports not ready and keeps trying.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
