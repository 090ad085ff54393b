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
use crate::server::drain::{Draining, close_connections_when_draining};
use crate::server::limits::{CountedAcceptor, Limits, RequestLimits, request_deadline};
use crate::server::phases::{PhaseTimeouts, PhasedAcceptor};
use crate::server::{AppState, ops_router, router, tls};
use crate::slo::{Prometheus, PrometheusConfig, SloSource, parse_header};
use crate::store::{
    ConfigMapDocument, PolicySources, PolicyStore, load_sources, parse_manifest_text,
};
use crate::webhook_scope::manager::{ScopeSettings, WebhookScope};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The webhook port (HTTPS): /validate and /mutate, for the apiserver.
    #[arg(long, env = "SLO_GUARD_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// The operations port (plain HTTP): /metrics, /healthz and /readyz, for Prometheus
    /// and the kubelet. Kept apart so each port can be opened to only its client.
    #[arg(long, env = "SLO_GUARD_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    pub metrics_listen: SocketAddr,
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
    /// How often the SLO spec CRDs not served yet (Sloth, Pyrra, OpenSLO) are looked for
    /// again, so that one installed after slo-guard is watched without a restart.
    #[arg(long, env = "SLO_GUARD_SLO_SPEC_CRD_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub slo_spec_crd_interval: Duration,
    /// Workloads a page when the workload cache lists them (a page is held whole while
    /// it is read, so a smaller page lowers the peak memory of a start).
    #[arg(long, env = "SLO_GUARD_WATCH_PAGE_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub watch_page_size: u32,
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
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
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub preflight: PreflightArgs,
}

/// `POST /v1/preflight`, served with `--watch-configmaps` (callers are authenticated by
/// the cluster).
#[derive(Debug, Clone, clap::Args)]
pub struct PreflightArgs {
    /// Serve `POST /v1/preflight` (with --watch-configmaps: callers are authenticated by
    /// the cluster's TokenReview).
    #[arg(long = "preflight", env = "SLO_GUARD_PREFLIGHT", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// Preflight requests one caller may make per --preflight-window; more get 429.
    #[arg(long, env = "SLO_GUARD_PREFLIGHT_RATE", default_value_t = 60)]
    pub preflight_rate: u32,
    #[arg(long, env = "SLO_GUARD_PREFLIGHT_WINDOW", default_value = "1m", value_parser = humantime::parse_duration)]
    pub preflight_window: Duration,
}

/// Whether the workload webhooks' namespaceSelector follows the policies in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScopeMode {
    /// slo-guard keeps the workload webhooks' namespaceSelector to the namespaces its
    /// policies govern (needs --watch-configmaps and get/update on its webhook
    /// configurations).
    Policies,
    /// The webhook configurations stay as installed.
    Static,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ScopeArgs {
    /// `policies`: requests in namespaces no policy governs never leave the apiserver,
    /// and an outage of slo-guard blocks only governed namespaces. `static`: every
    /// namespace the installed selector allows is sent.
    #[arg(long, env = "SLO_GUARD_WEBHOOK_SCOPE", value_enum, default_value_t = ScopeMode::Static)]
    pub webhook_scope: ScopeMode,
    /// The ValidatingWebhookConfiguration whose workload webhooks are scoped.
    #[arg(
        long,
        env = "SLO_GUARD_VALIDATING_WEBHOOK_CONFIGURATION",
        default_value = "slo-guard"
    )]
    pub validating_webhook_configuration: String,
    /// The MutatingWebhookConfiguration whose workload webhooks are scoped ("" for none).
    #[arg(
        long,
        env = "SLO_GUARD_MUTATING_WEBHOOK_CONFIGURATION",
        default_value = "slo-guard"
    )]
    pub mutating_webhook_configuration: String,
    /// The webhooks, by name, whose namespaceSelector is scoped. Never the policy or
    /// reflection ConfigMap webhooks, which must see every namespace.
    #[arg(
        long,
        env = "SLO_GUARD_SCOPED_WEBHOOKS",
        value_delimiter = ',',
        default_value = "validate.slo-guard.io,pods.slo-guard.io,owners.slo-guard.io,mutate.slo-guard.io"
    )]
    pub scoped_webhooks: Vec<String>,
    /// How long a namespace stays in scope after the last policy governing it is gone
    /// (longer than the apiserver's request timeout: see `webhook_scope`).
    #[arg(long, env = "SLO_GUARD_WEBHOOK_SCOPE_GRACE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub webhook_scope_grace: Duration,
    /// How often the scope is reconciled with the policies in force.
    #[arg(long, env = "SLO_GUARD_WEBHOOK_SCOPE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub webhook_scope_interval: Duration,
}

