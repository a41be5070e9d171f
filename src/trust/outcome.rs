//! What a signature check concludes: verified (with the signer's identity and any logged
//! failures), skipped by the policy, or rejected with the one check that failed.

use chrono::{DateTime, Utc};

use super::envelope::NotaryScheme;
use super::policy::{Level, Validation};

/// The check that refused a signature. Each names one step of docs/SIGNATURES.md
/// ("Cryptographic verification").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The envelope is not parseable JSON/CBOR of the expected shape, or misses a required field.
    EnvelopeUnreadable,
    /// The envelope is larger than [`super::Limits::max_envelope_bytes`].
    EnvelopeTooLarge,
    /// The envelope's media type is neither `application/jose+json` nor `application/cose`.
    UnsupportedEnvelope,
    /// `alg` is not one the specification allows, or does not match the signing key.
    UnsupportedAlgorithm,
    /// A header listed as critical is not one ecr-audit understands.
    UnknownCriticalHeader,
    /// The signature over the protected header and payload does not verify with the leaf key.
    BadSignature,
    /// The signed target artifact names another digest than the subject.
    DigestMismatch,
    /// The signed target artifact's media type differs from the subject's.
    MediaTypeMismatch,
    /// The signed target artifact's size differs from the subject's.
    SizeMismatch,
    /// More certificates than [`super::Limits::max_chain_certificates`].
    ChainTooLong,
    /// The certificate chain does not lead to a root in the policy's trust stores.
    UntrustedChain,
    /// A certificate breaks the specification's key-usage rules (e.g. no code-signing EKU).
    CertificateUsage,
    /// The signing scheme does not fit the policy's trust store types.
    SchemeNotTrusted,
    /// The signer is not among the policy's `trustedIdentities`.
    IdentityNotTrusted,
    /// The signing time is outside a certificate's validity.
    CertificateNotValidAtSigningTime,
    /// A certificate of the chain has expired (or is not yet valid) now.
    CertificateExpired,
    /// The signature's expiry attribute has passed.
    Expired,
    /// No trust policy applies to the artifact's repository.
    NoPolicyForScope,
    /// No trust policy is configured at all (`ECR_AUDIT_TRUST_POLICY` unset): there is no
    /// default, as AWS Signer's roots are not pinned (docs/SIGNATURES.md).
    NoTrustPolicy,
    /// A policy names a trust store that is not configured.
    TrustStoreMissing,
    /// A Sigstore bundle (keyless): verifying those is not configured.
    KeylessNotConfigured,
    /// Cosign: no configured public key verifies the signature.
    UntrustedKey,
}

impl Failure {
    /// Every failure, in declaration order (the metric label list is checked against it).
    pub const ALL: [Self; 22] = [
        Self::EnvelopeUnreadable,
        Self::EnvelopeTooLarge,
        Self::UnsupportedEnvelope,
        Self::UnsupportedAlgorithm,
        Self::UnknownCriticalHeader,
        Self::BadSignature,
        Self::DigestMismatch,
        Self::MediaTypeMismatch,
        Self::SizeMismatch,
        Self::ChainTooLong,
        Self::UntrustedChain,
        Self::CertificateUsage,
        Self::SchemeNotTrusted,
        Self::IdentityNotTrusted,
        Self::CertificateNotValidAtSigningTime,
        Self::CertificateExpired,
        Self::Expired,
        Self::NoPolicyForScope,
        Self::NoTrustPolicy,
        Self::TrustStoreMissing,
        Self::KeylessNotConfigured,
        Self::UntrustedKey,
    ];

