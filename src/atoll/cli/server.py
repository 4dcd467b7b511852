"""`atoll server`: move servers (resize, migrate, confirm, revert), show and list them.

Every command talks to the compute API over HTTP (``--url``/``ATOLL_URL`` and
``--token``/``ATOLL_TOKEN``, see ``atoll.cli.client``).  With ``--wait`` a move
command follows the operation to its end:

- an administrator sees a progress bar over the steps of the durable workflow
  that runs it (from ``/os-migrations`` and ``/atoll-admin/workflows/{id}``),
  "step k of n" with the current step's name;
- any other caller, who may not read migrations or workflows, sees a spinner on
  the server's status.

The wait ends when the server settles (VERIFY_RESIZE after a resize or migrate,
ACTIVE or SHUTOFF after a confirm or revert) or the operation fails.

Exit codes: 0 done; 1 the API refused the request or the operation failed; 2
the API could not be reached; 3 ``--wait`` gave up after ``--timeout`` seconds
(the operation goes on in the background).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from atoll.cli.client import (
    DEFAULT_URL,
    DEV_ADMIN_TOKEN,
    ApiError,
    ApiUnreachable,
    ComputeClient,
    TokenOpt,
    UrlOpt,
    fail,
)

server_app = typer.Typer(
    help="Servers: resize, migrate, confirm or revert them (optionally waiting with a "
    "progress bar), show and list them.",
    no_args_is_help=True,
)

console = Console()
err = Console(stderr=True)

EXIT_FAILED = 1
EXIT_UNREACHABLE = 2
EXIT_TIMEOUT = 3

# The server statuses an operation ends in, by workflow kind.
SETTLED = {
    "move": ("VERIFY_RESIZE",),
    "confirm": ("ACTIVE", "SHUTOFF"),
    "revert": ("ACTIVE", "SHUTOFF"),
}
# Consecutive failed polls tolerated while waiting (an API restart, a busy moment).
MAX_POLL_ERRORS = 10

ServerArg = Annotated[str, typer.Argument(help="The server's ID (or its exact, unique name).")]
WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait",
        help="Follow the operation until the server settles: a progress bar over the "
        "workflow's steps for administrators, a spinner on the server status otherwise.",
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=1,
        help="With --wait: give up (exit 3) after this many seconds; the operation "
        "goes on in the background.",
    ),
]
PollOpt = Annotated[
    float,
    typer.Option("--poll", min=0.05, help="With --wait: seconds between two looks at it."),
]


@dataclass
class Operation:
    """One accepted move-family request, as --wait follows it."""

    kind: str  # move, confirm or revert: the workflow that runs it
    verb: str  # resize, migrate, confirm or revert: what the user asked
    server_id: str
    request_id: str | None

    @property
    def settled(self) -> tuple[str, ...]:
        return SETTLED[self.kind]


class WaitFailed(Exception):
    def __init__(self, lines: list[str], code: int = EXIT_FAILED) -> None:
        super().__init__(lines[0] if lines else "failed")
        self.lines = lines
        self.code = code


# ------------------------------------------------------------------ small helpers


def _die(lines: list[str], code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(lines[0])}", soft_wrap=True)
    for line in lines[1:]:
        err.print(f"  {escape(line)}", soft_wrap=True)
    raise typer.Exit(code)


def _host(server: dict[str, Any]) -> str | None:
    return server.get("OS-EXT-SRV-ATTR:host")


def _flavor_name(server: dict[str, Any]) -> str:
    flavor = server.get("flavor") or {}
    return str(flavor.get("original_name") or flavor.get("id") or "?")


def _task(server: dict[str, Any]) -> str | None:
    return server.get("OS-EXT-STS:task_state")


def _describe_status(server: dict[str, Any]) -> str:
    task = _task(server)
    return f"{server.get('status')} ({task})" if task else str(server.get("status"))


def _fault_text(server: dict[str, Any]) -> str | None:
    fault = server.get("fault")
    if isinstance(fault, dict) and fault.get("message"):
        return str(fault["message"])
    return None


def _resolve_flavor(api: ComputeClient, value: str) -> str:
    """A flavor id from an id or a name (anything else goes to the API as given)."""
    try:
        flavors = api.get("/flavors")["flavors"]
    except ApiError:
        return value
    if any(str(f.get("id")) == value for f in flavors):
        return value
    named = [f for f in flavors if f.get("name") == value]
    return str(named[0]["id"]) if len(named) == 1 else value


def _settled_summary(op: Operation, server: dict[str, Any]) -> str:
    where = f" on host {_host(server)}" if _host(server) else ""
    text = (
        f"server {op.server_id} is {server.get('status')}{where} with flavor {_flavor_name(server)}"
    )
    if op.kind == "move":
        text += (
            f"\nconfirm with `atoll server confirm {op.server_id}` "
            f"or revert with `atoll server revert {op.server_id}`"
        )
    return text


# ------------------------------------------------------------------ following a workflow


def _workflow_id(api: ComputeClient, op: Operation) -> str | None:
    """The id of the workflow running ``op``; None when this caller may not know it."""
    try:
        migrations = api.migrations(instance_uuid=op.server_id)
    except ApiError:
        return None  # not an administrator (403), or no such listing
    if not migrations or not migrations[0].get("uuid"):
        return None
    migration = migrations[0]["uuid"]
    if op.kind == "move":
        return f"move-{migration}"
    if not op.request_id:
        return None
    return f"{op.kind}-{migration}-{op.request_id}"


def _read_workflow(api: ComputeClient, workflow_id: str) -> dict[str, Any] | None:
    """The workflow, or None when this caller may not read it (403) or it is not there."""
    try:
        return api.workflow(workflow_id)
    except ApiError:
        return None


def _progress_of(wf: dict[str, Any]) -> tuple[int, int, str]:
    """(steps done, steps planned, the step running now) of a workflow."""
    planned: list[str] = list(wf.get("planned_steps") or [])
    names = [s.get("name") for s in wf.get("steps") or []]
    done = max((planned.index(n) + 1 for n in names if n in planned), default=0)
    total = max(len(planned), done)
    if wf.get("outcome") == "succeeded":
        return total, total, "done"
    last = names[-1] if names else None
    if last is not None and last not in planned:
        label = f"rolling back: {last}" if wf.get("outcome") == "running" else last
    elif wf.get("outcome") != "running":
        label = last or "stopped"
    elif done < len(planned):
        label = planned[done]
    else:
        label = "finishing"
    return done, total, label


def _failed_step(wf: dict[str, Any]) -> str | None:
    planned: list[str] = list(wf.get("planned_steps") or [])
    for step in wf.get("steps") or []:
        if step.get("error"):
            name = step.get("name")
            where = (
                f" (step {planned.index(name) + 1} of {len(planned)})" if name in planned else ""
            )
            return f"step {name}{where} failed: {step['error']}"
    return None


def _workflow_failure(
    op: Operation, wf: dict[str, Any], server: dict[str, Any] | None
) -> WaitFailed:
    fault = (wf.get("fault") or {}).get("message") or (server and _fault_text(server))
    reason = fault or wf.get("error") or f"the workflow ended {wf.get('status')}"
    lines = [f"{op.verb} of server {op.server_id} failed: {reason}"]
    step = _failed_step(wf)
    if step and (not fault or fault not in step):
        lines.append(step)
    elif step:
        lines.append(step.split(" failed:", 1)[0] + " failed")
    if server is not None:
        where = f" on host {_host(server)}" if _host(server) else ""
        lines.append(f"the server is {_describe_status(server)}{where}")
        if server.get("status") == "ERROR" and op.kind == "move":
            lines.append("the move was rolled back; a hard reboot brings the server back")
        elif op.kind == "move":
            lines.append("the move was rolled back: the server keeps its host and flavor")
    lines.append(f"workflow {wf.get('id')}: {len(wf.get('steps') or [])} step(s) recorded")
    return WaitFailed(lines)


class _Poller:
    """Calls the API while waiting, tolerating a few failures in a row."""

    def __init__(self, api: ComputeClient, op: Operation, deadline: float) -> None:
        self.api, self.op, self.deadline = api, op, deadline
        self.errors = 0

    def server(self) -> dict[str, Any] | None:
        try:
            server = self.api.server(self.op.server_id)
        except ApiError as exc:
            if exc.status == 404:
                raise WaitFailed([f"server {self.op.server_id} is gone: {exc.message}"]) from None
            return self._retry(exc)
        except ApiUnreachable as exc:
            return self._retry(exc)
        self.errors = 0
        return server

    def _retry(self, exc: Exception) -> None:
        self.errors += 1
        if self.errors >= MAX_POLL_ERRORS:
            code = EXIT_UNREACHABLE if isinstance(exc, ApiUnreachable) else EXIT_FAILED
            raise WaitFailed([f"lost track of server {self.op.server_id}: {exc}"], code)
        return None

    def timed_out(self) -> bool:
        return time.monotonic() >= self.deadline


def _check_server(op: Operation, server: dict[str, Any] | None) -> bool:
    """True when the server has settled; WaitFailed when it went to ERROR."""
    if server is None:
        return False
    if server.get("status") == "ERROR":
        message = _fault_text(server) or "no fault was recorded"
        raise WaitFailed(
            [
                f"{op.verb} of server {op.server_id} failed: the server is in ERROR: {message}",
                f"`atoll server show {op.server_id}` (as an administrator) shows its last "
                "migration",
            ]
        )
    return _task(server) is None and server.get("status") in op.settled


def _step_line(wf: dict[str, Any], step: dict[str, Any]) -> str:
    planned: list[str] = list(wf.get("planned_steps") or [])
    name = str(step.get("name"))
    where = f"{planned.index(name) + 1}/{len(planned)}" if name in planned else "-"
    line = f"  step {where} {escape(name)}"
    if step.get("error"):
        line += f" [red]failed: {escape(str(step['error']))}[/red]"
    return line


def _follow_workflow(
    api: ComputeClient, op: Operation, workflow_id: str, poll: float, deadline: float
) -> dict[str, Any]:
    poller = _Poller(api, op, deadline)
    show_lines = not console.is_terminal
    printed = 0
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"{op.verb}: starting", total=None)
        while True:
            wf = _read_workflow(api, workflow_id)
            server = poller.server()
            if wf is not None:
                done, total, label = _progress_of(wf)
                progress.update(
                    task, total=total or None, completed=done, description=f"{op.verb}: {label}"
                )
                steps = wf.get("steps") or []
                for step in steps[printed:]:
                    if show_lines or step.get("error"):
                        progress.console.print(_step_line(wf, step), soft_wrap=True)
                printed = len(steps)
                if wf.get("outcome") == "failed":
                    raise _workflow_failure(op, wf, server)
                if wf.get("outcome") == "succeeded" and _check_server(op, server):
                    assert server is not None
                    return server
            elif _check_server(op, server):  # the workflow vanished: the server decides
                assert server is not None
                return server
            if poller.timed_out():
                raise _timeout(op, server)
            time.sleep(poll)


def _follow_status(
    api: ComputeClient, op: Operation, poll: float, deadline: float
) -> dict[str, Any]:
    """The spinner for callers who may not read the workflow: the server's status only."""
    poller = _Poller(api, op, deadline)
    last: tuple[Any, Any] | None = None
    with console.status(f"{op.verb} of server {op.server_id}: waiting", spinner="dots") as spin:
        while True:
            server = poller.server()
            if server is not None:
                state = (server.get("status"), _task(server))
                if state != last:
                    last = state
                    spin.update(f"{op.verb} of server {op.server_id}: {_describe_status(server)}")
                    console.print(f"  status {escape(_describe_status(server))}", soft_wrap=True)
                if _check_server(op, server):
                    return server
                if _task(server) is None and server.get("status") in _UNCHANGED[op.kind]:
                    raise _not_done(api, op, server)
            if poller.timed_out():
                raise _timeout(op, server)
            time.sleep(poll)


