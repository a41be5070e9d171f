//! Pure: exceptions (accepted risks) — validating one, matching it to a repository's control,
//! and reading the reviewed exceptions file (docs/EXCEPTIONS.md).
//!
//! An exception never changes a verdict: the evaluation's `FAIL` and its reason are kept, and
//! the views report `EXCEPTED` beside them while the exception is in force.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::domain::{AccountId, ControlId, Region};

/// The furthest an exception may expire from the moment it is added: an accepted risk is
/// reviewed at least yearly (SOC 2 reviews are annual), so a longer one is refused.
pub const MAX_EXCEPTION_DAYS: i64 = 366;

/// The longest reason or approver kept: they are shown in every view and alert.
const MAX_TEXT: usize = 1024;

/// Why an exception (or the exceptions file) was refused; each names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExceptionError {
    #[error("unknown control {0:?}: use one of {known}", known = known_controls())]
    UnknownControl(String),
    #[error(
        "invalid repository pattern {0:?}: use a repository name, where `*` stands for any run of characters (e.g. `team/*`)"
    )]
    Pattern(String),
    #[error("the approver is empty: name who accepted the risk (an IAM ARN or an e-mail address)")]
    NoApprover,
    #[error("invalid approver {0:?}: write an IAM ARN (arn:…) or an e-mail address")]
    Approver(String),
    #[error("the reason is empty: say why the risk is accepted")]
    NoReason,
    #[error("{what} is longer than {MAX_TEXT} characters")]
    TooLong { what: &'static str },
    #[error("the expiry {0} is not in the future")]
    Expired(String),
    #[error(
        "the expiry {0} is more than {MAX_EXCEPTION_DAYS} days away: exceptions are reviewed at least yearly"
    )]
    TooFar(String),
    #[error("{0:?} is not a time: write 2027-03-31 or 2027-03-31T12:00:00Z")]
    Time(String),
    #[error("invalid account {0:?}: write a 12-digit account id")]
    Account(String),
    #[error("invalid region {0:?}")]
    Region(String),
    #[error("the exceptions file is not valid JSON of the documented shape: {0}")]
    FileShape(String),
    #[error("entry {index} of the exceptions file: {error}")]
    Entry {
        index: usize,
        error: Box<ExceptionError>,
    },
    #[error("the exceptions file has the id {0:?} twice")]
    DuplicateId(String),
    #[error(
        "invalid entry id {0:?} in the exceptions file: 1 to 64 letters, digits, `.`, `_` or `-`"
    )]
    EntryId(String),
}

fn known_controls() -> String {
    ControlId::ALL
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A time as the CLI and the file take it: `2027-03-31` (00:00 UTC that day) or RFC 3339.
///
/// # Errors
/// [`ExceptionError::Time`] when it is neither.
pub fn parse_expiry(text: &str) -> Result<DateTime<Utc>, ExceptionError> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| ExceptionError::Time(text.to_owned()))
}

/// A repository name pattern: ECR's name characters, with `*` for any run of characters
/// (`/` included), anchored at both ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryPattern(String);

impl RepositoryPattern {
    /// # Errors
    /// [`ExceptionError::Pattern`] when empty, longer than a repository name, or holding a
    /// character no repository name has.
    pub fn parse(text: &str) -> Result<Self, ExceptionError> {
        let allowed = |b: u8| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'/')
        };
        let ok = (1..=256).contains(&text.len()) && text.bytes().all(|b| b == b'*' || allowed(b));
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(ExceptionError::Pattern(text.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a repository name matches.
    pub fn matches(&self, repository: &str) -> bool {
        glob_matches(&self.0, repository)
    }

    /// The pattern as SQL `LIKE … ESCAPE '\'`: `*` → `%`, and `_` (a name character, but a
    /// `LIKE` wildcard) escaped, so the database matches exactly as [`Self::matches`].
    pub fn to_like(&self) -> String {
        let mut like = String::with_capacity(self.0.len() + 4);
        for c in self.0.chars() {
            match c {
                '*' => like.push('%'),
                '_' | '%' | '\\' => {
                    like.push('\\');
                    like.push(c);
                }
                other => like.push(other),
            }
        }
        like
    }
}

/// Anchored glob matching where `*` is any run of characters (iterative, no backtracking
/// blow-up: the last `*` is the only resume point needed).
fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            resume = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star, matched)) = resume {
            pi = star + 1;
            ti = matched + 1;
            resume = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Where an exception came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionSource {
    /// `ecr-audit exception add`.
    Cli,
    /// The reviewed file `ECR_AUDIT_EXCEPTIONS_FILE`.
    File,
}

impl ExceptionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cli => "cli",
            Self::File => "file",
        }
    }
}

