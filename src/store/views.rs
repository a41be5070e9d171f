//! The current state as the CLI views show it (`posture`, `images`).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Store, StoreError};
use crate::readmodel::{
    ControlView, CoverageView, EncryptionView, ExceptionView, ImageRow, PostureRow, ScanView,
    SignatureView, UsageView,
};

/// One control of one repository, as reported (the `reported_controls` view).
#[derive(sqlx::FromRow)]
struct ReportedControl {
    account: String,
    region: String,
    repository: String,
    control: Option<String>,
    status: Option<String>,
    reason: Option<String>,
    changed_by: Option<String>,
    reported_status: Option<String>,
    #[sqlx(flatten)]
    exception: ExceptionColumns,
}

/// The exception columns of `reported_controls` (all `NULL` when none is in force).
#[derive(sqlx::FromRow)]
struct ExceptionColumns {
    exception_id: Option<String>,
    exception_reason: Option<String>,
    exception_approver: Option<String>,
    exception_expires_at: Option<DateTime<Utc>>,
    exception_source: Option<String>,
    exception_pattern: Option<String>,
}

impl ExceptionColumns {
    fn view(self, control: Option<String>) -> Option<ExceptionView> {
        Some(ExceptionView {
            id: self.exception_id?,
            control,
            repository: self.exception_pattern?,
            reason: self.exception_reason?,
            approver: self.exception_approver?,
            expires_at: self.exception_expires_at?,
            source: self.exception_source?,
        })
    }
}

/// The control view of a reported row: `EXCEPTED` keeps the verdict (`FAIL`) beside it.
fn control_view(
    status: String,
    reported: Option<String>,
    reason: String,
    changed_by: Option<String>,
    exception: ExceptionColumns,
) -> ControlView {
    let exception = exception.view(None);
    let reported = reported.unwrap_or_else(|| status.clone());
    ControlView {
        verdict: (reported != status).then_some(status),
        status: reported,
        reason,
        exception,
        changed_by,
    }
}

/// The columns an [`ImageRecord`] reads, from `images` aliased `i` (the verdict view's query
/// joins other tables that name the same columns).
pub(super) const IMAGE_COLUMNS: &str = "i.account, i.region, i.repository, i.digest, i.tags,
        i.pushed_at, i.pushed_by, i.artifact_of, i.artifact_kind, i.tag_immutability,
        i.tag_protected, i.encryption_type, i.kms_key, i.kms_customer_managed,
        i.signature_status, i.signature_sources, i.signature_reason, i.signature_verifications,
        i.signature_policy_version, i.scan_status, i.scan_raw_status, i.scan_critical,
        i.scan_high, i.scan_medium, i.in_use, i.in_use_count, i.last_in_use_at,
        i.last_pulled_at, i.coverage_status, i.coverage_reason, i.usage_observed_at";

#[derive(sqlx::FromRow)]
pub(super) struct ImageRecord {
    account: String,
    region: String,
    repository: String,
    digest: String,
    tags: Vec<String>,
    pushed_at: Option<DateTime<Utc>>,
    pushed_by: Option<String>,
    artifact_of: Option<String>,
    artifact_kind: Option<String>,
    tag_immutability: Option<String>,
    tag_protected: Option<bool>,
    encryption_type: Option<String>,
    kms_key: Option<String>,
    kms_customer_managed: Option<bool>,
    signature_status: Option<String>,
    signature_sources: Value,
    signature_reason: Option<String>,
    signature_verifications: Value,
    signature_policy_version: Option<String>,
    scan_status: Option<String>,
    scan_raw_status: Option<String>,
    scan_critical: Option<i32>,
    scan_high: Option<i32>,
    scan_medium: Option<i32>,
    in_use: Option<bool>,
    in_use_count: Option<i64>,
    last_in_use_at: Option<DateTime<Utc>>,
    last_pulled_at: Option<DateTime<Utc>>,
    coverage_status: Option<String>,
    coverage_reason: Option<String>,
    usage_observed_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Every existing repository with its control verdicts, ordered by account, region, name.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn posture(&self, repository: Option<&str>) -> Result<Vec<PostureRow>, StoreError> {
        let rows: Vec<ReportedControl> = sqlx::query_as(
            "SELECT r.account, r.region, r.name AS repository, c.control, c.status, c.reason,
                    c.changed_by, c.reported_status, c.exception_id, c.exception_reason,
                    c.exception_approver, c.exception_expires_at, c.exception_source,
                    c.exception_pattern
                   FROM repositories r
                   LEFT JOIN reported_controls c
                     ON c.account = r.account AND c.region = r.region AND c.repository = r.name
                  WHERE r.present AND ($1::text IS NULL OR r.name = $1)
                  ORDER BY r.account, r.region, r.name, c.control",
        )
        .bind(repository)
        .fetch_all(self.pool())
        .await?;
        let mut out: Vec<PostureRow> = Vec::new();
        for row in rows {
            let ReportedControl {
                account,
                region,
                repository: name,
                control,
                status,
                reason,
                changed_by,
                reported_status,
                exception,
            } = row;
            let same = out.last().is_some_and(|last| {
                last.account == account && last.region == region && last.repository == name
            });
            if !same {
                out.push(PostureRow {
                    account,
                    region,
                    repository: name,
                    controls: BTreeMap::new(),
                });
            }
            if let (Some(row), Some(control), Some(status), Some(reason)) =
                (out.last_mut(), control, status, reason)
            {
                row.controls.insert(
                    control,
                    control_view(status, reported_status, reason, changed_by, exception),
                );
            }
        }
        Ok(out)
    }

