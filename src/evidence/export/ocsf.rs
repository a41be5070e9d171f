//! OCSF export: one Compliance Finding (class 2003, OCSF 1.3.0) per evidence record, one per
//! line, closed by the manifest as an OCSF Base Event (class 0).
//!
//! The mapping is a pure function of the record, its hash and the producer version, so the
//! verifier recomputes each line from the chained record it carries
//! (`unmapped.ecr_audit.record`) and refuses a line whose mapped attributes differ: an edit
//! of `compliance.status` is as visible as an edit of the record. The mapping table is in
//! `docs/EVIDENCE.md`.

use std::io::Write;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{EvidenceWriter, Manifest};
use crate::domain::{ControlStatus, ECR_PUBLIC_REGION, SignatureStatus};
use crate::evidence::chain::ChainedRecord;
use crate::evidence::detail::{
    ControlTransitionDetail, EvidenceDetail, ExceptionDetail, ExceptionNote,
    SignatureTransitionDetail,
};

/// The pinned OCSF schema version.
pub(crate) const OCSF_VERSION: &str = "1.3.0";
/// The version of this mapping; a verifier that does not know it checks only the chain.
pub(crate) const MAPPING_VERSION: u64 = 1;

const CLASS_UID: i64 = 2003;
const CATEGORY_UID: i64 = 2;
/// Security Hub's standard for the ECR.* controls.
const FSBP: &str = "AWS Foundational Security Best Practices v1.0.0";
/// ecr-audit's own checks (signatures, events without a control).
const OWN_STANDARD: &str = "ecr-audit";

fn millis(time: chrono::DateTime<chrono::Utc>) -> i64 {
    time.timestamp_millis()
}

/// OCSF `severity_id` and caption.
fn severity(id: i64) -> (i64, &'static str) {
    match id {
        1 => (1, "Informational"),
        2 => (2, "Low"),
        3 => (3, "Medium"),
        4 => (4, "High"),
        _ => (0, "Unknown"),
    }
}

/// Security Hub's severity of a failing control (ECR.1 High; ECR.4 Low; ECR.2, ECR.3, ECR.5
/// Medium).
fn control_fail_severity(control: &str) -> i64 {
    match control {
        "ECR.1" => 4,
        "ECR.4" => 2,
        _ => 3,
    }
}

/// OCSF compliance `status_id` and caption of a control status.
fn control_status(status: ControlStatus) -> (i64, &'static str) {
    match status {
        ControlStatus::Pass => (1, "Pass"),
        ControlStatus::Fail => (3, "Fail"),
        // OCSF's Warning is "did not yield a result due to missing information": UNKNOWN.
        ControlStatus::Unknown => (2, "Warning"),
    }
}

/// The compliance object and severity of a control transition.
fn control_compliance(transition: &ControlTransitionDetail) -> (Value, i64) {
    let control = transition.control.as_str();
    let status = transition.to.status;
    let (status_id, caption) = control_status(status);
    let standard = standard_of(control);
    let severity = match status {
        ControlStatus::Pass => 1,
        ControlStatus::Fail => control_fail_severity(control),
        ControlStatus::Unknown => 2,
    };
    (
        json!({"standards": [standard], "control": control, "status_id": status_id,
               "status": caption, "status_code": status.as_str(),
               "status_detail": transition.to.reason}),
        severity,
    )
}

/// The compliance object and severity of a signature transition: the statuses that page are
/// failures (the same set as docs/ALERTS.md, `SignatureStatus::pages`).
fn signature_compliance(transition: &SignatureTransitionDetail) -> (Value, i64) {
    let to = transition.to;
    let (status_id, caption, severity) = if to == SignatureStatus::Signed {
        (1, "Pass", 1)
    } else if to.pages() {
        (3, "Fail", 3)
    } else {
        (2, "Warning", 1)
    };
    (
        json!({"standards": [OWN_STANDARD], "control": "image-signature",
               "status_id": status_id, "status": caption, "status_code": to.as_str(),
               "status_detail": transition.reason}),
        severity,
    )
}

/// The standard a control belongs to.
fn standard_of(control: &str) -> &'static str {
    if control.starts_with("ECR.") {
        FSBP
    } else {
        OWN_STANDARD
    }
}