/// An exception asked for, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionRequest {
    pub repository: String,
    pub control: String,
    pub reason: String,
    pub approver: String,
    pub expires: String,
    pub account: Option<String>,
    pub region: Option<String>,
}

/// A validated exception, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidException {
    pub pattern: RepositoryPattern,
    pub control: ControlId,
    pub reason: String,
    pub approver: String,
    pub expires_at: DateTime<Utc>,
    pub account: Option<AccountId>,
    pub region: Option<Region>,
}

impl ValidException {
    /// Whether it covers this control of this repository (its expiry aside).
    pub fn covers(&self, account: &str, region: &str, repository: &str, control: &str) -> bool {
        self.control.as_str() == control
            && self.account.as_ref().is_none_or(|a| a.as_str() == account)
            && self.region.as_ref().is_none_or(|r| r.as_str() == region)
            && self.pattern.matches(repository)
    }
}

fn checked_text(text: &str, what: &'static str) -> Result<String, ExceptionError> {
    let text = text.trim();
    if text.chars().count() > MAX_TEXT {
        return Err(ExceptionError::TooLong { what });
    }
    Ok(text.to_owned())
}

/// An approver is whoever accepted the risk: an IAM ARN or an e-mail address.
fn checked_approver(text: &str) -> Result<String, ExceptionError> {
    let approver = checked_text(text, "the approver")?;
    if approver.is_empty() {
        return Err(ExceptionError::NoApprover);
    }
    let email = approver
        .split_once('@')
        .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'));
    let arn = approver.starts_with("arn:") && approver.split(':').count() >= 6;
    if (email || arn) && !approver.chars().any(char::is_whitespace) {
        Ok(approver)
    } else {
        Err(ExceptionError::Approver(
            approver.chars().take(80).collect(),
        ))
    }
}

impl ExceptionRequest {
    /// Checks every field; `now` is the moment it is added (the expiry must be after it and at
    /// most [`MAX_EXCEPTION_DAYS`] later).
    ///
    /// # Errors
    /// The first field that is wrong, named.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<ValidException, ExceptionError> {
        let valid = self.validate_ignoring_expiry()?;
        check_expiry(valid.expires_at, now)?;
        Ok(valid)
    }

    /// Every check but whether the expiry lies ahead (a file entry that already expired is
    /// kept, not refused).
    fn validate_ignoring_expiry(&self) -> Result<ValidException, ExceptionError> {
        let control = ControlId::from_str_opt(self.control.trim())
            .ok_or_else(|| ExceptionError::UnknownControl(self.control.clone()))?;
        let pattern = RepositoryPattern::parse(self.repository.trim())?;
        let approver = checked_approver(&self.approver)?;
        let reason = checked_text(&self.reason, "the reason")?;
        if reason.is_empty() {
            return Err(ExceptionError::NoReason);
        }
        let expires_at = parse_expiry(self.expires.trim())?;
        let account = self
            .account
            .as_deref()
            .map(|a| AccountId::parse(a).map_err(|_| ExceptionError::Account(a.to_owned())))
            .transpose()?;
        let region = self
            .region
            .as_deref()
            .map(|r| match Region::parse(r) {
                Ok(region) => Ok(region),
                Err(_) if r == crate::domain::ECR_PUBLIC_REGION => Ok(Region::ecr_public()),
                Err(_) => Err(ExceptionError::Region(r.to_owned())),
            })
            .transpose()?;
        Ok(ValidException {
            pattern,
            control,
            reason,
            approver,
            expires_at,
            account,
            region,
        })
    }
}

