//! Serving TLS config: loading PEM files and picking up rotated ones (a Secret volume
//! swaps a symlink), so certificates renew without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;

/// Why a certificate and key pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error("{path} holds no PEM private key")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the pair (a key that does not match, an unsupported algorithm).
    #[error("certificate and key do not make a TLS config: {0}")]
    Config(#[from] rustls::Error),
}

/// The serving config for a PEM certificate chain and key, offering HTTP/2 and HTTP/1.1.
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: cert_path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: key_path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: key_path.to_path_buf(),
        })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What identifies one version of a file: its modification time, size and (on Unix) its
/// inode. metadata() follows symlinks, so a Secret volume's `..data` swap changes it, and
/// so does a copy that keeps the old modification time (`cp -p`, `rsync -t`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn version(path: &Path) -> Option<Version> {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Version {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        inode,
    })
}

/// The versions of a certificate and key pair, taken before loading them, so a rotation
/// that lands between the first load and the watch is not missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileVersions(Option<Version>, Option<Version>);

/// The versions of the pair now.
pub fn file_versions(cert_path: &Path, key_path: &Path) -> FileVersions {
    FileVersions(version(cert_path), version(key_path))
}

/// Reloads the certificate whenever either file changes. A pair that fails to load (for
/// example, caught halfway through a non-atomic copy) is skipped and retried at the next
/// tick; the current certificate keeps serving.
pub async fn watch_for_rotation(
    config: RustlsConfig,
    cert_path: PathBuf,
    key_path: PathBuf,
    every: Duration,
    loaded: FileVersions,
) {
    let mut seen = loaded;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = file_versions(&cert_path, &key_path);
        if now == seen {
            continue;
        }
        match server_config(&cert_path, &key_path) {
            Ok(server_config) => {
                config.reload_from_config(server_config);
                seen = now;
                tracing::info!(cert = %cert_path.display(), "reloaded serving certificate");
            }
            Err(error) => {
                tracing::warn!(%error, "rotated certificate not loaded yet; still serving the previous one")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_replaced_file_is_a_new_version_even_with_the_old_modification_time() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, "one").unwrap();
        std::fs::write(&key, "key").unwrap();
        let before = file_versions(&cert, &key);
        assert_eq!(before, file_versions(&cert, &key));
        let modified = std::fs::metadata(&cert).unwrap().modified().unwrap();
        // As `cp -p` or `rsync -t` would: same size, same time, another file.
        let staged = dir.path().join("staged");
        std::fs::write(&staged, "two").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&staged)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        std::fs::rename(&staged, &cert).unwrap();
        assert_eq!(
            std::fs::metadata(&cert).unwrap().modified().unwrap(),
            modified
        );
        assert_ne!(before, file_versions(&cert, &key));
    }
}
