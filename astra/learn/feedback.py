"""Feedback events (ARCHITECTURE §4): labelled examples through the Redis Stream ``<prefix>:feedback`` into
Postgres ``learn_examples``, consumed by the consumer group ``learn``.

Delivery is at least once and storing is idempotent, so nothing is lost or counted twice:

- ``publish_examples`` appends a report's examples in one MULTI/EXEC: all of them or none. A retry after an
  ambiguous failure may append them twice; the consumer absorbs that.
- ``FeedbackConsumer.consume`` first reclaims (XAUTOCLAIM) entries another consumer read and never acknowledged for
  ``min_idle_ms`` (it crashed, or its commit failed), then reads new ones (XREADGROUP ``>``). A batch is upserted
  in one transaction and acknowledged (XACK) only after the commit: a failed commit leaves every entry pending, to
  be reclaimed after ``min_idle_ms`` by any consumer of the group, this one included.
- One row per ``example_id`` (tenant, session version, utterance). A row holds the entry with the highest stream id
  seen for it: a later feedback on the same session version relabels it, a re-delivered or older entry does not.
- ``revision`` grows per tenant when a batch inserts or relabels one of its rows (a new text or intent), or brings
  a rejected one back: a new report (another ``report_sha256``) carrying a label a gate rejected re-asserts it, so
  it trains and is judged again (the same report re-published, or an entry re-delivered, changes nothing). Allocated
  under a per-tenant advisory lock, so a tenant's revisions commit in order: a sensor may keep the highest revision
  it saw per tenant as its cursor (``pending_tenants``) and use ``<tenant>:<revision>`` as an idempotent run key.
- A malformed entry (not this format, invalid values) would fail on every delivery: it is acknowledged, stored
  nowhere, counted and logged as dead. It stays readable in the stream (XRANGE) until the stream is trimmed.

The stream is capped at about ``STREAM_MAXLEN`` entries (XADD MAXLEN ~): acknowledged entries are not deleted, the
cap is what bounds the stream's memory (an entry is a few hundred bytes: ~100 MB at the cap). An entry trimmed
while still pending is lost to LEARN; it is counted as ``trimmed`` and logged. The cap must exceed the backlog the
producers can build while every consumer is down.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import redis
from sqlalchemy import Engine, Numeric, and_, case, cast, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from astra.db.schema import learn_examples, tenants
from astra.learn.examples import InvalidExample, LabelledExample
from astra.tenancy import validate_slug

log = logging.getLogger(__name__)

STREAM = "feedback"
GROUP = "learn"
STREAM_MAXLEN = 250_000
ACCEPTED, REJECTED = "accepted", "rejected"  # learn_examples.verdict
DEFAULT_MIN_IDLE_MS = 60_000  # a live consumer holds an entry for one batch's commit, milliseconds
_LOCK_NAMESPACE = b"astra.learn_examples\0"
# Refreshed from the newest entry without bumping the revision: they say where a label came from, not what it is.
_PROVENANCE = ("session", "utterance_key", "kind", "from_zone", "to_zone", "model_version", "report_sha256")


class FeedbackStreamError(RuntimeError):
    """Redis did not do what the feedback stream needed; the message says what was and was not done."""


def stream_key(prefix: str) -> str:
    return f"{prefix}:{STREAM}"


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _order(stream_id: str) -> tuple[int, int]:
    ms, seq = stream_id.split("-")
    return int(ms), int(seq)


def publish_examples(redis_client: redis.Redis, prefix: str, examples: Iterable[LabelledExample], *,
                     maxlen: int = STREAM_MAXLEN) -> list[str]:
    """Append ``examples`` to ``<prefix>:feedback`` in one MULTI/EXEC; their stream ids, in order.

    Redis unreachable: ``FeedbackStreamError``, and none of them was appended (or, if the connection broke after
    EXEC reached Redis, all were: a retry appends them again, which the consumer absorbs)."""
    examples = list(examples)
    for example in examples:
        if not isinstance(example, LabelledExample):
            raise TypeError(f"expected LabelledExample, got {type(example).__name__}")
    if not examples:
        return []
    key = stream_key(prefix)
    pipe = redis_client.pipeline(transaction=True)
    for example in examples:
        pipe.xadd(key, example.to_fields(), maxlen=maxlen, approximate=True)
    try:
        return [_text(stream_id) for stream_id in pipe.execute()]
    except redis.RedisError as exc:
        raise FeedbackStreamError(
            f"could not append {len(examples)} labelled examples to {key}: {exc}; nothing was published, retry"
        ) from exc


@dataclass
class ConsumeResult:
    stored: dict[str, int] = field(default_factory=dict)  # tenant -> examples inserted, relabelled or brought back
    unchanged: int = 0  # well-formed entries that changed no label: re-deliveries, duplicates, older labels
    acked: int = 0
    reclaimed: int = 0  # entries taken over from a consumer that did not acknowledge them in time
    malformed: int = 0  # dead entries: acknowledged, stored nowhere
    trimmed: int = 0  # pending entries the stream's cap removed before they were stored: lost


class FeedbackConsumer:
    """One consumer of the group ``group`` on ``<prefix>:feedback``; ``consumer_name`` must be unique per process
    (two processes under one name would read each other's pending entries as their own)."""

    def __init__(self, redis_client: redis.Redis, engine: Engine, prefix: str, consumer_name: str,
                 group: str = GROUP, *, min_idle_ms: int = DEFAULT_MIN_IDLE_MS):
        if not consumer_name or not group:
            raise ValueError("consumer_name and group must be non-empty")
        if min_idle_ms < 1:
            raise ValueError(f"min_idle_ms must be >= 1, got {min_idle_ms}")
        self.redis, self.engine = redis_client, engine
        self.stream, self.group, self.consumer = stream_key(prefix), group, consumer_name
        self.min_idle_ms = min_idle_ms

    def ensure_group(self) -> None:
        """Create the group (and the stream) if missing. It starts at the stream's first entry, so examples
        published before any consumer existed are consumed too."""
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise FeedbackStreamError(f"cannot create consumer group {self.group} on {self.stream}: {exc}") from exc
        except redis.RedisError as exc:
            raise FeedbackStreamError(f"cannot create consumer group {self.group} on {self.stream}: {exc}") from exc

    def consume(self, count: int = 100, block_ms: int | None = None) -> ConsumeResult:
        """Store up to ``count`` entries: reclaimed ones first, then new ones (waiting up to ``block_ms`` for new
        ones when nothing was reclaimed; None: no wait). Redis unreachable: ``FeedbackStreamError``; a database
        error propagates and leaves the batch pending."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        if block_ms is not None:
            timeout = self.redis.connection_pool.connection_kwargs.get("socket_timeout")
            if block_ms < 1 or (timeout is not None and block_ms >= timeout * 1000):
                raise ValueError(f"block_ms must be >= 1 and below the Redis client's socket timeout "
                                 f"({timeout} s), got {block_ms}")
        result = ConsumeResult()
        entries = self._reclaim(count, result)
        if len(entries) < count:
            entries += self._read(count - len(entries), None if entries else block_ms)
        self._store(entries, result)
        return result

    def _redis(self, what: str, call, *args, **kwargs):
        try:
            try:
                return call(*args, **kwargs)
            except redis.ResponseError as exc:
                if not str(exc).startswith("NOGROUP"):
                    raise
                self.ensure_group()  # the stream or the group was deleted (FLUSHDB, a new Redis): recreate
                return call(*args, **kwargs)
        except redis.RedisError as exc:
            raise FeedbackStreamError(f"{what} on {self.stream} (group {self.group}) failed: {exc}") from exc

    def _reclaim(self, count: int, result: ConsumeResult) -> list[tuple[str, Mapping]]:
        entries: list[tuple[str, Mapping]] = []
        cursor = "0-0"
        while len(entries) < count:
            reply = self._redis("XAUTOCLAIM", self.redis.xautoclaim, self.stream, self.group, self.consumer,
                                self.min_idle_ms, start_id=cursor, count=count - len(entries))
            cursor, claimed = _text(reply[0]), reply[1]
            # Redis 7 lists pending entries trimmed from the stream apart, and drops them from the pending list.
            for stream_id in reply[2] if len(reply) > 2 else ():
                log.error("feedback entry %s was trimmed from %s before it was stored: lost", _text(stream_id),
                          self.stream)
                result.trimmed += 1
            gone = sum(1 for stream_id, _ in claimed if stream_id is None)
            if gone:
                result.trimmed += self._ack_trimmed(gone)
            entries += [(_text(stream_id), fields) for stream_id, fields in claimed if stream_id is not None]
            if cursor == "0-0":
                break
        result.reclaimed = len(entries)
        return entries

    def _ack_trimmed(self, gone: int) -> int:
        """Redis 6.2 returns a pending entry trimmed from the stream as nil, without its id, and keeps it pending.
        Trimming removes the oldest entries, so they are the oldest this consumer (which just claimed them) has
        pending: acknowledge those that are no longer in the stream."""
        pending = self._redis("XPENDING", self.redis.xpending_range, self.stream, self.group, min="-", max="+",
                              count=gone, consumername=self.consumer)
        lost = [_text(p["message_id"]) for p in pending
                if not self._redis("XRANGE", self.redis.xrange, self.stream, p["message_id"], p["message_id"])]
        for stream_id in lost:
            log.error("feedback entry %s was trimmed from %s before it was stored: lost", stream_id, self.stream)
        if lost:
            self._redis("XACK", self.redis.xack, self.stream, self.group, *lost)
        return len(lost)

    def _read(self, count: int, block_ms: int | None) -> list[tuple[str, Mapping]]:
        reply = self._redis("XREADGROUP", self.redis.xreadgroup, self.group, self.consumer, {self.stream: ">"},
                            count=count, block=block_ms)
        return [(_text(stream_id), fields) for _, messages in reply or () for stream_id, fields in messages]

    def _store(self, entries: list[tuple[str, Mapping]], result: ConsumeResult) -> None:
        newest: dict[tuple[str, str], tuple[str, LabelledExample]] = {}
        for stream_id, fields in entries:
            try:
                example = LabelledExample.from_fields(fields)
            except InvalidExample as exc:
                # Acknowledged below: it would fail the same way on every delivery and hold up the entries after it.
                log.error("feedback entry %s on %s is malformed, dropped (still readable with XRANGE until "
                          "trimmed): %s", stream_id, self.stream, exc)
                result.malformed += 1
                continue
            key = (example.tenant, example.example_id())
            if key not in newest or _order(stream_id) > _order(newest[key][0]):
                newest[key] = (stream_id, example)
        result.unchanged = len(entries) - result.malformed
        if newest:
            by_tenant: dict[str, list[tuple[str, LabelledExample]]] = {}
            for stream_id, example in newest.values():
                by_tenant.setdefault(example.tenant, []).append((stream_id, example))
            try:
                with self.engine.begin() as conn:
                    # Sorted: two consumers lock the same tenants in the same order, never each waiting on the other.
                    for tenant in sorted(by_tenant):
                        result.stored[tenant] = _upsert(conn, tenant, by_tenant[tenant])
            except Exception:
                log.warning("%d feedback entries not stored; left pending, reclaimed after %d ms", len(entries),
                            self.min_idle_ms)
                raise
            result.unchanged -= sum(result.stored.values())
        result.stored = {tenant: n for tenant, n in result.stored.items() if n}
        if entries:
            ids = [stream_id for stream_id, _ in entries]
            try:
                result.acked = self.redis.xack(self.stream, self.group, *ids)
            except redis.RedisError as exc:
                raise FeedbackStreamError(
                    f"handled {len(ids)} feedback entries (stored or dropped as malformed) but could not acknowledge "
                    f"them on {self.stream}: {exc}; they will be delivered again and change nothing"
                ) from exc


def _lock_key(tenant: str) -> int:
    return int.from_bytes(hashlib.sha256(_LOCK_NAMESPACE + tenant.encode("utf-8")).digest()[:8], "big", signed=True)


def _stream_order(column):
    return tuple_(cast(func.split_part(column, "-", 1), Numeric), cast(func.split_part(column, "-", 2), Numeric))


def _upsert(conn, tenant: str, batch: list[tuple[str, LabelledExample]]) -> int:
    """Upsert one tenant's examples (one entry per example_id) under its lock; how many were inserted, relabelled
    or brought back."""
    table = learn_examples
    conn.execute(pg_insert(tenants).values(tenant_id=tenant).on_conflict_do_nothing())
    conn.execute(select(func.pg_advisory_xact_lock(_lock_key(tenant))))
    revision = conn.scalar(select(func.coalesce(func.max(table.c.revision), 0))
                           .where(table.c.tenant_id == tenant)) + 1
    rows = [
        {"tenant_id": tenant, "example_id": example.example_id(), "session": example.session,
         "utterance_key": example.utterance_key, "text": example.text, "intent": example.intent,
         "kind": example.kind, "from_zone": example.from_zone, "to_zone": example.to_zone,
         "model_version": example.model_version, "report_sha256": example.report_sha256,
         "holdout": example.holdout(), "stream_id": stream_id, "revision": revision}
        for stream_id, example in batch
    ]
    stmt = pg_insert(table).values(rows)
    new = stmt.excluded
    # In SET, table.c.* are the row's values before this update.
    # A rejected round rejects every label it read, a genuine user's with a poisoner's: the user sending the label
    # again in a new report is what brings it back. Only a rejected one: an accepted or unjudged label trains anyway.
    reasserted = and_(table.c.verdict == REJECTED, table.c.report_sha256.is_distinct_from(new.report_sha256))
    changed = or_(table.c.text.is_distinct_from(new.text), table.c.intent.is_distinct_from(new.intent), reasserted)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.tenant_id, table.c.example_id],
        set_={
            **{name: new[name] for name in (*_PROVENANCE, "text", "intent", "stream_id")},
            "revision": case((changed, new.revision), else_=table.c.revision),
            # A new or re-asserted label has not been judged: it trains (and judges) again until a gate says otherwise.
            "verdict": case((changed, None), else_=table.c.verdict),
            "verdict_model": case((changed, None), else_=table.c.verdict_model),
            "updated_at": case((changed, func.now()), else_=table.c.updated_at),
        },
        where=_stream_order(new.stream_id) > _stream_order(table.c.stream_id),
    ).returning(table.c.revision)
    return sum(1 for row in conn.execute(stmt) if row.revision == revision)


def corrections(engine: Engine, tenant: str, *, holdout: bool, up_to_revision: int | None = None
                ) -> list[LabelledExample]:
    """The tenant's labelled examples, held back for the holdout gate (``holdout=True``) or for training, in
    example_id order, up to ``up_to_revision`` when given. Only ever the tenant's own; never those of a round the
    holdout gate rejected (:func:`settle`) unless a new report re-asserted them since: a poisoned round would
    otherwise be in every later retrain and fail it too."""
    validate_slug(tenant)
    table = learn_examples
    names = [name for name in LabelledExample.__dataclass_fields__ if name != "tenant"]
    query = (select(*(table.c[name] for name in names))
             .where(table.c.tenant_id == tenant, table.c.holdout.is_(holdout),
                    table.c.verdict.is_distinct_from(REJECTED))
             .order_by(table.c.example_id))
    if up_to_revision is not None:
        query = query.where(table.c.revision <= up_to_revision)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [LabelledExample(tenant=tenant, **dict(zip(names, row, strict=True))) for row in rows]


def latest_revision(engine: Engine, tenant: str) -> int:
    """The tenant's highest learning revision (0: no example yet): what a retrain reads up to."""
    validate_slug(tenant)
    with engine.connect() as conn:
        return conn.scalar(select(func.coalesce(func.max(learn_examples.c.revision), 0))
                           .where(learn_examples.c.tenant_id == tenant))


def settle(engine: Engine, tenant: str, up_to_revision: int, *, accepted: bool, registry_version: int) -> int:
    """The gate's verdict on the retrain that read the tenant's examples up to ``up_to_revision``: each of them not
    judged yet is ``accepted`` or ``rejected`` by the candidate ``registry_version``. Examples judged before keep
    their verdict; one relabelled or re-asserted since (a higher revision) is not judged by this round. Returns how
    many were."""
    validate_slug(tenant)
    table = learn_examples
    with engine.begin() as conn:
        conn.execute(select(func.pg_advisory_xact_lock(_lock_key(tenant))))
        done = conn.execute(
            update(table)
            .where(table.c.tenant_id == tenant, table.c.revision <= up_to_revision, table.c.verdict.is_(None))
            .values(verdict=ACCEPTED if accepted else REJECTED, verdict_model=registry_version)
        )
    return done.rowcount


def pending_tenants(engine: Engine, cursor: Mapping[str, int]) -> dict[str, int]:
    """Tenants whose examples changed past ``cursor`` (tenant -> the highest revision already handled; a tenant
    missing from it: none), with their current highest revision. A sensor stores the returned revisions in its
    cursor and requests ``<tenant>:<revision>``: rows are never deleted, so a revision is never reused and the run
    key is idempotent."""
    table = learn_examples
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.tenant_id, func.max(table.c.revision)).group_by(table.c.tenant_id)).all()
    return {tenant: revision for tenant, revision in rows if revision > cursor.get(tenant, 0)}


__all__ = [
    "ACCEPTED", "GROUP", "REJECTED", "STREAM", "STREAM_MAXLEN", "ConsumeResult", "FeedbackConsumer",
    "FeedbackStreamError", "corrections", "latest_revision", "pending_tenants", "publish_examples", "settle",
    "stream_key",
]
