//! Reading what a client sent: body fields of the right JSON type, query parameters in range,
//! and the document's formats (`02:30:00` durations, `1GB` sizes, ISO 8601 dates). Every
//! refusal is a 422 naming the field and what is wrong with it.

use crate::ApiError;
use gantry_guest::http::Request;
use serde_json::{Map, Value};

/// A JSON object body with only the `allowed` fields: a misspelt field is an error rather than
/// a change silently not made.
pub fn only(body: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match body.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::invalid(
            unknown,
            format!("is not a field here (known: {})", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

/// A field that may be absent, null or a value: `None` when absent, `Some(None)` when null.
pub fn field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<Option<&'a Value>> {
    body.get(name).map(|v| (!v.is_null()).then_some(v))
}

/// An optional string: absent or null is `None`.
pub fn opt_string(body: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match field(body, name).flatten() {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(name, "must be a string")),
    }
}

/// A string that may be cleared: absent `None`, null `Some(None)`.
pub fn clearable_string(
    body: &Map<String, Value>,
    name: &str,
) -> Result<Option<Option<String>>, ApiError> {
    match field(body, name) {
        None => Ok(None),
        Some(None) => Ok(Some(None)),
        Some(Some(Value::String(s))) => Ok(Some(Some(s.clone()))),
        Some(Some(_)) => Err(ApiError::invalid(name, "must be a string or null")),
    }
}

/// An optional whole number within `range`.
pub fn opt_int(
    body: &Map<String, Value>,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<i64>, ApiError> {
    match field(body, name).flatten() {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if range.contains(&n) => Ok(Some(n)),
            Some(_) => Err(ApiError::invalid(
                name,
                format!("must be from {} to {}", range.start(), range.end()),
            )),
            None => Err(ApiError::invalid(name, "must be a whole number")),
        },
    }
}

/// An optional boolean.
pub fn opt_bool(body: &Map<String, Value>, name: &str) -> Result<Option<bool>, ApiError> {
    match field(body, name).flatten() {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid(name, "must be true or false")),
    }
}

/// An optional JSON object, as compact text.
pub fn opt_object(body: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match field(body, name).flatten() {
        None => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.to_string())),
        Some(_) => Err(ApiError::invalid(name, "must be a JSON object")),
    }
}

