"""`atoll`: run services and operate a deployment.

Every command reads the same settings (``--config`` / ``ATOLL_CONFIG`` /
``ATOLL_*``), so one file describes a deployment for all of them.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from atoll.cli import options, services
from atoll.cli.options import ConfigOpt, DataDirOpt
from atoll.cli.server import server_app

app = typer.Typer(
    help="atoll: a multi-cell compute control plane speaking the compute API.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema and maintenance.", no_args_is_help=True)
cell_app = typer.Typer(help="Cells: create and list them.", no_args_is_help=True)
host_app = typer.Typer(help="Compute hosts: map them to cells.", no_args_is_help=True)
faults_app = typer.Typer(help="Named fault points for tests and drills.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(cell_app, name="cell")
app.add_typer(host_app, name="host")
app.add_typer(faults_app, name="faults")
app.add_typer(server_app, name="server")
app.command("api")(services.api)
app.command("conductor")(services.conductor)
app.command("compute")(services.compute)

console = Console()
err = Console(stderr=True)

_settings = options.settings
_logging = options.setup_logging


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def demo_layout(cells: int, hosts: int) -> dict[str, list[str]]:
    return {
        f"cell{c}": [f"host{(c - 1) * hosts + h}" for h in range(1, hosts + 1)]
        for c in range(1, cells + 1)
    }


@app.command()
def serve(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    host: Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default 8774).")] = None,
    demo: Annotated[
        bool, typer.Option(help="Create the demo layout in an empty deployment.")
    ] = True,
    demo_cells: Annotated[int, typer.Option(help="Cells in the demo layout.", min=1)] = 2,
    demo_hosts: Annotated[int, typer.Option(help="Hosts per cell in the demo layout.", min=1)] = 2,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run every service in this process (embedded mode) and serve the compute API."""
    import uvicorn

    from atoll.embedded import Embedded

    _logging(log_level)
    settings = _settings(config, data_dir)
    if host:
        settings.listen_host = host
    if port:
        settings.listen_port = port
    embedded = Embedded(settings, demo=demo, cells=demo_layout(demo_cells, demo_hosts)).start()
    try:
        console.print(
            f"atoll serving the compute API on http://{settings.listen_host}:"
            f"{settings.listen_port}/v2.1 (data in {settings.data_dir.resolve()})"
        )
        console.print(
            "token for admin: [bold]dev:admin:admin:admin[/bold]; "
            "for a user: [bold]dev:alice:demo[/bold]"
        )
        uvicorn.run(
            embedded.app(),
            host=settings.listen_host,
            port=settings.listen_port,
            log_level=log_level.lower(),
        )
    finally:
        embedded.stop()


@db_app.command("sync")
def db_sync(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    demo: Annotated[
        bool,
        typer.Option(
            help="Also create the demo layout (cells, hosts, flavors, image, network) when the "
            "deployment is empty; cells get the transport_url setting."
        ),
    ] = False,
    demo_cells: Annotated[int, typer.Option(help="Cells in the demo layout.", min=1)] = 2,
    demo_hosts: Annotated[int, typer.Option(help="Hosts per cell in the demo layout.", min=1)] = 2,
) -> None:
    """Create or upgrade every database (API, placement, services, each cell)."""
    from atoll import bootstrap, runtime

    settings = _settings(config, data_dir)
    cells = bootstrap.sync_databases(settings)
    console.print(f"databases up to date ({len(cells)} cells)")
    if demo and bootstrap.is_empty(settings):
        rt = runtime.Runtime(settings)
        info = bootstrap.layout(settings, rt, demo_layout(demo_cells, demo_hosts))
        rt.close()
        console.print(f"demo layout created: image {info['image_id']}")


