//! Verification of read signatures against the fuzz target's policy, root and real seeds
//! (fuzz/verify_envelope/, fuzz/corpus/verify_envelope/: first byte selects JWS/COSE).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::*;
use crate::domain::Digest;
use crate::trust::{ConfiguredPolicy, StoreKind, TrustPolicyDocument, TrustStores};

const POLICY: &[u8] = include_bytes!("../../../fuzz/verify_envelope/trustpolicy.json");
const ROOT: &[u8] = include_bytes!("../../../fuzz/verify_envelope/root.pem");
const SUBJECT: &[u8] = include_bytes!("../../../fuzz/verify_envelope/subject.json");
const NOW: &str = include_str!("../../../fuzz/verify_envelope/now.txt");
const GOOD_JWS: &[u8] = include_bytes!("../../../fuzz/corpus/verify_envelope/seed-good-jws");
const BAD_JWS: &[u8] =
    include_bytes!("../../../fuzz/corpus/verify_envelope/seed-bad_signature-jws");
const SCOPE: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com/team/app";

fn configured() -> TrustSettings {
    let mut stores = TrustStores::new();
    stores.add(StoreKind::Ca, "test", ROOT).expect("root");
    let document = TrustPolicyDocument::from_json(POLICY).expect("policy");
    TrustSettings {
        policy: Some(ConfiguredPolicy::new(document, stores)),
        ..TrustSettings::default()
    }
}

fn subject() -> Descriptor {
    let value: serde_json::Value = serde_json::from_slice(SUBJECT).expect("subject");
    Descriptor {
        media_type: value["mediaType"].as_str().expect("media type").to_owned(),
        digest: Digest::parse(value["digest"].as_str().expect("digest")).expect("digest"),
        size: value["size"].as_u64().expect("size"),
    }
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(NOW.trim())
        .expect("now")
        .with_timezone(&Utc)
}

fn layer(media_type: &str, bytes: &[u8]) -> LayerDescriptor {
    use sha2::Digest as _;
    LayerDescriptor {
        media_type: media_type.to_owned(),
        digest: format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes))),
        size: bytes.len() as u64,
        annotations: BTreeMap::new(),
    }
}

fn manifest(layer: LayerDescriptor) -> SignatureManifest {
    SignatureManifest {
        artifact_type: Some("application/vnd.cncf.notary.signature".to_owned()),
        subject: None,
        subject_media_type: None,
        subject_size: None,
        config_media_type: Some("application/vnd.oci.empty.v1+json".to_owned()),
        layers: vec![layer],
    }
}

/// Verifies `envelope` (a JWS) as the signature `sha256:sig` of `subject`.
fn verify_jws(
    settings: &TrustSettings,
    envelope: &[u8],
    subject: &Descriptor,
) -> SignatureVerification {
    let manifest = manifest(layer("application/jose+json", envelope));
    let layer = envelope_layer(settings, SignatureKind::Notation, "sha256:sig", &manifest)
        .expect("worth reading");
    let blob = BlobRead::Bytes(envelope.to_vec());
    let read = SignatureRead {
        kind: SignatureKind::Notation,
        reference: "sha256:sig",
        layer,
        blob: &blob,
    };
    verify_read(settings, read, subject, SCOPE, now())
}

fn check_of(verification: &SignatureVerification) -> &str {
    match &verification.result {
        VerificationResult::Rejected { check, .. } => check,
        VerificationResult::Verified { .. } => "verified",
        VerificationResult::Skipped { .. } => "skipped",
    }
}

#[test]
fn a_real_signature_verifies_with_its_identity_and_policy_version() {
    let settings = configured();
    let verification = verify_jws(&settings, &GOOD_JWS[1..], &subject());
    let VerificationResult::Verified {
        identity,
        signing_time,
        ..
    } = &verification.result
    else {
        panic!("verified: {verification:?}");
    };
    assert!(!identity.is_empty());
    assert!(signing_time.is_some());
    assert!(verification.policy_version.starts_with("sha256:"));
    assert_eq!(verification.policy_version, settings.version());
    assert!(verification.envelope_digest.is_some());
}