/// What one client may hold of the webhook port (see `server::limits`).
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Open connections at most; more are closed as soon as they are accepted, before
    /// any TLS work. The apiserver needs a handful per replica.
    #[arg(long, env = "SLO_GUARD_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Open connections from one source address at most, so that one flooding client
    /// cannot take the connections the apiserver needs (which opens one per request in
    /// flight over HTTP/1.1).
    #[arg(long, env = "SLO_GUARD_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,
    /// Time for a client's TLS handshake.
    #[arg(long, env = "SLO_GUARD_TLS_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// Time from the handshake, or from a request's first byte, to its complete header.
    #[arg(long, env = "SLO_GUARD_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// How long an HTTP/1.1 keep-alive connection may wait for its next request. Keep
    /// it above the apiserver's own idle timeout (90s), so that the apiserver closes an
    /// idle connection first and never sends a review on one slo-guard is closing.
    #[arg(long, env = "SLO_GUARD_IDLE_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Time to read a request's body and answer it (the apiserver waits at most 30s).
    #[arg(long, env = "SLO_GUARD_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// HTTP/2 streams one connection may have open at once.
    #[arg(
        long,
        env = "SLO_GUARD_H2_MAX_CONCURRENT_STREAMS",
        default_value_t = 250
    )]
    pub h2_max_concurrent_streams: u32,
    /// Largest HTTP/2 header list, in bytes.
    #[arg(
        long,
        env = "SLO_GUARD_H2_MAX_HEADER_LIST_SIZE",
        default_value_t = 65536
    )]
    pub h2_max_header_list_size: u32,
    /// HTTP/2 streams a client may reset before they are served before its connection
    /// is closed (the rapid-reset attack).
    #[arg(
        long,
        env = "SLO_GUARD_H2_MAX_PENDING_RESET_STREAMS",
        default_value_t = 20
    )]
    pub h2_max_pending_reset_streams: usize,
}

impl From<&LimitArgs> for Limits {
    fn from(args: &LimitArgs) -> Self {
        Limits {
            max_connections: args.max_connections,
            max_connections_per_ip: args.max_connections_per_ip,
            tls_handshake_timeout: args.tls_handshake_timeout,
            header_read_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
            request_timeout: args.request_timeout,
            h2_max_concurrent_streams: args.h2_max_concurrent_streams,
            h2_max_header_list_size: args.h2_max_header_list_size,
            h2_max_pending_reset_streams: args.h2_max_pending_reset_streams,
            ..Limits::default()
        }
    }
}

