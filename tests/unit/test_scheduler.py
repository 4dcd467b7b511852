"""The scheduler against real SQLite databases: an API DB, two cell DBs, placement.

Each test builds the smallest deployment that shows one behaviour: hosts are
services plus compute nodes in a cell DB, host mappings in the API DB and
resource providers in placement.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from atoll.cells import CellRegistry
from atoll.config import Settings
from atoll.db.api_models import (
    Aggregate,
    AggregateHost,
    AggregateMetadata,
    ApiBase,
    CellMapping,
    HostMapping,
    InstanceGroup,
    InstanceGroupMember,
    InstanceMapping,
)
from atoll.db.cell_models import CellBase, ComputeNode, Instance, Service
from atoll.db.session import dispose_all, session_scope
from atoll.db.types import utcnow
from atoll.exceptions import CellUnavailable, NoValidHost
from atoll.placement.errors import ConsumerGenerationConflict, InsufficientCapacity
from atoll.placement.service import Inventory, Placement
from atoll.scheduler import Scheduler, SchedulingRequest, Selection
from atoll.scheduler.filters import (
    DEFAULT_FILTERS,
    AvailabilityZoneFilter,
    ComputeFilter,
    CrossCellFilter,
    IgnoreHostsFilter,
    RequestedDestinationFilter,
    ResourceFilter,
    SchedulerHintsFilter,
    ServerGroupAffinityFilter,
    ServerGroupAntiAffinityFilter,
)
from atoll.scheduler.host_state import HostState
from atoll.scheduler.weighers import normalize, weigh

SMALL = {
    "flavorid": "1",
    "name": "small",
    "memory_mb": 1024,
    "vcpus": 1,
    "root_gb": 10,
    "ephemeral_gb": 0,
    "swap": 0,
    "extra_specs": {},
}
LARGE = {**SMALL, "flavorid": "2", "name": "large", "memory_mb": 4096, "vcpus": 2, "root_gb": 20}


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "instance_uuid": str(uuid.uuid4()),
        "project_id": "p1",
        "user_id": "u1",
        "flavor": SMALL,
        "image": {"id": "img", "min_disk": 0, "min_ram": 0},
        "is_volume_backed": False,
        "availability_zone": None,
        "group_uuid": None,
        "scheduler_hints": {},
        "requested_destination": None,
    }
    base.update(overrides)
    return base


class Deployment:
    """An API DB, cells with hosts, and placement, all SQLite files under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.api_url = f"sqlite:///{root / 'api.sqlite'}"
        ApiBase.metadata.create_all(_engine(self.api_url))
        self.placement = Placement(f"sqlite:///{root / 'placement.sqlite'}")
        self.placement.create_schema()
        self.cell_urls: dict[str, str] = {}
        self.cell_ids: dict[str, int] = {}
        self.node_uuids: dict[str, str] = {}
        self.host_cell: dict[str, str] = {}
        self.registry = CellRegistry(self.api_url)

    def add_cell(self, name: str, url: str | None = None, disabled: bool = False) -> None:
        if url is None:  # a reachable cell; a given URL may point nowhere on purpose
            url = f"sqlite:///{self.root / f'cell-{name}.sqlite'}"
            CellBase.metadata.create_all(_engine(url))
        with session_scope(self.api_url) as s:
            row = CellMapping(
                name=name, database_connection=url, transport_url="memory://", disabled=disabled
            )
            s.add(row)
            s.flush()
            self.cell_ids[name] = row.id
        self.cell_urls[name] = url
        self.registry.refresh()

    def add_host(
        self,
        cell: str,
        host: str,
        *,
        vcpus: int = 16,
        memory_mb: int = 16384,
        disk_gb: int = 400,
        disabled: bool = False,
        forced_down: bool = False,
        last_seen_up: dt.datetime | None = None,
        provider: bool = True,
    ) -> str:
        with session_scope(self.cell_urls[cell]) as s:
            service = Service(
                host=host,
                binary="nova-compute",
                topic="compute",
                disabled=disabled,
                forced_down=forced_down,
                last_seen_up=last_seen_up or utcnow(),
            )
            s.add(service)
            s.flush()
            node = ComputeNode(
                host=host,
                hypervisor_hostname=host,
                service_id=service.id,
                vcpus=vcpus,
                memory_mb=memory_mb,
                local_gb=disk_gb,
            )
            s.add(node)
            s.flush()
            node_uuid = node.uuid
        with session_scope(self.api_url) as s:
            s.add(HostMapping(host=host, cell_id=self.cell_ids[cell]))
        if provider:
            self.placement.ensure_provider(
                node_uuid,
                host,
                {
                    "VCPU": Inventory(total=vcpus),
                    "MEMORY_MB": Inventory(total=memory_mb),
                    "DISK_GB": Inventory(total=disk_gb),
                },
            )
        self.node_uuids[host] = node_uuid
        self.host_cell[host] = cell
        return node_uuid

    def add_zone(self, zone: str, hosts: list[str], name: str | None = None) -> None:
        with session_scope(self.api_url) as s:
            agg = Aggregate(name=name or f"agg-{zone}")
            agg.hosts = [AggregateHost(host=h) for h in hosts]
            agg.metadata_items = [AggregateMetadata(key="availability_zone", value=zone)]
            s.add(agg)

    def add_server(
        self,
        cell: str,
        host: str | None,
        *,
        instance_uuid: str | None = None,
        hidden: bool = False,
        deleted: bool = False,
        mapped: bool = True,
    ) -> str:
        instance_uuid = instance_uuid or str(uuid.uuid4())
        with session_scope(self.cell_urls[cell]) as s:
            inst = Instance(
                uuid=instance_uuid,
                project_id="p1",
                user_id="u1",
                host=host,
                node=host,
                flavor={"cur": SMALL, "old": None, "new": None},
                hidden=hidden,
            )
            s.add(inst)
            s.flush()
            if deleted:
                inst.deleted = inst.id
        if mapped:
            with session_scope(self.api_url) as s:
                existing = s.scalar(
                    select(InstanceMapping).where(InstanceMapping.instance_uuid == instance_uuid)
                )
                if existing is None:
                    s.add(
                        InstanceMapping(
                            instance_uuid=instance_uuid,
                            cell_id=self.cell_ids[cell],
                            project_id="p1",
                            user_id="u1",
                        )
                    )
        return instance_uuid

    def add_group(self, policy: str, members: list[str]) -> str:
        with session_scope(self.api_url) as s:
            group = InstanceGroup(name=f"g-{policy}", policy=policy, user_id="u1", project_id="p1")
            group.members = [InstanceGroupMember(instance_uuid=m) for m in members]
            s.add(group)
            s.flush()
            return group.uuid

    def usage(self, host: str) -> dict[str, int]:
        return dict(self.placement.capacity_snapshot()[self.node_uuids[host]].used)

    def scheduler(self, **scheduler_settings: Any) -> Scheduler:
        settings = Settings(data_dir=self.root, scheduler=scheduler_settings)
        return Scheduler(self.api_url, self.registry, self.placement, settings)


