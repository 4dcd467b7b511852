"""Availability zones: a host's zone is the ``availability_zone`` metadata of its aggregates.

A host in no zoned aggregate is in the default zone (``nova`` unless configured).
Each function is one query against the API DB.  Should a host sit in two
aggregates naming different zones (the API refuses that, but rows can be edited
by hand), the aggregate created first wins, so the answer stays deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import bindparam, select

from atoll.db.api_models import AggregateHost, AggregateMetadata
from atoll.db.session import get_engine

AZ_KEY = "availability_zone"
DEFAULT_ZONE = "nova"


# Built once so that SQLAlchemy's compiled-statement cache is hit on every call.
_ALL_HOST_ZONES = (
    select(AggregateHost.host, AggregateMetadata.value)
    .join(AggregateMetadata, AggregateMetadata.aggregate_id == AggregateHost.aggregate_id)
    .where(AggregateMetadata.key == AZ_KEY)
    .order_by(AggregateHost.aggregate_id.desc())
)
_SOME_HOST_ZONES = _ALL_HOST_ZONES.where(AggregateHost.host.in_(bindparam("hosts", expanding=True)))


class HostZones(dict[str, str]):
    """host -> zone; looking up a host in no zoned aggregate gives the default zone."""

    def __init__(self, zones: dict[str, str], default_zone: str) -> None:
        super().__init__(zones)
        self.default_zone = default_zone

    def __missing__(self, host: str) -> str:
        return self.default_zone


def host_zones(
    api_db_url: str, default_zone: str = DEFAULT_ZONE, hosts: Iterable[str] | None = None
) -> HostZones:
    """Every host that is in a zoned aggregate (or only those of ``hosts``), and its zone.

    The result holds only the zoned hosts, but ``zones[host]`` answers
    ``default_zone`` for any other host (``zones.get(host)`` still gives None).
    """
    with get_engine(api_db_url).connect() as conn:
        if hosts is None:
            rows = conn.execute(_ALL_HOST_ZONES).all()
        else:
            rows = conn.execute(_SOME_HOST_ZONES, {"hosts": list(hosts)}).all()
    # Later rows overwrite earlier ones: ordered newest aggregate first, the oldest wins.
    return HostZones({host: zone for host, zone in rows if zone}, default_zone)


def zone_of(api_db_url: str, host: str, default_zone: str = DEFAULT_ZONE) -> str:
    """The zone of one host (``default_zone`` when no aggregate gives it one)."""
    stmt = (
        select(AggregateMetadata.value)
        .join(AggregateHost, AggregateMetadata.aggregate_id == AggregateHost.aggregate_id)
        .where(AggregateMetadata.key == AZ_KEY, AggregateHost.host == host)
        .order_by(AggregateHost.aggregate_id)
        .limit(1)
    )
    with get_engine(api_db_url).connect() as conn:
        zone = conn.execute(stmt).scalar()
    return zone or default_zone


def list_zones(api_db_url: str) -> list[str]:
    """The zones that aggregates define, sorted (the default zone is not listed)."""
    stmt = (
        select(AggregateMetadata.value)
        .where(AggregateMetadata.key == AZ_KEY)
        .distinct()
        .order_by(AggregateMetadata.value)
    )
    with get_engine(api_db_url).connect() as conn:
        return [zone for zone in conn.execute(stmt).scalars() if zone]
