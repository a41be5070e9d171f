//! One digest's history from the evidence alone (`ecr-audit explain REPOSITORY@DIGEST`).
//!
//! The records about the digest (its push, signature and scan verdicts, usage, deletion) and
//! the control transitions and exceptions of its repository after its first record are read in chain order
//! and turned into one line per happening, each naming the record's `seq` so an auditor can
//! find it in an export. The turning is pure ([`entries`]); the query is bounded.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::PgPool;

use super::chain::{ChainedRecord, EVIDENCE_COLUMNS, EvidenceRow};
use super::detail::{
    EventDetail, EvidenceDetail, ExceptionAction, ExceptionDetail, ImageAfter, ImagePresenceLabel,
    ScanAfter,
};
use super::kind::EvidenceKind;

/// The digest to explain, and where.
#[derive(Debug, Clone)]
pub struct DigestQuery {
    pub repository: String,
    pub digest: String,
    /// `None`: any account.
    pub account: Option<String>,
    /// `None`: any region.
    pub region: Option<String>,
}

/// One happening in a digest's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEntry {
    /// The evidence record it comes from.
    pub seq: i64,
    /// When it happened (the record's `event_time`).
    pub time: DateTime<Utc>,
    /// The record's kind.
    pub kind: String,
    /// What happened, in words.
    pub what: String,
    /// Who caused it, when the record names someone.
    pub who: Option<String>,
    /// Why a verdict is what it is.
    pub reason: Option<String>,
    pub account: Option<String>,
    pub region: Option<String>,
    /// The verdict this line states (`signature`/`scan` and its status), so a record that
    /// only repeats the verdict already shown is left out.
    #[serde(skip)]
    state: Option<(&'static str, String)>,
    /// Whether the line is a change (a transition), shown even when it repeats a status.
    #[serde(skip)]
    change: bool,
}

/// A digest's history, oldest first, and whether the limit cut it.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub entries: Vec<TimelineEntry>,
    /// More records matched than the limit allowed; the newest were left out.
    pub truncated: bool,
}

/// Reads at most `limit` records of the digest's history; `None` when no record names it.
///
/// # Errors
/// When the query fails.
pub async fn digest_timeline(
    pool: &PgPool,
    query: &DigestQuery,
    limit: u32,
) -> Result<Option<Timeline>, sqlx::Error> {
    // Repository-level records (control transitions) count only from the digest's first
    // record on: what came before is not this digest's history.
    let sql = format!(
        "WITH first AS (
             SELECT min(seq) AS seq FROM evidence
              WHERE digest = $1 AND repository = $2
                AND ($3::text IS NULL OR account = $3) AND ($4::text IS NULL OR region = $4))
         SELECT {EVIDENCE_COLUMNS} FROM evidence e
          WHERE e.repository = $2
            AND ($3::text IS NULL OR e.account = $3) AND ($4::text IS NULL OR e.region = $4)
            AND e.seq >= (SELECT seq FROM first)
            AND (e.digest = $1 OR (e.digest IS NULL
                 AND e.kind IN ('control_transition', 'exception_changed')))
          ORDER BY e.seq
          LIMIT $5"
    );
    let mut rows = sqlx::query_as::<_, EvidenceRow>(&sql)
        .bind(&query.digest)
        .bind(&query.repository)
        .bind(&query.account)
        .bind(&query.region)
        .bind(i64::from(limit) + 1)
        .fetch(pool);
    let mut timeline = Timeline::default();
    let mut records = 0_u32;
    while let Some(row) = rows.try_next().await? {
        if records == limit {
            timeline.truncated = true;
            break;
        }
        records += 1;
        timeline
            .entries
            .extend(entries(&row.into_record().0, &query.digest));
    }
    timeline.entries = without_repeats(timeline.entries);
    Ok((records > 0).then_some(timeline))
}

/// Drops the verdict lines that restate the status last shown for the same thing (a
/// CloudTrail push record carries the same PENDING verdict as the push event before it).
fn without_repeats(entries: Vec<TimelineEntry>) -> Vec<TimelineEntry> {
    let mut last: std::collections::BTreeMap<&'static str, String> = Default::default();
    entries
        .into_iter()
        .filter(|e| match &e.state {
            Some((topic, status)) => {
                let repeat = last.get(topic) == Some(status);
                last.insert(topic, status.clone());
                e.change || !repeat
            }
            None => true,
        })
        .collect()
}

