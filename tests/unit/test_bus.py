"""The RPC helper over memory:// and a real RabbitMQ: calls, casts, errors, timeouts,
and the drop/duplicate reply faults."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests.dbs import RABBIT_URL

from atoll import exceptions, faults
from atoll.bus.rpc import RemoteError, RpcClient, RpcServer
from atoll.bus.transport import Transport


class Endpoint:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.cast_seen = threading.Event()

    def add(self, ctx: dict[str, Any], a: int, b: int) -> int:
        self.calls.append(("add", (a, b)))
        return a + b

    def fail(self, ctx: dict[str, Any], kind: str) -> None:
        if kind == "known":
            raise exceptions.HypervisorUnavailable(host="h1")
        raise KeyError("boom")

    def slow(self, ctx: dict[str, Any], seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    def note(self, ctx: dict[str, Any], value: str) -> None:
        self.calls.append(("note", value))
        self.cast_seen.set()


METHODS = ["add", "fail", "slow", "note"]


@pytest.fixture(params=["memory", pytest.param("rabbit", marks=pytest.mark.rabbit)])
def bus(request: pytest.FixtureRequest) -> Iterator[tuple[RpcClient, Endpoint, str]]:
    url = "memory://" if request.param == "memory" else RABBIT_URL
    topic = f"test.{uuid.uuid4().hex[:8]}"
    endpoint = Endpoint()
    server = RpcServer(Transport(url), topic, endpoint, METHODS, fault_context={"host": "h1"})
    server.start()
    client = RpcClient(Transport(url), default_timeout=5.0)
    faults.configure({})
    try:
        yield client, endpoint, topic
    finally:
        faults.configure({})
        client.close()
        server.stop()
        server.transport.delete_queue(topic)


def test_call_returns_the_result(bus: tuple[RpcClient, Endpoint, str]) -> None:
    client, endpoint, topic = bus
    assert client.call(topic, "add", a=2, b=3) == 5
    assert endpoint.calls == [("add", (2, 3))]


def test_many_concurrent_calls_get_their_own_replies(bus: tuple[RpcClient, Endpoint, str]) -> None:
    client, _, topic = bus
    results: dict[int, int] = {}

    def worker(i: int) -> None:
        results[i] = client.call(topic, "add", a=i, b=1000)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: i + 1000 for i in range(20)}


def test_known_remote_error_keeps_its_class(bus: tuple[RpcClient, Endpoint, str]) -> None:
    client, _, topic = bus
    with pytest.raises(exceptions.HypervisorUnavailable, match="hypervisor is broken"):
        client.call(topic, "fail", kind="known")
    with pytest.raises(RemoteError, match="KeyError"):
        client.call(topic, "fail", kind="other")


def test_unknown_method_is_refused(bus: tuple[RpcClient, Endpoint, str]) -> None:
    client, _, topic = bus
    with pytest.raises(exceptions.BadRequest, match="no RPC method"):
        client.call(topic, "drop_database")


def test_call_times_out_with_an_actionable_message(bus: tuple[RpcClient, Endpoint, str]) -> None:
    client, _, topic = bus
    with pytest.raises(exceptions.RpcTimeout, match=r"timeouts\.rpc_call"):
        client.call(topic, "slow", seconds=1.0, timeout=0.2)


def test_call_to_a_host_nobody_serves_times_out() -> None:
    client = RpcClient(Transport("memory://"), default_timeout=0.2)
    try:
        with pytest.raises(exceptions.RpcTimeout):
            client.call(f"nobody.{uuid.uuid4().hex}", "add", a=1, b=2)
    finally:
        client.close()


def test_cast_is_delivered(bus: tuple[RpcClient, Endpoint, str]) -> None:
    client, endpoint, topic = bus
    client.cast(topic, "note", value="hello")
    assert endpoint.cast_seen.wait(5)
    assert ("note", "hello") in endpoint.calls


def test_dropped_reply_becomes_a_timeout(bus: tuple[RpcClient, Endpoint, str]) -> None:
    client, endpoint, topic = bus
    faults.configure({"rpc.add.reply": "drop_reply@1"})
    with pytest.raises(exceptions.RpcTimeout):
        client.call(topic, "add", a=1, b=1, timeout=0.3)
    assert endpoint.calls == [("add", (1, 1))]  # the work was done, only the reply was lost
    assert client.call(topic, "add", a=1, b=2) == 3


def test_duplicated_reply_is_harmless(bus: tuple[RpcClient, Endpoint, str]) -> None:
    client, _, topic = bus
    faults.configure({"rpc.add.reply": "duplicate_reply"})
    assert client.call(topic, "add", a=1, b=1) == 2
    assert client.call(topic, "add", a=2, b=2) == 4  # the stray copy did not answer this call
