"""Storage back ends for the catalog and the blobs it references."""

from .base import AuditEntry, Blobs, Catalog, Credentials, EndpointMap, TenantCatalog
from .blobs import BlobStore
from .sqlite import SqliteCatalog

__all__ = [
    "AuditEntry",
    "BlobStore",
    "Blobs",
    "Catalog",
    "Credentials",
    "EndpointMap",
    "SqliteCatalog",
    "TenantCatalog",
]
