//! Verified signatures decide the verdict, end to end: signatures are pushed to the emulator,
//! their events travel EventBridge → SQS → the real worker, and the digest's verdict and
//! per-signature verifications are read back. Forged, foreign, expired and revoked signatures
//! are `UNTRUSTED` naming the failed check; real ones (Python's independent signer in
//! tests/signing, and the emulator's managed signing) are `SIGNED` with the identity recorded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ecr_audit::facts::VerificationResult;
use ecr_audit::readmodel::ImageRow;
use serde_json::{Value, json};

use crate::helpers::{TestApp, push_image, sha256_hex};
use crate::trust_config::{SIGNER_STORE, TrustFiles, signer_roots_pem};
use crate::verified_signatures::upload_blob;

const WAIT: Duration = Duration::from_secs(30);
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// The signer's output directory (tests/signing/sign_for_pipeline.py).
pub(crate) struct Signed {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Signed {
    /// Signs each of `subjects` (descriptors) with the independent Python signer.
    pub(crate) fn make(subjects: &[Value]) -> Self {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("ECR_AUDIT_EMULATOR_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest_dir.join(".venv/bin/python"));
        let dir = tempfile::tempdir().expect("temporary directory");
        let subjects_path = dir.path().join("subjects.json");
        std::fs::write(&subjects_path, Value::from(subjects.to_vec()).to_string())
            .expect("subjects");
        let root = dir.path().join("signed");
        let status = Command::new(&python)
            .arg(manifest_dir.join("tests/signing/sign_for_pipeline.py"))
            .arg(&root)
            .arg(&subjects_path)
            .status()
            .expect("run sign_for_pipeline.py");
        assert!(status.success(), "sign_for_pipeline.py failed: {status}");
        Self { _dir: dir, root }
    }

    pub(crate) fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn text(&self, name: &str) -> String {
        String::from_utf8(self.read(name)).expect("utf-8")
    }

    /// `trusted` or `other` from identities.json.
    pub(crate) fn identity(&self, which: &str) -> String {
        let identities: Value =
            serde_json::from_slice(&self.read("identities.json")).expect("json");
        identities[which].as_str().expect("identity").to_owned()
    }
}

/// A strict global policy trusting the emulator's Signer roots and the Python signer's `ca`
/// root, for `identities`, with the Python signer's Cosign key.
pub(crate) async fn trust_for(signed: &Signed, identities: &[&str]) -> TrustFiles {
    let roots = signer_roots_pem().await;
    let ca = signed.text("ca.pem");
    let policy = json!({
        "version": "1.0",
        "trustPolicies": [{
            "name": "e2e",
            "registryScopes": ["*"],
            "signatureVerification": {"level": "strict"},
            "trustStores": [format!("signingAuthority:{SIGNER_STORE}"), "ca:test"],
            "trustedIdentities": identities,
        }]
    });
    TrustFiles::write(
        &[
            ("signingAuthority", SIGNER_STORE, &roots),
            ("ca", "test", &ca),
        ],
        &policy,
    )
    .with_cosign_key(&signed.text("cosign.pub"))
}

/// The descriptor of a pushed image's manifest, as a signer names it.
pub(crate) async fn descriptor(app: &TestApp, repository: &str, digest: &str) -> Value {
    let found = app
        .ecr
        .batch_get_image()
        .repository_name(repository)
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_digest(digest)
                .build(),
        )
        .accepted_media_types(MANIFEST_TYPE)
        .send()
        .await
        .expect("batch get image");
    let manifest = found
        .images()
        .first()
        .and_then(|i| i.image_manifest())
        .expect("manifest")
        .to_owned();
    json!({"mediaType": MANIFEST_TYPE, "digest": digest, "size": manifest.len()})
}

/// Uploads a blob unless the repository has it already; answers its digest.
pub(crate) async fn ensure_blob(app: &TestApp, repository: &str, bytes: &[u8]) -> String {
    let digest = format!("sha256:{}", sha256_hex(bytes));
    let available = app
        .ecr
        .batch_check_layer_availability()
        .repository_name(repository)
        .layer_digests(&digest)
        .send()
        .await
        .expect("check layer")
        .layers()
        .iter()
        .any(|l| l.layer_availability() == Some(&aws_sdk_ecr::types::LayerAvailability::Available));
    if available {
        digest
    } else {
        upload_blob(app, repository, bytes).await
    }
}

/// Pushes a Notary signature artifact with `envelope` (of `media_type`) onto `subject`.
pub(crate) async fn push_notation(
    app: &TestApp,
    repository: &str,
    subject: &Value,
    envelope: &[u8],
    media_type: &str,
) -> String {
    let config = ensure_blob(app, repository, b"{}").await;
    let layer = ensure_blob(app, repository, envelope).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": "application/vnd.cncf.notary.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": media_type, "digest": layer, "size": envelope.len()}],
        "subject": subject,
    });
    put_manifest(app, repository, &manifest, None).await
}

