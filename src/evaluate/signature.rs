//! Pure signature evaluation: what was found and verified about a digest → its signature
//! status.
//!
//! Sources: ECR managed signing (`DescribeImageSigningStatus`, one entry per matching signing
//! rule), Notation signatures (OCI referrers of type `application/vnd.cncf.notary.signature`)
//! and Cosign (the `sha256-<hex>.sig` tag, or a Sigstore bundle referrer). A signature counts
//! only when it verifies under the trust policy (`crate::trust`, via `crate::plan::verify`):
//! presence alone never makes a digest `SIGNED`. A managed signature counts when managed
//! signing is `COMPLETE`, its Signer profile is `Active` and a Notary signature made with that
//! profile verifies (docs/SIGNATURES.md).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::SignatureStatus;
use crate::facts::{
    Fact, ManagedSigning, ProfileStatus, SignatureArtifact, SignatureKind, SignatureVerification,
    SigningStatus, VerificationResult,
};

/// Everything read about one digest's signatures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SignatureFacts {
    pub managed: Fact<Vec<ManagedSigning>>,
    pub artifacts: Fact<Vec<SignatureArtifact>>,
    /// Signer profile status per profile ARN of a completed managed signature
    /// ([`profiles_to_check`]).
    pub profiles: BTreeMap<String, Fact<ProfileStatus>>,
    /// One verification per signature artifact read (at most the per-digest cap), in the
    /// order of `artifacts`.
    pub verifications: Vec<SignatureVerification>,
    /// The trust configuration version the verifications were made under.
    pub policy_version: String,
}

/// Whether a managed-signing entry produced a signature: only a `COMPLETE` entry counts, and
/// only when its profile is `Active` and its envelope verifies.
pub(crate) fn managed_signature_complete(entry: &ManagedSigning) -> bool {
    entry.status == SigningStatus::Complete
}

/// The Signer profiles whose status the verdict needs: those of completed managed
/// signatures, each once, in order of appearance.
pub(crate) fn profiles_to_check(managed: &Fact<Vec<ManagedSigning>>) -> Vec<&str> {
    let mut profiles: Vec<&str> = Vec::new();
    let entries = managed.known().map_or(&[][..], Vec::as_slice);
    for entry in entries.iter().filter(|m| managed_signature_complete(m)) {
        if !profiles.contains(&entry.profile_arn.as_str()) {
            profiles.push(&entry.profile_arn);
        }
    }
    profiles
}

/// The status with the sources that justify it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureVerdict {
    pub status: SignatureStatus,
    /// Verified sources, e.g. `signer:arn:aws:signer:…` (a signature whose identity is a Signer
    /// profile), `managed:arn:aws:signer:…` (when managed signing's status was read too),
    /// `notation:sha256:…`, `cosign:sha256-….sig`.
    pub sources: Vec<String>,
    pub reason: String,
    /// Each signature's verification (what was checked, the identity or the failed check).
    #[serde(default)]
    pub verifications: Vec<SignatureVerification>,
    /// The trust configuration version the verdict was reached under (`none` without a
    /// policy; `trust::TrustSettings::version`).
    #[serde(default)]
    pub policy_version: Option<String>,
}

