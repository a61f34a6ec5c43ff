"""tenant_config_versions.template_name: which template a config version comes from, by name,
so a session naming another template is refused instead of built with the wrong zones.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenant_config_versions", sa.Column("template_name", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("tenant_config_versions", "template_name")
