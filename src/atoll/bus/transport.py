"""Kombu connections, one per thread.

Seen on this machine: a kombu connection shared by several threads hangs on
RabbitMQ, so every thread gets its own.  On ``memory://`` every queue must be
declared before another thread publishes to it (messages to an undeclared queue
are dropped), and the polling interval must be short or each call takes ~1 s.
"""

from __future__ import annotations

import threading
from typing import Any

from kombu import Connection, Exchange, Queue

EXCHANGE = Exchange("atoll", type="direct", durable=False)
NOTIFY_EXCHANGE = Exchange("atoll.notifications", type="topic", durable=False)

DEFAULT_POLLING_INTERVAL = 0.001


def queue_for(name: str, *, auto_delete: bool = False) -> Queue:
    return Queue(name, exchange=EXCHANGE, routing_key=name, durable=False, auto_delete=auto_delete)


class Transport:
    """A transport URL plus per-thread connections to it."""

    def __init__(self, url: str, polling_interval: float = DEFAULT_POLLING_INTERVAL) -> None:
        self.url = url
        self.polling_interval = polling_interval
        self._local = threading.local()

    @property
    def is_memory(self) -> bool:
        return self.url.startswith("memory://")

    def new_connection(self) -> Connection:
        options: dict[str, Any] = {}
        if self.is_memory:
            options["polling_interval"] = self.polling_interval
        return Connection(self.url, transport_options=options, connect_timeout=5)

    def connection(self) -> Connection:
        """This thread's connection (created on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.new_connection()
            self._local.conn = conn
        return conn

    def declare(self, queue: Queue) -> None:
        with self.new_connection() as conn:
            queue(conn.channel()).declare()

    def delete_queue(self, name: str) -> None:
        """Remove a topic's queue (a host that is decommissioned; test clean-up)."""
        with self.new_connection() as conn:
            queue_for(name)(conn.channel()).delete()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.release()
            self._local.conn = None
