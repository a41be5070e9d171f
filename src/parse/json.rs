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
/// The longest id a message may carry: AWS's event ids are 36-character UUIDs.
pub(super) const MAX_ID_CHARS: usize = 128;

/// An event id from outside: non-empty, at most [`MAX_ID_CHARS`], and without `/`, which only
/// the ids ecr-audit makes itself contain (`reconcile/…`, `recheck/…`, `<event>/<repository>/
/// <control>`); a message that could take one of those ids could pre-empt the record it names.
pub(super) fn opt_id<'a>(
    object: &'a Value,
    field: &'static str,
) -> Result<Option<&'a str>, ParseError> {
    match opt_str(object, field)? {
        Some("") => Err(ParseError::WrongType {
            field,
            expected: "a non-empty string",
        }),
        Some(id) if id.contains('/') || id.chars().count() > MAX_ID_CHARS => {
            Err(ParseError::ReservedId { field })
        }
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

/// The longest string (in characters) kept from a message; longer ones are cut and marked.
/// Nothing ecr-audit reads from a message is legitimately longer (ARNs are at most 2,048
/// bytes, but the fields read are ids, names, tags, media types and short statuses), and
/// everything read may end up in the evidence, which is append-only.
pub const MAX_MESSAGE_STRING: usize = 1024;

/// Cuts every string (and object key) of a message to [`MAX_MESSAGE_STRING`] characters,
/// so no field of any event can grow the evidence without bound.
pub(super) fn bound_strings(value: &mut Value) {
    match value {
        Value::String(text) => bound(text),
        Value::Array(items) => items.iter_mut().for_each(bound_strings),
        Value::Object(map) => {
            let long_keys: Vec<String> = map
                .keys()
                .filter(|k| k.chars().count() > MAX_MESSAGE_STRING)
                .cloned()
                .collect();
            for key in long_keys {
                if let Some(item) = map.remove(&key) {
                    let mut short = key;
                    bound(&mut short);
                    map.insert(short, item);
                }
            }
            map.values_mut().for_each(bound_strings);
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn bound(text: &mut String) {
    if let Some((cut, _)) = text.char_indices().nth(MAX_MESSAGE_STRING) {
        text.truncate(cut);
        text.push('…');
    }
}
