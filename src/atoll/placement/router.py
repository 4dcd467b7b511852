"""Read endpoints in the shapes of the OpenStack Placement API.

Mounted by the API under ``/placement``; existing Placement clients (osc-placement,
openstacksdk) can list providers and read inventories, usages and allocations.
Writes go through `atoll.placement.service.Placement` inside atoll only.

Errors use Placement's body: ``{"errors": [{"status", "title", "detail", "code"}]}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from atoll.exceptions import AtollError
from atoll.placement.service import Inventory, Placement, ProviderView

router = APIRouter(tags=["placement"])

_TITLES = {400: "Bad Request", 404: "Not Found", 409: "Conflict"}


def get_placement(request: Request) -> Placement:
    return request.app.state.placement


def _error(exc: AtollError) -> JSONResponse:
    status = exc.code
    return JSONResponse(
        status_code=status,
        content={
            "errors": [
                {
                    "status": status,
                    "title": _TITLES.get(status, "Internal Server Error"),
                    "detail": exc.message,
                    "code": "placement.undefined_code",
                }
            ]
        },
    )


def _answer(build: Callable[[], dict[str, Any]]) -> dict[str, Any] | JSONResponse:
    try:
        return build()
    except AtollError as exc:
        return _error(exc)


def _prefix(request: Request) -> str:
    """The URL path this API is mounted at ("/placement"), for links."""
    path = request.url.path
    at = path.find("/resource_providers")
    return path[:at] if at >= 0 else request.scope.get("root_path", "")


def _provider(view: ProviderView, prefix: str) -> dict[str, Any]:
    base = f"{prefix}/resource_providers/{view.uuid}"
    return {
        "uuid": view.uuid,
        "name": view.name,
        "generation": view.generation,
        "parent_provider_uuid": view.parent_provider_uuid,
        "root_provider_uuid": view.root_provider_uuid,
        "links": [
            {"rel": "self", "href": base},
            {"rel": "inventories", "href": f"{base}/inventories"},
            {"rel": "usages", "href": f"{base}/usages"},
            {"rel": "allocations", "href": f"{base}/allocations"},
        ],
    }


def _inventory(inv: Inventory) -> dict[str, Any]:
    return {
        "total": inv.total,
        "reserved": inv.reserved,
        "min_unit": inv.min_unit,
        "max_unit": inv.max_unit,
        "step_size": inv.step_size,
        "allocation_ratio": inv.allocation_ratio,
    }


@router.get("/resource_providers")
def list_resource_providers(
    request: Request,
    name: str | None = None,
    uuid: str | None = None,
    placement: Placement = Depends(get_placement),
) -> Any:
    prefix = _prefix(request)
    return _answer(
        lambda: {
            "resource_providers": [
                _provider(view, prefix) for view in placement.list_providers(name=name, uuid=uuid)
            ]
        }
    )


@router.get("/resource_providers/{uuid}")
def show_resource_provider(
    uuid: str, request: Request, placement: Placement = Depends(get_placement)
) -> Any:
    prefix = _prefix(request)
    return _answer(lambda: _provider(placement.get_provider(uuid), prefix))


@router.get("/resource_providers/{uuid}/inventories")
def list_inventories(uuid: str, placement: Placement = Depends(get_placement)) -> Any:
    def build() -> dict[str, Any]:
        generation, inventories, _usages = placement.inventories_and_usages(uuid)
        return {
            "inventories": {rc: _inventory(inv) for rc, inv in inventories.items()},
            "resource_provider_generation": generation,
        }

    return _answer(build)


@router.get("/resource_providers/{uuid}/usages")
def list_usages(uuid: str, placement: Placement = Depends(get_placement)) -> Any:
    def build() -> dict[str, Any]:
        generation, _inventories, usages = placement.inventories_and_usages(uuid)
        return {"usages": usages, "resource_provider_generation": generation}

    return _answer(build)


@router.get("/resource_providers/{uuid}/allocations")
def list_provider_allocations(uuid: str, placement: Placement = Depends(get_placement)) -> Any:
    def build() -> dict[str, Any]:
        generation, allocations = placement.provider_allocations_with_generation(uuid)
        return {
            "allocations": {
                consumer: {"resources": resources} for consumer, resources in allocations.items()
            },
            "resource_provider_generation": generation,
        }

    return _answer(build)


@router.get("/allocations/{consumer_uuid}")
def list_consumer_allocations(
    consumer_uuid: str, placement: Placement = Depends(get_placement)
) -> Any:
    def build() -> dict[str, Any]:
        found = placement.get_allocations(consumer_uuid)
        if found.consumer_generation is None:
            # like Placement: an unknown consumer simply has no allocations
            return {"allocations": {}}
        return {
            "allocations": {
                rp: {"generation": found.provider_generations[rp], "resources": resources}
                for rp, resources in found.allocations.items()
            },
            "consumer_generation": found.consumer_generation,
            "project_id": found.project_id,
            "user_id": found.user_id,
        }

    return _answer(build)
