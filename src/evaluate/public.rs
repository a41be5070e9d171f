//! ECR.4 (Security Hub): ECR Public repositories should be tagged.
//!
//! The verdict over a public repository's tags, and the control's `requiredTagKeys` parameter
//! validated as Security Hub validates it (docs/CONTROLS.md, "ECR.4"). Reading the public
//! repositories is not part of this module.

use std::fmt;

use crate::domain::Verdict;
use crate::facts::Fact;

/// Security Hub's limit on `requiredTagKeys`.
const MAX_REQUIRED_KEYS: usize = 6;
/// AWS's limit on a tag key's length, in characters.
const MAX_KEY_CHARS: usize = 128;
/// System tags, which AWS applies itself: ignored by the control and refused as a parameter.
const SYSTEM_PREFIX: &str = "aws:";

/// The `requiredTagKeys` parameter of ECR.4: up to six tag keys, case-sensitive. Empty means
/// "any one non-system tag".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequiredTagKeys(Vec<String>);

/// Why a `requiredTagKeys` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagKeysError {
    #[error("at most {MAX_REQUIRED_KEYS} required tag keys, got {0}")]
    TooMany(usize),
    #[error("a required tag key is empty")]
    Empty,
    #[error("required tag key {0:?} is longer than {MAX_KEY_CHARS} characters")]
    TooLong(String),
    #[error("required tag key {0:?} starts with aws:, which is reserved for system tags")]
    System(String),
    #[error(
        "required tag key {0:?} has a character tag keys cannot have (letters, digits, spaces and _ . : / = + - @)"
    )]
    Character(String),
    #[error("required tag key {0:?} is given twice")]
    Duplicate(String),
}

impl RequiredTagKeys {
    /// The keys as configured (surrounding blanks trimmed), checked against AWS's tag key rules
    /// and Security Hub's limit of six.
    pub fn new(keys: &[String]) -> Result<Self, TagKeysError> {
        if keys.len() > MAX_REQUIRED_KEYS {
            return Err(TagKeysError::TooMany(keys.len()));
        }
        let mut checked: Vec<String> = Vec::with_capacity(keys.len());
        for key in keys.iter().map(|k| k.trim()) {
            check_key(key)?;
            if checked.iter().any(|k| k == key) {
                return Err(TagKeysError::Duplicate(key.to_owned()));
            }
            checked.push(key.to_owned());
        }
        Ok(Self(checked))
    }

    pub fn keys(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for RequiredTagKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

fn check_key(key: &str) -> Result<(), TagKeysError> {
    let allowed = |c: char| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c);
    if key.is_empty() {
        Err(TagKeysError::Empty)
    } else if key.chars().count() > MAX_KEY_CHARS {
        Err(TagKeysError::TooLong(key.to_owned()))
    } else if key.starts_with(SYSTEM_PREFIX) {
        Err(TagKeysError::System(key.to_owned()))
    } else if !key.chars().all(allowed) {
        Err(TagKeysError::Character(key.to_owned()))
    } else {
        Ok(())
    }
}

/// ECR.4 over a public repository's tag keys (`ListTagsForResource`): without required keys,
/// any one non-system tag passes; with them, every required key must be present (exact,
/// case-sensitive). System tags (`aws:…`) never count.
pub fn public_repository_tagged(
    tag_keys: &Fact<Vec<String>>,
    required: &RequiredTagKeys,
) -> Verdict {
    let keys: Vec<&str> = match tag_keys {
        Fact::Known(keys) => keys
            .iter()
            .map(String::as_str)
            .filter(|k| !k.starts_with(SYSTEM_PREFIX))
            .collect(),
        Fact::Unknown(reason) => return Verdict::unknown(format!("tags: {reason}")),
    };
    if required.keys().is_empty() {
        return if keys.is_empty() {
            Verdict::fail("the public repository has no tags (system tags aws:… do not count)")
        } else {
            Verdict::pass(format!("tagged ({})", keys.join(", ")))
        };
    }
    let missing: Vec<&str> = required
        .keys()
        .iter()
        .map(String::as_str)
        .filter(|wanted| !keys.contains(wanted))
        .collect();
    if missing.is_empty() {
        Verdict::pass(format!("has every required tag key ({required})"))
    } else {
        Verdict::fail(format!(
            "missing required tag key(s) {} (required: {required})",
            missing.join(", ")
        ))
    }
}
