//! Signatures: which sources to read for a digest, its verdict, and when to look again.

use chrono::{DateTime, Duration, Utc};

use super::SignatureWrite;
use crate::domain::{Digest, RepositoryKey, SignatureStatus};
pub(crate) use crate::evaluate::signature::SignatureFacts;
use crate::evaluate::signature::{profiles_to_check, signature_verdict, undetermined};
use crate::facts::{Fact, ManagedSigning, SignatureVerification};

/// Whether the verifications already decide the verdict: one signature verified under the
/// trust configuration makes the digest `SIGNED` whatever managed signing's statuses say, so
/// those need not be read (`pipeline::reads`). Skipped or rejected signatures settle nothing:
/// a managed signing still `PENDING` or `FAILED` explains them.
pub(crate) fn settled_by_verification(verifications: &[SignatureVerification]) -> bool {
    verifications.iter().any(SignatureVerification::is_verified)
}

/// The signature reads one digest needs: managed signing, referrers, and — when
/// `cosign_tag` — Cosign's `sha256-<hex>.sig` tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureReads {
    pub key: RepositoryKey,
    pub digest: Digest,
    pub pushed_at: DateTime<Utc>,
    /// Re-checks already made, for the schedule.
    pub attempts: u32,
    pub cosign_tag: bool,
}

impl SignatureReads {
    /// `every_source` is false only for a digest's own push event: inside the grace window the
    /// verdict cannot be UNSIGNED, so the Cosign tag look-up (a third call) is left to the
    /// re-checks and to the signature's own push event; once the window is over every source
    /// is read, as a missed signature would be a false UNSIGNED.
    pub fn new(
        key: RepositoryKey,
        digest: Digest,
        pushed_at: DateTime<Utc>,
        attempts: u32,
        every_source: bool,
        (now, grace): (DateTime<Utc>, Duration),
    ) -> Self {
        Self {
            cosign_tag: every_source || now >= pushed_at + grace,
            key,
            digest,
            pushed_at,
            attempts,
        }
    }

    /// The Signer profiles to read once managed signing's statuses are known.
    pub fn profiles(managed: &Fact<Vec<ManagedSigning>>) -> Vec<&str> {
        profiles_to_check(managed)
    }

    /// Judges what was read and verified, now, and schedules the next look.
    pub(crate) fn judge(
        self,
        facts: &SignatureFacts,
        (checked_at, grace): (DateTime<Utc>, Duration),
    ) -> SignatureWrite {
        let verdict = signature_verdict(facts, self.pushed_at, checked_at, grace);
        let next_check = if undetermined(facts) {
            Some(checked_at + unavailable_recheck_delay(self.attempts))
        } else {
            next_signature_check(
                verdict.status,
                self.pushed_at + grace,
                checked_at,
                self.attempts,
            )
        };
        SignatureWrite {
            key: self.key,
            digest: self.digest,
            pushed_at: self.pushed_at,
            verdict,
            checked_at,
            next_check,
        }
    }
}

/// How long to wait before reading again a source AWS did not answer: 5 s, doubling, at most
/// 10 minutes, for as long as the outage lasts.
pub fn unavailable_recheck_delay(attempts: u32) -> Duration {
    Duration::seconds((5_i64 << attempts.min(20)).min(600))
}

/// When to look at a digest's signatures again.
///
/// `PENDING`: soon and more slowly each time, but never later than the end of the grace
/// window, so `UNSIGNED` is declared on time. `UNSIGNED`, `FAILED`, `UNTRUSTED`: a few
/// widening checks (1 h, 2 h, 4 h, …) in case a signature arrives without an event; after
/// that the signature's own push event is what moves the digest. `SIGNED`: never.
pub fn next_signature_check(
    status: SignatureStatus,
    grace_deadline: DateTime<Utc>,
    now: DateTime<Utc>,
    attempts: u32,
) -> Option<DateTime<Utc>> {
    let doubling = |base_seconds: i64, cap_seconds: i64| {
        Duration::seconds((base_seconds << attempts.min(20)).min(cap_seconds))
    };
    match status {
        SignatureStatus::Signed => None,
        SignatureStatus::Pending if now < grace_deadline => {
            Some((now + doubling(2, 300)).min(grace_deadline + Duration::milliseconds(10)))
        }
        SignatureStatus::Pending => Some(now + doubling(30, 3600)),
        SignatureStatus::Unsigned | SignatureStatus::Failed | SignatureStatus::Untrusted => {
            (attempts < 6).then(|| now + doubling(3600, 86_400))
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::*;

    #[test]
    fn pending_rechecks_never_pass_the_end_of_the_grace_window() {
        let now = Utc::now();
        let deadline = now + Duration::seconds(3);
        for attempts in 0..10 {
            let due = next_signature_check(SignatureStatus::Pending, deadline, now, attempts)
                .expect("pending is re-checked");
            assert!(
                due > now && due <= deadline + Duration::milliseconds(10),
                "attempt {attempts}: {due}"
            );
        }
        let long = now + Duration::hours(1);
        assert_eq!(
            next_signature_check(SignatureStatus::Pending, long, now, 0),
            Some(now + Duration::seconds(2))
        );
        assert_eq!(
            next_signature_check(SignatureStatus::Pending, long, now, 3),
            Some(now + Duration::seconds(16))
        );
    }

    #[test]
    fn unavailable_sources_are_read_again_soon_then_every_ten_minutes() {
        let delays: Vec<i64> = (0..10)
            .map(|attempts| unavailable_recheck_delay(attempts).num_seconds())
            .collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
    }

    #[test]
    fn settled_statuses_are_checked_a_few_more_times_then_left_to_events() {
        let now = Utc::now();
        let past = now - Duration::minutes(1);
        assert_eq!(
            next_signature_check(SignatureStatus::Signed, past, now, 0),
            None
        );
        assert_eq!(
            next_signature_check(SignatureStatus::Unsigned, past, now, 0),
            Some(now + Duration::hours(1))
        );
        assert_eq!(
            next_signature_check(SignatureStatus::Unsigned, past, now, 2),
            Some(now + Duration::hours(4))
        );
        assert_eq!(
            next_signature_check(SignatureStatus::Untrusted, past, now, 6),
            None
        );
        assert_eq!(
            next_signature_check(SignatureStatus::Pending, past, now, 1),
            Some(now + Duration::seconds(60)),
            "managed signing still in progress after the window"
        );
    }
}