/// The compliance object and severity of an exception record: the control's verdict stays
/// honest (a failing control is `Fail` whether or not its risk is accepted); the finding's
/// own status says whether it is suppressed ([`finding_status`]).
fn exception_compliance(detail: &ExceptionDetail) -> (Value, i64) {
    let Some(exception) = &detail.exception else {
        return (json!({"standards": [OWN_STANDARD]}), 1);
    };
    let control = exception.control.as_str();
    let mut compliance = json!({"standards": [standard_of(control)], "control": control});
    let mut severity = 1;
    if let Some(verdict) = &detail.verdict {
        let (status_id, caption) = control_status(verdict.status);
        compliance["status_id"] = json!(status_id);
        compliance["status"] = json!(caption);
        compliance["status_code"] = json!(verdict.status.as_str());
        compliance["status_detail"] = json!(verdict.reason);
        if verdict.status == ControlStatus::Fail {
            severity = control_fail_severity(control);
        }
    }
    (compliance, severity)
}

/// The compliance object and severity of a record.
fn compliance(detail: &EvidenceDetail) -> (Value, i64) {
    match detail {
        EvidenceDetail::ControlTransition(transition) => control_compliance(transition),
        EvidenceDetail::SignatureTransition(transition) => signature_compliance(transition),
        EvidenceDetail::Exception(exception) => exception_compliance(exception),
        _ => (json!({"standards": [OWN_STANDARD]}), 1),
    }
}

/// The finding's own status (OCSF `status_id`) and comment, for records about an exception:
/// 3 `Suppressed` while an exception covers the finding (a transition to FAIL under one, an
/// exception added or applied), 1 `New` when it ended and the finding is open again. Other
/// records carry none, so their mapping is unchanged.
fn finding_status(detail: &EvidenceDetail) -> Option<(i64, &'static str, &ExceptionNote)> {
    let (suppressed, exception) = match detail {
        EvidenceDetail::ControlTransition(ControlTransitionDetail {
            exception: Some(exception),
            ..
        }) => (true, exception),
        EvidenceDetail::Exception(ExceptionDetail {
            action,
            exception: Some(exception),
            ..
        }) => (action.suppresses(), exception),
        _ => return None,
    };
    Some(if suppressed {
        (3, "Suppressed", exception)
    } else {
        (1, "New", exception)
    })
}

/// Who accepted the risk, until when, and why, in one line.
fn exception_comment(exception: &ExceptionNote) -> String {
    format!(
        "exception {} approved by {} until {}: {}",
        exception.id, exception.approver, exception.expires_at, exception.reason
    )
}

fn title(record: &ChainedRecord, detail: &EvidenceDetail) -> String {
    let subject = match (&record.repository, &record.digest) {
        (Some(r), Some(d)) => format!(" {r}@{d}"),
        (Some(r), None) => format!(" {r}"),
        _ => String::new(),
    };
    match detail {
        EvidenceDetail::ControlTransition(transition) => {
            format!("{} {}:{subject}", transition.control, transition.to.status)
        }
        EvidenceDetail::SignatureTransition(transition) => {
            format!("signature {}:{subject}", transition.to.as_str())
        }
        EvidenceDetail::Exception(ExceptionDetail {
            action,
            exception: Some(exception),
            ..
        }) => format!(
            "{} exception {}:{subject}",
            exception.control,
            action.as_str()
        ),
        _ => format!("{}:{subject}", record.kind)
            .trim_end_matches(':')
            .to_owned(),
    }
}

/// Whether the record updates a status it names (a transition with a `from`).
fn has_previous(detail: &EvidenceDetail) -> bool {
    match detail {
        EvidenceDetail::ControlTransition(transition) => transition.from.is_some(),
        EvidenceDetail::SignatureTransition(transition) => transition.from.is_some(),
        _ => false,
    }
}

/// The Compliance Finding for one record.
pub fn finding(record: &ChainedRecord, hash: &str, product_version: &str) -> Value {
    let detail = record.typed_detail();
    let (compliance, severity_id) = compliance(&detail);
    let title = title(record, &detail);
    let mut event = classification(has_previous(&detail), severity_id);
    event.insert("time".into(), json!(millis(record.event_time)));
    event.insert("message".into(), json!(title));
    event.insert("metadata".into(), metadata(record, product_version));
    event.insert("cloud".into(), cloud(record));
    event.insert(
        "finding_info".into(),
        json!({
            "uid": record.event_id,
            "title": title,
            "types": [record.kind],
            "created_time": millis(record.recorded_at),
            "first_seen_time": millis(record.event_time),
        }),
    );
    event.insert("compliance".into(), compliance);
    if let Some((status_id, status, exception)) = finding_status(&detail) {
        event.insert("status_id".into(), json!(status_id));
        event.insert("status".into(), json!(status));
        event.insert("comment".into(), json!(exception_comment(exception)));
    }
    let resources = resources(record);
    if !resources.is_empty() {
        event.insert("resources".into(), Value::Array(resources));
    }
    if let Some(actor) = &record.actor {
        event.insert("actor".into(), json!({"user": {"uid": actor}}));
    }
    event.insert(
        "unmapped".into(),
        json!({"ecr_audit": {"mapping": MAPPING_VERSION, "record": record, "hash": hash}}),
    );
    Value::Object(event)
}

