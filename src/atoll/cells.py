"""Where things live: cells, hosts and servers, read from the API DB's mappings.

Cell mappings change rarely, so they are cached and refreshed on a miss; the
instance mapping is read every time because it is the one authority on where a
server lives and a move changes it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import select

from atoll.db.api_models import CellMapping, HostMapping, InstanceMapping
from atoll.db.session import session_scope
from atoll.exceptions import NotFound


@dataclass(frozen=True)
class Cell:
    id: int
    uuid: str
    name: str
    db_url: str
    transport_url: str
    disabled: bool


def _cell(row: CellMapping) -> Cell:
    return Cell(
        id=row.id,
        uuid=row.uuid,
        name=row.name,
        db_url=row.database_connection,
        transport_url=row.transport_url,
        disabled=row.disabled,
    )


class CellRegistry:
    def __init__(self, api_db_url: str) -> None:
        self.api_db_url = api_db_url
        self._lock = threading.Lock()
        self._by_id: dict[int, Cell] = {}

    def refresh(self) -> list[Cell]:
        with session_scope(self.api_db_url) as s:
            cells = [_cell(c) for c in s.scalars(select(CellMapping).order_by(CellMapping.id))]
        with self._lock:
            self._by_id = {c.id: c for c in cells}
        return cells

    def all(self) -> list[Cell]:
        with self._lock:
            cells = list(self._by_id.values())
        return cells or self.refresh()

    def by_id(self, cell_id: int) -> Cell:
        with self._lock:
            cell = self._by_id.get(cell_id)
        if cell is None:
            cell = {c.id: c for c in self.refresh()}.get(cell_id)
        if cell is None:
            raise NotFound(f"cell {cell_id} is not mapped")
        return cell

    def by_name(self, name: str) -> Cell:
        for cell in self.all():
            if name in (cell.name, cell.uuid):
                return cell
        for cell in self.refresh():
            if name in (cell.name, cell.uuid):
                return cell
        raise NotFound(f"cell {name!r} does not exist (see `atoll cell list`)")

    def for_host(self, host: str) -> Cell:
        with session_scope(self.api_db_url) as s:
            cell_id = s.scalar(select(HostMapping.cell_id).where(HostMapping.host == host))
        if cell_id is None:
            raise NotFound(f"compute host {host} is not mapped to a cell")
        return self.by_id(cell_id)

    def host_cells(self) -> dict[str, Cell]:
        """Every mapped host and its cell, in one query (the scheduler's view)."""
        with session_scope(self.api_db_url) as s:
            rows = s.execute(select(HostMapping.host, HostMapping.cell_id)).all()
        return {host: self.by_id(cell_id) for host, cell_id in rows}

    def for_instance(self, instance_uuid: str) -> Cell | None:
        """The cell the mapping names, or None while the server is still being built."""
        with session_scope(self.api_db_url) as s:
            mapping = s.scalar(
                select(InstanceMapping).where(InstanceMapping.instance_uuid == instance_uuid)
            )
            if mapping is None:
                raise NotFound(f"Instance {instance_uuid} could not be found.")
            cell_id = mapping.cell_id
        return None if cell_id is None else self.by_id(cell_id)
