"""``ooma-moh sync``: make Asterisk's view of tenant classes match the catalog.

The decision is a pure function, :func:`plan_sync`, of what should be published (from the
catalog) and what is (read back from the publisher). :class:`Syncer` then carries it out in an
order that is safe to kill at any point:

1. files: complete version directories, batch by batch (:meth:`.MohDirectory.build`: a batch is
   handed over only once every directory of it is in place and durable);
2. the publication switch, atomic (one transaction or one rename), of nothing but complete
   directories: in realtime mode of each batch as soon as it is handed over, while the next
   batches download (a cold node's classes go live as they arrive), the removals with the last
   one; in static mode once, after every batch (Asterisk reads the include only at a reload);
3. at most one reload (static mode), marked pending before the switch;
4. clean-up of versions no longer published (see :mod:`ooma_moh.mohdir`).

Killed at any point, a run leaves published only complete directories, and the next run
completes the rest (it is idempotent).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field

from . import metrics
from .config import Settings
from .errors import AsteriskError, ClassTaken, ReloadPending
from .logsafe import printable
from .model import MohSetting, TenantMoh, validate_tenant_id
from .mohdir import MohDirectory
from .publish import Publisher
from .storage import TenantCatalog

log = logging.getLogger(__name__)


class Change(str, enum.Enum):
    """What a sync does to one class."""

    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class ClassPlan:
    """One class in a sync plan; ``directory`` is None for a removal."""

    moh_class: str
    change: Change
    directory: str | None
    tenant: TenantMoh | None = None


def plan_sync(
    desired: dict[str, tuple[str, TenantMoh]], published: dict[str, str], scope: set[str] | None
) -> list[ClassPlan]:
    """Compare ``desired`` (class -> (directory, tenant)) with ``published`` (class -> directory).

    ``scope`` limits the comparison to those classes (a sync of named tenants); None means every
    class, so published classes nobody wants any more are removed.
    """
    plan = []
    for moh_class, (directory, tenant) in sorted(desired.items()):
        current = published.get(moh_class)
        change = Change.ADDED if current is None else Change.UNCHANGED if current == directory else Change.CHANGED
        plan.append(ClassPlan(moh_class, change, directory, tenant))
    for moh_class in sorted(published):
        if moh_class not in desired and (scope is None or moh_class in scope):
            plan.append(ClassPlan(moh_class, Change.REMOVED, None))
    return plan


@dataclass
class SyncReport:
    """What a sync did (or, with ``dry_run``, would do)."""

    plan: list[ClassPlan]
    dry_run: bool = False
    files_written: int = 0
    published: bool = False
    reloaded: bool = False
    retired: int = 0
    deleted: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    #: classes published once the run is over (all of them, not only those in scope); None: not
    #: counted (a sync of named tenants by a syncer that has not counted them yet)
    classes: int | None = 0
    #: what is published once the run is over (class -> directory): every class, or those of
    #: the named tenants
    now: dict[str, str] = field(default_factory=dict)
    #: static mode: the publication changed but Asterisk could not be told (the next sync reloads)
    reload_pending: bool = False
    #: classes of tenants on file that someone else's realtime row holds: left alone, not published
    refused: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.counts = {c.value: sum(1 for p in self.plan if p.change is c) for c in Change}

    @property
    def reload(self) -> str:
        """What became of Asterisk's reload: ``done``, ``pending`` or ``not needed`` (realtime
        mode, or nothing changed)."""
        return "done" if self.reloaded else "pending" if self.reload_pending else "not needed"


class ClassesRefused(ClassTaken):
    """A sync published what it could, but some tenants' classes are held by realtime rows that
    ooma-moh did not write (:class:`.publish.ClassTaken`); ``report`` says what the sync did."""

    def __init__(self, names: list[str], report: SyncReport) -> None:
        super().__init__(names)
        self.report = report


class Syncer:
    """Carries out sync plans for one catalog, MOH directory and publisher."""

    def __init__(
        self,
        settings: Settings,
        catalog: TenantCatalog,
        mohdir: MohDirectory,
        publisher: Publisher,
        reload: Callable[[], None],
    ) -> None:
        """``reload`` makes Asterisk reload res_musiconhold (static mode), raising
        ``AsteriskError`` if it cannot; :func:`ooma_moh.app.build_syncer` wires all of them."""
        self.settings = settings
        self.catalog = catalog
        self.mohdir = mohdir
        self.publisher = publisher
        self.reload = reload
        self._pending_marker = settings.home / "reload-pending"
        #: classes published, as of this syncer's last run (None: not known yet)
        self._classes: int | None = None

    def published(self, classes: Collection[str] | None = None) -> dict[str, str]:
        """class -> directory as published now (rows or the include file): all, or ``classes``."""
        return self.publisher.current(classes)

    def classes_of(self, tenant_ids: Iterable[str] | None) -> set[str] | None:
        """The classes of ``tenant_ids`` (None: every class)."""
        if tenant_ids is None:
            return None
        return {self.settings.class_prefix + validate_tenant_id(t) for t in tenant_ids}

    def version_dir(self, tenant: TenantMoh) -> str:
        """The directory the tenant's current version is published from."""
        return str(self.mohdir.version_dir(tenant.moh_class(self.settings.class_prefix), tenant.version))

    def on_disk(self, moh_class: str, tenant: TenantMoh) -> bool:
        """Whether the tenant's current version directory is complete on disk."""
        return self.mohdir.is_complete(moh_class, tenant.version, tenant.renditions)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.settings.home.mkdir(parents=True, exist_ok=True)
        with open(self.settings.home / "sync.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def desired(self, tenant_ids: Iterable[str] | None) -> dict[str, tuple[str, TenantMoh]]:
        """class -> (version directory, tenant) for the tenants on ``file`` in scope."""
        if tenant_ids is None:
            tenants = self.catalog.list()
        else:
            tenants = [t for t in (self.catalog.get(validate_tenant_id(i)) for i in tenant_ids) if t]
        result = {}
        for tenant in tenants:
            if tenant.setting is MohSetting.FILE:
                moh_class = tenant.moh_class(self.settings.class_prefix)
                result[moh_class] = (str(self.mohdir.version_dir(moh_class, tenant.version)), tenant)
        return result

    def run(
        self,
        tenant_ids: list[str] | None = None,
        *,
        dry_run: bool = False,
        progress: Callable[[int], None] | None = None,
        heartbeat: Callable[[], None] | None = None,
    ) -> SyncReport:
        """Sync the named tenants (None: all); see the module docstring for the order of steps.
        A real run (not ``dry_run``) is counted in :mod:`.metrics` and logged in one line.
        ``progress(n)``: n more classes of the plan done; ``heartbeat()``: called at every step
        (each file downloaded or placed, the publication, the clean-up), so a watchdog can tell a
        long sync from a stuck one."""
        if dry_run:
            return self._run(tenant_ids, dry_run=True, progress=progress)
        started = time.monotonic()
        scope = "all" if tenant_ids is None else printable(",".join(tenant_ids), 200)
        metrics.SYNC_RUNS.inc()
        try:
            with metrics.SYNC_DURATION.time():
                report = self._run(tenant_ids, dry_run=False, progress=progress, heartbeat=heartbeat)
        except Exception as exc:
            log.info(
                "sync scope=%s result=error reason=%s in %.3f s: %s",
                scope,
                metrics.sync_failed(exc),
                time.monotonic() - started,
                printable(exc, 300),
            )
            raise
        metrics.sync_succeeded(report.classes)
        log.info(
            "sync scope=%s result=ok added=%d changed=%d removed=%d unchanged=%d files=%d reload=%s"
            " retired=%d deleted=%d in %.3f s",
            scope,
            report.counts["added"],
            report.counts["changed"],
            report.counts["removed"],
            report.counts["unchanged"],
            report.files_written,
            report.reload.replace(" ", "_"),
            report.retired,
            report.deleted,
            time.monotonic() - started,
        )
        return report

    def _run(
        self,
        tenant_ids: list[str] | None,
        *,
        dry_run: bool,
        progress: Callable[[int], None] | None,
        heartbeat: Callable[[], None] | None = None,
    ) -> SyncReport:
        beat = heartbeat or (lambda: None)
        scope = self.classes_of(tenant_ids)
        with self._exclusive(), self.publisher.held():
            beat()
            desired = self.desired(tenant_ids)
            beat()
            published = self.publisher.current(scope)  # a sync of named tenants reads their rows only
            # a class someone else's row holds is neither replaced nor counted as ours to remove
            refused = sorted(self.publisher.foreign(desired))
            for moh_class in refused:  # said by the report and the ClassesRefused raised at the end
                del desired[moh_class]
            report = SyncReport(plan_sync(desired, published, scope), dry_run=dry_run, refused=refused)
            if dry_run:
                return report
            upserts = self._build_and_switch(report, beat, progress, full=scope is None)
            deletes = {p.moh_class for p in report.plan if p.change is Change.REMOVED}
            pending_error = None
            if self.publisher.needs_reload and self._pending_marker.exists():
                pending_error = self._reload(report)
            # While a reload is pending, Asterisk may still play the old versions: retire only.
            retain = float("inf") if pending_error else self.settings.retain_old_s
            now_published = {c: d for c, d in {**published, **upserts}.items() if c not in deletes}
            report.now = now_published
            report.classes = self._count_classes(published, now_published, scope)
            report.retired, report.deleted = self.mohdir.collect(now_published, retain, classes=scope)
            beat()
            if pending_error:
                report.reload_pending = True
                raise ReloadPending(pending_error, report)
            if refused:
                raise ClassesRefused(refused, report)
            return report

    def _count_classes(self, before: dict[str, str], after: dict[str, str], scope: set[str] | None) -> int:
        """How many classes are published now: counted by a full sync; after a sync of named
        tenants, the last count moved by what changed within their scope, or counted by the
        database if this syncer has not counted yet (reading every row in Python to count them
        was most of one change's time at 100,000 tenants)."""
        if scope is None:
            self._classes = len(after)
        elif self._classes is None:
            self._classes = self.publisher.count()
        else:
            self._classes += len(after) - len(before)  # both read or made within the scope
        return self._classes

    def _build_and_switch(
        self, report: SyncReport, beat: Callable[[], None], progress: Callable[[int], None] | None, *, full: bool
    ) -> dict[str, str]:
        """Steps 1 and 2 of the order (module docstring), pipelined: the version directories are
        completed batch by batch (:meth:`.MohDirectory.build`), and in realtime mode each batch's
        classes are switched in one transaction as soon as the batch is complete and durable,
        while the next batches download; the removals go with the last switch. The include file
        (static mode) is switched once, after every batch: Asterisk reads it only at the reload,
        which is marked pending before that switch; a full sync's last switch also sweeps the
        ownership of rows deleted by others. Returns every class switched (class -> directory)."""
        items = [p for p in report.plan if p.tenant is not None]
        wanted = [(p.moh_class, p.tenant.version, p.tenant.renditions) for p in items if p.tenant is not None]
        switched: dict[str, str] = {}
        waiting: dict[str, str] = {}  # built, not switched yet
        done = 0  # items built so far (an index: slicing the rest off per batch grew with N squared)
        with contextlib.closing(self.mohdir.build(wanted, fetched=beat)) as batches:
            for written in batches:
                chunk, done = items[done : done + len(written)], done + len(written)
                report.files_written += sum(written)
                waiting.update(
                    (p.moh_class, p.directory) for p in chunk if p.change is not Change.UNCHANGED and p.directory
                )
                if waiting and done < len(items) and not self.publisher.needs_reload:  # the last goes with the removals
                    self._switch(report, waiting, set(), switched)
                beat()
                if progress:
                    progress(len(chunk))
        deletes = {p.moh_class for p in report.plan if p.change is Change.REMOVED}
        if waiting or deletes:
            self._switch(report, waiting, deletes, switched, sweep=full)
            beat()
        if progress and deletes:
            progress(len(deletes))
        return switched

    def _switch(
        self,
        report: SyncReport,
        upserts: dict[str, str],
        deletes: set[str],
        switched: dict[str, str],
        *,
        sweep: bool = False,
    ) -> None:
        """One atomic switch of the publication; ``upserts`` move to ``switched``."""
        if self.publisher.needs_reload:
            # Marked before the switch (not before the downloads: a failed one leaves nothing to
            # reload): if we die before reloading, the next sync reloads.
            self._pending_marker.touch()
        self.publisher.apply(upserts, deletes, sweep=sweep)
        report.published = True
        switched.update(upserts)
        upserts.clear()

    def _reload(self, report: SyncReport) -> str | None:
        """Reload Asterisk's MOH; on success clear the pending mark, else say what is pending."""
        try:
            self.reload()
        except AsteriskError as exc:
            return (
                f"classes written to {self.settings.classes_conf}, but the reload is pending"
                f" (the next sync retries it): {exc}"
            )
        self._pending_marker.unlink(missing_ok=True)
        report.reloaded = True
        return None