def _engine(url: str):  # type: ignore[no-untyped-def]
    from atoll.db.session import get_engine

    return get_engine(url)


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(tmp_path)
    d.add_cell("cell1")
    d.add_cell("cell2")
    yield d
    dispose_all()


def select_one(
    sched: Scheduler, request: SchedulingRequest, *, claim: bool = True
) -> list[Selection]:
    return sched.select_destinations(
        request,
        consumer_uuid=request.instance_uuid,
        project_id=request.project_id,
        user_id=request.user_id,
        claim=claim,
    )


def new(**overrides: Any) -> SchedulingRequest:
    return SchedulingRequest.from_spec(spec(**overrides))


def move(
    source_host: str, source_cell: str, *, allow_cross_cell: bool = True, **overrides: Any
) -> SchedulingRequest:
    return SchedulingRequest.from_spec(
        spec(**overrides),
        source_host=source_host,
        source_cell=source_cell,
        allow_cross_cell=allow_cross_cell,
        ignore_hosts=[source_host],
    )


# -- the request -----------------------------------------------------------------------


def test_resources_image_backed_counts_root_ephemeral_and_swap_rounded_up() -> None:
    flavor = {**SMALL, "root_gb": 10, "ephemeral_gb": 5, "swap": 1500}
    req = new(flavor=flavor)
    assert req.resources() == {"VCPU": 1, "MEMORY_MB": 1024, "DISK_GB": 17}


def test_resources_volume_backed_has_no_root_disk_and_omits_zero_disk() -> None:
    assert new(flavor=SMALL, is_volume_backed=True).resources() == {"VCPU": 1, "MEMORY_MB": 1024}
    with_eph = new(flavor={**SMALL, "ephemeral_gb": 3}, is_volume_backed=True)
    assert with_eph.resources() == {"VCPU": 1, "MEMORY_MB": 1024, "DISK_GB": 3}


def test_from_spec_reads_destination_and_move_fields() -> None:
    req = SchedulingRequest.from_spec(
        spec(
            requested_destination={"host": "host2", "cell": "cell2"},
            availability_zone="az1",
            scheduler_hints={"foo": "bar"},
        ),
        source_host="host1",
        source_cell="cell1",
        allow_cross_cell=False,
        ignore_hosts=["host1"],
        flavor_override=LARGE,
    )
    assert (req.requested_host, req.requested_cell) == ("host2", "cell2")
    assert (req.source_host, req.source_cell, req.allow_cross_cell) == ("host1", "cell1", False)
    assert req.ignore_hosts == frozenset({"host1"})
    assert req.availability_zone == "az1"
    assert req.resources() == {"VCPU": 2, "MEMORY_MB": 4096, "DISK_GB": 20}


