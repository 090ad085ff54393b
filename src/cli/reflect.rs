use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};

use super::serve::PrometheusArgs;
use crate::admission::{POLICY_LABEL, REFLECTION_LABEL, WorkloadKind};
use crate::policy::PromDuration;
use crate::reflection::learn::{self, Proposal, WorkloadState};
use crate::slo::SloSource;
use crate::store::{ConfigMapDocument, PolicySources, PolicyStore, StoreEvent, load_sources};

/// The ConfigMap proposals are written to, in slo-guard's namespace.
pub const PROPOSALS_CONFIGMAP: &str = "slo-guard-proposals";

#[derive(Debug, clap::Args)]
pub struct ReflectArgs {
    /// Print what would be proposed, and why, without writing anything.
    #[arg(long, default_value_t = false)]
    pub dry_run: bool,
    /// Policy and reflection ConfigMap manifests; without it they are read from the cluster.
    #[arg(long = "policies", env = "SLO_GUARD_POLICIES", value_delimiter = ',')]
    pub policies: Vec<PathBuf>,
    /// Workload manifests to judge; without it Deployments and StatefulSets are listed from the cluster.
    #[arg(long = "workload", value_delimiter = ',')]
    pub workloads: Vec<PathBuf>,
    /// slo-guard's own namespace, where proposals are written.
    #[arg(long, env = "SLO_GUARD_NAMESPACE", default_value = "slo-guard")]
    pub namespace: String,
    /// How long after a change its outcome is judged (and the window each burn rate covers).
    #[arg(long, env = "SLO_GUARD_REFLECT_OBSERVE", default_value = "30m")]
    pub observe: String,
    /// Changes older than this are not judged.
    #[arg(long, env = "SLO_GUARD_REFLECT_LOOKBACK", default_value = "24h", value_parser = humantime::parse_duration)]
    pub lookback: Duration,
    /// Judge as if it were this time (RFC 3339), for reproducible runs.
    #[arg(long)]
    pub now: Option<DateTime<Utc>>,
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
}

