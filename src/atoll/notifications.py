"""Versioned notifications with the compute API's event types.

Every notification goes to an in-process sink (a bounded buffer that tests and
the admin API read) and, when a transport is attached, to the
``atoll.notifications`` topic exchange so other processes can listen.
"""

from __future__ import annotations

import collections
import logging
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
        self._transports: list[Any] = []

    def attach_transport(self, transport: Any) -> None:
        self._transports.append(transport)

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
        for transport in self._transports:
            _publish(transport, message)
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


def _publish(transport: Any, message: dict[str, Any]) -> None:
    from kombu import Producer

    from atoll.bus.transport import NOTIFY_EXCHANGE

    try:
        Producer(transport.connection().channel(), exchange=NOTIFY_EXCHANGE).publish(
            message,
            routing_key=f"notifications.{message['priority'].lower()}",
            serializer="json",
            declare=[NOTIFY_EXCHANGE],
        )
    except Exception:
        LOG.warning("could not publish notification %s", message["event_type"], exc_info=True)
        transport.close()