/// How to reach Prometheus, Thanos or Mimir for the SLO gate (shared by `serve` and `check`).
#[derive(Debug, Clone, clap::Args)]
pub struct PrometheusArgs {
    /// Prometheus (or Thanos/Mimir) base URL for the SLO gate, e.g.
    /// http://prometheus.monitoring:9090 or https://mimir.example/prometheus. Without it
    /// the SLO gate is off and every gated decision says so in a warning.
    #[arg(long, env = "SLO_GUARD_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// Extra header on every query, NAME=VALUE (repeat the flag, or comma-separate in the
    /// variable), e.g. X-Scope-OrgID=tenant-a for Mimir or Cortex.
    #[arg(
        long = "prometheus-header",
        env = "SLO_GUARD_PROMETHEUS_HEADERS",
        value_delimiter = ',',
        value_parser = parse_header_arg
    )]
    pub prometheus_headers: Vec<(String, String)>,
    /// File holding a bearer token, re-read on every query so rotated tokens work.
    #[arg(
        long,
        env = "SLO_GUARD_PROMETHEUS_BEARER_TOKEN_FILE",
        conflicts_with = "prometheus_basic_auth_user"
    )]
    pub prometheus_bearer_token_file: Option<PathBuf>,
    /// Basic auth user; the password comes from --prometheus-basic-auth-password-file.
    #[arg(
        long,
        env = "SLO_GUARD_PROMETHEUS_BASIC_AUTH_USER",
        requires = "prometheus_basic_auth_password_file"
    )]
    pub prometheus_basic_auth_user: Option<String>,
    #[arg(
        long,
        env = "SLO_GUARD_PROMETHEUS_BASIC_AUTH_PASSWORD_FILE",
        requires = "prometheus_basic_auth_user"
    )]
    pub prometheus_basic_auth_password_file: Option<PathBuf>,
    /// PEM CA bundle to trust instead of the system roots (a private Thanos or Mimir).
    #[arg(long, env = "SLO_GUARD_PROMETHEUS_CA_FILE")]
    pub prometheus_ca_file: Option<PathBuf>,
    /// Accept partial answers from Thanos. By default slo-guard sends
    /// partial_response=false, so a missing store is an error rather than smaller figures.
    #[arg(
        long,
        env = "SLO_GUARD_PROMETHEUS_ALLOW_PARTIAL_RESPONSE",
        default_value_t = false
    )]
    pub prometheus_allow_partial_response: bool,
    /// How long an answer is reused. Concurrent identical queries always share one call.
    #[arg(long, env = "SLO_GUARD_PROMETHEUS_REFRESH_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub prometheus_refresh_interval: Duration,
    /// TCP/TLS connect timeout. Each decision is bounded by its policy's
    /// prometheus.timeout as well.
    #[arg(long, env = "SLO_GUARD_PROMETHEUS_CONNECT_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub prometheus_connect_timeout: Duration,
}

fn parse_header_arg(text: &str) -> Result<(String, String), String> {
    parse_header(text).map_err(|e| e.to_string())
}

impl PrometheusArgs {
    /// The SLO source these flags describe: live when a URL is given, else off.
    pub fn source(&self) -> anyhow::Result<SloSource> {
        let Some(url) = &self.prometheus_url else {
            return Ok(SloSource::Off);
        };
        let mut config = PrometheusConfig::new(url.clone());
        config.headers = self.prometheus_headers.clone();
        config.bearer_token_file = self.prometheus_bearer_token_file.clone();
        config.basic_auth_user = self.prometheus_basic_auth_user.clone();
        config.basic_auth_password_file = self.prometheus_basic_auth_password_file.clone();
        config.ca_file = self.prometheus_ca_file.clone();
        config.deny_partial_response = !self.prometheus_allow_partial_response;
        config.refresh_interval = self.prometheus_refresh_interval;
        config.connect_timeout = self.prometheus_connect_timeout;
        Ok(SloSource::Live(Arc::new(Prometheus::new(&config)?)))
    }
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

/// After the last request, how long Events still queued get to reach the API server.
const EVENT_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let store = Arc::new(PolicyStore::new(args.policies.namespace.clone()));
    let slo = args.prometheus.source()?;
    let mut metrics = Metrics::new();
    if let SloSource::Live(prometheus) = &slo {
        metrics
            .registry
            .register_collector(Box::new(prometheus.collector()));
    }
    let metrics = Arc::new(metrics);
    match &slo {
        SloSource::Live(prometheus) => tracing::info!(
            prometheus = prometheus.url(),
            refresh_ms = prometheus.refresh_interval().as_millis() as u64,
            "SLO gate on"
        ),
        _ => tracing::warn!(
            "no --prometheus-url: the SLO gate is off; slo and traffic sections are not enforced"
        ),
    }

