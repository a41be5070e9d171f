//! Pure evaluation: repository facts → control verdicts, image facts → a digest's posture.
//!
//! Every verdict carries a reason a person can act on. A fact that could not be read yields
//! `UNKNOWN` with the reason, never `PASS` (fail closed). Enum values this version does not
//! know are reported verbatim as `UNKNOWN`, not guessed at.

pub mod exception;
pub mod policy;
pub mod public;
pub mod signature;
pub mod template;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

use crate::domain::{ControlId, Verdict};
use crate::facts::{
    CreationTemplate, Encryption, Fact, PullThroughRule, RegistryFacts, RegistryScanning,
    ReportedScanning, RepositoryFacts, RepositorySettings, RepositoryState, ScanningConfiguration,
    SigningRuleFacts, TagMutability,
};
use crate::telemetry::ScanningDisagreement;

/// Operator choices that change how controls are judged.
#[derive(Debug, Clone, Default)]
pub struct ControlPolicy {
    /// Security Hub's optional ECR.5 parameter: when non-empty, only these KMS key ARNs pass.
    pub kms_key_allow_list: Vec<String>,
    /// Security Hub's ECR.4 parameter `requiredTagKeys` (validated; ECR.4 is not reported yet,
    /// docs/CONTROLS.md).
    pub required_tag_keys: public::RequiredTagKeys,
}

/// The verdict of every control for one repository; `None` when the repository is gone.
pub fn repository_controls(
    facts: &RepositoryFacts,
    registry: &RegistryFacts,
    policy: &ControlPolicy,
) -> Option<BTreeMap<ControlId, Verdict>> {
    match &facts.state {
        RepositoryState::Absent => None,
        RepositoryState::Unreadable { reason } => Some(
            ControlId::ALL
                .into_iter()
                // ECR.4 is a control of public repositories, which are never `Unreadable`.
                .filter(|c| *c != ControlId::Ecr4)
                .map(|c| {
                    (
                        c,
                        Verdict::unknown(format!("repository could not be read: {reason}")),
                    )
                })
                .collect(),
        ),
        RepositoryState::Present(settings) => Some(present_controls(settings, registry, policy)),
        RepositoryState::Public(public) => Some(BTreeMap::from([(
            ControlId::Ecr4,
            public::public_repository_tagged(&public.tag_keys, &policy.required_tag_keys),
        )])),
    }
}

/// A repository's name from its ARN (`arn:aws:ecr:REGION:ACCOUNT:repository/NAME`).
fn arn_part(arn: &str, index: usize) -> &str {
    arn.split(':').nth(index).unwrap_or_default()
}

fn present_controls(
    settings: &RepositorySettings,
    registry: &RegistryFacts,
    policy: &ControlPolicy,
) -> BTreeMap<ControlId, Verdict> {
    let name = arn_part(&settings.arn, 5)
        .strip_prefix("repository/")
        .unwrap_or_default();
    let scanning = repository_scanning(settings, registry, name);
    let repository_policy = settings.policy.as_ref().map(|p| p.as_deref());
    BTreeMap::from([
        (ControlId::Ecr1, ecr1_scanning(&scanning)),
        (
            ControlId::PublicPolicy,
            with_fact(&repository_policy, |p| policy::public_access(*p)),
        ),
        (
            ControlId::CrossAccountWithoutOrg,
            with_fact(&repository_policy, |p| {
                policy::cross_account_access(*p, arn_part(&settings.arn, 4))
            }),
        ),
        (
            ControlId::SigningCoverage,
            with_fact(&registry.signing, |rules| signing_coverage(rules, name)),
        ),
        (
            ControlId::PullThroughTemplate,
            pull_through_template(
                &registry.pull_through_rules,
                &registry.creation_templates,
                name,
            ),
        ),
        (
            ControlId::TemplateDrift,
            template::template_drift(settings, registry, name),
        ),
        (
            ControlId::Ecr2,
            with_fact(&settings.tag_mutability, ecr2_tag_immutability),
        ),
        (
            ControlId::Ecr3,
            with_fact(&settings.lifecycle_policy, ecr3_lifecycle),
        ),
        (
            ControlId::Ecr5,
            with_fact(&settings.encryption, |e| ecr5_encryption(e, policy)),
        ),
    ])
}

