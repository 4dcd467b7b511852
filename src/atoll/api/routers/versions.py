"""Version documents: ``GET /`` (every API version) and ``GET /v2.1/`` (this one).

Neither needs a token.  Only v2.1 is served (there is no legacy ``/v2`` API), so
the list has one entry.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from atoll.api.links import version_href
from atoll.api.microversion import MAX_VERSION, MIN_VERSION

UPDATED = "2013-07-23T11:33:21Z"
DOCS_URL = "http://docs.openstack.org/"
MEDIA_TYPE = "application/vnd.openstack.compute+json;version=2.1"

router = APIRouter(tags=["versions"])
root_router = APIRouter(tags=["versions"])


def _entry(request: Request) -> dict[str, Any]:
    return {
        "id": "v2.1",
        "links": [{"href": version_href(request), "rel": "self"}],
        "status": "CURRENT",
        "version": str(MAX_VERSION),
        "min_version": str(MIN_VERSION),
        "updated": UPDATED,
    }


@root_router.get("/")
def list_versions(request: Request) -> dict[str, Any]:
    return {"versions": [_entry(request)]}


@router.get("")
@router.get("/")
def show_version(request: Request) -> dict[str, Any]:
    entry = _entry(request)
    entry["links"].append({"href": DOCS_URL, "rel": "describedby", "type": "text/html"})
    entry["media-types"] = [{"base": "application/json", "type": MEDIA_TYPE}]
    return {"version": entry}
