"""The original package's ``koop.backend``: the connection to a Koordinates site."""
