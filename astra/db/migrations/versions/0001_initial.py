"""Initial schema: every table of ARCHITECTURE §4, tenant-scoped, ledger append-only.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SLUG = "tenant_id ~ '^[a-z0-9]([a-z0-9-]{0,62})$' AND position('--' in tenant_id) = 0"


def _tenant(pk: bool = True) -> sa.Column:
    return sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.tenant_id"), primary_key=pk, nullable=False)


def _now() -> sa.Column:
    return sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.CheckConstraint(SLUG, name="tenants_slug"),
    )
    op.create_table(
        "tenant_config_versions",
        _tenant(),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("zone_map", JSONB, nullable=False),
        sa.Column("style_map", JSONB, nullable=False),
        sa.Column("template_sha256", sa.String(64), nullable=False),
        sa.Column("created_by_run", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.CheckConstraint("version >= 1", name="tenant_config_versions_positive"),
    )
    op.create_table(
        "asset_registry",
        _tenant(),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("media_type", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("canonical_uri", sa.Text, nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    )
    op.create_table(
        "custody_ledger",
        _tenant(),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("entry", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    )
    # Append-only: the application can only INSERT. A superuser can still drop the trigger,
    # which is why the chain is hash-linked and checkpointed (astra guard verify).
    op.execute(
        """
        CREATE FUNCTION custody_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'custody_ledger is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$;
        """
    )
    op.execute(
        """
        CREATE TRIGGER custody_ledger_no_update_delete
        BEFORE UPDATE OR DELETE ON custody_ledger
        FOR EACH ROW EXECUTE FUNCTION custody_ledger_append_only();
        """
    )
    op.execute(
        """
        CREATE TRIGGER custody_ledger_no_truncate
        BEFORE TRUNCATE ON custody_ledger
        FOR EACH STATEMENT EXECUTE FUNCTION custody_ledger_append_only();
        """
    )
    op.create_table(
        "model_registry",
        _tenant(),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("metrics", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("status", sa.String(16), nullable=False, server_default="candidate"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        _tenant(pk=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index(
        "outbox_pending", "outbox", ["topic", "id"], postgresql_where=sa.text("published_at IS NULL")
    )


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("model_registry")
    op.execute("DROP TABLE custody_ledger")
    op.execute("DROP FUNCTION custody_ledger_append_only()")
    op.drop_table("asset_registry")
    op.drop_table("tenant_config_versions")
    op.drop_table("tenants")
