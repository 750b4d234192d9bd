"""How the CLI shows tenants and sync reports: plain data for ``--json`` and text for people."""

from __future__ import annotations

from typing import Any

from ..model import FORMATS_BY_EXTENSION, TenantMoh
from ..sync import Change, SyncReport


def tenant_dict(tenant: TenantMoh, prefix: str) -> dict[str, Any]:
    """A tenant as plain JSON-able data."""
    data: dict[str, Any] = {
        "tenant": tenant.tenant_id,
        "setting": tenant.setting.value,
        "moh_class": tenant.moh_class(prefix),
        "updated_at": tenant.updated_at.isoformat() if tenant.updated_at else None,
        "file": None,
        "disclaimer": None,
        "renditions": [],
        "analysis": tenant.upload.analysis if tenant.upload else None,
        "previous": None,
    }
    if tenant.previous:
        before = tenant.previous
        data["previous"] = {
            "original_name": before.original_name,
            "size": before.size,
            "sha256": before.sha256,
            "duration_ms": before.duration_ms,
            "uploaded_at": before.uploaded_at.isoformat(),
        }
    if tenant.upload:
        up = tenant.upload
        data["file"] = {
            "original_name": up.original_name,
            "size": up.size,
            "sha256": up.sha256,
            "duration_ms": up.duration_ms,
            "container": up.container,
            "uploaded_at": up.uploaded_at.isoformat(),
        }
    if tenant.disclaimer:
        d = tenant.disclaimer
        data["disclaimer"] = {
            "accepted_by": d.accepted_by,
            "accepted_at": d.accepted_at.isoformat(),
            "sha256": d.sha256,
        }
    data["renditions"] = [
        {
            "format": r.extension,
            "codec": FORMATS_BY_EXTENSION[r.extension].codec,
            "rate": r.sample_rate,
            "bytes": r.size,
            "sha256": r.sha256,
        }
        for r in tenant.renditions
    ]
    return data


def describe(data: dict[str, Any]) -> str:
    """Human-readable form of :func:`tenant_dict`."""
    lines = [f"tenant      {data['tenant']}", f"setting     {data['setting']}", f"moh class   {data['moh_class']}"]
    if data["file"]:
        f = data["file"]
        lines.append(
            f"file        {f['original_name']} ({f['container']}, {f['size']:,} bytes,"
            f" {f['duration_ms'] / 1000:.2f} s, sha256 {f['sha256'][:16]}…) uploaded {f['uploaded_at']}"
        )
    if data["disclaimer"]:
        d = data["disclaimer"]
        lines.append(f"disclaimer  accepted by {d['accepted_by']} at {d['accepted_at']} for sha256 {d['sha256'][:16]}…")
    if data.get("analysis"):
        lines.append(f"analysis    {analysis_line(data['analysis'])}")
    if data.get("previous"):
        p = data["previous"]
        lines.append(
            f"previous    {p['original_name']} ({p['size']:,} bytes, {p['duration_ms'] / 1000:.2f} s)"
            f" uploaded {p['uploaded_at']}: `ooma-moh restore` brings it back"
        )
    if "nodes" in data:
        lines.append(f"nodes       live on {data['nodes']['live']} of {data['nodes']['of']}")
    for r in data["renditions"]:
        lines.append(f"rendition   .{r['format']:<6} {r['codec']:<11} {r['rate']:>6} Hz {r['bytes']:>10,} bytes")
    return "\n".join(lines)


def analysis_line(analysis: dict[str, Any]) -> str:
    """One line of an upload's analysis for people: loudness, trimmed silence, warnings."""
    parts = []
    if "loudness_lufs_in" in analysis and "loudness_lufs_out" in analysis:
        parts.append(f"loudness {analysis['loudness_lufs_in']} -> {analysis['loudness_lufs_out']} LUFS")
    trimmed = analysis.get("silence_trimmed_ms") or {}
    if trimmed.get("start") or trimmed.get("end"):
        parts.append(f"silence trimmed {trimmed.get('start', 0)} ms + {trimmed.get('end', 0)} ms")
    if analysis.get("loop_seam"):
        parts.append(f"loop {analysis['loop_seam']}")
    warnings = analysis.get("warnings") or []
    parts.append("warnings: " + (", ".join(warnings) if warnings else "none"))
    return "; ".join(parts)


def report_dict(report: SyncReport) -> dict[str, Any]:
    """A sync report as JSON-able data. ``reload`` is ``done``, ``pending`` (static mode: the
    publication changed, Asterisk could not be told; the next sync reloads) or ``not needed``;
    ``refused`` the classes left alone because a realtime row ooma-moh did not write holds them."""
    return {
        "dry_run": report.dry_run,
        "summary": report.counts,
        "files_written": report.files_written,
        "published": report.published,
        "reloaded": report.reloaded,
        "reload": report.reload,
        "old_versions_retired": report.retired,
        "old_versions_deleted": report.deleted,
        "classes": [
            {"class": p.moh_class, "change": p.change.value, "directory": p.directory}
            for p in report.plan
            if p.change is not Change.UNCHANGED
        ],
        "refused": report.refused,
    }


def report_text(data: dict[str, Any]) -> str:
    """Human-readable form of :func:`report_dict`."""
    lines = [f"{c['change']:<9} {c['class']}  {c['directory'] or ''}".rstrip() for c in data["classes"]]
    lines += [f"{'refused':<9} {c}  held by a realtime row ooma-moh did not write: left alone" for c in data["refused"]]
    s = data["summary"]
    lines.append(
        ("would sync: " if data["dry_run"] else "synced: ")
        + f"{s['added']} added, {s['changed']} changed, {s['removed']} removed, {s['unchanged']} unchanged"
    )
    if not data["dry_run"]:
        reload = "pending (the next sync retries it)" if data["reload"] == "pending" else data["reload"]
        lines.append(
            f"files written: {data['files_written']}; reload: {reload};"
            f" old versions retired {data['old_versions_retired']}, deleted {data['old_versions_deleted']}"
        )
    return "\n".join(lines)