# A server back in one of these statuses with no task has not done the operation.
_UNCHANGED = {
    "move": ("ACTIVE", "SHUTOFF"),
    "confirm": ("VERIFY_RESIZE",),
    "revert": ("VERIFY_RESIZE",),
}


def _not_done(api: ComputeClient, op: Operation, server: dict[str, Any]) -> WaitFailed:
    """The operation ended without effect; say what the server's action recorded."""
    lines = [
        f"{op.verb} of server {op.server_id} failed: the server is "
        f"{server.get('status')} again, unchanged (flavor {_flavor_name(server)})"
    ]
    action = None
    if op.request_id:
        # the action is marked a moment after the server settles
        for _ in range(10):
            try:
                action = api.action_record(op.server_id, op.request_id)
            except (ApiError, ApiUnreachable):
                action = None
                break
            if action.get("message"):
                break
            time.sleep(0.2)
    if action is not None:
        failed = [
            f"{e.get('event')}: {e.get('result')}"
            + (f" ({e['details']})" if e.get("details") else "")
            for e in action.get("events") or []
            if e.get("result") and e.get("result") != "Success"
        ]
        outcome = action.get("message") or "no result"
        text = f"its action {action.get('action')} ({op.request_id}) ended: {outcome}"
        if failed:
            text += "; " + ", ".join(failed)
        lines.append(text)
    if op.kind == "move":
        lines.append(
            "the move was rolled back; without the cross-cell policy a move stays in the "
            "server's cell, which may have no other host with room"
        )
    lines.append(
        "an administrator sees the reason with `atoll server show "
        f"{op.server_id}` (last migration) or by running this command with an admin token"
    )
    return WaitFailed(lines)


