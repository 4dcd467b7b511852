"""The objects one atoll process shares: settings, cells, placement, services, RPC.

Built once per process (embedded: one for everything; distributed: one per
service process) and reached by workflow steps through ``current()``, because
DBOS workflow functions are module-level and cannot be handed live objects.
"""

from __future__ import annotations

import threading
from functools import cached_property

from atoll.bus.rpc import RpcClient
from atoll.bus.transport import Transport
from atoll.cells import Cell, CellRegistry
from atoll.compute.rpcapi import ComputeAPI
from atoll.config import Settings
from atoll.notifications import Notifier
from atoll.placement.service import Placement
from atoll.services.image import ImageService
from atoll.services.network import NetworkService
from atoll.services.volume import VolumeService


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cells = CellRegistry(settings.api_db)
        self.notifier = Notifier()
        self._rpc_lock = threading.Lock()
        self._rpc: dict[str, RpcClient] = {}

    @cached_property
    def placement(self) -> Placement:
        return Placement(self.settings.placement_db)

    @cached_property
    def images(self) -> ImageService:
        return ImageService(self.settings.services_db, self.settings.data_dir / "images")

    @cached_property
    def volumes(self) -> VolumeService:
        return VolumeService(self.settings.services_db)

    @cached_property
    def networks(self) -> NetworkService:
        return NetworkService(self.settings.services_db)

    @cached_property
    def scheduler(self):  # type: ignore[no-untyped-def]
        from atoll.scheduler.manager import Scheduler

        return Scheduler(self.settings.api_db, self.cells, self.placement, self.settings)

    def rpc_for(self, cell: Cell) -> RpcClient:
        with self._rpc_lock:
            client = self._rpc.get(cell.transport_url)
            if client is None:
                transport = Transport(cell.transport_url, self.settings.bus_polling_interval)
                client = RpcClient(
                    transport,
                    self.settings.timeouts.rpc_call,
                    retries=self.settings.timeouts.rpc_retries,
                )
                self._rpc[cell.transport_url] = client
            return client

    def compute(self, cell: Cell) -> ComputeAPI:
        return ComputeAPI(self.rpc_for(cell))

    def close(self) -> None:
        with self._rpc_lock:
            for client in self._rpc.values():
                client.close()
            self._rpc.clear()


_current: Runtime | None = None


def install(runtime: Runtime) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("no atoll runtime in this process (start a service first)")
    return _current
