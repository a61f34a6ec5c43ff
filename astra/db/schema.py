"""The tables of ARCHITECTURE §4. Every table carries tenant_id; every key starts with it.

This module is the SQLAlchemy Core description the code queries through; the migrations under
`migrations/versions/` are what creates it. A test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

TENANT_SLUG_CHECK = "tenant_id ~ '^[a-z0-9]([a-z0-9-]{0,62})$' AND position('--' in tenant_id) = 0"

tenants = Table(
    "tenants",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The tenant's retention in S3's standard class: its documents and session copies older than that move to a
    # colder one (astra/orchestrator/archival.py, migration 0005).
    Column("archive_after_days", Integer, nullable=False, server_default="365"),
    CheckConstraint(TENANT_SLUG_CHECK, name="tenants_slug"),
    CheckConstraint("archive_after_days BETWEEN 30 AND 36500", name="tenants_archive_after_days"),
)


def _tenant_fk(primary_key: bool = True) -> Column:
    return Column("tenant_id", String(63), ForeignKey("tenants.tenant_id"), primary_key=primary_key, nullable=False)


tenant_config_versions = Table(
    "tenant_config_versions",
    metadata,
    _tenant_fk(),
    Column("version", Integer, primary_key=True),
    Column("zone_map", JSONB, nullable=False),
    Column("style_map", JSONB, nullable=False),
    Column("template_sha256", String(64), nullable=False),
    Column("template_name", Text, nullable=True),  # None: published without one (CLI, before 0003)
    Column("created_by_run", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("version >= 1", name="tenant_config_versions_positive"),
)

asset_registry = Table(
    "asset_registry",
    metadata,
    _tenant_fk(),
    Column("sha256", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("media_type", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("canonical_uri", Text, nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

custody_ledger = Table(
    "custody_ledger",
    metadata,
    _tenant_fk(),
    Column("seq", BigInteger, primary_key=True),
    Column("entry", Text, nullable=False),  # canonical JSON, hashed exactly as stored
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Idempotency key of an append (e.g. "audio:<session>:v<n>:<sha256>"): a re-run finds its entry.
    Column("entry_key", Text, nullable=True),
    Index("custody_ledger_entry_key", "tenant_id", "entry_key", unique=True),
)

# Merkle roots (RFC 6962) of a tenant's ledger prefix, written by `astra guard verify` when the
# chain is intact; a later audit checks the ledger still extends them. Append-only like the ledger.
custody_checkpoints = Table(
    "custody_checkpoints",
    metadata,
    _tenant_fk(),
    Column("size", BigInteger, primary_key=True),
    Column("merkle_root", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("size >= 1", name="custody_checkpoints_size_positive"),
)

model_registry = Table(
    "model_registry",
    metadata,
    _tenant_fk(),
    Column("version", Integer, primary_key=True),
    Column("uri", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("metrics", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("status", String(16), nullable=False, server_default="candidate"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    _tenant_fk(primary_key=False),
    Column("topic", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
)

# LEARN's labelled examples (astra/learn/feedback.py), one per (tenant, utterance of a session version): a later
# feedback relabels the row. `revision` is the tenant's learning revision at the row's last relabel, allocated
# under a per-tenant lock, so a tenant's revisions commit in order and a sensor can use max(revision) as a cursor.
learn_examples = Table(
    "learn_examples",
    metadata,
    _tenant_fk(),
    Column("example_id", String(32), primary_key=True),
    Column("session", Text, nullable=False),
    Column("utterance_key", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("intent", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("from_zone", Text, nullable=True),
    Column("to_zone", Text, nullable=True),
    Column("model_version", Text, nullable=False),
    Column("report_sha256", String(64), nullable=False),
    Column("holdout", Boolean, nullable=False),
    Column("stream_id", Text, nullable=False),  # the feedback stream entry the row holds, "<ms>-<seq>"
    Column("revision", BigInteger, nullable=False),
    # The holdout gate's verdict on the first retrain that used the row (None: none yet), and that candidate's
    # model_registry version: a rejected round's labels train and judge nothing more until relabelled.
    Column("verdict", String(16), nullable=True),
    Column("verdict_model", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind IN ('moved', 'edited', 'deleted', 'added', 'labelled')", name="learn_examples_kind"),
    CheckConstraint("revision >= 1", name="learn_examples_revision_positive"),
    CheckConstraint("verdict IN ('accepted', 'rejected')", name="learn_examples_verdict"),
    Index("learn_examples_tenant_revision", "tenant_id", "revision"),
)