/// The class, activity and severity attributes.
fn classification(has_previous: bool, severity_id: i64) -> Map<String, Value> {
    let (severity_id, severity_caption) = severity(severity_id);
    let (activity_id, activity) = if has_previous {
        (2, "Update")
    } else {
        (1, "Create")
    };
    let mut event = Map::new();
    event.insert("activity_id".into(), json!(activity_id));
    event.insert("activity_name".into(), json!(activity));
    event.insert("category_uid".into(), json!(CATEGORY_UID));
    event.insert("category_name".into(), json!("Findings"));
    event.insert("class_uid".into(), json!(CLASS_UID));
    event.insert("class_name".into(), json!("Compliance Finding"));
    event.insert("type_uid".into(), json!(CLASS_UID * 100 + activity_id));
    event.insert(
        "type_name".into(),
        json!(format!("Compliance Finding: {activity}")),
    );
    event.insert("severity_id".into(), json!(severity_id));
    event.insert("severity".into(), json!(severity_caption));
    event
}

fn metadata(record: &ChainedRecord, product_version: &str) -> Value {
    let mut profiles = vec!["cloud"];
    if record.actor.is_some() {
        profiles.push("host");
    }
    json!({
        "version": OCSF_VERSION,
        "product": {"name": "ecr-audit", "vendor_name": "ecr-audit", "version": product_version},
        "profiles": profiles,
        "uid": record.event_id,
        "sequence": record.seq,
        "logged_time": millis(record.recorded_at),
        "log_name": "evidence",
    })
}

/// The AWS region of a stored region: ECR Public's pseudo-region is us-east-1, where its API is.
fn aws_region(region: &str) -> &str {
    if region == ECR_PUBLIC_REGION {
        "us-east-1"
    } else {
        region
    }
}

fn cloud(record: &ChainedRecord) -> Value {
    let mut cloud = Map::new();
    cloud.insert("provider".into(), json!("AWS"));
    if let Some(region) = &record.region {
        cloud.insert("region".into(), json!(aws_region(region)));
    }
    if let Some(account) = &record.account {
        cloud.insert(
            "account".into(),
            json!({"uid": account, "type_id": 10, "type": "AWS Account"}),
        );
    }
    Value::Object(cloud)
}

/// The repository and the image the record is about.
fn resources(record: &ChainedRecord) -> Vec<Value> {
    let mut resources = Vec::new();
    if let Some(repository) = &record.repository {
        let public = record.region.as_deref() == Some(ECR_PUBLIC_REGION);
        let kind = if public {
            "AWS::ECR::PublicRepository"
        } else {
            "AWS::ECR::Repository"
        };
        let mut resource = json!({"type": kind, "name": repository});
        if let (Some(account), Some(region)) = (&record.account, &record.region) {
            resource["uid"] = json!(if public {
                format!("arn:aws:ecr-public::{account}:repository/{repository}")
            } else {
                format!("arn:aws:ecr:{region}:{account}:repository/{repository}")
            });
            resource["region"] = json!(aws_region(region));
        }
        resources.push(resource);
    }
    if let Some(digest) = &record.digest {
        let mut image = json!({"type": "AWS::ECR::Image", "uid": digest});
        if let Some(repository) = &record.repository {
            image["name"] = json!(format!("{repository}@{digest}"));
        }
        if let Some(tag) = &record.tag {
            image["labels"] = json!([tag]);
        }
        resources.push(image);
    }
    resources
}

/// The manifest as an OCSF Base Event, so a SIEM ingesting the file sees only OCSF events.
pub(crate) fn manifest_event(manifest: &Manifest) -> Value {
    json!({
        "activity_id": 99,
        "activity_name": "Other",
        "category_uid": 0,
        "category_name": "Uncategorized",
        "class_uid": 0,
        "class_name": "Base Event",
        "type_uid": 99,
        "type_name": "Base Event: Other",
        "severity_id": 1,
        "severity": "Informational",
        "time": millis(manifest.exported_at),
        "message": format!("ecr-audit evidence export manifest: {} records", manifest.count),
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "ecr-audit", "vendor_name": "ecr-audit", "version": env!("CARGO_PKG_VERSION")},
            "log_name": "evidence",
        },
        "unmapped": {"ecr_audit_manifest": manifest},
    })
}

