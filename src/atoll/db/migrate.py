"""Alembic migration lines: one for the API DB, one for every cell DB, and one each
for placement and the embedded image/volume/network services (their own storage).

`atoll db sync` upgrades them all: the API DB first, because it names the cells.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData

from atoll.db.session import get_engine

LOG = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

LINES: dict[str, str] = {
    "api": "atoll.db.api_models:ApiBase",
    "cell": "atoll.db.cell_models:CellBase",
    "placement": "atoll.placement.models:PlacementBase",
    "services": "atoll.services.models:ServicesBase",
}


def metadata_for(line: str) -> MetaData:
    module, _, attr = LINES[line].partition(":")
    return getattr(importlib.import_module(module), attr).metadata


def alembic_config(line: str, url: str) -> Config:
    if line not in LINES:
        raise ValueError(f"unknown migration line {line!r}; known: {', '.join(LINES)}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR / line))
    cfg.set_main_option("version_locations", str(MIGRATIONS_DIR / line / "versions"))
    cfg.attributes["atoll_url"] = url
    cfg.attributes["atoll_line"] = line
    return cfg


def upgrade(line: str, url: str, revision: str = "head") -> None:
    LOG.info("migrating %s database to %s", line, revision)
    command.upgrade(alembic_config(line, url), revision)


def run_env(context: object) -> None:
    """Body of every line's env.py: run the migrations online on the given URL."""
    from alembic import context as ctx

    cfg = ctx.config
    line = cfg.attributes["atoll_line"]
    url = cfg.attributes["atoll_url"]
    engine = get_engine(url)
    with engine.connect() as connection:
        ctx.configure(
            connection=connection,
            target_metadata=metadata_for(line),
            render_as_batch=True,  # SQLite cannot ALTER most things in place
            compare_type=True,
            version_table=f"alembic_version_{line}",
        )
        with ctx.begin_transaction():
            ctx.run_migrations()
        connection.commit()
