"""A build's open vulnerabilities, from its report (vulns.cdx.json), as JSON: how many with a
fix in the suite and without, and the ids of the fixable ones (for the time to patch).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.add_column("builds", sa.Column("vulns", sa.Text))


def downgrade() -> None:
    op.drop_column("builds", "vulns")
