//! ECRA.5: drift of a repository from the repository creation template that applies to it.
//!
//! A template says which settings ECR gives a repository it creates (docs/CONTROLS.md,
//! "ECRA.5"); a repository changed by hand afterwards no longer has them. The comparison is
//! pure: the repository's settings as read, against the template as
//! `DescribeRepositoryCreationTemplates` answers it.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{ROOT_PREFIX, bare_prefix, pull_through_rule_for};
use crate::domain::Verdict;
use crate::facts::{
    CreationTemplate, Encryption, Fact, RegistryFacts, RepositorySettings, TagMutability,
    TemplateSettings,
};

/// `appliedFor` of a repository a pull-through cache rule created.
const PULL_THROUGH_CACHE: &str = "PULL_THROUGH_CACHE";
/// ECR's defaults for what a template leaves out.
const DEFAULT_MUTABILITY: &str = "MUTABLE";
const DEFAULT_ENCRYPTION: &str = "AES256";

/// The `appliedFor` that created the repository, when it can be told: a repository whose name
/// a pull-through cache rule owns was created by a pull through it. Other creators (push,
/// replication, `CreateRepository`) leave no trace in the settings, so they are not known.
fn creator(registry: &RegistryFacts, repository: &str) -> Option<&'static str> {
    let rules = registry.pull_through_rules.known()?;
    pull_through_rule_for(rules, repository).map(|_| PULL_THROUGH_CACHE)
}

/// The template that applies to `repository`: among those applied for `creator` (any, when
/// the creator is not known), the one whose prefix is the longest whole-segment prefix of the
/// name (`prod` applies to `prod/api`, not to `prod` or `production/api`), else `ROOT`.
pub(crate) fn applicable_template<'t>(
    templates: &'t [CreationTemplate],
    repository: &str,
    creator: Option<&str>,
) -> Option<&'t CreationTemplate> {
    templates
        .iter()
        .filter(|t| creator.is_none_or(|c| t.applied_for.iter().any(|a| a == c)))
        .filter_map(|t| {
            if t.prefix == ROOT_PREFIX {
                return Some((0, t));
            }
            let prefix = bare_prefix(&t.prefix);
            repository
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
                .then_some((prefix.len() + 1, t))
        })
        .max_by_key(|(specificity, _)| *specificity)
        .map(|(_, t)| t)
}

/// ECRA.5: does the repository still have the settings of the template that applies to it?
/// No applicable template passes (nothing to drift from); a difference fails naming every
/// differing setting; a setting that could not be read, with no difference found, is
/// `UNKNOWN`.
pub(crate) fn template_drift(
    settings: &RepositorySettings,
    registry: &RegistryFacts,
    repository: &str,
) -> Verdict {
    let templates = match &registry.creation_templates {
        Fact::Known(templates) => templates,
        Fact::Unknown(reason) => {
            return Verdict::unknown(format!("repository creation templates: {reason}"));
        }
    };
    let creator = creator(registry, repository);
    let Some(template) = applicable_template(templates, repository, creator) else {
        return Verdict::pass("no repository creation template applies");
    };
    let which = match creator {
        Some(creator) => format!(
            "repository creation template {} (for {creator})",
            template.prefix
        ),
        None => format!("repository creation template {}", template.prefix),
    };
    let (differing, unread) = differences(settings, &template.settings);
    if !differing.is_empty() {
        let mut reason = format!("differs from {which}: {}", differing.join("; "));
        if !unread.is_empty() {
            reason.push_str(&format!("; not read: {}", unread.join("; ")));
        }
        Verdict::fail(reason)
    } else if !unread.is_empty() {
        Verdict::unknown(format!("{which}: {}", unread.join("; ")))
    } else {
        Verdict::pass(format!("matches {which}"))
    }
}

