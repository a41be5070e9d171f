//! Table-driven tests of the planner, fed facts by the shared in-memory [`FakeRegistry`].

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::domain::{AccountId, Actor, Digest, Region, RepositoryName, SignatureStatus};
use crate::enrich::Registry;
use crate::enrich::fake::FakeRegistry;
use crate::facts::{
    ArtifactKind, Fact, ImageFacts, ManagedSigning, NOTATION_SIGNATURE, ProfileStatus,
    SignatureArtifact, SignatureKind, SigningStatus,
};
use crate::parse::{Change, RegistryCall, RepositoryCall, ScanSource};

/// (case, tag mutability, event tag, tags ECR knows, push tag, tag protected)
type PushCase = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static [&'static str],
    Option<&'static str>,
    Option<bool>,
);
/// (case, image facts, whose signatures, artifact kind, scan rows)
type JudgedCase = (
    &'static str,
    Option<ImageFacts>,
    Option<Digest>,
    Option<ArtifactKind>,
    usize,
);
/// (ECR's answer, the scan row written)
type ScanRead = (
    Fact<Option<crate::facts::ScanFacts>>,
    Option<Option<&'static str>>,
);

const PROFILE: &str = "arn:aws:signer:us-east-1:123456789012:/signing-profiles/release";

fn key() -> RepositoryKey {
    RepositoryKey {
        account: AccountId::parse("123456789012").expect("account"),
        region: Region::parse("us-east-1").expect("region"),
        name: RepositoryName::parse("team/app").expect("name"),
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
            arn: "arn:aws:iam::123456789012:user/ci".into(),
            identity_type: Some("IAMUser".into()),
            issuer_arn: None,
        }),
        change,
        claimed_time: None,
    }
}

fn pushed(digest: &Digest, tag: Option<&str>) -> Change {
    Change::ImagePushed {
        repository: key().name,
        digest: digest.clone(),
        tag: tag.map(str::to_owned),
        manifest_media_type: None,
        artifact_media_type: None,
    }
}

fn image(tags: &[&str], artifact_type: Option<&str>, subject: Option<&Digest>) -> ImageFacts {
    ImageFacts {
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        pushed_at: Some(Utc::now() - Duration::minutes(1)),
        manifest_media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
        artifact_media_type: artifact_type.map(str::to_owned),
        subject_digest: subject.cloned(),
        size_bytes: Some(10),
        scan: None,
        last_pulled_at: None,
    }
}

fn planner(grace_minutes: i64) -> Planner {
    Planner {
        policy: ControlPolicy::default(),
        signing_grace: Duration::minutes(grace_minutes),
    }
}

/// The reads a push asks for, performed against the fake, and planned.
async fn plan_push(fake: &FakeRegistry, event: &AuditEvent) -> PresentImage {
    let (_, reads) = start(event.clone());
    let Reads::Push {
        key,
        digest,
        tag,
        pushed_by,
        ..
    } = reads
    else {
        panic!("a push reads the image: {reads:?}");
    };
    let observed_at = Utc::now();
    let facts = fake.repository(&key).await.expect("repository");
    let registry = fake
        .registry(&key.account, &key.region)
        .await
        .expect("registry");
    let lookup = fake.image(&key, &digest).await.expect("image");
    let subject_present = match artifact_subject_to_confirm(&lookup) {
        Some(subject) => matches!(
            fake.image(&key, &subject).await.expect("subject"),
            ImageLookup::Found(_)
        ),
        None => false,
    };
    plan_present_image(PresentImageRead {
        repository: planner(10).repository_write(key.clone(), facts, &registry),
        key,
        digest,
        event_time: event.time,
        event_tag: tag,
        pushed_by,
        observed_at,
        lookup,
        proof: crate::facts::ArtifactProof {
            subject_present,
            runnable_content: false,
        },
    })
}

/// The signature reads performed against the fake, and judged now.
async fn judge(fake: &FakeRegistry, reads: SignatureReads, grace: Duration) -> SignatureWrite {
    let managed = fake
        .signing_statuses(&reads.key, &reads.digest)
        .await
        .expect("signing");
    let artifacts = fake
        .signature_artifacts(&reads.key, &reads.digest, reads.cosign_tag)
        .await
        .expect("artifacts");
    let mut profiles = BTreeMap::new();
    for profile in SignatureReads::profiles(&managed) {
        let status = fake.profile_status(profile).await.expect("profile");
        profiles.insert(profile.to_owned(), status);
    }
    // Planning, not verification, is under test here: every artifact counts as verified
    // (the verdict on verifications is tested in src/evaluate/signature.rs).
    let verifications = artifacts
        .known()
        .map(|found| found.iter().map(|a| verified(&a.reference)).collect())
        .unwrap_or_default();
    let facts = crate::plan::signature::SignatureFacts {
        managed,
        artifacts,
        profiles,
        verifications,
        policy_version: "test".to_owned(),
    };
    reads.judge(&facts, (Utc::now(), grace))
}

