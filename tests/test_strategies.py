"""Every registered strategy against the contract (base.py), on the project's sample, with real parts only: the
real MiniLM model, the real scikit-learn models, and a real local llama.cpp server for the ``llm`` strategy."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from copilot.data.context import Context, contexts_for, render_tool
from copilot.data.records import Dataset, load_dataset
from copilot.data.splits import split_dataset
from copilot.settings import Settings
from copilot.strategies import STRATEGIES, NotFittedError, Strategy, make_strategy
from copilot.strategies.embeddings import EmbeddingCache


@pytest.fixture(scope="session")
def splits(sample_path: Path) -> dict[str, Dataset]:
    return split_dataset(load_dataset(sample_path), seed=0)


@pytest.fixture(scope="session")
def llm_base_url() -> Iterator[str]:
    """A real local OpenAI-compatible server (llama.cpp, SmolLM2-135M) for the whole session."""
    from copilot.strategies.llm_server import llama_cpp_available, local_llm_server

    if not llama_cpp_available():
        pytest.skip("llama_cpp is not installed (pip install 'llama-cpp-python[server]'): no local LLM server")
    with local_llm_server(model=Settings.from_env().llm_gguf) as base_url:
        yield base_url


def params_for(name: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Test settings per family: small and fast; the llm strategy talks to the local server."""
    if name == "llm":
        from copilot.strategies.llm_server import LOCAL_MODEL

        base_url = request.getfixturevalue("llm_base_url")
        return {"base_url": base_url, "model": LOCAL_MODEL, "few_shot": 1, "max_tokens": 8, "history": 2}
    return {}


def held_out(data: Dataset, limit: int) -> list[Context]:
    """Contexts of the held-out conversations, built as evaluation builds them (nothing from the predicted turn on)."""
    out = []
    for conversation in data.conversations:
        for index, context in contexts_for(conversation):
            # Exactly the turns before the predicted one: never the predicted turn, its draft or options, or later;
            # a lookup as its rendered text.
            assert [(c.role, c.text, c.label, c.tool) for c in context.turns] == [
                (t.role, render_tool(t.tool) if t.tool else t.text, t.label, t.tool)
                for t in conversation.turns[:index]]
            out.append(context)
    # Spread over the chatbots: every few contexts, so each chatbot shows up.
    step = max(1, len(out) // limit)
    return out[::step][:limit]


def as_tuples(batch: list[list[Any]]) -> list[list[tuple[str, str | None]]]:
    return [[(s.text, s.label) for s in suggestions] for suggestions in batch]


def assert_same(got: list[list[Any]], expected: list[list[Any]]) -> None:
    """Same suggestions in the same order; scores equal up to float noise (a re-encoded text may differ in the
    last bits)."""
    assert as_tuples(got) == as_tuples(expected)
    for g, e in zip(got, expected, strict=True):
        assert [s.score for s in g] == pytest.approx([s.score for s in e], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow) if name == "llm" else name for name in STRATEGIES.names()])
def test_strategy_conformance(name: str, splits: dict[str, Dataset], request: pytest.FixtureRequest) -> None:
    params = params_for(name, request)
    train, test = splits["train"], splits["test"]
    contexts = held_out(test, limit=2 if name == "llm" else 24)
    k = 3

    strategy = make_strategy(name, params)
    assert isinstance(strategy, Strategy)
    assert strategy.get_params() == {**strategy.get_params(), **params}
    json.dumps(strategy.get_params())  # feeds MLflow params and grids
    with pytest.raises(NotFittedError):
        strategy.suggest(contexts[0], k)

    assert strategy.fit(train) is strategy
    answers = [strategy.suggest(context, k) for context in contexts]
    for context, suggestions in zip(contexts, answers, strict=True):
        assert len(suggestions) <= k
        assert suggestions, f"{name} suggested nothing for a known chatbot"
        scores = [s.score for s in suggestions]
        assert scores == sorted(scores, reverse=True), "suggestions must be best first"
        responses = train.responses(context.chatbot)
        for s in suggestions:
            assert s.label is None or s.label in responses, f"{s.label} is not in {context.chatbot}'s response set"
            if s.label is not None:
                assert s.text == responses[s.label]
        labels = [s.label for s in suggestions if s.label is not None]
        assert len(labels) == len(set(labels)), "one suggestion per label"
    assert_same(strategy.suggest_many(contexts, k), answers)

    clone = strategy.clone()
    assert clone.get_params() == strategy.get_params()
    with pytest.raises(NotFittedError):
        clone.suggest(contexts[0], k)

    restored = pickle.loads(pickle.dumps(strategy))
    assert_same([restored.suggest(c, k) for c in contexts], answers)

    unknown = Context("no-such-chatbot", contexts[0].turns)
    assert strategy.suggest(unknown, k) == []

    again = make_strategy(name, params).fit(train)
    assert_same([again.suggest(c, k) for c in contexts], answers)  # same settings, seed and data


def test_registry_has_every_family() -> None:
    assert {"tfidf", "bm25", "dense", "classifier", "llm", "hybrid", "adapted"} <= set(STRATEGIES.names())


