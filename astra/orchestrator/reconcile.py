"""Reconciliation of fail-open handovers: register later what was taken as new when the
registry was down or slow. Drained by the `dedup_reconcile` schedule; safe to run concurrently
(rows are claimed with SKIP LOCKED) and repeatedly (registration is idempotent)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine, func, select, update

from astra.db.schema import outbox
from astra.ingest.registry import Digest
from astra.orchestrator.handover import RECONCILE_TOPIC
from astra.orchestrator.registry_client import RegistryAuthError, RegistryClient, RegistryError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcileOutcome:
    registered: int  # outbox rows whose digests are now registered
    still_pending: int  # rows left for a later pass (registry still unreachable)
    new: int  # digests the registry had not seen
    duplicate: int  # digests another session had registered meanwhile


def reconcile(engine: Engine, client: RegistryClient, batch: int = 100) -> ReconcileOutcome:
    """One pass over pending rows, oldest first. This platform job reads every tenant's rows (each
    row carries its tenant, and each registration is made for that tenant alone). A row the
    registry refuses is counted and logged, and does not stop the others; a registry that refuses
    the caller (wrong or missing token) stops the pass with nothing changed: every row would fail."""
    registered = pending = new = dup = 0
    with engine.begin() as conn:
        rows = conn.execute(
            select(outbox.c.id, outbox.c.tenant_id, outbox.c.payload, outbox.c.attempts)
            .where(outbox.c.topic == RECONCILE_TOPIC, outbox.c.published_at.is_(None))
            .order_by(outbox.c.attempts, outbox.c.id).limit(batch).with_for_update(skip_locked=True)
        ).all()
        for row in rows:
            digests = [Digest(d["sha256"], d["size"], d["media_type"], d["name"]) for d in row.payload["digests"]]
            try:
                result = client.register(row.tenant_id, digests)
            except RegistryAuthError:
                raise
            except RegistryError as exc:
                log.error("reconciliation of outbox row %s (%s) refused: %s", row.id, row.tenant_id, exc)
                result = None
            done = result is not None and not result.skipped
            conn.execute(
                update(outbox).where(outbox.c.id == row.id, outbox.c.tenant_id == row.tenant_id)
                .values(attempts=outbox.c.attempts + 1, published_at=func.now() if done else None)
            )
            if done:
                registered += 1
                new += sum(s.is_new for s in result.statuses)
                dup += sum(not s.is_new for s in result.statuses)
            else:
                pending += 1
    return ReconcileOutcome(registered, pending, new, dup)


def pending_count(engine: Engine, tenant: str | None = None) -> int:
    query = select(func.count()).select_from(outbox).where(
        outbox.c.topic == RECONCILE_TOPIC, outbox.c.published_at.is_(None))
    if tenant is not None:
        query = query.where(outbox.c.tenant_id == tenant)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()
