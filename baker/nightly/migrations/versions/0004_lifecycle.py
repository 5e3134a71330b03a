"""An image's life after its night, on each of its rows: the image digests of its parent and
the parent's ancestors (from build.json), the revocation the nightly found beside it, and the
night the recipe's retention stopped keeping it, each as JSON.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.add_column("builds", sa.Column("ancestors", sa.Text))
    op.add_column("builds", sa.Column("revoked", sa.Text))
    op.add_column("builds", sa.Column("pruned", sa.Text))


def downgrade() -> None:
    for column in ("pruned", "revoked", "ancestors"):
        op.drop_column("builds", column)
