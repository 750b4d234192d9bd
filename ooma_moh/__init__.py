"""ooma-moh: per-tenant music on hold for Asterisk."""

__version__ = "0.1.0"
