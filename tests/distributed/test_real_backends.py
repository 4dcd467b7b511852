"""The same code on production backends: the API DB and cells on PostgreSQL and
MariaDB, placement and the services on their own databases, and each cell's
transport on RabbitMQ. Only configuration differs from embedded mode."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.dbs import RABBIT_URL, mysql_db, postgres_db
from tests.harness import running_atoll

pytestmark = [pytest.mark.postgres, pytest.mark.mysql, pytest.mark.rabbit]


def test_lifecycle_on_postgres_mariadb_and_rabbitmq(tmp_path: Path) -> None:
    vhost_suffix = uuid.uuid4().hex[:6]
    with (
        postgres_db("atoll_api") as api_db,
        postgres_db("atoll_placement") as placement_db,
        mysql_db("atoll_services") as services_db,
        running_atoll(
            tmp_path,
            api_db_url=api_db,
            placement_db_url=placement_db,
            services_db_url=services_db,
            transport_url=RABBIT_URL,
            app_version=f"test-{vhost_suffix}",
        ) as atoll,
    ):
        cells = {c.name: c for c in atoll.runtime.cells.refresh()}
        assert cells["cell1"].transport_url == RABBIT_URL
        server = atoll.create_server(name="on-real-backends", tags=["test"])
        sid = server["id"]
        atoll.user.ok("POST", f"/servers/{sid}/action", 202, json={"os-stop": None})
        assert atoll.wait_for(atoll.user, sid, "SHUTOFF")["OS-EXT-STS:power_state"] == 4
        atoll.assert_clean()
        atoll.user.ok("DELETE", f"/servers/{sid}", 204)
        atoll.wait_gone(atoll.user, sid)
        atoll.assert_clean()


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_cells_on_each_database(tmp_path: Path, backend: str) -> None:
    """A cell DB on PostgreSQL or MariaDB next to the embedded API DB."""
    from atoll import bootstrap

    make_db = postgres_db if backend == "postgres" else mysql_db
    with make_db("atoll_cell") as cell_db, running_atoll(tmp_path) as atoll:
        settings = atoll.embedded.settings
        bootstrap.create_cell(settings, "remote", db_url=cell_db)
        bootstrap.add_host(settings, "remote-host", "remote")
        atoll.embedded.start_compute("remote-host")
        server = atoll.create_server(name="remote", availability_zone="nova")
        admin_view = atoll.admin.ok("GET", f"/servers/{server['id']}")["server"]
        assert admin_view["OS-EXT-SRV-ATTR:host"] == "remote-host"
        atoll.assert_clean()
        atoll.user.ok("DELETE", f"/servers/{server['id']}", 204)
        atoll.wait_gone(atoll.user, server["id"])
        atoll.assert_clean()
        atoll.embedded.stop_compute("remote-host")
