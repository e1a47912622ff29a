//! Values in queries: literals of the `where` clause, and the values of feature attributes as
//! the query sees them.

use std::cmp::Ordering;

use koop_provider::FieldType;

/// A value in a query: a literal of the `where` clause, or an attribute of a feature.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL `NULL` (and missing attributes).
    Null,
    /// A number.
    Number(f64),
    /// Text.
    Text(String),
    /// A date, in milliseconds since the Unix epoch (UTC).
    Date(i64),
}

impl Value {
    /// Compares two values of the same kind; `None` when either is `NULL` or they cannot be
    /// compared (SQL's "unknown").
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Number(a), Value::Number(b)) => a.partial_cmp(b),
            (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
            (Value::Date(a), Value::Date(b)) => Some(a.cmp(b)),
            (Value::Date(a), Value::Number(b)) => (*a as f64).partial_cmp(b),
            (Value::Number(a), Value::Date(b)) => a.partial_cmp(&(*b as f64)),
            _ => None,
        }
    }

    /// The value of a feature attribute, read as `field_type`.
    pub fn from_json(value: Option<&serde_json::Value>, field_type: FieldType) -> Value {
        match (value, field_type) {
            (None | Some(serde_json::Value::Null), _) => Value::Null,
            (Some(serde_json::Value::Number(number)), FieldType::Date) => number
                .as_f64()
                .and_then(|ms| super::filter::exact_integer(ms.trunc()))
                .map_or(Value::Null, Value::Date),
            (Some(serde_json::Value::String(text)), FieldType::Date) => {
                parse_date_ms(text).map_or_else(|| Value::Text(text.clone()), Value::Date)
            }
            (Some(serde_json::Value::Number(number)), FieldType::Integer | FieldType::Double) => {
                number.as_f64().map_or(Value::Null, Value::Number)
            }
            (Some(serde_json::Value::String(text)), FieldType::Integer | FieldType::Double) => text
                .trim()
                .parse::<f64>()
                .map_or_else(|_| Value::Text(text.clone()), Value::Number),
            (Some(serde_json::Value::String(text)), FieldType::String) => Value::Text(text.clone()),
            (Some(serde_json::Value::Number(number)), FieldType::String) => {
                Value::Text(number.to_string())
            }
            (Some(serde_json::Value::Bool(flag)), _) => Value::Text(flag.to_string()),
            (Some(other), _) => Value::Text(other.to_string()),
        }
    }
}

/// Milliseconds since the Unix epoch of an ISO 8601 date or date-time (UTC when it has no
/// offset): `2023-03-07`, `2023-03-07T00:00:00.000Z`, `2023-03-07 12:30:00+12:00`.
pub fn parse_date_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(timestamp) = text.parse::<jiff::Timestamp>() {
        return Some(timestamp.as_millisecond());
    }
    let utc = |datetime: jiff::civil::DateTime| {
        datetime
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|zoned| zoned.timestamp().as_millisecond())
    };
    if let Ok(datetime) = text.replace(' ', "T").parse::<jiff::civil::DateTime>() {
        return utc(datetime);
    }
    text.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|date| utc(date.to_datetime(jiff::civil::Time::midnight())))
}

/// `2023-03-07T00:00:00.000Z` of milliseconds since the Unix epoch.
pub fn format_date_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map_or_else(|_| ms.to_string(), |timestamp| format!("{timestamp:.3}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_in_the_usual_forms() {
        assert_eq!(
            parse_date_ms("2023-03-07T00:00:00.000Z"),
            Some(1_678_147_200_000)
        );
        assert_eq!(parse_date_ms("2023-03-07"), Some(1_678_147_200_000));
        assert_eq!(
            parse_date_ms("2023-03-07 00:00:00"),
            Some(1_678_147_200_000)
        );
        assert_eq!(
            parse_date_ms("2023-03-07T12:00:00+12:00"),
            Some(1_678_147_200_000)
        );
        assert_eq!(parse_date_ms("yesterday"), None);
        assert_eq!(
            format_date_ms(1_678_147_200_000),
            "2023-03-07T00:00:00.000Z"
        );
    }

    #[test]
    fn attributes_read_as_their_field_type() {
        let json = serde_json::json!("2018-03-06T00:00:00.000Z");
        assert_eq!(
            Value::from_json(Some(&json), FieldType::Date),
            Value::Date(1_520_294_400_000)
        );
        assert_eq!(
            Value::from_json(Some(&serde_json::json!(3)), FieldType::Integer),
            Value::Number(3.0)
        );
        assert_eq!(Value::from_json(None, FieldType::String), Value::Null);
        assert_eq!(Value::Number(1.0).compare(&Value::Null), None);
    }
}