/// Judges a digest pushed at `pushed_at`, now, with a grace window for asynchronous signing.
/// Signatures present but none verifying are `UNTRUSTED` at once: the grace window is for
/// signatures still to come, not for ones that fail.
pub(crate) fn signature_verdict(
    facts: &SignatureFacts,
    pushed_at: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
) -> SignatureVerdict {
    let judged = judge_sources(facts);
    let verdict = |status, sources: Vec<String>, reason: String| SignatureVerdict {
        status,
        sources,
        reason,
        verifications: facts.verifications.clone(),
        policy_version: Some(facts.policy_version.clone()),
    };
    if !judged.trusted.is_empty() {
        let reason = format!("signed by {}", named(&judged.trusted, ", "));
        let mut sources = judged.trusted;
        sources.truncate(SOURCES_NAMED);
        return verdict(SignatureStatus::Signed, sources, reason);
    }
    let notes = format!("{}{}", judged.left_out_note(facts), unread_note(facts));
    // A source AWS did not answer may hold the trusted signature: no verdict but "not known
    // yet", re-checked soon (`plan::signature`), rather than a false UNSIGNED or UNTRUSTED.
    if undetermined(facts) {
        return verdict(
            SignatureStatus::Pending,
            Vec::new(),
            format!("undetermined until the unavailable sources are read again{notes}"),
        );
    }
    if let Some((status, reason)) = managed_signing_state(facts) {
        return verdict(status, Vec::new(), format!("{reason}{notes}"));
    }
    if !judged.untrusted.is_empty() {
        return verdict(
            SignatureStatus::Untrusted,
            Vec::new(),
            format!(
                "no signature verifies: {}{notes}",
                named(&judged.untrusted, "; ")
            ),
        );
    }
    let deadline = pushed_at + grace;
    if now < deadline {
        let reason = format!(
            "no signature yet; grace window ends {}{notes}",
            deadline.to_rfc3339()
        );
        return verdict(SignatureStatus::Pending, Vec::new(), reason);
    }
    let reason = format!(
        "no signature {} after the push (grace window {}s){notes}",
        humanize(now - pushed_at),
        grace.num_seconds()
    );
    verdict(SignatureStatus::Unsigned, Vec::new(), reason)
}

/// Whether a source that could hold a trusted signature is unknown because AWS did not
/// answer (an outage), not because of a lasting answer such as access denied.
pub(crate) fn undetermined(facts: &SignatureFacts) -> bool {
    facts.managed.is_unavailable()
        || facts.artifacts.is_unavailable()
        || facts.profiles.values().any(Fact::is_unavailable)
}

/// How many sources a verdict names; the others are counted. A digest may have thousands of
/// referrers, and its verdict is copied into every evidence record that re-judges it: naming
/// them all would grow the append-only evidence with the square of the referrers.
pub const SOURCES_NAMED: usize = 5;

/// The first [`SOURCES_NAMED`] items joined by `separator`, and how many more there are.
fn named(items: &[String], separator: &str) -> String {
    let shown = items[..items.len().min(SOURCES_NAMED)].join(separator);
    match items.len().saturating_sub(SOURCES_NAMED) {
        0 => shown,
        more => format!("{shown} and {more} more ({} in all)", items.len()),
    }
}

/// The verified sources, and why each other signature does not count.
struct Judged {
    trusted: Vec<String>,
    untrusted: Vec<String>,
}

impl Judged {
    /// `; N more signature artifacts not verified (cap …)` when the per-digest cap left some out.
    fn left_out_note(&self, facts: &SignatureFacts) -> String {
        let listed = facts.artifacts.known().map_or(0, Vec::len);
        let left_out = listed.saturating_sub(facts.verifications.len());
        if left_out == 0 {
            String::new()
        } else {
            format!(
                "; {left_out} more signature artifacts not verified (ECR_AUDIT_MAX_SIGNATURES_PER_DIGEST)"
            )
        }
    }
}

/// The Signer profile a verified Notary signature was made with (its profile version ARN
/// without the version), if it names one.
fn signer_profile(verification: &SignatureVerification) -> Option<&str> {
    match &verification.result {
        VerificationResult::Verified {
            signer_profile_version_arn: Some(version),
            ..
        } => version.rsplit_once('/').map(|(profile, _)| profile),
        _ => None,
    }
}

