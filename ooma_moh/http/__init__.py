"""The tenant admin HTTP API (``ooma-moh serve http``)."""
