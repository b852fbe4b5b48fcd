"""A response-set classifier in the spirit of Smart Reply: features of the context → a probability for each of
the chatbot's response labels (scikit-learn).

Features of a context:
- TF-IDF of the last customer message (word n-grams; optionally character n-grams),
- TF-IDF of the earlier turns (customer, bot and agent texts), scaled by ``history_weight``,
- the conversation's labels: the last agent label (one-hot), the bag of earlier agent labels, the labels of the
  bot's turns, and (``scope="global"``) the chatbot id and the last agent label crossed with it,
- position: how many agent turns came before (one-hot, capped), whether the last turn was the customer's,
- TF-IDF of the latest agent or bot message (``prev_weight > 0``),
- optionally the MiniLM embedding of the last customer message (``dense_weight > 0``),
- the latest lookup (tool turn, ``tool_weight > 0``; :func:`_tool_features`): its name, outcome (items, none,
  error), how many records it found, whether the first record matches what was asked, how many turns ago it
  happened, its short text values, each alone and crossed with the last agent or bot label.

``n_models`` classifiers with consecutive seeds are averaged (the SGD fits differ; averaging 3 gained about a
point of recall@1 on dev). Off by default, measured not to help on dev: flow features (``flow_order``), the
label-transition prior (``prior_weight``) and ``known_only``.

``scope="per_chatbot"`` fits one model per chatbot; ``scope="global"`` fits one model over every chatbot (shared
labels such as ``ask_name`` or ``goodbye`` learn from all of them) and restricts its output, at suggestion time, to
the labels of the context's chatbot. Scores are the model's probabilities renormalised over that response set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
from scipy import sparse
from sklearn.feature_extraction import DictVectorizer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, SGDClassifier

from copilot.data.context import Context, Suggestion, result_items, result_total
from copilot.data.records import Dataset
from copilot.strategies.base import Strategy, register_strategy
from copilot.strategies.common import (
    SUMMARY_VALUE_CHARS,
    examples,
    fresh_tool_summary,
    query_text,
    require_choice,
    responses_by_chatbot,
    tool_outcome,
)
from copilot.strategies.embeddings import Embedder
from copilot.strategies.masked import MaskedSoftmax

SCOPES = ("per_chatbot", "global")
MODELS = ("logreg", "sgd", "mlp")


def _history(context: Context) -> str:
    """Every turn's text except the last customer message, oldest first."""
    texts = [t.text for t in context.turns]
    last = max((i for i, t in enumerate(context.turns) if t.role == "customer"), default=None)
    if last is not None:
        del texts[last]
    return "\n".join(texts)


def _previous(context: Context) -> str:
    """The text of the latest agent or bot turn (what was just said to the customer), or ``""``."""
    return next((t.text for t in reversed(context.turns) if t.role in ("agent", "bot")), "")


_WORD = re.compile(r"(?u)\b\w\w+\b")


def _flow(context: Context) -> list[str]:
    """The labels of the agent and bot turns so far, oldest first, tagged with their role (unlabelled: ``?``)."""
    return [f"{t.role[0]}:{t.label or '?'}" for t in context.turns if t.role in ("agent", "bot")]


def _count_bucket(n: int) -> str:
    return str(n) if n <= 2 else "3-9" if n < 10 else "10+"


def _matches(request: Mapping[str, Any], record: Any) -> str:
    """Whether the record's fields equal what was asked for them: all, some, none, or n/a (no field in common)."""
    if not isinstance(record, Mapping):
        return "n/a"
    shared = [k for k in request if k in record and not isinstance(record[k], dict | list)]
    if not shared:
        return "n/a"
    equal = sum(str(record[k]).strip().lower() == str(request[k]).strip().lower() for k in shared)
    return "all" if equal == len(shared) else "none" if equal == 0 else "some"


