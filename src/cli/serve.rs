use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;

use super::{EMBEDDED_POLICIES, PolicyArgs};
use crate::admission::{ConfigKind, WorkloadLookup};
use crate::certs::{CertFiles, CertRequest};
use crate::cluster;
use crate::guard::Guard;
use crate::metrics::Metrics;
use crate::policy::{ConfigMapDocument, PolicyStore, load_directory, parse_manifest_text};
use crate::server::{AppState, router, tls};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[arg(long, env = "SLO_GUARD_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM serving certificate. Without --tls-cert/--tls-key a self-signed CA and
    /// certificate are generated in --cert-dir.
    #[arg(long, env = "SLO_GUARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "SLO_GUARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where generated certificates go (reused on restart when present).
    #[arg(long, env = "SLO_GUARD_CERT_DIR", default_value = "slo-guard-certs")]
    pub cert_dir: PathBuf,
    #[command(flatten)]
    pub policies: PolicyArgs,
    /// Load policy and reflection ConfigMaps from the cluster (watched live) and cache
    /// workload metadata for scale requests. Uses KUBECONFIG or the in-cluster config.
    #[arg(long, env = "SLO_GUARD_WATCH_CONFIGMAPS", default_value_t = false)]
    pub watch_configmaps: bool,
    /// Prometheus (or Thanos/Mimir) base URL for the SLO gate.
    #[arg(long, env = "SLO_GUARD_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// How often rotated certificate files are looked for.
    #[arg(long, env = "SLO_GUARD_CERT_RELOAD_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub cert_reload_interval: Duration,
    /// After SIGTERM, how long /readyz reports not ready before the listener closes, so
    /// the Service stops routing here first.
    #[arg(long, env = "SLO_GUARD_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,
    /// The longest in-flight requests get to finish after the listener closes.
    #[arg(long, env = "SLO_GUARD_SHUTDOWN_GRACE", default_value = "25s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Worker threads (defaults to the number of CPUs).
    #[arg(long, env = "SLO_GUARD_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
}

pub fn run(args: ServeArgs) -> ExitCode {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.worker_threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "slo-guard stopped");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn tls_files(args: &ServeArgs) -> anyhow::Result<(PathBuf, PathBuf)> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return Ok((cert.clone(), key.clone()));
    }
    let files = CertFiles::in_dir(&args.cert_dir);
    if files.tls_cert.exists() && files.tls_key.exists() && files.ca_cert.exists() {
        tracing::info!(ca = %files.ca_cert.display(), "reusing the generated self-signed certificate");
    } else {
        let bundle = crate::certs::generate(&CertRequest::local(365))?;
        crate::certs::write_bundle(&args.cert_dir, &bundle)?;
        tracing::info!(ca = %files.ca_cert.display(), "generated a self-signed CA and serving certificate");
    }
    eprintln!(
        "slo-guard: serving with a self-signed certificate; trust it with --cacert {}",
        files.ca_cert.display()
    );
    Ok((files.tls_cert, files.tls_key))
}

fn embedded_documents(namespace: &str) -> anyhow::Result<Vec<ConfigMapDocument>> {
    let mut documents = Vec::new();
    for (name, text) in EMBEDDED_POLICIES {
        documents.extend(parse_manifest_text(
            std::path::Path::new(name),
            text,
            namespace,
        )?);
    }
    Ok(documents)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(PolicyStore::new(args.policies.namespace.clone()));
    if let Some(url) = &args.prometheus_url {
        tracing::warn!(prometheus = %url, "the SLO gate is not part of this build yet; slo/traffic sections are validated but not enforced");
    }

    let (cert_path, key_path) = tls_files(&args)?;
    let tls_config = RustlsConfig::from_config(tls::server_config(&cert_path, &key_path)?);
    tokio::spawn(tls::watch_for_rotation(
        tls_config.clone(),
        cert_path.clone(),
        key_path.clone(),
        args.cert_reload_interval,
    ));

    let mut cluster_sync = Vec::new();
    let workloads: Arc<dyn WorkloadLookup> = if args.watch_configmaps {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the cluster for --watch-configmaps: {e}"))?;
        for kind in [ConfigKind::Policy, ConfigKind::Reflection] {
            let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(cluster::watch_configmaps(
                client.clone(),
                kind,
                store.clone(),
                metrics.clone(),
                synced_tx,
            ));
            cluster_sync.push(synced_rx);
        }
        let (cache, cache_synced) = cluster::start_workload_cache(&client);
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            cache_synced.await;
            let _ = synced_tx.send(());
        });
        cluster_sync.push(synced_rx);
        Arc::new(cache)
    } else {
        let documents = if args.policies.policies.is_empty() {
            tracing::info!("no --policies given: serving the embedded example policies");
            embedded_documents(&args.policies.namespace)?
        } else {
            load_directory(&args.policies.policies, "default")?
        };
        for event in store.replace_all(None, &documents) {
            cluster::report(&event, &metrics);
        }
        Arc::new(())
    };

    let guard = Arc::new(Guard::new(store.clone(), workloads, metrics));
    let state = AppState {
        guard,
        ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let handle: Handle<SocketAddr> = Handle::new();
    let server = axum_server::bind_rustls(args.listen, tls_config)
        .handle(handle.clone())
        .serve(router(state.clone()).into_make_service());
    let server = tokio::spawn(server);

    let listening = handle
        .listening()
        .await
        .ok_or_else(|| anyhow::anyhow!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %listening, "listening");

    let ready = state.ready.clone();
    tokio::spawn(async move {
        for synced in cluster_sync {
            match tokio::time::timeout(cluster::SYNC_TIMEOUT, synced).await {
                Ok(_) => {}
                Err(_) => tracing::warn!(
                    "cluster watches not synced after {:?}; still waiting",
                    cluster::SYNC_TIMEOUT
                ),
            }
        }
        ready.store(true, Ordering::Release);
        tracing::info!(
            ready_ms = started.elapsed().as_millis() as u64,
            policies = store.snapshot().policies.len(),
            rejected = store.errors().len(),
            "ready"
        );
    });

    shutdown_signal().await;
    tracing::info!("shutting down: reporting not ready, then draining");
    state.ready.store(false, Ordering::Release);
    tokio::time::sleep(args.shutdown_delay).await;
    handle.graceful_shutdown(Some(args.shutdown_grace));
    server.await??;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