fn verified(reference: &str) -> crate::facts::SignatureVerification {
    crate::facts::SignatureVerification {
        reference: reference.to_owned(),
        envelope_digest: None,
        policy_version: "test".to_owned(),
        result: crate::facts::VerificationResult::Verified {
            scheme: "notary.x509.signingAuthority".to_owned(),
            identity: "CN=test".to_owned(),
            signer_profile_version_arn: None,
            signer_job_arn: None,
            signing_time: None,
            expiry: None,
            warnings: Vec::new(),
        },
        revocation: None,
    }
}

#[tokio::test]
async fn a_push_records_the_settings_at_push_and_infers_its_tag() {
    // (case, tag mutability, event tag, tags ECR knows, push tag, tag protected)
    let cases: [PushCase; 5] = [
        (
            "the event's tag",
            "IMMUTABLE",
            Some("v1"),
            &["v1", "latest"],
            Some("v1"),
            Some(true),
        ),
        (
            "the only tag ECR knows",
            "MUTABLE",
            None,
            &["v2"],
            Some("v2"),
            Some(false),
        ),
        (
            "several tags: none inferred",
            "IMMUTABLE",
            None,
            &["a", "b"],
            None,
            None,
        ),
        ("untagged", "IMMUTABLE", None, &[], None, None),
        (
            "a newer mode",
            "FROZEN",
            Some("v1"),
            &["v1"],
            Some("v1"),
            None,
        ),
    ];
    for (case, mode, event_tag, tags, push_tag, protected) in cases {
        let pushed_digest = digest("a1");
        let fake = FakeRegistry::new()
            .with_repository(&key(), mode)
            .with_image(&key(), &pushed_digest, image(tags, None, None));
        let found = plan_push(&fake, &event(pushed(&pushed_digest, event_tag))).await;
        assert_eq!(found.image.push_tag.as_deref(), push_tag, "{case}");
        let settings = found.image.settings.expect("settings at push");
        assert_eq!(settings.tag_immutability.as_deref(), Some(mode), "{case}");
        assert_eq!(settings.tag_protected, protected, "{case}");
        assert_eq!(found.image.presence, ImagePresence::Pushed, "{case}");
        assert!(found.exists, "{case}");
        assert!(found.repository.controls.is_some(), "{case}");
    }
}

#[tokio::test]
#[allow(clippy::too_many_lines, reason = "a table of cases")]
async fn a_pushed_digest_is_judged_itself_or_re_judges_its_subject() {
    let subject = digest("5b");
    let cosign_tag = format!("sha256-{}.sig", "5b".repeat(32));
    let config = Some("application/vnd.oci.image.config.v1+json");
    // (case, image facts, whose signatures, artifact kind, scan rows)
    let cases: Vec<JudgedCase> = vec![
        ("an image", Some(image(&["v1"], None, None)), None, None, 1),
        (
            "a Notation signature",
            Some(image(&[], Some(NOTATION_SIGNATURE), Some(&subject))),
            Some(subject.clone()),
            Some(ArtifactKind::NotationSignature),
            0,
        ),
        (
            "an image tagged like a Cosign signature is judged",
            Some(image(&[cosign_tag.as_str()], config, None)),
            None,
            None,
            1,
        ),
        (
            "an image with a subject is judged",
            Some(image(&["v2"], config, Some(&subject))),
            None,
            None,
            1,
        ),
        (
            "a signature whose subject is not in the repository is judged",
            Some(image(&[], Some(NOTATION_SIGNATURE), Some(&digest("5e")))),
            None,
            None,
            1,
        ),
        (
            "an SBOM",
            Some(image(&[], Some("application/spdx+json"), Some(&subject))),
            None,
            Some(ArtifactKind::Sbom),
            0,
        ),
        ("gone since", None, None, None, 0),
    ];
    for (case, facts, signs, kind, scans) in cases {
        let pushed_digest = digest("a2");
        let mut fake = FakeRegistry::new()
            .with_repository(&key(), "IMMUTABLE")
            .with_image(&key(), &subject, image(&["v0"], None, None));
        if let Some(facts) = facts.clone() {
            fake = fake.with_image(&key(), &pushed_digest, facts);
        }
        let found = plan_push(&fake, &event(pushed(&pushed_digest, None))).await;
        let expected = match (&signs, &facts) {
            (Some(subject), _) => SignatureTarget::Subject(subject.clone()),
            (None, Some(facts)) if kind.is_none() => SignatureTarget::Own {
                pushed_at: facts.pushed_at.expect("pushed at"),
            },
            _ => SignatureTarget::None,
        };
        assert_eq!(found.signatures, expected, "{case}");
        assert_eq!(found.image.artifact.map(|(_, k)| k), kind, "{case}");
        let disguised = case.ends_with("is judged");
        assert_eq!(found.image.disguise.is_some(), disguised, "{case}");
        assert_eq!(found.scans.len(), scans, "{case}");
        assert_eq!(found.exists, facts.is_some(), "{case}");
    }
}