@db_app.command("archive")
def db_archive(
    max_rows: Annotated[
        int,
        typer.Option(
            "--max-rows",
            min=1,
            help="Rows to move per cell in one pass (one transaction per batch of at most "
            "200 servers or rows, each with what belongs to it).",
        ),
    ] = 1000,
    before: Annotated[
        str | None,
        typer.Option(
            "--before",
            help="Only rows deleted before this time: ISO 8601, e.g. 2026-01-31 or "
            "2026-01-31T12:00:00+02:00 (UTC when no zone is given).",
        ),
    ] = None,
    until_complete: Annotated[
        bool,
        typer.Option(
            "--until-complete",
            help="Repeat passes of --max-rows until nothing is left to archive.",
        ),
    ] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Move soft-deleted rows of every cell to their shadow tables.

    A deleted server goes with its actions and their events, faults, block
    device mappings, interfaces and migrations; then every other soft-deleted
    row (deleted services, compute nodes, ...).  Afterwards the API database
    forgets servers no cell holds any more (instance mappings, request specs,
    group memberships).  Prints the rows moved per cell and table.

    Exits 0 when done, 1 when a cell's database did not answer (it was skipped;
    the other cells were archived), 2 on a bad option, 3 when the API database
    did not answer.
    """
    from rich.markup import escape
    from sqlalchemy.exc import SQLAlchemyError

    from atoll.db.archive import archive_all, parse_before

    try:
        cutoff = parse_before(before) if before else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--before") from None
    settings = _settings(config, data_dir)
    try:
        result = archive_all(
            settings, max_rows=max_rows, before=cutoff, until_complete=until_complete
        )
    except SQLAlchemyError as exc:
        _fail(f"the API database did not answer: {escape(str(exc).splitlines()[0])}", code=3)
    table = Table("cell", "table", "rows moved")
    for cell_name, counts in result.items():
        for name, count in counts.items():
            table.add_row(cell_name, name, str(count))
    for cell_name in result.down:
        reason = escape(result.errors.get(cell_name, ""))
        table.add_row(cell_name, f"[red]unreachable: skipped[/red] {reason}", "-")
    for name, count in result.api.items():
        table.add_row("(API DB)", f"{name} (deleted)", str(count))
    if table.row_count:
        console.print(table)
    total = result.total
    if total == 0 and not result.api:
        console.print("nothing to archive")
    else:
        cells = sum(1 for counts in result.values() if counts)
        console.print(f"{total} rows moved to shadow tables in {cells} cell(s)")
    if not result.complete:
        console.print(
            f"more rows remain (a cell reached --max-rows {max_rows}); run again or "
            "use --until-complete"
        )
    if result.down:
        _fail(f"cell(s) {', '.join(result.down)} did not answer and were not archived")


@cell_app.command("create")
def cell_create(
    name: str,
    database: Annotated[str | None, typer.Option(help="The cell DB URL.")] = None,
    transport: Annotated[str | None, typer.Option(help="The cell transport URL.")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a cell: migrate its database and map it in the API DB."""
    from atoll import bootstrap
    from atoll.exceptions import AtollError

    settings = _settings(config, data_dir)
    bootstrap.sync_databases(settings)
    try:
        cell = bootstrap.create_cell(settings, name, db_url=database, transport_url=transport)
    except AtollError as exc:
        _fail(exc.message)
    console.print(f"created cell {cell.name} ({cell.uuid})")


