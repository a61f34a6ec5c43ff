"""Tenant and partition key rules (ARCHITECTURE §3): lowercase [a-z0-9-], no commas.

A tenant slug never contains `--`, because session partition keys join tenant, session id and
version with `--`: `<tenant>--<session_id>--v<n>` must split back unambiguously.

Every pattern here is applied with `fullmatch`: `re.match` with a trailing `$` also accepts one
trailing newline, and a key that differs from another only by a newline would alias it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_SESSION_KEY = re.compile(r"(?P<tenant>[a-z0-9-]+?)--(?P<session>[a-z0-9-]+?)--v(?P<version>[1-9][0-9]*)")
# C0 and C1 control characters and DEL: never part of a key or a path a manifest names.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class InvalidKey(ValueError):
    pass


def control_characters(value: str) -> list[str]:
    """The control characters in `value`, escaped for an error message (empty: none)."""
    return sorted({repr(c)[1:-1] for c in _CONTROL.findall(value)})


# The owner of the base intent model (models/base/…, model_registry rows). No customer may be
# called that: its corrections would train, and its reads would see, the model every tenant shares.
BASE_MODEL_OWNER = "base"
# The model store's root in the assets bucket (models/<tenant>/…): a tenant called so would have its own objects
# under every tenant's models, and the archival rule of its prefix would reach them.
MODEL_STORE_ROOT = "models"
RESERVED_TENANTS = frozenset({BASE_MODEL_OWNER, MODEL_STORE_ROOT})


def validate_slug(value: str, what: str = "tenant") -> str:
    if not isinstance(value, str) or not _SLUG.fullmatch(value) or "--" in value or value.endswith("-"):
        raise InvalidKey(
            f"invalid {what} {value!r}: use 1-63 characters of lowercase a-z, 0-9 and single '-', "
            "starting with a letter or digit"
        )
    if what == "tenant" and value in RESERVED_TENANTS:
        raise InvalidKey(f"invalid tenant {value!r}: the name is reserved (the base model's owner, the model store)")
    return value


def validate_model_owner(value: str) -> str:
    """A tenant whose models may be stored: any valid tenant, or the base model's owner."""
    return value if value == BASE_MODEL_OWNER else validate_slug(value)


@dataclass(frozen=True)
class SessionKey:
    tenant: str
    session_id: str
    version: int

    def __post_init__(self) -> None:
        validate_slug(self.tenant, "tenant")
        validate_slug(self.session_id, "session id")
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 1:
            raise InvalidKey(f"invalid session version {self.version!r}: must be an integer >= 1")

    @property
    def partition_key(self) -> str:
        return f"{self.tenant}--{self.session_id}--v{self.version}"

    @property
    def upload_prefix(self) -> str:
        """The version folder in the uploads bucket: `<tenant>/sessions/<session_id>/v<n>/`."""
        return f"{self.tenant}/sessions/{self.session_id}/v{self.version}/"

    @classmethod
    def parse(cls, key: str) -> SessionKey:
        m = _SESSION_KEY.fullmatch(key)
        if not m:
            raise InvalidKey(f"invalid session partition key {key!r}: expected <tenant>--<session_id>--v<n>")
        return cls(m["tenant"], m["session"], int(m["version"]))
