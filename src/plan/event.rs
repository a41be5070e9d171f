//! Events: what each one needs read, and what the reads mean for the image, its repository,
//! its signatures and its scans.

use chrono::{DateTime, Utc};

use super::{EventPlan, ImagePresence, ImageWrite, RepositoryWrite, ScanWrite};
use crate::domain::{AccountId, Actor, Digest, Region, RepositoryKey, RepositoryName};
use crate::evaluate;
use crate::facts::{ArtifactKind, Fact, ImageLookup, ScanFacts, artifact_subject};
use crate::parse::{AuditEvent, Change};

/// What an event needs read before its plan is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reads {
    /// Nothing: the plan [`start`] returned is complete.
    Nothing,
    /// A push: the digest, its repository, its signatures and scan state. `recorded` is the
    /// CloudTrail record of the push, which only adds who pushed when the digest was already
    /// evaluated (either event may be lost, so whichever comes first does the full work).
    Push {
        key: RepositoryKey,
        digest: Digest,
        tag: Option<String>,
        pushed_by: Option<Actor>,
        recorded: bool,
    },
    /// The digest's storage class moved: ECR's answer now.
    StorageClass {
        key: RepositoryKey,
        digest: Digest,
        storage_class: Option<String>,
    },
    /// A referrer changed: if it is a signature, its subject is re-judged.
    Referrer { key: RepositoryKey, digest: Digest },
    /// A scan result: read back, and the image evaluated in full if it is not yet.
    Scan { key: RepositoryKey, digest: Digest },
    /// One repository's settings changed.
    Repository { key: RepositoryKey },
    /// Registry-wide settings changed: every known repository is re-read.
    Registry { account: AccountId, region: Region },
}

/// The key of a repository an event names.
pub fn repository_key(event: &AuditEvent, repository: &RepositoryName) -> RepositoryKey {
    RepositoryKey {
        account: event.account.clone(),
        region: event.region.clone(),
        name: repository.clone(),
    }
}

/// The plan an event starts with and the reads that complete it.
pub fn start(event: AuditEvent) -> (EventPlan, Reads) {
    let reads = reads_for(&event);
    let mut plan = EventPlan::new(event);
    let event = &plan.event;
    match &event.change {
        Change::ImageDeleted {
            repository, digest, ..
        } => {
            let key = repository_key(event, repository);
            plan.image = Some(ImageWrite::deleted(key, digest.clone(), event.time));
        }
        Change::Ignored { .. } => plan.ignored = true,
        _ => {}
    }
    (plan, reads)
}

fn reads_for(event: &AuditEvent) -> Reads {
    let key = |repository: &RepositoryName| repository_key(event, repository);
    match &event.change {
        Change::ImagePushed {
            repository,
            digest,
            tag,
            ..
        } => Reads::Push {
            key: key(repository),
            digest: digest.clone(),
            tag: tag.clone(),
            pushed_by: None,
            recorded: false,
        },
        Change::ImagePushRecorded {
            repository,
            digest,
            tag,
        } => Reads::Push {
            key: key(repository),
            digest: digest.clone(),
            tag: tag.clone(),
            pushed_by: event.actor.clone(),
            recorded: true,
        },
        Change::ImageStorageClassChanged {
            repository,
            digest,
            storage_class,
        } => Reads::StorageClass {
            key: key(repository),
            digest: digest.clone(),
            storage_class: storage_class.clone(),
        },
        Change::ReferrerChanged {
            repository, digest, ..
        } => Reads::Referrer {
            key: key(repository),
            digest: digest.clone(),
        },
        Change::ScanCompleted {
            repository, digest, ..
        }
        | Change::FindingChanged {
            repository, digest, ..
        } => Reads::Scan {
            key: key(repository),
            digest: digest.clone(),
        },
        Change::RepositoryChanged { repository, .. } => Reads::Repository {
            key: key(repository),
        },
        Change::RegistryChanged { .. } => Reads::Registry {
            account: event.account.clone(),
            region: event.region.clone(),
        },
        Change::ImageDeleted { .. } | Change::FailedApiCall { .. } | Change::Ignored { .. } => {
            Reads::Nothing
        }
    }
}

/// Whether an event may move a repository's control state.
///
/// Only the events that change a repository's settings (CloudTrail calls, with their caller)
/// do, besides a repository's first sighting and reconcile. A push or a scan reads the
/// repository too, and may read a change whose own event has not been processed yet:
/// recording the transition there would attribute it to the push, with no caller.
pub fn moves_control_state(change: &Change) -> bool {
    matches!(
        change,
        Change::RepositoryChanged { .. } | Change::RegistryChanged { .. }
    )
}

/// Marks the repository reads of an event that may not move control state as "write only if
/// the repository is not stored yet" (decided inside the transaction, so concurrent batches
/// cannot race it): they are used for the image (settings at push), and the change's own
/// event (or, if it is lost, the next reconcile sweep) records the transition.
pub fn attribute_repository_changes(plan: &mut EventPlan) {
    if moves_control_state(&plan.event.change) {
        return;
    }
    for write in &mut plan.repositories {
        write.only_if_new = true;
    }
}

