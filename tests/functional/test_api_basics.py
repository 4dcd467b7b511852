"""The compute API's plumbing over HTTP: versions, microversions, auth, errors, fuzz.

Runs ``create_app`` on a runtime whose databases are built with ``create_all``
under ``tmp_path`` (two cells of two hosts, two flavors; see
``test_api_resources.build_runtime``) and drives it with Starlette's TestClient
from a loopback address.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll.api import policy
from atoll.api.app import create_app
from atoll.db.session import dispose_all
from atoll.runtime import Runtime
from tests.functional.test_api_resources import build_runtime as build_seeded_runtime

SAMPLES = (
    Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "compute-api-samples"
)
ADMIN = "dev:admin:admin:admin"
MEMBER = "dev:alice:demo"
REQ_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# --- an embedded API on tmp_path -----------------------------------------------------------


@dataclass
class Api:
    runtime: Runtime
    client: TestClient

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = ADMIN,
        version: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["X-Auth-Token"] = token
        if version is not None:
            hdrs["OpenStack-API-Version"] = f"compute {version}"
        return self.client.request(method, path, headers=hdrs, json=body)


def build_runtime(data_dir: Path, **overrides: Any) -> Runtime:
    return build_seeded_runtime(data_dir, **overrides)[0]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    runtime = build_runtime(tmp_path)
    app = create_app(runtime)
    with TestClient(app, client=("127.0.0.1", 40000), raise_server_exceptions=False) as client:
        yield Api(runtime, client)
    runtime.close()
    policy.reset()
    dispose_all()


def load_sample(relative: str) -> Any:
    path = SAMPLES / relative
    if not path.is_file():
        pytest.fail(f"reference sample {path} is missing: shared/ must sit beside the checkout")
    return json.loads(path.read_text())


def fault(resp: Any) -> tuple[str, int, str]:
    body = resp.json()
    assert len(body) == 1, body
    title, inner = next(iter(body.items()))
    assert set(inner) == {"code", "message"}, body
    return title, inner["code"], inner["message"]


# --- versions ------------------------------------------------------------------------------


def test_version_list_needs_no_token_and_matches_the_sample(api: Api) -> None:
    resp = api.call("GET", "/", token=None)
    assert resp.status_code == 200
    body = resp.json()
    sample = load_sample("versions/versions-get-resp.json")
    v21 = next(v for v in sample["versions"] if v["id"] == "v2.1")
    assert [v["id"] for v in body["versions"]] == ["v2.1"]
    entry = body["versions"][0]
    assert set(entry) == set(v21)
    assert entry["version"] == "2.100"
    assert entry["min_version"] == "2.1"
    assert entry["links"] == [{"href": "http://testserver/v2.1/", "rel": "self"}]


@pytest.mark.parametrize("path", ["/v2.1/", "/v2.1"])
def test_version_document_matches_the_sample(api: Api, path: str) -> None:
    resp = api.call("GET", path, token=None)
    assert resp.status_code == 200
    sample = load_sample("versions/v21-version-get-resp.json")["version"]
    doc = resp.json()["version"]
    assert set(doc) == set(sample)
    assert doc["media-types"] == sample["media-types"]
    assert {link["rel"] for link in doc["links"]} == {"self", "describedby"}
    assert (doc["status"], doc["version"], doc["min_version"]) == ("CURRENT", "2.100", "2.1")


# --- microversions --------------------------------------------------------------------------


def _echo(resp: Any) -> tuple[str, str, str]:
    return (
        resp.headers["OpenStack-API-Version"],
        resp.headers["X-OpenStack-Nova-API-Version"],
        resp.headers["Vary"],
    )


VARY = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "2.1"),
        ({"OpenStack-API-Version": "compute 2.53"}, "2.53"),
        ({"OpenStack-API-Version": "compute latest"}, "2.100"),
        ({"OpenStack-API-Version": "volume 3.10, compute 2.61"}, "2.61"),
        ({"OpenStack-API-Version": "volume 3.10"}, "2.1"),
        ({"X-OpenStack-Nova-API-Version": "2.12"}, "2.12"),
        ({"X-OpenStack-Nova-API-Version": "latest"}, "2.100"),
        (
            {"OpenStack-API-Version": "compute 2.70", "X-OpenStack-Nova-API-Version": "2.5"},
            "2.70",
        ),
    ],
)
def test_microversion_is_negotiated_and_echoed(
    api: Api, headers: dict[str, str], expected: str
) -> None:
    resp = api.call("GET", "/v2.1/flavors", headers=headers)
    assert resp.status_code == 200, resp.text
    assert _echo(resp) == (f"compute {expected}", expected, VARY)


@pytest.mark.parametrize("asked", ["3.0", "2.101", "1.1", "2.0"])
def test_version_out_of_range_is_406_with_novas_message(api: Api, asked: str) -> None:
    resp = api.call("GET", "/v2.1/flavors", version=asked)
    assert resp.status_code == 406
    title, code, message = fault(resp)
    assert (title, code) == ("computeFault", 406)
    assert message == (
        f"Version {asked} is not supported by the API. Minimum is 2.1 and maximum is 2.100."
    )


@pytest.mark.parametrize("asked", ["2.x", "2", "two", "2.1.1", "02.1", "2.-1", ""])
def test_malformed_version_is_400(api: Api, asked: str) -> None:
    resp = api.call("GET", "/v2.1/flavors", headers={"X-OpenStack-Nova-API-Version": asked or " "})
    if not asked:
        # an empty legacy header counts as no header
        assert resp.status_code == 200
        return
    assert resp.status_code == 400
    title, _code, message = fault(resp)
    assert title == "badRequest"
    assert message == (
        f"API Version String {asked} is of invalid format. Must be of format MajorNum.MinorNum."
    )


def test_malformed_compute_entry_in_openstack_header_is_400(api: Api) -> None:
    resp = api.call("GET", "/v2.1/flavors", headers={"OpenStack-API-Version": "compute"})
    assert resp.status_code == 400
    assert "invalid format" in fault(resp)[2]


def test_request_ids_are_returned_on_success_and_on_errors(api: Api) -> None:
    for resp in (
        api.call("GET", "/v2.1/flavors"),
        api.call("GET", "/v2.1/flavors", token=None),
        api.call("GET", "/v2.1/flavors", version="9.9"),
        api.call("GET", "/v2.1/no-such-thing"),
    ):
        rid = resp.headers["x-openstack-request-id"]
        assert REQ_ID.match(rid)
        assert resp.headers["x-compute-request-id"] == rid
    a = api.call("GET", "/v2.1/flavors").headers["x-openstack-request-id"]
    b = api.call("GET", "/v2.1/flavors").headers["x-openstack-request-id"]
    assert a != b


def test_version_route_gating_is_404_below_the_minimum(api: Api) -> None:
    body = {"flavor": {"description": "new"}}
    assert api.call("PUT", "/v2.1/flavors/1", version="2.54", body=body).status_code == 404
    resp = api.call("PUT", "/v2.1/flavors/1", version="2.55", body=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["flavor"]["description"] == "new"


# --- auth -----------------------------------------------------------------------------------


def test_missing_token_is_401_and_shows_the_format(api: Api) -> None:
    resp = api.call("GET", "/v2.1/flavors", token=None)
    assert resp.status_code == 401
    title, code, message = fault(resp)
    assert (title, code) == ("unauthorized", 401)
    assert "dev:<user>:<project>[:<role>[,<role>...]]" in message
    assert "X-Auth-Token" in message


@pytest.mark.parametrize(
    "token",
    [
        "alice",
        "dev:alice",
        "dev::demo",
        "dev:alice:",
        "prod:alice:demo",
        "dev:alice:demo:admin:extra",
        "dev:al ice:demo",
        "dev:alice:demo:",
        "dev:alice:demo:,",
        "dev:alice:de/mo",
    ],
)
def test_malformed_tokens_are_401(api: Api, token: str) -> None:
    resp = api.call("GET", "/v2.1/flavors", token=token)
    assert resp.status_code == 401, resp.text
    assert "dev:<user>:<project>" in fault(resp)[2]


def test_roles_come_from_the_token(api: Api) -> None:
    assert api.call("GET", "/v2.1/os-services", token=MEMBER).status_code == 403
    assert api.call("GET", "/v2.1/os-services", token="dev:bob:ops:reader,admin").status_code == 200
    assert api.call("GET", "/v2.1/os-services", token=ADMIN).status_code == 200


def test_dev_tokens_from_remote_clients_are_refused(tmp_path: Path) -> None:
    runtime = build_runtime(tmp_path)
    try:
        app = create_app(runtime)
        with TestClient(app, client=("203.0.113.9", 5555)) as client:
            resp = client.get("/v2.1/flavors", headers={"X-Auth-Token": ADMIN})
            assert resp.status_code == 403
            assert "loopback" in resp.json()["forbidden"]["message"]
            # the version documents stay public
            assert client.get("/").status_code == 200
    finally:
        runtime.close()
        policy.reset()
        dispose_all()


def test_allow_remote_accepts_remote_dev_tokens(tmp_path: Path) -> None:
    runtime = build_runtime(tmp_path, auth={"allow_remote": True})
    try:
        app = create_app(runtime)
        with TestClient(app, client=("203.0.113.9", 5555)) as client:
            resp = client.get("/v2.1/flavors", headers={"X-Auth-Token": ADMIN})
            assert resp.status_code == 200
    finally:
        runtime.close()
        policy.reset()
        dispose_all()


def test_unknown_auth_mode_refuses_to_start(tmp_path: Path) -> None:
    runtime = build_runtime(tmp_path, auth={"mode": "keystone"})
    try:
        with pytest.raises(ValueError, match=r"auth\.mode"):
            create_app(runtime)
    finally:
        runtime.close()
        dispose_all()


# --- errors ---------------------------------------------------------------------------------


def test_unknown_route_is_404_item_not_found(api: Api) -> None:
    resp = api.call("GET", "/v2.1/os-no-such-thing")
    assert resp.status_code == 404
    assert fault(resp) == ("itemNotFound", 404, "The resource could not be found.")


def test_wrong_method_is_405_bad_method(api: Api) -> None:
    resp = api.call("PATCH", "/v2.1/flavors")
    assert resp.status_code == 405
    title, code, _message = fault(resp)
    assert (title, code) == ("badMethod", 405)


@pytest.mark.parametrize("raw", [b"{", b"not json", b"\xff\xfe", b"[1, 2]", b'"text"', b"null"])
def test_malformed_json_is_400(api: Api, raw: bytes) -> None:
    resp = api.client.post(
        "/v2.1/flavors",
        content=raw,
        headers={"X-Auth-Token": ADMIN, "Content-Type": "application/json"},
    )
    assert resp.status_code == 400
    title, _code, message = fault(resp)
    assert title == "badRequest"
    assert message.startswith("Malformed request body")


def test_empty_body_is_400(api: Api) -> None:
    resp = api.client.post("/v2.1/flavors", headers={"X-Auth-Token": ADMIN})
    assert resp.status_code == 400
    assert fault(resp)[0] == "badRequest"


def test_validation_errors_name_the_field(api: Api) -> None:
    resp = api.call(
        "POST",
        "/v2.1/flavors",
        body={"flavor": {"name": "f", "ram": "lots", "vcpus": 1, "disk": 0}},
    )
    assert resp.status_code == 400
    message = fault(resp)[2]
    assert message.startswith("Invalid input for field/attribute ram.")
    assert "lots" in message

    resp = api.call("POST", "/v2.1/flavors", body={"flavor": {"ram": 1, "vcpus": 1, "disk": 0}})
    assert fault(resp)[2] == (
        "Invalid input for field/attribute flavor. 'name' is a required property"
    )
    resp = api.call(
        "POST",
        "/v2.1/flavors",
        body={"flavor": {"name": "f", "ram": 1, "vcpus": 1, "disk": 0, "colour": "red"}},
    )
    assert "Additional properties are not allowed ('colour' was unexpected)" in fault(resp)[2]


def test_unexpected_errors_are_500_without_internals(tmp_path: Path, caplog: Any) -> None:
    runtime = build_runtime(tmp_path)
    try:
        app = create_app(runtime)
        boom = APIRouter()

        @boom.get("/v2.1/boom")
        def _boom() -> None:
            raise RuntimeError("secret database password in here")

        app.include_router(boom)
        with TestClient(app, client=("127.0.0.1", 1), raise_server_exceptions=False) as client:
            resp = client.get("/v2.1/boom", headers={"X-Auth-Token": ADMIN})
        assert resp.status_code == 500
        title, code, message = fault(resp)
        assert (title, code) == ("computeFault", 500)
        assert "Unexpected API Error" in message
        assert "secret" not in resp.text
        assert resp.headers["x-openstack-request-id"] in message
        assert "secret database password" in caplog.text  # logged with its traceback
        assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)
    finally:
        runtime.close()
        policy.reset()
        dispose_all()


def test_legacy_project_id_prefix_is_accepted(api: Api) -> None:
    resp = api.call("GET", "/v2.1/admin/flavors/1")
    assert resp.status_code == 200
    links = {link["rel"]: link["href"] for link in resp.json()["flavor"]["links"]}
    assert links == {
        "self": "http://testserver/v2.1/admin/flavors/1",
        "bookmark": "http://testserver/admin/flavors/1",
    }
    resp = api.call("GET", "/v2.1/someone-else/flavors/1")
    assert resp.status_code == 400
    assert "doesn't match" in fault(resp)[2]


def test_links_without_project_follow_the_samples_layout(api: Api) -> None:
    resp = api.call("GET", "/v2.1/flavors/1")
    links = {link["rel"]: link["href"] for link in resp.json()["flavor"]["links"]}
    assert links == {
        "self": "http://testserver/v2.1/flavors/1",
        "bookmark": "http://testserver/flavors/1",
    }


# --- fuzz -----------------------------------------------------------------------------------

WRITE_ENDPOINTS = [
    ("POST", "/v2.1/flavors"),
    ("PUT", "/v2.1/flavors/1"),
    ("POST", "/v2.1/flavors/1/os-extra_specs"),
    ("PUT", "/v2.1/flavors/1/os-extra_specs/k"),
    ("POST", "/v2.1/os-aggregates"),
    ("PUT", "/v2.1/os-aggregates/1"),
    ("POST", "/v2.1/os-aggregates/1/action"),
    ("PUT", "/v2.1/os-services/disable"),
    ("PUT", "/v2.1/os-services/00000000-0000-0000-0000-000000000000"),
    ("POST", "/v2.1/os-keypairs"),
    ("PUT", "/v2.1/os-quota-sets/demo"),
    ("POST", "/v2.1/os-server-groups"),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
body_keys = st.sampled_from(
    [
        "flavor",
        "aggregate",
        "add_host",
        "set_metadata",
        "keypair",
        "quota_set",
        "server_group",
        "extra_specs",
        "status",
        "host",
        "binary",
        "k",
    ]
)
bodies = st.one_of(
    st.binary(max_size=40),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(body_keys, json_values, max_size=3).map(lambda v: json.dumps(v).encode()),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    endpoint=st.sampled_from(WRITE_ENDPOINTS),
    body=bodies,
    version=st.sampled_from(["2.1", "2.11", "2.53", "2.64", "2.75", "2.100"]),
)
def test_fuzzed_bodies_never_cause_a_500(
    api: Api, endpoint: tuple[str, str], body: bytes, version: str
) -> None:
    method, path = endpoint
    resp = api.client.request(
        method,
        path,
        content=body,
        headers={
            "X-Auth-Token": ADMIN,
            "Content-Type": "application/json",
            "OpenStack-API-Version": f"compute {version}",
        },
    )
    assert resp.status_code < 500, (method, path, body, resp.text)
    if resp.status_code >= 400:
        fault(resp)
