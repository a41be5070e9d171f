//! The period report as one self-contained HTML file (inline CSS and SVG, nothing fetched),
//! and as PDF printed from that same HTML by a headless Chromium (docs/REPORT.md).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Utc};

use crate::evidence::period::{ControlShare, ImageCoverageRow, PeriodReport, PeriodTransition};

/// Why a PDF could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "Chromium is needed for --format pdf and was not found as {program:?} (install Debian's `chromium`, or set ECR_AUDIT_CHROMIUM to its path); --format html writes the same report without it"
    )]
    ChromiumMissing { program: String },
    #[error("Chromium ({program}) could not print the report: {detail}")]
    ChromiumFailed { program: String, detail: String },
    #[error("report I/O: {0}")]
    Io(#[from] std::io::Error),
}

const STYLE: &str = "
@page{size:A4 landscape;margin:12mm}
body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;color:#1d2330;margin:24px 32px;font-size:13px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:2px solid #1d2330;padding-bottom:3px}
.meta{color:#4a5468;margin:2px 0}.head{font-family:'DejaVu Sans Mono',monospace;font-size:11px;word-break:break-all}
table{border-collapse:collapse;width:100%;margin:6px 0}th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #d5d9e2;vertical-align:top}
th{background:#eef1f6;font-size:12px}td.num{text-align:right;white-space:nowrap}.mono{font-family:'DejaVu Sans Mono',monospace;font-size:11px}.digest{word-break:break-all;max-width:190px}
.pass{color:#1a7f37;font-weight:bold}.fail{color:#c62828;font-weight:bold}.unknown{color:#8a6d00;font-weight:bold}
.note{background:#f6f8fb;border-left:4px solid #8793a8;padding:6px 10px;color:#384152}
.cards{display:flex;gap:12px;margin:8px 0}.card{border:1px solid #d5d9e2;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:20px}tr{page-break-inside:avoid}
";

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn when(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "–".to_owned(), |s| format!("{:.0}%", s * 100.0))
}

fn status_cell(status: &str) -> String {
    let class = match status {
        "PASS" | "SIGNED" | "SCANNED" => "pass",
        "FAIL" | "UNSIGNED" | "UNTRUSTED" | "FAILED" => "fail",
        _ => "unknown",
    };
    format!("<span class=\"{class}\">{}</span>", escape(status))
}

/// Renders the report as one HTML document.
pub fn render_html(report: &PeriodReport) -> String {
    let mut out = String::new();
    let title = format!(
        "ECR compliance report {} – {}",
        report.since.format("%Y-%m-%d %H:%M"),
        report.until.format("%Y-%m-%d %H:%M")
    );
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n",
        escape(&title)
    );
    header(&mut out, report, &title);
    controls_section(&mut out, report);
    transitions_section(&mut out, &report.transitions);
    exceptions_section(&mut out, report);
    images_section(&mut out, report);
    verification_section(&mut out, report);
    out.push_str("</body></html>\n");
    out
}

fn header(out: &mut String, report: &PeriodReport, title: &str) {
    let scope = &report.scope;
    let list = |items: &[String]| {
        if items.is_empty() {
            "all".to_owned()
        } else {
            escape(&items.join(", "))
        }
    };
    let _ = write!(
        out,
        "<h1>{}</h1>\n<p class=\"meta\">Period: {} to {} (records recorded in [since, until)). Generated {}.</p>\n\
         <p class=\"meta\">Scope{}: repositories {}; accounts {}; regions {}; image tags {}{}.</p>\n\
         <p class=\"meta\">Computed against the evidence chain head <b>seq {}</b>, hash <span class=\"head\">{}</span>.</p>\n",
        escape(title),
        when(report.since),
        when(report.until),
        when(report.generated_at),
        scope
            .name
            .as_deref()
            .map_or_else(String::new, |n| format!(" “{}”", escape(n))),
        list(&scope.repositories),
        list(&scope.accounts),
        list(&scope.regions),
        list(&scope.image_tags),
        report
            .scope_sha256
            .as_deref()
            .map_or_else(String::new, |h| format!(" (scope file sha256 {h})")),
        report.evidence_head.seq,
        escape(&report.evidence_head.hash),
    );
}

fn controls_section(out: &mut String, report: &PeriodReport) {
    let _ = write!(
        out,
        "<h2>Controls: share of in-scope repositories passing</h2>\n\
         <p class=\"meta\">One column every {}, counting the repositories judged on the control from the evidence recorded before it: \
         <span style=\"color:#2e7d46\">■</span> passing, <span style=\"color:#c62828\">■</span> failing or unknown, no column while none was judged.</p>\n\
         <table><tr><th>Control</th><th>At start</th><th>At end</th><th>Lowest</th><th>Repositories (end)</th><th>Over the period</th></tr>\n",
        humantime::format_duration(std::time::Duration::from_secs(
            u64::try_from(report.sample_seconds).unwrap_or(0)
        ))
    );
    for control in &report.controls {
        let end = control.series.last();
        let _ = writeln!(
            out,
            "<tr><td><b>{}</b></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&control.control),
            percent(control.share_at_start),
            percent(control.share_at_end),
            percent(control.lowest_share),
            end.map_or_else(
                || "0".to_owned(),
                |p| format!("{} of {} pass", p.passing, p.repositories)
            ),
            share_chart(control),
        );
    }
    out.push_str("</table>\n");
}

/// A small column chart: per point of the series, the share passing (green, from the
/// bottom) and failing or unknown (red, above it); no column where no repository was judged.
fn share_chart(control: &ControlShare) -> String {
    const W: f64 = 300.0;
    const H: f64 = 44.0;
    let points = &control.series;
    if points.iter().all(|p| p.repositories == 0) {
        return "<span class=\"meta\">not judged for any repository in scope</span>".to_owned();
    }
    let step = W / points.len().max(1) as f64;
    let mut columns = String::new();
    for (i, point) in points.iter().enumerate() {
        let Some(share) = point.share() else { continue };
        let x = i as f64 * step;
        let green = share * H;
        let _ = write!(
            columns,
            "<rect x=\"{x:.2}\" y=\"0\" width=\"{step:.2}\" height=\"{:.2}\" fill=\"#e57373\"/>\
             <rect x=\"{x:.2}\" y=\"{:.2}\" width=\"{step:.2}\" height=\"{green:.2}\" fill=\"#4caf6a\"/>",
            H - green,
            H - green,
        );
    }
    format!(
        "<svg width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{} share passing\">\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#f1f3f7\"/>{columns}\
         <line x1=\"0\" y1=\"{}\" x2=\"{W}\" y2=\"{}\" stroke=\"#ffffff\" stroke-dasharray=\"3 3\" stroke-width=\"0.8\"/></svg>",
        escape(&control.control),
        H / 2.0,
        H / 2.0,
    )
}

fn transitions_section(out: &mut String, transitions: &[PeriodTransition]) {
    let _ = writeln!(
        out,
        "<h2>Control transitions in the period ({})</h2>",
        transitions.len()
    );
    if transitions.is_empty() {
        out.push_str(
            "<p class=\"note\">No control changed status for a repository in scope.</p>\n",
        );
        return;
    }
    out.push_str("<table><tr><th>Seq</th><th>When</th><th>Repository</th><th>Control</th><th>Change</th><th>By</th><th>Reason</th></tr>\n");
    for t in transitions {
        let _ = writeln!(
            out,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}<br><span class=\"meta\">{} {}</span></td><td>{}</td><td>{} → {}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
            t.seq,
            when(t.event_time),
            escape(&t.repository),
            escape(&t.account),
            escape(&t.region),
            escape(&t.control),
            t.from
                .as_deref()
                .map_or_else(|| "(first)".to_owned(), status_cell),
            status_cell(&t.to),
            escape(&t.actor),
            escape(&t.reason),
        );
    }
    out.push_str("</table>\n");
}

/// Every exception in force at some time of the period: what it excepted, who approved it,
/// until when, and whether it ended within the period.
fn exceptions_section(out: &mut String, report: &PeriodReport) {
    let _ = writeln!(
        out,
        "<h2>Exceptions in force ({})</h2>",
        report.exceptions.len()
    );
    if report.exceptions.is_empty() {
        out.push_str("<p class=\"note\">None: every verdict above is as judged.</p>\n");
        return;
    }
    out.push_str(
        "<table><tr><th>Id</th><th>Control</th><th>Repositories</th><th>Approver</th>\
         <th>Reason</th><th>Added</th><th>Expires</th><th>Ended</th><th>Excepted in scope</th></tr>\n",
    );
    for e in &report.exceptions {
        let x = &e.exception;
        let ended = e.ended_at.map_or_else(
            || "in force".to_owned(),
            |at| {
                format!(
                    "{} ({})",
                    when(at),
                    e.end_reason.as_deref().unwrap_or("ended")
                )
            },
        );
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&x.id),
            escape(&x.control),
            escape(&x.repository),
            escape(&x.approver),
            escape(&x.reason),
            when(e.added_at),
            escape(&x.expires_at),
            escape(&ended),
            e.repositories_excepted,
        );
    }
    out.push_str("</table>\n");
}

