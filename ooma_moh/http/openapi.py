"""The API's OpenAPI 3.1 description, served at ``/api/v1/openapi.json`` (checked by a validator in
the tests)."""

from __future__ import annotations

from typing import Any

from .schemas import SCHEMAS

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

_DRAFT = {"name": "draft", "in": "path", "required": True, "schema": {"type": "string"}}
_QUALITY = {
    "name": "quality",
    "in": "query",
    "schema": {"type": "string", "enum": ["wideband", "phone"], "default": "wideband"},
    "description": "phone: the 8 kHz μ-law rendition a G.711 caller gets, decoded sample for sample to"
    " 16-bit PCM (8 kHz WAV); wideband: the 16 kHz rendition (16 kHz WAV)",
}
_WAV: dict[str, Any] = {"audio/wav": {}}
_AUDIO_RESPONSES = {
    "200": {"description": "the audio", "content": _WAV},
    "206": {"description": "part of the audio", "content": _WAV},
    "304": {"description": "If-None-Match names this audio's ETag: unchanged"},
    "400": _ERROR,
    "401": _ERROR,
    "404": _ERROR,
    "416": _ERROR,
    "503": {"description": "the stored audio is damaged or unreadable", "content": _ERROR_CONTENT},
}
_WAVEFORM = {
    "summary": "The outline of what callers hear: at most 2,000 (min, max) pairs, -1..1",
    "responses": {
        "200": {
            "description": "the waveform",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Waveform"}}},
        },
        "401": _ERROR,
        "404": _ERROR,
        "503": _ERROR,
    },
}
_DRAFT_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/Draft"}}}
_LIST: dict[str, Any] = {"type": "array", "items": {"type": "string"}}


