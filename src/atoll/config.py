"""Settings for every atoll service.

One settings object is read at start-up from (lowest to highest precedence) the
defaults below, a TOML file (``--config`` or ``ATOLL_CONFIG``) and ``ATOLL_*``
environment variables (nested keys use ``__``, e.g.
``ATOLL_SCHEDULER__CROSS_CELL_WEIGHT_MULTIPLIER``).  Every timeout lives here so
that nothing in the code base is hard-coded.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TimeoutSettings(BaseModel):
    rpc_call: float = Field(30.0, description="seconds to wait for a compute's RPC reply")
    rpc_retries: int = Field(
        2,
        ge=0,
        description="times a call with no reply is sent again (methods are idempotent)",
    )
    workflow_step: float = Field(
        60.0, description="seconds a conductor step may hang before it is abandoned as failed"
    )
    conductor_takeover: float = Field(
        30.0,
        description="seconds after a conductor's last heartbeat before another takes over its "
        "workflows",
    )
    conductor_heartbeat: float = Field(5.0, description="seconds between conductor heartbeats")
    db_connect: float = Field(5.0, description="seconds to wait when opening a DB connection")
    service_down_after: float = Field(60.0, description="a service not seen for this long is down")


class SchedulerSettings(BaseModel):
    max_attempts: int = Field(3, ge=1, description="primary plus alternates tried for a build")
    host_weights: dict[str, float] = Field(
        default_factory=dict, description="extra weight per host name; pins a preferred host"
    )
    host_weight_multiplier: float = 1.0
    spread_weight_multiplier: float = 1.0
    cross_cell_weight_multiplier: float = Field(
        1_000_000.0, description="weight for staying in the source cell; negative drains it"
    )


class PlacementSettings(BaseModel):
    cpu_allocation_ratio: float = 16.0
    ram_allocation_ratio: float = 1.5
    disk_allocation_ratio: float = 1.0
    reserved_host_cpus: int = 0
    reserved_host_memory_mb: int = 512
    reserved_host_disk_gb: int = 0


class SimSettings(BaseModel):
    vcpus: int = 16
    memory_mb: int = 32768
    local_gb: int = 400


class QuotaSettings(BaseModel):
    instances: int = 10
    cores: int = 20
    ram: int = 51200
    key_pairs: int = 100
    server_groups: int = 10
    server_group_members: int = 10
    metadata_items: int = 128


class AuthSettings(BaseModel):
    mode: str = Field("dev", description="'dev': the token names user, project and roles")
    allow_remote: bool = Field(
        False, description="accept dev tokens from non-loopback clients (never in production)"
    )
    admin_role: str = "admin"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATOLL_", env_nested_delimiter="__")

    data_dir: Path = Field(Path("atoll-data"), description="where embedded mode keeps its files")
    api_db_url: str | None = None
    placement_db_url: str | None = None
    services_db_url: str | None = None
    workflow_db_url: str | None = Field(None, description="DBOS system database")
    transport_url: str = Field("memory://", description="default transport for new cells")
    listen_host: str = "127.0.0.1"
    listen_port: int = 8774
    policy_file: Path | None = None
    workflow_queue_polling_interval: float = Field(
        0.05, gt=0, description="seconds between a conductor's polls of the workflow queue"
    )
    app_version: str = Field("atoll-1", description="DBOS application version of workflows")
    resize_confirm_window: float = Field(
        0.0, description="seconds before a VERIFY_RESIZE server is confirmed; 0 disables"
    )
    periodic_interval: float = Field(5.0, description="seconds between conductor periodic runs")
    audit_interval: float = Field(
        300.0, description="seconds between the conductor's own audits; 0 disables them"
    )
    report_interval: float = Field(10.0, description="seconds between a compute's heartbeats")
    default_availability_zone: str = "nova"
    bus_polling_interval: float = Field(
        0.001, description="seconds a memory:// consumer sleeps when its queue is empty"
    )
    faults: dict[str, str] = Field(
        default_factory=dict, description="fault point name -> action (see `atoll faults list`)"
    )
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    placement: PlacementSettings = Field(default_factory=PlacementSettings)
    sim: SimSettings = Field(default_factory=SimSettings)
    quota: QuotaSettings = Field(default_factory=QuotaSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)

    def sqlite_url(self, name: str) -> str:
        return f"sqlite:///{(self.data_dir / f'{name}.sqlite').resolve()}"

    @property
    def api_db(self) -> str:
        return self.api_db_url or self.sqlite_url("api")

    @property
    def placement_db(self) -> str:
        return self.placement_db_url or self.sqlite_url("placement")

    @property
    def services_db(self) -> str:
        return self.services_db_url or self.sqlite_url("services")

    @property
    def workflow_db(self) -> str:
        return self.workflow_db_url or self.sqlite_url("workflows")

    def cell_db_default(self, cell_name: str) -> str:
        return self.sqlite_url(f"cell-{cell_name}")

    @property
    def hosts_dir(self) -> Path:
        return (self.data_dir / "hosts").resolve()


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (if any), then let the environment and ``overrides`` win."""
    path = path or os.environ.get("ATOLL_CONFIG")
    file_values: dict[str, Any] = {}
    if path:
        with open(path, "rb") as fh:
            file_values = tomllib.load(fh)
    env_values = Settings().model_dump(exclude_unset=True)
    merged = _deep_merge(_deep_merge(file_values, env_values), overrides)
    return Settings.model_validate(merged)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
