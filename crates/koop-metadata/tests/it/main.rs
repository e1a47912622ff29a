//! koop-metadata through its public API: real documents, hostile documents, the round trip,
//! and the Koordinates calls against koop-testkit.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use koop_api::{KoordinatesConnection, RetryPolicy};
use koop_metadata::{DublinCoreMetadata, Element, Error, SourceRow, Value};
use koop_testkit::{TestLayer, TestServer, TestServerConfig, data};
use proptest::prelude::*;

fn connection(server: &TestServer) -> Result<KoordinatesConnection> {
    Ok(KoordinatesConnection::builder()
        .api_key(Some(server.api_key().to_owned()))
        .domain(server.domain())
        .plain_http(true)
        .retry_policy(RetryPolicy {
            max_attempts: 2,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
            max_retry_after: Duration::from_secs(1),
        })
        .build()?)
}

/// A record whose values need every kind of care.
fn tricky() -> Result<DublinCoreMetadata> {
    let mut metadata = DublinCoreMetadata::new();
    metadata
        .set_title("Parcels & <Titles> \"quoted\" 'single' — Ōtautahi 🗺")?
        .add(Element::Title, Value::with_lang("Ngā Whenua", "mi"))?
        .add(Element::Subject, Value::new("cadastral"))?
        .add(Element::Subject, Value::new("  padded  "))?
        .set_description("line one\r\nline two\ttabbed\n]]> <![CDATA[ not cdata")?
        .set_rights("")?;
    Ok(metadata)
}

#[test]
fn the_fixtures_xml_documents_parse() -> Result<()> {
    let dir = koop_testkit::fixtures::koordinates();
    let mut read = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "xml") {
            let xml = std::fs::read_to_string(&path)?;
            DublinCoreMetadata::from_raw_xml(&xml).with_context(|| path.display().to_string())?;
            read += 1;
        }
    }
    assert!(read >= 1, "the fixtures hold XML documents");
    Ok(())
}

#[test]
fn documents_of_the_original_package_and_the_help_pages_parse() -> Result<()> {
    // The Python package wrote https:// namespace URIs, under other prefixes too.
    let original = r#"<?xml version="1.0" encoding="utf-8"?>
<oai_dc:dc xmlns:oai_dc="https://www.openarchives.org/OAI/2.0/oai_dc/" xmlns:d="https://purl.org/dc/elements/1.1/">
  <d:title>NZ Building Outlines</d:title>
  <d:creator>LINZ</d:creator>
  <d:source>layer_id,title,version_id,last_updated
101290,NZ Building Outlines,412345,2025-05-16T22:24:27Z</d:source>
  <other:thing xmlns:other="urn:x">ignored</other:thing>
</oai_dc:dc>"#;
    let metadata = DublinCoreMetadata::from_raw_xml(original)?;
    assert_eq!(metadata.title(), Some("NZ Building Outlines"));
    assert_eq!(metadata.creator(), Some("LINZ"));
    assert_eq!(metadata.source_rows()?[0].version_id, 412_345);
    assert_eq!(metadata.iter().count(), 3, "unknown elements are ignored");

    let help_page =
        "<dc><title>Roads</title><subject>transport</subject><subject>roads</subject></dc>";
    let metadata = DublinCoreMetadata::from_raw_xml(help_page)?;
    assert_eq!(metadata.title(), Some("Roads"));
    assert_eq!(metadata.values(Element::Subject).len(), 2);

    // A prefix alone does not make an element Dublin Core: the namespace does.
    let impostor = r#"<root xmlns:dc="urn:not-dublin-core"><dc:title>no</dc:title></root>"#;
    assert!(DublinCoreMetadata::from_raw_xml(impostor)?.is_empty());
    Ok(())
}

