"""Handoff metrics in Prometheus format, served at ``GET /metrics``.

Each app has its own :class:`prometheus_client.CollectorRegistry` (never the global one: several apps live in one
test process, and a server's numbers must not mix with another's). Counters count what was committed to the
database, once, by the process that committed it; a deployment of several processes is summed by Prometheus
(``sum by (bot) (...)``). Times are measured between the stored escalation and the stored claim or first agent
reply (table ``escalations``), so they survive restarts and cross processes: the process that stores the claim
observes the time to claim.

What is here:
- per bot: escalations, claims, claim races lost, hand-backs, resolutions, reopenings, ladder rungs fired,
  messages relayed (by the sender's role), and the histograms time to claim and time to first agent reply;
- pushes sent and failed per kind (``webpush``, ``fcm``, ``apns``), with the reason of each failure, and retries;
- connected sockets per role.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

# Seconds: agents answer in seconds to minutes; an unclaimed escalation may wait for an hour.
WAIT_BUCKETS = (1, 2, 5, 10, 15, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800, 3600)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus version scrapes


class HandoffMetrics:
    """The server's metrics on a registry of their own. Methods are named after what happened."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.escalations = Counter("handoff_escalations", "Escalations stored (bot -> waiting)", ["bot"], registry=r)
        self.claims = Counter("handoff_claims", "Claims won (waiting -> claimed)", ["bot"], registry=r)
        self.claim_races_lost = Counter("handoff_claim_races_lost",
                                        "Claims refused with already_claimed (another agent won)", ["bot"], registry=r)
        self.hand_backs = Counter("handoff_hand_backs", "Conversations handed back to the bot", ["bot"], registry=r)
        self.resolutions = Counter("handoff_resolutions", "Conversations resolved", ["bot"], registry=r)
        self.reopenings = Counter("handoff_reopenings", "Resolved conversations reopened by the customer", ["bot"],
                                  registry=r)
        self.messages = Counter("handoff_messages_relayed", "Messages stored and relayed", ["bot", "role"],
                                registry=r)
        self.rungs = Counter("handoff_ladder_rungs", "Unclaimed-escalation ladder rungs fired", ["bot", "rung"],
                             registry=r)
        self.time_to_claim = Histogram("handoff_time_to_claim_seconds", "From the escalation to the claim",
                                       ["bot"], buckets=WAIT_BUCKETS, registry=r)
        self.time_to_first_reply = Histogram(
            "handoff_time_to_first_reply_seconds", "From the escalation to the claiming agent's first message",
            ["bot"], buckets=WAIT_BUCKETS, registry=r)
        self.pushes_sent = Counter("handoff_pushes_sent", "Pushes accepted by the push service", ["kind"],
                                   registry=r)
        self.pushes_failed = Counter("handoff_pushes_failed",
                                     "Pushes not delivered, by reason: expired (device removed), rejected, gave_up "
                                     "(retries exhausted), skipped (kind not configured)", ["kind", "reason"],
                                     registry=r)
        self.push_retries = Counter("handoff_push_retries", "Push attempts retried after 429, 5xx or no answer",
                                    ["kind"], registry=r)
        self.push_seconds = Histogram("handoff_push_seconds", "From the fan-out's start to the push service's answer",
                                      ["kind"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                      registry=r)
        self.sockets = Gauge("handoff_connected_sockets", "Socket.IO connections open on this process", ["role"],
                             registry=r)

    def render(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)