/// A repository's scanning as ECR.1 judges it: AWS's own answer
/// (`BatchGetRepositoryScanningConfiguration`) when it was read, with the registry rules
/// applied here as the explanation and the cross-check; the rules alone when AWS's answer is
/// missing. Where the two disagree AWS wins, and the disagreement is named (a bug to report in
/// [`effective_scanning`], not a verdict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryScanning {
    pub configuration: Fact<ScanningConfiguration>,
    /// AWS's answer could not be read; `configuration` comes from the registry rules.
    pub reported_unread: Option<String>,
    pub disagreements: Vec<ScanningDisagreement>,
    /// The registry rules' answer, when it differs from AWS's.
    pub computed_instead: Option<ScanningConfiguration>,
}

pub fn repository_scanning(
    settings: &RepositorySettings,
    registry: &RegistryFacts,
    name: &str,
) -> RepositoryScanning {
    let computed = effective_scanning(&registry.scanning, name, settings.scan_on_push);
    match &settings.reported_scanning {
        Fact::Unknown(reason) => RepositoryScanning {
            configuration: computed,
            reported_unread: Some(reason.clone()),
            disagreements: Vec::new(),
            computed_instead: None,
        },
        Fact::Known(reported) => {
            let disagreements = computed
                .known()
                .map(|own| scanning_disagreements(reported, own))
                .unwrap_or_default();
            RepositoryScanning {
                configuration: Fact::Known(ScanningConfiguration {
                    scan_frequency: reported.scan_frequency.clone(),
                    scan_on_push: reported.scan_on_push,
                    applied_filters: reported.applied_filters.clone(),
                }),
                reported_unread: None,
                computed_instead: (!disagreements.is_empty())
                    .then(|| computed.known().cloned())
                    .flatten(),
                disagreements,
            }
        }
    }
}

fn scanning_disagreements(
    reported: &ReportedScanning,
    own: &ScanningConfiguration,
) -> Vec<ScanningDisagreement> {
    let mut differing = Vec::new();
    if reported.scan_frequency != own.scan_frequency {
        differing.push(ScanningDisagreement::ScanFrequency);
    }
    let sorted = |filters: &[String]| {
        let mut filters = filters.to_vec();
        filters.sort();
        filters
    };
    if sorted(&reported.applied_filters) != sorted(&own.applied_filters) {
        differing.push(ScanningDisagreement::AppliedFilters);
    }
    differing
}

/// Whether a registry scanning filter matches a repository name, as ECR documents it: a
/// filter with `*` matches when the wildcards stand for any run of characters (anchored); a
/// filter without one matches every name that contains it.
pub(crate) fn scan_filter_matches(filter: &str, repository: &str) -> bool {
    if filter.contains('*') {
        WildMatch::new(filter).matches(repository)
    } else {
        repository.contains(filter)
    }
}

/// A repository's effective scanning under the registry's configuration.
///
/// - `ENHANCED`: Inspector scans what the rules select; if both rules match, continuous scanning
///   wins; the repository's own `scanOnPush` flag has no effect; nothing matched = `MANUAL`.
/// - `BASIC` (also when the registry was never configured): a matching `SCAN_ON_PUSH` rule or
///   the repository's own `scanOnPush` flag makes it `SCAN_ON_PUSH`; otherwise `MANUAL`.
/// - A scan type this version does not know yields its name as the frequency, so ECR.1 reads
///   `UNKNOWN` rather than guessing.
pub(crate) fn effective_scanning(
    registry: &Fact<RegistryScanning>,
    repository: &str,
    scan_on_push: bool,
) -> Fact<ScanningConfiguration> {
    let scanning = match registry {
        Fact::Known(scanning) => scanning,
        Fact::Unknown(reason) => {
            return Fact::Unknown(format!("registry scanning configuration: {reason}"));
        }
    };
    let matching: Vec<(&str, Vec<String>)> = scanning
        .rules
        .iter()
        .filter_map(|rule| {
            let filters: Vec<String> = rule
                .filters
                .iter()
                .filter(|f| scan_filter_matches(f, repository))
                .cloned()
                .collect();
            (!filters.is_empty()).then_some((rule.frequency.as_str(), filters))
        })
        .collect();
    let matched = |frequency: &str| {
        matching
            .iter()
            .find(|(f, _)| *f == frequency)
            .map(|(_, filters)| filters.clone())
    };
    let (frequency, applied_filters) = match scanning.scan_type.as_str() {
        "ENHANCED" => {
            if let Some(filters) = matched("CONTINUOUS_SCAN") {
                ("CONTINUOUS_SCAN".to_owned(), filters)
            } else if let Some(filters) = matched("SCAN_ON_PUSH") {
                ("SCAN_ON_PUSH".to_owned(), filters)
            } else {
                ("MANUAL".to_owned(), Vec::new())
            }
        }
        "BASIC" => match matched("SCAN_ON_PUSH") {
            Some(filters) => ("SCAN_ON_PUSH".to_owned(), filters),
            None if scan_on_push => ("SCAN_ON_PUSH".to_owned(), Vec::new()),
            None => ("MANUAL".to_owned(), Vec::new()),
        },
        other => (format!("{other} scan type"), Vec::new()),
    };
    Fact::Known(ScanningConfiguration {
        scan_frequency: frequency,
        scan_on_push,
        applied_filters,
    })
}

