"""The scheduler: filter the hosts, weigh them, claim the best one in placement.

``select_destinations`` returns the claimed primary host and up to
``scheduler.max_attempts - 1`` alternates.  Alternates come only from the
primary's cell, because a cell-local retry (another host, same cell DB and
transport) is what the conductor can do without starting the move over; they are
not claimed until ``claim_alternate`` is called for one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

from atoll.availability_zones import host_zones
from atoll.cells import Cell, CellRegistry
from atoll.config import Settings
from atoll.exceptions import Conflict, NotFound, NoValidHost
from atoll.placement.errors import ConsumerGenerationConflict
from atoll.scheduler.filters import DEFAULT_FILTERS, BaseFilter
from atoll.scheduler.host_state import HostState, HostStateReader
from atoll.scheduler.request import SchedulingRequest
from atoll.scheduler.weighers import DEFAULT_WEIGHERS, BaseWeigher, weigh

if TYPE_CHECKING:
    from atoll.placement.service import Placement

LOG = logging.getLogger(__name__)

NO_HOST = "No valid host was found. There are not enough hosts available."


@dataclass(frozen=True)
class Selection:
    host: str
    node: str
    cell_id: int
    cell_name: str
    provider_uuid: str
    availability_zone: str

    @classmethod
    def of(cls, state: HostState) -> Selection:
        return cls(
            host=state.host,
            node=state.node,
            cell_id=state.cell.id,
            cell_name=state.cell.name,
            provider_uuid=state.provider_uuid,
            availability_zone=state.availability_zone or "",
        )


class Scheduler:
    def __init__(
        self,
        api_db_url: str,
        cells: CellRegistry,
        placement: Placement,
        settings: Settings,
        *,
        filters: tuple[BaseFilter, ...] | None = None,
        weighers: tuple[BaseWeigher, ...] | None = None,
    ) -> None:
        self.api_db_url = api_db_url
        self.cells = cells
        self.placement = placement
        self.settings = settings
        self.reader = HostStateReader(
            api_db_url, cells, placement, settings, settings.default_availability_zone
        )
        self.filters = tuple(filters if filters is not None else DEFAULT_FILTERS)
        self.weighers = tuple(weighers if weighers is not None else DEFAULT_WEIGHERS)
        self._cells_ttl = settings.periodic_interval
        self._cells_read_at: float | None = None

    # -- public ---------------------------------------------------------------------

    def select_destinations(
        self,
        request: SchedulingRequest,
        *,
        consumer_uuid: str,
        project_id: str,
        user_id: str,
        claim: bool = True,
    ) -> list[Selection]:
        """[claimed primary] + unclaimed alternates from the primary's cell.

        Raises NoValidHost naming the filter that removed the last hosts, or
        saying that every claim failed.
        """
        started = time.perf_counter()
        request = self._with_group(request)
        cells = self._cells_to_read(request)
        # zones are read for every host only when the AZ filter needs them;
        # otherwise only the selected hosts' zones are looked up at the end
        hosts = self.reader.read(cells, with_zones=bool(request.availability_zone))
        if not hosts:
            names = ", ".join(c.name for c in cells) or "none"
            raise NoValidHost(f"{NO_HOST} (no reachable compute hosts in cells: {names})")
        candidates = self.filter_hosts(hosts, request)
        ranked = [state for _, state in weigh(candidates, request, self.settings, self.weighers)]

        index = 0  # the primary's place in ``ranked``
        refused: set[int] = set()  # places of the hosts that refused the claim
        if claim:
            index, refused = self._claim_best(ranked, request, consumer_uuid, project_id, user_id)
        primary = ranked[index]
        rest = (s for i, s in enumerate(ranked) if i != index and i not in refused)
        try:
            chosen = self._with_alternates(primary, rest)
        except BaseException:
            if claim:  # the consumer held nothing else: undo our claim exactly
                self.placement.delete_allocations(consumer_uuid)
            raise
        alternates = chosen[1:]
        selections = [Selection.of(state) for state in chosen]
        LOG.info(
            "Selected host %s (cell %s) for %s%s in %.1f ms; alternates: %s",
            primary.host,
            primary.cell.name,
            request.describe(),
            " (claimed)" if claim else "",
            (time.perf_counter() - started) * 1000,
            ", ".join(s.host for s in alternates) or "none",
        )
        return selections

    def claim_alternate(
        self,
        selection: Selection,
        request: SchedulingRequest,
        *,
        consumer_uuid: str,
        project_id: str,
        user_id: str,
    ) -> None:
        """Claim the request's resources on an alternate (placement's Conflict propagates)."""
        self.placement.claim(
            consumer_uuid, selection.provider_uuid, request.resources(), project_id, user_id
        )
        LOG.info("Claimed alternate host %s for %s", selection.host, consumer_uuid)

    def filter_hosts(self, hosts: list[HostState], request: SchedulingRequest) -> list[HostState]:
        """Run the filters in order; NoValidHost names the one that left no host."""
        debug = LOG.isEnabledFor(logging.DEBUG)
        for flt in self.filters:
            if not flt.applies(request):
                continue
            before = len(hosts)
            hosts = flt.filter_all(hosts, request)
            if debug:
                LOG.debug("Filter %s returned %d of %d hosts", flt.name, len(hosts), before)
            if not hosts:
                LOG.info("%s for %s: %s returned 0 hosts", NO_HOST, request.describe(), flt.name)
                raise NoValidHost(f"{NO_HOST} ({flt.name} returned 0 hosts)")
        return hosts

    # -- helpers ----------------------------------------------------------------------

    def _claim_best(
        self,
        ranked: list[HostState],
        request: SchedulingRequest,
        consumer_uuid: str,
        project_id: str,
        user_id: str,
    ) -> tuple[int, set[int]]:
        """Claim on the best host that accepts: its index in ``ranked``, and the
        indexes of the hosts that refused.

        A Conflict from placement (capacity taken since the read, a provider
        changing under us) moves on to the next host.  A consumer that already
        holds exactly this claim on a candidate (this request run again after a
        crash) keeps it; any other allocation it holds is the caller's problem.
        """
        resources = request.resources()
        failed: list[str] = []
        refused: set[int] = set()
        for index, state in enumerate(ranked):
            try:
                self.placement.claim(
                    consumer_uuid, state.provider_uuid, resources, project_id, user_id
                )
            except ConsumerGenerationConflict:
                held = self._held_claim(consumer_uuid, ranked, resources)
                if held is None:
                    raise  # about the consumer, not the host: no other host would do better
                LOG.info(
                    "%s already holds its claim on %s; keeping it",
                    consumer_uuid,
                    ranked[held].host,
                )
                return held, refused
            except Conflict as exc:
                LOG.info(
                    "Claim on host %s failed for %s, trying the next host: %s",
                    state.host,
                    consumer_uuid,
                    exc,
                )
                failed.append(f"{state.host}: {exc}")
                refused.add(index)
                continue
            return index, refused
        raise NoValidHost(f"{NO_HOST} (every claim failed: {'; '.join(failed)})"[:1000])

    def _held_claim(
        self, consumer_uuid: str, ranked: list[HostState], resources: dict[str, int]
    ) -> int | None:
        allocations = self.placement.get_allocations(consumer_uuid).allocations
        if len(allocations) != 1:
            return None
        ((provider_uuid, held),) = allocations.items()
        if dict(held) != resources:
            return None
        for index, state in enumerate(ranked):
            if state.provider_uuid == provider_uuid:
                return index
        return None

    def _with_alternates(self, primary: HostState, rest: Iterable[HostState]) -> list[HostState]:
        """The primary, then the best other hosts of its cell, with their zones."""
        cell_id = primary.cell.id
        alternates = list(
            islice(
                (state for state in rest if state.cell.id == cell_id),
                max(0, self.settings.scheduler.max_attempts - 1),
            )
        )
        chosen = [primary, *alternates]
        if any(state.availability_zone is None for state in chosen):
            zones = host_zones(
                self.api_db_url, self.reader.default_zone, hosts=[s.host for s in chosen]
            )
            for state in chosen:
                state.availability_zone = zones[state.host]
        return chosen

    def _cell_list(self) -> list[Cell]:
        """Cell mappings, re-read at most every ``periodic_interval`` seconds."""
        now = time.monotonic()
        if self._cells_read_at is None or now - self._cells_read_at >= self._cells_ttl:
            self.cells.refresh()
            self._cells_read_at = now
        return self.cells.all()

    def _with_group(self, request: SchedulingRequest) -> SchedulingRequest:
        if not request.group_uuid:
            return request
        try:
            policy, hosts = self.reader.group_hosts(
                request.group_uuid, exclude=(request.instance_uuid,)
            )
        except NotFound:
            LOG.warning(
                "Server group %s of %s no longer exists; scheduling without it",
                request.group_uuid,
                request.instance_uuid,
            )
            return request
        LOG.debug("Group %s (%s) has members on %s", request.group_uuid, policy, sorted(hosts))
        return request.with_group(policy, hosts)

    def _cells_to_read(self, request: SchedulingRequest) -> list[Cell]:
        """The cells whose hosts may qualify.

        A requested cell is read even when disabled (an operator asked for it),
        and so is the source cell of a move that may not leave it; otherwise
        disabled cells take no new servers.
        """
        cells = self._cell_list()
        wanted = request.requested_cell
        if wanted is None and not request.allow_cross_cell:
            wanted = request.source_cell
        if wanted is not None:
            chosen = [c for c in cells if wanted in (c.name, c.uuid)]
            if not chosen:
                raise NoValidHost(f"{NO_HOST} (cell {wanted} does not exist)")
            return chosen
        return [c for c in cells if not c.disabled]
