//! Trust stores in Notation's directory layout (`x509/ca/NAME/`, `x509/signingAuthority/NAME/`,
//! certificates as `.pem`, `.crt` or `.cer`, PEM or DER), held in memory. `load` is the only
//! file I/O of the trust module; everything else works on bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use super::Limits;
use super::policy::{StoreKind, is_store_name};

/// Why a trust store directory could not be read.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is a symbolic link; Notation's trust store layout forbids them")]
    Symlink { path: PathBuf },
    #[error("{path} is larger than {max} bytes")]
    FileTooLarge { path: PathBuf, max: u64 },
    #[error("trust store {store} has more than {max} certificate files")]
    TooManyFiles { store: String, max: usize },
    #[error("more than {max} named trust stores")]
    TooManyStores { max: usize },
    #[error("{path} holds no certificate (PEM CERTIFICATE blocks or one DER certificate)")]
    NoCertificate { path: PathBuf },
}

/// Named stores of root certificates, and a digest of their contents for the policy version.
#[derive(Debug, Clone, Default)]
pub struct TrustStores {
    stores: BTreeMap<(StoreKind, String), Vec<CertificateDer<'static>>>,
}

impl TrustStores {
    /// An empty set of stores.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds certificates (PEM blocks, or one DER certificate) to the store `kind:name`.
    ///
    /// # Errors
    /// When the bytes hold no certificate.
    pub fn add(&mut self, kind: StoreKind, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let certs = certificates_in(bytes).ok_or_else(|| StoreError::NoCertificate {
            path: PathBuf::from(format!("{}:{name}", kind.as_str())),
        })?;
        self.stores
            .entry((kind, name.to_owned()))
            .or_default()
            .extend(certs);
        Ok(())
    }

    /// The roots of the store `kind:name`, if configured.
    pub fn roots(&self, kind: StoreKind, name: &str) -> Option<&[CertificateDer<'static>]> {
        self.stores.get(&(kind, name.to_owned())).map(Vec::as_slice)
    }

    /// SHA-256 over every store's name and certificates, in a fixed order (hex).
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        for ((kind, name), certs) in &self.stores {
            hasher.update(kind.as_str().as_bytes());
            hasher.update([0]);
            hasher.update(name.as_bytes());
            hasher.update([0]);
            for cert in certs {
                hasher.update((cert.len() as u64).to_be_bytes());
                hasher.update(cert.as_ref());
            }
        }
        hex::encode(hasher.finalize())
    }

    /// Reads a Notation trust store directory (the one holding `x509/`). Sub-directories of a
    /// named store are ignored, as Notation does; symbolic links are refused.
    ///
    /// # Errors
    /// A [`StoreError`] naming the file and the limit or problem.
    pub fn load(dir: &Path, limits: &Limits) -> Result<Self, StoreError> {
        let mut stores = Self::new();
        for kind in [StoreKind::Ca, StoreKind::SigningAuthority] {
            let kind_dir = dir.join("x509").join(kind.as_str());
            if !kind_dir.is_dir() {
                continue;
            }
            for (name, store_dir) in named_stores(&kind_dir)? {
                if stores.stores.len() >= limits.max_trust_stores {
                    return Err(StoreError::TooManyStores {
                        max: limits.max_trust_stores,
                    });
                }
                let certs = read_store(&store_dir, &name, limits)?;
                stores.stores.insert((kind, name), certs);
            }
        }
        Ok(stores)
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn named_stores(kind_dir: &Path) -> Result<Vec<(String, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(kind_dir).map_err(io_error(kind_dir))? {
        let entry = entry.map_err(io_error(kind_dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_error(&path))?;
        if file_type.is_symlink() {
            return Err(StoreError::Symlink { path });
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if file_type.is_dir() && is_store_name(&name) {
            found.push((name, path));
        }
    }
    found.sort();
    Ok(found)
}

fn read_store(
    store_dir: &Path,
    name: &str,
    limits: &Limits,
) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(store_dir).map_err(io_error(store_dir))? {
        let entry = entry.map_err(io_error(store_dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_error(&path))?;
        if file_type.is_symlink() {
            return Err(StoreError::Symlink { path });
        }
        let certificate_file = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "pem" | "crt" | "cer"));
        if file_type.is_file() && certificate_file {
            files.push(path);
        }
    }
    if files.len() > limits.max_store_files {
        return Err(StoreError::TooManyFiles {
            store: name.to_owned(),
            max: limits.max_store_files,
        });
    }
    files.sort();
    let mut certs = Vec::new();
    for path in files {
        let size = std::fs::metadata(&path).map_err(io_error(&path))?.len();
        if size > limits.max_store_file_bytes {
            return Err(StoreError::FileTooLarge {
                path,
                max: limits.max_store_file_bytes,
            });
        }
        let bytes = std::fs::read(&path).map_err(io_error(&path))?;
        certs.extend(certificates_in(&bytes).ok_or(StoreError::NoCertificate { path })?);
    }
    Ok(certs)
}

/// PEM CERTIFICATE blocks, or else the whole input as one DER certificate.
fn certificates_in(bytes: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    let pem: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bytes)
        .filter_map(Result::ok)
        .collect();
    if !pem.is_empty() {
        return Some(pem);
    }
    // A DER certificate starts with a SEQUENCE tag.
    (bytes.first() == Some(&0x30)).then(|| vec![CertificateDer::from(bytes.to_vec())])
}
