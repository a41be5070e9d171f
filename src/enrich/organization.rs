//! Account discovery through AWS Organizations: the active accounts of the whole organization
//! (`ListAccounts`) or of chosen organizational units and every unit below them
//! (`ListAccountsForParent`, `ListOrganizationalUnitsForParent`).
//!
//! Only the management account or a delegated administrator may call these; the worker uses
//! its own credentials or assumes `ECR_AUDIT_ORGANIZATION_ROLE` (with the external id, like
//! every other `AssumeRole`). Only `ACTIVE` accounts are kept: a `SUSPENDED` (closed) or
//! `PENDING_CLOSURE` account has no registry worth reading.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use aws_config::SdkConfig;
use tracing::debug;

use crate::aws::{AwsErrorClass, classify};
use crate::domain::AccountId;
use crate::telemetry::{ApiOutcome, AwsOperation, Happened, Metrics};

/// Organizational units visited at most, so a misconfigured tree cannot loop a sweep.
const MAX_UNITS: usize = 1_000;

/// Why the organization's accounts could not be listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{operation} failed transiently: {message}")]
    Transient {
        operation: &'static str,
        message: String,
    },
    #[error("{operation} refused: {code}: {message}")]
    Refused {
        operation: &'static str,
        code: String,
        message: String,
    },
}

/// Lists the organization's active accounts.
pub struct OrganizationReader {
    client: aws_sdk_organizations::Client,
    /// Organizational unit (or root) ids to list below; empty: the whole organization.
    units: Vec<String>,
    metrics: Arc<Metrics>,
}

impl OrganizationReader {
    /// A reader with the worker's credentials, or through `role` (assumed with `external_id`).
    pub async fn new(
        sdk: &SdkConfig,
        role: Option<&str>,
        external_id: Option<&str>,
        units: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let config = match role {
            Some(role) => crate::aws::assuming(sdk, role, external_id, sdk.region().cloned()).await,
            None => sdk.clone(),
        };
        Self {
            client: aws_sdk_organizations::Client::new(&config),
            units,
            metrics,
        }
    }

    /// The ids of the active accounts in scope.
    ///
    /// # Errors
    /// [`DiscoveryError`] when a listing fails; nothing partial is returned.
    pub async fn active_accounts(&self) -> Result<BTreeSet<AccountId>, DiscoveryError> {
        if self.units.is_empty() {
            return self.whole_organization().await;
        }
        let mut found = BTreeSet::new();
        let mut parents: VecDeque<String> = self.units.iter().cloned().collect();
        let mut visited = BTreeSet::new();
        while let Some(parent) = parents.pop_front() {
            if !visited.insert(parent.clone()) || visited.len() > MAX_UNITS {
                continue;
            }
            found.extend(self.accounts_under(&parent).await?);
            parents.extend(self.units_under(&parent).await?);
        }
        Ok(found)
    }

    async fn whole_organization(&self) -> Result<BTreeSet<AccountId>, DiscoveryError> {
        let operation = AwsOperation::OrganizationsListAccounts;
        let mut found = BTreeSet::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_accounts()
                .set_next_token(token.take())
                .send()
                .await;
            let page = self.settle(operation, page)?;
            found.extend(active(page.accounts()));
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => return Ok(found),
            }
        }
    }

    async fn accounts_under(&self, parent: &str) -> Result<BTreeSet<AccountId>, DiscoveryError> {
        let operation = AwsOperation::OrganizationsListAccountsForParent;
        let mut found = BTreeSet::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_accounts_for_parent()
                .parent_id(parent)
                .set_next_token(token.take())
                .send()
                .await;
            let page = self.settle(operation, page)?;
            found.extend(active(page.accounts()));
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => return Ok(found),
            }
        }
    }

    async fn units_under(&self, parent: &str) -> Result<Vec<String>, DiscoveryError> {
        let operation = AwsOperation::OrganizationsListOrganizationalUnitsForParent;
        let mut units = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_organizational_units_for_parent()
                .parent_id(parent)
                .set_next_token(token.take())
                .send()
                .await;
            let page = self.settle(operation, page)?;
            units.extend(
                page.organizational_units()
                    .iter()
                    .filter_map(|unit| unit.id().map(str::to_owned)),
            );
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => return Ok(units),
            }
        }
    }

    /// Counts the call and turns an SDK error into a [`DiscoveryError`].
    fn settle<T, E>(
        &self,
        operation: AwsOperation,
        result: Result<T, aws_sdk_ecr::error::SdkError<E, aws_sdk_ecr::config::http::HttpResponse>>,
    ) -> Result<T, DiscoveryError>
    where
        E: aws_sdk_ecr::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let err = match result {
            Ok(value) => {
                Happened::AwsCalled {
                    operation,
                    outcome: ApiOutcome::Ok,
                }
                .record(&self.metrics);
                return Ok(value);
            }
            Err(err) => err,
        };
        let (outcome, error) = match classify(&err) {
            AwsErrorClass::Transient(message) => (
                ApiOutcome::Transient,
                DiscoveryError::Transient {
                    operation: operation.as_str(),
                    message,
                },
            ),
            AwsErrorClass::Service { code, message } => (
                ApiOutcome::ServiceError,
                DiscoveryError::Refused {
                    operation: operation.as_str(),
                    code,
                    message,
                },
            ),
        };
        Happened::AwsCalled { operation, outcome }.record(&self.metrics);
        Err(error)
    }
}

/// The ids of the `ACTIVE` accounts of a page; a state this build does not know is kept out
/// (and logged), like every state that is not `ACTIVE`.
fn active(accounts: &[aws_sdk_organizations::types::Account]) -> Vec<AccountId> {
    accounts
        .iter()
        .filter_map(|account| {
            let state = account_state(account);
            let id = account.id()?;
            if state != "ACTIVE" {
                debug!(account = id, state = %state, "organization account not active; not audited");
                return None;
            }
            AccountId::parse(id).ok()
        })
        .collect()
}

/// `State` (since 2025), or the older `Status` when an answer carries only that.
fn account_state(account: &aws_sdk_organizations::types::Account) -> String {
    #[allow(deprecated, reason = "older answers carry only Status")]
    let status = account.status().map(|s| s.as_str().to_owned());
    account
        .state()
        .map(|s| s.as_str().to_owned())
        .or(status)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_organizations::types::{Account, AccountState, AccountStatus};

    #[test]
    fn only_active_accounts_are_kept() {
        let accounts = [
            Account::builder()
                .id("111111111111")
                .state(AccountState::Active)
                .build(),
            Account::builder()
                .id("222222222222")
                .state(AccountState::Suspended)
                .build(),
            Account::builder()
                .id("333333333333")
                .state(AccountState::from("SOMETHING_NEW"))
                .build(),
            Account::builder()
                .id("444444444444")
                .status(AccountStatus::Active)
                .build(),
        ];
        let ids: Vec<String> = active(&accounts)
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect();
        assert_eq!(ids, vec!["111111111111", "444444444444"]);
    }
}
