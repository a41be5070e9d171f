//! Media-type classification of artifacts: signatures, SBOMs and attestations are about an image, not
//! images, so they take no signature or scan status and are never counted or alerted on.

use serde::{Deserialize, Serialize};

use crate::domain::Digest;

/// Notation's signature artifact type.
pub const NOTATION_SIGNATURE: &str = "application/vnd.cncf.notary.signature";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    NotationSignature,
    CosignSignature,
    Sbom,
    Attestation,
    Other,
}

impl ArtifactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotationSignature => "notation_signature",
            Self::CosignSignature => "cosign_signature",
            Self::Sbom => "sbom",
            Self::Attestation => "attestation",
            Self::Other => "artifact",
        }
    }

    pub(crate) fn is_signature(self) -> bool {
        matches!(self, Self::NotationSignature | Self::CosignSignature)
    }
}

/// Classifies an OCI artifact type (`artifactType` / ECR's `artifactMediaType`).
pub fn kind_of_artifact_type(artifact_type: &str) -> ArtifactKind {
    let t = artifact_type.to_ascii_lowercase();
    if t == NOTATION_SIGNATURE {
        ArtifactKind::NotationSignature
    } else if t.starts_with("application/vnd.dev.sigstore.bundle")
        || t.starts_with("application/vnd.dev.cosign.simplesigning")
    {
        ArtifactKind::CosignSignature
    } else if t.contains("spdx") || t.contains("cyclonedx") || t.contains("syft") {
        ArtifactKind::Sbom
    } else if t.contains("in-toto") || t.contains("attestation") || t.contains("provenance") {
        ArtifactKind::Attestation
    } else {
        ArtifactKind::Other
    }
}

/// Reads Cosign's tag convention: `sha256-<hex>.sig|.att|.sbom`, and the bare `sha256-<hex>`
/// fallback tag of a referrers index. Returns the subject digest and the artifact kind.
pub fn cosign_tag_subject(tag: &str) -> Option<(Digest, ArtifactKind)> {
    let rest = tag.strip_prefix("sha256-")?;
    let (hex, kind) = match rest.split_once('.') {
        Some((hex, "sig")) => (hex, ArtifactKind::CosignSignature),
        Some((hex, "att")) => (hex, ArtifactKind::Attestation),
        Some((hex, "sbom")) => (hex, ArtifactKind::Sbom),
        Some(_) => return None,
        None => (rest, ArtifactKind::Other),
    };
    Some((Digest::parse(&format!("sha256:{hex}")).ok()?, kind))
}

/// Decides whether a pushed manifest is an artifact of another image, from what ECR says
/// about it (artifact type, subject) and from its tags.
pub fn artifact_subject(
    artifact_media_type: Option<&str>,
    subject: Option<&Digest>,
    tags: &[String],
) -> Option<(Digest, ArtifactKind)> {
    if let Some(subject) = subject {
        let kind = artifact_media_type.map_or(ArtifactKind::Other, kind_of_artifact_type);
        return Some((subject.clone(), kind));
    }
    tags.iter().find_map(|tag| cosign_tag_subject(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex() -> String {
        "ab".repeat(32)
    }

    #[test]
    fn artifact_types_are_classified() {
        assert_eq!(
            kind_of_artifact_type(NOTATION_SIGNATURE),
            ArtifactKind::NotationSignature
        );
        assert_eq!(
            kind_of_artifact_type("application/vnd.dev.sigstore.bundle.v0.3+json"),
            ArtifactKind::CosignSignature
        );
        assert_eq!(
            kind_of_artifact_type("application/spdx+json"),
            ArtifactKind::Sbom
        );
        assert_eq!(
            kind_of_artifact_type("application/vnd.cyclonedx+json"),
            ArtifactKind::Sbom
        );
        assert_eq!(
            kind_of_artifact_type("application/vnd.in-toto+json"),
            ArtifactKind::Attestation
        );
        assert_eq!(
            kind_of_artifact_type("application/x-something"),
            ArtifactKind::Other
        );
    }

    #[test]
    fn cosign_tags_name_their_subject() {
        let subject = Digest::parse(&format!("sha256:{}", hex())).expect("digest");
        assert_eq!(
            cosign_tag_subject(&format!("sha256-{}.sig", hex())),
            Some((subject.clone(), ArtifactKind::CosignSignature))
        );
        assert_eq!(
            cosign_tag_subject(&format!("sha256-{}.att", hex())),
            Some((subject.clone(), ArtifactKind::Attestation))
        );
        assert_eq!(
            cosign_tag_subject(&format!("sha256-{}", hex())),
            Some((subject, ArtifactKind::Other))
        );
        assert_eq!(cosign_tag_subject("sha256-zz.sig"), None);
        assert_eq!(cosign_tag_subject("v1.0"), None);
        assert_eq!(cosign_tag_subject(&format!("sha256-{}.tar", hex())), None);
    }

    #[test]
    fn a_subject_wins_over_tags() {
        let subject = Digest::parse(&format!("sha256:{}", "cd".repeat(32))).expect("digest");
        let found = artifact_subject(
            Some(NOTATION_SIGNATURE),
            Some(&subject),
            &[format!("sha256-{}.sig", hex())],
        );
        assert_eq!(found, Some((subject, ArtifactKind::NotationSignature)));
        assert_eq!(artifact_subject(None, None, &["v1".to_owned()]), None);
    }
}