fn images_section(out: &mut String, report: &PeriodReport) {
    let images = &report.images;
    let _ = write!(
        out,
        "<h2>Images pushed in the period</h2>\n<div class=\"cards\">\
         <div class=\"card\"><b>{}</b>pushed</div><div class=\"card\"><b>{}</b>signed (verified)</div>\
         <div class=\"card\"><b>{}</b>scanned</div><div class=\"card\"><b>{}</b>with CRITICAL/HIGH</div></div>\n",
        images.pushed, images.signed, images.scanned, images.with_critical_or_high
    );
    if images.rows.is_empty() {
        out.push_str("<p class=\"note\">No image in scope was pushed in the period.</p>\n");
        return;
    }
    out.push_str("<table><tr><th>Pushed</th><th>Repository</th><th>Digest</th><th>Tags</th><th>Pushed by</th><th>Signature</th><th>Scan</th><th>Findings (C/H/M)</th></tr>\n");
    for row in &images.rows {
        image_row(out, row);
    }
    out.push_str("</table>\n");
}

fn image_row(out: &mut String, row: &ImageCoverageRow) {
    let count = |n: Option<i64>| n.map_or_else(|| "–".to_owned(), |n| n.to_string());
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td>{}{}</td><td class=\"mono digest\">{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}<br><span class=\"meta\">{}</span></td><td>{}</td><td class=\"num\">{} / {} / {}</td></tr>",
        row.pushed_at.map_or_else(|| "–".to_owned(), when),
        escape(&row.repository),
        if row.present {
            ""
        } else {
            " <span class=\"meta\">(deleted since)</span>"
        },
        escape(&row.digest),
        escape(&row.tags.join(", ")),
        escape(row.pushed_by.as_deref().unwrap_or("–")),
        row.signature
            .as_deref()
            .map_or_else(|| "–".to_owned(), status_cell),
        escape(row.signature_reason.as_deref().unwrap_or("")),
        row.scan
            .as_deref()
            .map_or_else(|| "–".to_owned(), status_cell),
        count(row.critical),
        count(row.high),
        count(row.medium),
    );
}

