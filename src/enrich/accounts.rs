//! Which accounts are audited and through which role each is read.
//!
//! Three sources, in order of precedence: the worker's own account (its own credentials), the
//! explicit `ECR_AUDIT_ACCOUNTS` (one role each), and the accounts AWS Organizations discovery
//! last found active (`ECR_AUDIT_ROLE_NAME_PATTERN` names their role). Discovery replaces its
//! set at every reconcile sweep, so an account a StackSet adds is read from the next sweep on
//! without a restart, and one that leaves the organization is no longer read (its stored data
//! stays). `ECR_AUDIT_EXTERNAL_ID` is presented on every `AssumeRole`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use crate::domain::{AccountId, Region};

/// The placeholder of the role pattern that the account id replaces.
pub const ACCOUNT_PLACEHOLDER: &str = "{account}";

/// Why a role pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolePatternError {
    #[error("{0:?}: a role ARN pattern must start with `arn:` and contain {ACCOUNT_PLACEHOLDER}")]
    Malformed(String),
}

/// `arn:aws:iam::{account}:role/NAME`: the reader role every discovered account has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolePattern(String);

impl RolePattern {
    /// # Errors
    /// [`RolePatternError`] when the text is no ARN or lacks the placeholder.
    pub fn parse(text: &str) -> Result<Self, RolePatternError> {
        if text.starts_with("arn:") && text.contains(ACCOUNT_PLACEHOLDER) {
            Ok(Self(text.to_owned()))
        } else {
            Err(RolePatternError::Malformed(text.to_owned()))
        }
    }

    pub fn role_of(&self, account: &AccountId) -> String {
        self.0.replace(ACCOUNT_PLACEHOLDER, account.as_str())
    }
}

/// What a new discovery changed: accounts that joined and accounts that left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountChanges {
    pub joined: Vec<AccountId>,
    pub left: Vec<AccountId>,
}

/// The audited accounts and the role each is read through; shared by the registry reader
/// (which role to assume) and the sweeps (which accounts to sweep).
#[derive(Debug, Default)]
pub struct AccountAccess {
    /// Read with the worker's own credentials.
    home: Option<AccountId>,
    /// `ECR_AUDIT_ACCOUNTS`: explicit roles, which win over the pattern.
    explicit: Vec<(AccountId, String)>,
    pattern: Option<RolePattern>,
    external_id: Option<String>,
    /// Regions swept in every account (each account's ECR Public registry is added).
    regions: Vec<Region>,
    /// `None` until discovery first answered (or when it is off).
    discovered: RwLock<Option<BTreeSet<AccountId>>>,
}

impl AccountAccess {
    /// Accounts read through the given roles, nothing discovered (tests and `ECR_AUDIT_ACCOUNTS`).
    pub fn explicit(roles: HashMap<AccountId, String>) -> Self {
        let mut explicit: Vec<(AccountId, String)> = roles.into_iter().collect();
        explicit.sort();
        Self {
            explicit,
            ..Self::default()
        }
    }

    /// The worker's own account, the explicit roles (in the order given) and the regions.
    pub fn new(home: AccountId, explicit: Vec<(AccountId, String)>, regions: Vec<Region>) -> Self {
        Self {
            home: Some(home),
            explicit,
            regions,
            ..Self::default()
        }
    }

    #[must_use]
    pub fn with_pattern(mut self, pattern: Option<RolePattern>) -> Self {
        self.pattern = pattern;
        self
    }

    #[must_use]
    pub fn with_external_id(mut self, external_id: Option<String>) -> Self {
        self.external_id = external_id.filter(|id| !id.is_empty());
        self
    }

    /// The role to assume for `account`, or `None` for the worker's own credentials.
    pub fn role_for(&self, account: &AccountId) -> Option<String> {
        if let Some((_, role)) = self.explicit.iter().find(|(a, _)| a == account) {
            return Some(role.clone());
        }
        if self.home.as_ref() == Some(account) {
            return None;
        }
        // Until discovery first answers (events may arrive before the first sweep), every
        // other account is read through the pattern; afterwards only the discovered ones.
        let discovered = self.read_discovered();
        let found = discovered.as_ref().is_none_or(|set| set.contains(account));
        self.pattern
            .as_ref()
            .filter(|_| found)
            .map(|p| p.role_of(account))
    }

    /// Presented on every `AssumeRole` (the spoke roles' trust condition).
    pub fn external_id(&self) -> Option<&str> {
        self.external_id.as_deref()
    }

