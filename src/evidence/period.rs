//! The auditor's period report (`ecr-audit report`), computed from the evidence alone.
//!
//! The stored chain is replayed in `seq` order up to the chain head read at the start (the
//! head the report names, so it can be checked against `ecr-audit verify` and an export)
//! and only records recorded before `until` count. Along the way the posture is sampled at
//! fixed points from `since` to `until` (the chart), control transitions recorded in the
//! period are kept with their callers, and at the end every image pushed in the period is
//! listed with its signature and scan verdicts. The fold is pure ([`PeriodBuilder`]); only
//! [`period_report`] reads the database. What "production" means is a [`ReportScope`].

use chrono::{DateTime, Duration, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::chain::{ChainedRecord, EVIDENCE_COLUMNS, EvidenceRow};
use super::detail::{EvidenceDetail, ExceptionAction, ExceptionNote};
use super::export::ChainPoint;
use super::history::AsOf;
use crate::domain::{ControlId, UNATTRIBUTED};
use crate::readmodel::{ImageRow, PostureRow};

/// The version of the report's JSON shape (docs/REPORT.md); bumped only when a member changes
/// meaning or goes away.
pub const REPORT_VERSION: u32 = 1;

/// What "production" means for a report: each list narrows it, an empty list keeps all.
/// Patterns take `*` (any run of characters) and `?` (one character).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportScope {
    /// A name printed on the report (`production`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Repository name patterns (`prod/*`, `payments-*`).
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Account ids (patterns allowed).
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Regions (`us-east-1`, `eu-*`; `ecr-public` for ECR Public).
    #[serde(default)]
    pub regions: Vec<String>,
    /// Image tag patterns: only images pushed with a matching tag are listed in the coverage
    /// section (`v*`, `release-*`). Repositories are not narrowed by it.
    #[serde(default)]
    pub image_tags: Vec<String>,
}

fn any_matches(patterns: &[String], value: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|p| wildmatch::WildMatch::new(p).matches(value))
}

impl ReportScope {
    /// Whether a repository is in scope.
    pub fn keeps_repository(&self, account: &str, region: &str, repository: &str) -> bool {
        any_matches(&self.accounts, account)
            && any_matches(&self.regions, region)
            && any_matches(&self.repositories, repository)
    }

    /// Whether an image is in scope: its repository is, and one of its tags matches.
    pub fn keeps_image(&self, row: &ImageRow) -> bool {
        self.keeps_repository(&row.account, &row.region, &row.repository)
            && (self.image_tags.is_empty()
                || row.tags.iter().any(|t| any_matches(&self.image_tags, t)))
    }
}

/// The period report (the `report --format json` shape of docs/REPORT.md).
#[derive(Debug, Clone, Serialize)]
pub struct PeriodReport {
    pub report_version: u32,
    pub generated_at: DateTime<Utc>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub scope: ReportScope,
    /// SHA-256 of the scope file as read, so the report names exactly what it was given.
    pub scope_sha256: Option<String>,
    /// The chain head when the report was computed: `ecr-audit verify` ends at it.
    pub evidence_head: ChainPoint,
    /// Evidence records replayed (recorded before `until`, up to the head).
    pub records_read: u64,
    /// The oldest stored record's `seq`; above 1 when retention archived the chain's start,
    /// so repositories last recorded before it are missing from the shares.
    pub oldest_seq: Option<i64>,
    /// Seconds between two points of each control's series.
    pub sample_seconds: i64,
    pub controls: Vec<ControlShare>,
    pub transitions: Vec<PeriodTransition>,
    /// Exceptions in force at some time of the period, from their `exception_changed`
    /// records: added before `until`, not ended (revoked, expired) before `since`.
    pub exceptions: Vec<PeriodException>,
    pub images: ImageCoverage,
}

/// An exception in force during the period, with what it excepted in scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeriodException {
    #[serde(flatten)]
    pub exception: ExceptionNote,
    /// When its `added` record was written.
    pub added_at: DateTime<Utc>,
    /// When it was revoked or expired (its record), if before `until`.
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
    /// In-scope repositories whose failing control it excepted (`applied` records), by `until`.
    pub repositories_excepted: u64,
}