    let (cert_path, key_path) = tls_files(&args)?;
    let loaded = tls::file_versions(&cert_path, &key_path);
    let tls_config = RustlsConfig::from_config(tls::server_config(&cert_path, &key_path)?);
    tokio::spawn(tls::watch_for_rotation(
        tls_config.clone(),
        cert_path.clone(),
        key_path.clone(),
        args.cert_reload_interval,
        loaded,
    ));

    let mut cluster_sync = Vec::new();
    let mut webhook_scope: Option<Arc<WebhookScope>> = None;
    if args.scope.webhook_scope == ScopeMode::Policies && !args.watch_configmaps {
        anyhow::bail!(
            "--webhook-scope policies needs --watch-configmaps: the scope follows the policies in the cluster"
        );
    }
    let mut cluster_effects = None;
    let mut event_recorder = None;
    let mut preflight = None;
    let workloads: Arc<dyn WorkloadLookup> = if args.watch_configmaps {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the cluster for --watch-configmaps: {e}"))?;
        if args.preflight.enabled {
            let kube_auth = Arc::new(crate::preflight::auth::KubeAuthenticator::new(
                client.clone(),
            ));
            preflight = Some(Arc::new(crate::preflight::PreflightService {
                authenticator: kube_auth.clone(),
                reader: Some(kube_auth),
                limiter: crate::preflight::RateLimiter::new(
                    args.preflight.preflight_rate,
                    args.preflight.preflight_window,
                ),
            }));
        }
        let own_username = cluster::own_username(&client).await;
        tracing::info!(
            identity = own_username.as_deref().unwrap_or("unknown"),
            "cluster identity"
        );
        let events = cluster::EventRecorder::start(
            client.clone(),
            cluster::reporting_instance(),
            metrics.clone(),
        );
        // The SLO specs policies name in slo.source, for the kinds whose CRDs exist.
        // Listed first: a policy that names a spec is not rejected (with an Event on
        // its ConfigMap) for want of a spec the watch has not listed yet. A spec watch
        // that cannot list within the wait catches up later, resolving the policies
        // again.
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(cluster::watch_slo_specs(
            client.clone(),
            store.clone(),
            metrics.clone(),
            synced_tx,
            args.slo_spec_crd_interval,
        ));
        if tokio::time::timeout(cluster::SLO_SPEC_SYNC_WAIT, synced_rx)
            .await
            .is_err()
        {
            tracing::warn!(
                wait = ?cluster::SLO_SPEC_SYNC_WAIT,
                "SLO specs not listed yet: policies that name one wait for it"
            );
        }
        for kind in [ConfigKind::Policy, ConfigKind::Reflection] {
            let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(cluster::watch_configmaps(
                client.clone(),
                kind,
                store.clone(),
                metrics.clone(),
                Some(events.clone()),
                synced_tx,
            ));
            cluster_sync.push(synced_rx);
        }
        let (cache, cache_synced) = cluster::start_workload_cache(&client, args.watch_page_size);
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            cache_synced.await;
            let _ = synced_tx.send(());
        });
        cluster_sync.push(synced_rx);
        cluster_effects = Some((
            Arc::new(cluster::ClusterEffects::new(events.clone(), cache.clone())),
            own_username,
            Arc::new(crate::ledger::lease::LeaseLedger::new(
                client.clone(),
                &args.policies.namespace,
            )),
        ));
        event_recorder = Some(events);
        if args.scope.webhook_scope == ScopeMode::Policies {
            let settings = ScopeSettings {
                validating: args.scope.validating_webhook_configuration.clone(),
                mutating: Some(args.scope.mutating_webhook_configuration.clone())
                    .filter(|name| !name.is_empty()),
                webhooks: args.scope.scoped_webhooks.clone(),
                grace: args.scope.webhook_scope_grace,
                interval: args.scope.webhook_scope_interval,
            };
            if let Some(forbidden) = settings
                .webhooks
                .iter()
                .find(|name| name.starts_with("config.") || name.contains(".config."))
            {
                anyhow::bail!(
                    "--scoped-webhooks lists {forbidden}: the policy and reflection ConfigMap webhooks must see every namespace"
                );
            }
            webhook_scope = Some(Arc::new(WebhookScope::new(
                client.clone(),
                settings,
                &args.policies.namespace,
                metrics.clone(),
            )));
        }
        Arc::new(cache)
    } else {
        let sources = if args.policies.policies.is_empty() {
            tracing::info!("no --policies given: serving the embedded example policies");
            PolicySources {
                configmaps: embedded_documents(&args.policies.namespace)?,
                slo_specs: Vec::new(),
            }
        } else {
            load_sources(&args.policies.policies, "default")?
        };
        let (spec_events, events) = store.replace_sources(&sources);
        for event in &spec_events {
            cluster::report_slo_spec(event);
        }
        for event in events {
            cluster::report(&event, &metrics);
        }
        Arc::new(())
    };

    let mut guard = Guard::new(store.clone(), workloads, metrics.clone()).with_slo(slo);
    if let Some((effects, own_username, ledger)) = cluster_effects {
        guard = guard
            .with_effects(effects, own_username)
            .with_ledger(ledger);
    }
    if let Some(scope) = &webhook_scope {
        guard = guard.with_scope(scope.clone());
    }
    let guard = Arc::new(guard);
    let state = AppState {
        guard,
        ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        preflight,
    };
    let handle: Handle<SocketAddr> = Handle::new();
    let limits = Limits::from(&args.limits);
    // Without TCP_NODELAY the first answer on a new connection can wait out the peer's
    // delayed ACK (40 ms on Linux), because it is written in more than one segment. The
    // connection bound comes first, so a refused connection costs no TLS work.
    let acceptor = PhasedAcceptor::new(
        axum_server::tls_rustls::RustlsAcceptor::new(tls_config)
            .handshake_timeout(limits.tls_handshake_timeout)
            .acceptor(CountedAcceptor::new(
                axum_server::accept::NoDelayAcceptor::new(),
                &limits,
                metrics.clone(),
            )),
        PhaseTimeouts {
            header: limits.header_read_timeout,
            idle: limits.idle_timeout,
        },
        metrics.clone(),
    );
    let mut server = axum_server::bind(args.listen)
        .acceptor(acceptor)
        .handle(handle.clone());
    let http = server.http_builder();
    // The header and idle deadlines are `PhasedAcceptor`'s: hyper's one timeout would
    // close idle connections as early as slow headers.
    http.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(None);
    http.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.h2_max_header_list_size)
        .max_pending_accept_reset_streams(limits.h2_max_pending_reset_streams)
        .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams)
        // A peer that stops answering pings is gone, or holding the connection hostage.
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    let draining = Draining::default();
    let app = router(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            RequestLimits {
                timeout: limits.request_timeout,
                metrics: metrics.clone(),
            },
            request_deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(
            draining.clone(),
            close_connections_when_draining,
        ));
    let server = tokio::spawn(server.serve(app.into_make_service()));

    let listening = handle
        .listening()
        .await
        .ok_or_else(|| anyhow::anyhow!("cannot listen on {}", args.listen))?;
    let ops_listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} (--metrics-listen): {e}",
                args.metrics_listen
            )
        })?;
    let ops_address = ops_listener.local_addr()?;
    let ops = ops_router(state.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(ops_listener, ops).await {
            tracing::error!(%error, "the operations port stopped");
        }
    });
    tracing::info!(address = %listening, metrics_address = %ops_address, "listening");

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
        // Only once the policies are loaded: the scope follows them.
        if let Some(scope) = webhook_scope {
            scope.run(store).await;
        }
    });

    shutdown_signal().await;
    tracing::info!("shutting down: reporting not ready, then draining");
    state.ready.store(false, Ordering::Release);
    draining.begin();
    tokio::time::sleep(args.shutdown_delay).await;
    handle.graceful_shutdown(Some(args.shutdown_grace));
    server.await??;
    if let Some(events) = &event_recorder {
        events.flush(EVENT_FLUSH_TIMEOUT).await;
    }
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
