"""A small client of the compute API for the CLI commands that talk HTTP.

Commands take the API's address and a token as options (the shared
``UrlOpt``/``TokenOpt``), build a ``ComputeClient`` and call it::

    with ComputeClient(url, token) as api:
        server = api.get("/servers/" + server_id)["server"]
        request_id = api.server_action(server_id, {"migrate": None})

Every request carries ``X-Auth-Token`` and ``OpenStack-API-Version: compute
<microversion>`` (2.100 unless asked otherwise).  An answer of 400 or more
raises ``ApiError`` with the message of Nova's fault body
(``{"badRequest": {"code": 400, "message": "..."}}``) or of an
``{"errors": [...]}`` body; a connection failure or timeout raises
``ApiUnreachable``.  ``fail(exc)`` prints either on stderr and exits (1 for a
refusal, 2 when the API could not be reached).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.markup import escape

DEFAULT_URL = "http://127.0.0.1:8774"
DEV_ADMIN_TOKEN = "dev:admin:admin:admin"
MICROVERSION = "2.100"

UrlOpt = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="ATOLL_URL",
        help="The atoll API to talk to (else ATOLL_URL).",
        show_default=True,
    ),
]
TokenOpt = Annotated[
    str,
    typer.Option(
        "--token",
        envvar="ATOLL_TOKEN",
        help="X-Auth-Token to send (else ATOLL_TOKEN; default: the dev admin token). "
        "Development tokens read dev:<user>:<project>[:<roles>], e.g. dev:alice:demo.",
        show_default=False,
    ),
]

err = Console(stderr=True)


class ApiUnreachable(Exception):
    """The API did not answer (connection refused, timeout, ...)."""


class ApiError(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, message: str, title: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.title = title

    def __str__(self) -> str:
        return self.message


def fault_message(resp: httpx.Response) -> tuple[str, str | None]:
    """(message, fault title) of an error answer."""
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip()
        return (text or f"HTTP {resp.status_code} {resp.reason_phrase}"), None
    if isinstance(body, dict):
        if len(body) == 1:
            ((title, fault),) = body.items()
            if isinstance(fault, dict) and "message" in fault:
                return str(fault["message"]), title
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            return str(first.get("detail") or first.get("title") or first), None
        if "detail" in body:
            return str(body["detail"]), None
    return f"HTTP {resp.status_code}: {resp.text.strip()[:500]}", None


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class ComputeClient:
    """The compute API (``<url>/v2.1``) as one caller (its token) sees it."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str = DEV_ADMIN_TOKEN,
        *,
        microversion: str = MICROVERSION,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.microversion = microversion
        self._http = httpx.Client(
            base_url=f"{self.url}/v2.1",
            headers={"X-Auth-Token": token, "Accept": "application/json"},
            timeout=timeout,
        )

    def __enter__(self) -> ComputeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing ------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        microversion: str | None = None,
        send_body: bool = False,
    ) -> httpx.Response:
        """One call; ``ApiError`` for a status of 400 or more, ``ApiUnreachable`` on no answer.

        ``send_body`` sends ``json`` even when it is None (an action such as
        ``{"migrate": null}`` is a dict, so this is only for a bare ``null``).
        """
        headers = {"OpenStack-API-Version": f"compute {microversion or self.microversion}"}
        kwargs: dict[str, Any] = {"headers": headers, "params": params}
        if json is not None or send_body:
            kwargs["json"] = json
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiUnreachable(f"cannot reach {self.url}: {exc}") from None
        if resp.status_code >= 400:
            message, title = fault_message(resp)
            raise ApiError(resp.status_code, message, title)
        return resp

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean or None).json()

    # -- servers -------------------------------------------------------------------

    def server(self, server_id: str) -> dict[str, Any]:
        return self.get(f"/servers/{server_id}")["server"]

    def servers(self, *, all_projects: bool = False, **filters: Any) -> list[dict[str, Any]]:
        """Every server (``/servers/detail``), following the pages."""
        params: dict[str, Any] = {k: v for k, v in filters.items() if v is not None}
        if all_projects:
            params["all_tenants"] = "1"
        out: list[dict[str, Any]] = []
        while True:
            body = self.get("/servers/detail", **params)
            page = body.get("servers", [])
            out.extend(page)
            more = any(link.get("rel") == "next" for link in body.get("servers_links", []))
            if not more or not page:
                return out
            params["marker"] = page[-1]["id"]

    def find_server(self, name_or_id: str, *, all_projects: bool = False) -> dict[str, Any]:
        """A server by its id, or by its exact name when that names exactly one."""
        if is_uuid(name_or_id):
            return self.server(name_or_id)
        # the name filter is a regular expression: ask broadly, match exactly
        matches = [
            s
            for s in self.servers(all_projects=all_projects, name=name_or_id)
            if s.get("name") == name_or_id
        ]
        if not matches and not all_projects:
            try:  # an administrator names servers of other projects too
                return self.find_server(name_or_id, all_projects=True)
            except ApiError as exc:
                if exc.status != 403:
                    raise
        if not matches:
            raise ApiError(404, f"No server with a name or ID of '{name_or_id}' exists.")
        if len(matches) > 1:
            raise ApiError(
                409, f"More than one server is named '{name_or_id}': use its ID instead."
            )
        return matches[0]

    def server_action(self, server_id: str, action: dict[str, Any]) -> str | None:
        """Run a server action; the request id of the call (``x-openstack-request-id``)."""
        resp = self.request("POST", f"/servers/{server_id}/action", json=action, send_body=True)
        return resp.headers.get("x-openstack-request-id")

    def action_record(self, server_id: str, request_id: str) -> dict[str, Any]:
        return self.get(f"/servers/{server_id}/os-instance-actions/{request_id}")["instanceAction"]

    # -- admin -----------------------------------------------------------------------

    def migrations(self, **filters: Any) -> list[dict[str, Any]]:
        """``/os-migrations`` (admin), newest first."""
        return self.get("/os-migrations", **filters)["migrations"]

    def workflow(self, workflow_id: str) -> dict[str, Any]:
        """atoll's view of a durable workflow and its recorded steps (admin)."""
        return self.get(f"/atoll-admin/workflows/{workflow_id}")["workflow"]


def fail(exc: BaseException | str, code: int | None = None) -> NoReturn:
    """Print an API refusal or a connection failure on stderr and exit."""
    if code is None:
        code = 2 if isinstance(exc, ApiUnreachable) else 1
    err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(code)
