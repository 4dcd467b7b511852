"""Archiving: moving soft-deleted rows of the cell databases to their shadow tables.

This is the work behind `atoll db archive`.  A cell's rows are soft-deleted
(``deleted`` = the row id); left alone they slow every query and grow without
end.  ``archive_deleted_rows`` moves them to ``shadow_<table>`` (see
``atoll.db.shadow``) in batches, each batch one transaction that copies the
rows and deletes them, so a crash never loses a row nor leaves it in both places.

What moves, in this order (children before parents, so the foreign key from
events to actions holds at every step):

1. deleted servers (``instances.deleted != 0``) with everything recorded about
   them in that cell, whatever its own ``deleted`` says: their actions and the
   actions' events, faults, block device mappings, virtual interfaces and
   migrations.  When the cell also holds a live row with the same uuid, only
   the deleted row itself moves: the related rows belong to the live copy;
2. every other soft-deleted row of ``instance_actions_events``,
   ``instance_actions`` (with all its events), ``instance_faults``,
   ``block_device_mappings``, ``virtual_interfaces``, ``migrations``,
   ``compute_nodes`` and ``services`` (a service still named by a compute node
   row stays until that node is archived).

``before`` (naive UTC) limits the run to rows deleted before that time (for a
server, its ``deleted_at`` decides for all its related rows).  ``max_rows``
bounds the rows one call moves in a cell; the rows that must go with a server
go in the same transaction, so a call can move a few more than ``max_rows``.
Call again (or ``archive_all(..., until_complete=True)``) until nothing moves.

Then the API database: ``purge_api_records`` deletes the instance mappings of
servers deleted (``queued_for_delete``) whose rows are gone from every cell,
with their request specs, any build request left behind and group memberships,
plus request specs and group members that no live mapping names.  A mapping
whose cell does not answer is kept for a later run.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Table, delete, exists, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from atoll.cells import Cell, CellRegistry
from atoll.config import Settings
from atoll.db.api_models import BuildRequest, InstanceGroupMember, InstanceMapping, RequestSpec
from atoll.db.cell_models import CellBase
from atoll.db.session import session_scope
from atoll.db.shadow import shadow_of
from atoll.db.types import utcnow

LOG = logging.getLogger(__name__)

T = TypeVar("T")

BATCH_SIZE = 200  # parent rows per transaction (their children go with them)
CHUNK = 500  # ids per IN (...) list
RETRIES = 5  # a batch that lost a race (SQLite snapshot, MySQL deadlock) is retried
UNPLACED_GRACE_S = 600.0  # a never-placed server's mapping waits this long before its purge
CELL_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, ImportError)

INSTANCES = "instances"
EVENTS = "instance_actions_events"
ACTIONS = "instance_actions"
# what a deleted server takes with it (by instance_uuid), children first
INSTANCE_RELATED = (
    "instance_faults",
    "block_device_mappings",
    "virtual_interfaces",
    "migrations",
)
# the order of the second pass (soft-deleted rows of each table), children first
TABLE_ORDER = (
    EVENTS,
    ACTIONS,
    *INSTANCE_RELATED,
    "compute_nodes",
    "services",
)
ALL_TABLES = (EVENTS, ACTIONS, *INSTANCE_RELATED, INSTANCES, "compute_nodes", "services")


def parse_before(text: str) -> dt.datetime:
    """An ISO 8601 date or time as naive UTC (no zone given: UTC); ValueError otherwise."""
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 date or time (e.g. 2026-01-31 or "
            "2026-01-31T12:00:00+02:00)"
        ) from None
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return when


def _t(name: str) -> Table:
    return CellBase.metadata.tables[name]


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _deleted(table: Table, before: dt.datetime | None) -> ColumnElement[bool]:
    cond = table.c.deleted != 0
    if before is not None:
        cond = cond & (table.c.deleted_at < before)
    return cond


def _move(s: Session, name: str, ids: Sequence[int]) -> int:
    """Copy the rows ``ids`` of ``name`` to its shadow table and delete them."""
    if not ids:
        return 0
    table, shadow = _t(name), shadow_of(name)
    columns = [c.name for c in table.columns]
    moved = 0
    for chunk in _chunks(list(ids)):
        where = table.c.id.in_(chunk)
        # lock the rows (by key) so the copy and the delete see the same ones
        s.execute(select(table.c.id).where(where).with_for_update())
        s.execute(insert(shadow).from_select(columns, select(*table.c).where(where)))
        moved += s.execute(delete(table).where(where)).rowcount or 0
    return moved


def _ids(s: Session, name: str, column: str, values: Iterable[Any]) -> list[int]:
    table = _t(name)
    values = list(values)
    found: list[int] = []
    for chunk in _chunks(values):
        found.extend(s.scalars(select(table.c.id).where(table.c[column].in_(chunk))))
    return found


def _move_actions(s: Session, action_ids: Sequence[int], moved: Counter[str]) -> None:
    """Actions with all their events (events first: they point at the action)."""
    moved[EVENTS] += _move(s, EVENTS, _ids(s, EVENTS, "action_id", action_ids))
    moved[ACTIONS] += _move(s, ACTIONS, action_ids)


def _instances_batch(s: Session, limit: int, before: dt.datetime | None) -> Counter[str]:
    inst = _t(INSTANCES)
    rows = s.execute(
        select(inst.c.id, inst.c.uuid)
        .where(_deleted(inst, before))
        .order_by(inst.c.id)
        .limit(limit)
    ).all()
    moved: Counter[str] = Counter()
    if not rows:
        return moved
    uuids = sorted({uuid for _id, uuid in rows})
    live: set[str] = set()
    for chunk in _chunks(uuids):
        live.update(
            s.scalars(select(inst.c.uuid).where(inst.c.uuid.in_(chunk), inst.c.deleted == 0))
        )
    gone = [u for u in uuids if u not in live]
    _move_actions(s, _ids(s, ACTIONS, "instance_uuid", gone), moved)
    for name in INSTANCE_RELATED:
        moved[name] += _move(s, name, _ids(s, name, "instance_uuid", gone))
    moved[INSTANCES] += _move(s, INSTANCES, [row_id for row_id, _uuid in rows])
    return moved


def _table_batch(s: Session, name: str, limit: int, before: dt.datetime | None) -> Counter[str]:
    table = _t(name)
    stmt = select(table.c.id).where(_deleted(table, before))
    if name == "services":
        nodes = _t("compute_nodes")
        stmt = stmt.where(~exists().where(nodes.c.service_id == table.c.id))
    ids = list(s.scalars(stmt.order_by(table.c.id).limit(limit)))
    moved: Counter[str] = Counter()
    if name == ACTIONS:
        _move_actions(s, ids, moved)
    else:
        moved[name] += _move(s, name, ids)
    return moved


def _transient(exc: SQLAlchemyError) -> bool:
    """A batch that lost a race with another writer (worth another try)."""
    if isinstance(exc, IntegrityError):  # a row appeared under a parent being moved
        return True
    if not isinstance(exc, OperationalError):
        return False
    text = str(exc.orig).lower()
    return any(w in text for w in ("locked", "busy", "deadlock", "lock wait", "serializ"))


def _retrying(url: str, fn: Callable[[Session], Counter[str]]) -> Counter[str]:
    """``fn`` in one transaction, again when it lost a race with another writer."""
    for attempt in range(1, RETRIES + 1):
        try:
            with session_scope(url) as s:
                return fn(s)
        except (OperationalError, IntegrityError) as exc:
            if not _transient(exc) or attempt == RETRIES:
                raise
            LOG.info("archive batch lost a race (%s), retrying", _first_line(exc))
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def archive_deleted_rows(
    cell_db_url: str, *, max_rows: int = 1000, before: dt.datetime | None = None
) -> dict[str, int]:
    """Move up to about ``max_rows`` soft-deleted rows of one cell DB to the shadow tables.

    Returns rows moved per table (tables with none are left out: ``{}`` means
    nothing was left to archive).
    """
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    if before is not None and before.tzinfo is not None:
        before = before.astimezone(dt.UTC).replace(tzinfo=None)
    total: Counter[str] = Counter()
    remaining = max_rows

    def run(fn: Callable[[Session, int], Counter[str]]) -> None:
        nonlocal remaining
        while remaining > 0:
            limit = min(remaining, BATCH_SIZE)
            moved = _retrying(cell_db_url, lambda s, limit=limit: fn(s, limit))
            count = sum(moved.values())
            if not count:
                return
            total.update(moved)
            remaining -= count

    run(lambda s, limit: _instances_batch(s, limit, before))
    for name in TABLE_ORDER:
        run(lambda s, limit, name=name: _table_batch(s, name, limit, before))
    return {name: total[name] for name in ALL_TABLES if total[name]}


# -- the API database -----------------------------------------------------------------------


def purge_api_records(
    api_db_url: str,
    cells: Iterable[Cell],
    *,
    unplaced_grace: float = UNPLACED_GRACE_S,
) -> dict[str, int]:
    """Delete the API records of deleted servers that no cell holds any more.

    Returns rows deleted per API table (tables with none are left out).
    """
    with session_scope(api_db_url) as s:
        candidates = s.execute(
            select(
                InstanceMapping.instance_uuid, InstanceMapping.cell_id, InstanceMapping.updated_at
            )
            .where(InstanceMapping.queued_for_delete.is_(True))
            .order_by(InstanceMapping.id)
        ).all()
    cells = list(cells)
    uuids = [uuid for uuid, _cell_id, _updated in candidates]
    present: set[str] = set()
    answered: set[int] = set()
    inst = _t(INSTANCES)
    for cell in cells:
        try:
            with session_scope(cell.db_url) as cs:
                for chunk in _chunks(uuids):
                    present.update(cs.scalars(select(inst.c.uuid).where(inst.c.uuid.in_(chunk))))
        except CELL_ERRORS as exc:
            LOG.warning(
                "Cell %s did not answer; the API records of servers deleted in it are kept: %s",
                cell.name,
                _first_line(exc),
            )
            continue
        answered.add(cell.id)
    every_cell = all(c.id in answered for c in cells)
    settled = utcnow() - dt.timedelta(seconds=unplaced_grace)
    gone = [
        uuid
        for uuid, cell_id, updated in candidates
        if uuid not in present
        and (
            cell_id in answered
            if cell_id is not None
            else every_cell and (updated is None or updated < settled)
        )
    ]
    counts: Counter[str] = Counter()
    with session_scope(api_db_url) as s:
        for chunk in _chunks(gone):
            for model, key in (
                (RequestSpec, "request_specs"),
                (BuildRequest, "build_requests"),
                (InstanceGroupMember, "instance_group_members"),
                (InstanceMapping, "instance_mappings"),
            ):
                result = s.execute(delete(model).where(model.instance_uuid.in_(chunk)))
                counts[key] += result.rowcount or 0
        live_mapping = (
            select(InstanceMapping.id)
            .where(
                InstanceMapping.instance_uuid == InstanceGroupMember.instance_uuid,
                InstanceMapping.queued_for_delete.is_(False),
            )
            .exists()
        )
        stale_members = s.execute(delete(InstanceGroupMember).where(~live_mapping))
        counts["instance_group_members"] += stale_members.rowcount or 0
        any_mapping = (
            select(InstanceMapping.id)
            .where(InstanceMapping.instance_uuid == RequestSpec.instance_uuid)
            .exists()
        )
        orphan_specs = s.execute(delete(RequestSpec).where(~any_mapping))
        counts["request_specs"] += orphan_specs.rowcount or 0
    return {key: n for key, n in sorted(counts.items()) if n}


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0][:200] if text else type(exc).__name__


class ArchiveResult(dict[str, dict[str, int]]):
    """Rows moved per cell name and table.

    ``down`` names the cells skipped because their database did not answer or
    a batch failed (``errors`` has each one's reason), ``api`` the API DB rows
    purged, ``complete`` whether every other cell was left with nothing to archive.
    """

    def __init__(self) -> None:
        super().__init__()
        self.down: list[str] = []
        self.errors: dict[str, str] = {}
        self.api: dict[str, int] = {}
        self.complete = True

    @property
    def total(self) -> int:
        return sum(n for tables in self.values() for n in tables.values())


def archive_all(
    settings: Settings,
    *,
    max_rows: int = 1000,
    before: dt.datetime | None = None,
    until_complete: bool = False,
) -> ArchiveResult:
    """Archive every cell (cell0 included), then purge the API DB's leftovers.

    Without ``until_complete`` each cell gets one call of at most ``max_rows``
    rows; with it, calls repeat until a cell has nothing left.  A cell whose
    database does not answer (or fails) is skipped with a warning and named in
    ``down``, with the reason in ``errors``.
    """
    result = ArchiveResult()
    cells = CellRegistry(settings.api_db).refresh()
    for cell in cells:
        moved: Counter[str] = Counter()
        try:
            while True:
                batch = archive_deleted_rows(cell.db_url, max_rows=max_rows, before=before)
                moved.update(batch)
                more = sum(batch.values()) >= max_rows
                if not more:
                    break
                if not until_complete:
                    result.complete = False
                    break
        except CELL_ERRORS as exc:
            reason = _first_line(exc)
            LOG.warning(
                "Cell %s skipped: its database did not answer or failed: %s", cell.name, reason
            )
            result.down.append(cell.name)
            result.errors[cell.name] = reason
            if moved:
                result[cell.name] = {n: moved[n] for n in ALL_TABLES if moved[n]}
            continue
        result[cell.name] = {n: moved[n] for n in ALL_TABLES if moved[n]}
    result.api = purge_api_records(settings.api_db, cells)
    return result
