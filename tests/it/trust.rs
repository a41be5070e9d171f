//! The signature verifier (src/trust/) against fixtures made by the independent Python signer
//! in tests/signing/: good Notary JWS and COSE signatures verify with their identity, each
//! forged or hostile envelope is rejected by the check that names its fault, Cosign key-based
//! signatures, and the verification levels. Needs `.venv` (made by `scripts/services up`), not
//! the services themselves.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use ecr_audit::domain::Digest;
use ecr_audit::trust::{
    CosignKey, Descriptor, Failure, Level, Limits, SignatureCheck, TrustPolicyDocument,
    TrustStores, Verifier, verify_cosign_simple_signing, verify_sigstore_bundle,
};

const SCOPE_CA: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com/team/app";
const SCOPE_SIGNER: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com/team/signed";
const PROFILE_VERSION_ARN: &str =
    "arn:aws:signer:us-east-1:111122223333:/signing-profiles/app_profile/abcdef1234";
const JOB_ARN: &str =
    "arn:aws:signer:us-east-1:111122223333:/signing-jobs/2f8c5b1e-1111-2222-3333-444455556666";

/// Fixtures written by `tests/signing/make_fixtures.py` into a fresh directory.
struct Fixtures {
    _dir: tempfile::TempDir,
    root: PathBuf,
    policy: TrustPolicyDocument,
    stores: TrustStores,
    subject: Descriptor,
}

