use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::certs::{CertBundle, CertRequest, ca_bundle, generate, write_bundle};

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Where ca.crt, ca.key, tls.crt and tls.key are written.
    #[arg(long, env = "SLO_GUARD_CERT_DIR", default_value = "slo-guard-certs")]
    pub out_dir: PathBuf,
    /// The webhook Service name; its cluster DNS names go into the certificate.
    #[arg(long, env = "SLO_GUARD_SERVICE")]
    pub service: Option<String>,
    /// The Service's namespace.
    #[arg(long, env = "SLO_GUARD_NAMESPACE", default_value = "slo-guard")]
    pub namespace: String,
    /// Extra DNS names (repeatable).
    #[arg(long = "dns", env = "SLO_GUARD_CERT_DNS", value_delimiter = ',')]
    pub dns: Vec<String>,
    /// IP addresses (repeatable), e.g. 127.0.0.1 for a webhook reached by URL.
    #[arg(long = "ip", env = "SLO_GUARD_CERT_IPS", value_delimiter = ',')]
    pub ips: Vec<IpAddr>,
    #[arg(long, env = "SLO_GUARD_CERT_VALIDITY_DAYS", default_value_t = 365)]
    pub validity_days: u32,
    /// In the cluster: store the certificate in this kubernetes.io/tls Secret (in
    /// --namespace). An existing Secret with a CA is reused unless --force.
    #[arg(long, env = "SLO_GUARD_CERT_SECRET")]
    pub secret: Option<String>,
    /// In the cluster: webhook configurations whose caBundle to set (validating or mutating, by name).
    #[arg(long, env = "SLO_GUARD_PATCH_WEBHOOKS", value_delimiter = ',')]
    pub patch_webhooks: Vec<String>,
    /// Replace the certificate even if the Secret already holds one.
    #[arg(long, default_value_t = false)]
    pub force: bool,
}

pub fn run(args: CertsArgs) -> ExitCode {
    let mut request = match &args.service {
        Some(service) => CertRequest::for_service(
            service,
            &args.namespace,
            &args.dns,
            &args.ips,
            args.validity_days,
        ),
        None => {
            let mut local = CertRequest::local(args.validity_days);
            local.dns_names.extend(args.dns.iter().cloned());
            local.ips.extend(args.ips.iter().copied());
            local
        }
    };
    request.ips.dedup();
    let in_cluster = args.secret.is_some() || !args.patch_webhooks.is_empty();
    let bundle = if in_cluster {
        let runtime = match super::current_thread_runtime() {
            Ok(runtime) => runtime,
            Err(code) => return code,
        };
        match runtime.block_on(install(&args, &request)) {
            Ok(bundle) => bundle,
            Err(error) => {
                eprintln!("error: {error:#}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        match generate(&request) {
            Ok(bundle) => bundle,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        }
    };
    if let Err(error) = write_bundle(&args.out_dir, &bundle) {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    eprintln!(
        "wrote {dir}/ca.crt, ca.key, tls.crt, tls.key for {names}; the caBundle is:",
        dir = args.out_dir.display(),
        names = request
            .dns_names
            .iter()
            .cloned()
            .chain(request.ips.iter().map(IpAddr::to_string))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("{}", ca_bundle(&bundle.ca_cert));
    ExitCode::SUCCESS
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok())
}

/// Creates or reuses the Secret, then points the webhook configurations at its CA.
async fn install(args: &CertsArgs, request: &CertRequest) -> anyhow::Result<CertBundle> {
    let client = Client::try_default().await?;
    let params = PatchParams::apply("slo-guard-certs").force();
    let bundle = match &args.secret {
        Some(name) => {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &args.namespace);
            let existing = secrets.get_opt(name).await?;
            let reusable = existing.as_ref().and_then(|secret| {
                Some(CertBundle {
                    ca_cert: secret_text(secret, "ca.crt")?,
                    ca_key: secret_text(secret, "ca.key").unwrap_or_default(),
                    tls_cert: secret_text(secret, "tls.crt")?,
                    tls_key: secret_text(secret, "tls.key")?,
                })
            });
            match reusable {
                Some(bundle) if !args.force => {
                    eprintln!(
                        "Secret {}/{name} already holds a certificate; reusing it",
                        args.namespace
                    );
                    bundle
                }
                _ => {
                    let bundle = generate(request)?;
                    let bytes = |text: &str| ByteString(text.as_bytes().to_vec());
                    let secret = Secret {
                        metadata: kube::api::ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some(args.namespace.clone()),
                            labels: Some(
                                [(
                                    "app.kubernetes.io/name".to_string(),
                                    "slo-guard".to_string(),
                                )]
                                .into(),
                            ),
                            ..Default::default()
                        },
                        type_: Some("kubernetes.io/tls".to_string()),
                        // The CA key is not stored: nothing in the cluster needs to sign.
                        data: Some(
                            [
                                ("tls.crt".to_string(), bytes(&bundle.tls_cert)),
                                ("tls.key".to_string(), bytes(&bundle.tls_key)),
                                ("ca.crt".to_string(), bytes(&bundle.ca_cert)),
                            ]
                            .into(),
                        ),
                        ..Default::default()
                    };
                    secrets.patch(name, &params, &Patch::Apply(&secret)).await?;
                    eprintln!("wrote Secret {}/{name}", args.namespace);
                    bundle
                }
            }
        }
        None => generate(request)?,
    };
    let ca = ByteString(bundle.ca_cert.as_bytes().to_vec());
    // The chart names both configurations alike, so each name is looked up as both kinds.
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    for name in &args.patch_webhooks {
        let mut patched = false;
        if let Some(mut config) = validating.get_opt(name).await? {
            for webhook in config.webhooks.iter_mut().flatten() {
                webhook.client_config.ca_bundle = Some(ca.clone());
            }
            validating
                .replace(name, &Default::default(), &config)
                .await?;
            eprintln!("set caBundle on ValidatingWebhookConfiguration {name}");
            patched = true;
        }
        if let Some(mut config) = mutating.get_opt(name).await? {
            for webhook in config.webhooks.iter_mut().flatten() {
                webhook.client_config.ca_bundle = Some(ca.clone());
            }
            mutating.replace(name, &Default::default(), &config).await?;
            eprintln!("set caBundle on MutatingWebhookConfiguration {name}");
            patched = true;
        }
        if !patched {
            anyhow::bail!(
                "no ValidatingWebhookConfiguration or MutatingWebhookConfiguration named {name}"
            );
        }
    }
    Ok(bundle)
}
