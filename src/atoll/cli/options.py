"""What every atoll command shares: the settings options and how logs look."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from atoll.config import Settings, load_settings

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML settings file (else ATOLL_CONFIG).",
        exists=True,
        dir_okay=False,
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Where SQLite files and guest disks live (else ATOLL_DATA_DIR)."
    ),
]
LogLevelOpt = Annotated[str, typer.Option(help="debug, info, warning or error.")]


def settings(config: Path | None, data_dir: Path | None = None) -> Settings:
    overrides = {"data_dir": data_dir} if data_dir else {}
    return load_settings(config, **overrides)


def setup_logging(level: str) -> None:
    """One format for every service; the pid tells processes apart in shared logs."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