/// An alert queued for one of the timeline's records (read from the alert outbox by
/// `alerts::outbox::sent_for`, which sits above this layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertNote {
    /// The evidence record the alert is about.
    pub seq: i64,
    /// `detail.alert` (`UNSIGNED`, `CONTROL_REGRESSION`, …).
    pub alert: String,
    pub queued_at: DateTime<Utc>,
    /// When EventBridge accepted it; `None`: not yet.
    pub published_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub last_error: Option<String>,
}

impl Timeline {
    /// The record numbers shown, to look their alerts up.
    pub fn seqs(&self) -> Vec<i64> {
        let mut seqs: Vec<i64> = self.entries.iter().map(|e| e.seq).collect();
        seqs.dedup();
        seqs
    }

    /// Adds one line per alert, right after the lines of the record it is about.
    pub fn add_alerts(&mut self, alerts: &[AlertNote]) {
        for note in alerts {
            let Some(at) = self.entries.iter().rposition(|e| e.seq == note.seq) else {
                continue;
            };
            let about = &self.entries[at];
            let (what, reason) = match note.published_at {
                Some(_) => (format!("alert {} sent", note.alert), None),
                None => (
                    format!(
                        "alert {} queued, not sent yet ({} attempts)",
                        note.alert, note.attempts
                    ),
                    note.last_error.clone(),
                ),
            };
            let line = TimelineEntry {
                seq: note.seq,
                time: note.published_at.unwrap_or(note.queued_at),
                kind: "alert".to_owned(),
                what,
                who: None,
                reason,
                account: about.account.clone(),
                region: about.region.clone(),
                state: None,
                change: false,
            };
            self.entries.insert(at + 1, line);
        }
    }
}

/// The happenings one record tells about `digest` (a push record also carries the first
/// signature and scan verdicts).
pub fn entries(record: &ChainedRecord, digest: &str) -> Vec<TimelineEntry> {
    let entry = |what: String, who: Option<String>, reason: Option<String>| TimelineEntry {
        seq: record.seq,
        time: record.event_time,
        kind: record.kind.as_str().to_owned(),
        what,
        who,
        reason,
        account: record.account.clone(),
        region: record.region.clone(),
        state: None,
        change: false,
    };
    match record.typed_detail() {
        EvidenceDetail::ControlTransition(t) => vec![entry(
            format!(
                "{} {} -> {}",
                t.control,
                t.from.map_or("(none)", |f| f.status.as_str()),
                t.to.status.as_str()
            ),
            record.actor.clone(),
            Some(t.to.reason),
        )],
        EvidenceDetail::SignatureTransition(t) => vec![TimelineEntry {
            state: Some(("signature", t.to.as_str().to_owned())),
            change: true,
            ..entry(
                format!(
                    "signature {} -> {}",
                    t.from.map_or("(none)", |f| f.as_str()),
                    t.to.as_str()
                ),
                record.actor.clone(),
                Some(t.reason),
            )
        }],
        EvidenceDetail::UsageTransition(t) => vec![entry(
            match (t.to, t.in_use_count) {
                (true, Some(n)) => format!("in use ({n} running)"),
                (true, None) => "in use".to_owned(),
                (false, _) => "no longer in use".to_owned(),
            },
            None,
            None,
        )],
        EvidenceDetail::Event(detail) => event_entries(record, &detail, digest, &entry),
        EvidenceDetail::Exception(detail) => exception_entry(record, &detail, &entry)
            .into_iter()
            .collect(),
        EvidenceDetail::DeployVerdict(v) => vec![deploy_verdict_entry(record, &v, &entry)],
        EvidenceDetail::Checkpoint(_) | EvidenceDetail::Unreadable => {
            vec![entry(
                record.kind.as_str().replace('_', " "),
                record.actor.clone(),
                None,
            )]
        }
    }
}

fn deploy_verdict_entry(
    record: &ChainedRecord,
    verdict: &crate::evidence::detail::DeployVerdictDetail,
    entry: &MakeEntry<'_>,
) -> TimelineEntry {
    let reasons = &verdict.verdict.reasons;
    entry(
        deploy_verdict_line(verdict),
        record.actor.clone(),
        (!reasons.is_empty()).then(|| reasons.join("; ")),
    )
}

