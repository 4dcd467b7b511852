"""Flavors: list, detail, show; admin create, update (2.55), delete; extra specs.

Body fields by microversion: ``description`` from 2.55, ``extra_specs`` in the
flavor body from 2.61 (when the caller may read extra specs), ``swap`` is ""
for no swap before 2.75 and 0 from 2.75.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from atoll.api import links, policy
from atoll.api.deps import (
    ContextDep,
    JsonBody,
    RuntimeDep,
    VersionDep,
    min_version,
    openapi_body,
    page_params,
    paginate,
    parse_bool_query,
)
from atoll.api.errors import validate
from atoll.api.microversion import APIVersion
from atoll.api.schemas.flavors import (
    CreateFlavorRequest,
    CreateFlavorRequestV255,
    ExtraSpecsRequest,
    SingleSpec,
    UpdateFlavorRequest,
)
from atoll.context import RequestContext
from atoll.db.api_models import Flavor, FlavorExtraSpec
from atoll.db.session import session_scope
from atoll.db.types import new_uuid
from atoll.exceptions import BadRequest, Conflict, NotFound

router = APIRouter(tags=["flavors"])

SORT_KEYS = {
    "created_at": Flavor.created_at,
    "description": Flavor.description,
    "disabled": Flavor.disabled,
    "ephemeral_gb": Flavor.ephemeral_gb,
    "flavorid": Flavor.flavorid,
    "id": Flavor.id,
    "is_public": Flavor.is_public,
    "memory_mb": Flavor.memory_mb,
    "name": Flavor.name,
    "root_gb": Flavor.root_gb,
    "rxtx_factor": Flavor.rxtx_factor,
    "swap": Flavor.swap,
    "updated_at": Flavor.updated_at,
    "vcpus": Flavor.vcpus,
}

EXTRA_SPECS_INDEX = "os_compute_api:os-flavor-extra-specs:index"


# -- views ----------------------------------------------------------------------------------


def flavor_summary(request: Request, flavor: Flavor, version: APIVersion) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": flavor.flavorid,
        "links": links.resource_links(request, "flavors", flavor.flavorid),
        "name": flavor.name,
    }
    if version >= "2.55":
        body["description"] = flavor.description
    return body


def flavor_detail(
    request: Request, flavor: Flavor, version: APIVersion, *, with_specs: bool
) -> dict[str, Any]:
    body = flavor_summary(request, flavor, version)
    swap: int | str = flavor.swap
    if version < "2.75" and not flavor.swap:
        swap = ""
    body.update(
        {
            "OS-FLV-DISABLED:disabled": bool(flavor.disabled),
            "disk": flavor.root_gb,
            "OS-FLV-EXT-DATA:ephemeral": flavor.ephemeral_gb,
            "os-flavor-access:is_public": bool(flavor.is_public),
            "ram": flavor.memory_mb,
            "swap": swap,
            "vcpus": flavor.vcpus,
            "rxtx_factor": float(flavor.rxtx_factor),
        }
    )
    if version >= "2.61" and with_specs:
        body["extra_specs"] = {spec.key: spec.value for spec in flavor.extra_specs}
    return body


def _may_read_specs(ctx: RequestContext) -> bool:
    return policy.check(ctx, EXTRA_SPECS_INDEX)


def _get(session: Session, flavor_id: str) -> Flavor:
    flavor = session.scalar(select(Flavor).where(Flavor.flavorid == flavor_id))
    if flavor is None:
        raise NotFound(f"Flavor {flavor_id} could not be found.")
    return flavor


# -- listing ---------------------------------------------------------------------------------


def _is_public_filter(ctx: RequestContext, raw: str | None) -> bool | None:
    """True/False/None (both) for admins; always public for everybody else."""
    if not ctx.is_admin:
        return True
    if raw is None:
        return True
    if raw.strip().lower() == "none":
        return None
    try:
        return parse_bool_query(raw, "is_public")
    except BadRequest:
        raise BadRequest(f"Invalid is_public filter [{raw}]") from None


def _min_filter(raw: str | None, name: str) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"Invalid {name} filter [{raw}]") from None


def _list(request: Request, runtime: Any, ctx: RequestContext) -> list[Flavor]:
    params = request.query_params
    page = page_params(request)
    stmt = select(Flavor)
    is_public = _is_public_filter(ctx, params.get("is_public"))
    if is_public is not None:
        stmt = stmt.where(Flavor.is_public.is_(is_public))
    if not ctx.is_admin:
        stmt = stmt.where(Flavor.disabled.is_(False))
    min_ram = _min_filter(params.get("minRam"), "minRam")
    if min_ram is not None:
        stmt = stmt.where(Flavor.memory_mb >= min_ram)
    min_disk = _min_filter(params.get("minDisk"), "minDisk")
    if min_disk is not None:
        stmt = stmt.where(Flavor.root_gb >= min_disk)
    sort_key = params.get("sort_key") or "flavorid"
    sort_dir = (params.get("sort_dir") or "asc").lower()
    column = SORT_KEYS.get(sort_key)
    if column is None:
        raise BadRequest(f"Sort key supplied is invalid: {sort_key}")
    if sort_dir not in ("asc", "desc"):
        raise BadRequest("Unknown sort direction, must be 'desc' or 'asc'")
    order = column.asc() if sort_dir == "asc" else column.desc()
    stmt = stmt.order_by(order, Flavor.id.asc())
    with session_scope(runtime.settings.api_db) as s:
        flavors = list(s.scalars(stmt))
    return paginate(flavors, page, key=lambda f: f.flavorid)


def _list_body(
    request: Request, key: str, items: list[dict[str, Any]], limit: int | None
) -> dict[str, Any]:
    body: dict[str, Any] = {key: items}
    next_links = links.collection_links(request, "flavors", items, limit)
    if next_links:
        body["flavors_links"] = next_links
    return body


@router.get("/flavors")
def list_flavors(
    request: Request, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    flavors = _list(request, runtime, ctx)
    items = [flavor_summary(request, f, version) for f in flavors]
    return _list_body(request, "flavors", items, page_params(request).limit)


@router.get("/flavors/detail")
def list_flavors_detail(
    request: Request, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    flavors = _list(request, runtime, ctx)
    with_specs = _may_read_specs(ctx)
    items = [flavor_detail(request, f, version, with_specs=with_specs) for f in flavors]
    return _list_body(request, "flavors", items, page_params(request).limit)


@router.get("/flavors/{flavor_id}")
def show_flavor(
    flavor_id: str, request: Request, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    with session_scope(runtime.settings.api_db) as s:
        flavor = _get(s, flavor_id)
    return {"flavor": flavor_detail(request, flavor, version, with_specs=_may_read_specs(ctx))}


# -- management -----------------------------------------------------------------------------


@router.post("/flavors", openapi_extra=openapi_body(CreateFlavorRequestV255))
def create_flavor(
    body: JsonBody, request: Request, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    policy.authorize(ctx, "os_compute_api:os-flavor-manage:create")
    model = CreateFlavorRequestV255 if version >= "2.55" else CreateFlavorRequest
    spec = validate(model, body).flavor
    flavor_id = spec.id or new_uuid()
    try:
        with session_scope(runtime.settings.api_db) as s:
            if s.scalar(select(Flavor.id).where(Flavor.name == spec.name)) is not None:
                raise Conflict(f"Flavor with name {spec.name} already exists.")
            if s.scalar(select(Flavor.id).where(Flavor.flavorid == flavor_id)) is not None:
                raise Conflict(f"Flavor with ID {flavor_id} already exists.")
            flavor = Flavor(
                flavorid=flavor_id,
                name=spec.name,
                memory_mb=spec.ram,
                vcpus=spec.vcpus,
                root_gb=spec.disk,
                ephemeral_gb=spec.ephemeral,
                swap=spec.swap,
                rxtx_factor=spec.rxtx_factor,
                is_public=spec.is_public,
                description=getattr(spec, "description", None),
            )
            s.add(flavor)
            s.flush()
            s.refresh(flavor)
            flavor.extra_specs  # noqa: B018 - load before the session closes
    except IntegrityError:
        raise Conflict(f"Flavor with name {spec.name} or ID {flavor_id} already exists.") from None
    return {"flavor": flavor_detail(request, flavor, version, with_specs=_may_read_specs(ctx))}


@router.put(
    "/flavors/{flavor_id}",
    dependencies=[min_version("2.55")],
    openapi_extra=openapi_body(UpdateFlavorRequest),
)
def update_flavor(
    flavor_id: str,
    body: JsonBody,
    request: Request,
    runtime: RuntimeDep,
    ctx: ContextDep,
    version: VersionDep,
) -> dict[str, Any]:
    policy.authorize(ctx, "os_compute_api:os-flavor-manage:update")
    spec = validate(UpdateFlavorRequest, body).flavor
    with session_scope(runtime.settings.api_db) as s:
        flavor = _get(s, flavor_id)
        flavor.description = spec.description
        s.flush()
    return {"flavor": flavor_detail(request, flavor, version, with_specs=_may_read_specs(ctx))}


@router.delete("/flavors/{flavor_id}", status_code=202)
def delete_flavor(flavor_id: str, runtime: RuntimeDep, ctx: ContextDep) -> Response:
    policy.authorize(ctx, "os_compute_api:os-flavor-manage:delete")
    with session_scope(runtime.settings.api_db) as s:
        s.delete(_get(s, flavor_id))
    return Response(status_code=202)


# -- extra specs ----------------------------------------------------------------------------


def _specs(flavor: Flavor) -> dict[str, str]:
    return {spec.key: spec.value for spec in flavor.extra_specs}


def _set_specs(session: Session, flavor: Flavor, specs: dict[str, str]) -> None:
    current = {spec.key: spec for spec in flavor.extra_specs}
    for key, value in specs.items():
        if key in current:
            current[key].value = value
        else:
            flavor.extra_specs.append(FlavorExtraSpec(key=key, value=value))
    session.flush()


@router.get("/flavors/{flavor_id}/os-extra_specs")
def list_extra_specs(flavor_id: str, runtime: RuntimeDep, ctx: ContextDep) -> dict[str, Any]:
    policy.authorize(ctx, EXTRA_SPECS_INDEX)
    with session_scope(runtime.settings.api_db) as s:
        return {"extra_specs": _specs(_get(s, flavor_id))}


@router.post("/flavors/{flavor_id}/os-extra_specs", openapi_extra=openapi_body(ExtraSpecsRequest))
def create_extra_specs(
    flavor_id: str, body: JsonBody, runtime: RuntimeDep, ctx: ContextDep
) -> dict[str, Any]:
    policy.authorize(ctx, "os_compute_api:os-flavor-extra-specs:create")
    specs = validate(ExtraSpecsRequest, body).extra_specs
    with session_scope(runtime.settings.api_db) as s:
        _set_specs(s, _get(s, flavor_id), specs)
    return {"extra_specs": specs}


def _spec_missing(flavor_id: str, key: str) -> NotFound:
    return NotFound(f"Flavor {flavor_id} has no extra specs with key {key}.")


@router.get("/flavors/{flavor_id}/os-extra_specs/{key:path}")
def show_extra_spec(flavor_id: str, key: str, runtime: RuntimeDep, ctx: ContextDep) -> Any:
    policy.authorize(ctx, "os_compute_api:os-flavor-extra-specs:show")
    with session_scope(runtime.settings.api_db) as s:
        specs = _specs(_get(s, flavor_id))
    if key not in specs:
        raise _spec_missing(flavor_id, key)
    return {key: specs[key]}


@router.put(
    "/flavors/{flavor_id}/os-extra_specs/{key:path}", openapi_extra=openapi_body(SingleSpec)
)
def update_extra_spec(
    flavor_id: str, key: str, body: JsonBody, runtime: RuntimeDep, ctx: ContextDep
) -> Any:
    policy.authorize(ctx, "os_compute_api:os-flavor-extra-specs:update")
    specs = validate(SingleSpec, body).root
    if len(specs) > 1:
        raise BadRequest("Request body contains too many items")
    if key not in specs:
        raise BadRequest("Request body and URI mismatch")
    with session_scope(runtime.settings.api_db) as s:
        _set_specs(s, _get(s, flavor_id), specs)
    return specs


@router.delete("/flavors/{flavor_id}/os-extra_specs/{key:path}")
def delete_extra_spec(flavor_id: str, key: str, runtime: RuntimeDep, ctx: ContextDep) -> Response:
    policy.authorize(ctx, "os_compute_api:os-flavor-extra-specs:delete")
    with session_scope(runtime.settings.api_db) as s:
        flavor = _get(s, flavor_id)
        for spec in list(flavor.extra_specs):
            if spec.key == key:
                flavor.extra_specs.remove(spec)
                break
        else:
            raise _spec_missing(flavor_id, key)
    return Response(status_code=200)
