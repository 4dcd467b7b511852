"""Migrations: ``/os-migrations`` across every cell and ``/servers/{id}/migrations``.

``GET /os-migrations`` (admin by default) lists the migrations of every cell,
merged, newest first (``created_at`` then ``id`` descending; the migration uuid
breaks the tie of two cells' rows with the same time and id).  A cell whose
database does not answer is left out with a warning.  During a cross-cell move
a migration has a copy in both cells; the copy in the cell the server is not
in is hidden and never listed, so each migration appears once.  Soft-deleted
rows are not listed.

Filters: ``instance_uuid``, ``status``, ``migration_type``, ``host`` (the source
or the destination compute), ``source_compute``, ``hidden`` (a true value asks
for hidden copies, which are never listed: the answer is empty),
``changes-since`` (2.59) and ``changes-before`` (2.66) on ``updated_at``,
``user_id``/``project_id`` (2.80).  From 2.59 ``limit`` (default and cap
1000) and ``marker`` (a migration uuid; an unknown one is a 400) page the
list, with a ``migrations_links`` next link when a page comes back full.
The accepted parameters per version are in ``atoll.api.schemas.migrations``,
the bodies in ``atoll.api.views.migrations``.

``/servers/{id}/migrations`` (2.23+) and ``/servers/{id}/migrations/{id}``: Nova
shows only in-progress *live* migrations there.  atoll runs no live migrations,
so it shows the server's in-progress migrations of any type (resize, cold
migration, evacuation, live migration): every status but confirmed, reverted,
error, failed, completed, done, cancelled (and aborted).  A finished or unknown
migration is a 404 on show.

``DELETE /servers/{id}/migrations/{id}`` (2.24+, abort) and ``POST
.../{id}/action`` ``{"force_complete": null}`` (2.22+) apply to live migrations
only: any other migration is a 400 ("Only live migrations can be aborted"), an
unknown one a 404.  A live migration (only ever written by hand or by another
system sharing the database) is a 400 when not in an abortable state and a 409
otherwise, since atoll has nothing running to abort.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from atoll.api import links, policy
from atoll.api.deps import (
    ContextDep,
    JsonBody,
    RuntimeDep,
    VersionDep,
    each_cell,
    min_version,
    openapi_body,
    parse_uuid,
)
from atoll.api.errors import validate
from atoll.api.routers.services import FINISHED_MIGRATIONS
from atoll.api.schemas.migrations import ForceComplete, MigrationListQuery, parse_list_query
from atoll.api.server_records import ServerRecord, get_server
from atoll.api.views import migrations as view
from atoll.cells import Cell
from atoll.context import RequestContext
from atoll.db.cell_models import Migration
from atoll.exceptions import BadRequest, CellUnavailable, Conflict, NotFound
from atoll.runtime import Runtime

router = APIRouter(tags=["os-migrations"])

LIST_RULE = "os_compute_api:os-migrations:index"
SERVER_RULE = "os_compute_api:servers:migrations:%s"
ABORTABLE = frozenset({"running"})
ABORTABLE_2_65 = frozenset({"queued", "preparing", "running"})

policy.register(
    policy.RuleDefault(LIST_RULE, policy.ADMIN_API, "List migrations."),
    *(
        policy.RuleDefault(SERVER_RULE % name, policy.ADMIN_API, desc)
        for name, desc in (
            ("index", "List the in-progress migrations of a server."),
            ("show", "Show an in-progress migration of a server."),
            ("delete", "Abort an in-progress live migration."),
            ("force_complete", "Force an in-progress live migration to complete."),
        )
    ),
)


def _visible() -> Select[tuple[Migration]]:
    return select(Migration).where(Migration.deleted == 0, Migration.hidden.is_(False))


def _newest_first(stmt: Select[tuple[Migration]]) -> Select[tuple[Migration]]:
    return stmt.order_by(Migration.created_at.desc(), Migration.id.desc(), Migration.uuid.desc())


def _sort_key(item: Migration) -> tuple[Any, int, str]:
    return (item.created_at, item.id, item.uuid)


# -- GET /os-migrations ----------------------------------------------------------------------


def _filtered(query: MigrationListQuery) -> Select[tuple[Migration]]:
    stmt = _visible()
    for name, values in query.filters.items():
        if name == "host":
            stmt = stmt.where(
                or_(Migration.source_compute.in_(values), Migration.dest_compute.in_(values))
            )
        else:
            stmt = stmt.where(getattr(Migration, name).in_(values))
    if query.changes_since is not None:
        stmt = stmt.where(Migration.updated_at >= query.changes_since)
    if query.changes_before is not None:
        stmt = stmt.where(Migration.updated_at <= query.changes_before)
    return stmt


def _marker_row(runtime: Runtime, marker: str) -> Migration:
    stmt = _visible().where(Migration.uuid == marker)
    found = each_cell(runtime, lambda _cell, s: s.scalar(stmt))
    for _cell, row in found.results:
        if row is not None:
            return row
    raise BadRequest(f"Marker {marker} could not be found.")


def _after(marker: Migration) -> Any:
    """Rows after ``marker`` in newest-first order (the same order in every cell)."""
    return or_(
        Migration.created_at < marker.created_at,
        and_(
            Migration.created_at == marker.created_at,
            or_(
                Migration.id < marker.id,
                and_(Migration.id == marker.id, Migration.uuid < marker.uuid),
            ),
        ),
    )


def list_migrations_in_cells(runtime: Runtime, query: MigrationListQuery) -> list[Migration]:
    """The migrations ``query`` selects from every cell that answers, newest first."""
    if query.hidden or query.limit == 0:
        return []
    stmt = _filtered(query)
    if query.marker is not None:
        stmt = stmt.where(_after(_marker_row(runtime, query.marker)))
    stmt = _newest_first(stmt)
    if query.limit is not None:
        stmt = stmt.limit(query.limit)
    found = each_cell(runtime, lambda _cell, s: list(s.scalars(stmt)))
    merged = sorted((row for rows in found.values() for row in rows), key=_sort_key, reverse=True)
    return merged if query.limit is None else merged[: query.limit]


@router.get("/os-migrations")
def list_migrations(
    request: Request, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    policy.authorize(ctx, LIST_RULE)
    query = parse_list_query(request.query_params, version)
    rows = list_migrations_in_cells(runtime, query)
    items = [view.migration(request, row, version) for row in rows]
    body: dict[str, Any] = {"migrations": items}
    if query.paged:
        next_links = links.collection_links(
            request, "os-migrations", items, query.limit, marker_key="uuid"
        )
        if next_links:
            body["migrations_links"] = next_links
    return body


# -- /servers/{id}/migrations ------------------------------------------------------------------


def _server(runtime: Runtime, ctx: RequestContext, server_id: str, rule: str) -> ServerRecord:
    record = get_server(runtime, ctx, parse_uuid(server_id, "Instance"))
    policy.authorize(ctx, SERVER_RULE % rule, {"project_id": record.project_id})
    return record


def _in_cell(runtime: Runtime, record: ServerRecord, fn: Any) -> Any:
    """``fn(session)`` in the server's cell; 503 when that cell does not answer."""
    if record.cell is None:  # still being scheduled: no migration yet
        return None
    cell: Cell = record.cell
    found = each_cell(runtime, lambda _cell, s: fn(s), cells=[cell])
    if found.down:
        raise CellUnavailable(f"The cell of server {record.uuid} ({cell.name}) does not answer.")
    return found.results[0][1]