#[tokio::test]
async fn a_signature_push_makes_its_subject_signed() {
    let subject = digest("5c");
    let signature = digest("5d");
    let fake = FakeRegistry::new()
        .with_repository(&key(), "IMMUTABLE")
        .with_image(&key(), &subject, image(&["v1"], None, None))
        .with_image(
            &key(),
            &signature,
            image(&[], Some(NOTATION_SIGNATURE), Some(&subject)),
        )
        .with_referrer(
            &subject,
            SignatureArtifact {
                kind: SignatureKind::Notation,
                reference: signature.to_string(),
                pushed_at: None,
            },
        );
    let found = plan_push(&fake, &event(pushed(&signature, None))).await;
    let SignatureTarget::Subject(target) = found.signatures else {
        panic!("a signature re-judges its subject");
    };
    let lookup = fake.image(&key(), &target).await.expect("subject");
    let pushed_at = subject_pushed_at(&lookup, Utc::now()).expect("subject exists");
    let clock = (Utc::now(), Duration::minutes(10));
    let reads = SignatureReads::new(key(), target.clone(), pushed_at, 0, true, clock);
    let write = judge(&fake, reads, Duration::minutes(10)).await;
    assert_eq!(write.digest, subject);
    assert_eq!(write.verdict.status, SignatureStatus::Signed);
    assert_eq!(
        write.next_check, None,
        "a signed digest is not checked again"
    );
}

#[tokio::test]
async fn a_scan_is_read_back_whatever_its_event_said() {
    let scanned = digest("c1");
    let scan = |raw: &str| crate::facts::ScanFacts {
        raw_status: raw.into(),
        severity_counts: BTreeMap::from([("HIGH".to_owned(), 2)]),
    };
    let changes = [
        Change::ScanCompleted {
            repository: key().name,
            digest: scanned.clone(),
            source: ScanSource::Basic,
            raw_status: "IN_PROGRESS".into(),
            severity_counts: BTreeMap::new(),
        },
        Change::FindingChanged {
            repository: key().name,
            digest: scanned.clone(),
            finding_arn: "arn:finding".into(),
            severity: None,
            status: None,
        },
    ];
    // (ECR's answer, the scan row written)
    let reads: [ScanRead; 3] = [
        (Fact::Known(Some(scan("COMPLETE"))), Some(Some("COMPLETE"))),
        (Fact::Known(None), Some(None)),
        (Fact::Unknown("AccessDeniedException".into()), None),
    ];
    for change in changes {
        let (plan, needs) = start(event(change));
        assert_eq!(
            needs,
            Reads::Scan {
                key: key(),
                digest: scanned.clone()
            }
        );
        assert!(plan.image.is_none(), "the image is planned only once read");
        for (answer, written) in &reads {
            let fake = FakeRegistry::new().with_scan(&scanned, answer.clone());
            let read = fake.scan(&key(), &scanned).await.expect("scan");
            let write = scan_write(key(), scanned.clone(), read, Utc::now());
            let status = write.map(|w| w.facts.map(|f| f.raw_status));
            assert_eq!(status.as_ref().map(|s| s.as_deref()), *written);
        }
    }
}

