//! Table-driven tests of the control verdicts and the settings a digest records at push.

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
        scan_on_push: true,
        reported_scanning: crate::facts::ReportedScanning::not_read(),
        lifecycle_policy: Fact::Known(true),
        encryption: Fact::Known(Encryption {
            encryption_type: "KMS".into(),
            kms_key: Some("arn:aws:kms:us-east-1:123456789012:key/k1".into()),
            key_manager: Some(Fact::Known("CUSTOMER".into())),
        }),
        policy: Fact::Known(None),
    }
}

fn registry() -> RegistryFacts {
    RegistryFacts {
        observed_at: Utc::now(),
        scanning: Fact::Known(RegistryScanning {
            scan_type: "BASIC".into(),
            rules: vec![],
        }),
        signing: Fact::Known(vec![SigningRuleFacts {
            profile_arn: "arn:aws:signer:us-east-1:123456789012:/signing-profiles/release".into(),
            filters: vec![],
        }]),
        pull_through_rules: Fact::Known(vec![]),
        creation_templates: Fact::Known(vec![]),
    }
}

fn verdicts(settings: RepositorySettings, policy: &ControlPolicy) -> BTreeMap<ControlId, Verdict> {
    let facts = RepositoryFacts {
        observed_at: Utc::now(),
        state: RepositoryState::Present(Box::new(settings)),
    };
    repository_controls(&facts, &registry(), policy).expect("present repository has controls")
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

fn scanning(scan_type: &str, rules: &[(&str, &[&str])]) -> Fact<RegistryScanning> {
    Fact::Known(RegistryScanning {
        scan_type: scan_type.into(),
        rules: rules
            .iter()
            .map(|(frequency, filters)| crate::facts::ScanRule {
                frequency: (*frequency).into(),
                filters: filters.iter().map(|f| (*f).into()).collect(),
            })
            .collect(),
    })
}

#[test]
fn scan_filters_match_as_ecr_documents_them() {
    // With a wildcard: anchored, `*` for any run of characters (also none).
    assert!(scan_filter_matches("prod-*", "prod-api"));
    assert!(scan_filter_matches("prod-*", "prod-"));
    assert!(!scan_filter_matches("prod-*", "team/prod-api"));
    assert!(scan_filter_matches("*/api", "team/api"));
    assert!(scan_filter_matches("*", "anything"));
    // Without one: any name containing the filter.
    assert!(scan_filter_matches("prod", "team/prod-api"));
    assert!(!scan_filter_matches("prod", "staging-api"));
}

#[test]
fn effective_scan_frequency_follows_scan_type_rules_and_the_repository_flag() {
    let both: &[(&str, &[&str])] = &[("SCAN_ON_PUSH", &["api"]), ("CONTINUOUS_SCAN", &["prod-*"])];
    for (scan_type, rules, repository, flag, expected) in [
        // ENHANCED: continuous wins when both rules match; the repository flag is ignored.
        ("ENHANCED", both, "prod-api", false, "CONTINUOUS_SCAN"),
        ("ENHANCED", both, "team/api", false, "SCAN_ON_PUSH"),
        ("ENHANCED", both, "web", true, "MANUAL"),
        ("BASIC", both, "web", false, "MANUAL"),
        // BASIC: a matching scan-on-push rule, or the repository's own flag.
        (
            "BASIC",
            &[("SCAN_ON_PUSH", &["*"][..])][..],
            "web",
            false,
            "SCAN_ON_PUSH",
        ),
        (
            "BASIC",
            &[("SCAN_ON_PUSH", &["prod-*"][..])][..],
            "web",
            false,
            "MANUAL",
        ),
        ("BASIC", &[][..], "web", true, "SCAN_ON_PUSH"),
        ("BASIC", &[][..], "web", false, "MANUAL"),
        (
            "BASIC",
            &[("MANUAL", &["*"][..])][..],
            "web",
            false,
            "MANUAL",
        ),
    ] {
        let got = effective_scanning(&scanning(scan_type, rules), repository, flag);
        assert_eq!(
            got.known().map(|s| s.scan_frequency.as_str()),
            Some(expected),
            "{scan_type} {repository} flag={flag}"
        );
    }
}

#[test]
fn ecr1_passes_scan_on_push_and_continuous_and_fails_manual() {
    for (registry_scanning, flag, expected) in [
        (scanning("BASIC", &[]), true, Pass),
        (
            scanning("ENHANCED", &[("CONTINUOUS_SCAN", &["*"][..])]),
            false,
            Pass,
        ),
        (scanning("BASIC", &[]), false, Fail),
        (scanning("SOMETHING_NEW", &[]), true, Unknown),
        (Fact::Unknown("AccessDeniedException".into()), true, Unknown),
    ] {
        let mut s = settings();
        s.scan_on_push = flag;
        let facts = RepositoryFacts {
            observed_at: Utc::now(),
            state: RepositoryState::Present(Box::new(s)),
        };
        let mut registry = registry();
        registry.scanning = registry_scanning;
        let v = repository_controls(&facts, &registry, &ControlPolicy::default()).expect("v");
        assert_eq!(
            v[&ControlId::Ecr1].status,
            expected,
            "{}",
            v[&ControlId::Ecr1].reason
        );
    }
}

#[test]
fn ecra3_needs_a_managed_signing_rule_matching_the_repository() {
    let rule = |filters: &[&str]| SigningRuleFacts {
        profile_arn: "arn:aws:signer:us-east-1:123456789012:/signing-profiles/p".into(),
        filters: filters.iter().map(|f| (*f).into()).collect(),
    };
    assert_eq!(signing_coverage(&[rule(&[])], "app").status, Pass);
    assert_eq!(
        signing_coverage(&[rule(&["prod-*"])], "prod-app").status,
        Pass
    );
    assert_eq!(signing_coverage(&[rule(&["prod-*"])], "app").status, Fail);
    assert_eq!(signing_coverage(&[rule(&["app"])], "app").status, Pass);
    assert_eq!(signing_coverage(&[rule(&["app"])], "app-2").status, Fail);
    assert_eq!(signing_coverage(&[], "app").status, Fail);
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
    s.lifecycle_policy = Fact::Unknown("AccessDeniedException".into());
    s.policy = Fact::Unknown("AccessDeniedException".into());
    let v = verdicts(s, &ControlPolicy::default());
    assert_eq!(v[&ControlId::Ecr3].status, Unknown);
    assert_eq!(v[&ControlId::PublicPolicy].status, Unknown);
    assert_eq!(v[&ControlId::CrossAccountWithoutOrg].status, Unknown);

    let facts = RepositoryFacts {
        observed_at: Utc::now(),
        state: RepositoryState::Unreadable {
            reason: "denied".into(),
        },
    };
    let v = repository_controls(&facts, &registry(), &ControlPolicy::default()).expect("controls");
    assert!(v.values().all(|v| v.status == Unknown));

    let gone = RepositoryFacts {
        observed_at: Utc::now(),
        state: RepositoryState::Absent,
    };
    assert!(repository_controls(&gone, &registry(), &ControlPolicy::default()).is_none());
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

fn ptc_rule(prefix: &str) -> PullThroughRule {
    PullThroughRule {
        prefix: prefix.into(),
        upstream_url: format!("{prefix}.upstream.example"),
    }
}

fn template(prefix: &str, applied_for: &[&str]) -> CreationTemplate {
    CreationTemplate {
        prefix: prefix.into(),
        applied_for: applied_for.iter().map(|a| (*a).to_owned()).collect(),
    }
}

fn ecra4(rules: &[&str], templates: &[CreationTemplate], repository: &str) -> Verdict {
    pull_through_template(
        &Fact::Known(rules.iter().map(|p| ptc_rule(p)).collect()),
        &Fact::Known(templates.to_vec()),
        repository,
    )
}

#[test]
fn ecra4_repositories_no_rule_created_pass() {
    let v = ecra4(&["hub"], &[], "app");
    assert_eq!(v.status, Pass);
    assert_eq!(v.reason, "not created by a pull-through cache rule");
    // The prefix is a whole path segment: `hubble/x` and a bare `hub` are not the rule's.
    assert_eq!(ecra4(&["hub"], &[], "hubble/x").status, Pass);
    assert_eq!(ecra4(&["hub"], &[], "hub").status, Pass);
    assert_eq!(ecra4(&[], &[], "hub/library/nginx").status, Pass);
}

#[test]
fn ecra4_fails_a_rule_no_pull_through_template_covers_and_names_rule_and_upstream() {
    let v = ecra4(&["hub"], &[], "hub/library/nginx");
    assert_eq!(v.status, Fail);
    assert!(v.reason.contains("rule hub"), "{}", v.reason);
    assert!(v.reason.contains("hub.upstream.example"), "{}", v.reason);
    // Templates for other purposes or other prefixes do not cover it.
    for templates in [
        vec![template("hub", &["CREATE_ON_PUSH", "REPLICATION"])],
        vec![template("ROOT", &["CREATE_ON_PUSH"])],
        vec![template("hub/library", &["PULL_THROUGH_CACHE"])],
        vec![template("hu", &["PULL_THROUGH_CACHE"])],
        vec![template("other", &["PULL_THROUGH_CACHE"])],
    ] {
        assert_eq!(
            ecra4(&["hub"], &templates, "hub/library/nginx").status,
            Fail,
            "{templates:?}"
        );
    }
}

#[test]
fn ecra4_passes_when_a_template_covers_the_rule_prefix() {
    for covering in [
        template("ROOT", &["PULL_THROUGH_CACHE"]),
        template("hub", &["CREATE_ON_PUSH", "PULL_THROUGH_CACHE"]),
        template("hub/", &["PULL_THROUGH_CACHE"]),
        template("team", &["PULL_THROUGH_CACHE"]),
    ] {
        let rule = if covering.prefix == "team" {
            "team/hub"
        } else {
            "hub"
        };
        let v = ecra4(
            &[rule],
            std::slice::from_ref(&covering),
            &format!("{rule}/library/nginx"),
        );
        assert_eq!(v.status, Pass, "{covering:?}: {}", v.reason);
        assert!(v.reason.contains(&covering.prefix), "{}", v.reason);
    }
    // The most specific template is named.
    let v = ecra4(
        &["hub"],
        &[
            template("ROOT", &["PULL_THROUGH_CACHE"]),
            template("hub", &["PULL_THROUGH_CACHE"]),
        ],
        "hub/x",
    );
    assert!(v.reason.ends_with("template hub"), "{}", v.reason);
}

#[test]
fn ecra4_judges_the_most_specific_rule_and_root_serves_the_rest() {
    let templates = [template("hub/library", &["PULL_THROUGH_CACHE"])];
    assert_eq!(
        ecra4(&["hub", "hub/library"], &templates, "hub/library/nginx").status,
        Pass
    );
    assert_eq!(
        ecra4(&["hub", "hub/library"], &templates, "hub/other/x").status,
        Fail
    );
    // An ECR-to-ECR rule with prefix ROOT serves names no other rule's prefix starts.
    let v = ecra4(&["ROOT", "hub"], &[], "app");
    assert_eq!(v.status, Fail);
    assert!(v.reason.contains("rule ROOT"), "{}", v.reason);
    assert_eq!(
        ecra4(
            &["ROOT"],
            &[template("ROOT", &["PULL_THROUGH_CACHE"])],
            "app"
        )
        .status,
        Pass
    );
}

#[test]
fn ecra4_unreadable_rules_or_templates_are_unknown() {
    fn denied<T>() -> Fact<T> {
        Fact::Unknown("AccessDeniedException: no".to_owned())
    }
    let v = pull_through_template(&denied(), &Fact::Known(vec![]), "app");
    assert_eq!(v.status, Unknown);
    assert!(v.reason.contains("AccessDeniedException"));
    // Templates only matter for a repository a rule created.
    let rules = Fact::Known(vec![ptc_rule("hub")]);
    assert_eq!(pull_through_template(&rules, &denied(), "app").status, Pass);
    let v = pull_through_template(&rules, &denied(), "hub/x");
    assert_eq!(v.status, Unknown);
    assert!(v.reason.contains("rule hub"), "{}", v.reason);
}

#[test]
fn every_control_is_evaluated_for_a_present_repository() {
    let v = verdicts(settings(), &ControlPolicy::default());
    assert_eq!(
        v.keys().copied().collect::<Vec<_>>(),
        ControlId::ALL.to_vec()
    );
    assert_eq!(v[&ControlId::PullThroughTemplate].status, Pass);
}

fn reported(frequency: &str, filters: &[&str]) -> Fact<ReportedScanning> {
    Fact::Known(ReportedScanning {
        scan_frequency: frequency.into(),
        scan_on_push: true,
        applied_filters: filters.iter().map(|f| (*f).to_owned()).collect(),
    })
}

#[test]
fn ecr1_follows_aws_when_the_registry_rules_say_otherwise_and_names_the_disagreement() {
    // The rules as applied here: BASIC, no rule matches, the repository flag on → SCAN_ON_PUSH.
    // AWS answers MANUAL (the user guide: a repository no scan-on-push filter matches is MANUAL).
    let mut repository = settings();
    repository.reported_scanning = reported("MANUAL", &[]);
    let registry = registry();

    let judged = repository_scanning(&repository, &registry, "app");
    let controls = present_controls(&repository, &registry, &ControlPolicy::default());

    assert_eq!(
        judged.disagreements,
        vec![ScanningDisagreement::ScanFrequency]
    );
    let ecr1 = &controls[&ControlId::Ecr1];
    assert_eq!(ecr1.status, Fail, "{}", ecr1.reason);
    assert!(ecr1.reason.contains("reported by AWS"), "{}", ecr1.reason);
    assert!(
        ecr1.reason
            .contains("registry rules as applied here give SCAN_ON_PUSH"),
        "{}",
        ecr1.reason
    );
}

#[test]
fn ecr1_agreeing_answers_count_no_disagreement_and_filters_compare_as_sets() {
    let mut repository = settings();
    repository.reported_scanning = reported("SCAN_ON_PUSH", &[]);
    let judged = repository_scanning(&repository, &registry(), "app");
    assert!(judged.disagreements.is_empty());
    assert_eq!(
        judged
            .configuration
            .known()
            .map(|c| c.scan_frequency.as_str()),
        Some("SCAN_ON_PUSH")
    );

    let enhanced = RegistryFacts {
        scanning: scanning("ENHANCED", &[("CONTINUOUS_SCAN", &["a*", "ap*"][..])]),
        ..registry()
    };
    repository.reported_scanning = reported("CONTINUOUS_SCAN", &["ap*", "a*"]);
    assert!(
        repository_scanning(&repository, &enhanced, "app")
            .disagreements
            .is_empty()
    );
    repository.reported_scanning = reported("CONTINUOUS_SCAN", &["ap*"]);
    assert_eq!(
        repository_scanning(&repository, &enhanced, "app").disagreements,
        vec![ScanningDisagreement::AppliedFilters]
    );
}

#[test]
fn ecr1_falls_back_to_the_registry_rules_when_aws_cannot_answer_and_says_so() {
    let mut repository = settings();
    repository.reported_scanning = Fact::Unknown("AccessDeniedException: no".into());
    let controls = present_controls(&repository, &registry(), &ControlPolicy::default());
    let ecr1 = &controls[&ControlId::Ecr1];
    assert_eq!(ecr1.status, Pass);
    assert!(
        ecr1.reason.contains("AccessDeniedException"),
        "{}",
        ecr1.reason
    );
    assert!(!ecr1.reason.contains("reported by AWS"), "{}", ecr1.reason);
}
