"""Server groups (``/os-server-groups``): create, list, show, delete.

Body by microversion: ``policies`` and ``metadata`` ({}) before 2.64,
``policy`` and ``rules`` from 2.64; ``project_id`` and ``user_id`` from 2.13.
``all_projects`` lists every project's groups for admins (others get their own).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from atoll.api import policy
from atoll.api.deps import (
    ContextDep,
    JsonBody,
    RuntimeDep,
    VersionDep,
    openapi_body,
    parse_int_query,
    parse_uuid,
)
from atoll.api.errors import validate
from atoll.api.microversion import APIVersion
from atoll.api.quotas import QuotaEngine
from atoll.api.schemas.server_groups import (
    CreateServerGroupRequest21,
    CreateServerGroupRequest215,
    CreateServerGroupRequest264,
)
from atoll.db.api_models import InstanceGroup
from atoll.db.session import session_scope
from atoll.exceptions import NotFound, QuotaExceeded

router = APIRouter(tags=["os-server-groups"])

RULE = "os_compute_api:os-server-groups:%s"


def server_group_view(group: InstanceGroup, version: APIVersion) -> dict[str, Any]:
    body: dict[str, Any] = {"id": group.uuid, "name": group.name}
    if version >= "2.64":
        body["policy"] = group.policy
        body["rules"] = dict(group.rules or {})
    else:
        body["policies"] = [group.policy]
    body["members"] = [m.instance_uuid for m in group.members]
    if version < "2.64":
        body["metadata"] = {}
    if version >= "2.13":
        body["project_id"] = group.project_id
        body["user_id"] = group.user_id
    return body


def _target(group: InstanceGroup) -> dict[str, str]:
    return {"project_id": group.project_id, "user_id": group.user_id}


def _get(runtime: Any, group_id: str) -> InstanceGroup:
    group_uuid = parse_uuid(group_id, "Instance group")
    with session_scope(runtime.settings.api_db) as s:
        group = s.scalar(select(InstanceGroup).where(InstanceGroup.uuid == group_uuid))
    if group is None:
        raise NotFound(f"Instance group {group_id} could not be found.")
    return group


@router.get("/os-server-groups")
def list_server_groups(
    request: Request, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    policy.authorize(ctx, RULE % "index")
    params = request.query_params
    limit = parse_int_query(params.get("limit"), "limit", minimum=0)
    offset = parse_int_query(params.get("offset"), "offset", default=0, minimum=0) or 0
    all_projects = "all_projects" in params and policy.check(ctx, RULE % "index:all_projects")
    stmt = select(InstanceGroup).order_by(InstanceGroup.id)
    if not all_projects:
        stmt = stmt.where(InstanceGroup.project_id == ctx.project_id)
    stmt = stmt.offset(offset)
    if limit is not None:
        stmt = stmt.limit(min(limit, 1000))
    with session_scope(runtime.settings.api_db) as s:
        groups = list(s.scalars(stmt))
    return {"server_groups": [server_group_view(g, version) for g in groups]}


@router.post("/os-server-groups", openapi_extra=openapi_body(CreateServerGroupRequest264))
def create_server_group(
    body: JsonBody, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    policy.authorize(ctx, RULE % "create")
    rules: dict[str, Any] = {}
    if version >= "2.64":
        spec64 = validate(CreateServerGroupRequest264, body).server_group
        name, group_policy = spec64.name, spec64.policy
        if spec64.rules is not None:
            rules = spec64.rules.model_dump(exclude_none=True)
    else:
        model = CreateServerGroupRequest215 if version >= "2.15" else CreateServerGroupRequest21
        spec = validate(model, body).server_group
        name, group_policy = spec.name, spec.policies[0]
    try:
        QuotaEngine(runtime).check_deltas(ctx.project_id, {"server_groups": 1})
    except QuotaExceeded:
        raise QuotaExceeded("Quota exceeded, too many server groups.") from None
    with session_scope(runtime.settings.api_db) as s:
        group = InstanceGroup(
            name=name,
            policy=group_policy,
            rules=rules,
            user_id=ctx.user_id,
            project_id=ctx.project_id,
        )
        s.add(group)
        s.flush()
        s.refresh(group)
        view = server_group_view(group, version)
    return {"server_group": view}


@router.get("/os-server-groups/{group_id}")
def show_server_group(
    group_id: str, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    group = _get(runtime, group_id)
    policy.authorize(ctx, RULE % "show", _target(group))
    return {"server_group": server_group_view(group, version)}


@router.delete("/os-server-groups/{group_id}", status_code=204)
def delete_server_group(group_id: str, runtime: RuntimeDep, ctx: ContextDep) -> Response:
    group = _get(runtime, group_id)
    policy.authorize(ctx, RULE % "delete", _target(group))
    with session_scope(runtime.settings.api_db) as s:
        row = s.get(InstanceGroup, group.id)
        if row is not None:
            s.delete(row)
    return Response(status_code=204)
