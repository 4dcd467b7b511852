"""Quotas: per-project limits and what a project uses, counted live (no reservations).

Limits are ``settings.quota`` (instances, cores, ram, key_pairs, server_groups,
server_group_members, metadata_items) plus the legacy resources the older
microversions still show (injected files, security groups, ... with Nova's
defaults), overridden per project by ``Quota`` rows in the API DB.  ``-1``
means unlimited.

Usage is counted at the moment of the check, like Nova's counting quotas:

- ``instances``: the project's instance mappings not queued for delete;
- ``cores`` / ``ram``: the ``vcpus`` / ``memory_mb`` of the project's live
  (``deleted == 0``), visible (``hidden`` false) instances in every cell, plus
  the flavors of its build requests not yet in a cell.  A cell whose database
  does not answer is left out with a warning (its servers still count as
  instances, through their mappings);
- ``key_pairs``: the key pairs of ``user_id`` (key pairs belong to users);
- ``server_groups``: the project's server groups.

Use::

    quotas = QuotaEngine(runtime)
    quotas.check_deltas(ctx.project_id, {"instances": 1, "cores": 2, "ram": 512})
    # QuotaExceeded (403): "Quota exceeded for cores: Requested 2, but already
    # used 20 of 20 cores"

    quotas.limits(project_id) / quotas.usage(project_id, user_id=...) /
    quotas.defaults() / quotas.set_limits(project_id, {...}) / quotas.reset(project_id)
    quotas.check_group_members(group_uuid, 1)

The check and the create that follows are not atomic: two concurrent requests
can both pass a check for the last unit.  Callers that must be exact re-check
after creating (``check_deltas(project, {}, ...)`` checks current usage only).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from atoll.db.api_models import (
    BuildRequest,
    InstanceGroup,
    InstanceGroupMember,
    InstanceMapping,
    KeyPair,
    Quota,
)
from atoll.db.cell_models import Instance
from atoll.db.session import session_scope
from atoll.exceptions import NotFound, QuotaExceeded

LOG = logging.getLogger(__name__)

# Resources kept for the older microversions' bodies, with Nova's defaults.
LEGACY_DEFAULTS: dict[str, int] = {
    "fixed_ips": -1,
    "floating_ips": -1,
    "security_groups": -1,
    "security_group_rules": -1,
    "injected_files": 5,
    "injected_file_content_bytes": 10240,
    "injected_file_path_bytes": 255,
}

COUNTED = ("instances", "cores", "ram", "key_pairs", "server_groups")

_CELL_DB_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, ImportError)


def _flavor_sizes(instance: Mapping[str, Any]) -> tuple[int, int]:
    """(vcpus, memory_mb) of a build request's instance dict."""
    flavor = instance.get("flavor") or {}
    if isinstance(flavor, dict) and isinstance(flavor.get("cur"), dict):
        flavor = flavor["cur"]
    try:
        vcpus = int(flavor.get("vcpus") or instance.get("vcpus") or 0)
        ram = int(flavor.get("memory_mb") or instance.get("memory_mb") or 0)
    except (TypeError, ValueError, AttributeError):
        return 0, 0
    return vcpus, ram


