"""API keys: the keys file's schema, hashing, constant-time lookup and scope decisions (no I/O here)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelplex_router.limits import Limits
from modelplex_spec import ConfigError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class KeySpec(BaseModel):
    """One entry of the keys file: the key itself or its sha256, and what it may do."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Shown in logs and audit lines; never the key.")
    key: str | None = Field(default=None, min_length=16, description="The key in clear (hashed on load).")
    sha256: str | None = Field(default=None, description="Hex sha256 of the key, instead of `key`.")
    models: list[str] = Field(default_factory=lambda: ["*"], description="Model ids or globs it may use.")
    manage: bool = Field(default=False, description="May unload, reload and set the default model.")
    limits: Limits = Field(default_factory=Limits)

    @model_validator(mode="after")
    def _one_secret(self) -> KeySpec:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError(f"key {self.name!r}: give exactly one of 'key' and 'sha256'")
        if self.sha256 is not None and not _HEX64.match(self.sha256.lower()):
            raise ValueError(f"key {self.name!r}: 'sha256' must be 64 hex digits")
        return self


class AccessFile(BaseModel):
    """``{"keys": [...], "model_limits": {"<model id or glob>": {...}}}``."""

    model_config = ConfigDict(extra="forbid")

    keys: list[KeySpec] = Field(default_factory=list)
    model_limits: dict[str, Limits] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_names(self) -> AccessFile:
        names = [k.name for k in self.keys]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"key names must be unique: {', '.join(dupes)}")
        return self


class KeysFileError(ConfigError):
    """The keys file cannot be used (the message names the problem, never a key)."""

    def __init__(self, message: str) -> None:
        super().__init__([message])


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class Principal:
    """Who sent a request: a key's name and scope (``anonymous`` when no keys are configured)."""

    name: str
    models: tuple[str, ...] = ("*",)
    manage: bool = True
    limits: Limits = field(default_factory=Limits)
    digest: bytes = field(default=b"", repr=False)

    def can_use(self, model_id: str) -> bool:
        return any(fnmatchcase(model_id, pattern) for pattern in self.models)


ANONYMOUS = Principal(name="anonymous")


@dataclass(frozen=True)
class KeyRing:
    """The configured keys, kept only as sha256 digests."""

    principals: tuple[Principal, ...] = ()
    model_limits: dict[str, Limits] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return not self.principals

    def authenticate(self, presented: str | None) -> Principal | None:
        """The key's principal, or None. Every digest is compared (constant time, no early exit)."""
        if not presented:
            return None
        digest = hash_key(presented)
        found: Principal | None = None
        for principal in self.principals:
            if hmac.compare_digest(digest, principal.digest) and found is None:
                found = principal
        return found

    def limits_for_model(self, model_id: str) -> list[Limits]:
        return [lim for pattern, lim in self.model_limits.items() if fnmatchcase(model_id, pattern)]


def parse_access_file(text: str, extra_admin_key: str | None = None) -> KeyRing:
    """The keys file's JSON -> KeyRing; ``extra_admin_key`` (an env var) adds a key named ``admin``."""
    try:
        data = json.loads(text) if text.strip() else {}
        spec = AccessFile.model_validate(data)
    except json.JSONDecodeError as exc:
        raise KeysFileError(f"the keys file is not valid JSON (line {exc.lineno})") from None
    except ValidationError as exc:
        # Only locations and messages: the input values could be keys.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise KeysFileError(f"the keys file is invalid: {problems}") from None
    specs = list(spec.keys)
    if extra_admin_key:
        if any(s.name == "admin" for s in specs):
            raise KeysFileError("the keys file has a key named 'admin' and an admin key is set too")
        specs.append(KeySpec(name="admin", key=extra_admin_key, models=["*"], manage=True))
    return KeyRing(tuple(_principal(s) for s in specs), dict(spec.model_limits))


def _principal(spec: KeySpec) -> Principal:
    digest = hash_key(spec.key) if spec.key is not None else bytes.fromhex(spec.sha256 or "")
    return Principal(spec.name, tuple(spec.models), spec.manage, spec.limits, digest)


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or ``x-api-key: <key>``."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


def visible(principal: Principal, model_ids: Iterable[str]) -> list[str]:
    return [m for m in model_ids if principal.can_use(m)]
