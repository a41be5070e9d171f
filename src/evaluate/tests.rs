//! Table-driven tests of the control verdicts and the settings a digest records at push.

use chrono::Utc;

use super::*;
use crate::domain::ControlStatus;
use crate::domain::ControlStatus::{Fail, Pass, Unknown};

const LIFECYCLE_TEXT: &str = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":5},"action":{"type":"expire"}}]}"#;

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
        lifecycle_policy_text: Fact::Known(Some(LIFECYCLE_TEXT.to_owned())),
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
        ..ControlPolicy::default()
    };
    assert_eq!(verdicts(settings(), &policy)[&ControlId::Ecr5].status, Fail);
    let policy = ControlPolicy {
        kms_key_allow_list: vec!["arn:aws:kms:us-east-1:123456789012:key/k1".into()],
        ..ControlPolicy::default()
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
        ..CreationTemplate::default()
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
    // ECR.4 is judged for public repositories only.
    assert_eq!(
        v.keys().copied().collect::<Vec<_>>(),
        ControlId::ALL
            .into_iter()
            .filter(|c| *c != ControlId::Ecr4)
            .collect::<Vec<_>>()
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

const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/k1";

/// A template that gives exactly what `settings()` has.
fn matching_template(prefix: &str, applied_for: &[&str]) -> CreationTemplate {
    CreationTemplate {
        settings: crate::facts::TemplateSettings {
            tag_mutability: Some(TagMutability {
                mode: "IMMUTABLE".into(),
                exclusion_filters: vec![],
            }),
            encryption_type: Some("KMS".into()),
            kms_key: Some(KEY.into()),
            // Same rules, other layout and key order.
            lifecycle_policy: Some(
                r#"{ "rules": [ { "action": {"type": "expire"}, "rulePriority": 1,
                     "selection": {"countNumber": 5, "countType": "imageCountMoreThan",
                                   "tagStatus": "untagged"} } ] }"#
                    .into(),
            ),
            repository_policy: None,
        },
        ..template(prefix, applied_for)
    }
}

fn ecra5(s: &RepositorySettings, templates: Vec<CreationTemplate>, rules: &[&str]) -> Verdict {
    let mut r = registry();
    r.creation_templates = Fact::Known(templates);
    r.pull_through_rules = Fact::Known(rules.iter().map(|p| ptc_rule(p)).collect());
    let name = s
        .arn
        .rsplit_once("repository/")
        .map(|(_, n)| n)
        .unwrap_or_default();
    template::template_drift(s, &r, name)
}

fn named(name: &str) -> RepositorySettings {
    RepositorySettings {
        arn: format!("arn:aws:ecr:us-east-1:123456789012:repository/{name}"),
        ..settings()
    }
}

#[test]
fn ecra5_passes_without_an_applicable_template() {
    let v = ecra5(&named("app"), vec![], &[]);
    assert_eq!(
        (v.status, v.reason.as_str()),
        (Pass, "no repository creation template applies")
    );
    // A prefix applies to whole path segments only.
    for prefix in ["ap", "app", "other"] {
        let mut s = named("app");
        s.lifecycle_policy_text = Fact::Known(None);
        let v = ecra5(&s, vec![matching_template(prefix, &["REPLICATION"])], &[]);
        assert_eq!(v.status, Pass, "{prefix}: {}", v.reason);
    }
}

#[test]
fn ecra5_passes_a_repository_with_the_templates_settings_compared_as_json() {
    let v = ecra5(
        &named("team/app"),
        vec![matching_template("team", &["REPLICATION"])],
        &[],
    );
    assert_eq!(v.status, Pass, "{}", v.reason);
    assert_eq!(v.reason, "matches repository creation template team");
}

