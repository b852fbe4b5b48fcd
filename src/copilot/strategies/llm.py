"""LLM generation through the official ``openai`` client, against any OpenAI-compatible server (a hosted API, or
the local llama.cpp server of :mod:`copilot.strategies.llm_server`), with few-shot examples retrieved by TF-IDF from the
chatbot's recorded conversations.

- ``mode="labels"``: the prompt lists the chatbot's response labels and templates, shows the retrieved examples
  and the conversation (the lookups in it as ``Lookup by agent: <what was asked and what came back>``, so the model
  reads their results), and asks for the best labels. The reply is parsed (exact, then fuzzy match of label
  names) and mapped to the response set; retrieval (TF-IDF) fills the list up to ``k``.
- ``mode="free_text"``: the reply itself is the one suggestion (label None).

``tokens_`` counts the tokens of every call (prompt and completion, from the responses' ``usage``), cumulatively,
so an evaluation reads the delta around each call.
"""

from __future__ import annotations

import difflib
import os
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
from openai import OpenAI

from copilot.data.context import Context, ContextTurn, Suggestion
from copilot.data.records import Dataset
from copilot.strategies.base import Strategy, register_strategy
from copilot.strategies.common import examples, query_text, require_choice, responses_by_chatbot
from copilot.strategies.tfidf import TfidfStrategy

MODES = ("labels", "free_text")
ROLE_NAMES = {"customer": "Customer", "bot": "Bot", "agent": "Agent"}
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def _strip(line: str) -> str:
    """A reply line without list markers, numbering, quotes and trailing punctuation."""
    line = re.sub(r"^\s*(?:[-*•]|\d+[.):]|label\s*:)\s*", "", line.strip(), flags=re.IGNORECASE)
    return line.strip().strip("`'\"").rstrip(".,;:").strip()


def parse_labels(reply: str, labels: Sequence[str]) -> list[str]:
    """Labels of ``labels`` named in ``reply``, in the reply's order, each once: whole lines or comma-separated
    items matched exactly (case-insensitive), then by closeness (difflib, cutoff 0.8), then label names found
    inside a line."""
    by_lower = {label.lower(): label for label in labels}
    found: list[str] = []
    for raw in re.split(r"[\n,]", reply):
        item = _strip(raw)
        if not item:
            continue
        lower = item.lower()
        match = by_lower.get(lower)
        if match is None:
            close = difflib.get_close_matches(lower, list(by_lower), n=1, cutoff=0.8)
            match = by_lower[close[0]] if close else None
        if match is None:
            inside = [label for low, label in by_lower.items() if re.search(rf"(?<!\w){re.escape(low)}(?!\w)", lower)]
            match = max(inside, key=len) if inside else None
        if match is not None and match not in found:
            found.append(match)
    return found


def _speaker(turn: ContextTurn) -> str:
    """Who a prompt line is from: the role's name, or for a lookup who made it ("Lookup by agent")."""
    if turn.tool is not None:
        return f"Lookup by {turn.by}" if turn.by else "Lookup"
    return ROLE_NAMES.get(turn.role, turn.role)


