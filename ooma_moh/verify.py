"""``ooma-moh verify``: does what Asterisk sees agree with the catalog and the files on disk?"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .asterisk_cli import AsteriskCli, parse_moh_classes, parse_realtime_row
from .config import Settings
from .model import is_tenant_class
from .sync import Syncer


@dataclass(frozen=True)
class Difference:
    """One disagreement: ``layer`` is ``disk``, ``publication`` or ``asterisk``."""

    moh_class: str
    layer: str
    detail: str


def verify(settings: Settings, syncer: Syncer, cli: AsteriskCli) -> list[Difference]:
    """Every difference between catalog, disk, publication and Asterisk's own view."""
    desired = syncer.desired(None)
    expected = {moh_class: directory for moh_class, (directory, _) in desired.items()}
    diffs = []
    for moh_class, (directory, tenant) in sorted(desired.items()):
        if not syncer.on_disk(moh_class, tenant):
            diffs.append(Difference(moh_class, "disk", f"{directory} is missing or incomplete"))
    published = syncer.published()
    diffs += _compare(
        expected,
        published,
        "publication",
        ("published but its tenant is not on file ({have})", "not published", "published as {have}, expected {want}"),
    )
    seen = _asterisk_view(settings, cli, sorted(set(expected) | set(published)))
    diffs += _compare(
        expected,
        seen,
        "asterisk",
        (
            "Asterisk still has it ({have}) but its tenant is not on file",
            "Asterisk does not see it",
            "Asterisk sees {have}, expected {want}",
        ),
    )
    return diffs


def _compare(
    expected: dict[str, str], actual: dict[str, str], layer: str, messages: tuple[str, str, str]
) -> list[Difference]:
    """Differences between two class -> directory maps; ``messages``: (unexpected, missing,
    different), formatted with ``want`` and ``have``."""
    unexpected, missing, different = messages
    diffs = []
    for moh_class in sorted(set(expected) | set(actual)):
        want, have = expected.get(moh_class), actual.get(moh_class)
        if want != have:
            template = unexpected if want is None else missing if have is None else different
            diffs.append(Difference(moh_class, layer, template.format(want=want, have=have)))
    return diffs


def _asterisk_view(settings: Settings, cli: AsteriskCli, classes: list[str]) -> dict[str, str]:
    """class -> directory as Asterisk sees our classes (realtime rows, or loaded static classes)."""
    if settings.publish_mode == "static":
        loaded = parse_moh_classes(cli.run("moh show classes"))
        return {
            name: info.get("Directory", "")
            for name, info in loaded.items()
            if is_tenant_class(name, settings.class_prefix)
        }

    def load(moh_class: str) -> tuple[str, dict[str, str] | None]:
        return moh_class, parse_realtime_row(cli.run(f"realtime load musiconhold name {moh_class}"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = list(pool.map(load, classes))
    return {name: row.get("directory", "") for name, row in rows if row and row.get("mode") == "files"}
