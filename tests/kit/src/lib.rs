//! slo-guard's test kit: what the integration tests, the benches and the fuzz crate
//! share, written once. It reads as a table of contents:
//!
//! - this file: where the repository is, the identities the tests act as, a free port,
//!   and the statistics the benches report;
//! - [`fixtures`]: the captured AdmissionReviews, the baseline policies, the watch cache
//!   with the checkout Deployment, and a [`Guard`](slo_guard::guard::Guard) over them;
//! - [`router`]: slo-guard's router served over real TLS on loopback;
//! - [`policies`]: policy ConfigMaps built from their `policy.yaml`;
//! - [`http`]: reading raw HTTP/1.1 heads, for the proxies and stand-ins below;
//! - [`prometheus`]: the real-Prometheus harness, proxies in front of it, and a stand-in
//!   Prometheus that answers every query with one sample;
//! - [`e2e`]: a real control plane (tests/e2e/cluster.sh), slo-guard as a local process,
//!   and kubectl with a recorded transcript; or one such cluster shared by a test
//!   binary's tests, each in its own namespace ([`e2e::TestNs`]).
//!
//! Every path the kit reads is inside this repository, so it works on a clean clone.

pub mod e2e;
pub mod fixtures;
pub mod http;
pub mod policies;
pub mod prometheus;
pub mod router;
pub mod sched;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

/// The agent the fixtures and policies govern: a ServiceAccount the policies' `agents`
/// pattern `system:serviceaccount:ai-agents:*` matches.
pub const AGENT: &str = "system:serviceaccount:ai-agents:fixer";

/// The identity kube-controller-manager's HPA controller writes scale changes as.
pub const HPA_CONTROLLER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";

/// The repository's top directory (where Cargo.toml, tests/ and policies/ are): the kit
/// lives two levels below it, in tests/kit.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/kit sits two levels below the repository's top")
        .to_path_buf()
}

/// `relative` under the repository's top directory.
pub fn root_path(relative: &str) -> PathBuf {
    root().join(Path::new(relative))
}

/// The `slo-guard` binary Cargo built for this test or bench run.
///
/// `env!("CARGO_BIN_EXE_slo-guard")` is only set when Cargo compiles an integration test
/// or bench, not a library such as this kit, so the path is found at run time: from
/// Cargo's environment when it sets it, else next to the running test's `deps/` folder,
/// where Cargo puts the binaries of the same build.
pub fn slo_guard_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_slo-guard") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the running test's path");
    let deps = exe.parent().expect("the test binary is in a folder");
    let profile = if deps.ends_with("deps") {
        deps.parent().expect("deps/ has a parent")
    } else {
        deps
    };
    profile.join(format!("slo-guard{}", std::env::consts::EXE_SUFFIX))
}

/// Runs the `slo-guard` binary with `args` from the repository's top directory, as a
/// user runs it from a checkout, and waits for it.
pub fn slo_guard(args: &[&str]) -> Output {
    Command::new(slo_guard_bin())
        .args(args)
        .current_dir(root())
        .output()
        .expect("slo-guard runs")
}

/// Bytes a process printed, as text (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A loopback port nothing listens on right now. Another process may take it before the
/// caller binds it; tests that must not race bind `127.0.0.1:0` themselves.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// The `p` quantile (0.0 to 1.0) of `sorted`, by the nearest index; zero when empty.
/// The benches report latencies with it.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A rustls client configuration (ring) that trusts only the CA certificates in the PEM
/// file `ca` and offers `alpn` (e.g. `h2`), as the benches' clients connect to a server
/// whose CA `slo-guard certs` made. The error names the file.
pub fn client_tls_config(ca: &Path, alpn: &[u8]) -> Result<rustls::ClientConfig, String> {
    let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", ca.display());
    let pem = std::fs::read(ca).map_err(|e| failed(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots
            .add(cert.map_err(|e| failed(&e))?)
            .map_err(|e| failed(&e))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| failed(&e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}