def _tool_features(context: Context, last_label: str | None, weight: float) -> dict[str, float]:
    """Features of the latest lookup, and of the lookups made so far (see the module docstring)."""
    latest = context.last_tool()
    if latest is None or latest[1].tool is None:
        return {"tool=<none>": weight, f"tool=<none>|last={last_label or '<none>'}": weight}
    since, turn = latest
    tool = turn.tool
    assert tool is not None
    outcome = tool_outcome(tool)
    items = result_items(tool.result)
    ago = _count_bucket(since)
    last = last_label or "<none>"
    feats = {
        f"tool={tool.name}": weight,
        f"tool_by={turn.by}": weight,
        f"tool={tool.name}|{outcome}": weight,
        f"tool={tool.name}|{outcome}|n={_count_bucket(result_total(tool.result))}": weight,
        f"tool={tool.name}|{outcome}|match={_matches(tool.request, items[0] if items else None)}": weight,
        f"tool={tool.name}|{outcome}|ago={ago}": weight,
        f"tool_outcome={outcome}|ago={ago}|last={last}": weight,
        f"tool={tool.name}|{outcome}|last={last}": weight,
    }
    first = items[0] if items and isinstance(items[0], Mapping) else {}
    values = [f"{k}={v}" for k, v in sorted(first.items())
              if isinstance(v, bool) or (isinstance(v, str) and len(v) <= SUMMARY_VALUE_CHARS)]
    for value in values:
        feats[f"tool={tool.name}|{value}"] = weight
        feats[f"tool={tool.name}|{value}|ago={'0' if since == 0 else '1+'}"] = weight
    for earlier in context.turns:
        if earlier.tool is not None:
            feats[f"looked_up={earlier.tool.name}|{tool_outcome(earlier.tool)}"] = weight
    return feats


def _symbolic(context: Context, with_chatbot: bool, max_position: int, cross_weight: float,
              flow_order: int = 0, tool_weight: float = 0.0) -> dict[str, float]:
    """The label and position features of a context, as a sparse dict for a DictVectorizer."""
    feats: dict[str, float] = {}
    if flow_order > 0:  # the last 1..flow_order agent/bot labels, crossed with the chatbot (flow steps)
        flow = ["<s>"] * flow_order + _flow(context)
        bot = context.chatbot if with_chatbot else ""
        for n in range(1, flow_order + 1):
            feats[f"flow{n}={bot}|{'|'.join(flow[-n:])}"] = 1.0
        final = context.turns[-1].role if context.turns else "<none>"
        feats[f"flow_final={bot}|{flow[-1]}|{final}"] = 1.0
    agent_labels = [t.label for t in context.turns if t.role == "agent"]
    last = agent_labels[-1] if agent_labels else None
    feats[f"last={last or '<none>'}"] = 1.0
    before = agent_labels[-2] if len(agent_labels) > 1 else None
    feats[f"last2={before or '<none>'}|{last or '<none>'}"] = 1.0
    if cross_weight > 0:  # the last label crossed with the words of the last customer message
        customer = context.last("customer")
        words = set(_WORD.findall(customer.text.lower())) if customer else set()
        for word in words:
            feats[f"{last or '<none>'}|w={word}"] = cross_weight / np.sqrt(len(words))
    for label in agent_labels[:-1]:
        if label is not None:
            feats[f"seen={label}"] = 1.0
    for turn in context.turns:
        if turn.role == "bot" and turn.label is not None:
            feats[f"bot={turn.label}"] = 1.0
    feats[f"pos={min(len(agent_labels), max_position)}"] = 1.0
    final = context.turns[-1].role if context.turns else "<none>"
    feats[f"final_role={final}"] = 1.0
    if with_chatbot:
        feats[f"chatbot={context.chatbot}"] = 1.0
        feats[f"chatbot={context.chatbot}|last={last or '<none>'}"] = 1.0
    if tool_weight > 0:
        feats.update(_tool_features(context, last, tool_weight))
    return feats


