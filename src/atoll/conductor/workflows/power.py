"""Stop, start and reboot: one compute call each, then the new state.

A hard reboot is also how a server left in ERROR by a failed operation is
recovered: it re-binds what the server should have on its host and re-creates
a missing guest.
"""

from __future__ import annotations

from typing import Any

from dbos import DBOS

from atoll.conductor.common import (
    cell_of,
    fail_instance,
    finish,
)
from atoll.conductor.resources import HostNetworks, HostVolumes, block_devices
from atoll.conductor.steps import boundary, register_boundaries, step
from atoll.context import RequestContext
from atoll.db import instances
from atoll.runtime import current

WORKFLOW = "power"
register_boundaries(WORKFLOW, ["stop", "start", "reboot"])

# action -> (compute event, task_states while running, vm_state after, notification prefix)
ACTIONS: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    "stop": ("compute_stop_instance", ("powering-off",), "stopped", "instance.power_off"),
    "start": ("compute_start_instance", ("powering-on",), "active", "instance.power_on"),
    "reboot": (
        "compute_reboot_instance",
        ("rebooting", "rebooting_hard"),
        "active",
        "instance.reboot",
    ),
}


def workflow_id(action: str, instance_uuid: str, request_id: str) -> str:
    return f"{action}-{instance_uuid}-{request_id}"


@step(name="power.compute_call")
def compute_call(
    ctx: dict[str, Any], cell_db: str, instance_uuid: str, action: str, hard: bool
) -> int:
    from atoll import actions

    boundary(WORKFLOW, action, instance=instance_uuid)
    rt = current()
    inst = instances.get(cell_db, instance_uuid)
    if not inst.host:
        raise instances.InstanceInvalidState(
            f"server {instance_uuid} has no host; it cannot be {action}ed (delete it instead)"
        )
    compute = rt.compute(rt.cells.for_host(inst.host))
    request = RequestContext.from_dict(ctx)
    with actions.action_event(cell_db, request, instance_uuid, ACTIONS[action][0], inst.host):
        if action == "stop":
            return compute.power_off(request, inst.host, instance_uuid)
        if action == "start":
            return compute.power_on(request, inst.host, instance_uuid)
        bdms = block_devices(cell_db, instance_uuid)
        if hard:
            # bring the server's host-side resources back to what it should have
            HostNetworks.bind(cell_db, instance_uuid, inst.host)
            HostVolumes.attach(cell_db, instance_uuid, inst.host)
            bdms = block_devices(cell_db, instance_uuid)
        volume_backed = any(b["boot_index"] == 0 for b in bdms)
        return compute.reboot(
            request,
            inst.host,
            instance_uuid,
            hard=hard,
            flavor=inst.flavor["cur"],
            image_id=None if volume_backed else inst.image_ref,
            block_devices=bdms,
        )


@DBOS.workflow(name="power_action")
def power_action(ctx: dict[str, Any], instance_uuid: str, action: str, hard: bool = False) -> str:
    cell_db = cell_of(instance_uuid).db_url
    _event, task_state, vm_state, notification = ACTIONS[action]
    inst = instances.get(cell_db, instance_uuid)
    current().notifier.instance(f"{notification}.start", instances.payload(inst))
    try:
        state = compute_call(ctx, cell_db, instance_uuid, action, hard)
    except Exception as exc:
        _restore(cell_db, instance_uuid, task_state, inst.vm_state, action)
        fail_instance(
            ctx,
            cell_db,
            instance_uuid,
            str(exc) or type(exc).__name__,
            host=inst.host,
            event_type=f"{notification}.error",
            vm_state=inst.vm_state if action != "reboot" else "error",
        )
        return "error"
    _done(cell_db, instance_uuid, task_state, vm_state, state)
    finish(ctx, cell_db, instance_uuid, f"{notification}.end")
    return vm_state


@step(name="power.done")
def _done(
    cell_db: str, instance_uuid: str, task_state: tuple[str, ...], vm_state: str, state: int
) -> None:
    instances.save(
        cell_db,
        instance_uuid,
        expected_task_state=task_state,
        vm_state=vm_state,
        task_state=None,
        power_state=state,
    )


@step(name="power.restore")
def _restore(cell_db: str, instance_uuid: str, task_state: str, vm_state: str, action: str) -> None:
    instances.save(cell_db, instance_uuid, task_state=None)
