"""A build's parent: the image (recipe name) it was built on in the same night, if any.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("builds", sa.Column("parent", sa.String(200)))


def downgrade() -> None:
    op.drop_column("builds", "parent")
