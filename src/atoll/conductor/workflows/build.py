"""Build a server: schedule, create it in the chosen cell, bind, attach, spawn.

A failed attempt undoes its bindings, attachments, guest and claim, then tries
the next alternate host in the same cell; with none left the server is ERROR
with a fault.  A server no host can take is buried in cell0, like Nova.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict
from typing import Any

from dbos import DBOS
from sqlalchemy import select

from atoll import actions
from atoll.conductor.common import (
    CELL0,
    fail_instance,
    finish,
    request_spec,
    set_state,
)
from atoll.conductor.resources import HostNetworks, HostVolumes, block_devices
from atoll.conductor.saga import Saga
from atoll.conductor.steps import boundary, register_boundaries, step
from atoll.context import RequestContext
from atoll.db import instances
from atoll.db.api_models import BuildRequest, InstanceMapping
from atoll.db.cell_models import BlockDeviceMapping, Instance, Tag, VirtualInterface
from atoll.db.session import session_scope
from atoll.db.types import utcnow
from atoll.exceptions import AtollError, Conflict, NoValidHost
from atoll.runtime import current
from atoll.virt import power_state

LOG = logging.getLogger(__name__)

WORKFLOW = "build"
register_boundaries(
    WORKFLOW, ["schedule", "create_in_cell", "claim_alternate", "bind", "spawn", "activate"]
)
PORT_NS = uuid.UUID("0c7f5c0e-7f4e-4c41-9a7e-3d6f0b1f6a21")


class BuildAborted(AtollError):
    """The server was deleted before it was placed."""

    code = 409


def workflow_id(instance_uuid: str) -> str:
    return f"build-{instance_uuid}"


@step(name="build.schedule", retries=False)
def schedule(ctx: dict[str, Any], instance_uuid: str) -> list[dict[str, Any]]:
    from atoll.scheduler.request import SchedulingRequest

    boundary(WORKFLOW, "schedule", instance=instance_uuid)
    spec = request_spec(instance_uuid)
    request = SchedulingRequest.from_spec(spec)
    selections = current().scheduler.select_destinations(
        request,
        consumer_uuid=instance_uuid,
        project_id=spec["project_id"],
        user_id=spec["user_id"],
    )
    return [asdict(s) for s in selections]


class Placement:
    """The claim on the chosen host and its release."""

    @staticmethod
    @step(name="build.claim_alternate", retries=False)
    def claim_alternate(instance_uuid: str, selection: dict[str, Any]) -> None:
        from atoll.scheduler.manager import Selection
        from atoll.scheduler.request import SchedulingRequest

        boundary(WORKFLOW, "claim_alternate", instance=instance_uuid, host=selection["host"])
        spec = request_spec(instance_uuid)
        current().scheduler.claim_alternate(
            Selection(**selection),
            SchedulingRequest.from_spec(spec),
            consumer_uuid=instance_uuid,
            project_id=spec["project_id"],
            user_id=spec["user_id"],
        )

    @staticmethod
    @step(name="build.release_claim")
    def release(instance_uuid: str) -> None:
        current().placement.delete_allocations(instance_uuid)


class CellRecord:
    """The server's record in its cell, made from the API's build request."""

    @staticmethod
    @step(name="build.create_in_cell")
    def create(ctx: dict[str, Any], instance_uuid: str, selection: dict[str, Any]) -> str:
        boundary(WORKFLOW, "create_in_cell", instance=instance_uuid)
        rt = current()
        cell = rt.cells.by_id(selection["cell_id"])
        _materialise(ctx, instance_uuid, cell.db_url, selection, vm_state="building")
        return cell.db_url

    @staticmethod
    @step(name="build.bury_in_cell0")
    def bury_in_cell0(ctx: dict[str, Any], instance_uuid: str, reason: str) -> str | None:
        """No host can take it: keep it visible, in ERROR, in cell0."""
        cell0 = current().cells.by_name(CELL0)
        try:
            _materialise(ctx, instance_uuid, cell0.db_url, None, vm_state="error")
        except BuildAborted:
            return None
        instances.add_fault(cell0.db_url, instance_uuid, NoValidHost(reason), host=None)
        return cell0.db_url

    @staticmethod
    @step(name="build.move_to_host")
    def move_to_host(cell_db: str, instance_uuid: str, selection: dict[str, Any]) -> None:
        instances.save(
            cell_db,
            instance_uuid,
            host=selection["host"],
            node=selection["node"],
            availability_zone=selection["availability_zone"],
        )


def _materialise(
    ctx: dict[str, Any],
    instance_uuid: str,
    cell_db: str,
    selection: dict[str, Any] | None,
    *,
    vm_state: str,
) -> None:
    """Copy the build request into the cell, map the server there, drop the request.

    Idempotent: a resumed step finds the row it already made and only finishes
    the API DB side.
    """
    rt = current()
    with session_scope(rt.settings.api_db) as s:
        br = s.scalar(select(BuildRequest).where(BuildRequest.instance_uuid == instance_uuid))
        if br is None:
            if instances.find(cell_db, instance_uuid) is not None:
                return
            raise BuildAborted(f"server {instance_uuid} was deleted while it was being built")
        data, bdms, tags = dict(br.instance), list(br.block_device_mappings), list(br.tags)
    if instances.find(cell_db, instance_uuid) is None:
        vifs = _ports_for(instance_uuid, data)
        flavor = data["flavor"]
        spec_az = data.get("availability_zone")
        with session_scope(cell_db) as s:
            s.add(
                Instance(
                    uuid=instance_uuid,
                    display_name=data.get("display_name", ""),
                    display_description=data.get("display_description"),
                    hostname=data.get("hostname", ""),
                    project_id=data["project_id"],
                    user_id=data["user_id"],
                    vm_state=vm_state,
                    task_state="spawning" if vm_state == "building" else None,
                    power_state=power_state.NOSTATE,
                    host=selection["host"] if selection else None,
                    node=selection["node"] if selection else None,
                    availability_zone=(selection or {}).get("availability_zone") or spec_az,
                    flavor={"cur": flavor, "old": None, "new": None},
                    vcpus=flavor["vcpus"],
                    memory_mb=flavor["memory_mb"],
                    root_gb=flavor["root_gb"],
                    ephemeral_gb=flavor["ephemeral_gb"],
                    image_ref=data.get("image_ref") or "",
                    key_name=data.get("key_name"),
                    key_data=data.get("key_data"),
                    metadata_=data.get("metadata") or {},
                    user_data=data.get("user_data"),
                    config_drive=data.get("config_drive") or "",
                    access_ip_v4=data.get("access_ip_v4"),
                    access_ip_v6=data.get("access_ip_v6"),
                    launch_index=data.get("launch_index", 0),
                    root_device_name="/dev/vda",
                )
            )
            for bdm in bdms:
                s.add(BlockDeviceMapping(instance_uuid=instance_uuid, **bdm))
            for vif in vifs:
                s.add(VirtualInterface(instance_uuid=instance_uuid, **vif))
            for tag in tags:
                s.add(Tag(resource_id=instance_uuid, tag=tag))
        actions.start_action(cell_db, RequestContext.from_dict(ctx), instance_uuid, "create")
    cell = next(c for c in rt.cells.all() if c.db_url == cell_db)
    with session_scope(rt.settings.api_db) as s:
        mapping = s.scalar(
            select(InstanceMapping).where(InstanceMapping.instance_uuid == instance_uuid)
        )
        if mapping is not None:
            mapping.cell_id = cell.id
        br = s.scalar(select(BuildRequest).where(BuildRequest.instance_uuid == instance_uuid))
        if br is not None:
            s.delete(br)


def _ports_for(instance_uuid: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The VIF rows for the requested networks; ports atoll creates get stable ids."""
    net = current().networks
    vifs = []
    for index, req in enumerate(data.get("requested_networks") or []):
        if req.get("port_id"):
            port = net.get_port(req["port_id"])
            preexisting = True
        else:
            port_id = str(uuid.uuid5(PORT_NS, f"{instance_uuid}:{index}"))
            try:
                port = net.get_port(port_id)
            except AtollError:
                port = net.create_port(
                    req["network_id"], project_id=data["project_id"], port_id=port_id
                )
            preexisting = False
        vifs.append(
            {
                "uuid": port["id"],
                "network_id": port["network_id"],
                "address": port["mac_address"],
                "tag": req.get("tag"),
                "preexisting": preexisting,
            }
        )
    return vifs


