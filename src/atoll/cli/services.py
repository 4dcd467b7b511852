"""`atoll api`, `atoll conductor`, `atoll compute`: one service per process
(distributed mode).  Each reads the same settings as every other command, so one
file describes the deployment; `atoll db sync` and `atoll cell create` come first.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from atoll.cli.options import ConfigOpt, DataDirOpt, LogLevelOpt, setup_logging
from atoll.cli.options import settings as load_settings_for
from atoll.config import Settings

LOG = logging.getLogger(__name__)
console = Console()


def _setup(config: Path | None, data_dir: Path | None, log_level: str) -> Settings:
    from atoll import faults

    setup_logging(log_level)
    settings = load_settings_for(config, data_dir)
    import atoll.compute.manager
    import atoll.conductor.workflows
    import atoll.virt  # noqa: F401  (every fault point is registered before configure)

    faults.configure(settings.faults)
    return settings


def _wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT, so that the service stops cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def conductor(
    name: Annotated[
        str | None,
        typer.Option(
            help="This conductor's name, unique in the deployment: the workflow executor it "
            "runs as, so a restart under the same name resumes its own workflows at once "
            "(default conductor-<hostname>)."
        ),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run a conductor: workflows, scheduling, auto-confirm, the periodic audit.

    Several may run at once; each takes workflows from the shared queue, and one
    takes over the workflows of a conductor silent for timeouts.conductor_takeover
    seconds.
    """
    from atoll import runtime
    from atoll.bus.transport import Transport
    from atoll.conductor.service import ConductorService, default_name

    settings = _setup(config, data_dir, log_level)
    rt = runtime.Runtime(settings)
    runtime.install(rt)
    rt.notifier.attach_transport(Transport(settings.transport_url))
    service = ConductorService(rt, executor_id=name or default_name()).start()
    console.print(f"conductor {service.executor_id} running (workflow DB {settings.workflow_db})")
    try:
        _wait_for_signal()
    finally:
        service.stop()
        rt.notifier.close()
        rt.close()


def compute(
    host: Annotated[str, typer.Option("--host", help="The compute host this process runs.")],
    cell: Annotated[
        str | None,
        typer.Option(
            help="The host's cell, for its default database and transport URLs (the ones "
            "`atoll cell create NAME` uses without --database/--transport)."
        ),
    ] = None,
    cell_db: Annotated[
        str | None, typer.Option("--cell-db", help="The cell DB URL (overrides --cell).")
    ] = None,
    transport_url: Annotated[
        str | None,
        typer.Option("--transport-url", help="The cell transport URL (overrides --cell)."),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run one compute host: its guests, its RPC server, its resource reports.

    It reaches its cell's database and transport, placement and the image service;
    never the API database.
    """
    from atoll.compute.service import ComputeService
    from atoll.placement.service import Placement
    from atoll.services.image import ImageService

    settings = _setup(config, data_dir, log_level)
    if cell_db is None and cell is None:
        raise typer.BadParameter("give --cell, or --cell-db and --transport-url")
    db = cell_db or settings.cell_db_default(str(cell))
    transport = transport_url or settings.transport_url
    if transport.startswith("memory://"):
        raise typer.BadParameter(
            "memory:// only works inside one process; give the cell's --transport-url "
            "(e.g. amqp://guest:guest@127.0.0.1:5672/)",
            param_hint="--transport-url",
        )
    service = ComputeService(
        settings,
        host=host,
        cell_db=db,
        transport_url=transport,
        placement=Placement(settings.placement_db),
        images=ImageService(settings.services_db, settings.data_dir / "images"),
    )
    service.start()
    console.print(f"compute {host} running")
    try:
        _wait_for_signal()
    finally:
        service.stop()


def api(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    host: Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default 8774).")] = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Serve the compute API; workflows are queued for the conductors.

    Start a conductor first: it creates the workflow database's tables.
    """
    import uvicorn

    from atoll import runtime
    from atoll.api.app import create_app
    from atoll.bus.transport import Transport
    from atoll.conductor import engine

    settings = _setup(config, data_dir, log_level)
    rt = runtime.Runtime(settings)
    runtime.install(rt)
    rt.notifier.attach_transport(Transport(settings.transport_url))
    engine.use_client(settings)
    try:
        uvicorn.run(
            create_app(rt),
            host=host or settings.listen_host,
            port=port or settings.listen_port,
            log_level=log_level.lower(),
        )
    finally:
        engine.shutdown()
        rt.notifier.close()
        rt.close()
