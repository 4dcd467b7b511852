"""Host aggregates (``/os-aggregates``): admin only.

An aggregate's availability zone is its ``availability_zone`` metadata item.
Like Nova, a host may not sit in two aggregates naming different zones:
adding it is a 409, changing an aggregate's zone so that one of its hosts
would end up in two zones is a 400.  Only hosts mapped to a cell
(``host_mappings``) can be added.  An aggregate with hosts cannot be deleted
(400, as Nova).  ``uuid`` is in the body from 2.41.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from atoll.api import policy
from atoll.api.deps import (
    ContextDep,
    JsonBody,
    RuntimeDep,
    VersionDep,
    isotime,
    min_version,
    openapi_body,
)
from atoll.api.errors import validate
from atoll.api.microversion import APIVersion
from atoll.api.schemas.aggregates import (
    AddHostRequest,
    CacheImagesRequest,
    CreateAggregateRequest,
    RemoveHostRequest,
    SetMetadataRequest,
    UpdateAggregateRequest,
)
from atoll.availability_zones import AZ_KEY
from atoll.db.api_models import Aggregate, AggregateHost, AggregateMetadata, HostMapping
from atoll.db.session import session_scope
from atoll.db.types import utcnow
from atoll.exceptions import BadRequest, Conflict, NotFound

router = APIRouter(tags=["os-aggregates"])

RULE = "os_compute_api:os-aggregates:%s"


def aggregate_view(agg: Aggregate, version: APIVersion, *, full: bool = True) -> dict[str, Any]:
    metadata = {m.key: m.value for m in agg.metadata_items}
    body: dict[str, Any] = {
        "availability_zone": metadata.get(AZ_KEY),
        "created_at": isotime(agg.created_at),
        "deleted": False,
        "deleted_at": None,
        "id": agg.id,
        "name": agg.name,
        "updated_at": isotime(agg.updated_at),
    }
    if full:
        body["hosts"] = [h.host for h in agg.hosts]
        body["metadata"] = metadata
    if version >= "2.41":
        body["uuid"] = agg.uuid
    return body


def _parse_id(aggregate_id: str) -> int:
    try:
        return int(aggregate_id)
    except ValueError:
        raise BadRequest("Invalid input received: id must be an integer.") from None


def _get(session: Session, aggregate_id: str) -> Aggregate:
    agg = session.get(Aggregate, _parse_id(aggregate_id))
    if agg is None:
        raise NotFound(f"Aggregate {aggregate_id} could not be found.")
    return agg


def _other_zones(session: Session, host: str, aggregate_id: int) -> set[str]:
    """The zones the host's other aggregates give it."""
    stmt = (
        select(AggregateMetadata.value)
        .join(AggregateHost, AggregateHost.aggregate_id == AggregateMetadata.aggregate_id)
        .where(
            AggregateHost.host == host,
            AggregateMetadata.key == AZ_KEY,
            AggregateHost.aggregate_id != aggregate_id,
        )
    )
    return {zone for zone in session.scalars(stmt) if zone}


def _zone_conflicts(session: Session, agg: Aggregate, zone: str | None) -> list[str]:
    """Zones that would clash if ``agg`` (with its hosts) named ``zone``."""
    if not zone:
        return []
    clashes: set[str] = set()
    for host in agg.hosts:
        clashes |= {z for z in _other_zones(session, host.host, agg.id) if z != zone}
    return sorted(clashes)


def _set_zone(session: Session, agg: Aggregate, zone: str | None, action: str) -> None:
    clashes = _zone_conflicts(session, agg, zone)
    if clashes:
        raise BadRequest(
            f"Cannot perform action '{action}' on aggregate {agg.id}. Reason: One or more "
            f"hosts already in availability zone(s) {', '.join(clashes)}."
        )
    _set_metadata(agg, {AZ_KEY: zone})


def _set_metadata(agg: Aggregate, values: dict[str, str | None]) -> None:
    current = {m.key: m for m in agg.metadata_items}
    for key, value in values.items():
        item = current.get(key)
        if value is None:
            if item is not None:
                agg.metadata_items.remove(item)
        elif item is None:
            agg.metadata_items.append(AggregateMetadata(key=key, value=value))
        else:
            item.value = value
    agg.updated_at = utcnow()


def _name_taken(session: Session, name: str, except_id: int | None = None) -> bool:
    stmt = select(Aggregate.id).where(Aggregate.name == name)
    if except_id is not None:
        stmt = stmt.where(Aggregate.id != except_id)
    return session.scalar(stmt) is not None


@router.get("/os-aggregates")
def list_aggregates(runtime: RuntimeDep, ctx: ContextDep, version: VersionDep) -> dict[str, Any]:
    policy.authorize(ctx, RULE % "index")
    with session_scope(runtime.settings.api_db) as s:
        aggs = list(s.scalars(select(Aggregate).order_by(Aggregate.id)))
        return {"aggregates": [aggregate_view(a, version) for a in aggs]}


