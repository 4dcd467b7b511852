"""The image proxy (``/images``): read-only views of atoll's image service.

Like Nova's, this API ends at microversion 2.35 (404 from 2.36; clients use the
image service itself).  Callers see public and community images and their own
project's; admins see all.  Filters: ``name``, ``status``, ``minRam``,
``minDisk``, ``server``, ``type``, with ``limit``/``marker`` paging.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from atoll.api import links
from atoll.api.deps import ContextDep, RuntimeDep, VersionDep, page_params, paginate
from atoll.api.microversion import require
from atoll.context import RequestContext
from atoll.exceptions import BadRequest, NotFound

router = APIRouter(tags=["images"])

MAX_VERSION = "2.35"
STATUS = {
    "active": "ACTIVE",
    "queued": "SAVING",
    "saving": "SAVING",
    "deleted": "DELETED",
    "pending_delete": "DELETED",
    "killed": "ERROR",
}
PROGRESS = {"queued": 25, "saving": 50, "active": 100}
PUBLIC = frozenset({"public", "community"})


def _visible(image: dict[str, Any], ctx: RequestContext) -> bool:
    return ctx.is_admin or image.get("visibility") in PUBLIC or image.get("owner") == ctx.project_id


def _links(request: Request, image_id: str) -> list[dict[str, str]]:
    out = links.resource_links(request, "images", image_id)
    out.append(
        {
            "rel": "alternate",
            "type": "application/vnd.openstack.image",
            "href": f"{links.root_url(request)}/images/{image_id}",
        }
    )
    return out


def image_summary(request: Request, image: dict[str, Any]) -> dict[str, Any]:
    return {"id": image["id"], "links": _links(request, image["id"]), "name": image["name"]}


def image_detail(request: Request, image: dict[str, Any]) -> dict[str, Any]:
    properties = {k: str(v) for k, v in (image.get("properties") or {}).items()}
    body = image_summary(request, image)
    body.update(
        {
            "OS-EXT-IMG-SIZE:size": image.get("size") or 0,
            "created": image.get("created_at"),
            "metadata": properties,
            "minDisk": image.get("min_disk") or 0,
            "minRam": image.get("min_ram") or 0,
            "progress": PROGRESS.get(image.get("status", ""), 0),
            "status": STATUS.get(image.get("status", ""), "UNKNOWN"),
            "updated": image.get("updated_at"),
        }
    )
    if "auto_disk_config" in properties:
        auto = properties["auto_disk_config"].strip().lower() in ("true", "1", "yes")
        body["OS-DCF:diskConfig"] = "AUTO" if auto else "MANUAL"
    server = properties.get("instance_uuid")
    if server:
        body["server"] = {
            "id": server,
            "links": links.resource_links(request, "servers", server),
        }
    return body


def _min_filter(raw: str | None, name: str) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"Invalid {name} filter [{raw}]") from None


def _list(request: Request, runtime: Any, ctx: RequestContext) -> list[dict[str, Any]]:
    params = request.query_params
    page = page_params(request)
    images = [i for i in runtime.images.list() if _visible(i, ctx)]
    name = params.get("name")
    if name is not None:
        images = [i for i in images if i["name"] == name]
    status = params.get("status")
    if status is not None:
        images = [i for i in images if STATUS.get(i["status"], "") == status.upper()]
    min_ram = _min_filter(params.get("minRam"), "minRam")
    if min_ram is not None:
        images = [i for i in images if (i.get("min_ram") or 0) >= min_ram]
    min_disk = _min_filter(params.get("minDisk"), "minDisk")
    if min_disk is not None:
        images = [i for i in images if (i.get("min_disk") or 0) >= min_disk]
    server = params.get("server")
    if server is not None:
        images = [i for i in images if (i.get("properties") or {}).get("instance_uuid") == server]
    kind = params.get("type")
    if kind is not None:
        images = [i for i in images if (i.get("properties") or {}).get("image_type") == kind]
    return paginate(images, page, key=lambda i: i["id"])


def _body(request: Request, items: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {"images": items}
    next_links = links.collection_links(request, "images", items, page_params(request).limit)
    if next_links:
        body["images_links"] = next_links
    return body


@router.get("/images")
def list_images(
    request: Request, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    require(version, "2.1", MAX_VERSION)
    return _body(request, [image_summary(request, i) for i in _list(request, runtime, ctx)])


@router.get("/images/detail")
def list_images_detail(
    request: Request, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    require(version, "2.1", MAX_VERSION)
    return _body(request, [image_detail(request, i) for i in _list(request, runtime, ctx)])


@router.get("/images/{image_id}")
def show_image(
    image_id: str, request: Request, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    require(version, "2.1", MAX_VERSION)
    try:
        image = runtime.images.get(image_id)
    except NotFound:
        image = None
    if image is None or not _visible(image, ctx):
        raise NotFound("Image not found.")
    return {"image": image_detail(request, image)}
