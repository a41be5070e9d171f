//! Events: what each one needs read, and what the reads mean for the image, its repository,
//! its signatures and its scans.

use chrono::{DateTime, Utc};

use super::{
    Distrusted, EventPlan, ImagePresence, ImageWrite, RemovalNote, RepositoryWrite, Reverify,
    ScanWrite,
};
use crate::domain::{AccountId, Actor, Digest, Region, RepositoryKey, RepositoryName};
use crate::evaluate;
use crate::facts::{
    ArtifactProof, Classification, Fact, ImageFacts, ImageLookup, ScanFacts, classify,
    cosign_tag_subject, subject_to_confirm,
};
use crate::parse::{
    AuditEvent, Change, LifecycleRule, RegistryCall, Removal, RemovedImage, RepositoryCall,
};
use crate::telemetry::DistrustedHint;

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
    /// A delete-shaped event: the digest is marked deleted only if ECR no longer has it.
    Delete { key: RepositoryKey, digest: Digest },
    /// Several digests removed at once (lifecycle expiry, `BatchDeleteImage`): each is read
    /// back and marked deleted only if ECR no longer has it ([`plan_removal`]).
    DeleteMany {
        key: RepositoryKey,
        images: Vec<RemovedImage>,
    },
    /// A scan result: read back, and the image evaluated in full if it is not yet.
    Scan { key: RepositoryKey, digest: Digest },
    /// One repository's settings changed.
    Repository { key: RepositoryKey },
    /// Registry-wide settings changed: every known repository is re-read, or only those named
    /// in `only` when the event names the repositories it changed.
    Registry {
        account: AccountId,
        region: Region,
        only: Vec<RepositoryName>,
    },
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
        Change::Ignored { .. } => plan.ignored = true,
        Change::SignerRevoked { revocation } => {
            plan.reverify = Some(Reverify::NamingSigner {
                arn: revocation.revoked_arn(event.region.as_str(), &event.account),
            });
        }
        _ => {}
    }
    (plan, reads)
}

#[allow(
    clippy::too_many_lines,
    reason = "a declarative table: one arm per kind of change"
)]
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
        Change::ScanCompleted { .. } | Change::FindingChanged { .. } => scan_reads(event),
        Change::RepositoryChanged { repository, .. } => Reads::Repository {
            key: key(repository),
        },
        Change::RegistryChanged { call } => Reads::Registry {
            account: event.account.clone(),
            region: event.region.clone(),
            only: match call {
                RegistryCall::ScanResourceChange { repositories } => repositories.clone(),
                _ => Vec::new(),
            },
        },
        Change::ImageDeleted {
            repository, digest, ..
        } => Reads::Delete {
            key: key(repository),
            digest: digest.clone(),
        },
        Change::ImageReplicated {
            repository,
            digest,
            tag,
            result,
            ..
        } if result == "SUCCESS" => present_reads(key(repository), digest, tag),
        Change::PullThroughCached {
            repository,
            digest: Some(digest),
            tag,
            sync_status,
            ..
        } if sync_status == "SUCCESS" => present_reads(key(repository), digest, tag),
        Change::ImagesDeleted {
            repository, images, ..
        } => Reads::DeleteMany {
            key: key(repository),
            images: images.clone(),
        },
        // A failed replication or sync changed nothing here: evidence only.
        Change::ImageReplicated { .. }
        | Change::PullThroughCached { .. }
        | Change::FailedApiCall { .. }
        | Change::Ignored { .. } => Reads::Nothing,
        // The store chooses the digests (`EventPlan::reverify`); they are read when re-checked.
        Change::SignerRevoked { .. } => Reads::Nothing,
    }
}

/// A digest that arrived in this registry without a push of its own (replication, a
/// pull-through cache sync): read and evaluated like a push, with nobody to name as pusher.
fn present_reads(key: RepositoryKey, digest: &Digest, tag: &Option<String>) -> Reads {
    Reads::Push {
        key,
        digest: digest.clone(),
        tag: tag.clone(),
        pushed_by: None,
        recorded: false,
    }
}

