"""A real embedded atoll for tests, driven only through its HTTP API and CLI."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from atoll import faults
from atoll.config import Settings, load_settings
from atoll.embedded import Embedded

ADMIN_TOKEN = "dev:admin:admin:admin"
USER_TOKEN = "dev:alice:demo:member"
OTHER_TOKEN = "dev:bob:other:member"
DEFAULT_TIMEOUT = 30.0


class Api:
    """An HTTP client for one caller, with the compute API's headers set."""

    def __init__(self, client: TestClient, token: str, version: str = "2.100") -> None:
        self.client = client
        self.token = token
        self.version = version

    def headers(self, version: str | None = None) -> dict[str, str]:
        return {
            "X-Auth-Token": self.token,
            "OpenStack-API-Version": f"compute {version or self.version}",
        }

    def request(self, method: str, path: str, *, version: str | None = None, **kw: Any):
        headers = {**self.headers(version), **kw.pop("headers", {})}
        return self.client.request(method, f"/v2.1{path}", headers=headers, **kw)

    def get(self, path: str, **kw: Any):
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any):
        return self.request("POST", path, json=json, **kw)

    def put(self, path: str, json: Any = None, **kw: Any):
        return self.request("PUT", path, json=json, **kw)

    def delete(self, path: str, **kw: Any):
        return self.request("DELETE", path, **kw)

    def ok(self, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
        resp = self.request(method, path, **kw)
        assert resp.status_code == expect, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None


class Atoll:
    def __init__(self, embedded: Embedded, client: TestClient) -> None:
        self.embedded = embedded
        self.client = client
        self.admin = Api(client, ADMIN_TOKEN)
        self.user = Api(client, USER_TOKEN)
        self.other = Api(client, OTHER_TOKEN)
        self.image_id = embedded.demo_info.get("image_id", "")
        self.network_id = embedded.demo_info.get("network_id", "")

    @property
    def runtime(self):  # type: ignore[no-untyped-def]
        return self.embedded.runtime

    def server_body(self, name: str = "vm", flavor: str = "1", **extra: Any) -> dict[str, Any]:
        server = {
            "name": name,
            "imageRef": self.image_id,
            "flavorRef": flavor,
            "networks": [{"uuid": self.network_id}],
        }
        server.update(extra)
        return {"server": server}

    def create_server(
        self,
        api: Api | None = None,
        *,
        wait: str | None = "ACTIVE",
        hints: dict[str, Any] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        api = api or self.user
        body = self.server_body(**kw)
        if hints:
            body["os:scheduler_hints"] = hints
        created = api.ok("POST", "/servers", 202, json=body)["server"]
        if wait is None:
            return created
        return self.wait_for(api, created["id"], wait)

    def wait_for(
        self, api: Api, server_id: str, status: str, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            resp = api.get(f"/servers/{server_id}")
            if resp.status_code == 404 and status == "DELETED":
                return {}
            assert resp.status_code == 200, resp.text
            last = resp.json()["server"]
            if last["status"] == status and last.get("OS-EXT-STS:task_state") is None:
                return last
            busy = last.get("OS-EXT-STS:task_state") is not None  # e.g. a hard reboot
            if last["status"] == "ERROR" and status != "ERROR" and not busy:
                raise AssertionError(f"server went to ERROR: {last.get('fault')}")
            time.sleep(0.01)
        raise AssertionError(
            f"server {server_id} not {status} in {timeout}s: "
            f"{last.get('status')}/{last.get('OS-EXT-STS:task_state')}"
        )

    def wait_gone(self, api: Api, server_id: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.wait_for(api, server_id, "DELETED", timeout)

    def audit(self) -> dict[str, Any]:
        return self.admin.ok("GET", "/atoll-admin/audit")

    def assert_clean(self) -> None:
        report = self.audit()
        assert report["clean"], report


def settings_for(tmp: Path, **overrides: Any) -> Settings:
    base = {"data_dir": tmp, "report_interval": 5.0}
    base.update(overrides)
    return load_settings(None, **base)


@contextmanager
def running_atoll(
    tmp: Path,
    *,
    demo: bool = True,
    cells: dict[str, list[str]] | None = None,
    **overrides: Any,
) -> Iterator[Atoll]:
    faults.configure({})
    embedded = Embedded(settings_for(tmp, **overrides), demo=demo, cells=cells).start()
    try:
        with TestClient(
            embedded.app(), base_url="http://127.0.0.1:8774", client=("127.0.0.1", 50000)
        ) as client:
            yield Atoll(embedded, client)
    finally:
        faults.configure({})
        embedded.stop()
