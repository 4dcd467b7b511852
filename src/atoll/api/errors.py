"""Every error the compute API returns, in Nova's fault format.

A fault body is ``{"<title>": {"code": <status>, "message": "<text>"}}`` where the
title is Nova's fault name (badRequest, unauthorized, forbidden, itemNotFound,
badMethod, conflictingRequest, computeFault, ...).  Routers never build error
responses: they raise an ``atoll.exceptions.AtollError`` subclass (each carries
its status and title) and ``install(app)`` turns it into a response.

Also handled here:

- request validation (pydantic/FastAPI) -> 400 badRequest naming the field,
  e.g. "Invalid input for field/attribute ram. Value: abc. Input should be a
  valid integer, unable to parse string as an integer";
- a body that is not JSON -> 400 "Malformed request body";
- an unknown path -> 404 itemNotFound, a known path with the wrong method ->
  405 badMethod;
- anything else -> 500 computeFault "Unexpected API Error. ..." with the
  traceback in the log and never in the response (see ``ApiMiddleware`` in
  ``atoll.api.app``, which calls ``unexpected_error_response``).

Paths under ``/placement`` get the Placement API's error format instead
(``{"errors": [{"status", "title", "detail", "code", "request_id"}]}``).

``validation_message(errors)`` and ``validate(model, data)`` are shared with
routers that pick a schema by microversion and validate by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, TypeVar

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from atoll.exceptions import AtollError, BadRequest

LOG = logging.getLogger(__name__)

UNEXPECTED_MESSAGE = (
    "Unexpected API Error. Please report this at your operator and attach the "
    "request id ({request_id}) and the API log."
)

FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}

PLACEMENT_PREFIX = "/placement"

M = TypeVar("M", bound=pydantic.BaseModel)


def fault_name(status: int) -> str:
    return FAULT_NAMES.get(status, "computeFault")


def fault_body(title: str, code: int, message: str) -> dict[str, Any]:
    return {title: {"code": code, "message": message}}


def _request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or ""


def error_response(
    request: Request,
    status: int,
    message: str,
    title: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A fault response in the format of the API the request addressed."""
    if request.url.path.startswith(PLACEMENT_PREFIX):
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = title or "Error"
        body: dict[str, Any] = {
            "errors": [
                {
                    "status": status,
                    "title": phrase,
                    "detail": message,
                    "code": "placement.undefined_code",
                    "request_id": _request_id(request),
                }
            ]
        }
    else:
        body = fault_body(title or fault_name(status), status, message)
    return JSONResponse(body, status_code=status, headers=headers)


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field_of(loc: Sequence[Any]) -> str:
    names = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # pydantic puts the chosen union member's type name in the location; skip it
    names = [n for n in names if not n.startswith(("function-", "json-or-python"))]
    return names[-1] if names else "body"


def _one_message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    loc = tuple(err.get("loc", ()))
    if kind == "json_invalid":
        return "Malformed request body"
    if kind == "missing":
        parent = loc[:-1]
        if loc and loc[0] == "query":
            return f"Query parameter {loc[-1]} is required."
        if not [p for p in parent if p != "body"]:
            if len(loc) <= 1:
                return "The request body is missing."
            return f"'{loc[-1]}' is a required property"
        return (
            f"Invalid input for field/attribute {_field_of(parent)}. "
            f"'{loc[-1]}' is a required property"
        )
    if kind == "extra_forbidden":
        parent = loc[:-1]
        message = f"Additional properties are not allowed ('{loc[-1]}' was unexpected)"
        if not [p for p in parent if p != "body"]:
            return message
        return f"Invalid input for field/attribute {_field_of(parent)}. {message}"
    if loc and loc[0] == "query":
        return (
            f"Invalid input for query parameters {_field_of(loc)}. "
            f"Value: {_short(err.get('input'))}. {err.get('msg', 'invalid')}"
        )
    msg = str(err.get("msg", "invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if msg.startswith("Assertion failed, "):
        msg = msg[len("Assertion failed, ") :]
    return (
        f"Invalid input for field/attribute {_field_of(loc)}. "
        f"Value: {_short(err.get('input'))}. {msg}"
    )


def validation_message(errors: Sequence[Any]) -> str:
    """One message for a list of pydantic/FastAPI errors (the first error wins, like Nova)."""
    if not errors:
        return "Invalid input."
    errs = [dict(e) for e in errors]
    for err in errs:
        if err.get("type") == "json_invalid":
            return "Malformed request body"
    return _one_message(errs[0])


def validate(model: type[M], data: Any) -> M:
    """``model.model_validate(data)``, with a 400 badRequest in the API's words on failure."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise BadRequest(validation_message(errors)) from None


async def _atoll_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AtollError)
    if exc.code >= 500:
        LOG.warning("%s %s failed: %s", request.method, request.url.path, exc.message)
    headers = getattr(exc, "headers", None)
    return error_response(request, exc.code, exc.message, exc.title, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(request, 400, validation_message(exc.errors()))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        message = "The resource could not be found."
    elif status == 405:
        message = f"The method {request.method} is not allowed for this resource."
    else:
        message = str(exc.detail) if exc.detail else HTTPStatus(status).phrase
    return error_response(request, status, message, headers=dict(exc.headers or {}))


def unexpected_error_response(request: Request, exc: BaseException) -> JSONResponse:
    """The 500 for a bug: logged with its traceback, the response says nothing internal."""
    request_id = _request_id(request)
    LOG.error(
        "Unexpected error in %s %s (request %s)",
        request.method,
        request.url.path,
        request_id,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return error_response(
        request, 500, UNEXPECTED_MESSAGE.format(request_id=request_id or "unknown")
    )


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(AtollError, _atoll_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
