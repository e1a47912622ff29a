//! Field-by-field comparison of our responses with the reference Koop's.

use serde_json::Value;

/// How two responses may differ at a path (`/`-separated keys, `*` for any array index or
/// key).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Allowed<'a> {
    /// The value may differ (same JSON type).
    Value(&'a str),
    /// The member may be absent from ours, or only in ours.
    Presence(&'a str),
}

fn matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    pattern.len() == path.len()
        && pattern
            .iter()
            .zip(&path)
            .all(|(pattern, part)| *pattern == "*" || pattern == part)
}

fn numbers_equal(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0) || (a - b).abs() < 1e-3
}

fn walk(
    reference: &Value,
    ours: &Value,
    path: &str,
    allowed: &[Allowed<'_>],
    out: &mut Vec<String>,
) {
    let value_may_differ = allowed
        .iter()
        .any(|allow| matches!(allow, Allowed::Value(pattern) if matches(pattern, path)));
    match (reference, ours) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let child = format!("{path}/{key}");
                match b.get(key) {
                    Some(other) => walk(value, other, &child, allowed, out),
                    None if allowed.iter().any(
                        |allow| matches!(allow, Allowed::Presence(pattern) if matches(pattern, &child)),
                    ) => {}
                    None => out.push(format!("{child}: missing from ours")),
                }
            }
            for key in b.keys().filter(|key| !a.contains_key(*key)) {
                let child = format!("{path}/{key}");
                if !allowed.iter().any(
                    |allow| matches!(allow, Allowed::Presence(pattern) if matches(pattern, &child)),
                ) {
                    out.push(format!("{child}: only in ours ({})", b[key]));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() && !value_may_differ {
                out.push(format!("{path}: {} items, ours {}", a.len(), b.len()));
            }
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                walk(x, y, &format!("{path}/{index}"), allowed, out);
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            if !value_may_differ && !numbers_equal(a, b) {
                out.push(format!("{path}: {a}, ours {b}"));
            }
        }
        (a, b) if std::mem::discriminant(a) == std::mem::discriminant(b) => {
            if !value_may_differ && a != b {
                out.push(format!("{path}: {a}, ours {b}"));
            }
        }
        (a, b) => {
            if !value_may_differ {
                out.push(format!("{path}: {a}, ours {b} (another type)"));
            }
        }
    }
}

/// The differences between the reference and ours that `allowed` does not allow.
pub(crate) fn differences(reference: &Value, ours: &Value, allowed: &[Allowed<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    walk(reference, ours, "", allowed, &mut out);
    out
}

#[test]
fn the_comparison_finds_what_differs() {
    let reference = serde_json::json!({"a": 1, "b": [1, 2], "c": {"d": "x"}, "e": 1086});
    let ours = serde_json::json!({"a": 2, "b": [1], "c": {"d": "x", "f": 1}, "e": 1086.0});
    let found = differences(&reference, &ours, &[]);
    assert_eq!(found.len(), 3, "{found:?}");
    let found = differences(
        &reference,
        &ours,
        &[
            Allowed::Value("/a"),
            Allowed::Value("/b"),
            Allowed::Presence("/c/f"),
        ],
    );
    assert!(found.is_empty(), "{found:?}");
}
