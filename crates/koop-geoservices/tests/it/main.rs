//! The query model against random and adversarial parameters: every request gets a query or a
//! typed error, never a panic, and a query it accepts evaluates and writes SQL without one.

use std::collections::BTreeMap;

use koop_geoservices::{Query, Schema, Value};
use koop_provider::{Field, FieldType};
use proptest::prelude::*;

use koop_testkit::hostile::NAMES;

fn schema() -> Schema {
    Schema {
        fields: vec![
            Field::new("name", FieldType::String),
            Field::new("population", FieldType::Integer),
            Field::new("area", FieldType::Double),
            Field::new("surveyed", FieldType::Date),
        ],
        object_id: "OBJECTID".to_owned(),
        object_id_is_attribute: false,
    }
}

/// Values meant to break a parser: deep, long, unicode, out of range, malformed JSON.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        (1_usize..6000).prop_map(|n| format!("{}1=1{}", "(".repeat(n), ")".repeat(n))),
        (1_usize..6000).prop_map(|n| vec!["1=1"; n].join(" AND ")),
        (1_usize..3000).prop_map(|n| vec!["population > 1"; n].join(" OR ")),
        (1_usize..400).prop_map(|n| format!("{}population = 1", "NOT ".repeat(n))),
        (1_usize..5000).prop_map(|n| format!("population IN ({})", vec!["1"; n].join(","))),
        (1_usize..3000).prop_map(|n| vec!["1"; n].join("+")),
        (1_usize..500).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        (1_usize..500).prop_map(|n| format!("{{\"rings\":{}0{}}}", "[".repeat(n), "]".repeat(n))),
        (1_usize..200_000).prop_map(|n| vec!["7"; n].join(",")),
        Just("18446744073709551616".to_owned()),
        Just("-9223372036854775809".to_owned()),
        Just("1e400".to_owned()),
        Just("NaN".to_owned()),
        Just("{\"wkid\": 1e300}".to_owned()),
        Just("[{\"statisticType\":\"sum\",\"onStatisticField\":\"population\"}]".to_owned()),
        Just("{\"xmin\":-1e308,\"ymin\":-1e308,\"xmax\":1e308,\"ymax\":1e308}".to_owned()),
        Just("surveyed > DATE '99999-99-99'".to_owned()),
        Just("name LIKE '%%%%%%%%%%%%%%%%%%%%%%%%%_'".to_owned()),
        "\\PC{0,64}",
        ".{0,256}",
    ]
}

fn params() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop_oneof![
            prop::sample::select(NAMES).prop_map(str::to_owned),
            "[a-zA-Z]{1,12}"
        ],
        hostile(),
        0..6,
    )
}

/// Parses `params` and uses what it accepts; a rejection must be a bounded, non-empty message.
fn parse_and_use(params: &BTreeMap<String, String>) -> Result<(), TestCaseError> {
    match Query::parse(params, &schema()) {
        Ok(query) => {
            let row = |column: &koop_geoservices::Column| match column.name.as_str() {
                "name" => Value::Text("Wellington".to_owned()),
                "population" => Value::Number(212_000.0),
                "area" => Value::Number(289.9),
                _ => Value::Null,
            };
            let _ = query.predicate.eval(&row);
            let _ = query
                .predicate
                .to_sql(&|column| Some(format!("\"{}\"", column.name)));
            let _ = query.page_size(2000);
        }
        Err(error) => {
            prop_assert!(!error.message.is_empty());
            prop_assert!(error.message.len() < 4096, "a bounded message");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn any_parameters_give_a_query_or_a_typed_error(params in params()) {
        parse_and_use(&params)?;
    }

    /// The generator that `koop serve`'s test and `cargo xtask bench abuse` send a real server.
    #[test]
    fn the_attackers_parameters_give_a_query_or_a_typed_error(seed in any::<u64>()) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let params: BTreeMap<String, String> =
            koop_testkit::hostile::parameters(&mut rng, &["name", "population", "area", "surveyed"])
                .into_iter()
                .collect();
        parse_and_use(&params)?;
    }
}

#[test]
fn every_limit_is_named_in_its_error() {
    let cases = [
        ("where", vec!["1=1"; 4000].join(" AND "), "at most 8192"),
        ("objectIds", vec!["7"; 100_001].join(","), "at most 100000"),
        (
            "geometry",
            format!("{{\"points\":[{}]}}", vec!["[1,2]"; 100_001].join(",")),
            "at most 100000",
        ),
        ("orderByFields", vec!["name"; 17].join(","), "at most 16"),
        (
            "outStatistics",
            format!(
                "[{}]",
                vec![r#"{"statisticType":"count","onStatisticField":"name"}"#; 33].join(",")
            ),
            "at most 32",
        ),
    ];
    for (name, value, limit) in cases {
        let params = BTreeMap::from([(name.to_owned(), value)]);
        let error = Query::parse(&params, &schema()).expect_err(name);
        let text = format!("{} {}", error.message, error.details.join(" "));
        assert!(text.contains(limit), "{name}: {text}");
    }
}
