"""Limits (``GET /limits``): the caller's absolute limits and usage; no rate limits.

``tenant_id`` shows another project's (admin).  Fields leave the body as Nova's
did: security groups and floating IPs at 2.36, ``maxImageMeta`` at 2.39,
``maxPersonality``/``maxPersonalitySize`` at 2.57.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from atoll.api import policy
from atoll.api.deps import ContextDep, RuntimeDep, VersionDep
from atoll.api.quotas import QuotaEngine

router = APIRouter(tags=["limits"])


@router.get("/limits")
def show_limits(
    request: Request, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    policy.authorize(ctx, "os_compute_api:limits")
    project_id = ctx.project_id
    user_id: str | None = ctx.user_id
    requested = request.query_params.get("tenant_id")
    if requested and requested != ctx.project_id:
        policy.authorize(ctx, "os_compute_api:limits:other_project", {"project_id": requested})
        project_id, user_id = requested, None
    quotas = QuotaEngine(runtime)
    limits = quotas.limits(project_id)
    used = quotas.usage(project_id, user_id=user_id)
    absolute: dict[str, int] = {
        "maxServerMeta": limits["metadata_items"],
        "maxTotalCores": limits["cores"],
        "maxTotalInstances": limits["instances"],
        "maxTotalKeypairs": limits["key_pairs"],
        "maxTotalRAMSize": limits["ram"],
        "maxServerGroups": limits["server_groups"],
        "maxServerGroupMembers": limits["server_group_members"],
        "totalCoresUsed": used["cores"],
        "totalInstancesUsed": used["instances"],
        "totalRAMUsed": used["ram"],
        "totalServerGroupsUsed": used["server_groups"],
    }
    if version < "2.57":
        absolute["maxPersonality"] = limits["injected_files"]
        absolute["maxPersonalitySize"] = limits["injected_file_content_bytes"]
    if version < "2.39":
        absolute["maxImageMeta"] = limits["metadata_items"]
    if version < "2.36":
        absolute.update(
            {
                "maxSecurityGroupRules": limits["security_group_rules"],
                "maxSecurityGroups": limits["security_groups"],
                "maxTotalFloatingIps": limits["floating_ips"],
                "totalSecurityGroupsUsed": 0,
                "totalFloatingIpsUsed": 0,
            }
        )
    return {"limits": {"absolute": absolute, "rate": []}}
