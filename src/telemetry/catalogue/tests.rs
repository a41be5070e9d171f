//! The catalogue is the one source: `/metrics` HELP texts and docs/METRICS.md come from it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::telemetry::Metrics;

const BEGIN: &str = "<!-- metrics:begin -->\n";
const END: &str = "<!-- metrics:end -->";
const REGENERATE: &str = "ECR_AUDIT_WRITE_METRICS_DOC=1 cargo test --lib telemetry::";

fn docs_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/METRICS.md")
}

/// Splits the page into (before, block, after) around the markers.
fn split_at_markers(page: &str) -> Option<(&str, &str, &str)> {
    let begin = page.find(BEGIN)? + BEGIN.len();
    let end = begin + page[begin..].find(END)?;
    Some((&page[..begin], &page[begin..end], &page[end..]))
}

/// The lines only one side has, marked `-` (docs) and `+` (catalogue).
fn line_diff(docs: &str, generated: &str) -> String {
    let mut out = String::new();
    for line in docs.lines().filter(|l| !generated.lines().any(|g| g == *l)) {
        out.push_str(&format!("- {line}\n"));
    }
    for line in generated.lines().filter(|l| !docs.lines().any(|d| d == *l)) {
        out.push_str(&format!("+ {line}\n"));
    }
    out
}

#[test]
fn docs_table_matches_the_catalogue() {
    let path = docs_path();
    let page = std::fs::read_to_string(&path).unwrap_or_default();
    let Some((before, block, after)) = split_at_markers(&page) else {
        panic!("docs/METRICS.md has no `<!-- metrics:begin -->` … `<!-- metrics:end -->` block");
    };
    let generated = markdown_table();
    if block == generated {
        return;
    }
    if std::env::var_os("ECR_AUDIT_WRITE_METRICS_DOC").is_some() {
        let rewritten = format!("{before}{generated}{after}");
        if let Err(err) = std::fs::write(&path, rewritten) {
            panic!("could not rewrite {}: {err}", path.display());
        }
        return;
    }
    panic!(
        "docs/METRICS.md's metrics table differs from the catalogue (src/telemetry/catalogue.rs):\n{}\nregenerate it with: {REGENERATE}",
        line_diff(block, &generated)
    );
}

/// `# HELP name text` lines of an exposition, by name.
fn help_lines(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, help)| (name.to_owned(), help.to_owned()))
        .collect()
}

/// The family name of a catalogue entry as `# HELP` shows it (no `_total`, no `_info`).
fn family_name(spec: &MetricSpec) -> String {
    let unit = match spec.unit {
        MetricUnit::None => "",
        MetricUnit::Seconds => "_seconds",
    };
    format!("{PREFIX}_{}{unit}", spec.name)
}

#[test]
fn every_catalogue_entry_is_exported_with_its_help_and_nothing_else() {
    let text = Metrics::new().render().unwrap_or_default();
    let exported = help_lines(&text);
    let catalogued: BTreeMap<String, String> = CATALOGUE
        .iter()
        // prometheus-client ends every HELP text with a full stop.
        .map(|spec| (family_name(spec), format!("{}.", spec.help)))
        .collect();
    assert_eq!(exported, catalogued);
}

#[test]
fn a_drifted_docs_block_is_reported_line_by_line() {
    let page = format!("intro\n{BEGIN}| a |\n| b |\n{END}\nrest\n");
    let Some((_, block, after)) = split_at_markers(&page) else {
        panic!("markers not found");
    };
    assert_eq!(block, "| a |\n| b |\n");
    assert!(after.starts_with(END));
    assert_eq!(line_diff(block, "| a |\n| c |\n"), "- | b |\n+ | c |\n");
}

#[test]
fn the_table_lists_enum_values_and_exported_names() {
    let table = markdown_table();
    assert!(table.contains(
        "`code` (`aws_transient`, `db_unavailable`, `db_refused`, `db_migrate`, `id_collision`, `internal`)"
    ));
    assert!(table.contains("| `ecr_audit_event_lag_seconds` | histogram |"));
    assert!(table.contains("| `ecr_audit_build_info` | gauge (info) |"));
    assert_eq!(table.lines().count(), CATALOGUE.len() + 2);
}
