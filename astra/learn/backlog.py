"""The retrain backlog: per tenant, how many corrections arrived since its current model was trained, for the retrain
catch-up schedule (schedules/learn.py).

A tenant's *new corrections* are its ``learn_examples`` rows that no holdout gate has judged yet (``verdict`` NULL:
stored by the feedback consumer, valid, not part of a rejected round, relabelled or re-asserted since the last
round) with a revision past the one its active model was trained to (the registry's ``metrics.learn_revision``; 0
when it is served the base model). They are what the next retrain reads, training and held-back examples alike.
A tenant is *due* when it has at least ``min_corrections`` of them (``ASTRA_RETRAIN_MIN_CORRECTIONS``, default 20).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from sqlalchemy import BigInteger, Engine, and_, cast, func, select

from astra.db.schema import learn_examples, model_registry
from astra.settings import ENV, InvalidSetting

DEFAULT_MIN_CORRECTIONS = 20
MAX_MIN_CORRECTIONS = 1_000_000
REVISION_METRIC = "learn_revision"  # intent_model's metric on a registry row (astra_assets/learn.py, pinned by a test)
ACTIVE = "active"


@dataclass(frozen=True)
class Backlog:
    tenant: str
    latest_revision: int  # the tenant's highest learning revision: what a retrain now reads up to
    trained_revision: int  # the revision its active model was trained to (0: none, the base model serves it)
    new_corrections: int  # not judged yet, past trained_revision

    def due(self, min_corrections: int) -> bool:
        return self.new_corrections >= min_corrections


def min_corrections(env: dict[str, str] | None = None) -> int:
    """``ASTRA_RETRAIN_MIN_CORRECTIONS`` (a whole number >= 1), else the default."""
    name = ENV["retrain_min_corrections"]
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return DEFAULT_MIN_CORRECTIONS
    if not re.fullmatch(r"[0-9]{1,7}", raw) or not 1 <= int(raw) <= MAX_MIN_CORRECTIONS:
        raise InvalidSetting(f"{name}={raw!r}: a whole number of corrections from 1 to {MAX_MIN_CORRECTIONS} is "
                             "required")
    return int(raw)


def retrain_backlog(engine: Engine) -> list[Backlog]:
    """Every tenant with labelled examples, by tenant: its latest revision, its active model's, and how many new
    corrections lie past it (one query)."""
    trained = (
        select(model_registry.c.tenant_id,
               func.coalesce(cast(model_registry.c.metrics[REVISION_METRIC].astext, BigInteger), 0)
               .label("revision"))
        .where(model_registry.c.status == ACTIVE)
        .distinct(model_registry.c.tenant_id)
        .order_by(model_registry.c.tenant_id, model_registry.c.version.desc())
        .subquery("trained")
    )
    table = learn_examples
    trained_revision = func.coalesce(trained.c.revision, 0)
    query = (
        select(table.c.tenant_id, func.max(table.c.revision), trained_revision,
               func.count().filter(and_(table.c.verdict.is_(None), table.c.revision > trained_revision)))
        .select_from(table.outerjoin(trained, trained.c.tenant_id == table.c.tenant_id))
        .group_by(table.c.tenant_id, trained.c.revision)
        .order_by(table.c.tenant_id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [Backlog(tenant, int(latest), int(done), int(new)) for tenant, latest, done, new in rows]


__all__ = ["DEFAULT_MIN_CORRECTIONS", "REVISION_METRIC", "Backlog", "min_corrections", "retrain_backlog"]
