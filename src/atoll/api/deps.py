"""The toolkit every router uses: FastAPI dependencies and input helpers.

Dependencies (use the ``Annotated`` aliases as parameter types)::

    @router.get("/flavors/{flavor_id}")
    def show(flavor_id: str, request: Request, runtime: RuntimeDep,
             ctx: ContextDep, version: VersionDep) -> dict: ...

- ``RuntimeDep``  -> ``atoll.runtime.Runtime`` (``request.app.state.runtime``)
- ``ContextDep``  -> ``RequestContext`` of the authenticated caller (401/403 from
  ``atoll.api.auth``); its ``request_id`` is the one echoed in the response headers
- ``VersionDep``  -> ``APIVersion`` the client asked for (parsed by the middleware)
- ``JsonBody``    -> the request body as a dict (400 "Malformed request body"
  when it is not a JSON object); for routers that pick a schema by microversion
  and validate it with ``atoll.api.errors.validate(Model, body)``
- ``openapi_body(Model)`` (or a union of models) -> ``openapi_extra`` that
  documents a ``JsonBody`` route's body in the OpenAPI document
- ``min_version("2.55")`` -> a dependency for ``dependencies=[...]`` that makes a
  route 404 below that version (optionally above a max), like Nova

Input helpers (all raise ``atoll.exceptions`` errors with Nova's wording):

- ``parse_uuid(value, "Server", in_path=True)`` -> normalised UUID string;
  an invalid one is 404 "<what> <value> could not be found." in a path, 400
  "Invalid <what> id: ..." in a body or query
- ``parse_int_query(value, "minRam", minimum=0)`` -> int or the default; 400 otherwise
- ``parse_bool_query(value, "is_public")`` -> bool (Nova's 1/t/true/on/y/yes and
  0/f/false/off/n/no, case-insensitive) or the default; 400 otherwise
- ``page_params(request)`` -> ``Page(limit, marker)`` from ``limit``/``marker``
  (limit capped at ``MAX_LIMIT``); ``paginate(items, page, key)`` applies it
  (400 "marker [x] not found" for an unknown marker)
- ``isotime(datetime)`` -> "2016-12-27T22:51:32.877711" (None stays None)

Cells:

- ``each_cell(runtime, fn)`` runs ``fn(cell, session)`` in every cell's DB and
  returns ``CellResults`` (``.results`` = [(cell, value)], ``.down`` = [cell]);
  a cell whose DB does not answer is skipped with a warning, so one down cell
  never turns a listing into a 500.  ``CELL_DB_ERRORS`` is what counts as
  "does not answer".
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Request
from pydantic import TypeAdapter
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from atoll.api import auth
from atoll.api.microversion import MIN_VERSION, APIVersion, from_headers, require
from atoll.cells import Cell
from atoll.context import RequestContext, new_request_id
from atoll.db.session import session_scope
from atoll.exceptions import BadRequest, NotFound
from atoll.runtime import Runtime

LOG = logging.getLogger(__name__)

T = TypeVar("T")

MAX_LIMIT = 1000
CELL_DB_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, ImportError)

_TRUE = frozenset({"1", "t", "true", "on", "y", "yes"})
_FALSE = frozenset({"0", "f", "false", "off", "n", "no"})


# -- dependencies ---------------------------------------------------------------------


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_version(request: Request) -> APIVersion:
    version = getattr(request.state, "api_version", None)
    if version is None:
        version = from_headers(request.headers) if request.headers else MIN_VERSION
        request.state.api_version = version
    return version


def get_context(request: Request) -> RequestContext:
    ctx = getattr(request.state, "context", None)
    if ctx is not None:
        return ctx
    runtime = get_runtime(request)
    request_id = getattr(request.state, "request_id", None) or new_request_id()
    ctx = auth.authenticate(request, runtime.settings, request_id=request_id)
    url_project = getattr(request.state, "url_project_id", None)
    if url_project and url_project != ctx.project_id:
        raise BadRequest(
            f"Malformed request URL: URL's project_id '{url_project}' doesn't match "
            f"Context's project_id '{ctx.project_id}'"
        )
    request.state.context = ctx
    return ctx


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        raise BadRequest("The request body is missing.")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("Malformed request body") from None
    if not isinstance(data, dict):
        raise BadRequest("Malformed request body: a JSON object is expected.")
    return data


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ContextDep = Annotated[RequestContext, Depends(get_context)]
VersionDep = Annotated[APIVersion, Depends(get_version)]
JsonBody = Annotated[dict[str, Any], Depends(json_body)]


def openapi_body(model: Any) -> dict[str, Any]:
    """``openapi_extra`` for a route that takes ``JsonBody`` and validates ``model`` itself.

    The OpenAPI document then shows (and fuzzers use) the body's schema, inlined.
    """
    schema = TypeAdapter(model).json_schema(by_alias=True)
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return inline({**defs[ref.rsplit("/", 1)[-1]], **rest})
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline(schema)}},
        }
    }


def min_version(minimum: str, maximum: str | None = None) -> Any:
    """A route dependency: 404 unless the asked version is in [minimum, maximum]."""

    def _check(version: VersionDep) -> None:
        require(version, minimum, maximum)

    return Depends(_check)


# -- input helpers ---------------------------------------------------------------------


def parse_uuid(value: str, what: str = "Resource", *, in_path: bool = True) -> str:
    """``value`` as a canonical UUID string.

    In a path an invalid UUID names nothing that exists (404, Nova's "could not
    be found"); in a body or query it is a malformed request (400).
    """
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, AttributeError, TypeError):
        if in_path:
            raise NotFound(f"{what} {value} could not be found.") from None
        raise BadRequest(f"Invalid {what} id: {value!r} is not a UUID.") from None


def is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def parse_int_query(
    value: str | None,
    name: str,
    *,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    """An integer query parameter (None/absent -> ``default``)."""
    if value is None:
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        raise BadRequest(
            f"Invalid input for query parameters {name}. Value: {value}. "
            f"'{value}' is not an integer."
        ) from None
    if minimum is not None and number < minimum:
        raise BadRequest(
            f"Invalid input for query parameters {name}. Value: {value}. "
            f"{number} is less than the minimum of {minimum}."
        )
    if maximum is not None and number > maximum:
        raise BadRequest(
            f"Invalid input for query parameters {name}. Value: {value}. "
            f"{number} is greater than the maximum of {maximum}."
        )
    return number


def parse_bool_query(value: str | None, name: str, default: bool | None = None) -> bool | None:
    """A boolean query parameter in Nova's spellings (absent -> ``default``)."""
    if value is None:
        return default
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadRequest(
        f"Invalid input for query parameters {name}. Value: {value}. "
        f"'{value}' is not a valid boolean (use true or false)."
    )


@dataclass(frozen=True)
class Page:
    limit: int | None
    marker: str | None


def page_params(request: Request, *, max_limit: int = MAX_LIMIT) -> Page:
    """``limit``/``marker`` of a list request, checked like Nova (limit capped at max_limit)."""
    raw_limit = request.query_params.get("limit")
    limit: int | None = None
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise BadRequest("limit param must be an integer") from None
        if limit < 0:
            raise BadRequest("limit param must be positive")
        limit = min(limit, max_limit)
    marker = request.query_params.get("marker") or None
    return Page(limit=limit, marker=marker)


def paginate(items: Sequence[T], page: Page, key: Callable[[T], Any]) -> list[T]:
    """The items after ``page.marker`` (matched with ``key``), at most ``page.limit`` of them."""
    start = 0
    if page.marker is not None:
        for index, item in enumerate(items):
            if str(key(item)) == page.marker:
                start = index + 1
                break
        else:
            raise BadRequest(f"marker [{page.marker}] not found")
    selected = list(items[start:])
    if page.limit is not None:
        selected = selected[: page.limit]
    return selected


def isotime(value: dt.datetime | None) -> str | None:
    """A naive-UTC DB timestamp the way Nova's bodies show it: "2016-12-27T22:51:32.877711"."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")


# -- cells -----------------------------------------------------------------------------


@dataclass
class CellResults(Generic[T]):
    results: list[tuple[Cell, T]] = field(default_factory=list)
    down: list[Cell] = field(default_factory=list)

    def values(self) -> list[T]:
        return [value for _cell, value in self.results]


def each_cell(
    runtime: Runtime,
    fn: Callable[[Cell, Session], T],
    cells: Iterable[Cell] | None = None,
) -> CellResults[T]:
    """``fn(cell, session)`` in every cell (default: all mapped cells), skipping down ones."""
    out: CellResults[T] = CellResults()
    for cell in runtime.cells.all() if cells is None else cells:
        try:
            with session_scope(cell.db_url) as session:
                out.results.append((cell, fn(cell, session)))
        except CELL_DB_ERRORS as exc:
            LOG.warning(
                "Cell %s did not answer, its records are left out: %s",
                cell.name,
                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
            )
            out.down.append(cell)
    return out
