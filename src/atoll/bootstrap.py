"""Creating and growing a deployment: databases, cells, hosts and the demo layout.

These are the operations behind `atoll db sync`, `atoll cell create`,
`atoll host add` and the ready-made layout `atoll serve` starts with.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import select

from atoll.cells import Cell, CellRegistry
from atoll.config import Settings
from atoll.db import migrate
from atoll.db.api_models import (
    Aggregate,
    AggregateHost,
    AggregateMetadata,
    CellMapping,
    Flavor,
    HostMapping,
)
from atoll.db.session import session_scope
from atoll.exceptions import Conflict

LOG = logging.getLogger(__name__)

CELL0 = "cell0"

DEMO_FLAVORS = [
    # flavorid, name, vcpus, memory_mb, root_gb, ephemeral_gb
    ("1", "m1.tiny", 1, 512, 1, 0),
    ("2", "m1.small", 1, 2048, 20, 0),
    ("3", "m1.medium", 2, 4096, 40, 0),
]
DEMO_CELLS = {"cell1": ["host1", "host2"], "cell2": ["host3", "host4"]}
DEMO_IMAGE_NAME = "atoll-demo-image"
DEMO_NETWORK = ("private", "192.168.100.0/24")


def sync_databases(settings: Settings) -> list[Cell]:
    """Upgrade every database to the code's schema; map cell0 if it is missing."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade("api", settings.api_db)
    migrate.upgrade("placement", settings.placement_db)
    migrate.upgrade("services", settings.services_db)
    registry = CellRegistry(settings.api_db)
    if not any(c.name == CELL0 for c in registry.refresh()):
        create_cell(settings, CELL0, transport_url="none:///")
    cells = registry.refresh()
    for cell in cells:
        migrate.upgrade("cell", cell.db_url)
    return cells


def create_cell(
    settings: Settings,
    name: str,
    *,
    db_url: str | None = None,
    transport_url: str | None = None,
) -> Cell:
    db_url = db_url or settings.cell_db_default(name)
    with session_scope(settings.api_db) as s:
        if s.scalar(select(CellMapping).where(CellMapping.name == name)) is not None:
            raise Conflict(f"cell {name!r} already exists")
    migrate.upgrade("cell", db_url)
    with session_scope(settings.api_db) as s:
        s.add(
            CellMapping(
                name=name,
                database_connection=db_url,
                transport_url=transport_url or settings.transport_url,
            )
        )
    LOG.info("created cell %s", name)
    return CellRegistry(settings.api_db).by_name(name)


def add_host(settings: Settings, host: str, cell_name: str) -> None:
    cell = CellRegistry(settings.api_db).by_name(cell_name)
    if cell.name == CELL0:
        raise Conflict("cell0 holds servers that could not be scheduled; it has no hosts")
    with session_scope(settings.api_db) as s:
        existing = s.scalar(select(HostMapping).where(HostMapping.host == host))
        if existing is not None:
            if existing.cell_id == cell.id:
                return
            raise Conflict(f"host {host} is already mapped to another cell")
        s.add(HostMapping(host=host, cell_id=cell.id))


def create_flavor(
    settings: Settings,
    flavorid: str,
    name: str,
    vcpus: int,
    memory_mb: int,
    root_gb: int,
    ephemeral_gb: int = 0,
) -> None:
    with session_scope(settings.api_db) as s:
        s.add(
            Flavor(
                flavorid=flavorid,
                name=name,
                vcpus=vcpus,
                memory_mb=memory_mb,
                root_gb=root_gb,
                ephemeral_gb=ephemeral_gb,
            )
        )


def create_zone_aggregate(settings: Settings, name: str, zone: str, hosts: list[str]) -> None:
    with session_scope(settings.api_db) as s:
        agg = Aggregate(name=name)
        agg.hosts = [AggregateHost(host=h) for h in hosts]
        agg.metadata_items = [AggregateMetadata(key="availability_zone", value=zone)]
        s.add(agg)


def is_empty(settings: Settings) -> bool:
    """True for a deployment with no cell but cell0 (a fresh data directory)."""
    return all(c.name == CELL0 for c in CellRegistry(settings.api_db).refresh())


def make_demo_image_file(path: Path, size_mb: int = 4) -> Path:
    """A small raw disk with a recognisable header, standing in for a cloud image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(b"ATOLL-DEMO-IMAGE\n")
        fh.truncate(size_mb * 1024 * 1024)
    return path


def demo_layout(settings: Settings, runtime: object) -> dict[str, str]:
    """2 cells x 2 hosts, an AZ per cell, three flavors, one image, one network."""
    return layout(settings, runtime, DEMO_CELLS)


def layout(settings: Settings, runtime: object, cells: dict[str, list[str]]) -> dict[str, str]:
    """Cells with their hosts (an AZ per cell), the demo flavors, image and network."""
    for cell_name, hosts in cells.items():
        create_cell(settings, cell_name)
        for host in hosts:
            add_host(settings, host, cell_name)
        create_zone_aggregate(settings, f"{cell_name}-zone", cell_name, hosts)
    for flavor in DEMO_FLAVORS:
        create_flavor(settings, *flavor)
    images = runtime.images  # type: ignore[attr-defined]
    networks = runtime.networks  # type: ignore[attr-defined]
    image = images.create(DEMO_IMAGE_NAME, min_disk=1, owner=None)
    source = make_demo_image_file(settings.data_dir / "demo-image.raw")
    images.upload(image["id"], source)
    os.unlink(source)
    network = networks.create_network(DEMO_NETWORK[0], DEMO_NETWORK[1])
    LOG.info(
        "demo layout ready: cells %s, image %s, network %s",
        ", ".join(DEMO_CELLS),
        image["id"],
        network["id"],
    )
    return {"image_id": image["id"], "network_id": network["id"]}