@register_strategy
class LlmStrategy(Strategy):
    """Suggestions from a chat-completions model (see the module's docstring).

    Settings:
        base_url: the OpenAI-compatible endpoint (None: the ``openai`` client's default).
        model: the model name the endpoint knows.
        api_key_env: the environment variable holding the API key; for a local server (127.0.0.1/localhost) a
            missing key is replaced by a placeholder, since such servers accept any non-empty key.
        few_shot: how many recorded examples of the same chatbot, nearest by TF-IDF, go into the prompt.
        max_tokens, temperature, seed: the completion's settings (seed is sent; servers may ignore it).
        mode: "labels" or "free_text".
        timeout: seconds per request; max_retries: the client's retries.
        history: how many of the latest conversation turns the prompt shows.
    """

    name = "llm"

    def __init__(self, base_url: str | None = None, model: str = "gpt-4o-mini", api_key_env: str = "OPENAI_API_KEY",
                 few_shot: int = 3, max_tokens: int = 48, temperature: float = 0.0, mode: str = "labels",
                 timeout: float = 60.0, max_retries: int = 1, history: int = 6, seed: int = 0):
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.few_shot = few_shot
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.mode = mode
        self.timeout = timeout
        self.max_retries = max_retries
        self.history = history
        self.seed = seed

    # -- learning ---------------------------------------------------------------------------------------------
    def fit(self, data: Dataset) -> Self:
        require_choice("mode", self.mode, MODES)
        self.responses_: Mapping[str, Mapping[str, str]] = responses_by_chatbot(data)
        self.retriever_ = TfidfStrategy(window=1).fit(data)
        shots: dict[str, list[tuple[str, str | None, str]]] = {}
        for ex in examples(data):
            shots.setdefault(ex.chatbot, []).append((query_text(ex.context, 1), ex.label, ex.text))
        self.shots_ = shots  # row order matches the retriever's index per chatbot
        self.tokens_ = 0
        return self

    # -- the client (never pickled) ---------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in super().__getstate__().items() if k not in ("_client", "_lock")}

    def _openai(self) -> Any:
        if getattr(self, "_client", None) is None:
            key = os.environ.get(self.api_key_env)
            if not key:
                if self.base_url and any(f"//{host}" in self.base_url for host in _LOCAL_HOSTS):
                    key = "local"
                else:
                    raise RuntimeError(f"set {self.api_key_env} to the API key of {self.base_url or 'OpenAI'}")
            self._client = OpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout,
                                  max_retries=self.max_retries)
        return self._client

    def _complete(self, messages: list[dict[str, str]]) -> str:
        response = self._openai().chat.completions.create(
            model=self.model, messages=messages, max_tokens=self.max_tokens, temperature=self.temperature,
            seed=self.seed,
        )
        usage = getattr(response, "usage", None)
        if usage is not None:
            if "_lock" not in self.__dict__:
                self._lock = threading.Lock()
            with self._lock:
                self.tokens_ += int(usage.total_tokens or 0)
        return str(response.choices[0].message.content or "") if response.choices else ""

    # -- prompts ----------------------------------------------------------------------------------------------
    def _examples(self, context: Context) -> list[tuple[str, str | None, str]]:
        entry = self.retriever_.index_.get(context.chatbot)
        if entry is None or self.few_shot <= 0:
            return []
        vectorizer, matrix, _ = entry
        sims = (matrix @ vectorizer.transform([query_text(context, 1)]).T).toarray().ravel()
        rows = self.shots_[context.chatbot]
        return [rows[i] for i in np.argsort(-sims, kind="stable")[: self.few_shot]]

    def _conversation(self, context: Context) -> str:
        turns = context.turns[-self.history:] if self.history > 0 else ()
        return "\n".join(f"{_speaker(t)}: {t.text}" for t in turns) or "(no messages yet)"

    def messages(self, context: Context, k: int) -> list[dict[str, str]]:
        """The chat messages sent for ``context`` (public so evaluation and notebooks can show the prompt)."""
        responses = self.responses_.get(context.chatbot, {})
        shots = self._examples(context)
        if self.mode == "labels":
            system = (f"You help a customer-service agent of the chatbot '{context.chatbot}'. Choose the agent's "
                      f"next reply from the response set. Answer with the {k} best labels, one per line, best "
                      "first, and nothing else.")
            listing = "\n".join(f"{label}: {text}" for label, text in responses.items())
            demo = "\n\n".join(f"Customer: {q}\nBest label: {label}" for q, label, _ in shots if label)
            user = (f"Response set (label: template):\n{listing}\n\n"
                    + (f"Examples:\n{demo}\n\n" if demo else "")
                    + f"Conversation:\n{self._conversation(context)}\n\nBest labels for the agent's next reply:")
        else:
            system = (f"You are a customer-service agent of the chatbot '{context.chatbot}'. Write the agent's next "
                      "reply: one or two short sentences, nothing else.")
            demo = "\n\n".join(f"Customer: {q}\nAgent: {text}" for q, _, text in shots)
            user = ((f"Examples:\n{demo}\n\n" if demo else "")
                    + f"Conversation:\n{self._conversation(context)}\n\nAgent's next reply:")
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    # -- suggestions ------------------------------------------------------------------------------------------
    def suggest(self, context: Context, k: int = 3) -> list[Suggestion]:
        self._check_fitted("responses_")
        if k <= 0 or context.chatbot not in self.responses_:  # an unknown chatbot
            return []
        responses = self.responses_.get(context.chatbot, {})
        if self.mode == "free_text":
            text = self._complete(self.messages(context, k)).strip()
            return [Suggestion(text, 1.0, None)] if text else []
        if not responses:
            return []
        picked = parse_labels(self._complete(self.messages(context, k)), list(responses))[:k]
        for s in self.retriever_.suggest(context, k + len(picked)):
            if len(picked) >= k:
                break
            if s.label is not None and s.label in responses and s.label not in picked:
                picked.append(s.label)
        return [Suggestion(responses[label], 1.0 / (1 + rank), label) for rank, label in enumerate(picked)]