#[test]
fn dtds_and_entities_are_refused() {
    let billion_laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<oai_dc:dc xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/" xmlns:dc="http://purl.org/dc/elements/1.1/">
  <dc:title>&lol2;</dc:title>
</oai_dc:dc>"#;
    let error = DublinCoreMetadata::from_raw_xml(billion_laughs).expect_err("a DTD");
    assert!(
        matches!(error, Error::Dtd { line: 2, column: 1 }),
        "{error:?}"
    );

    let xxe =
        r#"<!DOCTYPE dc [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><dc><title>&xxe;</title></dc>"#;
    assert!(matches!(
        DublinCoreMetadata::from_raw_xml(xxe),
        Err(Error::Dtd { .. })
    ));

    let undefined = r#"<dc xmlns="http://purl.org/dc/elements/1.1/"><title>&nbsp;</title></dc>"#;
    let error = DublinCoreMetadata::from_raw_xml(undefined).expect_err("undefined entity");
    assert!(error.to_string().contains("undefined entity"), "{error}");
}

#[test]
fn malformed_and_huge_documents_are_errors_with_a_position() {
    let malformed = "<oai_dc:dc xmlns:oai_dc=\"x\" xmlns:dc=\"http://purl.org/dc/elements/1.1/\">\n  <dc:title>open\n</oai_dc:dc>";
    match DublinCoreMetadata::from_raw_xml(malformed) {
        Err(Error::Xml { line, column, .. }) => assert_eq!((line, column), (3, 1)),
        other => panic!("expected an XML error at line 3, got {other:?}"),
    }
    let huge = format!(
        "<dc><title>{}</title></dc>",
        "x".repeat(koop_metadata::MAX_XML_BYTES)
    );
    assert!(matches!(
        DublinCoreMetadata::from_raw_xml(&huge),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn the_output_is_well_formed_for_xmllint_and_round_trips() -> Result<()> {
    let metadata = tricky()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("metadata.xml");
    metadata.to_xml(&path)?;
    assert_eq!(std::fs::read_to_string(&path)?, metadata.as_xml());
    let output = Command::new("xmllint")
        .arg("--noout")
        .arg(&path)
        .output()
        .context("running xmllint (apt-get install libxml2-utils)")?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let again = DublinCoreMetadata::from_raw_xml(&std::fs::read_to_string(&path)?)?;
    assert_eq!(again, metadata);
    assert_eq!(again.values(Element::Title)[1].lang.as_deref(), Some("mi"));
    let xml = metadata.as_xml();
    assert!(xml.contains(r#"xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/""#));
    assert!(xml.contains(r#"xmlns:dc="http://purl.org/dc/elements/1.1/""#));
    Ok(())
}

/// Text of the characters XML 1.0 can carry.
fn xml_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex(
        "[\\t\\n\\r\\x{20}-\\x{D7FF}\\x{E000}-\\x{FFFD}\\x{10000}-\\x{10FFFF}]{0,24}",
    )
    .expect("a valid regex")
}

fn value() -> impl Strategy<Value = Value> {
    (xml_text(), proptest::option::of("[a-z]{2,3}(-[A-Z]{2})?"))
        .prop_map(|(text, lang)| Value { text, lang })
}

proptest! {
    #[test]
    fn any_set_of_values_round_trips(values in proptest::collection::vec(proptest::collection::vec(value(), 0..3), 15)) {
        let mut metadata = DublinCoreMetadata::new();
        for (element, values) in Element::ALL.into_iter().zip(values) {
            metadata.set_values(element, values).expect("valid values");
        }
        let again = DublinCoreMetadata::from_raw_xml(&metadata.as_xml()).expect("our own XML reads");
        prop_assert_eq!(again, metadata);
    }
}

#[tokio::test]
async fn koordinates_dc_documents_parse_and_a_layer_without_one_is_an_error() -> Result<()> {
    let config = TestServerConfig {
        layers: vec![
            TestLayer::vector(
                1002,
                "NZ Islands — Te Ika-a-Māui & Te Waipounamu",
                data::NZ_ISLANDS_GPKG,
            ),
            TestLayer::vector(8, "No metadata", data::NZ_ISLANDS_GPKG).without_dublin_core(),
        ],
        ..TestServerConfig::default()
    };
    let server = TestServer::start_with(config).await?;
    let connection = connection(&server)?;
    let metadata = DublinCoreMetadata::from_koordinates(&connection, 1002).await?;
    assert_eq!(
        metadata.title(),
        Some("NZ Islands — Te Ika-a-Māui & Te Waipounamu")
    );
    assert_eq!(
        metadata.values(Element::Title)[1].lang.as_deref(),
        Some("mi")
    );
    assert_eq!(
        metadata.creator(),
        Some("koop testkit & Toitū Te Whenua <test>")
    );
    assert_eq!(metadata.values(Element::Subject).len(), 2);
    assert!(
        metadata
            .rights()
            .is_some_and(|rights| rights.ends_with('🗺'))
    );

    let error = DublinCoreMetadata::from_koordinates(&connection, 8)
        .await
        .expect_err("no DC");
    assert!(
        matches!(error, Error::NoMetadata { layer_id: 8, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("layer 8"));
    Ok(())
}

#[tokio::test]
async fn a_template_comes_from_the_layer_details() -> Result<()> {
    let server = TestServer::start().await?;
    let connection = connection(&server)?;
    let metadata = DublinCoreMetadata::populate_template(&connection, 1003).await?;
    assert_eq!(metadata.title(), Some("NZ Distance to Coast (4 km grid)"));
    assert_eq!(metadata.resource_type(), Some("grid"));
    assert!(
        metadata
            .date()
            .is_some_and(|date| date.starts_with("2026-"))
    );
    assert!(
        metadata
            .identifier()
            .is_some_and(|url| url.contains("/layer/1003-"))
    );
    assert_eq!(metadata.rights(), Some("Public Domain"));
    assert_eq!(
        metadata.publisher(),
        Some("koop testkit — Toitū Te Whenua test data")
    );
    Ok(())
}

#[tokio::test]
async fn the_source_field_lists_layer_versions_with_titles_and_dates() -> Result<()> {
    let config = TestServerConfig {
        layers: vec![
            TestLayer::vector(61, "Parcels, Titles & \"Easements\"", data::NZ_ISLANDS_GPKG),
            TestLayer::vector(62, "Roads", data::NZ_ISLANDS_GPKG),
        ],
        ..TestServerConfig::default()
    };
    let server = TestServer::start_with(config).await?;
    let connection = connection(&server)?;
    let first_61 = server.current_version(61).context("61")?;
    let second_61 = server
        .bump_version(61, koop_testkit::BumpKind::Data)
        .context("bump")?;
    let current_62 = server.current_version(62).context("62")?;

    let mut metadata = DublinCoreMetadata::new();
    let before = server.counters();
    let error = metadata
        .update_source_field(&connection, &[61, 62], &[first_61])
        .await
        .expect_err("unequal lists");
    assert!(matches!(
        error,
        Error::MismatchedSourceLists {
            layers: 2,
            versions: 1
        }
    ));
    assert_eq!(server.counters(), before, "no request was made");

    metadata
        .update_source_field(&connection, &[61, 62], &[first_61, current_62])
        .await?;
    let rows = metadata.source_rows()?;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].title, "Parcels, Titles & \"Easements\"");
    assert_eq!((rows[0].layer_id, rows[0].version_id), (61, first_61));
    assert_eq!((rows[1].layer_id, rows[1].version_id), (62, current_62));
    assert!(
        rows.iter().all(|row| row.last_updated.starts_with("2026-")),
        "{rows:?}"
    );
    assert_ne!(
        rows[0].last_updated, rows[1].last_updated,
        "each version's own date"
    );

    metadata
        .update_source_with_latest_layer_versions(&connection, &[61])
        .await?;
    let latest: Vec<SourceRow> = metadata.source_rows()?;
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].version_id, second_61);
    let reread = DublinCoreMetadata::from_raw_xml(&metadata.as_xml())?;
    assert_eq!(reread.source_rows()?, latest);
    Ok(())
}
