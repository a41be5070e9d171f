//! The planner: pure decisions that turn an event and the facts read for it into writes.
//!
//! No I/O and no async: [`start`] says what an event needs read ([`Reads`]), and the
//! functions here turn what was read into an [`EventPlan`]; `pipeline.rs` only performs the
//! reads and commits. The reconcile sweep plans with the same functions.

mod event;
mod signature;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ledger;
pub mod verify;

pub use event::{
    PUSH_RECORD_SKEW, PresentImage, PresentImageRead, Reads, SignatureTarget,
    artifact_subject_to_confirm, attribute_repository_changes, moves_control_state, plan_delete,
    plan_present_image, plan_removal, plan_repository_gone, push_tag, referrer_subject,
    removal_note, repository_key, scan_write, start, subject_pushed_at,
};
pub(crate) use signature::{SignatureFacts, settled_by_verification};
pub use signature::{SignatureReads, next_signature_check};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::domain::{Actor, ControlId, Digest, RepositoryKey, Verdict};
use crate::evaluate::signature::SignatureVerdict;
use crate::evaluate::{self, ControlPolicy, ImageSettings};
use crate::facts::{ImageLookup, RegistryFacts, RepositoryFacts, RepositoryState, ScanFacts};
use crate::parse::AuditEvent;
use crate::telemetry::{DistrustedHint, RejectionCode, ScanningDisagreement};

/// The planner's settings: how controls are judged and how long signing may take.
#[derive(Debug, Clone)]
pub struct Planner {
    pub policy: ControlPolicy,
    /// How long a push may stay unsigned before it counts as `UNSIGNED`.
    pub signing_grace: chrono::Duration,
}

impl Planner {
    /// Evaluates one repository read against its registry's settings.
    pub(crate) fn repository_write(
        &self,
        key: RepositoryKey,
        facts: RepositoryFacts,
        registry: &RegistryFacts,
    ) -> RepositoryWrite {
        repository_write(key, facts, registry, &self.policy)
    }
}

/// Evaluates one repository read against its registry's settings.
pub(crate) fn repository_write(
    key: RepositoryKey,
    facts: RepositoryFacts,
    registry: &RegistryFacts,
    policy: &ControlPolicy,
) -> RepositoryWrite {
    let controls = evaluate::repository_controls(&facts, registry, policy);
    let reread = facts.has_unavailable() || registry.has_unavailable();
    let judged = match &facts.state {
        RepositoryState::Present(settings) => Some(evaluate::repository_scanning(
            settings,
            registry,
            key.name.as_str(),
        )),
        _ => None,
    };
    let (scanning, scanning_disagreements) = judged.map_or((None, Vec::new()), |judged| {
        (judged.configuration.known().cloned(), judged.disagreements)
    });
    RepositoryWrite {
        key,
        facts,
        scanning,
        scanning_disagreements,
        controls,
        only_if_new: false,
        reread,
        requested: false,
        fallback: false,
    }
}

/// The repository as a successful call left it at the call's own time, when the call's request
/// parameters say the whole setting: the requested state, dated at the event, replaces what
/// the re-read found for that setting. A change undone within seconds (MUTABLE, overwrite,
/// IMMUTABLE) is then two states, each written by its own event and attributed to its own
/// caller; a re-read alone would see only the final state.
///
/// | call | setting it names |
/// |---|---|
/// | `PutImageTagMutability` `MUTABLE`/`IMMUTABLE` | tag mutability, no exclusions |
/// | `PutImageScanningConfiguration` with `scanOnPush` | the repository's scan-on-push flag (ECR.1 is then judged from it and the registry rules, AWS's own report coming with the re-read); only when the registry's scanning is known, or ECR.1 would read `UNKNOWN` for a request that changed nothing unreadable |
/// | `SetRepositoryPolicy` with `policyText` | the repository policy text |
/// | `DeleteRepositoryPolicy` | no repository policy |
/// | `PutLifecyclePolicy` / `DeleteLifecyclePolicy` | a lifecycle policy, or none |
///
/// Encryption is set when a repository is created and can never change afterwards, so no
/// call changes it. Other calls, a tag mutability mode with exclusion filters, or a request
/// without the parameter keep the re-read. Returns the facts and whether they are the
/// requested state, and whether that differs from the re-read (a later change exists: read
/// again soon).
pub fn requested_state(
    change: &crate::parse::Change,
    event_time: DateTime<Utc>,
    mut facts: RepositoryFacts,
    registry: &RegistryFacts,
) -> (RepositoryFacts, Requested) {
    let crate::parse::Change::RepositoryChanged { call, .. } = change else {
        return (facts, Requested::default());
    };
    if matches!(
        call,
        crate::parse::RepositoryCall::PutImageScanningConfiguration { .. }
    ) && registry.scanning.known().is_none()
    {
        return (facts, Requested::default());
    }
    let RepositoryState::Present(settings) = &mut facts.state else {
        return (facts, Requested::default());
    };
    let Some(undone) = apply_request(call, settings) else {
        return (facts, Requested::default());
    };
    facts.observed_at = event_time;
    (
        facts,
        Requested {
            applied: true,
            undone,
        },
    )
}

