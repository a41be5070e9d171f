//! Pure evaluation: repository facts → control verdicts, image facts → a digest's posture.
//!
//! Every verdict carries a reason a person can act on. A fact that could not be read yields
//! `UNKNOWN` with the reason, never `PASS` (fail closed). Enum values this version does not
//! know are reported verbatim as `UNKNOWN`, not guessed at.

pub mod artifact;
pub mod signature;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

use crate::domain::{ControlId, Verdict};
use crate::enrich::{
    Encryption, Fact, RepositoryFacts, RepositorySettings, RepositoryState, ScanningConfiguration,
    TagMutability,
};

/// Operator choices that change how controls are judged.
#[derive(Debug, Clone, Default)]
pub struct ControlPolicy {
    /// Security Hub's optional ECR.5 parameter: when non-empty, only these KMS key ARNs pass.
    pub kms_key_allow_list: Vec<String>,
}

/// The verdict of every control for one repository; `None` when the repository is gone.
pub fn repository_controls(
    facts: &RepositoryFacts,
    policy: &ControlPolicy,
) -> Option<BTreeMap<ControlId, Verdict>> {
    match &facts.state {
        RepositoryState::Absent => None,
        RepositoryState::Unreadable { reason } => Some(
            ControlId::ALL
                .into_iter()
                .map(|c| {
                    (
                        c,
                        Verdict::unknown(format!("repository could not be read: {reason}")),
                    )
                })
                .collect(),
        ),
        RepositoryState::Present(settings) => Some(present_controls(settings, policy)),
    }
}

fn present_controls(
    settings: &RepositorySettings,
    policy: &ControlPolicy,
) -> BTreeMap<ControlId, Verdict> {
    BTreeMap::from([
        (
            ControlId::Ecr1,
            with_fact(&settings.scanning, ecr1_scanning),
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

fn with_fact<T>(fact: &Fact<T>, judge: impl FnOnce(&T) -> Verdict) -> Verdict {
    match fact {
        Fact::Known(value) => judge(value),
        Fact::Unknown(reason) => Verdict::unknown(reason.clone()),
    }
}

fn ecr1_scanning(scanning: &ScanningConfiguration) -> Verdict {
    let source = if scanning.applied_filters.is_empty() {
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
pub fn image_settings(facts: &RepositoryFacts, tag: Option<&str>) -> ImageSettings {
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
