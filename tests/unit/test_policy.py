"""Policy defaults, overrides and enforcement (atoll.api.policy)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from atoll.api import policy
from atoll.context import RequestContext
from atoll.exceptions import Forbidden

MEMBER = RequestContext(user_id="alice", project_id="demo", roles=("member",))
OTHER = RequestContext(user_id="mallory", project_id="evil", roles=("member",))
ADMIN = RequestContext(user_id="root", project_id="admin", roles=("admin",), is_admin=True)

REQUIRED = [
    *(
        f"os_compute_api:servers:{name}"
        for name in (
            "create",
            "index",
            "detail",
            "show",
            "delete",
            "resize",
            "confirm_resize",
            "revert_resize",
            "reboot",
            "start",
            "stop",
            "index:get_all_tenants",
        )
    ),
    "os_compute_api:os-migrate-server:migrate",
    "os_compute_api:os-migrate-server:migrate:host",
    "os_compute_api:os-extended-server-attributes",
    "os_compute_api:os-instance-actions:list",
    "os_compute_api:os-instance-actions:show",
    "os_compute_api:os-instance-actions:events",
    "os_compute_api:os-migrations:index",
    *(f"os_compute_api:os-volumes-attachments:{n}" for n in ("index", "show", "create", "delete")),
    "os_compute_api:os-attach-interfaces:list",
    *(
        f"os_compute_api:os-server-tags:{n}"
        for n in ("index", "show", "update", "update_all", "delete", "delete_all")
    ),
    "os_compute_api:os-flavor-manage:create",
    "os_compute_api:os-flavor-manage:delete",
    *(
        f"os_compute_api:os-flavor-extra-specs:{n}"
        for n in ("index", "show", "create", "update", "delete")
    ),
    *(
        f"os_compute_api:os-aggregates:{n}"
        for n in (
            "index",
            "create",
            "show",
            "update",
            "delete",
            "add_host",
            "remove_host",
            "set_metadata",
        )
    ),
    *(f"os_compute_api:os-services:{n}" for n in ("list", "update", "delete")),
    *(f"os_compute_api:os-hypervisors:{n}" for n in ("list", "list-detail", "show")),
    *(
        f"os_compute_api:os-quota-sets:{n}"
        for n in ("show", "update", "defaults", "detail", "delete")
    ),
    *(f"os_compute_api:os-server-groups:{n}" for n in ("create", "delete", "index", "show")),
    *(f"os_compute_api:os-keypairs:{n}" for n in ("index", "create", "show", "delete")),
    "os_compute_api:limits",
    "compute:servers:resize:cross_cell",
    "compute:servers:create:requested_destination",
    "atoll:admin",
    "admin_api",
    "admin_or_owner",
]


@pytest.fixture(autouse=True)
def fresh_enforcer() -> Iterator[None]:
    policy.reset()
    yield
    policy.reset()


def test_every_rule_the_api_checks_has_a_default() -> None:
    names = {name for name, _check, _desc in policy.list_rules()}
    missing = [r for r in REQUIRED if r not in names]
    assert not missing
    rules = policy.list_rules()
    assert rules == sorted(rules)
    assert all(desc for _name, _check, desc in rules)
    enforced = policy.effective_rules()
    assert set(REQUIRED) <= set(enforced)


def test_base_rules() -> None:
    defaults = {name: check for name, check, _desc in policy.list_rules()}
    assert defaults["admin_api"] == "role:admin"
    assert defaults["admin_or_owner"] == "is_admin:True or project_id:%(project_id)s"
    assert defaults["compute:servers:resize:cross_cell"] == "rule:admin_api"
    assert defaults["atoll:admin"] == "rule:admin_api"


def test_owner_rules_default_to_the_callers_project() -> None:
    rule = "os_compute_api:servers:show"
    assert policy.check(MEMBER, rule)
    assert policy.check(MEMBER, rule, {"project_id": "demo"})
    assert not policy.check(MEMBER, rule, {"project_id": "evil"})
    assert policy.check(ADMIN, rule, {"project_id": "evil"})


def test_admin_rules() -> None:
    for rule in (
        "compute:servers:resize:cross_cell",
        "os_compute_api:os-migrate-server:migrate",
        "os_compute_api:os-services:list",
        "atoll:admin",
    ):
        assert not policy.check(MEMBER, rule), rule
        assert policy.check(ADMIN, rule), rule


def test_keypair_rules_are_per_user() -> None:
    rule = "os_compute_api:os-keypairs:show"
    assert policy.check(MEMBER, rule, {"user_id": "alice"})
    assert not policy.check(OTHER, rule, {"user_id": "alice"})
    assert policy.check(ADMIN, rule, {"user_id": "alice"})


def test_authorize_raises_forbidden_with_novas_message() -> None:
    rule = "os_compute_api:os-flavor-manage:create"
    with pytest.raises(Forbidden) as err:
        policy.authorize(MEMBER, rule)
    assert err.value.code == 403
    assert err.value.message == f"Policy doesn't allow {rule} to be performed."
    assert policy.authorize(MEMBER, rule, fatal=False) is False
    assert policy.authorize(ADMIN, rule) is True


def test_unregistered_rules_are_an_error() -> None:
    with pytest.raises(Exception, match="not been registered"):
        policy.check(ADMIN, "os_compute_api:no-such-rule")


def test_policy_file_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        '"compute:servers:resize:cross_cell": "rule:admin_or_owner"\n'
        '"os_compute_api:os-flavor-manage:create": "role:flavor-admin"\n'
    )
    policy.init(path)
    assert policy.check(MEMBER, "compute:servers:resize:cross_cell")
    flavor_admin = RequestContext(user_id="f", project_id="p", roles=("flavor-admin",))
    assert policy.check(flavor_admin, "os_compute_api:os-flavor-manage:create")
    assert not policy.check(ADMIN, "os_compute_api:os-flavor-manage:create")
    # rules the file does not name keep their defaults
    assert not policy.check(MEMBER, "os_compute_api:os-services:list")
    assert policy.effective_rules()["compute:servers:resize:cross_cell"] == "rule:admin_or_owner"


def test_missing_policy_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        policy.init(tmp_path / "nope.yaml")


def test_register_adds_defaults_before_and_after_init() -> None:
    policy.register(policy.RuleDefault("atoll:test:before", "rule:admin_api", "Test rule."))
    assert not policy.check(MEMBER, "atoll:test:before")
    policy.init()
    policy.register(policy.RuleDefault("atoll:test:after", "@", "Test rule."))
    assert policy.check(MEMBER, "atoll:test:after")
    names = {n for n, _c, _d in policy.list_rules()}
    assert {"atoll:test:before", "atoll:test:after"} <= names


def test_sample_yaml_lists_every_rule_commented_out() -> None:
    text = policy.sample_yaml()
    for name, check, _desc in policy.list_rules():
        assert f'#"{name}": "{check}"' in text
