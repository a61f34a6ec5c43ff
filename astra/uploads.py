"""Incremental scanning of the uploads bucket, for the upload sensors.

Why not dagster-aws `get_objects`: it lists the whole bucket every tick, and its `since_key`
cursor skips keys that sort before the cursor but arrive after it (dagster issue #22892). Here:

- each tick lists one page of tenant prefixes (`Delimiter='/'`), continuing after the previous
  tick's last tenant and wrapping around, so a tick costs one page plus those tenants' areas;
- within a tenant it lists only one area (`<tenant>/templates/`, `<tenant>/sessions/`, …);
- the cursor remembers each key's ETag (uploads are temporary, so this stays small): a key is
  reported when it is new or its ETag changed (a re-upload), however it sorts and whatever its
  LastModified says (a multipart upload's LastModified is when it started, not when it landed).
Reporting the same object twice is harmless: sensors derive run keys from content hashes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Callable


@dataclass(frozen=True)
class UploadObject:
    tenant: str
    key: str
    etag: str
    size: int
    last_modified: datetime


@dataclass
class ScanResult:
    objects: list[UploadObject]
    state: dict
    tenants_scanned: list[str]
    wrapped: bool  # this tick reached the end of the tenant list

    @property
    def cursor(self) -> str:
        return json.dumps(self.state, sort_keys=True)

    def retry_later(self, obj: UploadObject) -> None:
        """Forget `obj`, so the next scan of its tenant reports it again (it could not be judged now)."""
        self.state["seen"].get(obj.tenant, {}).pop(obj.key, None)


def _after(prefix: str) -> str:
    # Every key under "acme/" sorts before "acme0" ('/' < '0'), and every later tenant after it.
    return prefix[:-1] + "0"


def scan(
    s3,
    bucket: str,
    area: str,
    cursor: str | None,
    accept: Callable[[str], bool] = lambda key: True,
    max_tenants: int = 100,
) -> ScanResult:
    state = json.loads(cursor) if cursor else {"after": "", "seen": {}}
    kwargs = {"Bucket": bucket, "Delimiter": "/", "MaxKeys": max_tenants}
    if state["after"]:
        kwargs["StartAfter"] = state["after"]
    page = s3.list_objects_v2(**kwargs)
    prefixes = [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    found: list[UploadObject] = []
    for prefix in prefixes:
        tenant = prefix[:-1]
        seen = state["seen"].get(tenant, {})
        current: dict[str, str] = {}
        for obj in _list_all(s3, bucket, f"{prefix}{area}/"):
            if not accept(obj["Key"]):
                continue
            etag = obj["ETag"].strip('"')
            current[obj["Key"]] = etag
            if seen.get(obj["Key"]) != etag:
                found.append(UploadObject(tenant, obj["Key"], etag, obj["Size"], obj["LastModified"]))
        if current:
            state["seen"][tenant] = current
        else:
            state["seen"].pop(tenant, None)
    wrapped = not page.get("IsTruncated")
    # MaxKeys counts stray objects at the root as well as prefixes: continue after whichever
    # came last, or a page of strays would send every tick back to the start.
    last = max([_after(p) for p in prefixes] + [o["Key"] for o in page.get("Contents", [])], default="")
    state["after"] = "" if wrapped else last
    return ScanResult(found, state, [p[:-1] for p in prefixes], wrapped)


def _list_all(s3, bucket: str, prefix: str):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])