/// One control's share of in-scope repositories passing over the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlShare {
    pub control: String,
    /// Share passing at `since` and at `until` (0–1); `null` when no repository was judged.
    pub share_at_start: Option<f64>,
    pub share_at_end: Option<f64>,
    /// The lowest share of any point of the series.
    pub lowest_share: Option<f64>,
    pub series: Vec<SharePoint>,
}

/// The in-scope repositories judged on one control at one time, and how many passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SharePoint {
    pub at: DateTime<Utc>,
    pub repositories: u32,
    pub passing: u32,
}

impl SharePoint {
    pub fn share(&self) -> Option<f64> {
        (self.repositories > 0).then(|| f64::from(self.passing) / f64::from(self.repositories))
    }
}

/// A control transition recorded in the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeriodTransition {
    pub seq: i64,
    pub recorded_at: DateTime<Utc>,
    pub event_time: DateTime<Utc>,
    pub account: String,
    pub region: String,
    pub repository: String,
    pub control: String,
    /// `null` the first time the repository was judged.
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    /// Whose request caused it, or `unattributed`.
    pub actor: String,
    pub cause_kind: String,
}

/// The images pushed in the period, with their verdicts at `until`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImageCoverage {
    pub pushed: u32,
    /// Signature verdict `SIGNED`: a signature verified under the trust policy.
    pub signed: u32,
    /// Scan status `SCANNED`.
    pub scanned: u32,
    /// Scanned with at least one CRITICAL or HIGH finding.
    pub with_critical_or_high: u32,
    pub rows: Vec<ImageCoverageRow>,
}

/// One image pushed in the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageCoverageRow {
    pub account: String,
    pub region: String,
    pub repository: String,
    pub digest: String,
    pub tags: Vec<String>,
    pub pushed_at: Option<DateTime<Utc>>,
    pub pushed_by: Option<String>,
    /// Whether the image still existed at `until`.
    pub present: bool,
    pub signature: Option<String>,
    pub signature_reason: Option<String>,
    pub scan: Option<String>,
    pub critical: Option<i64>,
    pub high: Option<i64>,
    pub medium: Option<i64>,
}

/// What to report on.
#[derive(Debug, Clone)]
pub struct PeriodQuery {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub scope: ReportScope,
    pub scope_sha256: Option<String>,
}

/// The distance between two points of the series: the largest of a day, an hour, a minute
/// and a second that still gives two points, widened to whole days past a year of days.
pub fn sample_step(since: DateTime<Utc>, until: DateTime<Utc>) -> Duration {
    let span = until - since;
    let step = [
        Duration::days(1),
        Duration::hours(1),
        Duration::minutes(1),
        Duration::seconds(1),
    ]
    .into_iter()
    .find(|step| span >= *step * 2)
    .unwrap_or(Duration::seconds(1));
    let days = span.num_days();
    if days > 366 {
        Duration::days((days + 365) / 366)
    } else {
        step
    }
}

/// The report as a fold over the chain: feed records in `seq` order, then [`Self::finish`].
#[derive(Debug)]
pub struct PeriodBuilder {
    query: PeriodQuery,
    state: AsOf,
    /// The sample times not reached yet, earliest first.
    pending: std::collections::VecDeque<DateTime<Utc>>,
    series: Vec<(DateTime<Utc>, Vec<PostureRow>)>,
    transitions: Vec<PeriodTransition>,
    /// Exceptions by id, as their records were met.
    exceptions: std::collections::BTreeMap<String, PeriodException>,
    records: u64,
    step: Duration,
}

