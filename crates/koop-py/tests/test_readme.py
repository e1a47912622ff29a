"""The code blocks of the original package's README (koop 0.0.7), run unchanged except for the
site, the key and the ids: every call of `get_layer_from_id` and `KoordinatesConnection` is
pointed at the fake site with its key, and the README's example ids (123, 456, 789 and versions
1, 2) become layers and versions the fake site has. The rewrite is done on the syntax tree, so
the rest of each block is the README's text.
"""

import ast
import subprocess
import textwrap
from pathlib import Path

import koop
from koop.metadata import DublinCoreMetadata

SIMPLE = '''
from koop import get_layer_from_id

# Download and cache a layer
layer_path = get_layer_from_id(
    layer_id=123,
    api_key="your-api-key"
)

# Subsequent calls with the same layer ID return the cached file
# if the version hasn't changed
cached_path = get_layer_from_id(layer_id=123, api_key="your-api-key")
'''

QUICK_START = '''
from pathlib import Path
from koop import get_layer_from_id
from koop.backend.conn import KoordinatesConnection
from koop.metadata import DublinCoreMetadata

# Simple layer download with caching
layer_path = get_layer_from_id(
    layer_id=123,
    api_key="your-api-key"
)
# Returns: Path to cached GeoPackage file

# Using custom domain (e.g., LINZ data)
linz_layer = get_layer_from_id(
    layer_id=456,
    api_key="your-api-key",
    domain="data.linz.govt.nz"
)

# Advanced: Using the connection object directly
conn = KoordinatesConnection(
    api_key="your-api-key",
    domain="ttgroup.koordinates.com"
)

try:
    # Get layer metadata
    metadata = DublinCoreMetadata.from_koordinates(
        conn=conn,
        layer_id=123
    )
    print(f"Layer title: {metadata.title}")
    print(f"Published: {metadata.date}")

    # Edit metadata fields
    metadata.edit_metadata_fields(
        description="Updated description",
        creator="Your Organization"
    )

    # Update source field with specific layer versions
    metadata.update_source_field(
        conn=conn,
        layer_ids=[123, 456],
        version_ids=[1, 2]
    )

    # Export metadata to XML
    metadata.to_xml(Path("metadata.xml"))
finally:
    conn.close()
'''

METADATA = '''
from koop.backend.conn import KoordinatesConnection
from koop.metadata import DublinCoreMetadata

conn = KoordinatesConnection(api_key="your-api-key")

# Fetch metadata from Koordinates
metadata = DublinCoreMetadata.from_koordinates(conn=conn, layer_id=123)

# Access metadata fields
print(metadata.title)
print(metadata.description)
print(metadata.publisher)

# Create metadata template from layer details
template = DublinCoreMetadata.populate_template(conn=conn, layer_id=123)

# Update source field with latest layer versions
metadata.update_source_with_latest_layer_versions(
    conn=conn,
    layer_ids=[123, 456, 789]
)

conn.close()
'''

CONNECTIONS = '''
from koop.backend.conn import KoordinatesConnection

# Connect to default domain (ttgroup.koordinates.com)
conn = KoordinatesConnection(api_key="your-api-key")

# Connect to LINZ Koordinates instance
linz_conn = KoordinatesConnection(
    api_key="your-api-key",
    domain="data.linz.govt.nz"
)

# API version specification (default is "1.x")
custom_conn = KoordinatesConnection(
    api_key="your-api-key",
    domain="ttgroup.koordinates.com",
    api_version="1.x"
)

# Always close connections when done
conn.close()
'''

LAYERS = {123: 1001, 456: 1002, 789: 1004}


def pointed_at(block: str, site, versions: dict) -> str:
    """The block with its calls pointed at `site` and its example ids mapped."""
    tree = ast.parse(textwrap.dedent(block))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if name in ("get_layer_from_id", "KoordinatesConnection"):
            node.keywords = [k for k in node.keywords if k.arg not in ("api_key", "domain")]
            node.keywords.append(ast.keyword("api_key", ast.Constant(site.api_key)))
            node.keywords.append(ast.keyword("domain", ast.Constant(site.domain)))
        for keyword in node.keywords:
            if keyword.arg == "layer_id" and isinstance(keyword.value, ast.Constant):
                keyword.value = ast.Constant(LAYERS[keyword.value.value])
            if keyword.arg == "layer_ids" and isinstance(keyword.value, ast.List):
                for item in keyword.value.elts:
                    item.value = LAYERS[item.value]
            if keyword.arg == "version_ids" and isinstance(keyword.value, ast.List):
                for item in keyword.value.elts:
                    item.value = versions[item.value]
    return ast.unparse(ast.fix_missing_locations(tree))


