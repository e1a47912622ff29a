"""``KoordinatesConnection``: an authenticated connection to one Koordinates site."""

from koop._koop import KoordinatesConnection

__all__ = ["KoordinatesConnection"]