#[tokio::test]
async fn a_scan_that_overtakes_its_push_plans_the_image_only_if_it_exists() {
    let scanned = digest("c2");
    for (case, exists) in [("pushed", true), ("already gone", false)] {
        let mut fake = FakeRegistry::new().with_repository(&key(), "MUTABLE");
        if exists {
            fake = fake.with_image(&key(), &scanned, image(&["v1"], None, None));
        }
        let facts = fake.repository(&key()).await.expect("repository");
        let registry = fake
            .registry(&key().account, &key().region)
            .await
            .expect("registry");
        let found = plan_present_image(PresentImageRead {
            key: key(),
            digest: scanned.clone(),
            event_time: Utc::now(),
            event_tag: None,
            pushed_by: None,
            observed_at: Utc::now(),
            repository: planner(10).repository_write(key(), facts, &registry),
            lookup: fake.image(&key(), &scanned).await.expect("image"),
            proof: crate::facts::ArtifactProof::default(),
        });
        assert_eq!(found.exists, exists, "{case}");
        assert_eq!(
            found.image.push_tag.as_deref(),
            exists.then_some("v1"),
            "{case}"
        );
    }
}

/// A repository read that found nothing, as any event may carry one.
fn absent_repository_write() -> RepositoryWrite {
    repository_write(
        key(),
        crate::facts::RepositoryFacts {
            observed_at: Utc::now(),
            state: crate::facts::RepositoryState::Absent,
        },
        &crate::facts::RegistryFacts {
            observed_at: Utc::now(),
            scanning: Fact::Unknown("not read".into()),
            signing: Fact::Known(Vec::new()),
            pull_through_rules: Fact::Known(Vec::new()),
            creation_templates: Fact::Known(Vec::new()),
        },
        &ControlPolicy::default(),
    )
}

/// A registry with basic scanning and no rules.
fn basic_registry() -> crate::facts::RegistryFacts {
    crate::facts::RegistryFacts {
        observed_at: Utc::now(),
        scanning: Fact::Known(crate::facts::RegistryScanning {
            scan_type: "BASIC".into(),
            rules: Vec::new(),
        }),
        signing: Fact::Known(Vec::new()),
        pull_through_rules: Fact::Known(Vec::new()),
        creation_templates: Fact::Known(Vec::new()),
    }
}

