"""When an upload is refused: every reason, in the order the checks run, each with the HTTP status
the API answers and whether the admin's page has a sentence for it (``error_<code>`` in
:mod:`ooma_moh.http.texts`).

The order, first refusal wins (nothing is stored for any of them; the tenant's music stays):

1. the rights disclaimer: not accepted (``disclaimer_required``), or accepted on a text that has
   changed since the page showed it (``disclaimer_changed``) — :mod:`ooma_moh.http.api`,
   :class:`ooma_moh.service.MohService`;
2. the bytes arriving: not a readable file (``not_a_file``, CLI), a read that fails
   (``unreadable``), over ``max_upload_bytes`` (``too_large``), nothing at all (``empty``) —
   :mod:`ooma_moh.service`, :mod:`ooma_moh.http.uploads`;
3. the first bytes name no accepted container (``unrecognised_format``) — :func:`ooma_moh.media_rules.sniff_container`;
4. the audio stream's description: sample rate (``sample_rate``), channels (``channels``), no rate or
   channels at all (``undecodable``); no audio stream, only pictures or video (``no_audio``) —
   :class:`ooma_moh.media_rules.InputWatch`;
5. the decode: stopped by a CPU, memory or time limit (``too_costly``), or failing (``undecodable``);
6. what decoded: longer than ``max_duration_s`` (``too_long``), shorter than ``min_duration_s``
   (``too_short``), shorter than the container declares (``truncated``), silent (``silent``) —
   :class:`ooma_moh.media.FfmpegConverter`.
"""

from __future__ import annotations

import enum


class Rejection(str, enum.Enum):
    """A reason an upload is refused; the value is the code the API and the metrics use."""

    status: int
    on_page: bool

    def __new__(cls, code: str, status: int, on_page: bool = True) -> Rejection:
        member = str.__new__(cls, code)
        member._value_ = code
        member.status = status
        member.on_page = on_page
        return member

    DISCLAIMER_REQUIRED = ("disclaimer_required", 422)
    DISCLAIMER_CHANGED = ("disclaimer_changed", 409)
    NOT_A_FILE = ("not_a_file", 422, False)  # a path given to the CLI: the page always sends a file
    UNREADABLE = ("unreadable", 422, False)  # a read of the CLI's input failing
    TOO_LARGE = ("too_large", 413)
    EMPTY = ("empty", 422)
    UNRECOGNISED_FORMAT = ("unrecognised_format", 415)
    SAMPLE_RATE = ("sample_rate", 422)
    CHANNELS = ("channels", 422)
    NO_AUDIO = ("no_audio", 415)
    TOO_COSTLY = ("too_costly", 422)
    UNDECODABLE = ("undecodable", 422)
    TOO_LONG = ("too_long", 422)
    TOO_SHORT = ("too_short", 422)
    TRUNCATED = ("truncated", 422)
    SILENT = ("silent", 422)

    @property
    def text_key(self) -> str:
        """The key of the page's sentence for this refusal."""
        return f"error_{self.value}"
