"""Key pairs (``/os-keypairs``): import, generate (before 2.92), list, show, delete.

Key pairs belong to users.  From 2.10 an admin acts for another user with
``user_id`` (in the body on create, as a query parameter otherwise).  Creating
answers 201 and deleting 204 from 2.2 (200 and 202 before).  Generating a key
pair needs the ``cryptography`` package; without it only imports work.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from atoll.api import links, policy
from atoll.api.deps import (
    ContextDep,
    JsonBody,
    RuntimeDep,
    VersionDep,
    isotime,
    openapi_body,
    page_params,
    paginate,
)
from atoll.api.errors import validate
from atoll.api.microversion import APIVersion
from atoll.api.quotas import QuotaEngine
from atoll.api.schemas.keypairs import (
    CreateKeypairRequest21,
    CreateKeypairRequest22,
    CreateKeypairRequest210,
    CreateKeypairRequest292,
)
from atoll.context import RequestContext
from atoll.db.api_models import KeyPair
from atoll.db.session import session_scope
from atoll.exceptions import BadRequest, Conflict, NotFound

router = APIRouter(tags=["os-keypairs"])

RULE = "os_compute_api:os-keypairs:%s"
GENERATED_COMMENT = "Generated-by-atoll"


def _invalid(reason: str) -> BadRequest:
    return BadRequest(f"Keypair data is invalid: {reason}")


def _colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def ssh_fingerprint(public_key: str) -> str:
    """MD5 fingerprint of an OpenSSH public key line; 400 when it is not one."""
    parts = public_key.strip().split()
    if len(parts) < 2:
        raise _invalid("failed to generate fingerprint")
    try:
        blob = base64.b64decode(parts[1].encode(), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("failed to generate fingerprint") from None
    # the blob starts with the length-prefixed key type, which must match the line's
    if len(blob) < 4:
        raise _invalid("failed to generate fingerprint")
    size = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + size].decode(errors="replace") != parts[0]:
        raise _invalid("failed to generate fingerprint")
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        pass
    else:
        try:
            serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
        except Exception:  # ValueError, or UnsupportedAlgorithm for unknown key types
            raise _invalid("failed to generate fingerprint") from None
    return _colon_hex(hashlib.md5(blob, usedforsecurity=False).digest())


def x509_fingerprint(certificate: str) -> str:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise BadRequest(
            "Importing x509 key pairs needs the 'cryptography' package on the API host."
        ) from None
    try:
        cert = x509.load_pem_x509_certificate(certificate.encode())
    except ValueError:
        raise _invalid("failed to generate fingerprint") from None
    der = cert.public_bytes(serialization.Encoding.DER)
    return _colon_hex(hashlib.sha1(der, usedforsecurity=False).digest())


def generate_ssh_keypair() -> tuple[str, str, str]:
    """(private PEM, public OpenSSH line, fingerprint) of a new 2048-bit RSA key."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        raise BadRequest(
            "This API cannot generate key pairs (the 'cryptography' package is not "
            "installed); import one by giving public_key."
        ) from None
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    public = f"{public} {GENERATED_COMMENT}\n"
    return private, public, ssh_fingerprint(public)


def _summary(kp: KeyPair, version: APIVersion) -> dict[str, Any]:
    body: dict[str, Any] = {
        "fingerprint": kp.fingerprint,
        "name": kp.name,
        "public_key": kp.public_key,
    }
    if version >= "2.2":
        body["type"] = kp.type
    return body


def _detail(kp: KeyPair, version: APIVersion) -> dict[str, Any]:
    body = _summary(kp, version)
    body.update(
        {
            "user_id": kp.user_id,
            "deleted": False,
            "created_at": isotime(kp.created_at),
            "updated_at": None,
            "deleted_at": None,
            "id": kp.id,
        }
    )
    return body


def _target_user(request: Request, ctx: RequestContext, version: APIVersion) -> str:
    if version >= "2.10":
        return request.query_params.get("user_id") or ctx.user_id
    return ctx.user_id


def _get(runtime: Any, user_id: str, name: str) -> KeyPair:
    with session_scope(runtime.settings.api_db) as s:
        kp = s.scalar(select(KeyPair).where(KeyPair.user_id == user_id, KeyPair.name == name))
    if kp is None:
        raise NotFound(f"Keypair {name} not found for user {user_id}")
    return kp


