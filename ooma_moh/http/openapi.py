"""The API's OpenAPI 3.1 description, served at ``/api/v1/openapi.json`` (checked by a validator in
the tests)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/responses/Error"}
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_CSRF = {
    "description": "a browser session's change without its X-CSRF-Token (code csrf_required)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_MOH = {"application/json": {"schema": {"$ref": "#/components/schemas/Moh"}}}
_TENANT = {
    "name": "tenant",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"},
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "ooma-moh tenant music on hold",
        "version": "1",
        "description": "One audio file per tenant, played to every caller its users put on hold.",
    },
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}, {"session": []}],
    "paths": {
        "/tenants/{tenant}/moh": {
            "parameters": [_TENANT],
            "get": {
                "summary": "The tenant's music on hold: setting, file, disclaimer, class and status",
                "responses": {
                    "200": {"description": "the tenant's music", "content": _MOH},
                    "401": _ERROR,
                    "404": _ERROR,
                    "503": _ERROR,
                },
            },
            "put": {
                "summary": "Upload the tenant's file (at most 5,242,880 bytes) with the rights disclaimer",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file", "disclaimer"],
                                "properties": {
                                    "file": {"type": "string", "contentMediaType": "application/octet-stream"},
                                    "disclaimer": {"type": "string", "enum": ["accepted"]},
                                    "disclaimer_version": {
                                        "type": "string",
                                        "description": "the disclaimer text version that was"
                                        " shown; another version than the server's current one -> 409",
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": {"description": "stored; status says when callers hear it", "content": _MOH},
                    "400": _ERROR,
                    "401": _ERROR,
                    "403": _CSRF,
                    "404": _ERROR,
                    "408": _ERROR,
                    "409": _ERROR,
                    "413": _ERROR,
                    "415": _ERROR,
                    "422": _ERROR,
                    "429": {
                        "description": "another upload for this tenant is being received or converted",
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        "content": _ERROR_CONTENT,
                    },
                    "503": _ERROR,
                    "507": _ERROR,
                },
            },
            "delete": {
                "summary": "Remove the file: callers hear the platform's default music",
                "responses": {
                    "204": {"description": "back to the default music"},
                    "401": _ERROR,
                    "403": _CSRF,
                    "404": _ERROR,
                    "503": _ERROR,
                    "507": _ERROR,
                },
            },
        },
        "/tenants/{tenant}/moh/audio": {
            "parameters": [_TENANT],
            "get": {
                "summary": "What callers hear, as a 16 kHz mono WAV (Range requests supported)",
                "responses": {
                    "200": {"description": "the audio", "content": {"audio/wav": {}}},
                    "206": {"description": "part of the audio", "content": {"audio/wav": {}}},
                    "304": {"description": "If-None-Match names this audio's ETag: unchanged"},
                    "401": _ERROR,
                    "404": _ERROR,
                    "416": _ERROR,
                    "503": {"description": "the stored audio is damaged or unreadable", "content": _ERROR_CONTENT},
                },
            },
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "`ooma-moh tokens create --tenant T` or `--operator`",
            },
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": "omh_session",
                "description": "the page's session, opened by a `ooma-moh tokens link` URL; PUT and"
                " DELETE also need the session's X-CSRF-Token header",
            },
        },
        "responses": {
            "Error": {
                "description": "an error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    }
                },
            },
            "Moh": {
                "type": "object",
                "required": ["tenant", "setting", "class", "file", "disclaimer", "status"],
                "properties": {
                    "tenant": {"type": "string"},
                    "setting": {"type": "string", "enum": ["default", "file"]},
                    "class": {"type": "string"},
                    "file": {
                        "oneOf": [
                            {"type": "null"},
                            {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "size": {"type": "integer"},
                                    "duration_ms": {"type": "integer"},
                                    "sha256": {"type": "string"},
                                    "uploaded_at": {"type": "string", "format": "date-time"},
                                    "uploaded_by": {"type": ["string", "null"]},
                                },
                            },
                        ]
                    },
                    "disclaimer": {
                        "oneOf": [
                            {"type": "null"},
                            {
                                "type": "object",
                                "properties": {
                                    "accepted_by": {"type": "string"},
                                    "accepted_at": {"type": "string", "format": "date-time"},
                                    "file_sha256": {"type": "string"},
                                    "text_version": {"type": ["string", "null"]},
                                },
                            },
                        ]
                    },
                    "status": {
                        "type": "object",
                        "required": ["state"],
                        "properties": {
                            "state": {"type": "string", "enum": ["converting", "publishing", "live", "error"]},
                            "reason": {"type": ["string", "null"]},
                            "nodes": {
                                "type": "object",
                                "description": "with the shared catalog: on how many of the nodes"
                                " that are not down (a heartbeat within 3 intervals) callers hear the current music",
                                "properties": {"live": {"type": "integer"}, "of": {"type": "integer"}},
                            },
                        },
                    },
                },
            },
        },
    },
}
