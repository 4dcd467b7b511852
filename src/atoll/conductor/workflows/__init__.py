"""Every durable workflow; importing this package registers them with DBOS."""

from atoll.conductor.workflows import build, delete, power, volumes  # noqa: F401