/// Whether a managed-signing filter matches (`WILDCARD_MATCH`: `*` stands for any run of
/// characters; a filter without `*` names one repository exactly).
fn signing_filter_matches(filter: &str, repository: &str) -> bool {
    WildMatch::new(filter).matches(repository)
}

/// ECRA.3: is every push to the repository signed by ECR managed signing?
pub(crate) fn signing_coverage(rules: &[SigningRuleFacts], repository: &str) -> Verdict {
    let covering = rules.iter().find(|rule| {
        rule.filters.is_empty()
            || rule
                .filters
                .iter()
                .any(|f| signing_filter_matches(f, repository))
    });
    match (covering, rules.is_empty()) {
        (Some(rule), _) => Verdict::pass(format!(
            "managed signing rule with profile {} covers the repository",
            rule.profile_arn
        )),
        (None, true) => Verdict::fail("the registry has no managed signing configuration"),
        (None, false) => Verdict::fail(format!(
            "none of the {} managed signing rule(s) matches the repository",
            rules.len()
        )),
    }
}

/// The prefix keyword that stands for "every repository" in rules and templates.
pub(crate) const ROOT_PREFIX: &str = "ROOT";

/// A prefix without the `/` ECR always assumes at its end.
pub(crate) fn bare_prefix(prefix: &str) -> &str {
    prefix.trim_end_matches('/')
}

/// The pull-through cache rule that creates `repository`, if any: the rule whose prefix
/// (plus the `/` ECR assumes) starts the name, the longest when several do; a `ROOT` rule
/// (ECR to ECR) serves every name no other rule's prefix starts.
pub(crate) fn pull_through_rule_for<'r>(
    rules: &'r [PullThroughRule],
    repository: &str,
) -> Option<&'r PullThroughRule> {
    rules
        .iter()
        .filter(|rule| rule.prefix != ROOT_PREFIX)
        .filter(|rule| {
            repository
                .strip_prefix(bare_prefix(&rule.prefix))
                .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|rule| bare_prefix(&rule.prefix).len())
        .or_else(|| rules.iter().find(|rule| rule.prefix == ROOT_PREFIX))
}

/// The repository creation template that applies to what a pull-through cache rule with
/// `rule_prefix` creates: one applied for `PULL_THROUGH_CACHE` whose prefix is `ROOT`, equals
/// the rule's, or is a whole-segment prefix of it. The most specific one is named.
pub(crate) fn covering_template<'t>(
    templates: &'t [CreationTemplate],
    rule_prefix: &str,
) -> Option<&'t CreationTemplate> {
    let rule_prefix = bare_prefix(rule_prefix);
    templates
        .iter()
        .filter(|t| t.applied_for.iter().any(|a| a == "PULL_THROUGH_CACHE"))
        .filter(|t| {
            let prefix = bare_prefix(&t.prefix);
            t.prefix == ROOT_PREFIX
                || prefix == rule_prefix
                || rule_prefix
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|t| {
            if t.prefix == ROOT_PREFIX {
                0
            } else {
                bare_prefix(&t.prefix).len() + 1
            }
        })
}