fn verification_section(out: &mut String, report: &PeriodReport) {
    let archived = match report.oldest_seq {
        Some(seq) if seq > 1 => format!(
            " The stored chain starts at seq {seq}: older records were archived, and repositories last recorded before it are missing from the shares."
        ),
        _ => String::new(),
    };
    let _ = write!(
        out,
        "<h2>Checking this report against the log</h2>\n<p>{} evidence records were replayed. \
         <code>ecr-audit verify</code> walks the chain and ends at the head named above (hash {}); \
         <code>ecr-audit export --format jsonl</code> names it as <code>chain_head</code> in its manifest, and \
         every seq in this report points at a record of that export.{}</p>\n",
        report.records_read,
        escape(&report.evidence_head.hash),
        archived,
    );
}

/// Prints `html` to a PDF at `output` with the headless Chromium `program`.
///
/// # Errors
/// [`ReportError::ChromiumMissing`] when `program` cannot be started, `ChromiumFailed` when
/// it ran and wrote no PDF.
pub fn print_pdf(program: &str, html: &str, output: &Path) -> Result<(), ReportError> {
    let work = scratch_dir()?;
    let result = print_in(program, html, output, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn print_in(program: &str, html: &str, output: &Path, work: &Path) -> Result<(), ReportError> {
    let page = work.join("report.html");
    std::fs::write(&page, html)?;
    let profile = work.join("profile");
    std::fs::create_dir_all(&profile)?;
    let mut command = Command::new(program);
    command
        .args(chromium_flags(&profile))
        .arg("--no-pdf-header-footer")
        .arg(format!("--print-to-pdf={}", output.display()))
        .arg(file_url(&page));
    let ran = match command.output() {
        Ok(ran) => ran,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(ReportError::ChromiumMissing {
                program: program.to_owned(),
            });
        }
        Err(err) => return Err(err.into()),
    };
    let written = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    if !ran.status.success() || written == 0 {
        let stderr = String::from_utf8_lossy(&ran.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(ReportError::ChromiumFailed {
            program: program.to_owned(),
            detail: format!("{} ({})", ran.status, tail.join(" | ")),
        });
    }
    Ok(())
}

/// The flags a headless Chromium needs on a server: no sandbox (containers run it as root),
/// no GPU, and nothing that reaches the network on its own; a fresh empty profile.
pub fn chromium_flags(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    .iter()
    .map(|f| (*f).to_owned())
    .chain(std::iter::once(format!(
        "--user-data-dir={}",
        profile.display()
    )))
    .collect()
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn scratch_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "ecr-audit-report-{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::export::ChainPoint;
    use crate::evidence::period::{ImageCoverage, ReportScope, SharePoint};

    fn report() -> PeriodReport {
        let at = DateTime::from_timestamp(1_780_000_000, 0).unwrap_or_default();
        PeriodReport {
            report_version: 1,
            generated_at: at,
            since: at,
            until: at,
            scope: ReportScope::default(),
            scope_sha256: None,
            evidence_head: ChainPoint {
                seq: 42,
                hash: "c0ffee".into(),
            },
            records_read: 42,
            oldest_seq: Some(1),
            sample_seconds: 3600,
            controls: vec![ControlShare {
                control: "ECR.2".into(),
                share_at_start: Some(0.5),
                share_at_end: Some(1.0),
                lowest_share: Some(0.5),
                series: vec![SharePoint {
                    at,
                    repositories: 2,
                    passing: 1,
                }],
            }],
            transitions: vec![PeriodTransition {
                seq: 7,
                recorded_at: at,
                event_time: at,
                account: "123456789012".into(),
                region: "us-east-1".into(),
                repository: "<script>alert(1)</script>".into(),
                control: "ECR.2".into(),
                from: Some("FAIL".into()),
                to: "PASS".into(),
                reason: "immutable".into(),
                actor: "arn:aws:iam::123456789012:user/alice".into(),
                cause_kind: "repository_changed".into(),
            }],
            exceptions: Vec::new(),
            images: ImageCoverage::default(),
        }
    }

    #[test]
    fn the_html_is_self_contained_and_escapes_what_it_shows() {
        let html = render_html(&report());
        assert!(html.contains("c0ffee") && html.contains("seq 42"));
        assert!(html.contains("arn:aws:iam::123456789012:user/alice"));
        assert!(html.contains("&lt;script&gt;"), "names are escaped");
        assert!(!html.contains("<script"), "no script at all");
        assert!(html.contains("<svg"), "the chart is inline");
        for fetch in ["http://", "https://", "src=", "<link"] {
            assert!(!html.contains(fetch), "nothing is fetched: {fetch}");
        }
        assert!(html.contains("Exceptions in force (0)"));
    }

    #[test]
    fn a_missing_chromium_says_what_to_do() {
        let out = std::env::temp_dir().join("ecr-audit-never-written.pdf");
        let err = print_pdf("/nonexistent/chromium", "<html></html>", &out)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("ECR_AUDIT_CHROMIUM"), "{err}");
        assert!(err.contains("--format html"), "{err}");
    }
}
