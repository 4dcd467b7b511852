"""Delete a server: guest, bindings, attachments, allocations, then the record.

Each release is idempotent, so a delete that fails half-way (a compute down)
leaves the server in ERROR and a second delete finishes the job.
"""

from __future__ import annotations

import logging
from typing import Any

from dbos import DBOS
from sqlalchemy import delete, select, update

from atoll import actions
from atoll.conductor.common import (
    cell_of,
    fail_instance,
)
from atoll.conductor.resources import HostVolumes
from atoll.conductor.steps import boundary, register_boundaries, step
from atoll.context import RequestContext
from atoll.db import instances
from atoll.db.api_models import InstanceGroupMember, InstanceMapping
from atoll.db.cell_models import BlockDeviceMapping, Instance, Tag, VirtualInterface
from atoll.db.session import session_scope
from atoll.db.types import utcnow
from atoll.runtime import current

LOG = logging.getLogger(__name__)

WORKFLOW = "delete"
register_boundaries(
    WORKFLOW,
    [
        "wait_for_build",
        "destroy_guest",
        "release_networks",
        "release_volumes",
        "release_allocations",
        "soft_delete",
    ],
)


def workflow_id(instance_uuid: str, request_id: str) -> str:
    return f"delete-{instance_uuid}-{request_id}"


@step(name="delete.destroy_guest")
def destroy_guest(ctx: dict[str, Any], cell_db: str, instance_uuid: str) -> None:
    boundary(WORKFLOW, "destroy_guest", instance=instance_uuid)
    inst = instances.get(cell_db, instance_uuid)
    if not inst.host:
        return
    rt = current()
    rt.compute(rt.cells.for_host(inst.host)).destroy(
        RequestContext.from_dict(ctx),
        inst.host,
        instance_uuid,
        event="compute_terminate_instance",
    )


@step(name="delete.release_networks")
def release_networks(cell_db: str, instance_uuid: str) -> None:
    """Unbind ports the user brought; delete the ones atoll made."""
    boundary(WORKFLOW, "release_networks", instance=instance_uuid)
    net = current().networks
    with session_scope(cell_db) as s:
        vifs = s.execute(
            select(VirtualInterface.uuid, VirtualInterface.preexisting).where(
                VirtualInterface.instance_uuid == instance_uuid, VirtualInterface.deleted == 0
            )
        ).all()
    for port_id, preexisting in vifs:
        if preexisting:
            for binding in net.bindings(port_id):
                net.delete_binding(port_id, binding["host"])
            net.update_port(port_id, device_id="", device_owner="", status="DOWN")
        else:
            net.delete_port(port_id)


@step(name="delete.release_volumes")
def release_volumes(cell_db: str, instance_uuid: str) -> None:
    boundary(WORKFLOW, "release_volumes", instance=instance_uuid)
    HostVolumes.detach(cell_db, instance_uuid, None)  # a step inside a step runs inline
    vol = current().volumes
    with session_scope(cell_db) as s:
        doomed = s.scalars(
            select(BlockDeviceMapping.volume_id).where(
                BlockDeviceMapping.instance_uuid == instance_uuid,
                BlockDeviceMapping.deleted == 0,
                BlockDeviceMapping.delete_on_termination.is_(True),
                BlockDeviceMapping.volume_id.is_not(None),
            )
        ).all()
    for volume_id in doomed:
        vol.delete(volume_id)


@step(name="delete.release_allocations")
def release_allocations(instance_uuid: str) -> None:
    boundary(WORKFLOW, "release_allocations", instance=instance_uuid)
    current().placement.delete_allocations(instance_uuid)


@step(name="delete.soft_delete")
def soft_delete(ctx: dict[str, Any], cell_db: str, instance_uuid: str) -> None:
    """The record last: until here a failed delete can be retried."""
    boundary(WORKFLOW, "soft_delete", instance=instance_uuid)
    rt = current()
    actions.finish_action(cell_db, RequestContext.from_dict(ctx), instance_uuid, error=False)
    now = utcnow()
    with session_scope(cell_db) as s:
        inst = s.scalar(
            select(Instance).where(
                Instance.uuid == instance_uuid, Instance.deleted == 0, Instance.hidden.is_(False)
            )
        )
        if inst is not None:
            payload = instances.payload(inst)
            inst.vm_state, inst.task_state = "deleted", None
            inst.power_state, inst.terminated_at = 0, now
            inst.deleted, inst.deleted_at = inst.id, now
            for model in (BlockDeviceMapping, VirtualInterface):
                s.execute(
                    update(model)
                    .where(model.instance_uuid == instance_uuid, model.deleted == 0)
                    .values(deleted=model.id, deleted_at=now)
                )
            s.execute(delete(Tag).where(Tag.resource_id == instance_uuid))
            rt.notifier.instance("instance.delete.end", {**payload, "state": "deleted"})
    with session_scope(rt.settings.api_db) as s:
        s.execute(
            update(InstanceMapping)
            .where(InstanceMapping.instance_uuid == instance_uuid)
            .values(queued_for_delete=True)
        )
        s.execute(
            delete(InstanceGroupMember).where(InstanceGroupMember.instance_uuid == instance_uuid)
        )


@step(name="delete.describe_resize")
def describe_resize(instance_uuid: str) -> dict[str, Any]:
    from atoll.conductor import moves

    return moves.describe_finished_move(current(), instance_uuid, cell_of(instance_uuid))


@DBOS.workflow(name="delete_server")
def delete_server(ctx: dict[str, Any], instance_uuid: str) -> str:
    from atoll.conductor.workflows import build

    boundary(WORKFLOW, "wait_for_build", instance=instance_uuid)
    try:
        DBOS.retrieve_workflow(build.workflow_id(instance_uuid)).get_result()
    except Exception:  # no build workflow, or a failed one: there is still a record to delete
        LOG.debug("no finished build workflow for %s", instance_uuid)
    cell_db = cell_of(instance_uuid).db_url
    inst = instances.get(cell_db, instance_uuid)
    if inst.vm_state == "resized":
        # a server awaiting confirm is confirmed first: the source lets it go
        from atoll.conductor.workflows import confirm

        confirm.confirm_resize(ctx, describe_resize(instance_uuid), True)
        cell_db = cell_of(instance_uuid).db_url
        inst = instances.get(cell_db, instance_uuid)
    current().notifier.instance("instance.delete.start", instances.payload(inst))
    try:
        destroy_guest(ctx, cell_db, instance_uuid)
        release_networks(cell_db, instance_uuid)
        release_volumes(cell_db, instance_uuid)
        release_allocations(instance_uuid)
        soft_delete(ctx, cell_db, instance_uuid)
    except Exception as exc:
        fail_instance(
            ctx,
            cell_db,
            instance_uuid,
            f"delete failed: {exc}",
            host=inst.host,
            event_type="instance.delete.error",
        )
        return "error"
    return "deleted"
