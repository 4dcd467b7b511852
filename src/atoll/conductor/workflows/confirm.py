"""Confirm a resize: the source lets go of the server for good."""

from __future__ import annotations

import logging
from typing import Any

from dbos import DBOS

from atoll import actions
from atoll.conductor import moves
from atoll.conductor.cell_copy import hard_delete_server
from atoll.conductor.moves import Allocations
from atoll.conductor.resources import attachment_id_for, ports_of
from atoll.conductor.steps import step
from atoll.db import instances
from atoll.runtime import current

LOG = logging.getLogger(__name__)

CONDUCTOR_EVENT = "conductor_confirm_snapshot_based_resize"


def workflow_id(migration_uuid: str, request_id: str) -> str:
    return f"confirm-{migration_uuid}-{request_id}"


@step(name="confirm.start")
def start(ctx: dict[str, Any], mv: dict[str, Any]) -> int | None:
    return moves.begin_resolution(
        ctx,
        mv,
        notification="instance.resize_confirm.start",
        status="confirming",
        conductor_event=CONDUCTOR_EVENT,
    )


@step(name="confirm.release_source")
def release_source(ctx: dict[str, Any], mv: dict[str, Any]) -> None:
    """Kept disks, port bindings and volume attachments of the source host go."""
    moves.boundary("confirm", mv)
    rt = current()
    uuid_, source = mv["instance_uuid"], mv["source_host"]
    event = moves.events_for(mv)["confirm_source"]
    moves.compute_call(ctx, mv["dest_db"], mv, source, event, "delete_kept_disks", move_event=event)
    for port_id in ports_of(mv["dest_db"], uuid_):
        rt.networks.delete_binding(port_id, source)
    for bdm in moves.volume_bdms(mv["dest_db"], uuid_):
        rt.volumes.attachment_delete(attachment_id_for(uuid_, bdm["volume_id"], source))


@step(name="confirm.drop_source_copy")
def drop_source_copy(mv: dict[str, Any]) -> None:
    if mv["cross_cell"]:
        hard_delete_server(mv["source_db"], mv["instance_uuid"])


@step(name="confirm.finish")
def finish(
    ctx: dict[str, Any], mv: dict[str, Any], event_id: int | None, keep_task_state: bool
) -> None:
    inst = instances.get(mv["dest_db"], mv["instance_uuid"])
    values: dict[str, Any] = {
        "vm_state": "active" if inst.power_state == 1 else "stopped",
        "flavor": {"cur": inst.flavor["cur"], "old": None, "new": None},
    }
    if not keep_task_state:
        values["task_state"] = None
    moves.save_copy(mv["dest_db"], mv["instance_uuid"], **values)
    moves.save_migration(mv["dest_db"], mv["migration_uuid"], status="confirmed")
    actions.event_finish(mv["dest_db"], event_id)
    actions.finish_action(mv["dest_db"], moves.ctx_of(ctx), mv["instance_uuid"], error=False)
    inst = instances.get(mv["dest_db"], mv["instance_uuid"])
    current().notifier.instance("instance.resize_confirm.end", instances.payload(inst))


@DBOS.workflow(name="confirm_resize")
def confirm_resize(ctx: dict[str, Any], mv: dict[str, Any], keep_task_state: bool = False) -> str:
    event_id = start(ctx, mv)
    try:
        release_source(ctx, mv)
        Allocations.drop_migration(mv)
        drop_source_copy(mv)
    except Exception as exc:
        from atoll.conductor.common import fail_instance

        LOG.error("confirming %s failed: %s", mv["instance_uuid"], exc)
        moves.save_migration(mv["dest_db"], mv["migration_uuid"], status="error")
        fail_instance(
            ctx,
            mv["dest_db"],
            mv["instance_uuid"],
            f"confirm failed: {exc}",
            host=mv["source_host"],
            event_type="instance.resize_confirm.error",
        )
        return "error"
    finish(ctx, mv, event_id, keep_task_state)
    return "confirmed"
