"""Quota sets (``/os-quota-sets/{project_id}``): show, detail, defaults, update, delete.

Projects see their own quotas, admins anybody's; only admins change or revert
them.  Limits are per project: a ``user_id`` query parameter is accepted when
reading (the project's values are shown) and refused when writing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from atoll.api import policy
from atoll.api.deps import ContextDep, JsonBody, RuntimeDep, VersionDep, openapi_body
from atoll.api.errors import validate
from atoll.api.quotas import COUNTED, QuotaEngine
from atoll.api.schemas.quota_sets import (
    UpdateQuotaSetRequest257,
    resources_for,
    update_model,
)
from atoll.exceptions import BadRequest

router = APIRouter(tags=["os-quota-sets"])

RULE = "os_compute_api:os-quota-sets:%s"


def _target(project_id: str) -> dict[str, str]:
    return {"project_id": project_id}


@router.get("/os-quota-sets/{project_id}")
def show_quota_set(
    project_id: str, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    policy.authorize(ctx, RULE % "show", _target(project_id))
    limits = QuotaEngine(runtime).limits(project_id)
    body: dict[str, Any] = {"id": project_id}
    body.update({r: limits[r] for r in resources_for(version)})
    return {"quota_set": body}


@router.get("/os-quota-sets/{project_id}/defaults")
def show_defaults(
    project_id: str, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    policy.authorize(ctx, RULE % "defaults", _target(project_id))
    defaults = QuotaEngine(runtime).defaults()
    body: dict[str, Any] = {"id": project_id}
    body.update({r: defaults[r] for r in resources_for(version)})
    return {"quota_set": body}


@router.get("/os-quota-sets/{project_id}/detail")
def show_detail(
    project_id: str,
    request: Request,
    runtime: RuntimeDep,
    ctx: ContextDep,
    version: VersionDep,
) -> dict[str, Any]:
    policy.authorize(ctx, RULE % "detail", _target(project_id))
    engine = QuotaEngine(runtime)
    limits = engine.limits(project_id)
    used = engine.usage(project_id, user_id=request.query_params.get("user_id"))
    body: dict[str, Any] = {"id": project_id}
    for resource in resources_for(version):
        body[resource] = {
            "in_use": used.get(resource, 0),
            "limit": limits[resource],
            "reserved": 0,
        }
    return {"quota_set": body}


@router.put("/os-quota-sets/{project_id}", openapi_extra=openapi_body(UpdateQuotaSetRequest257))
def update_quota_set(
    project_id: str,
    body: JsonBody,
    request: Request,
    runtime: RuntimeDep,
    ctx: ContextDep,
    version: VersionDep,
) -> dict[str, Any]:
    policy.authorize(ctx, RULE % "update", _target(project_id))
    if request.query_params.get("user_id"):
        raise BadRequest(
            "Per-user quotas are not supported: quotas apply to the whole project "
            "(drop the user_id parameter)."
        )
    spec = validate(update_model(version), body).quota_set  # type: ignore[attr-defined]
    values = {
        name: value
        for name, value in spec.model_dump(exclude={"force"}).items()
        if name in spec.model_fields_set and value is not None
    }
    engine = QuotaEngine(runtime)
    if not spec.force:
        counted = [r for r in values if r in COUNTED and values[r] != -1]
        if counted:
            used = engine.usage(project_id)
            for resource in sorted(counted):
                if values[resource] < used[resource]:
                    raise BadRequest(
                        f"Quota limit {values[resource]} for {resource} must be greater "
                        f"than or equal to already used and reserved {used[resource]}."
                    )
    limits = engine.set_limits(project_id, values) if values else engine.limits(project_id)
    return {"quota_set": {r: limits[r] for r in resources_for(version)}}


@router.delete("/os-quota-sets/{project_id}", status_code=202)
def delete_quota_set(project_id: str, runtime: RuntimeDep, ctx: ContextDep) -> Response:
    policy.authorize(ctx, RULE % "delete", _target(project_id))
    QuotaEngine(runtime).reset(project_id)
    return Response(status_code=202)
