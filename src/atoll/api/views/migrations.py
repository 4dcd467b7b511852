"""Migration bodies, per microversion, for ``/os-migrations`` and ``/servers/{id}/migrations``.

``/os-migrations`` items (Nova's os-migrations samples):

- always: ``id`` (the row id in its cell), ``status``, ``instance_uuid``,
  ``source_compute``, ``dest_compute``, ``source_node``, ``dest_node``,
  ``dest_host``, ``old_instance_type_id``, ``new_instance_type_id``,
  ``created_at``, ``updated_at``;
- 2.23: ``migration_type``, and ``links`` (to ``/servers/{id}/migrations/{id}``)
  on a live migration in progress (queued, preparing, running, post-migrating);
- 2.59: ``uuid``;
- 2.80: ``user_id``, ``project_id``.

Server migration items (server-migrations samples) name the server
``server_uuid`` and carry the live-migration progress counters
(``memory_*_bytes``, ``disk_*_bytes``), which are ``null``: atoll records no
such progress.  ``uuid`` from 2.59, ``user_id``/``project_id`` from 2.80.

``old_instance_type_id``/``new_instance_type_id`` are Nova's internal flavor
ids (integers): a migration's ``old_flavor_id``/``new_flavor_id`` are shown as
integers when they are numbers, as stored otherwise.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from atoll.api import links
from atoll.api.deps import isotime
from atoll.api.microversion import APIVersion
from atoll.db.cell_models import Migration

LIVE_MIGRATION = "live-migration"
LIVE_IN_PROGRESS = frozenset({"queued", "preparing", "running", "post-migrating"})
PROGRESS_FIELDS = (
    "memory_total_bytes",
    "memory_processed_bytes",
    "memory_remaining_bytes",
    "disk_total_bytes",
    "disk_processed_bytes",
    "disk_remaining_bytes",
)


def flavor_id(value: str | None) -> int | str | None:
    if value is None:
        return None
    text = str(value).strip()
    return int(text) if text.isdigit() else value


def is_live_in_progress(migration: Migration) -> bool:
    return migration.migration_type == LIVE_MIGRATION and migration.status in LIVE_IN_PROGRESS


def migration_links(request: Request, migration: Migration) -> list[dict[str, str]]:
    return links.resource_links(
        request, f"servers/{migration.instance_uuid}/migrations", migration.id
    )


def _versioned(body: dict[str, Any], migration: Migration, version: APIVersion) -> None:
    if version >= "2.59":
        body["uuid"] = migration.uuid
    if version >= "2.80":
        body["user_id"] = migration.user_id
        body["project_id"] = migration.project_id


def migration(request: Request, item: Migration, version: APIVersion) -> dict[str, Any]:
    """One item of ``GET /os-migrations``."""
    body: dict[str, Any] = {
        "id": item.id,
        "status": item.status,
        "instance_uuid": item.instance_uuid,
        "source_compute": item.source_compute,
        "dest_compute": item.dest_compute,
        "source_node": item.source_node,
        "dest_node": item.dest_node,
        "dest_host": item.dest_host,
        "old_instance_type_id": flavor_id(item.old_flavor_id),
        "new_instance_type_id": flavor_id(item.new_flavor_id),
        "created_at": isotime(item.created_at),
        "updated_at": isotime(item.updated_at),
    }
    if version >= "2.23":
        body["migration_type"] = item.migration_type
        if is_live_in_progress(item):
            body["links"] = migration_links(request, item)
    _versioned(body, item, version)
    return body


def server_migration(item: Migration, version: APIVersion) -> dict[str, Any]:
    """One item of ``GET /servers/{id}/migrations`` (and the body of its show)."""
    body: dict[str, Any] = {
        "id": item.id,
        "server_uuid": item.instance_uuid,
        "status": item.status,
        "source_compute": item.source_compute,
        "dest_compute": item.dest_compute,
        "source_node": item.source_node,
        "dest_node": item.dest_node,
        "dest_host": item.dest_host,
        "created_at": isotime(item.created_at),
        "updated_at": isotime(item.updated_at),
        **dict.fromkeys(PROGRESS_FIELDS),
    }
    _versioned(body, item, version)
    return body
