"""The one RPC helper: call (request/reply with a timeout) and cast (fire and forget).

A reply is matched to its call by ``msg_id``; a reply for a call that already
timed out, or a second copy of a reply, is dropped, which makes duplicated
messages harmless on the caller's side.

Every request carries its deadline.  A call that gets no reply in time is sent
again (``retries`` more times, as a new message): every compute method is
idempotent, so a lost request or a lost reply costs one timeout, not a failed
move.  The server runs the requests about one instance one at a time, and skips
a request whose deadline passed while it waited: its caller has already given
up on it (and retried or rolled back), so doing it late could only undo what
came after.  Remote errors come back as the same
``atoll.exceptions`` class when one exists, so a ``HypervisorUnavailable`` raised
on a compute is a ``HypervisorUnavailable`` in the conductor.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from kombu import Message, Producer

from atoll import exceptions, faults
from atoll.bus.hub import ConsumerHub
from atoll.bus.transport import EXCHANGE, Transport, queue_for

LOG = logging.getLogger(__name__)


class RemoteError(exceptions.AtollError):
    """A remote service raised an error atoll does not know by name."""


def _error_to_wire(exc: BaseException) -> dict[str, str]:
    return {"class": type(exc).__name__, "message": str(exc)}


def _error_from_wire(data: dict[str, str]) -> exceptions.AtollError:
    cls = getattr(exceptions, data.get("class", ""), None)
    message = data.get("message", "")
    if isinstance(cls, type) and issubclass(cls, exceptions.AtollError):
        err = cls.__new__(cls)
        exceptions.AtollError.__init__(err, message)
        return err
    return RemoteError(f"{data.get('class')}: {message}")


class _ProducerCache(threading.local):
    producer: Producer | None = None


class RpcClient:
    """Sends calls and casts; one reply queue and one listener thread per client."""

    def __init__(self, transport: Transport, default_timeout: float, retries: int = 0) -> None:
        self.transport = transport
        self.default_timeout = default_timeout
        self.retries = retries
        self.reply_topic = f"reply.{uuid.uuid4().hex}"
        self._pending: dict[str, Future[Any]] = {}
        self._pending_lock = threading.Lock()
        self._producers = _ProducerCache()
        try:
            ConsumerHub.for_transport(transport).subscribe(
                self.reply_topic, self._on_reply, auto_delete=True
            )
        except TimeoutError:
            raise exceptions.CellUnavailable(
                f"cannot reach transport {_redact(transport.url)}"
            ) from None

    def _producer(self) -> Producer:
        producer = self._producers.producer
        if producer is None:
            producer = Producer(self.transport.connection().channel(), exchange=EXCHANGE)
            self._producers.producer = producer
        return producer

    def _publish(self, topic: str, body: dict[str, Any]) -> None:
        try:
            self._producer().publish(
                body, routing_key=topic, serializer="json", declare=[queue_for(topic)]
            )
        except Exception:
            # A broken connection: drop it and retry once on a fresh one.
            self._producers.producer = None
            self.transport.close()
            self._producer().publish(
                body, routing_key=topic, serializer="json", declare=[queue_for(topic)]
            )

    def call(
        self,
        topic: str,
        method: str,
        *,
        ctx: dict[str, Any] | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        **kwargs: Any,
    ) -> Any:
        wait = self.default_timeout if timeout is None else timeout
        attempts = 1 + (self.retries if retries is None else retries)
        for attempt in range(1, attempts + 1):
            try:
                return self._call_once(topic, method, ctx, wait, kwargs)
            except exceptions.RpcTimeout:
                if attempt == attempts:
                    raise
                LOG.warning(
                    "no reply from %s to %s within %.1fs; sending it again (%d/%d)",
                    topic,
                    method,
                    wait,
                    attempt + 1,
                    attempts,
                )
        raise AssertionError("unreachable")

    def _call_once(
        self,
        topic: str,
        method: str,
        ctx: dict[str, Any] | None,
        wait: float,
        kwargs: dict[str, Any],
    ) -> Any:
        msg_id = uuid.uuid4().hex
        future: Future[Any] = Future()
        with self._pending_lock:
            self._pending[msg_id] = future
        body = {
            "method": method,
            "args": kwargs,
            "ctx": ctx or {},
            "msg_id": msg_id,
            "reply_to": self.reply_topic,
            "deadline": time.time() + wait,
        }
        try:
            self._publish(topic, body)
            return future.result(timeout=wait)
        except FutureTimeout:
            raise exceptions.RpcTimeout(
                f"no reply from {topic} to {method} within {wait:.1f}s "
                "(is the compute service running? see timeouts.rpc_call)"
            ) from None
        finally:
            with self._pending_lock:
                self._pending.pop(msg_id, None)

    def cast(self, topic: str, method: str, *, ctx: dict[str, Any] | None = None, **kwargs: Any):
        self._publish(topic, {"method": method, "args": kwargs, "ctx": ctx or {}})

    def _on_reply(self, body: dict[str, Any], message: Message) -> None:
        message.ack()
        with self._pending_lock:
            future = self._pending.get(body.get("msg_id", ""))
        if future is None or future.done():
            LOG.debug("dropping late or duplicate reply %s", body.get("msg_id"))
            return
        if "error" in body:
            future.set_exception(_error_from_wire(body["error"]))
        else:
            future.set_result(body.get("result"))

    def close(self) -> None:
        ConsumerHub.for_transport(self.transport).unsubscribe(self.reply_topic)


class _InstanceLocks:
    """One lock per instance uuid, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._users: defaultdict[str, int] = defaultdict(int)

    def acquire(self, key: str) -> threading.Lock:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
            self._users[key] += 1
        lock.acquire()
        return lock

    def release(self, key: str, lock: threading.Lock) -> None:
        lock.release()
        with self._guard:
            self._users[key] -= 1
            if self._users[key] == 0:
                del self._users[key]
                self._locks.pop(key, None)