/// A scan result or finding: the digest it names is read back.
fn scan_reads(event: &AuditEvent) -> Reads {
    match (event.change.repository(), event.change.digest()) {
        (Some(repository), Some(digest)) => Reads::Scan {
            key: repository_key(event, repository),
            digest: digest.clone(),
        },
        _ => Reads::Nothing,
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

/// How far before ECR's own push time a CloudTrail record of the push may be dated: the
/// record is of the `PutImage` request, which ECR answers within seconds; anything earlier is
/// a record of some other push, or forged.
pub const PUSH_RECORD_SKEW: chrono::Duration = chrono::Duration::minutes(5);

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
    /// What the caller read to confirm the subject [`subject_to_confirm`] named: whether the
    /// repository holds it and, when it does, whether the manifest carries a runnable image.
    pub proof: ArtifactProof,
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
    /// What the event claimed that was not taken (see [`EventPlan::distrusted`]).
    pub distrusted: Option<Distrusted>,
    /// Another digest a Cosign signature tag (`sha256-<hex>.sig`) on this one names: it is
    /// judged again, since that tag is how it finds its signature (a hint, read back from
    /// ECR like any other), whatever this manifest itself turns out to be.
    pub cosign_signs: Option<Digest>,
}

/// The subject a found digest must be shown to have before it can be an artifact; the caller
/// reads it and reports [`PresentImageRead::subject_present`].
pub fn artifact_subject_to_confirm(lookup: &ImageLookup) -> Option<Digest> {
    let ImageLookup::Found(facts) = lookup else {
        return None;
    };
    subject_to_confirm(
        facts.artifact_media_type.as_deref(),
        facts.subject_digest.as_ref(),
    )
}

/// The image row (settings at push, artifact or not), its repository, the scan state
/// `DescribeImages` reports, and whose signatures to judge.
pub fn plan_present_image(read: PresentImageRead) -> PresentImage {
    let push_tag = push_tag(read.event_tag, &read.lookup);
    let settings = evaluate::image_settings(&read.repository.facts, push_tag.as_deref());
    let (pushed_by, distrusted) = trusted_pusher(read.pushed_by, read.event_time, &read.lookup);
    let (classification, signatures, scans) = match &read.lookup {
        ImageLookup::Found(facts) => {
            let classification = classify(
                facts.artifact_media_type.as_deref(),
                facts.subject_digest.as_ref(),
                &facts.tags,
                read.proof,
            );
            let (signatures, scan) = what_an_image_needs(&classification, facts, read.event_time);
            let scans = scan.map(|facts| ScanWrite {
                key: read.key.clone(),
                digest: read.digest.clone(),
                facts,
                checked_at: read.observed_at,
            });
            (
                Some(classification),
                signatures,
                scans.into_iter().collect(),
            )
        }
        ImageLookup::NotFound | ImageLookup::Unreadable { .. } => {
            (None, SignatureTarget::None, Vec::new())
        }
    };
    let (artifact, disguise) = match classification {
        Some(Classification::Artifact { subject, kind }) => (Some((subject, kind)), None),
        Some(Classification::Image { disguise }) => (None, disguise),
        None => (None, None),
    };
    let exists = matches!(read.lookup, ImageLookup::Found(_));
    let cosign_signs = cosign_signed_digest(&read.lookup, &read.digest);
    PresentImage {
        image: ImageWrite {
            key: read.key,
            digest: read.digest,
            presence: ImagePresence::Pushed,
            event_time: read.event_time,
            lookup: Some((read.observed_at, read.lookup)),
            push_tag,
            settings: Some(settings),
            settings_observed_at: Some(read.repository.facts.observed_at),
            pushed_by,
            storage_class: None,
            artifact,
            disguise,
            removal: None,
        },
        repository: read.repository,
        scans,
        signatures,
        exists,
        distrusted,
        cosign_signs,
    }
}

/// The other digest a Cosign `.sig` tag of a found digest names.
fn cosign_signed_digest(lookup: &ImageLookup, digest: &Digest) -> Option<Digest> {
    let ImageLookup::Found(facts) = lookup else {
        return None;
    };
    facts
        .tags
        .iter()
        .filter_map(|tag| cosign_tag_subject(tag))
        .find(|(named, kind)| kind.is_signature() && named != digest)
        .map(|(named, _)| named)
}

/// The pusher a push record names, unless the record is dated before ECR says the digest was
/// pushed (by more than [`PUSH_RECORD_SKEW`]): such a record cannot be of this push, and
/// taking it would let a forged early `eventTime` rewrite who pushed.
fn trusted_pusher(
    pushed_by: Option<Actor>,
    event_time: DateTime<Utc>,
    lookup: &ImageLookup,
) -> (Option<Actor>, Option<Distrusted>) {
    let pushed_at = match lookup {
        ImageLookup::Found(facts) => facts.pushed_at,
        ImageLookup::NotFound | ImageLookup::Unreadable { .. } => None,
    };
    match (pushed_by, pushed_at) {
        (Some(actor), Some(pushed_at)) if event_time < pushed_at - PUSH_RECORD_SKEW => {
            let note = format!(
                "push record by {} dated {} is older than ECR's push time {}: pusher not taken",
                actor.arn,
                event_time.to_rfc3339(),
                pushed_at.to_rfc3339()
            );
            (
                None,
                Some(Distrusted::new(DistrustedHint::PushRecordTooOld, note)),
            )
        }
        (pushed_by, _) => (pushed_by, None),
    }
}

/// Artifacts take no signature or scan status; a signature re-judges its subject; an image
/// is judged itself and keeps the scan state ECR reported with it.
fn what_an_image_needs(
    classification: &Classification,
    facts: &ImageFacts,
    event_time: DateTime<Utc>,
) -> (SignatureTarget, Option<Option<ScanFacts>>) {
    match classification {
        Classification::Artifact { subject, kind } if kind.is_signature() => {
            (SignatureTarget::Subject(subject.clone()), None)
        }
        Classification::Artifact { .. } => (SignatureTarget::None, None),
        Classification::Image { .. } => (
            SignatureTarget::Own {
                pushed_at: facts.pushed_at.unwrap_or(event_time),
            },
            Some(facts.scan.clone()),
        ),
    }
}

/// The subject a changed referrer claims to sign, when it is a signature type that still
/// exists; the caller re-judges the subject only if the repository holds it.
pub fn referrer_subject(lookup: &ImageLookup) -> Option<Digest> {
    let ImageLookup::Found(facts) = lookup else {
        return None;
    };
    let kind = facts
        .artifact_media_type
        .as_deref()
        .and_then(crate::facts::non_runnable_kind)?;
    kind.is_signature()
        .then(|| facts.subject_digest.clone())
        .flatten()
}

/// What a delete-shaped event means once ECR was asked: the digest is deleted only when ECR
/// no longer has it. A digest ECR still holds keeps its row (the tags are refreshed), and a
/// digest that cannot be read is left as it is; either way the plan says the delete was not
/// taken, and the next event or sweep settles it.
pub fn plan_delete(
    plan: &mut EventPlan,
    key: RepositoryKey,
    digest: Digest,
    read: (DateTime<Utc>, ImageLookup),
) {
    let time = plan.event.time;
    match &read.1 {
        ImageLookup::NotFound => plan.image = Some(ImageWrite::deleted(key, digest, time)),
        ImageLookup::Found(_) => {
            plan.distrusted.push(Distrusted::new(
                DistrustedHint::DeleteUnconfirmed,
                format!("delete of {digest} not confirmed: ECR still has the digest"),
            ));
            plan.image = Some(ImageWrite::still_present(key, digest, time, read));
        }
        ImageLookup::Unreadable { reason } => plan.distrusted.push(Distrusted::new(
            DistrustedHint::DeleteUnconfirmed,
            format!("delete of {digest} not confirmed: ECR could not be read ({reason})"),
        )),
    }
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

/// Why an event removed `image`, and by what: the lifecycle rule that expired it, or the
/// caller of `BatchDeleteImage`.
pub fn removal_note(event: &AuditEvent, image: &RemovedImage) -> RemovalNote {
    let caller = event.actor.as_ref().map(|actor| actor.arn.clone());
    match &event.change {
        Change::ImagesDeleted {
            removal: Removal::LifecyclePolicy { rules },
            ..
        } => {
            let rule = image.rule_priority.map(|priority| {
                match rules.iter().find(|r| r.priority == priority) {
                    Some(LifecycleRule {
                        description: Some(description),
                        ..
                    }) => format!("lifecycle policy rule {priority} ({description})"),
                    _ => format!("lifecycle policy rule {priority}"),
                }
            });
            RemovalNote {
                reason: "expired by lifecycle policy".to_owned(),
                cause: rule.or_else(|| Some("lifecycle policy".to_owned())),
            }
        }
        _ => RemovalNote {
            reason: "deleted by BatchDeleteImage".to_owned(),
            cause: caller,
        },
    }
}

/// One digest of a multi-digest removal, once ECR was asked. Gone: marked deleted with its
/// note. Still there and asked for by tag only: the tag went, the digest stays (its tags
/// refreshed), which is no distrust. Still there otherwise, or unreadable: as [`plan_delete`].
pub fn plan_removal(
    plan: &mut EventPlan,
    key: RepositoryKey,
    image: &RemovedImage,
    read: (DateTime<Utc>, ImageLookup),
) {
    let time = plan.event.time;
    let digest = image.digest.clone();
    match &read.1 {
        ImageLookup::NotFound => {
            let mut write = ImageWrite::deleted(key, digest, time);
            write.removal = Some(removal_note(&plan.event, image));
            plan.deletions.push(write);
        }
        ImageLookup::Found(_) if image.by_tag => plan
            .deletions
            .push(ImageWrite::still_present(key, digest, time, read)),
        ImageLookup::Found(_) => {
            plan.distrusted.push(Distrusted::new(
                DistrustedHint::DeleteUnconfirmed,
                format!("delete of {digest} not confirmed: ECR still has the digest"),
            ));
            plan.deletions
                .push(ImageWrite::still_present(key, digest, time, read));
        }
        ImageLookup::Unreadable { reason } => plan.distrusted.push(Distrusted::new(
            DistrustedHint::DeleteUnconfirmed,
            format!("delete of {digest} not confirmed: ECR could not be read ({reason})"),
        )),
    }
}

/// A repository read back absent: every digest still stored as present in it is deleted.
/// The repository's absence is the re-read that confirms it. A `DeleteRepository` call names
/// its caller; any other event (a reconcile sweep above all) names nobody.
pub fn plan_repository_gone(plan: &mut EventPlan, key: &RepositoryKey, present: Vec<Digest>) {
    let note = match &plan.event.change {
        Change::RepositoryChanged {
            call: RepositoryCall::DeleteRepository { .. },
            ..
        } => RemovalNote {
            reason: "repository deleted".to_owned(),
            cause: plan.event.actor.as_ref().map(|actor| actor.arn.clone()),
        },
        _ => RemovalNote {
            reason: "repository no longer exists".to_owned(),
            cause: None,
        },
    };
    let time = plan.event.time;
    for digest in present {
        let mut write = ImageWrite::deleted(key.clone(), digest, time);
        write.removal = Some(note.clone());
        plan.deletions.push(write);
    }
}