/// Sets the one setting `call` names to what it asked for; `None` when the call does not name
/// a whole setting (nothing changed), else whether the re-read showed something else.
fn apply_request(
    call: &crate::parse::RepositoryCall,
    settings: &mut crate::facts::RepositorySettings,
) -> Option<bool> {
    use crate::facts::Fact;
    use crate::parse::RepositoryCall;
    fn set<T: PartialEq>(fact: &mut Fact<T>, requested: T) -> bool {
        let undone = fact.known() != Some(&requested);
        *fact = Fact::Known(requested);
        undone
    }
    Some(match call {
        RepositoryCall::PutImageTagMutability {
            image_tag_mutability: Some(mode),
        } if matches!(mode.as_str(), "MUTABLE" | "IMMUTABLE") => {
            let requested = crate::facts::TagMutability {
                mode: mode.clone(),
                exclusion_filters: Vec::new(),
            };
            set(&mut settings.tag_mutability, requested)
        }
        RepositoryCall::PutImageScanningConfiguration {
            scan_on_push: Some(on),
        } => {
            let undone = settings.scan_on_push != *on
                || settings.reported_scanning.known().map(|r| r.scan_on_push) != Some(*on);
            settings.scan_on_push = *on;
            // AWS's report at the request's time is not known (it also depends on the registry
            // rules); ECR.1 falls back to the rules with the requested flag.
            settings.reported_scanning = Fact::Unknown(
                "the state PutImageScanningConfiguration requested: AWS's own report was read later"
                    .to_owned(),
            );
            undone
        }
        RepositoryCall::SetRepositoryPolicy {
            policy_text: Some(text),
        } => {
            // AWS may store the policy re-formatted: compare as JSON when both parse.
            let as_json = |t: &str| serde_json::from_str::<serde_json::Value>(t).ok();
            let same = match settings.policy.known() {
                Some(Some(read)) => {
                    read == text || (as_json(read).is_some() && as_json(read) == as_json(text))
                }
                _ => false,
            };
            settings.policy = Fact::Known(Some(text.clone()));
            !same
        }
        RepositoryCall::DeleteRepositoryPolicy => set(&mut settings.policy, None),
        RepositoryCall::PutLifecyclePolicy => set(&mut settings.lifecycle_policy, true),
        RepositoryCall::DeleteLifecyclePolicy => set(&mut settings.lifecycle_policy, false),
        _ => return None,
    })
}

/// What [`requested_state`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requested {
    /// The facts are the requested state, dated at the request.
    pub applied: bool,
    /// The re-read already shows another state: a later change exists.
    pub undone: bool,
}

/// One repository read and what it means for the controls.
#[derive(Debug, Clone)]
pub struct RepositoryWrite {
    pub key: RepositoryKey,
    pub facts: RepositoryFacts,
    /// The effective scanning (for the `scan_frequency` column): AWS's answer, else the
    /// registry rules'; `None` when unknown.
    pub scanning: Option<crate::facts::ScanningConfiguration>,
    /// Where AWS's answer on scanning differed from the registry rules as evaluated here
    /// (counted when committed).
    pub scanning_disagreements: Vec<ScanningDisagreement>,
    /// `None` when the repository no longer exists.
    pub controls: Option<BTreeMap<ControlId, Verdict>>,
    /// Written only when the repository is not stored yet: a read made for another purpose
    /// (a push, a scan) must not move known control state (see [`moves_control_state`]).
    pub only_if_new: bool,
    /// A fact the controls need got no answer from AWS (an outage, `Fact::is_unavailable`):
    /// the repository is scheduled to be read again, so its `UNKNOWN`s resolve by themselves.
    pub reread: bool,
    /// The state a request asked for, dated at the request ([`requested_state`]). CloudTrail
    /// times have whole seconds, so it wins a tie with a stored state of the same second: two
    /// calls within one second are applied in the order they are processed, and the re-read
    /// scheduled when the final state differs corrects the order if it was wrong.
    pub requested: bool,
    /// The re-read that follows a requested state in a plan: written only when the requested
    /// state was not (it is older than what is stored, e.g. an event processed late), so the
    /// change is still recorded, by its caller, from what AWS says now.
    pub fallback: bool,
}