impl Fixtures {
    fn make() -> Self {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("ECR_AUDIT_EMULATOR_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest_dir.join(".venv/bin/python"));
        assert!(
            python.exists(),
            "{} is missing: run `scripts/services up` once to create the test virtualenv \
             (it pins cryptography, jwcrypto and pycose for tests/signing/)",
            python.display()
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let status = Command::new(&python)
            .arg(manifest_dir.join("tests/signing/make_fixtures.py"))
            .arg(dir.path())
            .status()
            .expect("run make_fixtures.py");
        assert!(status.success(), "make_fixtures.py failed: {status}");
        let root = dir.path().to_owned();
        let policy = TrustPolicyDocument::from_json(
            &std::fs::read(root.join("trustpolicy.json")).expect("policy"),
        )
        .expect("the fixture policy is valid");
        let stores =
            TrustStores::load(&root.join("truststore"), &Limits::default()).expect("trust store");
        let subject = descriptor(&root.join("subject.json"));
        Self {
            _dir: dir,
            root,
            policy,
            stores,
            subject,
        }
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.root.join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
    }

    fn verify_with(
        &self,
        policy: &TrustPolicyDocument,
        limits: &Limits,
        file: &str,
        scope: &str,
    ) -> SignatureCheck {
        let media_type = if file.ends_with(".jws") {
            "application/jose+json"
        } else {
            "application/cose"
        };
        let verifier = Verifier {
            policy,
            stores: &self.stores,
            limits,
        };
        verifier.verify_notation(
            media_type,
            &self.read(file),
            &self.subject,
            scope,
            Utc::now(),
        )
    }

    fn verify(&self, file: &str, scope: &str) -> SignatureCheck {
        self.verify_with(&self.policy, &Limits::default(), file, scope)
    }
}

fn descriptor(path: &Path) -> Descriptor {
    let value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("descriptor")).expect("json");
    Descriptor {
        media_type: value["mediaType"].as_str().expect("mediaType").to_owned(),
        digest: Digest::parse(value["digest"].as_str().expect("digest")).expect("digest"),
        size: value["size"].as_u64().expect("size"),
    }
}

fn expect_rejected(check: &SignatureCheck, failure: Failure, file: &str) {
    match check {
        SignatureCheck::Rejected(rejection) => assert_eq!(
            rejection.failure, failure,
            "{file}: rejected for the wrong reason: {rejection}"
        ),
        other => panic!("{file}: expected {failure:?}, got {other:?}"),
    }
}

#[test]
fn good_notation_signatures_verify_in_both_envelopes_with_the_signer_identity() {
    let fx = Fixtures::make();
    for format in ["jws", "cose"] {
        for case in ["good", "good_rsa", "good_expiry_future"] {
            let file = format!("{case}.{format}");
            match fx.verify(&file, SCOPE_CA) {
                SignatureCheck::Verified(verified) => {
                    assert_eq!(
                        verified.identity.subject,
                        "C=US, ST=WA, L=Seattle, O=ecr-audit tests, CN=ecr-audit test signer",
                        "{file}"
                    );
                    assert_eq!(verified.scheme.as_str(), "notary.x509");
                    assert_eq!(verified.policy, "team-app");
                    assert!(
                        verified.warnings.is_empty(),
                        "{file}: {:?}",
                        verified.warnings
                    );
                    assert!(verified.envelope_digest.starts_with("sha256:"));
                }
                other => panic!("{file}: expected Verified, got {other:?}"),
            }
        }
        let file = format!("good_signer.{format}");
        match fx.verify(&file, SCOPE_SIGNER) {
            SignatureCheck::Verified(verified) => {
                assert_eq!(verified.scheme.as_str(), "notary.x509.signingAuthority");
                assert_eq!(
                    verified.identity.signer_profile_version_arn.as_deref(),
                    Some(PROFILE_VERSION_ARN)
                );
                assert_eq!(verified.identity.signer_job_arn.as_deref(), Some(JOB_ARN));
                assert!(
                    verified.identity.subject.contains("O=AWS Signer"),
                    "{}",
                    verified.identity.subject
                );
            }
            other => panic!("{file}: expected Verified, got {other:?}"),
        }
    }
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "a table of forged and hostile envelopes, one row per case"
)]
fn forged_and_hostile_notation_envelopes_are_rejected_by_the_check_they_break() {
    let fx = Fixtures::make();
    let both = |case: &'static str, scope: &'static str, failure: Failure| {
        [
            (format!("{case}.jws"), scope, failure),
            (format!("{case}.cose"), scope, failure),
        ]
    };
    let mut table: Vec<(String, &str, Failure)> = Vec::new();
    for (case, failure) in [
        ("junk", Failure::EnvelopeUnreadable),
        ("malformed", Failure::EnvelopeUnreadable),
        ("deep_nesting", Failure::EnvelopeUnreadable),
        ("hs256", Failure::UnsupportedAlgorithm),
        ("other_digest", Failure::DigestMismatch),
        ("other_media_type", Failure::MediaTypeMismatch),
        ("other_size", Failure::SizeMismatch),
        ("bad_signature", Failure::BadSignature),
        ("untrusted_root", Failure::UntrustedChain),
        ("identity_outside", Failure::IdentityNotTrusted),
        ("expired_cert", Failure::CertificateExpired),
        (
            "signed_outside_validity",
            Failure::CertificateNotValidAtSigningTime,
        ),
        ("expiry_passed", Failure::Expired),
        ("unknown_crit", Failure::UnknownCriticalHeader),
        ("wrong_eku", Failure::CertificateUsage),
        ("absurd_dates", Failure::UntrustedChain),
        ("oversized", Failure::EnvelopeTooLarge),
    ] {
        table.extend(both(case, SCOPE_CA, failure));
    }
    table.push((
        "alg_none.jws".to_owned(),
        SCOPE_CA,
        Failure::UnsupportedAlgorithm,
    ));
    table.push(("chain_100.cose".to_owned(), SCOPE_CA, Failure::ChainTooLong));
    table.push((
        "chain_100.jws".to_owned(),
        SCOPE_CA,
        Failure::EnvelopeTooLarge,
    ));
    table.extend(both(
        "signer_other_profile",
        SCOPE_SIGNER,
        Failure::IdentityNotTrusted,
    ));
    table.extend(both(
        "signer_scheme_x509",
        SCOPE_SIGNER,
        Failure::SchemeNotTrusted,
    ));
    // A signature of the ca:test hierarchy where the policy trusts only AWS Signer's store.
    table.extend(both("good", SCOPE_SIGNER, Failure::SchemeNotTrusted));
    table.push((
        "good.jws".to_owned(),
        "999999999999.dkr.ecr.us-east-1.amazonaws.com/other",
        Failure::NoPolicyForScope,
    ));
    for (file, scope, failure) in &table {
        let started = Instant::now();
        let check = fx.verify(file, scope);
        expect_rejected(&check, *failure, file);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{file} took {:?}",
            started.elapsed()
        );
        if let SignatureCheck::Rejected(rejection) = &check {
            assert!(!rejection.reason.is_empty(), "{file}: empty reason");
        }
    }
}

