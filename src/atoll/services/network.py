"""The embedded network service (stands in for Neutron, with multiple port bindings).

A network has one subnet (its ``cidr``).  Each port gets the lowest free address
of that subnet, skipping the network and broadcast addresses and the gateway
(the first host); the ``ip_allocations`` table's primary key guarantees that no
address is handed out twice.

A port has at most one binding per host and at most one ACTIVE binding: a move
creates an INACTIVE binding on the destination, then activates it, which
deactivates the source's.  Every change to a port or its bindings first locks the
port's row; every allocation first locks the network's row.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from atoll.db.session import session_scope
from atoll.db.types import new_uuid
from atoll.exceptions import BadRequest, Conflict, NotFound
from atoll.services._common import UNSET, Unset, iso, lock_row
from atoll.services.models import IpAllocation, Network, Port, PortBinding

PORT_STATUSES = frozenset({"DOWN", "ACTIVE"})
MAC_PREFIX = "fa:16:3e"  # the prefix Neutron gives generated MACs
_MAC_ATTEMPTS = 16


def _network_dict(row: Network) -> dict[str, Any]:
    net = ipaddress.ip_network(row.cidr)
    gateway = _gateway(net)
    return {
        "id": row.id,
        "name": row.name,
        "cidr": row.cidr,
        "subnet_id": row.subnet_id,
        "gateway_ip": str(gateway) if gateway is not None else None,
        "ip_version": net.version,
        "project_id": row.project_id,
        "shared": row.shared,
        "mtu": row.mtu,
        "created_at": iso(row.created_at),
    }


def _binding_dict(row: PortBinding) -> dict[str, Any]:
    return {
        "port_id": row.port_id,
        "host": row.host,
        "status": row.status,
        "vif_type": row.vif_type,
        "vnic_type": row.vnic_type,
        "profile": dict(row.profile or {}),
    }


def _port_dict(row: Port) -> dict[str, Any]:
    active = next((b for b in row.bindings if b.status == "ACTIVE"), None)
    return {
        "id": row.id,
        "network_id": row.network_id,
        "name": row.name,
        "mac_address": row.mac_address,
        "fixed_ips": [dict(ip) for ip in row.fixed_ips or []],
        "device_id": row.device_id,
        "device_owner": row.device_owner,
        "status": row.status,
        "project_id": row.project_id,
        "admin_state_up": row.admin_state_up,
        "created_at": iso(row.created_at),
        # The active binding, as Neutron's port-binding extension shows it on the port.
        "binding:host_id": active.host if active else "",
        "binding:vif_type": active.vif_type if active else "unbound",
        "binding:vnic_type": active.vnic_type if active else "normal",
        "binding:profile": dict(active.profile or {}) if active else {},
    }


def _gateway(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Any:
    if net.num_addresses < 4:  # /31, /32, /127, /128: no room for a gateway
        return None
    return net.network_address + 1


def _first_free(net: ipaddress.IPv4Network | ipaddress.IPv6Network, used: set[str]) -> str | None:
    gateway = _gateway(net)
    for addr in net.hosts():
        if addr == gateway:
            continue
        text = str(addr)
        if text not in used:
            return text
    return None


def _random_mac() -> str:
    tail = ":".join(f"{random.randrange(256):02x}" for _ in range(3))
    return f"{MAC_PREFIX}:{tail}"


def _normalize_mac(mac: str) -> str:
    parts = mac.replace("-", ":").lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise BadRequest(f"Invalid MAC address {mac!r}.")
    try:
        first = int(parts[0], 16)
        for p in parts[1:]:
            int(p, 16)
    except ValueError:
        raise BadRequest(f"Invalid MAC address {mac!r}.") from None
    if first & 1:
        raise BadRequest(f"Invalid MAC address {mac!r}: a multicast address.")
    return ":".join(parts)


class NetworkService:
    def __init__(self, db_url: str) -> None:
        self.db_url = db_url

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _network(session: Any, network_id: str) -> Network:
        row = session.get(Network, network_id)
        if row is None:
            raise NotFound(f"Network {network_id} could not be found.")
        return row

    @staticmethod
    def _port(session: Any, port_id: str, *, lock: bool = False) -> Port:
        if lock:
            lock_row(session, Port, port_id)
        row = session.get(Port, port_id)
        if row is None:
            raise NotFound(f"Port {port_id} could not be found.")
        return row

    @staticmethod
    def _refreshed(session: Any, port: Port) -> dict[str, Any]:
        session.flush()
        session.refresh(port, ["bindings"])
        return _port_dict(port)

    # --- networks --------------------------------------------------------------------------

    def create_network(
        self,
        name: str,
        cidr: str,
        *,
        project_id: str | None = None,
        shared: bool = True,
        network_id: str | None = None,
        mtu: int = 1500,
    ) -> dict[str, Any]:
        """A network with one subnet on ``cidr``.

        With a ``network_id`` that already exists, that network is returned unchanged.
        """
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except ValueError as exc:
            raise BadRequest(f"Invalid CIDR {cidr!r}: {exc}.") from None
        if net.num_addresses < 4:
            raise BadRequest(f"CIDR {cidr} is too small: it leaves no address for a port.")
        if mtu < 68:
            raise BadRequest(f"Invalid MTU {mtu}: at least 68.")
        nid = network_id or new_uuid()
        with session_scope(self.db_url) as s:
            existing = s.get(Network, nid)
            if existing is not None:
                return _network_dict(existing)
            row = Network(
                id=nid,
                name=name,
                cidr=str(net),
                subnet_id=new_uuid(),
                project_id=project_id,
                shared=shared,
                mtu=mtu,
            )
            s.add(row)
            s.flush()
            return _network_dict(row)

    def get_network(self, network_id: str) -> dict[str, Any]:
        with session_scope(self.db_url) as s:
            return _network_dict(self._network(s, network_id))

    def list_networks(self, *, project_id: str | None = None) -> list[dict[str, Any]]:
        """All networks; with ``project_id``, those of that project plus the shared ones."""
        stmt = select(Network).order_by(Network.created_at, Network.id)
        if project_id is not None:
            stmt = stmt.where((Network.project_id == project_id) | Network.shared.is_(True))
        with session_scope(self.db_url) as s:
            return [_network_dict(r) for r in s.scalars(stmt).all()]

    # --- ports -----------------------------------------------------------------------------

    def create_port(
        self,
        network_id: str,
        *,
        project_id: str | None,
        name: str = "",
        port_id: str | None = None,
        mac_address: str | None = None,
    ) -> dict[str, Any]:
        """A DOWN, unbound port with the next free address of the network.

        Idempotent on ``port_id`` (Conflict if that id is a port of another network).
        Conflict when the network has no free address or the MAC is taken on it.
        """
        mac = _normalize_mac(mac_address) if mac_address is not None else None
        for _attempt in range(_MAC_ATTEMPTS):
            try:
                return self._create_port(
                    network_id, project_id, name, port_id or new_uuid(), mac or _random_mac()
                )
            except _MacTaken:
                if mac is not None:
                    raise Conflict(
                        f"MAC address {mac} is already in use on network {network_id}."
                    ) from None
        raise Conflict(f"Could not generate a free MAC address on network {network_id}.")

    def _create_port(
        self, network_id: str, project_id: str | None, name: str, port_id: str, mac: str
    ) -> dict[str, Any]:
        try:
            with session_scope(self.db_url) as s:
                lock_row(s, Network, network_id)
                network = self._network(s, network_id)
                existing = s.get(Port, port_id)
                if existing is not None:
                    if existing.network_id != network_id:
                        raise Conflict(
                            f"Port {port_id} already exists on network {existing.network_id}."
                        )
                    return _port_dict(existing)
                taken = s.scalar(
                    select(Port.id).where(Port.network_id == network_id, Port.mac_address == mac)
                )
                if taken is not None:
                    raise _MacTaken()
                used = set(
                    s.scalars(
                        select(IpAllocation.ip_address).where(IpAllocation.network_id == network_id)
                    ).all()
                )
                address = _first_free(ipaddress.ip_network(network.cidr), used)
                if address is None:
                    raise Conflict(
                        f"No more IP addresses available on network {network_id} ({network.cidr})."
                    )
                port = Port(
                    id=port_id,
                    network_id=network_id,
                    name=name,
                    mac_address=mac,
                    fixed_ips=[{"subnet_id": network.subnet_id, "ip_address": address}],
                    device_id="",
                    device_owner="",
                    status="DOWN",
                    project_id=project_id,
                    admin_state_up=True,
                )
                s.add(port)
                s.flush()
                s.add(IpAllocation(network_id=network_id, ip_address=address, port_id=port_id))
                return self._refreshed(s, port)
        except IntegrityError:
            # The network lock makes this a race on the port id alone (another network).
            with session_scope(self.db_url) as s:
                existing = s.get(Port, port_id)
                if existing is not None and existing.network_id == network_id:
                    return _port_dict(existing)
                if existing is not None:
                    raise Conflict(
                        f"Port {port_id} already exists on network {existing.network_id}."
                    ) from None
            raise

    def get_port(self, port_id: str) -> dict[str, Any]:
        with session_scope(self.db_url) as s:
            return _port_dict(self._port(s, port_id))

    def list_ports(
        self,
        *,
        device_id: str | None = None,
        network_id: str | None = None,
        project_id: str | None = None,
    ) -> list[dict[str, Any]]:
        stmt = select(Port).order_by(Port.created_at, Port.id)
        if device_id is not None:
            stmt = stmt.where(Port.device_id == device_id)
        if network_id is not None:
            stmt = stmt.where(Port.network_id == network_id)
        if project_id is not None:
            stmt = stmt.where(Port.project_id == project_id)
        with session_scope(self.db_url) as s:
            return [_port_dict(r) for r in s.scalars(stmt).all()]

    def update_port(
        self,
        port_id: str,
        *,
        device_id: str | Unset = UNSET,
        device_owner: str | Unset = UNSET,
        status: str | Unset = UNSET,
        name: str | Unset = UNSET,
    ) -> dict[str, Any]:
        """Change the given fields only (``""`` clears device_id / device_owner)."""
        if status is not UNSET and status not in PORT_STATUSES:
            raise BadRequest(f"Invalid port status {status!r}; expected one of DOWN, ACTIVE.")
        with session_scope(self.db_url) as s:
            port = self._port(s, port_id, lock=True)
            if device_id is not UNSET:
                port.device_id = device_id or ""
            if device_owner is not UNSET:
                port.device_owner = device_owner or ""
            if status is not UNSET:
                port.status = status
            if name is not UNSET:
                port.name = name or ""
            return self._refreshed(s, port)

    def delete_port(self, port_id: str) -> None:
        """Delete a port, its bindings and its addresses; nothing to do if it is gone already."""
        with session_scope(self.db_url) as s:
            lock_row(s, Port, port_id)
            port = s.get(Port, port_id)
            if port is None:
                return
            s.execute(delete(IpAllocation).where(IpAllocation.port_id == port_id))
            s.delete(port)  # and its bindings, by cascade

    # --- bindings --------------------------------------------------------------------------

    def create_binding(
        self,
        port_id: str,
        host: str,
        *,
        active: bool = False,
        vnic_type: str = "normal",
        profile: dict[str, Any] | None = None,
        vif_type: str = "ovs",
    ) -> dict[str, Any]:
        """Bind the port to ``host``, INACTIVE unless ``active``.

        Idempotent per (port, host): an existing binding is returned as it is (and
        activated when ``active`` is asked for).  ``active=True`` deactivates any
        other binding of the port, as :meth:`activate_binding` does.
        """
        if not host:
            raise BadRequest("A host is required to bind a port.")
        with session_scope(self.db_url) as s:
            port = self._port(s, port_id, lock=True)
            binding = s.get(PortBinding, (port_id, host))
            if binding is None:
                binding = PortBinding(
                    port_id=port_id,
                    host=host,
                    status="INACTIVE",
                    vif_type=vif_type,
                    vnic_type=vnic_type,
                    profile=dict(profile or {}),
                )
                s.add(binding)
                s.flush()
            if active:
                self._activate(s, port, host)
            s.flush()
            return _binding_dict(binding)

    @staticmethod
    def _activate(session: Any, port: Port, host: str) -> None:
        session.flush()
        session.refresh(port, ["bindings"])
        for b in port.bindings:
            b.status = "ACTIVE" if b.host == host else "INACTIVE"
        port.status = "ACTIVE"

    def activate_binding(self, port_id: str, host: str) -> dict[str, Any]:
        """Make the port's binding on ``host`` the active one (any other goes INACTIVE).

        The port becomes ACTIVE.  Idempotent; NotFound when there is no binding on ``host``.
        """
        with session_scope(self.db_url) as s:
            port = self._port(s, port_id, lock=True)
            binding = s.get(PortBinding, (port_id, host))
            if binding is None:
                raise NotFound(f"Port {port_id} has no binding on host {host}.")
            self._activate(s, port, host)
            s.flush()
            return _binding_dict(binding)

    def delete_binding(self, port_id: str, host: str) -> None:
        """Remove the port's binding on ``host``; the port goes DOWN if it was the active one.

        Idempotent (a missing port or binding is nothing to do).
        """
        with session_scope(self.db_url) as s:
            lock_row(s, Port, port_id)
            port = s.get(Port, port_id)
            if port is None:
                return
            binding = s.get(PortBinding, (port_id, host))
            if binding is None:
                return
            if binding.status == "ACTIVE":
                port.status = "DOWN"
            s.delete(binding)

    def bindings(self, port_id: str) -> list[dict[str, Any]]:
        """The port's bindings, by host (NotFound for a missing port)."""
        with session_scope(self.db_url) as s:
            return [_binding_dict(b) for b in self._port(s, port_id).bindings]

    def all_bindings(self) -> list[dict[str, Any]]:
        """Every binding of every port (for the audit)."""
        stmt = select(PortBinding).order_by(PortBinding.port_id, PortBinding.host)
        with session_scope(self.db_url) as s:
            return [_binding_dict(b) for b in s.scalars(stmt).all()]


class _MacTaken(Exception):
    """Internal: the chosen MAC is in use on the network; try another."""


__all__ = ["NetworkService"]
