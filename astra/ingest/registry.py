"""INGEST's per-tenant asset dedup registry (ARCHITECTURE §4 `asset_registry`, §5 RegisterAssets).

Blobs are content-addressed *per tenant*: the one stored copy of a tenant's file with digest
``<sha256>`` lives at ``s3://<assets_bucket>/<tenant>/blobs/sha256/<first 2 hex>/<sha256>``.
Dedup never crosses tenants: a digest another tenant holds is NEW for this one, with this
tenant's own URI, so a tenant learns nothing about another tenant's files.

``register()`` is one SQL statement (an INSERT … ON CONFLICT DO NOTHING in a CTE, joined back to
the existing rows), run in autocommit. Under a race two statements can be needed: a row another
transaction committed after this statement took its snapshot conflicts with our insert but is
not visible to our join, so those digests are read again (a second, rare round trip).

NEW means "this call created the registration: the caller stores the blob"; DUPLICATE means
"already registered (by an earlier call, or earlier in this same request)".
"""

from __future__ import annotations

import enum
import json
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from sqlalchemy import Engine, create_engine, event

from astra.db.engine import normalize_url
from astra.ingest.errors import IngestError
from astra.ingest.store import blob_uri
from astra.tenancy import InvalidKey, validate_slug

log = logging.getLogger(__name__)

MAX_ASSETS_PER_REQUEST = 1000
MAX_MEDIA_TYPE_CHARS = 255
MAX_NAME_CHARS = 1024
DEFAULT_MEDIA_TYPE = "application/octet-stream"
_SHA256 = re.compile(r"[0-9a-f]{64}")  # fullmatch: `$` would let a trailing newline through
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_KNOWN_TENANTS_MAX = 100_000

# One statement, one round trip, for any number of requests and tenants. `input` is the batch
# (deduplicated), `ins` the rows this statement created. The stored URI of a digest that was
# already there is read by a correlated subquery, i.e. one primary-key probe per digest
# whatever the planner thinks of the batch's size (as a join it picks a hash join over a
# sequential scan of asset_registry). That probe sees the statement's snapshot, not `ins`.
_REGISTER_SQL = """
WITH input AS (
    SELECT * FROM json_to_recordset(%(batch)s::json)
        AS t(tenant_id text, sha256 text, size bigint, media_type text, name text, canonical_uri text)
), ins AS (
    INSERT INTO asset_registry (tenant_id, sha256, size, media_type, name, canonical_uri)
    SELECT tenant_id, sha256, size, media_type, name, canonical_uri FROM input
    ON CONFLICT (tenant_id, sha256) DO NOTHING
    RETURNING tenant_id, sha256
)
SELECT input.tenant_id, input.sha256, ins.sha256 IS NOT NULL AS created,
       (SELECT r.canonical_uri FROM asset_registry r
        WHERE r.tenant_id = input.tenant_id AND r.sha256 = input.sha256) AS canonical_uri
FROM input
LEFT JOIN ins ON ins.tenant_id = input.tenant_id AND ins.sha256 = input.sha256
"""

_READ_SQL = """
SELECT k.tenant_id, k.sha256,
       (SELECT r.canonical_uri FROM asset_registry r WHERE r.tenant_id = k.tenant_id AND r.sha256 = k.sha256)
FROM unnest(%(tenant)s::text[], %(sha256)s::text[]) AS k(tenant_id, sha256)
"""

_TENANTS_SQL = "INSERT INTO tenants (tenant_id) SELECT unnest(%(tenant)s::text[]) ON CONFLICT (tenant_id) DO NOTHING"


