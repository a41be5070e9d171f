//! What a pushed manifest is: an artifact about another image (a signature, an SBOM, an
//! attestation), which takes no signature or scan status, or an image, which is judged.
//!
//! A pusher chooses every byte of a manifest, so nothing a pusher can add for free (a
//! `subject`, a tag shaped like Cosign's `sha256-<hex>.sig`) makes a manifest an artifact on
//! its own: only a media type from [`NON_RUNNABLE_TYPES`] *and* a subject the repository holds
//! do. A runnable image that looks like an artifact is judged like any image, and the disguise
//! is reported ([`Disguise`]). The classification is a pure function of the facts read now, so
//! it is recomputed at every judgement and never carried over from an earlier one.

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

/// How a media type is matched against a row of [`NON_RUNNABLE_TYPES`].
#[derive(Debug, Clone, Copy)]
enum Match {
    Exact(&'static str),
    Prefix(&'static str),
}

/// The one table of media types (OCI `artifactType`, or the config media type ECR reports as
/// `artifactMediaType`) that no container runtime runs. A type not listed here, including
/// every image config type and every type nobody has heard of yet, is judged as an image:
/// failing closed costs a false `UNSIGNED`, failing open would let a pusher pick an exemption.
const NON_RUNNABLE_TYPES: &[(Match, ArtifactKind)] = &[
    (
        Match::Exact(NOTATION_SIGNATURE),
        ArtifactKind::NotationSignature,
    ),
    (
        Match::Prefix("application/vnd.dev.sigstore.bundle"),
        ArtifactKind::CosignSignature,
    ),
    (
        Match::Prefix("application/vnd.dev.cosign.simplesigning"),
        ArtifactKind::CosignSignature,
    ),
    (
        Match::Prefix("application/vnd.dev.cosign.artifact.sig"),
        ArtifactKind::CosignSignature,
    ),
    (Match::Prefix("application/spdx"), ArtifactKind::Sbom),
    (Match::Prefix("text/spdx"), ArtifactKind::Sbom),
    (
        Match::Prefix("application/vnd.cyclonedx"),
        ArtifactKind::Sbom,
    ),
    (Match::Prefix("application/vnd.syft"), ArtifactKind::Sbom),
    (
        Match::Prefix("application/vnd.dev.cosign.artifact.sbom"),
        ArtifactKind::Sbom,
    ),
    (
        Match::Prefix("application/vnd.in-toto"),
        ArtifactKind::Attestation,
    ),
    (
        Match::Prefix("application/vnd.dsse.envelope"),
        ArtifactKind::Attestation,
    ),
    (
        Match::Prefix("application/vnd.dev.cosign.artifact.att"),
        ArtifactKind::Attestation,
    ),
];

/// The artifact kind of a media type listed in [`NON_RUNNABLE_TYPES`]; `None` for anything
/// that may be runnable (image configs, unknown types).
pub fn non_runnable_kind(media_type: &str) -> Option<ArtifactKind> {
    let t = media_type.to_ascii_lowercase();
    NON_RUNNABLE_TYPES
        .iter()
        .find(|(rule, _)| match rule {
            Match::Exact(exact) => t == *exact,
            Match::Prefix(prefix) => t.starts_with(prefix),
        })
        .map(|(_, kind)| *kind)
}

/// Classifies an OCI artifact type as `ListImageReferrers` reports it; types outside the
/// table are `Other` (a referrer listing says nothing about runnability).
pub fn kind_of_artifact_type(artifact_type: &str) -> ArtifactKind {
    non_runnable_kind(artifact_type).unwrap_or(ArtifactKind::Other)
}

/// Reads Cosign's tag convention: `sha256-<hex>.sig|.att|.sbom`, and the bare `sha256-<hex>`
/// fallback tag of a referrers index. Returns the digest the tag names and the kind it claims.
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

/// The subject a manifest must prove it has before it can be an artifact: present only when
/// its media type is non-runnable and it names a subject. The caller reads that subject and
/// passes what it found to [`classify`].
pub fn subject_to_confirm(
    artifact_media_type: Option<&str>,
    subject: Option<&Digest>,
) -> Option<Digest> {
    artifact_media_type.and_then(non_runnable_kind)?;
    subject.cloned()
}

/// Why a manifest that is judged as an image looks like an artifact: a finding of its own,
/// since nobody pushes a runnable image dressed as a signature by accident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "disguise", rename_all = "snake_case")]
pub enum Disguise {
    /// A runnable (or unknown) media type with a `subject`.
    SubjectOnImage { subject: Digest },
    /// A non-runnable media type whose subject the repository does not hold.
    MissingSubject { subject: Digest },
    /// A tag in Cosign's signature shape on a manifest that is not an artifact.
    SignatureTag { tag: String },
    /// A non-runnable media type (ECR's `artifactMediaType`) whose subject exists, but whose
    /// manifest carries an image config and image layers: a runnable image declaring itself
    /// a signature or an SBOM.
    RunnableContent { subject: Digest },
}

impl Disguise {
    /// One sentence for evidence and alerts.
    pub fn describe(&self) -> String {
        match self {
            Self::SubjectOnImage { subject } => format!(
                "a runnable image names subject {subject}: judged as an image, not exempted as an artifact"
            ),
            Self::MissingSubject { subject } => format!(
                "an artifact type whose subject {subject} is not in the repository: judged as an image"
            ),
            Self::SignatureTag { tag } => format!(
                "tagged {tag}, the shape of a Cosign signature tag, but not an artifact: judged as an image"
            ),
            Self::RunnableContent { subject } => format!(
                "declares an artifact type about {subject} but its manifest carries an image config and image layers: judged as an image"
            ),
        }
    }
}

/// What a manifest is, decided from the facts read now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// An artifact about `subject`, which exists in the repository.
    Artifact { subject: Digest, kind: ArtifactKind },
    /// An image, judged; with the disguise when it looks like an artifact.
    Image { disguise: Option<Disguise> },
}

/// What was read to confirm a manifest that claims to be an artifact ([`subject_to_confirm`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArtifactProof {
    /// The repository holds the subject.
    pub subject_present: bool,
    /// The manifest itself, read once its subject was found, carries an image config and
    /// image layers ([`carries_runnable_image`]); `false` when it could not be read.
    pub runnable_content: bool,
}