class Guest:
    """The guest on the chosen host."""

    @staticmethod
    @step(name="build.spawn", retries=False)
    def spawn(ctx: dict[str, Any], cell_db: str, instance_uuid: str, host: str) -> int:
        boundary(WORKFLOW, "spawn", instance=instance_uuid, host=host)
        rt = current()
        inst = instances.get(cell_db, instance_uuid)
        if inst.task_state == "deleting":
            raise BuildAborted(f"server {instance_uuid} is being deleted")
        cell = rt.cells.for_host(host)
        bdms = block_devices(cell_db, instance_uuid)
        volume_backed = any(b["boot_index"] == 0 for b in bdms)
        return rt.compute(cell).spawn(
            RequestContext.from_dict(ctx),
            host,
            instance_uuid,
            flavor=inst.flavor["cur"],
            image_id=None if volume_backed else inst.image_ref,
            block_devices=bdms,
        )

    @staticmethod
    @step(name="build.destroy")
    def destroy(ctx: dict[str, Any], instance_uuid: str, host: str) -> None:
        rt = current()
        rt.compute(rt.cells.for_host(host)).destroy(
            RequestContext.from_dict(ctx), host, instance_uuid
        )


@step(name="build.activate")
def activate(ctx: dict[str, Any], cell_db: str, instance_uuid: str, state: int) -> None:
    boundary(WORKFLOW, "activate", instance=instance_uuid)
    try:
        instances.save(
            cell_db,
            instance_uuid,
            expected_task_state="spawning",
            vm_state="active",
            task_state=None,
            power_state=state,
            launched_at=utcnow(),
        )
    except instances.InstanceInvalidState:
        inst = instances.get(cell_db, instance_uuid)
        if inst.vm_state == "active" and inst.task_state is None:
            return  # this step already ran (a resumed or repeated step)
        raise  # e.g. deleted while spawning


