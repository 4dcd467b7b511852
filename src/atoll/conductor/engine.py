"""DBOS set-up: one instance per process, workflows registered at import.

The application version is set explicitly (settings.app_version): DBOS only
recovers workflows of its own version, and the default (a hash of the code)
would strand in-flight moves after any upgrade.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dbos import DBOS, DBOSConfig, SetWorkflowID

from atoll.config import Settings
from atoll.db.session import get_engine

LOG = logging.getLogger(__name__)


def launch(settings: Settings, executor_id: str | None = None) -> None:
    import atoll.conductor.workflows  # noqa: F401  (registers every workflow)

    config: DBOSConfig = {
        "name": "atoll",
        "system_database_url": settings.workflow_db,
        "application_version": settings.app_version,
        "run_admin_server": False,
        "log_level": "WARNING",
        "notification_listener_polling_interval_sec": 0.05,
    }
    if settings.workflow_db.startswith("sqlite"):
        # DBOS's own SQLite engine keeps the rollback journal, where its polling
        # readers block every writer; ours runs WAL with synchronous=NORMAL.
        config["system_database_engine"] = get_engine(settings.workflow_db)
    if executor_id:
        config["executor_id"] = executor_id
    DBOS(config=config)
    DBOS.launch()
    LOG.info("workflow engine up (version %s)", settings.app_version)


def shutdown(grace_seconds: int = 5) -> None:
    """Stop the engine; running workflows get ``grace_seconds`` to finish, and any
    still running are resumed by the next conductor from their last step."""
    DBOS.destroy(destroy_registry=False, workflow_completion_timeout_sec=grace_seconds)


def start(workflow: Callable[..., Any], workflow_id: str, *args: Any) -> str:
    """Start a workflow under a stable id: starting the same id twice runs it once."""
    with SetWorkflowID(workflow_id):
        handle = DBOS.start_workflow(workflow, *args)
    return handle.get_workflow_id()