def _timeout(op: Operation, server: dict[str, Any] | None) -> WaitFailed:
    now = f" (now {_describe_status(server)})" if server else ""
    return WaitFailed(
        [
            f"gave up waiting for the {op.verb} of server {op.server_id}{now}; "
            "it goes on in the background",
            f"follow it with `atoll server show {op.server_id}`",
        ],
        EXIT_TIMEOUT,
    )


def wait_for(api: ComputeClient, op: Operation, *, timeout: float, poll: float) -> dict[str, Any]:
    """Follow ``op`` until the server settles; the settled server, or WaitFailed."""
    deadline = time.monotonic() + timeout
    workflow_id = _workflow_id(api, op)
    if workflow_id is not None:
        # the API records the workflow before it answers; a few looks cover a slow store
        for _ in range(5):
            if _read_workflow(api, workflow_id) is not None:
                return _follow_workflow(api, op, workflow_id, poll, deadline)
            time.sleep(min(poll, 0.2))
    return _follow_status(api, op, poll, deadline)


def _run(
    url: str,
    token: str,
    server: str,
    *,
    kind: str,
    verb: str,
    action: Callable[[ComputeClient], dict[str, Any]],
    wait: bool,
    timeout: float,
    poll: float,
) -> None:
    with ComputeClient(url, token) as api:
        try:
            server_id = api.find_server(server)["id"]
            request_id = api.server_action(server_id, action(api))
        except (ApiError, ApiUnreachable) as exc:
            fail(exc)
        op = Operation(kind=kind, verb=verb, server_id=server_id, request_id=request_id)
        rid = f" (request {request_id})" if request_id else ""
        if not wait:
            console.print(
                f"{verb} of server {server_id} accepted{rid}; "
                f"follow it with `atoll server show {server_id}`",
                soft_wrap=True,
            )
            return
        console.print(f"{verb} of server {server_id} accepted{rid}", soft_wrap=True)
        try:
            settled = wait_for(api, op, timeout=timeout, poll=poll)
        except WaitFailed as exc:
            _die(exc.lines, exc.code)
        except KeyboardInterrupt:
            _die(
                [f"stopped waiting; the {verb} of server {server_id} goes on in the background"],
                130,
            )
        console.print(
            f"[green]done:[/green] {escape(_settled_summary(op, settled))}", soft_wrap=True
        )