/// Sorts every signature into verified sources and reasons for distrust. Managed signing
/// `COMPLETE` counts as `managed:PROFILE` only when the profile is `Active` and a Notary
/// signature made with that profile verifies; such a signature never counts on its own
/// when its profile is not `Active` (a revoked profile's own artifact must not keep the
/// digest `SIGNED`).
fn judge_sources(facts: &SignatureFacts) -> Judged {
    let managed: &[ManagedSigning] = facts.managed.known().map_or(&[], Vec::as_slice);
    let artifacts: &[SignatureArtifact] = facts.artifacts.known().map_or(&[], Vec::as_slice);
    let mut judged = Judged {
        trusted: Vec::new(),
        untrusted: Vec::new(),
    };
    let mut managed_profiles: Vec<&str> = Vec::new();
    for entry in managed.iter().filter(|m| managed_signature_complete(m)) {
        if managed_profiles.contains(&entry.profile_arn.as_str()) {
            continue;
        }
        managed_profiles.push(&entry.profile_arn);
        match judge_managed(facts, &entry.profile_arn) {
            Ok(source) => judged.trusted.push(source),
            Err(reason) => judged.untrusted.push(reason),
        }
    }
    for verification in &facts.verifications {
        let profile = signer_profile(verification);
        if profile.is_some_and(|p| managed_profiles.contains(&p)) {
            continue;
        }
        let kind = artifacts
            .iter()
            .find(|a| a.reference == verification.reference)
            .map_or(SignatureKind::Notation, |a| a.kind);
        let label = format!("{}:{}", kind_label(kind), verification.reference);
        match &verification.result {
            // Named by who signed: the AWS Signer profile, when the identity is one.
            VerificationResult::Verified { .. } => judged
                .trusted
                .push(profile.map_or(label, |p| format!("signer:{p}"))),
            VerificationResult::Skipped { policy } => judged.untrusted.push(format!(
                "{label} skipped (trust policy {policy:?} has level skip: not verified)"
            )),
            VerificationResult::Rejected { check, reason } => {
                judged.untrusted.push(format!("{label} {check} ({reason})"));
            }
        }
    }
    judged
}

fn kind_label(kind: SignatureKind) -> &'static str {
    match kind {
        SignatureKind::Notation => "notation",
        SignatureKind::Cosign => "cosign",
    }
}

/// A completed managed signature: `managed:PROFILE` when it counts, else why not.
fn judge_managed(facts: &SignatureFacts, profile_arn: &str) -> Result<String, String> {
    match facts.profiles.get(profile_arn) {
        Some(Fact::Known(ProfileStatus::Active)) => {}
        Some(Fact::Known(status)) => {
            return Err(format!("signing profile {profile_arn} is {status}"));
        }
        Some(Fact::Unknown(reason)) => {
            return Err(format!(
                "status of signing profile {profile_arn} could not be read: {reason}"
            ));
        }
        None => return Err(format!("status of signing profile {profile_arn} not read")),
    }
    let own = facts
        .verifications
        .iter()
        .find(|v| v.is_verified() && signer_profile(v) == Some(profile_arn));
    if own.is_some() {
        return Ok(format!("managed:{profile_arn}"));
    }
    // The signatures that failed are listed on their own (`judge_sources`).
    Err(format!(
        "managed signing with {profile_arn} is COMPLETE but no signature made with that profile verifies"
    ))
}

/// `; … could not be read (…)` for each source that could not be read, or nothing.
fn unread_note(facts: &SignatureFacts) -> String {
    let unread: Vec<String> = [
        ("managed signing", &facts.managed.clone().map(|_| ())),
        ("signature artifacts", &facts.artifacts.clone().map(|_| ())),
    ]
    .into_iter()
    .filter_map(|(what, fact)| match fact {
        Fact::Unknown(reason) => Some(format!("{what} could not be read ({reason})")),
        Fact::Known(()) => None,
    })
    .collect();
    if unread.is_empty() {
        String::new()
    } else {
        format!("; {}", unread.join("; "))
    }
}

/// Managed signing in progress or failed: it decides before untrusted signatures and the
/// grace window do.
fn managed_signing_state(facts: &SignatureFacts) -> Option<(SignatureStatus, String)> {
    let managed: &[ManagedSigning] = facts.managed.known().map_or(&[], Vec::as_slice);
    if let Some(entry) = managed
        .iter()
        .find(|m| m.status == SigningStatus::InProgress)
    {
        return Some((
            SignatureStatus::Pending,
            format!("managed signing with {} is in progress", entry.profile_arn),
        ));
    }
    let entry = managed.iter().find(|m| m.status == SigningStatus::Failed)?;
    let reason = format!(
        "managed signing with {} failed: {} {}",
        entry.profile_arn,
        entry.failure_code.as_deref().unwrap_or("(no code)"),
        entry.failure_reason.as_deref().unwrap_or("")
    );
    Some((SignatureStatus::Failed, reason.trim_end().to_owned()))
}

