//! The `posture`, `images` and `explain` views as a table for people or JSON for programs.

use std::fmt::Write as _;

use crate::domain::ControlId;
use crate::readmodel::{ImageRow, PostureRow};

/// Renders rows as left-aligned columns under a header.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

pub(crate) fn posture_table(rows: &[PostureRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![
                row.account.clone(),
                row.region.clone(),
                row.repository.clone(),
            ];
            let mut reasons = Vec::new();
            for control in ControlId::ALL {
                match row.controls.get(control.as_str()) {
                    Some(view) => {
                        cells.push(view.status.clone());
                        if view.status != "PASS" {
                            reasons.push(match &view.exception {
                                Some(e) => format!(
                                    "{control}: {} [excepted: {} by {} until {}]",
                                    view.reason,
                                    e.id,
                                    e.approver,
                                    e.expires_at.format("%Y-%m-%d %H:%M")
                                ),
                                None => format!("{control}: {}", view.reason),
                            });
                        }
                    }
                    None => cells.push("-".to_owned()),
                }
            }
            cells.push(reasons.join("; "));
            cells
        })
        .collect();
    table(
        &[
            "ACCOUNT",
            "REGION",
            "REPOSITORY",
            "ECR.1",
            "ECR.2",
            "ECR.3",
            "ECR.4",
            "ECR.5",
            "ECRA.1",
            "ECRA.2",
            "ECRA.3",
            "ECRA.4",
            "ECRA.5",
            "WHY NOT PASS",
        ],
        &body,
    )
}

fn short_digest(digest: &str) -> String {
    digest.chars().take(19).collect()
}

/// `yes (N)`, `no`, or `-` while unknown; Inspector's reason when it does not scan the digest.
fn in_use_cell(row: &ImageRow) -> String {
    let usage = match (row.usage.in_use, row.usage.in_use_count) {
        (Some(true), Some(n)) => format!("yes ({n})"),
        (Some(true), None) => "yes".to_owned(),
        (Some(false), _) => "no".to_owned(),
        (None, _) => "-".to_owned(),
    };
    match row
        .usage
        .coverage
        .as_ref()
        .and_then(|c| c.reason.as_deref())
    {
        Some(reason) if reason != "SUCCESSFUL" => format!("{usage} [{reason}]"),
        _ => usage,
    }
}

pub(crate) fn images_table(rows: &[ImageRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.repository.clone(),
                short_digest(&row.digest),
                if row.tags.is_empty() {
                    "-".to_owned()
                } else {
                    row.tags.join(",")
                },
                row.pushed_at.map_or_else(
                    || "-".to_owned(),
                    |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
                ),
                row.pushed_by.clone().unwrap_or_else(|| "-".to_owned()),
                row.signature
                    .status
                    .clone()
                    .unwrap_or_else(|| "-".to_owned()),
                row.scan.status.clone().unwrap_or_else(|| "-".to_owned()),
                row.tag_immutability
                    .clone()
                    .unwrap_or_else(|| "-".to_owned()),
                row.encryption
                    .encryption_type
                    .clone()
                    .unwrap_or_else(|| "-".to_owned()),
                row.artifact_of
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), short_digest),
                in_use_cell(row),
                row.usage.last_pulled_at.map_or_else(
                    || "-".to_owned(),
                    |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
                ),
            ]
        })
        .collect();
    table(
        &[
            "REPOSITORY",
            "DIGEST",
            "TAGS",
            "PUSHED AT",
            "PUSHED BY",
            "SIGNATURE",
            "SCAN",
            "TAG MUTABILITY",
            "ENCRYPTION",
            "ARTIFACT OF",
            "IN USE",
            "LAST PULL",
        ],
        &body,
    )
}

/// `exception list`: one line per exception, newest first.
pub(crate) fn exceptions_table(rows: &[crate::readmodel::ExceptionRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.state.clone(),
                e.control.clone(),
                e.repository.clone(),
                e.account.clone().unwrap_or_else(|| "*".to_owned()),
                e.region.clone().unwrap_or_else(|| "*".to_owned()),
                e.expires_at.format("%Y-%m-%d %H:%M").to_string(),
                e.approver.clone(),
                e.source.clone(),
                e.excepted.to_string(),
                e.reason.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STATE",
            "CONTROL",
            "REPOSITORY",
            "ACCOUNT",
            "REGION",
            "EXPIRES",
            "APPROVER",
            "SOURCE",
            "EXCEPTED",
            "REASON",
        ],
        &body,
    )
}

/// `explain`: one line per happening, oldest first, with the evidence `seq` to find it by.
pub(crate) fn timeline_table(entries: &[crate::evidence::timeline::TimelineEntry]) -> String {
    let body: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                e.what.clone(),
                e.who.clone().unwrap_or_else(|| "-".to_owned()),
                e.seq.to_string(),
                e.reason.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    table(&["TIME", "WHAT", "WHO", "SEQ", "REASON"], &body)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::readmodel::ControlView;

    #[test]
    fn posture_table_shows_status_and_reasons_for_failures() {
        let mut controls = BTreeMap::new();
        for (c, s) in [
            ("ECR.1", "PASS"),
            ("ECR.2", "FAIL"),
            ("ECR.3", "PASS"),
            ("ECR.5", "UNKNOWN"),
        ] {
            controls.insert(
                c.to_owned(),
                ControlView {
                    status: s.to_owned(),
                    reason: format!("{c} reason"),
                    verdict: None,
                    exception: None,
                    changed_by: None,
                },
            );
        }
        let text = posture_table(&[PostureRow {
            account: "123456789012".into(),
            region: "us-east-1".into(),
            repository: "team/app".into(),
            controls,
        }]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ACCOUNT"));
        assert!(lines[1].contains("team/app"));
        assert!(lines[1].contains("ECR.2: ECR.2 reason; ECR.5: ECR.5 reason"));
        assert!(!lines[1].contains("ECR.1 reason"));
    }
}