/// What an OCSF line holds.
pub(super) enum OcsfLine {
    Record {
        record: Box<ChainedRecord>,
        hash: String,
        /// `unmapped.ecr_audit.proof`: the inclusion proof of a filtered export's record.
        proof: Option<Vec<String>>,
        /// `Some(problem)` when the mapped attributes differ from the mapping of the record.
        mapping_mismatch: Option<String>,
    },
    Manifest(Box<Manifest>),
}

/// [`finding`], with a filtered export's inclusion proof in `unmapped.ecr_audit.proof`.
fn proven_finding(
    record: &ChainedRecord,
    hash: &str,
    product_version: &str,
    proof: Option<&[String]>,
) -> Value {
    let mut line = finding(record, hash, product_version);
    if let Some(path) = proof {
        line["unmapped"]["ecr_audit"]["proof"] = json!(path);
    }
    line
}

/// The members of a finding line the verifier needs, read without building the whole line.
#[derive(Deserialize)]
struct FindingLine {
    metadata: FindingMetadata,
    unmapped: FindingUnmapped,
}

#[derive(Deserialize)]
struct FindingMetadata {
    product: FindingProduct,
}

#[derive(Deserialize)]
struct FindingProduct {
    #[serde(default)]
    version: String,
}

#[derive(Deserialize)]
struct FindingUnmapped {
    ecr_audit: EcrAuditMember,
}

#[derive(Deserialize)]
struct EcrAuditMember {
    mapping: Option<u64>,
    record: ChainedRecord,
    hash: String,
    #[serde(default)]
    proof: Option<Vec<String>>,
}

/// Reads a record line the short way: when the line is, byte for byte, the finding this build
/// writes for the record it carries (a file as exported), the mapping is right without a
/// second tree of values being built and compared. Anything else (the manifest, a line
/// re-serialised by another tool, an altered one) gives `None`, and [`read_line`] reads it.
pub(super) fn read_exact_record(text: &str) -> Option<OcsfLine> {
    let line: FindingLine = serde_json::from_str(text).ok()?;
    let member = line.unmapped.ecr_audit;
    if member.mapping != Some(MAPPING_VERSION) {
        return None;
    }
    let expected = proven_finding(
        &member.record,
        &member.hash,
        &line.metadata.product.version,
        member.proof.as_deref(),
    );
    let written = serde_json::to_string(&expected).ok()?;
    (written == text).then(|| OcsfLine::Record {
        record: Box::new(member.record),
        hash: member.hash,
        proof: member.proof,
        mapping_mismatch: None,
    })
}

/// Reads one OCSF line.
///
/// # Errors
/// A description of what is malformed.
pub(super) fn read_line(line: &Value) -> Result<OcsfLine, String> {
    if let Some(manifest) = line.pointer("/unmapped/ecr_audit_manifest") {
        let manifest: Manifest =
            serde_json::from_value(manifest.clone()).map_err(|e| format!("manifest: {e}"))?;
        return Ok(OcsfLine::Manifest(Box::new(manifest)));
    }
    let chained = line
        .pointer("/unmapped/ecr_audit")
        .ok_or("no unmapped.ecr_audit member: not an ecr-audit evidence finding")?;
    let record = ChainedRecord::deserialize(
        chained
            .get("record")
            .ok_or("no unmapped.ecr_audit.record")?,
    )
    .map_err(|e| format!("unmapped.ecr_audit.record: {e}"))?;
    let hash = chained
        .get("hash")
        .and_then(Value::as_str)
        .ok_or("no unmapped.ecr_audit.hash")?
        .to_owned();
    let proof = chained
        .get("proof")
        .map(Vec::<String>::deserialize)
        .transpose()
        .map_err(|e| format!("unmapped.ecr_audit.proof: {e}"))?;
    let mapping_mismatch = match chained.get("mapping").and_then(Value::as_u64) {
        Some(MAPPING_VERSION) => {
            let version = line
                .pointer("/metadata/product/version")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let expected = proven_finding(&record, &hash, version, proof.as_deref());
            (expected != *line).then(|| first_difference(&expected, line, ""))
        }
        other => Some(format!("unknown mapping version {other:?}")),
    };
    Ok(OcsfLine::Record {
        record: Box::new(record),
        hash,
        proof,
        mapping_mismatch,
    })
}

