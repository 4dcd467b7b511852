"""Request bodies of ``/os-keypairs``, one model per microversion step.

- 2.1: ``name``, ``public_key`` (omit it to have a key pair generated)
- 2.2: ``type`` (``ssh`` or ``x509``)
- 2.10: ``user_id`` (admins create key pairs for other users)
- 2.92: ``public_key`` required (no more generation); names may hold ``@`` and ``.``
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from atoll.api.schemas import Strict

_SAFE_OLD = set("_- " + string.digits + string.ascii_letters)
_NAME_292 = re.compile(r"^[a-zA-Z0-9 @._-]+$")


def _old_name(value: str) -> str:
    if not set(value) <= _SAFE_OLD:
        raise ValueError("Keypair data is invalid: Keypair name contains unsafe characters")
    return value


def _new_name(value: str) -> str:
    if not _NAME_292.match(value):
        raise ValueError(
            "Keypair name may contain only letters, digits, spaces and '@._-' characters"
        )
    return value


OldName = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_old_name)]
NewName = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_new_name)]
PublicKey = Annotated[str, Field(min_length=1, max_length=65535)]
UserId = Annotated[str, Field(min_length=1, max_length=255)]


class Keypair21(Strict):
    name: OldName
    public_key: PublicKey | None = None


class Keypair22(Keypair21):
    type: Literal["ssh", "x509"] = "ssh"


class Keypair210(Keypair22):
    user_id: UserId | None = None


class Keypair292(Strict):
    name: NewName
    public_key: PublicKey
    type: Literal["ssh", "x509"] = "ssh"
    user_id: UserId | None = None


class CreateKeypairRequest21(Strict):
    keypair: Keypair21


class CreateKeypairRequest22(Strict):
    keypair: Keypair22


class CreateKeypairRequest210(Strict):
    keypair: Keypair210


class CreateKeypairRequest292(Strict):
    keypair: Keypair292
