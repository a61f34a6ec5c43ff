"""tenants.archive_after_days: the tenant's retention in S3's standard class. Its documents and durable session copies
older than that move to a colder class through the lifecycle rules ASTRA sets on the assets bucket
(astra/orchestrator/archival.py). Every tenant has one (365 unless set); between 30 days and a century, as custody.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("archive_after_days", sa.Integer, nullable=False, server_default="365"))
    op.create_check_constraint("tenants_archive_after_days", "tenants",
                               "archive_after_days BETWEEN 30 AND 36500")


def downgrade() -> None:
    op.drop_constraint("tenants_archive_after_days", "tenants", type_="check")
    op.drop_column("tenants", "archive_after_days")
