"""One consumer thread per transport URL for every queue a process listens on.

Each kombu connection wants a thread of its own, and on ``memory://`` every
consuming thread polls.  Embedded mode listens on many queues (a topic per
compute host plus reply queues), so a thread per queue meant thousands of idle
wake-ups a second fighting the request threads for the GIL.  The hub drains all
of a process's queues for one transport from a single thread; callbacks must be
quick (hand real work to a pool).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kombu import Consumer, Message

from atoll.bus.transport import Transport, queue_for

LOG = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 0.05
RECONNECT_DELAY_S = 0.5
SUBSCRIBE_TIMEOUT_S = 10.0

Callback = Callable[[dict[str, Any], Message], None]


class _Subscription:
    def __init__(self, name: str, callback: Callback, auto_delete: bool) -> None:
        self.name = name
        self.callback = callback
        self.auto_delete = auto_delete
        self.ready = threading.Event()
        self.removed = threading.Event()
        self.consumer: Consumer | None = None


class ConsumerHub:
    _lock = threading.Lock()
    _hubs: dict[str, ConsumerHub] = {}

    @classmethod
    def for_transport(cls, transport: Transport) -> ConsumerHub:
        with cls._lock:
            hub = cls._hubs.get(transport.url)
            if hub is None or not hub.alive:
                hub = cls(transport)
                cls._hubs[transport.url] = hub
            return hub

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._subs: dict[str, _Subscription] = {}
        self._pending: list[tuple[str, str]] = []  # ("add" | "remove", name)
        self._state = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bus-hub", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def subscribe(self, name: str, callback: Callback, *, auto_delete: bool = False) -> None:
        """Start consuming ``name``; returns once the queue is being consumed."""
        sub = _Subscription(name, callback, auto_delete)
        with self._state:
            if name in self._subs:
                raise ValueError(f"queue {name} already has a consumer in this process")
            self._subs[name] = sub
            self._pending.append(("add", name))
        if not sub.ready.wait(SUBSCRIBE_TIMEOUT_S):
            raise TimeoutError(f"could not consume {name} within {SUBSCRIBE_TIMEOUT_S}s")

    def unsubscribe(self, name: str) -> None:
        """Stop consuming ``name``; returns once it is no longer consumed (so that the
        same queue can be subscribed again at once, e.g. a compute restarted)."""
        with self._state:
            sub = self._subs.get(name)
            if sub is None:
                return
            self._pending.append(("remove", name))
            empty = len(self._subs) - sum(1 for op, _ in self._pending if op == "remove") <= 0
        if not empty and threading.current_thread() is not self._thread:
            sub.removed.wait(SUBSCRIBE_TIMEOUT_S)
        if empty:
            self._stop.set()
            if threading.current_thread() is not self._thread:
                self._thread.join(timeout=5)
            with ConsumerHub._lock:
                if ConsumerHub._hubs.get(self.transport.url) is self:
                    del ConsumerHub._hubs[self.transport.url]

    def _dispatch(self, name: str) -> Callback:
        def on_message(body: dict[str, Any], message: Message) -> None:
            sub = self._subs.get(name)
            if sub is None:
                message.requeue()
                return
            try:
                sub.callback(body, message)
            except Exception:
                LOG.exception("consumer of %s failed on a message", name)

        return on_message

    def _apply_pending(self, conn: Any) -> None:
        with self._state:
            pending, self._pending = self._pending, []
        for op, name in pending:
            if op == "add":
                sub = self._subs.get(name)
                if sub is None:
                    continue
                consumer = Consumer(
                    conn.channel(),
                    [queue_for(name, auto_delete=sub.auto_delete)],
                    callbacks=[self._dispatch(name)],
                    accept=["json"],
                )
                consumer.consume()
                sub.consumer = consumer
                sub.ready.set()
            else:
                with self._state:
                    sub = self._subs.pop(name, None)
                if sub is not None and sub.consumer is not None:
                    try:
                        sub.consumer.cancel()
                    except Exception:
                        LOG.debug("cancelling the consumer of %s failed", name, exc_info=True)
                if sub is not None:
                    sub.removed.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.transport.new_connection() as conn:
                    with self._state:  # (re)subscribe everything on a fresh connection
                        self._pending = [("add", n) for n in self._subs] + [
                            p for p in self._pending if p[0] == "remove"
                        ]
                    while not self._stop.is_set():
                        self._apply_pending(conn)
                        try:
                            conn.drain_events(timeout=DRAIN_TIMEOUT_S)
                        except TimeoutError:
                            continue
            except Exception:
                if self._stop.is_set():
                    return
                LOG.exception(
                    "bus hub for %s lost its connection; reconnecting",
                    self.transport.url.split("@")[-1],
                )
                time.sleep(RECONNECT_DELAY_S)
