//! Signature verification in the pipeline (issue 15 part C): the reads behind it, against the
//! emulator. The end-to-end verdict cases are listed as not done in docs/SIGNATURES.md.

use std::sync::Arc;

use aws_sdk_ecr::primitives::Blob;
use ecr_audit::aws::load_sdk_config;
use ecr_audit::domain::{AccountId, Digest, Region, RepositoryKey, RepositoryName};
use ecr_audit::enrich::Registry;
use ecr_audit::enrich::ecr::EcrRegistry;
use ecr_audit::facts::RevocationQuery;
use ecr_audit::facts::{BlobRead, Fact, ProfileStatus, SignatureVerification, VerificationResult};
use ecr_audit::store::Store;
use ecr_audit::store::verifications::VerificationKey;
use ecr_audit::telemetry::Metrics;
use serde_json::json;

use crate::helpers::{REGION, TestApp, push_image, sha256_hex};

const NOTATION_PLATFORM: &str = "Notation-OCI-SHA384-ECDSA";

/// A signing rule may name another account's profile; its status is read with `profileOwner`
/// (taken from the ARN) by a reader that holds no role in that account.
#[tokio::test]
async fn a_profile_of_another_account_is_read_with_its_owner() {
    let owner = TestApp::new_in_own_account().await;
    let profile_name = format!("{}owned", owner.prefix.replace('-', "_"));
    let profile = aws_sdk_signer::Client::new(&owner.sdk)
        .put_signing_profile()
        .profile_name(&profile_name)
        .platform_id(NOTATION_PLATFORM)
        .send()
        .await
        .expect("signing profile in the owner's account");
    let arn = profile.arn().expect("profile arn").to_owned();
    assert!(arn.contains(&owner.account), "{arn}");

    let reader = EcrRegistry::new(load_sdk_config().await, Arc::new(Metrics::new()));
    let status = reader.profile_status(&arn).await.expect("answered");
    assert_eq!(status, Fact::Known(ProfileStatus::Active));
    owner.finish().await;
}

/// Uploads a blob with the layer calls (one part) and answers its digest.
pub(crate) async fn upload_blob(app: &TestApp, repository: &str, bytes: &[u8]) -> String {
    let digest = format!("sha256:{}", sha256_hex(bytes));
    let upload = app
        .ecr
        .initiate_layer_upload()
        .repository_name(repository)
        .send()
        .await
        .expect("initiate upload");
    let upload_id = upload.upload_id().expect("upload id").to_owned();
    app.ecr
        .upload_layer_part()
        .repository_name(repository)
        .upload_id(&upload_id)
        .part_first_byte(0)
        .part_last_byte(i64::try_from(bytes.len()).expect("small") - 1)
        .layer_part_blob(Blob::new(bytes))
        .send()
        .await
        .expect("upload part");
    app.ecr
        .complete_layer_upload()
        .repository_name(repository)
        .upload_id(&upload_id)
        .layer_digests(&digest)
        .send()
        .await
        .expect("complete upload");
    digest
}

/// A Notation-shaped signature artifact whose envelope is `envelope`, pushed onto `subject`.
async fn push_signature(
    app: &TestApp,
    repository: &str,
    subject: &str,
    envelope: &[u8],
) -> (String, String) {
    let config = upload_blob(app, repository, b"{}").await;
    let layer = upload_blob(app, repository, envelope).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.cncf.notary.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/jose+json", "digest": layer, "size": envelope.len()}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": 1}
    })
    .to_string();
    let pushed = app
        .ecr
        .put_image()
        .repository_name(repository)
        .image_manifest(manifest)
        .image_manifest_media_type("application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("push signature");
    let digest = pushed
        .image()
        .and_then(|i| i.image_id())
        .and_then(|id| id.image_digest())
        .expect("signature digest")
        .to_owned();
    (digest, layer)
}

/// The manifest of a signature artifact and its envelope blob are read back exactly, the blob
/// through the URL `GetDownloadUrlForLayer` answers; a blob over the cap is not kept.
#[tokio::test]
async fn a_signature_manifest_and_its_envelope_are_read_within_the_cap() {
    let app = TestApp::new().await;
    let repository = app.create_repository("envelopes").await;
    let subject = push_image(&app.ecr, &repository, "v1", &app.prefix).await;
    let envelope = br#"{"payload": "not really", "protected": "x", "signature": "y"}"#;
    let (signature, layer) = push_signature(&app, &repository, &subject, envelope).await;

    let metrics = Arc::new(Metrics::new());
    let registry = app.registry(&metrics);
    let key = RepositoryKey {
        account: AccountId::parse(&app.account).expect("account"),
        region: Region::parse(REGION).expect("region"),
        name: RepositoryName::parse(&repository).expect("name"),
    };
    let Fact::Known(manifest) = registry
        .signature_manifest(&key, &signature)
        .await
        .expect("answered")
    else {
        panic!("the signature manifest is readable");
    };
    assert_eq!(manifest.subject.as_deref(), Some(subject.as_str()));
    assert_eq!(manifest.layers[0].digest, layer);
    assert_eq!(manifest.layers[0].media_type, "application/jose+json");

    let read = registry
        .blob(&key, &layer, 64 * 1024)
        .await
        .expect("answered");
    assert_eq!(read, Fact::Known(BlobRead::Bytes(envelope.to_vec())));
    let capped = registry.blob(&key, &layer, 16).await.expect("answered");
    assert_eq!(capped, Fact::Known(BlobRead::TooLarge { limit: 16 }));

    let missing = format!("sha256:{}", sha256_hex(b"never uploaded"));
    let absent = registry.blob(&key, &missing, 1024).await.expect("answered");
    assert!(
        matches!(absent, Fact::Unknown(ref reason) if reason.contains("LayersNotFound")),
        "{absent:?}"
    );
    app.finish().await;
}

