"""Bounded, fair scanning of the uploads bucket, for the upload sensors.

S3 has no change feed, so a sensor must list to find new uploads. A tick here does bounded work
whatever the bucket holds, and one tenant's junk cannot starve another tenant:

- **Round robin.** Tenants (`Delimiter='/'` at the root) are visited in turn, starting after the
  tenant where the previous tick stopped and wrapping around.
- **Budget.** A tick spends at most `Budget.requests` S3 requests (lists, GETs, HEADs — the
  judge's own requests included, counted by `MeteredS3`) and `Budget.seconds` of wall time; one
  tenant at most `Budget.per_tenant` requests per tick. A tenant that runs out continues where it
  stopped on its next turn: its continuation (`StartAfter`) is in the cursor.
- **Sweeps and the mark.** Each tenant's area (`<tenant>/sessions/`, `<tenant>/templates/`) is
  swept in key order, a page per request. When a sweep ends with every candidate judged, the
  tenant's *mark* becomes the sweep's start (S3's own clock, the `Date` of its first listing)
  minus `MARGIN_SECONDS`: anything last modified before the mark was visible during that sweep and
  has been judged, so later sweeps skip it without reading it. Refused uploads, left in place on
  purpose, are therefore read once, not every tick.
- **Recently seen.** Keys modified after the mark are remembered as (key digest → ETag prefix,
  LastModified), at most `MAX_SEEN` in all, so a key is judged again only when it is new or
  re-uploaded (changed ETag) however it sorts (dagster-aws `get_objects` skips keys that sort
  before its cursor: dagster#22892). Entries below the mark are dropped; past the cap the oldest
  go first. A forgotten upload is offered to `settled(obj)` first (the sensors answer from the
  refusals they already recorded), else judged again — harmless: run keys are content hashes.
- **Not yet.** A `ready(tenant)` callback can hold a tenant back (e.g. no config yet); its uploads
  are neither judged nor remembered, and are judged on the first tick after it is ready.

The cursor holds, per tenant: its continuation, its mark, its sweep's start and whether that sweep
had to leave something for later; plus the bounded recently-seen set. A tick in steady state
costs one root listing and one listing per tenant visited.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

# How long after its LastModified an object may still be invisible to a listing (a slow PUT,
# a clock tick). A manifest or template written in one PUT is visible within seconds.
MARGIN_SECONDS = 120
# Recently-seen entries kept in the cursor, all tenants together (~40 bytes each): enough for the sessions that arrive
# while a tenant's mark trails its sweep (MARGIN_SECONDS and a round of the tenants). At 100, a burst of 500 sessions
# was judged again on every sweep until the mark passed it (bench/session_scale.py: 23,427 repeated run requests for
# 10,000 sessions); a forgotten upload is only read again, never lost.
MAX_SEEN = 2000
MAX_TENANTS = 1000  # tenants whose state the cursor keeps (least recently visited dropped first)


@dataclass(frozen=True)
class Budget:
    """What one tick may spend. Dagster times a sensor tick out at 60 s; a tick here stays near
    `seconds` (one judgement may run past it), and one tenant gets at most a share of it."""

    requests: int = 1000
    seconds: float = 8.0
    per_tenant: int = 200
    per_tenant_seconds: float = 2.0
    page: int = 1000  # keys per listing


@dataclass(frozen=True)
class UploadObject:
    tenant: str
    key: str
    etag: str
    size: int


@dataclass(frozen=True)
class Rules:
    """What the sensor using the scanner decides (see `scan`)."""

    accept: Callable[[str], bool]
    judge: Callable[[UploadObject], bool]
    ready: Callable[[str], str | None]
    settled: Callable[[UploadObject], bool]


class MeteredS3:
    """An S3 client that counts the requests made through it (what the budget is spent in)."""

    def __init__(self, client):
        self._client = client
        self.requests = 0

    @property
    def exceptions(self):
        return self._client.exceptions

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr) or name in ("get_paginator", "can_paginate"):
            return attr  # not requests (a paginator's pages are not counted: page by hand here)

        def counted(*args, **kwargs):
            self.requests += 1
            return attr(*args, **kwargs)

        return counted


@dataclass
class ScanResult:
    state: dict
    tenants_visited: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # tenant -> why its uploads wait
    newly_waiting: list[str] = field(default_factory=list)  # of those, the ones that did not wait last tick
    out_of_budget: bool = False


def _digest(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def _after(prefix: str) -> str:
    # Every key under "acme/" sorts before "acme0" ('/' < '0'), and every later tenant after it.
    return prefix[:-1] + "0"


def _server_time(page: dict) -> float:
    date = page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError):
        return time.time()


class _Tick:
    def __init__(self, s3: MeteredS3, bucket: str, area: str, state: dict, budget: Budget, rules: Rules):
        self.s3, self.bucket, self.area, self.budget = s3, bucket, area, budget
        self.rules = rules
        self.state = state
        self.result = ScanResult(state)
        self.deadline = time.monotonic() + budget.seconds
        self.start_requests = s3.requests
        self.free_judgements = 0

    def used(self, since: int) -> int:
        """Requests since the count `since`; a judgement that made none counts as one."""
        return self.s3.requests + self.free_judgements - since

    def spent(self) -> bool:
        return self.used(self.start_requests) >= self.budget.requests or time.monotonic() >= self.deadline

    def tenant_spent(self, start: int) -> bool:
        return (self.used(start) >= self.budget.per_tenant or time.monotonic() >= self.tenant_deadline
                or self.spent())

    def run(self) -> ScanResult:
        for tenant in self.tenant_ring():
            if self.spent():
                self.result.out_of_budget = True
                break
            self.visit(tenant)
            self.state["ring"] = tenant
            self.result.tenants_visited.append(tenant)
        self.trim()
        return self.result

    def tenant_ring(self):
        """Tenants after the ring position, then (wrapping) those up to it; each once."""
        ring = self.state.get("ring", "")
        yield from self.tenants(after=_after(ring + "/") if ring else "", upto=None)
        if ring:
            yield from self.tenants(after="", upto=ring)

    def tenants(self, after: str, upto: str | None):
        while not self.spent():
            kwargs = {"Bucket": self.bucket, "Delimiter": "/", "MaxKeys": self.budget.page}
            if after:
                kwargs["StartAfter"] = after
            page = self.s3.list_objects_v2(**kwargs)
            prefixes = [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            for prefix in prefixes:
                # Compare whole prefixes, as S3 orders them: "acme-eu/" sorts before "acme/" ('-' < '/')
                # although the bare name "acme-eu" sorts after "acme".
                if upto is not None and prefix > upto + "/":
                    return
                yield prefix[:-1]
            if not page.get("IsTruncated"):
                return
            # MaxKeys counts stray root objects as well as prefixes: continue after whichever came last.
            after = max([_after(p) for p in prefixes] + [o["Key"] for o in page.get("Contents", [])])

    def visit(self, tenant: str) -> None:
        tstate = self.state["t"].setdefault(tenant, {"after": "", "mark": 0, "sweep": 0, "dirty": 0})
        tstate["visited"] = int(time.time())
        start = self.s3.requests + self.free_judgements
        self.tenant_deadline = time.monotonic() + self.budget.per_tenant_seconds
        first_page = True
        while not self.tenant_spent(start):
            kwargs = {"Bucket": self.bucket, "Prefix": f"{tenant}/{self.area}/", "MaxKeys": self.budget.page}
            if tstate["after"]:
                kwargs["StartAfter"] = tstate["after"]
            page = self.s3.list_objects_v2(**kwargs)
            if not tstate["after"] and first_page:  # a new sweep starts with this listing
                if not page.get("Contents"):
                    del self.state["t"][tenant]  # nothing in its area: nothing to remember
                    return
                tstate.update(sweep=int(_server_time(page)), dirty=0)
            first_page = False
            if not self.visit_page(tenant, tstate, page.get("Contents", []), start):
                return  # out of budget or held back: continue from `after` next turn
            if not page.get("IsTruncated"):
                self.end_sweep(tenant, tstate)
                return

    def visit_page(self, tenant: str, tstate: dict, contents: list[dict], start: int) -> bool:
        """Judge the page's candidates in key order; False when this visit must stop early."""
        seen = self.state["seen"].setdefault(tenant, {})
        for obj in contents:
            key, etag = obj["Key"], obj["ETag"].strip('"')
            modified = int(obj["LastModified"].timestamp())
            known = seen.get(_digest(key))
            new = self.rules.accept(key) and modified >= tstate["mark"] and (known is None or known[0] != etag[:12])
            upload = UploadObject(tenant, key, etag, obj["Size"])
            if new and not self.rules.settled(upload):
                if self.tenant_spent(start):
                    return False
                why = self.rules.ready(tenant)
                if why:
                    self.hold(tenant, tstate, why)
                    return False
                tstate.pop("wait", None)
                if self.judged(upload):
                    seen[_digest(key)] = [etag[:12], modified]
                else:
                    tstate["dirty"] = 1  # left for later: this sweep cannot move the mark
            tstate["after"] = key
        return True

    def judged(self, obj: UploadObject) -> bool:
        before = self.s3.requests
        settled = self.rules.judge(obj)
        self.free_judgements += self.s3.requests == before
        return settled

    def hold(self, tenant: str, tstate: dict, why: str) -> None:
        self.result.waiting[tenant] = why
        if not tstate.get("wait"):
            self.result.newly_waiting.append(tenant)
        tstate["wait"] = 1

    def end_sweep(self, tenant: str, tstate: dict) -> None:
        if not tstate["dirty"]:
            tstate["mark"] = max(tstate["mark"], tstate["sweep"] - MARGIN_SECONDS)
        tstate["after"] = ""
        seen = self.state["seen"].get(tenant, {})
        for digest in [d for d, (_, modified) in seen.items() if modified < tstate["mark"]]:
            del seen[digest]

    def trim(self) -> None:
        """Keep the cursor bounded: the oldest recently-seen entries and the longest-unvisited
        tenants go first."""
        entries = [(v[1], t, d) for t, s in self.state["seen"].items() for d, v in s.items()]
        for _, tenant, digest in sorted(entries)[: max(0, len(entries) - MAX_SEEN)]:
            del self.state["seen"][tenant][digest]
        tenants = sorted(self.state["t"], key=lambda t: self.state["t"][t].get("visited", 0))
        for tenant in tenants[: max(0, len(tenants) - MAX_TENANTS)]:
            del self.state["t"][tenant]
        for tenant in [t for t, s in self.state["seen"].items() if not s or t not in self.state["t"]]:
            del self.state["seen"][tenant]


def new_state() -> dict:
    return {"ring": "", "t": {}, "seen": {}}


def scan(
    s3: MeteredS3,
    bucket: str,
    area: str,
    state: dict | None,
    judge: Callable[[UploadObject], bool],
    accept: Callable[[str], bool] = lambda key: True,
    ready: Callable[[str], str | None] = lambda tenant: None,
    settled: Callable[[UploadObject], bool] = lambda obj: False,
    budget: Budget | None = None,
) -> ScanResult:
    """One tick over `<tenant>/<area>/`: `judge(obj)` is called for each new or changed object that
    `accept`s its key, and returns True when it is settled (run requested or refused) or False to
    be offered again on a later sweep. `ready(tenant)` returns why a tenant's uploads must wait, or
    None. `settled(obj)` says an object was dealt with before though the cursor forgot it (e.g. a
    refusal already recorded); it is skipped unread. `s3` must be a `MeteredS3` shared with the
    judge, so the judge's requests count too."""
    rules = Rules(accept, judge, ready, settled)
    return _Tick(s3, bucket, area, state or new_state(), budget or Budget(), rules).run()