class QuotaEngine:
    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.api_db = runtime.settings.api_db

    # -- limits ---------------------------------------------------------------------

    def defaults(self) -> dict[str, int]:
        values = {k: int(v) for k, v in self.settings.quota.model_dump().items()}
        return {**LEGACY_DEFAULTS, **values}

    def resources(self) -> list[str]:
        return sorted(self.defaults())

    def limits(self, project_id: str) -> dict[str, int]:
        values = self.defaults()
        with session_scope(self.api_db) as s:
            rows = s.execute(
                select(Quota.resource, Quota.hard_limit).where(Quota.project_id == project_id)
            ).all()
        for resource, hard_limit in rows:
            if resource in values:
                values[resource] = int(hard_limit)
        return values

    def set_limits(self, project_id: str, values: Mapping[str, int]) -> dict[str, int]:
        """Store per-project limits (unknown resources are refused); returns all limits."""
        known = self.defaults()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise NotFound(f"Quota resource(s) {', '.join(unknown)} could not be found.")
        with session_scope(self.api_db) as s:
            existing = {
                row.resource: row
                for row in s.scalars(select(Quota).where(Quota.project_id == project_id))
            }
            for resource, limit in values.items():
                row = existing.get(resource)
                if row is None:
                    s.add(Quota(project_id=project_id, resource=resource, hard_limit=int(limit)))
                else:
                    row.hard_limit = int(limit)
        return self.limits(project_id)

    def reset(self, project_id: str) -> None:
        """Drop the project's overrides: it is back to the defaults."""
        with session_scope(self.api_db) as s:
            s.execute(delete(Quota).where(Quota.project_id == project_id))

    # -- usage ----------------------------------------------------------------------

    def _cell_usage(self, project_id: str) -> tuple[dict[str, tuple[int, int]], list[str]]:
        """uuid -> (vcpus, memory_mb) of the project's live visible instances; down cells."""
        sizes: dict[str, tuple[int, int]] = {}
        down: list[str] = []
        stmt = select(Instance.uuid, Instance.vcpus, Instance.memory_mb).where(
            Instance.project_id == project_id,
            Instance.deleted == 0,
            Instance.hidden.is_(False),
        )
        for cell in self.runtime.cells.all():
            try:
                with session_scope(cell.db_url) as s:
                    for uuid, vcpus, ram in s.execute(stmt):
                        sizes[uuid] = (int(vcpus or 0), int(ram or 0))
            except _CELL_DB_ERRORS as exc:
                LOG.warning(
                    "Cell %s did not answer; its servers' cores and ram are not counted "
                    "in the usage of project %s: %s",
                    cell.name,
                    project_id,
                    str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
                )
                down.append(cell.name)
        return sizes, down

    def usage(self, project_id: str, user_id: str | None = None) -> dict[str, int]:
        """What the project uses now: instances, cores, ram, key_pairs, server_groups."""
        sizes, _down = self._cell_usage(project_id)
        with session_scope(self.api_db) as s:
            instances = s.scalar(
                select(func.count(InstanceMapping.id)).where(
                    InstanceMapping.project_id == project_id,
                    InstanceMapping.queued_for_delete.is_(False),
                )
            )
            builds = s.execute(
                select(BuildRequest.instance_uuid, BuildRequest.instance).where(
                    BuildRequest.project_id == project_id
                )
            ).all()
            groups = s.scalar(
                select(func.count(InstanceGroup.id)).where(InstanceGroup.project_id == project_id)
            )
            key_pairs = 0
            if user_id is not None:
                key_pairs = s.scalar(
                    select(func.count(KeyPair.id)).where(KeyPair.user_id == user_id)
                )
        for uuid, instance in builds:
            if uuid not in sizes:
                sizes[uuid] = _flavor_sizes(instance or {})
        return {
            "instances": int(instances or 0),
            "cores": sum(v for v, _ in sizes.values()),
            "ram": sum(r for _, r in sizes.values()),
            "key_pairs": int(key_pairs or 0),
            "server_groups": int(groups or 0),
        }

    # -- checks ---------------------------------------------------------------------

    def check_deltas(
        self,
        project_id: str,
        deltas: Mapping[str, int],
        *,
        user_id: str | None = None,
        message: str | None = None,
    ) -> None:
        """QuotaExceeded unless usage + delta fits every limit (-1 = unlimited)."""
        if deltas:
            wanted = {k: int(v) for k, v in deltas.items() if k in COUNTED}
            if not wanted:
                return
        else:
            wanted = dict.fromkeys(COUNTED, 0)
        limits = self.limits(project_id)
        used = self.usage(project_id, user_id=user_id)
        overs = sorted(
            r
            for r, delta in wanted.items()
            if limits.get(r, -1) >= 0 and used[r] + delta > limits[r]
        )
        if not overs:
            return
        if message is None:
            message = "Quota exceeded for {}: Requested {}, but already used {} of {} {}".format(
                ", ".join(overs),
                ", ".join(str(wanted[r]) for r in overs),
                ", ".join(str(used[r]) for r in overs),
                ", ".join(str(limits[r]) for r in overs),
                ", ".join(overs),
            )
        raise QuotaExceeded(message)

    def check_group_members(self, group_uuid: str, delta: int = 1) -> None:
        """QuotaExceeded if adding ``delta`` servers overflows the group's member quota."""
        with session_scope(self.api_db) as s:
            group = s.scalar(select(InstanceGroup).where(InstanceGroup.uuid == group_uuid))
            if group is None:
                raise NotFound(f"Instance group {group_uuid} could not be found.")
            members = s.scalar(
                select(func.count(InstanceGroupMember.id)).where(
                    InstanceGroupMember.group_id == group.id
                )
            )
            project_id = group.project_id
        limit = self.limits(project_id)["server_group_members"]
        if limit >= 0 and int(members or 0) + delta > limit:
            raise QuotaExceeded("Quota exceeded, too many servers in group")