@pytest.mark.slow
def test_llm_labels_and_free_text(splits: dict[str, Dataset], llm_base_url: str) -> None:
    from copilot.strategies.llm_server import LOCAL_MODEL

    context = held_out(splits["test"], limit=1)[0]
    responses = splits["train"].responses(context.chatbot)
    base = {"base_url": llm_base_url, "model": LOCAL_MODEL, "few_shot": 2, "max_tokens": 16, "history": 2}

    labels = make_strategy("llm", {**base, "mode": "labels"}).fit(splits["train"])
    assert labels.tokens_ == 0
    suggestions = labels.suggest(context, 3)
    assert len(suggestions) == 3 and all(s.label in responses for s in suggestions)
    first = labels.tokens_
    assert first > 0
    labels.suggest(context, 2)
    assert labels.tokens_ > first

    free = make_strategy("llm", {**base, "mode": "free_text"}).fit(splits["train"])
    out = free.suggest(context, 3)
    assert len(out) == 1 and out[0].label is None and out[0].text.strip()
    assert free.tokens_ > 0
    prompt = free.messages(context, 3)[-1]["content"]
    assert context.turns[-1].text in prompt


def test_llm_reply_parsing_maps_to_the_response_set() -> None:
    from copilot.strategies.llm import parse_labels

    labels = ["ask_name", "ask_order_number", "goodbye"]
    reply = "1. ask_order_number\n- Goodbye.\nask_nme\nsomething else\nask_order_number: Could you tell me..."
    assert parse_labels(reply, labels) == ["ask_order_number", "goodbye", "ask_name"]
    assert parse_labels("", labels) == []


@pytest.mark.parametrize("mode", ["labels", "free_text"])
def test_llm_prompt_shows_the_lookups_with_their_results(splits: dict[str, Dataset], mode: str) -> None:
    strategy = make_strategy("llm", {"base_url": "https://api.example.invalid/v1", "mode": mode, "history": 3})
    strategy.fit(splits["train"])
    contexts = [context for c in splits["test"].conversations for _, context in contexts_for(c)
                if context.turns[-1].tool is not None]
    assert {context.turns[-1].by for context in contexts} == {"agent"}
    for context in contexts:
        lookup = context.turns[-1]
        prompt = strategy.messages(context, 3)[-1]["content"]
        assert f"\nLookup by agent: {lookup.text}\n" in prompt
        assert lookup.text.startswith(f"{lookup.tool.name}(")
    # A lookup the bot made before the escalation reads as the bot's.
    bots = [context for c in splits["test"].conversations for _, context in contexts_for(c)
            if any(t.by == "bot" for t in context.turns)]
    context = bots[0]
    lookup = next(t for t in context.turns if t.by == "bot")
    long_history = make_strategy("llm", {"base_url": "https://api.example.invalid/v1", "mode": mode, "history": 50})
    assert f"Lookup by bot: {lookup.text}\n" in long_history.fit(splits["train"]).messages(context, 3)[-1]["content"]