/// Config media types a container runtime runs.
const IMAGE_CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Layer media type prefixes of filesystem layers (tar, compressed or not).
const IMAGE_LAYER_PREFIXES: &[&str] = &[
    "application/vnd.oci.image.layer.",
    "application/vnd.docker.image.rootfs.",
];

/// Whether a manifest's own content is a runnable image: an image config and at least one
/// filesystem layer. A Notation signature (empty or signature config, an envelope layer) and a
/// legacy Cosign `.sig` manifest (an image config but only simple-signing layers) are not.
pub fn carries_runnable_image<'a>(
    config_media_type: Option<&str>,
    layer_media_types: impl IntoIterator<Item = &'a str>,
) -> bool {
    let config = config_media_type.map(str::to_ascii_lowercase);
    config.is_some_and(|c| IMAGE_CONFIG_TYPES.contains(&c.as_str()))
        && layer_media_types.into_iter().any(|layer| {
            let layer = layer.to_ascii_lowercase();
            IMAGE_LAYER_PREFIXES.iter().any(|p| layer.starts_with(p))
        })
}

/// Decides what a manifest is from its media type, its subject, its tags, and what was read to
/// confirm it ([`ArtifactProof`], for [`subject_to_confirm`]).
pub fn classify(
    artifact_media_type: Option<&str>,
    subject: Option<&Digest>,
    tags: &[String],
    proof: ArtifactProof,
) -> Classification {
    let kind = artifact_media_type.and_then(non_runnable_kind);
    match (kind, subject) {
        (Some(_), Some(subject)) if proof.subject_present && proof.runnable_content => {
            return Classification::Image {
                disguise: Some(Disguise::RunnableContent {
                    subject: subject.clone(),
                }),
            };
        }
        (Some(kind), Some(subject)) if proof.subject_present => {
            return Classification::Artifact {
                subject: subject.clone(),
                kind,
            };
        }
        (Some(_), Some(subject)) => {
            return Classification::Image {
                disguise: Some(Disguise::MissingSubject {
                    subject: subject.clone(),
                }),
            };
        }
        (None, Some(subject)) => {
            return Classification::Image {
                disguise: Some(Disguise::SubjectOnImage {
                    subject: subject.clone(),
                }),
            };
        }
        (_, None) => {}
    }
    let disguise = tags
        .iter()
        .find(|tag| cosign_tag_subject(tag).is_some())
        .map(|tag| Disguise::SignatureTag { tag: tag.clone() });
    Classification::Image { disguise }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex() -> String {
        "ab".repeat(32)
    }

    fn subject() -> Digest {
        Digest::parse(&format!("sha256:{}", "cd".repeat(32))).expect("digest")
    }

    #[test]
    fn only_the_table_makes_a_type_non_runnable() {
        let cases = [
            (NOTATION_SIGNATURE, Some(ArtifactKind::NotationSignature)),
            (
                "application/vnd.dev.sigstore.bundle.v0.3+json",
                Some(ArtifactKind::CosignSignature),
            ),
            ("application/spdx+json", Some(ArtifactKind::Sbom)),
            ("application/vnd.cyclonedx+json", Some(ArtifactKind::Sbom)),
            (
                "application/vnd.in-toto+json",
                Some(ArtifactKind::Attestation),
            ),
            ("application/vnd.oci.image.config.v1+json", None),
            ("application/vnd.docker.container.image.v1+json", None),
            // Words in a type name prove nothing: only listed prefixes count.
            ("application/vnd.acme.spdx-runner.config+json", None),
            ("application/x-something", None),
        ];
        for (media_type, expected) in cases {
            assert_eq!(non_runnable_kind(media_type), expected, "{media_type}");
        }
    }

    #[test]
    fn cosign_tags_name_a_digest() {
        let named = Digest::parse(&format!("sha256:{}", hex())).expect("digest");
        assert_eq!(
            cosign_tag_subject(&format!("sha256-{}.sig", hex())),
            Some((named.clone(), ArtifactKind::CosignSignature))
        );
        assert_eq!(
            cosign_tag_subject(&format!("sha256-{}.att", hex())),
            Some((named.clone(), ArtifactKind::Attestation))
        );
        assert_eq!(
            cosign_tag_subject(&format!("sha256-{}", hex())),
            Some((named, ArtifactKind::Other))
        );
        assert_eq!(cosign_tag_subject("sha256-zz.sig"), None);
        assert_eq!(cosign_tag_subject("v1.0"), None);
        assert_eq!(cosign_tag_subject(&format!("sha256-{}.tar", hex())), None);
    }

    /// (case, media type, subject, tags, subject present, expected)
    type ClassifyCase<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a Digest>,
        &'a [String],
        bool,
        Classification,
    );

    #[test]
    #[allow(clippy::too_many_lines, reason = "a table of cases")]
    fn an_artifact_needs_a_non_runnable_type_and_a_subject_that_exists() {
        let subject = subject();
        let image_config = Some("application/vnd.oci.image.config.v1+json");
        let sig_tag = vec![format!("sha256-{}.att", hex())];
        // (case, media type, subject, tags, subject present, expected)
        let cases: Vec<ClassifyCase> = vec![
            (
                "a Notation signature of an image in the repository",
                Some(NOTATION_SIGNATURE),
                Some(&subject),
                &[],
                true,
                Classification::Artifact {
                    subject: subject.clone(),
                    kind: ArtifactKind::NotationSignature,
                },
            ),
            (
                "a runnable image with a made-up subject",
                image_config,
                Some(&subject),
                &[],
                true,
                Classification::Image {
                    disguise: Some(Disguise::SubjectOnImage {
                        subject: subject.clone(),
                    }),
                },
            ),
            (
                "a signature type whose subject is not there",
                Some(NOTATION_SIGNATURE),
                Some(&subject),
                &[],
                false,
                Classification::Image {
                    disguise: Some(Disguise::MissingSubject {
                        subject: subject.clone(),
                    }),
                },
            ),
            (
                "an unsigned image re-tagged like an attestation",
                image_config,
                None,
                &sig_tag,
                false,
                Classification::Image {
                    disguise: Some(Disguise::SignatureTag {
                        tag: sig_tag[0].clone(),
                    }),
                },
            ),
            (
                "a signature type without a subject",
                Some(NOTATION_SIGNATURE),
                None,
                &[],
                false,
                Classification::Image { disguise: None },
            ),
            (
                "a plain image",
                image_config,
                None,
                &[],
                false,
                Classification::Image { disguise: None },
            ),
        ];
        for (case, media_type, subject, tags, present, expected) in cases {
            assert_eq!(
                classify(
                    media_type,
                    subject,
                    tags,
                    ArtifactProof {
                        subject_present: present,
                        runnable_content: false,
                    }
                ),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn a_declared_signature_carrying_an_image_is_judged_as_an_image() {
        let subject = subject();
        let proof = ArtifactProof {
            subject_present: true,
            runnable_content: true,
        };
        assert_eq!(
            classify(Some(NOTATION_SIGNATURE), Some(&subject), &[], proof),
            Classification::Image {
                disguise: Some(Disguise::RunnableContent {
                    subject: subject.clone()
                })
            }
        );
    }

    #[test]
    fn only_an_image_config_with_a_filesystem_layer_is_runnable_content() {
        let oci_config = Some("application/vnd.oci.image.config.v1+json");
        let cases: [(&str, Option<&str>, &[&str], bool); 6] = [
            (
                "an OCI image",
                oci_config,
                &["application/vnd.oci.image.layer.v1.tar+gzip"],
                true,
            ),
            (
                "a Docker image",
                Some("application/vnd.docker.container.image.v1+json"),
                &["application/vnd.docker.image.rootfs.diff.tar.gzip"],
                true,
            ),
            (
                "a Notation signature",
                Some("application/vnd.oci.empty.v1+json"),
                &["application/jose+json"],
                false,
            ),
            (
                "a legacy Cosign .sig manifest",
                oci_config,
                &["application/vnd.dev.cosign.simplesigning.v1+json"],
                false,
            ),
            ("an image config without layers", oci_config, &[], false),
            (
                "no config",
                None,
                &["application/vnd.oci.image.layer.v1.tar"],
                false,
            ),
        ];
        for (case, config, layers, expected) in cases {
            assert_eq!(
                carries_runnable_image(config, layers.iter().copied()),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn only_a_non_runnable_type_asks_for_its_subject() {
        let subject = subject();
        assert_eq!(
            subject_to_confirm(Some(NOTATION_SIGNATURE), Some(&subject)),
            Some(subject.clone())
        );
        assert_eq!(
            subject_to_confirm(
                Some("application/vnd.oci.image.config.v1+json"),
                Some(&subject)
            ),
            None
        );
        assert_eq!(subject_to_confirm(None, Some(&subject)), None);
        assert_eq!(subject_to_confirm(Some(NOTATION_SIGNATURE), None), None);
    }
}