/// How an event changes whether a digest exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePresence {
    Pushed,
    Deleted,
    /// The event says something about the image but not whether it exists.
    Unchanged,
}

/// One digest's update.
#[derive(Debug, Clone)]
pub struct ImageWrite {
    pub key: RepositoryKey,
    pub digest: Digest,
    pub presence: ImagePresence,
    pub event_time: DateTime<Utc>,
    /// ECR's answer now, with when it was read; `None` when not looked up.
    pub lookup: Option<(DateTime<Utc>, ImageLookup)>,
    pub push_tag: Option<String>,
    /// The repository's settings at push time; only the first recorded value is kept.
    pub settings: Option<ImageSettings>,
    /// When the repository state `settings` describe was observed: the store derives the
    /// settings from the recorded history instead when a change lies between it and the push.
    pub settings_observed_at: Option<DateTime<Utc>>,
    pub pushed_by: Option<Actor>,
    pub storage_class: Option<String>,
    /// When the digest is an artifact (signature, SBOM, attestation): its subject and kind.
    pub artifact: Option<(Digest, crate::facts::ArtifactKind)>,
    /// When the digest is judged as an image but dressed as an artifact: how.
    pub disguise: Option<crate::facts::Disguise>,
    /// Why a digest is marked deleted, and by what, when the event says (lifecycle expiry,
    /// `BatchDeleteImage`, a deleted repository).
    pub removal: Option<RemovalNote>,
}

/// Why a digest was deleted and who or what caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovalNote {
    /// One phrase: `expired by lifecycle policy`, `repository no longer exists`, …
    pub reason: String,
    /// The caller's ARN, or the lifecycle rule; `None` when nobody can be named (a sweep).
    pub cause: Option<String>,
}

/// Everything one understood event changes.
#[derive(Debug, Clone)]
pub struct EventPlan {
    pub event: AuditEvent,
    pub ignored: bool,
    /// Repositories re-read because of the event (several for a registry-wide change).
    pub repositories: Vec<RepositoryWrite>,
    pub image: Option<ImageWrite>,
    /// Further digests an event removed (lifecycle expiry, `BatchDeleteImage`, a deleted
    /// repository): each gets an `image_deleted` evidence record of its own.
    pub deletions: Vec<ImageWrite>,
    /// Signature verdicts: the pushed digest's, or its subject's when a signature was pushed.
    pub signatures: Vec<SignatureWrite>,
    pub scans: Vec<ScanWrite>,
    /// Digests to judge again now, chosen by the store from the verifications it keeps (an
    /// AWS Signer revocation names a job or profile version, not digests).
    pub reverify: Option<Reverify>,
    /// What the message claimed that the plan did not take on trust (a clamped event time, a
    /// delete ECR does not confirm, a pusher older than the image): evidence of its own.
    pub distrusted: Vec<Distrusted>,
}

/// One claim of a message (or of a manifest) that was not taken on trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distrusted {
    pub hint: DistrustedHint,
    /// One sentence for the evidence and the log.
    pub note: String,
}

/// The metric label of a disguise.
fn disguise_hint(disguise: &crate::facts::Disguise) -> DistrustedHint {
    use crate::facts::Disguise;
    match disguise {
        Disguise::SubjectOnImage { .. } => DistrustedHint::SubjectOnImage,
        Disguise::MissingSubject { .. } => DistrustedHint::MissingSubject,
        Disguise::SignatureTag { .. } => DistrustedHint::SignatureTag,
        Disguise::RunnableContent { .. } => DistrustedHint::RunnableContent,
    }
}

impl Distrusted {
    pub fn new(hint: DistrustedHint, note: String) -> Self {
        Self { hint, note }
    }
}

/// Which current digests to judge again at once: their signature re-check is made due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reverify {
    /// Those with a stored verification of a signature by this AWS Signer signing job ARN or
    /// signing profile version ARN (`signer_job_arn`, `signer_profile_version_arn`).
    NamingSigner { arn: String },
}

/// A message that can never be processed.
#[derive(Debug, Clone)]
pub struct RejectedMessage {
    pub source: &'static str,
    pub message_id: Option<String>,
    pub code: RejectionCode,
    pub reason: String,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone)]
