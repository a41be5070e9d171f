//! Trust configuration for end-to-end tests: a Notation trust store holding the emulator's
//! AWS Signer roots (`GET /_emulator/signer/roots`) and a `trustpolicy.json`, written into a
//! temporary directory and loaded the way the worker loads `ECR_AUDIT_TRUST_*`.

use std::path::{Path, PathBuf};

use ecr_audit::config::{DefaultTrustPolicy, TrustArgs};
use ecr_audit::trust::TrustSettings;
use serde_json::{Value, json};

/// The trust store name the policies below use (the one `notation` docs use for Signer).
pub const SIGNER_STORE: &str = "aws-signer-ts";

/// The emulator's Signer root certificates (every partition), as PEM.
pub async fn signer_roots_pem() -> String {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
    reqwest::get(format!("{endpoint}/_emulator/signer/roots"))
        .await
        .expect("signer roots")
        .error_for_status()
        .expect("signer roots status")
        .text()
        .await
        .expect("signer roots body")
}

/// A policy trusting the Signer store for every repository at `level`, for `identities`.
pub fn signer_policy(level: &str, identities: &[&str]) -> Value {
    json!({
        "version": "1.0",
        "trustPolicies": [{
            "name": "emulator-signer",
            "registryScopes": ["*"],
            "signatureVerification": {"level": level},
            "trustStores": [format!("signingAuthority:{SIGNER_STORE}")],
            "trustedIdentities": identities,
        }]
    })
}

/// Trust files written into a directory that lives as long as this value.
pub struct TrustFiles {
    pub dir: tempfile::TempDir,
    pub policy: PathBuf,
    pub store: PathBuf,
    pub cosign_keys: Vec<PathBuf>,
}

impl TrustFiles {
    /// A trust store with `stores` (`(kind, name, pem)`, kind `ca` or `signingAuthority`) and
    /// the policy `policy`.
    pub fn write(stores: &[(&str, &str, &str)], policy: &Value) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("truststore");
        for (kind, name, pem) in stores {
            let path = store.join("x509").join(kind).join(name);
            std::fs::create_dir_all(&path).expect("store dir");
            std::fs::write(path.join("roots.pem"), pem).expect("roots");
        }
        let policy_path = dir.path().join("trustpolicy.json");
        std::fs::write(
            &policy_path,
            serde_json::to_vec_pretty(policy).expect("json"),
        )
        .expect("policy");
        Self {
            policy: policy_path,
            store,
            cosign_keys: Vec::new(),
            dir,
        }
    }

    /// Adds a Cosign public key (PEM).
    pub fn with_cosign_key(mut self, pem: &str) -> Self {
        let path = self
            .dir
            .path()
            .join(format!("cosign-{}.pub", self.cosign_keys.len()));
        std::fs::write(&path, pem).expect("cosign key");
        self.cosign_keys.push(path);
        self
    }

    /// Loads them as the worker does at start-up.
    pub fn load(&self) -> TrustSettings {
        load(Some(&self.policy), Some(&self.store), &self.cosign_keys)
    }
}

/// Loads trust settings as `ECR_AUDIT_TRUST_POLICY`, `ECR_AUDIT_TRUST_STORE` and
/// `ECR_AUDIT_COSIGN_KEYS` would.
pub fn load(policy: Option<&Path>, store: Option<&Path>, cosign_keys: &[PathBuf]) -> TrustSettings {
    let limits = ecr_audit::trust::Limits::default();
    TrustArgs {
        trust_policy: policy.map(Path::to_path_buf),
        trust_store: store.map(Path::to_path_buf),
        // The emulator's Signer CA is not AWS's: AWS Signer's default policy would only reject
        // its signatures as untrusted_chain (tests of the default set it themselves).
        default_trust_policy: DefaultTrustPolicy::None,
        cosign_keys: cosign_keys.to_vec(),
        max_envelope_bytes: limits.max_envelope_bytes,
        max_signatures_per_digest: ecr_audit::trust::settings::DEFAULT_MAX_SIGNATURES_PER_DIGEST,
        max_chain_certificates: limits.max_chain_certificates,
    }
    .load()
    .expect("trust configuration")
}

/// What every `TestApp` verifies with unless a test sets its own: the emulator's Signer
/// roots, strict, any identity.
pub async fn emulator_trust() -> TrustSettings {
    let roots = signer_roots_pem().await;
    TrustFiles::write(
        &[("signingAuthority", SIGNER_STORE, &roots)],
        &signer_policy("strict", &["*"]),
    )
    .load()
}