@router.post("/os-aggregates", openapi_extra=openapi_body(CreateAggregateRequest))
def create_aggregate(
    body: JsonBody, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    policy.authorize(ctx, RULE % "create")
    spec = validate(CreateAggregateRequest, body).aggregate
    try:
        with session_scope(runtime.settings.api_db) as s:
            if _name_taken(s, spec.name):
                raise Conflict(f"Aggregate {spec.name} already exists.")
            agg = Aggregate(name=spec.name)
            if spec.availability_zone:
                agg.metadata_items.append(
                    AggregateMetadata(key=AZ_KEY, value=spec.availability_zone)
                )
            s.add(agg)
            s.flush()
            return {"aggregate": aggregate_view(agg, version, full=False)}
    except IntegrityError:
        raise Conflict(f"Aggregate {spec.name} already exists.") from None


@router.get("/os-aggregates/{aggregate_id}")
def show_aggregate(
    aggregate_id: str, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    policy.authorize(ctx, RULE % "show")
    with session_scope(runtime.settings.api_db) as s:
        return {"aggregate": aggregate_view(_get(s, aggregate_id), version)}


@router.put("/os-aggregates/{aggregate_id}", openapi_extra=openapi_body(UpdateAggregateRequest))
def update_aggregate(
    aggregate_id: str, body: JsonBody, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    policy.authorize(ctx, RULE % "update")
    spec = validate(UpdateAggregateRequest, body).aggregate
    try:
        with session_scope(runtime.settings.api_db) as s:
            agg = _get(s, aggregate_id)
            if spec.name is not None and spec.name != agg.name:
                if _name_taken(s, spec.name, agg.id):
                    raise Conflict(f"Aggregate {spec.name} already exists.")
                agg.name = spec.name
            if "availability_zone" in spec.model_fields_set:
                _set_zone(s, agg, spec.availability_zone, "update_aggregate")
            agg.updated_at = utcnow()
            s.flush()
            return {"aggregate": aggregate_view(agg, version)}
    except IntegrityError:
        raise Conflict(f"Aggregate {spec.name} already exists.") from None


@router.delete("/os-aggregates/{aggregate_id}")
def delete_aggregate(aggregate_id: str, runtime: RuntimeDep, ctx: ContextDep) -> Response:
    policy.authorize(ctx, RULE % "delete")
    with session_scope(runtime.settings.api_db) as s:
        agg = _get(s, aggregate_id)
        if agg.hosts:
            raise BadRequest(
                f"Cannot perform action 'delete' on aggregate {agg.id}. "
                "Reason: Host aggregate is not empty."
            )
        s.delete(agg)
    return Response(status_code=200)


def _add_host(s: Session, agg: Aggregate, host: str) -> None:
    if s.scalar(select(HostMapping.id).where(HostMapping.host == host)) is None:
        raise NotFound(f"Compute host {host} could not be found.")
    if any(h.host == host for h in agg.hosts):
        raise Conflict(f"Aggregate {agg.id} already has host {host}.")
    zone = next((m.value for m in agg.metadata_items if m.key == AZ_KEY), None)
    if zone:
        clashes = sorted(z for z in _other_zones(s, host, agg.id) if z != zone)
        if clashes:
            raise Conflict(
                f"Cannot add host to aggregate {agg.id}. Reason: One or more hosts "
                f"already in availability zone(s) {', '.join(clashes)}."
            )
    agg.hosts.append(AggregateHost(host=host))
    agg.updated_at = utcnow()


def _remove_host(s: Session, agg: Aggregate, host: str) -> None:
    member = next((h for h in agg.hosts if h.host == host), None)
    if member is None:
        if s.scalar(select(HostMapping.id).where(HostMapping.host == host)) is None:
            raise NotFound(f"Compute host {host} could not be found.")
        raise NotFound(f"Aggregate {agg.id} has no host {host}.")
    agg.hosts.remove(member)
    agg.updated_at = utcnow()


ACTIONS = ("add_host", "remove_host", "set_metadata")


@router.post(
    "/os-aggregates/{aggregate_id}/action",
    openapi_extra=openapi_body(AddHostRequest | RemoveHostRequest | SetMetadataRequest),
)
def aggregate_action(
    aggregate_id: str, body: JsonBody, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    if len(body) != 1:
        raise BadRequest("Malformed request body: give exactly one action.")
    action = next(iter(body))
    if action not in ACTIONS:
        raise BadRequest(f"There is no such action: {action}")
    policy.authorize(ctx, RULE % action)
    try:
        with session_scope(runtime.settings.api_db) as s:
            agg = _get(s, aggregate_id)
            if action == "add_host":
                _add_host(s, agg, validate(AddHostRequest, body).add_host.host)
            elif action == "remove_host":
                _remove_host(s, agg, validate(RemoveHostRequest, body).remove_host.host)
            else:
                metadata = validate(SetMetadataRequest, body).set_metadata.metadata
                if AZ_KEY in metadata:
                    _set_zone(s, agg, metadata[AZ_KEY], "update_aggregate_metadata")
                _set_metadata(agg, metadata)
            s.flush()
            return {"aggregate": aggregate_view(agg, version)}
    except IntegrityError:
        raise Conflict(
            f"Aggregate {aggregate_id} was changed concurrently; retry the request."
        ) from None


@router.post(
    "/os-aggregates/{aggregate_id}/images",
    status_code=202,
    dependencies=[min_version("2.81")],
    openapi_extra=openapi_body(CacheImagesRequest),
)
def cache_images(
    aggregate_id: str, body: JsonBody, runtime: RuntimeDep, ctx: ContextDep
) -> Response:
    """Accept a request to pre-cache images on the aggregate's hosts.

    The simulated and libvirt drivers fetch images on demand, so nothing is
    scheduled; the images and the aggregate are checked so that mistakes show.
    """
    policy.authorize(ctx, RULE % "images")
    request = validate(CacheImagesRequest, body)
    with session_scope(runtime.settings.api_db) as s:
        _get(s, aggregate_id)
    for ref in request.cache:
        try:
            runtime.images.get(ref.id)
        except NotFound:
            raise BadRequest(f"Image {ref.id} could not be found.") from None
    return Response(status_code=202)