fn humanize(elapsed: Duration) -> String {
    let seconds = elapsed.num_seconds().max(0);
    match seconds {
        0..120 => format!("{seconds}s"),
        120..7200 => format!("{}m", seconds / 60),
        _ => format!("{}h", seconds / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = "arn:aws:signer:us-east-1:123456789012:/signing-profiles/ecr_release";

    /// A signature artifact and whether it verifies (`None`: rejected as a bad signature).
    type Sig = (SignatureKind, Option<&'static str>);

    fn verification(
        reference: &str,
        signer: Option<&str>,
        verified: bool,
    ) -> SignatureVerification {
        let result = if verified {
            VerificationResult::Verified {
                scheme: "notary.x509.signingAuthority".into(),
                identity: "CN=release".into(),
                signer_profile_version_arn: signer.map(|p| format!("{p}/v1")),
                signer_job_arn: None,
                signing_time: None,
                expiry: None,
                warnings: Vec::new(),
            }
        } else {
            VerificationResult::Rejected {
                check: "bad_signature".into(),
                reason: "the signature does not verify".into(),
            }
        };
        SignatureVerification {
            reference: reference.into(),
            envelope_digest: Some("sha256:envelope".into()),
            policy_version: "sha256:policy".into(),
            result,
            revocation: None,
        }
    }

    fn facts(
        managed: Vec<(&str, Option<&str>)>,
        artifacts: Vec<Sig>,
        profile: Option<&str>,
    ) -> SignatureFacts {
        let references: Vec<String> = (0..artifacts.len())
            .map(|i| format!("sha256:{i}"))
            .collect();
        SignatureFacts {
            managed: Fact::Known(
                managed
                    .into_iter()
                    .map(|(status, code)| ManagedSigning {
                        profile_arn: PROFILE.into(),
                        status: SigningStatus::from_raw(status),
                        failure_code: code.map(str::to_owned),
                        failure_reason: code.map(|_| "profile revoked".to_owned()),
                    })
                    .collect(),
            ),
            artifacts: Fact::Known(
                artifacts
                    .iter()
                    .zip(&references)
                    .map(|((kind, _), reference)| SignatureArtifact {
                        kind: *kind,
                        reference: reference.clone(),
                        pushed_at: None,
                    })
                    .collect(),
            ),
            profiles: profile
                .map(|p| {
                    BTreeMap::from([(PROFILE.to_owned(), Fact::Known(ProfileStatus::from_raw(p)))])
                })
                .unwrap_or_default(),
            verifications: artifacts
                .iter()
                .zip(&references)
                .map(|((_, outcome), reference)| match outcome {
                    Some("managed") => verification(reference, Some(PROFILE), true),
                    Some(_) => verification(reference, None, true),
                    None => verification(reference, None, false),
                })
                .collect(),
            policy_version: "sha256:policy".into(),
        }
    }

    fn judge(facts: &SignatureFacts, minutes_since_push: i64) -> SignatureVerdict {
        let now = Utc::now();
        signature_verdict(
            facts,
            now - Duration::minutes(minutes_since_push),
            now,
            Duration::minutes(10),
        )
    }

    const MANAGED: Sig = (SignatureKind::Notation, Some("managed"));
    const NOTATION: Sig = (SignatureKind::Notation, Some("verified"));
    const COSIGN: Sig = (SignatureKind::Cosign, Some("verified"));
    const JUNK_NOTATION: Sig = (SignatureKind::Notation, None);
    const JUNK_COSIGN: Sig = (SignatureKind::Cosign, None);

    #[test]
    #[allow(
        clippy::too_many_lines,
        reason = "the signature verdict table, one row per case"
    )]
    fn the_signature_table() {
        use SignatureStatus::*;
        let cases: Vec<(&str, SignatureFacts, i64, SignatureStatus)> = vec![
            (
                "nothing, inside grace",
                facts(vec![], vec![], None),
                1,
                Pending,
            ),
            (
                "nothing, after grace",
                facts(vec![], vec![], None),
                11,
                Unsigned,
            ),
            (
                "managed complete, active, envelope verifies",
                facts(vec![("COMPLETE", None)], vec![MANAGED], Some("Active")),
                11,
                Signed,
            ),
            (
                "managed complete, active, envelope does not verify",
                facts(
                    vec![("COMPLETE", None)],
                    vec![JUNK_NOTATION],
                    Some("Active"),
                ),
                1,
                Untrusted,
            ),
            (
                "managed complete, active, no envelope at all",
                facts(vec![("COMPLETE", None)], vec![], Some("Active")),
                1,
                Untrusted,
            ),
            (
                "managed in progress",
                facts(vec![("IN_PROGRESS", None)], vec![], Some("Active")),
                30,
                Pending,
            ),
            (
                "managed failed",
                facts(
                    vec![("FAILED", Some("SIGNING_PROFILE_REVOKED"))],
                    vec![],
                    Some("Revoked"),
                ),
                1,
                Failed,
            ),
            (
                "managed complete, revoked since, envelope still verifies",
                facts(vec![("COMPLETE", None)], vec![MANAGED], Some("Revoked")),
                11,
                Untrusted,
            ),
            (
                "managed complete, canceled",
                facts(vec![("COMPLETE", None)], vec![], Some("Canceled")),
                1,
                Untrusted,
            ),
            (
                "revoked managed but a verified cosign signature",
                facts(
                    vec![("COMPLETE", None)],
                    vec![MANAGED, COSIGN],
                    Some("Revoked"),
                ),
                11,
                Signed,
            ),
            (
                "verified notation alone",
                facts(vec![], vec![NOTATION], None),
                11,
                Signed,
            ),
            (
                "verified cosign alone",
                facts(vec![], vec![COSIGN], None),
                11,
                Signed,
            ),
            (
                "junk notation inside the grace window",
                facts(vec![], vec![JUNK_NOTATION], None),
                1,
                Untrusted,
            ),
            (
                "junk cosign after the grace window",
                facts(vec![], vec![JUNK_COSIGN], None),
                11,
                Untrusted,
            ),
            (
                "one junk and one verified",
                facts(vec![], vec![JUNK_NOTATION, COSIGN], None),
                11,
                Signed,
            ),
        ];
        for (name, facts, minutes, expected) in cases {
            let verdict = judge(&facts, minutes);
            assert_eq!(verdict.status, expected, "{name}: {}", verdict.reason);
            assert_eq!(
                verdict.sources.is_empty(),
                expected != Signed,
                "{name}: sources {:?}",
                verdict.sources
            );
            assert_eq!(verdict.verifications, facts.verifications, "{name}");
            assert_eq!(verdict.policy_version.as_deref(), Some("sha256:policy"));
        }
    }

    #[test]
    fn an_untrusted_verdict_names_the_failed_check() {
        let verdict = judge(&facts(vec![], vec![JUNK_NOTATION], None), 1);
        assert!(
            verdict.reason.contains("notation:sha256:0 bad_signature"),
            "{}",
            verdict.reason
        );
        let managed = judge(
            &facts(
                vec![("COMPLETE", None)],
                vec![JUNK_NOTATION],
                Some("Active"),
            ),
            11,
        );
        assert!(
            managed.reason.contains("bad_signature"),
            "{}",
            managed.reason
        );
        assert!(
            managed
                .reason
                .contains("no signature made with that profile verifies")
        );
    }

    #[test]
    fn a_skipped_signature_is_never_signed() {
        let mut f = facts(vec![], vec![NOTATION], None);
        f.verifications[0].result = VerificationResult::Skipped {
            policy: "legacy".into(),
        };
        let verdict = judge(&f, 11);
        assert_eq!(verdict.status, SignatureStatus::Untrusted);
        assert!(verdict.reason.contains("level skip"), "{}", verdict.reason);
    }

    #[test]
    fn signatures_left_out_by_the_cap_are_noted() {
        let mut f = facts(vec![], vec![JUNK_NOTATION, JUNK_NOTATION], None);
        f.verifications.truncate(1);
        let verdict = judge(&f, 11);
        assert!(
            verdict
                .reason
                .contains("1 more signature artifacts not verified"),
            "{}",
            verdict.reason
        );
    }

    #[test]
    fn a_source_aws_did_not_answer_leaves_the_verdict_pending_not_unsigned() {
        fn down<T>() -> Fact<T> {
            Fact::unavailable("ecr:ListImageReferrers", "HTTP 500")
        }
        let mut referrers_down = facts(vec![], vec![], None);
        referrers_down.artifacts = down();
        let mut managed_down = facts(vec![], vec![], None);
        managed_down.managed = down();
        let mut failed_but_referrers_down = facts(
            vec![("FAILED", Some("SIGNING_PROFILE_REVOKED"))],
            vec![],
            None,
        );
        failed_but_referrers_down.artifacts = down();
        let mut profile_down = facts(vec![("COMPLETE", None)], vec![], None);
        profile_down.profiles.insert(PROFILE.into(), down());
        for (name, f) in [
            ("referrers down", referrers_down),
            ("managed signing down", managed_down),
            ("managed FAILED, referrers down", failed_but_referrers_down),
            ("profile status down", profile_down),
        ] {
            assert!(undetermined(&f), "{name}");
            let verdict = judge(&f, 60);
            assert_eq!(verdict.status, SignatureStatus::Pending, "{name}");
            assert!(
                verdict.reason.contains("undetermined"),
                "{name}: {}",
                verdict.reason
            );
        }
        // A signature that was read still counts; a lasting refusal is not an outage.
        let mut signed = facts(vec![], vec![NOTATION], None);
        signed.managed = down();
        assert_eq!(judge(&signed, 60).status, SignatureStatus::Signed);
        let mut denied = facts(vec![], vec![], None);
        denied.artifacts = Fact::Unknown("ListImageReferrers: AccessDeniedException: no".into());
        assert!(!undetermined(&denied));
        assert_eq!(judge(&denied, 60).status, SignatureStatus::Unsigned);
    }

    #[test]
    fn unreadable_profile_status_is_not_trusted() {
        let mut f = facts(vec![("COMPLETE", None)], vec![MANAGED], None);
        f.profiles.insert(
            PROFILE.into(),
            Fact::Unknown("AccessDeniedException".into()),
        );
        let verdict = judge(&f, 11);
        assert_eq!(verdict.status, SignatureStatus::Untrusted);
        assert!(
            verdict.reason.contains("AccessDeniedException"),
            "{}",
            verdict.reason
        );
    }

    #[test]
    fn a_verdict_names_a_bounded_number_of_sources() {
        let facts = facts(vec![], vec![NOTATION; 5000], None);
        let now = Utc::now();
        let verdict = signature_verdict(&facts, now, now, Duration::minutes(10));
        assert_eq!(verdict.status, SignatureStatus::Signed);
        assert_eq!(verdict.sources.len(), SOURCES_NAMED);
        assert!(
            verdict.reason.ends_with("and 4995 more (5000 in all)"),
            "{}",
            verdict.reason
        );
        assert!(verdict.reason.len() < 1000, "{}", verdict.reason.len());
    }

    #[test]
    fn failures_and_unread_sources_are_explained() {
        let verdict = judge(
            &facts(
                vec![("FAILED", Some("SIGNING_PROFILE_REVOKED"))],
                vec![],
                None,
            ),
            1,
        );
        assert!(
            verdict.reason.contains("SIGNING_PROFILE_REVOKED"),
            "{}",
            verdict.reason
        );

        let mut f = facts(vec![], vec![], None);
        f.managed = Fact::Unknown("UnknownOperationException".into());
        let verdict = judge(&f, 30);
        assert_eq!(verdict.status, SignatureStatus::Unsigned);
        assert!(
            verdict.reason.contains("managed signing could not be read"),
            "{}",
            verdict.reason
        );
    }
}
