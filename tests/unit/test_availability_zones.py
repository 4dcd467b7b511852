"""Availability zones from aggregate metadata, read from a real SQLite API DB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from atoll.availability_zones import host_zones, list_zones, zone_of
from atoll.db.api_models import Aggregate, AggregateHost, AggregateMetadata, ApiBase
from atoll.db.session import dispose_all, get_engine, session_scope


@pytest.fixture
def api_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'api.sqlite'}"
    ApiBase.metadata.create_all(get_engine(url))
    yield url
    dispose_all()


def add_aggregate(url: str, name: str, hosts: list[str], **metadata: str) -> None:
    with session_scope(url) as s:
        agg = Aggregate(name=name)
        agg.hosts = [AggregateHost(host=h) for h in hosts]
        agg.metadata_items = [AggregateMetadata(key=k, value=v) for k, v in metadata.items()]
        s.add(agg)


def test_no_aggregates_means_every_host_is_in_the_default_zone(api_url: str) -> None:
    zones = host_zones(api_url)
    assert zones == {}
    assert zones["host1"] == "nova"
    assert zone_of(api_url, "host1") == "nova"
    assert zone_of(api_url, "host1", default_zone="az0") == "az0"
    assert host_zones(api_url, default_zone="az0")["host1"] == "az0"
    assert list_zones(api_url) == []


def test_zones_come_from_availability_zone_metadata(api_url: str) -> None:
    add_aggregate(api_url, "a1", ["host1", "host3"], availability_zone="cell1")
    add_aggregate(api_url, "a2", ["host2"], availability_zone="cell2")
    add_aggregate(api_url, "ssd", ["host1", "host4"], disk="ssd")  # no zone
    zones = host_zones(api_url)
    assert dict(zones) == {"host1": "cell1", "host3": "cell1", "host2": "cell2"}
    assert zones["host4"] == "nova"
    assert zone_of(api_url, "host2") == "cell2"
    assert zone_of(api_url, "host4") == "nova"
    assert list_zones(api_url) == ["cell1", "cell2"]


def test_a_host_in_two_zoned_aggregates_gets_the_oldest_aggregates_zone(api_url: str) -> None:
    add_aggregate(api_url, "first", ["host1"], availability_zone="az-a")
    add_aggregate(api_url, "second", ["host1", "host2"], availability_zone="az-b")
    assert host_zones(api_url) == {"host1": "az-a", "host2": "az-b"}
    assert zone_of(api_url, "host1") == "az-a"
    assert list_zones(api_url) == ["az-a", "az-b"]


def test_list_zones_is_distinct(api_url: str) -> None:
    add_aggregate(api_url, "r1", ["h1"], availability_zone="az")
    add_aggregate(api_url, "r2", ["h2"], availability_zone="az")
    assert list_zones(api_url) == ["az"]
