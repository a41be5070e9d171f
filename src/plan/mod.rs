//! The planner: pure decisions that turn an event and the facts read for it into writes.
//!
//! No I/O and no async: [`start`] says what an event needs read ([`Reads`]), and the
//! functions here turn what was read into an [`EventPlan`]; `pipeline.rs` only performs the
//! reads and commits. The reconcile sweep plans with the same functions.

mod event;
mod signature;
#[cfg(test)]
mod tests;
pub mod verify;

pub use event::{
    PresentImage, PresentImageRead, Reads, SignatureTarget, attribute_repository_changes,
    moves_control_state, plan_present_image, push_tag, referrer_subject, repository_key,
    scan_write, start, subject_pushed_at,
};
pub use signature::{SignatureReads, next_signature_check};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::domain::{Actor, ControlId, Digest, RepositoryKey, Verdict};
use crate::evaluate::signature::SignatureVerdict;
use crate::evaluate::{self, ControlPolicy, ImageSettings};
use crate::facts::{ImageLookup, RegistryFacts, RepositoryFacts, RepositoryState, ScanFacts};
use crate::parse::AuditEvent;
use crate::telemetry::RejectionCode;

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
    let scanning = match &facts.state {
        RepositoryState::Present(settings) => evaluate::effective_scanning(
            &registry.scanning,
            key.name.as_str(),
            settings.scan_on_push,
        )
        .known()
        .cloned(),
        _ => None,
    };
    RepositoryWrite {
        key,
        facts,
        scanning,
        controls,
        only_if_new: false,
    }
}

/// One repository read and what it means for the controls.
#[derive(Debug, Clone)]
pub struct RepositoryWrite {
    pub key: RepositoryKey,
    pub facts: RepositoryFacts,
    /// The effective scanning evaluation derived from the registry's rules (for the
    /// `scan_frequency` column); `None` when unknown.
    pub scanning: Option<crate::facts::ScanningConfiguration>,
    /// `None` when the repository no longer exists.
    pub controls: Option<BTreeMap<ControlId, Verdict>>,
    /// Written only when the repository is not stored yet: a read made for another purpose
    /// (a push, a scan) must not move known control state (see [`moves_control_state`]).
    pub only_if_new: bool,
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
    pub pushed_by: Option<Actor>,
    pub storage_class: Option<String>,
    /// When the digest is an artifact (signature, SBOM, attestation): its subject and kind.
    pub artifact: Option<(Digest, crate::facts::ArtifactKind)>,
}

/// Everything one understood event changes.
#[derive(Debug, Clone)]
pub struct EventPlan {
    pub event: AuditEvent,
    pub ignored: bool,
    /// Repositories re-read because of the event (several for a registry-wide change).
    pub repositories: Vec<RepositoryWrite>,
    pub image: Option<ImageWrite>,
    /// Signature verdicts: the pushed digest's, or its subject's when a signature was pushed.
    pub signatures: Vec<SignatureWrite>,
    pub scans: Vec<ScanWrite>,
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
            pushed_by: None,
            storage_class: None,
            artifact: None,
        }
    }

    /// The digest is gone (a delete event, or a sweep that no longer lists it).
    pub fn deleted(key: RepositoryKey, digest: Digest, event_time: DateTime<Utc>) -> Self {
        Self::bare(key, digest, ImagePresence::Deleted, event_time)
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
        Self {
            event,
            ignored: false,
            repositories: Vec::new(),
            image: None,
            signatures: Vec::new(),
            scans: Vec::new(),
        }
    }

    /// A plan that records one repository read (e.g. a sweep's listing).
    pub fn repository(event: AuditEvent, write: RepositoryWrite) -> Self {
        Self {
            repositories: vec![write],
            ..Self::new(event)
        }
    }
}