/// Pushes a Cosign signature (`sha256-<hex>.sig` tag) of `subject_digest`.
async fn push_cosign(
    app: &TestApp,
    repository: &str,
    subject_digest: &str,
    payload: &[u8],
    signature: &str,
) -> String {
    let config = ensure_blob(app, repository, b"{}").await;
    let layer = ensure_blob(app, repository, payload).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": layer,
            "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": signature},
        }],
    });
    let tag = format!("{}.sig", subject_digest.replacen(':', "-", 1));
    put_manifest(app, repository, &manifest, Some(&tag)).await;
    tag
}

pub(crate) async fn put_manifest(
    app: &TestApp,
    repository: &str,
    manifest: &Value,
    tag: Option<&str>,
) -> String {
    let mut request = app
        .ecr
        .put_image()
        .repository_name(repository)
        .image_manifest(manifest.to_string())
        .image_manifest_media_type(MANIFEST_TYPE);
    if let Some(tag) = tag {
        request = request.image_tag(tag);
    }
    request
        .send()
        .await
        .expect("push manifest")
        .image()
        .and_then(|i| i.image_id())
        .and_then(|id| id.image_digest())
        .expect("digest")
        .to_owned()
}

pub(crate) async fn wait_for(
    app: &TestApp,
    repository: &str,
    digest: &str,
    status: &str,
) -> ImageRow {
    app.eventually(&format!("{digest} {status}"), WAIT, || async {
        app.store
            .images(Some(repository))
            .await
            .ok()?
            .into_iter()
            .find(|i| i.digest == digest && i.signature.status.as_deref() == Some(status))
    })
    .await
}

fn reason(row: &ImageRow) -> String {
    row.signature.reason.clone().unwrap_or_default()
}

/// The failed check of the only verification of a digest.
fn failed_check(row: &ImageRow) -> String {
    match row.signature.verifications.as_slice() {
        [only] => match &only.result {
            VerificationResult::Rejected { check, .. } => check.clone(),
            other => panic!("{}: not rejected: {other:?}", row.digest),
        },
        other => panic!("{}: {} verifications", row.digest, other.len()),
    }
}