# ------------------------------------------------------------------ commands


@server_app.command("resize")
def resize(
    server: ServerArg,
    flavor: Annotated[
        str, typer.Option("--flavor", help="The new flavor: its ID or its unique name.")
    ],
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 600.0,
    poll: PollOpt = 0.5,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = DEV_ADMIN_TOKEN,
) -> None:
    """Resize a server to another flavor (it moves to another host, maybe another cell).

    The server ends in VERIFY_RESIZE; then confirm (keep the new flavor) or revert
    (go back). Exit codes: 0 done, 1 refused or failed, 2 API unreachable, 3 timed out.
    """
    _run(
        url,
        token,
        server,
        kind="move",
        verb="resize",
        action=lambda api: {"resize": {"flavorRef": _resolve_flavor(api, flavor)}},
        wait=wait,
        timeout=timeout,
        poll=poll,
    )


@server_app.command("migrate")
def migrate(
    server: ServerArg,
    host: Annotated[
        str | None,
        typer.Option("--host", help="The destination host (else the scheduler picks one)."),
    ] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 600.0,
    poll: PollOpt = 0.5,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = DEV_ADMIN_TOKEN,
) -> None:
    """Cold-migrate a server to another host, keeping its flavor (admin by default).

    The server ends in VERIFY_RESIZE; then confirm or revert. Exit codes: 0 done,
    1 refused or failed, 2 API unreachable, 3 timed out.
    """
    _run(
        url,
        token,
        server,
        kind="move",
        verb="migrate",
        action=lambda _api: {"migrate": {"host": host} if host else None},
        wait=wait,
        timeout=timeout,
        poll=poll,
    )