    /// Every audited account: the worker's own, the explicit ones, then the discovered ones.
    pub fn accounts(&self) -> Vec<AccountId> {
        let mut accounts: Vec<AccountId> = self.home.iter().cloned().collect();
        let discovered = self.read_discovered().clone().unwrap_or_default();
        for account in self
            .explicit
            .iter()
            .map(|(a, _)| a.clone())
            .chain(discovered)
        {
            if !accounts.contains(&account) {
                accounts.push(account);
            }
        }
        accounts
    }

    /// Every (account, region) a sweep covers, each account's ECR Public registry included.
    pub fn targets(&self) -> Vec<(AccountId, Region)> {
        let regions: Vec<Region> = self
            .regions
            .iter()
            .cloned()
            .chain(std::iter::once(Region::ecr_public()))
            .collect();
        self.accounts()
            .into_iter()
            .flat_map(|a| regions.iter().cloned().map(move |r| (a.clone(), r)))
            .collect()
    }

    /// Replaces the discovered accounts; says which joined and which left since the last
    /// discovery (nothing joins on the first one: it is the starting estate).
    pub fn replace_discovered(&self, found: BTreeSet<AccountId>) -> AccountChanges {
        let mut discovered = self
            .discovered
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changes = match discovered.as_ref() {
            None => AccountChanges::default(),
            Some(before) => AccountChanges {
                joined: found.difference(before).cloned().collect(),
                left: before.difference(&found).cloned().collect(),
            },
        };
        *discovered = Some(found);
        changes
    }

    fn read_discovered(&self) -> std::sync::RwLockReadGuard<'_, Option<BTreeSet<AccountId>>> {
        self.discovered
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a sweep covers: a fixed list, or whatever the shared account access says now.
#[derive(Debug, Clone)]
pub enum SweepTargets {
    Fixed(Vec<(AccountId, Region)>),
    Shared(Arc<AccountAccess>),
}

impl SweepTargets {
    pub fn current(&self) -> Vec<(AccountId, Region)> {
        match self {
            Self::Fixed(targets) => targets.clone(),
            Self::Shared(access) => access.targets(),
        }
    }
}

impl From<Vec<(AccountId, Region)>> for SweepTargets {
    fn from(targets: Vec<(AccountId, Region)>) -> Self {
        Self::Fixed(targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str) -> AccountId {
        AccountId::parse(id).expect("account")
    }

    #[test]
    fn explicit_roles_win_then_the_pattern_for_discovered_accounts() {
        let access = AccountAccess::new(
            account("111111111111"),
            vec![(
                account("222222222222"),
                "arn:aws:iam::222222222222:role/custom".to_owned(),
            )],
            vec![Region::parse("eu-west-1").expect("region")],
        )
        .with_pattern(Some(
            RolePattern::parse("arn:aws:iam::{account}:role/ecr-audit-reader").expect("pattern"),
        ));
        // Before the first discovery, any other account is read through the pattern.
        assert_eq!(
            access.role_for(&account("444444444444")).as_deref(),
            Some("arn:aws:iam::444444444444:role/ecr-audit-reader")
        );
        access.replace_discovered(
            ["111111111111", "222222222222", "333333333333"]
                .into_iter()
                .map(account)
                .collect(),
        );
        assert_eq!(access.role_for(&account("111111111111")), None);
        assert_eq!(
            access.role_for(&account("222222222222")).as_deref(),
            Some("arn:aws:iam::222222222222:role/custom")
        );
        assert_eq!(
            access.role_for(&account("333333333333")).as_deref(),
            Some("arn:aws:iam::333333333333:role/ecr-audit-reader")
        );
        // Not in the organization's scope: the worker's own credentials.
        assert_eq!(access.role_for(&account("444444444444")), None);
        // Three accounts, each in eu-west-1 and ECR Public.
        assert_eq!(access.targets().len(), 6);
    }

    #[test]
    fn discovery_reports_joins_and_departures_after_the_first() {
        let access = AccountAccess::default();
        let first = access.replace_discovered([account("111111111111")].into_iter().collect());
        assert_eq!(first, AccountChanges::default());
        let next = access.replace_discovered([account("222222222222")].into_iter().collect());
        assert_eq!(next.joined, vec![account("222222222222")]);
        assert_eq!(next.left, vec![account("111111111111")]);
    }

    #[test]
    fn a_pattern_needs_the_placeholder() {
        assert!(RolePattern::parse("arn:aws:iam::{account}:role/r").is_ok());
        assert!(RolePattern::parse("arn:aws:iam::111111111111:role/r").is_err());
        assert!(RolePattern::parse("ecr-audit-reader").is_err());
    }
}