/// `deploy verdict deny (strict, scope prod) for prod/payments ×3`
fn deploy_verdict_line(detail: &crate::evidence::detail::DeployVerdictDetail) -> String {
    let verdict = &detail.verdict;
    let decision = match verdict.decision {
        crate::evidence::detail::VerdictDecision::Allow => "allow",
        crate::evidence::detail::VerdictDecision::Warn => "warn",
        crate::evidence::detail::VerdictDecision::Deny => "deny",
    };
    let asker = &verdict.asked_by;
    let place: Vec<&str> = [&asker.cluster, &asker.namespace, &asker.service]
        .into_iter()
        .filter_map(|part| part.as_deref())
        .collect();
    let mut line = format!(
        "deploy verdict {decision} ({}, scope {})",
        verdict.mode.as_str(),
        verdict.scope
    );
    if !place.is_empty() {
        line.push_str(&format!(" for {}", place.join("/")));
    }
    if detail.count > 1 {
        line.push_str(&format!(" ×{}", detail.count));
    }
    line
}

type MakeEntry<'a> = dyn Fn(String, Option<String>, Option<String>) -> TimelineEntry + 'a;

/// An exception covering the repository's failing control, or ending for it: the lines an
/// auditor needs to read an `EXCEPTED` verdict (docs/EXCEPTIONS.md). Records about the
/// exception as a whole (added, revoked, expired, the file) name no repository and are not met.
fn exception_entry(
    record: &ChainedRecord,
    detail: &ExceptionDetail,
    entry: &MakeEntry<'_>,
) -> Option<TimelineEntry> {
    let note = detail.exception.as_ref()?;
    let what = match detail.action {
        ExceptionAction::Applied => format!(
            "{} EXCEPTED by exception {} (approved by {} until {})",
            note.control, note.id, note.approver, note.expires_at
        ),
        ExceptionAction::Reopened => format!(
            "{} FAIL again: exception {} ended ({})",
            note.control,
            note.id,
            detail.end_reason.as_deref().unwrap_or("ended")
        ),
        _ => return None,
    };
    Some(entry(what, record.actor.clone(), Some(note.reason.clone())))
}

fn event_entries(
    record: &ChainedRecord,
    detail: &EventDetail,
    digest: &str,
    entry: &MakeEntry<'_>,
) -> Vec<TimelineEntry> {
    let mut out = vec![match &detail.image_after {
        Some(image) if image.presence == ImagePresenceLabel::Pushed => entry(
            pushed_words(record, image),
            image.pushed_by.clone().or_else(|| record.actor.clone()),
            None,
        ),
        Some(image) if image.presence == ImagePresenceLabel::Deleted => entry(
            "deleted".to_owned(),
            image.deleted_by.clone().or_else(|| record.actor.clone()),
            image.deleted_reason.clone(),
        ),
        _ => entry(
            record.kind.as_str().replace('_', " "),
            record.actor.clone(),
            None,
        ),
    }];
    for signature in detail.signatures.iter().flatten() {
        if signature.digest == digest {
            out.push(TimelineEntry {
                state: Some(("signature", signature.status.as_str().to_owned())),
                ..entry(
                    format!("signature {}", signature.status.as_str()),
                    None,
                    Some(signature.reason.clone()),
                )
            });
        }
    }
    for scan in detail.scans.iter().flatten() {
        if scan.digest == digest {
            let words = scan_words(scan);
            out.push(TimelineEntry {
                state: Some(("scan", words.clone())),
                ..entry(words, None, None)
            });
        }
    }
    // A record about the digest that is neither a push nor a deletion nor a verdict (a scan
    // event, a storage class change) already says so through its kind; a push record's own
    // line is enough when it also carried verdicts.
    if out.len() > 1 && record.kind == EvidenceKind::ScanCompleted {
        out.remove(0);
    }
    out
}

/// "pushed" with the tag and the repository settings that applied at push.
fn pushed_words(record: &ChainedRecord, image: &ImageAfter) -> String {
    let verb = match record.kind {
        EvidenceKind::ImagePushRecorded => "push recorded by CloudTrail",
        EvidenceKind::ImageReplicated => "replicated here",
        EvidenceKind::PullThroughCached => "cached by pull through cache",
        _ => "pushed",
    };
    let mut words = match &record.tag {
        Some(tag) => format!("{verb} as {tag}"),
        None => verb.to_owned(),
    };
    if let Some(settings) = &image.settings {
        let mut parts = Vec::new();
        if let Some(mode) = &settings.tag_immutability {
            parts.push(format!("tag mutability {mode}"));
        }
        if let Some(protected) = settings.tag_protected {
            parts.push(format!(
                "tag {}",
                if protected {
                    "protected"
                } else {
                    "overwritable"
                }
            ));
        }
        if let Some(encryption) = &settings.encryption_type {
            parts.push(format!("encryption {encryption}"));
        }
        if !parts.is_empty() {
            words.push_str(&format!(" ({})", parts.join(", ")));
        }
    }
    words
}