impl PeriodBuilder {
    pub fn new(query: PeriodQuery) -> Self {
        let step = sample_step(query.since, query.until);
        let mut pending = std::collections::VecDeque::new();
        let mut at = query.since;
        while at < query.until {
            pending.push_back(at);
            at += step;
        }
        pending.push_back(query.until);
        Self {
            query,
            state: AsOf::default(),
            pending,
            series: Vec::new(),
            transitions: Vec::new(),
            exceptions: std::collections::BTreeMap::new(),
            records: 0,
            step,
        }
    }

    /// Applies one record; records recorded at or after `until` are left out.
    pub fn apply(&mut self, record: &ChainedRecord) {
        if record.recorded_at >= self.query.until {
            return;
        }
        // Each point shows what was recorded before it.
        while self
            .pending
            .front()
            .is_some_and(|at| record.recorded_at >= *at)
        {
            self.sample();
        }
        self.records += 1;
        self.state.apply(record);
        self.note_exception(record);
        if record.recorded_at >= self.query.since
            && let Some(transition) = self.transition(record)
        {
            self.transitions.push(transition);
        }
    }

    /// Follows an exception through its records: added, applied in scope, ended.
    fn note_exception(&mut self, record: &ChainedRecord) {
        let EvidenceDetail::Exception(detail) = record.typed_detail() else {
            return;
        };
        let Some(note) = detail.exception else {
            return;
        };
        match detail.action {
            ExceptionAction::Added => {
                self.exceptions.insert(
                    note.id.clone(),
                    PeriodException {
                        exception: note,
                        added_at: record.recorded_at,
                        ended_at: None,
                        end_reason: None,
                        repositories_excepted: 0,
                    },
                );
            }
            ExceptionAction::Applied => {
                let in_scope = match (&record.account, &record.region, &record.repository) {
                    (Some(a), Some(r), Some(repo)) => self.query.scope.keeps_repository(a, r, repo),
                    _ => false,
                };
                if let Some(kept) = self.exceptions.get_mut(&note.id)
                    && in_scope
                {
                    kept.repositories_excepted += 1;
                }
            }
            ExceptionAction::Revoked | ExceptionAction::Expired => {
                if let Some(kept) = self.exceptions.get_mut(&note.id) {
                    kept.ended_at = Some(record.recorded_at);
                    kept.end_reason = detail.end_reason;
                }
            }
            ExceptionAction::Reopened | ExceptionAction::FileLoaded => {}
        }
    }

    fn sample(&mut self) {
        if let Some(at) = self.pending.pop_front() {
            let rows = self
                .state
                .posture(None)
                .into_iter()
                .filter(|r| {
                    self.query
                        .scope
                        .keeps_repository(&r.account, &r.region, &r.repository)
                })
                .collect();
            self.series.push((at, rows));
        }
    }

    fn transition(&self, record: &ChainedRecord) -> Option<PeriodTransition> {
        let EvidenceDetail::ControlTransition(t) = record.typed_detail() else {
            return None;
        };
        let (account, region, repository) = (
            record.account.clone()?,
            record.region.clone()?,
            record.repository.clone()?,
        );
        if !self
            .query
            .scope
            .keeps_repository(&account, &region, &repository)
        {
            return None;
        }
        Some(PeriodTransition {
            seq: record.seq,
            recorded_at: record.recorded_at,
            event_time: record.event_time,
            account,
            region,
            repository,
            control: t.control,
            from: t.from.map(|f| f.status.as_str().to_owned()),
            to: t.to.status.as_str().to_owned(),
            reason: t.to.reason,
            actor: record
                .actor
                .clone()
                .unwrap_or_else(|| UNATTRIBUTED.to_owned()),
            cause_kind: t.cause_kind,
        })
    }

    /// The report, naming the head it was computed against.
    pub fn finish(
        mut self,
        head: ChainPoint,
        oldest_seq: Option<i64>,
        generated_at: DateTime<Utc>,
    ) -> PeriodReport {
        while !self.pending.is_empty() {
            self.sample();
        }
        let controls = ControlId::ALL
            .iter()
            .map(|c| control_share(c.as_str(), &self.series))
            .collect();
        let images = image_coverage(&self.state, &self.query);
        PeriodReport {
            report_version: REPORT_VERSION,
            generated_at,
            since: self.query.since,
            until: self.query.until,
            scope: self.query.scope,
            scope_sha256: self.query.scope_sha256,
            evidence_head: head,
            records_read: self.records,
            oldest_seq,
            sample_seconds: self.step.num_seconds(),
            controls,
            transitions: self.transitions,
            exceptions: in_force(self.exceptions, self.query.since),
            images,
        }
    }
}

