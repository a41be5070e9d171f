//! Start-up loading of the trust configuration: what is accepted, and the setting each refusal
//! names. Uses the fuzz target's policy and root (fuzz/verify_envelope/).

use std::path::Path;

use super::*;
use crate::trust::settings::NO_POLICY_VERSION;

const POLICY: &[u8] = include_bytes!("../../../fuzz/verify_envelope/trustpolicy.json");
const ROOT: &[u8] = include_bytes!("../../../fuzz/verify_envelope/root.pem");
const COSIGN_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE1TNY5MG8+KaYr0MTWXRqpeAxkvYy
D7nXQbZnc+ImIfv200EB1WUkzdI4fahO8NHxxqL4rkmlvNkPxADgr1IJsg==
-----END PUBLIC KEY-----
";

fn args() -> TrustArgs {
    TrustArgs {
        trust_policy: None,
        trust_store: None,
        default_trust_policy: DefaultTrustPolicy::AwsSigner,
        cosign_keys: Vec::new(),
        max_envelope_bytes: Limits::default().max_envelope_bytes,
        max_signatures_per_digest: DEFAULT_MAX_SIGNATURES_PER_DIGEST,
        max_chain_certificates: Limits::default().max_chain_certificates,
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("test directory");
    }
    std::fs::write(&path, bytes).expect("test file");
    path
}

fn store_with(dir: &Path, kind_and_name: &str) -> PathBuf {
    let store = dir.join("store");
    write(&store, &format!("x509/{kind_and_name}/root.pem"), ROOT);
    store
}

#[test]
fn default_none_is_the_explicit_no_policy() {
    let mut args = args();
    args.default_trust_policy = DefaultTrustPolicy::None;
    let settings = args.load().expect("no settings are valid");
    assert!(settings.policy.is_none());
    assert!(!settings.aws_signer_default);
    assert_eq!(settings.version(), NO_POLICY_VERSION);
    assert_eq!(settings.no_policy_reason(), "no trust policy configured");
    let rejection = TrustSettings::no_policy_rejection();
    assert_eq!(rejection.failure.as_str(), "no_trust_policy");
    assert_eq!(rejection.reason, "no trust policy configured");
}

#[test]
fn nothing_configured_is_aws_signers_default_for_the_registrys_profiles() {
    let settings = args().load().expect("no settings are valid");
    assert!(settings.policy.is_none());
    assert!(settings.aws_signer_default);
    let profile = "arn:aws:signer:us-east-1:111122223333:/signing-profiles/release";
    let effective = settings.for_registry([profile]);
    let policy = effective.policy.as_ref().expect("the default policy");
    assert_eq!(policy.document.policies[0].name, "aws-signer-default");
    assert!(
        effective
            .version()
            .starts_with(&crate::trust::aws_signer::version_family())
    );
    // No managed-signing rule: nothing to trust, and the reason says so; the version is
    // still the default's family, so a worker start does not re-verify every digest.
    assert!(settings.for_registry([]).policy.is_none());
    assert_eq!(
        settings.version(),
        format!("{}none", crate::trust::aws_signer::version_family())
    );
    assert!(settings.no_policy_reason().contains("managed-signing rule"));
}

#[test]
fn a_configured_policy_replaces_the_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = args();
    args.trust_policy = Some(write(dir.path(), "trustpolicy.json", POLICY));
    args.trust_store = Some(store_with(dir.path(), "ca/test"));
    let settings = args.load().expect("valid configuration");
    assert!(!settings.aws_signer_default);
    let profile = "arn:aws:signer:us-east-1:111122223333:/signing-profiles/release";
    let effective = settings.for_registry([profile]);
    let policy = effective.policy.as_ref().expect("the configured policy");
    assert_eq!(policy.document.policies[0].name, "fuzz");
}

#[test]
fn a_policy_with_its_store_loads_with_a_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = args();
    args.trust_policy = Some(write(dir.path(), "trustpolicy.json", POLICY));
    args.trust_store = Some(store_with(dir.path(), "ca/test"));
    let settings = args.load().expect("valid configuration");
    let policy = settings.policy.as_ref().expect("a policy");
    assert_eq!(policy.document.policies[0].name, "fuzz");
    assert!(settings.version().starts_with("sha256:"));
}

#[test]
fn a_store_the_policy_names_must_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = args();
    args.trust_policy = Some(write(dir.path(), "trustpolicy.json", POLICY));
    args.trust_store = Some(store_with(dir.path(), "ca/other"));
    let error = args.load().expect_err("ca:test is missing").to_string();
    assert!(error.contains("ca:test"), "{error}");
    args.trust_store = None;
    let error = args.load().expect_err("no store at all").to_string();
    assert!(error.contains("ECR_AUDIT_TRUST_STORE"), "{error}");
}

#[test]
fn a_store_without_a_policy_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = args();
    args.trust_store = Some(store_with(dir.path(), "ca/test"));
    let error = args.load().expect_err("store alone").to_string();
    assert!(error.contains("ECR_AUDIT_TRUST_POLICY is not"), "{error}");
}

#[test]
fn a_broken_policy_names_the_file_and_the_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = args();
    let path = write(
        dir.path(),
        "p.json",
        br#"{"version": "2.0", "trustPolicies": []}"#,
    );
    args.trust_policy = Some(path.clone());
    let error = args.load().expect_err("version 2.0").to_string();
    assert!(error.contains("ECR_AUDIT_TRUST_POLICY"), "{error}");
    assert!(error.contains("p.json") && error.contains("2.0"), "{error}");
    args.trust_policy = Some(dir.path().join("absent.json"));
    let error = args.load().expect_err("missing file").to_string();
    assert!(error.contains("absent.json"), "{error}");
}

#[test]
fn cosign_keys_load_and_change_the_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = args();
    args.default_trust_policy = DefaultTrustPolicy::None;
    args.cosign_keys = vec![write(dir.path(), "cosign.pub", COSIGN_PUB.as_bytes())];
    let settings = args.load().expect("a P-256 key");
    assert_eq!(settings.cosign_keys.len(), 1);
    assert!(settings.version().starts_with("none+cosign:sha256:"));
    args.cosign_keys = vec![write(dir.path(), "junk.pub", b"not a key")];
    let error = args.load().expect_err("junk key").to_string();
    assert!(
        error.contains("ECR_AUDIT_COSIGN_KEYS") && error.contains("junk.pub"),
        "{error}"
    );
}

#[test]
fn limits_must_be_sane() {
    let mut args = args();
    args.max_envelope_bytes = 0;
    let error = args.load().expect_err("zero").to_string();
    assert!(error.contains("ECR_AUDIT_MAX_ENVELOPE_BYTES"), "{error}");
    args.max_envelope_bytes = 1 << 30;
    assert!(args.load().is_err());
    args.max_envelope_bytes = 8192;
    args.max_signatures_per_digest = 0;
    let error = args.load().expect_err("zero").to_string();
    assert!(
        error.contains("ECR_AUDIT_MAX_SIGNATURES_PER_DIGEST"),
        "{error}"
    );
    args.max_signatures_per_digest = 4;
    args.max_chain_certificates = 3;
    let settings = args.load().expect("in range");
    assert_eq!(settings.limits.max_envelope_bytes, 8192);
    assert_eq!(settings.limits.max_chain_certificates, 3);
    assert_eq!(settings.max_signatures_per_digest, 4);
}
