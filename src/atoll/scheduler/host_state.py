"""The scheduler's view of every compute host, read fresh for each request.

One ``read()`` costs one query per cell (its compute services joined with their
compute nodes, only the columns the filters need), one query for host zones and
one placement capacity snapshot.  A cell whose database cannot be reached is
skipped with a warning so that the other cells keep scheduling.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.exc import SQLAlchemyError

from atoll.availability_zones import DEFAULT_ZONE, host_zones
from atoll.cells import Cell, CellRegistry
from atoll.config import Settings
from atoll.db.api_models import InstanceGroup, InstanceGroupMember, InstanceMapping
from atoll.db.cell_models import ComputeNode, Instance, Service
from atoll.db.session import get_engine
from atoll.db.types import utcnow
from atoll.exceptions import CellUnavailable, NotFound

if TYPE_CHECKING:
    from atoll.placement.service import Placement, ProviderCapacity

LOG = logging.getLogger(__name__)

COMPUTE_BINARY = "nova-compute"

# Errors that mean "this cell's database is not answering" rather than a bug here.
CELL_DB_ERRORS = (SQLAlchemyError, OSError, ImportError)

_POOL_SIZE = 8  # threads reading remote cells at once (more cells simply queue)
_POOL_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Room:
    """A provider's room, derived once per provider generation and shared by reads.

    ``largest`` is what one allocation may take per resource class: the free
    amount, capped by max_unit.  With ``plain_units`` (min_unit 1 and step_size 1
    for every class, the usual case) comparing against ``largest`` is the whole
    check; otherwise the provider's own ``fits`` decides.
    """

    provider: ProviderCapacity
    free: dict[str, int]
    largest: dict[str, int]
    plain_units: bool

    @classmethod
    def of(cls, pc: ProviderCapacity) -> Room:
        free = {rc: cap - pc.used.get(rc, 0) for rc, cap in pc.capacity.items()}
        return cls(
            provider=pc,
            free=free,
            largest={rc: min(f, pc.max_unit.get(rc, f)) for rc, f in free.items()},
            plain_units=all(v == 1 for v in pc.min_unit.values())
            and all(v == 1 for v in pc.step_size.values()),
        )

    def fits(self, wanted: Iterable[tuple[str, int]]) -> bool:
        if not self.plain_units:
            return self.provider.fits(dict(wanted))
        largest = self.largest
        for rc, amount in wanted:  # noqa: SIM110 (a plain loop beats all() + generator here)
            if largest.get(rc, -1) < amount:
                return False
        return True


@dataclass(slots=True)
class HostState:
    """One compute node as the filters and weighers see it.

    ``room`` comes from the node's placement provider as of this read (None when
    the node has no provider yet, which no resource request fits).
    """

    host: str
    node: str
    cell: Cell
    provider_uuid: str
    availability_zone: str | None  # None when read without zones
    service_disabled: bool
    forced_down: bool
    is_up: bool
    room: Room | None = None

    @property
    def cell_name(self) -> str:
        return self.cell.name

    @property
    def capacity(self) -> ProviderCapacity | None:
        return self.room.provider if self.room else None

    @property
    def total(self) -> dict[str, int]:
        """Capacity per resource class: (total - reserved) x allocation ratio."""
        return dict(self.room.provider.capacity) if self.room else {}

    @property
    def used(self) -> dict[str, int]:
        return dict(self.room.provider.used) if self.room else {}

    @property
    def free(self) -> dict[str, int]:
        return dict(self.room.free) if self.room else {}

    def free_of(self, resource_class: str) -> int:
        return self.room.free.get(resource_class, 0) if self.room else 0

    def fits(self, resources: dict[str, int]) -> bool:
        return self.room is not None and self.room.fits(resources.items())


# Only the columns the filters need.  Whether the service is up is decided in SQL
# (its last heartbeat, or its creation when it never reported, against a bound
# cut-off) so that no timestamp is parsed per row in Python.
_SINCE = bindparam("since", type_=Service.last_seen_up.type)
_SERVICE_NODE_QUERY = (
    select(
        Service.host,
        Service.disabled,
        Service.forced_down,
        (func.coalesce(Service.last_seen_up, Service.created_at) >= _SINCE).label("recent"),
        ComputeNode.hypervisor_hostname,
        ComputeNode.uuid,
    )
    .join(ComputeNode, and_(ComputeNode.host == Service.host, ComputeNode.deleted == 0))
    .where(Service.binary == COMPUTE_BINARY, Service.deleted == 0)
)


class HostStateReader:
    def __init__(
        self,
        api_db_url: str,
        cells: CellRegistry,
        placement: Placement,
        settings: Settings,
        default_zone: str = DEFAULT_ZONE,
    ) -> None:
        self.api_db_url = api_db_url
        self.cells = cells
        self.placement = placement
        self.settings = settings
        self.default_zone = default_zone
        # provider uuid -> Room of the ProviderCapacity object it was derived from;
        # placement shares unchanged ProviderCapacity objects between snapshots
        self._rooms: dict[str, Room | None] = {}
        self._executor: ThreadPoolExecutor | None = None

    # -- host states ---------------------------------------------------------------

    def read(
        self, cells: Iterable[Cell] | None = None, *, with_zones: bool = True
    ) -> list[HostState]:
        """Every compute node of ``cells`` (default: every enabled cell).

        ``with_zones=False`` skips the zone query and leaves ``availability_zone``
        None (the scheduler then looks up only the hosts it selects).
        """
        if cells is None:
            cells = [c for c in self.cells.all() if not c.disabled]
        since = utcnow() - dt.timedelta(seconds=self.settings.timeouts.service_down_after)
        rows_by_cell = self._read_cells(list(cells), since)
        if not rows_by_cell:
            return []
        zones = host_zones(self.api_db_url, self.default_zone) if with_zones else None
        snapshot = self.placement.capacity_snapshot()
        rooms = self._rooms
        if len(rooms) > 2 * len(snapshot) + 16:  # providers were deleted
            self._rooms = rooms = {u: r for u, r in rooms.items() if u in snapshot}
        states: list[HostState] = []
        append = states.append
        for cell, rows in rows_by_cell:
            for host, disabled, forced_down, recent, node, node_uuid in rows:
                pc = snapshot.get(node_uuid)
                room = rooms.get(node_uuid)
                if room is None or room.provider is not pc:
                    room = rooms[node_uuid] = Room.of(pc) if pc is not None else None
                append(
                    HostState(
                        host,
                        node,
                        cell,
                        node_uuid,
                        zones[host] if zones is not None else None,
                        disabled,
                        forced_down,
                        bool(recent) and not forced_down,
                        room,
                    )
                )
        return states

    def _read_cells(self, cells: list[Cell], since: dt.datetime) -> list[tuple[Cell, list]]:
        """Each cell's services joined with compute nodes; unreachable cells left out.

        Cells on database servers are queried in parallel, each bounded by
        ``timeouts.db_connect``, so that one slow or dead cell neither adds up
        with the others nor holds scheduling longer than that.  SQLite cells are
        read in this thread: for local files threads only add GIL hand-offs.
        """
        remote = [c for c in cells if not c.db_url.startswith("sqlite")]
        futures = {}
        if remote and len(cells) > 1:
            pool = self._pool()
            futures = {c.id: pool.submit(self._read_cell, c, since) for c in remote}
        timeout = self.settings.timeouts.db_connect
        out: list[tuple[Cell, list]] = []
        for cell in cells:
            try:
                future = futures.get(cell.id)
                if future is None:
                    rows = self._read_cell(cell, since)
                else:
                    rows = future.result(timeout=timeout)
            except FutureTimeout:
                LOG.warning(
                    "Cell %s is unreachable, its hosts are not scheduled to: no answer in %ss",
                    cell.name,
                    timeout,
                )
                continue
            except CELL_DB_ERRORS as exc:
                LOG.warning(
                    "Cell %s is unreachable, its hosts are not scheduled to: %s",
                    cell.name,
                    _short(exc),
                )
                continue
            out.append((cell, rows))
        return out

    def _read_cell(self, cell: Cell, since: dt.datetime) -> list:
        engine = get_engine(cell.db_url, connect_timeout=self.settings.timeouts.db_connect)
        with engine.connect() as conn:
            return conn.execute(_SERVICE_NODE_QUERY, {"since": since}).all()

    def _pool(self) -> ThreadPoolExecutor:
        with _POOL_LOCK:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=_POOL_SIZE, thread_name_prefix="scheduler-cell-read"
                )
            return self._executor

    # -- server groups ---------------------------------------------------------------

    def group_hosts(self, group_uuid: str, *, exclude: Iterable[str] = ()) -> tuple[str, set[str]]:
        """The group's policy and the hosts of its members, across every cell.

        ``exclude`` names members to leave out (the server being scheduled, so a
        move is not held to the host it is leaving).  Members still being built
        (no cell yet), deleted or hidden copies do not count.  A cell that cannot
        be read is skipped with a warning, except for an ``affinity`` group, whose
        one allowed host may be in that cell: then CellUnavailable is raised.
        """
        excluded = set(exclude)
        with get_engine(self.api_db_url).connect() as conn:
            policy = conn.execute(
                select(InstanceGroup.policy).where(InstanceGroup.uuid == group_uuid)
            ).scalar()
            if policy is None:
                raise NotFound(f"Instance group {group_uuid} could not be found.")
            mapped = conn.execute(
                select(InstanceMapping.instance_uuid, InstanceMapping.cell_id)
                .join(
                    InstanceGroupMember,
                    InstanceGroupMember.instance_uuid == InstanceMapping.instance_uuid,
                )
                .join(InstanceGroup, InstanceGroup.id == InstanceGroupMember.group_id)
                .where(InstanceGroup.uuid == group_uuid, InstanceMapping.cell_id.is_not(None))
            ).all()
        members_by_cell: dict[int, list[str]] = {}
        for instance_uuid, cell_id in mapped:
            if instance_uuid not in excluded:
                members_by_cell.setdefault(cell_id, []).append(instance_uuid)
        hosts: set[str] = set()
        for cell_id, members in members_by_cell.items():
            cell = self.cells.by_id(cell_id)
            stmt = select(Instance.host).where(
                Instance.uuid.in_(members),
                Instance.deleted == 0,
                Instance.hidden.is_(False),
                Instance.host.is_not(None),
            )
            try:
                with get_engine(cell.db_url).connect() as conn:
                    hosts.update(conn.execute(stmt).scalars())
            except CELL_DB_ERRORS as exc:
                if policy == "affinity":
                    raise CellUnavailable(
                        f"Cell {cell.name} holding members of affinity group {group_uuid} "
                        f"is unreachable: {_short(exc)}"
                    ) from exc
                LOG.warning(
                    "Cell %s is unreachable; members of group %s there are not counted: %s",
                    cell.name,
                    group_uuid,
                    _short(exc),
                )
        return policy, hosts


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]
