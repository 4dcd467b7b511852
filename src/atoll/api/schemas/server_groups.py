"""Request bodies of ``POST /os-server-groups``.

Before 2.64 a group names its policy in a one-item ``policies`` list; from 2.64
in ``policy``, with optional ``rules`` (``max_server_per_host``, anti-affinity
only).  The soft policies exist from 2.15.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from atoll.api.schemas import Name, PositiveInt, Strict

HardPolicy = Literal["affinity", "anti-affinity"]
AnyPolicy = Literal["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"]


class ServerGroup21(Strict):
    name: Name
    policies: Annotated[list[HardPolicy], Field(min_length=1, max_length=1)]


class ServerGroup215(Strict):
    name: Name
    policies: Annotated[list[AnyPolicy], Field(min_length=1, max_length=1)]


class Rules(Strict):
    max_server_per_host: PositiveInt | None = None


class ServerGroup264(Strict):
    name: Name
    policy: AnyPolicy
    rules: Rules | None = None

    @model_validator(mode="after")
    def _rules_need_anti_affinity(self) -> ServerGroup264:
        has_rules = self.rules is not None and self.rules.model_dump(exclude_none=True)
        if has_rules and self.policy != "anti-affinity":
            raise ValueError("Only anti-affinity policy supports rules.")
        return self


class CreateServerGroupRequest21(Strict):
    server_group: ServerGroup21


class CreateServerGroupRequest215(Strict):
    server_group: ServerGroup215


class CreateServerGroupRequest264(Strict):
    server_group: ServerGroup264