@router.get("/os-keypairs")
def list_keypairs(
    request: Request, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    user_id = _target_user(request, ctx, version)
    policy.authorize(ctx, RULE % "index", {"user_id": user_id, "project_id": ctx.project_id})
    with session_scope(runtime.settings.api_db) as s:
        rows = list(
            s.scalars(select(KeyPair).where(KeyPair.user_id == user_id).order_by(KeyPair.name))
        )
    page = page_params(request) if version >= "2.35" else None
    if page is not None:
        rows = paginate(rows, page, key=lambda kp: kp.name)
    body: dict[str, Any] = {"keypairs": [{"keypair": _summary(kp, version)} for kp in rows]}
    if page is not None:
        next_links = links.collection_links(
            request, "os-keypairs", rows, page.limit, marker_key="name"
        )
        if next_links:
            body["keypairs_links"] = next_links
    return body


@router.post("/os-keypairs", openapi_extra=openapi_body(CreateKeypairRequest292))
def create_keypair(
    body: JsonBody, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> Any:
    if version >= "2.92":
        spec: Any = validate(CreateKeypairRequest292, body).keypair
    elif version >= "2.10":
        spec = validate(CreateKeypairRequest210, body).keypair
    elif version >= "2.2":
        spec = validate(CreateKeypairRequest22, body).keypair
    else:
        spec = validate(CreateKeypairRequest21, body).keypair
    user_id = getattr(spec, "user_id", None) or ctx.user_id
    key_type = getattr(spec, "type", "ssh")
    policy.authorize(ctx, RULE % "create", {"user_id": user_id, "project_id": ctx.project_id})
    QuotaEngine(runtime).check_deltas(
        ctx.project_id,
        {"key_pairs": 1},
        user_id=user_id,
        message="Quota exceeded, too many key pairs.",
    )
    private_key: str | None = None
    if spec.public_key is None:
        if key_type != "ssh":
            raise BadRequest(
                "Generating x509 key pairs is not supported; import a certificate with public_key."
            )
        private_key, public_key, fingerprint = generate_ssh_keypair()
    else:
        public_key = spec.public_key
        if key_type == "x509":
            fingerprint = x509_fingerprint(public_key)
        else:
            fingerprint = ssh_fingerprint(public_key)
    try:
        with session_scope(runtime.settings.api_db) as s:
            if s.scalar(
                select(KeyPair.id).where(KeyPair.user_id == user_id, KeyPair.name == spec.name)
            ):
                raise Conflict(f"Key pair '{spec.name}' already exists.")
            kp = KeyPair(
                name=spec.name,
                user_id=user_id,
                fingerprint=fingerprint,
                public_key=public_key,
                type=key_type,
            )
            s.add(kp)
    except IntegrityError:
        raise Conflict(f"Key pair '{spec.name}' already exists.") from None
    out = _summary(kp, version)
    out["user_id"] = user_id
    if private_key is not None:
        out["private_key"] = private_key
    return JSONResponse({"keypair": out}, status_code=201 if version >= "2.2" else 200)


@router.get("/os-keypairs/{keypair_name}")
def show_keypair(
    keypair_name: str,
    request: Request,
    runtime: RuntimeDep,
    ctx: ContextDep,
    version: VersionDep,
) -> dict[str, Any]:
    user_id = _target_user(request, ctx, version)
    policy.authorize(ctx, RULE % "show", {"user_id": user_id, "project_id": ctx.project_id})
    return {"keypair": _detail(_get(runtime, user_id, keypair_name), version)}


@router.delete("/os-keypairs/{keypair_name}")
def delete_keypair(
    keypair_name: str,
    request: Request,
    runtime: RuntimeDep,
    ctx: ContextDep,
    version: VersionDep,
) -> Response:
    user_id = _target_user(request, ctx, version)
    policy.authorize(ctx, RULE % "delete", {"user_id": user_id, "project_id": ctx.project_id})
    kp = _get(runtime, user_id, keypair_name)
    with session_scope(runtime.settings.api_db) as s:
        row = s.get(KeyPair, kp.id)
        if row is not None:
            s.delete(row)
    return Response(status_code=204 if version >= "2.2" else 202)