/// ECRA.4: was the repository created by a pull-through cache rule that no repository
/// creation template covers (so it got ECR's defaults: mutable tags, AES256, no lifecycle
/// policy)? A repository no rule's prefix matches passes.
pub(crate) fn pull_through_template(
    rules: &Fact<Vec<PullThroughRule>>,
    templates: &Fact<Vec<CreationTemplate>>,
    repository: &str,
) -> Verdict {
    let rules = match rules {
        Fact::Known(rules) => rules,
        Fact::Unknown(reason) => {
            return Verdict::unknown(format!("pull-through cache rules: {reason}"));
        }
    };
    let Some(rule) = pull_through_rule_for(rules, repository) else {
        return Verdict::pass("not created by a pull-through cache rule");
    };
    let templates = match templates {
        Fact::Known(templates) => templates,
        Fact::Unknown(reason) => {
            return Verdict::unknown(format!(
                "pull-through cache rule {} (upstream {}): repository creation templates: {reason}",
                rule.prefix, rule.upstream_url
            ));
        }
    };
    match covering_template(templates, &rule.prefix) {
        Some(template) => Verdict::pass(format!(
            "pull-through cache rule {} (upstream {}) is covered by repository creation template {}",
            rule.prefix, rule.upstream_url, template.prefix
        )),
        None => Verdict::fail(format!(
            "pull-through cache rule {} (upstream {}) has no repository creation template applied for \
             PULL_THROUGH_CACHE covering its prefix: repositories it creates get ECR's defaults \
             (mutable tags, AES256, no lifecycle policy)",
            rule.prefix, rule.upstream_url
        )),
    }
}

fn with_fact<T>(fact: &Fact<T>, judge: impl FnOnce(&T) -> Verdict) -> Verdict {
    match fact {
        Fact::Known(value) => judge(value),
        Fact::Unknown(reason) => Verdict::unknown(reason.clone()),
    }
}

fn ecr1_scanning(scanning: &RepositoryScanning) -> Verdict {
    let verdict = with_fact(&scanning.configuration, |configuration| {
        ecr1_frequency(configuration, scanning.reported_unread.is_none())
    });
    let note = match (&scanning.reported_unread, &scanning.computed_instead) {
        (Some(reason), _) => format!(
            "; judged from the registry rules: AWS's own answer could not be read ({reason})"
        ),
        (None, Some(own)) => format!(
            "; the registry rules as applied here give {} ({}): AWS's answer wins and the \
             disagreement is counted",
            own.scan_frequency,
            rule_source(own)
        ),
        (None, None) => String::new(),
    };
    Verdict {
        reason: format!("{}{note}", verdict.reason),
        ..verdict
    }
}

/// Which setting made the frequency what it is, as the registry rules explain it.
fn rule_source(scanning: &ScanningConfiguration) -> String {
    if scanning.applied_filters.is_empty() {
        if scanning.scan_on_push {
            "the repository's scanOnPush setting".to_owned()
        } else {
            "no registry scanning rule matches".to_owned()
        }
    } else {
        format!(
            "registry rule filter {}",
            scanning.applied_filters.join(", ")
        )
    }
}

fn ecr1_frequency(scanning: &ScanningConfiguration, from_aws: bool) -> Verdict {
    let source = if from_aws {
        format!("reported by AWS; {}", rule_source(scanning))
    } else {
        rule_source(scanning)
    };
    match scanning.scan_frequency.as_str() {
        "SCAN_ON_PUSH" | "CONTINUOUS_SCAN" => Verdict::pass(format!(
            "effective scan frequency is {} ({source})",
            scanning.scan_frequency
        )),
        "MANUAL" => Verdict::fail(format!(
            "effective scan frequency is MANUAL ({source}): images are scanned only on request"
        )),
        other => Verdict::unknown(format!("unrecognised scan frequency {other:?}")),
    }
}

fn ecr2_tag_immutability(mutability: &TagMutability) -> Verdict {
    let filters = mutability.exclusion_filters.join(", ");
    match mutability.mode.as_str() {
        "IMMUTABLE" => Verdict::pass("tag immutability is IMMUTABLE"),
        "MUTABLE" => Verdict::fail("tag immutability is MUTABLE: any tag can be overwritten"),
        "IMMUTABLE_WITH_EXCLUSION" => Verdict::fail(format!(
            "tag immutability is IMMUTABLE_WITH_EXCLUSION: tags matching [{filters}] can be overwritten"
        )),
        "MUTABLE_WITH_EXCLUSION" => Verdict::fail(format!(
            "tag immutability is MUTABLE_WITH_EXCLUSION: only tags matching [{filters}] are immutable"
        )),
        other => Verdict::unknown(format!("unrecognised tag mutability {other:?}")),
    }
}

