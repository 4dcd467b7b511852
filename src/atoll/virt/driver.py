"""The interface between a compute manager and its hypervisor.

One driver object serves one compute host.  Every operation that changes a
guest is idempotent, because a resumed workflow or a duplicated message may
ask for it twice: spawning a guest that exists with the same flavor, destroying
a guest that is gone, or detaching a volume that is not attached does nothing.

A guest destroyed with ``keep_disks=True`` (the source of a cross-cell move)
is no longer defined, but its disks stay on the host until
:meth:`VirtDriver.delete_kept_disks` (confirm) or a spawn with
``keep_existing_disks=True`` (revert) re-defines it.  Kept disks live apart
from a defined guest, so a host can hold both for the same server.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Protocol

# The flavor keys a driver reads; missing keys count as 0.
FLAVOR_RESOURCE_KEYS = ("vcpus", "memory_mb", "root_gb", "ephemeral_gb", "swap")


class HostResources(Protocol):
    """What a driver needs to know about the host's capacity (e.g. ``SimSettings``)."""

    vcpus: int
    memory_mb: int
    local_gb: int


class VirtDriver(abc.ABC):
    """A hypervisor as the compute manager sees it."""

    driver_type: str = "abstract"

    def __init__(self, host: str, state_dir: Path, resources: HostResources) -> None:
        self.host = host
        self.state_dir = Path(state_dir)
        self.resources = resources

    @abc.abstractmethod
    def init_host(self) -> None:
        """Prepare the host at service start (and clean up what a crash left half done)."""

    @abc.abstractmethod
    def list_guests(self) -> list[str]:
        """Instance uuids with a guest defined on this host (kept disks excluded), sorted."""

    @abc.abstractmethod
    def list_kept_disks(self) -> list[str]:
        """Instance uuids whose disks are kept on this host for a confirm or revert, sorted."""

    @abc.abstractmethod
    def guest_exists(self, instance_uuid: str) -> bool:
        """Whether a guest is defined for ``instance_uuid`` on this host."""

    @abc.abstractmethod
    def spawn(
        self,
        instance_uuid: str,
        flavor: dict,
        *,
        image_file: Path | None,
        block_devices: list[dict],
        power_on: bool = True,
        keep_existing_disks: bool = False,
    ) -> None:
        """Define and (by default) start a guest.

        ``flavor`` has memory_mb, vcpus, root_gb, ephemeral_gb and swap (MiB).
        ``image_file`` is the root disk's content for an image-backed server.
        ``block_devices`` are dicts with volume_id, boot_index, tag and
        attachment_id; a volume with boot_index 0 makes the server
        volume-backed (no local root disk).  ``keep_existing_disks`` re-defines
        the guest on the disks kept by ``destroy(keep_disks=True)``.
        """

    @abc.abstractmethod
    def destroy(self, instance_uuid: str, *, keep_disks: bool = False) -> None:
        """Undefine the guest; delete its disks unless ``keep_disks``."""

    @abc.abstractmethod
    def delete_kept_disks(self, instance_uuid: str) -> None:
        """Delete the disks kept by ``destroy(keep_disks=True)``, if any."""

    @abc.abstractmethod
    def power_on(self, instance_uuid: str) -> None:
        """Start the guest (no-op when running)."""

    @abc.abstractmethod
    def power_off(self, instance_uuid: str) -> None:
        """Stop the guest (no-op when stopped)."""

    @abc.abstractmethod
    def reboot(self, instance_uuid: str, hard: bool) -> None:
        """Reboot the guest; it is running afterwards."""

    @abc.abstractmethod
    def get_power_state(self, instance_uuid: str) -> int:
        """The guest's power state; ``NOSTATE`` when no guest is defined."""

    @abc.abstractmethod
    def get_info(self, instance_uuid: str) -> dict:
        """power_state, flavor, disks and volumes of a defined guest."""

    @abc.abstractmethod
    def snapshot(self, instance_uuid: str, dest: Path) -> int:
        """Copy the root disk (of a defined or kept guest) into ``dest``; returns its size."""

    @abc.abstractmethod
    def root_disk_path(self, instance_uuid: str) -> Path:
        """The local root disk file (of the defined guest, else of the kept disks)."""

    @abc.abstractmethod
    def attach_volume(
        self, instance_uuid: str, volume_id: str, attachment_id: str, tag: str | None
    ) -> None:
        """Attach a volume to a defined guest (re-attaching updates the attachment)."""

    @abc.abstractmethod
    def detach_volume(self, instance_uuid: str, volume_id: str) -> None:
        """Detach a volume; no-op when it is not attached or the guest is gone."""

    @abc.abstractmethod
    def get_available_resources(self) -> dict:
        """Capacity and usage of the host, in the shape of Nova's hypervisor view.

        Keys: vcpus, memory_mb, local_gb, vcpus_used, memory_mb_used,
        local_gb_used, running_vms, hypervisor_type, hypervisor_hostname,
        hypervisor_version.
        """


def flavor_resources(flavor: dict) -> dict[str, int]:
    """The resource part of a flavor, as ints (missing keys are 0)."""
    return {key: int(flavor.get(key) or 0) for key in FLAVOR_RESOURCE_KEYS}


def local_disk_gb(flavor: dict, volume_backed: bool) -> int:
    """Local disk a guest takes, the way placement counts DISK_GB.

    Root disk (unless volume-backed), ephemeral disk, and swap rounded up to GiB.
    """
    res = flavor_resources(flavor)
    root = 0 if volume_backed else res["root_gb"]
    return root + res["ephemeral_gb"] + -(-res["swap"] // 1024)