pub enum Plan {
    Event(Box<EventPlan>),
    Rejected(RejectedMessage),
}

/// A signature verdict for one digest, and when to look again.
#[derive(Debug, Clone)]
pub struct SignatureWrite {
    pub key: RepositoryKey,
    pub digest: Digest,
    pub pushed_at: DateTime<Utc>,
    pub verdict: SignatureVerdict,
    /// When the facts behind the verdict were read: an older check never overwrites a newer.
    pub checked_at: DateTime<Utc>,
    /// `None`: no more re-checks (signed, or given up).
    pub next_check: Option<DateTime<Utc>>,
}

/// A scan result for one digest; `None` facts mean never scanned.
#[derive(Debug, Clone)]
pub struct ScanWrite {
    pub key: RepositoryKey,
    pub digest: Digest,
    pub facts: Option<ScanFacts>,
    pub checked_at: DateTime<Utc>,
}

impl ImageWrite {
    /// A write that changes only the fields the caller sets next.
    fn bare(
        key: RepositoryKey,
        digest: Digest,
        presence: ImagePresence,
        event_time: DateTime<Utc>,
    ) -> Self {
        Self {
            key,
            digest,
            presence,
            event_time,
            lookup: None,
            push_tag: None,
            settings: None,
            settings_observed_at: None,
            pushed_by: None,
            storage_class: None,
            artifact: None,
            disguise: None,
            removal: None,
        }
    }

    /// The digest is gone (a delete event, or a sweep that no longer lists it).
    pub fn deleted(key: RepositoryKey, digest: Digest, event_time: DateTime<Utc>) -> Self {
        Self::bare(key, digest, ImagePresence::Deleted, event_time)
    }

    /// A delete ECR does not confirm: the digest stays as it is, with the tags read now.
    pub(crate) fn still_present(
        key: RepositoryKey,
        digest: Digest,
        event_time: DateTime<Utc>,
        lookup: (DateTime<Utc>, ImageLookup),
    ) -> Self {
        Self {
            lookup: Some(lookup),
            ..Self::bare(key, digest, ImagePresence::Unchanged, event_time)
        }
    }

    /// The CloudTrail record of a push already evaluated: it only adds who pushed.
    pub(crate) fn push_recorded(
        key: RepositoryKey,
        digest: Digest,
        event_time: DateTime<Utc>,
        push_tag: Option<String>,
        pushed_by: Option<Actor>,
    ) -> Self {
        Self {
            push_tag,
            pushed_by,
            ..Self::bare(key, digest, ImagePresence::Pushed, event_time)
        }
    }

    /// The digest moved to another storage class (archived or restored); ECR's answer now.
    pub(crate) fn storage_class_changed(
        key: RepositoryKey,
        digest: Digest,
        event_time: DateTime<Utc>,
        lookup: (DateTime<Utc>, ImageLookup),
        storage_class: Option<String>,
    ) -> Self {
        Self {
            lookup: Some(lookup),
            storage_class,
            ..Self::bare(key, digest, ImagePresence::Unchanged, event_time)
        }
    }
}

impl EventPlan {
    /// A plan that changes nothing yet.
    pub fn new(event: AuditEvent) -> Self {
        let distrusted = event
            .claimed_time
            .map(|claimed| {
                Distrusted::new(
                    DistrustedHint::EventTimeClamped,
                    format!(
                        "event time {} is outside the queue's own timestamps: taken as {}",
                        claimed.to_rfc3339(),
                        event.time.to_rfc3339()
                    ),
                )
            })
            .into_iter()
            .collect();
        Self {
            event,
            ignored: false,
            repositories: Vec::new(),
            image: None,
            deletions: Vec::new(),
            signatures: Vec::new(),
            scans: Vec::new(),
            distrusted,
            reverify: None,
        }
    }

    /// Every distrusted claim: the message's, and the disguise of the image it wrote.
    pub fn all_distrusted(&self) -> Vec<Distrusted> {
        let disguise = self
            .image
            .as_ref()
            .and_then(|image| image.disguise.as_ref())
            .map(|d| Distrusted::new(disguise_hint(d), d.describe()));
        self.distrusted.iter().cloned().chain(disguise).collect()
    }

    /// A plan that records one repository read (e.g. a sweep's listing).
    pub fn repository(event: AuditEvent, write: RepositoryWrite) -> Self {
        Self {
            repositories: vec![write],
            ..Self::new(event)
        }
    }
}