/// An optional list of strings.
pub fn opt_strings(body: &Map<String, Value>, name: &str) -> Result<Option<Vec<String>>, ApiError> {
    match field(body, name).flatten() {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::invalid(name, "must be a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ApiError::invalid(name, "must be a list of strings")),
    }
}

/// `HH:MM:SS` (hours may pass 24) as seconds.
pub fn parse_duration(name: &str, text: &str) -> Result<u64, ApiError> {
    let bad = || ApiError::invalid(name, "must be a duration HH:MM:SS, such as 02:30:00");
    let parts: Vec<&str> = text.split(':').collect();
    let [h, m, s] = parts.as_slice() else {
        return Err(bad());
    };
    let number = |p: &str, max: u64| -> Result<u64, ApiError> {
        if p.is_empty() || p.len() > 6 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        p.parse::<u64>().ok().filter(|n| *n <= max).ok_or_else(bad)
    };
    Ok(number(h, 999_999)? * 3600 + number(m, 59)? * 60 + number(s, 59)?)
}

/// Seconds as `HH:MM:SS`.
pub fn format_duration(secs: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// An optional duration field (`HH:MM:SS`); null clears it.
pub fn clearable_duration(
    body: &Map<String, Value>,
    name: &str,
) -> Result<Option<Option<u64>>, ApiError> {
    match clearable_string(body, name)? {
        None => Ok(None),
        Some(None) => Ok(Some(None)),
        Some(Some(text)) => parse_duration(name, &text).map(|s| Some(Some(s))),
    }
}

const UNITS: [(&str, u64); 5] = [
    ("TB", 1 << 40),
    ("GB", 1 << 30),
    ("MB", 1 << 20),
    ("KB", 1 << 10),
    ("B", 1),
];

/// A size such as `1GB`, `500MB` or a number of bytes.
pub fn parse_size(name: &str, value: &Value) -> Result<u64, ApiError> {
    let bad = || ApiError::invalid(name, "must be a size such as 500MB or 1GB, or bytes");
    if let Some(n) = value.as_u64() {
        return Ok(n);
    }
    let text = value.as_str().ok_or_else(bad)?.trim().to_ascii_uppercase();
    let (unit, factor) = UNITS
        .iter()
        .find(|(unit, _)| text.ends_with(unit))
        .ok_or_else(bad)?;
    let digits = text[..text.len() - unit.len()].trim();
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(*factor).ok_or_else(bad)
}

/// Bytes in the largest unit that divides them exactly.
pub fn format_size(bytes: u64) -> String {
    for (unit, factor) in UNITS {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

/// An ISO 8601 / RFC 3339 instant (or a bare date, midnight UTC) as ms since the epoch.
pub fn parse_instant(name: &str, text: &str) -> Result<i64, ApiError> {
    use time::format_description::well_known::Rfc3339;
    let bad = || {
        ApiError::invalid(
            name,
            "must be an ISO 8601 date or time, such as 2025-07-01 or 2025-07-01T00:00:00Z",
        )
    };
    let instant = match time::OffsetDateTime::parse(text, &Rfc3339) {
        Ok(t) => t,
        Err(_) => {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(text, &format)
                .map_err(|_| bad())?
                .midnight()
                .assume_utc()
        }
    };
    i64::try_from(instant.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad())
}

/// A whole-number query parameter within `range`, or `default`.
pub fn query_int(
    request: &Request,
    name: &str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ApiError> {
    let Some(raw) = request.query(name) else {
        return Ok(default);
    };
    match raw.trim().parse::<i64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(
            name,
            format!(
                "must be a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// A query parameter that must be one of `choices`, or `default`.
pub fn query_choice<'a>(
    request: &Request,
    name: &str,
    default: &'a str,
    choices: &[&'a str],
) -> Result<&'a str, ApiError> {
    let Some(raw) = request.query(name) else {
        return Ok(default);
    };
    choices
        .iter()
        .find(|c| **c == raw)
        .copied()
        .ok_or_else(|| ApiError::invalid(name, format!("must be one of {}", choices.join(", "))))
}

/// A comma-separated query parameter, without blanks.
pub fn query_list(request: &Request, name: &str) -> Vec<String> {
    request
        .query(name)
        .map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A non-empty query parameter.
pub fn query_text(request: &Request, name: &str) -> Option<String> {
    request.query(name).filter(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_read_and_print_as_the_document_writes_them() {
        assert_eq!(parse_duration("d", "02:30:00").unwrap(), 9000);
        assert_eq!(parse_duration("d", "240:15:30").unwrap(), 864_930);
        assert_eq!(format_duration(9000), "02:30:00");
        for bad in [
            "",
            "1:2",
            "01:60:00",
            "a:b:c",
            "-1:00:00",
            "01:00:00:00",
            "+1:00:00",
        ] {
            assert!(parse_duration("d", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_take_units_and_bytes() {
        assert_eq!(parse_size("s", &json!("1GB")).unwrap(), 1 << 30);
        assert_eq!(parse_size("s", &json!("500 mb")).unwrap(), 500 << 20);
        assert_eq!(parse_size("s", &json!(42)).unwrap(), 42);
        assert_eq!(format_size(1 << 30), "1GB");
        assert_eq!(format_size(1500), "1500B");
        for bad in [
            json!("1XB"),
            json!("GB"),
            json!(-1),
            json!("99999999999TB"),
            json!(true),
        ] {
            assert!(parse_size("s", &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instants_are_rfc3339_or_dates() {
        assert_eq!(parse_instant("t", "1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(
            parse_instant("t", "2025-07-01").unwrap(),
            parse_instant("t", "2025-07-01T00:00:00Z").unwrap()
        );
        assert_eq!(
            parse_instant("t", "2025-07-01T02:00:00+02:00").unwrap(),
            parse_instant("t", "2025-07-01T00:00:00Z").unwrap()
        );
        for bad in ["yesterday", "2025-13-01", "2025-07-01T25:00:00Z", ""] {
            assert!(parse_instant("t", bad).is_err(), "{bad}");
        }
    }
}
