use std::process::ExitCode;

// Each review allocates many small JSON nodes and strings; glibc's allocator took about
// 40% of the server's instructions in the load profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // One rustls crypto provider for the server, the kube client and the Prometheus
    // client; it must be installed before any of them builds a TLS config.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("error: a rustls crypto provider was already installed");
        return ExitCode::FAILURE;
    }
    slo_guard::cli::run()
}
