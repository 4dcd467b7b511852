"""Revert a resize: the server goes back to its source host, as it was."""

from __future__ import annotations

import logging
from typing import Any

from dbos import DBOS
from sqlalchemy import update

from atoll import actions
from atoll.conductor import moves
from atoll.conductor.cell_copy import copy_actions_back, hard_delete_server, sync_volumes
from atoll.conductor.moves import Allocations
from atoll.conductor.resources import attachment_id_for, connector, ports_of
from atoll.conductor.steps import step
from atoll.db import instances
from atoll.db.api_models import InstanceMapping
from atoll.db.session import session_scope
from atoll.runtime import current

LOG = logging.getLogger(__name__)

CONDUCTOR_EVENT = "conductor_revert_snapshot_based_resize"


def workflow_id(migration_uuid: str, request_id: str) -> str:
    return f"revert-{migration_uuid}-{request_id}"


@step(name="revert.start")
def start(ctx: dict[str, Any], mv: dict[str, Any]) -> int | None:
    return moves.begin_resolution(
        ctx,
        mv,
        notification="instance.resize_revert.start",
        status="reverting",
        conductor_event=CONDUCTOR_EVENT,
    )


@step(name="revert.release_dest")
def release_dest(ctx: dict[str, Any], mv: dict[str, Any]) -> None:
    """The destination's guest, bindings and attachments go."""
    moves.boundary("revert", mv)
    rt = current()
    uuid_, dest = mv["instance_uuid"], mv["dest_host"]
    event = moves.events_for(mv)["revert_dest"]
    moves.compute_call(ctx, mv["dest_db"], mv, dest, event, "destroy", move_event=event)
    for port_id in ports_of(mv["dest_db"], uuid_):
        rt.networks.delete_binding(port_id, dest)
    for att in rt.volumes.attachments(instance_uuid=uuid_):
        if att.get("host") in (dest, None):
            rt.volumes.attachment_delete(att["id"])


@step(name="revert.restore_source")
def restore_source(ctx: dict[str, Any], mv: dict[str, Any], power_on: bool) -> int:
    """Volumes changed while resized stay changed; the guest comes back from its disks."""
    rt = current()
    uuid_, source = mv["instance_uuid"], mv["source_host"]
    if mv["cross_cell"]:
        sync_volumes(mv["dest_db"], mv["source_db"], uuid_)
    for bdm in moves.volume_bdms(mv["source_db"], uuid_):
        att = attachment_id_for(uuid_, bdm["volume_id"], source)
        rt.volumes.attachment_create(bdm["volume_id"], uuid_, attachment_id=att)
        rt.volumes.attachment_update(att, host=source, connector=connector(source))
        rt.volumes.attachment_complete(att)
    moves.set_attachment_ids(mv["source_db"], uuid_, source)
    for port_id in ports_of(mv["source_db"], uuid_):
        rt.networks.create_binding(port_id, source, active=False)
        rt.networks.activate_binding(port_id, source)
    event = moves.events_for(mv)["finish_revert_source"]
    return moves.compute_call(
        ctx,
        mv["dest_db"],
        mv,
        source,
        event,
        "restore_guest",
        flavor=mv["old_flavor"],
        block_devices=moves.volume_bdms(mv["source_db"], uuid_),
        power_on=power_on,
        move_event=event,
    )


@step(name="revert.swap_back")
def swap_back(ctx: dict[str, Any], mv: dict[str, Any], state: int, event_id: int | None) -> None:
    """The source copy is the server again; the target copy goes."""
    rt = current()
    uuid_ = mv["instance_uuid"]
    old = mv["old_flavor"]
    values = dict(
        host=mv["source_host"],
        node=mv["source_node"],
        availability_zone=mv["source_az"],
        flavor={"cur": old, "old": None, "new": None},
        **moves.flavor_columns(old),
        vm_state="active" if state == 1 else "stopped",
        task_state=None,
        power_state=state,
    )
    actions.event_finish(mv["dest_db"], event_id)
    actions.finish_action(mv["dest_db"], moves.ctx_of(ctx), uuid_, error=False)
    if not mv["cross_cell"]:
        moves.save_copy(mv["source_db"], uuid_, **values)
        moves.save_migration(mv["source_db"], mv["migration_uuid"], status="reverted")
        return
    copy_actions_back(mv["dest_db"], mv["source_db"], uuid_)
    moves.save_copy(mv["source_db"], uuid_, hidden=False, **values)
    moves.save_migration(mv["source_db"], mv["migration_uuid"], hidden=False, status="reverted")
    source_cell = next(c for c in rt.cells.all() if c.db_url == mv["source_db"])
    with session_scope(rt.settings.api_db) as s:
        s.execute(
            update(InstanceMapping)
            .where(InstanceMapping.instance_uuid == uuid_)
            .values(cell_id=source_cell.id)
        )
    hard_delete_server(mv["dest_db"], uuid_)


@step(name="revert.finish")
def finish(mv: dict[str, Any]) -> None:
    rt = current()
    inst = instances.get(mv["source_db"], mv["instance_uuid"])
    payload = instances.payload(inst)
    rt.notifier.instance("instance.exists", payload)
    rt.notifier.instance("instance.resize_revert.end", payload)


@DBOS.workflow(name="revert_resize")
def revert_resize(ctx: dict[str, Any], mv: dict[str, Any]) -> str:
    event_id = start(ctx, mv)
    try:
        release_dest(ctx, mv)
        state = restore_source(ctx, mv, mv["power_on"])
        Allocations.back_to_server(mv)
        swap_back(ctx, mv, state, event_id)
    except Exception as exc:
        from atoll.conductor.common import fail_instance

        LOG.error("reverting %s failed: %s", mv["instance_uuid"], exc)
        moves.save_migration(mv["dest_db"], mv["migration_uuid"], status="error")
        fail_instance(
            ctx,
            mv["dest_db"],
            mv["instance_uuid"],
            f"revert failed: {exc}",
            host=mv["dest_host"],
            event_type="instance.resize_revert.error",
        )
        return "error"
    finish(mv)
    return "reverted"