#[test]
fn ecra5_fails_naming_every_differing_setting() {
    let mut s = named("team/app");
    s.tag_mutability = Fact::Known(TagMutability {
        mode: "MUTABLE".into(),
        exclusion_filters: vec![],
    });
    s.lifecycle_policy_text = Fact::Known(None);
    s.encryption = Fact::Known(Encryption {
        encryption_type: "AES256".into(),
        kms_key: None,
        key_manager: None,
    });
    s.policy = Fact::Known(Some(r#"{"Version":"2012-10-17","Statement":[]}"#.into()));
    let v = ecra5(
        &s,
        vec![matching_template("team", &["PULL_THROUGH_CACHE"])],
        &[],
    );
    assert_eq!(v.status, Fail);
    for part in [
        "differs from repository creation template team: ",
        "tag mutability is MUTABLE, the template's IMMUTABLE",
        "encryption is AES256, the template's KMS",
        "lifecycle policy is missing, the template sets one",
        "repository policy is set, the template sets none",
    ] {
        assert!(v.reason.contains(part), "{part} not in {}", v.reason);
    }
}

#[test]
fn ecra5_compares_exclusion_filters_as_sets_and_the_named_key() {
    let immutable = |filters: &[&str]| TagMutability {
        mode: "IMMUTABLE_WITH_EXCLUSION".into(),
        exclusion_filters: filters.iter().map(|f| (*f).to_owned()).collect(),
    };
    let wanted = immutable(&["latest", "dev-*"]);
    assert_eq!(
        template::mutability_difference(&immutable(&["dev-*", "latest"]), Some(&wanted)),
        None
    );
    assert_eq!(
        template::mutability_difference(&immutable(&["latest"]), Some(&wanted)).as_deref(),
        Some("tag mutability exclusion filters are [latest], the template's [dev-*, latest]")
    );
    // A template without a mutability means ECR's default, MUTABLE.
    assert!(template::mutability_difference(&immutable(&[]), None).is_some());
    let kms = |key: Option<&str>| Encryption {
        encryption_type: "KMS".into(),
        kms_key: key.map(str::to_owned),
        key_manager: None,
    };
    let names_key = crate::facts::TemplateSettings {
        encryption_type: Some("KMS".into()),
        kms_key: Some(KEY.into()),
        ..Default::default()
    };
    assert_eq!(
        template::encryption_difference(&kms(Some(KEY)), &names_key),
        None
    );
    let other = "arn:aws:kms:us-east-1:123456789012:key/k2";
    assert_eq!(
        template::encryption_difference(&kms(Some(other)), &names_key),
        Some(format!(
            "encryption KMS key is {other}, the template's {KEY}"
        ))
    );
    // KMS without a key in the template: the AWS-managed key, whatever ARN ECR reports.
    let managed = crate::facts::TemplateSettings {
        encryption_type: Some("KMS".into()),
        ..Default::default()
    };
    assert_eq!(
        template::encryption_difference(&kms(Some(other)), &managed),
        None
    );
    // No encryption in the template: ECR's default, AES256.
    assert!(
        template::encryption_difference(&kms(None), &crate::facts::TemplateSettings::default())
            .is_some()
    );
}

#[test]
fn ecra5_policies_compare_as_normalised_json() {
    let same = [
        (r#"{"a":1,"b":[1,2]}"#, r#"{ "b": [2, 1], "a": 1 }"#),
        (
            r#"{"Statement":[{"Effect":"Allow","Action":"ecr:BatchGetImage"}]}"#,
            r#"{"Statement":{"Action":["ecr:BatchGetImage"],"Effect":"Allow"}}"#,
        ),
        ("not json ", "not json"),
    ];
    for (a, b) in same {
        assert!(template::same_document(a, b), "{a} vs {b}");
    }
    let different = [
        (r#"{"a":1}"#, r#"{"a":"1"}"#),
        (r#"{"a":[1,2]}"#, r#"{"a":[1,2,3]}"#),
        (r#"{"a":1}"#, "{\"a\":1"),
    ];
    for (a, b) in different {
        assert!(!template::same_document(a, b), "{a} vs {b}");
    }
}

#[test]
fn ecra5_picks_the_longest_prefix_for_the_known_creator_else_root() {
    let templates = vec![
        template("ROOT", &["PULL_THROUGH_CACHE", "REPLICATION"]),
        template("hub", &["REPLICATION"]),
        template("hub/library", &["PULL_THROUGH_CACHE"]),
        template("team", &["CREATE_ON_PUSH"]),
    ];
    let prefix = |name: &str, creator: Option<&str>| {
        template::applicable_template(&templates, name, creator).map(|t| t.prefix.clone())
    };
    assert_eq!(
        prefix("hub/library/nginx", Some("PULL_THROUGH_CACHE")).as_deref(),
        Some("hub/library")
    );
    assert_eq!(
        prefix("hub/other", Some("PULL_THROUGH_CACHE")).as_deref(),
        Some("ROOT")
    );
    assert_eq!(prefix("hub/other", None).as_deref(), Some("hub"));
    assert_eq!(
        prefix("team/app", Some("PULL_THROUGH_CACHE")).as_deref(),
        Some("ROOT")
    );
    assert_eq!(prefix("team/app", None).as_deref(), Some("team"));
    assert_eq!(prefix("teamx/app", Some("CREATE_ON_PUSH")), None);
    // A repository a pull-through cache rule owns is judged against the PULL_THROUGH_CACHE
    // template, and the reason says so.
    let mut s = named("hub/other/nginx");
    s.lifecycle_policy_text = Fact::Known(None);
    let v = ecra5(
        &s,
        vec![
            matching_template("hub", &["REPLICATION"]),
            matching_template("ROOT", &["PULL_THROUGH_CACHE"]),
        ],
        &["hub"],
    );
    assert_eq!(v.status, Fail);
    assert!(v.reason.starts_with("differs from repository creation template ROOT (for PULL_THROUGH_CACHE): lifecycle policy is missing"), "{}", v.reason);
}

#[test]
fn ecra5_is_unknown_when_templates_or_a_setting_cannot_be_read() {
    let mut r = registry();
    r.creation_templates = Fact::Unknown("AccessDeniedException: no".into());
    let v = template::template_drift(&named("app"), &r, "app");
    assert_eq!(v.status, Unknown);
    assert!(
        v.reason
            .contains("repository creation templates: AccessDeniedException")
    );
    let mut s = named("team/app");
    s.policy = Fact::Unknown("GetRepositoryPolicy: AccessDeniedException: no".into());
    let v = ecra5(&s, vec![matching_template("team", &["REPLICATION"])], &[]);
    assert_eq!(v.status, Unknown, "{}", v.reason);
    assert!(
        v.reason.contains("repository policy: GetRepositoryPolicy"),
        "{}",
        v.reason
    );
    // A known difference still fails, and the unread setting is named.
    s.lifecycle_policy_text = Fact::Known(None);
    let v = ecra5(&s, vec![matching_template("team", &["REPLICATION"])], &[]);
    assert_eq!(v.status, Fail, "{}", v.reason);
    assert!(
        v.reason.contains("not read: repository policy"),
        "{}",
        v.reason
    );
}

fn tag_keys(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

#[test]
fn ecr4_without_required_keys_needs_one_non_system_tag() {
    let none = public::RequiredTagKeys::default();
    let judge =
        |keys: &[&str]| public::public_repository_tagged(&Fact::Known(tag_keys(keys)), &none);
    assert_eq!(judge(&[]).status, Fail);
    let v = judge(&["aws:cloudformation:stack-name"]);
    assert_eq!(v.status, Fail, "system tags do not count: {}", v.reason);
    assert_eq!(judge(&["team"]).status, Pass);
    let v =
        public::public_repository_tagged(&Fact::Unknown("AccessDeniedException: no".into()), &none);
    assert_eq!(v.status, Unknown);
}

#[test]
fn ecr4_with_required_keys_needs_each_of_them_case_sensitive() {
    let required =
        public::RequiredTagKeys::new(&tag_keys(&["team", " cost-center "])).expect("valid");
    let judge =
        |keys: &[&str]| public::public_repository_tagged(&Fact::Known(tag_keys(keys)), &required);
    assert_eq!(judge(&["team", "cost-center", "other"]).status, Pass);
    let v = judge(&["Team", "cost-center"]);
    assert_eq!(v.status, Fail);
    assert_eq!(
        v.reason,
        "missing required tag key(s) team (required: team, cost-center)"
    );
    assert_eq!(judge(&["other"]).status, Fail);
}

#[test]
fn ecr4_required_tag_keys_are_validated_as_security_hub_does() {
    use public::TagKeysError::*;
    let check = |keys: &[&str]| public::RequiredTagKeys::new(&tag_keys(keys)).err();
    assert_eq!(check(&[]), None);
    assert_eq!(check(&["a", "b", "c", "d", "e", "f"]), None);
    assert_eq!(check(&["team name", "k8s.io/app", "a=b+c-d@e:f_g"]), None);
    assert_eq!(
        check(&["a", "b", "c", "d", "e", "f", "g"]),
        Some(TooMany(7))
    );
    assert_eq!(check(&[" "]), Some(Empty));
    assert_eq!(check(&["aws:team"]), Some(System("aws:team".into())));
    assert_eq!(check(&["team!"]), Some(Character("team!".into())));
    assert_eq!(check(&["team", "team"]), Some(Duplicate("team".into())));
    let long = "k".repeat(129);
    assert_eq!(check(&[&long]), Some(TooLong(long.clone())));
    assert_eq!(check(&[&long[1..]]), None);
}

#[test]
fn a_public_repository_is_judged_on_ecr4_only() {
    let facts = RepositoryFacts {
        observed_at: Utc::now(),
        state: RepositoryState::Public(crate::facts::PublicRepositorySettings {
            arn: "arn:aws:ecr-public::123456789012:repository/tools".into(),
            tag_keys: Fact::Known(vec![]),
        }),
    };
    let v = repository_controls(&facts, &registry(), &ControlPolicy::default()).expect("present");
    assert_eq!(v.keys().copied().collect::<Vec<_>>(), [ControlId::Ecr4]);
    assert_eq!(v[&ControlId::Ecr4].status, Fail);
}