def test_llm_needs_a_key_for_a_remote_endpoint(splits: dict[str, Dataset], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COPILOT_TEST_NO_KEY", raising=False)
    strategy = make_strategy(
        "llm", {"base_url": "https://api.example.invalid/v1", "api_key_env": "COPILOT_TEST_NO_KEY"})
    strategy.fit(splits["train"])
    with pytest.raises(RuntimeError, match="COPILOT_TEST_NO_KEY"):
        strategy.suggest(held_out(splits["test"], limit=1)[0], 3)


def test_hybrid_fuses_members_by_reciprocal_rank(splits: dict[str, Dataset]) -> None:
    members = [{"strategy": "tfidf", "params": {}}, {"strategy": "bm25", "params": {"neighbours": 10}}]
    hybrid = make_strategy("hybrid", {"members": members, "weights": [2.0, 1.0], "rrf_k": 10}).fit(splits["train"])
    json.dumps(hybrid.get_params())
    context = held_out(splits["test"], limit=1)[0]
    fused = hybrid.suggest(context, 3)
    tfidf = make_strategy("tfidf").fit(splits["train"]).suggest(context, 10)
    bm25 = make_strategy("bm25", {"neighbours": 10}).fit(splits["train"]).suggest(context, 10)
    expected: dict[str | None, float] = {}
    for weight, ranking in ((2.0, tfidf), (1.0, bm25)):
        for rank, s in enumerate(ranking, start=1):
            expected[s.label] = expected.get(s.label, 0.0) + weight / (10 + rank)
    best = sorted(expected.items(), key=lambda kv: -kv[1])[:3]
    assert [(s.label, round(s.score, 9)) for s in fused] == [(label, round(v, 9)) for label, v in best]


def test_the_embedding_cache_is_no_setting_and_never_pickled(splits: dict[str, Dataset]) -> None:
    cache = EmbeddingCache(Settings.from_env().cache_dir)
    members = [{"strategy": "dense", "params": {}}, {"strategy": "tfidf", "params": {}}]
    hybrid = make_strategy("hybrid", {"members": members}).use_embedding_cache(cache).fit(splits["train"])
    dense = hybrid.members_[0]
    assert dense.embedder_.cache is cache
    assert "cache" not in hybrid.describe() and "cache" not in dense.describe()
    blob = pickle.dumps(hybrid)
    assert str(cache.folder).encode() not in blob and b"EmbeddingCache" not in blob
    restored = pickle.loads(blob)
    assert restored.members_[0].embedder_.cache is None
    restored.use_embedding_cache(cache)
    assert restored.members_[0].embedder_.cache is cache
    contexts = held_out(splits["test"], limit=4)
    assert_same(restored.suggest_many(contexts, 3), hybrid.suggest_many(contexts, 3))


@pytest.mark.parametrize(("scope", "model", "hidden"), [
    ("global", "sgd", 0), ("per_chatbot", "sgd", 0), ("global", "mlp", 16), ("global", "mlp", 0)])
def test_classifier_scores_are_probabilities_over_the_response_set(scope: str, model: str, hidden: int,
                                                                  splits: dict[str, Dataset]) -> None:
    params = {"scope": scope, "model": model, "hidden": hidden, "n_models": 2}
    strategy = make_strategy("classifier", params).fit(splits["train"])
    context = held_out(splits["test"], limit=1)[0]
    everything = strategy.suggest(context, 1000)
    assert 0.999 <= sum(s.score for s in everything) <= 1.001
    assert {s.label for s in everything} <= set(splits["train"].responses(context.chatbot))


def test_classifier_optional_features_keep_the_contract(splits: dict[str, Dataset]) -> None:
    params = {"flow_order": 2, "prev_weight": 0.5, "prior_weight": 0.3, "n_models": 2, "known_only": True}
    strategy = make_strategy("classifier", params).fit(splits["train"])
    assert strategy.get_params()["n_models"] == 2
    restored = pickle.loads(pickle.dumps(strategy))
    for context in held_out(splits["test"], limit=5):
        got = strategy.suggest(context, 3)
        assert [s.label for s in got] == [s.label for s in restored.suggest(context, 3)]
        scores = [s.score for s in got]
        assert scores == sorted(scores, reverse=True)
        assert {s.label for s in got} <= set(splits["train"].responses(context.chatbot))


def test_classifier_mlp_keeps_the_contract(splits: dict[str, Dataset]) -> None:
    params = {"model": "mlp", "hidden": 16, "epochs": 3, "n_models": 2}
    strategy = make_strategy("classifier", params).fit(splits["train"])
    contexts = held_out(splits["test"], limit=12)
    answers = [strategy.suggest(c, 3) for c in contexts]
    assert all(answers)
    assert_same(strategy.suggest_many(contexts, 3), answers)
    assert_same([pickle.loads(pickle.dumps(strategy)).suggest(c, 3) for c in contexts], answers)
    assert_same([make_strategy("classifier", params).fit(splits["train"]).suggest(c, 3) for c in contexts], answers)


def test_masked_softmax_learns_within_each_group_only() -> None:
    from scipy import sparse

    from copilot.strategies.masked import MaskedSoftmax

    # Feature 0 or 1 decides the label; group "a" answers with a1/a2, group "b" with b1/b2. In group "b" the
    # feature that means a1 in group "a" means b2: a model that ignored the groups could not fit both.
    rows = [([1, 0], "a", "a1"), ([0, 1], "a", "a2"), ([1, 0], "b", "b2"), ([0, 1], "b", "b1")] * 50
    x = sparse.csr_matrix(np.array([r[0] for r in rows], dtype=np.float32))
    groups, labels = [r[1] for r in rows], [r[2] for r in rows]
    allowed = {"a": ["a1", "a2"], "b": ["b1", "b2"], "c": ["a1", "b1"]}
    model = MaskedSoftmax(hidden=0, epochs=30, lr=0.05, batch_size=16, seed=3).fit(x, labels, groups, allowed)
    assert list(model.classes_) == ["a1", "a2", "b1", "b2"]
    probe = sparse.csr_matrix(np.array([[1, 0], [1, 0], [0, 1], [0, 1], [1, 0]], dtype=np.float32))
    p = model.predict_proba(probe, ["a", "b", "a", "b", "c"])
    assert p.sum(axis=1) == pytest.approx(np.ones(5))
    assert [model.classes_[i] for i in p.argmax(axis=1)] == ["a1", "b2", "a2", "b1", "a1"]
    assert p[0, 2:].tolist() == [0.0, 0.0] and p[1, :2].tolist() == [0.0, 0.0]  # nothing outside the group
    assert p[4, [1, 3]].tolist() == [0.0, 0.0]  # group c: only a1 and b1
    assert np.isclose(p[:4].max(axis=1), 1.0, atol=0.05).all()
    assert p[-1].sum() == pytest.approx(1.0)
    unseen = model.predict_proba(probe[:1], ["z"])  # a group never seen: every class allowed
    assert (unseen > 0).all() and unseen.sum() == pytest.approx(1.0)
    again = MaskedSoftmax(hidden=0, epochs=30, lr=0.05, batch_size=16, seed=3).fit(x, labels, groups, allowed)
    assert np.array_equal(again.predict_proba(probe, ["a", "b", "a", "b", "c"]), p)
