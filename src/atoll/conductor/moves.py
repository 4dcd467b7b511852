"""Steps shared by the move, confirm and revert workflows, each with its undo.

A move is described by one dict (``mv``) built by the API: the server, its
migration, source host and cell, old and new flavor, whether it was running.
Every step is a DBOS step and idempotent, keyed by the migration and its name.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import select, update

from atoll import actions
from atoll.conductor import steps
from atoll.conductor.cell_copy import copy_server, hard_delete_server
from atoll.conductor.resources import attachment_id_for, connector, ports_of
from atoll.conductor.steps import step
from atoll.context import RequestContext
from atoll.db import instances
from atoll.db.api_models import InstanceMapping
from atoll.db.cell_models import BlockDeviceMapping, Instance, Migration
from atoll.db.session import session_scope
from atoll.db.types import utcnow
from atoll.runtime import current
from atoll.virt import power_state

LOG = logging.getLogger(__name__)

SNAPSHOT_NS = uuid.UUID("9d1f3e4c-6a2b-4f0e-8c7d-5b4a3e2d1c0f")

CROSS_EVENTS = {
    "prep_dest": "compute_prep_snapshot_based_resize_at_dest",
    "prep_source": "compute_prep_snapshot_based_resize_at_source",
    "finish_dest": "compute_finish_snapshot_based_resize_at_dest",
    "confirm_source": "compute_confirm_snapshot_based_resize_at_source",
    "revert_dest": "compute_revert_snapshot_based_resize_at_dest",
    "finish_revert_source": "compute_finish_revert_snapshot_based_resize_at_source",
}
SAME_EVENTS = {
    "prep_dest": "compute_prep_resize",
    "prep_source": "compute_resize_instance",
    "finish_dest": "compute_finish_resize",
    "confirm_source": "compute_confirm_resize",
    "revert_dest": "compute_revert_resize",
    "finish_revert_source": "compute_finish_revert_resize",
}


# Steps before the point of no return: a move resumed after its conductor died
# rolls back at the first of these it has not finished.
BEFORE_POINT_OF_NO_RETURN = (
    "allocations",
    "schedule",
    "copy_to_target",
    "prep_dest",
    "prep_source",
    "finish_dest",
)
steps.register_boundaries("move", [*BEFORE_POINT_OF_NO_RETURN, "cut_over", "confirm", "revert"])


def boundary(name: str, mv: dict[str, Any]) -> None:
    if name in BEFORE_POINT_OF_NO_RETURN:
        steps.resume_guard(f"step '{name}'")
    steps.boundary("move", name, instance=mv["instance_uuid"])


def events_for(mv: dict[str, Any]) -> dict[str, str]:
    return CROSS_EVENTS if mv.get("cross_cell") else SAME_EVENTS


def ctx_of(ctx: dict[str, Any]) -> RequestContext:
    return RequestContext.from_dict(ctx)


def compute_call(
    ctx: dict[str, Any],
    record_db: str,
    mv: dict[str, Any],
    host: str,
    event: str,
    method: str,
    **kwargs: Any,
) -> Any:
    """A compute RPC recorded as ``event`` on the server's action in ``record_db``."""
    rt = current()
    request = ctx_of(ctx)
    with actions.action_event(record_db, request, mv["instance_uuid"], event, host):
        return rt.compute(rt.cells.for_host(host)).call(
            request, host, method, instance_uuid=mv["instance_uuid"], **kwargs
        )


def volume_bdms(
    cell_db: str, instance_uuid: str, *, hidden: bool | None = None
) -> list[dict[str, Any]]:
    with session_scope(cell_db) as s:
        return [
            {
                "volume_id": b.volume_id,
                "attachment_id": b.attachment_id,
                "boot_index": b.boot_index,
                "device_name": b.device_name,
                "tag": b.tag,
            }
            for b in s.scalars(
                select(BlockDeviceMapping).where(
                    BlockDeviceMapping.instance_uuid == instance_uuid,
                    BlockDeviceMapping.deleted == 0,
                    BlockDeviceMapping.volume_id.is_not(None),
                )
            )
        ]


def set_attachment_ids(cell_db: str, instance_uuid: str, host: str) -> None:
    """Point the server's volume mappings at its attachments for ``host``."""
    with session_scope(cell_db) as s:
        for bdm in s.scalars(
            select(BlockDeviceMapping).where(
                BlockDeviceMapping.instance_uuid == instance_uuid,
                BlockDeviceMapping.deleted == 0,
                BlockDeviceMapping.volume_id.is_not(None),
            )
        ):
            bdm.attachment_id = attachment_id_for(instance_uuid, bdm.volume_id, host)