#[tokio::test]
async fn a_request_that_names_the_whole_setting_is_the_state_at_its_time() {
    let fake = FakeRegistry::default().with_repository(&key(), "IMMUTABLE");
    let reread = fake.repository(&key()).await.expect("read");
    let at = Utc::now() - Duration::seconds(30);
    let call = |mode: Option<&str>| Change::RepositoryChanged {
        repository: key().name,
        call: RepositoryCall::PutImageTagMutability {
            image_tag_mutability: mode.map(str::to_owned),
        },
    };
    let mode = |facts: &crate::facts::RepositoryFacts| match &facts.state {
        crate::facts::RepositoryState::Present(s) => {
            s.tag_mutability.known().map(|m| m.mode.clone())
        }
        _ => None,
    };
    // MUTABLE asked, IMMUTABLE read back: the request is the state at its time, and a later
    // change undid it.
    let (facts, requested) = requested_state(
        &call(Some("MUTABLE")),
        at,
        reread.clone(),
        &basic_registry(),
    );
    assert_eq!(mode(&facts).as_deref(), Some("MUTABLE"));
    assert_eq!(facts.observed_at, at);
    assert_eq!(
        requested,
        Requested {
            applied: true,
            undone: true
        }
    );
    let (_, requested) = requested_state(
        &call(Some("IMMUTABLE")),
        at,
        reread.clone(),
        &basic_registry(),
    );
    assert!(requested.applied && !requested.undone);
    // A mode with exclusions, a request without the mode, another call: the re-read stands.
    for change in [
        call(Some("IMMUTABLE_WITH_EXCLUSION")),
        call(None),
        Change::RepositoryChanged {
            repository: key().name,
            call: RepositoryCall::CreateRepository,
        },
        Change::RepositoryChanged {
            repository: key().name,
            call: RepositoryCall::SetRepositoryPolicy { policy_text: None },
        },
        Change::RepositoryChanged {
            repository: key().name,
            call: RepositoryCall::PutImageScanningConfiguration { scan_on_push: None },
        },
    ] {
        let (facts, requested) = requested_state(&change, at, reread.clone(), &basic_registry());
        assert_eq!(facts, reread, "{change:?}");
        assert_eq!(requested, Requested::default());
    }
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "one table of calls with what each must set, read best in one place"
)]
async fn each_call_that_names_a_whole_setting_is_the_state_at_its_time() {
    // The fake reads scan on push, a lifecycle policy and no repository policy.
    let fake = FakeRegistry::default().with_repository(&key(), "IMMUTABLE");
    let reread = fake.repository(&key()).await.expect("read");
    let at = Utc::now() - Duration::seconds(30);
    let settings = |facts: &crate::facts::RepositoryFacts| match &facts.state {
        crate::facts::RepositoryState::Present(s) => (**s).clone(),
        other => panic!("present: {other:?}"),
    };
    let policy = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"ecr:*"}]}"#;
    let cases: [(RepositoryCall, bool); 5] = [
        (
            RepositoryCall::PutImageScanningConfiguration {
                scan_on_push: Some(false),
            },
            true,
        ),
        (
            RepositoryCall::SetRepositoryPolicy {
                policy_text: Some(policy.to_owned()),
            },
            true,
        ),
        (RepositoryCall::DeleteRepositoryPolicy, false),
        (RepositoryCall::PutLifecyclePolicy, false),
        (RepositoryCall::DeleteLifecyclePolicy, true),
    ];
    for (call, undone) in cases {
        let change = Change::RepositoryChanged {
            repository: key().name,
            call: call.clone(),
        };
        let (facts, requested) = requested_state(&change, at, reread.clone(), &basic_registry());
        assert_eq!(facts.observed_at, at, "{call:?}");
        assert_eq!(
            requested,
            Requested {
                applied: true,
                undone
            },
            "{call:?}"
        );
        let (after, before) = (settings(&facts), settings(&reread));
        match call {
            RepositoryCall::PutImageScanningConfiguration { .. } => {
                assert!(!after.scan_on_push && before.scan_on_push);
                assert!(!after.reported_scanning.is_unavailable());
            }
            RepositoryCall::SetRepositoryPolicy { .. } => {
                assert_eq!(after.policy, Fact::Known(Some(policy.to_owned())));
            }
            RepositoryCall::DeleteRepositoryPolicy => assert_eq!(after.policy, Fact::Known(None)),
            RepositoryCall::PutLifecyclePolicy => {
                assert_eq!(after.lifecycle_policy, Fact::Known(true));
            }
            _ => assert_eq!(after.lifecycle_policy, Fact::Known(false)),
        }
        // Encryption never changes after creation: no call touches it.
        assert_eq!(after.encryption, before.encryption);
        assert_eq!(after.tag_mutability, before.tag_mutability);
    }
    // Scan on push with the registry's scanning unreadable: the re-read stands (the requested
    // flag alone would make ECR.1 UNKNOWN).
    let mut unread = basic_registry();
    unread.scanning = Fact::Unknown("access denied".into());
    let scan_off = Change::RepositoryChanged {
        repository: key().name,
        call: RepositoryCall::PutImageScanningConfiguration {
            scan_on_push: Some(false),
        },
    };
    let (facts, requested) = requested_state(&scan_off, at, reread.clone(), &unread);
    assert_eq!((facts, requested), (reread.clone(), Requested::default()));
    // The same policy, formatted differently by AWS, is not a later change.
    let mut stored = reread.clone();
    if let crate::facts::RepositoryState::Present(s) = &mut stored.state {
        s.policy = Fact::Known(Some(policy.replace(',', ", ")));
    }
    let change = Change::RepositoryChanged {
        repository: key().name,
        call: RepositoryCall::SetRepositoryPolicy {
            policy_text: Some(policy.to_owned()),
        },
    };
    assert!(
        !requested_state(&change, at, stored, &basic_registry())
            .1
            .undone
    );
}

#[test]
fn a_read_with_an_unavailable_fact_asks_for_a_reread_and_judges_the_rest() {
    let absent = absent_repository_write();
    assert!(
        !absent.reread,
        "a lasting Unknown is an answer, not an outage"
    );
    let registry = crate::facts::RegistryFacts {
        observed_at: Utc::now(),
        scanning: Fact::Known(crate::facts::RegistryScanning {
            scan_type: "BASIC".into(),
            rules: Vec::new(),
        }),
        signing: Fact::unavailable("ecr:GetSigningConfiguration", "HTTP 500"),
        pull_through_rules: Fact::Known(Vec::new()),
        creation_templates: Fact::Known(Vec::new()),
    };
    let facts = crate::facts::RepositoryFacts {
        observed_at: Utc::now(),
        state: crate::facts::RepositoryState::Absent,
    };
    assert!(repository_write(key(), facts, &registry, &ControlPolicy::default()).reread);
}

