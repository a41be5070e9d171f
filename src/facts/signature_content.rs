//! What a signature artifact holds, as read from the registry: its manifest's layers (the
//! Notary envelope, or Cosign's simple-signing payload with its signature annotation) and the
//! bytes of a blob. Facts only; `trust` turns them into verdicts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Cosign's annotation on the payload layer: base64 of the signature over the payload bytes.
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// Manifest media types accepted when reading a signature artifact (`BatchGetImage`):
/// Notation and Cosign push OCI manifests; older Cosign pushes Docker v2 manifests.
pub const SIGNATURE_MANIFEST_MEDIA_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// One layer descriptor of a signature manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerDescriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub annotations: BTreeMap<String, String>,
}

/// The parts of a signature artifact's manifest verification needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureManifest {
    pub artifact_type: Option<String>,
    /// The `subject` digest (OCI referrers); Cosign `.sig` tags have none.
    pub subject: Option<String>,
    /// The `subject` descriptor's media type and size: what a Notary payload's target
    /// artifact is compared with, once its digest is known to be the real subject's.
    pub subject_media_type: Option<String>,
    pub subject_size: Option<u64>,
    /// The config descriptor's media type: what tells a runnable image from an artifact.
    pub config_media_type: Option<String>,
    pub layers: Vec<LayerDescriptor>,
}

impl SignatureManifest {
    /// Whether the manifest's own content is a runnable image (image config and filesystem
    /// layers), whatever artifact type it declares.
    pub fn carries_runnable_image(&self) -> bool {
        super::carries_runnable_image(
            self.config_media_type.as_deref(),
            self.layers.iter().map(|l| l.media_type.as_str()),
        )
    }
}

/// A manifest that is not JSON of an image manifest's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestUnreadable(pub String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    artifact_type: Option<String>,
    config: Option<RawConfig>,
    subject: Option<RawDescriptor>,
    #[serde(default)]
    layers: Vec<RawDescriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    media_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl SignatureManifest {
    /// Reads a manifest's JSON.
    ///
    /// # Errors
    /// [`ManifestUnreadable`] when it is not an image manifest's JSON.
    pub fn from_json(text: &str) -> Result<Self, ManifestUnreadable> {
        let raw: RawManifest =
            serde_json::from_str(text).map_err(|e| ManifestUnreadable(e.to_string()))?;
        let (subject, subject_media_type, subject_size) = match raw.subject {
            Some(s) => (Some(s.digest), s.media_type, Some(s.size)),
            None => (None, None, None),
        };
        Ok(Self {
            artifact_type: raw.artifact_type,
            subject,
            subject_media_type,
            subject_size,
            config_media_type: raw.config.and_then(|c| c.media_type),
            layers: raw
                .layers
                .into_iter()
                .map(|l| LayerDescriptor {
                    media_type: l.media_type.unwrap_or_default(),
                    digest: l.digest,
                    size: l.size,
                    annotations: l.annotations,
                })
                .collect(),
        })
    }
}

/// A blob read through its download URL, within a size cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobRead {
    /// The bytes, whose SHA-256 matched the digest asked for.
    Bytes(Vec<u8>),
    /// Declared or served larger than the cap: not read further.
    TooLarge { limit: usize },
    /// The bytes served do not hash to the digest asked for.
    DigestMismatch { actual: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notation_manifest_names_its_envelope_and_subject() {
        let manifest = SignatureManifest::from_json(
            r#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
              "artifactType": "application/vnd.cncf.notary.signature",
              "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:44", "size": 2},
              "layers": [{"mediaType": "application/jose+json", "digest": "sha256:ab", "size": 2048}],
              "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:cd", "size": 500}}"#,
        )
        .expect("manifest");
        assert_eq!(manifest.subject.as_deref(), Some("sha256:cd"));
        assert_eq!(manifest.layers[0].media_type, "application/jose+json");
        assert_eq!(manifest.layers[0].size, 2048);
    }

    #[test]
    fn a_cosign_layer_keeps_its_signature_annotation() {
        let manifest = SignatureManifest::from_json(
            r#"{"schemaVersion": 2, "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
              "digest": "sha256:ef", "size": 250, "annotations": {"dev.cosignproject.cosign/signature": "MEUC"}}]}"#,
        )
        .expect("manifest");
        assert_eq!(
            manifest.layers[0]
                .annotations
                .get(COSIGN_SIGNATURE_ANNOTATION)
                .map(String::as_str),
            Some("MEUC")
        );
        assert!(SignatureManifest::from_json("[1, 2]").is_err());
    }
}

/// What verifying one signature concluded, as stored and shown: the check that failed is
/// `trust::Failure::as_str` (this layer cannot name the trust module's enum).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum VerificationResult {
    Verified {
        scheme: String,
        identity: String,
        signer_profile_version_arn: Option<String>,
        signer_job_arn: Option<String>,
        signing_time: Option<chrono::DateTime<chrono::Utc>>,
        expiry: Option<chrono::DateTime<chrono::Utc>>,
        /// Failures the policy level only logs.
        warnings: Vec<String>,
    },
    /// The policy's level is `skip`: not verified, and not a signature that counts.
    Skipped {
        policy: String,
    },
    Rejected {
        check: String,
        reason: String,
    },
}

/// One signature artifact's verification, under one trust configuration version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureVerification {
    /// The artifact's digest, or the Cosign tag.
    pub reference: String,
    /// `sha256:` of the envelope (or Cosign payload) blob, when the manifest named one.
    pub envelope_digest: Option<String>,
    pub policy_version: String,
    #[serde(flatten)]
    pub result: VerificationResult,
    /// What `GetRevocationStatus` is asked about a verified AWS Signer signature (kept, so
    /// a verification read back from the store can still be checked for revocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<RevocationQuery>,
}

impl SignatureVerification {
    pub fn is_verified(&self) -> bool {
        matches!(self.result, VerificationResult::Verified { .. })
    }
}

/// The Signer entities of one verified AWS Signer signature, asked about with
/// `GetRevocationStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RevocationQuery {
    /// `arn:aws:signer:REGION:ACCOUNT:/signing-profiles/NAME/VERSION`.
    pub profile_version_arn: String,
    pub job_arn: String,
    /// Hex SHA-384 of each certificate's TBS bytes followed by its issuer's (the API's recipe).
    pub certificate_hashes: Vec<String>,
    pub signature_time: chrono::DateTime<chrono::Utc>,
    pub platform_id: String,
}