/// Every forged, foreign or expired signature is `UNTRUSTED` naming its check; real Notation
/// (JWS and COSE) and Cosign signatures from trusted keys are `SIGNED` with their identity.
#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "one case per kind of signature, read as a table"
)]
async fn each_signature_is_judged_by_verifying_it() {
    let mut app = TestApp::new().await;
    let repository = app.create_repository("verified").await;
    let cases = [
        "junk-jws",
        "junk-cose",
        "junk-cosign",
        "copied",
        "untrusted-root",
        "other-identity",
        "expired",
        "trusted-jws",
        "trusted-cose",
        "cosign",
    ];
    let mut digests = Vec::new();
    let mut subjects = Vec::new();
    for case in cases {
        let digest = push_image(
            &app.ecr,
            &repository,
            case,
            &format!("{}{case}", app.prefix),
        )
        .await;
        subjects.push(descriptor(&app, &repository, &digest).await);
        digests.push(digest);
    }
    let signed = Signed::make(&subjects);
    let trusted = signed.identity("trusted");
    let files = trust_for(&signed, &[trusted.as_str()]).await;
    app.trust = Arc::new(files.load());
    app.start_worker().await;

    let digest = |case: &str| {
        let n = cases.iter().position(|c| *c == case).expect("case");
        (n, digests[n].clone(), subjects[n].clone())
    };
    let jws = "application/jose+json";
    let cose = "application/cose";
    let (_, _, subject) = digest("junk-jws");
    push_notation(&app, &repository, &subject, b"{\"not\": \"a JWS\"}", jws).await;
    let (_, _, subject) = digest("junk-cose");
    push_notation(&app, &repository, &subject, b"\xd2\x84junk", cose).await;
    let (_, junk_cosign, _) = digest("junk-cosign");
    push_cosign(
        &app,
        &repository,
        &junk_cosign,
        b"{\"critical\": {}}",
        "bm90IGEgc2lnbmF0dXJl",
    )
    .await;
    // A real signature of another digest, copied onto this one.
    let (_, _, subject) = digest("copied");
    let (trusted_n, _, _) = digest("trusted-jws");
    let other_signature = signed.read(&format!("{trusted_n}-trusted.jws"));
    push_notation(&app, &repository, &subject, &other_signature, jws).await;
    for case in ["untrusted-root", "other-identity", "expired"] {
        let (n, _, subject) = digest(case);
        let envelope = signed.read(&format!("{n}-{case}.jws"));
        push_notation(&app, &repository, &subject, &envelope, jws).await;
    }
    let (n, _, subject) = digest("trusted-jws");
    push_notation(
        &app,
        &repository,
        &subject,
        &signed.read(&format!("{n}-trusted.jws")),
        jws,
    )
    .await;
    let (n, _, subject) = digest("trusted-cose");
    push_notation(
        &app,
        &repository,
        &subject,
        &signed.read(&format!("{n}-trusted.cose")),
        cose,
    )
    .await;
    let (n, cosigned, _) = digest("cosign");
    let payload = signed.read(&format!("{n}-cosign.payload"));
    let signature = signed.text(&format!("{n}-cosign.sig"));
    let cosign_tag = push_cosign(&app, &repository, &cosigned, &payload, &signature).await;

    let expected = [
        ("junk-jws", "envelope_unreadable"),
        ("junk-cose", "envelope_unreadable"),
        ("junk-cosign", "envelope_unreadable"),
        ("copied", "digest_mismatch"),
        ("untrusted-root", "untrusted_chain"),
        ("other-identity", "identity_not_trusted"),
        ("expired", "certificate_"),
    ];
    for (case, check) in expected {
        let (_, digest, _) = digest(case);
        let row = wait_for(&app, &repository, &digest, "UNTRUSTED").await;
        let failed = failed_check(&row);
        assert!(
            failed.starts_with(check),
            "{case}: {failed} ({})",
            reason(&row)
        );
        assert!(reason(&row).contains(&failed), "{case}: {}", reason(&row));
        assert!(row.signature.sources.is_empty(), "{case}");
        assert_eq!(
            row.signature.policy_version.as_deref(),
            Some(app.trust.version().as_str()),
            "{case}"
        );
    }
    for case in ["trusted-jws", "trusted-cose"] {
        let (_, digest, _) = digest(case);
        let row = wait_for(&app, &repository, &digest, "SIGNED").await;
        let [only] = row.signature.verifications.as_slice() else {
            panic!("{case}: {:?}", row.signature.verifications)
        };
        match &only.result {
            VerificationResult::Verified {
                identity, scheme, ..
            } => {
                assert!(identity.contains("CN=ecr-audit test signer"), "{identity}");
                assert_eq!(scheme, "notary.x509");
            }
            other => panic!("{case}: {other:?}"),
        }
        assert!(only.envelope_digest.is_some());
    }
    let row = wait_for(&app, &repository, &cosigned, "SIGNED").await;
    assert_eq!(row.signature.sources, [format!("cosign:{cosign_tag}")]);
    assert!(
        matches!(&row.signature.verifications[0].result,
            VerificationResult::Verified { identity, .. } if !identity.is_empty()),
        "{:?}",
        row.signature.verifications
    );

    // The images view shows each signature's verification (the JSON users read).
    let shown = serde_json::to_value(&row).expect("json");
    let verification = &shown["signature"]["verifications"][0];
    assert_eq!(verification["result"], "verified", "{shown}");
    assert!(verification["envelope_digest"].is_string(), "{shown}");
    assert!(shown["signature"]["policy_version"].is_string(), "{shown}");
    app.finish().await;
}