#[test]
fn only_repository_changing_calls_move_control_state() {
    let pushed_digest = digest("d1");
    let cases: Vec<(Change, bool)> = vec![
        (
            Change::RepositoryChanged {
                repository: key().name,
                call: RepositoryCall::PutLifecyclePolicy,
            },
            true,
        ),
        (
            Change::RegistryChanged {
                call: RegistryCall::PutRegistryPolicy,
            },
            true,
        ),
        (pushed(&pushed_digest, Some("v1")), false),
        (
            Change::ImagePushRecorded {
                repository: key().name,
                digest: pushed_digest.clone(),
                tag: None,
            },
            false,
        ),
        (
            Change::ScanCompleted {
                repository: key().name,
                digest: pushed_digest.clone(),
                source: ScanSource::Enhanced,
                raw_status: "ACTIVE".into(),
                severity_counts: BTreeMap::new(),
            },
            false,
        ),
    ];
    let fake_read = absent_repository_write();
    for (change, moves) in cases {
        let kind = change.kind();
        assert_eq!(moves_control_state(&change), moves, "{kind}");
        let mut plan = EventPlan::new(event(change));
        plan.repositories.push(fake_read.clone());
        attribute_repository_changes(&mut plan);
        assert_eq!(
            plan.repositories[0].only_if_new, !moves,
            "{kind}: a read for another purpose is written only for a new repository"
        );
    }
}

#[tokio::test]
async fn the_cosign_tag_is_read_once_the_grace_window_is_over_or_for_a_signature() {
    let signed = digest("e1");
    let cosign = SignatureArtifact {
        kind: SignatureKind::Cosign,
        reference: format!("sha256-{}.sig", "e1".repeat(32)),
        pushed_at: None,
    };
    let grace = Duration::minutes(10);
    // (case, minutes since push, every source, Cosign tag read, status, re-checked)
    let cases = [
        (
            "own push inside grace",
            1,
            false,
            false,
            SignatureStatus::Pending,
            true,
        ),
        (
            "own push after grace",
            11,
            false,
            true,
            SignatureStatus::Signed,
            false,
        ),
        (
            "a signature's subject",
            1,
            true,
            true,
            SignatureStatus::Signed,
            false,
        ),
    ];
    for (case, minutes, every_source, reads_tag, status, rechecked) in cases {
        let fake = FakeRegistry::new().with_cosign_tag(&signed, cosign.clone());
        let now = Utc::now();
        let pushed_at = now - Duration::minutes(minutes);
        let reads = SignatureReads::new(
            key(),
            signed.clone(),
            pushed_at,
            0,
            every_source,
            (now, grace),
        );
        assert_eq!(reads.cosign_tag, reads_tag, "{case}");
        let write = judge(&fake, reads, grace).await;
        assert_eq!(
            write.verdict.status, status,
            "{case}: {}",
            write.verdict.reason
        );
        assert_eq!(write.next_check.is_some(), rechecked, "{case}");
        if let Some(due) = write.next_check {
            assert!(
                due <= pushed_at + grace + Duration::milliseconds(10),
                "{case}: {due}"
            );
        }
    }
}

/// One managed-signing entry of [`PROFILE`] with a raw status.
fn managed_entry(status: &str) -> ManagedSigning {
    ManagedSigning {
        profile_arn: PROFILE.into(),
        status: SigningStatus::from_raw(status),
        failure_code: None,
        failure_reason: None,
    }
}

#[tokio::test]
async fn managed_signing_reads_each_complete_profile_once() {
    let signed = digest("e2");
    // (case, entries, profile status, verdict, profile reads)
    let cases = [
        (
            // COMPLETE alone is not a signature: no envelope of that profile verified.
            "complete, active, no signature artifact",
            vec!["COMPLETE", "COMPLETE"],
            ProfileStatus::Active,
            SignatureStatus::Untrusted,
            1,
        ),
        (
            "complete, revoked",
            vec!["COMPLETE"],
            ProfileStatus::Revoked,
            SignatureStatus::Untrusted,
            1,
        ),
        (
            "in progress",
            vec!["IN_PROGRESS"],
            ProfileStatus::Active,
            SignatureStatus::Pending,
            0,
        ),
        (
            "a newer status",
            vec!["PAUSED"],
            ProfileStatus::Active,
            SignatureStatus::Unsigned,
            0,
        ),
    ];
    for (case, entries, profile, status, profile_reads) in cases {
        let fake = FakeRegistry::new()
            .with_signing(&signed, entries.into_iter().map(managed_entry).collect())
            .with_profile(PROFILE, profile);
        let now = Utc::now();
        let pushed_at: DateTime<Utc> = now - Duration::minutes(30);
        let reads = SignatureReads::new(
            key(),
            signed.clone(),
            pushed_at,
            0,
            true,
            (now, Duration::minutes(10)),
        );
        let write = judge(&fake, reads, Duration::minutes(10)).await;
        assert_eq!(
            write.verdict.status, status,
            "{case}: {}",
            write.verdict.reason
        );
        let reads = fake
            .calls()
            .iter()
            .filter(|c| c.starts_with("profile_status"))
            .count();
        assert_eq!(reads, profile_reads, "{case}");
    }
}

