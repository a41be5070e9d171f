//! Typed look-ups into untrusted JSON that turn every surprise into a `ParseError`.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ParseError;

/// Reads an optional string member; present-but-not-a-string is an error, `null` is absent.
pub(super) fn opt_str<'a>(
    object: &'a Value,
    field: &'static str,
) -> Result<Option<&'a str>, ParseError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        // Postgres text cannot hold NUL; such a value is refused here rather than failing
        // the database transaction over and over.
        Some(Value::String(s)) if s.contains('\0') => Err(ParseError::WrongType {
            field,
            expected: "text without NUL characters",
        }),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ParseError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

pub(super) fn req_str<'a>(object: &'a Value, field: &'static str) -> Result<&'a str, ParseError> {
    opt_str(object, field)?.ok_or(ParseError::MissingField(field))
}

/// Reads an optional idempotency key: like [`opt_str`], but an empty string is refused, because
/// every event carrying an empty key would be taken for a redelivery of the first one and
/// dropped as a duplicate.
pub(super) fn opt_id<'a>(
    object: &'a Value,
    field: &'static str,
) -> Result<Option<&'a str>, ParseError> {
    match opt_str(object, field)? {
        Some("") => Err(ParseError::WrongType {
            field,
            expected: "a non-empty string",
        }),
        id => Ok(id),
    }
}

pub(super) fn req_id<'a>(object: &'a Value, field: &'static str) -> Result<&'a str, ParseError> {
    opt_id(object, field)?.ok_or(ParseError::MissingField(field))
}

pub(super) fn opt_object<'a>(
    object: &'a Value,
    field: &'static str,
) -> Result<Option<&'a Value>, ParseError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value @ Value::Object(_)) => Ok(Some(value)),
        Some(_) => Err(ParseError::WrongType {
            field,
            expected: "an object",
        }),
    }
}

pub(super) fn req_object<'a>(
    object: &'a Value,
    field: &'static str,
) -> Result<&'a Value, ParseError> {
    opt_object(object, field)?.ok_or(ParseError::MissingField(field))
}

pub(super) fn opt_bool(object: &Value, field: &'static str) -> Result<Option<bool>, ParseError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ParseError::WrongType {
            field,
            expected: "a boolean",
        }),
    }
}

/// Reads the first string of an optional array member (e.g. `resources`), skipping non-strings.
pub(super) fn first_str_in_array<'a>(object: &'a Value, field: &'static str) -> Option<&'a str> {
    object
        .get(field)
        .and_then(Value::as_array)
        .and_then(|items| items.iter().find_map(Value::as_str))
}

pub(super) fn time(value: &str, field: &'static str) -> Result<DateTime<Utc>, ParseError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ParseError::InvalidTime {
            field,
            value: value.chars().take(40).collect(),
        })
}
