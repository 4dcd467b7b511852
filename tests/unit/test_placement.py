"""atoll.placement.service on real databases: SQLite files, and the core cases again
on PostgreSQL and MariaDB (marked ``postgres`` / ``mysql``; those servers must be up).
"""

from __future__ import annotations

import threading
import uuid as uuidlib
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from atoll.db.session import get_engine
from atoll.exceptions import BadRequest, ConcurrentUpdate, Conflict, NotFound
from atoll.placement import (
    AllocationConstraintViolated,
    AllocationRequest,
    ConsumerGenerationConflict,
    InsufficientCapacity,
    InvalidAllocationRequest,
    InvalidInventory,
    Inventory,
    InventoryInUse,
    Placement,
    PlacementBase,
    ProviderInUse,
    ProviderNameConflict,
    ResourceProviderGenerationConflict,
    ResourceProviderNotFound,
)

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
MYSQL_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/"
MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/{db}"

OLD_FLAVOR = {"VCPU": 2, "MEMORY_MB": 2048, "DISK_GB": 20}
NEW_FLAVOR = {"VCPU": 4, "MEMORY_MB": 4096, "DISK_GB": 40}


def new_uuid() -> str:
    return str(uuidlib.uuid4())


def host_inventory(vcpus: int = 8, memory_mb: int = 16384, disk_gb: int = 200) -> dict:
    return {
        "VCPU": Inventory(vcpus),
        "MEMORY_MB": Inventory(memory_mb),
        "DISK_GB": Inventory(disk_gb),
    }


def add_host(pl: Placement, name: str, **sizes: int) -> str:
    rp = new_uuid()
    pl.ensure_provider(rp, name, host_inventory(**sizes))
    return rp


# ---------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------


@pytest.fixture
def placement(tmp_path) -> Iterator[Placement]:
    url = f"sqlite:///{tmp_path}/placement.db"
    PlacementBase.metadata.create_all(get_engine(url))
    yield Placement(url)
    get_engine(url).dispose()


def _throwaway_database(admin_url: str, url_template: str, **admin_kw: object) -> Iterator[str]:
    name = f"atoll_placement_{uuidlib.uuid4().hex[:10]}"
    admin = create_engine(admin_url, **admin_kw)
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
        conn.commit()
    url = url_template.format(db=name)
    try:
        yield url
    finally:
        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name}"))
            conn.commit()
        admin.dispose()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test run (the server must be up)."""
    yield from _throwaway_database(PG_ADMIN, PG_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="module")
def mysql_url() -> Iterator[str]:
    """A throwaway MariaDB database for this test run (the server must be up)."""
    yield from _throwaway_database(MYSQL_ADMIN, MYSQL_URL)


@pytest.fixture
def any_placement(request, tmp_path) -> Iterator[Placement]:
    """The same Placement on SQLite, PostgreSQL or MariaDB, with empty tables."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/placement.db"
    else:
        url = request.getfixturevalue(f"{request.param}_url")
    engine = get_engine(url)
    PlacementBase.metadata.drop_all(engine)
    PlacementBase.metadata.create_all(engine)
    yield Placement(url)
    engine.dispose()


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]


