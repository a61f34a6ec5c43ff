"""Custody: idempotent ledger appends (entry_key) and Merkle checkpoints, both append-only.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Adding a column is DDL, not an UPDATE: the append-only row trigger does not fire.
    op.add_column("custody_ledger", sa.Column("entry_key", sa.Text, nullable=True))
    op.create_index("custody_ledger_entry_key", "custody_ledger", ["tenant_id", "entry_key"], unique=True)
    op.create_table(
        "custody_checkpoints",
        sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.tenant_id"), primary_key=True, nullable=False),
        sa.Column("size", sa.BigInteger, primary_key=True),
        sa.Column("merkle_root", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("size >= 1", name="custody_checkpoints_size_positive"),
    )
    op.execute(
        """
        CREATE FUNCTION custody_checkpoints_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'custody_checkpoints is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$;
        """
    )
    op.execute(
        """
        CREATE TRIGGER custody_checkpoints_no_update_delete
        BEFORE UPDATE OR DELETE ON custody_checkpoints
        FOR EACH ROW EXECUTE FUNCTION custody_checkpoints_append_only();
        """
    )
    op.execute(
        """
        CREATE TRIGGER custody_checkpoints_no_truncate
        BEFORE TRUNCATE ON custody_checkpoints
        FOR EACH STATEMENT EXECUTE FUNCTION custody_checkpoints_append_only();
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE custody_checkpoints")
    op.execute("DROP FUNCTION custody_checkpoints_append_only()")
    op.drop_index("custody_ledger_entry_key", table_name="custody_ledger")
    op.drop_column("custody_ledger", "entry_key")
