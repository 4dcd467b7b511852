"""A running compute host: its driver, its RPC server and its periodic reports.

The compute reaches only its own cell DB, its cell's transport and placement
(the resource tracker reports inventory there); never the API DB.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select

from atoll.bus.rpc import RpcServer
from atoll.bus.transport import Transport
from atoll.compute.manager import RPC_METHODS, ComputeManager
from atoll.compute.rpcapi import topic_for
from atoll.config import Settings
from atoll.db.cell_models import ComputeNode, Instance, Service
from atoll.db.session import session_scope
from atoll.db.types import utcnow
from atoll.placement.service import Inventory, Placement
from atoll.services.image import ImageService
from atoll.virt import load_driver

LOG = logging.getLogger(__name__)

COMPUTE_BINARY = "nova-compute"


class ComputeService:
    def __init__(
        self,
        settings: Settings,
        *,
        host: str,
        cell_db: str,
        transport_url: str,
        placement: Placement,
        images: ImageService,
        driver_name: str = "sim",
    ) -> None:
        self.settings = settings
        self.host = host
        self.cell_db = cell_db
        self.placement = placement
        self.driver = load_driver(driver_name, host, settings.hosts_dir / host, settings.sim)
        self.manager = ComputeManager(host, cell_db, self.driver, images)
        self.transport = Transport(transport_url, settings.bus_polling_interval)
        self.server = RpcServer(
            self.transport,
            topic_for(host),
            self.manager,
            RPC_METHODS,
            fault_context={"host": host},
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.node_uuid: str | None = None

    def start(self) -> None:
        self.driver.init_host()
        self.reconcile()
        self.report()
        self.server.start()
        self._thread = threading.Thread(
            target=self._periodic, name=f"compute-{self.host}", daemon=True
        )
        self._thread.start()
        LOG.info("compute %s started", self.host)

    def reconcile(self) -> list[str]:
        """At start-up, ask the cell DB about every guest and kept disk on this host.

        A compute that died mid-operation does not guess what its caller wanted:
        work still wanted is asked for again (every call is retried, and idempotent),
        and what the workflow undid or abandoned meanwhile is known by the record
        the conductor keeps.  A guest or a set of kept disks whose server has no
        live row in this cell (not even a hidden copy of a move) belongs to nobody
        any more: it goes.  Returns the uuids cleaned up.
        """
        local = set(self.driver.list_guests()) | set(self.driver.list_kept_disks())
        if not local:
            return []
        with session_scope(self.cell_db) as s:
            live = set(
                s.scalars(
                    select(Instance.uuid).where(Instance.uuid.in_(local), Instance.deleted == 0)
                )
            )
        cleaned = sorted(local - live)
        for uuid_ in cleaned:
            LOG.warning(
                "compute %s: no server in the cell owns %s any more; removing its guest and "
                "kept disks left by an interrupted operation",
                self.host,
                uuid_,
            )
            if self.driver.guest_exists(uuid_):
                self.driver.destroy(uuid_)
            self.driver.delete_kept_disks(uuid_)
        return cleaned

    def stop(self) -> None:
        self._stop.set()
        self.server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _periodic(self) -> None:
        while not self._stop.wait(self.settings.report_interval):
            try:
                self.report()
            except Exception:
                LOG.exception("compute %s could not report its resources", self.host)

    def report(self) -> None:
        """Heartbeat, compute node usage and placement inventory, in one pass."""
        res = self.driver.get_available_resources()
        now = utcnow()
        with session_scope(self.cell_db) as s:
            service = s.scalar(
                select(Service).where(
                    Service.host == self.host,
                    Service.binary == COMPUTE_BINARY,
                    Service.deleted == 0,
                )
            )
            if service is None:
                service = Service(host=self.host, binary=COMPUTE_BINARY, topic="compute")
                s.add(service)
                s.flush()
            service.last_seen_up = now
            service.report_count = (service.report_count or 0) + 1
            node = s.scalar(
                select(ComputeNode).where(ComputeNode.host == self.host, ComputeNode.deleted == 0)
            )
            if node is None:
                node = ComputeNode(
                    host=self.host, hypervisor_hostname=self.host, service_id=service.id
                )
                s.add(node)
            node.hypervisor_type = res.get("hypervisor_type", "sim")
            node.vcpus = res["vcpus"]
            node.memory_mb = res["memory_mb"]
            node.local_gb = res["local_gb"]
            node.vcpus_used = res["vcpus_used"]
            node.memory_mb_used = res["memory_mb_used"]
            node.local_gb_used = res["local_gb_used"]
            node.running_vms = res["running_vms"]
            s.flush()
            self.node_uuid = node.uuid
        p = self.settings.placement
        self.placement.ensure_provider(
            self.node_uuid,
            self.host,
            {
                "VCPU": Inventory(
                    total=res["vcpus"],
                    reserved=p.reserved_host_cpus,
                    allocation_ratio=p.cpu_allocation_ratio,
                ),
                "MEMORY_MB": Inventory(
                    total=res["memory_mb"],
                    reserved=p.reserved_host_memory_mb,
                    allocation_ratio=p.ram_allocation_ratio,
                ),
                "DISK_GB": Inventory(
                    total=res["local_gb"],
                    reserved=p.reserved_host_disk_gb,
                    allocation_ratio=p.disk_allocation_ratio,
                ),
            },
        )