fn check_expiry(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), ExceptionError> {
    let shown = expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if expires_at <= now {
        return Err(ExceptionError::Expired(shown));
    }
    if expires_at > now + Duration::days(MAX_EXCEPTION_DAYS) {
        return Err(ExceptionError::TooFar(shown));
    }
    Ok(())
}

/// The reviewed exceptions file (`ECR_AUDIT_EXCEPTIONS_FILE`), JSON:
/// `{"exceptions": [{"id": "…", "repository": "…", "control": "ECR.2", "reason": "…",
/// "approver": "…", "expires": "2027-03-31", "account": "…", "region": "…"}]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptionsFile {
    exceptions: Vec<FileEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    id: String,
    repository: String,
    control: String,
    reason: String,
    approver: String,
    expires: String,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    region: Option<String>,
}

impl FileEntry {
    fn request(&self) -> ExceptionRequest {
        ExceptionRequest {
            repository: self.repository.clone(),
            control: self.control.clone(),
            reason: self.reason.clone(),
            approver: self.approver.clone(),
            expires: self.expires.clone(),
            account: self.account.clone(),
            region: self.region.clone(),
        }
    }
}

/// One exception of the file, with the id it is stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileException {
    /// `file:<entry id>@<12 hex digits of the entry's content hash>`: editing an entry
    /// revokes the old version and adds the new one, so what was approved is never changed
    /// in place.
    pub stored_id: String,
    pub exception: ValidException,
    /// Whether its expiry has already passed when the file was read (kept, never in force).
    pub already_expired: bool,
}

/// The file as read: its SHA-256 and its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedFile {
    pub sha256: String,
    pub entries: Vec<FileException>,
}

