"""Request bodies of ``PUT /os-quota-sets/{project_id}``, per microversion range.

The resources a body may name shrink with the microversion, as in Nova: the
network ones (fixed_ips, floating_ips, security_groups, security_group_rules)
go at 2.36, the injected-file ones at 2.57.  ``force`` skips the check that a
new limit is not below current usage.
"""

from __future__ import annotations

from typing import Any

from pydantic import create_model

from atoll.api.microversion import APIVersion
from atoll.api.schemas import Bool, QuotaInt, Strict

BASE_RESOURCES = (
    "cores",
    "instances",
    "key_pairs",
    "metadata_items",
    "ram",
    "server_groups",
    "server_group_members",
)
FILE_RESOURCES = ("injected_file_content_bytes", "injected_file_path_bytes", "injected_files")
NETWORK_RESOURCES = ("fixed_ips", "floating_ips", "security_group_rules", "security_groups")


def resources_for(version: APIVersion) -> tuple[str, ...]:
    """The quota resources a body shows and accepts at ``version``, sorted."""
    names = list(BASE_RESOURCES)
    if version < "2.57":
        names += FILE_RESOURCES
    if version < "2.36":
        names += NETWORK_RESOURCES
    return tuple(sorted(names))


def _quota_set_model(name: str, resources: tuple[str, ...]) -> type[Strict]:
    fields: dict[str, Any] = {r: (QuotaInt | None, None) for r in resources}
    fields["force"] = (Bool, False)
    return create_model(name, __base__=Strict, **fields)


QuotaSet21 = _quota_set_model("QuotaSet21", resources_for(APIVersion(2, 1)))
QuotaSet236 = _quota_set_model("QuotaSet236", resources_for(APIVersion(2, 36)))
QuotaSet257 = _quota_set_model("QuotaSet257", resources_for(APIVersion(2, 57)))


class UpdateQuotaSetRequest21(Strict):
    quota_set: QuotaSet21  # type: ignore[valid-type]


class UpdateQuotaSetRequest236(Strict):
    quota_set: QuotaSet236  # type: ignore[valid-type]


class UpdateQuotaSetRequest257(Strict):
    quota_set: QuotaSet257  # type: ignore[valid-type]


def update_model(version: APIVersion) -> type[Strict]:
    if version >= "2.57":
        return UpdateQuotaSetRequest257
    if version >= "2.36":
        return UpdateQuotaSetRequest236
    return UpdateQuotaSetRequest21