pub fn run(args: ReflectArgs) -> ExitCode {
    let runtime = match super::current_thread_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(reflect(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn cluster_workloads(client: &Client) -> anyhow::Result<Vec<WorkloadState>> {
    let mut workloads = Vec::new();
    let state = |kind,
                 meta: kube::api::ObjectMeta,
                 replicas: Option<i32>,
                 template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>| {
        WorkloadState {
            kind,
            namespace: meta.namespace.unwrap_or_default(),
            name: meta.name.unwrap_or_default(),
            labels: meta.labels.unwrap_or_default(),
            pod_labels: template
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default(),
            annotations: meta.annotations.unwrap_or_default(),
            replicas: replicas.and_then(|r| u32::try_from(r).ok()),
            owner_uids: meta
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .map(|owner| owner.uid)
                .collect(),
        }
    };
    for deployment in Api::<Deployment>::all(client.clone())
        .list(&ListParams::default())
        .await?
    {
        let replicas = deployment.spec.as_ref().and_then(|s| s.replicas);
        let template = deployment.spec.as_ref().map(|s| &s.template);
        workloads.push(state(
            WorkloadKind::Deployment,
            deployment.metadata.clone(),
            replicas,
            template,
        ));
    }
    for statefulset in Api::<StatefulSet>::all(client.clone())
        .list(&ListParams::default())
        .await?
    {
        let replicas = statefulset.spec.as_ref().and_then(|s| s.replicas);
        let template = statefulset.spec.as_ref().map(|s| &s.template);
        workloads.push(state(
            WorkloadKind::StatefulSet,
            statefulset.metadata.clone(),
            replicas,
            template,
        ));
    }
    Ok(workloads)
}

async fn cluster_configmaps(client: &Client) -> anyhow::Result<Vec<ConfigMapDocument>> {
    let mut documents = Vec::new();
    for label in [POLICY_LABEL, REFLECTION_LABEL] {
        let list = Api::<ConfigMap>::all(client.clone())
            .list(&ListParams::default().labels(&format!("{label}=true")))
            .await?;
        for configmap in list {
            let origin = format!(
                "configmap {}/{}",
                configmap.metadata.namespace.as_deref().unwrap_or_default(),
                configmap.metadata.name.as_deref().unwrap_or_default()
            );
            if let Ok(document) = ConfigMapDocument::from_configmap(configmap, "default", origin) {
                documents.push(document);
            }
        }
    }
    Ok(documents)
}

async fn reflect(args: ReflectArgs) -> anyhow::Result<()> {
    let window = PromDuration::parse(&args.observe)?;
    let now = args.now.unwrap_or_else(Utc::now);
    let SloSource::Live(prometheus) = args.prometheus.source()? else {
        anyhow::bail!("--prometheus-url is required: outcomes are judged from Prometheus");
    };
    let needs_cluster = args.policies.is_empty() || args.workloads.is_empty() || !args.dry_run;
    let client = if needs_cluster {
        Some(
            Client::try_default()
                .await
                .map_err(|e| anyhow::anyhow!("cannot reach the cluster (give --policies and --workload with --dry-run to run offline): {e}"))?,
        )
    } else {
        None
    };
    let store = Arc::new(PolicyStore::new(args.namespace.clone()));
    let sources = match (&client, args.policies.is_empty()) {
        (_, false) => load_sources(&args.policies, "default")?,
        (Some(client), true) => PolicySources {
            configmaps: cluster_configmaps(client).await?,
            slo_specs: crate::cluster::list_slo_specs(client).await,
        },
        (None, true) => unreachable!("a client exists whenever --policies is empty"),
    };
    let (_, events) = store.replace_sources(&sources);
    for event in events {
        if let StoreEvent::Rejected { error, .. } = event {
            eprintln!("warning: skipping an invalid policy: {error}");
        }
    }
    let policies = store.snapshot();
    let workloads = match (&client, args.workloads.is_empty()) {
        (_, false) => super::manifests::workloads_of(
            &args.workloads,
            &mut super::manifests::Stdin::default(),
        )?,
        (Some(client), true) => cluster_workloads(client).await?,
        (None, true) => unreachable!("a client exists whenever --workload is empty"),
    };

    let mut proposals: Vec<Proposal> = Vec::new();
    let mut judged = 0;
    for workload in &workloads {
        let Some(policy) = policies.first_slo_policy(&workload.target()) else {
            continue;
        };
        for record in learn::due(
            learn::records(workload),
            window.duration(),
            args.lookback,
            now,
        ) {
            judged += 1;
            let outcome =
                match learn::measure(&prometheus, policy, workload, &record, &window).await {
                    Ok(outcome) => outcome,
                    Err(error) => {
                        println!(
                            "{}: {}: cannot judge: {error}",
                            workload.describe(),
                            record.describe()
                        );
                        continue;
                    }
                };
            match learn::propose(workload, policy, &record, &outcome, &window, now) {
                Some(proposal) => {
                    println!(
                        "{}: {}: propose {} {} (policy {}): {}",
                        workload.describe(),
                        record.describe(),
                        proposal.path.as_str(),
                        proposal.value,
                        proposal.policy,
                        proposal.reason
                    );
                    proposals.push(proposal);
                }
                None => println!(
                    "{}: {}: no proposal (burn {} before, {} after; regression means at least {}x the burn before and at least {}x)",
                    workload.describe(),
                    record.describe(),
                    outcome
                        .before
                        .map_or("no data".into(), |b| format!("{b:.2}x")),
                    outcome
                        .after
                        .map_or("no data".into(), |b| format!("{b:.2}x")),
                    learn::REGRESSION_FACTOR,
                    learn::MIN_BURN
                ),
            }
        }
    }
    println!(
        "judged {judged} change(s) on {} workload(s); {} proposal(s)",
        workloads.len(),
        proposals.len()
    );
    if proposals.is_empty() {
        return Ok(());
    }
    let data: BTreeMap<String, String> = proposals.iter().map(|p| (p.key(), p.to_yaml())).collect();
    let configmap = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(PROPOSALS_CONFIGMAP.to_string()),
            namespace: Some(args.namespace.clone()),
            labels: Some([(REFLECTION_LABEL.to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    if args.dry_run {
        println!("---\n{}", serde_yaml::to_string(&configmap)?);
        return Ok(());
    }
    let client = client.ok_or_else(|| anyhow::anyhow!("writing proposals needs the cluster"))?;
    Api::<ConfigMap>::namespaced(client, &args.namespace)
        .patch(
            PROPOSALS_CONFIGMAP,
            &PatchParams::apply("slo-guard-reflect").force(),
            &Patch::Apply(&configmap),
        )
        .await?;
    println!(
        "wrote {} proposal(s) to ConfigMap {}/{PROPOSALS_CONFIGMAP}",
        proposals.len(),
        args.namespace
    );
    Ok(())
}
