"""Placement micro-benchmark: allocation writes and the scheduler's capacity snapshot.

    python bench/placement.py [--providers 1000] [--writes 2000] [--json out.json]
                              [--db-url URL]

By default it runs on a fresh SQLite file (WAL) in a temporary directory, as the
embedded mode does.  It measures, single-threaded:

- claim: a fresh consumer claims a flavor on one provider (one consumer, one provider)
- replace (move-style): one replace_allocations call with two consumers, as a move
  starts: the server's source allocation goes to the migration and the server
  claims the new flavor on the destination
- capacity_snapshot over all providers: cold (a new Placement, everything read),
  warm with nothing changed, and warm after one allocation write since the last call
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from atoll.db.session import get_engine
from atoll.placement import AllocationRequest, Inventory, Placement, PlacementBase

OLD_FLAVOR = {"VCPU": 2, "MEMORY_MB": 2048, "DISK_GB": 20}
NEW_FLAVOR = {"VCPU": 4, "MEMORY_MB": 4096, "DISK_GB": 40}


def host_inventory() -> dict[str, Inventory]:
    return {
        "VCPU": Inventory(64, allocation_ratio=16.0),
        "MEMORY_MB": Inventory(1_048_576, reserved=512, allocation_ratio=1.5),
        "DISK_GB": Inventory(100_000),
    }


def summarize(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    ms = [s / 1e6 for s in ordered]

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, round(p / 100 * (len(ms) - 1)))]

    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 4),
        "p95_ms": round(pct(95), 4),
        "p99_ms": round(pct(99), 4),
        "mean_ms": round(statistics.fmean(ms), 4),
    }


def timed(fn: Callable[[], object]) -> int:
    start = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - start


def run(db_url: str, providers: int, writes: int, console: Console) -> dict[str, object]:
    engine = get_engine(db_url)
    PlacementBase.metadata.drop_all(engine)
    PlacementBase.metadata.create_all(engine)
    pl = Placement(db_url)

    hosts = [str(uuid.uuid4()) for _ in range(providers)]
    setup_ns = [
        timed(lambda i=i, h=h: pl.ensure_provider(h, f"bench-host-{i}", host_inventory()))
        for i, h in enumerate(hosts)
    ]
    console.print(
        f"created {providers} providers ({statistics.median(setup_ns) / 1e6:.3f} ms each)"
    )

    # warm-up: statement compilation, connection pool
    for _ in range(50):
        c = str(uuid.uuid4())
        pl.claim(c, hosts[0], OLD_FLAVOR, "bench", "bench")
        pl.delete_allocations(c)

    servers = [str(uuid.uuid4()) for _ in range(writes)]
    claim_ns = [
        timed(lambda s=s, i=i: pl.claim(s, hosts[i % providers], OLD_FLAVOR, "bench", "bench"))
        for i, s in enumerate(servers)
    ]

    replace_ns = []
    for i, server in enumerate(servers):
        src = hosts[i % providers]
        dst = hosts[(i + 1) % providers]
        migration = str(uuid.uuid4())
        changes = {
            migration: AllocationRequest({src: OLD_FLAVOR}, "bench", "bench", None),
            server: AllocationRequest({dst: NEW_FLAVOR}, "bench", "bench", 1),
        }
        replace_ns.append(timed(lambda c=changes: pl.replace_allocations(c)))

    rounds = 200
    cold_ns = [timed(lambda: Placement(db_url).capacity_snapshot()) for _ in range(20)]
    pl.capacity_snapshot()
    warm_ns = [timed(pl.capacity_snapshot) for _ in range(rounds)]
    after_write_ns = []
    for i in range(rounds):
        c = str(uuid.uuid4())
        pl.claim(c, hosts[(i * 7) % providers], {"VCPU": 1}, "bench", "bench")
        after_write_ns.append(timed(pl.capacity_snapshot))
    snapshot = pl.capacity_snapshot()
    assert len(snapshot) == providers

    return {
        "db": make_url(db_url).get_backend_name(),
        "providers": providers,
        "writes": writes,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "ensure_provider_create": summarize(setup_ns),
        "claim": summarize(claim_ns),
        "replace_allocations_move_2_consumers": summarize(replace_ns),
        "capacity_snapshot_cold": summarize(cold_ns),
        "capacity_snapshot_warm_unchanged": summarize(warm_ns),
        "capacity_snapshot_after_one_write": summarize(after_write_ns),
    }


def measure(providers: int = 1000, writes: int = 500) -> dict[str, float]:
    """The headline figures, for other benchmarks' tables (bench/lifecycle.py)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = run(f"sqlite:///{tmp}/placement.sqlite", providers, writes, Console(quiet=True))
    return {
        "allocation_write_ms_p50": result["claim"]["p50_ms"],  # type: ignore[index]
        "allocation_write_ms_p95": result["claim"]["p95_ms"],  # type: ignore[index]
        "move_write_ms_p50": result["replace_allocations_move_2_consumers"]["p50_ms"],  # type: ignore[index]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument(
        "--db-url", help="database to use (its placement tables are dropped!); default: temp SQLite"
    )
    args = parser.parse_args(argv)
    console = Console()

    with tempfile.TemporaryDirectory(prefix="atoll-bench-") as tmp:
        db_url = args.db_url or f"sqlite:///{tmp}/placement.db"
        results = run(db_url, args.providers, args.writes, console)
        get_engine(db_url).dispose()

    table = Table(
        title=f"atoll placement on {results['db']}: {args.providers} providers, "
        f"{args.writes} writes"
    )
    table.add_column("operation")
    for col in ("n", "p50 ms", "p95 ms", "p99 ms", "mean ms"):
        table.add_column(col, justify="right")
    labels = {
        "claim": "claim (fresh consumer, 1 provider)",
        "replace_allocations_move_2_consumers": "replace_allocations (move: 2 consumers)",
        "capacity_snapshot_cold": f"capacity_snapshot cold ({args.providers} providers)",
        "capacity_snapshot_warm_unchanged": "capacity_snapshot warm, unchanged",
        "capacity_snapshot_after_one_write": "capacity_snapshot warm, 1 write since",
        "ensure_provider_create": "ensure_provider (create)",
    }
    for key, label in labels.items():
        row = results[key]
        assert isinstance(row, dict)
        table.add_row(
            label,
            str(row["n"]),
            f"{row['p50_ms']:.3f}",
            f"{row['p95_ms']:.3f}",
            f"{row['p99_ms']:.3f}",
            f"{row['mean_ms']:.3f}",
        )
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