@server_app.command("confirm")
def confirm(
    server: ServerArg,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 600.0,
    poll: PollOpt = 0.5,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = DEV_ADMIN_TOKEN,
) -> None:
    """Confirm a resize or migration: the server keeps its new host and flavor and the
    source host lets go of it.

    The server must be VERIFY_RESIZE; it ends ACTIVE (or SHUTOFF). Exit codes: 0 done,
    1 refused or failed, 2 API unreachable, 3 timed out.
    """
    _run(
        url,
        token,
        server,
        kind="confirm",
        verb="confirm",
        action=lambda _api: {"confirmResize": None},
        wait=wait,
        timeout=timeout,
        poll=poll,
    )


@server_app.command("revert")
def revert(
    server: ServerArg,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 600.0,
    poll: PollOpt = 0.5,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = DEV_ADMIN_TOKEN,
) -> None:
    """Revert a resize or migration: the server goes back to its source host and old
    flavor.

    The server must be VERIFY_RESIZE; it ends ACTIVE (or SHUTOFF) as it was. Exit
    codes: 0 done, 1 refused or failed, 2 API unreachable, 3 timed out.
    """
    _run(
        url,
        token,
        server,
        kind="revert",
        verb="revert",
        action=lambda _api: {"revertResize": None},
        wait=wait,
        timeout=timeout,
        poll=poll,
    )


def _table_console() -> Console:
    """The console for tables: a pipe gets them whole, not cut to 80 columns."""
    return console if console.is_terminal else Console(width=max(console.width, 240))


