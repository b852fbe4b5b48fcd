"""The first schema: bots, agents, credentials, conversations, events, devices, suggestions, webhook outbox.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(200)
TIME = sa.String(40)


def upgrade() -> None:
    op.create_table(
        "bots",
        sa.Column("bot_id", ID, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("handback_webhook", sa.Text, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_table(
        "agents",
        sa.Column("agent_id", ID, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_table(
        "agent_bots",
        sa.Column("agent_id", ID, sa.ForeignKey("agents.agent_id", ondelete="CASCADE"), nullable=False),
        sa.Column("bot_id", ID, sa.ForeignKey("bots.bot_id", ondelete="CASCADE"), nullable=False),
        sa.PrimaryKeyConstraint("agent_id", "bot_id"),
    )
    op.create_index("ix_agent_bots_bot_id", "agent_bots", ["bot_id"])
    op.create_table(
        "credentials",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("subject_id", ID, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_index("ix_credentials_subject", "credentials", ["role", "subject_id"])
    op.create_table(
        "conversations",
        sa.Column("conversation_id", ID, primary_key=True),
        sa.Column("bot_id", ID, sa.ForeignKey("bots.bot_id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("agent_id", ID, nullable=True),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("customer", sa.Text, nullable=True),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("waiting_since", TIME, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_index("ix_conversations_bot_status", "conversations", ["bot_id", "status"])
    op.create_table(
        "events",
        sa.Column("conversation_id", ID, sa.ForeignKey("conversations.conversation_id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("sender", ID, nullable=True),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("client_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("agent_name", sa.String(200), nullable=True),
        sa.Column("at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "seq"),
        sa.UniqueConstraint("conversation_id", "role", "sender", "client_id", name="uq_events_client_id"),
    )
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("agent_id", ID, sa.ForeignKey("agents.agent_id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subscription", sa.Text, nullable=False),
        sa.Column("subscription_hash", sa.String(64), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.UniqueConstraint("agent_id", "subscription_hash", name="uq_devices_subscription"),
    )
    op.create_table(
        "suggestions",
        sa.Column("suggestion_id", sa.String(64), primary_key=True),
        sa.Column("conversation_id", ID, sa.ForeignKey("conversations.conversation_id"), nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("for_seq", sa.Integer, nullable=False),
        sa.Column("strategy", sa.String(200), nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_index("ix_suggestions_conversation", "suggestions", ["conversation_id", "for_seq"])
    op.create_table(
        "suggestion_feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("suggestion_id", sa.String(64), sa.ForeignKey("suggestions.suggestion_id"), nullable=False),
        sa.Column("conversation_id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("at", TIME, nullable=False),
    )
    op.create_index("ix_suggestion_feedback_suggestion", "suggestion_feedback", ["suggestion_id"])
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("bot_id", ID, nullable=False),
        sa.Column("conversation_id", ID, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("locked_until", sa.Float, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float, nullable=True),
    )
    op.create_index("ix_webhook_outbox_due", "webhook_outbox", ["state", "next_attempt_at"])


def downgrade() -> None:
    for table in ("webhook_outbox", "suggestion_feedback", "suggestions", "devices", "events", "conversations",
                  "credentials", "agent_bots", "agents", "bots"):
        op.drop_table(table)
