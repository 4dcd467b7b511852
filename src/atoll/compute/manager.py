"""What a compute host does when the conductor asks: guest operations on its driver.

The manager changes guests, never the server's vm_state: the conductor owns the
instance record's state machine, so a compute that dies mid-call leaves the
record as the workflow last wrote it.  Each call records its instance-action
event in this host's cell DB (the only DB a compute touches) and is idempotent,
so a resumed workflow step or a duplicated message does no harm.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from atoll import actions, faults
from atoll.context import RequestContext
from atoll.services.image import ImageService
from atoll.virt.driver import VirtDriver

LOG = logging.getLogger(__name__)

RPC_METHODS = [
    "prepare_guest",
    "stash_guest",
    "restore_guest",
    "delete_kept_disks",
    "spawn",
    "destroy",
    "power_off",
    "power_on",
    "reboot",
    "attach_volume",
    "detach_volume",
    "list_guests",
    "describe_guest",
]

# The move events of the compute API, each a fault point of its own so drills can
# name the exact step (e.g. compute.prep_snapshot_based_resize_at_dest).
MOVE_EVENTS = [
    "compute_prep_snapshot_based_resize_at_dest",
    "compute_prep_snapshot_based_resize_at_source",
    "compute_finish_snapshot_based_resize_at_dest",
    "compute_confirm_snapshot_based_resize_at_source",
    "compute_revert_snapshot_based_resize_at_dest",
    "compute_finish_revert_snapshot_based_resize_at_source",
    "compute_prep_resize",
    "compute_resize_instance",
    "compute_finish_resize",
    "compute_confirm_resize",
    "compute_revert_resize",
    "compute_finish_revert_resize",
]
for _event in MOVE_EVENTS:
    faults.register(f"compute.{_event.removeprefix('compute_')}", f"compute side of {_event}")

for _method in RPC_METHODS:
    faults.register(f"compute.{_method}", f"inside the compute's '{_method}' before the driver")
    faults.register(
        f"rpc.{_method}.reply",
        f"the reply to an RPC '{_method}' (drop_reply / duplicate_reply / raise)",
    )


class ComputeManager:
    def __init__(self, host: str, cell_db: str, driver: VirtDriver, images: ImageService) -> None:
        self.host = host
        self.cell_db = cell_db
        self.driver = driver
        self.images = images

    def _hit(self, method: str, instance_uuid: str | None = None, event: str | None = None) -> None:
        faults.hit(f"compute.{method}", host=self.host, instance=instance_uuid)
        if event in MOVE_EVENTS:
            faults.hit(
                f"compute.{event.removeprefix('compute_')}", host=self.host, instance=instance_uuid
            )

    def _event(self, ctx: dict[str, Any], instance_uuid: str, event: str | None):  # type: ignore[no-untyped-def]
        """The action event around a call, or nothing when the caller records its own."""
        from contextlib import nullcontext

        if not event:
            return nullcontext()
        return actions.action_event(
            self.cell_db, RequestContext.from_dict(ctx), instance_uuid, event, self.host
        )

    def _image_file(self, image_id: str | None) -> Path | None:
        return self.images.file_path(image_id) if image_id else None

    def spawn(
        self,
        ctx: dict[str, Any],
        instance_uuid: str,
        flavor: dict[str, Any],
        image_id: str | None,
        block_devices: list[dict[str, Any]],
        power_on: bool = True,
        event: str | None = None,
        keep_existing_disks: bool = False,
        move_event: str | None = None,
        disk_path: str | None = None,
    ) -> int:
        """Create the guest; from an image, a disk handed over by another host
        (``disk_path``, same-cell moves), or the disks it kept (revert)."""
        with self._event(ctx, instance_uuid, event):
            self._hit("spawn", instance_uuid, move_event)
            image_file = None
            if not keep_existing_disks:
                image_file = Path(disk_path) if disk_path else self._image_file(image_id)
            self.driver.spawn(
                instance_uuid,
                flavor,
                image_file=image_file,
                block_devices=block_devices,
                power_on=power_on,
                keep_existing_disks=keep_existing_disks,
            )
            LOG.info("spawned %s on %s", instance_uuid, self.host)
            return self.driver.get_power_state(instance_uuid)

    def destroy(
        self,
        ctx: dict[str, Any],
        instance_uuid: str,
        keep_disks: bool = False,
        event: str | None = None,
        move_event: str | None = None,
    ) -> None:
        with self._event(ctx, instance_uuid, event):
            self._hit("destroy", instance_uuid, move_event)
            self.driver.destroy(instance_uuid, keep_disks=keep_disks)
            LOG.info("destroyed %s on %s (disks kept: %s)", instance_uuid, self.host, keep_disks)

    def prepare_guest(self, ctx: dict[str, Any], instance_uuid: str, move_event: str) -> None:
        """The destination side of a move's prepare step: is this host able to take it."""
        self._hit("prepare_guest", instance_uuid, move_event)
        self.driver.get_available_resources()

    def stash_guest(
        self,
        ctx: dict[str, Any],
        instance_uuid: str,
        move_event: str,
        snapshot_path: str | None = None,
    ) -> dict[str, Any]:
        """Stop the guest, optionally snapshot its root disk, destroy it but keep its
        disks (for a revert).  Idempotent: a guest already stashed is left as it is."""
        self._hit("stash_guest", instance_uuid, move_event)
        if not self.driver.guest_exists(instance_uuid):
            kept = instance_uuid in self.driver.list_kept_disks()
            return {"stashed": kept, "root_disk": None}
        self.driver.power_off(instance_uuid)
        if snapshot_path:
            self.driver.snapshot(instance_uuid, Path(snapshot_path))
        volume_backed = self.driver.get_info(instance_uuid)["volume_backed"]
        self.driver.destroy(instance_uuid, keep_disks=True)
        root = None
        if not volume_backed:
            root = str(self.driver.root_disk_path(instance_uuid))
        LOG.info("stashed %s on %s (snapshot: %s)", instance_uuid, self.host, bool(snapshot_path))
        return {"stashed": True, "root_disk": root}

    def restore_guest(
        self,
        ctx: dict[str, Any],
        instance_uuid: str,
        flavor: dict[str, Any],
        block_devices: list[dict[str, Any]],
        power_on: bool,
        move_event: str | None = None,
    ) -> int:
        """Bring a stashed (or merely stopped) guest back in the given power state."""
        self._hit("restore_guest", instance_uuid, move_event)
        if not self.driver.guest_exists(instance_uuid):
            self.driver.spawn(
                instance_uuid,
                flavor,
                image_file=None,
                block_devices=block_devices,
                power_on=power_on,
                keep_existing_disks=True,
            )
        elif power_on:
            self.driver.power_on(instance_uuid)
        else:
            self.driver.power_off(instance_uuid)
        return self.driver.get_power_state(instance_uuid)

    def delete_kept_disks(
        self, ctx: dict[str, Any], instance_uuid: str, move_event: str | None = None
    ) -> None:
        """After a confirm: the source's kept disks (and any guest left) go."""
        self._hit("delete_kept_disks", instance_uuid, move_event)
        if self.driver.guest_exists(instance_uuid):
            self.driver.destroy(instance_uuid)
        self.driver.delete_kept_disks(instance_uuid)

    def power_off(self, ctx: dict[str, Any], instance_uuid: str) -> int:
        self._hit("power_off", instance_uuid)
        self.driver.power_off(instance_uuid)
        return self.driver.get_power_state(instance_uuid)

    def power_on(self, ctx: dict[str, Any], instance_uuid: str) -> int:
        self._hit("power_on", instance_uuid)
        self.driver.power_on(instance_uuid)
        return self.driver.get_power_state(instance_uuid)

    def reboot(
        self,
        ctx: dict[str, Any],
        instance_uuid: str,
        hard: bool,
        flavor: dict[str, Any],
        image_id: str | None,
        block_devices: list[dict[str, Any]],
    ) -> int:
        """A hard reboot re-creates a guest that is missing (how ERROR servers recover)."""
        self._hit("reboot", instance_uuid)
        if hard and not self.driver.guest_exists(instance_uuid):
            LOG.info("hard reboot of %s: no guest on %s, spawning it", instance_uuid, self.host)
            self.driver.spawn(
                instance_uuid,
                flavor,
                image_file=self._image_file(image_id),
                block_devices=block_devices,
                power_on=True,
            )
        else:
            self.driver.reboot(instance_uuid, hard=hard)
        return self.driver.get_power_state(instance_uuid)

    def attach_volume(
        self,
        ctx: dict[str, Any],
        instance_uuid: str,
        volume_id: str,
        attachment_id: str,
        tag: str | None,
    ) -> None:
        self._hit("attach_volume", instance_uuid)
        self.driver.attach_volume(instance_uuid, volume_id, attachment_id, tag)

    def detach_volume(self, ctx: dict[str, Any], instance_uuid: str, volume_id: str) -> None:
        self._hit("detach_volume", instance_uuid)
        self.driver.detach_volume(instance_uuid, volume_id)

    def list_guests(self, ctx: dict[str, Any]) -> list[dict[str, Any]]:
        self._hit("list_guests")
        return [
            {"uuid": uuid, "power_state": self.driver.get_power_state(uuid)}
            for uuid in self.driver.list_guests()
        ]

    def describe_guest(self, ctx: dict[str, Any], instance_uuid: str) -> dict[str, Any]:
        self._hit("describe_guest", instance_uuid)
        if not self.driver.guest_exists(instance_uuid):
            return {}
        info = dict(self.driver.get_info(instance_uuid))
        if not info["volume_backed"]:
            info["root_disk_path"] = str(self.driver.root_disk_path(instance_uuid))
        return info
