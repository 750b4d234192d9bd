"""Which music goes under a recorded voice (``…/drafts/{id}/mix``, ``upload --bed``): the bed's
files and how ffmpeg reads each. No process run here.

The rules, in order:

1. ``bed=current``: the tenant's current file — its 16 kHz rendition, as callers hear it; a
   tenant on default music has none (``NoTenantFile``).
2. ``bed=default``: ``music_bed_default``, a file or the directory of files Asterisk's
   ``default`` class plays. Asterisk plays each *base name* once, in name order (``sort=alpha``),
   choosing among the formats of one name the one it transcodes least; here the best quality
   format of each name is taken (:data:`PREFERENCE`). Files of other extensions are ignored, as
   Asterisk ignores them.
3. A bed with no playable file is ``BedUnavailable`` (the operator's configuration, not the
   admin's file: the API answers 503).
"""

from __future__ import annotations

from pathlib import Path

from .errors import BedUnavailable

#: extension -> the ffmpeg input options that read it (raw formats have no header to sniff)
FORMATS: dict[str, tuple[str, ...]] = {
    "sln16": ("-f", "s16le", "-ar", "16000", "-ac", "1"),
    "wav": ("-f", "wav"),
    "flac": ("-f", "flac"),
    "sln": ("-f", "s16le", "-ar", "8000", "-ac", "1"),
    "g722": ("-f", "g722"),
    "ulaw": ("-f", "mulaw", "-ar", "8000", "-ac", "1"),
    "alaw": ("-f", "alaw", "-ar", "8000", "-ac", "1"),
    "gsm": ("-f", "gsm"),
    "mp3": ("-f", "mp3"),
    "ogg": ("-f", "ogg"),
}
#: of one base name's formats, the first here is used (best quality first)
PREFERENCE = tuple(FORMATS)
BEDS = ("default", "current")
#: the bed's level relative to the voice in pauses accepted from the API and the CLI, dB
BED_LEVEL_RANGE = (-40.0, 0.0)
DEFAULT_BED_LEVEL_DB = -18.0


def default_bed(location: Path) -> list[tuple[Path, tuple[str, ...]]]:
    """The files of ``music_bed_default`` in play order, each with its ffmpeg input options."""
    if location.is_file():
        candidates = [location]
    else:
        try:
            candidates = sorted(p for p in location.iterdir() if p.is_file())
        except OSError as exc:
            raise BedUnavailable(
                f"the default music (music_bed_default {location}) cannot be read: {exc.strerror}"
            ) from None
    best: dict[str, Path] = {}
    for path in candidates:
        extension = path.suffix.lstrip(".").lower()
        if extension not in FORMATS:
            continue
        held = best.get(path.stem)
        if held is None or PREFERENCE.index(extension) < PREFERENCE.index(held.suffix.lstrip(".").lower()):
            best[path.stem] = path
    files = [(best[name], FORMATS[best[name].suffix.lstrip(".").lower()]) for name in sorted(best)]
    if not files:
        raise BedUnavailable(
            f"the default music (music_bed_default {location}) holds no file ooma-moh can play under a voice"
            f" ({', '.join(FORMATS)})"
        )
    return files


def check_bed(bed: object, level: object) -> tuple[str, float]:
    """The bed and level of a mix request, or ``ValueError`` saying what is wrong."""
    if bed not in BEDS:
        raise ValueError(f"bed must be one of {', '.join(BEDS)}")
    if isinstance(level, bool) or not isinstance(level, (int, float)):
        raise ValueError("bed_level_db must be a number")
    low, high = BED_LEVEL_RANGE
    if not low <= float(level) <= high:
        raise ValueError(f"bed_level_db must be between {low:g} and {high:g}")
    return str(bed), float(level)
