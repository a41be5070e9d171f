//! What must hold for every message the parser sees, checked by the fuzz targets.
//!
//! The parser's promises (see `ecr_audit::parse`): it never panics; an accepted event carries
//! valid identifiers, its own id, and nothing the store cannot write (Postgres `text` and
//! `jsonb` refuse NUL); a rejection explains itself in a bounded message; configured
//! fallbacks fill gaps and never override what the event says; and the outcome depends only
//! on the JSON value, not on its spelling. A broken promise panics, which libFuzzer records
//! as a crash with the input that caused it.

pub mod verify_envelope;

use ecr_audit::domain::{AccountId, Digest, Region, RepositoryName};
use ecr_audit::parse::{AuditEvent, Change, InputFormat, ParseContext, ParseError, parse};
use serde_json::Value;

/// Longest rejection reason accepted: reasons are stored and logged per message, so they quote
/// at most a short prefix of hostile input (80 characters, which `{:?}` may escape to ~9 each).
pub const MAX_REASON_CHARS: usize = 1024;

/// The configuration a worker normally runs with: both fallbacks present.
pub fn configured() -> ParseContext {
    ParseContext {
        default_account: AccountId::parse("111122223333").ok(),
        default_region: Region::parse("eu-west-1").ok(),
    }
}

/// Parses `body` with and without configured fallbacks and checks every promise; returns the
/// outcome under the configured context.
///
/// # Panics
/// When the parser breaks one of its promises: that is the finding.
pub fn check(body: &[u8], format: InputFormat) -> Result<AuditEvent, ParseError> {
    let bare = ParseContext::default();
    let ctx = configured();
    let outcome = parse(body, format, &ctx);

    assert_eq!(
        outcome,
        parse(body, format, &ctx),
        "parsing the same bytes twice gave two answers"
    );

    let without_fallbacks = parse(body, format, &bare);
    if let Ok(event) = &without_fallbacks {
        assert_eq!(
            Ok(event),
            outcome.as_ref(),
            "configured fallbacks changed an event that did not need them"
        );
    }
    if outcome.is_err() {
        assert!(
            without_fallbacks.is_err(),
            "an event accepted without fallbacks was refused with them"
        );
    }

    match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            // The same value spelt differently (whitespace, escapes, key order, duplicates
            // collapsed) must get the same answer: the parser reads values, not bytes.
            let respelt = value.to_string();
            assert_eq!(
                parse(respelt.as_bytes(), format, &ctx),
                outcome,
                "re-encoding the same JSON value changed the outcome"
            );
            match &outcome {
                Ok(event) => check_event(event, &value, format),
                Err(error) => check_rejection(error),
            }
        }
        Err(_) => assert!(
            matches!(outcome, Err(ParseError::InvalidJson(_))),
            "bytes that are not JSON were not refused as invalid JSON: {outcome:?}"
        ),
    }
    outcome
}

/// What every accepted event must satisfy, whatever its kind.
fn check_event(event: &AuditEvent, input: &Value, format: InputFormat) {
    assert_eq!(
        AccountId::parse(event.account.as_str()).as_ref(),
        Ok(&event.account),
        "account"
    );
    assert_eq!(
        Region::parse(event.region.as_str()).as_ref(),
        Ok(&event.region),
        "region"
    );
    if let Some(repository) = event.change.repository() {
        assert_eq!(
            RepositoryName::parse(repository.as_str()).as_ref(),
            Ok(repository),
            "repository"
        );
    }
    if let Some(digest) = event.change.digest() {
        assert_eq!(
            Digest::parse(digest.as_str()).as_ref(),
            Ok(digest),
            "digest"
        );
    }
    assert!(
        !event.id.is_empty(),
        "an event without an id would collapse with every other id-less event"
    );
    assert_eq!(event.id, expected_id(input, format), "the event's identity");

    if let Change::ScanCompleted {
        severity_counts, ..
    } = &event.change
    {
        assert!(
            severity_counts.values().all(|count| *count >= 0),
            "negative finding count accepted: {severity_counts:?}"
        );
    }

    // The event and its change are stored as text and jsonb; both refuse NUL, so an accepted
    // event holding one would fail its transaction on every delivery instead of being rejected.
    let stored = serde_json::to_value(event).expect("an accepted event serialises to JSON");
    assert!(
        !holds_nul(&stored),
        "accepted event carries a NUL the database cannot store: {stored}"
    );
}

/// The idempotency key the module documents: CloudTrail `eventID` (falling back to the
/// envelope `id`), else the envelope `id`.
fn expected_id(input: &Value, format: InputFormat) -> String {
    let event_id = |record: &Value| {
        record
            .get("eventID")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let envelope_id = input.get("id").and_then(Value::as_str).map(str::to_owned);
    let id = match format {
        InputFormat::CloudTrailRecord => event_id(input),
        InputFormat::Envelope
            if input.get("detail-type").and_then(Value::as_str)
                == Some("AWS API Call via CloudTrail") =>
        {
            input.get("detail").and_then(event_id).or(envelope_id)
        }
        InputFormat::Envelope => envelope_id,
    };
    id.unwrap_or_default()
}

fn check_rejection(error: &ParseError) {
    let reason = error.to_string();
    assert!(
        reason.chars().count() <= MAX_REASON_CHARS,
        "rejection reason of {} characters: {reason:.200}",
        reason.chars().count()
    );
    assert!(!reason.contains('\0'), "rejection reason holds a NUL");
    assert!(!error.code().is_empty());
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(members) => members
            .iter()
            .any(|(key, member)| key.contains('\0') || holds_nul(member)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Wraps a CloudTrail record the way EventBridge delivers it, without `account`, `region` or
/// `resources`, so that everything the parser reads comes from the record or the fallbacks.
pub fn as_envelope(record: &Value) -> Value {
    serde_json::json!({
        "version": "0",
        "id": "00000000-0000-4000-8000-00000000f022",
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ecr",
        "time": "2026-01-01T00:00:00Z",
        "detail": record,
    })
}