class _Model:
    """One fitted feature pipeline and classifier (for one chatbot, or for all with ``scope="global"``)."""

    def __init__(self, owner: ClassifierStrategy, with_chatbot: bool):
        self.owner = owner
        self.with_chatbot = with_chatbot

    def _symbols(self, contexts: Sequence[Context]) -> list[dict[str, float]]:
        o = self.owner
        return [_symbolic(c, self.with_chatbot, o.max_position, o.cross_weight, o.flow_order, o.tool_weight)
                for c in contexts]

    def _features(self, contexts: Sequence[Context], fit: bool) -> Any:
        o = self.owner
        last = [query_text(c, o.window) for c in contexts]
        blocks = []
        if fit:
            self.words = TfidfVectorizer(ngram_range=(1, o.ngram_max), sublinear_tf=True, min_df=1)
            blocks.append(self.words.fit_transform(last))
            if o.char_ngrams:
                self.chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, o.char_ngrams), sublinear_tf=True,
                                             min_df=2)
                blocks.append(self.chars.fit_transform(last) * o.char_weight)
            if o.history_weight > 0:
                self.hist = TfidfVectorizer(ngram_range=(1, 1), sublinear_tf=True, min_df=2)
                blocks.append(self.hist.fit_transform([_history(c) for c in contexts]) * o.history_weight)
            if o.prev_weight > 0:
                self.prev = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
                blocks.append(self.prev.fit_transform([_previous(c) for c in contexts]) * o.prev_weight)
            self.tool_words: TfidfVectorizer | None = None
            summaries = [fresh_tool_summary(c) for c in contexts] if o.tool_weight > 0 else []
            if any(summaries):
                vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
                try:
                    blocks.append(vectorizer.fit_transform(summaries) * o.tool_weight)
                    self.tool_words = vectorizer
                except ValueError:  # no word of a lookup summary occurs twice: nothing to learn from them
                    pass
            if o.label_features:
                self.symbols = DictVectorizer()
                blocks.append(self.symbols.fit_transform(self._symbols(contexts)) * o.label_weight)
        else:
            blocks.append(self.words.transform(last))
            if o.char_ngrams:
                blocks.append(self.chars.transform(last) * o.char_weight)
            if o.history_weight > 0:
                blocks.append(self.hist.transform([_history(c) for c in contexts]) * o.history_weight)
            if o.prev_weight > 0:
                blocks.append(self.prev.transform([_previous(c) for c in contexts]) * o.prev_weight)
            if self.tool_words is not None:
                blocks.append(self.tool_words.transform([fresh_tool_summary(c) for c in contexts]) * o.tool_weight)
            if o.label_features:
                blocks.append(self.symbols.transform(self._symbols(contexts)) * o.label_weight)
        if o.dense_weight > 0:
            blocks.append(sparse.csr_matrix(o.embedder_.encode(last) * o.dense_weight))
        return sparse.hstack(blocks, format="csr")

    def fit(self, contexts: Sequence[Context], labels: Sequence[str]) -> None:
        o = self.owner
        x = self._features(contexts, fit=True)
        distinct = sorted(set(labels))
        if len(distinct) == 1:  # nothing to learn: the one label seen always wins
            self.classes = np.array(distinct)
            self.clf: Any = None
            return
        groups = [c.chatbot for c in contexts]
        allowed = {bot: list(responses) for bot, responses in o.responses_.items()}
        self.clfs: list[Any] = [self._fit_one(x, labels, groups, allowed, seed)
                                for seed in range(o.seed, o.seed + max(o.n_models, 1))]
        self.clf = self.clfs[0]
        self.classes = self.clf.classes_

    def _fit_one(self, x: Any, labels: Sequence[str], groups: Sequence[str], allowed: Mapping[str, Sequence[str]],
                 seed: int) -> Any:
        """One classifier of the ensemble, fitted with random state ``seed``."""
        o = self.owner
        if o.model == "mlp":
            return MaskedSoftmax(hidden=o.hidden, epochs=o.epochs, lr=o.lr, batch_size=o.batch_size,
                                 dropout=o.dropout, seed=seed).fit(x, labels, groups, allowed)
        if o.model == "logreg":
            clf: Any = LogisticRegression(C=o.C, max_iter=o.max_iter, class_weight=o.class_weight, random_state=seed)
        else:
            clf = SGDClassifier(loss="log_loss", alpha=o.alpha, max_iter=o.max_iter, tol=1e-4,
                                class_weight=o.class_weight, random_state=seed)
        return clf.fit(x, np.asarray(labels))

    def proba(self, contexts: Sequence[Context]) -> np.ndarray:
        if self.clf is None:
            return np.ones((len(contexts), 1))
        x = self._features(contexts, fit=False)
        if self.owner.model == "mlp":  # the masked softmax needs each row's chatbot; it computes in float32
            x, groups = x.astype(np.float32), [c.chatbot for c in contexts]
            return np.mean([clf.predict_proba(x, groups) for clf in self.clfs], axis=0)
        return np.mean([np.asarray(clf.predict_proba(x)) for clf in self.clfs], axis=0)


