"""The exceptions koop raises: every one is a ``KoopError`` and carries koop's message, which
names the layer and the site and says what to do.

Where the original package raised a built-in exception, the matching class derives from it too,
so ``except ValueError`` in an existing script still catches a missing API key.
"""

__all__ = [
    "ApiError",
    "AuthenticationError",
    "CacheError",
    "ConfigurationError",
    "ExportError",
    "KoopError",
    "MetadataError",
    "NotCachedError",
    "NotFoundError",
    "RateLimitError",
]


class KoopError(Exception):
    """Anything koop could not do."""


class ConfigurationError(KoopError, ValueError):
    """A missing API key, a domain that is not a Koordinates site, a bad argument."""


class ApiError(KoopError):
    """Koordinates answered with an error, or could not be reached, after koop's retries."""


class AuthenticationError(ApiError, PermissionError):
    """The site refused the API key (401: wrong or expired) or its scopes (403)."""


class NotFoundError(ApiError, LookupError):
    """The layer, version or export does not exist on the site, or the key cannot see it."""


class RateLimitError(ApiError):
    """The site still answered 429 Too Many Requests after koop's retries."""


class ExportError(KoopError):
    """The export failed on the server, or its download or ZIP was unusable."""


class CacheError(KoopError):
    """The cache directory could not be created, written or read."""


class NotCachedError(KoopError):
    """Offline, and the layer is not in the cache."""


class MetadataError(KoopError, ValueError):
    """Dublin Core: an unknown field, XML that is not well-formed, a layer without a document."""
