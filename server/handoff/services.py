"""The server's services, built together: each owns one part of the rules and none imports socketio.

- :class:`~handoff.directory.DirectoryService`: bots, agents, keys and devices;
- :class:`~handoff.conversations.ConversationService`: conversations, messages and the state machine's moves;
- :class:`~handoff.inbox.InboxService`: what parties read: queues, events, join and resume;
- :class:`~handoff.tool_events.ToolEventService`: the lookups the bot or the agent made, for the agent side only;
- :class:`~handoff.typing.TypingService`: typing indicators;
- :class:`~handoff.sidebar.SidebarService`: the copilot's suggestions and what agents did with them;
- :class:`~handoff.ladder.LadderService`: the unclaimed-escalation ladder's rungs.
"""

from __future__ import annotations

from dataclasses import dataclass

from handoff.clock import Clock, SystemClock
from handoff.conversations import ConversationService
from handoff.directory import DirectoryService
from handoff.inbox import InboxService
from handoff.ladder import LadderConfig, LadderService
from handoff.metrics import HandoffMetrics
from handoff.notify import Notifier
from handoff.sidebar import SidebarService
from handoff.store import Store
from handoff.suggestions import SuggestionProvider
from handoff.tool_events import ToolEventService
from handoff.typing import TypingService, TypingTracker


@dataclass(frozen=True)
class Services:
    directory: DirectoryService
    conversations: ConversationService
    inbox: InboxService
    tool_events: ToolEventService
    typing: TypingService
    sidebar: SidebarService
    ladder: LadderService
    metrics: HandoffMetrics


def build_services(store: Store, *, notifier: Notifier, provider: SuggestionProvider, clock: Clock | None = None,
                   metrics: HandoffMetrics | None = None, ladder: LadderConfig | None = None,
                   typing: TypingTracker | None = None, suggestions_k: int = 3, suggestion_timeout_s: float = 10.0,
                   expected_wait_samples: int = 50) -> Services:
    """Every service over one store.

    Args:
        store: the database.
        notifier: told about each escalation and ladder reminder once it is stored.
        provider: the copilot's suggestion provider.
        clock: wall and monotonic time, and waiting; default: the real clock.
        metrics: where handoffs are counted; default: a registry of its own.
        ladder: the server's default unclaimed-escalation ladder (a bot's own settings override it); default: none.
        typing: the typing bookkeeping; default: 5 s expiry, 1 s throttle.
        suggestions_k: how many suggestions to ask for.
        suggestion_timeout_s: abandon a provider call after this long.
        expected_wait_samples: how many recent times to claim the expected wait is estimated from.
    """
    clock = clock if clock is not None else SystemClock()
    metrics = metrics if metrics is not None else HandoffMetrics()
    ladder = ladder if ladder is not None else LadderConfig(None, None, None, None)
    tracker = typing if typing is not None else TypingTracker(timeout_s=5.0, throttle_s=1.0)
    typing_service = TypingService(store, tracker, clock)
    sidebar = SidebarService(store, provider, k=suggestions_k, timeout_s=suggestion_timeout_s)
    return Services(
        directory=DirectoryService(store, ladder),
        conversations=ConversationService(store, clock=clock, notifier=notifier, typing=typing_service,
                                          metrics=metrics, ladder=ladder, suggesting=sidebar.enabled),
        inbox=InboxService(store),
        tool_events=ToolEventService(store, clock=clock, suggesting=sidebar.enabled),
        typing=typing_service,
        sidebar=sidebar,
        ladder=LadderService(store, clock=clock, notifier=notifier, metrics=metrics, ladder=ladder,
                             expected_wait_samples=expected_wait_samples),
        metrics=metrics,
    )