#[test]
fn a_delete_is_taken_only_when_ecr_confirms_it() {
    let gone = digest("f1");
    let (_, reads) = start(event(Change::ImageDeleted {
        repository: key().name,
        digest: gone.clone(),
        tag: Some("v1".into()),
    }));
    assert_eq!(
        reads,
        Reads::Delete {
            key: key(),
            digest: gone.clone()
        }
    );
    let unreadable = ImageLookup::Unreadable {
        reason: "AccessDeniedException".into(),
    };
    // (case, ECR's answer, presence written, whether the delete is noted as not taken)
    let cases = [
        (
            "ECR no longer has it",
            ImageLookup::NotFound,
            Some(ImagePresence::Deleted),
            false,
        ),
        (
            "a forged delete: ECR still has it",
            ImageLookup::Found(image(&["v1"], None, None)),
            Some(ImagePresence::Unchanged),
            true,
        ),
        ("ECR cannot say", unreadable, None, true),
    ];
    for (case, lookup, presence, noted) in cases {
        let (mut plan, _) = start(event(Change::ImageDeleted {
            repository: key().name,
            digest: gone.clone(),
            tag: Some("v1".into()),
        }));
        plan_delete(&mut plan, key(), gone.clone(), (Utc::now(), lookup));
        assert_eq!(plan.image.as_ref().map(|i| i.presence), presence, "{case}");
        assert_eq!(!plan.distrusted.is_empty(), noted, "{case}");
        if let Some(image) = plan.image {
            assert_eq!((image.key, image.digest), (key(), gone.clone()), "{case}");
            assert!(
                image.settings.is_none() && image.pushed_by.is_none(),
                "{case}"
            );
        }
    }
}

#[test]
fn events_without_reads_are_planned_at_once() {
    let (plan, reads) = start(event(Change::Ignored {
        reason: "not evaluated".into(),
    }));
    assert_eq!(reads, Reads::Nothing);
    assert!(plan.ignored && plan.image.is_none());

    let (plan, reads) = start(event(Change::FailedApiCall {
        event_name: "PutImageTagMutability".into(),
        repository: Some(key().name),
        error_code: "AccessDenied".into(),
        error_message: None,
        requested: Some(RepositoryCall::PutImageTagMutability {
            image_tag_mutability: Some("MUTABLE".into()),
        }),
    }));
    assert_eq!(reads, Reads::Nothing);
    assert!(!plan.ignored && plan.image.is_none() && plan.repositories.is_empty());
}

/// What a push of `digest` tagged `v3` reads.
fn push_reads(digest: &Digest, pushed_by: Option<Actor>, recorded: bool) -> Reads {
    Reads::Push {
        key: key(),
        digest: digest.clone(),
        tag: Some("v3".into()),
        pushed_by,
        recorded,
    }
}

#[test]
fn each_event_names_the_reads_it_needs() {
    let d = digest("f2");
    let recorded = Change::ImagePushRecorded {
        repository: key().name,
        digest: d.clone(),
        tag: Some("v3".into()),
    };
    let actor = event(recorded.clone()).actor;
    let cases: Vec<(Change, Reads)> = vec![
        (pushed(&d, Some("v3")), push_reads(&d, None, false)),
        (recorded, push_reads(&d, actor, true)),
        (
            Change::ReferrerChanged {
                repository: key().name,
                digest: d.clone(),
                action: "PUSH".into(),
                artifact_media_type: None,
            },
            Reads::Referrer {
                key: key(),
                digest: d.clone(),
            },
        ),
        (
            Change::RepositoryChanged {
                repository: key().name,
                call: RepositoryCall::DeleteRepository { force: None },
            },
            Reads::Repository { key: key() },
        ),
        (
            Change::RegistryChanged {
                call: RegistryCall::PutSigningConfiguration,
            },
            Reads::Registry {
                account: key().account,
                region: key().region,
                only: Vec::new(),
            },
        ),
        (
            Change::RegistryChanged {
                call: RegistryCall::ScanResourceChange {
                    repositories: vec![key().name],
                },
            },
            Reads::Registry {
                account: key().account,
                region: key().region,
                only: vec![key().name],
            },
        ),
    ];
    for (change, expected) in cases {
        let kind = change.kind();
        assert_eq!(start(event(change)).1, expected, "{kind}");
    }
}

