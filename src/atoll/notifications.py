"""Versioned notifications with the compute API's event types.

Every notification goes to an in-process sink (a bounded buffer that tests and
the admin API read) and, when a transport is attached, to the
``atoll.notifications`` topic exchange so other processes can listen.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import uuid
from typing import Any

from atoll.db.types import utcnow

LOG = logging.getLogger(__name__)

SINK_SIZE = 10_000


class Notifier:
    def __init__(self, publisher_id: str = "atoll", sink_size: int = SINK_SIZE) -> None:
        self.publisher_id = publisher_id
        self._sink: collections.deque[dict[str, Any]] = collections.deque(maxlen=sink_size)
        self._lock = threading.Lock()
        self._publisher: _Publisher | None = None

    def attach_transport(self, transport: Any) -> None:
        """Also publish every notification on ``transport`` (from a thread of its own,
        so that a slow broker never slows a workflow step)."""
        self._publisher = _Publisher(transport)

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    def emit(
        self,
        event_type: str,
        payload: dict[str, Any],
        *,
        priority: str = "INFO",
        publisher: str | None = None,
    ) -> dict[str, Any]:
        message = {
            "message_id": str(uuid.uuid4()),
            "event_type": event_type,
            "priority": priority,
            "publisher_id": publisher or self.publisher_id,
            "timestamp": utcnow().isoformat(),
            "payload": {
                "nova_object.name": _object_name(event_type),
                "nova_object.namespace": "nova",
                "nova_object.version": "1.0",
                "nova_object.data": payload,
            },
        }
        with self._lock:
            self._sink.append(message)
        if self._publisher is not None:
            self._publisher.submit(message)
        LOG.debug("notification %s", event_type)
        return message

    def instance(self, event_type: str, instance: dict[str, Any], **extra: Any) -> None:
        payload = {
            "uuid": instance.get("uuid"),
            **{k: v for k, v in instance.items() if k != "uuid"},
        }
        payload.update(extra)
        self.emit(
            event_type, payload, priority="ERROR" if event_type.endswith(".error") else "INFO"
        )

    def list(self, instance_uuid: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._sink)[since:]
        if instance_uuid:
            items = [
                n for n in items if n["payload"]["nova_object.data"].get("uuid") == instance_uuid
            ]
        return items

    def clear(self) -> None:
        with self._lock:
            self._sink.clear()


def _object_name(event_type: str) -> str:
    if event_type.startswith("compute_task."):
        return "ComputeTaskPayload"
    if event_type == "instance.exists":
        return "InstanceExistsPayload"
    if event_type.startswith("instance.resize"):
        return "InstanceActionResizePrepPayload"
    return "InstanceActionPayload"


class _Publisher:
    """Publishes notifications on a transport from one thread with one producer."""

    QUEUE_SIZE = 10_000

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(self.QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
        self._thread.start()

    def submit(self, message: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            LOG.warning("notification queue full; %s not published", message["event_type"])

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        from kombu import Producer

        from atoll.bus.transport import NOTIFY_EXCHANGE

        producer = None
        while (message := self._queue.get()) is not None:
            try:
                if producer is None:
                    producer = Producer(
                        self.transport.connection().channel(), exchange=NOTIFY_EXCHANGE
                    )
                    producer.declare()
                producer.publish(
                    message,
                    routing_key=f"notifications.{message['priority'].lower()}",
                    serializer="json",
                )
            except Exception:
                LOG.warning(
                    "could not publish notification %s", message["event_type"], exc_info=True
                )
                producer = None
                self.transport.close()
        self.transport.close()
