//! The admission webhook's TLS listener (`ECR_AUDIT_ADMISSION_ADDR`): the Kubernetes API
//! server calls webhooks only over HTTPS. The certificate and key are PEM files
//! (`ECR_AUDIT_TLS_CERT`, `ECR_AUDIT_TLS_KEY`) reloaded when either file changes, so a
//! cert-manager renewal needs no restart; a pair that fails to load keeps the previous one.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::http::{HttpLimits, HttpState};

/// Why the TLS certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a PEM {what}: {detail}")]
    Pem {
        path: String,
        what: &'static str,
        detail: String,
    },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The certificate and key files, and the acceptor built from them at their last change.
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<(Option<SystemTime>, Option<SystemTime>, TlsAcceptor)>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn acceptor(cert: &PathBuf, key: &PathBuf) -> Result<TlsAcceptor, TlsError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let pem = |path: &PathBuf, what: &'static str, detail: String| TlsError::Pem {
        path: path.display().to_string(),
        what,
        detail,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert, "certificate chain", e.to_string()))?;
    if chain.is_empty() {
        return Err(pem(cert, "certificate chain", "no certificate".to_owned()));
    }
    let private = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| pem(key, "private key", e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, private)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl TlsFiles {
    /// Loads the pair once, so a bad certificate stops start-up.
    ///
    /// # Errors
    /// When either file cannot be read or they do not make a TLS configuration.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Self, TlsError> {
        let stamps = (modified(&cert), modified(&key));
        let built = acceptor(&cert, &key)?;
        Ok(Self {
            cert,
            key,
            current: Mutex::new((stamps.0, stamps.1, built)),
        })
    }

    /// The acceptor for a new connection, rebuilt first when a file changed since.
    fn acceptor(&self) -> TlsAcceptor {
        let stamps = (modified(&self.cert), modified(&self.key));
        let Ok(mut current) = self.current.lock() else {
            // A panic while reloading poisoned the lock: reloading is a nicety, serving is not.
            return self.fallback();
        };
        if (current.0, current.1) != stamps {
            match acceptor(&self.cert, &self.key) {
                Ok(built) => {
                    info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    *current = (stamps.0, stamps.1, built);
                }
                // Half-written during a renewal, most likely: keep the old pair, retry later.
                Err(err) => warn!(error = %err, "TLS certificate not reloaded"),
            }
        }
        current.2.clone()
    }

    fn fallback(&self) -> TlsAcceptor {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .2
            .clone()
    }
}

/// Serves the HTTP routes over TLS until `shutdown`, within the same bounds as the plain
/// listener: the handshake and the headers each within `header_read_timeout`.
///
/// # Errors
/// Never today; failed accepts and handshakes are logged.
pub(crate) async fn serve_tls(
    listener: TcpListener,
    files: Arc<TlsFiles>,
    state: HttpState,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = super::http::router(state, limits.request_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    warn!(error = %err, "could not accept a TLS connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = files.acceptor();
        let (app, shutdown) = (app.clone(), shutdown.clone());
        connections.spawn(async move {
            let handshake =
                tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(tls)) => {
                    super::http::serve_connection(
                        tls,
                        app,
                        limits.header_read_timeout,
                        shutdown,
                        slot,
                    )
                    .await;
                }
                Ok(Err(err)) => debug!(error = %err, "TLS handshake failed"),
                Err(_) => debug!("TLS handshake timed out"),
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}
