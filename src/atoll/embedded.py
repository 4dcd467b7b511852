"""Embedded mode: every service in one process, on SQLite and memory://.

Start order matters: computes first (a workflow recovered at launch may call
them), then the workflow engine, then the API.  Stop in reverse.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI

from atoll import bootstrap, faults, runtime
from atoll.bus.transport import Transport
from atoll.compute.service import ComputeService
from atoll.conductor.service import ConductorService
from atoll.config import Settings

LOG = logging.getLogger(__name__)


class Embedded:
    def __init__(
        self,
        settings: Settings,
        *,
        demo: bool = True,
        cells: dict[str, list[str]] | None = None,
    ) -> None:
        self.settings = settings
        self.demo = demo
        self.cells = cells or bootstrap.DEMO_CELLS
        self.runtime: runtime.Runtime | None = None
        self.computes: dict[str, ComputeService] = {}
        self.demo_info: dict[str, Any] = {}
        self.conductor: ConductorService | None = None

    def start(self) -> Embedded:
        settings = self.settings
        import atoll.compute.manager
        import atoll.conductor.workflows
        import atoll.virt  # noqa: F401

        faults.configure(settings.faults)
        bootstrap.sync_databases(settings)
        rt = runtime.Runtime(settings)
        runtime.install(rt)
        rt.notifier.attach_transport(Transport(settings.transport_url))
        self.runtime = rt
        if self.demo and bootstrap.is_empty(settings):
            self.demo_info = bootstrap.layout(settings, rt, self.cells)
        for host in sorted(rt.cells.host_cells()):
            self.start_compute(host)
        self.conductor = ConductorService(rt).start()
        LOG.info(
            "atoll embedded: %d cells, %d computes", len(rt.cells.refresh()), len(self.computes)
        )
        return self

    def start_compute(self, host: str) -> ComputeService:
        rt = self.runtime
        assert rt is not None
        cell = rt.cells.for_host(host)
        service = ComputeService(
            self.settings,
            host=host,
            cell_db=cell.db_url,
            transport_url=cell.transport_url,
            placement=rt.placement,
            images=rt.images,
        )
        service.start()
        self.computes[host] = service
        return service

    def stop_compute(self, host: str) -> None:
        service = self.computes.pop(host, None)
        if service is not None:
            service.stop()

    def app(self) -> FastAPI:
        from atoll.api.app import create_app

        assert self.runtime is not None
        app = create_app(self.runtime)
        if self.conductor is not None:
            app.state.audit_counters = self.conductor.periodic.audit_counters
        return app

    def stop(self) -> None:
        try:
            if self.conductor is not None:
                self.conductor.stop()
        finally:
            for host in list(self.computes):
                self.stop_compute(host)
            if self.runtime is not None:
                self.runtime.notifier.close()
                self.runtime.close()
            from atoll.db.session import dispose_all

            dispose_all()