fn verified(expiry: Option<chrono::DateTime<chrono::Utc>>) -> SignatureVerification {
    SignatureVerification {
        reference: "sha256:signature".to_owned(),
        envelope_digest: Some("sha256:envelope".to_owned()),
        policy_version: "sha256:policy-1".to_owned(),
        result: VerificationResult::Verified {
            scheme: "notary.x509.signingAuthority".to_owned(),
            identity: "C=US, O=Example, CN=signer".to_owned(),
            signer_profile_version_arn: Some(
                "arn:aws:signer:us-east-1:111122223333:/signing-profiles/p/v1".to_owned(),
            ),
            signer_job_arn: None,
            signing_time: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
            expiry,
            warnings: Vec::new(),
        },
        revocation: None,
    }
}

/// A verification is kept once per envelope, policy version, subject and scope: another
/// subject (a copied signature), another policy version or a passed expiry finds nothing,
/// and the table refuses changes.
#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "a table of verification keys, one row per case"
)]
async fn verifications_are_kept_per_envelope_policy_subject_and_scope() {
    let db = crate::harness::TestDb::new().await;
    let store = Store::from_pool(db.pool.clone());
    let subject = Digest::parse(&format!("sha256:{}", "a".repeat(64))).expect("digest");
    let other = Digest::parse(&format!("sha256:{}", "b".repeat(64))).expect("digest");
    let now = chrono::Utc::now();
    let key = VerificationKey {
        envelope_digest: "sha256:envelope",
        policy_version: "sha256:policy-1",
        subject: &subject,
        scope: "111122223333.dkr.ecr.us-east-1.amazonaws.com/team/app",
    };
    let kept = verified(Some(now + chrono::Duration::days(1)));
    store
        .record_signature_verification(key, &kept)
        .await
        .expect("record");
    assert_eq!(
        store.signature_verification(key, now).await.expect("read"),
        Some(kept.clone())
    );

    let rejected = SignatureVerification {
        result: VerificationResult::Rejected {
            check: "bad_signature".to_owned(),
            reason: "x".to_owned(),
        },
        ..kept.clone()
    };
    store
        .record_signature_verification(key, &rejected)
        .await
        .expect("a second record is a no-op");
    assert_eq!(
        store.signature_verification(key, now).await.expect("read"),
        Some(kept.clone())
    );

    let for_other = VerificationKey {
        subject: &other,
        ..key
    };
    assert_eq!(
        store
            .signature_verification(for_other, now)
            .await
            .expect("read"),
        None
    );
    let new_policy = VerificationKey {
        policy_version: "sha256:policy-2",
        ..key
    };
    assert_eq!(
        store
            .signature_verification(new_policy, now)
            .await
            .expect("read"),
        None
    );
    let later = now + chrono::Duration::days(2);
    assert_eq!(
        store
            .signature_verification(key, later)
            .await
            .expect("read"),
        None,
        "expired"
    );

    let update = sqlx::query("UPDATE signature_verifications SET result = 'verified'")
        .execute(&db.pool)
        .await;
    assert!(update.is_err(), "append-only");
}

/// `GetRevocationStatus` reaches the emulator (its `data-` host prefix taken off) and reports
/// a profile version once it is revoked, for signatures made after the revocation.
#[tokio::test]
async fn a_revoked_profile_version_is_reported_by_get_revocation_status() {
    let app = TestApp::new().await;
    let signer = aws_sdk_signer::Client::new(&app.sdk);
    let profile_name = format!("{}revocable", app.prefix.replace('-', "_"));
    let profile = signer
        .put_signing_profile()
        .profile_name(&profile_name)
        .platform_id(NOTATION_PLATFORM)
        .send()
        .await
        .expect("signing profile");
    let version_arn = profile
        .profile_version_arn()
        .expect("version arn")
        .to_owned();
    let version = profile.profile_version().expect("version").to_owned();
    let registry = app.registry(&Arc::new(Metrics::new()));
    let query = |signature_time| RevocationQuery {
        profile_version_arn: version_arn.clone(),
        job_arn: format!(
            "arn:aws:signer:{REGION}:{}:/signing-jobs/never-ran",
            app.account
        ),
        certificate_hashes: vec!["00".repeat(96)],
        signature_time,
        platform_id: NOTATION_PLATFORM.to_owned(),
    };
    let before = registry
        .revoked_entities(&query(chrono::Utc::now()))
        .await
        .expect("answered");
    assert_eq!(before, Fact::Known(Vec::new()));

    signer
        .revoke_signing_profile()
        .profile_name(&profile_name)
        .profile_version(&version)
        .reason("key compromised")
        .effective_time(aws_smithy_types::DateTime::from(
            std::time::SystemTime::now(),
        ))
        .send()
        .await
        .expect("revoke");
    let after = registry
        .revoked_entities(&query(chrono::Utc::now() + chrono::Duration::seconds(5)))
        .await
        .expect("answered");
    assert_eq!(after, Fact::Known(vec![version_arn.clone()]));
    app.finish().await;
}
