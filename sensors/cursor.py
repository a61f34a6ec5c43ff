"""The upload sensors' cursor: the scanner's state and the re-offer watermark, as compact JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from astra.uploads import new_state


@dataclass
class UploadCursor:
    scan: dict = field(default_factory=new_state)
    reoffer: dict = field(default_factory=dict)

    @classmethod
    def load(cls, raw: str | None) -> UploadCursor:
        """An empty, unreadable or older-format cursor starts afresh: every upload is judged once
        more (run keys are content hashes, so nothing runs twice)."""
        try:
            value = json.loads(raw) if raw else {}
        except ValueError:
            value = {}
        if not isinstance(value, dict) or not isinstance(value.get("scan"), dict) or "t" not in value["scan"]:
            return cls()
        return cls(value["scan"], value.get("reoffer") or {})

    def dump(self) -> str:
        return json.dumps({"scan": self.scan, "reoffer": self.reoffer}, sort_keys=True, separators=(",", ":"))