class InvalidRegistration(IngestError, ValueError):
    """The request is malformed; ``problems`` names every bad field (``assets[i].sha256: …``)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = "; ".join(problems[:10]) + (f"; {len(problems) - 10} more" if len(problems) > 10 else "")
        super().__init__(f"invalid RegisterAssets request: {shown}")


class Outcome(enum.StrEnum):
    NEW = "NEW"
    DUPLICATE = "DUPLICATE"


@dataclass(frozen=True, slots=True)
class Digest:
    sha256: str  # 64 lowercase hex
    size: int  # bytes, >= 0
    media_type: str = DEFAULT_MEDIA_TYPE
    name: str = ""  # the file's name in the session, e.g. data/readings.csv


@dataclass(frozen=True, slots=True)
class Status:
    sha256: str
    outcome: Outcome
    canonical_uri: str

    @property
    def is_new(self) -> bool:
        return self.outcome is Outcome.NEW


def canonical_uri(assets_bucket: str, tenant: str, sha256: str) -> str:
    """`s3://<bucket>/<tenant>/blobs/sha256/<2 hex>/<sha256>`: where BlobStore puts the blob."""
    return blob_uri(assets_bucket, tenant, sha256)


def validate(tenant: str, digests: Sequence[Digest]) -> None:
    """Raise InvalidRegistration naming every problem of a request."""
    problems: list[str] = []
    try:
        validate_slug(tenant)
        if tenant.endswith("\n"):  # validate_slug's `$` lets one trailing newline through
            raise InvalidKey(f"invalid tenant {tenant!r}: must not end with a newline")
    except InvalidKey as exc:
        problems.append(f"tenant: {exc}")
    if len(digests) > MAX_ASSETS_PER_REQUEST:
        problems.append(f"assets: {len(digests)} digests in one request, at most {MAX_ASSETS_PER_REQUEST}")
        raise InvalidRegistration(problems)
    sizes: dict[str, int] = {}
    for i, d in enumerate(digests):
        where = f"assets[{i}]"
        if not isinstance(d.sha256, str) or not _SHA256.fullmatch(d.sha256):
            shown = d.sha256[:80] if isinstance(d.sha256, str) else type(d.sha256).__name__
            problems.append(f"{where}.sha256: must be 64 lowercase hex characters, got {shown!r}")
        if not isinstance(d.size, int) or isinstance(d.size, bool) or d.size < 0:
            problems.append(f"{where}.size: must be an integer >= 0, got {d.size!r}")
        elif isinstance(d.sha256, str):
            first = sizes.setdefault(d.sha256, d.size)
            if first != d.size:
                problems.append(f"{where}.size: {d.size} differs from {first} given earlier for the same sha256")
        for field, limit in (("media_type", MAX_MEDIA_TYPE_CHARS), ("name", MAX_NAME_CHARS)):
            value = getattr(d, field)
            if not isinstance(value, str):
                problems.append(f"{where}.{field}: must be a string")
            elif len(value) > limit:
                problems.append(f"{where}.{field}: {len(value)} characters, at most {limit}")
            elif "\x00" in value:
                problems.append(f"{where}.{field}: must not contain NUL characters")
    if problems:
        raise InvalidRegistration(problems)


def registry_engine(database_url: str, pool_size: int = 8, synchronous_commit: bool = False) -> Engine:
    """An engine sized and set up for the registry service.

    No pre-ping (it would cost a round trip per call): a connection the server dropped fails one
    call, which the service reports as UNAVAILABLE (the orchestrator fails open), and SQLAlchemy
    then replaces the pool's connections. psycopg prepares the registry statement on each
    connection after a few executions.

    `synchronous_commit` off (the default here, for these connections only): a commit returns
    before its WAL is flushed, which takes the disk's flush latency out of every call that
    registers something NEW. What it risks is bounded and benign: a Postgres crash can forget
    the last few hundred milliseconds of registrations, and a forgotten digest is simply NEW
    again next time (BlobStore.put_once then finds the blob already stored). A DUPLICATE answered
    from a row that is later lost was still right: the caller that got NEW stores the blob
    whatever the database remembers.
    """
    engine = create_engine(
        normalize_url(database_url),
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=5,
        pool_pre_ping=False,
        pool_recycle=3600,
        isolation_level="AUTOCOMMIT",
    )
    if not synchronous_commit:
        @event.listens_for(engine, "connect")
        def _async_commit(dbapi_conn, _record) -> None:
            autocommit = dbapi_conn.autocommit
            dbapi_conn.autocommit = True
            dbapi_conn.execute("SET synchronous_commit TO off")
            dbapi_conn.autocommit = autocommit

    return engine


class AssetRegistry:
    def __init__(self, engine: Engine, assets_bucket: str):
        if not isinstance(assets_bucket, str) or not _BUCKET.fullmatch(assets_bucket):
            raise ValueError(f"invalid assets bucket name {assets_bucket!r}")
        self.engine = engine
        self.assets_bucket = assets_bucket
        self._known_tenants: set[str] = set()
        self._lock = threading.Lock()

    def canonical_uri(self, tenant: str, sha256: str) -> str:
        return canonical_uri(self.assets_bucket, tenant, sha256)

    def register(self, tenant: str, digests: Sequence[Digest]) -> list[Status]:
        """Register a tenant's digests; one Status per digest, in request order.

        A sha256 given twice in one request is registered once: its first occurrence carries
        the outcome, later ones are DUPLICATE with the same canonical URI.
        """
        validate(tenant, digests)
        return self.register_validated([(tenant, digests)])[0]

    def register_many(self, requests: Sequence[tuple[str, Sequence[Digest]]]) -> list[list[Status]]:
        """Several requests (any tenants) in one statement, as if registered one after the other."""
        for tenant, digests in requests:
            validate(tenant, digests)
        return self.register_validated(requests)

    def register_validated(self, requests: Sequence[tuple[str, Sequence[Digest]]]) -> list[list[Status]]:
        """register_many for requests that already passed `validate` (the server validates each
        call on its own thread, so one bad call never fails a batch)."""
        unique: dict[tuple[str, str], Digest] = {}
        for tenant, digests in requests:
            for d in digests:
                unique.setdefault((tenant, d.sha256), d)
        found: dict[tuple[str, str], Status] = {}
        if unique:
            new_uri = {key: self.canonical_uri(*key) for key in unique}
            # One JSON text parameter: psycopg dumps a str far cheaper than six arrays.
            batch = json.dumps([
                {"tenant_id": t, "sha256": sha, "size": d.size, "media_type": d.media_type or DEFAULT_MEDIA_TYPE,
                 "name": d.name, "canonical_uri": new_uri[t, sha]}
                for (t, sha), d in unique.items()
            ], separators=(",", ":"))
            for tenant, sha, created, uri in self._execute(batch, {t for t, _ in unique}):
                if created:
                    found[tenant, sha] = Status(sha, Outcome.NEW, new_uri[tenant, sha])
                elif uri is not None:
                    found[tenant, sha] = Status(sha, Outcome.DUPLICATE, uri)
        out: list[list[Status]] = []
        seen: set[tuple[str, str]] = set()
        for tenant, digests in requests:
            statuses = []
            for d in digests:
                key = (tenant, d.sha256)
                status = found[key]  # always there: registry rows are never deleted
                if key in seen and status.is_new:  # an earlier digest of this batch registered it
                    status = Status(status.sha256, Outcome.DUPLICATE, status.canonical_uri)
                seen.add(key)
                statuses.append(status)
            out.append(statuses)
        return out

    def _execute(self, batch: str, tenants: set[str]) -> list[tuple]:
        # The pooled DBAPI connection itself: SQLAlchemy's Connection layer costs more CPU than
        # the statement on this hot path. The pool still does checkout, reset and invalidation.
        pooled = self.engine.raw_connection()
        try:
            conn = pooled.driver_connection
            restore = not conn.autocommit
            if restore:  # an engine shared with transactional code: put it back as we found it
                conn.autocommit = True
            try:
                params = {"batch": batch}
                unknown = sorted(tenants - self._known_tenants)
                if unknown:
                    conn.execute(_TENANTS_SQL, {"tenant": unknown})
                    self._remember(unknown)
                try:
                    rows = conn.execute(_REGISTER_SQL, params).fetchall()
                except psycopg.errors.ForeignKeyViolation:
                    # A cached tenant row is gone (a database wiped behind a running server):
                    # recreate the batch's tenants and try once more. The failed statement wrote nothing.
                    log.warning("tenant rows missing from tenants; recreating them")
                    conn.execute(_TENANTS_SQL, {"tenant": sorted(tenants)})
                    rows = conn.execute(_REGISTER_SQL, params).fetchall()
                missing = [(t, sha) for t, sha, created, uri in rows if not created and uri is None]
                if missing:  # committed by a concurrent transaction after our snapshot: read them now
                    keys = {"tenant": [t for t, _ in missing], "sha256": [sha for _, sha in missing]}
                    rows += [(t, sha, False, uri) for t, sha, uri in conn.execute(_READ_SQL, keys).fetchall()
                             if uri is not None]
                return rows
            finally:
                if restore and not conn.closed:
                    conn.autocommit = False
        except psycopg.OperationalError:
            # The connection broke (server restart, network): never hand it out again.
            pooled.invalidate()
            raise
        finally:
            pooled.close()

    def _remember(self, tenants: list[str]) -> None:
        with self._lock:
            if len(self._known_tenants) + len(tenants) > _KNOWN_TENANTS_MAX:
                self._known_tenants = set()
            self._known_tenants.update(tenants)