# ---------------------------------------------------------------------------
# The core cases, on every back end
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("any_placement", BACKENDS, indirect=True)
class TestCoreOnEveryBackend:
    def test_capacity_honours_ratio_and_reserved(self, any_placement: Placement) -> None:
        pl = any_placement
        rp = new_uuid()
        pl.ensure_provider(
            rp,
            "ratio-host",
            {
                "VCPU": Inventory(8, reserved=2, allocation_ratio=2.0),
                "MEMORY_MB": Inventory(4096, reserved=1024, allocation_ratio=1.5),
            },
        )
        snap = pl.capacity_snapshot()[rp]
        assert snap.capacity == {"VCPU": 12, "MEMORY_MB": 4608}
        assert snap.used == {"VCPU": 0, "MEMORY_MB": 0}
        assert pl.get_inventories(rp)["VCPU"] == Inventory(
            8, reserved=2, max_unit=8, allocation_ratio=2.0
        )

        pl.claim(new_uuid(), rp, {"VCPU": 8, "MEMORY_MB": 4096}, "p", "u")
        pl.claim(new_uuid(), rp, {"VCPU": 4, "MEMORY_MB": 512}, "p", "u")
        assert pl.usages(rp) == {"VCPU": 12, "MEMORY_MB": 4608}
        with pytest.raises(InsufficientCapacity):
            pl.claim(new_uuid(), rp, {"VCPU": 1}, "p", "u")
        assert pl.capacity_snapshot()[rp].used == {"VCPU": 12, "MEMORY_MB": 4608}

    def test_claim_over_capacity_names_provider_class_and_amounts(
        self, any_placement: Placement
    ) -> None:
        pl = any_placement
        rp = add_host(pl, "small-host", vcpus=4, memory_mb=4096)
        pl.claim(new_uuid(), rp, {"MEMORY_MB": 2048}, "p", "u")
        consumer = new_uuid()
        with pytest.raises(InsufficientCapacity) as err:
            pl.claim(consumer, rp, {"VCPU": 2, "MEMORY_MB": 4096}, "p", "u")
        message = str(err.value)
        assert "MEMORY_MB" in message and "'small-host'" in message and rp in message
        assert "requested 4096" in message and "free 2048" in message
        assert err.value.code == 409
        assert (err.value.resource_class, err.value.requested, err.value.free) == (
            "MEMORY_MB",
            4096,
            2048,
        )
        assert pl.get_allocations(consumer).consumer_generation is None
        assert pl.usages(rp) == {"VCPU": 0, "MEMORY_MB": 2048, "DISK_GB": 0}

    def test_generations_bump_on_every_change_and_only_then(self, any_placement: Placement) -> None:
        pl = any_placement
        rp = new_uuid()
        assert pl.ensure_provider(rp, "gen-host", host_inventory()) == 1
        assert pl.ensure_provider(rp, "gen-host", host_inventory()) == 1  # no change
        assert pl.ensure_provider(rp, "gen-host", host_inventory(vcpus=16)) == 2
        server = new_uuid()
        pl.claim(server, rp, OLD_FLAVOR, "p", "u")
        assert pl.get_provider(rp).generation == 3
        found = pl.get_allocations(server)
        assert found.consumer_generation == 1
        assert found.provider_generations == {rp: 3}
        pl.replace_allocations(
            {server: AllocationRequest({rp: NEW_FLAVOR}, "p", "u", consumer_generation=1)}
        )
        assert pl.get_allocations(server).consumer_generation == 2
        assert pl.get_provider(rp).generation == 4
        pl.delete_allocations(server)
        assert pl.get_provider(rp).generation == 5

    def test_stale_consumer_generation_is_refused(self, any_placement: Placement) -> None:
        pl = any_placement
        rp = add_host(pl, "cg-host")
        server = new_uuid()
        pl.claim(server, rp, OLD_FLAVOR, "p", "u")
        seen = pl.get_allocations(server).consumer_generation
        pl.replace_allocations(
            {server: AllocationRequest({rp: NEW_FLAVOR}, "p", "u", consumer_generation=seen)}
        )
        with pytest.raises(ConsumerGenerationConflict, match="expected consumer generation 1"):
            pl.replace_allocations(
                {server: AllocationRequest({rp: OLD_FLAVOR}, "p", "u", consumer_generation=seen)}
            )
        with pytest.raises(ConsumerGenerationConflict, match="already holds allocations"):
            pl.replace_allocations({server: AllocationRequest({rp: OLD_FLAVOR}, "p", "u", None)})
        assert pl.get_allocations(server).allocations == {rp: NEW_FLAVOR}

    def test_replace_is_all_or_nothing_across_consumers(self, any_placement: Placement) -> None:
        pl = any_placement
        h1 = add_host(pl, "atomic-1")
        h2 = add_host(pl, "atomic-2", vcpus=4)
        a, b = new_uuid(), new_uuid()
        pl.claim(a, h1, OLD_FLAVOR, "p", "u")
        pl.claim(b, h2, OLD_FLAVOR, "p", "u")
        before = (pl.all_consumers(), pl.get_provider(h1), pl.get_provider(h2))

        with pytest.raises(InsufficientCapacity, match="VCPU"):
            pl.replace_allocations(
                {
                    a: AllocationRequest({h1: NEW_FLAVOR}, "p", "u", 1),
                    b: AllocationRequest({h2: {"VCPU": 5}}, "p", "u", 1),
                }
            )
        with pytest.raises(ConsumerGenerationConflict):
            pl.replace_allocations(
                {
                    a: AllocationRequest({h1: NEW_FLAVOR}, "p", "u", 1),
                    b: AllocationRequest({}, "p", "u", 7),
                }
            )
        assert (pl.all_consumers(), pl.get_provider(h1), pl.get_provider(h2)) == before

        pl.replace_allocations(
            {
                a: AllocationRequest({h1: NEW_FLAVOR}, "p", "u", 1),
                b: AllocationRequest({}, "p", "u", 1),
            }
        )
        assert pl.all_consumers() == {a: {h1: NEW_FLAVOR}}
        assert pl.get_allocations(b).consumer_generation is None

    def test_move_to_migration_then_revert_then_confirm(self, any_placement: Placement) -> None:
        pl = any_placement
        src = add_host(pl, "move-src")
        dst = add_host(pl, "move-dst")
        server, migration = new_uuid(), new_uuid()
        pl.claim(server, src, OLD_FLAVOR, "p", "u")

        # a move starts: the source allocation goes to the migration, the server
        # claims the new flavor on the destination
        pl.move_allocations(server, migration, "p", "u")
        pl.move_allocations(server, migration, "p", "u")  # a repeated step is a no-op
        assert pl.get_allocations(server).allocations == {}
        assert pl.get_allocations(migration).allocations == {src: OLD_FLAVOR}
        pl.claim(server, dst, NEW_FLAVOR, "p", "u")
        assert pl.usages(src) == OLD_FLAVOR and pl.usages(dst) == NEW_FLAVOR

        # the target must be empty unless the caller drops its allocations
        with pytest.raises(ConsumerGenerationConflict, match="already holds allocations"):
            pl.move_allocations(migration, server, "p", "u")

        # revert: the server gets its source allocation back, the destination one goes
        pl.move_allocations(migration, server, "p", "u", drop_target=True)
        assert pl.all_consumers() == {server: {src: OLD_FLAVOR}}
        assert pl.usages(dst) == {"VCPU": 0, "MEMORY_MB": 0, "DISK_GB": 0}

        # again, this time confirmed: the migration's allocation is dropped
        pl.move_allocations(server, migration, "p", "u")
        pl.claim(server, dst, NEW_FLAVOR, "p", "u")
        pl.delete_allocations(migration)
        assert pl.all_consumers() == {server: {dst: NEW_FLAVOR}}
        assert pl.usages(src) == {"VCPU": 0, "MEMORY_MB": 0, "DISK_GB": 0}

    def test_move_style_replace_of_two_consumers(self, any_placement: Placement) -> None:
        pl = any_placement
        src = add_host(pl, "rmove-src")
        dst = add_host(pl, "rmove-dst")
        server, migration = new_uuid(), new_uuid()
        pl.claim(server, src, OLD_FLAVOR, "p", "u")
        src_gen = pl.get_provider(src).generation
        pl.replace_allocations(
            {
                migration: AllocationRequest({src: OLD_FLAVOR}, "p", "u", None),
                server: AllocationRequest({dst: NEW_FLAVOR}, "p", "u", 1),
            }
        )
        assert pl.all_consumers() == {migration: {src: OLD_FLAVOR}, server: {dst: NEW_FLAVOR}}
        assert pl.get_provider(src).generation == src_gen + 1

    def test_delete_allocations_is_idempotent(self, any_placement: Placement) -> None:
        pl = any_placement
        rp = add_host(pl, "del-host")
        server = new_uuid()
        pl.claim(server, rp, OLD_FLAVOR, "p", "u")
        pl.delete_allocations(server)
        pl.delete_allocations(server)
        pl.delete_allocations(new_uuid())
        assert pl.all_consumers() == {}
        assert pl.usages(rp) == {"VCPU": 0, "MEMORY_MB": 0, "DISK_GB": 0}

    def test_concurrent_claims_never_overcommit(self, any_placement: Placement) -> None:
        pl = any_placement
        rp = new_uuid()
        pl.ensure_provider(rp, "race-host", {"VCPU": Inventory(5)})
        start = threading.Barrier(8)
        won: list[str] = []
        lost: list[Exception] = []

        def racer() -> None:
            consumer = new_uuid()
            start.wait()
            try:
                pl.claim(consumer, rp, {"VCPU": 1}, "p", "u")
                won.append(consumer)
            except Exception as exc:
                lost.append(exc)

        threads = [threading.Thread(target=racer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 5
        assert len(lost) == 3 and all(isinstance(e, InsufficientCapacity) for e in lost)
        assert pl.usages(rp) == {"VCPU": 5}
        assert pl.get_provider(rp).generation == 1 + 5
        assert set(pl.provider_allocations(rp)) == set(won)

    def test_provider_delete_refused_while_in_use(self, any_placement: Placement) -> None:
        pl = any_placement
        rp = add_host(pl, "busy-host")
        server = new_uuid()
        pl.claim(server, rp, OLD_FLAVOR, "p", "u")
        with pytest.raises(ProviderInUse, match=server) as err:
            pl.delete_provider(rp)
        assert "'busy-host'" in str(err.value)
        pl.delete_allocations(server)
        pl.delete_provider(rp)
        assert pl.list_providers() == []
        assert rp not in pl.capacity_snapshot()
        with pytest.raises(ResourceProviderNotFound):
            pl.delete_provider(rp)


# ---------------------------------------------------------------------------
# Everything else, on SQLite
# ---------------------------------------------------------------------------


def test_unknown_provider_is_not_found(placement: Placement) -> None:
    missing = new_uuid()
    for call in (
        lambda: placement.get_provider(missing),
        lambda: placement.get_inventories(missing),
        lambda: placement.usages(missing),
        lambda: placement.provider_allocations(missing),
        lambda: placement.claim(new_uuid(), missing, {"VCPU": 1}, "p", "u"),
    ):
        with pytest.raises(ResourceProviderNotFound, match=missing) as err:
            call()
        assert isinstance(err.value, NotFound) and err.value.code == 404


def test_unknown_consumer_has_no_allocations(placement: Placement) -> None:
    found = placement.get_allocations(new_uuid())
    assert found.allocations == {}
    assert (found.consumer_generation, found.project_id, found.user_id) == (None, None, None)


def test_error_classes_map_to_http_statuses() -> None:
    assert issubclass(InsufficientCapacity, Conflict)
    assert issubclass(AllocationConstraintViolated, InsufficientCapacity)
    assert issubclass(ConsumerGenerationConflict, Conflict)
    assert issubclass(ResourceProviderGenerationConflict, ConcurrentUpdate)
    assert issubclass(ProviderInUse, Conflict)
    assert issubclass(ResourceProviderNotFound, NotFound)
    assert issubclass(InvalidAllocationRequest, BadRequest)


def test_claim_is_idempotent_for_the_same_request_only(placement: Placement) -> None:
    h1 = add_host(placement, "idem-1")
    h2 = add_host(placement, "idem-2")
    server = new_uuid()
    placement.claim(server, h1, OLD_FLAVOR, "p", "u")
    generation = placement.get_provider(h1).generation
    placement.claim(server, h1, OLD_FLAVOR, "p", "u")
    assert placement.get_provider(h1).generation == generation
    with pytest.raises(ConsumerGenerationConflict, match="idem-1"):
        placement.claim(server, h2, OLD_FLAVOR, "p", "u")
    with pytest.raises(ConsumerGenerationConflict):
        placement.claim(server, h1, NEW_FLAVOR, "p", "u")
    assert placement.all_consumers() == {server: {h1: OLD_FLAVOR}}


def test_zero_amounts_are_ignored_and_negative_ones_refused(placement: Placement) -> None:
    rp = add_host(placement, "zero-host")
    server = new_uuid()
    placement.claim(server, rp, {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 0}, "p", "u")
    assert placement.get_allocations(server).allocations == {rp: {"VCPU": 1, "MEMORY_MB": 512}}
    with pytest.raises(InvalidAllocationRequest, match="non-negative"):
        placement.claim(new_uuid(), rp, {"VCPU": -1}, "p", "u")
    with pytest.raises(InvalidAllocationRequest, match="names no resources"):
        placement.claim(new_uuid(), rp, {"DISK_GB": 0}, "p", "u")


def test_min_max_step_and_unknown_class_are_enforced(placement: Placement) -> None:
    rp = new_uuid()
    placement.ensure_provider(
        rp,
        "units-host",
        {"MEMORY_MB": Inventory(8192, min_unit=256, max_unit=4096, step_size=256)},
    )
    for amount in (128, 8192, 300):
        with pytest.raises(AllocationConstraintViolated, match="between 256 and 4096 in steps"):
            placement.claim(new_uuid(), rp, {"MEMORY_MB": amount}, "p", "u")
    with pytest.raises(AllocationConstraintViolated, match="no VCPU inventory"):
        placement.claim(new_uuid(), rp, {"VCPU": 1}, "p", "u")
    placement.claim(new_uuid(), rp, {"MEMORY_MB": 4096}, "p", "u")
    snap = placement.capacity_snapshot()[rp]
    assert snap.fits({"MEMORY_MB": 4096})
    assert "not a multiple" in (snap.refusal({"MEMORY_MB": 300}) or "")
    assert not snap.fits({"VCPU": 1})


def test_resize_on_the_same_host_needs_only_the_growth(placement: Placement) -> None:
    rp = new_uuid()
    placement.ensure_provider(rp, "grow-host", {"VCPU": Inventory(6, max_unit=8)})
    server = new_uuid()
    placement.claim(server, rp, {"VCPU": 4}, "p", "u")
    placement.replace_allocations({server: AllocationRequest({rp: {"VCPU": 6}}, "p", "u", 1)})
    assert placement.usages(rp)["VCPU"] == 6
    with pytest.raises(InsufficientCapacity, match="requested 1, free 0"):
        placement.replace_allocations({server: AllocationRequest({rp: {"VCPU": 7}}, "p", "u", 2)})


def test_shrinking_an_overcommitted_provider_is_allowed(placement: Placement) -> None:
    rp = new_uuid()
    placement.ensure_provider(rp, "shrunk", {"VCPU": Inventory(8)})
    server = new_uuid()
    placement.claim(server, rp, {"VCPU": 6}, "p", "u")
    placement.ensure_provider(rp, "shrunk", {"VCPU": Inventory(4, max_unit=8)})  # lost CPUs
    assert placement.capacity_snapshot()[rp].free("VCPU") == -2
    placement.replace_allocations({server: AllocationRequest({rp: {"VCPU": 5}}, "p", "u", 1)})
    with pytest.raises(InsufficientCapacity):
        placement.claim(new_uuid(), rp, {"VCPU": 1}, "p", "u")


def test_inventory_in_use_cannot_be_removed(placement: Placement) -> None:
    rp = add_host(placement, "inv-host")
    placement.claim(new_uuid(), rp, {"VCPU": 1}, "p", "u")
    with pytest.raises(InventoryInUse, match="VCPU"):
        placement.ensure_provider(rp, "inv-host", {"MEMORY_MB": Inventory(16384)})
    generation = placement.ensure_provider(
        rp, "inv-host", {"VCPU": Inventory(8), "MEMORY_MB": Inventory(16384)}
    )
    assert set(placement.get_inventories(rp)) == {"VCPU", "MEMORY_MB"}
    assert generation == placement.get_provider(rp).generation


def test_inventory_is_validated() -> None:
    with pytest.raises(InvalidInventory, match="reserved"):
        Inventory(4, reserved=5)
    with pytest.raises(InvalidInventory, match="max_unit"):
        Inventory(4, min_unit=2, max_unit=1)
    with pytest.raises(InvalidInventory, match="allocation_ratio"):
        Inventory(4, allocation_ratio=0)
    assert Inventory(16).max_unit == 16
    assert Inventory(8, reserved=2, allocation_ratio=1.5).capacity == 9


def test_provider_names_are_unique_and_renames_bump(placement: Placement) -> None:
    rp = add_host(placement, "name-a")
    with pytest.raises(ProviderNameConflict, match="name-a"):
        placement.ensure_provider(new_uuid(), "name-a", host_inventory())
    generation = placement.get_provider(rp).generation
    assert placement.ensure_provider(rp, "name-b", host_inventory()) == generation + 1
    assert [p.uuid for p in placement.list_providers(name="name-b")] == [rp]
    assert placement.list_providers(name="name-a") == []
    assert placement.capacity_snapshot()[rp].name == "name-b"


def test_nested_providers_report_parent_and_root(placement: Placement) -> None:
    root = add_host(placement, "root-host")
    child = new_uuid()
    placement.ensure_provider(child, "root-host_numa0", {}, parent_provider_uuid=root)
    grandchild = new_uuid()
    placement.ensure_provider(grandchild, "root-host_pf0", {}, parent_provider_uuid=child)
    views = {v.uuid: v for v in placement.list_providers()}
    assert views[root].parent_provider_uuid is None and views[root].root_provider_uuid == root
    assert views[child].parent_provider_uuid == root and views[child].root_provider_uuid == root
    assert views[grandchild].parent_provider_uuid == child
    assert views[grandchild].root_provider_uuid == root
    assert views[child].generation == 0
    with pytest.raises(ProviderInUse, match="child"):
        placement.delete_provider(root)
    with pytest.raises(ResourceProviderNotFound, match="parent"):
        placement.ensure_provider(new_uuid(), "orphan", {}, parent_provider_uuid=new_uuid())


def test_capacity_snapshot_follows_every_change(placement: Placement) -> None:
    hosts = [add_host(placement, f"snap-{i}") for i in range(5)]
    first = placement.capacity_snapshot()
    assert set(first) == set(hosts)
    assert all(pc.used == {"VCPU": 0, "MEMORY_MB": 0, "DISK_GB": 0} for pc in first.values())

    server = new_uuid()
    placement.claim(server, hosts[0], OLD_FLAVOR, "p", "u")
    second = placement.capacity_snapshot()
    assert second[hosts[0]].used == OLD_FLAVOR
    assert second[hosts[1]] is first[hosts[1]]  # unchanged providers are not re-read

    placement.ensure_provider(hosts[1], "snap-1", host_inventory(vcpus=32))
    placement.delete_provider(hosts[4])  # the highest id: must not be handed out again
    newcomer = add_host(placement, "snap-new")
    third = placement.capacity_snapshot()
    assert third[hosts[1]].capacity["VCPU"] == 32
    assert hosts[4] not in third
    assert third[newcomer].name == "snap-new"
    assert third[newcomer].used["VCPU"] == 0

    placement.delete_allocations(server)
    assert placement.capacity_snapshot()[hosts[0]].used["VCPU"] == 0
    with pytest.raises(TypeError):
        third[newcomer].used["VCPU"] = 5  # type: ignore[index]

    # a second Placement on the same database sees the same thing
    other = Placement(placement.db_url)
    assert other.capacity_snapshot() == placement.capacity_snapshot()


def test_all_consumers_and_provider_allocations(placement: Placement) -> None:
    h1 = add_host(placement, "audit-1")
    h2 = add_host(placement, "audit-2")
    a, b = new_uuid(), new_uuid()
    placement.claim(a, h1, OLD_FLAVOR, "p1", "u1")
    placement.replace_allocations(
        {b: AllocationRequest({h1: {"VCPU": 1}, h2: {"DISK_GB": 10}}, "p2", "u2")}
    )
    assert placement.all_consumers() == {
        a: {h1: OLD_FLAVOR},
        b: {h1: {"VCPU": 1}, h2: {"DISK_GB": 10}},
    }
    assert placement.provider_allocations(h1) == {a: OLD_FLAVOR, b: {"VCPU": 1}}
    assert placement.provider_allocations(h2) == {b: {"DISK_GB": 10}}
    found = placement.get_allocations(b)
    assert (found.project_id, found.user_id, found.consumer_generation) == ("p2", "u2", 1)
    assert found.provider_generations == {
        h1: placement.get_provider(h1).generation,
        h2: placement.get_provider(h2).generation,
    }


def test_replace_on_unknown_provider_changes_nothing(placement: Placement) -> None:
    rp = add_host(placement, "known")
    server = new_uuid()
    placement.claim(server, rp, OLD_FLAVOR, "p", "u")
    missing = new_uuid()
    with pytest.raises(ResourceProviderNotFound, match=missing):
        placement.replace_allocations(
            {server: AllocationRequest({missing: OLD_FLAVOR}, "p", "u", 1)}
        )
    assert placement.all_consumers() == {server: {rp: OLD_FLAVOR}}


def test_concurrent_replace_and_claim_keep_usage_exact(placement: Placement) -> None:
    """Mixed writers (claims, resizes, moves, deletes) on two small hosts: usage
    always equals the sum of allocations and never exceeds capacity."""
    h1 = add_host(placement, "mix-1", vcpus=6, memory_mb=6144, disk_gb=60)
    h2 = add_host(placement, "mix-2", vcpus=6, memory_mb=6144, disk_gb=60)
    errors: list[Exception] = []

    def worker(seed: int) -> None:
        for i in range(15):
            server, migration = new_uuid(), new_uuid()
            src, dst = (h1, h2) if (seed + i) % 2 else (h2, h1)
            try:
                placement.claim(server, src, OLD_FLAVOR, "p", "u")
                placement.replace_allocations(
                    {
                        migration: AllocationRequest({src: OLD_FLAVOR}, "p", "u", None),
                        server: AllocationRequest({dst: OLD_FLAVOR}, "p", "u", 1),
                    }
                )
                placement.delete_allocations(migration)
                placement.delete_allocations(server)
            except InsufficientCapacity:
                placement.delete_allocations(server)
                placement.delete_allocations(migration)
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert placement.all_consumers() == {}
    for rp in (h1, h2):
        assert placement.usages(rp) == {"VCPU": 0, "MEMORY_MB": 0, "DISK_GB": 0}