@register_strategy
class ClassifierStrategy(Strategy):
    """Context features → the chatbot's response labels, with a linear classifier (see the module's docstring).

    Settings:
        scope: "global" (one model, chatbot-id features, output restricted to the chatbot's responses) or
            "per_chatbot" (one model per chatbot).
        model: "logreg" (LogisticRegression, lbfgs), "sgd" (SGDClassifier with log loss) or "mlp" (a softmax
            restricted to each chatbot's response set in training too, with one hidden layer of ``hidden`` ReLU
            units, or linear with ``hidden=0``; Adam for ``epochs`` over minibatches of ``batch_size`` at
            learning rate ``lr``, ``dropout`` on the hidden layer; :mod:`copilot.strategies.masked`).
        C: inverse regularisation of "logreg"; alpha: regularisation of "sgd"; max_iter: their iteration cap.
        class_weight: None or "balanced".
        window: how many of the latest customer messages form the main text.
        ngram_max: word n-grams of the main text from 1 to this.
        char_ngrams: 0 for none, else character n-grams (within words) from 2 to this, scaled by ``char_weight``.
        history_weight: scale of the TF-IDF of the earlier turns (0 leaves them out).
        label_features: use the conversation's labels and positions; label_weight scales them.
        max_position: agent-turn counts from this on share one position feature.
        cross_weight: scale of the last agent label crossed with each word of the last customer message (0: off).
        dense_weight: scale of the MiniLM embedding of the main text (0 leaves it out; it needs the model; vectors
            are cached where :meth:`use_embedding_cache` says).
        seed: the classifier's random state (model ``i`` of the ensemble uses ``seed + i``).
        flow_order: 0 for none, else the last 1..flow_order agent/bot labels (role-tagged), crossed with the chatbot.
        prev_weight: scale of the TF-IDF (word 1-2-grams) of the latest agent or bot message (0 leaves it out).
        prior_weight: exponent of the label-transition prior P(label | chatbot, last agent/bot label) multiplied
            into the probabilities at suggestion time (0: off); prior_smoothing: its pseudo-count towards the
            chatbot's label frequencies.
        n_models: how many classifiers (seeds ``seed``, ``seed + 1``, ...) are fitted on the same features; their
            probabilities are averaged.
        known_only: suggest only labels seen for the chatbot in training.
        tool_weight: scale of the latest lookup's features (0 leaves them out; they need ``label_features``).
    """

    name = "classifier"

    def __init__(self, scope: str = "global", model: str = "sgd", C: float = 10.0, alpha: float = 1e-5,
                 max_iter: int = 300, class_weight: str | None = None, window: int = 1, ngram_max: int = 2,
                 char_ngrams: int = 0, char_weight: float = 0.5, history_weight: float = 0.7,
                 label_features: bool = True, label_weight: float = 1.0, max_position: int = 8,
                 cross_weight: float = 0.0, dense_weight: float = 0.0, seed: int = 0,
                 flow_order: int = 0, prev_weight: float = 0.5, prior_weight: float = 0.0, prior_smoothing: float = 1.0,
                 n_models: int = 3, known_only: bool = False, hidden: int = 256, epochs: int = 4, lr: float = 0.002,
                 batch_size: int = 256, dropout: float = 0.5, tool_weight: float = 1.0):
        self.scope = scope
        self.model = model
        self.C = C
        self.alpha = alpha
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.window = window
        self.ngram_max = ngram_max
        self.char_ngrams = char_ngrams
        self.char_weight = char_weight
        self.history_weight = history_weight
        self.label_features = label_features
        self.label_weight = label_weight
        self.max_position = max_position
        self.cross_weight = cross_weight
        self.dense_weight = dense_weight
        self.seed = seed
        self.flow_order = flow_order
        self.prev_weight = prev_weight
        self.prior_weight = prior_weight
        self.prior_smoothing = prior_smoothing
        self.n_models = n_models
        self.known_only = known_only
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.dropout = dropout
        self.tool_weight = tool_weight

    def fit(self, data: Dataset) -> Self:
        require_choice("scope", self.scope, SCOPES)
        require_choice("model", self.model, MODELS)
        self.embedder_ = Embedder(self._embedding_cache)
        self.responses_: Mapping[str, Mapping[str, str]] = responses_by_chatbot(data)
        by_bot: dict[str, tuple[list[Context], list[str]]] = {}
        for ex in examples(data):
            if ex.label is not None and ex.label in self.responses_.get(ex.chatbot, {}):
                contexts, labels = by_bot.setdefault(ex.chatbot, ([], []))
                contexts.append(ex.context)
                labels.append(ex.label)
        self.prior_ = self._fit_prior(by_bot)
        self.known_: dict[str, set[str]] = {bot: set(labels) for bot, (_, labels) in by_bot.items()}
        self.models_: dict[str, _Model] = {}
        if self.scope == "global":
            if by_bot:
                model = _Model(self, with_chatbot=True)
                model.fit([c for cs, _ in by_bot.values() for c in cs], [y for _, ys in by_bot.values() for y in ys])
                self.models_ = dict.fromkeys(by_bot, model)
        else:
            for bot, (contexts, labels) in by_bot.items():
                model = _Model(self, with_chatbot=False)
                model.fit(contexts, labels)
                self.models_[bot] = model
        return self

    def _fit_prior(self, by_bot: Mapping[str, tuple[list[Context], list[str]]]) -> dict[str, Any]:
        """Counts of the next label after the last agent/bot label, per chatbot, and of each label per chatbot."""
        after: dict[tuple[str, str], dict[str, int]] = {}
        overall: dict[str, dict[str, int]] = {}
        for bot, (contexts, labels) in by_bot.items():
            for context, label in zip(contexts, labels, strict=True):
                flow = _flow(context)
                previous = flow[-1] if flow else "<s>"
                counts = after.setdefault((bot, previous), {})
                counts[label] = counts.get(label, 0) + 1
                totals = overall.setdefault(bot, {})
                totals[label] = totals.get(label, 0) + 1
        return {"after": after, "overall": overall}

    def _prior(self, context: Context, classes: np.ndarray) -> np.ndarray:
        """P(label | chatbot, last agent/bot label): counts smoothed towards the chatbot's label frequencies."""
        overall = self.prior_["overall"].get(context.chatbot, {})
        n_labels = max(len(self.responses_.get(context.chatbot, {})), 1)
        total = sum(overall.values())
        base = np.array([(overall.get(str(c), 0) + 0.5) / (total + 0.5 * n_labels) for c in classes])
        flow = _flow(context)
        counts = self.prior_["after"].get((context.chatbot, flow[-1] if flow else "<s>"), {})
        seen = sum(counts.values())
        a = self.prior_smoothing
        return np.array([counts.get(str(c), 0) for c in classes]) / (seen + a) + base * a / (seen + a)

    def suggest(self, context: Context, k: int = 3) -> list[Suggestion]:
        return self.suggest_many([context], k)[0]

    def suggest_many(self, contexts: Sequence[Context], k: int = 3) -> list[list[Suggestion]]:
        """One feature matrix and one ``predict_proba`` per model for the whole batch."""
        self._check_fitted("models_")
        out: list[list[Suggestion]] = [[] for _ in contexts]
        groups: dict[int, tuple[_Model, list[int]]] = {}
        for i, context in enumerate(contexts):
            model = self.models_.get(context.chatbot)
            if model is not None:
                groups.setdefault(id(model), (model, []))[1].append(i)
        for model, indices in groups.values():
            proba = model.proba([contexts[i] for i in indices])
            for row, i in enumerate(indices):
                p = proba[row]
                if self.prior_weight > 0:
                    p = p * self._prior(contexts[i], model.classes) ** self.prior_weight
                out[i] = self._rank(contexts[i].chatbot, model.classes, p, k)
        return out

    def _rank(self, chatbot: str, classes: np.ndarray, proba: np.ndarray, k: int) -> list[Suggestion]:
        responses = self.responses_.get(chatbot, {})
        known = self.known_.get(chatbot, set()) if self.known_only else None
        allowed = np.array([str(c) in responses and (known is None or str(c) in known) for c in classes])
        if not allowed.any():
            return []
        scores = np.where(allowed, proba, -1.0)
        total = float(proba[allowed].sum()) or 1.0
        order = np.argsort(-scores, kind="stable")[: min(k, int(allowed.sum()))]
        return [Suggestion(responses[str(classes[j])], float(proba[j]) / total, str(classes[j])) for j in order]
