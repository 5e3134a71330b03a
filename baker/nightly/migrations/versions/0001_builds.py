"""The builds table: one row a recipe a night.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "builds",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("night", sa.String(40), nullable=False, index=True),
        sa.Column("recipe", sa.String(200), nullable=False, index=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("digest", sa.String(80)),
        sa.Column("lock_digest", sa.String(80)),
        sa.Column("mirror_state", sa.String(80)),
        sa.Column("packages", sa.Integer),
        sa.Column("size", sa.BigInteger),
        sa.Column("boot_median_s", sa.Float),
        sa.Column("boot_min_s", sa.Float),
        sa.Column("boot_max_s", sa.Float),
        sa.Column("boot", sa.Text),
        sa.Column("tests_passed", sa.Integer),
        sa.Column("tests_failed", sa.Integer),
        sa.Column("duration_s", sa.Float),
        sa.Column("signer", sa.String(120)),
        sa.Column("artifact", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("drift", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("builds")
