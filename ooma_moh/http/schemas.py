"""The data shapes of the API's OpenAPI description (:mod:`.openapi` has the paths)."""

from __future__ import annotations

from typing import Any

from ..analysis import WARNINGS
from ..testcall import CallState, FailReason

SCHEMAS: dict[str, Any] = {
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
    "Analysis": {
        "type": ["object", "null"],
        "description": "what the conversion found (docs/http.md, Analysis); null for files converted"
        " before analyses were recorded",
        "properties": {
            "loudness_lufs_in": {"type": "number"},
            "loudness_lufs_out": {"type": "number"},
            "true_peak_dbtp_in": {"type": "number"},
            "clipped_ratio": {"type": "number"},
            "dc_offset": {"type": "number"},
            "silence_trimmed_ms": {
                "type": "object",
                "properties": {"start": {"type": "integer"}, "end": {"type": "integer"}},
            },
            "mono_loss_db": {"type": "number"},
            "phone_band_ratio": {"type": "number"},
            "duration_ms": {"type": "integer"},
            "loop_seam": {"type": "string", "enum": ["crossfaded", "clean"]},
            "warnings": {
                "type": "array",
                "items": {
                    "type": "string",
                    "enum": list(WARNINGS),
                },
            },
        },
    },
    "Draft": {
        "type": "object",
        "required": ["draft", "analysis", "expires_at", "original_name", "size", "duration_ms"],
        "properties": {
            "draft": {"type": "string"},
            "analysis": {"$ref": "#/components/schemas/Analysis"},
            "expires_at": {"type": "string", "format": "date-time"},
            "original_name": {"type": "string"},
            "size": {"type": "integer"},
            "duration_ms": {"type": "integer"},
        },
    },
    "HoldFigures": {
        "type": "object",
        "description": "holds counted on their UTC start day (docs/http.md, Hold statistics)",
        "required": ["holds", "seconds", "median_s", "p90_s", "hung_up", "fallback"],
        "properties": {
            "holds": {"type": "integer", "description": "holds that ended"},
            "seconds": {"type": "number", "description": "their total length"},
            "median_s": {"type": "number", "description": "median length of a hold (fixed buckets); 0 without holds"},
            "p90_s": {"type": "number", "description": "its 90th percentile, likewise"},
            "hung_up": {"type": "integer", "description": "holds whose caller hung up while on hold"},
            "fallback": {"type": "integer", "description": "holds that played default although the tenant had a file"},
        },
    },
    "HoldStats": {
        "type": "object",
        "required": ["days", "total"],
        "properties": {
            "days": {
                "type": "array",
                "description": "every day of the window, oldest first",
                "items": {
                    "allOf": [
                        {"$ref": "#/components/schemas/HoldFigures"},
                        {
                            "type": "object",
                            "required": ["date"],
                            "properties": {"date": {"type": "string", "format": "date"}},
                        },
                    ]
                },
            },
            "total": {"$ref": "#/components/schemas/HoldFigures"},
        },
    },
    "TestCall": {
        "type": "object",
        "description": "a test call (docs/http.md, Test call); the times are UTC, null until they happen",
        "required": ["call", "state", "reason", "endpoint", "class", "seconds", "placed_at"],
        "properties": {
            "call": {"type": "string"},
            "state": {"type": "string", "enum": [s.value for s in CallState]},
            "reason": {"enum": [*(r.value for r in FailReason), None], "description": "why it failed"},
            "endpoint": {"type": "string"},
            "class": {"type": ["string", "null"], "description": "the class the phone hears, once answered"},
            "seconds": {"type": "number", "description": "how long the answered phone hears it"},
            "placed_at": {"type": "string", "format": "date-time"},
            "answered_at": {"type": ["string", "null"], "format": "date-time"},
            "ended_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "Waveform": {
        "type": "object",
        "required": ["duration_ms", "peaks"],
        "properties": {
            "duration_ms": {"type": "integer"},
            "peaks": {
                "type": "array",
                "maxItems": 2000,
                "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
            },
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
            "analysis": {"$ref": "#/components/schemas/Analysis"},
            "previous": {
                "description": "the file the last change replaced or removed (POST …/restore)",
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "properties": {
                            "original_name": {"type": "string"},
                            "size": {"type": "integer"},
                            "duration_ms": {"type": "integer"},
                            "uploaded_at": {"type": "string", "format": "date-time"},
                        },
                    },
                ],
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
}
