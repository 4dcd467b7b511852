"""Policy: who may do what, with Nova's rule names, enforced by oslo.policy.

Every rule the API checks has a registered default below (``RULES``); a YAML
file at ``settings.policy_file`` overrides any of them, in the format operators
already write for Nova::

    "os_compute_api:os-flavor-manage:create": "role:admin or role:flavor-admin"
    "compute:servers:resize:cross_cell": "rule:admin_or_owner"

Base rules: ``admin_api`` = ``role:admin`` and ``admin_or_owner`` =
``is_admin:True or project_id:%(project_id)s``; ``atoll:admin`` guards
atoll's own admin endpoints.

Using it from a router::

    from atoll.api import policy

    policy.authorize(ctx, "os_compute_api:servers:show", {"project_id": server.project_id})
    if policy.check(ctx, "os_compute_api:os-extended-server-attributes"):
        body.update(admin_only_fields)

``authorize`` raises ``atoll.exceptions.Forbidden`` ("Policy doesn't allow
<rule> to be performed.") when ``fatal`` (the default) and returns a bool
otherwise; ``check`` is the non-fatal spelling.  The target defaults to the
caller's own project and user (``{"project_id": ctx.project_id, "user_id":
ctx.user_id}``), which is right for "may this caller do X at all".  Checking a
rule that has no registered default is a programming error (oslo.policy raises
PolicyNotRegistered): add new rules with ``register(RuleDefault(...))`` at import
time of the module that checks them.

``init(policy_file)`` (called by ``create_app``) builds the enforcer; without it
the first check builds one from the defaults alone.  ``list_rules()`` and
``sample_yaml()`` let operators see the defaults a policy.yaml overrides.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from oslo_config import cfg
from oslo_policy import policy as oslo_policy

from atoll.context import RequestContext
from atoll.exceptions import Forbidden

RuleDefault = oslo_policy.RuleDefault

ADMIN_API = "rule:admin_api"
ADMIN_OR_OWNER = "rule:admin_or_owner"
ADMIN_OR_USER = "rule:admin_api or user_id:%(user_id)s"
ANYONE = "@"

SERVERS = "os_compute_api:servers:%s"


def _rules(prefix: str, check: str, names: dict[str, str]) -> list[RuleDefault]:
    return [RuleDefault(f"{prefix}:{name}", check, desc) for name, desc in names.items()]


BASE_RULES = [
    RuleDefault("admin_api", "role:admin", "Default rule for administrative APIs."),
    RuleDefault(
        "admin_or_owner",
        "is_admin:True or project_id:%(project_id)s",
        "Default rule for most non-admin APIs: an admin or a member of the owning project.",
    ),
    RuleDefault("atoll:admin", ADMIN_API, "atoll's own administrative endpoints."),
    RuleDefault("placement:read", ADMIN_API, "Read the Placement API endpoints."),
]

SERVER_RULES = [
    *_rules(
        "os_compute_api:servers",
        ADMIN_OR_OWNER,
        {
            "index": "List servers.",
            "detail": "List servers with details.",
            "show": "Show a server.",
            "create": "Create a server.",
            "create:attach_volume": "Create a server with a block device mapping of a volume.",
            "create:attach_network": "Create a server with requested networks or ports.",
            "create:trusted_certs": "Create a server with trusted image certificates.",
            "update": "Update a server.",
            "delete": "Delete a server.",
            "resize": "Resize a server.",
            "confirm_resize": "Confirm a resize.",
            "revert_resize": "Revert a resize.",
            "reboot": "Reboot a server.",
            "start": "Start a server.",
            "stop": "Stop a server.",
            "rebuild": "Rebuild a server.",
            "create_image": "Create an image from a server.",
            "create_image:allow_volume_backed": "Snapshot a volume-backed server.",
            "trigger_crash_dump": "Trigger a crash dump in a server.",
            "show:flavor-extra-specs": "See the flavor's extra specs in a server (2.47).",
        },
    ),
    *_rules(
        "os_compute_api:servers",
        ADMIN_API,
        {
            "index:get_all_tenants": "List servers of every project.",
            "detail:get_all_tenants": "List servers of every project, with details.",
            "allow_all_filters": "Filter server lists by every attribute.",
            "create:forced_host": "Create a server on a given host.",
            "show:host_status": "See the host status of a server.",
            "show:host_status:unknown-only": "See only an UNKNOWN host status of a server.",
            "migrations:index": "List the in-progress migrations of a server.",
            "migrations:show": "Show an in-progress migration of a server.",
            "migrations:delete": "Abort an in-progress live migration.",
            "migrations:force_complete": "Force an in-progress live migration to complete.",
        },
    ),
    RuleDefault(
        "compute:servers:create:requested_destination",
        ADMIN_API,
        "Create a server on a requested host or node (2.74 host/hypervisor_hostname).",
    ),
    RuleDefault(
        "compute:servers:resize:cross_cell",
        ADMIN_API,
        "Resize or cold-migrate a server to a host in another cell.",
    ),
    RuleDefault(
        "os_compute_api:os-extended-server-attributes",
        ADMIN_API,
        "See the OS-EXT-SRV-ATTR fields (host, hypervisor name, ...) of servers.",
    ),
    *_rules(
        "os_compute_api:os-migrate-server",
        ADMIN_API,
        {
            "migrate": "Cold-migrate a server.",
            "migrate:host": "Cold-migrate a server to a given host.",
            "migrate_live": "Live-migrate a server.",
        },
    ),
    *_rules(
        "os_compute_api:os-admin-actions",
        ADMIN_API,
        {
            "reset_state": "Reset the state of a server.",
            "inject_network_info": "Inject network information into a server.",
        },
    ),
    RuleDefault("os_compute_api:os-evacuate", ADMIN_API, "Evacuate a server from a failed host."),
    *_rules(
        "os_compute_api:os-instance-actions",
        ADMIN_OR_OWNER,
        {"list": "List the actions of a server.", "show": "Show an action of a server."},
    ),
    *_rules(
        "os_compute_api:os-instance-actions",
        ADMIN_API,
        {
            "events": "See the events of a server action.",
            "events:details": "See the details of the events of a server action.",
        },
    ),
    RuleDefault("os_compute_api:os-migrations:index", ADMIN_API, "List migrations."),
    *_rules(
        "os_compute_api:os-volumes-attachments",
        ADMIN_OR_OWNER,
        {
            "index": "List the volume attachments of a server.",
            "show": "Show a volume attachment of a server.",
            "create": "Attach a volume to a server.",
            "delete": "Detach a volume from a server.",
        },
    ),
    *_rules(
        "os_compute_api:os-volumes-attachments",
        ADMIN_API,
        {"update": "Update (swap) a volume attachment of a server."},
    ),
    *_rules(
        "os_compute_api:os-attach-interfaces",
        ADMIN_OR_OWNER,
        {
            "list": "List the port interfaces of a server.",
            "show": "Show a port interface of a server.",
            "create": "Attach a port interface to a server.",
            "delete": "Detach a port interface from a server.",
        },
    ),
    *_rules(
        "os_compute_api:os-server-tags",
        ADMIN_OR_OWNER,
        {
            "index": "List the tags of a server.",
            "show": "Check a tag of a server.",
            "update": "Add a tag to a server.",
            "update_all": "Replace the tags of a server.",
            "delete": "Remove a tag from a server.",
            "delete_all": "Remove every tag of a server.",
        },
    ),
    *_rules(
        "os_compute_api:server-metadata",
        ADMIN_OR_OWNER,
        {
            "index": "List the metadata of a server.",
            "show": "Show a metadata item of a server.",
            "create": "Add metadata items to a server.",
            "update": "Update a metadata item of a server.",
            "update_all": "Replace the metadata of a server.",
            "delete": "Delete a metadata item of a server.",
        },
    ),
    *_rules(
        "os_compute_api:ips",
        ADMIN_OR_OWNER,
        {"index": "List the addresses of a server.", "show": "Show addresses of a network."},
    ),
    *_rules(
        "os_compute_api:os-lock-server",
        ADMIN_OR_OWNER,
        {"lock": "Lock a server.", "unlock": "Unlock a server."},
    ),
    RuleDefault(
        "os_compute_api:os-lock-server:unlock:unlock_override",
        ADMIN_API,
        "Unlock a server locked by somebody else.",
    ),
    *_rules(
        "os_compute_api:os-pause-server",
        ADMIN_OR_OWNER,
        {"pause": "Pause a server.", "unpause": "Unpause a server."},
    ),
    *_rules(
        "os_compute_api:os-suspend-server",
        ADMIN_OR_OWNER,
        {"suspend": "Suspend a server.", "resume": "Resume a server."},
    ),
    *_rules(
        "os_compute_api:os-shelve",
        ADMIN_OR_OWNER,
        {"shelve": "Shelve a server.", "unshelve": "Unshelve a server."},
    ),
    RuleDefault("os_compute_api:os-shelve:shelve_offload", ADMIN_API, "Offload a shelved server."),
    RuleDefault(
        "os_compute_api:os-console-output", ADMIN_OR_OWNER, "Show the console output of a server."
    ),
    RuleDefault(
        "os_compute_api:os-remote-consoles", ADMIN_OR_OWNER, "Open a remote console to a server."
    ),
    RuleDefault(
        "os_compute_api:os-server-external-events:create",
        ADMIN_API,
        "Send external events to servers.",
    ),
    RuleDefault(
        "os_compute_api:os-server-diagnostics", ADMIN_API, "Show the diagnostics of a server."
    ),
    *_rules(
        "os_compute_api:os-server-topology",
        ADMIN_OR_OWNER,
        {"index": "Show the NUMA topology of a server."},
    ),
    *_rules(
        "os_compute_api:os-server-topology",
        ADMIN_API,
        {"host:index": "Show the host NUMA details of a server's topology."},
    ),
    *_rules(
        "os_compute_api:os-server-password",
        ADMIN_OR_OWNER,
        {"show": "Show the encrypted password of a server.", "clear": "Clear it."},
    ),
    *_rules(
        "os_compute_api:os-deferred-delete",
        ADMIN_OR_OWNER,
        {"restore": "Restore a soft-deleted server.", "force": "Force-delete a server."},
    ),
    RuleDefault("os_compute_api:os-rescue", ADMIN_OR_OWNER, "Rescue a server."),
    RuleDefault("os_compute_api:os-unrescue", ADMIN_OR_OWNER, "Unrescue a server."),
    RuleDefault("os_compute_api:os-create-backup", ADMIN_OR_OWNER, "Back up a server."),
    RuleDefault("os_compute_api:os-admin-password", ADMIN_OR_OWNER, "Change a server's password."),
]

RESOURCE_RULES = [
    *_rules(
        "os_compute_api:os-flavor-manage",
        ADMIN_API,
        {
            "create": "Create a flavor.",
            "delete": "Delete a flavor.",
            "update": "Update a flavor's description.",
        },
    ),
    *_rules(
        "os_compute_api:os-flavor-extra-specs",
        ADMIN_OR_OWNER,
        {
            "index": "List the extra specs of a flavor (and see them in flavor bodies).",
            "show": "Show an extra spec of a flavor.",
        },
    ),
    *_rules(
        "os_compute_api:os-flavor-extra-specs",
        ADMIN_API,
        {
            "create": "Add extra specs to a flavor.",
            "update": "Update an extra spec of a flavor.",
            "delete": "Delete an extra spec of a flavor.",
        },
    ),
    *_rules(
        "os_compute_api:os-aggregates",
        ADMIN_API,
        {
            "index": "List aggregates.",
            "create": "Create an aggregate.",
            "show": "Show an aggregate.",
            "update": "Update an aggregate.",
            "delete": "Delete an aggregate.",
            "add_host": "Add a host to an aggregate.",
            "remove_host": "Remove a host from an aggregate.",
            "set_metadata": "Set the metadata of an aggregate.",
            "images": "Request image caching on an aggregate's hosts.",
        },
    ),
    *_rules(
        "os_compute_api:os-availability-zone",
        ANYONE,
        {"list": "List availability zones."},
    ),
    *_rules(
        "os_compute_api:os-availability-zone",
        ADMIN_API,
        {"detail": "List availability zones with their hosts and services."},
    ),
    *_rules(
        "os_compute_api:os-services",
        ADMIN_API,
        {
            "list": "List compute services.",
            "update": "Enable, disable or force down a compute service.",
            "delete": "Delete a compute service.",
        },
    ),
    *_rules(
        "os_compute_api:os-hypervisors",
        ADMIN_API,
        {
            "list": "List hypervisors.",
            "list-detail": "List hypervisors with details.",
            "show": "Show a hypervisor.",
            "statistics": "Show hypervisor statistics.",
            "uptime": "Show a hypervisor's uptime.",
            "search": "Search hypervisors by host name.",
            "servers": "List the servers on hypervisors.",
        },
    ),
    *_rules(
        "os_compute_api:os-quota-sets",
        ADMIN_OR_OWNER,
        {"show": "Show a project's quotas.", "detail": "Show a project's quotas and usage."},
    ),
    *_rules(
        "os_compute_api:os-quota-sets",
        ANYONE,
        {"defaults": "Show the default quotas."},
    ),
    *_rules(
        "os_compute_api:os-quota-sets",
        ADMIN_API,
        {"update": "Update a project's quotas.", "delete": "Revert a project's quotas."},
    ),
    *_rules(
        "os_compute_api:os-server-groups",
        ADMIN_OR_OWNER,
        {
            "create": "Create a server group.",
            "delete": "Delete a server group.",
            "index": "List server groups.",
            "show": "Show a server group.",
        },
    ),
    RuleDefault(
        "os_compute_api:os-server-groups:index:all_projects",
        ADMIN_API,
        "List the server groups of every project.",
    ),
    *_rules(
        "os_compute_api:os-keypairs",
        ADMIN_OR_USER,
        {
            "index": "List key pairs.",
            "create": "Create or import a key pair.",
            "show": "Show a key pair.",
            "delete": "Delete a key pair.",
        },
    ),
    RuleDefault("os_compute_api:limits", ANYONE, "Show rate and absolute limits."),
    RuleDefault(
        "os_compute_api:limits:other_project",
        ADMIN_API,
        "Show the limits of another project (tenant_id query parameter).",
    ),
]

RULES: list[RuleDefault] = [*BASE_RULES, *SERVER_RULES, *RESOURCE_RULES]

_lock = threading.Lock()
_enforcer: oslo_policy.Enforcer | None = None
_policy_file: Path | None = None


def register(*rules: RuleDefault) -> None:
    """Add defaults for rules checked outside this module (before or after ``init``)."""
    with _lock:
        known = {r.name for r in RULES}
        for rule in rules:
            if rule.name in known:
                continue
            RULES.append(rule)
            known.add(rule.name)
            if _enforcer is not None:
                _enforcer.register_default(rule)


def _build(policy_file: Path | None) -> oslo_policy.Enforcer:
    conf = cfg.ConfigOpts()
    conf(args=[], project="atoll", default_config_files=[], default_config_dirs=[])
    if policy_file is not None:
        policy_file = Path(policy_file).expanduser().resolve()
        if not policy_file.is_file():
            raise FileNotFoundError(f"policy file {policy_file} does not exist")
    enforcer = oslo_policy.Enforcer(
        conf,
        policy_file=str(policy_file) if policy_file else "/nonexistent/atoll-policy.yaml",
        use_conf=True,
        fallback_to_json_file=False,
    )
    enforcer.register_defaults(RULES)
    enforcer.load_rules()
    return enforcer


def init(policy_file: Path | str | None = None) -> oslo_policy.Enforcer:
    """(Re)build the process's enforcer from the defaults and ``policy_file``."""
    global _enforcer, _policy_file
    path = Path(policy_file) if policy_file else None
    enforcer = _build(path)
    with _lock:
        _enforcer = enforcer
        _policy_file = path
    return enforcer