def _addresses(server: dict[str, Any]) -> str:
    parts = []
    for network, addrs in (server.get("addresses") or {}).items():
        ips = ", ".join(str(a.get("addr")) for a in addrs if isinstance(a, dict))
        parts.append(f"{network}: {ips}")
    return "; ".join(parts)


def _last_migration(api: ComputeClient, server_id: str) -> list[tuple[str, str]]:
    """Rows about the server's newest migration, for callers who may read migrations."""
    try:
        migrations = api.migrations(instance_uuid=server_id, limit=1)
    except (ApiError, ApiUnreachable):
        return []
    if not migrations:
        return []
    m = migrations[0]
    route = f"{m.get('source_compute')} -> {m.get('dest_compute') or '?'}"
    rows = [
        (
            "last migration",
            f"{m.get('migration_type')} {m.get('status')} ({route}), {m.get('uuid')}",
        )
    ]
    if m.get("status") in ("error", "failed") and m.get("uuid"):
        wf = _read_workflow(api, f"move-{m['uuid']}")
        fault = (wf or {}).get("fault") or {}
        if fault.get("message"):
            rows.append(("migration error", str(fault["message"])))
    return rows


@server_app.command("show")
def show(
    server: ServerArg,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = DEV_ADMIN_TOKEN,
) -> None:
    """Show a server's main fields (its host and last migration for administrators)."""
    with ComputeClient(url, token) as api:
        try:
            s = api.find_server(server)
        except (ApiError, ApiUnreachable) as exc:
            fail(exc)
        flavor = s.get("flavor") or {}
        image = s.get("image") or {}
        rows: list[tuple[str, Any]] = [
            ("id", s.get("id")),
            ("name", s.get("name")),
            ("status", s.get("status")),
            ("task state", _task(s)),
            ("power state", s.get("OS-EXT-STS:power_state")),
            (
                "flavor",
                f"{_flavor_name(s)} ({flavor.get('vcpus')} vCPU, {flavor.get('ram')} MB RAM, "
                f"{flavor.get('disk')} GB disk)"
                if flavor.get("vcpus") is not None
                else _flavor_name(s),
            ),
            ("image", image.get("id") if isinstance(image, dict) else image or None),
            ("availability zone", s.get("OS-EXT-AZ:availability_zone")),
            ("host", _host(s)),
            ("hypervisor", s.get("OS-EXT-SRV-ATTR:hypervisor_hostname")),
            ("addresses", _addresses(s)),
            ("project", s.get("tenant_id")),
            ("user", s.get("user_id")),
            ("created", s.get("created")),
            ("updated", s.get("updated")),
        ]
        if _fault_text(s):
            rows.append(("fault", _fault_text(s)))
        rows.extend(_last_migration(api, s["id"]))
    table = Table("field", "value", show_header=False)
    for name, value in rows:
        if value is None or value == "":
            continue
        table.add_row(name, escape(str(value)))
    _table_console().print(table)


@server_app.command("list")
def list_servers(
    all_projects: Annotated[
        bool, typer.Option("--all-projects", help="Servers of every project (admin).")
    ] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = DEV_ADMIN_TOKEN,
) -> None:
    """List servers: id, name, status and host (the host only for administrators)."""
    with ComputeClient(url, token) as api:
        try:
            servers = api.servers(all_projects=all_projects)
        except (ApiError, ApiUnreachable) as exc:
            fail(exc)
    table = Table()
    table.add_column("id", no_wrap=True, min_width=36)
    for column in ("name", "status", "flavor", "host"):
        table.add_column(column)
    if all_projects:
        table.add_column("project")
    for s in servers:
        row = [s.get("id"), s.get("name"), s.get("status"), _flavor_name(s), _host(s) or ""]
        if all_projects:
            row.append(s.get("tenant_id"))
        table.add_row(*(escape(str(v)) for v in row))
    _table_console().print(table)
    console.print(f"{len(servers)} server(s)")
