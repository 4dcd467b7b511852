"""The ``links`` of API resources, built from the URL the client used.

Like Nova, a resource carries a versioned ``self`` link and an unversioned
``bookmark`` link::

    [{"rel": "self", "href": "http://host:8774/v2.1/flavors/1"},
     {"rel": "bookmark", "href": "http://host:8774/flavors/1"}]

When the client called the legacy ``/v2.1/{project_id}/...`` form, the project
id is kept in both links, as Nova does.  Collections that page add
``<collection>_links`` with a ``next`` link when a page came back full.

Helpers:

- ``resource_links(request, "flavors", flavor_id)`` -> [self, bookmark]
- ``self_href`` / ``bookmark_href`` for one of them
- ``next_link(request, "os-hypervisors", marker)`` -> {"rel": "next", "href": ...}
  keeping the request's other query parameters
- ``collection_links(request, "flavors", items, limit, marker_key="id")`` ->
  ``[next]`` when ``len(items) == limit`` else ``[]``
- ``version_href(request)`` -> ".../v2.1/" (the version document)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

API_PREFIX = "/v2.1"


def root_url(request: Request) -> str:
    """scheme://host[:port][root_path], no trailing slash."""
    base = str(request.base_url).rstrip("/")
    return base


def url_project(request: Request) -> str:
    """The project id from a legacy ``/v2.1/{project_id}/...`` URL, else ''."""
    return getattr(request.state, "url_project_id", None) or ""


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def self_href(request: Request, collection: str, identifier: Any) -> str:
    path = _join(API_PREFIX, url_project(request), collection, str(identifier))
    return f"{root_url(request)}/{path}"


def bookmark_href(request: Request, collection: str, identifier: Any) -> str:
    path = _join(url_project(request), collection, str(identifier))
    return f"{root_url(request)}/{path}"


def resource_links(request: Request, collection: str, identifier: Any) -> list[dict[str, str]]:
    return [
        {"rel": "self", "href": self_href(request, collection, identifier)},
        {"rel": "bookmark", "href": bookmark_href(request, collection, identifier)},
    ]


def version_href(request: Request) -> str:
    return f"{root_url(request)}{API_PREFIX}/"


def next_link(request: Request, collection: str, marker: Any) -> dict[str, str]:
    """The ``next`` page link: this request's query with ``marker`` replaced."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
    params.append(("marker", str(marker)))
    path = _join(API_PREFIX, url_project(request), collection)
    return {"rel": "next", "href": f"{root_url(request)}/{path}?{urlencode(params)}"}


def collection_links(
    request: Request,
    collection: str,
    items: Sequence[Any],
    limit: int | None,
    marker_key: str | Callable[[Any], Any] = "id",
) -> list[dict[str, str]]:
    """``[next]`` when a page came back full (``len(items) == limit``), else ``[]``."""
    if not items or limit is None or len(items) < limit:
        return []
    last = items[-1]
    if callable(marker_key):
        marker = marker_key(last)
    elif isinstance(last, dict):
        marker = last[marker_key]
    else:
        marker = getattr(last, marker_key)
    return [next_link(request, collection, marker)]