    /// A stable snake_case name for records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EnvelopeUnreadable => "envelope_unreadable",
            Self::EnvelopeTooLarge => "envelope_too_large",
            Self::UnsupportedEnvelope => "unsupported_envelope",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::UnknownCriticalHeader => "unknown_critical_header",
            Self::BadSignature => "bad_signature",
            Self::DigestMismatch => "digest_mismatch",
            Self::MediaTypeMismatch => "media_type_mismatch",
            Self::SizeMismatch => "size_mismatch",
            Self::ChainTooLong => "chain_too_long",
            Self::UntrustedChain => "untrusted_chain",
            Self::CertificateUsage => "certificate_usage",
            Self::SchemeNotTrusted => "scheme_not_trusted",
            Self::IdentityNotTrusted => "identity_not_trusted",
            Self::CertificateNotValidAtSigningTime => "certificate_not_valid_at_signing_time",
            Self::CertificateExpired => "certificate_expired",
            Self::Expired => "expired",
            Self::NoPolicyForScope => "no_policy_for_scope",
            Self::NoTrustPolicy => "no_trust_policy",
            Self::TrustStoreMissing => "trust_store_missing",
            Self::KeylessNotConfigured => "keyless_not_configured",
            Self::UntrustedKey => "untrusted_key",
        }
    }

    /// Which validation of the verification level governs this failure.
    pub(crate) fn validation(self) -> Validation {
        match self {
            Self::UntrustedChain
            | Self::CertificateUsage
            | Self::SchemeNotTrusted
            | Self::IdentityNotTrusted
            | Self::TrustStoreMissing
            | Self::NoTrustPolicy => Validation::Authenticity,
            Self::CertificateNotValidAtSigningTime | Self::CertificateExpired => {
                Validation::AuthenticTimestamp
            }
            Self::Expired => Validation::Expiry,
            _ => Validation::Integrity,
        }
    }
}

/// A failed check with a short reason for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub failure: Failure,
    pub reason: String,
}

/// Longest reason kept: reasons quote hostile input (header names, parser messages), and are
/// stored and logged per signature.
pub const MAX_REASON_CHARS: usize = 300;

impl Rejection {
    pub fn new(failure: Failure, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if let Some((cut, _)) = reason.char_indices().nth(MAX_REASON_CHARS) {
            reason.truncate(cut);
            reason.push('…');
        }
        Self { failure, reason }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.failure.as_str(), self.reason)
    }
}

/// How a signature was made: the two Notary signing schemes, or a Cosign key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningScheme {
    X509,
    SigningAuthority,
    /// Cosign simple signing with a configured public key.
    CosignKey,
}

impl SigningScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X509 => "notary.x509",
            Self::SigningAuthority => "notary.x509.signingAuthority",
            Self::CosignKey => "cosign.key",
        }
    }
}

/// Who signed: the leaf's subject, and for AWS Signer the profile version and job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SignerIdentity {
    /// The leaf certificate's subject, RFC 4514 order as read (e.g. `C=US, ST=WA, O=…, CN=…`).
    pub subject: String,
    pub signer_profile_version_arn: Option<String>,
    pub signer_job_arn: Option<String>,
}

/// A signature every enforced check accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub identity: SignerIdentity,
    /// The signed signing time (Notary); Cosign simple signing carries none.
    pub signing_time: Option<DateTime<Utc>>,
    pub expiry: Option<DateTime<Utc>>,
    pub scheme: SigningScheme,
    /// `sha256:` of the envelope bytes.
    pub envelope_digest: String,
    /// The trust policy that applied and its level.
    pub policy: String,
    pub level: Level,
    /// Failures the level only logs (e.g. authenticity under `audit`): record them, do not fail.
    pub warnings: Vec<Rejection>,
}

/// The outcome of checking one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    Verified(Box<Verified>),
    /// The policy's level is `skip`: nothing was verified, and this is not a signature.
    Skipped {
        policy: String,
    },
    Rejected(Rejection),
}

impl SignatureCheck {
    pub fn rejected(failure: Failure, reason: impl Into<String>) -> Self {
        Self::Rejected(Rejection::new(failure, reason))
    }

    /// The failure, when rejected.
    pub fn failure(&self) -> Option<Failure> {
        match self {
            Self::Rejected(rejection) => Some(rejection.failure),
            _ => None,
        }
    }
}

impl From<NotaryScheme> for SigningScheme {
    fn from(scheme: NotaryScheme) -> Self {
        match scheme {
            NotaryScheme::X509 => Self::X509,
            NotaryScheme::SigningAuthority => Self::SigningAuthority,
        }
    }
}