class RpcServer:
    """Serves one topic: each request runs on a worker thread of its own, those
    about the same instance one after the other, in arrival order."""

    def __init__(
        self,
        transport: Transport,
        topic: str,
        endpoint: Any,
        methods: list[str],
        *,
        workers: int = 16,
        fault_context: dict[str, Any] | None = None,
    ) -> None:
        self.transport = transport
        self.topic = topic
        self.endpoint = endpoint
        self.methods = set(methods)
        self.fault_context = fault_context or {}
        for name in methods:
            faults.register(
                f"rpc.{name}.reply",
                f"the reply to an RPC '{name}' (drop_reply / duplicate_reply / raise)",
            )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"rpc-{topic}")
        self._producers = _ProducerCache()
        self._instance_locks = _InstanceLocks()

    def start(self) -> None:
        self.transport.declare(queue_for(self.topic))
        try:
            ConsumerHub.for_transport(self.transport).subscribe(self.topic, self._on_request)
        except TimeoutError:
            raise exceptions.CellUnavailable(
                f"cannot consume {self.topic} on {_redact(self.transport.url)}"
            ) from None

    def _on_request(self, body: dict[str, Any], message: Message) -> None:
        message.ack()
        self._pool.submit(self._dispatch, body)

    def _dispatch(self, body: dict[str, Any]) -> None:
        key = (body.get("args") or {}).get("instance_uuid")
        if not key:
            self._serve(body)
            return
        lock = self._instance_locks.acquire(key)
        try:
            self._serve(body)
        finally:
            self._instance_locks.release(key, lock)

    def _serve(self, body: dict[str, Any]) -> None:
        method = body.get("method", "")
        deadline = body.get("deadline")
        if deadline is not None and time.time() > deadline:
            LOG.warning(
                "%s: skipping %s for %s, its caller stopped waiting %.1fs ago",
                self.topic,
                method,
                (body.get("args") or {}).get("instance_uuid", "-"),
                time.time() - deadline,
            )
            return
        reply: dict[str, Any] = {"msg_id": body.get("msg_id")}
        faults.take_outcome()  # nothing left over from an earlier request on this thread
        try:
            if method not in self.methods:
                raise exceptions.BadRequest(f"{self.topic} has no RPC method {method!r}")
            handler: Callable[..., Any] = getattr(self.endpoint, method)
            reply["result"] = handler(ctx=body.get("ctx") or {}, **body.get("args", {}))
        except Exception as exc:
            if not isinstance(exc, exceptions.AtollError):
                LOG.exception("%s.%s failed", self.topic, method)
            reply["error"] = _error_to_wire(exc)
        reply_to = body.get("reply_to")
        if not reply_to:
            return
        copies = 1
        handler_outcome = faults.take_outcome()  # e.g. compute.spawn: drop_reply
        try:
            outcome = faults.hit(f"rpc.{method}.reply", method=method, **self.fault_context)
            outcome = outcome or handler_outcome
        except Exception as exc:  # a 'raise' fault on the reply turns into a remote error
            reply.pop("result", None)
            reply["error"] = _error_to_wire(exc)
            outcome = None
        if outcome is not None:
            if outcome.kind == "drop_reply":
                LOG.warning("fault: dropping the reply to %s", method)
                return
            if outcome.kind == "duplicate_reply":
                copies = 2
        for _ in range(copies):
            self._reply(reply_to, reply)

    def _reply(self, reply_to: str, reply: dict[str, Any]) -> None:
        producer = self._producers.producer
        try:
            if producer is None:
                producer = Producer(self.transport.connection().channel(), exchange=EXCHANGE)
                self._producers.producer = producer
            producer.publish(reply, routing_key=reply_to, serializer="json")
        except Exception:
            LOG.exception("could not send the reply to %s", reply_to)
            self._producers.producer = None
            self.transport.close()

    def stop(self) -> None:
        ConsumerHub.for_transport(self.transport).unsubscribe(self.topic)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