/// The path of the first attribute where two values differ.
fn first_difference(expected: &Value, found: &Value, path: &str) -> String {
    match (expected, found) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()) {
                let here = format!("{path}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) if x == y => {}
                    (Some(x), Some(y)) => return first_difference(x, y, &here),
                    _ => return format!("{} is added or missing", here.trim_start_matches('.')),
                }
            }
            format!("{} differs", path.trim_start_matches('.'))
        }
        _ => format!("{} differs", path.trim_start_matches('.')),
    }
}

pub(crate) struct OcsfWriter<W: Write> {
    out: W,
}

impl<W: Write> OcsfWriter<W> {
    pub(crate) fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write> EvidenceWriter for OcsfWriter<W> {
    fn record(
        &mut self,
        record: &ChainedRecord,
        hash: &str,
        proof: Option<&[String]>,
    ) -> std::io::Result<()> {
        let line = proven_finding(record, hash, env!("CARGO_PKG_VERSION"), proof);
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")
    }

    fn finish(&mut self, manifest: &Manifest) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, &manifest_event(manifest))?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::evidence::kind::EvidenceKind;

    fn record(kind: EvidenceKind, detail: Value) -> ChainedRecord {
        ChainedRecord {
            seq: 7,
            recorded_at: chrono::DateTime::UNIX_EPOCH,
            event_id: "e7".into(),
            event_time: chrono::DateTime::UNIX_EPOCH,
            kind,
            outcome: "processed".into(),
            account: Some("123456789012".into()),
            region: Some("us-east-1".into()),
            repository: Some("team/app".into()),
            digest: None,
            tag: None,
            actor: None,
            detail,
            prev_hash: "0".repeat(64),
            format_version: None,
        }
    }

    fn exception() -> Value {
        json!({"id": "EX-1", "control": "ECR.2", "repository": "team/*", "account": null,
               "region": null, "reason": "re-tags latest", "approver": "sec@example.com",
               "expires_at": "2027-03-31T00:00:00.000000Z", "source": "cli"})
    }

    #[test]
    fn an_excepted_failure_still_fails_compliance_and_its_finding_is_suppressed() {
        let mut detail = json!({"control": "ECR.2", "from": {"status": "PASS", "reason": "ok"},
                                "to": {"status": "FAIL", "reason": "MUTABLE"}});
        let plain = finding(
            &record(EvidenceKind::ControlTransition, detail.clone()),
            "h",
            "v",
        );
        assert_eq!(plain["compliance"]["status"], "Fail");
        assert_eq!(
            plain.get("status_id"),
            None,
            "unchanged mapping without an exception"
        );
        assert_eq!(plain.get("comment"), None);

        detail["exception"] = exception();
        let excepted = finding(&record(EvidenceKind::ControlTransition, detail), "h", "v");
        assert_eq!(excepted["compliance"]["status"], "Fail");
        assert_eq!(excepted["compliance"]["status_code"], "FAIL");
        assert_eq!(excepted["status_id"], 3);
        assert_eq!(excepted["status"], "Suppressed");
        assert_eq!(
            excepted["comment"],
            "exception EX-1 approved by sec@example.com until 2027-03-31T00:00:00.000000Z: re-tags latest"
        );
    }

    #[test]
    fn exception_records_map_applied_to_suppressed_and_reopened_to_new() {
        let applied = json!({"action": "applied", "exception": exception(),
                             "verdict": {"status": "FAIL", "reason": "MUTABLE"}});
        let line = finding(&record(EvidenceKind::ExceptionChanged, applied), "h", "v");
        assert_eq!(line["compliance"]["control"], "ECR.2");
        assert_eq!(line["compliance"]["status"], "Fail");
        assert_eq!(line["status"], "Suppressed");
        assert_eq!(line["severity_id"], 3);
        assert_eq!(line["message"], "ECR.2 exception applied: team/app");

        let reopened = json!({"action": "reopened", "exception": exception(),
                              "verdict": {"status": "FAIL", "reason": "MUTABLE"},
                              "end_reason": "expired"});
        let line = finding(&record(EvidenceKind::ExceptionChanged, reopened), "h", "v");
        assert_eq!(line["status_id"], 1);
        assert_eq!(line["status"], "New");

        let loaded = json!({"action": "file_loaded", "file": {"path": "x.json",
            "sha256": "ab", "entries": 1, "added": [], "revoked": []}});
        let line = finding(&record(EvidenceKind::ExceptionChanged, loaded), "h", "v");
        assert_eq!(line["compliance"], json!({"standards": [OWN_STANDARD]}));
        assert_eq!(line.get("status_id"), None);
    }
}
