"""Who is calling: development authentication for the compute API.

atoll has one authentication mode today, ``dev`` (``settings.auth.mode``).  The
token itself names the caller::

    X-Auth-Token: dev:<user>:<project>[:<role>[,<role>...]]

    dev:alice:demo              user alice, project demo, role "member"
    dev:bob:demo:reader         user bob, project demo, role "reader"
    dev:admin:admin:admin       user admin, project admin, role "admin"
    dev:ops:infra:admin,member  two roles

User, project and role names are 1 to 255 characters from ``A-Z a-z 0-9 _ - . @``.
A caller is an administrator when one of its roles is ``settings.auth.admin_role``
("admin" by default); policy (``atoll.api.policy``) decides the rest.

Because anybody can write such a token, dev mode accepts it only from loopback
clients (127.0.0.0/8, ::1) unless ``settings.auth.allow_remote`` is true; any
other client gets a 403.  A missing or malformed token is a 401 whose message
shows the format above.  With the openstack CLI or openstacksdk, use the
``token_endpoint`` (``admin_token``) auth type with ``--os-token dev:alice:demo``
and the compute endpoint as ``--os-endpoint``/``endpoint_override``.

``authenticate(request, settings)`` returns the ``RequestContext``; routers use
``atoll.api.deps.ContextDep`` rather than calling it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from atoll.config import Settings
from atoll.context import RequestContext, new_request_id
from atoll.exceptions import AtollError, Forbidden

TOKEN_HEADER = "X-Auth-Token"
TOKEN_PREFIX = "dev"
DEFAULT_ROLES = ("member",)
SUPPORTED_MODES = ("dev",)
TOKEN_FORMAT = "dev:<user>:<project>[:<role>[,<role>...]]"

_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,255}$")


class Unauthorized(AtollError):
    """The request carries no valid credentials."""

    code = 401
    title = "unauthorized"


def _malformed(why: str) -> Unauthorized:
    return Unauthorized(
        f"{why}. Send the header '{TOKEN_HEADER}: {TOKEN_FORMAT}', "
        "for example 'dev:alice:demo' or 'dev:admin:admin:admin'."
    )


def parse_token(token: str | None) -> tuple[str, str, tuple[str, ...]]:
    """``dev:alice:demo:admin`` -> ("alice", "demo", ("admin",)); Unauthorized otherwise."""
    if token is None or not token.strip():
        raise _malformed("Authentication required: no token was given")
    parts = token.strip().split(":")
    if parts[0] != TOKEN_PREFIX or len(parts) not in (3, 4):
        raise _malformed("The token is malformed")
    user, project = parts[1], parts[2]
    for what, value in (("user", user), ("project", project)):
        if not _NAME_RE.match(value):
            raise _malformed(f"The token's {what} {value!r} is not a valid name")
    roles: tuple[str, ...] = DEFAULT_ROLES
    if len(parts) == 4:
        roles = tuple(r.strip() for r in parts[3].split(",") if r.strip())
        if not roles or not all(_NAME_RE.match(r) for r in roles):
            raise _malformed(f"The token's roles {parts[3]!r} are not valid")
    return user, project, roles


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def check_mode(settings: Settings) -> None:
    """Refuse to start with an auth mode this module does not implement."""
    if settings.auth.mode not in SUPPORTED_MODES:
        raise ValueError(
            f"auth.mode {settings.auth.mode!r} is not supported (choose one of "
            f"{', '.join(SUPPORTED_MODES)})"
        )


def authenticate(request: Any, settings: Settings, request_id: str | None = None) -> RequestContext:
    """The caller of ``request`` (a Starlette request) as a RequestContext."""
    check_mode(settings)
    client_host = request.client.host if request.client else None
    if not settings.auth.allow_remote and not is_loopback(client_host):
        raise Forbidden(
            f"Development tokens are accepted only from loopback clients, not from "
            f"{client_host or 'an unknown address'} (set auth.allow_remote to allow them)."
        )
    user, project, roles = parse_token(request.headers.get(TOKEN_HEADER))
    return RequestContext(
        user_id=user,
        project_id=project,
        roles=roles,
        request_id=request_id or new_request_id(),
        is_admin=settings.auth.admin_role in roles,
    )
