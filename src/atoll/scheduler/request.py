"""What the scheduler is asked: a server's stored request spec plus what a move adds."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class SchedulingRequest:
    """One scheduling question, immutable so filters and weighers can share it.

    ``source_host`` / ``source_cell`` are set for a move (the server's current
    host and cell name).  ``allow_cross_cell`` False means only hosts of
    ``source_cell`` are eligible.  ``group_policy`` and ``group_hosts`` are
    filled by the scheduler from the server group before filtering.
    """

    instance_uuid: str
    project_id: str
    user_id: str
    flavor: Mapping[str, Any]
    image: Mapping[str, Any] | None = None
    is_volume_backed: bool = False
    availability_zone: str | None = None
    group_uuid: str | None = None
    scheduler_hints: Mapping[str, Any] = field(default_factory=dict)
    requested_host: str | None = None
    requested_cell: str | None = None
    source_host: str | None = None
    source_cell: str | None = None
    allow_cross_cell: bool = True
    ignore_hosts: frozenset[str] = frozenset()
    group_policy: str | None = None
    group_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_spec(
        cls,
        spec: Mapping[str, Any],
        *,
        source_host: str | None = None,
        source_cell: str | None = None,
        allow_cross_cell: bool = True,
        ignore_hosts: Iterable[str] = (),
        flavor_override: Mapping[str, Any] | None = None,
    ) -> SchedulingRequest:
        """Build from ``RequestSpec.spec``; ``flavor_override`` is a resize's new flavor."""
        destination = spec.get("requested_destination") or {}
        return cls(
            instance_uuid=spec["instance_uuid"],
            project_id=spec.get("project_id") or "",
            user_id=spec.get("user_id") or "",
            flavor=dict(flavor_override if flavor_override is not None else spec["flavor"]),
            image=spec.get("image"),
            is_volume_backed=bool(spec.get("is_volume_backed")),
            availability_zone=spec.get("availability_zone") or None,
            group_uuid=spec.get("group_uuid") or None,
            scheduler_hints=dict(spec.get("scheduler_hints") or {}),
            requested_host=destination.get("host") or None,
            requested_cell=destination.get("cell") or None,
            source_host=source_host,
            source_cell=source_cell,
            allow_cross_cell=allow_cross_cell,
            ignore_hosts=frozenset(ignore_hosts),
        )

    def with_group(self, policy: str | None, hosts: Iterable[str]) -> SchedulingRequest:
        return replace(self, group_policy=policy, group_hosts=frozenset(hosts))

    def resources(self) -> dict[str, int]:
        """The placement resources of the flavor (DISK_GB without the root disk when
        volume-backed); a class whose amount is zero is left out."""
        flavor = self.flavor
        root_gb = 0 if self.is_volume_backed else int(flavor.get("root_gb") or 0)
        disk_gb = (
            root_gb
            + int(flavor.get("ephemeral_gb") or 0)
            + math.ceil(int(flavor.get("swap") or 0) / 1024)
        )
        res = {
            "VCPU": int(flavor.get("vcpus") or 0),
            "MEMORY_MB": int(flavor.get("memory_mb") or 0),
            "DISK_GB": disk_gb,
        }
        return {rc: amount for rc, amount in res.items() if amount}

    def describe(self) -> str:
        """A short summary for log lines."""
        parts = [f"instance {self.instance_uuid}", f"flavor {self.flavor.get('name', '?')}"]
        if self.source_host:
            parts.append(f"from {self.source_host} ({self.source_cell})")
        if self.requested_host or self.requested_cell:
            parts.append(f"to host={self.requested_host} cell={self.requested_cell}")
        if self.availability_zone:
            parts.append(f"az {self.availability_zone}")
        return ", ".join(parts)
