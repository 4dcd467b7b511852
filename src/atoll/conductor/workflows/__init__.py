"""Every durable workflow; importing this package registers them with DBOS."""

from atoll.conductor.workflows import (  # noqa: F401
    build,
    confirm,
    delete,
    move,
    power,
    revert,
    volumes,
)