@DBOS.workflow(name="build_server")
def build_server(ctx: dict[str, Any], instance_uuid: str) -> str:
    try:
        selections = schedule(ctx, instance_uuid)
    except Exception as exc:
        # No host, or scheduling itself failed: a claim it may have made goes, and
        # the server, never placed, is kept in cell0 in ERROR with the reason.
        if not isinstance(exc, NoValidHost):
            LOG.error("scheduling %s failed: %s", instance_uuid, exc)
            Placement.release(instance_uuid)
        cell_db = CellRecord.bury_in_cell0(ctx, instance_uuid, str(exc) or type(exc).__name__)
        if cell_db is not None:
            fail_instance(
                ctx,
                cell_db,
                instance_uuid,
                str(exc) or type(exc).__name__,
                host=None,
                event_type="compute_task.build_instances.error",
            )
        return "error"
    primary = selections[0]
    try:
        cell_db = CellRecord.create(ctx, instance_uuid, primary)
    except BuildAborted:
        Placement.release(instance_uuid)
        return "aborted"
    last_error = "no host could build the server"
    for attempt, selection in enumerate(selections):
        host = selection["host"]
        if attempt > 0:
            try:
                Placement.claim_alternate(instance_uuid, selection)
            except Conflict as exc:
                LOG.info("alternate %s for %s is full: %s", host, instance_uuid, exc)
                continue
            CellRecord.move_to_host(cell_db, instance_uuid, selection)
        saga = Saga(f"build {instance_uuid} on {host}")
        saga.push(Placement.release, instance_uuid)
        try:
            boundary(WORKFLOW, "bind", instance=instance_uuid, host=host)
            saga.push(HostNetworks.unbind, cell_db, instance_uuid, host)
            HostNetworks.bind(cell_db, instance_uuid, host)
            saga.push(HostVolumes.detach, cell_db, instance_uuid, host)
            HostVolumes.attach(cell_db, instance_uuid, host)
            saga.push(Guest.destroy, ctx, instance_uuid, host)
            state = Guest.spawn(ctx, cell_db, instance_uuid, host)
            activate(ctx, cell_db, instance_uuid, state)
        except BuildAborted as exc:
            saga.rollback()
            LOG.info("build of %s stopped: %s", instance_uuid, exc)
            return "aborted"
        except Exception as exc:
            saga.rollback()
            last_error = str(exc) or type(exc).__name__
            if isinstance(exc, instances.InstanceInvalidState):
                return "aborted"  # deleted while spawning: the delete cleans up
            LOG.warning("build of %s failed on %s: %s", instance_uuid, host, last_error)
            continue
        finish(ctx, cell_db, instance_uuid, "instance.create.end")
        return "active"
    set_state(cell_db, instance_uuid, host=None, node=None)
    fail_instance(
        ctx, cell_db, instance_uuid, last_error, host=None, event_type="instance.create.error"
    )
    return "error"
