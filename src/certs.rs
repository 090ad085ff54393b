//! A CA and a serving certificate for the webhook, so `serve` can start with TLS on a
//! machine that has none, and `slo-guard certs` can produce the caBundle for the
//! webhook configurations.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen failed to make a key or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A DNS name that cannot be a subject alternative name.
    #[error("invalid subject name {name:?}: {source}")]
    Name {
        /// The name.
        name: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// What to put in the serving certificate.
#[derive(Debug, Clone)]
pub struct CertRequest {
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ips: Vec<IpAddr>,
    /// How long the serving certificate is valid.
    pub validity_days: u32,
}

impl CertRequest {
    /// The names a webhook Service is reached by, plus any extra names and addresses.
    pub fn for_service(
        service: &str,
        namespace: &str,
        extra_dns: &[String],
        ips: &[IpAddr],
        validity_days: u32,
    ) -> Self {
        let mut dns_names = vec![
            service.to_string(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
        ];
        dns_names.extend(extra_dns.iter().cloned());
        dns_names.dedup();
        Self {
            dns_names,
            ips: ips.to_vec(),
            validity_days,
        }
    }

    /// For a server on this machine: localhost and the loopback addresses.
    pub fn local(validity_days: u32) -> Self {
        Self {
            dns_names: vec!["localhost".to_string()],
            ips: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ],
            validity_days,
        }
    }
}

/// PEM-encoded CA and serving certificate.
#[derive(Debug, Clone)]
pub struct CertBundle {
    /// The CA certificate: the webhooks' caBundle.
    pub ca_cert: String,
    /// The CA's key, which signs renewals.
    pub ca_key: String,
    /// The serving certificate.
    pub tls_cert: String,
    /// The serving certificate's key.
    pub tls_key: String,
}

/// A new CA and a serving certificate it signs, for `request`.
pub fn generate(request: &CertRequest) -> Result<CertBundle, CertError> {
    let now = time::OffsetDateTime::now_utc();
    let not_before = now - time::Duration::hours(1);

    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "slo-guard webhook CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    // The CA outlives the serving certificate so the caBundle survives a serving-cert renewal.
    ca_params.not_after = now + time::Duration::days(i64::from(request.validity_days) * 4);
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        request
            .dns_names
            .first()
            .cloned()
            .unwrap_or_else(|| "slo-guard".to_string()),
    );
    for name in &request.dns_names {
        let dns = name.clone().try_into().map_err(|source| CertError::Name {
            name: name.clone(),
            source,
        })?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    params
        .subject_alt_names
        .extend(request.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    params.not_after = now + time::Duration::days(i64::from(request.validity_days));
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;

    Ok(CertBundle {
        ca_cert: ca.pem(),
        ca_key: ca_key_pem,
        tls_cert: cert.pem(),
        tls_key: key.serialize_pem(),
    })
}

/// Paths of a bundle written by [`write_bundle`].
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// `ca.crt`.
    pub ca_cert: PathBuf,
    /// `tls.crt`.
    pub tls_cert: PathBuf,
    /// `tls.key`.
    pub tls_key: PathBuf,
}

impl CertFiles {
    /// The files' paths in `dir`, named as a `kubernetes.io/tls` Secret names them.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.crt"),
            tls_cert: dir.join("tls.crt"),
            tls_key: dir.join("tls.key"),
        }
    }
}

/// Writes ca.crt, ca.key, tls.crt and tls.key into `dir`; the keys are readable by the
/// owner only.
pub fn write_bundle(dir: &Path, bundle: &CertBundle) -> Result<CertFiles, CertError> {
    let write = |name: &str, contents: &str, private: bool| {
        let path = dir.join(name);
        write_file(&path, contents, private).map_err(|source| CertError::Write { path, source })
    };
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write("ca.crt", &bundle.ca_cert, false)?;
    write("ca.key", &bundle.ca_key, true)?;
    write("tls.crt", &bundle.tls_cert, false)?;
    write("tls.key", &bundle.tls_key, true)?;
    Ok(CertFiles::in_dir(dir))
}

fn write_file(path: &Path, contents: &str, private: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())
}

/// The caBundle value for a webhook configuration: the CA PEM, base64-encoded.
pub fn ca_bundle(ca_pem: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_cover_every_way_the_apiserver_dials() {
        let request = CertRequest::for_service("slo-guard", "slo-guard", &[], &[], 365);
        assert_eq!(
            request.dns_names,
            [
                "slo-guard",
                "slo-guard.slo-guard",
                "slo-guard.slo-guard.svc",
                "slo-guard.slo-guard.svc.cluster.local"
            ]
        );
    }

    #[test]
    fn writes_pem_files_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = generate(&CertRequest::local(30)).unwrap();
        let files = write_bundle(dir.path(), &bundle).unwrap();
        let cert = std::fs::read_to_string(&files.tls_cert).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            std::fs::read_to_string(&files.tls_key)
                .unwrap()
                .contains("PRIVATE KEY")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.tls_key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key must not be group/world readable");
        }
        assert_ne!(bundle.ca_cert, bundle.tls_cert);
    }
}
