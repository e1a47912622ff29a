"""``DublinCoreMetadata``: the 15 Dublin Core elements of a layer, read and written as OAI_DC XML."""

from koop._koop import DublinCoreMetadata

__all__ = ["DublinCoreMetadata"]
