//! Pure signature evaluation: what was found about a digest → its signature status.
//!
//! Sources: ECR managed signing (`DescribeImageSigningStatus`, one entry per matching signing
//! rule), Notation signatures (OCI referrers of type `application/vnd.cncf.notary.signature`)
//! and Cosign (the `sha256-<hex>.sig` tag, or a Sigstore bundle referrer). Trust: a managed
//! signature counts only while its Signer profile is `Active`.
//!
//! Assumption (documented in docs/SIGNATURES.md): when managed signing reports `COMPLETE`,
//! the Notation referrers in the repository are the artifacts it produced, so they inherit the
//! managed verdict instead of counting again; otherwise a revoked profile's own signature
//! artifact would keep the digest `SIGNED`.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::SignatureStatus;
use crate::facts::{
    Fact, ManagedSigning, ProfileStatus, SignatureArtifact, SignatureKind, SigningStatus,
};

/// Everything read about one digest's signatures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SignatureFacts {
    pub managed: Fact<Vec<ManagedSigning>>,
    pub artifacts: Fact<Vec<SignatureArtifact>>,
    /// Signer profile status per profile ARN of a completed managed signature
    /// ([`profiles_to_check`]).
    pub profiles: BTreeMap<String, Fact<ProfileStatus>>,
}

/// Whether a managed-signing entry produced a signature: only a `COMPLETE` entry counts, and
/// only its profile's status decides whether it is trusted.
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
    /// Trusted sources, e.g. `managed:arn:aws:signer:…`, `notation:sha256:…`, `cosign:sha256-….sig`.
    pub sources: Vec<String>,
    pub reason: String,
}

/// Judges a digest pushed at `pushed_at`, now, with a grace window for asynchronous signing.
pub(crate) fn signature_verdict(
    facts: &SignatureFacts,
    pushed_at: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
) -> SignatureVerdict {
    let (trusted, untrusted) = trusted_sources(facts);
    if !trusted.is_empty() {
        return SignatureVerdict {
            status: SignatureStatus::Signed,
            reason: format!("signed by {}", trusted.join(", ")),
            sources: trusted,
        };
    }
    let unread_note = unread_note(facts);
    let verdict = |status, reason: String| SignatureVerdict {
        status,
        sources: Vec::new(),
        reason: format!("{reason}{unread_note}"),
    };
    if let Some((status, reason)) = managed_signing_state(facts) {
        return verdict(status, reason);
    }
    if !untrusted.is_empty() {
        return verdict(
            SignatureStatus::Untrusted,
            format!("only untrusted signatures: {}", untrusted.join("; ")),
        );
    }
    let deadline = pushed_at + grace;
    if now < deadline {
        return verdict(
            SignatureStatus::Pending,
            format!(
                "no signature yet; grace window ends {}",
                deadline.to_rfc3339()
            ),
        );
    }
    verdict(
        SignatureStatus::Unsigned,
        format!(
            "no signature {} after the push (grace window {}s)",
            humanize(now - pushed_at),
            grace.num_seconds()
        ),
    )
}

/// The trusted sources (`managed:…`, `notation:…`, `cosign:…`) and why the other completed
/// managed signatures are not trusted.
fn trusted_sources(facts: &SignatureFacts) -> (Vec<String>, Vec<String>) {
    let managed: &[ManagedSigning] = facts.managed.known().map_or(&[], Vec::as_slice);
    let artifacts: &[SignatureArtifact] = facts.artifacts.known().map_or(&[], Vec::as_slice);
    let mut trusted = Vec::new();
    let mut untrusted = Vec::new();
    for entry in managed.iter().filter(|m| managed_signature_complete(m)) {
        match facts.profiles.get(&entry.profile_arn) {
            Some(Fact::Known(ProfileStatus::Active)) => {
                trusted.push(format!("managed:{}", entry.profile_arn));
            }
            Some(Fact::Known(status)) => {
                untrusted.push(format!("signing profile {} is {status}", entry.profile_arn));
            }
            Some(Fact::Unknown(reason)) => untrusted.push(format!(
                "status of signing profile {} could not be read: {reason}",
                entry.profile_arn
            )),
            None => untrusted.push(format!(
                "status of signing profile {} not read",
                entry.profile_arn
            )),
        }
    }
    let managed_complete = managed.iter().any(managed_signature_complete);
    for artifact in artifacts {
        match artifact.kind {
            SignatureKind::Notation if managed_complete => {}
            SignatureKind::Notation => trusted.push(format!("notation:{}", artifact.reference)),
            SignatureKind::Cosign => trusted.push(format!("cosign:{}", artifact.reference)),
        }
    }
    (trusted, untrusted)
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

    fn facts(
        managed: Vec<(&str, Option<&str>)>,
        artifacts: Vec<SignatureKind>,
        profile: Option<&str>,
    ) -> SignatureFacts {
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
                    .into_iter()
                    .map(|kind| SignatureArtifact {
                        kind,
                        reference: "sha256:abc".into(),
                        pushed_at: None,
                    })
                    .collect(),
            ),
            profiles: profile
                .map(|p| {
                    BTreeMap::from([(PROFILE.to_owned(), Fact::Known(ProfileStatus::from_raw(p)))])
                })
                .unwrap_or_default(),
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

    #[test]
    #[allow(
        clippy::too_many_lines,
        reason = "the signature verdict table, one row per case"
    )]
    fn the_signature_table() {
        use SignatureKind::{Cosign, Notation};
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
                "managed complete, active",
                facts(vec![("COMPLETE", None)], vec![Notation], Some("Active")),
                11,
                Signed,
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
                "managed complete, revoked since",
                facts(vec![("COMPLETE", None)], vec![Notation], Some("Revoked")),
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
                "revoked managed but a cosign signature",
                facts(vec![("COMPLETE", None)], vec![Cosign], Some("Revoked")),
                11,
                Signed,
            ),
            (
                "notation alone",
                facts(vec![], vec![Notation], None),
                11,
                Signed,
            ),
            (
                "cosign alone",
                facts(vec![], vec![Cosign], None),
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
        }
    }

    #[test]
    fn unreadable_profile_status_is_not_trusted() {
        let mut f = facts(vec![("COMPLETE", None)], vec![], None);
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