#[test]
fn a_hundred_certificate_chain_is_refused_by_count_even_when_the_size_limit_allows_it() {
    let fx = Fixtures::make();
    let roomy = Limits {
        max_envelope_bytes: 1024 * 1024,
        ..Limits::default()
    };
    let check = fx.verify_with(&fx.policy, &roomy, "chain_100.jws", SCOPE_CA);
    expect_rejected(&check, Failure::ChainTooLong, "chain_100.jws");
}

/// Notation's level table: which failures each level enforces, logs or skips.
#[test]
#[allow(
    clippy::too_many_lines,
    reason = "a table of forged and hostile envelopes, one row per case"
)]
fn verification_levels_enforce_log_or_skip_as_notation_defines() {
    let fx = Fixtures::make();
    let policy_at = |level: &str, overrides: &str| {
        let json = format!(
            r#"{{"version":"1.0","trustPolicies":[{{"name":"p","registryScopes":["{SCOPE_CA}"],
            "signatureVerification":{{"level":"{level}"{overrides}}},
            {stores}}}]}}"#,
            stores = if level == "skip" {
                r#""trustStores":[],"trustedIdentities":[]"#.to_owned()
            } else {
                r#""trustStores":["ca:test"],"trustedIdentities":["x509.subject: C=US, ST=WA, O=ecr-audit tests, CN=ecr-audit test signer"]"#.to_owned()
            }
        );
        TrustPolicyDocument::from_json(json.as_bytes()).expect("policy")
    };
    // (level, overrides, fixture, expected: Ok(warnings) or Err(failure), or None for skipped)
    type Expect = Option<Result<Vec<Failure>, Failure>>;
    let cases: Vec<(&str, &str, &str, Expect)> = vec![
        (
            "strict",
            "",
            "untrusted_root.jws",
            Some(Err(Failure::UntrustedChain)),
        ),
        (
            "permissive",
            "",
            "untrusted_root.jws",
            Some(Err(Failure::UntrustedChain)),
        ),
        (
            "audit",
            "",
            "untrusted_root.jws",
            Some(Ok(vec![Failure::UntrustedChain])),
        ),
        (
            "strict",
            "",
            "identity_outside.cose",
            Some(Err(Failure::IdentityNotTrusted)),
        ),
        (
            "audit",
            "",
            "identity_outside.cose",
            Some(Ok(vec![Failure::IdentityNotTrusted])),
        ),
        (
            "strict",
            "",
            "expiry_passed.jws",
            Some(Err(Failure::Expired)),
        ),
        (
            "permissive",
            "",
            "expiry_passed.jws",
            Some(Ok(vec![Failure::Expired])),
        ),
        (
            "audit",
            "",
            "expiry_passed.jws",
            Some(Ok(vec![Failure::Expired])),
        ),
        (
            "strict",
            r#","override":{"expiry":"log"}"#,
            "expiry_passed.jws",
            Some(Ok(vec![Failure::Expired])),
        ),
        (
            "permissive",
            r#","override":{"expiry":"enforce"}"#,
            "expiry_passed.cose",
            Some(Err(Failure::Expired)),
        ),
        (
            "strict",
            "",
            "expired_cert.cose",
            Some(Err(Failure::CertificateExpired)),
        ),
        (
            "permissive",
            "",
            "expired_cert.cose",
            Some(Ok(vec![Failure::CertificateExpired])),
        ),
        // Integrity is enforced at every level but skip.
        (
            "audit",
            "",
            "bad_signature.jws",
            Some(Err(Failure::BadSignature)),
        ),
        (
            "audit",
            "",
            "other_digest.cose",
            Some(Err(Failure::DigestMismatch)),
        ),
        (
            "permissive",
            "",
            "hs256.jws",
            Some(Err(Failure::UnsupportedAlgorithm)),
        ),
        ("skip", "", "bad_signature.jws", None),
        ("strict", "", "good.jws", Some(Ok(vec![]))),
        ("audit", "", "good.cose", Some(Ok(vec![]))),
    ];
    for (level, overrides, file, expected) in cases {
        let policy = policy_at(level, overrides);
        let check = fx.verify_with(&policy, &Limits::default(), file, SCOPE_CA);
        let label = format!("{level}{overrides} {file}");
        match (expected, check) {
            (None, SignatureCheck::Skipped { policy }) => assert_eq!(policy, "p"),
            (Some(Ok(warnings)), SignatureCheck::Verified(verified)) => {
                let got: Vec<Failure> = verified.warnings.iter().map(|w| w.failure).collect();
                assert_eq!(got, warnings, "{label}");
                assert_eq!(verified.level.as_str(), level, "{label}");
            }
            (Some(Err(failure)), check) => expect_rejected(&check, failure, &label),
            (expected, check) => panic!("{label}: expected {expected:?}, got {check:?}"),
        }
    }
    assert_eq!(Level::Audit.as_str(), "audit");
}

