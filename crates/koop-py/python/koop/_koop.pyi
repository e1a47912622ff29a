"""Type stubs of koop's extension module (``koop._koop``), re-exported by ``koop``,
``koop.backend.conn`` and ``koop.metadata``."""

import os
from pathlib import Path
from types import TracebackType
from typing import Any, Dict, Iterable, List, Mapping, Optional, Type, Union

from koop.errors import KoopError

__version__: str

_PathLike = Union[str, "os.PathLike[str]"]

class KoordinatesConnection:
    """A connection to a Koordinates site; the key falls back to ``KOORDINATES_API_KEY``.

    Raises ``koop.errors.ConfigurationError`` (a ``ValueError``) without a key or for a domain
    that is not a site. No request is made until the connection is used.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        domain: str = "ttgroup.koordinates.com",
        api_version: str = "1.x",
    ) -> None: ...
    @property
    def domain(self) -> str:
        """The site, as given, e.g. ``"data.linz.govt.nz"``."""
    @property
    def api_version(self) -> str:
        """The API version, ``"1.x"``."""
    @property
    def api_key(self) -> str:
        """The API key."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    @property
    def session(self) -> Any:
        """A ``requests.Session`` with the key's header (needs ``requests``)."""
    def close(self) -> None:
        """Releases the connection (closes ``session`` if one was made)."""
    def __enter__(self) -> "KoordinatesConnection": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> bool: ...

class DublinCoreMetadata:
    """The 15 Dublin Core elements of a layer, each a ``str`` or ``None``."""

    title: Optional[str]
    creator: Optional[str]
    subject: Optional[str]
    description: Optional[str]
    type: Optional[str]
    source: Optional[str]
    relation: Optional[str]
    coverage: Optional[str]
    publisher: Optional[str]
    contributor: Optional[str]
    rights: Optional[str]
    date: Optional[str]
    format: Optional[str]
    identifier: Optional[str]
    language: Optional[str]
    model_fields: Dict[str, None]

    def __init__(self, **fields: Optional[str]) -> None: ...
    def model_dump(self) -> Dict[str, Optional[str]]:
        """The 15 elements as a dict, in the original's field order."""
    def as_xml(self) -> str:
        """The record as an OAI_DC XML document."""
    def to_xml(self, path: _PathLike) -> None:
        """Writes ``as_xml()`` to ``path``, atomically."""
    @classmethod
    def from_raw_xml(cls, xml: Union[str, bytes]) -> "DublinCoreMetadata":
        """Reads a Dublin Core XML document (no DTD read, no entity expanded)."""
    @classmethod
    def from_koordinates(
        cls, conn: KoordinatesConnection, layer_id: int
    ) -> "DublinCoreMetadata":
        """The Dublin Core document of a layer's current version, from Koordinates."""
    @classmethod
    def populate_template(
        cls, conn: KoordinatesConnection, layer_id: int
    ) -> "DublinCoreMetadata":
        """A record started from a layer's details (title, type, date, …)."""
    def edit_metadata_fields(self, **fields: Optional[str]) -> None:
        """Sets the named elements; an unknown name raises ``MetadataError`` and changes nothing."""
    def update_source_field(
        self,
        conn: KoordinatesConnection,
        layer_ids: Iterable[int],
        version_ids: Iterable[int],
    ) -> None:
        """Sets ``source`` to a CSV of the given versions of the given layers."""
    def update_source_with_latest_layer_versions(
        self, conn: KoordinatesConnection, layer_ids: Iterable[int]
    ) -> None:
        """Sets ``source`` to a CSV of the current version of each layer."""

class LayerResult:
    """The result of one layer of a mirror."""

    layer_id: int
    path: Optional[Path]
    outcome: Optional[str]
    full_export_reason: Optional[str]
    error: Optional[KoopError]
    elapsed: float
    @property
    def ok(self) -> bool:
        """Whether the layer ended with a file on disk."""

class Koop:
    """koop with options, to get many layers."""

    def __init__(
        self,
        api_key: Optional[str] = None,
        domain: str = "ttgroup.koordinates.com",
        *,
        api_version: str = "1.x",
        cache_dir: Optional[_PathLike] = None,
        crs: Union[int, str, None] = None,
        extent: Union[Mapping[str, Any], str, None] = None,
        timeout: Optional[float] = None,
        offline: bool = False,
        jobs: int = 8,
    ) -> None: ...
    @property
    def domain(self) -> str:
        """The site, e.g. ``"data.linz.govt.nz"``."""
    @property
    def cache_dir(self) -> Path:
        """The cache's root directory."""
    def get_layer(self, layer_id: int) -> Path:
        """Gets a layer's current version onto disk; returns its path."""
    def mirror(
        self, layer_ids: Iterable[int], jobs: Optional[int] = None, every_layer: bool = False
    ) -> List[LayerResult]:
        """Gets many layers at once, asking the catalog what changed; one result per id."""

def get_layer_from_id(
    layer_id: int, api_key: Optional[str] = None, domain: str = "ttgroup.koordinates.com"
) -> Path:
    """Downloads and caches a layer, returning the path of its file."""

def mirror(
    layer_ids: Iterable[int],
    api_key: Optional[str] = None,
    domain: str = "ttgroup.koordinates.com",
    jobs: int = 8,
    every_layer: bool = False,
) -> List[LayerResult]:
    """Gets many layers of one site at once; one result per distinct id."""
