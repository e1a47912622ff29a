//! Adversarial Geoservices query parameters, from a seed: what an attacker sends a FeatureServer
//! (deep and long `where` clauses, unicode, numbers out of range, malformed JSON, huge lists).
//! One generator for the query model's property test, the test against a real `koop serve` and
//! `cargo xtask bench abuse`.
//!
//! ```
//! let mut rng = fastrand::Rng::with_seed(7);
//! let params = koop_testkit::hostile::parameters(&mut rng, &["name", "value"]);
//! assert!(params.len() <= 6);
//! ```

/// The parameters of a Geoservices query, and names no client sends.
pub const NAMES: &[&str] = &[
    "where",
    "objectIds",
    "geometry",
    "geometryType",
    "inSR",
    "spatialRel",
    "outFields",
    "returnGeometry",
    "orderByFields",
    "resultOffset",
    "resultRecordCount",
    "returnCountOnly",
    "returnIdsOnly",
    "returnExtentOnly",
    "returnDistinctValues",
    "outStatistics",
    "groupByFieldsForStatistics",
    "outSR",
    "geometryPrecision",
    "quantizationParameters",
    "f",
    "callback",
    "WHERE",
    "token",
];

fn repeat(rng: &mut fastrand::Rng, max: usize, part: &str, separator: &str) -> String {
    vec![part; rng.usize(1..max)].join(separator)
}

fn unicode(rng: &mut fastrand::Rng, max: usize) -> String {
    (0..rng.usize(0..max))
        .map(|_| match rng.u8(0..4) {
            0 => rng.char('\u{0}'..='\u{7f}'),
            1 => rng.char('\u{80}'..='\u{d7ff}'),
            2 => rng.char('\u{e000}'..='\u{10ffff}'),
            _ => rng
                .choice(['\'', '"', '(', ')', '%', '\\', '\u{202e}', '\u{feff}'])
                .unwrap_or('x'),
        })
        .collect()
}

/// One value meant to break a parser. `fields` are the layer's field names, so some values
/// reach past the schema check.
pub fn value(rng: &mut fastrand::Rng, fields: &[&str]) -> String {
    let field = fields
        .get(rng.usize(0..fields.len().max(1)))
        .copied()
        .unwrap_or("name");
    match rng.u8(0..22) {
        0 => {
            let n = rng.usize(1..6000);
            format!("{}1=1{}", "(".repeat(n), ")".repeat(n))
        }
        1 => repeat(rng, 6000, "1=1", " AND "),
        2 => repeat(rng, 3000, &format!("{field} > 1"), " OR "),
        3 => format!("{}{field} = 1", "NOT ".repeat(rng.usize(1..400))),
        4 => format!("{field} IN ({})", repeat(rng, 5000, "1", ",")),
        5 => repeat(rng, 3000, "1", "+"),
        6 => {
            let n = rng.usize(1..500);
            format!("{}{}", "[".repeat(n), "]".repeat(n))
        }
        7 => {
            let n = rng.usize(1..500);
            format!("{{\"rings\":{}0{}}}", "[".repeat(n), "]".repeat(n))
        }
        8 => repeat(rng, 200_000, "7", ","),
        9 => "18446744073709551616".to_owned(),
        10 => "-9223372036854775809".to_owned(),
        11 => "1e400".to_owned(),
        12 => "NaN".to_owned(),
        13 => "{\"wkid\": 1e300}".to_owned(),
        14 => format!("[{{\"statisticType\":\"sum\",\"onStatisticField\":\"{field}\"}}]"),
        15 => "{\"xmin\":-1e308,\"ymin\":-1e308,\"xmax\":1e308,\"ymax\":1e308}".to_owned(),
        16 => format!("{field} > DATE '99999-99-99'"),
        17 => format!("{field} LIKE '{}_'", "%".repeat(rng.usize(1..200))),
        18 => format!("{field} = '{}'", unicode(rng, 64).replace('\'', "''")),
        19 => unicode(rng, 256),
        20 => format!(
            "{{\"mode\":\"view\",\"originPosition\":\"upperLeft\",\"tolerance\":{},\"extent\":{{\"xmin\":0,\"ymin\":0,\"xmax\":{},\"ymax\":1}}}}",
            rng.f64() * 1e-300,
            rng.i64(..)
        ),
        _ => rng.i64(..).to_string(),
    }
}

/// Up to six parameters: mostly Geoservices names, some made up, each with a [`value`].
pub fn parameters(rng: &mut fastrand::Rng, fields: &[&str]) -> Vec<(String, String)> {
    (0..rng.usize(0..=6))
        .map(|_| {
            let name = if rng.u8(0..8) == 0 {
                (0..rng.usize(1..12)).map(|_| rng.alphabetic()).collect()
            } else {
                NAMES[rng.usize(0..NAMES.len())].to_owned()
            };
            (name, value(rng, fields))
        })
        .collect()
}