def save_copy(cell_db: str, instance_uuid: str, **values: Any) -> None:
    """Update a server's live copy in a cell, hidden or not (moves work on both)."""
    values.setdefault("updated_at", utcnow())
    with session_scope(cell_db) as s:
        s.execute(
            update(Instance)
            .where(Instance.uuid == instance_uuid, Instance.deleted == 0)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def save_migration(cell_db: str, migration_uuid: str, **values: Any) -> None:
    values.setdefault("updated_at", utcnow())
    with session_scope(cell_db) as s:
        s.execute(
            update(Migration)
            .where(Migration.uuid == migration_uuid)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def flavor_columns(flavor: dict[str, Any]) -> dict[str, Any]:
    return {
        "vcpus": flavor["vcpus"],
        "memory_mb": flavor["memory_mb"],
        "root_gb": flavor["root_gb"],
        "ephemeral_gb": flavor["ephemeral_gb"],
    }


def settled_vm_state(mv: dict[str, Any]) -> str:
    return "active" if mv["power_on"] else "stopped"


def begin_resolution(
    ctx: dict[str, Any], mv: dict[str, Any], *, notification: str, status: str, conductor_event: str
) -> int | None:
    """The first moments of a confirm or revert: notify, mark the migration, and (for a
    cross-cell move) open the conductor's event on the server's action."""
    inst = instances.get(mv["dest_db"], mv["instance_uuid"])
    current().notifier.instance(notification, instances.payload(inst))
    save_migration(mv["dest_db"], mv["migration_uuid"], status=status)
    if not mv["cross_cell"]:
        return None
    return actions.event_start(
        mv["dest_db"], ctx_of(ctx), mv["instance_uuid"], conductor_event, None
    )


# ------------------------------------------------------------------ placement


class Allocations:
    """Source usage moves to the migration; the destination is claimed for the server."""

    @staticmethod
    @step(name="move.allocations_to_migration", retries=False)
    def to_migration(mv: dict[str, Any]) -> None:
        boundary("allocations", mv)
        current().placement.move_allocations(
            mv["instance_uuid"], mv["migration_uuid"], mv["project_id"], mv["user_id"]
        )

    @staticmethod
    @step(name="move.allocations_back_to_server")
    def back_to_server(mv: dict[str, Any]) -> None:
        """Undo of both: the server holds exactly its source allocation again."""
        current().placement.move_allocations(
            mv["migration_uuid"],
            mv["instance_uuid"],
            mv["project_id"],
            mv["user_id"],
            drop_target=True,
        )

    @staticmethod
    @step(name="move.release_destination")
    def release_destination(mv: dict[str, Any]) -> None:
        current().placement.delete_allocations(mv["instance_uuid"])

    @staticmethod
    @step(name="move.drop_migration_allocation")
    def drop_migration(mv: dict[str, Any]) -> None:
        current().placement.delete_allocations(mv["migration_uuid"])


@step(name="move.schedule", retries=False)
def schedule(mv: dict[str, Any]) -> list[dict[str, Any]]:
    """Pick and claim a destination (plus alternates in its cell)."""
    from dataclasses import asdict

    from atoll.conductor.common import request_spec
    from atoll.scheduler.request import SchedulingRequest

    boundary("schedule", mv)
    rt = current()
    spec = request_spec(mv["instance_uuid"])
    if mv.get("requested_host"):
        spec["requested_destination"] = {"host": mv["requested_host"], "cell": None}
    request = SchedulingRequest.from_spec(
        spec,
        source_host=mv["source_host"],
        source_cell=mv["source_cell"],
        allow_cross_cell=mv["allow_cross_cell"],
        ignore_hosts=(mv["source_host"],),
        flavor_override=mv["new_flavor"],
    )
    selections = rt.scheduler.select_destinations(
        request,
        consumer_uuid=mv["instance_uuid"],
        project_id=mv["project_id"],
        user_id=mv["user_id"],
    )
    return [asdict(s) for s in selections]


@step(name="move.claim_alternate", retries=False)
def claim_alternate(mv: dict[str, Any], selection: dict[str, Any]) -> None:
    from atoll.conductor.common import request_spec
    from atoll.scheduler.manager import Selection
    from atoll.scheduler.request import SchedulingRequest

    rt = current()
    request = SchedulingRequest.from_spec(
        request_spec(mv["instance_uuid"]),
        source_host=mv["source_host"],
        source_cell=mv["source_cell"],
        allow_cross_cell=mv["allow_cross_cell"],
        ignore_hosts=(mv["source_host"],),
        flavor_override=mv["new_flavor"],
    )
    rt.scheduler.claim_alternate(
        Selection(**selection),
        request,
        consumer_uuid=mv["instance_uuid"],
        project_id=mv["project_id"],
        user_id=mv["user_id"],
    )


# ------------------------------------------------------------------ target cell copy


class TargetCopy:
    @staticmethod
    @step(name="move.copy_to_target_cell", retries=False)
    def create(mv: dict[str, Any], target_db: str) -> None:
        boundary("copy_to_target", mv)
        copy_server(mv["source_db"], target_db, mv["instance_uuid"], mv["migration_uuid"])

    @staticmethod
    @step(name="move.remove_target_copy")
    def remove(mv: dict[str, Any], target_db: str) -> None:
        hard_delete_server(target_db, mv["instance_uuid"])


# ------------------------------------------------------------------ destination prep


class DestPrep:
    """Inactive port bindings, empty volume attachments and the host's consent."""

    @staticmethod
    @step(name="move.prep_dest", retries=False)
    def run(ctx: dict[str, Any], mv: dict[str, Any], host: str, record_db: str) -> None:
        boundary("prep_dest", mv)
        rt = current()
        uuid_ = mv["instance_uuid"]
        for port_id in ports_of(mv["source_db"], uuid_):
            rt.networks.create_binding(port_id, host, active=False)
        for bdm in volume_bdms(mv["source_db"], uuid_):
            rt.volumes.attachment_create(
                bdm["volume_id"],
                uuid_,
                attachment_id=attachment_id_for(uuid_, bdm["volume_id"], host),
            )
        compute_call(
            ctx,
            record_db,
            mv,
            host,
            events_for(mv)["prep_dest"],
            "prepare_guest",
            move_event=events_for(mv)["prep_dest"],
        )

    @staticmethod
    @step(name="move.undo_prep_dest")
    def undo(mv: dict[str, Any], host: str) -> None:
        rt = current()
        uuid_ = mv["instance_uuid"]
        for port_id in ports_of(mv["source_db"], uuid_):
            rt.networks.delete_binding(port_id, host)
        for bdm in volume_bdms(mv["source_db"], uuid_):
            rt.volumes.attachment_delete(attachment_id_for(uuid_, bdm["volume_id"], host))


# ------------------------------------------------------------------ source prep


class SourcePrep:
    """Stop the guest, snapshot an image-backed root disk (cross-cell), keep the disks."""

    @staticmethod
    @step(name="move.prep_source", retries=False)
    def run(ctx: dict[str, Any], mv: dict[str, Any], record_db: str) -> dict[str, Any]:
        boundary("prep_source", mv)
        rt = current()
        snapshot_id, snapshot_path = None, None
        if mv.get("cross_cell") and not mv["volume_backed"]:
            snapshot_id = str(uuid.uuid5(SNAPSHOT_NS, mv["migration_uuid"]))
            _image, path = rt.images.reserve_snapshot(
                f"{mv['instance_uuid']}-move",
                instance_uuid=mv["instance_uuid"],
                owner=mv["project_id"],
                image_id=snapshot_id,
                properties={
                    "atoll_move_migration": mv["migration_uuid"],
                    "atoll_temporary": "true",
                },
            )
            snapshot_path = str(path)
        event = events_for(mv)["prep_source"]
        stashed = compute_call(
            ctx,
            record_db,
            mv,
            mv["source_host"],
            event,
            "stash_guest",
            move_event=event,
            snapshot_path=snapshot_path,
        )
        if snapshot_id:
            rt.images.finalize_snapshot(snapshot_id)
        save_copy(
            mv["source_db"],
            mv["instance_uuid"],
            task_state="resize_migrated",
            power_state=power_state.SHUTDOWN,
        )
        return {"snapshot_id": snapshot_id, "root_disk": stashed.get("root_disk")}

    @staticmethod
    @step(name="move.undo_prep_source")
    def undo(ctx: dict[str, Any], mv: dict[str, Any]) -> None:
        rt = current()
        if mv.get("cross_cell") and not mv["volume_backed"]:
            rt.images.delete(str(uuid.uuid5(SNAPSHOT_NS, mv["migration_uuid"])))
        state = rt.compute(rt.cells.for_host(mv["source_host"])).call(
            ctx_of(ctx),
            mv["source_host"],
            "restore_guest",
            instance_uuid=mv["instance_uuid"],
            flavor=mv["old_flavor"],
            block_devices=volume_bdms(mv["source_db"], mv["instance_uuid"]),
            power_on=mv["power_on"],
        )
        save_copy(mv["source_db"], mv["instance_uuid"], power_state=state)


# ------------------------------------------------------------------ destination finish


class DestFinish:
    """Bindings and attachments go live on the destination and the guest is spawned."""

    @staticmethod
    @step(name="move.finish_dest", retries=False)
    def run(
        ctx: dict[str, Any],
        mv: dict[str, Any],
        dest: dict[str, Any],
        record_db: str,
        prepared: dict[str, Any],
    ) -> int:
        boundary("finish_dest", mv)
        rt = current()
        uuid_, host = mv["instance_uuid"], dest["host"]
        for port_id in ports_of(mv["source_db"], uuid_):
            rt.networks.activate_binding(port_id, host)
        for bdm in volume_bdms(mv["source_db"], uuid_):
            att = attachment_id_for(uuid_, bdm["volume_id"], host)
            rt.volumes.attachment_update(att, host=host, connector=connector(host))
            rt.volumes.attachment_complete(att)
        set_attachment_ids(record_db, uuid_, host)
        event = events_for(mv)["finish_dest"]
        state = compute_call(
            ctx,
            record_db,
            mv,
            host,
            event,
            "spawn",
            flavor=mv["new_flavor"],
            image_id=prepared.get("snapshot_id"),
            block_devices=volume_bdms(record_db, uuid_),
            power_on=mv["power_on"],
            move_event=event,
            disk_path=None if mv.get("cross_cell") else prepared.get("root_disk"),
        )
        return state

    @staticmethod
    @step(name="move.undo_finish_dest")
    def undo(ctx: dict[str, Any], mv: dict[str, Any], dest: dict[str, Any]) -> None:
        rt = current()
        uuid_, host = mv["instance_uuid"], dest["host"]
        rt.compute(rt.cells.for_host(host)).destroy(ctx_of(ctx), host, uuid_)
        for port_id in ports_of(mv["source_db"], uuid_):
            rt.networks.activate_binding(port_id, mv["source_host"])
        set_attachment_ids(mv["source_db"], uuid_, mv["source_host"])


# ------------------------------------------------------------------ point of no return


@step(name="move.cut_over")
def cut_over(mv: dict[str, Any], dest: dict[str, Any], target_db: str, state: int) -> None:
    """The server is on the destination: record it there, then (cross-cell) swap the
    visible copy and the instance mapping.  Idempotent, and resumed forward."""
    boundary("cut_over", mv)
    rt = current()
    new = mv["new_flavor"]
    values = dict(
        host=dest["host"],
        node=dest["node"],
        availability_zone=dest["availability_zone"],
        flavor={"cur": new, "old": mv["old_flavor"], "new": new},
        **flavor_columns(new),
        vm_state="resized",
        task_state=None,
        power_state=state,
    )
    migration = dict(
        status="finished",
        dest_compute=dest["host"],
        dest_node=dest["node"],
        dest_host=dest["host"],
        cross_cell_move=bool(mv.get("cross_cell")),
    )
    if not mv.get("cross_cell"):
        save_copy(target_db, mv["instance_uuid"], **values)
        save_migration(target_db, mv["migration_uuid"], **migration)
        return
    save_copy(target_db, mv["instance_uuid"], hidden=False, **values)
    save_migration(target_db, mv["migration_uuid"], hidden=False, **migration)
    target = next(c for c in rt.cells.all() if c.db_url == target_db)
    with session_scope(rt.settings.api_db) as s:
        s.execute(
            update(InstanceMapping)
            .where(InstanceMapping.instance_uuid == mv["instance_uuid"])
            .values(cell_id=target.id)
        )
    save_copy(mv["source_db"], mv["instance_uuid"], hidden=True, task_state=None)
    save_migration(mv["source_db"], mv["migration_uuid"], hidden=True, **migration)


@step(name="move.delete_snapshot")
def delete_snapshot(mv: dict[str, Any], prepared: dict[str, Any]) -> None:
    if prepared.get("snapshot_id"):
        current().images.delete(prepared["snapshot_id"])


@step(name="move.fail")
def fail_move(ctx: dict[str, Any], mv: dict[str, Any], error: str, *, keep_state: bool) -> None:
    """After the rollback: the migration is in error and the server says why.

    With ``keep_state`` (no host found, like Nova; or a move whose conductor died
    and that rolled back cleanly) the server is left as it was; any other failure
    puts it in ERROR, recoverable with a hard reboot.
    """
    from atoll.db.cell_models import InstanceAction

    db, uuid_ = mv["source_db"], mv["instance_uuid"]
    save_migration(db, mv["migration_uuid"], status="error")
    instances.add_fault(db, uuid_, error, host=mv["source_host"])
    state = settled_vm_state(mv) if keep_state else "error"
    save_copy(db, uuid_, vm_state=state, task_state=None)
    request = ctx_of(ctx)
    with session_scope(db) as s:
        action = s.scalar(
            select(InstanceAction).where(
                InstanceAction.instance_uuid == uuid_,
                InstanceAction.request_id == request.request_id,
                InstanceAction.deleted == 0,
            )
        )
        if action is not None:
            from atoll.db.cell_models import InstanceActionEvent

            for ev in s.scalars(
                select(InstanceActionEvent).where(
                    InstanceActionEvent.action_id == action.id,
                    InstanceActionEvent.finish_time.is_(None),
                )
            ):
                ev.finish_time, ev.result = utcnow(), actions.ERROR
    actions.finish_action(db, request, uuid_, error=True)
    inst = instances.get(db, uuid_)
    current().notifier.emit(
        "compute_task.migrate_server.error",
        {**instances.payload(inst), "reason": error, "migration": mv["migration_uuid"]},
        priority="ERROR",
    )
    LOG.error("move %s of %s failed and was rolled back: %s", mv["migration_uuid"], uuid_, error)


# ------------------------------------------------------------------ describing moves


def describe_new_move(
    rt: Any,
    record: Any,
    *,
    migration_uuid: str,
    new_flavor: dict[str, Any],
    allow_cross_cell: bool,
    requested_host: str | None,
    migration_type: str,
) -> dict[str, Any]:
    """The ``mv`` a move workflow runs on, from the API's view of the server."""
    cell = record.cell
    with session_scope(cell.db_url) as s:
        volume_backed = (
            s.scalar(
                select(BlockDeviceMapping.id).where(
                    BlockDeviceMapping.instance_uuid == record.uuid,
                    BlockDeviceMapping.deleted == 0,
                    BlockDeviceMapping.boot_index == 0,
                    BlockDeviceMapping.destination_type == "volume",
                )
            )
            is not None
        )
    return {
        "instance_uuid": record.uuid,
        "migration_uuid": migration_uuid,
        "migration_type": migration_type,
        "project_id": record.project_id,
        "user_id": record.user_id,
        "source_host": record.host,
        "source_node": record.node,
        "source_az": record.availability_zone,
        "source_cell": cell.name,
        "source_cell_id": cell.id,
        "source_db": cell.db_url,
        "old_flavor": dict(record.flavor),
        "new_flavor": dict(new_flavor),
        "power_on": record.vm_state == "active",
        "volume_backed": volume_backed,
        "allow_cross_cell": allow_cross_cell,
        "requested_host": requested_host,
    }


def describe_finished_move(rt: Any, instance_uuid: str, cell: Any) -> dict[str, Any]:
    """The ``mv`` of the server's move awaiting confirm or revert (from its migration)."""
    from atoll.availability_zones import zone_of
    from atoll.exceptions import InstanceInvalidState

    with session_scope(cell.db_url) as s:
        migration = s.scalar(
            select(Migration)
            .where(
                Migration.instance_uuid == instance_uuid,
                Migration.hidden.is_(False),
                Migration.deleted == 0,
                Migration.status.in_(("finished", "confirming", "reverting")),
            )
            .order_by(Migration.id.desc())
        )
        if migration is None:
            raise InstanceInvalidState(
                f"Instance {instance_uuid} has no resize to confirm or "
                "revert (no finished migration)"
            )
        m = {
            c: getattr(migration, c)
            for c in (
                "uuid",
                "source_compute",
                "source_node",
                "dest_compute",
                "cross_cell_move",
                "user_id",
                "project_id",
            )
        }
    inst = instances.get(cell.db_url, instance_uuid)
    source_cell = rt.cells.for_host(m["source_compute"])
    return {
        "instance_uuid": instance_uuid,
        "migration_uuid": m["uuid"],
        "project_id": inst.project_id,
        "user_id": inst.user_id,
        "cross_cell": bool(m["cross_cell_move"]),
        "source_host": m["source_compute"],
        "source_node": m["source_node"],
        "source_az": zone_of(
            rt.settings.api_db, m["source_compute"], rt.settings.default_availability_zone
        ),
        "source_cell": source_cell.name,
        "source_cell_id": source_cell.id,
        "source_db": source_cell.db_url,
        "dest_host": m["dest_compute"],
        "dest_db": cell.db_url,
        "old_flavor": inst.flavor.get("old") or inst.flavor["cur"],
        "new_flavor": inst.flavor["cur"],
        "power_on": inst.power_state == power_state.RUNNING,
    }
