"""Storage of the embedded image, volume and network services.

One schema (``ServicesBase.metadata``) in the services' own database, apart from
the API and cell databases: these stand in for Glance, Cinder and Neutron.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from atoll.db.types import new_uuid, utcnow

# Microseconds on MySQL/MariaDB too (their DATETIME keeps whole seconds by default), so
# that listings ordered by creation time keep creation order.
_Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def created_col():  # type: ignore[no-untyped-def]
    return mapped_column(_Timestamp, default=utcnow, nullable=False)


def updated_col():  # type: ignore[no-untyped-def]
    return mapped_column(_Timestamp, default=utcnow, onupdate=utcnow, nullable=True)


class ServicesBase(DeclarativeBase):
    pass


# --- image (Glance) -------------------------------------------------------------------------


class Image(ServicesBase):
    __tablename__ = "images"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    disk_format: Mapped[str] = mapped_column(String(32), default="raw")
    container_format: Mapped[str] = mapped_column(String(32), default="bare")
    min_disk: Mapped[int] = mapped_column(Integer, default=0)
    min_ram: Mapped[int] = mapped_column(Integer, default=0)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    checksum: Mapped[str | None] = mapped_column(String(32), nullable=True)
    visibility: Mapped[str] = mapped_column(String(16), default="public")
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = created_col()
    updated_at: Mapped[dt.datetime | None] = updated_col()


# --- volume (Cinder) ------------------------------------------------------------------------


class Volume(ServicesBase):
    __tablename__ = "volumes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(255), default="")
    size: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="available")
    bootable: Mapped[bool] = mapped_column(Boolean, default=False)
    image_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    created_at: Mapped[dt.datetime] = created_col()
    attachments: Mapped[list[VolumeAttachment]] = relationship(
        lazy="selectin", order_by="VolumeAttachment.created_at, VolumeAttachment.id"
    )


class VolumeAttachment(ServicesBase):
    __tablename__ = "volume_attachments"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    volume_id: Mapped[str] = mapped_column(ForeignKey("volumes.id"), index=True)
    instance_uuid: Mapped[str] = mapped_column(String(36), index=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    connector: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="reserved")
    attach_mode: Mapped[str] = mapped_column(String(4), default="rw")
    created_at: Mapped[dt.datetime] = created_col()


# --- network (Neutron) ----------------------------------------------------------------------


class Network(ServicesBase):
    __tablename__ = "networks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(255), default="")
    cidr: Mapped[str] = mapped_column(String(64))
    # One subnet per network: its id is what ports' fixed_ips name.
    subnet_id: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    project_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    shared: Mapped[bool] = mapped_column(Boolean, default=True)
    mtu: Mapped[int] = mapped_column(Integer, default=1500)
    created_at: Mapped[dt.datetime] = created_col()


class Port(ServicesBase):
    __tablename__ = "ports"
    __table_args__ = (UniqueConstraint("network_id", "mac_address"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    mac_address: Mapped[str] = mapped_column(String(17))
    fixed_ips: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    device_id: Mapped[str] = mapped_column(String(255), default="", index=True)
    device_owner: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16), default="DOWN")
    project_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = created_col()
    bindings: Mapped[list[PortBinding]] = relationship(
        lazy="selectin", order_by="PortBinding.host", cascade="all, delete-orphan"
    )


class PortBinding(ServicesBase):
    __tablename__ = "port_bindings"
    port_id: Mapped[str] = mapped_column(ForeignKey("ports.id"), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="INACTIVE")
    vif_type: Mapped[str] = mapped_column(String(64), default="ovs")
    vnic_type: Mapped[str] = mapped_column(String(64), default="normal")
    profile: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = created_col()


class IpAllocation(ServicesBase):
    """One address in use on a network; the primary key is what forbids handing it out twice."""

    __tablename__ = "ip_allocations"
    __table_args__ = (Index("ix_ip_allocations_port_id", "port_id"),)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), primary_key=True)
    ip_address: Mapped[str] = mapped_column(String(64), primary_key=True)
    port_id: Mapped[str] = mapped_column(ForeignKey("ports.id"))