def get_enforcer() -> oslo_policy.Enforcer:
    with _lock:
        enforcer = _enforcer
    return enforcer if enforcer is not None else init(None)


def reset() -> None:
    """Forget the enforcer (tests)."""
    global _enforcer, _policy_file
    with _lock:
        _enforcer = None
        _policy_file = None


def credentials(ctx: RequestContext) -> dict[str, Any]:
    return {
        "user_id": ctx.user_id,
        "project_id": ctx.project_id,
        "roles": list(ctx.roles),
        "is_admin": ctx.is_admin,
    }


def authorize(
    ctx: RequestContext,
    rule: str,
    target: dict[str, Any] | None = None,
    *,
    fatal: bool = True,
) -> bool:
    """Whether ``ctx`` may perform ``rule`` on ``target``; Forbidden when not and ``fatal``."""
    if target is None:
        target = {"project_id": ctx.project_id, "user_id": ctx.user_id}
    allowed = bool(get_enforcer().authorize(rule, target, credentials(ctx), do_raise=False))
    if not allowed and fatal:
        raise Forbidden(f"Policy doesn't allow {rule} to be performed.")
    return allowed


def check(ctx: RequestContext, rule: str, target: dict[str, Any] | None = None) -> bool:
    """``authorize`` without raising."""
    return authorize(ctx, rule, target, fatal=False)


def list_rules() -> list[tuple[str, str, str]]:
    """Every registered rule as (name, default check string, description), sorted by name."""
    with _lock:
        rules = list(RULES)
    return sorted(((r.name, r.check_str, r.description or "") for r in rules), key=lambda t: t[0])


def effective_rules() -> dict[str, str]:
    """Every rule as it is enforced now (defaults with the policy file's overrides)."""
    enforcer = get_enforcer()
    enforcer.load_rules()
    return {name: str(rule) for name, rule in sorted(enforcer.rules.items())}


def sample_yaml() -> str:
    """A policy.yaml with every default, commented out, to copy and edit."""
    lines = ["# atoll policy defaults; uncomment a rule to override it.", ""]
    for name, check_str, description in list_rules():
        lines.append(f"# {description}")
        lines.append(f'#"{name}": "{check_str}"')
        lines.append("")
    return "\n".join(lines)
