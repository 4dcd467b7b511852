"""DBOS set-up: one instance per process, workflows registered at import.

The application version is set explicitly (settings.app_version): DBOS only
recovers workflows of its own version, and the default (a hash of the code)
would strand in-flight moves after any upgrade.

A process that runs workflows (a conductor, or embedded mode) launches DBOS and
starts workflows itself.  An API-only process does not run any: it puts them on
the conductors' queue in the workflow DB through a DBOS client, and whichever
conductor polls first runs it.  Either way a workflow is started under a stable
id, so starting the same id twice runs it once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dbos import DBOS, DBOSClient, DBOSConfig, SetWorkflowID

from atoll.config import Settings
from atoll.db.session import get_engine

LOG = logging.getLogger(__name__)

QUEUE = "atoll-conductor"

_local = False  # DBOS is launched in this process
_client: DBOSClient | None = None
_client_version = ""


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
    DBOS.register_queue(
        QUEUE,
        polling_interval_sec=settings.workflow_queue_polling_interval,
        on_conflict="always_update",
    )
    global _local
    _local = True
    LOG.info(
        "workflow engine up (version %s, executor %s)",
        settings.app_version,
        executor_id or "local",
    )


def use_client(settings: Settings) -> None:
    """An API-only process: start workflows by queueing them for the conductors."""
    global _client, _client_version
    engine_ = (
        get_engine(settings.workflow_db) if settings.workflow_db.startswith("sqlite") else None
    )
    if engine_ is not None:
        _client = DBOSClient(system_database_engine=engine_, lazy=True)
    else:
        _client = DBOSClient(system_database_url=settings.workflow_db, lazy=True)
    _client_version = settings.app_version


def recover(executor_id: str) -> list[Any]:
    """Re-queue the pending workflows of a dead executor (this process must run DBOS)."""
    return DBOS._recover_pending_workflows([executor_id])


def shutdown(grace_seconds: int = 5) -> None:
    """Stop the engine; running workflows get ``grace_seconds`` to finish, and any
    still running are resumed by the next conductor from their last step."""
    global _local, _client
    if _client is not None:
        _client.destroy()
        _client = None
    if _local:
        _local = False
        DBOS.destroy(destroy_registry=False, workflow_completion_timeout_sec=grace_seconds)


def start(workflow: Callable[..., Any], workflow_id: str, *args: Any) -> str:
    """Start a workflow under a stable id: starting the same id twice runs it once."""
    if _local:
        with SetWorkflowID(workflow_id):
            handle = DBOS.start_workflow(workflow, *args)
        return handle.get_workflow_id()
    if _client is None:
        raise RuntimeError("no workflow engine in this process (launch() or use_client() first)")
    from dbos._registrations import get_dbos_func_name

    handle = _client.enqueue(
        {
            "workflow_name": get_dbos_func_name(workflow),
            "queue_name": QUEUE,
            "workflow_id": workflow_id,
            "app_version": _client_version,
        },
        *args,
    )
    return handle.get_workflow_id()


def status(workflow_id: str) -> Any:
    """DBOS's status of a workflow (None when there is no such workflow)."""
    if _local:
        return DBOS.get_workflow_status(workflow_id)
    if _client is None:
        raise RuntimeError("no workflow engine in this process")
    try:
        return _client.retrieve_workflow(workflow_id).get_status()
    except Exception as exc:
        if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
            return None
        raise


def unfinished() -> list[Any]:
    """Every workflow that is queued or running (DBOS statuses)."""
    statuses = ["PENDING", "ENQUEUED"]
    if _local:
        return list(DBOS.list_workflows(status=statuses, load_input=False, load_output=False))
    if _client is None:
        raise RuntimeError("no workflow engine in this process")
    return list(_client.list_workflows(status=statuses, load_input=False, load_output=False))


def steps(workflow_id: str) -> list[Any]:
    if _local:
        return list(DBOS.list_workflow_steps(workflow_id))
    if _client is None:
        raise RuntimeError("no workflow engine in this process")
    return list(_client.list_workflow_steps(workflow_id))