/// The exceptions neither ended nor past their expiry before `since` (those added at or after
/// `until` were never met).
fn in_force(
    exceptions: std::collections::BTreeMap<String, PeriodException>,
    since: DateTime<Utc>,
) -> Vec<PeriodException> {
    exceptions
        .into_values()
        .filter(|e| e.ended_at.is_none_or(|ended| ended >= since))
        .filter(|e| {
            DateTime::parse_from_rfc3339(&e.exception.expires_at)
                .map_or(true, |expires| expires >= since)
        })
        .collect()
}

fn control_share(control: &str, series: &[(DateTime<Utc>, Vec<PostureRow>)]) -> ControlShare {
    let points: Vec<SharePoint> = series
        .iter()
        .map(|(at, rows)| {
            let judged = rows.iter().filter_map(|r| r.controls.get(control));
            let (mut repositories, mut passing) = (0_u32, 0_u32);
            for view in judged {
                repositories += 1;
                passing += u32::from(view.status == "PASS");
            }
            SharePoint {
                at: *at,
                repositories,
                passing,
            }
        })
        .collect();
    let lowest_share = points
        .iter()
        .filter_map(SharePoint::share)
        .min_by(f64::total_cmp);
    ControlShare {
        control: control.to_owned(),
        share_at_start: points.first().and_then(SharePoint::share),
        share_at_end: points.last().and_then(SharePoint::share),
        lowest_share,
        series: points,
    }
}

fn image_coverage(state: &AsOf, query: &PeriodQuery) -> ImageCoverage {
    let mut coverage = ImageCoverage::default();
    let mut rows: Vec<ImageCoverageRow> = state
        .images_ever()
        .into_iter()
        .filter(|(row, _)| {
            // Signatures, SBOMs and other artifacts take no verdicts of their own.
            row.artifact_of.is_none()
                && row
                    .pushed_at
                    .is_some_and(|t| t >= query.since && t < query.until)
                && query.scope.keeps_image(row)
        })
        .map(|(row, present)| coverage_row(row, present))
        .collect();
    rows.sort_by(|a, b| {
        (&a.pushed_at, &a.repository, &a.digest).cmp(&(&b.pushed_at, &b.repository, &b.digest))
    });
    for row in &rows {
        coverage.pushed += 1;
        coverage.signed += u32::from(row.signature.as_deref() == Some("SIGNED"));
        let scanned = row.scan.as_deref() == Some("SCANNED");
        coverage.scanned += u32::from(scanned);
        coverage.with_critical_or_high +=
            u32::from(scanned && (row.critical.unwrap_or(0) > 0 || row.high.unwrap_or(0) > 0));
    }
    coverage.rows = rows;
    coverage
}

fn coverage_row(row: ImageRow, present: bool) -> ImageCoverageRow {
    ImageCoverageRow {
        account: row.account,
        region: row.region,
        repository: row.repository,
        digest: row.digest,
        tags: row.tags,
        pushed_at: row.pushed_at,
        pushed_by: row.pushed_by,
        present,
        signature: row.signature.status,
        signature_reason: row.signature.reason,
        scan: row.scan.status,
        critical: row.scan.critical,
        high: row.scan.high,
        medium: row.scan.medium,
    }
}