#[test]
fn a_real_signature_copied_onto_another_digest_is_a_digest_mismatch() {
    let mut other = subject();
    other.digest = Digest::parse(&format!("sha256:{}", "c".repeat(64))).expect("digest");
    let verification = verify_jws(&configured(), &GOOD_JWS[1..], &other);
    assert_eq!(check_of(&verification), "digest_mismatch");
}

#[test]
fn junk_and_forged_envelopes_name_their_check() {
    let settings = configured();
    let junk = verify_jws(&settings, b"{\"not\": \"an envelope\"}", &subject());
    assert_eq!(check_of(&junk), "envelope_unreadable");
    let forged = verify_jws(&settings, &BAD_JWS[1..], &subject());
    assert_eq!(check_of(&forged), "bad_signature");
}

#[test]
fn without_a_policy_nothing_is_downloaded_and_the_reason_says_so() {
    let settings = TrustSettings::default();
    let manifest = manifest(layer("application/jose+json", &GOOD_JWS[1..]));
    let verification = envelope_layer(&settings, SignatureKind::Notation, "sha256:sig", &manifest)
        .expect_err("no read is worth it");
    assert_eq!(check_of(&verification), "no_trust_policy");
    assert_eq!(verification.policy_version, "none");
    assert!(matches!(
        &verification.result,
        VerificationResult::Rejected { reason, .. } if reason == "no trust policy configured"
    ));
}

#[test]
fn an_envelope_declared_too_large_is_not_downloaded() {
    let mut settings = configured();
    settings.limits.max_envelope_bytes = 100;
    let manifest = manifest(layer("application/jose+json", &GOOD_JWS[1..]));
    let verification = envelope_layer(&settings, SignatureKind::Notation, "sha256:sig", &manifest)
        .expect_err("declared over the cap");
    assert_eq!(check_of(&verification), "envelope_too_large");
}

#[test]
fn a_blob_served_larger_or_other_than_declared_is_refused() {
    let settings = configured();
    let envelope_layer = layer("application/jose+json", b"{}");
    for (blob, check) in [
        (BlobRead::TooLarge { limit: 1 }, "envelope_too_large"),
        (
            BlobRead::DigestMismatch {
                actual: "sha256:00".to_owned(),
            },
            "envelope_unreadable",
        ),
    ] {
        let read = SignatureRead {
            kind: SignatureKind::Notation,
            reference: "sha256:sig",
            layer: &envelope_layer,
            blob: &blob,
        };
        let verification = verify_read(&settings, read, &subject(), SCOPE, now());
        assert_eq!(check_of(&verification), check, "{blob:?}");
    }
}

#[test]
fn manifests_without_an_envelope_layer_and_cosign_without_keys_are_rejected_unread() {
    let settings = configured();
    let manifest = manifest(layer("application/octet-stream", b"x"));
    let notation = envelope_layer(&settings, SignatureKind::Notation, "sha256:sig", &manifest)
        .expect_err("no envelope layer");
    assert_eq!(check_of(&notation), "unsupported_envelope");
    let mut payload = layer(COSIGN_PAYLOAD_TYPE, b"{}");
    payload
        .annotations
        .insert(COSIGN_SIGNATURE_ANNOTATION.to_owned(), "MEUC".to_owned());
    let cosign = envelope_layer(
        &settings,
        SignatureKind::Cosign,
        "sha256-x.sig",
        &self::manifest(payload),
    )
    .expect_err("no key configured");
    assert_eq!(check_of(&cosign), "untrusted_key");
}

#[test]
fn the_signatures_per_digest_cap_keeps_the_first_ones() {
    let settings = TrustSettings {
        max_signatures_per_digest: 2,
        ..TrustSettings::default()
    };
    let artifacts: Vec<SignatureArtifact> = (0..5)
        .map(|i| SignatureArtifact {
            kind: SignatureKind::Notation,
            reference: format!("sha256:{i}"),
            pushed_at: None,
        })
        .collect();
    let (kept, left_out) = signatures_within_cap(&artifacts, &settings);
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].reference, "sha256:0");
    assert_eq!(left_out, 3);
}