# -- host states -----------------------------------------------------------------------


def test_read_gives_zone_capacity_and_service_state(dep: Deployment) -> None:
    dep.add_host("cell1", "host1", memory_mb=8192)
    dep.add_host("cell2", "host2", disabled=True)
    dep.add_zone("az2", ["host2"])
    sched = dep.scheduler()
    states = {s.host: s for s in sched.reader.read()}
    assert set(states) == {"host1", "host2"}
    h1, h2 = states["host1"], states["host2"]
    assert (h1.cell.name, h1.availability_zone, h1.node) == ("cell1", "nova", "host1")
    assert h1.provider_uuid == dep.node_uuids["host1"]
    assert h1.total["MEMORY_MB"] == 8192 and h1.free["MEMORY_MB"] == 8192
    assert h1.used == {"VCPU": 0, "MEMORY_MB": 0, "DISK_GB": 0}
    assert h1.is_up and not h1.service_disabled and not h1.forced_down
    assert (h2.cell.name, h2.availability_zone, h2.service_disabled) == ("cell2", "az2", True)


def test_read_skips_deleted_services_and_non_compute_binaries(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    with session_scope(dep.cell_urls["cell1"]) as s:
        s.add(Service(host="ctl", binary="nova-conductor", last_seen_up=utcnow()))
        gone = Service(host="old", binary="nova-compute", last_seen_up=utcnow())
        s.add(gone)
        s.flush()
        gone.deleted = gone.id
        s.add(ComputeNode(host="old", hypervisor_hostname="old", service_id=gone.id))
    assert [s.host for s in dep.scheduler().reader.read()] == ["host1"]


# -- filters ---------------------------------------------------------------------------


def _state(dep: Deployment, host: str) -> HostState:
    return next(s for s in dep.scheduler().reader.read() if s.host == host)


def test_compute_filter_excludes_disabled_forced_down_and_stale_services(dep: Deployment) -> None:
    stale = utcnow() - dt.timedelta(seconds=3600)
    dep.add_host("cell1", "ok")
    dep.add_host("cell1", "disabled", disabled=True)
    dep.add_host("cell1", "forced", forced_down=True)
    dep.add_host("cell2", "stale", last_seen_up=stale)
    states = dep.scheduler().reader.read()
    passing = [s.host for s in states if ComputeFilter().host_passes(s, new())]
    assert passing == ["ok"]
    by_host = {s.host: s for s in states}
    assert not by_host["stale"].is_up and not by_host["forced"].is_up


def test_only_unusable_hosts_gives_no_valid_host_naming_compute_filter(dep: Deployment) -> None:
    dep.add_host("cell1", "host1", disabled=True)
    dep.add_host("cell2", "host2", last_seen_up=utcnow() - dt.timedelta(hours=1))
    with pytest.raises(NoValidHost) as err:
        select_one(dep.scheduler(), new())
    assert str(err.value) == (
        "No valid host was found. There are not enough hosts available. "
        "(ComputeFilter returned 0 hosts)"
    )


def test_service_down_after_is_configurable(dep: Deployment) -> None:
    dep.add_host("cell1", "host1", last_seen_up=utcnow() - dt.timedelta(seconds=120))
    settings = Settings(data_dir=dep.root, timeouts={"service_down_after": 600})
    sched = Scheduler(dep.api_url, dep.registry, dep.placement, settings)
    assert select_one(sched, new())[0].host == "host1"


def test_availability_zone_filter(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell2", "host2")
    dep.add_zone("cell1", ["host1"])
    dep.add_zone("cell2", ["host2"])
    sched = dep.scheduler(host_weights={"host1": 10}, host_weight_multiplier=1000)
    chosen = select_one(sched, new(availability_zone="cell2"))
    assert [(s.host, s.cell_name, s.availability_zone) for s in chosen] == [
        ("host2", "cell2", "cell2")
    ]
    state = _state(dep, "host1")
    assert AvailabilityZoneFilter().host_passes(state, new(availability_zone="cell1"))
    assert not AvailabilityZoneFilter().applies(new())


def test_no_valid_host_message_names_the_filter(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_zone("cell1", ["host1"])
    with pytest.raises(NoValidHost) as err:
        select_one(dep.scheduler(), new(availability_zone="nowhere"))
    assert err.value.message == (
        "No valid host was found. There are not enough hosts available. "
        "(AvailabilityZoneFilter returned 0 hosts)"
    )


def test_resource_filter_drops_hosts_without_room(dep: Deployment) -> None:
    dep.add_host("cell1", "small", memory_mb=2048)
    dep.add_host("cell2", "big", memory_mb=8192)
    sched = dep.scheduler(host_weights={"small": 1}, host_weight_multiplier=1000)
    assert select_one(sched, new(flavor=LARGE))[0].host == "big"
    with pytest.raises(NoValidHost, match=r"\(ResourceFilter returned 0 hosts\)"):
        select_one(sched, new(flavor={**LARGE, "memory_mb": 65536}))


def test_resource_filter_drops_hosts_without_a_provider(dep: Deployment) -> None:
    dep.add_host("cell1", "noprov", provider=False)
    state = _state(dep, "noprov")
    assert state.capacity is None and state.free == {}
    assert not ResourceFilter().host_passes(state, new())


def test_resource_filter_honours_max_unit(dep: Deployment) -> None:
    node = dep.add_host("cell1", "host1", provider=False)
    dep.placement.ensure_provider(
        node,
        "host1",
        {
            "VCPU": Inventory(total=16, max_unit=1),
            "MEMORY_MB": Inventory(total=16384),
            "DISK_GB": Inventory(total=400),
        },
    )
    state = _state(dep, "host1")
    assert ResourceFilter().host_passes(state, new(flavor=SMALL))
    assert not ResourceFilter().host_passes(state, new(flavor=LARGE))


def test_ignore_hosts_filter(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell1", "host3")
    sched = dep.scheduler(host_weights={"host1": 1}, host_weight_multiplier=1000)
    req = SchedulingRequest.from_spec(spec(), ignore_hosts=["host1"])
    assert select_one(sched, req)[0].host == "host3"
    assert not IgnoreHostsFilter().applies(new())
    with pytest.raises(NoValidHost, match=r"IgnoreHostsFilter returned 0 hosts"):
        select_one(sched, SchedulingRequest.from_spec(spec(), ignore_hosts=["host1", "host3"]))


def test_requested_host_in_the_other_cell_is_honoured(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell1", "host3")
    dep.add_host("cell2", "host2")
    sched = dep.scheduler(host_weights={"host3": 1}, host_weight_multiplier=1000)
    req = move("host1", "cell1", requested_destination={"host": "host2", "cell": None})
    chosen = select_one(sched, req)
    assert [s.host for s in chosen] == ["host2"]
    assert chosen[0].cell_name == "cell2" and chosen[0].cell_id == dep.cell_ids["cell2"]
    assert dep.usage("host2")["MEMORY_MB"] == 1024


def test_requested_cell_restricts_to_that_cell(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell2", "host2")
    dep.add_host("cell2", "host4")
    sched = dep.scheduler(host_weights={"host1": 1}, host_weight_multiplier=1000)
    req = new(requested_destination={"host": None, "cell": "cell2"})
    assert {s.host for s in select_one(sched, req)} == {"host2", "host4"}
    states = sched.reader.read()
    flt = RequestedDestinationFilter()
    assert [s.host for s in states if flt.host_passes(s, req)] == ["host2", "host4"]
    with pytest.raises(NoValidHost, match="cell cell9 does not exist"):
        select_one(sched, new(requested_destination={"host": None, "cell": "cell9"}))


def test_requested_host_that_fails_a_filter_names_that_filter(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell2", "host2", disabled=True)
    req = new(requested_destination={"host": "host2", "cell": None})
    with pytest.raises(NoValidHost, match=r"\(ComputeFilter returned 0 hosts\)"):
        select_one(dep.scheduler(), req)
    with pytest.raises(NoValidHost, match=r"\(RequestedDestinationFilter returned 0 hosts\)"):
        select_one(dep.scheduler(), new(requested_destination={"host": "nope", "cell": None}))


def test_cross_cell_not_allowed_keeps_the_move_in_its_cell(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell1", "host3", memory_mb=2048)
    dep.add_host("cell2", "host2")
    # even a cell-draining multiplier cannot take it out when policy says no
    sched = dep.scheduler(cross_cell_weight_multiplier=-1_000_000)
    req = move("host1", "cell1", allow_cross_cell=False)
    assert [s.host for s in select_one(sched, req)] == ["host3"]
    states = sched.reader.read()
    assert [s.host for s in states if CrossCellFilter().host_passes(s, req)] == ["host1", "host3"]
    assert not CrossCellFilter().applies(move("host1", "cell1"))


def test_cross_cell_not_allowed_and_no_room_in_the_cell_fails(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell2", "host2")
    with pytest.raises(NoValidHost, match=r"IgnoreHostsFilter returned 0 hosts"):
        select_one(dep.scheduler(), move("host1", "cell1", allow_cross_cell=False))


def test_unknown_scheduler_hints_are_ignored(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    req = new(scheduler_hints={"build_near_host_ip": "10.0.0.1", "group": "x"})
    assert not SchedulerHintsFilter().applies(req)
    assert select_one(dep.scheduler(), req)[0].host == "host1"


# -- server groups ---------------------------------------------------------------------


def test_anti_affinity_counts_members_in_every_cell(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell1", "host3")
    dep.add_host("cell2", "host2")
    dep.add_host("cell2", "host4")
    m1 = dep.add_server("cell1", "host1")
    group = dep.add_group("anti-affinity", [m1])
    sched = dep.scheduler(host_weights={"host1": 10}, host_weight_multiplier=1000)
    chosen = select_one(sched, new(group_uuid=group), claim=False)
    assert chosen[0].host != "host1"
    # a second member in cell2 on host2 leaves host3 and host4
    m2 = dep.add_server("cell2", "host2")
    group2 = dep.add_group("anti-affinity", [m1, m2])
    policy, hosts = sched.reader.group_hosts(group2)
    assert (policy, hosts) == ("anti-affinity", {"host1", "host2"})
    states = sched.reader.read()
    req = new(group_uuid=group2).with_group(policy, hosts)
    flt = ServerGroupAntiAffinityFilter()
    assert sorted(s.host for s in states if flt.host_passes(s, req)) == ["host3", "host4"]


def test_anti_affinity_move_goes_to_the_only_host_keeping_the_policy(dep: Deployment) -> None:
    """S8: members in different cells; moving one goes across cells to the free host."""
    dep.add_host("cell1", "host1")
    dep.add_host("cell2", "host2")
    dep.add_host("cell2", "host3")
    m1 = dep.add_server("cell1", "host1")
    m2 = dep.add_server("cell2", "host2")
    group = dep.add_group("anti-affinity", [m1, m2])
    sched = dep.scheduler()
    req = move("host1", "cell1", instance_uuid=m1, group_uuid=group)
    assert [s.host for s in select_one(sched, req, claim=False)] == ["host3"]
    # the other member may not go to host1's neighbour if a member is there
    dep.add_server("cell2", "host3", instance_uuid=m1)  # m1 now lives on host3 (cell2)
    with session_scope(dep.api_url) as s:
        mapping = s.scalar(select(InstanceMapping).where(InstanceMapping.instance_uuid == m1))
        mapping.cell_id = dep.cell_ids["cell2"]
    with session_scope(dep.cell_urls["cell1"]) as s:
        inst = s.scalar(select(Instance).where(Instance.uuid == m1))
        inst.hidden = True
    bad = move(
        "host2",
        "cell2",
        instance_uuid=m2,
        group_uuid=group,
        requested_destination={"host": "host3", "cell": None},
    )
    with pytest.raises(NoValidHost, match=r"ServerGroupAntiAffinityFilter returned 0 hosts"):
        select_one(sched, bad)


def test_group_hosts_skip_deleted_hidden_unmapped_and_excluded_members(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell2", "host2")
    live = dep.add_server("cell1", "host1")
    gone = dep.add_server("cell2", "host2", deleted=True)
    hidden = dep.add_server("cell2", "host2", hidden=True)
    building = dep.add_server("cell2", None, mapped=False)
    me = dep.add_server("cell2", "host2")
    group = dep.add_group("anti-affinity", [live, gone, hidden, building, me])
    reader = dep.scheduler().reader
    assert reader.group_hosts(group) == ("anti-affinity", {"host1", "host2"})
    assert reader.group_hosts(group, exclude=[me]) == ("anti-affinity", {"host1"})


def test_affinity_follows_the_members_host(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell2", "host2")
    m1 = dep.add_server("cell2", "host2")
    group = dep.add_group("affinity", [m1])
    sched = dep.scheduler(host_weights={"host1": 10}, host_weight_multiplier=1000)
    assert select_one(sched, new(group_uuid=group))[0].host == "host2"
    # an empty affinity group does not restrict
    empty = dep.add_group("affinity", [])
    assert not ServerGroupAffinityFilter().applies(new().with_group("affinity", []))
    assert select_one(sched, new(group_uuid=empty))[0].host == "host1"
    # the only member's host is down: nowhere to go
    with session_scope(dep.cell_urls["cell2"]) as s:
        s.scalar(select(Service).where(Service.host == "host2")).disabled = True
    with pytest.raises(NoValidHost, match=r"ServerGroupAffinityFilter returned 0 hosts"):
        select_one(sched, new(group_uuid=group))


def test_soft_anti_affinity_prefers_hosts_without_members(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell2", "host2")
    m1 = dep.add_server("cell2", "host2")
    group = dep.add_group("soft-anti-affinity", [m1])
    sched = dep.scheduler(host_weights={"host2": 1}, host_weight_multiplier=0.5)
    assert [s.host for s in select_one(sched, new(group_uuid=group), claim=False)] == ["host1"]
    # but a member host is still allowed when nothing else fits
    sched = dep.scheduler()
    req = new(group_uuid=group, requested_destination={"host": "host2", "cell": None})
    assert select_one(sched, req, claim=False)[0].host == "host2"


def test_soft_affinity_prefers_the_members_host(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell2", "host2")
    m1 = dep.add_server("cell2", "host2")
    group = dep.add_group("soft-affinity", [m1])
    sched = dep.scheduler(host_weights={"host1": 1}, host_weight_multiplier=0.5)
    assert select_one(sched, new(group_uuid=group), claim=False)[0].host == "host2"


def test_affinity_group_with_a_member_in_an_unreachable_cell_fails_cleanly(
    dep: Deployment,
) -> None:
    dep.add_host("cell1", "host1")
    dep.add_cell("down", url=f"sqlite:///{dep.root / 'missing-dir' / 'down.sqlite'}")
    member = str(uuid.uuid4())
    with session_scope(dep.api_url) as s:
        s.add(
            InstanceMapping(
                instance_uuid=member, cell_id=dep.cell_ids["down"], project_id="p1", user_id="u1"
            )
        )
    affinity = dep.add_group("affinity", [member])
    anti = dep.add_group("anti-affinity", [member])
    sched = dep.scheduler()
    with pytest.raises(CellUnavailable, match="down"):
        select_one(sched, new(group_uuid=affinity))
    assert select_one(sched, new(group_uuid=anti))[0].host == "host1"


# -- weighers --------------------------------------------------------------------------


def test_normalize() -> None:
    assert normalize([]) == []
    assert normalize([5, 5, 5]) == [0.0, 0.0, 0.0]
    assert normalize([0, 5, 10]) == [0.0, 0.5, 1.0]


def test_spread_prefers_free_memory_and_ties_break_by_name(dep: Deployment) -> None:
    dep.add_host("cell2", "b-host")
    dep.add_host("cell1", "a-host")
    dep.add_host("cell1", "c-host", memory_mb=32768)
    sched = dep.scheduler()
    states = sched.reader.read()
    ranked = [s.host for _, s in weigh(states, new(), sched.settings)]
    assert ranked == ["c-host", "a-host", "b-host"]


def test_host_weight_pins_the_first_host(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell2", "host2", memory_mb=65536)
    sched = dep.scheduler(host_weights={"host1": 10}, host_weight_multiplier=1000)
    for _ in range(3):
        assert select_one(sched, new())[0].host == "host1"
    assert dep.usage("host1")["MEMORY_MB"] == 3 * 1024


def test_cross_cell_weigher_keeps_a_move_in_the_source_cell(dep: Deployment) -> None:
    """S6: the source cell has a second host; the host weigher prefers the other cell."""
    dep.add_host("cell1", "host1")
    dep.add_host("cell1", "host3")
    dep.add_host("cell2", "host2")
    sched = dep.scheduler(host_weights={"host2": 10}, host_weight_multiplier=1000)
    assert select_one(sched, move("host1", "cell1"))[0].host == "host3"
    # a new server (no source cell) follows the host weigher
    assert select_one(sched, new())[0].host == "host2"


def test_cross_cell_weigher_leaves_when_the_source_cell_is_full(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell1", "host3", memory_mb=512)
    dep.add_host("cell2", "host2")
    sched = dep.scheduler()
    assert select_one(sched, move("host1", "cell1"))[0].host == "host2"


def test_negative_cross_cell_multiplier_drains_the_cell(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell1", "host3", memory_mb=65536)
    dep.add_host("cell2", "host2")
    sched = dep.scheduler(cross_cell_weight_multiplier=-1_000_000)
    assert select_one(sched, move("host1", "cell1"))[0].host == "host2"


def test_availability_zone_beats_the_cross_cell_weigher(dep: Deployment) -> None:
    """S7: the request spec restricts the move to the other cell's zone."""
    dep.add_host("cell1", "host1")
    dep.add_host("cell1", "host3")
    dep.add_host("cell2", "host2")
    dep.add_zone("cell1", ["host1", "host3"])
    dep.add_zone("cell2", ["host2"])
    chosen = select_one(dep.scheduler(), move("host1", "cell1", availability_zone="cell2"))
    assert (chosen[0].host, chosen[0].availability_zone) == ("host2", "cell2")


# -- claims and alternates -------------------------------------------------------------


def test_select_claims_the_primary_only(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell1", "host3")
    sched = dep.scheduler(host_weights={"host1": 1}, host_weight_multiplier=1000)
    req = new(flavor=LARGE)
    chosen = select_one(sched, req)
    assert [s.host for s in chosen] == ["host1", "host3"]
    assert dep.usage("host1") == {"VCPU": 2, "MEMORY_MB": 4096, "DISK_GB": 20}
    assert dep.usage("host3") == {"VCPU": 0, "MEMORY_MB": 0, "DISK_GB": 0}
    allocs = dep.placement.get_allocations(req.instance_uuid)
    assert allocs.allocations == {dep.node_uuids["host1"]: req.resources()}
    assert (allocs.project_id, allocs.user_id) == ("p1", "u1")


def test_without_claim_nothing_is_allocated(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    select_one(dep.scheduler(), new(), claim=False)
    assert dep.usage("host1")["MEMORY_MB"] == 0


def test_a_full_host_is_skipped(dep: Deployment) -> None:
    dep.add_host("cell1", "host1", memory_mb=4096)
    dep.add_host("cell1", "host3", memory_mb=4096)
    sched = dep.scheduler(host_weights={"host1": 1}, host_weight_multiplier=1000)
    assert select_one(sched, new(flavor=LARGE))[0].host == "host1"
    assert select_one(sched, new(flavor=LARGE))[0].host == "host3"
    with pytest.raises(NoValidHost, match="ResourceFilter returned 0 hosts"):
        select_one(sched, new(flavor=LARGE))


def test_a_failed_claim_moves_on_to_the_next_host(dep: Deployment) -> None:
    """Capacity taken between the read and the claim: placement refuses, the next host wins.

    Without the ResourceFilter the scheduler sees the full host as a candidate,
    just as it would after another scheduler claimed it a moment earlier.
    """
    dep.add_host("cell1", "host1", memory_mb=4096)
    dep.add_host("cell1", "host3")
    dep.add_host("cell1", "host5")
    dep.placement.claim(str(uuid.uuid4()), dep.node_uuids["host1"], {"MEMORY_MB": 4096}, "p", "u")
    settings = Settings(
        data_dir=dep.root,
        scheduler={
            "host_weights": {"host1": 2, "host3": 1},
            "host_weight_multiplier": 1000,
            "max_attempts": 5,
        },
    )
    no_resource_filter = tuple(f for f in DEFAULT_FILTERS if not isinstance(f, ResourceFilter))
    sched = Scheduler(
        dep.api_url, dep.registry, dep.placement, settings, filters=no_resource_filter
    )
    chosen = select_one(sched, new())
    # host1 refused the claim; it is not offered as an alternate either
    assert [s.host for s in chosen] == ["host3", "host5"]
    assert dep.usage("host3")["MEMORY_MB"] == 1024


def test_every_claim_failing_is_no_valid_host(dep: Deployment) -> None:
    dep.add_host("cell1", "host1", memory_mb=1024)
    dep.placement.claim(str(uuid.uuid4()), dep.node_uuids["host1"], {"MEMORY_MB": 1024}, "p", "u")
    no_resource_filter = tuple(f for f in DEFAULT_FILTERS if not isinstance(f, ResourceFilter))
    settings = Settings(data_dir=dep.root)
    sched = Scheduler(
        dep.api_url, dep.registry, dep.placement, settings, filters=no_resource_filter
    )
    with pytest.raises(NoValidHost, match=r"every claim failed: host1: Insufficient MEMORY_MB"):
        select_one(sched, new())


def test_a_consumer_that_already_holds_allocations_is_not_retried_elsewhere(
    dep: Deployment,
) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell1", "host3")
    req = new()
    dep.placement.claim(req.instance_uuid, dep.node_uuids["host1"], {"VCPU": 3}, "p1", "u1")
    with pytest.raises(ConsumerGenerationConflict):
        select_one(dep.scheduler(), req)


def test_a_request_run_again_keeps_the_claim_it_already_holds(dep: Deployment) -> None:
    """A conductor step that crashed after the claim runs select_destinations again."""
    dep.add_host("cell1", "host1")
    dep.add_host("cell1", "host3")
    sched = dep.scheduler(host_weights={"host1": 1}, host_weight_multiplier=1000)
    req = new()
    dep.placement.claim(req.instance_uuid, dep.node_uuids["host3"], req.resources(), "p1", "u1")
    chosen = select_one(sched, req)
    assert [s.host for s in chosen] == ["host3", "host1"]
    assert dep.placement.get_allocations(req.instance_uuid).allocations == {
        dep.node_uuids["host3"]: req.resources()
    }
    assert dep.usage("host1")["MEMORY_MB"] == 0


def test_alternates_come_only_from_the_primarys_cell(dep: Deployment) -> None:
    for host, cell in [("host1", "cell1"), ("host3", "cell1"), ("host5", "cell1")]:
        dep.add_host(cell, host)
    for host in ["host2", "host4"]:
        dep.add_host("cell2", host, memory_mb=65536)
    sched = dep.scheduler(host_weights={"host1": 10}, host_weight_multiplier=1000, max_attempts=3)
    chosen = select_one(sched, new())
    assert chosen[0].host == "host1"
    assert [s.host for s in chosen[1:]] == ["host3", "host5"]
    assert {s.cell_name for s in chosen} == {"cell1"}
    # max_attempts bounds the list
    sched1 = dep.scheduler(host_weights={"host1": 10}, host_weight_multiplier=1000, max_attempts=1)
    assert [s.host for s in select_one(sched1, new())] == ["host1"]


def test_claim_alternate_claims_and_propagates_conflicts(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell1", "host3", memory_mb=4096)
    sched = dep.scheduler(host_weights={"host1": 1}, host_weight_multiplier=1000)
    req = new(flavor=LARGE)
    primary, alternate = select_one(sched, req, claim=False)
    assert alternate.host == "host3"
    sched.claim_alternate(
        alternate, req, consumer_uuid=req.instance_uuid, project_id="p1", user_id="u1"
    )
    assert dep.usage("host3")["MEMORY_MB"] == 4096
    other = new(flavor=LARGE)
    with pytest.raises(InsufficientCapacity):
        sched.claim_alternate(
            alternate, other, consumer_uuid=other.instance_uuid, project_id="p1", user_id="u1"
        )
    assert primary.host == "host1"


def test_a_failure_after_the_claim_gives_the_claim_back(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    sched = dep.scheduler()
    select_one(sched, new())  # the cell list is now cached; the zone lookup comes last
    with _engine(dep.api_url).begin() as conn:
        conn.exec_driver_sql("DROP TABLE aggregate_metadata")
    req = new()
    with pytest.raises(OperationalError):
        select_one(sched, req)
    assert dep.placement.get_allocations(req.instance_uuid).allocations == {}
    assert dep.usage("host1")["MEMORY_MB"] == 1024  # only the first server's


def test_a_deleted_server_group_no_longer_constrains(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    req = new(group_uuid=str(uuid.uuid4()))
    assert select_one(dep.scheduler(), req)[0].host == "host1"


# -- cells ------------------------------------------------------------------------------


def test_an_unreachable_cell_does_not_stop_scheduling_in_the_others(
    dep: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    dep.add_host("cell1", "host1")
    dep.add_cell("broken", url=f"sqlite:///{dep.root / 'no-such-dir' / 'broken.sqlite'}")
    dep.add_cell("bogus", url="nosuchdriver://x/y")
    sched = dep.scheduler()
    with caplog.at_level(logging.WARNING, logger="atoll.scheduler"):
        chosen = select_one(sched, new())
    assert chosen[0].host == "host1"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("Cell broken is unreachable" in w for w in warnings)
    assert any("Cell bogus is unreachable" in w for w in warnings)


def test_remote_cells_that_refuse_or_hang_are_skipped_within_the_timeout(
    dep: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    """Cells on database servers are read in parallel, each bounded by db_connect."""
    dep.add_host("cell1", "host1")
    with socket.socket() as closed:  # a port nobody listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        refused_port = closed.getsockname()[1]
    silent = socket.socket()  # accepts TCP connections but never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        silent_port = silent.getsockname()[1]
        dep.add_cell("refused", url=f"postgresql://u:p@127.0.0.1:{refused_port}/cell")
        dep.add_cell("silent", url=f"postgresql://u:p@127.0.0.1:{silent_port}/cell")
        settings = Settings(data_dir=dep.root, timeouts={"db_connect": 0.5})
        sched = Scheduler(dep.api_url, dep.registry, dep.placement, settings)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="atoll.scheduler"):
            chosen = select_one(sched, new())
        assert chosen[0].host == "host1"
        assert time.monotonic() - started < 3
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(w.startswith("Cell refused is unreachable") for w in warnings)
        assert (
            "Cell silent is unreachable, its hosts are not scheduled to: no answer in 0.5s"
            in warnings
        )
    finally:
        silent.close()


def test_only_unreachable_cells_is_no_valid_host(dep: Deployment) -> None:
    dep.add_cell("broken", url=f"sqlite:///{dep.root / 'no-such-dir' / 'broken.sqlite'}")
    req = new(requested_destination={"host": None, "cell": "broken"})
    with pytest.raises(NoValidHost, match="no reachable compute hosts in cells: broken"):
        select_one(dep.scheduler(), req)


def test_disabled_cells_take_no_new_servers_unless_requested(dep: Deployment) -> None:
    dep.add_cell("closed", disabled=True)
    dep.add_host("cell1", "host1")
    dep.add_host("closed", "hostx")
    sched = dep.scheduler(host_weights={"hostx": 1}, host_weight_multiplier=1000)
    assert select_one(sched, new())[0].host == "host1"
    req = new(requested_destination={"host": None, "cell": "closed"})
    assert select_one(sched, req)[0].host == "hostx"


def test_debug_log_counts_hosts_per_filter_and_info_names_the_choice(
    dep: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    dep.add_host("cell1", "host1")
    dep.add_host("cell2", "host2")
    dep.add_zone("az", ["host2"])
    with caplog.at_level(logging.DEBUG, logger="atoll.scheduler"):
        select_one(dep.scheduler(), new(availability_zone="az"))
    messages = [r.getMessage() for r in caplog.records]
    assert "Filter ComputeFilter returned 2 of 2 hosts" in messages
    assert "Filter AvailabilityZoneFilter returned 1 of 2 hosts" in messages
    assert any(m.startswith("Selected host host2 (cell cell2)") for m in messages)


def test_hosts_are_counted_once_per_compute_node(dep: Deployment) -> None:
    dep.add_host("cell1", "host1")
    with session_scope(dep.cell_urls["cell1"]) as s:
        n = s.scalar(select(func.count()).select_from(ComputeNode))
    assert n == 1
    assert len(dep.scheduler().reader.read()) == 1
