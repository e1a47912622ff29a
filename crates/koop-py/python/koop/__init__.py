"""koop: get Koordinates layers onto disk exactly once.

The API of the original ``koop`` package (``get_layer_from_id``,
``koop.backend.conn.KoordinatesConnection``, ``koop.metadata.DublinCoreMetadata``) on koop's
Rust engine, and beyond it ``Koop`` (options: CRS, extent, timeout, offline) and ``mirror``
(many layers at once). Errors are ``koop.errors.KoopError`` subclasses.

>>> from koop import get_layer_from_id
>>> path = get_layer_from_id(50772, domain="data.linz.govt.nz")  # doctest: +SKIP
"""

from koop import errors
from koop._koop import Koop, LayerResult, __version__, get_layer_from_id, mirror

__all__ = ["Koop", "LayerResult", "__version__", "errors", "get_layer_from_id", "mirror"]