#[tokio::test]
async fn a_push_record_older_than_the_image_does_not_name_the_pusher() {
    let pushed_digest = digest("a7");
    let facts = image(&["v1"], None, None);
    let pushed_at = facts.pushed_at.expect("pushed at");
    let fake = FakeRegistry::new()
        .with_repository(&key(), "IMMUTABLE")
        .with_image(&key(), &pushed_digest, facts);
    let recorded = Change::ImagePushRecorded {
        repository: key().name,
        digest: pushed_digest.clone(),
        tag: Some("v1".into()),
    };
    // (case, record time, pusher taken)
    let cases = [
        ("the push's own record", pushed_at, true),
        (
            "a record within the skew",
            pushed_at - Duration::minutes(4),
            true,
        ),
        (
            "a record a day older than the image",
            pushed_at - Duration::days(1),
            false,
        ),
    ];
    for (case, time, taken) in cases {
        let mut record = event(recorded.clone());
        record.time = time;
        let found = plan_push(&fake, &record).await;
        assert_eq!(found.image.pushed_by.is_some(), taken, "{case}");
        assert_eq!(
            found.distrusted.map(|d| d.hint),
            (!taken).then_some(crate::telemetry::DistrustedHint::PushRecordTooOld),
            "{case}"
        );
    }
}

#[tokio::test]
async fn a_cosign_signature_tag_re_judges_the_digest_it_names() {
    let signed = digest("b1");
    let sig_tag = format!("sha256-{}.sig", "b1".repeat(32));
    let config = Some("application/vnd.oci.image.config.v1+json");
    // (case, tags of the pushed manifest, digest re-judged)
    let cases = [
        (
            "a .sig tag names another digest",
            vec![sig_tag.clone()],
            Some(signed.clone()),
        ),
        (
            "an .att tag is not a signature",
            vec![format!("sha256-{}.att", "b1".repeat(32))],
            None,
        ),
        ("no signature tag", vec!["v1".to_owned()], None),
    ];
    for (case, tags, expected) in cases {
        let pushed_digest = digest("b2");
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        let fake = FakeRegistry::new()
            .with_repository(&key(), "IMMUTABLE")
            .with_image(&key(), &pushed_digest, image(&tags, config, None));
        let found = plan_push(&fake, &event(pushed(&pushed_digest, None))).await;
        assert_eq!(found.cosign_signs, expected, "{case}");
    }
}

#[test]
fn a_signer_revocation_reads_nothing_and_asks_the_store_for_the_digests_it_names() {
    use crate::parse::SignerRevocation;
    let cases = [
        (
            SignerRevocation::RevokeSignature {
                job_id: "job-1".into(),
                job_owner: None,
                reason: Some("leak".into()),
            },
            "arn:aws:signer:us-east-1:123456789012:/signing-jobs/job-1",
        ),
        (
            SignerRevocation::RevokeSignature {
                job_id: "job-2".into(),
                job_owner: AccountId::parse("444455556666").ok(),
                reason: None,
            },
            "arn:aws:signer:us-east-1:444455556666:/signing-jobs/job-2",
        ),
        (
            SignerRevocation::RevokeSigningProfile {
                profile_name: "release".into(),
                profile_version: "v2".into(),
                effective_time: None,
                reason: None,
            },
            // The version ARN a verified signature's signingProfileVersion attribute names.
            "arn:aws:signer:us-east-1:123456789012:/signing-profiles/release/v2",
        ),
    ];
    for (revocation, arn) in cases {
        let (plan, reads) = start(event(Change::SignerRevoked { revocation }));
        assert_eq!(reads, Reads::Nothing);
        assert!(
            !plan.ignored,
            "a revocation is evidence, not an ignored event"
        );
        assert!(plan.image.is_none() && plan.signatures.is_empty());
        assert_eq!(
            plan.reverify,
            Some(Reverify::NamingSigner { arn: arn.into() })
        );
    }
}