fn scan_words(scan: &ScanAfter) -> String {
    let status = scan.raw_status.as_deref().unwrap_or("not scanned");
    match &scan.severity_counts {
        Some(counts) if !counts.is_empty() => {
            let listed: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
            format!("scan {status} ({})", listed.join(", "))
        }
        _ => format!("scan {status}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn record(
        seq: i64,
        kind: &str,
        digest: Option<&str>,
        actor: &str,
        detail: Value,
    ) -> ChainedRecord {
        ChainedRecord {
            seq,
            recorded_at: Utc::now(),
            event_id: format!("e{seq}"),
            event_time: DateTime::from_timestamp(1_700_000_000 + seq, 0).unwrap_or_default(),
            kind: EvidenceKind::from(kind.to_owned()),
            outcome: "processed".into(),
            account: Some("123456789012".into()),
            region: Some("us-east-1".into()),
            repository: Some("app".into()),
            digest: digest.map(str::to_owned),
            tag: Some("v1".into()),
            actor: Some(actor.into()),
            detail,
            prev_hash: String::new(),
            format_version: None,
        }
    }

    #[test]
    fn a_control_transition_names_the_control_the_verdicts_and_the_caller() {
        let r = record(
            7,
            "control_transition",
            None,
            "arn:aws:iam::123456789012:user/mallory",
            json!({"control": "ECR.2", "from": {"status": "PASS", "reason": "immutable"},
                   "to": {"status": "FAIL", "reason": "tags are mutable"},
                   "cause_event_id": "c", "cause_kind": "repository_changed"}),
        );
        let got = entries(&r, "sha256:a");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].what, "ECR.2 PASS -> FAIL");
        assert_eq!(got[0].reason.as_deref(), Some("tags are mutable"));
        assert_eq!(
            got[0].who.as_deref(),
            Some("arn:aws:iam::123456789012:user/mallory")
        );
        assert_eq!(got[0].seq, 7);
    }

    #[test]
    fn a_verdict_restated_by_a_later_record_is_shown_once() {
        let push = |seq| {
            record(
                seq,
                "image_pushed",
                Some("sha256:a"),
                "arn:aws:iam::123456789012:user/dev",
                json!({"detail_type": "ECR Image Action", "change": {},
                       "image_after": {"presence": "pushed"},
                       "signatures": [{"digest": "sha256:a", "status": "PENDING",
                                       "reason": "no signature yet", "sources": [],
                                       "verifications": []}]}),
            )
        };
        let mut all = entries(&push(1), "sha256:a");
        all.extend(entries(&push(2), "sha256:a"));
        let whats: Vec<String> = without_repeats(all).into_iter().map(|e| e.what).collect();
        assert_eq!(whats, ["pushed as v1", "signature PENDING", "pushed as v1"]);
    }

    #[test]
    fn a_deploy_verdict_says_what_was_answered_to_whom_and_how_often() {
        let detail = json!({
            "decision": "deny", "mode": "strict", "scope": "prod", "policy_version": "p",
            "image": "i", "known": true, "stale": false,
            "reasons": ["signature is UNSIGNED", "2 critical findings"],
            "asked_by": {"cluster": "prod-eu", "namespace": "payments", "user": "system:serviceaccount:kube-system:replicaset-controller"},
            "cites": {"seq": 3, "hash": "h"}, "count": 3,
            "first_at": "2026-12-01T10:00:00Z", "last_at": "2026-12-01T10:00:04Z"
        });
        let entries = entries(
            &record(9, "deploy_verdict", Some("sha256:a"), "ops", detail),
            "sha256:a",
        );
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].what,
            "deploy verdict deny (strict, scope prod) for prod-eu/payments ×3"
        );
        assert_eq!(
            entries[0].reason.as_deref(),
            Some("signature is UNSIGNED; 2 critical findings")
        );
    }
}
