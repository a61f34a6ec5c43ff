"""The one canonical JSON byte form of everything ASTRA hashes or stores by hash: custody ledger entries,
transcripts, intent outputs, comparison reports. Sorted keys, no blanks, UTF-8 (not ASCII-escaped); NaN and
Infinity raise ValueError (they are not JSON, and no reader takes them). The same value gives the same bytes,
so their sha256 names it."""

from __future__ import annotations

import json


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