/// Computes the report from the stored chain, in one read-only snapshot so the head and the
/// records agree.
///
/// # Errors
/// When a query fails.
pub async fn period_report(pool: &PgPool, query: PeriodQuery) -> Result<PeriodReport, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let (head_seq, head_hash): (i64, String) =
        sqlx::query_as("SELECT seq, hash FROM evidence_chain_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
    let oldest_seq: Option<i64> = sqlx::query_scalar("SELECT min(seq) FROM evidence")
        .fetch_one(&mut *tx)
        .await?;
    let until = query.until;
    let mut builder = PeriodBuilder::new(query);
    {
        let sql = format!(
            "SELECT {EVIDENCE_COLUMNS} FROM evidence WHERE seq <= $1 AND recorded_at < $2 ORDER BY seq"
        );
        let mut rows = sqlx::query_as::<_, EvidenceRow>(&sql)
            .bind(head_seq)
            .bind(until)
            .fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            builder.apply(&row.into_record().0);
        }
    }
    tx.commit().await?;
    Ok(builder.finish(
        ChainPoint {
            seq: head_seq,
            hash: head_hash,
        },
        oldest_seq,
        Utc::now(),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000 + seconds, 0).unwrap_or_default()
    }

    fn record(
        seq: i64,
        recorded: i64,
        kind: &str,
        repository: &str,
        detail: Value,
    ) -> ChainedRecord {
        ChainedRecord {
            seq,
            recorded_at: at(recorded),
            event_id: format!("e{seq}"),
            event_time: at(recorded),
            kind: crate::evidence::EvidenceKind::parse(kind),
            outcome: "processed".into(),
            account: Some("123456789012".into()),
            region: Some("us-east-1".into()),
            repository: Some(repository.into()),
            digest: None,
            tag: None,
            actor: Some("arn:aws:iam::123456789012:user/alice".into()),
            detail,
            prev_hash: String::new(),
            format_version: None,
        }
    }

    fn judged(seq: i64, recorded: i64, repository: &str, ecr2: &str) -> ChainedRecord {
        record(
            seq,
            recorded,
            "repository_changed",
            repository,
            json!({"repositories": [{"repository": repository, "state": "present", "applied": true,
                   "controls_after": {"ECR.2": {"status": ecr2, "reason": "r"}}}]}),
        )
    }

    fn transition(
        seq: i64,
        recorded: i64,
        repository: &str,
        from: &str,
        to: &str,
    ) -> ChainedRecord {
        record(
            seq,
            recorded,
            "control_transition",
            repository,
            json!({"control": "ECR.2", "from": {"status": from, "reason": "before"},
                   "to": {"status": to, "reason": "after"}, "cause_kind": "repository_changed"}),
        )
    }

    fn query(scope: ReportScope) -> PeriodQuery {
        PeriodQuery {
            since: at(3_600),
            until: at(3 * 3_600),
            scope,
            scope_sha256: None,
        }
    }

    fn head() -> ChainPoint {
        ChainPoint {
            seq: 9,
            hash: "ab".into(),
        }
    }

    #[test]
    fn the_series_samples_what_was_recorded_before_each_point() {
        let mut builder = PeriodBuilder::new(query(ReportScope::default()));
        builder.apply(&judged(1, 0, "prod/a", "FAIL"));
        builder.apply(&judged(2, 10, "prod/b", "PASS"));
        builder.apply(&judged(3, 5_000, "prod/a", "PASS"));
        builder.apply(&transition(4, 5_000, "prod/a", "FAIL", "PASS"));
        // Recorded after the period: neither a point nor a transition.
        builder.apply(&judged(5, 4 * 3_600, "prod/b", "FAIL"));
        let report = builder.finish(head(), Some(1), at(0));
        let ecr2 = &report.controls[1];
        assert_eq!(ecr2.control, "ECR.2");
        assert_eq!(report.sample_seconds, 3_600);
        let points: Vec<(u32, u32)> = ecr2
            .series
            .iter()
            .map(|p| (p.repositories, p.passing))
            .collect();
        assert_eq!(points, [(2, 1), (2, 2), (2, 2)]);
        assert_eq!(ecr2.share_at_start, Some(0.5));
        assert_eq!(ecr2.share_at_end, Some(1.0));
        assert_eq!(ecr2.lowest_share, Some(0.5));
        assert_eq!(report.controls[0].share_at_end, None, "ECR.1 never judged");
        assert_eq!(report.transitions.len(), 1);
        assert_eq!(
            report.transitions[0].actor,
            "arn:aws:iam::123456789012:user/alice"
        );
        assert_eq!(report.transitions[0].from.as_deref(), Some("FAIL"));
        assert_eq!(report.records_read, 4);
        assert_eq!(report.evidence_head, head());
    }

    #[test]
    fn the_scope_keeps_matching_repositories_and_images() {
        let scope = ReportScope {
            repositories: vec!["prod/*".into()],
            regions: vec!["us-*".into()],
            image_tags: vec!["v*".into()],
            ..ReportScope::default()
        };
        let mut builder = PeriodBuilder::new(query(scope.clone()));
        builder.apply(&judged(1, 0, "prod/a", "PASS"));
        builder.apply(&judged(2, 0, "dev/a", "FAIL"));
        builder.apply(&transition(3, 4_000, "dev/a", "PASS", "FAIL"));
        let report = builder.finish(head(), Some(1), at(0));
        assert_eq!(report.controls[1].share_at_end, Some(1.0));
        assert!(report.transitions.is_empty());
        assert!(scope.keeps_repository("123456789012", "us-east-1", "prod/x"));
        assert!(!scope.keeps_repository("123456789012", "eu-west-1", "prod/x"));
        let serialized = serde_json::to_value(&scope).unwrap_or_default();
        let parsed: Result<ReportScope, _> = serde_json::from_value(serialized);
        assert_eq!(parsed.ok(), Some(scope));
        assert!(
            serde_json::from_value::<ReportScope>(json!({"repos": ["x"]})).is_err(),
            "a misspelt member is an error, not a scope that keeps everything"
        );
    }

    #[test]
    fn images_pushed_in_the_period_are_listed_with_their_verdicts() {
        let mut builder = PeriodBuilder::new(query(ReportScope {
            image_tags: vec!["v*".into()],
            ..ReportScope::default()
        }));
        let push = |seq, recorded, digest: &str, tag: &str| {
            let mut r = record(
                seq,
                recorded,
                "image_pushed",
                "prod/a",
                json!({"image_after": {"presence": "pushed", "tags": [tag], "pushed_by": "arn:dev",
                       "pushed_at": null, "settings": null, "storage_class": null,
                       "artifact_of": null, "artifact_kind": null},
                       "signatures": [{"digest": digest, "status": "SIGNED", "reason": "verified"}],
                       "scans": [{"digest": digest, "raw_status": "COMPLETE",
                                  "severity_counts": {"HIGH": 1}}]}),
            );
            r.digest = Some(digest.to_owned());
            r
        };
        builder.apply(&push(1, 10, "sha256:before", "v0"));
        builder.apply(&push(2, 4_000, "sha256:in", "v1"));
        builder.apply(&push(3, 4_001, "sha256:untagged-scope", "latest"));
        let report = builder.finish(head(), Some(1), at(0));
        let digests: Vec<&str> = report
            .images
            .rows
            .iter()
            .map(|r| r.digest.as_str())
            .collect();
        assert_eq!(digests, ["sha256:in"]);
        assert_eq!(
            (
                report.images.pushed,
                report.images.signed,
                report.images.scanned
            ),
            (1, 1, 1)
        );
        assert_eq!(report.images.with_critical_or_high, 1);
        assert_eq!(report.images.rows[0].pushed_by.as_deref(), Some("arn:dev"));
    }

    #[test]
    fn the_step_keeps_the_series_readable() {
        assert_eq!(sample_step(at(0), at(92 * 86_400)), Duration::days(1));
        assert_eq!(sample_step(at(0), at(86_400)), Duration::hours(1));
        assert_eq!(sample_step(at(0), at(600)), Duration::minutes(1));
        assert_eq!(sample_step(at(0), at(90)), Duration::seconds(1));
        assert_eq!(sample_step(at(0), at(3 * 366 * 86_400)), Duration::days(3));
    }
}