def _migration_id(migration_id: str, server_id: str) -> int:
    try:
        number = int(migration_id)
    except ValueError:
        number = -1
    if number < 1 or number > 2**31 - 1:  # beyond any row id (PostgreSQL's INTEGER)
        raise NotFound(f"Migration {migration_id} is not found for server {server_id}.")
    return number


def _one(runtime: Runtime, record: ServerRecord, migration_id: str) -> Migration:
    number = _migration_id(migration_id, record.uuid)

    def read(s: Session) -> Migration | None:
        return s.scalar(
            _visible().where(Migration.id == number, Migration.instance_uuid == record.uuid)
        )

    row = _in_cell(runtime, record, read)
    if row is None:
        raise NotFound(f"Migration {migration_id} is not found for server {record.uuid}.")
    return row


@router.get("/servers/{server_id}/migrations", dependencies=[min_version("2.23")])
def list_server_migrations(
    server_id: str, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    record = _server(runtime, ctx, server_id, "index")

    def read(s: Session) -> list[Migration]:
        stmt = _visible().where(
            Migration.instance_uuid == record.uuid,
            Migration.status.not_in(FINISHED_MIGRATIONS),
        )
        return list(s.scalars(_newest_first(stmt)))

    rows = _in_cell(runtime, record, read) or []
    return {"migrations": [view.server_migration(row, version) for row in rows]}


@router.get("/servers/{server_id}/migrations/{migration_id}", dependencies=[min_version("2.23")])
def show_server_migration(
    server_id: str, migration_id: str, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    record = _server(runtime, ctx, server_id, "show")
    row = _one(runtime, record, migration_id)
    if row.status in FINISHED_MIGRATIONS:
        raise NotFound(
            f"Migration {migration_id} for server {record.uuid} is not in progress "
            f"(it is {row.status})."
        )
    return {"migration": view.server_migration(row, version)}


def _live_only(
    row: Migration, record: ServerRecord, action: str, done: str, allowed: frozenset[str]
) -> None:
    """400 unless ``row`` is a live migration in one of the ``allowed`` states; then 409."""
    if row.migration_type != view.LIVE_MIGRATION:
        raise BadRequest(
            f"Only live migrations can be {done}: migration {row.id} of server "
            f"{record.uuid} is a {row.migration_type}."
        )
    if row.status not in allowed:
        raise BadRequest(
            f"Migration {row.id} state of instance {record.uuid} is {row.status}. Cannot "
            f"{action} live migration while the migration is in this state."
        )
    raise Conflict(
        f"atoll runs no live migrations: live migration {row.id} of server {record.uuid} "
        f"cannot be {done} here."
    )


@router.delete(
    "/servers/{server_id}/migrations/{migration_id}",
    status_code=202,
    dependencies=[min_version("2.24")],
)
def abort_server_migration(
    server_id: str, migration_id: str, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> Response:
    record = _server(runtime, ctx, server_id, "delete")
    row = _one(runtime, record, migration_id)
    allowed = ABORTABLE_2_65 if version >= "2.65" else ABORTABLE
    _live_only(row, record, "abort", "aborted", allowed)
    return Response(status_code=202)  # pragma: no cover - _live_only always raises


@router.post(
    "/servers/{server_id}/migrations/{migration_id}/action",
    status_code=202,
    dependencies=[min_version("2.22")],
    openapi_extra=openapi_body(ForceComplete),
)
def server_migration_action(
    server_id: str,
    migration_id: str,
    body: JsonBody,
    runtime: RuntimeDep,
    ctx: ContextDep,
) -> Response:
    validate(ForceComplete, body)
    record = _server(runtime, ctx, server_id, "force_complete")
    row = _one(runtime, record, migration_id)
    _live_only(row, record, "force complete", "forced to complete", frozenset({"running"}))
    return Response(status_code=202)  # pragma: no cover - _live_only always raises
