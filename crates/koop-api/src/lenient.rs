//! Liberal decoding: a field koop does not need never makes a body fail to decode, whatever JSON
//! it holds, and a field koop needs accepts every shape the API has used for it.
//!
//! Each helper first reads the field as any JSON value, then takes what it can:
//!
//! - [`lenient`]: the value as `T`, or `None` when it has another shape (`null`, a number where a
//!   string was expected, an object where a list was expected, …);
//! - [`lenient_list`]: a list of `T`, dropping the elements that are not `T`; anything but a list
//!   is an empty list;
//! - [`lenient_string`]: text, with numbers and booleans written out; anything else `None`;
//! - [`lenient_u64`] / [`lenient_f64`] / [`lenient_bool`]: numbers also from numeric strings
//!   (`"0.5"`), booleans also from `"true"`/`"false"`;
//! - [`required_id`]: an id as a number or a numeric string (`1474` or `"1474"`); any other shape
//!   is an error that names the field.
//!
//! Used as `#[serde(default, deserialize_with = "crate::lenient::lenient")]` on every field of
//! every response type, except the few each type says it requires.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde_json::Value;

/// The field as `T`, or `None` when it is absent, `null` or of another shape.
pub(crate) fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// The elements of a list that decode as `T`; an empty list for anything but a list.
pub(crate) fn lenient_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(match Value::deserialize(deserializer)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| serde_json::from_value(item).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// As [`lenient_list`], `None` for anything but a list.
pub(crate) fn lenient_optional_list<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(match Value::deserialize(deserializer)? {
        Value::Array(items) => Some(
            items
                .into_iter()
                .filter_map(|item| serde_json::from_value(item).ok())
                .collect(),
        ),
        _ => None,
    })
}

/// Text; numbers and booleans are written out; anything else is `None`.
pub(crate) fn lenient_string<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(match Value::deserialize(deserializer)? {
        Value::String(text) => Some(text),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    })
}

/// Text, or the empty string.
pub(crate) fn lenient_text<'de, D>(deserializer: D) -> Result<String, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(lenient_string(deserializer)?.unwrap_or_default())
}

/// A whole number from a JSON number or a numeric string.
fn u64_of(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64().or_else(|| {
            number
                .as_f64()
                .filter(|float| float.fract() == 0.0 && *float >= 0.0 && *float < 2f64.powi(53))
                .map(|float| {
                    #[allow(
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss,
                        reason = "checked: whole, non-negative and below 2^53"
                    )]
                    let whole = float as u64;
                    whole
                })
        }),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// A whole number from a number or a numeric string; `None` otherwise.
pub(crate) fn lenient_u64<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(u64_of(&Value::deserialize(deserializer)?))
}

/// A number from a number or a numeric string; `None` otherwise (and for NaN).
pub(crate) fn lenient_f64<'de, D>(deserializer: D) -> Result<Option<f64>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(match Value::deserialize(deserializer)? {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    })
}

/// A boolean from `true`/`false` or the strings `"true"`/`"false"`; `None` otherwise.
pub(crate) fn lenient_bool<'de, D>(deserializer: D) -> Result<Option<bool>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(match Value::deserialize(deserializer)? {
        Value::Bool(flag) => Some(flag),
        Value::String(text) if text.eq_ignore_ascii_case("true") => Some(true),
        Value::String(text) if text.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    })
}

/// A required id: a JSON number or a numeric string. Missing, it is serde's `missing field`
/// error; of another shape, an error saying what an id must be.
pub(crate) fn required_id<'de, D>(deserializer: D) -> Result<u64, D::Error>
where
    D: Deserializer<'de>,
{
    let value = Value::deserialize(deserializer)?;
    u64_of(&value).ok_or_else(|| {
        D::Error::custom(format!(
            "an id must be a whole number or a numeric string, not {value}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Sample {
        #[serde(deserialize_with = "required_id")]
        id: u64,
        #[serde(default, deserialize_with = "lenient_f64")]
        progress: Option<f64>,
        #[serde(default, deserialize_with = "lenient_string")]
        name: Option<String>,
        #[serde(default, deserialize_with = "lenient_list")]
        tags: Vec<String>,
        #[serde(default, deserialize_with = "lenient_bool")]
        flag: Option<bool>,
    }

    #[test]
    fn every_shape_of_an_unneeded_field_decodes() {
        for odd in [
            "null",
            "3",
            "1.5",
            "\"x\"",
            "true",
            "{}",
            "[]",
            "[1, {\"a\": 2}]",
        ] {
            let json = format!(
                r#"{{"id": 7, "progress": {odd}, "name": {odd}, "tags": {odd}, "flag": {odd}}}"#
            );
            let sample: Sample = serde_json::from_str(&json).expect(&json);
            assert_eq!(sample.id, 7);
        }
        let sample: Sample = serde_json::from_str(
            r#"{"id": "12", "progress": "0.5", "name": 3, "tags": ["a", 1, "b"], "flag": "TRUE"}"#,
        )
        .expect("strings");
        assert_eq!(
            (
                sample.id,
                sample.progress,
                sample.name.as_deref(),
                sample.tags,
                sample.flag
            ),
            (
                12,
                Some(0.5),
                Some("3"),
                vec!["a".to_owned(), "b".to_owned()],
                Some(true)
            )
        );
        let sample: Sample = serde_json::from_str(r#"{"id": 4.0}"#).expect("a whole float");
        assert_eq!(sample.id, 4);
    }

    #[test]
    fn a_required_id_is_named_when_missing_or_odd() {
        let missing = serde_json::from_str::<Sample>("{}").expect_err("no id");
        assert!(
            missing.to_string().contains("missing field `id`"),
            "{missing}"
        );
        let odd = serde_json::from_str::<Sample>(r#"{"id": {"x": 1}}"#).expect_err("odd id");
        assert!(odd.to_string().contains("an id must be"), "{odd}");
        assert!(serde_json::from_str::<Sample>(r#"{"id": -1}"#).is_err());
    }
}
