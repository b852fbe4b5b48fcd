"""Push notifications, the unclaimed-escalation ladder and handoff timings: a bot's ladder settings, one row per
escalation (ladder plan and progress, time to claim, time to first reply), every push's outcome, and the secrets
the server generates for itself (the VAPID key).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.String(200)
TIME = sa.String(40)


def upgrade() -> None:
    op.add_column("bots", sa.Column("ladder", sa.Text, nullable=True))
    op.create_table(
        "escalations",
        sa.Column("conversation_id", ID, sa.ForeignKey("conversations.conversation_id"), nullable=False),
        sa.Column("escalated_seq", sa.Integer, nullable=False),
        sa.Column("bot_id", ID, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("escalated_at", sa.Float, nullable=False),
        sa.Column("plan", sa.Text, nullable=False),
        sa.Column("next_rung", sa.Integer, nullable=False),
        sa.Column("due_at", sa.Float, nullable=True),
        sa.Column("claimed_at", sa.Float, nullable=True),
        sa.Column("claimed_by", ID, nullable=True),
        sa.Column("first_reply_at", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("conversation_id", "escalated_seq"),
    )
    op.create_index("ix_escalations_due", "escalations", ["due_at"])
    op.create_index("ix_escalations_bot_claimed", "escalations", ["bot_id", "claimed_at"])
    op.create_table(
        "push_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("conversation_id", ID, nullable=False),
        sa.Column("escalated_seq", sa.Integer, nullable=False),
        sa.Column("renotify", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_push_deliveries_conversation", "push_deliveries", ["conversation_id"])
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
    )


def downgrade() -> None:
    for table in ("server_secrets", "push_deliveries", "escalations"):
        op.drop_table(table)
    with op.batch_alter_table("bots") as batch:
        batch.drop_column("ladder")