fn ecr3_lifecycle(has_policy: &bool) -> Verdict {
    if *has_policy {
        Verdict::pass("a lifecycle policy is configured")
    } else {
        Verdict::fail("no lifecycle policy is configured")
    }
}

fn ecr5_encryption(encryption: &Encryption, policy: &ControlPolicy) -> Verdict {
    match encryption.encryption_type.as_str() {
        "AES256" => {
            Verdict::fail("encrypted with AES256 (S3-managed keys), not a customer-managed KMS key")
        }
        kind @ ("KMS" | "KMS_DSSE") => {
            let key = encryption.kms_key.as_deref().unwrap_or("aws/ecr");
            match &encryption.key_manager {
                Some(Fact::Known(manager)) if manager == "CUSTOMER" => {
                    if policy.kms_key_allow_list.is_empty()
                        || policy.kms_key_allow_list.iter().any(|k| k == key)
                    {
                        Verdict::pass(format!("{kind} with customer-managed key {key}"))
                    } else {
                        Verdict::fail(format!(
                            "{kind} with customer-managed key {key}, which is not in the allowed key list"
                        ))
                    }
                }
                Some(Fact::Known(manager)) if manager == "AWS" => Verdict::fail(format!(
                    "{kind} with the AWS-managed key {key}, not a customer-managed key"
                )),
                Some(Fact::Known(other)) => Verdict::unknown(format!(
                    "{kind} key {key} has unrecognised KeyManager {other:?}"
                )),
                Some(Fact::Unknown(reason)) => {
                    Verdict::unknown(format!("{kind} key {key}: ownership unknown: {reason}"))
                }
                None => Verdict::unknown(format!("{kind} key {key}: ownership not read")),
            }
        }
        other => Verdict::unknown(format!("unrecognised encryption type {other:?}")),
    }
}

/// Where an image's bytes live and how, as the repository was when the image was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSettings {
    /// The repository's tag mutability mode; `None` when it could not be read.
    pub tag_immutability: Option<String>,
    /// Whether the tag the image was pushed with could not be overwritten afterwards.
    pub tag_protected: Option<bool>,
    pub encryption_type: Option<String>,
    pub kms_key: Option<String>,
    pub customer_managed_key: Option<bool>,
}

/// The repository settings that apply to an image pushed now with `tag`.
pub(crate) fn image_settings(facts: &RepositoryFacts, tag: Option<&str>) -> ImageSettings {
    let RepositoryState::Present(settings) = &facts.state else {
        return ImageSettings {
            tag_immutability: None,
            tag_protected: None,
            encryption_type: None,
            kms_key: None,
            customer_managed_key: None,
        };
    };
    let mutability = settings.tag_mutability.known();
    let encryption = settings.encryption.known();
    ImageSettings {
        tag_immutability: mutability.map(|m| m.mode.clone()),
        tag_protected: match (mutability, tag) {
            (Some(m), Some(tag)) => tag_protected(m, tag),
            _ => None,
        },
        encryption_type: encryption.map(|e| e.encryption_type.clone()),
        kms_key: encryption.and_then(|e| e.kms_key.clone()),
        customer_managed_key: encryption.map(|e| {
            e.key_manager
                .as_ref()
                .and_then(Fact::known)
                .is_some_and(|m| m == "CUSTOMER")
        }),
    }
}

/// Whether `tag` is protected from overwrite under a mutability mode and its exclusion filters
/// (ECR's wildcard filters, where `*` matches any run of characters).
pub fn tag_protected(mutability: &TagMutability, tag: &str) -> Option<bool> {
    let excluded = || {
        mutability
            .exclusion_filters
            .iter()
            .any(|filter| WildMatch::new(filter).matches(tag))
    };
    match mutability.mode.as_str() {
        "IMMUTABLE" => Some(true),
        "MUTABLE" => Some(false),
        "IMMUTABLE_WITH_EXCLUSION" => Some(!excluded()),
        "MUTABLE_WITH_EXCLUSION" => Some(excluded()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
