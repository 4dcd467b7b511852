"""The conductor's client for a compute host: every call names its host's topic."""

from __future__ import annotations

from typing import Any

from atoll.bus.rpc import RpcClient
from atoll.context import RequestContext


def topic_for(host: str) -> str:
    return f"compute.{host}"


class ComputeAPI:
    def __init__(self, rpc: RpcClient) -> None:
        self.rpc = rpc

    def _call(self, ctx: RequestContext, host: str, method: str, **kwargs: Any) -> Any:
        return self.rpc.call(topic_for(host), method, ctx=ctx.to_dict(), **kwargs)

    def spawn(
        self,
        ctx: RequestContext,
        host: str,
        instance_uuid: str,
        *,
        flavor: dict[str, Any],
        image_id: str | None,
        block_devices: list[dict[str, Any]],
        power_on: bool = True,
        event: str = "compute__do_build_and_run_instance",
    ) -> int:
        return self._call(
            ctx,
            host,
            "spawn",
            instance_uuid=instance_uuid,
            flavor=flavor,
            image_id=image_id,
            block_devices=block_devices,
            power_on=power_on,
            event=event,
        )

    def destroy(
        self,
        ctx: RequestContext,
        host: str,
        instance_uuid: str,
        *,
        keep_disks: bool = False,
        event: str | None = None,
    ) -> None:
        self._call(
            ctx, host, "destroy", instance_uuid=instance_uuid, keep_disks=keep_disks, event=event
        )

    def call(self, ctx: RequestContext, host: str, method: str, **kwargs: Any) -> Any:
        """Any compute RPC by name (the move workflows use the generic primitives)."""
        return self._call(ctx, host, method, **kwargs)

    def power_off(self, ctx: RequestContext, host: str, instance_uuid: str) -> int:
        return self._call(ctx, host, "power_off", instance_uuid=instance_uuid)

    def power_on(self, ctx: RequestContext, host: str, instance_uuid: str) -> int:
        return self._call(ctx, host, "power_on", instance_uuid=instance_uuid)

    def reboot(
        self,
        ctx: RequestContext,
        host: str,
        instance_uuid: str,
        *,
        hard: bool,
        flavor: dict[str, Any],
        image_id: str | None,
        block_devices: list[dict[str, Any]],
    ) -> int:
        return self._call(
            ctx,
            host,
            "reboot",
            instance_uuid=instance_uuid,
            hard=hard,
            flavor=flavor,
            image_id=image_id,
            block_devices=block_devices,
        )

    def attach_volume(
        self,
        ctx: RequestContext,
        host: str,
        instance_uuid: str,
        *,
        volume_id: str,
        attachment_id: str,
        tag: str | None,
    ) -> None:
        self._call(
            ctx,
            host,
            "attach_volume",
            instance_uuid=instance_uuid,
            volume_id=volume_id,
            attachment_id=attachment_id,
            tag=tag,
        )

    def detach_volume(
        self, ctx: RequestContext, host: str, instance_uuid: str, *, volume_id: str
    ) -> None:
        self._call(ctx, host, "detach_volume", instance_uuid=instance_uuid, volume_id=volume_id)

    def list_guests(self, ctx: RequestContext, host: str) -> list[dict[str, Any]]:
        return self._call(ctx, host, "list_guests")

    def describe_guest(self, ctx: RequestContext, host: str, instance_uuid: str) -> dict[str, Any]:
        return self._call(ctx, host, "describe_guest", instance_uuid=instance_uuid)