#[test]
fn cosign_key_signatures_verify_only_for_the_subject_digest_and_a_trusted_key() {
    let fx = Fixtures::make();
    let key = CosignKey::from_pem(&fx.read("cosign.pub")).expect("cosign.pub");
    let limits = Limits::default();
    let check = |case: &str, keys: &[CosignKey]| {
        let payload = fx.read(&format!("cosign-{case}.payload"));
        let signature = String::from_utf8(fx.read(&format!("cosign-{case}.sig"))).expect("utf-8");
        verify_cosign_simple_signing(&payload, &signature, &fx.subject.digest, keys, &limits)
    };
    match check("good", std::slice::from_ref(&key)) {
        SignatureCheck::Verified(verified) => {
            assert_eq!(verified.scheme.as_str(), "cosign.key");
            assert!(verified.identity.subject.contains(&key.fingerprint));
        }
        other => panic!("cosign good: {other:?}"),
    }
    expect_rejected(
        &check("other_digest", std::slice::from_ref(&key)),
        Failure::DigestMismatch,
        "cosign other_digest",
    );
    expect_rejected(
        &check("other_key", std::slice::from_ref(&key)),
        Failure::UntrustedKey,
        "cosign other_key",
    );
    expect_rejected(
        &check("good", &[]),
        Failure::UntrustedKey,
        "cosign without keys",
    );
    let other = CosignKey::from_pem(&fx.read("cosign-other.pub")).expect("cosign-other.pub");
    assert!(matches!(
        check("other_key", &[key, other]),
        SignatureCheck::Verified(_)
    ));
    expect_rejected(
        &verify_sigstore_bundle(b"{}"),
        Failure::KeylessNotConfigured,
        "sigstore bundle",
    );
}

#[test]
fn trust_stores_load_notation_layout_and_version_the_configuration() {
    let fx = Fixtures::make();
    use ecr_audit::trust::StoreKind;
    assert_eq!(
        fx.stores.roots(StoreKind::Ca, "test").map(<[_]>::len),
        Some(1)
    );
    assert_eq!(
        fx.stores
            .roots(StoreKind::SigningAuthority, "aws-signer")
            .map(<[_]>::len),
        Some(1)
    );
    assert!(
        fx.stores
            .roots(StoreKind::SigningAuthority, "test")
            .is_none()
    );
    let version = ecr_audit::trust::policy_version(&fx.policy, &fx.stores);
    let mut fewer = TrustStores::new();
    fewer
        .add(
            StoreKind::Ca,
            "test",
            &fx.read("truststore/x509/ca/test/root0.pem"),
        )
        .expect("pem");
    assert_ne!(
        version,
        ecr_audit::trust::policy_version(&fx.policy, &fewer)
    );
    assert_eq!(
        version,
        ecr_audit::trust::policy_version(&fx.policy, &fx.stores)
    );
}