/// The settings that differ from the template, and those that could not be read.
fn differences(
    settings: &RepositorySettings,
    template: &TemplateSettings,
) -> (Vec<String>, Vec<String>) {
    let mut differing = Vec::new();
    let mut unread = Vec::new();
    let mut judge = |name: &str, fact: Fact<Option<String>>| match fact {
        Fact::Known(Some(difference)) => differing.push(difference),
        Fact::Known(None) => {}
        Fact::Unknown(reason) => unread.push(format!("{name}: {reason}")),
    };
    judge(
        "tag mutability",
        settings
            .tag_mutability
            .as_ref()
            .map(|m| mutability_difference(m, template.tag_mutability.as_ref())),
    );
    judge(
        "encryption",
        settings
            .encryption
            .as_ref()
            .map(|e| encryption_difference(e, template)),
    );
    judge(
        "lifecycle policy",
        settings.lifecycle_policy_text.as_ref().map(|p| {
            document_difference(
                "lifecycle policy",
                p.as_deref(),
                template.lifecycle_policy.as_deref(),
            )
        }),
    );
    judge(
        "repository policy",
        settings.policy.as_ref().map(|p| {
            document_difference(
                "repository policy",
                p.as_deref(),
                template.repository_policy.as_deref(),
            )
        }),
    );
    (differing, unread)
}

/// Tag mutability and its exclusion filters (compared as sets) against the template's.
pub(crate) fn mutability_difference(
    repository: &TagMutability,
    template: Option<&TagMutability>,
) -> Option<String> {
    let wanted_mode = template.map_or(DEFAULT_MUTABILITY, |t| t.mode.as_str());
    if repository.mode != wanted_mode {
        return Some(format!(
            "tag mutability is {}, the template's {wanted_mode}",
            repository.mode
        ));
    }
    let filters = |f: &[String]| f.iter().cloned().collect::<BTreeSet<String>>();
    let have = filters(&repository.exclusion_filters);
    let wanted = template
        .map(|t| filters(&t.exclusion_filters))
        .unwrap_or_default();
    (have != wanted).then(|| {
        format!(
            "tag mutability exclusion filters are [{}], the template's [{}]",
            have.into_iter().collect::<Vec<_>>().join(", "),
            wanted.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

/// Encryption type, and the KMS key when the template names one (a template without a key
/// means the AWS-managed key, whatever ARN the repository reports for it).
pub(crate) fn encryption_difference(
    repository: &Encryption,
    template: &TemplateSettings,
) -> Option<String> {
    let wanted = template
        .encryption_type
        .as_deref()
        .unwrap_or(DEFAULT_ENCRYPTION);
    if repository.encryption_type != wanted {
        return Some(format!(
            "encryption is {}, the template's {wanted}",
            repository.encryption_type
        ));
    }
    let wanted_key = template.kms_key.as_deref()?;
    (repository.kms_key.as_deref() != Some(wanted_key)).then(|| {
        format!(
            "encryption KMS key is {}, the template's {wanted_key}",
            repository
                .kms_key
                .as_deref()
                .unwrap_or("the AWS-managed key")
        )
    })
}

/// A policy document (lifecycle or repository policy) against the template's.
pub(crate) fn document_difference(
    name: &str,
    repository: Option<&str>,
    template: Option<&str>,
) -> Option<String> {
    match (repository, template) {
        (None, None) => None,
        (None, Some(_)) => Some(format!("{name} is missing, the template sets one")),
        (Some(_), None) => Some(format!("{name} is set, the template sets none")),
        (Some(have), Some(wanted)) => {
            (!same_document(have, wanted)).then(|| format!("{name} differs from the template's"))
        }
    }
}

/// Whether two policy texts say the same, compared as JSON values after [`normalise`];
/// a text that is not JSON is compared as text with the surrounding blanks trimmed.
pub(crate) fn same_document(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(a), Ok(b)) => normalise(a) == normalise(b),
        _ => a.trim() == b.trim(),
    }
}

/// A policy value with the differences that do not change its meaning taken out: key order
/// and layout (by parsing), the order of array elements (IAM statements, actions and
/// principals, and lifecycle rules, which `rulePriority` orders, are sets), and a
/// one-element array against its element (IAM accepts `"Action": "ecr:X"` for
/// `["ecr:X"]`).
pub(crate) fn normalise(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (key, normalise(value)))
                .collect(),
        ),
        Value::Array(items) => {
            let mut items: Vec<Value> = items.into_iter().map(normalise).collect();
            if items.len() == 1 {
                return items.remove(0);
            }
            items.sort_by_cached_key(Value::to_string);
            Value::Array(items)
        }
        other => other,
    }
}
