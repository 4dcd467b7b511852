"""Query parameters of ``GET /os-migrations`` and the body of a server migration action.

The query parameters a microversion accepts, like Nova's query schemas:

- 2.1-2.58: ``hidden``, ``host``, ``instance_uuid``, ``migration_type``,
  ``source_compute``, ``status``; any other parameter is ignored (as Nova does,
  which is why ``limit``, ``marker`` and ``changes-since`` have no effect there);
- 2.59: also ``limit``, ``marker`` (a migration uuid), ``changes-since``; from
  here an unknown parameter is a 400;
- 2.66: also ``changes-before``;
- 2.80: also ``user_id`` and ``project_id``.

A filter given several times (``?status=running&status=queued``) matches any
of its values.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pydantic import field_validator
from starlette.datastructures import QueryParams

from atoll.api.deps import MAX_LIMIT, parse_int_query
from atoll.api.microversion import APIVersion
from atoll.api.schemas import Strict
from atoll.exceptions import BadRequest

FILTERS = ("host", "instance_uuid", "migration_type", "source_compute", "status")
TRUE_VALUES = frozenset({"1", "t", "true", "on", "y", "yes"})
BASE_PARAMS = frozenset({*FILTERS, "hidden"})
PARAMS_BY_VERSION: tuple[tuple[str, frozenset[str]], ...] = (
    ("2.59", frozenset({"limit", "marker", "changes-since"})),
    ("2.66", frozenset({"changes-before"})),
    ("2.80", frozenset({"user_id", "project_id"})),
)


def allowed_params(version: APIVersion) -> frozenset[str]:
    allowed = set(BASE_PARAMS)
    for since, names in PARAMS_BY_VERSION:
        if version >= since:
            allowed |= names
    return frozenset(allowed)


@dataclass
class MigrationListQuery:
    """What ``GET /os-migrations`` asked for, checked for its microversion."""

    filters: dict[str, list[str]] = field(default_factory=dict)  # column -> any of values
    hidden: bool = False
    changes_since: dt.datetime | None = None
    changes_before: dt.datetime | None = None
    limit: int | None = None
    marker: str | None = None
    paged: bool = False  # 2.59+: sorted pages with a next link


def _time(params: QueryParams, name: str) -> dt.datetime | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"Invalid input for query parameters {name}. Value: {value}. "
            f"'{value}' is not a 'date-time'"
        ) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def parse_list_query(params: QueryParams, version: APIVersion) -> MigrationListQuery:
    allowed = allowed_params(version)
    if version >= "2.59":
        unexpected = sorted({key for key in params if key not in allowed})
        if unexpected:
            names = ", ".join(repr(k) for k in unexpected)
            verb = "was" if len(unexpected) == 1 else "were"
            raise BadRequest(
                "Invalid input for query parameters. Additional properties are not "
                f"allowed ({names} {verb} unexpected)"
            )
    query = MigrationListQuery(paged=version >= "2.59")
    names = [*FILTERS, *(n for n in ("user_id", "project_id") if n in allowed)]
    for name in names:
        values = [v for v in params.getlist(name) if v != ""]
        if values:
            query.filters[name] = values
    # Nova's schema takes any string here; only a true value changes anything
    hidden = params.get("hidden")
    query.hidden = hidden is not None and hidden.strip().lower() in TRUE_VALUES
    if "changes-since" in allowed:
        query.changes_since = _time(params, "changes-since")
    if "changes-before" in allowed:
        query.changes_before = _time(params, "changes-before")
        if (
            query.changes_since is not None
            and query.changes_before is not None
            and query.changes_since > query.changes_before
        ):
            raise BadRequest(
                "The value of changes-since must be less than or equal to changes-before."
            )
    if query.paged:
        limit = parse_int_query(params.get("limit"), "limit", minimum=0)
        query.limit = MAX_LIMIT if limit is None else min(limit, MAX_LIMIT)
        query.marker = params.get("marker") or None
    return query


class ForceComplete(Strict):
    """``POST /servers/{id}/migrations/{mid}/action``: ``{"force_complete": null}`` (2.22+)."""

    force_complete: None

    @field_validator("force_complete", mode="before")
    @classmethod
    def _null(cls, value: Any) -> None:
        if value is not None:
            raise ValueError(f"{value!r} is not of type 'null'")
        return None
