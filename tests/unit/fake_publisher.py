"""A fake of :class:`ooma_moh.publish.Publisher` for unit tests: what Asterisk would read, kept in
a dict (class -> directory) and changed only by ``apply``."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable, Mapping


class RecordedPublisher:
    """What Asterisk would read: class -> directory, changed only by ``apply``."""

    needs_reload = False

    def __init__(self) -> None:
        self.classes: dict[str, str] = {}

    def current(self, classes: Collection[str] | None = None) -> dict[str, str]:
        return {c: d for c, d in self.classes.items() if classes is None or c in classes}

    def count(self) -> int:
        return len(self.classes)

    def foreign(self, names: Iterable[str]) -> set[str]:
        return set()

    def held(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def apply(self, upserts: Mapping[str, str], deletes: set[str], *, sweep: bool = False) -> None:  # noqa: ARG002
        self.classes = {c: d for c, d in {**self.classes, **upserts}.items() if c not in deletes}