    /// Every digest that still exists, newest push first.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn images(&self, repository: Option<&str>) -> Result<Vec<ImageRow>, StoreError> {
        let query = format!(
            "SELECT {IMAGE_COLUMNS}
               FROM images i
              WHERE present AND ($1::text IS NULL OR repository = $1)
              ORDER BY pushed_at DESC NULLS LAST, account, region, repository, digest"
        );
        let rows: Vec<ImageRecord> = sqlx::query_as(&query)
            .bind(repository)
            .fetch_all(self.pool())
            .await?;
        let exceptions = self.exceptions_in_force(repository).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let key = (r.account.clone(), r.region.clone(), r.repository.clone());
                let mut row = image_row(r);
                row.exceptions = exceptions.get(&key).cloned().unwrap_or_default();
                row
            })
            .collect())
    }

    /// The exceptions in force over failing controls, per repository (for `images`).
    async fn exceptions_in_force(
        &self,
        repository: Option<&str>,
    ) -> Result<HashMap<(String, String, String), Vec<ExceptionView>>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            account: String,
            region: String,
            repository: String,
            control: String,
            #[sqlx(flatten)]
            exception: ExceptionColumns,
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT account, region, repository, control, exception_id, exception_reason,
                    exception_approver, exception_expires_at, exception_source, exception_pattern
               FROM reported_controls
              WHERE exception_id IS NOT NULL AND ($1::text IS NULL OR repository = $1)
              ORDER BY account, region, repository, control",
        )
        .bind(repository)
        .fetch_all(self.pool())
        .await?;
        let mut out: HashMap<_, Vec<ExceptionView>> = HashMap::new();
        for row in rows {
            if let Some(view) = row.exception.view(Some(row.control)) {
                out.entry((row.account, row.region, row.repository))
                    .or_default()
                    .push(view);
            }
        }
        Ok(out)
    }
}

pub(super) fn image_row(r: ImageRecord) -> ImageRow {
    let coverage =
        (r.coverage_status.is_some() || r.coverage_reason.is_some()).then_some(CoverageView {
            status: r.coverage_status,
            reason: r.coverage_reason.clone(),
        });
    ImageRow {
        account: r.account,
        region: r.region,
        repository: r.repository,
        digest: r.digest,
        tags: r.tags,
        pushed_at: r.pushed_at,
        pushed_by: r.pushed_by,
        artifact_of: r.artifact_of,
        artifact_kind: r.artifact_kind,
        signature: SignatureView {
            status: r.signature_status,
            sources: serde_json::from_value(r.signature_sources).unwrap_or_default(),
            reason: r.signature_reason,
            policy_version: r.signature_policy_version,
            verifications: serde_json::from_value(r.signature_verifications).unwrap_or_default(),
        },
        scan: ScanView {
            status: r.scan_status,
            raw_status: r.scan_raw_status,
            reason: r.coverage_reason,
            critical: r.scan_critical.map(i64::from),
            high: r.scan_high.map(i64::from),
            medium: r.scan_medium.map(i64::from),
        },
        tag_immutability: r.tag_immutability,
        tag_protected: r.tag_protected,
        encryption: EncryptionView {
            encryption_type: r.encryption_type,
            kms_key: r.kms_key,
            customer_managed: r.kms_customer_managed,
        },
        usage: UsageView {
            in_use: r.in_use,
            in_use_count: r.in_use_count,
            last_in_use_at: r.last_in_use_at,
            last_pulled_at: r.last_pulled_at,
            coverage,
            observed_at: r.usage_observed_at,
        },
        exceptions: Vec::new(),
    }
}