@cell_app.command("list")
def cell_list(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """List cells with their database and transport (passwords hidden)."""
    from atoll.bus.rpc import _redact
    from atoll.cells import CellRegistry

    settings = _settings(config, data_dir)
    table = Table("name", "uuid", "database", "transport", "disabled")
    for cell in CellRegistry(settings.api_db).refresh():
        table.add_row(
            cell.name,
            cell.uuid,
            _redact(cell.db_url),
            _redact(cell.transport_url),
            str(cell.disabled),
        )
    console.print(table)


@host_app.command("add")
def host_add(
    host: str,
    cell: Annotated[str, typer.Option("--cell", help="The cell the host belongs to.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Map a compute host to a cell (the compute registers itself when it starts)."""
    from atoll import bootstrap
    from atoll.exceptions import AtollError

    try:
        bootstrap.add_host(_settings(config, data_dir), host, cell)
    except AtollError as exc:
        _fail(exc.message)
    console.print(f"host {host} mapped to {cell}")


@host_app.command("list")
def host_list(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """List host mappings."""
    from atoll.cells import CellRegistry

    table = Table("host", "cell")
    for host, cell in sorted(CellRegistry(_settings(config, data_dir).api_db).host_cells().items()):
        table.add_row(host, cell.name)
    console.print(table)


@faults_app.command("list")
def faults_list() -> None:
    """Print every named fault point and the actions it accepts."""
    import atoll.compute.manager
    import atoll.conductor.periodic
    import atoll.conductor.workflows
    import atoll.virt  # noqa: F401  (registers hypervisor points)
    from atoll import faults

    points = faults.registered()
    width = max(len(p.name) for p in points)
    for point in points:
        typer.echo(f"{point.name:<{width}}  {point.description}")
    console.print(
        "actions: raise[:Error[:message]], hang:<seconds>, kill, drop_reply, "
        "duplicate_reply; suffix @N (Nth hit) or *N (first N hits); ;host=<h> filter"
    )


AdminUrlOpt = Annotated[str, typer.Option(help="The atoll API to ask.")]
AdminTokenOpt = Annotated[str, typer.Option(help="An admin token.", envvar="ATOLL_TOKEN")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the raw report.")]


def _admin_call(method: str, url: str, path: str, token: str, **kw: Any) -> dict[str, Any]:
    """One atoll-admin request; exits 2 when the API cannot be reached or refuses."""
    import httpx

    try:
        resp = httpx.request(
            method,
            f"{url.rstrip('/')}/v2.1/atoll-admin/{path}",
            headers={"X-Auth-Token": token},
            timeout=120,
            **kw,
        )
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {exc}", code=2)
    if resp.status_code != 200:
        _fail(f"{url} answered {resp.status_code}: {resp.text}", code=2)
    return resp.json()


@app.command()
def audit(
    url: AdminUrlOpt = "http://127.0.0.1:8774",
    token: AdminTokenOpt = "dev:admin:admin:admin",
    as_json: JsonOpt = False,
) -> None:
    """Check every invariant (allocations, guests, attachments, bindings, copies).

    The "heal" column says whether `atoll heal` has a repair for that kind of
    problem.  Exits 1 when anything is breached, 2 when the API cannot be reached.
    """
    import json

    report = _admin_call("GET", url, "audit", token)
    if as_json:
        console.print_json(json.dumps(report))
    else:
        checked = ", ".join(f"{k} {v}" for k, v in report["checked"].items())
        if report["clean"]:
            console.print(f"[green]clean[/green] ({checked})")
        else:
            table = Table("kind", "resource", "detail", "heal")
            for problem in report["problems"]:
                table.add_row(
                    problem["kind"],
                    problem["resource"],
                    problem["detail"],
                    "yes" if problem.get("repairable") else "no",
                )
            console.print(table)
            console.print(f"[red]{len(report['problems'])} problem(s)[/red] ({checked})")
    if not report["clean"]:
        raise typer.Exit(1)


@app.command()
def heal(
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Only say what would be repaired; change nothing.",
        ),
    ] = False,
    url: AdminUrlOpt = "http://127.0.0.1:8774",
    token: AdminTokenOpt = "dev:admin:admin:admin",
    as_json: JsonOpt = False,
) -> None:
    """Repair what the audit finds, where that is safe; list what needs a human.

    Safe repairs: allocations of consumers that are no live server or unfinished
    migration are deleted; a live server's wrong, misplaced or missing allocation
    is rewritten to its flavor on its host; hidden copies left behind by a move
    are hard-deleted (only when the mapped cell holds the server); temporary
    snapshot images of finished moves are deleted; guests of no server are
    destroyed; stale volume attachments and port bindings (no live server, or a
    host that is neither the server's nor its move's) are deleted; an inactive
    binding on a server's own host is activated.

    Never touched: anything of a move in flight (unfinished migration), of a
    server a workflow is busy with, or anything at all while a cell database
    cannot be read.  After repairing, heal audits again and lists what is left,
    each with why a human is needed.

    Exits 0 when the deployment is clean afterwards (or there was nothing to do;
    with --dry-run: when every problem has a repair), 1 when something needs a
    human, 2 when the API cannot be reached.
    """
    import json

    from rich.markup import escape

    body = _admin_call("POST", url, "heal", token, json={"dry_run": dry_run})
    result = body["heal"]
    if as_json:
        console.print_json(json.dumps(body))
    else:
        _print_heal(result, escape)
    if not result["clean_after"]:
        raise typer.Exit(1)


def _print_heal(result: dict[str, Any], escape: Any) -> None:
    """Two tables: what was (or would be) repaired, and what needs a human."""
    verb = "would repair" if result["dry_run"] else "repaired"
    if result["repaired"]:
        table = Table("kind", "resource", "action", title=verb)
        for item in result["repaired"]:
            table.add_row(item["kind"], item["resource"], escape(item["action"]))
        console.print(table)
    if result["needs_human"]:
        table = Table("kind", "resource", "detail", "why", title="needs a human")
        for item in result["needs_human"]:
            table.add_row(
                item["kind"], item["resource"], escape(item["detail"]), escape(item["why"])
            )
        console.print(table)
    summary = f"{len(result['repaired'])} {verb}, {len(result['needs_human'])} need a human"
    if not result["repaired"] and not result["needs_human"]:
        console.print("[green]clean[/green]: nothing to repair")
    elif result["clean_after"]:
        after = "would be clean" if result["dry_run"] else "clean"
        console.print(f"[green]{after} after healing[/green] ({summary})")
    else:
        console.print(f"[red]not clean after healing[/red] ({summary})")


def main() -> None:  # pragma: no cover - console script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
