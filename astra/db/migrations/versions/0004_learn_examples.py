"""learn_examples: LEARN's labelled examples, one per (tenant, utterance of a session version), stamped with the
tenant's learning revision so a sensor can tell which tenants have new corrections, and with the holdout gate's
verdict on the retrain that first used it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "learn_examples",
        sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.tenant_id"), primary_key=True, nullable=False),
        sa.Column("example_id", sa.String(32), primary_key=True),
        sa.Column("session", sa.Text, nullable=False),
        sa.Column("utterance_key", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("intent", sa.Text, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_zone", sa.Text, nullable=True),
        sa.Column("to_zone", sa.Text, nullable=True),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("report_sha256", sa.String(64), nullable=False),
        sa.Column("holdout", sa.Boolean, nullable=False),
        sa.Column("stream_id", sa.Text, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("verdict", sa.String(16), nullable=True),
        sa.Column("verdict_model", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("kind IN ('moved', 'edited', 'deleted', 'added', 'labelled')", name="learn_examples_kind"),
        sa.CheckConstraint("revision >= 1", name="learn_examples_revision_positive"),
        sa.CheckConstraint("verdict IN ('accepted', 'rejected')", name="learn_examples_verdict"),
    )
    op.create_index("learn_examples_tenant_revision", "learn_examples", ["tenant_id", "revision"])


def downgrade() -> None:
    op.drop_table("learn_examples")