def run(block: str, site, versions=None) -> dict:
    namespace: dict = {}
    exec(compile(pointed_at(block, site, versions or {}), "<README>", "exec"), namespace)
    return namespace


def ogrinfo_layers(path: Path) -> str:
    done = subprocess.run(
        ["ogrinfo", "-ro", "-q", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_get_by_id_downloads_once_then_answers_from_the_cache(new_site, cache):
    site = new_site(300)
    namespace = run(SIMPLE, site)
    layer_path, cached_path = namespace["layer_path"], namespace["cached_path"]
    assert isinstance(layer_path, Path)
    assert layer_path.suffix == ".gpkg" and layer_path.is_file()
    assert cache in layer_path.parents, "filed under KOOPCACHE_DIR"
    assert cached_path == layer_path
    assert "countries" in ogrinfo_layers(layer_path).lower()
    # One export for both calls: the second was answered from the cache.
    first = site.counters()
    assert first["exports_created"] == 1 and first["downloads"] + first["storage_downloads"] >= 1
    namespace = run(SIMPLE, site)
    assert namespace["layer_path"] == namespace["cached_path"] == layer_path
    again = site.counters()
    assert again["api_requests"] - first["api_requests"] == 2, "one details request per call"
    assert again["exports_created"] == 1 and again["downloads"] == first["downloads"]


def test_quick_start_block_writes_dc_xml_that_round_trips(site, cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    versions = {
        1: site.details(1001)["version"]["id"],
        2: site.details(1002)["version"]["id"],
    }
    namespace = run(QUICK_START, site, versions)
    assert namespace["layer_path"].is_file() and namespace["linz_layer"].is_file()
    assert namespace["linz_layer"] != namespace["layer_path"]
    ogrinfo_layers(namespace["linz_layer"])
    written = tmp_path / "metadata.xml"
    xmllint = subprocess.run(["xmllint", "--noout", str(written)], capture_output=True, text=True)
    assert xmllint.returncode == 0, xmllint.stderr
    metadata = namespace["metadata"]
    assert DublinCoreMetadata.from_raw_xml(written.read_text()) == metadata
    assert DublinCoreMetadata.from_raw_xml(written.read_bytes()) == metadata
    assert metadata.description == "Updated description"
    assert metadata.creator == "Your Organization"
    rows = metadata.source.strip().splitlines()
    assert rows[0] == "layer_id,title,version_id,last_updated"
    assert rows[1].startswith("1001,") and f",{versions[1]}," in rows[1]
    assert rows[2].startswith("1002,") and f",{versions[2]}," in rows[2]
    assert namespace["conn"].closed


def test_metadata_block_reads_the_site_document_and_current_versions(site, cache):
    namespace = run(METADATA, site)
    metadata, template = namespace["metadata"], namespace["template"]
    details = {layer: site.details(layer) for layer in (1001, 1002, 1004)}
    assert metadata.title == details[1001]["title"]
    assert template.title == details[1001]["title"]
    assert template.type == "vector"
    assert template.date == details[1001]["published_at"]
    rows = metadata.source.strip().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1001", "1002", "1004"]
    for row, layer in zip(rows, (1001, 1002, 1004)):
        assert f",{details[layer]['version']['id']}," in row
    # The document's values that need escaping survive a write and a read.
    assert DublinCoreMetadata.from_raw_xml(metadata.as_xml()) == metadata


def test_connection_block(site, cache):
    namespace = run(CONNECTIONS, site)
    assert namespace["conn"].closed
    assert namespace["custom_conn"].api_version == "1.x"
    assert namespace["linz_conn"].domain == site.domain
    assert site.api_key not in repr(namespace["linz_conn"])


def test_the_key_falls_back_to_the_environment(site, cache, monkeypatch):
    monkeypatch.setenv("KOORDINATES_API_KEY", site.api_key)
    path = koop.get_layer_from_id(1001, domain=site.domain)
    assert path.is_file()
    monkeypatch.delenv("KOORDINATES_API_KEY")
    try:
        koop.get_layer_from_id(1001, domain=site.domain)
    except ValueError as error:  # what the original raised
        assert "KOORDINATES_API_KEY" in str(error)
        assert isinstance(error, koop.errors.ConfigurationError)
    else:
        raise AssertionError("no key must be an error")
