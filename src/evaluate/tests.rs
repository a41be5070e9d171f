use chrono::Utc;

use super::*;
use crate::domain::ControlStatus;
use crate::domain::ControlStatus::{Fail, Pass, Unknown};

fn settings() -> RepositorySettings {
    RepositorySettings {
        arn: "arn:aws:ecr:us-east-1:123456789012:repository/app".into(),
        tag_mutability: Fact::Known(TagMutability {
            mode: "IMMUTABLE".into(),
            exclusion_filters: vec![],
        }),
        scanning: Fact::Known(ScanningConfiguration {
            scan_frequency: "SCAN_ON_PUSH".into(),
            scan_on_push: true,
            applied_filters: vec![],
        }),
        lifecycle_policy: Fact::Known(true),
        encryption: Fact::Known(Encryption {
            encryption_type: "KMS".into(),
            kms_key: Some("arn:aws:kms:us-east-1:123456789012:key/k1".into()),
            key_manager: Some(Fact::Known("CUSTOMER".into())),
        }),
    }
}

fn verdicts(settings: RepositorySettings, policy: &ControlPolicy) -> BTreeMap<ControlId, Verdict> {
    let facts = RepositoryFacts {
        observed_at: Utc::now(),
        state: RepositoryState::Present(Box::new(settings)),
    };
    repository_controls(&facts, policy).expect("present repository has controls")
}

fn status(settings: RepositorySettings, control: ControlId) -> (ControlStatus, String) {
    let v = verdicts(settings, &ControlPolicy::default());
    let verdict = &v[&control];
    (verdict.status, verdict.reason.clone())
}

#[test]
fn a_fully_configured_repository_passes_everything() {
    let v = verdicts(settings(), &ControlPolicy::default());
    assert!(v.values().all(|v| v.status == Pass), "{v:?}");
}

#[test]
fn ecr1_follows_the_effective_scan_frequency() {
    for (frequency, expected) in [
        ("SCAN_ON_PUSH", Pass),
        ("CONTINUOUS_SCAN", Pass),
        ("MANUAL", Fail),
        ("SOMETHING_NEW", Unknown),
    ] {
        let mut s = settings();
        s.scanning = Fact::Known(ScanningConfiguration {
            scan_frequency: frequency.into(),
            scan_on_push: false,
            applied_filters: vec!["prod-*".into()],
        });
        let (got, reason) = status(s, ControlId::Ecr1);
        assert_eq!(got, expected, "{frequency}: {reason}");
        assert!(reason.contains(frequency), "{reason}");
    }
}

#[test]
fn ecr2_passes_only_fully_immutable_tags_and_names_exclusion_filters() {
    for (mode, expected) in [
        ("IMMUTABLE", Pass),
        ("MUTABLE", Fail),
        ("IMMUTABLE_WITH_EXCLUSION", Fail),
        ("MUTABLE_WITH_EXCLUSION", Fail),
        ("NEW_MODE", Unknown),
    ] {
        let mut s = settings();
        s.tag_mutability = Fact::Known(TagMutability {
            mode: mode.into(),
            exclusion_filters: vec!["latest".into(), "dev-*".into()],
        });
        let (got, reason) = status(s, ControlId::Ecr2);
        assert_eq!(got, expected, "{mode}");
        if mode.ends_with("_WITH_EXCLUSION") {
            assert!(reason.contains("latest, dev-*"), "{reason}");
        }
    }
}

#[test]
fn ecr3_needs_a_lifecycle_policy() {
    let mut s = settings();
    s.lifecycle_policy = Fact::Known(false);
    assert_eq!(status(s, ControlId::Ecr3).0, Fail);
}

