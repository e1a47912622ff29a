//! Fields inferred from features, for providers that do not declare them.

use crate::model::{Field, FieldType};

/// `true` for ISO 8601 dates and date-times: `2023-03-07`, `2023-03-07T00:00:00.000Z`,
/// `2023-03-07 12:30:00+12:00`.
pub fn is_iso_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    let date = bytes.len() >= 10
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10);
    if !date {
        return false;
    }
    if bytes.len() == 10 {
        return true;
    }
    let time = matches!(bytes[10], b'T' | b' ')
        && digits(11..13)
        && bytes.get(13) == Some(&b':')
        && digits(14..16);
    time && bytes[16..]
        .iter()
        .all(|byte| byte.is_ascii_digit() || matches!(byte, b':' | b'.' | b'Z' | b'+' | b'-'))
}

/// The fields of `features`' properties, in first-seen order, typed from every value (not just
/// the first feature's): Integer when all are integers, Double when all are numbers, Date when
/// all are ISO 8601 strings, String otherwise (booleans too, as Koop does). Nulls do not count.
pub fn infer_fields(features: &[geojson::Feature]) -> Vec<Field> {
    let mut fields: Vec<(String, Option<FieldType>)> = Vec::new();
    for properties in features
        .iter()
        .filter_map(|feature| feature.properties.as_ref())
    {
        for (name, value) in properties {
            let seen = match value {
                serde_json::Value::Null => None,
                serde_json::Value::Number(number) if number.is_i64() || number.is_u64() => {
                    Some(FieldType::Integer)
                }
                serde_json::Value::Number(_) => Some(FieldType::Double),
                serde_json::Value::String(text) if is_iso_date(text) => Some(FieldType::Date),
                _ => Some(FieldType::String),
            };
            let index =
                if let Some(index) = fields.iter().position(|(existing, _)| existing == name) {
                    index
                } else {
                    fields.push((name.clone(), None));
                    fields.len() - 1
                };
            let slot = &mut fields[index].1;
            *slot = match (*slot, seen) {
                (current, None) => current,
                (None, new) => new,
                (Some(a), Some(b)) if a == b => Some(a),
                (
                    Some(FieldType::Integer | FieldType::Double),
                    Some(FieldType::Integer | FieldType::Double),
                ) => Some(FieldType::Double),
                _ => Some(FieldType::String),
            };
        }
    }
    fields
        .into_iter()
        .map(|(name, field_type)| Field::new(name, field_type.unwrap_or(FieldType::String)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_decides_the_type() {
        let features: Vec<geojson::Feature> = serde_json::from_value(serde_json::json!([
            {"type": "Feature", "geometry": null, "properties": {"n": 1, "area": 1086.0, "when": "2023-03-07T00:00:00.000Z", "flag": true, "mixed": 1}},
            {"type": "Feature", "geometry": null, "properties": {"n": 2, "area": 289.9, "when": null, "flag": false, "mixed": "x"}},
        ]))
        .expect("features");
        let fields: Vec<(String, FieldType)> = infer_fields(&features)
            .into_iter()
            .map(|field| (field.name, field.field_type))
            .collect();
        assert_eq!(
            fields,
            [
                ("n".to_owned(), FieldType::Integer),
                ("area".to_owned(), FieldType::Double),
                ("when".to_owned(), FieldType::Date),
                ("flag".to_owned(), FieldType::String),
                ("mixed".to_owned(), FieldType::String),
            ]
        );
        assert!(is_iso_date("2023-03-07") && is_iso_date("2023-03-07 12:30:00+12:00"));
        assert!(!is_iso_date("2023-3-7") && !is_iso_date("Tuesday"));
    }
}
