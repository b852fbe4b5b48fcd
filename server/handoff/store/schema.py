"""The schema: every table of the server's database, as SQLAlchemy Core tables on one ``metadata``.

The schema is created and upgraded by the alembic migrations in ``handoff/migrations`` at start-up
(``handoff.store.open_store``); :data:`metadata` mirrors the latest migration, and a test checks that the two agree.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

ID = String(200)
TIME = String(40)  # ISO 8601 in UTC, e.g. 2025-01-31T12:00:00.123Z: exact round trip on every database

metadata = MetaData()
MAX_SEQ = 2**31 - 1  # the largest per-conversation seq an Integer column holds on every database

bots = Table(
    "bots", metadata,
    Column("bot_id", ID, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("handback_webhook", Text, nullable=True),
    Column("created_at", TIME, nullable=False),
    # The bot's own unclaimed-escalation ladder (JSON, handoff.ladder.LadderConfig); NULL: the server's defaults.
    Column("ladder", Text, nullable=True),
)

agents = Table(
    "agents", metadata,
    Column("agent_id", ID, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", TIME, nullable=False),
)

agent_bots = Table(
    "agent_bots", metadata,
    Column("agent_id", ID, ForeignKey("agents.agent_id", ondelete="CASCADE"), nullable=False),
    Column("bot_id", ID, ForeignKey("bots.bot_id", ondelete="CASCADE"), nullable=False),
    PrimaryKeyConstraint("agent_id", "bot_id"),
    Index("ix_agent_bots_bot_id", "bot_id"),
)

# Every credential, hashed (SHA-256 of a random 256-bit token): a database leak does not leak working tokens.
credentials = Table(
    "credentials", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("subject_id", ID, nullable=False),  # bot_id, agent_id or conversation_id
    Column("created_at", TIME, nullable=False),
    Index("ix_credentials_subject", "role", "subject_id"),
)

conversations = Table(
    "conversations", metadata,
    Column("conversation_id", ID, primary_key=True),
    Column("bot_id", ID, ForeignKey("bots.bot_id"), nullable=False),
    Column("status", String(16), nullable=False),
    # The owner. Written only by the claim's compare-and-set (Conversations.claim); hand back and resolve clear it.
    Column("agent_id", ID, nullable=True),
    Column("customer_id", ID, nullable=False),
    Column("customer", Text, nullable=True),  # the JSON object the bot gave at creation
    Column("last_seq", Integer, nullable=False),
    Column("reason", Text, nullable=True),
    Column("waiting_since", TIME, nullable=True),
    Column("created_at", TIME, nullable=False),
    Column("updated_at", TIME, nullable=False),
    Index("ix_conversations_bot_status", "bot_id", "status"),
)

events = Table(
    "events", metadata,
    Column("conversation_id", ID, ForeignKey("conversations.conversation_id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("role", String(16), nullable=True),
    Column("sender", ID, nullable=True),
    Column("text", Text, nullable=True),
    Column("client_id", String(200), nullable=True),
    Column("status", String(16), nullable=True),
    Column("label", String(200), nullable=True),
    Column("note", Text, nullable=True),
    Column("reason", Text, nullable=True),
    Column("agent_name", String(200), nullable=True),
    # A tool event's (kind "tool"): the tool, its request and result as JSON objects, and its error.
    Column("name", String(100), nullable=True),
    Column("request", Text, nullable=True),
    Column("result", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("at", TIME, nullable=False),
    PrimaryKeyConstraint("conversation_id", "seq"),
    # A resent client_id is stored once. NULL client_ids (state events) never collide.
    UniqueConstraint("conversation_id", "role", "sender", "client_id", name="uq_events_client_id"),
)

devices = Table(
    "devices", metadata,
    Column("device_id", String(64), primary_key=True),
    Column("agent_id", ID, ForeignKey("agents.agent_id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("subscription", Text, nullable=False),
    Column("subscription_hash", String(64), nullable=False),
    Column("created_at", TIME, nullable=False),
    UniqueConstraint("agent_id", "subscription_hash", name="uq_devices_subscription"),
)

suggestions = Table(
    "suggestions", metadata,
    Column("suggestion_id", String(64), primary_key=True),
    Column("conversation_id", ID, ForeignKey("conversations.conversation_id"), nullable=False),
    Column("agent_id", ID, nullable=False),
    Column("for_seq", Integer, nullable=False),
    Column("strategy", String(200), nullable=False),
    Column("rank", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("label", String(200), nullable=True),
    Column("score", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("created_at", TIME, nullable=False),
    Index("ix_suggestions_conversation", "conversation_id", "for_seq"),
)

suggestion_feedback = Table(
    "suggestion_feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("suggestion_id", String(64), ForeignKey("suggestions.suggestion_id"), nullable=False),
    Column("conversation_id", ID, nullable=False),
    Column("agent_id", ID, nullable=False),
    Column("action", String(16), nullable=False),
    Column("at", TIME, nullable=False),
    Index("ix_suggestion_feedback_suggestion", "suggestion_id"),
)

# Hand-back webhooks wait here until delivered (at-least-once; handoff.webhooks), so a restart resumes them.
webhook_outbox = Table(
    "webhook_outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("bot_id", ID, nullable=False),
    Column("conversation_id", ID, nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),  # epoch seconds
    Column("locked_until", Float, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("delivered_at", Float, nullable=True),
    Index("ix_webhook_outbox_due", "state", "next_attempt_at"),
)

# One row per escalation: the unclaimed-escalation ladder's plan and progress and the handoff's timings (metrics).
# A rung is due when ``due_at`` passes; claiming sets ``claimed_at`` and clears ``due_at``, which stops the ladder.
# Times are epoch seconds: they are compared and subtracted, never shown.
escalations = Table(
    "escalations", metadata,
    Column("conversation_id", ID, ForeignKey("conversations.conversation_id"), nullable=False),
    Column("escalated_seq", Integer, nullable=False),
    Column("bot_id", ID, nullable=False),
    Column("state", String(16), nullable=False),  # waiting | claimed | closed
    Column("escalated_at", Float, nullable=False),
    Column("plan", Text, nullable=False),  # JSON [[at, rung], ...]: the ladder's rungs in firing order
    Column("next_rung", Integer, nullable=False),  # index into plan of the next rung to fire
    Column("due_at", Float, nullable=True),  # when that rung fires; NULL: the ladder is over
    Column("claimed_at", Float, nullable=True),
    Column("claimed_by", ID, nullable=True),
    Column("first_reply_at", Float, nullable=True),
    PrimaryKeyConstraint("conversation_id", "escalated_seq"),
    Index("ix_escalations_due", "due_at"),
    Index("ix_escalations_bot_claimed", "bot_id", "claimed_at"),
)

# Every push's final outcome (handoff.push): delivered, expired (the device was removed), failed, or skipped.
push_deliveries = Table(
    "push_deliveries", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),  # no foreign key: an expired device is deleted, its log stays
    Column("agent_id", ID, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("conversation_id", ID, nullable=False),
    Column("escalated_seq", Integer, nullable=False),
    Column("renotify", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("status", Integer, nullable=True),  # the push service's last HTTP status
    Column("attempts", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Column("latency_ms", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_push_deliveries_conversation", "conversation_id"),
)

# Secrets the server generates for itself and every process must share (the VAPID key when none is configured).
server_secrets = Table(
    "server_secrets", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", TIME, nullable=False),
)