def _object_of(key: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object with one required ``key`` (a string unless ``schema`` says otherwise)."""
    return {"type": "object", "required": [key], "properties": {key: schema or {"type": "string"}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON response."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ACCEPTED_FORM = {
    "type": "object",
    "required": ["disclaimer"],
    "properties": {"disclaimer": {"type": "string", "enum": ["accepted"]}, "disclaimer_version": {"type": "string"}},
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
                "summary": "Upload the tenant's file (at most 5,242,880 bytes), or save a draft (`draft`"
                " instead of `file`), with the rights disclaimer",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["disclaimer"],
                                "properties": {
                                    "file": {"type": "string", "contentMediaType": "application/octet-stream"},
                                    "draft": {
                                        "type": "string",
                                        "description": "the id of a draft to save (then no file)",
                                    },
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
            "parameters": [_TENANT, _QUALITY],
            "get": {"summary": "What callers hear, as a WAV (Range requests supported)", "responses": _AUDIO_RESPONSES},
        },
        "/tenants/{tenant}/moh/waveform": {"parameters": [_TENANT], "get": _WAVEFORM},
        "/tenants/{tenant}/moh/restore": {
            "parameters": [_TENANT],
            "post": {
                "summary": "Make the file the last change replaced or removed current again",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {"schema": _ACCEPTED_FORM},
                        "multipart/form-data": {"schema": _ACCEPTED_FORM},
                    },
                },
                "responses": {
                    "201": {"description": "restored; status says when callers hear it", "content": _MOH},
                    "401": _ERROR,
                    "403": _CSRF,
                    "404": _ERROR,
                    "409": {"description": "nothing_to_restore, or disclaimer_changed", "content": _ERROR_CONTENT},
                    "422": _ERROR,
                    "503": _ERROR,
                },
            },
        },
        "/tenants/{tenant}/moh/drafts": {
            "parameters": [_TENANT],
            "post": {
                "summary": "Convert and analyse a file without changing what callers hear (no disclaimer)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {"type": "string", "contentMediaType": "application/octet-stream"}
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": {"description": "the draft", "content": _DRAFT_BODY},
                    "400": _ERROR,
                    "401": _ERROR,
                    "403": _CSRF,
                    "404": _ERROR,
                    "408": _ERROR,
                    "413": _ERROR,
                    "415": _ERROR,
                    "422": _ERROR,
                    "429": {
                        "description": "too_many_drafts (the tenant holds max_drafts_per_tenant), or another"
                        " upload for this tenant is being converted (upload_in_progress)",
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        "content": _ERROR_CONTENT,
                    },
                    "503": _ERROR,
                    "507": _ERROR,
                },
            },
        },
        "/tenants/{tenant}/moh/drafts/{draft}": {
            "parameters": [_TENANT, _DRAFT],
            "get": {
                "summary": "A draft (404 no_draft: expired, saved, or another tenant's)",
                "responses": {
                    "200": {"description": "the draft", "content": _DRAFT_BODY},
                    "401": _ERROR,
                    "404": _ERROR,
                },
            },
            "delete": {
                "summary": "Forget a draft",
                "responses": {"204": {"description": "forgotten"}, "401": _ERROR, "403": _CSRF, "404": _ERROR},
            },
        },
        "/tenants/{tenant}/moh/drafts/{draft}/audio": {
            "parameters": [_TENANT, _DRAFT, _QUALITY],
            "get": {"summary": "What callers would hear, as a WAV", "responses": _AUDIO_RESPONSES},
        },
        "/tenants/{tenant}/moh/drafts/{draft}/waveform": {"parameters": [_TENANT, _DRAFT], "get": _WAVEFORM},
        "/tenants/{tenant}/moh/drafts/{draft}/mix": {
            "parameters": [_TENANT, _DRAFT],
            "post": {
                "summary": "A new draft: this draft's voice over music (the platform's default, or the current file)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["bed"],
                                "properties": {
                                    "bed": {"type": "string", "enum": ["default", "current"]},
                                    "bed_level_db": {"type": "number", "minimum": -40, "maximum": 0, "default": -18},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": {"description": "the new draft", "content": _DRAFT_BODY},
                    "400": _ERROR,
                    "401": _ERROR,
                    "403": _CSRF,
                    "404": _ERROR,
                    "422": _ERROR,
                    "429": _ERROR,
                    "503": _ERROR,
                },
            },
        },
        "/tenants/{tenant}/moh/stats": {
            "parameters": [_TENANT],
            "get": {
                "summary": "Hold statistics: the tenant's holds per UTC day over the last `days` days (today"
                " included, days without holds with zeros) and their total",
                "parameters": [
                    {
                        "name": "days",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 400, "default": 30},
                        "description": "how many days; anything else is 400 invalid_days",
                    }
                ],
                "responses": {
                    "200": {
                        "description": "the figures",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HoldStats"}}},
                    },
                    "400": _ERROR,
                    "401": _ERROR,
                    "404": _ERROR,
                    "503": _ERROR,
                },
            },
        },
        "/tenants/{tenant}/endpoints": {
            "parameters": [_TENANT],
            "get": {
                "summary": "The tenant's endpoints in the endpoint map, sorted: those a test call may ring",
                "responses": {
                    "200": _json("the endpoints", _object_of("endpoints", _LIST)),
                    "401": _ERROR,
                    "404": _ERROR,
                },
            },
        },
        "/tenants/{tenant}/moh/test-call": {
            "parameters": [_TENANT],
            "post": {
                "summary": "Ring one of the tenant's endpoints; once answered it hears the tenant's music for"
                " test_call_seconds (docs/http.md, Test call)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _object_of("endpoint")}}},
                "responses": {
                    "202": _json("dialled; follow it with GET …/test-call/{call}", _object_of("call")),
                    "400": _ERROR,
                    "401": _ERROR,
                    "403": _CSRF,
                    "404": _ERROR,
                    "429": {
                        "description": "one test call at a time per tenant, 5 an hour: Retry-After says when",
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        "content": _ERROR_CONTENT,
                    },
                    "503": _ERROR,
                },
            },
        },
        "/tenants/{tenant}/moh/test-call/{call}": {
            "parameters": [_TENANT, {"name": "call", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {
                "summary": "A test call's state",
                "responses": {
                    "200": _json("the call", {"$ref": "#/components/schemas/TestCall"}),
                    "401": _ERROR,
                    "404": _ERROR,
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
                "description": "the page's session, opened by a `ooma-moh tokens link` URL; PUT, POST"
                " and DELETE also need the session's X-CSRF-Token header",
            },
        },
        "responses": {
            "Error": {
                "description": "an error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        },
        "schemas": SCHEMAS,
    },
}