fn entry_id_ok(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Reads the exceptions file's bytes: every entry is validated (an expiry already past is
/// allowed, and flagged; one beyond [`MAX_EXCEPTION_DAYS`] from `now` is not), ids are unique.
///
/// # Errors
/// The first problem, naming the entry: the whole file is refused, so a half-valid file never
/// replaces the set in force.
pub fn read_file(bytes: &[u8], now: DateTime<Utc>) -> Result<LoadedFile, ExceptionError> {
    let sha256 = hex::encode(Sha256::digest(bytes));
    let file: ExceptionsFile =
        serde_json::from_slice(bytes).map_err(|e| ExceptionError::FileShape(e.to_string()))?;
    let mut seen = BTreeSet::new();
    let mut entries = Vec::with_capacity(file.exceptions.len());
    for (index, entry) in file.exceptions.into_iter().enumerate() {
        let at = |error: ExceptionError| ExceptionError::Entry {
            index,
            error: Box::new(error),
        };
        if !entry_id_ok(&entry.id) {
            return Err(at(ExceptionError::EntryId(entry.id)));
        }
        if !seen.insert(entry.id.clone()) {
            return Err(ExceptionError::DuplicateId(entry.id));
        }
        let exception = entry.request().validate_ignoring_expiry().map_err(at)?;
        let already_expired = exception.expires_at <= now;
        if !already_expired {
            check_expiry(exception.expires_at, now).map_err(at)?;
        }
        entries.push(FileException {
            stored_id: format!("file:{}@{}", entry.id, content_hash(&exception)),
            exception,
            already_expired,
        });
    }
    Ok(LoadedFile { sha256, entries })
}

/// 12 hex digits of the SHA-256 of an exception's content (every field, in a fixed order).
fn content_hash(e: &ValidException) -> String {
    let text = serde_json::json!([
        e.pattern.as_str(),
        e.control.as_str(),
        e.reason,
        e.approver,
        e.expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        e.account.as_ref().map(AccountId::as_str),
        e.region.as_ref().map(Region::as_str),
    ])
    .to_string();
    hex::encode(Sha256::digest(text.as_bytes()))
        .chars()
        .take(12)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        parse_expiry("2026-12-01T00:00:00Z").unwrap_or_default()
    }

    fn request() -> ExceptionRequest {
        ExceptionRequest {
            repository: "team/legacy-*".into(),
            control: "ECR.2".into(),
            reason: "the deploy tool re-tags latest".into(),
            approver: "security-lead@example.com".into(),
            expires: "2027-03-31".into(),
            account: None,
            region: None,
        }
    }

    #[test]
    fn patterns_match_anchored_with_star_for_any_run() {
        let p = RepositoryPattern::parse("team/*-api").expect("valid");
        assert!(p.matches("team/pay-api"));
        assert!(p.matches("team/a/b-api"));
        assert!(!p.matches("team/pay-api-v2"));
        assert!(!p.matches("other/team/pay-api"));
        assert!(RepositoryPattern::parse("*").expect("valid").matches("x/y"));
        assert!(
            RepositoryPattern::parse("exact")
                .expect("valid")
                .matches("exact")
        );
        assert!(
            !RepositoryPattern::parse("exact")
                .expect("valid")
                .matches("exact2")
        );
        for bad in ["", "Team/*", "a b", "team/?", "a%b"] {
            assert!(RepositoryPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn like_escapes_underscore_so_the_database_matches_as_the_glob() {
        let p = RepositoryPattern::parse("a_b/*").expect("valid");
        assert_eq!(p.to_like(), "a\\_b/%");
    }

    #[test]
    fn a_valid_request_validates_and_covers_its_control_only() {
        let valid = request().validate(now()).expect("valid");
        assert!(valid.covers("123456789012", "us-east-1", "team/legacy-app", "ECR.2"));
        assert!(!valid.covers("123456789012", "us-east-1", "team/legacy-app", "ECR.1"));
        assert!(!valid.covers("123456789012", "us-east-1", "team/app", "ECR.2"));
    }

    #[test]
    fn invalid_requests_are_refused_with_what_to_fix() {
        type Change = fn(&mut ExceptionRequest);
        let cases: Vec<(Change, &str)> = vec![
            (|r| r.control = "ECR.9".into(), "unknown control"),
            (|r| r.approver = " ".into(), "approver is empty"),
            (|r| r.approver = "bob".into(), "invalid approver"),
            (|r| r.reason = String::new(), "reason is empty"),
            (|r| r.expires = "2026-11-30".into(), "not in the future"),
            (|r| r.expires = "2028-01-01".into(), "more than 366 days"),
            (|r| r.expires = "soon".into(), "not a time"),
            (
                |r| r.repository = "Team/*".into(),
                "invalid repository pattern",
            ),
            (|r| r.account = Some("12".into()), "12-digit"),
        ];
        for (change, expected) in cases {
            let mut r = request();
            change(&mut r);
            let error = r.validate(now()).expect_err(expected).to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn the_file_gives_content_addressed_ids_and_refuses_a_bad_entry_whole() {
        let text = r#"{"exceptions": [
            {"id": "legacy", "repository": "team/legacy-*", "control": "ECR.2",
             "reason": "re-tags latest", "approver": "arn:aws:iam::123456789012:role/sec",
             "expires": "2027-01-31"},
            {"id": "old", "repository": "x/*", "control": "ECR.3", "reason": "r",
             "approver": "a@example.com", "expires": "2026-01-01"}]}"#;
        let loaded = read_file(text.as_bytes(), now()).expect("valid");
        assert_eq!(loaded.sha256.len(), 64);
        assert!(loaded.entries[0].stored_id.starts_with("file:legacy@"));
        assert!(!loaded.entries[0].already_expired);
        assert!(loaded.entries[1].already_expired);
        let edited = text.replace("re-tags latest", "re-tags latest and stable");
        let again = read_file(edited.as_bytes(), now()).expect("valid");
        assert_ne!(again.entries[0].stored_id, loaded.entries[0].stored_id);

        let bad = text.replace("ECR.3", "ECR.33");
        let error = read_file(bad.as_bytes(), now())
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains("entry 1") && error.contains("ECR.33"),
            "{error}"
        );
        let twice = text.replace("\"old\"", "\"legacy\"");
        assert!(read_file(twice.as_bytes(), now()).is_err());
        assert!(read_file(b"exceptions: []", now()).is_err());
    }
}
