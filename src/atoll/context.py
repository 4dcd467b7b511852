"""Who is asking: carried from the API into workflows and RPCs."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any


def new_request_id() -> str:
    return f"req-{uuid.uuid4()}"


@dataclass(frozen=True)
class RequestContext:
    user_id: str
    project_id: str
    roles: tuple[str, ...] = ()
    request_id: str = field(default_factory=new_request_id)
    is_admin: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["roles"] = list(self.roles)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestContext:
        return cls(
            user_id=data["user_id"],
            project_id=data["project_id"],
            roles=tuple(data.get("roles", ())),
            request_id=data.get("request_id") or new_request_id(),
            is_admin=bool(data.get("is_admin")),
        )

    @classmethod
    def admin(cls) -> RequestContext:
        """The context periodic jobs and the CLI's admin commands act under."""
        return cls(user_id="atoll", project_id="atoll", roles=("admin",), is_admin=True)
