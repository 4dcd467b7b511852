"""Copying a server between cell databases, and removing a copy.

A cross-cell move works on two copies of one server: the copy in the target cell
is made hidden, becomes the visible one at the point of no return, and the copy
left behind is hard-deleted by confirm (or, on revert, the target copy is).
Copies are whole: instance, block device mappings, interfaces, tags, actions
with their events and the migration, so the server reads the same in either cell.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from atoll.db.cell_models import (
    BlockDeviceMapping,
    Instance,
    InstanceAction,
    InstanceActionEvent,
    InstanceFault,
    Migration,
    Tag,
    VirtualInterface,
)
from atoll.db.session import session_scope
from atoll.db.types import utcnow


def _columns(row: Any, **override: Any) -> dict[str, Any]:
    values = {a.key: getattr(row, a.key) for a in type(row).__mapper__.column_attrs}
    values.pop("id", None)
    values.update(override)
    return values


def copy_server(src_db: str, dst_db: str, instance_uuid: str, migration_uuid: str) -> None:
    """Copy the live server into ``dst_db``, hidden.  Re-running replaces the copy."""
    hard_delete_server(dst_db, instance_uuid)
    with session_scope(src_db) as s:
        inst = s.scalar(
            select(Instance).where(
                Instance.uuid == instance_uuid, Instance.deleted == 0, Instance.hidden.is_(False)
            )
        )
        if inst is None:
            raise LookupError(f"no visible copy of {instance_uuid} to copy")
        instance = _columns(inst, hidden=True)
        bdms = [
            _columns(b)
            for b in s.scalars(
                select(BlockDeviceMapping).where(
                    BlockDeviceMapping.instance_uuid == instance_uuid,
                    BlockDeviceMapping.deleted == 0,
                )
            )
        ]
        vifs = [
            _columns(v)
            for v in s.scalars(
                select(VirtualInterface).where(
                    VirtualInterface.instance_uuid == instance_uuid, VirtualInterface.deleted == 0
                )
            )
        ]
        tags = [t.tag for t in s.scalars(select(Tag).where(Tag.resource_id == instance_uuid))]
        actions = _read_actions(s, instance_uuid)
        migration = s.scalar(select(Migration).where(Migration.uuid == migration_uuid))
        migration_row = _columns(migration, hidden=True) if migration is not None else None
    with session_scope(dst_db) as s:
        s.add(Instance(**instance))
        s.add_all(BlockDeviceMapping(**b) for b in bdms)
        s.add_all(VirtualInterface(**v) for v in vifs)
        s.add_all(Tag(resource_id=instance_uuid, tag=t) for t in tags)
        _write_actions(s, actions, only_missing=False)
        if migration_row is not None:
            s.add(Migration(**migration_row))


def hard_delete_server(cell_db: str, instance_uuid: str) -> None:
    """Remove every row of the server from this cell (all its copies, all records)."""
    with session_scope(cell_db) as s:
        action_ids = list(
            s.scalars(
                select(InstanceAction.id).where(InstanceAction.instance_uuid == instance_uuid)
            )
        )
        if action_ids:
            s.execute(
                delete(InstanceActionEvent).where(InstanceActionEvent.action_id.in_(action_ids))
            )
        for model in (
            InstanceAction,
            BlockDeviceMapping,
            VirtualInterface,
            InstanceFault,
            Migration,
        ):
            s.execute(delete(model).where(model.instance_uuid == instance_uuid))
        s.execute(delete(Tag).where(Tag.resource_id == instance_uuid))
        s.execute(delete(Instance).where(Instance.uuid == instance_uuid))


def copy_actions_back(src_db: str, dst_db: str, instance_uuid: str) -> None:
    """Actions and events recorded in ``src_db`` that ``dst_db`` lacks (revert keeps
    the history of what happened while the server lived in the other cell)."""
    with session_scope(src_db) as s:
        actions = _read_actions(s, instance_uuid)
    with session_scope(dst_db) as s:
        _write_actions(s, actions, only_missing=True)


def sync_volumes(src_db: str, dst_db: str, instance_uuid: str) -> list[dict[str, Any]]:
    """Make ``dst_db``'s volume mappings match ``src_db``'s; return the added ones."""
    with session_scope(src_db) as s:
        wanted = {
            b.volume_id: _columns(b)
            for b in s.scalars(
                select(BlockDeviceMapping).where(
                    BlockDeviceMapping.instance_uuid == instance_uuid,
                    BlockDeviceMapping.deleted == 0,
                    BlockDeviceMapping.volume_id.is_not(None),
                )
            )
        }
    added = []
    with session_scope(dst_db) as s:
        present = {
            b.volume_id: b
            for b in s.scalars(
                select(BlockDeviceMapping).where(
                    BlockDeviceMapping.instance_uuid == instance_uuid,
                    BlockDeviceMapping.deleted == 0,
                    BlockDeviceMapping.volume_id.is_not(None),
                )
            )
        }
        now = utcnow()
        for volume_id, bdm in present.items():
            if volume_id not in wanted:
                bdm.deleted, bdm.deleted_at = bdm.id, now
        for volume_id, columns in wanted.items():
            if volume_id not in present:
                s.add(BlockDeviceMapping(**columns))
                added.append(columns)
    return added


def _read_actions(s: Any, instance_uuid: str) -> list[tuple[dict[str, Any], list[dict]]]:
    out = []
    for action in s.scalars(
        select(InstanceAction)
        .where(InstanceAction.instance_uuid == instance_uuid, InstanceAction.deleted == 0)
        .order_by(InstanceAction.id)
    ):
        events = [
            _columns(e)
            for e in s.scalars(
                select(InstanceActionEvent)
                .where(InstanceActionEvent.action_id == action.id, InstanceActionEvent.deleted == 0)
                .order_by(InstanceActionEvent.id)
            )
        ]
        out.append((_columns(action), events))
    return out


def _write_actions(
    s: Any, actions: list[tuple[dict[str, Any], list[dict]]], *, only_missing: bool
) -> None:
    for action, events in actions:
        row = None
        if only_missing:
            row = s.scalar(
                select(InstanceAction).where(
                    InstanceAction.instance_uuid == action["instance_uuid"],
                    InstanceAction.request_id == action["request_id"],
                    InstanceAction.deleted == 0,
                )
            )
        if row is None:
            row = InstanceAction(**action)
            s.add(row)
            s.flush()
        have = set(
            s.scalars(
                select(InstanceActionEvent.event).where(InstanceActionEvent.action_id == row.id)
            )
        )
        for event in events:
            if event["event"] in have:
                existing = s.scalar(
                    select(InstanceActionEvent).where(
                        InstanceActionEvent.action_id == row.id,
                        InstanceActionEvent.event == event["event"],
                    )
                )
                if existing is not None and existing.finish_time is None:
                    existing.finish_time, existing.result = event["finish_time"], event["result"]
                continue
            s.add(InstanceActionEvent(**{**event, "action_id": row.id}))
        if action.get("finish_time") and row.finish_time is None:
            row.finish_time, row.message = action["finish_time"], action.get("message")
