//! Planner tests of the ledger events: what replication, a pull-through sync and the
//! multi-digest removals read, and what each answer from ECR writes.

use chrono::{Duration, Utc};

use super::*;
use crate::domain::{AccountId, Actor, Digest, Region, RepositoryKey, RepositoryName};
use crate::facts::{ImageFacts, ImageLookup};
use crate::parse::{AuditEvent, Change, LifecycleRule, Removal, RemovedImage, RepositoryCall};

const CALLER: &str = "arn:aws:iam::123456789012:user/ci";

fn key() -> RepositoryKey {
    RepositoryKey {
        account: AccountId::parse("210987654321").expect("account"),
        region: Region::parse("eu-west-1").expect("region"),
        name: RepositoryName::parse("prod/api").expect("name"),
    }
}

fn digest(byte: &str) -> Digest {
    Digest::parse(&format!("sha256:{}", byte.repeat(32))).expect("digest")
}

fn event(change: Change) -> AuditEvent {
    AuditEvent {
        id: "event-1".into(),
        time: Utc::now() - Duration::seconds(5),
        account: key().account,
        region: key().region,
        detail_type: "test".into(),
        actor: Some(Actor {
            arn: CALLER.into(),
            identity_type: Some("IAMUser".into()),
            issuer_arn: None,
        }),
        change,
        claimed_time: None,
    }
}

fn found(tags: &[&str]) -> ImageLookup {
    ImageLookup::Found(ImageFacts {
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        pushed_at: Some(Utc::now() - Duration::minutes(1)),
        manifest_media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
        artifact_media_type: None,
        subject_digest: None,
        size_bytes: Some(10),
        scan: None,
        last_pulled_at: None,
    })
}

fn replicated(result: &str) -> Change {
    Change::ImageReplicated {
        repository: key().name,
        digest: digest("a1"),
        tag: Some("v1".into()),
        result: result.into(),
        source_account: Some("123456789012".into()),
        source_region: Some("us-east-1".into()),
    }
}

fn synced(status: &str) -> Change {
    Change::PullThroughCached {
        repository: key().name,
        digest: Some(digest("b2")),
        tag: Some("3.20".into()),
        sync_status: status.into(),
        upstream_registry_url: None,
        ecr_repository_prefix: None,
    }
}

#[test]
fn a_replica_or_a_synced_digest_is_read_like_a_push_and_a_failure_reads_nothing() {
    let push = |d: &Digest, tag: &str| Reads::Push {
        key: key(),
        digest: d.clone(),
        tag: Some(tag.into()),
        pushed_by: None,
        recorded: false,
    };
    // The event's own account and region: the replica's destination registry.
    assert_eq!(
        start(event(replicated("SUCCESS"))).1,
        push(&digest("a1"), "v1")
    );
    assert_eq!(
        start(event(synced("SUCCESS"))).1,
        push(&digest("b2"), "3.20")
    );
    for change in [replicated("FAILED"), synced("FAILED")] {
        let (plan, reads) = start(event(change));
        assert_eq!(reads, Reads::Nothing);
        assert!(!plan.ignored && plan.image.is_none() && plan.deletions.is_empty());
    }
}

fn removal(removal: Removal, images: Vec<RemovedImage>) -> Change {
    Change::ImagesDeleted {
        repository: key().name,
        removal,
        images,
        omitted: 0,
        omitted_reason: None,
    }
}

fn removed(d: &Digest, by_tag: bool) -> RemovedImage {
    RemovedImage {
        digest: d.clone(),
        rule_priority: Some(2),
        by_tag,
    }
}

#[test]
fn an_expired_digest_is_deleted_only_when_ecr_confirms_it_and_names_its_rule() {
    let lifecycle = Removal::LifecyclePolicy {
        rules: vec![LifecycleRule {
            priority: 2,
            description: Some("keep ten".into()),
        }],
    };
    let (gone, kept) = (digest("c3"), digest("d4"));
    let images = vec![removed(&gone, false), removed(&kept, false)];
    let (mut plan, reads) = start(event(removal(lifecycle, images.clone())));
    assert_eq!(
        reads,
        Reads::DeleteMany {
            key: key(),
            images: images.clone()
        }
    );
    plan_removal(
        &mut plan,
        key(),
        &images[0],
        (Utc::now(), ImageLookup::NotFound),
    );
    plan_removal(&mut plan, key(), &images[1], (Utc::now(), found(&["v1"])));
    let presences: Vec<_> = plan.deletions.iter().map(|w| w.presence).collect();
    assert_eq!(
        presences,
        [ImagePresence::Deleted, ImagePresence::Unchanged]
    );
    assert_eq!(
        plan.deletions[0].removal,
        Some(RemovalNote {
            reason: "expired by lifecycle policy".into(),
            cause: Some("lifecycle policy rule 2 (keep ten)".into()),
        })
    );
    assert_eq!(plan.deletions[1].removal, None);
    assert_eq!(plan.distrusted.len(), 1, "the unconfirmed expiry is noted");
}

#[test]
fn a_batch_delete_names_its_caller_and_a_tag_only_delete_is_no_distrust() {
    let (gone, retagged) = (digest("e5"), digest("f6"));
    let images = vec![removed(&gone, false), removed(&retagged, true)];
    let (mut plan, _) = start(event(removal(
        Removal::BatchDeleteImage { failures: 0 },
        images.clone(),
    )));
    plan_removal(
        &mut plan,
        key(),
        &images[0],
        (Utc::now(), ImageLookup::NotFound),
    );
    plan_removal(&mut plan, key(), &images[1], (Utc::now(), found(&["v2"])));
    let note = plan.deletions[0].removal.clone().expect("note");
    assert_eq!(note.reason, "deleted by BatchDeleteImage");
    assert_eq!(note.cause.as_deref(), Some(CALLER));
    assert_eq!(plan.deletions[1].presence, ImagePresence::Unchanged);
    assert!(plan.distrusted.is_empty());
    // ECR cannot say: nothing is written, the delete is noted as not taken.
    let (mut plan, _) = start(event(removal(
        Removal::BatchDeleteImage { failures: 0 },
        images.clone(),
    )));
    let unreadable = ImageLookup::Unreadable {
        reason: "AccessDeniedException".into(),
    };
    plan_removal(&mut plan, key(), &images[0], (Utc::now(), unreadable));
    assert!(plan.deletions.is_empty() && plan.distrusted.len() == 1);
}

#[test]
fn a_repository_read_back_absent_deletes_its_stored_digests() {
    let digests = vec![digest("a7"), digest("b8")];
    let deleted = Change::RepositoryChanged {
        repository: key().name,
        call: RepositoryCall::DeleteRepository { force: Some(true) },
    };
    let observed = Change::RepositoryChanged {
        repository: key().name,
        call: RepositoryCall::ObservedByReconcile,
    };
    for (change, reason, cause) in [
        (deleted, "repository deleted", Some(CALLER)),
        (observed, "repository no longer exists", None),
    ] {
        let (mut plan, _) = start(event(change));
        plan_repository_gone(&mut plan, &key(), digests.clone());
        assert_eq!(plan.deletions.len(), 2);
        for write in &plan.deletions {
            assert_eq!(write.presence, ImagePresence::Deleted);
            let note = write.removal.as_ref().expect("note");
            assert_eq!(
                (note.reason.as_str(), note.cause.as_deref()),
                (reason, cause)
            );
        }
    }
}