/// The tag a push wrote: the event's, or for an untagged event the only tag ECR knows, if
/// there is exactly one.
pub fn push_tag(event_tag: Option<String>, lookup: &ImageLookup) -> Option<String> {
    event_tag.or_else(|| match lookup {
        ImageLookup::Found(facts) if facts.tags.len() == 1 => facts.tags.first().cloned(),
        _ => None,
    })
}

/// What was read about a digest that an event says exists.
#[derive(Debug, Clone)]
pub struct PresentImageRead {
    pub key: RepositoryKey,
    pub digest: Digest,
    pub event_time: DateTime<Utc>,
    pub event_tag: Option<String>,
    pub pushed_by: Option<Actor>,
    /// When the reads were started: a read is as old as its request, not its slowest sibling.
    pub observed_at: DateTime<Utc>,
    pub repository: RepositoryWrite,
    pub lookup: ImageLookup,
}

/// Whose signatures a present digest's plan still needs judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureTarget {
    /// Nothing to judge (not found, or an artifact that is not a signature).
    None,
    /// The digest itself, an image pushed at `pushed_at`.
    Own { pushed_at: DateTime<Utc> },
    /// A signature arrived: its subject may have just become signed.
    Subject(Digest),
}

/// Everything a digest that exists now means, before its signatures are judged.
#[derive(Debug, Clone)]
pub struct PresentImage {
    pub image: ImageWrite,
    pub repository: RepositoryWrite,
    pub scans: Vec<ScanWrite>,
    pub signatures: SignatureTarget,
    /// Whether ECR still has the digest.
    pub exists: bool,
}

/// The image row (settings at push, artifact or not), its repository, the scan state
/// `DescribeImages` reports, and whose signatures to judge.
pub fn plan_present_image(read: PresentImageRead) -> PresentImage {
    let push_tag = push_tag(read.event_tag, &read.lookup);
    let settings = evaluate::image_settings(&read.repository.facts, push_tag.as_deref());
    let (artifact, signatures, scans) = match &read.lookup {
        ImageLookup::Found(facts) => {
            let artifact = artifact_subject(
                facts.artifact_media_type.as_deref(),
                facts.subject_digest.as_ref(),
                &facts.tags,
            );
            let (signatures, scan) = what_an_image_needs(artifact.as_ref(), facts, read.event_time);
            let scans = scan.map(|facts| ScanWrite {
                key: read.key.clone(),
                digest: read.digest.clone(),
                facts,
                checked_at: read.observed_at,
            });
            (artifact, signatures, scans.into_iter().collect())
        }
        ImageLookup::NotFound | ImageLookup::Unreadable { .. } => {
            (None, SignatureTarget::None, Vec::new())
        }
    };
    let exists = matches!(read.lookup, ImageLookup::Found(_));
    PresentImage {
        image: ImageWrite {
            key: read.key,
            digest: read.digest,
            presence: ImagePresence::Pushed,
            event_time: read.event_time,
            lookup: Some((read.observed_at, read.lookup)),
            push_tag,
            settings: Some(settings),
            pushed_by: read.pushed_by,
            storage_class: None,
            artifact,
        },
        repository: read.repository,
        scans,
        signatures,
        exists,
    }
}

/// Artifacts take no signature or scan status; a signature re-judges its subject; an image
/// is judged itself and keeps the scan state ECR reported with it.
fn what_an_image_needs(
    artifact: Option<&(Digest, ArtifactKind)>,
    facts: &crate::facts::ImageFacts,
    event_time: DateTime<Utc>,
) -> (SignatureTarget, Option<Option<ScanFacts>>) {
    match artifact {
        Some((subject, kind)) if kind.is_signature() => {
            (SignatureTarget::Subject(subject.clone()), None)
        }
        Some(_) => (SignatureTarget::None, None),
        None => (
            SignatureTarget::Own {
                pushed_at: facts.pushed_at.unwrap_or(event_time),
            },
            Some(facts.scan.clone()),
        ),
    }
}

/// The subject a changed referrer signs, when it is a signature artifact that still exists.
pub fn referrer_subject(lookup: &ImageLookup) -> Option<Digest> {
    let ImageLookup::Found(facts) = lookup else {
        return None;
    };
    artifact_subject(
        facts.artifact_media_type.as_deref(),
        facts.subject_digest.as_ref(),
        &facts.tags,
    )
    .map(|(subject, _)| subject)
}

/// When a subject whose signatures are to be judged was pushed; `None` when it is gone (its
/// own delete records that).
pub fn subject_pushed_at(lookup: &ImageLookup, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match lookup {
        ImageLookup::Found(facts) => Some(facts.pushed_at.unwrap_or(now)),
        ImageLookup::NotFound | ImageLookup::Unreadable { .. } => None,
    }
}

/// A scan state read back (the event is a hint); nothing when it could not be read.
pub fn scan_write(
    key: RepositoryKey,
    digest: Digest,
    read: Fact<Option<ScanFacts>>,
    checked_at: DateTime<Utc>,
) -> Option<ScanWrite> {
    match read {
        Fact::Known(facts) => Some(ScanWrite {
            key,
            digest,
            facts,
            checked_at,
        }),
        Fact::Unknown(_) => None,
    }
}
