"""Labelled examples: what the comparator derives from a user's corrections, what the feedback stream carries and
what Postgres keeps (``learn_examples``).

One label per utterance: ``example_id`` hashes tenant, session version and utterance key, so a later feedback on
the same session version relabels the same example instead of adding a second one. ``holdout`` is a fixed function
of that id (one example in five), so an example never moves between the training data and the gate's holdout.

A stream entry is flat ``str`` fields (``to_fields`` / ``from_fields``) carrying ``format``; a consumer refuses a
format it does not know, so a change of layout must reach the consumers before the producers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

from astra.core.intent.data import Example
from astra.tenancy import InvalidKey, SessionKey, validate_slug

FORMAT = "1"
KINDS = frozenset({"moved", "edited", "deleted", "added", "labelled"})
HOLDOUT_MODULUS = 5  # one example in five is held back for the holdout gate
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Fields that are optional in the dataclass; a stream entry carries "" for None (a zone id is never empty).
_OPTIONAL = ("from_zone", "to_zone")


class InvalidExample(ValueError):
    """A labelled example (or a stream entry meant to hold one) that breaks the contract; the message says how."""


@dataclass(frozen=True)
class LabelledExample:
    tenant: str
    session: str  # sessions partition key "<tenant>--<session_id>--v<n>"
    utterance_key: str  # the intent output's utterance id, or "added:<sha256 of normalized text>[:16]"
    text: str
    intent: str  # an intent of the model's label set, or "oos"
    kind: str  # "moved" | "edited" | "deleted" | "added" | "labelled"
    from_zone: str | None
    to_zone: str | None
    model_version: str  # the model version that produced the original intent output
    report_sha256: str  # sha256 of the comparison report JSON it came from

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None and field.name in _OPTIONAL:
                continue
            if not isinstance(value, str) or not value:
                raise InvalidExample(f"{field.name} must be a non-empty string, got {value!r}")
            # Postgres text cannot hold NUL, and a lone surrogate cannot be encoded for Redis: either would make
            # the entry fail on every delivery, so it is refused here, before it is published.
            if "\x00" in value:
                raise InvalidExample(f"{field.name} holds a NUL character")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidExample(f"{field.name} is not valid Unicode (a lone surrogate)") from None
        try:
            validate_slug(self.tenant)
            session = SessionKey.parse(self.session)
        except InvalidKey as exc:
            raise InvalidExample(str(exc)) from None
        if session.tenant != self.tenant:
            raise InvalidExample(f"session {self.session!r} does not belong to tenant {self.tenant!r}")
        if not self.text.strip():
            raise InvalidExample("text is blank: nothing to learn from")
        if self.kind not in KINDS:
            raise InvalidExample(f"kind {self.kind!r} is not one of {sorted(KINDS)}")
        if not _SHA256.fullmatch(self.report_sha256):
            raise InvalidExample(f"report_sha256 {self.report_sha256!r} is not 64 lowercase hex digits")

    def example_id(self) -> str:
        digest = hashlib.sha256("\0".join((self.tenant, self.session, self.utterance_key)).encode("utf-8"))
        return digest.hexdigest()[:32]

    def holdout(self) -> bool:
        return int(self.example_id()[:8], 16) % HOLDOUT_MODULUS == 0

    def to_example(self) -> Example:
        return Example(text=self.text, intent=self.intent)

    def to_fields(self) -> dict[str, str]:
        entry = {"format": FORMAT}
        for field in fields(self):
            value = getattr(self, field.name)
            entry[field.name] = "" if value is None else value
        return entry

    @classmethod
    def from_fields(cls, entry: Mapping[str | bytes, str | bytes]) -> LabelledExample:
        """The example in a stream entry (keys and values as ``str``, or as the ``bytes`` a Redis client returns).

        Fields this format does not name are ignored; a missing field or another format is ``InvalidExample``."""
        decoded: dict[str, str] = {}
        for key, value in entry.items():
            try:
                key = key.decode("utf-8") if isinstance(key, bytes) else key
                decoded[key] = value.decode("utf-8") if isinstance(value, bytes) else value
            except UnicodeDecodeError:
                raise InvalidExample(f"field {key!r} is not UTF-8") from None
        if decoded.get("format") != FORMAT:
            raise InvalidExample(f"format {decoded.get('format')!r} is not {FORMAT!r}")
        names = [field.name for field in fields(cls)]
        missing = [name for name in names if name not in decoded]
        if missing:
            raise InvalidExample(f"missing fields: {', '.join(missing)}")
        values = {name: decoded[name] for name in names}
        for name in _OPTIONAL:
            values[name] = values[name] or None
        return cls(**values)


__all__ = ["FORMAT", "HOLDOUT_MODULUS", "KINDS", "InvalidExample", "LabelledExample"]