#[test]
fn ecr5_needs_a_customer_managed_key() {
    let cases = [
        ("AES256", None, None, Fail),
        ("KMS", None, Some(Fact::Known("AWS".to_owned())), Fail),
        ("KMS", Some("k"), Some(Fact::Known("AWS".to_owned())), Fail),
        (
            "KMS",
            Some("k"),
            Some(Fact::Known("CUSTOMER".to_owned())),
            Pass,
        ),
        (
            "KMS_DSSE",
            Some("k"),
            Some(Fact::Known("CUSTOMER".to_owned())),
            Pass,
        ),
        (
            "KMS",
            Some("k"),
            Some(Fact::Unknown("AccessDeniedException".to_owned())),
            Unknown,
        ),
        ("QUANTUM", None, None, Unknown),
    ];
    for (kind, key, manager, expected) in cases {
        let mut s = settings();
        s.encryption = Fact::Known(Encryption {
            encryption_type: kind.into(),
            kms_key: key.map(str::to_owned),
            key_manager: manager.clone(),
        });
        assert_eq!(
            status(s, ControlId::Ecr5).0,
            expected,
            "{kind} {key:?} {manager:?}"
        );
    }
}

#[test]
fn ecr5_allow_list_restricts_customer_keys() {
    let policy = ControlPolicy {
        kms_key_allow_list: vec!["arn:aws:kms:us-east-1:123456789012:key/other".into()],
    };
    assert_eq!(verdicts(settings(), &policy)[&ControlId::Ecr5].status, Fail);
    let policy = ControlPolicy {
        kms_key_allow_list: vec!["arn:aws:kms:us-east-1:123456789012:key/k1".into()],
    };
    assert_eq!(verdicts(settings(), &policy)[&ControlId::Ecr5].status, Pass);
}

#[test]
fn unreadable_facts_are_unknown_never_pass() {
    let mut s = settings();
    s.scanning = Fact::Unknown("AccessDeniedException".into());
    s.lifecycle_policy = Fact::Unknown("AccessDeniedException".into());
    let v = verdicts(s, &ControlPolicy::default());
    assert_eq!(v[&ControlId::Ecr1].status, Unknown);
    assert_eq!(v[&ControlId::Ecr3].status, Unknown);

    let facts = RepositoryFacts {
        observed_at: Utc::now(),
        state: RepositoryState::Unreadable {
            reason: "denied".into(),
        },
    };
    let v = repository_controls(&facts, &ControlPolicy::default()).expect("controls");
    assert!(v.values().all(|v| v.status == Unknown));

    let gone = RepositoryFacts {
        observed_at: Utc::now(),
        state: RepositoryState::Absent,
    };
    assert!(repository_controls(&gone, &ControlPolicy::default()).is_none());
}

#[test]
fn tag_protection_follows_mode_and_wildcard_filters() {
    let m = |mode: &str| TagMutability {
        mode: mode.into(),
        exclusion_filters: vec!["dev-*".into(), "latest".into()],
    };
    assert_eq!(tag_protected(&m("IMMUTABLE"), "v1"), Some(true));
    assert_eq!(tag_protected(&m("MUTABLE"), "v1"), Some(false));
    assert_eq!(
        tag_protected(&m("IMMUTABLE_WITH_EXCLUSION"), "v1"),
        Some(true)
    );
    assert_eq!(
        tag_protected(&m("IMMUTABLE_WITH_EXCLUSION"), "dev-42"),
        Some(false)
    );
    assert_eq!(
        tag_protected(&m("IMMUTABLE_WITH_EXCLUSION"), "latest"),
        Some(false)
    );
    assert_eq!(
        tag_protected(&m("IMMUTABLE_WITH_EXCLUSION"), "latest-1"),
        Some(true),
        "anchored match"
    );
    assert_eq!(
        tag_protected(&m("MUTABLE_WITH_EXCLUSION"), "dev-1"),
        Some(true)
    );
    assert_eq!(
        tag_protected(&m("MUTABLE_WITH_EXCLUSION"), "v1"),
        Some(false)
    );
    assert_eq!(tag_protected(&m("FUTURE"), "v1"), None);
}

#[test]
fn image_settings_record_repository_state_at_push() {
    let facts = RepositoryFacts {
        observed_at: Utc::now(),
        state: RepositoryState::Present(Box::new(settings())),
    };
    let s = image_settings(&facts, Some("v1"));
    assert_eq!(s.tag_immutability.as_deref(), Some("IMMUTABLE"));
    assert_eq!(s.tag_protected, Some(true));
    assert_eq!(s.encryption_type.as_deref(), Some("KMS"));
    assert_eq!(s.customer_managed_key, Some(true));
}
