"""Tool events: the lookups the bot or the agent made for a conversation (an event of kind ``tool``) keep the tool's
name, its request and result (JSON text) and its error in four new columns of ``events``.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("name", sa.String(100), nullable=True))
        batch.add_column(sa.Column("request", sa.Text, nullable=True))
        batch.add_column(sa.Column("result", sa.Text, nullable=True))
        batch.add_column(sa.Column("error", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        for column in ("error", "result", "request", "name"):
            batch.drop_column(column)