/// What one verification costs (printed for docs/PERFORMANCE.md): a real JWS and COSE
/// envelope and a Cosign signature, verified many times under a strict policy.
#[tokio::test]
async fn verification_cost_per_signature() {
    use ecr_audit::trust::{Descriptor, SignatureCheck, Verifier, verify_cosign_simple_signing};
    let digest = format!("sha256:{}", "ab".repeat(32));
    let subject = json!({"mediaType": MANIFEST_TYPE, "digest": digest, "size": 1234});
    let signed = Signed::make(std::slice::from_ref(&subject));
    let trusted = signed.identity("trusted");
    let settings = trust_for(&signed, &[trusted.as_str()]).await.load();
    let policy = settings.policy.as_ref().expect("policy");
    let verifier = Verifier {
        policy: &policy.document,
        stores: &policy.stores,
        limits: &settings.limits,
    };
    let descriptor = Descriptor {
        media_type: MANIFEST_TYPE.to_owned(),
        digest: ecr_audit::domain::Digest::parse(&digest).expect("digest"),
        size: 1234,
    };
    let scope = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app";
    let rounds: u32 = 200;
    for (name, media_type) in [
        ("0-trusted.jws", "application/jose+json"),
        ("0-trusted.cose", "application/cose"),
    ] {
        let envelope = signed.read(name);
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            let check = verifier.verify_notation(
                media_type,
                &envelope,
                &descriptor,
                scope,
                chrono::Utc::now(),
            );
            assert!(
                matches!(check, SignatureCheck::Verified(_)),
                "{name}: {check:?}"
            );
        }
        let micros = started.elapsed().as_micros() / u128::from(rounds);
        println!(
            "verification of {name} ({} bytes): {micros} µs",
            envelope.len()
        );
    }
    let payload = signed.read("0-cosign.payload");
    let signature = signed.text("0-cosign.sig");
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        let check = verify_cosign_simple_signing(
            &payload,
            &signature,
            &descriptor.digest,
            &settings.cosign_keys,
            &settings.limits,
        );
        assert!(matches!(check, SignatureCheck::Verified(_)), "{check:?}");
    }
    let micros = started.elapsed().as_micros() / u128::from(rounds);
    println!("verification of a Cosign signature: {micros} µs");
}

/// `skip` for `skipped` (a skip policy needs an exact scope), `audit` everywhere else.
fn skip_and_audit_policy(app: &TestApp, skipped: &str, trusted: &str) -> Value {
    let region = crate::helpers::REGION;
    let scope = format!("{}.dkr.ecr.{region}.amazonaws.com/{skipped}", app.account);
    json!({
        "version": "1.0",
        "trustPolicies": [
            {"name": "skipped", "registryScopes": [scope], "signatureVerification": {"level": "skip"}},
            {"name": "audited", "registryScopes": ["*"], "signatureVerification": {"level": "audit"},
             "trustStores": ["ca:test"], "trustedIdentities": [trusted]}
        ]
    })
}

/// The policy's level is honoured: under `audit` a signature from an untrusted root counts,
/// with the failure kept as a warning (integrity still enforced); under `skip` nothing is
/// verified and the signature never counts.
#[tokio::test]
async fn audit_logs_failures_and_skip_never_signs() {
    let mut app = TestApp::new().await;
    let audited = app.create_repository("audited").await;
    let skipped = app.create_repository("skipped").await;
    let audited_digest = push_image(&app.ecr, &audited, "v1", &format!("{}a", app.prefix)).await;
    let skipped_digest = push_image(&app.ecr, &skipped, "v1", &format!("{}s", app.prefix)).await;
    let subjects = [
        descriptor(&app, &audited, &audited_digest).await,
        descriptor(&app, &skipped, &skipped_digest).await,
    ];
    let signed = Signed::make(&subjects);
    let trusted = signed.identity("trusted");
    let policy = skip_and_audit_policy(&app, &skipped, &trusted);
    let files = TrustFiles::write(&[("ca", "test", &signed.text("ca.pem"))], &policy);
    app.trust = Arc::new(files.load());
    app.start_worker().await;

    let jws = "application/jose+json";
    push_notation(
        &app,
        &audited,
        &subjects[0],
        &signed.read("0-untrusted-root.jws"),
        jws,
    )
    .await;
    push_notation(
        &app,
        &skipped,
        &subjects[1],
        &signed.read("1-trusted.jws"),
        jws,
    )
    .await;

    let row = wait_for(&app, &audited, &audited_digest, "SIGNED").await;
    match &row.signature.verifications[0].result {
        VerificationResult::Verified { warnings, .. } => assert!(
            warnings
                .iter()
                .any(|w| w.contains("untrusted_chain") || w.contains("chain")),
            "{warnings:?}"
        ),
        other => panic!("{other:?}"),
    }
    let row = wait_for(&app, &skipped, &skipped_digest, "UNTRUSTED").await;
    assert!(reason(&row).contains("level skip"), "{}", reason(&row));
    assert!(
        matches!(
            row.signature.verifications[0].result,
            VerificationResult::Skipped { .. }
        ),
        "{:?}",
        row.signature.verifications
    );
    app.finish().await;
}
